"""Rows of item packages that wait to be inserted together.

An item package becomes about fifteen rows in seven tables (handle, item, metadata
values, bundles, bitstreams, policies, collection mappings). Inserting them one
package at a time costs a dozen round trips and as many compiled queries per item,
which is most of a restore's time. An ``ItemBatch`` keeps the rows of new items
until ``flush``, which inserts each table's rows of every waiting item with one
query, parents before children, so that the primary keys PostgreSQL returns fill
the foreign keys of the next table.

Items that already exist, and runs on a database that cannot return the keys of a
bulk insert, flush after each package, which keeps their old order of writes.
"""
from __future__ import annotations

import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import DatabaseError, connection

from aip.errors import AipError
from aip.services.roles_ingest import PolicyWriter
from repository.models import Bitstream, Bundle, Handle, Item, MetadataValue, ResourcePolicy

# Items per flush: large enough that the per-query cost vanishes, small enough that the
# waiting rows (about 20 objects per item) stay a few MB.
BATCH_ITEMS = 200


@dataclass
class _Entry:
    """The rows of one item package."""

    source: str
    item: Item
    handle: Handle | None = None
    values: list[MetadataValue] = field(default_factory=list)
    bundles: list[Bundle] = field(default_factory=list)
    bitstreams: list[Bitstream] = field(default_factory=list)
    # Bundles and their primary bitstreams, linked once both have primary keys.
    primaries: list[tuple[Bundle, Bitstream]] = field(default_factory=list)
    policies: list[ResourcePolicy] = field(default_factory=list)
    mapped_into: list[int] = field(default_factory=list)


class ItemBatch:
    """Waiting rows of item packages, with the handles and UUIDs they claim."""

    def __init__(self, *, policies: PolicyWriter, keep_file_uuids: bool, size: int | None = None):
        self.policies = policies
        self.keep_file_uuids = keep_file_uuids
        self.size = size or BATCH_ITEMS
        self.on_flush: Callable[[Path, Item], None] | None = None
        self._entries: list[_Entry] = []
        self._paths: dict[Path, Item] = {}
        self.handles: set[str] = set()
        self.uuids: set[uuid_module.UUID] = set()

    @staticmethod
    def supported() -> bool:
        """Tell whether the database returns primary keys from a bulk insert, which deferred rows need."""
        return connection.features.can_return_rows_from_bulk_insert

    def __len__(self) -> int:
        return len(self._entries)

    def start(self, item: Item, *, source: str, handle: Handle | None = None) -> _Entry:
        """Open the entry of one item package; ``handle`` is a new handle row, inserted with the item."""
        entry = _Entry(source=source, item=item, handle=handle)
        self._entries.append(entry)
        if handle is not None:
            self.handles.add(handle.handle)
        if item.pk is None:
            self.uuids.add(item.uuid)
        return entry

    def end(self, entry: _Entry) -> None:
        """Close ``entry``: it takes the policies queued since it started."""
        entry.policies = self.policies.take()
        if len(self._entries) >= self.size:
            self.flush()

    def track(self, path: Path, item: Item) -> None:
        """Remember that the package at ``path`` made ``item``, still waiting for its primary key."""
        self._paths[path] = item

    def waiting(self, path: Path) -> Item | None:
        return self._paths.get(path)

    def map_into(self, item: Item, collection_pk: int) -> None:
        """Queue a mapping of a waiting ``item`` into a collection."""
        for entry in reversed(self._entries):
            if entry.item is item:
                entry.mapped_into.append(collection_pk)
                return
        item.mapped_collections.add(collection_pk)

    def flush(self) -> None:
        """Insert every waiting row."""
        entries, self._entries = self._entries, []
        if entries:
            try:
                _insert(entries, keep_file_uuids=self.keep_file_uuids)
            except DatabaseError as error:
                # The run rolls back. PostgreSQL's message names the key or value it rejected.
                names = entries[0].source if len(entries) == 1 else f"{entries[0].source} to {entries[-1].source}"
                raise AipError(
                    f"Inserting the rows of package(s) {names} failed: {str(error).strip()}. "
                    "Fix the value the database names in the package and run again."
                ) from error
        # Policies queued after the last item (by a container) go in after the items.
        self.policies.flush()
        paths, self._paths = self._paths, {}
        if self.on_flush is not None:
            for path, item in paths.items():
                self.on_flush(path, item)
        self.handles.clear()
        self.uuids.clear()


def _insert(entries: list[_Entry], *, keep_file_uuids: bool) -> None:
    handles = [entry.handle for entry in entries if entry.handle is not None]
    Handle.objects.bulk_create(handles)
    # bulk_create fills each foreign key from its related object, saved by the insert before.
    Item.objects.bulk_create([entry.item for entry in entries if entry.item.pk is None])
    MetadataValue.objects.bulk_create(_rows(entries, "values"))
    Bundle.objects.bulk_create(_rows(entries, "bundles"))
    bitstreams = _rows(entries, "bitstreams")
    _file_uuids_settle(bitstreams, keep=keep_file_uuids)
    Bitstream.objects.bulk_create(bitstreams)
    primaries = _rows(entries, "primaries")
    for bundle, bitstream in primaries:
        bundle.primary_bitstream = bitstream
    if primaries:
        Bundle.objects.bulk_update([bundle for bundle, _ in primaries], ["primary_bitstream"])
    ResourcePolicy.objects.bulk_create(_rows(entries, "policies"))
    mapping = Item.mapped_collections.through
    Item.mapped_collections.through.objects.bulk_create(
        [mapping(item_id=entry.item.pk, collection_id=pk) for entry in entries for pk in entry.mapped_into],
        ignore_conflicts=True,
    )


def _rows(entries: list[_Entry], name: str) -> list:
    return [row for entry in entries for row in getattr(entry, name)]


def _file_uuids_settle(bitstreams: list[Bitstream], *, keep: bool) -> None:
    """Keep each file's own UUID when no bitstream has it yet; give the others a new one."""
    if not bitstreams:
        return
    taken = set()
    if keep:
        taken = set(Bitstream.objects.filter(uuid__in=[b.uuid for b in bitstreams]).values_list("uuid", flat=True))
    for bitstream in bitstreams:
        if not keep or bitstream.uuid in taken:
            bitstream.uuid = uuid_module.uuid4()
        taken.add(bitstream.uuid)

"""Ingest AIPs: submit, restore, keep existing and replace.

A run walks the package tree depth first (a package, then each child's subtree
in the order its parent lists them) inside one database transaction. Any error
rolls the transaction back and deletes every file the run stored, so a failed
run leaves the database and the bitstream storage as they were. Files of
replaced bitstreams are deleted only after the transaction commits, from a list
that the run stores before the commit, so that a sweep can finish a killed run.

Per package: read and check the manifest, resolve the parent and the handle,
create the object (or find the one to replace), then apply DSPACE-ROLES,
metadata, AIP-TECHMD, files and METSRights, in the order DSpace's ingester does.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from aip import selectors
from aip.errors import InvalidPackageError, MissingParentError, ObjectExistsError, UnsafePackageError
from aip.mets.reader import read_manifest
from aip.options import IngestOptions
from aip.mets.validation import schema_dir_or_error, validate_manifest
from aip.package import package_open
from aip.progress import Progress, package_count_estimate
from aip.services.bitstream_ingest import StoredFiles, bitstream_storage_full, ingest_runs_sweep, package_preflight
from aip.services.handles import handle_assign
from aip.services.object_ingest import ObjectIngester
from repository.changes import change_tracking_suspended
from repository.models import Collection, Community, EPerson, Item, Site

logger = logging.getLogger(__name__)

PARENT_TYPES = {"COMMUNITY": (Site, Community), "COLLECTION": (Community,), "ITEM": (Collection,)}


@dataclass
class IngestReport:
    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    files_stored: int = 0
    bytes_stored: int = 0
    seconds: float = 0.0
    # With ``IngestOptions.defer_items``: each item package a collection lists, with that collection's primary key.
    deferred_items: list[tuple[Path, int]] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"Created {entry}" for entry in self.created]
        lines += [f"Replaced {entry}" for entry in self.replaced]
        lines += [f"Skipped {entry}" for entry in self.skipped]
        lines += self.roles
        lines.append(
            f"{len(self.created)} created, {len(self.replaced)} replaced, {len(self.skipped)} skipped, "
            f"{len(self.warnings)} warning(s); {self.files_stored} files ({self.bytes_stored} bytes) stored "
            f"in {self.seconds:.1f} s"
        )
        return lines


@dataclass
class _Pending:
    path: Path
    parent_handle: str | None  # explicit parent (-p), top package only
    listed_by: Collection | None  # collection whose AIP listed this package
    is_top: bool
    # Packages from the top down to the one that listed this package, to catch a tree with a cycle.
    ancestors: tuple[Path, ...] = ()


def package_ingest(
    *,
    path: Path,
    options: IngestOptions,
    eperson_email: str,
    parent_handle: str | None = None,
    replace_handle: str | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest the package at ``path`` (and with ``options.recursive`` its descendants) in one transaction.

    ``progress`` hears of each package read; raising from it (a cancelled job) rolls the run back.
    """
    if progress is not None:
        progress.total(package_count_estimate(path, recursive=options.recursive))
    return _run_atomic(
        options=options,
        eperson_email=eperson_email,
        progress=progress,
        walk=lambda run: run.walk(path, parent_handle=parent_handle, replace_handle=replace_handle),
        label=path.name,
    )


def item_packages_ingest(
    *,
    packages: list[tuple[Path, list[int]]],
    options: IngestOptions,
    eperson_email: str,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest item packages in one transaction, each with the primary keys of the collections that list it.

    A part job of a split restore runs this after the first job restored the containers. The
    parent of each item comes from its manifest, and the item is mapped into every listing
    collection that is not its owner.
    """
    if progress is not None:
        progress.total(len(packages))
    return _run_atomic(
        options=options,
        eperson_email=eperson_email,
        progress=progress,
        walk=lambda run: run.items_walk(packages),
        label=f"{len(packages)} item package(s) from {packages[0][0].parent}" if packages else "no item packages",
    )


def _run_atomic(
    *, options: IngestOptions, eperson_email: str, progress: Progress | None, walk, label: str
) -> IngestReport:
    """Call ``walk`` with a new ``_IngestRun`` in one transaction; on any error roll back and delete stored files."""
    started = time.monotonic()
    report = IngestReport()
    # Files of runs killed before they could clean up go first, so a rerun leaves no orphans.
    ingest_runs_sweep()
    stored = StoredFiles()
    try:
        with transaction.atomic(), change_tracking_suspended():
            current_user = EPerson.objects.get(email__iexact=eperson_email)
            run = _IngestRun(
                options=options, report=report, stored=stored, current_user=current_user, progress=progress
            )
            walk(run)
            report.roles = run.objects.roles.changes
            stored.deletions_record()
    except BaseException as error:
        stored.delete_all()
        full = bitstream_storage_full(error, action=f"Ingesting {label}")
        if full is not None:
            raise full from error
        raise
    finally:
        stored.close()
    report.files_stored = len(stored.names)
    report.bytes_stored = stored.bytes
    report.seconds = time.monotonic() - started
    return report


class _IngestRun:
    def __init__(
        self,
        *,
        options: IngestOptions,
        report: IngestReport,
        stored: StoredFiles,
        current_user: EPerson,
        progress: Progress | None,
    ):
        self.options = options
        self.progress = progress
        self.report = report
        self.objects = ObjectIngester(
            options=options, stored=stored, current_user=current_user, warn=self.warn
        )
        # Model and primary key, not the object: a run over many packages must not keep them all in memory.
        # An item waiting in the batch has no primary key yet; the batch reports it when inserted.
        self.done: dict[Path, tuple[type, int | None]] = {}
        self.objects.batch.on_flush = self._item_inserted
        self.site_aliases: set[str] = set()

    def warn(self, message: str) -> None:
        logger.warning("%s", message)
        self.report.warnings.append(message)

    def walk(self, top: Path, *, parent_handle: str | None, replace_handle: str | None) -> None:
        stack = [_Pending(path=top, parent_handle=parent_handle, listed_by=None, is_top=True)]
        while stack:
            pending = stack.pop()
            if pending.path in self.done:
                # A package listed again (an item mapped into several collections) is ingested once.
                model, pk = self.done[pending.path]
                if model is Item and pending.listed_by is not None:
                    item = self.objects.batch.waiting(pending.path) or Item.objects.get(pk=pk)
                    self._map_into(item, pending.listed_by)
                continue
            result = self._ingest_path(pending, replace_handle if pending.is_top else None)
            if self.progress is not None:
                self.progress.advance(size=pending.path.stat().st_size if pending.path.exists() else 0)
            if result.obj is None:
                # Skipped for a missing parent: a later listing (its owner's) may still ingest it.
                continue
            self.done[pending.path] = (type(result.obj), result.obj.pk)
            if result.obj.pk is None:
                self.objects.batch.track(pending.path, result.obj)
            self._map_into(result.obj, pending.listed_by)
            if self.options.defer_items and isinstance(result.obj, Collection) and result.follow_children:
                self.report.deferred_items += [
                    (child_package_path(pending.path, href), result.obj.pk) for href in result.children
                ]
                continue
            if self.options.recursive and result.follow_children:
                listed_by = result.obj if isinstance(result.obj, Collection) else None
                ancestors = (*pending.ancestors, pending.path)
                for href in reversed(result.children):
                    child_path = child_package_path(pending.path, href)
                    cycle_check(child_path, ancestors)
                    stack.append(
                        _Pending(
                            path=child_path, parent_handle=None, listed_by=listed_by, is_top=False, ancestors=ancestors
                        )
                    )
        self.objects.batch.flush()

    def _item_inserted(self, path: Path, item: Item) -> None:
        self.done[path] = (Item, item.pk)

    def items_walk(self, packages: list[tuple[Path, list[int]]]) -> None:
        """Ingest each item package, and map the item into the collections (primary keys) that list it."""
        # One query for the whole batch: a collection deleted since the split job listed it maps nothing.
        listed = {collection_id for _path, collection_ids in packages for collection_id in collection_ids}
        existing = set(Collection.objects.filter(pk__in=listed).values_list("pk", flat=True))
        for path, collection_ids in packages:
            pending = _Pending(path=path, parent_handle=None, listed_by=None, is_top=False)
            result = self._ingest_path(pending, None)
            if self.progress is not None:
                self.progress.advance(size=path.stat().st_size if path.exists() else 0)
            if result.obj is None:
                continue
            if not isinstance(result.obj, Item):
                raise InvalidPackageError(
                    f"Package {path.name} describes a {result.obj.object_type}, but a collection lists it as an item. "
                    "Fix the collection package's child references."
                )
            for collection_id in sorted(existing.intersection(collection_ids)):
                if result.obj.owning_collection_id != collection_id:
                    self.objects.batch.map_into(result.obj, collection_id)
        self.objects.batch.flush()

    def _ingest_path(self, pending: _Pending, replace_handle: str | None) -> _Result:
        if not pending.is_top and not pending.path.exists():
            message = f"Child package {pending.path.name} is missing from {pending.path.parent}."
            if not self.options.skip_if_parent_missing:
                raise InvalidPackageError(message + " Add it, or run with -o skipIfParentMissing=true to skip it.")
            self.warn(message + " Skipped.")
            self.report.skipped.append(f"{pending.path.name} (missing)")
            return _Result(obj=None, children=[], follow_children=False)
        with package_open(pending.path, manifest_only=self.options.manifest_only) as reader:
            data = reader.manifest_bytes()
            # The hardened parser of read_manifest checks the XML before the schema validator parses it.
            manifest = read_manifest(data, source=pending.path.name)
            if self.options.validate:
                validate_manifest(data, schema_dir=schema_dir_or_error(), source=pending.path.name)
            package_preflight(reader, manifest, source=pending.path.name, warn=self.warn)
            return self._ingest_manifest(reader, manifest, pending, replace_handle)

    def _ingest_manifest(self, reader, manifest, pending: _Pending, replace_handle: str | None) -> _Result:
        source = pending.path.name
        children = [child.href for child in manifest.children if child.href]
        if manifest.object_type == "SITE":
            self.objects.batch.flush()
            site = self.objects.site_ingest(reader, manifest, source=source)
            if manifest.handle:
                self.site_aliases.add(manifest.handle)
            if self.options.keep_existing:
                self.report.skipped.append(f"SITE {site.handle_string} (exists; new people and groups added)")
            else:
                self.report.replaced.append(f"SITE {site.handle_string}")
            return _Result(obj=site, children=children, follow_children=True)

        parent = self._resolve_parent(manifest, pending.parent_handle, source=source)
        if parent is None:
            return _Result(obj=None, children=[], follow_children=False)
        if manifest.object_type == "ITEM" and not pending.is_top and self.objects.item_is_new(manifest):
            obj = self.objects.item_create_waiting(reader, manifest, parent=parent, source=source)
            self.report.created.append(f"ITEM {obj.handle_string}")
            return _Result(obj=obj, children=children, follow_children=True)
        # What follows reads or writes rows the waiting items may need or collide with.
        self.objects.batch.flush()
        existing = self._existing_object(manifest, replace_handle, source=source)
        label = f"{manifest.object_type} {manifest.handle or manifest.uuid}"
        if existing is not None:
            if self.options.keep_existing:
                self.report.skipped.append(f"{label} (exists; its children are skipped too)")
                return _Result(obj=existing, children=[], follow_children=False)
            obj = self.objects.replace(existing, reader, manifest, source=source)
            self.report.replaced.append(label)
            return _Result(obj=obj, children=children, follow_children=True)

        handle = handle_assign(manifest.handle if not self.options.ignore_handle else None, manifest.object_type)
        obj = self.objects.create(reader, manifest, parent=parent, handle=handle, source=source)
        self.report.created.append(f"{manifest.object_type} {obj.handle_string}")
        return _Result(obj=obj, children=children, follow_children=True)

    def _resolve_parent(self, manifest, explicit: str | None, *, source: str):
        handle = manifest.parent_handle
        if explicit and (self.options.ignore_parent or not handle):
            handle = explicit
        if not handle:
            raise InvalidPackageError(f"Package {source} names no parent; give one with -p HANDLE.")
        parent = self.objects.resolve_handle(handle)
        if parent is None and handle in self.site_aliases:
            # Top communities of a site restored from an installation with another handle prefix.
            parent = selectors.site_get()
        if parent is None:
            message = f"Could not find a parent DSpaceObject referenced as '{handle}' (package {source})."
            if self.options.skip_if_parent_missing:
                self.warn(message + " Skipped.")
                self.report.skipped.append(f"{manifest.object_type} {manifest.handle or source} (parent {handle} missing)")
                return None
            raise MissingParentError(
                message + " Restore the parent first, give another with -p and -o ignoreParent=true, "
                "or run with -o skipIfParentMissing=true."
            )
        if not isinstance(parent, PARENT_TYPES[manifest.object_type]):
            allowed = " or ".join(model.__name__.upper() for model in PARENT_TYPES[manifest.object_type])
            raise InvalidPackageError(
                f"Package {source}: {manifest.object_type} packages cannot be placed under {parent.object_type} "
                f"{handle}. Give the handle of a {allowed} with -p (in restore mode with -o ignoreParent=true)."
            )
        return parent

    def _existing_object(self, manifest, replace_handle: str | None, *, source: str):
        """Return the object this package would overwrite, or raise in plain restore mode."""
        if not self.options.restore:
            return None
        handle = replace_handle if (replace_handle and self.options.replace) else manifest.handle
        existing = selectors.object_by_handle(handle) if handle and not self.options.ignore_handle else None
        if existing is None and manifest.uuid:
            existing = self.objects.by_uuid(manifest.object_type, manifest.uuid)
        if existing is None:
            return None
        if existing.object_type != manifest.object_type:
            raise InvalidPackageError(
                f"Package {source} has type {manifest.object_type}, but {handle} has type {existing.object_type}."
            )
        if not (self.options.keep_existing or self.options.replace):
            raise ObjectExistsError(
                f"{manifest.object_type} {existing.handle_string or existing.uuid} from package {source} already "
                "exists; nothing was restored. Use -r -k to skip existing objects or -r -f to replace them."
            )
        return existing

    def _map_into(self, obj, collection: Collection | None) -> None:
        if isinstance(obj, Item) and collection is not None and obj.owning_collection_id != collection.pk:
            self.objects.batch.map_into(obj, collection.pk)


@dataclass
class _Result:
    obj: object
    children: list[str]
    follow_children: bool


def cycle_check(child_path: Path, ancestors: tuple[Path, ...]) -> None:
    """Raise when ``child_path`` is one of the packages that lead to it, so the package tree has a cycle."""
    if child_path not in ancestors:
        return
    chain = " lists ".join(path.name for path in (*ancestors[ancestors.index(child_path):], child_path))
    raise InvalidPackageError(
        f"Package {ancestors[-1].name} lists {child_path.name} as a child, but {child_path.name} is itself "
        f"above it in the package tree ({chain}). The package tree has a cycle; fix the child package references."
    )


def child_package_path(parent_path: Path, href: str) -> Path:
    """Resolve a child package reference inside the folder of its parent package."""
    name = Path(href)
    if name.is_absolute() or ".." in name.parts or len(name.parts) != 1:
        raise UnsafePackageError(f"Package {parent_path.name} references a child outside its folder: {href!r}.")
    return parent_path.parent / name

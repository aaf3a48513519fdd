"""Store the files of a package as bitstreams, checking each against its manifest.

Before anything is written, ``package_preflight`` checks what the zip's central
directory and the manifest tell: every file the manifest names is in the
package with the size the manifest states, and XML the manifest references is
safe to parse. Each file is then streamed from the zip into the bitstream
storage while its MD5 and size are computed, so a file is read once and never
held in memory.

A killed run cannot delete what it stored, and its rolled-back transaction
leaves no row that names those files. So every run that stores a file first
takes a PostgreSQL advisory lock for its run id and writes a journal
``.ingest-runs/<run id>.json`` into the bitstream storage, and names its files
``ab/cd/<UUID5 of run id and counter>``. ``ingest_runs_sweep``, run at the start
of every ingest and by ``manage.py aip_storage_sweep``, finds the journals of
runs that no longer hold their lock, recomputes their file names, and deletes
those that no Bitstream row references.

The old files of replaced bitstreams can only go once the run has committed. As
the last step of its transaction, a run writes their names and its PostgreSQL
transaction id to ``.ingest-runs/<run id>.delete.json`` and deletes them after
the commit. When a kill comes in between, the sweep deletes them, once
PostgreSQL reports that transaction committed, and only those that no Bitstream
row references.
"""
from __future__ import annotations

import json
import logging
import mimetypes
import os
import socket
import uuid as uuid_module
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.db import DatabaseError, connection, transaction

from aip.digests import BackgroundMd5
from aip.errors import (
    ChecksumMismatchError,
    InvalidPackageError,
    StorageFullError,
    UnsafePackageError,
    storage_full_cause,
)
from aip.mets.model import DimValue, FileRecord, PackageManifest
from aip.mets.xmlsafe import parse_xml
from aip.services.registry_rows import registry_row_commit
from aip.package import CHUNK_SIZE, MANIFEST_NAME, PackageReader, process_alive
from repository.models import Bitstream, BitstreamFormat, bitstream_storage

logger = logging.getLogger(__name__)

SUPPORT_LEVELS = {"UNKNOWN": 0, "KNOWN": 1, "SUPPORTED": 2}

JOURNAL_FOLDER = ".ingest-runs"
JOURNAL_SUFFIX = ".json"
DELETIONS_SUFFIX = ".delete.json"
# A killed run leaves at most its last file missing or partial, so a sweep that finds
# this many names in a row missing has seen every file of the run.
SWEEP_MISSING_RUN = 8
# Metadata files referenced by mdRef that DSpace parses as XML on ingest.
XML_REFERENCE_TYPES = ("CreativeCommonsRDF",)

# Runs of this process that are storing files, which the sweep never touches.
_ACTIVE_RUNS: set[str] = set()


class IngestJournal:
    """The record of one ingest run in the bitstream storage: its run id, host and process.

    The run id seeds the names of the run's files, so a sweep can find them after a kill.
    """

    def __init__(self) -> None:
        self.run_id = uuid_module.uuid4()
        self.name = f"{JOURNAL_FOLDER}/{self.run_id}{JOURNAL_SUFFIX}"
        self.opened = False

    def open(self) -> None:
        """Take the run's lock, then write the journal, so a journal without a live lock is always a dead run."""
        _ACTIVE_RUNS.add(str(self.run_id))
        _advisory_lock(self.run_id)
        record = {
            "run": str(self.run_id),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.now(timezone.utc).isoformat(),
        }
        try:
            bitstream_storage().save(self.name, ContentFile(json.dumps(record).encode("utf-8")))
        except BaseException:
            # A full disk can leave an empty journal. The run has stored nothing yet, so the journal and lock go.
            _quietly_delete(self.name)
            _advisory_unlock(self.run_id)
            _ACTIVE_RUNS.discard(str(self.run_id))
            raise
        self.opened = True

    def close(self) -> None:
        """Delete the journal and release the lock, once the run's files are either committed or deleted."""
        if self.opened:
            bitstream_storage().delete(self.name)
            _advisory_unlock(self.run_id)
            self.opened = False
        _ACTIVE_RUNS.discard(str(self.run_id))


def run_file_name(run_id: uuid_module.UUID, counter: int) -> str:
    """Return the storage name of the file number ``counter`` of a run, spread over folders as DSpace does."""
    text = uuid_module.uuid5(run_id, str(counter)).hex
    return f"{text[:2]}/{text[2:4]}/{text}"


def deletions_file_name(run_id: uuid_module.UUID) -> str:
    """Return the storage name of the list of files a run deletes once it has committed."""
    return f"{JOURNAL_FOLDER}/{run_id}{DELETIONS_SUFFIX}"


class StoredFiles:
    """The files of one ingest run in the bitstream storage.

    ``names`` are the files the run stored, deleted again when it fails. ``deletions``
    are the files of bitstreams it replaced, deleted once it has committed.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.bytes = 0
        self.journal = IngestJournal()
        self.deletions: list[str] = []
        self._counter = 0

    def name_new(self) -> str:
        """Return the name of the run's next file, writing the run's journal before the first."""
        if not self.journal.opened:
            self.journal.open()
        name = run_file_name(self.journal.run_id, self._counter)
        self._counter += 1
        return name

    def delete_all(self) -> None:
        storage = bitstream_storage()
        for name in self.names:
            try:
                storage.delete(name)
            except OSError:
                logger.exception("could not delete stored file %s after a failed run", name)
        self.names.clear()

    def delete_after_commit(self, name: str) -> None:
        """Delete the stored file ``name`` once the run has committed. A failed run keeps it."""
        self.deletions.append(name)

    def deletions_record(self) -> None:
        """Write the files to delete after the commit, with this transaction's id, durably to the storage.

        Call it as the last step inside the run's transaction. It also registers the deletion
        for when the outermost transaction commits.
        """
        if not self.deletions:
            return
        if not self.journal.opened:
            # The journal's lock marks this run as alive for a sweep in another process.
            self.journal.open()
        record = {"run": str(self.journal.run_id), "transaction": _transaction_id(), "files": self.deletions}
        name = deletions_file_name(self.journal.run_id)
        storage = bitstream_storage()
        storage.save(name, ContentFile(json.dumps(record).encode("utf-8")))
        _durable(storage, name)
        # Robust, because an error raised after the commit would make the caller delete the run's new files.
        transaction.on_commit(self.deletions_apply, robust=True)

    def deletions_apply(self) -> None:
        """Delete the replaced files after the commit. If a deletion fails, the list stays for a later sweep."""
        run_id = self.journal.run_id
        try:
            deleted, _referenced_count = _unreferenced_delete(self.deletions, run_id)
            bitstream_storage().delete(deletions_file_name(run_id))
        except (OSError, DatabaseError):
            logger.exception(
                "could not delete the replaced files of ingest run %s, so a later sweep deletes them", run_id
            )
            return
        logger.info("deleted %d replaced file(s) after ingest run %s committed", len(deleted), run_id)

    def close(self) -> None:
        """End the run's journal: its files are now committed, or deleted by ``delete_all``."""
        try:
            self.journal.close()
        except (OSError, DatabaseError):
            logger.exception("could not delete the ingest journal %s; a later sweep removes it", self.journal.name)


# --- sweep of killed runs -----------------------------------------------------------------


@dataclass
class SweepReport:
    runs_swept: list[str] = field(default_factory=list)
    runs_alive: list[str] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    files_kept: int = 0


def ingest_runs_sweep() -> SweepReport:
    """Delete the files of ingest runs that died without cleaning up, and their journals.

    A dead run's list of replaced files is handled first. Its files are deleted when its
    transaction committed, and the list is dropped when it rolled back.
    """
    storage = bitstream_storage()
    report = SweepReport()
    try:
        _folders, names = storage.listdir(JOURNAL_FOLDER)
    except FileNotFoundError:
        return report
    for run_id, journal, deletions in _journal_files(names):
        run_text = str(run_id)
        journal_name = f"{JOURNAL_FOLDER}/{journal}" if journal else None
        if journal_name and _run_alive(run_id, journal_name):
            report.runs_alive.append(run_text)
            continue
        try:
            if deletions and not _deletions_sweep(run_id, report):
                report.runs_alive.append(run_text)
                continue
            if journal_name:
                _run_files_delete(run_id, report)
                storage.delete(journal_name)
        except OSError:
            # The journal stays, so the next sweep tries again; an ingest must not fail for this.
            logger.exception("could not sweep the files of the killed ingest run %s", run_text)
        else:
            report.runs_swept.append(run_text)
        finally:
            _advisory_unlock(run_id)
    return report


def _journal_files(names: list[str]) -> list[tuple[uuid_module.UUID, str | None, str | None]]:
    """Group the file names of the journal folder by run: (run id, journal, list of replaced files)."""
    runs: dict[uuid_module.UUID, dict[str, str | None]] = {}
    for name in names:
        kind, suffix = ("journal", JOURNAL_SUFFIX)
        if name.endswith(DELETIONS_SUFFIX):
            kind, suffix = ("deletions", DELETIONS_SUFFIX)
        try:
            run_id = uuid_module.UUID(name.removesuffix(suffix))
        except ValueError:
            logger.warning("ignoring %s/%s: not an ingest journal name", JOURNAL_FOLDER, name)
            continue
        runs.setdefault(run_id, {"journal": None, "deletions": None})[kind] = name
    ordered = sorted(runs.items(), key=lambda run: str(run[0]))
    return [(run_id, files["journal"], files["deletions"]) for run_id, files in ordered]


def _deletions_sweep(run_id: uuid_module.UUID, report: SweepReport) -> bool:
    """Apply or drop the list of replaced files of a dead run. Return False while its transaction is still open."""
    storage = bitstream_storage()
    name = deletions_file_name(run_id)
    try:
        with storage.open(name, "rb") as stream:
            record = json.loads(stream.read().decode("utf-8"))
        files = [str(file) for file in record["files"]]
        transaction_id = record.get("transaction")
    except (ValueError, KeyError, TypeError):
        # The list is synced to disk before the commit, so an unreadable one belongs to a run that never committed.
        logger.warning("dropping %s: unreadable, so its run never committed", name)
        storage.delete(name)
        return True
    status = _transaction_status(transaction_id)
    if status == "in progress":
        return False
    if status == "aborted":
        logger.info("dropping %s: its run rolled back, so the files it replaced stay", name)
    else:
        # Committed, or unknown (no PostgreSQL, or a transaction id too old to look up): the
        # Bitstream rows decide, because a rolled-back run leaves the rows that name its old files.
        deleted, referenced_count = _unreferenced_delete(files, run_id)
        report.files_deleted.extend(deleted)
        report.files_kept += referenced_count
    storage.delete(name)
    return True


def _run_alive(run_id: uuid_module.UUID, journal_name: str) -> bool:
    if str(run_id) in _ACTIVE_RUNS:
        return True
    if connection.vendor == "postgresql":
        # The lock is free only when the run's database session has ended, on any host.
        # A lock taken here to test it is released by the caller after the sweep.
        return not _advisory_try_lock(run_id)
    return _journal_process_alive(journal_name)


def _journal_process_alive(journal_name: str) -> bool:
    """Tell from the journal's host and process id whether its run still runs (databases without advisory locks)."""
    try:
        with bitstream_storage().open(journal_name, "rb") as stream:
            record = json.loads(stream.read().decode("utf-8"))
        host, pid = record["host"], int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        # The journal is written before the first file, so an unreadable one belongs to a run that stored nothing.
        return False
    if host != socket.gethostname():
        # NOTE: without PostgreSQL, a run of another host is taken to be alive, so its files wait for that host's sweep.
        return True
    return process_alive(pid)


def _run_files_delete(run_id: uuid_module.UUID, report: SweepReport) -> None:
    storage = bitstream_storage()
    names = []
    counter = missing = 0
    while missing < SWEEP_MISSING_RUN:
        name = run_file_name(run_id, counter)
        counter += 1
        if storage.exists(name):
            names.append(name)
            missing = 0
        else:
            missing += 1
    # A run that committed before it was killed keeps its files: rows name them.
    deleted, referenced_count = _unreferenced_delete(names, run_id)
    report.files_deleted.extend(deleted)
    report.files_kept += referenced_count


def _unreferenced_delete(names: list[str], run_id: uuid_module.UUID) -> tuple[list[str], int]:
    """Delete the stored files among ``names`` that no Bitstream row names.

    Returns the deleted names and the number of names kept because a row names them.
    """
    storage = bitstream_storage()
    referenced = set(Bitstream.objects.filter(file__in=names).values_list("file", flat=True))
    deleted = []
    for name in names:
        if name in referenced:
            continue
        storage.delete(name)
        deleted.append(name)
        logger.info("deleted %s, left by ingest run %s", name, run_id)
    return deleted, len(names) - len(deleted)


def _quietly_delete(name: str) -> None:
    try:
        bitstream_storage().delete(name)
    except OSError:
        logger.exception("could not delete %s from the bitstream storage", name)


def _durable(storage, name: str) -> None:
    """Flush a file of a file system storage and its folder entry to disk, so that it survives a power loss."""
    if not isinstance(storage, FileSystemStorage):
        return
    path = storage.path(name)
    for target in (path, os.path.dirname(path)):
        descriptor = os.open(target, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _transaction_id() -> str | None:
    """Return the id of the current PostgreSQL transaction (the outermost one), or None on other databases."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text")
        return cursor.fetchone()[0]


def _transaction_status(transaction_id: str | None) -> str | None:
    """Return "committed", "aborted" or "in progress" for a PostgreSQL transaction id, or None when unknown."""
    if not transaction_id or connection.vendor != "postgresql":
        return None
    try:
        # A savepoint, so that an id PostgreSQL rejects (from another cluster) cannot break an open transaction.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_xact_status(%s::xid8)", [transaction_id])
            return cursor.fetchone()[0]
    except DatabaseError:
        logger.warning("could not look up the status of transaction %s", transaction_id, exc_info=True)
        return None


def bitstream_storage_full(error: BaseException, *, action: str) -> StorageFullError | None:
    """Return a ``StorageFullError`` naming the bitstream storage when ``error`` comes from a full disk, else None."""
    cause = storage_full_cause(error)
    if cause is None:
        return None
    storage = bitstream_storage()
    place = "the bitstream storage"
    if isinstance(storage, FileSystemStorage):
        place += f" (folder {storage.location})"
    return StorageFullError(action=action, place=place, cause=cause)


def _lock_key(run_id: uuid_module.UUID) -> int:
    return int.from_bytes(run_id.bytes[:8], "big", signed=True)


def _advisory_lock(run_id: uuid_module.UUID) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [_lock_key(run_id)])


def _advisory_try_lock(run_id: uuid_module.UUID) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_lock_key(run_id)])
        return bool(cursor.fetchone()[0])


def _advisory_unlock(run_id: uuid_module.UUID) -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        # When this session does not hold the lock, PostgreSQL only warns and returns false.
        cursor.execute("SELECT pg_advisory_unlock(%s)", [_lock_key(run_id)])


# --- checks before writing ----------------------------------------------------------------


def package_preflight(reader, manifest: PackageManifest, *, source: str, warn: Callable[[str], None]) -> None:
    """Check a package before any of it is written, and warn about zip entries the manifest does not name.

    Every file the manifest names must be in the package with the size its file
    element and PREMIS state, and each referenced XML metadata file must parse
    safely. The MD5 is checked later, while the file is stored.
    """
    referenced = manifest_files(manifest)
    for href, records in referenced.items():
        size = reader.entry_size(href)
        for record in records:
            _sizes_check(record, size, source=source)
    for href in manifest_xml_references(manifest):
        xml_reference_check(reader, href, source=source)

    entry_names = reader.entry_names()
    if entry_names is not None:
        for name in sorted(entry_names - set(referenced) - {MANIFEST_NAME}):
            warn(f"Package {source}: zip entry {name} is not named in the manifest; it is not stored.")


def manifest_files(manifest: PackageManifest) -> dict[str, list[FileRecord]]:
    """Map each package file the manifest names to the file elements that describe it (none for licence mdRefs)."""
    referenced: dict[str, list[FileRecord]] = {}
    records = [record for bundle in manifest.bundles for record in bundle.files]
    if manifest.logo is not None:
        records.append(manifest.logo)
    for record in records:
        referenced.setdefault(record.href, []).append(record)
    admins = [manifest.admin, *(bundle.admin for bundle in manifest.bundles), *(record.admin for record in records)]
    for admin in admins:
        for href in admin.license_hrefs.values():
            referenced.setdefault(href, [])
    return referenced


def manifest_xml_references(manifest: PackageManifest) -> list[str]:
    """Return the hrefs of referenced metadata files that are XML (the Creative Commons RDF licence)."""
    records = [record for bundle in manifest.bundles for record in bundle.files]
    admins = [manifest.admin, *(bundle.admin for bundle in manifest.bundles), *(record.admin for record in records)]
    hrefs = set()
    for admin in admins:
        hrefs.update(admin.license_hrefs[kind] for kind in XML_REFERENCE_TYPES if kind in admin.license_hrefs)
    return sorted(hrefs)


def _sizes_check(record: FileRecord, size: int, *, source: str) -> None:
    premis = record.admin.premis
    for stated in (record.size, premis.size if premis else None):
        if stated is not None and stated != size:
            raise ChecksumMismatchError(
                f"Package {source}: file {record.href} has {size} bytes, but the manifest states {stated}. "
                "The package is damaged; use another copy of it."
            )


def xml_reference_check(reader, href: str, *, source: str) -> None:
    """Parse a referenced XML metadata file with the hardened parser, raising as for a manifest."""
    limit = getattr(reader, "limits", None)
    size = reader.entry_size(href)
    if limit is not None and size > limit.max_manifest_bytes:
        raise UnsafePackageError(
            f"Package {source}: the XML file {href} has {size} bytes, more than AIP_MAX_MANIFEST_BYTES "
            f"({limit.max_manifest_bytes})."
        )
    try:
        data = reader.read_entry(href)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise InvalidPackageError(
            f"Package {source}: file {href} cannot be read from the zip ({error}). The package is damaged; "
            "use another copy of it."
        ) from None
    parse_xml(data, source=f"Package {source}: file {href}")


class _HashingReader:
    """A read-only stream that computes the MD5 and size of what passes through it.

    The MD5 of a file of several chunks is computed in a worker thread while the
    storage writes, so the reader must be closed (used as a context manager).
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self.md5 = BackgroundMd5()
        self.size = 0

    def __enter__(self) -> _HashingReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.md5.close()

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size if size and size > 0 else CHUNK_SIZE)
        self.md5.update(chunk)
        self.size += len(chunk)
        return chunk

    # Storages ask these before reading: S3Storage, for one, rewinds a seekable file first,
    # which would hash the start of the file twice.
    @property
    def closed(self) -> bool:
        return self._stream.closed

    def seekable(self) -> bool:
        return False


class _ChunkedFile(File):
    """A Django File that storages read in CHUNK_SIZE chunks instead of Django's 64 KiB, to cut calls per byte."""

    DEFAULT_CHUNK_SIZE = CHUNK_SIZE


def store_file(
    reader: PackageReader, record: FileRecord, bitstream: Bitstream, stored: StoredFiles, *, source: str
) -> None:
    """Stream the file of ``record`` into storage for ``bitstream`` and verify size and MD5."""
    expected_size = reader.entry_size(record.href)
    storage = bitstream_storage()
    # The name comes from the run, not the bitstream's UUID, so a replaced bitstream that keeps
    # its UUID never writes over the file of the version it replaces.
    name = storage.get_available_name(stored.name_new())
    # Recorded before writing, so that a failure half-way still deletes the partial file.
    stored.names.append(name)
    try:
        with reader.open_entry(record.href) as stream, _HashingReader(stream) as hashing:
            content = _ChunkedFile(hashing, name=record.href)
            content.size = expected_size
            saved = storage.save(name, content)
            digest = hashing.md5.hexdigest()
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise InvalidPackageError(
            f"Package {source}: file {record.href} cannot be read from the zip ({error}). "
            "The package is damaged; use another copy of it."
        ) from None
    if saved != name:
        stored.names.append(saved)
    stored.bytes += hashing.size
    _verify(record, digest, hashing.size, source=source)
    bitstream.file.name = saved
    bitstream.size_bytes = hashing.size
    bitstream.checksum = digest
    bitstream.checksum_algorithm = "MD5"


def _verify(record: FileRecord, digest: str, size: int, *, source: str) -> None:
    premis = record.admin.premis
    stated_sizes = [value for value in (record.size, premis.size if premis else None) if value is not None]
    stated_digests = []
    if record.checksum and (record.checksum_type or "MD5").upper() == "MD5":
        stated_digests.append(record.checksum.lower())
    if premis and premis.digest and (premis.digest_algorithm or "MD5").upper() == "MD5":
        stated_digests.append(premis.digest.lower())
    for stated in stated_sizes:
        if stated != size:
            raise ChecksumMismatchError(
                f"Package {source}: file {record.href} has {size} bytes, but the manifest states {stated}. "
                "The package is damaged; use another copy of it."
            )
    for stated in stated_digests:
        if stated != digest:
            raise ChecksumMismatchError(
                f"Package {source}: file {record.href} has MD5 {digest}, but the manifest states {stated}. "
                "The package is damaged; use another copy of it."
            )


def is_placeholder(reader: PackageReader, record: FileRecord) -> bool:
    """Tell whether a file is an empty stand-in for content the exporter could not read."""
    return reader.entry_size(record.href) == 0 and not record.checksum and not (
        record.admin.premis and record.admin.premis.digest
    )


def apply_technical_metadata(bitstream: Bitstream, record: FileRecord, formats: FormatRegistry) -> None:
    """Set name, source, description and format from PREMIS and AIP-TECHMD, as DSpace's ingester does."""
    techmd = _techmd_values(record.admin.techmd_dim or [])
    premis = record.admin.premis
    bitstream.name = techmd.get(("title", None)) or (premis.original_name if premis else None) or record.href
    bitstream.source = techmd.get(("title", "alternative"), "")
    bitstream.description = techmd.get(("description", None), "")
    bitstream.user_format_description = techmd.get(("format", None), "")
    if record.sequence_id is not None:
        bitstream.sequence_id = record.sequence_id
    bitstream.format = formats.resolve(
        short_description=techmd.get(("format", "medium")),
        mimetype=techmd.get(("format", "mimetype")) or (premis.format_name if premis else None) or record.mimetype,
        support_level=techmd.get(("format", "supportlevel")),
        internal=techmd.get(("format", "internal")),
        file_name=bitstream.name,
    )


def _techmd_values(values: list[DimValue]) -> dict[tuple[str, str | None], str]:
    found: dict[tuple[str, str | None], str] = {}
    for value in values:
        found.setdefault((value.element, value.qualifier or None), value.value)
    return found


class FormatRegistry:
    """Finds bitstream formats by short description, MIME type or file extension; creates named ones."""

    def __init__(self, *, commit_apart: bool = False) -> None:
        self._formats = {fmt.short_description: fmt for fmt in BitstreamFormat.objects.all()}
        # New formats are committed at once on a connection of their own (see ``registry_rows``).
        self.commit_apart = commit_apart

    def resolve(self, *, short_description, mimetype, support_level=None, internal=None, file_name="") -> BitstreamFormat:
        if short_description:
            if short_description not in self._formats:
                self._formats[short_description] = self._create(
                    short_description=short_description,
                    mimetype=mimetype or "application/octet-stream",
                    support_level=SUPPORT_LEVELS.get((support_level or "").upper(), 0),
                    internal=(internal or "").lower() == "true",
                )
            return self._formats[short_description]
        return self.by_mimetype(mimetype) or self.by_extension(file_name) or self._formats["Unknown"]

    def _create(self, **values) -> BitstreamFormat:
        if not self.commit_apart:
            return BitstreamFormat.objects.create(**values)
        registry_row_commit(BitstreamFormat, {**values, "description": "", "extensions": []})
        return BitstreamFormat.objects.get(short_description=values["short_description"])

    def by_mimetype(self, mimetype: str | None) -> BitstreamFormat | None:
        if not mimetype:
            return None
        matches = [fmt for fmt in self._formats.values() if fmt.mimetype == mimetype and not fmt.internal]
        return min(matches, key=lambda fmt: fmt.short_description) if matches else None

    def by_extension(self, file_name: str) -> BitstreamFormat | None:
        extension = file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
        for fmt in sorted(self._formats.values(), key=lambda fmt: fmt.short_description):
            if extension and extension in fmt.extensions:
                return fmt
        guessed, _ = mimetypes.guess_type(file_name)
        return self.by_mimetype(guessed)

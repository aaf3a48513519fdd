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
"""
from __future__ import annotations

import hashlib
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
from django.db import DatabaseError, connection

from aip.errors import ChecksumMismatchError, InvalidPackageError, UnsafePackageError
from aip.mets.model import DimValue, FileRecord, PackageManifest
from aip.mets.xmlsafe import parse_xml
from aip.services.registry_rows import registry_row_commit
from aip.package import CHUNK_SIZE, MANIFEST_NAME, PackageReader, process_alive
from repository.models import Bitstream, BitstreamFormat, bitstream_storage

logger = logging.getLogger(__name__)

SUPPORT_LEVELS = {"UNKNOWN": 0, "KNOWN": 1, "SUPPORTED": 2}

JOURNAL_FOLDER = ".ingest-runs"
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
        self.name = f"{JOURNAL_FOLDER}/{self.run_id}.json"
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
        bitstream_storage().save(self.name, ContentFile(json.dumps(record).encode("utf-8")))
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


class StoredFiles:
    """Names written to the bitstream storage during one run, for clean-up on failure.

    TODO: the deposit licence that submit mode adds (``repository.installation``) gets a
    random name, so a submit killed after adding it leaves that one file for no sweep to find.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.bytes = 0
        self.journal = IngestJournal()
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
    """Delete the files of ingest runs that died without cleaning up, and their journals."""
    storage = bitstream_storage()
    report = SweepReport()
    try:
        _folders, journals = storage.listdir(JOURNAL_FOLDER)
    except FileNotFoundError:
        return report
    for journal_name in sorted(journals):
        run_text = journal_name.removesuffix(".json")
        try:
            run_id = uuid_module.UUID(run_text)
        except ValueError:
            logger.warning("ignoring %s/%s: not an ingest journal name", JOURNAL_FOLDER, journal_name)
            continue
        if _run_alive(run_id, f"{JOURNAL_FOLDER}/{journal_name}"):
            report.runs_alive.append(run_text)
            continue
        try:
            _run_files_delete(run_id, report)
            storage.delete(f"{JOURNAL_FOLDER}/{journal_name}")
        except OSError:
            # The journal stays, so the next sweep tries again; an ingest must not fail for this.
            logger.exception("could not sweep the files of the killed ingest run %s", run_text)
        else:
            report.runs_swept.append(run_text)
        finally:
            _advisory_unlock(run_id)
    return report


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
    referenced = set(Bitstream.objects.filter(file__in=names).values_list("file", flat=True))
    for name in names:
        if name in referenced:
            report.files_kept += 1
            continue
        storage.delete(name)
        report.files_deleted.append(name)
        logger.info("deleted %s, stored by the killed ingest run %s", name, run_id)


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
    """A read-only stream that computes the MD5 and size of what passes through it."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.md5 = hashlib.md5()
        self.size = 0

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
        with reader.open_entry(record.href) as stream:
            hashing = _HashingReader(stream)
            content = File(hashing, name=record.href)
            content.size = expected_size
            saved = storage.save(name, content)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise InvalidPackageError(
            f"Package {source}: file {record.href} cannot be read from the zip ({error}). "
            "The package is damaged; use another copy of it."
        ) from None
    if saved != name:
        stored.names.append(saved)
    stored.bytes += hashing.size
    digest = hashing.md5.hexdigest()
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

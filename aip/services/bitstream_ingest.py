"""Store the files of a package as bitstreams, checking each against its manifest.

Each file is streamed from the zip into the bitstream storage while its MD5 and
size are computed, so a file is read once and never held in memory. Every
stored name is recorded in the ``StoredFiles`` of the run, which deletes them
all when the run fails.
"""
from __future__ import annotations

import hashlib
import logging
import mimetypes
import uuid as uuid_module
import zipfile
import zlib

from django.core.files import File

from aip.errors import ChecksumMismatchError, InvalidPackageError
from aip.mets.model import DimValue, FileRecord
from aip.package import CHUNK_SIZE, PackageReader
from repository.models import Bitstream, BitstreamFormat, bitstream_storage

logger = logging.getLogger(__name__)

SUPPORT_LEVELS = {"UNKNOWN": 0, "KNOWN": 1, "SUPPORTED": 2}


class StoredFiles:
    """Names written to the bitstream storage during one run, for clean-up on failure."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.bytes = 0

    def delete_all(self) -> None:
        storage = bitstream_storage()
        for name in self.names:
            try:
                storage.delete(name)
            except OSError:
                logger.exception("could not delete stored file %s after a failed run", name)
        self.names.clear()


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


def storage_name_new() -> str:
    """Return a new storage name ``ab/cd/<random id>``, spread over folders as DSpace's assetstore does.

    The name is independent of the bitstream's UUID, so a replaced bitstream that keeps
    its UUID never writes over the file of the version it replaces.
    """
    text = uuid_module.uuid4().hex
    return f"{text[:2]}/{text[2:4]}/{text}"


def store_file(
    reader: PackageReader, record: FileRecord, bitstream: Bitstream, stored: StoredFiles, *, source: str
) -> None:
    """Stream the file of ``record`` into storage for ``bitstream`` and verify size and MD5."""
    expected_size = reader.entry_size(record.href)
    storage = bitstream_storage()
    name = storage.get_available_name(storage_name_new())
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

    def __init__(self) -> None:
        self._formats = {fmt.short_description: fmt for fmt in BitstreamFormat.objects.all()}

    def resolve(self, *, short_description, mimetype, support_level=None, internal=None, file_name="") -> BitstreamFormat:
        if short_description:
            if short_description not in self._formats:
                self._formats[short_description] = BitstreamFormat.objects.create(
                    short_description=short_description,
                    mimetype=mimetype or "application/octet-stream",
                    support_level=SUPPORT_LEVELS.get((support_level or "").upper(), 0),
                    internal=(internal or "").lower() == "true",
                )
            return self._formats[short_description]
        return self.by_mimetype(mimetype) or self.by_extension(file_name) or self._formats["Unknown"]

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

"""Write and open AIP zip files.

A package is written to a temporary file beside its final name and renamed into
place only when complete, so no truncated package ever carries a final name.
Every zip field that could vary between runs is fixed (entry order, times,
"made by" system, entry permissions, compression level, comment), so an unchanged
object always produces the same bytes on the same zlib version.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable

from aip.errors import ChecksumMismatchError, InvalidPackageError, UnsafePackageError

MANIFEST_NAME = "mets.xml"
ZIP_COMMENT = b"METS archive created by aip-backup (DSpace AIP format)"
# Entry time of packages of objects without a last-modified date; DSpace 7+ uses the same.
CONTAINER_ENTRY_TIME = (2002, 11, 4, 0, 0, 0)
COMPRESS_LEVEL = 6
CHUNK_SIZE = 1024 * 1024
# Entries at least this large get ZIP64 headers from the start, as their final size is not known in advance.
ZIP64_THRESHOLD = 2**31


@dataclass
class PackageEntry:
    name: str
    size: int
    open: Callable[[], BinaryIO]
    # MD5 the content must have; a mismatch stops the write, so a damaged file never enters a backup.
    expected_md5: str | None = None


def entry_time(last_modified: datetime | None) -> tuple[int, int, int, int, int, int]:
    """Return the zip entry time: the item's last-modified time in UTC, else a constant."""
    if last_modified is None:
        return CONTAINER_ENTRY_TIME
    moment = last_modified.astimezone(timezone.utc)
    if moment.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


def _zip_info(name: str, date_time) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 0
    # rw-r--r-- for every entry; zipfile would otherwise pick 0600 for streamed entries.
    info.external_attr = 0o644 << 16
    return info


def write_package(path: Path, *, manifest: bytes, entries: Iterable[PackageEntry], last_modified: datetime | None) -> None:
    """Write a package with ``mets.xml`` first, then each entry streamed in chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    date_time = entry_time(last_modified)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w", compresslevel=COMPRESS_LEVEL) as archive:
            archive.comment = ZIP_COMMENT
            archive.writestr(_zip_info(MANIFEST_NAME, date_time), manifest)
            for entry in entries:
                with entry.open() as source, archive.open(
                    _zip_info(entry.name, date_time), "w", force_zip64=entry.size >= ZIP64_THRESHOLD
                ) as target:
                    digest, size = _copy(source, target)
                _check_entry(entry, digest, size)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _copy(source: BinaryIO, target: BinaryIO) -> tuple[str, int]:
    """Copy ``source`` to ``target`` in chunks; return the MD5 hex digest and size of what was copied."""
    digest = hashlib.md5()
    size = 0
    while chunk := source.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
        target.write(chunk)
    return digest.hexdigest(), size


def _check_entry(entry: PackageEntry, digest: str, size: int) -> None:
    if size != entry.size or (entry.expected_md5 and digest != entry.expected_md5.lower()):
        raise ChecksumMismatchError(
            f"Stored file for {entry.name} has {size} bytes and MD5 {digest}, but the repository records "
            f"{entry.size} bytes and MD5 {entry.expected_md5}. The stored file is damaged; restore it from "
            "a backup before exporting."
        )


class PackageReader:
    """An open AIP zip: its manifest bytes and streaming access to its entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise InvalidPackageError(f"Package {path} does not exist. Check the file name.") from None
        except (zipfile.BadZipFile, OSError) as error:
            raise InvalidPackageError(f"Package {path} is not a readable zip file ({error}).") from None
        self._entries = self._index_entries()

    def _index_entries(self) -> dict[str, zipfile.ZipInfo]:
        entries: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            name = info.filename
            if name.startswith("/") or ".." in name.split("/") or "\\" in name:
                raise UnsafePackageError(f"Package {self.path} has an entry outside the package: {name!r}.")
            if name in entries:
                raise UnsafePackageError(f"Package {self.path} has two entries named {name!r}.")
            entries[name] = info
        return entries

    def close(self) -> None:
        self._zip.close()

    def entry_names(self) -> set[str] | None:
        """Return the names of every entry of the zip."""
        return set(self._entries)

    def __enter__(self) -> PackageReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def manifest_bytes(self) -> bytes:
        if MANIFEST_NAME not in self._entries:
            raise InvalidPackageError(f"Package {self.path} has no {MANIFEST_NAME}; it is not a METS AIP.")
        return self._zip.read(MANIFEST_NAME)

    def entry_size(self, name: str) -> int:
        return self._entry(name).file_size

    def _entry(self, name: str) -> zipfile.ZipInfo:
        try:
            return self._entries[name]
        except KeyError:
            raise InvalidPackageError(
                f"Package {self.path} names the file {name!r} in its manifest, but the zip has no such entry."
            ) from None

    def open_entry(self, name: str) -> BinaryIO:
        return self._zip.open(self._entry(name))

    def read_entry(self, name: str) -> bytes:
        with self.open_entry(name) as stream:
            return stream.read()


class ManifestOnlyReader:
    """A manifest-only package: a METS file whose file references name files in its own folder.

    It offers the same reading interface as ``PackageReader``. A reference must be a
    plain file name, because the folder of the manifest is the whole package.
    """

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise InvalidPackageError(f"Package {path} does not exist. Check the file name.")
        self.path = path

    def close(self) -> None:
        pass

    def entry_names(self) -> set[str] | None:
        """Return None: the folder of a manifest-only package may hold other packages' files too."""
        return None

    def __enter__(self) -> ManifestOnlyReader:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def manifest_bytes(self) -> bytes:
        return self.path.read_bytes()

    def _file(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name in (".", "..") or Path(name).is_absolute():
            raise UnsafePackageError(f"Package {self.path} references a file outside its folder: {name!r}.")
        path = self.path.parent / name
        if not path.is_file():
            raise InvalidPackageError(
                f"Package {self.path} references the file {name!r}, which is not in {self.path.parent}."
            )
        return path

    def entry_size(self, name: str) -> int:
        return self._file(name).stat().st_size

    def open_entry(self, name: str) -> BinaryIO:
        return self._file(name).open("rb")

    def read_entry(self, name: str) -> bytes:
        return self._file(name).read_bytes()


def package_open(path: Path, *, manifest_only: bool = False) -> PackageReader | ManifestOnlyReader:
    """Open a package: a zip, or a manifest-only METS file (``manifest_only`` or a name ending in ``.xml``)."""
    if manifest_only or path.suffix.lower() == ".xml":
        return ManifestOnlyReader(path)
    return PackageReader(path)


def write_manifest_only(path: Path, *, manifest: bytes) -> None:
    """Write a manifest-only package: the METS file alone, renamed into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as target:
            target.write(manifest)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def md5_of(stream: BinaryIO) -> tuple[str, int]:
    """Return the MD5 hex digest and the size of everything left in ``stream``."""
    digest = hashlib.md5()
    size = 0
    while chunk := stream.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size

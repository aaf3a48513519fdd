"""Write and open AIP zip files.

A package is written to a temporary file beside its final name and renamed into
place only when complete, so no truncated package ever carries a final name.
Every zip field that could vary between runs is fixed (entry order, times,
"made by" system, entry permissions, compression level, comment), and each
entry's method depends only on its content, so an unchanged object always
produces the same bytes on the same zlib version.

The manifest and files under 1 MiB are deflated, as DSpace deflates every
entry. A larger file is stored uncompressed when a sample of its start barely
compresses, as with most PDF, image, audio and video files: deflating those
takes 10 to 15 times as long as a plain copy and saves nothing. Because the
target file is seekable, zipfile writes the size and CRC-32 of a stored entry
into its local header, with no data descriptor: Java's ZipInputStream (readLOC in
OpenJDK) rejects a stored entry that has one.
"""
from __future__ import annotations

import hashlib
import os
import socket
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable

from django.conf import settings

from aip.digests import BackgroundMd5
from aip.errors import ChecksumMismatchError, InvalidPackageError, UnsafePackageError

MANIFEST_NAME = "mets.xml"
ZIP_COMMENT = b"METS archive created by aip-backup (DSpace AIP format)"
# Entry time of packages of objects without a last-modified date; DSpace 7+ uses the same.
CONTAINER_ENTRY_TIME = (2002, 11, 4, 0, 0, 0)
COMPRESS_LEVEL = 6
CHUNK_SIZE = 1024 * 1024
# Entries smaller than STORE_MIN_BYTES are always deflated. A larger entry is stored when its
# first SAMPLE_BYTES, deflated at SAMPLE_LEVEL, shrink by less than STORE_MAX_SAVING.
STORE_MIN_BYTES = CHUNK_SIZE
SAMPLE_BYTES = 256 * 1024
SAMPLE_LEVEL = 1
STORE_MAX_SAVING = 0.03

# Zip methods a package may use. DSpace and this project write deflate. bzip2 and LZMA are
# rejected because zipfile decompresses a whole chunk of them at once, with no bound on the output.
READABLE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
# Errors zipfile raises for a damaged or truncated zip, including a bad CRC-32 at the end of an entry.
ZIP_DAMAGE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError)
# File types allowed in the mode bits of an entry. 0 is what writers that record no type
# (DSpace's Java ZipOutputStream, this project) leave there.
ALLOWED_FILE_TYPES = {0, stat.S_IFREG, stat.S_IFDIR}


@dataclass(frozen=True)
class PackageLimits:
    """Bounds on what a package may expand to, checked from the zip's central directory before anything is read.

    zipfile never returns more bytes than an entry's declared size (more fails the
    CRC check), so bounding the declared sizes bounds what a package can write.
    """

    max_entry_bytes: int = 64 * 2**30
    max_package_bytes: int = 1024 * 2**30
    max_manifest_bytes: int = 256 * 2**20
    max_compression_ratio: int = 200
    # Smaller entries may exceed the ratio, because a few MiB of repeated text can compress 1000 to 1.
    ratio_min_bytes: int = 16 * 2**20

    @classmethod
    def from_settings(cls) -> PackageLimits:
        """Read each limit from the Django setting, else the environment variable, of the same name."""
        defaults = cls()
        return cls(
            max_entry_bytes=_limit_setting("AIP_MAX_ENTRY_BYTES", defaults.max_entry_bytes),
            max_package_bytes=_limit_setting("AIP_MAX_PACKAGE_BYTES", defaults.max_package_bytes),
            max_manifest_bytes=_limit_setting("AIP_MAX_MANIFEST_BYTES", defaults.max_manifest_bytes),
            max_compression_ratio=_limit_setting("AIP_MAX_COMPRESSION_RATIO", defaults.max_compression_ratio),
            ratio_min_bytes=_limit_setting("AIP_COMPRESSION_RATIO_MIN_BYTES", defaults.ratio_min_bytes),
        )


def _limit_setting(name: str, default: int) -> int:
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name) or default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number <= 0:
        raise InvalidPackageError(
            f"Setting {name} is {value!r}, but it must be a positive whole number (bytes, or for "
            "AIP_MAX_COMPRESSION_RATIO a ratio). Fix the setting and run again."
        )
    return number


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


def _zip_info(name: str, date_time, compress_type: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.compress_type = compress_type
    info.create_system = 0
    # rw-r--r-- for every entry; zipfile would otherwise pick 0600 for streamed entries.
    info.external_attr = 0o644 << 16
    return info


PARTIAL_SUFFIX = ".partial"


def partial_prefix(path: Path) -> str:
    """Return the prefix of the temporary file that becomes ``path``: the host and process that write it.

    ``partial_files_sweep`` reads them back to tell the files of dead writers from those still being written.
    """
    return f".{path.name}.{_host_name()}-{os.getpid()}."


def partial_files_sweep(folder: Path) -> list[Path]:
    """Delete the temporary package files in ``folder`` left by dead processes of this host; return them.

    A temporary file of a process on another host is kept, because whether that
    process still runs cannot be checked from here.
    """
    removed = []
    host = _host_name()
    for candidate in folder.glob(f".*{PARTIAL_SUFFIX}"):
        owner = _partial_owner(candidate.name)
        if owner is None or owner[0] != host or process_alive(owner[1]):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _host_name() -> str:
    # Dots separate the parts of a temporary file name, so the host name's own dots are replaced.
    return socket.gethostname().replace(".", "_")


def _partial_owner(name: str) -> tuple[str, int] | None:
    """Return the host and process id in a temporary file name, or None for a name of another form."""
    stem = name[: -len(PARTIAL_SUFFIX)]
    # The owner is the second-last dot-separated part: .<package name>.<host>-<pid>.<random>
    parts = stem.rsplit(".", 2)
    if len(parts) != 3:
        return None
    host, separator, pid = parts[1].rpartition("-")
    if not separator or not pid.isdigit():
        return None
    return host, int(pid)


def process_alive(pid: int) -> bool:
    """Tell whether process ``pid`` of this host is running. A process of another user counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_package(path: Path, *, manifest: bytes, entries: Iterable[PackageEntry], last_modified: datetime | None) -> None:
    """Write a package with ``mets.xml`` first, then each entry streamed in chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    date_time = entry_time(last_modified)
    handle, temporary = tempfile.mkstemp(prefix=partial_prefix(path), suffix=PARTIAL_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w", compresslevel=COMPRESS_LEVEL) as archive:
            archive.comment = ZIP_COMMENT
            archive.writestr(_zip_info(MANIFEST_NAME, date_time), manifest)
            for entry in entries:
                with entry.open() as source:
                    start = _read_start(source)
                    info = _zip_info(entry.name, date_time, compress_method(start, entry.size))
                    # zipfile writes ZIP64 headers when 1.05 times this size, a margin for deflate, exceeds 4 GiB.
                    info.file_size = entry.size
                    with archive.open(info, "w") as target:
                        digest, size = _copy(start, source, target, limit=entry.size)
                _check_entry(entry, digest, size)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def compress_method(start: bytes, size: int) -> int:
    """Return the zip method of an entry of ``size`` bytes whose content begins with ``start``.

    The method depends only on the content, so every export of a file picks the
    same one. ``start`` must contain at least SAMPLE_BYTES, or the whole content when
    it is shorter.
    """
    if size < STORE_MIN_BYTES:
        return zipfile.ZIP_DEFLATED
    sample = start[:SAMPLE_BYTES]
    compressor = zlib.compressobj(SAMPLE_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated_size = len(compressor.compress(sample)) + len(compressor.flush())
    if deflated_size > len(sample) * (1 - STORE_MAX_SAVING):
        return zipfile.ZIP_STORED
    return zipfile.ZIP_DEFLATED


def _read_start(source: BinaryIO) -> bytes:
    """Read the first CHUNK_SIZE bytes of ``source`` (all of it when shorter), also from streams that return less."""
    parts = []
    remaining = CHUNK_SIZE
    while remaining > 0 and (part := source.read(remaining)):
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _copy(start: bytes, source: BinaryIO, target: BinaryIO, *, limit: int) -> tuple[str, int]:
    """Write ``start`` and then the rest of ``source`` to ``target``, and return the MD5 hex digest and size written.

    Copying stops once more than ``limit`` bytes are written, because the content is then
    known to differ from its record, and a longer copy could outgrow the entry's headers.
    """
    size = 0
    with BackgroundMd5() as digest:
        chunk = start
        while chunk:
            digest.update(chunk)
            target.write(chunk)
            size += len(chunk)
            if size > limit:
                break
            chunk = source.read(CHUNK_SIZE)
        return digest.hexdigest(), size


def _check_entry(entry: PackageEntry, digest: str, size: int) -> None:
    if size != entry.size or (entry.expected_md5 and digest != entry.expected_md5.lower()):
        # ``_copy`` stops reading a file that is longer than recorded, so its size and MD5 are unknown.
        found = f"more than {entry.size} bytes" if size > entry.size else f"{size} bytes and MD5 {digest}"
        raise ChecksumMismatchError(
            f"Stored file for {entry.name} has {found}, but the repository records "
            f"{entry.size} bytes and MD5 {entry.expected_md5}. The stored file is damaged; restore it from "
            "a backup before exporting."
        )


class PackageReader:
    """An open AIP zip: its manifest bytes and streaming access to its entries."""

    def __init__(self, path: Path, limits: PackageLimits | None = None) -> None:
        self.path = path
        self.limits = limits or PackageLimits.from_settings()
        try:
            self._zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise InvalidPackageError(f"Package {path} does not exist. Check the file name.") from None
        except (*ZIP_DAMAGE_ERRORS, zipfile.LargeZipFile) as error:
            # A damaged central directory can fail with any of these, including NotImplementedError
            # (a RuntimeError) for a "version needed to extract" that zipfile does not know.
            raise InvalidPackageError(f"Package {path} is not a readable zip file ({error}).") from None
        try:
            self._entries = self._index_entries()
        except BaseException:
            self._zip.close()
            raise

    def _index_entries(self) -> dict[str, zipfile.ZipInfo]:
        """Check every entry of the central directory and return the file entries by name."""
        entries: dict[str, zipfile.ZipInfo] = {}
        folded: dict[str, str] = {}
        total = 0
        for info in self._zip.infolist():
            name = info.filename
            self._check_entry_name(name)
            if name in entries:
                raise UnsafePackageError(f"Package {self.path} has two entries named {name!r}.")
            # Two names that differ only in case would overwrite each other on a case-insensitive file system.
            if name.casefold() in folded:
                raise UnsafePackageError(
                    f"Package {self.path} has two entries whose names differ only in case: "
                    f"{folded[name.casefold()]!r} and {name!r}."
                )
            folded[name.casefold()] = name
            self._check_entry_kind(info)
            if info.is_dir():
                continue
            self._check_entry_size(info)
            total += info.file_size
            if total > self.limits.max_package_bytes:
                raise UnsafePackageError(
                    f"Package {self.path} expands to more than {self.limits.max_package_bytes} bytes "
                    "(AIP_MAX_PACKAGE_BYTES). Raise the limit if the package is trusted."
                )
            entries[name] = info
        return entries

    def _check_entry_name(self, name: str) -> None:
        parts = name.split("/")
        if (
            not name
            or name.startswith("/")
            or ".." in parts
            or "\\" in name
            or "\x00" in name
            or (len(name) > 1 and name[1] == ":")
        ):
            raise UnsafePackageError(f"Package {self.path} has an entry outside the package: {name!r}.")

    def _check_entry_kind(self, info: zipfile.ZipInfo) -> None:
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if file_type not in ALLOWED_FILE_TYPES or (file_type == stat.S_IFDIR and not info.is_dir()):
            kind = "a symbolic link" if file_type == stat.S_IFLNK else f"a special file (mode {file_type:#o})"
            raise UnsafePackageError(
                f"Package {self.path} has an entry {info.filename!r} that is {kind}; an AIP contains only plain files."
            )
        if info.flag_bits & 0x1:
            raise UnsafePackageError(
                f"Package {self.path} has an encrypted entry {info.filename!r}. AIPs are never encrypted."
            )
        if not info.is_dir() and info.compress_type not in READABLE_METHODS:
            raise UnsafePackageError(
                f"Package {self.path}: entry {info.filename!r} uses zip compression method {info.compress_type}; "
                "only stored and deflate entries are read. Repack the package with deflate."
            )

    def _check_entry_size(self, info: zipfile.ZipInfo) -> None:
        limit = self.limits.max_manifest_bytes if info.filename == MANIFEST_NAME else self.limits.max_entry_bytes
        setting = "AIP_MAX_MANIFEST_BYTES" if info.filename == MANIFEST_NAME else "AIP_MAX_ENTRY_BYTES"
        if info.file_size > limit:
            raise UnsafePackageError(
                f"Package {self.path}: entry {info.filename!r} expands to {info.file_size} bytes, more than the "
                f"limit of {limit} bytes ({setting}). Raise the limit if the package is trusted."
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= self.limits.ratio_min_bytes and ratio > self.limits.max_compression_ratio:
            raise UnsafePackageError(
                f"Package {self.path}: entry {info.filename!r} expands {ratio:.0f} times ({info.compress_size} to "
                f"{info.file_size} bytes), more than AIP_MAX_COMPRESSION_RATIO ({self.limits.max_compression_ratio}). "
                "Raise the limit if the package is trusted."
            )

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
        try:
            return self._zip.read(MANIFEST_NAME)
        except ZIP_DAMAGE_ERRORS as error:
            raise InvalidPackageError(
                f"Package {self.path}: {MANIFEST_NAME} cannot be read from the zip ({error}). The package is damaged; "
                "use another copy of it."
            ) from None

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

    def __init__(self, path: Path, limits: PackageLimits | None = None) -> None:
        if not path.is_file():
            raise InvalidPackageError(f"Package {path} does not exist. Check the file name.")
        self.path = path
        self.limits = limits or PackageLimits.from_settings()

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
        size = self.path.stat().st_size
        if size > self.limits.max_manifest_bytes:
            raise UnsafePackageError(
                f"Package {self.path} has {size} bytes, more than the limit of {self.limits.max_manifest_bytes} "
                "bytes for a manifest (AIP_MAX_MANIFEST_BYTES). Raise the limit if the package is trusted."
            )
        return self.path.read_bytes()

    def _file(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name in (".", "..") or Path(name).is_absolute():
            raise UnsafePackageError(f"Package {self.path} references a file outside its folder: {name!r}.")
        path = self.path.parent / name
        # A link could point anywhere on this machine, so the folder's own files are the only ones read.
        if path.is_symlink():
            raise UnsafePackageError(f"Package {self.path} references {name!r}, which is a symbolic link.")
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
    handle, temporary = tempfile.mkstemp(prefix=partial_prefix(path), suffix=PARTIAL_SUFFIX, dir=path.parent)
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



def package_matches(path: Path, *, manifest: bytes, entries: list[PackageEntry]) -> bool:
    """Tell whether the zip at ``path`` contains exactly ``manifest`` and ``entries``, so rewriting it changes nothing.

    The manifest bytes must be equal, and each entry must have the name, order,
    size and MD5 expected. Reading the entries lets zipfile check each CRC-32 too,
    so a damaged package is written again. An entry with no expected MD5 (a
    bitstream with another checksum algorithm) is never taken as matching.
    """
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if archive.comment != ZIP_COMMENT:
                return False
            if [info.filename for info in infos] != [MANIFEST_NAME, *(entry.name for entry in entries)]:
                return False
            if archive.read(MANIFEST_NAME) != manifest:
                return False
            return all(_entry_matches(archive, info, entry) for info, entry in zip(infos[1:], entries))
    except ZIP_DAMAGE_ERRORS:
        return False


def _entry_matches(archive: zipfile.ZipFile, info: zipfile.ZipInfo, entry: PackageEntry) -> bool:
    if info.file_size != entry.size:
        return False
    if entry.size == 0:
        return info.compress_type == zipfile.ZIP_DEFLATED
    if entry.expected_md5 is None:
        return False
    with archive.open(info) as stream:
        start = _read_start(stream)
        # The entry contains the same bytes as the file when the MD5 matches, so its method
        # must be the one that a new export would pick for them.
        if info.compress_type != compress_method(start, entry.size):
            return False
        digest = hashlib.md5(start)
        while chunk := stream.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest() == entry.expected_md5.lower()

"""Stream AIPs in and out of the Django storages that store them.

AIPs written from the admin and by scheduled backups live in a storage of
``settings.STORAGES`` ("aips" by default): a ``FileSystemStorage``, django-storages'
``S3Storage``, or any other ``Storage``. The export, ingest and verify services work
on local files, so packages are staged:

- ``staged_read`` gives a local path of a stored package (and, on request, of the
  other packages of its folder). A file system storage gives its real path; any
  other storage is downloaded in chunks into a temporary folder.
- ``staged_write`` gives an empty local folder and, when the block succeeds,
  publishes every file written there into a folder of the storage.

Storage names are "/"-separated names relative to the storage root. Every
operation retries transient errors (connection errors, timeouts, S3 5xx and
throttling) with bounded exponential back-off, and turns every storage failure
into an ``AipError`` that names the storage, the name and what failed. A full
file system (ENOSPC, EDQUOT, EFBIG) is not retried: it raises
``StorageFullError``, which names the storage or local folder that is full.
"""
from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from storages.backends.s3 import S3Storage

from aip.errors import AipError, StorageFullError, storage_full_cause

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Bytes read or written at a time when a file is streamed through this process.
CHUNK_SIZE = 1024 * 1024
# Attempts of one storage operation, and the wait in seconds before the first retry (doubled for each next one).
RETRY_ATTEMPTS = 4
RETRY_DELAY = 0.5
# STORAGES entries that never contain AIPs: Django's media storage, static files and bitstream files.
NON_AIP_ALIASES = ("default", "staticfiles", "bitstreams")
# Files that ``staged_read(with_folder=True)`` brings beside the package: the packages of its folder.
PACKAGE_SUFFIXES = (".zip", ".xml")
# Folder inside a file system storage where ``staged_write`` stages files, so that publishing is a
# rename on the same file system. ``storage_files`` leaves it out.
FILE_SYSTEM_STAGING = ".staging"
# S3 error codes that mean "slow down" or "try again later" whatever their HTTP status.
S3_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
}
S3_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
# Objects per DeleteObjects request, the S3 maximum.
S3_DELETE_BATCH = 1000
STORAGE_ERRORS = (OSError, BotoCoreError, ClientError, Boto3Error)


def aip_storage(alias: str) -> Storage:
    """Return the storage of the STORAGES entry ``alias``; raise ``AipError`` for an unknown or non-AIP alias."""
    names = _aip_aliases()
    if alias not in names:
        raise AipError(
            f"Storage {alias!r} is not an AIP storage of this installation. Configured AIP storages: "
            f"{', '.join(repr(name) for name in names) or '(none)'}. Use one of them or add the entry to STORAGES."
        )
    return storages[alias]


@contextmanager
def staged_read(storage: Storage, name: str, *, with_folder: bool = False) -> Iterator[Path]:
    """Yield a local path of the stored package ``name``.

    With ``with_folder``, every package file of the same folder sits beside it, as a recursive
    ingest or verify needs. A file system storage yields its own file and copies nothing. Any other
    storage is downloaded in chunks into a temporary folder, which is removed afterwards.
    """
    name = _name_clean(name)
    backend = _backend(storage)
    if not _attempt(storage, name, "Checking", lambda: backend.exists(name)):
        raise AipError(
            f"Package {name!r} was not found in {_describe(storage)}. Check the name and its folder, "
            "and list the folder to see which packages it contains."
        )
    if isinstance(backend, _FileSystemBackend):
        yield backend.path(name)
        return

    folder = tempfile.mkdtemp(prefix="aip-read-", dir=settings.FILE_UPLOAD_TEMP_DIR)
    try:
        local = Path(folder) / posixpath.basename(name)
        try:
            _attempt(storage, name, "Downloading", lambda: backend.download(name, local))
            if with_folder:
                _neighbours_download(storage, backend, name, Path(folder))
        except StorageFullError as error:
            # Downloads fill the local temporary folder, not the storage they come from.
            raise error.placed_in(f"local folder {folder}") from error
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def staged_write(storage: Storage, folder: str) -> Iterator[Path]:
    """Yield an empty local folder and publish every file written there under ``folder`` when the block succeeds.

    When the block raises, nothing is published. Files keep their path relative to the local folder
    and replace stored files of the same name. If publishing itself fails, the files this call added
    are deleted again (files it replaced stay replaced) and ``AipError`` is raised.
    """
    folder = _name_clean(folder, allow_root=True)
    backend = _backend(storage)
    local = _staging_folder(storage, backend)
    try:
        yield local
        _publish(storage, backend, local, folder)
    except (StorageFullError, OSError) as error:
        cause = storage_full_cause(error)
        if cause is None:
            raise
        raise _staging_full_error(storage, backend, local, folder, error, cause) from error
    finally:
        shutil.rmtree(local, ignore_errors=True)


def storage_copy(storage: Storage, source: str, target: str) -> None:
    """Copy the stored file ``source`` to ``target`` in the same storage, replacing ``target``.

    S3 copies on the server; a file system storage makes a hard link, or a streamed copy
    where links are not possible.
    """
    source = _name_clean(source)
    target = _name_clean(target)
    backend = _backend(storage)
    missing = AipError(f"File {source!r} to copy was not found in {_describe(storage)}.")
    # A file system copy finds a missing source itself; asking first would cost a call per file of a backup.
    if not isinstance(backend, _FileSystemBackend) and not _attempt(storage, source, "Checking", lambda: backend.exists(source)):
        raise missing
    try:
        _attempt(storage, source, f"Copying to {target!r}", lambda: backend.copy(source, target))
    except _SourceMissingError:
        raise missing from None
    logger.info("copied %s to %s in %s", source, target, _describe(storage))


def storage_copy_folder(storage: Storage, source: str, target: str, names: list[str]) -> None:
    """Copy the files ``names`` of folder ``source`` into folder ``target`` of the same storage.

    A file system storage links them all in one pass, at a few system calls per file instead of
    name checks and path building for each. Other storages copy one file at a time.
    """
    backend = _backend(storage)
    if not isinstance(backend, _FileSystemBackend):
        for name in names:
            storage_copy(storage, posixpath.join(source, name), posixpath.join(target, name))
        return
    source = _name_clean(source)
    target = _name_clean(target)
    for name in names:
        if _name_clean(name) != name or "/" in name:
            raise AipError(f"Storage name {name!r} is invalid here: give a file name without a folder.")
    try:
        _attempt(
            storage, source, f"Copying {len(names)} file(s) to {target!r}",
            lambda: backend.copy_folder(source, target, names),
        )
    except _SourceMissingError as missing:
        raise AipError(f"File {posixpath.join(source, str(missing))!r} to copy was not found in {_describe(storage)}.") from None
    logger.info("copied %d file(s) from %s to %s in %s", len(names), source, target, _describe(storage))


def storage_md5(storage: Storage, name: str) -> str:
    """Return the hexadecimal MD5 of the stored file ``name``, read in chunks."""
    name = _name_clean(name)
    backend = _backend(storage)
    if not _attempt(storage, name, "Checking", lambda: backend.exists(name)):
        raise AipError(f"File {name!r} was not found in {_describe(storage)}; its MD5 cannot be computed.")
    return _attempt(storage, name, "Computing the MD5 of", lambda: backend.md5(name))


def storage_files(storage: Storage, folder: str) -> list[str]:
    """Return the storage names (``folder/...``) of all files under ``folder``, recursively, sorted.

    An empty ``folder`` lists the whole storage; a folder that does not exist gives an empty list.
    """
    folder = _name_clean(folder, allow_root=True)
    backend = _backend(storage)
    return sorted(_attempt(storage, folder or "/", "Listing", lambda: backend.files(folder)))


def storage_delete_folder(storage: Storage, folder: str) -> int:
    """Delete every file under ``folder``, recursively; return how many were deleted."""
    folder = _name_clean(folder)
    backend = _backend(storage)
    names = storage_files(storage, folder)
    _attempt(storage, folder, "Deleting the files of", lambda: backend.delete(names))
    logger.info("deleted %d file(s) under %s in %s", len(names), folder, _describe(storage))
    return len(names)


def _aip_aliases() -> list[str]:
    return [alias for alias in settings.STORAGES if alias not in NON_AIP_ALIASES]


def _name_clean(name: str, *, allow_root: bool = False) -> str:
    """Return ``name`` without surrounding slashes; raise ``AipError`` for a name that leaves the storage."""
    cleaned = str(name).replace("\\", "/").strip("/")
    parts = cleaned.split("/") if cleaned else []
    if any(part in ("", ".", "..") for part in parts) or (not parts and not allow_root):
        raise AipError(
            f"Storage name {name!r} is invalid: give a relative name of '/'-separated parts, "
            "without empty, '.' or '..' parts."
        )
    return cleaned


def _staging_folder(storage: Storage, backend: _Backend) -> Path:
    try:
        return backend.staging_folder()
    except OSError as error:
        full = storage_full_cause(error)
        if full is None:
            raise
        raise StorageFullError(action="Creating a staging folder", place=_describe(storage), cause=full) from error


def _staging_full_error(
    storage: Storage, backend: _Backend, local: Path, folder: str, error: BaseException, cause: OSError
) -> StorageFullError:
    """Return the error for a full staging folder, naming the storage when the folder lies inside it."""
    action = error.action if isinstance(error, StorageFullError) else f"Writing files for {folder or '/'}"
    if isinstance(backend, _FileSystemBackend):
        return StorageFullError(action=action, place=_describe(storage), cause=cause)
    return StorageFullError(action=action, place=f"local staging folder {local}", cause=cause)


class _SourceMissingError(Exception):
    """Raised by a backend's copy when its source does not exist; not an ``OSError``, so never retried."""


# Up to this many files, publishing checks each one's existence instead of listing the folder,
# because listing a backup folder of many packages costs far more.
PUBLISH_CHECK_EACH = 100


def _publish(storage: Storage, backend: _Backend, local: Path, folder: str) -> None:
    files = sorted(path for path in local.rglob("*") if path.is_file())
    existing = _existing_names(storage, backend, local, folder, files)
    published: list[str] = []
    try:
        for path in files:
            name = _published_name(local, folder, path)
            _attempt(storage, name, "Publishing", lambda: backend.upload(path, name))
            published.append(name)
    except AipError:
        _unpublish(storage, backend, [name for name in published if name not in existing])
        raise
    logger.info("published %d file(s) under %s in %s", len(published), folder or "/", _describe(storage))


def _unpublish(storage: Storage, backend: _Backend, names: list[str]) -> None:
    """Delete files that a failed publication added; a failure here is logged, so the first error is the one raised."""
    try:
        backend.delete(names)
    except STORAGE_ERRORS as error:
        logger.error(
            "removing %d file(s) of a failed publication from %s failed: %s",
            len(names), _describe(storage), _redacted(str(error), storage),
        )


def _neighbours_download(storage: Storage, backend: _Backend, name: str, local: Path) -> None:
    folder = posixpath.dirname(name)
    names = _attempt(storage, folder or "/", "Listing", lambda: backend.files(folder))
    for other in sorted(names):
        in_folder = posixpath.dirname(other) == folder
        if in_folder and other != name and other.lower().endswith(PACKAGE_SUFFIXES):
            target = local / posixpath.basename(other)
            _attempt(storage, other, "Downloading", lambda: backend.download(other, target))


def _existing_names(storage: Storage, backend: _Backend, local: Path, folder: str, files: list[Path]) -> set[str]:
    """Return which of the names that ``files`` get in ``folder`` are stored already."""
    if len(files) > PUBLISH_CHECK_EACH:
        return set(storage_files(storage, folder))
    names = [_published_name(local, folder, path) for path in files]
    return {name for name in names if _attempt(storage, name, "Checking", lambda name=name: backend.exists(name))}


def _published_name(local: Path, folder: str, path: Path) -> str:
    relative = path.relative_to(local).as_posix()
    return posixpath.join(folder, relative) if folder else relative


def _attempt(storage: Storage, name: str, action: str, operation: Callable[[], T]) -> T:
    """Run ``operation``, retrying transient errors; raise ``AipError`` once it fails for good."""
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return operation()
        except STORAGE_ERRORS as error:
            full = storage_full_cause(error)
            if full is not None:
                # A full disk stays full for longer than the back-off waits, so it is not retried.
                raise StorageFullError(action=f"{action} {name!r}", place=_describe(storage), cause=full) from None
            reason = _redacted(f"{type(error).__name__}: {error}", storage)
            if not _transient(error) or attempt == RETRY_ATTEMPTS:
                raise AipError(
                    f"{action} {name!r} in {_describe(storage)} failed after {attempt} attempt(s): {reason}. "
                    f"{_advice(storage)}"
                ) from None
            delay = RETRY_DELAY * 2 ** (attempt - 1)
            logger.warning(
                "%s %s in %s failed (attempt %d of %d), retrying in %.1f s: %s",
                action, name, _describe(storage), attempt, RETRY_ATTEMPTS, delay, reason,
            )
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _transient(error: BaseException) -> bool:
    for cause in _causes(error):
        if isinstance(cause, (TimeoutError, ConnectionError, BotoConnectionError, HTTPClientError)):
            return True
        if isinstance(cause, ClientError):
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            code = cause.response.get("Error", {}).get("Code", "")
            return status >= 500 or status == 429 or code in S3_TRANSIENT_CODES
    return False


def _causes(error: BaseException) -> Iterator[BaseException]:
    """Yield ``error`` and the errors it was raised from, because boto3 wraps client errors of uploads."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _redacted(text: str, storage: Storage) -> str:
    """Return ``text`` with every credential the storage could use replaced."""
    secrets = [
        getattr(storage, "access_key", None),
        getattr(storage, "secret_key", None),
        getattr(storage, "security_token", None),
        os.environ.get("AWS_ACCESS_KEY_ID"),
        os.environ.get("AWS_SECRET_ACCESS_KEY"),
        os.environ.get("AWS_SESSION_TOKEN"),
    ]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _advice(storage: Storage) -> str:
    if isinstance(storage, FileSystemStorage):
        return "Check that the folder exists, is readable and writable by this process and has space, then retry."
    return "Check that the storage service is reachable, that the bucket exists and that the credentials may use it, then retry."


def _describe(storage: Storage) -> str:
    """Name ``storage`` by its STORAGES alias and where it keeps files, without credentials."""
    alias = _alias_of(storage)
    label = f"storage {alias!r}" if alias else "storage"
    if isinstance(storage, S3Storage):
        where = f"S3 bucket {storage.bucket_name!r}"
        if storage.location:
            where += f", prefix {storage.location!r}"
        if storage.endpoint_url:
            parts = urlsplit(storage.endpoint_url)
            where += f", endpoint {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        return f"{label} ({where})"
    if isinstance(storage, FileSystemStorage):
        return f"{label} (folder {storage.location})"
    return label


def _alias_of(storage: Storage) -> str:
    for alias in _aip_aliases():
        # A misconfigured entry raises here, and that error must not hide the one being reported.
        with suppress(Exception):
            if storages[alias] is storage:
                return alias
    return ""


def _backend(storage: Storage) -> _Backend:
    if isinstance(storage, FileSystemStorage):
        return _FileSystemBackend(storage)
    if isinstance(storage, S3Storage):
        return _S3Backend(storage)
    return _Backend(storage)


class _Backend:
    """File operations through the ``Storage`` API alone, for backends without a faster way.

    NOTE: whether a failed upload can leave a truncated file under its final name depends on
    the backend's ``save``. The file system and S3 backends below rule that out.
    """

    def __init__(self, storage: Storage):
        self.storage = storage

    def staging_folder(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="aip-write-", dir=settings.FILE_UPLOAD_TEMP_DIR))

    def exists(self, name: str) -> bool:
        return self.storage.exists(name)

    def download(self, name: str, local: Path) -> None:
        with self.storage.open(name, "rb") as source, open(local, "wb") as target:
            shutil.copyfileobj(source, target, CHUNK_SIZE)

    def upload(self, local: Path, name: str) -> None:
        # Storage.save picks another name when one is taken, so the old file goes first.
        self.storage.delete(name)
        with open(local, "rb") as source:
            saved = self.storage.save(name, File(source, name=posixpath.basename(name)))
        if saved != name:
            raise OSError(f"the storage saved the file as {saved!r} instead of {name!r}")

    def copy(self, source: str, target: str) -> None:
        with self.storage.open(source, "rb") as stream:
            self.storage.delete(target)
            self.storage.save(target, File(stream, name=posixpath.basename(target)))

    def md5(self, name: str) -> str:
        digest = hashlib.md5()
        with self.storage.open(name, "rb") as stream:
            while chunk := stream.read(CHUNK_SIZE):
                digest.update(chunk)
        return digest.hexdigest()

    def files(self, folder: str) -> list[str]:
        try:
            folders, files = self.storage.listdir(folder)
        except FileNotFoundError:
            return []
        names = [posixpath.join(folder, name) if folder else name for name in files]
        for child in folders:
            names.extend(self.files(posixpath.join(folder, child) if folder else child))
        return names

    def delete(self, names: list[str]) -> None:
        for name in names:
            self.storage.delete(name)


class _FileSystemBackend(_Backend):
    """Files of a ``FileSystemStorage``, published by rename so that no reader sees a partial file."""

    storage: FileSystemStorage

    def path(self, name: str) -> Path:
        return Path(self.storage.path(name))

    def staging_folder(self) -> Path:
        parent = Path(self.storage.location) / FILE_SYSTEM_STAGING
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="write-", dir=parent))

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def upload(self, local: Path, name: str) -> None:
        target = self._target(name)
        os.replace(local, target)
        self._permissions_set(target)

    def copy(self, source: str, target: str) -> None:
        path = self._target(target)
        temporary = path.with_name(f".{path.name}.copy-{os.getpid()}")
        temporary.unlink(missing_ok=True)
        source_path = self.path(source)
        try:
            os.link(source_path, temporary)
        except FileNotFoundError:
            if not source_path.exists():
                raise _SourceMissingError(source) from None
            raise
        except OSError:
            shutil.copyfile(source_path, temporary)
        os.replace(temporary, path)

    def copy_folder(self, source: str, target: str, names: list[str]) -> None:
        source_folder = str(self.path(source))
        target_folder = self.path(target)
        target_folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            destination = os.path.join(target_folder, name)
            try:
                os.link(os.path.join(source_folder, name), destination)
            except FileExistsError:
                # A retry after a failure part-way: the copy made then is replaced.
                self.copy(posixpath.join(source, name), posixpath.join(target, name))
            except FileNotFoundError:
                if not os.path.exists(os.path.join(source_folder, name)):
                    raise _SourceMissingError(name) from None
                raise
            except OSError:
                self.copy(posixpath.join(source, name), posixpath.join(target, name))

    def md5(self, name: str) -> str:
        digest = hashlib.md5()
        with open(self.path(name), "rb") as stream:
            while chunk := stream.read(CHUNK_SIZE):
                digest.update(chunk)
        return digest.hexdigest()

    def files(self, folder: str) -> list[str]:
        root = Path(self.storage.location)
        base = self.path(folder) if folder else root
        if not base.is_dir():
            return []
        # os.walk rather than Path.rglob: a backup folder has a file per item, and building a Path
        # for each took most of the listing.
        names = []
        for folder_path, _folders, files in os.walk(base):
            relative = os.path.relpath(folder_path, root).replace(os.sep, "/")
            prefix = "" if relative == "." else relative + "/"
            names += [prefix + file for file in files if os.path.isfile(os.path.join(folder_path, file))]
        return [name for name in names if name.split("/", 1)[0] != FILE_SYSTEM_STAGING]

    def delete(self, names: list[str]) -> None:
        folders = set()
        for name in names:
            path = self.path(name)
            path.unlink(missing_ok=True)
            folders.update(parent for parent in path.parents if parent.is_relative_to(Path(self.storage.location)))
        # Folders left empty go too, deepest first; the storage root stays.
        for folder in sorted(folders, key=lambda path: len(path.parts), reverse=True):
            if folder != Path(self.storage.location):
                with suppress(OSError):
                    folder.rmdir()

    def _target(self, name: str) -> Path:
        target = self.path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _permissions_set(self, path: Path) -> None:
        if self.storage.file_permissions_mode is not None:
            os.chmod(path, self.storage.file_permissions_mode)


class _S3Backend(_Backend):
    """Objects of an ``S3Storage``, moved with boto3's managed transfers.

    Uploads and downloads go in parts of the storage's ``transfer_config`` chunk size, so memory
    use stays flat, and an object appears under its key only once its upload completes.
    """

    storage: S3Storage

    @property
    def client(self):
        return self.storage.connection.meta.client

    def key(self, name: str) -> str:
        location = self.storage.location.strip("/")
        return f"{location}/{name}" if location and name else (location or name)

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.storage.bucket_name, Key=self.key(name))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in S3_MISSING_CODES:
                return False
            raise
        return True

    def download(self, name: str, local: Path) -> None:
        self.client.download_file(
            self.storage.bucket_name, self.key(name), str(local), Config=self.storage.transfer_config
        )

    def upload(self, local: Path, name: str) -> None:
        key = self.key(name)
        parameters = self.storage.get_object_parameters(key)
        parameters.setdefault("ContentType", mimetypes.guess_type(name)[0] or self.storage.default_content_type)
        if self.storage.default_acl:
            parameters.setdefault("ACL", self.storage.default_acl)
        self.client.upload_file(
            str(local), self.storage.bucket_name, key, ExtraArgs=parameters, Config=self.storage.transfer_config
        )

    def copy(self, source: str, target: str) -> None:
        bucket = self.storage.bucket_name
        self.client.copy(
            {"Bucket": bucket, "Key": self.key(source)}, bucket, self.key(target), Config=self.storage.transfer_config
        )

    def md5(self, name: str) -> str:
        digest = hashlib.md5()
        body = self.client.get_object(Bucket=self.storage.bucket_name, Key=self.key(name))["Body"]
        with body:
            for chunk in body.iter_chunks(CHUNK_SIZE):
                digest.update(chunk)
        return digest.hexdigest()

    def files(self, folder: str) -> list[str]:
        prefix = self.key(folder)
        prefix = f"{prefix}/" if prefix else ""
        location = self.storage.location.strip("/")
        paginator = self.client.get_paginator("list_objects_v2")
        names = []
        for page in paginator.paginate(Bucket=self.storage.bucket_name, Prefix=prefix):
            for entry in page.get("Contents", ()):
                key = entry["Key"]
                if not key.endswith("/"):
                    names.append(key[len(location) + 1:] if location else key)
        return names

    def delete(self, names: list[str]) -> None:
        for start in range(0, len(names), S3_DELETE_BATCH):
            batch = names[start:start + S3_DELETE_BATCH]
            response = self.client.delete_objects(
                Bucket=self.storage.bucket_name,
                Delete={"Objects": [{"Key": self.key(name)} for name in batch], "Quiet": True},
            )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise OSError(
                    f"{len(errors)} object(s) could not be deleted, first {first.get('Key')!r}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )

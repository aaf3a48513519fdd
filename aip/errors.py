"""The one exception family of AIP export and ingest.

Commands turn an ``AipError`` into one ``CommandError`` line, so every message
names the package or object involved and, where there is one, what to do next.
"""
from __future__ import annotations

import errno


class AipError(Exception):
    """Base class of every expected failure of an AIP operation."""


class InvalidOptionError(AipError):
    """An unknown option name or a value the option does not accept."""


class InvalidPackageError(AipError):
    """A package that is not a readable DSpace AIP (bad zip, bad METS, missing parts)."""


class UnsafePackageError(InvalidPackageError):
    """A package that tries to reach outside itself or to attack the XML parser."""


class ChecksumMismatchError(AipError):
    """A file whose size or MD5 differs from what the manifest states."""


class MissingParentError(AipError):
    """The parent named by a package does not exist in this repository."""


class ObjectExistsError(AipError):
    """Restore mode found an object that already has the package's handle or UUID."""


class ObjectNotFoundError(AipError):
    """No object has the handle given on the command line."""


class UnknownMetadataError(AipError):
    """Metadata uses a schema (or, without createMetadataFields, a field) not in the registry."""


class JobCancelledError(AipError):
    """Someone cancelled the running job; the work done so far is rolled back or left unpublished."""


# Reason and remedy, by errno, of a write into a file system that is full, over quota or over a
# file size limit. "{place}" is the folder or storage written to.
STORAGE_FULL_ERRNOS = {
    errno.ENOSPC: (
        "{place} is full (ENOSPC, no space left on device)",
        "Free space there or use a larger file system",
    ),
    errno.EDQUOT: (
        "{place} is over its disk quota (EDQUOT)",
        "Free space there or raise the disk quota of the user this process runs as",
    ),
    errno.EFBIG: (
        "a file in {place} reached the maximum file size of this process (ulimit -f) or of the file system (EFBIG)",
        "Raise that limit or use a file system that allows larger files",
    ),
}


class StorageFullError(AipError):
    """A write failed because the file system of a folder or storage is full, over quota or over a file size limit.

    Storage operations do not retry it, because space rarely comes back within seconds.
    """

    def __init__(self, *, action: str, place: str, cause: OSError) -> None:
        self.action = action
        self.place = place
        self.cause = cause
        reason, advice = STORAGE_FULL_ERRNOS[cause.errno]
        super().__init__(
            f"{action} failed because {reason.format(place=place)}. {advice}, then run the job or command again."
        )

    def placed_in(self, place: str) -> StorageFullError:
        """Return the same error naming ``place``, for a caller that knows which storage the folder belongs to."""
        return StorageFullError(action=self.action, place=place, cause=self.cause)


def storage_full_cause(error: BaseException) -> OSError | None:
    """Return the full-disk OSError among ``error`` and the errors it was raised from, or None."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_FULL_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None

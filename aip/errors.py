"""The one exception family of AIP export and ingest.

Commands turn an ``AipError`` into one ``CommandError`` line, so every message
names the package or object involved and, where there is one, what to do next.
"""


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

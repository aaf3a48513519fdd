"""Check AIPs before a restore, without writing to the database or the bitstream storage.

``tree_verify`` reads one package, and with ``recursive`` every child package it
lists, each resolved in the folder of the package that lists it (as a recursive
restore does) and each read once. Per package it:

1. opens the zip and parses mets.xml with ``read_manifest``; with ``validate``
   it also checks mets.xml against the schemas in ``settings.AIP_SCHEMA_DIR``;
2. streams every file the manifest names (fileSec files, the logo, licence
   ``mdRef`` hrefs) once, compares its size and MD5 with the file element and
   PREMIS, and lets ``zipfile`` check the entry's CRC-32 on the way;
3. warns about zip entries that the manifest does not name;
4. with ``recursive``, checks that each child package is a plain file name in
   the same folder and that the file exists.

After the walk, the parent of every package must be a package of this run or an
object of the repository. Each failure becomes one line in the report and the
walk goes on, so one run lists every problem it can find.
"""
from __future__ import annotations

import logging
import lzma
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from aip import selectors
from aip.errors import AipError, InvalidOptionError
from aip.mets.model import FileRecord, PackageManifest
from aip.mets.reader import read_manifest
from aip.mets.validation import SchemaUnavailableError, load_schema, schema_dir_or_error, validate_manifest
from aip.package import MANIFEST_NAME, ManifestOnlyReader, PackageReader, md5_of, package_open
from aip.progress import Progress, package_count_estimate
from aip.services.bitstream_ingest import is_placeholder, manifest_xml_references, xml_reference_check
from aip.services.ingest import child_package_path

logger = logging.getLogger(__name__)

VERIFY_OPTIONS = {"validate"}

# Types a package's parent may have, by the package's own type, as restore requires.
PARENT_TYPES = {"COMMUNITY": ("SITE", "COMMUNITY"), "COLLECTION": ("COMMUNITY",), "ITEM": ("COLLECTION",)}

# Exceptions that reading a damaged zip raises: a CRC or header error (BadZipFile), broken
# deflate, bzip2 or LZMA data (zlib.error, OSError, LZMAError), a truncated entry
# (EOFError), and an encrypted entry or unsupported compression method (RuntimeError,
# which includes NotImplementedError).
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, RuntimeError)

# Packages that ``known_good`` names are counted in progress reports of this many.
KNOWN_GOOD_REPORT = 500


@dataclass
class VerifyReport:
    """Problems that would make a restore fail, warnings, and the counts of one verify run."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    packages: int = 0
    # Packages the caller had already checked as copies of verified packages, counted in ``packages`` unread.
    known_good: int = 0
    files: int = 0
    bytes_checked: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        copies = f" ({self.known_good} of them copies of verified packages)" if self.known_good else ""
        return (
            f"Verified {self.packages} package(s){copies}, {self.files} files, {self.bytes_checked} bytes checked: "
            f"{len(self.problems)} problem(s), {len(self.warnings)} warning(s) in {self.seconds:.1f} s"
        )

    def problem(self, message: str) -> None:
        logger.warning("verify problem: %s", message)
        self.problems.append(message)

    def warn(self, message: str) -> None:
        logger.info("verify warning: %s", message)
        self.warnings.append(message)


@dataclass
class _PackageFacts:
    """Type, handle and parent handle of one package that was read, for the parent check."""

    name: str
    object_type: str
    handle: str | None
    parent_handle: str | None


def verify_validate_option(raw: dict[str, str]) -> bool:
    """Return the ``validate`` option of verify mode (default false), rejecting other names and values."""
    for name in raw:
        if name not in VERIFY_OPTIONS:
            raise InvalidOptionError(f"Unknown verify option {name!r}. The only verify option is validate=true|false.")
    value = raw.get("validate", "false").lower()
    if value not in ("true", "false"):
        raise InvalidOptionError(f"Option validate must be true or false, not {raw['validate']!r}.")
    return value == "true"


def tree_verify(
    *, path: Path, recursive: bool, validate: bool, progress: Progress | None = None, known_good: frozenset[str] = frozenset()
) -> VerifyReport:
    """Check the package at ``path`` (with ``recursive``, its whole tree) and return every problem found.

    ``known_good`` names packages without children that the caller found byte-identical to
    packages verified before: they are counted but not read again.
    """
    started = time.monotonic()
    if progress is not None:
        progress.total(package_count_estimate(path, recursive=recursive))
    report = VerifyReport()
    schema_dir = _schema_dir(report) if validate else None

    read: list[_PackageFacts] = []
    visited: set[Path] = set()
    # Each package with the packages above it, to report a tree with a cycle.
    pending: list[tuple[Path, tuple[Path, ...]]] = [(path, ())]
    while pending:
        current, ancestors = pending.pop()
        if current in ancestors:
            report.problem(
                f"{ancestors[-1].name}: child package {current.name} is above it in the package tree, "
                "so the package tree has a cycle."
            )
            continue
        if current in visited:
            # An item mapped into several collections is listed by each of them.
            continue
        visited.add(current)
        if current.name in known_good and _is_file(current):
            report.packages += 1
            report.known_good += 1
            # Reported in batches: a backup may hold many thousand copies, each checked by its caller already.
            if progress is not None and report.known_good % KNOWN_GOOD_REPORT == 0:
                progress.advance(objects=KNOWN_GOOD_REPORT)
            continue
        manifest = _package_verify(current, schema_dir=schema_dir, report=report)
        if progress is not None:
            progress.advance(size=current.stat().st_size if _is_file(current) else 0)
        if manifest is None:
            continue
        read.append(_facts(current.name, manifest))
        if recursive:
            below = (*ancestors, current)
            pending.extend((child, below) for child in reversed(_child_paths(current, manifest, report)))

    if progress is not None and report.known_good % KNOWN_GOOD_REPORT:
        progress.advance(objects=report.known_good % KNOWN_GOOD_REPORT)
    _parents_verify(read, report)
    report.seconds = time.monotonic() - started
    logger.info("verified %s: %s", path.name, report.summary())
    return report


def _schema_dir(report: VerifyReport) -> str | None:
    """Return the schema folder for validation, or record why validation cannot run and return None."""
    try:
        schema_dir = schema_dir_or_error()
        load_schema(str(schema_dir))
    except SchemaUnavailableError as error:
        report.problem(f"{error} No manifest was validated.")
        return None
    return str(schema_dir)


def _package_verify(path: Path, *, schema_dir: str | None, report: VerifyReport) -> PackageManifest | None:
    """Check one package and return its manifest, or None when the manifest cannot be read."""
    report.packages += 1
    try:
        with package_open(path) as reader:
            manifest = _manifest_read(reader, path.name, schema_dir=schema_dir, report=report)
            if manifest is not None:
                entry_names = reader.entry_names()
                referenced = _files_verify(reader, manifest, entry_names, path.name, report)
                _xml_references_verify(reader, manifest, path.name, report)
                if entry_names is not None:
                    _unlisted_entries_warn(entry_names - referenced, path.name, report)
            return manifest
    except AipError as error:
        report.problem(_with_package(str(error), path.name))
    except ZIP_READ_ERRORS as error:
        report.problem(f"{path.name}: the zip cannot be read ({error}). The package is damaged; use another copy.")
    return None


def _manifest_read(
    reader: PackageReader | ManifestOnlyReader, name: str, *, schema_dir: str | None, report: VerifyReport
) -> PackageManifest | None:
    data = reader.manifest_bytes()
    try:
        manifest = read_manifest(data, source=name)
    except AipError as error:
        report.problem(_with_package(str(error), name))
        return None
    # Only a manifest that the hardened parser of read_manifest accepted is given to the schema validator.
    if schema_dir is not None:
        try:
            validate_manifest(data, schema_dir=schema_dir, source=name)
        except AipError as error:
            report.problem(_with_package(str(error), name))
    return manifest


def _with_package(message: str, name: str) -> str:
    """Prefix ``message`` with the package name unless it names the package already."""
    return message if name in message else f"{name}: {message}"


# --- files --------------------------------------------------------------------------------


def _referenced_files(manifest: PackageManifest) -> dict[str, list[FileRecord]]:
    """Map each zip entry the manifest names to the file elements that describe it.

    A licence ``mdRef`` usually names the entry of a LICENSE bundle file. One that
    names an entry no file element describes maps to an empty list.
    """
    referenced: dict[str, list[FileRecord]] = {}
    records = [record for bundle in manifest.bundles for record in bundle.files]
    if manifest.logo is not None:
        records.append(manifest.logo)
    for record in records:
        referenced.setdefault(record.href, []).append(record)

    admins = [manifest.admin]
    admins += [bundle.admin for bundle in manifest.bundles]
    admins += [record.admin for record in records]
    for admin in admins:
        for href in admin.license_hrefs.values():
            referenced.setdefault(href, [])
    return referenced


def _files_verify(
    reader: PackageReader | ManifestOnlyReader,
    manifest: PackageManifest,
    entry_names: set[str] | None,
    name: str,
    report: VerifyReport,
) -> set[str]:
    """Check every file the manifest names and return the names of those entries."""
    referenced = _referenced_files(manifest)
    for href, records in referenced.items():
        if entry_names is not None and href not in entry_names:
            report.problem(f"{name}: file {href} is named in the manifest but missing from the zip.")
            continue
        try:
            _entry_verify(reader, href, records, name, report)
        except AipError as error:
            # A manifest-only package reports a missing or unsafe file reference here.
            report.problem(str(error))
    return set(referenced)


def _entry_verify(reader: PackageReader | ManifestOnlyReader, href: str, records: list[FileRecord], name: str, report: VerifyReport) -> None:
    """Stream one entry once and compare it with each file element that describes it."""
    try:
        with reader.open_entry(href) as stream:
            digest, size = md5_of(stream)
    except ZIP_READ_ERRORS as error:
        report.problem(f"{name}: file {href} cannot be read from the zip ({error}). The package is damaged.")
        return

    report.files += 1
    report.bytes_checked += size
    for record in records:
        for mismatch in _stated_mismatches(record, digest, size):
            report.problem(f"{name}: file {href} {mismatch}")
        for unchecked in _unchecked_digests(record):
            report.warn(f"{name}: file {href} {unchecked}")
        if is_placeholder(reader, record):
            report.warn(
                f"{name}: file {href} is an empty placeholder for content the exporter could not read; "
                "a restore skips it."
            )


def _stated_mismatches(record: FileRecord, digest: str, size: int) -> list[str]:
    """Describe each size or MD5 stated by the file element or its PREMIS that differs from the entry.

    Only MD5 digests are compared, and a digest without an algorithm is taken as MD5,
    as restore does.
    """
    premis = record.admin.premis
    mismatches = []
    if record.size is not None and record.size != size:
        mismatches.append(f"has {size} bytes, but file element {record.id!r} states SIZE {record.size}.")
    if premis is not None and premis.size is not None and premis.size != size:
        mismatches.append(f"has {size} bytes, but the PREMIS size of file element {record.id!r} is {premis.size}.")
    if record.checksum and _is_md5(record.checksum_type) and record.checksum.lower() != digest:
        mismatches.append(f"has MD5 {digest}, but file element {record.id!r} states CHECKSUM {record.checksum}.")
    if premis is not None and premis.digest and _is_md5(premis.digest_algorithm) and premis.digest != digest:
        mismatches.append(
            f"has MD5 {digest}, but the PREMIS messageDigest of file element {record.id!r} is {premis.digest}."
        )
    return mismatches


def _unchecked_digests(record: FileRecord) -> list[str]:
    """Describe each digest of the file element or its PREMIS that is not MD5, so cannot be compared."""
    premis = record.admin.premis
    unchecked = []
    if record.checksum and not _is_md5(record.checksum_type):
        unchecked.append(f"has a {record.checksum_type} CHECKSUM in file element {record.id!r}, which is not checked.")
    if premis is not None and premis.digest and not _is_md5(premis.digest_algorithm):
        unchecked.append(
            f"has a {premis.digest_algorithm} PREMIS digest in file element {record.id!r}, which is not checked."
        )
    return unchecked


def _is_md5(algorithm: str | None) -> bool:
    return (algorithm or "MD5").upper() == "MD5"


def _xml_references_verify(reader, manifest: PackageManifest, name: str, report: VerifyReport) -> None:
    for href in manifest_xml_references(manifest):
        try:
            xml_reference_check(reader, href, source=name)
        except AipError as error:
            report.problem(str(error))
        except ZIP_READ_ERRORS:
            # _files_verify has reported the damaged entry already.
            pass


def _unlisted_entries_warn(unlisted: set[str], name: str, report: VerifyReport) -> None:
    for entry in sorted(unlisted - {MANIFEST_NAME}):
        report.warn(f"{name}: zip entry {entry} is not named in the manifest; a restore ignores it.")


# --- children and parents -----------------------------------------------------------------


def _child_paths(path: Path, manifest: PackageManifest, report: VerifyReport) -> list[Path]:
    """Return the child packages that exist, in manifest order, recording unsafe and missing ones."""
    paths = []
    for child in manifest.children:
        label = f"{child.object_type} {child.handle}" if child.handle else child.object_type
        if child.href is None:
            report.warn(f"{path.name}: the child {label} has a URL mptr without an href; a restore ignores it.")
            continue
        try:
            child_path = child_package_path(path, child.href)
        except AipError as error:
            report.problem(str(error))
            continue
        if not _is_file(child_path):
            report.problem(f"{path.name}: child package {child.href} ({label}) is missing from {path.parent}.")
            continue
        paths.append(child_path)
    return paths


def _is_file(path: Path) -> bool:
    # Path.is_file raises on some errors, such as a name longer than the file system allows.
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _facts(name: str, manifest: PackageManifest) -> _PackageFacts:
    return _PackageFacts(
        name=name, object_type=manifest.object_type, handle=manifest.handle, parent_handle=manifest.parent_handle
    )


def _parents_verify(packages: list[_PackageFacts], report: VerifyReport) -> None:
    """Check that every package's parent is a package of this run or an object of the repository."""
    tree_types = {package.handle: package.object_type for package in packages if package.handle}
    repository_types: dict[str, str | None] = {}
    for package in packages:
        if package.object_type == "SITE":
            continue
        handle = package.parent_handle
        if handle is None:
            report.problem(
                f"{package.name}: the manifest names no parent (no \"Parent\" structMap), so a restore needs -p HANDLE."
            )
            continue

        parent_type = tree_types.get(handle)
        if parent_type is None:
            if handle not in repository_types:
                repository_types[handle] = _repository_type(handle)
            parent_type = repository_types[handle]
        _parent_type_verify(package, parent_type, report)


def _parent_type_verify(package: _PackageFacts, parent_type: str | None, report: VerifyReport) -> None:
    allowed = PARENT_TYPES[package.object_type]
    if parent_type is None:
        report.problem(
            f"parent {package.parent_handle} of package {package.name} is neither in this tree nor in the repository."
        )
    elif parent_type not in allowed:
        report.problem(
            f"{package.name}: {package.object_type} packages can only be placed under {' or '.join(allowed)}, "
            f"but parent {package.parent_handle} has type {parent_type}."
        )


def _repository_type(handle: str) -> str | None:
    """Return the object type that ``handle`` has in the repository, or None, without writing anything."""
    # object_by_handle creates the Site when none exists, so the site handle is checked here instead.
    if handle == selectors.site_handle():
        return "SITE"
    obj = selectors.object_by_handle(handle)
    return obj.object_type if obj is not None else None

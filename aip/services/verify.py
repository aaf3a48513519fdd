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

from django.conf import settings

from aip import selectors
from aip.errors import AipError, InvalidOptionError
from aip.mets.model import FileRecord, PackageManifest
from aip.mets.reader import read_manifest
from aip.mets.validation import SchemaUnavailableError, load_schema, validate_manifest
from aip.package import MANIFEST_NAME, PackageReader, md5_of
from aip.services.bitstream_ingest import is_placeholder
from aip.services.ingest import _child_path

logger = logging.getLogger(__name__)

VERIFY_OPTIONS = {"validate"}

# Types a package's parent may have, by the package's own type, as restore requires.
PARENT_TYPES = {"COMMUNITY": ("SITE", "COMMUNITY"), "COLLECTION": ("COMMUNITY",), "ITEM": ("COLLECTION",)}

# What reading a damaged zip entry raises: a CRC or header error (BadZipFile), broken
# deflate, bzip2 or LZMA data (zlib.error, OSError, LZMAError), a truncated entry
# (EOFError), and an encrypted entry or unsupported compression method (RuntimeError,
# which includes NotImplementedError).
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, RuntimeError)


@dataclass
class VerifyReport:
    """Problems that would make a restore fail, warnings, and what a verify run checked."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    packages: int = 0
    files: int = 0
    bytes_checked: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"Verified {self.packages} package(s), {self.files} files, {self.bytes_checked} bytes checked: "
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
    """What the parent check needs from one package that was read."""

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


def tree_verify(*, path: Path, recursive: bool, validate: bool) -> VerifyReport:
    """Check the package at ``path`` (with ``recursive``, its whole tree) and return every problem found."""
    started = time.monotonic()
    report = VerifyReport()
    schema_dir = _schema_dir(report) if validate else None

    read: list[_PackageFacts] = []
    visited: set[Path] = set()
    pending = [path]
    while pending:
        current = pending.pop()
        if current in visited:
            # An item mapped into several collections is listed by each of them.
            continue
        visited.add(current)
        manifest = _package_verify(current, schema_dir=schema_dir, report=report)
        if manifest is None:
            continue
        read.append(_facts(current.name, manifest))
        if recursive:
            pending.extend(reversed(_child_paths(current, manifest, report)))

    _parents_verify(read, report)
    report.seconds = time.monotonic() - started
    logger.info("verified %s: %s", path.name, report.summary())
    return report


def _schema_dir(report: VerifyReport) -> str | None:
    """Return the schema folder for validation, or record why validation cannot run and return None."""
    schema_dir = settings.AIP_SCHEMA_DIR
    if not schema_dir:
        report.problem(
            "validate=true needs the METS, MODS, PREMIS and METSRights schemas, but AIP_SCHEMA_DIR is not set. "
            "Set it to the schema folder, or run without -o validate=true. No manifest was validated."
        )
        return None
    try:
        load_schema(str(schema_dir))
    except SchemaUnavailableError as error:
        report.problem(f"{error} No manifest was validated.")
        return None
    return str(schema_dir)


def _package_verify(path: Path, *, schema_dir: str | None, report: VerifyReport) -> PackageManifest | None:
    """Check one package and return its manifest, or None when the manifest cannot be read."""
    report.packages += 1
    try:
        with PackageReader(path) as reader:
            manifest = _manifest_read(reader, path.name, schema_dir=schema_dir, report=report)
            if manifest is not None:
                referenced = _files_verify(reader, manifest, path.name, report)
                _unlisted_entries_warn(path, referenced, report)
            return manifest
    except AipError as error:
        report.problem(_with_package(str(error), path.name))
    except ZIP_READ_ERRORS as error:
        report.problem(f"{path.name}: the zip cannot be read ({error}). The package is damaged; use another copy.")
    return None


def _manifest_read(
    reader: PackageReader, name: str, *, schema_dir: str | None, report: VerifyReport
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


def _files_verify(reader: PackageReader, manifest: PackageManifest, name: str, report: VerifyReport) -> set[str]:
    """Check every file the manifest names and return the entry names it names."""
    referenced = _referenced_files(manifest)
    entries = set(reader.entry_names()) if hasattr(reader, "entry_names") else None
    for href, records in referenced.items():
        _entry_verify(reader, href, records, name, report, entries)
    return set(referenced)


def _entry_verify(
    reader: PackageReader, href: str, records: list[FileRecord], name: str, report: VerifyReport, entries
) -> None:
    """Stream one entry once and compare it with each file element that describes it."""
    try:
        with reader.open_entry(href) as stream:
            digest, size = md5_of(stream)
    except AipError:
        report.problem(f"{name}: file {href} is named in the manifest but missing from the zip.")
        return
    except ZIP_READ_ERRORS as error:
        report.problem(f"{name}: file {href} cannot be read from the zip ({error}). The package is damaged.")
        return

    report.files += 1
    report.bytes_checked += size
    for record in records:
        for mismatch in _stated_mismatches(record, digest, size):
            report.problem(f"{name}: file {href} {mismatch}")
        for skipped in _unchecked_digests(record):
            report.warn(f"{name}: file {href} {skipped}")
        if is_placeholder(reader, record):
            report.warn(
                f"{name}: file {href} is an empty placeholder for content the exporter could not read; "
                "a restore skips it."
            )

"""Export repository objects as AIP packages.

Steps for each object: describe it as a manifest (one read of the object and
its relations), serialize the manifest as METS, then write the zip with the
manifest first and the bitstream files streamed from storage. With
``recursive``, every descendant follows, named by DSpace's rule and written into
the folder of the top package.
"""
from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from aip import selectors
from aip.mets.writer import WriterContext, build_mets
from aip.options import ExportOptions
from aip.mets.validation import validate_manifest
from aip.package import PackageEntry, write_manifest_only, write_package
from aip.errors import AipError
from aip.services.manifests import UnreadableBitstreamError, manifest_for
from repository.models import Bitstream, Item

logger = logging.getLogger(__name__)

PRODUCER = "aip-backup"


@dataclass
class ExportResult:
    packages: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)  # items left out by updatedAfter
    bytes_written: int = 0
    seconds: float = 0.0


def writer_context(premis_urls: dict[str, str]) -> WriterContext:
    return WriterContext(
        custodian=selectors.site_handle(),
        creator=PRODUCER,
        premis_urls=premis_urls,
        dmd_types=tuple(settings.AIP_DISSEMINATE_DMD),
        admin_sections=frozenset(settings.AIP_DISSEMINATE_SECTIONS),
    )


def _entry(name: str, bitstream: Bitstream | None) -> PackageEntry:
    if bitstream is None:
        return PackageEntry(name=name, size=0, open=lambda: io.BytesIO(b""))
    return PackageEntry(
        name=name,
        size=bitstream.size_bytes,
        open=lambda: _open_bitstream(bitstream),
        expected_md5=bitstream.checksum if bitstream.checksum_algorithm.upper() == "MD5" else None,
    )


def _open_bitstream(bitstream: Bitstream):
    try:
        return bitstream.file.open("rb")
    except OSError as error:
        raise UnreadableBitstreamError(
            f"Bitstream {bitstream.name!r} ({bitstream.uuid}) cannot be read from the bitstream storage: {error}. "
            "Repair the file, or export with -o unauthorized=skip or -o unauthorized=zero."
        ) from error


def _unchanged(obj, options: ExportOptions) -> bool:
    if not isinstance(obj, Item):
        return False
    if options.updated_after is not None and obj.last_modified <= options.updated_after:
        return True
    return options.changed_after is not None and obj.changed_at <= options.changed_after


def package_write(*, obj, path: Path, options: ExportOptions) -> Path:
    """Write the AIP of ``obj`` (without its descendants) to ``path``."""
    content = manifest_for(obj, options)
    manifest = build_mets(content.manifest, writer_context(content.premis_urls))
    if options.validate and settings.AIP_SCHEMA_DIR:
        validate_manifest(manifest, schema_dir=settings.AIP_SCHEMA_DIR, source=path.name)
    entries = [_entry(name, bitstream) for name, bitstream in content.files]
    try:
        if options.manifest_only:
            write_manifest_only(path, manifest=manifest)
        else:
            write_package(path, manifest=manifest, entries=entries, last_modified=content.manifest.last_modified)
    except OSError as error:
        raise AipError(
            f"Writing package {path} failed: {error}. Check that the folder exists, is writable and has space, "
            "and that no folder has that name."
        ) from error
    return path


def object_export(
    *, obj, path: Path, options: ExportOptions, progress: Callable[[Path], None] | None = None
) -> ExportResult:
    """Export ``obj`` to ``path`` and, when recursive, every descendant into the same folder."""
    started = time.monotonic()
    result = ExportResult()
    pending = [(obj, path)]
    written: set[Path] = set()
    while pending:
        current, current_path = pending.pop()
        # An item mapped into several collections is listed by each of them but written once.
        if current_path in written:
            continue
        written.add(current_path)
        if _unchanged(current, options):
            result.unchanged.append(current_path)
        else:
            package_write(obj=current, path=current_path, options=options)
            result.packages.append(current_path)
            result.bytes_written += current_path.stat().st_size
            logger.info("exported %s to %s", current.handle_string or current.uuid, current_path)
            if progress:
                progress(current_path)
        if options.recursive:
            children = selectors.children_of(current)
            # Reversed so that the stack pops children in package order.
            for child in reversed(children):
                pending.append((child, path.parent / selectors.package_file_name(child, options.extension)))
    result.seconds = time.monotonic() - started
    return result

"""Export repository objects as AIP packages.

Steps for each object: describe it as a manifest (one read of the object and
its relations), serialize the manifest as METS, then write the zip with the
manifest first and the bitstream files streamed from storage. With
``recursive``, every descendant follows, named by DSpace's rule and written into
the folder of the top package.

An export resumes: a package whose file already contains exactly what would be
written (same manifest bytes, same entries with the expected sizes and MD5s) is
kept as it is. Because packages are deterministic, rerunning a killed export
writes only the packages that are missing or changed, and the folder ends up as
a fresh export would leave it. Temporary files that killed exports of this host
left behind are deleted first.
"""
from __future__ import annotations

import io
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from aip import selectors
from aip.mets.writer import WriterContext, build_mets
from aip.options import ExportOptions
from aip.mets.validation import validate_manifest
from aip.package import PackageEntry, package_matches, partial_files_sweep, write_manifest_only, write_package
from aip.errors import AipError, StorageFullError, storage_full_cause
from aip.services.locks import read_snapshot
from aip.services.manifests import UnreadableBitstreamError, items_prefetch_ahead, items_prefetched, manifest_for
from repository.models import Bitstream, Item

logger = logging.getLogger(__name__)

PRODUCER = "aip-backup"


@dataclass
class ExportResult:
    packages: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)  # items left out by updatedAfter
    # Packages (also in ``packages``) whose existing file already contained what would be written.
    kept: list[Path] = field(default_factory=list)
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
    _package_export(obj=obj, path=path, options=options, resume=False)
    return path


def _package_export(*, obj, path: Path, options: ExportOptions, resume: bool) -> bool:
    """Write the AIP of ``obj`` to ``path`` and return True, or with ``resume`` return False if the file matches."""
    return _package_prepare(obj=obj, path=path, options=options, resume=resume)()


def _package_prepare(*, obj, path: Path, options: ExportOptions, resume: bool) -> Callable[[], bool]:
    """Read ``obj`` and build its manifest now; return the step that writes the package, which reads no row."""
    if items_prefetched(obj):
        # Its rows were all read in the snapshot of its batch.
        return _package_build(obj=obj, path=path, options=options, resume=resume)
    # One snapshot per package, so that the manifest shows its object at one moment while people edit it.
    with read_snapshot():
        return _package_build(obj=obj, path=path, options=options, resume=resume)


def _package_build(*, obj, path: Path, options: ExportOptions, resume: bool) -> Callable[[], bool]:
    content = manifest_for(obj, options)
    manifest = build_mets(content.manifest, writer_context(content.premis_urls))
    if options.validate and settings.AIP_SCHEMA_DIR:
        validate_manifest(manifest, schema_dir=settings.AIP_SCHEMA_DIR, source=path.name)
    entries = [_entry(name, bitstream) for name, bitstream in content.files]
    last_modified = content.manifest.last_modified

    def write() -> bool:
        if resume and _package_current(path, manifest, entries, manifest_only=options.manifest_only):
            return False
        try:
            if options.manifest_only:
                write_manifest_only(path, manifest=manifest)
            else:
                write_package(path, manifest=manifest, entries=entries, last_modified=last_modified)
        except OSError as error:
            full = storage_full_cause(error)
            if full is not None:
                raise StorageFullError(
                    action=f"Writing package {path.name}", place=f"folder {path.parent}", cause=full
                ) from error
            raise AipError(
                f"Writing package {path} failed: {error}. Check that the folder exists, is writable and has space, "
                "and that no folder has that name."
            ) from error
        return True

    return write


class _PackageWriter:
    """Writes packages in a second thread while the main thread reads and describes the next objects.

    zlib, MD5 over large buffers and file I/O release the GIL, so the zip of one
    package is written while the database rows of the next are read. At most
    ``WAITING`` packages wait, which bounds memory. Results come back in order; the
    first failed write is raised in the main thread, and writes not started yet are
    dropped.
    """

    WAITING = 4

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aip-package-writer")
        self._waiting: deque[tuple[Future, Callable[[bool], None]]] = deque()

    def submit(self, write: Callable[[], bool], on_done: Callable[[bool], None]) -> None:
        self._waiting.append((self._pool.submit(write), on_done))
        while len(self._waiting) > self.WAITING:
            self._finish_oldest()

    def drain(self) -> None:
        while self._waiting:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        future, on_done = self._waiting.popleft()
        on_done(future.result())

    def __enter__(self) -> _PackageWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        # After a failure the queued writes are cancelled. A running write ends and publishes a whole package or none.
        self._pool.shutdown(wait=True, cancel_futures=True)


def _package_current(path: Path, manifest: bytes, entries: list[PackageEntry], *, manifest_only: bool) -> bool:
    if manifest_only:
        return path.is_file() and path.read_bytes() == manifest
    return package_matches(path, manifest=manifest, entries=entries)


def object_export(
    *,
    obj,
    path: Path,
    options: ExportOptions,
    progress: Callable[[Path], None] | None = None,
    item_present: Callable[[Path], bool] | None = None,
) -> ExportResult:
    """Export ``obj`` to ``path`` and, when recursive, every descendant into the same folder.

    An item whose package path ``item_present`` accepts is left alone and not counted in the
    result: the final job of a split export passes it for the packages its part jobs wrote.
    """
    started = time.monotonic()
    result = ExportResult()
    leftovers_delete(path.parent)
    pending = [(obj, path)]
    written: set[Path] = set()
    with _PackageWriter() as writer:
        while pending:
            current, current_path = pending.pop()
            # An item mapped into several collections is listed by each of them but written once.
            if current_path in written:
                continue
            written.add(current_path)
            if item_present is not None and isinstance(current, Item) and item_present(current_path):
                continue
            if _unchanged(current, options):
                result.unchanged.append(current_path)
            else:
                # Items are read in batches with the next ones on the stack: a few queries per batch, not per item.
                items_prefetch_ahead(current, (item for item, _ in reversed(pending) if not _unchanged(item, options)))
                _package_queue(writer, current, current_path, options, result, progress)
            if options.recursive:
                children = selectors.children_taken(current)
                # Reversed so that the stack pops children in package order.
                for child in reversed(children):
                    pending.append((child, path.parent / selectors.package_file_name(child, options.extension)))
        writer.drain()
    result.seconds = time.monotonic() - started
    return result


def _package_queue(
    writer: _PackageWriter, obj, path: Path, options: ExportOptions, result: ExportResult, progress
) -> None:
    """Describe ``obj`` now and queue the write of its package, which is recorded (written or kept) once done."""
    write = _package_prepare(obj=obj, path=path, options=options, resume=True)
    label = obj.handle_string or obj.uuid

    def on_done(written: bool) -> None:
        result.packages.append(path)
        if written:
            result.bytes_written += path.stat().st_size
            logger.info("exported %s to %s", label, path)
        else:
            result.kept.append(path)
            logger.info("kept %s: it already contains the package of %s", path, label)
        if progress:
            progress(path)

    writer.submit(write, on_done)


def items_export(
    *, items: list[Item], folder: Path, options: ExportOptions, progress: Callable[[Path], None] | None = None
) -> ExportResult:
    """Export the package of each item in ``items`` into ``folder``, for a part of a split export.

    Packages are named and resumed as in ``object_export``, so a part writes the same bytes as
    an export of the whole tree.
    """
    started = time.monotonic()
    result = ExportResult()
    with _PackageWriter() as writer:
        for index, item in enumerate(items):
            path = folder / selectors.package_file_name(item, options.extension)
            if _unchanged(item, options):
                result.unchanged.append(path)
                continue
            upcoming = (items[after] for after in range(index + 1, len(items)) if not _unchanged(items[after], options))
            items_prefetch_ahead(item, upcoming)
            _package_queue(writer, item, path, options, result, progress)
        writer.drain()
    result.seconds = time.monotonic() - started
    return result


def leftovers_delete(folder: Path) -> None:
    """Delete the temporary package files in ``folder`` that killed exports of this host left behind."""
    if folder.is_dir():
        for leftover in partial_files_sweep(folder):
            logger.info("deleted %s, left by a killed export", leftover)

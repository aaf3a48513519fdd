"""Fixity checks: re-read stored files, a share at a time, and report those that changed or went missing.

Two kinds of files are checked:

- every package of every verified backup, against the MD5 and size its
  folder's ``backup.json`` lists (the index itself must be there too);
- every bitstream file in the bitstream storage, against ``Bitstream.checksum``
  and ``size_bytes``.

Each file is named by a key ("backup:<storage>:<folder>/<name>" or
"bitstream:<uuid>") and falls into one of N slots by a hash of its key. A run
with share "K/N" checks K consecutive slots, starting after the slots that the
previous run with the same N checked, so N/K daily runs cover everything, and a
file keeps its slot however many files are added. Each run is a ``FixityRun``;
each file that differs, is missing or cannot be read is a ``FixityProblem`` and
a warning in the log.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from django.utils import timezone

from aip.errors import AipError
from aip.models import Backup, FixityProblem, FixityRun
from aip.services.audit import redact
from aip.services.backups import INDEX_NAME
from aip.storage import aip_storage
from repository.models import Bitstream

logger = logging.getLogger(__name__)

DEFAULT_SHARE = "1/7"
MAX_SLOTS = 10000
CHUNK = 1024 * 1024
_SHARE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Share:
    """K of N slots per run."""

    count: int
    slots: int

    def __str__(self) -> str:
        return f"{self.count}/{self.slots}"


@dataclass
class _Target:
    key: str
    source: str
    location: str
    md5: str
    size: int
    algorithm: str
    open: Callable[[], IO[bytes]]
    # Tells, after the file was found missing, whether it is still expected (not removed meanwhile).
    still_expected: Callable[[], bool]


def share_parse(text: str) -> Share:
    """Parse "K/N" (for example "1/7"), or "all"; raise ``AipError`` naming a bad value."""
    if str(text).strip().lower() == "all":
        return Share(1, 1)
    match = _SHARE.match(str(text))
    count, slots = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not match or not (1 <= count <= slots <= MAX_SLOTS):
        raise AipError(
            f"Share {text!r} is invalid: give K/N with 1 <= K <= N <= {MAX_SLOTS}, for example 1/7 to check a "
            "seventh of the files per run (a week of daily runs covers everything), or 'all'."
        )
    return Share(count, slots)


def slot_of(key: str, slots: int) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % slots


def fixity_run(share: str = DEFAULT_SHARE) -> FixityRun:
    """Check the next share of stored files and return the finished run with its problems."""
    parsed = share_parse(share)
    # A run that failed part-way is not counted, so the next run checks its slots again.
    finished = (FixityRun.State.PASSED, FixityRun.State.PROBLEMS)
    previous = FixityRun.objects.filter(slots=parsed.slots, state__in=finished).first()
    first = previous.next_slot if previous else 0
    run = FixityRun.objects.create(
        share=str(parsed), slots=parsed.slots, first_slot=first, slot_count=parsed.count, started_at=timezone.now()
    )
    logger.info("fixity run %s: checking slots %s..%s of %s", run.pk, first, first + parsed.count - 1, parsed.slots)
    try:
        for target in _targets():
            in_share = (slot_of(target.key, parsed.slots) - first) % parsed.slots < parsed.count
            # An unreadable index (size -1) is checked by every run, because no package of its backup can be.
            if in_share or target.size < 0:
                _target_check(run, target)
    except Exception as error:
        message = redact(f"{type(error).__name__}: {error}" if not isinstance(error, AipError) else str(error))
        logger.error("fixity run %s stopped: %s", run.pk, message)
        _run_finish(run, FixityRun.State.FAILED, error=message)
        raise
    _run_finish(run, FixityRun.State.PROBLEMS if run.problem_count else FixityRun.State.PASSED)
    logger.info(
        "fixity run %s (%s): %s file(s), %s bytes checked, %s problem(s)",
        run.pk, run.share, run.files_checked, run.bytes_checked, run.problem_count,
    )
    return run


def _run_finish(run: FixityRun, state: str, *, error: str = "") -> None:
    run.state = state
    run.error = error
    run.finished_at = timezone.now()
    run.save(update_fields=["state", "error", "finished_at", "files_checked", "bytes_checked", "problem_count"])


def _targets() -> Iterator[_Target]:
    yield from _backup_targets()
    yield from _bitstream_targets()


def backup_index_read(backup: Backup) -> dict[str, dict] | None:
    """Return the packages ``backup.json`` of ``backup`` lists (name to md5, size, copied), or None when unreadable."""
    storage = aip_storage(backup.storage)
    name = f"{backup.folder}/{INDEX_NAME}"
    try:
        with storage.open(name, "rb") as stream:
            document = json.loads(stream.read().decode("utf-8"))
        return {
            str(package): {"md5": str(entry["md5"]), "size": int(entry["size"]), "copied": bool(entry.get("copied"))}
            for package, entry in document["packages"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        logger.warning("backup %s: index %s is unreadable: %s", backup.pk, name, redact(str(error)))
        return None


def _backup_targets() -> Iterator[_Target]:
    for backup in Backup.objects.filter(state=Backup.State.VERIFIED).order_by("pk"):
        storage = aip_storage(backup.storage)
        index = backup_index_read(backup)
        index_name = f"{backup.folder}/{INDEX_NAME}"
        still = _backup_still_verified(backup.pk)
        if index is None:
            yield _Target(
                key=f"backup:{backup.storage}:{index_name}", source=FixityProblem.Source.BACKUP,
                location=f"{backup.storage}:{index_name}", md5="", size=-1, algorithm="MD5",
                open=_storage_opener(storage, index_name), still_expected=still,
            )
            continue
        for package, entry in sorted(index.items()):
            name = f"{backup.folder}/{package}"
            yield _Target(
                key=f"backup:{backup.storage}:{name}", source=FixityProblem.Source.BACKUP,
                location=f"{backup.storage}:{name}", md5=entry["md5"], size=entry["size"], algorithm="MD5",
                open=_storage_opener(storage, name), still_expected=still,
            )


def _backup_still_verified(backup_id: int) -> Callable[[], bool]:
    # A backup that retention removed during the run is no longer expected to have files.
    return lambda: Backup.objects.filter(pk=backup_id, state=Backup.State.VERIFIED).exists()


def _storage_opener(storage, name: str) -> Callable[[], IO[bytes]]:
    def open_stored() -> IO[bytes]:
        if not storage.exists(name):
            raise FileNotFoundError(name)
        return storage.open(name, "rb")

    return open_stored


def _bitstream_targets() -> Iterator[_Target]:
    bitstreams = Bitstream.objects.exclude(file="").exclude(checksum="").order_by("uuid")
    for bitstream in bitstreams.only("uuid", "file", "checksum", "checksum_algorithm", "size_bytes").iterator():
        yield _Target(
            key=f"bitstream:{bitstream.uuid}", source=FixityProblem.Source.BITSTREAM,
            location=f"bitstream {bitstream.uuid} ({bitstream.file.name})", md5=bitstream.checksum.lower(),
            size=bitstream.size_bytes, algorithm=bitstream.checksum_algorithm or "MD5",
            open=_bitstream_opener(bitstream), still_expected=_bitstream_still_stored(bitstream),
        )


def _bitstream_opener(bitstream: Bitstream) -> Callable[[], IO[bytes]]:
    def open_bitstream() -> IO[bytes]:
        if not bitstream.file.storage.exists(bitstream.file.name):
            raise FileNotFoundError(bitstream.file.name)
        return bitstream.file.storage.open(bitstream.file.name, "rb")

    return open_bitstream


def _bitstream_still_stored(bitstream: Bitstream) -> Callable[[], bool]:
    # A replace that committed during the run deletes the old file and points the row at a new one.
    return lambda: Bitstream.objects.filter(uuid=bitstream.uuid, file=bitstream.file.name).exists()


def _target_check(run: FixityRun, target: _Target) -> None:
    """Read one file, count it, and record a problem when it is missing, unreadable or different."""
    try:
        digest = hashlib.new(target.algorithm.replace("-", "").lower())
    except ValueError:
        _problem(run, target, FixityProblem.Kind.UNREADABLE, detail=f"checksum algorithm {target.algorithm!r} is unknown")
        return
    size = 0
    try:
        with target.open() as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        if target.still_expected():
            _problem(run, target, FixityProblem.Kind.MISSING, detail="the file is not in its storage")
        return
    except (OSError, AipError) as error:
        _problem(run, target, FixityProblem.Kind.UNREADABLE, detail=f"{type(error).__name__}: {error}")
        return
    run.files_checked += 1
    run.bytes_checked += size
    if target.size < 0:
        return
    actual = digest.hexdigest()
    if (actual, size) != (target.md5, target.size):
        _problem(run, target, FixityProblem.Kind.CHANGED, actual=f"{actual} {size} bytes")


def _problem(run: FixityRun, target: _Target, kind: str, *, actual: str = "", detail: str = "") -> None:
    expected = f"{target.md5} {target.size} bytes" if target.size >= 0 else ""
    if target.size < 0 and kind == FixityProblem.Kind.MISSING:
        detail = f"{INDEX_NAME} is missing, so no package of this backup can be checked"
    problem = FixityProblem.objects.create(
        run=run, source=target.source, kind=kind, location=redact(target.location), expected=expected,
        actual=actual, detail=redact(detail),
    )
    run.problem_count += 1
    comparison = f"expected {expected}, read {actual}" if actual else ""
    logger.warning(
        "fixity run %s: %s %s: %s", run.pk, problem.get_kind_display().lower(), problem.location,
        "; ".join(part for part in (comparison, problem.detail) if part),
    )


def fixity_task(share: str = DEFAULT_SHARE) -> int:
    """RQ entry point for scheduled runs: check the next share and return the number of problems."""
    return fixity_run(share).problem_count


def fixity_register(scheduler, *, cron: str, share: str = DEFAULT_SHARE, queue_name: str = "default") -> None:
    """Register (or replace) the scheduled fixity check on rq-scheduler: ``share`` at each ``cron`` time, in UTC."""
    # Imported here because the schedules module needs rq-scheduler, which only registration uses.
    from aip.services.schedules import cron_validate

    cron = cron_validate(cron)
    share_parse(share)
    if FIXITY_JOB_ID in scheduler:
        scheduler.cancel(FIXITY_JOB_ID)
    scheduler.cron(
        cron,
        FIXITY_FUNCTION,
        args=[share],
        id=FIXITY_JOB_ID,
        queue_name=queue_name,
        result_ttl=-1,
        description=f"Fixity check of {share} of the stored files",
    )
    logger.info("registered the fixity check %s: %s at %r", FIXITY_JOB_ID, share, cron)


FIXITY_JOB_ID = "aip-fixity-check"
FIXITY_FUNCTION = "aip.tasks.fixity_check"


"""Create, enqueue, run, retry and reap background packager jobs.

A job is a ``Job`` row in the database and, while it waits, an RQ job in the
"default" queue that carries only the row's id. ``job_run`` claims the row,
calls the export, ingest or verify service with the row's arguments, and writes
progress, log lines and the outcome back to the row. A worker that dies leaves
its job "running" with a heartbeat that stops moving; ``jobs_reap`` marks such
jobs failed so that they can be retried.
"""
from __future__ import annotations

import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import django_rq
import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Sum, Value
from django.db.models.functions import Coalesce, Concat
from django.utils import timezone
from rq import get_current_job
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RqJob

from aip import selectors
from aip.errors import AipError, JobCancelledError
from aip.models import Backup, Job, JobEvent
from aip.options import export_options, ingest_options
from aip.services import audit, locks
from aip.services.backups import backup_job_run
from aip.services.export import object_export
from aip.services.ingest import package_ingest
from aip.services.verify import tree_verify, verify_validate_option
from aip.storage import aip_storage, staged_read, staged_write
from repository.models import EPerson
from repository.permissions import is_administrator

logger = logging.getLogger(__name__)

# Progress and log lines reach the database at most this often, so a large export does not write a row per package.
PROGRESS_INTERVAL = 1.0
# The longest a live job goes without a heartbeat: its reporting thread refreshes it every
# PROGRESS_INTERVAL, and this margin covers a busy database. The reaper waits for ten of these.
HEARTBEAT_INTERVAL = 30.0
INGEST_KINDS = (Job.Kind.SUBMIT, Job.Kind.RESTORE, Job.Kind.REPLACE)


def job_create(
    *,
    kind: str,
    eperson_email: str,
    path: str | Path,
    handle: str = "",
    parent_handle: str = "",
    options: dict[str, str] | None = None,
    recursive: bool = False,
    keep_existing: bool = False,
    use_workflow: bool = True,
    user=None,
    storage: str = "",
    part_count: int = 0,
) -> Job:
    """Check the arguments as the packager command would and save a queued job.

    With ``storage`` (a STORAGES alias), ``path`` is a "/"-separated package name in that
    storage; without it, ``path`` is a file on the worker's disk.

    With ``part_count`` above 1, a recursive export or restore is split into that many part
    jobs that several workers run at once (see ``aip.services.split``).

    Raises ``AipError`` for an EPerson who is not an administrator, bad options, an export
    without a handle, an unknown storage or an invalid name in it, or an invalid number of
    parts, so that a bad job fails here and not in the worker.
    """
    # Imported here because the split module builds on this one.
    from aip.services.split import parts_check

    options = dict(options or {})
    parts_check(part_count=part_count, kind=kind, recursive=recursive)
    if not is_administrator(EPerson.objects.filter(email__iexact=eperson_email).first()):
        raise AipError(
            f"EPerson {eperson_email!r} is not an administrator or does not exist; only members of the "
            "Administrator group may run AIP jobs."
        )
    if kind == Job.Kind.EXPORT and not handle:
        raise AipError("An export job needs the handle of the object to export.")
    if storage:
        aip_storage(storage)
        name = str(path).strip("/")
        if not name or any(part in ("", ".", "..") for part in name.split("/")):
            raise AipError(
                f"Package name {str(path)!r} in storage {storage!r} is invalid: give a '/'-separated name "
                "relative to the storage, such as 'exports/SITE@123456789-0.zip'."
            )
    job = Job(
        kind=kind,
        eperson_email=eperson_email,
        user=user,
        storage=storage,
        path=name if storage else str(Path(path).resolve()),
        handle=handle or "",
        parent_handle=parent_handle or "",
        options=options,
        recursive=recursive,
        keep_existing=keep_existing,
        use_workflow=use_workflow,
        part_count=part_count if part_count > 1 else 0,
    )
    _options_check(job)
    job.full_clean()
    job.save()
    logger.info("job %s created: %s %s by %s", job.pk, job.kind, job.handle or job.path, job.eperson_email)
    return job


def job_enqueue(job: Job) -> Job:
    """Put ``job`` on the RQ "default" queue, or run it at once in this process when REDIS_URL is unset."""
    if not settings.REDIS_URL:
        logger.info("job %s runs in this process because REDIS_URL is not set", job.pk)
        job_run(job.pk)
        job.refresh_from_db()
        if job.is_split and job.state == Job.State.RUNNING:
            from aip.services.split import split_run_here

            job = split_run_here(job)
        return job

    # The RQ job id is chosen now because the enqueue waits for the current transaction to
    # commit, so that the worker never looks for an uncommitted row.
    job.rq_job_id = str(uuid.uuid4())
    job.save(update_fields=["rq_job_id"])
    transaction.on_commit(lambda: _rq_enqueue(job))
    job.refresh_from_db()
    return job


def _rq_enqueue(job: Job) -> None:
    """Put ``job`` on the queue now; if Redis cannot take it, mark the job failed instead of leaving it queued."""
    try:
        rq_put(job)
    except redis.RedisError as error:
        message = (
            f"Enqueueing the job on Redis failed: {error}. Check REDIS_URL and that Redis is running, "
            "then retry the job."
        )
        logger.error("job %s: %s", job.pk, message)
        Job.objects.filter(pk=job.pk).update(state=Job.State.FAILED, finished_at=timezone.now(), error=message)
        return
    logger.info("job %s enqueued as RQ job %s", job.pk, job.rq_job_id)


def rq_put(job: Job) -> None:
    """Put ``job`` on the RQ "default" queue as RQ job ``job.rq_job_id``; raise ``redis.RedisError`` on failure."""
    django_rq.get_queue("default", commit_mode="auto").enqueue(
        "aip.tasks.run_job",
        job.pk,
        job_id=job.rq_job_id,
        job_timeout=settings.AIP_JOB_TIMEOUT,
        description=str(job),
    )


def job_run(job_id: int) -> Job:
    """Run the queued job ``job_id`` and record its outcome; a job in any other state is left alone."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING, started_at=now, heartbeat_at=now, worker_name=_worker_name()
    )
    job = Job.objects.get(pk=job_id)
    if not claimed:
        logger.warning("job %s is %s, not queued; it was not run", job_id, job.state)
        return job

    recorder = _Recorder(job.pk, parent_id=job.parent_id)
    logger.info("job %s started: %s %s", job.pk, job.kind, job.handle or job.path)
    audit.event_record(job, JobEvent.Action.STARTED, handle=job.handle, detail=_job_describe(job))
    return _job_execute(job, recorder, lambda: _job_work(job, recorder))


@dataclass(frozen=True)
class HandOver:
    """Result of a runner whose job other RQ jobs carry on and end, as the part jobs of a split export do.

    ``start`` queues those jobs. It is called after this run's last write to the job row, so
    that no late write of this run overwrites what they record.
    """

    start: Callable[[], None]


def _job_work(job: Job, recorder: _Recorder) -> str | HandOver:
    _export_total(job, recorder)
    return _RUNNERS[job.kind](job, recorder)


def _job_execute(job: Job, recorder: _Recorder, work: Callable[[], str | HandOver]) -> Job:
    """Call ``work`` while reporting progress, and record the outcome of ``job``; ``work`` returns the result path."""
    target = job.handle or job.path
    try:
        with _reporting(recorder):
            outcome = work()
        if isinstance(outcome, HandOver):
            recorder.flush()
            audit.events_record(job, recorder.events)
            recorder.events = []
            outcome.start()
    except JobCancelledError as error:
        logger.info("job %s (%s) cancelled", job.pk, target)
        _job_end(job, recorder, Job.State.CANCELLED, error=str(error))
    except AipError as error:
        logger.info("job %s (%s) failed: %s", job.pk, target, audit.redact(str(error)))
        _job_end(job, recorder, Job.State.FAILED, error=str(error))
    except Exception as error:
        # The logged traceback carries a redacted copy of the message, because a driver's message may quote a
        # connection string; chained causes are left out for the same reason.
        redacted = (type(error), Exception(audit.redact(str(error))), error.__traceback__)
        logger.error("job %s (%s) failed with an unexpected error", job.pk, target, exc_info=redacted)
        _job_end(job, recorder, Job.State.FAILED, error=f"{type(error).__name__}: {error}")
    else:
        if isinstance(outcome, HandOver):
            logger.info("job %s (%s) handed over to its part jobs", job.pk, target)
        else:
            logger.info("job %s (%s) succeeded", job.pk, target)
            _job_end(job, recorder, Job.State.SUCCEEDED, result_path=outcome)
    job.refresh_from_db()
    return job


def _job_describe(job: Job) -> str:
    source = f"{job.storage}:{job.path}" if job.storage else job.path
    if job.parent_id is not None:
        return f"Part of split job {job.parent_id}: {len(job.batch)} item(s) of {job.handle}; package {source}"
    flags = " with every descendant" if job.recursive else ""
    return f"{job.get_kind_display()} of {job.handle or job.parent_handle or source}{flags}; package {source}"


def _job_end(job: Job, recorder: _Recorder, state: str, *, error: str = "", result_path: str = "") -> None:
    """Record the outcome on the job row and in its audit trail, after the events of each object."""
    recorder.finish(state=state, error=error, result_path=result_path)
    detail = error or (f"Result: {result_path}" if result_path else "")
    audit.events_record(job, recorder.events + [audit.EventDraft(action=state, handle=job.handle, detail=detail)])


def job_retry(job: Job, *, user=None) -> Job:
    """Create and enqueue a new job with the arguments of the failed or cancelled ``job``."""
    if job.state not in (Job.State.FAILED, Job.State.CANCELLED):
        raise AipError(f"Job {job.pk} is {job.state}; only failed or cancelled jobs can be retried.")
    if job.kind == Job.Kind.BACKUP:
        return _backup_retry(job, user=user)
    # Imported here because the split module builds on this one.
    from aip.services.split import split_retry_check

    split_retry_check(job)
    retry = job_create(
        kind=job.kind,
        eperson_email=job.eperson_email,
        path=job.path,
        handle=job.handle,
        parent_handle=job.parent_handle,
        options=job.options,
        recursive=job.recursive,
        keep_existing=job.keep_existing,
        use_workflow=job.use_workflow,
        user=user or job.user,
        storage=job.storage,
        part_count=job.part_count,
    )
    # A split job's retry reads this to run again only the parts that did not succeed.
    retry.retry_of = job
    retry.save(update_fields=["retry_of"])
    logger.info("job %s retries job %s", retry.pk, job.pk)
    return job_enqueue(retry)


def _backup_retry(job: Job, *, user=None) -> Job:
    """Start the failed backup's schedule again: a new backup folder, compared with the newest verified backup."""
    # Imported here because the schedules module builds on this one.
    from aip.services.schedules import backup_start

    if job.schedule is None:
        raise AipError(f"Backup job {job.pk} has no schedule any more, so it cannot be retried; start a new backup.")
    retry = backup_start(job.schedule, user=user or job.user)
    Job.objects.filter(pk=retry.pk).update(retry_of=job)
    retry.refresh_from_db()
    logger.info("job %s retries backup job %s", retry.pk, job.pk)
    return retry


def job_cancel(job: Job, *, user=None) -> Job:
    """Cancel ``job``: a queued job at once, a running one at its next progress report.

    A cancelled ingest rolls back like a failed one; a cancelled export publishes
    nothing more than the packages it had completed.
    """
    who = getattr(user, "username", "") or "an operator"
    cancelled = Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(
        state=Job.State.CANCELLED,
        finished_at=timezone.now(),
        error=f"Cancelled by {who} before it started.",
        log=Concat(F("log"), Value(f"Cancelled by {who} before it started.\n")),
    )
    if cancelled:
        # A part of a split job stays in RQ, because RQ never runs the dependents of a cancelled job,
        # and the split job's final job depends on it; a worker skips the part.
        if job.parent_id is None:
            _rq_cancel(job)
        logger.info("job %s cancelled by %s while queued", job.pk, who)
    elif Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(cancel_requested=True):
        if job.is_split:
            from aip.services.split import split_cancel

            split_cancel(job, who=who)
        logger.info("job %s: cancel requested by %s", job.pk, who)
    else:
        job.refresh_from_db()
        raise AipError(f"Job {job.pk} is {job.state}; only queued or running jobs can be cancelled.")
    job.refresh_from_db()
    return job


def _rq_cancel(job: Job) -> None:
    """Drop a cancelled job from the RQ queue; a worker that still picks it up finds it not queued and skips it."""
    if not (settings.REDIS_URL and job.rq_job_id):
        return
    try:
        rq_job = RqJob.fetch(job.rq_job_id, connection=django_rq.get_connection("default"))
        rq_job.cancel()
    except (NoSuchJobError, InvalidJobOperation, redis.RedisError) as error:
        logger.info("job %s: RQ job %s not cancelled on Redis: %s", job.pk, job.rq_job_id, error)


def jobs_reap(*, stale_after: timedelta) -> list[int]:
    """Mark failed the jobs whose worker or queue entry was lost, and return their ids.

    A running job is lost when its heartbeat is older than ``stale_after``; a queued
    one when it has waited that long and Redis no longer has its RQ job.
    """
    limit = timezone.now() - stale_after
    reaped = []
    # A split job has no worker of its own while its parts wait or run, so only its parts are checked then.
    parts_unfinished = Job.objects.filter(parent=OuterRef("pk"), state__in=(Job.State.QUEUED, Job.State.RUNNING))
    stale = Job.objects.filter(state=Job.State.RUNNING, heartbeat_at__lt=limit).exclude(Exists(parts_unfinished))
    for job in stale.order_by("pk"):
        message = _stale_message(job, stale_after)
        # The state and heartbeat are checked again in the update, so a job that moved on meanwhile is kept.
        updated = Job.objects.filter(pk=job.pk, state=Job.State.RUNNING, heartbeat_at=job.heartbeat_at).update(
            state=Job.State.FAILED, finished_at=timezone.now(), error=message
        )
        if updated:
            logger.warning("job %s reaped: %s", job.pk, message)
            reaped.append(job.pk)
    return reaped + _lost_queued_reap(limit)


def _stale_message(job: Job, stale_after: timedelta) -> str:
    if job.is_split and job.parts.exists():
        return (
            f"Every part job has ended, but the final job of this split job has not ended it for more than "
            f"{int(stale_after.total_seconds())} s: Redis lost the final job, or its worker was killed. Retry the "
            "job; it runs again only the parts that did not succeed."
        )
    return (
        f"No heartbeat from worker {job.worker_name or '(unknown)'} since {job.heartbeat_at:%Y-%m-%d %H:%M:%S} "
        f"UTC, more than {int(stale_after.total_seconds())} s ago: the worker was killed or its machine was "
        "lost. Retry the job."
    )


def _lost_queued_reap(limit) -> list[int]:
    """Mark failed the queued jobs that Redis no longer has (Redis restarted or was flushed)."""
    if not settings.REDIS_URL:
        return []
    reaped = []
    redis_connection = django_rq.get_connection("default")
    for job in Job.objects.filter(state=Job.State.QUEUED, created_at__lt=limit).exclude(rq_job_id="").order_by("pk"):
        try:
            if RqJob.exists(job.rq_job_id, connection=redis_connection):
                continue
        except redis.RedisError as error:
            logger.warning("queued jobs not checked, Redis is unreachable: %s", error)
            return reaped
        message = (
            f"RQ job {job.rq_job_id} is no longer in Redis (Redis was restarted or flushed) and the job never "
            "started. Retry the job."
        )
        if Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(
            state=Job.State.FAILED, finished_at=timezone.now(), error=message
        ):
            logger.warning("job %s reaped: %s", job.pk, message)
            reaped.append(job.pk)
    return reaped


def _options_check(job: Job) -> None:
    """Parse the job's options as its run will, so that invalid ones raise ``InvalidOptionError`` now."""
    if job.kind in (Job.Kind.EXPORT, Job.Kind.BACKUP):
        export_options(job.options, recursive=job.recursive)
    elif job.kind == Job.Kind.VERIFY:
        verify_validate_option(job.options)
    else:
        _ingest_options(job)


def _ingest_options(job: Job):
    return ingest_options(
        job.options,
        restore=job.kind in (Job.Kind.RESTORE, Job.Kind.REPLACE),
        keep_existing=job.keep_existing,
        replace=job.kind == Job.Kind.REPLACE,
        recursive=job.recursive,
        use_workflow=job.use_workflow,
    )


def _export_total(job: Job, recorder: _Recorder) -> None:
    """Tell the recorder how many packages an export will write; ingest and verify count their own."""
    if job.parent_id is not None:
        recorder.total(len(job.batch))
    elif job.kind in (Job.Kind.EXPORT, Job.Kind.BACKUP):
        obj = selectors.object_by_handle(job.handle) if job.handle else selectors.site_get()
        if obj is not None:
            recorder.total(selectors.tree_size(obj) if job.recursive else 1)


def _worker_name() -> str:
    rq_job = get_current_job()
    if rq_job is not None and rq_job.worker_name:
        return rq_job.worker_name
    return f"{socket.gethostname()}:{os.getpid()}"


class _Recorder:
    """Progress, heartbeat, log lines and cancel requests of one running job.

    Services report each package through ``package_written`` or ``advance``; the
    counters reach the row at most once per PROGRESS_INTERVAL. On PostgreSQL a
    reporting thread with its own connection writes them, so that the progress of
    an ingest shows while its own transaction is still open. Each report also
    reads ``cancel_requested``; once it is set, the next ``package_written`` or
    ``advance`` raises ``JobCancelledError`` in the service.
    """

    def __init__(self, job_id: int, *, parent_id: int | None = None):
        self.job_id = job_id
        # A part of a split job also writes the sums of all parts to its parent.
        self.parent_id = parent_id
        self.objects_done = 0
        self.objects_total: int | None = None
        self.bytes_done = 0
        self.pending_lines: list[str] = []
        self.last_write = time.monotonic()
        self.threaded = False
        self.cancelled = threading.Event()
        self.lock = threading.Lock()
        # Per-object audit events, saved when the job ends; runners add only what stays true if it fails later.
        self.events: list[audit.EventDraft] = []

    def total(self, objects: int) -> None:
        with self.lock:
            self.objects_total = objects
        self._report_from_caller(force=True)

    def package_written(self, path: Path) -> None:
        self.advance(objects=1, size=path.stat().st_size, line=f"Wrote {path.name}")

    def advance(self, *, objects: int = 1, size: int = 0, line: str = "") -> None:
        """Count work done; raise ``JobCancelledError`` when the job was cancelled."""
        with self.lock:
            self.objects_done += objects
            self.bytes_done += size
            if line:
                self.pending_lines.append(line)
        self._report_from_caller()
        if self.cancelled.is_set():
            raise JobCancelledError(f"Job {self.job_id} was cancelled after {self.objects_done} object(s).")

    def lines(self, lines: list[str]) -> None:
        with self.lock:
            self.pending_lines.extend(lines)

    def flush(self, **fields) -> None:
        with self.lock:
            # Concat appends in the database, so a long log is not read and rewritten on every write.
            lines, self.pending_lines = self.pending_lines, []
            text = audit.redact("".join(f"{line}\n" for line in lines))
            counters = {"objects_done": self.objects_done, "bytes_done": self.bytes_done}
            if self.objects_total is not None:
                counters["objects_total"] = self.objects_total
        updated = Job.objects.filter(pk=self.job_id).update(
            heartbeat_at=timezone.now(), log=Concat(F("log"), Value(text)), **counters, **fields
        )
        if updated and self.parent_id is not None:
            _parent_totals_update(self.parent_id)
        if not updated:
            # The row is not visible from this connection (the job runs inside a transaction that has not
            # committed, as in tests), so the lines wait for a write that can see it.
            with self.lock:
                self.pending_lines = lines + self.pending_lines
        self.last_write = time.monotonic()
        if not fields and Job.objects.filter(pk=self.job_id, cancel_requested=True).exists():
            self.cancelled.set()

    def finish(self, *, state: str, error: str = "", result_path: str = "") -> None:
        error = audit.redact(error)
        if state == Job.State.SUCCEEDED:
            # The total of an ingest or verify is an estimate (every package of the folder); a finished
            # run has counted the real one.
            with self.lock:
                self.objects_total = self.objects_done
        if error:
            self.lines([f"{'CANCELLED' if state == Job.State.CANCELLED else 'FAILED'}: {error}"])
        self.flush(state=state, error=error, result_path=result_path, finished_at=timezone.now())

    def _report_from_caller(self, *, force: bool = False) -> None:
        # Without the reporting thread, the caller writes, but never inside a transaction,
        # whose writes would stay invisible (and on SQLite would lock out other writers).
        if self.threaded or connection.in_atomic_block:
            return
        if force or time.monotonic() - self.last_write >= PROGRESS_INTERVAL:
            self.flush()


def _parent_totals_update(parent_id: int) -> None:
    """Set the progress of a running split job to the sums of its parts, and refresh its heartbeat."""
    parts = Job.objects.filter(parent=OuterRef("pk")).values("parent")
    Job.objects.filter(pk=parent_id, state=Job.State.RUNNING).update(
        objects_done=Coalesce(parts.annotate(total=Sum("objects_done")).values("total"), 0),
        bytes_done=Coalesce(parts.annotate(total=Sum("bytes_done")).values("total"), 0),
        heartbeat_at=timezone.now(),
    )


@contextmanager
def _reporting(recorder: _Recorder) -> Iterator[None]:
    """Write progress and the heartbeat from a thread with its own connection while the block runs.

    SQLite allows one writer at a time, so there the caller reports between transactions instead.
    """
    if connection.vendor == "sqlite":
        yield
        return
    stop = threading.Event()

    def report() -> None:
        try:
            while not stop.wait(PROGRESS_INTERVAL):
                recorder.flush()
        except Exception:
            logger.exception("job %s: the reporting thread stopped", recorder.job_id)
        finally:
            connection.close()

    thread = threading.Thread(target=report, name=f"aip-job-{recorder.job_id}-report", daemon=True)
    recorder.threaded = True
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        recorder.threaded = False


@contextmanager
def _locked(job: Job, recorder: _Recorder, keys: list[locks.LockKey]) -> Iterator[None]:
    """Hold the job's locks while the block runs; a wait shows in the log and the audit trail, and can be cancelled."""

    def on_wait(message: str) -> None:
        recorder.lines([message])
        recorder.events.append(audit.EventDraft(action=JobEvent.Action.WAITED, handle=job.handle, detail=message))

    with locks.locks_held(
        keys, holder=locks.job_holder_name(job.pk), on_wait=on_wait, cancelled=recorder.cancelled.is_set
    ):
        yield


def _export_run(job: Job, recorder: _Recorder) -> str | HandOver:
    """Export into a local folder, or into the folder of ``job.path`` in ``job.storage``.

    A storage export writes the whole tree into a staging folder first and publishes it only
    when the export succeeded, so a failed or cancelled export leaves the storage as it was.
    A split export instead hands its items to part jobs, and each part publishes its own.
    """
    if job.is_split or job.parent_id is not None:
        from aip.services import split_export

        if job.is_split:
            return split_export.export_start(job, recorder)
        return split_export.export_part_run(job, recorder)
    options = export_options(job.options, recursive=job.recursive)
    obj = selectors.object_by_handle_or_error(job.handle)
    if job.storage:
        folder, top_name = posixpath.split(job.path)
        target = staged_write(aip_storage(job.storage), folder)
        place = f"{folder or '/'} of storage {job.storage!r}"
    else:
        folder, top_name = str(Path(job.path).parent), Path(job.path).name
        target = nullcontext(Path(folder))
        place = folder

    keys = locks.export_keys(job.handle, storage=job.storage, path=job.path)
    # One snapshot for the whole tree: every package shows the repository at the moment the export started.
    with _locked(job, recorder, keys), target as local, locks.read_snapshot():
        # Read again under the locks: a writer that held them may have replaced the object meanwhile.
        obj = selectors.object_by_handle_or_error(job.handle)
        result = object_export(obj=obj, path=local / top_name, options=options, progress=recorder.package_written)
    recorder.events += _export_drafts(result)

    unchanged = f", {len(result.unchanged)} unchanged item(s) left out" if result.unchanged else ""
    # Packages already complete from an earlier, interrupted run of the same export are kept, not rewritten.
    unchanged += f", {len(result.kept)} complete package(s) already there kept" if result.kept else ""
    recorder.lines([
        f"Exported {len(result.packages)} package(s), {result.bytes_written} bytes, "
        f"in {result.seconds:.1f} s into {place}{unchanged}"
    ])
    return job.path


def _export_drafts(result) -> list[audit.EventDraft]:
    kept = set(result.kept)
    drafts = [
        audit.package_draft(JobEvent.Action.KEPT if path in kept else JobEvent.Action.EXPORTED, path.name)
        for path in result.packages
    ]
    return drafts + [
        audit.package_draft(JobEvent.Action.UNCHANGED, path.name, "not modified since updatedAfter")
        for path in result.unchanged
    ]


def _ingest_run(job: Job, recorder: _Recorder) -> str | HandOver:
    if job.is_split or job.parent_id is not None:
        from aip.services import split_restore

        if job.is_split:
            return split_restore.restore_start(job, recorder)
        return split_restore.restore_part_run(job, recorder)
    options = _ingest_options(job)
    with _package_source(job) as path:
        report = ingest_locked(job, recorder, path, options)
    ingest_record(recorder, report)
    return ""


def ingest_locked(job: Job, recorder: _Recorder, path: Path, options):
    """Ingest the package at ``path`` for ``job`` while holding the locks of the objects it writes."""
    keys = locks.ingest_keys(
        path,
        storage=job.storage,
        path=job.path,
        replace_handle=job.handle or None,
        parent_handle=job.parent_handle or None,
        manifest_only=options.manifest_only,
    )
    with _locked(job, recorder, keys):
        return package_ingest(
            path=path,
            options=options,
            parent_handle=job.parent_handle or None,
            replace_handle=job.handle or None,
            eperson_email=job.eperson_email,
            progress=recorder,
        )


def ingest_record(recorder: _Recorder, report) -> None:
    """Record what an ingest did: an audit event per object, the counts, and the warnings and report lines."""
    recorder.events += (
        audit.report_drafts(JobEvent.Action.CREATED, report.created)
        + audit.report_drafts(JobEvent.Action.REPLACED, report.replaced)
        + audit.report_drafts(JobEvent.Action.SKIPPED, report.skipped)
    )
    recorder.objects_done = len(report.created) + len(report.replaced) + len(report.skipped)
    recorder.bytes_done = report.bytes_stored
    recorder.lines([f"WARNING: {warning}" for warning in report.warnings] + report.lines())


def _verify_run(job: Job, recorder: _Recorder) -> str:
    with _locked(job, recorder, locks.verify_keys(storage=job.storage, path=job.path)), _package_source(job) as path:
        report = tree_verify(
            path=path, recursive=job.recursive, validate=verify_validate_option(job.options), progress=recorder
        )
    recorder.events += [
        audit.EventDraft(action=JobEvent.Action.PROBLEM, package=path.name, detail=problem)
        for problem in report.problems
    ]
    recorder.events.append(
        audit.EventDraft(
            action=JobEvent.Action.VERIFIED if not report.problems else JobEvent.Action.PROBLEM,
            package=path.name,
            detail=report.summary(),
        )
    )
    recorder.objects_done = report.packages
    recorder.bytes_done = report.bytes_checked
    recorder.lines(
        [f"PROBLEM: {problem}" for problem in report.problems]
        + [f"WARNING: {warning}" for warning in report.warnings]
        + [report.summary()]
    )
    if report.problems:
        raise AipError(
            f"Verify found {len(report.problems)} problem(s) in {path.name}"
            f"{' and its child packages' if job.recursive else ''}; each is listed in the log as PROBLEM."
        )
    return ""


def _backup_run(job: Job, recorder: _Recorder) -> str:
    """Run the backup while holding shared locks on its tree; record each package of the verified backup."""
    keys = locks.export_keys(job.handle, storage=job.storage, path=job.path)
    with _locked(job, recorder, keys):
        result_path = backup_job_run(job, recorder)
    backup = Backup.objects.filter(job=job).first()
    if backup is not None:
        # Imported here because the fixity module builds on the backups module, as this one does.
        from aip.services.fixity import backup_index_read

        index = backup_index_read(backup) or {}
        recorder.events += [
            audit.package_draft(
                JobEvent.Action.COPIED if entry.get("copied") else JobEvent.Action.EXPORTED,
                name,
                f"MD5 {entry.get('md5')}, {entry.get('size')} bytes"
                + (f", copied from {backup.based_on.folder}" if entry.get("copied") and backup.based_on else ""),
            )
            for name, entry in sorted(index.items())
        ]
    return result_path


def _package_source(job: Job):
    """Return a context manager yielding a local path of the job's package, with its folder when recursive."""
    if not job.storage:
        return nullcontext(Path(job.path))
    return staged_read(aip_storage(job.storage), job.path, with_folder=job.recursive)


_RUNNERS: dict[str, Callable[[Job, _Recorder], str | HandOver]] = {
    Job.Kind.EXPORT: _export_run,
    Job.Kind.VERIFY: _verify_run,
    Job.Kind.BACKUP: _backup_run,
    **{kind: _ingest_run for kind in INGEST_KINDS},
}

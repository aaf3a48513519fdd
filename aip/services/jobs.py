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
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import django_rq
import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone
from rq import get_current_job

from aip import selectors
from aip.errors import AipError
from aip.models import Job
from aip.options import export_options, ingest_options
from aip.services.export import object_export
from aip.services.ingest import package_ingest
from aip.services.verify import tree_verify, verify_validate_option
from repository.models import EPerson
from repository.permissions import is_administrator

logger = logging.getLogger(__name__)

# Progress and log lines reach the database at most this often, so a large export does not write a row per package.
PROGRESS_INTERVAL = 1.0
# A background thread refreshes the heartbeat this often, also while a service reports no progress
# (an ingest runs in one transaction, so its own writes stay invisible until it commits).
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
) -> Job:
    """Check the arguments as the packager command would and save a queued job.

    Raises ``AipError`` for an EPerson who is not an administrator, bad options,
    or an export without a handle, so that a bad job fails here and not in the worker.
    """
    options = dict(options or {})
    if not is_administrator(EPerson.objects.filter(email__iexact=eperson_email).first()):
        raise AipError(
            f"EPerson {eperson_email!r} is not an administrator or does not exist; only members of the "
            "Administrator group may run AIP jobs."
        )
    if kind == Job.Kind.EXPORT and not handle:
        raise AipError("An export job needs the handle of the object to export.")
    job = Job(
        kind=kind,
        eperson_email=eperson_email,
        user=user,
        path=str(Path(path).resolve()),
        handle=handle or "",
        parent_handle=parent_handle or "",
        options=options,
        recursive=recursive,
        keep_existing=keep_existing,
        use_workflow=use_workflow,
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
    queue = django_rq.get_queue("default", commit_mode="auto")
    try:
        queue.enqueue(
            "aip.tasks.run_job",
            job.pk,
            job_id=job.rq_job_id,
            job_timeout=settings.AIP_JOB_TIMEOUT,
            description=str(job),
        )
    except redis.RedisError as error:
        message = (
            f"Enqueueing the job on Redis failed: {error}. Check REDIS_URL and that Redis is running, "
            "then retry the job."
        )
        logger.error("job %s: %s", job.pk, message)
        Job.objects.filter(pk=job.pk).update(state=Job.State.FAILED, finished_at=timezone.now(), error=message)
        return
    logger.info("job %s enqueued as RQ job %s", job.pk, job.rq_job_id)


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

    recorder = _Recorder(job.pk)
    logger.info("job %s started: %s %s", job.pk, job.kind, job.handle or job.path)
    try:
        with _heartbeat(job.pk):
            result_path = _RUNNERS[job.kind](job, recorder)
    except AipError as error:
        logger.info("job %s (%s) failed: %s", job.pk, job.handle or job.path, error)
        recorder.finish(state=Job.State.FAILED, error=str(error))
    except Exception as error:
        logger.exception("job %s (%s) failed with an unexpected error", job.pk, job.handle or job.path)
        recorder.finish(state=Job.State.FAILED, error=f"{type(error).__name__}: {error}")
    else:
        logger.info("job %s (%s) succeeded", job.pk, job.handle or job.path)
        recorder.finish(state=Job.State.SUCCEEDED, result_path=result_path)
    job.refresh_from_db()
    return job


def job_retry(job: Job, *, user=None) -> Job:
    """Create and enqueue a new job with the arguments of the failed or cancelled ``job``."""
    if job.state not in (Job.State.FAILED, Job.State.CANCELLED):
        raise AipError(f"Job {job.pk} is {job.state}; only failed or cancelled jobs can be retried.")
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
    )
    retry.retry_of = job
    retry.save(update_fields=["retry_of"])
    logger.info("job %s retries job %s", retry.pk, job.pk)
    return job_enqueue(retry)


def jobs_reap(*, stale_after: timedelta) -> list[int]:
    """Mark failed every running job whose heartbeat is older than ``stale_after``; return their ids."""
    limit = timezone.now() - stale_after
    reaped = []
    for job in Job.objects.filter(state=Job.State.RUNNING, heartbeat_at__lt=limit).order_by("pk"):
        message = (
            f"No heartbeat from worker {job.worker_name or '(unknown)'} since {job.heartbeat_at:%Y-%m-%d %H:%M:%S} "
            f"UTC, more than {int(stale_after.total_seconds())} s ago: the worker was killed or its machine was "
            "lost. Retry the job."
        )
        # The state and heartbeat are checked again in the update, so a job that moved on meanwhile is kept.
        updated = Job.objects.filter(pk=job.pk, state=Job.State.RUNNING, heartbeat_at=job.heartbeat_at).update(
            state=Job.State.FAILED, finished_at=timezone.now(), error=message
        )
        if updated:
            logger.warning("job %s reaped: %s", job.pk, message)
            reaped.append(job.pk)
    return reaped


def _options_check(job: Job) -> None:
    """Parse the job's options as its run will, so that invalid ones raise ``InvalidOptionError`` now."""
    if job.kind == Job.Kind.EXPORT:
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


def _worker_name() -> str:
    rq_job = get_current_job()
    if rq_job is not None and rq_job.worker_name:
        return rq_job.worker_name
    return f"{socket.gethostname()}:{os.getpid()}"


class _Recorder:
    """Progress, heartbeat and log lines of one running job.

    ``package_written`` buffers and writes at most once per PROGRESS_INTERVAL, and ``finish`` writes the rest.
    """

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.objects_done = 0
        self.bytes_done = 0
        self.pending_lines: list[str] = []
        self.last_write = time.monotonic()

    def package_written(self, path: Path) -> None:
        self.objects_done += 1
        self.bytes_done += path.stat().st_size
        self.pending_lines.append(f"Wrote {path.name}")
        if time.monotonic() - self.last_write >= PROGRESS_INTERVAL:
            self.flush()

    def lines(self, lines: list[str]) -> None:
        self.pending_lines.extend(lines)

    def flush(self, **fields) -> None:
        # Concat appends in the database, so a long log is not read and rewritten on every write.
        text = "".join(f"{line}\n" for line in self.pending_lines)
        Job.objects.filter(pk=self.job_id).update(
            objects_done=self.objects_done,
            bytes_done=self.bytes_done,
            heartbeat_at=timezone.now(),
            log=Concat(F("log"), Value(text)),
            **fields,
        )
        self.pending_lines = []
        self.last_write = time.monotonic()

    def finish(self, *, state: str, error: str = "", result_path: str = "") -> None:
        if error:
            self.pending_lines.append(f"FAILED: {error}")
        self.flush(state=state, error=error, result_path=result_path, finished_at=timezone.now())


@contextmanager
def _heartbeat(job_id: int) -> Iterator[None]:
    """Refresh the job's heartbeat from a thread, with its own database connection, while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(HEARTBEAT_INTERVAL):
                Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(heartbeat_at=timezone.now())
        except Exception:
            logger.exception("job %s: the heartbeat thread stopped", job_id)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"aip-job-{job_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _export_run(job: Job, recorder: _Recorder) -> str:
    options = export_options(job.options, recursive=job.recursive)
    obj = selectors.object_by_handle_or_error(job.handle)
    path = Path(job.path)
    result = object_export(obj=obj, path=path, options=options, progress=recorder.package_written)
    unchanged = f", {len(result.unchanged)} unchanged item(s) left out" if result.unchanged else ""
    recorder.lines([
        f"Exported {len(result.packages)} package(s), {result.bytes_written} bytes, "
        f"in {result.seconds:.1f} s into {path.parent}{unchanged}"
    ])
    return str(path)


def _ingest_run(job: Job, recorder: _Recorder) -> str:
    report = package_ingest(
        path=Path(job.path),
        options=_ingest_options(job),
        parent_handle=job.parent_handle or None,
        replace_handle=job.handle or None,
        eperson_email=job.eperson_email,
    )
    recorder.objects_done = len(report.created) + len(report.replaced) + len(report.skipped)
    recorder.bytes_done = report.bytes_stored
    recorder.lines([f"WARNING: {warning}" for warning in report.warnings] + report.lines())
    return ""


def _verify_run(job: Job, recorder: _Recorder) -> str:
    path = Path(job.path)
    report = tree_verify(path=path, recursive=job.recursive, validate=verify_validate_option(job.options))
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


_RUNNERS: dict[str, Callable[[Job, _Recorder], str]] = {
    Job.Kind.EXPORT: _export_run,
    Job.Kind.VERIFY: _verify_run,
    **{kind: _ingest_run for kind in INGEST_KINDS},
}

"""Split jobs: one hierarchy export or restore carried out by several RQ jobs, so that several workers share it.

The parent job (``Job.part_count`` above 1) creates up to that many part jobs, each
with one contiguous batch of the tree's items in package order. The parts go on the
"default" queue like any job, so any worker on any machine may run them. A final RQ
job depends on all of them with ``allow_failure``, so it runs whatever their
outcome, and ends the parent: it succeeds when every part succeeded, and otherwise
fails (or ends cancelled) naming the parts that did not succeed. Retry creates a
new split job that runs again only those parts and carries the others over.

- Export (``split_export``): the parent lists the items, and each part writes the
  packages of its items. The final job then writes the site, community and
  collection packages, so the top package is written last.
- Restore (``split_restore``): the parent restores the site, communities and
  collections in one transaction and lists the item packages the collections name;
  each part restores its item packages in a transaction of its own.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import django_rq
import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rq.job import Dependency

from aip.errors import AipError, JobCancelledError
from aip.models import Job
from aip.services.jobs import INGEST_KINDS, HandOver, _job_execute, _Recorder, job_run, rq_put

logger = logging.getLogger(__name__)

# Each part is a Job row and one dependency of the final RQ job; this bounds both.
MAX_PARTS = 1000
UNFINISHED_STATES = (Job.State.QUEUED, Job.State.RUNNING)
SPLIT_KINDS = (Job.Kind.EXPORT, Job.Kind.RESTORE, Job.Kind.REPLACE)


def parts_check(*, part_count: int, kind: str, recursive: bool) -> None:
    """Raise ``AipError`` unless ``part_count`` is 0 or 1 (no split), or valid for a recursive export or restore."""
    if part_count in (0, 1):
        return
    if kind not in SPLIT_KINDS or not recursive:
        raise AipError(
            f"Only a recursive export (-d -a) or restore (-r -a) can be split into parts; this {kind} job "
            f"asks for {part_count}. A submit gives new handles, so its items need their collections from the same run."
        )
    if not 2 <= part_count <= MAX_PARTS:
        raise AipError(f"Invalid number of parts {part_count}: give a number from 2 to {MAX_PARTS}, or 0 for one job.")


# The parent job


def retried_split(job: Job) -> Job | None:
    """Return the split job that ``job`` retries, when that one got as far as creating its parts."""
    earlier = job.retry_of
    if earlier is not None and earlier.is_split and earlier.parts.exists():
        return earlier
    return None


def carried_batches(earlier: Job) -> list[tuple[list, Job | None]]:
    """Return the batch of each part of ``earlier``, with the part itself when it succeeded."""
    return [
        (part.batch, part if part.state == Job.State.SUCCEEDED else None)
        for part in earlier.parts.order_by("pk")
    ]


def contiguous_batches(entries: list, count: int) -> list[tuple[list, None]]:
    """Cut ``entries`` into at most ``count`` contiguous runs of near-equal length.

    Contiguous runs in package order keep most collections within one part.
    """
    count = min(count, len(entries))
    if not count:
        return []
    bounds = [len(entries) * index // count for index in range(count + 1)]
    return [(entries[start:end], None) for start, end in zip(bounds, bounds[1:])]


def parts_hand_over(job: Job, recorder: _Recorder, batches: list[tuple[list, Job | None]], *, handle: str) -> HandOver:
    """Create a part job per batch, and return the step that queues them and the final job.

    A batch paired with a part of the retried job that succeeded becomes a part that is
    already succeeded. ``handle`` is the top object's handle, which the parts lock.
    """
    with transaction.atomic():
        parts = [_part_create(job, batch, done, handle=handle) for batch, done in batches]
    logger.info("job %s split into part jobs %s", job.pk, [part.pk for part in parts])
    queued = [part for part in parts if part.state == Job.State.QUEUED]
    carried = len(parts) - len(queued)
    recorder.lines([
        (f"Split into {len(parts)} part job(s): {', '.join(str(part.pk) for part in parts)}" if parts
         else "No items are left to share among part jobs")
        + (f"; {carried} of them succeeded in job {job.retry_of_id} and are not run again" if carried else "")
    ])
    return HandOver(start=lambda: _parts_queue(job, queued))


def part_succeeded_create(job: Job, *, handle: str, objects: int, size: int, lines: list[str]) -> Job:
    """Record work the parent did itself (a split restore's containers) as a part that succeeded, so totals add up."""
    now = timezone.now()
    return Job.objects.create(
        **_part_arguments(job, handle=handle),
        state=Job.State.SUCCEEDED,
        objects_done=objects,
        objects_total=objects,
        bytes_done=size,
        started_at=job.started_at,
        finished_at=now,
        heartbeat_at=now,
        worker_name=job.worker_name,
        log="".join(f"{line}\n" for line in lines),
    )


def _part_arguments(job: Job, *, handle: str) -> dict:
    return {
        "kind": job.kind,
        "eperson_email": job.eperson_email,
        "user": job.user,
        "storage": job.storage,
        "path": job.path,
        "handle": handle,
        "options": job.options,
        "recursive": True,
        "keep_existing": job.keep_existing,
        "parent": job,
    }


def _part_create(job: Job, batch: list, done: Job | None, *, handle: str) -> Job:
    part = Job(
        **_part_arguments(job, handle=handle), batch=batch, objects_total=len(batch), rq_job_id=str(uuid.uuid4())
    )
    if done is not None:
        part.state = Job.State.SUCCEEDED
        part.retry_of = done
        part.objects_done, part.bytes_done, part.objects_total = done.objects_done, done.bytes_done, done.objects_total
        part.started_at, part.finished_at = done.started_at, done.finished_at
        part.rq_job_id = ""
        part.log = f"Succeeded as part job {done.pk} of split job {done.parent_id}; not run again.\n"
    part.save()
    return part


def _parts_queue(job: Job, queued: list[Job]) -> None:
    if settings.REDIS_URL:
        _parts_enqueue(job, queued)
    if Job.objects.filter(pk=job.pk, cancel_requested=True).exists():
        # Cancel arrived while the parts were created; they are skipped, and the final job ends the parent.
        _parts_cancel(job, who="the cancel of the split job")


def _parts_enqueue(job: Job, parts: list[Job]) -> None:
    """Queue ``parts`` and then the final job that depends on them; on a Redis error cancel the parts and raise."""
    final_id = str(uuid.uuid4())
    try:
        for part in parts:
            rq_put(part)
        # A part that succeeded in an earlier run is no dependency; with none left the final job runs at once.
        depends_on = Dependency(jobs=[part.rq_job_id for part in parts], allow_failure=True) if parts else None
        django_rq.get_queue("default", commit_mode="auto").enqueue(
            "aip.tasks.finish_split_job",
            job.pk,
            job_id=final_id,
            depends_on=depends_on,
            job_timeout=settings.AIP_JOB_TIMEOUT,
            description=f"Final job of split job {job.pk}",
        )
    except redis.RedisError as error:
        _parts_cancel(job, who="a failed enqueue")
        raise AipError(
            f"Enqueueing the parts of the split job on Redis failed: {error}. Check REDIS_URL and that Redis is "
            "running, then retry the job."
        ) from error
    Job.objects.filter(pk=job.pk).update(rq_job_id=final_id)
    logger.info("job %s: %d part job(s) and final RQ job %s enqueued", job.pk, len(parts), final_id)


def split_run_here(job: Job) -> Job:
    """Run the queued parts of split job ``job`` and then its final job in this process (no REDIS_URL)."""
    for part_id in job.parts.filter(state=Job.State.QUEUED).order_by("pk").values_list("pk", flat=True):
        job_run(part_id)
    return split_finish(job.pk)


def split_cancel(job: Job, *, who: str) -> None:
    """Cancel the parts of the running split job ``job``; its final job then ends it cancelled."""
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    _parts_cancel(job, who=who)


def _parts_cancel(job: Job, *, who: str) -> None:
    message = f"Cancelled by {who} before it started."
    # Queued parts stay in the RQ queue: a worker skips them, and cancelling them in RQ would keep the final job
    # from ever running, since RQ never enqueues the dependents of a cancelled job.
    job.parts.filter(state=Job.State.QUEUED).update(
        state=Job.State.CANCELLED, finished_at=timezone.now(), error=message, log=message + "\n"
    )
    job.parts.filter(state=Job.State.RUNNING).update(cancel_requested=True)


def split_retry_check(job: Job) -> None:
    """Raise ``AipError`` for a part job, which is retried through its split job."""
    if job.parent_id is not None:
        raise AipError(
            f"Job {job.pk} is a part of split job {job.parent_id}; retry job {job.parent_id}, which runs again "
            "only its parts that did not succeed."
        )


# The final job


def split_finish(job_id: int) -> Job:
    """End split job ``job_id`` once its parts have ended: finish the tree if all succeeded, else fail naming them."""
    job = Job.objects.get(pk=job_id)
    if job.state != Job.State.RUNNING:
        logger.warning("split job %s is %s, not running; its final job did nothing", job_id, job.state)
        return job
    parts = list(job.parts.order_by("pk"))
    recorder = _Recorder(job.pk)
    recorder.objects_total = job.objects_total
    recorder.objects_done = sum(part.objects_done for part in parts)
    recorder.bytes_done = sum(part.bytes_done for part in parts)
    logger.info("split job %s: final job started", job.pk)
    return _job_execute(job, recorder, lambda: _finish_run(job, parts, recorder))


def _finish_run(job: Job, parts: list[Job], recorder: _Recorder) -> str:
    job.refresh_from_db(fields=["cancel_requested"])
    problems = [_part_problem(part) for part in parts if part.state != Job.State.SUCCEEDED]
    if job.cancel_requested:
        raise JobCancelledError(
            f"Split job {job.pk} was cancelled; {len(parts) - len(problems)} of its {len(parts)} part(s) had "
            f"succeeded and {_kept_words(job)}. Retry it to finish the {job.get_kind_display().lower()}."
        )
    if problems:
        unfinished = "the container packages were not written" if job.kind == Job.Kind.EXPORT else "nothing more ran"
        raise AipError(
            f"{len(problems)} of the {len(parts)} part job(s) did not succeed, so {unfinished}: {' '.join(problems)} "
            f"Retry this job to run those parts again; {_kept_words(job)}."
        )
    return _final_step(job)(job, recorder)


def _kept_words(job: Job) -> str:
    if job.kind in INGEST_KINDS:
        return "what the others restored stays committed"
    return "the packages of the others are kept"


def _final_step(job: Job) -> Callable[[Job, _Recorder], str]:
    # Imported here because both modules build on this one.
    if job.kind == Job.Kind.EXPORT:
        from aip.services.split_export import containers_export

        return containers_export
    from aip.services.split_restore import restore_summary

    return restore_summary


def _part_problem(part: Job) -> str:
    if part.state in UNFINISHED_STATES:
        return f"Part job {part.pk} is still {part.state}: its worker was lost, or RQ no longer has it."
    reason = (part.error or "no error recorded").splitlines()[0]
    return f"Part job {part.pk} {part.state}: {reason}"

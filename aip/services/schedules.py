"""Backup schedules: checks, next run times, starting backups, and the scheduler tick.

``schedules_tick`` runs once a minute: ``manage.py aip_scheduler`` registers it
on rq-scheduler, and without Redis it can be called directly (``aip_scheduler
--once``). For each enabled schedule whose ``next_run_at`` has passed, the tick
moves ``next_run_at`` to the next cron time after now with a conditional UPDATE
that names the old value. Only the tick whose UPDATE changed the row starts the
backup, so two ticks or two schedulers running at once never start the same run
twice. Runs missed while no scheduler ran are caught up by one backup, because
the new ``next_run_at`` lies after now.
"""
from __future__ import annotations

import logging
import posixpath
from datetime import datetime, timezone as dt_timezone

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq_scheduler import Scheduler

from aip import selectors
from aip.errors import AipError
from aip.models import Backup, BackupSchedule, Job
from aip.services.backups import backup_folder_name, backups_reap
from aip.services.jobs import job_create, job_enqueue
from aip.storage import aip_storage
from repository.models import EPerson, Item
from repository.permissions import is_administrator

logger = logging.getLogger(__name__)

CRON_EXAMPLE = '"0 2 * * *" (02:00 UTC every day)'
# A fixed RQ job id, so that registering the tick again replaces it instead of adding a second one.
TICK_JOB_ID = "aip-backup-schedules-tick"
TICK_FUNCTION = "aip.tasks.backup_schedules_tick"
TICK_CRON = "* * * * *"
# Seconds a tick may run; a tick only creates and enqueues jobs, so it ends well within this.
TICK_TIMEOUT = 300


def cron_validate(expression: str) -> str:
    """Return ``expression`` with single spaces; raise ``AipError`` naming it when croniter rejects it.

    Only five fields (minute to day of week) or an @-keyword such as @daily are
    accepted, because the tick runs once a minute and cannot honour seconds.
    """
    normalized = " ".join(str(expression).split())
    fields = normalized.split(" ")
    if not normalized or (len(fields) != 5 and not normalized.startswith("@")):
        raise AipError(
            f"Cron expression {expression!r} is invalid: it needs five fields (minute, hour, day of month, month, "
            f"day of week), for example {CRON_EXAMPLE}."
        )
    try:
        croniter(normalized, datetime(2000, 1, 1, tzinfo=dt_timezone.utc)).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as error:
        raise AipError(
            f"Cron expression {expression!r} is invalid: {str(error).rstrip('.')}. Use, for example, {CRON_EXAMPLE}."
        ) from None
    return normalized


def cron_next(expression: str, after: datetime) -> datetime:
    """Return the first time strictly after ``after`` that matches ``expression``, in UTC."""
    return croniter(cron_validate(expression), after.astimezone(dt_timezone.utc)).get_next(datetime)


def folder_validate(folder: str) -> str:
    """Return ``folder`` without trailing slashes; reject absolute, empty or ".." names."""
    text = str(folder).strip()
    normalized = text.rstrip("/")
    parts = normalized.split("/")
    if text.startswith("/") or not normalized or any(part in ("", ".", "..") for part in parts) or "\\" in normalized:
        raise AipError(
            f"Folder {folder!r} is invalid: give a relative name inside the storage, with parts separated by "
            '"/" and no empty, "." or ".." parts, for example "backups/site".'
        )
    return normalized


def schedule_clean(schedule: BackupSchedule) -> None:
    """Check and normalize every field of ``schedule``; raise ``ValidationError`` with a message per field."""
    errors: dict[str, str] = {}
    checks = {
        "cron": lambda: setattr(schedule, "cron", cron_validate(schedule.cron)),
        "folder": lambda: setattr(schedule, "folder", folder_validate(schedule.folder)),
        "storage": lambda: aip_storage(schedule.storage),
        "handle": lambda: _handle_check(schedule.handle),
        "eperson_email": lambda: _eperson_check(schedule.eperson_email),
    }
    for name, check in checks.items():
        try:
            check()
        except AipError as error:
            errors[name] = str(error)
    if schedule.keep < 1:
        errors["keep"] = f"Keep must be at least 1, not {schedule.keep}: the newest verified backup is always kept."
    if errors:
        raise ValidationError(errors)


def _handle_check(handle: str) -> None:
    if not handle:
        return
    obj = selectors.object_by_handle_or_error(handle)
    if isinstance(obj, Item) and not obj.in_archive and not obj.withdrawn:
        raise AipError(f"Item {handle} is not archived, so it has no AIP. Choose an archived object or its collection.")


def _eperson_check(email: str) -> None:
    if not is_administrator(EPerson.objects.filter(email__iexact=email).first()):
        raise AipError(
            f"EPerson {email!r} is not an administrator or does not exist; backups run as a member of the "
            "Administrator group."
        )


def schedule_save(schedule: BackupSchedule, *, user=None, now: datetime | None = None) -> BackupSchedule:
    """Check and save ``schedule``; a new, re-enabled or re-timed schedule gets its next run after now."""
    schedule_clean(schedule)
    schedule.full_clean(exclude=["next_run_at", "created_by"])
    previous = BackupSchedule.objects.filter(pk=schedule.pk).first() if schedule.pk else None
    retimed = previous is None or previous.cron != schedule.cron or (schedule.enabled and not previous.enabled)
    if retimed or schedule.next_run_at is None:
        schedule.next_run_at = cron_next(schedule.cron, now or timezone.now())
    if previous is None and user is not None and schedule.created_by_id is None:
        schedule.created_by = user
    schedule.save()
    logger.info("schedule %s (%s) saved; next run at %s", schedule.pk, schedule.name, schedule.next_run_at)
    return schedule


def backup_start(schedule: BackupSchedule, *, user=None, when: datetime | None = None) -> Job:
    """Create a backup job for ``schedule`` into a new dated folder and enqueue it.

    The job writes ``<folder>/<UTC time as YYYYmmddTHHMMSSZ>/<top package>`` in
    the schedule's storage. Raises ``AipError`` when the object, the EPerson or
    the storage is no longer valid, or when that folder is taken.
    """
    obj = selectors.object_by_handle_or_error(schedule.handle or selectors.site_handle())
    folder = posixpath.join(schedule.folder, backup_folder_name(when or timezone.now()))
    if Backup.objects.filter(storage=schedule.storage, folder=folder).exists() or Job.objects.filter(
        storage=schedule.storage, path__startswith=f"{folder}/"
    ).exists():
        raise AipError(
            f"Backup folder {folder!r} in storage {schedule.storage!r} is already taken by another backup of this "
            "second; start the backup again."
        )

    job = job_create(
        kind=Job.Kind.BACKUP,
        eperson_email=schedule.eperson_email,
        path=f"{folder}/{selectors.package_file_name(obj)}",
        handle=obj.handle_string or selectors.site_handle(),
        recursive=schedule.recursive,
        storage=schedule.storage,
        user=user,
    )
    job.schedule = schedule
    job.save(update_fields=["schedule"])
    logger.info("schedule %s (%s): backup job %s created for %s", schedule.pk, schedule.name, job.pk, job.path)
    return job_enqueue(job)


def schedules_tick(*, now: datetime | None = None) -> list[Job]:
    """Start one backup job for every enabled schedule that is due, and return those jobs.

    Also gives new schedules without ``next_run_at`` their first run time, and
    marks failed the backups whose job died.
    """
    now = now or timezone.now()
    _first_runs_set(now)
    backups_reap()
    jobs = []
    for schedule in schedules_due(now):
        if not _schedule_claim(schedule, now):
            logger.info("schedule %s (%s) was claimed by another tick", schedule.pk, schedule.name)
            continue
        job = _backup_start_or_record(schedule)
        if job is not None:
            jobs.append(job)
    return jobs


def schedules_due(now: datetime) -> list[BackupSchedule]:
    """Return the enabled schedules whose next run time has passed, oldest first."""
    return list(BackupSchedule.objects.filter(enabled=True, next_run_at__lte=now).order_by("next_run_at", "pk"))


def _schedule_claim(schedule: BackupSchedule, now: datetime) -> bool:
    """Move the schedule's next run past ``now``; return False when another tick moved it first."""
    try:
        next_run = cron_next(schedule.cron, now)
    except AipError as error:
        logger.error("schedule %s (%s) skipped: %s", schedule.pk, schedule.name, error)
        return False
    # The old value in the filter makes this a compare-and-set: on PostgreSQL a second UPDATE waits
    # for the first to commit, then finds next_run_at changed and updates nothing.
    claimed = BackupSchedule.objects.filter(
        pk=schedule.pk, enabled=True, next_run_at=schedule.next_run_at
    ).update(next_run_at=next_run)
    if claimed:
        missed = f" (due at {schedule.next_run_at:%Y-%m-%d %H:%M} UTC)" if schedule.next_run_at < now else ""
        logger.info("schedule %s (%s) claimed%s; next run at %s", schedule.pk, schedule.name, missed, next_run)
    return bool(claimed)


def _backup_start_or_record(schedule: BackupSchedule) -> Job | None:
    """Start the backup; if it cannot start, save a failed job with the reason so that the admin shows it."""
    try:
        return backup_start(schedule)
    except (AipError, IntegrityError) as error:
        logger.error("schedule %s (%s): backup not started: %s", schedule.pk, schedule.name, error)
        return Job.objects.create(
            kind=Job.Kind.BACKUP,
            state=Job.State.FAILED,
            eperson_email=schedule.eperson_email,
            handle=schedule.handle,
            recursive=schedule.recursive,
            storage=schedule.storage,
            schedule=schedule,
            path=schedule.folder,
            finished_at=timezone.now(),
            error=f"The backup of schedule {schedule.name!r} could not start: {error}",
        )


def _first_runs_set(now: datetime) -> None:
    """Give every enabled schedule without a next run time the next cron time after ``now``."""
    for schedule in BackupSchedule.objects.filter(enabled=True, next_run_at__isnull=True):
        try:
            next_run = cron_next(schedule.cron, now)
        except AipError as error:
            logger.error("schedule %s (%s) has no next run: %s", schedule.pk, schedule.name, error)
            continue
        BackupSchedule.objects.filter(pk=schedule.pk, next_run_at__isnull=True).update(next_run_at=next_run)


def tick_register(scheduler: Scheduler, *, queue_name: str = "default") -> bool:
    """Register the tick as a cron job on ``scheduler``, once; return False when it was registered already.

    A second scheduler that starts at the same moment writes the same job id and
    the same sorted-set member, so the tick still exists once.
    """
    if TICK_JOB_ID in scheduler:
        try:
            job = scheduler.job_class.fetch(TICK_JOB_ID, connection=scheduler.connection)
        except NoSuchJobError:
            job = None
        if job is not None and job.func_name == TICK_FUNCTION and job.meta.get("cron_string") == TICK_CRON:
            return False
    # result_ttl=-1 keeps the job hash between runs; rq-scheduler drops a cron job whose hash expired.
    scheduler.cron(
        TICK_CRON,
        TICK_FUNCTION,
        id=TICK_JOB_ID,
        queue_name=queue_name,
        timeout=TICK_TIMEOUT,
        result_ttl=-1,
        description="Start due backup schedules",
    )
    logger.info("registered the backup schedule tick %s on queue %s", TICK_JOB_ID, queue_name)
    return True

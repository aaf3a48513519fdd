"""Tests of backup schedules: cron checks, the tick on PostgreSQL, rq-scheduler on Redis database 12, and the admin."""
from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import django_rq
import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rq_scheduler import Scheduler

from aip import selectors
from aip.errors import AipError
from aip.models import Backup, BackupSchedule, Job
from aip.services import schedules
from aip.services.schedules import (
    TICK_CRON,
    TICK_FUNCTION,
    TICK_JOB_ID,
    cron_next,
    cron_validate,
    folder_validate,
    schedule_save,
    schedules_tick,
)
from tests.aip.conftest import ADMIN_EMAIL, BurstWorker, rq_default_queue
from tests.aip.test_backups import storage_folder

REDIS_TEST_URL = "redis://127.0.0.1:6379/12"


@pytest.fixture
def aips(tmp_path):
    """The "aips" storage in an empty folder of this test."""
    with storage_folder("aips", tmp_path / "aips") as root:
        yield root


@pytest.fixture
def redis12(settings):
    """REDIS_URL and the "default" queue on Redis database 12, empty before and after the test."""
    with rq_default_queue(settings, REDIS_TEST_URL) as queue:
        yield queue.connection


def schedule_make(name: str = "site", **fields) -> BackupSchedule:
    values = {
        "name": name,
        "cron": "0 2 * * *",
        "storage": "aips",
        "folder": f"backups/{name}",
        "eperson_email": ADMIN_EMAIL,
        **fields,
    }
    return schedule_save(BackupSchedule(**values))


# --- cron and schedule checks -----------------------------------------------------------------


@pytest.mark.parametrize("expression", ["61 * * * *", "* * *", "0 2 * * * 5", "every day", "0 0 30 2 *"])
def test_cron_invalid_names_expression(expression):
    with pytest.raises(AipError) as raised:
        cron_validate(expression)

    assert f"Cron expression {expression!r} is invalid" in str(raised.value)
    assert '"0 2 * * *"' in str(raised.value)


def test_cron_valid_is_normalized():
    assert cron_validate(" 0  2 * *   mon-fri ") == "0 2 * * mon-fri"
    assert cron_validate("@daily") == "@daily"


def test_cron_next_is_after_moment():
    moment = timezone.now().replace(hour=2, minute=0, second=0, microsecond=0)

    assert cron_next("0 2 * * *", moment) == moment + timedelta(days=1)
    assert cron_next("0 2 * * *", moment - timedelta(seconds=1)) == moment


@pytest.mark.django_db
def test_schedule_save_rejects_bad_fields(admin, aips):
    schedule = BackupSchedule(
        name="bad", cron="0 25 * * *", storage="nowhere", folder="../outside", keep=0, eperson_email="x@example.org",
        handle="123456789/999999",
    )

    with pytest.raises(ValidationError) as raised:
        schedule_save(schedule)

    errors = raised.value.message_dict
    assert "Cron expression '0 25 * * *' is invalid" in errors["cron"][0]
    assert "'nowhere'" in errors["storage"][0]
    assert "'aips'" in errors["storage"][0]
    assert "Folder '../outside' is invalid" in errors["folder"][0]
    assert "Keep must be at least 1, not 0" in errors["keep"][0]
    assert "'x@example.org' is not an administrator" in errors["eperson_email"][0]
    assert "123456789/999999" in errors["handle"][0]
    assert not BackupSchedule.objects.exists()


@pytest.mark.django_db
def test_schedule_save_sets_next_run(admin, aips):
    before = timezone.now()

    schedule = schedule_make(cron="30 3 * * *")

    assert schedule.next_run_at > before
    assert schedule.next_run_at <= before + timedelta(days=1)
    assert (schedule.next_run_at.hour, schedule.next_run_at.minute) == (3, 30)
    assert schedule.folder == "backups/site"


# --- the tick -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_missed_run_starts_one_job(admin, aips, redis12):
    schedule = schedule_make(cron="0 2 * * *")
    now = timezone.now()
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=now - timedelta(days=2))

    started = schedules_tick(now=now)
    again = schedules_tick(now=now + timedelta(seconds=30))

    schedule.refresh_from_db()
    job = Job.objects.get()
    assert [job.pk for job in started] == [job.pk]
    assert again == []
    assert job.kind == Job.Kind.BACKUP
    assert job.state == Job.State.QUEUED
    assert job.schedule == schedule
    assert job.storage == "aips"
    assert job.handle == selectors.site_handle()
    assert job.recursive is True
    assert job.path.startswith("backups/site/")
    assert job.path.endswith("/SITE@123456789-0.zip")
    assert schedule.next_run_at > now
    assert schedule.next_run_at == cron_next("0 2 * * *", now)


@pytest.mark.django_db
def test_tick_skips_disabled_and_future(admin, aips, redis12):
    now = timezone.now()
    disabled = schedule_make("disabled", enabled=False)
    future = schedule_make("future")
    BackupSchedule.objects.filter(pk=disabled.pk).update(next_run_at=now - timedelta(hours=1))

    started = schedules_tick(now=now)

    future.refresh_from_db()
    assert started == []
    assert not Job.objects.exists()
    assert future.next_run_at > now


@pytest.mark.django_db
def test_tick_sets_first_run_only(admin, aips, redis12):
    schedule = schedule_make()
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=None)
    now = timezone.now()

    started = schedules_tick(now=now)

    schedule.refresh_from_db()
    assert started == []
    assert schedule.next_run_at == cron_next(schedule.cron, now)


@pytest.mark.django_db
def test_tick_records_start_failure(admin, aips, redis12):
    schedule = schedule_make(handle="")
    BackupSchedule.objects.filter(pk=schedule.pk).update(
        next_run_at=timezone.now() - timedelta(minutes=1), eperson_email="gone@example.org"
    )

    started = schedules_tick()

    job = Job.objects.get()
    assert [job.pk for job in started] == [job.pk]
    assert job.state == Job.State.FAILED
    assert job.schedule == schedule
    assert "could not start" in job.error
    assert "'gone@example.org' is not an administrator" in job.error


@pytest.mark.django_db
def test_tick_fails_backup_of_dead_job(admin, aips, redis12):
    schedule = schedule_make()
    job = Job.objects.create(
        kind=Job.Kind.BACKUP, state=Job.State.FAILED, eperson_email=ADMIN_EMAIL, storage="aips", schedule=schedule,
        path="backups/site/20300101T020000Z/SITE@123456789-0.zip", error="No heartbeat from worker w1",
    )
    backup = Backup.objects.create(
        schedule=schedule, job=job, storage="aips", folder="backups/site/20300101T020000Z", snapshot_at=timezone.now()
    )
    partial = aips / backup.folder / "COMMUNITY@123456789-1.zip"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"partial")
    kept = aips / "backups/site/20291231T020000Z/SITE@123456789-0.zip"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"earlier")

    schedules_tick()

    backup.refresh_from_db()
    assert backup.state == Backup.State.FAILED
    assert backup.finished_at is not None
    assert not partial.parent.exists()
    assert kept.read_bytes() == b"earlier"


@pytest.mark.django_db(transaction=True)
def test_tick_concurrent_one_job_each(admin, aips, redis12, monkeypatch):
    selectors.site_get()
    now = timezone.now()
    names = [f"site-{number}" for number in range(6)]
    for name in names:
        schedule = schedule_make(name)
        BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=now - timedelta(minutes=5))

    # Both ticks read the same due schedules before either claims one, so every claim is contested.
    both_read = threading.Barrier(2, timeout=20)
    due = schedules.schedules_due

    def due_then_wait(moment):
        found = due(moment)
        both_read.wait()
        return found

    monkeypatch.setattr(schedules, "schedules_due", due_then_wait)
    results: dict[str, object] = {}

    def tick(label: str) -> None:
        try:
            results[label] = [job.pk for job in schedules_tick(now=now)]
        except Exception as error:  # reported by the asserts below
            results[label] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=tick, args=(label,)) for label in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert all(isinstance(value, list) for value in results.values()), results
    started = results["first"] + results["second"]
    jobs = Job.objects.filter(kind=Job.Kind.BACKUP)
    assert len(started) == len(names)
    assert jobs.count() == len(names)
    assert sorted(jobs.values_list("schedule__name", flat=True)) == names
    assert all(job.state == Job.State.QUEUED for job in jobs)
    assert django_rq.get_queue("default").count == len(names)
    assert not BackupSchedule.objects.filter(next_run_at__lte=now).exists()


# --- rq-scheduler ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_scheduler_registers_tick_once(redis12):
    output = StringIO()

    call_command("aip_scheduler", "--burst", "--interval", "1", stdout=output)
    call_command("aip_scheduler", "--burst", "--interval", "1", stdout=output)

    scheduler = Scheduler(queue_name="default", connection=redis12)
    scheduled = list(scheduler.get_jobs(with_times=True))
    assert [job.id for job, _ in scheduled] == [TICK_JOB_ID]
    tick, when = scheduled[0]
    assert tick.func_name == TICK_FUNCTION
    assert tick.meta["cron_string"] == TICK_CRON
    assert tick.origin == "default"
    assert when > timezone.now().replace(tzinfo=None) - timedelta(seconds=1)
    lines = output.getvalue().splitlines()
    assert f"Backup schedule tick {TICK_JOB_ID} ({TICK_CRON}) registered on queue default." in lines
    assert f"Backup schedule tick {TICK_JOB_ID} ({TICK_CRON}) already registered on queue default." in lines


def test_scheduler_without_redis_fails(settings):
    settings.REDIS_URL = ""

    with pytest.raises(CommandError, match="REDIS_URL is not set.*--once"):
        call_command("aip_scheduler", "--burst", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_scheduled_tick_runs_on_worker(admin, aips, redis12):
    schedule = schedule_make(handle="")
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now() - timedelta(minutes=1))
    call_command("aip_scheduler", "--burst", "--interval", "1", stdout=StringIO())
    # Make the tick due now instead of at the next full minute.
    redis12.zadd(Scheduler.scheduled_jobs_key, {TICK_JOB_ID: 0})

    call_command("aip_scheduler", "--burst", "--interval", "1", stdout=StringIO())
    queue = django_rq.get_queue("default")
    assert queue.job_ids == [TICK_JOB_ID]
    BurstWorker([queue], connection=redis12).work(burst=True)

    job = Job.objects.get(kind=Job.Kind.BACKUP)
    backup = Backup.objects.get()
    assert job.schedule_id == schedule.pk
    assert job.state == Job.State.SUCCEEDED, job.error
    assert backup.state == Backup.State.VERIFIED
    assert (aips / job.path).is_file()
    assert redis12.zscore(Scheduler.scheduled_jobs_key, TICK_JOB_ID) > 0


def test_scheduler_once_without_redis(settings, admin, aips):
    settings.REDIS_URL = ""
    output = StringIO()

    call_command("aip_scheduler", "--once", stdout=output)

    assert output.getvalue() == "No backup schedule is due.\n"


# --- admin --------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin.user)
    return client


def schedule_form(**fields) -> dict[str, str]:
    values = {
        "name": "nightly",
        "enabled": "on",
        "handle": "",
        "recursive": "on",
        "cron": "0 2 * * *",
        "incremental": "on",
        "storage": "aips",
        "folder": "backups/nightly",
        "keep": "7",
        "eperson_email": ADMIN_EMAIL,
        "backups-TOTAL_FORMS": "0",
        "backups-INITIAL_FORMS": "0",
        "backups-MIN_NUM_FORMS": "0",
        "backups-MAX_NUM_FORMS": "0",
    }
    values.update(fields)
    return values


@pytest.mark.django_db
def test_admin_add_rejects_invalid_cron(admin_client, aips):
    response = admin_client.post(
        reverse("admin:aip_backupschedule_add"), schedule_form(cron="0 2 * *", storage="nowhere")
    )

    assert response.status_code == 200
    assert "Cron expression &#x27;0 2 * *&#x27; is invalid" in response.content.decode()
    assert "Storage &#x27;nowhere&#x27; is not an AIP storage" in response.content.decode()
    assert not BackupSchedule.objects.exists()


@pytest.mark.django_db
def test_admin_add_saves_schedule(admin_client, admin, aips):
    response = admin_client.post(reverse("admin:aip_backupschedule_add"), schedule_form(cron=" 15 1 * * * "))

    schedule = BackupSchedule.objects.get()
    assert response.status_code == 302
    assert schedule.cron == "15 1 * * *"
    assert schedule.next_run_at > timezone.now()
    assert schedule.created_by == admin.user
    assert LogEntry.objects.filter(object_id=str(schedule.pk), action_flag=1).count() == 1


@pytest.mark.django_db
def test_admin_run_now_queues_job(admin_client, admin, aips, redis12, django_capture_on_commit_callbacks):
    schedule = schedule_make()
    next_run = schedule.next_run_at

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:aip_backupschedule_changelist"),
            {"action": "run_now", "_selected_action": [schedule.pk]},
        )

    job = Job.objects.get()
    schedule.refresh_from_db()
    entry = LogEntry.objects.get(object_id=str(schedule.pk))
    assert response.status_code == 302
    assert job.schedule == schedule
    assert job.user == admin.user
    assert job.state == Job.State.QUEUED
    assert django_rq.get_queue("default").job_ids == [job.rq_job_id]
    assert schedule.next_run_at == next_run
    assert entry.action_flag == CHANGE
    assert entry.user == admin.user
    assert entry.get_change_message() == f"Ran the backup now as job {job.pk}."


@pytest.mark.django_db
def test_admin_run_now_needs_export_permission(client, admin, aips, redis12):
    schedule = schedule_make()
    staff = get_user_model().objects.create_user("staff", password="x", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_backupschedule", "change_backupschedule"])
    )
    client.force_login(staff)

    page = client.get(reverse("admin:aip_backupschedule_changelist"))
    response = client.post(
        reverse("admin:aip_backupschedule_changelist"), {"action": "run_now", "_selected_action": [schedule.pk]}
    )

    assert page.status_code == 200
    assert b'value="run_now"' not in page.content
    assert response.status_code == 200
    assert not Job.objects.exists()
    assert not LogEntry.objects.exists()


@pytest.mark.django_db
def test_admin_backup_list_read_only(admin_client, aips):
    schedule = schedule_make()
    backup = Backup.objects.create(
        schedule=schedule, storage="aips", folder="backups/site/20240101T020000Z", state=Backup.State.VERIFIED,
        snapshot_at=timezone.now(), packages=16, packages_written=4, packages_copied=12, bytes=57612,
    )

    listing = admin_client.get(reverse("admin:aip_backup_changelist"))
    schedule_page = admin_client.get(reverse("admin:aip_backupschedule_change", args=[schedule.pk]))
    add = admin_client.get(reverse("admin:aip_backup_add"))
    change = admin_client.post(reverse("admin:aip_backup_change", args=[backup.pk]), {"state": "removed"})

    backup.refresh_from_db()
    assert listing.status_code == 200
    assert b"backups/site/20240101T020000Z" in listing.content
    assert b"Verified" in listing.content
    assert b"56.3\xc2\xa0KB" in listing.content
    assert b"backups/site/20240101T020000Z" in schedule_page.content
    assert add.status_code == 403
    assert change.status_code == 403
    assert backup.state == Backup.State.VERIFIED


@pytest.mark.parametrize("folder", ["/etc", "../x", "a//b", "a/./b", "", "a\\b"])
def test_folder_validate_rejects(folder):
    with pytest.raises(AipError, match="give a relative name inside the storage"):
        folder_validate(folder)


def test_folder_validate_keeps_relative_name():
    assert folder_validate(" backups/site/ ") == "backups/site"

"""The audit trail of jobs: JobEvent rows from export, ingest, verify and backup runs, and their admin pages."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.urls import reverse

from aip.models import Backup, Job, JobEvent
from aip.services import audit
from aip.services.jobs import job_create, job_run
from aip.services.schedules import backup_start, schedule_save
from aip.models import BackupSchedule
from repository.models import Collection
from tests.aip.conftest import ADMIN_EMAIL, export_site
from tests.aip.test_backups import aips  # noqa: F401  (fixture: the "aips" storage in a test folder)

SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"


def actions(job: Job) -> list[str]:
    return list(job.events.order_by("id").values_list("action", flat=True))


def test_export_job_records_each_package(demo, tmp_path):
    job = job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, path=tmp_path / SITE_PACKAGE,
        recursive=True,
    )

    job = job_run(job.pk)

    packages = sorted(path.name for path in tmp_path.glob("*.zip"))
    exported = job.events.filter(action=JobEvent.Action.EXPORTED)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert actions(job)[0] == JobEvent.Action.STARTED
    assert actions(job)[-1] == JobEvent.Action.SUCCEEDED
    assert sorted(exported.values_list("package", flat=True)) == packages
    site = exported.get(package=SITE_PACKAGE)
    assert (site.object_type, site.handle, site.actor) == ("SITE", SITE_HANDLE, ADMIN_EMAIL)
    collection = Collection.objects.filter(handle__isnull=False).first()
    assert exported.get(handle=collection.handle_string).object_type == "COLLECTION"


def test_restore_job_records_skipped_and_replace_records_replaced(demo, tmp_path):
    export_site(tmp_path)
    keep = job_run(job_create(
        kind=Job.Kind.RESTORE, eperson_email=ADMIN_EMAIL, path=tmp_path / SITE_PACKAGE, recursive=True,
        keep_existing=True,
    ).pk)
    collection = Collection.objects.filter(handle__isnull=False).first()
    name = f"COLLECTION@{collection.handle_string.replace('/', '-')}.zip"
    replace = job_run(job_create(
        kind=Job.Kind.REPLACE, eperson_email=ADMIN_EMAIL, path=tmp_path / name, handle=collection.handle_string,
    ).pk)

    assert keep.state == Job.State.SUCCEEDED, keep.error
    skipped = keep.events.filter(action=JobEvent.Action.SKIPPED)
    assert skipped.filter(object_type="SITE", handle=SITE_HANDLE).exists()
    community = skipped.filter(object_type="COMMUNITY").first()
    assert community.detail == "exists; its children are skipped too"
    assert replace.state == Job.State.SUCCEEDED, replace.error
    replaced = replace.events.get(action=JobEvent.Action.REPLACED)
    assert (replaced.object_type, replaced.handle) == ("COLLECTION", collection.handle_string)


def test_failed_ingest_records_reason_and_no_object(demo, tmp_path):
    path = tmp_path / "COLLECTION@123456789-999.zip"
    path.write_bytes(b"not a zip")

    job = job_run(job_create(kind=Job.Kind.RESTORE, eperson_email=ADMIN_EMAIL, path=path).pk)

    assert job.state == Job.State.FAILED
    assert actions(job) == [JobEvent.Action.STARTED, JobEvent.Action.FAILED]
    assert job.events.get(action=JobEvent.Action.FAILED).detail == job.error


def test_verify_job_records_problems(admin, tmp_path):
    path = tmp_path / "ITEM@123456789-8.zip"
    path.write_bytes(b"not a zip")

    job = job_run(job_create(kind=Job.Kind.VERIFY, eperson_email=ADMIN_EMAIL, path=path).pk)

    problems = job.events.filter(action=JobEvent.Action.PROBLEM)
    assert job.state == Job.State.FAILED
    assert problems.filter(package=path.name, detail__startswith="Verified 1 package(s)").exists()
    assert problems.exclude(detail__startswith="Verified").count() == 1
    assert actions(job)[-1] == JobEvent.Action.FAILED


def test_backup_job_records_each_package_with_checksum(demo, aips):  # noqa: F811
    schedule = schedule_save(BackupSchedule(
        name="site", cron="0 2 * * *", storage="aips", folder="backups/site", keep=3, eperson_email=ADMIN_EMAIL
    ))

    job = backup_start(schedule)

    backup = Backup.objects.get(job=job)
    exported = job.events.filter(action=JobEvent.Action.EXPORTED)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert exported.count() == backup.packages
    site = exported.get(package=SITE_PACKAGE)
    assert site.detail.startswith("MD5 ")
    assert site.handle == SITE_HANDLE


def test_report_entries_parse():
    drafts = audit.report_drafts("skipped", [
        "ITEM 123456789/7 (parent 123456789/3 missing)",
        "ITEM@123456789-9.zip (missing)",
        "ITEM 0b0c3a52-1f7e-4a8b-9c1d-2e3f4a5b6c7d",
    ])
    assert (drafts[0].object_type, drafts[0].handle, drafts[0].detail) == (
        "ITEM", "123456789/7", "parent 123456789/3 missing"
    )
    assert (drafts[1].package, drafts[1].detail) == ("ITEM@123456789-9.zip", "missing")
    assert (drafts[2].uuid, drafts[2].handle) == ("0b0c3a52-1f7e-4a8b-9c1d-2e3f4a5b6c7d", "")


def test_admin_shows_trail_inline_and_filters_events(demo, tmp_path, client, admin):
    job = job_run(job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, path=tmp_path / SITE_PACKAGE,
        recursive=True,
    ).pk)
    collection = Collection.objects.filter(handle__isnull=False).first()
    client.force_login(admin.user)

    page = client.get(reverse("admin:aip_job_change", args=[job.pk])).content.decode()
    changelist = reverse("admin:aip_jobevent_changelist")
    by_action = client.get(changelist, {"action__exact": "succeeded"}).content.decode()
    by_handle = client.get(changelist, {"handle": collection.handle_string}).content.decode()

    assert "Audit trail" in page
    assert SITE_PACKAGE in page
    assert f"{job.events.count()} event(s)" in page
    assert "1 job event" in by_action
    assert "Succeeded" in by_action
    assert "1 job event" in by_handle
    assert collection.handle_string in by_handle


# Run by manage.py shell on a new SQLite database: record events of a job and print them.
SQLITE_EVENTS = """
import json
from aip.models import Job
from aip.services import audit
job = Job.objects.create(kind="export", eperson_email="admin@example.org", path="/tmp/x")
audit.events_record(job, [audit.package_draft("copied", f"ITEM@123456789-{number}.zip") for number in range(3)])
audit.event_record(job, "failed", detail="postgres://user:secret-password@127.0.0.1/db failed")
print(json.dumps(list(job.events.order_by("id").values_list("action", "handle", "detail"))))
"""


def test_events_recorded_on_sqlite(tmp_path):
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", REDIS_URL="")
    manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]

    for command in (["migrate", "-v", "0"], ["shell", "-c", SQLITE_EVENTS]):
        done = subprocess.run(manage + command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]

    assert json.loads(done.stdout.splitlines()[-1]) == [
        ["copied", "123456789/0", ""],
        ["copied", "123456789/1", ""],
        ["copied", "123456789/2", ""],
        ["failed", "", "postgres://user:[redacted]@127.0.0.1/db failed"],
    ]

"""Tests of background packager jobs: records in PostgreSQL, run by a real RQ worker on Redis database 15."""
from __future__ import annotations

import logging
import re
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from aip.errors import AipError, InvalidOptionError
from aip.models import Job
from aip.services.jobs import job_create, job_enqueue, job_retry, job_run, jobs_reap
from tests.aip.conftest import ADMIN_EMAIL, export_site, rq_default_queue, work

REDIS_TEST_URL = "redis://127.0.0.1:6379/15"
SITE_HANDLE = "123456789/0"


@pytest.fixture
def queue(settings):
    """The RQ "default" queue on Redis database 15, empty before and after the test."""
    with rq_default_queue(settings, REDIS_TEST_URL) as queue:
        yield queue


def site_export_job(folder, **arguments) -> Job:
    return job_create(
        kind=Job.Kind.EXPORT,
        eperson_email=ADMIN_EMAIL,
        handle=arguments.pop("handle", SITE_HANDLE),
        path=folder / "SITE@123456789-0.zip",
        recursive=True,
        **arguments,
    )


def test_export_job_runs_on_worker(demo, tmp_path, queue, enqueue):
    job = enqueue(site_export_job(tmp_path))
    assert job.state == Job.State.QUEUED
    assert queue.count == 1

    work(queue)
    job.refresh_from_db()

    packages = sorted(tmp_path.glob("*.zip"))
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.error == ""
    assert job.result_path == str(tmp_path / "SITE@123456789-0.zip")
    assert (tmp_path / "SITE@123456789-0.zip").is_file()
    assert len(packages) > 5
    assert job.objects_done == len(packages)
    assert job.bytes_done == sum(path.stat().st_size for path in packages)
    assert job.started_at is not None
    assert job.finished_at >= job.started_at
    assert job.heartbeat_at is not None
    assert job.worker_name
    assert job.rq_job_id
    log = job.log.splitlines()
    assert "Wrote SITE@123456789-0.zip" in log
    assert len([line for line in log if line.startswith("Wrote ")]) == len(packages)
    assert log[-1].startswith(f"Exported {len(packages)} package(s), {job.bytes_done} bytes")


def test_enqueue_sets_job_timeout(demo, tmp_path, queue, enqueue, settings):
    settings.AIP_JOB_TIMEOUT = 1234
    job = enqueue(site_export_job(tmp_path))

    rq_job = queue.fetch_job(job.rq_job_id)

    assert rq_job.timeout == 1234
    assert rq_job.func_name == "aip.tasks.run_job"
    assert rq_job.args == (job.pk,)


# Outside a transaction, so that the enqueue runs before the command reads the job's state.
@pytest.mark.django_db(transaction=True)
def test_enqueue_without_redis_marks_failed(admin, tmp_path, settings):
    # Nothing listens on port 1 of this machine, so the connection is refused.
    settings.REDIS_URL = "redis://127.0.0.1:1/15"
    settings.RQ_QUEUES = {"default": {"URL": settings.REDIS_URL, "ASYNC": True}}

    with pytest.raises(CommandError, match="Enqueueing the job on Redis failed: .*Check REDIS_URL"):
        call_command(
            "packager", "--background", "-t", "AIP", "-e", ADMIN_EMAIL, "-d", "-i", SITE_HANDLE,
            str(tmp_path / "SITE@123456789-0.zip"), stdout=StringIO(),
        )

    job = Job.objects.get()
    assert job.state == Job.State.FAILED
    assert job.started_at is None


def test_export_job_unknown_handle_fails(demo, tmp_path, queue, enqueue):
    job = enqueue(site_export_job(tmp_path, handle="123456789/99999"))

    work(queue)
    job.refresh_from_db()

    assert job.state == Job.State.FAILED
    assert "No object has the handle '123456789/99999'" in job.error
    assert f"FAILED: {job.error}" in job.log
    assert job.finished_at is not None
    assert list(tmp_path.glob("*.zip")) == []


def test_job_unexpected_error_records_type(demo, tmp_path, monkeypatch, caplog):
    def broken_export(**arguments):
        raise ValueError("storage returned nonsense")

    monkeypatch.setattr("aip.services.jobs.object_export", broken_export)
    job = site_export_job(tmp_path)

    with caplog.at_level(logging.ERROR, logger="aip.services.jobs"):
        job = job_run(job.pk)

    assert job.state == Job.State.FAILED
    assert job.error == "ValueError: storage returned nonsense"
    assert any(record.exc_info for record in caplog.records)


def test_job_past_timeout_fails(demo, tmp_path, queue, enqueue, settings, monkeypatch):
    def slow_export(**arguments):
        time.sleep(5)

    # A real export of the demo site finishes well within the 1 s limit, so a slow stand-in replaces it.
    monkeypatch.setattr("aip.services.jobs.object_export", slow_export)
    settings.AIP_JOB_TIMEOUT = 1
    job = enqueue(site_export_job(tmp_path))

    work(queue)
    job.refresh_from_db()

    assert job.state == Job.State.FAILED
    assert job.error.startswith("JobTimeoutException: ")
    assert job.finished_at is not None


def test_restore_keep_existing_job_skips(demo, tmp_path, queue, enqueue):
    path = export_site(tmp_path)
    job = enqueue(job_create(
        kind=Job.Kind.RESTORE, eperson_email=ADMIN_EMAIL, path=path, recursive=True, keep_existing=True
    ))

    work(queue)
    job.refresh_from_db()

    assert job.state == Job.State.SUCCEEDED, job.error
    assert "Skipped SITE 123456789/0 (exists" in job.log
    assert re.search(r"^Skipped COMMUNITY 123456789/\d+ \(exists", job.log, re.MULTILINE)
    assert re.search(r"^0 created, 0 replaced, \d+ skipped", job.log, re.MULTILINE)
    assert job.objects_done > 0
    assert job.result_path == ""


def test_verify_job_logs_summary(demo, tmp_path, queue, enqueue):
    path = export_site(tmp_path)
    job = enqueue(job_create(kind=Job.Kind.VERIFY, eperson_email=ADMIN_EMAIL, path=path, recursive=True))

    work(queue)
    job.refresh_from_db()

    packages = len(list(tmp_path.glob("*.zip")))
    assert job.state == Job.State.SUCCEEDED, job.error
    assert f"Verified {packages} package(s)" in job.log
    assert job.objects_done == packages


def test_verify_job_fails_on_damaged_package(admin, tmp_path, settings):
    settings.REDIS_URL = ""
    path = tmp_path / "ITEM@123456789-8.zip"
    path.write_bytes(b"not a zip")

    job = job_enqueue(job_create(kind=Job.Kind.VERIFY, eperson_email=ADMIN_EMAIL, path=path))

    assert job.state == Job.State.FAILED
    assert job.error.startswith("Verify found 1 problem(s) in ITEM@123456789-8.zip")
    assert "PROBLEM: " in job.log


def test_jobs_reap_marks_stale_job_failed(demo, tmp_path):
    stale = site_export_job(tmp_path)
    fresh = site_export_job(tmp_path)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Job.objects.filter(pk=stale.pk).update(state=Job.State.RUNNING, heartbeat_at=an_hour_ago, worker_name="lost:1")
    Job.objects.filter(pk=fresh.pk).update(state=Job.State.RUNNING, heartbeat_at=timezone.now())

    reaped = jobs_reap(stale_after=timedelta(minutes=10))

    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert reaped == [stale.pk]
    assert stale.state == Job.State.FAILED
    assert stale.error.startswith("No heartbeat from worker lost:1 since ")
    assert "more than 600 s ago" in stale.error
    assert stale.finished_at is not None
    assert fresh.state == Job.State.RUNNING


def test_job_retry_completes_reaped_job(demo, tmp_path, queue, django_capture_on_commit_callbacks):
    job = site_export_job(tmp_path)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, heartbeat_at=timezone.now() - timedelta(hours=1))
    jobs_reap(stale_after=timedelta(minutes=10))
    job.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        retry = job_retry(job)
    work(queue)
    retry.refresh_from_db()

    assert retry.pk != job.pk
    assert retry.retry_of == job
    assert retry.state == Job.State.SUCCEEDED, retry.error
    assert (retry.handle, retry.path, retry.recursive) == (job.handle, job.path, job.recursive)
    assert (tmp_path / "SITE@123456789-0.zip").is_file()


def test_job_retry_rejects_queued_job(demo, tmp_path):
    job = site_export_job(tmp_path)

    with pytest.raises(AipError, match=f"Job {job.pk} is queued; only failed or cancelled jobs can be retried."):
        job_retry(job)


def test_job_run_leaves_cancelled_job(demo, tmp_path):
    job = site_export_job(tmp_path)
    Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLED)

    job = job_run(job.pk)

    assert job.state == Job.State.CANCELLED
    assert job.started_at is None
    assert not (tmp_path / "SITE@123456789-0.zip").exists()


def test_job_create_rejects_invalid_option(admin, tmp_path):
    with pytest.raises(InvalidOptionError, match="Unknown export option 'bogus'"):
        site_export_job(tmp_path, options={"bogus": "true"})

    assert not Job.objects.exists()


def test_job_create_rejects_non_administrator(admin, tmp_path):
    with pytest.raises(AipError, match="'nobody@example.org' is not an administrator or does not exist"):
        job_create(kind=Job.Kind.VERIFY, eperson_email="nobody@example.org", path=tmp_path / "SITE.zip")

    assert not Job.objects.exists()


def test_job_runs_synchronously_without_redis_url(demo, tmp_path, settings):
    settings.REDIS_URL = ""

    job = job_enqueue(site_export_job(tmp_path))

    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.rq_job_id == ""
    assert (tmp_path / "SITE@123456789-0.zip").is_file()


def test_packager_background_queues_job(demo, tmp_path, queue, django_capture_on_commit_callbacks):
    path = tmp_path / "SITE@123456789-0.zip"
    output = StringIO()

    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "packager", "--background", "-t", "AIP", "-e", ADMIN_EMAIL, "-d", "-a", "-i", SITE_HANDLE, str(path),
            stdout=output,
        )
    match = re.match(r"Queued job (\d+) \(RQ job [0-9a-f-]+\)\. Follow it in the admin at /admin/aip/job/\1/change/",
                     output.getvalue())
    assert match, output.getvalue()
    assert not path.exists()

    work(queue)
    job = Job.objects.get(pk=int(match.group(1)))

    assert job.state == Job.State.SUCCEEDED, job.error
    assert (job.kind, job.handle, job.path, job.recursive) == (Job.Kind.EXPORT, SITE_HANDLE, str(path), True)
    assert path.is_file()


def test_packager_background_without_redis_fails_inline(admin, tmp_path, settings):
    settings.REDIS_URL = ""
    path = tmp_path / "ITEM@123456789-8.zip"
    path.write_bytes(b"not a zip")

    with pytest.raises(CommandError, match="Verify found 1 problem"):
        call_command("packager", "--background", "-t", "AIP", "-e", ADMIN_EMAIL, "--verify", str(path),
                     stdout=StringIO())

    assert Job.objects.get().state == Job.State.FAILED


def test_aip_jobs_reap_command_reports_ids(demo, tmp_path):
    job = site_export_job(tmp_path)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, heartbeat_at=timezone.now() - timedelta(hours=1))
    output = StringIO()

    call_command("aip_jobs_reap", "--stale-after", "600", stdout=output)

    assert output.getvalue().strip() == f"Marked 1 job(s) failed: {job.pk}"
    job.refresh_from_db()
    assert job.state == Job.State.FAILED


def test_aip_jobs_reap_command_rejects_short_limit(db):
    with pytest.raises(CommandError, match="--stale-after must be at least 60 seconds, not 5"):
        call_command("aip_jobs_reap", "--stale-after", "5")


def test_job_admin_shows_log(admin_client, demo, tmp_path, settings):
    settings.REDIS_URL = ""
    job = job_enqueue(site_export_job(tmp_path))

    changelist = admin_client.get(reverse("admin:aip_job_changelist"))
    detail = admin_client.get(reverse("admin:aip_job_change", args=[job.pk]))

    assert changelist.status_code == 200
    assert f"{job.objects_done} objects" in changelist.content.decode()
    assert detail.status_code == 200
    assert "Wrote SITE@123456789-0.zip" in detail.content.decode()
    assert "Save" not in detail.content.decode()


def test_jobs_reap_fails_queued_job_lost_by_redis(demo, tmp_path, queue, enqueue):
    job = enqueue(site_export_job(tmp_path))
    waiting = site_export_job(tmp_path / "other")
    enqueue(waiting)
    queue.connection.delete(f"rq:job:{job.rq_job_id}")
    Job.objects.filter(pk__in=[job.pk, waiting.pk]).update(created_at=timezone.now() - timedelta(hours=1))

    reaped = jobs_reap(stale_after=timedelta(minutes=5))

    job.refresh_from_db()
    waiting.refresh_from_db()
    assert reaped == [job.pk]
    assert job.state == Job.State.FAILED
    assert f"RQ job {job.rq_job_id} is no longer in Redis" in job.error
    assert waiting.state == Job.State.QUEUED

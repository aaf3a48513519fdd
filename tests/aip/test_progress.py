"""Progress reports and cancellation: the command line bar, job counters, and cancel of queued and running jobs."""
from __future__ import annotations

import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from aip import progress as progress_module
from aip import selectors
from aip.errors import AipError
from aip.models import Job
from aip.progress import TerminalProgress
from aip.services import ingest as ingest_module
from aip.services import jobs as jobs_module
from aip.services.jobs import job_cancel, job_create, job_enqueue, job_run
from repository.models import Collection, Community
from tests.aip.conftest import (
    ADMIN_EMAIL,
    database_snapshot,
    export_site,
    repository_wipe,
    rq_default_queue,
    stored_files,
)

REDIS_TEST_URL = "redis://127.0.0.1:6379/14"
SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"


def test_plain_progress_prints_counts_without_terminal(monkeypatch):
    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL", 0.0)
    out = StringIO()
    bar = TerminalProgress(out, verb="exported", is_terminal=False)
    bar.total(4)
    for _ in range(4):
        bar.advance(size=1024)
    bar.close()

    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith("  exported 4/4 packages, 4.0\xa0KB")
    assert "\r" not in out.getvalue()


def test_terminal_progress_redraws_one_line(monkeypatch):
    monkeypatch.setattr(progress_module, "BAR_INTERVAL", 0.0)
    out = StringIO()
    bar = TerminalProgress(out, verb="read", is_terminal=True)
    bar.total(2)
    bar.advance(size=10)
    bar.advance(size=10)
    bar.close()

    text = out.getvalue()
    assert text.count("\r") == 3
    assert text.endswith("\n")
    assert text.count("\n") == 1
    last = text.split("\r")[-1]
    assert "read 2/2 packages" in last
    assert "[" + "#" * 10 in last
    assert " " not in last[1:last.index("]")]


def test_packager_export_lists_each_package_at_verbosity_two(demo, tmp_path):
    out = StringIO()
    call_command(
        "packager", "-t", "AIP", "-e", ADMIN_EMAIL, "-d", "-a", "-i", SITE_HANDLE,
        str(tmp_path / SITE_PACKAGE), verbosity=2, stdout=out,
    )

    written = [line for line in out.getvalue().splitlines() if line.startswith("  wrote ")]
    assert len(written) == len(list(tmp_path.glob("*.zip"))) == selectors.tree_size(selectors.site_get())


def test_export_job_records_total_and_done(demo, tmp_path):
    job = job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, path=tmp_path / SITE_PACKAGE,
        recursive=True,
    )

    job = job_run(job.pk)

    assert job.state == Job.State.SUCCEEDED
    packages = list(tmp_path.glob("*.zip"))
    assert job.objects_total == job.objects_done == len(packages) == 16
    assert job.bytes_done == sum(path.stat().st_size for path in packages)


@pytest.mark.parametrize("kind", [Community, Collection])
def test_tree_size_matches_recursive_export(demo, tmp_path, kind):
    obj = max(kind.objects.all(), key=selectors.tree_size)
    call_command(
        "packager", "-t", "AIP", "-e", ADMIN_EMAIL, "-d", "-a", "-i", obj.handle_string,
        str(tmp_path / selectors.package_file_name(obj)), stdout=StringIO(),
    )

    assert selectors.tree_size(obj) == len(list(tmp_path.glob("*.zip"))) > 1


def test_cancel_queued_job_without_redis(demo, tmp_path):
    job = job_create(kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, path=tmp_path / SITE_PACKAGE)

    job = job_cancel(job)
    ran = job_run(job.pk)

    assert ran.state == Job.State.CANCELLED
    assert "before it started" in ran.error
    assert ran.started_at is None
    assert not (tmp_path / SITE_PACKAGE).exists()


def test_cancel_finished_job_rejected(demo, tmp_path):
    job = job_create(kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, path=tmp_path / SITE_PACKAGE)
    job = job_run(job.pk)

    with pytest.raises(AipError, match=f"Job {job.pk} is succeeded; only queued or running jobs can be cancelled."):
        job_cancel(job)


def test_cancel_queued_job_removes_it_from_redis(demo, tmp_path, settings, django_capture_on_commit_callbacks):
    with rq_default_queue(settings, REDIS_TEST_URL) as queue:
        job = job_create(
            kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, path=tmp_path / SITE_PACKAGE
        )
        with django_capture_on_commit_callbacks(execute=True):
            job = job_enqueue(job)
        queued = queue.count

        job_cancel(job)

        assert queued == 1
        assert queue.count == 0


@pytest.mark.django_db(transaction=True)
def test_cancel_running_restore_rolls_back(demo, tmp_path, bitstream_storage, monkeypatch):
    """A restore cancelled half-way stores nothing, and its progress was visible while it ran."""
    folder = tmp_path / "aips"
    folder.mkdir()
    export_site(folder)
    repository_wipe()
    counts_before, files_before = database_snapshot(), stored_files(bitstream_storage)
    job = job_create(
        kind=Job.Kind.REPLACE, eperson_email=ADMIN_EMAIL, path=folder / SITE_PACKAGE, recursive=True
    )
    monkeypatch.setattr(jobs_module, "PROGRESS_INTERVAL", 0.05)
    seen_from_outside: list[tuple[int, int | None]] = []
    original = ingest_module._IngestRun._ingest_path

    def ingest_then_cancel(run, pending, replace_handle):
        result = original(run, pending, replace_handle)
        if len(run.done) == 5:
            time.sleep(0.3)  # several reports, so the counters are in the row
            _from_other_connection(lambda: seen_from_outside.append(_counters(job.pk)))
            _from_other_connection(lambda: job_cancel(Job.objects.get(pk=job.pk)))
            time.sleep(0.3)  # the reporting thread reads the request
        return result

    monkeypatch.setattr(ingest_module._IngestRun, "_ingest_path", ingest_then_cancel)

    job = job_run(job.pk)

    assert job.state == Job.State.CANCELLED, job.error
    assert f"Job {job.pk} was cancelled after" in job.error
    assert database_snapshot() == counts_before
    assert stored_files(bitstream_storage) == files_before
    done, total = seen_from_outside[0]
    assert 4 <= done <= 6
    assert total == len(list(folder.glob("*.zip")))


def _counters(job_id: int) -> tuple[int, int | None]:
    row = Job.objects.values("objects_done", "objects_total").get(pk=job_id)
    return row["objects_done"], row["objects_total"]


def _from_other_connection(work) -> None:
    """Run ``work`` in a thread, which has its own database connection, as a second process would."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # re-raised in the test's thread below
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def test_finished_restore_total_is_packages_read(demo, tmp_path):
    """A subtree restored from a folder of the whole site ends at 100 %, not at its share of the folder."""
    export_site(tmp_path)
    collection = max(Collection.objects.all(), key=selectors.tree_size)
    job = job_create(
        kind=Job.Kind.REPLACE, eperson_email=ADMIN_EMAIL, handle=collection.handle_string,
        path=tmp_path / selectors.package_file_name(collection), recursive=True,
    )

    job = job_run(job.pk)

    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.objects_total == job.objects_done == selectors.tree_size(collection)
    assert job.objects_done < len(list(tmp_path.glob("*.zip")))

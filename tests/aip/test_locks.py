"""Concurrent jobs on PostgreSQL: a second job on the same objects waits, or fails naming the running job.

Each job runs in its own thread, which has its own database connections, as two workers would.
"""
from __future__ import annotations

import threading
import time
import zipfile
from datetime import timedelta

import pytest
from django.core import checks
from django.core.management.base import CommandError
from django.db import connection, transaction

from aip.checks import transaction_pooling_warnings
from aip.models import Job, JobEvent
from aip.services import jobs as jobs_module
from aip.services import locks
from aip.mets.writer import format_mets_datetime
from aip.services import manifests
from aip.services.jobs import job_create, job_run
from repository.models import Collection, Item, MetadataValue
from tests.aip.conftest import ADMIN_EMAIL, packager

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def collection(demo) -> Collection:
    return Collection.objects.filter(handle__isnull=False).select_related("handle", "community").order_by("pk").first()


@pytest.fixture
def collection_package(collection, tmp_path):
    path = tmp_path / "in" / f"COLLECTION@{collection.handle_string.replace('/', '-')}.zip"
    path.parent.mkdir()
    packager("-d", "-i", collection.handle_string, str(path))
    return path


class PausedIngest:
    """Replace ``package_ingest`` for a job: the first call waits until ``released`` is set, later ones pass."""

    def __init__(self, monkeypatch):
        self.original = jobs_module.package_ingest
        self.inside = threading.Event()
        self.released = threading.Event()
        self.calls = 0
        monkeypatch.setattr(jobs_module, "package_ingest", self)

    def __call__(self, **arguments):
        self.calls += 1
        if self.calls == 1:
            self.inside.set()
            assert self.released.wait(30), "the test never released the first ingest"
        return self.original(**arguments)


def in_thread(work) -> tuple[threading.Thread, list]:
    """Start ``work`` in a thread with its own connection; the list receives its result or error."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # the test reads it from the list
            outcome.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def replace_job(collection, package) -> Job:
    return job_create(kind=Job.Kind.REPLACE, eperson_email=ADMIN_EMAIL, path=package, handle=collection.handle_string)


def test_second_restore_fails_at_once_naming_running_job(collection, collection_package, monkeypatch, settings):
    settings.AIP_LOCK_WAIT = 0
    paused = PausedIngest(monkeypatch)
    first = replace_job(collection, collection_package)
    second = job_create(
        kind=Job.Kind.RESTORE, eperson_email=ADMIN_EMAIL, path=collection_package, keep_existing=True
    )
    thread, outcome = in_thread(lambda: job_run(first.pk))
    assert paused.inside.wait(30)

    second = job_run(second.pk)
    paused.released.set()
    thread.join(60)

    assert second.state == Job.State.FAILED
    assert f"Object {collection.handle_string} is in use by job {first.pk} (replace of " in second.error
    assert f"by {ADMIN_EMAIL}" in second.error
    assert "AIP_LOCK_WAIT" in second.error
    assert outcome[0].state == Job.State.SUCCEEDED, outcome[0].error
    assert paused.calls == 1, "the second restore must not have started its ingest"


def test_export_waits_for_replace_then_runs(collection, collection_package, monkeypatch, settings, tmp_path):
    settings.AIP_LOCK_WAIT = 30
    paused = PausedIngest(monkeypatch)
    first = replace_job(collection, collection_package)
    export = job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=collection.handle_string,
        path=tmp_path / "out" / collection_package.name,
    )
    (tmp_path / "out").mkdir()
    replace_thread, replace_outcome = in_thread(lambda: job_run(first.pk))
    assert paused.inside.wait(30)
    export_thread, export_outcome = in_thread(lambda: job_run(export.pk))
    waiting = _wait_for(lambda: "Waiting up to 30 s" in Job.objects.get(pk=export.pk).log)

    paused.released.set()
    replace_thread.join(60)
    export_thread.join(60)

    assert waiting, "the export did not report that it waits"
    replaced, exported = replace_outcome[0], export_outcome[0]
    assert replaced.state == Job.State.SUCCEEDED, replaced.error
    assert exported.state == Job.State.SUCCEEDED, exported.error
    assert f"in use by job {first.pk} (replace of {collection.handle_string}" in exported.log
    waited = JobEvent.objects.get(job=exported, action=JobEvent.Action.WAITED)
    assert f"job {first.pk}" in waited.detail
    # The export wrote its package only after the replace had committed.
    assert exported.finished_at > replaced.finished_at


def test_cancel_while_waiting(collection, collection_package, monkeypatch, settings, tmp_path):
    settings.AIP_LOCK_WAIT = 30
    monkeypatch.setattr(jobs_module, "PROGRESS_INTERVAL", 0.1)
    export = job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=collection.handle_string,
        path=tmp_path / collection_package.name,
    )
    keys = locks.handle_keys(collection.handle_string, exclusive=True)
    with locks.locks_held(keys, holder="aip packager restore by someone@example.org (pid 1)"):
        thread, outcome = in_thread(lambda: job_run(export.pk))
        assert _wait_for(lambda: "Waiting up to" in Job.objects.get(pk=export.pk).log)
        Job.objects.filter(pk=export.pk).update(cancel_requested=True)
        thread.join(30)

    cancelled = outcome[0]
    assert cancelled.state == Job.State.CANCELLED
    assert "in use by aip packager restore by someone@example.org (pid 1)" in cancelled.error
    assert not (tmp_path / collection_package.name).exists()


def test_community_writer_blocks_descendants_only(collection, demo):
    community = collection.community.handle_string
    other = Collection.objects.exclude(pk=collection.pk).exclude(community=collection.community).filter(
        handle__isnull=False
    ).first()
    below = locks.handle_keys(collection.handle_string, exclusive=False)
    beside = locks.handle_keys(other.handle_string, exclusive=False)

    with locks.locks_held(locks.handle_keys(community, exclusive=True), holder="aip job 999999", wait=0):
        _, below_outcome = _joined(lambda: _try_locks(below))
        _, beside_outcome = _joined(lambda: _try_locks(beside))

    assert isinstance(below_outcome[0], locks.LockBusyError)
    assert f"Object {community} is in use by job 999999" in str(below_outcome[0])
    assert beside_outcome[0] == "locked"


def test_two_readers_share(collection):
    keys = locks.handle_keys(collection.handle_string, exclusive=False)
    with locks.locks_held(keys, holder="aip job 999998", wait=0):
        _, outcome = _joined(lambda: _try_locks(keys))
    assert outcome[0] == "locked"


def test_lock_wait_setting_rejects_bad_value(settings):
    settings.AIP_LOCK_WAIT = "soon"
    with pytest.raises(locks.LockBusyError.__mro__[1], match=r"AIP_LOCK_WAIT is 'soon'"):
        locks.lock_wait_seconds()


def test_transaction_pooling_settings_warn():
    databases = {
        "default": {"ENGINE": "django.db.backends.postgresql", "DISABLE_SERVER_SIDE_CURSORS": True},
        "direct": {"ENGINE": "django.db.backends.postgresql"},
        "embedded": {"ENGINE": "django.db.backends.sqlite3", "DISABLE_SERVER_SIDE_CURSORS": True},
    }

    warnings = transaction_pooling_warnings(databases)

    assert [warning.id for warning in warnings] == ["aip.W001"]
    assert "DATABASES['default']" in warnings[0].msg
    assert "session pooling" in warnings[0].hint


def test_direct_connection_passes_checks():
    assert [message.id for message in checks.run_checks() if message.id.startswith("aip.")] == []


def _try_locks(keys) -> str:
    with locks.locks_held(keys, holder="aip test", wait=0):
        return "locked"


def _joined(work):
    thread, outcome = in_thread(work)
    thread.join(30)
    return thread, outcome


def _wait_for(condition, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_export_job_reads_item_in_one_snapshot(demo, tmp_path, monkeypatch):
    """An edit committed while the package is built (after the item row, before its metadata) stays out."""
    item = Item.objects.filter(in_archive=True, handle__isnull=False).order_by("pk").first()
    title = MetadataValue.objects.filter(item=item, field__element="title", field__qualifier__isnull=True).first()
    before = (title.value, item.last_modified)
    after = ("Edited while its package was built", item.last_modified + timedelta(days=400))
    original = manifests.items_prefetch

    def edit_then_read(items):
        # The item row is read; another connection now changes its title and time in one transaction.
        _joined(lambda: _edit(item.pk, title.pk, *after))
        monkeypatch.setattr(manifests, "items_prefetch", original)
        original(items)

    monkeypatch.setattr(manifests, "items_prefetch", edit_then_read)
    name = f"ITEM@{item.handle_string.replace('/', '-')}.zip"

    job = job_run(job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=item.handle_string, path=tmp_path / "1" / name
    ).pk)
    again = job_run(job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=item.handle_string, path=tmp_path / "2" / name
    ).pk)

    assert job.state == again.state == Job.State.SUCCEEDED, job.error or again.error
    for path, (expected_title, expected_time), (other_title, other_time) in (
        (tmp_path / "1" / name, before, after),
        (tmp_path / "2" / name, after, before),
    ):
        with zipfile.ZipFile(path) as package:
            mets = package.read("mets.xml").decode()
        assert f">{expected_title}<" in mets
        assert f">{other_title}<" not in mets
        assert f'LASTMODDATE="{format_mets_datetime(expected_time)}"' in mets
        assert format_mets_datetime(other_time) not in mets


def _edit(item_id: int, title_id: int, title: str, moment) -> None:
    with transaction.atomic():
        MetadataValue.objects.filter(pk=title_id).update(value=title)
        Item.objects.filter(pk=item_id).update(last_modified=moment)


def test_inline_packager_fails_naming_running_job(collection, collection_package, settings, tmp_path):
    settings.AIP_LOCK_WAIT = 0
    running = replace_job(collection, collection_package)
    Job.objects.filter(pk=running.pk).update(state=Job.State.RUNNING)
    keys = locks.handle_keys(collection.handle_string, exclusive=True)

    with locks.locks_held(keys, holder=locks.job_holder_name(running.pk)):
        _, outcome = _joined(lambda: packager("-d", "-i", collection.handle_string, str(tmp_path / "out.zip")))

    assert isinstance(outcome[0], CommandError)
    assert f"Object {collection.handle_string} is in use by job {running.pk} (replace of " in str(outcome[0])
    assert not (tmp_path / "out.zip").exists()

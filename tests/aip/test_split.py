"""Tests of split exports and restores: part jobs and a final job run by a real RQ worker on Redis database 10."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as settings_module
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from aip.errors import AipError
from aip.models import Job, JobEvent
from aip.services.jobs import job_cancel, job_create, job_enqueue, job_retry, jobs_reap
from aip.services.metadata_ingest import FieldRegistry
from aip.services.registry_rows import registry_row_commit
from aip.services.split import MAX_PARTS
from aip.services.split_export import tree_item_ids
from aip.mets.model import DimValue
from aip.options import ExportOptions
from aip.selectors import package_file_name, site_get
from aip.services.export import object_export
from repository.models import Bitstream, Item, MetadataField, MetadataSchema
from tests.aip.conftest import (
    ADMIN_EMAIL,
    BurstWorker,
    database_snapshot,
    export_site,
    package_bytes,
    repository_wipe,
    rq_default_queue,
    work,
)

REDIS_TEST_URL = "redis://127.0.0.1:6379/10"
SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"


@pytest.fixture
def queue(settings):
    """The RQ "default" queue on Redis database 10, empty before and after the test."""
    with rq_default_queue(settings, REDIS_TEST_URL) as queue:
        yield queue


def split_job(folder: Path, parts: int = 3, **arguments) -> Job:
    return job_create(
        kind=Job.Kind.EXPORT,
        eperson_email=ADMIN_EMAIL,
        handle=SITE_HANDLE,
        path=folder / SITE_PACKAGE,
        recursive=True,
        part_count=parts,
        **arguments,
    )


def exported_items():
    """Items a site export writes: archived or withdrawn."""
    return Item.objects.filter(Q(in_archive=True) | Q(withdrawn=True))


def bitstream_hide(item_id: int, bitstream_root: Path) -> tuple[Path, Path]:
    """Move one stored file of item ``item_id`` aside, so that exporting the item fails; return both paths."""
    bitstream = Bitstream.objects.filter(bundle__item_id=item_id).exclude(file="").order_by("pk").first()
    stored = bitstream_root / bitstream.file.name
    hidden = stored.with_name(stored.name + ".hidden")
    stored.rename(hidden)
    return stored, hidden


def test_split_export_matches_unsplit(demo, tmp_path, queue, enqueue):
    whole = export_site(tmp_path / "whole")
    job = enqueue(split_job(tmp_path / "split"))

    work(queue)
    job.refresh_from_db()

    expected = package_bytes(whole.parent)
    written = package_bytes(tmp_path / "split")
    parts = list(job.parts.order_by("pk"))
    assert job.state == Job.State.SUCCEEDED, job.error
    assert sorted(written) == sorted(expected)
    assert [name for name in expected if written[name] != expected[name]] == []
    assert len(parts) == 3
    assert all(part.state == Job.State.SUCCEEDED for part in parts)
    assert sum(len(part.batch) for part in parts) == exported_items().count()
    assert job.objects_done == len(expected)
    assert job.objects_total == len(expected)
    assert job.bytes_done == sum(len(content) for content in expected.values())
    assert job.result_path == str(tmp_path / "split" / SITE_PACKAGE)


def test_split_export_records_parts(demo, tmp_path, queue, enqueue):
    job = enqueue(split_job(tmp_path, parts=2))

    work(queue)
    job.refresh_from_db()

    parts = list(job.parts.order_by("pk"))
    assert job.state == Job.State.SUCCEEDED, job.error
    assert f"Split into 2 part job(s): {parts[0].pk}, {parts[1].pk}" in job.log
    assert "Split export done: " in job.log
    for part in parts:
        assert part.result_path == ""
        assert part.objects_done == len(part.batch)
        assert part.objects_total == len(part.batch)
        assert part.worker_name
        assert part.log.splitlines()[-1].startswith(f"Exported {len(part.batch)} item package(s)")
    assert job.events.filter(action=JobEvent.Action.EXPORTED, package=SITE_PACKAGE).exists()
    assert job.events.filter(action=JobEvent.Action.SUCCEEDED).count() == 1
    assert parts[0].events.filter(action=JobEvent.Action.EXPORTED).count() == len(parts[0].batch)


def test_tree_item_ids_in_package_order(demo, tmp_path):
    result = object_export(obj=site_get(), path=tmp_path / SITE_PACKAGE, options=ExportOptions(recursive=True))
    item_ids = tree_item_ids(site_get())
    items = Item.objects.select_related("handle").in_bulk(item_ids)

    item_packages = [path.name for path in result.packages if path.name.startswith("ITEM@")]
    assert [package_file_name(items[item_id]) for item_id in item_ids] == item_packages
    assert set(item_ids) == set(exported_items().values_list("pk", flat=True))


def test_failed_export_part_retried(
    demo, tmp_path, queue, enqueue, bitstream_storage, django_capture_on_commit_callbacks
):
    folder = tmp_path / "export"
    job = enqueue(split_job(folder))
    work(queue)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    # A second run of the same export into a new folder, with one stored file of the second part missing.
    first_parts = list(job.parts.order_by("pk"))
    stored, hidden = bitstream_hide(first_parts[1].batch[0], bitstream_storage)
    second = enqueue(split_job(tmp_path / "again"))

    work(queue)
    second.refresh_from_db()

    parts = list(second.parts.order_by("pk"))
    assert [part.state for part in parts] == [Job.State.SUCCEEDED, Job.State.FAILED, Job.State.SUCCEEDED]
    assert second.state == Job.State.FAILED
    assert f"Part job {parts[1].pk} failed: " in second.error
    assert "1 of the 3 part job(s) did not succeed" in second.error
    assert not (tmp_path / "again" / SITE_PACKAGE).exists()

    hidden.rename(stored)
    with django_capture_on_commit_callbacks(execute=True):
        retry = job_retry(second)
    work(queue)
    retry.refresh_from_db()

    retried = list(retry.parts.order_by("pk"))
    assert retry.retry_of == second
    assert retry.state == Job.State.SUCCEEDED, retry.error
    assert [part.retry_of_id for part in retried] == [parts[0].pk, None, parts[2].pk]
    assert retried[0].worker_name == ""
    assert retried[1].worker_name
    assert f"2 of them succeeded in job {second.pk} and are not run again" in retry.log
    assert package_bytes(tmp_path / "again") == package_bytes(folder)


def test_part_retry_rejected(demo, tmp_path, queue, enqueue):
    job = enqueue(split_job(tmp_path))
    work(queue)
    part = job.parts.order_by("pk").first()
    Job.objects.filter(pk=part.pk).update(state=Job.State.FAILED)
    part.refresh_from_db()

    with pytest.raises(AipError, match=f"Job {part.pk} is a part of split job {job.pk}; retry job {job.pk}"):
        job_retry(part)


def test_cancel_split_export_cancels_parts(demo, tmp_path, queue, enqueue):
    job = enqueue(split_job(tmp_path))
    # Run only the parent: the worker takes the first job, which lists the items and queues the parts.
    BurstWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING
    assert queue.count == 3

    job_cancel(job)
    work(queue)
    job.refresh_from_db()

    assert job.state == Job.State.CANCELLED
    assert f"Split job {job.pk} was cancelled; 0 of its 3 part(s) had succeeded" in job.error
    assert set(job.parts.values_list("state", flat=True)) == {Job.State.CANCELLED}
    assert list(tmp_path.glob("*.zip")) == []


def test_cancel_one_part_fails_parent(demo, tmp_path, queue, enqueue):
    job = enqueue(split_job(tmp_path))
    BurstWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)
    part = job.parts.order_by("pk").last()

    job_cancel(part)
    work(queue)
    job.refresh_from_db()

    assert job.state == Job.State.FAILED
    assert f"Part job {part.pk} cancelled: Cancelled by an operator before it started." in job.error


def test_split_progress_sums_parts(demo, tmp_path, queue, enqueue):
    job = enqueue(split_job(tmp_path))
    BurstWorker([queue], connection=queue.connection).work(burst=True, max_jobs=2)
    job.refresh_from_db()
    first = job.parts.order_by("pk").first()

    assert job.state == Job.State.RUNNING
    assert first.state == Job.State.SUCCEEDED
    assert job.objects_done == first.objects_done
    assert job.bytes_done == first.bytes_done
    assert job.objects_total > first.objects_total


def test_reap_skips_waiting_split_job(demo, tmp_path, queue, enqueue):
    job = enqueue(split_job(tmp_path))
    BurstWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=an_hour_ago)

    assert jobs_reap(stale_after=timedelta(minutes=10)) == []

    job.parts.update(state=Job.State.FAILED)
    assert jobs_reap(stale_after=timedelta(minutes=10)) == [job.pk]
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert "the final job of this split job has not ended it" in job.error


def test_split_export_without_redis_runs_here(demo, tmp_path, settings):
    settings.REDIS_URL = ""
    whole = export_site(tmp_path / "whole")

    job = job_enqueue(split_job(tmp_path / "split", parts=2))

    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.parts.count() == 2
    assert package_bytes(tmp_path / "split") == package_bytes(whole.parent)


def test_more_parts_than_items(demo, tmp_path, settings):
    settings.REDIS_URL = ""
    items = exported_items().count()

    job = job_enqueue(split_job(tmp_path, parts=items + 5))

    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.parts.count() == items
    assert (tmp_path / SITE_PACKAGE).is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"recursive": False}, "Only a recursive export \\(-d -a\\) or restore \\(-r -a\\) can be split into parts"),
        (
            {"part_count": MAX_PARTS + 1},
            f"Invalid number of parts {MAX_PARTS + 1}: give a number from 2 to {MAX_PARTS}",
        ),
    ],
)
def test_job_create_rejects_bad_split(admin, tmp_path, arguments, message):
    values = {"kind": Job.Kind.EXPORT, "handle": SITE_HANDLE, "recursive": True, "part_count": 2, **arguments}

    with pytest.raises(AipError, match=message):
        job_create(eperson_email=ADMIN_EMAIL, path=tmp_path / SITE_PACKAGE, **values)

    assert not Job.objects.exists()


def test_packager_parts_needs_background(demo, tmp_path):
    with pytest.raises(CommandError, match="--parts needs --background"):
        call_command(
            "packager", "-t", "AIP", "-e", ADMIN_EMAIL, "-d", "-a", "--parts", "2", "-i", SITE_HANDLE,
            str(tmp_path / SITE_PACKAGE), stdout=StringIO(),
        )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-d", "-a", "--parts", "1", "-i", SITE_HANDLE], "Invalid number of parts 1: give a number from 2 to"),
        (["-d", "-a", "--parts", "-3", "-i", SITE_HANDLE], "Invalid number of parts -3: give a number from 2 to"),
        (["-s", "-a", "--parts", "2", "-p", SITE_HANDLE], "a submit cannot be split into part jobs"),
        (["-r", "--parts", "2"], "only applies to a recursive export or restore. Add -a."),
        (["--verify", "-a", "--parts", "2"], "applies to an export or restore, not to --verify"),
    ],
)
def test_packager_rejects_bad_parts(demo, tmp_path, arguments, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command(
            "packager", "--background", "-t", "AIP", "-e", ADMIN_EMAIL, *arguments, str(tmp_path / SITE_PACKAGE),
            stdout=StringIO(),
        )

    assert not Job.objects.exists()


def test_packager_background_parts_queues_split(demo, tmp_path, queue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "packager", "--background", "-t", "AIP", "-e", ADMIN_EMAIL, "-d", "-a", "--parts", "2",
            "-i", SITE_HANDLE, str(tmp_path / SITE_PACKAGE), stdout=StringIO(),
        )
    work(queue)
    job = Job.objects.get(parent__isnull=True)

    assert job.part_count == 2
    assert job.state == Job.State.SUCCEEDED, job.error
    assert (tmp_path / SITE_PACKAGE).is_file()


def test_benchmark_split_jobs_on_rq(queue):
    scratch = f"bench_split_test_{os.getpid()}"
    output = StringIO()

    call_command(
        "aip_benchmark", items=20, files=1, file_size="1K", workers=2, parts=3, redis_url=REDIS_TEST_URL,
        scratch_name=scratch, json=True, stdout=output,
    )

    steps = json.loads(output.getvalue())["steps"]
    export, restore = steps["export"], steps["restore"]
    # The site, one community and one collection, then one package per item.
    assert export["packages"] == 23
    assert export["parts"] == 3
    assert export["rq_workers"] == 2
    assert export["seconds"] > 0
    assert export["cpu_seconds"] > 0
    assert restore["packages"] == 23
    # The first part records the containers that the split restore itself restored.
    assert restore["parts"] == 4
    assert restore["bytes_written"] == 20 * 1024
    assert queue.connection.dbsize() == 0


def test_benchmark_rejects_busy_redis_database(queue):
    queue.connection.set("someone-else", "1")

    with pytest.raises(CommandError, match=f"Redis database {REDIS_TEST_URL} contains 1 key\\(s\\)"):
        call_command(
            "aip_benchmark", items=1, workers=2, redis_url=REDIS_TEST_URL, scratch_name="bench_split_busy",
            stdout=StringIO(),
        )

    assert queue.connection.get("someone-else") == b"1"


def test_admin_page_lists_parts(admin_client, demo, tmp_path, settings):
    settings.REDIS_URL = ""
    job = job_enqueue(split_job(tmp_path, parts=2))
    part = job.parts.order_by("pk").first()

    page = admin_client.get(reverse("admin:aip_job_change", args=[job.pk])).content.decode()
    part_page = admin_client.get(reverse("admin:aip_job_change", args=[part.pk])).content.decode()

    assert reverse("admin:aip_job_change", args=[part.pk]) in page
    assert f"{part.pk}</a> (succeeded)" in page
    assert reverse("admin:aip_job_change", args=[job.pk]) in part_page


# --- split restore --------------------------------------------------------------------------------


def split_restore_job(path: Path, parts: int = 3) -> Job:
    return job_create(
        kind=Job.Kind.REPLACE, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, path=path, recursive=True,
        part_count=parts,
    )


def repository_empty(bitstream_root: Path) -> None:
    """Delete the repository's content and stored files, as on a fresh installation."""
    repository_wipe()
    shutil.rmtree(bitstream_root)
    bitstream_root.mkdir()


def test_split_restore_matches_export(demo, tmp_path, queue, enqueue, bitstream_storage):
    path = export_site(tmp_path / "export")
    before = database_snapshot()
    repository_empty(bitstream_storage)

    job = enqueue(split_restore_job(path))
    work(queue)
    job.refresh_from_db()

    parts = list(job.parts.order_by("pk"))
    assert job.state == Job.State.SUCCEEDED, job.error
    assert database_snapshot() == before
    assert package_bytes(export_site(tmp_path / "again").parent) == package_bytes(path.parent)
    assert len(parts) == 4
    assert parts[0].batch == []
    assert parts[0].worker_name == job.worker_name
    assert sum(len(part.batch) for part in parts) == exported_items().count()
    assert job.objects_done == sum(part.objects_done for part in parts)
    assert job.objects_done == len(package_bytes(path.parent))
    containers = parts[0].objects_done
    assert (
        f"Restored {containers} package(s) other than the items that collections list; part job {parts[0].pk} "
        "records them."
    ) in job.log
    assert "Split restore done: " in job.log


def test_split_restore_failed_part_retried(
    demo, tmp_path, queue, enqueue, bitstream_storage, django_capture_on_commit_callbacks
):
    path = export_site(tmp_path / "export")
    before = database_snapshot()
    repository_empty(bitstream_storage)
    job = enqueue(split_restore_job(path))
    # The parent restores the containers and lists the item packages; then one package of the second part is damaged.
    BurstWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)
    parts = list(job.parts.order_by("pk"))
    damaged = path.parent / parts[2].batch[0][0]
    original = damaged.read_bytes()
    damaged.write_bytes(b"not a zip")

    work(queue)
    job.refresh_from_db()
    parts = list(job.parts.order_by("pk"))

    assert [part.state for part in parts] == [Job.State.SUCCEEDED] * 2 + [Job.State.FAILED, Job.State.SUCCEEDED]
    assert job.state == Job.State.FAILED
    assert f"Part job {parts[2].pk} failed: " in job.error
    assert "what the others restored stays committed" in job.error
    assert not Item.objects.filter(handle__handle__in=part_handles(parts[2])).exists()
    assert Item.objects.filter(handle__handle__in=part_handles(parts[1])).count() == len(parts[1].batch)

    damaged.write_bytes(original)
    with django_capture_on_commit_callbacks(execute=True):
        retry = job_retry(job)
    work(queue)
    retry.refresh_from_db()

    retried = list(retry.parts.order_by("pk"))
    assert retry.state == Job.State.SUCCEEDED, retry.error
    assert [part.retry_of_id for part in retried] == [parts[0].pk, parts[1].pk, None, parts[3].pk]
    assert [part.worker_name != "" for part in retried] == [False, False, True, False]
    assert f"The site, communities and collections were restored by job {job.pk}, not again." in retry.log
    assert database_snapshot() == before


def part_handles(part: Job) -> list[str]:
    """Return the handles of the item packages of a restore part, from their DSpace package names."""
    return [name.removeprefix("ITEM@").removesuffix(".zip").replace("-", "/") for name, _ in part.batch]


def test_split_restore_without_redis_runs_here(demo, tmp_path, settings, bitstream_storage):
    settings.REDIS_URL = ""
    path = export_site(tmp_path / "export")
    before = database_snapshot()
    repository_empty(bitstream_storage)

    job = job_enqueue(split_restore_job(path, parts=2))

    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.parts.count() == 3
    assert database_snapshot() == before


def test_split_submit_rejected(admin, tmp_path):
    with pytest.raises(AipError, match="A submit gives new handles"):
        job_create(
            kind=Job.Kind.SUBMIT, eperson_email=ADMIN_EMAIL, parent_handle=SITE_HANDLE, path=tmp_path / SITE_PACKAGE,
            recursive=True, part_count=2,
        )


@pytest.mark.django_db(transaction=True)
def test_registry_row_commit_outlives_rollback():
    schema = MetadataSchema.objects.get(short_id="dc")
    registry = FieldRegistry(create_missing=True, commit_apart=True)
    value = DimValue(schema="dc", element="split", qualifier="test", value="x")

    with pytest.raises(RuntimeError), transaction.atomic():
        field = registry.field(value, source="ITEM@123456789-9.zip")
        registry_row_commit(
            MetadataField, {"schema": schema.pk, "element": "split", "qualifier": "test", "scope_note": ""}
        )
        raise RuntimeError("the part failed after the field was created")

    assert MetadataField.objects.filter(schema=schema, element="split", qualifier="test").count() == 1
    assert MetadataField.objects.get(schema=schema, element="split", qualifier="test").pk == field.pk


def test_split_restore_on_sqlite_matches_export(demo, tmp_path):
    # SQLite, the embedded default, lets one transaction write at a time: a part must not wait for
    # a second connection of its own. The restore runs in a subprocess on a new SQLite database.
    export = tmp_path / "export"
    export_site(export)
    env = dict(
        os.environ,
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        BITSTREAM_ROOT=str(tmp_path / "assetstore"),
        AIP_STORAGE_ROOT=str(tmp_path / "aips"),
        REDIS_URL="",
    )
    manage = [sys.executable, str(Path(settings_module.BASE_DIR) / "manage.py")]
    again = tmp_path / "again"
    steps = [
        ["migrate", "-v", "0"],
        ["create_administrator", "--email", ADMIN_EMAIL, "--password", "a long password"],
        ["packager", "--background", "--parts", "3", "-r", "-f", "-u", "-a", "-t", "AIP", "-e", ADMIN_EMAIL,
         "-i", "123456789/0", str(export / "SITE@123456789-0.zip")],
        ["packager", "-d", "-a", "-t", "AIP", "-e", ADMIN_EMAIL, "-i", "123456789/0",
         str(again / "SITE@123456789-0.zip")],
    ]

    for step in steps:
        done = subprocess.run(manage + step, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{step[0]}: {done.stdout[-2000:]} {done.stderr[-2000:]}"

    assert package_bytes(again) == package_bytes(export)

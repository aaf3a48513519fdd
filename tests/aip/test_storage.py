"""AIP storages: staging packages in and out of a folder or an S3 bucket, and jobs that use them.

The S3 tests run against moto's S3 server, started on 127.0.0.1 by this module,
with a new bucket per test. Each storage operation runs on both a FileSystemStorage
and an S3Storage, built from the settings that AIP_S3_* variables select.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tracemalloc
import uuid
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.core.files.storage import storages

from aip import storage as aip_storage_module
from aip.errors import AipError
from aip.models import Job
from aip.services.jobs import job_create, job_enqueue
from aip.storage import (
    aip_storage,
    staged_read,
    staged_write,
    storage_copy,
    storage_copy_folder,
    storage_delete_folder,
    storage_files,
    storage_md5,
)
from config.settings import aip_s3_storage
from repository.demo import demo_repository_build
from repository.models import Bitstream
from tests.aip.conftest import (
    ADMIN_EMAIL,
    database_snapshot,
    export_site,
    package_bytes,
    packager,
    repository_wipe,
)
from tests.aip.s3server import S3Server

SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"
# Credentials moto accepts; tests check that neither reaches a message or a log line.
ACCESS_KEY = "AKIATESTSTORAGEKEY42"
SECRET_KEY = "test-secret-9f3c1b7e5d2a4c6e8b0a"
MIB = 1024 * 1024


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _aws_environment(monkeypatch, tmp_path):
    """Keep boto3 away from the machine's AWS files and from the instance metadata service."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def s3_environment(endpoint_url: str, bucket: str, **extra: str) -> dict[str, str]:
    return {
        "AIP_S3_BUCKET": bucket,
        "AIP_S3_ENDPOINT_URL": endpoint_url,
        "AIP_S3_REGION": "us-east-1",
        "AIP_S3_PREFIX": "backups",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        **extra,
    }


def aips_configure(monkeypatch, entry: dict) -> None:
    """Make ``entry`` the "aips" storage for one test.

    The storage handler is patched, not settings.STORAGES, because a change of that setting makes
    Django create every storage anew, while the Bitstream file field keeps the bitstreams storage
    instance that the ``bitstream_storage`` fixture points at this test's own folder.
    """
    monkeypatch.setitem(storages.backends, "aips", entry)
    monkeypatch.setitem(storages._storages, "aips", storages.create_storage(entry))


def s3_storage_for(monkeypatch, endpoint_url: str, *, bucket_create: bool = True):
    bucket = f"aips-{uuid.uuid4().hex[:12]}"
    aips_configure(monkeypatch, aip_s3_storage(s3_environment(endpoint_url, bucket)))
    storage = aip_storage("aips")
    if bucket_create:
        storage.connection.meta.client.create_bucket(Bucket=bucket)
    return storage


@pytest.fixture
def s3_storage(s3_server, monkeypatch):
    return s3_storage_for(monkeypatch, s3_server.endpoint_url)


@pytest.fixture
def filesystem_storage(tmp_path, monkeypatch):
    aips_configure(
        monkeypatch,
        {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "aips")}},
    )
    return aip_storage("aips")


@pytest.fixture(params=["filesystem", "s3"])
def any_storage(request):
    return request.getfixturevalue(f"{request.param}_storage")


def files_publish(storage, contents: dict[str, bytes]) -> None:
    """Store ``contents`` (storage name to bytes) through ``staged_write``, one folder at a time."""
    folders: dict[str, dict[str, bytes]] = {}
    for name, data in contents.items():
        folder, _, file_name = name.rpartition("/")
        folders.setdefault(folder, {})[file_name] = data
    for folder, files in folders.items():
        with staged_write(storage, folder) as local:
            for file_name, data in files.items():
                (local / file_name).write_bytes(data)


def stored_bytes(storage, name: str) -> bytes:
    with storage.open(name, "rb") as stream:
        return stream.read()


def s3_operations(storage) -> list[str]:
    """Record the name of every S3 API call the storage's client makes from now on."""
    calls: list[str] = []
    storage.connection.meta.client.meta.events.register(
        "before-call.s3", lambda model, **_: calls.append(model.name)
    )
    return calls


# --- aip_storage and settings -------------------------------------------------------------


def test_aip_storage_unknown_alias(filesystem_storage):
    with pytest.raises(AipError) as caught:
        aip_storage("archive")

    assert "'archive'" in str(caught.value)
    assert "'aips'" in str(caught.value)


def test_aip_storage_rejects_bitstreams(filesystem_storage):
    with pytest.raises(AipError, match="'bitstreams' is not an AIP storage"):
        aip_storage("bitstreams")


def test_s3_settings_need_credentials():
    with pytest.raises(ImproperlyConfigured, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        aip_s3_storage({"AIP_S3_BUCKET": "aips", "AWS_ACCESS_KEY_ID": ACCESS_KEY})


def test_s3_settings_defaults():
    entry = aip_s3_storage({"AIP_S3_BUCKET": "aips", "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    options = entry["OPTIONS"]

    assert entry["BACKEND"] == "storages.backends.s3.S3Storage"
    assert options["endpoint_url"] is None
    assert options["region_name"] is None
    assert options["location"] == ""
    assert options["transfer_config"].multipart_chunksize == 8 * MIB
    assert options["transfer_config"].multipart_threshold == 8 * MIB


def test_s3_settings_reject_small_chunk():
    environ = s3_environment("http://127.0.0.1:9", "aips", AIP_S3_CHUNK_SIZE_MB="2")

    with pytest.raises(ImproperlyConfigured, match="AIP_S3_CHUNK_SIZE_MB is '2'"):
        aip_s3_storage(environ)


# --- staged_write -------------------------------------------------------------------------


def test_staged_write_publishes_all_files(any_storage):
    with staged_write(any_storage, "run/1") as local:
        (local / "SITE@123456789-0.zip").write_bytes(b"site")
        (local / "COMMUNITY@123456789-1.zip").write_bytes(b"community")
        (local / "backup.json").write_bytes(b"{}")

    assert storage_files(any_storage, "run/1") == [
        "run/1/COMMUNITY@123456789-1.zip",
        "run/1/SITE@123456789-0.zip",
        "run/1/backup.json",
    ]
    assert stored_bytes(any_storage, "run/1/COMMUNITY@123456789-1.zip") == b"community"
    assert not local.exists()


def test_staged_write_publishes_nothing_on_error(any_storage):
    files_publish(any_storage, {"run/SITE@123456789-0.zip": b"old"})

    with pytest.raises(RuntimeError, match="export failed"):
        with staged_write(any_storage, "run") as local:
            (local / "SITE@123456789-0.zip").write_bytes(b"new")
            (local / "ITEM@123456789-2.zip").write_bytes(b"item")
            raise RuntimeError("export failed")

    assert storage_files(any_storage, "") == ["run/SITE@123456789-0.zip"]
    assert stored_bytes(any_storage, "run/SITE@123456789-0.zip") == b"old"
    assert not local.exists()


def test_staged_write_overwrites_existing(any_storage):
    files_publish(any_storage, {"run/SITE@123456789-0.zip": b"old"})

    files_publish(any_storage, {"run/SITE@123456789-0.zip": b"new content"})

    assert storage_files(any_storage, "run") == ["run/SITE@123456789-0.zip"]
    assert stored_bytes(any_storage, "run/SITE@123456789-0.zip") == b"new content"


def test_staged_write_filesystem_stages_inside_location(filesystem_storage):
    with staged_write(filesystem_storage, "run") as local:
        (local / "SITE@123456789-0.zip").write_bytes(b"site")
        staged_inside = local.is_relative_to(Path(filesystem_storage.location))

    assert staged_inside
    assert storage_files(filesystem_storage, "") == ["run/SITE@123456789-0.zip"]


def test_staged_write_rejects_parent_name(any_storage):
    with pytest.raises(AipError, match=r"Storage name '\.\./outside' is invalid"):
        with staged_write(any_storage, "../outside"):
            pass


def test_s3_upload_is_multipart_above_chunk(s3_storage):
    calls = s3_operations(s3_storage)

    with staged_write(s3_storage, "large") as local:
        (local / "large.zip").write_bytes(os.urandom(9 * MIB))

    assert "CreateMultipartUpload" in calls
    assert calls.count("UploadPart") == 2
    assert "CompleteMultipartUpload" in calls


# --- staged_read --------------------------------------------------------------------------


def test_staged_read_missing_name(any_storage):
    with pytest.raises(AipError) as caught:
        with staged_read(any_storage, "run/SITE@123456789-0.zip"):
            pass

    message = str(caught.value)
    assert "'run/SITE@123456789-0.zip' was not found in storage 'aips'" in message
    assert "Check the name" in message


def test_staged_read_filesystem_yields_stored_file(filesystem_storage):
    files_publish(filesystem_storage, {"run/SITE@123456789-0.zip": b"site"})

    with staged_read(filesystem_storage, "run/SITE@123456789-0.zip", with_folder=True) as path:
        assert path == Path(filesystem_storage.location) / "run" / "SITE@123456789-0.zip"


def test_staged_read_s3_with_folder(s3_storage):
    files_publish(s3_storage, {
        "run/SITE@123456789-0.zip": b"site",
        "run/COMMUNITY@123456789-1.zip": b"community",
        "run/ITEM@123456789-2.xml": b"<mets/>",
        "run/backup.json": b"{}",
        "run/older/ITEM@123456789-3.zip": b"older",
    })

    with staged_read(s3_storage, "run/SITE@123456789-0.zip", with_folder=True) as path:
        present = sorted(entry.name for entry in path.parent.iterdir())
        site = path.read_bytes()

    assert present == ["COMMUNITY@123456789-1.zip", "ITEM@123456789-2.xml", "SITE@123456789-0.zip"]
    assert site == b"site"
    assert not path.parent.exists()


def test_staged_read_s3_without_folder(s3_storage):
    files_publish(s3_storage, {"run/SITE@123456789-0.zip": b"site", "run/COMMUNITY@123456789-1.zip": b"c"})

    with staged_read(s3_storage, "run/SITE@123456789-0.zip") as path:
        present = sorted(entry.name for entry in path.parent.iterdir())

    assert present == ["SITE@123456789-0.zip"]


# --- copy, md5, list, delete --------------------------------------------------------------


def test_storage_copy_replaces_target(any_storage):
    files_publish(any_storage, {"one/ITEM@123456789-2.zip": b"item", "two/ITEM@123456789-2.zip": b"stale"})

    storage_copy(any_storage, "one/ITEM@123456789-2.zip", "two/ITEM@123456789-2.zip")

    assert stored_bytes(any_storage, "two/ITEM@123456789-2.zip") == b"item"
    assert stored_bytes(any_storage, "one/ITEM@123456789-2.zip") == b"item"


def test_storage_copy_missing_source(any_storage):
    with pytest.raises(AipError, match="'one/ITEM@123456789-2.zip' to copy was not found in storage 'aips'"):
        storage_copy(any_storage, "one/ITEM@123456789-2.zip", "two/ITEM@123456789-2.zip")


def test_storage_copy_folder_copies_and_replaces(any_storage):
    names = ["ITEM@123456789-2.zip", "ITEM@123456789-3.zip"]
    files_publish(any_storage, {"one/" + names[0]: b"two", "one/" + names[1]: b"three", "two/" + names[1]: b"stale"})

    storage_copy_folder(any_storage, "one", "two", names)

    assert stored_bytes(any_storage, "two/" + names[0]) == b"two"
    assert stored_bytes(any_storage, "two/" + names[1]) == b"three"


def test_storage_copy_folder_missing_source(any_storage):
    files_publish(any_storage, {"one/ITEM@123456789-2.zip": b"two"})

    with pytest.raises(AipError, match="'one/ITEM@123456789-9.zip' to copy was not found in storage 'aips'"):
        storage_copy_folder(any_storage, "one", "two", ["ITEM@123456789-2.zip", "ITEM@123456789-9.zip"])


def test_storage_copy_folder_rejects_paths(filesystem_storage):
    with pytest.raises(AipError, match="Storage name .* is invalid"):
        storage_copy_folder(filesystem_storage, "one", "two", ["../ITEM@123456789-2.zip"])


def test_storage_copy_filesystem_links(filesystem_storage):
    files_publish(filesystem_storage, {"one/ITEM@123456789-2.zip": b"item"})

    storage_copy(filesystem_storage, "one/ITEM@123456789-2.zip", "two/ITEM@123456789-2.zip")

    source = Path(filesystem_storage.path("one/ITEM@123456789-2.zip"))
    target = Path(filesystem_storage.path("two/ITEM@123456789-2.zip"))
    assert source.stat().st_ino == target.stat().st_ino


def test_storage_copy_s3_server_side(s3_storage):
    files_publish(s3_storage, {"one/ITEM@123456789-2.zip": os.urandom(6 * MIB)})
    calls = s3_operations(s3_storage)

    storage_copy(s3_storage, "one/ITEM@123456789-2.zip", "two/ITEM@123456789-2.zip")

    assert "CopyObject" in calls
    assert "GetObject" not in calls
    assert "PutObject" not in calls
    assert "UploadPart" not in calls
    assert storage_md5(s3_storage, "two/ITEM@123456789-2.zip") == storage_md5(s3_storage, "one/ITEM@123456789-2.zip")


def test_storage_md5_of_multipart_object(any_storage):
    # 9 MiB goes up in two parts, so the S3 ETag is not the MD5 of the content.
    data = os.urandom(9 * MIB)
    files_publish(any_storage, {"run/large.zip": data})

    assert storage_md5(any_storage, "run/large.zip") == hashlib.md5(data).hexdigest()


def test_storage_md5_missing(any_storage):
    with pytest.raises(AipError, match="'run/none.zip' was not found in storage 'aips'"):
        storage_md5(any_storage, "run/none.zip")


def test_storage_files_recursive_sorted(any_storage):
    files_publish(any_storage, {
        "run/b.zip": b"b",
        "run/a.zip": b"a",
        "run/sub/c.zip": b"c",
        "runs/d.zip": b"d",
        "other/e.zip": b"e",
    })

    assert storage_files(any_storage, "run") == ["run/a.zip", "run/b.zip", "run/sub/c.zip"]
    assert storage_files(any_storage, "run/sub") == ["run/sub/c.zip"]
    assert storage_files(any_storage, "missing") == []
    assert len(storage_files(any_storage, "")) == 5


def test_storage_delete_folder(any_storage):
    files_publish(any_storage, {"run/a.zip": b"a", "run/sub/b.zip": b"b", "runs/c.zip": b"c"})

    deleted = storage_delete_folder(any_storage, "run")

    assert deleted == 2
    assert storage_files(any_storage, "") == ["runs/c.zip"]
    assert storage_delete_folder(any_storage, "run") == 0


def test_storage_delete_folder_filesystem_removes_folders(filesystem_storage):
    files_publish(filesystem_storage, {"run/sub/b.zip": b"b"})

    storage_delete_folder(filesystem_storage, "run")

    assert not (Path(filesystem_storage.location) / "run").exists()
    assert Path(filesystem_storage.location).is_dir()


def test_storage_delete_folder_rejects_root(any_storage):
    with pytest.raises(AipError, match="Storage name '' is invalid"):
        storage_delete_folder(any_storage, "")


def test_s3_prefix_holds_objects(s3_storage):
    files_publish(s3_storage, {"run/a.zip": b"a"})

    client = s3_storage.connection.meta.client
    keys = [entry["Key"] for entry in client.list_objects_v2(Bucket=s3_storage.bucket_name)["Contents"]]
    assert keys == ["backups/run/a.zip"]


# --- memory and errors --------------------------------------------------------------------


def test_s3_staging_memory_flat(s3_storage):
    block = os.urandom(MIB)
    expected = hashlib.md5()
    tracemalloc.start()
    try:
        with staged_write(s3_storage, "large") as local:
            with open(local / "large.zip", "wb") as stream:
                for _ in range(64):
                    stream.write(block)
                    expected.update(block)
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()

        with staged_read(s3_storage, "large/large.zip") as path:
            size = path.stat().st_size
            actual = hashlib.md5()
            with open(path, "rb") as stream:
                while chunk := stream.read(MIB):
                    actual.update(chunk)
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert size == 64 * MIB
    assert actual.hexdigest() == expected.hexdigest()
    assert write_peak < 16 * MIB, f"staged_write of 64 MiB peaked at {write_peak / MIB:.1f} MiB"
    assert read_peak < 16 * MIB, f"staged_read of 64 MiB peaked at {read_peak / MIB:.1f} MiB"


def test_s3_stopped_server_fails_after_retries(monkeypatch, caplog):
    server = S3Server()
    server.start()
    try:
        storage = s3_storage_for(monkeypatch, server.endpoint_url)
        files_publish(storage, {"run/SITE@123456789-0.zip": b"site"})
    finally:
        server.stop()
    monkeypatch.setattr(aip_storage_module, "RETRY_DELAY", 0.01)
    caplog.set_level(logging.WARNING, logger="aip.storage")

    with pytest.raises(AipError) as caught:
        with staged_read(storage, "run/SITE@123456789-0.zip"):
            pass

    message = str(caught.value)
    attempts = aip_storage_module.RETRY_ATTEMPTS
    assert "'run/SITE@123456789-0.zip' in storage 'aips'" in message
    assert f"failed after {attempts} attempt(s)" in message
    assert "EndpointConnectionError" in message
    assert "Check that the storage service is reachable" in message
    assert len([record for record in caplog.records if "retrying" in record.getMessage()]) == attempts - 1
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in message
        assert secret not in caplog.text


def test_s3_missing_bucket_fails_without_retry(s3_server, monkeypatch, caplog):
    storage = s3_storage_for(monkeypatch, s3_server.endpoint_url, bucket_create=False)
    caplog.set_level(logging.WARNING, logger="aip.storage")

    with pytest.raises(AipError, match=r"failed after 1 attempt\(s\): NoSuchBucket"):
        storage_files(storage, "run")

    assert not [record for record in caplog.records if "retrying" in record.getMessage()]


# --- jobs ---------------------------------------------------------------------------------


def test_job_create_unknown_storage(admin, filesystem_storage):
    with pytest.raises(AipError, match="Storage 'archive' is not an AIP storage"):
        job_create(kind=Job.Kind.VERIFY, eperson_email=ADMIN_EMAIL, path="run/SITE.zip", storage="archive")


def test_job_create_rejects_parent_name(admin, filesystem_storage):
    with pytest.raises(AipError, match=r"Package name '\.\./SITE.zip' in storage 'aips' is invalid"):
        job_create(kind=Job.Kind.VERIFY, eperson_email=ADMIN_EMAIL, path="../SITE.zip", storage="aips")


def test_job_create_keeps_storage_name(admin, filesystem_storage):
    job = job_create(kind=Job.Kind.VERIFY, eperson_email=ADMIN_EMAIL, path="/run/SITE.zip", storage="aips")

    assert job.storage == "aips"
    assert job.path == "run/SITE.zip"


def test_s3_export_and_restore_jobs(demo, s3_storage, settings, bitstream_storage, tmp_path):
    settings.REDIS_URL = ""
    local_export = tmp_path / "local"
    local_export.mkdir()
    export_site(local_export)
    before = database_snapshot()

    export = job_enqueue(job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, recursive=True,
        path=f"site/{SITE_PACKAGE}", storage="aips",
    ))

    assert export.state == Job.State.SUCCEEDED, export.error
    assert export.result_path == f"site/{SITE_PACKAGE}"
    assert storage_files(s3_storage, "site") == [f"site/{name}" for name in sorted(package_bytes(local_export))]
    with staged_read(s3_storage, f"site/{SITE_PACKAGE}", with_folder=True) as path:
        assert package_bytes(path.parent) == package_bytes(local_export)

    repository_wipe()
    shutil.rmtree(bitstream_storage)
    bitstream_storage.mkdir()
    restore = job_enqueue(job_create(
        kind=Job.Kind.REPLACE, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, recursive=True,
        path=f"site/{SITE_PACKAGE}", storage="aips",
    ))

    assert restore.state == Job.State.SUCCEEDED, restore.error
    assert database_snapshot() == before
    second_export = tmp_path / "second"
    second_export.mkdir()
    export_site(second_export)
    assert package_bytes(second_export) == package_bytes(local_export)


def test_s3_export_job_failure_publishes_nothing(demo, s3_storage, settings, bitstream_storage):
    settings.REDIS_URL = ""
    next(path for path in sorted(bitstream_storage.rglob("*")) if path.is_file()).unlink()

    job = job_enqueue(job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, recursive=True,
        path=f"site/{SITE_PACKAGE}", storage="aips",
    ))

    assert job.state == Job.State.FAILED
    assert job.error.startswith("Bitstream ")
    assert "cannot be read" in job.error
    assert storage_files(s3_storage, "") == []


def test_s3_split_export_job(demo, s3_storage, settings, tmp_path):
    settings.REDIS_URL = ""
    local_export = tmp_path / "local"
    local_export.mkdir()
    export_site(local_export)

    export = job_enqueue(job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, recursive=True,
        path=f"site/{SITE_PACKAGE}", storage="aips", part_count=3,
    ))

    assert export.state == Job.State.SUCCEEDED, export.error
    assert export.parts.count() == 3
    assert export.result_path == f"site/{SITE_PACKAGE}"
    assert storage_files(s3_storage, "site") == [f"site/{name}" for name in sorted(package_bytes(local_export))]
    with staged_read(s3_storage, f"site/{SITE_PACKAGE}", with_folder=True) as path:
        assert package_bytes(path.parent) == package_bytes(local_export)


def test_s3_split_restore_job(demo, s3_storage, settings, bitstream_storage):
    settings.REDIS_URL = ""
    export = job_enqueue(job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, recursive=True,
        path=f"site/{SITE_PACKAGE}", storage="aips",
    ))
    assert export.state == Job.State.SUCCEEDED, export.error
    before = database_snapshot()
    repository_wipe()
    shutil.rmtree(bitstream_storage)
    bitstream_storage.mkdir()

    restore = job_enqueue(job_create(
        kind=Job.Kind.REPLACE, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, recursive=True,
        path=f"site/{SITE_PACKAGE}", storage="aips", part_count=2,
    ))

    assert restore.state == Job.State.SUCCEEDED, restore.error
    assert restore.parts.count() == 3
    assert database_snapshot() == before


def test_s3_split_export_failed_part_publishes_no_container(demo, s3_storage, settings, bitstream_storage):
    settings.REDIS_URL = ""
    # A file of one item, so that only the part holding that item fails.
    bitstream = Bitstream.objects.filter(bundle__item__in_archive=True).exclude(file="").order_by("pk").first()
    (bitstream_storage / bitstream.file.name).unlink()

    job = job_enqueue(job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, recursive=True,
        path=f"site/{SITE_PACKAGE}", storage="aips", part_count=3,
    ))

    stored = storage_files(s3_storage, "")
    assert job.state == Job.State.FAILED
    assert "part job(s) did not succeed, so the container packages were not written" in job.error
    assert stored
    assert all(name.startswith("site/ITEM@") for name in stored)


def test_s3_recursive_verify_job(demo, s3_storage, settings, tmp_path):
    settings.REDIS_URL = ""
    with staged_write(s3_storage, "site") as local:
        export_site(local)
    packages = len(storage_files(s3_storage, "site"))

    job = job_enqueue(job_create(
        kind=Job.Kind.VERIFY, eperson_email=ADMIN_EMAIL, recursive=True, path=f"site/{SITE_PACKAGE}", storage="aips",
    ))

    assert job.state == Job.State.SUCCEEDED, job.error
    assert f"Verified {packages} package(s)" in job.log
    assert job.objects_done == packages


def test_s3_recursive_verify_job_finds_missing_child(demo, s3_storage, settings):
    settings.REDIS_URL = ""
    with staged_write(s3_storage, "site") as local:
        export_site(local)
    child = next(name for name in storage_files(s3_storage, "site") if "COMMUNITY@" in name)
    s3_storage.delete(child)

    job = job_enqueue(job_create(
        kind=Job.Kind.VERIFY, eperson_email=ADMIN_EMAIL, recursive=True, path=f"site/{SITE_PACKAGE}", storage="aips",
    ))

    assert job.state == Job.State.FAILED
    assert f"child package {child.rsplit('/', 1)[1]}" in job.log
    assert "is missing from" in job.log


@pytest.fixture
def s3_bitstreams(s3_server, monkeypatch):
    """Bitstream files in a bucket of their own, for one test: the handler's entry and the file field's storage."""
    bucket = f"bitstreams-{uuid.uuid4().hex[:12]}"
    environment = {**s3_environment(s3_server.endpoint_url, "unused"), "BITSTREAM_S3_BUCKET": bucket}
    entry = aip_s3_storage(environment, bucket_variable="BITSTREAM_S3_BUCKET", prefix_variable="BITSTREAM_S3_PREFIX")
    storage = storages.create_storage(entry)
    storage.connection.meta.client.create_bucket(Bucket=bucket)
    monkeypatch.setitem(storages._storages, "bitstreams", storage)
    monkeypatch.setattr(Bitstream._meta.get_field("file"), "storage", storage)
    return storage


def test_s3_bitstreams_export_and_restore(admin, s3_bitstreams, tmp_path):
    """With bitstream files in S3, a site exports, restores into an empty database and exports identically."""
    demo_repository_build(seed=11)
    first = tmp_path / "first"
    first.mkdir()
    export_site(first)
    before = database_snapshot()
    stored_before = sum(1 for _ in s3_bitstreams.bucket.objects.all())

    repository_wipe()
    s3_bitstreams.bucket.objects.all().delete()
    packager("-r", "-a", "-f", "-u", "-i", SITE_HANDLE, str(first / SITE_PACKAGE))

    assert database_snapshot() == before
    assert sum(1 for _ in s3_bitstreams.bucket.objects.all()) == stored_before > 0
    second = tmp_path / "second"
    second.mkdir()
    export_site(second)
    assert package_bytes(second) == package_bytes(first)


def test_packager_storage_export_and_restore(demo, any_storage, bitstream_storage, settings, tmp_path):
    """``packager --storage`` reads and writes names in the AIP storage, S3 included, as recorded jobs."""
    settings.REDIS_URL = ""
    local_export = tmp_path / "local"
    local_export.mkdir()
    export_site(local_export)
    before = database_snapshot()
    name = f"cli/{SITE_PACKAGE}"

    packager("--storage", "aips", "-d", "-a", "-i", SITE_HANDLE, name)
    repository_wipe()
    shutil.rmtree(bitstream_storage)
    bitstream_storage.mkdir()
    packager("--storage", "aips", "-r", "-a", "-f", "-u", "-i", SITE_HANDLE, name)

    assert storage_files(any_storage, "cli") == [f"cli/{package}" for package in sorted(package_bytes(local_export))]
    assert database_snapshot() == before
    assert list(Job.objects.order_by("pk").values_list("kind", "state", "storage")) == [
        (Job.Kind.EXPORT, Job.State.SUCCEEDED, "aips"),
        (Job.Kind.REPLACE, Job.State.SUCCEEDED, "aips"),
    ]


def test_packager_storage_missing_name(admin, filesystem_storage, settings, capsys):
    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="cli/none.zip") as raised:
        packager("--storage", "aips", "-r", "-a", "-f", "-u", "-i", SITE_HANDLE, "cli/none.zip")

    # The job's log goes to stdout without its last line, the error, which the command prints once.
    printed = capsys.readouterr()
    assert "ran in this process" in printed.out
    assert str(raised.value) not in printed.out

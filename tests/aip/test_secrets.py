"""Secrets stay out of job records, audit events, logs and admin pages.

Password hashes travel inside packages exported with passwords=true, never in
what a job records about itself. Database and storage credentials never reach a
job's error, log, events or the log files, whatever an error message contains.
"""
from __future__ import annotations

import logging
import zipfile

import psycopg
import pytest
from django.core.files.storage import storages
from django.db import OperationalError
from django.urls import reverse

from aip import storage as aip_storage_module
from aip.models import Job, JobEvent
from aip.services import audit
from aip.services.jobs import job_create, job_run
from config.settings import aip_s3_storage
from repository.models import EPerson
from repository.passwords import dspace_hash_new
from tests.aip.conftest import ADMIN_EMAIL
from tests.aip.s3server import S3Server, free_port

SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"
ACCESS_KEY = "AKIASECRETSTESTKEY77"
SECRET_KEY = "secrets-test-7c1e9b2d4f6a8c0e2b4d"
DATABASE_PASSWORD = "db-pass-5d8f2a9c71e3"


@pytest.fixture(autouse=True)
def _all_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="aip")
    caplog.set_level(logging.DEBUG, logger="repository")
    return caplog


def recorded_text(job: Job, client=None) -> str:
    """Everything the job left behind: its row, its events, and its admin page when a client is given."""
    job.refresh_from_db()
    events = JobEvent.objects.filter(job=job).values_list("actor", "handle", "uuid", "package", "detail")
    parts = [job.log, job.error, job.result_path, str(job.options), *(" ".join(row) for row in events)]
    if client is not None:
        parts.append(client.get(reverse("admin:aip_job_change", args=[job.pk])).content.decode())
    return "\n".join(parts)


def site_export_job(tmp_path, **arguments) -> Job:
    return job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, path=tmp_path / SITE_PACKAGE,
        recursive=True, **arguments,
    )


def test_site_export_with_passwords_records_no_hash(demo, tmp_path, client, admin, caplog):
    # People restored from DSpace keep their DSpace password hash; two of them here.
    for email in ("first@example.org", "second@example.org"):
        digest, algorithm, salt = dspace_hash_new(f"password of {email}")
        EPerson.objects.create(
            email=email, password_hash=digest, password_salt=salt, password_digest_algorithm=algorithm
        )
    hashes = list(EPerson.objects.exclude(password_hash="").values_list("password_hash", flat=True))

    job = job_run(site_export_job(tmp_path, options={"passwords": "true"}).pk)

    with zipfile.ZipFile(tmp_path / SITE_PACKAGE) as package:
        manifest = package.read("mets.xml").decode()
    client.force_login(admin.user)
    recorded = recorded_text(job, client)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert hashes and all(password_hash in manifest for password_hash in hashes), "the export left out the hashes"
    assert JobEvent.objects.filter(job=job, action=JobEvent.Action.EXPORTED).count() > 5
    for password_hash in hashes:
        assert password_hash not in recorded
        assert password_hash not in caplog.text


def test_unreachable_database_error_records_no_password(demo, tmp_path, monkeypatch, client, admin, caplog):
    port = free_port()

    def export_from_unreachable_database(**arguments):
        # A real driver error: nothing listens on the port.
        try:
            psycopg.connect(f"postgresql://aip:{DATABASE_PASSWORD}@127.0.0.1:{port}/aip", connect_timeout=5)
        except psycopg.OperationalError as error:
            raise OperationalError(str(error)) from error

    monkeypatch.setattr("aip.services.jobs.object_export", export_from_unreachable_database)

    job = job_run(site_export_job(tmp_path).pk)

    client.force_login(admin.user)
    recorded = recorded_text(job, client)
    assert job.state == Job.State.FAILED
    assert job.error.startswith("OperationalError: ")
    assert str(port) in job.error
    assert DATABASE_PASSWORD not in recorded
    assert DATABASE_PASSWORD not in caplog.text


def test_database_error_quoting_credentials_is_redacted(demo, tmp_path, monkeypatch, client, admin, caplog):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)

    def export_with_talkative_driver(**arguments):
        # Some drivers and proxies quote the connection string they used, as this stand-in does.
        raise OperationalError(
            f"could not connect with postgres://aip:{DATABASE_PASSWORD}@127.0.0.1:1/aip; "
            f"S3 signing used {SECRET_KEY}"
        )

    monkeypatch.setattr("aip.services.jobs.object_export", export_with_talkative_driver)

    job = job_run(site_export_job(tmp_path).pk)

    client.force_login(admin.user)
    recorded = recorded_text(job, client)
    assert job.state == Job.State.FAILED
    assert "postgres://aip:[redacted]@127.0.0.1:1/aip" in job.error
    assert f"used {audit.REDACTED}" in job.error
    for secret in (DATABASE_PASSWORD, SECRET_KEY):
        assert secret not in recorded
        assert secret not in caplog.text
    assert any(record.exc_info for record in caplog.records), "the traceback is still logged"


def test_storage_error_records_no_credentials(demo, monkeypatch, tmp_path, client, admin, caplog):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(aip_storage_module, "RETRY_DELAY", 0.01)
    server = S3Server()
    server.start()
    entry = aip_s3_storage({
        "AIP_S3_BUCKET": "aips-secrets", "AIP_S3_ENDPOINT_URL": server.endpoint_url, "AIP_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    })
    monkeypatch.setitem(storages.backends, "aips", entry)
    monkeypatch.setitem(storages._storages, "aips", storages.create_storage(entry))
    job = job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, storage="aips",
        path=f"exports/{SITE_PACKAGE}", recursive=True,
    )
    # The service goes away before the export publishes its packages.
    server.stop()

    job = job_run(job.pk)

    client.force_login(admin.user)
    recorded = recorded_text(job, client)
    assert job.state == Job.State.FAILED
    assert "storage 'aips'" in job.error
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in recorded
        assert secret not in caplog.text


def test_redact_removes_hash_shapes_and_url_passwords():
    text = (
        "hash " + "ab12" * 32 + " django pbkdf2_sha256$600000$salt$c2VjcmV0 "
        "url redis://:redis-pass@127.0.0.1:6379/0 and s3://key:value@bucket md5 " + "0" * 32
    )
    cleaned = audit.redact(text)
    assert "ab12" * 32 not in cleaned
    assert "pbkdf2_sha256$" not in cleaned
    assert "redis-pass" not in cleaned
    assert ":value@" not in cleaned
    # A 32-digit MD5 is no secret and stays, so that checksums in logs remain useful.
    assert "0" * 32 in cleaned

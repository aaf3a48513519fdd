"""A site AIP over a live installation: who becomes an administrator and whose password changes.

Only replace mode may change either, and its job log names every such change.
"""
from __future__ import annotations

import pytest

from aip.models import Job
from aip.services.jobs import job_create, job_run
from repository.models import EPerson, Group
from repository.passwords import dspace_hash_new
from tests.aip.conftest import ADMIN_EMAIL, packager

SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"
DEPUTY = "deputy@example.org"
READER = "reader@example.org"


@pytest.fixture
def site_package(demo, tmp_path):
    """A site AIP with password hashes in which the deputy is an administrator."""
    deputy = _person(DEPUTY, "deputy-password")
    _person(READER, "reader-password")
    Group.objects.get(name=Group.ADMINISTRATOR).members.add(deputy)
    path = tmp_path / SITE_PACKAGE
    packager("-d", "-a", "-o", "passwords=true", "-i", SITE_HANDLE, str(path))
    # After the backup, the live installation demotes the deputy and the reader changes password.
    Group.objects.get(name=Group.ADMINISTRATOR).members.remove(deputy)
    reader = EPerson.objects.get(email=READER)
    reader.password_hash, reader.password_digest_algorithm, reader.password_salt = dspace_hash_new("new-password")
    reader.save()
    return path


def _person(email: str, password: str) -> EPerson:
    password_hash, algorithm, salt = dspace_hash_new(password)
    return EPerson.objects.create(
        email=email, password_hash=password_hash, password_digest_algorithm=algorithm, password_salt=salt
    )


def _site_job(kind: str, path, *, keep_existing: bool = False) -> Job:
    job = job_create(
        kind=kind, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE if kind == Job.Kind.REPLACE else "",
        path=path, recursive=True, keep_existing=keep_existing,
    )
    return job_run(job.pk)


def _is_administrator(email: str) -> bool:
    return Group.objects.get(name=Group.ADMINISTRATOR).members.filter(email=email).exists()


def test_replace_logs_new_administrator_and_password(site_package):
    job = _site_job(Job.Kind.REPLACE, site_package)

    assert job.state == Job.State.SUCCEEDED, job.error
    assert _is_administrator(DEPUTY)
    assert EPerson.objects.get(email=READER).check_password("reader-password")
    assert f"EPerson {DEPUTY} made an administrator" in job.log
    assert f"EPerson {READER} updated (password changed)" in job.log
    assert f"EPerson {ADMIN_EMAIL} made an administrator" not in job.log


def test_keep_existing_changes_no_administrator_or_password(site_package):
    job = _site_job(Job.Kind.RESTORE, site_package, keep_existing=True)

    assert job.state == Job.State.SUCCEEDED, job.error
    assert not _is_administrator(DEPUTY)
    assert EPerson.objects.get(email=READER).check_password("new-password")
    assert "made an administrator" not in job.log
    assert "password changed" not in job.log


def test_plain_restore_of_site_changes_nothing(site_package):
    job = _site_job(Job.Kind.RESTORE, site_package)

    assert job.state == Job.State.FAILED
    assert "Group Administrator already exists" in job.error
    assert not _is_administrator(DEPUTY)
    assert EPerson.objects.get(email=READER).check_password("new-password")

"""The admin's "Verify AIP" page: it queues a verify job and shows its outcome."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from aip.models import Job
from tests.aip.conftest import ADMIN_EMAIL, export_site


@pytest.fixture
def admin_login(client, admin):
    client.force_login(admin.user)
    return client


@pytest.fixture
def site_export(demo, tmp_path):
    return export_site(tmp_path / "export")


@pytest.mark.django_db
def test_verify_page_renders(admin_login):
    response = admin_login.get(reverse("admin:aip_job_verify"))

    assert response.status_code == 200
    assert b"Verify AIP" in response.content


@pytest.mark.django_db
def test_job_list_links_verify(admin_login):
    response = admin_login.get(reverse("admin:aip_job_changelist"))

    assert reverse("admin:aip_job_verify").encode() in response.content


@pytest.mark.django_db
def test_verify_path_tree_succeeds(admin_login, site_export, settings, tmp_path):
    settings.REDIS_URL = ""
    settings.AIP_SERVER_ROOTS = [tmp_path]

    response = admin_login.post(reverse("admin:aip_job_verify"), {"path": str(site_export), "recursive": "on"})

    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:aip_job_change", args=[job.pk])
    assert job.kind == Job.Kind.VERIFY
    assert job.state == Job.State.SUCCEEDED
    assert job.eperson_email == ADMIN_EMAIL
    assert job.path == str(site_export.resolve())
    assert [str(message) for message in get_messages(response.wsgi_request)] == [
        f"Verify job {job.pk} for {site_export.name} ran in this request (REDIS_URL is not set) and succeeded."
    ]


@pytest.mark.django_db
def test_verify_upload_damaged_fails(admin_login, site_export, settings, tmp_path):
    settings.REDIS_URL = ""
    settings.VAR_DIR = tmp_path / "var"
    item_package = sorted(site_export.parent.glob("ITEM@*.zip"))[0]
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(item_package) as source, zipfile.ZipFile(damaged, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(".pdf"):
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            target.writestr(info.filename, data)

    with damaged.open("rb") as upload:
        admin_login.post(reverse("admin:aip_job_verify"), {"upload": upload})

    job = Job.objects.get()
    assert job.state == Job.State.FAILED
    assert "MD5" in job.log


@pytest.fixture
def server_roots(settings, tmp_path) -> Path:
    """Allow server paths under one empty folder, and return it."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    settings.AIP_SERVER_ROOTS = [allowed]
    return allowed


@pytest.mark.django_db
def test_verify_path_outside_roots_rejected(admin_login, server_roots):
    response = admin_login.post(reverse("admin:aip_job_verify"), {"path": "/etc/passwd"})

    text = response.content.decode()
    assert response.status_code == 200
    assert "&#x27;/etc/passwd&#x27; is outside the folders that server paths may name" in text
    assert str(server_roots.resolve()) in text
    assert "AIP_SERVER_ROOTS" in text
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_verify_path_dotdot_rejected(admin_login, server_roots, tmp_path):
    outside = tmp_path / "SITE@123456789-0.zip"
    outside.write_bytes(b"PK")
    path = f"{server_roots}/../{outside.name}"

    response = admin_login.post(reverse("admin:aip_job_verify"), {"path": path})

    assert f"&#x27;{path}&#x27; is outside the folders".encode() in response.content
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_verify_relative_path_rejected(admin_login, server_roots, monkeypatch):
    monkeypatch.chdir(server_roots)

    response = admin_login.post(reverse("admin:aip_job_verify"), {"path": "SITE@123456789-0.zip"})

    assert b"&#x27;SITE@123456789-0.zip&#x27; is not a full path" in response.content
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_verify_path_symlink_out_rejected(admin_login, server_roots):
    link = server_roots / "SITE@123456789-0.zip"
    link.symlink_to("/etc/passwd")
    folder_link = server_roots / "etc"
    folder_link.symlink_to("/etc")

    through_file = admin_login.post(reverse("admin:aip_job_verify"), {"path": str(link)})
    through_folder = admin_login.post(reverse("admin:aip_job_verify"), {"path": str(folder_link / "passwd")})

    assert b"is outside the folders that server paths may name" in through_file.content
    assert b"is outside the folders that server paths may name" in through_folder.content
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_verify_path_inside_roots_queued(admin_login, server_roots, settings):
    settings.REDIS_URL = ""
    missing = server_roots / "sub" / "ITEM@123456789-7.zip"

    response = admin_login.post(reverse("admin:aip_job_verify"), {"path": str(missing)})

    job = Job.objects.get()
    assert response.status_code == 302
    assert job.path == str(missing.resolve())
    assert job.state == Job.State.FAILED
    messages = [str(message) for message in get_messages(response.wsgi_request)]
    assert messages == [
        f"Verify job {job.pk} for {missing.name} ran in this request (REDIS_URL is not set) and failed: {job.error}"
    ]


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (None, "[PosixPath('/srv/var')]"),
        ("/srv/aips, /mnt/backups,", "[PosixPath('/srv/aips'), PosixPath('/mnt/backups')]"),
    ],
)
def test_server_roots_setting(environment, expected):
    # The settings module is read in a new process, because this one has already loaded it.
    env = {key: value for key, value in os.environ.items() if key != "AIP_SERVER_ROOTS"}
    env["VAR_DIR"] = "/srv/var"
    if environment is not None:
        env["AIP_SERVER_ROOTS"] = environment
    code = "import config.settings as settings; print(settings.AIP_SERVER_ROOTS)"

    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == expected

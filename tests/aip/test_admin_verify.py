"""The admin's "Verify AIP" page: it queues a verify job and shows its outcome."""
import zipfile

import pytest
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
def test_verify_path_tree_succeeds(admin_login, site_export, settings):
    settings.REDIS_URL = ""

    response = admin_login.post(reverse("admin:aip_job_verify"), {"path": str(site_export), "recursive": "on"})

    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:aip_job_change", args=[job.pk])
    assert job.kind == Job.Kind.VERIFY
    assert job.state == Job.State.SUCCEEDED
    assert job.eperson_email == ADMIN_EMAIL


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


@pytest.mark.django_db
def test_verify_needs_one_source(admin_login, site_export):
    response = admin_login.post(reverse("admin:aip_job_verify"), {})

    assert response.status_code == 200
    assert b"Give either a package path on the server or an uploaded package" in response.content
    assert not Job.objects.exists()

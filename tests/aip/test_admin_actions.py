"""Admin pages and actions that queue AIP jobs: export, site backup, restore, replace, verify,
retry, cancel, progress and download, with their permissions and LogEntry records.

REDIS_URL is unset here, so every queued job runs at once in the request and its
outcome (a package in the "aips" storage, a restored object) can be checked.
"""
from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import get_messages
from django.core.files.storage import storages
from django.http import FileResponse
from django.urls import reverse

from aip.admin_views import upload_file_name
from aip.models import Job
from aip.services.jobs import job_create
from repository.models import Bitstream, Collection, Community, EPerson, Group, Item, Site
from tests.aip.conftest import ADMIN_EMAIL, packager, rq_default_queue

SITE_HANDLE = "123456789/0"
REDIS_TEST_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def aips(settings, tmp_path) -> Path:
    """Point the "aips" storage at an empty folder for this test and return that folder.

    The storage object is changed in place, because overriding STORAGES would make Django
    rebuild every storage, and so drop the per-test bitstream storage.
    """
    root = tmp_path / "aips"
    root.mkdir()
    settings.REDIS_URL = ""
    storage = storages["aips"]
    previous = storage._location
    storage._location = str(root)
    storage.__dict__.pop("base_location", None)
    storage.__dict__.pop("location", None)
    yield root
    storage._location = previous
    storage.__dict__.pop("base_location", None)
    storage.__dict__.pop("location", None)


@pytest.fixture
def admin_client(client, admin, aips):
    client.force_login(admin.user)
    return client


def staff_client(client, *permissions: str, eperson: bool = False):
    """Log in a staff user (not a superuser) with only ``permissions`` ("app.codename")."""
    user = get_user_model().objects.create_user("staff@example.org", password="staff-password", is_staff=True)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    if eperson:
        person = EPerson.objects.create(email="staff@example.org", user=user, can_log_in=True)
        Group.objects.get(name=Group.ADMINISTRATOR).members.add(person)
    client.force_login(user)
    return client


def stored(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def shown_messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def job_log_entries(job: Job, flag: int) -> list[LogEntry]:
    content_type = ContentType.objects.get_for_model(Job)
    return list(LogEntry.objects.filter(content_type=content_type, object_id=str(job.pk), action_flag=flag))


def action_post(client, model: str, action: str, objects: list, **fields):
    data = {"action": action, "_selected_action": [obj.pk for obj in objects], "index": 0, **fields}
    return client.post(reverse(f"admin:repository_{model}_changelist"), data)


def item_with_files() -> Item:
    items = Item.objects.filter(bundles__bitstreams__isnull=False, withdrawn=False, handle__isnull=False)
    return items.distinct().order_by("pk").first()


def stored_item_package(aips: Path, tmp_path: Path, item: Item, folder: str = "saved") -> str:
    """Export ``item`` with the packager and copy its package into the "aips" storage; return its name."""
    local = tmp_path / "export" / f"ITEM@{item.handle_string.replace('/', '-')}.zip"
    packager("-d", "-i", item.handle_string, str(local))
    target = aips / folder / local.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(local, target)
    return f"{folder}/{local.name}"


# --- export and backup ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_export_action_shows_options(admin_client, demo):
    community = Community.objects.order_by("pk").first()

    response = action_post(admin_client, "community", "export_aip", [community])

    assert response.status_code == 200
    assert b"Include password hashes (passwords=true)" in response.content
    assert community.handle_string.encode() in response.content
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_export_action_queues_one_job_each(admin_client, demo, aips, admin):
    items = list(Item.objects.filter(withdrawn=False, handle__isnull=False).order_by("pk")[:2])

    response = action_post(admin_client, "item", "export_aip", items, apply="yes")

    jobs = list(Job.objects.order_by("pk"))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:aip_job_changelist")
    assert [job.handle for job in jobs] == [item.handle_string for item in items]
    for job in jobs:
        assert job.kind == Job.Kind.EXPORT
        assert job.state == Job.State.SUCCEEDED, job.error
        assert job.storage == "aips"
        assert job.user == admin.user
        assert job.recursive is False
        assert job.path.startswith("exports/")
        assert (aips / job.result_path).is_file()
        assert len(job_log_entries(job, ADDITION)) == 1
    names = [f"ITEM@{item.handle_string.replace('/', '-')}.zip" for item in items]
    assert [name.rsplit("/", 1)[1] for name in stored(aips)] == sorted(names)
    assert shown_messages(response) == [
        f"Export job {job.pk} for {job.handle} ran in this request (REDIS_URL is not set) and succeeded: "
        f"{job.result_path}"
        for job in jobs
    ]


@pytest.mark.django_db
def test_export_recursive_writes_tree(admin_client, demo, aips):
    collection = Collection.objects.filter(owned_items__isnull=False).distinct().order_by("pk").first()
    items = Item.objects.filter(owning_collection=collection).count()

    action_post(admin_client, "collection", "export_aip_recursive", [collection], apply="yes", passwords="on")

    job = Job.objects.get()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.recursive is True
    assert job.options == {"passwords": "true"}
    packages = stored(aips)
    assert job.result_path in packages
    assert len([name for name in packages if "/ITEM@" in name]) >= items


@pytest.mark.django_db
def test_export_recursive_split_into_parts(admin_client, demo, aips):
    collection = Collection.objects.filter(owned_items__isnull=False).distinct().order_by("pk").first()

    action_post(admin_client, "collection", "export_aip_recursive", [collection], apply="yes", parts="2")

    job = Job.objects.get(parent__isnull=True)
    packages = stored(aips)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.part_count == 2
    assert job.parts.count() == 2
    assert job.result_path in packages
    assert len([name for name in packages if "/ITEM@" in name]) == sum(len(part.batch) for part in job.parts.all())


@pytest.mark.django_db
def test_export_single_object_has_no_parts_field(admin_client, demo):
    item = Item.objects.filter(withdrawn=False, handle__isnull=False).order_by("pk").first()

    response = action_post(admin_client, "item", "export_aip", [item])

    assert b"Include password hashes" in response.content
    assert b"Split into part jobs" not in response.content


@pytest.mark.django_db
def test_export_invalid_option_is_form_error(admin_client, demo):
    item = item_with_files()

    response = action_post(admin_client, "item", "export_aip", [item], apply="yes", updated_after="yesterday")

    assert response.status_code == 200
    assert b"Option updatedAfter must be an ISO-8601 date" in response.content
    assert b"&#x27;yesterday&#x27;" in response.content
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_backup_page_exports_site(admin_client, demo, aips):
    page = admin_client.get(reverse("admin:aip_job_backup"))
    response = admin_client.post(reverse("admin:aip_job_backup"), {"apply": "yes"})

    job = Job.objects.get()
    assert page.status_code == 200
    assert response.status_code == 302
    assert job.handle == SITE_HANDLE
    assert job.recursive is True
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result_path.endswith("/SITE@123456789-0.zip")
    assert (aips / job.result_path).is_file()
    assert len(stored(aips)) > 10
    assert shown_messages(response) == [
        f"Export job {job.pk} for {SITE_HANDLE} ran in this request (REDIS_URL is not set) and succeeded: "
        f"{job.result_path}"
    ]


@pytest.mark.django_db
def test_site_admin_backup_action(admin_client, demo, aips):
    site = Site.objects.get()

    response = action_post(admin_client, "site", "backup_site", [site], apply="yes")

    job = Job.objects.get()
    assert response.status_code == 302
    assert job.handle == SITE_HANDLE
    assert job.recursive is True
    assert job.state == Job.State.SUCCEEDED, job.error


@pytest.mark.django_db
def test_export_without_eperson_is_rejected(client, demo, aips):
    client = staff_client(client, "repository.view_item", "aip.export_aip", "aip.view_job")
    item = item_with_files()

    response = action_post(client, "item", "export_aip", [item], apply="yes")

    assert response.status_code == 200
    assert not Job.objects.exists()
    assert stored(aips) == []


# --- restore, submit and replace ------------------------------------------------------------------


@pytest.mark.django_db
def test_restore_page_lists_stored_packages(admin_client, demo, aips, tmp_path):
    name = stored_item_package(aips, tmp_path, item_with_files(), folder="backups/one")

    response = admin_client.get(reverse("admin:aip_job_restore"))

    assert response.status_code == 200
    assert f'<option value="{name}">'.encode() in response.content


@pytest.mark.django_db
def test_submit_upload_creates_item(admin_client, demo, aips, tmp_path):
    item = item_with_files()
    name = stored_item_package(aips, tmp_path, item)
    copies_before = Item.objects.filter(name=item.name).count()

    with (aips / name).open("rb") as upload:
        response = admin_client.post(
            reverse("admin:aip_job_restore"),
            {"upload": upload, "mode": "submit", "parent_handle": item.owning_collection.handle_string,
             "create_metadata_fields": "on"},
        )

    job = Job.objects.get()
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == reverse("admin:aip_job_change", args=[job.pk])
    assert job.kind == Job.Kind.SUBMIT
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.storage == "aips"
    assert job.path.startswith("uploads/")
    assert (aips / job.path).read_bytes() == (aips / name).read_bytes()
    assert Item.objects.filter(name=item.name).count() == copies_before + 1
    assert len(job_log_entries(job, ADDITION)) == 1


@pytest.mark.parametrize("ticked", [True, False])
def test_submit_workflow_checkbox_reaches_job(admin_client, demo, aips, tmp_path, ticked):
    item = item_with_files()
    name = stored_item_package(aips, tmp_path, item)
    form = {"stored": name, "mode": "submit", "parent_handle": item.owning_collection.handle_string,
            "create_metadata_fields": "on"}
    if ticked:
        form["use_workflow"] = "on"

    page = admin_client.get(reverse("admin:aip_job_restore"))
    admin_client.post(reverse("admin:aip_job_restore"), form)

    assert 'name="use_workflow"' in page.content.decode()
    assert Job.objects.get().use_workflow is ticked


@pytest.mark.django_db
def test_upload_keeps_package_name(admin_client, demo, aips, tmp_path):
    item = item_with_files()
    name = stored_item_package(aips, tmp_path, item)
    upload_name = f"ITEM@{item.handle_string.replace('/', '-')}.zip"

    with (aips / name).open("rb") as upload:
        admin_client.post(
            reverse("admin:aip_job_restore"),
            {"upload": upload, "mode": "submit", "parent_handle": item.owning_collection.handle_string},
        )

    job = Job.objects.get()
    assert Path(name).name == upload_name
    assert job.path.startswith("uploads/")
    assert job.path.rsplit("/", 1)[1] == upload_name


@pytest.mark.parametrize(
    ("uploaded", "stored_as"),
    [
        ("ITEM@123456789-13.zip", "ITEM@123456789-13.zip"),
        ("COLLECTION@123456789-4_v2.zip", "COLLECTION@123456789-4_v2.zip"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\ITEM@1-2.zip", "ITEM@1-2.zip"),
        ("my package (1).zip", "my_package__1_.zip"),
        ("ITEM@1..zip", "ITEM@1.zip"),
        ("..", "package.zip"),
        (".hidden.zip", "hidden.zip"),
        ("", "package.zip"),
    ],
)
def test_upload_file_name_cleaning(uploaded, stored_as):
    assert upload_file_name(uploaded) == stored_as


@pytest.mark.django_db
def test_restore_keep_existing_skips(admin_client, demo, aips, tmp_path):
    name = stored_item_package(aips, tmp_path, item_with_files())
    items_before = Item.objects.count()

    admin_client.post(
        reverse("admin:aip_job_restore"), {"stored": name, "mode": "keep", "create_metadata_fields": "on"}
    )

    job = Job.objects.get()
    assert job.kind == Job.Kind.RESTORE
    assert job.keep_existing is True
    assert job.state == Job.State.SUCCEEDED, job.error
    assert "Skipped ITEM" in job.log
    assert Item.objects.count() == items_before


@pytest.mark.django_db
def test_restore_failed_in_request_says_so(admin_client, demo, aips, tmp_path):
    name = stored_item_package(aips, tmp_path, item_with_files())

    response = admin_client.post(
        reverse("admin:aip_job_restore"), {"stored": name, "mode": "restore", "create_metadata_fields": "on"}
    )

    job = Job.objects.get()
    assert job.state == Job.State.FAILED
    assert "already exists" in job.error
    assert shown_messages(response) == [
        f"Restore job {job.pk} for {name} ran in this request (REDIS_URL is not set) and failed: {job.error}"
    ]


@pytest.mark.django_db
def test_restore_needs_a_package(admin_client):
    response = admin_client.post(reverse("admin:aip_job_restore"), {"mode": "restore"})

    assert response.status_code == 200
    assert b"Upload a package or pick one from the" in response.content
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_restore_form_error_shown_once(admin_client):
    response = admin_client.post(reverse("admin:aip_job_restore"), {"mode": "restore"})

    text = response.content.decode()
    assert text.count("Upload a package or pick one from the") == 1
    assert text.count('class="errorlist nonfield"') == 1


@pytest.mark.django_db
def test_export_form_error_shown_once(admin_client, demo):
    item = item_with_files()

    response = action_post(
        admin_client, "item", "export_aip", [item], apply="yes", filter_bundles="TEXT", include_bundles="ORIGINAL"
    )

    text = response.content.decode()
    assert response.status_code == 200
    assert text.count('class="errorlist nonfield"') == 1
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_restore_upload_not_aip(admin_client, demo, aips, tmp_path):
    bad = tmp_path / "notes.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("readme.txt", "not a METS package")

    with bad.open("rb") as upload:
        response = admin_client.post(reverse("admin:aip_job_restore"), {"upload": upload, "mode": "restore"})

    assert response.status_code == 200
    assert b"&#x27;notes.zip&#x27; cannot be used" in response.content
    assert b"has no mets.xml" in response.content
    assert not Job.objects.exists()
    assert stored(aips) == []


@pytest.mark.django_db
def test_restore_unknown_parent(admin_client, demo, aips, tmp_path):
    name = stored_item_package(aips, tmp_path, item_with_files())

    response = admin_client.post(
        reverse("admin:aip_job_restore"), {"stored": name, "mode": "submit", "parent_handle": "123456789/99999"}
    )

    assert response.status_code == 200
    assert b"No object has the handle &#x27;123456789/99999&#x27;" in response.content
    assert not Job.objects.exists()


@pytest.mark.parametrize("handle", ["123456789/999", "nohandle"])
@pytest.mark.parametrize("mode", ["submit", "restore"])
@pytest.mark.django_db
def test_restore_unknown_parent_one_error(admin_client, demo, aips, tmp_path, handle, mode):
    name = stored_item_package(aips, tmp_path, item_with_files())

    response = admin_client.post(
        reverse("admin:aip_job_restore"),
        {"stored": name, "mode": mode, "parent_handle": handle, "ignore_parent": "true"},
    )

    text = response.content.decode()
    assert f"No object has the handle &#x27;{handle}&#x27;" in text
    assert "Submit needs a parent handle" not in text
    assert "none is given" not in text
    assert text.count('class="errorlist"') == 1
    assert not Job.objects.exists()


@pytest.mark.parametrize("mode", ["restore", "keep", "replace"])
@pytest.mark.django_db
def test_restore_ignore_parent_needs_handle(admin_client, demo, aips, tmp_path, mode):
    name = stored_item_package(aips, tmp_path, item_with_files())

    response = admin_client.post(
        reverse("admin:aip_job_restore"), {"stored": name, "mode": mode, "ignore_parent": "true", "confirm": "yes"}
    )

    assert response.status_code == 200
    assert b"ignoreParent=true places the package under the parent handle given here, but none is given" in (
        response.content
    )
    assert not Job.objects.exists()


@pytest.mark.parametrize("mode", ["submit", "restore", "replace"])
@pytest.mark.django_db
def test_restore_item_under_item_rejected(admin_client, demo, aips, tmp_path, mode):
    item = item_with_files()
    name = stored_item_package(aips, tmp_path, item)
    other = Item.objects.filter(handle__isnull=False).exclude(pk=item.pk).order_by("pk").first()
    items_before = Item.objects.count()

    response = admin_client.post(
        reverse("admin:aip_job_restore"),
        {"stored": name, "mode": mode, "parent_handle": other.handle_string, "ignore_parent": "true",
         "confirm": "yes"},
    )

    text = response.content.decode()
    assert response.status_code == 200
    assert f"Its parent &#x27;{other.handle_string}&#x27; is of type ITEM" in text
    assert "ITEM packages can only be placed under COLLECTION." in text
    assert not Job.objects.exists()
    assert Item.objects.count() == items_before


@pytest.mark.django_db
def test_submit_community_under_collection_rejected(admin_client, demo, aips, tmp_path):
    community = Community.objects.filter(handle__isnull=False).order_by("pk").first()
    collection = Collection.objects.filter(handle__isnull=False).order_by("pk").first()
    local = tmp_path / "export" / "COMMUNITY.zip"
    packager("-d", "-i", community.handle_string, str(local))
    (aips / "saved").mkdir()
    shutil.copyfile(local, aips / "saved" / "COMMUNITY.zip")

    response = admin_client.post(
        reverse("admin:aip_job_restore"),
        {"stored": "saved/COMMUNITY.zip", "mode": "submit", "parent_handle": collection.handle_string},
    )

    text = response.content.decode()
    assert f"Its parent &#x27;{collection.handle_string}&#x27; is of type COLLECTION" in text
    assert "COMMUNITY packages can only be placed under SITE or COMMUNITY." in text
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_restore_missing_stored_package(admin_client, demo, aips):
    response = admin_client.post(reverse("admin:aip_job_restore"), {"stored": "saved/ITEM@1-1.zip", "mode": "restore"})

    assert response.status_code == 200
    assert b"&#x27;saved/ITEM@1-1.zip&#x27; cannot be used" in response.content
    assert b"was not found" in response.content
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_replace_shows_counts_then_confirms(admin_client, demo, aips, tmp_path):
    item = item_with_files()
    name = stored_item_package(aips, tmp_path, item)
    files = Bitstream.objects.filter(bundle__item=item)
    size = sum(files.values_list("size_bytes", flat=True))
    title = item.name
    Item.objects.filter(pk=item.pk).update(name="Changed before replace")
    form = {"stored": name, "mode": "replace", "create_metadata_fields": "on"}

    confirm = admin_client.post(reverse("admin:aip_job_restore"), form)

    text = confirm.content.decode()
    assert confirm.status_code == 200
    assert "Changed before replace" in text
    assert f"<th scope=\"row\">Bitstreams</th><td>{files.count()}</td>" in text
    assert f"<th scope=\"row\">Bytes</th><td>{size} (" in text
    assert '<input type="hidden" name="confirm" value="yes">' in text
    assert not Job.objects.exists()
    assert Item.objects.get(pk=item.pk).name == "Changed before replace"

    response = admin_client.post(reverse("admin:aip_job_restore"), {**form, "confirm": "yes"})

    job = Job.objects.get()
    assert response.status_code == 302
    assert job.kind == Job.Kind.REPLACE
    assert job.handle == item.handle_string
    assert job.state == Job.State.SUCCEEDED, job.error
    assert Item.objects.get(pk=item.pk).name == title
    assert shown_messages(response) == [
        f"Replace job {job.pk} for {name} ran in this request (REDIS_URL is not set) and succeeded."
    ]


def hidden_value(text: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = text.index(marker) + len(marker)
    return text[start:text.index('"', start)]


@pytest.mark.django_db
def test_replace_go_back_deletes_upload(admin_client, demo, aips, tmp_path):
    name = stored_item_package(aips, tmp_path, item_with_files())

    with (aips / name).open("rb") as upload:
        confirm = admin_client.post(
            reverse("admin:aip_job_restore"), {"upload": upload, "mode": "replace", "create_metadata_fields": "on"}
        )
    uploaded = hidden_value(confirm.content.decode(), "stored")
    token = hidden_value(confirm.content.decode(), "upload_token")
    before = stored(aips)
    response = admin_client.post(reverse("admin:aip_job_restore"), {"back": "yes", "upload_token": token})

    assert uploaded.startswith("uploads/")
    assert before == sorted([name, uploaded])
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:aip_job_restore")
    assert stored(aips) == [name]
    assert not (aips / uploaded).parent.exists()
    assert shown_messages(response) == [f"Nothing was replaced; the uploaded package {uploaded} was deleted."]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_replace_go_back_keeps_stored(admin_client, demo, aips, tmp_path):
    # A package picked from the storage stays, even one in uploads/ and with its name posted as a token.
    name = stored_item_package(aips, tmp_path, item_with_files(), folder="uploads/20250101T000000Z-abcdef")

    confirm = admin_client.post(
        reverse("admin:aip_job_restore"), {"stored": name, "mode": "replace", "create_metadata_fields": "on"}
    )
    plain = admin_client.post(reverse("admin:aip_job_restore"), {"back": "yes"})
    forged = admin_client.post(reverse("admin:aip_job_restore"), {"back": "yes", "upload_token": name})

    assert 'name="upload_token"' not in confirm.content.decode()
    assert plain.status_code == 302
    assert forged.status_code == 302
    assert stored(aips) == [name]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_replace_summary_counts_collection(admin_client, demo, aips, tmp_path):
    collection = Collection.objects.filter(owned_items__isnull=False).distinct().order_by("pk").first()
    folder = tmp_path / "collection"
    packager("-d", "-i", collection.handle_string, str(folder / "COLLECTION.zip"))
    (aips / "saved").mkdir()
    shutil.copyfile(folder / "COLLECTION.zip", aips / "saved" / "COLLECTION.zip")
    items = Item.objects.filter(owning_collection=collection)
    files = Bitstream.objects.filter(bundle__item__in=items).count() + (1 if collection.logo_id else 0)

    response = admin_client.post(
        reverse("admin:aip_job_restore"), {"stored": "saved/COLLECTION.zip", "mode": "replace", "recursive": "on"}
    )

    text = response.content.decode()
    assert f"<th scope=\"row\">Items</th><td>{items.count()}</td>" in text
    assert f"<th scope=\"row\">Bitstreams</th><td>{files}</td>" in text
    assert "<th scope=\"row\">Collections</th><td>0</td>" in text
    assert not Job.objects.exists()


# --- verify ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_verify_stored_backup_folder(admin_client, demo, aips):
    admin_client.post(reverse("admin:aip_job_backup"), {"apply": "yes"})
    backup = Job.objects.get()

    response = admin_client.post(reverse("admin:aip_job_verify"), {"stored": backup.result_path, "recursive": "on"})

    job = Job.objects.filter(kind=Job.Kind.VERIFY).get()
    assert response.status_code == 302
    assert job.storage == "aips"
    assert job.path == backup.result_path
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.objects_done == backup.objects_done
    # The backup's own message was not shown yet, because its redirect was not followed.
    assert shown_messages(response)[-1] == (
        f"Verify job {job.pk} for SITE@123456789-0.zip ran in this request (REDIS_URL is not set) and succeeded."
    )


# --- progress, cancel, retry and download ---------------------------------------------------------


@pytest.mark.django_db
def test_progress_endpoint_json(admin_client, admin):
    job = Job.objects.create(
        kind=Job.Kind.EXPORT, state=Job.State.RUNNING, eperson_email=ADMIN_EMAIL, path="exports/x/SITE.zip",
        objects_done=3, objects_total=12, bytes_done=2048, log="Wrote ITEM@1-1.zip\n",
    )

    single = admin_client.get(reverse("admin:aip_job_progress", args=[job.pk])).json()
    listed = admin_client.get(reverse("admin:aip_job_progress_list"), {"id": [job.pk, 999999]}).json()

    assert single["state"] == "running"
    assert single["finished"] is False
    assert single["objects_done"] == 3
    assert single["objects_total"] == 12
    assert single["bytes_done"] == 2048
    assert single["percent"] == 25
    assert single["text"] == "3 / 12 objects, 2.0\xa0KB"
    assert single["log"] == "Wrote ITEM@1-1.zip\n"
    assert [entry["id"] for entry in listed["jobs"]] == [job.pk]
    assert "log" not in listed["jobs"][0]


@pytest.mark.django_db
def test_progress_list_rejects_bad_ids(admin_client):
    response = admin_client.get(reverse("admin:aip_job_progress_list"), {"id": "abc"})

    assert response.status_code == 400
    assert "Invalid job ids" in response.json()["error"]


@pytest.mark.django_db
def test_cancel_queued_job(admin_client, admin, aips):
    job = job_create(kind=Job.Kind.VERIFY, eperson_email=ADMIN_EMAIL, path="saved/SITE.zip", storage="aips")

    page = admin_client.get(reverse("admin:aip_job_change", args=[job.pk]))
    response = admin_client.post(reverse("admin:aip_job_cancel", args=[job.pk]))

    job.refresh_from_db()
    assert reverse("admin:aip_job_cancel", args=[job.pk]).encode() in page.content
    assert response.status_code == 302
    assert job.state == Job.State.CANCELLED
    assert job.started_at is None
    assert [entry.user for entry in job_log_entries(job, CHANGE)] == [admin.user]


@pytest.fixture
def redis_queue(settings, aips):
    """The RQ "default" queue on Redis database 13, empty before and after the test; it replaces the in-process runs."""
    with rq_default_queue(settings, REDIS_TEST_URL) as queue:
        yield queue


@pytest.mark.django_db
def test_export_on_redis_then_cancel(admin_client, demo, aips, redis_queue, django_capture_on_commit_callbacks):
    # django-rq enqueues after the commit, and each test runs inside one transaction.
    with django_capture_on_commit_callbacks(execute=True):
        response = action_post(admin_client, "item", "export_aip", [item_with_files()], apply="yes")
    job = Job.objects.get()
    queued = redis_queue.count
    folder = job.path.rsplit("/", 1)[0]
    assert shown_messages(response) == [f'Queued 1 export job(s) writing to {folder} in the "aips" storage.']
    admin_client.post(reverse("admin:aip_job_cancel", args=[job.pk]))

    job.refresh_from_db()
    assert queued == 1
    assert job.state == Job.State.CANCELLED
    assert redis_queue.count == 0
    assert stored(aips) == []


@pytest.mark.django_db
def test_cancel_action_on_list(admin_client, admin, aips):
    jobs = [
        job_create(kind=Job.Kind.VERIFY, eperson_email=ADMIN_EMAIL, path=f"saved/{n}.zip", storage="aips")
        for n in range(2)
    ]

    admin_client.post(
        reverse("admin:aip_job_changelist"),
        {"action": "cancel_jobs", "_selected_action": [job.pk for job in jobs], "index": 0},
    )

    assert set(Job.objects.values_list("state", flat=True)) == {Job.State.CANCELLED}


@pytest.mark.django_db
def test_cancel_finished_job_reports_error(admin_client, admin, aips):
    job = Job.objects.create(kind=Job.Kind.VERIFY, state=Job.State.SUCCEEDED, eperson_email=ADMIN_EMAIL, path="x.zip")

    response = admin_client.post(reverse("admin:aip_job_cancel", args=[job.pk]), follow=True)

    assert b"only queued or running jobs can be cancelled" in response.content
    assert job_log_entries(job, CHANGE) == []


@pytest.mark.django_db
def test_retry_failed_export(admin_client, admin, demo, aips, tmp_path, monkeypatch):
    # A retry that lost the storage would resolve the package name against the working folder.
    monkeypatch.chdir(tmp_path)
    item = item_with_files()
    failed = job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=item.handle_string,
        path="exports/retry/ITEM.zip", storage="aips",
    )
    Job.objects.filter(pk=failed.pk).update(state=Job.State.FAILED, error="No heartbeat from worker w1")

    page = admin_client.get(reverse("admin:aip_job_change", args=[failed.pk]))
    response = admin_client.post(reverse("admin:aip_job_retry", args=[failed.pk]))

    retry = Job.objects.exclude(pk=failed.pk).get()
    assert reverse("admin:aip_job_retry", args=[failed.pk]).encode() in page.content
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:aip_job_change", args=[retry.pk])
    assert retry.retry_of == failed
    assert retry.storage == "aips"
    assert retry.state == Job.State.SUCCEEDED, retry.error
    assert shown_messages(response) == [
        f"Export job {retry.pk} (retry of job {failed.pk}) ran in this request (REDIS_URL is not set) and "
        "succeeded: exports/retry/ITEM.zip"
    ]
    assert (aips / "exports/retry/ITEM.zip").is_file()
    assert [entry.user for entry in job_log_entries(retry, ADDITION)] == [admin.user]


@pytest.mark.django_db
def test_download_streams_exact_bytes(admin_client, admin, demo, aips):
    action_post(admin_client, "item", "export_aip", [item_with_files()], apply="yes")
    job = Job.objects.get()

    page = admin_client.get(reverse("admin:aip_job_change", args=[job.pk]))
    response = admin_client.get(reverse("admin:aip_job_download", args=[job.pk]))

    assert reverse("admin:aip_job_download", args=[job.pk]).encode() in page.content
    assert response.status_code == 200
    assert isinstance(response, FileResponse)
    assert response.streaming
    assert response["Content-Disposition"].startswith("attachment;")
    assert job.result_path.rsplit("/", 1)[1] in response["Content-Disposition"]
    body = b"".join(response.streaming_content)
    assert md5(body) == md5((aips / job.result_path).read_bytes())
    assert int(response["Content-Length"]) == len(body)
    assert [entry.get_change_message() for entry in job_log_entries(job, CHANGE)] == [f"Downloaded {job.result_path}"]


@pytest.mark.django_db
def test_download_other_file_of_export(admin_client, demo, aips):
    collection = Collection.objects.filter(owned_items__isnull=False).distinct().order_by("pk").first()
    action_post(admin_client, "collection", "export_aip_recursive", [collection], apply="yes")
    job = Job.objects.get()
    item_name = next(name for name in stored(aips) if "/ITEM@" in name)

    page = admin_client.get(reverse("admin:aip_job_change", args=[job.pk]))
    response = admin_client.get(reverse("admin:aip_job_download", args=[job.pk]), {"file": item_name})
    outside = admin_client.get(reverse("admin:aip_job_download", args=[job.pk]), {"file": "../secret.zip"})

    assert item_name.rsplit("/", 1)[1].encode() in page.content
    assert md5(b"".join(response.streaming_content)) == md5((aips / item_name).read_bytes())
    assert outside.status_code == 404


# --- permissions ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_verify_only_staff_sees_verify_only(client, admin, aips):
    client = staff_client(client, "aip.view_job", "aip.verify_aip")
    job = Job.objects.create(
        kind=Job.Kind.EXPORT, state=Job.State.FAILED, eperson_email=ADMIN_EMAIL, path="exports/x/ITEM.zip",
        storage="aips", result_path="exports/x/ITEM.zip",
    )

    listing = client.get(reverse("admin:aip_job_changelist"))
    page = client.get(reverse("admin:aip_job_change", args=[job.pk]))

    assert listing.status_code == 200
    assert reverse("admin:aip_job_verify").encode() in listing.content
    assert reverse("admin:aip_job_restore").encode() not in listing.content
    assert reverse("admin:aip_job_backup").encode() not in listing.content
    assert reverse("admin:aip_job_retry", args=[job.pk]).encode() not in page.content
    assert reverse("admin:aip_job_download", args=[job.pk]).encode() not in page.content
    assert client.get(reverse("admin:aip_job_restore")).status_code == 403
    assert client.get(reverse("admin:aip_job_backup")).status_code == 403
    assert client.post(reverse("admin:aip_job_retry", args=[job.pk])).status_code == 403
    assert client.post(reverse("admin:aip_job_cancel", args=[job.pk])).status_code == 403
    assert client.get(reverse("admin:aip_job_download", args=[job.pk])).status_code == 403
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_restore_staff_cannot_replace(client, demo, aips, tmp_path):
    name = stored_item_package(aips, tmp_path, item_with_files())
    client = staff_client(client, "aip.view_job", "aip.restore_aip", eperson=True)

    page = client.get(reverse("admin:aip_job_restore"))
    response = client.post(reverse("admin:aip_job_restore"), {"stored": name, "mode": "replace", "confirm": "yes"})

    assert page.status_code == 200
    assert b'value="restore"' in page.content
    assert b'value="replace"' not in page.content
    assert response.status_code == 403
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_export_action_needs_permission(client, demo, aips):
    client = staff_client(client, "repository.view_item", eperson=True)
    item = item_with_files()

    listing = client.get(reverse("admin:repository_item_changelist"))
    response = action_post(client, "item", "export_aip", [item], apply="yes")

    assert b"export_aip" not in listing.content
    assert response.status_code == 200
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_export_staff_with_permission_queues(client, demo, aips):
    client = staff_client(client, "repository.view_item", "aip.export_aip", eperson=True)
    item = item_with_files()

    listing = client.get(reverse("admin:repository_item_changelist"))
    action_post(client, "item", "export_aip", [item], apply="yes")

    job = Job.objects.get()
    assert b'value="export_aip"' in listing.content
    assert job.eperson_email == "staff@example.org"
    assert job.state == Job.State.SUCCEEDED, job.error


def stored_tree(aips: Path, tmp_path: Path, collection: Collection) -> str:
    """Export ``collection`` with its items into the "aips" storage; return the top package's name."""
    local = tmp_path / "tree" / f"COLLECTION@{collection.handle_string.replace('/', '-')}.zip"
    packager("-d", "-a", "-i", collection.handle_string, str(local))
    shutil.copytree(local.parent, aips / "tree")
    return f"tree/{local.name}"


@pytest.mark.django_db
def test_replace_split_into_parts(admin_client, demo, aips, tmp_path):
    collection = Collection.objects.filter(owned_items__isnull=False).distinct().order_by("pk").first()
    name = stored_tree(aips, tmp_path, collection)
    items = sorted(Item.objects.filter(owning_collection=collection).values_list("handle__handle", flat=True))

    response = admin_client.post(reverse("admin:aip_job_restore"), {
        "stored": name, "mode": "replace", "recursive": "on", "parts": "2", "create_metadata_fields": "on",
        "confirm": "yes",
    })

    job = Job.objects.get(parent__isnull=True)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.part_count == 2
    parts = list(job.parts.order_by("pk"))
    # The first part records the collection, which the split job restored itself.
    assert [len(part.batch) for part in parts[1:]] == [len(items) // 2, len(items) - len(items) // 2]
    restored = [name for part in parts for name, _collections in part.batch]
    assert sorted(restored) == sorted(f"ITEM@{handle.replace('/', '-')}.zip" for handle in items)
    assert sorted(Item.objects.filter(owning_collection=collection).values_list("handle__handle", flat=True)) == items


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "submit", "recursive": "on", "parent_handle": SITE_HANDLE}, "A submit cannot be split"),
        ({"mode": "restore"}, "Only a restore with all child packages (-a) can be split"),
        ({"mode": "restore", "recursive": "on", "parts": "1"}, "greater than or equal to 2"),
    ],
)
@pytest.mark.django_db
def test_restore_parts_rejected(admin_client, demo, aips, tmp_path, fields, message):
    name = stored_item_package(aips, tmp_path, item_with_files())

    response = admin_client.post(reverse("admin:aip_job_restore"), {"stored": name, "parts": "2", **fields})

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Job.objects.exists()

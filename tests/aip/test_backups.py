"""Tests of scheduled backups on a FileSystemStorage: full and incremental runs, restores, retention, failures.

Jobs run in the test's process (REDIS_URL unset). Each restore empties the
repository, restores the backup folder with ``packager -r -a -f`` and exports
the site again, which must give the same bytes as the backup folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone as dt_timezone
from pathlib import Path

import pytest
from django.core.files.storage import storages

from aip.errors import AipError
from aip.models import Backup, BackupSchedule, Job
from aip.services.backups import INDEX_NAME
from aip.services.schedules import backup_start, schedule_save
from repository.models import Bitstream, EPerson, Group, Item, MetadataValue, ResourcePolicy
from tests.aip.conftest import (
    ADMIN_EMAIL,
    export_site,
    manifest_text,
    package_bytes,
    packager,
    repository_wipe,
    stored_files,
)

SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"
CONTAINER_PREFIXES = ("SITE@", "COMMUNITY@", "COLLECTION@")
START = datetime(2030, 1, 1, 2, 0, tzinfo=dt_timezone.utc)


@contextmanager
def storage_folder(alias: str, root: Path) -> Iterator[Path]:
    """Point the storage ``alias`` at ``root`` while the block runs.

    The instance is changed in place, as the bitstream fixture does, because changing
    STORAGES would rebuild every storage and separate ``Bitstream.file``'s storage
    from ``storages["bitstreams"]`` for the rest of the test session.
    """
    storage = storages[alias]
    previous = storage._location
    storage._location = str(root)
    storage.__dict__.pop("base_location", None)
    storage.__dict__.pop("location", None)
    try:
        yield root
    finally:
        storage._location = previous
        storage.__dict__.pop("base_location", None)
        storage.__dict__.pop("location", None)


@pytest.fixture
def aips(settings, tmp_path) -> Iterator[Path]:
    """The "aips" storage in an empty folder; jobs run in this process."""
    settings.REDIS_URL = ""
    with storage_folder("aips", tmp_path / "aips") as root:
        yield root


def schedule_make(**fields) -> BackupSchedule:
    values = {
        "name": "site",
        "cron": "0 2 * * *",
        "storage": "aips",
        "folder": "backups/site",
        "keep": 5,
        "eperson_email": ADMIN_EMAIL,
        **fields,
    }
    return schedule_save(BackupSchedule(**values))


def backup_run(schedule: BackupSchedule, number: int) -> tuple[Job, Backup | None]:
    """Run backup ``number`` of ``schedule`` now, in a folder named after START plus ``number`` days."""
    job = backup_start(schedule, when=START + timedelta(days=number))
    return job, Backup.objects.filter(job=job).first()


def written_names(job: Job) -> set[str]:
    return {line.removeprefix("Wrote ") for line in job.log.splitlines() if line.startswith("Wrote ")}


def copied_names(job: Job) -> set[str]:
    return {line.split()[1] for line in job.log.splitlines() if line.startswith("Copied ")}


def index_of(root: Path, backup: Backup) -> dict:
    return json.loads((root / backup.folder / INDEX_NAME).read_text(encoding="utf-8"))


def md5_hex(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def is_container(name: str) -> bool:
    return name.startswith(CONTAINER_PREFIXES)


def restore_and_export(folder: Path, bitstream_root: Path, target: Path) -> Path:
    """Empty the repository, restore the site from ``folder`` and export it into ``target``."""
    repository_wipe()
    shutil.rmtree(bitstream_root)
    bitstream_root.mkdir()
    packager("-r", "-a", "-f", "-u", "-i", SITE_HANDLE, str(folder / SITE_PACKAGE))
    return export_site(target).parent


def assert_same_packages(expected_folder: Path, actual_folder: Path) -> None:
    expected = package_bytes(expected_folder)
    actual = package_bytes(actual_folder)
    assert sorted(actual) == sorted(expected)
    for name, content in expected.items():
        assert actual[name] == content, f"{name} differs between the backup and the export after its restore"


def item_title_change(item: Item, title: str) -> None:
    value = (
        MetadataValue.objects.filter(item=item, field__element="title", field__qualifier__isnull=True)
        .order_by("place")
        .first()
    )
    value.value = title
    value.save()


def test_full_backup_restores_identical(demo, aips, bitstream_storage, tmp_path):
    schedule = schedule_make(incremental=False)

    job, backup = backup_run(schedule, 0)

    folder = aips / backup.folder
    packages = sorted(folder.glob("*.zip"))
    index = index_of(aips, backup)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result_path == f"backups/site/20300101T020000Z/{SITE_PACKAGE}"
    assert backup.folder == "backups/site/20300101T020000Z"
    assert backup.state == Backup.State.VERIFIED
    assert backup.incremental is False
    assert backup.based_on is None
    assert backup.finished_at >= backup.snapshot_at
    assert backup.packages == len(packages) == 16
    assert backup.packages_written == 16
    assert backup.packages_copied == 0
    assert backup.bytes == sum(path.stat().st_size for path in packages)
    assert written_names(job) == {path.name for path in packages}
    assert sorted(os.listdir(folder)) == sorted([INDEX_NAME, *(path.name for path in packages)])
    assert index["based_on"] is None
    assert index["snapshot_at"] == backup.snapshot_at.isoformat()
    assert index["packages"] == {
        path.name: {"md5": md5_hex(path), "size": path.stat().st_size, "copied": False} for path in packages
    }

    again = restore_and_export(folder, bitstream_storage, tmp_path / "again")
    assert_same_packages(folder, again)


def test_incremental_unchanged_copies_items(demo, aips, bitstream_storage, tmp_path):
    schedule = schedule_make()
    _, first = backup_run(schedule, 0)

    job, second = backup_run(schedule, 1)

    folder = aips / second.folder
    names = {path.name for path in folder.glob("*.zip")}
    items = {name for name in names if name.startswith("ITEM@")}
    index = index_of(aips, second)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert second.state == Backup.State.VERIFIED
    assert second.incremental is True
    assert second.based_on == first
    assert len(items) == Item.objects.filter(in_archive=True).count() + Item.objects.filter(withdrawn=True).count()
    assert written_names(job) == {name for name in names if is_container(name)}
    assert copied_names(job) == items
    assert second.packages_written == len(names) - len(items)
    assert second.packages_copied == len(items)
    assert second.packages == len(names)
    assert index["based_on"] == first.folder
    assert index["changed"] == []
    assert {name for name, entry in index["packages"].items() if entry["copied"]} == items
    # Copies are checked by MD5 against packages verified before; only the written packages are read again.
    assert f"Verified {len(names)} package(s) ({len(items)} of them copies of verified packages)" in job.log
    assert package_bytes(folder) == package_bytes(aips / first.folder)

    again = restore_and_export(folder, bitstream_storage, tmp_path / "again")
    assert_same_packages(folder, again)


def test_incremental_after_edit_writes_item(demo, aips, tmp_path):
    schedule = schedule_make()
    _, first = backup_run(schedule, 0)
    item = Item.objects.filter(handle__isnull=False, in_archive=True).order_by("handle__suffix_number").first()
    edited = f"ITEM@{item.handle_string.replace('/', '-')}.zip"
    item_title_change(item, "A title changed after the first backup")

    job, second = backup_run(schedule, 1)

    index = index_of(aips, second)
    written_items = {name for name in written_names(job) if name.startswith("ITEM@")}
    assert job.state == Job.State.SUCCEEDED, job.error
    assert second.state == Backup.State.VERIFIED
    assert written_items == {edited}
    assert edited not in copied_names(job)
    assert index["changed"] == [edited]
    assert index["packages"][edited]["md5"] != index_of(aips, first)["packages"][edited]["md5"]
    assert index["packages"][edited]["copied"] is False
    assert second.packages_copied == len(copied_names(job)) == len(index["packages"]) - len(written_names(job))
    assert second.packages_copied == len([name for name in index["packages"] if name.startswith("ITEM@")]) - 1
    assert b"A title changed after the first backup" not in (aips / first.folder / edited).read_bytes()


def test_incremental_exports_item_missing_from_earlier(demo, aips):
    schedule = schedule_make()
    _, first = backup_run(schedule, 0)
    lost = sorted((aips / first.folder).glob("ITEM@*.zip"))[0]
    lost.unlink()

    job, second = backup_run(schedule, 1)

    assert job.state == Job.State.SUCCEEDED, job.error
    assert second.state == Backup.State.VERIFIED
    assert lost.name in written_names(job)
    assert lost.name not in copied_names(job)
    assert second.packages_copied == len(list((aips / first.folder).glob("ITEM@*.zip")))
    assert (aips / second.folder / lost.name).is_file()


def test_retention_keeps_verified_backups(demo, aips):
    schedule = schedule_make(keep=2)
    backups = [backup_run(schedule, number)[1] for number in range(3)]

    for backup in backups:
        backup.refresh_from_db()
    assert [backup.state for backup in backups] == [
        Backup.State.REMOVED, Backup.State.VERIFIED, Backup.State.VERIFIED
    ]
    assert not (aips / backups[0].folder).exists()
    assert (aips / backups[1].folder / SITE_PACKAGE).is_file()
    assert (aips / backups[2].folder / SITE_PACKAGE).is_file()
    # The third backup copied its items from the second, so removing the first cost it nothing.
    assert backups[2].based_on == backups[1]
    assert backups[2].packages_copied == len(list((aips / backups[2].folder).glob("ITEM@*.zip")))


def test_failed_verify_keeps_old_backups(demo, aips):
    schedule = schedule_make(keep=5)
    kept = [backup_run(schedule, number)[1] for number in range(2)]
    kept_files = {backup.pk: stored_files(aips / backup.folder) for backup in kept}
    # With keep lowered to 1, retention after the next run would remove one; a run that fails must not.
    BackupSchedule.objects.filter(pk=schedule.pk).update(keep=1)
    schedule.refresh_from_db()
    # A damaged package in the newest backup is copied into the next one, whose verify must then fail.
    damaged = sorted((aips / kept[1].folder).glob("ITEM@*.zip"))[0]
    replacement = damaged.with_suffix(".tmp")
    replacement.write_bytes(damaged.read_bytes()[:-200])
    os.replace(replacement, damaged)

    job, failed = backup_run(schedule, 2)

    for backup in kept:
        backup.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert f"Verifying backup {failed.folder} found" in job.error
    assert f"PROBLEM: {damaged.name} has MD5" in job.log
    assert failed.state == Backup.State.FAILED
    assert not (aips / failed.folder).exists()
    assert [backup.state for backup in kept] == [Backup.State.VERIFIED, Backup.State.VERIFIED]
    assert {backup.pk: stored_files(aips / backup.folder) for backup in kept} == kept_files


def test_failed_export_leaves_no_folder(demo, aips):
    schedule = schedule_make(keep=1)
    _, earlier = backup_run(schedule, 0)
    earlier_files = {name: md5_hex(aips / earlier.folder / name) for name in stored_files(aips / earlier.folder)}
    bitstream = Bitstream.objects.filter(bundle__item__in_archive=True, bundle__name="ORIGINAL").first()
    Path(bitstream.file.path).unlink()
    item_title_change(bitstream.bundle.item, "Changed, so the item is exported again")

    job, failed = backup_run(schedule, 1)

    earlier.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert f"Bitstream {bitstream.name!r} ({bitstream.uuid})" in job.error
    assert "cannot be read" in job.error
    assert failed.state == Backup.State.FAILED
    assert not (aips / failed.folder).exists()
    assert earlier.state == Backup.State.VERIFIED
    assert {name: md5_hex(aips / earlier.folder / name) for name in stored_files(aips / earlier.folder)} == (
        earlier_files
    )
    assert [name for name in stored_files(aips) if not name.startswith(earlier.folder)] == []


def test_backup_start_rejects_taken_folder(demo, aips):
    schedule = schedule_make()
    backup_run(schedule, 0)

    with pytest.raises(AipError, match="'backups/site/20300101T020000Z' in storage 'aips' is already taken"):
        backup_run(schedule, 0)

    assert Job.objects.count() == 1


def test_incremental_after_replace_writes_item(demo, aips):
    """A replace brings back an older last-modified time, yet the next backup writes the item again."""
    schedule = schedule_make()
    _, first = backup_run(schedule, 0)
    item = Item.objects.filter(handle__isnull=False, in_archive=True).order_by("handle__suffix_number").first()
    name = f"ITEM@{item.handle_string.replace('/', '-')}.zip"
    item_title_change(item, "A title that the replace takes away")
    backup_run(schedule, 1)

    packager("-r", "-f", "-u", "-i", item.handle_string, str(aips / first.folder / name))
    job, third = backup_run(schedule, 2)

    item.refresh_from_db()
    assert item.last_modified < third.snapshot_at - timedelta(seconds=1)
    assert name in written_names(job)
    assert b"A title that the replace takes away" not in (aips / third.folder / name).read_bytes()


def test_incremental_after_group_rename_writes_items(demo, aips):
    schedule = schedule_make()
    _, first = backup_run(schedule, 0)
    policy = ResourcePolicy.objects.filter(item__isnull=False, group__isnull=False).exclude(
        group__name__in=[Group.ANONYMOUS, Group.ADMINISTRATOR]
    ).select_related("group", "item").first()
    assert policy is not None, "the demo repository has an item policy naming a group of its own"
    name = f"ITEM@{policy.item.handle_string.replace('/', '-')}.zip"
    policy.group.name = f"{policy.group.name} renamed"
    policy.group.save()

    job, second = backup_run(schedule, 1)

    assert name in written_names(job)
    assert index_of(aips, second)["packages"][name]["md5"] != index_of(aips, first)["packages"][name]["md5"]


@pytest.mark.parametrize("include_passwords", [False, True])
def test_backup_password_hashes_follow_schedule(demo, aips, include_passwords):
    person = EPerson.objects.exclude(email=ADMIN_EMAIL).order_by("pk").first()
    person.password_hash = hashlib.sha512(b"a password").hexdigest()
    person.password_digest_algorithm = "SHA-512"
    person.password_salt = "00ff" * 8
    person.save()
    schedule = schedule_make(include_passwords=include_passwords)

    job, backup = backup_run(schedule, 0)

    assert job.state == Job.State.SUCCEEDED, job.error
    site_manifest = manifest_text(aips / backup.folder / SITE_PACKAGE)
    assert (person.password_hash in site_manifest) is include_passwords
    assert person.password_hash not in job.log

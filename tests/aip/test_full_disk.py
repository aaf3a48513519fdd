"""Exports and restores that fill the file system they write to.

Each test mounts a tmpfs of its own and fills it with a filler file, leaving a
little room, so the run hits a real ENOSPC part-way. Where mounting is not
permitted (no CAP_SYS_ADMIN), the test instead lowers this process's
RLIMIT_FSIZE, so that writing beyond that many bytes into any file fails with
EFBIG: a real error from the kernel, though per file, not per file system.
"""
from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.files.storage import FileSystemStorage, storages
from django.core.management.base import CommandError

from aip import storage as aip_storage_module
from aip.errors import STORAGE_FULL_ERRNOS, StorageFullError
from aip.models import Job
from aip.package import PARTIAL_SUFFIX
from aip.services.jobs import job_create, job_enqueue, job_retry
from aip.storage import aip_storage, staged_write, storage_files
from repository.models import Bitstream
from tests.aip.conftest import (
    ADMIN_EMAIL,
    database_snapshot,
    export_site,
    package_bytes,
    packager,
    repository_wipe,
    stored_files,
)

SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"
KIB = 1024
# Free space left on a filled tmpfs: room for a few of the demo repository's packages or bitstream
# files (each at most about 5 KiB, taking whole 4 KiB pages), not for all of them.
TMPFS_ROOM = 16 * KIB
TMPFS_SIZE = 4 * KIB * KIB
# RLIMIT_FSIZE of the fallback: smaller than most of those files, larger than an ingest journal.
FILE_SIZE_LIMIT = 2 * KIB
FILLER_NAME = ".filler"


class FullFileSystem:
    """A folder on a small file system of this test, which the test fills and frees.

    ``errno`` is the error a write into a full folder gets: ENOSPC on the tmpfs,
    EFBIG under the RLIMIT_FSIZE fallback.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted = _tmpfs_mount(root)
        self.errno = errno.ENOSPC if self.mounted else errno.EFBIG
        self._limit = resource.getrlimit(resource.RLIMIT_FSIZE)

    def reason(self, place: str) -> str:
        """Return the reason a StorageFullError gives for a write into ``place`` on this file system."""
        return STORAGE_FULL_ERRNOS[self.errno][0].format(place=place)

    def fill(self) -> None:
        """Leave TMPFS_ROOM bytes free on the tmpfs, or limit every file to FILE_SIZE_LIMIT bytes."""
        if not self.mounted:
            # Python ignores SIGXFSZ, so a write beyond the limit raises OSError(EFBIG).
            resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, self._limit[1]))
            return
        status = os.statvfs(self.root)
        free = status.f_bavail * status.f_frsize
        with open(self.root / FILLER_NAME, "wb") as filler:
            remaining = max(free - TMPFS_ROOM, 0)
            while remaining > 0:
                chunk = min(remaining, 256 * KIB)
                filler.write(b"\0" * chunk)
                remaining -= chunk

    def free(self) -> None:
        if not self.mounted:
            resource.setrlimit(resource.RLIMIT_FSIZE, self._limit)
            return
        (self.root / FILLER_NAME).unlink(missing_ok=True)

    def files(self, folder: Path) -> list[str]:
        """Return every file under ``folder`` on this file system, hidden ones included, except the filler."""
        return sorted(
            str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file() and path.name != FILLER_NAME
        )

    def close(self) -> None:
        self.free()
        if self.mounted:
            completed = subprocess.run(["umount", str(self.root)], capture_output=True, text=True)
            if completed.returncode != 0:
                # Something still has a file open there; detach now, and the kernel frees it once closed.
                subprocess.run(["umount", "-l", str(self.root)], check=True)


def _tmpfs_mount(root: Path) -> bool:
    root.mkdir()
    if shutil.which("mount") is None:
        return False
    completed = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(root)], capture_output=True, text=True
    )
    return completed.returncode == 0


@pytest.fixture
def full_disk(tmp_path):
    disk = FullFileSystem(tmp_path / "small")
    yield disk
    disk.close()


@pytest.fixture
def full_aips(full_disk, monkeypatch) -> Path:
    """Make the "aips" storage a folder on the small file system and return that folder."""
    root = full_disk.root / "aips"
    entry = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}}
    monkeypatch.setitem(storages.backends, "aips", entry)
    monkeypatch.setitem(storages._storages, "aips", storages.create_storage(entry))
    return root


@pytest.fixture
def bitstreams_move(full_disk, bitstream_storage):
    """Return a function that points the bitstream storage at a new folder on the small file system.

    The test calls it once its repository is built. The fixture depends on ``bitstream_storage``,
    so it is undone before that fixture restores the original storage.
    """
    field = Bitstream._meta.get_field("file")
    previous = field.storage

    def move() -> Path:
        root = full_disk.root / "assetstore"
        root.mkdir()
        storage = FileSystemStorage(location=str(root))
        storages._storages["bitstreams"] = storage
        field.storage = storage
        return root

    yield move
    storages._storages["bitstreams"] = previous
    field.storage = previous


def message_checks(message: str, disk: FullFileSystem, place: str) -> None:
    assert f"failed because {disk.reason(place)}." in message
    assert "then run the job or command again" in message
    assert "Traceback" not in message
    assert "[Errno" not in message


# --- storage operations -------------------------------------------------------------------


def test_storage_full_not_retried(full_disk, full_aips, caplog):
    storage = aip_storage("aips")
    full_aips.mkdir()
    full_disk.fill()
    attempts = []

    def write() -> None:
        attempts.append(len(attempts) + 1)
        (full_aips / "big.zip").write_bytes(b"x" * 64 * KIB)

    with pytest.raises(StorageFullError) as caught:
        aip_storage_module._attempt(storage, "big.zip", "Publishing", write)

    assert attempts == [1]
    assert not [record for record in caplog.records if "retrying" in record.getMessage()]
    message_checks(str(caught.value), full_disk, f"storage 'aips' (folder {full_aips})")


def test_staged_write_full_storage_names_storage(full_disk, full_aips):
    storage = aip_storage("aips")
    full_disk.fill()

    with pytest.raises(StorageFullError) as caught:
        with staged_write(storage, "index") as local:
            (local / "index.json").write_bytes(b"x" * 64 * KIB)

    message = str(caught.value)
    assert message.startswith("Writing files for index failed")
    message_checks(message, full_disk, f"storage 'aips' (folder {full_aips})")
    assert full_disk.files(full_aips) == []


# --- export -------------------------------------------------------------------------------


def test_export_job_full_storage_then_retry(demo, full_disk, full_aips, settings, tmp_path):
    settings.REDIS_URL = ""
    reference = tmp_path / "reference"
    reference.mkdir()
    export_site(reference)
    full_disk.fill()

    job = job_enqueue(job_create(
        kind=Job.Kind.EXPORT, eperson_email=ADMIN_EMAIL, handle=SITE_HANDLE, recursive=True,
        path=f"site/{SITE_PACKAGE}", storage="aips",
    ))

    assert job.state == Job.State.FAILED
    assert job.error.startswith("Writing package ")
    message_checks(job.error, full_disk, f"storage 'aips' (folder {full_aips})")
    assert storage_files(aip_storage("aips"), "") == []
    assert full_disk.files(full_aips) == []

    full_disk.free()
    retry = job_retry(job)

    assert retry.state == Job.State.SUCCEEDED, retry.error
    storage = aip_storage("aips")
    assert storage_files(storage, "site") == [f"site/{name}" for name in sorted(package_bytes(reference))]
    assert package_bytes(full_aips / "site") == package_bytes(reference)
    assert full_disk.files(full_aips) == storage_files(storage, "")


def test_export_folder_full_then_rerun(demo, full_disk, tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    expected = package_bytes(export_site(reference).parent)
    target = full_disk.root / "export"
    full_disk.fill()

    with pytest.raises(CommandError) as caught:
        export_site(target)

    message_checks(str(caught.value), full_disk, f"folder {target}")
    assert not list(target.glob(f".*{PARTIAL_SUFFIX}"))
    written = package_bytes(target)
    assert len(written) < len(expected)
    for name, data in written.items():
        assert data == expected[name], f"{name} was left different from a complete package"

    full_disk.free()
    export_site(target)

    assert package_bytes(target) == expected
    assert full_disk.files(target) == sorted(expected)


# --- restore ------------------------------------------------------------------------------


def test_restore_full_bitstream_storage_then_rerun(demo, full_disk, bitstreams_move, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    export_site(folder)
    complete = database_snapshot()
    repository_wipe()
    empty = database_snapshot()
    full_bitstreams = bitstreams_move()
    full_disk.fill()
    command = ("-r", "-a", "-f", "-u", "-i", SITE_HANDLE, str(folder / SITE_PACKAGE))

    with pytest.raises(CommandError) as caught:
        packager(*command)

    message = str(caught.value)
    assert message.startswith(f"Ingesting {SITE_PACKAGE} failed")
    message_checks(message, full_disk, f"the bitstream storage (folder {full_bitstreams})")
    assert database_snapshot() == empty
    assert full_disk.files(full_bitstreams) == []

    full_disk.free()
    packager(*command)

    assert database_snapshot() == complete
    referenced = sorted(Bitstream.objects.exclude(file="").values_list("file", flat=True))
    assert full_disk.files(full_bitstreams) == referenced

"""Scheduled backups: write one backup of a schedule, verify it, then remove old ones.

A backup is a dated folder ``<schedule folder>/<YYYYmmddTHHMMSSZ>/`` in an AIP
storage, and restores as a complete tree on its own. ``backup_job_run`` runs
one as a job of kind BACKUP:

1. It creates a running ``Backup`` whose snapshot time is the start time.
2. A full backup exports the tree into the folder through ``staged_write``. An
   incremental one exports only the items changed after the snapshot of the
   newest verified backup of the same schedule (``based_on``) and then copies
   each unchanged item package from based_on's folder inside the storage. An
   item package that based_on lacks is exported instead.
3. ``backup.json`` lists every package with its MD5 and size, the snapshot time
   and based_on's folder. Comparing MD5s with based_on's index counts the
   packages that really changed.
4. The folder is verified: ``tree_verify`` reads every package, and every file's
   MD5 must match the index. The backup is then "verified".
5. Only then do the oldest verified backups of the schedule beyond ``keep`` lose
   their folders and become "removed".

A failed run marks its backup failed and deletes its own folder; earlier
backups stay as they were.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from pathlib import Path
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from aip import selectors
from aip.errors import AipError
from aip.models import Backup, BackupSchedule, Job
from aip.options import ExportOptions, export_options
from aip.package import md5_of
from aip.services.export import object_export, package_write
from aip.services.verify import tree_verify
from aip.storage import (
    aip_storage,
    staged_read,
    staged_write,
    storage_copy_folder,
    storage_delete_folder,
    storage_files,
)
from repository.models import Item

if TYPE_CHECKING:
    from django.core.files.storage import Storage

    from aip.services.jobs import _Recorder

logger = logging.getLogger(__name__)

INDEX_NAME = "backup.json"
INDEX_FORMAT = 1
FOLDER_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# Unchanged packages copied between two progress reports (and cancel checks).
COPY_BATCH = 500


@dataclass
class _Contents:
    """Packages of one backup folder by name, each with its MD5, size and whether it was copied."""

    packages: dict[str, dict] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(1 for entry in self.packages.values() if not entry["copied"])

    @property
    def copied(self) -> int:
        return sum(1 for entry in self.packages.values() if entry["copied"])

    @property
    def size(self) -> int:
        return sum(entry["size"] for entry in self.packages.values())


def backup_folder_name(moment: datetime) -> str:
    """Return the dated folder name of a backup started at ``moment``: UTC as YYYYmmddTHHMMSSZ."""
    return moment.astimezone(dt_timezone.utc).strftime(FOLDER_TIME_FORMAT)


def backup_job_run(job: Job, recorder: _Recorder) -> str:
    """Write, index and verify the backup of ``job``, then apply retention; return the top package's name."""
    schedule = _schedule_of(job)
    storage = aip_storage(job.storage)
    folder, top_name = posixpath.split(job.path)
    backup = _backup_create(job, schedule, storage, folder)
    try:
        contents = _backup_write(backup, job, storage, top_name, recorder)
        _backup_verify(backup, job, storage, contents, recorder)
    except BaseException as error:
        # BaseException, because a cancel, an RQ timeout or a shutdown must not leave a partial folder either.
        _backup_discard(backup, storage, error, recorder)
        raise
    recorder.lines(backups_retain(schedule))
    return job.path


def _schedule_of(job: Job) -> BackupSchedule:
    if job.schedule is None:
        raise AipError(
            f"Backup job {job.pk} has no schedule, because its schedule was deleted or the job is a retry. Start "
            "backups from a schedule: with \"Run now\" in the admin, or by the scheduler."
        )
    return job.schedule


def _backup_create(job: Job, schedule: BackupSchedule, storage: Storage, folder: str) -> Backup:
    """Save the running backup; raise ``AipError`` when another backup owns the folder or it already contains files."""
    if storage_files(storage, folder):
        raise AipError(
            f"Backup folder {folder!r} in storage {job.storage!r} already contains files; a backup writes only "
            "into a new folder. Start the backup again."
        )
    try:
        with transaction.atomic():
            return Backup.objects.create(
                schedule=schedule,
                job=job,
                storage=job.storage,
                folder=folder,
                handle=job.handle,
                incremental=False,
                snapshot_at=timezone.now(),
            )
    except IntegrityError:
        raise AipError(
            f"Backup folder {folder!r} in storage {job.storage!r} belongs to another backup. Start the backup again."
        ) from None


def _backup_write(backup: Backup, job: Job, storage: Storage, top_name: str, recorder: _Recorder) -> _Contents:
    """Export (and for an incremental backup, copy) the tree into the backup's folder, then write its index."""
    based_on, based_index = _based_on(backup) if backup.schedule.incremental else (None, {})
    # Item.changed_at, not DSpace's last-modified time: a restore or replace brings back an older
    # last-modified time, but the item's package changed all the same.
    options = export_options({"passwords": "true"} if backup.schedule.include_passwords else {}, recursive=job.recursive)
    if based_on:
        options = dataclasses.replace(options, changed_after=based_on.snapshot_at)
    obj = selectors.object_by_handle_or_error(job.handle)

    with staged_write(storage, backup.folder) as local:
        result = object_export(obj=obj, path=local / top_name, options=options, progress=recorder.package_written)
        unchanged = [path.name for path in result.unchanged]
        missing = [name for name in unchanged if name not in based_index]
        _items_export(missing, local, options, recorder)
        contents = _Contents(packages={path.name: _local_entry(path) for path in sorted(local.iterdir())})

    to_copy = [name for name in unchanged if name in based_index]
    for start in range(0, len(to_copy), COPY_BATCH):
        _packages_copy(storage, based_on, backup, to_copy[start:start + COPY_BATCH], based_index, recorder)
    for name in to_copy:
        contents.packages[name] = {**based_index[name], "copied": True}
    contents.changed = sorted(
        name for name, entry in contents.packages.items()
        if not entry["copied"] and based_index.get(name, {}).get("md5") != entry["md5"]
    )
    _index_write(storage, backup, based_on, top_name, contents)
    _backup_completed(backup, based_on, contents)
    recorder.lines([_summary(contents, based_on)])
    return contents


def _based_on(backup: Backup) -> tuple[Backup | None, dict[str, dict]]:
    """Return the newest verified backup of the same schedule, object and storage, with its readable packages.

    Without one, or when its index is gone, the backup is a full one.
    """
    based_on = (
        Backup.objects.filter(
            schedule=backup.schedule, storage=backup.storage, handle=backup.handle, state=Backup.State.VERIFIED
        )
        .exclude(pk=backup.pk)
        .order_by("-snapshot_at", "-id")
        .first()
    )
    if based_on is None:
        return None, {}
    storage = aip_storage(based_on.storage)
    present = {posixpath.basename(name) for name in storage_files(storage, based_on.folder)}
    if INDEX_NAME not in present:
        logger.warning("backup %s: %s of %s is missing; writing a full backup", backup.pk, INDEX_NAME, based_on.folder)
        return None, {}
    index = _index_read(storage, based_on)
    if index is None:
        return None, {}
    # Only packages that are listed and still stored can be copied.
    return based_on, {name: entry for name, entry in index.items() if name in present}


def _index_read(storage: Storage, backup: Backup) -> dict[str, dict] | None:
    """Return the packages listed in the index of ``backup``, or None (logged) when the index is unreadable."""
    name = f"{backup.folder}/{INDEX_NAME}"
    with staged_read(storage, name) as path:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            return {
                package: {"md5": str(entry["md5"]), "size": int(entry["size"])}
                for package, entry in document["packages"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            logger.warning("backup %s: index %s is unreadable (%s); writing a full backup", backup.pk, name, error)
            return None


def _items_export(names: list[str], local: Path, options: ExportOptions, recorder: _Recorder) -> None:
    """Export the unchanged items ``names`` that the earlier backup lacks, so the folder is complete."""
    if not names:
        return
    remaining = set(names)
    single = dataclasses.replace(options, recursive=False, updated_after=None, changed_after=None)
    for item in Item.objects.filter(handle__isnull=False).select_related("handle").iterator():
        name = selectors.package_file_name(item, options.extension)
        if name in remaining:
            package_write(obj=item, path=local / name, options=single)
            recorder.package_written(local / name)
            remaining.discard(name)
    if remaining:
        raise AipError(
            f"No item has the package name(s) {', '.join(sorted(remaining))}, which the export listed as unchanged: "
            "the items were deleted or got new handles during the backup. Start the backup again."
        )


def _local_entry(path: Path) -> dict:
    with path.open("rb") as stream:
        md5, size = md5_of(stream)
    return {"md5": md5, "size": size, "copied": False}


def _packages_copy(
    storage: Storage, based_on: Backup, backup: Backup, names: list[str], index: dict[str, dict], recorder: _Recorder
) -> None:
    """Copy a batch of unchanged packages from ``based_on``; progress and cancel are checked once per batch."""
    storage_copy_folder(storage, based_on.folder, backup.folder, names)
    recorder.lines([f"Copied {name} from {based_on.folder}" for name in names[:-1]])
    last = names[-1]
    recorder.advance(
        objects=len(names),
        size=sum(index[name]["size"] for name in names),
        line=f"Copied {last} from {based_on.folder}",
    )


def _index_write(storage: Storage, backup: Backup, based_on: Backup | None, top_name: str, contents: _Contents) -> None:
    document = {
        "format": INDEX_FORMAT,
        "schedule": backup.schedule.name,
        "handle": backup.handle,
        "top": top_name,
        "snapshot_at": backup.snapshot_at.isoformat(),
        "based_on": based_on.folder if based_on else None,
        "packages": {name: contents.packages[name] for name in sorted(contents.packages)},
        "changed": contents.changed,
    }
    with staged_write(storage, backup.folder) as local:
        (local / INDEX_NAME).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _backup_completed(backup: Backup, based_on: Backup | None, contents: _Contents) -> None:
    backup.based_on = based_on
    backup.incremental = based_on is not None
    backup.state = Backup.State.COMPLETED
    backup.packages = len(contents.packages)
    backup.packages_written = contents.written
    backup.packages_copied = contents.copied
    backup.bytes = contents.size
    backup.save(
        update_fields=["based_on", "incremental", "state", "packages", "packages_written", "packages_copied", "bytes"]
    )


def _summary(contents: _Contents, based_on: Backup | None) -> str:
    if based_on is None:
        return f"Full backup: {contents.written} package(s) written, {contents.size} bytes"
    return (
        f"Incremental backup based on {based_on.folder}: {contents.written} package(s) written, "
        f"{len(contents.changed)} of them changed, {contents.copied} copied; {contents.size} bytes in all"
    )


def _backup_verify(backup: Backup, job: Job, storage: Storage, contents: _Contents, recorder: _Recorder) -> None:
    """Verify the stored folder; raise ``AipError`` listing the problems, or mark the backup verified."""
    with staged_read(storage, job.path, with_folder=True) as top:
        mismatches, matching = _index_check(top.parent, contents)
        # A copied package with its index MD5 is byte-identical to a package of a verified backup.
        copies = frozenset(name for name in matching if contents.packages[name].get("copied"))
        report = tree_verify(path=top, recursive=job.recursive, validate=False, known_good=copies)
        problems = report.problems + mismatches
    recorder.lines([f"PROBLEM: {problem}" for problem in problems] + [report.summary()])
    if problems:
        raise AipError(
            f"Verifying backup {backup.folder} found {len(problems)} problem(s); each is listed in the log as "
            "PROBLEM. The backup was removed and earlier backups were kept."
        )
    Backup.objects.filter(pk=backup.pk).update(state=Backup.State.VERIFIED, finished_at=timezone.now())
    logger.info("backup %s (%s) verified: %s", backup.pk, backup.folder, report.summary())


def _index_check(folder: Path, contents: _Contents) -> tuple[list[str], list[str]]:
    """Compare each package's MD5 and size with the index written for it; return the problems and the matching names."""
    # NOTE: copies are read too, so that damage in the backup they were linked from is found. With
    # large files this makes an incremental backup an MD5 pass over the whole backup.
    problems = []
    matching = []
    for name, entry in contents.packages.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is listed in {INDEX_NAME} but missing from the backup folder")
            continue
        actual = _local_entry(path)
        if (actual["md5"], actual["size"]) != (entry["md5"], entry["size"]):
            problems.append(
                f"{name} has MD5 {actual['md5']} and {actual['size']} bytes, but {INDEX_NAME} states "
                f"{entry['md5']} and {entry['size']} bytes"
            )
            continue
        matching.append(name)
    return problems, matching


def _backup_discard(backup: Backup, storage: Storage, error: BaseException, recorder: _Recorder) -> None:
    """Mark ``backup`` failed and delete its folder.

    A failed delete is only logged, because the caller goes on to raise ``error``, the cause of the failure.
    """
    Backup.objects.filter(pk=backup.pk).update(state=Backup.State.FAILED, finished_at=timezone.now())
    logger.warning("backup %s (%s) failed: %s", backup.pk, backup.folder, error)
    try:
        removed = storage_delete_folder(storage, backup.folder)
    except AipError as delete_error:
        logger.error("backup %s: removing its folder %s failed: %s", backup.pk, backup.folder, delete_error)
        recorder.lines([f"WARNING: removing the folder {backup.folder} of the failed backup failed: {delete_error}"])
        return
    recorder.lines([f"Removed the folder {backup.folder} of the failed backup ({removed} file(s))"])


def backups_retain(schedule: BackupSchedule) -> list[str]:
    """Remove the folders of the verified backups of ``schedule`` beyond the newest ``keep``; return log lines.

    Runs only after a newer backup verified, so a failed or unverified run never costs an old backup.
    """
    keep = max(schedule.keep, 1)
    verified = list(
        Backup.objects.filter(schedule=schedule, state=Backup.State.VERIFIED).order_by("-snapshot_at", "-id")
    )
    lines = []
    for old in verified[keep:]:
        try:
            removed = storage_delete_folder(aip_storage(old.storage), old.folder)
        except AipError as error:
            logger.error("schedule %s: removing backup %s (%s) failed: %s", schedule.pk, old.pk, old.folder, error)
            lines.append(f"WARNING: removing the old backup {old.folder} failed: {error}")
            continue
        Backup.objects.filter(pk=old.pk, state=Backup.State.VERIFIED).update(state=Backup.State.REMOVED)
        logger.info("schedule %s: removed backup %s (%s), %d file(s)", schedule.pk, old.pk, old.folder, removed)
        lines.append(f"Removed the old backup {old.folder} ({removed} file(s)); {keep} verified backup(s) kept")
    return lines


def backups_reap() -> list[int]:
    """Mark failed the running backups whose job ended without them (a killed worker); delete their folders."""
    finished = (Job.State.FAILED, Job.State.CANCELLED, Job.State.SUCCEEDED)
    reaped = []
    for backup in Backup.objects.filter(Q(job__state__in=finished) | Q(job__isnull=True), state=Backup.State.RUNNING):
        if not Backup.objects.filter(pk=backup.pk, state=Backup.State.RUNNING).update(
            state=Backup.State.FAILED, finished_at=timezone.now()
        ):
            continue
        logger.warning("backup %s (%s) failed: its job ended while it was running", backup.pk, backup.folder)
        try:
            storage_delete_folder(aip_storage(backup.storage), backup.folder)
        except AipError as error:
            logger.error("backup %s: removing its folder %s failed: %s", backup.pk, backup.folder, error)
        reaped.append(backup.pk)
    return reaped

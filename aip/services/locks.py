"""Locks that keep two jobs from touching the same objects at once, and read snapshots.

Each job locks the handles of the object trees it touches with PostgreSQL
session-level advisory locks, taken on a connection of its own so that the
job's transactions, commits and rollbacks never release them early:

- the top object's handle: shared for readers (export, backup), exclusive
  for writers (submit, restore, replace), none for a verify, which reads files;
- every ancestor's handle (collection, communities, site), shared, so that a
  writer on a community waits for readers and writers below it and the other
  way round;
- the package file it reads (shared) or writes (exclusive), so that two exports
  never write one file and nothing reads a package while it is written.

A lock that is taken is retried every LOCK_POLL seconds for AIP_LOCK_WAIT
seconds (0 fails at once). The error names the job holding it. Each holder's
lock connection sets ``application_name`` to "aip job <id>", or "aip packager ..."
for an inline packager run, and ``pg_locks`` lists which connection has a key.

Shared ancestor locks do not conflict with each other, so a reader of a whole
site does not wait for a writer of one collection. An export job therefore reads
its whole tree in one snapshot (``read_snapshot``).
NOTE: backups and inline packager exports call ``object_export`` without a
snapshot, so each of their queries reads the database as of its own moment.

SQLite, the embedded default, has no advisory locks; there every lock is
granted at once, and since SQLite lets one writer in at a time, run one job at
a time (one worker, or the packager inline).
"""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection, connections, transaction

from aip import selectors
from aip.errors import AipError, JobCancelledError

logger = logging.getLogger(__name__)

DEFAULT_LOCK_WAIT = 300.0
LOCK_POLL = 0.5
APPLICATION_NAME_PREFIX = "aip job "
_JOB_NAME = re.compile(r"^aip job (\d+)$")


class LockBusyError(AipError):
    """Another job or packager run holds a lock this run needs, for longer than AIP_LOCK_WAIT."""


@dataclass(frozen=True, order=True)
class LockKey:
    """One thing to lock: ``name`` such as "handle:123456789/5" or "file:/srv/aips/SITE@123456789-0.zip"."""

    name: str
    exclusive: bool = False

    @property
    def number(self) -> int:
        """The signed 64-bit advisory lock key: the first 8 bytes of the name's BLAKE2b hash."""
        digest = hashlib.blake2b(f"aip-backup:{self.name}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def describe(self) -> str:
        kind, _, value = self.name.partition(":")
        return f"package {value}" if kind == "file" else f"object {value}"


def lock_wait_seconds() -> float:
    """Return AIP_LOCK_WAIT (setting or environment variable) in seconds; raise ``AipError`` naming a bad value."""
    raw = getattr(settings, "AIP_LOCK_WAIT", None)
    if raw is None:
        raw = os.environ.get("AIP_LOCK_WAIT", str(DEFAULT_LOCK_WAIT))
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = -1.0
    if seconds < 0:
        raise AipError(
            f"AIP_LOCK_WAIT is {raw!r}: give the seconds a job waits for another job on the same objects, "
            "for example 300, or 0 to fail at once."
        )
    return seconds


def handle_keys(handle: str, *, exclusive: bool) -> list[LockKey]:
    """Return the lock on ``handle`` and shared locks on the handles of its ancestors, up to the site."""
    keys = [LockKey(f"handle:{handle}", exclusive)]
    obj = _object_without_site_creation(handle)
    seen = {handle}
    while obj is not None:
        parent = selectors.parent_handle_of(obj)
        if not parent or parent in seen:
            break
        seen.add(parent)
        keys.append(LockKey(f"handle:{parent}"))
        obj = _object_without_site_creation(parent)
    return keys


def _object_without_site_creation(handle: str):
    """Return the object of ``handle``; the site (which has no ancestors) is not looked up.

    ``object_by_handle`` creates a missing site, and locks are taken outside the run's
    transaction, so that row would survive a failed restore.
    """
    if handle == selectors.site_handle():
        return None
    return selectors.object_by_handle(handle)


def file_key(storage: str, path: str | Path, *, exclusive: bool) -> LockKey:
    """Return the lock on a package file: a name in a STORAGES entry, or a local path."""
    name = f"{storage}:{posixpath.normpath(str(path))}" if storage else str(Path(path).resolve())
    return LockKey(f"file:{name}", exclusive)


def keys_merge(keys: list[LockKey]) -> list[LockKey]:
    """Return one key per name (exclusive wins), sorted by number so that two runs lock in the same order."""
    merged: dict[str, bool] = {}
    for key in keys:
        merged[key.name] = merged.get(key.name, False) or key.exclusive
    return sorted((LockKey(name, exclusive) for name, exclusive in merged.items()), key=lambda key: key.number)


@contextmanager
def locks_held(
    keys: list[LockKey],
    *,
    holder: str,
    wait: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[None]:
    """Hold ``keys`` while the block runs; raise ``LockBusyError`` naming the holder after ``wait`` seconds.

    ``holder`` names this run to others ("aip job 12" or "aip packager ..."). ``on_wait`` is
    called once, with the holder's description, when the run starts to wait. ``cancelled`` is
    called between tries, and when it returns True the wait ends with ``JobCancelledError``.
    """
    if connection.vendor != "postgresql" or not keys:
        yield
        return
    wait = lock_wait_seconds() if wait is None else wait
    lock_connection = connections.create_connection("default")
    try:
        _application_name_set(lock_connection, holder)
        for key in keys_merge(keys):
            _lock_acquire(lock_connection, key, wait=wait, on_wait=on_wait, cancelled=cancelled)
        yield
    finally:
        # Closing the session releases every advisory lock it holds, also after an error.
        lock_connection.close()


def _application_name_set(lock_connection, holder: str) -> None:
    with lock_connection.cursor() as cursor:
        cursor.execute("SELECT set_config('application_name', %s, false)", [holder[:63]])


def _lock_acquire(lock_connection, key: LockKey, *, wait: float, on_wait, cancelled) -> None:
    function = "pg_try_advisory_lock" if key.exclusive else "pg_try_advisory_lock_shared"
    deadline = time.monotonic() + wait
    announced = False
    while True:
        with lock_connection.cursor() as cursor:
            cursor.execute(f"SELECT {function}(%s)", [key.number])
            if cursor.fetchone()[0]:
                return
        holder = lock_holder_describe(lock_connection, key)
        if time.monotonic() >= deadline:
            raise LockBusyError(
                f"{key.describe().capitalize()} is in use by {holder}; waited {wait:g} s "
                f"(AIP_LOCK_WAIT). Retry when it has finished, or cancel it."
            )
        if not announced:
            logger.info("waiting for %s, in use by %s", key.describe(), holder)
            if on_wait is not None:
                on_wait(f"Waiting up to {wait:g} s for {key.describe()}, in use by {holder}")
            announced = True
        if cancelled is not None and cancelled():
            raise JobCancelledError(f"Cancelled while waiting for {key.describe()}, in use by {holder}.")
        time.sleep(min(LOCK_POLL, max(deadline - time.monotonic(), 0.01)))


def lock_holder_describe(lock_connection, key: LockKey) -> str:
    """Name the jobs or packager runs holding ``key``: id, kind, target and user of each job."""
    unsigned = key.number & 0xFFFFFFFFFFFFFFFF
    with lock_connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT a.application_name, l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = %s AND l.objid = %s "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [unsigned >> 32, unsigned & 0xFFFFFFFF],
        )
        rows = cursor.fetchall()
    names = sorted({_holder_name(application_name) for application_name, _mode in rows})
    return ", ".join(names) if names else "another run that has just finished"


def _holder_name(application_name: str) -> str:
    # Imported here because the models module is loaded after this one in management commands.
    from aip.models import Job

    match = _JOB_NAME.match(application_name or "")
    if match is None:
        return application_name or "a session without a name"
    job = Job.objects.filter(pk=int(match.group(1))).select_related("user").first()
    if job is None:
        return f"job {match.group(1)}"
    who = job.eperson_email + (f" (admin user {job.user.username})" if job.user else "")
    target = job.handle or job.path
    started = f", started {job.started_at:%Y-%m-%d %H:%M:%S} UTC" if job.started_at else ""
    return f"job {job.pk} ({job.get_kind_display().lower()} of {target} by {who}{started})"


def job_holder_name(job_id: int) -> str:
    return f"{APPLICATION_NAME_PREFIX}{job_id}"


def packager_holder_name(mode: str, eperson_email: str) -> str:
    """Name of an inline packager run, as other runs see it when it holds a lock they need."""
    return f"aip packager {mode} by {eperson_email} (pid {os.getpid()})"


@contextmanager
def read_snapshot() -> Iterator[None]:
    """Run the block in one REPEATABLE READ transaction, so every query reads the database as of one moment.

    Inside an open transaction (an ingest, or an outer snapshot) the block joins it. On SQLite
    the block runs as it is: a read transaction there would keep the job's progress writes out.
    """
    if connection.in_atomic_block or connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def export_keys(handle: str, *, storage: str, path: str | Path) -> list[LockKey]:
    """Return the keys of an export or backup: it reads the tree of ``handle`` and writes the package at ``path``."""
    return handle_keys(handle or selectors.site_handle(), exclusive=False) + [file_key(storage, path, exclusive=True)]


def verify_keys(*, storage: str, path: str | Path) -> list[LockKey]:
    """Return the key of a verify, which reads only the package at ``path``."""
    return [file_key(storage, path, exclusive=False)]


def ingest_keys(
    local_path: Path,
    *,
    storage: str,
    path: str | Path,
    replace_handle: str | None,
    parent_handle: str | None,
    manifest_only: bool,
) -> list[LockKey]:
    """Return the keys of an ingest: it writes the object its top package describes (or ``replace_handle``).

    The object's handle and the parent's come from the top manifest, so the top
    object is locked exclusively and its parent chain shared. A new object without a
    handle locks its parent exclusively instead. A manifest that cannot be read locks
    only what the arguments name; the ingest then reports why the package is bad.
    """
    keys = [file_key(storage, path, exclusive=False)]
    handle, manifest_parent = top_manifest_handles(local_path, manifest_only=manifest_only)
    targets = [name for name in (replace_handle, handle) if name]
    for target in targets:
        keys += handle_keys(target, exclusive=True)
    parent = parent_handle or manifest_parent
    if parent:
        keys += handle_keys(parent, exclusive=not targets)
    return keys


def top_manifest_handles(path: Path, *, manifest_only: bool) -> tuple[str | None, str | None]:
    """Return the handle and parent handle that the manifest of the package at ``path`` names, or None for each."""
    # Imported here because reading a manifest loads the METS reader, which the other lock users never need.
    from aip.mets.reader import read_manifest
    from aip.package import package_open

    try:
        with package_open(path, manifest_only=manifest_only) as reader:
            manifest = read_manifest(reader.manifest_bytes(), source=path.name)
    except Exception as error:  # noqa: BLE001 - any unreadable package is reported by the ingest itself
        logger.info("lock keys of %s come from the arguments alone: %s", path.name, error)
        return None, None
    return manifest.handle or None, manifest.parent_handle or None

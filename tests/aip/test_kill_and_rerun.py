"""Restores and exports killed with SIGKILL at random moments, then run again.

The packager runs as a subprocess against the test database (hence transactional
tests, whose data other connections can see) and the test's bitstream folder. A
killed restore must leave no object and, once the next run or the sweep has run,
no stored file that no bitstream names. A killed export must leave no truncated
package under a final name, and its rerun writes only what is missing.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from aip.package import PARTIAL_SUFFIX
from aip.services.bitstream_ingest import DELETIONS_SUFFIX, JOURNAL_FOLDER, ingest_runs_sweep
from repository.installation import license_text
from repository.models import Bitstream, Item
from tests.aip.conftest import ADMIN_EMAIL, database_snapshot, export_site, package_bytes, repository_wipe, stored_files

# The subprocesses must see the test's rows, so each test commits; tests/conftest.py seeds the
# migrations' data again after the flush that follows such a test.
pytestmark = pytest.mark.django_db(transaction=True)

MANAGE = Path(__file__).resolve().parents[2] / "manage.py"
SITE_HANDLE = "123456789/0"
SITE_PACKAGE = "SITE@123456789-0.zip"
KILLS = 10
# Fixed, so that a CI run kills at the same moments every time.
SEED = 20240501
SESSION_END_TIMEOUT = 15.0


def database_url() -> str:
    """Return the URL of the test database, which pytest-django created under its own name."""
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    return (
        f"postgres://{settings['USER']}{password}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/"
        f"{settings['NAME']}"
    )


def packager_command(*arguments: str) -> list[str]:
    return [sys.executable, str(MANAGE), "packager", "-t", "AIP", "-e", ADMIN_EMAIL, *arguments]


def subprocess_env(bitstream_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url()
    env["BITSTREAM_ROOT"] = str(bitstream_root)
    env.pop("REDIS_URL", None)
    return env


# How often a run is checked for the sign that its work has begun.
POLL_SECONDS = 0.005
RUN_TIMEOUT = 300.0


def run_to_end(command: list[str], env: dict[str, str], watch: Path | None = None) -> float:
    """Run ``command`` to completion and return its duration in seconds.

    With ``watch``, the duration counts from the moment a new file appears in that folder:
    the part of the run that kills must hit, without the start-up, whose length load changes.
    """
    working = new_file_check(watch) if watch is not None else None
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        started = time.monotonic()
        while process.poll() is None:
            if working is not None and working():
                started = time.monotonic()
                working = None
            if time.monotonic() - started > RUN_TIMEOUT:
                process.kill()
            time.sleep(POLL_SECONDS)
        errors.seek(0)
        assert process.returncode == 0, errors.read().decode("utf-8", "replace")
    return time.monotonic() - started


def run_and_kill(command: list[str], env: dict[str, str], delay: float, watch: Path) -> int:
    """Start ``command``, send it SIGKILL ``delay`` seconds after a new file appears in ``watch``; return its exit code."""
    working = new_file_check(watch)
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        deadline = time.monotonic() + RUN_TIMEOUT
        while process.poll() is None and not working() and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        errors.seek(0)
        assert process.returncode in (0, -signal.SIGKILL), errors.read().decode("utf-8", "replace")
    return process.returncode


def other_sessions_end() -> None:
    """Wait until no other session uses the test database.

    PostgreSQL ends the session of a killed client soon, but not at once.
    """
    deadline = time.monotonic() + SESSION_END_TIMEOUT
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"sessions of killed packager runs were still open after {SESSION_END_TIMEOUT} s")


def referenced_files() -> list[str]:
    return sorted(Bitstream.objects.exclude(file="").values_list("file", flat=True))


def bitstream_folder_clear(root: Path) -> None:
    shutil.rmtree(root)
    root.mkdir()


def kill_delays(duration: float) -> list[float]:
    """Return KILLS moments spread over the working part of a run, each drawn at random within its slice.

    The moments cover the first 70 % of the measured work, because a later run of the same
    command may be faster (a warm cache, or less load from other processes).
    """
    generator = random.Random(SEED)
    width = max(duration, 0.05) * 0.7 / KILLS
    return [width * (index + generator.random()) for index in range(KILLS)]


def new_file_check(folder: Path) -> Callable[[], bool]:
    """Return a check that ``folder`` has a file it lacked now: the sign that a restore stores or an export writes."""

    def names() -> set[str]:
        try:
            return {path.name for path in folder.iterdir()}
        except FileNotFoundError:
            return set()

    before = names()
    return lambda: bool(names() - before)


# --- restore ------------------------------------------------------------------------------------


def test_restore_killed_then_rerun(demo, tmp_path, bitstream_storage):
    folder = tmp_path / "export"
    export_site(folder)
    repository_wipe()
    bitstream_folder_clear(bitstream_storage)
    empty = database_snapshot()
    env = subprocess_env(bitstream_storage)
    command = packager_command("-r", "-a", "-f", "-u", "-i", SITE_HANDLE, str(folder / SITE_PACKAGE))

    # A run's journal appears before its first stored file: from then on a kill can leave files behind.
    journals = bitstream_storage / JOURNAL_FOLDER
    # A full run gives the duration to spread the kills over and the state of a complete restore.
    duration = run_to_end(command, env, journals)
    complete = database_snapshot()
    assert complete["Item"] > 0
    repository_wipe()
    bitstream_folder_clear(bitstream_storage)

    killed = 0
    orphans_seen = 0
    for index, delay in enumerate(kill_delays(duration)):
        code = run_and_kill(command, env, delay, journals)
        other_sessions_end()
        killed += code == -signal.SIGKILL

        state = database_snapshot()
        assert state in (empty, complete), f"kill {index} after {delay:.2f} s left a partial restore: {state}"
        if state == complete:
            # The kill came after the commit: start the next round from an empty repository again.
            repository_wipe()
            bitstream_folder_clear(bitstream_storage)
            continue
        orphans_seen += len(set(stored_files(bitstream_storage)) - set(referenced_files()))
        if index == KILLS // 2:
            call_command("aip_storage_sweep")
            assert stored_files(bitstream_storage) == []

    assert killed >= KILLS // 2, f"only {killed} of {KILLS} runs were killed before they ended"
    assert orphans_seen > 0, "no kill left a stored file behind, so the sweep was never exercised"

    # The rerun sweeps the files of the killed runs before it starts.
    run_to_end(command, env)

    assert database_snapshot() == complete
    assert stored_files(bitstream_storage) == referenced_files()
    assert not (bitstream_storage / JOURNAL_FOLDER).exists() or not any((bitstream_storage / JOURNAL_FOLDER).iterdir())


def test_sweep_keeps_files_of_live_run(demo, tmp_path, bitstream_storage):
    """A run whose database session is still open is left alone by the sweep, even in another process."""
    from aip.services.bitstream_ingest import ingest_runs_sweep, run_file_name
    import json
    import uuid

    run_id = uuid.uuid4()
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(run_id)],
        env={**subprocess_env(bitstream_storage), "DJANGO_SETTINGS_MODULE": "config.settings"},
        cwd=MANAGE.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        journal = bitstream_storage / JOURNAL_FOLDER / f"{run_id}.json"
        journal.parent.mkdir()
        journal.write_text(json.dumps({"run": str(run_id), "host": "elsewhere", "pid": 1}))
        stored = bitstream_storage / run_file_name(run_id, 0)
        stored.parent.mkdir(parents=True)
        stored.write_bytes(b"being written")

        alive = ingest_runs_sweep()

        assert alive.runs_alive == [str(run_id)]
        assert stored.exists()
    finally:
        holder.kill()
        holder.wait()
    other_sessions_end()

    dead = ingest_runs_sweep()

    assert dead.runs_swept == [str(run_id)]
    assert dead.files_deleted == [run_file_name(run_id, 0)]
    assert not stored.exists()
    assert not journal.exists()


# Takes the advisory lock of a run id and holds it until killed, as a running ingest does.
LOCK_HOLDER = """
import sys, time, uuid
import django
django.setup()
from aip.services.bitstream_ingest import _advisory_lock
_advisory_lock(uuid.UUID(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


# --- export -------------------------------------------------------------------------------------


def package_identities(folder: Path) -> dict[str, tuple[int, int]]:
    """Return the inode and modification time of each package, which change whenever a package is written."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in folder.glob("*.zip")}


def test_export_killed_then_rerun(demo, tmp_path, bitstream_storage):
    reference = tmp_path / "reference"
    export_site(reference)
    expected = package_bytes(reference)
    target = tmp_path / "target"
    env = subprocess_env(bitstream_storage)
    command = packager_command("-d", "-a", "-i", SITE_HANDLE, str(target / SITE_PACKAGE))

    duration = run_to_end(command, env, target)
    assert package_bytes(target) == expected

    killed = 0
    partly_written = 0
    for index, delay in enumerate(kill_delays(duration)):
        # Each round starts empty, so a kill shows how far a run got and whether it left a truncated package.
        shutil.rmtree(target, ignore_errors=True)
        killed += run_and_kill(command, env, delay, target) == -signal.SIGKILL
        written = package_bytes(target) if target.exists() else {}
        partly_written += 0 < len(written) < len(expected)
        for name, data in written.items():
            assert data == expected[name], f"kill {index} after {delay:.2f} s left {name} different from a full export"
    assert killed >= KILLS // 2, f"only {killed} of {KILLS} runs were killed before they ended"
    assert partly_written > 0, "no kill landed while packages were being written"
    run_to_end(command, env)

    # Leave the folder half done, with the temporary file of a dead process, as a kill mid-write does.
    for name in sorted(expected)[len(expected) // 2:]:
        (target / name).unlink(missing_ok=True)
    target.mkdir(exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = os.uname().nodename.replace(".", "_")
    leftover = target / f".{SITE_PACKAGE}.{host}-{dead.stdout.strip()}.abc123{PARTIAL_SUFFIX}"
    leftover.write_bytes(b"PK\x03\x04 truncated")
    before = package_identities(target)

    run_to_end(command, env)

    assert package_bytes(target) == expected
    assert not leftover.exists()
    assert not list(target.glob(f".*{PARTIAL_SUFFIX}"))
    after = package_identities(target)
    for name, identity in before.items():
        assert after[name] == identity, f"{name} was complete but written again"


def test_export_rerun_rewrites_changed_and_damaged(demo, tmp_path, bitstream_storage):
    folder = tmp_path / "export"
    export_site(folder)
    item = Item.objects.filter(handle__isnull=False, withdrawn=False).order_by("handle__suffix_number").first()
    changed = f"ITEM@{item.handle_string.replace('/', '-')}.zip"
    title = item.metadata.get(field__element="title", field__qualifier__isnull=True)
    title.value = "Changed title"
    title.save()
    damaged = next(name for name in sorted(package_bytes(folder)) if name.startswith("ITEM@") and name != changed)
    data = bytearray((folder / damaged).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / damaged).write_bytes(bytes(data))
    before = package_identities(folder)

    export_site(folder)

    fresh = tmp_path / "fresh"
    export_site(fresh)
    assert package_bytes(folder) == package_bytes(fresh)
    after = package_identities(folder)
    rewritten = sorted(name for name in before if after[name] != before[name])
    assert rewritten == sorted([changed, damaged])


# --- kills at chosen moments --------------------------------------------------------------------


# Runs a management command with one function replaced by a wrapper that kills the process with
# SIGKILL, before or after calling it: argv is "module:Class.function", "before" or "after", then the command.
KILLED_AT = """
import importlib, os, signal, sys
import django
django.setup()
target, moment, *command = sys.argv[1:]
module_name, _, path = target.partition(":")
owner = importlib.import_module(module_name)
*parents, name = path.split(".")
for parent in parents:
    owner = getattr(owner, parent)
original = getattr(owner, name)
def killed(*args, **kwargs):
    if moment == "after":
        original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(owner, name, killed)
from django.core.management import call_command
call_command(*command)
"""


def run_killed_at(target: str, moment: str, command: list[str], env: dict[str, str]) -> None:
    """Run ``manage.py`` ``command`` in a subprocess that kills itself before or after ``target`` runs."""
    completed = subprocess.run(
        [sys.executable, "-c", KILLED_AT, target, moment, *command],
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        cwd=MANAGE.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == -signal.SIGKILL, f"the run was not killed at {target}: {completed.stderr}"
    other_sessions_end()


def journal_files(root: Path) -> list[str]:
    folder = root / JOURNAL_FOLDER
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def replace_command(folder: Path) -> list[str]:
    return [
        "packager", "-t", "AIP", "-e", ADMIN_EMAIL, "-r", "-a", "-f", "-u", "-i", SITE_HANDLE, str(folder / SITE_PACKAGE)
    ]


def test_replace_killed_after_commit_then_swept(demo, tmp_path, bitstream_storage):
    folder = tmp_path / "export"
    export_site(folder)
    old_files = referenced_files()
    snapshot = database_snapshot()

    run_killed_at(
        "aip.services.bitstream_ingest:StoredFiles.deletions_apply", "before",
        replace_command(folder), subprocess_env(bitstream_storage),
    )

    # The replace committed, so the rows name only new files, but the old ones are still stored.
    new_files = referenced_files()
    assert database_snapshot() == snapshot
    assert not set(new_files) & set(old_files)
    stored = set(stored_files(bitstream_storage))
    assert set(old_files) <= stored
    assert any(name.endswith(DELETIONS_SUFFIX) for name in journal_files(bitstream_storage))

    call_command("aip_storage_sweep")

    assert stored_files(bitstream_storage) == new_files
    assert journal_files(bitstream_storage) == []


def test_replace_killed_before_commit_then_swept(demo, tmp_path, bitstream_storage):
    folder = tmp_path / "export"
    export_site(folder)
    old_files = referenced_files()
    snapshot = database_snapshot()

    # Killed once the list of files to delete is stored, just before the commit.
    run_killed_at(
        "aip.services.bitstream_ingest:StoredFiles.deletions_record", "after",
        replace_command(folder), subprocess_env(bitstream_storage),
    )

    assert database_snapshot() == snapshot
    assert referenced_files() == old_files
    assert len(stored_files(bitstream_storage)) > len(old_files)
    assert any(name.endswith(DELETIONS_SUFFIX) for name in journal_files(bitstream_storage))

    call_command("aip_storage_sweep")

    assert stored_files(bitstream_storage) == old_files
    assert journal_files(bitstream_storage) == []


def test_submit_killed_after_license_then_swept(demo, tmp_path, bitstream_storage):
    item = Item.objects.filter(in_archive=True, withdrawn=False).order_by("handle__suffix_number").first()
    package = tmp_path / "item.zip"
    packager_run = ["packager", "-t", "AIP", "-e", ADMIN_EMAIL]
    call_command(*packager_run, "-d", "-i", item.handle_string, str(package))
    files_before = stored_files(bitstream_storage)
    snapshot = database_snapshot()
    license_bytes = license_text(item.owning_collection).encode("utf-8")

    run_killed_at(
        "aip.services.object_ingest:submission_record", "after",
        [*packager_run, "-s", "-w", "-p", item.owning_collection.handle_string, str(package)],
        subprocess_env(bitstream_storage),
    )

    assert database_snapshot() == snapshot
    left = set(stored_files(bitstream_storage)) - set(files_before)
    licences = [name for name in left if (bitstream_storage / name).read_bytes() == license_bytes]
    assert licences, "the killed submit left no licence file, so the sweep of licences was not exercised"

    call_command("aip_storage_sweep")

    assert stored_files(bitstream_storage) == files_before
    assert journal_files(bitstream_storage) == []


def test_sweep_deletions_wait_then_keep_referenced(demo, bitstream_storage):
    """A list of replaced files waits while its transaction is open, and a file that a row names is never deleted."""
    referenced = referenced_files()[0]
    orphan = "zz/zz/replaced-file"
    (bitstream_storage / orphan).parent.mkdir(parents=True)
    (bitstream_storage / orphan).write_bytes(b"old content")
    run_id = uuid.uuid4()
    deletions = bitstream_storage / JOURNAL_FOLDER / f"{run_id}{DELETIONS_SUFFIX}"
    deletions.parent.mkdir(exist_ok=True)

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()::text")
            transaction_id = cursor.fetchone()[0]
        record = {"run": str(run_id), "transaction": transaction_id, "files": [referenced, orphan]}
        deletions.write_text(json.dumps(record))
        open_report = ingest_runs_sweep()

    assert open_report.runs_alive == [str(run_id)]
    assert (bitstream_storage / orphan).exists()

    committed_report = ingest_runs_sweep()

    assert committed_report.runs_swept == [str(run_id)]
    assert committed_report.files_deleted == [orphan]
    assert committed_report.files_kept == 1
    assert (bitstream_storage / referenced).exists()
    assert not (bitstream_storage / orphan).exists()
    assert not deletions.exists()

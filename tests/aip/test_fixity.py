"""Fixity checks of stored backup packages and bitstream files, a share at a time."""
from __future__ import annotations

import json
import logging
from io import StringIO

import django_rq
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from aip.errors import AipError
from aip.models import Backup, BackupSchedule, FixityProblem, FixityRun
from aip.services.backups import INDEX_NAME
from aip.services.fixity import FIXITY_FUNCTION, FIXITY_JOB_ID, fixity_run, share_parse
from aip.tasks import fixity_check
from aip.services.schedules import backup_start, schedule_save
from repository.models import Bitstream
from tests.aip.conftest import ADMIN_EMAIL
from tests.aip.test_backups import aips  # noqa: F401  (fixture: the "aips" storage in a test folder)


@pytest.fixture
def backup(demo, aips):  # noqa: F811
    schedule = schedule_save(BackupSchedule(
        name="site", cron="0 2 * * *", storage="aips", folder="backups/site", keep=3, eperson_email=ADMIN_EMAIL
    ))
    job = backup_start(schedule)
    backup = Backup.objects.get(job=job)
    assert backup.state == Backup.State.VERIFIED, job.error
    return backup


def stored_bitstreams() -> list[Bitstream]:
    return list(Bitstream.objects.exclude(file="").exclude(checksum=""))


def test_all_files_pass(backup):
    run = fixity_run("all")

    assert run.state == FixityRun.State.PASSED
    assert run.problem_count == 0
    assert run.files_checked == backup.packages + len(stored_bitstreams())
    assert run.bytes_checked >= backup.bytes


def test_changed_package_and_missing_bitstream_are_reported(backup, aips, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="aip")
    index = json.loads((aips / backup.folder / INDEX_NAME).read_text())
    name = sorted(index["packages"])[1]
    with (aips / backup.folder / name).open("r+b") as package:
        package.seek(40)
        package.write(b"\x00\x01\x02")
    bitstream = stored_bitstreams()[0]
    bitstream.file.storage.delete(bitstream.file.name)

    run = fixity_run("all")

    problems = {problem.kind: problem for problem in run.problems.all()}
    assert run.state == FixityRun.State.PROBLEMS
    assert run.problem_count == 2
    changed = problems[FixityProblem.Kind.CHANGED]
    assert changed.location == f"aips:{backup.folder}/{name}"
    assert changed.expected == f"{index['packages'][name]['md5']} {index['packages'][name]['size']} bytes"
    assert changed.actual.split()[0] != index["packages"][name]["md5"]
    missing = problems[FixityProblem.Kind.MISSING]
    assert missing.source == FixityProblem.Source.BITSTREAM
    assert str(bitstream.uuid) in missing.location
    assert name in caplog.text
    assert str(bitstream.uuid) in caplog.text


def test_missing_index_is_reported(backup, aips):  # noqa: F811
    (aips / backup.folder / INDEX_NAME).unlink()

    # A small share still checks the index, because without it no package of the backup can be checked.
    run = fixity_run("1/1000")

    problem = run.problems.get()
    assert problem.kind == FixityProblem.Kind.MISSING
    assert problem.location == f"aips:{backup.folder}/{INDEX_NAME}"


def test_shares_rotate_and_cover_everything_once(backup):
    total = backup.packages + len(stored_bitstreams())

    runs = [fixity_run("1/3") for _ in range(4)]

    assert [run.first_slot for run in runs] == [0, 1, 2, 0]
    assert sum(run.files_checked for run in runs[:3]) == total
    assert runs[3].files_checked == runs[0].files_checked
    assert all(run.state == FixityRun.State.PASSED for run in runs)


def test_command_lists_problems_and_fails(backup, aips):  # noqa: F811
    bitstream = stored_bitstreams()[0]
    bitstream.file.storage.delete(bitstream.file.name)
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match=r"found 1 problem\(s\)"):
        call_command("aip_fixity", "--share", "all", stdout=out, stderr=err)

    assert f"MISSING: bitstream {bitstream.uuid}" in err.getvalue()
    assert "share 1/1 (slots 0 to 0 of 1)" in out.getvalue()


def test_command_passes(backup):
    out = StringIO()
    call_command("aip_fixity", "--share", "2/7", stdout=out)
    assert "0 problem(s)" in out.getvalue()


@pytest.mark.parametrize("share", ["0/7", "8/7", "1/0", "a week", "1/100000"])
def test_bad_share_is_rejected(share):
    with pytest.raises(AipError, match=f"Share '{share}' is invalid"):
        share_parse(share)


def test_command_rejects_bad_share(db):
    with pytest.raises(CommandError, match="Share '3' is invalid"):
        call_command("aip_fixity", "--share", "3")


def test_failed_run_slots_are_checked_again(backup, monkeypatch):
    first = fixity_run("1/3")

    def unreadable_storage(backup):
        raise RuntimeError("storage unavailable")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError):
        patch.setattr("aip.services.fixity.backup_index_read", unreadable_storage)
        fixity_run("1/3")
    retried = fixity_run("1/3")

    failed = FixityRun.objects.get(state=FixityRun.State.FAILED)
    assert failed.first_slot == 1
    assert "RuntimeError: storage unavailable" in failed.error
    assert first.first_slot == 0
    assert retried.first_slot == 1


def test_task_runs_share(backup):
    assert fixity_check("all") == 0
    assert FixityRun.objects.get().share == "1/1"


def test_register_puts_one_cron_job_on_scheduler(settings, db):
    url = "redis://127.0.0.1:6379/7"
    settings.REDIS_URL = url
    settings.RQ_QUEUES = {"default": {"URL": url, "DEFAULT_TIMEOUT": 3600, "ASYNC": True}}
    connection = django_rq.get_connection("default")
    connection.flushdb()
    try:
        call_command("aip_fixity", "--share", "1/7", "--register", "0 3 * * *", stdout=StringIO())
        call_command("aip_fixity", "--share", "2/7", "--register", "30 4 * * *", stdout=StringIO())
        scheduler = django_rq.get_scheduler("default")
        jobs = list(scheduler.get_jobs())
    finally:
        connection.flushdb()

    assert [job.id for job in jobs] == [FIXITY_JOB_ID]
    assert jobs[0].func_name == FIXITY_FUNCTION
    assert jobs[0].args == ["2/7"]
    assert jobs[0].meta["cron_string"] == "30 4 * * *"

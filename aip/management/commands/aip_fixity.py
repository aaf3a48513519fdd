"""``manage.py aip_fixity``: re-read a share of the stored backups and bitstream files and compare checksums."""
from __future__ import annotations

import django_rq
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rq_scheduler import Scheduler

from aip.errors import AipError
from aip.models import FixityRun
from aip.services.fixity import DEFAULT_SHARE, fixity_register, fixity_run, share_parse


class Command(BaseCommand):
    help = (
        "Check the fixity of a share of the stored files: every package of each verified backup against its "
        "backup.json, and every bitstream file against its checksum. Each run continues where the previous run "
        "with the same share stopped, so a daily run with --share 1/7 covers everything in a week. Problems are "
        "listed here, in the log and in the admin (Fixity runs). Exits with status 1 when a file changed, went "
        "missing or could not be read."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--share",
            default=DEFAULT_SHARE,
            metavar="K/N",
            help=f"Check K of N slots per run, for example 1/7, or 'all' (default {DEFAULT_SHARE}).",
        )
        parser.add_argument(
            "--register",
            metavar="CRON",
            help='Instead of checking now, register the check on rq-scheduler at CRON (UTC), for example "0 3 * * *", '
            "with this share; aip_scheduler then queues it and a worker runs it. Needs REDIS_URL.",
        )

    def handle(self, *args, **options) -> None:
        try:
            share_parse(options["share"])
            if options["register"]:
                self._register(options["register"], options["share"])
                return
            run = fixity_run(options["share"])
        except AipError as error:
            raise CommandError(str(error)) from error
        self._print(run)
        if run.problem_count:
            raise CommandError(
                f"Fixity run {run.pk} found {run.problem_count} problem(s); each is listed above and in the admin."
            )

    def _register(self, cron: str, share: str) -> None:
        if not settings.REDIS_URL:
            raise CommandError(
                "REDIS_URL is not set, and rq-scheduler keeps its schedule in Redis. Set REDIS_URL, or run "
                "'manage.py aip_fixity --share K/N' from cron instead."
            )
        try:
            scheduler = Scheduler(queue_name="default", connection=django_rq.get_connection("default"))
            fixity_register(scheduler, cron=cron, share=share)
        except redis.RedisError as error:
            raise CommandError(f"Registering the fixity check failed because Redis failed: {error}.") from error
        self.stdout.write(f"Registered the fixity check of {share} of the stored files at {cron!r} (UTC).")

    def _print(self, run: FixityRun) -> None:
        for problem in run.problems.all():
            expected = f" (expected {problem.expected}, read {problem.actual})" if problem.actual else ""
            detail = f": {problem.detail}" if problem.detail else ""
            self.stderr.write(f"{problem.get_kind_display().upper()}: {problem.location}{expected}{detail}")
        last = (run.first_slot + run.slot_count - 1) % run.slots
        self.stdout.write(
            f"Fixity run {run.pk}: share {run.share} (slots {run.first_slot} to {last} of {run.slots}), "
            f"{run.files_checked} file(s), {run.bytes_checked} bytes checked, {run.problem_count} problem(s)."
        )

"""``manage.py aip_jobs_reap``: mark failed the running jobs whose worker stopped sending heartbeats."""
from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aip.services.jobs import HEARTBEAT_INTERVAL, jobs_reap

# Ten heartbeat intervals, so a job is reaped only after its worker missed ten heartbeats in a row.
DEFAULT_STALE_AFTER = int(HEARTBEAT_INTERVAL * 10)


class Command(BaseCommand):
    help = (
        "Mark failed every running AIP job whose heartbeat is older than --stale-after, because its worker was "
        "killed or its machine was lost. A reaped job can be retried. Run it from cron, for example every 10 minutes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stale-after",
            type=int,
            default=DEFAULT_STALE_AFTER,
            metavar="SECONDS",
            help=f"Age in seconds of the last heartbeat after which a running job counts as lost "
            f"(default {DEFAULT_STALE_AFTER}; a live worker refreshes it every {int(HEARTBEAT_INTERVAL)} s).",
        )

    def handle(self, *args, **options) -> None:
        minimum = int(HEARTBEAT_INTERVAL * 2)
        if options["stale_after"] < minimum:
            # Below two heartbeat intervals, a live job between two heartbeats would be taken for a lost one.
            raise CommandError(f"--stale-after must be at least {minimum} seconds, not {options['stale_after']}.")
        reaped = jobs_reap(stale_after=timedelta(seconds=options["stale_after"]))
        if reaped:
            self.stdout.write(f"Marked {len(reaped)} job(s) failed: {', '.join(str(job_id) for job_id in reaped)}")
        elif options["verbosity"] >= 1:
            self.stdout.write("No running job is stale.")

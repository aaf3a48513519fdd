"""``manage.py aip_scheduler``: run rq-scheduler with the backup schedule tick registered on it."""
from __future__ import annotations

import logging

import django_rq
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rq_scheduler import Scheduler
from rq_scheduler.utils import setup_loghandlers

from aip.services.schedules import TICK_CRON, TICK_JOB_ID, schedules_tick, tick_register

QUEUE_NAME = "default"


class Command(BaseCommand):
    help = (
        "Register the backup schedule tick (a cron job that runs every minute on the RQ queue "
        f'"{QUEUE_NAME}") on rq-scheduler and run rq-scheduler\'s loop, which moves due RQ jobs onto their '
        "queues. Workers of that queue run the tick, which starts a backup job for each due schedule, and then "
        "the backups. Needs REDIS_URL. Without Redis, run this command with --once from cron every minute."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--interval",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="Seconds between two checks of rq-scheduler for due RQ jobs (default 60).",
        )
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Register the tick, move the RQ jobs that are due now onto their queues once, and exit.",
        )
        parser.add_argument(
            "--once",
            action="store_true",
            help="Run one tick in this process and exit, without rq-scheduler: start a backup job for each due "
            "schedule. Without REDIS_URL the backups run in this process too.",
        )

    def handle(self, *args, **options) -> None:
        if options["once"]:
            self._tick_once(options["verbosity"])
            return
        if options["interval"] <= 0:
            raise CommandError(f"--interval must be a positive number of seconds, not {options['interval']}.")
        if not settings.REDIS_URL:
            raise CommandError(
                "REDIS_URL is not set, and rq-scheduler keeps its schedule in Redis. Set REDIS_URL, or run "
                "'manage.py aip_scheduler --once' from cron every minute."
            )
        scheduler = self._scheduler(options["interval"])
        self._register(scheduler)
        if options["verbosity"] >= 2:
            setup_loghandlers("DEBUG")
        elif options["verbosity"] >= 1:
            setup_loghandlers("INFO")
        try:
            scheduler.run(burst=options["burst"])
        except redis.RedisError as error:
            raise CommandError(f"rq-scheduler stopped because Redis failed: {error}. Check REDIS_URL.") from error

    def _tick_once(self, verbosity: int) -> None:
        jobs = schedules_tick()
        for job in jobs:
            self.stdout.write(f"Job {job.pk}: backup of schedule {job.schedule} is {job.state}.")
        if not jobs and verbosity >= 1:
            self.stdout.write("No backup schedule is due.")

    def _scheduler(self, interval: float) -> Scheduler:
        connection = django_rq.get_connection(QUEUE_NAME)
        return Scheduler(queue_name=QUEUE_NAME, connection=connection, interval=interval)

    def _register(self, scheduler: Scheduler) -> None:
        try:
            registered = tick_register(scheduler, queue_name=QUEUE_NAME)
        except redis.RedisError as error:
            raise CommandError(
                f"Registering the tick on Redis failed: {error}. Check REDIS_URL and that Redis is running."
            ) from error
        state = "registered" if registered else "already registered"
        self.stdout.write(f"Backup schedule tick {TICK_JOB_ID} ({TICK_CRON}) {state} on queue {QUEUE_NAME}.")
        logging.getLogger(__name__).info("backup schedule tick %s", state)

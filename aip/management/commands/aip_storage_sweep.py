"""``manage.py aip_storage_sweep``: delete bitstream files left by ingest runs that were killed."""
from __future__ import annotations

from django.core.management.base import BaseCommand

from aip.services.bitstream_ingest import ingest_runs_sweep


class Command(BaseCommand):
    help = (
        "Delete the bitstream files stored by ingest runs that died without cleaning up (killed, or their "
        "machine lost power), as recorded in their journals under .ingest-runs/ in the bitstream storage, "
        "and the old files of bitstreams that such a run replaced when its transaction had committed. "
        "Files that a Bitstream row names are kept, and runs still in progress are left alone. Every ingest "
        "does this sweep when it starts, so this command is only needed when no ingest follows a crash."
    )

    def handle(self, *args, **options) -> None:
        report = ingest_runs_sweep()
        for run in report.runs_swept:
            self.stdout.write(f"Swept killed ingest run {run}")
        for run in report.runs_alive:
            self.stdout.write(f"Left ingest run {run} alone: it is still running")
        self.stdout.write(
            f"{len(report.runs_swept)} killed run(s) swept, {len(report.files_deleted)} file(s) deleted, "
            f"{report.files_kept} file(s) kept because bitstreams name them, "
            f"{len(report.runs_alive)} run(s) still running"
        )

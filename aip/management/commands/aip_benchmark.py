"""``manage.py aip_benchmark``: time export and restore against plain file copies."""
from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from aip.benchmark import BenchmarkError, Shape, benchmark_run, scratch_server

# No test uses this database; the benchmark still rejects it while it contains keys.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"
SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3}


def byte_size(text: str) -> int:
    """Parse a size such as 4096, 4K, 20MB or 1G (binary units) into bytes."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("I")
    number = cleaned.rstrip("KMGB")
    unit = cleaned[len(number):]
    if not number.isdigit() or unit not in SIZE_UNITS:
        raise ValueError(f"invalid size {text!r}: use a number of bytes, optionally followed by K, M or G")
    return int(number) * SIZE_UNITS[unit]


class Command(BaseCommand):
    help = (
        "Generate a repository of the given shape in a scratch PostgreSQL database (created and dropped on the "
        "server of DATABASE_URL; the configured database is never touched) and a scratch folder, then measure a "
        "full-site export, an export of unchanged items (updatedAfter), a full and an incremental backup job, a "
        "restore into an empty database, and copying the same files with and without MD5. Prints time, items per "
        "second, ratio to the step's baseline (a copy, or the export for the backups), peak memory and SQL queries "
        "per item of each step. Needs free disk of about 5 times items x files x size."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--items", type=int, default=1000, help="Number of items to generate (default 1000).")
        parser.add_argument("--files", type=int, default=2, help="Files per item (default 2).")
        parser.add_argument(
            "--file-size", default="4K", help="Size of each file in bytes, or with K, M or G (binary units; default 4K)."
        )
        parser.add_argument(
            "--workers", type=int, default=1,
            help="RQ workers that run the export and the restore as split jobs, and processes that copy for the "
            "baselines (default 1). With 1 and no --parts, the export and the restore each run in one process "
            "without RQ.",
        )
        parser.add_argument(
            "--parts", type=int,
            help="Part jobs of the split export and restore, from 2 to 1000, or 0 for no split (default: twice "
            "--workers, or 0 with one worker).",
        )
        parser.add_argument(
            "--redis-url", default=DEFAULT_REDIS_URL,
            help=f"Scratch Redis database of the split jobs' queue (default {DEFAULT_REDIS_URL}); it must be empty, "
            "and it is flushed when the benchmark ends.",
        )
        parser.add_argument(
            "--scratch-name", default=f"aip_bench_{os.getpid()}",
            help="Name of the scratch database (default aip_bench_<process id>); the restore uses <name>_restore. "
            "Both are dropped at the end.",
        )
        parser.add_argument("--work-dir", help="Folder for the scratch files (default: the system temporary folder).")
        parser.add_argument("--profile", help="Folder to write a cProfile file per step into (<step>-<worker>.prof).")
        parser.add_argument(
            "--warm-memory",
            action="store_true",
            help="Touch the memory each step writes just before it starts, instead of pausing until freed memory "
            "has gone back to the hypervisor (see docs/benchmarks.md, \"Memory of a virtual machine\").",
        )
        parser.add_argument("--json", action="store_true", help="Print the figures as JSON instead of a table.")

    def handle(self, *args, **options) -> None:
        parts = options["parts"]
        if parts is None:
            parts = 0 if options["workers"] == 1 else 2 * options["workers"]
        try:
            shape = Shape(
                items=options["items"],
                files_per_item=options["files"],
                file_size=byte_size(options["file_size"]),
                workers=options["workers"],
                parts=parts,
            )
        except ValueError as error:
            raise CommandError(f"--file-size: {error}.") from None
        profile_dir = Path(options["profile"]).resolve() if options["profile"] else None
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
        progress = (lambda message: None) if options["json"] else (lambda message: self.stderr.write(message))
        try:
            server = scratch_server(settings.DATABASES["default"], options["scratch_name"])
            figures = benchmark_run(
                shape,
                server=server,
                scratch_name=options["scratch_name"],
                work_dir=Path(options["work_dir"]) if options["work_dir"] else None,
                profile_dir=profile_dir,
                report=progress,
                redis_url=options["redis_url"],
                warm_memory=options["warm_memory"],
            )
        except BenchmarkError as error:
            raise CommandError(str(error)) from None
        if options["json"]:
            self.stdout.write(json.dumps(figures, indent=2))
        else:
            self.stdout.write(figures_table(figures))


MEMORY_STATES = {
    "settled": "returned to the hypervisor before each step, which pauses when the files take 256 MiB or more",
    "warmed": "touched by each step just before it started (--warm-memory)",
}


def figures_table(figures: dict) -> str:
    """Format the figures of a run as a plain-text table, one row per step."""
    shape = figures["shape"]
    lines = [
        f"{shape['items']} items x {shape['files_per_item']} file(s) of {shape['file_size']} bytes, "
        f"{shape['workers']} worker(s)"
        + (f", export and restore split into {shape['parts']} part jobs on RQ" if shape["parts"] else ""),
        "",
        f"{'step':<20} {'seconds':>9} {'CPU s':>7} {'items/s':>9} {'ratio':>14} {'peak MB':>8} {'queries/item':>13}",
    ]
    for name, step in figures["steps"].items():
        ratio = "-"
        if step["ratio_to_baseline"] is not None:
            ratio = f"{step['ratio_to_baseline']:.2f}x {step['baseline']}"
        items_per_second = f"{step['items_per_second']:.0f}" if step["items_per_second"] is not None else "-"
        lines.append(
            f"{name:<20} {step['seconds']:>9.2f} {step['cpu_seconds']:>7.2f} {items_per_second:>9} {ratio:>14} "
            f"{step['peak_rss_mb']:>8.0f} "
            f"{step['queries_per_item']:>13.2f}"
        )
    lines += [
        "",
        f"Incremental export: {figures['incremental_export_method']}.",
        f"Backups: {figures['backup_method']}.",
        f"Peak memory: {figures['memory_method']}.",
        f"Memory written by the steps: {MEMORY_STATES[figures['memory_state']]}.",
    ]
    return "\n".join(lines)

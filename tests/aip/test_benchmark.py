"""``manage.py aip_benchmark`` on a tiny repository, and its refusals."""
from __future__ import annotations

import io
import json
import os

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from aip.benchmark import (
    STEPS,
    BenchmarkError,
    ScratchServer,
    Shape,
    benchmark_run,
    memory_warm,
    peak_rss_mb,
    scratch_server,
)
from aip.management.commands.aip_benchmark import figures_table

ITEMS = 20
FILES = 2
FILE_SIZE = 4096


def scratch_databases(prefix: str) -> list[str]:
    server = scratch_server(settings.DATABASES["default"], prefix)
    with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
        rows = connection.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"]).fetchall()
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def figures() -> dict:
    scratch = f"aip_bench_test_{os.getpid()}"
    output = io.StringIO()
    call_command(
        "aip_benchmark", items=ITEMS, files=FILES, file_size=str(FILE_SIZE), scratch_name=scratch, json=True,
        stdout=output,
    )
    result = json.loads(output.getvalue())
    result["scratch_name"] = scratch
    return result


def test_benchmark_reports_every_step(figures):
    assert set(figures["steps"]) == set(STEPS)
    for name, step in figures["steps"].items():
        assert step["seconds"] > 0, name
        assert 20 < step["peak_rss_mb"] < 1000, name
        assert step["items_per_second"] > 0, name


def test_benchmark_memory_settles_by_default(figures):
    assert figures["memory_state"] == "settled"


def test_memory_warm_resets_peak():
    before = peak_rss_mb()

    memory_warm(300 * 1024 * 1024)

    # Without the reset, the peak would include the 300 MB touched.
    assert peak_rss_mb() < before + 100


def test_benchmark_generates_requested_shape(figures):
    assert figures["generated"]["items"] == ITEMS
    assert figures["generated"]["bitstreams"] == ITEMS * FILES
    assert figures["steps"]["copy"]["bytes_written"] == ITEMS * FILES * FILE_SIZE
    assert figures["steps"]["copy_md5"]["bytes_written"] == ITEMS * FILES * FILE_SIZE


def test_benchmark_exports_and_restores_every_package(figures):
    # The site, one community and one collection, then one package per item.
    assert figures["steps"]["export"]["packages"] == ITEMS + 3
    assert figures["steps"]["restore"]["packages"] == ITEMS + 3
    assert figures["steps"]["restore"]["bytes_written"] == ITEMS * FILES * FILE_SIZE


def test_benchmark_incremental_export_leaves_items_out(figures):
    incremental = figures["steps"]["incremental_export"]
    assert incremental["unchanged"] == ITEMS
    assert incremental["packages"] == 3


def test_benchmark_incremental_backup_copies_items(figures):
    full = figures["steps"]["full_backup"]
    incremental = figures["steps"]["incremental_backup"]
    assert full["packages_written"] == ITEMS + 3
    assert incremental["packages"] == ITEMS + 3
    assert incremental["packages_copied"] == ITEMS
    assert incremental["packages_written"] == 3
    assert incremental["baseline"] == "export"


def test_benchmark_ratios_compare_with_baselines(figures):
    steps = figures["steps"]
    assert steps["export"]["baseline"] == "copy"
    assert steps["restore"]["baseline"] == "copy_md5"
    assert steps["export"]["ratio_to_baseline"] == pytest.approx(
        steps["export"]["seconds"] / steps["copy"]["seconds"], rel=0.01
    )


def test_benchmark_queries_per_item_bounded(figures):
    assert figures["steps"]["restore"]["queries_per_item"] < 5
    assert figures["steps"]["export"]["queries_per_item"] < 15


def test_benchmark_drops_scratch_databases(figures):
    assert scratch_databases(figures["scratch_name"]) == []


def test_scratch_server_rejects_sqlite():
    with pytest.raises(BenchmarkError, match="needs PostgreSQL"):
        scratch_server({"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}, "aip_bench_x")


def test_benchmark_rejects_configured_database():
    configured = settings.DATABASES["default"]["NAME"]
    with pytest.raises(CommandError, match="is the configured database"):
        call_command("aip_benchmark", items=1, scratch_name=configured, stdout=io.StringIO())


def test_benchmark_names_unreachable_postgresql(tmp_path):
    server = ScratchServer(host="127.0.0.1", port="1", user="postgres", password="", configured_name="aip_backup")
    work = tmp_path / "work"
    work.mkdir()

    with pytest.raises(BenchmarkError, match="PostgreSQL at 127.0.0.1:1 cannot be reached .*Start PostgreSQL"):
        benchmark_run(Shape(items=1, files_per_item=1, file_size=1), server=server, scratch_name="aip_bench_gone",
                      work_dir=work)

    assert list(work.iterdir()) == []


@pytest.mark.parametrize("parts", [1, -2, 1001])
def test_benchmark_rejects_invalid_parts(parts):
    with pytest.raises(CommandError, match=f"Invalid number of parts {parts}: give a number from 2 to 1000"):
        call_command("aip_benchmark", items=1, parts=parts, scratch_name=f"aip_bench_parts_{os.getpid()}")


def test_benchmark_rejects_zero_items():
    with pytest.raises(CommandError, match="--items 0, .*Give at least 1 item"):
        call_command("aip_benchmark", items=0, scratch_name=f"aip_bench_zero_{os.getpid()}")


def test_benchmark_rejects_invalid_file_size():
    with pytest.raises(CommandError, match="invalid size '4X'"):
        call_command("aip_benchmark", items=1, file_size="4X", stdout=io.StringIO())


def test_benchmark_keeps_existing_scratch_database():
    name = f"aip_bench_test_existing_{os.getpid()}"
    server = scratch_server(settings.DATABASES["default"], name)
    with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        with pytest.raises(CommandError, match="already exists"):
            call_command("aip_benchmark", items=1, scratch_name=name, stdout=io.StringIO())
        assert scratch_databases(name) == [name]
    finally:
        with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_table_shows_tiny_ratio():
    figures = {
        "shape": {"items": 2, "files_per_item": 2, "file_size": 1024, "workers": 1, "parts": 0},
        "steps": {
            "incremental_export": {
                "seconds": 0.05, "cpu_seconds": 0.03, "items_per_second": 40.0, "baseline": "copy",
                "ratio_to_baseline": 0.0, "peak_rss_mb": 90.0, "queries_per_item": 16.5,
            },
        },
        "incremental_export_method": "-", "backup_method": "-", "memory_method": "-", "memory_state": "settled",
    }

    row = figures_table(figures).splitlines()[3]

    assert "0.00x copy" in row

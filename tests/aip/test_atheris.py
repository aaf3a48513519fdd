"""The atheris harness (fuzz/aip_reader.py) runs a bounded number of mutated packages.

The seeds are the packages of an export of the demo repository and, when
AIP_SAMPLES_DIR is set, DSpace's small sample AIPs. Any exception the reader or
verify raises outside the project's own errors makes the harness exit non-zero and
write the input that caused it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from tests.aip.conftest import export_site

HARNESS = Path(settings.BASE_DIR) / "fuzz" / "aip_reader.py"
RUNS = 2000
# Larger seeds slow every mutation down; the small ones already reach the same reader code.
SEED_BYTES = 300 * 1024


def seeds_collect(corpus: Path, export_dir: Path) -> list[str]:
    sources = sorted(export_dir.glob("*.zip"))
    samples = os.environ.get("AIP_SAMPLES_DIR")
    if samples:
        sources += sorted(path for path in Path(samples).rglob("*.zip") if path.stat().st_size <= SEED_BYTES)
    for index, source in enumerate(sources):
        shutil.copyfile(source, corpus / f"seed-{index:03d}.zip")
    return [path.name for path in sources]


def test_atheris_harness_finds_no_crash(demo, tmp_path):
    corpus = tmp_path / "corpus"
    artifacts = tmp_path / "artifacts"
    corpus.mkdir()
    artifacts.mkdir()
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    export_site(export_dir)
    seeds = seeds_collect(corpus, export_dir)

    finished = subprocess.run(
        [sys.executable, str(HARNESS), f"-runs={RUNS}", "-seed=1", f"-artifact_prefix={artifacts}/", str(corpus)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert len(seeds) >= 16
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert list(artifacts.iterdir()) == []
    assert f"Done {RUNS} runs" in finished.stderr

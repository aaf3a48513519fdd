"""Coverage-guided fuzzing of the AIP reader with atheris (libFuzzer).

Each input is the bytes of a package zip. The harness opens it, reads and parses
mets.xml and runs the checks an ingest runs before writing anything: these may fail
only with the project's own ``AipError`` family. Then it verifies the package, which
streams every file and records each problem in its report, so it must not raise at
all. Any other exception is a bug, which atheris reports with the input that caused it.
Verify looks up parent handles, so the harness migrates a scratch SQLite database
first.

atheris takes over the process, so this is a script rather than a test:

    .venv/bin/python fuzz/aip_reader.py CORPUS_DIR [libFuzzer options]

CORPUS_DIR contains the seed packages (any AIPs: an export of the demo repository,
DSpace's samples) and collects the inputs that reach new code. Useful options:
``-runs=N`` (stop after N inputs), ``-max_total_time=SECONDS``,
``-artifact_prefix=DIR/`` (where a crashing input is written). The test suite
runs it for a bounded number of inputs.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

_SCRATCH = Path(tempfile.mkdtemp(prefix="aip-fuzz-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
os.environ["DATABASE_URL"] = f"sqlite:///{_SCRATCH / 'db.sqlite3'}"

with atheris.instrument_imports(include=["aip"]):
    import django

    django.setup()
    from django.core.management import call_command

    from aip.errors import AipError
    from aip.mets.reader import read_manifest
    from aip.package import package_open
    from aip.services.bitstream_ingest import package_preflight
    from aip.services.verify import tree_verify

# One file, rewritten for each input: libFuzzer runs many inputs, and zipfile needs a path.
_INPUT = _SCRATCH / "input.zip"


def package_read(data: bytes) -> None:
    """Read the package ``data`` as an ingest does before writing, then verify it."""
    _INPUT.write_bytes(data)
    try:
        with package_open(_INPUT) as reader:
            manifest = read_manifest(reader.manifest_bytes(), source=_INPUT.name)
            package_preflight(reader, manifest, source=_INPUT.name, warn=lambda message: None)
    except AipError:
        pass
    tree_verify(path=_INPUT, recursive=False, validate=False)


def main() -> None:
    call_command("migrate", verbosity=0)
    atheris.Setup(sys.argv, package_read)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""``manage.py aip_demo``: export a demo site, restore it into an empty database, export again, compare."""
from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "demo-password"


class Command(BaseCommand):
    help = (
        "Run the whole backup cycle on the embedded default (SQLite files and local folders under var/demo): "
        "build a demo repository, export the whole site as AIPs, restore them into a new empty database, "
        "export that again and check that both exports are byte-identical. Needs no other service."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--folder", default=str(settings.VAR_DIR / "demo"), help="Working folder (emptied first).")

    def handle(self, *args, **options) -> None:
        folder = Path(options["folder"]).resolve()
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        site = f"{settings.HANDLE_PREFIX}/0"
        package = f"SITE@{settings.HANDLE_PREFIX}-0.zip"

        source = self._installation(folder, "source")
        self._step(source, "build_demo_repository")
        self._step(source, "packager", "-d", "-t", "AIP", "-e", ADMIN_EMAIL, "-i", site, "-a", str(folder / "export-1" / package))

        restored = self._installation(folder, "restored")
        self._step(restored, "packager", "-r", "-a", "-f", "-u", "-t", "AIP", "-e", ADMIN_EMAIL, "-i", site, str(folder / "export-1" / package))
        self._step(restored, "packager", "-d", "-t", "AIP", "-e", ADMIN_EMAIL, "-i", site, "-a", str(folder / "export-2" / package))

        self._compare(folder / "export-1", folder / "export-2")

    def _installation(self, folder: Path, name: str) -> dict[str, str]:
        """Return the environment of a new installation with its own database and assetstore."""
        env = dict(os.environ)
        env.pop("REDIS_URL", None)
        env["DATABASE_URL"] = f"sqlite:///{folder / name / 'db.sqlite3'}"
        env["BITSTREAM_ROOT"] = str(folder / name / "assetstore")
        env["VAR_DIR"] = str(folder / name)
        self.stdout.write(f"\n== New installation '{name}': database {folder / name / 'db.sqlite3'}")
        self._step(env, "migrate", "--verbosity", "0")
        self._step(env, "create_administrator", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD)
        return env

    def _step(self, env: dict[str, str], *arguments: str) -> None:
        command = [sys.executable, str(settings.BASE_DIR / "manage.py"), *arguments]
        self.stdout.write("$ manage.py " + " ".join(arguments))
        completed = subprocess.run(command, env=env, cwd=settings.BASE_DIR, capture_output=True, text=True)
        output = (completed.stdout + completed.stderr).strip()
        if output:
            lines = output.splitlines()
            shown = lines if len(lines) <= 8 else lines[:3] + [f"... ({len(lines) - 6} more lines)"] + lines[-3:]
            self.stdout.write("\n".join(f"    {line}" for line in shown))
        if completed.returncode != 0:
            raise CommandError(f"Step 'manage.py {' '.join(arguments)}' failed with exit code {completed.returncode}.")

    def _compare(self, first: Path, second: Path) -> None:
        names = sorted(path.name for path in first.glob("*.zip"))
        others = sorted(path.name for path in second.glob("*.zip"))
        if names != others:
            raise CommandError(f"The exports hold different packages: {sorted(set(names) ^ set(others))}")
        _, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
        self.stdout.write(f"\n== Compared {len(names)} packages in {first} and {second}")
        if mismatch or errors:
            raise CommandError(f"These packages differ after the round trip: {', '.join(mismatch + errors)}")
        self.stdout.write(self.style.SUCCESS(f"All {len(names)} packages are byte-identical after export, restore and export."))

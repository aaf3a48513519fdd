"""Progress of long packager runs, for the command line and for background jobs.

Services take any object with ``total`` and ``advance`` (``Progress``): the job
recorder writes it to the job row, ``TerminalProgress`` draws it for a person
watching the command.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Protocol, TextIO

from django.template.defaultfilters import filesizeformat

# Without a terminal, a plain progress line is printed at most this often (seconds).
PLAIN_INTERVAL = 10.0
# On a terminal the bar is redrawn at most this often (seconds).
BAR_INTERVAL = 0.2


class Progress(Protocol):
    def total(self, objects: int) -> None: ...

    def advance(self, *, objects: int = 1, size: int = 0, line: str = "") -> None: ...


def package_count_estimate(path: Path, *, recursive: bool) -> int:
    """Estimate how many packages a run over ``path`` reads: every package in its folder when recursive.

    NOTE: a folder that contains more than one tree gives a total larger than the run reads.
    """
    if not recursive:
        return 1
    suffix = path.suffix.lower()
    try:
        return sum(1 for entry in path.parent.iterdir() if entry.suffix.lower() == suffix and entry.is_file())
    except OSError:
        return 1


class TerminalProgress:
    """A progress bar redrawn in place on a terminal, or a plain line now and then in a log."""

    def __init__(self, stream: TextIO, *, verb: str, is_terminal: bool, every_package: bool = False):
        self.stream = stream
        self.verb = verb
        self.is_terminal = is_terminal
        self.every_package = every_package
        self.objects_total: int | None = None
        self.objects_done = 0
        self.bytes_done = 0
        self.started = time.monotonic()
        # A run shorter than one interval prints no progress line, only its summary.
        self.last_draw = self.started
        self.drawn = False

    def total(self, objects: int) -> None:
        self.objects_total = objects

    def advance(self, *, objects: int = 1, size: int = 0, line: str = "") -> None:
        self.objects_done += objects
        self.bytes_done += size
        if self.every_package and line and not self.is_terminal:
            self.stream.write(f"  {line}\n")
        now = time.monotonic()
        interval = BAR_INTERVAL if self.is_terminal else PLAIN_INTERVAL
        if now - self.last_draw >= interval:
            self.last_draw = now
            self._draw()

    def package_written(self, path: Path) -> None:
        self.advance(size=path.stat().st_size, line=f"wrote {path.name}")

    def close(self) -> None:
        """End the bar's line, so that the summary that follows starts on a line of its own."""
        if self.is_terminal and self.drawn:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        self.drawn = True
        text = self._status()
        if not self.is_terminal:
            self.stream.write(f"  {text}\n")
            return
        width = shutil.get_terminal_size((80, 20)).columns
        bar = self._bar(max(10, width - len(text) - 4))
        self.stream.write(f"\r{bar} {text}"[: width + 1])
        self.stream.flush()

    def _status(self) -> str:
        seconds = time.monotonic() - self.started
        total = f"/{self.objects_total}" if self.objects_total else ""
        rate = f", {self.objects_done / seconds:.1f}/s" if seconds > 0 else ""
        return f"{self.verb} {self.objects_done}{total} packages, {filesizeformat(self.bytes_done)}{rate}"

    def _bar(self, width: int) -> str:
        if not self.objects_total:
            return "[" + " " * width + "]"
        filled = min(width, width * self.objects_done // self.objects_total)
        return "[" + "#" * filled + " " * (width - filled) + "]"

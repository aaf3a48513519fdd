"""A moto S3 server on 127.0.0.1 for tests.

The server runs as a child process, so the memory it uses for stored objects stays
out of the test process's tracemalloc figures. A test can also stop it to see how
clients behave when the service goes away.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# moto 5.2 starts in about half a second, so this leaves room for a loaded machine.
START_TIMEOUT = 20.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on at the moment of the call."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class S3Server:
    """One ``moto_server`` process listening on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        # A file, not a pipe, takes moto's request log, because a full pipe would block the server.
        self.log = tempfile.TemporaryFile()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening():
            if self.process.poll() is not None:
                self.log.seek(0)
                error = self.log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"moto_server on port {self.port} exited with {self.process.returncode}: {error}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not listen on port {self.port} within {START_TIMEOUT} s.")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

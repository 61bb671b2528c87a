"""A real ``redis-server`` for the tests: a free loopback port (never 6379), no persistence.

``stop()`` and ``start()`` again on the same port let a test take Redis away under a
running server and bring it back.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port if port != 6379 else _free_port()


class RedisServer:
    def __init__(self, log_path: Path) -> None:
        if REDIS_SERVER is None:
            reason = "redis-server is not on the PATH: apt-get install redis-server (or -m 'not redis')"
            if os.environ.get("CI"):
                pytest.fail(reason)  # CI installs it: a missing server there is a failure
            pytest.skip(reason)
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def options(self) -> list[str]:
        """Extra ``redis-server`` arguments (a cluster node adds its own)."""
        return []

    def start(self) -> None:
        """Start it (again) on its port; returns once it accepts connections."""
        assert REDIS_SERVER is not None and self.proc is None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "no",
                    *self.options(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Readiness: Redis cannot be handed a listening socket, so ask until it answers.
        for _ in range(500):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

"""The real server in a child process, on a free loopback port, race-free.

The test binds ``127.0.0.1:0`` and listens, then hands the socket to the server as
``--bind fd://N``: requests queue in the backlog until the app is up, so no readiness
polling is needed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from quart_sse.config import Settings

ROOT = Path(__file__).resolve().parents[2]

# Fast, quiet defaults for tests; each test may override any of them.
TEST_ENV = {
    "SIM_CHUNK_DELAY_MS": "2",
    "SIM_RESPONSE_CHUNKS": "12",
    "HEARTBEAT_INTERVAL": "15",
    "LOG_LEVEL": "warning",
    "SHUTDOWN_GRACE": "0",
}

# Never inherit settings from the machine running the tests: every variable the server reads.
_CLEARED = frozenset(Settings.environment_names())


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(4096)
    return sock


def server_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(TEST_ENV)
    env.update(overrides)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServerProcess:
    """``python -m quart_sse`` on an inherited listening socket."""

    def __init__(self, log_path: Path, **env: str) -> None:
        sock = listening_socket()
        self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        fd = sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "quart_sse", "--bind", f"fd://{fd}"],
            pass_fds=[fd],
            env=server_env(**env),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        sock.close()  # the child holds its own copy

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

"""Several worker processes on one listening socket, each running the project's own entry point.

``hypercorn --workers N`` never runs an app-owned drain (its workers stop on its own
shutdown event), so ``quart-sse --workers N`` does the process management itself: the
parent binds the listening socket once and starts N children
``python -m quart_sse --bind fd://K --worker I``; each child is a whole server with its own
SIGTERM drain, and the kernel shares the incoming connections among them.  The parent
forwards SIGTERM and SIGINT to every worker, waits for them all to exit and exits last.
A worker that dies on its own while the others serve is started again, unless it died
within :data:`EARLY_EXIT` seconds of its start (a broken setting or program), in which case
everything stops with its exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from hypercorn.config import Config

log = logging.getLogger("quart_sse.workers")

EARLY_EXIT = 5.0
"""A worker that exits sooner than this after its start is not restarted."""

FORWARDED = (signal.SIGTERM, signal.SIGINT)


def listen(binds: Sequence[str], backlog: int) -> list[socket.socket]:
    """Bind and listen on each of Hypercorn's bind strings (``host:port``, ``unix:``, ``fd://``).

    Connections queue in the backlog from here on, before any app is up.
    """
    config = Config()
    config.bind = list(binds)
    sockets = config.create_sockets().insecure_sockets
    for sock in sockets:
        sock.listen(backlog)
    return sockets


@dataclass
class _Worker:
    number: int
    proc: subprocess.Popen[bytes]
    started: float


class Workers:
    """Start, watch and stop the worker processes; :meth:`run` returns the exit code."""

    def __init__(
        self, count: int, sockets: Sequence[socket.socket], argv: Sequence[str], env: Mapping[str, str]
    ):
        self.count = count
        self.sockets = list(sockets)
        self.argv = list(argv)
        self.env = dict(env)
        self.alive: dict[int, _Worker] = {}
        self.stopping = False
        self.exit_code = 0

    def _spawn(self, number: int) -> None:
        fds = [sock.fileno() for sock in self.sockets]
        binds = [arg for fd in fds for arg in ("--bind", f"fd://{fd}")]
        proc = subprocess.Popen(
            [sys.executable, "-m", "quart_sse", *self.argv, *binds, "--worker", str(number)],
            pass_fds=fds,
            env=self.env,
        )
        self.alive[proc.pid] = _Worker(number, proc, time.monotonic())

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info(
                "%s: passing it on to %d workers; each drains its streams, then exits",
                signal.Signals(signum).name,
                len(self.alive),
            )
        self.stopping = True
        for worker in list(self.alive.values()):
            if worker.proc.returncode is None:
                try:
                    worker.proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        try:
            for number in range(1, self.count + 1):
                self._spawn(number)
            while self.alive:
                self._reap()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in self.sockets:
                sock.close()
        log.info("all workers have exited")
        return self.exit_code

    def _reap(self) -> None:
        pid, status = os.wait()  # a signal runs _forward, then the wait goes on (PEP 475)
        worker = self.alive.pop(pid, None)
        if worker is None:
            return
        code = os.waitstatus_to_exitcode(status)
        worker.proc.returncode = code
        if self.stopping:
            log.info("worker %d (pid %d) exited with code %d", worker.number, pid, code)
            if code != 0 and self.exit_code == 0:
                self.exit_code = code if code > 0 else 1
            return
        if time.monotonic() - worker.started < EARLY_EXIT:
            log.error(
                "worker %d (pid %d) exited with code %d at start; stopping the others",
                worker.number,
                pid,
                code,
            )
            self.exit_code = code if code > 0 else 1
            self._forward(signal.SIGTERM, None)
            return
        log.error("worker %d (pid %d) died with code %d; starting another", worker.number, pid, code)
        self._spawn(worker.number)

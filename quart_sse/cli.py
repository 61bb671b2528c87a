"""quart-sse: run the server on Hypercorn, owning SIGTERM so that streams end cleanly.

One process serves by default; ``--workers N`` (default ``WEB_CONCURRENCY``) starts N worker
processes on one listening socket (:mod:`quart_sse.workers`), each one this same program
with its own drain.  Several workers need ``REDIS_URL``: on the memory store (per process)
one worker runs whatever was asked, and a warning says why (:meth:`Settings.workers`).
The listening socket is bound before the app starts, so connections queue from the first
instant (a PaaS sees the port open at once).

On the first SIGTERM or SIGINT the engine drains (:meth:`quart_sse.engine.Engine.drain`:
no new messages, running answers get ``SHUTDOWN_GRACE`` seconds, then end as
``interrupted``, open streams write their final event or end for their clients to resume),
then the listener closes and the process exits.  Hypercorn's ``graceful_timeout`` only ever
meets idle connections, so nothing open is cut by it: the whole takes ``SHUTDOWN_GRACE`` plus
at most ``END_RESPONSES`` + :data:`GRACEFUL_TIMEOUT` seconds (28 s with the default 25,
under a PaaS's 30 s before SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

from quart_sse.config import LOG_LEVELS, ConfigError, Settings

log = logging.getLogger("quart_sse")

BACKLOG = 4096
GRACEFUL_TIMEOUT = 1.0
"""Hypercorn's wait for connections after the listener closes (by then only idle ones)."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="quart-sse",
        description="Stream LLM chat answers over Server-Sent Events (configure by environment: see README).",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: $PORT, else 8000)")
    parser.add_argument(
        "--bind",
        action="append",
        default=None,
        metavar="ADDR",
        help="a Hypercorn bind instead of --host/--port, e.g. unix:/tmp/s.sock or fd://3 (repeatable)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: $WEB_CONCURRENCY, else 1); without REDIS_URL one runs",
    )
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default=None, help="default: $LOG_LEVEL, else info"
    )
    # Internal: set by the parent on each worker it starts.
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> tuple[Settings, int, str | None]:
    """The settings, the number of workers to start, and why fewer than asked for (or None).

    Raises :class:`ConfigError` (one line) for a setting that cannot be used.
    """
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers has value {args.workers}: must be at least 1")
    env = dict(os.environ)
    if args.worker is not None:
        env["WEB_CONCURRENCY"] = "1"  # the parent chose the count
    elif args.workers is not None:
        env["WEB_CONCURRENCY"] = str(args.workers)  # --workers wins
    settings = Settings.from_env(env)
    if args.worker is not None:
        return settings, 1, None
    if args.workers is not None:
        return settings, *settings.workers(args.workers, "--workers")
    return settings, *settings.workers()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings, workers, fewer = _settings(args)
        from quart_sse.app import create_app

        app = create_app(settings)
    except ConfigError as exc:
        print(f"quart-sse: {exc}", file=sys.stderr)
        return 2

    from quart_sse.console import banner, setup_logging
    from quart_sse.engine import Engine
    from quart_sse.workers import Workers, listen

    level = args.log_level or settings.log_level
    setup_logging(level, message_text=settings.log_message_text)
    port = args.port if args.port is not None else settings.port
    binds = args.bind or [f"{args.host}:{port}"]
    if args.worker is None:
        try:
            sockets = listen(binds, BACKLOG)
        except OSError as exc:
            print(f"quart-sse: cannot listen on {binds[0]}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        rt: Engine = app.extensions["quart_sse"]
        if port == 0 and not args.bind:  # the port the kernel chose
            port = sockets[0].getsockname()[1]
        where = (
            binds[0]
            if args.bind
            else f"http://{'localhost' if args.host in ('127.0.0.1', '::1') else args.host}:{port}"
        )
        if level in ("debug", "info"):
            banner(settings, rt.provider.model, rt.provider.name, rt.store.name, where)
        # ``where`` may be fd://N: say what the socket really is.
        address = ", ".join(_address(sock.getsockname()) for sock in sockets)
        if not (settings.api_keys or settings.admin_keys) and not all(_loopback(s) for s in sockets):
            log.warning(
                "listening on %s without API_KEYS: anyone who reaches this port can read and delete "
                "every conversation; set API_KEYS=<key>,<key> (and ADMIN_KEYS for operators)",
                address,
            )
        if fewer:
            log.warning("%s", fewer)
        if workers > 1:
            log.info("listening on %s (pid %d); starting %d workers", address, os.getpid(), workers)
            child_args = ["--workers", "1"]
            if args.log_level:
                child_args += ["--log-level", args.log_level]
            return Workers(workers, sockets, child_args, os.environ).run()
        log.info("listening on %s (pid %d)", address, os.getpid())
        # Hypercorn takes the sockets over (and closes them).
        binds = [f"fd://{sock.detach()}" for sock in sockets]
    return serve_app(app, settings, binds, level, args.worker)


def _loopback(sock: socket.socket) -> bool:
    """Whether ``sock`` listens on a loopback address (or a Unix socket) only."""
    name = sock.getsockname()
    if not isinstance(name, tuple):
        return True
    try:
        return ipaddress.ip_address(name[0]).is_loopback
    except ValueError:
        return False


def _address(name: object) -> str:
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return f"unix:{name}"


def serve_app(app: Quart, settings: Settings, binds: list[str], level: str, worker: int | None) -> int:
    """Serve ``app`` on ``binds`` (``fd://`` sockets, already listening) until SIGTERM and the drain."""
    config = Config()
    config.bind = binds
    config.backlog = BACKLOG
    config.keep_alive_timeout = 100  # longer than PaaS routers' 90 s keep-alive to the instance
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.loglevel = "WARNING" if level in ("debug", "info") else level.upper()
    config.accesslog = None
    # Hypercorn's warnings go through our handlers (JSON with LOG_FORMAT=json), not its own stderr one.
    config.errorlog = logging.getLogger("hypercorn.error")
    name = f"worker {worker}" if worker is not None else "server"

    @app.before_serving
    async def ready() -> None:
        log.info("%s ready (pid %d)", name, os.getpid())

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        started = 0.0

        async def shutdown_trigger() -> None:
            nonlocal started
            await stop.wait()
            started = time.monotonic()
            await app.extensions["quart_sse"].drain(name)

        await serve(app, config, shutdown_trigger=shutdown_trigger)
        if stop.is_set():
            log.info("%s: shutdown done in %.1f s; exiting", name, time.monotonic() - started)

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"quart-sse: cannot serve on {binds[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0

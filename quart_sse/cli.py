"""quart-sse: run the server on Hypercorn, owning SIGTERM so that streams end cleanly."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from hypercorn.asyncio import serve
from hypercorn.config import Config

from quart_sse.config import LOG_LEVELS, ConfigError, Settings

log = logging.getLogger("quart_sse")


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
        default=None,
        metavar="ADDR",
        help="a Hypercorn bind instead of --host/--port, e.g. unix:/tmp/s.sock or fd://3",
    )
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default=None, help="default: $LOG_LEVEL, else info"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
        from quart_sse.app import create_app

        app = create_app(settings)
    except ConfigError as exc:
        print(f"quart-sse: {exc}", file=sys.stderr)
        return 2

    from quart_sse.console import banner, setup_logging
    from quart_sse.runtime import Runtime

    level = args.log_level or settings.log_level
    setup_logging(level)
    port = args.port if args.port is not None else settings.port
    config = Config()
    config.bind = [args.bind or f"{args.host}:{port}"]
    config.backlog = 4096
    config.keep_alive_timeout = 100  # longer than PaaS routers' 90 s keep-alive to the instance
    config.graceful_timeout = 5
    config.loglevel = "WARNING" if level in ("debug", "info") else level.upper()
    config.accesslog = None
    rt: Runtime = app.extensions["quart_sse"]
    address = args.bind or f"http://{'localhost' if args.host in ('127.0.0.1', '::1') else args.host}:{port}"
    if level in ("debug", "info"):
        banner(settings, rt.provider.model, rt.provider.name, rt.store.name, address)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def shutdown_trigger() -> None:
            await stop.wait()
            log.warning(
                "shutting down: no new messages; running generations get %g s to finish",
                settings.shutdown_grace,
            )
            rt.generations.accepting = False
            running = [g.task for g in rt.generations.running.values() if g.task is not None]
            if running:
                await asyncio.wait(running, timeout=settings.shutdown_grace)
            await rt.generations.cancel_all("interrupted")
            await rt.writer.flush()

        await serve(app, config, shutdown_trigger=shutdown_trigger)

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"quart-sse: cannot listen on {config.bind[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0

"""Console output in the spirit of the original design: a banner, and a box per stream.

Boxes are printed at INFO; a line per chunk only at DEBUG (``--log-level debug``).
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime

from rich.console import Console
from rich.logging import RichHandler
from rich.panel import Panel
from rich.table import Table

from quart_sse.config import Settings
from quart_sse.engine import Generation, Outcome

# On a terminal, Rich fits its width; elsewhere (a PaaS log, a file) it would wrap and pad
# every line at 80 columns, so boxes get room and log lines stay plain, one line each.
_TTY = sys.stdout.isatty()
console = Console(highlight=False, width=None if _TTY else 120)
log = logging.getLogger("quart_sse")


def setup_logging(level: str) -> None:
    handler: logging.Handler
    if _TTY:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stdout)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, datefmt="%H:%M:%S", handlers=[handler], force=True)
    for name in ("hypercorn.access",):
        logging.getLogger(name).setLevel(logging.WARNING)


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def _grid(rows: list[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(f"{key}:", value)
    return table


def banner(settings: Settings, model: str, provider: str, store: str, address: str) -> None:
    offline = provider == "simulated"
    model_line = (
        f"{model} [yellow](built-in offline model: no network, no key)[/]"
        if offline
        else f"{model} ({provider})"
    )
    rows = [
        ("Model", model_line),
        ("Framework", "Quart + Hypercorn"),
        ("Store", store),
        ("Heartbeat", f"{settings.heartbeat_interval:g} s"),
        ("Retention", f"{settings.stream_retention:g} s"),
        ("Resume", "Last-Event-ID"),
        ("Listening", address),
        ("Docs", f"{address}/docs"),
    ]
    console.print(
        Panel(_grid(rows), title="🌊 QUART-SSE MULTI-TURN CHAT SERVER 🌊", border_style="cyan", expand=False)
    )


def stream_started(generation: Generation, active: int) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    rows = [
        ("Client IP", generation.client),
        ("Session", generation.session_id[:8] + "…"),
        ("Stream", generation.stream_id[:8] + "…"),
        ("Message", f'"{generation.message_preview}"'),
        ("Active Streams", str(active)),
    ]
    console.print(
        Panel(
            _grid(rows),
            title=f"🌊 SSE STREAM STARTED [{_clock()}]",
            title_align="left",
            border_style="green",
            expand=False,
        )
    )


def stream_ended(generation: Generation, outcome: Outcome, active: int) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    ok = outcome.status == "complete"
    rows = [
        ("Session", generation.session_id[:8] + "…"),
        ("Total Chunks", str(outcome.chunks)),
        ("Total Time", f"{outcome.seconds:.3f}s"),
        ("Active Streams", str(active)),
        ("Status", "SUCCESS" if ok else f"{outcome.status.upper()}: {outcome.message}"),
    ]
    title = "COMPLETED" if ok else "ENDED"
    console.print(
        Panel(
            _grid(rows),
            title=f"🌊 SSE STREAM {title} [{_clock()}]",
            title_align="left",
            border_style="green" if ok else "red",
            expand=False,
        )
    )

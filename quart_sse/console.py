"""Console output in the spirit of the original design: a banner, and a box per stream.

Boxes are printed at INFO; a line per chunk only at DEBUG (``--log-level debug``).

Text that comes from users or models is never read as Rich markup (it goes in as
:class:`rich.text.Text`) and never reaches the operator's terminal raw: control characters,
escape sequences and bidirectional overrides are shown as escapes (:func:`printable`).  A
box shows a short preview of the user's message only on a terminal, as the original
design does; logs that are not a terminal (a PaaS log drain) carry no message text unless
``LOG_MESSAGE_TEXT`` asks for it.

``LOG_FORMAT=json`` turns all of it into log records, one JSON object per line on standard
output (:class:`JsonLines`): the banner and the boxes become records with fields (ids,
counts, times), never Rich output.  The formatter is python-json-logger's, which
serialises the record's ``extra`` fields and tracebacks; only the field names and their
order are ours.
"""

from __future__ import annotations

import logging
import sys
import unicodedata
from datetime import datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter
from rich.console import Console
from rich.logging import RichHandler
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from quart_sse.config import Settings
from quart_sse.engine import Generation, Outcome

# On a terminal, Rich fits its width; elsewhere (a PaaS log, a file) it would wrap and pad
# every line at 80 columns, so boxes get room and log lines stay plain, one line each.
_TTY = sys.stdout.isatty()
console = Console(highlight=False, width=None if _TTY else 120)
log = logging.getLogger("quart_sse")
_show_text = _TTY
_json = False  # LOG_FORMAT=json, taken from the settings by use_settings()

# Shown escaped: controls (C0, C1, DEL), format characters (bidi marks and overrides,
# zero-width characters, tag characters), line and paragraph separators, private-use and
# unassigned code points, surrogates (CVE-2021-42574 and its neighbours).
_UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"))


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` as it may be shown on a terminal: every control, format or separator
    character and every escape sequence made visible (``\\x1b``, ``\\u202e``), nothing
    else changed."""
    if text.isprintable():  # the common case: nothing to escape (spaces are printable)
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


class JsonLines(JsonFormatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    then the record's extra fields (``logger.info(..., extra={...})``) and ``exc_info``."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {"time": log_data.pop("time"), **log_data}


def use_settings(settings: Settings) -> bool:
    """Take ``LOG_FORMAT`` for :func:`setup_logging` and the boxes (``create_app`` calls this,
    before the entry point sets logging up); whether to write an access line per request:
    ``LOG_ACCESS`` on or off, or auto: when standard output is not a terminal, or with
    ``LOG_FORMAT=json``."""
    global _json
    _json = settings.log_format == "json"
    if settings.log_access != "auto":
        return settings.log_access == "on"
    return _json or not _TTY


def setup_logging(level: str, *, message_text: bool = False) -> None:
    """Log at ``level``: through Rich on a terminal, plain lines elsewhere, JSON objects with
    ``LOG_FORMAT=json`` (:func:`use_settings`); ``message_text`` (``LOG_MESSAGE_TEXT``) shows
    message previews in logs that are not a terminal."""
    global _show_text
    _show_text = message_text if _json else _TTY or message_text
    handler: logging.Handler
    if _json:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonLines())
        fmt = None
    elif _TTY:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stdout)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if fmt is not None:
        handler.setFormatter(logging.Formatter(fmt, "%H:%M:%S"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in ("hypercorn.access",):
        logging.getLogger(name).setLevel(logging.WARNING)


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def _grid(rows: list[tuple[str, str | Text]]) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(f"{key}:", value if isinstance(value, Text) else Text(printable(value)))
    return table


def _access(settings: Settings) -> str:
    keys, admins = len(settings.api_keys), len(settings.admin_keys)
    if not keys and not admins:
        return "open: no API_KEYS (single-user: every session visible)"
    return f"{keys} API keys, {admins} admin keys (each key sees its own sessions)"


def banner(settings: Settings, model: str, provider: str, store: str, address: str) -> None:
    """Print the start banner: the model, the store (what a restart loses), the settings that
    shape streams, who may call, and where the server listens.  With ``LOG_FORMAT=json``: one
    record with the same facts as fields."""
    if _json:
        facts = {"model": model, "provider": provider, "store": store, "address": address}
        log.info("quart-sse started", extra={**facts, "access": _access(settings)})
        return
    offline = provider == "simulated"
    model_line = Text(printable(model))
    if offline:
        model_line.append(" (built-in offline model: no network, no key)", style="yellow")
    else:
        model_line.append(f" ({provider})")
    store_line = Text(printable(store))
    if store == "memory":
        store_line.append(
            ": a restart loses every session and any answer in progress (REDIS_URL keeps them)",
            style="yellow",
        )
    else:
        store_line.append(": shared by every process; sessions outlive a restart")
    rows: list[tuple[str, str | Text]] = [
        ("Model", model_line),
        ("Framework", "Quart + Hypercorn"),
        ("Store", store_line),
        ("Heartbeat", f"{settings.heartbeat_interval:g} s"),
        ("Retention", f"{settings.stream_retention:g} s"),
        ("Resume", "Last-Event-ID"),
        ("Access", _access(settings)),
        ("Listening", address),
        ("Docs", f"{address}/docs"),
    ]
    console.print(
        Panel(_grid(rows), title="🌊 QUART-SSE MULTI-TURN CHAT SERVER 🌊", border_style="cyan", expand=False)
    )


def stream_started(generation: Generation, active: int) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    if _json:
        fields = {
            "stream_id": generation.stream_id,
            "session_id": generation.session_id,
            "client": generation.client,
            "active_streams": active,
        }
        if _show_text:
            fields["message_preview"] = generation.message_preview
        log.info("stream started", extra=fields)
        return
    rows: list[tuple[str, str | Text]] = [
        ("Client IP", generation.client),
        ("Session", generation.session_id[:8] + "…"),
        ("Stream", generation.stream_id[:8] + "…"),
    ]
    if _show_text:
        rows.append(("Message", f'"{generation.message_preview}"'))
    rows.append(("Active Streams", str(active)))
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
    if _json:
        fields = {
            "stream_id": generation.stream_id,
            "session_id": generation.session_id,
            "status": outcome.status,
            "chunks": outcome.chunks,
            "seconds": round(outcome.seconds, 3),
            "active_streams": active,
        }
        if not ok:
            fields["error"] = outcome.message
        log.info("stream ended", extra=fields)
        return
    rows: list[tuple[str, str | Text]] = [
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

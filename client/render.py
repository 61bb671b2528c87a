"""Rich renderables in the look of the original design: a banner and square boxes.

Pure: every function returns something to print and reads no clock but the ones passed in
or :func:`clock`, so the tests render them into a recording console.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from rich import box
from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from client.safe import plain, printable
from client.stats import CANCELLED, COMPLETE, ClientStats, Outcome

COMMANDS: list[tuple[str, str]] = [
    ("/help", "Show all available commands"),
    ("/stats", "Show client streaming statistics"),
    ("/server", "Display server and streaming statistics"),
    ("/health", "Check server health and active streams"),
    ("/docs", "Open API documentation in browser"),
    ("/demo", "Open interactive SSE demo page"),
    ("/clear", "Clear screen"),
    ("/quit", "Exit client"),
    ("/new", "Create a new streaming chat session"),
    ("/info", "Show current session details"),
    ("/sessions", "List all active sessions on server"),
    ("/switch ID", "Continue another session (an id or a unique prefix)"),
    ("/reset", "Clear current session history"),
    ("/delete", "Delete current session"),
]


def short(session_id: str | None) -> str:
    """``a1b2c3d4…``: the first eight characters of an id."""
    if not session_id:
        return "none"
    return printable(session_id[:8]) + "…" if len(session_id) > 8 else printable(session_id)


def clock(moment: datetime | None = None) -> str:
    """``14:32:17.234`` in local time."""
    return (moment or datetime.now()).strftime("%H:%M:%S.%f")[:-3]


def hms(seconds: float) -> str:
    """``0:05:23``."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _parse_iso(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def local_time(iso: Any) -> str:
    """An API timestamp (ISO 8601, UTC) as local ``HH:MM:SS``."""
    moment = _parse_iso(iso)
    return moment.astimezone().strftime("%H:%M:%S") if moment else "?"


def age(iso: Any, now: datetime | None = None) -> str:
    """Time since an API timestamp, as ``0:05:23``."""
    moment = _parse_iso(iso)
    if moment is None:
        return "?"
    return hms(((now or datetime.now(UTC)) - moment).total_seconds())


def box_panel(title: str, rows: list[tuple[str, str]], *, style: str = "cyan") -> Panel:
    """A square box with ``Key: value`` rows and its title on the top-left edge."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(plain(f"{key}:"), plain(value))
    return Panel(
        grid, title=plain(title), title_align="left", box=box.SQUARE, border_style=style, expand=False
    )


def banner(url: str) -> RenderableType:
    return Group(
        Text("🌊 QUART-SSE MULTI-TURN CHAT CLIENT 🌊", style="bold cyan"),
        plain(f"   Server: {url}", style="dim"),
    )


def connected(health: dict[str, Any]) -> RenderableType:
    model = health.get("model", "?")
    lines = [
        Text("🎉 Connected to Quart SSE server successfully!", style="green"),
        plain(
            f"🌊 Real-time streaming enabled - responses will appear as they're generated! (model: {model})"
        ),
    ]
    if health.get("offline_model"):
        lines.append(Text("   The server runs its built-in offline model.", style="dim"))
    lines.append(Text("   Type a message, or /help for the commands.", style="dim"))
    return Group(*lines)


def answer_header(session_id: str | None, model: str | None) -> Text:
    return plain(f"🤖 AI Response (Streaming) ({short(session_id)} - {model or '?'})", style="bold magenta")


# Rich's own parser, but with raw HTML off: ``<script>`` or ``a <b>b</b>`` is then text, shown
# as written, where Rich would drop the HTML block or tag it does not render.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("strikethrough").enable("table")


def _sanitize(tokens: Iterable[Token]) -> None:
    for token in tokens:
        token.content = printable(token.content)  # entities such as &#x202E; are decoded here
        if token.children:
            _sanitize(token.children)


class AnswerMarkdown(Markdown):
    """An answer as Markdown, with nothing in it that the terminal would interpret.

    The text is made :func:`~client.safe.printable` before it is parsed, and so is every
    token after (the parser decodes character references); HTML shows as the text it is.
    """

    def __init__(self, text: str) -> None:
        super().__init__("")
        self.markup = printable(text)
        self.parsed = _MARKDOWN.parse(self.markup)
        _sanitize(self.parsed)


def summary(outcome: Outcome) -> Panel:
    """The box after an answer: chunks, time, context messages, status."""
    rows = [("Total Chunks", str(outcome.chunks)), ("Total Time", f"{outcome.seconds:.3f}s")]
    if outcome.message_count is not None:
        rows.append(("Context Messages", str(outcome.message_count)))
    if outcome.reconnects:
        rows.append(("Reconnections", str(outcome.reconnects)))
    if outcome.status == COMPLETE:
        if outcome.finish_reason and outcome.finish_reason != "stop":
            rows.append(("Finish Reason", outcome.finish_reason))
        rows.append(("Status", "SUCCESS"))
        return box_panel(f"🌊 SSE STREAM COMPLETED [{clock()}]", rows, style="green")
    if outcome.status == CANCELLED:
        rows.append(("Status", "CANCELLED"))
        return box_panel(f"⏹ SSE STREAM CANCELLED [{clock()}]", rows, style="yellow")
    rows.append(("Status", f"ERROR ({outcome.status})"))
    if outcome.error:
        rows.append(("Error", outcome.error))
    return box_panel(f"❌ SSE STREAM FAILED [{clock()}]", rows, style="red")


def session_info(data: dict[str, Any]) -> Panel:
    rows = [
        ("Session ID", str(data.get("session_id", "?"))),
        ("Model", str(data.get("model", "?"))),
        ("Total Messages", str(data.get("message_count", 0))),
        ("User Messages", str(data.get("user_messages", 0))),
        ("AI Messages", str(data.get("ai_messages", 0))),
        ("Duration", age(data.get("created_at"))),
        ("Created", local_time(data.get("created_at"))),
        ("Last Activity", local_time(data.get("last_activity"))),
    ]
    return box_panel("📋 SESSION INFO", rows)


def sessions_list(sessions: list[dict[str, Any]], current: str | None, scope: str = "all") -> Panel:
    """The session list; ``scope`` ``own``: the server listed only this API key's sessions."""
    lines = []
    for n, s in enumerate(sessions, 1):
        sid = s.get("session_id")
        line = plain(
            f"{n}. {short(sid)} ({s.get('message_count', 0)} msgs, {age(s.get('created_at'))}, "
            f"{local_time(s.get('created_at'))})"
        )
        if sid == current:
            line.append(" ← CURRENT", style="bold green")
        lines.append(line)
    empty = "No sessions of this API key." if scope == "own" else "No sessions on the server."
    body: RenderableType = Group(*lines) if lines else Text(empty, style="dim")
    what = "YOUR SESSIONS" if scope == "own" else "ALL ACTIVE SESSIONS"
    return Panel(
        body,
        title=f"📋 {what} ({len(sessions)})",
        title_align="left",
        box=box.SQUARE,
        border_style="cyan",
        expand=False,
    )


def client_stats(stats: ClientStats, current: str | None, session_messages: int | None) -> Panel:
    rows = [
        ("Client Session Duration", hms(stats.duration())),
        ("Messages Sent", str(stats.messages_sent)),
        ("Successful Streams", str(stats.successful)),
        ("Failed Streams", str(stats.failed)),
        ("Total Chunks Received", str(stats.chunks)),
        ("Avg Chunks per Stream", f"{stats.avg_chunks:.1f}"),
        ("Sessions Created", str(stats.sessions_created)),
        ("Reconnections", str(stats.reconnects)),
        ("Avg Response Time", f"{stats.avg_response_time:.3f}s"),
        ("Current Session", short(current)),
        ("Session Messages", "?" if session_messages is None else str(session_messages)),
    ]
    return box_panel("📊 CLIENT SESSION STATISTICS", rows)


def server_stats(data: dict[str, Any]) -> Panel:
    rows = [
        ("Server Uptime", hms(float(data.get("uptime_s", 0)))),
        ("Total Requests", str(data.get("total_requests", "?"))),
        ("Successful", str(data.get("successful_requests", "?"))),
        ("Failed", str(data.get("failed_requests", "?"))),
        ("Active Sessions", str(data.get("active_sessions", "?"))),
        ("Active Streams", str(data.get("active_streams", "?"))),
        ("Streams Completed", str(data.get("streams_completed", "?"))),
        ("Chunks Sent", str(data.get("chunks_sent", "?"))),
        ("Total Sessions Created", str(data.get("sessions_created", "?"))),
        ("Avg Response Time", f"{float(data.get('average_response_time_s', 0)):.3f}s"),
        ("Model", str(data.get("model", "?"))),
        ("Store", str(data.get("store", "?"))),
        ("Framework", "Quart + Hypercorn + SSE"),
    ]
    return box_panel("🖥️  SSE SERVER STATISTICS", rows)


def health(data: dict[str, Any]) -> Panel:
    ok = data.get("status") == "ok"
    rows = [
        ("Status", str(data.get("status", "?")).upper()),
        ("Active Streams", str(data.get("active_streams", "?"))),
        ("Active Sessions", str(data.get("active_sessions", "?"))),
        ("Uptime", hms(float(data.get("uptime_s", 0)))),
        ("Model", str(data.get("model", "?"))),
        ("Store", str(data.get("store", "?"))),
    ]
    return box_panel("💚 SERVER HEALTH" if ok else "💔 SERVER HEALTH", rows, style="green" if ok else "red")


def help_table() -> Panel:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("Command", style="bold cyan")
    table.add_column("Action")
    for command, action in COMMANDS:
        table.add_row(command, action)
    table.add_row("Ctrl-C", "During an answer: cancel it; at the prompt: quit (also Ctrl-D)")
    return Panel(
        table, title="🌊 COMMANDS", title_align="left", box=box.SQUARE, border_style="cyan", expand=False
    )

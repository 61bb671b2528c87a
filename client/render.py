"""Rich renderables in the look of the original design: a banner and square boxes.

Pure: every function returns something to print and reads no clock but the ones passed in
or :func:`clock`, so the tests render them into a recording console.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from rich import box
from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from client.safe import plain, printable
from client.stats import CANCELLED, COMPLETE, ClientStats, Outcome

COMMANDS: list[tuple[str, str]] = [
    ("/help", "Show the commands and keys"),
    ("/new", "Start a new session"),
    ("/sessions", "List the sessions: title, messages, last activity; the current one marked"),
    ("/switch N|ID", "Continue a listed session (its number in /sessions, an id or a unique prefix)"),
    ("/history [N]", "Show the session's last N messages (default 10) as Markdown"),
    ("/info", "Show the current session's details"),
    ("/edit", "Write a message in $EDITOR (or $VISUAL), then send it"),
    ("/copy", "Copy the last answer's last code block to the clipboard (OSC 52, works over SSH)"),
    ("/export [FILE]", "Write the conversation as Markdown (default quart-sse-SESSION.md)"),
    ("/cancel", "Stop the answer being generated in the current session"),
    ("/reset", "Clear the current session's history"),
    ("/delete", "Delete the current session"),
    ("/stats", "Show this client's streaming statistics"),
    ("/server", "Show the server's statistics"),
    ("/health", "Check the server's health and active streams"),
    ("/docs", "Open the API documentation in the browser"),
    ("/demo", "Open the web demo page in the browser"),
    ("/clear", "Clear the screen"),
    ("/quit", "Quit (also /exit, Ctrl-D)"),
]

KEYS: list[tuple[str, str]] = [
    ("Enter", "Send the message"),
    ("Alt-Enter (Esc Enter)", "New line in the message"),
    ("Ctrl-X Ctrl-E", "Edit the message in $EDITOR; it is sent when the editor closes"),
    ("Ctrl-R", "Search the saved input (Ctrl-R again: older; Enter: take it)"),
    ("Up / Down", "Earlier and later saved input"),
    ("Ctrl-C", "With text: clear the line; on an empty prompt: quit; during an answer: cancel it"),
    ("Ctrl-D", "On an empty prompt: quit"),
    ("Paste", "Pasted text is kept whole, newlines included (bracketed paste)"),
]

_plain = False
_styled = True


def set_plain(on: bool, *, styled: bool = True) -> None:
    """``--plain`` (also ``NO_COLOR``, ``TERM=dumb``): boxes become plain lines and emoji are
    left out, everywhere in this module.  ``styled`` False (``--plain``, ``TERM=dumb``): no
    colour, bold or dim either; ``NO_COLOR`` keeps bold and dim (no-color.org)."""
    global _plain, _styled
    _plain, _styled = on, styled


def is_styled() -> bool:
    return _styled


def console(**kwargs: Any) -> Console:
    """A Rich console as the mode asks: colours, or bold and dim only (``NO_COLOR``), or no
    styles at all (``--plain``, ``TERM=dumb``)."""
    if not _styled:
        kwargs.update(color_system=None)
    elif _plain:
        kwargs.update(no_color=True)
    return Console(highlight=False, emoji=not _plain, **kwargs)


def is_plain() -> bool:
    return _plain


def deco(text: str) -> str:
    """``text`` without its emoji and other pictographs in ``--plain`` mode (as is otherwise)."""
    if not _plain:
        return text
    kept = "".join(c for c in text if unicodedata.category(c) != "So" and c not in "\ufe0f\u200d")
    if kept == text:
        return text
    return " ".join(kept.split()) if kept.strip() else ""


def plural(count: object, noun: str, nouns: str | None = None) -> str:
    """``1 chunk``, ``2 chunks``, ``0 messages``: ``count`` and its noun (``nouns`` when
    adding an s will not do); a count that is not an int (from a server) is shown as
    written, with the plural."""
    return f"{printable(count)} {noun if count == 1 else nouns or noun + 's'}"


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


def box_panel(title: str, rows: list[tuple[str, str]], *, style: str = "cyan") -> RenderableType:
    """A square box with ``Key: value`` rows and its title on the top-left edge."""
    if _plain:
        return Group(plain(deco(title)), *(plain(f"  {key}: {value}") for key, value in rows))
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(plain(f"{key}:"), plain(value))
    return Panel(
        grid, title=plain(title), title_align="left", box=box.SQUARE, border_style=style, expand=False
    )


def unreachable_text(url: str, reason: str, *, host_unknown: bool = False) -> str:
    """What to say when no server answers at ``url`` (``reason``: ``connection refused``…);
    ``host_unknown``: its host name could not be resolved, so the address is what to check."""
    if host_unknown:
        return f"Cannot reach {url}: {reason}. Check the address (--url or QUART_SSE_URL)."
    return (
        f"No server answers at {url} ({reason}). Start one with `quart-sse` (or `make run` in "
        "the project), or give its address with --url or QUART_SSE_URL."
    )


def banner(url: str) -> RenderableType:
    return Group(
        Text(deco("🌊 QUART-SSE MULTI-TURN CHAT CLIENT 🌊"), style="bold cyan"),
        plain(f"   Server: {url}", style="dim"),
    )


def connected(health: dict[str, Any]) -> RenderableType:
    model = health.get("model", "?")
    lines = [
        Text(deco("🎉 Connected to Quart SSE server successfully!"), style="green"),
        plain(
            deco(f"🌊 Real-time streaming enabled - answers appear as they are generated (model: {model})")
        ),
    ]
    if health.get("offline_model"):
        lines.append(Text("   The server runs its built-in offline model.", style="dim"))
    lines.append(
        Text(
            "   Type a message (Enter sends, Alt-Enter: new line), or /help for the commands and keys.",
            style="dim",
        )
    )
    return Group(*lines)


def answer_header(session_id: str | None, model: str | None) -> Text:
    return plain(
        deco(f"🤖 AI Response (Streaming) ({short(session_id)} - {model or '?'})"), style="bold magenta"
    )


# Rich's own parser, but with raw HTML off: ``<script>`` or ``a <b>b</b>`` is then text, shown
# as written, where Rich would drop the HTML block or tag it does not render.
MARKDOWN_PARSER = MarkdownIt("commonmark", {"html": False}).enable("strikethrough").enable("table")


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
        self.parsed = MARKDOWN_PARSER.parse(self.markup)
        _sanitize(self.parsed)


def _blank(line: list[Segment]) -> bool:
    return all(
        segment.control or (not segment.text.strip() and not (segment.style and segment.style.bgcolor))
        for segment in line
    )


def block_lines(console: Console, source: str) -> list[list[Segment]]:
    """One Markdown block rendered to ``console``'s width, without blank lines before or
    after it (a code block's padding, which has a background, is kept)."""
    lines = console.render_lines(AnswerMarkdown(source), console.options, pad=False)
    while lines and _blank(lines[-1]):
        lines.pop()
    start = 0
    while start < len(lines) and _blank(lines[start]):
        start += 1
    return lines[start:]


def summary_line(outcome: Outcome) -> Text:
    """The one line after an answer in ``--plain`` mode: ``-- complete: 30 chunks in 1.234s``."""
    what = "complete" if outcome.status == COMPLETE else outcome.status
    line = f"-- {what}: {plural(outcome.chunks, 'chunk')} in {outcome.seconds:.3f}s"
    if outcome.reconnects:
        line += f", {plural(outcome.reconnects, 'reconnection')}"
    if outcome.status != COMPLETE and outcome.error:
        line += f" ({outcome.error})"
    return plain(line)


def summary(outcome: Outcome) -> RenderableType:
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


def session_info(data: dict[str, Any]) -> RenderableType:
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
    generating = data.get("generating")
    rows.append(("Generating", f"yes (stream {short(str(generating))})" if generating else "no"))
    return box_panel("📋 SESSION INFO", rows)


def sessions_list(sessions: list[dict[str, Any]], current: str | None, scope: str = "all") -> RenderableType:
    """The numbered session list (``/switch N`` takes a number): title, messages, last
    activity, the current one marked; ``scope`` ``own``: the server listed only this API
    key's sessions."""
    lines = []
    for n, s in enumerate(sessions, 1):
        sid = s.get("session_id")
        title = " ".join(str(s.get("title") or "").split()) or "(empty)"
        if len(title) > 40:
            title = title[:39] + "…"
        line = plain(f"{n:>2}. {short(sid)}  {title}", style="bold" if sid == current else "")
        count = plural(s.get("message_count", 0), "msg")
        line.append_text(plain(f"  {count}, {ago(s.get('last_activity'))}", style="dim"))
        if sid == current:
            line.append(deco(" ← CURRENT"), style="bold green")
        lines.append(line)
    empty = "No sessions of this API key." if scope == "own" else "No sessions on the server."
    what = "YOUR SESSIONS" if scope == "own" else "ALL ACTIVE SESSIONS"
    if _plain:
        return Group(Text(f"{what} ({len(sessions)})"), *(lines or [Text(empty)]))
    body: RenderableType = Group(*lines) if lines else Text(empty, style="dim")
    return Panel(
        body,
        title=f"📋 {what} ({len(sessions)})",
        title_align="left",
        box=box.SQUARE,
        border_style="cyan",
        expand=False,
    )


def ago(iso: Any, now: datetime | None = None) -> str:
    """``just now``, ``5 min ago``, ``3 h ago``, ``2 days ago`` since an API timestamp."""
    moment = _parse_iso(iso)
    if moment is None:
        return "?"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{plural(seconds // 86400, 'day')} ago"


def messages_markdown(messages: list[dict[str, Any]]) -> str:
    """Messages (``{"role", "content"}``) as one Markdown document, each under its speaker."""
    parts = []
    for m in messages:
        who = "You" if m.get("role") == "user" else "Assistant"
        note = " (interrupted)" if m.get("interrupted") else ""
        parts.append(f"### {who}{note}\n\n{str(m.get('content', '')).rstrip()}\n")
    return "\n".join(parts)


def history(messages: list[dict[str, Any]]) -> RenderableType:
    """Messages for the terminal: each speaker's name, then the text (Markdown, or as written
    in ``--plain`` mode)."""
    items: list[RenderableType] = []
    for m in messages:
        who = "You" if m.get("role") == "user" else "Assistant"
        note = " (interrupted)" if m.get("interrupted") else ""
        items.append(plain(f"{who}{note}:", style="bold cyan" if who == "You" else "bold magenta"))
        content = str(m.get("content", ""))
        items.append(plain(content) if _plain else AnswerMarkdown(content))
        items.append(Text(""))
    return Group(*items)


def client_stats(stats: ClientStats, current: str | None, session_messages: int | None) -> RenderableType:
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


def server_stats(data: dict[str, Any]) -> RenderableType:
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


def health(data: dict[str, Any]) -> RenderableType:
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


def help_table() -> RenderableType:
    """Every command and every key."""
    if _plain:
        rows = [*COMMANDS, *KEYS]
        return Group(*(plain(f"  {name:<24} {action}") for name, action in rows))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("Command or key", style="bold cyan")
    table.add_column("Action")
    for command, action in COMMANDS:
        table.add_row(command, action)
    table.add_section()
    for key, action in KEYS:
        table.add_row(key, action)
    return Panel(
        table,
        title="🌊 COMMANDS AND KEYS",
        title_align="left",
        box=box.SQUARE,
        border_style="cyan",
        expand=False,
    )

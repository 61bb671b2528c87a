"""The slash commands of the interactive client; ``/help`` lists them with the keys.

Each handler takes the app and the text after the command; it returns False to quit.  A
server that cannot be reached, or that refuses, gives one line (see :func:`dispatch`).  The
app is seen through the :class:`App` protocol, so this module does not import
:mod:`client.chat` (which imports it).
"""

from __future__ import annotations

import asyncio
import base64
import webbrowser
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console, RenderableType

from client import render
from client.api import ChatAPI, RequestFailed, Unreachable
from client.stats import ClientStats, Outcome


class App(Protocol):
    """What the commands use of :class:`client.chat.ChatApp`."""

    api: ChatAPI
    console: Console
    session_id: str | None
    model: str | None
    session_messages: int | None
    stats: ClientStats
    listed: list[str]

    def say(self, text: str, style: str = "") -> None: ...
    def show(self, renderable: RenderableType) -> None: ...
    async def send(self, message: str) -> Outcome: ...
    async def follow(self, stream_id: str) -> Outcome: ...
    async def edit(self, initial: str = "") -> str | None: ...
    async def create_session(self) -> None: ...
    async def leave(self) -> None: ...


Handler = Callable[[App, str], Awaitable[bool]]
HANDLERS: dict[str, Handler] = {}
HISTORY_DEFAULT = 10


def command(*names: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = handler
        return handler

    return register


async def dispatch(app: App, line: str) -> bool:
    """Run the command in ``line``; False when the client should quit."""
    name, _, arg = line.strip().partition(" ")
    handler = HANDLERS.get(name.lower())
    if handler is None:
        app.say(f"Unknown command {name}: type /help for the list.", "yellow")
        return True
    try:
        return await handler(app, arg.strip())
    except Unreachable as exc:
        app.say(f"✖ Cannot reach the server at {app.api.base_url} ({exc}).", "red")
    except RequestFailed as exc:
        app.say(f"✖ {exc.message} ({exc.status} {exc.code})", "red")
    return True


def _need_session(app: App) -> str | None:
    if app.session_id is None:
        app.say("No current session: send a message, /new or /switch ID.", "yellow")
    return app.session_id


def last_code_block(markdown: str) -> str | None:
    """The content of the last fenced or indented code block of ``markdown``, or None."""
    blocks = [t.content for t in render.MARKDOWN_PARSER.parse(markdown) if t.type in ("fence", "code_block")]
    return blocks[-1] if blocks else None


def osc52(text: str) -> str:
    """The escape sequence that puts ``text`` on the terminal's clipboard (OSC 52)."""
    return "\x1b]52;c;" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "\x07"


def conversation_markdown(data: dict[str, Any]) -> str:
    """A session (``GET /sessions/{id}``) as a Markdown document."""
    head = f"# Conversation {data.get('session_id', '?')}\n\nModel: {data.get('model', '?')}\n\n"
    return head + render.messages_markdown(list(data.get("messages", [])))


@command("/help", "/?")
async def _help(app: App, arg: str) -> bool:
    app.show(render.help_table())
    return True


@command("/quit", "/exit", "/q")
async def _quit(app: App, arg: str) -> bool:
    return False


@command("/clear")
async def _clear(app: App, arg: str) -> bool:
    app.console.clear()
    return True


@command("/stats")
async def _stats(app: App, arg: str) -> bool:
    if app.session_id is not None:
        try:
            app.session_messages = int((await app.api.session(app.session_id))["message_count"])
        except (Unreachable, RequestFailed, KeyError, TypeError, ValueError):
            pass
    app.show(render.client_stats(app.stats, app.session_id, app.session_messages))
    return True


@command("/server")
async def _server(app: App, arg: str) -> bool:
    app.show(render.server_stats(await app.api.stats()))
    return True


@command("/health")
async def _health(app: App, arg: str) -> bool:
    app.show(render.health(await app.api.health()))
    return True


async def _open(app: App, what: str, path: str) -> bool:
    url = app.api.url(path)
    app.say(f"🌊 Opening {what} in your browser...", "cyan")
    app.say(f"   URL: {url}")
    await asyncio.to_thread(webbrowser.open, url)
    return True


@command("/docs")
async def _docs(app: App, arg: str) -> bool:
    return await _open(app, "API documentation", "/docs")


@command("/demo")
async def _demo(app: App, arg: str) -> bool:
    return await _open(app, "SSE demo page", "/demo")


@command("/new")
async def _new(app: App, arg: str) -> bool:
    await app.leave()  # the session left, if this client made it and it is still empty
    await app.create_session()
    app.say("✨ New session created successfully!", "green")
    app.say(f"   Session ID: {app.session_id}")
    app.say(f"   Model: {app.model}")
    return True


@command("/info")
async def _info(app: App, arg: str) -> bool:
    session_id = _need_session(app)
    if session_id is not None:
        data = await app.api.session(session_id)
        app.session_messages = int(data.get("message_count", 0))
        app.show(render.session_info(data))
    return True


@command("/sessions")
async def _sessions(app: App, arg: str) -> bool:
    page = await app.api.session_page()
    app.listed = [str(s.get("session_id")) for s in page["sessions"]]
    app.show(render.sessions_list(page["sessions"], app.session_id, page["scope"]))
    return True


async def _resolve(app: App, arg: str) -> dict[str, Any] | None:
    """The session ``arg`` names: a number of the last /sessions list, an id, or a unique
    prefix of one; None (said) when none or several match."""
    if arg.isdigit() and len(arg) <= 4:
        if not app.listed:
            app.listed = [str(s.get("session_id")) for s in await app.api.sessions()]
        if 1 <= int(arg) <= len(app.listed):
            return await app.api.session(app.listed[int(arg) - 1])
    try:
        return await app.api.session(arg)
    except RequestFailed as exc:
        if exc.status != 404:
            raise
    matches = [s["session_id"] for s in await app.api.sessions() if str(s["session_id"]).startswith(arg)]
    if len(matches) != 1:
        why = "No session matches" if not matches else f"{len(matches)} sessions match"
        app.say(f"✖ {why} {arg!r}: see /sessions.", "red")
        return None
    return await app.api.session(matches[0])


@command("/switch")
async def _switch(app: App, arg: str) -> bool:
    if not arg:
        app.say("Usage: /switch N or ID (a number from /sessions, an id or a unique prefix)", "yellow")
        return True
    data = await _resolve(app, arg)
    if data is None:
        return True
    if str(data["session_id"]) != app.session_id:
        await app.leave()
    app.session_id = str(data["session_id"])
    app.model = str(data.get("model") or app.model)
    app.session_messages = int(data.get("message_count", 0))
    count = render.plural(app.session_messages, "message")
    app.say(f"🔀 Switched to session {app.session_id} ({count})", "green")
    messages = list(data.get("messages", []))
    generating = data.get("generating")
    if generating:
        # The question is saved; its answer is still being written: shown live from its start.
        asked = [m for m in messages if m.get("role") == "user"][-1:]
        if asked:
            app.show(render.history(asked))
        app.say("The answer is being generated: following it live.", "cyan")
        await app.follow(str(generating))
        return True
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is not None:
        app.show(render.history(messages[last_user:]))
    return True


@command("/history")
async def _history(app: App, arg: str) -> bool:
    session_id = _need_session(app)
    if session_id is None:
        return True
    if arg and not (arg.isdigit() and int(arg) > 0):
        app.say("Usage: /history [N] (N: how many of the last messages, 10 unless given)", "yellow")
        return True
    count = int(arg) if arg else HISTORY_DEFAULT
    messages = list((await app.api.session(session_id)).get("messages", []))
    if not messages:
        app.say("No messages in this session yet.", "yellow")
        return True
    app.show(render.history(messages[-count:]))
    return True


@command("/export")
async def _export(app: App, arg: str) -> bool:
    session_id = _need_session(app)
    if session_id is None:
        return True
    data = await app.api.session(session_id)
    path = Path(arg or f"quart-sse-{session_id[:8]}.md")
    try:
        path = await asyncio.to_thread(path.expanduser)
        await asyncio.to_thread(path.write_text, conversation_markdown(data), encoding="utf-8")
    except OSError as exc:
        app.say(f"✖ Cannot write {path}: {exc.strerror or exc}", "red")
        return True
    app.say(f"📝 Wrote {render.plural(len(data.get('messages', [])), 'message')} to {path}", "green")
    return True


@command("/copy")
async def _copy(app: App, arg: str) -> bool:
    session_id = _need_session(app)
    if session_id is None:
        return True
    answers = [m for m in (await app.api.session(session_id)).get("messages", []) if m.get("role") != "user"]
    if not answers:
        app.say("There is no answer in this session yet: nothing to copy.", "yellow")
        return True
    code = last_code_block(str(answers[-1].get("content", "")))
    if code is None:
        app.say("The last answer has no code block to copy.", "yellow")
        return True
    app.console.file.write(osc52(code))
    app.console.file.flush()
    lines = code.count("\n") + (not code.endswith("\n"))
    app.say(f"📋 Copied the last code block ({render.plural(lines, 'line')}) to the clipboard.", "green")
    return True


@command("/cancel")
async def _cancel(app: App, arg: str) -> bool:
    session_id = _need_session(app)
    if session_id is None:
        return True
    generating = (await app.api.session(session_id)).get("generating")
    if not generating:
        app.say("No answer is being generated in this session.", "yellow")
        return True
    cancelled = await app.api.cancel(str(generating))
    app.say(
        "⏹  Cancelled; the partial answer is kept in the session."
        if cancelled
        else "The answer had already ended.",
        "yellow",
    )
    return True


@command("/edit")
async def _edit(app: App, arg: str) -> bool:
    text = await app.edit(arg)
    if text is None:
        return True
    if not text.strip():
        app.say("The editor left the message empty: nothing sent.", "yellow")
        return True
    await app.send(text.strip("\n"))
    return True


@command("/reset")
async def _reset(app: App, arg: str) -> bool:
    session_id = _need_session(app)
    if session_id is not None:
        await app.api.clear_session(session_id)
        app.session_messages = 0
        app.say(f"🧹 Session {render.short(session_id)} history cleared.", "green")
    return True


@command("/delete")
async def _delete(app: App, arg: str) -> bool:
    session_id = _need_session(app)
    if session_id is not None:
        await app.api.delete_session(session_id)
        app.session_id = None
        app.session_messages = None
        app.say(f"🗑️  Session {render.short(session_id)} deleted; the next message starts a new one.", "green")
    return True

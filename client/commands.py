"""The slash commands of the interactive client (the original design's, plus ``/switch``).

Each handler takes the app and the text after the command; it returns False to quit.  A
server that cannot be reached, or that refuses, gives one line (see :func:`dispatch`).
"""

from __future__ import annotations

import asyncio
import webbrowser
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from client import render
from client.api import RequestFailed, Unreachable

if TYPE_CHECKING:
    from client.chat import ChatApp

Handler = Callable[["ChatApp", str], Awaitable[bool]]
HANDLERS: dict[str, Handler] = {}


def command(*names: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = handler
        return handler

    return register


async def dispatch(app: ChatApp, line: str) -> bool:
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


def _need_session(app: ChatApp) -> str | None:
    if app.session_id is None:
        app.say("No current session: send a message, /new or /switch ID.", "yellow")
    return app.session_id


@command("/help", "/?")
async def _help(app: ChatApp, arg: str) -> bool:
    app.console.print(render.help_table())
    return True


@command("/quit", "/exit", "/q")
async def _quit(app: ChatApp, arg: str) -> bool:
    return False


@command("/clear")
async def _clear(app: ChatApp, arg: str) -> bool:
    app.console.clear()
    return True


@command("/stats")
async def _stats(app: ChatApp, arg: str) -> bool:
    if app.session_id is not None:
        try:
            app.session_messages = int((await app.api.session(app.session_id))["message_count"])
        except (Unreachable, RequestFailed, KeyError, TypeError, ValueError):
            pass
    app.console.print(render.client_stats(app.stats, app.session_id, app.session_messages))
    return True


@command("/server")
async def _server(app: ChatApp, arg: str) -> bool:
    app.console.print(render.server_stats(await app.api.stats()))
    return True


@command("/health")
async def _health(app: ChatApp, arg: str) -> bool:
    app.console.print(render.health(await app.api.health()))
    return True


async def _open(app: ChatApp, what: str, path: str) -> bool:
    url = app.api.url(path)
    app.say(f"🌊 Opening {what} in your browser...", "cyan")
    app.say(f"   URL: {url}")
    await asyncio.to_thread(webbrowser.open, url)
    return True


@command("/docs")
async def _docs(app: ChatApp, arg: str) -> bool:
    return await _open(app, "API documentation", "/docs")


@command("/demo")
async def _demo(app: ChatApp, arg: str) -> bool:
    return await _open(app, "SSE demo page", "/demo")


@command("/new")
async def _new(app: ChatApp, arg: str) -> bool:
    data = await app.api.new_session()
    app.session_id = str(data["session_id"])
    app.model = str(data.get("model") or app.model)
    app.session_messages = 0
    app.stats.sessions_created += 1
    app.say("✨ New session created successfully!", "green")
    app.say(f"   Session ID: {app.session_id}")
    app.say(f"   Model: {app.model}")
    return True


@command("/info")
async def _info(app: ChatApp, arg: str) -> bool:
    session_id = _need_session(app)
    if session_id is not None:
        data = await app.api.session(session_id)
        app.session_messages = int(data.get("message_count", 0))
        app.console.print(render.session_info(data))
    return True


@command("/sessions")
async def _sessions(app: ChatApp, arg: str) -> bool:
    page = await app.api.session_page()
    app.console.print(render.sessions_list(page["sessions"], app.session_id, page["scope"]))
    return True


@command("/switch")
async def _switch(app: ChatApp, arg: str) -> bool:
    if not arg:
        app.say("Usage: /switch ID (a session id, or a unique prefix of one; see /sessions)", "yellow")
        return True
    try:
        data = await app.api.session(arg)
    except RequestFailed as exc:
        if exc.status != 404:
            raise
        matches = [s["session_id"] for s in await app.api.sessions() if str(s["session_id"]).startswith(arg)]
        if len(matches) != 1:
            why = "No session matches" if not matches else f"{len(matches)} sessions match"
            app.say(f"✖ {why} {arg!r}: see /sessions.", "red")
            return True
        data = await app.api.session(matches[0])
    app.session_id = str(data["session_id"])
    app.model = str(data.get("model") or app.model)
    app.session_messages = int(data.get("message_count", 0))
    app.say(f"🔀 Switched to session {app.session_id} ({app.session_messages} messages)", "green")
    return True


@command("/reset")
async def _reset(app: ChatApp, arg: str) -> bool:
    session_id = _need_session(app)
    if session_id is not None:
        await app.api.clear_session(session_id)
        app.session_messages = 0
        app.say(f"🧹 Session {render.short(session_id)} history cleared.", "green")
    return True


@command("/delete")
async def _delete(app: ChatApp, arg: str) -> bool:
    session_id = _need_session(app)
    if session_id is not None:
        await app.api.delete_session(session_id)
        app.session_id = None
        app.session_messages = None
        app.say(f"🗑️  Session {render.short(session_id)} deleted; the next message starts a new one.", "green")
    return True

"""The interactive loop: a prompt that edits like a shell's, messages, and commands.

Keys: Enter sends; Alt-Enter (Esc, Enter) starts a new line; a paste is kept whole (bracketed
paste); Ctrl-X Ctrl-E edits the message in ``$EDITOR``; Ctrl-R searches the saved input;
Ctrl-C clears a line with text on it and quits on an empty one, as Ctrl-D does.  Ctrl-J
stays a second Enter: some terminals (and pexpect) send it for Enter.

At start the client asks ``/health`` once: a server that cannot be reached is said at once,
with the address tried and how to start one, not retried.  Then it creates a session (or
opens ``--session``), so that a missing or wrong API key is said before anything else and
the first prompt shows the session.  Ctrl-C during an answer cancels its generation on the
server and returns to the prompt.  A server lost later gives one line and is retried (see
:class:`~client.stream.ReconnectPolicy`), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.filters import is_searching
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.styles import Style
from rich.console import Console, RenderableType

from client import commands, render
from client.answer import Answer, AnswerView, RichView, TextView
from client.api import ChatAPI, RequestFailed, Unreachable
from client.safe import plain
from client.stats import ClientStats, Outcome
from client.stream import AnswerStream, ReconnectPolicy

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1  # the answer ended with an ``error`` event, or the server refused the request
EXIT_UNREACHABLE = 3  # the server could not be reached, or reconnection gave up
EXIT_INTERRUPTED = 130  # Ctrl-C

PROMPT_STYLE = Style.from_dict({"you": "bold ansicyan", "session": "ansiyellow", "arrow": "bold"})


async def interruptible(coro: Coroutine[Any, Any, T]) -> tuple[bool, T | None]:
    """Run ``coro`` in a task that Ctrl-C (SIGINT) cancels: ``(interrupted, result)``."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        installed = False
    try:
        return False, await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and not (current and current.cancelling()):
            return True, None
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)


def make_history(path: str | None) -> History:
    if not path:
        return InMemoryHistory()
    try:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return FileHistory(str(Path(path).expanduser()))
    except OSError:
        return InMemoryHistory()


def key_bindings() -> KeyBindings:
    """Alt-Enter: a new line; Ctrl-C: clear the line, or quit on an empty one."""
    keys = KeyBindings()

    @keys.add("escape", "enter", filter=~is_searching)
    def _new_line(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @keys.add("c-c", filter=~is_searching)
    def _clear_or_quit(event: KeyPressEvent) -> None:
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=EOFError)

    return keys


def refused_text(url: str, exc: RequestFailed, *, has_key: bool) -> str:
    """A refusal at start, as one line; a 401 says what to do about the key."""
    if exc.status == 401:
        if has_key:
            return f"✖ The server at {url} refused the API key: check --api-key or QUART_SSE_API_KEY."
        return f"✖ The server at {url} needs an API key: pass --api-key KEY or set QUART_SSE_API_KEY."
    return f"✖ The server at {url} refused: {exc.message} ({exc.status} {exc.code})"


def editor_command() -> list[str] | None:
    """``$VISUAL``, else ``$EDITOR``, else the first of ``editor``, ``nano``, ``vi`` found."""
    for name in ("VISUAL", "EDITOR"):
        value = os.environ.get(name, "").strip()
        if value:
            return shlex.split(value)
    for fallback in ("editor", "nano", "vi"):
        found = shutil.which(fallback)
        if found:
            return [found]
    return None


class ChatApp:
    """One person's chat: the current session, the client's statistics, the console."""

    def __init__(
        self,
        api: ChatAPI,
        policy: ReconnectPolicy,
        console: Console,
        *,
        session_id: str | None = None,
        history: str | None = None,
        has_key: bool = False,
    ) -> None:
        self.api = api
        self.policy = policy
        self.console = console
        self.session_id = session_id
        self.model: str | None = None
        self.session_messages: int | None = None
        self.stats = ClientStats()
        self.history = history
        self.has_key = has_key
        self.listed: list[str] = []  # the ids of the last /sessions, for /switch N

    def prompt_message(self) -> FormattedText:
        parts = [("class:you", "You ")]
        if self.session_id:
            parts.append(("class:session", f"[{render.short(self.session_id)}] "))
        parts.append(("class:arrow", "\u203a "))
        return FormattedText(parts)

    def say(self, text: str, style: str = "") -> None:
        """One line shown as written: never markup, control characters escaped."""
        self.console.print(plain(render.deco(text), style=style), soft_wrap=True)

    def show(self, renderable: RenderableType) -> None:
        self.console.print(renderable)

    async def run(self) -> int:
        self.console.print(render.banner(self.api.base_url))
        code = await self.start()
        if code is not None:
            return code
        prompt: PromptSession[str] = PromptSession(
            history=make_history(self.history),
            style=PROMPT_STYLE,
            key_bindings=key_bindings(),
            enable_open_in_editor=True,
            prompt_continuation=lambda width, line, wrap: "." * (width - 1) + " ",
        )
        while True:
            self.console.print()
            try:
                line = await prompt.prompt_async(self.prompt_message())
            except (KeyboardInterrupt, EOFError):
                break
            if not line.strip():
                continue
            if line.lstrip().startswith("/") and "\n" not in line.strip():
                if not await commands.dispatch(self, line.strip()):
                    break
            else:
                await self.send(line.strip("\n"))
        self.say("👋 Goodbye!", "cyan")
        return EXIT_OK

    async def start(self) -> int | None:
        """Reach the server once, then create or open the session: None, or the exit code."""
        try:
            health = await self.api.health()
        except Unreachable as exc:
            self.say("✖ " + render.unreachable_text(self.api.base_url, str(exc)), "red")
            return EXIT_UNREACHABLE
        except RequestFailed as exc:
            self.say(refused_text(self.api.base_url, exc, has_key=self.has_key), "red")
            return EXIT_ERROR
        self.model = str(health.get("model", "")) or None
        wanted, self.session_id = self.session_id, None
        try:
            if wanted is None:
                data = await self.api.new_session()
                self.session_id = str(data["session_id"])
                self.model = str(data.get("model") or self.model)
                self.session_messages = 0
                self.stats.sessions_created += 1
            else:
                await self.api.session(wanted)  # a wrong key is told here; an unknown id by /switch
        except Unreachable as exc:
            self.say("✖ " + render.unreachable_text(self.api.base_url, str(exc)), "red")
            return EXIT_UNREACHABLE
        except RequestFailed as exc:
            if exc.status == 401 or wanted is None:
                self.say(refused_text(self.api.base_url, exc, has_key=self.has_key), "red")
                return EXIT_ERROR
        self.console.print(render.connected(health))
        if wanted is not None:
            await commands.dispatch(self, f"/switch {wanted}")
        return None

    async def send(self, message: str) -> Outcome:
        """Send ``message`` in the current session (a new one when there is none) and show the
        answer; Ctrl-C cancels it."""
        answer = self._answer()
        return await self._shown(answer, answer.run(message, self.session_id), sent=True)

    async def follow(self, stream_id: str) -> Outcome:
        """Show the answer being generated by ``stream_id`` from its first event, live, as if it
        had been asked here; Ctrl-C cancels it."""
        answer = self._answer()
        return await self._shown(answer, answer.follow(stream_id, self.session_id), sent=False)

    def _answer(self) -> Answer:
        view: AnswerView = TextView(self.console) if render.is_plain() else RichView(self.console)
        view.session(self.session_id, self.model)
        return Answer(AnswerStream(self.api, self.policy), view)

    async def _shown(self, answer: Answer, run: Coroutine[Any, Any, Outcome], *, sent: bool) -> Outcome:
        interrupted, _ = await interruptible(run)
        outcome = answer.outcome
        if interrupted and outcome.stream_id:
            with contextlib.suppress(Unreachable, RequestFailed):
                await self.api.cancel(outcome.stream_id)
            self.say(
                "⏹  Generation cancelled on the server; the partial answer is kept in the session.", "yellow"
            )
        if sent:
            self.stats.record(outcome, new_session=self.session_id is None and outcome.session_id is not None)
        if "session_not_found" in (outcome.error or ""):
            self.say(
                "This session no longer exists: the next message starts a new one (or /switch).", "yellow"
            )
            self.session_id = None
        elif outcome.session_id:
            self.session_id = outcome.session_id
        self.model = outcome.model or self.model
        if outcome.message_count is not None:
            self.session_messages = outcome.message_count
        return outcome

    async def edit(self, initial: str = "") -> str | None:
        """A message written in the user's editor (None when there is no editor or it failed)."""
        command = editor_command()
        if command is None:
            self.say("No editor: set $EDITOR (or $VISUAL).", "yellow")
            return None
        with tempfile.TemporaryDirectory(prefix="quart-sse-chat-") as folder:
            path = Path(folder) / "message.md"
            path.write_text(initial, encoding="utf-8")
            try:
                status = await asyncio.to_thread(subprocess.call, [*command, str(path)])
            except OSError as exc:
                self.say(f"✖ Cannot run the editor {command[0]}: {exc.strerror or exc}", "red")
                return None
            if status != 0:
                self.say(f"✖ The editor exited with status {status}: nothing sent.", "red")
                return None
            return path.read_text(encoding="utf-8", errors="replace")

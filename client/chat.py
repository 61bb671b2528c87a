"""The interactive loop: a prompt with line editing and history, messages, and commands.

Ctrl-C during an answer cancels its generation on the server and returns to the prompt;
Ctrl-C or Ctrl-D at the prompt quits.  A server that cannot be reached, at start or later,
gives one line and retries (see :class:`~client.stream.ReconnectPolicy`), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.styles import Style
from rich.console import Console

from client import commands, render
from client.answer import Answer, RichView
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
    ) -> None:
        self.api = api
        self.policy = policy
        self.console = console
        self.session_id = session_id
        self.model: str | None = None
        self.session_messages: int | None = None
        self.stats = ClientStats()
        self.history = history

    def prompt_message(self) -> FormattedText:
        parts = [("class:you", "You ")]
        if self.session_id:
            parts.append(("class:session", f"[{render.short(self.session_id)}] "))
        parts.append(("class:arrow", "\u203a "))
        return FormattedText(parts)

    def say(self, text: str, style: str = "") -> None:
        """One line shown as written: never markup, control characters escaped."""
        self.console.print(plain(text, style=style), soft_wrap=True)

    async def run(self) -> int:
        self.console.print(render.banner(self.api.base_url))
        health = await self.connect()
        if health is None:
            return EXIT_UNREACHABLE
        self.model = str(health.get("model", "")) or None
        self.console.print(render.connected(health))
        if self.session_id:
            wanted, self.session_id = self.session_id, None
            await commands.dispatch(self, f"/switch {wanted}")
        prompt: PromptSession[str] = PromptSession(history=make_history(self.history), style=PROMPT_STYLE)
        while True:
            self.console.print()
            try:
                line = (await prompt.prompt_async(self.prompt_message())).strip()
            except (KeyboardInterrupt, EOFError):
                break
            if not line:
                continue
            if line.startswith("/"):
                if not await commands.dispatch(self, line):
                    break
            else:
                await self.send(line)
        self.say("👋 Goodbye!", "cyan")
        return EXIT_OK

    async def connect(self) -> dict[str, Any] | None:
        """``GET /health``, retried while the server cannot be reached; None when it never answers."""
        attempt = 0
        while True:
            try:
                return await self.api.health()
            except Unreachable as exc:
                reason = str(exc)
            except RequestFailed as exc:
                if exc.status < 500:
                    self.say(f"✖ The server at {self.api.base_url} refused: {exc.message}", "red")
                    return None
                reason = f"{exc.status} {exc.code}"
            attempt += 1
            if attempt > self.policy.attempts:
                self.say(f"✖ Cannot reach the server at {self.api.base_url} ({reason}); giving up.", "red")
                return None
            delay = self.policy.delay(attempt)
            self.say(
                f"⚠️  Cannot reach the server at {self.api.base_url} ({reason}); retrying in "
                f"{delay:.1f}s (attempt {attempt}/{self.policy.attempts})",
                "yellow",
            )
            await asyncio.sleep(delay)

    async def send(self, message: str) -> Outcome:
        view = RichView(self.console)
        view.session(self.session_id, self.model)
        answer = Answer(AnswerStream(self.api, self.policy), view)
        interrupted, _ = await interruptible(answer.run(message, self.session_id))
        outcome = answer.outcome
        if interrupted and outcome.stream_id:
            with contextlib.suppress(Unreachable, RequestFailed):
                await self.api.cancel(outcome.stream_id)
            self.say(
                "⏹  Generation cancelled on the server; the partial answer is kept in the session.", "yellow"
            )
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

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
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.document import Document
from prompt_toolkit.filters import is_searching
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.styles import Style
from prompt_toolkit.validation import ValidationError, Validator
from rich.console import Console, RenderableType

from client import commands, render
from client.answer import Answer, AnswerView, RichView, TextView
from client.api import DEFAULT_MAX_MESSAGE_CHARS, ChatAPI, RequestFailed, Unreachable
from client.safe import plain
from client.stats import REFUSED, ClientStats, Outcome
from client.stream import AnswerStream, ReconnectPolicy

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1  # the answer ended with an ``error`` event, or the server refused the request
EXIT_UNREACHABLE = 3  # the server could not be reached, or reconnection gave up
EXIT_INTERRUPTED = 130  # Ctrl-C

# Fits 80 columns (the stop sign takes two).
CANCELLED_NOTICE = "⏹  Generation cancelled on the server; the partial answer is kept."

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


class SavedHistory(FileHistory):
    """A ``FileHistory`` that survives a file it cannot write: ``warn`` is called once with
    the reason, and the input is still kept for this run."""

    def __init__(self, path: Path, warn: Callable[[str], None]) -> None:
        super().__init__(str(path))
        self.path = path
        self._warn: Callable[[str], None] | None = warn

    def store_string(self, string: str) -> None:
        try:
            super().store_string(string)
        except OSError as exc:
            self._failed(exc)

    def load_history_strings(self) -> Iterable[str]:
        try:
            return list(super().load_history_strings())
        except OSError as exc:
            self._failed(exc)
            return []

    def _failed(self, exc: OSError) -> None:
        if self._warn is not None:
            warn, self._warn = self._warn, None
            warn(history_warning(self.path, exc))


def history_warning(path: Path, exc: OSError) -> str:
    return f"⚠  The input history is not saved: cannot write {path} ({exc.strerror or exc}); see --history."


def make_history(path: str | None, warn: Callable[[str], None] | None = None) -> History:
    """The prompt's history: in memory when ``path`` is empty; else the file ``path``, whose
    folder is made.  A file that cannot be written is said once through ``warn`` (at start
    when it can be told then), and the history is kept in memory for this run."""
    if not path:
        return InMemoryHistory()
    file = Path(path).expanduser()
    tell = warn or (lambda line: None)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(file, "ab"):
            pass
    except OSError as exc:
        tell(history_warning(file, exc))
        return InMemoryHistory()
    return SavedHistory(file, tell)


def too_long_text(length: int, limit: int, what: str = "The message") -> str:
    return f"✖ {what} is too long: {length:,} of at most {limit:,} characters."


def key_bindings(limit: Callable[[], int] = lambda: DEFAULT_MAX_MESSAGE_CHARS) -> KeyBindings:
    """Alt-Enter: a new line; Ctrl-C: clear the line, or quit on an empty one; a paste that
    would make the message longer than ``limit()`` characters is refused, said in one line
    under the prompt; a typed mouse event (ESC [ 1 ; 2 M) is dropped."""
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

    @keys.add(Keys.BracketedPaste)
    def _paste(event: KeyPressEvent) -> None:
        data = event.data.replace("\r\n", "\n").replace("\r", "\n")
        buffer = event.current_buffer
        total = len(buffer.text) + len(data)
        if total > limit():
            what = f"The paste ({len(data):,} characters)" if buffer.text else "The paste"
            message = too_long_text(total, limit(), what).removeprefix("✖ ") + " Nothing pasted."
            buffer.validation_error = ValidationError(len(buffer.text), message)
            return
        buffer.insert_text(data)

    @keys.add(Keys.Vt100MouseEvent)
    def _typed_mouse_event(event: KeyPressEvent) -> None:
        """The prompt never turns mouse reporting on, so a "mouse event" was typed (ESC [ 1 ; 2 M)
        or pasted without bracketing: dropped, as prompt_toolkit's own mouse handler fails on
        the malformed ones ("Unhandled exception in event loop")."""

    return keys


class LengthValidator(Validator):
    """Enter on a message longer than ``limit()`` characters: said under the prompt, the
    text kept to edit."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self.limit = limit

    def validate(self, document: Document) -> None:
        if len(document.text) > self.limit():
            raise ValidationError(len(document.text), too_long_text(len(document.text), self.limit())[2:])


def refused_text(url: str, exc: RequestFailed, *, has_key: bool) -> str:
    """A refusal at start, as one line; a 401 says what to do about the key."""
    if exc.status == 401:
        if has_key:
            return f"✖ The server at {url} refused the API key: check --api-key or QUART_SSE_API_KEY."
        return f"✖ The server at {url} needs an API key: pass --api-key KEY or set QUART_SSE_API_KEY."
    return f"✖ The server at {url} refused: {exc.message} ({exc.status} {exc.code})"


def editor_command() -> list[str] | None:
    """``$VISUAL``, else ``$EDITOR``, else the first of ``editor``, ``nano``, ``vi`` found.
    Raises ValueError, saying which variable, when the command cannot be split as a shell
    would (an unclosed quote)."""
    for name in ("VISUAL", "EDITOR"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"${name} is not a command a shell could run ({exc}): {value!r}") from None
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
        self.made: set[str] = set()  # sessions this client created, deleted on leaving while empty
        self.kept: str | None = None  # a message the server did not take, back at the next prompt
        self.max_chars = DEFAULT_MAX_MESSAGE_CHARS  # the server's MAX_MESSAGE_CHARS once known
        self._prompt: PromptSession[str] | None = None

    def prompt_message(self) -> FormattedText:
        parts = [("class:you", "You ")]
        if self.session_id:
            parts.append(("class:session", f"[{render.short(self.session_id)}] "))
        parts.append(("class:arrow", "\u203a "))
        if not render.is_styled():
            return FormattedText([("", text) for _, text in parts])
        return FormattedText(parts)

    def say(self, text: str, style: str = "") -> None:
        """One line shown as written: never markup, control characters escaped."""
        self.console.print(plain(render.deco(text), style=style), soft_wrap=True)

    def show(self, renderable: RenderableType) -> None:
        self.console.print(renderable)

    def _session_prompt(self) -> PromptSession[str]:
        # prompt_toolkit asks the terminal where the cursor is (CPR) for each prompt, to make
        # room for completion menus (this prompt has none), and waits up to a second at exit
        # for the answer: a terminal or pty that never answers made every quit take 1.2 s.
        os.environ.setdefault("PROMPT_TOOLKIT_NO_CPR", "1")
        styled = render.is_styled()
        return PromptSession(
            history=make_history(self.history, lambda line: self.say(line, "yellow")),
            style=PROMPT_STYLE if styled else Style([]),
            include_default_pygments_style=styled,
            color_depth=None if styled else ColorDepth.MONOCHROME,
            key_bindings=key_bindings(lambda: self.max_chars),
            validator=LengthValidator(lambda: self.max_chars),
            validate_while_typing=False,
            enable_open_in_editor=True,
            prompt_continuation=lambda width, line, wrap: "." * (width - 1) + " ",
        )

    async def run(self) -> int:
        self.console.print(render.banner(self.api.base_url))
        code = await self.start()
        if code is not None:
            return code
        self._prompt = prompt = self._session_prompt()
        while True:
            self.console.print()
            default, self.kept = self.kept or "", None
            try:
                line = await prompt.prompt_async(self.prompt_message(), default=default)
            except (KeyboardInterrupt, EOFError):
                break
            if not line.strip():
                continue
            if line.lstrip().startswith("/") and "\n" not in line.strip():
                if not await commands.dispatch(self, line.strip()):
                    break
            else:
                await self.send(line.strip("\n"))
        await self.leave()
        self.say("👋 Goodbye!", "cyan")
        return EXIT_OK

    async def start(self) -> int | None:
        """Reach the server once, then create or open the session: None, or the exit code.

        A ``--session`` that matches no session starts a new one (said), so that the prompt
        always shows a session."""
        try:
            health = await self.api.health()
        except Unreachable as exc:
            self.say(self._unreachable(exc), "red")
            return EXIT_UNREACHABLE
        except RequestFailed as exc:
            self.say(refused_text(self.api.base_url, exc, has_key=self.has_key), "red")
            return EXIT_ERROR
        self.model = str(health.get("model", "")) or None
        limit = asyncio.ensure_future(self._read_limit())  # read while the session is made
        wanted, self.session_id = self.session_id, None
        try:
            if wanted is None:
                await self.create_session()
            else:
                await self.api.session(wanted)  # a wrong key is told here; a prefix by /switch
        except Unreachable as exc:
            self.say(self._unreachable(exc), "red")
            return EXIT_UNREACHABLE
        except RequestFailed as exc:
            if exc.status == 401 or wanted is None:
                self.say(refused_text(self.api.base_url, exc, has_key=self.has_key), "red")
                return EXIT_ERROR
        await limit  # a paste is checked against it from the first prompt
        self.console.print(render.connected(health))
        if wanted is not None:
            await commands.dispatch(self, f"/switch {wanted}")
            if self.session_id is None:
                try:
                    await self.create_session()
                except (Unreachable, RequestFailed) as exc:
                    self.say(f"✖ Cannot start a new session either ({exc}).", "red")
                else:
                    self.say(f"✨ Started a new session instead: {self.session_id}", "green")
        return None

    def _unreachable(self, exc: Unreachable) -> str:
        return "✖ " + render.unreachable_text(self.api.base_url, str(exc), host_unknown=exc.host_unknown)

    async def create_session(self) -> None:
        """A new session, made current; it is deleted on leaving it while still empty."""
        data = await self.api.new_session()
        self.session_id = str(data["session_id"])
        self.made.add(self.session_id)
        self.model = str(data.get("model") or self.model)
        self.session_messages = 0
        self.stats.sessions_created += 1

    async def leave(self) -> None:
        """Before quitting, /new or /switch: delete the current session when this client
        created it (at start or by /new) and it still has no message and no generation.  A
        session named with --session or /switch, or one with messages, is never deleted."""
        session_id = self.session_id
        if session_id is None or session_id not in self.made:
            return
        self.made.discard(session_id)
        with contextlib.suppress(Unreachable, RequestFailed):
            data = await self.api.session(session_id)
            if not data.get("message_count") and not data.get("generating"):
                await self.api.delete_session(session_id)

    async def _read_limit(self) -> None:
        with contextlib.suppress(Unreachable):
            self.max_chars = await self.api.max_message_chars()

    def keep(self, message: str, *, prefill: bool = True) -> None:
        """A message the server did not take: back at the next prompt (``prefill``), else
        only in the input history (Up brings it back)."""
        if prefill:
            self.kept = message
            self.say("   Your message is back at the prompt: press Enter to send it again.", "dim")
        else:
            if self._prompt is not None:
                self._prompt.history.append_string(message)
            self.say("   Your message is in the input history (Up brings it back).", "dim")

    async def send(self, message: str) -> Outcome:
        """Send ``message`` in the current session (a new one when there is none) and show the
        answer; Ctrl-C cancels it.  A message longer than the server takes is said in one
        line and not sent; one the server refuses or cannot receive is kept (see :meth:`keep`)."""
        if len(message) > self.max_chars:
            self.say(too_long_text(len(message), self.max_chars), "red")
            self.keep(message, prefill=False)
            return Outcome(REFUSED, error="the message is too long")
        answer = self._answer()
        outcome = await self._shown(answer, answer.run(message, self.session_id), sent=True)
        if answer.unreachable is not None or outcome.status == REFUSED:
            self.keep(message, prefill="message_too_long" not in (outcome.error or ""))
        return outcome

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
            self.say(CANCELLED_NOTICE, "yellow")
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
        try:
            command = editor_command()
        except ValueError as exc:
            self.say(f"✖ {exc}", "red")
            return None
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

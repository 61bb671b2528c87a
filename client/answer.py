"""One answer, from the message to its summary, shown by a view.

:class:`Answer` reads an :class:`~client.stream.AnswerStream` and keeps its
:class:`~client.stats.Outcome` up to date; a view shows it.  :class:`PlainView` writes only
the answer's text to standard output (notices go to standard error), for scripts;
:class:`RichView` renders it live as Markdown under a header, with a transient
"reconnecting" line while the connection is being restored, and a summary box at the end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.rule import Rule
from rich.text import Text

from client import render
from client.api import RequestFailed
from client.safe import plain, printable
from client.stats import CANCELLED, COMPLETE, LOST, REFUSED, Outcome
from client.stream import AnswerStream, Notice, Reconnecting, StreamLost


class AnswerView(Protocol):
    def session(self, session_id: str | None, model: str | None) -> None: ...
    def status(self, message: str, context_messages: Any) -> None: ...
    def text(self, piece: str) -> None: ...
    def notice(self, notice: Notice) -> None: ...
    def finish(self, outcome: Outcome) -> None: ...


class Answer:
    """Send ``message`` and show its answer; ``outcome`` holds what is known so far."""

    def __init__(self, stream: AnswerStream, view: AnswerView) -> None:
        self.stream = stream
        self.view = view
        self.outcome = Outcome(LOST)
        self._parts: list[str] = []

    async def run(self, message: str, session_id: str | None) -> Outcome:
        """The outcome; on cancellation the view is finished as ``cancelled``, then it propagates."""
        out = self.outcome
        out.session_id = session_id
        began = time.monotonic()
        try:
            async for item in self.stream.events(message, session_id):
                if isinstance(item, dict):
                    self._event(item)
                else:
                    self.view.notice(item)
        except StreamLost as exc:
            out.status, out.error = LOST, exc.reason
        except RequestFailed as exc:
            out.status, out.error = REFUSED, f"{exc.message} ({exc.status} {exc.code})"
        except asyncio.CancelledError:
            out.status, out.error = CANCELLED, "cancelled by the user"
            raise
        finally:
            self._close(began)  # also when cancelled (Ctrl-C): the view shows what was received
        return out

    def _close(self, began: float) -> None:
        out = self.outcome
        out.text = "".join(self._parts)
        out.seconds = time.monotonic() - began
        out.reconnects = self.stream.reconnects
        out.stream_id = self.stream.stream_id
        out.session_id = self.stream.session_id or out.session_id
        self.view.finish(out)

    def _event(self, data: dict[str, Any]) -> None:
        out = self.outcome
        kind = data.get("type")
        if kind == "session_info":
            out.session_id = data.get("session_id", out.session_id)
            out.stream_id = data.get("stream_id")
            out.model = data.get("model")
            self.view.session(out.session_id, out.model)
        elif kind == "status":
            out.context_messages = data.get("context_messages")
            self.view.status(str(data.get("message", "Generating response...")), out.context_messages)
        elif kind == "chunk":
            piece = str(data.get("text", ""))
            self._parts.append(piece)
            out.chunks += 1
            self.view.text(piece)
        elif kind == "complete":
            out.status = COMPLETE
            out.message_count = data.get("message_count")
            out.finish_reason = data.get("finish_reason")
        elif kind == "error":
            out.status = str(data.get("code") or "error")
            out.error = str(data.get("message", ""))


def _notice_text(notice: Notice) -> str:
    if isinstance(notice, Reconnecting):
        what = "reconnecting" if notice.started else "cannot reach the server, retrying"
        return f"{what} (attempt {notice.attempt}/{notice.attempts}) in {notice.delay:.1f}s: {notice.reason}"
    return f"resumed after {notice.attempts} attempt{'s' if notice.attempts > 1 else ''}"


class PlainView:
    """Only the answer's text on ``out``; one-line notices on ``err``."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, prog: str = "quart-sse-chat"):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.prog = prog

    def session(self, session_id: str | None, model: str | None) -> None:
        pass

    def status(self, message: str, context_messages: Any) -> None:
        pass

    def text(self, piece: str) -> None:
        if piece:
            self.out.write(piece)
            self.out.flush()

    def notice(self, notice: Notice) -> None:
        self._say(_notice_text(notice))

    def finish(self, outcome: Outcome) -> None:
        if outcome.text and not outcome.text.endswith("\n"):
            self.out.write("\n")
        self.out.flush()
        if not outcome.ok:
            if outcome.status in (LOST, REFUSED):
                self._say(f"error: {outcome.error}")
            else:
                self._say(f"the answer ended with an error ({outcome.status}): {outcome.error}")

    def _say(self, line: str) -> None:
        self.err.write(f"{self.prog}: {printable(line)}\n")
        self.err.flush()


class RichView:
    """The answer as live Markdown between two rules, then the summary box."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None
        self._text = ""
        self._notice: Text | None = None
        self._chunks = 0
        self._done = False
        self.session_id: str | None = None
        self.model: str | None = None

    def session(self, session_id: str | None, model: str | None) -> None:
        self.session_id, self.model = session_id, model

    def status(self, message: str, context_messages: Any) -> None:
        self.console.print(plain(f"💭 {message} (context: {context_messages} messages)", style="dim"))
        self._start()

    def _start(self) -> None:
        if self._live is not None:
            return
        self.console.print()
        self.console.print(render.answer_header(self.session_id, self.model))
        self.console.print(Rule(style="dim"))
        self._live = Live(
            self._renderable(), console=self.console, refresh_per_second=10, vertical_overflow="visible"
        )
        self._live.start()

    def _renderable(self) -> RenderableType:
        body = render.AnswerMarkdown(self._text) if self._text else Text("")
        if self._notice is not None:
            return Group(body, self._notice)
        if self._chunks and not self._done:
            return Group(body, Text(f"● streaming… {self._chunks} chunks", style="dim cyan"))
        return body

    def _update(self, *, now: bool = False) -> None:
        if self._live is not None:
            self._live.update(self._renderable(), refresh=now)

    def text(self, piece: str) -> None:
        self._start()
        self._text += piece
        self._chunks += 1
        self._update()

    def notice(self, notice: Notice) -> None:
        if isinstance(notice, Reconnecting) and not notice.started:
            self.console.print(plain(f"⚠️  {_notice_text(notice)}", style="yellow"))
            return
        self._start()
        self._notice = (
            plain(f"⟳ {_notice_text(notice)}", style="yellow") if isinstance(notice, Reconnecting) else None
        )
        self._update(now=True)  # drawn at once, however short the wait

    def finish(self, outcome: Outcome) -> None:
        if self._live is None and outcome.status in (LOST, REFUSED) and not outcome.chunks:
            self.console.print(plain(f"✖ {outcome.error}", style="red"))
            return
        if self._live is not None:
            self._notice, self._done = None, True
            self._live.update(self._renderable())
            self._live.stop()
            self._live = None
            self.console.print(Rule(style="dim"))
        self.console.print()
        self.console.print(render.summary(outcome))

"""One answer, from the message to its summary, shown by a view.

:class:`Answer` reads an :class:`~client.stream.AnswerStream` and keeps its
:class:`~client.stats.Outcome` up to date; a view shows it.  :class:`PlainView` writes only
the answer's text to standard output (notices go to standard error), for scripts;
:class:`RichView` renders it as Markdown under a header: each finished block is printed to
the scrollback once, and only the unfinished last block (its last few lines) is drawn live,
redrawn at most ten times a second, with a transient "reconnecting" line while the
connection is being restored, and a summary box at the end.  :class:`TextView` is the same
in ``--plain`` mode: the text as it comes, no Markdown, boxes or emoji.

Why not Rich ``Live`` over the whole answer: once a live region is taller than the
terminal, every redraw leaves a partial copy in the scrollback (Textualize/rich #3263), and
each redraw renders the whole answer again, so its cost grows with the answer's length.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol, TextIO

from rich.console import Console, ConsoleOptions
from rich.live import Live
from rich.rule import Rule
from rich.segment import Segment, Segments
from rich.text import Text

from client import render
from client.api import RequestFailed, summary
from client.blocks import BlockSplitter, split_blocks
from client.safe import plain, printable
from client.stats import CANCELLED, COMPLETE, LOST, REFUSED, Outcome
from client.stream import AnswerStream, Item, Notice, NotPosted, Reconnecting, StreamLost
from client.wrap import StatusLine, WordWrapper


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
        self.unreachable: str | None = None  # why the message could not be sent (not retried)
        self._parts: list[str] = []

    async def run(self, message: str, session_id: str | None) -> Outcome:
        """The outcome; on cancellation the view is finished as ``cancelled``, then it propagates."""
        return await self._read(self.stream.events(message, session_id), session_id)

    async def follow(self, stream_id: str, session_id: str | None) -> Outcome:
        """The same for an answer already being generated (``stream_id``), shown from its start."""
        return await self._read(self.stream.follow(stream_id, session_id), session_id)

    async def _read(self, items: AsyncIterator[Item], session_id: str | None) -> Outcome:
        out = self.outcome
        out.session_id = session_id
        began = time.monotonic()
        try:
            async for item in items:
                if isinstance(item, dict):
                    self._event(item)
                else:
                    self.view.notice(item)
            if out.status == LOST and out.error is None:
                out.error = "the stream had ended"
        except NotPosted as exc:
            base = self.stream.api.base_url
            out.status = LOST
            out.error = render.unreachable_text(base, exc.unreachable, host_unknown=exc.host_unknown)
            self.unreachable = exc.unreachable
        except StreamLost as exc:
            out.status, out.error = LOST, exc.reason
        except RequestFailed as exc:
            out.status, out.error = REFUSED, f"{exc.message} ({exc.status} {exc.code})"
        except asyncio.CancelledError:
            out.status, out.error = CANCELLED, "cancelled by the user"
            raise
        except Exception as exc:  # a bug: the view says what it was (not "None"), then it propagates
            out.status, out.error = LOST, summary(exc)
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
            out.error = str(data.get("message") or "")


def _messages(count: Any) -> str:
    return render.plural(count, "message")


def _notice_text(notice: Notice) -> str:
    if isinstance(notice, Reconnecting):
        what = "reconnecting" if notice.started else "cannot reach the server, retrying"
        return f"{what} (attempt {notice.attempt}/{notice.attempts}) in {notice.delay:.1f}s: {notice.reason}"
    return f"resumed after {render.plural(notice.attempts, 'attempt')}"


class PlainView:
    """Only the answer's text on ``out``; one-line notices on ``err``."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, prog: str = "quart-sse-chat"):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.prog = prog
        # On a terminal, reconnection attempts rewrite one line; in a log, each is a line.
        self._status = StatusLine(self.err, _columns) if _isatty(self.err) else None

    def session(self, session_id: str | None, model: str | None) -> None:
        pass

    def status(self, message: str, context_messages: Any) -> None:
        pass

    def text(self, piece: str) -> None:
        if piece:
            self.out.write(piece)
            self.out.flush()

    def notice(self, notice: Notice) -> None:
        if self._status is None:
            self._say(_notice_text(notice))
        elif isinstance(notice, Reconnecting):
            self._status.show(f"{self.prog}: {printable(_notice_text(notice))}")
        else:
            self._status.end(f"{self.prog}: {printable(_notice_text(notice))}")

    def finish(self, outcome: Outcome) -> None:
        if self._status is not None:
            self._status.end()
        if outcome.text and not outcome.text.endswith("\n"):
            self.out.write("\n")
        self.out.flush()
        if not outcome.ok:
            reason = outcome.error or "no reason given"
            if outcome.status in (LOST, REFUSED):
                self._say(f"error: {reason}")
            else:
                self._say(f"the answer ended with an error ({outcome.status}): {reason}")

    def _say(self, line: str) -> None:
        self.err.write(f"{self.prog}: {printable(line)}\n")
        self.err.flush()


def _isatty(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


def _columns() -> int:
    return shutil.get_terminal_size().columns


def _rstrip(line: list[Segment]) -> list[Segment]:
    """``line`` without its trailing blanks: a live line is only as wide as its text, so a
    terminal narrowed mid-answer does not wrap it into rows the next redraw would not erase."""
    line = list(line)
    while line and not line[-1].control and not line[-1].text.rstrip():
        line.pop()
    if line and not line[-1].control:
        last = line[-1]
        line[-1] = Segment(last.text.rstrip(), last.style)
    return line


class _Tail:
    """The live region: the last lines of the unfinished block, then one status line.

    At most ``max_lines`` lines of text (fewer on a short terminal), so the region never
    grows past the screen, whatever the length of the block.
    """

    def __init__(self, text: str, footer: Text | None, max_lines: int) -> None:
        self.text, self.footer, self.max_lines = text, footer, max_lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        limit = max(1, min(self.max_lines, options.size.height - 4))
        lines: list[list[Segment]] = []
        if self.text.strip():
            body = render.AnswerMarkdown(self.text)
            lines = console.render_lines(body, options.update(height=None), pad=False)
        if len(lines) > limit:
            lines = [[Segment("⋮", console.get_style("dim"))], *lines[-(limit - 1) :]] if limit > 1 else []
        for line in lines:
            yield from _rstrip(line)
            yield Segment.line()
        if self.footer is not None:
            yield from console.render(self.footer, options)


class RichView:
    """The answer as Markdown between two rules, then the summary box.

    ``interval``: the shortest time between two redraws, in seconds; ``tail_lines``: the most
    lines of the unfinished block shown live; ``clock`` is ``time.monotonic`` or a test's own.
    ``draws`` counts the redraws.
    """

    def __init__(
        self,
        console: Console,
        *,
        interval: float = 0.1,
        tail_lines: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.interval = interval
        self.tail_lines = tail_lines
        self._clock = clock
        self._live: Live | None = None
        self._blocks = BlockSplitter()
        self._printed = False  # a block is in the scrollback: the next one comes after a blank line
        self._notice: Text | None = None
        self._chunks = 0
        self._drawn_at = -float("inf")
        self._timer: asyncio.TimerHandle | None = None
        self.draws = 0
        self.session_id: str | None = None
        self.model: str | None = None

    def session(self, session_id: str | None, model: str | None) -> None:
        self.session_id, self.model = session_id, model

    def status(self, message: str, context_messages: Any) -> None:
        self.console.print(plain(f"💭 {message} (context: {_messages(context_messages)})", style="dim"))
        self._start()

    def _start(self) -> None:
        if self._live is not None:
            return
        self.console.print()
        self.console.print(render.answer_header(self.session_id, self.model))
        self.console.print(Rule(style="dim"))
        self._live = Live(
            self._tail(),
            console=self.console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def _tail(self) -> _Tail:
        footer = self._notice
        if footer is None and self._chunks:
            footer = Text(f"● streaming… {render.plural(self._chunks, 'chunk')}", style="dim cyan")
        return _Tail(self._blocks.tail, footer, self.tail_lines)

    def _print_blocks(self, source: str) -> None:
        """Each block of ``source`` rendered on its own, without the blank lines Rich puts
        around it, and one blank line between blocks: the same output for the same answer,
        however its pieces were split (Rich's spacing depends on what follows a block in
        the same document)."""
        for block in split_blocks(source):
            lines = render.block_lines(self.console, block)
            if not lines:
                continue
            if self._printed:
                self.console.print()
            self.console.print(Segments(segment for line in lines for segment in (*line, Segment.line())))
            self._printed = True

    def _draw(self) -> None:
        """Finished blocks to the scrollback (above the live region), then the tail redrawn."""
        self._timer = None
        if self._live is None:
            return
        self._drawn_at = self._clock()
        self.draws += 1
        self._print_blocks(self._blocks.take_finished())
        self._live.update(self._tail(), refresh=True)

    def _request_draw(self) -> None:
        """Draw now, or once ``interval`` has passed since the last draw (one timer at most)."""
        if self._timer is not None:
            return
        wait = self._drawn_at + self.interval - self._clock()
        if wait <= 0:
            self._draw()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a test): the next piece, or finish, draws
            return
        self._timer = loop.call_later(wait, self._draw)

    def text(self, piece: str) -> None:
        self._start()
        self._blocks.feed(piece)
        self._chunks += 1
        self._request_draw()

    def notice(self, notice: Notice) -> None:
        if isinstance(notice, Reconnecting) and not notice.started:
            self.console.print(plain(f"⚠️  {_notice_text(notice)}", style="yellow"))
            return
        self._start()
        self._notice = (
            plain(f"⟳ {_notice_text(notice)}", style="yellow") if isinstance(notice, Reconnecting) else None
        )
        if self._timer is not None:
            self._timer.cancel()
        self._draw()  # drawn at once, however short the wait

    def finish(self, outcome: Outcome) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._live is None and outcome.status in (LOST, REFUSED) and not outcome.chunks:
            self.console.print(plain(f"✖ {outcome.error or 'no reason given'}", style="red"))
            return
        if self._live is not None:
            self._live.update(Text(""))
            self._live.stop()  # transient: the live region is erased
            self._live = None
            self._print_blocks(self._blocks.take_all())
            self.console.print(Rule(style="dim"))
        self.console.print()
        self.console.print(render.summary(outcome))


class TextView:
    """``--plain``: the answer's text as it comes, one line before it and one after; no
    Markdown, boxes or emoji.  On a terminal the text is wrapped at word boundaries to its
    width, and reconnection attempts share one line, rewritten in place."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._ends_in_newline = True
        self._wrap = WordWrapper(lambda: self.console.width) if console.is_terminal else None
        self._status = StatusLine(console.file, lambda: self.console.width) if console.is_terminal else None

    def session(self, session_id: str | None, model: str | None) -> None:
        pass

    def status(self, message: str, context_messages: Any) -> None:
        self.console.print(plain(f"{message} (context: {_messages(context_messages)})"), soft_wrap=True)

    def text(self, piece: str) -> None:
        if not piece:
            return
        self._end_status()
        shown = self._wrap.feed(piece) if self._wrap is not None else piece
        if shown:
            self.console.print(plain(shown), end="", soft_wrap=True)
            self._ends_in_newline = shown.endswith("\n")

    def _new_line(self) -> None:
        if self._wrap is not None:
            rest = self._wrap.flush()
            if rest:
                self.console.print(plain(rest), end="", soft_wrap=True)
                self._ends_in_newline = False
        if not self._ends_in_newline:
            self.console.print()
            self._ends_in_newline = True
            if self._wrap is not None:
                self._wrap.feed("\n")

    def _end_status(self) -> None:
        if self._status is not None and self._status.shown:
            self._status.end()

    def notice(self, notice: Notice) -> None:
        if self._status is None or (self._ends_in_newline is False and self._wrap is None):
            self._new_line()
            self.console.print(plain(f"-- {_notice_text(notice)}"), soft_wrap=True)
            return
        if not self._status.shown:
            self._new_line()
        line = printable(f"-- {_notice_text(notice)}")
        if isinstance(notice, Reconnecting):
            self._status.show(line)
        else:
            self._status.end(line)

    def finish(self, outcome: Outcome) -> None:
        self._end_status()
        self._new_line()
        self.console.print(render.summary_line(outcome), soft_wrap=True)

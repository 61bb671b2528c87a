"""Long answers in a pseudo-terminal: what a person finds in the scrollback afterwards.

The real client (``python -m client``) runs in a pseudo-terminal against the real server;
every byte it writes is replayed into pyte's ``HistoryScreen`` (a VT100 emulator with
scrollback), and the test reads history plus screen as a person would scroll through them.

The model is the server's OpenAI-compatible backend pointed at a small upstream here, which
writes a 200-line Markdown answer: the built-in offline model writes one paragraph of words
and no line breaks, so it cannot write a long Markdown answer.  The upstream can hold the
answer half-way until the test has resized the terminal, so a resize lands mid-answer
without any sleep.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pexpect
import pyte
import pytest
from aiohttp import web

from tests.support.local_http import LocalApp
from tests.support.openai_standin import chunk
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--backoff", "0.01", "--backoff-max", "0.05"]
MARK = re.compile(r"M\d{3}\b")


def long_answer() -> tuple[list[str], int]:
    """200 lines of Markdown, each with its own marker M001…M200, in ten parts of headings,
    paragraphs, lists, code, quotes and raw HTML; and the index of the line where part 6
    begins (the upstream may hold the answer there)."""
    lines: list[str] = []
    n = 0

    def mark() -> str:
        nonlocal n
        n += 1
        return f"M{n:03d}"

    half = 0
    for part in range(1, 11):
        if part == 6:
            half = len(lines)
        lines += [f"## Part {part} {mark()}", ""]
        lines += [f"Some words {mark()} that go on", f"into a second line {mark()}", ""]
        lines += [f"- item {mark()} of the list" for _ in range(5)] + [""]
        lines += ["```python"] + [f"print('{mark()}')  # code" for _ in range(4)] + ["```", ""]
        lines += [f"1. step {mark()}" for _ in range(3)] + [""]
        lines += [f"> quoted {mark()}", f"> and more {mark()}", ""]
        if part == 5:
            lines += [f"<script>alert('{mark()}')</script>", ""]
            lines += [f"a <b>bold</b> tag {mark()} kept", ""]
        else:
            lines += [f"Plain line {mark()}", "", f"Another line {mark()}", ""]
        lines += [f"Last words {mark()} of part {part}", ""]
    assert n == 200, n
    return lines, half


class MarkdownUpstream(LocalApp):
    """An OpenAI-compatible ``/v1/chat/completions`` that streams :func:`long_answer`, two
    pieces a line; with ``hold`` it stops before part 6 until :attr:`go` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.go = asyncio.Event()
        self.held = asyncio.Event()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        lines, half = long_answer()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"data: {chunk({'role': 'assistant', 'content': ''})}\n\n".encode())
        for i, line in enumerate(lines):
            if self.hold and i == half:
                self.held.set()
                await self.go.wait()
            cut = len(line) // 2
            for piece in (line[:cut], line[cut:] + "\n"):
                await response.write(f"data: {chunk({'content': piece})}\n\n".encode())
        await response.write(f"data: {chunk({}, 'stop')}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response


class Terminal:
    """The client in a pseudo-terminal of ``rows`` x ``columns``, replayed into pyte."""

    def __init__(self, url: str, rows: int, columns: int, *args: str, env: dict[str, str] | None = None):
        from tests.e2e.test_client import client_env

        self.screen = pyte.HistoryScreen(columns, rows, history=100_000, ratio=0.5)
        self.stream = pyte.ByteStream(self.screen)
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "client", "--url", url, "--history", "", *FAST, *args],
            env=client_env(**(env or {})),
            cwd=str(ROOT),
            dimensions=(rows, columns),
            timeout=60,
        )
        self.child.logfile_read = self  # every byte read goes through write()
        self.raw = bytearray()

    def write(self, data: bytes) -> None:
        self.raw += data
        self.stream.feed(data)

    def flush(self) -> None:
        pass

    async def expect(self, pattern: str | bytes | type[pexpect.EOF]) -> None:
        await asyncio.to_thread(self.child.expect, pattern)

    def resize(self, rows: int, columns: int) -> None:
        """The emulator first, then the pty (TIOCSWINSZ; the kernel sends SIGWINCH)."""
        self.screen.resize(rows, columns)
        self.child.setwinsize(rows, columns)

    def lines(self) -> list[str]:
        """History, then the screen: everything a person can scroll through, top to bottom."""

        def text(line: dict[int, pyte.screens.Char]) -> str:
            return "".join(line[x].data for x in sorted(line)).rstrip()

        return [text(line) for line in self.screen.history.top] + [s.rstrip() for s in self.screen.display]

    def close(self) -> None:
        self.child.close(force=True)


PROMPT = rb"You (?:\x1b\[[0-9;?]*[A-Za-z]|\s)*\[[0-9a-f]{8}"


@pytest.fixture(name="markdown_server")
async def _markdown_server(
    start_server: Callable[..., ServerProcess],
) -> AsyncIterator[Callable[[bool], tuple[ServerProcess, MarkdownUpstream]]]:
    upstreams: list[MarkdownUpstream] = []

    def serve(hold: bool) -> tuple[ServerProcess, MarkdownUpstream]:
        upstream = upstreams[-1]
        upstream.hold = hold
        server = start_server(
            MODEL_PROVIDER="openai", OPENAI_BASE_URL=f"{upstream.url}/v1", OPENAI_MODEL="markdown-writer"
        )
        return server, upstream

    async with MarkdownUpstream() as upstream:
        upstreams.append(upstream)
        yield serve


async def run_long_answer(term: Terminal, upstream: MarkdownUpstream, resize: tuple[int, int] | None) -> None:
    await term.expect(PROMPT)
    term.child.send("write me a long answer\r")
    if resize is not None:
        await asyncio.wait_for(upstream.held.wait(), 60)
        await term.expect("M100")  # part 5 is on the terminal, part 6 not sent yet
        term.resize(*resize)
        upstream.go.set()
    await term.expect("SSE STREAM COMPLETED")
    await term.expect(PROMPT)
    term.child.send("/quit\r")
    await term.expect(pexpect.EOF)


def assert_once_in_order(lines: list[str]) -> None:
    seen = MARK.findall("\n".join(lines))
    expected = [f"M{n:03d}" for n in range(1, 201)]
    duplicated = sorted({m for m in seen if seen.count(m) > 1})
    assert not duplicated, f"duplicated: {duplicated[:10]}"
    assert seen == expected, f"missing: {sorted(set(expected) - set(seen))[:10]}"
    text = "\n".join(lines)
    assert text.count("AI Response") == 1
    assert text.count("SSE STREAM COMPLETED") == 1
    assert "Traceback" not in text


@pytest.mark.parametrize(("rows", "columns"), [(24, 80), (20, 100)])
async def test_a_200_line_answer_is_in_the_scrollback_once_in_order(markdown_server, rows, columns):
    server, upstream = markdown_server(False)
    term = Terminal(server.url, rows, columns)
    try:
        await run_long_answer(term, upstream, None)
    finally:
        term.close()
    lines = term.lines()
    assert_once_in_order(lines)
    text = "\n".join(lines)
    assert "<script>alert('M098')</script>" in text  # HTML shows as the text it is
    assert "a <b>bold</b> tag M099 kept" in text
    # The live region never grew past the screen: Rich's cursor-up moves stay within it.
    ups = [int(n or 1) for n in re.findall(rb"\x1b\[(\d*)A", bytes(term.raw))]
    assert max(ups, default=0) < rows


@pytest.mark.parametrize(
    ("size", "resized"),
    [((24, 80), (30, 100)), ((20, 100), (28, 60))],
    ids=["80x24-to-100x30", "100x20-to-60x28"],
)
async def test_a_resize_mid_answer_leaves_no_duplicates(markdown_server, size, resized):
    server, upstream = markdown_server(True)
    term = Terminal(server.url, *size)
    try:
        await run_long_answer(term, upstream, resized)
    finally:
        term.close()
    assert (term.screen.lines, term.screen.columns) == resized
    assert_once_in_order(term.lines())


async def test_a_long_offline_paragraph_is_in_the_scrollback_once(start_server, http):
    """The offline model's answer is one paragraph of words: a single block far taller than
    the screen, shown live only by its last lines, printed whole once at the end."""
    server = start_server(SIM_RESPONSE_CHUNKS="600", SIM_CHUNK_DELAY_MS="1")
    term = Terminal(server.url, 24, 80)
    try:
        await term.expect(PROMPT)
        term.child.send("a long paragraph please\r")
        await term.expect("SSE STREAM COMPLETED")
        await term.expect(PROMPT)
        term.child.send("/quit\r")
        await term.expect(pexpect.EOF)
    finally:
        term.close()
    async with http.get(f"{server.url}/sessions") as r:
        (only,) = [s for s in (await r.json())["sessions"] if s["message_count"]]
    async with http.get(f"{server.url}/sessions/{only['session_id']}") as r:
        saved = (await r.json())["messages"][-1]["content"]
    words = " ".join(term.lines()).split()
    expected = saved.split()
    # The answer's words appear once, in order, as one run: find where it starts.
    start = next(i for i in range(len(words)) if words[i : i + 8] == expected[:8])
    assert words[start : start + len(expected)] == expected
    assert " ".join(expected[-12:]) not in " ".join(words[start + len(expected) :])
    assert " ".join(expected[:12]) not in " ".join(words[start + 1 :])

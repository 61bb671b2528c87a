"""Text from the server, the model or the user is shown as text (client.safe and its users).

Never parsed as Rich markup (``[/]`` would raise ``MarkupError``, ``[bold]`` would vanish),
no control character or escape sequence written raw to the terminal (not even through the
Markdown of an answer), and HTML in an answer shown as the text it is.
"""

from __future__ import annotations

import io
from typing import Any, cast

import pytest
from rich.console import Console, RenderableType

from client import commands, render
from client.answer import PlainView, RichView
from client.api import ChatAPI, RequestFailed
from client.chat import ChatApp
from client.safe import plain, printable
from client.stats import Outcome
from client.stream import Reconnecting, ReconnectPolicy, Resumed

BRACKETS = ["[/]", "x[/2]", "see [/usr/bin/env]", "[bold]not bold[/bold]", "[link=http://e.vil]x[/link]"]
HOSTILE = "\x1b[31mred\x1b[0m \x1b]0;pwned\x07 \x1b[2J \x1b]8;;http://e.vil\x1b\\click\x1b]8;;\x1b\\ \x9b1m"
HOSTILE_SHOWN = (
    "\\x1b[31mred\\x1b[0m \\x1b]0;pwned\\x07 \\x1b[2J "
    "\\x1b]8;;http://e.vil\\x1b\\click\\x1b]8;;\\x1b\\ \\x9b1m"
)
# Rich writes its own styles ("\x1b[0m" resets them) and Live's cursor moves; none of these.
RAW = ["\x1b[31mred", "\x1b]0;pwned", "\x07", "\x1b[2J", "\x1b]8;;http://e.vil", "\x9b", "\u202e"]


def terminal(width: int = 200, **options: Any) -> Console:
    """A recording console that believes it writes to a terminal (Live draws, styles escape)."""
    return Console(record=True, file=io.StringIO(), force_terminal=True, width=width, **options)


def written(console: Console) -> str:
    """Every character the console sent to its "terminal"."""
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def assert_nothing_raw(raw: str) -> None:
    for sequence in RAW:
        assert sequence not in raw, f"{sequence!r} reached the terminal raw"


def shown(renderable: RenderableType) -> str:
    console = terminal(color_system=None)
    console.print(renderable)
    assert_nothing_raw(written(console))
    return console.export_text()


def test_printable_escapes_controls_and_bidi_and_keeps_lines():
    assert printable(HOSTILE) == HOSTILE_SHOWN
    assert printable("a\tb\nc\r\nd") == "a\tb\nc\nd"  # tabs and newlines kept, CRLF is a newline
    assert printable("over\rwrite\x00\x08\x7f\x85") == "over\\x0dwrite\\x00\\x08\\x7f\\x85"
    assert printable("abc\u202edef\u2066g\u2069\u202a") == "abc\\u202edef\\u2066g\\u2069\\u202a"
    assert printable("é ü 日本 🌊 [bold] <b>") == "é ü 日本 🌊 [bold] <b>"
    assert printable(printable(HOSTILE)) == HOSTILE_SHOWN  # nothing left to escape
    assert printable(3) == "3"
    assert render.short("\x1b[2J\x1b]0;x\x07") == "\\x1b[2J\\x1b]0;…"  # cut, then escaped
    assert render.short("ab\x07") == "ab\\x07"


@pytest.mark.parametrize("text", BRACKETS)
def test_plain_text_is_never_markup(text):
    assert shown(plain(text)).rstrip("\n") == text


def rich_answer(answer: str, *, status: str = "Generating response...", **console: Any) -> str:
    """The whole RichView output for ``answer``, checked for raw sequences; the exported text."""
    con = terminal(**console)
    view = RichView(con)
    view.session("a1b2c3d4e5f6", "simulated")
    view.status(status, 2)
    half = len(answer) // 2
    view.text(answer[:half])
    view.text(answer[half:])
    view.finish(Outcome("complete", text=answer, chunks=2, message_count=2))
    assert_nothing_raw(written(con))
    return con.export_text()


@pytest.mark.parametrize("text", BRACKETS)
def test_brackets_in_an_answer_and_a_status_print_literally(text):
    out = rich_answer(f"Answer: {text}", status=f"Thinking {text}")
    assert f"Answer: {text}" in out
    assert f"💭 Thinking {text} (context: 2 messages)" in out


def test_escape_sequences_in_an_answer_never_reach_the_terminal():
    answer = f"Look: {HOSTILE}\n\n```\ncode {HOSTILE}\n```\n\n- item \u202eevil\n"
    out = rich_answer(answer, color_system=None)
    assert f"Look: {HOSTILE_SHOWN}" in out
    assert f"code {HOSTILE_SHOWN}" in out
    assert "item \\u202eevil" in out
    rich_answer(answer, color_system="truecolor")  # with Rich's own colours, still nothing raw


def test_escape_sequences_in_the_status_line():
    out = rich_answer("fine", status=f"Thinking {HOSTILE}")
    assert f"💭 Thinking {HOSTILE_SHOWN} (context: 2 messages)" in out


def test_character_references_cannot_smuggle_a_bidi_override():
    out = rich_answer("before &#x202E; after &#8238; end")
    assert "before \\u202e after \\u202e end" in out


def test_html_in_an_answer_shows_as_written():
    answer = (
        "<script>alert(1)</script>\n\n"
        "a <b>bold</b> word and <kbd>Ctrl</kbd>\n\n"
        "<div>\nblock\n</div>\n\n"
        "`<i>code</i>` and **real bold**\n\n"
        "```html\n<p>if a < b</p>\n```\n"
    )
    out = rich_answer(answer, color_system=None)
    assert "<script>alert(1)</script>" in out
    assert "a <b>bold</b> word and <kbd>Ctrl</kbd>" in out
    assert "<div>" in out and "</div>" in out
    assert "<i>code</i> and real bold" in out  # inline code and Markdown still rendered
    assert "<p>if a < b</p>" in out


@pytest.mark.parametrize("text", [*BRACKETS, HOSTILE])
def test_errors_and_notices_print_literally(text):
    expected = printable(text)
    con = terminal()
    view = RichView(con)
    view.notice(Reconnecting(1, 8, 0.5, f"refused {text}", started=False))
    view.finish(Outcome("lost", error=f"gave up ({text})"))
    out = con.export_text()
    assert f"(attempt 1/8) in 0.5s: refused {expected}" in out
    assert f"✖ gave up ({expected})" in out
    assert_nothing_raw(written(con))

    con = terminal()
    view = RichView(con)
    view.session(f"{text}-session", f"model {text}")
    view.status("Generating response...", 1)
    view.text("Partial")
    view.notice(Reconnecting(1, 8, 0.5, f"dropped {text}", started=True))
    view.notice(Resumed(1))
    view.finish(Outcome("model_error", text="Partial", chunks=1, error=f"the model failed: {text}"))
    out = " ".join(con.export_text().split())
    assert f"model {' '.join(expected.split())})" in out
    assert f"the model failed: {' '.join(expected.split())}" in out
    assert_nothing_raw(written(con))


def test_plain_view_escapes_notices_on_stderr_and_keeps_stdout_exact():
    out, err = io.StringIO(), io.StringIO()
    view = PlainView(out, err, "prog")
    view.text("data \x1b[31m kept")  # standard output is a pipe: the answer, byte for byte
    view.notice(Reconnecting(1, 8, 0.5, f"dropped {HOSTILE}", started=True))
    view.finish(Outcome("lost", text="data \x1b[31m kept", chunks=1, error=f"gave up {HOSTILE}"))
    assert out.getvalue() == "data \x1b[31m kept\n"
    assert err.getvalue() == (
        f"prog: reconnecting (attempt 1/8) in 0.5s: dropped {HOSTILE_SHOWN}\n"
        f"prog: error: gave up {HOSTILE_SHOWN}\n"
    )


@pytest.mark.parametrize("text", [*BRACKETS, HOSTILE])
def test_server_data_in_boxes_and_lists(text):
    expected = " ".join(printable(text).split())
    session = {
        "session_id": f"{text}-id",
        "model": f"m {text}",
        "message_count": f"{text}",
        "user_messages": 1,
        "ai_messages": 1,
        "created_at": "2025-01-02T14:26:52Z",
        "last_activity": f"{text}",
    }
    for renderable in (
        render.session_info(session),
        render.sessions_list([session], None),
        render.health({"status": text, "model": text, "store": text}),
        render.server_stats({"model": text, "store": text, "total_requests": text}),
        render.summary(Outcome("model_error", chunks=1, finish_reason=text, error=text)),
        render.summary(Outcome("complete", chunks=1, finish_reason=text)),
        render.connected({"model": text}),
        render.banner(f"http://host/{text}"),
        render.answer_header(f"{text}-id", text),
    ):
        out = " ".join(shown(renderable).split())
        assert expected in out, out


class HostileAPI:
    """A server whose every string is hostile."""

    base_url = "http://stand-in"

    def __init__(self, text: str) -> None:
        self.text = text

    async def session(self, session_id: str) -> dict[str, Any]:
        if session_id == "gone":
            raise RequestFailed(500, "boom", f"failed {self.text}")
        return {"session_id": f"{self.text}-id", "model": self.text, "message_count": 1}

    async def new_session(self) -> dict[str, Any]:
        return {"session_id": f"{self.text}-new", "model": self.text}


@pytest.mark.parametrize("text", [*BRACKETS, HOSTILE])
async def test_command_lines_print_literally(text):
    expected = printable(text)
    con = terminal()
    app = ChatApp(cast(ChatAPI, HostileAPI(text)), ReconnectPolicy(), con)
    assert await commands.dispatch(app, f"/{text}")  # an unknown command, typed by the user
    assert f"Unknown command /{expected.split(' ')[0]}" in con.export_text(clear=False)
    assert await commands.dispatch(app, f"/switch {text}")
    assert f"🔀 Switched to session {expected}-id (1 message)" in con.export_text(clear=False)
    prompt = "".join(fragment[1] for fragment in app.prompt_message())
    assert render.short(f"{text}-id") in prompt
    assert_nothing_raw(prompt)
    assert await commands.dispatch(app, "/new")
    assert f"Session ID: {expected}-new" in con.export_text(clear=False)
    assert f"Model: {expected}" in con.export_text(clear=False)
    app.session_id = "gone"
    assert await commands.dispatch(app, "/info")
    assert f"✖ failed {expected} (500 boom)" in con.export_text(clear=False)
    app.say(f"said {text}", "yellow")
    assert f"said {expected}" in con.export_text(clear=False)
    assert_nothing_raw(written(con))


@pytest.mark.parametrize(
    "char", ["\u200e", "\u200f", "\u061c", "\u2028", "\u2029", "\u200b", "\ufeff", "\U000e0041"]
)
def test_invisible_and_direction_characters_are_shown_escaped(char):
    from client.safe import printable

    out = printable(f"a{char}b")
    assert char not in out and out.startswith("a\\") and out.endswith("b")

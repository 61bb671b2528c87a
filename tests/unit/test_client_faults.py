"""The client's fixes for faults a new user met, in the parts that need no server: the block
printer whatever the split, word wrapping, standard input limits, plurals and lines."""

from __future__ import annotations

import io
import random

import pytest
from rich.cells import cell_len
from rich.console import Console

from client import chat, commands, render
from client.__main__ import InputError, read_stdin
from client.answer import RichView
from client.stats import Outcome
from client.wrap import StatusLine, WordWrapper
from tests.e2e.test_client_scrollback import long_answer
from tests.unit.test_client_cli import make_app
from tests.unit.test_client_render import text_of


def printed(pieces: list[str]) -> str:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    view = RichView(console, interval=0)  # every piece draws: the most cuts
    view.status("Generating response...", 1)
    for piece in pieces:
        view.text(piece)
    view.finish(Outcome("complete", chunks=1))
    return out.getvalue().split("SSE STREAM COMPLETED")[0]


def split_at_random(text: str, rng: random.Random, cuts: int) -> list[str]:
    points = sorted(rng.sample(range(1, len(text)), cuts))
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def test_the_same_answer_prints_the_same_whatever_its_split():
    text = "\n".join(long_answer()[0]) + "\n"
    whole = printed([text])
    assert "\n\n\n" not in whole  # one blank line between blocks, never two
    for seed in range(6):
        rng = random.Random(seed)
        assert printed(split_at_random(text, rng, rng.choice([3, 40, 400]))) == whole, seed
    by_line = [line + "\n" for line in text.splitlines()]
    assert printed(by_line) == whole


@pytest.mark.parametrize("width", [10, 23, 47])
def test_streamed_text_wraps_at_word_boundaries(width):
    words = [("word" * (n % 4 + 1))[: n % 9 + 1] for n in range(300)]
    text = " ".join(words)
    rng = random.Random(width)
    wrapper = WordWrapper(lambda: width)
    shown = "".join(wrapper.feed(piece) for piece in split_at_random(text, rng, 80)) + wrapper.flush()
    lines = shown.split("\n")
    assert all(cell_len(line) <= width for line in lines)
    assert " ".join(lines).split() == words  # no word cut in two


def test_wrapping_keeps_newlines_and_indentation_and_cuts_only_words_wider_than_the_line():
    wrapper = WordWrapper(lambda: 8)
    shown = wrapper.feed("one two three\n    four\nabcdefghijkl end") + wrapper.flush()
    assert shown == "one two\nthree\n    four\nabcdefgh\nijkl end"


def test_the_status_line_is_rewritten_in_place():
    out = io.StringIO()
    line = StatusLine(out, lambda: 80)
    line.show("reconnecting (attempt 1/8)")
    line.show("reconnecting (attempt 2/8)")
    line.end("resumed after 2 attempts")
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().endswith("\rresumed after 2 attempts  \n")


def test_standard_input_is_read_up_to_the_limit_and_must_be_utf8():
    assert read_stdin("summarise", io.BytesIO("notes é\n".encode()), limit=100) == "summarise\n\nnotes é\n"
    with pytest.raises(InputError, match="standard input is too large: more than 100 bytes"):
        read_stdin("hi", io.BytesIO(b"y\n" * 1000), limit=100)
    with pytest.raises(InputError, match=r"standard input is not UTF-8 text \(byte 0xff at offset 2\)"):
        read_stdin("x", io.BytesIO(b"ab\xff"), limit=100)
    endless = io.BytesIO(b"y\n" * 10_000)
    with pytest.raises(InputError):
        read_stdin("hi", endless, limit=1000)
    assert endless.tell() == 1001  # read only a little past the limit


def test_plurals_and_lines_that_fit_80_columns():
    assert render.plural(1, "chunk") == "1 chunk"
    assert render.plural(0, "message") == "0 messages"
    assert "1 chunk in" in render.summary_line(Outcome("complete", chunks=1)).plain
    assert cell_len(chat.CANCELLED_NOTICE) <= 80
    assert cell_len(chat.too_long_text(1_048_576, 32_000)) <= 80


def test_info_says_whether_an_answer_is_being_generated():
    busy = text_of(render.session_info({"session_id": "s", "generating": "abcdef0123456789"}))
    assert "Generating" in busy and "yes (stream abcdef01…)" in busy
    assert "Generating: no" in " ".join(text_of(render.session_info({"session_id": "s"})).split())


def test_an_unresolved_host_is_not_told_to_start_a_server():
    said = render.unreachable_text(
        "http://nope.invalid", "the host name nope.invalid could not be resolved", host_unknown=True
    )
    assert "could not be resolved" in said and "Check the address" in said
    assert "Start one" not in said


async def test_leaving_deletes_only_an_empty_session_made_here():
    app, api, _out = make_app()
    await app.create_session()
    made = app.session_id
    await commands.dispatch(app, "/new")
    assert made not in api.sessions_by_id  # empty, made here: deleted
    used = app.session_id
    assert used is not None
    api.sessions_by_id[used]["message_count"] = 2
    named = (await api.new_session())["session_id"]  # as with --session
    await commands.dispatch(app, f"/switch {named}")
    assert used in api.sessions_by_id  # has messages: kept
    await app.leave()
    assert named in api.sessions_by_id  # not made here: kept


async def test_copy_with_no_answer_yet_says_so():
    app, api, out = make_app()
    await app.create_session()
    api.sessions_by_id[str(app.session_id)]["messages"] = []
    await commands.dispatch(app, "/copy")
    assert "There is no answer in this session yet" in out.getvalue()
    assert "no code block" not in out.getvalue()


def test_a_paste_over_the_limit_is_refused():
    from types import SimpleNamespace
    from typing import cast

    from prompt_toolkit.buffer import Buffer
    from prompt_toolkit.key_binding import KeyPressEvent
    from prompt_toolkit.keys import Keys

    keys = chat.key_bindings(lambda: 10)
    (paste,) = [b for b in keys.bindings if b.keys == (Keys.BracketedPaste,)]
    buffer = Buffer()

    def press(data: str) -> None:
        paste.handler(cast(KeyPressEvent, SimpleNamespace(data=data, current_buffer=buffer)))

    press("short\r\n")
    assert buffer.text == "short\n"
    press("far too long for it")
    assert buffer.text == "short\n"
    assert buffer.validation_error is not None
    assert "25 of at most 10 characters" in buffer.validation_error.message

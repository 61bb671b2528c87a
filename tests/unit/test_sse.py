"""SSE framing and parsing (pure)."""

from __future__ import annotations

import json

import pytest

from quart_sse.sse import (
    PING,
    Comment,
    Event,
    Retry,
    SSEParser,
    encode_chunk,
    encode_event,
    parse_last_event_id,
    retry_frame,
)


def test_an_event_is_id_event_data_and_a_blank_line():
    frame = encode_event(7, {"type": "status", "message": "hi", "context_messages": 2})
    assert frame == (
        b'id: 7\nevent: status\ndata: {"type": "status", "message": "hi", "context_messages": 2}\n\n'
    )


@pytest.mark.parametrize(
    "text",
    ["Hello there", 'quote " and \\', "line\nbreak\r\nand\rcr", "é ✓ 😀", "\u2028\u2029", "<script>", ""],
)
def test_a_chunk_frame_equals_the_general_encoding(text):
    general = encode_event(3, {"type": "chunk", "text": text, "chunk_number": 1, "is_final": False})
    assert encode_chunk(3, text, 1, False) == general
    data = general.split(b"\n")[2]
    assert data.startswith(b"data: ") and json.loads(data[6:])["text"] == text  # one line of JSON


def test_retry_and_ping():
    assert retry_frame(2000) == b"retry: 2000\n\n"
    assert PING == b": ping\n\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("", None), ("  ", None), ("0", 0), ("42", 42), (" 7 ", 7), ("9" * 18, int("9" * 18))],
)
def test_last_event_ids_this_server_issues(raw, expected):
    assert parse_last_event_id(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "-1", "+1", "1.0", "1e3", "0x1", "9" * 19, "1 2", "٣"])
def test_malformed_last_event_ids(raw):
    with pytest.raises(ValueError, match="not an event id"):
        parse_last_event_id(raw)


STREAM = b'retry: 1500\n\n: ping\n\nid: 1\nevent: chunk\ndata: {"a": 1}\n\nid: 2\ndata: x\ndata: y\n\n'
EXPECTED = [Retry(1500), Comment("ping"), Event("1", "chunk", '{"a": 1}'), Event("2", "message", "x\ny")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_the_parser_handles_every_line_ending_split_anywhere(eol, size):
    data = STREAM.replace(b"\n", eol)
    parser = SSEParser()
    items = []
    for i in range(0, len(data), size):
        items.extend(parser.feed(data[i : i + size]))
    assert items == EXPECTED
    assert parser.last_event_id == "2"


def test_the_parser_follows_the_spec_on_odd_fields():
    parser = SSEParser()
    items = parser.feed(b"data\n\nevent: x\n\ndata:no space\nid: 5\nretry: soon\nunknown: 1\n\n")
    # "data" with no colon is an empty data line; an event with no data is not dispatched.
    assert items == [Event(None, "message", ""), Event("5", "message", "no space")]


def test_the_parser_decodes_utf8_split_across_reads():
    data = "data: é😀\n\n".encode()
    parser = SSEParser()
    items = [item for i in range(len(data)) for item in parser.feed(data[i : i + 1])]
    assert items == [Event(None, "message", "é😀")]

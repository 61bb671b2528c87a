"""Server-Sent Events framing and parsing: pure functions, no I/O.

Frames are encoded once, when an event enters its stream's log, and the same bytes go to
every reader.  The parser is the line-fed state machine of the HTML standard's
"event stream interpretation" (https://html.spec.whatwg.org/multipage/server-sent-events.html),
shared by the tests, the terminal client and the load tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

PING = b": ping\n\n"

_dumps = json.JSONEncoder(ensure_ascii=False).encode

# Event ids are the event's position in its stream: 1, 2, 3, ...  A client may send back any
# id of that form; anything else is not an id this server issued.
_EVENT_ID = re.compile(r"[0-9]{1,18}")


def retry_frame(ms: int) -> bytes:
    """The first bytes of every stream response: the client's reconnection delay."""
    return b"retry: %d\n\n" % ms


def encode_event(event_id: int, data: dict[str, Any]) -> bytes:
    """One event: ``id``, ``event`` (equal to ``data["type"]``) and one line of JSON ``data``."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        event_id,
        data["type"].encode(),
        _dumps(data).encode(),
    )


def encode_chunk(event_id: int, text: str, number: int, is_final: bool) -> bytes:
    """A ``chunk`` event; the same bytes as :func:`encode_event` gives, built without a dict."""
    final = "true" if is_final else "false"
    text = encode_basestring(text)
    return (
        f'id: {event_id}\nevent: chunk\ndata: {{"type": "chunk", "text": {text}, '
        f'"chunk_number": {number}, "is_final": {final}}}\n\n'
    ).encode()


def parse_last_event_id(raw: str | None) -> int | None:
    """The id a client sends back, as a number; None when absent; ValueError when malformed."""
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "":
        return None
    if not _EVENT_ID.fullmatch(raw):
        raise ValueError(f"not an event id of this server: {raw[:40]!r}")
    return int(raw)


@dataclass(frozen=True)
class Event:
    """One dispatched event, as a client sees it."""

    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(frozen=True)
class Comment:
    """A comment line (``: ping``)."""

    text: str


@dataclass(frozen=True)
class Retry:
    """A ``retry:`` field with a valid value."""

    ms: int


Item = Event | Comment | Retry


class SSEParser:
    """Feed bytes as they arrive (split anywhere); iterate the events, comments and retries.

    Lines end in CRLF, LF or CR, possibly split across feeds; a blank line dispatches the
    event; a ``data`` buffer that is empty dispatches nothing; ``id`` persists across events
    as the last event id, as in a browser.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._pending_cr = False
        self._decoder = _utf8_decoder()
        self._data: list[str] = []
        self._event = ""
        self.last_event_id: str | None = None

    def feed(self, chunk: bytes) -> list[Item]:
        text = self._decoder.decode(chunk)
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = False
        self._buffer += text
        out: list[Item] = []
        for line in self._lines():
            item = self._line(line)
            if item is not None:
                out.append(item)
        return out

    def _lines(self) -> Iterator[str]:
        buf = self._buffer
        start = 0
        n = len(buf)
        i = 0
        while i < n:
            c = buf[i]
            if c == "\n" or c == "\r":
                yield buf[start:i]
                if c == "\r":
                    if i + 1 < n:
                        if buf[i + 1] == "\n":
                            i += 1
                    else:
                        self._pending_cr = True
                start = i + 1
            i += 1
        self._buffer = buf[start:]

    def _line(self, line: str) -> Item | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return Comment(line[1:].lstrip(" ") if line.startswith(": ") else line[1:])
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isdigit():
                return Retry(int(value))
        return None

    def _dispatch(self) -> Event | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return Event(self.last_event_id, event or "message", "\n".join(data))


def _utf8_decoder() -> Any:
    import codecs

    return codecs.getincrementaldecoder("utf-8")(errors="replace")

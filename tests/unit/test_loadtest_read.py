"""The load tests' byte reader (``loadtest/stream.py``) over a stand-in for geventhttpclient's response.

The stand-in has the attributes :func:`read_some` uses (``_body_buffer``, ``_sock``,
``message_complete``, ``feed``, ``release``), with the same meaning as in geventhttpclient.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import pytest

from loadtest.stream import StreamClosed, drop, read_some

END = b"<end of body>"


class Sock:
    def __init__(self, *pieces: bytes) -> None:
        self.pieces = deque(pieces)
        self.sizes: list[int] = []

    def recv(self, size: int) -> bytes:
        self.sizes.append(size)
        return self.pieces.popleft()


class Raw:
    def __init__(self, sock: Sock, buffered: bytes = b"") -> None:
        self._body_buffer = bytearray(buffered)
        self._sock: Sock | None = sock
        self.message_complete = False
        self.released = 0

    def feed(self, data: bytes) -> None:
        if data == b"garbage":
            raise ValueError("parse error")
        if data.endswith(END):
            data = data[: -len(END)]
            self.message_complete = True
        self._body_buffer += data

    def release(self) -> None:
        self.released += 1
        self._sock = None


def response(raw: Raw) -> SimpleNamespace:
    return SimpleNamespace(_response=raw)


def test_bytes_come_as_soon_as_the_socket_has_them():
    sock = Sock(b"retry: 1\n", b"\nid: 1\n", b"data: {}\n\n" + END)
    resp = response(Raw(sock, buffered=b"already here\n"))
    assert read_some(resp) == b"already here\n"
    assert read_some(resp) == b"retry: 1\n"
    assert read_some(resp) == b"\nid: 1\n"
    assert read_some(resp) == b"data: {}\n\n"
    assert read_some(resp) == b""
    assert sock.sizes and all(size >= 4096 for size in sock.sizes)  # never a wait for a full block


def test_a_body_cut_short_raises_and_releases_the_connection():
    raw = Raw(Sock(b"retry: 1\n\n", b""))
    resp = response(raw)
    assert read_some(resp) == b"retry: 1\n\n"
    with pytest.raises(StreamClosed):
        read_some(resp)
    assert raw.released == 1
    with pytest.raises(StreamClosed):
        read_some(resp)


def test_a_parse_error_releases_the_connection():
    raw = Raw(Sock(b"garbage"))
    with pytest.raises(ValueError, match="parse error"):
        read_some(response(raw))
    assert raw.released == 1


def test_a_piece_with_no_body_bytes_does_not_end_the_read():
    # Chunked framing alone (here b"\r\n", which the parser eats) gives no body bytes yet.
    class Framing(Raw):
        def feed(self, data: bytes) -> None:
            super().feed(b"" if data == b"\r\n" else data)

    assert read_some(response(Framing(Sock(b"\r\n", b"data")))) == b"data"


def test_drop_closes_the_connection():
    raw = Raw(Sock())
    drop(response(raw))
    assert raw.released == 1 and raw._sock is None

"""The load tests' network layer (``loadtest/stream.py``) over stand-ins for Locust's response.

The byte reader is tested over a stand-in for geventhttpclient's response; :func:`read_stream`
over a stand-in for Locust's ``ResponseContextManager``, which fires one request event when its
``with`` block ends, with the outcome set inside it.

The stand-in has the attributes :func:`read_some` uses (``_body_buffer``, ``_sock``,
``message_complete``, ``feed``, ``release``), with the same meaning as in geventhttpclient.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import pytest

from loadtest.check import AnswerCheck
from loadtest.stream import StreamClosed, drop, read_some, read_stream
from quart_sse.sse import encode_event, retry_frame

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


# read_stream: what Locust's request table gets -------------------------------------------


class Resp:
    """A stand-in for Locust's ``ResponseContextManager`` of a ``stream=True`` request."""

    def __init__(self, log: list[tuple[str, object, int]], status: int, *pieces: bytes) -> None:
        self.log = log
        self.status_code = status
        self._response = Raw(Sock(*pieces, END))
        self.request_meta: dict[str, int] = {"response_length": 0}
        self.outcome: object = None

    def success(self) -> None:
        self.outcome = "ok"

    def failure(self, exc: object) -> None:
        self.outcome = exc

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        # Locust fires one request event here, with the outcome set in the block.
        self.log.append(
            (str(self.outcome), type(self.outcome).__name__, int(self.request_meta["response_length"]))
        )


class Client:
    def __init__(self, *responses: tuple[int, list[bytes]]) -> None:
        self.fired: list[tuple[str, object, int]] = []
        self.responses = deque(responses)

    def request(self, method: str, path: str, **kw: object) -> Resp:
        status, pieces = self.responses.popleft()
        return Resp(self.fired, status, *pieces)


def answer_bytes(numbers: list[int]) -> bytes:
    evs: list[dict[str, object]] = [
        {"type": "session_info", "session_id": "s", "stream_id": "t", "model": "m", "events_url": "/e"},
    ]
    evs += [{"type": "chunk", "text": f"{n} ", "chunk_number": n, "is_final": False} for n in numbers]
    evs.append({"type": "complete", "total_chunks": len(numbers), "processing_time": 0.0, "message_count": 2})
    return retry_frame(2000) + b"".join(encode_event(i, ev) for i, ev in enumerate(evs, start=1))


def test_a_stream_is_one_request_timed_by_locust_and_sized_by_its_body():
    body = answer_bytes([1, 2, 3])
    client = Client((200, [body[:30], body[30:]]))
    check = AnswerCheck(check_answer=False)
    status, dropped = read_stream(SimpleNamespace(client=client), "POST", "/chat/stream", "x", check)
    assert (status, dropped) == (200, False)
    assert client.fired == [("ok", "str", len(body))]
    assert check.done and check.chunks == 3


def test_a_check_the_stream_failed_is_that_requests_failure():
    client = Client((200, [answer_bytes([1, 2, 4])]))
    read_stream(SimpleNamespace(client=client), "POST", "/chat/stream", "x", AnswerCheck(check_answer=False))
    assert [(text, kind) for text, kind, _ in client.fired] == [("gap in chunk_number", "CheckFailed")]


def test_a_dropped_stream_then_a_204_resume_fails_the_resume_only():
    body = answer_bytes([1, 2, 3, 4])
    cut = body.index(b"id: 3\n")
    client = Client((200, [body[:cut], body[cut:]]), (204, []))
    check = AnswerCheck(check_answer=False)
    user = SimpleNamespace(client=client)
    _, dropped = read_stream(user, "POST", "/chat/stream", "x", check, stop=lambda c: c.chunks >= 1)
    assert dropped and check.cut_at is not None and not check.done
    check.resuming()
    status, _ = read_stream(user, "GET", "/e", "y", check, resume=True)
    assert status == 204
    assert [(text, kind) for text, kind, _ in client.fired] == [
        ("ok", "str"),
        ("resumed stream skipped an event", "CheckFailed"),
    ]
    assert check.gaps == 1 and check.resumes == [(None, 0)]


def test_an_error_status_is_the_requests_failure_and_leaves_the_answer_alone():
    client = Client((503, []))
    check = AnswerCheck(check_answer=False)
    status, _ = read_stream(SimpleNamespace(client=client), "POST", "/chat/stream", "x", check)
    assert status == 503 and client.fired == [("HTTP 503", "str", 0)]
    assert check.connections == 0 and check.problems == []

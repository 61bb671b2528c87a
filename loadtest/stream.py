"""The network layer: one SSE response read through a ``FastHttpUser``'s client, for real.

Locust's ``FastHttpUser`` (geventhttpclient) reads a streamed body in 4 KiB blocks and its
``readline()`` wants CRLF, both wrong for SSE: :func:`read_some` hands over whatever bytes the
socket has, as soon as it has them, and the pure parser splits lines on CR, LF or CRLF.
Locust's own row for a streamed request times only the response head, so every stream fires
request events of its own (``request_type`` ``SSE``), and records into :data:`FIGURES`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from loadtest.check import AnswerCheck, Figure
from loadtest.figures import Figures

FIGURES = Figures()
"""This process's figures (the whole run's, on the master)."""

SSE = "SSE"
BLOCK = 64 * 1024

# Row names in Locust's table and CSV (request type "SSE").
ROWS = {
    "first event": "time to first event",
    "first chunk": "time to first chunk",
    "chunk gap": "inter-chunk delay",
    "resume first event": "resume: time to first event",
}
WHOLE = "whole stream"
CHUNKS = "chunks per stream (count, not ms)"
KEYS = {
    "first event": "time_to_first_event",
    "first chunk": "time_to_first_chunk",
    "chunk gap": "inter_chunk_delay",
    "resume first event": "resume_time_to_first_event",
}


class StreamClosed(Exception):
    """The connection ended before the end of the response body."""


class CheckFailed(Exception):
    """A correctness check of docs/API.md failed; its message is the row of Locust's failure table."""


def read_some(response: Any) -> bytes:
    """The body bytes that have arrived (waiting for at least one); ``b""`` at the body's end.

    ``response`` is a ``FastResponse``; this reads geventhttpclient's socket and body buffer
    directly, as its public ``read(n)`` waits for ``n`` bytes and ``readline()`` for CRLF.
    """
    raw = response._response
    buf: bytearray = raw._body_buffer
    while not buf:
        if raw.message_complete:
            return b""
        sock = raw._sock
        if sock is None:
            raise StreamClosed("connection closed")
        try:
            data = sock.recv(BLOCK)
            if not data:
                raise StreamClosed("connection closed before the end of the body")
            raw.feed(data)
        except Exception:
            raw.release()
            raise
    out = bytes(buf)
    del buf[:]
    return out


def drop(response: Any) -> None:
    """Close the response's connection at once (a client that goes away mid-stream)."""
    response._response.release()


def fire(environment: Any, name: str, ms: float, size: int = 0, exception: Exception | None = None) -> None:
    environment.events.request.fire(
        request_type=SSE,
        name=name,
        response_time=ms,
        response_length=size,
        response=None,
        context={},
        exception=exception,
    )


def read_stream(
    user: Any,
    method: str,
    path: str,
    name: str,
    check: AnswerCheck,
    *,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    stop: Callable[[AnswerCheck], bool] | None = None,
) -> tuple[int, bool]:
    """One stream request of ``check``'s answer: ``(HTTP status, dropped)``.

    Reads the response to its end, or until ``stop(check)`` says to drop the connection (after
    each piece read).  A status other than 200 (and 204) is a failure on Locust's row for the
    request and leaves ``check`` untouched.
    """
    env = user.environment
    start = time.perf_counter()
    with user.client.request(
        method, path, name=name, json=body, headers=headers, stream=True, catch_response=True
    ) as resp:
        status = int(resp.status_code or 0)
        if status == 204:
            resp.success()
            return status, False
        if status != 200:
            error = getattr(resp, "error", None)
            resp.failure(f"HTTP {status}" if status else f"no response: {error!r}")
            return status, False
        resp.success()
        conn = check.connect(start)
        FIGURES.opened()
        dropped = False
        try:
            while True:
                data = read_some(resp)
                if not data:
                    break
                for figure in conn.feed(data, time.perf_counter()):
                    _record(env, figure)
                if stop is not None and not check.done and stop(check):
                    drop(resp)
                    dropped = True
                    break
        except Exception as exc:  # a cut, a parse error, a timeout: the answer's checks tell
            check.problem(f"connection lost ({type(exc).__name__})")
        finally:
            FIGURES.closed()
            FIGURES.count["chunk_events"] += conn.chunks
            if not dropped:
                conn.close()
        return status, dropped


def _record(env: Any, figure: Figure) -> None:
    FIGURES.add(KEYS[figure.name], figure.ms)
    fire(env, ROWS[figure.name], figure.ms, figure.size)


def finish_answer(env: Any, check: AnswerCheck, start: float, ended: float | None = None) -> list[str]:
    """The end of one answer (every connection read): whole-stream events, failures, figures.

    ``ended``: when its last connection ended (default now), so that the whole stream's time
    leaves out the read of the saved session that may follow it.
    """
    problems = check.finish()
    ms = ((time.perf_counter() if ended is None else ended) - start) * 1000
    FIGURES.count["streams"] += 1
    FIGURES.count["heartbeats"] += check.pings
    FIGURES.add("heartbeats_per_stream", check.pings)
    if check.connections:
        FIGURES.add("stream_time", ms)
        FIGURES.add("chunks_per_stream", check.chunks)
        FIGURES.add("bytes_per_stream", check.nbytes)
        fire(env, CHUNKS, check.chunks, 0)
    if not problems:
        fire(env, WHOLE, ms, check.nbytes)
        return problems
    FIGURES.count["failed_streams"] += 1
    for problem in problems:
        fire(env, WHOLE, ms, check.nbytes, CheckFailed(problem))
    return problems

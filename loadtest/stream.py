"""The network layer: one SSE response read through a ``FastHttpUser``'s client, for real.

Locust's ``FastHttpUser`` (geventhttpclient) reads a streamed body in 4 KiB blocks and its
``readline()`` wants CRLF, both wrong for SSE: :func:`read_some` hands over whatever bytes the
socket has, as soon as it has them, and the pure parser splits lines on CR, LF or CRLF.

Locust's request table holds real HTTP requests only, each once: a stream request's row is
timed to its response head (Locust's own measure with ``stream=True``), its size is the body
bytes read, and a check the stream failed is that request's failure.  The stream figures (TTFT,
ITL, resumes, ...) go to :data:`FIGURES`, never into Locust's table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from loadtest.check import AnswerCheck
from loadtest.figures import Figures

FIGURES = Figures()
"""This process's figures (the whole run's, on the master)."""

BLOCK = 64 * 1024


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
    resume: bool = False,
) -> tuple[int, bool]:
    """One stream request of ``check``'s answer: ``(HTTP status, dropped)``.

    Reads the response to its end, or until ``stop(check)`` says to drop the connection (after
    each piece read; ``dropped`` is then True and a resume may follow).  A status other than
    200 and 204 is a failure of the request (``HTTP 503``) and leaves ``check`` untouched; a
    204 on a ``resume`` of an answer that has not ended is a lost end.  When no connection can
    follow (not dropped), the answer's end checks run here, so that a problem they find is this
    request's failure; a request reports the first problem found while it was read.
    """
    start = time.perf_counter()
    with user.client.request(
        method, path, name=name, json=body, headers=headers, stream=True, catch_response=True
    ) as resp:
        status = int(resp.status_code or 0)
        before = len(check.problems)
        if status == 204:
            if resume and not check.done:
                check.skipped_end()
                check.finish()
            _report(resp, check.problems[before:])
            return status, False
        if status != 200:
            error = getattr(resp, "error", None)
            resp.failure(f"HTTP {status}" if status else f"no response: {error!r}")
            return status, False
        conn = check.connect(start)
        FIGURES.opened()
        dropped = ended = False
        try:
            while True:
                data = read_some(resp)
                if not data:
                    break
                conn.feed(data, time.perf_counter())
                if stop is not None and not check.done and stop(check):
                    drop(resp)
                    dropped = True
                    check.cut(time.perf_counter())
                    break
            ended = True
        except Exception as exc:  # a cut, a parse error, a timeout: the answer's checks tell
            check.problem(f"connection lost ({type(exc).__name__})")
            ended = True
        finally:
            # Not ended: the user is being stopped (GreenletExit at the end of a run), which
            # is no failure of the stream; its request is still counted once.
            FIGURES.closed()
            resp.request_meta["response_length"] = conn.nbytes
            if ended and not dropped:
                conn.close()
                check.finish()
            _report(resp, check.problems[before:] if ended else [])
        return status, dropped


def _report(resp: Any, problems: list[str]) -> None:
    if problems:
        resp.failure(CheckFailed(problems[0]))
    else:
        resp.success()


def finish_answer(check: AnswerCheck) -> None:
    """The end of one answer (every connection read, the saved session compared): its figures."""
    check.finish()
    FIGURES.record(check.sample())

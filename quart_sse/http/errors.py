"""The one error renderer: every refusal, ours and the framework's, as docs/API.md's body.

``{"error": {"code": ..., "message": ...}}`` with the status its code stands for
(docs/API.md, Errors).  The engine, stores and providers raise :class:`~quart_sse.codes.Refused`
with a code and know no status; here is the only place a code becomes one.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from quart_sse import codes
from quart_sse.engine.transport import ASGISend
from quart_sse.http.access import note_error

log = logging.getLogger("quart_sse.http")

Headers = list[tuple[bytes, bytes]]

STATUS = {
    codes.INVALID_JSON: 400,
    codes.INVALID_REQUEST: 400,
    codes.EMPTY_MESSAGE: 400,
    codes.INVALID_LAST_EVENT_ID: 400,
    codes.UNAUTHORIZED: 401,
    codes.SESSION_NOT_FOUND: 404,
    codes.STREAM_NOT_FOUND: 404,
    codes.NOT_FOUND: 404,
    codes.METHOD_NOT_ALLOWED: 405,
    codes.BODY_TIMEOUT: 408,
    codes.GENERATION_RUNNING: 409,
    codes.NOTHING_TO_REGENERATE: 400,
    codes.SESSION_FULL: 409,
    codes.BODY_TOO_LARGE: 413,
    codes.MESSAGE_TOO_LONG: 413,
    codes.RATE_LIMITED: 429,
    codes.TOO_MANY_STREAMS: 429,
    codes.STREAM_GONE: 410,
    codes.STREAM_EXISTS: 409,
    codes.CONTENT_TYPE_MISMATCH: 409,
    codes.SEQUENCE_CONFLICT: 409,
    codes.STREAM_CLOSED: 409,
    codes.PRODUCER_STALE_EPOCH: 403,
    codes.PRODUCER_SEQUENCE_GAP: 409,
    codes.STREAM_TOO_LARGE: 413,
    codes.TOO_MANY_DURABLE_STREAMS: 429,
    codes.DURABLE_STORE_FULL: 507,
    codes.CAPACITY: 503,
    codes.SHUTTING_DOWN: 503,
    codes.STORE_UNAVAILABLE: 503,
    codes.INTERNAL: 500,
}
"""The HTTP status of each refusal code."""

_FRAMEWORK_CODES = {
    400: codes.INVALID_REQUEST,
    404: codes.NOT_FOUND,
    405: codes.METHOD_NOT_ALLOWED,
    408: codes.BODY_TIMEOUT,
    413: codes.BODY_TOO_LARGE,
}


def render(error: codes.Refused) -> tuple[int, Headers, bytes]:
    """Status, headers and body of the answer to ``error``."""
    note_error(error.code)  # for the access log and /metrics
    body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
    headers: Headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if error.retry_after is not None:
        headers.append((b"retry-after", b"%d" % max(1, math.ceil(error.retry_after))))
    if error.code == codes.UNAUTHORIZED:
        headers.append((b"www-authenticate", b"Bearer"))
    return STATUS.get(error.code, 400), headers, body


async def send_error(send: ASGISend, error: codes.Refused, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``error`` on a raw ASGI connection (the edge's own routes)."""
    status, headers, body = render(error)
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def response(error: codes.Refused) -> Response:
    """The same answer as a Quart response (the routes served by the Quart app)."""
    status, headers, body = render(error)
    return Response(body, status, {k.decode(): v.decode() for k, v in headers})


def register(app: Quart) -> None:
    """Render every error the Quart app meets with :func:`render`."""

    @app.errorhandler(codes.Refused)
    async def _refused(error: codes.Refused) -> Response:
        return response(error)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _FRAMEWORK_CODES.get(status, f"http_{status}")
        answer = response(codes.Refused(code, error.description or error.name))
        answer.status_code = status
        allow = error.get_response().headers.get("Allow") if status == 405 else None
        if allow:
            answer.headers["Allow"] = allow
        return answer

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        log.error("unhandled error", exc_info=error)
        return response(codes.Refused(codes.INTERNAL, "internal server error"))

"""``CORS_ORIGINS``: which other origins' pages may call the API from a browser.

Applied in one place for every route, by the HTTP edge (:class:`quart_sse.http.edge.Edge`):
preflights (``OPTIONS`` with
``Access-Control-Request-Method``) from an allowed origin are answered there, and every
answer to an allowed origin carries ``Access-Control-Allow-Origin``.  Why not quart-cors:
it works through Quart's ``after_request`` and automatic ``OPTIONS`` routes, and the
chat routes (``POST /chat``, ``POST /chat/stream``, ``GET /streams/{id}/events``) are the
edge's own and never reach Quart, so it would leave them, the ones a browser page needs
most, without CORS.

Unset (the default): no CORS header at all, so a browser keeps to the same origin.
``*`` allows every origin.  No credentials are allowed: the API's keys are bearer tokens
(``Authorization``, or ``?access_token=`` for an ``EventSource``), never cookies, and an
``EventSource`` is opened with ``withCredentials`` false.  CORS is the browser's rule, not
access control: a refused page cannot read the answers, while ``API_KEYS`` decides who
may call at all.
"""

from __future__ import annotations

from typing import Any

from quart_sse.http.scope import Headers, header

ALLOW_METHODS = b"GET, HEAD, PUT, POST, DELETE, OPTIONS"
# Last-Event-ID for the SSE routes; the rest are the Durable Streams protocol's request
# headers (/v1/stream/, PROTOCOL.md 5): a browser page may send none of them cross-origin
# unless the preflight lists it.
ALLOW_HEADERS = (
    b"Authorization, Content-Type, Last-Event-ID, If-None-Match, Stream-Seq, Stream-TTL, "
    b"Stream-Expires-At, Stream-Closed, Producer-Id, Producer-Epoch, Producer-Seq, "
    b"Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset"
)
EXPOSE_HEADERS = b"Retry-After, WWW-Authenticate"
MAX_AGE = b"600"


class CORS:
    """The rule of ``CORS_ORIGINS`` (a tuple of origins such as ``https://app.example``)."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.enabled = bool(origins)
        self.any = "*" in origins
        self.origins = frozenset(o.rstrip("/").lower().encode() for o in origins if o != "*")

    def _allowed(self, origin: bytes) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None when refused."""
        if self.any:
            return b"*"
        return origin if origin.lower() in self.origins else None

    def headers(self, scope: dict[str, Any]) -> Headers:
        """Headers to add to the answer of a (non-preflight) request."""
        if not self.enabled:
            return []
        origin = (header(scope, b"origin") or "").encode("latin-1")
        vary: Headers = [] if self.any else [(b"vary", b"Origin")]
        allowed = self._allowed(origin) if origin else None
        if allowed is None:
            return vary
        return [
            *vary,
            (b"access-control-allow-origin", allowed),
            (b"access-control-expose-headers", EXPOSE_HEADERS),
        ]

    def preflight(self, scope: dict[str, Any]) -> Headers | None:
        """The headers of a 204 answering a preflight from an allowed origin; None otherwise."""
        if not self.enabled or scope["method"] != "OPTIONS":
            return None
        origin = (header(scope, b"origin") or "").encode("latin-1")
        if not origin or header(scope, b"access-control-request-method") is None:
            return None
        allowed = self._allowed(origin)
        if allowed is None:
            return None
        headers: Headers = [] if self.any else [(b"vary", b"Origin")]
        return [
            *headers,
            (b"access-control-allow-origin", allowed),
            (b"access-control-allow-methods", ALLOW_METHODS),
            (b"access-control-allow-headers", ALLOW_HEADERS),
            (b"access-control-max-age", MAX_AGE),
            (b"content-length", b"0"),
        ]

"""API keys (``API_KEYS``): every key compared in constant time; no key ever echoed."""

from __future__ import annotations

import hmac

from quart_sse import errors
from quart_sse.errors import APIError

# Paths that need no key even when API_KEYS is set (API.md, Configuration).
PUBLIC_PATHS = frozenset(("/health", "/docs", "/openapi.json", "/demo"))
PUBLIC_PREFIXES = ("/docs/", "/demo/", "/static/")


def is_stream_read(method: str, path: str) -> bool:
    """``GET /streams/{id}/events``: the one route that may carry its key as ``?access_token=``."""
    return method == "GET" and path.startswith("/streams/") and path.endswith("/events")


def presented_token(method: str, path: str, authorization: str, access_token: str) -> str:
    """The key a request presents: ``Authorization: Bearer``, or ``?access_token=`` on a stream read."""
    token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    if not token and is_stream_read(method, path):
        token = access_token
    return token


def check(keys: tuple[bytes, ...], method: str, path: str, authorization: str, access_token: str) -> None:
    """Raise 401 unless the request may pass: no keys set, a public path, or a valid key."""
    if not keys or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return
    presented = presented_token(method, path, authorization, access_token).encode()
    valid = False
    for key in keys:  # every key compared, each in constant time
        valid |= hmac.compare_digest(presented, key)
    if not valid:
        raise APIError(
            401,
            errors.UNAUTHORIZED,
            "a valid API key is needed: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )

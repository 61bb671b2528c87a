"""API keys (``API_KEYS``, ``ADMIN_KEYS``): who a request acts for.

Every key is compared in constant time, all of them each time; no key is ever echoed or
stored.  What stands for a key wherever it must be remembered (a session's owner, the
rate limit's client) is its owner id: HMAC-SHA256 of the key under ``OWNER_ID_SECRET``
(else a fixed, project-wide key, :data:`OWNER_KEY`), the first 32 hex digits.  It is the
same on every instance given the same secret and after a restart, so ownership holds on
Redis.  With a secret, an owner id read from Redis tells nothing about the key; without
one it is as strong as the key is long (use long random keys).
"""

from __future__ import annotations

import hashlib
import hmac

from quart_sse import codes
from quart_sse.models import EVERYONE, Caller

# Paths that need no key even when keys are set (docs/API.md, Configuration).
PUBLIC_PATHS = frozenset(("/health", "/docs", "/openapi.json", "/demo", "/favicon.ico"))
PUBLIC_PREFIXES = ("/docs/", "/demo/")

OWNER_KEY = b"quart-sse owner id v1"

NOBODY = Caller(owner="-")
"""The caller of a public path on a server with keys: owns nothing, sees nothing."""


def owner_id(key: str, secret: bytes = OWNER_KEY) -> str:
    """The owner id of an API key (see the module)."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:32]


def is_stream_read(method: str, path: str) -> bool:
    """``GET /streams/{id}/events``, ``GET /sessions/{id}/events`` and ``GET /v1/stream/...``:
    the stream reads, which may carry their key as ``?access_token=`` (a browser's
    ``EventSource`` sends no headers)."""
    if method not in ("GET", "HEAD"):
        return False
    if path.startswith("/v1/stream/"):  # a Durable Stream read (a chat answer's durable_url too)
        return True
    return path.startswith(("/streams/", "/sessions/")) and path.endswith("/events") and path.count("/") == 3


def presented_token(method: str, path: str, authorization: str, access_token: str) -> str:
    """The key a request presents: ``Authorization: Bearer``, or ``?access_token=`` on a stream read."""
    token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    if not token and is_stream_read(method, path):
        token = access_token
    return token


class Keys:
    """The keys of ``API_KEYS`` and ``ADMIN_KEYS`` (admin keys are valid keys too)."""

    def __init__(
        self, api_keys: tuple[str, ...], admin_keys: tuple[str, ...] = (), secret: str | None = None
    ) -> None:
        hmac_key = secret.encode() if secret else OWNER_KEY
        self._keys = [
            (key.encode(), Caller(owner_id(key, hmac_key), False))
            for key in api_keys
            if key not in admin_keys
        ]
        self._keys += [(key.encode(), Caller(owner_id(key, hmac_key), True)) for key in admin_keys]
        self.enabled = bool(self._keys)

    def caller(self, method: str, path: str, authorization: str, access_token: str) -> Caller:
        """Who the request acts for; 401 ``unauthorized`` unless it may pass (no keys are
        set, a public path, or a valid key)."""
        if not self.enabled:
            return EVERYONE
        presented = presented_token(method, path, authorization, access_token).encode()
        found = NOBODY
        for key, caller in self._keys:  # every key compared, each in constant time
            if hmac.compare_digest(presented, key):
                found = caller
        if found is NOBODY and not (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)):
            raise codes.Refused(
                codes.UNAUTHORIZED, "a valid API key is needed: send 'Authorization: Bearer <key>'"
            )
        return found

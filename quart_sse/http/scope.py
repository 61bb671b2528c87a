"""What the edge reads from an ASGI request: its types, its headers, its query.

The ASGI types are plain aliases rather than ``hypercorn.typing``'s or ``asgiref.typing``'s
TypedDicts: the edge adds its own key to the scope (the identified client) and passes the
same dicts to Quart, which the TypedDicts would refuse.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from quart_sse.models import Caller

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

CLIENT = "quart_sse.client"
"""The scope key under which the edge leaves the request's :class:`~quart_sse.http.limits.Client`."""
CALLER = "quart_sse.caller"
"""The scope key under which the edge leaves who the request acts for (:class:`~quart_sse.models.Caller`)."""


def caller(scope: Mapping[str, Any]) -> Caller:
    """Who the request acts for, as the edge named it (its ``_admit``, before any route)."""
    found: Caller = scope[CALLER]
    return found


def header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), decoded as Latin-1; None when absent."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def query(scope: Mapping[str, Any]) -> dict[str, str]:
    """The query string's parameters, the first value of each."""
    raw: bytes = scope.get("query_string") or b""
    return {k: v[0] for k, v in parse_qs(raw.decode("latin-1")).items()} if raw else {}

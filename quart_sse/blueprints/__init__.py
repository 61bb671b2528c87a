"""The Quart app's routes, one blueprint per resource: sessions, streams, system, demo.

The chat routes are the HTTP edge's own (:mod:`quart_sse.http.edge`); a route here reaches
the engine through :func:`engine`.
"""

from __future__ import annotations

from quart import current_app, request

from quart_sse.engine import Engine
from quart_sse.models import EVERYONE, Caller

EXTENSION = "quart_sse"
CALLER = "quart_sse.caller"
"""Where the edge leaves who a request acts for, in the ASGI scope."""


def engine() -> Engine:
    """The engine of the app serving the current request."""
    found: Engine = current_app.extensions[EXTENSION]
    return found


def caller() -> Caller:
    """Who the current request acts for (set by the edge; docs/API.md, Ownership)."""
    found = request.scope.get(CALLER, EVERYONE)
    assert isinstance(found, Caller)
    return found

"""The Quart app's routes, one blueprint per resource: sessions, streams, system, demo.

The chat routes are the HTTP edge's own (:mod:`quart_sse.http.edge`); a route here reaches
the engine through :func:`engine`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from quart import abort, current_app, request, send_from_directory
from quart.wrappers import Response

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


@cache
def _files(directory: Path) -> frozenset[str]:
    files = (path for path in directory.rglob("*") if path.is_file())
    return frozenset(path.relative_to(directory).as_posix() for path in files)


async def static_file(directory: Path, name: str) -> Response:
    """The file ``name`` of ``directory``, or 404 ``not_found`` for a name that is not one of
    its files (listed once): no name a client sends reaches the file system (a 256-byte
    name was a 500 there, ``OSError: File name too long``)."""
    if name not in _files(directory):
        abort(404)
    return await send_from_directory(directory, name)

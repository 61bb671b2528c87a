"""The HTTP edge: identity and auth, CORS, limits, the order of checks, the chat routes, errors."""

from __future__ import annotations

from quart_sse.http.edge import PATHS, Edge

__all__ = ["PATHS", "Edge"]

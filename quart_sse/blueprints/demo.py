"""GET /demo: the interactive web page (issue 8 builds it)."""

from __future__ import annotations

from quart import Blueprint, Response

bp = Blueprint("demo", __name__)


@bp.get("/demo")
async def demo() -> Response:
    """The interactive web demo."""
    return Response("<!doctype html><title>quart-sse demo</title><p>The demo page is coming.</p>", 200,
                    {"Content-Type": "text/html; charset=utf-8"})

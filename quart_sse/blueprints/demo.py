"""GET /demo: the interactive web page, and its assets under /demo/.

The page is static: one HTML file, a stylesheet, and two scripts (the app and a small
Markdown renderer that builds DOM nodes, never HTML strings) in ``quart_sse/static/demo``.
It talks to the API like any other client: ``fetch`` for ``POST /chat`` and the sessions
endpoints, the browser's own ``EventSource`` for the stream, so that the browser's native
reconnection with ``Last-Event-ID`` does the recovery.  No API key is needed to load it;
when the server has ``API_KEYS`` set the page asks for one.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory
from quart_schema import hide

from quart_sse.blueprints import static_file

bp = Blueprint("demo", __name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "demo"

# Defence in depth: even if model text ever reached the DOM as markup, no inline script,
# inline handler or foreign resource could run or load.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/demo")
async def demo() -> Response:
    """The interactive web demo (HTML): chat with live, resumable streams."""
    return _secure(await send_from_directory(STATIC_DIR, "index.html", mimetype="text/html"))


@bp.get("/demo/<path:name>")
@hide
async def demo_asset(name: str) -> Response:
    """A static asset of the demo page (stylesheet, scripts, icon)."""
    return _secure(await static_file(STATIC_DIR, name))

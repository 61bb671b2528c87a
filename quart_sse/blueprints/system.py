"""/, /health, /stats, /metrics, and the files of the /docs page (Swagger UI 5, from a package).

Also the icon (``/favicon.ico``, Swagger UI's own, linked from /docs so that a browser asks
for it under /docs/assets), and ``/docs/`` and ``/demo/`` sent on to ``/docs`` and ``/demo``.

See :data:`DOCS_ASSETS` for why those files come from ``flask-swagger-ui``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Response, current_app, redirect, request, send_from_directory
from quart.blueprints import BlueprintSetupState
from quart_schema import document_response, hide
from werkzeug.wrappers import Response as WerkzeugResponse

from quart_sse import __version__
from quart_sse.blueprints import engine, static_file
from quart_sse.blueprints.schemas import ErrorBody, Health, ServerInfo, Stats
from quart_sse.engine import Engine
from quart_sse.http import PATHS
from quart_sse.metrics import prometheus_text

bp = Blueprint("system", __name__)


@bp.get("/")
@document_response(ServerInfo)
async def index() -> dict[str, object]:
    """Server name, version, model, and the list of endpoints."""
    rt = engine()
    endpoints = sorted(
        {*PATHS}
        | {
            f"{method} {rule.rule}"
            for rule in current_app.url_map.iter_rules()
            for method in sorted(rule.methods or ())
            if method not in ("HEAD", "OPTIONS") and not rule.rule.startswith(("/static", "/docs/assets"))
        },
        key=lambda e: (e.split(" ", 1)[1], e),
    )
    return {
        "name": "quart-sse",
        "version": __version__,
        "model": rt.provider.model,
        "provider": rt.provider.name,
        "store": rt.store.name,
        "endpoints": endpoints,
    }


async def cluster(rt: Engine, active_sessions: int) -> dict[str, int]:
    """Figures across every instance on the store (Redis), or this process's own."""
    counts = await rt.store.cluster_counts()
    if counts is None:
        counts = {"instances": 1, "active_streams": rt.stats.streams_active}
    return {**counts, "active_sessions": active_sessions}


@bp.get("/health")
@document_response(Health)
@document_response(ErrorBody, 503)
async def health() -> dict[str, object]:
    """Liveness and load: active streams and sessions, model, store, which instance answered.

    503 ``store_unavailable`` with the reason while Redis cannot be reached.
    """
    rt = engine()
    sessions = await rt.store.count_sessions()
    return {
        "status": "ok",
        "instance": rt.store.instance_id,
        "active_streams": rt.stats.streams_active,
        "active_sessions": sessions,
        "cluster": await cluster(rt, sessions),
        "uptime_s": round(rt.stats.uptime, 3),
        "model": rt.provider.model,
        "store": rt.store.name,
        "provider": rt.provider.name,
        "offline_model": rt.provider.name == "simulated",
    }


def stats_body(rt: Engine, active_sessions: int, figures: dict[str, int]) -> dict[str, object]:
    s = rt.stats
    return {
        "instance": rt.store.instance_id,
        "cluster": figures,
        "uptime_s": round(s.uptime, 3),
        "total_requests": s.requests_total,
        "successful_requests": s.requests_ok,
        "failed_requests": s.requests_failed,
        "streams_started": s.streams_started,
        "streams_completed": s.streams_completed,
        "streams_failed": s.streams_failed,
        "active_streams": s.streams_active,
        "chunks_sent": s.chunks_sent,
        "average_response_time_s": round(s.average_response_time(), 4),
        "sessions_created": s.sessions_created,
        "active_sessions": active_sessions,
        "model": rt.provider.model,
        "provider": rt.provider.name,
        "store": rt.store.name,
        "engine": rt.counts(),
        "stream_writes": {"direct": s.writes_direct, "asgi": s.writes_asgi, "stalled_cut": s.stalled_cut},
    }


@bp.get("/stats")
@document_response(Stats)
async def stats() -> dict[str, object]:
    """Server statistics; ``engine`` counts what the stream engine holds right now."""
    rt = engine()
    sessions = await rt.store.count_sessions()
    return stats_body(rt, sessions, await cluster(rt, sessions))


@bp.get("/metrics")
async def metrics() -> Response:
    """The same figures in Prometheus text format."""
    rt = engine()
    sessions = await rt.store.count_sessions()
    figures = await cluster(rt, sessions)

    def gauges() -> dict[str, float]:
        return {
            "sessions_active": sessions,
            **rt.counts(),
            "cluster_instances": figures["instances"],
            "cluster_streams_active": figures["active_streams"],
        }

    body = prometheus_text(rt.stats, gauges, {"instance": rt.store.instance_id, "store": rt.store.name})
    return Response(body, 200, {"Content-Type": CONTENT_TYPE_LATEST})


DOCS_ASSETS = "flask_swagger_ui"
"""The package whose ``dist/`` holds the files of Swagger UI 5 (npm's ``swagger-ui-dist``, with
its licence and ``VERSION``).

Why this one: Swagger UI 4 (PyPI's ``swagger-ui-bundle``, 1.1.0 its newest, ships 4.15) cannot
read OpenAPI 3.1, which quart-schema publishes ("Unable to render this definition"); 5.x can.
``flask-swagger-ui`` follows Swagger UI's releases (its version is Swagger UI's) and needs only
Flask, which Quart depends on already; of it only the files are used, served here, never its
Flask blueprint.  The page itself is quart-schema's (``/docs``), pointed at these files by
``QUART_SCHEMA_SWAGGER_JS_URL`` and ``QUART_SCHEMA_SWAGGER_CSS_URL``: no CDN.
"""


def swagger_assets() -> Path:
    """The directory of Swagger UI's files (``swagger-ui-bundle.js``, ``swagger-ui.css``...)."""
    return Path(str(files(DOCS_ASSETS) / "dist"))


@bp.get("/docs/assets/<path:name>")
@hide
async def docs_asset(name: str) -> Response:
    """A file of Swagger UI, for ``/docs``; 404 ``not_found`` for any other name."""
    response = await static_file(swagger_assets(), name)
    response.headers.update(DOCS_HEADERS)
    return response


DOCS_HEADERS = {
    # Swagger UI's page starts itself with an inline script (quart-schema's): its scripts
    # are not restricted here, but no other site may frame it, and nothing is sniffed.
    "Content-Security-Policy": "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""The security headers of /docs and its files (the demo's are stricter: ``demo.CSP``)."""

ICON = "favicon-32x32.png"
"""Swagger UI's icon, in its ``dist/``: the page's icon and ``/favicon.ico``."""
_ICON_LINK = f'<link rel="icon" type="image/png" href="/docs/assets/{ICON}">'


@bp.get("/favicon.ico")
@hide
async def favicon() -> Response:
    """The server's icon (PNG), which browsers ask for on every page without one of its own."""
    response = await send_from_directory(swagger_assets(), ICON)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@bp.get("/docs/")
@bp.get("/demo/")
@hide
async def without_slash() -> WerkzeugResponse:
    """``/docs/`` and ``/demo/``: a permanent redirect (308) to the page without the slash."""
    return redirect(request.path.rstrip("/"), 308)


@bp.record_once
def _link_the_icon(state: BlueprintSetupState) -> None:
    """quart-schema's /docs page links no icon, so a browser asks for /favicon.ico (which
    needs a key where keys are set): give it Swagger UI's, under the public /docs/assets."""
    found = state.app.view_functions.get("swagger_ui")
    if found is None:
        return
    view = cast(Callable[[], Awaitable[str]], found)

    @functools.wraps(view)  # its docstring and schema marks: the operation /openapi.json describes
    async def swagger_ui() -> tuple[str, int, dict[str, str]]:
        page = str(await view())
        return page.replace("<head>", f"<head>\n  {_ICON_LINK}", 1), 200, DOCS_HEADERS

    state.app.view_functions["swagger_ui"] = swagger_ui

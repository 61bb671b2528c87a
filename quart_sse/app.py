"""create_app: blueprints, schema, error handlers, authentication, lifecycle."""

from __future__ import annotations

import hmac
from typing import Any

from quart import Quart, Response, request
from quart_schema import Info, QuartSchema
from quart_schema.openapi import OpenAPIProvider

from quart_sse import __version__, errors
from quart_sse.blueprints import chat, demo, sessions, streams, system
from quart_sse.config import Settings
from quart_sse.console import stream_ended, stream_started
from quart_sse.errors import APIError
from quart_sse.generation import Generation, Generations, Outcome
from quart_sse.metrics import Stats
from quart_sse.providers import Provider, create_provider
from quart_sse.runtime import Runtime
from quart_sse.stores import Store, create_store
from quart_sse.streams import LogWriter

FLUSH_DELAY = 0.002
"""Seconds the log writer waits after the first new frame, so readers get frames in batches."""

# Paths that need no API key even when API_KEYS is set (API.md, Configuration).
PUBLIC_PATHS = ("/health", "/docs", "/openapi.json", "/demo")
PUBLIC_PREFIXES = ("/docs/", "/demo/", "/static/")

_EVENT_SCHEMAS = ("SessionInfoEvent", "StatusEvent", "ChunkEvent", "CompleteEvent", "ErrorEvent")


class SSEOpenAPIProvider(OpenAPIProvider):
    """quart-schema's generator, with the two SSE endpoints answering ``text/event-stream``."""

    def schema(self) -> dict[str, Any]:
        from quart_schema.conversion import model_schema

        from quart_sse import schemas

        spec: dict[str, Any] = super().schema()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for name in _EVENT_SCHEMAS:
            components[name] = model_schema(
                getattr(schemas, name), preference=None, schema_mode="serialization"
            )
        event_stream = {
            "text/event-stream": {
                "schema": {"oneOf": [{"$ref": f"#/components/schemas/{n}"} for n in _EVENT_SCHEMAS]},
                "example": 'retry: 2000\n\nid: 1\nevent: session_info\ndata: {"type": "session_info"}\n\n',
            }
        }
        for path, method in (("/chat/stream", "post"), ("/streams/{stream_id}/events", "get")):
            operation = spec.get("paths", {}).get(path, {}).get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses[200] = {
                "description": "An SSE stream: each event has id, event (= data.type) and data (one JSON "
                "line), one of the schemas below; ': ping' comments on quiet streams.",
                "content": event_stream,
            }
            if method == "get":
                responses[204] = {"description": "the stream has ended and nothing follows the given id"}
                operation.setdefault("parameters", []).extend(
                    [
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "resume after this event id",
                        },
                        {
                            "name": "last_event_id",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "the same, for clients that cannot set headers (the header wins)",
                        },
                    ]
                )
        return spec


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    provider: Provider | None = None,
) -> Quart:
    """The Quart app; ``store`` and ``provider`` may be given ready-made (tests)."""
    settings = settings or Settings.from_env()
    store = store or create_store(settings)
    provider = provider or create_provider(settings)

    app = Quart("quart_sse")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = "/docs/assets/swagger-ui-bundle.js"
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = "/docs/assets/swagger-ui.css"
    QuartSchema(
        app,
        swagger_ui_path="/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        info=Info(
            title="quart-sse",
            version=__version__,
            description="Stream LLM chat answers over Server-Sent Events, resumable with Last-Event-ID.",
        ),
        openapi_provider_class=SSEOpenAPIProvider,
    )
    errors.register(app)

    stats = Stats()
    writer = LogWriter(store, FLUSH_DELAY)

    def on_start(generation: Generation, active: int) -> None:
        stream_started(generation, active)

    def on_end(generation: Generation, outcome: Outcome) -> None:
        stream_ended(generation, outcome, stats.streams_active)

    generations = Generations(settings, store, provider, writer, stats, on_start, on_end)
    rt = Runtime(settings, store, provider, writer, generations, stats)
    app.extensions["quart_sse"] = rt

    for blueprint in (chat.bp, streams.bp, sessions.bp, system.bp, demo.bp):
        app.register_blueprint(blueprint)

    keys = tuple(key.encode() for key in settings.api_keys)

    @app.before_request
    async def authenticate() -> None:
        if not keys:
            return
        path = request.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token and request.method == "GET" and path.startswith("/streams/"):
            token = request.args.get("access_token", "")
        presented = token.encode()
        valid = False
        for key in keys:  # every key compared, in constant time
            valid |= hmac.compare_digest(presented, key)
        if not valid:
            raise APIError(
                401,
                errors.UNAUTHORIZED,
                "a valid API key is needed: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.after_request
    async def count(response: Response) -> Response:
        stats.requests_total += 1
        if response.status_code >= 400:
            stats.requests_failed += 1
        else:
            stats.requests_ok += 1
        return response

    @app.before_serving
    async def startup() -> None:
        await store.connect()
        writer.start()

    @app.after_serving
    async def shutdown() -> None:
        generations.accepting = False
        await generations.cancel_all(errors.INTERRUPTED)
        await writer.aclose()
        await provider.aclose()
        await store.aclose()

    return app

"""create_app: blueprints, schema, error handlers, authentication, lifecycle."""

from __future__ import annotations

import gc
from typing import Any

from quart import Quart, Response, request
from quart_schema import Info, QuartSchema
from quart_schema.openapi import OpenAPIProvider

from quart_sse import __version__, auth, errors
from quart_sse.asgi import StreamingRoutes
from quart_sse.blueprints import chat, demo, sessions, streams, system
from quart_sse.config import Settings
from quart_sse.console import stream_ended, stream_started
from quart_sse.generation import Generation, Generations, Outcome
from quart_sse.metrics import Stats
from quart_sse.providers import Provider, create_provider
from quart_sse.runtime import Runtime
from quart_sse.stores import Store, create_store
from quart_sse.streams import Heartbeats, LogWriter

FLUSH_DELAY = 0.002
"""Seconds the log writer waits after the first new frame, so readers get frames in batches."""


_EVENT_SCHEMAS = ("SessionInfoEvent", "StatusEvent", "ChunkEvent", "CompleteEvent", "ErrorEvent")


_STREAM_DOCS = {
    ("/chat/stream", "post"): (
        "Send a message and read the answer as it is generated (text/event-stream).",
        "Starts a generation and answers with its stream directly: ``retry:``, then the events "
        "``session_info``, ``status``, ``chunk``... and ``complete`` (or ``error``). If the connection "
        "drops, resume with ``GET /streams/{stream_id}/events`` and ``Last-Event-ID``.",
    ),
    ("/streams/{stream_id}/events", "get"): (
        "Read a stream (text/event-stream): replay after Last-Event-ID, then live.",
        "The id comes from the ``Last-Event-ID`` header or, for clients that cannot set headers, "
        "``?last_event_id=`` (the header wins). Without one the stream is read from its first event. "
        "A finished stream stays readable for ``STREAM_RETENTION`` seconds; when nothing follows the "
        "given id the answer is 204 (an EventSource then stops reconnecting). With ``API_KEYS`` set, "
        "the key may come as ``?access_token=``.",
    ),
}


EVENT_ID_PATTERN = "^[0-9]{0,18}$"
"""The event ids this server issues (quart_sse.sse); anything else is a 400."""

CHAT_ERRORS = (400, 401, 404, 409, 413, 429, 503)
"""The refusals of the two chat routes, in API.md's order (401 only with API_KEYS set)."""


class SSEOpenAPIProvider(OpenAPIProvider):
    """quart-schema's generator, plus the two streaming routes served in front of Quart."""

    def schema(self) -> dict[str, Any]:
        from quart_schema.conversion import model_schema

        from quart_sse import schemas

        spec: dict[str, Any] = super().schema()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for name in (*_EVENT_SCHEMAS, "ChatRequest", "ErrorBody"):
            components[name] = model_schema(
                getattr(schemas, name), preference=None, schema_mode="serialization"
            )
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        event_stream = {
            "description": "An SSE stream: each event has id, event (= data.type) and data (one JSON line), "
            "one of the schemas below; ': ping' comments on quiet streams.",
            "content": {
                "text/event-stream": {
                    # Each event (OpenAPI 3.1: ``schema`` describes one event of the stream): its
                    # ``data`` is one line of JSON, one of the event schemas.
                    "schema": {
                        "type": "object",
                        "required": ["id", "event", "data"],
                        "properties": {
                            "id": {"type": "string", "pattern": EVENT_ID_PATTERN},
                            "event": {"enum": ["session_info", "status", "chunk", "complete", "error"]},
                            "data": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": {
                                    "oneOf": [{"$ref": f"#/components/schemas/{n}"} for n in _EVENT_SCHEMAS]
                                },
                            },
                        },
                    },
                }
            },
        }
        paths = spec.setdefault("paths", {})
        for (path, method), (summary, description) in _STREAM_DOCS.items():
            operation: dict[str, Any] = {"summary": summary, "description": description}
            responses: dict[int, Any] = {200: event_stream}
            if method == "post":
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
                }
                for status in CHAT_ERRORS:
                    responses[status] = {"description": "see API.md, Errors", **error}
            else:
                operation["parameters"] = [
                    {"name": "stream_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": EVENT_ID_PATTERN},
                        "description": "resume after this event id",
                    },
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "pattern": EVENT_ID_PATTERN},
                        "description": "the same, for clients that cannot set headers (the header wins)",
                    },
                ]
                responses[204] = {"description": "the stream has ended and nothing follows the given id"}
                for status in (400, 401, 404, 429):
                    responses[status] = {"description": "see API.md, Errors", **error}
            operation["responses"] = responses
            paths.setdefault(path, {})[method] = operation
        # POST /chat (a Quart route) takes the same body and refuses in the same ways.
        chat = paths.get("/chat", {}).get("post", {})
        if chat:
            chat["requestBody"]["content"]["application/json"]["schema"] = {
                "$ref": "#/components/schemas/ChatRequest"
            }
            chat["requestBody"]["required"] = True
            for status in CHAT_ERRORS:
                chat["responses"].setdefault(status, {"description": "see API.md, Errors", **error})
        # The two answers that are not JSON.
        for path, media_type, what in (
            ("/demo", "text/html", "the demo page"),
            ("/metrics", "text/plain", "the figures in Prometheus text format"),
        ):
            operation = paths.get(path, {}).get("get")
            if operation is not None and not operation.get("responses"):
                operation["responses"] = {
                    200: {"description": what, "content": {media_type: {"schema": {"type": "string"}}}}
                }
        # What the routes check by hand (API.md, Errors), said in the schema.
        max_chars = self._app.extensions["quart_sse"].settings.max_message_chars
        fields = components["ChatRequest"]["properties"]
        fields["message"].update(minLength=1, maxLength=max_chars, pattern=r"\S")
        fields["session_id"]["anyOf"][0].update(minLength=1)
        return spec


GC_THRESHOLDS = (50_000, 20, 20)
"""Python's default (700, 10, 10) runs a young collection every 700 allocations; a stream
allocates a few hundred objects, almost none of them in cycles (measured: a50 12.8 -> 11.1
and b1000 29.4 -> 24.5 us per event, inter-chunk p99 at b1000 151 -> 42 ms)."""


def tune_gc() -> None:
    """Keep what exists at start (modules, the app) out of every collection; collect less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
    rt.heartbeats = Heartbeats(settings.heartbeat_interval, stats, settings.send_timeout)
    app.extensions["quart_sse"] = rt

    for blueprint in (chat.bp, streams.bp, sessions.bp, system.bp, demo.bp):
        app.register_blueprint(blueprint)

    keys = tuple(key.encode() for key in settings.api_keys)

    @app.before_request
    async def authenticate() -> None:
        auth.check(
            keys,
            request.method,
            request.path,
            request.headers.get("Authorization", ""),
            request.args.get("access_token", ""),
        )

    @app.after_request
    async def count(response: Response) -> Response:
        stats.requests_total += 1
        if response.status_code >= 400:
            stats.requests_failed += 1
        else:
            stats.requests_ok += 1
        return response

    # The streaming routes are answered in front of Quart (see quart_sse.asgi).
    app.asgi_app = StreamingRoutes(app.asgi_app, rt)  # type: ignore[method-assign, assignment, arg-type]

    @app.before_serving
    async def startup() -> None:
        tune_gc()
        await store.connect()
        await rt.limits.connect()
        writer.start()

    @app.after_serving
    async def shutdown() -> None:
        generations.accepting = False
        await generations.cancel_all(errors.INTERRUPTED)
        await writer.aclose()
        await provider.aclose()
        await rt.limits.aclose()
        await store.aclose()

    return app

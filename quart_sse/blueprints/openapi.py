"""The OpenAPI schema: quart-schema's, plus the HTTP edge's chat routes and their event streams."""

from __future__ import annotations

from typing import Any

from quart_schema.openapi import OpenAPIProvider

from quart_sse.blueprints import EXTENSION

_EVENT_SCHEMAS = ("SessionInfoEvent", "StatusEvent", "ChunkEvent", "CompleteEvent", "ErrorEvent")


_EDGE_DOCS = {
    ("/chat", "post"): (
        "Send a message; answers at once with the stream to read (for EventSource clients).",
        "Starts a generation and answers ``202`` with ``session_id``, ``stream_id`` and ``events_url``; "
        "read the answer from ``events_url`` (``GET /streams/{stream_id}/events``).",
    ),
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

REFUSALS = {
    400: "the body is not JSON (or nested too deep), a field is missing, of the wrong type or not "
    "valid Unicode, the message is empty, or Last-Event-ID is malformed",
    401: "API_KEYS is set and no valid key was presented (Authorization: Bearer <key>)",
    404: "unknown or expired session or stream, or one that belongs to another API key (the same answer)",
    408: "the request body did not arrive within BODY_TIMEOUT",
    409: "the session already has a generation running, or holds MAX_SESSION_MESSAGES messages",
    413: "the body is larger than MAX_BODY_BYTES, or the message longer than MAX_MESSAGE_CHARS",
    429: "RATE_LIMIT or MAX_STREAMS_PER_CLIENT reached (Retry-After)",
    503: "MAX_STREAMS reached, the server is shutting down, or the store is unavailable (Retry-After)",
}
"""What each refusal means; every refusal's body is ErrorBody."""

OWNERSHIP = (
    'Errors are `{"error": {"code", "message"}}`; when several apply, the first of 401, 413, '
    "400, 404, 409, 429, 503 answers, and a refused request changes nothing. With API_KEYS set, every "
    "session and every stream started in it belongs to the key that created it: another key gets the "
    "404 an unknown id gets, and GET /sessions lists only the caller's sessions; keys in ADMIN_KEYS see "
    "and act on every session. Without API_KEYS the server is single-user: every session is visible."
)

CHAT_ERRORS = (400, 401, 404, 408, 409, 413, 429, 503)
"""The refusals of the chat routes, in docs/API.md's order (401 only with API_KEYS set)."""


class SSEOpenAPIProvider(OpenAPIProvider):
    """quart-schema's generator, plus the edge's chat routes; built once (the routes do not
    change once the app serves), not on every request of /openapi.json."""

    _built: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        if self._built is None:
            self._built = self._schema()
        return self._built

    def _schema(self) -> dict[str, Any]:
        from quart_schema.conversion import model_schema

        from quart_sse.blueprints import schemas

        spec: dict[str, Any] = super().schema()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for name in (*_EVENT_SCHEMAS, "ChatRequest", "ChatAccepted", "ErrorBody"):
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
        for (path, method), (summary, description) in _EDGE_DOCS.items():
            operation: dict[str, Any] = {"summary": summary, "description": description}
            responses: dict[int, Any] = {200: event_stream}
            if path == "/chat":
                accepted = {"$ref": "#/components/schemas/ChatAccepted"}
                responses = {
                    202: {"description": "accepted", "content": {"application/json": {"schema": accepted}}}
                }
            if method == "post":
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
                }
                for status in CHAT_ERRORS:
                    responses[status] = {"description": REFUSALS[status], **error}
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
                    {
                        "name": "access_token",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "with API_KEYS set: the key, for clients that cannot set "
                        "Authorization (an EventSource); the header wins",
                    },
                ]
                responses[204] = {"description": "the stream has ended and nothing follows the given id"}
                for status in (400, 401, 404, 408, 429):
                    responses[status] = {"description": REFUSALS[status], **error}
            operation["responses"] = responses
            paths.setdefault(path, {})[method] = operation
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
        # What the routes check by hand (docs/API.md, Errors), said in the schema.
        max_chars = self._app.extensions[EXTENSION].settings.max_message_chars
        fields = components["ChatRequest"]["properties"]
        fields["message"].update(minLength=1, maxLength=max_chars, pattern=r"\S")
        fields["session_id"]["anyOf"][0].update(minLength=1)
        settings = self._app.extensions[EXTENSION].settings
        spec.setdefault("info", {})["description"] = (
            f"{spec['info'].get('description', '')} {OWNERSHIP}".strip()
        )
        components_root = spec["components"]
        components_root["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a key of API_KEYS or ADMIN_KEYS; GET /streams/{id}/events also takes "
                "it as ?access_token= (an EventSource cannot send headers)",
            }
        }
        if settings.api_keys or settings.admin_keys:
            public = ("/health", "/docs", "/openapi.json", "/demo")
            for path, operations in paths.items():
                if path in public or path.startswith(("/docs/", "/demo/")):
                    continue
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
                    operation.setdefault("responses", {}).setdefault(
                        401, {"description": REFUSALS[401], **error}
                    )
        return spec

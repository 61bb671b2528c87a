"""POST /chat/stream and POST /chat: a user message starts a generation."""

from __future__ import annotations

import json
import uuid
from typing import Any

from quart import Blueprint, Response, request
from quart_schema import document_request, document_response

from quart_sse import errors
from quart_sse.errors import APIError
from quart_sse.generation import Generation, events_url
from quart_sse.runtime import Runtime, runtime
from quart_sse.schemas import ChatAccepted, ChatRequest, ErrorBody
from quart_sse.stores.base import now_iso
from quart_sse.streams import sse_body

bp = Blueprint("chat", __name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

_MISSING: Any = object()


def sse_response(rt: Runtime, stream_id: str, after: int) -> Response:
    """An SSE response reading ``stream_id`` after id ``after``; never cut by RESPONSE_TIMEOUT."""
    body = sse_body(
        rt.store,
        stream_id,
        after,
        retry_ms=rt.settings.sse_retry_ms,
        heartbeat=rt.settings.heartbeat_interval,
        stats=rt.stats,
    )
    response = Response(body, 200, SSE_HEADERS)
    response.timeout = None  # Quart's 60 s RESPONSE_TIMEOUT would end a long stream silently
    return response


def _bad(code: str, message: str) -> APIError:
    return APIError(400, code, message)


async def read_chat_request(max_chars: int) -> tuple[str, str | None]:
    """The message and session id of a chat request, validated strictly (no coercion)."""
    raw = await request.get_data()  # 413 past MAX_BODY_BYTES (Quart's MAX_CONTENT_LENGTH)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad(errors.INVALID_JSON, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise _bad(errors.INVALID_REQUEST, "the request body must be a JSON object")
    message = body.get("message", _MISSING)
    if message is _MISSING:
        raise _bad(errors.INVALID_REQUEST, "field 'message' is missing")
    if not isinstance(message, str):
        raise _bad(errors.INVALID_REQUEST, f"field 'message' must be a string, not {_json_type(message)}")
    session_id = body.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise _bad(
            errors.INVALID_REQUEST,
            f"field 'session_id' must be a string or null, not {_json_type(session_id)}",
        )
    if session_id == "":
        raise _bad(errors.INVALID_REQUEST, "field 'session_id' is an empty string: omit it or send null")
    if not message.strip():
        raise _bad(errors.EMPTY_MESSAGE, "field 'message' is empty")
    if len(message) > max_chars:
        raise APIError(
            413,
            errors.MESSAGE_TOO_LONG,
            f"field 'message' has {len(message)} characters; the limit is {max_chars}",
        )
    return message, session_id


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else "null"


def retry_later(status: int, code: str, message: str, seconds: int) -> APIError:
    return APIError(status, code, message, headers={"Retry-After": str(seconds)})


async def start_generation(rt: Runtime) -> Generation:
    """Every check of API.md's order (401 is done before routing), then the generation."""
    message, session_id = await read_chat_request(rt.settings.max_message_chars)
    store = rt.store
    session = None
    if session_id is not None:
        session = await store.get_session(session_id)
        if session is None:
            raise APIError(404, errors.SESSION_NOT_FOUND, f"no session {session_id}")
        if session.generating is not None:
            raise APIError(
                409,
                errors.GENERATION_RUNNING,
                f"session {session_id} already has a generation running "
                f"(stream {session.generating}); wait for it to end or cancel it",
            )
    if not rt.generations.accepting:
        raise retry_later(503, errors.SHUTTING_DOWN, "the server is shutting down; try again", 2)
    if rt.generations.at_capacity():
        raise retry_later(
            503,
            errors.CAPACITY,
            f"{rt.settings.max_streams} streams are generating (MAX_STREAMS); try again",
            2,
        )
    if session is None:
        session = await store.create_session(uuid.uuid4().hex, rt.provider.model, now_iso())
        rt.stats.sessions_created += 1
    return await rt.generations.start(session, message, request.remote_addr or "?")


@bp.post("/chat/stream")
@document_request(ChatRequest)
@document_response(ErrorBody, 400)
async def chat_stream() -> Response:
    """Send a message and read the answer as it is generated (text/event-stream).

    Starts a generation and answers with its stream directly: ``retry:``, then the events
    ``session_info``, ``status``, ``chunk``… and ``complete`` (or ``error``).  If the
    connection drops, resume with ``GET /streams/{stream_id}/events`` and ``Last-Event-ID``.
    """
    rt = runtime()
    generation = await start_generation(rt)
    return sse_response(rt, generation.stream_id, 0)


@bp.post("/chat")
@document_request(ChatRequest)
@document_response(ChatAccepted, 202)
@document_response(ErrorBody, 400)
async def chat() -> tuple[dict[str, str], int]:
    """Send a message; answers at once with the stream to read (for EventSource clients)."""
    rt = runtime()
    generation = await start_generation(rt)
    stream_id = generation.stream_id
    return {
        "session_id": generation.session_id,
        "stream_id": stream_id,
        "events_url": events_url(stream_id),
    }, 202

"""Starting a generation from a chat request: strict validation, API.md's order of checks.

Shared by ``POST /chat`` (a Quart route) and ``POST /chat/stream`` (served by the
streaming layer, :mod:`quart_sse.asgi`); no framework types here.
"""

from __future__ import annotations

import json
from typing import Any

from quart_sse import errors
from quart_sse.errors import APIError
from quart_sse.generation import Generation
from quart_sse.ids import new_id
from quart_sse.limits import NO_SLOT, Client, StreamSlot
from quart_sse.runtime import Runtime
from quart_sse.stores.base import now_iso

_MISSING: Any = object()


def _bad(code: str, message: str) -> APIError:
    return APIError(400, code, message)


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


def parse_chat_body(raw: bytes, max_chars: int) -> tuple[str, str | None]:
    """The message and session id of a chat request body, validated strictly (no coercion)."""
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


def body_too_large(limit: int) -> APIError:
    return APIError(
        413, errors.BODY_TOO_LARGE, f"the request body is larger than {limit} bytes (MAX_BODY_BYTES)"
    )


def retry_later(status: int, code: str, message: str, seconds: int) -> APIError:
    return APIError(status, code, message, headers={"Retry-After": str(seconds)})


async def start_generation(rt: Runtime, raw: bytes, client: Client, slot: StreamSlot = NO_SLOT) -> Generation:
    """Every check of API.md's order after 401 (done first, by the caller), then the generation.

    The per-client limits come last, with the server's capacity (429/503): ``slot`` (the
    stream response the caller will open, if any) is taken, then one message is counted
    against RATE_LIMIT; on any refusal the slot is given back and nothing is counted.
    """
    message, session_id = parse_chat_body(raw, rt.settings.max_message_chars)
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
    slot.acquire()
    try:
        await rt.limits.take_message(client)
        if session is None:
            session = await store.create_session(new_id(), rt.provider.model, now_iso())
            rt.stats.sessions_created += 1
        return await rt.generations.start(session, message, client.address)
    except BaseException:
        slot.release()
        raise

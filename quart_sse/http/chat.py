"""Starting a generation from a chat request: strict validation, docs/API.md's order of checks.

Shared by the edge's ``POST /chat`` and ``POST /chat/stream``.
"""

from __future__ import annotations

import json
from typing import Any

from quart_sse import codes
from quart_sse.engine import Engine, Generation
from quart_sse.http.limits import NO_SLOT, Client, Limits, StreamSlot
from quart_sse.ids import new_id
from quart_sse.models import EVERYONE, Caller, now_iso

_MISSING: Any = object()


def _bad(code: str, message: str) -> codes.Refused:
    return codes.Refused(code, message)


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


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _not_unicode(value: object, name: str = "body") -> str | None:
    """The name of the first string (a field, a key or an item) in ``value`` that is not
    valid Unicode; None when every one is."""
    if isinstance(value, str):
        return None if _is_unicode(value) else name
    if isinstance(value, dict):
        for key, item in value.items():
            if not _is_unicode(key):
                return "a key"
            found = _not_unicode(item, key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _not_unicode(item, name)
            if found is not None:
                return found
    return None


def _is_unicode(text: str) -> bool:
    """False for a string with a lone surrogate, which JSON's ``\\udXXX`` escapes allow
    and UTF-8 cannot carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_chat_body(raw: bytes, max_chars: int) -> tuple[str, str | None]:
    """The message and session id of a chat request body, validated strictly (no coercion)."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError):
        raise _bad(codes.INVALID_JSON, "the request body is not JSON") from None
    except RecursionError:  # nested past Python's recursion limit (~1,000 deep)
        raise _bad(codes.INVALID_JSON, "the request body is JSON nested too deep") from None
    if not isinstance(body, dict):
        raise _bad(codes.INVALID_REQUEST, "the request body must be a JSON object")
    message = body.get("message", _MISSING)
    if message is _MISSING:
        raise _bad(codes.INVALID_REQUEST, "field 'message' is missing")
    if not isinstance(message, str):
        raise _bad(codes.INVALID_REQUEST, f"field 'message' must be a string, not {_json_type(message)}")
    session_id = body.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise _bad(
            codes.INVALID_REQUEST,
            f"field 'session_id' must be a string or null, not {_json_type(session_id)}",
        )
    if b"\\u" in raw or b"\\U" in raw:  # only escapes can make a lone surrogate
        bad = _not_unicode(body)
        if bad is not None:
            raise _bad(
                codes.INVALID_REQUEST,
                f"field {bad!r} is not valid Unicode (a lone surrogate: a string cut inside an emoji?)",
            )
    if session_id == "":
        raise _bad(codes.INVALID_REQUEST, "field 'session_id' is an empty string: omit it or send null")
    if not message.strip():
        raise _bad(codes.EMPTY_MESSAGE, "field 'message' is empty")
    if len(message) > max_chars:
        raise codes.Refused(
            codes.MESSAGE_TOO_LONG,
            f"field 'message' has {len(message)} characters; the limit is {max_chars}",
        )
    return message, session_id


def body_too_large(limit: int) -> codes.Refused:
    return codes.Refused(
        codes.BODY_TOO_LARGE, f"the request body is larger than {limit} bytes (MAX_BODY_BYTES)"
    )


async def start_generation(
    engine: Engine,
    limits: Limits,
    raw: bytes,
    client: Client,
    caller: Caller = EVERYONE,
    slot: StreamSlot = NO_SLOT,
) -> Generation:
    """Every check of docs/API.md's order after 401 (done first, by the edge), then the generation.

    A session that ``caller`` may not see is answered as an unknown one (404).

    The per-client limits come last, then the server's capacity (429, then 503): ``slot``
    (the stream response the caller will open, if any) is taken, the client's running
    generations are counted against MAX_STREAMS_PER_CLIENT, then one message is counted
    against RATE_LIMIT (only once nothing else refuses); on any refusal the slot is given
    back and nothing is counted.
    """
    settings = engine.settings
    message, session_id = parse_chat_body(raw, settings.max_message_chars)
    store = engine.store
    session = None
    if session_id is not None:
        session = await store.get_session(session_id)
        if session is None or not caller.sees(session.owner):
            raise codes.SessionNotFound(session_id)
        if session.generating is not None:
            raise codes.GenerationRunning(session_id, session.generating)
        if len(session.messages) + 2 > settings.max_session_messages:
            raise codes.Refused(
                codes.SESSION_FULL,
                f"session {session_id} holds {len(session.messages)} messages; a turn would pass "
                f"{settings.max_session_messages} (MAX_SESSION_MESSAGES): start a new session",
            )
    generations = engine.generations
    unavailable = None
    if not generations.accepting:
        unavailable = codes.Refused(
            codes.SHUTTING_DOWN, "the server is shutting down; try again", retry_after=2
        )
    elif generations.at_capacity():
        unavailable = codes.Refused(
            codes.CAPACITY,
            f"{settings.max_streams} streams are generating (MAX_STREAMS); try again",
            retry_after=2,
        )
    slot.acquire()
    try:
        limits.check_generations(client, generations.running_for(client.key))
        await limits.take_message(client, count=unavailable is None)
        if unavailable is not None:
            raise unavailable
        if session is None:
            session = await store.create_session(new_id(), engine.provider.model, now_iso(), caller.owner)
            engine.stats.sessions_created += 1
        return await generations.start(session, message, client.address, client.key)
    except BaseException:
        slot.release()
        raise

"""Starting a generation from a chat request: strict validation, docs/API.md's order of checks.

Shared by the edge's ``POST /chat`` and ``POST /chat/stream``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from quart_sse import codes, jsontext
from quart_sse.engine import Engine
from quart_sse.http.limits import NO_SLOT, Client, Limits, StreamSlot
from quart_sse.ids import new_id
from quart_sse.models import EVERYONE, Caller, Message, Session, now_iso

IF_BUSY = ("reject", "enqueue", "interrupt")
"""What a message does when its session is generating (``if_busy``; the first is the default)."""


class ChatRequest(NamedTuple):
    """A chat request body, validated: ``if_busy`` is one of :data:`IF_BUSY`."""

    message: str
    session_id: str | None
    if_busy: str = "reject"


class Accepted(NamedTuple):
    """A message taken: the stream of its answer; ``queued``: it waits behind the running
    answer (``if_busy=enqueue``) and starts when that one ends."""

    session_id: str
    stream_id: str
    queued: bool = False


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


def parse_chat_body(raw: bytes, max_chars: int) -> ChatRequest:
    """The message, session id and ``if_busy`` of a chat request body, validated strictly
    (no coercion); 400 ``invalid_request`` for an ``if_busy`` not of :data:`IF_BUSY`."""
    try:
        body = jsontext.loads(raw)
    except jsontext.NotJSON as exc:
        raise _bad(codes.INVALID_JSON, str(exc).replace("the body", "the request body")) from None
    except jsontext.NotUnicode as exc:
        raise _bad(codes.INVALID_REQUEST, f"field {exc}") from None
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
    if session_id == "":
        raise _bad(codes.INVALID_REQUEST, "field 'session_id' is an empty string: omit it or send null")
    if_busy = body.get("if_busy")
    if if_busy is None:
        if_busy = "reject"
    elif not isinstance(if_busy, str) or if_busy not in IF_BUSY:
        shown = repr(if_busy[:40]) if isinstance(if_busy, str) else _json_type(if_busy)
        raise _bad(
            codes.INVALID_REQUEST,
            f"field 'if_busy' must be one of {', '.join(IF_BUSY)} (or null), not {shown}",
        )
    if not message.strip():
        raise _bad(codes.EMPTY_MESSAGE, "field 'message' is empty")
    if len(message) > max_chars:
        raise codes.Refused(
            codes.MESSAGE_TOO_LONG,
            f"field 'message' has {len(message)} characters; the limit is {max_chars}",
        )
    return ChatRequest(message, session_id, if_busy)


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
) -> Accepted:
    """Every check of docs/API.md's order after 401 (done first, by the edge), then the generation.

    A session that ``caller`` may not see is answered as an unknown one (404).  A session
    that is generating answers as ``if_busy`` says: ``reject`` 409 ``generation_running``;
    ``enqueue``: the message waits behind the running answer (409 when one waits already);
    ``interrupt``: the running answer is cancelled (wherever it runs; its partial answer
    kept, ``interrupted``), then this one starts.

    The per-client limits come last, then the server's capacity (429, then 503): ``slot``
    (the stream response the caller will open, if any) is taken, the client's running
    generations are counted against MAX_STREAMS_PER_CLIENT, then one message is counted
    against RATE_LIMIT (only once nothing else refuses); on any refusal the slot is given
    back and nothing is counted.
    """
    request = parse_chat_body(raw, engine.settings.max_message_chars)
    return await _start(engine, limits, client, caller, slot, request)


async def start_regeneration(
    engine: Engine,
    limits: Limits,
    session_id: str,
    client: Client,
    caller: Caller = EVERYONE,
    slot: StreamSlot = NO_SLOT,
) -> Accepted:
    """``POST /sessions/{id}/regenerate``: the checks of a chat request (404, 409 while it
    generates, 503, 429), then the session's last user message is answered again, its
    last answer dropped; 400 ``nothing_to_regenerate`` without a user message."""
    return await _start(engine, limits, client, caller, slot, ChatRequest("", session_id), regenerate=True)


async def _start(
    engine: Engine,
    limits: Limits,
    client: Client,
    caller: Caller,
    slot: StreamSlot,
    request: ChatRequest,
    *,
    regenerate: bool = False,
) -> Accepted:
    settings = engine.settings
    message, session_id, if_busy = request
    store = engine.store
    session = None
    busy = False
    if session_id is not None:
        session = await store.get_session(session_id)
        if session is None or not caller.sees(session.owner):
            raise codes.SessionNotFound(session_id)
        if regenerate and not any(m.role == "user" for m in session.messages):
            raise codes.NothingToRegenerate(session_id)
        busy = session.generating is not None
        if busy and if_busy == "reject":
            assert session.generating is not None
            raise codes.GenerationRunning(session_id, session.generating)
        if busy and if_busy == "enqueue" and session.queued is not None:
            raise codes.MessageQueued(session_id, session.queued)
        pending = 1 if busy and if_busy == "enqueue" else 0  # the running answer's
        if not regenerate and len(session.messages) + pending + 2 > settings.max_session_messages:
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
            session = await store.create_session(
                new_id(), engine.provider.model, now_iso(), caller.owner, deferred=True
            )
            engine.stats.sessions_created += 1
        elif busy and if_busy == "enqueue":
            stream_id = new_id()
            first = Message("user", message, now_iso())
            if await store.enqueue(session.session_id, stream_id, first, client.key) is not None:
                return Accepted(session.session_id, stream_id, queued=True)
            # The running answer ended meanwhile: this one starts now.
            session = await _again(engine, session.session_id)
        elif busy and if_busy == "interrupt":
            await engine.control.cancel_session(
                session.session_id, session.generating, session.queued, codes.INTERRUPTED
            )
            session = await _again(engine, session.session_id)
        if regenerate:
            last = next((m for m in reversed(session.messages) if m.role == "user"), None)
            if last is None:
                raise codes.NothingToRegenerate(session.session_id)
            message = last.content
        generation = await generations.start(
            session, message, client.address, client.key, regenerate=regenerate
        )
        return Accepted(generation.session_id, generation.stream_id)
    except BaseException:
        slot.release()
        raise


async def _again(engine: Engine, session_id: str) -> Session:
    """The session read anew (after a wait, another instance may have changed it)."""
    session = await engine.store.get_session(session_id)
    if session is None:
        raise codes.SessionNotFound(session_id)
    return session

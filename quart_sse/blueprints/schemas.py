"""Request and response shapes, for the OpenAPI schema and /docs.

Requests are validated strictly by hand in the routes (docs/API.md: no coercion, and errors in
its own body shape); these dataclasses document what the routes accept and answer.  A class's
docstring describes it (and is the description of a response that answers it); the docstring
under a field describes that field (pydantic's ``use_attribute_docstrings``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, with_config
from pydantic.json_schema import SkipJsonSchema

from quart_sse.stores.base import CURSOR_PATTERN, LIST_LIMIT, MAX_LIST_LIMIT

DOCUMENTED = ConfigDict(use_attribute_docstrings=True)
"""Field docstrings become the fields' descriptions in the schema."""


@with_config(DOCUMENTED)
@dataclass
class ChatRequest:
    """A user message for a session; no ``session_id`` (or null) starts a new session."""

    message: str
    """The message, 1 to MAX_MESSAGE_CHARS characters (code points), not only whitespace."""
    session_id: str | None = None
    """The session to continue (from ``session_info``, ``POST /chat`` or ``POST /sessions/new``);
    null or absent: a new session."""
    if_busy: Literal["reject", "enqueue", "interrupt"] | None = None
    """What to do when the session is generating an answer: ``reject`` (null or absent: the
    default) refuses with 409 ``generation_running``; ``enqueue`` accepts the message at once
    and starts its answer when the running one ends (one waiting message per session: a second
    gets 409); ``interrupt`` cancels the running answer wherever it runs (its stream ends with
    ``error`` code ``interrupted``, its partial answer kept) and drops a waiting message, then
    starts this one.  On a session that is not generating, all three start at once."""


@with_config(DOCUMENTED)
@dataclass
class ChatAccepted:
    """The generation has started: read its answer from ``events_url``."""

    session_id: str
    """The session the message went to (a new one when none was given)."""
    stream_id: str
    """The generation's stream."""
    events_url: str
    """Where to read the stream: ``/streams/{stream_id}/events``."""
    durable_url: str
    """The same answer as a read-only Durable Stream: ``/v1/stream/chat/{stream_id}`` (its
    events' data as JSON messages, closed when the answer ends), for any Durable Streams client."""
    queued: bool = False
    """Present (true) when the message waits behind the session's running answer
    (``if_busy=enqueue``): its stream can be read now and starts when that answer ends."""


@with_config(DOCUMENTED)
@dataclass
class ErrorDetail:
    """What went wrong."""

    code: str
    """For programs: one of the codes listed under each error status (``session_not_found``...)."""
    message: str
    """For people: what went wrong, and what to do about it."""


@with_config(DOCUMENTED)
@dataclass
class ErrorBody:
    """A refusal: ``{"error": {"code", "message"}}``; the request changed nothing."""

    error: ErrorDetail


@with_config(DOCUMENTED)
@dataclass
class CancelResult:
    """The cancel is done: the stream has ended (this answer comes once it has, on whichever
    instance it ran)."""

    stream_id: str
    cancelled: bool
    """True when this request stopped the generation, or took a waiting (``if_busy=enqueue``)
    message out of the queue; false when the stream had already ended (cancelling again is
    harmless)."""
    status: str | None
    """How the stream ended: ``complete``, or the code of its final ``error`` event
    (``cancelled`` after a cancel); null when the server no longer holds its end."""


@with_config(DOCUMENTED)
@dataclass
class SessionCreated:
    """The new, empty session."""

    session_id: str
    """32 hex digits; whoever knows it can use the session (with API_KEYS: the same key only)."""
    model: str
    """The model that answers in this session."""
    created_at: str
    """ISO 8601, UTC."""


def _no_default(schema: dict[str, Any]) -> None:
    """An optional query parameter has no value when omitted (not null)."""
    schema.pop("default", None)


@dataclass
class SessionListQuery:
    """The query of ``GET /sessions`` (checked by hand in the route: anything else is a 400)."""

    limit: Annotated[
        int,
        Field(ge=1, le=MAX_LIST_LIMIT, description=f"the most sessions in the page (default {LIST_LIMIT})"),
    ] = LIST_LIMIT
    cursor: Annotated[
        Annotated[str, Field(pattern=CURSOR_PATTERN)] | SkipJsonSchema[None],
        Field(
            description="the next_cursor of the page before, as it is (omitted: the first page)",
            json_schema_extra=_no_default,
        ),
    ] = None


@with_config(DOCUMENTED)
@dataclass
class SessionSummary:
    """A session as listed: no messages (``GET /sessions/{session_id}`` has them)."""

    session_id: str
    title: str
    """The session's first user message, cut to 80 characters; ``""`` while it has none."""
    message_count: int
    """Messages in the session (the user's and the model's)."""
    created_at: str
    """ISO 8601, UTC."""
    last_activity: str
    """ISO 8601, UTC: the latest message, or the creation."""


@with_config(DOCUMENTED)
@dataclass
class SessionList:
    """One page of the caller's sessions, latest activity first."""

    sessions: list[SessionSummary]
    """One page, latest activity first."""
    count: int
    """How many sessions the caller has in all (not only this page)."""
    next_cursor: str | None = None
    """The ``cursor`` of the next page; null on the last page."""
    scope: Literal["own", "all"] = "own"
    """``own``: the caller's sessions; ``all``: every session (an admin key, or no API_KEYS)."""


@with_config(DOCUMENTED)
@dataclass
class MessageOut:
    """One message of a session's history."""

    role: Literal["user", "model"]
    """``user``: a message sent; ``model``: an answer."""
    content: str
    timestamp: str
    """ISO 8601, UTC."""
    interrupted: bool = False
    """Present (true) on an answer cut short: a cancel, a model failure, a lost instance."""


@with_config(DOCUMENTED)
@dataclass
class SessionDetail:
    """The session with its whole history, oldest message first."""

    session_id: str
    model: str
    """The model that answers in this session."""
    created_at: str
    """ISO 8601, UTC."""
    last_activity: str
    """ISO 8601, UTC."""
    message_count: int
    user_messages: int
    ai_messages: int
    """The model's answers."""
    messages: list[MessageOut]
    generating: str | None = None
    """The stream id of the generation running in the session; null when none runs."""
    queued: str | None = None
    """The stream id of a message waiting behind the running answer (``if_busy=enqueue``); null
    when none waits."""


@with_config(DOCUMENTED)
@dataclass
class SessionDeleted:
    """The session is gone (and a generation that ran in it was cancelled)."""

    deleted: str
    """The id of the deleted session."""


@with_config(DOCUMENTED)
@dataclass
class SessionCleared:
    """The session is kept, with no messages."""

    session_id: str
    message_count: int
    """Always 0."""


@with_config(DOCUMENTED)
@dataclass
class Health:
    """The server is up: its load and what it runs."""

    status: str
    """``ok``."""
    instance: str
    """Which server process answered (several share one Redis)."""
    active_streams: int
    """Generations running in this process."""
    active_sessions: int
    """Sessions in the store."""
    uptime_s: float
    """Seconds since this process started."""
    model: str
    """The model id."""
    store: str
    """``memory`` or ``redis``."""
    provider: str
    """The model backend: ``gemini``, ``openai`` or ``simulated``."""
    offline_model: bool
    """True when the built-in offline model answers (no key set)."""
    cluster: dict[str, int] = field(default_factory=dict)
    """``instances``, ``active_streams`` and ``active_sessions`` across every instance on the
    store (this process alone on the memory store)."""


@with_config(DOCUMENTED)
@dataclass
class Stats:
    """This process's figures since it started (``cluster``: across instances)."""

    instance: str
    """Which server process answered."""
    uptime_s: float
    """Seconds since this process started."""
    total_requests: int
    successful_requests: int
    failed_requests: int
    """Requests answered with a status of 400 or more."""
    streams_started: int
    streams_completed: int
    """Generations that ended with ``complete``."""
    streams_failed: int
    """Generations that ended with ``error`` (cancels included)."""
    active_streams: int
    """Generations running now."""
    chunks_sent: int
    """``chunk`` events generated."""
    average_response_time_s: float
    """Mean seconds from a generation's start to its end."""
    sessions_created: int
    active_sessions: int
    """Sessions in the store."""
    model: str
    provider: str
    store: str
    engine: dict[str, int] = field(default_factory=dict)
    """What the stream engine holds right now: ``readers``, ``generations``, ``generation_tasks``,
    ``queued_frames``, ``hub_streams``, ``waiting_readers``, ``heartbeat_members``, ``logs``,
    ``client_streams``, ``limited_clients``, ``client_generations``."""
    stream_writes: dict[str, int] = field(default_factory=dict)
    """Stream writes made ``direct`` (to the socket) and through ``asgi``; ``stalled_cut``:
    responses cut after SEND_TIMEOUT without progress."""
    cluster: dict[str, int] = field(default_factory=dict)
    """``instances``, ``active_streams`` and ``active_sessions`` across every instance on the store."""


@with_config(DOCUMENTED)
@dataclass
class ServerInfo:
    """What this server is."""

    name: str
    """``quart-sse``."""
    version: str
    model: str
    """The model id."""
    provider: str
    """The model backend: ``gemini``, ``openai`` or ``simulated``."""
    store: str
    """``memory`` or ``redis``."""
    endpoints: list[str]
    """``METHOD /path`` of every route, ``<name>`` for a path parameter."""


# The events of a stream (``text/event-stream``): each is one SSE event whose ``event``
# field equals ``type`` and whose ``data`` is this object as one line of JSON.  The session
# stream (``GET /sessions/{session_id}/events``) carries the same events, each with the
# ``stream_id`` of its turn, between ``user_message`` events (and a ``reset`` when it must).

TurnStream = Annotated[str | SkipJsonSchema[None], Field(json_schema_extra=_no_default)]
"""A ``stream_id`` that only the session stream's events carry (absent elsewhere)."""


@with_config(DOCUMENTED)
@dataclass
class SessionInfoEvent:
    """The first event of every stream: what it belongs to and where to resume it."""

    type: Literal["session_info"]
    session_id: str
    """The session the answer goes to (a new one when the request named none)."""
    stream_id: str
    """This stream."""
    model: str
    """The model that answers."""
    events_url: str
    """Where to read it again: ``/streams/{stream_id}/events``, with ``Last-Event-ID``."""
    durable_url: str
    """The same answer as a read-only Durable Stream: ``/v1/stream/chat/{stream_id}``."""


@with_config(DOCUMENTED)
@dataclass
class StatusEvent:
    """The second event: the model has been asked."""

    type: Literal["status"]
    message: str
    """``Generating response...`` (for a message that waited: ``Generating response (queued 2.4 s
    behind the answer before it)...``)"""
    context_messages: int
    """Messages of history sent to the model (the latest that fit in CONTEXT_MAX_CHARS), this
    message included."""
    queued: bool = False
    """Present (true) when the message waited behind the answer before it (``if_busy=enqueue``)."""
    waited: Annotated[float | SkipJsonSchema[None], Field(json_schema_extra=_no_default)] = None
    """With ``queued``: the seconds it waited, from its acceptance to its start."""
    stream_id: TurnStream = None
    """On the session stream only: the turn's stream."""


@with_config(DOCUMENTED)
@dataclass
class ChunkEvent:
    """A piece of the answer's text, in order; the answer is their ``text`` joined."""

    type: Literal["chunk"]
    text: str
    chunk_number: int
    """1, 2, 3... with no gaps."""
    is_final: bool
    """True on the last chunk where the model tells it in advance (the offline model does);
    ``complete`` is always the end marker."""
    stream_id: TurnStream = None
    """On the session stream only: the turn's stream."""


@with_config(DOCUMENTED)
@dataclass
class CompleteEvent:
    """The last event of an answer that ended normally; the answer is saved in the session."""

    type: Literal["complete"]
    total_chunks: int
    processing_time: float
    """Seconds from the start of the generation to its end."""
    message_count: int
    """Messages in the session with this answer."""
    finish_reason: str
    """``stop``, or the model's reason: ``max_tokens``, ``safety``, ``recitation``..."""
    stream_id: TurnStream = None
    """On the session stream only: the turn's stream."""


@with_config(DOCUMENTED)
@dataclass
class ErrorEvent:
    """The last event of an answer that did not end normally (instead of ``complete``); what was
    generated before it is saved in the session, marked ``interrupted``."""

    type: Literal["error"]
    message: str
    """For people: what happened (never an API key)."""
    code: Literal[
        "cancelled",
        "interrupted",
        "rate_limited",
        "model_unavailable",
        "auth",
        "model_error",
        "timeout",
        "store_unavailable",
    ]
    """``cancelled``: POST /streams/{id}/cancel (or the session deleted or cleared);
    ``interrupted``: the generating instance died or shut down, or a newer message came with
    ``if_busy=interrupt``; ``rate_limited`` and
    ``model_unavailable``: the model said 429 / 5xx (or could not be reached) on every retry;
    ``auth``: the model refused the key; ``model_error``: any other model failure, also
    mid-answer; ``timeout``: the model went silent for MODEL_TIMEOUT seconds;
    ``store_unavailable``: Redis was lost."""
    session_id: str
    stream_id: TurnStream = None
    """On the session stream only: the turn's stream."""


@with_config(DOCUMENTED)
@dataclass
class UserMessageEvent:
    """Session stream only: a turn begins, a message the session accepted (from any client,
    on any instance); that turn's events follow, each with this ``stream_id``."""

    type: Literal["user_message"]
    session_id: str
    stream_id: str
    """The stream of the turn's answer (``GET /streams/{stream_id}/events`` reads it alone)."""
    turn: int
    """The session's turns counted from 1, never reused (a clear keeps counting)."""
    content: str
    """The user's message text (the same as ``message.content``)."""
    message: MessageOut
    """The user's message (for a regenerate: the message answered again)."""
    queued: bool = False
    """Present (true) when the message waits behind the running answer (``if_busy=enqueue``)."""
    regenerate: bool = False
    """Present (true) for ``POST /sessions/{session_id}/regenerate``: the last answer is being
    replaced, and the message is not a new one."""


@with_config(DOCUMENTED)
@dataclass
class ResetEvent:
    """Session stream only, with no ``id``: a resume asked for events the server no longer
    holds (the turn's stream is past STREAM_RETENTION, or the turn is older than the session's
    last 100).  Reload the session (``GET /sessions/{session_id}``); the stream goes on from
    the turn being generated, else the next."""

    type: Literal["reset"]
    session_id: str
    message: str
    """For people: what happened and what to do."""

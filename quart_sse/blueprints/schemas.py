"""Request and response shapes, for the OpenAPI schema and /docs.

Requests are validated strictly by hand in the routes (docs/API.md: no coercion, and errors in
its own body shape); these dataclasses document what the routes accept and answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from quart_sse.stores.base import CURSOR_PATTERN, LIST_LIMIT, MAX_LIST_LIMIT


@dataclass
class ChatRequest:
    """A user message; no ``session_id`` (or null) starts a new session."""

    message: str
    session_id: str | None = None


@dataclass
class ChatAccepted:
    session_id: str
    stream_id: str
    events_url: str


@dataclass
class ErrorDetail:
    code: str
    message: str


@dataclass
class ErrorBody:
    error: ErrorDetail


@dataclass
class CancelResult:
    stream_id: str
    cancelled: bool


@dataclass
class SessionCreated:
    session_id: str
    model: str
    created_at: str


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


@dataclass
class SessionSummary:
    session_id: str
    title: str
    """The session's first user message, cut to 80 characters; ``""`` while it has none."""
    message_count: int
    created_at: str
    last_activity: str


@dataclass
class SessionList:
    sessions: list[SessionSummary]
    """One page, latest activity first."""
    count: int
    """How many sessions the caller has in all (not only this page)."""
    next_cursor: str | None = None
    """The ``cursor`` of the next page; null on the last page."""
    scope: Literal["own", "all"] = "own"
    """``own``: the caller's sessions; ``all``: every session (an admin key, or no API_KEYS)."""


@dataclass
class MessageOut:
    role: Literal["user", "model"]
    content: str
    timestamp: str
    interrupted: bool = False


@dataclass
class SessionDetail:
    session_id: str
    model: str
    created_at: str
    last_activity: str
    message_count: int
    user_messages: int
    ai_messages: int
    messages: list[MessageOut]
    generating: str | None = None


@dataclass
class SessionDeleted:
    deleted: str


@dataclass
class SessionCleared:
    session_id: str
    message_count: int


@dataclass
class Health:
    status: str
    instance: str
    active_streams: int
    active_sessions: int
    uptime_s: float
    model: str
    store: str
    provider: str
    offline_model: bool
    cluster: dict[str, int] = field(default_factory=dict)


@dataclass
class Stats:
    instance: str
    uptime_s: float
    total_requests: int
    successful_requests: int
    failed_requests: int
    streams_started: int
    streams_completed: int
    streams_failed: int
    active_streams: int
    chunks_sent: int
    average_response_time_s: float
    sessions_created: int
    active_sessions: int
    model: str
    provider: str
    store: str
    engine: dict[str, int] = field(default_factory=dict)
    stream_writes: dict[str, int] = field(default_factory=dict)
    cluster: dict[str, int] = field(default_factory=dict)


@dataclass
class ServerInfo:
    name: str
    version: str
    model: str
    provider: str
    store: str
    endpoints: list[str]


# The events of a stream (``text/event-stream``): each is one SSE event whose ``event``
# field equals ``type`` and whose ``data`` is this object as one line of JSON.


@dataclass
class SessionInfoEvent:
    type: Literal["session_info"]
    session_id: str
    stream_id: str
    model: str
    events_url: str


@dataclass
class StatusEvent:
    type: Literal["status"]
    message: str
    context_messages: int


@dataclass
class ChunkEvent:
    type: Literal["chunk"]
    text: str
    chunk_number: int
    is_final: bool


@dataclass
class CompleteEvent:
    type: Literal["complete"]
    total_chunks: int
    processing_time: float
    message_count: int
    finish_reason: str


@dataclass
class ErrorEvent:
    type: Literal["error"]
    message: str
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
    session_id: str

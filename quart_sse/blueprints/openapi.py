"""The OpenAPI schema (3.1): quart-schema's, completed so that it describes the API by itself.

quart-schema builds the schema of the Quart routes from their docstrings and
:mod:`quart_sse.blueprints.schemas`.  Added here: the HTTP edge's routes (``POST /chat``,
``POST /chat/stream``, ``GET /streams/{stream_id}/events``, ``GET /sessions/{session_id}/events``,
``POST /sessions/{session_id}/regenerate``, the Durable Streams of ``/v1/stream/{path}``), which
Quart never sees, with
their ``text/event-stream`` answers and the shape of each event; every refusal of every
route, by status, with its codes (docs/API.md, Errors); what the routes check by hand
(limits of the chat body); the bearer security scheme, applied to every operation that
needs a key when ``API_KEYS`` or ``ADMIN_KEYS`` is set; tags that group the operations.
Built once per app (the routes do not change once it serves).
"""

from __future__ import annotations

import copy
from typing import Any

from quart_schema.openapi import OpenAPIProvider

from quart_sse import codes
from quart_sse.blueprints import EXTENSION
from quart_sse.http.auth import PUBLIC_PATHS, PUBLIC_PREFIXES

EVENT_SCHEMAS = {
    "session_info": "SessionInfoEvent",
    "status": "StatusEvent",
    "chunk": "ChunkEvent",
    "complete": "CompleteEvent",
    "error": "ErrorEvent",
}
"""Each event type of a stream, and the schema of its ``data``, in the order a stream emits them."""

SESSION_EVENT_SCHEMAS = {"user_message": "UserMessageEvent", **EVENT_SCHEMAS, "reset": "ResetEvent"}
"""Each event type of the session stream (``GET /sessions/{session_id}/events``): a turn's
``user_message``, then its stream's events; ``reset`` when events were missed."""

EVENT_ID_PATTERN = "^[0-9]{0,18}$"
"""The event ids this server issues (quart_sse.sse); anything else is a 400."""

_ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}

STREAM_EXAMPLE = """\
retry: 2000

id: 1
event: session_info
data: {"type": "session_info", "session_id": "3f2a…", "stream_id": "9c41…", "model": "simulated", \
"events_url": "/streams/9c41…/events"}

id: 2
event: status
data: {"type": "status", "message": "Generating response...", "context_messages": 1}

id: 3
event: chunk
data: {"type": "chunk", "text": "Good question. You ", "chunk_number": 1, "is_final": false}

: ping

id: 33
event: complete
data: {"type": "complete", "total_chunks": 30, "processing_time": 1.2153, "message_count": 2, \
"finish_reason": "stop"}"""

SESSION_STREAM_EXAMPLE = """\
retry: 2000

id: 2000000000
event: user_message
data: {"type": "user_message", "session_id": "3f2a…", "stream_id": "9c41…", "turn": 2, \
"message": {"role": "user", "content": "And then?", "timestamp": "2025-06-01T12:00:00.000000Z"}}

id: 2000000001
event: session_info
data: {"type": "session_info", "session_id": "3f2a…", "stream_id": "9c41…", "model": "simulated", \
"events_url": "/streams/9c41…/events"}

id: 2000000002
event: status
data: {"type": "status", "message": "Generating response...", "context_messages": 3, "stream_id": "9c41…"}

id: 2000000003
event: chunk
data: {"type": "chunk", "text": "Thanks for asking. ", "chunk_number": 1, "is_final": false, \
"stream_id": "9c41…"}

id: 2000000032
event: complete
data: {"type": "complete", "total_chunks": 30, "processing_time": 1.2153, "message_count": 4, \
"finish_reason": "stop", "stream_id": "9c41…"}

: ping"""

# When each error body code is answered (docs/API.md, Errors; the status is quart_sse.http.errors').
WHEN = {
    codes.INVALID_JSON: "the body is not JSON, or is JSON nested deeper than the server reads",
    codes.EMPTY_MESSAGE: "`message` is empty or only whitespace",
    codes.INVALID_LAST_EVENT_ID: "the `Last-Event-ID` header (or `last_event_id`) is not an event id "
    "this server issues (digits)",
    codes.UNAUTHORIZED: "`API_KEYS` is set and the request has no valid key: send "
    "`Authorization: Bearer <key>` (answered with `WWW-Authenticate: Bearer`)",
    codes.SESSION_NOT_FOUND: "no such session: unknown, expired (`SESSION_TTL`), or another API "
    "key's (the same answer, so that the ids of others cannot be told from missing ones)",
    codes.STREAM_NOT_FOUND: "no such stream: unknown, expired (`STREAM_RETENTION` seconds after "
    "its end), or another API key's (the same answer)",
    codes.BODY_TIMEOUT: "the request body did not all arrive within `BODY_TIMEOUT` seconds",
    codes.GENERATION_RUNNING: "the session already has a generation running (one at a time per "
    "session) and `if_busy` is `reject` (the default), or with `enqueue` a message already waits "
    "behind it (one at most): wait for its `complete` or `error`, or cancel it",
    codes.NOTHING_TO_REGENERATE: "the session has no user message to answer again",
    codes.SESSION_FULL: "the session holds `MAX_SESSION_MESSAGES` messages (a turn adds two): "
    "start a new session",
    codes.BODY_TOO_LARGE: "the body is larger than `MAX_BODY_BYTES` (declared or received; "
    "checked before it is read as JSON)",
    codes.MESSAGE_TOO_LONG: "`message` is longer than `MAX_MESSAGE_CHARS` characters (code points)",
    codes.RATE_LIMITED: "the client (its API key, else its address) has sent `RATE_LIMIT` messages "
    "in the last minute",
    codes.CAPACITY: "`MAX_STREAMS` generations are running in this server process",
    codes.SHUTTING_DOWN: "the server is shutting down (SIGTERM): try another instance, or again",
    codes.STORE_UNAVAILABLE: "Redis cannot be reached, or did not answer within `REDIS_TIMEOUT` "
    "(the server recovers by itself when it is back)",
    codes.STREAM_GONE: "the stream was deleted while forks still read through it",
    codes.STREAM_EXISTS: "the path holds a stream of another configuration (content type, TTL, "
    "expiry, closure, fork), or another key's stream, or a deleted stream forks still read",
    codes.CONTENT_TYPE_MISMATCH: "the `Content-Type` is not the stream's (or a fork's not its source's)",
    codes.SEQUENCE_CONFLICT: "`Stream-Seq` is not above the stream's last one (compared as bytes)",
    codes.STREAM_CLOSED: "the stream is closed: nothing can be appended (with `Stream-Closed: true`)",
    codes.PRODUCER_STALE_EPOCH: "`Producer-Epoch` is below the producer's current one (a fenced, "
    "zombie producer; the current epoch is in `Producer-Epoch`)",
    codes.PRODUCER_SEQUENCE_GAP: "`Producer-Seq` skips ahead (`Producer-Expected-Seq` and "
    "`Producer-Received-Seq` say where)",
    codes.STREAM_TOO_LARGE: "the stream would hold more than `DURABLE_MAX_STREAM_BYTES` bytes of records",
    codes.TOO_MANY_DURABLE_STREAMS: "the client (its API key's owner, else its address) holds "
    "`DURABLE_MAX_STREAMS_PER_OWNER` durable streams: delete one first",
    codes.DURABLE_STORE_FULL: "the server holds `DURABLE_MAX_STREAMS` durable streams (every client's), "
    "or `DURABLE_MAX_BYTES` of their records (memory store)",
}

EXAMPLE_MESSAGES = {
    codes.INVALID_JSON: "the request body is not JSON",
    codes.INVALID_REQUEST: "query parameter 'limit' must be an integer from 1 to 1000, not 'all'",
    codes.INVALID_LAST_EVENT_ID: "malformed Last-Event-ID: not an event id of this server: 'abc'",
    codes.UNAUTHORIZED: "a valid API key is needed: send 'Authorization: Bearer <key>'",
    codes.SESSION_NOT_FOUND: "no session 3f2a9c0e7b1d4e5fa6b7c8d9e0f1a2b3",
    codes.STREAM_NOT_FOUND: "no stream 9c41e2d3f4a5b6c7d8e9f0a1b2c3d4e5 (unknown or expired)",
    codes.NOTHING_TO_REGENERATE: "session 3f2a9c0e… has no user message to answer again",
    codes.BODY_TIMEOUT: "the request body did not arrive within 60 s (BODY_TIMEOUT; 60 by default)",
    codes.GENERATION_RUNNING: "session 3f2a9c0e7b1d4e5fa6b7c8d9e0f1a2b3 already has a generation running "
    "(stream 9c41e2d3f4a5b6c7d8e9f0a1b2c3d4e5); wait for it to end or cancel it",
    codes.BODY_TOO_LARGE: "the request body is larger than 1048576 bytes (MAX_BODY_BYTES)",
    codes.RATE_LIMITED: "more than 20 messages in a minute from this client (RATE_LIMIT); try again in 3 s",
    codes.TOO_MANY_STREAMS: "this client has 4 streams open (MAX_STREAMS_PER_CLIENT); close one or try "
    "again when one ends",
    codes.CAPACITY: "10000 streams are generating (MAX_STREAMS); try again",
    codes.STORE_UNAVAILABLE: "the store (Redis) is unreachable; try again shortly",
}
"""An example of the message of the first code of each refusal (the server's words)."""

CHAT_INVALID = (
    "the body is not a JSON object; `message` is missing or not a string; `session_id` is "
    "not a string or null, or is an empty string; a string is not valid Unicode (a lone surrogate "
    'such as `"\\ud83d"`); `if_busy` is not `reject`, `enqueue`, `interrupt` or null. No '
    "coercion: `42`, `true` or a list for a string field is refused"
)
LIST_INVALID = (
    "`limit` is not an integer from 1 to 1000, `cursor` is not a `next_cursor` this server "
    "gave, or either is given more than once"
)
STREAMS_PER_CLIENT = "the client has `MAX_STREAMS_PER_CLIENT` stream responses open"
GENERATIONS_PER_CLIENT = (
    "the client has `MAX_STREAMS_PER_CLIENT` stream responses open, or as many generations running"
)

Codes = tuple[tuple[str, str], ...]
"""Error codes, each with when it is answered."""


def _codes(*names: str) -> Codes:
    return tuple((name, WHEN[name]) for name in names)


_STORE = _codes(codes.STORE_UNAVAILABLE)
_CHAT: dict[int, Codes] = {
    400: (
        *_codes(codes.INVALID_JSON),
        (codes.INVALID_REQUEST, CHAT_INVALID),
        *_codes(codes.EMPTY_MESSAGE),
    ),
    404: (
        (codes.SESSION_NOT_FOUND, "`session_id` names no session: unknown, expired, or another API key's"),
    ),
    408: _codes(codes.BODY_TIMEOUT),
    409: _codes(codes.GENERATION_RUNNING, codes.SESSION_FULL),
    413: _codes(codes.BODY_TOO_LARGE, codes.MESSAGE_TOO_LONG),
    429: (*_codes(codes.RATE_LIMITED), (codes.TOO_MANY_STREAMS, GENERATIONS_PER_CLIENT)),
    503: _codes(codes.CAPACITY, codes.SHUTTING_DOWN, codes.STORE_UNAVAILABLE),
}
_SESSION: dict[int, Codes] = {404: _codes(codes.SESSION_NOT_FOUND), 503: _STORE}
CANCEL_TIMEOUT = (
    "Redis cannot be reached, or the instance running the generation did not end it within "
    "3 × `HEARTBEAT_INTERVAL` + 5 seconds (it may be overloaded): try again"
)

DURABLE = "/v1/stream/{path}"
_DURABLE_INVALID = (
    (
        codes.INVALID_REQUEST,
        "a header or query parameter of the protocol is malformed (an offset, a "
        "number, a time), or the path is empty or longer than 1024 characters",
    ),
)
_DURABLE_READ: dict[int, Codes] = {
    400: _DURABLE_INVALID,
    404: ((codes.STREAM_NOT_FOUND, "no such stream: unknown, expired, deleted, or another API key's"),),
    410: _codes(codes.STREAM_GONE),
    503: _STORE,
}
_DURABLE: dict[str, dict[int, Codes]] = {
    "put": {
        400: _DURABLE_INVALID,
        404: ((codes.STREAM_NOT_FOUND, "`Stream-Forked-From` names no stream the caller sees"),),
        408: _codes(codes.BODY_TIMEOUT),
        409: _codes(codes.STREAM_EXISTS, codes.CONTENT_TYPE_MISMATCH),
        413: _codes(codes.BODY_TOO_LARGE, codes.STREAM_TOO_LARGE),
        429: _codes(codes.RATE_LIMITED, codes.TOO_MANY_DURABLE_STREAMS),
        503: _STORE,
        507: _codes(codes.DURABLE_STORE_FULL),
    },
    "post": {
        400: (*_DURABLE_INVALID, *_codes(codes.INVALID_JSON)),
        403: _codes(codes.PRODUCER_STALE_EPOCH),
        404: _DURABLE_READ[404],
        405: ((codes.METHOD_NOT_ALLOWED, "a chat answer's stream (`chat/{stream_id}`) is read-only"),),
        408: _codes(codes.BODY_TIMEOUT),
        409: _codes(
            codes.STREAM_CLOSED,
            codes.CONTENT_TYPE_MISMATCH,
            codes.SEQUENCE_CONFLICT,
            codes.PRODUCER_SEQUENCE_GAP,
        ),
        410: _codes(codes.STREAM_GONE),
        413: _codes(codes.BODY_TOO_LARGE, codes.STREAM_TOO_LARGE),
        429: _codes(codes.RATE_LIMITED),
        503: _STORE,
    },
    "get": {**_DURABLE_READ, 429: ((codes.TOO_MANY_STREAMS, STREAMS_PER_CLIENT),)},
    "head": _DURABLE_READ,
    "delete": _DURABLE_READ,
}

ERRORS: dict[tuple[str, str], dict[int, Codes]] = {
    ("/chat", "post"): _CHAT,
    ("/chat/stream", "post"): _CHAT,
    ("/streams/{stream_id}/events", "get"): {
        400: _codes(codes.INVALID_LAST_EVENT_ID),
        404: _codes(codes.STREAM_NOT_FOUND),
        429: ((codes.TOO_MANY_STREAMS, STREAMS_PER_CLIENT),),
        503: _STORE,
    },
    ("/streams/{stream_id}/cancel", "post"): {
        404: _codes(codes.STREAM_NOT_FOUND),
        503: ((codes.STORE_UNAVAILABLE, CANCEL_TIMEOUT),),
    },
    ("/sessions/{session_id}/events", "get"): {
        400: _codes(codes.INVALID_LAST_EVENT_ID),
        404: _codes(codes.SESSION_NOT_FOUND),
        429: ((codes.TOO_MANY_STREAMS, STREAMS_PER_CLIENT),),
        503: _STORE,
    },
    ("/sessions/{session_id}/regenerate", "post"): {
        400: (
            (codes.INVALID_REQUEST, "the query parameter `stream` is not `true` or `false` (or `1`, `0`)"),
            *_codes(codes.NOTHING_TO_REGENERATE),
        ),
        404: _codes(codes.SESSION_NOT_FOUND),
        408: _codes(codes.BODY_TIMEOUT),
        409: ((codes.GENERATION_RUNNING, "the session is generating an answer: wait for it, or cancel it"),),
        413: _codes(codes.BODY_TOO_LARGE),
        429: (*_codes(codes.RATE_LIMITED), (codes.TOO_MANY_STREAMS, GENERATIONS_PER_CLIENT)),
        503: _codes(codes.CAPACITY, codes.SHUTTING_DOWN, codes.STORE_UNAVAILABLE),
    },
    **{(DURABLE, method): errors for method, errors in _DURABLE.items()},
    ("/sessions/new", "post"): {503: _STORE},
    ("/sessions", "get"): {400: ((codes.INVALID_REQUEST, LIST_INVALID),), 503: _STORE},
    ("/sessions/{session_id}", "get"): _SESSION,
    ("/sessions/{session_id}", "delete"): _SESSION,
    ("/sessions/{session_id}/clear", "post"): _SESSION,
    ("/health", "get"): {503: _STORE},
    ("/stats", "get"): {503: _STORE},
    ("/metrics", "get"): {503: _STORE},
}
"""The refusals of each operation: status, then its codes in the order they are checked."""

STATUS_TITLE = {
    400: "Bad request",
    401: "No valid API key",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Body too slow",
    409: "Conflict",
    413: "Too large",
    410: "Gone",
    429: "Too many requests (with `Retry-After`)",
    501: "Not implemented",
    503: "Unavailable (with `Retry-After`)",
    507: "Insufficient storage",
}

_IF_BUSY = (
    "`if_busy` says what happens when the session is already generating an answer: `reject` (the "
    "default) answers 409 `generation_running`; `enqueue` accepts the message at once, and its "
    "answer starts when the running one ends (its `status` event then has `queued: true` and "
    "`waited`, in seconds; one waiting message per session, a second gets 409); `interrupt` "
    "cancels the running answer wherever it runs (its stream ends with an `error` event of code "
    "`interrupted`, its partial answer kept) and drops a waiting message, then this one starts.\n\n"
)

_CHAT_CHECKS = (
    "Refusals are JSON (`ErrorBody`) and come before any stream; when several apply, the first of "
    "401, 413 `body_too_large`, 408 `body_timeout`, 400, 413 `message_too_long`, 404, 409, 429, 503 "
    "answers (a too-long message to an unknown session is 413, not 404), and a "
    "refused request changes nothing (no session, message or stream is left behind)."
)

EDGE: dict[tuple[str, str], tuple[str, str]] = {
    ("/chat/stream", "post"): (
        "Send a message and read the answer as it is generated (text/event-stream)",
        "Starts a generation, the model's answer to `message` in the session `session_id` (absent "
        "or null: a new session), and answers with its stream: `retry: 2000`, then the events "
        "`session_info`, `status`, `chunk`... and, last, exactly one `complete` or `error`; then the "
        "response ends. Each event's `data` is one line of JSON whose `type` is the event's name; "
        "their shapes are the schemas `SessionInfoEvent`, `StatusEvent`, `ChunkEvent`, "
        "`CompleteEvent` and `ErrorEvent`.\n\n"
        "The generation runs to its end whether or not anyone reads the response, and the answer "
        "is saved in the session before the final event goes out. If the connection drops, read "
        "the rest with `GET /streams/{stream_id}/events` and `Last-Event-ID` set to the last id "
        "received (the `stream_id` is in `session_info`, the first event: a connection lost before "
        "it cannot be resumed; sending the message again would start a second generation).\n\n"
        + _IF_BUSY
        + _CHAT_CHECKS,
    ),
    ("/chat", "post"): (
        "Send a message; answers at once with the stream to read (for EventSource clients)",
        "Starts a generation as `POST /chat/stream` does, with the same checks, and answers `202` "
        "at once with `session_id`, `stream_id` and `events_url`, for clients that can only GET a "
        "stream, such as a browser's `EventSource`: read the answer from `events_url` "
        "(`GET /streams/{stream_id}/events`). A message that waits behind the running answer "
        "(`if_busy: enqueue`) is answered `202` too, with `queued: true`.\n\n" + _IF_BUSY + _CHAT_CHECKS,
    ),
    ("/streams/{stream_id}/events", "get"): (
        "Read a stream (text/event-stream): replay after Last-Event-ID, then live",
        "The events of one generation, as `POST /chat/stream` sends them. With a `Last-Event-ID` "
        "header (or `?last_event_id=`, for clients that cannot set headers; the header wins when "
        "both are there) it first replays every event whose id comes after that id, then goes on "
        "live; without one it starts from the first event. Each event comes once and in order; "
        "any number of readers may read one stream, each from its own position.\n\n"
        "A finished stream stays readable for `STREAM_RETENTION` seconds (default 600). When it has "
        "ended and nothing follows the given id the answer is `204`, with no body: an "
        "`EventSource` then stops reconnecting. `HEAD` answers as `GET` would, without a body.\n\n"
        "With `API_KEYS` set the key may come as `?access_token=` instead of `Authorization` "
        "(an `EventSource` cannot send headers).",
    ),
    ("/sessions/{session_id}/events", "get"): (
        "Follow a session (text/event-stream): every turn, from any client or instance",
        "One long-lived stream that carries everything that happens in the session, turn after "
        "turn, whichever client sent the message and whichever instance runs its answer. Each "
        "turn opens with a `user_message` event (the message, its `turn` number and the "
        "`stream_id` of its answer; `queued: true` for a message that waits behind the running "
        "answer, `regenerate: true` for a regenerate); that answer's events follow as its own "
        "stream has them (`session_info`, `status`, `chunk`... then `complete` or `error`), each "
        "with `stream_id` added. Between turns it carries `: ping` comments; it ends when the "
        "session is deleted.\n\n"
        "Event ids are `turn × 1000000000 + k`: `k` = 0 is the turn's `user_message`, `k` ≥ 1 is "
        "event `k` of the turn's stream. They increase strictly, so `Last-Event-ID` (or "
        "`?last_event_id=`; the header wins) resumes exactly once, between turns or mid-answer. "
        "Without one the stream starts with the turn being generated (or waiting), from its "
        "`user_message`, else with the next turn.\n\n"
        "A resume from a turn the server no longer holds (its stream is past `STREAM_RETENTION`, "
        "or it is older than the session's last 100 turns) gets one `reset` event, with no `id`: "
        "reload the session (`GET /sessions/{session_id}`); the stream then goes on from the "
        "turn being generated, else the next. `HEAD` answers as `GET` would, without a body.",
    ),
    ("/sessions/{session_id}/regenerate", "post"): (
        "Replace the session's last answer with a new one",
        "Answers the session's last user message again: its last answer is dropped from the "
        "session (and from the history the model sees), and a new generation starts. The request "
        "body is ignored. Answers as `POST /chat` does, `202` with the new stream to read, or with "
        "`?stream=true` as `POST /chat/stream` does, with the stream itself. On the session stream "
        "the turn's `user_message` carries `regenerate: true`.\n\n"
        "Refused with 409 while the session is generating (cancel first), with 400 "
        "`nothing_to_regenerate` when it has no user message; a refused request changes nothing.",
    ),
    (DURABLE, "put"): (
        "Create a Durable Stream (or fork one)",
        "Creates the stream at `path` with the request's `Content-Type` (default "
        "`application/octet-stream`; `application/json` streams keep message boundaries) and the "
        "body, if any, as its first content: `201` with `Location`. `Stream-TTL` (seconds since "
        "its last read or write) or `Stream-Expires-At` (RFC 3339) makes it expire; "
        "`Stream-Closed: true` creates it closed; `Stream-Forked-From` (a path), with "
        "`Stream-Fork-Offset`, forks another stream. The same create again answers `200`; "
        "another configuration `409`. The stream belongs to the API key that created it. "
        "Limits: `DURABLE_MAX_STREAMS_PER_OWNER` streams per client (429), `DURABLE_MAX_STREAMS` "
        "in all and `DURABLE_MAX_BYTES` of records (507), `DURABLE_MAX_STREAM_BYTES` per stream (413); "
        "a create counts under `RATE_LIMIT`.",
    ),
    (DURABLE, "post"): (
        "Append to a Durable Stream, or close it",
        "Appends the body (an `application/json` array appends each element as a message) and "
        "answers `204` with `Stream-Next-Offset`. `Stream-Closed: true` closes the stream (with "
        "or without a body). `Stream-Seq` must increase; `Producer-Id`, `Producer-Epoch` and "
        "`Producer-Seq` make appends idempotent (`200` for new data, `204` for a duplicate) and "
        "fence stale producers (`403`). Each append counts under `RATE_LIMIT`.",
    ),
    (DURABLE, "get"): (
        "Read a Durable Stream by offset: catch-up, long-poll or SSE",
        "`offset` (from `Stream-Next-Offset`; `-1` the start, `now` the tail) reads what follows "
        "it, with `Stream-Next-Offset`, `Stream-Up-To-Date` and an `ETag` (`If-None-Match` gives "
        "`304`). `live=long-poll` waits up to `DURABLE_LONG_POLL_TIMEOUT` seconds for data "
        "(`204` if none came); `live=sse` streams `data` and `control` events for about a "
        "minute. `chat/{stream_id}` is a chat answer, its events' data as JSON messages, closed "
        "when the answer ends.",
    ),
    (DURABLE, "head"): (
        "A Durable Stream's tail, content type and expiry",
        "`200` with `Content-Type`, `Stream-Next-Offset` (the tail), `Stream-TTL` or "
        "`Stream-Expires-At`, `Stream-Closed`, and no body.",
    ),
    (DURABLE, "delete"): (
        "Delete a Durable Stream",
        "`204`: the stream and its data are gone (a stream that forks read through answers "
        "`410` until the last fork goes).",
    ),
}
"""Summary and description of each edge route (Quart never sees them)."""

MORE: dict[tuple[str, str], str] = {
    ("/", "get"): "`endpoints` lists every route as `METHOD /path`. Needs a key when `API_KEYS` is set.",
    ("/sessions/new", "post"): (
        "Answers `201` with its id. With `API_KEYS` set, the session belongs to the caller's key. "
        "`POST /chat` or `POST /chat/stream` without `session_id` creates one as well."
    ),
    ("/sessions/{session_id}", "get"): (
        "Its messages, oldest first: the user's (`role` `user`) and the model's answers (`model`). "
        "`generating` is the stream id of the generation running in it, or null; `queued` the "
        "stream id of a message waiting behind it (`if_busy: enqueue`), or null."
    ),
    ("/sessions/{session_id}", "delete"): (
        "The session and its history are gone, and its session streams end. A generation running "
        "in it, on whichever instance, and a message waiting behind it are cancelled first: their "
        "streams end with an `error` event of code `cancelled`."
    ),
    ("/sessions/{session_id}/clear", "post"): (
        "The session (its id, its owner) stays, with no messages. A generation running in it, on "
        "whichever instance, and a message waiting behind it are cancelled first: their streams "
        "end with an `error` event of code `cancelled`."
    ),
    ("/stats", "get"): (
        "Counters since this process started, and what it holds now; `cluster` adds up every "
        "instance on one Redis."
    ),
    ("/metrics", "get"): (
        "The figures of `GET /stats`, named `quart_sse_...`, for Prometheus to scrape, with "
        "histograms of time to first chunk, stream duration and request duration, requests by "
        "route template, method, status and error code, and the process's own figures."
    ),
    ("/demo", "get"): (
        "A chat page that uses this API like any client (`POST /chat`, then `EventSource` on "
        "`events_url`). No key is needed to load it; it asks for one when the server has `API_KEYS`."
    ),
}
"""Descriptions of Quart routes whose docstring has only a summary (a longer docstring wins)."""

NOT_JSON = {
    ("/demo", "get"): {
        "description": "The demo page.",
        "content": {"text/html": {"schema": {"type": "string"}}},
    },
    ("/metrics", "get"): {
        "description": "The figures in Prometheus text format (version 0.0.4).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}
"""The answers that are not JSON, which quart-schema cannot know."""

TAGS = (
    ("chat", "Send a message; the answer comes as a stream of Server-Sent Events."),
    ("streams", "Read, resume and cancel the stream of a generation."),
    ("sessions", "Conversations: each keeps its messages, which the model sees as context."),
    (
        "durable",
        "Durable Streams (the open protocol of durable-streams.com): append-only streams "
        "of your own, and every chat answer, read by offset by any of its clients.",
    ),
    ("system", "The server: what it runs, its health and figures, the demo page."),
)


def tag_of(path: str) -> str:
    """The tag that groups an operation on ``path`` in /docs."""
    for prefix, tag in (
        ("/chat", "chat"),
        ("/streams/", "streams"),
        ("/sessions", "sessions"),
        ("/v1/stream/", "durable"),
    ):
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return tag
    return "system"


def overview(max_chars: int) -> str:
    """The API's description (``info.description``)."""
    return f"""\
Stream LLM chat answers over Server-Sent Events, resumable with `Last-Event-ID`.

A chat message starts a **generation**, which runs to its end whether or not anyone is \
listening; its events go into the stream's log, and any number of readers read that log, each \
from its own position. `POST /chat/stream` answers with the stream at once; `POST /chat` answers \
`202` with the stream's `events_url`, for `GET /streams/{{stream_id}}/events` (the way a \
browser's `EventSource` reads it). Either way a reader whose connection drops reconnects with \
`Last-Event-ID` and gets exactly the events it missed, then the rest live. \
`GET /sessions/{{session_id}}/events` follows a whole session instead: every turn, from any \
client, each opened by a `user_message` event. A message sent while the session is generating \
is refused (409), queued or made to interrupt the running answer, as its `if_busy` says.

**Streams** (`text/event-stream`) begin with `retry: <ms>`. Each event has `id` (opaque, \
strictly increasing within the stream: a reader sends the last one back to resume), `event` \
(equal to `data.type`) and `data` (one line of JSON). Events come in this order: \
`session_info`, `status`, `chunk` (any number), then exactly one `complete` or `error`, and the \
response ends. A quiet stream carries `: ping` comments every `HEARTBEAT_INTERVAL` seconds. \
Whatever was generated before an `error` is kept in the session, marked `interrupted`.

**Errors** that are not streams have the body `{{"error": {{"code", "message"}}}}`: each \
operation lists its statuses and codes. When several apply, the first of 401, 413 \
`body_too_large`, 408 `body_timeout`, 400, 413 `message_too_long`, 404, 409, 429, 503 answers, \
and a refused request changes nothing. On every route: 405 \
`method_not_allowed` (with `Allow`) for a method the path does not take, 408 `body_timeout` for a \
body that does not arrive within `BODY_TIMEOUT` seconds, 413 `body_too_large` past \
`MAX_BODY_BYTES`. A chat `message` holds at most {max_chars} characters here (`MAX_MESSAGE_CHARS`).

**Keys and ownership.** With `API_KEYS` set, every route but `/health`, `/docs`, `/openapi.json` \
and `/demo` needs `Authorization: Bearer <key>` (401 `unauthorized` without a valid one). Each \
session, and every stream started in it, belongs to the key that created it: another key gets \
the 404 an unknown id gets, and `GET /sessions` lists only the caller's own. Keys in \
`ADMIN_KEYS` see and act on every session. Without `API_KEYS` the server is single-user: every \
session is visible to every client."""


class SSEOpenAPIProvider(OpenAPIProvider):
    """quart-schema's generator, completed (see the module); built once, not on every request
    of /openapi.json."""

    _built: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        if self._built is None:
            self._built = self._schema()
        return self._built

    def _schema(self) -> dict[str, Any]:
        from quart_schema.conversion import model_schema

        from quart_sse.blueprints import schemas

        settings = self._app.extensions[EXTENSION].settings
        spec: dict[str, Any] = super().schema()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for name in (
            *SESSION_EVENT_SCHEMAS.values(),
            "ChatRequest",
            "ChatAccepted",
            "ErrorBody",
            "ErrorDetail",
        ):
            found = model_schema(getattr(schemas, name), preference=None, schema_mode="serialization")
            components.update(found.pop("$defs", {}))  # nested shapes: their refs point at components
            components[name] = found
        paths = spec.setdefault("paths", {})
        for operations in paths.values():
            for operation in operations.values():
                _whole_summary(operation)
        for (path, method), (summary, description) in EDGE.items():
            paths.setdefault(path, {})[method] = self._edge_operation(path, method, summary, description)
        self._chat_limits(components["ChatRequest"], settings.max_message_chars)
        keys = bool(settings.api_keys or settings.admin_keys)
        for path, operations in paths.items():
            for method, operation in operations.items():
                self._complete(path, method, operation, keys)
        spec["tags"] = [{"name": name, "description": text} for name, text in TAGS]
        spec.setdefault("info", {})["description"] = overview(settings.max_message_chars)
        spec["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A key of `API_KEYS` or `ADMIN_KEYS`, needed on every route but "
                "`/health`, `/docs`, `/openapi.json` and `/demo` when the server sets `API_KEYS`. "
                "The stream reads (`GET /streams/{stream_id}/events`, `GET /sessions/{session_id}/events`) "
                "also take it as `?access_token=`.",
            }
        }
        return spec

    @staticmethod
    def _complete(path: str, method: str, operation: dict[str, Any], keys: bool) -> None:
        """Tag, description, refusals and security of one operation."""
        operation.setdefault("tags", [tag_of(path)])
        if operation.get("summary"):  # shown as plain text: no Markdown (docstrings' ``code``)
            operation["summary"] = operation["summary"].replace("`", "").rstrip(".")
        description = (operation.get("description") or "").strip()
        operation["description"] = description or MORE.get((path, method), "")
        if not operation["description"]:
            del operation["description"]
        # quart-schema keys responses by int; JSON has strings: one key per status.
        responses = {str(status): response for status, response in operation.get("responses", {}).items()}
        if not responses:  # the answers that are not JSON
            responses["200"] = copy.deepcopy(NOT_JSON.get((path, method), {"description": "Done."}))
        for status, found in ERRORS.get((path, method), {}).items():
            responses[str(status)] = refusal(status, found)
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if keys and not public:
            operation["security"] = [{"bearer": []}]
            responses["401"] = refusal(401, _codes(codes.UNAUTHORIZED))
        operation["responses"] = dict(sorted(responses.items()))

    def _edge_operation(self, path: str, method: str, summary: str, description: str) -> dict[str, Any]:
        operation: dict[str, Any] = {"summary": summary, "description": description, "tags": [tag_of(path)]}
        if path == DURABLE:
            return durable_operation(method, operation)
        operation["operationId"] = {
            "/chat": "post_chat",
            "/chat/stream": "post_chat_stream",
            "/streams/{stream_id}/events": "get_stream_events",
            "/sessions/{session_id}/events": "get_session_events",
            "/sessions/{session_id}/regenerate": "post_session_regenerate",
        }[path]
        accepted = {
            "description": "Accepted: the generation has started (or, with `queued`, waits behind "
            "the running answer); read it from `events_url`.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatAccepted"}}},
        }
        if path == "/sessions/{session_id}/regenerate":
            operation["parameters"] = [session_parameter(), regenerate_stream_parameter()]
            operation["responses"] = {
                "200": event_stream(),
                "202": {
                    **accepted,
                    "description": "Without `?stream=true`: the new generation has "
                    "started; read it from `events_url`.",
                },
            }
            return operation
        if path == "/sessions/{session_id}/events":
            header, query_id, token = stream_parameters()[1:4]
            header["description"] = (
                "Resume after this event id (a turn and a place in it): what follows it is replayed, "
                "then the stream goes on live. Absent or empty: from the turn being generated (or "
                "waiting), else from the next turn."
            )
            operation["parameters"] = [session_parameter(), header, query_id, token]
            operation["responses"] = {"200": event_stream(SESSION_EVENT_SCHEMAS, SESSION_STREAM_EXAMPLE)}
            return operation
        if method == "post":
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ChatRequest"},
                        "examples": {
                            "new session": {"value": {"message": "What is SSE?"}},
                            "next turn": {
                                "value": {"message": "And then?", "session_id": "3f2a9c0e" + "0" * 24}
                            },
                            "after the running answer": {
                                "value": {
                                    "message": "And then?",
                                    "session_id": "3f2a9c0e" + "0" * 24,
                                    "if_busy": "enqueue",
                                }
                            },
                        },
                    }
                },
            }
        if path == "/chat":
            operation["responses"] = {"202": accepted}
            return operation
        operation["responses"] = {"200": event_stream()}
        if method == "get":
            operation["parameters"] = stream_parameters()
            operation["responses"]["204"] = {
                "description": "The stream has ended and no event follows the given id (no body): "
                "an `EventSource` stops reconnecting."
            }
        return operation

    @staticmethod
    def _chat_limits(request: dict[str, Any], max_chars: int) -> None:
        """What the chat routes check by hand (docs/API.md, Errors), said in the schema."""
        fields = request["properties"]
        fields["message"].update(minLength=1, maxLength=max_chars, pattern=r"\S")
        fields["session_id"]["anyOf"][0].update(minLength=1)


def _whole_summary(operation: dict[str, Any]) -> None:
    """quart-schema takes a docstring's first line as the summary: a first sentence that runs
    on to the next lines is joined back, and the description starts after it."""
    description = operation.get("description") or ""
    if operation.get("summary") and description and not description.startswith("\n"):
        more, _, rest = description.partition("\n\n")
        operation["summary"] = " ".join([operation["summary"], *more.split()])
        operation["description"] = rest


def refusal(status: int, found: Codes) -> dict[str, Any]:
    """The response object of one refusal status, its codes listed with when each answers."""
    lines = "\n".join(f"- `{code}`: {when}" for code, when in found)
    code = found[0][0]
    example = {"error": {"code": code, "message": EXAMPLE_MESSAGES.get(code, "what went wrong")}}
    response: dict[str, Any] = {
        "description": f"{STATUS_TITLE[status]}.\n\n{lines}",
        "content": {"application/json": {"schema": _ERROR_BODY, "example": example}},
    }
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}
    return response


def event_stream(schemas: dict[str, str] = EVENT_SCHEMAS, example: str = STREAM_EXAMPLE) -> dict[str, Any]:
    """The ``200`` response of a streaming route: one SSE stream, its events' shapes
    (``schemas``: event type to schema name; ``example``: the stream as sent)."""
    session = "reset" in schemas  # the session stream: its reset has no id
    data = {
        "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in schemas.values()],
        "discriminator": {
            "propertyName": "type",
            "mapping": {kind: f"#/components/schemas/{name}" for kind, name in schemas.items()},
        },
    }
    shown = "A turn, as sent" if session else "A short answer, as sent"
    return {
        "description": "The stream (Server-Sent Events). It begins with `retry: 2000` (`SSE_RETRY_MS`); "
        "each event has `id`, `event` (equal to `data.type`) and `data`, one line of JSON shaped as "
        "the schema of its type; a quiet stream carries `: ping` comments. The schema below "
        f"describes one event. {shown}:\n\n```\n" + example + "\n```",
        "headers": {
            "Cache-Control": {
                "description": "No cache keeps a copy.",
                "schema": {"type": "string", "const": "no-cache"},
            },
            "X-Accel-Buffering": {
                "description": "Tells nginx-like proxies not to buffer the stream.",
                "schema": {"type": "string", "const": "no"},
            },
        },
        "content": {
            "text/event-stream": {
                "example": {
                    "id": "3",
                    "event": "chunk",
                    "data": '{"type": "chunk", "text": "Good question. You ", "chunk_number": 1, '
                    '"is_final": false}',
                },
                # OpenAPI 3.1 has no schema for a sequence of events: this is one of them.
                "schema": {
                    "title": "ServerSentEvent",
                    "description": "One event of the stream.",
                    "type": "object",
                    "required": ["event", "data"] if session else ["id", "event", "data"],
                    "properties": {
                        "id": {
                            "type": "string",
                            "pattern": EVENT_ID_PATTERN,
                            "description": (
                                "`turn × 1000000000 + k` (`k` = 0: the turn's `user_message`; `k` ≥ 1: "
                                "event `k` of its stream), strictly increasing; absent on `reset` only. "
                                if session
                                else "Strictly increasing within the stream; "
                            )
                            + "send the last one received back as `Last-Event-ID` to resume after it.",
                        },
                        "event": {"enum": list(schemas), "description": "Equal to `data.type`."},
                        "data": {
                            "type": "string",
                            "description": "One line of JSON, one of the event schemas (by `type`).",
                            "contentMediaType": "application/json",
                            "contentSchema": data,
                        },
                    },
                },
            }
        },
    }


def session_parameter() -> dict[str, Any]:
    """The ``session_id`` path parameter of the edge's session routes."""
    return {
        "name": "session_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "From `POST /sessions/new`, `POST /chat`'s answer or `session_info`.",
    }


def regenerate_stream_parameter() -> dict[str, Any]:
    """The ``stream`` query parameter of ``POST /sessions/{session_id}/regenerate``."""
    return {
        "name": "stream",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": "`true` (or `1`): answer with the stream itself, as `POST /chat/stream`; "
        "`false` (or `0`, or absent): `202` with the stream to read, as `POST /chat`.",
    }


def durable_operation(method: str, operation: dict[str, Any]) -> dict[str, Any]:
    """An operation of ``/v1/stream/{path}``: its parameters, request body and answers."""
    path = {
        "name": "path",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 1024},
        "description": "The stream's name, slashes allowed (`chat/{stream_id}`: a chat answer, read-only).",
    }
    operation["operationId"] = f"{method}_durable_stream"
    operation["parameters"] = [path]
    offset = {"type": "string", "examples": ["-1", "now", "0000000000000000_0000000000000003"]}
    headers = {
        "Stream-Next-Offset": {
            "description": "The offset after this answer's data.",
            "schema": {"type": "string"},
        },
    }
    raw = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    if method in ("put", "post"):
        operation["requestBody"] = {"required": method == "post", "content": raw}
    if method == "put":
        operation["responses"] = {
            "201": {"description": "Created.", "headers": headers},
            "200": {
                "description": "It exists with this configuration (nothing changed).",
                "headers": headers,
            },
        }
    elif method == "post":
        operation["responses"] = {
            "204": {"description": "Appended (or closed).", "headers": headers},
            "200": {"description": "Appended by an idempotent producer.", "headers": headers},
        }
    elif method == "get":
        operation["parameters"] += [
            {"name": "offset", "in": "query", "required": False, "schema": offset},
            {"name": "live", "in": "query", "required": False, "schema": {"enum": ["long-poll", "sse"]}},
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
        ]
        operation["responses"] = {
            "200": {
                "description": "The data after `offset` (the stream's content type; an "
                "`application/json` stream answers a JSON array), or with `live=sse` an event stream.",
                "headers": headers,
                "content": {**raw, "text/event-stream": {"schema": {"type": "string"}}},
            },
            "204": {"description": "`live=long-poll`: no data came in time.", "headers": headers},
            "304": {"description": "`If-None-Match` matched: nothing changed."},
        }
    elif method == "head":
        operation["responses"] = {
            "200": {"description": "The stream's metadata, no body.", "headers": headers}
        }
    else:
        operation["responses"] = {"204": {"description": "Deleted."}}
    return operation


def stream_parameters() -> list[dict[str, Any]]:
    """The parameters of ``GET /streams/{stream_id}/events`` (the path's, the two ways to give
    ``Last-Event-ID``, ``access_token``)."""
    event_id = {"type": "string", "pattern": EVENT_ID_PATTERN}
    return [
        {
            "name": "stream_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "From `session_info`, or from `POST /chat`'s answer.",
        },
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": event_id,
            "description": "Resume after this event id: the events after it are replayed, then the "
            "stream goes on live. Absent or empty: from the first event.",
        },
        {
            "name": "last_event_id",
            "in": "query",
            "required": False,
            "schema": event_id,
            "description": "The same, for clients that cannot set headers (the header wins).",
        },
        {
            "name": "access_token",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "With `API_KEYS` set: the key, for clients that cannot send "
            "`Authorization` (an `EventSource`); the header wins.",
        },
    ]

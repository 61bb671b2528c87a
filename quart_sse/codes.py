"""Error codes (docs/API.md, Errors and Streams) and the domain exceptions that carry them.

Framework-free: the engine, the stores and the providers raise :class:`Refused` and its
kinds; only the HTTP edge (:mod:`quart_sse.http.errors`) maps a code to an HTTP status.
"""

from __future__ import annotations

# Codes of error bodies (HTTP answers).
INVALID_JSON = "invalid_json"
INVALID_REQUEST = "invalid_request"
EMPTY_MESSAGE = "empty_message"
INVALID_LAST_EVENT_ID = "invalid_last_event_id"
UNAUTHORIZED = "unauthorized"
SESSION_NOT_FOUND = "session_not_found"
STREAM_NOT_FOUND = "stream_not_found"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
GENERATION_RUNNING = "generation_running"
SESSION_FULL = "session_full"
BODY_TOO_LARGE = "body_too_large"
BODY_TIMEOUT = "body_timeout"
MESSAGE_TOO_LONG = "message_too_long"
CAPACITY = "capacity"
RATE_LIMITED = "rate_limited"
TOO_MANY_STREAMS = "too_many_streams"
SHUTTING_DOWN = "shutting_down"
STORE_UNAVAILABLE = "store_unavailable"
INTERNAL = "internal_error"
NOTHING_TO_REGENERATE = "nothing_to_regenerate"

# Codes of the Durable Streams protocol (/v1/stream/, docs/API.md "Durable Streams").
STREAM_GONE = "stream_gone"  # 410: deleted while forks still read through it
STREAM_EXISTS = "stream_exists"  # 409: another configuration, or another key's stream
CONTENT_TYPE_MISMATCH = "content_type_mismatch"  # 409
SEQUENCE_CONFLICT = "sequence_conflict"  # 409: Stream-Seq not above the last one
STREAM_CLOSED = "stream_closed"  # 409: appended to after its close
PRODUCER_STALE_EPOCH = "producer_stale_epoch"  # 403: a fenced (zombie) producer
PRODUCER_SEQUENCE_GAP = "producer_sequence_gap"  # 409
STREAM_TOO_LARGE = "stream_too_large"  # 413: the append would pass DURABLE_MAX_STREAM_BYTES
TOO_MANY_DURABLE_STREAMS = "too_many_durable_streams"  # 429: DURABLE_MAX_STREAMS_PER_OWNER
DURABLE_STORE_FULL = "durable_store_full"  # 507: DURABLE_MAX_STREAMS

# Codes of ``error`` stream events (docs/API.md, Streams); ``rate_limited`` and
# ``store_unavailable`` serve both.
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"
MODEL_UNAVAILABLE = "model_unavailable"
AUTH = "auth"
MODEL_ERROR = "model_error"
TIMEOUT = "timeout"


class Refused(Exception):
    """A request the server cannot serve: an docs/API.md ``code``, a ``message`` for people, and,
    for refusals that pass, ``retry_after`` (seconds) after which to try again."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _cut(an_id: str) -> str:
    """An id a client sent, as a message may repeat it (ids this server issues are 32 hex
    digits): at most 64 characters, and escaped (``\x1b``, ``\u202e``) when it holds a
    control, format or separator character, which a client printing the message would
    otherwise pass raw to its terminal."""
    if not an_id.isprintable():
        an_id = an_id.encode("unicode_escape", "backslashreplace").decode("ascii")
    return an_id if len(an_id) <= 64 else an_id[:63] + "…"


class SessionNotFound(Refused):
    def __init__(self, session_id: str) -> None:
        super().__init__(SESSION_NOT_FOUND, f"no session {_cut(session_id)}")


class StreamNotFound(Refused):
    def __init__(self, stream_id: str) -> None:
        super().__init__(STREAM_NOT_FOUND, f"no stream {_cut(stream_id)} (unknown or expired)")


class GenerationRunning(Refused):
    """The session's one generation slot is taken (by ``stream_id``)."""

    def __init__(self, session_id: str, stream_id: str) -> None:
        super().__init__(
            GENERATION_RUNNING,
            f"session {session_id} already has a generation running (stream {stream_id}); "
            "wait for it to end or cancel it",
        )
        self.stream_id = stream_id


class MessageQueued(Refused):
    """A message already waits behind the session's running answer (one at most)."""

    def __init__(self, session_id: str, stream_id: str) -> None:
        super().__init__(
            GENERATION_RUNNING,
            f"session {_cut(session_id)} already has a message queued (stream {stream_id}) behind "
            "its running answer; one at most: wait, or cancel it",
        )
        self.stream_id = stream_id


class NothingToRegenerate(Refused):
    def __init__(self, session_id: str) -> None:
        super().__init__(
            NOTHING_TO_REGENERATE, f"session {_cut(session_id)} has no user message to answer again"
        )


class StoreUnavailable(Refused):
    """The store (Redis) cannot be reached: try again shortly."""

    def __init__(self, message: str) -> None:
        super().__init__(STORE_UNAVAILABLE, message, retry_after=1)

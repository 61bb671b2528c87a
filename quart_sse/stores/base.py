"""The store interface: sessions with their messages, and one event log per stream.

A stream's log holds encoded SSE frames; event ``k`` (1-based) is the ``k``-th frame, so a
reader's position is the last id it has.  Reads are shaped like Redis ``XREAD BLOCK``:
"frames after id X, waiting up to N seconds", so that a Redis implementation (issue 7)
slots in without touching the engine or the routes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

PROCESS_INSTANCE = f"{socket.gethostname()}-{os.getpid()}"
"""This process's instance id, as /health, /stats and /metrics report it."""


def now_iso() -> str:
    """The current time as ISO 8601 in UTC (``2026-11-25T16:06:05.123456Z``)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Message:
    role: str  # "user" or "model"
    content: str
    timestamp: str
    interrupted: bool = False

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"role": self.role, "content": self.content, "timestamp": self.timestamp}
        if self.interrupted:
            out["interrupted"] = True
        return out


@dataclass
class Session:
    session_id: str
    model: str
    created_at: str
    last_activity: str
    messages: list[Message] = field(default_factory=list)
    # The stream generating in this session, if any (one at a time).
    generating: str | None = None


@dataclass(frozen=True)
class StreamInfo:
    stream_id: str
    session_id: str
    finished: bool
    last_id: int


@dataclass(frozen=True)
class Append:
    """Frames for one stream, in id order, as the log writer hands them over in one batch."""

    stream_id: str
    frames: Sequence[bytes]
    finished: bool


ReadResult = tuple[Sequence[bytes], bool]
"""Frames after the asked id, and whether the stream has ended (nothing will follow)."""

Push = Callable[[bytes, int], bool]
"""``push(data, count)``: a waiting reader's offer to write ``count`` new frames (joined in
``data``) itself, at once; True when it did, and they count as read."""


class Store(Protocol):
    """Where sessions and stream logs live: memory (one process) or Redis (several)."""

    name: str
    instance_id: str

    async def connect(self) -> None: ...
    async def aclose(self) -> None: ...

    # Sessions --------------------------------------------------------------------------
    async def create_session(self, session_id: str, model: str, now: str) -> Session: ...
    async def get_session(self, session_id: str) -> Session | None: ...
    async def list_sessions(self) -> list[Session]: ...
    async def count_sessions(self) -> int: ...
    async def delete_session(self, session_id: str) -> bool: ...
    async def clear_session(self, session_id: str) -> bool: ...
    async def add_message(self, session_id: str, message: Message) -> int | None:
        """Append to the history; the new history length, or None if the session is gone."""

    async def begin_generation(self, session_id: str, stream_id: str, message: Message) -> str | None:
        """Take the session's one generation slot, save the user's ``message``, open the log.

        None on success, else the id of the stream already generating (nothing is changed).
        """

    async def save_answer(self, session_id: str, stream_id: str, message: Message | None) -> int | None:
        """Save the generation's answer (if any) and free the slot; the new history length.

        None when the session is gone, or (Redis) when the generation was declared dead.
        """

    async def cluster_counts(self) -> dict[str, int] | None:
        """Figures across every instance sharing the store (None: this process only)."""

    # Stream logs -----------------------------------------------------------------------
    async def get_stream(self, stream_id: str) -> StreamInfo | None: ...
    async def append(self, batch: Sequence[Append]) -> Mapping[str, str] | None:
        """Append frames to several logs at once (one call per log-writer flush).

        Returns the streams that can take no more frames, each with the error code their
        generation ends with (Redis: ``interrupted`` when its lease was lost,
        ``store_unavailable`` when Redis failed); None when all went in.
        """

    async def read(
        self, stream_id: str, after: int, block: float, push: Push | None = None
    ) -> ReadResult | None:
        """Frames after id ``after``; waits up to ``block`` s when there are none yet.

        While it waits, a store may hand new frames to ``push`` instead of returning them
        (the memory store does; Redis need not). Returns the frames not pushed, from the
        reader's position after the pushes. None when the stream is unknown or has expired.
        """

    def debug_counts(self) -> dict[str, int]:
        """Figures for the leak checks (waiting readers, logs held)."""

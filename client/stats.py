"""What one answer ended as, and what the client has done since it started (``/stats``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

COMPLETE = "complete"
LOST = "lost"  # the connection could not be resumed, or the server was never reached
CANCELLED = "cancelled"
REFUSED = "refused"  # the server answered the POST with an error status


@dataclass
class Outcome:
    """The end of one answer: ``status`` is ``complete``, an ``error`` event code, or above."""

    status: str
    text: str = ""
    chunks: int = 0
    seconds: float = 0.0
    session_id: str | None = None
    stream_id: str | None = None
    model: str | None = None
    context_messages: int | None = None
    message_count: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    reconnects: int = 0

    @property
    def ok(self) -> bool:
        return self.status == COMPLETE


@dataclass
class ClientStats:
    """The figures of ``/stats``; ``started`` is a ``time.monotonic()`` reading."""

    started: float = field(default_factory=time.monotonic)
    messages_sent: int = 0
    successful: int = 0
    failed: int = 0
    chunks: int = 0
    sessions_created: int = 0
    reconnects: int = 0
    response_time_total: float = 0.0

    def record(self, outcome: Outcome, *, new_session: bool) -> None:
        self.messages_sent += 1
        self.chunks += outcome.chunks
        self.reconnects += outcome.reconnects
        if new_session:
            self.sessions_created += 1
        if outcome.ok:
            self.successful += 1
            self.response_time_total += outcome.seconds
        else:
            self.failed += 1

    @property
    def streams(self) -> int:
        return self.successful + self.failed

    @property
    def avg_chunks(self) -> float:
        return self.chunks / self.streams if self.streams else 0.0

    @property
    def avg_response_time(self) -> float:
        return self.response_time_total / self.successful if self.successful else 0.0

    def duration(self) -> float:
        return time.monotonic() - self.started

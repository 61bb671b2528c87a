"""Domain types every layer may import: a message, a session, what a stream's log holds.

Framework-free and store-free: the providers read :class:`Message`, the stores persist
:class:`Session` and :class:`StreamInfo`, the engine and the edge pass them around.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


def now_iso() -> str:
    """The current time as ISO 8601 in UTC (``2026-11-25T16:06:05.123456Z``)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Message:
    """One turn of a conversation: ``role`` is ``"user"`` or ``"model"``; ``timestamp`` ISO 8601."""

    role: str
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
    """A conversation: its messages in order, and the stream generating in it, if any (one at a time).

    ``owner`` is the owner id of the API key that created it (None: made without keys).
    """

    session_id: str
    model: str
    created_at: str
    last_activity: str
    messages: list[Message] = field(default_factory=list)
    generating: str | None = None
    owner: str | None = None


@dataclass(frozen=True)
class StreamInfo:
    """A stream's log as a store holds it.

    ``last_id`` is the id of its last event (event ``k`` is the ``k``-th, from 1).
    ``closed`` names why a store ended the log without the generation's own final event
    (``"interrupted"``: its instance stopped holding it); the reader then writes that final
    event itself, as event ``last_id``, which the log does not hold.
    """

    stream_id: str
    session_id: str
    finished: bool
    last_id: int
    closed: str | None = None
    owner: str | None = None  # the owner of its session (docs/API.md, Ownership)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request acts for (docs/API.md, Ownership).

    ``owner`` is the owner id of the API key presented (a keyed hash of it, never the key);
    None when the server has no keys, and then every session is the caller's.  ``admin``:
    a key of ``ADMIN_KEYS``, which sees and acts on every session.
    """

    owner: str | None = None
    admin: bool = False

    def sees(self, owner: str | None) -> bool:
        """Whether a session (or stream) of ``owner`` is visible to this caller."""
        return self.admin or self.owner is None or owner == self.owner


EVERYONE = Caller()
"""The caller of a server without keys: single-user, every session visible."""

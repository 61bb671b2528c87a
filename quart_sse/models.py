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
    queued: str | None = None  # the stream of a message waiting behind the running answer


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
    queued: bool = False  # accepted with if_busy=enqueue, waiting for the answer before it


@dataclass(frozen=True)
class Turn:
    """One message a session accepted, as its session stream tells it (``user_message``).

    ``number`` counts the session's turns from 1 and is never reused (a clear keeps
    counting); ``stream_id`` is the stream of its answer; ``queued``: it waits for the
    answer before it (``if_busy=enqueue``); ``regenerate``: it asks again for the answer
    to the message before it (the message is not added twice).
    """

    number: int
    stream_id: str
    message: Message
    queued: bool = False
    regenerate: bool = False


@dataclass(frozen=True)
class TurnLog:
    """The turns a store still holds after a position, oldest first: ``turns``; ``last``,
    the number of the session's latest turn (0: none yet); ``ended``: the session was
    deleted (its session stream ends)."""

    turns: list[Turn]
    last: int
    ended: bool = False


@dataclass(frozen=True)
class Promoted:
    """A queued message that took the session's generation slot when the answer before it
    ended: its stream, its message (already in the session), who it counts against."""

    stream_id: str
    message: Message
    client_key: str = ""


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

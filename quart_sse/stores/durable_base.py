"""Durable Streams storage: what a store holds of one stream, and the interface of the stores.

A stream (the Durable Streams protocol's, at ``/v1/stream/{path}``) is a metadata record
(:class:`DurableMeta`) and a log of records, one per accepted append (a JSON append of an
array is one record of several values).  Record ``k`` of a stream is at offset ``k``; a
fork's first ``base`` records are its source's, read from there.

The stores persist and nothing more: every decision (idempotent create, content types,
``Stream-Seq``, producer epochs and sequences, closure) is a pure function of the metadata
given to :meth:`DurableStore.update`, written once in :mod:`quart_sse.engine.durable`, and
applied by each store atomically per stream (memory: no await inside; Redis: ``WATCH`` on
the stream's keys, which share one hash tag).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


@dataclass
class DurableMeta:
    """One stream's metadata (times are Unix seconds; ``tail`` is the offset number of its
    last record, 0 when empty)."""

    uid: str
    content_type: str
    created: float
    accessed: float
    owner: str | None = None
    ttl: int | None = None
    expires_at: str | None = None  # as the client gave it (idempotent creates compare it)
    expires_ts: float | None = None
    tail: int = 0
    base: int = 0  # records inherited from the source (a fork), 0 otherwise
    forked_from: str | None = None
    fork_sub: int = 0
    refs: int = 0  # forks reading through this stream
    soft_deleted: bool = False
    closed: bool = False
    closed_by: list[Any] | None = None  # [producer_id, epoch, seq] of the close
    stream_seq: str | None = None
    producers: dict[str, list[float]] = field(default_factory=dict)  # id -> [epoch, seq, updated]
    size: int = 0  # bytes of its own records (DURABLE_MAX_STREAM_BYTES)
    quota: str = ""  # whose count it is under DURABLE_MAX_STREAMS_PER_OWNER (a client key)

    def expiry(self) -> float | None:
        """When it expires (Unix seconds): its ``Stream-Expires-At``, or ``ttl`` seconds after
        it was last read or written, whichever is first; None when it never does."""
        sliding = None if self.ttl is None else self.accessed + self.ttl
        ends = [t for t in (self.expires_ts, sliding) if t is not None]
        return min(ends) if ends else None

    def expired(self, now: float) -> bool:
        """Past its ``Stream-Expires-At``, or ``ttl`` seconds since it was last read or written."""
        ends = self.expiry()
        return ends is not None and now >= ends

    def held_until(self) -> float | None:
        """Until when a store must keep it (Unix seconds), None: until it is deleted.  A
        stream that forks read through (or that is deleted but still read through) stays
        until its last fork goes, whatever its own expiry."""
        if self.refs > 0 or self.soft_deleted:
            return None
        return self.expiry()

    def dumps(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | bytes) -> DurableMeta:
        return cls(**json.loads(raw))


@dataclass
class Update(Generic[T]):
    """What a change decides for one stream: its new metadata (None: delete it, records
    included; ``keep``: leave it as it is), records to add after its tail, and the answer."""

    result: T
    meta: DurableMeta | None = None
    records: Sequence[bytes] = ()
    keep: bool = False


Change = Callable[[DurableMeta | None, float], Update[T]]
"""A pure function of a stream's metadata (None: no such stream) and the time."""


class DurableStore(Protocol):
    """Where Durable Streams live: memory (one process) or Redis (several).

    Errors: :class:`~quart_sse.codes.StoreUnavailable` when the backing service fails.
    """

    name: str

    async def connect(self) -> None: ...
    async def aclose(self) -> None: ...

    async def get(self, path: str) -> DurableMeta | None:
        """The stream's metadata as stored (expired or not); None when there is none."""

    async def update(self, path: str, change: Change[T]) -> T:
        """Apply ``change`` to the stream atomically and return its ``result``; readers
        waiting on the stream are woken when it changed."""

    async def records(self, path: str, first: int, last: int) -> list[bytes]:
        """The stream's own records at offsets ``first`` to ``last`` (inclusive; both past
        its ``base``); fewer when the stream has fewer."""

    async def wait(self, path: str, tail: int, block: float) -> None:
        """Return when the stream's tail passes ``tail``, it closes or goes, or after
        ``block`` seconds, whichever is first."""

    async def count(self, quota: str, now: float) -> tuple[int, int]:
        """How many streams (not expired at ``now``) the store holds under ``quota``, and in
        all (for DURABLE_MAX_STREAMS_PER_OWNER and DURABLE_MAX_STREAMS)."""

    async def due(self, now: float, limit: int) -> list[str]:
        """Paths of up to ``limit`` streams whose expiry has passed at ``now`` (for the
        sweep, which expires each through :meth:`update`)."""

    def bytes_held(self) -> int | None:
        """Bytes of records of every stream held in this process (DURABLE_MAX_BYTES), or
        None where the store's own server bounds them (Redis: its maxmemory)."""

    def debug_counts(self) -> dict[str, int]:
        """Figures for the leak checks (streams held, readers waiting)."""

"""The Redis store's sessions: a hash and a message list each, indexed by expiry and by
last activity (all sessions, and each owner's).

A session's keys carry its id as hash tag (``qs:{<session>}:...``, see
:mod:`~quart_sse.stores.redis_lua`), so that on Redis Cluster its scripts touch one slot.
The indexes span sessions, so they live apart and no script touches them: the sessions of
all owners are spread over :attr:`RedisSessions.shards` index pairs (``qs:{ix<n>}:sessions``
by expiry, ``qs:{ix<n>}:active`` by activity; one pair on a single Redis), and each owner's
sessions are one pair of their own (``qs:{o:<owner>}:so``, ``qs:{o:<owner>}:ao``, one slot).
The scripts say where a session moved to in the order, and the store writes the indexes
after them (a pipeline, split by node on a cluster).  Between the two writes, and after a
failure between them, an index may be behind its session: a listing drops an entry whose
session has gone, and the next write of the session puts it right.

A listing reads the index pairs (one on a single Redis or for an owner; every shard on a
cluster, merged here) and the session hashes (which keep a message count and a title),
never the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.crc import key_slot

from quart_sse.models import Message, Session
from quart_sse.stores.base import (
    LIST_LIMIT,
    SessionPage,
    SessionSummary,
    activity_ms,
    decode_cursor,
    encode_cursor,
)

PREFIX = "qs:"
OWNERS_CACHED = 100_000  # session -> owner entries a process remembers
UNWRITTEN_KEPT = 10_000  # created sessions whose writes wait for their first script


def session_prefix(session_id: str) -> str:
    """The prefix of every key of a session and of its streams (its id is the hash tag)."""
    return f"{PREFIX}{{{session_id}}}:"


def session_keys(session_id: str) -> list[str]:
    """The session's hash, message list and turn log, as a script's first ``KEYS``."""
    p = session_prefix(session_id)
    return [f"{p}s", f"{p}m", f"{p}tl"]


def stream_keys(session_id: str, stream_id: str) -> list[str]:
    """A stream's meta hash, log, lease and answer text (in its session's slot)."""
    p = session_prefix(session_id)
    return [f"{p}st:{stream_id}", f"{p}log:{stream_id}", f"{p}lease:{stream_id}", f"{p}ans:{stream_id}"]


def stream_home(stream_id: str) -> str:
    """The key that names a stream's session (in the stream's own slot)."""
    return f"{PREFIX}{{{stream_id}}}:in"


def _shard(name: str, shards: int) -> int:
    return key_slot(name.encode("utf-8", "surrogateescape")) % shards


class RedisSessions:
    """Session reads and plain writes (a mixin of RedisStore)."""

    session_ttl: float | None
    retention: float
    shards: int
    _owners: dict[str, str]  # session -> its owner ("": none), as seen (an owner never changes)
    _unwritten: dict[str, Callable[[Any], None]]  # sessions whose writes wait for their BEGIN
    cluster: bool | None

    async def _client(self) -> Any:
        raise NotImplementedError

    def _guard(self, *, command: bool = True) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def _session_script(
        self, name: str, session_id: str, *args: Any, now: str | None = None, streams: Sequence[str] = ()
    ) -> Any:
        raise NotImplementedError

    # Indexes -----------------------------------------------------------------------------

    def _deadline(self) -> float:
        return time.time() * 1000 + self.session_ttl * 1000 if self.session_ttl else float("inf")

    def _pair(self, session_id: str | None, owner: str | None) -> tuple[str, str]:
        """The index pair (by expiry, by activity) of ``owner``'s sessions, or (owner None)
        the shard of every session's that holds ``session_id``."""
        if owner is not None:
            tag = f"{PREFIX}{{o:{owner}}}:"
            return f"{tag}so", f"{tag}ao"
        shard = _shard(session_id or "", self.shards)
        return f"{PREFIX}{{ix{shard}}}:sessions", f"{PREFIX}{{ix{shard}}}:active"

    def _pairs(self, owner: str | None) -> list[tuple[str, str]]:
        """The index pairs a listing of ``owner`` (None: everyone) reads."""
        if owner is not None:
            return [self._pair(None, owner)]
        return [(f"{PREFIX}{{ix{n}}}:sessions", f"{PREFIX}{{ix{n}}}:active") for n in range(self.shards)]

    def _place(self, pipe: Any, session_id: str, owner: str | None, active: Any, expiry: Any) -> None:
        """Queue the session's new scores (None or ``b""``: unchanged) in its index pairs."""
        for whose in (None, owner) if owner else (None,):
            exp, act = self._pair(session_id, whose)
            if active not in (None, b""):
                pipe.zadd(act, {session_id: float(active)})
            if expiry not in (None, b""):
                pipe.zadd(exp, {session_id: float(expiry)})

    async def _reindex(self, session_id: str, moved: Sequence[bytes]) -> None:
        """Apply what a session script left of the session's move: ``[activity, expiry, owner]``."""
        active, expiry, owner = moved
        if not active and not expiry:
            return
        client = await self._client()
        async with self._guard():
            async with client.pipeline(transaction=False) as pipe:
                self._place(pipe, session_id, owner.decode() or None, active, expiry)
                await pipe.execute()

    def _know_owner(self, session_id: str, owner: str) -> None:
        """Remember a session's owner (bounded: the oldest tenth goes when full)."""
        if session_id not in self._owners and len(self._owners) >= OWNERS_CACHED:
            for old in list(self._owners)[: OWNERS_CACHED // 10]:
                del self._owners[old]
        self._owners[session_id] = owner

    # Sessions --------------------------------------------------------------------------

    async def create_session(
        self, session_id: str, model: str, now: str, owner: str | None = None, *, deferred: bool = False
    ) -> Session:
        """``deferred`` (single Redis): the session's writes wait for its first script, the
        ``BEGIN`` of the generation the caller starts at once, and go in its round trip."""
        create = functools.partial(self._queue_create, session_id, model, now, owner)
        self._know_owner(session_id, owner or "")
        if deferred and not self.cluster:
            if len(self._unwritten) >= UNWRITTEN_KEPT:  # (each is taken at once: only a bug fills it)
                self._unwritten.pop(next(iter(self._unwritten)))
            self._unwritten[session_id] = create
            return Session(session_id, model, now, now, owner=owner)
        client = await self._client()
        async with self._guard():
            async with client.pipeline(transaction=False) as pipe:
                create(pipe)
                await pipe.execute()
        return Session(session_id, model, now, now, owner=owner)

    def _queue_create(self, session_id: str, model: str, now: str, owner: str | None, pipe: Any) -> None:
        """A new session's writes, queued on ``pipe``."""
        key = session_keys(session_id)[0]
        fields = {"model": model, "created_at": now, "last_activity": now, "count": "0"}
        if owner is not None:
            fields["owner"] = owner
        pipe.hset(key, mapping=fields)
        if self.session_ttl:
            pipe.pexpire(key, int(self.session_ttl * 1000))
        self._place(pipe, session_id, owner, activity_ms(now), self._deadline())

    @staticmethod
    def _session(session_id: str, fields: Mapping[bytes, bytes], messages: Sequence[bytes]) -> Session:
        generating = fields.get(b"generating")
        owner = fields.get(b"owner")
        return Session(
            session_id,
            fields[b"model"].decode(),
            fields[b"created_at"].decode(),
            fields[b"last_activity"].decode(),
            [Message(**json.loads(raw)) for raw in messages],
            generating.decode() if generating else None,
            owner.decode() if owner else None,
            queued.decode() if (queued := fields.get(b"queued")) else None,
        )

    async def get_session(self, session_id: str) -> Session | None:
        found = await self._session_script("LOAD", session_id)
        if found is None:
            return None
        flat, messages = found
        return self._session(session_id, dict(zip(flat[::2], flat[1::2], strict=True)), messages)

    async def list_sessions(
        self, owner: str | None = None, limit: int = LIST_LIMIT, cursor: str | None = None
    ) -> SessionPage:
        """The shards' pages merged (each shard is asked for the page after the same place);
        entries whose session has gone are dropped from their index on the way."""
        assert limit >= 1
        after: tuple[int | str, bytes] = ("", b"")
        if cursor is not None:
            score, at_id = decode_cursor(cursor)
            after = (score, at_id.encode("utf-8", "surrogateescape"))
        pairs = self._pairs(owner)
        client = await self._client()
        rows: list[tuple[bytes, float, list[Any]]] = []
        more = False
        while True:
            want = limit + 1 - len(rows)
            now = int(time.time() * 1000)
            async with self._guard():
                pages = await asyncio.gather(
                    *(self._scripts["LIST"](keys=pair, args=(now, want, *after)) for pair in pairs)
                )
            candidates = sorted(
                (
                    (flat[i], float(flat[i + 1]), pair)
                    for pair, flat in zip(pairs, pages, strict=True)
                    for i in range(0, len(flat), 2)
                ),
                key=lambda c: (c[1], c[0]),
                reverse=True,
            )[:want]
            if not candidates:
                break
            async with self._guard():
                async with client.pipeline(transaction=False) as pipe:
                    for session_id, _, _ in candidates:
                        pipe.hmget(
                            session_keys(session_id.decode("utf-8", "surrogateescape"))[0],
                            "created_at",
                            "last_activity",
                            "count",
                            "title",
                        )
                    found = await pipe.execute()
                gone = [(c, f) for c, f in zip(candidates, found, strict=True) if f[0] is None]
                if gone:
                    async with client.pipeline(transaction=False) as pipe:
                        for (session_id, _, (exp, act)), _ in gone:
                            pipe.zrem(exp, session_id)
                            pipe.zrem(act, session_id)
                        await pipe.execute()
            rows += [(c[0], c[1], f) for c, f in zip(candidates, found, strict=True) if f[0] is not None]
            if len(rows) > limit:
                more = True
                break
            if len(candidates) < want:
                break
            last = candidates[-1]
            after = (int(last[1]), last[0])
        rows = rows[:limit]
        summaries = []
        for raw_id, _, (created_at, last_activity, count, title) in rows:
            session_id = raw_id.decode("utf-8", "surrogateescape")
            if count is None:  # a session written before the counts
                async with self._guard():
                    count = await client.llen(session_keys(session_id)[1])
            summaries.append(
                SessionSummary(
                    session_id,
                    (title or b"").decode(),
                    int(count),
                    created_at.decode(),
                    last_activity.decode(),
                )
            )
        if not more or not rows:
            return SessionPage(summaries, None)
        return SessionPage(summaries, encode_cursor(int(rows[-1][1]), summaries[-1].session_id))

    async def count_sessions(self, owner: str | None = None) -> int:
        await self._client()  # (Redis found, its scripts known: else StoreUnavailable)
        now = int(time.time() * 1000)
        async with self._guard():
            counts = await asyncio.gather(
                *(self._scripts["COUNT"](keys=pair, args=(now,)) for pair in self._pairs(owner))
            )
        return sum(int(n) for n in counts)

    async def delete_session(self, session_id: str) -> bool:
        s, m, turns = session_keys(session_id)
        client = await self._client()
        async with self._guard():
            owner = await client.hget(s, "owner")
            deleted = await client.delete(s, m)  # one slot: one command
            async with client.pipeline(transaction=False) as pipe:
                for whose in (None, owner.decode()) if owner is not None else (None,):
                    exp, act = self._pair(session_id, whose)
                    pipe.zrem(exp, session_id)
                    pipe.zrem(act, session_id)
                if deleted:  # its session streams end: a mark at the end of its turn log
                    pipe.xadd(turns, {"x": "1"}, id="0-*")
                    pipe.pexpire(turns, int(self.retention * 1000))
                await pipe.execute()
        return bool(deleted)

    async def clear_session(self, session_id: str) -> bool:
        return bool(await self._session_script("CLEAR", session_id))

    _scripts: dict[str, Any]

"""The Redis store's sessions: a hash and a message list each, indexed by expiry and by
last activity (all sessions, and each owner's).

Writes that must be atomic with the generation slot (begin, save, add) and with the
indexes (clear, list, count) are Lua scripts in :mod:`redis_lua`, run by
:class:`~quart_sse.stores.redis.RedisStore`.  A listing reads the activity index and the
session hashes (which keep a message count and a title), never the messages.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

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


class RedisSessions:
    """Session reads and plain writes (a mixin of RedisStore)."""

    session_ttl: float | None
    retention: float

    @property
    def redis(self) -> Any:
        raise NotImplementedError

    def _guard(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    async def _run(self, name: str, *args: Any, now: str | None = None) -> Any:
        raise NotImplementedError

    # Sessions --------------------------------------------------------------------------

    def _deadline(self) -> float:
        return time.time() * 1000 + self.session_ttl * 1000 if self.session_ttl else float("inf")

    @staticmethod
    def _index(owner: str | None) -> str:
        """The sorted set of all sessions, or of one owner's, by expiry."""
        return f"{PREFIX}so:{owner}" if owner is not None else f"{PREFIX}sessions"

    @staticmethod
    def _activity(owner: str | None) -> str:
        """The sorted set of all sessions, or of one owner's, by last activity."""
        return f"{PREFIX}ao:{owner}" if owner is not None else f"{PREFIX}active"

    @staticmethod
    def _whose(owner: str | None) -> tuple[str, str]:
        """A script's arguments naming the indexes of ``owner`` (None: every session's)."""
        return ("0", "") if owner is None else ("1", owner)

    async def create_session(
        self, session_id: str, model: str, now: str, owner: str | None = None
    ) -> Session:
        key = f"{PREFIX}s:{session_id}"
        fields = {"model": model, "created_at": now, "last_activity": now, "count": "0"}
        if owner is not None:
            fields["owner"] = owner
        active = activity_ms(now)
        with self._guard():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.zadd(f"{PREFIX}sessions", {session_id: self._deadline()})
                pipe.zadd(self._activity(None), {session_id: active})
                if owner is not None:
                    pipe.zadd(self._index(owner), {session_id: self._deadline()})
                    pipe.zadd(self._activity(owner), {session_id: active})
                if self.session_ttl:
                    pipe.pexpire(key, int(self.session_ttl * 1000))
                await pipe.execute()
        return Session(session_id, model, now, now, owner=owner)

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
        found = await self._run("LOAD", session_id)
        if found is None:
            return None
        flat, messages = found
        return self._session(session_id, dict(zip(flat[::2], flat[1::2], strict=True)), messages)

    async def list_sessions(
        self, owner: str | None = None, limit: int = LIST_LIMIT, cursor: str | None = None
    ) -> SessionPage:
        assert limit >= 1
        after: tuple[int | str, bytes] = ("", b"")
        if cursor is not None:
            score, at_id = decode_cursor(cursor)
            after = (score, at_id.encode("utf-8", "surrogateescape"))
        flat, more = await self._run("LIST", *self._whose(owner), limit, *after)
        text = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in flat]
        rows = [text[i : i + 6] for i in range(0, len(text), 6)]
        summaries = [
            SessionSummary(session_id, title, int(count), created_at, last_activity)
            for session_id, _, created_at, last_activity, count, title in rows
        ]
        if not more or not rows:
            return SessionPage(summaries, None)
        last_id, last_score = rows[-1][0], rows[-1][1]
        return SessionPage(summaries, encode_cursor(int(float(last_score)), last_id))

    async def count_sessions(self, owner: str | None = None) -> int:
        return int(await self._run("COUNT", *self._whose(owner)))

    async def delete_session(self, session_id: str) -> bool:
        with self._guard():
            owner = await self.redis.hget(f"{PREFIX}s:{session_id}", "owner")
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(f"{PREFIX}s:{session_id}", f"{PREFIX}m:{session_id}")
                pipe.zrem(self._index(None), session_id)
                pipe.zrem(self._activity(None), session_id)
                if owner is not None:
                    pipe.zrem(self._index(owner.decode()), session_id)
                    pipe.zrem(self._activity(owner.decode()), session_id)
                deleted, *_ = await pipe.execute()
            if deleted:  # its session streams end: a mark at the end of its turn log
                turns = f"{PREFIX}tl:{session_id}"
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(turns, {"x": "1"}, id="0-*")
                    pipe.pexpire(turns, int(self.retention * 1000))
                    await pipe.execute()
        return bool(deleted)

    async def clear_session(self, session_id: str) -> bool:
        return bool(await self._run("CLEAR", session_id))

"""The Redis store's sessions: a hash and a message list each, indexed by expiry.

Writes that must be atomic with the generation slot (begin, save, add) are Lua scripts in
:mod:`redis_lua`, run by :class:`~quart_sse.stores.redis.RedisStore`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from quart_sse.models import Message, Session, now_iso

PREFIX = "qs:"


class RedisSessions:
    """Session reads and plain writes (a mixin of RedisStore)."""

    session_ttl: float | None

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
        """The sorted set of all sessions, or of one owner's."""
        return f"{PREFIX}so:{owner}" if owner is not None else f"{PREFIX}sessions"

    async def create_session(
        self, session_id: str, model: str, now: str, owner: str | None = None
    ) -> Session:
        key = f"{PREFIX}s:{session_id}"
        fields = {"model": model, "created_at": now, "last_activity": now}
        if owner is not None:
            fields["owner"] = owner
        with self._guard():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.zadd(f"{PREFIX}sessions", {session_id: self._deadline()})
                if owner is not None:
                    pipe.zadd(self._index(owner), {session_id: self._deadline()})
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
        )

    async def get_session(self, session_id: str) -> Session | None:
        found = await self._run("LOAD", session_id)
        if found is None:
            return None
        flat, messages = found
        return self._session(session_id, dict(zip(flat[::2], flat[1::2], strict=True)), messages)

    async def list_sessions(self, owner: str | None = None) -> list[Session]:
        with self._guard():
            ids = await self.redis.zrangebyscore(self._index(owner), time.time() * 1000, "+inf")
            async with self.redis.pipeline(transaction=False) as pipe:
                for raw in ids:
                    pipe.hgetall(f"{PREFIX}s:{raw.decode()}")
                    pipe.lrange(f"{PREFIX}m:{raw.decode()}", 0, -1)
                found = await pipe.execute()
        sessions = [
            self._session(raw.decode(), fields, messages)
            for raw, fields, messages in zip(ids, found[::2], found[1::2], strict=True)
            if fields
        ]
        return sorted(sessions, key=lambda s: s.created_at)

    async def count_sessions(self, owner: str | None = None) -> int:
        key = self._index(owner)
        now = time.time() * 1000
        with self._guard():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(key, "-inf", f"({now}")
                pipe.zcard(key)
                _, count = await pipe.execute()
        return int(count)

    async def delete_session(self, session_id: str) -> bool:
        with self._guard():
            owner = await self.redis.hget(f"{PREFIX}s:{session_id}", "owner")
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(f"{PREFIX}s:{session_id}", f"{PREFIX}m:{session_id}")
                pipe.zrem(f"{PREFIX}sessions", session_id)
                if owner is not None:
                    pipe.zrem(self._index(owner.decode()), session_id)
                deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def clear_session(self, session_id: str) -> bool:
        key = f"{PREFIX}s:{session_id}"
        with self._guard():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.exists(key)
                pipe.delete(f"{PREFIX}m:{session_id}")
                pipe.hset(key, "last_activity", now_iso())
                exists, _, _ = await pipe.execute()
            if not exists:  # the HSET made a stub: take it away again
                await self.redis.delete(key)
        return bool(exists)

"""Durable Streams on Redis, shared by every instance on it.

A stream is two keys under one hash tag (so that a change is one transaction on one slot,
ready for Redis Cluster): ``qs:ds:{tag}:m``, its metadata as JSON, and ``qs:ds:{tag}:l``,
a list of its own records; the tag is a hash of the stream's path.  A change is
``WATCH`` on the metadata, the pure change function, then ``MULTI``/``EXEC`` (retried when
another instance changed the stream in between): the protocol's decisions are written
once (:mod:`quart_sse.engine.durable`), for memory and Redis alike.  Each change publishes
on ``qs:ds:{tag}:n``; a waiting reader is woken by this instance's one subscription.

Expiry: both keys carry the stream's expiry (``PEXPIREAT``, set again by every change,
so a sliding ``Stream-TTL`` moves with each read and write), except while forks read
through the stream (kept until the last goes) and, for a fork, an hour later than its own
expiry, so that the engine's sweep expires it first and its source's count of forks goes
down.  Two sorted sets, scored by expiry (``+inf``: none), index the streams for the
sweep and the caps: ``qs:ds:index`` (all) and ``qs:ds:q:{quota}`` (one owner's); they are
written after each change, outside its transaction (they span slots), and entries whose
keys went by their TTL are dropped when met.

Why not a Lua script per operation: the checks (producers, epochs, closure, forks) would be
written twice, in Python for memory and in Lua here; a stream's writes are rare enough
next to its reads that an optimistic transaction costs nothing that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, WatchError

from quart_sse.codes import DURABLE_ON_CLUSTER, Refused, StoreUnavailable
from quart_sse.stores.durable_base import Change, DurableMeta, T

log = logging.getLogger("quart_sse.stores.durable")

UNREACHABLE = "the store (Redis) is unreachable; try again shortly"
INDEX = "qs:ds:index"
FORK_GRACE = 3600.0
"""Seconds a fork's keys outlive its expiry, for the sweep to expire it (and release its source)."""


def _quota_key(quota: str) -> str:
    return f"qs:ds:q:{quota}"


def _member(path: str) -> bytes:
    return path.encode("utf-8", "surrogatepass")


def _score(meta: DurableMeta) -> float:
    """A stream's place in the indexes: when the sweep should expire it (``inf``: never)."""
    ends = None if meta.soft_deleted else meta.expiry()
    return math.inf if ends is None else ends


def _keys(path: str) -> tuple[str, str, str]:
    tag = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"qs:ds:{{{tag}}}:m", f"qs:ds:{{{tag}}}:l", f"qs:ds:{{{tag}}}:n"


class RedisDurableStore:
    """:class:`~quart_sse.stores.durable_base.DurableStore` on Redis (its own client from
    ``REDIS_URL``, created in the serving loop)."""

    name = "redis"

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout
        self._redis: Redis | None = None
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self.on_cluster = False
        """REDIS_URL names a Redis Cluster node: this store's transactions (WATCH, MULTI)
        cannot run there (redis-py's cluster pipeline has none), so it refuses, 501."""

    @property
    def redis(self) -> Redis:
        if self.on_cluster:
            raise Refused(
                DURABLE_ON_CLUSTER,
                "Durable Streams need one Redis server; REDIS_URL names a Redis Cluster (not supported yet)",
            )
        if self._redis is None:
            raise StoreUnavailable(UNREACHABLE)
        return self._redis

    async def connect(self) -> None:
        probe = Redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        try:
            self.on_cluster = bool(int((await probe.info("cluster")).get("cluster_enabled", 0)))
        except (RedisError, OSError):
            self.on_cluster = False  # unreachable at start: taken for one server, as before
        finally:
            await probe.aclose()
        if self.on_cluster:
            log.warning("Durable Streams (/v1/stream/) are off: REDIS_URL names a Redis Cluster")
            return
        self._redis = Redis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        # Subscriptions wait for as long as readers do: no socket timeout on that connection.
        self._pubsub = Redis.from_url(self.url, socket_connect_timeout=self.timeout).pubsub()

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await self._listener
            self._listener = None
        for waiters in self._waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def get(self, path: str) -> DurableMeta | None:
        try:
            raw = await self.redis.get(_keys(path)[0])
        except RedisError as exc:
            raise StoreUnavailable(UNREACHABLE) from exc
        return DurableMeta.loads(raw) if raw is not None else None

    async def update(self, path: str, change: Change[T]) -> T:
        meta_key, log_key, channel = _keys(path)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(meta_key)
                        raw = await pipe.get(meta_key)
                        current = DurableMeta.loads(raw) if raw is not None else None
                        done = change(current, time.time())
                        if done.keep:
                            await pipe.unwatch()  # type: ignore[no-untyped-call]
                            return done.result
                        pipe.multi()  # type: ignore[no-untyped-call]
                        if done.meta is None:
                            pipe.delete(meta_key, log_key)
                        else:
                            if current is None or current.uid != done.meta.uid:
                                pipe.delete(log_key)
                            pipe.set(meta_key, done.meta.dumps())
                            if done.records:
                                pipe.rpush(log_key, *done.records)
                            until = done.meta.held_until()
                            if until is None:
                                pipe.persist(log_key)
                            else:
                                at = int((until + (FORK_GRACE if done.meta.forked_from else 0)) * 1000)
                                pipe.pexpireat(meta_key, at)
                                pipe.pexpireat(log_key, at)
                        pipe.publish(channel, b"1")
                        await pipe.execute()
                        break
                    except WatchError:
                        continue
            await self._index(path, current, done.meta)
        except RedisError as exc:
            raise StoreUnavailable(UNREACHABLE) from exc
        return done.result

    async def _index(self, path: str, current: DurableMeta | None, meta: DurableMeta | None) -> None:
        """The stream's entries in the indexes, after a change (not atomic with it: the
        indexes span slots; an entry left behind is dropped when met)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if current is not None and (meta is None or current.quota != meta.quota):
                pipe.zrem(_quota_key(current.quota), _member(path))
            if meta is None:
                pipe.zrem(INDEX, _member(path))
            else:
                score = _score(meta)
                pipe.zadd(INDEX, {_member(path): score})
                pipe.zadd(_quota_key(meta.quota), {_member(path): score})
            await pipe.execute()

    async def count(self, quota: str, now: float) -> tuple[int, int]:
        key = _quota_key(quota)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zcount(key, f"({now}", "+inf")
                pipe.zcount(INDEX, f"({now}", "+inf")
                _, mine, everyone = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(UNREACHABLE) from exc
        return int(mine), int(everyone)

    async def due(self, now: float, limit: int) -> list[str]:
        try:
            found = await self.redis.zrangebyscore(INDEX, "-inf", now, start=0, num=limit)
            paths = [p.decode("utf-8", "surrogatepass") if isinstance(p, bytes) else str(p) for p in found]
            if not paths:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for path in paths:
                    pipe.exists(_keys(path)[0])
                held = await pipe.execute()
            gone = [path for path, exists in zip(paths, held, strict=True) if not exists]
            if gone:  # went by their keys' TTL: nothing to expire, only the entry to drop
                await self.redis.zrem(INDEX, *map(_member, gone))
        except RedisError as exc:
            raise StoreUnavailable(UNREACHABLE) from exc
        return [path for path, exists in zip(paths, held, strict=True) if exists]

    async def records(self, path: str, first: int, last: int) -> list[bytes]:
        meta = await self.get(path)
        if meta is None or last < first:
            return []
        start, stop = max(first - meta.base - 1, 0), last - meta.base - 1
        if stop < start:
            return []
        try:
            found = await self.redis.lrange(_keys(path)[1], start, stop)
        except RedisError as exc:
            raise StoreUnavailable(UNREACHABLE) from exc
        return [item if isinstance(item, bytes) else item.encode() for item in found]

    async def wait(self, path: str, tail: int, block: float) -> None:
        channel = _keys(path)[2]
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(channel, set())
        waiters.add(waiter)
        try:
            if len(waiters) == 1:
                await self._subscribe(channel)
            meta = await self.get(path)  # after subscribing: no change can slip between
            if meta is None or meta.tail > tail or meta.closed:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(block):
                    await waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._waiting.pop(channel, None)
                with contextlib.suppress(RedisError):
                    if self._pubsub is not None:
                        await self._pubsub.unsubscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            raise StoreUnavailable(UNREACHABLE)
        try:
            await pubsub.subscribe(channel)
        except RedisError as exc:
            raise StoreUnavailable(UNREACHABLE) from exc
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(pubsub))

    async def _listen(self, pubsub: PubSub) -> None:
        """Wake the waiters of each stream that changed (one task per process)."""
        while True:
            try:
                message: dict[str, Any] | None = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except RedisError:
                log.warning("durable streams: Redis subscription lost; waiting readers wake by their timeout")
                await asyncio.sleep(1)
                continue
            if message is None:
                continue
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            for waiter in self._waiting.get(name, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def debug_counts(self) -> dict[str, int]:
        return {"durable_waiting": sum(len(w) for w in self._waiting.values())}

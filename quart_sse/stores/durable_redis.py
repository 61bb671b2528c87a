"""Durable Streams on Redis, shared by every instance on it.

A stream is two keys under one hash tag (so that a change touches one slot, on one Redis
or a Redis Cluster alike): ``qs:ds:{tag}:m``, its metadata as JSON, and
``qs:ds:{tag}:l``, a list of its own records; the tag is a hash of the stream's path.  A
change is optimistic: read the metadata, run the pure change function, then one script
(:data:`CHANGE`) writes the result only if the metadata is still what was read (else the
change is computed again).  So the protocol's decisions are written once
(:mod:`quart_sse.engine.durable`), for memory and Redis alike.  (Not ``WATCH``/``MULTI``:
redis-py's asyncio cluster pipeline runs a transaction's commands with ``asyncio.run`` in
a thread of its own, off the serving loop.)  Each change publishes on ``qs:ds:{tag}:n``
(``PUBLISH`` reaches every node of a cluster); a waiting reader is woken by this
instance's one subscription (on a cluster, to one node).

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
next to its reads that an optimistic change (two round trips) costs nothing that matters.
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
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from quart_sse.codes import StoreUnavailable
from quart_sse.stores.durable_base import Change, DurableMeta, T

log = logging.getLogger("quart_sse.stores.durable")

UNREACHABLE = "the store (Redis) is unreachable; try again shortly"
INDEX = "qs:ds:index"
ATTEMPTS = 100
"""Changes of one stream computed again at most, when other writers changed it between the
read and the write (then 503)."""
CHANGE = """
-- One change of one Durable Stream, if its metadata is still ARGV[1] ('' = none).
-- KEYS: metadata, log.  ARGV: expected metadata, new metadata ('' = delete the stream),
-- '1' to empty the log first, expiry in ms since the epoch ('' = none), records to append.
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
if ARGV[3] == '1' then redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[2])
for i = 5, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if ARGV[4] == '' then
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
  redis.call('PEXPIREAT', KEYS[2], ARGV[4])
end
return 1
"""
REDIS_ERRORS = (RedisError, RedisClusterException)
SUBSCRIBED_WAIT = 1.0
"""Seconds a wait waits for Redis to confirm its SUBSCRIBE before it reads the stream."""
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
    """:class:`~quart_sse.stores.durable_base.DurableStore` on Redis, one server or a
    cluster (its own client from ``REDIS_URL``, created in the serving loop)."""

    name = "redis"

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout
        self._redis: Any = None  # a Redis or a RedisCluster
        self._change: Any = None  # the CHANGE script
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._confirming: dict[str, asyncio.Future[None]] = {}  # SUBSCRIBEs Redis has not confirmed
        self.on_cluster = False  # REDIS_URL names a Redis Cluster node

    @property
    def redis(self) -> Any:
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
        options: dict[str, Any] = {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}
        if self.on_cluster:
            self._redis = RedisCluster.from_url(self.url, **options)
            # Learn the slots now: redis-py initializing on the first commands of a burst
            # closes connections others are opening (AttributeError inside redis-py).
            with contextlib.suppress(*REDIS_ERRORS):
                await self._redis.initialize()
        else:
            self._redis = Redis.from_url(self.url, **options)
        self._change = self._redis.register_script(CHANGE)
        # Subscriptions wait for as long as readers do: no socket timeout on that connection.
        # On a cluster, a node of its own (PUBLISH on any node reaches every subscriber).
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
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(UNREACHABLE) from exc
        return DurableMeta.loads(raw) if raw is not None else None

    async def update(self, path: str, change: Change[T]) -> T:
        meta_key, log_key, channel = _keys(path)
        client = self.redis
        try:
            for _ in range(ATTEMPTS):
                raw = await client.get(meta_key)
                current = DurableMeta.loads(raw) if raw is not None else None
                done = change(current, time.time())
                if done.keep:
                    return done.result
                args: list[Any] = [raw or b""]
                if done.meta is None:
                    args.append(b"")
                else:
                    until = done.meta.held_until()
                    grace = FORK_GRACE if done.meta.forked_from else 0
                    at = "" if until is None else int((until + grace) * 1000)
                    reset = current is None or current.uid != done.meta.uid
                    args += [done.meta.dumps(), "1" if reset else "0", at, *done.records]
                if await self._change(keys=[meta_key, log_key], args=args):
                    break
            else:
                log.warning("durable streams: %s changed under %d attempts in a row", path, ATTEMPTS)
                raise StoreUnavailable("the stream is being changed by many writers at once; try again")
            await client.publish(channel, b"1")
            await self._index(path, current, done.meta)
        except REDIS_ERRORS as exc:
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
        except REDIS_ERRORS as exc:
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
        except REDIS_ERRORS as exc:
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
        except REDIS_ERRORS as exc:
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
            else:
                await self._confirmed(channel)  # (another waiter subscribed it, maybe just now)
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
        """Subscribe to ``channel`` and return once Redis has confirmed it (up to
        SUBSCRIBED_WAIT s): a change whose PUBLISH came before that could be missed, and the
        caller reads the stream only after this returns.  (On a cluster the PUBLISH reaches
        the subscriber's node through the cluster bus, in no order with this SUBSCRIBE.)"""
        pubsub = self._pubsub
        if pubsub is None:
            raise StoreUnavailable(UNREACHABLE)
        confirmed = self._confirming.setdefault(channel, asyncio.get_running_loop().create_future())
        try:
            await pubsub.subscribe(channel)
        except REDIS_ERRORS as exc:
            self._confirming.pop(channel, None)
            raise StoreUnavailable(UNREACHABLE) from exc
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(pubsub))
        await self._confirmed(channel)
        if self._confirming.get(channel) is confirmed:
            del self._confirming[channel]

    async def _confirmed(self, channel: str) -> None:
        """Until Redis has confirmed the SUBSCRIBE of ``channel`` (at most SUBSCRIBED_WAIT s)."""
        confirmed = self._confirming.get(channel)
        if confirmed is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SUBSCRIBED_WAIT):
                await asyncio.shield(confirmed)

    async def _listen(self, pubsub: PubSub) -> None:
        """Wake the waiters of each stream that changed (one task per process)."""
        while True:
            try:
                message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
            except RedisError:
                log.warning("durable streams: Redis subscription lost; waiting readers wake by their timeout")
                await asyncio.sleep(1)
                continue
            if message is None:
                continue
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            if message["type"] != "message":  # a confirmation of SUBSCRIBE, UNSUBSCRIBE
                confirmed = self._confirming.get(name)
                if message["type"] == "subscribe" and confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)
                continue
            for waiter in self._waiting.get(name, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def bytes_held(self) -> int | None:
        return None  # in Redis, bounded by its maxmemory

    def debug_counts(self) -> dict[str, int]:
        return {"durable_waiting": sum(len(w) for w in self._waiting.values())}

"""The Redis store: sessions and stream logs shared by every instance on one Redis.

Each stream's log is a Redis Stream whose entry ``0-k`` is event ``k``.  The instance that
runs a generation holds a lease on it (renewed by one task per process); every write of
the owner is checked against the lease inside a Lua script (:mod:`redis_lua`), and a
reader anywhere that finds the lease lapsed closes the stream as ``interrupted`` in one
atomic step (an entry ``c`` in the log, no frame: its readers write the final event).
Readers on the owning instance are served by that instance's hub (no Redis read per
batch); readers elsewhere wait here, in ``XREAD BLOCK`` (:meth:`RedisStore.wait`).

Redis errors become :class:`~quart_sse.codes.StoreUnavailable`; the client reconnects by
itself, once and at once, on the next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from quart_sse import codes
from quart_sse.codes import StoreUnavailable
from quart_sse.ids import PROCESS_INSTANCE
from quart_sse.models import Message, StreamInfo, now_iso
from quart_sse.stores import redis_lua as lua
from quart_sse.stores.base import Append, Tail, activity_ms, title_of
from quart_sse.stores.redis_sessions import PREFIX, RedisSessions

log = logging.getLogger("quart_sse.stores.redis")

UNREACHABLE = "the store (Redis) is unreachable; try again shortly"
POOL_WAIT = 5.0
"""Seconds a request waits for a free command connection in a burst (a frozen Redis frees
them within REDIS_TIMEOUT, as each command on them times out)."""
COMMAND_CONNECTIONS = 256  # connections for commands; more requests at once wait up to 5 s for one
READER_CONNECTIONS = 10_000  # one per reader of another instance's stream (Redis's maxclients)


def _tail(entries: Sequence[tuple[bytes, dict[bytes, bytes]]], finished: bool) -> Tail:
    """Frames of log entries; an entry ``c`` is the close mark of a stream whose owner went."""
    frames = [fields[b"f"] for _, fields in entries if b"f" in fields]
    closed = entries[-1][1].get(b"c") if entries else None
    if closed is not None:
        return Tail(frames, True, closed.decode())
    return Tail(frames, finished or (bool(entries) and b"e" in entries[-1][1]))


def _dump(message: Message) -> str:
    return json.dumps(message.to_json(), ensure_ascii=False)


class RedisStore(RedisSessions):
    """Sessions, messages and stream logs in Redis, shared by several server processes."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        retention: float = 600.0,
        session_ttl: float | None = None,
        heartbeat: float = 15.0,
        instance_id: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.timeout = timeout  # REDIS_TIMEOUT: a command that takes longer is a 503
        self.retention = retention
        self.session_ttl = session_ttl
        self.instance_id = instance_id or PROCESS_INSTANCE
        # A lapsed lease is seen by readers within lease + one heartbeat: three heartbeats.
        self.lease = 2 * heartbeat
        self.heartbeat = heartbeat
        self._owned: set[str] = set()  # the streams generated here (their leases are renewed)
        self._redis: Redis | None = None
        self._blocking: Redis | None = None
        self._renewer: asyncio.Task[None] | None = None

    # Lifecycle ---------------------------------------------------------------------------

    def _client(self, socket_timeout: float, max_connections: int, *, wait: bool) -> Redis:
        # One quick retry on a broken connection (a pooled connection gone stale after a Redis
        # restart), none on a timeout, no backoff: a Redis that is gone or frozen is reported
        # within REDIS_TIMEOUT, not after several slow attempts.
        # redis-py's pool holds 100 connections and then fails ("Too many connections"): a
        # burst of requests waits for a free one instead (wait=True); readers elsewhere each
        # hold one while they block in XREAD, so theirs is as large as the streams allowed.
        # A max_connections in REDIS_URL's query wins over both.
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
            "health_check_interval": 10,
            "max_connections": max_connections,
        }
        if wait:
            pool: ConnectionPool = BlockingConnectionPool.from_url(self.url, timeout=POOL_WAIT, **options)
        else:
            pool = ConnectionPool.from_url(self.url, **options)
        return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it

    async def connect(self) -> None:
        """Create the clients in the serving loop; Redis need not be up yet."""
        self._redis = self._client(self.timeout, COMMAND_CONNECTIONS, wait=True)
        # Readers elsewhere block in XREAD for up to a heartbeat: a longer socket timeout.
        self._blocking = self._client(self.heartbeat + self.timeout, READER_CONNECTIONS, wait=False)
        self._scripts = {
            name: self._redis.register_script(getattr(lua, name))
            for name in ("BEGIN", "APPEND", "SAVE", "LOAD", "CHECK", "RENEW", "LIST", "COUNT", "CLEAR")
        }
        self._renewer = asyncio.create_task(self._renew_forever(), name="redis-lease-renewer")

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        for client in (self._redis, self._blocking):
            if client is not None:
                await client.aclose()

    @property
    def redis(self) -> Any:
        """The client (typed Any: redis-py's replies are unions of str and bytes; ours are bytes)."""
        assert self._redis is not None, "RedisStore.connect() was not called"
        return self._redis

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            # The detail (with Redis's address) goes to the log, never to a client.
            log.warning("Redis: %s: %s", type(exc).__name__, exc)
            raise StoreUnavailable(UNREACHABLE) from None

    async def _run(self, name: str, *args: Any, now: str | None = None) -> Any:
        now = now or now_iso()
        head = (
            PREFIX,
            self.instance_id,
            now,
            int(time.time() * 1000),
            int((self.session_ttl or 0) * 1000),
            int(self.retention * 1000),
            activity_ms(now),
        )
        with self._guard():
            return await self._scripts[name](args=(*head, *args))

    async def begin_generation(self, session_id: str, stream_id: str, message: Message) -> None:
        running = await self._run(
            "BEGIN",
            session_id,
            stream_id,
            int(self.lease * 1000),
            _dump(message),
            title_of(message.content) if message.role == "user" else "",
            now=message.timestamp,
        )
        if running == -1:
            raise codes.SessionNotFound(session_id)
        if running is not None:
            raise codes.GenerationRunning(session_id, bytes(running).decode())
        self._owned.add(stream_id)

    async def save_answer(self, session_id: str, stream_id: str, message: Message | None) -> int | None:
        count = await self._run(
            "SAVE",
            session_id,
            stream_id,
            _dump(message) if message else "",
            now=message.timestamp if message else None,
        )
        return int(count) if count >= 0 else None

    # Leases -------------------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        while True:
            try:
                await self._run("RENEW", int(self.lease * 1000), *self._owned)
            except StoreUnavailable as exc:
                log.warning("lease renewal failed: %s", exc)
            await asyncio.sleep(self.lease / 3)

    async def cluster_counts(self) -> dict[str, int]:
        """Live instances and running generations across the cluster (by lease)."""
        now = time.time() * 1000
        with self._guard():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zcount(f"{PREFIX}instances", now, "+inf")
                pipe.zcount(f"{PREFIX}running", now, "+inf")
                instances, running = await pipe.execute()
        return {"instances": int(instances), "active_streams": int(running)}

    # Stream logs -----------------------------------------------------------------------

    async def get_stream(self, stream_id: str) -> StreamInfo | None:
        with self._guard():
            session, finished, last, closed, uid = await self.redis.hmget(
                f"{PREFIX}st:{stream_id}", "session", "finished", "last", "closed", "uid"
            )
        if session is None:
            return None
        code = closed.decode() if closed else None
        last_id = int(last) + (code is not None)
        owner = uid.decode() if uid else None
        return StreamInfo(stream_id, session.decode(), finished == b"1", last_id, code, owner)

    async def append(self, batch: Sequence[Append]) -> dict[str, str] | None:
        """One script call for the whole flush; the streams that can take no more frames."""
        args: list[Any] = []
        for item in batch:
            if item.frames:
                args += [
                    item.stream_id,
                    "1" if item.finished else "0",
                    len(item.frames),
                    item.first,
                    item.text,
                ]
                args += item.frames
        if not args:
            return None
        try:
            lost = await self._run("APPEND", *args)
        except StoreUnavailable as exc:
            log.warning("%s: ending %d generations", exc, len(batch))
            self._owned.difference_update(item.stream_id for item in batch)
            return {item.stream_id: codes.STORE_UNAVAILABLE for item in batch}
        refused = {raw.decode() for raw in lost}
        for item in batch:
            if item.finished or item.stream_id in refused:
                self._owned.discard(item.stream_id)
        return dict.fromkeys(refused, codes.INTERRUPTED) or None

    async def read(self, stream_id: str, after: int) -> Tail | None:
        with self._guard():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xrange(f"{PREFIX}log:{stream_id}", f"0-{after + 1}", "+")
                pipe.hmget(f"{PREFIX}st:{stream_id}", "session", "finished")
                entries, (session, finished) = await pipe.execute()
        if session is None:
            return None
        return _tail(entries, finished == b"1")

    async def wait(self, stream_id: str, after: int, block: float) -> Tail | None:
        assert self._blocking is not None
        with self._guard():
            found: Any = await self._blocking.xread(
                {f"{PREFIX}log:{stream_id}": f"0-{after}"}, block=max(1, int(block * 1000))
            )
        if found:
            return _tail(found[0][1], False)
        # Quiet for a whole wait: is the owner still there?  (Closes the stream if not.)
        if await self._run("CHECK", stream_id) == 0:
            return None
        return await self.read(stream_id, after)

    def debug_counts(self) -> dict[str, int]:
        return {"owned_streams": len(self._owned)}

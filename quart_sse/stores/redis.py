"""The Redis store: sessions and stream logs shared by every instance on one Redis.

Each stream's log is a Redis Stream whose entry ``0-k`` is event ``k``.  The instance that
runs a generation holds a lease on it (renewed by one task per process); every write of
the owner is checked against the lease inside a Lua script (:mod:`redis_lua`), and a
reader anywhere that finds the lease lapsed closes the stream as ``interrupted`` in one
atomic step.  Readers on the owning instance are woken by the log writer's own appends
(no Redis read per batch); readers elsewhere wait in ``XREAD BLOCK``.

Redis errors become :class:`StoreUnavailable` (503 ``store_unavailable``); the client
reconnects by itself, once and at once, on the next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from quart_sse import errors
from quart_sse.errors import StoreUnavailable
from quart_sse.sse import encode_event
from quart_sse.stores import redis_lua as lua
from quart_sse.stores.base import (
    PROCESS_INSTANCE,
    Append,
    Message,
    ReadResult,
    StreamInfo,
    now_iso,
)
from quart_sse.stores.redis_local import LocalLogs
from quart_sse.stores.redis_sessions import PREFIX, RedisSessions

log = logging.getLogger("quart_sse.stores.redis")

_INTERRUPTED = "the generating instance stopped before the end"
COMMAND_CONNECTIONS = 256  # connections for commands; more requests at once wait up to 5 s for one
READER_CONNECTIONS = 10_000  # one per reader of another instance's stream (Redis's maxclients)
_ERR_PRE, _ERR_SUF = json.dumps(
    {"type": "error", "message": _INTERRUPTED, "code": errors.INTERRUPTED, "session_id": "@@"},
    ensure_ascii=False,
).split("@@")


def _message(raw: bytes) -> Message:
    return Message(**json.loads(raw))


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
    ) -> None:
        self.url = url
        self.retention = retention
        self.session_ttl = session_ttl
        self.instance_id = instance_id or PROCESS_INSTANCE
        # A lapsed lease is seen by readers within lease + one heartbeat: three heartbeats.
        self.lease = 2 * heartbeat
        self.heartbeat = heartbeat
        self.local = LocalLogs()
        self._redis: Redis | None = None
        self._blocking: Redis | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._session_of: dict[str, str] = {}

    # Lifecycle ---------------------------------------------------------------------------

    def _client(self, socket_timeout: float, max_connections: int, *, wait: bool) -> Redis:
        # One quick retry (a pooled connection gone stale after a Redis restart), no backoff:
        # a Redis that is really gone is reported at once, not after several slow attempts.
        # redis-py's pool holds 100 connections and then fails ("Too many connections"): a
        # burst of requests waits for a free one instead (wait=True); readers elsewhere each
        # hold one while they block in XREAD, so theirs is as large as the streams allowed.
        # A max_connections in REDIS_URL's query wins over both.
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": 2.0,
            "retry": Retry(NoBackoff(), 1),
            "health_check_interval": 10,
            "max_connections": max_connections,
        }
        if wait:
            pool: ConnectionPool = BlockingConnectionPool.from_url(self.url, timeout=5.0, **options)
        else:
            pool = ConnectionPool.from_url(self.url, **options)
        return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it

    async def connect(self) -> None:
        """Create the clients in the serving loop; Redis need not be up yet."""
        self._redis = self._client(5.0, COMMAND_CONNECTIONS, wait=True)
        # Readers elsewhere block in XREAD for up to a heartbeat: a longer socket timeout.
        self._blocking = self._client(self.heartbeat + 5.0, READER_CONNECTIONS, wait=False)
        self._scripts = {
            name: self._redis.register_script(getattr(lua, name))
            for name in ("BEGIN", "APPEND", "SAVE", "ADD", "LOAD", "CHECK", "RENEW")
        }
        self._renewer = asyncio.create_task(self._renew_forever(), name="redis-lease-renewer")

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        self.local.wake_all()
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
            raise StoreUnavailable(f"Redis is unreachable ({type(exc).__name__}: {exc})") from None

    async def _run(self, name: str, *args: Any, now: str | None = None) -> Any:
        head = (
            PREFIX,
            self.instance_id,
            now or now_iso(),
            int(time.time() * 1000),
            int((self.session_ttl or 0) * 1000),
            int(self.retention * 1000),
            _ERR_PRE,
            _ERR_SUF,
        )
        with self._guard():
            return await self._scripts[name](args=(*head, *args))

    async def ping(self) -> None:
        with self._guard():
            await self.redis.ping()

    async def add_message(self, session_id: str, message: Message) -> int | None:
        count = await self._run("ADD", session_id, _dump(message), now=message.timestamp)
        return int(count) if count >= 0 else None

    async def begin_generation(self, session_id: str, stream_id: str, message: Message) -> str | None:
        running = await self._run(
            "BEGIN", session_id, stream_id, int(self.lease * 1000), _dump(message), now=message.timestamp
        )
        if running == -1:
            raise errors.APIError(404, errors.SESSION_NOT_FOUND, f"no session {session_id}")
        if running is not None:
            return bytes(running).decode()
        self.local.open(stream_id, session_id)
        return None

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
                lost = await self._run("RENEW", int(self.lease * 1000), *self.local.owned())
                for raw in lost:
                    self.local.drop(raw.decode())
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
            session, finished, last = await self.redis.hmget(
                f"{PREFIX}st:{stream_id}", "session", "finished", "last"
            )
        if session is None:
            return None
        self._remember(stream_id, session.decode())
        return StreamInfo(stream_id, session.decode(), finished == b"1", int(last))

    def _remember(self, stream_id: str, session_id: str) -> None:
        if len(self._session_of) > 10_000:
            self._session_of.clear()
        self._session_of[stream_id] = session_id

    async def append(self, batch: Sequence[Append]) -> dict[str, str] | None:
        """One script call for the whole flush; the streams that can take no more frames."""
        args: list[Any] = []
        for item in batch:
            if item.frames:
                args += [item.stream_id, "1" if item.finished else "0", len(item.frames), *item.frames]
        if not args:
            return None
        try:
            lost = await self._run("APPEND", *args)
        except StoreUnavailable as exc:
            log.warning("%s: ending %d generations", exc, len(batch))
            for item in batch:
                self.local.drop(item.stream_id)
            return {item.stream_id: errors.STORE_UNAVAILABLE for item in batch}
        refused = {raw.decode() for raw in lost}
        for item in batch:
            if item.stream_id in refused:
                self.local.drop(item.stream_id)
            else:
                self.local.appended(item)
        return dict.fromkeys(refused, errors.INTERRUPTED) or None

    async def read(
        self, stream_id: str, after: int, block: float, push: Callable[[bytes, int], bool] | None = None
    ) -> ReadResult | None:
        """As the protocol says; ``push`` is not used (readers are woken, then read)."""
        try:
            local = await self.local.read(stream_id, after, block)
            if local is not None:
                return local
            return await self._read_redis(stream_id, after, block)
        except StoreUnavailable as exc:
            # The reader's stream ends with an error event of its own (not in the log).
            final = {
                "type": "error",
                "message": str(exc),
                "code": errors.STORE_UNAVAILABLE,
                "session_id": self._session_of.get(stream_id) or self.local.session_of(stream_id),
            }
            return [encode_event(after + 1, final)], True

    async def _range(self, stream_id: str, after: int) -> ReadResult | None:
        with self._guard():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xrange(f"{PREFIX}log:{stream_id}", f"0-{after + 1}", "+")
                pipe.hmget(f"{PREFIX}st:{stream_id}", "session", "finished")
                entries, (session, finished) = await pipe.execute()
        if session is None:
            return None
        self._remember(stream_id, session.decode())
        return [fields[b"f"] for _, fields in entries], finished == b"1"

    async def _read_redis(self, stream_id: str, after: int, block: float) -> ReadResult | None:
        if block <= 0:
            return await self._range(stream_id, after)
        assert self._blocking is not None
        with self._guard():
            found: Any = await self._blocking.xread(
                {f"{PREFIX}log:{stream_id}": f"0-{after}"}, block=max(1, int(block * 1000))
            )
        if found:
            entries = found[0][1]
            return [fields[b"f"] for _, fields in entries], b"e" in entries[-1][1]
        # Quiet for a whole wait: is the owner still there?  (Closes the stream if not.)
        if await self._run("CHECK", stream_id) == 0:
            return None
        return await self._range(stream_id, after)

    def debug_counts(self) -> dict[str, int]:
        return self.local.counts()

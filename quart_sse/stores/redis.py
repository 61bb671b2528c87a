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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from quart_sse import codes
from quart_sse.codes import StoreUnavailable
from quart_sse.ids import PROCESS_INSTANCE
from quart_sse.models import Message, Promoted, StreamInfo, Turn, TurnLog, now_iso
from quart_sse.stores import redis_lua as lua
from quart_sse.stores.base import Append, CancelHandler, Tail, activity_ms, title_of
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


def _load(raw: bytes) -> Message:
    return Message(**json.loads(raw))


CONTROL = f"{PREFIX}control"
"""The pub/sub channel on which instances ask each other to cancel a generation."""


def _turn_log(entries: Sequence[tuple[bytes, Mapping[bytes, bytes]]], last: int) -> TurnLog:
    """A turn log's entries (``0-n``: turn n; a field ``x``: the session was deleted)."""
    turns: list[Turn] = []
    ended = False
    for entry_id, fields in entries:
        if b"x" in fields:
            ended = True
            continue
        number = int(entry_id.split(b"-")[1])
        flags = fields.get(b"f", b"")
        turns.append(Turn(number, fields[b"s"].decode(), _load(fields[b"m"]), b"q" in flags, b"r" in flags))
        last = max(last, number)
    return TurnLog(turns, last, ended)


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
        self._listener: asyncio.Task[None] | None = None
        self._on_cancel: CancelHandler | None = None

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
            for name in (
                "BEGIN",
                "ENQUEUE",
                "UNQUEUE",
                "APPEND",
                "SAVE",
                "LOAD",
                "CHECK",
                "RENEW",
                "LIST",
                "COUNT",
                "CLEAR",
            )
        }
        self._renewer = asyncio.create_task(self._renew_forever(), name="redis-lease-renewer")
        if self._on_cancel is not None:
            self._listener = asyncio.create_task(self._listen_forever(), name="redis-control")

    async def aclose(self) -> None:
        for task in (self._renewer, self._listener):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
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

    async def begin_generation(
        self, session_id: str, stream_id: str, message: Message, *, regenerate: bool = False
    ) -> int:
        found = await self._run(
            "BEGIN",
            session_id,
            stream_id,
            int(self.lease * 1000),
            _dump(message),
            title_of(message.content) if message.role == "user" else "",
            "1" if regenerate else "0",
            now=message.timestamp,
        )
        if found == -1:
            raise codes.SessionNotFound(session_id)
        if found == -2:
            raise codes.NothingToRegenerate(session_id)
        if isinstance(found, bytes):
            raise codes.GenerationRunning(session_id, found.decode())
        self._owned.add(stream_id)
        return int(found[0])

    async def save_answer(self, session_id: str, stream_id: str, message: Message | None) -> int | None:
        return (await self.end_generation(session_id, stream_id, message))[0]

    async def end_generation(
        self, session_id: str, stream_id: str, message: Message | None
    ) -> tuple[int | None, Promoted | None]:
        found = await self._run(
            "SAVE",
            session_id,
            stream_id,
            _dump(message) if message else "",
            int(self.lease * 1000),
            now=message.timestamp if message else None,
        )
        if not isinstance(found, list):
            return (int(found) if found >= 0 else None), None
        count, queued, raw, key = found
        self._owned.add(queued.decode())
        return int(count), Promoted(queued.decode(), _load(raw), key.decode())

    async def enqueue(
        self, session_id: str, stream_id: str, message: Message, client_key: str = ""
    ) -> int | None:
        found = await self._run("ENQUEUE", session_id, stream_id, _dump(message), client_key)
        if found == -1:
            raise codes.SessionNotFound(session_id)
        if found == 0:
            return None
        if isinstance(found, bytes):
            raise codes.MessageQueued(session_id, found.decode())
        return int(found[0])

    async def cancel_queued(self, stream_id: str, code: str) -> bool:
        return bool(await self._run("UNQUEUE", stream_id, code))

    # Session turn logs and control --------------------------------------------------------

    async def turns(self, session_id: str, after: int) -> TurnLog | None:
        with self._guard():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xrange(f"{PREFIX}tl:{session_id}", f"0-{after + 1}", "+")
                pipe.hget(f"{PREFIX}s:{session_id}", "turns")
                entries, last = await pipe.execute()
        log = _turn_log(entries, int(last or 0))
        if last is None and not log.ended and not await self._exists(session_id):
            return None
        return log

    async def _exists(self, session_id: str) -> bool:
        with self._guard():
            return bool(await self.redis.exists(f"{PREFIX}s:{session_id}"))

    async def wait_turns(self, session_id: str, after: int, block: float) -> TurnLog | None:
        assert self._blocking is not None
        with self._guard():
            found: Any = await self._blocking.xread(
                {f"{PREFIX}tl:{session_id}": f"0-{after}"}, block=max(1, int(block * 1000))
            )
        if found:
            return _turn_log(found[0][1], after)
        return await self.turns(session_id, after)

    async def publish_cancel(self, stream_id: str, code: str) -> None:
        with self._guard():
            await self.redis.publish(CONTROL, json.dumps({"cancel": stream_id, "code": code}))

    def listen(self, handler: CancelHandler) -> None:
        self._on_cancel = handler

    async def _listen_forever(self) -> None:
        """Subscribe to :data:`CONTROL` and pass each cancel on; resubscribe after a failure."""
        assert self._blocking is not None and self._on_cancel is not None
        while True:
            try:
                async with self._blocking.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CONTROL)
                    while True:
                        message = await pubsub.get_message(timeout=self.heartbeat)
                        if message is not None:
                            body = json.loads(message["data"])
                            self._on_cancel(str(body["cancel"]), str(body["code"]))
            except (RedisError, OSError, ValueError, KeyError) as exc:
                log.warning("Redis control channel: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(0.5)

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
            session, finished, last, closed, uid, queued = await self.redis.hmget(
                f"{PREFIX}st:{stream_id}", "session", "finished", "last", "closed", "uid", "queued"
            )
        if session is None:
            return None
        code = closed.decode() if closed else None
        last_id = int(last) + (code is not None)
        owner = uid.decode() if uid else None
        return StreamInfo(stream_id, session.decode(), finished == b"1", last_id, code, owner, queued == b"1")

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

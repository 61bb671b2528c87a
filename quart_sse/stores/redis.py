"""The Redis store: sessions and stream logs shared by every instance, on one Redis or on a
Redis Cluster.

``REDIS_URL`` names one Redis, or any node of a cluster: :meth:`RedisStore.connect` asks it
(``INFO cluster``) and takes redis-py's ``RedisCluster`` client when it is one; the rest of
the code is the same for both.  Keys are laid out for slots (see :mod:`redis_lua`): a
session and its streams share a hash tag, so every script runs in one slot; what spans
sessions is written outside the scripts, in shards of its own (:mod:`redis_sessions`, and
the instance registry here).  A stream's session is found from its id through a key of
the stream's own (``qs:{<stream>}:in``), read once per process and stream.

Each stream's log is a Redis Stream whose entry ``0-k`` is event ``k``.  The instance that
runs a generation holds a lease on it (renewed by one task per process); every write of
the owner is checked against the lease inside a Lua script, and a reader anywhere that
finds the lease lapsed closes the stream as ``interrupted`` in one atomic step (an entry
``c`` in the log, no frame: its readers write the final event).  Readers on the owning
instance are served by that instance's hub (no Redis read per batch); readers elsewhere
wait here (:meth:`RedisStore.wait`), in ``XREAD BLOCK`` commands every reader of a slot
shares (:mod:`redis_watch`: one connection per slot group, not one per reader).

Cancels between instances go over plain ``PUBLISH`` on one channel: on a cluster every node
passes it on to every other, so a subscriber on any node hears it, and a subscriber whose
node went away resubscribes on another.  (Sharded pub/sub, ``SPUBLISH``, would confine the
channel to one shard: cheaper per message, but every instance would have to follow that
shard's node through failovers; cancels are rare, a few per second at most.)

Redis errors become :class:`~quart_sse.codes.StoreUnavailable`; the client reconnects by
itself, once and at once, on the next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError, NoScriptError, RedisClusterException, RedisError

from quart_sse import codes
from quart_sse.codes import StoreUnavailable
from quart_sse.ids import PROCESS_INSTANCE
from quart_sse.models import Message, Promoted, StreamInfo, Turn, TurnLog, now_iso
from quart_sse.stores import redis_lua as lua
from quart_sse.stores.base import Append, CancelHandler, Tail, activity_ms, title_of
from quart_sse.stores.redis_sessions import (
    PREFIX,
    RedisSessions,
    session_keys,
    session_prefix,
    stream_home,
    stream_keys,
)
from quart_sse.stores.redis_watch import Watch

log = logging.getLogger("quart_sse.stores.redis")

UNREACHABLE = "the store (Redis) is unreachable; try again shortly"
POOL_WAIT = 5.0
"""Seconds a request waits for a free command connection in a burst (a frozen Redis frees
them within REDIS_TIMEOUT, as each command on them times out)."""
COMMAND_CONNECTIONS = 256  # connections for commands; more requests at once wait up to 5 s for one
READER_CONNECTIONS = 10_000  # shared blocking reads (one per slot group, redis_watch) and pub/sub
CLUSTER_SHARDS = 16
"""Shards of what spans sessions on a cluster (the session index of all owners, the instance
registry): at most this many slots take those writes, and a listing of every session reads
this many index pairs.  One on a single Redis."""
HOMES_CACHED = 100_000  # stream -> session entries a process remembers (each ~200 bytes)
ABANDONED_KEPT = 10_000  # streams given up for a lost Redis, closed here once it is back
ABANDONED_RETRY = 1.0  # seconds between tries to close them while Redis is still away


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


def _cancel_kept() -> None:
    """Raise the cancel of the current task if a Redis call swallowed it.

    redis-py (8.1, on Python 3.11) can return normally from a command whose task was
    cancelled while it took a pooled connection (the cancel lands in the pool's wait): a
    loop that goes on to sleep after it would never end, and ``aclose()`` would wait for it
    forever.  (redis/redis-py#2028 reports the same for blocking commands.)"""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


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
    """Sessions, messages and stream logs in Redis (one, or a cluster), shared by several
    server processes."""

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
        self.cluster: bool | None = None  # None until Redis has said which it is
        self.shards = 1
        self._owned: dict[str, str] = {}  # the streams generated here (leases renewed): their sessions
        self._homes: dict[str, str] = {}  # stream -> session, as read (never changes)
        # session -> its owner ("": none), as seen (never changes): on a single Redis the
        # session scripts write the owner's index pair themselves when it is known here.
        self._owners: dict[str, str] = {}
        # Sessions created for a generation that begins at once (create_session(deferred=True)):
        # their writes, queued on the pipeline of their first script (single Redis).
        self._unwritten: dict[str, Callable[[Any], None]] = {}
        self._redis: Any = None
        self._blocking: Any = None
        self._watch: Any = None  # the shared blocking reads (a Watch, once Redis is known)
        self._gate: asyncio.Semaphore | None = None  # commands at once, on a cluster
        self._scripts: dict[str, Any] = {}
        self._detecting = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None
        # Streams given up while Redis was away (their leases are not renewed): closed by
        # this instance as soon as Redis answers again, so that their sessions take a new
        # message at once, not after a lease (409 generation_running until then).
        self._abandoned: dict[str, str] = {}
        self._misnamed = False  # REDIS_URL names a database a cluster does not have (said once)
        self._closer: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._on_cancel: CancelHandler | None = None

    # Lifecycle ---------------------------------------------------------------------------

    def _options(self, socket_timeout: float, max_connections: int) -> dict[str, Any]:
        # One quick retry on a broken connection (a pooled connection gone stale after a Redis
        # restart), none on a timeout, no backoff: a Redis that is gone or frozen is reported
        # within REDIS_TIMEOUT, not after several slow attempts.
        return {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
            "health_check_interval": 10,
            "max_connections": max_connections,
        }

    def _make(self, socket_timeout: float, max_connections: int, *, wait: bool) -> Any:
        options = self._options(socket_timeout, max_connections)
        if self.cluster:
            # max_connections is per node; the cluster pool does not wait for a free one.
            return RedisCluster.from_url(self.url, **options)
        # redis-py's pool holds 100 connections and then fails ("Too many connections"): a
        # burst of requests waits for a free one instead (wait=True); readers elsewhere each
        # hold one while they block in XREAD, so theirs is as large as the streams allowed.
        # A max_connections in REDIS_URL's query wins over both.
        if wait:
            pool: ConnectionPool = BlockingConnectionPool.from_url(self.url, timeout=POOL_WAIT, **options)
        else:
            pool = ConnectionPool.from_url(self.url, **options)
        return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it

    async def _detect(self) -> None:
        """Ask Redis whether it is a cluster node, then make the clients (once)."""
        async with self._detecting:
            if self.cluster is not None:
                return
            # Database 0 for the question: a cluster refuses SELECT of any other (said below).
            options: dict[str, Any] = dict(parse_url(self.url))
            database = int(options.pop("db", 0) or 0)
            probe = Redis(**options, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
            try:
                async with self._guard():
                    info = await probe.info("cluster")
            finally:
                await probe.aclose()
            cluster = bool(int(info.get("cluster_enabled", 0)))
            if cluster and database:
                # (Each command would fail "SELECT is not allowed in cluster mode": say why once.)
                if not self._misnamed:
                    log.error(
                        "REDIS_URL names database %s, but a Redis Cluster has only database 0: "
                        "end REDIS_URL with /0 or with the port",
                        database,
                    )
                    self._misnamed = True
                raise StoreUnavailable(UNREACHABLE)
            self.shards = CLUSTER_SHARDS if cluster else 1
            self.cluster = cluster
            self._redis = self._make(self.timeout, COMMAND_CONNECTIONS, wait=True)
            # The shared reads block 1 s at most: a wake an unblock missed (under load the
            # XREAD can reach Redis after every retry of its CLIENT UNBLOCK) costs 1 s, not
            # a heartbeat (one XREAD a second per slot group when idle).  Their socket
            # timeout is that block and REDIS_TIMEOUT: a frozen Redis ends the readers'
            # waits with store_unavailable within seconds (it took a heartbeat and more).
            block = min(self.heartbeat, 1.0)
            self._blocking = self._make(block + self.timeout, READER_CONNECTIONS, wait=False)
            self._watch = Watch(self._blocking, self._redis, cluster=cluster, block=block)
            if cluster:  # its pool does not wait for a free connection: the guard does
                self._gate = asyncio.Semaphore(COMMAND_CONNECTIONS)
                # Learn the slots now: redis-py initializing on the first commands of a
                # burst closes connections others are opening (AttributeError inside it).
                async with self._guard():
                    await self._redis.initialize()
                    await self._blocking.initialize()
            names = (*lua.SESSION_SCRIPTS, "APPEND", "RENEW", "LIST", "COUNT")
            self._scripts = {name: self._redis.register_script(getattr(lua, name)) for name in names}
            log.info("Redis at %s: %s", self.url.split("@")[-1], "a cluster" if cluster else "one server")

    async def _client(self) -> Any:
        if self.cluster is None:
            await self._detect()
        return self._redis

    async def connect(self) -> None:
        """Start the lease renewal and the control channel; Redis need not be up yet (which
        kind it is, one server or a cluster, is asked at the first command that finds it)."""
        with contextlib.suppress(StoreUnavailable):
            await self._detect()
        self._renewer = asyncio.create_task(self._renew_forever(), name="redis-lease-renewer")
        if self._on_cancel is not None:
            self._listener = asyncio.create_task(self._listen_forever(), name="redis-control")

    async def aclose(self) -> None:
        for task in (self._renewer, self._listener, self._closer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._renewer is not None and self._redis is not None:
            # Leave the instance registry now (else it counts this instance until its lease
            # lapses); a Redis that is gone lets the lease do it.
            with contextlib.suppress(StoreUnavailable):
                await self._leave_registry()
        if self._watch is not None:
            await self._watch.aclose()
        for client in (self._redis, self._blocking):
            if client is not None:
                await client.aclose()

    @property
    def redis(self) -> Any:
        """The client (typed Any: redis-py's replies are unions of str and bytes; ours are bytes)."""
        assert self._redis is not None, "RedisStore.connect() was not called, or Redis was never reached"
        return self._redis

    @contextlib.asynccontextmanager
    async def _guard(self, *, command: bool = True) -> AsyncIterator[None]:
        """Redis's errors as :class:`StoreUnavailable`.  On a cluster, also a place among
        COMMAND_CONNECTIONS calls at once, waited for up to POOL_WAIT: redis-py's cluster
        pool fails at once when a node's connections are all taken (a 503 for every request
        of a burst), where the single-Redis pool waits.  ``command=False``: a shared blocking
        read (:mod:`redis_watch`), which takes no command connection, takes no place."""
        gate = self._gate if command else None
        if gate is not None:
            try:
                await asyncio.wait_for(gate.acquire(), POOL_WAIT) if gate.locked() else await gate.acquire()
            except TimeoutError:
                log.warning("Redis: no free connection within %s s", POOL_WAIT)
                raise StoreUnavailable(UNREACHABLE) from None
        try:
            yield
        except (RedisError, RedisClusterException) as exc:
            # The detail (with Redis's address) goes to the log, never to a client.
            log.warning("Redis: %s: %s", type(exc).__name__, exc)
            raise StoreUnavailable(UNREACHABLE) from None
        finally:
            if gate is not None:
                gate.release()

    # Scripts -----------------------------------------------------------------------------

    async def _session_script(
        self,
        name: str,
        session_id: str,
        *args: Any,
        now: str | None = None,
        streams: Sequence[str] = (),
        home: str | None = None,
        load: int | None = None,
    ) -> Any:
        """Run a script of one session with the keys of the session and of ``streams``; again
        with those of the streams it asks for (``{'?', ...}``: its session's running or queued
        one, to close or start).  Applies the session's move in the indexes; the result.

        On a single Redis (a round trip costs the client as much as the script's own work),
        the script writes the session's indexes itself when its owner is known here
        (:data:`redis_lua.HEAD`'s ``indexed``); ``home``, a stream whose home
        (:func:`stream_home`) is written in the script's round trip, first; ``load``, this
        instance's count of streams, written to the registry by the script."""
        await self._client()
        now = now or now_iso()
        given = list(streams)
        if self.cluster:  # the keys of several slots: each write on its own
            if home is not None:
                await self._place_stream(home, session_id)
            home = None
        for _ in range(4):
            keys = session_keys(session_id)
            for stream_id in given:
                keys += stream_keys(session_id, stream_id)
            indexed = load_until = written = ""
            owner = self._owners.get(session_id)
            if not self.cluster and owner is not None:
                indexed = f"o:{owner}" if owner else "-"
                keys += self._pair(session_id, None)
                if owner:
                    keys += self._pair(session_id, owner)
            if not self.cluster and load is not None:
                keys += self._own_registry()
                load_until, written = str(self._lease_until_ms()), str(load)
            head = (
                session_prefix(session_id),
                self.instance_id,
                now,
                int(time.time() * 1000),
                int((self.session_ttl or 0) * 1000),
                int(self.retention * 1000),
                activity_ms(now),
                indexed,
                load_until,
                written,
            )
            before: list[Callable[[Any], None]] = []
            if (create := self._unwritten.pop(session_id, None)) is not None:
                before.append(create)
            if home is not None:
                before.append(functools.partial(self._queue_home, stream_id=home, session_id=session_id))
                home = None
            async with self._guard():
                if before:
                    reply = await self._after(before, name, keys, (*head, *args))
                else:
                    reply = await self._scripts[name](keys=keys, args=(*head, *args))
            if reply[0] == b"?":
                given += [raw.decode() for raw in reply[1:] if raw and raw.decode() not in given]
                continue
            moved, result = reply
            self._know_owner(session_id, moved[2].decode())
            await self._reindex(session_id, moved)
            return result
        raise StoreUnavailable(UNREACHABLE)  # the session changed under us four times over

    async def _after(
        self, before: Sequence[Callable[[Any], None]], name: str, keys: list[str], args: Sequence[Any]
    ) -> Any:
        """Plain writes (each queues its commands on a pipeline; all idempotent), then the
        script: one pipeline, one round trip (single Redis).  The script's reply."""
        script = self._scripts[name]
        for attempt in (1, 2):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for queue in before:
                        queue(pipe)
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    return (await pipe.execute())[-1]
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.redis.script_load(script.script)
        raise AssertionError("unreachable")

    async def _batch(self, name: str, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """One script over several groups of keys (one slot each): one call on a single Redis
        (one group), a pipeline (split by node) on a cluster.  The scripts batched are
        idempotent, so a batch is run again whole after a node forgot its scripts."""
        script = self._scripts[name]
        if len(calls) == 1:
            keys, args = calls[0]
            return [await script(keys=keys, args=args)]
        client = await self._client()
        for attempt in (1, 2):
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                await client.script_load(script.script)
        raise AssertionError("unreachable")

    def _group(self, items: Iterable[tuple[str, str]]) -> dict[int, list[tuple[str, str]]]:
        """(stream, session) pairs by slot (all in one group on a single Redis)."""
        groups: dict[int, list[tuple[str, str]]] = {}
        for stream_id, session_id in items:
            tag = session_prefix(session_id).encode("utf-8", "surrogateescape")
            slot = key_slot(tag) if self.cluster else 0
            groups.setdefault(slot, []).append((stream_id, session_id))
        return groups

    # Streams and their sessions ----------------------------------------------------------

    async def _home(self, stream_id: str) -> str | None:
        """The session of a stream (None: unknown, or expired)."""
        session_id = self._owned.get(stream_id) or self._homes.get(stream_id)
        if session_id is not None:
            return session_id
        client = await self._client()
        async with self._guard():
            raw = await client.get(stream_home(stream_id))
        if raw is None:
            return None
        return self._remember(stream_id, raw.decode("utf-8", "surrogateescape"))

    def _remember(self, stream_id: str, session_id: str) -> str:
        if len(self._homes) >= HOMES_CACHED:
            for old in list(self._homes)[: HOMES_CACHED // 10]:
                del self._homes[old]
        self._homes[stream_id] = session_id
        return session_id

    async def _place_stream(self, stream_id: str, session_id: str) -> None:
        """Write where the stream lives (before its log opens); it lasts a lease and the
        retention, and the renewal carries it on while the stream runs or waits in a queue."""
        client = await self._client()
        async with self._guard():
            await client.set(stream_home(stream_id), session_id, px=self._home_ms())
        self._remember(stream_id, session_id)

    def _home_ms(self) -> int:
        """How long a stream's home lasts unrenewed: a lease and the retention (ms)."""
        return int((self.lease + self.retention) * 1000)

    def _queue_home(self, pipe: Any, stream_id: str, session_id: str) -> None:
        """:meth:`_place_stream` queued on a pipeline."""
        pipe.set(stream_home(stream_id), session_id, px=self._home_ms())
        self._remember(stream_id, session_id)

    async def begin_generation(
        self, session_id: str, stream_id: str, message: Message, *, regenerate: bool = False
    ) -> int:
        found = await self._session_script(
            "BEGIN",
            session_id,
            stream_id,
            int(self.lease * 1000),
            _dump(message),
            title_of(message.content) if message.role == "user" else "",
            "1" if regenerate else "0",
            session_id,
            now=message.timestamp,
            streams=[stream_id],
            home=stream_id,
            load=len(self._owned) + 1,  # this stream's, if it starts (published with the indexes)
        )
        started = not isinstance(found, (int, bytes))
        if started:
            self._owned[stream_id] = session_id
        if self.cluster or not started:  # (on a single Redis a start was published by BEGIN)
            await self._publish_load()
        if found == -1:
            raise codes.SessionNotFound(session_id)
        if found == -2:
            raise codes.NothingToRegenerate(session_id)
        if isinstance(found, bytes):
            raise codes.GenerationRunning(session_id, found.decode())
        return int(found[0])

    async def save_answer(self, session_id: str, stream_id: str, message: Message | None) -> int | None:
        return (await self.end_generation(session_id, stream_id, message))[0]

    async def end_generation(
        self, session_id: str, stream_id: str, message: Message | None
    ) -> tuple[int | None, Promoted | None]:
        found = await self._session_script(
            "SAVE",
            session_id,
            stream_id,
            _dump(message) if message else "",
            int(self.lease * 1000),
            now=message.timestamp if message else None,
            streams=[stream_id],
        )
        if not isinstance(found, list):
            return (int(found) if found >= 0 else None), None
        count, queued, raw, key = found
        self._owned[queued.decode()] = session_id
        await self._publish_load()
        return int(count), Promoted(queued.decode(), _load(raw), key.decode())

    async def enqueue(
        self, session_id: str, stream_id: str, message: Message, client_key: str = ""
    ) -> int | None:
        await self._place_stream(stream_id, session_id)
        found = await self._session_script(
            "ENQUEUE", session_id, stream_id, _dump(message), client_key, session_id, streams=[stream_id]
        )
        if found == -1:
            raise codes.SessionNotFound(session_id)
        if found == 0:
            return None
        if isinstance(found, bytes):
            raise codes.MessageQueued(session_id, found.decode())
        return int(found[0])

    async def cancel_queued(self, stream_id: str, code: str) -> bool:
        session_id = await self._home(stream_id)
        if session_id is None:
            return False
        return bool(await self._session_script("UNQUEUE", session_id, stream_id, code, streams=[stream_id]))

    # Session turn logs and control --------------------------------------------------------

    async def turns(self, session_id: str, after: int) -> TurnLog | None:
        client = await self._client()
        s, _, tl = session_keys(session_id)
        async with self._guard():
            async with client.pipeline(transaction=False) as pipe:
                pipe.xrange(tl, f"0-{after + 1}", "+")
                pipe.hget(s, "turns")
                entries, last = await pipe.execute()
        log = _turn_log(entries, int(last or 0))
        if last is None and not log.ended and not await self._exists(session_id):
            return None
        return log

    async def _exists(self, session_id: str) -> bool:
        client = await self._client()
        async with self._guard():
            return bool(await client.exists(session_keys(session_id)[0]))

    async def wait_turns(self, session_id: str, after: int, block: float) -> TurnLog | None:
        await self._client()
        async with self._guard(command=False):
            found = await self._watch.read(session_keys(session_id)[2], f"0-{after}", block)
        if found:
            return _turn_log(found, after)
        return await self.turns(session_id, after)

    async def publish_cancel(self, stream_id: str, code: str) -> None:
        client = await self._client()
        async with self._guard():
            await client.publish(CONTROL, json.dumps({"cancel": stream_id, "code": code}))

    def listen(self, handler: CancelHandler) -> None:
        self._on_cancel = handler

    async def _subscriber(self, attempt: int) -> tuple[Any, bool]:
        """A client to subscribe with, and whether it is ours to close: on a cluster, a plain
        client of one node (another node after each failure; PUBLISH reaches every node)."""
        if not self.cluster:
            return self._blocking, False
        await self._blocking.initialize()  # (the nodes are known after it)
        nodes = self._blocking.get_nodes()
        node = nodes[attempt % len(nodes)]
        return Redis(host=node.host, port=node.port, socket_connect_timeout=self.timeout), True

    async def _listen_forever(self) -> None:
        """Subscribe to :data:`CONTROL` and pass each cancel on; resubscribe after a failure."""
        assert self._on_cancel is not None
        attempt = 0
        while True:
            own = False
            client: Any = None
            try:
                await self._client()
                client, own = await self._subscriber(attempt)
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CONTROL)
                    while True:
                        message = await pubsub.get_message(timeout=self.heartbeat)
                        _cancel_kept()
                        if message is not None:
                            body = json.loads(message["data"])
                            self._on_cancel(str(body["cancel"]), str(body["code"]))
            except (
                RedisError,
                RedisClusterException,
                OSError,
                ValueError,
                KeyError,
                StoreUnavailable,
            ) as exc:
                log.warning("Redis control channel: %s: %s", type(exc).__name__, exc)
                attempt += 1
                _cancel_kept()
                await asyncio.sleep(0.5)
            finally:
                if own and client is not None:
                    await client.aclose()

    # Leases and the instance registry -----------------------------------------------------

    def _registry(self, shard: int) -> tuple[str, str]:
        """A shard of the instance registry: instances by lease expiry, their streams by count."""
        return f"{PREFIX}{{cc{shard}}}:instances", f"{PREFIX}{{cc{shard}}}:owned"

    def _own_registry(self) -> tuple[str, str]:
        """The registry shard that holds this instance."""
        return self._registry(key_slot(self.instance_id.encode()) % self.shards)

    def _lease_until_ms(self) -> int:
        """When a lease taken now lapses (ms since the epoch): this instance's registry entry."""
        return int(time.time() * 1000 + self.lease * 1000)

    async def _publish_load(self) -> None:
        """Tell the registry this instance lives and how many streams it generates."""
        instances, owned = self._own_registry()
        client = await self._client()
        async with self._guard():
            async with client.pipeline(transaction=False) as pipe:
                pipe.zadd(instances, {self.instance_id: self._lease_until_ms()})
                pipe.hset(owned, self.instance_id, len(self._owned))
                await pipe.execute()

    async def _leave_registry(self) -> None:
        instances, owned = self._own_registry()
        async with self._guard():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(instances, self.instance_id)
                pipe.hdel(owned, self.instance_id)
                await pipe.execute()

    async def _renew(self) -> None:
        client = await self._client()
        queued: list[str] = []
        groups = list(self._group(self._owned.items()).values())
        lease_ms = int(self.lease * 1000)
        calls: list[tuple[list[str], list[Any]]] = []
        for group in groups:
            keys: list[str] = []
            for stream_id, session_id in group:
                keys += [stream_keys(session_id, stream_id)[2], session_keys(session_id)[0]]
            calls.append((keys, [self.instance_id, lease_ms, *(sid for sid, _ in group)]))
        async with self._guard():
            for start in range(0, len(calls), 1000):
                for _, found in await self._batch("RENEW", calls[start : start + 1000]):
                    queued += [raw.decode() for raw in found]
            # The homes of the streams generated or queued here live on with them.
            async with client.pipeline(transaction=False) as pipe:
                for stream_id in [*self._owned, *queued]:
                    pipe.pexpire(stream_home(stream_id), self._home_ms())
                await pipe.execute()
        await self._publish_load()

    async def _renew_forever(self) -> None:
        while True:
            try:
                await self._renew()
            except StoreUnavailable as exc:
                log.warning("lease renewal failed: %s", exc)
            _cancel_kept()
            await asyncio.sleep(self.lease / 3)

    async def cluster_counts(self) -> dict[str, int]:
        """Live instances and running generations across every instance (by lease)."""
        client = await self._client()
        now = time.time() * 1000
        async with self._guard():
            async with client.pipeline(transaction=False) as pipe:
                for shard in range(self.shards):
                    instances, owned = self._registry(shard)
                    pipe.zrangebyscore(instances, now, "+inf")
                    pipe.hgetall(owned)
                    pipe.zremrangebyscore(instances, "-inf", now - 60_000)
                found = await pipe.execute()
        alive = running = 0
        for live, counts, _ in zip(found[::3], found[1::3], found[2::3], strict=True):
            alive += len(live)
            running += sum(int(counts.get(instance, 0)) for instance in live)
        return {"instances": alive, "active_streams": running}

    # Stream logs -----------------------------------------------------------------------

    async def get_stream(self, stream_id: str) -> StreamInfo | None:
        session_id = await self._home(stream_id)
        if session_id is None:
            return None
        async with self._guard():
            meta = stream_keys(session_id, stream_id)[0]
            session, finished, last, closed, uid, queued = await self.redis.hmget(
                meta, "session", "finished", "last", "closed", "uid", "queued"
            )
        if session is None:
            return None
        code = closed.decode() if closed else None
        last_id = int(last) + (code is not None)
        owner = uid.decode() if uid else None
        return StreamInfo(stream_id, session.decode(), finished == b"1", last_id, code, owner, queued == b"1")

    async def append(self, batch: Sequence[Append]) -> dict[str, str] | None:
        """One script call per slot for the whole flush (one on a single Redis, a pipeline
        split by node on a cluster); the streams that can take no more frames."""
        items = [item for item in batch if item.frames]
        if not items:
            return None
        try:
            homes = [(item.stream_id, await self._home(item.stream_id) or "") for item in items]
            by_stream = {item.stream_id: item for item in items}
            calls: list[tuple[list[str], list[Any]]] = []
            for group in self._group(homes).values():
                keys: list[str] = []
                args: list[Any] = [self.instance_id, int(self.retention * 1000)]
                for stream_id, session_id in group:
                    item = by_stream[stream_id]
                    keys += stream_keys(session_id, stream_id)
                    final = "1" if item.finished else "0"
                    args += [stream_id, final, len(item.frames), item.first, item.text]
                    args += item.frames
                calls.append((keys, args))
            async with self._guard():
                replies = await self._batch("APPEND", calls)
            lost = {raw.decode() for reply in replies for raw in reply[0]}
            for reply in replies:
                for raw in reply[1]:  # lost while its owner is gone or is us: close it now
                    stream_id = raw.decode()
                    await self._session_script(
                        "CHECK", dict(homes)[stream_id], stream_id, "1", streams=[stream_id]
                    )
        except StoreUnavailable as exc:
            log.warning("%s: ending %d generations", exc, len(batch))
            for item in batch:
                session_id = self._owned.pop(item.stream_id, "")
                if session_id:
                    self._abandon(item.stream_id, session_id)
            return {item.stream_id: codes.STORE_UNAVAILABLE for item in batch}
        ended = [item.stream_id for item in items if item.finished or item.stream_id in lost]
        if ended:
            for stream_id in ended:
                self._owned.pop(stream_id, None)
            with contextlib.suppress(StoreUnavailable):
                await self._publish_load()
        return dict.fromkeys(lost, codes.INTERRUPTED) or None

    def _abandon(self, stream_id: str, session_id: str) -> None:
        """Close ``stream_id`` (given up: Redis did not take its frames) once Redis is back:
        its answer so far saved as interrupted, its log closed, its session free.  Past
        :data:`ABANDONED_KEPT` at once, its lease lapses and any instance closes it later."""
        if len(self._abandoned) >= ABANDONED_KEPT:
            return
        self._abandoned[stream_id] = session_id
        if self._closer is None or self._closer.done():
            self._closer = asyncio.create_task(self._close_abandoned(), name="redis-close-abandoned")

    async def _close_abandoned(self) -> None:
        while self._abandoned:
            for stream_id, session_id in list(self._abandoned.items()):
                try:
                    await self._session_script("CHECK", session_id, stream_id, "1", streams=[stream_id])
                except StoreUnavailable:
                    break  # Redis is still away
                self._abandoned.pop(stream_id, None)
            else:
                continue
            _cancel_kept()
            await asyncio.sleep(ABANDONED_RETRY)

    async def read(self, stream_id: str, after: int) -> Tail | None:
        session_id = await self._home(stream_id)
        if session_id is None:
            return None
        meta, log_key, _, _ = stream_keys(session_id, stream_id)
        async with self._guard():
            # The meta first, then the log: a pipeline is not atomic, and a final append or
            # a close landing between the two must not make a log read before it look
            # finished (the reader would end without the final event).  Read in this order,
            # "finished" in the meta means the log read after it is whole, and an end that
            # comes in between is in the entries (their last one has ``e`` or ``c``).
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(meta, "session", "finished")
                pipe.xrange(log_key, f"0-{after + 1}", "+")
                (session, finished), entries = await pipe.execute()
        if session is None:
            return None
        return _tail(entries, finished == b"1")

    async def wait(self, stream_id: str, after: int, block: float) -> Tail | None:
        session_id = await self._home(stream_id)
        if session_id is None:
            return None
        async with self._guard(command=False):
            found = await self._watch.read(stream_keys(session_id, stream_id)[1], f"0-{after}", block)
        if found:
            return _tail(found, False)
        # Quiet for a whole wait: is the owner still there?  (Closes the stream if not.)
        if await self._session_script("CHECK", session_id, stream_id, "0", streams=[stream_id]) == 0:
            return None
        return await self.read(stream_id, after)

    def debug_counts(self) -> dict[str, int]:
        shared = self._watch.counts() if self._watch is not None else {}
        return {"owned_streams": len(self._owned), **shared}

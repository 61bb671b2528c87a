"""Per-client limits: ``RATE_LIMIT`` messages per minute and ``MAX_STREAMS_PER_CLIENT``.

The edge (:mod:`quart_sse.http.edge`) serves the three chat routes (``POST /chat``,
``POST /chat/stream``, ``GET /streams/{id}/events``) and calls :meth:`Limits.identify` once
per request, then :meth:`Limits.take_message` and :meth:`Limits.slot` from
:func:`quart_sse.http.chat.start_generation` at the place of docs/API.md's 429/503 in the order of
checks (after 401, 400, 413, 404, 409 and the server's own capacity): a refused request
changes nothing, and a request refused for another reason costs the client nothing.

Why not quart-rate-limiter: its ``before_request`` hook never sees the streaming routes
(the edge serves them), it runs before validation (a 400 or 404 would count, and a 429 would
come before them), and its stores read then write the client's state in two steps, so
concurrent requests (or instances on one Redis) all pass together, and its Redis keys
never expire.  The algorithm is the same (GCRA, a "theoretical arrival time" per client),
done here in one step: synchronously in memory, in one Lua script on Redis.

Who the client is: the API key when keys are set (only its owner id is kept, in memory or
Redis, never the key: :mod:`quart_sse.http.auth`), else the remote address; ``X-Forwarded-For`` is read only
when the peer is one of ``TRUSTED_PROXIES`` (addresses or networks), right to left, and
the first address that is not a trusted proxy is the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError, RedisClusterException, RedisError

from quart_sse import codes
from quart_sse.config import Settings
from quart_sse.http.auth import NOBODY
from quart_sse.http.scope import header
from quart_sse.models import EVERYONE, Caller

log = logging.getLogger("quart_sse.http")

PERIOD = 60.0
"""RATE_LIMIT counts messages per this many seconds."""

PREFIX = "quart-sse:rate:"
SWEEP_EVERY = 1024
"""The memory limiter drops clients whose state has lapsed once every this many messages."""

# GCRA in one step: allowed when the client's theoretical arrival time (tat) is less than a
# period ahead; then tat moves on by one interval.  Redis's own clock, shared by instances.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allowed_at = tat + interval - period
if now < allowed_at then return allowed_at - now end
if ARGV[3] == '1' then return 0 end  -- only asked: nothing counted
redis.call('SET', KEYS[1], tat + interval, 'PX', tat + interval - now)
return 0
"""


async def redis_client(url: str, command_timeout: float) -> Any:
    """A client for ``url``: ``RedisCluster`` when that node is part of a cluster (asked
    with ``INFO cluster``, as the store asks), else ``Redis``; commands time out after
    ``command_timeout`` s, with one quick retry on a broken connection.  Raises RedisError,
    OSError when Redis does not answer.  (A few lines of redis-py of our own rather than
    the store's: the edge does not import the stores.)"""
    from redis.asyncio import Redis, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    probe = Redis.from_url(url, socket_timeout=command_timeout, socket_connect_timeout=command_timeout)
    try:
        info = await probe.info("cluster")
    finally:
        await probe.aclose()
    options: dict[str, Any] = {
        "socket_timeout": command_timeout,
        "socket_connect_timeout": command_timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
    }
    if int(info.get("cluster_enabled", 0)):
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Client:
    """Who sent a request: ``address`` for logs, ``key`` for the limits (never an API key)."""

    address: str
    key: str


def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(text: str) -> str | None:
    """``text`` as an IP address in its one canonical form (``0:0::1`` is ``::1``), or None:
    not an address, or one with an IPv6 zone (``fe80::1%eth0``), which names an interface
    of the proxy's own machine and would let any text through as a client's identity."""
    if "%" in text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


class Limits:
    """The per-client limits of one process; the rate limit is cluster-wide on Redis."""

    def __init__(self, settings: Settings) -> None:
        self.rate = settings.rate_limit
        self.max_streams = settings.max_streams_per_client
        self.proxies = _networks(settings.trusted_proxies)
        self.redis_url = settings.redis_url if self.rate else None
        self.redis_timeout = settings.redis_timeout
        self.interval = PERIOD / self.rate if self.rate else 0.0
        self.streams: dict[str, int] = {}  # client key -> open stream responses
        self._tats: dict[str, float] = {}  # client key -> theoretical arrival time (monotonic)
        self._takes = 0
        self._redis: Any = None
        self._script: Any = None
        self._making = asyncio.Lock()

    # Lifecycle (the Redis client is made in the serving loop) ----------------------------

    async def connect(self) -> None:
        """Make the Redis client of RATE_LIMIT now if Redis answers; else at the first message."""
        if self.redis_url:
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await self._gcra()

    async def _gcra(self) -> Any:
        """The rate script, on a client made once: redis-py's cluster client when the node
        of REDIS_URL says ``cluster_enabled:1`` (a plain client's command would fail there
        with MOVED for most keys), a plain one otherwise.  Raises RedisError, OSError."""
        async with self._making:
            if self._script is None:
                assert self.redis_url is not None
                self._redis = await redis_client(self.redis_url, self.redis_timeout)
                self._script = self._redis.register_script(_GCRA)
        return self._script

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._script = None

    # Who ---------------------------------------------------------------------------------

    def address(self, scope: Mapping[str, Any]) -> str:
        """The client's address: the peer's, or from X-Forwarded-For sent by a trusted proxy."""
        client = scope.get("client")
        peer = str(client[0]) if client else "?"
        if not self.proxies or not _trusted(peer, self.proxies):
            return peer
        hops = [hop.strip() for hop in (header(scope, b"x-forwarded-for") or "").split(",") if hop.strip()]
        addresses = []
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return peer  # not an address (``unknown``, garbage): nothing past it is believed
            if not _trusted(address, self.proxies):
                return address
            addresses.append(address)
        return addresses[-1] if addresses else peer

    def identify(self, scope: Mapping[str, Any], caller: Caller = EVERYONE) -> Client:
        """The client of an ASGI request made for ``caller``: its key's owner id, else its address."""
        address = self.address(scope)
        if caller.owner is not None and caller is not NOBODY:
            return Client(address, f"key:{caller.owner}")
        return Client(address, f"addr:{address}")

    # RATE_LIMIT ----------------------------------------------------------------------------

    async def take_message(self, client: Client, *, count: bool = True) -> None:
        """Count one message of ``client``, or raise 429 (counting nothing) past RATE_LIMIT;
        with ``count`` false, only raise 429 where counting would."""
        if not self.rate:
            return
        if self.redis_url:
            try:
                args = [self.interval * 1000, PERIOD * 1000, "0" if count else "1"]
                script = self._script or await self._gcra()
                wait_ms = int(await script(keys=[PREFIX + client.key], args=args))
            except (RedisError, RedisClusterException, OSError) as exc:
                log.warning("RATE_LIMIT on Redis: %s: %s", type(exc).__name__, exc)
                raise codes.StoreUnavailable("the store (Redis) is unreachable; try again shortly") from None
            wait = wait_ms / 1000
        else:
            wait = self._take_local(client.key, count)
        if wait > 0:
            raise rate_limited(
                f"more than {self.rate} messages in a minute from this client (RATE_LIMIT); "
                f"try again in {math.ceil(wait)} s",
                wait,
            )

    def _take_local(self, key: str, count: bool = True) -> float:
        now = time.monotonic()
        tat = max(self._tats.get(key, now), now)
        allowed_at = tat - (PERIOD - self.interval)  # exact when interval == PERIOD (RATE_LIMIT=1)
        if now < allowed_at or not count:
            return max(allowed_at - now, 0.0)
        self._tats[key] = tat + self.interval
        self._takes += 1
        if self._takes % SWEEP_EVERY == 0:
            self._tats = {k: v for k, v in self._tats.items() if v > now}
        return 0.0

    # MAX_STREAMS_PER_CLIENT ------------------------------------------------------------------

    def check_generations(self, client: Client, running: int) -> None:
        """429 ``too_many_streams`` when ``client`` already has MAX_STREAMS_PER_CLIENT
        generations running (``running`` of them)."""
        if self.max_streams and running >= self.max_streams:
            raise rate_limited(
                f"this client has {running} answers generating (MAX_STREAMS_PER_CLIENT); "
                "try again when one ends",
                2,
                code=codes.TOO_MANY_STREAMS,
            )

    def slot(self, client: Client) -> StreamSlot:
        """A place for one open stream response of ``client``; taken by ``acquire()``."""
        return StreamSlot(self, client.key) if self.max_streams else NO_SLOT

    def debug_counts(self) -> dict[str, int]:
        return {"client_streams": sum(self.streams.values()), "limited_clients": len(self.streams)}


class StreamSlot:
    """One open stream response counted against MAX_STREAMS_PER_CLIENT; release() is idempotent."""

    __slots__ = ("held", "key", "limits")

    def __init__(self, limits: Limits | None, key: str) -> None:
        self.limits = limits
        self.key = key
        self.held = False

    def acquire(self) -> None:
        limits = self.limits
        if limits is None or self.held:
            return
        held = limits.streams.get(self.key, 0)
        assert limits.max_streams is not None
        if held >= limits.max_streams:
            raise rate_limited(
                f"this client has {held} streams open (MAX_STREAMS_PER_CLIENT); "
                "close one or try again when one ends",
                2,
                code=codes.TOO_MANY_STREAMS,
            )
        limits.streams[self.key] = held + 1
        self.held = True

    def release(self) -> None:
        limits = self.limits
        if limits is None or not self.held:
            return
        self.held = False
        left = limits.streams[self.key] - 1
        if left:
            limits.streams[self.key] = left
        else:
            del limits.streams[self.key]


NO_SLOT = StreamSlot(None, "")
"""The slot when MAX_STREAMS_PER_CLIENT is unset: counts nothing."""


def rate_limited(message: str, wait: float, *, code: str = codes.RATE_LIMITED) -> codes.Refused:
    return codes.Refused(code, message, retry_after=wait)

"""Stores chosen by URL scheme, imported lazily (the shape of encode/broadcaster)."""

from __future__ import annotations

from urllib.parse import urlsplit

from quart_sse.config import ConfigError, Settings
from quart_sse.stores.base import Append, Store, Tail

__all__ = ["Append", "Store", "Tail", "create_store"]


def create_store(settings: Settings) -> Store:
    url = settings.redis_url
    scheme = urlsplit(url or "memory://").scheme
    if scheme == "memory":
        from quart_sse.stores.memory import MemoryStore

        return MemoryStore(retention=settings.stream_retention, session_ttl=settings.session_ttl)
    if scheme in ("redis", "rediss", "unix"):
        from quart_sse.stores.redis import RedisStore

        assert url is not None
        return RedisStore(
            url,
            retention=settings.stream_retention,
            session_ttl=settings.session_ttl,
            heartbeat=settings.heartbeat_interval,
            timeout=settings.redis_timeout,
        )
    raise ConfigError(f"REDIS_URL has value {url!r}: unsupported scheme {scheme!r} (expected redis://)")

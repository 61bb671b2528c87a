"""Durable Streams in this process's memory (lost on restart, one process only).

Every change runs with no ``await`` inside, so it is atomic against every other request
of the process; a waiting reader is a future woken by the next change of its stream.
Expired streams are found by :meth:`MemoryDurableStore.due` (a scan, for the engine's
periodic sweep) and streams are counted per quota as they come and go.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time

from quart_sse.stores.durable_base import Change, DurableMeta, T


class MemoryDurableStore:
    """:class:`~quart_sse.stores.durable_base.DurableStore` on dicts and lists."""

    name = "memory"

    def __init__(self) -> None:
        self._meta: dict[str, DurableMeta] = {}
        self._log: dict[str, list[bytes]] = {}
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._quotas: dict[str, int] = {}  # quota -> streams held under it
        self._bytes = 0  # of every stream's records

    async def connect(self) -> None:
        return None

    async def aclose(self) -> None:
        for waiters in self._waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def get(self, path: str) -> DurableMeta | None:
        meta = self._meta.get(path)
        return copy.deepcopy(meta) if meta is not None else None

    async def update(self, path: str, change: Change[T]) -> T:
        current = self._meta.get(path)
        done = change(copy.deepcopy(current) if current is not None else None, time.time())
        if done.keep:
            return done.result
        if current is not None and (done.meta is None or done.meta.uid != current.uid):
            self._count(current.quota, -1)
        if done.meta is not None and (current is None or done.meta.uid != current.uid):
            self._count(done.meta.quota, 1)
        self._bytes += (done.meta.size if done.meta is not None else 0) - (current.size if current else 0)
        if done.meta is None:
            self._meta.pop(path, None)
            self._log.pop(path, None)
        else:
            log = self._log.get(path) if current is not None and current.uid == done.meta.uid else None
            if log is None:
                log = self._log[path] = []
            log.extend(done.records)
            self._meta[path] = done.meta
        self._wake(path)
        return done.result

    async def records(self, path: str, first: int, last: int) -> list[bytes]:
        meta = self._meta.get(path)
        log = self._log.get(path)
        if meta is None or log is None:
            return []
        return log[max(first - meta.base - 1, 0) : max(last - meta.base, 0)]

    async def wait(self, path: str, tail: int, block: float) -> None:
        meta = self._meta.get(path)
        if meta is None or meta.tail > tail or meta.closed:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(path, set())
        waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(block):
                    await waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._waiting.pop(path, None)

    def _count(self, quota: str, step: int) -> None:
        held = self._quotas.get(quota, 0) + step
        if held > 0:
            self._quotas[quota] = held
        else:
            self._quotas.pop(quota, None)

    async def count(self, quota: str, now: float) -> tuple[int, int]:
        return self._quotas.get(quota, 0), len(self._meta)

    async def due(self, now: float, limit: int) -> list[str]:
        found: list[str] = []
        for path, meta in self._meta.items():
            if not meta.soft_deleted and meta.expired(now):
                found.append(path)
                if len(found) >= limit:
                    break
        return found

    def _wake(self, path: str) -> None:
        for waiter in self._waiting.get(path, ()):
            if not waiter.done():
                waiter.set_result(None)

    def bytes_held(self) -> int | None:
        return self._bytes

    def debug_counts(self) -> dict[str, int]:
        return {
            "durable_streams": len(self._meta),
            "durable_bytes": self._bytes,
            "durable_waiting": sum(len(w) for w in self._waiting.values()),
        }

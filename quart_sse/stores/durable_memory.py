"""Durable Streams in this process's memory (lost on restart, one process only).

Every change runs with no ``await`` inside, so it is atomic against every other request
of the process; a waiting reader is a future woken by the next change of its stream.
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

    def _wake(self, path: str) -> None:
        for waiter in self._waiting.get(path, ()):
            if not waiter.done():
                waiter.set_result(None)

    def debug_counts(self) -> dict[str, int]:
        return {
            "durable_streams": len(self._meta),
            "durable_waiting": sum(len(w) for w in self._waiting.values()),
        }

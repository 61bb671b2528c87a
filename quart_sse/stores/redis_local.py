"""The Redis store's local half: the streams this process generates, and their readers.

A reader on the instance that owns a stream needs no Redis read per batch: the log
writer's append hands its frames to the waiting readers here, as the memory store does.
Only the last batch is kept; a reader that fell further behind (or a stream that is not
ours) is served from Redis.
"""

from __future__ import annotations

import asyncio

from quart_sse.stores.base import Append, ReadResult

LINGER = 5.0
"""Seconds a finished stream's last batch stays here for readers still on their way."""


class _Local:
    __slots__ = ("base", "finished", "last", "recent", "session_id", "waiters")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.last = 0  # the id of the last frame appended to Redis
        self.base = 0  # ``recent`` holds the frames after this id, up to ``last``
        self.recent: list[bytes] = []
        self.finished = False
        self.waiters: list[asyncio.Future[None]] = []


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()


class LocalLogs:
    def __init__(self) -> None:
        self._logs: dict[str, _Local] = {}

    def open(self, stream_id: str, session_id: str) -> None:
        self._logs[stream_id] = _Local(session_id)

    def owned(self) -> list[str]:
        """The streams whose lease this process keeps (still generating)."""
        return [stream_id for stream_id, log in self._logs.items() if not log.finished]

    def session_of(self, stream_id: str) -> str | None:
        log = self._logs.get(stream_id)
        return log.session_id if log is not None else None

    def appended(self, item: Append) -> None:
        log = self._logs.get(item.stream_id)
        if log is None:
            return
        log.base = log.last
        log.recent = list(item.frames)
        log.last += len(item.frames)
        if item.finished:
            log.finished = True
            asyncio.get_running_loop().call_later(LINGER, self._forget, item.stream_id, log)
        if log.waiters:
            _wake(log.waiters)

    def drop(self, stream_id: str) -> None:
        """Stop serving a stream here (lost, or the store failed): readers go to Redis."""
        log = self._logs.pop(stream_id, None)
        if log is not None:
            _wake(log.waiters)

    def _forget(self, stream_id: str, log: _Local) -> None:
        if self._logs.get(stream_id) is log:
            del self._logs[stream_id]
        _wake(log.waiters)

    def wake_all(self) -> None:
        for log in self._logs.values():
            _wake(log.waiters)

    async def read(self, stream_id: str, after: int, block: float) -> ReadResult | None:
        """Frames after ``after`` from here, or None when Redis must answer."""
        waited = False
        while True:
            log = self._logs.get(stream_id)
            if log is None:
                return None
            if after < log.last:
                if after < log.base:
                    return None
                return log.recent[after - log.base :], log.finished
            if log.finished or block <= 0 or waited:
                return [], log.finished
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            log.waiters.append(waiter)
            timer = loop.call_at(loop.time() + block, _timeout, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                if log.waiters:
                    try:
                        log.waiters.remove(waiter)
                    except ValueError:
                        pass
            waited = True

    def counts(self) -> dict[str, int]:
        return {
            "logs": len(self._logs),
            "waiting_readers": sum(len(log.waiters) for log in self._logs.values()),
        }


def _timeout(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

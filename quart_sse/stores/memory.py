"""The in-memory store: one process, nothing persisted.  The default."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from quart_sse.stores.base import (
    PROCESS_INSTANCE,
    Append,
    Message,
    ReadResult,
    Session,
    StreamInfo,
    now_iso,
)


class _Log:
    __slots__ = ("finished", "frames", "session_id", "waiters")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.frames: list[bytes] = []
        self.finished = False
        self.waiters: list[asyncio.Future[None]] = []


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()


class MemoryStore:
    """Sessions in a dict; each stream's log a list of frames, woken readers by futures.

    A finished log is dropped ``retention`` seconds after its last event (one timer per
    finished stream); sessions idle for ``session_ttl`` seconds are swept once a minute.
    """

    name = "memory"
    instance_id = PROCESS_INSTANCE

    def __init__(self, retention: float = 600.0, session_ttl: float | None = None) -> None:
        self.retention = retention
        self.session_ttl = session_ttl
        self._sessions: dict[str, Session] = {}
        self._touched: dict[str, float] = {}
        self._logs: dict[str, _Log] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        if self.session_ttl is not None:
            self._sweeper = asyncio.create_task(self._sweep_sessions(), name="session-sweeper")

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for log in self._logs.values():
            _wake(log.waiters)

    # Sessions --------------------------------------------------------------------------

    async def create_session(self, session_id: str, model: str, now: str) -> Session:
        session = Session(session_id, model, now, now)
        self._sessions[session_id] = session
        self._touched[session_id] = time.monotonic()
        return session

    async def get_session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def list_sessions(self) -> list[Session]:
        return list(self._sessions.values())

    async def count_sessions(self) -> int:
        return len(self._sessions)

    async def delete_session(self, session_id: str) -> bool:
        self._touched.pop(session_id, None)
        return self._sessions.pop(session_id, None) is not None

    async def clear_session(self, session_id: str) -> bool:
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session.messages = []
        session.last_activity = now_iso()
        self._touched[session_id] = time.monotonic()
        return True

    async def add_message(self, session_id: str, message: Message) -> int | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        session.messages.append(message)
        session.last_activity = message.timestamp
        self._touched[session_id] = time.monotonic()
        return len(session.messages)

    async def begin_generation(self, session_id: str, stream_id: str, message: Message) -> str | None:
        session = self._sessions.get(session_id)
        if session is not None:
            if session.generating is not None:
                return session.generating
            session.generating = stream_id
            await self.add_message(session_id, message)
        self._logs[stream_id] = _Log(session_id)
        return None

    async def save_answer(self, session_id: str, stream_id: str, message: Message | None) -> int | None:
        count = await self.add_message(session_id, message) if message is not None else None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.generating == stream_id:
            session.generating = None
        return count if count is not None else len(session.messages)

    async def cluster_counts(self) -> None:
        return None

    async def _sweep_sessions(self) -> None:
        assert self.session_ttl is not None
        period = min(60.0, max(0.5, self.session_ttl / 4))
        while True:
            await asyncio.sleep(period)
            horizon = time.monotonic() - self.session_ttl
            for session_id, touched in list(self._touched.items()):
                session = self._sessions.get(session_id)
                if touched < horizon and session is not None and session.generating is None:
                    del self._sessions[session_id]
                    del self._touched[session_id]

    # Stream logs -----------------------------------------------------------------------

    async def get_stream(self, stream_id: str) -> StreamInfo | None:
        log = self._logs.get(stream_id)
        if log is None:
            return None
        return StreamInfo(stream_id, log.session_id, log.finished, len(log.frames))

    async def append(self, batch: Sequence[Append]) -> None:
        logs = self._logs
        for item in batch:
            log = logs.get(item.stream_id)
            if log is None:
                continue
            log.frames.extend(item.frames)
            if item.finished:
                log.finished = True
                asyncio.get_running_loop().call_later(self.retention, self._expire, item.stream_id, log)
            if log.waiters:
                _wake(log.waiters)

    def _expire(self, stream_id: str, log: _Log) -> None:
        if self._logs.get(stream_id) is log:
            del self._logs[stream_id]
        _wake(log.waiters)

    async def read(self, stream_id: str, after: int, block: float) -> ReadResult | None:
        log = self._logs.get(stream_id)
        if log is None:
            return None
        frames = log.frames
        if len(frames) > after or log.finished or block <= 0:
            return frames[after:], log.finished
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        log.waiters.append(waiter)
        timer = loop.call_at(loop.time() + block, _timeout, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if log.waiters:  # emptied when woken by an append
                try:
                    log.waiters.remove(waiter)
                except ValueError:
                    pass
        if self._logs.get(stream_id) is not log:
            return None
        return frames[after:], log.finished

    def debug_counts(self) -> dict[str, int]:
        return {
            "logs": len(self._logs),
            "waiting_readers": sum(len(log.waiters) for log in self._logs.values()),
        }


def _timeout(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

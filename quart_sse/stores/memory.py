"""The in-memory store: one process, nothing persisted.  The default."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

from quart_sse.stores.base import (
    PROCESS_INSTANCE,
    Append,
    Message,
    Push,
    ReadResult,
    Session,
    StreamInfo,
    now_iso,
)


class _Waiter:
    """A reader waiting in :meth:`MemoryStore.read`: its position, and how to push to it."""

    __slots__ = ("after", "future", "push")

    def __init__(self, future: asyncio.Future[None], after: int, push: Push | None) -> None:
        self.future = future
        self.after = after
        self.push = push


class _Log:
    __slots__ = ("finished", "frames", "session_id", "waiters")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.frames: list[bytes] = []
        self.finished = False
        self.waiters: list[_Waiter] = []


def _wake(waiters: list[_Waiter]) -> None:
    for waiter in waiters:
        if not waiter.future.done():
            waiter.future.set_result(None)
    waiters.clear()


def _deliver(log: _Log, new: int) -> None:
    """New frames (the last ``new``) reach each waiting reader: pushed, or the reader is woken.

    A push writes the frames for the reader without waking its task; a reader that cannot
    take them now (it has no push, its socket is full or closing), or any reader once the
    stream has ended, is woken and reads them itself.
    """
    frames = log.frames
    start = len(frames) - new
    data = b""
    keep: list[_Waiter] = []
    for waiter in log.waiters:
        if waiter.future.done():
            continue
        if waiter.push is not None and not log.finished and waiter.after == start:
            if not data:
                data = frames[start] if new == 1 else b"".join(frames[start:])
            if waiter.push(data, new):
                waiter.after = len(frames)
                keep.append(waiter)
                continue
        waiter.future.set_result(None)
    log.waiters = keep


class MemoryStore:
    """Sessions in a dict; each stream's log a list of frames, woken readers by futures.

    A finished log is dropped ``retention`` seconds after its last event (one timer per
    finished stream); sessions idle for ``session_ttl`` seconds are swept once a minute.
    """

    name = "memory"
    pushes = True  # read() hands new frames to a waiting reader's push
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
            if log.waiters and item.frames:
                _deliver(log, len(item.frames))
            elif log.waiters and item.finished:
                _wake(log.waiters)

    def _expire(self, stream_id: str, log: _Log) -> None:
        if self._logs.get(stream_id) is log:
            del self._logs[stream_id]
        _wake(log.waiters)

    async def read(
        self, stream_id: str, after: int, block: float, push: Push | None = None
    ) -> ReadResult | None:
        log = self._logs.get(stream_id)
        if log is None:
            return None
        frames = log.frames
        if len(frames) > after or log.finished or block <= 0:
            return frames[after:], log.finished
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), after, push)
        log.waiters.append(waiter)
        # No timer when the reader has its pings written for it (streams.Heartbeats).
        timer = loop.call_at(loop.time() + block, _timeout, waiter.future) if block != math.inf else None
        try:
            await waiter.future
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in log.waiters:
                log.waiters.remove(waiter)
        if self._logs.get(stream_id) is not log:
            return None
        return frames[waiter.after :], log.finished

    def debug_counts(self) -> dict[str, int]:
        return {
            "logs": len(self._logs),
            "waiting_readers": sum(len(log.waiters) for log in self._logs.values()),
        }


def _timeout(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

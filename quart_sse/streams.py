"""The stream engine's two halves around the store's log: the log writer and the readers.

Writing: every generation puts its encoded frames into its own bounded queue
(:class:`Channel`) and marks the channel dirty.  One :class:`LogWriter` task per process
drains every dirty channel in one pass and hands all their frames to the store in a single
``append`` (a list extend for memory, one pipeline for Redis), which wakes the readers.
The writer waits ``flush_delay`` after the first mark before it drains, so that under load
each reader finds several frames waiting and writes them with one body message.

Reading: :func:`pump` writes the body of every SSE response.  It writes ``retry:`` at once,
then replays the log after the client's id, then waits in the store's read for more; a
read that times out after ``heartbeat_interval`` of silence writes ``: ping``.  It does no
model work, and it is released (``finally``) the moment Quart cancels it on a disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from quart_sse.direct import DirectWrite, direct_writer
from quart_sse.metrics import Stats
from quart_sse.sse import PING, retry_frame
from quart_sse.stores.base import Append, Store

log = logging.getLogger("quart_sse.streams")

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class Channel:
    """A generation's way into its stream's log: a bounded queue of encoded frames.

    One producer (the generation) and one consumer (the log writer), so a list and one
    future do what ``asyncio.Queue(maxsize)`` does here, without its three deques and its
    Event (about 2.6 KB per stream when 10,000 streams are open).
    """

    __slots__ = ("_putter", "dirty", "finished", "frames", "maxsize", "stream_id", "writer")

    def __init__(self, stream_id: str, writer: LogWriter, maxsize: int) -> None:
        self.stream_id = stream_id
        self.writer = writer
        self.maxsize = maxsize
        self.frames: list[bytes] = []
        self.dirty = False
        self.finished = False
        self._putter: asyncio.Future[None] | None = None

    async def put(self, frame: bytes, *, final: bool = False) -> None:
        """Queue one frame; waits only while the queue is full (the writer is behind)."""
        while len(self.frames) >= self.maxsize:
            self._putter = asyncio.get_running_loop().create_future()
            try:
                await self._putter
            finally:
                self._putter = None
        self.frames.append(frame)
        if final:
            self.finished = True
        if not self.dirty:
            self.dirty = True
            self.writer.mark(self)

    def drain(self) -> Append:
        """Everything queued, for the log writer; wakes a generation waiting to put."""
        frames, self.frames = self.frames, []
        self.dirty = False
        putter = self._putter
        if putter is not None and not putter.done():
            putter.set_result(None)
        return Append(self.stream_id, frames, self.finished)


class LogWriter:
    """The one task per process that moves queued frames into the store, in batches."""

    def __init__(self, store: Store, flush_delay: float) -> None:
        self.store = store
        self.flush_delay = flush_delay
        self._dirty: list[Channel] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0
        self.frames = 0
        # Told of streams the store refused (Redis: lease lost, Redis down), with a code.
        self.on_failed: Callable[[Mapping[str, str]], None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="log-writer")

    def mark(self, channel: Channel) -> None:
        self._dirty.append(channel)
        if not self._wake.is_set():
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.flush_delay > 0:
                await asyncio.sleep(self.flush_delay)
            await self.flush()

    async def flush(self) -> None:
        """Drain every dirty channel into the store now."""
        self._wake.clear()
        dirty, self._dirty = self._dirty, []
        if not dirty:
            return
        batch = [channel.drain() for channel in dirty]
        self.flushes += 1
        self.frames += sum(len(item.frames) for item in batch)
        try:
            failed = await self.store.append(batch)
        except Exception:
            log.exception("log writer: the store refused %d frames", sum(len(b.frames) for b in batch))
            return
        if failed and self.on_failed is not None:
            self.on_failed(failed)

    async def aclose(self) -> None:
        """Flush what is queued, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


class _Position:
    """Where a reader is in its log, and when it last wrote; shared with its push."""

    __slots__ = ("after", "direct", "last_write", "loop", "stats")

    def __init__(
        self, after: int, direct: DirectWrite | None, loop: asyncio.AbstractEventLoop, stats: Stats
    ) -> None:
        self.after = after
        self.direct = direct
        self.last_write = loop.time()
        self.loop = loop
        self.stats = stats

    def push(self, data: bytes, count: int) -> bool:
        """Write frames the log writer offers while this reader waits (no task switch)."""
        direct = self.direct
        if direct is None or not direct(data):
            return False
        self.after += count
        self.last_write = self.loop.time()
        self.stats.writes_direct += 1
        return True


class Heartbeats:
    """One timer per process that writes ``: ping`` to the quiet streams it can write to.

    A reader with the direct path (and a store that pushes) then waits with no timer of
    its own: at 10,000 idle streams that is one scan a second instead of 10,000 timers, and
    a ping costs one socket write, not a task switch. Other readers ping from their own
    read timing out.
    """

    def __init__(self, interval: float, stats: Stats, send_timeout: float = 30.0) -> None:
        self.interval = interval
        self.send_timeout = send_timeout
        self.period = min(1.0, interval / 4, send_timeout / 4)
        self.stats = stats
        self.members: set[_Position] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._next_stall_check = 0.0

    def add(self, position: _Position) -> None:
        self.members.add(position)
        if self._handle is None:
            self._handle = position.loop.call_later(self.period, self._tick, position.loop)

    def discard(self, position: _Position) -> None:
        self.members.discard(position)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.members:
            self._handle = None
            return
        now = loop.time()
        due = now - self.interval * 0.999
        for position in self.members:
            direct = position.direct
            if position.last_write <= due and direct is not None and direct(PING):
                position.last_write = now
                self.stats.writes_direct += 1
        if now >= self._next_stall_check:
            # Stalls are looked for every SEND_TIMEOUT / 4: a cut comes between 1 and 1.25
            # SEND_TIMEOUT after the reader stopped, and 10,000 idle streams cost little.
            self._next_stall_check = now + self.send_timeout / 4
            self._cut_stalled(now)
        self._handle = loop.call_later(self.period, self._tick, loop)

    def _cut_stalled(self, now: float) -> None:
        stalled = [
            position
            for position in self.members
            if position.direct is not None and position.direct.stalled_for(now) >= self.send_timeout
        ]
        for position in stalled:
            # A reader that stopped reading: cut it; it resumes later with Last-Event-ID.
            self.stats.stalled_cut += 1
            log.info("stream response cut: no progress for %g s (SEND_TIMEOUT)", self.send_timeout)
            self.members.discard(position)
            assert position.direct is not None
            position.direct.abort()


async def pump(
    send: ASGISend,
    store: Store,
    stream_id: str,
    after: int,
    *,
    retry_ms: int,
    heartbeat: float,
    stats: Stats,
    heartbeats: Heartbeats | None = None,
    send_timeout: float = 30.0,
) -> None:
    """Write one SSE response body to ``send``: ``retry:``, replay after ``after``, then live.

    Everything waiting in the log goes out in one body message; once the response head is
    out, frames go straight to the socket where Hypercorn allows it (:mod:`direct`), and
    while this reader waits the store may push new frames through it without waking it.
    Returns after the final event; a disconnect cancels it (in a wait or in ``send``), and
    ``finally`` releases it.
    """
    loop = asyncio.get_running_loop()
    stats.readers_open += 1
    stats.readers_opened += 1
    try:
        result = await store.read(stream_id, after, 0)
        if result is None:
            return
        frames, finished = result
        # The response head goes out with the first body write: write it at once.
        await send(
            {
                "type": "http.response.body",
                "body": retry_frame(retry_ms) + b"".join(frames),
                "more_body": True,
            }
        )
        direct = direct_writer(send, send_timeout=send_timeout)
        stats.writes_asgi += 1
        position = _Position(after + len(frames), direct, loop, stats)
        push = position.push if direct is not None else None
        ticker = heartbeats if push is not None and getattr(store, "pushes", False) else None
        if ticker is not None:
            ticker.add(position)
        try:
            while not finished:
                block = math.inf if ticker is not None else position.last_write + heartbeat - loop.time()
                result = await store.read(stream_id, position.after, block, push)
                if result is None:  # expired or deleted while we read
                    return
                frames, finished = result
                if frames:
                    position.after += len(frames)
                    body = frames[0] if len(frames) == 1 else b"".join(frames)
                elif not finished and loop.time() - position.last_write >= heartbeat * 0.999:
                    body = PING
                else:
                    continue
                if direct is not None and direct(body):
                    stats.writes_direct += 1
                else:
                    stats.writes_asgi += 1
                    try:
                        async with asyncio.timeout(send_timeout):
                            await send({"type": "http.response.body", "body": body, "more_body": True})
                    except TimeoutError:
                        # The reader took nothing for SEND_TIMEOUT: release it (it resumes later).
                        stats.stalled_cut += 1
                        log.info("stream response cut: no progress for %g s (SEND_TIMEOUT)", send_timeout)
                        if direct is not None:
                            direct.abort()
                        return
                position.last_write = loop.time()
        finally:
            if ticker is not None:
                ticker.discard(position)
    finally:
        stats.readers_open -= 1

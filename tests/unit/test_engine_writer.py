"""Channel and LogWriter (quart_sse.engine.channel): a flush persists into the store, then delivers.

Real parts: MemoryStore (spied on, or made to refuse), Hub, Readers on DirectTransport and
ASGITransport; fake: only the socket under DirectTransport.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from quart_sse import codes
from quart_sse.engine.channel import LogWriter
from quart_sse.engine.hub import Hub, Reader
from quart_sse.engine.transport import ASGITransport, DirectTransport
from quart_sse.metrics import Stats
from quart_sse.models import Message, now_iso
from quart_sse.sse import encode_chunk, encode_event
from quart_sse.stores.base import Append, Tail
from quart_sse.stores.memory import MemoryStore

F1 = encode_event(1, {"type": "session_info", "session_id": "s"})
F2 = encode_chunk(2, "Hel", 1, False)
F3 = encode_chunk(3, "lo", 2, False)
F4 = encode_chunk(4, " you", 3, False)
F5 = encode_event(5, {"type": "complete"})


class SpyStore(MemoryStore):
    """A MemoryStore that records every append (and when, in ``events``)."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events
        self.batches: list[list[Append]] = []

    async def append(self, batch: Sequence[Append]) -> None:
        self.batches.append(list(batch))
        self.events.append("persist " + " ".join(item.stream_id for item in batch))
        await super().append(batch)


class RefusingStore(SpyStore):
    """Takes the frames of every stream but ``refused`` (as Redis does when a lease is lost)."""

    refused = "g1"

    async def append(self, batch: Sequence[Append]) -> Mapping[str, str] | None:  # type: ignore[override]
        await super().append([item for item in batch if item.stream_id != self.refused])
        return {self.refused: codes.INTERRUPTED}


class BrokenStore(SpyStore):
    async def append(self, batch: Sequence[Append]) -> None:
        await super().append([])
        raise codes.StoreUnavailable("Redis is unreachable (ConnectionError: gone)")


class FakeSocket(asyncio.WriteTransport):
    def __init__(self, events: list[str], name: str) -> None:
        super().__init__()
        self.events = events
        self.name = name
        self.data = b""

    def write(self, data: Any) -> None:
        self.events.append(f"write {self.name}")
        chunk = bytes(data)
        size, _, rest = chunk.partition(b"\r\n")
        assert rest.endswith(b"\r\n") and int(size, 16) == len(rest) - 2
        self.data += rest[:-2]

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


async def no_send(message: dict[str, Any]) -> None:
    raise AssertionError("not through ASGI")


class Env:
    """A store, a hub and a writer (flushed by the test), and readers waiting in the hub."""

    def __init__(self, store: SpyStore) -> None:
        self.events = store.events
        self.store = store
        self.hub = Hub(Stats(), 15.0, 30.0)
        self.writer = LogWriter(store, self.hub, 0.0)
        self.failed: list[dict[str, str]] = []
        self.writer.on_failed = lambda streams: self.failed.append(dict(streams))
        self.tasks: dict[Reader, asyncio.Task[None]] = {}

    async def begin(self, stream_id: str, maxsize: int = 16) -> Any:
        session_id = "s-" + stream_id
        await self.store.create_session(session_id, "m", now_iso())
        await self.store.begin_generation(session_id, stream_id, Message("user", "q", now_iso()))
        return self.writer.open(stream_id, maxsize)

    async def reader(self, stream_id: str, *, direct: bool = True) -> tuple[Reader, FakeSocket]:
        """A reader at the stream's end, waiting in the hub (returns once it waits)."""
        sock = FakeSocket(self.events, stream_id)
        loop = asyncio.get_running_loop()
        live = self.hub.streams[stream_id]
        if direct:
            reader = Reader(live.last, DirectTransport(no_send, sock, 64 * 1024), loop.time())
            block = math.inf
        else:
            reader, block = Reader(live.last, ASGITransport(no_send), loop.time()), 3600.0
        task = asyncio.create_task(self.hub.wait(stream_id, reader, block))
        self.tasks[reader] = task
        await until(lambda: reader.waiter is not None)
        return reader, sock

    async def close(self) -> None:
        for reader in self.tasks:
            reader.wake()
        await asyncio.gather(*self.tasks.values())
        handle = self.hub._handle
        if handle is not None:
            handle.cancel()
        await self.writer.aclose()


async def until(check: Any) -> None:
    """Yield to the loop until ``check()`` holds (no sleep: a bounded number of turns)."""
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


@pytest.fixture(name="env")
async def _env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    store_class = getattr(request, "param", SpyStore)
    env = Env(store_class([]))
    await env.store.connect()
    yield env
    await env.close()
    await env.store.aclose()


async def test_a_flush_persists_the_frames_then_delivers_them(env):
    channel = await env.begin("g")
    reader, sock = await env.reader("g")
    await channel.put(F1)
    await channel.put(F2, "Hel")
    # Queued only: neither in the store nor delivered before the flush.
    assert await env.store.read("g", 0) == Tail([], False) and env.hub.since("g", 0) == ()
    assert env.events == [] and env.writer._dirty == [channel]  # marked once for two frames
    await env.writer.flush()
    assert env.events == ["persist g", "write g"]
    assert await env.store.read("g", 0) == Tail([F1, F2], False)
    assert sock.data == F1 + F2 and reader.after == 2
    assert env.hub.since("g", 0) == [F1, F2]
    assert (env.writer.flushes, env.writer.frames) == (1, 2)
    assert channel.frames == [] and not channel.dirty
    await env.writer.flush()  # nothing dirty: the store is not asked
    assert len(env.store.batches) == 1


async def test_first_ids_are_consecutive_across_flushes_and_the_text_is_carried(env):
    channel = await env.begin("g")
    await channel.put(F1)
    await channel.put(F2, "Hel")
    await channel.put(F3, "lo")
    await env.writer.flush()
    await channel.put(F4, " you")
    await env.writer.flush()
    await channel.put(F5, final=True)
    await env.writer.flush()
    assert env.store.batches == [
        [Append("g", [F1, F2, F3], False, 1, "Hello")],
        [Append("g", [F4], False, 4, " you")],
        [Append("g", [F5], True, 5, "")],
    ]
    assert channel.drained == 5
    assert await env.store.read("g", 0) == Tail([F1, F2, F3, F4, F5], True)
    info = await env.store.get_stream("g")
    assert info is not None and (info.finished, info.last_id) == (True, 5)
    assert not env.hub.holds("g")  # its final event delivered, the hub lets it go


async def test_one_flush_takes_every_dirty_channel_in_one_append(env):
    one, two, idle = await env.begin("g1"), await env.begin("g2"), await env.begin("g3")
    _, sock1 = await env.reader("g1")
    _, sock2 = await env.reader("g2")
    await one.put(F1)
    await two.put(F1)
    await two.put(F2, "Hel")
    await env.writer.flush()
    assert env.store.batches == [[Append("g1", [F1], False, 1), Append("g2", [F1, F2], False, 1, "Hel")]]
    assert sock1.data == F1 and sock2.data == F1 + F2
    assert idle.drained == 0 and env.hub.since("g3", 0) == ()


@pytest.mark.parametrize("env", [RefusingStore], indirect=True)
async def test_a_stream_the_store_refuses_is_dropped_reported_and_not_delivered(env):
    refused, kept = await env.begin("g1"), await env.begin("g2")
    refused_reader, refused_sock = await env.reader("g1")
    kept_reader, kept_sock = await env.reader("g2")
    await refused.put(F1)
    await kept.put(F1)
    await env.writer.flush()
    assert env.failed == [{"g1": "interrupted"}]
    await env.tasks[refused_reader]  # woken by the drop: it goes to the store
    assert refused_sock.data == b"" and refused_reader.after == 0
    assert not env.hub.holds("g1") and env.hub.since("g1", 0) is None
    assert kept_sock.data == F1 and kept_reader.after == 1 and not env.tasks[kept_reader].done()
    # Later frames of the refused stream reach no reader here either.
    await refused.put(F2, "Hel")
    await env.writer.flush()
    assert refused_sock.data == b"" and env.failed == [{"g1": "interrupted"}] * 2


@pytest.mark.parametrize("env", [BrokenStore], indirect=True)
async def test_a_store_that_raises_fails_every_stream_of_the_batch(env, caplog):
    one, two = await env.begin("g1"), await env.begin("g2")
    reader1, sock1 = await env.reader("g1")
    reader2, sock2 = await env.reader("g2", direct=False)
    await one.put(F1)
    await two.put(F1)
    await env.writer.flush()
    assert env.failed == [{"g1": "store_unavailable", "g2": "store_unavailable"}]
    await asyncio.gather(env.tasks[reader1], env.tasks[reader2])  # both woken
    assert sock1.data == b"" and sock2.data == b"" and reader1.after == reader2.after == 0
    assert not env.hub.holds("g1") and not env.hub.holds("g2")
    assert "the store refused 2 frames" in caplog.text
    env.writer.on_failed = None  # no listener: the writer still copes
    await one.put(F2)
    await env.writer.flush()


async def test_a_full_channel_waits_for_the_writer(env):
    channel = await env.begin("g", maxsize=2)
    await channel.put(F1)
    await channel.put(F2, "Hel")
    third = asyncio.create_task(channel.put(F3, "lo"))
    await until(lambda: channel._putter is not None)
    assert not third.done() and channel.frames == [F1, F2]
    await env.writer.flush()  # drains the channel: the generation goes on
    await third
    assert channel.frames == [F3] and channel.dirty and env.writer._dirty == [channel]
    await env.writer.flush()
    assert [(b.first, b.text) for [b] in env.store.batches] == [(1, "Hel"), (3, "lo")]


async def test_the_running_writer_flushes_by_itself_and_aclose_flushes_the_rest(env):
    channel = await env.begin("g")
    reader, _ = await env.reader("g", direct=False)
    env.writer.start()
    await channel.put(F1)
    await env.tasks[reader]  # woken by a delivery the writer's own task made
    assert env.hub.since("g", 0) == [F1] and await env.store.read("g", 0) == Tail([F1], False)
    await channel.put(F2, "Hel")
    await env.writer.aclose()  # stops the task, then flushes what is queued
    assert await env.store.read("g", 0) == Tail([F1, F2], False)
    assert env.writer._task is None


async def test_offer_queues_without_a_coroutine_until_the_channel_is_full(env):
    channel = await env.begin("g", maxsize=2)
    assert channel.offer(F1, "") and channel.offer(F2, "Hel")
    assert channel.frames == [F1, F2] and channel.text == "Hel"
    assert env.writer._dirty == [channel]  # marked once
    assert channel.offer(F3, "lo") is False  # full: nothing done, the caller awaits put
    assert channel.frames == [F1, F2] and channel.text == "Hel"
    await env.writer.flush()
    assert channel.offer(F3, "lo") and env.writer._dirty == [channel]
    await env.writer.flush()
    batches = [(b.first, b.frames, b.text) for [b] in env.store.batches]
    assert batches == [(1, [F1, F2], "Hel"), (3, [F3], "lo")]

"""Delivery.pump (quart_sse.engine.pump): one SSE response body, replay then live, and its ends.

Real parts: MemoryStore (a subclass where a store must close or fail a stream), RedisStore
on a real redis-server, Hub, LogWriter, ASGITransport; fake: only the ASGI ``send``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from quart_sse import codes
from quart_sse.engine.channel import LogWriter
from quart_sse.engine.hub import Hub, Reader
from quart_sse.engine.pump import CLOSED_MESSAGES, Delivery, Responses
from quart_sse.metrics import Stats
from quart_sse.models import Message, StreamInfo, now_iso
from quart_sse.sse import PING, Event, SSEParser, encode_chunk, encode_event, retry_frame
from quart_sse.stores.base import Append, Store, Tail
from quart_sse.stores.memory import MemoryStore
from quart_sse.stores.redis import RedisStore

RETRY = retry_frame(1000)
F1 = encode_event(1, {"type": "session_info", "session_id": "s"})
F2 = encode_chunk(2, "Hel", 1, False)
F3 = encode_chunk(3, "lo", 2, False)
F4 = encode_event(4, {"type": "complete"})


class Sink:
    """The ASGI ``send`` of one response: records every message; ``gate`` (if set) holds the
    ``block_from``-th message and later ones forever (a client that stopped reading)."""

    def __init__(self, block_from: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.block_from = block_from
        self.wrote = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if self.block_from is not None and len(self.messages) + 1 >= self.block_from:
            await asyncio.get_running_loop().create_future()  # never done
        assert message["type"] == "http.response.body" and message["more_body"] is True
        self.messages.append(message)
        self.wrote.set()

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages]

    @property
    def data(self) -> bytes:
        return b"".join(self.bodies)

    def events(self) -> list[Event]:
        return [item for item in SSEParser().feed(self.data) if isinstance(item, Event)]


async def until(check: Callable[[], bool]) -> None:
    """Yield to the loop until ``check()`` holds (no sleep: a bounded number of turns)."""
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def waiting(hub: Hub, stream_id: str = "g") -> bool:
    live = hub.streams.get(stream_id)
    return live is not None and any(r.waiter is not None for r in live.readers)


class Env:
    def __init__(self, store: Store, heartbeat: float = 15.0, send_timeout: float = 5.0) -> None:
        self.store = store
        self.stats = Stats()
        self.hub = Hub(self.stats, heartbeat, send_timeout)
        self.writer = LogWriter(store, self.hub, 0.0)
        self.delivery = Delivery(
            store, self.hub, self.stats, retry_ms=1000, heartbeat=heartbeat, send_timeout=send_timeout
        )

    async def begin(self, stream_id: str = "g", session_id: str = "s") -> None:
        await self.store.create_session(session_id, "m", now_iso())
        await self.store.begin_generation(session_id, stream_id, Message("user", "q", now_iso()))

    async def info(self, stream_id: str = "g") -> StreamInfo:
        info = await self.store.get_stream(stream_id)
        assert info is not None
        return info


@pytest.fixture(name="memory")
async def _memory() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    await store.connect()
    yield store
    await store.aclose()


def final_error(event: Event) -> dict[str, Any]:
    assert event.event == "error"
    data: dict[str, Any] = event.json()
    assert data["type"] == "error"
    return data


async def test_a_finished_stream_is_replayed_after_the_id_with_retry_first(memory):
    env = Env(memory)
    await env.begin()
    await memory.append([Append("g", [F1, F2, F3, F4], True, 1, "Hello")])
    sink = Sink()
    await env.delivery.pump(sink.send, await env.info(), 2)
    assert sink.bodies == [RETRY + F3 + F4]  # one write: the head goes out with it
    assert [e.id for e in sink.events()] == ["3", "4"]
    assert (env.stats.readers_open, env.stats.readers_opened, env.stats.writes_asgi) == (0, 1, 1)


async def test_an_unknown_or_expired_stream_writes_nothing(memory):
    env = Env(memory)
    sink = Sink()
    await env.delivery.pump(sink.send, StreamInfo("gone", "s", False, 3), 0)
    assert sink.messages == [] and env.stats.readers_open == 0


async def test_a_live_stream_here_goes_on_from_the_hub_to_its_final_event(memory):
    env = Env(memory)
    await env.begin()
    channel = env.writer.open("g", 16)
    await channel.put(F1)
    await env.writer.flush()
    sink = Sink()
    pump = asyncio.create_task(env.delivery.pump(sink.send, StreamInfo("g", "s", False, 0), 0))
    await until(lambda: waiting(env.hub))
    assert sink.bodies == [RETRY + F1]  # replayed from the hub's last batch
    await channel.put(F2, "Hel")
    await channel.put(F3, "lo")
    await env.writer.flush()
    await until(lambda: len(sink.messages) == 2 and waiting(env.hub))
    await channel.put(F4, final=True)
    await env.writer.flush()
    await pump
    assert sink.bodies == [RETRY + F1, F2 + F3, F4]
    assert [e.id for e in sink.events()] == ["1", "2", "3", "4"]
    assert env.stats.readers_open == 0 and env.hub.debug_counts()["waiting_readers"] == 0


async def test_a_reader_of_another_process_stream_waits_in_the_store(memory):
    env = Env(memory)
    await env.begin()  # the hub does not hold it: it is generated "elsewhere"
    await memory.append([Append("g", [F1], False, 1)])
    sink = Sink()
    pump = asyncio.create_task(env.delivery.pump(sink.send, await env.info(), 0))
    await sink.wrote.wait()
    await memory.append([Append("g", [F2, F3], False, 2, "Hello")])
    await memory.append([Append("g", [F4], True, 4)])
    await pump
    assert sink.data == RETRY + F1 + F2 + F3 + F4


class ClosingStore(MemoryStore):
    """Ends its logs as a store does when the generating instance went: ``closed`` set, no frame.

    ``close_on`` says when: at the first ``read``, or at the first ``wait`` (the live path)."""

    def __init__(self, close_on: str) -> None:
        super().__init__()
        self.close_on = close_on

    async def read(self, stream_id: str, after: int) -> Tail | None:
        tail = await super().read(stream_id, after)
        if tail is None or self.close_on != "read":
            return tail
        return Tail(tail.frames, True, codes.INTERRUPTED)

    async def wait(self, stream_id: str, after: int, block: float) -> Tail | None:
        tail = await super().read(stream_id, after)
        assert tail is not None and self.close_on == "wait"
        return Tail(tail.frames, True, codes.INTERRUPTED)


@pytest.mark.parametrize("after", [0, 1, 2])
async def test_a_closed_stream_ends_with_an_interrupted_error_event(after):
    store = ClosingStore("read")
    env = Env(store)
    await env.begin()
    await store.append([Append("g", [F1, F2], False, 1, "Hel")])
    info = StreamInfo("g", "s", True, 3, codes.INTERRUPTED)  # as a store reports it: 2 frames + the close
    sink = Sink()
    await env.delivery.pump(sink.send, info, after)
    events = sink.events()
    assert [e.id for e in events] == [str(i) for i in range(after + 1, 4)]
    assert sink.bodies[0].startswith(RETRY + b"".join([F1, F2][after:]))
    last = events[-1]
    assert last.id == str(info.last_id)
    assert final_error(last) == {
        "type": "error",
        "code": "interrupted",
        "message": CLOSED_MESSAGES["interrupted"],
        "session_id": "s",
    }


async def test_a_stream_closed_while_read_live_ends_with_the_next_id(memory):
    store = ClosingStore("wait")
    env = Env(store)
    await env.begin()
    await store.append([Append("g", [F1, F2], False, 1, "Hel")])
    sink = Sink()
    await env.delivery.pump(sink.send, StreamInfo("g", "s", False, 2), 0)
    assert sink.bodies[0] == RETRY + F1 + F2
    events = sink.events()
    assert [e.id for e in events] == ["1", "2", "3"]
    assert final_error(events[-1])["code"] == "interrupted" and final_error(events[-1])["session_id"] == "s"


@pytest.mark.redis
async def test_a_stream_redis_closed_ends_with_the_interrupted_event_it_counts(redis_server):
    store = RedisStore(redis_server.url, heartbeat=0.1, instance_id="A")
    await store.connect()
    try:
        env = Env(store)
        await env.begin(session_id="sess")
        await store.append([Append("g", [F1, F2, F3], False, 1, "Hello")])
        # A frame after a gap: the owner lost frames, Redis closes the stream (no frame).
        lost = await store.append([Append("g", [encode_chunk(9, "x", 8, False)], False, 9, "x")])
        assert lost == {"g": "interrupted"}
        info = await env.info()
        assert (info.finished, info.last_id, info.closed) == (True, 4, "interrupted")
        sink = Sink()
        await env.delivery.pump(sink.send, info, 1)
        assert sink.bodies[0].startswith(RETRY + F2 + F3)
        events = sink.events()
        assert [e.id for e in events] == ["2", "3", "4"]
        data = final_error(events[-1])
        assert (data["code"], data["session_id"]) == ("interrupted", "sess")
    finally:
        await store.aclose()


class DownStore(MemoryStore):
    """A store whose backing service went: ``read`` (or, with ``from_wait``, only ``wait``) raises."""

    def __init__(self, from_wait: bool = False) -> None:
        super().__init__()
        self.from_wait = from_wait

    async def read(self, stream_id: str, after: int) -> Tail | None:
        if not self.from_wait:
            raise codes.StoreUnavailable("Redis is unreachable (ConnectionError: gone)")
        return await super().read(stream_id, after)

    async def wait(self, stream_id: str, after: int, block: float) -> Tail | None:
        raise codes.StoreUnavailable("Redis is unreachable (ConnectionError: gone)")


async def test_a_store_that_fails_ends_the_response_with_a_store_unavailable_event():
    env = Env(DownStore())
    sink = Sink()
    await env.delivery.pump(sink.send, StreamInfo("g", "s", False, 5), 2)  # returns: no exception
    assert len(sink.messages) == 1
    (event,) = sink.events()
    assert event.id == "3"
    assert final_error(event) == {
        "type": "error",
        "code": "store_unavailable",
        "message": "Redis is unreachable (ConnectionError: gone)",
        "session_id": "s",
    }
    assert env.stats.readers_open == 0


async def test_a_store_that_fails_later_ends_with_the_id_after_the_last_written():
    store = DownStore(from_wait=True)
    env = Env(store)
    await env.begin()
    await store.append([Append("g", [F1, F2], False, 1, "Hel")])
    sink = Sink()
    await env.delivery.pump(sink.send, StreamInfo("g", "s", False, 2), 0)
    events = sink.events()
    assert final_error(events[-1])["code"] == "store_unavailable"
    assert [e.id for e in events] == ["1", "2", "3"]  # after the last one written, not after 0


async def test_a_quiet_asgi_reader_gets_pings_until_the_final_event(memory):
    env = Env(memory, heartbeat=0.01)
    await env.begin()
    channel = env.writer.open("g", 16)
    await channel.put(F1)
    await env.writer.flush()
    sink = Sink()
    pump = asyncio.create_task(env.delivery.pump(sink.send, StreamInfo("g", "s", False, 1), 0))
    await until(lambda: sink.messages != [])
    sink.wrote.clear()
    await sink.wrote.wait()  # the next write of a quiet stream: a ping
    assert sink.bodies[:2] == [RETRY + F1, PING]
    await channel.put(F4, final=True)
    await env.writer.flush()
    await pump
    assert sink.bodies[-1] == F4 and set(sink.bodies[1:-1]) == {PING}


async def test_a_reader_that_stops_reading_is_cut(memory):
    env = Env(memory, send_timeout=0.01)
    await env.begin()
    channel = env.writer.open("g", 16)
    sink = Sink(block_from=2)  # takes the first body, then never another
    pump = asyncio.create_task(env.delivery.pump(sink.send, StreamInfo("g", "s", False, 0), 0))
    await until(lambda: waiting(env.hub))
    await channel.put(F1)
    await env.writer.flush()
    await pump  # returns: cut after SEND_TIMEOUT without progress
    assert sink.bodies == [RETRY] and env.stats.stalled_cut == 1 and env.stats.readers_open == 0


class CountingHub(Hub):
    """A Hub that fails a reader calling ``wait`` over and over without the loop turning."""

    calls = 0

    async def wait(self, stream_id: str, reader: Reader, block: float) -> None:
        self.calls += 1
        if self.calls > 50:
            raise RuntimeError("the pump spins: hub.wait called 50 times")
        await super().wait(stream_id, reader, block)


async def test_a_reader_ahead_of_a_live_stream_here_waits_instead_of_spinning(memory):
    env = Env(memory)
    env.hub = CountingHub(env.stats, 15.0, 5.0)
    env.delivery.hub = env.hub
    await env.begin()
    env.hub.open("g")
    env.hub.deliver([Append("g", [F1], False, 1)])
    sink = Sink()
    pump = asyncio.create_task(env.delivery.pump(sink.send, StreamInfo("g", "s", False, 1), 5))
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        # Waiting (or ended cleanly) after a few turns of the loop; not calling wait in a loop.
        assert not pump.done() or pump.exception() is None, pump.exception()
        assert env.hub.calls <= 5
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)


async def test_responses_end_lets_finished_ones_go_and_cancels_the_rest():
    responses = Responses()
    assert await responses.end(0) == (0, 0)
    done = asyncio.create_task(asyncio.sleep(0))
    stuck = asyncio.create_task(asyncio.Event().wait())
    for task in (done, stuck):
        responses.add(task)
    await done
    assert await responses.end(0) == (1, 1)
    assert stuck.cancelled() and responses.ended_by_drain(stuck) and not responses.ended_by_drain(done)
    for task in (done, stuck):
        responses.discard(task)
    assert responses.open == set() and not responses.ended_by_drain(stuck)

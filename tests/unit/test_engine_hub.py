"""The hub (quart_sse.engine.hub): local readers pushed to or woken, since(), drop, the tick.

Real parts: the Hub, its Readers, DirectTransport and ASGITransport; fake: the socket under
DirectTransport, and the loop handed to ``Hub._tick`` (a controlled clock, no timer).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from quart_sse.engine.hub import Hub, Reader
from quart_sse.engine.transport import ASGITransport, DirectTransport
from quart_sse.metrics import Stats
from quart_sse.sse import PING, encode_chunk, encode_event
from quart_sse.stores.base import Append
from tests.support.fake_socket import FakeSocket

HEARTBEAT = 10.0
SEND_TIMEOUT = 20.0

F1 = encode_event(1, {"type": "session_info", "session_id": "s"})
F2 = encode_chunk(2, "Hel", 1, False)
F3 = encode_chunk(3, "lo", 2, False)
F4 = encode_event(4, {"type": "complete"})


def chunk(data: bytes) -> bytes:
    """What h11 writes for one body message of a chunked response."""
    return b"%x\r\n%b\r\n" % (len(data), data)


async def no_send(message: dict[str, Any]) -> None:
    raise AssertionError(f"the hub never sends through ASGI: {message}")


def direct(sock: FakeSocket, limit: int = 64 * 1024) -> DirectTransport:
    return DirectTransport(no_send, sock, limit)


class FakeLoop:
    """What ``Hub._tick`` uses of a loop: its clock (set by the test) and ``call_later`` (recorded)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.scheduled: list[tuple[float, Callable[..., object], tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> object:
        self.scheduled.append((delay, callback, args))
        return ("handle", len(self.scheduled))


class Readers:
    """Readers waiting in ``Hub.wait`` as tasks, all released at the end of the test."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.tasks: dict[Reader, asyncio.Task[None]] = {}

    async def wait(self, stream_id: str, reader: Reader, block: float = math.inf) -> asyncio.Task[None]:
        """Start ``hub.wait`` for ``reader`` and return once it waits (no sleep: yields until then)."""
        task = asyncio.create_task(self.hub.wait(stream_id, reader, block))
        self.tasks[reader] = task
        for _ in range(100):
            if reader.waiter is not None or task.done():
                break
            await asyncio.sleep(0)
        assert reader.waiter is not None and not task.done(), "the reader did not start waiting"
        return task

    async def close(self) -> None:
        for reader in self.tasks:
            reader.wake()
        await asyncio.gather(*self.tasks.values())


@pytest.fixture(name="hub")
def _hub() -> Hub:
    return Hub(Stats(), HEARTBEAT, SEND_TIMEOUT)


@pytest.fixture(name="readers")
async def _readers(hub: Hub) -> AsyncIterator[Readers]:
    readers = Readers(hub)
    yield readers
    await readers.close()
    stop_ticks(hub)


def stop_ticks(hub: Hub) -> None:
    """Cancel the hub's real timer: the tests drive ``_tick`` themselves."""
    handle = hub._handle
    if isinstance(handle, asyncio.TimerHandle):
        handle.cancel()
    hub._handle = None


def now() -> float:
    return asyncio.get_running_loop().time()


def opened(hub: Hub, *frames: bytes) -> None:
    """Stream ``g`` generated here, with ``frames`` delivered."""
    hub.open("g")
    if frames:
        hub.deliver([Append("g", list(frames), False, 1)])


async def test_a_waiting_direct_reader_is_pushed_to_without_being_woken(hub, readers):
    opened(hub, F1)
    sock = FakeSocket()
    reader = Reader(1, direct(sock), now())
    task = await readers.wait("g", reader)
    assert reader in hub.watched  # a direct reader waiting: its pings are the hub's
    hub.deliver([Append("g", [F2, F3], False, 2, "Hello")])
    assert sock.writes == [chunk(F2 + F3)]  # one write for the batch
    assert reader.after == 3 and not reader.ended
    assert reader.waiter is not None and not reader.waiter.done() and not task.done()
    assert hub.streams["g"].readers == [reader]
    assert hub.stats.writes_direct == 1
    # The next batch is pushed the same way: the reader is still at the stream's end.
    more = encode_chunk(4, "!", 3, False)
    hub.deliver([Append("g", [more], False, 4, "!")])
    assert sock.writes[1:] == [chunk(more)] and reader.after == 4
    assert not task.done()


@pytest.mark.parametrize("refusing", ["socket full", "socket closing", "asgi"])
async def test_a_reader_whose_write_is_refused_is_woken_and_reads_from_since(hub, readers, refusing):
    opened(hub, F1)
    sock = FakeSocket()
    transport: ASGITransport = direct(sock, limit=100)
    block = math.inf
    if refusing == "socket full":
        sock.unsent = 101
    elif refusing == "socket closing":
        sock.closing = True
    else:
        transport, block = ASGITransport(no_send), 3600.0  # woken long before its timer
    reader = Reader(1, transport, now())
    task = await readers.wait("g", reader, block)
    hub.deliver([Append("g", [F2, F3], False, 2)])
    await task  # woken
    assert sock.writes == [] and reader.after == 1 and not reader.ended
    assert hub.since("g", reader.after) == [F2, F3]
    assert reader not in hub.watched and hub.streams["g"].readers == []
    assert hub.stats.writes_direct == 0


async def test_a_reader_behind_the_last_batch_must_ask_the_store(hub):
    opened(hub, F1)
    hub.deliver([Append("g", [F2, F3], False, 2)])
    assert hub.holds("g")
    assert hub.since("g", 0) is None  # F1 is only in the store now
    assert hub.since("g", 1) == [F2, F3]
    assert hub.since("g", 2) == [F3]
    assert hub.since("g", 3) == []
    assert hub.since("other", 0) is None and not hub.holds("other")
    # A reader that is not at the stream's end does not wait: it returns at once.
    behind = hub.wait("g", Reader(1, ASGITransport(no_send), now()), math.inf)
    with pytest.raises(StopIteration):
        behind.send(None)
    assert hub.streams["g"].readers == []


async def test_drop_wakes_the_readers_and_forgets_the_stream(hub, readers):
    opened(hub, F1)
    sock = FakeSocket()
    pushed = Reader(1, direct(sock), now())
    woken = Reader(1, ASGITransport(no_send), now())
    tasks = [await readers.wait("g", pushed), await readers.wait("g", woken, 3600.0)]
    hub.drop("g")
    await asyncio.gather(*tasks)
    assert not hub.holds("g") and hub.since("g", 1) is None
    assert pushed not in hub.watched
    # Frames for a dropped stream reach no one here; a second drop is harmless.
    hub.deliver([Append("g", [F2], False, 2)])
    hub.drop("g")
    assert sock.writes == [] and pushed.after == 1 and woken.after == 1
    assert hub.debug_counts() == {"hub_streams": 0, "waiting_readers": 0, "heartbeat_members": 0}


async def test_the_final_batch_ends_a_pushed_reader_and_wakes_the_others(hub, readers):
    opened(hub, F1, F2, F3)
    sock, full = FakeSocket(), FakeSocket(unsent=1000)
    pushed = Reader(3, direct(sock), now())
    refused = Reader(3, direct(full, limit=100), now())
    tasks = [await readers.wait("g", pushed), await readers.wait("g", refused)]
    hub.deliver([Append("g", [F4], True, 4)])
    await asyncio.gather(*tasks)  # both woken: the pushed one to end, the other to read
    assert pushed.ended and pushed.after == 4 and sock.writes == [chunk(F4)]
    assert not refused.ended and refused.after == 3 and full.writes == []
    # The stream is not held here any more: the refused reader finds F4 in the store.
    assert not hub.holds("g") and hub.since("g", 3) is None


async def test_the_tick_pings_quiet_direct_readers_and_cuts_stalled_ones(hub, readers):
    opened(hub, F1)
    quiet_sock, recent_sock, stalled_sock = FakeSocket(), FakeSocket(), FakeSocket(unsent=1000)
    quiet = Reader(1, direct(quiet_sock), 0.0)
    recent = Reader(1, direct(recent_sock), 95.0)
    stalled = Reader(1, direct(stalled_sock, limit=100), 0.0)  # its socket takes nothing
    for reader in (quiet, recent, stalled):
        await readers.wait("g", reader)
    assert hub._handle is not None  # the first watched reader started the timer
    stop_ticks(hub)
    loop = FakeLoop(100.0)

    hub._tick(cast(asyncio.AbstractEventLoop, loop))
    assert quiet_sock.writes == [chunk(PING)] and quiet.last_write == 100.0
    assert recent_sock.writes == [] and recent.last_write == 95.0  # written to 5 s ago
    assert stalled_sock.writes == [] and not stalled_sock.aborted  # stalled since now: not yet
    assert hub.stats.writes_direct == 1 and hub.stats.stalled_cut == 0
    assert loop.scheduled == [(hub.period, hub._tick, (loop,))] and hub._handle is not None

    loop.now = 100.0 + SEND_TIMEOUT  # no progress on the stalled socket for SEND_TIMEOUT
    hub._tick(cast(asyncio.AbstractEventLoop, loop))
    assert stalled_sock.aborted and stalled not in hub.watched and hub.stats.stalled_cut == 1
    assert quiet_sock.writes == [chunk(PING)] * 2 and recent_sock.writes == [chunk(PING)]
    assert hub.watched == {quiet, recent}
    assert not quiet_sock.aborted and not recent_sock.aborted
    assert len(loop.scheduled) == 2


async def test_a_socket_that_drains_is_not_cut(hub, readers):
    opened(hub, F1)
    sock = FakeSocket(unsent=1000)
    reader = Reader(1, direct(sock, limit=100), 0.0)
    await readers.wait("g", reader)
    stop_ticks(hub)
    loop = FakeLoop(100.0)
    hub._tick(cast(asyncio.AbstractEventLoop, loop))
    sock.unsent = 500  # the client reads, slowly
    loop.now += SEND_TIMEOUT
    hub._tick(cast(asyncio.AbstractEventLoop, loop))
    assert not sock.aborted and reader in hub.watched and hub.stats.stalled_cut == 0


async def test_the_tick_stops_when_no_reader_is_watched(hub):
    loop = FakeLoop(100.0)
    hub._tick(cast(asyncio.AbstractEventLoop, loop))
    assert loop.scheduled == [] and hub._handle is None


async def test_only_direct_readers_waiting_without_a_limit_are_watched(hub, readers):
    opened(hub, F1)
    await readers.wait("g", Reader(1, ASGITransport(no_send), now()), 3600.0)
    await readers.wait("g", Reader(1, direct(FakeSocket()), now()), 3600.0)
    assert hub.watched == set() and hub._handle is None
    assert hub.debug_counts() == {"hub_streams": 1, "waiting_readers": 2, "heartbeat_members": 0}


async def test_park_and_unpark_wait_without_a_coroutine_and_leave_nothing(hub):
    opened(hub, F1)
    behind = Reader(0, direct(FakeSocket()), now())
    assert hub.park("g", behind, math.inf) is None  # a frame to read: no wait
    assert hub.park("elsewhere", behind, math.inf) is None  # not generated here
    reader = Reader(1, ASGITransport(no_send), now())
    waiter = hub.park("g", reader, 3600.0)
    assert reader.waiter is waiter and reader.timer is not None
    assert waiter is not None
    assert hub.streams["g"].readers == [reader]
    hub.deliver([Append("g", [F2], False, 2)])  # not direct: woken, not written to
    assert waiter.done() and reader.after == 1
    timer = reader.timer
    hub.unpark("g", reader)
    assert reader.waiter is None and reader.timer is None and timer.cancelled()
    assert hub.streams["g"].readers == [] and hub.debug_counts()["waiting_readers"] == 0
    pushed = Reader(2, direct(sock := FakeSocket()), now())
    waiter = hub.park("g", pushed, math.inf)
    assert waiter is not None and pushed in hub.watched
    hub.deliver([Append("g", [F3], False, 3)])  # pushed: written, still asleep
    assert not waiter.done() and pushed.after == 3 and sock.writes == [chunk(F3)]
    waiter.cancel()  # as a disconnect would
    hub.unpark("g", pushed)
    assert hub.debug_counts() == {"hub_streams": 1, "waiting_readers": 0, "heartbeat_members": 0}
    stop_ticks(hub)

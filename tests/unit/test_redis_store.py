"""What only the Redis store has: leases, seen by two store instances ("A" owns, "B" reads).

A dies by stopping its lease renewal (as a killed process would); B, on the same Redis,
must then close A's stream once, save the partial answer and free the session; A, back as
a zombie, must not write into the stream any more.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from quart_sse.sse import encode_chunk, encode_event
from quart_sse.stores.base import Append, Message, now_iso
from quart_sse.stores.redis import RedisStore

pytestmark = pytest.mark.redis

HEARTBEAT = 0.1  # lease 0.2 s


@pytest.fixture(name="pair")
async def _pair(redis_server):
    a = RedisStore(redis_server.url, heartbeat=HEARTBEAT, instance_id="A")
    b = RedisStore(redis_server.url, heartbeat=HEARTBEAT, instance_id="B")
    await a.connect()
    await b.connect()
    yield a, b
    await a.aclose()
    await b.aclose()


async def start(a: RedisStore, session_id: str = "s", stream_id: str = "g") -> list[bytes]:
    await a.create_session(session_id, "m", now_iso())
    assert await a.begin_generation(session_id, stream_id, Message("user", "q", now_iso())) is None
    frames = [encode_event(1, {"type": "session_info"}), encode_chunk(2, "Hello ", 1, False)]
    frames.append(encode_chunk(3, "wörld “", 2, False))
    assert not await a.append([Append(stream_id, frames, False)])
    return frames


def die(a: RedisStore) -> None:
    assert a._renewer is not None
    a._renewer.cancel()


async def test_the_slot_holds_across_instances_while_the_owner_lives(pair):
    a, b = pair
    await start(a)
    # Renewed several times over: still A's.
    for _ in range(5):
        await asyncio.sleep(HEARTBEAT)
        assert await b.begin_generation("s", "other", Message("user", "x", now_iso())) == "g"
    session = await b.get_session("s")
    assert session is not None and session.generating == "g"
    assert (await b.cluster_counts()) == {"instances": 2, "active_streams": 1}


async def test_a_reader_elsewhere_closes_a_dead_owners_stream_once(pair):
    a, b = pair
    frames = await start(a)
    result = await b.read("g", 0, 0)
    assert result is not None and list(result[0]) == frames
    die(a)
    after = len(frames)
    for _ in range(100):  # each read waits up to the block: bounded, no timing asserted
        result = await b.read("g", after, HEARTBEAT)
        assert result is not None
        if result[0]:
            break
    (frame,), finished = result
    assert finished
    assert frame.startswith(b"id: 4\nevent: error\ndata: ")
    data = json.loads(frame.split(b"data: ", 1)[1])
    assert data == {**data, "type": "error", "code": "interrupted", "session_id": "s"}
    # The partial answer is saved once, marked; the session takes a new message.
    session = await b.get_session("s")
    assert session is not None and session.generating is None
    assert [(m.role, m.content, m.interrupted) for m in session.messages] == [
        ("user", "q", False),
        ("model", "Hello wörld “", True),
    ]
    # Other readers find the same one final event; nothing is saved twice.
    result = await b.read("g", 0, 0)
    assert result is not None and list(result[0]) == [*frames, frame] and result[1]
    info = await b.get_stream("g")
    assert info is not None and info.finished and info.last_id == 4
    # The zombie owner can write nothing more.
    assert await a.append([Append("g", [encode_chunk(4, "late", 3, False)], False)]) == {"g": "interrupted"}
    assert await a.save_answer("s", "g", Message("model", "late", now_iso())) is None
    session = await b.get_session("s")
    assert session is not None and len(session.messages) == 2
    assert await b.begin_generation("s", "g2", Message("user", "next", now_iso())) is None


async def test_a_dead_owner_never_locks_its_session(pair):
    a, b = pair
    await start(a)
    die(a)
    for _ in range(200):
        running = await b.begin_generation("s", "g2", Message("user", "again", now_iso()))
        if running is None:
            break
        await asyncio.sleep(HEARTBEAT / 2)
    assert running is None
    session = await b.get_session("s")
    assert session is not None and session.generating == "g2"
    assert [m.content for m in session.messages] == ["q", "Hello wörld “", "again"]
    result = await b.read("g", 3, 0)
    assert result is not None and result[1] and b'"code": "interrupted"' in result[0][0]


async def test_an_owner_that_lost_frames_ends_its_stream_instead_of_leaving_a_gap(pair):
    a, _ = pair
    await start(a)
    lost = await a.append([Append("g", [encode_chunk(9, "after a gap", 8, False)], False)])
    assert lost == {"g": "interrupted"}
    result = await a.read("g", 3, 0)
    assert result is not None and result[1] and result[0][0].startswith(b"id: 4\nevent: error")


async def test_redis_gone_makes_503_errors_and_ends_readers_with_an_event(pair, redis_server):
    from quart_sse.errors import StoreUnavailable

    a, _ = pair
    await start(a)
    redis_server.stop()
    with pytest.raises(StoreUnavailable):
        await a.count_sessions()
    assert await a.append([Append("g", [encode_chunk(4, "x", 3, False)], False)]) == {
        "g": "store_unavailable"
    }
    result = await a.read("g", 3, 1.0)
    assert result is not None and result[1]
    (frame,) = result[0]
    assert frame.startswith(b"id: 4\nevent: error") and b'"code": "store_unavailable"' in frame
    redis_server.start()  # empty again (no persistence): the store works at once
    assert await a.count_sessions() == 0

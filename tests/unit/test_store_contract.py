"""The Store protocol, written once and run on every store: memory, and Redis (a real one).

What only Redis has (leases across instances) is in ``test_redis_store.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from quart_sse.codes import GenerationRunning, SessionNotFound
from quart_sse.models import Message, now_iso
from quart_sse.sse import encode_chunk, encode_event
from quart_sse.stores.base import Append, Store, Tail
from quart_sse.stores.memory import MemoryStore
from quart_sse.stores.redis import RedisStore

STORES = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


async def _make(kind: str, request: pytest.FixtureRequest, **options: Any) -> Store:
    store: Store
    if kind == "memory":
        store = MemoryStore(**options)
    else:
        redis_server = request.getfixturevalue("redis_server")
        store = RedisStore(redis_server.url, **options)
    await store.connect()
    return store


@pytest.fixture(name="make_store")
async def _make_store(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Awaitable[Store]]]:
    """``await make_store(**options)``: a connected store of the test's kind, closed after."""
    made: list[Store] = []

    async def make(**options: Any) -> Store:
        store = await _make(request.param, request, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


def user(text: str) -> Message:
    return Message("user", text, now_iso())


def frames_for(session_id: str, texts: list[str], first: int = 1) -> list[bytes]:
    out = []
    for i, text in enumerate(texts):
        event_id = first + i
        if event_id == 1:
            out.append(encode_event(1, {"type": "session_info", "session_id": session_id}))
        else:
            out.append(encode_chunk(event_id, text, event_id - 1, False))
    return out


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Ask the store until ``check`` holds (bounded: what expires here expires in ~1 s)."""
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


pytestmark = pytest.mark.parametrize("make_store", STORES, indirect=True)


async def test_sessions_are_created_listed_counted_and_read(make_store):
    store = await make_store()
    assert await store.get_session("nope") is None
    first = await store.create_session("s1", "model-x", "2026-01-01T00:00:00Z")
    await store.create_session("s2", "model-x", "2026-01-02T00:00:00Z")
    assert (first.session_id, first.model, first.messages, first.generating) == ("s1", "model-x", [], None)
    assert [s.session_id for s in await store.list_sessions()] == ["s1", "s2"]
    assert await store.count_sessions() == 2
    session = await store.get_session("s1")
    assert session is not None and session.created_at == "2026-01-01T00:00:00Z"


async def test_messages_keep_their_text_flags_and_order(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    await store.begin_generation("s", "g", user("héllo “quoted” ✓ \n line"))
    assert await store.save_answer("s", "g", Message("model", "cut sh", now_iso(), interrupted=True)) == 2
    session = await store.get_session("s")
    assert session is not None
    assert [(m.role, m.content, m.interrupted) for m in session.messages] == [
        ("user", "héllo “quoted” ✓ \n line", False),
        ("model", "cut sh", True),
    ]
    assert session.last_activity == session.messages[-1].timestamp


async def test_a_generation_needs_its_session(make_store):
    store = await make_store()
    with pytest.raises(SessionNotFound):
        await store.begin_generation("missing", "g", user("x"))
    assert await store.get_stream("g") is None
    # The session goes while its generation runs: the answer has nowhere to go.
    await store.create_session("s", "m", now_iso())
    await store.begin_generation("s", "g", user("x"))
    assert await store.delete_session("s") is True
    assert await store.save_answer("s", "g", Message("model", "late", now_iso())) is None
    assert await store.get_session("s") is None


async def test_clear_and_delete(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    await store.begin_generation("s", "g", user("x"))
    assert await store.save_answer("s", "g", Message("model", "y", now_iso())) == 2
    assert await store.clear_session("s") is True
    session = await store.get_session("s")
    assert session is not None and session.messages == []
    assert await store.clear_session("missing") is False
    assert await store.get_session("missing") is None
    assert await store.delete_session("s") is True
    assert await store.delete_session("s") is False
    assert await store.get_session("s") is None and await store.count_sessions() == 0


async def test_one_generation_per_session_then_the_answer_frees_it(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    await store.begin_generation("s", "g1", user("question"))
    session = await store.get_session("s")
    assert session is not None and session.generating == "g1"
    assert [m.content for m in session.messages] == ["question"]
    # A second one is refused, names the running stream, and changes nothing.
    with pytest.raises(GenerationRunning) as refused:
        await store.begin_generation("s", "g2", user("again"))
    assert refused.value.stream_id == "g1" and refused.value.code == "generation_running"
    assert await store.get_stream("g2") is None
    session = await store.get_session("s")
    assert session is not None and [m.content for m in session.messages] == ["question"]
    count = await store.save_answer("s", "g1", Message("model", "answer", now_iso()))
    assert count == 2
    session = await store.get_session("s")
    assert session is not None and session.generating is None
    assert [m.content for m in session.messages] == ["question", "answer"]
    await store.begin_generation("s", "g3", user("next"))
    assert await store.save_answer("s", "g3", None) == 3  # nothing to save: the slot is freed
    session = await store.get_session("s")
    assert session is not None and session.generating is None


async def test_a_log_replays_after_any_id_and_says_when_it_ended(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    await store.begin_generation("s", "g", user("q"))
    info = await store.get_stream("g")
    assert info is not None and (info.session_id, info.finished, info.last_id, info.closed) == (
        "s",
        False,
        0,
        None,
    )
    assert await store.read("g", 0) == Tail([], False)
    frames = frames_for("s", ["", "a", "b", "c"])
    assert not await store.append([Append("g", frames[:2], False, 1, "a")])
    assert not await store.append([Append("g", frames[2:], False, 3, "bc")])
    info = await store.get_stream("g")
    assert info is not None and (info.finished, info.last_id) == (False, 4)
    final = encode_event(5, {"type": "complete"})
    assert not await store.append([Append("g", [final], True, 5)])
    result = await store.read("g", 0)
    assert result is not None and list(result.frames) == [*frames, final]
    assert result.finished is True and result.closed is None
    result = await store.read("g", 2)
    assert result is not None and list(result.frames) == [*frames[2:], final] and result.finished
    result = await store.wait("g", 3, 5.0)  # ended: no wait
    assert result is not None and list(result.frames) == [frames[3], final] and result.finished
    result = await store.read("g", 5)
    assert result is not None and list(result.frames) == [] and result.finished
    info = await store.get_stream("g")
    assert info is not None and (info.finished, info.last_id, info.closed) == (True, 5, None)
    assert await store.read("unknown", 0) is None and await store.get_stream("unknown") is None
    assert await store.wait("unknown", 0, 0.01) is None


async def test_one_append_takes_the_frames_of_several_logs(make_store):
    store = await make_store()
    for n in (1, 2):
        await store.create_session(f"s{n}", "m", now_iso())
        await store.begin_generation(f"s{n}", f"g{n}", user("q"))
    one, two = frames_for("s1", ["", "a"]), frames_for("s2", ["", "b", "c"])
    assert not await store.append([Append("g1", one, False, 1, "a"), Append("g2", two, True, 1, "bc")])
    first, second = await store.read("g1", 0), await store.read("g2", 0)
    assert first == Tail(one, False) and second == Tail(two, True)


async def test_a_waiting_reader_is_woken_by_the_next_append(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    await store.begin_generation("s", "g", user("q"))
    frames = frames_for("s", ["", "a", "b"])
    await store.append([Append("g", frames[:1], False, 1)])
    reader = asyncio.create_task(store.wait("g", 1, 30.0))
    await asyncio.sleep(0)  # let it start waiting (correct either way)
    await store.append([Append("g", frames[1:], False, 2, "ab")])
    result = await reader
    assert result is not None and list(result.frames) == frames[1:] and result.finished is False


async def test_a_quiet_wait_returns_nothing_after_its_wait(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    await store.begin_generation("s", "g", user("q"))
    assert await store.wait("g", 0, 0.05) == Tail([], False)


async def test_finished_logs_expire_after_the_retention(make_store):
    store = await make_store(retention=0.3)
    await store.create_session("s", "m", now_iso())
    await store.begin_generation("s", "g", user("q"))
    await store.append([Append("g", [encode_event(1, {"type": "complete"})], True, 1)])
    assert await store.get_stream("g") is not None

    async def gone() -> bool:
        return await store.get_stream("g") is None and await store.read("g", 0) is None

    await until(gone, "the finished log expired")
    assert await store.get_session("s") is not None  # the session stays


async def test_idle_sessions_expire_after_the_session_ttl(make_store):
    store = await make_store(session_ttl=1.0)
    await store.create_session("s", "m", now_iso())
    assert await store.count_sessions() == 1

    async def gone() -> bool:
        return await store.count_sessions() == 0 and await store.get_session("s") is None

    await until(gone, "the idle session expired")
    assert await store.list_sessions() == []

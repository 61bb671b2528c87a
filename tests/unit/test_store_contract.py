"""The Store protocol, written once and run on every store: memory, and Redis (a real one).

What only Redis has (leases across instances) is in ``test_redis_store.py``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quart_sse.codes import GenerationRunning, Refused, SessionNotFound
from quart_sse.models import Message, TurnLog, now_iso
from quart_sse.sse import encode_chunk, encode_event
from quart_sse.stores.base import (
    TITLE_CHARS,
    Append,
    SessionSummary,
    Store,
    Tail,
    activity_ms,
    encode_cursor,
)
from quart_sse.stores.memory import MemoryStore
from quart_sse.stores.redis import RedisStore

STORES = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis_cluster", marks=[pytest.mark.redis, pytest.mark.redis_cluster]),
]


async def _make(kind: str, request: pytest.FixtureRequest, **options: Any) -> Store:
    store: Store
    if kind == "memory":
        store = MemoryStore(**options)
    elif kind == "redis_cluster":
        store = RedisStore(request.getfixturevalue("redis_cluster").fresh().url, **options)
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


def at(seconds: float) -> str:
    """An ISO time ``seconds`` after 2026-01-01 (sessions' activity, chosen by the test)."""
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return moment.isoformat().replace("+00:00", "Z")


async def every_page(store: Store, owner: str | None = None, limit: int = 100) -> list[list[SessionSummary]]:
    """The pages of a listing, read with the cursors to the end."""
    pages: list[list[SessionSummary]] = []
    cursor: str | None = None
    while True:
        page, cursor = await store.list_sessions(owner, limit, cursor)
        pages.append(page)
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursors never end"


async def listed(store: Store, owner: str | None = None) -> list[str]:
    return [s.session_id for page in await every_page(store, owner) for s in page]


async def summary(store: Store, session_id: str) -> SessionSummary:
    (found,) = [s for s in (await store.list_sessions(limit=1000)).sessions if s.session_id == session_id]
    return found


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
    page = await store.list_sessions()
    assert page.next_cursor is None
    assert page.sessions == [  # latest activity first
        SessionSummary("s2", "", 0, "2026-01-02T00:00:00Z", "2026-01-02T00:00:00Z"),
        SessionSummary("s1", "", 0, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ]
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
    assert await store.list_sessions() == ([], None)


async def test_expired_sessions_are_neither_listed_nor_counted_for_their_owner(make_store):
    store = await make_store(session_ttl=1.0)
    await store.create_session("idle", "m", now_iso(), owner="alice")
    await store.create_session("busy", "m", now_iso(), owner="alice")
    await store.create_session("other", "m", now_iso(), owner="bob")
    await store.begin_generation("busy", "g", user("still generating"))  # keeps it while it runs
    assert sorted(await listed(store, "alice")) == ["busy", "idle"]
    assert (await store.count_sessions("alice"), await store.count_sessions()) == (2, 3)

    async def gone() -> bool:
        return (await store.count_sessions("alice"), await store.count_sessions()) == (1, 1)

    await until(gone, "the idle sessions expired")
    assert await listed(store, "alice") == ["busy"] and await listed(store) == ["busy"]
    assert await listed(store, "bob") == [] and await store.count_sessions("bob") == 0


async def test_paging_lists_every_session_once_latest_activity_first(make_store):
    store = await make_store()
    owners = ["alice", "bob", None]
    made: list[tuple[int, str, str | None]] = []
    for i in random.Random(7).sample(range(250), 250):  # made in no particular order
        session_id, owner = f"s{i:03d}", owners[i % 3]
        when = at(i // 4)  # four sessions a second: equal activity across page boundaries too
        await store.create_session(session_id, "m", when, owner=owner)
        made.append((activity_ms(when), session_id, owner))
    newest_first = [session_id for _, session_id, _ in sorted(made, reverse=True)]

    pages = await every_page(store, limit=100)
    assert [len(page) for page in pages] == [100, 100, 50]
    assert [s.session_id for page in pages for s in page] == newest_first
    assert await store.count_sessions() == 250
    activity = [s.last_activity for page in pages for s in page]
    assert activity == sorted(activity, reverse=True)

    for owner in ("alice", "bob"):
        theirs = [session_id for session_id in newest_first if owners[int(session_id[1:]) % 3] == owner]
        pages = await every_page(store, owner, limit=7)
        assert [s.session_id for page in pages for s in page] == theirs
        assert all(len(page) == 7 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 7
        assert await store.count_sessions(owner) == len(theirs)
    assert (await store.count_sessions("carol"), await store.list_sessions("carol")) == (0, ([], None))

    # A limit as large as the listing: one page, no cursor.
    page = await store.list_sessions(limit=250)
    assert len(page.sessions) == 250 and page.next_cursor is None
    # A page that ends exactly at the last session still says so with its cursor; the next is empty.
    first, cursor = await store.list_sessions(limit=125)
    second, cursor = await store.list_sessions(limit=125, cursor=cursor)
    assert [s.session_id for s in first + second] == newest_first
    assert cursor is None


async def test_new_activity_moves_a_session_to_the_front(make_store):
    store = await make_store()
    for i in range(5):
        await store.create_session(f"s{i}", "m", at(i))
    assert await listed(store) == ["s4", "s3", "s2", "s1", "s0"]
    first, cursor = await store.list_sessions(limit=2)
    assert [s.session_id for s in first] == ["s4", "s3"]
    # The oldest gets a message; the next page goes on after the cursor's place.
    await store.begin_generation("s0", "g", Message("user", "back again", at(100)))
    rest, _ = await store.list_sessions(limit=10, cursor=cursor)
    assert [s.session_id for s in rest] == ["s2", "s1"]
    assert await listed(store) == ["s0", "s4", "s3", "s2", "s1"]
    await store.save_answer("s0", "g", Message("model", "welcome", at(101)))
    # The session the cursor was taken at moves on, or goes: the place stays.
    await store.begin_generation("s3", "g2", Message("user", "me too", at(102)))
    assert await store.delete_session("s2") is True
    rest, _ = await store.list_sessions(limit=10, cursor=cursor)
    assert [s.session_id for s in rest] == ["s1"]
    assert await listed(store) == ["s3", "s0", "s4", "s1"]
    assert await store.count_sessions() == 4
    found = await summary(store, "s0")
    assert (found.last_activity, found.message_count) == (at(101), 2)


async def test_title_and_message_count_follow_the_turns_and_the_clear(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso(), owner="alice")
    assert (await summary(store, "s")).title == "" and (await summary(store, "s")).message_count == 0
    long = "  Tell me\n\tabout " + "the sea " * 30
    await store.begin_generation("s", "g1", user(long))
    found = await summary(store, "s")
    assert (found.message_count, found.title) == (1, (" ".join(long.split()))[: TITLE_CHARS - 1] + "…")
    assert len(found.title) == TITLE_CHARS
    assert await store.save_answer("s", "g1", Message("model", "an answer", now_iso())) == 2
    await store.begin_generation("s", "g2", user("a second question"))
    assert await store.save_answer("s", "g2", None) == 3  # no answer: nothing saved
    found = await summary(store, "s")
    assert found.message_count == 3 and found.title.startswith("Tell me about the sea")
    assert (await store.list_sessions("alice")).sessions == [found]

    assert await store.clear_session("s") is True
    found = await summary(store, "s")
    assert (found.message_count, found.title) == (0, "")
    session = await store.get_session("s")
    assert session is not None and found.last_activity == session.last_activity
    await store.begin_generation("s", "g3", user("short"))
    assert await store.save_answer("s", "g3", Message("model", "ok", now_iso())) == 2
    found = await summary(store, "s")
    assert (found.message_count, found.title) == (2, "short")
    assert (await store.list_sessions("alice")).sessions == [found]


async def test_a_malformed_cursor_is_refused_and_any_well_formed_one_is_a_place(make_store):
    store = await make_store()
    for i in range(3):
        await store.create_session(f"s{i}", "m", at(i))
    for cursor in ("", "nope", "12", "12.", ".73", "12.7", "12.7G", "-5.73", "12.73 ", "1" * 17 + ".73"):
        with pytest.raises(Refused) as refused:
            await store.list_sessions(cursor=cursor)
        assert refused.value.code == "invalid_request", cursor
    # Not one this store gave, but a place all the same: after s1's, or between sessions.
    place = encode_cursor(activity_ms(at(1)), "s1")
    assert [s.session_id for s in (await store.list_sessions(cursor=place)).sessions] == ["s0"]
    for hexed, after in (("ff00", ["s2", "s1", "s0"]), ("00", ["s1", "s0"])):  # ff00: not UTF-8
        odd = f"{activity_ms(at(2))}.{hexed}"  # before s2 (bytes above "s2"), or after it
        assert [s.session_id for s in (await store.list_sessions(cursor=odd)).sessions] == after
    assert await store.list_sessions(cursor="0.00") == ([], None)
    assert len((await store.list_sessions(cursor="9" * 16 + ".00")).sessions) == 3


# Turns, the queue and regenerate (issue 18) -----------------------------------------------


async def test_each_accepted_message_is_a_turn_numbered_for_good(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    assert await store.turns("s", 0) == TurnLog([], 0)
    assert await store.turns("unknown", 0) is None
    assert await store.begin_generation("s", "g1", user("one")) == 1
    await store.save_answer("s", "g1", Message("model", "a", now_iso()))
    await store.clear_session("s")  # a clear keeps counting
    assert await store.begin_generation("s", "g2", user("two")) == 2
    log = await store.turns("s", 0)
    assert log is not None and log.last == 2 and not log.ended
    assert [(t.number, t.stream_id, t.message.content) for t in log.turns] == [
        (1, "g1", "one"),
        (2, "g2", "two"),
    ]
    after = await store.turns("s", 1)
    assert after is not None and [t.number for t in after.turns] == [2]


async def test_a_waiter_for_the_next_turn_is_woken_by_it_and_by_the_deletion(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    waiting = asyncio.create_task(store.wait_turns("s", 0, 30))
    await asyncio.sleep(0.05)
    await store.begin_generation("s", "g1", user("one"))
    found = await waiting
    assert found is not None and [t.stream_id for t in found.turns] == ["g1"]
    waiting = asyncio.create_task(store.wait_turns("s", 1, 30))
    await asyncio.sleep(0.05)
    await store.save_answer("s", "g1", None)
    assert await store.delete_session("s")
    found = await waiting
    assert found is not None and found.ended and found.turns == []
    quiet = await store.wait_turns("s", 1, 0.05)
    assert quiet is not None and quiet.ended


async def test_a_queued_message_takes_the_slot_when_the_answer_ends(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    assert await store.enqueue("s", "q0", user("idle")) is None  # nothing runs: start it instead
    await store.begin_generation("s", "g1", user("one"))
    assert await store.enqueue("s", "q1", user("two"), "client") == 2
    with pytest.raises(Refused) as refused:
        await store.enqueue("s", "q2", user("three"))
    assert refused.value.code == "generation_running"
    info = await store.get_stream("q1")
    assert info is not None and info.queued and not info.finished
    session = await store.get_session("s")
    assert session is not None and session.generating == "g1" and session.queued == "q1"
    count, promoted = await store.end_generation("s", "g1", Message("model", "a", now_iso()))
    assert count == 2 and promoted is not None
    assert (promoted.stream_id, promoted.message.content, promoted.client_key) == ("q1", "two", "client")
    session = await store.get_session("s")
    assert session is not None and session.generating == "q1" and session.queued is None
    assert [m.content for m in session.messages] == ["one", "a", "two"]
    info = await store.get_stream("q1")
    assert info is not None and not info.queued
    assert await store.end_generation("s", "q1", None) == (3, None)


async def test_a_cancelled_queued_message_ends_its_log_and_never_starts(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    await store.begin_generation("s", "g1", user("one"))
    await store.enqueue("s", "q1", user("two"))
    assert await store.cancel_queued("q1", "cancelled")
    assert not await store.cancel_queued("q1", "cancelled")
    assert not await store.cancel_queued("g1", "cancelled")
    info = await store.get_stream("q1")
    assert info is not None and info.finished and info.closed == "cancelled" and info.last_id == 1
    assert await store.read("q1", 0) == Tail([], True, "cancelled")
    assert await store.end_generation("s", "g1", None) == (1, None)


async def test_regenerate_drops_the_last_answer_and_answers_the_last_question_again(make_store):
    store = await make_store()
    await store.create_session("s", "m", now_iso())
    with pytest.raises(Refused) as refused:
        await store.begin_generation("s", "g0", user(""), regenerate=True)
    assert refused.value.code == "nothing_to_regenerate"
    await store.begin_generation("s", "g1", user("question"))
    await store.save_answer("s", "g1", Message("model", "first answer", now_iso()))
    assert await store.begin_generation("s", "g2", user("ignored"), regenerate=True) == 2
    session = await store.get_session("s")
    assert session is not None and [m.content for m in session.messages] == ["question"]
    log = await store.turns("s", 1)
    assert log is not None and log.turns[0].regenerate and log.turns[0].message.content == "question"
    assert await store.save_answer("s", "g2", Message("model", "second answer", now_iso())) == 2

"""What only the Redis store has: leases, seen by two store instances ("A" owns, "B" reads).

A dies by stopping its lease renewal (as a killed process would); B, on the same Redis,
must then close A's stream once (an entry ``c`` in the log, no frame: its readers write the
final event), save the partial answer and free the session; A, back as a zombie, must not
write into the stream any more.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from quart_sse.codes import GenerationRunning, StoreUnavailable
from quart_sse.models import Message, now_iso
from quart_sse.sse import encode_chunk, encode_event
from quart_sse.stores.base import Append, Tail, activity_ms
from quart_sse.stores.redis import RedisStore

pytestmark = pytest.mark.redis

HEARTBEAT = 0.5  # lease 1 s (0.2 s lapsed under a loaded CI machine: an owner found its own lease gone)


@pytest.fixture(name="redis", params=["single", pytest.param("cluster", marks=pytest.mark.redis_cluster)])
def _redis(request):
    """A Redis of the test's own (one server), or the session's cluster emptied for it."""
    if request.param == "cluster":
        return request.getfixturevalue("redis_cluster").fresh()
    return request.getfixturevalue("redis_server")


@pytest.fixture(name="pair")
async def _pair(redis):
    a = RedisStore(redis.url, heartbeat=HEARTBEAT, instance_id="A")
    b = RedisStore(redis.url, heartbeat=HEARTBEAT, instance_id="B")
    await a.connect()
    await b.connect()
    yield a, b
    await a.aclose()
    await b.aclose()


async def start(a: RedisStore, session_id: str = "s", stream_id: str = "g") -> list[bytes]:
    """A session with a generation of A's: three frames in two appends (answer "Hello wörld “")."""
    await a.create_session(session_id, "m", now_iso())
    await a.begin_generation(session_id, stream_id, Message("user", "q", now_iso()))
    frames = [encode_event(1, {"type": "session_info"}), encode_chunk(2, "Hello ", 1, False)]
    frames.append(encode_chunk(3, "wörld “", 2, False))
    assert not await a.append([Append(stream_id, frames[:2], False, 1, "Hello ")])
    assert not await a.append([Append(stream_id, frames[2:], False, 3, "wörld “")])
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
        with pytest.raises(GenerationRunning) as refused:
            await b.begin_generation("s", "other", Message("user", "x", now_iso()))
        assert refused.value.stream_id == "g"
    session = await b.get_session("s")
    assert session is not None and session.generating == "g"
    assert (await b.cluster_counts()) == {"instances": 2, "active_streams": 1}
    # B reads A's live stream; a quiet wait finds nothing, and the owner alive.
    assert await b.wait("g", 3, HEARTBEAT) == Tail([], False)


async def test_a_reader_elsewhere_closes_a_dead_owners_stream_once(pair):
    a, b = pair
    frames = await start(a)
    result = await b.read("g", 0)
    assert result == Tail(frames, False)
    die(a)
    after = len(frames)
    for _ in range(100):  # each wait lasts up to the block: bounded, no timing asserted
        result = await b.wait("g", after, HEARTBEAT)
        assert result is not None
        if result.finished:
            break
    # Closed with no frame: the reader writes the final event (id 4) itself.
    assert result == Tail([], True, "interrupted")
    info = await b.get_stream("g")
    assert info is not None and (info.finished, info.last_id, info.closed) == (True, 4, "interrupted")
    # The partial answer (the text A appended) is saved once, marked; the session is free.
    session = await b.get_session("s")
    assert session is not None and session.generating is None
    assert [(m.role, m.content, m.interrupted) for m in session.messages] == [
        ("user", "q", False),
        ("model", "Hello wörld “", True),
    ]
    # The listing counts the saved partial answer, which is the session's last activity.
    (listed,) = (await b.list_sessions()).sessions
    assert (listed.session_id, listed.title, listed.message_count) == ("s", "q", 2)
    assert listed.last_activity == session.last_activity == session.messages[-1].timestamp
    # Other readers find the same close; nothing is saved twice.
    assert await b.read("g", 0) == Tail(frames, True, "interrupted")
    assert await b.read("g", 3) == Tail([], True, "interrupted")
    assert await b.read("g", 4) == Tail([], True)  # after the close's own event: nothing
    assert await b.wait("g", 1, HEARTBEAT) == Tail(frames[1:], True, "interrupted")
    # The zombie owner can write nothing more.
    late = Append("g", [encode_chunk(4, "late", 3, False)], False, 4, "late")
    assert await a.append([late]) == {"g": "interrupted"}
    assert await a.save_answer("s", "g", Message("model", "late", now_iso())) is None
    session = await b.get_session("s")
    assert session is not None and len(session.messages) == 2
    assert await b.read("g", 0) == Tail(frames, True, "interrupted")
    await b.begin_generation("s", "g2", Message("user", "next", now_iso()))


async def test_a_dead_owner_never_locks_its_session(pair):
    a, b = pair
    await start(a)
    die(a)
    refused_by: set[str] = set()
    for _ in range(200):
        try:
            await b.begin_generation("s", "g2", Message("user", "again", now_iso()))
        except GenerationRunning as exc:
            refused_by.add(exc.stream_id)
            await asyncio.sleep(HEARTBEAT / 2)  # until A's lease lapses (bounded)
        else:
            break
    else:
        raise AssertionError("the session stayed locked by a dead owner")
    assert refused_by <= {"g"}
    session = await b.get_session("s")
    assert session is not None and session.generating == "g2"
    assert [m.content for m in session.messages] == ["q", "Hello wörld “", "again"]
    assert await b.read("g", 3) == Tail([], True, "interrupted")
    info = await b.get_stream("g")
    assert info is not None and info.closed == "interrupted" and info.last_id == 4


async def test_an_owner_that_lost_frames_ends_its_stream_instead_of_leaving_a_gap(pair):
    a, _ = pair
    frames = await start(a)
    lost = await a.append([Append("g", [encode_chunk(9, "after a gap", 8, False)], False, 9, "after a gap")])
    assert lost == {"g": "interrupted"}
    assert await a.read("g", 3) == Tail([], True, "interrupted")
    assert await a.read("g", 0) == Tail(frames, True, "interrupted")
    session = await a.get_session("s")
    assert session is not None and session.generating is None
    assert [(m.content, m.interrupted) for m in session.messages] == [("q", False), ("Hello wörld “", True)]
    assert a.debug_counts() == {"owned_streams": 0, "blocking_reads": 0, "blocking_keys": 0}


async def test_a_retried_append_already_in_is_skipped(pair):
    a, _ = pair
    frames = await start(a)
    # The same batch again (a client retry after the script ran): neither lost nor doubled.
    assert not await a.append([Append("g", frames[2:], False, 3, "wörld “")])
    assert await a.read("g", 0) == Tail(frames, False)
    final = encode_event(4, {"type": "complete"})
    assert not await a.append([Append("g", [final], True, 4)])
    assert await a.read("g", 0) == Tail([*frames, final], True)
    assert a.debug_counts() == {"owned_streams": 0, "blocking_reads": 0, "blocking_keys": 0}


class Stepwise:
    """A client whose pipelines run their commands one at a time, and ``between()`` once,
    after the first command of the first pipeline: another instance's write lands inside
    a read, as it may on Redis (a pipeline is not atomic), but here every time."""

    def __init__(self, client, between):
        self.client, self.between = client, between
        self.task = asyncio.current_task()  # the test's: the store's own tasks (its lease
        # renewal, its load report) pipeline through the client too, and must not take the step

    def __getattr__(self, name):
        return getattr(self.client, name)

    def pipeline(self, **options):
        if asyncio.current_task() is not self.task:
            return self.client.pipeline(**options)
        return _Steps(self)


class _Steps:
    def __init__(self, owner: Stepwise):
        self.owner = owner
        self.calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    def __getattr__(self, name):
        def queue(*args, **kwargs):
            self.calls.append((name, args, kwargs))

        return queue

    async def execute(self):
        results = []
        for name, args, kwargs in self.calls:
            results.append(await getattr(self.owner.client, name)(*args, **kwargs))
            between, self.owner.between = self.owner.between, None
            if between is not None:
                await between()
        return results


@pytest.mark.parametrize("ending", ["complete", "close"])
async def test_a_read_that_an_end_overtakes_still_ends_with_the_final_event(pair, redis, ending):
    a, b = pair
    frames = await start(a)
    final = encode_event(4, {"type": "complete"})
    c = RedisStore(redis.url, heartbeat=HEARTBEAT, instance_id="C")
    await c.connect()

    async def end() -> None:
        if ending == "complete":
            assert not await a.append([Append("g", [final], True, 4)])
        else:  # A is gone (its lease lapsed); a reader on C closes the stream
            die(a)
            await c.redis.delete("qs:{s}:lease:g")
            assert await c.wait("g", 3, 0.001) == Tail([], True, "interrupted")

    b._redis = Stepwise(b.redis, end)
    try:
        tail = await b.read("g", 0)
        assert b._redis.between is None  # (the end did land inside the read)
    finally:
        b._redis = b._redis.client
        await c.aclose()
    # The end came after the read began: it is in the read, whole (a read that says
    # "finished" without the final frame, or without the close mark, ends its reader
    # without the final event).
    assert tail == (
        Tail([*frames, final], True) if ending == "complete" else Tail(frames, True, "interrupted")
    )


async def test_a_close_ends_the_lease_renewal_even_if_redis_py_swallowed_its_cancel(redis, monkeypatch):
    store = RedisStore(redis.url, heartbeat=HEARTBEAT, instance_id="C")
    inside = asyncio.Event()

    async def renew() -> None:
        inside.set()
        # Cancelled here, and the cancel swallowed: as redis-py's pool wait may do (8.1).
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()

    monkeypatch.setattr(store, "_renew", renew)
    await store.connect()
    await inside.wait()
    async with asyncio.timeout(10):  # a bound on a hang, not a timing: it ends at once
        await store.aclose()
    assert store._renewer is not None and store._renewer.cancelled()


async def test_redis_gone_makes_store_unavailable_errors(pair, redis):
    a, _ = pair
    await start(a)
    redis.stop()
    with pytest.raises(StoreUnavailable):
        await a.count_sessions()
    assert await a.append([Append("g", [encode_chunk(4, "x", 3, False)], False, 4, "x")]) == {
        "g": "store_unavailable"
    }
    with pytest.raises(StoreUnavailable) as failed:
        await a.read("g", 3)
    assert failed.value.code == "store_unavailable" and failed.value.retry_after == 1
    with pytest.raises(StoreUnavailable):
        await a.wait("g", 3, HEARTBEAT)
    with pytest.raises(StoreUnavailable):
        await a.get_stream("g")
    redis.start()  # empty again (no persistence): the store works at once
    count = await a.count_sessions()
    if not a.cluster:  # (on a cluster, only the restarted node lost what it held)
        assert count == 0
        assert await a.read("g", 0) is None


async def commands(store: RedisStore) -> dict[str, int]:
    """The commands Redis has run since the last reset (those of scripts included), by name."""
    if store.cluster:  # each node counts its own
        per_node = [await store.redis.info("commandstats", target_nodes=n) for n in store.redis.get_nodes()]
    else:
        per_node = [await store.redis.info("commandstats")]
    ran: dict[str, int] = {}
    for node in per_node:
        for name, figures in node.items():
            ran[name.removeprefix("cmdstat_")] = ran.get(name.removeprefix("cmdstat_"), 0) + int(
                figures["calls"]
            )
    return ran


async def test_a_listing_reads_no_message_and_scans_nothing(pair):
    a, _ = pair
    for n in range(30):
        await a.create_session(f"s{n}", "m", now_iso(), owner="alice" if n % 2 else None)
        await a.begin_generation(f"s{n}", f"g{n}", Message("user", f"question {n}", now_iso()))
        await a.save_answer(f"s{n}", f"g{n}", Message("model", "answer " * 50, now_iso()))
    if a.cluster:
        await a.redis.config_resetstat(target_nodes=a.redis.ALL_NODES)
    else:
        await a.redis.config_resetstat()
    page, cursor = await a.list_sessions(None, 10)
    page2, _ = await a.list_sessions("alice", 10, None)
    assert (await a.count_sessions(), await a.count_sessions("alice")) == (30, 15)
    ran = await commands(a)
    assert [s.message_count for s in page + page2] == [2] * 20 and cursor is not None
    assert {s.title for s in page} == {f"question {n}" for n in range(20, 30)}
    # One HMGET per listed session (and one for the session after the page): no message read,
    # no count taken, no index scanned; a purge of what expired (nothing) per index pair read
    # (every session's: one pair on one server, a.shards on a cluster; an owner's: one).
    reads = {"lrange", "lindex", "llen", "hgetall", "hkeys", "zrange", "zscan", "scan", "keys"}
    assert not reads & {name for name, calls in ran.items() if calls}
    pairs = a.shards + 1
    assert (ran["hmget"], ran["zrangebyscore"], ran["zcard"]) == (22, 2 * pairs, pairs)


async def test_a_session_from_before_the_counts_is_listed_with_its_length(pair):
    a, _ = pair
    await start(a, "old")
    await a.save_answer("old", "g", Message("model", "an answer", now_iso()))
    await a.redis.hdel("qs:{old}:s", "count", "title")  # as a session written by an older version
    (found,) = (await a.list_sessions()).sessions
    assert (found.message_count, found.title) == (2, "")
    await a.begin_generation("old", "g2", Message("user", "next", now_iso()))
    (found,) = (await a.list_sessions()).sessions
    assert (found.message_count, found.title) == (3, "next")  # the count mended, a title from now on


async def test_an_index_entry_whose_session_is_gone_is_dropped(pair):
    a, _ = pair
    for n in range(5):
        await a.create_session(f"s{n}", "m", now_iso(), owner="alice")
    await a.redis.delete("qs:{s2}:s")
    await a.redis.delete("qs:{s4}:s")  # gone without a word to the indexes
    assert sorted(s.session_id for s in (await a.list_sessions("alice", 2)).sessions) == ["s1", "s3"]
    assert await a.count_sessions("alice") == 3
    assert sorted(s.session_id for s in (await a.list_sessions(None, 2)).sessions) == ["s1", "s3"]
    assert await a.count_sessions() == 3


async def test_a_cancel_published_by_one_instance_reaches_the_others(redis):
    told: list[tuple[str, str]] = []
    a = RedisStore(redis.url, heartbeat=HEARTBEAT, instance_id="A")
    b = RedisStore(redis.url, heartbeat=HEARTBEAT, instance_id="B")
    arrived = asyncio.Event()

    def on_cancel(stream_id: str, code: str) -> None:
        told.append((stream_id, code))
        arrived.set()

    a.listen(on_cancel)
    await a.connect()
    await b.connect()
    try:
        for _ in range(200):  # until A's subscription is in place (each round a publish)
            await b.publish_cancel("g", "cancelled")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await arrived.wait()
                break
        assert told and set(told) == {("g", "cancelled")}
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_queued_stream_is_not_taken_for_a_dead_one_and_goes_with_its_owner(pair):
    a, b = pair
    await start(a)
    await a.enqueue("s", "q", Message("user", "next", now_iso()))
    # Quiet and without a lease, but queued: a reader elsewhere leaves it alone.
    assert await b.wait("q", 0, 0.01) == Tail([], False)
    die(a)
    for _ in range(100):
        if (await b.wait("g", 3, HEARTBEAT)) is not None and (await b.get_stream("g")).finished:
            break
    info = await b.get_stream("q")
    assert info is not None and info.finished and info.closed == "interrupted"
    session = await b.get_session("s")
    assert session is not None and session.generating is None and session.queued is None


async def test_a_turn_moves_the_session_in_its_owners_index_from_any_instance(pair):
    # On a single Redis the session script writes the indexes itself when the instance knows
    # the session's owner; B, which never saw the session, leaves them to its client.  Both
    # must land in the owner's index pair and in everyone's.
    a, b = pair
    moves: list[list[bytes]] = []
    reindex = b._reindex

    async def spy(session_id, moved):
        moves.append(list(moved))
        await reindex(session_id, moved)

    b._reindex = spy
    await a.create_session("s", "m", "2026-01-01T00:00:00+00:00", owner="k1")
    for n, at in enumerate(["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]):
        await b.begin_generation("s", f"g{n}", Message("user", "q", at))
        for whose in (None, "k1"):  # (by activity: the turn's time; by expiry: none while it runs)
            expiry, active = a._pair("s", whose)
            assert await a.redis.zscore(active, "s") == activity_ms(at)
            assert await a.redis.zscore(expiry, "s") == float("inf")
        assert await b.end_generation("s", f"g{n}", None) == (1 + n, None)
    if not b.cluster:  # the first turn's move was B's to write, the second's the script's
        assert moves[0][0] != b"" and moves[2] == [b"", b"", b"k1"]
    else:  # a script never touches another slot
        assert all(move[0] != b"" for move in moves[::2])


async def test_a_session_made_for_a_turn_is_written_with_the_turns_begin(pair):
    # POST /chat/stream without a session: create, then BEGIN at once; on a single Redis the
    # session's writes ride in BEGIN's round trip (on a cluster they go at once, in their slots).
    a, b = pair
    made = await a.create_session("s", "m", "2026-01-01T00:00:00+00:00", owner="k1", deferred=True)
    assert made.session_id == "s" and made.owner == "k1"
    written_at_once = bool(await a.redis.exists("qs:{s}:s"))
    assert written_at_once is bool(a.cluster)
    await a.begin_generation("s", "g", Message("user", "q", "2026-01-02T00:00:00+00:00"))
    seen = await b.get_session("s")
    assert seen is not None and seen.owner == "k1" and seen.generating == "g"
    assert [m.content for m in seen.messages] == ["q"]
    assert [s.session_id for s in (await b.list_sessions(owner="k1")).sessions] == ["s"]
    assert await b.count_sessions() == 1

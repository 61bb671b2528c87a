"""Shared blocking reads (``stores/redis_watch.py``): many waits, one ``XREAD BLOCK`` per slot
group, on a real Redis and on the three-node cluster.

The blocked clients are counted by Redis itself (``INFO clients``).  A wait that joins while
the shared read blocks for a long time (60 s here) must get its entries at once: without the
``CLIENT UNBLOCK`` it would sit out the block, and the test's bound (``asyncio.wait_for``,
far below the block) fails it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from quart_sse.stores.redis_watch import GROUPS, Watch
from tests.support.redis_cluster import CLUSTER_PARAM, _ask, redis_for

pytestmark = pytest.mark.redis

BLOCK = 60.0  # the shared read's own block: far longer than any bound below
BOUND = 10.0  # seconds a wait that has its entries may take at most (a failure bound)


class _Watch(Watch):
    """A Watch with the test's own client (for its writes) and the Redis ports to count on."""

    redis: Any
    ports: list[int]


@pytest.fixture(name="redis", params=["redis", CLUSTER_PARAM])
def _redis(request):
    return redis_for(request, request.param)


@pytest.fixture(name="watch")
async def _watch(redis):
    cluster = hasattr(redis, "nodes")
    make = RedisCluster.from_url if cluster else Redis.from_url
    blocking = make(redis.url, socket_timeout=BLOCK + 5)
    commands = make(redis.url, socket_timeout=5)
    watch = _Watch(blocking, commands, cluster=cluster, block=BLOCK)
    watch.redis = commands  # (for the test's own writes)
    watch.ports = [node.port for node in getattr(redis, "nodes", [redis])]
    yield watch
    await watch.aclose()
    await blocking.aclose()
    await commands.aclose()


def _blocked(ports: list[int]) -> int:
    total = 0
    for port in ports:
        info = _ask(port, "INFO", "clients").decode()
        figures = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        total += int(figures["blocked_clients"])
    return total


async def _until_blocked(watch: _Watch, count: int) -> None:
    """Until Redis counts ``count`` blocked clients (each look a round trip, bounded)."""
    for _ in range(5000):
        if _blocked(watch.ports) == count and all(
            g.covered is not None and not g.unblocking for g in watch.groups.values() if g.task
        ):
            await watch.redis.ping()  # one more round trip: the XREAD is in Redis
            if _blocked(watch.ports) == count:
                return
        await watch.redis.ping()
    raise AssertionError(f"{_blocked(watch.ports)} blocked, not {count}")


def _keys_in_one_group(count: int, cluster: bool) -> list[str]:
    """``count`` stream keys of one slot group (one hash tag on a cluster)."""
    if cluster:
        return [f"t:{{s}}:{n}" for n in range(count)]
    keys: list[str] = []
    n = 0
    while len(keys) < count:
        key = f"t:{n}"
        if key_slot(key.encode()) % GROUPS == 0:
            keys.append(key)
        n += 1
    return keys


async def test_many_waits_of_one_group_share_one_blocking_read(watch):
    keys = _keys_in_one_group(50, watch.cluster)
    waits = [asyncio.ensure_future(watch.read(key, "0-0", BLOCK)) for key in keys]
    await _until_blocked(watch, 1)
    assert watch.counts() == {"blocking_reads": 1, "blocking_keys": 50}
    for n, key in enumerate(keys):
        await watch.redis.xadd(key, {"f": f"frame {n}"}, id="0-1")
    found = await asyncio.wait_for(asyncio.gather(*waits), BOUND)
    assert [entries[0][1] for entries in found] == [{b"f": f"frame {n}".encode()} for n in range(50)]
    assert [entries[0][0] for entries in found] == [b"0-1"] * 50


async def test_a_wait_that_joins_during_a_block_gets_its_entries_at_once(watch):
    first, second = _keys_in_one_group(2, watch.cluster)
    waiting = asyncio.ensure_future(watch.read(first, "0-0", BLOCK))
    await _until_blocked(watch, 1)
    await watch.redis.xadd(second, {"f": "already there"}, id="0-1")
    # The blocked XREAD does not name ``second``: it must be interrupted for it.
    entries = await asyncio.wait_for(watch.read(second, "0-0", BLOCK), BOUND)
    assert entries == [(b"0-1", {b"f": b"already there"})]
    assert not waiting.done()
    await _until_blocked(watch, 1)  # the first wait blocks on alone
    waiting.cancel()


async def test_each_wait_gets_the_entries_past_its_own_position(watch):
    (key,) = _keys_in_one_group(1, watch.cluster)
    for n in (1, 2, 3):
        await watch.redis.xadd(key, {"f": str(n)}, id=f"0-{n}")
    late = asyncio.ensure_future(watch.read(key, "0-3", BLOCK))  # waits for 0-4
    early = await asyncio.wait_for(watch.read(key, "0-1", BLOCK), BOUND)
    assert [entry_id for entry_id, _ in early] == [b"0-2", b"0-3"]
    assert not late.done()
    await watch.redis.xadd(key, {"f": "4"}, id="0-4")
    assert await asyncio.wait_for(late, BOUND) == [(b"0-4", {b"f": b"4"})]


async def test_a_quiet_wait_ends_at_its_own_block_and_a_cancelled_one_leaves(watch):
    a, b = _keys_in_one_group(2, watch.cluster)
    assert await watch.read(a, "0-0", 0.05) is None  # its own timer, not the shared block
    cancelled = asyncio.ensure_future(watch.read(b, "0-0", BLOCK))
    await _until_blocked(watch, 1)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert watch.counts()["blocking_keys"] == 0
    # The shared read ends with its block; nothing waits for it any more.
    await watch.aclose()
    await _until_blocked(watch, 0)


async def test_groups_split_by_slot(watch):
    if watch.cluster:  # a key of each of two sessions: two slots, two blocking reads
        keys = ["t:{one}:log", "t:{two}:log"]
        assert key_slot(keys[0].encode()) != key_slot(keys[1].encode())
    else:  # keys of two of the sixteen groups
        keys = [_keys_in_one_group(1, False)[0]]
        keys += [k for k in (f"u:{n}" for n in range(100)) if key_slot(k.encode()) % GROUPS == 1][:1]
    waits = [asyncio.ensure_future(watch.read(key, "0-0", BLOCK)) for key in keys]
    await _until_blocked(watch, 2)
    assert watch.counts() == {"blocking_reads": 2, "blocking_keys": 2}
    for wait in waits:
        wait.cancel()


async def test_readers_that_wait_again_and_again_keep_one_blocking_read(watch):
    # Fifty readers follow one log through twenty appends, each waiting again from where it
    # got to: the groups that end as a wave is served and the ones the next wave starts
    # must not be confused (a stale wait removing a newer, running group left its readers
    # blocked on a read of their own: one blocked client per reader).
    (key,) = _keys_in_one_group(1, watch.cluster)
    appends = 20

    async def follow() -> int:
        after = 0
        while after < appends:
            entries = await watch.read(key, f"0-{after}", BLOCK)
            assert entries, "a wait of 60 s ended without entries"
            after = int(entries[-1][0].split(b"-")[1])
        return after

    readers = [asyncio.ensure_future(follow()) for _ in range(50)]
    for n in range(1, appends):
        await _until_blocked(watch, 1)
        await watch.redis.xadd(key, {"f": str(n)}, id=f"0-{n}")
    await _until_blocked(watch, 1)
    assert watch.counts() == {"blocking_reads": 1, "blocking_keys": 1}
    await watch.redis.xadd(key, {"f": str(appends)}, id=f"0-{appends}")
    assert await asyncio.wait_for(asyncio.gather(*readers), BOUND) == [appends] * 50

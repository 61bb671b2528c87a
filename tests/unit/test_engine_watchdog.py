"""The silence watchdog (quart_sse.engine.generation.Watchdog): one timer per slot, not per generation.

Real parts: Watchdog, Generation and its task, the loop's timers; the slot's timer is fired
by the test through ``_due`` where the test needs a given moment (no sleeps).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from quart_sse import codes
from quart_sse.engine.channel import Channel
from quart_sse.engine.generation import Generation, Watchdog


async def silent() -> None:
    """A model that never answers."""
    await asyncio.Event().wait()


async def generation(name: str) -> Generation:
    gen = Generation(name, "s-" + name, cast(Channel, None), "test", "q")
    gen.task = asyncio.create_task(silent())
    gen._last_piece = asyncio.get_running_loop().time()
    return gen


async def ended(gen: Generation) -> None:
    assert gen.task is not None
    with pytest.raises(asyncio.CancelledError):
        await gen.task


async def test_generations_share_one_timer_per_slot():
    loop = asyncio.get_running_loop()
    dog = Watchdog(60.0)
    timers_before = len(cast(Any, loop)._scheduled)
    gens = [await generation(f"g{i}") for i in range(50)]
    for gen in gens:
        dog.watch(gen, loop)
    slots = {gen._watch_slot for gen in gens}
    assert len(cast(Any, loop)._scheduled) - timers_before == len(slots) <= 2
    assert sum(len(members) for members in dog.slots.values()) == 50
    for gen in gens:
        dog.forget(gen)
        assert gen.task is not None
        gen.task.cancel()
    assert all(not members for members in dog.slots.values())


async def test_a_silent_generation_is_cancelled_with_timeout_when_its_slot_is_due():
    loop = asyncio.get_running_loop()
    dog = Watchdog(0.2)  # slots of 0.05 s
    gen = await generation("g")
    dog.watch(gen, loop)
    await ended(gen)  # the real timer fires: nothing else ends it
    assert gen.cancel_code == codes.TIMEOUT and gen._watch_slot == 0


async def test_a_generation_that_got_a_piece_moves_on_to_a_later_slot():
    loop = asyncio.get_running_loop()
    dog = Watchdog(60.0)
    gen = await generation("g")
    dog.watch(gen, loop)
    slot = gen._watch_slot
    gen._last_piece = loop.time() + 30.0  # a piece came since (its time moved on)
    dog._due(slot, loop)
    assert gen.cancel_code is None and gen._watch_slot > slot and gen in dog.slots[gen._watch_slot]
    dog.forget(gen)
    assert gen.task is not None
    gen.task.cancel()


async def test_an_infinite_timeout_watches_nothing():
    dog = Watchdog(float("inf"))
    gen = await generation("g")
    dog.watch(gen, asyncio.get_running_loop())
    assert dog.slots == {} and gen._watch_slot == 0
    assert gen.task is not None
    gen.task.cancel()

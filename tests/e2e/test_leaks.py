"""A client that goes away is released at once: nothing is held for dropped streams."""

from __future__ import annotations

import asyncio

import aiohttp


async def engine(http, url):
    async with http.get(f"{url}/stats") as r:
        return (await r.json())["engine"]


async def open_and_drop(url: str, path: str, method: str = "GET", json: object = None) -> None:
    """Open a stream, read its first bytes, and drop the connection."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url + path, json=json) as r:
            assert r.status == 200
            await r.content.readuntil(b"\n\n")
        # Leaving the session closes the connection mid-stream.


async def wait_until(check, http, url):
    """Ask the server until ``check`` holds: each round trip is an event, not a sleep."""
    for _ in range(5000):
        counts = await engine(http, url)
        if check(counts):
            return counts
    raise AssertionError(f"never held: {counts}")


async def test_a_thousand_dropped_readers_leave_nothing_behind(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="3600000")
    async with http.post(f"{server.url}/chat", json={"message": "held open"}) as r:
        accepted = await r.json()
    path = accepted["events_url"]
    for _ in range(10):
        await asyncio.gather(*(open_and_drop(server.url, path) for _ in range(100)))
    counts = await wait_until(lambda c: c["readers"] == 0, http, server.url)
    assert counts["heartbeat_members"] == 0
    async with http.get(f"{server.url}/metrics") as r:
        assert "quart_sse_stream_responses_total 1000.0" in await r.text()
    assert counts["waiting_readers"] == 0
    assert counts["generations"] == 1 and counts["generation_tasks"] == 1
    async with http.get(f"{server.url}/stats") as r:
        assert (await r.json())["engine"]["readers"] == 0
    # The generation itself is untouched by its readers going away, and ends on cancel.
    async with http.post(f"{server.url}/streams/{accepted['stream_id']}/cancel") as r:
        assert (await r.json())["cancelled"] is True
    counts = await engine(http, server.url)
    assert counts["generations"] == 0 and counts["generation_tasks"] == 0 and counts["queued_frames"] == 0


async def test_dropped_chat_streams_generate_to_the_end_and_release_everything(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="1", SIM_RESPONSE_CHUNKS="20")
    for _ in range(4):
        await asyncio.gather(
            *(open_and_drop(server.url, "/chat/stream", "POST", {"message": "drop me"}) for _ in range(50))
        )
    counts = await wait_until(lambda c: c["readers"] == 0 and c["generations"] == 0, http, server.url)
    assert counts == {**counts, "generation_tasks": 0, "queued_frames": 0, "waiting_readers": 0}
    async with http.get(f"{server.url}/stats") as r:
        stats = await r.json()
    assert stats["streams_completed"] == 200 and stats["streams_failed"] == 0

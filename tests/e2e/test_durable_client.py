"""A chat answer read as a Durable Stream by the protocol's own Python client (PyPI
``durable-streams``), with nothing of ours: the URL from ``POST /chat``, a cut mid-answer,
a resume from the last offset the client had."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from durable_streams import astream

from tests.support.server import ServerProcess

SLOW = {"SIM_CHUNK_DELAY_MS": "20", "SIM_RESPONSE_CHUNKS": "20"}


async def _ask(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    async with http.post(f"{server.url}/chat", json={"message": "Tell me about durable streams"}) as response:
        assert response.status == 202
        accepted: dict[str, Any] = await response.json()
    return accepted


async def _saved_answer(http: aiohttp.ClientSession, server: ServerProcess, session_id: str) -> str:
    async with http.get(f"{server.url}/sessions/{session_id}") as response:
        session = await response.json()
    answer: str = session["messages"][-1]["content"]
    return answer


def _events(batch: Any) -> list[dict[str, Any]]:
    return list(batch) if isinstance(batch, list) else [batch]


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_client_reads_an_answer_across_a_cut(start_server, http, live):
    """Read until the first chunk, drop the connection, resume from the offset the client
    had: every event exactly once, in order, ending with complete; the text is the saved
    answer."""
    server = start_server(**SLOW)
    accepted = await _ask(http, server)
    assert accepted["durable_url"] == f"/v1/stream/chat/{accepted['stream_id']}"
    url = server.url + accepted["durable_url"]

    first: list[dict[str, Any]] = []
    resume_at = None
    async with astream(url, offset="-1", live=live) as response:
        async for event in response.iter_events(mode="json"):
            first += _events(event.data)
            resume_at = event.next_offset
            if any(e["type"] == "chunk" for e in first):
                break  # the cut: the response is closed here, mid-answer
    assert resume_at is not None

    rest: list[dict[str, Any]] = []
    async with astream(url, offset=resume_at, live=live) as response:
        async for event in response.iter_events(mode="json"):
            rest += _events(event.data)
            if rest and rest[-1]["type"] in ("complete", "error"):
                break

    events = first + rest
    assert [e["type"] for e in events[:2]] == ["session_info", "status"]
    assert events[0]["durable_url"] == accepted["durable_url"]
    chunks = [e for e in events if e["type"] == "chunk"]
    assert [c["chunk_number"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert events[-1]["type"] == "complete"
    assert events[-1]["total_chunks"] == len(chunks)
    assert "".join(c["text"] for c in chunks) == await _saved_answer(http, server, accepted["session_id"])


async def test_finished_answer_is_a_closed_stream(start_server, http):
    """Once the answer has ended, its stream is closed: a catch-up read gets every event
    with Stream-Closed, and writes are refused (405)."""
    server = start_server(SIM_CHUNK_DELAY_MS="0")
    accepted = await _ask(http, server)
    url = server.url + accepted["durable_url"]
    events: list[dict[str, Any]] = []
    async with astream(url, offset="-1", live="long-poll") as response:
        async for event in response.iter_events(mode="json"):
            events += _events(event.data)
            if events and events[-1]["type"] in ("complete", "error"):
                break
    async with http.get(url) as response:
        assert response.status == 200
        assert response.headers["Stream-Closed"] == "true"
        assert response.headers["Stream-Up-To-Date"] == "true"
        assert await response.json() == events
    async with http.post(url, data=b"[1]", headers={"Content-Type": "application/json"}) as response:
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_other_keys_answer_is_not_found(start_server, http):
    """With API_KEYS, another key's answer is an unknown stream (404), as everywhere else."""
    server = start_server(API_KEYS="key-a,key-b", SIM_CHUNK_DELAY_MS="0")
    async with http.post(
        f"{server.url}/chat", json={"message": "hi"}, headers={"Authorization": "Bearer key-a"}
    ) as response:
        accepted = await response.json()
    url = server.url + accepted["durable_url"]
    async with http.get(url, headers={"Authorization": "Bearer key-b"}) as response:
        assert response.status == 404
    async with http.get(url) as response:
        assert response.status == 401
    async with http.get(url, headers={"Authorization": "Bearer key-a"}) as response:
        assert response.status == 200

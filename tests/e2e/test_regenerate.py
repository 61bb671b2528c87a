"""POST /sessions/{id}/regenerate: the last answer replaced by a new one (issue 18)."""

from __future__ import annotations

import pytest

from tests.support.redis_cluster import CLUSTER_PARAM, redis_for
from tests.support.sse_client import chat_stream, get_json, read_stream


@pytest.fixture(name="pair", params=["memory", pytest.param("redis", marks=pytest.mark.redis), CLUSTER_PARAM])
def _pair(request, start_server):
    env = {"SIM_CHUNK_DELAY_MS": "5", "SIM_RESPONSE_CHUNKS": "6"}
    if request.param == "memory":
        a = start_server(**env)
        return a, a
    env["REDIS_URL"] = redis_for(request, request.param).url
    return start_server(**env), start_server(**env)


async def test_regenerate_replaces_the_last_answer(pair, http):
    a, b = pair
    first = await chat_stream(http, a.url, "tell me something")
    session_id = first.session_id
    async with http.post(f"{b.url}/sessions/{session_id}/regenerate") as r:
        assert r.status == 202
        accepted = await r.json()
    assert accepted["session_id"] == session_id and accepted["events_url"].endswith("/events")
    async with http.get(a.url + accepted["events_url"]) as r:
        again = await read_stream(r)
    # The model saw the history without the replaced answer: one message of context.
    assert again.data[1]["context_messages"] == 1 and again.last["type"] == "complete"
    async with http.post(f"{a.url}/sessions/{session_id}/regenerate?stream=true") as r:
        assert r.status == 200
        third = await read_stream(r)
    assert third.last["type"] == "complete" and third.data[1]["context_messages"] == 1
    session = await get_json(http, f"{b.url}/sessions/{session_id}")
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "tell me something"),
        ("model", third.text),
    ]


async def test_regenerate_is_refused_while_generating_and_without_a_message(pair, start_server, http):
    a, b = pair
    async with http.post(f"{a.url}/sessions/new") as r:
        session_id = (await r.json())["session_id"]
    async with http.post(f"{b.url}/sessions/{session_id}/regenerate") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "nothing_to_regenerate"
    async with http.post(f"{b.url}/sessions/nope/regenerate") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "session_not_found"
    for query in ("stream=maybe", "stream=", "stream", "stream=true&stream=false", "stream=true&stream=true"):
        async with http.post(f"{a.url}/sessions/{session_id}/regenerate?{query}") as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_request", query
    async with http.post(f"{a.url}/chat", json={"message": "slow", "session_id": session_id}) as r:
        accepted = await r.json()
    async with http.post(f"{b.url}/sessions/{session_id}/regenerate") as r:
        busy = r.status, (await r.json())["error"]["code"]
    async with http.get(a.url + accepted["events_url"]) as r:
        await read_stream(r)
    assert busy == (409, "generation_running")

"""Cancel reaches the generation wherever it runs (issue 18), over real HTTP.

On memory one server does everything; on Redis the generation runs on A and every cancel
is asked of B, which tells A (pub/sub) and answers once the stream has ended.
"""

from __future__ import annotations

import pytest

from tests.support.redis_cluster import CLUSTER_PARAM, redis_for
from tests.support.sse_client import get_json, read_stream

SLOW = {"SIM_CHUNK_DELAY_MS": "3600000"}  # a generation that never ends by itself


@pytest.fixture(name="pair", params=["memory", pytest.param("redis", marks=pytest.mark.redis), CLUSTER_PARAM])
def _pair(request, start_server):
    """(A, B): the instance that generates and the one that is asked (the same on memory)."""
    if request.param == "memory":
        a = start_server(**SLOW)
        return a, a
    redis_server = redis_for(request, request.param)
    env = {"REDIS_URL": redis_server.url, **SLOW}
    return start_server(**env), start_server(**env)


async def _started(http, url, session_id=None):
    async with http.post(f"{url}/chat", json={"message": "go on forever", "session_id": session_id}) as r:
        assert r.status == 202, await r.text()
        return await r.json()


async def test_cancel_from_the_other_instance_ends_the_generation_and_is_idempotent(pair, http):
    a, b = pair
    accepted = await _started(http, a.url)
    stream_id, session_id = accepted["stream_id"], accepted["session_id"]
    async with http.get(b.url + accepted["events_url"]) as reading:
        head = await read_stream(reading, until=lambda d: d["type"] == "status")
        async with http.post(f"{b.url}/streams/{stream_id}/cancel") as r:
            assert r.status == 200
            assert await r.json() == {"stream_id": stream_id, "cancelled": True, "status": "cancelled"}
        # Answered once the generation has ended: the session is free, on either instance.
        session = await get_json(http, f"{b.url}/sessions/{session_id}")
        assert session["generating"] is None
        rest = await read_stream(reading)
    assert rest.last == {**rest.last, "type": "error", "code": "cancelled"}
    assert head.ids + rest.ids == list(range(1, len(head.ids + rest.ids) + 1))
    # Again, on either instance: nothing to do, the final state.
    for server in (a, b):
        async with http.post(f"{server.url}/streams/{stream_id}/cancel") as r:
            assert await r.json() == {"stream_id": stream_id, "cancelled": False, "status": "cancelled"}


async def test_cancelling_a_completed_stream_answers_complete(pair, start_server, http):
    a, b = pair
    async with http.post(f"{b.url}/streams/nope/cancel") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "stream_not_found"
    accepted = await _started(http, a.url)
    async with http.post(f"{b.url}/streams/{accepted['stream_id']}/cancel") as r:
        assert (await r.json())["cancelled"] is True
    # A new answer in the same session, on B's side this time, cancelled from A.
    again = await _started(http, b.url, accepted["session_id"])
    async with http.post(f"{a.url}/streams/{again['stream_id']}/cancel") as r:
        assert await r.json() == {"stream_id": again["stream_id"], "cancelled": True, "status": "cancelled"}


@pytest.mark.parametrize("how", ["delete", "clear"])
async def test_delete_and_clear_from_the_other_instance_stop_the_generation(pair, http, how):
    a, b = pair
    accepted = await _started(http, a.url)
    session_id = accepted["session_id"]
    async with http.get(a.url + accepted["events_url"]) as reading:
        await read_stream(reading, until=lambda d: d["type"] == "status")
        if how == "delete":
            async with http.delete(f"{b.url}/sessions/{session_id}") as r:
                assert r.status == 200 and await r.json() == {"deleted": session_id}
        else:
            async with http.post(f"{b.url}/sessions/{session_id}/clear") as r:
                assert r.status == 200 and await r.json() == {"session_id": session_id, "message_count": 0}
        rest = await read_stream(reading)
    assert rest.last["type"] == "error" and rest.last["code"] == "cancelled"
    async with http.post(f"{a.url}/streams/{accepted['stream_id']}/cancel") as r:
        assert (await r.json())["status"] == "cancelled"
    if how == "delete":
        async with http.get(f"{a.url}/sessions/{session_id}") as r:
            assert r.status == 404
    else:
        session = await get_json(http, f"{a.url}/sessions/{session_id}")
        assert session["messages"] == [] and session["generating"] is None
        # The cleared session takes a new message at once, on either instance.
        await _started(http, a.url, session_id)

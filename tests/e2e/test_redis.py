"""Several server processes on one Redis (issue 7), over real HTTP.

Each test has its own redis-server (free port, no persistence), or the session's local
three-node Redis Cluster emptied for it (issue 19), and starts separate server processes
on it, as a PaaS with several instances would.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket

import aiohttp
import pytest

from quart_sse.sse import Event, SSEParser
from tests.conftest import ARTIFACTS
from tests.support.redis_cluster import RedisClusterServer
from tests.support.redis_server import RedisServer
from tests.support.sse_client import Stream, chat_stream, read_stream

pytestmark = pytest.mark.redis


@pytest.fixture(
    name="redis_server", params=["single", pytest.param("cluster", marks=pytest.mark.redis_cluster)]
)
def _redis(request):
    """One redis-server of the test's own, or the session's three-node cluster emptied for it
    (``stop``/``start`` take its first node away and bring it back empty)."""
    if request.param == "cluster":
        yield request.getfixturevalue("redis_cluster").fresh()
        return
    ARTIFACTS.mkdir(exist_ok=True)
    server = RedisServer(ARTIFACTS / f"redis-{request.node.name.replace('/', '_')[:80]}.log")
    yield server
    server.stop()


async def get_json(http, url):
    async with http.get(url) as r:
        return r.status, await r.json()


async def read_across(response, at, then):
    """Read ``response`` to its end with one parser, calling ``then()`` once, after the first
    event whose data ``at`` accepts.  (``read_stream(until=...)`` and another ``read_stream``
    on the same response drop what came in the same chunk after that event: a server that
    writes several events at once would seem to leave a gap.)"""
    parser = SSEParser()
    out = Stream()
    pending = True
    async for chunk in response.content.iter_any():
        out.raw += chunk
        for item in parser.feed(chunk):
            out.items.append(item)
            if pending and isinstance(item, Event) and at(json.loads(item.data)):
                pending = False
                then()
    return out


async def until(check, what, rounds=600):
    """Poll the servers until ``check()`` holds: each round is a request (bounded)."""
    for _ in range(rounds):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


async def test_a_stream_started_on_a_resumes_on_b_exactly_once(redis_server, start_server, http):
    env = {"REDIS_URL": redis_server.url, "SIM_CHUNK_DELAY_MS": "20", "SIM_RESPONSE_CHUNKS": "40"}
    a, b = start_server(**env), start_server(**env)
    async with http.post(f"{a.url}/chat/stream", json={"message": "resume me elsewhere"}) as r:
        head = await read_stream(r, until=lambda d: d.get("chunk_number") == 3)
    # Cut on A mid-answer; the generation goes on there; B replays, then follows it live.
    info = head.data[0]
    async with http.get(b.url + info["events_url"], headers={"Last-Event-ID": head.events[-1].id}) as r:
        assert r.status == 200
        rest = await read_stream(r)
    ids = head.ids + rest.ids
    assert ids == list(range(1, 40 + 4)), "every event exactly once, in order"
    chunks = [d["chunk_number"] for d in head.data + rest.data if d["type"] == "chunk"]
    assert chunks == list(range(1, 41))
    assert rest.last["type"] == "complete" and rest.last["total_chunks"] == 40
    status, session = await get_json(http, f"{b.url}/sessions/{info['session_id']}")
    assert status == 200
    assert session["messages"][-1]["content"] == head.text + rest.text
    # Read again in full from B after the end: the same bytes as both parts together.
    async with http.get(b.url + info["events_url"]) as r:
        again = await read_stream(r)
    assert again.ids == ids and again.text == head.text + rest.text


async def test_sessions_made_on_a_are_listed_and_continued_on_b(redis_server, start_server, http):
    a = start_server(REDIS_URL=redis_server.url)
    b = start_server(REDIS_URL=redis_server.url)
    async with http.post(f"{a.url}/sessions/new") as r:
        assert r.status == 201
        session_id = (await r.json())["session_id"]
    first = await chat_stream(http, a.url, "Tell me about rivers", session_id)
    status, listed = await get_json(http, f"{b.url}/sessions")
    assert status == 200 and [s["session_id"] for s in listed["sessions"]] == [session_id]
    assert listed["sessions"][0]["message_count"] == 2
    second = await chat_stream(http, b.url, "And about lakes?", session_id)
    assert second.data[1]["context_messages"] == 3 and "turn number 2" in second.text
    status, body = await get_json(http, f"{a.url}/sessions/{session_id}")
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "Tell me about rivers"),
        ("model", first.text),
        ("user", "And about lakes?"),
        ("model", second.text),
    ]
    async with http.delete(f"{b.url}/sessions/{session_id}") as r:
        assert r.status == 200
    status, _ = await get_json(http, f"{a.url}/sessions/{session_id}")
    assert status == 404


async def test_one_generation_per_session_across_instances(redis_server, start_server, http):
    env = {"REDIS_URL": redis_server.url, "SIM_CHUNK_DELAY_MS": "3600000"}
    a, b = start_server(**env), start_server(**env)
    async with http.post(f"{a.url}/chat", json={"message": "slow", "session_id": None}) as r:
        accepted = await r.json()
    async with http.post(f"{b.url}/chat", json={"message": "too", "session_id": accepted["session_id"]}) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "generation_running"
    status, health = await get_json(http, f"{b.url}/health")
    assert status == 200 and health["cluster"]["active_streams"] == 1 and health["active_streams"] == 0
    async with http.post(f"{a.url}/streams/{accepted['stream_id']}/cancel") as r:
        assert (await r.json())["cancelled"] is True
    async with http.post(f"{b.url}/chat", json={"message": "now", "session_id": accepted["session_id"]}) as r:
        assert r.status == 202


async def test_sigkill_of_the_owner_ends_readers_elsewhere_with_interrupted(redis_server, start_server, http):
    env = {
        "REDIS_URL": redis_server.url,
        "HEARTBEAT_INTERVAL": "0.5",  # lease 1 s: interrupted within ~1.5 s of the kill
        "SIM_CHUNK_DELAY_MS": "50",
        "SIM_RESPONSE_CHUNKS": "1000",
    }
    a, b = start_server(**env), start_server(**env)
    async with http.post(f"{a.url}/chat", json={"message": "doomed", "session_id": None}) as r:
        accepted = await r.json()
    session_id = accepted["session_id"]
    # B's reader joins late: its first write carries every event so far (eight or more) at
    # once, and A is killed when the reader has taken the third chunk from that write.
    async with http.get(a.url + accepted["events_url"]) as r:
        await read_stream(r, until=lambda d: d.get("chunk_number") == 6)
    async with http.get(b.url + accepted["events_url"]) as r:
        assert r.status == 200
        stream = await read_across(r, lambda d: d.get("chunk_number") == 3, lambda: a.stop(signal.SIGKILL))
    events = stream.data
    assert events[-1]["type"] == "error" and events[-1]["code"] == "interrupted"
    assert events[-1]["session_id"] == session_id
    assert [e["type"] for e in events].count("error") == 1
    assert stream.ids == list(range(1, len(events) + 1)), "no gap before the final event"
    assert len(events) >= 9
    text = "".join(d["text"] for d in events if d["type"] == "chunk")
    status, session = await get_json(http, f"{b.url}/sessions/{session_id}")
    assert status == 200 and session["generating"] is None
    assert session["messages"][-1] == {**session["messages"][-1], "content": text, "interrupted": True}
    # The session goes on, on B, with the cut answer in its context.
    after = await chat_stream(
        http, b.url, "are you still there?", session_id, until=lambda d: d.get("chunk_number") == 2
    )
    assert after.data[1] == {**after.data[1], "type": "status", "context_messages": 3}


async def test_redis_stopped_and_started_again_under_a_running_server(redis_server, start_server, http):
    server = start_server(REDIS_URL=redis_server.url, SIM_CHUNK_DELAY_MS="30", SIM_RESPONSE_CHUNKS="1000")
    async with http.post(f"{server.url}/chat/stream", json={"message": "held"}) as r:
        stream = await read_across(r, lambda d: d.get("chunk_number") == 2, redis_server.stop)
    # The open stream ends with an error event; the server stays up and says why.
    assert stream.last["type"] == "error" and stream.last["code"] == "store_unavailable"
    assert stream.ids == list(range(1, len(stream.ids) + 1))
    status, body = await get_json(http, f"{server.url}/health")
    assert status == 503 and body["error"]["code"] == "store_unavailable"
    assert "Redis" in body["error"]["message"]
    async with http.post(f"{server.url}/chat/stream", json={"message": "now?"}) as r:
        # (A cluster serves the slots of its other nodes until it declares the node failed.)
        if not isinstance(redis_server, RedisClusterServer) or r.status == 503:
            assert r.status == 503 and (await r.json())["error"]["code"] == "store_unavailable"
            assert r.headers["Retry-After"]
    status, body = await get_json(http, f"{server.url}/sessions")
    assert status == 503 and body["error"]["code"] == "store_unavailable"
    redis_server.start()  # an empty Redis (no persistence in the tests)

    async def healthy():
        return (await get_json(http, f"{server.url}/health"))[0] == 200

    await until(healthy, "the server found Redis again")
    async with http.post(f"{server.url}/chat/stream", json={"message": "back again"}) as r:
        assert r.status == 200
        again = await read_stream(r, until=lambda d: d.get("chunk_number") == 3)
    assert [d["type"] for d in again.data] == ["session_info", "status", "chunk", "chunk", "chunk"]


async def test_a_stream_open_while_redis_dies_ends_with_store_unavailable(redis_server, start_server, http):
    env = {"REDIS_URL": redis_server.url, "SIM_CHUNK_DELAY_MS": "30", "SIM_RESPONSE_CHUNKS": "1000"}
    a, b = start_server(**env), start_server(**env)
    async with http.post(f"{a.url}/chat", json={"message": "long", "session_id": None}) as r:
        accepted = await r.json()
    async with aiohttp.ClientSession() as other:
        on_a = await other.get(a.url + accepted["events_url"])
        on_b = await http.get(b.url + accepted["events_url"])
        # The session stream ends the same way (its error event has no id: resume from
        # the last one).
        feed = await other.get(f"{b.url}/sessions/{accepted['session_id']}/events")
        head_a = await read_stream(on_a, until=lambda d: d.get("chunk_number") == 2)
        head_b = await read_stream(on_b, until=lambda d: d.get("chunk_number") == 2)
        await read_stream(feed, until=lambda d: d.get("chunk_number") == 2)
        redis_server.stop()
        rest_a, rest_b, rest_s = await asyncio.gather(read_stream(on_a), read_stream(on_b), read_stream(feed))
        for response in (on_a, on_b, feed):
            response.release()
    for rest in (rest_a, rest_b, rest_s):
        assert rest.last["type"] == "error" and rest.last["code"] == "store_unavailable"
        assert rest.last["session_id"] == accepted["session_id"]
    for head, rest in ((head_a, rest_a), (head_b, rest_b)):
        assert head.ids + rest.ids == sorted(set(head.ids + rest.ids))
    # (An event without an id keeps the last one, as SSE says: the error frame has none.)
    (frame,) = [f for f in rest_s.raw.split(b"\n\n") if b"store_unavailable" in f]
    assert frame.startswith(b"event: error\ndata: ")
    redis_server.start()
    for server in (a, b):
        await until(
            lambda s=server: _ok(http, f"{s.url}/health"),
            f"{server.url} found Redis again",
        )
    again = await chat_stream(http, b.url, "again", until=lambda d: d.get("chunk_number") == 2)
    assert [d["type"] for d in again.data] == ["session_info", "status", "chunk", "chunk"]


async def _ok(http, url):
    return (await get_json(http, url))[0] == 200


async def test_a_redis_never_reached_since_start_answers_503_everywhere(start_server, http):
    # Nothing listens there: the first look at Redis fails, and every route that needs it
    # says so (not a 500 from a script the store never loaded).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # (closed again: nothing listens on it)
    server = start_server(REDIS_URL=f"redis://127.0.0.1:{port}/0")
    routes = (("GET", "/health"), ("GET", "/stats"), ("GET", "/sessions"), ("POST", "/sessions/new"))
    for method, path in routes:
        async with http.request(method, server.url + path) as r:
            assert r.status == 503, (path, r.status, await r.text())
            assert (await r.json())["error"]["code"] == "store_unavailable"
    assert "Traceback" not in server.output()


async def test_finished_streams_expire_after_the_retention(redis_server, start_server, http):
    server = start_server(REDIS_URL=redis_server.url, STREAM_RETENTION="1")
    stream = await chat_stream(http, server.url, "short lived")
    url = server.url + stream.data[0]["events_url"]
    async with http.get(url) as r:
        assert r.status == 200 and (await read_stream(r)).ids == stream.ids

    async def expired():
        async with http.get(url) as r:
            return r.status == 404

    await until(expired, "the finished stream expired")
    async with http.get(url) as r:
        assert (await r.json())["error"]["code"] == "stream_not_found"
    status, session = await get_json(http, f"{server.url}/sessions/{stream.data[0]['session_id']}")
    assert status == 200 and session["message_count"] == 2  # the session stays


async def test_health_stats_and_metrics_name_the_instance_and_count_the_cluster(
    redis_server, start_server, http
):
    a = start_server(REDIS_URL=redis_server.url)
    b = start_server(REDIS_URL=redis_server.url)
    await chat_stream(http, a.url, "one")
    await chat_stream(http, b.url, "two")
    _, health_a = await get_json(http, f"{a.url}/health")
    _, health_b = await get_json(http, f"{b.url}/health")
    assert health_a["store"] == "redis" and health_a["instance"] != health_b["instance"]
    assert str(a.pid) in health_a["instance"] and str(b.pid) in health_b["instance"]
    assert health_a["active_sessions"] == health_b["active_sessions"] == 2
    assert health_b["cluster"] == {"instances": 2, "active_streams": 0, "active_sessions": 2}
    _, stats = await get_json(http, f"{b.url}/stats")
    assert stats["instance"] == health_b["instance"] and stats["cluster"]["instances"] == 2
    assert stats["streams_started"] == 1  # this instance's own
    async with http.get(f"{a.url}/metrics") as r:
        text = await r.text()
    assert f'quart_sse_instance_info{{instance="{health_a["instance"]}",store="redis"}} 1.0' in text
    assert "quart_sse_cluster_instances 2.0" in text and "quart_sse_sessions_active 2.0" in text
    # An instance that stops cleanly leaves the count at once (not when its lease lapses).
    assert a.stop() == 0
    _, health_b = await get_json(http, f"{b.url}/health")
    assert health_b["cluster"]["instances"] == 1


@pytest.mark.redis_cluster
async def test_a_cluster_url_naming_another_database_is_said_once_in_the_log(
    redis_cluster, start_server, http
):
    """A cluster has only database 0: every request was a 503 and the log repeated "SELECT
    is not allowed in cluster mode"; the log now says once what to change."""
    url = redis_cluster.url.rsplit("/", 1)[0] + "/1"
    server = start_server(REDIS_URL=url)
    for _ in range(2):
        async with http.post(f"{server.url}/sessions/new") as r:
            assert r.status == 503
            assert (await r.json())["error"]["code"] == "store_unavailable"
    output = server.output()
    assert output.count("a Redis Cluster has only database 0") == 1, output
    assert "Traceback" not in output

"""Per-client limits (issue 9): RATE_LIMIT, MAX_STREAMS_PER_CLIENT, who the client is, keys kept out of logs.

Limits are counted, never timed: a limit of a few messages a minute is reached by sending
that many, and a test never waits for a minute to pass.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from tests.support.sse_client import read_stream

HELD = {"SIM_CHUNK_DELAY_MS": "3600000"}  # answers that never end by themselves


async def send(http, url, path="/chat", body=None, headers=None):
    async with http.post(url + path, json=body or {"message": "hello"}, headers=headers or {}) as r:
        if r.content_type == "application/json":
            return r.status, await r.json(), r.headers
        return r.status, await read_stream(r), r.headers


async def session_count(http, url, headers=None):
    async with http.get(f"{url}/sessions", headers=headers or {}) as r:
        return (await r.json())["count"]


async def engine(http, url):
    async with http.get(f"{url}/stats") as r:
        return (await r.json())["engine"]


def assert_refused(status, body, headers, code):
    assert status == 429, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert int(headers["Retry-After"]) >= 1


async def test_rate_limit_counts_accepted_messages_on_both_chat_routes(start_server, http):
    server = start_server(RATE_LIMIT="3")
    url = server.url
    # Refused for other reasons first: they count nothing.
    assert (await send(http, url, body={"message": ""}))[0] == 400
    assert (await send(http, url, "/chat/stream", {"message": "x", "session_id": "nope"}))[0] == 404
    status, first, _ = await send(http, url)
    assert status == 202
    status, stream, _ = await send(http, url, "/chat/stream", {"message": "two"})
    assert status == 200 and stream.last["type"] == "complete"
    status, _, _ = await send(
        http, url, "/chat/stream", {"message": "three", "session_id": first["session_id"]}
    )
    assert status == 200
    sessions = await session_count(http, url)
    async with http.get(f"{url}/sessions/{first['session_id']}") as r:
        messages = (await r.json())["message_count"]

    # The fourth, on either route, is refused and changes nothing.
    for path in ("/chat", "/chat/stream"):
        status, body, headers = await send(http, url, path, {"message": "four"})
        assert_refused(status, body, headers, "rate_limited")
        assert int(headers["Retry-After"]) <= 20  # 3 a minute: one more every 20 s
        status, body, headers = await send(
            http, url, path, {"message": "four", "session_id": first["session_id"]}
        )
        assert_refused(status, body, headers, "rate_limited")
    assert await session_count(http, url) == sessions
    async with http.get(f"{url}/sessions/{first['session_id']}") as r:
        assert (await r.json())["message_count"] == messages
    # docs/API.md's order: a bad request is still 400, an unknown session still 404.
    assert (await send(http, url, body={"message": 42}))[0] == 400
    assert (await send(http, url, body={"message": "x", "session_id": "nope"}))[0] == 404
    # Reads are not messages: sessions, streams and system routes still answer.
    async with http.get(url + first["events_url"]) as r:
        assert r.status == 200 and (await read_stream(r)).last["type"] == "complete"
    async with http.post(f"{url}/sessions/new") as r:
        assert r.status == 201


async def test_concurrent_messages_never_pass_the_limit(start_server, http):
    server = start_server(RATE_LIMIT="5")
    results = await asyncio.gather(*(send(http, server.url) for _ in range(20)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [202] * 5 + [429] * 15
    assert await session_count(http, server.url) == 5


async def test_each_api_key_is_a_client_and_no_key_is_echoed(start_server, http):
    keys = ("key-one-0123456789abcdef", "key-two-0123456789abcdef")
    server = start_server(RATE_LIMIT="2", API_KEYS=",".join(keys))
    one = {"Authorization": f"Bearer {keys[0]}"}
    two = {"Authorization": f"Bearer {keys[1]}"}
    for _ in range(2):
        assert (await send(http, server.url, headers=one))[0] == 202
    status, body, headers = await send(http, server.url, "/chat/stream", headers=one)
    assert_refused(status, body, headers, "rate_limited")
    assert keys[0] not in str(body) and keys[0] not in str(dict(headers))
    # The other key is another client, even from the same address.
    assert (await send(http, server.url, headers=two))[0] == 202
    assert (await send(http, server.url, "/chat/stream", headers=two))[0] == 200
    assert (await send(http, server.url, headers=two))[0] == 429


async def test_forwarded_for_counts_only_from_a_trusted_proxy(start_server, http):
    untrusted = start_server(RATE_LIMIT="1")
    assert (await send(http, untrusted.url, headers={"X-Forwarded-For": "203.0.113.1"}))[0] == 202
    # A made-up X-Forwarded-For from an untrusted peer changes nothing: same client.
    assert (await send(http, untrusted.url, headers={"X-Forwarded-For": "203.0.113.2"}))[0] == 429

    trusted = start_server(RATE_LIMIT="1", TRUSTED_PROXIES="127.0.0.0/8, 10.0.0.1")
    url = trusted.url
    assert (await send(http, url, headers={"X-Forwarded-For": "203.0.113.1"}))[0] == 202
    assert (await send(http, url, headers={"X-Forwarded-For": "203.0.113.2"}))[0] == 202
    assert (await send(http, url, headers={"X-Forwarded-For": "203.0.113.1"}))[0] == 429
    # The client may prepend anything: the address next to the trusted proxies counts.
    spoofed = {"X-Forwarded-For": "198.51.100.7, 203.0.113.2, 10.0.0.1"}
    assert (await send(http, url, "/chat/stream", headers=spoofed))[0] == 429
    assert (await send(http, url, headers={"X-Forwarded-For": "203.0.113.3"}))[0] == 202


@contextlib.asynccontextmanager
async def open_stream(url, path, method="GET", json=None):
    """A stream response held open (its first event read) until the block ends."""
    async with aiohttp.ClientSession() as session, session.request(method, url + path, json=json) as r:
        assert r.status == 200, await r.text()
        await r.content.readuntil(b"\n\n")
        yield r


async def test_streams_per_client_are_capped_and_released_when_they_end(start_server, http):
    server = start_server(MAX_STREAMS_PER_CLIENT="2", **HELD)
    url = server.url
    status, accepted, _ = await send(http, url)
    assert status == 202
    path = accepted["events_url"]
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(open_stream(url, path))
        held = await stack.enter_async_context(open_stream(url, "/chat/stream", "POST", {"message": "hold"}))
        assert (await engine(http, url))["client_streams"] == 2
        sessions = await session_count(http, url)
        # A third stream response, by either route, is refused; the POST leaves nothing behind.
        status, body, headers = await send(http, url, "/chat/stream", {"message": "third"})
        assert_refused(status, body, headers, "too_many_streams")
        assert await session_count(http, url) == sessions
        async with http.get(url + path) as r:
            assert_refused(r.status, await r.json(), r.headers, "too_many_streams")
        # A message without a stream response (POST /chat) still starts a generation: the
        # client has two running (the first POST /chat's and the held stream's), its limit.
        status, body, headers = await send(http, url)
        assert_refused(status, body, headers, "too_many_streams")
        # Ending one (the client leaves) frees its place.
        held.close()
        for _ in range(1000):
            if (await engine(http, url))["client_streams"] == 1:
                break
        async with open_stream(url, path):
            assert (await engine(http, url))["client_streams"] == 2
    for _ in range(1000):
        counts = await engine(http, url)
        if counts["client_streams"] == 0:
            break
    assert counts["client_streams"] == 0 and counts["limited_clients"] == 0 and counts["readers"] == 0


async def test_a_stream_that_ends_by_itself_frees_its_place(start_server, http):
    server = start_server(MAX_STREAMS_PER_CLIENT="1")
    for i in range(3):  # one at a time, each to its end
        status, stream, _ = await send(http, server.url, "/chat/stream", {"message": f"turn {i}"})
        assert status == 200 and stream.last["type"] == "complete"
    counts = await engine(http, server.url)
    assert counts["client_streams"] == 0 and counts["limited_clients"] == 0


async def test_api_keys_never_reach_the_log_or_an_error(start_server, http):
    good, bad = "sk-good-5f0e2a7c9d4b1e38", "sk-wrong-a1b2c3d4e5f60718"
    server = start_server(
        API_KEYS=good, RATE_LIMIT="2", MAX_STREAMS_PER_CLIENT="1", LOG_LEVEL="debug", SIM_RESPONSE_CHUNKS="3"
    )
    url = server.url
    bodies: list[str] = []

    async def call(method, path, headers=None, **kwargs):
        async with http.request(method, url + path, headers=headers or {}, **kwargs) as r:
            bodies.append(f"{r.status} {dict(r.headers)} {await r.text()}")
            return r.status

    auth = {"Authorization": f"Bearer {good}"}
    wrong = {"Authorization": f"Bearer {bad}"}
    assert await call("POST", "/chat", wrong, json={"message": "hi"}) == 401
    assert await call("GET", f"/streams/x/events?access_token={bad}") == 401
    assert await call("POST", "/chat/stream", {"Authorization": bad}, json={"message": "hi"}) == 401
    assert await call("POST", "/chat/stream", auth, json={"message": "hi"}) == 200
    assert await call("GET", f"/streams/none/events?access_token={good}") == 404
    assert await call("POST", "/chat", auth, data=b"{not json") == 400
    assert await call("POST", "/chat", auth, json={"message": "again"}) == 202
    assert await call("POST", "/chat", auth, json={"message": "one too many"}) == 429
    assert await call("GET", "/sessions/nope", auth) == 404
    assert await call("DELETE", "/sessions/nope", wrong) == 401
    assert await call("GET", "/stats", auth) == 200
    log = server.output()
    for key in (good, bad):
        assert key not in log, "an API key reached the server log"
        assert key[3:] not in log
        assert not [body for body in bodies if key in body], "an API key reached an answer"


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["single", pytest.param("cluster", marks=pytest.mark.redis_cluster)])
async def test_the_rate_limit_holds_across_instances_on_redis(request, kind, start_server, http):
    # On the cluster, REDIS_URL names one node: most clients' keys live on the others.
    redis = request.getfixturevalue("redis_cluster").fresh() if kind == "cluster" else None
    url = redis.url if redis else request.getfixturevalue("redis_server").url
    a = start_server(REDIS_URL=url, RATE_LIMIT="4")
    b = start_server(REDIS_URL=url, RATE_LIMIT="4")
    assert (await send(http, a.url))[0] == 202
    assert (await send(http, b.url, "/chat/stream"))[0] == 200
    # Concurrent messages on both instances: exactly the two left pass.
    results = await asyncio.gather(*(send(http, server.url) for server in (a, b) * 5))
    assert sorted(status for status, _, _ in results) == [202] * 2 + [429] * 8
    status, body, headers = await send(http, b.url, "/chat/stream")
    assert_refused(status, body, headers, "rate_limited")
    assert await session_count(http, a.url) == 4

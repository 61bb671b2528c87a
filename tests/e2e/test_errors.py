"""Every error row of docs/API.md: status, body shape, order, and that a refusal changes nothing."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.support.sse_client import read_stream


def assert_error(body, code):
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def figures(http, url):
    async with http.get(f"{url}/stats") as r:
        stats = await r.json()
    return stats["active_sessions"], stats["streams_started"]


BAD_BODIES = [
    (b"not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[1, 2]", "invalid_request"),
    (b'"just a string"', "invalid_request"),
    (b"{}", "invalid_request"),
    (b'{"session_id": null}', "invalid_request"),
    (b'{"message": 42}', "invalid_request"),
    (b'{"message": true}', "invalid_request"),
    (b'{"message": ["a"]}', "invalid_request"),
    (b'{"message": {"text": "a"}}', "invalid_request"),
    (b'{"message": null}', "invalid_request"),
    (b'{"message": ""}', "empty_message"),
    (b'{"message": "  \\n\\t "}', "empty_message"),
    (b'{"message": "hi", "session_id": ""}', "invalid_request"),
    (b'{"message": "hi", "session_id": 42}', "invalid_request"),
    (b'{"message": "hi", "session_id": ["x"]}', "invalid_request"),
]


@pytest.mark.parametrize("path", ["/chat/stream", "/chat"])
@pytest.mark.parametrize(("body", "code"), BAD_BODIES)
async def test_bad_chat_bodies_get_400_and_change_nothing(server, http, path, body, code):
    before = await figures(http, server.url)
    async with http.post(server.url + path, data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert r.headers["Content-Type"].startswith("application/json")
        assert_error(await r.json(), code)
    assert await figures(http, server.url) == before


@pytest.mark.parametrize("last_id", ["abc", "-1", "1.5", "1e3", "0x10", "9" * 19, "1 2"])
async def test_a_malformed_last_event_id_is_400(server, http, last_id):
    async with http.post(f"{server.url}/chat", json={"message": "x"}) as r:
        url = server.url + (await r.json())["events_url"]
    async with http.get(url, headers={"Last-Event-ID": last_id}) as r:
        assert r.status == 400
        assert_error(await r.json(), "invalid_last_event_id")
    async with http.get(url, params={"last_event_id": last_id}) as r:
        assert r.status == 400
    # Malformed comes before unknown (400 before 404).
    async with http.get(f"{server.url}/streams/nope/events", headers={"Last-Event-ID": last_id}) as r:
        assert r.status == 400


async def test_unknown_sessions_and_streams_are_404(server, http):
    before = await figures(http, server.url)
    for method, path in [
        ("GET", "/sessions/nope"),
        ("DELETE", "/sessions/nope"),
        ("POST", "/sessions/nope/clear"),
        ("GET", "/streams/nope/events"),
        ("POST", "/streams/nope/cancel"),
    ]:
        async with http.request(method, server.url + path) as r:
            assert r.status == 404, path
            assert_error(await r.json(), "stream_not_found" if "streams" in path else "session_not_found")
    async with http.post(f"{server.url}/chat/stream", json={"message": "hi", "session_id": "nope"}) as r:
        assert r.status == 404
        assert_error(await r.json(), "session_not_found")
    async with http.get(f"{server.url}/no/such/route") as r:
        assert r.status == 404
        assert_error(await r.json(), "not_found")
    async with http.put(f"{server.url}/chat") as r:
        assert r.status == 405
        assert_error(await r.json(), "method_not_allowed")
    assert await figures(http, server.url) == before


async def test_a_second_message_while_generating_is_409(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="3600000")
    async with http.post(f"{server.url}/chat", json={"message": "first"}) as r:
        accepted = await r.json()
    session_id = accepted["session_id"]
    for path in ("/chat", "/chat/stream"):
        async with http.post(server.url + path, json={"message": "second", "session_id": session_id}) as r:
            assert r.status == 409
            assert_error(await r.json(), "generation_running")
    async with http.get(f"{server.url}/sessions/{session_id}") as r:
        assert (await r.json())["message_count"] == 1  # the refused message left nothing
    # Once cancelled, the session takes a message again.
    async with http.post(f"{server.url}/streams/{accepted['stream_id']}/cancel") as r:
        assert (await r.json())["cancelled"] is True
    async with http.post(f"{server.url}/chat", json={"message": "third", "session_id": session_id}) as r:
        assert r.status == 202


async def test_limits_on_body_and_message_size_are_413(start_server, http):
    server = start_server(MAX_BODY_BYTES="2000", MAX_MESSAGE_CHARS="10")
    before = await figures(http, server.url)
    async with http.post(f"{server.url}/chat", json={"message": "x" * 3000}) as r:
        assert r.status == 413
        assert_error(await r.json(), "body_too_large")
    async with http.post(f"{server.url}/chat", json={"message": "x" * 11}) as r:
        assert r.status == 413
        assert_error(await r.json(), "message_too_long")
    # Characters, not bytes: ten é are 20 bytes of UTF-8 and 60 of JSON escapes, and allowed.
    async with http.post(f"{server.url}/chat", data='{"message": "' + "\\u00e9" * 10 + '"}') as r:
        assert r.status == 202
    # 400 comes before 413; 413 before 404.
    async with http.post(f"{server.url}/chat", json={"message": "x" * 11, "session_id": 5}) as r:
        assert r.status == 400
    async with http.post(f"{server.url}/chat", json={"message": "x" * 11, "session_id": "nope"}) as r:
        assert r.status == 413
    sessions, started = await figures(http, server.url)
    assert (sessions, started) == (before[0] + 1, before[1] + 1)


async def test_capacity_is_503_with_retry_after_and_frees_when_a_generation_ends(start_server, http):
    server = start_server(MAX_STREAMS="2", SIM_CHUNK_DELAY_MS="3600000")
    accepted = []
    for _ in range(2):
        async with http.post(f"{server.url}/chat", json={"message": "hold"}) as r:
            assert r.status == 202
            accepted.append(await r.json())
    before = await figures(http, server.url)
    for path in ("/chat", "/chat/stream"):
        async with http.post(server.url + path, json={"message": "one too many"}) as r:
            assert r.status == 503
            assert int(r.headers["Retry-After"]) > 0
            assert_error(await r.json(), "capacity")
    # 409 comes before 503.
    async with http.post(
        f"{server.url}/chat", json={"message": "x", "session_id": accepted[0]["session_id"]}
    ) as r:
        assert r.status == 409
    assert await figures(http, server.url) == before
    async with http.post(f"{server.url}/streams/{accepted[0]['stream_id']}/cancel") as r:
        assert (await r.json())["cancelled"] is True
    async with http.post(f"{server.url}/chat", json={"message": "now there is room"}) as r:
        assert r.status == 202


async def test_api_keys_guard_everything_but_health_and_docs(start_server, http):
    server = start_server(API_KEYS="k-one, k-two")
    async with http.post(f"{server.url}/sessions/new") as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert_error(await r.json(), "unauthorized")
    async with http.post(f"{server.url}/sessions/new", headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
        assert "wrong" not in await r.text()
    # 401 comes first: before 400 (bad body) and 404 (unknown route or session).
    async with http.post(f"{server.url}/chat", data=b"not json") as r:
        assert r.status == 401
    async with http.get(f"{server.url}/no/such/route") as r:
        assert r.status == 401
    for path in ("/health", "/docs", "/openapi.json", "/demo"):
        async with http.get(server.url + path) as r:
            assert r.status == 200, path
    auth = {"Authorization": "Bearer k-two"}
    async with http.post(f"{server.url}/chat", json={"message": "with a key"}, headers=auth) as r:
        assert r.status == 202
        accepted = await r.json()
    url = server.url + accepted["events_url"]
    async with http.get(url) as r:
        assert r.status == 401
    async with http.get(url, params={"access_token": "k-one"}) as r:  # not the owner's key
        assert r.status == 404
        assert_error(await r.json(), "stream_not_found")
    async with http.get(url, params={"access_token": "k-two"}) as r:  # as an EventSource would
        assert r.status == 200
        assert (await read_stream(r)).last["type"] == "complete"
    async with http.get(f"{server.url}/sessions", params={"access_token": "k-one"}) as r:
        assert r.status == 401  # the query key is for stream GETs only


async def test_bad_requests_do_not_disturb_a_running_stream(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="5", SIM_RESPONSE_CHUNKS="40")
    async with http.post(f"{server.url}/chat/stream", json={"message": "steady"}) as r:
        head = await read_stream(r, until=lambda d: d.get("chunk_number") == 1)
        session_id = head.data[0]["session_id"]
        noise = [
            http.post(f"{server.url}/chat", data=b"{broken"),
            http.post(f"{server.url}/chat", json={"message": "x", "session_id": session_id}),
            http.get(
                f"{server.url}/streams/{head.data[0]['stream_id']}/events", headers={"Last-Event-ID": "?"}
            ),
        ]
        statuses = []
        for request in noise:
            async with request as n:
                statuses.append(n.status)
        assert statuses == [400, 409, 400]
        rest = await read_stream(r)
    chunks = [d["chunk_number"] for d in head.data + rest.data if d["type"] == "chunk"]
    assert chunks == list(range(1, 41))
    assert rest.last["type"] == "complete"
    await asyncio.sleep(0)


async def status_of_a_body_that_never_ends(url: str, path: str, key: str) -> tuple[int, bytes]:
    """POST ``path`` declaring 50 bytes and sending 5: the status and body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        'Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{"mes'
    )
    writer.write(head.encode())
    await writer.drain()
    head_bytes = await reader.readuntil(b"\r\n\r\n")
    found = re.search(rb"(?i)content-length: (\d+)", head_bytes)
    assert found is not None, head_bytes
    length = int(found.group(1))
    body = await reader.readexactly(length)
    writer.close()
    return int(head_bytes.split()[1]), body


async def test_refusals_come_in_the_documented_order(start_server, http):
    """docs/API.md, Errors: when several apply, the first of 401, 413 (body), 408, 400, 413
    (message), 404, 409, 429, 503 answers.  Each request below has every reason after its
    own too (a 40,000-character message to session "nope" is 413, not 404)."""
    key = "k-order"
    server = start_server(
        API_KEYS=key,
        MAX_BODY_BYTES="50000",
        MAX_MESSAGE_CHARS="32000",
        RATE_LIMIT="2",
        MAX_STREAMS="2",
        SIM_CHUNK_DELAY_MS="3600000",
        BODY_TIMEOUT="1",
    )
    auth = {"Authorization": f"Bearer {key}"}
    huge = b"not json " * 6000  # over MAX_BODY_BYTES, and not JSON either

    async def refused(status, code, data=None, json=None, headers=auth, path="/chat"):
        async with http.post(server.url + path, data=data, json=json, headers=headers) as r:
            assert r.status == status, (status, code, await r.text())
            assert_error(await r.json(), code)

    await refused(401, "unauthorized", data=huge, headers={})  # 401 before 413
    await refused(413, "body_too_large", data=huge)  # 413 (body) before 400
    status, rest = await status_of_a_body_that_never_ends(server.url, "/chat", key)
    assert status == 408 and b"body_timeout" in rest  # 408 before 400 (the body is not JSON)
    await refused(400, "invalid_request", json={"message": "x" * 40_000, "session_id": 5})  # before 413
    await refused(413, "message_too_long", json={"message": "x" * 40_000, "session_id": "nope"})  # before 404
    held = []
    for _ in range(2):  # the rate limit's burst and MAX_STREAMS are both used up
        async with http.post(f"{server.url}/chat", json={"message": "hold"}, headers=auth) as r:
            assert r.status == 202
            held.append(await r.json())
    await refused(404, "session_not_found", json={"message": "x", "session_id": "nope"})  # before 429
    busy = {"message": "x", "session_id": held[0]["session_id"]}
    await refused(409, "generation_running", json=busy)  # 409 before 429 and 503
    await refused(429, "rate_limited", json={"message": "x"})  # 429 before 503
    for path in ("/chat/stream", "/chat"):
        async with http.post(f"{server.url}{path}", json={"message": "x"}, headers=auth) as r:
            assert r.status == 429

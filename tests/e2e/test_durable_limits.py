"""What a client may cost the server through /v1/stream/: bytes per stream, streams per
owner and in all, appends under RATE_LIMIT, expiry that frees memory and Redis keys, and
bodies past MAX_BODY_BYTES read and dropped before their 413 (the real server, a real
redis-server)."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.support.redis_cluster import CLUSTER_PARAM, redis_for
from tests.support.server import ServerProcess

STORES = ["memory", pytest.param("redis", marks=pytest.mark.redis)]
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture(name="launch")
def _launch(
    request: pytest.FixtureRequest, start_server: Callable[..., ServerProcess]
) -> Callable[..., ServerProcess]:
    """``launch(**env)``: the server on the test's store (its ``store`` parameter)."""
    store = request.node.callspec.params.get("store", "memory")

    def launch(**env: str) -> ServerProcess:
        if store == "redis":
            env["REDIS_URL"] = request.getfixturevalue("redis_server").url
        return start_server(**env)

    return launch


async def until(check: Callable[[], Awaitable[bool]], what: str, rounds: int = 500) -> None:
    """Ask until ``check()`` holds: each round is a request (bounded, ~10 s)."""
    for _ in range(rounds):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


async def _error(response: aiohttp.ClientResponse) -> str:
    body = await response.json()
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    code: str = body["error"]["code"]
    return code


async def _engine(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    async with http.get(f"{server.url}/stats") as response:
        figures: dict[str, Any] = (await response.json())["engine"]
    return figures


# Bytes per stream ---------------------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
async def test_an_append_past_the_stream_bytes_is_413_and_adds_nothing(launch, http, store):
    server = launch(DURABLE_MAX_STREAM_BYTES="100")
    url = f"{server.url}/v1/stream/capped"
    async with http.put(url, headers=TEXT, data=b"a" * 40) as response:
        assert response.status == 201
    async with http.post(url, headers=TEXT, data=b"b" * 60) as response:
        assert response.status == 204  # exactly 100 bytes: allowed
    async with http.post(url, headers=TEXT, data=b"c") as response:
        assert response.status == 413
        assert await _error(response) == "stream_too_large"
    async with http.get(url, params={"offset": "-1"}) as response:
        assert await response.read() == b"a" * 40 + b"b" * 60
    async with http.put(f"{server.url}/v1/stream/born-too-big", headers=TEXT, data=b"x" * 101) as response:
        assert response.status == 413
        assert await _error(response) == "stream_too_large"
    async with http.head(f"{server.url}/v1/stream/born-too-big") as response:
        assert response.status == 404  # nothing was created


# Streams per owner and in all ----------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
async def test_an_owner_past_its_streams_gets_429_until_it_deletes_one(launch, http, store):
    server = launch(DURABLE_MAX_STREAMS_PER_OWNER="2", API_KEYS="key-a,key-b")
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    for name in ("one", "two"):
        async with http.put(f"{server.url}/v1/stream/{name}", headers={**a, **TEXT}) as response:
            assert response.status == 201
    async with http.put(f"{server.url}/v1/stream/two", headers={**a, **TEXT}) as response:
        assert response.status == 200  # an idempotent create takes no new place
    async with http.put(f"{server.url}/v1/stream/three", headers={**a, **TEXT}) as response:
        assert response.status == 429
        assert await _error(response) == "too_many_durable_streams"
    async with http.put(f"{server.url}/v1/stream/b-one", headers={**b, **TEXT}) as response:
        assert response.status == 201  # another owner has places of its own
    async with http.delete(f"{server.url}/v1/stream/one", headers=a) as response:
        assert response.status == 204
    async with http.put(f"{server.url}/v1/stream/three", headers={**a, **TEXT}) as response:
        assert response.status == 201


async def test_the_memory_store_past_its_bytes_answers_507_until_a_stream_goes(start_server, http):
    """Streams of 64 MiB, 1,000 to an owner: one client could fill the memory of the
    machine (192 MiB in 1.5 s); DURABLE_MAX_BYTES bounds every stream's records in all."""
    server = start_server(DURABLE_MAX_BYTES="1000")
    async with http.put(f"{server.url}/v1/stream/big", headers=TEXT, data=b"x" * 600) as response:
        assert response.status == 201
    async with http.put(f"{server.url}/v1/stream/more", headers=TEXT, data=b"y" * 600) as response:
        assert response.status == 507
        assert await _error(response) == "durable_store_full"
    async with http.put(f"{server.url}/v1/stream/more", headers=TEXT, data=b"y" * 300) as response:
        assert response.status == 201
    async with http.post(f"{server.url}/v1/stream/more", headers=TEXT, data=b"z" * 200) as response:
        assert response.status == 507  # an append too
    async with http.delete(f"{server.url}/v1/stream/big") as response:
        assert response.status == 204
    async with http.post(f"{server.url}/v1/stream/more", headers=TEXT, data=b"z" * 200) as response:
        assert response.status == 204


@pytest.mark.parametrize("store", STORES)
async def test_a_full_store_answers_507(launch, http, store):
    server = launch(DURABLE_MAX_STREAMS="2", DURABLE_MAX_STREAMS_PER_OWNER="10")
    for name in ("one", "two"):
        async with http.put(f"{server.url}/v1/stream/{name}", headers=TEXT) as response:
            assert response.status == 201
    async with http.put(f"{server.url}/v1/stream/three", headers=TEXT) as response:
        assert response.status == 507
        assert await _error(response) == "durable_store_full"
    async with http.delete(f"{server.url}/v1/stream/two") as response:
        assert response.status == 204
    async with http.put(f"{server.url}/v1/stream/three", headers=TEXT) as response:
        assert response.status == 201


# RATE_LIMIT -------------------------------------------------------------------------------


async def test_writes_count_under_the_rate_limit(start_server, http):
    """A create and each append count as a chat message does; reads do not."""
    server = start_server(RATE_LIMIT="3")
    url = f"{server.url}/v1/stream/limited"
    async with http.put(url, headers=TEXT) as response:
        assert response.status == 201
    for text in (b"1", b"2"):
        async with http.post(url, headers=TEXT, data=text) as response:
            assert response.status == 204
    async with http.post(url, headers=TEXT, data=b"3") as response:
        assert response.status == 429
        assert await _error(response) == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1
    async with http.get(url, params={"offset": "-1"}) as response:
        assert response.status == 200 and await response.read() == b"12"


async def test_refused_writes_do_not_use_up_the_rate_limit(start_server, http):
    """A write refused for another reason (404, 409) counts nothing, as a refused chat
    message counts nothing: it cannot lock the client out of chat."""
    server = start_server(RATE_LIMIT="3")
    for _ in range(5):
        async with http.post(f"{server.url}/v1/stream/nowhere", headers=TEXT, data=b"x") as response:
            assert response.status == 404
    async with http.put(f"{server.url}/v1/stream/typed", headers=TEXT) as response:
        assert response.status == 201  # one write counted
    for _ in range(5):
        headers = {"Content-Type": "application/json"}
        async with http.post(f"{server.url}/v1/stream/typed", headers=headers, data=b"[1]") as response:
            assert response.status == 409  # content_type_mismatch
    async with http.post(f"{server.url}/chat", json={"message": "still allowed"}) as response:
        assert response.status == 202  # the second of three


# Expiry frees what the stream held ------------------------------------------------------------


async def test_the_memory_store_sweeps_expired_streams_nobody_reads(start_server, http):
    server = start_server(DURABLE_SWEEP_INTERVAL="0.1")
    async with http.put(
        f"{server.url}/v1/stream/short", headers={**TEXT, "Stream-TTL": "1"}, data=b"x" * 1000
    ) as response:
        assert response.status == 201
    async with http.put(f"{server.url}/v1/stream/kept", headers=TEXT, data=b"y" * 10) as response:
        assert response.status == 201
    figures = await _engine(http, server)
    assert (figures["durable_streams"], figures["durable_bytes"]) == (2, 1010)

    async def swept() -> bool:
        return bool((await _engine(http, server))["durable_streams"] == 1)

    await until(swept, "the expired stream was swept")  # never read again after its create
    figures = await _engine(http, server)
    assert figures["durable_bytes"] == 10
    async with http.head(f"{server.url}/v1/stream/kept") as response:
        assert response.status == 200


def _tag_keys(path: str) -> tuple[str, str]:
    import hashlib

    tag = hashlib.sha256(path.encode()).hexdigest()[:24]
    return f"qs:ds:{{{tag}}}:m", f"qs:ds:{{{tag}}}:l"


@pytest.mark.redis
async def test_redis_keys_expire_with_the_stream_and_a_read_renews_them(redis_server, start_server, http):
    server = start_server(REDIS_URL=redis_server.url, DURABLE_SWEEP_INTERVAL="0.1")
    redis = Redis.from_url(redis_server.url)
    try:
        # Stream-Expires-At: both keys expire at that very millisecond.
        at = int(time.time()) + 3600
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        async with http.put(
            f"{server.url}/v1/stream/fixed", headers={**TEXT, "Stream-Expires-At": stamp}, data=b"abc"
        ) as response:
            assert response.status == 201
        meta_key, log_key = _tag_keys("fixed")
        assert await redis.pexpiretime(meta_key) == at * 1000
        assert await redis.pexpiretime(log_key) == at * 1000

        # Stream-TTL slides: each read moves the keys' expiry to its last access plus the TTL.
        async with http.put(
            f"{server.url}/v1/stream/sliding", headers={**TEXT, "Stream-TTL": "600"}, data=b"abc"
        ) as response:
            assert response.status == 201
        meta_key, log_key = _tag_keys("sliding")
        created = json.loads(await redis.get(meta_key) or b"{}")["accessed"]
        assert await redis.pexpiretime(meta_key) == int((created + 600) * 1000)
        async with http.get(f"{server.url}/v1/stream/sliding", params={"offset": "-1"}) as response:
            assert await response.read() == b"abc"
        accessed = json.loads(await redis.get(meta_key) or b"{}")["accessed"]
        assert accessed >= created
        assert await redis.pexpiretime(meta_key) == int((accessed + 600) * 1000)
        assert await redis.pexpiretime(log_key) == int((accessed + 600) * 1000)

        # A stream with no expiry has keys with none.
        async with http.put(f"{server.url}/v1/stream/forever", headers=TEXT, data=b"abc") as response:
            assert response.status == 201
        assert await redis.pttl(_tag_keys("forever")[0]) == -1

        # Expired and never read again: its keys and its index entries go.
        async with http.put(
            f"{server.url}/v1/stream/brief", headers={**TEXT, "Stream-TTL": "1"}, data=b"abc"
        ) as response:
            assert response.status == 201
        brief = _tag_keys("brief")

        async def gone() -> bool:
            left = await redis.exists(*brief)
            indexed = await redis.zscore("qs:ds:index", b"brief")
            return left == 0 and indexed is None

        await until(gone, "the expired stream's keys and index entry went")
    finally:
        await redis.aclose()


# Bodies past MAX_BODY_BYTES ---------------------------------------------------------------


def _raw_request(server: ServerProcess, head: bytes, body: bytes) -> bytes:
    """Send ``head`` and ``body`` on one connection, then read the whole answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                raise AssertionError("the server reset the connection") from None
            if not chunk:
                break
            chunks.append(chunk)
            answer = b"".join(chunks)
            if b"\r\n\r\n" in answer:
                top, _, rest = answer.partition(b"\r\n\r\n")
                length = [int(v) for k, v in _headers(top) if k == b"content-length"]
                if length and len(rest) >= length[0]:
                    return answer
        return b"".join(chunks)


def _headers(top: bytes) -> list[tuple[bytes, bytes]]:
    lines = top.split(b"\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(b":") for line in lines)]


@pytest.mark.parametrize("path", ["/v1/stream/big", "/chat", "/sessions"])
async def test_a_body_past_max_body_bytes_is_read_then_refused(start_server, http, path):
    """Node's fetch and curl send the whole body before reading the answer: the server reads
    and drops it, then answers 413, on the edge's routes and Quart's alike."""
    server = start_server(MAX_BODY_BYTES="1024")
    async with http.put(f"{server.url}/v1/stream/big", headers=TEXT) as response:
        assert response.status == 201
    body = b"z" * (12 << 20)
    for sent in (io.BytesIO(body), _chunks(body)):  # Content-Length, then chunked
        async with http.post(server.url + path, headers=TEXT, data=sent) as response:
            assert response.status == 413
            assert await _error(response) == "body_too_large"
    answer = await asyncio.to_thread(
        _raw_request,
        server,
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
        % (path.encode(), len(body)),
        body,
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]


async def test_a_body_declared_past_the_drain_bound_is_refused_without_waiting(start_server):
    """Past 64 MiB (or 4 times MAX_BODY_BYTES) the body is not read: 413 at once, and the
    connection closed."""
    server = start_server(MAX_BODY_BYTES="1024")
    answer = await asyncio.to_thread(
        _raw_request,
        server,
        b"POST /v1/stream/x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
        % (100 << 20),
        b"",
    )
    top = answer.partition(b"\r\n\r\n")[0]
    assert top.startswith(b"HTTP/1.1 413"), answer[:200]
    assert (b"connection", b"close") in _headers(top)


@pytest.mark.redis_cluster
async def test_on_a_redis_cluster_a_stream_written_on_one_instance_is_read_live_on_another(
    start_server, redis_cluster, http
):
    # The durable store on a cluster: a change is one script in the stream's slot, and a
    # reader waiting on another instance is woken by PUBLISH (through every node).
    env = {"REDIS_URL": redis_cluster.fresh().url, "SIM_CHUNK_DELAY_MS": "0", "SIM_RESPONSE_CHUNKS": "3"}
    a, b = start_server(**env), start_server(**env)
    url = "/v1/stream/on-cluster"
    async with http.put(a.url + url, headers=TEXT) as r:
        assert r.status == 201, await r.text()
    async with http.post(a.url + url, data=b"one", headers=TEXT) as r:
        assert r.status == 204
        offset = r.headers["Stream-Next-Offset"]
    params = {"offset": offset, "live": "long-poll"}
    waiting = asyncio.ensure_future(http.get(b.url + url, params=params))
    async with http.post(a.url + url, data=b"two", headers=TEXT) as r:
        assert r.status == 204
    async with await waiting as r:
        assert r.status == 200 and await r.read() == b"two"
    async with http.get(b.url + url, params={"offset": "-1"}) as r:
        assert await r.read() == b"onetwo"
    # A chat answer is readable at its durable_url there too.
    async with http.post(f"{a.url}/chat", json={"message": "durable on a cluster"}) as r:
        assert r.status == 202
        accepted = await r.json()
    async with http.get(f"{b.url}/streams/{accepted['stream_id']}/events") as r:
        await r.read()  # to its end: the answer is complete
    async with http.get(b.url + accepted["durable_url"], params={"offset": "-1"}) as r:
        assert r.status == 200, await r.text()
        records = await r.json()
    assert [record["type"] for record in records][-1] == "complete"


async def test_a_producer_id_is_bounded_and_a_browser_reads_with_its_key_in_the_query(start_server, http):
    server = start_server(API_KEYS="ka,kb", SIM_CHUNK_DELAY_MS="0", SIM_RESPONSE_CHUNKS="3")
    a = {"Authorization": "Bearer ka"}
    url = f"{server.url}/v1/stream/bounded"
    async with http.put(url, headers={**a, "Content-Type": "text/plain"}) as r:
        assert r.status == 201
    producer = {"Producer-Epoch": "0", "Producer-Seq": "0", "Content-Type": "text/plain"}
    async with http.post(url, data=b"x", headers={**a, **producer, "Producer-Id": "p" * 257}) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_request"
    async with http.post(url, data=b"x", headers={**a, **producer, "Producer-Id": "p" * 256}) as r:
        assert r.status == 200
    # EventSource sends no headers: reads take ?access_token= as the other stream reads do.
    async with http.get(url, params={"offset": "-1", "access_token": "ka"}) as r:
        assert r.status == 200 and await r.read() == b"x"
    async with http.get(url, params={"offset": "-1", "access_token": "kb"}) as r:
        assert r.status == 404
    async with http.post(url, data=b"y", params={"access_token": "ka"}) as r:
        assert r.status == 401  # writes need the header


@pytest.mark.parametrize("store", [pytest.param("redis", marks=pytest.mark.redis), CLUSTER_PARAM])
async def test_appends_at_once_through_two_instances_lose_nothing(request, store, start_server, http):
    # Each change is computed from the metadata read, then written only if that metadata is
    # still there (else computed again): 60 appends racing through two instances all land,
    # each once.
    url = redis_for(request, store).url
    a, b = start_server(REDIS_URL=url), start_server(REDIS_URL=url)
    path = "/v1/stream/raced"
    async with http.put(a.url + path, headers=TEXT) as r:
        assert r.status == 201

    async def append(n: int) -> int:
        async with http.post((a, b)[n % 2].url + path, data=f"<{n}>".encode(), headers=TEXT) as r:
            status: int = r.status
            return status

    statuses = await asyncio.gather(*(append(n) for n in range(60)))
    assert statuses == [204] * 60, a.output()[-3000:] + b.output()[-3000:]
    async with http.get(b.url + path, params={"offset": "-1"}) as r:
        body = (await r.read()).decode()
    assert sorted(body.strip("<>").split("><"), key=int) == [str(n) for n in range(60)]

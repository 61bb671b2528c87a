"""Every conversation belongs to its owner (API_KEYS, ADMIN_KEYS), over real HTTP.

With ``API_KEYS`` set, a session and every stream started in it belong to the key that
created it.  A key that is not the owner gets, on every route naming the session or the
stream, exactly what an unknown id gets (404 ``session_not_found`` / ``stream_not_found``)
and changes nothing; ``GET /sessions`` shows a key its own sessions only.  ``ADMIN_KEYS``
see and act on every session.  On Redis the owner is kept with the session, so it holds
across instances: there the non-owner's requests go to the other instance.

Also: ``/health``, ``/stats``, ``/metrics`` stay aggregate for any valid key; the start-up
warning for a server open to the network without keys; ``API_KEYS=","`` refuses to start.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from quart_sse.ids import new_id
from tests.support.redis_cluster import CLUSTER_PARAM, redis_for
from tests.support.server import ROOT, ServerProcess, server_env
from tests.support.sse_client import Stream, read_stream

KEY_A = "owner-key-aaaa"
KEY_B = "other-key-bbbb"
ADMIN = "admin-key-zzzz"
KEYS = {"API_KEYS": f"{KEY_A},{KEY_B}", "ADMIN_KEYS": ADMIN}

# Slow enough that a stream is still generating while a handful of requests are made
# (about 3 s per answer); what is checked never depends on it, only that it is still live
# (asserted, through the session's "generating", after the requests).
SLOW = {"SIM_CHUNK_DELAY_MS": "20", "SIM_RESPONSE_CHUNKS": "150"}
CHUNKS = 150

WARNING = "without API_KEYS"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Answer:
    status: int
    content_type: str
    body: Any  # parsed JSON, else the text


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    key: str | None = None,
    *,
    body: Any = None,
    query_key: bool = False,
) -> Answer:
    """One request with ``key`` as a bearer header (or as ``?access_token=``)."""
    headers = bearer(key) if key is not None and not query_key else {}
    params = {"access_token": key} if key is not None and query_key else None
    kwargs: dict[str, Any] = {"headers": headers, "params": params}
    if body is not None:
        kwargs["json"] = body
    async with http.request(method, url, **kwargs) as r:
        text = await r.text()
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        return Answer(r.status, r.headers.get("Content-Type", ""), parsed)


async def get_ok(http: aiohttp.ClientSession, url: str, key: str) -> Any:
    answer = await call(http, "GET", url, key)
    assert answer.status == 200, answer
    return answer.body


def assert_error(body: Any, code: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# Every route naming a session, and every one naming a stream: (what, method, path, body).
Route = tuple[str, str, str, Any]


def session_routes(session_id: str) -> list[Route]:
    return [
        ("GET session", "GET", f"/sessions/{session_id}", None),
        ("DELETE session", "DELETE", f"/sessions/{session_id}", None),
        ("clear session", "POST", f"/sessions/{session_id}/clear", None),
        ("POST /chat", "POST", "/chat", {"message": "this is mine now", "session_id": session_id}),
        ("POST /chat/stream", "POST", "/chat/stream", {"message": "mine too", "session_id": session_id}),
        ("regenerate", "POST", f"/sessions/{session_id}/regenerate", None),
        ("regenerate ?stream=true", "POST", f"/sessions/{session_id}/regenerate?stream=true", None),
        ("session stream", "GET", f"/sessions/{session_id}/events", None),
    ]


async def assert_as_unknown(
    http: aiohttp.ClientSession,
    base: str,
    key: str,
    route: Callable[[str], Route],
    real_id: str,
    code: str,
    *,
    query_key: bool = False,
) -> None:
    """``route(real_id)`` answers ``key`` exactly as ``route(<an unknown id>)`` does: 404 ``code``."""
    unknown = new_id()
    what, method, path, body = route(real_id)
    got = await call(http, method, base + path, key, body=body, query_key=query_key)
    _, _, unknown_path, unknown_body = route(unknown)
    expected = await call(http, method, base + unknown_path, key, body=unknown_body, query_key=query_key)
    assert expected.status == 404
    assert_error(expected.body, code)
    as_unknown = json.loads(json.dumps(expected.body).replace(unknown, real_id))
    assert (got.status, got.content_type, got.body) == (404, expected.content_type, as_unknown), (what, got)


def stream_routes(stream_id: str) -> list[Route]:
    """The stream routes, but cancel (its own test); the second gives the key as ?access_token=."""
    return [
        ("GET events", "GET", f"/streams/{stream_id}/events", None),
        ("GET events ?access_token=", "GET", f"/streams/{stream_id}/events", None),
    ]


def nth(routes: Callable[[str], list[Route]], n: int) -> Callable[[str], Route]:
    def route(any_id: str) -> Route:
        return routes(any_id)[n]

    return route


async def non_owner_probes(
    http: aiohttp.ClientSession, base: str, key: str, session_id: str, stream_id: str
) -> None:
    """``key`` tries every session and stream route (cancel apart) on someone else's."""
    for n in range(len(session_routes(session_id))):
        await assert_as_unknown(http, base, key, nth(session_routes, n), session_id, "session_not_found")
    for n in range(len(stream_routes(stream_id))):
        await assert_as_unknown(
            http, base, key, nth(stream_routes, n), stream_id, "stream_not_found", query_key=n == 1
        )


def cancel_route(stream_id: str) -> Route:
    return ("cancel", "POST", f"/streams/{stream_id}/cancel", None)


async def figures(http: aiohttp.ClientSession, base: str, key: str) -> dict[str, int]:
    """What a refused request must not change, on one instance."""
    stats = await get_ok(http, f"{base}/stats", key)
    names = ("active_sessions", "sessions_created", "streams_started", "streams_failed")
    return {name: stats[name] for name in names}


@dataclass
class Cluster:
    """Where the owner's requests go, and where the others' go (another instance on Redis)."""

    owner: str
    other: str


@pytest.fixture(
    name="cluster",
    params=["memory", pytest.param("redis", marks=pytest.mark.redis), CLUSTER_PARAM],
)
def _cluster(request: pytest.FixtureRequest, start_server: Callable[..., ServerProcess]) -> Cluster:
    if request.param == "memory":
        server = start_server(**KEYS, **SLOW)
        return Cluster(server.url, server.url)
    redis = redis_for(request, request.param)
    a = start_server(**KEYS, **SLOW, REDIS_URL=redis.url)
    b = start_server(**KEYS, **SLOW, REDIS_URL=redis.url)
    return Cluster(a.url, b.url)


async def open_stream(
    http: aiohttp.ClientSession, base: str, key: str, message: str, session_id: str | None = None
) -> aiohttp.ClientResponse:
    response = await http.post(
        f"{base}/chat/stream", json={"message": message, "session_id": session_id}, headers=bearer(key)
    )
    assert response.status == 200, await response.text()
    return response


async def whole_answer(
    http: aiohttp.ClientSession, base: str, key: str, message: str, session_id: str | None = None
) -> Stream:
    response = await open_stream(http, base, key, message, session_id)
    try:
        stream = await read_stream(response)
    finally:
        response.release()
    assert stream.last["type"] == "complete", stream.data
    return stream


def third_chunk(data: dict[str, Any]) -> bool:
    return data.get("chunk_number") == 3


async def test_a_non_owner_gets_what_an_unknown_id_gets_and_changes_nothing(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    first = await whole_answer(http, cluster.owner, KEY_A, "Tell me about rivers")
    session_id, stream_id = first.session_id, first.data[0]["stream_id"]
    session_url = f"{cluster.other}/sessions/{session_id}"
    # The owner's key works on the other instance too: B's 404s there are not Redis's doing.
    before = await get_ok(http, session_url, KEY_A)
    assert before["message_count"] == 2
    async with http.get(cluster.other + first.data[0]["events_url"], params={"access_token": KEY_A}) as r:
        assert r.status == 200
        assert (await read_stream(r)).ids == first.ids
    figures_before = await figures(http, cluster.other, KEY_B)

    # A finished stream.
    await non_owner_probes(http, cluster.other, KEY_B, session_id, stream_id)
    assert await get_ok(http, session_url, KEY_A) == before
    assert await figures(http, cluster.other, KEY_B) == figures_before

    # A live one, in the same session.
    response = await open_stream(http, cluster.owner, KEY_A, "And about lakes?", session_id)
    try:
        head = await read_stream(response, until=third_chunk)
        live_id = head.data[0]["stream_id"]
        await non_owner_probes(http, cluster.other, KEY_B, session_id, live_id)
        during = await get_ok(http, session_url, KEY_A)
        assert during["generating"] == live_id, "the answer ended before the probes did: make SLOW slower"
        rest = await read_stream(response)
    finally:
        response.release()
    assert rest.last["type"] == "complete" and rest.last["total_chunks"] == CHUNKS, rest.last
    assert head.ids + rest.ids == list(range(1, CHUNKS + 4))
    # The one stream started since is A's own (counted where it runs); none failed.
    started_here = 1 if cluster.owner == cluster.other else 0
    expected = {**figures_before, "streams_started": figures_before["streams_started"] + started_here}
    assert await figures(http, cluster.other, KEY_B) == expected

    after = await get_ok(http, session_url, KEY_A)
    assert after["generating"] is None
    assert after["messages"][:2] == before["messages"]
    assert [(m["role"], m["content"]) for m in after["messages"][2:]] == [
        ("user", "And about lakes?"),
        ("model", head.text + rest.text),
    ]
    assert not any(m.get("interrupted") for m in after["messages"])

    # Listing: B sees none of A's sessions, A sees its own.
    assert await get_ok(http, f"{cluster.other}/sessions", KEY_B) == {
        "sessions": [],
        "count": 0,
        "next_cursor": None,
        "scope": "own",
    }
    own = await get_ok(http, f"{cluster.other}/sessions", KEY_A)
    assert (own["count"], own["scope"]) == (1, "own")
    assert [(s["session_id"], s["message_count"]) for s in own["sessions"]] == [(session_id, 4)]


async def test_a_non_owner_cannot_cancel_a_stream(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    response = await open_stream(http, cluster.owner, KEY_A, "Do not stop me")
    try:
        head = await read_stream(response, until=third_chunk)
        session_id, stream_id = head.session_id, head.data[0]["stream_id"]
        await assert_as_unknown(http, cluster.other, KEY_B, cancel_route, stream_id, "stream_not_found")
        during = await get_ok(http, f"{cluster.other}/sessions/{session_id}", KEY_A)
        assert during["generating"] == stream_id, "the answer ended before the cancel: make SLOW slower"
        rest = await read_stream(response)
    finally:
        response.release()
    assert rest.last["type"] == "complete", rest.last
    assert head.ids + rest.ids == list(range(1, CHUNKS + 4))
    # Finished: still unknown to B.
    await assert_as_unknown(http, cluster.other, KEY_B, cancel_route, stream_id, "stream_not_found")
    session = await get_ok(http, f"{cluster.other}/sessions/{session_id}", KEY_A)
    assert session["messages"][-1]["content"] == head.text + rest.text
    assert not any(m.get("interrupted") for m in session["messages"])

    # And the other way round: A cannot cancel the stream B started (running on B's instance).
    async with http.post(f"{cluster.other}/chat", json={"message": "mine, B's"}, headers=bearer(KEY_B)) as r:
        assert r.status == 202
        accepted = await r.json()
    await assert_as_unknown(
        http, cluster.owner, KEY_A, cancel_route, accepted["stream_id"], "stream_not_found"
    )
    # Its owner can: it was still running, and A's try changed nothing.
    cancel = await call(http, "POST", f"{cluster.other}/streams/{accepted['stream_id']}/cancel", KEY_B)
    assert (cancel.status, cancel.body) == (
        200,
        {"stream_id": accepted["stream_id"], "cancelled": True, "status": "cancelled"},
    )


async def test_an_admin_key_sees_and_deletes_every_session(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    of_a = await whole_answer(http, cluster.owner, KEY_A, "from A")
    of_b = await whole_answer(http, cluster.other, KEY_B, "from B")
    listed = await get_ok(http, f"{cluster.other}/sessions", ADMIN)
    assert (listed["count"], listed["scope"]) == (2, "all")
    assert {s["session_id"] for s in listed["sessions"]} == {of_a.session_id, of_b.session_id}
    # Each owner still sees only its own.
    for key, mine in ((KEY_A, of_a), (KEY_B, of_b)):
        own = await get_ok(http, f"{cluster.owner}/sessions", key)
        assert (own["count"], own["scope"]) == (1, "own")
        assert [s["session_id"] for s in own["sessions"]] == [mine.session_id]

    read = await get_ok(http, f"{cluster.other}/sessions/{of_a.session_id}", ADMIN)
    assert [(m["role"], m["content"]) for m in read["messages"]] == [("user", "from A"), ("model", of_a.text)]
    async with http.get(cluster.other + of_a.data[0]["events_url"], params={"access_token": ADMIN}) as r:
        assert r.status == 200
        assert (await read_stream(r)).ids == of_a.ids

    for session_id in (of_a.session_id, of_b.session_id):
        deleted = await call(http, "DELETE", f"{cluster.other}/sessions/{session_id}", ADMIN)
        assert (deleted.status, deleted.body) == (200, {"deleted": session_id})
    gone = await call(http, "GET", f"{cluster.owner}/sessions/{of_a.session_id}", KEY_A)
    assert gone.status == 404
    assert_error(gone.body, "session_not_found")
    assert (await get_ok(http, f"{cluster.owner}/sessions", KEY_A))["count"] == 0
    nothing = {"sessions": [], "count": 0, "next_cursor": None, "scope": "all"}
    assert await get_ok(http, f"{cluster.owner}/sessions", ADMIN) == nothing


async def test_health_stats_and_metrics_stay_aggregate_for_any_valid_key(
    start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    server = start_server(**KEYS)
    await whole_answer(http, server.url, KEY_A, "one")
    await whole_answer(http, server.url, KEY_B, "two")
    for key in (KEY_A, KEY_B, ADMIN):
        health = await get_ok(http, f"{server.url}/health", key)
        stats = await get_ok(http, f"{server.url}/stats", key)
        assert health["active_sessions"] == stats["active_sessions"] == 2, key
        assert stats["streams_started"] == 2
        metrics = await call(http, "GET", f"{server.url}/metrics", key)
        assert metrics.status == 200
        assert "quart_sse_sessions_active 2.0" in metrics.body
    anonymous = await call(http, "GET", f"{server.url}/health")
    assert anonymous.status == 200 and anonymous.body["active_sessions"] == 2
    for path in ("/stats", "/metrics"):
        refused = await call(http, "GET", server.url + path, "not-a-key")
        assert refused.status == 401, path
        assert_error(refused.body, "unauthorized")


# The start-up warning --------------------------------------------------------------------------


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(name="run_cli")
def _run_cli() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``python -m quart_sse`` with arguments and extra environment; stopped after the test."""
    started: list[subprocess.Popen[str]] = []

    def run(*args: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "quart_sse", *args],
            env=server_env(**env),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def until_listening(proc: subprocess.Popen[str]) -> list[str]:
    """The output lines up to the one saying where the server listens (pid and all)."""
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if re.search(r"listening on \S+ \(pid \d+\)", line):
            return lines
    raise AssertionError(f"the server exited ({proc.wait()}) without listening:\n{''.join(lines)}")


def stop(proc: subprocess.Popen[str]) -> tuple[int, list[str]]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out.splitlines(keepends=True)


@pytest.mark.parametrize(
    ("env", "warnings"),
    [({}, 1), ({"API_KEYS": KEY_A}, 0), ({"ADMIN_KEYS": ADMIN}, 0)],
    ids=["no-keys", "api-keys", "admin-keys-only"],
)
async def test_listening_on_every_interface_without_keys_warns_once(
    run_cli: Callable[..., subprocess.Popen[str]],
    http: aiohttp.ClientSession,
    env: dict[str, str],
    warnings: int,
) -> None:
    port = free_port("0.0.0.0")
    proc = run_cli("--host", "0.0.0.0", "--port", str(port), LOG_LEVEL="info", **env)
    lines = until_listening(proc)
    assert f"listening on 0.0.0.0:{port}" in lines[-1]
    # It serves (on every interface, so on loopback too): then every start-up line is out.
    headers = bearer(next(iter(env.values()))) if env else {}
    async with http.get(f"http://127.0.0.1:{port}/stats", headers=headers) as r:
        assert r.status == 200
    code, rest = stop(proc)
    assert code == 0, "".join(lines + rest)
    warned = [line for line in lines + rest if WARNING in line]
    assert len(warned) == warnings, "".join(lines + rest)
    for line in warned:
        assert "WARNING" in line and f"0.0.0.0:{port}" in line and "API_KEYS=" in line


async def test_listening_on_loopback_without_keys_does_not_warn(
    start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    server = start_server(LOG_LEVEL="info")
    async with http.get(f"{server.url}/stats") as r:
        assert r.status == 200
    output = server.output()
    assert f"listening on 127.0.0.1:{server.port} (pid {server.pid})" in output, output
    assert WARNING not in output, output


@pytest.mark.parametrize("name", ["API_KEYS", "ADMIN_KEYS"])
@pytest.mark.parametrize("value", [",", " , ,"])
def test_a_key_setting_with_no_key_in_it_refuses_to_start(name: str, value: str) -> None:
    port = free_port("127.0.0.1")
    done = subprocess.run(
        [sys.executable, "-m", "quart_sse", "--port", str(port)],
        env=server_env(**{name: value}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 2, lines
    assert len(lines) == 1 and name in lines[0], lines
    assert lines[0].startswith("quart-sse: ")

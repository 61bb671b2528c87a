"""The HTTP edge (quart_sse.http.edge.Edge) in-process: the app's ASGI entry driven by hand.

Real parts: create_app (the Edge around the Quart app, the engine, the memory store, the
offline model), its lifespan (``app.test_app()``); fake: only the ASGI connection, a
``receive`` that hands over the body and then waits (a client that stays), and a ``send``
that records the answer.  The contract is docs/API.md: Errors (the body, the statuses, the
order of checks, "a refused request changes nothing"), Configuration (API_KEYS,
RATE_LIMIT, MAX_STREAMS_PER_CLIENT, CORS_ORIGINS, TRUSTED_PROXIES) and Streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest
from quart import Quart, request

from quart_sse.app import create_app
from quart_sse.config import Settings
from quart_sse.engine import Engine
from quart_sse.http import Edge
from quart_sse.http.limits import Client
from quart_sse.http.scope import ASGIApp, Receive, Scope
from quart_sse.models import Session, TurnLog
from quart_sse.sse import Event, Retry, SSEParser
from quart_sse.stores.memory import MemoryStore

KEY = "k-edge-test"
BEARER = ("authorization", f"Bearer {KEY}")
ORIGIN = "https://app.example"
OTHER_ORIGIN = "https://evil.example"
SLOW = 3_600_000.0
"""SIM_CHUNK_DELAY_MS that keeps a generation running for the whole test (closed at shutdown)."""
PEER = ("203.0.113.7", 51000)

# -- The harness ---------------------------------------------------------------------------


@dataclass
class Answer:
    """One ASGI response, as recorded by ``send``."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case); None when absent; fails when sent twice."""
        values = [v.decode("latin-1") for k, v in self.headers if k.decode("latin-1").lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[Event]:
        return [item for item in SSEParser().feed(self.body) if isinstance(item, Event)]


def make_scope(
    method: str,
    path: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    query: bytes = b"",
    client: tuple[str, int] = PEER,
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers],
        "client": client,
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


def receiver(chunks: Sequence[bytes]) -> Receive:
    """The request body in ``chunks``, then nothing: the client stays connected."""
    pending = list(chunks) or [b""]

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        forever: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        return await forever

    return receive


def edge_of(app: Quart) -> ASGIApp:
    edge = app.asgi_app
    assert isinstance(edge, Edge), f"create_app did not wrap the app in the Edge: {edge!r}"
    return cast(ASGIApp, edge)


async def send_scope(app: Quart, scope: Scope, chunks: Sequence[bytes] = ()) -> Answer:
    """Run one request through the app's ASGI entry; the whole answer once it has ended."""
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await edge_of(app)(scope, receiver(chunks), send)
    assert messages, "no answer at all"
    start, *body = messages
    assert start["type"] == "http.response.start", messages
    assert all(m["type"] == "http.response.body" for m in body), messages
    assert body and not body[-1].get("more_body", False), "the answer did not end"
    return Answer(start["status"], list(start.get("headers", [])), b"".join(m.get("body", b"") for m in body))


async def call(
    app: Quart,
    method: str,
    path: str,
    body: bytes | Any = b"",
    *,
    headers: Sequence[tuple[str, str]] = (),
    query: bytes = b"",
    chunks: Sequence[bytes] | None = None,
    content_length: bool = True,
    client: tuple[str, int] = PEER,
) -> Answer:
    """One request; ``body`` is bytes, or JSON to encode; ``chunks`` sends it in pieces."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    parts = [raw] if chunks is None else list(chunks)
    headers = list(headers)
    if content_length and any(parts):
        headers.append(("content-length", str(sum(len(p) for p in parts))))
    if not isinstance(body, bytes):
        headers.append(("content-type", "application/json"))
    scope = make_scope(method, path, headers=headers, query=query, client=client)
    return await send_scope(app, scope, parts)


def engine_of(app: Quart) -> Engine:
    found: Engine = app.extensions["quart_sse"]
    return found


async def sessions(app: Quart) -> int:
    return await engine_of(app).store.count_sessions()


@contextlib.asynccontextmanager
async def serving(*, store: MemoryStore | None = None, **fields: Any) -> AsyncIterator[Quart]:
    """The app of ``Settings(**fields)`` (offline model, no pacing unless given), started."""
    fields.setdefault("sim_chunk_delay_ms", 0)
    app = create_app(Settings(**fields), store=store)
    async with app.test_app():
        yield app


def assert_error(answer: Answer, status: int, code: str | None) -> None:
    """docs/API.md's error answer: the status, a JSON body ``{"error": {"code", "message"}}``."""
    assert answer.status == status, (answer.status, answer.body)
    content_type = answer.header("content-type") or ""
    assert content_type.split(";")[0].strip() == "application/json", content_type
    body = answer.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


def retry_after(answer: Answer) -> int:
    value = answer.header("retry-after")
    assert value is not None and value.isdigit(), f"Retry-After: {value!r}"
    return int(value)


# -- 401 first -----------------------------------------------------------------------------

UNAUTHENTICATED = [
    pytest.param((), id="no-authorization"),
    pytest.param((("authorization", "Bearer not-the-key"),), id="wrong-key"),
    pytest.param((("authorization", f"Basic {KEY}"),), id="not-bearer"),
]


@pytest.mark.parametrize("headers", UNAUTHENTICATED)
@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_unauthenticated_too_large_not_json_is_401(
    path: str, headers: tuple[tuple[str, str], ...]
) -> None:
    async with serving(api_keys=(KEY,), max_body_bytes=64) as app:
        answer = await call(app, "POST", path, b"{not json" + b"x" * 500, headers=headers)
        assert_error(answer, 401, "unauthorized")
        assert answer.header("www-authenticate") == "Bearer"
        assert KEY not in answer.body.decode()
        assert await sessions(app) == 0


@pytest.mark.parametrize(("method", "path"), [("GET", "/stats"), ("POST", "/sessions/new"), ("GET", "/nope")])
async def test_quart_routes_need_the_key_too(method: str, path: str) -> None:
    async with serving(api_keys=(KEY,)) as app:
        answer = await call(app, method, path)
        assert_error(answer, 401, "unauthorized")
        assert answer.header("www-authenticate") == "Bearer"
        assert await sessions(app) == 0
        assert (await call(app, method, path, headers=[BEARER])).status != 401


async def test_public_paths_need_no_key() -> None:
    async with serving(api_keys=(KEY,)) as app:
        answer = await call(app, "GET", "/health")
        assert answer.status == 200, answer.body
        assert answer.json()["status"] == "ok"


async def test_access_token_is_a_key_only_on_stream_reads() -> None:
    async with serving(api_keys=(KEY,)) as app:
        token = f"access_token={KEY}".encode()
        # Accepted on GET /streams/{id}/events: past 401 to the unknown stream's 404.
        assert_error(await call(app, "GET", "/streams/nope/events", query=token), 404, "stream_not_found")
        wrong = b"access_token=wrong"
        assert_error(await call(app, "GET", "/streams/nope/events", query=wrong), 401, "unauthorized")
        # Not a key anywhere else.
        answer = await call(app, "POST", "/chat", {"message": "hi"}, query=token)
        assert_error(answer, 401, "unauthorized")
        assert await sessions(app) == 0


# -- 413 (body), then 400, then 413 (message), then 404 -----------------------------------


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_body_over_max_body_bytes_is_413_even_when_not_json(path: str, declared: bool) -> None:
    async with serving(api_keys=(KEY,), max_body_bytes=64) as app:
        raw = b"{not json at all" + b"x" * 100
        chunks = [raw[:40], raw[40:80], raw[80:]]
        answer = await call(app, "POST", path, raw, headers=[BEARER], chunks=chunks, content_length=declared)
        assert_error(answer, 413, "body_too_large")
        assert await sessions(app) == 0


async def test_body_of_exactly_max_body_bytes_is_read() -> None:
    async with serving(max_body_bytes=64) as app:
        raw = json.dumps({"message": "hi"}).encode()
        raw += b" " * (64 - len(raw))
        answer = await call(app, "POST", "/chat", raw)
        assert answer.status == 202, answer.body
        assert_error(await call(app, "POST", "/chat", raw + b" "), 413, "body_too_large")


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b'{"message": "hi"', b'\xff\xfe{"message": "hi"}', b"{'message': 'hi'}"],
    ids=["empty", "open-brace", "words", "unclosed", "not-utf8", "single-quotes"],
)
async def test_body_that_is_not_json_is_400_invalid_json(raw: bytes) -> None:
    async with serving(max_message_chars=10) as app:
        assert_error(await call(app, "POST", "/chat", raw), 400, "invalid_json")
        assert await sessions(app) == 0


LONG = "x" * 11  # over max_message_chars=10 below


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"message": LONG, "session_id": ""}, "invalid_request", id="empty-session-id"),
        pytest.param({"message": LONG, "session_id": 42}, "invalid_request", id="number-session-id"),
        pytest.param({"message": LONG, "session_id": ["s"]}, "invalid_request", id="list-session-id"),
        pytest.param({"message": 42}, "invalid_request", id="number-message"),
        pytest.param({"message": True}, "invalid_request", id="boolean-message"),
        pytest.param({"message": [LONG]}, "invalid_request", id="list-message"),
        pytest.param({"session_id": "nope"}, "invalid_request", id="no-message"),
        pytest.param([{"message": LONG}], "invalid_request", id="array-body"),
        pytest.param({"message": " \n\t "}, "empty_message", id="whitespace-message"),
    ],
)
async def test_invalid_body_is_400_before_message_too_long(body: Any, code: str) -> None:
    async with serving(max_message_chars=10) as app:
        assert_error(await call(app, "POST", "/chat", body), 400, code)
        assert_error(await call(app, "POST", "/chat/stream", body), 400, code)
        assert await sessions(app) == 0


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_message_too_long_is_413_before_unknown_session(path: str) -> None:
    async with serving(max_message_chars=10) as app:
        answer = await call(app, "POST", path, {"message": LONG, "session_id": "nope"})
        assert_error(answer, 413, "message_too_long")
        assert await sessions(app) == 0


async def test_message_length_is_counted_in_code_points() -> None:
    async with serving(max_message_chars=10) as app:
        # 10 code points, 40 UTF-8 bytes, 20 UTF-16 units: accepted.
        answer = await call(app, "POST", "/chat", {"message": "\U0001f600" * 10})
        assert answer.status == 202, answer.body
        answer = await call(app, "POST", "/chat", {"message": "\U0001f600" * 11})
        assert_error(answer, 413, "message_too_long")
        assert await sessions(app) == 1


async def test_unknown_session_is_404_before_409_429_and_503() -> None:
    # One generation runs for the whole test: MAX_STREAMS (503) is reached and RATE_LIMIT
    # (429) is spent, so only the order of checks decides which answers.
    async with serving(rate_limit=1, max_streams=1, sim_chunk_delay_ms=SLOW) as app:
        first = await call(app, "POST", "/chat", {"message": "hi"})
        assert first.status == 202, first.body
        session_id = first.json()["session_id"]
        store = engine_of(app).store
        before = await store.get_session(session_id)
        assert before is not None and before.generating == first.json()["stream_id"]
        held = len(before.messages)

        for path in ("/chat", "/chat/stream"):
            answer = await call(app, "POST", path, {"message": "hi", "session_id": "nope"})
            assert_error(answer, 404, "session_not_found")
            # The session's generation is running: 409 before 429 and 503.
            answer = await call(app, "POST", path, {"message": "again", "session_id": session_id})
            assert_error(answer, 409, "generation_running")

        after = await store.get_session(session_id)
        assert after is not None and len(after.messages) == held
        assert after.generating == first.json()["stream_id"]
        assert await sessions(app) == 1
        assert engine_of(app).stats.streams_started == 1


async def test_malformed_last_event_id_is_400_before_unknown_stream() -> None:
    async with serving() as app:
        answer = await call(app, "GET", "/streams/nope/events", headers=[("last-event-id", "abc")])
        assert_error(answer, 400, "invalid_last_event_id")
        assert_error(await call(app, "GET", "/streams/nope/events"), 404, "stream_not_found")


# -- 429 and 503 ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_rate_limit_is_429_with_retry_after(path: str) -> None:
    async with serving(rate_limit=1) as app:
        first = await call(app, "POST", path, {"message": "one"})
        assert first.status in (200, 202), first.body
        second = await call(app, "POST", path, {"message": "two"})
        assert_error(second, 429, "rate_limited")
        assert retry_after(second) >= 1
        assert await sessions(app) == 1
        assert engine_of(app).stats.streams_started == 1


async def test_refused_requests_cost_the_client_no_message() -> None:
    async with serving(rate_limit=1, max_message_chars=10, max_body_bytes=200) as app:
        assert (await call(app, "POST", "/chat", b"{")).status == 400
        assert (await call(app, "POST", "/chat", b"x" * 300)).status == 413
        assert (await call(app, "POST", "/chat", {"message": LONG})).status == 413
        assert (await call(app, "POST", "/chat", {"message": "hi", "session_id": "nope"})).status == 404
        answer = await call(app, "POST", "/chat", {"message": "hi"})
        assert answer.status == 202, answer.body


async def test_capacity_is_503_with_retry_after_and_leaves_no_session() -> None:
    async with serving(max_streams=1, sim_chunk_delay_ms=SLOW) as app:
        assert (await call(app, "POST", "/chat", {"message": "one"})).status == 202
        for path in ("/chat", "/chat/stream"):
            answer = await call(app, "POST", path, {"message": "two"})
            assert_error(answer, 503, "capacity")
            assert retry_after(answer) >= 1
        assert await sessions(app) == 1
        assert engine_of(app).stats.streams_started == 1


async def test_rate_limit_429_answers_before_capacity_503() -> None:
    async with serving(rate_limit=1, max_streams=1, sim_chunk_delay_ms=SLOW) as app:
        assert (await call(app, "POST", "/chat", {"message": "one"})).status == 202
        # Both apply now: the client's one message a minute is spent, the one stream is taken.
        answer = await call(app, "POST", "/chat", {"message": "two"})
        assert_error(answer, 429, "rate_limited")
        assert await sessions(app) == 1


async def test_max_streams_per_client_limits_running_generations_of_post_chat() -> None:
    async with serving(max_streams_per_client=1, sim_chunk_delay_ms=SLOW) as app:
        assert (await call(app, "POST", "/chat", {"message": "one"})).status == 202
        answer = await call(app, "POST", "/chat", {"message": "two"})
        assert_error(answer, 429, None)
        assert retry_after(answer) >= 1
        assert await sessions(app) == 1


# -- 405, and what goes to Quart -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/chat", "POST"),
        ("PUT", "/chat", "POST"),
        ("GET", "/chat/stream", "POST"),
        ("DELETE", "/chat/stream", "POST"),
        ("POST", "/streams/x/events", "GET"),
    ],
)
async def test_method_not_taken_is_405_with_allow(method: str, path: str, allow: str) -> None:
    async with serving() as app:
        answer = await call(app, method, path, {"message": "hi"} if method != "GET" else b"")
        assert_error(answer, 405, "method_not_allowed")
        assert {m.strip() for m in (answer.header("allow") or "").split(",")} >= {allow}
        assert await sessions(app) == 0


@pytest.mark.parametrize("path", ["/nope", "/chat/", "/chats", "/streams/x/events/more", "/streams//events"])
async def test_unknown_paths_go_to_quart_and_get_404_json(path: str) -> None:
    async with serving() as app:
        assert_error(await call(app, "GET", path), 404, "not_found")
        assert_error(await call(app, "POST", path, {"message": "hi"}), 404, "not_found")
        assert await sessions(app) == 0


async def test_quart_405_is_json_with_allow() -> None:
    async with serving() as app:
        answer = await call(app, "POST", "/health")
        assert_error(answer, 405, "method_not_allowed")
        assert "GET" in {m.strip() for m in (answer.header("allow") or "").split(",")}


async def test_head_is_taken_where_get_is_on_quart_routes() -> None:
    async with serving() as app:
        answer = await call(app, "HEAD", "/health")
        assert answer.status == 200, answer.body


async def test_head_is_taken_on_stream_reads() -> None:
    async with serving() as app:
        answer = await call(app, "HEAD", "/streams/nope/events")
        assert answer.status == 404, (answer.status, answer.body)


# -- Bodies the edge must refuse with docs/API.md's answer ---------------------------------------


async def test_lone_surrogate_is_400_and_leaves_nothing() -> None:
    async with serving() as app:
        answer = await call(app, "POST", "/chat", b'{"message": "\\ud83d"}')
        assert_error(answer, 400, None)
        assert await sessions(app) == 0


async def test_deeply_nested_json_is_400() -> None:
    async with serving() as app:
        depth = 100_000
        raw = b'{"message": "hi", "x": ' + b"[" * depth + b"]" * depth + b"}"
        assert len(raw) < Settings().max_body_bytes
        assert_error(await call(app, "POST", "/chat", raw), 400, None)
        assert await sessions(app) == 0


class FailingStore(MemoryStore):
    """A store whose session reads fail with an unexpected error (a bug, not Redis down)."""

    async def get_session(self, session_id: str) -> Session | None:
        raise RuntimeError("store bug")


async def test_unexpected_error_on_a_quart_route_is_500_json() -> None:
    async with serving(store=FailingStore()) as app:
        assert_error(await call(app, "GET", "/sessions/abc"), 500, "internal_error")


async def test_unexpected_error_on_an_edge_route_is_500_json() -> None:
    async with serving(store=FailingStore()) as app:
        answer = await call(app, "POST", "/chat", {"message": "hi", "session_id": "abc"})
        assert_error(answer, 500, "internal_error")


async def test_body_over_max_body_bytes_is_413_on_quart_routes() -> None:
    async with serving(max_body_bytes=64) as app:
        answer = await call(app, "POST", "/sessions/new", b"{" + b" " * 200 + b"}")
        assert_error(answer, 413, "body_too_large")
        assert await sessions(app) == 0


# -- Counting ------------------------------------------------------------------------------

COUNTED = [
    pytest.param({}, "POST", "/chat", {"message": "hi"}, (), 202, id="chat-202"),
    pytest.param({}, "POST", "/chat/stream", {"message": "hi"}, (), 200, id="chat-stream-200"),
    pytest.param({}, "POST", "/chat", b"{", (), 400, id="chat-400"),
    pytest.param({}, "GET", "/chat", b"", (), 405, id="chat-405"),
    pytest.param({}, "GET", "/streams/nope/events", b"", (), 404, id="stream-404"),
    pytest.param({"api_keys": (KEY,)}, "POST", "/chat", {"message": "hi"}, (), 401, id="chat-401"),
    pytest.param({}, "GET", "/health", b"", (), 200, id="quart-200"),
    pytest.param({}, "POST", "/sessions/new", b"", (), 201, id="quart-201"),
    pytest.param({}, "GET", "/nope", b"", (), 404, id="quart-404"),
    pytest.param({}, "POST", "/health", b"", (), 405, id="quart-405"),
    pytest.param({"api_keys": (KEY,)}, "GET", "/stats", b"", (), 401, id="quart-401"),
    pytest.param(
        {"cors_origins": (ORIGIN,)},
        "OPTIONS",
        "/chat",
        b"",
        (("origin", ORIGIN), ("access-control-request-method", "POST")),
        204,
        id="preflight-204",
    ),
]


@pytest.mark.parametrize(("fields", "method", "path", "body", "headers", "status"), COUNTED)
async def test_every_request_is_counted_once(
    fields: dict[str, Any],
    method: str,
    path: str,
    body: bytes | Any,
    headers: tuple[tuple[str, str], ...],
    status: int,
) -> None:
    async with serving(**fields) as app:
        stats = engine_of(app).stats
        for n in (1, 2):
            answer = await call(app, method, path, body, headers=headers)
            assert answer.status == status, (answer.status, answer.body)
            ok = status < 400
            assert (stats.requests_total, stats.requests_ok, stats.requests_failed) == (
                n,
                n if ok else 0,
                0 if ok else n,
            )


async def test_stats_route_reports_the_edge_counts() -> None:
    async with serving() as app:
        await call(app, "POST", "/chat", {"message": "hi"})
        await call(app, "GET", "/chat")
        await call(app, "GET", "/nope")
        answer = await call(app, "GET", "/stats")
        assert answer.status == 200, answer.body
        figures = answer.json()
        # The /stats request itself is counted once its answer starts, after its body is made.
        assert (figures["total_requests"], figures["successful_requests"], figures["failed_requests"]) == (
            3,
            1,
            2,
        )
        assert engine_of(app).stats.requests_total == 4


# -- CORS ----------------------------------------------------------------------------------


def preflight_headers(origin: str, method: str = "POST") -> list[tuple[str, str]]:
    return [
        ("origin", origin),
        ("access-control-request-method", method),
        ("access-control-request-headers", "authorization, content-type"),
    ]


@pytest.mark.parametrize("api_keys", [(), (KEY,)], ids=["open", "keys"])
@pytest.mark.parametrize(
    ("path", "method"),
    [("/chat", "POST"), ("/chat/stream", "POST"), ("/streams/x/events", "GET"), ("/sessions/new", "POST")],
)
async def test_preflight_from_an_allowed_origin_is_204(
    api_keys: tuple[str, ...], path: str, method: str
) -> None:
    async with serving(cors_origins=(ORIGIN,), api_keys=api_keys) as app:
        answer = await call(app, "OPTIONS", path, headers=preflight_headers(ORIGIN, method))
        assert answer.status == 204, (answer.status, answer.body)
        assert answer.body == b""
        assert answer.header("access-control-allow-origin") == ORIGIN
        allowed_methods = {
            m.strip() for m in (answer.header("access-control-allow-methods") or "").split(",")
        }
        assert method in allowed_methods
        allowed_headers = (answer.header("access-control-allow-headers") or "").lower()
        assert "authorization" in allowed_headers and "content-type" in allowed_headers
        assert answer.header("access-control-allow-credentials") is None


@pytest.mark.parametrize("path", ["/chat", "/streams/x/events", "/sessions/new", "/health"])
async def test_preflight_from_another_origin_gets_no_cors_headers(path: str) -> None:
    async with serving(cors_origins=(ORIGIN,)) as app:
        answer = await call(app, "OPTIONS", path, headers=preflight_headers(OTHER_ORIGIN))
        assert answer.status != 204 or answer.header("access-control-allow-origin") is None
        assert answer.header("access-control-allow-origin") is None
        assert answer.header("access-control-allow-methods") is None


async def test_no_cors_headers_when_cors_origins_is_unset() -> None:
    async with serving() as app:
        answer = await call(app, "OPTIONS", "/chat", headers=preflight_headers(ORIGIN))
        assert answer.header("access-control-allow-origin") is None
        answer = await call(app, "POST", "/chat", {"message": "hi"}, headers=[("origin", ORIGIN)])
        assert answer.status == 202
        assert answer.header("access-control-allow-origin") is None


async def test_answers_to_an_allowed_origin_carry_allow_origin() -> None:
    async with serving(cors_origins=(ORIGIN,), api_keys=(KEY,)) as app:
        origin = ("origin", ORIGIN)
        accepted = await call(app, "POST", "/chat", {"message": "hi"}, headers=[origin, BEARER])
        assert accepted.status == 202
        refused = await call(app, "POST", "/chat", {"message": "hi"}, headers=[origin])
        assert_error(refused, 401, "unauthorized")
        not_allowed = await call(app, "GET", "/chat", headers=[origin, BEARER])
        assert_error(not_allowed, 405, "method_not_allowed")
        quart = await call(app, "GET", "/health", headers=[origin])
        assert quart.status == 200
        quart_error = await call(app, "GET", "/nope", headers=[origin, BEARER])
        assert_error(quart_error, 404, "not_found")
        for answer in (accepted, refused, not_allowed, quart, quart_error):
            assert answer.header("access-control-allow-origin") == ORIGIN, answer
            exposed = (answer.header("access-control-expose-headers") or "").lower()
            assert "retry-after" in exposed and "www-authenticate" in exposed
        for answer in (
            await call(app, "POST", "/chat", {"message": "hi"}, headers=[("origin", OTHER_ORIGIN), BEARER]),
            await call(app, "GET", "/health", headers=[("origin", OTHER_ORIGIN)]),
        ):
            assert answer.status < 400
            assert answer.header("access-control-allow-origin") is None


# -- The chat routes' answers --------------------------------------------------------------


async def test_post_chat_is_202_with_its_stream_then_the_stream_reads() -> None:
    async with serving() as app:
        answer = await call(app, "POST", "/chat", {"message": "hello edge"})
        assert answer.status == 202, answer.body
        assert answer.header("content-type") == "application/json"
        body = answer.json()
        assert set(body) == {"session_id", "stream_id", "events_url", "durable_url"}
        assert body["events_url"] == f"/streams/{body['stream_id']}/events"
        assert await engine_of(app).store.get_session(body["session_id"]) is not None

        stream = await call(app, "GET", body["events_url"])
        assert stream.status == 200, stream.body
        assert stream.header("content-type") == "text/event-stream"
        assert stream.header("cache-control") == "no-cache"
        assert stream.header("x-accel-buffering") == "no"
        events = stream.events()
        assert events and events[0].event == "session_info"
        assert events[-1].event == "complete", events[-1]
        assert events[0].json()["session_id"] == body["session_id"]
        assert events[0].json()["stream_id"] == body["stream_id"]
        assert sum(1 for e in events if e.event in ("complete", "error")) == 1

        # Continuing the session, with the same answer shape.
        again = await call(app, "POST", "/chat", {"message": "more", "session_id": body["session_id"]})
        assert again.status == 202, again.body
        assert again.json()["session_id"] == body["session_id"]
        assert again.json()["stream_id"] != body["stream_id"]
        assert await sessions(app) == 1


async def test_post_chat_stream_answers_with_the_stream() -> None:
    async with serving() as app:
        answer = await call(app, "POST", "/chat/stream", {"message": "hello edge"})
        assert answer.status == 200, answer.body
        assert answer.header("content-type") == "text/event-stream"
        assert answer.header("cache-control") == "no-cache"
        assert answer.header("x-accel-buffering") == "no"
        first = next(iter(SSEParser().feed(answer.body)))
        assert isinstance(first, Retry), first
        events = answer.events()
        assert events[0].event == "session_info"
        assert events[-1].event == "complete", events[-1]
        assert all(e.event == e.json()["type"] for e in events)
        session_id = events[0].json()["session_id"]
        assert await engine_of(app).store.get_session(session_id) is not None
        assert await sessions(app) == 1


# -- Who the client is ---------------------------------------------------------------------

OTHER_KEY = "k-edge-other"


@pytest.mark.parametrize(
    ("fields", "headers", "peer", "expected"),
    [
        pytest.param({}, [], PEER, Client(PEER[0], f"addr:{PEER[0]}"), id="address"),
        pytest.param(
            {"api_keys": (KEY,)}, [], PEER, Client(PEER[0], f"addr:{PEER[0]}"), id="public-path-no-key"
        ),
        pytest.param(
            {"trusted_proxies": ("10.0.0.0/8",)},
            [("x-forwarded-for", "198.51.100.9, 10.0.0.3")],
            ("10.0.0.2", 4000),
            Client("198.51.100.9", "addr:198.51.100.9"),
            id="trusted-proxy",
        ),
        pytest.param(
            {},
            [("x-forwarded-for", "198.51.100.9")],
            PEER,
            Client(PEER[0], f"addr:{PEER[0]}"),
            id="untrusted-forwarded-for",
        ),
    ],
)
async def test_the_edge_identifies_the_client_for_quart_routes(
    fields: dict[str, Any], headers: list[tuple[str, str]], peer: tuple[str, int], expected: Client
) -> None:
    async with serving(**fields) as app:
        scope = make_scope("GET", "/health", headers=headers, client=peer)
        assert "quart_sse.client" not in scope
        answer = await send_scope(app, scope)
        assert answer.status == 200, answer.body
        assert scope["quart_sse.client"] == expected


async def test_a_client_with_a_key_is_known_by_its_key_never_the_key_itself() -> None:
    async with serving(api_keys=(KEY, OTHER_KEY)) as app:
        seen: dict[str, list[Client]] = {KEY: [], OTHER_KEY: []}
        for key in (KEY, OTHER_KEY, KEY, OTHER_KEY):
            for path in ("/stats", "/health"):
                scope = make_scope("GET", path, headers=[("authorization", f"Bearer {key}")])
                answer = await send_scope(app, scope)
                assert answer.status == 200, answer.body
                seen[key].append(scope["quart_sse.client"])
        for key, clients in seen.items():
            assert len(set(clients)) == 1, clients  # the same client on every route, every time
            client = clients[0]
            assert client.address == PEER[0]
            assert client.key.startswith("key:") and key not in client.key, client
        assert seen[KEY][0] != seen[OTHER_KEY][0]


async def test_a_quart_route_reads_the_client_from_its_scope() -> None:
    app = create_app(Settings(sim_chunk_delay_ms=0, api_keys=(KEY,)))

    @app.get("/_test/whoami")
    async def whoami() -> dict[str, str]:
        client: Client = cast(Scope, request.scope)["quart_sse.client"]
        return {"address": client.address, "key": client.key}

    async with app.test_app():
        scope = make_scope("GET", "/_test/whoami", headers=[BEARER])
        answer = await send_scope(app, scope)
        assert answer.status == 200, answer.body
        client = scope["quart_sse.client"]
        assert answer.json() == {"address": PEER[0], "key": client.key}
        assert client.key.startswith("key:") and KEY not in client.key


# -- Follow-ups from a new user's hostile try ------------------------------------------------


@pytest.mark.parametrize("path", ["/chat", "/chat/stream", "/streams/x/events"])
async def test_options_on_the_edge_routes_answers_as_quart_does_with_allow(path: str) -> None:
    async with serving() as app:
        answer = await call(app, "OPTIONS", path)
    assert answer.status == 204
    assert "OPTIONS" in (answer.header("allow") or "")
    assert answer.body == b""


@pytest.mark.parametrize(
    "raw",
    [
        b'{"message": "x", "extra": "\\ud83d"}',
        b'{"message": "x", "list": ["ok", "\\udc00"]}',
        b'{"message": "x", "\\ud83d": 1}',
    ],
)
async def test_a_lone_surrogate_anywhere_in_the_body_is_400(raw: bytes) -> None:
    async with serving() as app:
        answer = await call(app, "POST", "/chat", raw, headers=[("content-type", "application/json")])
        assert_error(answer, 400, "invalid_request")
        assert await sessions(app) == 0


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
async def test_json_constants_that_are_not_json_are_400(constant: bytes) -> None:
    async with serving() as app:
        raw = b'{"message": "x", "n": ' + constant + b"}"
        answer = await call(app, "POST", "/chat", raw, headers=[("content-type", "application/json")])
        assert_error(answer, 400, "invalid_json")


async def test_an_unknown_id_is_not_echoed_whole() -> None:
    async with serving() as app:
        long_id = "a" * 100_000
        answer = await call(app, "POST", "/chat", {"message": "x", "session_id": long_id})
        assert_error(answer, 404, "session_not_found")
        assert len(answer.body) < 300


async def test_running_generations_per_client_show_in_stats() -> None:
    async with serving(sim_chunk_delay_ms=3_600_000, max_streams_per_client=3) as app:
        for _ in range(2):
            assert (await call(app, "POST", "/chat", {"message": "held"})).status == 202
        assert engine_of(app).counts()["client_generations"] == 2


async def test_the_servers_send_leaves_the_scope_when_the_request_ends() -> None:
    """The access layer lends the server's ``send`` to the edge through the scope; Hypercorn's
    ``send`` is a method of the stream that holds the scope, so left there it made a
    reference cycle per request (work for the garbage collector's full passes)."""
    from quart_sse.http.access import RAW_SEND, Access, Routes
    from quart_sse.metrics import Stats

    seen: list[bool] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(RAW_SEND in scope)

    async def send(message: dict[str, Any]) -> None:
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    from werkzeug.routing import Map

    access = Access(cast(ASGIApp, app), Stats(), Routes([], Map()), log_requests=False)
    scope: Scope = {"type": "http", "method": "GET", "path": "/health", "headers": []}
    await access(scope, receive, send)
    assert seen == [True] and RAW_SEND not in scope


# -- The session stream's start --------------------------------------------------------------


class LateTurnLog(MemoryStore):
    """A memory store whose turn log, while ``held``, answers a look only once the test lets
    it (a loaded Redis); ``skipped`` is set by a wait for a turn past the first."""

    def __init__(self) -> None:
        super().__init__()
        self.held = False
        self.looked = asyncio.Event()
        self.go = asyncio.Event()
        self.skipped = asyncio.Event()

    def release(self) -> None:
        self.held = False
        self.go.set()

    async def turns(self, session_id: str, after: int) -> TurnLog | None:
        if self.held:
            self.looked.set()
            await self.go.wait()
        return await super().turns(session_id, after)

    async def wait_turns(self, session_id: str, after: int, block: float) -> TurnLog | None:
        if after >= 1:
            self.skipped.set()
        return await super().wait_turns(session_id, after, block)


async def first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def test_a_session_stream_without_an_id_has_the_turn_of_a_message_sent_once_it_began() -> None:
    """A reader without Last-Event-ID starts with the turn being generated, else the next:
    that place is taken before its response begins.  It was taken after (the retry frame
    went first): under load a message its client sent on seeing the response could start
    and end before the reader's look, which then chose the turn after it and waited for it
    forever (tests/e2e/test_session_stream.py, many readers, one hanging)."""
    store = LateTurnLog()
    async with serving(store=store) as app:
        session_id = (await call(app, "POST", "/sessions/new")).json()["session_id"]
        began, wrote = asyncio.Event(), asyncio.Event()
        body: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            began.set()
            body.append(message.get("body", b""))
            if any(isinstance(item, Event) for item in SSEParser().feed(b"".join(body))):
                wrote.set()

        store.held = True
        scope = make_scope("GET", f"/sessions/{session_id}/events")
        reader = asyncio.ensure_future(edge_of(app)(scope, receiver(()), send))
        # The store answers the reader's look only after the client's whole turn, unless the
        # reader looks before its response begins (then the client has seen nothing yet).
        await first(began, store.looked)
        if not began.is_set():
            store.release()
            await began.wait()
        answer = await call(app, "POST", "/chat/stream", {"message": "seen open", "session_id": session_id})
        assert answer.events()[-1].event == "complete", answer.body
        store.release()
        await first(wrote, store.skipped)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    events = [item for item in SSEParser().feed(b"".join(body)) if isinstance(item, Event)]
    assert events, "the reader skipped the turn of the message sent once its response began"
    assert events[0].json()["type"] == "user_message" and events[0].json()["turn"] == 1, events[0]

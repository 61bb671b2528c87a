"""Hostile and heavy input, over real HTTP against the real server process.

Square brackets and terminal escapes in messages (the console prints message previews),
lone surrogates in request bodies and in a model's answer, JSON nested past Python's
recursion limit, request bodies that never arrive, HEAD and wrong methods on the edge's
routes, full sessions and long contexts, per-client stream caps, a frozen Redis, and the
static routes Quart would add by itself.

``API_KEYS=","`` refusing to start is covered by
``tests/e2e/test_ownership.py::test_a_key_setting_with_no_key_in_it_refuses_to_start``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yarl

from tests.support.openai_standin import KEY, MODEL, OpenAIStandIn, Reply, chunk
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess
from tests.support.sse_client import Stream, chat_stream, get_json, read_stream

JSON = {"Content-Type": "application/json"}
HELD = {"SIM_CHUNK_DELAY_MS": "3600000"}  # answers that never end by themselves
GUARD = 30.0  # longest wait on a raw socket: a guard against a hang, never a pace


# Helpers ---------------------------------------------------------------------------------


def assert_error(body: Any, code: str) -> None:
    """docs/API.md's error body: ``{"error": {"code", "message"}}`` and nothing else."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def session_count(http: aiohttp.ClientSession, url: str) -> int:
    count: int = (await get_json(http, f"{url}/sessions"))["count"]
    return count


async def sessions_on_stats(http: aiohttp.ClientSession, url: str) -> int:
    count: int = (await get_json(http, f"{url}/stats"))["active_sessions"]
    return count


async def post_raw(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, Any]:
    """POST raw JSON bytes; the status and the parsed answer (a JSON error body)."""
    async with http.post(url, data=body, headers=JSON) as r:
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        return r.status, await r.json()


async def via_events(http: aiohttp.ClientSession, url: str, message: str) -> Stream:
    """``POST /chat`` (202), then its stream read to its end by ``GET events_url``."""
    async with http.post(f"{url}/chat", json={"message": message}) as r:
        assert r.status == 202, await r.text()
        accepted = await r.json()
    async with http.get(url + accepted["events_url"]) as r:
        assert r.status == 200, await r.text()
        return await read_stream(r)


async def ordinary_requests_work(http: aiohttp.ClientSession, url: str) -> None:
    """An ordinary message on both chat routes gets a whole answer."""
    stream = await chat_stream(http, url, "an ordinary question")
    assert stream.last["type"] == "complete", stream.data
    assert stream.text
    later = await via_events(http, url, "another ordinary question")
    assert later.last["type"] == "complete", later.data


def no_surrogates(text: str) -> bool:
    return not any("\ud800" <= c <= "\udfff" for c in text)


async def raw_request(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 exchange on a plain socket: the status line, the headers (lower-case
    names) and the body (by Content-Length, else to the end of the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(GUARD):
            writer.write(request)
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, *lines = head.rstrip("\r\n").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" in headers and not request.startswith(b"HEAD "):
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()  # to the end: the request said Connection: close
    finally:
        writer.close()
    return status_line, headers, body


async def raw_call(
    port: int, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, Any]:
    """A request with header bytes a client library would refuse; the status and the JSON body."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    status_line, _, answer = await raw_request(port, b"\r\n".join(lines) + b"\r\n\r\n" + body)
    return int(status_line.split()[1]), json.loads(answer) if answer else None


# 1. Square brackets and escapes in messages, with message previews printed ----------------

BRACKETS = ["[/]", "x[/2]", "see [/usr/bin/env]", "[bold]x"]


async def test_square_brackets_in_messages_are_answered_and_logged_as_typed(
    start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    # stdout is a file here: LOG_MESSAGE_TEXT=1 makes the stream boxes show the message preview.
    server = start_server(LOG_LEVEL="info", LOG_MESSAGE_TEXT="1")
    for text in BRACKETS:
        stream = await chat_stream(http, server.url, text)
        assert stream.last["type"] == "complete", (text, stream.data)
        later = await via_events(http, server.url, text)
        assert later.last["type"] == "complete", (text, later.data)
    await ordinary_requests_work(http, server.url)
    output = server.output()
    for text in BRACKETS:
        assert f'"{text}"' in output, output  # the preview, as typed: no markup read into it
    assert "Traceback" not in output and "MarkupError" not in output, output


async def test_terminal_escapes_in_a_message_reach_the_log_only_escaped(
    start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    server = start_server(LOG_LEVEL="info", LOG_MESSAGE_TEXT="1")
    message = "clear \x1b[2J\x1b]0;pwned\x07 and \u202eflipped"
    stream = await chat_stream(http, server.url, message)
    assert stream.last["type"] == "complete", stream.data
    await ordinary_requests_work(http, server.url)
    output = server.output()
    assert "SSE STREAM STARTED" in output, output  # the boxes are printed
    # Shown escaped...
    assert "clear \\x1b[2J\\x1b]0;pwned\\x07 and \\u202eflipped" in output, output
    # ...and never raw: no sequence of the message reaches the operator's terminal.
    assert "\x1b[2J" not in output
    assert "\x1b]0;" not in output
    assert "\x07" not in output
    assert "\u202e" not in output


async def test_without_log_message_text_no_message_text_is_logged(
    start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    server = start_server(LOG_LEVEL="info")  # stdout is a file, not a terminal
    secret = "my-private-words-4c9e1b"
    stream = await chat_stream(http, server.url, f"{secret} [bold]x")
    assert stream.last["type"] == "complete", stream.data
    later = await via_events(http, server.url, f"again {secret}")
    assert later.last["type"] == "complete", later.data
    output = server.output()
    assert output.count("SSE STREAM STARTED") == 2, output  # the boxes are printed, at info
    assert secret not in output, output


# 2. Lone surrogates in a request ---------------------------------------------------------

LONE_SURROGATES = [
    pytest.param(b'{"message": "cut emoji \\ud83d"}', id="message-high"),
    pytest.param(b'{"message": "\\ude00 low first"}', id="message-low"),
    pytest.param(b'{"message": "hi", "session_id": "abc\\ud83d"}', id="session_id"),
    # The UTF-8 form of a surrogate (Python's json reads bytes with surrogatepass)
    pytest.param(b'{"message": "encoded surrogate \xed\xa0\xbd"}', id="message-utf8-form"),
    pytest.param(b'{"message": "a pair as CESU-8 \xed\xa0\xbd\xed\xb8\x80"}', id="message-cesu8-pair"),
    pytest.param(b'{"message": "hi", "session_id": "abc\xed\xa0\xbd"}', id="session_id-utf8-form"),
    pytest.param(b'{"message": "hi", "unknown": "x\xed\xb8\x80"}', id="unknown-field-utf8-form"),
    pytest.param(b'{"message": "hi", "x\\udc00": 1}', id="a-key"),
]


async def assert_400_leaving_nothing(
    http: aiohttp.ClientSession, url: str, path: str, body: bytes, code: str
) -> None:
    """``body`` posted to ``path`` is 400 ``code``; no session is left, and the server goes on."""
    before = await session_count(http, url)
    status, answer = await post_raw(http, url + path, body)
    assert status == 400, answer
    assert_error(answer, code)
    assert await session_count(http, url) == before
    await ordinary_requests_work(http, url)


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
@pytest.mark.parametrize("body", LONE_SURROGATES)
async def test_a_lone_surrogate_is_400_and_leaves_nothing(
    server: ServerProcess, http: aiohttp.ClientSession, path: str, body: bytes
) -> None:
    await assert_400_leaving_nothing(http, server.url, path, body, "invalid_request")


@pytest.mark.redis
@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_a_surrogate_in_its_utf8_form_is_400_on_redis_and_leaves_nothing(
    redis_server: RedisServer,
    start_server: Callable[..., ServerProcess],
    http: aiohttp.ClientSession,
    path: str,
) -> None:
    """On Redis the UTF-8 form of a surrogate answered 500 and left an empty session."""
    server = start_server(REDIS_URL=redis_server.url)
    body = b'{"message": "encoded surrogate \xed\xa0\xbd"}'
    await assert_400_leaving_nothing(http, server.url, path, body, "invalid_request")


LOOSE_JSON = [
    pytest.param(b'{"message": "first", "message": "second"}', id="duplicate-member"),
    pytest.param(b'{"session_id": "nope", "session_id": null, "message": "hi"}', id="duplicate-session_id"),
    pytest.param(b'{"message": "hi", "n": 1e999999}', id="number-past-a-float"),
    pytest.param(b'{"message": "hi", "n": -Infinity}', id="minus-infinity"),
    pytest.param(b'{"message": "not utf-8 \xff"}', id="not-utf8"),
]


@pytest.mark.parametrize("body", LOOSE_JSON)
async def test_json_that_python_would_read_loosely_is_invalid_json(
    server: ServerProcess, http: aiohttp.ClientSession, body: bytes
) -> None:
    await assert_400_leaving_nothing(http, server.url, "/chat", body, "invalid_json")


# 3. JSON nested past the recursion limit --------------------------------------------------

DEEP = [
    pytest.param(b"[" * 1000 + b"]" * 1000, id="array"),
    pytest.param(b'{"message": ' + b"[" * 1000 + b"]" * 1000 + b"}", id="in-message"),
    pytest.param(b'{"a":' * 1000 + b"1" + b"}" * 1000, id="objects"),
]


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
@pytest.mark.parametrize("body", DEEP)
async def test_json_nested_a_thousand_deep_is_invalid_json(
    server: ServerProcess, http: aiohttp.ClientSession, path: str, body: bytes
) -> None:
    before = await sessions_on_stats(http, server.url)
    logged = len(server.output())
    status, answer = await post_raw(http, server.url + path, body)
    assert status == 400, answer
    assert_error(answer, "invalid_json")
    assert await sessions_on_stats(http, server.url) == before
    output = server.output()[logged:]  # what this request made the server print
    assert "Traceback" not in output and "RecursionError" not in output, output
    async with http.get(f"{server.url}/health") as r:
        assert r.status == 200


# 4. A model that sends surrogates ---------------------------------------------------------


def raw_content(escaped: str) -> str:
    """A chunk event whose delta content is ``escaped``, JSON text as the model writes it
    (``\\ud83d`` escapes kept as they are)."""
    return (
        '{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, '
        f'"model": "{MODEL}", "choices": [{{"index": 0, "delta": {{"content": "{escaped}"}}, '
        '"finish_reason": null}]}'
    )


SURROGATE_ANSWERS = [
    pytest.param(
        [r"smile \ud83d", r"\ude00 and a lone \udc00 here"],
        "smile \U0001f600 and a lone \ufffd here",
        id="split-pair-and-lone",
    ),
    pytest.param([r"half a pair \ud83d", r"x after"], "half a pair \ufffdx after", id="high-then-other"),
    pytest.param([r"ends cut \ud83d"], "ends cut \ufffd", id="ends-on-half-a-pair"),
]


@pytest.fixture(name="openai")
async def _openai() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn() as standin:
        yield standin


@pytest.mark.parametrize(("pieces", "expected"), SURROGATE_ANSWERS)
async def test_surrogates_from_the_model_become_valid_utf8(
    start_server: Callable[..., ServerProcess],
    http: aiohttp.ClientSession,
    openai: OpenAIStandIn,
    pieces: list[str],
    expected: str,
) -> None:
    server = start_server(
        MODEL_PROVIDER="openai", OPENAI_BASE_URL=openai.base_url, OPENAI_API_KEY=KEY, OPENAI_MODEL=MODEL
    )
    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [raw_content(p) for p in pieces]
    frames += [chunk({}, "stop"), "[DONE]"]
    openai.replies.append(Reply(frames=frames))
    stream = await chat_stream(http, server.url, "send me an emoji")
    assert stream.last["type"] == "complete", stream.data
    stream.raw.decode("utf-8")  # strict: valid UTF-8 on the wire
    assert stream.text == expected
    assert all(no_surrogates(d["text"]) for d in stream.data if d["type"] == "chunk"), stream.data

    # The saved answer, as GET /sessions/{id} gives it.
    async with http.get(f"{server.url}/sessions/{stream.session_id}") as r:
        assert r.status == 200
        raw = await r.read()
    detail = json.loads(raw.decode("utf-8"))
    assert detail["messages"][-1]["role"] == "model"
    assert detail["messages"][-1]["content"] == expected

    # A replay of the stream gives the same text.
    async with http.get(server.url + stream.data[0]["events_url"]) as r:
        replay = await read_stream(r)
    replay.raw.decode("utf-8")
    assert replay.text == expected


# 5. A body that never arrives -------------------------------------------------------------


@pytest.mark.parametrize(
    "route",
    [
        "POST /chat/stream",
        "GET /streams/{id}/events",
        "POST /sessions/new",
    ],
)
async def test_a_body_that_never_arrives_is_408_body_timeout(
    start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession, route: str
) -> None:
    server = start_server(BODY_TIMEOUT="1")
    async with http.post(f"{server.url}/chat", json={"message": "hello"}) as r:
        assert r.status == 202
        stream_id = (await r.json())["stream_id"]
    method, path = route.replace("{id}", stream_id).split(" ")
    before = await sessions_on_stats(http, server.url)
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    status_line, headers, body = await raw_request(server.port, request)  # then nothing more
    assert status_line.startswith("HTTP/1.1 408 "), (status_line, body)
    assert headers["content-type"].startswith("application/json"), headers
    assert_error(json.loads(body), "body_timeout")
    assert await sessions_on_stats(http, server.url) == before
    await ordinary_requests_work(http, server.url)


async def test_bodies_that_do_not_arrive_are_counted_in_stats_until_their_408(
    start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    """Connections held by a body that never comes were invisible in /stats."""
    server = start_server(BODY_TIMEOUT="30")
    request = (
        b"POST /chat/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    held = []
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request)
        await writer.drain()
        held.append((reader, writer))

    async def pending() -> int:
        count: int = (await get_json(http, f"{server.url}/stats"))["engine"]["bodies_pending"]
        return count

    for _ in range(5000):  # each round trip is an event, not a sleep
        if await pending() == 5:
            break
    assert await pending() == 5
    for _, writer in held:
        writer.close()
    for _ in range(5000):
        if await pending() == 0:
            break
    assert await pending() == 0


# 6. HEAD and wrong methods on the edge's routes -------------------------------------------


async def test_head_on_a_stream_answers_its_headers_without_a_body(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{server.url}/chat", json={"message": "hello"}) as r:
        assert r.status == 202
        events_url = (await r.json())["events_url"]
    async with http.get(server.url + events_url) as r:
        assert (await read_stream(r)).last["type"] == "complete"

    def head(path: str) -> bytes:
        return f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()

    status_line, headers, body = await raw_request(server.port, head(events_url))
    assert status_line.startswith("HTTP/1.1 200 "), (status_line, headers, body)
    assert headers["content-type"].startswith("text/event-stream"), headers
    assert body == b""

    status_line, headers, body = await raw_request(server.port, head("/streams/no-such-stream/events"))
    assert status_line.startswith("HTTP/1.1 404 "), (status_line, headers, body)
    assert body == b""

    # The GET still answers with the stream after the HEADs.
    async with http.get(server.url + events_url) as r:
        assert r.status == 200
        assert (await read_stream(r)).last["type"] == "complete"


@pytest.mark.parametrize("method", ["DELETE", "PUT"])
@pytest.mark.parametrize(("path", "allowed"), [("/chat/stream", "POST"), ("/streams/abc/events", "GET")])
async def test_a_wrong_method_on_a_chat_route_is_405_with_allow(
    server: ServerProcess, http: aiohttp.ClientSession, method: str, path: str, allowed: str
) -> None:
    async with http.request(method, server.url + path, json={"message": "x"}) as r:
        assert r.status == 405, await r.text()
        allow = [m.strip() for m in r.headers["Allow"].split(",")]
        assert allowed in allow and "OPTIONS" in allow and method not in allow, allow
        assert_error(await r.json(), "method_not_allowed")


@pytest.mark.parametrize("method", ["GET", "DELETE", "HEAD"])
async def test_sessions_new_takes_post_only(
    server: ServerProcess, http: aiohttp.ClientSession, method: str
) -> None:
    """GET and DELETE /sessions/new answered 404 session_not_found ("new" read as an id)."""
    async with http.request(method, f"{server.url}/sessions/new") as r:
        assert r.status == 405, await r.text()
        assert [m.strip() for m in r.headers["Allow"].split(",")] == ["POST", "OPTIONS"]
        if method != "HEAD":
            assert_error(await r.json(), "method_not_allowed")


async def test_sessions_new_as_an_id_elsewhere_is_just_unknown(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    """POST /sessions/new/clear answered 405 with Allow: POST (405 for a method it allows)."""
    async with http.post(f"{server.url}/sessions/new/clear") as r:
        assert r.status == 404, await r.text()
        assert_error(await r.json(), "session_not_found")


@pytest.mark.parametrize("path", ["/sessions//x", "/sessions/x//clear", "/docs//assets/x.css"])
async def test_a_path_with_a_double_slash_is_a_json_404_not_a_redirect_to_the_host_header(
    server: ServerProcess, http: aiohttp.ClientSession, path: str
) -> None:
    headers = {"Host": "evil.example"}
    async with http.request("GET", server.url + path, headers=headers, allow_redirects=False) as r:
        assert r.status in (404, 405), (r.status, r.headers.get("Location"))
        assert "Location" not in r.headers
        assert r.headers["Content-Type"].startswith("application/json")


async def test_a_write_to_a_chat_answers_durable_stream_is_405_allowing_reads(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{server.url}/v1/stream/chat/{'0' * 32}", data=b"x") as r:
        assert r.status == 405, await r.text()
        assert r.headers["Allow"] == "GET, HEAD, OPTIONS"


# 7. Full sessions and long contexts -------------------------------------------------------


async def test_a_full_session_refuses_the_next_message_and_stays_as_it_was(
    start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    server = start_server(MAX_SESSION_MESSAGES="4")
    first = await chat_stream(http, server.url, "one")
    session_id = first.session_id
    second = await chat_stream(http, server.url, "two", session_id)
    assert second.last["type"] == "complete" and second.last["message_count"] == 4, second.data
    before = await get_json(http, f"{server.url}/sessions/{session_id}")
    assert before["message_count"] == 4
    for path in ("/chat/stream", "/chat"):
        async with http.post(server.url + path, json={"message": "three", "session_id": session_id}) as r:
            assert r.status == 409, await r.text()
            assert_error(await r.json(), "session_full")
    after = await get_json(http, f"{server.url}/sessions/{session_id}")
    assert (after["message_count"], after["messages"], after["generating"]) == (
        4,
        before["messages"],
        None,
    )
    await ordinary_requests_work(http, server.url)


async def test_a_long_history_sends_only_the_latest_messages_that_fit(
    start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    server = start_server(CONTEXT_MAX_CHARS="200")
    # One message longer than the budget still goes, alone.
    first = await chat_stream(http, server.url, "a" * 300)
    assert first.data[1]["type"] == "status" and first.data[1]["context_messages"] == 1, first.data
    assert first.last["type"] == "complete"
    session_id = first.session_id
    for turn in range(2):
        stream = await chat_stream(http, server.url, f"turn {turn} " + "b" * 150, session_id)
        assert stream.last["type"] == "complete", stream.data
        status = stream.data[1]
        assert status["type"] == "status"
        held = stream.last["message_count"] - 1  # the session's messages while it generated
        assert 1 <= status["context_messages"] < held, (status, held)
    detail = await get_json(http, f"{server.url}/sessions/{session_id}")
    assert detail["message_count"] == 6


# 8. Streams per client --------------------------------------------------------------------


async def test_a_second_message_while_the_first_generates_is_429_for_that_client_only(
    start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    server = start_server(MAX_STREAMS_PER_CLIENT="1", TRUSTED_PROXIES="127.0.0.1", **HELD)
    url = server.url
    async with http.post(f"{url}/chat", json={"message": "slow one"}) as r:
        assert r.status == 202
        first = await r.json()
    detail = await get_json(http, f"{url}/sessions/{first['session_id']}")
    assert detail["generating"] == first["stream_id"]  # the first generation runs
    sessions = await sessions_on_stats(http, url)
    async with http.post(f"{url}/chat", json={"message": "another"}) as r:
        assert r.status == 429, await r.text()
        assert_error(await r.json(), "too_many_streams")
        assert int(r.headers["Retry-After"]) >= 1
    assert await sessions_on_stats(http, url) == sessions
    # Another client (behind the trusted proxy) is not held back.
    async with http.post(
        f"{url}/chat", json={"message": "mine"}, headers={"X-Forwarded-For": "203.0.113.9"}
    ) as r:
        assert r.status == 202, await r.text()


# 9. A frozen Redis ------------------------------------------------------------------------


@pytest.mark.redis
async def test_a_frozen_redis_is_503_store_unavailable_without_its_address(
    redis_server: RedisServer, start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    server = start_server(REDIS_URL=redis_server.url, REDIS_TIMEOUT="1")
    stream = await chat_stream(http, server.url, "before")
    assert stream.last["type"] == "complete"
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        async with http.post(f"{server.url}/chat", json={"message": "frozen"}) as r:
            status, body = r.status, await r.json()
            retry_after = r.headers.get("Retry-After")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert status == 503, body
    assert_error(body, "store_unavailable")
    assert retry_after is not None and int(retry_after) >= 1
    message = body["error"]["message"]
    assert "127.0.0.1" not in message and str(redis_server.port) not in message, message
    # Thawed: the server answers normally again.
    await ordinary_requests_work(http, server.url)
    assert (await get_json(http, f"{server.url}/health"))["status"] == "ok"


@pytest.mark.redis
async def test_a_frozen_redis_ends_a_reader_on_another_instance_with_store_unavailable(
    redis_server: RedisServer, start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    """A reader waiting in Redis for another instance's stream sat out its socket timeout
    (a heartbeat and REDIS_TIMEOUT: 61 s here) when Redis froze; it ends with an error
    event while Redis is still frozen (the client's own timeout, 30 s, is the bound)."""
    slow = {"SIM_CHUNK_DELAY_MS": "200", "SIM_RESPONSE_CHUNKS": "500", "HEARTBEAT_INTERVAL": "60"}
    a = start_server(REDIS_URL=redis_server.url, REDIS_TIMEOUT="1", **slow)
    b = start_server(REDIS_URL=redis_server.url, REDIS_TIMEOUT="1", **slow)
    async with http.post(f"{a.url}/chat", json={"message": "a long one"}) as r:
        assert r.status == 202
        events_url = (await r.json())["events_url"]
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    timeout = aiohttp.ClientTimeout(total=30)
    async with http.get(b.url + events_url, timeout=timeout) as response:
        assert response.status == 200
        await read_stream(response, until=lambda data: data.get("chunk_number") == 2)
        os.kill(pid, signal.SIGSTOP)
        try:
            rest = await read_stream(response)
        finally:
            os.kill(pid, signal.SIGCONT)
    assert rest.last["type"] == "error" and rest.last["code"] == "store_unavailable", rest.data


@pytest.mark.redis
async def test_after_a_frozen_redis_the_session_takes_a_message_without_waiting_out_the_lease(
    redis_server: RedisServer, start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    """A generation given up while Redis was frozen held its session until its lease lapsed
    (409 generation_running for up to a lease after Redis was back: 120 s here); its
    instance now closes it as soon as Redis answers (the loop below gives up at 30 s)."""
    slow = {"SIM_CHUNK_DELAY_MS": "200", "SIM_RESPONSE_CHUNKS": "500", "HEARTBEAT_INTERVAL": "60"}
    server = start_server(REDIS_URL=redis_server.url, REDIS_TIMEOUT="1", **slow)
    async with http.post(f"{server.url}/chat", json={"message": "a long one"}) as r:
        assert r.status == 202
        accepted = await r.json()
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    async with http.get(
        server.url + accepted["events_url"], timeout=aiohttp.ClientTimeout(total=30)
    ) as response:
        head = await read_stream(response, until=lambda data: data.get("chunk_number") == 2)
        os.kill(pid, signal.SIGSTOP)
        try:
            rest = await read_stream(response)
        finally:
            os.kill(pid, signal.SIGCONT)
    assert rest.last["type"] == "error" and rest.last["code"] == "store_unavailable", rest.data
    again = {"message": "again", "session_id": accepted["session_id"]}
    deadline = asyncio.get_running_loop().time() + 30
    while True:  # each try a round trip: 409 until the instance has closed the old stream
        async with http.post(f"{server.url}/chat", json=again) as r:
            status, body = r.status, await r.json()
        if status != 409 or asyncio.get_running_loop().time() > deadline:
            break
    assert status == 202, body
    session = await get_json(http, f"{server.url}/sessions/{accepted['session_id']}")
    first_answer = session["messages"][1]
    assert first_answer["role"] == "model" and first_answer["interrupted"] is True, session["messages"]
    assert first_answer["content"].startswith(head.text), (first_answer, head.text)


# 11. Quart's own static route is gone; the schema is stable -------------------------------


async def test_quarts_default_static_route_is_gone(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.url}/demo/index.html") as r:
        assert r.status == 200  # the file exists, under the demo's own route
    async with http.get(f"{server.url}/static/demo/index.html") as r:
        assert r.status == 404, await r.text()
        assert_error(await r.json(), "not_found")


@pytest.mark.parametrize("path", ["/demo/", "/docs/assets/"])
@pytest.mark.parametrize("name", ["x" * 256, "y" * 5000, "a/" * 200 + "b", "..%2f..%2fpyproject.toml"])
async def test_a_static_file_name_that_is_not_a_file_is_404_not_500(
    server: ServerProcess, http: aiohttp.ClientSession, path: str, name: str
) -> None:
    """A name of 256 bytes answered 500 (OSError: File name too long) and logged the install path."""
    async with http.get(server.url + path + name) as r:
        assert r.status == 404, await r.text()
        assert_error(await r.json(), "not_found")


async def test_the_openapi_schema_is_the_same_twice(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    bodies = []
    for _ in range(2):
        async with http.get(f"{server.url}/openapi.json") as r:
            assert r.status == 200
            bodies.append(await r.read())
    assert bodies[0] == bodies[1]
    assert json.loads(bodies[0])["paths"]


# 12. The same strict JSON in Durable Streams' JSON mode -----------------------------------

DURABLE_BAD_JSON = [
    pytest.param(b'{"a": "\\ud83d"}', "is not valid Unicode", id="lone-surrogate-escape"),
    pytest.param(b'["x\xed\xa0\xbd"]', "is not valid Unicode", id="surrogate-utf8-form"),
    pytest.param(b"[" * 1000 + b"]" * 1000, "nested too deep", id="deep"),
    pytest.param(b'{"a": 1, "a": 2}', "appears twice", id="duplicate-member"),
]


@pytest.mark.parametrize(("body", "said"), DURABLE_BAD_JSON)
async def test_a_durable_json_append_is_read_as_strictly_as_a_chat_body(
    server: ServerProcess, http: aiohttp.ClientSession, body: bytes, said: str
) -> None:
    url = f"{server.url}/v1/stream/hostile-json-{abs(hash(body))}"
    headers = {"Content-Type": "application/json"}
    async with http.put(url, headers=headers) as r:
        assert r.status == 201, await r.text()
    async with http.post(url, headers=headers, data=body) as r:
        assert r.status == 400, await r.text()
        answer = await r.json()
    assert_error(answer, "invalid_json")
    assert said in answer["error"]["message"] and "recursion" not in answer["error"]["message"]
    async with http.post(url, headers=headers, data=b'{"a": "ok \\ud83d\\ude00"}') as r:
        assert r.status == 204, await r.text()  # a whole pair is fine, and the stream goes on
    async with http.get(url, params={"offset": "-1"}) as r:
        assert r.status == 200
        assert await r.json() == [{"a": "ok \U0001f600"}]


# 13. Ids echoed in error messages ----------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["\x1b[31mXY\u202e[", "a\nb", "tab\there", "\u2028sep"])
async def test_an_unknown_id_is_echoed_escaped_in_the_404_message(
    server: ServerProcess, http: aiohttp.ClientSession, bad_id: str
) -> None:
    """A client that prints an error's message must not pass a terminal escape along."""
    async with http.post(f"{server.url}/chat", json={"message": "hi", "session_id": bad_id}) as r:
        assert r.status == 404
        session_message = (await r.json())["error"]["message"]
    async with http.get(f"{server.url}/streams/{quote(bad_id, safe='')}/events") as r:
        assert r.status == 404
        stream_message = (await r.json())["error"]["message"]
    for message in (session_message, stream_message):
        assert message.isprintable(), message
        assert bad_id.encode("unicode_escape").decode() in message, message


# 14. Paths and Durable Streams headers and text bodies -------------------------------------

BAD_PATHS = ["/v1/stream/t4%FF", "/v1/stream/t4%ED%A0%BD", "/sessions/%FF", "/streams/%ED%A0%BD/events"]


@pytest.mark.parametrize("path", BAD_PATHS)
async def test_a_path_that_is_not_utf8_once_decoded_is_400(
    server: ServerProcess, http: aiohttp.ClientSession, path: str
) -> None:
    """%FF was read as U+FFFD: /v1/stream/t4%FF and /v1/stream/t4%FE named one stream."""
    method = "PUT" if path.startswith("/v1/") else "GET"
    async with http.request(method, yarl.URL(server.url + path, encoded=True)) as r:
        assert r.status == 400, await r.text()
        assert_error(await r.json(), "invalid_request")


DURABLE_BAD_HEADERS = [
    {"Producer-Id": "p\x1b[31m", "Producer-Epoch": "0", "Producer-Seq": "0"},
    {"Stream-Seq": "\xff"},
]


@pytest.mark.parametrize("headers", DURABLE_BAD_HEADERS, ids=["producer-id-escape", "stream-seq-byte"])
async def test_a_durable_header_outside_printable_ascii_is_400(
    server: ServerProcess, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    url = f"{server.url}/v1/stream/hostile-header-{len(headers)}-{abs(hash(str(headers)))}"
    async with http.put(url, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201
    raw = [(k.encode(), v.encode("latin-1")) for k, v in {"Content-Type": "text/plain", **headers}.items()]
    status, answer = await raw_call(server.port, "POST", url.removeprefix(server.url), raw, b"x")
    assert status == 400, answer
    assert_error(answer, "invalid_request")


async def test_a_durable_content_type_with_a_byte_outside_ascii_is_400(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    url = f"{server.url}/v1/stream/hostile-content-type"
    status, answer = await raw_call(
        server.port, "PUT", url.removeprefix(server.url), [(b"content-type", b"text/\xff")]
    )
    assert status == 400, answer
    async with http.head(url) as r:
        assert r.status == 404  # nothing was created


@pytest.mark.parametrize("body", [b"a\xed\xa0\xbd", b"\xff", b"cut \xe2\x82"])
async def test_a_utf8_text_stream_refuses_bytes_that_are_not_utf8(
    server: ServerProcess, http: aiohttp.ClientSession, body: bytes
) -> None:
    url = f"{server.url}/v1/stream/utf8-text-{body.hex()}"
    text = {"Content-Type": "text/plain; charset=utf-8"}
    async with http.put(url, headers=text, data=body) as r:
        assert r.status == 400, await r.text()
    async with http.put(url, headers=text) as r:
        assert r.status == 201
    async with http.post(url, headers=text, data=body) as r:
        assert r.status == 400, await r.text()
        assert_error(await r.json(), "invalid_request")
    async with http.post(url, headers=text, data="ok é".encode()) as r:
        assert r.status == 204
    async with http.get(url, params={"offset": "-1"}) as r:
        assert await r.read() == "ok é".encode()

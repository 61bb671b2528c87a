"""client.stream: reconnection logic against a scripted in-process HTTP server (aiohttp.web)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from client.api import ChatAPI, RequestFailed
from client.stream import AnswerStream, NotPosted, Reconnecting, ReconnectPolicy, Resumed, StreamLost

STREAM = "s1"
EVENTS: list[dict[str, Any]] = [
    {
        "type": "session_info",
        "session_id": "abc",
        "stream_id": STREAM,
        "model": "m",
        "events_url": "/streams/s1/events",
    },
    {"type": "status", "message": "Generating response...", "context_messages": 1},
    {"type": "chunk", "text": "Hello ", "chunk_number": 1, "is_final": False},
    {"type": "chunk", "text": "there, ", "chunk_number": 2, "is_final": False},
    {"type": "chunk", "text": "friend.", "chunk_number": 3, "is_final": True},
    {
        "type": "complete",
        "total_chunks": 3,
        "processing_time": 0.1,
        "message_count": 2,
        "finish_reason": "stop",
    },
]


def frame(event_id: int) -> bytes:
    data = EVENTS[event_id - 1]
    return f"id: {event_id}\nevent: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def sse(
    request: web.Request, ids: range, *, end: str = "finish", head: bytes = b"retry: 10\n\n"
) -> web.StreamResponse:
    """Write the frames of ``ids``; then finish the body, abort the connection, or hang."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(head + b"".join(frame(i) for i in ids))
    if end == "abort":
        assert request.transport is not None
        request.transport.abort()
    elif end == "hang":
        await asyncio.Event().wait()
    elif end == "half":  # cut in the middle of the next frame
        await response.write(frame(ids.stop)[:17])
        assert request.transport is not None
        request.transport.abort()
    return response


class Script:
    """Answers POST /chat/stream and each GET of the events URL from a list of handlers."""

    def __init__(self, post: Handler, *gets: Handler) -> None:
        self.post = post
        self.gets = list(gets)
        self.last_event_ids: list[str | None] = []

    async def _post(self, request: web.Request) -> web.StreamResponse:
        return await self.post(request)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.last_event_ids.append(request.headers.get("Last-Event-ID"))
        if not self.gets:
            raise web.HTTPServiceUnavailable()
        return await self.gets.pop(0)(request)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/chat/stream", self._post)
        app.router.add_get("/streams/s1/events", self._get)
        return app


@pytest.fixture(name="serve")
async def _serve() -> AsyncIterator[Callable[[Script], Awaitable[ChatAPI]]]:
    servers: list[TestServer] = []
    apis: list[ChatAPI] = []

    async def serve(script: Script) -> ChatAPI:
        server = TestServer(script.app(), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        apis.append(ChatAPI(str(server.make_url("")).rstrip("/")))
        return apis[-1]

    yield serve
    for api in apis:
        await api.aclose()
    for server in servers:
        await server.close()


async def no_sleep(seconds: float) -> None:
    pass


def stream_for(api: ChatAPI, *, retry_post: bool = False, **policy: Any) -> AnswerStream:
    policy = {"base": 0.001, "cap": 0.002, **policy}
    return AnswerStream(api, ReconnectPolicy(**policy), sleep=no_sleep, retry_post=retry_post)


async def collect(stream: AnswerStream) -> list[Any]:
    return [item async for item in stream.events("hi", None)]


async def drain(stream: AnswerStream, items: list[Any]) -> None:
    async for item in stream.events("hi", None):
        items.append(item)


def text(items: list[Any]) -> str:
    return "".join(i["text"] for i in items if isinstance(i, dict) and i["type"] == "chunk")


def test_backoff_doubles_up_to_the_cap_with_jitter():
    policy = ReconnectPolicy(base=1.0, cap=5.0)
    assert [policy.delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert [policy.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.5]


async def test_a_whole_stream_without_reconnection(serve):
    api = await serve(Script(lambda r: sse(r, range(1, 7))))
    stream = stream_for(api)
    items = await collect(stream)
    assert [i["type"] for i in items] == [e["type"] for e in EVENTS]
    assert (stream.session_id, stream.stream_id, stream.last_event_id, stream.retry_ms) == (
        "abc",
        STREAM,
        "6",
        10,
    )
    assert stream.reconnects == 0


@pytest.mark.parametrize("end", ["abort", "finish", "half", "hang"])
async def test_a_drop_is_resumed_after_the_last_event_id(serve, end):
    script = Script(lambda r: sse(r, range(1, 4), end=end), lambda r: sse(r, range(4, 7)))
    api = await serve(script)
    stream = stream_for(api, idle_timeout=0.2)
    items = await collect(stream)
    assert script.last_event_ids == ["3"]
    assert text(items) == "Hello there, friend."
    notices = [i for i in items if not isinstance(i, dict)]
    assert len(notices) == 2
    assert isinstance(notices[0], Reconnecting) and notices[0].attempt == 1 and notices[0].started
    assert notices[1] == Resumed(1)
    assert items[-1]["type"] == "complete"
    if end == "hang":
        assert notices[0].reason == "no data for 0.2 s"


async def test_events_replayed_twice_are_skipped(serve):
    script = Script(lambda r: sse(r, range(1, 5), end="abort"), lambda r: sse(r, range(2, 7)))
    api = await serve(script)
    items = await collect(stream_for(api))
    assert text(items) == "Hello there, friend."
    assert [i["type"] for i in items if isinstance(i, dict)] == [e["type"] for e in EVENTS]


async def test_attempts_are_counted_until_events_flow_again(serve):
    failing = lambda r: sse(r, range(0), end="abort")  # noqa: E731 - answers, then drops at once
    script = Script(
        lambda r: sse(r, range(1, 3), end="abort"), failing, failing, lambda r: sse(r, range(3, 7))
    )
    api = await serve(script)
    items = await collect(stream_for(api))
    assert [i.attempt for i in items if isinstance(i, Reconnecting)] == [1, 2, 3]
    assert Resumed(3) in items
    assert script.last_event_ids == ["2", "2", "2"]
    assert text(items) == "Hello there, friend."


async def test_gives_up_after_the_attempts(serve):
    script = Script(lambda r: sse(r, range(1, 4), end="abort"))  # every resume: 503
    api = await serve(script)
    stream = stream_for(api, attempts=3)
    items: list[Any] = []
    with pytest.raises(StreamLost, match="gave up after 3 attempts") as lost:
        await drain(stream, items)
    assert lost.value.started
    assert [i.attempt for i in items if isinstance(i, Reconnecting)] == [1, 2, 3]
    assert len(script.last_event_ids) == 3


@pytest.mark.parametrize(("status", "match"), [(404, "cannot resume"), (204, "final event was not received")])
async def test_a_stream_that_cannot_be_resumed_ends_at_once(serve, status, match):
    async def gone(request: web.Request) -> web.StreamResponse:
        if status == 204:
            return web.Response(status=204)
        body = {"error": {"code": "stream_not_found", "message": "no stream s1"}}
        return web.json_response(body, status=404)

    api = await serve(Script(lambda r: sse(r, range(1, 4), end="abort"), gone, gone))
    with pytest.raises(StreamLost, match=match):
        await collect(stream_for(api))


async def test_a_drop_before_session_info_cannot_be_resumed(serve):
    api = await serve(Script(lambda r: sse(r, range(0), end="abort")))
    with pytest.raises(StreamLost, match="before the stream began"):
        await collect(stream_for(api))


async def test_a_refused_post_is_not_retried(serve):
    async def refuse(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"code": "generation_running", "message": "busy"}}, status=409)

    api = await serve(Script(refuse))
    with pytest.raises(RequestFailed) as failed:
        await collect(stream_for(api))
    assert (failed.value.status, failed.value.code, failed.value.message) == (
        409,
        "generation_running",
        "busy",
    )


def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_new_message_to_an_unreachable_server_is_not_retried():
    async with ChatAPI(f"http://127.0.0.1:{unused_port()}") as api:
        items: list[Any] = []
        with pytest.raises(NotPosted) as lost:
            await drain(stream_for(api, attempts=8), items)
    assert lost.value.unreachable == "connection refused"
    assert items == []  # no retry, no notice


async def test_an_unreachable_server_is_retried_then_given_up_when_asked():
    async with ChatAPI(f"http://127.0.0.1:{unused_port()}") as api:
        stream = stream_for(api, attempts=2, retry_post=True)
        items: list[Any] = []
        with pytest.raises(StreamLost, match="cannot reach the server") as lost:
            await drain(stream, items)
    assert not lost.value.started
    assert [(i.attempt, i.started) for i in items] == [(1, False), (2, False)]

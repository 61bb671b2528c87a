"""How a body reaches its client (quart_sse.engine.transport): ASGI, or Hypercorn's socket.

Real parts: ASGITransport, DirectTransport, open_transport, direct_support, h11's own chunk
writer (the framing DirectTransport must match); fake: the ASGI send and the socket.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import h11
import pytest
from h11._writers import ChunkedWriter
from hypercorn.asyncio.tcp_server import TCPServer

from quart_sse.engine import transport as transport_module
from quart_sse.engine.transport import (
    DIRECT,
    DIRECT_REASON,
    TESTED,
    ASGITransport,
    DirectTransport,
    _set_user_timeout,
    direct_support,
    open_transport,
    watch_receive,
)
from tests.support.fake_socket import FakeSocket


class Sink:
    """An ASGI ``send``: records the messages."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def h11_chunk(data: bytes) -> bytes:
    """What h11 itself writes for one body message of a chunked response."""
    out: list[bytes] = []
    ChunkedWriter()(h11.Data(data=data), out.append)
    return b"".join(out)


@pytest.mark.parametrize("send_timeout", [None, 5.0])
async def test_a_plain_asgi_send_gets_the_asgi_transport(send_timeout):
    sink = Sink()
    transport = open_transport(sink.send, send_timeout)
    assert type(transport) is ASGITransport and transport.direct is False
    assert transport.write(b"data: x\n\n") is False  # the caller must send
    assert sink.messages == []
    await transport.send(b"data: x\n\n")
    assert sink.messages == [{"type": "http.response.body", "body": b"data: x\n\n", "more_body": True}]
    assert transport.stalled_for(123.0) == 0.0
    transport.abort()  # nothing to abort through ASGI
    assert len(sink.messages) == 1


async def test_a_send_of_another_server_falls_back_to_asgi_even_when_direct_is_possible(monkeypatch):
    monkeypatch.setattr(transport_module, "DIRECT", True)

    class OtherServer:
        async def send(self, message: dict[str, Any]) -> None:
            raise AssertionError("not called")

    assert type(open_transport(OtherServer().send)) is ASGITransport
    assert type(open_transport(Sink().send)) is ASGITransport


def test_direct_support_says_whether_and_why():
    supported, reason = direct_support()
    assert isinstance(supported, bool) and isinstance(reason, str) and reason
    assert (supported, reason) == (DIRECT, DIRECT_REASON)
    tested = all(version(name).startswith(tuple(s + "." for s in TESTED[name])) for name in TESTED)
    assert supported is tested
    if supported:
        assert reason == f"hypercorn {version('hypercorn')}, h11 {version('h11')}"


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        (
            {"hypercorn": "0.99.1", "h11": "0.16.0"},
            (False, "hypercorn 0.99.1 is not a tested release (0.17, 0.18)"),
        ),
        (
            {"hypercorn": "0.17.3", "h11": "0.13.0"},
            (False, "h11 0.13.0 is not a tested release (0.14, 0.15, 0.16)"),
        ),
        (
            {"hypercorn": "0.170.1", "h11": "0.16.0"},
            (False, "hypercorn 0.170.1 is not a tested release (0.17, 0.18)"),
        ),
        ({"hypercorn": "0.17.3"}, (False, "h11 is not installed")),
        ({"hypercorn": "0.18", "h11": "0.16.0"}, (True, "hypercorn 0.18, h11 0.16.0")),
    ],
)
def test_direct_support_refuses_untested_or_missing_releases(monkeypatch, installed, expected):
    def fake_version(name: str) -> str:
        if name not in installed:
            raise PackageNotFoundError(name)
        return str(installed[name])

    monkeypatch.setattr(transport_module, "version", fake_version)
    assert direct_support() == expected


def test_direct_support_needs_hypercorns_classes(monkeypatch):
    monkeypatch.setattr(
        transport_module, "version", lambda name: {"hypercorn": "0.18.0", "h11": "0.16.0"}[name]
    )
    monkeypatch.setattr(transport_module, "HTTPStream", None)
    assert direct_support() == (False, "Hypercorn's HTTP/1.1 classes are not where they were")


@pytest.mark.parametrize("size", [1, 9, 10, 15, 16, 255, 300, 4096, 70_000])
def test_direct_writes_are_framed_as_h11_frames_a_chunk(size):
    sock = FakeSocket()
    transport = DirectTransport(Sink().send, sock, limit=100)
    data = bytes(i % 251 for i in range(size))
    assert transport.direct is True
    assert transport.write(data) is True
    assert sock.writes == [b"%x\r\n%b\r\n" % (size, data)] == [h11_chunk(data)]


def test_a_direct_write_of_text_is_hex_sized():
    sock = FakeSocket()
    transport = DirectTransport(Sink().send, sock, limit=100)
    assert transport.write(b"hello") and transport.write(b": ping\n\n")
    assert sock.writes == [b"5\r\nhello\r\n", b"8\r\n: ping\n\n\r\n"]


def test_an_empty_direct_write_does_not_end_the_body():
    sock = FakeSocket()
    DirectTransport(Sink().send, sock, limit=100).write(b"")
    assert b"".join(sock.writes) == h11_chunk(b"") == b""


def test_direct_writes_are_refused_when_the_socket_is_closing_or_over_the_limit():
    sock = FakeSocket(unsent=100)
    sink = Sink()
    transport = DirectTransport(sink.send, sock, limit=100)
    assert transport.write(b"a") is True  # at the limit: taken
    sock.unsent = 101
    assert transport.write(b"b") is False  # over it: the caller sends through ASGI, which waits
    sock.unsent = 0
    sock.closing = True
    assert transport.write(b"c") is False
    assert sock.writes == [b"1\r\na\r\n"] and sink.messages == []


async def test_a_direct_transport_still_sends_through_asgi():
    sink = Sink()
    sock = FakeSocket()
    await DirectTransport(sink.send, sock, limit=100).send(b"x")
    assert sink.messages == [{"type": "http.response.body", "body": b"x", "more_body": True}]
    assert sock.writes == []


def test_stalled_for_is_how_long_the_unsent_bytes_have_not_shrunk():
    sock = FakeSocket()
    transport = DirectTransport(Sink().send, sock, limit=100)
    assert transport.stalled_for(10.0) == 0.0  # nothing unsent
    sock.unsent = 500
    assert transport.stalled_for(11.0) == 0.0  # unsent from now on
    assert transport.stalled_for(15.0) == 4.0
    sock.unsent = 800  # more queued, none sent: still stalled since 11
    assert transport.stalled_for(16.0) == 5.0
    sock.unsent = 300  # the client read some: the clock starts again
    assert transport.stalled_for(17.0) == 0.0
    assert transport.stalled_for(20.0) == 3.0
    sock.unsent = 0
    assert transport.stalled_for(30.0) == 0.0
    sock.unsent = 10
    assert transport.stalled_for(31.0) == 0.0 and transport.stalled_for(33.0) == 2.0


def test_abort_resets_the_socket():
    sock = FakeSocket()
    DirectTransport(Sink().send, sock, limit=100).abort()
    assert sock.aborted


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="TCP_USER_TIMEOUT is Linux's")
@pytest.mark.parametrize(("seconds", "ms"), [(2.5, 2500), (30.0, 30_000), (0.0001, 1)])
def test_the_send_timeout_becomes_the_sockets_user_timeout(seconds, ms):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        _set_user_timeout(FakeSocket(sock=sock), seconds)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == ms
    _set_user_timeout(FakeSocket(), 2.5)  # no socket (a test transport): nothing to set


async def test_watch_receive_on_hypercorns_queue_is_a_getter_future_not_a_task():
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(10)
    seen: list[bool] = []
    tasks_before = len(asyncio.all_tasks())
    watch = watch_receive(queue.get, lambda f: seen.append(f.cancelled()))
    assert type(watch) is not asyncio.Task and len(asyncio.all_tasks()) == tasks_before
    assert not watch.done() and seen == []
    await queue.put({"type": "http.disconnect"})  # what Hypercorn puts when the client goes
    await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    assert seen == [False] and queue.qsize() == 1  # the message stays for whoever reads it


async def test_watch_receive_sees_a_message_already_queued_and_stops_when_cancelled():
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    queue.put_nowait({"type": "http.disconnect"})
    seen: list[bool] = []
    watch_receive(queue.get, lambda f: seen.append(f.cancelled()))
    await asyncio.sleep(0)
    assert seen == [False]
    empty: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    stopped: list[bool] = []
    watch = watch_receive(empty.get, lambda f: stopped.append(f.cancelled()))
    watch.cancel()
    await empty.put({"type": "http.disconnect"})  # wakes no one: the cancelled getter is skipped
    await asyncio.sleep(0)
    assert stopped == [True] and await empty.get() == {"type": "http.disconnect"}


async def test_watch_receive_of_another_server_awaits_receive_in_a_task():
    arrived = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await arrived.wait()
        return {"type": "http.disconnect"}

    seen: list[bool] = []
    watch = watch_receive(receive, lambda f: seen.append(f.cancelled()))
    assert type(watch) is asyncio.Task
    arrived.set()
    await watch
    await asyncio.sleep(0)
    assert seen == [False]


async def _connections_left(count: int) -> int:
    """Serve ``count`` requests, each on a connection of its own that ends (real Hypercorn,
    a free loopback port), with the cyclic garbage collector off: how many of the
    connections' ``TCPServer`` objects are still alive once every one has finished."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    refs: list[weakref.ref[Any]] = []
    finished = 0
    run = TCPServer.run

    async def counted(self: Any) -> None:
        nonlocal finished
        refs.append(weakref.ref(self))
        await run(self)
        finished += 1

    async def app(scope, receive, send):  # the smallest ASGI app: one plain answer
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    listening = socket.socket()  # ours, listening before Hypercorn starts: no wait to connect
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listening.fileno()}"]
    config.accesslog = config.errorlog = None
    stop = asyncio.Event()
    TCPServer.run = counted  # type: ignore[method-assign]
    gc.disable()
    try:
        server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await reader.read()).endswith(b"ok")
            writer.close()
        for _ in range(2000):  # each a turn of the loop, not a wait for time to pass
            if finished == count:
                break
            await asyncio.sleep(0)
        assert finished == count
        await asyncio.sleep(0)
        return sum(ref() is not None for ref in refs)
    finally:
        TCPServer.run = run  # type: ignore[method-assign]
        gc.enable()
        stop.set()
        await server
        listening.detach()  # (Hypercorn took the descriptor and closed it)


async def test_a_connection_that_ends_is_freed_without_the_cyclic_collector(monkeypatch):
    original = getattr(TCPServer.run, "wrapped", TCPServer.run)
    monkeypatch.setattr(TCPServer, "run", original)
    assert await _connections_left(5) == 5  # Hypercorn alone: each connection is a cycle
    assert transport_module.release_connections() is True
    assert TCPServer.run is not original and transport_module.release_connections() is True
    assert await _connections_left(5) == 0

"""The direct write path (quart_sse.engine.transport): taken under Hypercorn, and left for ASGI when
the reader falls behind, with the stream intact either way."""

from __future__ import annotations

import asyncio
import json
import socket

from quart_sse.engine.transport import ASGITransport, open_transport
from quart_sse.sse import Event, SSEParser


async def stream_writes(http, url):
    async with http.get(f"{url}/stats") as r:
        return (await r.json())["stream_writes"]


def test_no_direct_writer_outside_hypercorn():
    async def send(message):
        return None

    assert type(open_transport(send)) is ASGITransport

    class Other:
        async def send(self, message):
            return None

    assert type(open_transport(Other().send)) is ASGITransport  # a bound method of another class


async def test_the_installed_hypercorn_takes_the_direct_path(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="2", SIM_RESPONSE_CHUNKS="20")
    async with http.post(f"{server.url}/chat/stream", json={"message": "direct"}) as r:
        events = [i for i in SSEParser().feed(await r.read()) if isinstance(i, Event)]
    data = [json.loads(e.data) for e in events]
    assert [d["chunk_number"] for d in data if d["type"] == "chunk"] == list(range(1, 21))
    assert data[-1]["type"] == "complete"
    writes = await stream_writes(http, server.url)
    # The response head (with retry:) goes through ASGI; the chunks go straight to the socket.
    assert writes["asgi"] >= 1
    assert writes["direct"] >= 10


async def test_a_reader_that_falls_behind_gets_every_event_through_asgi(start_server, http):
    # A big answer written as fast as the model goes, to a reader that does not read at first:
    # the socket fills, direct writes are refused, the response waits in ASGI's drain.
    server = start_server(SIM_CHUNK_DELAY_MS="0", SIM_RESPONSE_CHUNKS="40000")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    body = json.dumps({"message": "x" * 2000}).encode()
    await loop.sock_sendall(
        sock,
        b"POST /chat/stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    for _ in range(5000):  # each round trip is an event; no sleep
        if (await stream_writes(http, server.url))["asgi"] >= 2:
            break
    assert (await stream_writes(http, server.url))["asgi"] >= 2, "the reader never fell behind"
    raw = b""
    parser = SSEParser()
    events: list[Event] = []
    while not events or json.loads(events[-1].data)["type"] not in ("complete", "error"):
        chunk = await loop.sock_recv(sock, 65536)
        assert chunk, "the server closed the stream early"
        raw += chunk
        events += [i for i in parser.feed(chunk) if isinstance(i, Event)]
    sock.close()
    data = [json.loads(e.data) for e in events]
    assert [d["chunk_number"] for d in data if d["type"] == "chunk"] == list(range(1, 40001))
    assert [int(e.id or 0) for e in events] == list(range(1, 40004))
    assert data[-1]["type"] == "complete"

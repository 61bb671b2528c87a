"""Slow, stalled and vanished readers (issue 9): cut after SEND_TIMEOUT, resumable, harmless."""

from __future__ import annotations

import asyncio
import json
import re
import socket

from hypercorn.asyncio import serve
from hypercorn.config import Config

from quart_sse.app import create_app
from quart_sse.config import Settings
from quart_sse.engine import Engine
from quart_sse.engine.transport import DirectTransport
from tests.support.server import listening_socket
from tests.support.sse_client import chat_stream, read_stream

CHUNKS = 40_000  # about 6 MB of events: more than the kernel's socket buffers hold
# SEND_TIMEOUT is 4 s, not 1: the normal readers beside a stalled one live in this test
# process, which parses 6 MB each under coverage on a busy 2-core machine.  With 1 s, a
# pause of this process longer than that got a *normal* reader cut (CI, stop 21).


async def stats(http, url):
    async with http.get(f"{url}/stats") as r:
        return await r.json()


async def after_a_cut(http, url):
    """The figures once every response was released (asked again and again, each a round
    trip), or the last ones.  A stalled reader is released by whichever comes first, both
    after SEND_TIMEOUT: the server's own cut (``stalled_cut``), or the kernel's reset of a
    socket whose data stays unacknowledged (``TCP_USER_TIMEOUT``, set to SEND_TIMEOUT)."""
    for _ in range(20_000):
        figures = await stats(http, url)
        if figures["engine"]["readers"] == 0:
            break
    return figures


async def test_a_reader_that_stops_reading_is_cut_and_resumes_the_whole_answer(start_server, http):
    server = start_server(SEND_TIMEOUT="4", SIM_CHUNK_DELAY_MS="0", SIM_RESPONSE_CHUNKS=str(CHUNKS))
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    body = json.dumps({"message": "then I stop reading"}).encode()
    await loop.sock_sendall(
        sock,
        b"POST /chat/stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    head = b""
    while not re.search(rb'data: (\{"type": "session_info".*?\})\n', head):
        head += await loop.sock_recv(sock, 1024)  # until session_info; then no more reading
    match = re.search(rb'data: (\{"type": "session_info".*?\})\n', head)
    assert match is not None
    info = json.loads(match.group(1))
    assert info["type"] == "session_info"

    # Beside it, normal readers go on and finish.
    others = await asyncio.gather(*(chat_stream(http, server.url, f"normal {i}") for i in range(3)))
    for other in others:
        assert [d["chunk_number"] for d in other.data if d["type"] == "chunk"] == list(range(1, CHUNKS + 1))
        assert other.last["type"] == "complete"

    # The stalled one is cut after SEND_TIMEOUT and released, while its client still reads nothing.
    figures = await after_a_cut(http, server.url)
    assert figures["engine"]["readers"] == 0
    assert figures["stream_writes"]["stalled_cut"] <= 1
    assert figures["engine"]["heartbeat_members"] == 0
    sock.close()

    # Its generation ran on into the log: a resume gets the whole answer.
    async with http.get(server.url + info["events_url"], headers={"Last-Event-ID": "1"}) as r:
        rest = await read_stream(r)
    assert [d["chunk_number"] for d in rest.data if d["type"] == "chunk"] == list(range(1, CHUNKS + 1))
    assert rest.last["type"] == "complete"
    async with http.get(f"{server.url}/sessions/{info['session_id']}") as r:
        assert (await r.json())["messages"][-1]["content"] == rest.text


async def test_stream_sockets_get_tcp_user_timeout_for_peers_that_vanish(http):
    # A peer that left without FIN or RST never acknowledges the pings it is sent: the
    # kernel resets the connection after TCP_USER_TIMEOUT, which the server sets to SEND_TIMEOUT.
    app = create_app(Settings(send_timeout=2.5, sim_chunk_delay_ms=3_600_000))
    rt: Engine = app.extensions["quart_sse"]
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    try:
        async with http.post(f"http://127.0.0.1:{port}/chat/stream", json={"message": "hold"}) as r:
            await read_stream(r, until=lambda d: d["type"] == "status")
            (reader,) = rt.hub.watched
            assert isinstance(reader.transport, DirectTransport)
            stream_socket = reader.transport.transport.get_extra_info("socket")
            assert stream_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2500
    finally:
        await rt.generations.cancel_all("interrupted")
        stop.set()
        await serving


async def test_a_reader_that_never_reads_a_finished_replay_is_cut_and_counted(start_server, http):
    # The whole replay of a finished 6 MB answer is one first write: it too is cut after
    # SEND_TIMEOUT, and the response counts as open (readers, the client's streams) until then.
    server = start_server(
        SEND_TIMEOUT="4", SIM_CHUNK_DELAY_MS="0", SIM_RESPONSE_CHUNKS=str(CHUNKS), MAX_STREAMS_PER_CLIENT="5"
    )
    done = await chat_stream(http, server.url, "a long answer")
    assert done.last["type"] == "complete"
    stream_id = done.data[0]["stream_id"]
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        request = b"GET /streams/%s/events HTTP/1.1\r\nHost: t\r\n\r\n" % stream_id.encode()
        await loop.sock_sendall(sock, request)
        head = b""
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 1024)  # the response head; then no more reading
        assert head.startswith(b"HTTP/1.1 200")
        figures = await after_a_cut(http, server.url)
        assert figures["engine"]["readers"] == 0
        assert figures["engine"]["client_streams"] == 0
        assert figures["stream_writes"]["stalled_cut"] <= 1

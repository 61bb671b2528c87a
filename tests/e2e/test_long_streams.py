"""Quart cuts responses after RESPONSE_TIMEOUT; a stream of any length must not be cut."""

from __future__ import annotations

import asyncio

from hypercorn.asyncio import serve
from hypercorn.config import Config

from quart_sse.app import create_app
from quart_sse.config import Settings
from tests.support.server import listening_socket
from tests.support.sse_client import chat_stream


async def test_a_stream_outlives_quarts_response_timeout(http):
    # In-process, so that Quart's RESPONSE_TIMEOUT can be made short: 0.3 s against a
    # stream that lasts about 1 s.
    app = create_app(Settings(sim_chunk_delay_ms=50, sim_response_chunks=20, heartbeat_interval=0.1))
    app.config["RESPONSE_TIMEOUT"] = 0.3
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns (and closes) the socket from here
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    try:
        url = f"http://127.0.0.1:{port}"
        stream = await chat_stream(http, url, "a long answer")
        assert stream.last["type"] == "complete"
        assert [d["chunk_number"] for d in stream.data if d["type"] == "chunk"] == list(range(1, 21))
        assert stream.last["processing_time"] > 0.3
    finally:
        stop.set()
        await server

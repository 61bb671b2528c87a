"""A deliberately broken stand-in for the chat server: its streams skip a chunk number.

``POST /chat/stream`` answers a stream that looks right in every other way (``retry:`` first,
``session_info``, ``status``, chunks, ``complete`` with ``total_chunks`` equal to the chunks
sent) but numbers its chunks 1, 2, 4, 5, …: the load tests must count that as a failure.
An aiohttp server on a free loopback port; use as ``async with BrokenSSE() as server``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from tests.support.local_http import LocalApp


def frame(event_id: int, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


class BrokenSSE(LocalApp):
    """Streams of ``chunks`` chunks whose numbers jump over ``skip``."""

    def __init__(self, chunks: int = 5, skip: int = 3) -> None:
        self.chunks = chunks
        self.skip = skip
        self.streams = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/chat/stream", self.chat_stream)

    async def chat_stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.streams += 1
        session_id = body.get("session_id") or uuid.uuid4().hex
        stream_id = uuid.uuid4().hex
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        events: list[dict[str, Any]] = [
            {
                "type": "session_info",
                "session_id": session_id,
                "stream_id": stream_id,
                "model": "broken-standin",
                "events_url": f"/streams/{stream_id}/events",
            },
            {"type": "status", "message": "generating", "context_messages": 1},
        ]
        numbers = [n for n in range(1, self.chunks + 2) if n != self.skip][: self.chunks]
        for i, number in enumerate(numbers):
            last = i == len(numbers) - 1
            events.append(
                {"type": "chunk", "text": f"piece {number} ", "chunk_number": number, "is_final": last}
            )
        events.append(
            {
                "type": "complete",
                "total_chunks": len(numbers),
                "processing_time": 0.0,
                "message_count": 2,
                "finish_reason": "stop",
            }
        )
        for event_id, data in enumerate(events, start=1):
            await response.write(frame(event_id, data))
        await response.write_eof()
        return response

"""Every chat answer as a read-only Durable Stream: ``/v1/stream/chat/{stream_id}``.

The answer's log (the store's ``read``/``wait``, the same frames ``GET
/streams/{id}/events`` sends) read as an ``application/json`` Durable Stream: record
``k`` (offset ``…_k``) is event ``k``'s ``data`` object (``session_info``, ``status``,
``chunk``…, then ``complete`` or ``error``), and the stream is closed once that last event
is in.  A stream its store closed (its instance died) ends with the ``error`` event every
reader writes itself.  ``GET`` and ``HEAD`` only; the answer's owner only (404 otherwise).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from quart_sse import codes
from quart_sse.engine.durable import Chunk, DurableRefused
from quart_sse.engine.pump import CLOSED_MESSAGES, final_error
from quart_sse.http.durable import Source, _answer, head_headers, serve_read
from quart_sse.http.scope import Receive, Scope, Send, caller
from quart_sse.models import StreamInfo
from quart_sse.sse import Event, SSEParser
from quart_sse.stores.base import Store
from quart_sse.stores.durable_base import DurableMeta

if TYPE_CHECKING:
    from quart_sse.http.edge import Edge


class ChatSource(Source):
    """One chat answer's log, as a Durable Stream's records."""

    def __init__(self, store: Store, stream_id: str, scope: Scope) -> None:
        self.store = store
        self.stream_id = stream_id
        self.caller = caller(scope)
        self.info: StreamInfo | None = None

    async def meta(self) -> DurableMeta:
        info = await self.store.get_stream(self.stream_id)
        if info is None or not self.caller.sees(info.owner):
            raise DurableRefused(codes.STREAM_NOT_FOUND, f"no answer stream {self.stream_id[:64]!r}")
        self.info = info
        return DurableMeta(
            uid=self.stream_id,
            content_type="application/json",
            created=0.0,
            accessed=0.0,
            tail=info.last_id,
            closed=info.finished,
        )

    async def read(self, meta: DurableMeta, after: int) -> Chunk:
        tail = await self.store.read(self.stream_id, after)
        records: list[tuple[int, bytes]] = []
        if tail is not None:
            frames = list(tail.frames)
            if tail.closed is not None and self.info is not None and after + len(frames) < meta.tail:
                message = CLOSED_MESSAGES.get(tail.closed, tail.closed)
                frames.append(
                    final_error(after + len(frames) + 1, tail.closed, message, self.info.session_id)
                )
            parser = SSEParser()
            for frame in frames:
                for item in parser.feed(frame):
                    if isinstance(item, Event):
                        data = json.dumps(item.json(), separators=(",", ":"), ensure_ascii=False).encode()
                        records.append((after + len(records) + 1, data))
        end = max(meta.tail, records[-1][0] if records else 0)
        return Chunk(records, end, meta.closed and (not records or records[-1][0] >= meta.tail))

    async def wait(self, tail: int, block: float) -> None:
        await self.store.wait(self.stream_id, tail, block)

    async def touch(self) -> None:
        return None


async def chat_answer(edge: Edge, scope: Scope, receive: Receive, send: Send, stream_id: str) -> None:
    """``GET``/``HEAD`` on a chat answer's Durable Stream; 405 for any write."""
    method = scope["method"]
    if method not in ("GET", "HEAD"):
        raise MethodRefused()
    source = ChatSource(edge.engine.store, stream_id, scope)
    if method == "HEAD":
        meta = await source.meta()
        return await _answer(edge, scope, send, 200, head_headers(meta))
    await serve_read(edge, scope, receive, send, source)


class MethodRefused(DurableRefused):
    def __init__(self) -> None:
        super().__init__(
            codes.METHOD_NOT_ALLOWED,
            "a chat answer's stream is read-only: GET or HEAD",
            {"Allow": "GET, HEAD, OPTIONS"},
        )

"""The two routes that answer with a stream, served on ASGI directly, in front of Quart.

``POST /chat/stream`` and ``GET /streams/{id}/events`` hold their connection for as long
as the answer lasts, so what each costs per stream counts ten thousand times.  Quart's
request machinery (two tasks, request and response objects, contexts, before/after hooks)
costs about 10 KB and a few hundred microseconds per stream; here the only per-stream
extra is one small task that waits for the client's disconnect and cancels the writer.
Every other request goes to Quart.  The same shared pieces do the work: :mod:`auth`,
:mod:`chat` (validation, API.md's order of checks), :func:`streams.pump`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

from quart_sse import auth, errors
from quart_sse.chat import body_too_large, start_generation
from quart_sse.cors import CORS
from quart_sse.errors import APIError
from quart_sse.limits import NO_SLOT, StreamSlot
from quart_sse.runtime import Runtime
from quart_sse.sse import parse_last_event_id
from quart_sse.streams import pump

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

# The routes served here, as Quart would list them (for GET /).
ROUTES = ("POST /chat/stream", "GET /streams/<stream_id>/events")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def send_error(send: Send, error: APIError, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    headers += extra
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    length = _header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise body_too_large(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


class StreamingRoutes:
    """ASGI: serve the streaming routes here, pass everything else to ``app``."""

    def __init__(self, app: ASGIApp, rt: Runtime) -> None:
        self.app = app
        self.rt = rt
        self.keys = tuple(key.encode() for key in rt.settings.api_keys)
        self.cors = CORS(rt.settings.cors_origins)
        self.responses: set[asyncio.Task[Any]] = set()  # open SSE responses (their request tasks)
        self._ended: set[asyncio.Task[Any]] = set()  # those that end_responses() cut

    async def end_responses(self, patience: float) -> tuple[int, int]:
        """Shutdown: wait up to ``patience`` s for open SSE responses to end by themselves (after
        their final event), then end the others cleanly where they wait, at an event boundary,
        so that their clients resume (elsewhere) with Last-Event-ID.  Returns (ended, cut).
        """
        open_now = set(self.responses)
        if not open_now:
            return 0, 0
        _, pending = await asyncio.wait(open_now, timeout=patience)
        for task in pending:
            self._ended.add(task)
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1)
        return len(open_now) - len(pending), len(pending)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            method: str = scope["method"]
            if path == "/chat/stream":
                if method == "POST":
                    return await self._answer(scope, receive, send, self._chat_stream)
            elif path.startswith("/streams/") and path.endswith("/events") and path.count("/") == 3:
                if method == "GET":
                    return await self._answer(scope, receive, send, self._stream_events)
            if self.cors.enabled:
                return await self._with_cors(scope, receive, send)
        await self.app(scope, receive, send)

    async def _with_cors(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A Quart route under CORS_ORIGINS: preflights answered here, the rest with CORS headers."""
        preflight = self.cors.preflight(scope)
        if preflight is not None:
            await send({"type": "http.response.start", "status": 204, "headers": preflight})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        extra = self.cors.headers(scope)
        if not extra:
            return await self.app(scope, receive, send)

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        handler: Callable[[Scope, Receive, Send, dict[str, list[str]]], Awaitable[None]],
    ) -> None:
        stats = self.rt.stats
        stats.requests_total += 1
        query = parse_qs(scope["query_string"].decode("latin-1")) if scope["query_string"] else {}
        try:
            auth.check(
                self.keys,
                scope["method"],
                scope["path"],
                _header(scope, b"authorization") or "",
                query.get("access_token", [""])[0],
            )
            await handler(scope, receive, send, query)
        except APIError as error:
            stats.requests_failed += 1
            await send_error(send, error, self.cors.headers(scope))
        else:
            stats.requests_ok += 1

    async def _chat_stream(
        self, scope: Scope, receive: Receive, send: Send, query: dict[str, list[str]]
    ) -> None:
        rt = self.rt
        raw = await read_body(scope, receive, rt.settings.max_body_bytes)
        client = rt.limits.identify(scope)
        slot = rt.limits.slot(client)
        generation = await start_generation(rt, raw, client, slot)
        await self._stream(scope, receive, send, generation.stream_id, 0, slot)

    async def _stream_events(
        self, scope: Scope, receive: Receive, send: Send, query: dict[str, list[str]]
    ) -> None:
        stream_id = scope["path"].split("/")[2]
        await read_body(scope, receive, self.rt.settings.max_body_bytes)  # a GET's (empty) body
        raw = _header(scope, b"last-event-id")
        if raw is None:
            raw = query.get("last_event_id", [None])[0]
        try:
            after = parse_last_event_id(raw) or 0
        except ValueError as exc:
            raise APIError(400, errors.INVALID_LAST_EVENT_ID, f"malformed Last-Event-ID: {exc}") from None
        info = await self.rt.store.get_stream(stream_id)
        if info is None:
            raise APIError(404, errors.STREAM_NOT_FOUND, f"no stream {stream_id} (unknown or expired)")
        if info.finished and after >= info.last_id:
            # Nothing follows: 204 tells an EventSource to stop reconnecting.
            await send({"type": "http.response.start", "status": 204, "headers": self.cors.headers(scope)})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        slot = self.rt.limits.slot_for(scope)
        slot.acquire()  # 429 past MAX_STREAMS_PER_CLIENT
        await self._stream(scope, receive, send, stream_id, after, slot)

    async def _stream(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        stream_id: str,
        after: int,
        slot: StreamSlot = NO_SLOT,
    ) -> None:
        """The SSE response; a disconnect cancels it at once, wherever it waits.

        ``slot`` (the client's place under MAX_STREAMS_PER_CLIENT) is released when it ends.
        """
        rt = self.rt
        task = asyncio.current_task()
        assert task is not None
        gone = False

        def disconnected(_: object) -> None:
            nonlocal gone
            gone = True
            task.cancel()

        # After the request body, the next ASGI message can only be the disconnect.
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(disconnected)
        self.responses.add(task)
        headers = SSE_HEADERS + self.cors.headers(scope) if self.cors.enabled else SSE_HEADERS
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await pump(
                send,
                rt.store,
                stream_id,
                after,
                retry_ms=rt.settings.sse_retry_ms,
                heartbeat=rt.settings.heartbeat_interval,
                stats=rt.stats,
                heartbeats=rt.heartbeats,
                send_timeout=rt.settings.send_timeout,
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if task in self._ended and not gone:
                # Ended by the shutdown: close the body cleanly; the client resumes.
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif not gone:
                raise
        finally:
            slot.release()
            self.responses.discard(task)
            self._ended.discard(task)
            watcher.remove_done_callback(disconnected)
            watcher.cancel()

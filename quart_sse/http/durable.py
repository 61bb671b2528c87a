"""Durable Streams over HTTP: ``/v1/stream/{path}`` (PROTOCOL.md of durable-streams).

``PUT`` creates (or forks), ``POST`` appends and closes, ``GET`` reads (catch-up,
``live=long-poll``, ``live=sse``), ``HEAD`` tells the tail, ``DELETE`` deletes.  The edge
(:mod:`quart_sse.http.edge`) has already counted the request, checked its key (401) and
named its caller; here every stream belongs to the key that created it, and any other key
gets what an unknown path gets (404; a ``PUT`` on a taken path, 409).  The decisions are
:mod:`quart_sse.engine.durable`'s; this module reads headers and writes them.

``/v1/stream/chat/{stream_id}`` is every chat answer as a read-only Durable Stream
(:mod:`quart_sse.http.durable_chat`).

Every answer carries ``X-Content-Type-Options: nosniff`` and
``Cross-Origin-Resource-Policy: cross-origin`` (PROTOCOL.md 10.7); errors have the
server's JSON body ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

from quart_sse import codes
from quart_sse.engine import durable as ds
from quart_sse.engine.durable import Chunk, Config, DurableRefused, DurableStreams, Producer
from quart_sse.http.cors import ALLOW_HEADERS, ALLOW_METHODS
from quart_sse.http.errors import STATUS
from quart_sse.http.limits import Client
from quart_sse.http.scope import CLIENT, Headers, Receive, Scope, Send, caller, header
from quart_sse.stores.durable_base import DurableMeta

if TYPE_CHECKING:
    from quart_sse.http.edge import Edge

PREFIX = "/v1/stream/"
CHAT = "chat/"
"""Paths under the prefix that are chat answers (read-only)."""
MAX_PATH = 1024

SECURITY: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"cross-origin"),
]
EXPOSE = (
    b"Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    b"Stream-Expires-At, Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    b"Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, Retry-After, WWW-Authenticate"
)
METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS")
_MEDIA = re.compile(r"[\w.+-]+/[\w.+-]+", re.ASCII)
_LINES = re.compile(r"\r\n|\r|\n")


def _service(edge: Edge) -> DurableStreams:
    return edge.engine.durable


def _sees(scope: Scope) -> Callable[[str | None], bool]:
    return caller(scope).sees


def _base_headers(edge: Edge, scope: Scope) -> Headers:
    cors = edge.cors.headers(scope) if edge.cors.enabled else []
    cors = [(k, EXPOSE) if k == b"access-control-expose-headers" else (k, v) for k, v in cors]
    return [*SECURITY, *cors]


async def _answer(
    edge: Edge, scope: Scope, send: Send, status: int, headers: dict[str, str], body: bytes = b""
) -> None:
    raw = _base_headers(edge, scope) + [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    if status not in (204, 304):
        raw.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _refuse(edge: Edge, scope: Scope, send: Send, error: codes.Refused) -> None:
    status = STATUS.get(error.code, 500)
    headers = dict(error.headers) if isinstance(error, DurableRefused) else {}
    if error.code == codes.STREAM_CLOSED:
        headers["Stream-Closed"] = "true"
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    headers["Content-Type"] = "application/json"
    body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
    await _answer(edge, scope, send, status, headers, body)


def stream_path(raw: str) -> str:
    """The stream's name from its URL path (``/v1/stream/a/b`` → ``a/b``); 400 when empty
    or longer than 1024 characters."""
    name = raw[len(PREFIX) :] if raw.startswith(PREFIX) else raw.lstrip("/")
    if not name or len(name) > MAX_PATH:
        raise DurableRefused(codes.INVALID_REQUEST, f"a stream path is 1 to {MAX_PATH} characters")
    return name


async def handle(edge: Edge, scope: Scope, receive: Receive, send: Send, params: dict[str, str]) -> None:
    """Every method on ``/v1/stream/{path}``: the protocol's answer, or its refusal."""
    method = scope["method"]
    try:
        if method == "OPTIONS":
            return await _answer(
                edge,
                scope,
                send,
                204,
                {
                    "Allow": ALLOW_METHODS.decode(),
                    "Access-Control-Allow-Methods": ALLOW_METHODS.decode(),
                    "Access-Control-Allow-Headers": ALLOW_HEADERS.decode(),
                    "Access-Control-Max-Age": "600",
                },
            )
        body = await edge.request_body(scope, receive)
        path = stream_path(params["path"])
        if path.startswith(CHAT):
            from quart_sse.http.durable_chat import chat_answer

            return await chat_answer(edge, scope, receive, send, path[len(CHAT) :])
        if method == "PUT":
            await _create(edge, scope, send, path, body)
        elif method == "POST":
            await _append(edge, scope, send, path, body)
        elif method == "DELETE":
            await _service(edge).delete(path, _sees(scope))
            await _answer(edge, scope, send, 204, {})
        elif method == "HEAD":
            await _head(edge, scope, send, path)
        else:
            await _read(edge, scope, receive, send, path)
    except codes.Refused as error:
        await _refuse(edge, scope, send, error)


# Create, append, head -------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    """A header of the protocol's, or None; 400 for one with a byte outside printable ASCII
    (a stream's Content-Type is echoed to its readers, a Producer-Id kept: RFC 9110 §5.5)."""
    value = header(scope, name)
    if value is not None and not all(" " <= char <= "~" for char in value):
        raise DurableRefused(
            codes.INVALID_REQUEST,
            f"header {name.decode()} has a character outside printable ASCII: {value[:40]!a}",
        )
    return value


async def _create(edge: Edge, scope: Scope, send: Send, path: str, body: bytes) -> None:
    forked_from = _header(scope, b"stream-forked-from")
    raw_type = (_header(scope, b"content-type") or "").strip()
    content_type = raw_type if _MEDIA.match(raw_type) else ("" if forked_from else "application/octet-stream")
    ttl_raw, expires_raw = _header(scope, b"stream-ttl"), _header(scope, b"stream-expires-at")
    if ttl_raw is not None and expires_raw is not None:
        raise DurableRefused(codes.INVALID_REQUEST, "give Stream-TTL or Stream-Expires-At, not both")
    ttl = ds.parse_decimal("Stream-TTL", ttl_raw) if ttl_raw is not None else None
    expires_ts = ds.parse_expires_at(expires_raw) if expires_raw is not None else None
    fork_raw, sub_raw = _header(scope, b"stream-fork-offset"), _header(scope, b"stream-fork-sub-offset")
    if (fork_raw is not None or sub_raw is not None) and forked_from is None:
        raise DurableRefused(
            codes.INVALID_REQUEST, "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From"
        )
    fork_offset = ds.parse_offset(fork_raw) if fork_raw is not None else None
    if fork_raw is not None and (fork_offset is None or fork_raw == "-1"):
        raise DurableRefused(codes.INVALID_REQUEST, "Stream-Fork-Offset must be an offset this server gave")
    sub = ds.parse_decimal("Stream-Fork-Sub-Offset", sub_raw) if sub_raw is not None else 0
    if sub and fork_raw is None:
        raise DurableRefused(codes.INVALID_REQUEST, "Stream-Fork-Sub-Offset needs Stream-Fork-Offset")
    config = Config(
        content_type=content_type,
        ttl=ttl,
        expires_at=expires_raw,
        expires_ts=expires_ts,
        closed=_header(scope, b"stream-closed") == "true",
        forked_from=stream_path(forked_from) if forked_from is not None else None,
        fork_offset=fork_offset,
        fork_sub=sub,
    )
    who = caller(scope)
    client = scope[CLIENT]
    await edge.limits.take_message(client, count=False)  # 429 past RATE_LIMIT: a create is a write
    created, meta = await _service(edge).create(path, config, who.owner, who.sees, body, client.key)
    await _count_write(edge, client)
    headers = {"Content-Type": meta.content_type, "Stream-Next-Offset": ds.offset(meta.tail)}
    if created:
        headers["Location"] = _location(scope)
    if meta.closed:
        headers["Stream-Closed"] = "true"
    await _answer(edge, scope, send, 201 if created else 200, headers)


def _location(scope: Scope) -> str:
    host = _header(scope, b"host") or "localhost"
    path = scope.get("raw_path") or scope["path"].encode()
    return f"{scope.get('scheme', 'http')}://{host}{path.decode('latin-1')}"


def _producer(scope: Scope) -> Producer | None:
    pid = _header(scope, b"producer-id")
    epoch = _header(scope, b"producer-epoch")
    seq = _header(scope, b"producer-seq")
    if pid is None and epoch is None and seq is None:
        return None
    if pid is None or epoch is None or seq is None:
        raise DurableRefused(
            codes.INVALID_REQUEST, "Producer-Id, Producer-Epoch and Producer-Seq go together"
        )
    if not pid:
        raise DurableRefused(codes.INVALID_REQUEST, "Producer-Id must not be empty")
    if len(pid) > MAX_PRODUCER_ID:
        # A stream remembers each producer: an id is bounded like the path is.
        raise DurableRefused(
            codes.INVALID_REQUEST, f"Producer-Id has {len(pid)} characters: at most {MAX_PRODUCER_ID}"
        )
    return Producer(pid, ds.parse_decimal("Producer-Epoch", epoch), ds.parse_decimal("Producer-Seq", seq))


MAX_PRODUCER_ID = 256
"""Characters of a ``Producer-Id`` at most (400 past it)."""


async def _append(edge: Edge, scope: Scope, send: Send, path: str, body: bytes) -> None:
    producer = _producer(scope)
    close = _header(scope, b"stream-closed") == "true"
    if not body and not close:
        raise DurableRefused(codes.INVALID_REQUEST, "an append needs a body (or Stream-Closed: true)")
    await edge.limits.take_message(scope[CLIENT], count=False)  # 429 past RATE_LIMIT, as a chat message
    done = await _service(edge).append(
        path,
        _sees(scope),
        body,
        _header(scope, b"content-type"),
        _header(scope, b"stream-seq"),
        producer,
        close,
    )
    await _count_write(edge, scope[CLIENT])
    headers = {"Stream-Next-Offset": ds.offset(done.tail)}
    if done.closed:
        headers["Stream-Closed"] = "true"
    status = 204
    if producer is not None:
        headers["Producer-Epoch"] = str(producer.epoch)
        headers["Producer-Seq"] = str(done.producer_seq if done.producer_seq is not None else producer.seq)
        status = 204 if done.duplicate or not body else 200
    await _answer(edge, scope, send, status, headers)


async def _count_write(edge: Edge, client: Client) -> None:
    """Count a write that was done against RATE_LIMIT, as a chat message is counted once
    accepted: a refused write (404, 409, 413...) counts nothing.  The check came before the
    write; a count that races past the limit now is not turned into a 429 of a done write."""
    with contextlib.suppress(codes.Refused):
        await edge.limits.take_message(client)


def head_headers(meta: DurableMeta) -> dict[str, str]:
    """The headers of a ``HEAD``: the stream's type, tail, closure and whole-stream ``ETag``."""
    headers = {
        "Content-Type": meta.content_type,
        "Stream-Next-Offset": ds.offset(meta.tail),
        "Cache-Control": "no-store",
        "ETag": _etag(meta, "-1", meta.tail, meta.closed),
    }
    if meta.closed:
        headers["Stream-Closed"] = "true"
    return headers


async def _head(edge: Edge, scope: Scope, send: Send, path: str) -> None:
    meta = await _service(edge).meta(path, _sees(scope))
    headers = head_headers(meta)
    if meta.ttl is not None:
        headers["Stream-TTL"] = str(meta.ttl)
    if meta.expires_at is not None:
        headers["Stream-Expires-At"] = meta.expires_at
    await _answer(edge, scope, send, 200, headers)


def _etag(meta: DurableMeta, start: str, end: int, closed: bool) -> str:
    return f'"{meta.uid}:{start}:{ds.offset(end)}{":c" if closed else ""}"'


# Reads ----------------------------------------------------------------------------------------


def _read_params(scope: Scope) -> tuple[str | None, str | None, str | None]:
    """``offset``, ``live`` and ``cursor``; 400 for an empty or repeated offset."""
    raw: bytes = scope.get("query_string") or b""
    found = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
    offsets = found.get("offset")
    if offsets is not None and (len(offsets) > 1 or not offsets[0]):
        raise DurableRefused(codes.INVALID_REQUEST, "give one non-empty offset")
    live = found.get("live", [None])[0]
    if live not in (None, "long-poll", "sse"):
        raise DurableRefused(codes.INVALID_REQUEST, "live is long-poll or sse")
    if live is not None and offsets is None:
        raise DurableRefused(codes.INVALID_REQUEST, f"live={live} needs an offset")
    return (offsets[0] if offsets else None), live, found.get("cursor", [None])[0]


class Source(Protocol):
    """What a read serves: a Durable Stream of the store, or a chat answer."""

    async def meta(self) -> DurableMeta: ...
    async def read(self, meta: DurableMeta, after: int) -> Chunk: ...
    async def wait(self, tail: int, block: float) -> None: ...
    async def touch(self) -> None: ...


class StoreSource(Source):
    def __init__(self, service: DurableStreams, path: str, sees: Callable[[str | None], bool]) -> None:
        self.service, self.path, self.sees = service, path, sees

    async def meta(self) -> DurableMeta:
        return await self.service.meta(self.path, self.sees)

    async def read(self, meta: DurableMeta, after: int) -> Chunk:
        return await self.service.read(self.path, meta, after)

    async def wait(self, tail: int, block: float) -> None:
        await self.service.wait(self.path, tail, block)

    async def touch(self) -> None:
        await self.service.touch(self.path)


async def _read(edge: Edge, scope: Scope, receive: Receive, send: Send, path: str) -> None:
    await serve_read(edge, scope, receive, send, StoreSource(_service(edge), path, _sees(scope)))


async def serve_read(edge: Edge, scope: Scope, receive: Receive, send: Send, source: Source) -> None:
    """``GET``: catch-up, long-poll or SSE, from ``source``."""
    raw_offset, live, client_cursor = _read_params(scope)
    meta = await source.meta()
    after = ds.parse_offset(raw_offset) if raw_offset is not None else 0
    if live == "sse":
        return await _held(
            edge, scope, receive, send, lambda: _sse(edge, scope, send, source, meta, after, client_cursor)
        )
    json_mode = ds.is_json(meta.content_type)
    if after is None and live is None:  # offset=now: the tail, no data
        await source.touch()
        headers = {
            "Content-Type": meta.content_type,
            "Stream-Next-Offset": ds.offset(meta.tail),
            "Stream-Up-To-Date": "true",
            "Cache-Control": "no-store",
        }
        if meta.closed:
            headers["Stream-Closed"] = "true"
        return await _answer(edge, scope, send, 200, headers, b"[]" if json_mode else b"")
    if live == "long-poll":
        return await _held(
            edge,
            scope,
            receive,
            send,
            lambda: _long_poll(edge, scope, send, source, meta, after, client_cursor),
        )
    assert after is not None
    await _catch_up(edge, scope, send, source, meta, await source.read(meta, after), raw_offset or "-1", None)


async def _catch_up(
    edge: Edge,
    scope: Scope,
    send: Send,
    source: Source,
    meta: DurableMeta,
    chunk: Chunk,
    start: str,
    client_cursor: str | None,
    *,
    live: bool = False,
) -> None:
    await source.touch()
    closed = chunk.closed and chunk.up_to_date
    headers = {"Content-Type": meta.content_type, "Stream-Next-Offset": ds.offset(chunk.end)}
    if live:
        headers["Stream-Cursor"] = ds.cursor(client_cursor)
    if chunk.up_to_date:
        headers["Stream-Up-To-Date"] = "true"
    if closed:
        headers["Stream-Closed"] = "true"
    etag = _etag(meta, start, chunk.end, closed)
    headers["ETag"] = etag
    headers["Cache-Control"] = "private, max-age=60, stale-while-revalidate=300"
    if _header(scope, b"if-none-match") == etag:
        return await _answer(edge, scope, send, 304, {"ETag": etag})
    if ds.is_json(meta.content_type):
        body = b"[" + b",".join(data for _, data in chunk.records if data) + b"]"
    else:
        body = b"".join(data for _, data in chunk.records)
    await _answer(edge, scope, send, 200, headers, body)


async def _long_poll(
    edge: Edge,
    scope: Scope,
    send: Send,
    source: Source,
    meta: DurableMeta,
    after: int | None,
    client_cursor: str | None,
) -> None:
    start = ds.offset(after) if after is not None else "now"
    position = meta.tail if after is None else after
    chunk = await source.read(meta, position)
    if not chunk.records and position >= meta.tail:
        # Until data comes, the stream closes or the timeout passes: a wake-up with nothing
        # new (on Redis, a change's PUBLISH can arrive late, after the change it tells of)
        # waits again for the rest of the time.
        deadline = time.monotonic() + _service(edge).long_poll_timeout
        while not meta.closed and (left := deadline - time.monotonic()) > 0:
            await source.wait(position, left)
            meta = await source.meta()
            chunk = await source.read(meta, position)
            if chunk.records:
                break
        if not chunk.records:
            await source.touch()
            headers = {
                "Stream-Next-Offset": ds.offset(max(position, 0) if position <= meta.tail else meta.tail),
                "Stream-Up-To-Date": "true",
                "Stream-Cursor": ds.cursor(client_cursor),
            }
            if meta.closed:
                headers["Stream-Closed"] = "true"
            return await _answer(edge, scope, send, 204, headers)
    await _catch_up(edge, scope, send, source, meta, chunk, start, client_cursor, live=True)


async def _held(
    edge: Edge, scope: Scope, receive: Receive, send: Send, body: Callable[[], Awaitable[None]]
) -> None:
    """A response that may wait (long-poll, SSE): counted under MAX_STREAMS_PER_CLIENT, cut
    at once by a disconnect, ended by the drain."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    def disconnected(_: object) -> None:
        nonlocal gone
        gone = True
        task.cancel()

    slot = edge.limits.slot(scope[CLIENT])
    slot.acquire()  # 429 past MAX_STREAMS_PER_CLIENT
    responses = edge.engine.responses
    watcher = asyncio.ensure_future(receive())
    watcher.add_done_callback(disconnected)
    responses.add(task)
    try:
        await body()
    except asyncio.CancelledError:
        if not gone and not responses.ended_by_drain(task):
            raise
    finally:
        responses.discard(task)
        slot.release()
        watcher.remove_done_callback(disconnected)
        watcher.cancel()


def _sse_event(kind: str, payload: str) -> bytes:
    lines = _LINES.split(payload)
    return (f"event: {kind}\n" + "".join(f"data:{line}\n" for line in lines) + "\n").encode()


async def _sse(
    edge: Edge,
    scope: Scope,
    send: Send,
    source: Source,
    meta: DurableMeta,
    after: int | None,
    client_cursor: str | None,
) -> None:
    """``live=sse``: a ``data`` event per record, each followed by its ``control`` event;
    a keep-alive ``control`` when nothing came for the long-poll time; ends after the
    closed stream's last record, or after about a minute (the client reconnects)."""
    media = ds.media_type(meta.content_type)
    mode = "json" if media == "application/json" else "text" if media.startswith("text/") else "base64"
    headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        *_base_headers(edge, scope),
    ]
    if mode == "base64":
        headers.append((b"stream-sse-data-encoding", b"base64"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    service = _service(edge)
    position = meta.tail if after is None else min(after, meta.tail)
    deadline = time.monotonic() + service.sse_lifetime
    say_position = True
    ended = False
    try:
        while not ended:
            chunk = await source.read(meta, position)
            await source.touch()
            out: list[bytes] = []
            for number, data in chunk.records:
                if mode == "json":
                    text = "[" + data.decode() + "]"
                elif mode == "text":
                    text = data.decode("utf-8", "replace")
                else:
                    text = base64.b64encode(data).decode()
                out.append(_sse_event("data", text))
                position = number
                ended = chunk.closed and number >= chunk.tail
                out.append(_control(position, chunk.tail, ended, client_cursor))
            if not chunk.records and (say_position or chunk.closed):
                ended = chunk.closed and position >= chunk.tail
                out.append(_control(position, chunk.tail, ended, client_cursor))
            if out:
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
            say_position = False
            if ended or position < chunk.tail:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            before = chunk.tail
            await source.wait(position, min(service.long_poll_timeout, left))
            meta = await source.meta()
            if meta.tail == before and not meta.closed:
                say_position = True  # a keep-alive control event
    except codes.Refused:
        pass  # deleted or expired while read: the stream ends
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _control(position: int, tail: int, closed: bool, client_cursor: str | None) -> bytes:
    data: dict[str, Any] = {"streamNextOffset": ds.offset(position)}
    if closed:
        data["streamClosed"] = True
    else:
        data["streamCursor"] = ds.cursor(client_cursor)
        if position >= tail:
            data["upToDate"] = True
    return _sse_event("control", json.dumps(data, separators=(",", ":")))

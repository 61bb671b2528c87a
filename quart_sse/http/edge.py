"""The HTTP edge: one ASGI layer around everything, and the chat routes as its own.

Every request passes here once, in docs/API.md's order: counted; a CORS preflight answered;
the API key checked (401); the client identified (for the limits, and for the routes as
``scope["quart_sse.client"]``).  Then a small routing table: the three chat routes are
served here, on ASGI directly; every other request goes to the Quart app (sessions,
cancel, system, demo, docs), whose errors the same renderer answers
(:mod:`quart_sse.http.errors`).

Why the chat routes skip Quart: ``POST /chat/stream`` and ``GET /streams/{id}/events`` hold
their connection for as long as the answer lasts, so what each costs per stream counts
ten thousand times.  Quart's request machinery (two tasks, request and response objects,
contexts, hooks) costs about 10 KB and a few hundred microseconds per stream; here the
only per-stream extra is a watch for the client's disconnect that cancels the response (a
future among the getters of Hypercorn's receive queue, not a task:
:func:`quart_sse.engine.transport.watch_receive`).  ``POST /chat`` shares their validation
and order of checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes

from quart_sse import codes, jsontext
from quart_sse.engine import Engine, events_url
from quart_sse.engine.durable import durable_url
from quart_sse.engine.transport import watch_receive
from quart_sse.http import durable
from quart_sse.http.access import RAW_SEND
from quart_sse.http.auth import Keys
from quart_sse.http.chat import Accepted, body_too_large, start_generation, start_regeneration
from quart_sse.http.cors import CORS
from quart_sse.http.errors import send_error
from quart_sse.http.limits import NO_SLOT, Client, Limits, StreamSlot
from quart_sse.http.scope import CALLER, CLIENT, ASGIApp, Headers, Receive, Scope, Send, header, query
from quart_sse.models import EVERYONE, StreamInfo
from quart_sse.sse import parse_last_event_id

Handler = Callable[["Edge", Scope, Receive, Send, dict[str, str]], Awaitable[None]]

log = logging.getLogger("quart_sse.http")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


DRAIN_MIN = 64 << 20
"""Bytes of a refused body read and dropped at least (else 4 times MAX_BODY_BYTES) before the 413."""


class BodyTooLarge(codes.Refused):
    """413 for a body past ``MAX_BODY_BYTES``; ``unread``: whether more of it follows, not
    yet read and dropped; ``closing``: whether the connection closes after the 413 (the
    rest of the body did not all come)."""

    def __init__(self, limit: int, unread: bool) -> None:
        refused = body_too_large(limit)
        super().__init__(refused.code, refused.message)
        self.unread = unread
        self.closing = False


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body as it arrives; 413 (:class:`BodyTooLarge`) past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, bool(message.get("more_body", False)))
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def discard_body(receive: Receive, most: int, deadline: float) -> bool:
    """Read and drop the rest of a refused request body, at most ``most`` bytes, until
    ``deadline`` (the loop's clock): True when it all came.

    Why (a lingering close, as nginx's): Hypercorn closes the connection when the response
    ends, and a close with unread bytes in the socket resets it, so a client still sending
    (Node's fetch, curl) reports a failed request instead of the 413.
    """
    size = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            while size <= most:
                message = await receive()
                if message["type"] != "http.request":
                    return False
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body the edge has read, then whatever comes next (the
    disconnect)."""
    first: list[dict[str, Any]] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict[str, Any]:
        return first.pop() if first else await receive()

    return replayed


class Edge:
    """ASGI: identity, auth, CORS, counting and errors for every request; the chat routes."""

    def __init__(self, app: ASGIApp, engine: Engine, limits: Limits) -> None:
        self.app = app
        self.engine = engine
        self.limits = limits
        self.stats = engine.stats
        settings = engine.settings
        self.keys = Keys(settings.api_keys, settings.admin_keys, settings.owner_id_secret)
        self.cors = CORS(engine.settings.cors_origins)
        engine.counters.append(limits.debug_counts)
        engine.counters.append(engine.durable.store.debug_counts)  # durable streams held, readers
        engine.counters.append(engine.sessions.debug_counts)  # session streams open
        self.bodies_pending = 0  # requests whose body is being read (each for BODY_TIMEOUT at most)
        engine.counters.append(lambda: {"bodies_pending": self.bodies_pending})

    # The routing table: path pattern, then method -> handler.
    ROUTES: tuple[tuple[re.Pattern[str], dict[str, Handler]], ...] = ()

    def route(self, method: str, path: str) -> tuple[dict[str, Handler], dict[str, str]] | None:
        for pattern, methods in self.ROUTES:
            match = pattern.fullmatch(path)
            if match is not None:
                return methods, match.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cors = self.cors.headers(scope) if self.cors.enabled else []
        preflight = self.cors.preflight(scope) if cors else None
        if preflight is not None:
            self.stats.requests_total += 1
            self.stats.requests_ok += 1
            await send({"type": "http.response.start", "status": 204, "headers": preflight})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        method, path = scope["method"], scope["path"]
        found = self.route(method, path)
        if found is None:
            try:
                self._admit(scope, method, path)
                body = await self._body(scope, receive)  # 408 and 413 as on every route
            except codes.Refused as error:
                self.stats.requests_total += 1
                self.stats.requests_failed += 1
                return await send_error(
                    send, error, await self._declared_too_large(scope, receive, error, cors)
                )
            return await self._quart(scope, _replay(body, receive), send, cors)
        methods, params = found
        stats = self.stats
        stats.requests_total += 1
        try:
            self._admit(scope, method, path)
            handler = methods.get(method)
            if method == "OPTIONS" and handler is None:  # what Quart answers on its own routes
                allowed = ", ".join((*methods, "OPTIONS")).encode()
                headers = [*cors, (b"allow", allowed), (b"content-length", b"0")]
                await send({"type": "http.response.start", "status": 204, "headers": headers})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                stats.requests_ok += 1
                return
            if handler is None:  # Allow names OPTIONS too, as Quart's 405s do
                allow = ", ".join((*methods, *(() if "OPTIONS" in methods else ("OPTIONS",))))
                cors = [*cors, (b"allow", allow.encode())]
                raise codes.Refused(codes.METHOD_NOT_ALLOWED, f"{path} takes {allow}")
            await handler(self, scope, receive, send, params)
        except codes.Refused as error:
            stats.requests_failed += 1
            await send_error(send, error, await self._declared_too_large(scope, receive, error, cors))
        except Exception:
            stats.requests_failed += 1
            log.exception("unhandled error in %s %s", method, path)
            with contextlib.suppress(Exception):  # unless the response has begun
                await send_error(send, codes.Refused(codes.INTERNAL, "internal server error"), cors)
        else:
            stats.requests_ok += 1

    async def _declared_too_large(
        self, scope: Scope, receive: Receive, error: codes.Refused, headers: Headers
    ) -> Headers:
        """The headers of a refusal; for the 413 of a body declared too large (nothing of it
        read yet), after reading and dropping it (:meth:`linger`), with ``Connection:
        close`` when it did not all come."""
        if not isinstance(error, BodyTooLarge):
            return headers
        if error.unread:
            error.closing = not await self.linger(scope, receive)
            error.unread = False
        return [*headers, (b"connection", b"close")] if error.closing else headers

    def _admit(self, scope: Scope, method: str, path: str) -> None:
        """401 unless the request presents a valid key (where one is needed); then who it is;
        then 413 for a body declared larger than ``MAX_BODY_BYTES``, on every route."""
        caller = EVERYONE
        if self.keys.enabled:
            caller = self.keys.caller(method, path, header(scope, b"authorization") or "", self._token(scope))
        scope[CALLER] = caller
        scope[CLIENT] = self.limits.identify(scope, caller)
        length = header(scope, b"content-length")
        limit = self.engine.settings.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(limit, unread=True)
        raw_path = scope.get("raw_path")
        if raw_path and b"%" in raw_path and not jsontext.is_utf8(unquote_to_bytes(raw_path)):
            # (The server decodes such a path with U+FFFD in place of each bad byte: two
            # different paths would name one session, stream or Durable Stream.)
            raise codes.Refused(
                codes.INVALID_REQUEST, "the path is not UTF-8 once percent-decoded (RFC 3986 §2.5)"
            )

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole request body; 413 past ``MAX_BODY_BYTES`` (declared or received), 408
        when it has not all arrived within ``BODY_TIMEOUT`` seconds.  Before a 413 the rest
        of the body is read and dropped (:meth:`linger`)."""
        settings = self.engine.settings
        deadline = asyncio.get_running_loop().time() + settings.body_timeout
        self.bodies_pending += 1
        try:
            async with asyncio.timeout_at(deadline):
                return await read_body(receive, settings.max_body_bytes)
        except TimeoutError:
            raise codes.Refused(
                codes.BODY_TIMEOUT,
                f"the request body did not arrive within {settings.body_timeout:g} s (BODY_TIMEOUT)",
            ) from None
        except BodyTooLarge as error:
            if error.unread:
                error.closing = not await self.linger(scope, receive, deadline)
                error.unread = False
            raise
        finally:
            self.bodies_pending -= 1

    async def linger(self, scope: Scope, receive: Receive, deadline: float | None = None) -> bool:
        """Read and drop a refused body (at most 4 times ``MAX_BODY_BYTES``, 64 MiB at least,
        within ``BODY_TIMEOUT``) before its 413 is sent: True when it all came, so the
        client reads the 413 and the connection may stay open; False when the server closes
        it (a body declared larger than that is not read at all)."""
        settings = self.engine.settings
        most = max(4 * settings.max_body_bytes, DRAIN_MIN)
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > most:
            return False
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + settings.body_timeout
        return await discard_body(receive, most, deadline)

    async def request_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole request body, as the edge's routes read it (413 past ``MAX_BODY_BYTES``,
        408 past ``BODY_TIMEOUT``): for the routes of other modules (``/v1/stream/``)."""
        return await self._body(scope, receive)

    @staticmethod
    def _token(scope: Scope) -> str:
        return query(scope).get("access_token", "") if scope.get("query_string") else ""

    async def _quart(self, scope: Scope, receive: Receive, send: Send, cors: Headers) -> None:
        """Any other route: the Quart app, its answer counted (and given CORS headers)."""
        stats = self.stats

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                stats.requests_total += 1
                if message["status"] >= 400:
                    stats.requests_failed += 1
                else:
                    stats.requests_ok += 1
                if cors:
                    message = {**message, "headers": [*message.get("headers", ()), *cors]}
            await send(message)

        await self.app(scope, receive, counted)

    # The chat routes -------------------------------------------------------------------------

    async def chat(self, scope: Scope, receive: Receive, send: Send, params: dict[str, str]) -> None:
        """``POST /chat``: 202 with the stream to read (for EventSource clients)."""
        engine = self.engine
        raw = await self._body(scope, receive)
        accepted = await start_generation(engine, self.limits, raw, scope[CLIENT], scope[CALLER])
        await self._accepted(scope, send, accepted)

    async def _accepted(self, scope: Scope, send: Send, accepted: Accepted) -> None:
        """202 with the stream of the answer (``queued``: it starts after the running one)."""
        stream_id = accepted.stream_id
        answer: dict[str, object] = {
            "session_id": accepted.session_id,
            "stream_id": stream_id,
            "events_url": events_url(stream_id),
            "durable_url": durable_url(stream_id),
        }
        if accepted.queued:
            answer["queued"] = True
        body = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send(
            {"type": "http.response.start", "status": 202, "headers": headers + self.cors.headers(scope)}
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def chat_stream(self, scope: Scope, receive: Receive, send: Send, params: dict[str, str]) -> None:
        """``POST /chat/stream``: start a generation and answer with its stream."""
        engine = self.engine
        raw = await self._body(scope, receive)
        client: Client = scope[CLIENT]
        slot = self.limits.slot(client)
        accepted = await start_generation(engine, self.limits, raw, client, scope[CALLER], slot)
        info = StreamInfo(accepted.stream_id, accepted.session_id, False, 0, owner=scope[CALLER].owner)
        await self._respond(scope, receive, send, info, 0, slot)

    async def regenerate(self, scope: Scope, receive: Receive, send: Send, params: dict[str, str]) -> None:
        """``POST /sessions/{id}/regenerate``: the last answer again, as ``POST /chat`` (202
        with the stream) or, with ``?stream=true``, as ``POST /chat/stream`` (the stream)."""
        await self._body(scope, receive)  # any body is ignored
        given = parse_qs((scope.get("query_string") or b"").decode("latin-1"), keep_blank_values=True)
        values = given.get("stream", ["false"])
        if len(values) > 1:
            raise codes.Refused(codes.INVALID_REQUEST, "query parameter 'stream' is given more than once")
        raw = values[0]
        if raw not in ("true", "false", "1", "0"):
            raise codes.Refused(
                codes.INVALID_REQUEST, f"query parameter 'stream' must be true or false, not {shown(raw)}"
            )
        client: Client = scope[CLIENT]
        streaming = raw in ("true", "1")
        slot = self.limits.slot(client) if streaming else NO_SLOT
        accepted = await start_regeneration(
            self.engine, self.limits, params["session_id"], client, scope[CALLER], slot
        )
        if not streaming:
            return await self._accepted(scope, send, accepted)
        info = StreamInfo(accepted.stream_id, accepted.session_id, False, 0, owner=scope[CALLER].owner)
        await self._respond(scope, receive, send, info, 0, slot)

    async def session_events(
        self, scope: Scope, receive: Receive, send: Send, params: dict[str, str]
    ) -> None:
        """``GET /sessions/{id}/events``: the session stream, after ``Last-Event-ID`` (else
        from the turn being generated, or the next), until the session is deleted."""
        engine = self.engine
        session_id = params["session_id"]
        await self._body(scope, receive)
        after = self._last_event_id(scope)
        session = await engine.store.get_session(session_id)
        if session is None or not scope[CALLER].sees(session.owner):
            raise codes.SessionNotFound(session_id)
        if after is not None and (problem := await engine.sessions.check(session_id, after)) is not None:
            raise codes.Refused(codes.INVALID_LAST_EVENT_ID, problem)
        if scope["method"] == "HEAD":
            return await self._head(scope, send)
        start = 0
        if after is None:
            # Where a reader without an id starts is fixed before its response begins: a
            # message its client sends once the response is there is in it.  (Looked at
            # after, under load, a whole turn could start and end first, and be skipped.)
            present = await engine.sessions.present(session_id)
            if present is None:
                raise codes.SessionNotFound(session_id)
            start = present
        slot = self.limits.slot(scope[CLIENT])
        slot.acquire()  # 429 past MAX_STREAMS_PER_CLIENT
        raw_send = scope.get(RAW_SEND, send)  # the server's own send: the direct socket path
        await self._respond(
            scope,
            receive,
            send,
            None,
            0,
            slot,
            lambda: engine.session_stream(raw_send, session_id, after, start),
        )

    async def _head(self, scope: Scope, send: Send) -> None:
        """``HEAD`` on a stream read: the answer ``GET`` would give, without its body."""
        headers = SSE_HEADERS + self.cors.headers(scope)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    def _last_event_id(scope: Scope) -> int | None:
        """The ``Last-Event-ID`` header (or ``last_event_id`` query parameter); 400 when malformed."""
        raw = header(scope, b"last-event-id")
        if raw is None:
            raw = query(scope).get("last_event_id")
        try:
            return parse_last_event_id(raw)
        except ValueError:
            assert raw is not None
            raise codes.Refused(
                codes.INVALID_LAST_EVENT_ID,
                f"malformed Last-Event-ID: not an event id of this server: {shown(raw.strip())}",
            ) from None

    async def stream_events(self, scope: Scope, receive: Receive, send: Send, params: dict[str, str]) -> None:
        """``GET /streams/{id}/events``: replay after ``Last-Event-ID``, then live; 204 when
        nothing follows."""
        engine = self.engine
        stream_id = params["stream_id"]
        await self._body(scope, receive)  # a GET's (empty) body
        after = self._last_event_id(scope) or 0
        info = await engine.store.get_stream(stream_id)
        if info is None or not scope[CALLER].sees(info.owner):
            raise codes.StreamNotFound(stream_id)
        if info.finished and after >= info.last_id:
            # Nothing follows: 204 tells an EventSource to stop reconnecting.
            await send({"type": "http.response.start", "status": 204, "headers": self.cors.headers(scope)})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if scope["method"] == "HEAD":
            return await self._head(scope, send)
        slot = self.limits.slot(scope[CLIENT])
        slot.acquire()  # 429 past MAX_STREAMS_PER_CLIENT
        await self._respond(scope, receive, send, info, after, slot)

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        info: StreamInfo | None,
        after: int,
        slot: StreamSlot = NO_SLOT,
        body: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """The SSE response of the stream ``info`` after ``after`` (or whatever ``body``
        writes); a disconnect cancels it at once, wherever it waits.

        ``slot`` (the client's place under MAX_STREAMS_PER_CLIENT) is released when it ends.
        """
        task = asyncio.current_task()
        assert task is not None
        # After the request body, the next ASGI message can only be the disconnect.
        gone = _Disconnect(task)
        watcher = watch_receive(receive, gone)
        headers = SSE_HEADERS + self.cors.headers(scope) if self.cors.enabled else SSE_HEADERS
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if body is not None:
                await body()
            else:
                assert info is not None
                # The server's own send, for the engine's direct socket path (quart_sse.http.access).
                await self.engine.stream(scope.get(RAW_SEND, send), info, after)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone.happened:
                raise
        finally:
            slot.release()
            gone.task = None
            watcher.cancel()


def shown(value: str) -> str:
    """A value a client sent (a header decoded as Latin-1, as ASGI gives it; a query
    parameter), quoted for an error message: at most 40 characters, everything outside
    printable ASCII escaped (``'\\xef\\xbc\\x91'``: the bytes a header carried)."""
    return ascii(value[:40])


class _Disconnect:
    """Cancels a response's task when its client goes away (one small object per response,
    called by :func:`~quart_sse.engine.transport.watch_receive`); ``happened`` tells the
    task's ``CancelledError`` from a disconnect apart from any other."""

    __slots__ = ("happened", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task: asyncio.Task[Any] | None = task
        self.happened = False

    def __call__(self, watch: asyncio.Future[Any]) -> None:
        if self.task is not None and not watch.cancelled():
            self.happened = True
            self.task.cancel()


Edge.ROUTES = (
    (re.compile(r"/chat"), {"POST": Edge.chat}),
    (re.compile(r"/chat/stream"), {"POST": Edge.chat_stream}),
    (
        re.compile(r"/streams/(?P<stream_id>[^/]+)/events"),
        {"GET": Edge.stream_events, "HEAD": Edge.stream_events},
    ),
    (
        re.compile(r"/sessions/(?P<session_id>[^/]+)/events"),
        {"GET": Edge.session_events, "HEAD": Edge.session_events},
    ),
    (re.compile(r"/sessions/(?P<session_id>[^/]+)/regenerate"), {"POST": Edge.regenerate}),
    (re.compile(r"/v1/stream/(?P<path>.+)"), dict.fromkeys(durable.METHODS, durable.handle)),
)

PATHS = (
    "POST /chat",
    "POST /chat/stream",
    "GET /streams/<stream_id>/events",
    "GET /sessions/<session_id>/events",
    "POST /sessions/<session_id>/regenerate",
    "GET, HEAD, PUT, POST, DELETE /v1/stream/<path>",
)
"""The edge's routes, as Quart lists its own (for GET /)."""

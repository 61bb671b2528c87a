"""The access log and the request figures: one ASGI layer outside the edge, one step per request.

Every HTTP request the server hands the app passes :class:`Access` once (``create_app``
puts it outside ``app.asgi_app``, the edge: :class:`quart_sse.app.App`).  It times the
request (arrival to the end of the response; a stream's response lasts as long as the
stream), reads the status from the response's start, and when the request is over counts it in
:meth:`quart_sse.metrics.Stats.request` (``quart_sse_http_requests_total`` and
``quart_sse_http_request_duration_seconds`` on /metrics) and, when asked, logs one line at
INFO on the ``quart_sse.access`` logger: method, route template, status, duration in ms,
client address, error code and stream id when there are any.  Never the query string, the
headers, or a body: no message text, no key (``Authorization``, ``access_token``).

Who knows what: the route template is the Quart rule (noted by a ``before_request`` hook,
:func:`note_route`) or, for the edge's own routes and requests refused before Quart routes
them, found here from the same tables (:class:`Routes`); the error code is noted by the
one error renderer (:func:`note_error`, from :func:`quart_sse.http.errors.render`); the
stream id by the engine's start callback (:func:`note_stream`) or the route's
``stream_id``.  They meet in a small per-request record held in a context variable, since
the renderer and the engine callback see no ASGI scope, and Quart runs its handlers in
tasks of their own (which copy the context, and so share the record).

Why the server's own ``send`` goes into the scope (:data:`RAW_SEND`): observing the status
means wrapping ``send``, and the engine's direct socket path
(:mod:`quart_sse.engine.transport`) recognises Hypercorn's own ``send`` only; the edge
gives the engine that one, so streams keep their fast path and this layer sees only a
stream's first and last messages.

What it costs (measured in-process around an empty app): about 3 us per request for the
figures, about 11 us with an access line (a log record; writing it is the handler's cost).

Why not Hypercorn's access log: it sees raw paths (ids) and query strings (``access_token``),
knows no route templates or error codes, and its format is not JSON.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map, MapAdapter, RoutingException

from quart_sse import codes
from quart_sse.http.scope import ASGIApp, Receive, Scope, Send
from quart_sse.metrics import METHODS, Stats

log = logging.getLogger("quart_sse.access")

RAW_SEND = "quart_sse.send"
"""The scope key under which this layer leaves the server's own ``send`` (see the module)."""
CLIENT = "quart_sse.client"
"""Where the edge leaves the identified client (:data:`quart_sse.http.edge.CLIENT`)."""
UNMATCHED = "unmatched"
"""The route label of a request no route matches (any 404 of an unknown path)."""
GONE = 499
"""The status counted for a request whose client left before any response (nginx's figure)."""

_STREAM_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
"""A stream id taken from a path is logged only when it looks like one."""


class Exchange:
    """What the layers inside learn about one request, for its figures and its log line."""

    __slots__ = ("code", "route", "stream_id")

    def __init__(self) -> None:
        self.route: str | None = None
        self.code = ""
        self.stream_id: str | None = None


_EXCHANGE: ContextVar[Exchange | None] = ContextVar("quart_sse_exchange", default=None)

_RULES: dict[str, str] = {}  # Quart rule -> template, one entry per rule of the app
_PARAM = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def template(rule: str) -> str:
    """A Quart rule as a route template: ``/sessions/<session_id>`` -> ``/sessions/{session_id}``."""
    found = _RULES.get(rule)
    if found is None:
        found = _RULES[rule] = _PARAM.sub(r"{\1}", rule)
    return found


def note_route(rule: str, params: Mapping[str, Any] | None = None) -> None:
    """The current request matched the Quart rule ``rule`` (with its ``params``)."""
    exchange = _EXCHANGE.get()
    if exchange is not None:
        exchange.route = template(rule)
        if params and "stream_id" in params and exchange.stream_id is None:
            exchange.stream_id = str(params["stream_id"])


def note_error(code: str) -> None:
    """The current request is answered with the error ``code`` (the JSON body's)."""
    exchange = _EXCHANGE.get()
    if exchange is not None:
        exchange.code = code


def note_stream(stream_id: str) -> None:
    """The current request started the generation of stream ``stream_id``."""
    exchange = _EXCHANGE.get()
    if exchange is not None:
        exchange.stream_id = stream_id


class Routes:
    """The route template of a path, from the edge's patterns, then the Quart app's rules."""

    def __init__(self, patterns: Iterable[re.Pattern[str]], url_map: Map) -> None:
        self.patterns = [
            (pattern, re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern)) for pattern in patterns
        ]
        self.url_map = url_map
        self._adapter: MapAdapter | None = None

    def find(self, method: str, path: str) -> tuple[str, Mapping[str, Any]]:
        """(template, parameters); (``unmatched``, {}) when no route has ``path``."""
        for pattern, name in self.patterns:
            match = pattern.fullmatch(path)
            if match is not None:
                return name, match.groupdict()
        if self._adapter is None:
            self._adapter = self.url_map.bind("localhost")
        try:
            try:
                rule, params = self._adapter.match(path, method, return_rule=True)
            except MethodNotAllowed as exc:  # the path has a route, for other methods
                other = next(iter(exc.valid_methods or ()), None)
                if other is None:
                    return UNMATCHED, {}
                rule, params = self._adapter.match(path, other, return_rule=True)
        except (HTTPException, RoutingException):
            return UNMATCHED, {}
        return template(rule.rule), params


class Access:
    """ASGI: figures and an access line per HTTP request (see the module)."""

    def __init__(self, app: ASGIApp, stats: Stats, routes: Routes, *, log_requests: bool) -> None:
        self.app = app
        self.stats = stats
        self.routes = routes
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        exchange = Exchange()
        token = _EXCHANGE.set(exchange)
        status = 0

        async def observed(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        scope[RAW_SEND] = send
        try:
            await self.app(scope, receive, observed)
        except asyncio.CancelledError:
            status = status or GONE
            raise
        except Exception:
            if not status:  # the server answers 500
                status, exchange.code = 500, codes.INTERNAL
            raise
        finally:
            # Out of the scope again: Hypercorn's ``send`` is a method of the request's
            # stream, which holds the scope; left in, every request would leave a reference
            # cycle for the garbage collector (its full passes paused every stream for
            # hundreds of ms at 2,000 streams: docs/PERFORMANCE.md).
            del scope[RAW_SEND]
            _EXCHANGE.reset(token)
            self._done(scope, exchange, status or GONE, time.perf_counter() - started)

    def _done(self, scope: Scope, exchange: Exchange, status: int, seconds: float) -> None:
        method = scope["method"]
        if method not in METHODS:
            method = "other"
        route = exchange.route
        if route is None:
            route, params = self.routes.find(method, scope["path"])
            stream_id = params.get("stream_id")
            if exchange.stream_id is None and isinstance(stream_id, str):
                exchange.stream_id = stream_id
        code = exchange.code if status >= 400 else ""
        self.stats.request(route, method, status, code, seconds)
        if self.log_requests and log.isEnabledFor(logging.INFO):
            self._log(scope, exchange, method, route, status, code, seconds)

    @staticmethod
    def _log(
        scope: Scope, exchange: Exchange, method: str, route: str, status: int, code: str, seconds: float
    ) -> None:
        client = scope.get(CLIENT)
        if client is not None:
            address = client.address
        else:
            peer = scope.get("client")
            address = str(peer[0]) if peer else "?"
        ms = round(seconds * 1000, 1)
        fields: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": ms,
            "client": address,
        }
        text = f"{method} {route} {status} {ms} ms {address}"
        if code:
            fields["code"] = code
            text += f" {code}"
        stream_id = exchange.stream_id
        if stream_id is not None and _STREAM_ID.fullmatch(stream_id):
            fields["stream_id"] = stream_id
            text += f" stream {stream_id}"
        log.info("%s", text, extra=fields)

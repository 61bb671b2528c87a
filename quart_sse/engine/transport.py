"""How an SSE response body reaches its client: one small writer interface, two ways.

:class:`ASGITransport` sends every body message through ASGI, as any server takes it.
:class:`DirectTransport` writes straight to the socket under Hypercorn's HTTP/1.1
connection: every ASGI body message costs Hypercorn's whole per-message path (the ASGI
event, ``HTTPStream.app_send``, h11's state machine, a lock, ``transport.write`` and a
``drain``), and for a stream that path carries nothing but bytes that h11 frames as
``<hex length>\\r\\n<data>\\r\\n``; once the response head is out, a stream's frames can go
to the transport directly, framed the same way, in the same order (about twice the
throughput: README, Performance).

:func:`open_transport` picks the direct way only when every link is what it expects
(Hypercorn's asyncio worker, HTTP/1.1, h11 writing chunked) and the installed Hypercorn and
h11 are the versions it is tested with (:data:`TESTED`); otherwise ASGI.  Nothing else in
the engine sees Hypercorn.  ``tests/e2e/test_direct.py`` checks the direct way is taken.

A direct write is refused (returns False) when the socket is closing or holds more than
``limit`` unsent bytes: the caller then sends through ASGI, whose ``drain`` waits for the
reader, so backpressure works as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]

HIGH_WATER = 64 * 1024
"""Unsent bytes above which a stream waits for its reader (asyncio's default high water)."""

TESTED = {"hypercorn": ("0.17", "0.18"), "h11": ("0.14", "0.15", "0.16")}
"""Release series of the libraries whose private layout the direct way relies on."""

try:
    from h11._writers import ChunkedWriter
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.http_stream import HTTPStream
except ImportError:  # pragma: no cover - another server, or another Hypercorn layout
    HTTPStream = H11Protocol = TCPServer = ChunkedWriter = None  # type: ignore[assignment, misc]


def direct_support() -> tuple[bool, str]:
    """Whether direct socket writes can be used here, and a line saying why (for the start log)."""
    found = []
    for name, series in TESTED.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            return False, f"{name} is not installed"
        if not installed.startswith(tuple(s + "." for s in series)) and installed not in series:
            return False, f"{name} {installed} is not a tested release ({', '.join(series)})"
        found.append(f"{name} {installed}")
    if HTTPStream is None:
        return False, "Hypercorn's HTTP/1.1 classes are not where they were"
    return True, ", ".join(found)


DIRECT, DIRECT_REASON = direct_support()


def release_connections() -> bool:
    """Have each Hypercorn connection let go of its protocol when it ends (once per process;
    only where :data:`DIRECT` holds: the same tested releases).  True if installed.

    Hypercorn's asyncio ``TCPServer`` holds its ``ProtocolWrapper``, which holds the
    server's own ``protocol_send``: a reference cycle per connection, with the connection's
    H11 protocol, streams, reader, writer and task group inside it, that only the cyclic
    garbage collector frees.  At thousands of connections those collections are the paced
    streams' worst pauses (docs/PERFORMANCE.md, "Garbage collection at b2000").  When
    ``TCPServer.run`` returns, its task group has awaited every task of the connection and
    the socket is closed: nothing calls the protocol again, so dropping the reference lets
    reference counting free the whole connection at once.
    """
    if not DIRECT:
        return False
    run = TCPServer.run
    if getattr(run, "wrapped", None) is not None:
        return True

    async def run_then_release(self: Any) -> None:
        try:
            await run(self)
        finally:
            vars(self).pop("protocol", None)
            vars(self).pop("_task_group", None)

    run_then_release.wrapped = run  # type: ignore[attr-defined]
    TCPServer.run = run_then_release  # type: ignore[method-assign]
    return True


class ASGITransport:
    """A response body through ASGI: ``send`` waits while the client applies backpressure."""

    __slots__ = ("_send",)
    direct = False

    def __init__(self, send: ASGISend) -> None:
        self._send = send

    def write(self, data: bytes) -> bool:
        """Write without waiting, if this transport can; False when the caller must ``send``."""
        return False

    async def send(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    def stalled_for(self, now: float) -> float:
        """Seconds the unsent bytes have not shrunk (0 when that cannot be told)."""
        return 0.0

    def abort(self) -> None:
        """Drop the connection at once, where this transport can (the caller stops writing)."""


class DirectTransport(ASGITransport):
    """A response body written to Hypercorn's socket transport, chunked as h11 would."""

    __slots__ = ("limit", "stalled_at", "stalled_since", "transport")
    direct = True

    def __init__(self, send: ASGISend, transport: asyncio.WriteTransport, limit: int) -> None:
        super().__init__(send)
        self.transport = transport
        self.limit = limit
        self.stalled_since = 0.0  # when unsent bytes stopped shrinking (0: they did not)
        self.stalled_at = 0  # how many there were then

    def write(self, data: bytes) -> bool:
        if not data:
            return True  # a chunk of length 0 would end the body (RFC 9112, 7.1)
        transport = self.transport
        if transport.is_closing() or transport.get_write_buffer_size() > self.limit:
            return False
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return True

    def stalled_for(self, now: float) -> float:
        unsent = self.transport.get_write_buffer_size()
        if unsent == 0 or unsent < self.stalled_at or self.stalled_since == 0.0:
            self.stalled_since = now if unsent else 0.0
            self.stalled_at = unsent
            return 0.0
        self.stalled_at = unsent
        return now - self.stalled_since

    def abort(self) -> None:
        """A reset: closing politely would wait for a reader that does not read."""
        self.transport.abort()


def open_transport(
    send: ASGISend, send_timeout: float | None = None, limit: int = HIGH_WATER
) -> ASGITransport:
    """The transport behind ``send``, called once the response head went out.

    With the direct way and ``send_timeout``, the socket also gets ``TCP_USER_TIMEOUT``: a
    peer that vanished without a FIN or a reset (a laptop leaving the Wi-Fi) leaves the
    pings it is sent unacknowledged, and the kernel resets the connection after that long,
    even though the pings themselves fit in the socket's buffer.
    """
    transport = _hypercorn_socket(send) if DIRECT else None
    if transport is None:
        return ASGITransport(send)
    if send_timeout is not None:
        _set_user_timeout(transport, send_timeout)
    return DirectTransport(send, transport, limit)


def _hypercorn_socket(send: Any) -> asyncio.WriteTransport | None:
    stream = getattr(send, "__self__", None)
    if type(stream) is not HTTPStream:
        return None
    protocol = getattr(stream.send, "__self__", None)
    if type(protocol) is not H11Protocol:
        return None
    server = getattr(protocol.send, "__self__", None)
    if type(server) is not TCPServer:
        return None
    if not isinstance(getattr(protocol.connection, "_writer", None), ChunkedWriter):
        return None
    transport = server.writer.transport
    if not isinstance(transport, asyncio.WriteTransport) or server.send_lock.locked():
        return None
    return transport


def _set_user_timeout(transport: asyncio.WriteTransport, seconds: float) -> None:
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux
    if sock is None or option is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds * 1000)))


def watch_receive(
    receive: ASGIReceive, on_message: Callable[[asyncio.Future[Any]], None]
) -> asyncio.Future[Any]:
    """Call ``on_message(future)`` when the next ASGI message arrives (after a request's
    body, only ``http.disconnect`` can) or when the future returned is cancelled (to stop
    watching; ``future.cancelled()`` is then true).

    Hypercorn's ``receive`` is its per-request ``asyncio.Queue``'s ``get``: then the watch
    is one future among the queue's getters, woken by the queue's next ``put`` exactly as
    ``get()`` would be, without a task and a coroutine per open response (about 0.8 KB
    each at 10,000 open streams).  Any other ``receive`` gets a task that awaits it.
    """
    queue = getattr(receive, "__self__", None)
    getters = getattr(queue, "_getters", None)
    if (
        type(queue) is asyncio.Queue
        and getattr(receive, "__func__", None) is asyncio.Queue.get
        and type(getters) is collections.deque
    ):
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(on_message)
        if queue.empty():
            getters.append(waiter)  # put_nowait wakes the first getter not yet done
        else:
            waiter.set_result(None)  # the message is already there
        return waiter
    task = asyncio.ensure_future(receive())
    task.add_done_callback(on_message)
    return task

"""Writing SSE frames straight to the socket under Hypercorn's HTTP/1.1 connection.

Every body message sent through ASGI costs Hypercorn's whole per-message path: the ASGI
event, ``HTTPStream.app_send``, h11's state machine, a lock, ``transport.write`` and a
``drain``.  For a stream that path carries nothing but bytes that h11 frames as
``<hex length>\\r\\n<data>\\r\\n``, so once the response head is out, a stream's frames can
be written to the transport directly, framed the same way, in the same order.

:func:`direct_writer` finds the transport from the ``send`` callable Hypercorn hands to
the app, and only when every link is what it expects (Hypercorn's asyncio worker, HTTP/1.1,
h11 writing chunked); otherwise it returns None and the stream goes through ASGI as usual.
A direct write is refused (returns False) when the transport is closing or holds more than
``limit`` unsent bytes: the caller then sends through ASGI, whose ``drain`` waits for the
reader, so backpressure works as before.  ``tests/e2e/test_direct.py`` checks that the
installed Hypercorn takes this path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

try:
    from h11._writers import ChunkedWriter
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.http_stream import HTTPStream
except ImportError:  # pragma: no cover - another server, or another Hypercorn layout
    HTTPStream = H11Protocol = TCPServer = ChunkedWriter = None  # type: ignore[assignment, misc]

HIGH_WATER = 64 * 1024
"""Unsent bytes above which a stream waits for its reader (asyncio's default high water)."""


class DirectWrite:
    """``write(data) -> bool``: one chunk of the response body, straight to the transport."""

    __slots__ = ("limit", "stalled_at", "stalled_since", "transport", "writes")

    def __init__(self, transport: asyncio.WriteTransport, limit: int) -> None:
        self.transport = transport
        self.limit = limit
        self.writes = 0
        self.stalled_since = 0.0  # when unsent bytes stopped shrinking (0: they did not)
        self.stalled_at = 0  # how many there were then

    def stalled_for(self, now: float) -> float:
        """Seconds the unsent bytes have not shrunk (0 when nothing waits or they shrink)."""
        unsent = self.transport.get_write_buffer_size()
        if unsent == 0 or unsent < self.stalled_at or self.stalled_since == 0.0:
            self.stalled_since = now if unsent else 0.0
            self.stalled_at = unsent
            return 0.0
        self.stalled_at = unsent
        return now - self.stalled_since

    def abort(self) -> None:
        """Drop the connection at once (a reset): closing politely would wait for the reader."""
        self.transport.abort()

    def __call__(self, data: bytes) -> bool:
        transport = self.transport
        if transport.is_closing() or transport.get_write_buffer_size() > self.limit:
            return False
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        self.writes += 1
        return True


def direct_writer(
    send: Any, limit: int = HIGH_WATER, send_timeout: float | None = None
) -> DirectWrite | None:
    """The direct writer behind ``send``, after the response head went out; else None.

    With ``send_timeout``, the socket also gets ``TCP_USER_TIMEOUT``: a peer that vanished
    without a FIN or a reset (a laptop leaving the Wi-Fi) leaves the pings it is sent
    unacknowledged, and the kernel resets the connection after that long, even though the
    pings themselves fit in the socket's buffer.
    """
    if HTTPStream is None:
        return None
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
    if send_timeout is not None:
        _set_user_timeout(transport, send_timeout)
    return DirectWrite(transport, limit)


def _set_user_timeout(transport: asyncio.WriteTransport, seconds: float) -> None:
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux
    if sock is None or option is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds * 1000)))

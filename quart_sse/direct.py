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

    __slots__ = ("limit", "transport", "writes")

    def __init__(self, transport: asyncio.WriteTransport, limit: int) -> None:
        self.transport = transport
        self.limit = limit
        self.writes = 0

    def __call__(self, data: bytes) -> bool:
        transport = self.transport
        if transport.is_closing() or transport.get_write_buffer_size() > self.limit:
            return False
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        self.writes += 1
        return True


def direct_writer(send: Any, limit: int = HIGH_WATER) -> DirectWrite | None:
    """The direct writer behind ``send``, after the response head went out; else None."""
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
    return DirectWrite(transport, limit)

"""A small asyncio TCP proxy that can break connections, for tests of reconnection.

It listens on a free loopback port and forwards every connection to ``upstream``.  A test
can break connections in three ways (``how``):

- ``"close"``: an orderly close (FIN) to the client, and the upstream side closed;
- ``"reset"``: a TCP reset (RST) to the client (``SO_LINGER`` 0), upstream closed;
- ``"stall"``: stop forwarding server→client bytes but keep both sockets open (a dead link
  that only a read timeout can notice); the connection ends when the client gives up.

and at two moments:

- after a byte count: :meth:`CutProxy.cut_after` arms the next ``connections`` accepted
  connections to forward exactly ``nbytes`` server→client bytes and then break (counting
  from the first byte of the HTTP response, headers included, so the same response is
  always cut at the same place);
- on demand: :meth:`CutProxy.cut_all` breaks every open connection now.

``on_cut`` (a plain callable) runs at each cut, before the client can react: a test may
stop the server there, so that reconnection finds nothing.  ``cuts`` counts cuts,
``accepted`` counts connections, and :meth:`wait_cut` waits for the next cut.  The proxy
runs in the test's event loop; run the program under test in a subprocess (or as a task).

    async with CutProxy(server.port) as proxy:
        proxy.cut_after(900, how="reset")
        ... point the client at proxy.url ...
        assert proxy.cuts == 1
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

How = Literal["close", "reset", "stall"]


@dataclass
class _Rule:
    nbytes: int
    how: How
    connections: int
    on_cut: Callable[[], object] | None


class _Connection:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.down = 0  # server -> client bytes forwarded
        self.up = 0  # client -> server bytes forwarded
        self.stalled = False
        self.done = asyncio.Event()

    def close(self, how: How) -> None:
        if how == "stall":
            self.stalled = True
            return
        if how == "reset":
            sock = self.client.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.client.transport.abort()
        else:
            self.client.close()
        self.upstream.close()
        self.done.set()


class CutProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``, breaking on request."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.accepted = 0
        self.cuts = 0
        self._rules: list[_Rule] = []
        self._open: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._cut_event = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> CutProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._open):
            conn.close("close")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> CutProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def cut_after(
        self,
        nbytes: int,
        *,
        how: How = "close",
        connections: int = 1,
        on_cut: Callable[[], object] | None = None,
    ) -> None:
        """Break each of the next ``connections`` connections after ``nbytes`` server→client bytes."""
        self._rules.append(_Rule(nbytes, how, connections, on_cut))

    def cut_all(self, how: How = "close") -> int:
        """Break every open connection now; the number broken."""
        conns = [c for c in self._open if not c.stalled]
        for conn in conns:
            self._cut(conn, how, None)
        return len(conns)

    async def wait_cut(self) -> None:
        """Wait until the next cut (returns at once if one happened since the last wait)."""
        await self._cut_event.wait()
        self._cut_event.clear()

    def _cut(self, conn: _Connection, how: How, on_cut: Callable[[], object] | None) -> None:
        self.cuts += 1
        if on_cut is not None:
            on_cut()
        conn.close(how)
        self._cut_event.set()

    def _next_rule(self) -> _Rule | None:
        if not self._rules:
            return None
        rule = self._rules[0]
        rule.connections -= 1
        if rule.connections <= 0:
            self._rules.pop(0)
        return rule

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        rule = self._next_rule()
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                _Connection(writer, writer).close("reset")  # nothing to forward to: refuse
                return
            conn = _Connection(writer, up_writer)
            self._open.add(conn)
            pumps = [
                asyncio.create_task(self._pump_up(reader, conn)),
                asyncio.create_task(self._pump_down(up_reader, conn, rule)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                self._open.discard(conn)
                if not conn.done.is_set():
                    conn.close("close")
        finally:
            self._tasks.discard(task)

    async def _pump_up(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if conn.done.is_set():
                    return
                conn.upstream.write(data)
                conn.up += len(data)
                await conn.upstream.drain()

    async def _pump_down(self, reader: asyncio.StreamReader, conn: _Connection, rule: _Rule | None) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if conn.done.is_set():
                    return
                if conn.stalled:
                    continue  # a dead link: swallow what the server sends
                if rule is not None and conn.down + len(data) >= rule.nbytes:
                    head = data[: rule.nbytes - conn.down]
                    if head:
                        conn.client.write(head)
                        conn.down += len(head)
                        await conn.client.drain()
                    self._cut(conn, rule.how, rule.on_cut)
                    if rule.how != "stall":
                        return
                    continue
                conn.client.write(data)
                conn.down += len(data)
                await conn.client.drain()

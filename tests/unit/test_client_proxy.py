"""tests.support.proxy.CutProxy in front of a tiny TCP server that writes on request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.proxy import CutProxy

PAYLOAD = bytes(range(256)) * 8  # 2048 bytes


@pytest.fixture(name="upstream")
async def _upstream() -> AsyncIterator[int]:
    """Answers each line it reads with PAYLOAD; closes when the client does."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():
                writer.write(PAYLOAD)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def read_all(reader: asyncio.StreamReader) -> tuple[bytes, type[BaseException] | None]:
    data = b""
    try:
        while chunk := await reader.read(65536):
            data += chunk
    except ConnectionError as exc:
        return data, type(exc)
    return data, None


async def test_forwards_both_ways(upstream):
    async with CutProxy(upstream) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"go\n")
        assert await reader.readexactly(len(PAYLOAD)) == PAYLOAD
        writer.write(b"again\n")
        assert await reader.readexactly(len(PAYLOAD)) == PAYLOAD
        writer.close()
        assert (proxy.accepted, proxy.cuts) == (1, 0)


async def test_cut_after_n_bytes_by_close(upstream):
    async with CutProxy(upstream) as proxy:
        proxy.cut_after(1000)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"go\n")
        assert await read_all(reader) == (PAYLOAD[:1000], None)  # exactly 1000 bytes, then EOF
        writer.close()
        await proxy.wait_cut()
        assert proxy.cuts == 1
        # the rule was for one connection: the next one is whole
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"go\n")
        assert await reader.readexactly(len(PAYLOAD)) == PAYLOAD
        writer.close()


async def test_cut_by_reset_and_on_cut(upstream):
    called: list[int] = []
    async with CutProxy(upstream) as proxy:
        proxy.cut_after(10, how="reset", on_cut=lambda: called.append(proxy.cuts))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"go\n")
        data, error = await read_all(reader)
        writer.close()
    assert error is ConnectionResetError
    assert len(data) <= 10
    assert called == [1]


async def test_stall_keeps_the_connection_open_and_silent(upstream):
    async with CutProxy(upstream) as proxy:
        proxy.cut_after(100, how="stall")
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"go\n")
        assert await reader.readexactly(100) == PAYLOAD[:100]
        await proxy.wait_cut()
        writer.write(b"more\n")  # the server answers, the proxy swallows it
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)
        assert not reader.at_eof()
        writer.close()


async def test_cut_all_on_demand(upstream):
    async with CutProxy(upstream) as proxy:
        conns = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(2)]
        for reader, writer in conns:
            writer.write(b"go\n")
            await reader.readexactly(len(PAYLOAD))
        assert proxy.cut_all() == 2
        for reader, writer in conns:
            assert await read_all(reader) == (b"", None)
            writer.close()


async def test_an_unreachable_upstream_is_a_reset():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with CutProxy(port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        data, error = await read_all(reader)
        writer.close()
    assert data == b""
    assert error is ConnectionResetError

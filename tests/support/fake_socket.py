"""A socket transport for unit tests of the engine's writers: records what is written,
and lets a test set how much is unsent, whether it is closing, and the socket behind it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any


class FakeSocket(asyncio.WriteTransport):
    def __init__(self, unsent: int = 0, sock: socket.socket | None = None) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.unsent = unsent
        self.closing = False
        self.aborted = False
        self.sock = sock

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default

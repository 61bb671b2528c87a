"""Session and stream ids: 128 random bits from the OS, as 32 hex digits.

A session id is a capability (whoever knows it can read the conversation), so ids come from
``os.urandom``; drawn 4 KiB at a time, since one ``uuid.uuid4()`` per id is a system call
and an object (about 5 % of the CPU at 2,000 new streams a second).
"""

from __future__ import annotations

import os
import socket

_BLOCK = 4096
_buffer = b""
_offset = _BLOCK


def new_id() -> str:
    global _buffer, _offset
    if _offset + 16 > len(_buffer):
        _buffer = os.urandom(_BLOCK)
        _offset = 0
    start = _offset
    _offset = start + 16
    return _buffer[start : start + 16].hex()


def _forget() -> None:
    """A forked child must not hand out the ids its parent has already drawn."""
    global _buffer, _offset
    _buffer, _offset = b"", _BLOCK


os.register_at_fork(after_in_child=_forget)


PROCESS_INSTANCE = f"{socket.gethostname()}-{os.getpid()}"
"""This process's instance id, as /health, /stats and /metrics report it."""

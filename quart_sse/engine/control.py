"""Cancels that reach a generation wherever it runs, and a stream's final state.

A generation runs on the instance that started it.  A cancel asked of another instance
(``POST /streams/{id}/cancel``, ``DELETE /sessions/{id}``, ``POST /sessions/{id}/clear``,
``if_busy=interrupt``) is published through the store (Redis pub/sub: every instance is
told, the one running the stream cancels it); the asking instance then waits on the
stream's log for its final event, so that it answers as on one instance: once the answer
is saved and the session free.  It asks again every :data:`ASK_EVERY` s while it waits (a
message is lost if it arrives between a queued answer's promotion and its start), and
gives up after ``cancel_timeout`` s; a dead owner's stream is closed meanwhile by the
reader's own lease check (``store.wait``).

A message queued behind a running answer (``if_busy=enqueue``) has no generation yet: its
cancel takes it out of the queue (one store step, on any instance).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from quart_sse import codes
from quart_sse.engine.generation import Generations
from quart_sse.models import StreamInfo
from quart_sse.sse import Event, SSEParser
from quart_sse.stores.base import Store

log = logging.getLogger("quart_sse.engine")

ASK_EVERY = 1.0
"""Seconds between two publications of the same cancel while the asker waits."""


@dataclass(frozen=True)
class CancelResult:
    """What a cancel did: ``cancelled`` (this request ended the generation, or took the
    queued message out), and ``status``: how the stream ended (``complete`` or the code of
    its final ``error`` event; None when its log no longer says)."""

    cancelled: bool
    status: str | None


class Control:
    """Cancels across instances (see the module); one per process."""

    def __init__(self, store: Store, generations: Generations, cancel_timeout: float) -> None:
        self.store = store
        self.generations = generations
        self.cancel_timeout = cancel_timeout
        store.listen(self._told)

    def _told(self, stream_id: str, code: str) -> None:
        """Another instance asks to cancel ``stream_id``: done here if it runs here."""
        generation = self.generations.running.get(stream_id)
        if generation is not None:
            generation.cancel(code, _MESSAGES.get(code, ""))

    async def cancel(self, info: StreamInfo, code: str = codes.CANCELLED) -> CancelResult:
        """End the stream ``info`` with ``code`` wherever it runs; returns once it has ended.

        Raises ``StoreUnavailable`` when it has not ended after ``cancel_timeout`` s.
        """
        stream_id = info.stream_id
        message = _MESSAGES.get(code, "")
        if stream_id in self.generations.running:
            cancelled = await self.generations.cancel(stream_id, code, message)
            return CancelResult(cancelled, await self._final_after_flush(stream_id, info.last_id))
        if info.finished:
            return CancelResult(False, await self.final_status(stream_id))
        if info.queued and await self.store.cancel_queued(stream_id, code):
            return CancelResult(True, code)
        ended = await self._ask_and_wait(stream_id, code, message, info.last_id)
        status = await self.final_status(stream_id)
        return CancelResult(ended and status == code, status)

    async def _ask_and_wait(self, stream_id: str, code: str, message: str, after: int) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cancel_timeout
        while True:
            generation = self.generations.running.get(stream_id)
            if generation is not None:  # a queued answer that started here meanwhile
                return await self.generations.cancel(stream_id, code, message)
            await self.store.publish_cancel(stream_id, code)
            left = deadline - loop.time()
            if left <= 0:
                raise codes.StoreUnavailable(
                    f"stream {stream_id} did not end within {self.cancel_timeout:g} s of the cancel; "
                    "its instance may be overloaded: try again"
                )
            tail = await self.store.wait(stream_id, after, min(ASK_EVERY, left))
            if tail is None or tail.finished:
                return True
            after += len(tail.frames)

    async def cancel_session(
        self, session_id: str, generating: str | None, queued: str | None, code: str = codes.CANCELLED
    ) -> None:
        """Before a session is cleared or deleted (or ``if_busy=interrupt``): its queued
        message out first (so that it does not take the slot), then its running generation,
        wherever it runs; returns when both have ended."""
        for stream_id in (queued, generating):
            if stream_id is None:
                continue
            info = await self.store.get_stream(stream_id)
            if info is not None and info.session_id == session_id and not info.finished:
                await self.cancel(info, code)

    async def _final_after_flush(self, stream_id: str, after: int) -> str | None:
        """The final state of a stream whose generation here has ended, once the log
        writer has put its final event into the store (a few ms)."""
        try:
            async with asyncio.timeout(self.cancel_timeout):
                while True:
                    tail = await self.store.wait(stream_id, after, ASK_EVERY)
                    if tail is None or tail.finished:
                        break
                    after += len(tail.frames)
        except TimeoutError:
            raise codes.StoreUnavailable(
                f"the end of stream {stream_id} was not stored within {self.cancel_timeout:g} s; try again"
            ) from None
        return await self.final_status(stream_id)

    async def final_status(self, stream_id: str) -> str | None:
        """How a finished stream ended: ``complete`` or its final ``error`` event's code."""
        info = await self.store.get_stream(stream_id)
        if info is None or not info.finished:
            return None
        if info.closed is not None:
            return info.closed
        tail = await self.store.read(stream_id, max(0, info.last_id - 1))
        if tail is None or not tail.frames:
            return None
        return _status_of(tail.frames[-1])


_MESSAGES = {codes.INTERRUPTED: "interrupted by a newer message (if_busy=interrupt)"}


def _status_of(frame: bytes) -> str | None:
    for item in SSEParser().feed(frame):
        if isinstance(item, Event):
            try:
                data = json.loads(item.data)
            except ValueError:
                return None
            if data.get("type") == "complete":
                return "complete"
            code = data.get("code")
            return code if isinstance(code, str) else None
    return None

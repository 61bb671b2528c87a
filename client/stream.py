"""One answer's events, surviving dropped connections.

:class:`AnswerStream` posts the message (``POST /chat/stream``) and yields the JSON ``data``
of each event.  When the connection drops before the final event (closed, reset, or silent
for ``idle_timeout`` seconds: the server writes ``: ping`` at least every
``HEARTBEAT_INTERVAL``, so silence means a dead link), it reconnects to the stream's
``events_url`` with ``Last-Event-ID``, after an exponential backoff with jitter, at most
``attempts`` times in a row.  Between events it yields :class:`Reconnecting` and
:class:`Resumed` notices for the UI.  Events whose id it has already seen are skipped, so
the text has nothing missing and nothing repeated.

A server unreachable when the message is posted (connection refused) is not retried: that
raises :class:`NotPosted` at once, so the client can say so in one line and keep the message
to send again (``retry_post=True`` retries it the same way instead: nothing reached the
server, so posting again cannot start a second generation).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from client.api import ChatAPI, RequestFailed, Unreachable, describe
from quart_sse.sse import Event, Retry, SSEParser

FINAL_TYPES = frozenset({"complete", "error"})


@dataclass(frozen=True)
class ReconnectPolicy:
    """How hard to try: ``attempts`` in a row, waiting ``base * 2**(n-1)`` (capped), jittered."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 10.0
    idle_timeout: float = 35.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Wait before attempt ``attempt`` (1, 2, …): between half and all of the capped exponential."""
        # 2.0 ** 1024 raises OverflowError (--reconnect-attempts 2000); a float product only becomes inf.
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 1000))
        return ceiling / 2 + rand() * ceiling / 2


@dataclass(frozen=True)
class Reconnecting:
    """About to wait ``delay`` seconds, then try again (attempt ``attempt`` of ``attempts``)."""

    attempt: int
    attempts: int
    delay: float
    reason: str
    started: bool  # False: the message is not posted yet (the server was unreachable)


@dataclass(frozen=True)
class Resumed:
    """Events flow again after ``attempts`` reconnection attempts."""

    attempts: int


Notice = Reconnecting | Resumed
Item = dict[str, Any] | Notice


class StreamLost(Exception):
    """The stream could not be read to its end; ``reason`` says why."""

    def __init__(self, reason: str, *, started: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.started = started  # False: the message never reached the server


class NotPosted(StreamLost):
    """The message could not be sent: no HTTP answer (``reason``), not retried."""

    def __init__(self, reason: str, *, host_unknown: bool = False) -> None:
        super().__init__(f"cannot reach the server: {reason}", started=False)
        self.unreachable = reason
        self.host_unknown = host_unknown


class _Dropped(Exception):
    pass


class AnswerStream:
    """The events of one generation; after iteration, its ids are left on the instance."""

    def __init__(
        self,
        api: ChatAPI,
        policy: ReconnectPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_post: bool = False,
    ) -> None:
        self.api = api
        self.retry_post = retry_post  # True: a server unreachable for the message is retried
        self.policy = policy
        self._sleep = sleep
        self.session_id: str | None = None
        self.stream_id: str | None = None
        self.events_url: str | None = None
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self.reconnects = 0

    async def events(self, message: str, session_id: str | None) -> AsyncIterator[Item]:
        """Post ``message`` and yield its events' data (and notices) up to the final event."""
        self.session_id = session_id
        attempt = 0
        while True:
            try:
                response = await self.api.open_chat(message, session_id)
                break
            except Unreachable as exc:
                attempt += 1
                if not self.retry_post:
                    raise NotPosted(str(exc), host_unknown=exc.host_unknown) from None
                if attempt > self.policy.attempts:
                    raise StreamLost(f"cannot reach the server: {exc}", started=False) from None
                delay = self.policy.delay(attempt)
                yield Reconnecting(attempt, self.policy.attempts, delay, str(exc), started=False)
                await self._sleep(delay)
        if attempt:
            yield Resumed(attempt)
        async for item in self._deliver(response):
            yield item

    async def follow(self, stream_id: str, session_id: str | None) -> AsyncIterator[Item]:
        """Yield the events of a generation already running (``stream_id``) from its first one,
        then live, resumed as :meth:`events` does; nothing when it has ended."""
        self.session_id = session_id
        self.stream_id = stream_id
        self.events_url = f"/streams/{stream_id}/events"
        try:
            response = await self.api.open_events(self.events_url, None)
        except Unreachable as exc:
            raise StreamLost(f"cannot reach the server: {exc}", started=True) from None
        if response.status == 204:
            response.close()
            return
        async for item in self._deliver(response):
            yield item

    async def _deliver(self, response: aiohttp.ClientResponse) -> AsyncIterator[Item]:
        """The events of an open stream response, reconnected with ``Last-Event-ID`` on a drop."""
        attempt = 0
        while True:
            try:
                async for data in self._read(response):
                    if attempt:
                        yield Resumed(attempt)
                        attempt = 0
                    yield data
                    if data.get("type") in FINAL_TYPES:
                        return
                reason = "the server closed the stream before its end"
            except (_Dropped, aiohttp.ClientError, OSError) as exc:
                reason = describe(exc) if not isinstance(exc, _Dropped) else str(exc)
            finally:
                response.close()
            if self.events_url is None:
                raise StreamLost(f"connection lost before the stream began ({reason})", started=True)
            while True:
                attempt += 1
                if attempt > self.policy.attempts:
                    raise StreamLost(
                        f"gave up after {self.policy.attempts} attempts ({reason})", started=True
                    )
                delay = self.policy.delay(attempt)
                self.reconnects += 1
                yield Reconnecting(attempt, self.policy.attempts, delay, reason, started=True)
                await self._sleep(delay)
                try:
                    response = await self.api.open_events(self.events_url, self.last_event_id)
                except Unreachable as exc:
                    reason = str(exc)
                    continue
                except RequestFailed as exc:
                    if 400 <= exc.status < 500 and exc.status != 429:
                        raise StreamLost(f"cannot resume the stream: {exc.message}", started=True) from None
                    reason = f"{exc.status} {exc.code}"
                    continue
                if response.status == 204:
                    response.close()
                    raise StreamLost("the stream ended but its final event was not received", started=True)
                break

    async def _read(self, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        parser = SSEParser()
        while True:
            try:
                chunk = await asyncio.wait_for(response.content.readany(), self.policy.idle_timeout)
            except TimeoutError:
                raise _Dropped(f"no data for {self.policy.idle_timeout:g} s") from None
            if not chunk:
                return
            for item in parser.feed(chunk):
                if isinstance(item, Retry):
                    self.retry_ms = item.ms
                elif isinstance(item, Event) and self._is_new(item.id):
                    data = item.json()
                    if not isinstance(data, dict):
                        continue
                    if data.get("type") == "session_info":
                        self.session_id = data.get("session_id", self.session_id)
                        self.stream_id = data.get("stream_id")
                        self.events_url = data.get("events_url") or f"/streams/{self.stream_id}/events"
                    yield data

    def _is_new(self, event_id: str | None) -> bool:
        """Note ``event_id`` as the last seen; False for an id at or before the last one."""
        if event_id is None:
            return True
        if self.last_event_id is not None and event_id.isdigit() and self.last_event_id.isdigit():
            if int(event_id) <= int(self.last_event_id):
                return False
        self.last_event_id = event_id
        return True

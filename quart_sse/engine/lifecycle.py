"""The engine of one process, and its lifecycle: start, drain, close.

:class:`Engine` wires the parts (store, model, log writer, hub, generations, delivery) and
owns the order in which they start and stop.  The entry point only wires signals to
:meth:`Engine.drain`; the app's shutdown calls :meth:`Engine.close`, which is idempotent and
also ends what a drain did not (tests, an app served without the entry point).

The drain, on the first SIGTERM or SIGINT, one log line per phase:

1. stop taking messages: the chat routes answer 503 ``shutting_down`` with ``Retry-After``;
   reading streams goes on;
2. let running generations finish, for up to ``SHUTDOWN_GRACE`` seconds;
3. end the ones still running with ``interrupted`` (their partial answers are saved) and
   flush every final event into the store;
4. let every open SSE response write its final event and end, for up to
   :data:`END_RESPONSES` seconds; end the ones whose stream goes on elsewhere (Redis)
   cleanly, so that their clients resume with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from quart_sse import codes
from quart_sse.config import Settings
from quart_sse.engine.channel import LogWriter
from quart_sse.engine.control import Control
from quart_sse.engine.durable import create_durable
from quart_sse.engine.generation import Generation, Generations, Outcome
from quart_sse.engine.hub import Hub
from quart_sse.engine.pump import Delivery, Responses
from quart_sse.engine.session_feed import SessionFeed
from quart_sse.engine.transport import ASGISend
from quart_sse.metrics import Stats
from quart_sse.models import StreamInfo
from quart_sse.providers.base import Provider
from quart_sse.stores.base import Store

log = logging.getLogger("quart_sse")

FLUSH_DELAY = 0.002
"""Seconds the log writer waits after the first new frame, so readers get frames in batches."""

END_RESPONSES = 2.0
"""Seconds open SSE responses get to write their final event once every stream has one."""


class Engine:
    """Generation and delivery for one process (see the module)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        provider: Provider,
        *,
        on_start: Callable[[Generation, int], None] | None = None,
        on_end: Callable[[Generation, Outcome, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.provider = provider
        self.stats = stats = Stats()
        self.hub = Hub(stats, settings.heartbeat_interval, settings.send_timeout)
        self.writer = LogWriter(store, self.hub, FLUSH_DELAY)
        ended = (lambda g, o: on_end(g, o, stats.streams_active)) if on_end is not None else None
        self.generations = Generations(settings, store, provider, self.writer, stats, on_start, ended)
        self.delivery = Delivery(
            store,
            self.hub,
            stats,
            retry_ms=settings.sse_retry_ms,
            heartbeat=settings.heartbeat_interval,
            send_timeout=settings.send_timeout,
        )
        self.sessions = SessionFeed(store, self.hub, self.delivery)
        # A cancel asked elsewhere waits for the owner: its lease lapses within three
        # heartbeats if it died (then the stream is closed), so that bounds the wait.
        self.control = Control(store, self.generations, 3 * settings.heartbeat_interval + 5)
        self.responses = Responses()
        self.durable = create_durable(settings)
        """Durable Streams (``/v1/stream/``): their store and the protocol's operations."""
        self.counters: list[Callable[[], dict[str, int]]] = []
        """Figures of the layers around the engine (the edge's limits), for /stats."""
        self._closed = False

    # Serving -------------------------------------------------------------------------------

    async def stream(self, send: ASGISend, info: StreamInfo, after: int) -> None:
        """Write the stream ``info`` after event ``after`` as an SSE response body to ``send``.

        Returns when the stream has ended, or when the drain ended this response (the
        caller then closes the body cleanly, and the client resumes); a disconnect cancels it.
        """
        task = asyncio.current_task()
        assert task is not None
        self.responses.add(task)
        try:
            await self.delivery.pump(send, info, after)
        except asyncio.CancelledError:
            if not self.responses.ended_by_drain(task):
                raise
        finally:
            self.responses.discard(task)

    async def session_stream(self, send: ASGISend, session_id: str, after: int | None, start: int) -> None:
        """Write the session stream of ``session_id`` after ``after`` (a session stream id;
        None: from turn ``start``, the present) to ``send``, until the session is deleted
        (or the drain)."""
        task = asyncio.current_task()
        assert task is not None
        self.responses.add(task)
        try:
            await self.sessions.pump(send, session_id, after, start)
        except asyncio.CancelledError:
            if not self.responses.ended_by_drain(task):
                raise
        finally:
            self.responses.discard(task)

    def counts(self) -> dict[str, int]:
        """Everything the engine holds, for the leak checks (readers, tasks, queues, logs)."""
        running = self.generations.running
        figures = {
            "readers": self.stats.readers_open,
            "generations": len(running),
            "generation_tasks": sum(1 for g in running.values() if g.task is not None and not g.task.done()),
            "queued_frames": sum(len(g.channel.frames) for g in running.values()),
            "client_generations": sum(self.generations.by_client.values()),
            **self.hub.debug_counts(),
            **self.store.debug_counts(),
        }
        for counter in self.counters:
            figures.update(counter())
        return figures

    # Lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the store and start the log writer (in the serving loop)."""
        await self.store.connect()
        await self.durable.connect()
        self.writer.start()

    async def drain(self, name: str = "server") -> None:
        """The shutdown drain (see the module); returns when the server may close."""
        generations = self.generations
        started = time.monotonic()
        generations.accepting = False
        running = [g.task for g in generations.running.values() if g.task is not None]
        log.info(
            "%s: shutdown 1/4: taking no new messages (503 shutting_down); %s up to %g s",
            name,
            _count(len(running), "generation running gets", "generations running get"),
            self.settings.shutdown_grace,
        )
        if running:
            await asyncio.wait(running, timeout=self.settings.shutdown_grace)
        late = len(generations.running)
        log.info(
            "%s: shutdown 2/4: %s, %d still running after %.1f s",
            name,
            _count(sum(1 for task in running if task.done()), "generation finished", "generations finished"),
            late,
            time.monotonic() - started,
        )
        await generations.cancel_all(codes.INTERRUPTED)
        await self.writer.flush()
        log.info(
            "%s: shutdown 3/4: %s as interrupted (partial answers kept), final events written",
            name,
            _count(late, "generation ended", "generations ended"),
        )
        ended, cut = await self.responses.end(END_RESPONSES)
        log.info(
            "%s: shutdown 4/4: %s after their final event, %d closed for the client to resume",
            name,
            _count(ended, "open stream ended", "open streams ended"),
            cut,
        )

    async def close(self) -> None:
        """End every generation as ``interrupted``, flush, and close the model and the store."""
        if self._closed:
            return
        self._closed = True
        self.generations.accepting = False
        await self.generations.cancel_all(codes.INTERRUPTED)
        await self.writer.aclose()
        await self.provider.aclose()
        await self.durable.aclose()
        await self.store.aclose()


def _count(n: int, one: str, many: str) -> str:
    """``n`` and the words that go with it in a log line: ``1 generation``, ``3 generations``."""
    return f"{n} {one if n == 1 else many}"

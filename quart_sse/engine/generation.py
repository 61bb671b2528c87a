"""Generations: background tasks that read the model and put events into their stream.

A generation runs to its end (or its cancel) whether or not anyone reads its stream.  The
answer is saved into the session first; only then does the final event (``complete`` or
``error``) enter the stream, so that a client who sees it can send the next message at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from quart_sse import codes
from quart_sse.config import Settings
from quart_sse.engine.channel import Channel, LogWriter
from quart_sse.engine.durable import durable_url
from quart_sse.ids import new_id
from quart_sse.metrics import Stats
from quart_sse.models import Message, Promoted, Session, now_iso
from quart_sse.providers.base import FinishReason, LastPiece, Provider, ProviderError
from quart_sse.sse import encode_chunk, encode_event
from quart_sse.stores.base import Store

log = logging.getLogger("quart_sse.engine")

QUEUE_SIZE = 256
"""Frames a generation may have queued before it waits for the log writer."""

REPLACEMENT = "\ufffd"


def split_surrogates(text: str, final: bool) -> tuple[str, str]:
    """(held, ready): text a model sent with surrogates made valid UTF-8.

    A high surrogate at the end is held for the next piece (an upstream that writes UTF-16
    escapes can split a pair across two pieces), unless the piece is the last; pairs are
    joined, and every surrogate still alone becomes U+FFFD.
    """
    held = ""
    if not final and "\ud800" <= text[-1] <= "\udbff":
        held, text = text[-1], text[:-1]
    return held, text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def latest_that_fit(history: list[Message], budget: int) -> list[Message]:
    """The latest messages of ``history`` whose contents fit in ``budget`` characters
    (``CONTEXT_MAX_CHARS``); the last one (the user's new message) always goes."""
    used = 0
    start = len(history)
    while start > 0:
        size = len(history[start - 1].content)
        if used + size > budget and start < len(history):
            break
        used += size
        start -= 1
    return history[start:]


def events_url(stream_id: str) -> str:
    return f"/streams/{stream_id}/events"


def status_event(context: int, waited: float | None) -> dict[str, object]:
    """The ``status`` event that opens an answer; one queued behind the answer before it
    (``if_busy=enqueue``) says so, and how long it waited (s)."""
    if waited is None:
        return {"type": "status", "message": "Generating response...", "context_messages": context}
    return {
        "type": "status",
        "message": f"Generating response (queued {waited:.1f} s behind the answer before it)...",
        "context_messages": context,
        "queued": True,
        "waited": round(waited, 3),
    }


def seconds_since(timestamp: str) -> float:
    """Seconds from an ISO 8601 time (``now_iso``) to now; 0 if it is in the future."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


@dataclass
class Outcome:
    """How a generation ended, for the console and the statistics."""

    status: str  # "complete" or an error code
    chunks: int
    seconds: float
    message: str = ""


class Generation:
    """One answer being generated: its task, its channel into the stream, its progress."""

    __slots__ = (
        "_last_piece",
        "_watch_slot",
        "cancel_code",
        "cancel_message",
        "channel",
        "chunks",
        "client",
        "client_key",
        "finishing",
        "message_preview",
        "session_id",
        "started",
        "stream_id",
        "task",
        "waited",
    )

    def __init__(
        self,
        stream_id: str,
        session_id: str,
        channel: Channel,
        client: str,
        preview: str,
        client_key: str = "",
    ) -> None:
        self.stream_id = stream_id
        self.session_id = session_id
        self.channel = channel
        self.client = client
        self.client_key = client_key
        self.message_preview = preview
        self.task: asyncio.Task[None] | None = None
        self.cancel_code: str | None = None
        self.cancel_message = ""
        self.waited: float | None = None  # seconds it was queued behind the answer before it
        self.chunks = 0
        self.started = time.monotonic()
        self.finishing = False
        self._last_piece = 0.0
        self._watch_slot = 0  # the watchdog's slot it is in (0: none)

    async def wait(self) -> None:
        """Until the final event is in the stream (the task's end)."""
        if self.task is not None:
            await asyncio.wait({self.task})

    def cancel(self, code: str, message: str = "") -> bool:
        """Stop the model; the stream ends with an ``error`` event of ``code`` (and
        ``message``, else the code's usual one)."""
        if self.task is None or self.finishing or self.cancel_code is not None:
            return False
        self.cancel_code = code
        self.cancel_message = message
        self.task.cancel()
        return True


class Watchdog:
    """The silence deadline of every generation here (``MODEL_TIMEOUT``): one timer per
    slot of ``step`` seconds, not one per generation.

    A generation sits in the slot of its deadline (last piece + timeout); a piece only
    moves its time (no timer work per piece), and when its slot comes due the generation
    is cancelled (``timeout``) or moved on to the slot of its new deadline.  A cut comes
    up to ``step`` late: at most a quarter of the timeout, and at most 1 s.  At 10,000
    streams that is a few timers instead of 10,000 (about 0.3 KB per stream).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.step = min(1.0, timeout / 4)
        self.slots: dict[int, set[Generation]] = {}

    def watch(self, gen: Generation, loop: asyncio.AbstractEventLoop) -> None:
        """Watch ``gen`` from now (its ``_last_piece``)."""
        if math.isfinite(self.timeout):
            self._place(gen, gen._last_piece + self.timeout, loop)

    def forget(self, gen: Generation) -> None:
        members = self.slots.get(gen._watch_slot)
        if members is not None:
            members.discard(gen)
        gen._watch_slot = 0

    def _place(self, gen: Generation, due: float, loop: asyncio.AbstractEventLoop) -> None:
        slot = max(math.ceil(due / self.step), 1)
        members = self.slots.get(slot)
        if members is None:
            members = self.slots[slot] = set()
            loop.call_at(slot * self.step, self._due, slot, loop)
        members.add(gen)
        gen._watch_slot = slot

    def _due(self, slot: int, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for gen in self.slots.pop(slot, ()):
            due = gen._last_piece + self.timeout
            if now >= due:
                gen._watch_slot = 0
                gen.cancel(codes.TIMEOUT)
            else:
                self._place(gen, due, loop)


class Generations:
    """Starts, tracks and cancels the generations of this process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        provider: Provider,
        writer: LogWriter,
        stats: Stats,
        on_start: Callable[[Generation, int], None] | None = None,
        on_end: Callable[[Generation, Outcome], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.provider = provider
        self.writer = writer
        self.stats = stats
        self.running: dict[str, Generation] = {}
        self.by_session: dict[str, Generation] = {}
        self.by_client: dict[str, int] = {}  # client key -> generations running
        self.accepting = True
        self.watchdog = Watchdog(settings.model_timeout)
        self._on_start = on_start
        self._on_end = on_end
        writer.on_failed = self.store_failed

    def store_failed(self, streams: Mapping[str, str]) -> None:
        """The store took no more frames for these streams: end each with the code given."""
        for stream_id, code in streams.items():
            generation = self.running.get(stream_id)
            if generation is not None:
                generation.cancel(code)

    def at_capacity(self) -> bool:
        return len(self.running) >= self.settings.max_streams

    def running_for(self, client_key: str) -> int:
        """How many generations of the client ``client_key`` run here."""
        return self.by_client.get(client_key, 0)

    async def start(
        self,
        session: Session,
        message: str,
        client: str,
        client_key: str = "",
        *,
        regenerate: bool = False,
    ) -> Generation:
        """Begin answering ``message`` in ``session`` for ``client`` (an address, for the
        console; ``client_key``: who it counts against); the caller has made every check.

        ``regenerate``: answer the session's last user message again (``message`` is
        ignored), its trailing answers dropped from the history.

        Raises ``GenerationRunning`` if another request took the session's slot first,
        ``SessionNotFound`` if the session went meanwhile, ``NothingToRegenerate``.
        """
        stream_id = new_id()
        first = Message("user", message, now_iso())
        await self.store.begin_generation(session.session_id, stream_id, first, regenerate=regenerate)
        history = list(session.messages)
        if regenerate:
            while history and history[-1].role != "user":
                history.pop()
            if history:
                first = history[-1]
        elif not history or history[-1] is not first:  # a store that keeps no live Session object
            history.append(first)
        return self._launch(stream_id, session.session_id, history, first.content, client, client_key)

    def _launch(
        self,
        stream_id: str,
        session_id: str,
        history: list[Message],
        message: str,
        client: str,
        client_key: str,
        waited: float | None = None,
    ) -> Generation:
        """Start the task of a generation whose slot the store gave it."""
        preview = message if len(message) <= 80 else message[:79] + "…"
        channel = self.writer.open(stream_id, QUEUE_SIZE)
        generation = Generation(stream_id, session_id, channel, client, preview, client_key)
        generation.waited = waited
        self.running[stream_id] = generation
        self.by_session[session_id] = generation
        self.by_client[client_key] = self.by_client.get(client_key, 0) + 1
        self.stats.streams_started += 1
        self.stats.streams_active += 1
        history = latest_that_fit(history, self.settings.context_max_chars)
        generation.task = asyncio.create_task(self._run(generation, history), name=f"generation-{stream_id}")
        if self._on_start is not None:
            self._on_start(generation, len(self.running))
        return generation

    async def cancel(self, stream_id: str, code: str = codes.CANCELLED, message: str = "") -> bool:
        """Cancel a running generation and wait until its final event is in the stream."""
        generation = self.running.get(stream_id)
        if generation is None or not generation.cancel(code, message):
            return False
        await generation.wait()
        return True

    async def cancel_session(self, session_id: str) -> None:
        generation = self.by_session.get(session_id)
        if generation is not None:
            await self.cancel(generation.stream_id)

    async def cancel_all(self, code: str) -> None:
        """Cancel every running generation with ``code`` and wait for their final events.

        Again until none runs: a generation that ends hands its slot to the message queued
        behind it (``if_busy=enqueue``), which starts then, and is cancelled in the next round.
        """
        while self.running:
            for generation in list(self.running.values()):
                generation.cancel(code)
            await asyncio.gather(*(g.wait() for g in list(self.running.values())))

    # The generation task ------------------------------------------------------------------

    async def _run(self, gen: Generation, history: list[Message]) -> None:
        settings = self.settings
        channel = gen.channel
        session_id = gen.session_id
        stream_id = gen.stream_id
        model = self.provider.model
        parts: list[str] = []
        number = 0
        event_id = 2
        status = "complete"
        error_message = ""
        finish_reason = "stop"
        loop = asyncio.get_running_loop()
        gen._last_piece = loop.time()
        timeout = settings.model_timeout
        debug = log.isEnabledFor(logging.DEBUG)  # a line per chunk only at debug level
        self.watchdog.watch(gen, loop)
        try:
            await channel.put(
                encode_event(
                    1,
                    {
                        "type": "session_info",
                        "session_id": session_id,
                        "stream_id": stream_id,
                        "model": model,
                        "events_url": events_url(stream_id),
                        "durable_url": durable_url(stream_id),
                    },
                )
            )
            await channel.put(encode_event(2, status_event(len(history), gen.waited)))
            held = ""  # a high surrogate that ended the last piece, for the next one
            async for piece in self.provider.stream(history):
                gen._last_piece = loop.time()
                if not piece:
                    continue
                if type(piece) is FinishReason:
                    finish_reason = str(piece)
                    continue
                final = type(piece) is LastPiece
                text = held + piece if held else str(piece)
                try:
                    frame = encode_chunk(event_id + 1, text, number + 1, final)
                except UnicodeEncodeError:  # surrogates: a pair split across pieces, or lone
                    held, text = split_surrogates(text, final)
                    if not text:
                        continue
                    frame = encode_chunk(event_id + 1, text, number + 1, final)
                else:
                    held = ""
                number += 1
                if number == 1:  # time to first chunk (/metrics)
                    self.stats.first_chunk.observe(time.monotonic() - gen.started)
                event_id += 1
                parts.append(text)
                if not channel.offer(frame, text):  # full: wait for the log writer
                    await channel.put(frame, text)
                if debug:
                    # The text only with LOG_MESSAGE_TEXT=1 (it may quote the user): else its length.
                    shown = repr(text[:60]) if settings.log_message_text else f"{len(text)} chars"
                    log.debug("🌊 [%s] chunk #%d: %s", stream_id[:8], number, shown)
            if held:  # the model ended on half a pair
                number += 1
                event_id += 1
                parts.append(REPLACEMENT)
                await channel.put(encode_chunk(event_id, REPLACEMENT, number, False), REPLACEMENT)
            gen.chunks = number
        except asyncio.CancelledError:
            status = gen.cancel_code or codes.INTERRUPTED
            error_message = gen.cancel_message or {
                codes.CANCELLED: "generation cancelled",
                codes.TIMEOUT: f"the model sent nothing for {timeout:g} s",
                codes.INTERRUPTED: "the server stopped this generation before the end",
                codes.STORE_UNAVAILABLE: "the store (Redis) became unreachable",
            }.get(status, status)
        except ProviderError as exc:
            status, error_message = exc.code, exc.message
            if exc.finish_reason:
                finish_reason = exc.finish_reason
        except Exception as exc:
            log.exception("model failure in stream %s", stream_id)
            status, error_message = codes.MODEL_ERROR, f"the model failed: {type(exc).__name__}"
        finally:
            gen.finishing = True
            self.watchdog.forget(gen)
        gen.chunks = number
        await self._finish(gen, history, parts, number, event_id + 1, status, error_message, finish_reason)

    async def _finish(
        self,
        gen: Generation,
        history: list[Message],
        parts: list[str],
        chunks: int,
        event_id: int,
        status: str,
        error_message: str,
        finish_reason: str,
    ) -> None:
        """Save the answer, free the session and the capacity, then put the final event."""
        stats = self.stats
        seconds = time.monotonic() - gen.started
        answer = "".join(parts)
        promoted: Promoted | None = None
        saved = None
        try:
            message_count = len(history)
            if status == "complete" or answer:
                saved = Message("model", answer, now_iso(), interrupted=status != "complete")
            count, promoted = await self.store.end_generation(gen.session_id, gen.stream_id, saved)
            message_count = count if count is not None else len(history) + (saved is not None)
        except codes.StoreUnavailable as exc:
            log.warning("could not save the answer of stream %s: %s", gen.stream_id, exc)
        except Exception:
            log.exception("could not save the answer of stream %s", gen.stream_id)
        finally:
            self.running.pop(gen.stream_id, None)
            if self.by_session.get(gen.session_id) is gen:
                del self.by_session[gen.session_id]
            left = self.by_client.get(gen.client_key, 1) - 1
            if left:
                self.by_client[gen.client_key] = left
            else:
                self.by_client.pop(gen.client_key, None)
            stats.streams_active -= 1
            stats.chunks_sent += chunks
            stats.response_time_total += seconds
            stats.stream_duration.observe(seconds)
        if status == "complete":
            stats.streams_completed += 1
            final = {
                "type": "complete",
                "total_chunks": chunks,
                "processing_time": round(seconds, 4),
                "message_count": message_count,
                "finish_reason": finish_reason,
            }
        else:
            stats.streams_failed += 1
            final = {"type": "error", "message": error_message, "code": status, "session_id": gen.session_id}
        await gen.channel.put(encode_event(event_id, final), final=True)
        if self._on_end is not None:
            self._on_end(gen, Outcome(status, chunks, seconds, error_message))
        if promoted is not None:
            # The message queued behind this answer took the slot: it starts here, now.
            context = [*history, *([saved] if saved is not None else []), promoted.message]
            self._launch(
                promoted.stream_id,
                gen.session_id,
                context,
                promoted.message.content,
                "queued",
                promoted.client_key,
                seconds_since(promoted.message.timestamp),
            )

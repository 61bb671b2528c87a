"""The session stream: everything that happens in one session, turn after turn, as SSE.

Nothing is written twice for it on the hot path.  A session keeps a small turn log in the
store (one marker per accepted message: its turn number, its stream, the message); the
feed reads the markers, and for each turn that turn's own stream log, as any reader of
that stream would (the hub for a stream generated here, the store for one generated
elsewhere).  Each event is re-encoded with the turn's ``stream_id`` added and an id
composed of the two positions::

    id = turn * TURN + k               k = 0: the turn's user_message; k >= 1: event k of its stream
    id = turn * TURN + QUEUED          the next turn's user_message, queued while this one runs
    id = turn * TURN + QUEUED + k      event k of this turn's stream, after that notice

A message queued behind the running answer (``if_busy=enqueue``) already has its turn
number, ``turn + 1``, but its answer comes after the rest of this turn's; its
``user_message`` (``queued: true``) goes out at once, inside the running turn's ids, at the
reserved place ``QUEUED`` (past any event number), and the running turn's later events
move past it.  So ids increase strictly in the order they are written, and a
``Last-Event-ID`` names a turn, a place in its stream and whether the queued notice came:
the resume writes exactly what follows.  The queued turn then starts at its event 1 (its
``user_message`` was the notice); a reader that never saw the notice (it came after that
turn started) gets the ``user_message`` at ``(turn + 1) * TURN`` as for any turn.

A resume from a turn whose marker or stream the store no longer holds (``TURNS_KEPT``,
``STREAM_RETENTION``) gets one ``reset`` event (reload the session), before anything of
that turn, then goes on from the session's present as it was just before the reset (so
that a reload after the reset shows every turn the stream does not carry).  An id past
the session's last event is refused before the stream opens (:meth:`SessionFeed.check`).

Only readers of this stream pay the re-encoding (a JSON parse and dump per event), and,
while a turn runs and no notice has come, a look at the turn log: a wait on it beside the
hub's for a turn generated here; a read after each store wait (each batch) for one
generated elsewhere, so that a reader holds one store wait at a time.

Every wait here can be cut by a disconnect (the edge cancels the response's task);
redis-py can swallow that cancel and return normally, and a write to a closed response
is a silent no-op, so the feed looks at its task's cancel count after each wait and ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from typing import Any

from quart_sse.codes import StoreUnavailable
from quart_sse.engine.hub import Hub, Reader
from quart_sse.engine.pump import CLOSED_MESSAGES, Delivery
from quart_sse.engine.transport import ASGISend, ASGITransport
from quart_sse.models import Turn, TurnLog
from quart_sse.sse import PING, Event, SSEParser, encode_event, retry_frame
from quart_sse.stores.base import Store, Tail

log = logging.getLogger("quart_sse.engine")

TURN = 1_000_000_000
"""Ids of the session stream: ``turn * TURN + k``."""

QUEUED = TURN // 2
"""The place of a queued turn's notice in the ids of the turn it waits behind (a stream
has fewer than QUEUED events)."""


def split_id(event_id: int) -> tuple[int, int, bool]:
    """(turn, k, noticed) of a session stream id: ``noticed`` when the next turn's queued
    notice came before it."""
    turn, rest = divmod(event_id, TURN)
    return (turn, rest - QUEUED, True) if rest >= QUEUED else (turn, rest, False)


def user_message(session_id: str, turn: Turn, event_id: int | None = None) -> bytes:
    """The ``user_message`` event that opens a turn (at ``event_id``, else its own place)."""
    data: dict[str, object] = {
        "type": "user_message",
        "session_id": session_id,
        "stream_id": turn.stream_id,
        "turn": turn.number,
        "content": turn.message.content,
        "message": turn.message.to_json(),
    }
    if turn.queued:
        data["queued"] = True
    if turn.regenerate:
        data["regenerate"] = True
    return encode_event(turn.number * TURN if event_id is None else event_id, data)


def _cut() -> None:
    """End the reader if its task was cancelled (a disconnect) and a call swallowed it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class SessionFeed:
    """Writes session stream bodies (:meth:`pump`); one per process."""

    def __init__(self, store: Store, hub: Hub, delivery: Delivery) -> None:
        self.store = store
        self.hub = hub
        self.delivery = delivery
        self.open = 0  # session stream responses being written (for /stats)

    def debug_counts(self) -> dict[str, int]:
        """Figures for the leak checks: the session streams open here."""
        return {"session_readers": self.open}

    async def check(self, session_id: str, after: int) -> str | None:
        """Why ``after`` cannot be a place in the session stream of ``session_id`` (an id
        past its last event: never sent, the client is wrong), else None.  An id of a turn
        the store no longer holds passes (the stream answers it with a ``reset``)."""
        if after == 0:
            return None
        turn_no, k, noticed = split_id(after)
        log = await self.store.turns(session_id, turn_no - 1)
        if log is None:
            return None
        last = log.last
        if turn_no > last or (noticed and turn_no + 1 > last):
            return f"Last-Event-ID {after} is past the session's last event (its last turn is {last})"
        turn = next((t for t in log.turns if t.number == turn_no), None)
        if turn is None or k == 0:
            return None
        info = await self.store.get_stream(turn.stream_id)
        if info is not None and k > info.last_id:
            return f"Last-Event-ID {after} is past turn {turn_no}'s last event ({info.last_id} so far)"
        return None

    async def pump(self, send: ASGISend, session_id: str, after: int | None, start: int) -> None:
        """Write the session stream of ``session_id`` after id ``after`` (None: from turn
        ``start``, :meth:`present` as it was before the response began) to ``send``; returns
        when the session is deleted.  The caller has checked that the session exists and may
        be read, and ``after``."""
        stats = self.delivery.stats
        stats.readers_open += 1
        stats.readers_opened += 1
        self.open += 1
        try:
            await self._pump(send, session_id, after, start)
        except StoreUnavailable as exc:
            # The response has begun (its retry frame goes first): it ends with an error
            # event without an id, and the client resumes with its Last-Event-ID.
            log.warning("session stream of %s ended: %s", session_id, exc)
            data = {"type": "error", "code": exc.code, "message": exc.message, "session_id": session_id}
            body = b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"
            await self.delivery.write_body(ASGITransport(send), body)
        finally:
            self.open -= 1
            stats.readers_open -= 1

    async def _pump(self, send: ASGISend, session_id: str, after: int | None, start: int) -> None:
        out = _Out(self.delivery, ASGITransport(send))
        if not await out.write(retry_frame(self.delivery.retry_ms)):
            return
        noticed = False  # the turn's user_message went out as the notice of a queued turn
        if after is None:
            turn_no, k = start, -1
        elif after == 0:  # before everything
            turn_no, k = 1, -1
        else:
            turn_no, k, noticed = split_id(after)
        while True:
            _cut()
            log = await self.store.turns(session_id, turn_no - 1)
            _cut()
            if log is None:
                return
            if not log.turns:
                if log.ended:
                    return
                if turn_no <= log.last:  # that turn is no longer held
                    if (place := await self._reset(out, session_id)) is None:
                        return
                    (turn_no, k), noticed = place, False
                    continue
                found = await _waited(self.store.wait_turns(session_id, turn_no - 1, out.quiet()))
                if found is None:
                    return
                if not found.turns and not found.ended and not await out.ping_if_due():
                    return
                continue
            turn = log.turns[0]
            if turn.number != turn_no:  # its marker was dropped (TURNS_KEPT)
                if (place := await self._reset(out, session_id)) is None:
                    return
                (turn_no, k), noticed = place, False
                continue
            done = await _TurnWriter(self, out, session_id, turn, noticed).run(k)
            if done is None:
                return  # the reader was cut
            if not done:  # its stream is no longer held (nothing of it was written)
                if (place := await self._reset(out, session_id)) is None:
                    return
                (turn_no, k), noticed = place, False
                continue
            turn_no += 1
            k = 0 if done == "noticed" else -1  # its user_message went out as the notice
            noticed = False

    async def present(self, session_id: str) -> int | None:
        """The turn a reader without ``Last-Event-ID`` starts with: the one being generated
        (or queued), else the next one (None: the session is gone).  Asked before its
        response begins: a client that sees the response and then sends a message must get
        that message's turn, however late this look would come under load."""
        session = await self.store.get_session(session_id)
        log = await self.store.turns(session_id, 0)
        if session is None or log is None:
            return None
        for turn in log.turns:
            if turn.stream_id in (session.generating, session.queued):
                return turn.number
        return log.last + 1

    async def _reset(self, out: _Out, session_id: str) -> tuple[int, int] | None:
        """Write one ``reset`` event; the place to go on from (None: the reader was cut, or
        the session is gone).  The place is taken before the reset is written: a turn that
        ends after it is still sent; one that ended before it is in the session the client
        reloads."""
        turn = await self.present(session_id)
        _cut()
        if turn is None:
            return None
        data = {
            "type": "reset",
            "session_id": session_id,
            "message": "events were missed: reload the session (GET /sessions/{session_id})",
        }
        # No id: a browser keeps the last one it had, so that a reconnect asks again.
        body = b"event: reset\ndata: " + json.dumps(data).encode() + b"\n\n"
        if not await out.write(body):
            return None
        return turn, -1


class _TurnWriter:
    """One turn of one session stream: its stream's events, and the notice of the turn
    queued behind it (watched on the turn log while the turn runs)."""

    __slots__ = ("feed", "noticed", "out", "pending", "session_id", "turn", "watch", "watching")

    def __init__(self, feed: SessionFeed, out: _Out, session_id: str, turn: Turn, noticed: bool) -> None:
        self.feed = feed
        self.out = out
        self.session_id = session_id
        self.turn = turn
        self.noticed = noticed
        self.watching = not noticed  # for the next turn's marker, while this turn runs
        self.watch: asyncio.Task[Any] | None = None  # a wait on the turn log
        self.pending: asyncio.Task[Tail | None] | None = None  # a store wait a notice came during

    async def run(self, k: int) -> bool | str | None:
        """Write the turn after event ``k`` (-1: from its user_message) to its end.

        True at its end ("noticed" when the next turn's user_message went out in it); False
        when its log is no longer held (then nothing was written); None when the reader
        was cut.
        """
        try:
            done = await self._run(k)
        except _Gone:
            return None
        finally:
            for task in (self.watch, self.pending):
                if task is not None:
                    task.cancel()
        if done and self.noticed:
            return "noticed"
        return done

    def _id(self, k: int) -> int:
        return self.turn.number * TURN + (QUEUED if self.noticed else 0) + k

    async def _run(self, after: int) -> bool | None:
        feed, out, turn = self.feed, self.out, self.turn
        store, hub, stream_id = feed.store, feed.hub, turn.stream_id
        # The first read, before anything of the turn is written: an expired turn gets the
        # reset first.
        held = hub.since(stream_id, max(after, 0))
        tail = Tail(held, False) if held is not None else await store.read(stream_id, max(after, 0))
        _cut()
        if tail is None:
            return False
        if after < 0:
            if not await out.write(user_message(self.session_id, turn)):
                return None
            after = 0
        loop = asyncio.get_running_loop()
        # Never pushed to (not a direct transport): the hub only wakes it.
        reader = Reader(after, out.transport, loop.time())
        while True:
            if tail is not None and (tail.frames or tail.closed):
                if not await out.write(self._reencode(reader.after, tail)):
                    return None
                reader.after += len(tail.frames)
            elif tail is not None and not await out.ping_if_due():
                return None
            if tail is not None and tail.finished:
                return True
            tail = None
            frames = hub.since(stream_id, reader.after)
            if frames:
                tail = Tail(frames, False)
                continue
            if frames is None and hub.holds(stream_id):
                tail = await store.read(stream_id, reader.after)
            elif frames is None:
                # Generated elsewhere: one wait in the store (one Redis connection), and a
                # look at the turn log after each (a batch, or a heartbeat's quiet).
                pending = self.pending = _task(store.wait(stream_id, reader.after, out.quiet()))
                await asyncio.wait({pending})
                self.pending = None
                tail = pending.result()
                if self.watching:
                    _cut()
                    await self._notice(await store.turns(self.session_id, turn.number))
            else:
                self._watch()
                waiter = hub.park(stream_id, reader, out.quiet())
                if waiter is not None:
                    try:
                        await self._either(waiter)
                    finally:
                        hub.unpark(stream_id, reader)
                tail = Tail((), False)
            _cut()
            if tail is None:
                return False

    def _watch(self) -> None:
        """Watch the turn log for the turn queued behind this one (until its notice came)."""
        if not self.watching or self.watch is not None:
            return
        feed = self.feed
        block = max(feed.delivery.heartbeat, 1.0)
        self.watch = _task(feed.store.wait_turns(self.session_id, self.turn.number, block))

    async def _either(self, waiting: asyncio.Future[Any]) -> bool:
        """Wait for ``waiting`` or the turn log's next turn, whichever comes first; write the
        notice of a queued turn.  True when ``waiting`` is done."""
        watch = self.watch
        if watch is None:
            await asyncio.wait({waiting})
            return True
        await asyncio.wait({waiting, watch}, return_when=asyncio.FIRST_COMPLETED)
        if watch.done():
            self.watch = None
            await self._notice(None if watch.cancelled() or watch.exception() else watch.result())
        return waiting.done()

    async def _notice(self, found: TurnLog | None) -> None:
        """A turn log answer: write the next turn's user_message if it was queued; watch
        again when nothing came yet."""
        following = None
        if found is not None and not found.ended:
            following = next((t for t in found.turns if t.number == self.turn.number + 1), None)
            if following is None and not found.turns:
                return  # quiet so far: the next wait watches again
        # The session went, the store failed (the turn's end will tell), or the next turn
        # is there: one look only.
        self.watching = False
        if following is None or not following.queued:  # it came after this turn (an interrupt)
            return
        self.noticed = True
        if not await self.out.write(
            user_message(self.session_id, following, self.turn.number * TURN + QUEUED)
        ):
            raise _Gone

    def _reencode(self, after: int, tail: Tail) -> bytes:
        """The frames of ``tail`` (events ``after + 1``…) as session stream events."""
        turn = self.turn
        out: list[bytes] = []
        parser = SSEParser()
        k = after
        for frame in tail.frames:
            k += 1  # frame k is event k
            for item in parser.feed(frame):
                if isinstance(item, Event):
                    data = json.loads(item.data)
                    data.setdefault("stream_id", turn.stream_id)
                    out.append(encode_event(self._id(k), data))
        if tail.closed is not None:
            k += 1
            data = {
                "type": "error",
                "message": CLOSED_MESSAGES.get(tail.closed, tail.closed),
                "code": tail.closed,
                "session_id": self.session_id,
                "stream_id": turn.stream_id,
            }
            out.append(encode_event(self._id(k), data))
        return b"".join(out)


class _Gone(Exception):
    """The reader was cut while a notice was written."""


def _task(wait: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """A store wait as a task of its own (dropped unread when the reader ends)."""
    task = asyncio.ensure_future(wait)
    task.add_done_callback(_retrieve)
    return task


async def _waited(wait: Coroutine[Any, Any, Any]) -> Any:
    """What a store wait answers, awaited as a task of its own: a disconnect ends the reader
    at once even when redis-py would swallow its cancel (the wait is cancelled, and left to
    end within its block if it swallows that too)."""
    task = _task(wait)
    try:
        await asyncio.wait({task})
    finally:
        task.cancel()  # (nothing when it is done)
    return task.result()


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # read: no "never retrieved" warning for a wait nobody awaits


class _Out:
    """One session stream response: its writes, and when it is due a ping."""

    __slots__ = ("delivery", "last_write", "loop", "transport")

    def __init__(self, delivery: Delivery, transport: ASGITransport) -> None:
        self.delivery = delivery
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()

    def quiet(self) -> float:
        """Seconds until a ping is due (a wait's bound)."""
        return max(self.last_write + self.delivery.heartbeat - self.loop.time(), 0.001)

    async def write(self, body: bytes) -> bool:
        _cut()  # a write after a disconnect is a no-op that "succeeds"
        if not await self.delivery.write_body(self.transport, body):
            return False
        self.last_write = self.loop.time()
        return True

    async def ping_if_due(self) -> bool:
        if self.loop.time() < self.last_write + self.delivery.heartbeat * 0.999:
            return True
        return await self.write(PING)

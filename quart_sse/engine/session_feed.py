"""The session stream: everything that happens in one session, turn after turn, as SSE.

Nothing is written twice for it on the hot path.  A session keeps a small turn log in the
store (one marker per accepted message: its turn number, its stream, the message); the
feed reads the markers, and for each turn that turn's own stream log, as any reader of
that stream would (the hub for a stream generated here, the store for one generated
elsewhere).  Each event is re-encoded with the turn's ``stream_id`` added and an id
composed of the two positions::

    id = turn * TURN + k      k = 0: the turn's user_message; k >= 1: event k of its stream

so ids increase strictly across turns, and a ``Last-Event-ID`` names a turn and a place in
its stream: the resume writes exactly what follows.  A resume from a turn whose marker or
stream the store no longer holds (``TURNS_KEPT``, ``STREAM_RETENTION``) gets one ``reset``
event (reload the session), then goes on from the session's present.

Only readers of this stream pay the re-encoding (a JSON parse and dump per event).
"""

from __future__ import annotations

import asyncio
import json

from quart_sse.engine.hub import Hub, Reader
from quart_sse.engine.pump import CLOSED_MESSAGES, Delivery
from quart_sse.engine.transport import ASGISend, ASGITransport
from quart_sse.models import Turn
from quart_sse.sse import PING, Event, SSEParser, encode_event, retry_frame
from quart_sse.stores.base import Store, Tail

TURN = 1_000_000_000
"""Ids of the session stream: ``turn * TURN + k`` (a stream has fewer than TURN events)."""


def split_id(event_id: int) -> tuple[int, int]:
    """(turn, k) of a session stream id."""
    return divmod(event_id, TURN)


def user_message(session_id: str, turn: Turn) -> bytes:
    """The ``user_message`` event that opens a turn."""
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
    return encode_event(turn.number * TURN, data)


class SessionFeed:
    """Writes session stream bodies (:meth:`pump`); one per process."""

    def __init__(self, store: Store, hub: Hub, delivery: Delivery) -> None:
        self.store = store
        self.hub = hub
        self.delivery = delivery

    async def pump(self, send: ASGISend, session_id: str, after: int | None) -> None:
        """Write the session stream of ``session_id`` after id ``after`` (None: from the turn
        being generated, else the next) to ``send``; returns when the session is deleted.
        The caller has checked that the session exists and may be read."""
        stats = self.delivery.stats
        stats.readers_open += 1
        stats.readers_opened += 1
        try:
            await self._pump(send, session_id, after)
        finally:
            stats.readers_open -= 1

    async def _pump(self, send: ASGISend, session_id: str, after: int | None) -> None:
        out = _Out(self.delivery, ASGITransport(send))
        if not await out.write(retry_frame(self.delivery.retry_ms)):
            return
        turn_no, k = (-1, -1) if after is None else split_id(after)
        if after is not None and k == 0 and turn_no == 0:
            turn_no, k = 1, -1  # "0": before everything
        if turn_no < 0:
            present = await self._present(session_id)
            if present is None:
                return
            turn_no = present
        while True:
            log = await self.store.turns(session_id, turn_no - 1)
            if log is None:
                return
            if not log.turns:
                if log.ended:
                    return
                if turn_no <= log.last:  # that turn is no longer held
                    if (place := await self._reset(out, session_id)) is None:
                        return
                    turn_no, k = place
                    continue
                found = await self.store.wait_turns(session_id, turn_no - 1, out.quiet())
                if found is None:
                    return
                if not found.turns and not found.ended and not await out.ping_if_due():
                    return
                continue
            turn = log.turns[0]
            if turn.number != turn_no:  # its marker was dropped (TURNS_KEPT)
                if (place := await self._reset(out, session_id)) is None:
                    return
                turn_no, k = place
                continue
            if k < 0:
                if not await out.write(user_message(session_id, turn)):
                    return
                k = 0
            done = await self._turn(out, session_id, turn, k)
            if done is None:
                return  # the reader was cut
            if not done:  # its stream is no longer held
                if (place := await self._reset(out, session_id)) is None:
                    return
                turn_no, k = place
                continue
            turn_no, k = turn_no + 1, -1

    async def _present(self, session_id: str) -> int | None:
        """The turn a reader without ``Last-Event-ID`` starts with: the one being generated
        (or queued), else the next one."""
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
        the session is gone)."""
        data = {
            "type": "reset",
            "session_id": session_id,
            "message": "events were missed: reload the session (GET /sessions/{session_id})",
        }
        # No id: a browser keeps the last one it had, so that a reconnect asks again.
        body = b"event: reset\ndata: " + json.dumps(data).encode() + b"\n\n"
        if not await out.write(body):
            return None
        turn = await self._present(session_id)
        return None if turn is None else (turn, -1)

    async def _turn(self, out: _Out, session_id: str, turn: Turn, after: int) -> bool | None:
        """Write the events of ``turn``'s stream after event ``after``, to its end.

        True at its end; False when its log is no longer held; None when the reader was cut.
        """
        store, hub, stream_id = self.store, self.hub, turn.stream_id
        loop = asyncio.get_running_loop()
        # Never pushed to (not a direct transport): the hub only wakes it.
        reader = Reader(after, out.transport, loop.time())
        while True:
            frames = hub.since(stream_id, reader.after)
            if frames is None:
                if hub.holds(stream_id):
                    tail = await store.read(stream_id, reader.after)
                else:
                    tail = await store.wait(stream_id, reader.after, out.quiet())
                if tail is None:
                    return False
            elif frames:
                tail = Tail(frames, False)
            else:
                await hub.wait(stream_id, reader, out.quiet())
                if not await out.ping_if_due():
                    return None
                continue
            if tail.frames or tail.closed:
                body = _reencode(turn, reader.after, tail, session_id)
                if not await out.write(body):
                    return None
                reader.after += len(tail.frames)
            elif not await out.ping_if_due():
                return None
            if tail.finished:
                return True


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
        if not await self.delivery.write_body(self.transport, body):
            return False
        self.last_write = self.loop.time()
        return True

    async def ping_if_due(self) -> bool:
        if self.loop.time() < self.last_write + self.delivery.heartbeat * 0.999:
            return True
        return await self.write(PING)


def _reencode(turn: Turn, after: int, tail: Tail, session_id: str) -> bytes:
    """The frames of ``tail`` (events ``after + 1``…) as session stream events."""
    base = turn.number * TURN
    out: list[bytes] = []
    parser = SSEParser()
    k = after
    for frame in tail.frames:
        k += 1  # frame k is event k
        for item in parser.feed(frame):
            if isinstance(item, Event):
                data = json.loads(item.data)
                data.setdefault("stream_id", turn.stream_id)
                out.append(encode_event(base + k, data))
    if tail.closed is not None:
        k += 1
        data = {
            "type": "error",
            "message": CLOSED_MESSAGES.get(tail.closed, tail.closed),
            "code": tail.closed,
            "session_id": session_id,
            "stream_id": turn.stream_id,
        }
        out.append(encode_event(base + k, data))
    return b"".join(out)

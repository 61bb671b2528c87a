"""What one answer's stream must look like (docs/API.md, "Streams"), checked as its bytes arrive.

Pure: no network, no Locust, no clock.  The network layer feeds each connection's bytes with
the time they arrived; an :class:`AnswerCheck` spans every connection of one answer (the first
one and any resumed with ``Last-Event-ID``), so that a resume that repeats or skips an event
shows up.  Each check that fails adds one stable problem string (the errors of Locust's failure
table); the times each connection saw (first event, first chunk, gaps between chunks, the final
event, resumes) and the chunks lost or repeated are kept on the answer, from which
:meth:`AnswerCheck.sample` makes the answer's figures (``loadtest.figures``).

The answer's text is checked against what the server saved, not against any model: once a
stream has ended with ``complete`` and passed every other check, the network layer reads
``GET /sessions/{id}`` (:meth:`AnswerCheck.session_to_read`), and
:meth:`AnswerCheck.compare_saved` compares that session (:func:`parse_session`) with the
stream.  Nothing here imports the server but its SSE wire module, ``quart_sse.sse``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtest.figures import StreamSample
from quart_sse.sse import Comment, Event, Retry, SSEParser

NO_RETRY = "stream did not start with retry:"
OUT_OF_ORDER = "events out of order"
CHUNK_GAP = "gap in chunk_number"
CHUNK_REPEAT = "repeated chunk_number"
EVENT_TYPE = "event field differs from data.type"
BAD_DATA = "data is not one line of JSON with a type"
NO_COMPLETE = "stream ended without complete"
TOTAL_CHUNKS = "total_chunks differs from the chunks received"
CROSS_TALK = "answer belongs to another session (cross-talk)"
RESUME_REPEAT = "resumed stream repeated an event"
RESUME_SKIP = "resumed stream skipped an event"
ERROR_EVENT = "stream ended with an error event"
SILENCE = "stream silent longer than the heartbeat allows"
SAVED_ANSWER = "answer differs from the one the session saved"
MESSAGE_COUNT = "message_count differs from the session's messages"

# Event types in the order a stream emits them; complete and error both end it.
_RANK = {"session_info": 0, "status": 1, "chunk": 2, "complete": 3, "error": 3}


@dataclass(frozen=True)
class Turn:
    """One message of a session (docs/API.md, ``GET /sessions/{id}``): ``role`` is ``user`` or ``model``."""

    role: str
    content: str
    interrupted: bool = False


@dataclass(frozen=True)
class SavedSession:
    """What the check reads of a ``GET /sessions/{id}`` answer."""

    session_id: str
    message_count: int
    messages: tuple[Turn, ...]


def parse_session(body: Any) -> SavedSession | None:
    """The session of a ``GET /sessions/{id}`` JSON body; None when the body is not one."""
    if not isinstance(body, dict):
        return None
    sid, count, raw = body.get("session_id"), body.get("message_count"), body.get("messages")
    if not isinstance(sid, str) or type(count) is not int or not isinstance(raw, list):
        return None
    turns: list[Turn] = []
    for item in raw:
        if not isinstance(item, dict):
            return None
        role, content = item.get("role"), item.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            return None
        turns.append(Turn(role, content, item.get("interrupted") is True))
    return SavedSession(sid, count, tuple(turns))


def _id_after(new: str | None, last: str | None) -> bool:
    """Whether event id ``new`` comes after ``last``; ids are opaque, but this server's are numbers."""
    if last is None:
        return True
    if new is None:
        return False
    if new.isdigit() and last.isdigit():
        return int(new) > int(last)
    return new != last


@dataclass
class AnswerCheck:
    """Checks of one answer across its connections, and of the session the server saved.

    ``session_id`` is the session asked for (None: a new one).  ``history`` is the session's
    messages as this client knows them, the message just sent last: when given, the saved
    session must hold exactly those before the answer (cross-talk).  ``check_answer`` False
    skips the saved session (:meth:`session_to_read` gives None).

    Times are seconds of one clock (``time.perf_counter`` in the network layer): ``sent_at``
    when the message was sent, the others as events arrived.  ``gaps`` counts chunks never
    received (a jump in ``chunk_number``, ``total_chunks`` above the chunks received, or a 204
    on a resume before the end), ``duplicates`` chunks received twice.
    """

    history: Sequence[Turn] | None = None
    session_id: str | None = None
    check_answer: bool = True
    max_silence_ms: float | None = None
    problems: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] | None = None  # data of the complete or error event
    texts: list[str] = field(default_factory=list)
    last_id: str | None = None
    sent_at: float | None = None
    first_event_at: float | None = None
    first_chunk_at: float | None = None
    end_at: float | None = None
    cut_at: float | None = None
    itls_ms: list[float] = field(default_factory=list)
    resumes: list[tuple[float | None, int]] = field(default_factory=list)
    rank = -1
    chunks = 0
    chunk_events = 0
    last_number = 0  # the highest chunk_number received
    gaps = 0
    duplicates = 0
    pings = 0
    nbytes = 0
    connections = 0
    _finished = False

    def problem(self, kind: str) -> None:
        if kind not in self.problems:
            self.problems.append(kind)

    @property
    def done(self) -> bool:
        return self.end is not None

    @property
    def events_url(self) -> str | None:
        url = self.info.get("events_url")
        return url if isinstance(url, str) else None

    def connect(self, start: float) -> Connection:
        """A new connection of this answer, its request sent at ``start`` (seconds)."""
        self.connections += 1
        if self.sent_at is None:
            self.sent_at = start
        return Connection(self, start, resumed=self.connections > 1)

    def cut(self, now: float) -> None:
        """The connection was cut (by the user or the network) at ``now``; a resume may follow."""
        self.cut_at = now

    def resuming(self) -> None:
        """A resume request is about to be sent (its figures are filled in by its first events)."""
        self.resumes.append((None, 0))

    def skipped_end(self) -> None:
        """A resume answered 204 (nothing follows) though the answer never ended: the end was lost."""
        self.problem(RESUME_SKIP)
        self.gaps += 1

    def finish(self) -> list[str]:
        """The end checks once no connection will follow; every problem found (the same if called again)."""
        if self._finished:
            return self.problems
        self._finished = True
        if self.end is None:
            self.problem(NO_COMPLETE)
        elif self.end.get("type") == "complete":
            total = self.end.get("total_chunks")
            if total != self.chunks:
                self.problem(TOTAL_CHUNKS)
                if isinstance(total, int) and total > self.last_number:
                    self.gaps += total - self.last_number  # chunks lost at the end
        return self.problems

    def sample(self) -> StreamSample:
        """The answer's figures (after :meth:`finish`), times in ms since the message was sent."""

        sent = self.sent_at or 0.0

        def since(at: float | None) -> float | None:
            return None if at is None else (at - sent) * 1000

        return StreamSample(
            chunks=self.chunks,
            ttft_ms=since(self.first_chunk_at),
            e2e_ms=since(self.end_at),
            first_event_ms=since(self.first_event_at),
            itls_ms=tuple(self.itls_ms),
            resumes=tuple(self.resumes),
            complete=self.end is not None and self.end.get("type") == "complete",
            ok=not self.problems,
            gaps=self.gaps,
            duplicates=self.duplicates,
            pings=self.pings,
            chunk_events=self.chunk_events,
            problems=tuple(self.problems),
        )

    @property
    def text(self) -> str:
        """The answer as streamed: its chunks' texts, in order."""
        return "".join(self.texts)

    def session_to_read(self) -> str | None:
        """After :meth:`finish`: the session whose saved answer to compare, or None.

        Only an answer that ended with ``complete`` and passed every other check: a broken
        stream has failed already, and one extra request per answer is all this costs.
        """
        if not self.check_answer or self.problems or self.end is None or self.end.get("type") != "complete":
            return None
        sid = self.info.get("session_id")
        return sid if isinstance(sid, str) and sid else None

    def compare_saved(self, saved: SavedSession) -> list[str]:
        """Compare the session read after ``complete`` with the stream; returns every problem."""
        messages = saved.messages
        last = messages[-1] if messages else None
        if last != Turn("model", self.text):
            self.problem(SAVED_ANSWER)
        count = self.end.get("message_count") if self.end is not None else None
        if count != len(messages) or saved.message_count != len(messages):
            self.problem(MESSAGE_COUNT)
        before = messages[:-1] if last is not None and last.role == "model" else messages
        if saved.session_id != self.info.get("session_id"):
            self.problem(CROSS_TALK)
        elif self.history is not None and list(before) != list(self.history):
            self.problem(CROSS_TALK)  # the answer follows another conversation
        return self.problems

    def event(self, ev: Event, resumed_first: bool) -> None:
        """One event; ``resumed_first`` when it is the first of a resumed connection."""
        try:
            data = json.loads(ev.data)
            kind = data["type"]
        except (ValueError, TypeError, KeyError):
            self.problem(BAD_DATA)
            return
        if "\n" in ev.data or not isinstance(data, dict):
            self.problem(BAD_DATA)
        if ev.event != kind:
            self.problem(EVENT_TYPE)
        if resumed_first and not _id_after(ev.id, self.last_id):
            self.problem(RESUME_REPEAT)
        elif not _id_after(ev.id, self.last_id) or self.done:
            self.problem(OUT_OF_ORDER)
        self.last_id = ev.id
        rank = _RANK.get(kind, -1)
        if rank < self.rank or (rank == self.rank and rank != _RANK["chunk"]) or rank < 0:
            self.problem(OUT_OF_ORDER)
        if self.rank < 0 and rank != 0:
            self.problem(OUT_OF_ORDER)  # the first event is session_info
        self.rank = max(rank, self.rank)
        if kind == "session_info":
            self.info = data
            if self.session_id is not None and data.get("session_id") != self.session_id:
                self.problem(CROSS_TALK)
        elif kind == "chunk":
            self._chunk(data, resumed_first)
        elif kind in ("complete", "error"):
            self.end = data
            if kind == "error":
                self.problem(f"{ERROR_EVENT}: {data.get('code')}")

    def _chunk(self, data: dict[str, Any], resumed_first: bool) -> None:
        self.chunk_events += 1
        number = data.get("chunk_number")
        expected = self.last_number + 1
        if number != expected:
            repeat = isinstance(number, int) and number < expected
            if resumed_first:
                self.problem(RESUME_REPEAT if repeat else RESUME_SKIP)
            else:
                self.problem(CHUNK_REPEAT if repeat else CHUNK_GAP)
            if repeat:
                self.duplicates += 1
                return
            jump = number - expected if isinstance(number, int) else 0
            self.gaps += max(1, jump)
            expected += jump
        self.last_number = expected
        self.chunks += 1
        self.texts.append(str(data.get("text", "")))


class Connection:
    """One HTTP response of an answer: feed it bytes with their arrival time (seconds)."""

    def __init__(self, answer: AnswerCheck, start: float, *, resumed: bool) -> None:
        self.answer = answer
        self.start = start
        self.resumed = resumed
        self.parser = SSEParser()
        self.items = 0
        self.events = 0
        self.first_event_at: float | None = None
        self.last_chunk_at: float | None = None
        self.last_data_at = start
        self.chunks = 0
        self.nbytes = 0

    def feed(self, data: bytes, now: float) -> None:
        """Bytes as they arrived at ``now`` (seconds): checked, and their times kept on the answer."""
        answer = self.answer
        if answer.max_silence_ms is not None and (now - self.last_data_at) * 1000 > answer.max_silence_ms:
            answer.problem(SILENCE)
        self.last_data_at = now
        self.nbytes += len(data)
        answer.nbytes += len(data)
        first = self.events == 0
        for item in self.parser.feed(data):
            if self.items == 0 and not isinstance(item, Retry):
                answer.problem(NO_RETRY)
            self.items += 1
            if isinstance(item, Comment):
                answer.pings += item.text == "ping"
            elif isinstance(item, Event):
                self._event(item, now)
        if first and self.events and self.resumed and answer.resumes:
            # The first events of a resumed connection: the catch-up batch they arrived in.
            cut = answer.cut_at
            answer.resumes[-1] = (None if cut is None else (now - cut) * 1000, self.events)

    def _event(self, ev: Event, now: float) -> None:
        answer = self.answer
        before = answer.chunks
        answer.event(ev, resumed_first=self.resumed and self.events == 0)
        self.events += 1
        if self.first_event_at is None:
            self.first_event_at = now
        if answer.first_event_at is None:
            answer.first_event_at = now
        if answer.done and answer.end_at is None:
            answer.end_at = now
        if answer.chunks == before:
            return
        self.chunks += 1
        if answer.first_chunk_at is None:
            answer.first_chunk_at = now
        if self.last_chunk_at is not None:
            answer.itls_ms.append((now - self.last_chunk_at) * 1000)
        self.last_chunk_at = now

    def close(self) -> None:
        """The response ended (or was dropped): a partial line or event left over is lost."""
        if self.items == 0:
            self.answer.problem(NO_RETRY)

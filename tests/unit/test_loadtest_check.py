"""The load tests' stream checker (``loadtest/check.py``): every check, on bytes split anywhere.

Answers are plain data: the check compares a stream with the session the server saved
(``GET /sessions/{id}``, given here as its JSON body), never with a model.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from loadtest import check as c
from loadtest.check import AnswerCheck, SavedSession, Turn, parse_session
from quart_sse.sse import PING, encode_chunk, encode_event, retry_frame

ROOT = Path(__file__).resolve().parents[2]
TEXT = "hello there"
HISTORY = [Turn("user", TEXT)]
PIECES = ["Good ", "question, ", "said the ", "model."]
N = len(PIECES)
SID = "s1"


def events(pieces: list[str] = PIECES, message_count: int = 2) -> list[dict[str, Any]]:
    """The events of an answer made of ``pieces``, in session ``SID``."""
    n = len(pieces)
    out: list[dict[str, Any]] = [
        {"type": "session_info", "session_id": SID, "stream_id": "t1", "model": "any", "events_url": "/e"},
        {"type": "status", "message": "generating", "context_messages": 1},
    ]
    for i, piece in enumerate(pieces, start=1):
        out.append({"type": "chunk", "text": piece, "chunk_number": i, "is_final": i == n})
    out.append(
        {"type": "complete", "total_chunks": n, "processing_time": 0.1, "message_count": message_count}
    )
    return out


def session_body(*messages: tuple[str, str], session_id: str = SID, **extra: Any) -> dict[str, Any]:
    """A ``GET /sessions/{id}`` body (docs/API.md) holding ``messages`` as (role, content)."""
    items = [{"role": role, "content": text, "timestamp": "2026-11-25T16:06:05Z"} for role, text in messages]
    users = sum(role == "user" for role, _ in messages)
    return {
        "session_id": session_id,
        "model": "any",
        "created_at": "2026-11-25T16:06:00Z",
        "last_activity": "2026-11-25T16:06:05Z",
        "message_count": len(items),
        "user_messages": users,
        "ai_messages": len(items) - users,
        "messages": items,
        "generating": None,
        **extra,
    }


RIGHT = session_body(("user", TEXT), ("model", "".join(PIECES)))


def stream(evs: list[dict[str, Any]], first_id: int = 1, retry: bool = True) -> bytes:
    body = b"".join(encode_event(i, ev) for i, ev in enumerate(evs, start=first_id))
    return (retry_frame(2000) if retry else b"") + body


def read(data: bytes, **kw: Any) -> AnswerCheck:
    """An answer whose one connection brought ``data``, finished."""
    answer = AnswerCheck(**{"history": HISTORY, **kw})
    conn = answer.connect(0.0)
    conn.feed(data, 0.0)
    conn.close()
    answer.finish()
    return answer


def run(data: bytes, **kw: Any) -> list[str]:
    return read(data, **kw).problems


def saved(body: dict[str, Any]) -> SavedSession:
    session = parse_session(body)
    assert session is not None
    return session


def compared(body: dict[str, Any], data: bytes | None = None, **kw: Any) -> list[str]:
    """The problems of a stream (a right one by default) compared with the saved ``body``."""
    answer = read(stream(events()) if data is None else data, **kw)
    assert answer.session_to_read() == SID
    return answer.compare_saved(saved(body))


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_a_right_stream_passes_with_any_line_ending_split_at_every_byte(newline):
    data = stream(events()).replace(b"\n", newline)
    for size in (1, 2, 3, 7, len(data)):
        answer = AnswerCheck(history=HISTORY, session_id=None)
        conn = answer.connect(0.0)
        for i in range(0, len(data), size):
            conn.feed(data[i : i + size], 0.0)
        conn.close()
        assert answer.finish() == [], (newline, size)
        assert answer.chunks == N and answer.done


def test_pings_are_counted_and_comments_do_not_break_a_stream():
    evs = [encode_event(i, ev) for i, ev in enumerate(events(), start=1)]
    data = retry_frame(10) + PING + evs[0] + PING + b"".join(evs[1:3]) + PING + b"".join(evs[3:])
    answer = AnswerCheck(history=HISTORY)
    conn = answer.connect(0.0)
    conn.feed(data, 0.0)
    assert answer.finish() == [] and answer.pings == 3


def test_chunk_encoder_bytes_are_read_like_any_event():
    evs = events()
    data = retry_frame(5) + b"".join(
        encode_chunk(i, ev["text"], ev["chunk_number"], ev["is_final"])
        if ev["type"] == "chunk"
        else encode_event(i, ev)
        for i, ev in enumerate(evs, start=1)
    )
    assert run(data) == []


def test_each_broken_stream_gives_its_failure():
    evs = events()
    assert run(stream(evs, retry=False)) == [c.NO_RETRY]
    assert run(stream([evs[0], evs[2], evs[1], *evs[3:]])) == [c.OUT_OF_ORDER]
    assert run(stream([evs[1], evs[0], *evs[2:]])) == [c.OUT_OF_ORDER]
    assert c.CHUNK_GAP in run(stream([*evs[:3], *evs[4:]]))
    assert c.CHUNK_REPEAT in run(stream([*evs[:3], evs[2], *evs[3:]]))
    assert run(stream(evs[:-1])) == [c.NO_COMPLETE]
    wrong_total = [*evs[:-1], {**evs[-1], "total_chunks": N + 1}]
    assert run(stream(wrong_total)) == [c.TOTAL_CHUNKS]
    error = {"type": "error", "code": "cancelled", "message": "x", "session_id": SID}
    assert run(stream([*evs[:-1], error])) == [f"{c.ERROR_EVENT}: cancelled"]
    after_end = stream([*evs, evs[1]])
    assert c.OUT_OF_ORDER in run(after_end)


def test_event_field_must_equal_data_type():
    data = stream(events()).replace(b"event: status", b"event: chunk")
    assert run(data) == [c.EVENT_TYPE]


def test_data_must_be_json_with_a_type():
    data = retry_frame(5) + b"id: 1\nevent: x\ndata: not json\n\n" + stream(events(), 2, retry=False)
    assert c.BAD_DATA in run(data)


def test_ids_must_increase():
    data = stream(events()).replace(b"id: 4\n", b"id: 2\n")
    assert run(data) == [c.OUT_OF_ORDER]


def test_another_sessions_id_in_session_info_is_cross_talk():
    assert run(stream(events()), session_id="another") == [c.CROSS_TALK]
    assert run(stream(events()), session_id=SID) == []


def test_a_session_body_is_read_into_the_load_tests_own_types():
    body = session_body(("user", "q"), ("model", "a"))
    body["messages"][1]["interrupted"] = True
    assert parse_session(body) == SavedSession(SID, 2, (Turn("user", "q"), Turn("model", "a", True)))
    bads: list[Any] = [
        [],
        {**RIGHT, "session_id": 3},
        {**RIGHT, "message_count": "2"},
        {**RIGHT, "message_count": True},
        {**RIGHT, "messages": None},
        {**RIGHT, "messages": ["hi"]},
        {**RIGHT, "messages": [{"role": "user"}]},
        {"error": {"code": "session_not_found", "message": "no session s1"}},
    ]
    for bad in bads:
        assert parse_session(bad) is None, bad


def test_the_saved_session_is_read_only_after_a_right_stream_that_completed():
    assert read(stream(events())).session_to_read() == SID
    assert read(stream(events()), check_answer=False).session_to_read() is None
    evs = events()
    error = {"type": "error", "code": "cancelled", "message": "x", "session_id": SID}
    assert read(stream([*evs[:-1], error])).session_to_read() is None
    assert read(stream(evs[:-1])).session_to_read() is None  # no complete
    assert read(stream([*evs[:3], *evs[4:]])).session_to_read() is None  # a chunk gap: failed already
    no_id = [{**evs[0], "session_id": None}, *evs[1:]]
    assert read(stream(no_id)).session_to_read() is None


def test_an_answer_equal_to_the_saved_one_passes():
    assert compared(RIGHT) == []
    # A later turn: the saved session holds the whole conversation the client knows.
    history = [Turn("user", "first"), Turn("model", "an answer"), Turn("user", TEXT)]
    body = session_body(("user", "first"), ("model", "an answer"), ("user", TEXT), ("model", "".join(PIECES)))
    assert compared(body, stream(events(message_count=4)), history=history) == []
    # Without a known history, only the answer and the count are compared.
    assert compared(body, stream(events(message_count=4)), history=None) == []


def test_an_answer_that_differs_from_the_saved_one_fails():
    assert compared(session_body(("user", TEXT), ("model", "Good question, said the model"))) == [
        c.SAVED_ANSWER
    ]
    # A stream that lost or doubled a piece yet numbered its chunks right.
    doubled = stream(events(["Good ", "question, ", "said the ", "said the ", "model."]))
    assert compared(RIGHT, doubled) == [c.SAVED_ANSWER]
    # The saved answer marked interrupted, or not the model's, or missing.
    cut = session_body(("user", TEXT), ("model", "".join(PIECES)))
    cut["messages"][1]["interrupted"] = True
    assert compared(cut) == [c.SAVED_ANSWER]
    assert compared(session_body(("user", TEXT), ("user", "".join(PIECES)))) == [c.SAVED_ANSWER, c.CROSS_TALK]
    assert compared(session_body(("user", TEXT)), stream(events(message_count=1))) == [c.SAVED_ANSWER]
    assert compared(session_body(), stream(events(message_count=0))) == [c.SAVED_ANSWER, c.CROSS_TALK]


def test_a_message_count_other_than_the_saved_messages_fails():
    assert compared(RIGHT, stream(events(message_count=3))) == [c.MESSAGE_COUNT]
    assert compared({**RIGHT, "message_count": 3}) == [c.MESSAGE_COUNT]
    no_count = [*events()[:-1], {"type": "complete", "total_chunks": N, "processing_time": 0.1}]
    assert compared(RIGHT, stream(no_count)) == [c.MESSAGE_COUNT]


def test_a_saved_session_that_holds_another_conversation_is_cross_talk():
    other = session_body(("user", "someone else's question"), ("model", "".join(PIECES)))
    assert compared(other) == [c.CROSS_TALK]
    longer = session_body(("user", "a"), ("model", "b"), ("user", TEXT), ("model", "".join(PIECES)))
    assert compared(longer, stream(events(message_count=4))) == [c.CROSS_TALK]
    assert compared({**RIGHT, "session_id": "another"}) == [c.CROSS_TALK]


def test_the_load_tests_and_the_client_import_only_the_sse_module_of_the_server():
    for folder in ("loadtest", "client"):
        for path in sorted((ROOT / folder).glob("**/*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                for name in names:
                    if name.split(".")[0] == "quart_sse":
                        assert name == "quart_sse.sse", f"{path.relative_to(ROOT)} imports {name}"


def resumed(cut_after: int, resume_from: int) -> list[str]:
    """Events 1..cut_after on a first connection, then from ``resume_from`` on a second."""
    evs = events()
    answer = AnswerCheck(history=HISTORY)
    first = answer.connect(0.0)
    first.feed(stream(evs[:cut_after]), 0.0)
    second = answer.connect(1.0)
    second.feed(retry_frame(5) + stream(evs[resume_from - 1 :], first_id=resume_from, retry=False), 1.0)
    second.close()
    return answer.finish()


def test_a_resume_that_goes_on_from_the_last_id_passes():
    assert resumed(cut_after=4, resume_from=5) == []


def test_a_resume_that_repeats_or_skips_an_event_fails():
    assert resumed(cut_after=4, resume_from=4) == [c.RESUME_REPEAT]
    assert c.RESUME_SKIP in resumed(cut_after=4, resume_from=6)


def test_figures_are_times_since_the_message_and_between_chunks():
    evs = [encode_event(i, ev) for i, ev in enumerate(events(), start=1)]
    answer = AnswerCheck(history=HISTORY)
    conn = answer.connect(10.0)  # the message is sent with the first request
    conn.feed(retry_frame(5), 10.001)
    conn.feed(evs[0] + evs[1], 10.002)  # session_info, status
    conn.feed(evs[2], 10.010)  # chunk 1
    conn.feed(evs[3] + evs[4], 10.030)  # chunks 2 and 3, together
    assert conn.chunks == 3 and answer.chunks == 3
    answer.cut(10.031)
    # The resume: chunk 4 and complete arrive in its first read (the catch-up batch).
    answer.resuming()
    again = answer.connect(20.0)
    again.feed(retry_frame(5) + evs[5] + evs[6], 20.005)
    again.close()
    assert answer.finish() == []

    s = answer.sample()
    assert s.first_event_ms == pytest.approx(2.0)
    assert s.ttft_ms == pytest.approx(10.0) and s.e2e_ms == pytest.approx(10_005.0)
    # Gaps are between chunks of one connection: none across the resume.
    assert [round(gap) for gap in s.itls_ms] == [20, 0]
    assert s.chunks == 4 and s.tpot_ms == pytest.approx((10_005 - 10) / 3)
    assert len(s.resumes) == 1
    resume_ms, replayed = s.resumes[0]
    assert resume_ms == pytest.approx(20.005 * 1000 - 10.031 * 1000) and replayed == 2
    assert s.complete and s.ok and s.gaps == 0 and s.duplicates == 0 and s.chunk_events == 4


def numbered(*numbers: int, total: int | None = None) -> AnswerCheck:
    """An answer whose chunks carry ``numbers``, and ``complete`` says ``total`` chunks."""
    evs = events([f"p{n} " for n in numbers])
    for ev, n in zip(evs[2:], numbers, strict=False):
        ev["chunk_number"] = n
    evs[-1]["total_chunks"] = len(numbers) if total is None else total
    return read(stream(evs), check_answer=False)


def test_gaps_count_the_chunks_never_received():
    skip = numbered(1, 2, 4, 5)
    assert skip.gaps == 1 and skip.duplicates == 0 and c.CHUNK_GAP in skip.problems
    assert numbered(1, 4, 5, 9).gaps == 5
    lost_end = numbered(1, 2, total=4)  # complete says 4: chunks 3 and 4 never came
    assert lost_end.gaps == 2 and c.TOTAL_CHUNKS in lost_end.problems
    assert numbered(1, 2, 3).gaps == 0


def test_duplicates_count_the_chunks_received_twice():
    twice = numbered(1, 2, 2, 3, 1, total=3)
    assert twice.duplicates == 2 and twice.gaps == 0 and c.CHUNK_REPEAT in twice.problems
    assert twice.sample().chunk_events == 5 and twice.chunks == 3


def test_a_resume_that_repeats_or_skips_counts_a_duplicate_or_a_gap():
    def answer(cut_after: int, resume_from: int) -> AnswerCheck:
        evs = events()
        a = AnswerCheck(history=HISTORY)
        a.connect(0.0).feed(stream(evs[:cut_after]), 0.0)
        second = a.connect(1.0)
        second.feed(retry_frame(5) + stream(evs[resume_from - 1 :], first_id=resume_from, retry=False), 1.0)
        a.finish()
        return a

    assert (answer(4, 5).gaps, answer(4, 5).duplicates) == (0, 0)
    assert answer(4, 4).duplicates == 1
    assert answer(4, 6).gaps == 1
    ended_early = AnswerCheck(history=HISTORY)
    ended_early.connect(0.0).feed(stream(events()[:4]), 0.0)
    ended_early.skipped_end()  # a resume answered 204 before the end
    assert ended_early.gaps == 1 and c.RESUME_SKIP in ended_early.finish()


def test_silence_longer_than_allowed_is_a_failure():
    data = stream(events())
    answer = AnswerCheck(history=HISTORY, max_silence_ms=1000)
    conn = answer.connect(0.0)
    conn.feed(data[:20], 0.5)
    conn.feed(data[20:], 2.0)
    assert answer.finish() == [c.SILENCE]


def test_an_empty_response_lacks_retry_and_complete():
    answer = AnswerCheck()
    answer.connect(0.0).close()
    assert answer.finish() == [c.NO_RETRY, c.NO_COMPLETE]

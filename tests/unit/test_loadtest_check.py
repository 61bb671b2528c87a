"""The load tests' stream checker (``loadtest/check.py``): every check, on bytes split anywhere."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest import check as c
from loadtest.check import AnswerCheck
from quart_sse.providers.simulated import answer_pieces
from quart_sse.sse import PING, encode_chunk, encode_event, retry_frame
from quart_sse.stores.base import Message

TEXT = "hello there"
HISTORY = [Message("user", TEXT, "")]
N = 4
SID = "s1"


def events(history: list[Message] = HISTORY, n: int = N, model: str = "simulated") -> list[dict[str, Any]]:
    """The events of a right answer to ``history`` (the offline model's text)."""
    pieces = answer_pieces(history[-1].content, sum(m.role == "user" for m in history), n)
    out: list[dict[str, Any]] = [
        {"type": "session_info", "session_id": SID, "stream_id": "t1", "model": model, "events_url": "/e"},
        {"type": "status", "message": "generating", "context_messages": len(history)},
    ]
    for i, piece in enumerate(pieces, start=1):
        out.append({"type": "chunk", "text": piece, "chunk_number": i, "is_final": i == n})
    out.append({"type": "complete", "total_chunks": n, "processing_time": 0.1, "message_count": 2})
    return out


def stream(evs: list[dict[str, Any]], first_id: int = 1, retry: bool = True) -> bytes:
    body = b"".join(encode_event(i, ev) for i, ev in enumerate(evs, start=first_id))
    return (retry_frame(2000) if retry else b"") + body


def run(data: bytes, **kw: Any) -> list[str]:
    answer = AnswerCheck(**{"history": HISTORY, **kw})
    conn = answer.connect(0.0)
    conn.feed(data, 0.0)
    conn.close()
    return answer.finish()


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


def test_cross_talk_is_an_answer_to_another_history():
    other = [Message("user", "someone else's question", "")]
    assert run(stream(events(other))) == [c.CROSS_TALK]
    # A different turn count is another answer too.
    two_turns = [Message("user", "a", ""), Message("model", "b", ""), Message("user", TEXT, "")]
    assert run(stream(events(two_turns))) == [c.CROSS_TALK]
    assert run(stream(events(two_turns)), history=two_turns) == []
    # Another session's id is cross-talk as well.
    assert run(stream(events()), session_id="another") == [c.CROSS_TALK]


def test_the_answer_is_checked_for_the_offline_model_only_unless_asked():
    other = [Message("user", "someone else's question", "")]
    real_model = stream(events(other, model="gemini-2.0-flash"))
    assert run(real_model) == []
    assert run(real_model, check_answer=True) == [c.CROSS_TALK]
    assert run(stream(events(other)), check_answer=False) == []


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


def test_figures_are_times_since_the_request_and_between_chunks():
    evs = [encode_event(i, ev) for i, ev in enumerate(events(), start=1)]
    answer = AnswerCheck(history=HISTORY)
    conn = answer.connect(10.0)
    assert conn.feed(retry_frame(5), 10.001) == []
    figs = conn.feed(evs[0] + evs[1], 10.002)
    assert [f.name for f in figs] == ["first event"] and figs[0].ms == pytest.approx(2.0)
    figs = conn.feed(evs[2], 10.010)
    assert [f.name for f in figs] == ["first chunk"] and figs[0].ms == pytest.approx(10.0)
    figs = conn.feed(evs[3] + evs[4], 10.030)
    assert [(f.name, round(f.ms)) for f in figs] == [("chunk gap", 20), ("chunk gap", 0)]
    assert conn.chunks == 3 and answer.chunks == 3
    # A resumed connection reports its own first event, and no first chunk.
    again = answer.connect(20.0)
    figs = again.feed(retry_frame(5) + evs[5], 20.005)
    assert [(f.name, round(f.ms)) for f in figs] == [("resume first event", 5)]


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

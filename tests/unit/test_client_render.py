"""client.render and client.answer's views: what the person (or the script) sees."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from rich.console import Console, RenderableType
from rich.text import Text

from client import render
from client.answer import PlainView, RichView
from client.stats import ClientStats, Outcome
from client.stream import Reconnecting, Resumed


def text_of(renderable: RenderableType, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(renderable)
    return console.export_text()


def test_short_ids_and_durations():
    assert render.short("a1b2c3d4e5f6") == "a1b2c3d4…"
    assert render.short("abc") == "abc"
    assert render.short(None) == "none"
    assert render.hms(0) == "0:00:00"
    assert render.hms(323) == "0:05:23"
    assert render.hms(5025) == "1:23:45"


def test_ages_of_api_timestamps():
    now = datetime(2025, 1, 2, 14, 32, 17, tzinfo=UTC)
    assert render.age("2025-01-02T14:26:54Z", now) == "0:05:23"
    assert render.age((now - timedelta(hours=2)).isoformat(), now) == "2:00:00"
    assert render.age("not a time", now) == "?"
    assert render.local_time("nonsense") == "?"


def test_completed_summary_box():
    outcome = Outcome("complete", chunks=23, seconds=2.1114, message_count=8, finish_reason="stop")
    out = text_of(render.summary(outcome))
    assert "🌊 SSE STREAM COMPLETED [" in out
    for line in ("Total Chunks: 23", "Total Time: 2.111s", "Context Messages: 8", "Status: SUCCESS"):
        assert " ".join(line.split()) in " ".join(out.split())
    assert out.splitlines()[0].startswith("┌")


def test_failed_and_cancelled_summary_boxes():
    failed = text_of(render.summary(Outcome("model_error", chunks=3, error="the model failed: Boom")))
    assert "SSE STREAM FAILED" in failed
    assert "ERROR (model_error)" in failed
    assert "the model failed: Boom" in failed
    assert "CANCELLED" in text_of(render.summary(Outcome("cancelled", chunks=1)))
    reconnected = text_of(render.summary(Outcome("complete", chunks=2, reconnects=2)))
    assert "Reconnections:" in reconnected


def test_sessions_list_shows_title_count_last_activity_and_marks_the_current_one():
    now = datetime.now(UTC)
    sessions = [
        {
            "session_id": "a1b2c3d4e5",
            "title": "How do I\nresume a stream with Last-Event-ID after a long cut?",
            "message_count": 8,
            "last_activity": (now - timedelta(minutes=5, seconds=3)).isoformat(),
        },
        {
            "session_id": "e5f6g7h8i9",
            "title": "",
            "message_count": 12,
            "last_activity": (now - timedelta(hours=3)).isoformat(),
        },
    ]
    out = text_of(render.sessions_list(sessions, "e5f6g7h8i9"))
    assert "ALL ACTIVE SESSIONS (2)" in out
    lines = [line for line in out.splitlines() if "msgs" in line]
    assert " 1. a1b2c3d4…  How do I resume a stream with Last-Even…  8 msgs, 5 min ago" in lines[0]
    assert "CURRENT" not in lines[0]
    assert " 2. e5f6g7h8…  (empty)  12 msgs, 3 h ago ← CURRENT" in lines[1]
    assert "No sessions" in text_of(render.sessions_list([], None))


def test_ago():
    now = datetime(2025, 1, 2, 14, 32, 15, tzinfo=UTC)
    assert render.ago("2025-01-02T14:32:00Z", now) == "just now"
    assert render.ago("2025-01-02T14:02:00Z", now) == "30 min ago"
    assert render.ago("2024-12-30T14:32:00Z", now) == "3 days ago"
    assert render.ago("never", now) == "?"


def test_session_info_shows_the_whole_id_and_the_counts():
    data = {
        "session_id": "a1b2c3d4e5f6",
        "model": "gemini-2.0-flash",
        "message_count": 8,
        "user_messages": 4,
        "ai_messages": 4,
        "created_at": "2025-01-02T14:26:52Z",
        "last_activity": "2025-01-02T14:30:00Z",
    }
    out = " ".join(text_of(render.session_info(data)).split())
    for part in (
        "SESSION INFO",
        "Session ID: a1b2c3d4e5f6",
        "Model: gemini-2.0-flash",
        "Total Messages: 8",
        "User Messages: 4",
        "AI Messages: 4",
    ):
        assert part in out


def test_client_and_server_statistics():
    stats = ClientStats()
    stats.record(Outcome("complete", chunks=20, seconds=2.0), new_session=True)
    stats.record(Outcome("model_error", chunks=5), new_session=False)
    out = " ".join(text_of(render.client_stats(stats, "a1b2c3d4e5", 4)).split())
    for part in (
        "Messages Sent: 2",
        "Successful Streams: 1",
        "Failed Streams: 1",
        "Total Chunks Received: 25",
        "Avg Chunks per Stream: 12.5",
        "Sessions Created: 1",
        "Avg Response Time: 2.000s",
        "Current Session: a1b2c3d4…",
        "Session Messages: 4",
    ):
        assert part in out
    server = {
        "uptime_s": 5025.2,
        "total_requests": 47,
        "successful_requests": 45,
        "failed_requests": 2,
        "active_sessions": 3,
        "active_streams": 0,
        "sessions_created": 8,
        "average_response_time_s": 2.234,
        "model": "gemini-2.0-flash",
    }
    out = " ".join(text_of(render.server_stats(server)).split())
    for part in ("Server Uptime: 1:23:45", "Total Requests: 47", "Failed: 2", "Avg Response Time: 2.234s"):
        assert part in out


def test_help_lists_every_command_and_key():
    from client.commands import HANDLERS

    out = text_of(render.help_table(), width=160)
    listed = {name.split()[0] for name, _ in render.COMMANDS}
    aliases = {"/?", "/exit", "/q"}
    assert set(HANDLERS) - aliases == listed  # every command has a line, and nothing else does
    for name, _ in [*render.COMMANDS, *render.KEYS]:
        assert name in out
    for key in ("Enter", "Alt-Enter", "Ctrl-X Ctrl-E", "Ctrl-R", "Ctrl-C", "Ctrl-D"):
        assert key in out


def test_plain_view_writes_only_the_text_to_stdout():
    out, err = io.StringIO(), io.StringIO()
    view = PlainView(out, err, "prog")
    view.session("abc", "m")
    view.status("Generating response...", 1)
    view.text("Hello ")
    view.notice(Reconnecting(1, 8, 0.5, "server disconnected", started=True))
    view.notice(Resumed(1))
    view.text("world")
    view.finish(Outcome("complete", text="Hello world", chunks=2))
    assert out.getvalue() == "Hello world\n"
    assert err.getvalue() == (
        "prog: reconnecting (attempt 1/8) in 0.5s: server disconnected\nprog: resumed after 1 attempt\n"
    )


def test_plain_view_reports_an_error_on_stderr():
    out, err = io.StringIO(), io.StringIO()
    view = PlainView(out, err, "prog")
    view.text("Partial")
    view.finish(Outcome("model_error", text="Partial", chunks=1, error="the model failed"))
    assert out.getvalue() == "Partial\n"
    assert err.getvalue() == "prog: the answer ended with an error (model_error): the model failed\n"


def test_rich_view_shows_header_answer_and_summary():
    console = Console(file=io.StringIO(), width=80, color_system=None, record=True)
    view = RichView(console)
    view.session("a1b2c3d4e5f6", "simulated")
    view.status("Generating response...", 3)
    view.text("**Hello** ")
    view.notice(Reconnecting(1, 8, 0.5, "server disconnected", started=True))
    view.notice(Resumed(1))
    view.text("world")
    view.finish(Outcome("complete", text="**Hello** world", chunks=2, message_count=4))
    out = console.export_text()
    assert "💭 Generating response... (context: 3 messages)" in out
    assert "🤖 AI Response (Streaming) (a1b2c3d4… - simulated)" in out
    assert "Hello world" in out  # rendered as Markdown: no asterisks
    assert "SSE STREAM COMPLETED" in out
    assert out.rstrip().endswith("┘")


def test_a_key_s_own_sessions_are_not_called_all_sessions():
    sessions = [{"session_id": "a1b2c3d4e5", "message_count": 2, "created_at": "2025-01-02T14:26:52Z"}]
    out = text_of(render.sessions_list(sessions, None, "own"))
    assert "YOUR SESSIONS (1)" in out and "ALL" not in out
    assert "No sessions of this API key." in text_of(render.sessions_list([], None, "own"))


# Long answers: finished blocks once, a bounded live tail, a bounded redraw rate -----------


def test_block_splitter_hands_out_finished_blocks_once_in_order():
    from client.blocks import BlockSplitter

    text = "# Title\n\npara one\nstill para\n\n- a\n- b\n\n```py\nx = 1\n\ny = 2\n```\n\nlast"
    splitter = BlockSplitter()
    out = []
    for char in text:  # one character at a time, the worst split there is
        splitter.feed(char)
        out.append(splitter.take_finished())
    out.append(splitter.take_all())
    assert "".join(out) == text
    pieces = [p for p in out if p]
    assert pieces == [
        "# Title\n\n",
        "para one\nstill para\n\n",
        "- a\n- b\n\n",
        "```py\nx = 1\n\ny = 2\n```\n\nlast",  # "last" has no newline yet: nothing cut for it
    ]


def test_a_half_written_line_never_decides_a_cut():
    from client.blocks import BlockSplitter

    splitter = BlockSplitter()
    splitter.feed("Para\n#")  # "#" alone would be a heading; "#tag" is not
    assert splitter.take_finished() == ""
    splitter.feed("tag continues\n")
    assert splitter.take_finished() == ""
    assert splitter.take_all() == "Para\n#tag continues\n"


async def test_rich_view_redraws_at_a_bounded_rate_and_prints_each_block_once():
    now = [0.0]
    console = Console(file=io.StringIO(), width=60, height=24, color_system=None, record=True)
    view = RichView(console, interval=0.1, clock=lambda: now[0])
    view.status("Generating response...", 1)
    answer = "".join(f"line {n:03d} of the answer\n\n" for n in range(300))
    for k in range(0, len(answer), 7):
        view.text(answer[k : k + 7])
        now[0] += 0.001  # 0.001 s a piece: about 1,100 pieces in about 1.1 s
    view.finish(Outcome("complete", text=answer, chunks=1))
    assert view.draws <= 1 + 1.2 / 0.1  # one at the start, then at most ten a second
    out = console.export_text()
    for n in range(300):
        assert out.count(f"line {n:03d} of the answer") == 1


def test_the_live_tail_is_at_most_a_few_lines_however_long_the_block():
    from client.answer import _Tail

    console = Console(file=io.StringIO(), width=40, height=24, color_system=None, record=True)
    console.print(_Tail("word " * 2000, Text("status"), 8))
    lines = console.export_text().splitlines()
    assert len(lines) == 9  # eight lines of text (the first a "⋮"), then the status line
    assert lines[0] == "⋮" and lines[-1] == "status"


def test_copy_takes_the_last_code_block_as_osc_52():
    import base64

    from client.commands import last_code_block, osc52

    answer = "Try:\n\n```sh\nmake run\n```\n\nthen\n\n```python\nprint('hi')\n```\n\nDone."
    assert last_code_block(answer) == "print('hi')\n"
    assert last_code_block("no code here") is None
    sequence = osc52("print('hi')\n")
    assert sequence.startswith("\x1b]52;c;") and sequence.endswith("\x07")
    assert base64.b64decode(sequence[7:-1]) == b"print('hi')\n"


def test_plain_mode_has_no_boxes_or_emoji():
    render.set_plain(True)
    try:
        out = text_of(render.summary(Outcome("complete", chunks=3)))
        out += text_of(render.help_table()) + text_of(render.banner("http://x"))
        out += text_of(render.sessions_list([{"session_id": "abc", "title": "t"}], "abc"))
    finally:
        render.set_plain(False)
    assert "┌" not in out and "│" not in out and "🌊" not in out
    assert "SSE STREAM COMPLETED" in out and "Status: SUCCESS" in out and "Ctrl-R" in out

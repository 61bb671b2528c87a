"""client.render and client.answer's views: what the person (or the script) sees."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from rich.console import Console, RenderableType

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


def test_sessions_list_marks_the_current_one():
    sessions = [
        {"session_id": "a1b2c3d4e5", "message_count": 8, "created_at": "2025-01-02T14:26:52Z"},
        {"session_id": "e5f6g7h8i9", "message_count": 12, "created_at": "2025-01-02T14:15:30Z"},
    ]
    out = text_of(render.sessions_list(sessions, "e5f6g7h8i9"))
    assert "ALL ACTIVE SESSIONS (2)" in out
    lines = [line for line in out.splitlines() if "msgs" in line]
    assert "1. a1b2c3d4… (8 msgs," in lines[0] and "CURRENT" not in lines[0]
    assert "2. e5f6g7h8… (12 msgs," in lines[1] and "← CURRENT" in lines[1]
    assert "No sessions" in text_of(render.sessions_list([], None))


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


def test_help_lists_every_command():
    out = text_of(render.help_table(), width=120)
    for command in (
        "/help",
        "/stats",
        "/server",
        "/health",
        "/docs",
        "/demo",
        "/clear",
        "/quit",
        "/new",
        "/info",
        "/sessions",
        "/switch",
        "/reset",
        "/delete",
    ):
        assert command in out


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

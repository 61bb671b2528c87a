"""Logging's pure parts: the JSON formatter, LOG_FORMAT and LOG_ACCESS, the route templates.

The whole (a server on a pipe) is tests/e2e/test_logs.py; here each part on its own.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

import pytest

from quart_sse import console
from quart_sse.app import create_app
from quart_sse.config import ConfigError, Settings
from quart_sse.http.access import UNMATCHED, Routes, template
from quart_sse.http.edge import Edge


def record(message: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    made = logging.LogRecord("quart_sse.test", logging.WARNING, __file__, 1, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def test_json_lines_give_time_level_logger_message_then_the_extra_fields():
    line = console.JsonLines().format(record("%d streams", 3, stream_id="abc", status=200))
    assert "\n" not in line
    data = json.loads(line)
    assert list(data) == ["time", "level", "logger", "message", "stream_id", "status"]
    assert data["level"] == "WARNING" and data["logger"] == "quart_sse.test"
    assert data["message"] == "3 streams" and data["stream_id"] == "abc" and data["status"] == 200
    moment = datetime.fromisoformat(data["time"])
    assert moment.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 3600


def test_json_lines_keep_a_traceback_in_the_one_line():
    line = console.JsonLines().format(record("failed", exc=True))
    assert "\n" not in line
    data = json.loads(line)
    assert "RuntimeError: boom" in data["exc_info"] and "Traceback" in data["exc_info"]


def test_json_lines_escape_what_would_break_a_line():
    data = json.loads(console.JsonLines().format(record("a\nb\x1b[31m\ud800")))
    assert data["message"] == "a\nb\x1b[31m\ud800"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("auto", "auto"),
        ("on", "on"),
        ("OFF", "off"),
        ("1", "on"),
        ("0", "off"),
        ("true", "on"),
        ("no", "off"),
    ],
)
def test_log_access_reads_auto_on_off_and_flags(raw, expected):
    assert Settings.from_env({"LOG_ACCESS": raw}).log_access == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOG_ACCESS": "sometimes"}, "LOG_ACCESS has value 'sometimes': expected auto, on or off (1 or 0)"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT has value 'xml': expected one of text, json"),
    ],
)
def test_a_bad_log_setting_is_refused_in_one_line(env, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("tty", "log_format", "log_access", "wanted"),
    [
        (False, "text", "auto", True),  # a pipe, a file, a PaaS log drain
        (True, "text", "auto", False),  # the Rich console stays as it is
        (True, "json", "auto", True),
        (True, "text", "on", True),
        (False, "json", "off", False),
    ],
)
def test_access_lines_by_terminal_format_and_log_access(monkeypatch, tty, log_format, log_access, wanted):
    monkeypatch.setattr(console, "_TTY", tty)
    monkeypatch.setattr(console, "_json", False)
    settings = Settings.from_env({"LOG_FORMAT": log_format, "LOG_ACCESS": log_access})
    assert console.use_settings(settings) is wanted


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("/sessions/<session_id>", "/sessions/{session_id}"),
        ("/docs/assets/<path:name>", "/docs/assets/{name}"),
        ("/health", "/health"),
    ],
)
def test_quart_rules_become_route_templates(rule, expected):
    assert template(rule) == expected


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/streams/abc/events", "/streams/{stream_id}/events"),  # the edge's own routes
        ("POST", "/chat/stream", "/chat/stream"),
        ("DELETE", "/sessions/s1", "/sessions/{session_id}"),  # the Quart app's
        ("PUT", "/sessions/s1", "/sessions/{session_id}"),  # a 405: the path has a route
        ("POST", "/streams/abc/cancel", "/streams/{stream_id}/cancel"),
        ("GET", "/streams/abc/events/more", UNMATCHED),
        ("GET", "/no/such/page", UNMATCHED),
        ("GET", "/sessions/s1/", UNMATCHED),  # a redirect, not a route
    ],
)
def test_routes_find_the_template_of_any_path(method, path, expected):
    app = create_app(Settings.from_env({}))
    routes = Routes((pattern for pattern, _ in Edge.ROUTES), app.url_map)
    found, params = routes.find(method, path)
    assert found == expected
    if "{stream_id}" in found:
        assert params["stream_id"] == "abc"

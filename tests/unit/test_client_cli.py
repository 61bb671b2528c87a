"""client.__main__ (arguments, exit codes) and client.commands (against a stand-in API)."""

from __future__ import annotations

import io
from typing import Any, cast

import pytest
from rich.console import Console

from client import commands
from client.__main__ import exit_code, parse_args
from client.api import ChatAPI, RequestFailed, Unreachable
from client.chat import ChatApp
from client.stats import Outcome
from client.stream import ReconnectPolicy


def test_defaults():
    args, policy = parse_args([], environ={})
    assert args.url == "http://localhost:8000"
    assert (args.session, args.message, args.api_key) == (None, None, None)
    assert policy == ReconnectPolicy(attempts=8, base=0.5, cap=10.0, idle_timeout=35.0)


def test_environment_then_options():
    env = {
        "QUART_SSE_URL": "http://h:1",
        "QUART_SSE_CHAT_ATTEMPTS": "3",
        "QUART_SSE_CHAT_BACKOFF": "0.1",
        "QUART_SSE_CHAT_BACKOFF_MAX": "2",
        "QUART_SSE_CHAT_IDLE_TIMEOUT": "4",
        "QUART_SSE_API_KEY": "k",
    }
    args, policy = parse_args([], environ=env)
    assert (args.url, args.api_key) == ("http://h:1", "k")
    assert policy == ReconnectPolicy(attempts=3, base=0.1, cap=2.0, idle_timeout=4.0)
    args, policy = parse_args(["--url", "https://x", "--reconnect-attempts", "1", "-m", "hi"], environ=env)
    assert (args.url, args.message, policy.attempts) == ("https://x", "hi", 1)


@pytest.mark.parametrize(
    "argv",
    [
        ["--message", "  "],
        ["--url", "localhost:8000"],
        ["--idle-timeout", "0"],
        ["--backoff", "x"],
        ["--reconnect-attempts", "-1"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv, environ={})
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "code"),
    [("complete", 0), ("model_error", 1), ("cancelled", 1), ("refused", 1), ("lost", 3)],
)
def test_exit_codes(status, code):
    assert exit_code(Outcome(status)) == code


class StandInAPI:
    """The calls the commands make, on a dict of sessions."""

    base_url = "http://stand-in"

    def __init__(self) -> None:
        self.sessions_by_id: dict[str, dict[str, Any]] = {}
        self.unreachable = False
        self.made = 0

    def _check(self) -> None:
        if self.unreachable:
            raise Unreachable("connection refused")

    def _get(self, session_id: str) -> dict[str, Any]:
        self._check()
        if session_id not in self.sessions_by_id:
            raise RequestFailed(404, "session_not_found", f"no session {session_id}")
        return self.sessions_by_id[session_id]

    async def new_session(self) -> dict[str, Any]:
        self._check()
        self.made += 1
        sid = f"{self.made:02d}" + "f" * 30
        self.sessions_by_id[sid] = {
            "session_id": sid,
            "model": "m",
            "message_count": 0,
            "created_at": "2025-01-02T14:26:52Z",
        }
        return {"session_id": sid, "model": "m", "created_at": "2025-01-02T14:26:52Z"}

    async def session(self, session_id: str) -> dict[str, Any]:
        return self._get(session_id)

    async def sessions(self) -> list[dict[str, Any]]:
        self._check()
        return list(self.sessions_by_id.values())

    async def session_page(self) -> dict[str, Any]:
        sessions = await self.sessions()
        return {"sessions": sessions, "count": len(sessions), "scope": "all"}

    async def clear_session(self, session_id: str) -> None:
        self._get(session_id)["message_count"] = 0

    async def delete_session(self, session_id: str) -> None:
        self._get(session_id)
        del self.sessions_by_id[session_id]


def make_app() -> tuple[ChatApp, StandInAPI, io.StringIO]:
    api = StandInAPI()
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    return ChatApp(cast(ChatAPI, api), ReconnectPolicy(), console), api, out


async def test_session_commands():
    app, api, out = make_app()
    assert await commands.dispatch(app, "/info")
    assert "No current session" in out.getvalue()
    assert await commands.dispatch(app, "/new")
    first = app.session_id
    assert first in api.sessions_by_id and app.stats.sessions_created == 1
    await commands.dispatch(app, "/new")
    second = app.session_id
    assert second is not None and second != first
    api.sessions_by_id[second]["message_count"] = 4
    await commands.dispatch(app, "/reset")
    assert api.sessions_by_id[second]["message_count"] == 0
    await commands.dispatch(app, "/delete")
    assert app.session_id is None and second not in api.sessions_by_id
    assert "deleted" in out.getvalue()


async def test_switch_by_id_or_unique_prefix():
    app, api, out = make_app()
    for _ in range(2):
        await api.new_session()
    ids = sorted(api.sessions_by_id)
    await commands.dispatch(app, f"/switch {ids[1]}")
    assert app.session_id == ids[1]
    await commands.dispatch(app, "/switch 01")
    assert app.session_id == ids[0]
    await commands.dispatch(app, "/switch 0")
    assert app.session_id == ids[0]
    assert "2 sessions match '0'" in out.getvalue()
    await commands.dispatch(app, "/switch zz")
    assert "No session matches 'zz'" in out.getvalue()


async def test_failures_are_one_line_and_quit_returns_false():
    app, api, out = make_app()
    api.unreachable = True
    assert await commands.dispatch(app, "/sessions")
    assert out.getvalue() == "✖ Cannot reach the server at http://stand-in (connection refused).\n"
    api.unreachable = False
    app.session_id = "gone"
    assert await commands.dispatch(app, "/info")
    assert "✖ no session gone (404 session_not_found)" in out.getvalue()
    assert await commands.dispatch(app, "/what")
    assert "Unknown command /what" in out.getvalue()
    assert await commands.dispatch(app, "/quit") is False
    assert await commands.dispatch(app, "/EXIT") is False

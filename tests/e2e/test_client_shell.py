"""The terminal client as a shell tool: keys, pipes, start-up checks and session navigation,
the real client against the real server, in pseudo-terminals (pexpect) and real pipes."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import urllib.request
from typing import Any

import pexpect
import pytest

from tests.e2e.test_client import ANSI, FAST, ROOT, client_env, get, new_session, prompt, transcript


def spawn(url: str, *args: str, **env: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "client", "--url", url, *FAST, *args],
        env=client_env(**env),
        cwd=str(ROOT),
        encoding="utf-8",
        dimensions=(50, 150),
        timeout=30,
    )
    child.logfile_read = io.StringIO()
    return child


def post(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        result: dict[str, Any] = json.loads(r.read())
        return result


def full_id(child: pexpect.spawn) -> str:
    child.sendline("/info")
    child.expect(rf"Session ID:{ANSI}([0-9a-f]{{32}})")
    sid = child.match.group(1)
    prompt(child)
    return str(sid)


def user_messages(url: str, sid: str) -> list[str]:
    return [m["content"] for m in get(f"{url}/sessions/{sid}")[1]["messages"] if m["role"] == "user"]


def wait_answered(child: pexpect.spawn) -> None:
    child.expect("SSE STREAM COMPLETED")
    prompt(child)


# Pipes -------------------------------------------------------------------------------------


def test_a_closed_pipe_ends_quietly(start_server):
    """``quart-sse-chat -m … | head``: the reader goes early; no traceback, 141 or 0."""
    srv = start_server(SIM_RESPONSE_CHUNKS="6000", SIM_CHUNK_DELAY_MS="0")  # far more than a pipe holds
    proc = subprocess.Popen(
        [sys.executable, "-m", "client", "--url", srv.url, *FAST, "-m", "a long one"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=client_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100)  # as `head -c 100` would
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) in (0, 141)
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert err == ""


def test_piped_standard_input_is_sent_after_the_message(server):
    sid = asyncio.run(_new_session(server.url))
    notes = "first note\nsecond note\n"
    done = subprocess.run(
        [sys.executable, "-m", "client", "--url", server.url, "--session", sid, "-m", "summarise this"],
        input=notes.encode(),
        capture_output=True,
        cwd=ROOT,
        env=client_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert user_messages(server.url, sid) == [f"summarise this\n\n{notes}"]


async def _new_session(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        return await new_session(http, url)


def test_version():
    done = subprocess.run(
        [sys.executable, "-m", "client", "--version"], capture_output=True, cwd=ROOT, check=False, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.decode().strip() == "quart-sse-chat 0.1.0"


# Start-up ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "said"),
    [(None, "needs an API key: pass --api-key KEY"), ("wrong", "refused the API key")],
)
def test_a_missing_or_wrong_key_is_said_at_start(start_server, key, said):
    srv = start_server(API_KEYS="right-key")
    child = spawn(srv.url, "--history", "", *(["--api-key", key] if key else []))
    child.expect(pexpect.EOF)
    child.close()
    out = " ".join(transcript(child).split())
    assert said in out
    assert "Connected" not in out and "Traceback" not in out
    assert child.exitstatus == 1


# Keys --------------------------------------------------------------------------------------


def test_shell_keys(server, tmp_path):
    history = tmp_path / "history"
    history.write_text("\n# 2025-01-01 10:00:00\n+zebra crossing at noon\n")
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nprintf 'edited line one\\nedited line two\\n' > \"$1\"\n")
    editor.chmod(0o755)
    child = spawn(server.url, "--history", str(history), EDITOR=str(editor), VISUAL="")
    try:
        child.expect("Connected to Quart SSE server")
        assert prompt(child)  # the first prompt shows the session created at start
        sid = full_id(child)

        child.send("first line\x1b\rsecond line\r")  # Alt-Enter: a new line; Enter sends
        wait_answered(child)
        child.send("\x1b[200~pasted one\npasted two\rpasted three\x1b[201~\r")  # bracketed paste
        wait_answered(child)
        child.send("thrown away")
        child.sendcontrol("c")  # with text: the line is cleared, the client stays
        child.send("kept\r")
        wait_answered(child)
        child.sendcontrol("r")  # search the saved input
        child.send("zebra")
        child.expect("crossing at noon")  # found (the match is highlighted)
        child.send("\r")  # take it
        child.send("\r")  # send it
        wait_answered(child)
        child.sendcontrol("x")
        child.sendcontrol("e")  # $EDITOR; the message is sent when it closes
        wait_answered(child)
        child.sendline("/edit")
        wait_answered(child)
        child.sendcontrol("c")  # on an empty prompt: quit
        child.expect("Goodbye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert user_messages(server.url, sid) == [
        "first line\nsecond line",
        "pasted one\npasted two\npasted three",
        "kept",
        "zebra crossing at noon",
        "edited line one\nedited line two",
        "edited line one\nedited line two",
    ]
    assert "Traceback" not in transcript(child)


@pytest.mark.parametrize(
    "env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}, {}], ids=["NO_COLOR", "dumb", "--plain"]
)
def test_plain_mode_has_no_boxes_or_emoji(server, env):
    child = spawn(server.url, "--history", "", *([] if env else ["--plain"]), **env)
    try:
        child.expect("Connected to Quart SSE server")
        prompt(child)
        child.sendline("/help")
        child.expect("Ctrl-X Ctrl-E")
        prompt(child)
        child.sendline("hello plainly")
        child.expect(r"-- complete: \d+ chunks")
        prompt(child)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    out = transcript(child)
    for mark in ("┌", "└", "│", "─", "🌊", "🤖", "🎉", "👋", "💭"):
        assert mark not in out, mark
    assert "Traceback" not in out


# Sessions ----------------------------------------------------------------------------------


def read_to_end(url: str, stream_id: str) -> str:
    """The whole stream of ``stream_id``: it returns once the generation has ended."""
    with urllib.request.urlopen(f"{url}/streams/{stream_id}/events", timeout=60) as r:
        return str(r.read().decode())


def cancel_after_a_chunk(url: str, stream_id: str) -> None:
    """Cancel the generation once its first chunk is out; return once it has ended."""
    with urllib.request.urlopen(f"{url}/streams/{stream_id}/events", timeout=60) as r:
        while not r.readline().startswith(b"event: chunk"):
            pass
        post(f"{url}/streams/{stream_id}/cancel")
        assert b"event: error" in r.read()


def test_sessions_switch_follow_history_export_and_cancel(start_server, tmp_path):
    srv = start_server(SIM_CHUNK_DELAY_MS="40", SIM_RESPONSE_CHUNKS="400")
    older = post(f"{srv.url}/sessions/new")["session_id"]
    first = post(f"{srv.url}/chat", {"message": "an older question about rivers", "session_id": older})
    cancel_after_a_chunk(srv.url, first["stream_id"])
    child = spawn(srv.url, "--history", "", "--session", older)
    try:
        # --session shows the last exchange
        child.expect(f"Switched to session {older}")
        child.expect("You:")
        child.expect("an older question about rivers")
        child.expect(r"Assistant \(interrupted\):")
        assert prompt(child) == older[:8]

        child.sendline("/new")
        child.expect(r"Session ID: ([0-9a-f]+)")
        newer = child.match.group(1)
        prompt(child)
        child.sendline("/sessions")
        child.expect(r"ALL ACTIVE SESSIONS \(\d+\)")
        child.expect(rf"(\d+)\. {ANSI}{newer[:8]}…{ANSI}\(empty\){ANSI}0 msgs, just now{ANSI}← CURRENT")
        child.expect(rf"(\d+)\. {ANSI}{older[:8]}…{ANSI}an older question about rivers{ANSI}2 msgs")
        number = child.match.group(1)
        prompt(child)

        # an answer being generated in the older session: /switch N follows it live
        lakes = post(f"{srv.url}/chat", {"message": "tell me about lakes", "session_id": older})
        child.sendline(f"/switch {number}")
        child.expect(f"Switched to session {older}")
        child.expect("tell me about lakes")
        child.expect("following it live")
        child.expect(r"streaming… \d+ chunks")  # its answer, live
        post(f"{srv.url}/streams/{lakes['stream_id']}/cancel")
        child.expect("SSE STREAM CANCELLED")
        assert prompt(child) == older[:8]

        child.sendline("/history 2")
        child.expect("You:")
        child.expect("tell me about lakes")
        child.expect(r"Assistant \(interrupted\):")
        prompt(child)

        target = tmp_path / "out.md"
        child.sendline(f"/export {target}")
        child.expect("Wrote 4 messages to")
        prompt(child)
        exported = target.read_text()
        assert exported.startswith(f"# Conversation {older}")
        assert exported.count("### You") == 2 and exported.count("### Assistant") == 2
        assert "tell me about lakes" in exported

        # /cancel from the prompt stops the answer being generated in this session
        slow = post(f"{srv.url}/chat", {"message": "a slow one", "session_id": older})
        child.sendline("/cancel")
        child.expect("Cancelled; the partial answer is kept")
        prompt(child)
        read_to_end(srv.url, slow["stream_id"])
        last = get(f"{srv.url}/sessions/{older}")[1]["messages"][-1]
        assert last["role"] == "model" and last["interrupted"] is True
        child.sendline("/cancel")
        child.expect("No answer is being generated")
        prompt(child)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "Traceback" not in transcript(child)

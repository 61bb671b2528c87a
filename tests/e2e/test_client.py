"""The terminal client (``python -m client``) against the real server.

One-shot ``--message`` runs as a subprocess whose standard output is a pipe; the cut tests put
:class:`~tests.support.proxy.CutProxy` between it and the server.  The interactive loop runs
in a pseudo-terminal under pexpect.  Backoff is a few milliseconds, so nothing waits long; no
test sleeps to synchronise or asserts on timing.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pexpect
import pytest

from tests.support.proxy import CutProxy

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--backoff", "0.01", "--backoff-max", "0.05"]


def client_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_SSE")}
    env.update({"PYTHONUNBUFFERED": "1", "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color"})
    env.update(extra)
    return env


async def start_client(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        *FAST,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=client_env(),
    )


async def run_client(*args: str) -> tuple[int, str, str]:
    proc = await start_client(*args)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def new_session(http: aiohttp.ClientSession, url: str) -> str:
    async with http.post(f"{url}/sessions/new") as r:
        assert r.status == 201
        return str((await r.json())["session_id"])


async def session(http: aiohttp.ClientSession, url: str, session_id: str) -> dict[str, Any]:
    async with http.get(f"{url}/sessions/{session_id}") as r:
        assert r.status == 200, await r.text()
        data: dict[str, Any] = await r.json()
        return data


async def saved_answer(http: aiohttp.ClientSession, url: str, session_id: str) -> str:
    last = (await session(http, url, session_id))["messages"][-1]
    assert last["role"] == "model"
    return str(last["content"])


def printed(answer: str) -> str:
    """What one-shot mode prints for ``answer``: the text, ending in one newline."""
    return answer if answer.endswith("\n") else answer + "\n"


# One-shot mode -------------------------------------------------------------------------


async def test_one_shot_prints_only_the_answer_and_exits_0(server, http):
    sid = await new_session(http, server.url)
    code, out, err = await run_client("--url", server.url, "--session", sid, "--message", "hello")
    assert code == 0, err
    assert out == printed(await saved_answer(http, server.url, sid))
    assert "\x1b[" not in out  # plain text: no colour, no cursor movement
    assert "Traceback" not in err


async def test_one_shot_continues_a_session(server, http):
    sid = await new_session(http, server.url)
    first = await run_client("--url", server.url, "--session", sid, "--message", "one")
    second = await run_client("--url", server.url, "--session", sid, "--message", "two")
    assert (first[0], second[0]) == (0, 0)
    data = await session(http, server.url, sid)
    assert [m["role"] for m in data["messages"]] == ["user", "model", "user", "model"]
    assert second[1] == printed(data["messages"][-1]["content"]) != first[1]


async def test_one_shot_without_session_creates_one(server, http):
    code, out, err = await run_client("--url", server.url, "--message", "a brand new conversation")
    assert code == 0, err
    async with http.get(f"{server.url}/sessions") as r:
        sessions = (await r.json())["sessions"]
    answers = [await saved_answer(http, server.url, s["session_id"]) for s in sessions if s["message_count"]]
    assert out.removesuffix("\n") in answers


async def test_one_shot_refused_request_exits_1(server):
    code, out, err = await run_client("--url", server.url, "--session", "no-such-session", "--message", "hi")
    assert code == 1
    assert out == ""
    assert "session_not_found" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


async def test_one_shot_error_event_exits_1(start_server, http):
    srv = start_server(SIM_CHUNK_DELAY_MS="40", SIM_RESPONSE_CHUNKS="500")
    sid = await new_session(http, srv.url)
    proc = await start_client("--url", srv.url, "--session", sid, "--message", "a long one")
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.read(1), 60)  # the answer has begun
    async with http.post(f"{srv.url}/sessions/{sid}/clear") as r:  # cancels the generation
        assert r.status == 200
    rest, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert first + rest
    assert "cancelled" in err.decode()
    assert "Traceback" not in err.decode()


async def test_ctrl_c_in_one_shot_cancels_the_generation(start_server, http):
    srv = start_server(SIM_CHUNK_DELAY_MS="40", SIM_RESPONSE_CHUNKS="500")
    sid = await new_session(http, srv.url)
    proc = await start_client("--url", srv.url, "--session", sid, "--message", "a long one")
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.read(1), 60)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, err.decode()
    last = (await session(http, srv.url, sid))["messages"][-1]
    assert last["role"] == "model"
    assert last["interrupted"] is True
    assert "Traceback" not in err.decode()


# Reconnection ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("nbytes", [700, 1337])
async def test_cut_mid_answer_resumes_with_nothing_missing_or_repeated(start_server, http, how, nbytes):
    srv = start_server(SIM_RESPONSE_CHUNKS="40")
    sid = await new_session(http, srv.url)
    async with CutProxy(srv.port) as proxy:
        proxy.cut_after(nbytes, how=how)
        code, out, err = await run_client("--url", proxy.url, "--session", sid, "--message", "tell me more")
        assert proxy.cuts == 1
        assert proxy.accepted == 2  # the POST, then one resume
    assert code == 0, err
    assert "reconnecting (attempt 1/8)" in err
    assert "resumed after 1 attempt" in err
    assert out == printed(await saved_answer(http, srv.url, sid))


async def test_a_silent_stream_is_resumed_after_the_idle_timeout(server, http):
    sid = await new_session(http, server.url)
    async with CutProxy(server.port) as proxy:
        proxy.cut_after(900, how="stall")
        code, out, err = await run_client(
            "--url", proxy.url, "--session", sid, "--idle-timeout", "0.3", "--message", "are you there?"
        )
    assert code == 0, err
    assert "no data for 0.3 s" in err
    assert out == printed(await saved_answer(http, server.url, sid))


async def test_several_cuts_in_one_answer(start_server, http):
    srv = start_server(SIM_RESPONSE_CHUNKS="60")
    sid = await new_session(http, srv.url)
    async with CutProxy(srv.port) as proxy:
        proxy.cut_after(800, how="reset", connections=3)
        code, out, err = await run_client(
            "--url", proxy.url, "--session", sid, "--message", "again and again"
        )
        assert proxy.cuts == 3
    assert code == 0, err
    assert out == printed(await saved_answer(http, srv.url, sid))


async def test_reconnection_gives_up_when_the_server_is_gone(start_server, http):
    srv = start_server(SIM_RESPONSE_CHUNKS="40")
    sid = await new_session(http, srv.url)
    async with CutProxy(srv.port) as proxy:
        proxy.cut_after(900, on_cut=lambda: srv.stop(signal.SIGKILL))
        code, out, err = await run_client(
            "--url", proxy.url, "--session", sid, "--reconnect-attempts", "3", "--message", "bye"
        )
    assert code == 3
    assert "reconnecting (attempt 3/3)" in err
    assert "attempt 4" not in err
    assert "gave up after 3 attempts" in err
    assert out  # the part received before the cut was printed
    assert "Traceback" not in err


async def test_server_down_at_start_one_shot(unused_port):
    code, out, err = await run_client(
        "--url", f"http://127.0.0.1:{unused_port}", "--reconnect-attempts", "2", "--message", "hello?"
    )
    assert code == 3
    assert out == ""
    assert f"No server answers at http://127.0.0.1:{unused_port} (connection refused)" in err
    assert "retrying" not in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_server_down_at_start_interactive_is_said_at_once(unused_port):
    url = f"http://127.0.0.1:{unused_port}"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "client", "--url", url, "--history", "", *FAST],
        env=client_env(),
        cwd=str(ROOT),
        encoding="utf-8",
        dimensions=(50, 150),
        timeout=30,
    )
    child.logfile_read = io.StringIO()
    child.expect(pexpect.EOF)
    child.close()
    out = " ".join(transcript(child).split())
    assert child.exitstatus == 3
    assert f"No server answers at {url} (connection refused)" in out
    assert "Start one with `quart-sse`" in out
    assert "retrying" not in out and "Connected" not in out
    assert "Traceback" not in out


@pytest.fixture(name="unused_port")
def _unused_port() -> int:
    """A loopback port where nothing listens (bound, never listened on, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The interactive loop in a pseudo-terminal ------------------------------------------------

ANSI = r"(?:\x1b\[[0-9;?]*[A-Za-z]|\s)*"


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def spawn(url: str, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "client", "--url", url, "--history", "", *FAST, *args],
        env=client_env(),
        cwd=str(ROOT),
        encoding="utf-8",
        dimensions=(50, 150),
        timeout=30,
    )
    child.logfile_read = io.StringIO()  # the whole transcript, for the "no traceback" checks
    child.expect("Connected to Quart SSE server")
    return child


def transcript(child: pexpect.spawn) -> str:
    log = child.logfile_read
    assert isinstance(log, io.StringIO)
    return log.getvalue()


def prompt(child: pexpect.spawn) -> str:
    """Wait for the prompt; the short session id it shows ("" when there is none)."""
    child.expect(rf"You {ANSI}(?:\[([0-9a-f]{{8}})…\] )?{ANSI}›")
    return child.match.group(1) or ""


def test_interactive_session_commands(server):
    child = spawn(server.url)
    try:
        first = prompt(child)
        assert first  # the session is created at start: the first prompt shows it
        child.sendline("hello from a terminal")
        child.expect("Generating response")
        child.expect("AI Response")
        child.expect("SSE STREAM COMPLETED")
        child.expect(rf"Status:{ANSI}SUCCESS")
        assert prompt(child) == first

        child.sendline("/new")
        child.expect("New session created successfully")
        child.expect(r"Session ID: ([0-9a-f]+)")
        second = child.match.group(1)
        status, data = get(f"{server.url}/sessions/{second}")
        assert (status, data["message_count"]) == (200, 0)
        assert prompt(child) == second[:8] != first

        child.sendline("a message in the new session")
        child.expect("SSE STREAM COMPLETED")
        prompt(child)
        assert get(f"{server.url}/sessions/{second}")[1]["message_count"] == 2

        child.sendline("/info")
        child.expect("SESSION INFO")
        child.expect(rf"Session ID:{ANSI}{second}")
        child.expect(rf"Total Messages:{ANSI}2")
        prompt(child)

        child.sendline("/sessions")
        child.expect(r"ALL ACTIVE SESSIONS \(\d+\)")
        child.expect(rf"{second[:8]}…[^\n]*← CURRENT")
        prompt(child)

        child.sendline("/reset")
        child.expect("history cleared")
        prompt(child)
        assert get(f"{server.url}/sessions/{second}")[1]["message_count"] == 0

        child.sendline("/delete")
        child.expect("deleted")
        assert prompt(child) == ""
        assert get(f"{server.url}/sessions/{second}")[0] == 404

        child.sendline("/quit")
        child.expect("Goodbye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "Traceback" not in transcript(child)


def test_interactive_information_commands(server):
    child = spawn(server.url)
    try:
        prompt(child)
        for command, title in [
            ("/help", "COMMANDS"),
            ("/health", "SERVER HEALTH"),
            ("/server", "SSE SERVER STATISTICS"),
            ("/nope", "Unknown command"),
        ]:
            child.sendline(command)
            child.expect(title)
            prompt(child)
        child.sendline("counting")
        child.expect("SSE STREAM COMPLETED")
        prompt(child)
        child.sendline("/stats")
        child.expect("CLIENT SESSION STATISTICS")
        child.expect(rf"Messages Sent:{ANSI}1")
        child.expect(rf"Successful Streams:{ANSI}1")
        prompt(child)
        child.sendeof()  # Ctrl-D at the prompt quits
        child.expect("Goodbye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_interactive_ctrl_c_cancels_the_answer_and_returns_to_the_prompt(start_server):
    srv = start_server(SIM_CHUNK_DELAY_MS="40", SIM_RESPONSE_CHUNKS="500")
    child = spawn(srv.url)
    try:
        prompt(child)
        child.sendline("a long answer please")
        child.expect("AI Response")
        child.expect(r"streaming… \d+ chunks")  # some of the answer has arrived
        child.sendintr()
        child.expect("SSE STREAM CANCELLED")
        child.expect("Generation cancelled on the server")
        sid = prompt(child)
        sessions = get(f"{srv.url}/sessions")[1]["sessions"]
        (full,) = [s["session_id"] for s in sessions if s["session_id"].startswith(sid)]
        last = get(f"{srv.url}/sessions/{full}")[1]["messages"][-1]
        assert last["role"] == "model"
        assert last["interrupted"] is True
        child.sendline("/switch " + sid)  # a unique prefix is enough
        child.expect(f"Switched to session {full}")
        prompt(child)
        child.sendcontrol("c")  # Ctrl-C at the prompt quits
        child.expect("Goodbye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


async def test_interactive_answer_survives_a_cut_with_a_visible_reconnecting_state(start_server, http):
    srv = start_server(SIM_RESPONSE_CHUNKS="40")
    async with CutProxy(srv.port) as proxy:
        proxy.cut_after(1200, how="reset")
        child = await asyncio.to_thread(spawn, proxy.url)
        try:
            await asyncio.to_thread(prompt, child)
            child.sendline("keep going through the cut")
            await asyncio.to_thread(child.expect, r"⟳ reconnecting \(attempt 1/8\)")
            await asyncio.to_thread(child.expect, "SSE STREAM COMPLETED")
            await asyncio.to_thread(child.expect, rf"Reconnections:{ANSI}1")
            sid = await asyncio.to_thread(prompt, child)
            child.sendline("/quit")
            await asyncio.to_thread(child.expect, pexpect.EOF)
        finally:
            child.close(force=True)
    assert proxy.cuts == 1
    async with http.get(f"{srv.url}/sessions") as r:
        (only,) = (await r.json())["sessions"]
    assert only["session_id"].startswith(sid)
    assert only["message_count"] == 2


def test_interactive_server_gone_between_messages(start_server):
    srv = start_server()
    child = spawn(srv.url, "--reconnect-attempts", "2")
    try:
        prompt(child)
        srv.stop()
        child.sendline("is anyone there?")  # said at once, not retried; kept at the prompt
        child.expect(r"✖ No server answers at http://127\.0\.0\.1:\d+ \(connection refused\)")
        prompt(child)
        child.sendcontrol("c")  # clears the kept message
        child.sendline("/sessions")
        child.expect(r"✖ Cannot reach the server at http://127\.0\.0\.1:\d+ \(connection refused\)")
        prompt(child)
        child.sendline("/stats")
        child.expect(rf"Failed Streams:{ANSI}1")
        prompt(child)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "Traceback" not in transcript(child)

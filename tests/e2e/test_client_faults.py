"""Faults a new user met in the terminal client, each with the real client against the real
server: piped input over the limits, a server gone between messages, refused messages kept,
empty sessions left behind, ``--plain`` colours and wrapping, and the smaller ones."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys

import pexpect
import pytest

from tests.e2e.test_client import ANSI, FAST, ROOT, client_env, get, prompt, transcript
from tests.e2e.test_client_scrollback import Terminal
from tests.e2e.test_client_shell import post, spawn

# SGR sequences that set a colour (foreground, background, 256 and true colour).
COLOUR = re.compile(r"\x1b\[[0-9;]*?(?<![0-9])(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")
SGR = re.compile(r"\x1b\[[0-9;]*m")


def one_shot(
    url: str, *args: str, stdin: bytes | None = None, **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "client", "--url", url, *FAST, *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        env=client_env(),
        timeout=60,
        check=False,
    )


def sessions(url: str) -> list[dict[str, object]]:
    return list(get(f"{url}/sessions")[1]["sessions"])


# 1. Standard input -------------------------------------------------------------------------


def test_endless_standard_input_is_refused_at_the_body_limit(server):
    """``yes | quart-sse-chat -m hi``: read up to 1 MiB and a little more, then say so."""
    yes = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "client", "--url", server.url, *FAST, "-m", "hi"],
            stdin=yes.stdout,
            capture_output=True,
            cwd=ROOT,
            env=client_env(),
            timeout=60,
            check=False,
        )
    finally:
        yes.kill()
        yes.wait()
        assert yes.stdout is not None
        yes.stdout.close()
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "standard input is too large: more than 1,048,576 bytes" in err
    assert len(err.strip().splitlines()) == 1


def test_binary_standard_input_is_said_not_utf8(server):
    before = len(sessions(server.url))
    done = one_shot(server.url, "-m", "x", stdin=bytes(range(256)) * 4)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "standard input is not UTF-8 text" in err
    assert "surrogate" not in err
    assert len(sessions(server.url)) == before  # nothing was sent


def test_a_long_piped_file_is_said_too_long_before_sending(server):
    before = len(sessions(server.url))
    done = one_shot(server.url, "-m", "summarise this", stdin=b"word " * 8000)  # 40 KB
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "the piped input makes the message too long (40,016 of at most 32,000 characters" in err
    assert len(sessions(server.url)) == before


# 2. and 3. Messages the server did not take are kept -------------------------------------------


def test_a_server_gone_between_messages_is_said_at_once_and_the_message_kept(start_server):
    srv = start_server()
    child = spawn(srv.url, "--history", "")
    try:
        prompt(child)
        srv.stop()
        child.sendline("is anyone there?")
        child.expect(rf"No server answers at {re.escape(srv.url)} \(connection refused\)")
        child.expect("back at the prompt")
        child.expect(rf"›{ANSI}is anyone there\?")  # pre-filled
        child.sendcontrol("c")  # clears the line
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    out = transcript(child)
    assert "retrying" not in out and "attempt" not in out
    assert "Traceback" not in out


def test_a_refused_message_is_back_at_the_prompt(start_server):
    srv = start_server(SIM_CHUNK_DELAY_MS="40", SIM_RESPONSE_CHUNKS="400")
    child = spawn(srv.url, "--history", "")
    try:
        prompt(child)
        sid = full_session_id(srv.url)
        running = post(f"{srv.url}/chat", {"message": "busy", "session_id": sid})
        child.sendline("a question while busy")
        child.expect(r"409 generation_running")
        child.expect(rf"›{ANSI}a question while busy")
        post(f"{srv.url}/streams/{running['stream_id']}/cancel")
        child.send("\r")  # sent again, as it is
        child.expect("SSE STREAM COMPLETED")
        prompt(child)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    asked = [m["content"] for m in get(f"{srv.url}/sessions/{sid}")[1]["messages"] if m["role"] == "user"]
    assert asked == ["busy", "a question while busy"]


def full_session_id(url: str) -> str:
    (only,) = sessions(url)
    return str(only["session_id"])


def test_a_paste_over_the_limit_is_said_in_one_line_and_not_pasted(start_server):
    srv = start_server(MAX_MESSAGE_CHARS="50")
    child = spawn(srv.url, "--history", "")
    try:
        prompt(child)
        child.send("\x1b[200~" + "long line of pasted words\n" * 20 + "\x1b[201~")
        child.expect("The paste is too long: 520 of at most 50 characters")
        child.expect("Nothing pasted")
        child.send("short\r")  # the prompt is still there, empty
        child.expect("SSE STREAM COMPLETED")
        prompt(child)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    out = transcript(child)
    assert "long line of pasted words" not in out
    (only,) = sessions(srv.url)
    assert only["message_count"] == 2


async def test_resuming_an_answer_shows_one_updating_status_line(start_server):
    """The server killed mid-answer: the attempts rewrite one line (``--plain`` here, where
    each used to be a line of its own), then the answer gives up."""
    srv = start_server(SIM_CHUNK_DELAY_MS="40", SIM_RESPONSE_CHUNKS="400")
    term = Terminal(srv.url, 30, 100, "--plain", "--reconnect-attempts", "4")
    try:
        await term.expect(rb"You \[")
        term.child.send("a long answer\r")
        await term.expect(rb"\(context: ")  # the answer has begun
        srv.stop(signal.SIGKILL)
        await term.expect(rb"-- lost")
        await term.expect(rb"You \[")
        term.child.send("/quit\r")
        await term.expect(pexpect.EOF)
    finally:
        term.close()
    lines = term.lines()
    status = [line for line in lines if "reconnecting (attempt" in line]
    assert len(status) == 1, status
    assert "attempt 4/4" in status[0]
    assert any("gave up after 4 attempts" in line for line in lines)
    assert term.raw.count(b"reconnecting (attempt") == 4  # each attempt was shown


# 5. and 6. Sessions -----------------------------------------------------------------------


def test_the_empty_session_made_at_start_is_deleted_at_quit(start_server):
    srv = start_server()
    named = post(f"{srv.url}/sessions/new")["session_id"]  # empty, but named: kept
    child = spawn(srv.url, "--history", "")
    try:
        first = prompt(child)
        child.sendline("/new")  # the first one, empty and made here, is deleted
        child.expect(r"Session ID: ([0-9a-f]{8})")
        second = child.match.group(1)
        prompt(child)
        child.sendline("a message")  # the second one has messages: kept
        child.expect("SSE STREAM COMPLETED")
        prompt(child)
        child.sendline("/new")
        prompt(child)
        child.sendline(f"/switch {named}")  # the third, empty, is deleted
        child.expect(f"Switched to session {named}")
        prompt(child)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    left = {str(s["session_id"])[:8] for s in sessions(srv.url)}
    assert left == {second, named[:8]}
    assert first not in left


def test_an_unknown_session_starts_a_new_one(server):
    child = spawn(server.url, "--history", "", "--session", "doesnotexist")
    try:
        child.expect("No session matches 'doesnotexist'")
        child.expect(r"Started a new session instead: ([0-9a-f]{32})")
        sid = child.match.group(1)
        assert prompt(child) == sid[:8]
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


# 7. --plain and NO_COLOR --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env"), [(["--plain"], {}), ([], {"NO_COLOR": "1"}), ([], {"TERM": "dumb"})]
)
def test_no_colour_codes_in_plain_modes(server, args, env):
    child = spawn(server.url, "--history", "", *args, **env)
    try:
        prompt(child)
        child.sendline("hello")
        child.expect(r"-- complete: \d+ chunks")
        prompt(child)
        child.sendline("/info")
        prompt(child)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    out = transcript(child)
    assert not COLOUR.findall(out)
    if env.get("NO_COLOR") is None:  # --plain and TERM=dumb: no styles at all
        assert set(SGR.findall(out)) <= {"\x1b[0m"}, set(SGR.findall(out))


async def test_plain_answers_wrap_at_word_boundaries(start_server, http):
    srv = start_server(SIM_RESPONSE_CHUNKS="120")
    term = Terminal(srv.url, 30, 47, "--plain")
    try:
        await term.expect(rb"You (\[[0-9a-f]{8}.*\] )?")
        term.child.send("tell me a long one\r")
        await term.expect(rb"-- complete: \d+ chunks")
        await term.expect(rb"You \[")
        term.child.send("/quit\r")
        await term.expect(pexpect.EOF)
    finally:
        term.close()
    (only,) = [
        s for s in (await (await http.get(f"{srv.url}/sessions")).json())["sessions"] if s["message_count"]
    ]
    saved = (await (await http.get(f"{srv.url}/sessions/{only['session_id']}")).json())["messages"][-1][
        "content"
    ]
    lines = term.lines()
    start = next(
        i
        for i, line in enumerate(lines)
        if line
        and saved.startswith(line.split()[0] + " ")
        and "context" not in line
        and line.split()[0] == saved.split()[0]
    )
    shown = []
    for line in lines[start:]:
        if line.startswith("-- complete"):
            break
        assert len(line) <= 47
        shown.append(line)
    assert len(shown) > 3  # it did wrap
    assert " ".join(shown).split() == saved.split()  # no word cut at the edge


# 8. The smaller ones -------------------------------------------------------------------------


def test_an_unwritable_history_is_said_once(server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    child = spawn(server.url, "--history", str(blocker / "history"))
    try:
        child.expect("The input history is not saved: cannot write")
        prompt(child)
        child.sendline("one")
        child.expect("SSE STREAM COMPLETED")
        prompt(child)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert transcript(child).count("history is not saved") == 1


def test_an_unknown_host_is_said_as_such():
    done = one_shot("http://no-such-host.invalid:8000", "-m", "hello")
    err = done.stderr.decode()
    assert done.returncode == 3, err
    assert "the host name no-such-host.invalid could not be resolved" in err
    assert "unknown error" not in err and "Start one" not in err


def test_quitting_asks_the_terminal_nothing(server):
    """prompt_toolkit's cursor-position request (CPR, ``ESC[6n``) made quitting wait a second
    for an answer a pty never gives."""
    env = {k: v for k, v in client_env().items() if k != "PROMPT_TOOLKIT_NO_CPR"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "client", "--url", server.url, "--history", "", *FAST],
        env=env,
        cwd=str(ROOT),
        encoding="utf-8",
        dimensions=(50, 150),
        timeout=30,
    )
    child.logfile_read = io.StringIO()
    try:
        prompt(child)
        child.sendline("/quit")
        child.expect("Goodbye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert "\x1b[6n" not in transcript(child)


def test_a_closed_pipe_cancels_the_generation(start_server):
    """``quart-sse-chat -m … | head``: the generation is cancelled on the server, exit 141."""
    srv = start_server(SIM_RESPONSE_CHUNKS="2000", SIM_CHUNK_DELAY_MS="5")
    sid = post(f"{srv.url}/sessions/new")["session_id"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "client", "--url", srv.url, *FAST, "--session", sid, "-m", "a long one"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=client_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(20)  # as `head -c 20` would
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 141, err
    assert err == ""
    last = get(f"{srv.url}/sessions/{sid}")[1]["messages"][-1]
    assert last["role"] == "model" and last["interrupted"] is True

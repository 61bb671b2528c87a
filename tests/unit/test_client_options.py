"""quart-sse-chat's options and environment values: each is taken, or refused in one line.

A value the HTTP library would refuse (an invalid IPv6 address, a port over 65535, an API key
with a newline or an escape) used to end in ``quart-sse-chat: error: None`` and a traceback;
now it is one line on standard error, exit 2, before any network I/O, control characters
escaped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prompt_toolkit import PromptSession
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from client.__main__ import PROG, parse_args
from client.chat import editor_command, key_bindings
from client.stream import ReconnectPolicy

ROOT = Path(__file__).resolve().parents[2]
PREFIX = f"{PROG}: error: "
# Nothing listens there: a test that got as far as the network would fail quickly (exit 3).
NOWHERE = "http://127.0.0.1:9"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_SSE")}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def assert_one_line(err: str, *expected: str) -> None:
    """One line, the usage error's, nothing raw that a terminal would act on."""
    assert err.startswith(PREFIX), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and "None" not in err, err
    line = err[:-1]
    assert all(" " <= c != "\x7f" for c in line), repr(err)
    assert line.isprintable(), repr(err)
    for text in expected:
        assert text in line, err


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv, environ=env or {})
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


# The tester's inputs, as a person runs them --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--url", "http://[::1"], {}, "--url has an IPv6 address without its closing ']'"),
        (["--url", "http://127.0.0.1:99999"], {}, "--url has an invalid port '99999'"),
        (
            ["--url", NOWHERE, "--api-key", "a\nb"],
            {},
            "--api-key has a control character '\\n' at position 2",
        ),
        (["--url", NOWHERE, "--api-key", "\x1b[31m"], {}, "--api-key has a control character '\\x1b'"),
        (
            ["--url", NOWHERE],
            {"QUART_SSE_API_KEY": "key\r"},
            "QUART_SSE_API_KEY has a control character '\\r'",
        ),
        ([], {"QUART_SSE_URL": "http://127.0.0.1:99999"}, "QUART_SSE_URL has an invalid port"),
    ],
    ids=["ipv6-unclosed", "port-99999", "key-newline", "key-escape", "env-key-cr", "env-url-port"],
)
def test_the_reported_inputs_are_one_line_exit_2(argv, env, expected):
    done = subprocess.run(
        [sys.executable, "-m", "client", *argv, "-m", "hi"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=ROOT,
        env=clean_env(**env),
        timeout=60,
        check=False,
    )
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, err
    assert done.stdout == b""
    assert_one_line(err, expected)


# URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://[::1", "IPv6 address without its closing ']'"),
        ("http://[::1]x", "text after the IPv6 address"),
        ("http://[zz]:80", "invalid IPv6 address [zz]"),
        ("http://::1:8000", "IPv6 address outside brackets: write it as http://[::1]:8000"),
        ("http://127.0.0.1:99999", "invalid port '99999': a port is a number from 1 to 65535"),
        ("http://127.0.0.1:65536", "invalid port '65536'"),
        ("http://h:0", "invalid port '0'"),
        ("http://h:-1", "invalid port '-1'"),
        ("http://h:80x", "invalid port '80x'"),
        ("http://h:", "invalid port ''"),
        ("http://h:" + "9" * 5000, "invalid port '9999"),
        ("http://", "has no host name"),
        ("http:///path", "has no host name"),
        ("http://user@:80", "has no host name"),
        ("http://xn--a", "invalid host name 'xn--a'"),
        ("http://a b", "must not contain spaces or control characters: 'http://a b'"),
        ("http://a\x1b[2Jb", "control characters: 'http://a\\x1b[2Jb'"),
        ("http://a\nb", "'http://a\\nb'"),
        ("http://a\u202eb", "'http://a\\u202eb'"),
        (" http://h", "must not contain spaces"),
        ("http://h/?x=1", "must not have a query"),
        ("http://h#top", "or a fragment"),
        ("localhost:8000", "must start with http:// or https://, not 'localhost:8000'"),
        ("ftp://h", "must start with http:// or https://"),
        ("ws://h", "must start with http:// or https://"),
        ("", "must start with http:// or https://, not ''"),
    ],
)
def test_bad_urls(capsys, url, expected):
    assert_one_line(refused(capsys, ["--url", url]), "--url ", expected)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000",
        "http://[::1]:8000",
        "http://[::1]",
        "http://127.0.0.1:65535",
        "http://h:1",
        "https://example.com",
        "HTTPS://Example.COM/prefix/",
        "http://bücher.example",
        "http://user:pw@h:8/p",
        "http://h:08080",
    ],
)
def test_good_urls(url):
    assert parse_args(["--url", url], environ={})[0].url == url


def test_url_from_the_environment_is_named_and_empty_is_unset(capsys):
    err = refused(capsys, [], {"QUART_SSE_URL": "http://[::1"})
    assert_one_line(err, "QUART_SSE_URL has an IPv6 address")
    assert "--url" not in err
    assert parse_args([], environ={"QUART_SSE_URL": ""})[0].url == "http://localhost:8000"
    # The option wins over the variable, even a bad one.
    assert parse_args(["--url", "http://h:1"], environ={"QUART_SSE_URL": "x"})[0].url == "http://h:1"


# API keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a\nb", "a control character '\\n' at position 2 of 3"),
        ("\x1b[31m", "a control character '\\x1b' at position 1 of 5"),
        ("s3cr3t\r", "'\\r' at position 7 of 7"),
        ("s3cr3t\n", "'\\n' at position 7 of 7"),
        ("s3cr3t\t", "'\\t'"),
        ("s3cr3t\x00", "'\\x00'"),
        ("s3cr3t\x7f", "'\\x7f'"),
        ("s3cr3t\x9b", "'\\x9b'"),
        ("s3cr3t\u202e", "'\\u202e'"),
        ("s3cr3t\udcff", "'\\udcff'"),
        ("s3cr3t s3cr3t", "a space at position 7"),
        (" s3cr3t", "a space at position 1"),
        ("s3cr3té", "a non-ASCII character (U+00E9) at position 7"),
    ],
)
def test_bad_api_keys_are_said_without_showing_the_key(capsys, key, expected):
    err = refused(capsys, ["--api-key", key])
    assert_one_line(err, "--api-key has ", expected, "printable ASCII without spaces")
    assert "s3cr3t" not in err
    assert ("carriage return" in err) == ("\r" in key or "\n" in key)


def test_api_key_from_the_environment_is_named(capsys):
    err = refused(capsys, [], {"QUART_SSE_API_KEY": "\x1b]0;owned\x07"})
    assert_one_line(err, "QUART_SSE_API_KEY has a control character '\\x1b'")
    assert "owned" not in err


@pytest.mark.parametrize("key", ["k", "sk-0123456789abcdef", "a.b_c~d+e/f=", "!#$%&'*,;<>?@[]^`{|}\"\\~"])
def test_good_api_keys(key):
    assert parse_args(["--api-key", key], environ={})[0].api_key == key


def test_empty_api_key_is_no_key():
    assert parse_args([], environ={"QUART_SSE_API_KEY": ""})[0].api_key is None
    assert not parse_args(["--api-key", ""], environ={})[0].api_key


# Sessions, messages, numbers, unknown options -------------------------------------------------


@pytest.mark.parametrize("session", ["../health", "a/b", "a?b", "a b", "\x1b[2J", "", "x" * 201, "é"])
def test_bad_session_ids(capsys, session):
    assert_one_line(refused(capsys, ["--session", session]), "--session must be a session id")


@pytest.mark.parametrize("session", ["0123456789abcdef0123456789abcdef", "6f1c-4e2a_B9"])
def test_good_session_ids(session):
    assert parse_args(["--session", session], environ={})[0].session == session


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-m", "  \n "], "--message is empty"),
        (["-m", "ab\udcff"], "--message is not UTF-8 text (byte 0xff at character 3)"),
        (["--reconnect-attempts", "-1"], "--reconnect-attempts must be a whole number, 0 or more, not '-1'"),
        (["--reconnect-attempts", "x\x1b"], "not 'x\\x1b'"),
        (["--reconnect-attempts", "1.5"], "not '1.5'"),
        (["--reconnect-attempts", "9" * 5000], "--reconnect-attempts must be a whole number"),
        (["--backoff", "x"], "--backoff must be a number of seconds, 0 or more, not 'x'"),
        (["--backoff", "nan"], "--backoff must be a number of seconds"),
        (["--backoff", "-0.1"], "--backoff must be"),
        (["--backoff-max", "inf"], "--backoff-max must be a number of seconds"),
        (["--backoff-max", "1e400"], "--backoff-max must be"),
        (["--idle-timeout", "0"], "--idle-timeout must be a number of seconds, more than 0, not '0'"),
        (["--idle-timeout=-inf"], "--idle-timeout must be"),
        (["--nope"], "unrecognized arguments: --nope (see quart-sse-chat --help)"),
        (["--url"], "argument --url: expected one argument"),
        (["--nope\x1b[2J"], "unrecognized arguments: --nope\\x1b[2J"),
    ],
)
def test_other_bad_arguments(capsys, argv, expected):
    assert_one_line(refused(capsys, argv), expected)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QUART_SSE_CHAT_ATTEMPTS", "abc"),
        ("QUART_SSE_CHAT_ATTEMPTS", "-2"),
        ("QUART_SSE_CHAT_BACKOFF", "nan"),
        ("QUART_SSE_CHAT_BACKOFF_MAX", "1\n2"),
        ("QUART_SSE_CHAT_IDLE_TIMEOUT", "0"),
    ],
)
def test_bad_numbers_from_the_environment_name_the_variable(capsys, variable, value):
    err = refused(capsys, [], {variable: value})
    assert_one_line(err, f"{variable} must be", repr(value))
    assert " --" not in err


def test_numbers_at_their_limits_are_taken():
    env = {"QUART_SSE_CHAT_ATTEMPTS": "", "QUART_SSE_CHAT_BACKOFF": ""}  # empty: unset
    args, policy = parse_args(
        ["--reconnect-attempts", "0", "--backoff", "0", "--backoff-max", "0", "--idle-timeout", "0.001"],
        environ=env,
    )
    assert policy == ReconnectPolicy(attempts=0, base=0.0, cap=0.0, idle_timeout=0.001)
    assert (args.reconnect_attempts, args.idle_timeout) == (0, 0.001)
    assert parse_args([], environ=env)[1] == ReconnectPolicy()


def test_many_attempts_do_not_overflow_the_backoff():
    policy = ReconnectPolicy(attempts=5000, base=0.5, cap=10.0)
    assert policy.delay(1100, rand=lambda: 1.0) == 10.0
    assert ReconnectPolicy(base=1e-30, cap=10.0).delay(1500, rand=lambda: 1.0) == 10.0


# Other things the client reads ----------------------------------------------------------------


def test_an_editor_command_with_an_unclosed_quote_is_said(monkeypatch):
    monkeypatch.setenv("VISUAL", "code --wait 'my file")
    with pytest.raises(ValueError, match=r"\$VISUAL is not a command a shell could run"):
        editor_command()
    monkeypatch.setenv("VISUAL", "code --wait")
    assert editor_command() == ["code", "--wait"]


@pytest.mark.parametrize(
    "typed",
    ["\x1b[1;2M", "\x1b[<1;2M", "\x1b[5;5;5;5M", "\x1b[Mabc", "\x1b[<0;1;1M", "\x1b[M !!"],
)
def test_a_typed_mouse_sequence_is_dropped_not_an_unhandled_exception(typed):
    async def prompt() -> str:
        with create_pipe_input() as pipe:
            session: PromptSession[str] = PromptSession(
                input=pipe, output=DummyOutput(), key_bindings=key_bindings()
            )
            pipe.send_text(typed + "hello\r")
            return await asyncio.wait_for(session.prompt_async("> "), 10)

    assert asyncio.run(prompt()) == "hello"

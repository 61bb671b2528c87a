"""quart-sse-chat's options and environment values: each is taken, or refused in one line.

A value the HTTP library would refuse (an invalid IPv6 address, a port over 65535, an API key
with a newline or an escape) used to end in ``quart-sse-chat: error: None`` and a traceback;
now it is one line on standard error, exit 2, before any network I/O, control characters
escaped.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from prompt_toolkit import PromptSession
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from client.__main__ import PROG, parse_args
from client.answer import Answer, PlainView
from client.api import ChatAPI, Unreachable, summary
from client.chat import editor_command, key_bindings
from client.stream import AnswerStream, ReconnectPolicy

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
        (["--url", f"http://{'a' * 64}.com"], {}, "is 64 characters long, more than the 63 allowed"),
        (["--url", "http://a..b"], {}, "--url has an invalid host name 'a..b': a part between dots is empty"),
        (["--url", "http://.:18171"], {}, "--url has an invalid host name '.': a part between dots is empty"),
        (
            ["--url", "http://256.256.256.256:18171"],
            {},
            "'256.256.256.256', which is not a valid IPv4 address",
        ),
        ([], {"QUART_SSE_URL": f"http://{'a' * 64}.com"}, "QUART_SSE_URL has an invalid host name"),
        ([], {"QUART_SSE_URL": "http://a..b"}, "QUART_SSE_URL has an invalid host name 'a..b'"),
        ([], {"QUART_SSE_URL": "http://.:18171"}, "QUART_SSE_URL has an invalid host name '.'"),
        ([], {"QUART_SSE_URL": "http://256.256.256.256:18171"}, "QUART_SSE_URL has '256.256.256.256'"),
        (["--url", NOWHERE, "--idle-timeout", "1e-320"], {}, "--idle-timeout must be a number of seconds"),
        (
            ["--url", NOWHERE],
            {"QUART_SSE_CHAT_IDLE_TIMEOUT": "1e-320"},
            "QUART_SSE_CHAT_IDLE_TIMEOUT must be",
        ),
        (
            ["--url", NOWHERE, "--backoff", "5", "--backoff-max", "2"],
            {},
            "--backoff-max (2) must not be less than --backoff (5)",
        ),
    ],
    ids=[
        "ipv6-unclosed",
        "port-99999",
        "key-newline",
        "key-escape",
        "env-key-cr",
        "env-url-port",
        "label-64",
        "label-empty",
        "host-dot",
        "ipv4-256",
        "env-label-64",
        "env-label-empty",
        "env-host-dot",
        "env-ipv4-256",
        "idle-1e-320",
        "env-idle-1e-320",
        "backoff-max-below-backoff",
    ],
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
        # Host names the resolver's IDNA codec cannot encode (it raised UnicodeError)
        (f"http://{'a' * 64}.com", "its part 'aaaaaaaaaaaaaaaaaaaa'… is 64 characters long"),
        (f"http://{'a' * 64}", "is 64 characters long, more than the 63 allowed between dots"),
        (f"http://x.{'a' * 64}:80/p", "is 64 characters long"),
        (f"http://{'a' * 64}.", "is 64 characters long"),
        (f"http://{'ü' * 60}.de", "invalid host name"),
        ("http://" + f"{'a' * 63}." * 4 + "com", "host name of 259 characters, more than the 253"),
        ("http://a..b", "invalid host name 'a..b': a part between dots is empty"),
        ("http://.:18171", "invalid host name '.': a part between dots is empty"),
        ("http://.", "invalid host name '.'"),
        ("http://..", "invalid host name '..'"),
        ("http://.a", "invalid host name '.a'"),
        ("http://a.b..", "invalid host name 'a.b..'"),
        ("http://user@a..b:80/p", "invalid host name 'a..b'"),
        # All digits and dots: an IPv4 address, four numbers from 0 to 255, or nothing
        ("http://256.256.256.256:18171", "'256.256.256.256', which is not a valid IPv4 address"),
        ("http://256.0.0.1", "'256.0.0.1', which is not a valid IPv4 address"),
        ("http://1.2.3.256", "not a valid IPv4 address: write four numbers from 0 to 255"),
        ("http://999999999999", "'999999999999', which is not a valid IPv4 address"),
        ("http://127.1", "'127.1', which is not a valid IPv4 address"),
        ("http://1.2.3.4.5", "not a valid IPv4 address"),
        ("http://1.2.3.4.", "not a valid IPv4 address"),
        ("http://1..2.3", "not a valid IPv4 address"),
        (
            "http://010.0.0.1",
            "not a valid IPv4 address: write four numbers from 0 to 255 separated by dots, without",
        ),
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
        f"http://{'a' * 63}.com",
        f"http://{'a' * 63}",
        f"http://{'a' * 63}.",
        "http://" + f"{'a' * 63}." * 3 + "a" * 61,  # 253 characters
        "http://example.com.",
        "http://a_b.internal",
        "http://a",
        "http://255.255.255.255:18171",
        "http://0.0.0.0:8000",
        "http://127.0.0.1",
        "http://1.2.3.4:80/p",
        "http://1a.2b",
        "http://[::ffff:1.2.3.4]:80",
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
        (["--backoff", "x"], "--backoff must be a number of seconds from 0.01 to 3600, not 'x'"),
        (["--backoff", "nan"], "--backoff must be a number of seconds"),
        (["--backoff", "-0.1"], "--backoff must be"),
        (["--backoff", "0"], "--backoff must be a number of seconds from 0.01 to 3600, not '0'"),
        (["--backoff", "0.009"], "not '0.009'"),
        (["--backoff", "1e-320"], "--backoff must be a number of seconds from 0.01"),
        (["--backoff", "3600.5"], "--backoff must be a number of seconds from 0.01 to 3600, not '3600.5'"),
        (["--backoff", "1e9"], "--backoff must be"),
        (["--backoff-max", "inf"], "--backoff-max must be a number of seconds"),
        (["--backoff-max", "1e400"], "--backoff-max must be"),
        (["--backoff-max", "0"], "--backoff-max must be a number of seconds from 0.01 to 3600, not '0'"),
        (["--backoff-max", "1e-320"], "--backoff-max must be"),
        (["--backoff-max", "3601"], "not '3601'"),
        (["--idle-timeout", "0"], "--idle-timeout must be a number of seconds from 0.1 to 86400, not '0'"),
        (["--idle-timeout=-inf"], "--idle-timeout must be"),
        (
            ["--idle-timeout", "1e-320"],
            "--idle-timeout must be a number of seconds from 0.1 to 86400, not '1e-320'",
        ),
        (["--idle-timeout", "0.099"], "not '0.099'"),
        (["--idle-timeout", "86400.1"], "--idle-timeout must be a number of seconds from 0.1 to 86400"),
        (["--idle-timeout", "inf"], "--idle-timeout must be"),
        (
            ["--backoff", "5", "--backoff-max", "2"],
            "--backoff-max (2) must not be less than --backoff (5): raise",
        ),
        (
            ["--backoff", "0.02", "--backoff-max", "0.01"],
            "--backoff-max (0.01) must not be less than --backoff (0.02)",
        ),
        (["--backoff", "20"], "--backoff-max (10, its default) must not be less than --backoff (20)"),
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
        ("QUART_SSE_CHAT_IDLE_TIMEOUT", "1e-320"),
        ("QUART_SSE_CHAT_IDLE_TIMEOUT", "86401"),
        ("QUART_SSE_CHAT_BACKOFF", "0.001"),
        ("QUART_SSE_CHAT_BACKOFF", "3601"),
        ("QUART_SSE_CHAT_BACKOFF_MAX", "1e-320"),
        ("QUART_SSE_CHAT_BACKOFF_MAX", "7200"),
    ],
)
def test_bad_numbers_from_the_environment_name_the_variable(capsys, variable, value):
    err = refused(capsys, [], {variable: value})
    assert_one_line(err, f"{variable} must be", repr(value))
    assert " --" not in err


def test_backoff_max_below_backoff_from_the_environment_names_both_variables(capsys):
    env = {"QUART_SSE_CHAT_BACKOFF": "3", "QUART_SSE_CHAT_BACKOFF_MAX": "1"}
    err = refused(capsys, [], env)
    assert_one_line(
        err,
        "QUART_SSE_CHAT_BACKOFF_MAX (1) must not be less than QUART_SSE_CHAT_BACKOFF (3)",
        "raise QUART_SSE_CHAT_BACKOFF_MAX or lower QUART_SSE_CHAT_BACKOFF",
    )
    assert " --" not in err
    err = refused(capsys, ["--backoff-max", "2"], env)  # the option and the variable, each named
    assert_one_line(err, "--backoff-max (2) must not be less than QUART_SSE_CHAT_BACKOFF (3)")


def test_numbers_at_their_limits_are_taken():
    env = {"QUART_SSE_CHAT_ATTEMPTS": "", "QUART_SSE_CHAT_BACKOFF": ""}  # empty: unset
    args, policy = parse_args(
        ["--reconnect-attempts", "0", "--backoff", "0.01", "--backoff-max", "0.01", "--idle-timeout", "0.1"],
        environ=env,
    )
    assert policy == ReconnectPolicy(attempts=0, base=0.01, cap=0.01, idle_timeout=0.1)
    assert (args.reconnect_attempts, args.idle_timeout) == (0, 0.1)
    argv = ["--backoff", "3600", "--backoff-max", "3600", "--idle-timeout", "86400"]
    assert parse_args(argv, environ={})[1] == ReconnectPolicy(base=3600.0, cap=3600.0, idle_timeout=86400.0)
    assert parse_args(["--backoff", "10"], environ={})[1].base == 10.0  # equal to the default cap
    env_limits = {"QUART_SSE_CHAT_BACKOFF": "0.01", "QUART_SSE_CHAT_BACKOFF_MAX": "3600"}
    assert parse_args([], environ=env_limits)[1] == ReconnectPolicy(base=0.01, cap=3600.0)
    assert parse_args([], environ={"QUART_SSE_CHAT_IDLE_TIMEOUT": "86400"})[1].idle_timeout == 86400.0
    assert parse_args([], environ=env)[1] == ReconnectPolicy()


def test_many_attempts_do_not_overflow_the_backoff():
    policy = ReconnectPolicy(attempts=5000, base=0.5, cap=10.0)
    assert policy.delay(1100, rand=lambda: 1.0) == 10.0
    assert ReconnectPolicy(base=1e-30, cap=10.0).delay(1500, rand=lambda: 1.0) == 10.0


# Defence in depth: a URL the checks let through, or an unexpected exception ---------------------

# check_url bypassed, as if it missed a URL aiohttp's resolver cannot encode.
UNCHECKED = """
import sys
from client import __main__, options
options.check_url = lambda value, name="--url": value
sys.exit(__main__.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("url", [f"http://{'a' * 64}.com:9", "http://a..b:9", "http://.:18171"])
def test_a_url_the_checks_missed_is_one_line_not_error_none_and_a_traceback(url):
    done = subprocess.run(
        [sys.executable, "-c", UNCHECKED, "--url", url, "-m", "hi"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=ROOT,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 3, err
    assert done.stdout == b""
    assert_one_line(
        err, "the address cannot be used (UnicodeError: ", "Check the address (--url or QUART_SSE_URL)"
    )


@pytest.mark.parametrize("url", ["http://a..b:9", "http://[::1:9", "http://h:99999"])
def test_the_api_says_a_url_it_cannot_use_as_unreachable(url):
    async def health() -> None:
        async with ChatAPI(url) as api:
            await api.health()

    with pytest.raises(Unreachable, match=r"^the address cannot be used \(\w*Error: ") as raised:
        asyncio.run(health())
    assert raised.value.host_unknown


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (UnicodeError(), "UnicodeError"),
        (ValueError(""), "ValueError"),
        (ValueError(None), "ValueError"),
        (RuntimeError("  \n"), "RuntimeError"),
        (ValueError("first\nsecond"), "ValueError: first"),
        (KeyError("k"), "KeyError: 'k'"),
        (ValueError("x" * 500), "ValueError: " + "x" * 200),
    ],
)
def test_an_exception_is_summed_up_by_its_type_and_first_line(exc, expected):
    assert summary(exc) == expected


class _Broken:
    base_url = NOWHERE

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def open_chat(self, message: str, session_id: str | None) -> None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "expected"), [(RuntimeError(), "RuntimeError"), (ValueError(None), "ValueError")]
)
def test_an_unexpected_exception_is_said_by_its_type_not_as_none(exc, expected):
    out, err = io.StringIO(), io.StringIO()
    stream = AnswerStream(cast(ChatAPI, _Broken(exc)), ReconnectPolicy())
    answer = Answer(stream, PlainView(out, err, PROG))
    with pytest.raises(type(exc)):  # a bug still propagates, said first
        asyncio.run(answer.run("hi", None))
    assert err.getvalue() == f"{PROG}: error: {expected}\n"
    assert answer.outcome.error == expected


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

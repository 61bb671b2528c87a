"""quart-sse-chat: arguments, the one-shot ``--message`` mode, and exit codes.

Exit codes: 0 the answer completed (or the interactive client quit), 1 the answer ended with
an ``error`` event or the server refused the request, 2 bad arguments, or standard input
that cannot be sent (not UTF-8, over the server's 1 MiB body limit, or making the message
longer than the server's ``MAX_MESSAGE_CHARS``), 3 the server could
not be reached or reconnection gave up, 130 interrupted by Ctrl-C, 141 standard output was
closed early (``quart-sse-chat -m … | head``: 128 + SIGPIPE, as a shell reports a process
that SIGPIPE ended).

Standard input that is not a terminal is read (up to the server's 1 MiB body limit) and
sent: after ``--message``'s text (``cat notes.txt | quart-sse-chat -m "summarise this"``),
or alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import BinaryIO, NoReturn

from client import options, render
from client.answer import Answer, AnswerView, PlainView, RichView, TextView
from client.api import DEFAULT_MAX_MESSAGE_CHARS as MAX_MESSAGE_CHARS_DEFAULT
from client.api import MAX_BODY_BYTES, ChatAPI, RequestFailed, Unreachable
from client.chat import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    ChatApp,
    interruptible,
    refused_text,
)
from client.safe import printable
from client.stats import LOST, Outcome
from client.stream import AnswerStream, ReconnectPolicy

PROG = "quart-sse-chat"
EXIT_USAGE = 2  # bad arguments, or standard input or a message the server cannot take
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
SHORT_MESSAGE = 1000  # characters: no need to ask the server for its limit


def version() -> str:
    try:
        return metadata.version("quart-sse")
    except metadata.PackageNotFoundError:
        return "unknown"


def wants_plain(args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    """``--plain``, or ``NO_COLOR`` set (to anything but empty), or ``TERM=dumb``."""
    return bool(args.plain or environ.get("NO_COLOR") or environ.get("TERM") == "dumb")


def wants_styles(args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    """False with ``--plain`` or ``TERM=dumb``: no colour, bold or dim at all.  ``NO_COLOR``
    alone keeps bold and dim (no-color.org asks only for no colour)."""
    return not (args.plain or environ.get("TERM") == "dumb")


class Parser(argparse.ArgumentParser):
    """Usage errors as one line on standard error (exit 2), control characters escaped."""

    def error(self, message: str) -> NoReturn:
        self.fail(f"{message} (see {self.prog} --help)")

    def fail(self, message: str) -> NoReturn:
        line = printable(message).replace("\n", "\\n").replace("\t", "\\t")
        self.exit(EXIT_USAGE, f"{self.prog}: error: {line}\n")


# Options that have an environment variable: option's dest -> (variable, default).  An empty
# variable counts as unset (QUART_SSE_CHAT_HISTORY aside: empty means no history file).
DEFAULT_URL = "http://localhost:8000"
_FROM_ENV = {
    "url": ("QUART_SSE_URL", DEFAULT_URL),
    "api_key": ("QUART_SSE_API_KEY", None),
    "reconnect_attempts": ("QUART_SSE_CHAT_ATTEMPTS", "8"),
    "backoff": ("QUART_SSE_CHAT_BACKOFF", "0.5"),
    "backoff_max": ("QUART_SSE_CHAT_BACKOFF_MAX", "10"),
    "idle_timeout": ("QUART_SSE_CHAT_IDLE_TIMEOUT", "35"),
}


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Chat with a quart-sse server from the terminal; answers stream live and survive "
        "dropped connections.",
        epilog="Exit codes: 0 complete, 1 error event or refused request, 2 bad arguments or "
        "input, 3 server unreachable or reconnection gave up, 130 Ctrl-C, 141 output closed.",
    )
    parser.add_argument(
        "--url",
        help=f"server address, http:// or https:// (env QUART_SSE_URL; default {DEFAULT_URL})",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--session", metavar="ID", help="continue this session")
    parser.add_argument(
        "--message",
        "-m",
        metavar="TEXT",
        help="send one message, print the answer to standard output and exit; standard input "
        "that is not a terminal is sent after it",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="no colours, boxes or emoji, answers as written (also with NO_COLOR set or TERM=dumb)",
    )
    parser.add_argument(
        "--api-key",
        help="bearer key when the server sets API_KEYS: printable ASCII, no spaces (env QUART_SSE_API_KEY)",
    )
    parser.add_argument(
        "--reconnect-attempts",
        metavar="N",
        help="tries in a row before giving up (env QUART_SSE_CHAT_ATTEMPTS; default 8)",
    )
    parser.add_argument(
        "--backoff",
        metavar="SECONDS",
        help="first reconnection delay, doubled each try, jittered (env QUART_SSE_CHAT_BACKOFF; default 0.5)",
    )
    parser.add_argument(
        "--backoff-max",
        metavar="SECONDS",
        help="longest reconnection delay (env QUART_SSE_CHAT_BACKOFF_MAX; default 10)",
    )
    parser.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        help="a stream silent this long (no event, no ping) is reconnected; about twice the "
        "server's HEARTBEAT_INTERVAL (env QUART_SSE_CHAT_IDLE_TIMEOUT; default 35)",
    )
    parser.add_argument(
        "--history",
        metavar="PATH",
        help="prompt history file, empty for none "
        "(env QUART_SSE_CHAT_HISTORY; default ~/.quart_sse_chat_history)",
    )
    return parser


def _resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[dict[str, str], set[str]]:
    """Where each option with an environment variable got its value: ``--url`` when given
    on the command line, else ``QUART_SSE_URL`` when set (not empty), else the default (named
    as the option); and the options (dests) left at their default.  The value is set on
    ``args``."""
    source = {}
    defaulted = set()
    for dest, (variable, default) in _FROM_ENV.items():
        option = "--" + dest.replace("_", "-")
        if getattr(args, dest) is not None:
            source[dest] = option
        elif environ.get(variable):
            source[dest] = variable
            setattr(args, dest, environ[variable])
        else:
            source[dest] = option
            defaulted.add(dest)
            setattr(args, dest, default)
    if args.history is None:
        args.history = environ.get("QUART_SSE_CHAT_HISTORY", "~/.quart_sse_chat_history")
    return source, defaulted


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[argparse.Namespace, ReconnectPolicy]:
    """The options, each checked (a usage error is one line on standard error, exit 2),
    and the reconnection policy they make."""
    parser = build_parser()
    args = parser.parse_args(argv)
    source, defaulted = _resolve(args, os.environ if environ is None else environ)
    try:
        args.url = options.check_url(args.url, source["url"])
        if args.api_key:  # empty: no key
            args.api_key = options.check_api_key(args.api_key, source["api_key"])
        if args.session is not None:
            args.session = options.check_session(args.session, "--session")
        if args.message is not None:
            args.message = options.check_text(args.message, "--message")
            if not args.message.strip():
                raise options.OptionError("--message is empty: give the text to send")
        attempts = options.parse_count(args.reconnect_attempts, source["reconnect_attempts"])
        least, most = options.BACKOFF_LEAST, options.BACKOFF_MOST
        base = options.parse_seconds(args.backoff, source["backoff"], least=least, most=most)
        cap = options.parse_seconds(args.backoff_max, source["backoff_max"], least=least, most=most)
        policy = ReconnectPolicy(
            attempts=attempts,
            base=base,
            cap=options.check_backoff_max(
                cap, base, source["backoff_max"], source["backoff"], cap_default="backoff_max" in defaulted
            ),
            idle_timeout=options.parse_seconds(
                args.idle_timeout,
                source["idle_timeout"],
                least=options.IDLE_TIMEOUT_LEAST,
                most=options.IDLE_TIMEOUT_MOST,
            ),
        )
    except options.OptionError as exc:
        parser.fail(str(exc))
    args.reconnect_attempts = policy.attempts
    args.backoff, args.backoff_max, args.idle_timeout = policy.base, policy.cap, policy.idle_timeout
    return args, policy


def exit_code(outcome: Outcome) -> int:
    """0 on ``complete``, 3 when the stream was lost, 1 otherwise."""
    if outcome.ok:
        return EXIT_OK
    return EXIT_UNREACHABLE if outcome.status == LOST else EXIT_ERROR


class InputError(Exception):
    """Standard input or the message cannot be sent as it is (exit 2); the text says why."""


def read_stdin(message: str | None, stdin: BinaryIO | None = None, limit: int = MAX_BODY_BYTES) -> str | None:
    """The message to send: ``message``, then piped standard input after a blank line (or
    alone); None when standard input is a terminal and there is no ``message``.

    At most ``limit`` bytes (the server's 1 MiB body limit) are read, and one more to know
    the input is over it.  Raises :class:`InputError` when it is, or when it is not UTF-8.
    """
    if stdin is None:
        if sys.stdin is None or sys.stdin.isatty():
            return message
        stdin = sys.stdin.buffer
    raw = stdin.read(limit + 1)
    if len(raw) > limit:
        raise InputError(
            f"standard input is too large: more than {limit:,} bytes "
            f"(the server takes at most {MAX_MESSAGE_CHARS_DEFAULT:,} characters by default)"
        )
    try:
        piped = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"standard input is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start:,}): "
            "send text, or convert it first (iconv -t UTF-8)"
        ) from None
    if not piped.strip():
        return message
    return f"{message}\n\n{piped}" if message is not None else piped


def too_long_text(length: int, limit: int, *, piped: bool) -> str:
    """``the piped input makes the message too long (40,012 of at most 32,000 characters)``."""
    what = "the piped input makes the message too long" if piped else "the message is too long"
    return f"{what} ({length:,} of at most {limit:,} characters, the server's MAX_MESSAGE_CHARS)"


async def one_shot(
    args: argparse.Namespace, policy: ReconnectPolicy, message: str, *, piped: bool = False
) -> int:
    """Send ``message``; the answer's text goes to stdout (plain when it is not a terminal).

    A message longer than the server takes is said before anything is sent (exit 2).  When
    standard output is closed early (``| head``) the generation is cancelled on the server,
    as Ctrl-C does, and the exit code is 141.
    """
    view: AnswerView
    if not sys.stdout.isatty():
        view = PlainView(sys.stdout, sys.stderr, PROG)
    elif render.is_plain():
        view = TextView(render.console())
    else:
        view = RichView(render.console())
    async with ChatAPI(args.url, args.api_key) as api:
        if len(message) > SHORT_MESSAGE:  # a short one fits any sensible MAX_MESSAGE_CHARS
            with contextlib.suppress(Unreachable):  # then said when the message is sent
                limit = await api.max_message_chars()
                if len(message) > limit:
                    _error(too_long_text(len(message), limit, piped=piped))
                    return EXIT_USAGE
        answer = Answer(AnswerStream(api, policy), view)
        try:
            interrupted, _ = await interruptible(answer.run(message, args.session))
        except BrokenPipeError:
            _quiet_stdout()
            interrupted = True
            code = EXIT_BROKEN_PIPE
        else:
            code = EXIT_INTERRUPTED
        if interrupted:
            if answer.outcome.stream_id:
                with contextlib.suppress(Unreachable, RequestFailed):
                    await api.cancel(answer.outcome.stream_id)
            return code
        if answer.unreachable is not None:
            return EXIT_UNREACHABLE
        if answer.outcome.error and "(401 " in answer.outcome.error:
            failed = RequestFailed(401, "unauthorized", answer.outcome.error)
            _error(refused_text(api.base_url, failed, has_key=bool(args.api_key)))
    return exit_code(answer.outcome)


def _error(line: str) -> None:
    sys.stderr.write(f"{PROG}: {printable(line.removeprefix('✖ '))}\n")
    sys.stderr.flush()


async def interactive(args: argparse.Namespace, policy: ReconnectPolicy) -> int:
    console = render.console()
    async with ChatAPI(args.url, args.api_key) as api:
        app = ChatApp(
            api,
            policy,
            console,
            session_id=args.session,
            history=args.history,
            has_key=bool(args.api_key),
        )
        return await app.run()


def _quiet_stdout() -> None:
    """After a broken pipe: nothing more reaches standard output, not even at exit's flush
    (Python's own advice, in the documentation of ``signal``)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    args, policy = parse_args(argv)
    render.set_plain(wants_plain(args, os.environ), styled=wants_styles(args, os.environ))
    try:
        message = read_stdin(args.message)
    except InputError as exc:
        _error(str(exc))
        return EXIT_USAGE
    if message is None and not sys.stdin.isatty():
        _error("standard input is empty: nothing to send")
        return EXIT_USAGE
    try:
        if message is not None:
            return asyncio.run(one_shot(args, policy, message, piped=message != args.message))
        return asyncio.run(interactive(args, policy))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())

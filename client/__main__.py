"""quart-sse-chat: arguments, the one-shot ``--message`` mode, and exit codes.

Exit codes: 0 the answer completed (or the interactive client quit), 1 the answer ended with
an ``error`` event or the server refused the request, 2 bad arguments, 3 the server could
not be reached or reconnection gave up, 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence

from rich.console import Console

from client.answer import Answer, AnswerView, PlainView, RichView
from client.api import ChatAPI, RequestFailed, Unreachable
from client.chat import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, ChatApp, interruptible
from client.stats import LOST, Outcome
from client.stream import AnswerStream, ReconnectPolicy

PROG = "quart-sse-chat"


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    env = environ.get
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Chat with a quart-sse server from the terminal; answers stream live and survive "
        "dropped connections.",
        epilog="Exit codes: 0 complete, 1 error event or refused request, 2 bad arguments, "
        "3 server unreachable or reconnection gave up, 130 Ctrl-C.",
    )
    parser.add_argument(
        "--url",
        default=env("QUART_SSE_URL", "http://localhost:8000"),
        help="server address (env QUART_SSE_URL; default %(default)s)",
    )
    parser.add_argument("--session", metavar="ID", help="continue this session")
    parser.add_argument(
        "--message",
        "-m",
        metavar="TEXT",
        help="send one message, print the answer to standard output and exit",
    )
    parser.add_argument(
        "--api-key",
        default=env("QUART_SSE_API_KEY"),
        help="bearer key when the server sets API_KEYS (env QUART_SSE_API_KEY)",
    )
    parser.add_argument(
        "--reconnect-attempts",
        type=int,
        metavar="N",
        default=env("QUART_SSE_CHAT_ATTEMPTS", "8"),
        help="tries in a row before giving up (env QUART_SSE_CHAT_ATTEMPTS; default %(default)s)",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        metavar="SECONDS",
        default=env("QUART_SSE_CHAT_BACKOFF", "0.5"),
        help="first reconnection delay, doubled each try, jittered "
        "(env QUART_SSE_CHAT_BACKOFF; default %(default)s)",
    )
    parser.add_argument(
        "--backoff-max",
        type=float,
        metavar="SECONDS",
        default=env("QUART_SSE_CHAT_BACKOFF_MAX", "10"),
        help="longest reconnection delay (env QUART_SSE_CHAT_BACKOFF_MAX; default %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        default=env("QUART_SSE_CHAT_IDLE_TIMEOUT", "35"),
        help="a stream silent this long (no event, no ping) is reconnected; about twice the "
        "server's HEARTBEAT_INTERVAL (env QUART_SSE_CHAT_IDLE_TIMEOUT; default %(default)s)",
    )
    parser.add_argument(
        "--history",
        metavar="PATH",
        default=env("QUART_SSE_CHAT_HISTORY", "~/.quart_sse_chat_history"),
        help="prompt history file, empty for none (env QUART_SSE_CHAT_HISTORY; default %(default)s)",
    )
    return parser


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[argparse.Namespace, ReconnectPolicy]:
    parser = build_parser(os.environ if environ is None else environ)
    args = parser.parse_args(argv)
    if args.reconnect_attempts < 0:
        parser.error("--reconnect-attempts must be 0 or more")
    if args.backoff < 0 or args.backoff_max < 0 or args.idle_timeout <= 0:
        parser.error("--backoff and --backoff-max must be 0 or more, --idle-timeout more than 0")
    if args.message is not None and not args.message.strip():
        parser.error("--message is empty")
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"--url must start with http:// or https://, not {args.url!r}")
    policy = ReconnectPolicy(
        attempts=args.reconnect_attempts,
        base=args.backoff,
        cap=args.backoff_max,
        idle_timeout=args.idle_timeout,
    )
    return args, policy


def exit_code(outcome: Outcome) -> int:
    """0 on ``complete``, 3 when the stream was lost, 1 otherwise."""
    if outcome.ok:
        return EXIT_OK
    return EXIT_UNREACHABLE if outcome.status == LOST else EXIT_ERROR


async def one_shot(args: argparse.Namespace, policy: ReconnectPolicy) -> int:
    """Send ``--message``; the answer's text goes to stdout (plain when it is not a terminal)."""
    view: AnswerView
    if sys.stdout.isatty():
        view = RichView(Console(highlight=False))
    else:
        view = PlainView(sys.stdout, sys.stderr, PROG)
    async with ChatAPI(args.url, args.api_key) as api:
        answer = Answer(AnswerStream(api, policy), view)
        interrupted, _ = await interruptible(answer.run(args.message, args.session))
        if interrupted:
            if answer.outcome.stream_id:
                with contextlib.suppress(Unreachable, RequestFailed):
                    await api.cancel(answer.outcome.stream_id)
            return EXIT_INTERRUPTED
    return exit_code(answer.outcome)


async def interactive(args: argparse.Namespace, policy: ReconnectPolicy) -> int:
    async with ChatAPI(args.url, args.api_key) as api:
        app = ChatApp(api, policy, Console(highlight=False), session_id=args.session, history=args.history)
        return await app.run()


def main(argv: Sequence[str] | None = None) -> int:
    args, policy = parse_args(argv)
    try:
        return asyncio.run(one_shot(args, policy) if args.message is not None else interactive(args, policy))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

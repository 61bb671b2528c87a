"""The suite's settings: Locust command-line options, each also read from an environment variable.

They show in the web UI's start form ("Custom parameters") too; workers get the master's
values with each start.  Values are cast when read, since the web UI hands back strings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from loadtest.figures import Targets


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    default: str
    help: str

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


OPTIONS = (
    Option("--chatter-weight", "LOADTEST_CHATTER_WEIGHT", "4", "weight of ChatterUser (0: none)"),
    Option("--burst-weight", "LOADTEST_BURST_WEIGHT", "2", "weight of BurstUser (0: none)"),
    Option("--reconnect-weight", "LOADTEST_RECONNECT_WEIGHT", "2", "weight of ReconnectingUser (0: none)"),
    Option("--idle-weight", "LOADTEST_IDLE_WEIGHT", "1", "weight of IdleListener (0: none)"),
    Option("--think-min", "LOADTEST_THINK_MIN", "1", "shortest think time between a chatter's turns, s"),
    Option("--think-max", "LOADTEST_THINK_MAX", "3", "longest think time between a chatter's turns, s"),
    Option("--turns-min", "LOADTEST_TURNS_MIN", "2", "fewest messages in a chatter's conversation"),
    Option("--turns-max", "LOADTEST_TURNS_MAX", "5", "most messages in a chatter's conversation"),
    Option("--idle-wait", "LOADTEST_IDLE_WAIT", "10", "mean pause between an idle listener's streams, s"),
    Option("--resume-delay", "LOADTEST_RESUME_DELAY", "0.2", "longest pause before a resume, s"),
    Option("--drop-after-max", "LOADTEST_DROP_AFTER_MAX", "10", "a reconnecting user drops after chunk 1..N"),
    Option(
        "--check-answers",
        "LOADTEST_CHECK_ANSWERS",
        "auto",
        "compare each answer with its saved session (one GET each): on, off (auto: on)",
    ),
    Option("--max-silence", "LOADTEST_MAX_SILENCE", "45", "longest silence on a stream, s (0: off)"),
    Option(
        "--goodput-ttft-ms",
        "LOADTEST_GOODPUT_TTFT_MS",
        "2000",
        "goodput: a good stream's longest time to first token, ms (0: no target)",
    ),
    Option(
        "--goodput-itl-ms",
        "LOADTEST_GOODPUT_ITL_MS",
        "100",
        "goodput: a good stream's longest mean inter-token latency (its TPOT), ms (0: no target)",
    ),
    Option("--api-key", "LOADTEST_API_KEY", "", "bearer key, for a server with API_KEYS"),
)
WEIGHTS = {
    "ChatterUser": "chatter_weight",
    "BurstUser": "burst_weight",
    "ReconnectingUser": "reconnect_weight",
    "IdleListener": "idle_weight",
}


def add_options(parser: Any) -> None:
    """Listener of ``events.init_command_line_parser``."""
    for opt in OPTIONS:
        parser.add_argument(
            opt.flag,
            env_var=opt.env,
            default=opt.default,
            help=f"{opt.help} (env {opt.env}, default {opt.default or 'unset'})",
            is_secret=opt.dest == "api_key",
        )


def get(options: Any, dest: str) -> str:
    default = next(o.default for o in OPTIONS if o.dest == dest)
    value = getattr(options, dest, None) if options is not None else None
    return default if value is None else str(value)


def number(options: Any, dest: str) -> float:
    text = get(options, dest)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--{dest.replace('_', '-')} has value {text!r}: not a number") from None


def uniform(options: Any, low: str, high: str) -> float:
    a, b = number(options, low), number(options, high)
    return random.uniform(min(a, b), max(a, b))


def targets(options: Any) -> Targets:
    """The goodput targets (``--goodput-ttft-ms``, ``--goodput-itl-ms``); ValueError when negative."""
    ttft, itl = number(options, "goodput_ttft_ms"), number(options, "goodput_itl_ms")
    if ttft < 0 or itl < 0:
        raise ValueError("--goodput-ttft-ms and --goodput-itl-ms take 0 (no target) or more")
    return Targets(ttft, itl)


def check_answers(options: Any) -> bool:
    """Whether to compare each answer with the session the server saved (``auto`` is ``on``)."""
    mode = get(options, "check_answers").strip().lower()
    modes = {"auto": True, "on": True, "off": False}
    if mode not in modes:
        raise ValueError(f"--check-answers has value {mode!r}: not auto, on or off")
    return modes[mode]


def apply_weights(options: Any, user_classes: list[Any]) -> None:
    """Set each user class's ``weight`` from the options (before Locust dispatches users)."""
    for cls in user_classes:
        dest = WEIGHTS.get(cls.__name__)
        if dest is not None:
            cls.weight = max(0, round(number(options, dest)))
    if user_classes and all(cls.weight <= 0 for cls in user_classes):
        raise ValueError("every user class has weight 0: give one a weight above 0")

"""What the real backends share: retry pauses, HTTP status to ``error`` code, safe messages.

Two texts for every failure: the client's (the ``error`` event's ``message``: what went
wrong, in the model's own words where it gave some, with every URL, host, address and key
taken out) and the operator's (logged at WARNING once the stream gives up, by
:func:`with_retries`: the model's address and the exception's own text).

A model that answers 429 or 5xx (or cannot be reached) before it has sent any text is asked
again after a pause: the pause it asks for (``Retry-After``, Google's ``RetryInfo``) when it
gives one, else an exponential backoff with jitter; ``MODEL_RETRIES`` times at most, and
never so long that the stream's silence timeout (``MODEL_TIMEOUT``) would fire first.  After
the first piece nothing is retried: the client has seen text that a new answer would not
continue.

Why not tenacity or backoff: what is retried is an async generator whose pieces reach the
client as they come, and only until the first one.  backoff's decorators wrap functions and
coroutines, not async generators.  tenacity (installed already: google-genai uses it) can
retry a block inside one, but the pauses stay ours (the pause asked for, its cap, the
``MODEL_TIMEOUT`` budget: :meth:`RetryPolicy.pause`), so to replace a loop of about thirty
lines it would need a custom wait and stop, an exception carrying the asked pause, and its
``RetryError`` turned back into a :class:`ProviderError`; and its attempt block swallows
every exception, ``GeneratorExit`` and ``CancelledError`` included, then raises it again
from its own state, in a generator the engine closes and cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from quart_sse import codes
from quart_sse.config import Settings
from quart_sse.providers.base import FinishReason, ProviderError

log = logging.getLogger("quart_sse.providers")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# Finish reasons are reported in lower case; these are renamed to docs/API.md's words.
_REASONS = {"length": "max_tokens", "content_filter": "safety", "finish_reason_unspecified": "other"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*s?\s*$")


def finish_reason(raw: str | None) -> str | None:
    """``max_tokens``, ``safety``... from a model's reason; None for a normal stop."""
    if not raw:
        return None
    reason = raw.strip().lower()
    reason = _REASONS.get(reason, reason)
    return None if reason == "stop" else reason


def parse_delay(value: object) -> float | None:
    """Seconds from a ``Retry-After`` value (seconds or HTTP date) or a duration such as ``"1.5s"``."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    text = str(value)
    match = _DURATION.match(text)
    if match:
        return float(match.group(1))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def code_for_status(status: int) -> str:
    """docs/API.md's ``error`` code for an HTTP status from the model."""
    if status == 429:
        return codes.RATE_LIMITED
    if status in (401, 403):
        return codes.AUTH
    if status >= 500 or status == 408:
        return codes.MODEL_UNAVAILABLE
    return codes.MODEL_ERROR


def safe_text(text: object, *secrets: str | None, limit: int = 200) -> str:
    """One line of upstream text fit for a client: secrets removed, shortened."""
    out = " ".join(str(text or "").split())
    for secret in secrets:
        if secret:
            out = out.replace(secret, "[redacted]")
    return out if len(out) <= limit else out[: limit - 1] + "…"


_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>)\]]+")
_IP = re.compile(r"\[[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\](?::\d+)?|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
_HOST_PORT = re.compile(r"\b(?=[\w.-]*[a-zA-Z])[\w.-]+:\d{2,5}\b")


def public_text(text: object, *secrets: str | None, hosts: tuple[str, ...] = (), limit: int = 200) -> str:
    """One line of upstream text fit for a client: :func:`safe_text`, and every URL, IP
    address, ``host:port`` and each of ``hosts`` replaced by ``[address]``."""
    out = " ".join(str(text or "").split())
    for secret in secrets:
        if secret:
            out = out.replace(secret, "[redacted]")
    out = _URL.sub("[address]", out)
    out = _IP.sub("[address]", out)
    out = _HOST_PORT.sub("[address]", out)
    for host in hosts:
        if host:
            out = re.sub(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", "[address]", out, flags=re.IGNORECASE)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def address(url: str) -> str:
    """``url`` as an operator's log may show it: without a user or password in it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def network_failure(exc: BaseException, *secrets: str | None) -> tuple[str, str]:
    """(for the client, for the log) of an unreachable model or a dropped connection: the
    client gets the exception's kind only (its text names the address)."""
    return type(exc).__name__, safe_text(f"{type(exc).__name__}: {exc}", *secrets, limit=500)


def auth_error(backend: str, variable: str) -> ProviderError:
    return ProviderError(codes.AUTH, f"{backend} refused the API key: check {variable}")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before asking the model again."""

    retries: int = 3
    delay: float = 1.0  # first backoff, doubled on each retry
    max_delay: float = 30.0  # longest single pause, asked for or not
    budget: float = 45.0  # seconds since the first attempt past which no retry starts

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        budget = 0.75 * settings.model_timeout
        return cls(settings.model_retries, settings.model_retry_delay, min(30.0, budget), budget)

    def pause(self, retry: int, asked: float | None, elapsed: float) -> float | None:
        """Seconds to wait before retry number ``retry`` (1, 2, ...), or None to give up."""
        if retry > self.retries:
            return None
        if asked is not None:
            wait = asked
        else:
            base = min(self.max_delay, self.delay * 2 ** (retry - 1))
            wait = base / 2 + random.uniform(0, base / 2)
        if wait > self.max_delay or elapsed + wait > self.budget:
            return None
        return wait


class Failed(NamedTuple):
    """A failure worth a retry: its ``error`` code, what the client may read of it
    (``said``: no address, host, URL or key), what the operator's log gets (``detail``),
    the pause the model asked for, and whether the model could not be reached at all."""

    code: str
    said: str
    detail: str
    asked: float | None = None
    unreachable: bool = False


def gave_up(backend: str, failed: Failed, attempts: int) -> ProviderError:
    """The error after the last attempt, saying how many were made and what the model asked."""
    code = failed.code
    what = {codes.RATE_LIMITED: "is rate limiting us", codes.MODEL_UNAVAILABLE: "is unavailable"}.get(
        code, "failed"
    )
    if failed.unreachable:
        what = "could not be reached"
    tries = f"after {attempts} attempts" if attempts > 1 else "at once"
    wait = f"; it asks to wait {failed.asked:g} s" if failed.asked is not None else ""
    return ProviderError(
        code,
        f"{backend} {what} ({failed.said}), gave up {tries}{wait}",
        detail=f"{backend} {what} ({failed.detail}), gave up {tries}{wait}",
    )


class Attempt:
    """What one request to the model has told so far: text yet, and its finish reason."""

    __slots__ = ("reason", "sent")

    def __init__(self) -> None:
        self.sent = False
        self.reason: str | None = None


class Cut(Exception):
    """The model's stream ended without its own end marker: the answer was cut short.

    A backend raises it (with what was missing) when the body ends before the model said
    the answer is whole.  :func:`with_retries` asks again while nothing was sent, like after
    a dropped connection; after text, or once the retries are used up, it is ``model_error``.
    """


Failure = Callable[[Exception, bool], Failed]
"""``failure(exc, sent) -> Failed`` for a failure worth a retry; raises any other (as a
ProviderError, or the exception itself)."""


async def with_retries(
    backend: str,
    attempt: Callable[[Attempt], AsyncGenerator[str, None]],
    failure: Failure,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
    where: str = "",
) -> AsyncIterator[str]:
    """Text pieces from ``attempt``, asking again after a pause while nothing was sent.

    Every failure it ends with (a :class:`ProviderError`) is logged at WARNING, with its
    ``detail`` and ``where`` (the model's address), before it is raised; each retry is
    logged at INFO.

    ``attempt(state)`` makes one request and yields its pieces, setting ``state.reason``
    when the model says why it stopped, and raising :class:`Cut` when the stream ends
    without the model's end marker. A stop with a reason but no text is a
    ``model_error`` that says why; a reason after text ends the answer with a
    :class:`FinishReason`. Closing this iterator closes the attempt (and its request).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    retry = 0
    at = f" at {where}" if where else ""
    try:
        while True:
            state = Attempt()
            try:
                async with contextlib.aclosing(attempt(state)) as pieces:
                    async for piece in pieces:
                        state.sent = True
                        yield piece
                if state.reason and not state.sent:
                    raise ProviderError(
                        codes.MODEL_ERROR,
                        f"{backend} ended without any text (finish reason: {state.reason})",
                        finish_reason=state.reason,
                    )
                if state.reason:
                    yield FinishReason(state.reason)
                return
            except ProviderError:
                raise
            except Cut as exc:
                if state.sent:
                    raise ProviderError(
                        codes.MODEL_ERROR, f"{backend}'s answer was cut short ({exc})"
                    ) from None
                failed = Failed(codes.MODEL_ERROR, f"cut short: {exc}", f"cut short: {exc}")
            except Exception as exc:
                failed = failure(exc, state.sent)
            retry += 1
            wait = policy.pause(retry, failed.asked, loop.time() - started)
            if wait is None:
                raise gave_up(backend, failed, retry)
            log.info("%s%s said %s; retry %d in %.2f s", backend, at, failed.detail, retry, wait)
            await sleep(wait)
    except ProviderError as exc:
        log.warning("model failure (%s)%s: %s", exc.code, at, exc.detail)
        raise

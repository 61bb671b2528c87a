"""Gemini through the google-genai SDK (``MODEL_PROVIDER=gemini``).

The whole conversation goes with every request as ``contents`` (roles ``user`` / ``model``),
so that any instance can answer any turn; ``SYSTEM_PROMPT`` is the system instruction and
``GEMINI_BASE_URL`` the SDK's base URL.  Text is passed on piece by piece as it arrives.

Failures become :class:`ProviderError` with docs/API.md's codes: 429 / 5xx / an unreachable model
before the first piece are retried (see :mod:`quart_sse.providers.retry`), then
``rate_limited`` / ``model_unavailable``; a refused key is ``auth`` (the key is never repeated);
anything after the first piece is ``model_error``.  A finish reason other than STOP is yielded
as :class:`FinishReason`; a prompt blocked outright, or an answer that ends before any text,
is a ``model_error`` that says why.

The SDK reads the event stream itself, and Gemini sends no ``[DONE]``: the end of the body
ends it, cut or not.  So the answer is whole only when a chunk had a candidate with a
``finishReason`` (``STOP`` on the last chunk of a normal answer); a body that ends without
one was cut (:class:`~quart_sse.providers.retry.Cut`: asked again while no text was sent, else
``model_error``, the partial answer kept ``interrupted``).  A chunk the SDK cannot read (not
JSON, a field of the wrong type) is ``model_error``; a ``{"error": ...}`` chunk raises in the
SDK and is mapped like an HTTP error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import aiohttp
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from quart_sse import codes
from quart_sse.models import Message
from quart_sse.providers.base import ProviderError
from quart_sse.providers.retry import (
    RETRYABLE_STATUS,
    Attempt,
    Cut,
    Failed,
    RetryPolicy,
    address,
    auth_error,
    code_for_status,
    finish_reason,
    network_failure,
    parse_delay,
    public_text,
    safe_text,
    with_retries,
)

log = logging.getLogger("quart_sse.providers.gemini")

T = TypeVar("T")
_END = object()


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class _Pump(Generic[T]):
    """Reads an SDK stream in a task of its own, so that leaving it cancels the network read.

    google-genai nests async generators: closing the outer one leaves the inner ones, and the
    HTTP response they hold, open until garbage collection.  This task only ever waits on the
    network (its queue has no bound), so cancelling it unwinds all of them and the connection
    is released at once: a cancel or a silence timeout really closes the upstream call.
    """

    def __init__(self, open_stream: Callable[[], Awaitable[AsyncIterator[T]]]) -> None:
        self._open = open_stream
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Pump[T]:
        self._task = asyncio.create_task(self._run(), name="gemini-stream")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    async def _run(self) -> None:
        try:
            async for item in await self._open():
                self._queue.put_nowait(item)
        except Exception as exc:
            self._queue.put_nowait(_Failed(exc))
        else:
            self._queue.put_nowait(_END)

    def __aiter__(self) -> _Pump[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            raise item.exc
        return item  # type: ignore[return-value]


def to_contents(history: Sequence[Message]) -> list[types.Content]:
    """Gemini's ``contents``: empty turns left out, consecutive turns of one role merged."""
    contents: list[types.Content] = []
    for message in history:
        if not message.content.strip():
            continue
        role = "model" if message.role == "model" else "user"
        part = types.Part(text=message.content)
        if contents and contents[-1].role == role and contents[-1].parts is not None:
            contents[-1].parts.append(part)
        else:
            contents.append(types.Content(role=role, parts=[part]))
    return contents


def _name(value: object) -> str:
    return str(getattr(value, "value", value))


def _asked_delay(exc: genai_errors.APIError) -> float | None:
    """The pause the model asks for: ``Retry-After``, else Google's ``RetryInfo.retryDelay``."""
    headers = getattr(exc.response, "headers", None)
    if headers is not None and hasattr(headers, "get"):
        value = headers.get("Retry-After") or headers.get("retry-after")
        if value is not None:
            return parse_delay(value)
    details = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else {}
    for detail in details.get("details") or () if isinstance(details, dict) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            return parse_delay(detail.get("retryDelay"))
    return None


def _is_auth(exc: genai_errors.APIError) -> bool:
    # A bad key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID, not a 401.
    if exc.code in (401, 403):
        return True
    body = json.dumps(exc.details, default=str) if exc.details else ""
    return '"API_KEY_' in body or "api key not valid" in str(exc.message or "").lower()


def _is_network(exc: Exception) -> bool:
    return isinstance(exc, aiohttp.ClientError | OSError | TimeoutError) or type(exc).__module__.startswith(
        ("httpx", "httpcore")
    )


class GeminiProvider:
    """A Gemini model through ``client.aio.models.generate_content_stream``."""

    name = "gemini"

    def __init__(
        self,
        api_key: str,
        model: str,
        *,
        base_url: str | None = None,
        system_prompt: str | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        show_text: bool = False,
    ) -> None:
        """``show_text`` (``LOG_MESSAGE_TEXT``): a chunk the SDK cannot read, which may hold
        answer text, is logged with the SDK's error text; otherwise with its kind only."""
        self.model = model
        self._key = api_key
        self._show_text = show_text
        self._where = address(base_url) if base_url else "Google's Gemini API"  # for the log only
        self._hosts = tuple(h for h in (urlsplit(base_url).hostname if base_url else None,) if h)
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        # Retries are ours (only before the first piece, honouring Retry-After): the SDK makes one
        # attempt, and a set retry_options also stops its hidden 1-10 s retry on connection errors.
        options = types.HttpOptions(base_url=base_url, retry_options=types.HttpRetryOptions(attempts=1))
        self._client = genai.Client(api_key=api_key, http_options=options)
        self._config = types.GenerateContentConfig(
            system_instruction=system_prompt or None,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    def _open(self, contents: list[types.Content]) -> Callable[[], Awaitable[AsyncIterator[Any]]]:
        def open_stream() -> Awaitable[AsyncIterator[Any]]:
            return self._client.aio.models.generate_content_stream(
                model=self.model,
                contents=contents,
                config=self._config,
            )

        return open_stream

    def stream(self, history: Sequence[Message]) -> AsyncIterator[str]:
        contents = to_contents(history)
        return with_retries(
            "Gemini",
            lambda state: self._attempt(contents, state),
            self._failure,
            self._policy,
            self._sleep,
            self._where,
        )

    async def _attempt(self, contents: list[types.Content], state: Attempt) -> AsyncGenerator[str, None]:
        """One streamed request; the pieces of text, and the finish reason into ``state``."""
        blocked: str | None = None
        finished = False  # a candidate carried a finishReason
        async with _Pump[types.GenerateContentResponse](self._open(contents)) as responses:
            async for response in responses:
                feedback = response.prompt_feedback
                if feedback is not None and feedback.block_reason is not None:
                    blocked = _name(feedback.block_reason).lower()
                candidates = response.candidates or ()
                if any(candidate.finish_reason is not None for candidate in candidates):
                    finished = True
                for candidate in candidates[:1]:
                    for part in (candidate.content.parts or ()) if candidate.content else ():
                        if part.text and not part.thought:
                            yield part.text
                    if candidate.finish_reason is not None:
                        state.reason = finish_reason(_name(candidate.finish_reason))
        if blocked and not state.sent:
            raise ProviderError(
                codes.MODEL_ERROR, f"Gemini refused the prompt (blocked: {blocked})", finish_reason=blocked
            )
        if not finished:
            raise Cut("the stream ended without a finishReason")

    def _failure(self, exc: Exception, sent: bool) -> Failed:
        """A failure worth a retry; raises any other.  What the client reads of it has no
        address, host, URL or key; the log's ``detail`` has the exception's own text."""
        if isinstance(exc, genai_errors.APIError):
            if _is_auth(exc):
                raise auth_error("Gemini", "GEMINI_API_KEY or GOOGLE_API_KEY") from None
            status = int(exc.code or 0)
            head = f"{status} {exc.status or ''}".strip()
            said = f"{head}: {public_text(exc.message, self._key, hosts=self._hosts)}"
            detail = f"{head}: {safe_text(exc.message, self._key, limit=500)}"
            if sent:
                raise ProviderError(
                    codes.MODEL_ERROR,
                    f"Gemini failed mid-answer ({said})",
                    detail=f"Gemini failed mid-answer ({detail})",
                ) from None
            if status not in RETRYABLE_STATUS:
                raise ProviderError(
                    code_for_status(status),
                    f"Gemini refused the request ({said})",
                    detail=f"Gemini refused the request ({detail})",
                ) from None
            return Failed(code_for_status(status), said, detail, _asked_delay(exc))
        if isinstance(exc, genai_errors.UnknownApiResponseError | pydantic.ValidationError):
            # A data event that is not JSON, or a chunk with a field of the wrong type; the SDK's
            # text quotes the chunk, which may be answer text.
            shown = (
                safe_text(exc, self._key)
                if self._show_text
                else f"{type(exc).__name__} (LOG_MESSAGE_TEXT=1 shows it)"
            )
            log.warning("Gemini sent a chunk the SDK cannot read: %s", shown)
            raise ProviderError(
                codes.MODEL_ERROR, "Gemini sent a malformed chunk (not JSON, or a field of the wrong type)"
            ) from None
        if not _is_network(exc):
            raise exc
        said, detail = network_failure(exc, self._key)
        if sent:
            raise ProviderError(
                codes.MODEL_ERROR,
                f"Gemini's answer broke off ({said})",
                detail=f"Gemini's answer broke off ({detail})",
            ) from None
        unreachable = isinstance(exc, aiohttp.ClientConnectorError) or type(exc).__name__ == "ConnectError"
        return Failed(codes.MODEL_UNAVAILABLE, said, detail, unreachable=unreachable)

    async def aclose(self) -> None:
        await self._client.aio.aclose()

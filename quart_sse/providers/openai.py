"""Any OpenAI-compatible server (``MODEL_PROVIDER=openai``): Ollama, vLLM, llama.cpp, OpenAI.

``POST {OPENAI_BASE_URL}/chat/completions`` with ``stream: true``, read with aiohttp: the
whole conversation as ``messages`` (``user`` / ``assistant``, ``SYSTEM_PROMPT`` first as
``system``), ``OPENAI_MODEL`` as ``model``, ``Authorization: Bearer`` only when
``OPENAI_API_KEY`` is set.  The answer is Server-Sent Events: ``data: {json}`` with text in
``choices[0].delta.content``, ``finish_reason`` on the last one, ``data: [DONE]`` at the end;
comment lines, events without choices and role-only deltas are skipped.  The bytes go through
the project's one parser, :class:`quart_sse.sse.SSEParser` (the HTML standard's rules: an
event is dispatched by its blank line, whatever its line length).

When the answer is whole (the rule, precisely).  The stream is finished when

* an event ``data: [DONE]`` is dispatched (nothing after it is read), or
* the body ends after a dispatched event whose first choice has a ``finish_reason``.

The second is deliberately lenient: OpenAI sends ``finish_reason``, maybe a usage event, then
``[DONE]``, and Ollama, vLLM and llama.cpp always send ``[DONE]``, but once ``finish_reason``
came no more of the answer is due, so losing what follows it (``[DONE]``, a usage event, even
half of one: an unfinished last event is discarded, as the standard says) loses no text.

A body that ends with neither was cut, whether it ends between events or inside one (an event
without its blank line is never dispatched, so a ``finish_reason`` in it does not count):
:class:`~quart_sse.providers.retry.Cut`, asked again while no text was sent, else
``model_error`` (the engine keeps the partial answer, ``interrupted``).  Anything else that is
not a well-formed stream of completion chunks is ``model_error`` at once: an HTTP 200 whose
``Content-Type`` is not ``text/event-stream`` (a JSON error body there is read as an error), a
``data`` that is not a JSON object, ``choices`` that is not a list, a choice or ``delta`` that
is not an object, ``delta.content`` or ``finish_reason`` that is not a string.  Events without
``choices`` or with an empty list (usage, Azure's first event) are skipped.

Failures map to docs/API.md's codes as for Gemini (see :mod:`quart_sse.providers.retry`),
including ``{"error": ...}`` events, ``event: error`` and llama.cpp's ``error: {...}`` lines
sent on an HTTP 200: before any text by their ``code`` (429 retried, then ``rate_limited``),
after text ``model_error``.  aiohttp's default 300 s limit on the whole answer is off: the
stream engine cuts a silent model after ``MODEL_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

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
from quart_sse.sse import Event, Item, SSEParser

log = logging.getLogger("quart_sse.providers.openai")

BACKEND = "the OpenAI-compatible server"
ERROR_BODY_LIMIT = 64 * 1024


class UpstreamError(Exception):
    """The server said no: an HTTP status other than 200, or an ``error`` event."""

    def __init__(self, status: int, message: str, asked: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.asked = asked


class _Parser(SSEParser):
    """The project's parser, plus llama.cpp's ``error: {json}`` line, as an ``error`` event.

    llama.cpp's server reports a failure mid-answer in an ``error`` field, which the HTML
    standard (and so :class:`SSEParser`) ignores; it sends the field alone, then a blank line.
    """

    def _line(self, line: str) -> Item | None:
        name, sep, value = line.partition(":")
        if name == "error" and sep:
            return Event(None, "error", value[1:] if value.startswith(" ") else value)
        return super()._line(line)

    def between_events(self) -> bool:
        """At the end of the body: whether it ended between events, not inside one.

        An unfinished line, or fields read since the last blank line, are an event the
        standard discards at the end of the stream; here they also show the body was cut.
        """
        tail = self._decoder.decode(b"", final=True)
        return not (self._buffer or tail or self._data or self._event)


class _Malformed(Exception):
    """An event that is not a completion chunk; says what is wrong with it."""


def _piece(data: str) -> tuple[str | None, str | None]:
    """(text, finish reason) of one completion chunk, ``{"error"}`` raised as :class:`UpstreamError`."""
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        raise _Malformed("a data line that is not JSON") from None
    if not isinstance(event, dict):
        raise _Malformed("an event that is not a JSON object")
    if event.get("error") is not None:
        raise UpstreamError(_status_of(event["error"]), error_message(event))
    choices = event.get("choices")
    if choices is None:  # usage or timings events of some servers
        return None, None
    if not isinstance(choices, list):
        raise _Malformed("a chunk whose choices is not a list")
    if not choices:  # Azure's first event, OpenAI's usage event
        return None, None
    choice = choices[0]
    if not isinstance(choice, dict):
        raise _Malformed("a chunk whose choice is not an object")
    delta = choice.get("delta")
    if delta is None:
        delta = {}
    elif not isinstance(delta, dict):
        raise _Malformed("a chunk whose delta is not an object")
    text = delta.get("content")
    if text is not None and not isinstance(text, str):
        raise _Malformed("a chunk whose delta.content is not a string")
    reason = choice.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise _Malformed("a chunk whose finish_reason is not a string")
    return text or None, reason or None


def _error_event(data: str) -> UpstreamError:
    """An ``event: error`` or llama.cpp's ``error:`` line, JSON or plain text."""
    try:
        body: Any = json.loads(data)
    except (ValueError, RecursionError):
        body = data
    inner = body.get("error", body) if isinstance(body, dict) else body
    return UpstreamError(_status_of(inner), error_message(body) or "error event")


async def _read_some(response: aiohttp.ClientResponse) -> bytes:
    """The body, up to :data:`ERROR_BODY_LIMIT` bytes."""
    out = b""
    while len(out) < ERROR_BODY_LIMIT:
        more = await response.content.read(ERROR_BODY_LIMIT - len(out))
        if not more:
            break
        out += more
    return out


def to_messages(history: Sequence[Message], system_prompt: str | None) -> list[dict[str, str]]:
    """Chat messages: empty turns left out, consecutive turns of one role joined."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for message in history:
        if not message.content.strip():
            continue
        role = "assistant" if message.role == "model" else "user"
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + message.content
        else:
            messages.append({"role": role, "content": message.content})
    return messages


def error_message(body: Any) -> str:
    """The human part of an error body: ``{"error": {"message"}}``, ``{"error": "..."}``..."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("type") or inner)
        return str(inner)
    return str(body)


def _status_of(error: Any) -> int:
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return 0


def _asked_delay(headers: Any) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        delay = parse_delay(ms)
        return None if delay is None else delay / 1000
    return parse_delay(headers.get("Retry-After"))


class OpenAIProvider:
    """A model behind an OpenAI-compatible ``/chat/completions``."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str | None,
        *,
        api_key: str | None = None,
        system_prompt: str | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        show_text: bool = False,
    ) -> None:
        """``show_text`` (``LOG_MESSAGE_TEXT``): a malformed event's data, which may hold
        answer text, is logged as it is; otherwise only its length."""
        self.model = model or "default"
        self._model = model
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._where = address(self._url)  # for the operator's log only
        self._hosts = tuple(h for h in (urlsplit(self._url).hostname,) if h)
        self._show_text = show_text
        self._key = api_key
        self._system_prompt = system_prompt
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # made inside the serving loop
            # No cap on the whole answer (the engine's MODEL_TIMEOUT watches silence) nor on the
            # number of connections (MAX_STREAMS bounds them; aiohttp's default is 100).
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0))
        return self._session

    def stream(self, history: Sequence[Message]) -> AsyncIterator[str]:
        body: dict[str, Any] = {"messages": to_messages(history, self._system_prompt), "stream": True}
        if self._model:
            body["model"] = self._model
        headers = {"Accept": "text/event-stream"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return with_retries(
            BACKEND,
            lambda state: self._attempt(body, headers, state),
            self._failure,
            self._policy,
            self._sleep,
            self._where,
        )

    async def _attempt(
        self, body: dict[str, Any], headers: dict[str, str], state: Attempt
    ) -> AsyncGenerator[str, None]:
        """One streamed request; the pieces of text, and the finish reason into ``state``."""
        async with self._http().post(self._url, json=body, headers=headers) as response:
            if response.status != 200:
                raw = await _read_some(response)
                try:
                    parsed: Any = json.loads(raw)
                except (ValueError, RecursionError):
                    parsed = raw.decode(errors="replace") or response.reason
                raise UpstreamError(response.status, error_message(parsed), _asked_delay(response.headers))
            if response.content_type != "text/event-stream":
                await self._not_a_stream(response)
            parser = _Parser()
            finished = False  # an event with a finish_reason was dispatched
            async for raw in response.content.iter_any():  # no line-length limit, unlike readline
                for item in parser.feed(raw):
                    if not isinstance(item, Event):
                        continue  # comments (": ping") and retry: fields
                    if item.event == "error":
                        raise _error_event(item.data)
                    if item.data.strip() == "[DONE]":
                        return
                    try:
                        text, reason = _piece(item.data)
                    except _Malformed as exc:
                        data = (
                            safe_text(item.data, self._key)
                            if self._show_text
                            else f"{len(item.data)} characters (LOG_MESSAGE_TEXT=1 shows them)"
                        )
                        log.warning("%s sent %s: %s", BACKEND, exc, data)
                        raise ProviderError(codes.MODEL_ERROR, f"{BACKEND} sent {exc}") from None
                    if text:
                        yield text
                    if reason:
                        finished = True
                        state.reason = finish_reason(reason)
            if finished:
                return  # no [DONE]: lenient, see the module's docstring
            if not parser.between_events():
                raise Cut("the body ended inside an event, without finish_reason or data: [DONE]")
            raise Cut("the body ended without finish_reason or data: [DONE]")

    async def _not_a_stream(self, response: aiohttp.ClientResponse) -> None:
        """An HTTP 200 that is not an event stream: its error, if it is one, else ``model_error``."""
        raw = await _read_some(response)
        try:
            parsed: Any = json.loads(raw)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and parsed.get("error") is not None:
            raise UpstreamError(_status_of(parsed["error"]), error_message(parsed))
        kind = response.headers.get("Content-Type") or "no Content-Type"
        raise ProviderError(
            codes.MODEL_ERROR,
            f"{BACKEND} answered with {safe_text(kind, limit=60)}, not text/event-stream: "
            "is OPENAI_BASE_URL an OpenAI-compatible server that streams?",
        )

    def _failure(self, exc: Exception, sent: bool) -> Failed:
        """A failure worth a retry; raises any other.  What the client reads of it has no
        address, host, URL or key; the log's ``detail`` has the exception's own text."""
        if isinstance(exc, UpstreamError):
            if exc.status in (401, 403):
                raise auth_error(BACKEND, "OPENAI_API_KEY") from None
            status = exc.status or "error"
            said = f"{status}: {public_text(exc.message, self._key, hosts=self._hosts)}"
            detail = f"{status}: {safe_text(exc.message, self._key, limit=500)}"
            if sent:
                raise ProviderError(
                    codes.MODEL_ERROR,
                    f"{BACKEND} failed mid-answer ({said})",
                    detail=f"{BACKEND} failed mid-answer ({detail})",
                ) from None
            if exc.status not in RETRYABLE_STATUS:
                code = code_for_status(exc.status)
                raise ProviderError(
                    code,
                    f"{BACKEND} refused the request ({said})",
                    detail=f"{BACKEND} refused the request ({detail})",
                ) from None
            return Failed(code_for_status(exc.status), said, detail, exc.asked)
        if not isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
            raise exc
        said, detail = network_failure(exc, self._key)
        if sent:
            raise ProviderError(
                codes.MODEL_ERROR,
                f"{BACKEND}'s answer broke off ({said})",
                detail=f"{BACKEND}'s answer broke off ({detail})",
            ) from None
        unreachable = isinstance(exc, aiohttp.ClientConnectorError)  # refused, no route, DNS
        return Failed(codes.MODEL_UNAVAILABLE, said, detail, unreachable=unreachable)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

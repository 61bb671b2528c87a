"""A thin layer over the server's HTTP API (docs/API.md): one method per endpoint, no UI.

Two failures are told apart: :class:`Unreachable` (no HTTP answer at all: refused, reset,
timed out; the request may be retried) and :class:`RequestFailed` (the server answered
with a non-2xx status and docs/API.md's error body).
"""

from __future__ import annotations

import json
import os
import socket
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

import aiohttp

# A stream response has no total deadline: :mod:`client.stream` watches for silence instead.
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)
_CALL_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
# The server's defaults (docs/API.md): MAX_MESSAGE_CHARS, MAX_BODY_BYTES.
DEFAULT_MAX_MESSAGE_CHARS = 32_000
MAX_BODY_BYTES = 1_048_576


class Unreachable(Exception):
    """No HTTP answer from the server (connection refused, reset, or timed out);
    ``host_unknown``: the server's host name could not be resolved (DNS)."""

    def __init__(self, reason: str, *, host_unknown: bool = False) -> None:
        super().__init__(reason)
        self.host_unknown = host_unknown


class RequestFailed(Exception):
    """The server answered with a non-2xx status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def describe(exc: BaseException) -> str:
    """A short, one-line reason for a network failure (never a traceback)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if _host_unknown(exc):
        assert isinstance(exc, aiohttp.ClientConnectorError)
        return f"the host name {exc.host} could not be resolved"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        return os.strerror(errno).lower() if errno else str(exc.os_error) or type(exc).__name__
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection lost mid-response"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


def summary(exc: BaseException) -> str:
    """``UnicodeError: label empty or too long``: an unexpected exception's type and the first
    line of its text (cut short), for one line on the terminal; never ``None`` or empty."""
    lines = str(exc).strip().splitlines() if exc.args != (None,) else []  # ValueError(None): "None"
    text = lines[0][:200] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _host_unknown(exc: BaseException) -> bool:
    """A failed DNS look-up (``socket.gaierror``), where ``str()`` says "unknown error -2"."""
    return isinstance(exc, aiohttp.ClientConnectorDNSError) or (
        isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, socket.gaierror)
    )


async def _failure(response: aiohttp.ClientResponse) -> RequestFailed:
    raw = await response.read()
    try:
        error = json.loads(raw)["error"]
        return RequestFailed(response.status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = raw.decode(errors="replace").strip().splitlines()
        return RequestFailed(response.status, "http_error", text[0][:200] if text else response.reason or "")


class ChatAPI:
    """The server at ``base_url``; ``api_key`` is sent as ``Authorization: Bearer``."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = aiohttp.ClientSession(headers=headers)
        self._max_chars: int | None = None

    async def __aenter__(self) -> ChatAPI:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.close()

    def url(self, path: str) -> str:
        """``path`` (absolute, or relative to the server such as an ``events_url``) as a URL."""
        return urljoin(self.base_url + "/", path.lstrip("/")) if "://" not in path else path

    async def _open(
        self, method: str, path: str, *, limits: aiohttp.ClientTimeout, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        try:
            response = await self._http.request(method, self.url(path), timeout=limits, **kwargs)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise Unreachable(describe(exc), host_unknown=_host_unknown(exc)) from None
        except ValueError as exc:  # also UnicodeError: a URL or host name aiohttp cannot use
            # (options.check_url refuses those first; this keeps any it missed to one line)
            raise Unreachable(f"the address cannot be used ({summary(exc)})", host_unknown=True) from None
        if response.status >= 300:
            try:
                raise await _failure(response)
            finally:
                response.release()
        return response

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON request and its JSON answer."""
        response = await self._open(method, path, limits=_CALL_TIMEOUT, json=body)
        try:
            data: dict[str, Any] = await response.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(describe(exc)) from None
        except ValueError:
            raise RequestFailed(response.status, "bad_response", "the answer is not JSON") from None
        finally:
            response.release()
        return data

    # Streams ---------------------------------------------------------------------------

    async def open_chat(self, message: str, session_id: str | None) -> aiohttp.ClientResponse:
        """``POST /chat/stream``: the open stream response of a new generation."""
        body = {"message": message, "session_id": session_id}
        return await self._open("POST", "/chat/stream", limits=_STREAM_TIMEOUT, json=body)

    async def open_events(self, events_url: str, last_event_id: str | None) -> aiohttp.ClientResponse:
        """``GET {events_url}`` resuming after ``last_event_id`` (status 200, or 204 when done)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
        return await self._open("GET", events_url, limits=_STREAM_TIMEOUT, headers=headers)

    async def cancel(self, stream_id: str) -> bool:
        data = await self.call("POST", f"/streams/{stream_id}/cancel")
        return bool(data.get("cancelled"))

    # Sessions and system ---------------------------------------------------------------

    async def new_session(self) -> dict[str, Any]:
        return await self.call("POST", "/sessions/new")

    async def sessions(self) -> list[dict[str, Any]]:
        return list((await self.session_page())["sessions"])

    async def session_page(self) -> dict[str, Any]:
        """The first page of ``GET /sessions``: ``sessions``, ``count``, ``scope`` (``own`` with
        an ordinary API key: only this key's sessions; ``all``: every session)."""
        data = await self.call("GET", "/sessions")
        return {
            "sessions": list(data.get("sessions", [])),
            "count": data.get("count", 0),
            "scope": data.get("scope", "all"),
        }

    async def session(self, session_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/sessions/{session_id}")

    async def delete_session(self, session_id: str) -> None:
        await self.call("DELETE", f"/sessions/{session_id}")

    async def clear_session(self, session_id: str) -> None:
        await self.call("POST", f"/sessions/{session_id}/clear")

    async def max_message_chars(self) -> int:
        """The longest message the server takes, in characters (its ``MAX_MESSAGE_CHARS``, read
        once from ``/openapi.json``: ``ChatRequest.message.maxLength``); 32,000 (the default)
        when the schema cannot be read.  Raises :class:`Unreachable`."""
        if self._max_chars is None:
            try:
                spec = await self.call("GET", "/openapi.json")
                found = spec["components"]["schemas"]["ChatRequest"]["properties"]["message"]["maxLength"]
                self._max_chars = int(found) if int(found) > 0 else DEFAULT_MAX_MESSAGE_CHARS
            except (RequestFailed, KeyError, TypeError, ValueError):
                self._max_chars = DEFAULT_MAX_MESSAGE_CHARS
        return self._max_chars

    async def health(self) -> dict[str, Any]:
        return await self.call("GET", "/health")

    async def stats(self) -> dict[str, Any]:
        return await self.call("GET", "/stats")

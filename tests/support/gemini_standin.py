"""A local stand-in for Gemini's REST streaming endpoint, for the real google-genai SDK to talk to.

``POST {base}/{version}/models/{model}:streamGenerateContent?alt=sse`` (google-genai 3.x sends
``v1``, 2.x ``v1beta``; both are served) answered with
``data: {json}\\n\\n`` frames (no ``[DONE]``: the end of the body ends the stream), or with an
error status and Google's JSON error body.  Tests queue :class:`Reply` objects; every request
is recorded, and every connection the client drops is counted, so a test can wait for it.

:class:`StandIn` is shared with the OpenAI-compatible stand-in (``openai_standin.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

from tests.support.local_http import LocalApp

MODEL = "gemini-test-model"
KEY = "test-key-5f1c2a9e"
WAIT = 30.0  # longest wait for something the stand-in expects; a guard against hangs, not a pace


@dataclass
class Reply:
    """What the stand-in answers to one request."""

    status: int = 200
    frames: list[str] = field(default_factory=list)  # each one ``data:`` payload (or a ": comment")
    body: Any = None  # JSON body of a non-200 answer
    headers: dict[str, str] = field(default_factory=dict)  # may replace the Content-Type
    raw: bytes = b""  # written as is after the frames: an unfinished event, an ``error:`` line
    then: str = "end"  # after the frames: "end", "hold" (until the client leaves), "drop" (cut)


@dataclass
class Seen:
    """One request the stand-in received."""

    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: Any


class StandIn(LocalApp):
    """An aiohttp server on a free loopback port; use as ``async with``."""

    route = "/"

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.disconnects = 0
        self._changed = asyncio.Condition()

    def default_reply(self) -> Reply:
        raise NotImplementedError

    def refuse(self, seen: Seen) -> Reply | None:
        """A reply that refuses ``seen`` before the script is consulted (a bad key), or None."""
        return None

    # A client that goes away cancels the handler, which counts it.
    handler_cancellation = True

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.route, self._handle)

    async def wait_for(self, *, requests: int = 0, disconnects: int = 0) -> None:
        """Wait until at least so many requests arrived and connections were dropped (or fail)."""
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(
                lambda: len(self.requests) >= requests and self.disconnects >= disconnects
            )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        seen = Seen(request.path, dict(request.query), request.headers, body)
        self.requests.append(seen)
        await self._notify()
        reply = self.refuse(seen) or (self.replies.popleft() if self.replies else self.default_reply())
        if reply.status != 200:
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **reply.headers})
        await response.prepare(request)
        try:
            for frame in reply.frames:
                # A frame starting with ":" is a comment line, written as it is.
                await response.write(
                    f"{frame}\n\n".encode() if frame.startswith(":") else f"data: {frame}\n\n".encode()
                )
            if reply.raw:
                await response.write(reply.raw)
            if reply.then == "drop" and request.transport is not None:
                request.transport.close()  # what was written is flushed, then the body is cut
            if reply.then in ("hold", "drop"):
                await asyncio.Event().wait()  # until the client goes: the handler is cancelled
        except (asyncio.CancelledError, ConnectionError):
            self.disconnects += 1
            asyncio.get_running_loop().create_task(self._notify())
            raise
        await response.write_eof()
        return response


# Gemini's shapes -------------------------------------------------------------------------------


def chunk(text: str | None = None, finish: str | None = None, **extra: Any) -> str:
    """One GenerateContentResponse frame, as the API streams it."""
    candidate: dict[str, Any] = {"index": 0}
    if text is not None:
        candidate["content"] = {"role": "model", "parts": [{"text": text}]}
    if finish is not None:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate], "modelVersion": MODEL, "responseId": "r-1", **extra}
    if finish is not None:
        out["usageMetadata"] = {"promptTokenCount": 5, "candidatesTokenCount": 7, "totalTokenCount": 12}
    return json.dumps(out)


def answer(*pieces: str, finish: str = "STOP", then: str = "end") -> Reply:
    """Text pieces, the finish reason on the last frame."""
    frames = [chunk(p) for p in pieces[:-1]]
    frames.append(chunk(pieces[-1] if pieces else "", finish))
    return Reply(frames=frames, then=then)


def error_body(code: int, status: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


def failure(code: int, status: str, message: str = "try later", retry_after: str | None = None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(status=code, body=error_body(code, status, message), headers=headers)


class GeminiStandIn(StandIn):
    """Answers any model with the scripted replies; a wrong ``x-goog-api-key`` gets Google's 400."""

    route = "/{version}/models/{model}"

    def __init__(self, key: str = KEY) -> None:
        super().__init__()
        self.key = key

    def default_reply(self) -> Reply:
        return answer("Hello ", "from the ", "stand-in.")

    def refuse(self, seen: Seen) -> Reply | None:
        presented = seen.headers.get("x-goog-api-key", "")
        if presented == self.key:
            return None
        # Google does not echo the key; this stand-in does, so that a leak would show.
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"key": presented},
            }
        ]
        body = error_body(
            400, "INVALID_ARGUMENT", f"API key not valid ({presented}). Please pass a valid API key.", details
        )
        return Reply(status=400, body=body)

    @staticmethod
    def contents(seen: Seen) -> list[tuple[str, str]]:
        """(role, text) of each turn the SDK sent."""
        return [(c["role"], "".join(p.get("text", "") for p in c["parts"])) for c in seen.body["contents"]]

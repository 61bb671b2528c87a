"""A local stand-in for an OpenAI-compatible server (Ollama, vLLM, llama.cpp), for the real backend.

``POST {base}/chat/completions`` with ``stream: true`` answered with ``data: {chunk}`` events
and ``data: [DONE]``, the way Ollama and OpenAI send them (a role-only first delta, an empty
last delta carrying ``finish_reason``), or with an error status and OpenAI's error body.
The base URL to configure is :attr:`OpenAIStandIn.base_url` (it ends in ``/v1``).
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.gemini_standin import Reply, Seen, StandIn

MODEL = "llama-test:8b"
KEY = "sk-test-3b8e0d7c"

__all__ = ["KEY", "MODEL", "OpenAIStandIn", "Reply", "answer", "chunk", "error_body", "failure"]


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, choices: bool = True) -> str:
    """One ``chat.completion.chunk`` event."""
    out: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
    }
    out["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    return json.dumps(out)


def answer(*pieces: str, finish: str | None = "stop", then: str = "end", done: bool = True) -> Reply:
    """A role-only delta, one delta per piece, an empty delta with the finish reason, [DONE].

    ``finish=None`` leaves out the finish reason's event, ``done=False`` the ``[DONE]``.
    """
    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [chunk({"content": p}) for p in pieces]
    if finish is not None:
        frames.append(chunk({}, finish))
    if done:
        frames.append("[DONE]")
    return Reply(frames=frames, then=then)


def error_body(message: str, kind: str = "server_error", code: Any = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def failure(status: int, message: str = "try later", retry_after: str | None = None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(status=status, body=error_body(message), headers=headers)


class OpenAIStandIn(StandIn):
    """Answers with the scripted replies; with ``key`` set, a wrong bearer key gets a 401."""

    route = "/v1/chat/completions"

    def __init__(self, key: str | None = KEY) -> None:
        super().__init__()
        self.key = key

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def default_reply(self) -> Reply:
        return answer("Hello ", "from the ", "stand-in.")

    def refuse(self, seen: Seen) -> Reply | None:
        if self.key is None:
            return None
        presented = seen.headers.get("Authorization", "")
        if presented == f"Bearer {self.key}":
            return None
        # OpenAI repeats part of a wrong key; this stand-in repeats all of it, so a leak would show.
        body = error_body(
            f"Incorrect API key provided: {presented.removeprefix('Bearer ')}.",
            "invalid_request_error",
            "invalid_api_key",
        )
        return Reply(status=401, body=body)

    @staticmethod
    def messages(seen: Seen) -> list[tuple[str, str]]:
        return [(m["role"], m["content"]) for m in seen.body["messages"]]

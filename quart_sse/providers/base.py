"""The model interface: given the conversation, an async iterator of text pieces.

Shaped like httpx's one-method transport: ``stream(history)`` plus ``aclose()``.
A provider that knows in advance which piece is the last yields it as :class:`LastPiece`
(the stream then marks that chunk ``is_final``); one that ends for another reason than
``stop`` yields a :class:`FinishReason` last.  Failures are :class:`ProviderError` with
one of docs/API.md's ``error`` event codes; anything else a provider raises is ``model_error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from quart_sse.models import Message


class LastPiece(str):
    """A text piece the model marks as its last one."""

    __slots__ = ()


class FinishReason(str):
    """Not text: the model's reason for ending (``max_tokens``, ``safety``...), yielded last.

    Without one, a stream that ends normally has ``finish_reason`` ``stop``.
    """

    __slots__ = ()


class ProviderError(Exception):
    """A model failure with the ``error`` event code the stream ends with.

    ``message`` goes to the client (the ``error`` event): no address, host, URL or key in
    it.  ``detail`` is for the operator's log (the model's address, the exception's own
    text); it defaults to ``message``.
    """

    def __init__(
        self, code: str, message: str, *, finish_reason: str | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.finish_reason = finish_reason
        self.detail = detail or message


class Provider(Protocol):
    """A model backend."""

    name: str  # "simulated", "gemini", "openai"
    model: str  # the model id reported to clients

    def stream(self, history: Sequence[Message]) -> AsyncIterator[str]:
        """Text pieces of the answer to ``history`` (whose last message is the user's)."""
        ...

    async def aclose(self) -> None: ...

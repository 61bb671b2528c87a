"""quart-sse: stream LLM chat answers to many users at once over Server-Sent Events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from quart import Quart

    from quart_sse.config import Settings


def create_app(settings: Settings | None = None, **kwargs: Any) -> Quart:
    from quart_sse.app import create_app as _create_app

    return _create_app(settings, **kwargs)


__all__ = ["__version__", "create_app"]

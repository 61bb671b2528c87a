"""The stream engine: generation, channel and log writer, the hub, delivery, transport."""

from __future__ import annotations

from quart_sse.engine.generation import Generation, Outcome, events_url
from quart_sse.engine.lifecycle import Engine

__all__ = ["Engine", "Generation", "Outcome", "events_url"]

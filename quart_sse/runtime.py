"""What the routes share: settings, store, model, log writer, generations, figures."""

from __future__ import annotations

from dataclasses import dataclass, field

from quart import current_app

from quart_sse.config import Settings
from quart_sse.generation import Generations
from quart_sse.limits import Limits
from quart_sse.metrics import Stats
from quart_sse.providers.base import Provider
from quart_sse.stores.base import Store
from quart_sse.streams import Heartbeats, LogWriter


@dataclass
class Runtime:
    settings: Settings
    store: Store
    provider: Provider
    writer: LogWriter
    generations: Generations
    stats: Stats = field(default_factory=Stats)
    heartbeats: Heartbeats | None = None
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = Limits(self.settings)

    def engine_counts(self) -> dict[str, int]:
        """Everything the engine holds, for the leak checks (readers, tasks, queues, logs)."""
        running = self.generations.running
        return {
            "readers": self.stats.readers_open,
            "generations": len(running),
            "generation_tasks": sum(1 for g in running.values() if g.task is not None and not g.task.done()),
            "queued_frames": sum(len(g.channel.frames) for g in running.values()),
            "heartbeat_members": len(self.heartbeats.members) if self.heartbeats is not None else 0,
            **self.store.debug_counts(),
            **self.limits.debug_counts(),
        }


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["quart_sse"]
    return rt

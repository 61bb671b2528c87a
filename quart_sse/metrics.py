"""Server figures: plain counters on the hot path, read by /stats and rendered by /metrics.

Counting is an integer add; Prometheus' own metric objects (a lock per ``inc()``) are
built only when /metrics is scraped, by a custom collector over these counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    requests_total: int = 0
    requests_ok: int = 0
    requests_failed: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_failed: int = 0
    streams_active: int = 0
    chunks_sent: int = 0
    response_time_total: float = 0.0  # seconds, over finished generations
    sessions_created: int = 0
    readers_open: int = 0
    readers_opened: int = 0
    writes_direct: int = 0  # SSE body writes straight to the socket (quart_sse.engine.transport)
    writes_asgi: int = 0  # SSE body writes through ASGI (the response head, backpressure, others)
    stalled_cut: int = 0  # stream responses cut after SEND_TIMEOUT without progress

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def average_response_time(self) -> float:
        done = self.streams_completed + self.streams_failed
        return self.response_time_total / done if done else 0.0


class _Collector(Collector):
    def __init__(self, stats: Stats, gauges: Callable[[], dict[str, float]], info: dict[str, str]) -> None:
        self.stats = stats
        self.gauges = gauges
        self.info = info

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        counters: dict[str, tuple[str, float]] = {
            "quart_sse_requests": ("HTTP requests answered", s.requests_total),
            "quart_sse_requests_failed": ("HTTP requests answered with a 4xx or 5xx", s.requests_failed),
            "quart_sse_streams_started": ("generations started", s.streams_started),
            "quart_sse_streams_completed": ("generations ended with complete", s.streams_completed),
            "quart_sse_streams_failed": ("generations ended with an error event", s.streams_failed),
            "quart_sse_chunks": ("chunk events put into streams", s.chunks_sent),
            "quart_sse_sessions_created": ("sessions created", s.sessions_created),
            "quart_sse_stream_responses": ("SSE responses opened (readers)", s.readers_opened),
            "quart_sse_stream_writes_direct": ("SSE body writes straight to the socket", s.writes_direct),
            "quart_sse_stream_writes_asgi": ("SSE body writes through ASGI", s.writes_asgi),
            "quart_sse_stream_stalled_cut": ("stream responses cut after SEND_TIMEOUT", s.stalled_cut),
            "quart_sse_generation_seconds": (
                "time spent generating, over ended generations",
                s.response_time_total,
            ),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("quart_sse_uptime_seconds", "seconds since start", value=s.uptime)
        yield GaugeMetricFamily("quart_sse_streams_active", "generations running", value=s.streams_active)
        yield GaugeMetricFamily("quart_sse_stream_responses_open", "SSE responses open", value=s.readers_open)
        for name, value in self.gauges().items():
            yield GaugeMetricFamily(f"quart_sse_{name}", name.replace("_", " "), value=value)
        # Exposed as quart_sse_instance_info (prometheus_client appends _info).
        yield InfoMetricFamily(
            "quart_sse_instance", "the instance that answered (label instance)", value=self.info
        )


def prometheus_text(stats: Stats, gauges: Callable[[], dict[str, Any]], info: dict[str, str]) -> bytes:
    """The figures in Prometheus text format; ``info`` labels ``quart_sse_instance_info``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats, gauges, info))
    return generate_latest(registry)

"""Server figures: plain counters on the hot path, read by /stats and rendered by /metrics.

Counting is an integer add (a histogram's observation: a bisect and an add); Prometheus'
own metric objects (a lock per ``inc()``) are built only when /metrics is scraped, by a
custom collector over these counters, next to prometheus-client's process, platform and
garbage-collector collectors (``process_*``, ``python_*``).

Names follow Prometheus' conventions: the ``quart_sse_`` prefix, base units (seconds),
``_total`` on counters, ``_seconds`` on times.  Every label takes a bounded set of values:
route templates (``/streams/{stream_id}/events``, ``unmatched`` for a path no route has),
known methods (``other`` for the rest), statuses, and the error codes of docs/API.md.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

FIRST_CHUNK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: from ~5 ms (the offline model) to a model that thinks for a minute."""
STREAM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Seconds: short answers to long ones (MODEL_TIMEOUT bounds only the silence between pieces)."""
REQUEST_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
)
"""Seconds: a JSON answer takes milliseconds, a stream's response lasts as long as the stream."""


class Histogram:
    """Counts of observations per bucket (upper bounds ``bounds``, then +Inf), and their sum.

    ``observe`` is a bisect and two adds: no lock, as everything runs on the event loop.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least ``value`` (``le``)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' buckets: (``le``, observations at most that), the last ``+Inf``."""
        total = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return buckets


METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
"""Methods counted under their own name; any other is counted as ``other``."""


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
    first_chunk: Histogram = field(default_factory=lambda: Histogram(FIRST_CHUNK_BUCKETS))
    """Seconds from a generation's start to its first chunk event."""
    stream_duration: Histogram = field(default_factory=lambda: Histogram(STREAM_BUCKETS))
    """Seconds from a generation's start to its final event (as ``response_time_total``)."""
    http_requests: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    """Answered requests by (route template, method, status, error code)."""
    http_latency: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    """Seconds from a request's arrival to the end of its response, by (route template, method)."""

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def average_response_time(self) -> float:
        done = self.streams_completed + self.streams_failed
        return self.response_time_total / done if done else 0.0

    def request(self, route: str, method: str, status: int, code: str, seconds: float) -> None:
        """Count one answered request: ``route`` a template, ``code`` the error body's (or "")."""
        if method not in METHODS:
            method = "other"
        key = (route, method, str(status), code)
        requests = self.http_requests
        requests[key] = requests.get(key, 0) + 1
        latency = self.http_latency.get((route, method))
        if latency is None:
            latency = self.http_latency[(route, method)] = Histogram(REQUEST_BUCKETS)
        latency.observe(seconds)


# What each gauge of the engine's and the edge's counts is (``Engine.counts``, ``/stats``'s
# ``engine``); a figure not listed here is still exported, with a generic text.
GAUGE_HELP = {
    "sessions_active": "sessions in the store (on Redis: those of every instance)",
    "cluster_instances": "server instances sharing the store (1 with the memory store)",
    "cluster_streams_active": "generations running on every instance sharing the store",
    "generation_tasks": "generation tasks of this process not yet finished",
    "queued_frames": "events queued between the generations and the log writer",
    "client_generations": "running generations counted against their clients",
    "hub_streams": "streams with live readers in this process's hub",
    "waiting_readers": "SSE responses waiting in the hub for their stream's next event",
    "heartbeat_members": "SSE responses due a heartbeat",
    "logs": "stream logs held in memory (memory store)",
    "owned_streams": "streams this instance generates into (Redis store)",
    "blocking_reads": "shared XREAD BLOCK commands running here (Redis store; one per slot group)",
    "blocking_keys": "stream logs those shared blocking reads wait on (Redis store)",
    "bodies_pending": "requests whose body is being read (each for BODY_TIMEOUT at most)",
    "client_streams": "SSE responses counted against MAX_STREAMS_PER_CLIENT",
    "limited_clients": "clients with an SSE response counted against MAX_STREAMS_PER_CLIENT",
    "durable_streams": "Durable Streams held (/v1/stream/; the memory store's, or this store's index)",
    "durable_bytes": "bytes of Durable Streams records held (memory store)",
    "durable_waiting": "Durable Streams reads (long-poll, SSE) waiting for data",
    "session_readers": "session streams (GET /sessions/{id}/events) open in this process",
}

# Engine counts that /metrics already has under another name, the same figure: not exported
# twice (``/stats``'s ``engine`` keeps them).
SAME_AS = {"readers": "quart_sse_stream_responses_open", "generations": "quart_sse_streams_active"}


class _Collector(Collector):
    def __init__(self, stats: Stats, gauges: Callable[[], dict[str, float]], info: dict[str, str]) -> None:
        self.stats = stats
        self.gauges = gauges
        self.info = info

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        counters: dict[str, tuple[str, float]] = {
            "quart_sse_requests": ("HTTP requests answered (count)", s.requests_total),
            "quart_sse_requests_failed": (
                "HTTP requests answered with a 4xx or 5xx (count)",
                s.requests_failed,
            ),
            "quart_sse_streams_started": ("generations started (count)", s.streams_started),
            "quart_sse_streams_completed": (
                "generations ended with a complete event (count)",
                s.streams_completed,
            ),
            "quart_sse_streams_failed": ("generations ended with an error event (count)", s.streams_failed),
            "quart_sse_chunks": ("chunk events put into streams (count)", s.chunks_sent),
            "quart_sse_sessions_created": ("sessions created (count)", s.sessions_created),
            "quart_sse_stream_responses": ("SSE responses opened, i.e. readers (count)", s.readers_opened),
            "quart_sse_stream_writes_direct": (
                "SSE body writes straight to the socket (count)",
                s.writes_direct,
            ),
            "quart_sse_stream_writes_asgi": ("SSE body writes through ASGI (count)", s.writes_asgi),
            "quart_sse_stream_stalled_cut": (
                "SSE responses cut after SEND_TIMEOUT seconds without progress (count)",
                s.stalled_cut,
            ),
            "quart_sse_generation_seconds": (
                "time spent generating, summed over ended generations (seconds)",
                s.response_time_total,
            ),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        requests = CounterMetricFamily(
            "quart_sse_http_requests",
            "HTTP requests answered, by route template, method, status and error code "
            '(the code of the JSON error body; "" for a success) (count)',
            labels=("route", "method", "status", "code"),
        )
        for labels, count in list(s.http_requests.items()):
            requests.add_metric(labels, count)
        yield requests
        latency = HistogramMetricFamily(
            "quart_sse_http_request_duration_seconds",
            "time from a request's arrival to the end of its response, by route template and method; "
            "a stream's response lasts as long as the stream (seconds)",
            labels=("route", "method"),
        )
        for route_method, histogram in list(s.http_latency.items()):
            latency.add_metric(route_method, histogram.cumulative(), histogram.sum)
        yield latency
        yield _histogram(
            "quart_sse_time_to_first_chunk_seconds",
            "time from a generation's start to its first chunk event (seconds)",
            s.first_chunk,
        )
        yield _histogram(
            "quart_sse_stream_duration_seconds",
            "time from a generation's start to its final event, complete or error (seconds)",
            s.stream_duration,
        )
        yield GaugeMetricFamily(
            "quart_sse_uptime_seconds", "time since this process started (seconds)", value=s.uptime
        )
        yield GaugeMetricFamily(
            "quart_sse_streams_active", "generations running in this process", value=s.streams_active
        )
        yield GaugeMetricFamily(
            "quart_sse_stream_responses_open", "SSE responses open in this process", value=s.readers_open
        )
        for name, value in self.gauges().items():
            if name in SAME_AS:
                continue
            doc = GAUGE_HELP.get(name, f"{name.replace('_', ' ')} (count)")
            yield GaugeMetricFamily(f"quart_sse_{name}", doc, value=value)
        # Exposed as quart_sse_instance_info (prometheus_client appends _info).
        yield InfoMetricFamily(
            "quart_sse_instance",
            "the instance that answered: its id (label instance) and its store (label store)",
            value=self.info,
        )


def _histogram(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc)
    family.add_metric((), histogram.cumulative(), histogram.sum)
    return family


def prometheus_text(stats: Stats, gauges: Callable[[], dict[str, Any]], info: dict[str, str]) -> bytes:
    """The figures in Prometheus text format (version 0.0.4), with this process's own
    (``process_*``: CPU seconds, memory bytes, open files; ``python_*``: version and
    garbage collections); ``info`` labels ``quart_sse_instance_info``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats, gauges, info))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return generate_latest(registry)

"""The suite's own figures: histograms and counters that merge across Locust workers.

Pure (no Locust): each process records into one :class:`Figures`; a worker sends what it
recorded since its last report (:meth:`Figures.take_report`) and the master merges it
(:meth:`Figures.merge`).  Open streams are a gauge: each worker reports its current count and
the master sums the latest of every worker, sampled once a second into a histogram.
Values are kept to three significant digits, as Locust's own response times are rounded.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

PERCENTILES = (0.50, 0.95, 0.99)


def bucket(value: float) -> float:
    """``value`` to three significant digits (so that histograms stay small)."""
    if value <= 0 or not math.isfinite(value):
        return 0.0
    return float(f"{value:.3g}")


class Histogram:
    """Counts of bucketed values; percentiles, mean, max; mergeable as ``[[value, count], ...]``."""

    def __init__(self) -> None:
        self.counts: Counter[float] = Counter()
        self.total = 0.0

    def add(self, value: float, count: int = 1) -> None:
        self.counts[bucket(value)] += count
        self.total += value * count

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def percentile(self, p: float) -> float:
        """The smallest recorded value with at least ``p`` of the values at or below it."""
        n = self.count
        if n == 0:
            return 0.0
        rank = max(1, math.ceil(p * n))
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= rank:
                return value
        return max(self.counts)

    def mean(self) -> float:
        n = self.count
        return self.total / n if n else 0.0

    def max(self) -> float:
        return max(self.counts) if self.counts else 0.0

    def to_wire(self) -> dict[str, Any]:
        return {"total": self.total, "counts": [[v, c] for v, c in self.counts.items()]}

    def merge_wire(self, wire: dict[str, Any]) -> None:
        self.total += float(wire["total"])
        for value, count in wire["counts"]:
            self.counts[float(value)] += int(count)


@dataclass(frozen=True)
class Spec:
    key: str
    unit: str
    meaning: str


# Distributions, one value per stream (per chunk for the gap), in summary order.
DISTRIBUTIONS = (
    Spec("time_to_first_event", "ms", "request sent → first event (session_info)"),
    Spec("time_to_first_chunk", "ms", "request sent → first chunk event"),
    Spec("inter_chunk_delay", "ms", "gap between consecutive chunk events of one connection"),
    Spec("stream_time", "ms", "first request → final event, resumes included"),
    Spec("chunks_per_stream", "chunks", "chunk events of one answer"),
    Spec("bytes_per_stream", "bytes", "body bytes of one answer, every connection"),
    Spec("resume_time_to_first_event", "ms", "resume request → first replayed event"),
    Spec("heartbeats_per_stream", "pings", "': ping' comments seen on one answer"),
    Spec("open_streams", "streams", "stream responses open at once, sampled every second"),
)
COUNTERS = (
    Spec("streams", "streams", "answers read to their end (or failed)"),
    Spec("chunk_events", "events", "chunk events received, replays included"),
    Spec("heartbeats", "pings", "': ping' comments received"),
    Spec("resumes", "requests", "resume requests with Last-Event-ID"),
    Spec("failed_streams", "streams", "answers with at least one failed check"),
)
RATES = (
    Spec("streams_per_s", "1/s", "answers finished per second of the run"),
    Spec("chunk_events_per_s", "1/s", "chunk events received per second of the run"),
)


class Figures:
    """Every figure of one process, or of the whole run on the master."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hist = {s.key: Histogram() for s in DISTRIBUTIONS}
        self.count: Counter[str] = Counter()
        self.open = 0  # streams open now in this process
        self.worker_open: dict[str, int] = {}  # master: latest open count of each worker
        self.started: float | None = None
        self.stopped: float | None = None

    def add(self, key: str, value: float) -> None:
        self.hist[key].add(value)

    def opened(self) -> None:
        self.open += 1

    def closed(self) -> None:
        self.open -= 1

    def open_now(self) -> int:
        return self.open + sum(self.worker_open.values())

    def sample_open(self) -> None:
        self.hist["open_streams"].add(self.open_now())

    # Distributed runs ------------------------------------------------------------------
    def take_report(self) -> dict[str, Any]:
        """What was recorded since the last report (then forgotten here), and the gauge."""
        report = {
            "hist": {k: h.to_wire() for k, h in self.hist.items() if h.count},
            "count": dict(self.count),
            "open": self.open,
        }
        self.hist = {s.key: Histogram() for s in DISTRIBUTIONS}
        self.count = Counter()
        return report

    def merge(self, client_id: str, report: dict[str, Any]) -> None:
        for key, wire in report["hist"].items():
            self.hist.setdefault(key, Histogram()).merge_wire(wire)
        self.count.update({k: int(v) for k, v in report["count"].items()})
        self.worker_open[client_id] = int(report["open"])

    # Summary ---------------------------------------------------------------------------
    def elapsed(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return max((self.stopped or now) - self.started, 1e-9)

    def rows(self, now: float) -> list[dict[str, Any]]:
        """The summary, one dict per figure (the columns of the ``_sse.csv`` file)."""
        rows: list[dict[str, Any]] = []
        for spec in DISTRIBUTIONS:
            h = self.hist[spec.key]
            row = _row(spec, h.count, "")
            row.update(mean=_num(h.mean()), max=_num(h.max()))
            row.update({_pname(p): _num(h.percentile(p)) for p in PERCENTILES})
            rows.append(row)
        for spec in COUNTERS:
            rows.append(_row(spec, self.count[spec.key], self.count[spec.key]))
        elapsed = self.elapsed(now)
        for spec, counted in zip(RATES, ("streams", "chunk_events"), strict=True):
            rate = self.count[counted] / elapsed if elapsed > 0 else 0.0
            rows.append(_row(spec, self.count[counted], _num(rate)))
        rows.append(_row(Spec("open_streams_now", "streams", "open at the end"), 1, self.open_now()))
        return rows

    def csv_text(self, now: float) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows(now))
        return out.getvalue()

    def table(self, now: float) -> str:
        """The summary as text, printed at the end of a run."""
        head = ("SSE figure", "unit", "count", "value", "p50", "p95", "p99")
        lines = ["{:<28} {:<8} {:>8} {:>10} {:>9} {:>9} {:>9}".format(*head)]
        for row in self.rows(now):
            lines.append(
                f"{row['figure']:<28} {row['unit']:<8} {row['count']:>8} {row['value']!s:>10} "
                f"{row.get('p50', '')!s:>9} {row.get('p95', '')!s:>9} {row.get('p99', '')!s:>9}"
            )
        return "\n".join(lines)


FIELDS = ["figure", "unit", "count", "value", "mean", "p50", "p95", "p99", "max", "meaning"]


def _pname(p: float) -> str:
    return f"p{round(p * 100)}"


def _num(value: float) -> float:
    return round(value, 2)


def _row(spec: Spec, count: int, value: object) -> dict[str, Any]:
    return {"figure": spec.key, "unit": spec.unit, "count": count, "value": value, "meaning": spec.meaning}

"""The suite's stream figures, named as LLM-serving benchmarks name them; mergeable across workers.

Pure (no Locust, no clock): the network layer hands each finished answer to
:meth:`Figures.record` as a :class:`StreamSample`; a worker sends what it recorded since its last
report (:meth:`Figures.take_report`) and the master merges it (:meth:`Figures.merge`).

The definitions follow vLLM's ``benchmark_serving`` / ``vllm bench serve`` and NVIDIA
GenAI-Perf / AIPerf, with one SSE chunk event standing for one output token:

- TTFT: message sent → first ``chunk`` event (ms);
- ITL: the gap between consecutive ``chunk`` events of one connection (ms), every gap counted
  (vLLM's ITL; AIPerf calls it "inter chunk latency");
- TPOT: ``(e2e - TTFT) / (chunks - 1)`` per stream (ms; vLLM's TPOT, GenAI-Perf's per-request
  "inter token latency"), for streams of two chunks or more;
- e2e latency: message sent → final event (``complete`` or ``error``), resumes included (ms);
- output chunks/s per stream: ``1000 / TPOT`` (AIPerf's "output token throughput per user");
- goodput: the share of streams that ended with ``complete``, passed every check, and meet the
  TTFT target and the ITL target, the latter held against the stream's mean gap (its TPOT), as
  vLLM's ``--goodput`` and AIPerf's ``--goodput`` hold it.

What no serving benchmark measures, since their streams cannot resume: time to resume (the cut →
the first event after reconnecting, ms), events replayed per resume (the events that arrived
with that first event: the server's catch-up batch), gaps (chunks never received) and
duplicates (chunks received twice), both of which must be 0.

Percentiles come from HdrHistogram (the ``hdrhistogram`` package): its histograms keep three
significant digits over any range in fixed memory, and merge exactly, which is what a load
test of millions of chunk gaps sent from many workers needs; keeping every value would grow
without bound.  Values are read back at three significant digits (what the histogram holds),
and a percentile is the smallest recorded value with at least that share of values at or
below it (nearest rank, as Locust's own percentiles; numpy-based tools interpolate).
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

PERCENTILES = (50.0, 90.0, 95.0, 99.0)
SIGNIFICANT = 3
HIGHEST = 10**12  # in recorded units: over 11 days in µs; larger values count as this
FIELDS = ["figure", "title", "unit", "count", "value", "mean", "p50", "p90", "p95", "p99", "max", "meaning"]


def significant(value: float, digits: int = SIGNIFICANT) -> float:
    """``value`` rounded to ``digits`` significant digits (0 for 0, NaN or infinity)."""
    if value == 0 or not math.isfinite(value):
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


class Distribution:
    """One figure's values: count, exact mean, and percentiles and max from an HDR histogram.

    ``scale`` is how many recorded units make one unit of the figure (1000 for ms kept in µs);
    negative values count as 0.
    """

    def __init__(self, scale: int = 1000) -> None:
        self.scale = scale
        self.hist = HdrHistogram(1, HIGHEST, SIGNIFICANT)
        self.total = 0.0

    def add(self, value: float) -> None:
        value = max(0.0, value) if math.isfinite(value) else 0.0
        self.hist.record_value(min(HIGHEST, round(value * self.scale)))
        self.total += value

    @property
    def count(self) -> int:
        return int(self.hist.get_total_count())

    def mean(self) -> float:
        return significant(self.total / self.count) if self.count else 0.0

    def percentile(self, p: float) -> float:
        """The ``p`` percentile (0 to 100), three significant digits; 0 with no value."""
        if not self.count:
            return 0.0
        return self._read(self.hist.get_value_at_percentile(p))

    def max(self) -> float:
        return self._read(self.hist.get_max_value()) if self.count else 0.0

    def _read(self, recorded: int) -> float:
        """A recorded value as the middle of its histogram bucket, in the figure's unit."""
        low = self.hist.get_lowest_equivalent_value(recorded)
        high = self.hist.get_highest_equivalent_value(recorded)
        return significant((low + high) / 2 / self.scale)

    def to_wire(self) -> dict[str, Any]:
        """Msgpack-safe: ``{"total": float, "hist": bytes}`` (HdrHistogram's own encoding)."""
        return {"total": self.total, "hist": bytes(self.hist.encode())}

    def merge_wire(self, wire: dict[str, Any]) -> None:
        self.hist.decode_and_add(wire["hist"])
        self.total += float(wire["total"])


@dataclass(frozen=True)
class Spec:
    key: str
    title: str
    unit: str
    meaning: str
    scale: int = 1000


# Distributions, in summary order.
DISTRIBUTIONS = (
    Spec("ttft", "TTFT (time to first token)", "ms", "message sent → first chunk event"),
    Spec("itl", "ITL (inter-token latency)", "ms", "gap between consecutive chunk events of one connection"),
    Spec("tpot", "TPOT (time per output token)", "ms", "(e2e − TTFT) / (chunks − 1), per stream"),
    Spec("e2e_latency", "end-to-end latency", "ms", "message sent → final event, resumes included"),
    Spec(
        "output_chunks_per_s_per_stream",
        "output chunks/s per stream",
        "1/s",
        "1000 / TPOT: one stream's pace after its first chunk",
    ),
    Spec("output_chunks_per_stream", "output chunks per stream", "chunks", "chunk events of one answer", 1),
    Spec("time_to_first_event", "time to first event", "ms", "message sent → first event (session_info)"),
    Spec(
        "time_to_resume",
        "time to resume",
        "ms",
        "connection cut → first event after reconnecting with Last-Event-ID",
    ),
    Spec(
        "events_replayed_per_resume",
        "events replayed per resume",
        "events",
        "events that arrived with a resumed connection's first event (the server's catch-up batch)",
        1,
    ),
    Spec("open_streams", "open streams", "streams", "stream responses open at once, sampled every second", 1),
)
_BY_KEY = {s.key: s for s in DISTRIBUTIONS}


@dataclass(frozen=True)
class Targets:
    """Goodput targets in ms; 0 turns a target off."""

    ttft_ms: float = 2000.0
    itl_ms: float = 100.0

    def describe(self) -> str:
        parts = []
        if self.ttft_ms > 0:
            parts.append(f"TTFT ≤ {self.ttft_ms:g} ms")
        if self.itl_ms > 0:
            parts.append(f"mean ITL ≤ {self.itl_ms:g} ms")
        return " and ".join(parts) or "no target"


@dataclass
class StreamSample:
    """What one answer measured, every connection of it read; times in ms since the message was sent.

    ``ttft_ms`` and ``e2e_ms`` are None when no chunk (or no final event) arrived; ``itls_ms``
    are the gaps between consecutive chunks of each connection; ``resumes`` is one
    ``(time to resume ms or None, events replayed)`` per resumed connection.
    """

    chunks: int
    ttft_ms: float | None
    e2e_ms: float | None
    first_event_ms: float | None = None
    itls_ms: Sequence[float] = ()
    resumes: Sequence[tuple[float | None, int]] = ()
    complete: bool = False
    ok: bool = False
    gaps: int = 0
    duplicates: int = 0
    pings: int = 0
    chunk_events: int = 0
    problems: Sequence[str] = field(default_factory=tuple)

    @property
    def tpot_ms(self) -> float | None:
        """``(e2e - TTFT) / (chunks - 1)``; None below two chunks or without both times."""
        if self.chunks < 2 or self.ttft_ms is None or self.e2e_ms is None:
            return None
        return max(0.0, self.e2e_ms - self.ttft_ms) / (self.chunks - 1)

    def good(self, targets: Targets) -> bool:
        """Whether the stream counts toward goodput: ended right and met both targets.

        A stream of one chunk has no TPOT and meets the ITL target (as vLLM counts it).
        """
        if not (self.ok and self.complete):
            return False
        if targets.ttft_ms > 0 and (self.ttft_ms is None or self.ttft_ms > targets.ttft_ms):
            return False
        tpot = self.tpot_ms
        return not (targets.itl_ms > 0 and tpot is not None and tpot > targets.itl_ms)


class Figures:
    """Every figure of one process, or of the whole run on the master."""

    def __init__(self, targets: Targets | None = None) -> None:
        self.targets = targets or Targets()
        # Locust's resets of statistics (web UI's RESET, --reset-stats), kept across tests:
        # on the master, how many it made; on a worker, the last the master announced.
        self.epoch = 0
        self.awaiting: dict[str, int] = {}  # master: worker → the reset its reports must have seen
        self.unreported: list[str] = []  # master: workers whose last figures never came
        self.reset()

    def reset(self) -> None:
        """A new test: every figure and gauge from nothing."""
        self.unreported = []
        self.dist = _fresh()
        self.count: Counter[str] = Counter()
        self.open = 0  # streams open now in this process
        self.worker_open: dict[str, int] = {}  # master: latest open count of each worker
        self.started: float | None = None
        self.stopped: float | None = None

    def add(self, key: str, value: float) -> None:
        self.dist[key].add(value)

    def record(self, s: StreamSample) -> None:
        """One finished answer."""
        count = self.count
        count["streams"] += 1
        count["failed_streams"] += not s.ok
        count["good_streams"] += s.good(self.targets)
        count["gaps"] += s.gaps
        count["duplicates"] += s.duplicates
        count["heartbeats"] += s.pings
        count["chunk_events"] += s.chunk_events
        count["resumes"] += len(s.resumes)
        self.add("output_chunks_per_stream", s.chunks)
        if s.first_event_ms is not None:
            self.add("time_to_first_event", s.first_event_ms)
        if s.ttft_ms is not None:
            self.add("ttft", s.ttft_ms)
        if s.e2e_ms is not None:
            self.add("e2e_latency", s.e2e_ms)
        for gap in s.itls_ms:
            self.add("itl", gap)
        tpot = s.tpot_ms
        if tpot is not None:
            self.add("tpot", tpot)
            if tpot > 0:
                self.add("output_chunks_per_s_per_stream", 1000.0 / tpot)
        for resume_ms, replayed in s.resumes:
            if resume_ms is not None:
                self.add("time_to_resume", resume_ms)
                self.add("events_replayed_per_resume", replayed)

    def opened(self) -> None:
        self.open += 1

    def closed(self) -> None:
        self.open -= 1

    def open_now(self) -> int:
        return self.open + sum(self.worker_open.values())

    def sample_open(self) -> None:
        self.add("open_streams", self.open_now())

    @property
    def broken(self) -> bool:
        """Whether the run lost or repeated a chunk, or any stream failed a check."""
        return bool(self.count["gaps"] or self.count["duplicates"] or self.count["failed_streams"])

    # Locust's reset of statistics ------------------------------------------------------
    def clear(self, now: float) -> None:
        """Forget every figure so far, as Locust's reset forgets its requests; rates count from ``now``.

        The streams open now stay counted as open (they are), and are recorded when they end.
        """
        self.dist = _fresh()
        self.count = Counter()
        if self.started is not None:
            self.started = now
        if self.stopped is not None:
            self.stopped = now

    def reset_workers(self, workers: Iterable[str], now: float) -> int:
        """Master: :meth:`clear`, and ignore the figures of each of ``workers`` (and of every worker
        that reported) until it reports with the reset seen (:meth:`reset_by_master`).

        Returns the reset's number, to send to the workers.
        """
        self.clear(now)
        self.epoch += 1
        for worker in {*workers, *self.worker_open}:
            self.awaiting[worker] = self.epoch
        return self.epoch

    def reset_by_master(self, epoch: int) -> None:
        """Worker: forget what is not reported yet; the next reports carry ``epoch``."""
        self.dist = _fresh()
        self.count = Counter()
        self.epoch = max(self.epoch, epoch)

    # Distributed runs ------------------------------------------------------------------
    def take_report(self) -> dict[str, Any]:
        """What was recorded since the last report (then forgotten here), the gauge, the last reset seen."""
        report = {
            "dist": {k: d.to_wire() for k, d in self.dist.items() if d.count},
            "count": dict(self.count),
            "open": self.open,
            "reset": self.epoch,
        }
        self.dist = _fresh()
        self.count = Counter()
        return report

    def merge(self, client_id: str, report: dict[str, Any]) -> bool:
        """Add a worker's report; False when it was dropped, being from before a reset it had not seen.

        The worker's open streams are taken either way (they are open now).
        """
        self.worker_open[client_id] = int(report["open"])
        if int(report.get("reset", 0)) < self.awaiting.get(client_id, 0):
            return False
        for key, wire in report["dist"].items():
            if key in self.dist:
                self.dist[key].merge_wire(wire)
        self.count.update({k: int(v) for k, v in report["count"].items()})
        return True

    # Summary ---------------------------------------------------------------------------
    def elapsed(self, now: float) -> float:
        """Seconds from the start of the test to its stop (or ``now``)."""
        if self.started is None:
            return 0.0
        return max((self.stopped or now) - self.started, 1e-9)

    def rows(self, now: float) -> list[dict[str, Any]]:
        """The summary, one dict per figure (the columns :data:`FIELDS` of ``_streams.csv``)."""
        rows: list[dict[str, Any]] = []
        for spec in DISTRIBUTIONS:
            d = self.dist[spec.key]
            row = _row(spec.key, spec.title, spec.unit, d.count, "", spec.meaning)
            row.update(mean=d.mean(), max=d.max())
            row.update({f"p{p:g}": d.percentile(p) for p in PERCENTILES})
            rows.append(row)
        c = self.count
        streams, elapsed = c["streams"], self.elapsed(now)

        def rate(n: int) -> float:
            return significant(n / elapsed) if elapsed > 0 else 0.0

        share = significant(100.0 * c["good_streams"] / streams) if streams else 0.0
        targets = self.targets.describe()
        good, failed, dups = c["good_streams"], c["failed_streams"], c["duplicates"]
        totals = (
            ("streams", "streams", "streams", streams, streams, "answers read to their end (or failed)"),
            ("failed_streams", "failed streams", "streams", streams, failed, "with a failed check"),
            ("goodput", "goodput", "%", streams, share, f"streams ended right with {targets}"),
            ("goodput_per_s", "goodput rate", "1/s", good, rate(good), f"streams/s meeting {targets}"),
            ("streams_per_s", "streams/s", "1/s", streams, rate(streams), "answers finished per second"),
            ("output_chunks_per_s", "output chunks/s", "1/s", c["chunk_events"], rate(c["chunk_events"]),
             "chunk events received per second, every stream"),
            ("resumes", "resumes", "requests", c["resumes"], c["resumes"], "resume requests (Last-Event-ID)"),
            ("gaps", "gaps", "chunks", streams, c["gaps"], "chunks never received (must be 0)"),
            ("duplicates", "duplicates", "chunks", streams, dups, "chunks received twice (must be 0)"),
            ("heartbeats", "heartbeats", "pings", streams, c["heartbeats"], "': ping' comments received"),
            ("open_streams_now", "open streams now", "streams", 1, self.open_now(), "open at the summary"),
        )  # fmt: skip
        rows += [_row(*t) for t in totals]
        return rows

    def csv_text(self, now: float) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows(now))
        return out.getvalue()

    def table(self, now: float) -> str:
        """The summary as a text table (printed at the end of a run)."""
        rows = self.rows(now)
        c = self.count
        lines = [
            f"Stream figures (SSE): {c['streams']} streams, {c['failed_streams']} failed, "
            f"{c['chunk_events']} chunk events, {c['resumes']} resumes; "
            f"goodput target {self.targets.describe()}",
            "",
        ]
        if self.unreported:
            lines[1:1] = [
                f"NOT COUNTED: the last figures of {len(self.unreported)} worker(s) never reached the "
                f"master ({', '.join(self.unreported)}): their streams of the run's last seconds are missing"
            ]
        head = ("figure", "unit", "count", "mean", "p50", "p90", "p95", "p99", "max")
        fmt = "{:<32} {:<8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}"
        lines.append(fmt.format(*head))
        lines.append("-" * 110)
        for row in rows[: len(DISTRIBUTIONS)]:
            lines.append(fmt.format(*(_text(row[k]) for k in ("title", "unit", *head[2:]))))
        lines.append("-" * 110)
        for row in rows[len(DISTRIBUTIONS) :]:
            lines.append(f"{row['title']:<32} {row['unit']:<8} {_text(row['value']):>8}   {row['meaning']}")
        return "\n".join(lines)


def _fresh() -> dict[str, Distribution]:
    return {s.key: Distribution(s.scale) for s in DISTRIBUTIONS}


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _row(key: str, title: str, unit: str, count: int, value: object, meaning: str) -> dict[str, Any]:
    return {"figure": key, "title": title, "unit": unit, "count": count, "value": value, "meaning": meaning}


def spec(key: str) -> Spec:
    """The :class:`Spec` of a distribution; ``KeyError`` for an unknown key."""
    return _BY_KEY[key]

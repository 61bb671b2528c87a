"""The load tests' stream figures (``loadtest/figures.py``): known inputs give known figures.

Percentiles, TPOT, per-stream pace, goodput, resumes, merging across workers (through
msgpack, as Locust sends reports), and the summary's CSV and table.
"""

from __future__ import annotations

import csv
import io

import msgpack  # type: ignore[import-untyped]

from loadtest.figures import (
    DISTRIBUTIONS,
    FIELDS,
    Distribution,
    Figures,
    StreamSample,
    Targets,
    significant,
)

TOTALS = {
    "streams",
    "failed_streams",
    "goodput",
    "goodput_per_s",
    "streams_per_s",
    "output_chunks_per_s",
    "resumes",
    "gaps",
    "duplicates",
    "heartbeats",
    "open_streams_now",
}


def sample(ttft: float = 100.0, e2e: float = 1000.0, chunks: int = 10, **kw: object) -> StreamSample:
    """A stream that ended with ``complete`` and passed every check, unless ``kw`` says otherwise."""
    base: dict[str, object] = {"complete": True, "ok": True, "chunk_events": chunks}
    return StreamSample(chunks=chunks, ttft_ms=ttft, e2e_ms=e2e, **{**base, **kw})  # type: ignore[arg-type]


def test_values_keep_three_significant_digits():
    assert significant(1234.5) == 1230
    assert significant(2.3456) == 2.35
    assert significant(0.0) == 0.0
    assert significant(float("nan")) == 0.0


def test_percentiles_of_one_to_a_hundred_ms():
    d = Distribution()
    for v in range(1, 101):
        d.add(v)
    assert d.count == 100
    assert [d.percentile(p) for p in (50, 90, 95, 99)] == [50, 90, 95, 99]
    assert d.mean() == 50.5 and d.max() == 100
    empty = Distribution()
    assert (empty.percentile(50), empty.mean(), empty.max()) == (0.0, 0.0, 0.0)


def test_percentiles_hold_three_digits_over_a_wide_range():
    d = Distribution()
    for v in (0.25, 3.5, 47.0, 612.0, 8150.0, 93400.0):
        d.add(v)
    # nearest rank: the p50 of six values is the third, the p99 the sixth
    assert d.percentile(50) == 47.0 and d.percentile(99) == 93400.0
    assert d.percentile(1) == 0.25
    d.add(-5)  # a negative time (clock trouble) counts as 0
    assert d.percentile(1) == 0.0


def test_tpot_is_the_time_after_the_first_chunk_over_the_chunks_after_it():
    assert sample(ttft=100, e2e=1000, chunks=10).tpot_ms == 100.0
    assert sample(ttft=100, e2e=100, chunks=1).tpot_ms is None
    assert sample(chunks=5, e2e=None).tpot_ms is None  # type: ignore[arg-type]


def test_every_figure_of_a_stream_is_recorded():
    f = Figures()
    f.record(
        sample(
            ttft=100,
            e2e=1000,
            chunks=10,
            first_event_ms=5,
            itls_ms=[50.0, 150.0, 100.0],
            resumes=[(40.0, 3), (None, 0)],
            pings=2,
        )
    )
    d = f.dist
    assert d["ttft"].percentile(50) == 100 and d["e2e_latency"].percentile(50) == 1000
    assert d["tpot"].percentile(50) == 100 and d["output_chunks_per_s_per_stream"].percentile(50) == 10
    assert d["itl"].count == 3 and d["itl"].percentile(50) == 100 and d["itl"].max() == 150
    assert d["output_chunks_per_stream"].percentile(50) == 10
    assert d["time_to_first_event"].percentile(50) == 5
    # Two resume requests; the second got no event (a 204), so it has no time to resume.
    assert f.count["resumes"] == 2 and d["time_to_resume"].count == 1
    assert d["time_to_resume"].percentile(50) == 40 and d["events_replayed_per_resume"].percentile(50) == 3
    assert f.count["heartbeats"] == 2 and f.count["chunk_events"] == 10


def test_goodput_is_the_share_of_right_streams_within_both_targets():
    targets = Targets(ttft_ms=200, itl_ms=50)
    f = Figures(targets)
    f.started, f.stopped = 0.0, 10.0
    f.record(sample(ttft=150, e2e=150 + 9 * 40, chunks=10))  # good: TPOT 40
    f.record(sample(ttft=250, e2e=250 + 9 * 40, chunks=10))  # TTFT over
    f.record(sample(ttft=150, e2e=150 + 9 * 60, chunks=10))  # TPOT over
    f.record(sample(ttft=150, e2e=150, chunks=1))  # one chunk: no TPOT, meets the ITL target
    f.record(sample(ttft=150, e2e=300, chunks=4, ok=False))  # failed a check
    f.record(sample(ttft=150, e2e=300, chunks=4, complete=False))  # ended with an error event
    rows = {r["figure"]: r for r in f.rows(now=10.0)}
    assert rows["goodput"]["value"] == significant(100 * 2 / 6)
    assert rows["goodput_per_s"]["value"] == 0.2
    assert rows["failed_streams"]["value"] == 1
    assert "TTFT ≤ 200 ms" in rows["goodput"]["meaning"] and "ITL ≤ 50 ms" in rows["goodput"]["meaning"]
    # A target of 0 is no target.
    assert sample(ttft=10_000, e2e=20_000, chunks=3).good(Targets(0, 0))
    assert Targets(0, 0).describe() == "no target"


def test_gaps_duplicates_and_failures_break_the_run():
    f = Figures()
    f.record(sample())
    assert not f.broken
    for kw in ({"gaps": 1}, {"duplicates": 2}, {"ok": False}):
        g = Figures()
        g.record(sample(**kw))
        assert g.broken, kw
    g = Figures()
    g.record(sample(gaps=2, duplicates=1, ok=False))
    rows = {r["figure"]: r for r in g.rows(now=0.0)}
    assert (rows["gaps"]["value"], rows["duplicates"]["value"]) == (2, 1)


def test_worker_reports_merge_into_the_masters_figures():
    workers = [Figures(), Figures()]
    for i, w in enumerate(workers):
        for v in range(1, 51):
            w.record(sample(ttft=v + 50 * i, e2e=v + 50 * i + 10, chunks=2))
        w.opened()
    workers[1].opened()

    master = Figures()
    master.started = 0.0
    for i, w in enumerate(workers):
        # Locust sends reports with msgpack: the report must survive it.
        report = msgpack.unpackb(msgpack.packb(w.take_report()), strict_map_key=False)
        master.merge(f"worker-{i}", report)
    ttft = master.dist["ttft"]
    assert ttft.count == 100 and ttft.percentile(50) == 50 and ttft.percentile(99) == 99
    assert ttft.mean() == 50.5
    assert master.count["streams"] == 100 and master.count["good_streams"] == 100
    # Open streams are a gauge: the latest count of each worker, summed.
    assert master.open_now() == 3
    master.merge("worker-1", {"dist": {}, "count": {}, "open": 0})
    assert master.open_now() == 1
    # A report hands over what was recorded since the last one, then forgets it.
    again = workers[0].take_report()
    assert again["dist"] == {} and again["count"] == {} and again["open"] == 1


def test_the_summary_has_every_figure_in_csv_and_table():
    f = Figures()
    f.started, f.stopped = 100.0, 110.0
    for _ in range(20):
        f.record(sample(chunks=20))
    f.sample_open()
    rows = {row["figure"]: row for row in f.rows(now=200.0)}
    assert set(rows) == {s.key for s in DISTRIBUTIONS} | TOTALS
    assert rows["streams_per_s"]["value"] == 2.0
    assert rows["output_chunks_per_s"]["value"] == 40.0
    assert rows["e2e_latency"]["p99"] == 1000.0 and rows["e2e_latency"]["p90"] == 1000.0

    parsed = list(csv.DictReader(io.StringIO(f.csv_text(now=200.0))))
    assert list(parsed[0]) == FIELDS
    assert {row["figure"] for row in parsed} == set(rows)
    table = f.table(now=200.0)
    for text in ("TTFT (time to first token)", "ITL (inter-token latency)", "TPOT", "p90", "goodput", "gaps"):
        assert text in table, text


def test_reset_starts_a_new_test():
    f = Figures()
    f.record(sample())
    f.worker_open["w"] = 3
    f.reset()
    assert f.dist["ttft"].count == 0 and f.count["streams"] == 0 and f.open_now() == 0


def test_values_out_of_range_are_counted_not_lost():
    d = Distribution()
    d.add(1e20)  # past the histogram's top: counted at the top (10**12 µs)
    d.add(float("inf"))  # not a time: counted as 0
    assert d.count == 2 and d.max() == 1e9 and d.percentile(1) == 0.0


def wire(report: dict[str, object]) -> dict[str, object]:
    """A report as the master receives it: through msgpack, as Locust sends it."""
    out: dict[str, object] = msgpack.unpackb(msgpack.packb(report), strict_map_key=False)
    return out


def test_locusts_reset_forgets_the_figures_but_not_the_open_streams():
    f = Figures()
    f.started = 100.0
    f.record(sample(resumes=[(50.0, 2)]))
    f.opened()
    f.clear(now=160.0)

    rows = {r["figure"]: r for r in f.rows(now=170.0)}
    assert rows["streams"]["value"] == 0 and rows["resumes"]["value"] == 0
    assert rows["ttft"]["count"] == 0 and rows["time_to_resume"]["count"] == 0
    assert rows["open_streams_now"]["value"] == 1  # still open: it is recorded when it ends
    assert f.elapsed(now=170.0) == 10.0  # rates count from the reset
    f.closed()
    f.record(sample())
    assert f.count["streams"] == 1


def test_a_reset_drops_what_workers_counted_before_hearing_of_it():
    master, seen, late = Figures(), Figures(), Figures()
    seen.record(sample())
    late.record(sample())
    master.merge("seen", wire(seen.take_report()))  # reported before the reset: cleared with it
    seen.record(sample(ttft=900.0))  # not reported when the reset comes
    late.opened()

    epoch = master.reset_workers(["seen", "late"], now=0.0)
    assert master.count["streams"] == 0
    # "late" reports what it counted before it heard of the reset: dropped, but its gauge counts.
    assert master.merge("late", wire(late.take_report())) is False
    assert master.count["streams"] == 0 and master.open_now() == 1
    # "seen" hears of it first: what it had not reported is forgotten there.
    seen.reset_by_master(epoch)
    seen.record(sample(ttft=200.0))
    assert master.merge("seen", wire(seen.take_report())) is True
    late.reset_by_master(epoch)
    assert master.merge("late", wire(late.take_report())) is True
    # A worker that joined after the reset never heard of it, and is counted.
    newcomer = Figures()
    newcomer.record(sample(ttft=300.0))
    assert master.merge("newcomer", wire(newcomer.take_report())) is True
    assert master.count["streams"] == 2
    assert master.dist["ttft"].max() == 300.0 and master.dist["ttft"].percentile(50) == 200.0


def test_a_new_test_keeps_the_reset_count_but_a_worker_that_never_reported_is_named():
    master = Figures()
    master.reset_workers(["w1"], now=0.0)
    master.unreported = ["w2"]
    assert "NOT COUNTED: the last figures of 1 worker(s) never reached the master (w2)" in master.table(1.0)
    master.reset()
    assert master.epoch == 1 and master.awaiting == {"w1": 1}
    assert "NOT COUNTED" not in master.table(1.0)

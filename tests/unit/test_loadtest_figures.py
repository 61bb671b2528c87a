"""The load tests' own figures (``loadtest/figures.py``): percentiles, merging across workers, CSV."""

from __future__ import annotations

import csv
import io

import msgpack  # type: ignore[import-untyped]
import pytest

from loadtest.figures import COUNTERS, DISTRIBUTIONS, RATES, Figures, Histogram, bucket


def test_values_keep_three_significant_digits():
    assert bucket(1234.5) == 1230
    assert bucket(2.3456) == 2.35
    assert bucket(0.0) == 0.0
    assert bucket(-1) == 0.0


def test_percentiles_of_a_histogram():
    h = Histogram()
    for v in range(1, 101):
        h.add(v)
    assert h.count == 100
    assert (h.percentile(0.5), h.percentile(0.95), h.percentile(0.99)) == (50, 95, 99)
    assert h.mean() == pytest.approx(50.5)
    assert h.max() == 100
    assert Histogram().percentile(0.5) == 0.0


def test_worker_reports_merge_into_the_masters_figures():
    workers = [Figures(), Figures()]
    for i, w in enumerate(workers):
        for v in range(1, 51):
            w.add("time_to_first_chunk", v + 50 * i)
        w.count["streams"] += 50
        w.opened()
    workers[1].opened()

    master = Figures()
    master.started = 0.0
    for i, w in enumerate(workers):
        # Locust sends reports with msgpack: the report must survive it.
        report = msgpack.unpackb(msgpack.packb(w.take_report()), strict_map_key=False)
        master.merge(f"worker-{i}", report)
    h = master.hist["time_to_first_chunk"]
    assert h.count == 100 and h.percentile(0.5) == 50 and h.percentile(0.99) == 99
    assert master.count["streams"] == 100
    # Open streams are a gauge: the latest count of each worker, summed.
    assert master.open_now() == 3
    master.merge("worker-1", {"hist": {}, "count": {}, "open": 0})
    assert master.open_now() == 1
    # A report hands over what was recorded since the last one, then forgets it.
    assert workers[0].take_report()["hist"] == {} and workers[0].take_report()["open"] == 1


def test_the_summary_has_every_figure_and_rates_over_the_run():
    f = Figures()
    f.started, f.stopped = 100.0, 110.0
    f.count["streams"] = 20
    f.count["chunk_events"] = 400
    f.add("stream_time", 80)
    f.sample_open()
    rows = {row["figure"]: row for row in f.rows(now=200.0)}
    expected = {s.key for s in (*DISTRIBUTIONS, *COUNTERS, *RATES)} | {"open_streams_now"}
    assert set(rows) == expected
    assert rows["streams_per_s"]["value"] == 2.0
    assert rows["chunk_events_per_s"]["value"] == 40.0
    assert rows["stream_time"]["p99"] == 80.0

    parsed = list(csv.DictReader(io.StringIO(f.csv_text(now=200.0))))
    assert {row["figure"] for row in parsed} == expected
    assert {"p50", "p95", "p99", "count", "value", "unit"} <= set(parsed[0])
    table = f.table(now=200.0)
    assert "streams_per_s" in table and "p99" in table


def test_reset_starts_a_new_test():
    f = Figures()
    f.add("stream_time", 1)
    f.count["streams"] = 1
    f.worker_open["w"] = 3
    f.reset()
    assert f.hist["stream_time"].count == 0 and f.count["streams"] == 0 and f.open_now() == 0

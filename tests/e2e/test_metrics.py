"""/metrics after real requests on a real server, read with prometheus_client's own parser.

docs/API.md, System: histograms of time to first chunk, stream duration and request
latency; requests counted by route template, method, status and error code; the
process's own figures; a HELP text on every metric; label values that stay bounded.
"""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.sse_client import chat_stream, get_json

STREAMS = 3
CHUNKS = 4


async def scrape(http, url):
    """Every family of /metrics by name (counters under their name without ``_total``)."""
    async with http.get(f"{url}/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Metric, suffix: str) -> list[Sample]:
    return [s for s in family.samples if s.name == family.name + suffix]


def requests_counted(families: dict[str, Metric]) -> dict[tuple[str, str, str, str], float]:
    return {
        (s.labels["route"], s.labels["method"], s.labels["status"], s.labels["code"]): s.value
        for s in samples(families["quart_sse_http_requests"], "_total")
    }


def histogram_count(family: Metric, **labels: str) -> float:
    (count,) = [s.value for s in samples(family, "_count") if s.labels == labels]
    return count


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> int:
    async with http.request(method, url, **kwargs) as r:
        await r.read()
        return int(r.status)


async def test_metrics_count_streams_first_chunks_and_requests_by_route(start_server, http):
    server = start_server(SIM_RESPONSE_CHUNKS=str(CHUNKS))
    streams = [await chat_stream(http, server.url, f"question {n}") for n in range(STREAMS)]
    assert all(s.last["type"] == "complete" for s in streams)
    session_id = streams[0].session_id
    await get_json(http, f"{server.url}/sessions/{session_id}")
    assert await status_of(http, "GET", f"{server.url}/no/such/page") == 404
    assert await status_of(http, "POST", f"{server.url}/chat", data=b"not json") == 400
    assert await status_of(http, "GET", f"{server.url}/streams/{'0' * 32}/events") == 404

    families = await scrape(http, server.url)

    ttft = families["quart_sse_time_to_first_chunk_seconds"]
    assert ttft.type == "histogram" and histogram_count(ttft) == STREAMS
    (ttft_sum,) = samples(ttft, "_sum")
    assert ttft_sum.value > 0
    duration = families["quart_sse_stream_duration_seconds"]
    assert duration.type == "histogram" and histogram_count(duration) == STREAMS
    (infinite,) = [s for s in samples(duration, "_bucket") if s.labels["le"] == "+Inf"]
    assert infinite.value == STREAMS

    latency = families["quart_sse_http_request_duration_seconds"]
    assert histogram_count(latency, route="/chat/stream", method="POST") == STREAMS
    assert histogram_count(latency, route="/sessions/{session_id}", method="GET") == 1
    assert histogram_count(latency, route="unmatched", method="GET") == 1

    counted = requests_counted(families)
    assert counted[("/chat/stream", "POST", "200", "")] == STREAMS
    assert counted[("/sessions/{session_id}", "GET", "200", "")] == 1
    assert counted[("unmatched", "GET", "404", "not_found")] == 1
    assert counted[("/chat", "POST", "400", "invalid_json")] == 1
    assert counted[("/streams/{stream_id}/events", "GET", "404", "stream_not_found")] == 1
    for family in families.values():
        for sample in family.samples:
            assert session_id not in sample.labels.values(), sample  # no raw ids in labels

    # The figures that were there before keep their names.
    assert families["quart_sse_streams_completed"].samples[0].value == STREAMS
    assert families["quart_sse_chunks"].samples[0].value == STREAMS * CHUNKS
    assert families["quart_sse_streams_active"].samples[0].value == 0
    # The process's own figures (prometheus_client's default collectors).
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert name in families, name
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert "python_gc_collections" in families
    for family in families.values():
        assert family.documentation.strip(), f"{family.name} has no HELP"
        assert family.name.startswith(("quart_sse_", "process_", "python_")), family.name


async def test_request_labels_stay_bounded_whatever_the_paths(start_server, http):
    server = start_server()
    for _ in range(20):
        stream_id = secrets.token_hex(16)
        assert await status_of(http, "GET", f"{server.url}/streams/{stream_id}/events") == 404
        assert await status_of(http, "GET", f"{server.url}/{secrets.token_hex(8)}") == 404
        assert await status_of(http, "POST", f"{server.url}/streams/{stream_id}/cancel") == 404
        assert await status_of(http, "BREW", f"{server.url}/health") == 405

    counted = requests_counted(await scrape(http, server.url))
    assert counted == {
        ("/streams/{stream_id}/events", "GET", "404", "stream_not_found"): 20,
        ("unmatched", "GET", "404", "not_found"): 20,
        ("/streams/{stream_id}/cancel", "POST", "404", "stream_not_found"): 20,
        ("/health", "other", "405", "method_not_allowed"): 20,
    }


async def test_a_refusal_before_routing_is_counted_under_its_route(start_server, http):
    server = start_server(API_KEYS="k-metrics")
    assert await status_of(http, "GET", f"{server.url}/sessions/{'1' * 32}") == 401
    assert await status_of(http, "POST", f"{server.url}/chat/stream", json={"message": "hi"}) == 401
    async with http.get(f"{server.url}/metrics", headers={"Authorization": "Bearer k-metrics"}) as r:
        text = await r.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    counted = requests_counted(families)
    assert counted[("/sessions/{session_id}", "GET", "401", "unauthorized")] == 1
    assert counted[("/chat/stream", "POST", "401", "unauthorized")] == 1

"""/, /health, /stats, /metrics, /docs and /openapi.json."""

from __future__ import annotations

import re

import pytest
from yarl import URL

from tests.support.sse_client import chat_stream


async def test_index_names_the_server_and_lists_the_endpoints(server, http):
    async with http.get(f"{server.url}/") as r:
        body = await r.json()
    assert body["name"] == "quart-sse" and body["model"] == "simulated" and body["version"]
    for endpoint in (
        "POST /chat/stream",
        "POST /chat",
        "GET /streams/<stream_id>/events",
        "POST /streams/<stream_id>/cancel",
        "GET /sessions/<session_id>/events",
        "POST /sessions/<session_id>/regenerate",
        "POST /sessions/new",
        "GET /sessions",
        "GET /health",
        "GET /stats",
        "GET /metrics",
        "GET /docs",
        "GET /demo",
    ):
        assert endpoint in body["endpoints"]


async def test_health_says_the_offline_model_is_in_use(server, http):
    async with http.get(f"{server.url}/health") as r:
        body = await r.json()
    assert {"status", "active_streams", "active_sessions", "uptime_s", "model", "store"} <= set(body)
    assert body["status"] == "ok" and body["store"] == "memory"
    assert body["model"] == "simulated" and body["offline_model"] is True


async def test_stats_and_metrics_count_streams_and_chunks(start_server, http):
    server = start_server(SIM_RESPONSE_CHUNKS="7")
    await chat_stream(http, server.url, "one")
    await chat_stream(http, server.url, "two")
    async with http.get(f"{server.url}/stats") as r:
        stats = await r.json()
    assert stats["streams_started"] == 2 and stats["streams_completed"] == 2
    assert stats["streams_failed"] == 0 and stats["active_streams"] == 0
    assert stats["chunks_sent"] == 14
    assert stats["sessions_created"] == 2 and stats["active_sessions"] == 2
    assert stats["total_requests"] >= 2 and stats["failed_requests"] == 0
    assert stats["average_response_time_s"] > 0
    assert stats["model"] == "simulated" and stats["store"] == "memory"
    async with http.get(f"{server.url}/metrics") as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    assert "quart_sse_streams_completed_total 2.0" in text
    assert "quart_sse_chunks_total 14.0" in text
    assert "quart_sse_streams_active 0.0" in text


async def test_docs_are_served_without_a_cdn(server, http):
    """The page's files come from the server (Swagger UI 5, which reads OpenAPI 3.1); that the
    page shows the API is tests/e2e/test_docs.py's part, in a browser."""
    async with http.get(f"{server.url}/docs") as r:
        html = await r.text()
    assert "/docs/assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert "http://" not in html and "https://" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        async with http.get(f"{server.url}/docs/assets/{asset}") as r:
            assert r.status == 200 and len(await r.read()) > 10_000
    async with http.get(f"{server.url}/docs/assets/VERSION") as r:
        assert (await r.text()).startswith("v5.")  # the version of Swagger UI
    for missing in ("/docs/assets/nothing.js", "/docs/assets/%2e%2e/__init__.py"):
        async with http.get(URL(f"{server.url}{missing}", encoded=True)) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"


async def test_openapi_describes_the_api_and_its_event_streams(server, http):
    async with http.get(f"{server.url}/openapi.json") as r:
        spec = await r.json()
    paths = spec["paths"]
    for path in (
        "/chat/stream",
        "/chat",
        "/streams/{stream_id}/events",
        "/streams/{stream_id}/cancel",
        "/sessions",
        "/sessions/new",
        "/sessions/{session_id}",
        "/sessions/{session_id}/clear",
        "/sessions/{session_id}/events",
        "/sessions/{session_id}/regenerate",
        "/health",
        "/stats",
    ):
        assert path in paths, path
    assert "requestBody" in paths["/chat/stream"]["post"]
    for path, method in (("/chat/stream", "post"), ("/streams/{stream_id}/events", "get")):
        content = paths[path][method]["responses"]["200"]["content"]
        event = content["text/event-stream"]["schema"]  # one event: id, event, data (JSON text)
        assert event["required"] == ["id", "event", "data"]
        data = event["properties"]["data"]
        assert data["contentMediaType"] == "application/json"
        refs = [s["$ref"].rsplit("/", 1)[1] for s in data["contentSchema"]["oneOf"]]
        assert refs == ["SessionInfoEvent", "StatusEvent", "ChunkEvent", "CompleteEvent", "ErrorEvent"]
    for name in refs:
        assert name in spec["components"]["schemas"]
        event_type = spec["components"]["schemas"][name]["properties"]["type"]["const"]
        assert data["contentSchema"]["discriminator"]["mapping"][event_type].endswith(f"/{name}")
    assert "202" in paths["/chat"]["post"]["responses"]
    read = paths["/streams/{stream_id}/events"]["get"]
    params = {(p["in"], p["name"]) for p in read["parameters"]}
    assert {("header", "Last-Event-ID"), ("query", "last_event_id"), ("query", "access_token")} <= params
    assert "204" in read["responses"] and "content" not in read["responses"]["204"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_openapi_describes_if_busy_regenerate_and_the_session_stream(server, http):
    async with http.get(f"{server.url}/openapi.json") as r:
        spec = await r.json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    if_busy = schemas["ChatRequest"]["properties"]["if_busy"]
    assert if_busy["anyOf"][0]["enum"] == ["reject", "enqueue", "interrupt"]
    assert "if_busy" not in schemas["ChatRequest"]["required"]
    assert schemas["ChatAccepted"]["properties"]["queued"]["type"] == "boolean"
    assert {"queued", "waited"} <= set(schemas["StatusEvent"]["properties"])

    follow = paths["/sessions/{session_id}/events"]["get"]
    event = follow["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert event["required"] == ["event", "data"]  # a reset has no id
    refs = [s["$ref"].rsplit("/", 1)[1] for s in event["properties"]["data"]["contentSchema"]["oneOf"]]
    assert refs == [
        "UserMessageEvent",
        "SessionInfoEvent",
        "StatusEvent",
        "ChunkEvent",
        "CompleteEvent",
        "ErrorEvent",
        "ResetEvent",
    ]
    assert schemas["UserMessageEvent"]["properties"]["type"]["const"] == "user_message"
    assert schemas["ResetEvent"]["properties"]["type"]["const"] == "reset"
    params = {(p["in"], p["name"]) for p in follow["parameters"]}
    assert params == {
        ("path", "session_id"),
        ("header", "Last-Event-ID"),
        ("query", "last_event_id"),
        ("query", "access_token"),
    }
    assert {"400", "404", "429"} <= set(follow["responses"])
    assert "`session_not_found`" in follow["responses"]["404"]["description"]

    regenerate = paths["/sessions/{session_id}/regenerate"]["post"]
    assert "requestBody" not in regenerate  # the body is ignored
    assert {(p["in"], p["name"]) for p in regenerate["parameters"]} == {
        ("path", "session_id"),
        ("query", "stream"),
    }
    answers = regenerate["responses"]
    assert answers["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatAccepted")
    assert "text/event-stream" in answers["200"]["content"]
    assert "`nothing_to_regenerate`" in answers["400"]["description"]
    assert "`generation_running`" in answers["409"]["description"]
    assert {"404", "429", "503"} <= set(answers)

    cancelled = paths["/streams/{stream_id}/cancel"]["post"]["responses"]["200"]
    assert "status" in cancelled["content"]["application/json"]["schema"]["required"]
    detail = paths["/sessions/{session_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert "queued" in detail["schema"]["properties"]


async def test_chunk_lines_only_at_debug_level(start_server, http):
    quiet = start_server(LOG_LEVEL="info", SIM_RESPONSE_CHUNKS="5")
    loud = start_server(LOG_LEVEL="debug", SIM_RESPONSE_CHUNKS="5")
    for server in (quiet, loud):
        stream = await chat_stream(http, server.url, "log me")
        assert stream.last["type"] == "complete"
    assert "chunk #" not in quiet.output()
    assert "SSE STREAM STARTED" in quiet.output() and "SSE STREAM COMPLETED" in quiet.output()
    assert [f"chunk #{n}:" in loud.output() for n in range(1, 6)] == [True] * 5


async def test_docs_links_its_icon_and_favicon_ico_is_served(start_server, http):
    """Every visit to /docs used to ask for /favicon.ico: a 404 (a 401 with API_KEYS), an
    access line and an ``unmatched`` request.  The page links Swagger UI's icon under the
    public /docs/assets, and /favicon.ico is that icon."""
    server = start_server(API_KEYS="k-icon")
    async with http.get(f"{server.url}/docs") as r:
        html = await r.text()
    link = re.search(r'<link rel="icon"[^>]*href="([^"]+)"', html)
    assert link is not None, html
    async with http.get(server.url + link.group(1)) as r:  # no key: public, as the page is
        assert r.status == 200 and r.headers["Content-Type"] == "image/png"
        assert (await r.read()).startswith(b"\x89PNG")
    async with http.get(f"{server.url}/favicon.ico") as r:  # public: a browser sends no key for it
        assert r.status == 200 and r.headers["Content-Type"] == "image/png"
    async with http.get(f"{server.url}/metrics", headers={"Authorization": "Bearer k-icon"}) as r:
        text = await r.text()
    assert 'route="unmatched"' not in text


@pytest.mark.parametrize("page", ["/docs", "/demo"])
async def test_a_trailing_slash_is_redirected_to_the_page(server, http, page):
    async with http.get(f"{server.url}{page}/", allow_redirects=False) as r:
        assert r.status == 308 and r.headers["Location"] == page
    async with http.get(f"{server.url}{page}/") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")


async def test_metrics_export_each_figure_once_with_a_help_text_of_its_own(server, http):
    async with http.get(f"{server.url}/metrics") as r:
        text = await r.text()
    helps = re.findall(r"^# HELP (\S+) (.*)$", text, flags=re.MULTILINE)
    by_text: dict[str, list[str]] = {}
    for name, doc in helps:
        by_text.setdefault(doc, []).append(name)
    assert {doc: names for doc, names in by_text.items() if len(names) > 1} == {}
    names = {name for name, _ in helps}
    assert {"quart_sse_streams_active", "quart_sse_stream_responses_open"} <= names
    assert not {"quart_sse_readers", "quart_sse_generations"} & names  # the same figures, removed


async def test_openapi_describes_the_durable_streams(server, http):
    """/v1/stream/{path} with its five methods and their refusals; durable_url where a chat
    answer says where to read it."""
    async with http.get(f"{server.url}/openapi.json") as r:
        spec = await r.json()
    durable = spec["paths"]["/v1/stream/{path}"]
    assert set(durable) == {"put", "post", "get", "head", "delete"}
    assert all(op["tags"] == ["durable"] for op in durable.values())
    for method, status, code in (
        ("put", "409", "stream_exists"),
        ("put", "413", "stream_too_large"),
        ("put", "429", "too_many_durable_streams"),
        ("put", "507", "durable_store_full"),
        ("post", "403", "producer_stale_epoch"),
        ("post", "409", "producer_sequence_gap"),
        ("post", "409", "stream_closed"),
        ("post", "429", "rate_limited"),
        ("get", "410", "stream_gone"),
    ):
        assert f"`{code}`" in durable[method]["responses"][status]["description"], (method, status, code)
    schemas = spec["components"]["schemas"]
    assert "durable_url" in schemas["ChatAccepted"]["required"]
    assert "durable_url" in schemas["SessionInfoEvent"]["required"]

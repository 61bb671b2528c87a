"""Browsers on other origins (issue 9): CORS_ORIGINS, unset meaning same origin only.

Over HTTP first (the headers of preflights and answers on every kind of route: Quart's and
the two streaming routes in front of it), then in the real browser: a page served by a
tiny aiohttp server on another loopback port talks to the API with ``fetch`` and
``EventSource`` (``withCredentials`` false), and streams an answer when its origin is
allowed, and is refused when it is not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.support.browser import launch_browser, open_page
from tests.support.sse_client import read_stream

ORIGIN = "http://app.example"
PREFLIGHTS = [
    ("POST", "/chat", "content-type"),
    ("POST", "/chat/stream", "content-type, authorization"),
    ("GET", "/streams/abc/events", "last-event-id"),
    ("POST", "/sessions/new", "content-type"),
    ("GET", "/sessions/abc", "authorization"),
    ("DELETE", "/sessions/abc", "authorization"),
]
# Durable Streams (/v1/stream/): its methods and every request header of the protocol.  Its
# OPTIONS lists them even with CORS_ORIGINS unset (the conformance suite asks for it), and
# without Access-Control-Allow-Origin that grants a page nothing.
DURABLE_PREFLIGHTS = [
    ("PUT", "/v1/stream/a/b", "content-type, stream-ttl, stream-expires-at, stream-closed"),
    ("PUT", "/v1/stream/fork", "stream-forked-from, stream-fork-offset, stream-fork-sub-offset"),
    ("POST", "/v1/stream/a/b", "content-type, stream-seq, producer-id, producer-epoch, producer-seq"),
    ("HEAD", "/v1/stream/a/b", "authorization"),
    ("GET", "/v1/stream/a/b", "if-none-match"),
    ("DELETE", "/v1/stream/a/b", "authorization"),
]


def preflight_headers(method: str, headers: str, origin: str = ORIGIN) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.mark.parametrize(("method", "path", "headers"), PREFLIGHTS + DURABLE_PREFLIGHTS)
async def test_preflights_from_an_allowed_origin(start_server, http, method, path, headers):
    server = start_server(CORS_ORIGINS=f"{ORIGIN}, http://other.example")
    async with http.options(server.url + path, headers=preflight_headers(method, headers)) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert method in r.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {h.strip() for h in headers.split(",")} <= allowed
        assert "Origin" in r.headers.getall("Vary")
        assert "Access-Control-Allow-Credentials" not in r.headers
    # Another origin is not answered as allowed.
    async with http.options(
        server.url + path, headers=preflight_headers(method, headers, "http://evil.example")
    ) as r:
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_answers_carry_the_origin_on_every_kind_of_route(start_server, http):
    server = start_server(CORS_ORIGINS=ORIGIN, RATE_LIMIT="2")
    origin = {"Origin": ORIGIN}

    def allowed(r):
        assert r.headers.get("Access-Control-Allow-Origin") == ORIGIN, dict(r.headers)
        assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]

    async with http.post(f"{server.url}/chat", json={"message": "hi"}, headers=origin) as r:
        assert r.status == 202
        allowed(r)
        accepted = await r.json()
    async with http.get(server.url + accepted["events_url"], headers=origin) as r:
        allowed(r)
        stream = await read_stream(r)
    async with http.get(
        server.url + accepted["events_url"], headers={**origin, "Last-Event-ID": str(stream.ids[-1])}
    ) as r:
        assert r.status == 204
        allowed(r)
    async with http.post(f"{server.url}/chat/stream", json={"message": "hi"}, headers=origin) as r:
        allowed(r)
        assert (await read_stream(r)).last["type"] == "complete"
    # Errors too, or a page could not read them: Quart's 404, the streaming layer's 429.
    async with http.get(f"{server.url}/sessions/nope", headers=origin) as r:
        assert r.status == 404
        allowed(r)
    async with http.post(f"{server.url}/chat/stream", json={"message": "hi"}, headers=origin) as r:
        assert r.status == 429
        allowed(r)
    async with http.get(f"{server.url}/stats", headers={"Origin": "http://evil.example"}) as r:
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers


async def test_unset_means_same_origin_only(server, http):
    origin = {"Origin": ORIGIN}
    for method, path, headers in PREFLIGHTS:
        async with http.options(server.url + path, headers=preflight_headers(method, headers)) as r:
            assert not [h for h in r.headers if h.lower().startswith("access-control-")], (path, r.status)
    async with http.post(f"{server.url}/chat/stream", json={"message": "hi"}, headers=origin) as r:
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
        await read_stream(r)
    async with http.post(f"{server.url}/sessions/new", headers=origin) as r:
        assert r.status == 201 and "Access-Control-Allow-Origin" not in r.headers


# In the browser ----------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>another origin</title></head><body>
<script>
async function talk(api, message) {
  const out = {};
  try {
    const r = await fetch(api + "/chat", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({message})});
    out.status = r.status;
    const accepted = await r.json();
    out.text = await new Promise((resolve, reject) => {
      const es = new EventSource(api + accepted.events_url);
      let text = "";
      es.addEventListener("chunk", e => { text += JSON.parse(e.data).text; });
      es.addEventListener("complete", () => { es.close(); resolve(text); });
      es.onerror = () => { es.close(); reject(new Error("EventSource failed")); };
    });
    const s = await fetch(api + "/sessions/" + accepted.session_id);
    out.saved = (await s.json()).messages.at(-1).content;
    const streamed = await fetch(api + "/chat/stream", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({message: "and again", session_id: accepted.session_id})});
    out.streamed = await streamed.text();
    const d = await fetch(api + "/sessions/" + accepted.session_id, {method: "DELETE"});
    out.deleted = d.status;
  } catch (e) {
    out.error = String(e);
  }
  return out;
}
function listen(url) {
  return new Promise(resolve => {
    const es = new EventSource(url);
    let events = 0;
    es.addEventListener("chunk", () => { events += 1; });
    es.addEventListener("complete", () => { es.close(); resolve({events, complete: true}); });
    es.onerror = () => { es.close(); resolve({events, complete: false}); };
  });
}
</script></body></html>
"""


@pytest.fixture(name="page_origin")
async def _page_origin() -> AsyncIterator[str]:
    """A tiny web server of its own on another loopback port: another origin."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def session_count(http, url):
    async with http.get(f"{url}/sessions") as r:
        return (await r.json())["count"]


@pytest.mark.browser
async def test_a_page_on_an_allowed_origin_streams_an_answer(start_server, http, page_origin):
    server = start_server(CORS_ORIGINS=page_origin)
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(page_origin + "/")
        out = await page.evaluate("([api]) => talk(api, 'hello from elsewhere')", [server.url])
        assert "error" not in out, (out, watch.console_errors)
        assert out["status"] == 202 and out["text"] and out["saved"] == out["text"]
        assert "event: complete" in out["streamed"] and out["deleted"] == 200
        assert watch.page_errors == [] and watch.console_errors == []


@pytest.mark.browser
@pytest.mark.parametrize("cors_origins", ["", "http://127.0.0.1:1"], ids=["unset", "another-origin"])
async def test_a_page_on_another_origin_is_refused(start_server, http, page_origin, cors_origins):
    server = start_server(CORS_ORIGINS=cors_origins)
    async with http.post(f"{server.url}/chat", json={"message": "made here"}) as r:
        accepted = await r.json()
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(page_origin + "/")
        out = await page.evaluate("([api]) => talk(api, 'hello from elsewhere')", [server.url])
        assert "Failed to fetch" in out.get("error", ""), out
        # The JSON POST is preflighted: the refused page sent no message at all.
        assert await session_count(http, server.url) == 1
        # An EventSource needs no preflight, but the page reads nothing from the stream.
        heard = await page.evaluate("([url]) => listen(url)", [server.url + accepted["events_url"]])
        assert heard == {"events": 0, "complete": False}
        assert any("CORS" in line for line in watch.console_errors), watch.console_errors


async def test_durable_stream_answers_expose_the_protocol_headers(start_server, http):
    """A page on an allowed origin can read Stream-Next-Offset and the rest of the protocol's
    answer headers, on a write and on a read."""
    server = start_server(CORS_ORIGINS=ORIGIN)
    origin = {"Origin": ORIGIN, "Content-Type": "text/plain"}
    for method, params in (("PUT", {}), ("POST", {}), ("GET", {"offset": "-1"})):
        async with http.request(
            method, f"{server.url}/v1/stream/exposed", headers=origin, data=b"hi", params=params
        ) as r:
            assert r.status < 300, await r.text()
            assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
            exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
            assert {"stream-next-offset", "stream-closed", "etag", "producer-epoch"} <= exposed

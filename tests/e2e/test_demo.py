"""The demo page in a real browser (Debian's Chromium driven by Playwright).

The page sends with ``fetch`` ``POST /chat`` and reads the answer with the browser's own
``EventSource``; these tests check what a person sees: the whole answer, exactly once,
also across a connection cut; model text never run as markup; the session controls; the
API-key prompt.  A screenshot is left in ``tests/artifacts/`` for people to look at.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, expect
from yarl import URL

from tests.support.browser import PageWatch, launch_browser, open_page

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WAIT_MS = 20_000  # an upper bound for Playwright's waiting, not a timing assertion

XSS = "<img src=x onerror=alert(1)> <script>alert(2)</script>"


async def saved_answer(http: aiohttp.ClientSession, base: str, session_id: str) -> str:
    async with http.get(f"{base}/sessions/{session_id}") as response:
        assert response.status == 200
        session = await response.json()
    last = session["messages"][-1]
    assert last["role"] == "model"
    return str(last["content"])


async def send(page: Page, text: str) -> None:
    """Type a message, send it, and wait until its answer has ended."""
    before = await page.locator("#messages .answer").count()
    await page.fill("#message", text)
    await page.click("#send")
    answer = page.locator("#messages .answer").nth(before)
    await expect(answer).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    await expect(page.locator("#status")).to_have_text("idle")


async def session_id_of(page: Page) -> str:
    text = (await page.locator("#session-id").text_content() or "").strip()
    assert len(text) > 8, f"no session id shown: {text!r}"
    return text


def assert_clean(watch: PageWatch) -> None:
    assert watch.dialogs == []
    assert watch.page_errors == []
    assert watch.console_errors == []


async def test_the_page_and_its_assets_are_public_and_locked_down(start_server, http):
    """No key is needed for the page (the page asks for one); the API still needs it."""
    server = start_server(API_KEYS="secret")
    async with http.get(f"{server.url}/demo") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        html = await response.text()
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    for element_id in ("message", "send", "messages", "new-session", "session-id", "status"):
        assert f'id="{element_id}"' in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    for asset, kind in (
        ("app.js", "text/javascript"),
        ("markdown.js", "text/javascript"),
        ("demo.css", "text/css"),
    ):
        async with http.get(f"{server.url}/demo/{asset}") as response:
            assert response.status == 200
            assert response.content_type == kind
    for missing in ("/demo/nothing.js", "/demo/%2e%2e/config.py", "/demo/..%2Fapp.py"):
        async with http.get(URL(f"{server.url}{missing}", encoded=True)) as response:
            assert response.status == 404
    async with http.get(f"{server.url}/sessions") as response:
        assert response.status == 401


@pytest.mark.browser
async def test_a_message_shows_the_whole_answer(server, http):
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        await expect(page.locator("#status")).to_have_text("idle")
        await expect(page.locator("#session-id")).to_have_text("—")

        await send(page, "Hello from the browser")

        session_id = await session_id_of(page)
        want = await saved_answer(http, server.url, session_id)
        answers = page.locator("#messages .answer")
        await expect(answers).to_have_count(1)
        assert await answers.locator(".answer-text").text_content() == want
        assert "Hello from the browser" in want  # the offline model names the message it answers
        await expect(page.locator("#messages .msg.user .user-text")).to_have_text("Hello from the browser")
        await expect(answers).to_have_attribute("data-chunks", "12")  # SIM_RESPONSE_CHUNKS of the fixture
        await expect(answers.locator(".answer-meta")).to_contain_text("12 chunks")
        await expect(answers.locator(".answer-meta")).to_contain_text("total")
        await expect(page.locator("#session-list button[aria-current=true]")).to_have_count(1)
        assert_clean(watch)


class StreamCutProxy:
    """A TCP proxy in front of the server that cuts the first event stream mid-answer.

    It forwards every connection as it is.  On the connection that carries the first
    ``GET /streams/…`` it counts ``event: chunk`` frames going to the browser and, after
    ``cut_after`` of them, resets both sides (``transport.abort()``).  Any later stream
    request is held until :meth:`release`, so that the test sees the page in its
    ``reconnecting`` state for as long as it needs; the held request heads are kept.

    (tests/support/proxy.py cuts the next *accepted connections* after a byte count; a
    browser reuses keep-alive connections for its requests, so the cut here is chosen by
    the HTTP request a connection carries instead.)
    """

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cut = asyncio.Event()
        self._released = asyncio.Event()
        self.resumed_requests: list[bytes] = []
        self._watching = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def release(self) -> None:
        self._released.set()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_writer)
            watched = [False]  # this connection carries the stream to cut
            pumps = [
                asyncio.create_task(self._upstream(reader, up_writer, watched)),
                asyncio.create_task(self._downstream(up_reader, writer, up_writer, watched)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.transport.abort()
                    self._writers.discard(w)
            self._tasks.discard(task)

    async def _upstream(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, watched: list[bool]
    ) -> None:
        while data := await reader.read(65536):
            if b"GET /streams/" in data:
                if not self._watching:
                    self._watching = True
                    watched[0] = True
                elif self.cut.is_set():
                    self.resumed_requests.append(data)
                    await self._released.wait()
            up.write(data)
            await up.drain()

    async def _downstream(
        self,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_writer: asyncio.StreamWriter,
        watched: list[bool],
    ) -> None:
        seen = b""
        while data := await up_reader.read(65536):
            writer.write(data)
            await writer.drain()
            if watched[0] and not self.cut.is_set():
                seen += data
                if seen.count(b"event: chunk") >= self.cut_after:
                    writer.transport.abort()  # a reset, as a dropped mobile link or a router would
                    up_writer.transport.abort()
                    self.cut.set()
                    return


@pytest.mark.browser
async def test_a_cut_connection_reconnects_and_shows_the_whole_answer_once(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="30", SIM_RESPONSE_CHUNKS="20", SSE_RETRY_MS="200")
    proxy = StreamCutProxy(server.port, cut_after=4)
    await proxy.start()
    try:
        async with launch_browser() as browser:
            page, watch = await open_page(browser)
            await page.goto(f"{proxy.url}/demo")
            await page.fill("#message", "Will this survive a dropped connection?")
            await page.click("#send")

            status = page.locator("#status")
            await expect(status).to_have_text("reconnecting", timeout=WAIT_MS)
            assert proxy.cut.is_set()
            answer = page.locator("#messages .answer").last
            await expect(answer).to_have_attribute("data-state", "streaming")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "demo-reconnecting.png"), animations="disabled")
            proxy.release()

            await expect(answer).to_have_attribute("data-state", "done", timeout=WAIT_MS)
            await expect(status).to_have_text("idle")

            session_id = await session_id_of(page)
            want = await saved_answer(http, server.url, session_id)
            await expect(page.locator("#messages .answer")).to_have_count(1)
            assert await answer.locator(".answer-text").text_content() == want  # whole, and only once
            await expect(answer).to_have_attribute("data-chunks", "20")
            await expect(answer.locator(".answer-meta")).to_contain_text("resumed ×1")
            # the browser's own reconnection resumed after the last event it had
            assert len(proxy.resumed_requests) == 1
            assert b"last-event-id:" in proxy.resumed_requests[0].lower()
            assert watch.dialogs == [] and watch.page_errors == []
    finally:
        await proxy.aclose()


@pytest.mark.browser
async def test_stop_ends_the_answer_and_keeps_what_came(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="40", SIM_RESPONSE_CHUNKS="200")
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        await page.fill("#message", "a long answer, please")
        await page.click("#send")
        answer = page.locator("#messages .answer").last
        await expect(answer).to_have_attribute("data-chunks", re.compile(r"\d+"), timeout=WAIT_MS)
        await page.click("#stop")

        await expect(answer).to_have_attribute("data-state", "interrupted", timeout=WAIT_MS)
        await expect(page.locator("#status")).to_have_text("idle")
        await expect(answer.locator(".answer-meta")).to_contain_text("stopped")
        await expect(page.locator("#stop")).to_be_hidden()
        async with http.get(f"{server.url}/sessions/{await session_id_of(page)}") as response:
            last = (await response.json())["messages"][-1]
        assert last["interrupted"] is True
        # what was shown is what was kept (Markdown drops the trailing space of the last piece)
        assert await answer.locator(".answer-text").text_content() == last["content"].strip()
        assert_clean(watch)


@pytest.mark.browser
async def test_a_reload_mid_answer_picks_the_stream_up_again(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="40", SIM_RESPONSE_CHUNKS="80")
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        await page.fill("#message", "reload while you answer")
        await page.click("#send")
        await expect(page.locator("#messages .answer")).to_have_attribute(
            "data-chunks", re.compile(r"\d+"), timeout=WAIT_MS
        )
        session_id = await session_id_of(page)

        await page.reload()  # the page remembers its session and reads the running stream from its start
        await expect(page.locator("#session-id")).to_have_text(session_id)
        answer = page.locator("#messages .answer")
        await expect(answer).to_have_count(1)
        await expect(answer).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        await expect(answer).to_have_attribute("data-chunks", "80")
        want = await saved_answer(http, server.url, session_id)
        assert await answer.locator(".answer-text").text_content() == want
        await expect(page.locator("#messages .user-text")).to_have_text(["reload while you answer"])
        assert_clean(watch)


@pytest.mark.browser
async def test_model_text_is_never_run_as_markup(server, http):
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        await send(page, XSS)

        answer = page.locator("#messages .answer").last
        # the offline model echoes the message: it shows as text, and nothing ran
        await expect(answer.locator(".answer-text")).to_contain_text(XSS)
        await expect(page.locator("#messages .user-text")).to_have_text(XSS)
        assert await page.locator("#messages img, #messages script").count() == 0
        assert await page.evaluate("document.querySelectorAll('img').length") == 0
        want = await saved_answer(http, server.url, await session_id_of(page))
        assert await answer.locator(".answer-text").text_content() == want
        assert_clean(watch)


@pytest.mark.browser
async def test_markdown_renders_with_safe_elements_only(server):
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        await send(page, "**bold** `code` [x](javascript:alert(1)) <b>b</b>")

        text = page.locator("#messages .answer .answer-text").last
        await expect(text.locator("strong")).to_have_text("bold")
        await expect(text.locator("code")).to_have_text("code")
        assert await text.locator("a, b").count() == 0  # a javascript: link stays text, <b> too
        await expect(text).to_contain_text("[x](javascript:alert(1)) <b>b</b>")
        assert_clean(watch)


MARKDOWN_SAMPLE = """# Title <img src=x onerror=alert(1)>

Some **bold**, *italic*, ~~gone~~ and `<script>alert(1)</script>` code.
A [good link](https://example.org/a?b=1) and a [bad one](javascript:alert(1)),
[data](data:text/html,<script>alert(1)</script>) and <a href="javascript:alert(1)">raw</a>.

- one <svg onload=alert(1)>
- two with `code`

1. first
2. second

> quoted <iframe src="javascript:alert(1)"></iframe>

```html
<script>alert("in a fence")</script>
```
---
<style>body{display:none}</style>"""

# what renderMarkdown may produce: these elements, with only these attributes
ALLOWED = {
    "P", "BR", "STRONG", "EM", "DEL", "CODE", "PRE", "A", "H3", "H4", "H5", "H6",
    "UL", "OL", "LI", "BLOCKQUOTE", "HR",
}  # fmt: skip


@pytest.mark.browser
async def test_the_markdown_renderer_builds_only_safe_nodes(server):
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        found = await page.evaluate(
            """async (text) => {
                const { renderMarkdown } = await import("/demo/markdown.js");
                const box = document.createElement("div");
                box.append(renderMarkdown(text));
                return {
                    tags: [...box.querySelectorAll("*")].map((e) => e.tagName),
                    attributes: [...box.querySelectorAll("*")].flatMap(
                        (e) => [...e.attributes].map((a) => `${e.tagName} ${a.name}=${a.value}`)),
                    text: box.textContent,
                };
            }""",
            MARKDOWN_SAMPLE,
        )
        assert set(found["tags"]) <= ALLOWED
        for tag in ("H3", "STRONG", "EM", "DEL", "CODE", "PRE", "A", "UL", "OL", "LI", "BLOCKQUOTE", "HR"):
            assert tag in found["tags"], tag
        assert found["tags"].count("A") == 1
        assert sorted(found["attributes"]) == [
            "A href=https://example.org/a?b=1",
            "A rel=noopener noreferrer nofollow",
            "A target=_blank",
            "CODE data-lang=html",
        ]
        for literal in (
            "<img src=x onerror=alert(1)>",
            "<script>alert(1)</script>",
            '<a href="javascript:alert(1)">raw</a>',
            "<svg onload=alert(1)>",
            '<script>alert("in a fence")</script>',
            "<style>body{display:none}</style>",
            "[bad one](javascript:alert(1))",
        ):
            assert literal in found["text"]
        assert_clean(watch)


@pytest.mark.browser
async def test_session_controls_new_switch_clear_delete(server, http):
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        messages = page.locator("#messages .msg")

        await page.click("#new-session")
        await expect(page.locator("#session-id")).not_to_have_text("—")
        first = await session_id_of(page)
        await send(page, "first session")
        assert await session_id_of(page) == first
        first_answer = await saved_answer(http, server.url, first)

        await page.click("#new-session")
        await expect(page.locator("#session-id")).not_to_have_text(first)
        second = await session_id_of(page)
        await expect(messages).to_have_count(0)
        await send(page, "second session")
        await expect(messages).to_have_count(2)

        # switch back: the first session's history is shown
        await page.click(f"#session-list button[data-session='{first}']")
        await expect(page.locator("#session-id")).to_have_text(first)
        await expect(page.locator("#messages .answer .answer-text")).to_have_text([first_answer])

        await page.click("#clear-session")
        await expect(messages).to_have_count(0)
        async with http.get(f"{server.url}/sessions/{first}") as response:
            assert (await response.json())["message_count"] == 0

        await page.click("#delete-session")
        await expect(page.locator("#session-id")).to_have_text("—")
        async with http.get(f"{server.url}/sessions/{first}") as response:
            assert response.status == 404
        await expect(page.locator(f"#session-list button[data-session='{first}']")).to_have_count(0)
        await expect(page.locator(f"#session-list button[data-session='{second}']")).to_have_count(1)
        assert_clean(watch)


@pytest.mark.browser
async def test_the_page_asks_for_an_api_key_when_the_server_needs_one(start_server):
    server = start_server(API_KEYS="demo-key-1,demo-key-2")
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        dialog = page.locator("#auth")
        await expect(dialog).to_be_visible()
        await page.fill("#api-key", "wrong")
        await page.click("#api-key-save")
        await expect(page.locator("#auth-error")).to_be_visible()

        await page.fill("#api-key", "demo-key-2")
        await page.click("#api-key-save")
        await expect(dialog).to_be_hidden()
        await send(page, "with a key")  # Bearer on fetch, ?access_token= on the EventSource
        await expect(page.locator("#messages .answer .answer-text")).to_contain_text("with a key")
        assert watch.dialogs == [] and watch.page_errors == []
        # the refused requests (401) are the only console errors
        assert all("401" in line for line in watch.console_errors)


@pytest.mark.browser
async def test_screenshots_for_people(server):
    """Leaves tests/artifacts/demo.png (desktop, light) and demo-phone.png (phone, dark)."""
    ARTIFACTS.mkdir(exist_ok=True)
    async with launch_browser() as browser:
        page, watch = await open_page(browser, viewport={"width": 1280, "height": 800}, color_scheme="light")
        await page.goto(f"{server.url}/demo")
        await send(page, "What makes streaming answers feel fast?")
        await send(page, "Show me **bold**, `code` and <b>tags</b>, safely")
        await page.screenshot(path=str(ARTIFACTS / "demo.png"), animations="disabled")

        phone, phone_watch = await open_page(
            browser,
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            color_scheme="dark",
            is_mobile=True,
            has_touch=True,
        )
        await phone.goto(f"{server.url}/demo")
        await send(phone, "Hello from a phone")
        await phone.screenshot(path=str(ARTIFACTS / "demo-phone.png"), animations="disabled")
        assert_clean(watch)
        assert_clean(phone_watch)
    assert (ARTIFACTS / "demo.png").stat().st_size > 10_000

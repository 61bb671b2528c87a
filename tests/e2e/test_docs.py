"""/docs in a real browser (Debian's Chromium driven by Playwright), the schema it shows,
and the demo page's screenshot for the README.

/docs is Swagger UI; a test that the page's scripts download says nothing about whether
it can read the schema (Swagger UI 4 cannot read OpenAPI 3.1, and says only "Unable to
render this definition").  So these tests open the page and look for every operation of
the server's own /openapi.json in it.  ``UPDATE_SCREENSHOTS=1`` writes the screenshot to
docs/demo.png; otherwise it goes to the test's temporary directory.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from playwright.async_api import Browser, expect

from quart_sse import codes
from tests.support.browser import launch_browser, open_page

DOCS = Path(__file__).resolve().parents[2] / "docs"
WAIT_MS = 20_000  # an upper bound for Playwright's waiting, not a timing assertion
PUBLIC = ("/health", "/docs", "/openapi.json", "/demo")
# A dataclass without a docstring gets one like "ErrorBody(error: 'ErrorDetail')", which
# quart-schema would publish as a description.
DATACLASS_REPR = re.compile(r"^\w+\(\w+: '")
ERROR_CODES = {value for name, value in vars(codes).items() if name.isupper() and isinstance(value, str)} - {
    codes.CANCELLED,
    codes.INTERRUPTED,
    codes.MODEL_UNAVAILABLE,
    codes.AUTH,
    codes.MODEL_ERROR,
    codes.TIMEOUT,
}
"""The codes of error bodies (the others are codes of ``error`` events)."""


def operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (METHOD, path) of a schema."""
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def descriptions(node: object) -> list[str]:
    """Every description and summary anywhere in a schema."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("description", "summary") and isinstance(v, str)]
        return found + [d for v in node.values() for d in descriptions(v)]
    if isinstance(node, list):
        return [d for v in node for d in descriptions(v)]
    return []


async def shown_operations(browser: Browser, url: str) -> tuple[set[tuple[str, str]], str, list[str]]:
    """The operations /docs at ``url`` lists once Swagger UI has rendered the schema
    (method, path), the page's text, and its script errors."""
    page, watch = await open_page(browser)
    await page.goto(f"{url}/docs")
    # The schema's title, or the panel of errors, or the notice of a version it cannot read.
    rendered = page.locator(
        "#swagger-ui .information-container, #swagger-ui .errors-wrapper, #swagger-ui .version-pragma"
    )
    await expect(rendered.first).to_be_visible(timeout=WAIT_MS)
    text = await page.locator("body").inner_text()
    pairs = await page.eval_on_selector_all(
        "#swagger-ui .opblock",
        """blocks => blocks.map(b => [
            b.querySelector('.opblock-summary-method').textContent.trim(),
            b.querySelector('.opblock-summary-path').getAttribute('data-path'),
        ])""",
    )
    return {(method, path) for method, path in pairs}, text, watch.page_errors


@pytest.mark.browser
async def test_docs_lists_every_operation_of_the_schema(server, http):
    async with http.get(f"{server.url}/openapi.json") as response:
        spec = await response.json()
    assert spec["openapi"].startswith("3.1")
    wanted = operations(spec)
    assert ("POST", "/chat/stream") in wanted and ("GET", "/streams/{stream_id}/events") in wanted
    async with launch_browser() as browser:
        shown, text, errors = await shown_operations(browser, server.url)
    assert "Unable to render" not in text
    assert "Errors" not in text.split("\n")  # Swagger UI's panel of resolver errors
    assert shown == wanted
    assert errors == []
    # No other site may frame the page or its files; nothing is sniffed (the CSP that
    # allows its inline start-up script still renders it: the operations above)
    for path in ("/docs", "/docs/assets/oauth2-redirect.html", "/docs/assets/swagger-ui.css"):
        async with http.get(server.url + path) as response:
            assert response.status == 200, path
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
            assert response.headers["X-Content-Type-Options"] == "nosniff", path


@pytest.mark.browser
async def test_docs_with_api_keys_is_public_and_offers_the_bearer_key(start_server, http):
    server = start_server(API_KEYS="secret")
    async with http.get(f"{server.url}/openapi.json") as response:
        assert response.status == 200  # no key needed, as for the page
        spec = await response.json()
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/docs")
        await expect(page.locator("#swagger-ui .btn.authorize")).to_be_visible(timeout=WAIT_MS)
        locked = page.locator("#swagger-ui .opblock .authorization__btn")
        needs_key = {op for op in operations(spec) if op[1] not in PUBLIC}
        await expect(locked).to_have_count(len(needs_key))
        assert watch.page_errors == []


async def schema_of(url: str, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"{url}/openapi.json") as response:
        assert response.status == 200
        spec: dict[str, Any] = await response.json()
    return spec


async def test_the_schema_is_valid_openapi_3_1_and_describes_itself(start_server, http):
    for env in ({}, {"API_KEYS": "secret", "ADMIN_KEYS": "boss"}):
        server = start_server(**env)
        spec = await schema_of(server.url, http)
        OpenAPIV31SpecValidator(spec).validate()  # raises on the first error
        texts = descriptions(spec)
        assert not [t for t in texts if "api.md" in t.lower()]  # the schema stands on its own
        assert not [t for t in texts if DATACLASS_REPR.match(t)]
        for method, path in operations(spec):
            operation = spec["paths"][path][method.lower()]
            assert operation.get("summary"), (method, path)
            assert operation["tags"], (method, path)
            for status, response in operation["responses"].items():
                assert response["description"], (method, path, status)
                if status[0] in "45":  # a refusal names its codes
                    named = set(re.findall(r"^- `([a-z_]+)`:", response["description"], re.M))
                    assert named and named <= ERROR_CODES, (method, path, status, named)
        bearer = spec["components"]["securitySchemes"]["bearer"]
        assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
        for method, path in operations(spec):
            operation = spec["paths"][path][method.lower()]
            if env and path not in PUBLIC:
                assert operation["security"] == [{"bearer": []}], (method, path)
                assert "unauthorized" in operation["responses"]["401"]["description"]
            else:
                assert "security" not in operation, (method, path)


async def test_the_chat_refusals_name_their_codes(server, http):
    spec = await schema_of(server.url, http)
    for path in ("/chat", "/chat/stream"):
        responses = spec["paths"][path]["post"]["responses"]
        for status, code in (
            ("400", "invalid_json"),
            ("400", "empty_message"),
            ("404", "session_not_found"),
            ("408", "body_timeout"),
            ("409", "generation_running"),
            ("409", "session_full"),
            ("413", "body_too_large"),
            ("413", "message_too_long"),
            ("429", "rate_limited"),
            ("503", "capacity"),
            ("503", "shutting_down"),
        ):
            assert f"`{code}`" in responses[status]["description"], (path, status, code)
        assert "Retry-After" in responses["429"]["headers"] and "Retry-After" in responses["503"]["headers"]
    read = spec["paths"]["/streams/{stream_id}/events"]["get"]["responses"]
    assert "`invalid_last_event_id`" in read["400"]["description"]
    assert "`stream_not_found`" in read["404"]["description"]


async def not_blank(browser: Browser, png: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct colours (sampled) of a PNG, decoded by the browser."""
    page, _ = await open_page(browser)
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    found: list[int] = await page.evaluate(
        """async url => {
            const image = new Image();
            image.src = url;
            await image.decode();
            const canvas = document.createElement('canvas');
            canvas.width = image.width;
            canvas.height = image.height;
            const context = canvas.getContext('2d');
            context.drawImage(image, 0, 0);
            const pixels = context.getImageData(0, 0, image.width, image.height).data;
            const colours = new Set();
            for (let i = 0; i < pixels.length; i += 4 * 7) {
                colours.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
            }
            return [image.width, image.height, colours.size];
        }""",
        url,
    )
    width, height, colours = found
    return width, height, colours


@pytest.mark.browser
async def test_demo_screenshot(server, tmp_path):
    """The demo after one answer, as a person sees it (docs/demo.png, shown in the README)."""
    update = os.environ.get("UPDATE_SCREENSHOTS") == "1"
    target = DOCS / "demo.png" if update else tmp_path / "demo.png"
    async with launch_browser() as browser:
        page, watch = await open_page(browser, viewport={"width": 1200, "height": 760}, color_scheme="light")
        await page.goto(f"{server.url}/demo")
        await expect(page.locator("#status")).to_have_text("idle")
        await page.fill("#message", "What are Server-Sent Events good for?")
        await page.click("#send")
        answer = page.locator("#messages .answer").first
        await expect(answer).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        await expect(page.locator("#status")).to_have_text("idle")
        await expect(answer.locator(".answer-meta")).to_contain_text("chunks")
        await page.locator("#message").blur()
        png = await page.screenshot(path=str(target))
        assert watch.page_errors == [] and watch.dialogs == []
        width, height, colours = await not_blank(browser, png)
    assert target.read_bytes() == png and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 20_000
    assert (width, height) == (1200, 760)
    assert colours > 50  # text, buttons and an answer, not one flat colour

"""The demo's Markdown renderer (``/demo/markdown.js``) in a real browser (Debian's Chromium).

An answer is re-rendered while it streams and its text is the model's (or whoever feeds
the model): the renderer must take time in proportion to the text whatever the text is.
The renderer counts the steps it takes (``markdownWork()``); each crafted input is
rendered at two sizes, and the steps may grow only as the size does (4x the text, at most
5x the steps: a quadratic renderer takes 16x), and stay under a fixed number per
character.  No clock is asserted on: the times measured are written to
``tests/artifacts/markdown-work.txt`` for people to read.  Ordinary Markdown must render
to the very DOM it rendered to before the renderer was made linear, and crafted text must
still give only safe nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from tests.support.browser import PageWatch, launch_browser, open_page

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

SMALL = 32 * 1024
LARGE = 128 * 1024  # 4 x SMALL
GROWTH = 5.0  # steps(LARGE) / steps(SMALL) at most: linear is 4 (n log n about 4.5), quadratic 16
STEPS_PER_CHAR = 40  # the steps for one character of text, at most


def repeat(unit: str) -> Callable[[int], str]:
    """`unit` over and over, cut to n characters."""
    return lambda n: (unit * (n // len(unit) + 1))[:n]


def lines(make_line: Callable[[int], str]) -> Callable[[int], str]:
    """Lines make_line(0), make_line(1)... up to n characters."""

    def build(n: int) -> str:
        out: list[str] = []
        size = 0
        while size <= n:
            out.append(make_line(len(out)))
            size += len(out[-1]) + 1
        return "\n".join(out)[:n]

    return build


def tick_runs(n: int) -> str:
    """Runs of "`" that never close: 1, 2, 3... long, over and over."""
    out: list[str] = []
    size = 0
    length = 1
    while size < n:
        out.append("`" * length + "a")
        size += length + 1
        length = length % 300 + 1
    return "".join(out)[:n]


# Text crafted to make a backtracking or re-scanning renderer take quadratic (or worse) time.
CRAFTED: dict[str, Callable[[int], str]] = {
    "stars": repeat("*"),
    "underscore-a": repeat("_a"),
    "open brackets": repeat("["),
    "backticks": repeat("`"),
    "strong-a": repeat("**a"),
    "image brackets": repeat("!["),
    "less-than": repeat("<"),
    "tildes": repeat("~"),
    "backslashes": repeat("\\"),
    "quote markers on one line": repeat("> "),
    "list markers on one line": repeat("- "),
    "hashes on one line": repeat("# "),
    "nested list markers": lines(lambda i: "  " * (i % 40) + "- item"),
    "nested quote markers": lines(lambda i: "> " * (i % 30) + "x"),
    "nested emphasis": lines(lambda i: "*_~~**__[" * (i % 20) + "x"),
    "unclosed emphasis": repeat("*a "),
    "unclosed underscores": repeat("_a "),
    "unclosed strong": repeat("**a "),
    "unclosed strong underscores": repeat("__a"),
    "unclosed strike": repeat("~~a "),
    "unclosed links": repeat("[a]("),
    "unclosed code runs": tick_runs,
    "code and text": repeat("`a"),
    "bare address dots": lambda n: ("http://" + "." * n)[:n],
    "bare addresses": repeat("http://a"),
    "heading with spaces": lambda n: "# a" + " " * (n - 4) + "a",
    "heading with spaces, line separator": lambda n: "# a" + " " * (n - 5) + "a\u2028",
    "list item with spaces, line separator": lambda n: "-" + " " * (n - 3) + "a\u2028",
    "quote with spaces, line separator": lambda n: ">" + " " * (n - 3) + "a\u2028",
    "rule with spaces": lambda n: "- - -" + " " * (n - 6) + "x",
    "deep strong nesting": lambda n: "__a" * (n // 5) + "__" * (n // 5),
    "deep emphasis nesting": lambda n: "*_" * ((n - 1) // 4) + "x" + "_*" * ((n - 1) // 4),
    "fences": repeat("```\n"),
    "many lines": repeat("a\n"),
    "many paragraphs": repeat("a\n\n"),
}

# what the renderer may produce: these elements, with only these attributes
ALLOWED_TAGS = {
    "P", "BR", "STRONG", "EM", "DEL", "CODE", "PRE", "A", "H3", "H4", "H5", "H6",
    "UL", "OL", "LI", "BLOCKQUOTE", "HR",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"href", "rel", "target", "data-lang", "start"}

# Renders `text` and tells what it took and what came out.
RENDER = """async (text) => {
    const { renderMarkdown, markdownWork } = await import("/demo/markdown.js");
    const before = markdownWork();
    const started = performance.now();
    const fragment = renderMarkdown(text);
    const ms = performance.now() - started;
    const work = markdownWork() - before;
    const box = document.createElement("div");
    box.append(fragment);
    const elements = [...box.querySelectorAll("*")];
    let depth = 0;
    for (const element of elements) {
        let d = 0;
        for (let e = element; e !== box; e = e.parentElement) d += 1;
        depth = Math.max(depth, d);
    }
    return {
        work,
        ms,
        depth,
        tags: [...new Set(elements.map((e) => e.tagName))],
        attributes: [...new Set(elements.flatMap((e) => [...e.attributes].map((a) => a.name)))],
        hrefs: elements.filter((e) => e.tagName === "A").map((e) => e.getAttribute("href")).slice(0, 50),
    };
}"""

# The DOM under a node as a string: elements with their attributes, and every Text node
# quoted on its own (so that where the text is split shows too).
SERIALIZE = """async (text) => {
    const { renderMarkdown } = await import("/demo/markdown.js");
    const show = (n) => n.nodeType === 3 ? JSON.stringify(n.data)
        : "<" + n.tagName.toLowerCase()
            + [...n.attributes].map((a) => ` ${a.name}=${JSON.stringify(a.value)}`).sort().join("")
            + ">" + [...n.childNodes].map(show).join("") + "</" + n.tagName.toLowerCase() + ">";
    return [...renderMarkdown(text).childNodes].map(show).join("");
}"""

ORDINARY = {
    "answer": """# Streaming answers

Server-sent events keep **one** connection open, and the server *writes* each
chunk as it comes: `text/event-stream`, see [the spec](https://html.spec.whatwg.org/#sse).

## Steps

1. Open the stream
2. Read `data:` lines
3. Reconnect with `Last-Event-ID`

- a list item
  with a continuation line
- ***both*** and ~~gone~~ and __strong__ and _em_
    - deeper item
* another bullet

> A quote with **bold**
> > and a nested quote

```python
async def stream():
    yield "data: hi\\n\\n"
```

---
Visit https://example.org/path?q=1, or mail [me](mailto:me@example.org).
""",
    "inline": "Plain `` a`b `` code, ` spaced ` code, snake_case_name and 2*3*4, \\*not em\\*, "
    "a [bad](javascript:alert(1)) link, [x]( https://e.org/a ) spaced, ![img](https://e.org/i.png), "
    "**bold with `code` inside** and *em with [link](http://e.org)*; <b>tags</b> & entities &amp;",
    "blocks": "Title\n=====\n\n### Third ###\n\n####### seven\n\n   # indented heading\n\n"
    "3. three\n4. four\n\n10) ten\n\n+ plus\n\n~~~\nunclosed tilde fence\n\n- after",
    "unclosed": "**bold never closed, *em never closed, `code never closed, [label](no-close"
    "\n\n```js\nlet x = 1;",
    "quotes": "> one\n>two\n>\n> - item in quote\n> ```\n> code in quote\n> ```\n\n"
    "    indented text\n\n* * *\n___\n- - -",
    "urls": "See http://a.b/c). And (https://x.y/z?a=1&b=2). End https://e.org/x.\n"
    "Trailing https://e.org/q?, and https://e.org/'quoted' and http://x.\u00a0nbsp",
    "nested": "**a *b* c** and _x ~~y~~ z_ and [**l**](https://e.org)\n\n" + "__a" * 9 + "__" * 9,
}

# What the renderer made of ORDINARY before it was made linear (recorded with the old
# markdown.js in Chromium): the new one must make the very same DOM.
BEFORE = {
    "answer": (
        '<h3>"Streaming answers"</h3><p>"Server-sent events keep "<strong>"one"</strong>" con'
        'nection open, and the server "<em>"writes"</em>" each"<br></br>"chunk as it comes: "'
        '<code>"text/event-stream"</code>", see "<a href="https://html.spec.whatwg.org/#sse" '
        'rel="noopener noreferrer nofollow" target="_blank">"the spec"</a>"."</p><h4>"Steps"<'
        '/h4><ol><li>"Open the stream"</li><li>"Read "<code>"data:"</code>" lines"</li><li>"R'
        'econnect with "<code>"Last-Event-ID"</code></li></ol><ul><li>"a list item"<br></br>"'
        'with a continuation line"</li><li><strong>"*both"</strong>"* and "<del>"gone"</del>"'
        ' and "<strong>"strong"</strong>" and "<em>"em"</em></li><li>"- deeper item"</li><li>'
        '"another bullet"</li></ul><blockquote><p>"A quote with "<strong>"bold"</strong></p><'
        'blockquote><p>"and a nested quote"</p></blockquote></blockquote><pre><code data-lang'
        '="python">"async def stream():\\n    yield \\"data: hi\\\\n\\\\n\\""</code></pre><hr></hr><'
        'p>"Visit "<a href="https://example.org/path?q=1" rel="noopener noreferrer nofollow" '
        'target="_blank">"https://example.org/path?q=1"</a>", or mail "<a href="mailto:me@exa'
        'mple.org" rel="noopener noreferrer nofollow" target="_blank">"me"</a>"."</p>'
    ),
    "inline": (
        '<p>"Plain "<code>"a`b"</code>" code, "<code>"spaced"</code>" code, snake_case_name a'
        'nd 2"<em>"3"</em>"4, ""*""not em""*"", a [bad](javascript:alert(1)) link, "<a href="'
        'https://e.org/a" rel="noopener noreferrer nofollow" target="_blank">"x"</a>" spaced,'
        ' !"<a href="https://e.org/i.png" rel="noopener noreferrer nofollow" target="_blank">'
        '"img"</a>", "<strong>"bold with "<code>"code"</code>" inside"</strong>" and "<em>"em'
        ' with "<a href="http://e.org" rel="noopener noreferrer nofollow" target="_blank">"li'
        'nk"</a></em>"; <b>tags</b> & entities &amp;"</p>'
    ),
    "blocks": (
        '<p>"Title"<br></br>"====="</p><h5>"Third"</h5><p>"####### seven"</p><h3>"indented he'
        'ading"</h3><ol start="3"><li>"three"</li><li>"four"</li></ol><ol start="10"><li>"ten'
        '"</li></ol><ul><li>"plus"</li></ul><pre><code>"unclosed tilde fence\\n\\n- after"</cod'
        "e></pre>"
    ),
    "unclosed": (
        '<p>"**bold never closed, *em never closed, `code never closed, [label](no-close"</p>'
        '<pre><code data-lang="js">"let x = 1;"</code></pre>'
    ),
    "quotes": (
        '<blockquote><p>"one"<br></br>"two"</p><ul><li>"item in quote"</li></ul><pre><code>"c'
        'ode in quote"</code></pre></blockquote><p>"indented text"</p><hr></hr><hr></hr><hr><'
        "/hr>"
    ),
    "urls": (
        '<p>"See "<a href="http://a.b/c" rel="noopener noreferrer nofollow" target="_blank">"'
        'http://a.b/c"</a>"). And ("<a href="https://x.y/z?a=1&b=2" rel="noopener noreferrer '
        'nofollow" target="_blank">"https://x.y/z?a=1&b=2"</a>"). End "<a href="https://e.org'
        '/x" rel="noopener noreferrer nofollow" target="_blank">"https://e.org/x"</a>"."<br><'
        '/br>"Trailing "<a href="https://e.org/q" rel="noopener noreferrer nofollow" target="'
        '_blank">"https://e.org/q"</a>"?, and "<a href="https://e.org/\'quoted" rel="noopener '
        'noreferrer nofollow" target="_blank">"https://e.org/\'quoted"</a>"\' and http://x.\xa0nbs'
        'p"</p>'
    ),
    "nested": (
        '<p><strong>"a "<em>"b"</em>" c"</strong>" and "<em>"x "<del>"y"</del>" z"</em>" and '
        '"<a href="https://e.org" rel="noopener noreferrer nofollow" target="_blank"><strong>'
        '"l"</strong></a></p><p><strong>"a"<strong>"a"<strong>"a"<strong>"a"<strong>"a"<stron'
        'g>"a"<strong>"a"<strong>"a"<strong>"a"</strong></strong></strong></strong></strong><'
        "/strong></strong></strong></strong></p>"
    ),
}


def assert_clean(watch: PageWatch) -> None:
    assert watch.dialogs == []
    assert watch.page_errors == []
    assert watch.console_errors == []


async def render(page: Page, text: str) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(RENDER, text)
    return result


def assert_safe(name: str, found: dict[str, Any]) -> None:
    assert set(found["tags"]) <= ALLOWED_TAGS, name
    assert set(found["attributes"]) <= ALLOWED_ATTRIBUTES, name
    for href in found["hrefs"]:
        assert href.startswith(("http://", "https://", "mailto:")), (name, href)


@pytest.mark.browser
async def test_crafted_answers_take_linear_work(start_server):
    server = start_server()
    report = [
        f"{'input':40} {'steps 32 KB':>12} {'steps 128 KB':>13} {'growth':>6} "
        f"{'ms 32 KB':>9} {'ms 128 KB':>10}"
    ]
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        for name, make in CRAFTED.items():
            small_text, large_text = make(SMALL), make(LARGE)
            assert abs(len(small_text) - SMALL) < 8 and abs(len(large_text) - LARGE) < 8, name
            small = await render(page, small_text)  # each one ends: the test's own timeout is the bound
            large = await render(page, large_text)
            growth = large["work"] / small["work"]
            report.append(
                f"{name:40} {small['work']:12} {large['work']:13} {growth:6.2f} "
                f"{small['ms']:9.1f} {large['ms']:10.1f}"
            )
            assert small["work"] > 0, name
            assert growth <= GROWTH, (name, small["work"], large["work"])
            assert large["work"] <= STEPS_PER_CHAR * LARGE, (name, large["work"])
            assert large["depth"] <= 24, (name, large["depth"])  # nesting is cut off
            assert_safe(name, large)
        assert_clean(watch)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "markdown-work.txt").write_text("\n".join(report) + "\n")


@pytest.mark.browser
async def test_ordinary_markdown_renders_as_before(start_server):
    server = start_server()
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        for name, text in ORDINARY.items():
            assert await page.evaluate(SERIALIZE, text) == BEFORE[name], name
        # and as a whole answer made of them all, many times over (a long answer)
        everything = "\n\n".join(ORDINARY.values())
        found = await render(page, "\n\n".join([everything] * 200))
        assert_safe("everything", found)
        assert found["work"] <= STEPS_PER_CHAR * len(everything) * 200
        assert_clean(watch)


@pytest.mark.browser
async def test_deep_nesting_is_cut_off_instead_of_overflowing_the_stack(start_server):
    """Each level of "__a__a...__" nests one <strong> deeper: 9 levels render ("nested" above
    shows them), what is deeper shows as text.  The old renderer recursed once per level and
    overflowed the stack (a RangeError: no answer shown) at a few thousand levels."""
    server = start_server()
    levels = 20_000
    deep = "__a" * levels + "__" * levels
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        found = await page.evaluate(
            """async (text) => {
                const { renderMarkdown } = await import("/demo/markdown.js");
                const box = document.createElement("div");
                box.append(renderMarkdown(text));
                let inner = box.firstElementChild;
                let strongs = 0;
                while (inner.lastElementChild) {
                    inner = inner.lastElementChild;
                    strongs += 1;
                }
                return { strongs, text: box.textContent, innermost: inner.textContent };
            }""",
            deep,
        )
        assert found["strongs"] == 9
        assert found["text"] == "a" * 8 + deep[3 * 9 - 1 : -2 * 9]  # only the 9 levels' markers went
        assert found["innermost"].startswith("a__a__a")
        assert_clean(watch)

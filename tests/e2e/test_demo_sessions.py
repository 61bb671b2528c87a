"""The demo page's session list belongs to its visitor (Chromium driven by Playwright).

The page lists the sessions *this browser* started (their ids kept in localStorage), not
every session on the server.  Where the server lists every session (``"scope": "all"``:
no ``API_KEYS``, or an admin key) a "Show all sessions" checkbox (``#show-all-sessions``)
shows them all; with an ordinary key the server lists only that key's sessions
(``"own"``), the page shows those, and the checkbox is hidden.

Every wait is on a page condition: ``#session-list`` carries ``data-total`` (how many
sessions the server's last answer listed), ``data-scope`` and ``data-showing``
(``mine``/``all``), set in the same step that rebuilds the list.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from playwright.async_api import Locator, Page, expect

from tests.e2e.test_demo import ARTIFACTS, WAIT_MS, assert_clean, send, session_id_of
from tests.support.browser import launch_browser, open_page

MINE_STORAGE = "quart-sse-demo:my-sessions"
LISTED = "#session-list button[data-session]"


def item(page: Page, session_id: str) -> Locator:
    """The list's entry for a session."""
    return page.locator(f"{LISTED}[data-session='{session_id}']")


async def session_of_key(http: aiohttp.ClientSession, base: str, key: str) -> str:
    """A session started outside the page (another device, the CLI) with ``key``."""
    async with http.post(f"{base}/sessions/new", headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status == 201
        return str((await response.json())["session_id"])


async def listed(page: Page) -> set[str]:
    """The session ids the page's list shows now."""
    ids = await page.locator(LISTED).evaluate_all("(buttons) => buttons.map((b) => b.dataset.session)")
    return set(ids)


async def remembered(page: Page) -> list[str]:
    """The session ids the page keeps in localStorage as started here."""
    raw = await page.evaluate("(name) => localStorage.getItem(name)", MINE_STORAGE)
    return list(json.loads(raw)) if raw else []


async def list_loaded(page: Page, total: int, *, scope: str = "all") -> None:
    """Wait until the list is built from a server answer that listed ``total`` sessions."""
    session_list = page.locator("#session-list")
    await expect(session_list).to_have_attribute("data-total", str(total), timeout=WAIT_MS)
    await expect(session_list).to_have_attribute("data-scope", scope)


async def show_all(page: Page, on: bool) -> None:
    box = page.locator("#show-all-sessions")
    await box.set_checked(on)
    await expect(page.locator("#session-list")).to_have_attribute("data-showing", "all" if on else "mine")


async def enter_key(page: Page, key: str) -> None:
    await expect(page.locator("#auth")).to_be_visible(timeout=WAIT_MS)
    await page.fill("#api-key", key)
    await page.click("#api-key-save")
    await expect(page.locator("#auth")).to_be_hidden()


@pytest.mark.browser
async def test_each_visitor_lists_its_own_sessions_and_all_on_request(start_server):
    server = start_server()  # no API_KEYS: the server lists every session to everyone
    async with launch_browser() as browser:
        page_a, watch_a = await open_page(browser)  # two visitors: two contexts, two storages
        page_b, watch_b = await open_page(browser)
        for page in (page_a, page_b):
            await page.goto(f"{server.url}/demo")
            await list_loaded(page, 0)
            await expect(page.locator("#show-all-sessions")).to_be_visible()
            await expect(page.locator("#show-all-sessions")).not_to_be_checked()
            await expect(page.locator("#session-list-empty")).to_be_visible()

        await send(page_a, "I am visitor A")  # the first message starts a session
        a_id = await session_id_of(page_a)
        await send(page_b, "I am visitor B")
        b_id = await session_id_of(page_b)
        assert a_id != b_id

        # by default each lists only its own session, though the server lists both
        await page_a.click("#refresh-sessions")
        await list_loaded(page_a, 2)
        await list_loaded(page_b, 2)  # B's list was refreshed when its answer completed
        assert await listed(page_a) == {a_id}
        assert await listed(page_b) == {b_id}
        await expect(page_a.locator("#session-list-empty")).to_be_hidden()
        assert await remembered(page_a) == [a_id]
        assert await remembered(page_b) == [b_id]

        # with "show all sessions" each sees both, the other's marked as not started here
        for page, own, other in ((page_a, a_id, b_id), (page_b, b_id, a_id)):
            await show_all(page, True)
            await expect(page.locator(LISTED)).to_have_count(2)
            assert await listed(page) == {a_id, b_id}
            await expect(item(page, own)).to_have_attribute("data-mine", "true")
            await expect(item(page, other)).to_have_attribute("data-mine", "false")
            await expect(item(page, other)).to_contain_text("not started here")
            await expect(page.locator("#show-all-count")).to_have_text("(2)")

        ARTIFACTS.mkdir(exist_ok=True)  # for people: the list with every session shown
        await page_a.screenshot(path=str(ARTIFACTS / "demo-sessions-all.png"), animations="disabled")

        await show_all(page_b, False)
        await expect(page_b.locator(LISTED)).to_have_count(1)
        assert await listed(page_b) == {b_id}

        # after a reload the page still lists its own session, and starts with its own only
        await page_a.reload()
        await list_loaded(page_a, 2)
        await expect(page_a.locator("#show-all-sessions")).not_to_be_checked()
        await expect(page_a.locator("#session-id")).to_have_text(a_id)
        assert await listed(page_a) == {a_id}
        await expect(item(page_a, a_id)).to_have_attribute("aria-current", "true")
        await expect(page_a.locator("#messages .user-text")).to_have_text(["I am visitor A"])

        assert_clean(watch_a)
        assert_clean(watch_b)


@pytest.mark.browser
async def test_new_sessions_are_remembered_and_gone_ones_drop_out(start_server, http):
    server = start_server()
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        await list_loaded(page, 0)

        await page.click("#new-session")  # "New" starts a session too: it is listed at once
        await list_loaded(page, 1)
        first = await session_id_of(page)
        assert await listed(page) == {first}
        await send(page, "a message in the first session")

        await page.click("#new-session")
        await list_loaded(page, 2)
        second = await session_id_of(page)
        assert await listed(page) == {first, second}
        assert sorted(await remembered(page)) == sorted([first, second])

        # deleted elsewhere (as if expired): it drops out of the list and out of storage
        async with http.delete(f"{server.url}/sessions/{first}") as response:
            assert response.status == 200
        await page.click("#refresh-sessions")
        await list_loaded(page, 1)
        assert await listed(page) == {second}
        assert await remembered(page) == [second]

        # deleted from the page: likewise
        await page.click("#delete-session")
        await expect(page.locator("#session-id")).to_have_text("—")
        await list_loaded(page, 0)
        await expect(page.locator(LISTED)).to_have_count(0)
        await expect(page.locator("#session-list-empty")).to_be_visible()
        assert await remembered(page) == []
        assert_clean(watch)


@pytest.mark.browser
async def test_an_ordinary_key_lists_its_own_sessions_without_the_show_all_control(start_server, http):
    server = start_server(API_KEYS="key-one,key-two")
    # a session of the same key started elsewhere (another device, the CLI): it is the key's
    elsewhere = await session_of_key(http, server.url, "key-one")
    other_key = await session_of_key(http, server.url, "key-two")

    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        await enter_key(page, "key-one")
        await list_loaded(page, 1, scope="own")
        await expect(page.locator("#show-all-sessions")).to_be_hidden()
        await expect(page.locator("#show-all-control")).to_be_hidden()

        await send(page, "with an ordinary key")
        mine = await session_id_of(page)
        await list_loaded(page, 2, scope="own")
        assert await listed(page) == {mine, elsewhere}  # the server's own list, as it is
        assert other_key not in await listed(page)
        await expect(page.locator("#show-all-sessions")).to_be_hidden()
        assert watch.dialogs == [] and watch.page_errors == []
        assert all("401" in line for line in watch.console_errors)  # before the key was entered


@pytest.mark.browser
async def test_an_admin_key_gets_the_show_all_control(start_server, http):
    server = start_server(API_KEYS="user-key", ADMIN_KEYS="admin-key")
    users = await session_of_key(http, server.url, "user-key")

    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        await enter_key(page, "admin-key")
        await list_loaded(page, 1, scope="all")
        await expect(page.locator("#show-all-sessions")).to_be_visible()
        await expect(page.locator(LISTED)).to_have_count(0)  # none started here

        await show_all(page, True)
        await expect(page.locator(LISTED)).to_have_count(1)
        assert await listed(page) == {users}
        await expect(item(page, users)).to_have_attribute("data-mine", "false")
        assert watch.dialogs == [] and watch.page_errors == []
        assert all("401" in line for line in watch.console_errors)


@pytest.mark.browser
async def test_a_session_older_than_the_first_page_is_reopened_and_listed_on_request(start_server, http):
    """The listing comes a page at a time (at most 1,000 sessions): the page counts what the
    server counts, reopens its current session though it is not on the first page, and
    lists older ones with "Show older sessions"."""
    server = start_server()
    async with launch_browser() as browser:
        page, watch = await open_page(browser)
        await page.goto(f"{server.url}/demo")
        await list_loaded(page, 0)
        await page.click("#new-session")
        await list_loaded(page, 1)
        mine = await session_id_of(page)
        await expect(page.locator("#older-sessions")).to_be_hidden()

        # 1,000 newer sessions started elsewhere push this browser's own off the first page
        async def new_session() -> int:
            async with http.post(f"{server.url}/sessions/new") as response:
                status: int = response.status
                return status

        for _ in range(10):
            assert set(await asyncio.gather(*(new_session() for _ in range(100)))) == {201}
        await page.reload()
        await list_loaded(page, 1001)
        await expect(page.locator("#session-id")).to_have_text(mine)  # reopened by its id
        await expect(page.locator("#show-all-count")).to_have_text("(1001)")
        await expect(page.locator(LISTED)).to_have_count(0)  # not on the first page
        await page.click("#older-sessions")
        await expect(page.locator(LISTED)).to_have_count(1)
        assert await listed(page) == {mine}
        await expect(page.locator("#older-sessions")).to_be_hidden()  # that was the last page
        await show_all(page, True)  # lists afresh: the first page, then the older one on request
        await expect(page.locator(LISTED)).to_have_count(1000)
        await page.click("#older-sessions")
        await expect(page.locator(LISTED)).to_have_count(1001)
        assert_clean(watch)

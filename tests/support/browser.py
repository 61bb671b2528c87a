"""Debian's Chromium driven by Playwright (async API), and a watch over what a page does.

Playwright's own browser download does not work here, so the browser is the system's
``/usr/bin/chromium`` (``CHROMIUM`` in the environment may name another), launched
headless with the switches below.  Never run ``playwright install``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Dialog, Error, Page, async_playwright

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FOUND = CHROMIUM.exists()

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def launch_browser() -> AsyncIterator[Browser]:
    """Headless Chromium; closed on exit."""
    if not CHROMIUM_FOUND:
        reason = f"{CHROMIUM} is missing: apt-get install chromium (or deselect with -m 'not browser')"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs it: a missing browser there is a failure
        pytest.skip(reason)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageWatch:
    """What a page did that a test wants to see never happen: dialogs, script errors."""

    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        async def on_dialog(dialog: Dialog) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()  # an unhandled alert would block the page

        def on_page_error(error: Error) -> None:
            self.page_errors.append(str(error))

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.console_errors.append(message.text)

        page.on("dialog", on_dialog)
        page.on("pageerror", on_page_error)
        page.on("console", on_console)


async def open_page(browser: Browser, **context_options: object) -> tuple[Page, PageWatch]:
    """A new page in its own context (fresh storage), watched."""
    context = await browser.new_context(**context_options)  # type: ignore[arg-type]
    page = await context.new_page()
    watch = PageWatch()
    watch.attach(page)
    return page, watch

"""A small aiohttp app on a free loopback port: the lifecycle the test stand-ins share."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from aiohttp import web


async def start_app(app: web.Application, *, handler_cancellation: bool = False) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1 and a free port; the runner (``cleanup()`` stops it) and the URL.

    ``handler_cancellation``: a client that goes away cancels its handler (a stand-in counts it).
    """
    runner = web.AppRunner(app, access_log=None, handler_cancellation=handler_cancellation)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


class LocalApp:
    """A stand-in served on a free loopback port inside ``async with``; ``url`` is its
    address.  Subclasses add their routes in :meth:`routes`."""

    url = ""
    _runner: web.AppRunner | None = None
    handler_cancellation = False  # True: a client that goes away cancels its handler

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner, self.url = await start_app(app, handler_cancellation=self.handler_cancellation)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

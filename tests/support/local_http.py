"""A small aiohttp app on a free loopback port: the lifecycle the test stand-ins share."""

from __future__ import annotations

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

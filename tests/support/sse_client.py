"""Reading SSE responses over real HTTP in tests (aiohttp + the project's own parser)."""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from quart_sse.sse import Comment, Event, Item, Retry, SSEParser


@dataclass
class Stream:
    """Everything one response delivered, in order."""

    items: list[Item] = field(default_factory=list)
    raw: bytes = b""

    @property
    def events(self) -> list[Event]:
        return [i for i in self.items if isinstance(i, Event)]

    @property
    def data(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events]

    @property
    def ids(self) -> list[int]:
        return [int(e.id) for e in self.events if e.id is not None]

    @property
    def pings(self) -> int:
        return sum(1 for i in self.items if isinstance(i, Comment) and i.text == "ping")

    @property
    def retries(self) -> list[int]:
        return [i.ms for i in self.items if isinstance(i, Retry)]

    @property
    def text(self) -> str:
        return "".join(d["text"] for d in self.data if d["type"] == "chunk")

    @property
    def last(self) -> dict[str, Any]:
        return self.data[-1]

    @property
    def session_id(self) -> str:
        return str(self.data[0]["session_id"])


@dataclass
class _Reading:
    """Where a response's reading stopped: its parser, and the items already parsed (from
    the same read) that the last ``until`` left for the next call."""

    parser: SSEParser = field(default_factory=SSEParser)
    pending: list[Item] = field(default_factory=list)


_READINGS: weakref.WeakKeyDictionary[aiohttp.ClientResponse, _Reading] = weakref.WeakKeyDictionary()


async def read_stream(response: aiohttp.ClientResponse, *, until: Any = None) -> Stream:
    """Read ``response`` to its end, or until ``until(data)`` is true for an event.

    A later call on the same response goes on from exactly there: the events that came in
    the same read after the ``until`` one are kept for it, not dropped (one write of the
    server often carries many events)."""
    reading = _READINGS.setdefault(response, _Reading())
    out = Stream()

    def take(items: list[Item]) -> bool:
        for n, item in enumerate(items):
            out.items.append(item)
            if until is not None and isinstance(item, Event) and until(json.loads(item.data)):
                reading.pending = items[n + 1 :]
                return True
        reading.pending = []
        return False

    if take(reading.pending):
        return out
    async for chunk in response.content.iter_any():
        out.raw += chunk
        if take(reading.parser.feed(chunk)):
            return out
    return out


async def chat_stream(
    http: aiohttp.ClientSession, url: str, message: str, session_id: str | None = None, **kwargs: Any
) -> Stream:
    async with http.post(f"{url}/chat/stream", json={"message": message, "session_id": session_id}) as r:
        assert r.status == 200, await r.text()
        return await read_stream(r, **kwargs)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def still_serving(http: aiohttp.ClientSession, url: str, text: str) -> None:
    """A new conversation gets a whole answer: the failure before it left nothing stuck."""
    stream = await chat_stream(http, url, "are you still there?")
    assert stream.last["type"] == "complete", stream.data
    assert stream.text == text
    assert (await get_json(http, f"{url}/health"))["active_streams"] == 0

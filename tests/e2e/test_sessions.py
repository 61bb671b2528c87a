"""The sessions endpoints, and what deleting or clearing does to a running generation."""

from __future__ import annotations

from datetime import datetime

import pytest

from quart_sse.stores.base import activity_ms
from tests.support.sse_client import chat_stream, read_stream

SUMMARY = {"session_id", "title", "message_count", "created_at", "last_activity"}


def is_utc_iso(value):
    offset = datetime.fromisoformat(value.replace("Z", "+00:00")).utcoffset()
    return offset is not None and offset.total_seconds() == 0


async def test_create_list_read_clear_delete(server, http):
    async with http.post(f"{server.url}/sessions/new") as r:
        assert r.status == 201
        created = await r.json()
    assert set(created) == {"session_id", "model", "created_at"}
    assert created["model"] == "simulated" and is_utc_iso(created["created_at"])
    session_id = created["session_id"]
    stream = await chat_stream(http, server.url, "hello", session_id)
    assert stream.data[0]["session_id"] == session_id

    async with http.get(f"{server.url}/sessions") as r:
        listing = await r.json()
    assert set(listing) == {"sessions", "count", "next_cursor", "scope"} and listing["scope"] == "all"
    assert listing["count"] == len(listing["sessions"]) and listing["next_cursor"] is None
    assert listing["sessions"][0]["session_id"] == session_id  # the latest activity first
    (mine,) = [s for s in listing["sessions"] if s["session_id"] == session_id]
    assert set(mine) == SUMMARY
    assert (mine["message_count"], mine["title"]) == (2, "hello") and is_utc_iso(mine["last_activity"])
    assert mine["last_activity"] >= mine["created_at"]

    async with http.get(f"{server.url}/sessions/{session_id}") as r:
        detail = await r.json()
    assert {
        "session_id",
        "model",
        "created_at",
        "last_activity",
        "message_count",
        "user_messages",
        "ai_messages",
        "messages",
    } <= set(detail)
    assert [m["role"] for m in detail["messages"]] == ["user", "model"]
    assert all(is_utc_iso(m["timestamp"]) for m in detail["messages"])

    async with http.post(f"{server.url}/sessions/{session_id}/clear") as r:
        assert r.status == 200
        assert await r.json() == {"session_id": session_id, "message_count": 0}
    async with http.get(f"{server.url}/sessions/{session_id}") as r:
        assert (await r.json())["messages"] == []
    # A cleared session starts again at turn one.
    again = await chat_stream(http, server.url, "hello", session_id)
    assert again.text == stream.text

    async with http.delete(f"{server.url}/sessions/{session_id}") as r:
        assert r.status == 200
        assert await r.json() == {"deleted": session_id}
    async with http.get(f"{server.url}/sessions/{session_id}") as r:
        assert r.status == 404
    async with http.get(f"{server.url}/sessions") as r:
        assert session_id not in [s["session_id"] for s in (await r.json())["sessions"]]


async def test_deleting_or_clearing_a_session_cancels_its_generation_first(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="3600000")
    for action in ("delete", "clear"):
        async with http.post(f"{server.url}/chat/stream", json={"message": "long"}) as r:
            head = await read_stream(r, until=lambda d: d["type"] == "status")
            session_id = head.data[0]["session_id"]
            if action == "delete":
                request = http.delete(f"{server.url}/sessions/{session_id}")
            else:
                request = http.post(f"{server.url}/sessions/{session_id}/clear")
            async with request as answer:
                assert answer.status == 200
            tail = await read_stream(r)
        assert tail.last["type"] == "error" and tail.last["code"] == "cancelled"
        async with http.get(f"{server.url}/health") as r:
            assert (await r.json())["active_streams"] == 0
    # The cleared session is empty and free for a new message.
    async with http.get(f"{server.url}/sessions/{session_id}") as r:
        assert (await r.json())["message_count"] == 0


@pytest.fixture(
    name="fresh",
    params=["memory", pytest.param("redis", marks=pytest.mark.redis)],
)
def _fresh(request, start_server):
    """A server of its own (nothing listed yet), on each store."""
    if request.param == "memory":
        return start_server()
    return start_server(REDIS_URL=request.getfixturevalue("redis_server").url)


async def listing(http, url, **query):
    async with http.get(f"{url}/sessions", params=query) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def every_page(http, url, limit):
    pages, query = [], {"limit": str(limit)}
    while True:
        page = await listing(http, url, **query)
        pages.append(page)
        if page["next_cursor"] is None:
            return pages
        assert isinstance(page["next_cursor"], str) and len(pages) < 50
        query["cursor"] = page["next_cursor"]


async def test_the_listing_comes_in_pages_latest_activity_first(fresh, http):
    made = []
    for _ in range(23):
        async with http.post(f"{fresh.url}/sessions/new") as r:
            made.append((await r.json())["session_id"])
    pages = await every_page(http, fresh.url, 10)
    assert [len(p["sessions"]) for p in pages] == [10, 10, 3]
    assert {(p["count"], p["scope"]) for p in pages} == {(23, "all")}
    summaries = [s for p in pages for s in p["sessions"]]
    assert sorted(s["session_id"] for s in summaries) == sorted(made)  # each once
    assert all(set(s) == SUMMARY and (s["title"], s["message_count"]) == ("", 0) for s in summaries)
    # The order is by last activity to the millisecond (the stores' index key, on Redis a
    # sorted set's score), then by id: compare at that precision.
    keys = [(activity_ms(s["last_activity"]), s["session_id"]) for s in summaries]
    assert keys == sorted(keys, reverse=True)
    assert (await listing(http, fresh.url))["sessions"] == summaries  # default limit: 100

    # A message in the oldest session puts it first; the others keep their order.
    oldest = summaries[-1]["session_id"]
    stream = await chat_stream(http, fresh.url, "Which one is first now?", oldest)
    assert stream.last["type"] == "complete"
    first = await listing(http, fresh.url, limit="1")
    assert first["count"] == 23 and first["next_cursor"] is not None
    (top,) = first["sessions"]
    assert (top["session_id"], top["title"], top["message_count"]) == (oldest, "Which one is first now?", 2)
    assert top["last_activity"] > summaries[0]["last_activity"]
    again = [s["session_id"] for p in await every_page(http, fresh.url, 7) for s in p["sessions"]]
    assert again == [oldest] + [s["session_id"] for s in summaries[:-1]]

    # Cleared: no title, no messages, and the latest activity again.
    async with http.post(f"{fresh.url}/sessions/{made[0]}/clear") as r:
        assert r.status == 200
    (top,) = (await listing(http, fresh.url, limit="1"))["sessions"]
    assert (top["session_id"], top["title"], top["message_count"]) == (made[0], "", 0)


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "-1"},
        {"limit": "ten"},
        {"limit": "1.5"},
        {"limit": ""},
        {"limit": " 5"},
        [("limit", "5"), ("limit", "6")],
        {"cursor": ""},
        {"cursor": "not-a-cursor"},
        {"cursor": "12.7"},
        {"cursor": "12.73", "limit": "0"},
        [("cursor", "12.73"), ("cursor", "12.73")],
    ],
)
async def test_a_bad_limit_or_cursor_is_a_400(server, http, query):
    async with http.get(f"{server.url}/sessions", params=query) as r:
        assert r.status == 400
        body = await r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == "invalid_request"
    name = "limit" if "limit" in str(query) else "cursor"
    assert name in body["error"]["message"]


async def test_the_largest_limit_and_any_well_formed_cursor_are_accepted(server, http):
    whole = await listing(http, server.url, limit="1000")
    assert whole["next_cursor"] is None and len(whole["sessions"]) == whole["count"]
    assert (await listing(http, server.url, cursor="0.00"))["sessions"] == []

"""The sessions endpoints, and what deleting or clearing does to a running generation."""

from __future__ import annotations

from datetime import datetime

from tests.support.sse_client import chat_stream, read_stream


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
    assert listing["count"] == len(listing["sessions"])
    (mine,) = [s for s in listing["sessions"] if s["session_id"] == session_id]
    assert set(mine) == {"session_id", "message_count", "created_at", "last_activity"}
    assert mine["message_count"] == 2 and is_utc_iso(mine["last_activity"])
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

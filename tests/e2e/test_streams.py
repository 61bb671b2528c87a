"""The stream contract of docs/API.md over real HTTP: framing, order, multi-turn, resume, cancel."""

from __future__ import annotations

import json

import pytest

from tests.support.sse_client import chat_stream, read_stream

CHUNKS = 12  # SIM_RESPONSE_CHUNKS in tests/support/server.py


async def saved_answers(http, url, session_id):
    async with http.get(f"{url}/sessions/{session_id}") as r:
        assert r.status == 200
        return [m for m in (await r.json())["messages"] if m["role"] == "model"]


async def test_every_event_is_framed_as_api_md_says(server, http):
    async with http.post(f"{server.url}/chat/stream", json={"message": "framing"}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["X-Accel-Buffering"] == "no"
        assert "Connection" not in r.headers or r.headers["Connection"].lower() == "keep-alive"
        stream = await read_stream(r)
    # The first thing written is retry:
    assert stream.raw.startswith(b"retry: 2000\n\n")
    blocks = stream.raw.decode().split("\n\n")
    assert blocks[-1] == ""  # the response ends on an event boundary
    for block in blocks[1:-1]:
        lines = block.split("\n")
        assert [line.split(":", 1)[0] for line in lines] == ["id", "event", "data"], block
        data = json.loads(lines[2][len("data: ") :])
        assert lines[1] == f"event: {data['type']}"
    ids = stream.ids
    assert ids == sorted(set(ids)) and len(ids) == CHUNKS + 3


async def test_events_come_in_the_documented_order_with_their_fields(server, http):
    stream = await chat_stream(http, server.url, "What is streaming?")
    data = stream.data
    info, status, *chunks, complete = data
    assert info["type"] == "session_info"
    assert set(info) == {"type", "session_id", "stream_id", "model", "events_url", "durable_url"}
    assert info["model"] == "simulated"
    assert info["events_url"] == f"/streams/{info['stream_id']}/events"
    assert status == {"type": "status", "message": status["message"], "context_messages": 1}
    assert [c["chunk_number"] for c in chunks] == list(range(1, CHUNKS + 1))
    assert [c["is_final"] for c in chunks] == [False] * (CHUNKS - 1) + [True]
    assert all(c["text"] for c in chunks)
    assert complete["type"] == "complete"
    assert complete["total_chunks"] == CHUNKS
    assert complete["message_count"] == 2
    assert complete["finish_reason"] == "stop"
    assert complete["processing_time"] >= 0
    (saved,) = await saved_answers(http, server.url, info["session_id"])
    assert saved["content"] == stream.text
    assert "interrupted" not in saved


async def test_a_session_keeps_the_conversation_across_turns(server, http):
    first = await chat_stream(http, server.url, "Tell me about rivers")
    session_id = first.data[0]["session_id"]
    second = await chat_stream(http, server.url, "And about lakes?", session_id)
    assert second.data[0]["session_id"] == session_id
    assert second.data[1]["context_messages"] == 3
    assert second.last["message_count"] == 4
    # The offline model visibly uses the conversation: it names the message and the turn.
    assert "And about lakes?" in second.text and "turn number 2" in second.text
    assert "Tell me about rivers" in first.text and "turn first" in first.text
    async with http.get(f"{server.url}/sessions/{session_id}") as r:
        body = await r.json()
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "Tell me about rivers"),
        ("model", first.text),
        ("user", "And about lakes?"),
        ("model", second.text),
    ]
    assert (body["message_count"], body["user_messages"], body["ai_messages"]) == (4, 2, 2)


async def test_post_chat_answers_202_and_the_stream_reads_from_its_events_url(server, http):
    async with http.post(f"{server.url}/chat", json={"message": "via EventSource", "session_id": None}) as r:
        assert r.status == 202
        accepted = await r.json()
    assert set(accepted) == {"session_id", "stream_id", "events_url", "durable_url"}
    async with http.get(server.url + accepted["events_url"]) as r:
        assert r.status == 200
        stream = await read_stream(r)
    assert stream.data[0]["stream_id"] == accepted["stream_id"]
    assert stream.last["type"] == "complete"
    (saved,) = await saved_answers(http, server.url, accepted["session_id"])
    assert saved["content"] == stream.text


@pytest.mark.parametrize("how", ["header", "query", "both"])
async def test_resume_after_a_cut_at_chunk_3_gives_exactly_the_rest(start_server, http, how):
    server = start_server(SIM_CHUNK_DELAY_MS="10", SIM_RESPONSE_CHUNKS="30")
    async with http.post(f"{server.url}/chat/stream", json={"message": "resume me"}) as r:
        head = await read_stream(r, until=lambda d: d.get("chunk_number") == 3)
    # The connection is closed here, mid-answer.
    last_id = head.events[-1].id
    assert last_id is not None
    assert head.data[-1]["chunk_number"] == 3
    url = server.url + head.data[0]["events_url"]
    headers, params = {}, {}
    if how in ("header", "both"):
        headers["Last-Event-ID"] = last_id
    if how == "query":
        params["last_event_id"] = last_id
    if how == "both":
        params["last_event_id"] = "1"  # the header wins
    async with http.get(url, headers=headers, params=params) as r:
        assert r.status == 200
        rest = await read_stream(r)
    assert rest.retries == [2000]
    assert rest.ids == list(range(int(last_id) + 1, 30 + 4))
    chunks = [d["chunk_number"] for d in head.data + rest.data if d["type"] == "chunk"]
    assert chunks == list(range(1, 31))  # nothing missing, nothing twice
    assert rest.last["type"] == "complete" and rest.last["total_chunks"] == 30
    (saved,) = await saved_answers(http, server.url, head.data[0]["session_id"])
    assert saved["content"] == head.text + rest.text


async def test_several_readers_of_one_stream_each_get_all_of_it(server, http):
    async with http.post(f"{server.url}/chat", json={"message": "fan out"}) as r:
        accepted = await r.json()
    url = server.url + accepted["events_url"]
    streams = []
    for _ in range(3):
        async with http.get(url) as r:
            streams.append(await read_stream(r))
    assert streams[0].raw == streams[1].raw == streams[2].raw
    assert streams[0].last["type"] == "complete"


async def test_a_generation_runs_to_its_end_with_nobody_listening(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="5", SIM_RESPONSE_CHUNKS="20")
    async with http.post(f"{server.url}/chat", json={"message": "nobody listens"}) as r:
        accepted = await r.json()
    # Nobody reads the stream; the answer still lands in the session.
    async with http.get(f"{server.url}/sessions/{accepted['session_id']}") as r:
        assert r.status == 200
    answers = []
    for _ in range(1000):
        answers = await saved_answers(http, server.url, accepted["session_id"])
        if answers:
            break
        async with http.get(f"{server.url}/health"):
            pass  # each round trip lets the generation move on; no sleep needed
    assert answers, "the generation did not finish without a listener"
    async with http.get(f"{server.url}/stats") as r:
        stats = await r.json()
    assert stats["engine"]["readers"] == 0
    # Replayed later, in full.
    async with http.get(server.url + accepted["events_url"]) as r:
        replay = await read_stream(r)
    assert [d["type"] for d in replay.data][-1] == "complete"
    assert replay.text == answers[0]["content"]
    # Nothing after the final event: 204, and an EventSource stops reconnecting.
    async with http.get(
        server.url + accepted["events_url"], headers={"Last-Event-ID": replay.events[-1].id}
    ) as r:
        assert r.status == 204


async def test_cancel_ends_the_stream_and_keeps_the_partial_answer(start_server, http):
    server = start_server(SIM_CHUNK_DELAY_MS="50", SIM_RESPONSE_CHUNKS="200")
    async with http.post(f"{server.url}/chat/stream", json={"message": "long answer"}) as r:
        head = await read_stream(r, until=lambda d: d.get("chunk_number") == 2)
        stream_id = head.data[0]["stream_id"]
        async with http.post(f"{server.url}/streams/{stream_id}/cancel") as c:
            assert c.status == 200
            assert await c.json() == {"stream_id": stream_id, "cancelled": True, "status": "cancelled"}
        tail = await read_stream(r)
    last = tail.last
    assert last["type"] == "error" and last["code"] == "cancelled"
    assert last["session_id"] == head.data[0]["session_id"]
    assert [d["type"] for d in tail.data].count("error") == 1
    (saved,) = await saved_answers(http, server.url, head.data[0]["session_id"])
    assert saved["interrupted"] is True
    assert saved["content"] == head.text + tail.text
    # A second cancel finds nothing to stop; the session takes a new message.
    async with http.post(f"{server.url}/streams/{stream_id}/cancel") as c:
        # (idempotent: it answers the stream's final state)
        assert await c.json() == {"stream_id": stream_id, "cancelled": False, "status": "cancelled"}
    async with http.post(
        f"{server.url}/chat", json={"message": "again", "session_id": last["session_id"]}
    ) as c:
        assert c.status == 202


async def test_quiet_streams_carry_pings_and_busy_ones_do_not(start_server, http):
    server = start_server(HEARTBEAT_INTERVAL="0.2", SIM_CHUNK_DELAY_MS="3600000", SIM_RESPONSE_CHUNKS="3")
    async with http.post(f"{server.url}/chat/stream", json={"message": "silence"}) as r:
        parser_seen = b""
        async for chunk in r.content.iter_any():
            parser_seen += chunk
            if parser_seen.count(b": ping\n\n") >= 2:
                break
    assert parser_seen.startswith(b"retry: 2000\n\n")
    assert b"event: status" in parser_seen.split(b": ping")[0]


async def test_a_stream_faster_than_the_heartbeat_has_no_ping(start_server, http):
    server = start_server(HEARTBEAT_INTERVAL="5", SIM_CHUNK_DELAY_MS="1", SIM_RESPONSE_CHUNKS="30")
    stream = await chat_stream(http, server.url, "busy")
    assert stream.pings == 0 and stream.last["type"] == "complete"


async def test_a_finished_stream_is_dropped_after_its_retention(start_server, http):
    server = start_server(STREAM_RETENTION="0.3")
    stream = await chat_stream(http, server.url, "short-lived")
    url = server.url + stream.data[0]["events_url"]
    status = 200
    for _ in range(2000):
        async with http.get(url) as r:
            status = r.status
            await r.read()
        if status == 404:
            break
    assert status == 404
    async with http.get(f"{server.url}/stats") as r:
        assert (await r.json())["engine"]["logs"] == 0
    # The session and its answer stay.
    assert (await saved_answers(http, server.url, stream.data[0]["session_id"]))[0]["content"] == stream.text

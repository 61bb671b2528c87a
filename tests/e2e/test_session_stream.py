"""GET /sessions/{id}/events: one stream per session, turn after turn (issue 18).

On Redis, messages are sent to A and the session stream is read from B.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.redis_cluster import CLUSTER_PARAM, redis_for
from tests.support.sse_client import Stream, get_json, read_stream

TURN = 1_000_000_000


@pytest.fixture(name="pair", params=["memory", pytest.param("redis", marks=pytest.mark.redis), CLUSTER_PARAM])
def _pair(request, start_server):
    env = {"SIM_CHUNK_DELAY_MS": "20", "SIM_RESPONSE_CHUNKS": "8"}
    if request.param == "memory":
        a = start_server(**env)
        return a, a
    redis_server = redis_for(request, request.param)
    env["REDIS_URL"] = redis_server.url
    return start_server(**env), start_server(**env)


async def _session(http, url):
    async with http.post(f"{url}/sessions/new") as r:
        return (await r.json())["session_id"]


async def _chat(http, url, session_id, message):
    async with http.post(f"{url}/chat", json={"message": message, "session_id": session_id}) as r:
        assert r.status == 202, await r.text()
        return await r.json()


def _turns(stream: Stream) -> list[tuple[str, str]]:
    return [(d["type"], d.get("stream_id", "")) for d in stream.data]


def _final(d):
    return d["type"] in ("complete", "error")


async def test_two_turns_from_any_client_reach_a_reader_elsewhere_in_order(pair, http):
    a, b = pair
    session_id = await _session(http, a.url)
    async with http.get(f"{b.url}/sessions/{session_id}/events") as feed:
        assert feed.status == 200 and feed.headers["Content-Type"] == "text/event-stream"
        first = await _chat(http, a.url, session_id, "first question")
        one = await read_stream(feed, until=_final)
        second = await _chat(http, b.url, session_id, "second question")
        two = await read_stream(feed, until=_final)
    for part, accepted, text in ((one, first, "first question"), (two, second, "second question")):
        data = part.data
        assert data[0] == {
            **data[0],
            "type": "user_message",
            "stream_id": accepted["stream_id"],
            "content": text,
            "message": {**data[0]["message"], "role": "user", "content": text},
        }
        # Each event is named by its type, so that EventSource listeners get it.
        assert [e.event for e in part.events] == [d["type"] for d in data]
        assert [d["type"] for d in data] == ["user_message", "session_info", "status"] + ["chunk"] * 8 + [
            "complete"
        ]
        assert {d["stream_id"] for d in data} == {accepted["stream_id"]}
    ids = one.ids + two.ids
    assert ids == sorted(set(ids)), "strictly increasing across turns"
    assert [i // TURN for i in ids] == [1] * 12 + [2] * 12
    session = await get_json(http, f"{a.url}/sessions/{session_id}")
    assert [m["content"] for m in session["messages"] if m["role"] == "model"] == [one.text, two.text]


async def test_a_reader_without_an_id_starts_with_the_turn_being_generated(pair, http):
    a, b = pair
    session_id = await _session(http, a.url)
    accepted = await _chat(http, a.url, session_id, "already running")
    async with http.get(b.url + accepted["events_url"]) as r:
        await read_stream(r, until=lambda d: d.get("chunk_number") == 3)
    async with http.get(f"{b.url}/sessions/{session_id}/events") as feed:
        late = await read_stream(feed, until=_final)
    assert late.data[0]["type"] == "user_message" and late.data[0]["message"]["content"] == "already running"
    assert [i % TURN for i in late.ids] == list(range(0, 12))


@pytest.mark.parametrize("cut", ["mid-answer", "between turns"])
async def test_a_resume_after_a_cut_gets_every_event_exactly_once(pair, http, cut):
    a, b = pair
    session_id = await _session(http, a.url)
    async with http.get(f"{b.url}/sessions/{session_id}/events") as feed:
        await _chat(http, a.url, session_id, "one")
        if cut == "mid-answer":
            head = await read_stream(feed, until=lambda d: d.get("chunk_number") == 3)
        else:
            head = await read_stream(feed, until=_final)
    if cut == "between turns":
        await _chat(http, a.url, session_id, "two")
    headers = {"Last-Event-ID": head.events[-1].id}
    async with http.get(f"{a.url}/sessions/{session_id}/events", headers=headers) as feed:
        rest = await read_stream(feed, until=_final)
        if cut == "mid-answer":
            await _chat(http, b.url, session_id, "two")
            rest2 = await read_stream(feed, until=_final)
            rest.items += rest2.items
    ids = head.ids + rest.ids
    assert ids == sorted(set(ids)), "nothing twice, in order"
    assert [i % TURN for i in ids] == list(range(0, 12)) * 2, "nothing missed"
    assert [d["type"] for d in rest.data].count("user_message") == 1


async def test_the_session_stream_ends_when_the_session_is_deleted(pair, http):
    a, b = pair
    session_id = await _session(http, a.url)
    async with http.get(f"{b.url}/sessions/{session_id}/events") as feed:
        async with http.delete(f"{a.url}/sessions/{session_id}") as r:
            assert r.status == 200
        ended = await asyncio.wait_for(read_stream(feed), 30)
    assert ended.events == []
    async with http.get(f"{b.url}/sessions/{session_id}/events") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "session_not_found"


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis), CLUSTER_PARAM])
async def test_a_resume_older_than_the_retention_gets_one_reset(request, store, start_server, http):
    env = {"STREAM_RETENTION": "1", "SIM_CHUNK_DELAY_MS": "2"}
    if store != "memory":
        env["REDIS_URL"] = redis_for(request, store).url
    server = start_server(**env)
    session_id = await _session(http, server.url)
    async with http.get(f"{server.url}/sessions/{session_id}/events") as feed:
        await _chat(http, server.url, session_id, "soon forgotten")
        head = await read_stream(feed, until=lambda d: d.get("chunk_number") == 2)
    stream_url = f"{server.url}/streams/{head.data[0]['stream_id']}/events"
    for _ in range(600):  # until the turn's stream log has expired (a request per round)
        async with http.get(stream_url) as r:
            if r.status == 404:
                break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the stream never expired")
    headers = {"Last-Event-ID": head.events[-1].id}
    async with http.get(f"{server.url}/sessions/{session_id}/events", headers=headers) as feed:
        first = await read_stream(feed, until=lambda d: True)
        await _chat(http, server.url, session_id, "after the reset")
        rest = await read_stream(feed, until=_final)
    assert first.data == [{**first.data[0], "type": "reset", "session_id": session_id}]
    assert first.events[0].event == "reset" and first.events[0].id is None
    assert rest.data[0]["type"] == "user_message" and rest.data[0]["turn"] == 2
    assert [d["type"] for d in rest.data].count("reset") == 0


async def test_two_tabs_of_the_demo_follow_each_other_live(start_server):
    """A message typed in one tab, and its answer as it streams, show in the other; and back."""
    from playwright.async_api import expect

    from tests.e2e.test_demo import WAIT_MS, assert_clean, send, session_id_of
    from tests.support.browser import PageWatch, launch_browser, open_page

    server = start_server(SIM_CHUNK_DELAY_MS="30", SIM_RESPONSE_CHUNKS="30")
    async with launch_browser() as browser:
        first, watch = await open_page(browser)
        await first.goto(f"{server.url}/demo")
        await send(first, "typed in the first tab")
        session_id = await session_id_of(first)
        second = await first.context.new_page()  # the same storage: it opens the same session
        second_watch = PageWatch()
        second_watch.attach(second)
        await second.goto(f"{server.url}/demo")
        await expect(second.locator("#session-id")).to_have_text(session_id, timeout=WAIT_MS)
        await expect(second.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        # Typed in the second tab: the first shows it, and its answer while it streams.
        await second.fill("#message", "typed in the second tab")
        await second.click("#send")
        elsewhere = first.locator("#messages .answer[data-from=elsewhere]")
        await expect(first.locator("#messages .user[data-from=elsewhere]")).to_contain_text(
            "typed in the second tab", timeout=WAIT_MS
        )
        await expect(elsewhere.first).to_have_attribute("data-state", "streaming", timeout=WAIT_MS)
        await expect(elsewhere.first).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        await expect(elsewhere.first).to_have_attribute("data-chunks", "30")
        # And back: typed in the first, shown in the second.
        await send(first, "and once more from the first")
        await expect(second.locator("#messages .user[data-from=elsewhere]")).to_contain_text(
            "and once more from the first", timeout=WAIT_MS
        )
        back = second.locator("#messages .answer[data-from=elsewhere]")
        await expect(back.first).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        # Each tab shows every message once: 3 turns, 6 bubbles.
        for page in (first, second):
            await expect(page.locator("#messages .msg")).to_have_count(6)
        for each in (watch, second_watch):
            assert_clean(each)


async def test_a_browser_follows_a_session_with_its_key_in_the_query(start_server, http):
    # EventSource sends no headers: with API_KEYS, the session stream takes ?access_token= as
    # the stream reads do, and another key's session is the 404 an unknown one gets.
    server = start_server(API_KEYS="key-a,key-b", SIM_CHUNK_DELAY_MS="2", SIM_RESPONSE_CHUNKS="3")
    a = {"Authorization": "Bearer key-a"}
    async with http.post(f"{server.url}/sessions/new", headers=a) as r:
        session_id = (await r.json())["session_id"]
    url = f"{server.url}/sessions/{session_id}/events"
    async with http.get(url) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
    async with http.get(url, params={"access_token": "key-b"}) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "session_not_found"
    async with http.get(url, params={"access_token": "key-a"}) as feed:
        assert feed.status == 200
        async with http.post(
            f"{server.url}/chat", json={"message": "by key", "session_id": session_id}, headers=a
        ) as r:
            assert r.status == 202
        turn = await read_stream(feed, until=_final)
    assert turn.data[0]["content"] == "by key" and turn.last["type"] == "complete"
    # Other routes do not take the key from the query.
    async with http.get(f"{server.url}/sessions/{session_id}", params={"access_token": "key-a"}) as r:
        assert r.status == 401

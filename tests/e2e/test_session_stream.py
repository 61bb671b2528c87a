"""GET /sessions/{id}/events: one stream per session, turn after turn (issue 18).

On Redis, messages are sent to A and the session stream is read from B.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.redis_cluster import CLUSTER_PARAM, _ask, redis_for
from tests.support.sse_client import Stream, get_json, read_stream

TURN = 1_000_000_000


STORES = ["memory", pytest.param("redis", marks=pytest.mark.redis), CLUSTER_PARAM]


@pytest.fixture(name="pair", params=STORES)
def _pair(request, start_server):
    return _servers(request, start_server, 20)


@pytest.fixture(name="slow_pair", params=STORES)
def _slow_pair(request, start_server):
    """As ``pair``, with 250 ms between chunks: a turn still runs seconds after its third
    chunk, however loaded the machine (its end is no race for a reader that joins then)."""
    return _servers(request, start_server, 250)


def _servers(request, start_server, delay_ms):
    env = {"SIM_CHUNK_DELAY_MS": str(delay_ms), "SIM_RESPONSE_CHUNKS": "8"}
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


async def _engine(http, url, check):
    """/stats's engine figures once ``check`` holds; asks again (each round trip an event,
    not a sleep), a bounded number of times."""
    for _ in range(2000):
        async with http.get(f"{url}/stats") as r:
            counts = (await r.json())["engine"]
        if check(counts):
            return counts
    raise AssertionError(f"never held: {counts}")


def _redis_clients(ports):
    """(connected clients, clients blocked in a command such as XREAD BLOCK) on every node."""
    connected = blocked = 0
    for port in ports:
        info = _ask(port, "INFO", "clients").decode()
        figures = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        connected += int(figures["connected_clients"]) - 1  # not this connection
        blocked += int(figures["blocked_clients"])
    return connected, blocked


async def _readers_round(http, a, b, session_id, count):
    """``count`` session streams on B, a turn sent to A and read to its end by each, then
    every connection closed; B's figures once its readers are gone."""
    url = f"{b.url}/sessions/{session_id}/events"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as many:
        feeds = [await many.get(url) for _ in range(count)]
        await asyncio.gather(*(f.content.readuntil(b"\n\n") for f in feeds))  # each open
        await _chat(http, a.url, session_id, "for everyone")
        turns = await asyncio.gather(*(read_stream(f, until=_final) for f in feeds))
        assert {t.last["type"] for t in turns} == {"complete"}
        for feed in feeds:
            feed.close()
    return await _engine(http, b.url, lambda c: c["readers"] == 0 and c["session_readers"] == 0)


async def _redis_unblocked(http, b, ports):
    """Redis's (connected, blocked) clients once none is blocked, or as they are after a
    bounded number of looks (each a round trip to B and to Redis).  A wait a disconnect cut
    may go on in Redis for up to its block (a heartbeat, 1 s here) when redis-py swallowed
    its cancel; then it ends.  A reader that lost its cancel would block again and again."""
    for _ in range(3000):
        found = _redis_clients(ports)
        if found[1] == 0:
            break
        await _engine(http, b.url, lambda c: True)
    return found


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis), CLUSTER_PARAM])
async def test_many_readers_closed_after_a_turn_leave_nothing_behind(request, store, start_server, http):
    # Readers on B cut while they wait in the store (XREAD BLOCK on Redis) must end at once:
    # redis-py can swallow the cancel of a disconnect, and a write to a closed response
    # "succeeds", so a reader that lost its cancel would read the session forever.
    env = {"SIM_CHUNK_DELAY_MS": "20", "SIM_RESPONSE_CHUNKS": "8", "HEARTBEAT_INTERVAL": "1"}
    ports: list[int] = []
    if store == "memory":
        a = b = start_server(**env)
    else:
        redis_server = redis_for(request, store)
        ports = [node.port for node in getattr(redis_server, "nodes", [redis_server])]
        a, b = (
            start_server(**env, REDIS_URL=redis_server.url),
            start_server(**env, REDIS_URL=redis_server.url),
        )
    session_id = await _session(http, a.url)
    # (Under 256 on a cluster: its client's pool makes no more connections to one node.)
    count = 200 if store == "redis_cluster" else 300
    # Two rounds: the first fills the Redis clients' pools (their idle connections stay, for
    # reuse), the second's readers take connections the first's left.
    for _ in range(2):
        counts = await _readers_round(http, a, b, session_id, count)
        assert counts["waiting_readers"] == 0 and counts["heartbeat_members"] == 0
    if ports:
        connected, blocked = await _redis_unblocked(http, b, ports)
        # (The total of connected clients is no measure: redis-py's pools keep their idle
        # connections for reuse, more or fewer after each burst.)
        assert blocked == 0, f"no XREAD BLOCK left for readers that went ({connected} connected)"
        # Nothing reads for them any more: B's figures stay at zero.
        again = await _engine(http, b.url, lambda c: True)
        assert again["readers"] == 0 and again["session_readers"] == 0


async def test_a_reader_without_an_id_starts_with_the_turn_being_generated(slow_pair, http):
    a, b = slow_pair
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


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis), CLUSTER_PARAM])
async def test_after_a_reset_elsewhere_the_running_turn_follows_live(request, store, start_server, http):
    # Turn 1 expires; turn 2 runs on A; B resumes from turn 1: one reset, then turn 2 from
    # its user_message (not the turn after it).
    env = {"STREAM_RETENTION": "1", "SIM_CHUNK_DELAY_MS": "40", "SIM_RESPONSE_CHUNKS": "30"}
    if store == "memory":
        a = b = start_server(**env)
    else:
        env["REDIS_URL"] = redis_for(request, store).url
        a, b = start_server(**env), start_server(**env)
    session_id = await _session(http, a.url)
    async with http.get(f"{a.url}/sessions/{session_id}/events") as feed:
        first = await _chat(http, a.url, session_id, "soon forgotten")
        head = await read_stream(feed, until=_final)
    for _ in range(600):  # until turn 1's stream has expired (a request per round)
        async with http.get(f"{b.url}{first['events_url']}") as r:
            if r.status == 404:
                break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the stream never expired")
    second = await _chat(http, a.url, session_id, "running now")
    headers = {"Last-Event-ID": head.events[-1].id}
    async with http.get(f"{b.url}/sessions/{session_id}/events", headers=headers) as feed:
        got = await read_stream(feed, until=_final)
    assert [d["type"] for d in got.data][:2] == ["reset", "user_message"]
    assert got.data[1]["turn"] == 2 and got.data[1]["stream_id"] == second["stream_id"]
    assert got.last["type"] == "complete" and got.last["stream_id"] == second["stream_id"]
    assert [i % TURN for i in got.ids] == list(range(0, 34))


async def test_a_resume_from_zero_after_expiry_gets_the_reset_before_anything(start_server, http):
    server = start_server(STREAM_RETENTION="1", SIM_CHUNK_DELAY_MS="1", SIM_RESPONSE_CHUNKS="3")
    session_id = await _session(http, server.url)
    first = await _chat(http, server.url, session_id, "gone soon")
    for _ in range(600):
        async with http.get(f"{server.url}{first['events_url']}") as r:
            if r.status == 404:
                break
        await asyncio.sleep(0.02)
    async with http.get(f"{server.url}/sessions/{session_id}/events", headers={"Last-Event-ID": "0"}) as feed:
        got = await read_stream(feed, until=lambda d: True)
    assert [d["type"] for d in got.data] == ["reset"]


async def test_an_id_past_the_sessions_last_event_is_refused(pair, http):
    # Ids are never reused (a clear keeps counting): an id past the last event was never
    # sent, so it is the client's error, said at once (a reset would hide it).
    a, b = pair
    session_id = await _session(http, a.url)
    for _ in range(3):
        accepted = await _chat(http, a.url, session_id, "one more")
        async with http.get(a.url + accepted["events_url"]) as r:
            await read_stream(r)
    url = f"{b.url}/sessions/{session_id}/events"
    for bad in ("5000000005", "999999999999999999", str(3 * TURN + 500), str(3 * TURN + TURN // 2)):
        async with http.get(url, headers={"Last-Event-ID": bad}) as r:
            body = await r.json()
            assert r.status == 400 and body["error"]["code"] == "invalid_last_event_id", (bad, body)
            assert bad in body["error"]["message"]
    # The session's last event is a place to resume from: nothing follows yet.
    async with http.get(url, headers={"Last-Event-ID": str(3 * TURN + 11)}) as feed:
        assert feed.status == 200
        await _chat(http, a.url, session_id, "the next")
        rest = await read_stream(feed, until=_final)
    assert rest.data[0]["turn"] == 4 and [i // TURN for i in rest.ids] == [4] * 12


async def test_a_header_it_cannot_read_is_echoed_byte_for_byte(server, http):
    session_id = await _session(http, server.url)
    for path in (f"/sessions/{session_id}/events", "/streams/nope/events"):
        # Fullwidth "10": aiohttp sends it in UTF-8, six bytes the server reads as Latin-1.
        async with http.get(server.url + path, headers={"Last-Event-ID": "\uff11\uff10"}) as r:
            body = await r.json()
        assert r.status == 400 and body["error"]["code"] == "invalid_last_event_id"
        assert body["error"]["message"].endswith("'\\xef\\xbc\\x91\\xef\\xbc\\x90'"), body

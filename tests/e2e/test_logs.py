"""The server's logs on a pipe: LOG_FORMAT=json and text, the access line per request.

docs/API.md, Configuration (LOG_FORMAT, LOG_ACCESS): with ``json`` every line on standard
output is one JSON object (time in ISO 8601 UTC, level, logger, message, fields); one
access line per request, with method, route template, status, duration, client and stream
id; never the message text or an API key.  With ``text`` on a pipe the access lines are
plain text.  The server runs as a real process whose standard output is a pipe.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime

import aiohttp
import pytest

from tests.support.server import ROOT, listening_socket, server_env
from tests.support.sse_client import read_stream

KEY = "k-logs-8f3e1c2b9d"
SECRET_TEXT = "the-words-xylophone-quasar-marmalade"
STOP_TIMEOUT = 30


class PipedServer:
    """``python -m quart_sse`` with its standard output (and error) a pipe, read at the end."""

    def __init__(self, **env: str) -> None:
        sock = listening_socket()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        fd = sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "quart_sse", "--bind", f"fd://{fd}"],
            pass_fds=[fd],
            env=server_env(**env),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        sock.close()

    def stop(self) -> str:
        """SIGTERM, then everything the server wrote."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.decode("utf-8", "replace")


@pytest.fixture(name="piped")
def _piped():
    started: list[PipedServer] = []

    def start(**env: str) -> PipedServer:
        server = PipedServer(**env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()


async def some_requests(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str:
    """A streamed answer, its replay (key in the query), a 404 and a 400; the stream id."""
    body = {"message": SECRET_TEXT}
    async with http.post(f"{url}/chat/stream", json=body, headers=headers) as r:
        assert r.status == 200
        stream = await read_stream(r)
    assert stream.last["type"] == "complete"
    stream_id = stream.data[0]["stream_id"]
    async with http.get(f"{url}/streams/{stream_id}/events", params={"access_token": KEY}) as r:
        assert r.status == 200
        await r.read()
    async with http.get(f"{url}/no/such/page", headers=headers) as r:
        assert r.status == 404
    async with http.post(f"{url}/chat", data=b"not json", headers=headers) as r:
        assert r.status == 400
    return str(stream_id)


async def test_json_logs_are_one_object_per_line_with_an_access_line_per_request(piped, http):
    server = piped(LOG_FORMAT="json", LOG_LEVEL="info", API_KEYS=KEY)
    stream_id = await some_requests(http, server.url, {"Authorization": f"Bearer {KEY}"})
    output = server.stop()

    records = []
    for line in output.splitlines():
        record = json.loads(line)  # every line, or the test fails here
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= set(record), line
        moment = datetime.fromisoformat(record["time"])
        assert moment.utcoffset() == UTC.utcoffset(None), line
        records.append(record)
    assert any(r["message"] == "stream started" and r["stream_id"] == stream_id for r in records)

    access = [r for r in records if r["logger"] == "quart_sse.access"]
    # Each line is written when its response has ended: sorted, not in the order sent.
    by_route = {(r["method"], r["route"], r["status"]): r for r in access}
    assert len(access) == len(by_route) == 4, access
    assert set(by_route) == {
        ("POST", "/chat/stream", 200),
        ("GET", "/streams/{stream_id}/events", 200),
        ("GET", "unmatched", 404),
        ("POST", "/chat", 400),
    }
    for record in access:
        assert record["level"] == "INFO" and record["client"] == "127.0.0.1"
        assert isinstance(record["duration_ms"], int | float) and record["duration_ms"] >= 0
    assert by_route[("POST", "/chat/stream", 200)]["stream_id"] == stream_id
    assert by_route[("GET", "/streams/{stream_id}/events", 200)]["stream_id"] == stream_id
    not_found = by_route[("GET", "unmatched", 404)]
    assert "stream_id" not in not_found and not_found["code"] == "not_found"
    assert by_route[("POST", "/chat", 400)]["code"] == "invalid_json"

    assert SECRET_TEXT not in output
    assert KEY not in output
    assert "access_token" not in output


async def test_text_logs_on_a_pipe_carry_plain_access_lines(piped, http):
    server = piped(LOG_LEVEL="info")
    async with http.get(f"{server.url}/health") as r:
        assert r.status == 200
    async with http.get(f"{server.url}/no/such/page") as r:
        assert r.status == 404
    output = server.stop()

    # Plain text: a line of its own per request, not JSON.
    access = [line for line in output.splitlines() if " quart_sse.access: " in line]
    assert len(access) == 2, output
    prefix = r"\d\d:\d\d:\d\d INFO quart_sse\.access: GET "
    for expected in (
        r"/health 200 [\d.]+ ms 127\.0\.0\.1",
        r"unmatched 404 [\d.]+ ms 127\.0\.0\.1 not_found",
    ):
        assert any(re.fullmatch(prefix + expected, line) for line in access), (expected, access)


async def test_log_access_off_leaves_out_the_access_lines(piped, http):
    server = piped(LOG_FORMAT="json", LOG_LEVEL="info", LOG_ACCESS="off")
    async with http.get(f"{server.url}/health") as r:
        assert r.status == 200
    output = server.stop()
    loggers = [json.loads(line)["logger"] for line in output.splitlines()]
    assert "quart_sse" in loggers and "quart_sse.access" not in loggers


@pytest.mark.parametrize("message_text", ["", "1"])
async def test_debug_chunk_lines_show_text_only_with_log_message_text(piped, http, message_text):
    """README, Configuration: ``LOG_LEVEL=debug`` adds a line per chunk, with the chunk's
    length; its text (which the offline model builds from the user's message) only with
    ``LOG_MESSAGE_TEXT=1``."""
    server = piped(LOG_LEVEL="debug", LOG_MESSAGE_TEXT=message_text, SIM_RESPONSE_CHUNKS="8")
    async with http.post(f"{server.url}/chat/stream", json={"message": SECRET_TEXT}) as r:
        stream = await read_stream(r)
    assert stream.last["type"] == "complete"
    chunks = [d["text"] for d in stream.data if d["type"] == "chunk"]
    assert any("xylophone" in text for text in chunks)  # the answer quotes the message
    output = server.stop()
    lines = [line for line in output.splitlines() if "chunk #" in line]
    assert len(lines) == len(chunks), output
    for number, (line, text) in enumerate(zip(lines, chunks, strict=True), start=1):
        if message_text:
            assert line.endswith(f"chunk #{number}: {text[:60]!r}"), line
        else:
            assert line.endswith(f"chunk #{number}: {len(text)} chars"), line
    if not message_text:
        assert "xylophone" not in output

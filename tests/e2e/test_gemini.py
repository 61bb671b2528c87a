"""Gemini end to end: the real server and the real google-genai SDK against a local stand-in.

Every failure ends its stream with the right ``error`` code, and the server goes on serving.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.gemini_standin import (
    KEY,
    MODEL,
    GeminiStandIn,
    Reply,
    answer,
    chunk,
    error_body,
    failure,
)
from tests.support.server import ROOT, ServerProcess, server_env
from tests.support.sse_client import chat_stream, get_json, read_stream, still_serving

RETRIES = 2
STANDIN_TEXT = "Hello from the stand-in."  # what the stand-in answers unless told otherwise


@pytest.fixture(name="gemini")
async def _gemini() -> AsyncIterator[GeminiStandIn]:
    async with GeminiStandIn() as standin:
        yield standin


@pytest.fixture(name="serve")
def _serve(start_server: Callable[..., ServerProcess], gemini: GeminiStandIn) -> Callable[..., ServerProcess]:
    """The server on the Gemini backend, pointed at the stand-in; small retry pauses."""

    def serve(**env: str) -> ServerProcess:
        return start_server(
            **{
                "MODEL_PROVIDER": "gemini",
                "GEMINI_API_KEY": KEY,
                "GEMINI_BASE_URL": gemini.url,
                "GENAI_MODEL_ID": MODEL,
                "MODEL_RETRIES": str(RETRIES),
                "MODEL_RETRY_DELAY": "0.01",
                "SHUTDOWN_GRACE": "1",
                **env,
            }
        )

    return serve


def json_error(code: int, status: str, message: str) -> str:
    return json.dumps(error_body(code, status, message))


async def test_answer_streams_and_the_second_turn_sends_the_history(serve, gemini, http):
    server = serve(SYSTEM_PROMPT="Answer like a pirate.")
    gemini.replies.append(answer("Ahoy ", "", "there, ", "sailor."))
    first = await chat_stream(http, server.url, "hello")
    assert first.data[0]["model"] == MODEL
    assert [d["text"] for d in first.data if d["type"] == "chunk"] == ["Ahoy ", "there, ", "sailor."]
    assert first.last["type"] == "complete" and first.last["finish_reason"] == "stop"

    second = await chat_stream(http, server.url, "and again?", first.session_id)
    assert second.last["type"] == "complete"
    assert second.data[1]["context_messages"] == 3
    seen = gemini.requests[1]
    assert GeminiStandIn.contents(seen) == [
        ("user", "hello"),
        ("model", "Ahoy there, sailor."),
        ("user", "and again?"),
    ]
    # The model id, the key and the system instruction arrive as the SDK sends them.
    assert seen.path.endswith(f"/models/{MODEL}:streamGenerateContent")
    assert seen.query == {"alt": "sse"}
    assert seen.headers["x-goog-api-key"] == KEY
    assert seen.body["systemInstruction"]["parts"] == [{"text": "Answer like a pirate."}]

    for path in ("/", "/health", "/stats"):
        body = await get_json(http, server.url + path)
        assert (body["provider"], body["model"]) == ("gemini", MODEL)


async def test_a_rate_limit_is_retried_then_the_answer_streams(serve, gemini, http):
    server = serve()
    gemini.replies.extend([failure(429, "RESOURCE_EXHAUSTED", retry_after="0"), failure(503, "UNAVAILABLE")])
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "complete"
    assert stream.text == "Hello from the stand-in."
    assert len(gemini.requests) == 3


@pytest.mark.parametrize(
    ("status", "name", "code"),
    [
        (429, "RESOURCE_EXHAUSTED", "rate_limited"),
        (503, "UNAVAILABLE", "model_unavailable"),
        (500, "INTERNAL", "model_unavailable"),
    ],
)
async def test_a_model_that_keeps_refusing_ends_the_stream(serve, gemini, http, status, name, code):
    server = serve()
    gemini.replies.extend([failure(status, name, retry_after="0")] * (RETRIES + 1))
    stream = await chat_stream(http, server.url, "hello")
    assert [d["type"] for d in stream.data] == ["session_info", "status", "error"]
    assert stream.last["code"] == code
    assert f"after {RETRIES + 1} attempts" in stream.last["message"]
    assert len(gemini.requests) == RETRIES + 1
    await still_serving(http, server.url, STANDIN_TEXT)


async def test_a_bad_key_is_auth_and_the_key_is_not_repeated(serve, gemini, http):
    bad_key = "bad-key-0a1b2c3d4e"
    server = serve(GEMINI_API_KEY=bad_key)
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "error" and stream.last["code"] == "auth"
    assert "GEMINI_API_KEY" in stream.last["message"]
    assert len(gemini.requests) == 1  # not retried
    assert gemini.requests[0].headers["x-goog-api-key"] == bad_key
    again = await chat_stream(http, server.url, "hello again", stream.session_id)
    assert again.last["code"] == "auth"
    session = await get_json(http, f"{server.url}/sessions/{stream.session_id}")
    assert bad_key.encode() not in stream.raw + again.raw
    assert bad_key not in str(session) and bad_key not in server.output()
    assert (await get_json(http, f"{server.url}/health"))["status"] == "ok"


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("error event", "the model crashed"),
        ("malformed chunk", "malformed chunk"),
        ("cut connection", "broke off"),
        ("no finishReason", "cut short"),  # the body ends cleanly, but no chunk said STOP
    ],
)
async def test_a_failure_mid_answer_keeps_the_partial_answer(serve, gemini, http, how, said):
    server = serve()
    reply = Reply(frames=[chunk("Partial "), chunk("answer ")])
    if how == "error event":
        reply.frames.append(json_error(500, "INTERNAL", "the model crashed"))
    elif how == "malformed chunk":
        reply.frames += ['{"candidates": [{"content": {"parts": [{"text": "more"}]}', chunk("", "STOP")]
    elif how == "cut connection":
        reply.then = "drop"
    gemini.replies.append(reply)
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "error" and stream.last["code"] == "model_error"
    assert said in stream.last["message"]
    assert stream.text == "Partial answer "
    assert len(gemini.requests) == 1  # text was sent: never retried
    session = await get_json(http, f"{server.url}/sessions/{stream.session_id}")
    assert session["messages"][-1] == {
        "role": "model",
        "content": "Partial answer ",
        "timestamp": session["messages"][-1]["timestamp"],
        "interrupted": True,
    }
    await still_serving(http, server.url, STANDIN_TEXT)


@pytest.mark.parametrize(
    ("finish", "reason"), [("MAX_TOKENS", "max_tokens"), ("SAFETY", "safety"), ("RECITATION", "recitation")]
)
async def test_a_truncated_or_blocked_answer_tells_the_client(serve, gemini, http, finish, reason):
    server = serve()
    gemini.replies.append(answer("Once upon ", "a time", finish=finish))
    cut = await chat_stream(http, server.url, "tell me a story")
    assert cut.last["type"] == "complete" and cut.last["finish_reason"] == reason
    assert cut.text == "Once upon a time"

    gemini.replies.append(Reply(frames=[chunk(None, finish)]))  # blocked before any text
    empty = await chat_stream(http, server.url, "tell me another")
    assert empty.last["type"] == "error" and empty.last["code"] == "model_error"
    assert reason in empty.last["message"]
    await still_serving(http, server.url, STANDIN_TEXT)


async def test_a_blocked_prompt_says_so(serve, gemini, http):
    server = serve()
    gemini.replies.append(
        Reply(frames=['{"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": "gemini-test-model"}'])
    )
    stream = await chat_stream(http, server.url, "something forbidden")
    assert stream.last["type"] == "error" and stream.last["code"] == "model_error"
    assert "blocked: safety" in stream.last["message"]
    await still_serving(http, server.url, STANDIN_TEXT)


async def test_cancel_closes_the_upstream_call(serve, gemini, http):
    server = serve()
    gemini.replies.append(Reply(frames=[chunk("Thinking ")], then="hold"))
    head = await chat_stream(http, server.url, "hello", until=lambda d: d["type"] == "chunk")
    stream_id = head.data[0]["stream_id"]
    async with http.post(f"{server.url}/streams/{stream_id}/cancel") as response:
        assert (await response.json())["cancelled"] is True
    await gemini.wait_for(disconnects=1)
    async with http.get(server.url + head.data[0]["events_url"]) as response:
        replay = await read_stream(response)
    assert replay.last["code"] == "cancelled"
    assert replay.text == "Thinking "
    await still_serving(http, server.url, STANDIN_TEXT)


async def test_a_silent_model_is_cut_after_model_timeout(serve, gemini, http):
    server = serve(MODEL_TIMEOUT="0.5")
    gemini.replies.append(Reply(frames=[chunk("Half ")], then="hold"))
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "error" and stream.last["code"] == "timeout"
    assert stream.text == "Half "
    await gemini.wait_for(disconnects=1)
    await still_serving(http, server.url, STANDIN_TEXT)


async def test_an_unreachable_model_is_model_unavailable(start_server, http):
    server = start_server(
        MODEL_PROVIDER="gemini",
        GEMINI_API_KEY=KEY,
        GEMINI_BASE_URL="http://127.0.0.1:9",
        MODEL_RETRIES="1",
        MODEL_RETRY_DELAY="0.01",
    )
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "error" and stream.last["code"] == "model_unavailable"
    assert KEY not in stream.last["message"]


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"MODEL_PROVIDER": "gemini"}, "MODEL_PROVIDER=gemini needs GEMINI_API_KEY or GOOGLE_API_KEY"),
        ({"MODEL_PROVIDER": "claude"}, "MODEL_PROVIDER has value 'claude'"),
        ({"GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": "localhost:8080"}, "GEMINI_BASE_URL has value"),
    ],
)
def test_a_misconfiguration_stops_the_server_with_one_line(env, reason):
    done = subprocess.run(
        [sys.executable, "-m", "quart_sse", "--port", "0"],
        env=server_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_model_is_said_plainly_to_the_client_and_in_detail_in_the_log(
    start_server, http
):
    """docs/API.md: a model that cannot be reached ends the stream with ``model_unavailable``;
    the client's message names no address, the operator's WARNING line names it and the error."""
    port = closed_port()
    server = start_server(
        MODEL_PROVIDER="gemini",
        GEMINI_API_KEY=KEY,
        GEMINI_BASE_URL=f"http://127.0.0.1:{port}",
        GENAI_MODEL_ID=MODEL,
        MODEL_RETRIES="0",
        LOG_LEVEL="warning",
    )
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "error" and stream.last["code"] == "model_unavailable"
    message = stream.last["message"]
    assert "could not be reached" in message
    for leak in ("127.0.0.1", str(port), "Cannot connect", "http", KEY):
        assert leak not in message, (leak, message)
    log = server.output()
    warnings = [line for line in log.splitlines() if "model failure (model_unavailable)" in line]
    assert warnings, log
    assert f"127.0.0.1:{port}" in warnings[0]
    assert KEY not in log


ADDRESS = "http://10.20.30.40:9000/tpu-7"  # an upstream's internal address, quoted in its error


@pytest.mark.parametrize(
    ("how", "code", "said"),
    [
        ("refused every time", "model_unavailable", "overloaded"),
        ("refused at once", "model_error", "overloaded"),
        ("error event mid-answer", "model_error", "overloaded"),
        ("cut mid-answer", "model_error", "broke off"),
    ],
)
async def test_no_failure_shows_an_address_to_the_client_and_each_is_a_warning(
    serve, gemini, http, how, code, said
):
    server = serve()
    upstream = f"overloaded: see {ADDRESS} (node tpu-7.internal:9000, 10.20.30.40)"
    if how == "refused every time":
        gemini.replies.extend([failure(503, "UNAVAILABLE", upstream, retry_after="0")] * (RETRIES + 1))
    elif how == "refused at once":
        gemini.replies.append(failure(400, "FAILED_PRECONDITION", upstream))
    elif how == "error event mid-answer":
        gemini.replies.append(Reply(frames=[chunk("Partial "), json_error(500, "INTERNAL", upstream)]))
    else:
        gemini.replies.append(Reply(frames=[chunk("Partial ")], then="drop"))
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "error" and stream.last["code"] == code
    message = stream.last["message"]
    assert said in message
    standin = gemini.url.split("//")[1].split("/")[0]  # 127.0.0.1:PORT
    for leak in ("10.20.30.40", "tpu-7.internal", "9000", "127.0.0.1", standin, "://"):
        assert leak not in message, (leak, message)
    warnings = [line for line in server.output().splitlines() if f"model failure ({code})" in line]
    assert len(warnings) == 1, server.output()
    assert standin in warnings[0]
    if "overloaded" in said:
        assert ADDRESS in warnings[0]  # the operator gets what the model said, as it said it

"""OpenAI-compatible servers end to end: the real server against a local Ollama-like stand-in.

Every failure ends its stream with the right ``error`` code, and the server goes on serving.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.openai_standin import KEY, MODEL, OpenAIStandIn, Reply, answer, chunk, error_body, failure
from tests.support.server import ROOT, ServerProcess, server_env
from tests.support.sse_client import chat_stream, get_json, read_stream, still_serving

RETRIES = 2
STANDIN_TEXT = "Hello from the stand-in."  # what the stand-in answers unless told otherwise


@pytest.fixture(name="openai")
async def _openai() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn() as standin:
        yield standin


@pytest.fixture(name="serve")
def _serve(start_server: Callable[..., ServerProcess], openai: OpenAIStandIn) -> Callable[..., ServerProcess]:
    """The server on the OpenAI-compatible backend, pointed at the stand-in; small retry pauses."""

    def serve(**env: str) -> ServerProcess:
        return start_server(
            **{
                "MODEL_PROVIDER": "openai",
                "OPENAI_BASE_URL": openai.base_url,
                "OPENAI_API_KEY": KEY,
                "OPENAI_MODEL": MODEL,
                "MODEL_RETRIES": str(RETRIES),
                "MODEL_RETRY_DELAY": "0.01",
                "SHUTDOWN_GRACE": "1",
                **env,
            }
        )

    return serve


async def test_answer_streams_and_the_second_turn_sends_the_history(serve, openai, http):
    server = serve(SYSTEM_PROMPT="Be brief.")
    reply = answer("Hi", "", " there.")
    reply.frames[1:1] = [": ping", chunk(choices=False)]  # a comment and an event without choices
    openai.replies.append(reply)
    first = await chat_stream(http, server.url, "hello")
    assert first.data[0]["model"] == MODEL
    assert [d["text"] for d in first.data if d["type"] == "chunk"] == ["Hi", " there."]
    assert first.last["type"] == "complete" and first.last["finish_reason"] == "stop"

    second = await chat_stream(http, server.url, "and again?", first.session_id)
    assert second.last["type"] == "complete"
    seen = openai.requests[1]
    assert OpenAIStandIn.messages(seen) == [
        ("system", "Be brief."),
        ("user", "hello"),
        ("assistant", "Hi there."),
        ("user", "and again?"),
    ]
    assert seen.path == "/v1/chat/completions"
    assert (seen.body["model"], seen.body["stream"]) == (MODEL, True)
    assert seen.headers["Authorization"] == f"Bearer {KEY}"

    for path in ("/", "/health", "/stats"):
        body = await get_json(http, server.url + path)
        assert (body["provider"], body["model"]) == ("openai", MODEL)


async def test_without_a_key_no_authorization_is_sent(start_server, http):
    async with OpenAIStandIn(key=None) as ollama:
        server = start_server(MODEL_PROVIDER="openai", OPENAI_BASE_URL=ollama.base_url, OPENAI_MODEL=MODEL)
        stream = await chat_stream(http, server.url, "hello")
        assert stream.last["type"] == "complete"
        assert "Authorization" not in ollama.requests[0].headers


async def test_a_rate_limit_is_retried_then_the_answer_streams(serve, openai, http):
    server = serve()
    openai.replies.extend([failure(429, retry_after="0"), failure(502)])
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "complete"
    assert stream.text == "Hello from the stand-in."
    assert len(openai.requests) == 3


@pytest.mark.parametrize(("status", "code"), [(429, "rate_limited"), (503, "model_unavailable")])
async def test_a_server_that_keeps_refusing_ends_the_stream(serve, openai, http, status, code):
    server = serve()
    openai.replies.extend([failure(status, retry_after="0")] * (RETRIES + 1))
    stream = await chat_stream(http, server.url, "hello")
    assert [d["type"] for d in stream.data] == ["session_info", "status", "error"]
    assert stream.last["code"] == code
    assert len(openai.requests) == RETRIES + 1
    await still_serving(http, server.url, STANDIN_TEXT)


async def test_a_bad_key_is_auth_and_the_key_is_not_repeated(serve, openai, http):
    bad_key = "sk-bad-77e1f09a"
    server = serve(OPENAI_API_KEY=bad_key)
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "error" and stream.last["code"] == "auth"
    assert "OPENAI_API_KEY" in stream.last["message"]
    assert len(openai.requests) == 1
    assert bad_key.encode() not in stream.raw and bad_key not in server.output()
    assert (await get_json(http, f"{server.url}/health"))["status"] == "ok"


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("error event", "out of memory"),  # data: {"error": ...} on an HTTP 200, as vLLM does
        ("error line", "exceeds the context size"),  # llama.cpp's error: {...} field
        ("malformed JSON", "not JSON"),
        ("cut connection", "broke off"),
        ("no end marker", "cut short"),  # neither finish_reason nor [DONE], then a clean end
        ("cut inside an event", "cut short"),
    ],
)
async def test_a_failure_mid_answer_keeps_the_partial_answer(serve, openai, http, how, said):
    server = serve()
    reply = answer("Partial ", "answer ", finish=None, done=False)  # the answer stops short
    if how == "error event":
        reply.frames.append(json.dumps(error_body("out of memory", code=500)))
    elif how == "error line":
        error = {
            "code": 400,
            "message": "the request exceeds the context size",
            "type": "exceed_context_size_error",
        }
        reply.raw = f"error: {json.dumps(error)}\n\n".encode()
    elif how == "malformed JSON":
        reply.frames += ['{"choices": [{"delta": {"content": "more"}}]', "[DONE]"]
    elif how == "cut connection":
        reply.then = "drop"
    elif how == "cut inside an event":
        reply.raw = f"data: {chunk({}, 'stop')}\n".encode()  # its blank line never comes
    openai.replies.append(reply)
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "error" and stream.last["code"] == "model_error"
    assert said in stream.last["message"]
    assert stream.text == "Partial answer "
    assert len(openai.requests) == 1
    session = await get_json(http, f"{server.url}/sessions/{stream.session_id}")
    last = session["messages"][-1]
    assert (last["role"], last["content"], last["interrupted"]) == ("model", "Partial answer ", True)
    await still_serving(http, server.url, STANDIN_TEXT)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(answer("Whole ", "answer."), id="[DONE]"),
        pytest.param(answer("Whole ", "answer.", done=False), id="finish_reason then the end, no [DONE]"),
    ],
)
async def test_a_finished_answer_completes(serve, openai, http, reply):
    server = serve()
    openai.replies.append(reply)
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "complete" and stream.last["finish_reason"] == "stop"
    assert stream.text == "Whole answer."
    session = await get_json(http, f"{server.url}/sessions/{stream.session_id}")
    assert session["messages"][-1]["content"] == "Whole answer."
    assert "interrupted" not in session["messages"][-1]


async def test_an_error_line_before_any_text_keeps_its_code(serve, openai, http):
    server = serve()
    limited = Reply(frames=[chunk({"role": "assistant"})], raw=b'error: {"code": 429, "message": "busy"}\n\n')
    openai.replies.extend([limited] * (RETRIES + 1))
    stream = await chat_stream(http, server.url, "hello")
    assert [d["type"] for d in stream.data] == ["session_info", "status", "error"]
    assert stream.last["code"] == "rate_limited" and "busy" in stream.last["message"]
    assert len(openai.requests) == RETRIES + 1
    await still_serving(http, server.url, STANDIN_TEXT)


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_tokens"), ("content_filter", "safety")])
async def test_a_truncated_or_filtered_answer_tells_the_client(serve, openai, http, finish, reason):
    server = serve()
    openai.replies.append(answer("Once upon ", "a time", finish=finish))
    stream = await chat_stream(http, server.url, "tell me a story")
    assert stream.last["type"] == "complete" and stream.last["finish_reason"] == reason
    assert stream.text == "Once upon a time"
    await still_serving(http, server.url, STANDIN_TEXT)


async def test_cancel_closes_the_upstream_call(serve, openai, http):
    server = serve()
    openai.replies.append(Reply(frames=[chunk({"content": "Thinking "})], then="hold"))
    head = await chat_stream(http, server.url, "hello", until=lambda d: d["type"] == "chunk")
    async with http.post(f"{server.url}/streams/{head.data[0]['stream_id']}/cancel") as response:
        assert (await response.json())["cancelled"] is True
    await openai.wait_for(disconnects=1)
    async with http.get(server.url + head.data[0]["events_url"]) as response:
        replay = await read_stream(response)
    assert replay.last["code"] == "cancelled" and replay.text == "Thinking "
    await still_serving(http, server.url, STANDIN_TEXT)


async def test_a_silent_server_is_cut_after_model_timeout(serve, openai, http):
    server = serve(MODEL_TIMEOUT="0.5")
    openai.replies.append(Reply(frames=[chunk({"content": "Half "})], then="hold"))
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "error" and stream.last["code"] == "timeout"
    assert stream.text == "Half "
    await openai.wait_for(disconnects=1)
    await still_serving(http, server.url, STANDIN_TEXT)


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"MODEL_PROVIDER": "openai"}, "MODEL_PROVIDER=openai needs OPENAI_BASE_URL"),
        ({"MODEL_PROVIDER": "openai", "OPENAI_BASE_URL": "localhost:11434/v1"}, "OPENAI_BASE_URL has value"),
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
    url = f"http://127.0.0.1:{port}/v1"
    server = start_server(
        MODEL_PROVIDER="openai",
        OPENAI_BASE_URL=url,
        MODEL_RETRIES="0",
        LOG_LEVEL="warning",
        OPENAI_API_KEY=KEY,
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
    assert f"127.0.0.1:{port}" in warnings[0] and "ClientConnectorError" in warnings[0]
    assert KEY not in log


ADDRESS = "http://10.20.30.40:9000/gpu-7"  # an upstream's internal address, quoted in its error


@pytest.mark.parametrize(
    ("how", "code", "said"),
    [
        ("refused every time", "model_unavailable", "overloaded"),
        ("refused at once", "model_error", "overloaded"),
        ("error event mid-answer", "model_error", "overloaded"),
        ("cut mid-answer", "model_error", "broke off"),
        ("cut before any text", "model_unavailable", "is unavailable"),
    ],
)
async def test_no_failure_shows_an_address_to_the_client_and_each_is_a_warning(
    serve, openai, http, how, code, said
):
    server = serve()
    upstream = f"overloaded: see {ADDRESS} (node gpu-7.internal:9000, 10.20.30.40)"
    if how == "refused every time":
        openai.replies.extend([failure(503, upstream, retry_after="0")] * (RETRIES + 1))
    elif how == "refused at once":
        openai.replies.append(failure(400, upstream))
    elif how == "error event mid-answer":
        reply = answer("Partial ", finish=None, done=False)
        reply.frames.append(json.dumps(error_body(upstream, code=500)))
        openai.replies.append(reply)
    elif how == "cut mid-answer":
        openai.replies.append(answer("Partial ", finish=None, done=False, then="drop"))
    else:
        openai.replies.extend([answer(finish=None, done=False, then="drop")] * (RETRIES + 1))
    stream = await chat_stream(http, server.url, "hello")
    assert stream.last["type"] == "error" and stream.last["code"] == code
    message = stream.last["message"]
    assert said in message
    standin = openai.base_url.split("//")[1].split("/")[0]  # 127.0.0.1:PORT
    for leak in ("10.20.30.40", "gpu-7.internal", "9000", "127.0.0.1", standin, "://"):
        assert leak not in message, (leak, message)
    warnings = [line for line in server.output().splitlines() if f"model failure ({code})" in line]
    assert len(warnings) == 1, server.output()
    assert standin in warnings[0]
    if "overloaded" in said:
        assert ADDRESS in warnings[0]  # the operator gets what the model said, as it said it

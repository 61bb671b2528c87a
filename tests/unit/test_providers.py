"""The real backends in process, against their stand-ins: retry pauses, wire details, closing.

Pauses go through an injected ``sleep`` that records them, so that the test checks which
pause was asked for without waiting for it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from quart_sse.config import ConfigError, Settings
from quart_sse.models import Message
from quart_sse.providers import FinishReason, ProviderError, create_provider
from quart_sse.providers.gemini import GeminiProvider, to_contents
from quart_sse.providers.openai import OpenAIProvider, to_messages
from quart_sse.providers.retry import RetryPolicy, finish_reason, parse_delay, safe_text
from quart_sse.providers.simulated import SimulatedProvider
from tests.support import gemini_standin as g
from tests.support import openai_standin as o

# google-genai subclasses aiohttp.ClientSession, which aiohttp frowns upon.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

POLICY = RetryPolicy(retries=3, delay=1.0, max_delay=30.0, budget=100.0)


def history(*texts: str) -> list[Message]:
    return [Message("user" if i % 2 == 0 else "model", t, "") for i, t in enumerate(texts)]


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(name="gemini")
async def _gemini() -> AsyncIterator[g.GeminiStandIn]:
    async with g.GeminiStandIn() as standin:
        yield standin


@pytest.fixture(name="openai")
async def _openai() -> AsyncIterator[o.OpenAIStandIn]:
    async with o.OpenAIStandIn() as standin:
        yield standin


async def collect(provider: GeminiProvider | OpenAIProvider, messages: Sequence[Message]) -> list[str]:
    try:
        return [piece async for piece in provider.stream(messages)]
    finally:
        await provider.aclose()


def gemini_provider(standin: g.GeminiStandIn, sleeps: Sleeps, **kwargs: object) -> GeminiProvider:
    return GeminiProvider(g.KEY, g.MODEL, base_url=standin.url, policy=POLICY, sleep=sleeps, **kwargs)  # type: ignore[arg-type]


def openai_provider(standin: o.OpenAIStandIn, sleeps: Sleeps, **kwargs: object) -> OpenAIProvider:
    return OpenAIProvider(standin.base_url, o.MODEL, api_key=o.KEY, policy=POLICY, sleep=sleeps, **kwargs)  # type: ignore[arg-type]


# Pure parts ---------------------------------------------------------------------------------


def test_retry_pauses_follow_the_asked_delay_else_a_jittered_backoff():
    assert POLICY.pause(1, 7.0, elapsed=0) == 7.0
    for retry, base in ((1, 1.0), (2, 2.0), (3, 4.0)):
        assert base / 2 <= POLICY.pause(retry, None, elapsed=0) <= base  # type: ignore[operator]
    assert POLICY.pause(4, None, elapsed=0) is None  # retries used up
    assert POLICY.pause(1, 31.0, elapsed=0) is None  # asks for longer than max_delay
    assert POLICY.pause(1, 5.0, elapsed=96.0) is None  # would outlast the budget


def test_the_budget_stays_inside_model_timeout():
    policy = RetryPolicy.from_settings(Settings(model_timeout=8, model_retries=5, model_retry_delay=0.5))
    assert (policy.retries, policy.delay, policy.budget) == (5, 0.5, 6.0)
    assert policy.max_delay <= policy.budget


def test_parse_delay():
    assert parse_delay("3") == 3.0
    assert parse_delay("1.5s") == 1.5
    assert parse_delay(2) == 2.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 100 < parse_delay(later) <= 120  # type: ignore[operator]
    assert parse_delay("soon") is None and parse_delay(None) is None and parse_delay(True) is None


def test_finish_reasons_and_safe_text():
    assert finish_reason("STOP") is None and finish_reason(None) is None
    assert [finish_reason(r) for r in ("MAX_TOKENS", "length", "SAFETY", "content_filter", "RECITATION")] == [
        "max_tokens",
        "max_tokens",
        "safety",
        "safety",
        "recitation",
    ]
    assert safe_text("bad key sk-123\nreally", "sk-123") == "bad key [redacted] really"
    assert len(safe_text("x" * 1000)) == 200


def test_history_is_sent_without_empty_turns_and_with_roles_merged():
    turns = [*history("hi", "", "again"), Message("user", "more", "")]
    assert [(c.role, [p.text for p in c.parts or ()]) for c in to_contents(turns)] == [
        ("user", ["hi", "again", "more"]),
    ]
    assert to_messages(history("hi", "hello", "bye"), "be kind") == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"MODEL_PROVIDER": "gemini"}, "needs GEMINI_API_KEY"),
        ({"MODEL_PROVIDER": "openai"}, "needs OPENAI_BASE_URL"),
        ({"MODEL_PROVIDER": "openai", "OPENAI_BASE_URL": "ftp://x/v1"}, "OPENAI_BASE_URL has value"),
        ({"MODEL_PROVIDER": "nope"}, "expected one of"),
        ({"MODEL_RETRIES": "-1"}, "MODEL_RETRIES has value '-1'"),
    ],
)
def test_misconfigurations_are_one_line(env, reason):
    with pytest.raises(ConfigError, match=reason) as caught:
        Settings.from_env(env)
    assert "\n" not in str(caught.value)


async def test_create_provider_picks_the_backend():
    key = Settings.from_env({"GOOGLE_API_KEY": "k", "GENAI_MODEL_ID": "gemini-x"})
    gemini = create_provider(key)
    assert isinstance(gemini, GeminiProvider) and (gemini.name, gemini.model) == ("gemini", "gemini-x")
    await gemini.aclose()
    openai = create_provider(
        Settings.from_env({"MODEL_PROVIDER": "openai", "OPENAI_BASE_URL": "http://h/v1"})
    )
    assert isinstance(openai, OpenAIProvider) and (openai.name, openai.model) == ("openai", "default")
    assert isinstance(create_provider(Settings.from_env({})), SimulatedProvider)


# Gemini ------------------------------------------------------------------------------------


async def test_gemini_honours_retry_after_and_retry_info(gemini):
    retry_info = g.error_body(
        503,
        "UNAVAILABLE",
        "overloaded",
        [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"},
        ],
    )
    gemini.replies.extend(
        [
            g.failure(429, "RESOURCE_EXHAUSTED", retry_after="7"),
            g.Reply(status=503, body=retry_info),
            g.failure(500, "INTERNAL"),
        ]
    )
    sleeps = Sleeps()
    pieces = await collect(gemini_provider(gemini, sleeps), history("hi"))
    assert "".join(pieces) == "Hello from the stand-in."
    assert sleeps[:2] == [7.0, 2.5] and 2.0 <= sleeps[2] <= 4.0
    assert len(gemini.requests) == 4


async def test_gemini_gives_up_at_once_when_asked_to_wait_too_long(gemini):
    gemini.replies.append(g.failure(429, "RESOURCE_EXHAUSTED", retry_after="3600"))
    sleeps = Sleeps()
    with pytest.raises(ProviderError) as caught:
        await collect(gemini_provider(gemini, sleeps), history("hi"))
    assert caught.value.code == "rate_limited"
    assert "wait 3600 s" in caught.value.message
    assert sleeps == [] and len(gemini.requests) == 1


async def test_gemini_reports_the_finish_reason_last(gemini):
    gemini.replies.append(g.answer("a ", "b", finish="MAX_TOKENS"))
    pieces = await collect(gemini_provider(gemini, Sleeps(), system_prompt="short"), history("hi"))
    assert pieces == ["a ", "b", "max_tokens"] and type(pieces[-1]) is FinishReason
    assert (
        json.dumps(gemini.requests[0].body["systemInstruction"])
        == '{"parts": [{"text": "short"}], "role": "user"}'
    )


async def test_gemini_skips_thoughts_and_empty_pieces(gemini):
    thought = json.dumps(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"text": "pondering", "thought": True}, {"text": ""}, {"text": "Yes."}],
                    },
                    "finishReason": "STOP",
                }
            ]
        }
    )
    gemini.replies.append(g.Reply(frames=[thought]))
    assert await collect(gemini_provider(gemini, Sleeps()), history("hi")) == ["Yes."]


async def test_closing_gemini_between_pieces_closes_the_upstream_call(gemini):
    """The engine may be cancelled while the provider waits at a ``yield``, not on the network."""
    gemini.replies.append(g.Reply(frames=[g.chunk("first ")], then="hold"))
    provider = gemini_provider(gemini, Sleeps())
    pieces = provider.stream(history("hi"))
    assert await anext(pieces) == "first "
    await pieces.aclose()  # type: ignore[attr-defined]
    await gemini.wait_for(disconnects=1)
    await provider.aclose()


# OpenAI-compatible -------------------------------------------------------------------------


async def test_openai_skips_comments_empty_choices_and_role_deltas(openai):
    reply = o.answer("Hi", " there", finish="length")
    reply.frames[1:1] = [": keep-alive", o.chunk(choices=False)]
    openai.replies.append(reply)
    pieces = await collect(
        openai_provider(openai, Sleeps(), system_prompt="be brief"), history("hi", "yo", "ok")
    )
    assert pieces == ["Hi", " there", "max_tokens"]
    seen = openai.requests[0]
    assert seen.body["model"] == o.MODEL and seen.body["stream"] is True
    assert seen.headers["Authorization"] == f"Bearer {o.KEY}"
    assert o.OpenAIStandIn.messages(seen) == [
        ("system", "be brief"),
        ("user", "hi"),
        ("assistant", "yo"),
        ("user", "ok"),
    ]


async def test_openai_sends_no_authorization_without_a_key():
    async with o.OpenAIStandIn(key=None) as standin:
        provider = OpenAIProvider(standin.base_url, None, policy=POLICY, sleep=Sleeps())
        assert "".join(await collect(provider, history("hi"))) == "Hello from the stand-in."
        assert "Authorization" not in standin.requests[0].headers
        assert "model" not in standin.requests[0].body


async def test_openai_retries_with_retry_after_ms_and_error_events(openai):
    openai.replies.extend(
        [
            o.Reply(status=429, body=o.error_body("slow down"), headers={"retry-after-ms": "250"}),
            o.Reply(frames=[json.dumps({"error": {"message": "overloaded", "code": 503}})]),
        ]
    )
    sleeps = Sleeps()
    assert (
        "".join(await collect(openai_provider(openai, sleeps), history("hi"))) == "Hello from the stand-in."
    )
    assert sleeps[0] == 0.25 and 1.0 <= sleeps[1] <= 2.0  # the second retry: backoff 2 s, jittered


async def test_openai_bad_key_is_auth_without_the_key(openai):
    provider = OpenAIProvider(openai.base_url, o.MODEL, api_key="sk-wrong-123", policy=POLICY, sleep=Sleeps())
    with pytest.raises(ProviderError) as caught:
        await collect(provider, history("hi"))
    assert caught.value.code == "auth" and "sk-wrong-123" not in caught.value.message


async def test_openai_404_is_model_error_with_the_servers_words(openai):
    openai.replies.append(
        o.Reply(status=404, body={"error": 'model "llama9" not found, try pulling it first'})
    )
    with pytest.raises(ProviderError) as caught:
        await collect(openai_provider(openai, Sleeps()), history("hi"))
    assert caught.value.code == "model_error"
    assert 'model "llama9" not found' in caught.value.message


async def test_openai_unreachable_is_model_unavailable_after_the_retries():
    sleeps = Sleeps()
    provider = OpenAIProvider("http://127.0.0.1:9/v1", o.MODEL, policy=POLICY, sleep=sleeps)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, history("hi"))
    assert caught.value.code == "model_unavailable"
    assert "after 4 attempts" in caught.value.message and len(sleeps) == 3


async def test_closing_openai_between_pieces_closes_the_upstream_call(openai):
    openai.replies.append(o.Reply(frames=[o.chunk({"content": "first "})], then="hold"))
    provider = openai_provider(openai, Sleeps())
    pieces = provider.stream(history("hi"))
    assert await anext(pieces) == "first "
    await pieces.aclose()  # type: ignore[attr-defined]
    await openai.wait_for(disconnects=1)
    await provider.aclose()


async def test_openai_takes_a_line_of_any_length(openai):
    long = "x" * 300_000  # over aiohttp's readline limit (128 KiB)
    openai.replies.append(o.answer(long, "!"))
    assert await collect(openai_provider(openai, Sleeps()), history("hi")) == [long, "!"]


async def test_openai_llama_cpp_error_line_is_an_error(openai):
    # llama.cpp sends "error: {json}" alone; the stand-in writes a frame starting with ":" as is.
    error = {"code": 400, "message": "the request exceeds the available context size", "type": "x"}
    openai.replies.append(o.Reply(frames=[o.chunk({"role": "assistant"}), f": \nerror: {json.dumps(error)}"]))
    with pytest.raises(ProviderError) as caught:
        await collect(openai_provider(openai, Sleeps()), history("hi"))
    assert caught.value.code == "model_error"
    assert "400: the request exceeds the available context size" in caught.value.message


# When a stream is finished --------------------------------------------------------------------


async def drain(provider: GeminiProvider | OpenAIProvider) -> tuple[list[str], ProviderError | None]:
    """The pieces that came, and the ProviderError the stream ended with (None for a whole answer)."""
    pieces: list[str] = []
    try:
        async for piece in provider.stream(history("hi")):
            pieces.append(piece)
    except ProviderError as exc:
        return pieces, exc
    finally:
        await provider.aclose()
    return pieces, None


def finish_chunk(text: str | None = None, finish: str = "stop") -> str:
    return o.chunk({"content": text} if text is not None else {}, finish)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(o.answer("a ", "b"), id="finish_reason then [DONE]"),
        pytest.param(o.answer("a ", "b", finish=None), id="[DONE] without finish_reason"),
        pytest.param(o.answer("a ", "b", done=False), id="finish_reason then the end of the body"),
        pytest.param(
            o.Reply(frames=[o.chunk({"content": "a "}), finish_chunk("b")]),
            id="finish_reason with the last text, then the end of the body",
        ),
        pytest.param(
            o.Reply(
                frames=[
                    *o.answer("a ", "b", done=False).frames,
                    json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
                    "[DONE]",
                    o.chunk({"content": "never read"}),
                ]
            ),
            id="finish_reason, usage, [DONE], then more",
        ),
        pytest.param(
            o.Reply(frames=o.answer("a ", "b", done=False).frames, raw=b"data: [DONE]\n"),
            id="finish_reason, then a [DONE] cut before its blank line",
        ),
        pytest.param(
            o.Reply(
                frames=o.answer("a ", "b").frames,
                headers={"Content-Type": "text/event-stream; charset=utf-8"},
            ),
            id="a charset in the Content-Type",
        ),
    ],
)
async def test_openai_a_finished_stream_is_a_whole_answer(openai, reply):
    openai.replies.append(reply)
    assert await drain(openai_provider(openai, Sleeps())) == (["a ", "b"], None)


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        pytest.param(o.answer("a ", "b", finish=None, done=False), "ended without", id="neither"),
        pytest.param(
            o.Reply(frames=o.answer("a ", "b", finish=None, done=False).frames, raw=b": ping\n\n"),
            "ended without",
            id="a comment last",
        ),
        pytest.param(
            o.Reply(
                frames=o.answer("a ", "b", finish=None, done=False).frames,
                raw=f"data: {finish_chunk()}\n".encode(),
            ),
            "inside an event",
            id="the finish_reason's event cut before its blank line",
        ),
        pytest.param(
            o.Reply(frames=o.answer("a ", "b", finish=None, done=False).frames, raw=b'data: {"choi'),
            "inside an event",
            id="cut inside a line",
        ),
        pytest.param(
            o.Reply(frames=o.answer("a ", "b", finish=None, done=False).frames, raw=b"data: [DONE]"),
            "inside an event",
            id="[DONE] cut before its blank line",
        ),
    ],
)
async def test_openai_a_stream_without_its_end_marker_was_cut(openai, reply, said):
    openai.replies.append(reply)
    pieces, error = await drain(openai_provider(openai, Sleeps()))
    assert pieces == ["a ", "b"]
    assert error is not None and error.code == "model_error"
    assert "cut short" in error.message and said in error.message
    assert len(openai.requests) == 1  # text was sent: never asked again


async def test_openai_a_cut_before_any_text_is_asked_again(openai):
    cut = o.answer(finish=None, done=False)  # only the role's delta
    openai.replies.extend([cut, o.answer("whole")])
    sleeps = Sleeps()
    assert await drain(openai_provider(openai, sleeps)) == (["whole"], None)
    assert len(sleeps) == 1 and len(openai.requests) == 2

    openai.replies.extend([cut] * 4)
    sleeps = Sleeps()
    pieces, error = await drain(openai_provider(openai, sleeps))
    assert pieces == [] and error is not None and error.code == "model_error"
    assert "cut short" in error.message and "after 4 attempts" in error.message
    assert len(sleeps) == 3 and len(openai.requests) == 6


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ("{not json", "a data line that is not JSON"),
        ('{"choices": [{"delta": {"content": "x"}}]', "a data line that is not JSON"),
        ("[1, 2]", "an event that is not a JSON object"),
        ("null", "an event that is not a JSON object"),
        ('{"choices": {"0": {"delta": {"content": "x"}}}}', "choices is not a list"),
        ('{"choices": ["x"]}', "choice is not an object"),
        ('{"choices": [{"delta": "x"}]}', "delta is not an object"),
        ('{"choices": [{"delta": {"content": 5}}]}', "delta.content is not a string"),
        ('{"choices": [{"delta": {"content": ["x"]}}]}', "delta.content is not a string"),
        ('{"choices": [{"delta": {}, "finish_reason": 1}]}', "finish_reason is not a string"),
        ("[" * 100_000 + "]" * 100_000, "a data line that is not JSON"),  # too deep for json.loads
    ],
)
async def test_openai_an_event_that_is_not_a_completion_chunk_is_model_error(openai, bad, said):
    openai.replies.append(o.Reply(frames=[o.chunk({"content": "a "}), bad, finish_chunk("b"), "[DONE]"]))
    pieces, error = await drain(openai_provider(openai, Sleeps()))
    assert pieces == ["a "]
    assert error is not None and error.code == "model_error" and said in error.message


async def test_openai_a_malformed_first_event_is_not_asked_again(openai):
    openai.replies.append(o.Reply(frames=["{not json", "[DONE]"]))
    sleeps = Sleeps()
    pieces, error = await drain(openai_provider(openai, sleeps))
    assert pieces == [] and error is not None and error.code == "model_error"
    assert sleeps == [] and len(openai.requests) == 1


async def test_openai_a_200_that_is_not_an_event_stream_is_model_error(openai):
    whole = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]
    }
    openai.replies.append(
        o.Reply(raw=json.dumps(whole).encode(), headers={"Content-Type": "application/json"})
    )
    pieces, error = await drain(openai_provider(openai, Sleeps()))
    assert pieces == [] and error is not None and error.code == "model_error"
    assert "application/json, not text/event-stream" in error.message
    assert len(openai.requests) == 1

    # Event-stream framing under another name is not read either.
    openai.replies.append(o.Reply(frames=o.answer("a").frames, headers={"Content-Type": "text/plain"}))
    pieces, error = await drain(openai_provider(openai, Sleeps()))
    assert pieces == [] and error is not None and "text/plain, not text/event-stream" in error.message


async def test_openai_an_error_body_on_a_200_is_read_as_the_error(openai):
    limited = json.dumps(o.error_body("slow down", "rate_limit_error", 429)).encode()
    openai.replies.extend([o.Reply(raw=limited, headers={"Content-Type": "application/json"})] * 4)
    sleeps = Sleeps()
    pieces, error = await drain(openai_provider(openai, sleeps))
    assert pieces == [] and error is not None and error.code == "rate_limited"
    assert "slow down" in error.message
    assert len(sleeps) == 3 and len(openai.requests) == 4


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b'error: {"code": 500, "message": "the model crashed"}\n\n', "500: the model crashed"),
        (b"event: error\ndata: the model crashed\n\n", "error: the model crashed"),
        (b'event: error\ndata: {"error": {"message": "the model crashed"}}\n\n', "error: the model crashed"),
    ],
)
async def test_openai_an_error_mid_answer_is_model_error(openai, raw, said):
    openai.replies.append(o.Reply(frames=[o.chunk({"content": "a "})], raw=raw + b"data: [DONE]\n\n"))
    pieces, error = await drain(openai_provider(openai, Sleeps()))
    assert pieces == ["a "]
    assert error is not None and error.code == "model_error"
    assert "failed mid-answer" in error.message and said in error.message
    assert len(openai.requests) == 1


async def test_openai_an_error_line_before_any_text_keeps_its_code(openai):
    limited = o.Reply(
        frames=[o.chunk({"role": "assistant"})], raw=b'error: {"code": 429, "message": "busy"}\n\n'
    )
    openai.replies.extend([limited] * 4)
    sleeps = Sleeps()
    pieces, error = await drain(openai_provider(openai, sleeps))
    assert pieces == [] and error is not None and error.code == "rate_limited"
    assert len(sleeps) == 3 and len(openai.requests) == 4


async def test_gemini_a_stream_without_a_finish_reason_was_cut(gemini):
    gemini.replies.append(g.Reply(frames=[g.chunk("a "), g.chunk("b")]))
    pieces, error = await drain(gemini_provider(gemini, Sleeps()))
    assert pieces == ["a ", "b"]
    assert error is not None and error.code == "model_error"
    assert "cut short" in error.message and "finishReason" in error.message
    assert len(gemini.requests) == 1


async def test_gemini_a_finish_reason_on_a_chunk_without_text_ends_the_answer(gemini):
    gemini.replies.append(g.Reply(frames=[g.chunk("a "), g.chunk("b"), g.chunk(None, "STOP")]))
    assert await drain(gemini_provider(gemini, Sleeps())) == (["a ", "b"], None)


async def test_gemini_a_cut_before_any_text_is_asked_again(gemini):
    gemini.replies.extend([g.Reply(frames=[]), g.Reply(frames=[g.chunk("")]), g.answer("whole")])
    sleeps = Sleeps()
    assert await drain(gemini_provider(gemini, sleeps)) == (["whole"], None)
    assert len(sleeps) == 2 and len(gemini.requests) == 3

    gemini.replies.extend([g.Reply(frames=[])] * 4)
    pieces, error = await drain(gemini_provider(gemini, Sleeps()))
    assert pieces == [] and error is not None and error.code == "model_error"
    assert "cut short" in error.message and "after 4 attempts" in error.message


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        json.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": 5}]}}]}),
    ],
)
async def test_gemini_a_malformed_chunk_is_model_error(gemini, bad):
    gemini.replies.append(g.Reply(frames=[g.chunk("a "), bad, g.chunk("b", "STOP")]))
    pieces, error = await drain(gemini_provider(gemini, Sleeps()))
    assert pieces == ["a "]
    assert error is not None and error.code == "model_error" and "malformed chunk" in error.message
    assert len(gemini.requests) == 1


@pytest.mark.parametrize(
    ("upstream", "shown"),
    [
        ("see http://10.0.0.5:8000/v1/x for details", "see [address] for details"),
        ("node 10.0.0.5 is down", "node [address] is down"),
        ("node 10.0.0.5:9000 is down", "node [address] is down"),
        ("node [fd00::1]:9000 is down", "node [address] is down"),
        ("ollama.internal:11434 refused", "[address] refused"),
        ("gpu-box is out of memory", "[address] is out of memory"),  # the configured host
        ("400: the request exceeds the available context size", None),  # unchanged
        ("retry at 12:30 please", None),
        ("key sk-abc leaked", "key [redacted] leaked"),
    ],
)
def test_text_for_clients_holds_no_address_host_url_or_key(upstream, shown):
    from quart_sse.providers.retry import public_text

    assert public_text(upstream, "sk-abc", hosts=("gpu-box",)) == (shown or upstream)


def test_the_logged_address_drops_a_user_and_password():
    from quart_sse.providers.retry import address

    assert address("http://user:pw@10.0.0.5:8000/v1") == "http://10.0.0.5:8000/v1"
    assert address("https://api.example/v1") == "https://api.example/v1"

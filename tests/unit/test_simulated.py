"""The offline model: deterministic from the history, and visibly using it."""

from __future__ import annotations

from quart_sse.models import Message
from quart_sse.providers.base import LastPiece
from quart_sse.providers.simulated import SimulatedProvider, reply_for


def history(*texts: str) -> list[Message]:
    out = []
    for i, text in enumerate(texts):
        out.append(Message("user" if i % 2 == 0 else "model", text, "t"))
    return out


async def pieces(provider, h):
    return [piece async for piece in provider.stream(h)]


async def test_the_same_history_gives_the_same_answer_in_the_asked_number_of_pieces():
    provider = SimulatedProvider(chunks=25, delay_ms=0)
    first = await pieces(provider, history("What is SSE?"))
    second = await pieces(provider, history("What is SSE?"))
    assert first == second and len(first) == 25
    assert all(p.strip() for p in first)
    assert [type(p) is LastPiece for p in first] == [False] * 24 + [True]
    assert "".join(first) == reply_for(history("What is SSE?"), 25)


async def test_the_answer_names_the_latest_message_and_the_turn():
    provider = SimulatedProvider(chunks=30, delay_ms=0)
    one = "".join(await pieces(provider, history("Tell me about rivers")))
    three = "".join(await pieces(provider, history("a", "b", "c", "d", "Tell me about rivers")))
    assert "Tell me about rivers" in one and "turn first" in one
    assert "turn number 3" in three and one != three
    other = "".join(await pieces(provider, history("Tell me about lakes")))
    assert other != one and "Tell me about lakes" in other


async def test_a_long_message_is_shortened_in_the_answer_and_few_chunks_still_work():
    provider = SimulatedProvider(chunks=1, delay_ms=0)
    (only,) = await pieces(provider, history("word " * 100))
    assert "…" in only and type(only) is LastPiece

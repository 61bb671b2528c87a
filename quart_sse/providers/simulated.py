"""The built-in offline model: deterministic, readable, paced; no network, no key.

The same history always gives the same answer; a different latest message or turn count
gives a different one, and the answer names both, so that tests can compare what a stream
delivered with what the session saved, and people can see that the context is used.
``SIM_RESPONSE_CHUNKS`` pieces, ``SIM_CHUNK_DELAY_MS`` before each; with a delay of 0 it
still yields to the event loop once per piece, as a real model's network read would.
"""

from __future__ import annotations

import asyncio
import functools
import random
import zlib
from collections.abc import AsyncIterator, Sequence

from quart_sse.models import Message
from quart_sse.providers.base import LastPiece

_OPENINGS = (
    "Good question.",
    "Let me think about that.",
    "Here is how I see it.",
    "Thanks for asking.",
    "That is worth a careful answer.",
)
_SENTENCES = (
    "Streaming lets every listener see the answer grow word by word instead of waiting for the end.",
    "Each piece travels as a server-sent event with its own id, so a dropped connection loses nothing.",
    "A client that reconnects sends back the last id it saw and receives exactly what it missed.",
    "The generation keeps running on the server even when nobody is listening to it.",
    "Heartbeats keep quiet connections alive through proxies and routers.",
    "Sessions remember the conversation, so every answer can build on the turns before it.",
    "Small, steady chunks feel faster to a reader than one large block of text.",
    "Good systems degrade gently: a slow reader should never slow down anyone else.",
    "Ids that only ever increase make it easy to spot a gap or a repeat.",
    "A finished answer stays readable for a while, then the server lets it go.",
    "Offline models like this one are handy for tests and load runs because they never change their mind.",
    "Real models send text at an uneven pace, and the stream simply forwards it as it comes.",
)


def _preview(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def answer_pieces(latest: str, turn: int, n_pieces: int) -> tuple[str, ...]:
    """The answer to a conversation whose latest user message is ``latest`` at user turn ``turn``.

    Split into ``n_pieces`` pieces of a few words; joined, they are the whole answer.
    """
    seed = zlib.crc32(f"{turn}\0{latest}".encode("utf-8", "surrogatepass"))
    return _answer(seed, _preview(latest), turn, n_pieces)


@functools.lru_cache(maxsize=4096)
def _answer(seed: int, preview: str, turn: int, n_pieces: int) -> tuple[str, ...]:
    """The answer itself, cached by what it depends on: a seed and a preview of at most 60
    characters, never a whole message (so the cache is bounded in bytes, not only entries)."""
    rng = random.Random(seed)
    ordinal = "first" if turn == 1 else f"number {turn}"
    words = [
        *rng.choice(_OPENINGS).split(),
        *f"You said: “{preview}” — this is turn {ordinal} of our conversation.".split(),
    ]
    sentences = list(_SENTENCES)
    rng.shuffle(sentences)
    i = 0
    # About four words a piece, as a real model's tokens would come.
    while len(words) < 4 * n_pieces:
        words.extend(sentences[i % len(sentences)].split())
        i += 1
    pieces: list[str] = []
    start = 0
    for k in range(n_pieces):
        end = (k + 1) * len(words) // n_pieces if k < n_pieces - 1 else len(words)
        end = max(end, start + 1) if k < n_pieces - 1 else end
        pieces.append(" ".join(words[start:end]) + ("" if k == n_pieces - 1 else " "))
        start = end
    return tuple(pieces)


def reply_for(history: Sequence[Message], n_pieces: int) -> str:
    """The whole answer the offline model gives to ``history`` (for tests and load checks)."""
    latest = history[-1].content if history else ""
    turn = sum(1 for m in history if m.role == "user")
    return "".join(answer_pieces(latest, turn, n_pieces))


class _Pacer:
    """Wakes the offline model's streams on a 1 ms grid, one timer per grid slot.

    ``asyncio.sleep`` costs a timer in the loop's heap per call; a thousand streams each
    pausing 40 times a second pay that 40,000 times a second. Here every stream due in the
    same millisecond shares one timer and is woken through its own future, as a real model's
    stream is woken by its socket's read (measured: 4.7 against 1.8 us per wake). A pause
    ends at most 1 ms late, as a timer can anyway.
    """

    RESOLUTION = 0.001

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, list[asyncio.Future[None]]] = {}

    def pause(self, seconds: float) -> asyncio.Future[None]:
        slot = int((self.loop.time() + seconds) / self.RESOLUTION) + 1
        waiters = self.slots.get(slot)
        if waiters is None:
            waiters = self.slots[slot] = []
            self.loop.call_at(slot * self.RESOLUTION, self._wake, slot)
        future: asyncio.Future[None] = self.loop.create_future()
        waiters.append(future)
        return future

    def _wake(self, slot: int) -> None:
        for future in self.slots.pop(slot, ()):
            if not future.done():
                future.set_result(None)


class SimulatedProvider:
    """The offline model (``MODEL_PROVIDER=simulated``, the default without a key)."""

    name = "simulated"
    model = "simulated"

    def __init__(self, chunks: int = 30, delay_ms: float = 40.0) -> None:
        self.chunks = chunks
        self.delay = delay_ms / 1000.0
        self._pacer: _Pacer | None = None

    async def stream(self, history: Sequence[Message]) -> AsyncIterator[str]:
        latest = history[-1].content if history else ""
        turn = sum(1 for m in history if m.role == "user")
        pieces = answer_pieces(latest, turn, self.chunks)
        delay = self.delay
        last = len(pieces) - 1
        if delay <= 0:
            pause = None
        else:
            loop = asyncio.get_running_loop()
            if self._pacer is None or self._pacer.loop is not loop:
                self._pacer = _Pacer(loop)
            pause = self._pacer.pause
        for i, piece in enumerate(pieces):
            if pause is None:
                await asyncio.sleep(0)  # a bare yield to the loop, as a network read would
            else:
                await pause(delay)
            yield LastPiece(piece) if i == last else piece

    async def aclose(self) -> None:
        return None

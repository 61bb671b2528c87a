"""Streamed Markdown cut into finished top-level blocks and the unfinished tail.

An answer arrives a few words at a time.  Once a new top-level block (a paragraph, a list, a
fenced code block, a heading…) has begun on a complete line, every block before it is
finished: no later text can change how it looks, so it can be printed to the scrollback
once and never redrawn.  Only the tail, the last block, is still shown live.

Only the tail is ever parsed, so the cost of a cut does not grow with the answer's length.
What can still change a finished block is a link reference definition further down
(``[x]: https://…``); such a link then shows as the text it is written as.
"""

from __future__ import annotations

import itertools

from client.render import MARKDOWN_PARSER


def split_blocks(source: str) -> list[str]:
    """``source`` cut into its top-level blocks, each with the blank lines after it; blocks
    that are only blank lines are left out.  The printer renders each block on its own, so
    the output does not depend on which blocks were handed out together."""
    lines = source.splitlines(keepends=True)
    starts = [
        token.map[0]
        for token in MARKDOWN_PARSER.parse(source)
        if token.level == 0 and token.nesting >= 0 and token.map is not None
    ]
    bounds = [0, *(start for start in starts if start > 0), len(lines)]
    blocks = ["".join(lines[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    return [block for block in blocks if block.strip()]


class BlockSplitter:
    """Text fed in pieces; :meth:`take_finished` hands out the finished blocks' source once."""

    def __init__(self) -> None:
        self._tail = ""

    @property
    def tail(self) -> str:
        """The source not handed out yet: the unfinished last block (and what follows it)."""
        return self._tail

    def feed(self, piece: str) -> None:
        self._tail += piece

    def take_finished(self) -> str:
        """The source of the blocks finished since the last call ("" when none), in order.

        A block is finished when a later top-level block starts on a complete line (one that
        ends in a newline), so a half-written line never decides a cut.
        """
        complete = self._tail.rfind("\n")
        if complete < 0:
            return ""
        lines = self._tail[: complete + 1].splitlines(keepends=True)
        starts = [
            token.map[0]
            for token in MARKDOWN_PARSER.parse("".join(lines))
            if token.level == 0 and token.nesting >= 0 and token.map is not None
        ]
        if len(starts) < 2:
            return ""
        cut = sum(len(line) for line in lines[: starts[-1]])
        done, self._tail = self._tail[:cut], self._tail[cut:]
        return done

    def take_all(self) -> str:
        """Everything not handed out yet (the answer has ended)."""
        rest, self._tail = self._tail, ""
        return rest

"""Streamed text wrapped at word boundaries, and a status line that updates in place.

``--plain`` prints an answer as written, a few words at a time.  Left to the terminal, a
line longer than the screen breaks wherever the edge falls, inside a word.
:class:`WordWrapper` holds back the word being written until it ends (a space or a newline),
then starts a new line before it when it would not fit, as ``textwrap`` does for a whole
text.  A word wider than the screen is cut at the edge.  Widths are terminal cells
(``rich.cells.cell_len``: a CJK character or an emoji takes two).

:class:`StatusLine` is one line rewritten with a carriage return (no escape sequence, so it
suits ``--plain`` and ``NO_COLOR``): reconnection attempts update it instead of adding a
line each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

from rich.cells import cell_len

TAB = 8


class WordWrapper:
    """Feed pieces of text with :meth:`feed`; write what it returns.  ``width`` is called
    for each word, so a terminal resized mid-answer is followed."""

    def __init__(self, width: Callable[[], int]) -> None:
        self._width = width
        self._column = 0
        self._word = ""
        self._space = ""  # blanks after the last word written, written before the next one

    @property
    def column(self) -> int:
        """Cells on the current line, counting the word held back."""
        return self._column + cell_len(self._space) + cell_len(self._word)

    def feed(self, piece: str) -> str:
        out: list[str] = []
        for char in piece:
            if char == "\n":
                out.append(self._flush_word())
                self._space = ""
                out.append("\n")
                self._column = 0
            elif char in " \t":
                out.append(self._flush_word())
                if self._column == 0 and not self._word:
                    out.append(self._indent(char))  # indentation at the start of a line is kept
                else:
                    self._space += char
            else:
                self._word += char
        return "".join(out)

    def flush(self) -> str:
        """The word held back (at the end of the answer, or before a notice)."""
        out = self._flush_word()
        self._space = ""
        return out

    def _indent(self, char: str) -> str:
        step = TAB - self._column % TAB if char == "\t" else 1
        self._column += step
        return " " * step

    def _flush_word(self) -> str:
        word, self._word = self._word, ""
        if not word:
            return ""
        width = max(1, self._width())
        space = self._space.replace("\t", " ")
        self._space = ""
        out: list[str] = []
        if self._column and self._column + cell_len(space) + cell_len(word) > width:
            out.append("\n")
            self._column = 0
        elif self._column:
            out.append(space)
            self._column += cell_len(space)
        while self._column + cell_len(word) > width:  # wider than the line: cut at the edge
            room = width - self._column
            cut = 0
            while cut < len(word) and cell_len(word[: cut + 1]) <= room:
                cut += 1
            if cut == 0 and self._column == 0:
                cut = 1  # a wide character on a one-cell line
            out.append(word[:cut] + "\n")
            word = word[cut:]
            self._column = 0
        out.append(word)
        self._column += cell_len(word)
        return "".join(out)


class StatusLine:
    """One line on ``file`` rewritten in place with ``\\r``; :meth:`end` moves past it."""

    def __init__(self, file: IO[str], width: Callable[[], int]) -> None:
        self.file = file
        self._width = width
        self._shown = 0  # cells of the line shown, 0: none

    @property
    def shown(self) -> bool:
        return self._shown > 0

    def show(self, text: str) -> None:
        room = max(1, self._width() - 1)
        if cell_len(text) > room:
            while text and cell_len(text) > room - 1:
                text = text[:-1]
            text += "…"
        pad = max(0, self._shown - cell_len(text))
        self.file.write("\r" + text + " " * pad)
        self.file.flush()
        self._shown = max(1, cell_len(text))

    def end(self, text: str | None = None) -> None:
        """Leave the line (rewritten to ``text`` first, when given) and go to the next."""
        if text is not None:
            self.show(text)
        if self._shown:
            self.file.write("\n")
            self.file.flush()
            self._shown = 0

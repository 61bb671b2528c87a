"""Text from the server, the model or the user, made safe to show on a terminal.

Everything the client prints that it did not write itself goes through :func:`printable`:
C0 and C1 control characters (ESC, BEL, CR, DEL, CSI…), format characters (bidi marks and
overrides, zero-width and tag characters) and line separators become visible escapes such
as ``\\x1b`` or ``\\u202e``, so an answer cannot clear the screen, retitle the window,
forge a hyperlink or reorder what the operator reads.  Newlines and tabs are kept.  It is
then shown as a :class:`rich.text.Text` (:func:`plain`), which Rich never parses as markup,
so ``[bold]`` or ``[/]`` print as written.
"""

from __future__ import annotations

import unicodedata

from rich.style import StyleType
from rich.text import Text

_KEPT = frozenset("\t\n")
# Controls (C0, C1, DEL), format characters (bidi marks and overrides, zero-width and tag
# characters), line and paragraph separators, private-use, unassigned and surrogate code points.
_UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"))


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` with control, format and separator characters as visible escapes (``\\x1b``,
    ``\\u202e``); tabs and newlines kept."""
    text = str(text).replace("\r\n", "\n")
    if text.isprintable():
        return text
    return "".join(
        c if c in _KEPT or unicodedata.category(c) not in _UNSAFE_CATEGORIES else _escape(c) for c in text
    )


def plain(text: object, style: StyleType = "") -> Text:
    """``text`` made :func:`printable`, as a Rich ``Text``: shown as written, never as markup."""
    return Text(printable(text), style=style)

"""Text from the server, the model or the user, made safe to show on a terminal.

Everything the client prints that it did not write itself goes through :func:`printable`:
C0 and C1 control characters (ESC, BEL, CR, DEL, CSI…) and the bidirectional overrides
become visible escapes such as ``\\x1b`` or ``\\u202e``, so an answer cannot clear the
screen, retitle the window, forge a hyperlink or reorder what the operator reads.  Newlines
and tabs are kept.  It is then shown as a :class:`rich.text.Text` (:func:`plain`), which
Rich never parses as markup, so ``[bold]`` or ``[/]`` print as written.
"""

from __future__ import annotations

from rich.style import StyleType
from rich.text import Text

_KEPT = {0x09, 0x0A}  # tab and newline
_ESCAPES: dict[int, str] = {
    code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if code not in _KEPT
}
_ESCAPES.update({code: f"\\u{code:04x}" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def printable(text: object) -> str:
    """``text`` with control characters and bidi overrides as visible escapes (``\\x1b``)."""
    return str(text).replace("\r\n", "\n").translate(_ESCAPES)


def plain(text: object, style: StyleType = "") -> Text:
    """``text`` made :func:`printable`, as a Rich ``Text``: shown as written, never as markup."""
    return Text(printable(text), style=style)

"""JSON text a client sends, read strictly: the one reader of every request body that is JSON.

RFC 8259 is loose where a server cannot be: it lets a text hold duplicate member names,
numbers past any float, lone surrogate escapes (``"\\ud83d"``), and Python's :mod:`json`
is looser still (``NaN``, ``Infinity``; bytes decoded with ``surrogatepass``, so the UTF-8
form of a lone surrogate, ``ED A0 BD``, passes).  Here every one of those is refused:

- the body must be UTF-8 (RFC 8259 §8.1), decoded strictly;
- ``NaN``, ``Infinity`` and a number that overflows a float are refused (§6);
- a member name given twice in one object is refused (§4 leaves the meaning open);
- nesting past Python's recursion limit (about 1,000) is refused;
- a string (a value or a member name) with a surrogate, escaped or in its UTF-8 form, is
  refused as :class:`NotUnicode`: it cannot be written as UTF-8 (§8.2, RFC 3629 §3).

Kept here, not taken from a library: the standard library's parser does the parsing; this
module only sets its hooks, which no JSON library offers as one strict mode.
"""

from __future__ import annotations

import json
import math
from typing import Any


class NotJSON(ValueError):
    """The body is not a JSON text this server reads; ``str()`` says why, for a client."""


class NotUnicode(ValueError):
    """A string of the JSON text is not valid Unicode; ``where`` names it (a field, "a key")."""

    def __init__(self, where: str) -> None:
        super().__init__(f"{where!r} is not valid Unicode (a lone surrogate: a string cut inside an emoji?)")
        self.where = where


def _no_constant(name: str) -> Any:
    raise NotJSON(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotJSON(f"the number {text[:40]} is too large")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                shown = name[:40] if _is_unicode(name) else "a key"
                raise NotJSON(f"the member name {shown!r} appears twice in one object")
            seen.add(name)
    return value


def is_utf8(data: bytes) -> bool:
    """Whether ``data`` is UTF-8 (RFC 3629: no surrogate, no overlong form)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_unicode(value: object, name: str = "body") -> str | None:
    """The name of the first string (a field, "a key", or an array's) in ``value`` that is
    not valid Unicode; None when every one is."""
    if isinstance(value, str):
        return None if _is_unicode(value) else name
    if isinstance(value, dict):
        for key, item in value.items():
            if not _is_unicode(key):
                return "a key"
            found = _not_unicode(item, key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _not_unicode(item, name)
            if found is not None:
                return found
    return None


def loads(raw: bytes) -> Any:
    """The value of the JSON text ``raw``.  Raises :class:`NotJSON` (not UTF-8, not JSON,
    ``NaN``/``Infinity``, a number past a float, a duplicate member name, nested too deep)
    or :class:`NotUnicode` (a lone surrogate escape in a string)."""
    surrogates = False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        try:  # the UTF-8 form of a surrogate (ED A0 80 to ED BF BF): found below, as escapes are
            text, surrogates = raw.decode("utf-8", "surrogatepass"), True
        except UnicodeDecodeError:
            raise NotJSON("the body is not UTF-8 text") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique)
    except RecursionError:
        raise NotJSON("the body is JSON nested too deep") from None
    except NotJSON:
        raise
    except ValueError:
        raise NotJSON("the body is not JSON") from None
    if surrogates or "\\u" in text or "\\U" in text:  # else no string can hold a surrogate
        where = _not_unicode(value)
        if where is not None:
            raise NotUnicode(where)
    return value

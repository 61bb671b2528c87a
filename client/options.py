"""The checks on what quart-sse-chat is given (options and environment values).

Each ``check_*`` or ``parse_*`` function returns the value to use, or raises
:class:`OptionError` whose text says, in one line, what is wrong and how to fix it; ``name``
is where the value came from (``--url`` or ``QUART_SSE_URL``), so the line names what the
person typed or set.  Values are shown with ``repr``: control characters come out escaped
(``'\\x1b'``), never raw.  An API key is never shown, only the position of what is wrong.

Everything is checked before any network I/O, so a value the HTTP library would refuse
(an invalid IPv6 address, a port over 65535, a host name the resolver's IDNA codec cannot
encode, a header with a newline) or a number of seconds that makes no sense (``1e-320``) is
said here rather than as a traceback from inside a request.
"""

from __future__ import annotations

import ipaddress
import math
import re

import yarl

HTTP_SCHEMES = ("http://", "https://")
# A session id goes into request paths (/sessions/{id}): the server's ids are 32 hex digits.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
_PORT = re.compile(r"[0-9]{1,5}")
# A host of digits and dots is an IPv4 address or nothing (a top-level domain is never all digits).
_NUMERIC_HOST = re.compile(r"[0-9.]*[0-9][0-9.]*")
_MAX_LABEL = 63  # characters between dots (RFC 1035), as encoded for DNS
_MAX_HOST_NAME = 253  # characters in all, without a final dot
# Seconds: reconnection waits (--backoff, --backoff-max) and the silence that means a dead link.
BACKOFF_LEAST, BACKOFF_MOST = 0.01, 3600.0
IDLE_TIMEOUT_LEAST, IDLE_TIMEOUT_MOST = 0.1, 86400.0


class OptionError(ValueError):
    """A value that cannot be used; the text is the whole message, without the program's name."""


def _has_unsafe(text: str) -> bool:
    """Control, format or separator characters, or any whitespace."""
    return not text.isprintable() or any(c.isspace() for c in text)


def check_url(value: str, name: str = "--url") -> str:
    """``value`` when it is an http or https URL with a host and a valid port (no query or
    fragment: request paths are added to it)."""
    example = "such as http://localhost:8000"
    if _has_unsafe(value):
        raise OptionError(f"{name} must not contain spaces or control characters: {value!r}")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() + "://" not in HTTP_SCHEMES:
        raise OptionError(f"{name} must start with http:// or https://, not {value!r} ({example})")
    if "?" in rest or "#" in rest:
        raise OptionError(f"{name} must not have a query (?…) or a fragment (#…): {value!r}")
    authority = rest.partition("/")[0].rpartition("@")[2]
    if authority.startswith("["):
        address, bracket, port_part = authority[1:].partition("]")
        if not bracket:
            raise OptionError(f"{name} has an IPv6 address without its closing ']': {value!r}")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise OptionError(f"{name} has an invalid IPv6 address [{address}]: {value!r}") from None
        host = address
        if port_part and not port_part.startswith(":"):
            raise OptionError(f"{name} has text after the IPv6 address's ']': {value!r}")
        port = port_part[1:] if port_part else None
    elif authority.count(":") > 1:
        raise OptionError(
            f"{name} has an IPv6 address outside brackets: write it as http://[::1]:8000, not {value!r}"
        )
    else:
        host, colon, port_text = authority.partition(":")
        port = port_text if colon else None
    if not host:
        raise OptionError(f"{name} has no host name: {value!r} ({example})")
    if port is not None and (not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535):
        raise OptionError(f"{name} has an invalid port {port!r}: a port is a number from 1 to 65535")
    try:  # what aiohttp parses the URL with: anything else it refuses (an invalid host name…)
        parsed = yarl.URL(value)
        valid = parsed.host is not None and parsed.port is not None
    except UnicodeError as exc:  # a host name IDNA cannot encode
        raise OptionError(
            f"{name} has an invalid host name {_shown(host)} ({_reason(exc)}): {value!r}"
        ) from None
    except ValueError as exc:
        raise OptionError(f"{name} is not a valid URL ({_reason(exc)}): {value!r}") from None
    if not valid or parsed.raw_host is None:
        raise OptionError(f"{name} is not a valid URL: {value!r} ({example})")
    if not authority.startswith("["):
        _check_host(parsed.raw_host, host, name)
    return value


def _check_host(encoded: str, typed: str, name: str) -> None:
    """Refuse a host that the resolver would fail on with a traceback: ``encoded`` is the host
    as aiohttp resolves it (lower case, non-ASCII labels in IDNA's ``xn--`` form), ``typed``
    as the person wrote it.  All digits and dots must be an IPv4 address; anything else a host
    name of labels of 1 to 63 characters, at most 253 in all, that the ``idna`` codec encodes."""
    shown = _shown(typed)
    if _NUMERIC_HOST.fullmatch(encoded):
        try:
            ipaddress.IPv4Address(encoded)
        except ValueError:
            raise OptionError(
                f"{name} has {shown}, which is not a valid IPv4 address: write four numbers from 0 "
                "to 255 separated by dots, without leading zeros, such as 127.0.0.1"
            ) from None
        return
    name_part = encoded[:-1] if encoded.endswith(".") else encoded  # a final dot: a full name
    fix = "check the address, such as http://localhost:8000"
    if len(name_part) > _MAX_HOST_NAME:
        raise OptionError(
            f"{name} has a host name of {len(name_part):,} characters, more than the {_MAX_HOST_NAME} "
            f"a host name can have: {shown}; {fix}"
        )
    for label in name_part.split("."):
        if not label:
            raise OptionError(
                f"{name} has an invalid host name {shown}: a part between dots is empty "
                f"(a dot at the start, or two in a row); {fix}"
            )
        if len(label) > _MAX_LABEL:
            raise OptionError(
                f"{name} has an invalid host name {shown}: its part {_shown(label, 20)} is "
                f"{len(label)} characters long, more than the {_MAX_LABEL} allowed between dots; {fix}"
            )
    try:  # what the resolver does with it (socket.getaddrinfo)
        encoded.encode("idna")
    except UnicodeError as exc:
        raise OptionError(f"{name} has an invalid host name {shown} ({_reason(exc)}); {fix}") from None


def check_api_key(value: str, name: str = "--api-key") -> str:
    """``value`` when it can be sent in an HTTP header: printable ASCII, no spaces.  The key
    itself is never shown in the message (it is a secret): only what is wrong, and where."""
    for position, char in enumerate(value, start=1):
        if not "!" <= char <= "~":
            if char == " ":
                what = "a space"
            elif ord(char) > 0x7F and char.isprintable():
                what = f"a non-ASCII character (U+{ord(char):04X})"
            else:
                what = f"a control character {char!r}"
            hint = " (copied with a newline or carriage return?)" if char in "\r\n" else ""
            raise OptionError(
                f"{name} has {what} at position {position} of {len(value)}: an API key is printable "
                f"ASCII without spaces, as an HTTP header cannot carry anything else; check the key{hint}"
            )
    return value


def check_session(value: str, name: str = "--session") -> str:
    """``value`` when it can be a session id: letters, digits, ``-`` and ``_`` (the server's
    ids are 32 hex digits), as it goes into request paths."""
    if not _SESSION_ID.fullmatch(value):
        raise OptionError(
            f"{name} must be a session id (letters, digits, - and _, such as the 32 hex digits "
            f"/sessions lists), not {value!r}"
        )
    return value


def check_text(value: str, name: str) -> str:
    """``value`` when it is Unicode text (a command-line argument that is not UTF-8 arrives
    with lone surrogates, which cannot be sent)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
        raise OptionError(
            f"{name} is not UTF-8 text ({what} at character {exc.start + 1:,}): "
            "send text, or convert it first (iconv -t UTF-8)"
        ) from None
    return value


def parse_count(value: str, name: str) -> int:
    """A whole number, 0 or more."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise OptionError(f"{name} must be a whole number, 0 or more, not {_shown(value)}")
    return number


def parse_seconds(value: str, name: str, *, least: float, most: float) -> float:
    """A number of seconds from ``least`` to ``most``: a smaller one (``1e-320``) would
    time out or retry at once, a larger one wait for ever."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not least <= number <= most:  # also nan (no comparison holds) and ±inf
        raise OptionError(
            f"{name} must be a number of seconds from {least:g} to {most:g}, not {_shown(value)}"
        )
    return number


def check_backoff_max(cap: float, base: float, cap_name: str, base_name: str, *, cap_default: bool) -> float:
    """``cap`` when it is not less than ``base``: the longest wait cannot be shorter than the
    first.  ``cap_default``: ``cap`` is the default (not given), said as such."""
    if cap < base:
        given = f"{cap:g}, its default" if cap_default else f"{cap:g}"
        raise OptionError(
            f"{cap_name} ({given}) must not be less than {base_name} ({base:g}): "
            f"raise {cap_name} or lower {base_name}"
        )
    return cap


def _reason(exc: BaseException) -> str:
    """The first line of what ``exc`` says (cut short), or its type's name when it says nothing."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:200] or type(exc).__name__


def _shown(value: str, limit: int = 60) -> str:
    """``value`` as ``repr`` shows it, cut to about ``limit`` characters."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"

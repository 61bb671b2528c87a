"""The server's console output: text from users and models shown as text, escaped."""

from __future__ import annotations

import pytest

from quart_sse.config import Settings
from quart_sse.console import printable
from quart_sse.http.limits import Limits


@pytest.mark.parametrize(
    "char",
    [
        "\x1b",
        "\x07",
        "\x00",
        "\x9b",
        "\u202e",
        "\u200e",
        "\u061c",
        "\u2028",
        "\u200b",
        "\ufeff",
        "\U000e0041",
    ],
)
def test_controls_format_and_separator_characters_are_escaped(char):
    out = printable(f"a{char}b")
    assert char not in out and out.startswith("a\\") and out.endswith("b")


def test_ordinary_text_is_unchanged():
    text = "see [/usr/bin/env] — é 😀 x[/2]"
    assert printable(text) == text


@pytest.mark.parametrize(
    "forwarded",
    [
        "unknown",
        "[bold]evil[/]",
        "999.1.1.1",
        "1.2.3.4, unknown",
        # an IPv6 zone id takes any text: a terminal escape, or any identity a client likes
        "::1%\x1b]0;PWNED\x07\x1b[2J\x9b31m",
        "fe80::1%eth0",
    ],
)
def test_a_forwarded_for_that_is_not_an_address_is_not_believed(forwarded):
    limits = Limits(Settings(trusted_proxies=("127.0.0.1",)))
    scope = {"client": ("127.0.0.1", 5000), "headers": [(b"x-forwarded-for", forwarded.encode())]}
    assert limits.address(scope) == "127.0.0.1"


def test_a_forwarded_for_address_from_a_trusted_proxy_is_believed():
    limits = Limits(Settings(trusted_proxies=("127.0.0.1",)))
    scope = {"client": ("127.0.0.1", 5000), "headers": [(b"x-forwarded-for", b"203.0.113.9")]}
    assert limits.address(scope) == "203.0.113.9"


def test_a_forwarded_for_address_is_taken_in_its_canonical_form():
    # 0:0::1 and ::1 are one client: each spelling must not be a client of its own
    limits = Limits(Settings(trusted_proxies=("127.0.0.1",)))
    scope = {"client": ("127.0.0.1", 5000), "headers": [(b"x-forwarded-for", b"0:0:0::0:1")]}
    assert limits.address(scope) == "::1"

"""The load tests' backoff (``loadtest/backoff.py``) after requests that got no response."""

from __future__ import annotations

from loadtest.backoff import BASE, CAP, delay


def test_no_failure_no_wait():
    assert delay(0) == 0.0 and delay(-1) == 0.0


def test_the_step_doubles_up_to_the_cap_and_the_jitter_stays_within_it():
    assert [delay(n, lambda: 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert [delay(n, lambda: 0.0) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.5, 2.5]
    assert delay(10_000, lambda: 0.5) == CAP * 0.75  # no overflow far along


def test_a_user_against_a_closed_port_tries_a_few_times_a_minute_not_thousands():
    # The shortest waits the jitter allows: attempts in 60 s of a server that never answers.
    elapsed, attempts = 0.0, 0
    while elapsed < 60.0:
        attempts += 1
        elapsed += delay(attempts, lambda: 0.0)
    assert attempts <= 60.0 / (CAP / 2) + 5
    assert delay(1, lambda: 0.0) == BASE / 2

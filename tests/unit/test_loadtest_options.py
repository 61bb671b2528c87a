"""The load tests' options (``loadtest/options.py``): weights, think times, checks, casts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from loadtest import options
from loadtest.figures import Targets


class ChatterUser:
    weight = 1


class BurstUser:
    weight = 1


class OtherUser:
    weight = 7


def test_every_option_has_a_flag_and_an_environment_variable():
    for opt in options.OPTIONS:
        assert opt.flag.startswith("--") and opt.env.startswith("LOADTEST_")
    assert set(options.WEIGHTS.values()) <= {o.dest for o in options.OPTIONS}


def test_the_parser_gets_each_option_with_its_environment_variable():
    seen: list[dict[str, object]] = []

    class Parser:
        def add_argument(self, flag: str, **kw: object) -> None:
            seen.append({"flag": flag, **kw})

    options.add_options(Parser())
    assert [s["flag"] for s in seen] == [o.flag for o in options.OPTIONS]
    assert all(s["env_var"] == o.env for s, o in zip(seen, options.OPTIONS, strict=True))
    assert [s["flag"] for s in seen if s["is_secret"]] == ["--api-key"]


def test_weights_are_set_on_the_user_classes():
    opts = SimpleNamespace(chatter_weight="3", burst_weight=0)
    options.apply_weights(opts, [ChatterUser, BurstUser, OtherUser])
    assert (ChatterUser.weight, BurstUser.weight, OtherUser.weight) == (3, 0, 7)
    with pytest.raises(ValueError, match="weight 0"):
        options.apply_weights(SimpleNamespace(chatter_weight="0", burst_weight="0"), [ChatterUser, BurstUser])


def test_defaults_apply_when_an_option_is_missing():
    assert options.number(None, "think_max") == 3.0
    assert options.get(SimpleNamespace(think_max=None), "think_max") == "3"
    assert 1.0 <= options.uniform(SimpleNamespace(), "think_min", "think_max") <= 3.0
    # Reversed bounds still give a value between them.
    assert (
        2.0 <= options.uniform(SimpleNamespace(think_min="5", think_max="2"), "think_min", "think_max") <= 5.0
    )


def test_bad_values_are_named_in_one_line():
    with pytest.raises(ValueError, match="--think-min has value 'soon': not a number"):
        options.number(SimpleNamespace(think_min="soon"), "think_min")
    with pytest.raises(ValueError, match="--check-answers"):
        options.check_answers(SimpleNamespace(check_answers="maybe"))


@pytest.mark.parametrize(("mode", "expected"), [("auto", True), ("ON", True), ("off", False)])
def test_check_answers_modes(mode, expected):
    assert options.check_answers(SimpleNamespace(check_answers=mode)) is expected


def test_goodput_targets_have_defaults_and_refuse_negatives():
    assert options.targets(None) == Targets(ttft_ms=2000.0, itl_ms=100.0)
    assert options.targets(SimpleNamespace(goodput_ttft_ms="500", goodput_itl_ms="0")) == Targets(500.0, 0.0)
    with pytest.raises(ValueError, match="--goodput-ttft-ms and --goodput-itl-ms"):
        options.targets(SimpleNamespace(goodput_itl_ms="-1"))

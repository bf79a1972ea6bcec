"""Argument validation (dropout_stats._checks), at its edges: what must pass and what must not."""

import math

import numpy as np
import pytest

from dropout_stats._checks import (
    check_callable,
    check_choice,
    check_count,
    check_counts,
    check_flag,
    check_open_unit,
    check_positive,
    check_probability,
    check_rate,
)


@pytest.mark.parametrize(
    "value,want",
    [
        (0.0, 0.0),
        (0.5, 0.5),
        (np.float32(0.25), 0.25),
        (np.array(0.75), 0.75),
        (np.nextafter(1.0, 0.0), np.nextafter(1.0, 0.0)),
    ],
)
def test_rate_accepts_0_and_below_1(value, want):
    assert check_rate(value) == want


@pytest.mark.parametrize(
    "value,exc",
    [
        (1.0, ValueError),
        (-1e-300, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (True, TypeError),
        ("0.2", TypeError),
        (np.array([0.2]), TypeError),
    ],
)
def test_rate_rejects(value, exc):
    with pytest.raises(exc, match=r"^rate \("):
        check_rate(value)


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5, np.array(1.0)])
def test_probability_accepts_both_ends(value):
    assert check_probability(value) == float(value)


@pytest.mark.parametrize("value", [-1e-12, 1 + 1e-12, math.nan])
def test_probability_rejects_outside(value):
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        check_probability(value)


@pytest.mark.parametrize("value,ok", [(1e-300, True), (0.5, True), (1 - 1e-16, True), (0.0, False), (1.0, False)])
def test_open_unit_excludes_both_ends(value, ok):
    if ok:
        assert check_open_unit(value, "a") == value
    else:
        with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
            check_open_unit(value, "a")


@pytest.mark.parametrize(
    "value,ok", [(1e-300, True), (1e300, True), (0.0, False), (-1.0, False), (math.inf, False), (math.nan, False)]
)
def test_positive_is_finite_and_above_0(value, ok):
    if ok:
        assert check_positive(value, "d") == value
    else:
        with pytest.raises(ValueError, match="must be a finite number > 0"):
            check_positive(value, "d")


@pytest.mark.parametrize(
    "value,want", [(0, 0), (7, 7), (np.int64(5), 5), (np.array(3), 3), (10.0, 10), (np.array(4.0), 4)]
)
def test_count_accepts_integers_and_integral_floats(value, want):
    assert check_count(value, "n") == want and isinstance(check_count(value, "n"), int)


@pytest.mark.parametrize(
    "value,exc",
    [
        (True, TypeError),
        (False, TypeError),
        ("3", TypeError),
        (2.5, ValueError),
        (math.inf, ValueError),
        (math.nan, ValueError),
        (-1, ValueError),
    ],
)
def test_count_rejects(value, exc):
    with pytest.raises(exc, match=r"^n \("):
        check_count(value, "n")


def test_count_minimum_is_inclusive():
    assert check_count(5, "n", minimum=5) == 5
    with pytest.raises(ValueError, match=r"n \(4\) must be >= 5"):
        check_count(4, "n", minimum=5)


def test_counts_allow_k_equal_n_and_zero():
    assert check_counts(5, 5) == (5, 5) and check_counts(0, 1) == (0, 1)
    with pytest.raises(ValueError, match=r"k \(6\) must be <= n \(5\)"):
        check_counts(6, 5)
    with pytest.raises(ValueError, match=r"n \(0\) must be >= 1"):
        check_counts(0, 0)


def test_choice_flag_callable():
    assert check_choice("a", "x", ("a", "b")) == "a" and check_choice(None, "x", ("a", None)) is None
    with pytest.raises(ValueError, match=r"x \('c'\) must be one of 'a', 'b'"):
        check_choice("c", "x", ("a", "b"))
    assert check_flag(np.bool_(True), "f") is True and check_flag(False, "f") is False
    with pytest.raises(TypeError, match=r"f \(1\) must be True or False"):
        check_flag(1, "f")
    assert check_callable(len, "fn") is len
    with pytest.raises(TypeError, match=r"fn \(3\) must be callable"):
        check_callable(3, "fn")

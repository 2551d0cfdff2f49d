"""The shared argument checks: what each accepts (numpy ints too), what it refuses and how it says so."""

import math
import re

import numpy as np
import pytest
import torch

from atlaswidgets.cache import checks
from atlaswidgets.cache.checks import (ArgumentTypeError, channel_index, checked_direction, int_at_least,
                                       int_in_range, integer, is_int, is_number, non_negative_int, number,
                                       one_of, positive_int, probability, random_seed)

NOT_INTS = [True, False, np.bool_(True), 1.0, 2.5, np.float32(3), "3", None, [1], torch.tensor(1)]
NOT_NUMBERS = [True, np.bool_(False), "0.5", None, [0.5], torch.tensor(0.5)]


def test_wrong_type_is_a_type_error_and_a_value_error():
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


def test_is_int_and_is_number():
    assert all(is_int(v) for v in (0, -3, np.int64(5), np.uint8(1)))
    assert not any(is_int(v) for v in NOT_INTS)
    assert all(is_number(v) for v in (0, 2.5, np.float32(1), np.int16(3), math.nan, math.inf))
    assert not any(is_number(v) for v in NOT_NUMBERS)


@pytest.mark.parametrize("value", [0, 7, -3, np.int64(5), np.int8(-2), np.uint16(9)])
def test_integer_accepts_python_and_numpy_ints(value):
    out = integer(value, "n")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", NOT_INTS)
def test_integer_refuses_bools_floats_strings(value):
    with pytest.raises(TypeError, match=r"^level must be an int, got \w+ \(") as info:
        integer(value, "level")
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [1, 2, np.int64(10), np.int32(1)])
def test_positive_int_accepts(value):
    out = positive_int(value, "k")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -1, np.int64(0)])
def test_positive_int_refuses_small_values(value):
    with pytest.raises(ValueError, match="^" + re.escape(f"k must be a positive int, got {value!r}.") + "$") as info:
        positive_int(value, "k")
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize("value", NOT_INTS)
def test_positive_int_refuses_other_types(value):
    with pytest.raises(TypeError, match="k must be a positive int, got"):
        positive_int(value, "k")
    with pytest.raises(ValueError, match="k must be a positive int, got"):  # as before it was shared
        positive_int(value, "k")


def test_hint_is_said_in_brackets():
    with pytest.raises(ValueError, match=r"^size must be a positive int \(pixels\), got 0\.$"):
        positive_int(0, "size", "pixels")
    with pytest.raises(ValueError, match=r"^n must be an int >= 1 \(how many cells\), got 0\.$"):
        int_at_least(0, "n", 1, "how many cells")


@pytest.mark.parametrize("low,value", [(0, 0), (2, 2), (2, np.int64(3)), (-5, -5), (8, 64)])
def test_int_at_least_accepts(low, value):
    assert int_at_least(value, "x", low) == value


def test_int_at_least_refuses():
    with pytest.raises(ValueError, match=r"^folds must be an int >= 2, got 1\.$"):
        int_at_least(1, "folds", 2)
    with pytest.raises(ValueError, match="^" + re.escape(f"size must be an int >= 8, got {np.int64(4)!r}.") + "$"):
        int_at_least(np.int64(4), "size", 8)
    for bad in NOT_INTS:
        with pytest.raises(TypeError, match="steps must be an int >= 1, got"):
            int_at_least(bad, "steps", 1)


def test_non_negative_int():
    assert non_negative_int(0, "rank") == 0 and non_negative_int(np.uint8(3), "rank") == 3
    with pytest.raises(ValueError, match=r"^rank must be an int >= 0, got -1\.$"):
        non_negative_int(-1, "rank")
    with pytest.raises(TypeError, match="rank must be an int >= 0, got True"):
        non_negative_int(True, "rank")


def test_int_in_range_includes_both_ends():
    assert int_in_range(1, "levels", 1, 6) == 1 and int_in_range(np.int16(6), "levels", 1, 6) == 6
    for bad in (0, 7, np.int64(-1)):
        with pytest.raises(ValueError, match=r"levels must be an int in \[1, 6\] \(level k\), got"):
            int_in_range(bad, "levels", 1, 6, "level k")
    for bad in NOT_INTS:
        with pytest.raises(TypeError, match=r"levels must be an int in \[1, 6\], got"):
            int_in_range(bad, "levels", 1, 6)


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.25), np.float64(1.0), np.int64(1)])
def test_number_in_a_half_open_range(value):
    out = number(value, "crop", 0, 1, low_open=True)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.5, math.nan, math.inf, -math.inf])
def test_number_refuses_values_outside_or_not_finite(value):
    with pytest.raises(ValueError, match=r"^crop must be a number in \(0, 1\], got"):
        number(value, "crop", 0, 1, low_open=True)


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_number_refuses_other_types(value):
    with pytest.raises(TypeError, match="fill must be a finite number, got"):
        number(value, "fill")


def test_number_says_its_bounds():
    assert number(0, "alpha", 0) == 0.0
    with pytest.raises(ValueError, match=r"^alpha must be a number >= 0, got -1\.$"):
        number(-1, "alpha", 0)
    with pytest.raises(ValueError, match=r"^lr must be a number > 0, got 0\.$"):
        number(0, "lr", 0, low_open=True)
    with pytest.raises(ValueError, match=r"^t must be a number < 2, got 2\.$"):
        number(2, "t", high=2, high_open=True)
    with pytest.raises(ValueError, match=r"^t must be a number in \[-1, 2\), got 2\.$"):
        number(2, "t", -1, 2, high_open=True)
    with pytest.raises(ValueError, match=r"^fill must be a finite number, got nan\.$"):
        number(math.nan, "fill")


def test_probability():
    assert probability(0, "q") == 0.0 and probability(np.float32(1), "q") == 1.0
    for bad in (-0.01, 1.01, math.nan):
        with pytest.raises(ValueError, match=r"q must be a number in \[0, 1\], got"):
            probability(bad, "q")
    with pytest.raises(TypeError, match=r"q must be a number in \[0, 1\], got True"):
        probability(True, "q")


def test_one_of():
    assert one_of("rows", "source", ("auto", "stats", "rows")) == "rows"
    assert one_of(np.str_("auto"), "source", ("auto", "stats")) == "auto"
    with pytest.raises(ValueError, match=r"^source must be one of \['auto', 'stats'\], got 'Auto'\.$"):
        one_of("Auto", "source", ("auto", "stats"))
    with pytest.raises(ValueError, match="must be one of"):
        one_of(np.array(["auto", "stats"]), "source", ("auto", "stats"))  # no elementwise comparison
    with pytest.raises(ValueError, match="must be one of"):
        one_of(1, "kind", ("1", "2"))  # no match across types
    with pytest.raises(ValueError, match=r"icons must be one of \['a'\] \(see ICON_KINDS\)"):
        one_of(None, "icons", ["a"], "see ICON_KINDS")


def test_random_seed():
    assert random_seed(0) == 0 and random_seed(np.uint32(7)) == 7 and random_seed(2**40) == 2**40
    assert random_seed(None, optional=True) is None
    with pytest.raises(ValueError, match=r"^seed must be an int >= 0, got -1\.$"):
        random_seed(-1)
    with pytest.raises(TypeError, match=r"^noise_seed must be an int >= 0, got None\.$"):
        random_seed(None, "noise_seed")
    with pytest.raises(TypeError, match="seed must be an int >= 0, got 1.5"):
        random_seed(1.5)
    assert random_seed(2**32 - 1, high=2**32) == 2**32 - 1
    with pytest.raises(ValueError, match=r"^seed must be an int in \[0, 2\*\*32\) or None, got 4294967296\.$"):
        random_seed(2**32, high=2**32, optional=True)
    with pytest.raises(TypeError, match=r"seed must be an int in \[0, 2\*\*32\), got True"):
        random_seed(True, high=2**32)


def test_channel_index():
    assert channel_index(np.int64(3), 4, "conv") == 3 and channel_index(0, 1) == 0
    with pytest.raises(ValueError, match=r"^channel 4 is out of range: layer 'conv' has channels 0\.\.3\.$"):
        channel_index(4, 4, "conv")
    with pytest.raises(ValueError, match=r"^channel -1 is out of range: this layer has channels 0\.\.3\.$"):
        channel_index(-1, 4)
    with pytest.raises(TypeError, match=r"^channel must be an int, got float \(1\.0\)\.$"):
        channel_index(1.0, 4)
    with pytest.raises(TypeError, match="channel must be an int, got bool"):
        channel_index(True, 4)


def test_checked_direction_is_the_cache_one():
    from atlaswidgets.cache import cache
    assert cache.checked_direction is checked_direction
    w = torch.ones(3, requires_grad=True)
    d = checked_direction(w, 3, "fc")
    assert d.dtype == torch.float32 and not d.requires_grad
    assert checked_direction(np.array([1, 0, 0]), 3, "fc").tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(TypeError, match="must be a tensor or array of 3 numbers.*got str"):
        checked_direction("abc", 3, "fc")
    with pytest.raises(ValueError, match=r"must have shape \(3,\), got \(2,\)"):
        checked_direction([1.0, 2.0], 3, "fc")
    with pytest.raises(ValueError, match="all zeros"):
        checked_direction([0, 0, 0], 3, "fc")
    with pytest.raises(ValueError, match="NaN or infinite"):
        checked_direction([0, math.inf, 0], 3, "fc")


def test_every_public_name_is_listed():
    public = {n for n in vars(checks) if not n.startswith("_") and callable(getattr(checks, n))
              and getattr(getattr(checks, n), "__module__", None) == checks.__name__}
    assert public == set(checks.__all__)

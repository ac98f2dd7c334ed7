"""golden/requant.py: the three requantization rules against independent references.

The references here are written from the rules' definitions with ``fractions.Fraction`` (exact
rationals) and Python's built-in rounding, never with the golden code paths.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from bitmod.golden.fixedpoint import cast_fixed
from bitmod.golden.requant import (
    INT32_MAX,
    INT32_MIN,
    ROUNDING_RULES,
    dyadic_from_scale,
    requantize,
    rounded_shift,
    rounding_divide_by_pot,
    srdhm,
)

HALF = Fraction(1, 2)


def floor_half_up(x: Fraction) -> int:
    return math.floor(x + HALF)


def half_away(x: Fraction) -> int:
    return floor_half_up(x) if x >= 0 else -floor_half_up(-x)


def ref_hawq(q: int, b: int, c: int) -> int:
    # Fraction.__round__ without digits rounds half to even.
    return round(Fraction(q * b, 1 << c))


def ref_single(q: int, b: int, c: int) -> int:
    return floor_half_up(Fraction(q * b, 1 << c))


def ref_gemmlowp(q: int, b: int, c: int) -> int:
    """Two roundings, written from the rule: x = q * 2**(31-p); SRDHM rounds x*b / 2**31 to
    nearest with ties towards +inf (saturating x == b == INT32_MIN); then half away from zero."""
    p = min(c, 31)
    x = q << (31 - p)
    y = INT32_MAX if x == b == INT32_MIN else floor_half_up(Fraction(x * b, 1 << 31))
    return half_away(Fraction(y, 1 << (c - p)))


REFERENCES = {"hawq": ref_hawq, "single": ref_single, "gemmlowp": ref_gemmlowp}


def clamp(v, lo, hi):
    return max(lo, min(hi, v))


def random_operands(n, seed):
    """int32 accumulators and multipliers (both signs, realistic and extreme), shifts 0..63."""
    rng = np.random.default_rng(seed)
    q = rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    q[: n // 4] >>= rng.integers(0, 31, n // 4)  # also small magnitudes
    b = np.where(rng.random(n) < 0.5, rng.integers(1 << 30, 1 << 31, n),
                 rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True))
    c = rng.integers(0, 64, n)
    c[: n // 10] = rng.choice([0, 1, 30, 31, 32, 62, 63], n // 10)
    return q, b, c


CORNER_Q = [INT32_MIN, INT32_MIN + 1, -(1 << 30), -3, -1, 0, 1, 3, 1 << 30, INT32_MAX]
CORNER_B = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, 1 << 30, INT32_MAX]
CORNER_C = [0, 1, 2, 30, 31, 32, 33, 61, 62, 63]


def corner_operands():
    q, b, c = np.meshgrid(CORNER_Q, CORNER_B, CORNER_C, indexing="ij")
    # gemmlowp's saturating corner below c = 31: x = q << (31 - c) == INT32_MIN.
    sat_c = np.arange(0, 32)
    q = np.concatenate([q.ravel(), -(1 << sat_c)])
    b = np.concatenate([b.ravel(), np.full(sat_c.size, INT32_MIN)])
    c = np.concatenate([c.ravel(), sat_c])
    return q.astype(np.int64), b.astype(np.int64), c.astype(np.int64)


# ------------------------------------------------------------- named cases (docs/papers.md)

def test_spec_tie_five_times_one_half():
    # docs/papers.md, Integer requantization: "Results differ on ties (5 x 0.5: 3 vs 2)".
    b, c = dyadic_from_scale(0.5)
    assert Fraction(b, 1 << c) == HALF
    exact = Fraction(5) * HALF
    assert exact.denominator == 2  # a tie
    hawq = int(rounded_shift(5, b, c, "hawq"))
    gemm = int(rounded_shift(5, b, c, "gemmlowp"))
    single = int(rounded_shift(5, b, c, "single"))
    assert hawq == round(exact) == 2  # to even
    assert gemm == single == math.floor(exact + HALF) == 3  # towards +inf
    assert (gemm, hawq) == (3, 2)  # the numbers docs/papers.md states


def test_gemmlowp_double_rounding():
    # 5 x 0.25 = 1.25: SRDHM first rounds 5 * 2**30 / 2**31 = 2.5 up to 3, RoundingDivideByPOT
    # then rounds 3 / 2 = 1.5 away from zero to 2; a single rounding of 1.25 gives 1.
    b, c = dyadic_from_scale(0.25)
    assert c == 32
    first = math.floor(Fraction(5 * b, 1 << 31) + HALF)
    second = half_away(Fraction(first, 2))
    assert (first, second) == (3, 2)
    assert int(rounded_shift(5, b, c, "gemmlowp")) == second
    assert int(rounded_shift(5, b, c, "hawq")) == round(Fraction(5, 4)) == 1
    assert int(rounded_shift(5, b, c, "single")) == 1


@pytest.mark.parametrize("q", [-5, -3, -7, 5, 3, 7])
def test_negative_and_positive_ties_per_rule(q):
    # x / 2 and x / 4 for small odd x: every tie direction of every rule in one place.
    for scale in (0.5, 0.25):
        b, c = dyadic_from_scale(scale)
        for rule, ref in REFERENCES.items():
            assert int(rounded_shift(q, b, c, rule)) == ref(q, b, c), (rule, q, scale)


def test_saturating_corner_changes_the_result_at_c_63():
    # INT32_MIN * INT32_MIN / 2**63 = 1/2 exactly. SRDHM saturates to INT32_MAX, so gemmlowp
    # rounds (2**31 - 1) / 2**32 < 1/2 down to 0, where the unsaturated value would tie to 1.
    q = b = INT32_MIN
    assert int(rounded_shift(q, b, 63, "gemmlowp")) == half_away(Fraction(INT32_MAX, 1 << 32)) == 0
    assert half_away(Fraction(1 << 31, 1 << 32)) == 1
    assert int(rounded_shift(q, b, 63, "hawq")) == round(HALF) == 0
    assert int(rounded_shift(q, b, 63, "single")) == 1
    assert int(rounded_shift(q, b, 31, "gemmlowp")) == INT32_MAX
    assert int(rounded_shift(q, b, 31, "hawq")) == 1 << 31


@pytest.mark.parametrize("c", [0, 1, 5, 30])
def test_saturating_corner_below_31(c):
    # TFLite pre-shifts x = q << (31 - c); q = -2**c makes x == INT32_MIN.
    q, b = -(1 << c), INT32_MIN
    assert int(rounded_shift(q, b, c, "gemmlowp")) == INT32_MAX
    assert int(rounded_shift(q, b, c, "hawq")) == 1 << 31


def test_srdhm_truncates_like_c():
    # The brief's ">> 31" (floor) form of SRDHM differs from gemmlowp's C division for every
    # negative product that is not a multiple of 2**31, not just for ties.
    a = np.array([-1, -3, -(1 << 20), -5, 7])
    b = np.full(a.shape, 1 << 30)
    c_like = srdhm(a, b)
    floor_form = (a * b + np.where(a * b >= 0, 1 << 30, 1 - (1 << 30))) >> 31
    expected = [math.floor(Fraction(int(x) * (1 << 30), 1 << 31) + HALF) for x in a]
    assert list(c_like) == expected
    assert (c_like != floor_form)[:4].all()


def test_srdhm_is_round_half_up_except_saturation():
    q, b, _ = random_operands(20000, 1)
    expected = np.array([math.floor(Fraction(int(x) * int(y), 1 << 31) + HALF)
                         for x, y in zip(q, b, strict=True)], dtype=object)
    assert (srdhm(q, b) == expected).all()
    assert int(srdhm(INT32_MIN, INT32_MIN)) == INT32_MAX


def test_rounding_divide_by_pot_ties_away_from_zero():
    x = np.arange(-600, 601)
    for e in range(0, 12):
        expected = [half_away(Fraction(int(v), 1 << e)) for v in x]
        assert list(rounding_divide_by_pot(x, e)) == expected


# ------------------------------------------------------------------ against Fraction

@pytest.mark.parametrize("rule", ROUNDING_RULES)
def test_random_int32_against_fraction(rule):
    q, b, c = random_operands(20000, 7)
    got = rounded_shift(q, b, c, rule)
    ref = REFERENCES[rule]
    expected = np.array([ref(int(x), int(y), int(z)) for x, y, z in zip(q, b, c, strict=True)],
                        dtype=object)
    assert (got == expected).all()
    print(f"checked {q.size} cases")


@pytest.mark.parametrize("rule", ROUNDING_RULES)
def test_corners_against_fraction(rule):
    q, b, c = corner_operands()
    got = rounded_shift(q, b, c, rule)
    ref = REFERENCES[rule]
    expected = [ref(int(x), int(y), int(z)) for x, y, z in zip(q, b, c, strict=True)]
    assert list(got) == expected
    print(f"checked {q.size} cases")


@pytest.mark.parametrize("rule", ROUNDING_RULES)
@pytest.mark.parametrize(("b", "c"), [(1 << 30, 31), (1 << 30, 34), (1686629713, 39)])
def test_exhaustive_16bit_accumulators(rule, b, c):
    q = np.arange(-(1 << 15), 1 << 15)
    got = requantize(q, b, c, rounding=rule, out_width=8)
    ref = REFERENCES[rule]
    expected = [clamp(ref(int(x), b, c), -128, 127) for x in q]
    assert list(got) == expected
    print(f"checked {q.size} cases")


def test_wide_operands_use_exact_python_ints():
    # 48-bit accumulators and shifts up to 127: the object-array path.
    rng = np.random.default_rng(3)
    q = np.array([int(v) for v in rng.integers(-(1 << 47), 1 << 47, 3000)] + [-(1 << 47)],
                 dtype=object)
    b = np.array([int(v) for v in rng.integers(-(1 << 31), 1 << 31, q.size)], dtype=object)
    c = np.array([int(v) for v in rng.integers(0, 128, q.size)], dtype=object)
    for rule in ("hawq", "single"):
        got = rounded_shift(q, b, c, rule)
        expected = [REFERENCES[rule](int(x), int(y), int(z)) for x, y, z in zip(q, b, c,
                                                                                 strict=True)]
        assert list(got) == expected


def test_int64_and_object_paths_agree():
    q, b, c = random_operands(5000, 11)
    for rule in ROUNDING_RULES:
        fast = rounded_shift(q, b, c, rule)
        exact = rounded_shift(q.astype(object), b.astype(object), c.astype(object), rule)
        assert list(fast) == list(exact)


def test_hawq_and_single_match_the_fixed_point_cast():
    # A second, independent route: the ap_fixed cast of t = q*b from Q(*, c) to Q(48, 0) with
    # RND_CONV (ties to even) is the HAWQ rule; with RND (ties to +inf) the single rounding.
    q, b, c = random_operands(20000, 5)
    t = q * b
    keep = np.abs(t >> np.minimum(c, 62)) < (1 << 46)
    t, q, b, c = t[keep], q[keep], b[keep], c[keep]
    for rule, mode in (("hawq", "RND_CONV"), ("single", "RND")):
        got = rounded_shift(q, b, c, rule)
        for shift in np.unique(c):
            sel = c == shift
            ref = cast_fixed(t[sel], int(shift), 48, 0, mode, "SAT")
            assert (got[sel] == ref).all(), (rule, shift)


# ------------------------------------------------------------------ clamp and zero point

@pytest.mark.parametrize(("out_width", "signed", "zero_point"), [
    (8, True, 0), (8, True, -5), (8, False, 128), (4, True, -3), (16, False, 0)])
def test_clamp_and_zero_point(out_width, signed, zero_point):
    q, b, c = random_operands(4000, 13)
    c = np.clip(c, 54, 63)  # keep most results inside the output range
    lo, hi = (-(1 << (out_width - 1)), (1 << (out_width - 1)) - 1) if signed else \
        (0, (1 << out_width) - 1)
    for rule in ROUNDING_RULES:
        got = requantize(q, b, c, rounding=rule, out_width=out_width, signed=signed,
                         zero_point=zero_point)
        expected = [clamp(REFERENCES[rule](int(x), int(y), int(z)) + zero_point, lo, hi)
                    for x, y, z in zip(q, b, c, strict=True)]
        assert list(got) == expected
        # The clamp must not be all there is to check.
        assert ((got > lo) & (got < hi)).mean() > 0.3


def test_requantize_validates_arguments():
    with pytest.raises(ValueError, match="rounding"):
        requantize(1, 1, 1, rounding="nearest")
    with pytest.raises(ValueError, match="zero_point"):
        requantize(1, 1, 1, out_width=8, zero_point=200)
    with pytest.raises(ValueError, match="zero_point"):
        requantize(1, 1, 1, signed=False, zero_point=-1)
    with pytest.raises(ValueError, match="out_width"):
        requantize(1, 1, 1, out_width=0)
    with pytest.raises(ValueError, match="shift c"):
        requantize(1, 1, -1)
    with pytest.raises(TypeError, match="q_acc"):
        requantize(np.array([1.5]), 1, 1)
    with pytest.raises(ValueError, match="int32"):
        rounded_shift(1 << 31, 1, 31, "gemmlowp")


# ------------------------------------------------------------------ dyadic_from_scale

def test_dyadic_from_scale_is_half_up_of_frexp():
    rng = np.random.default_rng(17)
    scales = np.concatenate([np.exp(rng.uniform(-20, 10, 2000)), [0.5, 1.0, 0.75, 2.0 ** -32]])
    b, c = dyadic_from_scale(scales)
    for s, bi, ci in zip(scales, b, c, strict=True):
        m, e = math.frexp(float(s))
        b_ref = math.floor(Fraction(m) * (1 << 31) + HALF)
        c_ref = 31 - e
        if b_ref == 1 << 31:
            b_ref, c_ref = 1 << 30, c_ref - 1
        assert (int(bi), int(ci)) == (b_ref, c_ref)
        assert (1 << 30) <= bi < (1 << 31)
        # The dyadic value is within half a unit of the multiplier's last place.
        error = abs(Fraction(int(bi), 1 << int(ci)) - Fraction(float(s)))
        assert error <= Fraction(1, 1 << (int(ci) + 1))


def test_dyadic_from_scale_exact_half_rounds_up():
    s = 0.5 + 2.0 ** -32  # m * 2**31 = 2**30 + 1/2 exactly
    assert dyadic_from_scale(s) == ((1 << 30) + 1, 31)


def test_dyadic_from_scale_renormalises_a_carry():
    # m * 2**31 rounds up to 2**31, which does not fit int32: b / 2**c keeps the same value.
    s = 1.0 - 2.0 ** -40
    b, c = dyadic_from_scale(s)
    assert (b, c) == (1 << 30, 30)
    assert Fraction(b, 1 << c) == 1
    assert math.floor(Fraction(s) * (1 << 31) + HALF) == 1 << 31


def test_dyadic_from_scale_shape_and_types():
    assert isinstance(dyadic_from_scale(0.1)[0], int)
    b, c = dyadic_from_scale(np.full((2, 3), 0.1))
    assert b.shape == c.shape == (2, 3) and b.dtype == np.int64


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf"), 2.0 ** 31, 2.0 ** -40])
def test_dyadic_from_scale_rejects(bad):
    with pytest.raises(ValueError, match="scale"):
        dyadic_from_scale(bad)


def test_dyadic_from_scale_max_shift_and_bits():
    assert dyadic_from_scale(2.0 ** -40, max_shift=127) == (1 << 30, 70)
    assert dyadic_from_scale(0.5, b_bits=15) == (1 << 14, 15)
    with pytest.raises(ValueError, match="b_bits"):
        dyadic_from_scale(0.5, b_bits=0)
    with pytest.raises(ValueError, match="max_shift"):
        dyadic_from_scale(0.5, max_shift=-1)

"""golden/bfp.py against an independent exact reference (``fractions.Fraction``, per element).

The reference reads every activation as a real number (NumPy float16 / ml_dtypes bfloat16 ->
float64 -> Fraction), takes the block exponent from ``frexp`` of the values (not from the bit
fields), scales by ``2**-(block_exp - K)`` and rounds the exact rational with Python's own
``math.trunc`` / ``round`` (half to even). It shares nothing with the golden's bit manipulation.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from bitmod.golden.bfp import (
    block_align,
    block_convert,
    block_dequantize,
    block_exp_width,
    check_block_params,
    scale_offset,
)

# IEEE binary16 and bfloat16 as published: (mantissa bits, bias, largest finite exponent field).
IEEE = {"fp16": (10, 15, 30), "bf16": (7, 127, 254)}
FLOAT_TYPES = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}


def decode(codes, fmt) -> np.ndarray:
    """float64 values of 16-bit codes (exact: every FP16/BF16 value is a float64)."""
    with np.errstate(invalid="ignore"):  # ml_dtypes warns when it casts a NaN
        return np.asarray(codes, dtype=np.uint16).view(FLOAT_TYPES[fmt]).astype(np.float64)


def encode(values, fmt) -> np.ndarray:
    """Codes of values that must be exactly representable (checked)."""
    arr = np.asarray(values, dtype=np.float64)
    codes = arr.astype(FLOAT_TYPES[fmt]).view(np.uint16)
    back = decode(codes, fmt)
    same = (back == arr) | (np.isnan(back) & np.isnan(arr))
    assert same.all(), f"not exactly representable in {fmt}: {arr[~same]}"
    return codes.astype(np.int64)


def reference_block(values, fmt, mant_width, rounding, block_exp=None):
    """Exact reference for one block of float64 values: (block_exp, mants, invalid, saturated).
    With ``block_exp`` given (golden.bfp.block_align), a lane above it is invalid, mantissa 0."""
    _, bias, _ = IEEE[fmt]
    finite = [Fraction(v) if math.isfinite(v) else None for v in values]

    def eff(x):
        # frexp: |x| = f * 2**e with 0.5 <= f < 1, so floor(log2|x|) = e - 1.
        return max(math.frexp(float(x))[1] - 1 + bias, 1) if x else 0

    if block_exp is None:
        block_exp = max((eff(x) for x in finite if x is not None), default=0)
    K = bias + mant_width - 2
    qmax = 2 ** (mant_width - 1) - 1
    mants, invalid, saturated = [], [], []
    for x in finite:
        invalid.append(x is None or eff(x) > block_exp)
        if invalid[-1]:
            mants.append(0)
            saturated.append(False)
            continue
        a = x / Fraction(2) ** (block_exp - K)
        q = math.trunc(a) if rounding == "trunc" else round(a)
        saturated.append(abs(q) > qmax)
        mants.append(max(-qmax, min(qmax, q)))
    return block_exp, mants, invalid, saturated


def reference(codes, fmt, mant_width, rounding):
    codes = np.asarray(codes)
    values = decode(codes.reshape(-1, codes.shape[-1]), fmt)
    rows = [reference_block(list(v), fmt, mant_width, rounding) for v in values]
    shape = codes.shape
    return (np.array([r[0] for r in rows]).reshape(shape[:-1]),
            np.array([r[1] for r in rows]).reshape(shape),
            np.array([r[2] for r in rows]).reshape(shape),
            np.array([r[3] for r in rows]).reshape(shape))


def assert_matches_reference(codes, fmt, mant_width, rounding) -> int:
    got_exp, got_mant, flags = block_convert(codes, fmt, mant_width, rounding)
    ref_exp, ref_mant, ref_invalid, ref_sat = reference(codes, fmt, mant_width, rounding)
    assert (got_exp == ref_exp).all()
    assert (got_mant == ref_mant).all()
    assert (flags.invalid == ref_invalid).all()
    assert (flags.saturated == ref_sat).all()
    return np.asarray(codes).size


def random_blocks(rng, count, lanes, fmt, mant_width=12) -> np.ndarray:
    """Seeded FP blocks: a quarter each of uniform codes, activation-like blocks (exponents
    within a few binades of a random maximum), subnormal-heavy blocks and RNE tie patterns."""
    man_bits, _, emax = IEEE[fmt]
    quarter = count // 4
    uniform = rng.integers(0, 1 << 16, size=(count - 3 * quarter, lanes))

    def fields(sign, exp, man):
        return (sign << 15) | (exp << man_bits) | man

    sign = rng.integers(0, 2, size=(quarter, lanes))
    top = rng.integers(1, emax + 1, size=(quarter, 1))
    exp = np.clip(top - rng.geometric(0.25, size=(quarter, lanes)) + 1, 0, emax)
    man = rng.integers(0, 1 << man_bits, size=(quarter, lanes))
    zero = rng.random((quarter, lanes)) < 0.1
    activation = np.where(zero, sign << 15, fields(sign, exp, man))

    sign = rng.integers(0, 2, size=(quarter, lanes))
    exp = rng.integers(0, 3, size=(quarter, lanes))
    man = rng.integers(0, 1 << man_bits, size=(quarter, lanes))
    subnormal = fields(sign, exp, man)

    # A mantissa ending in 1 followed by t zeros is a tie whenever exactly t + 1 bits drop.
    sign = rng.integers(0, 2, size=(quarter, lanes))
    top = rng.integers(1, emax + 1, size=(quarter, 1))
    exp = np.clip(top - rng.integers(0, mant_width + 2, size=(quarter, lanes)), 0, emax)
    t = rng.integers(0, man_bits, size=(quarter, lanes))
    high = rng.integers(0, 1 << man_bits, size=(quarter, lanes)) >> (t + 1) << (t + 1)
    ties = fields(sign, exp, high | (1 << t))
    return np.concatenate([uniform, activation, subnormal, ties]).astype(np.int64)


def corner_blocks(fmt, mant_width, lanes=4) -> dict[str, np.ndarray]:
    """Named corner blocks (codes), each ``lanes`` wide (values repeated or cut to fit)."""
    man_bits, bias, emax = IEEE[fmt]
    big = float(decode([emax << man_bits | ((1 << man_bits) - 1)], fmt)[0])
    tiny = 2.0 ** (1 - bias - man_bits)
    min_normal = 2.0 ** (1 - bias)
    lsb = 2.0 ** -(mant_width - 2)  # of a block whose largest element is 1.0
    inf, nan = math.inf, math.nan
    blocks = {
        "all zero": [0.0, 0.0, 0.0, 0.0],
        "negative zeros": [-0.0, -0.0, 0.0, -0.0],
        "one value among zeros": [0.0, -0.0, -3.0, 0.0],
        "mixed subnormal/normal": [tiny, min_normal - tiny, min_normal, -min_normal],
        "all subnormal": [tiny, 3 * tiny, -(min_normal - tiny), -tiny],
        "smallest subnormals": [tiny, -tiny, tiny, 0.0],
        "gaps beyond the width": [big, 1.0, tiny, -min_normal],
        "gap of exactly the width": [1.0, 2.0 ** -(mant_width - 1), -(2.0 ** -(mant_width - 2)),
                                     2.0 ** -mant_width],
        "max magnitude": [big, -big, big, -big],
        "max and min": [big, -tiny, tiny, -big],
        "+inf": [inf, 1.0, 2.0, -3.0],
        "-inf": [1.0, -inf, 0.5, 0.25],
        "nan": [1.0, 0.5, nan, -0.75],
        "all specials": [inf, -inf, nan, -nan],
        "specials and zeros": [nan, 0.0, -0.0, inf],
        "rne ties below the max": [1.0, 0.5 * lsb, 1.5 * lsb, -2.5 * lsb],
        "rne ties negative": [-1.0, -0.5 * lsb, -1.5 * lsb, 3.5 * lsb],
    }
    if mant_width - 1 <= man_bits:
        # The largest element itself is a tie (1 + lsb/2) and one rounds to odd-then-even.
        blocks["rne tie at the max"] = [1.0 + 0.5 * lsb, 1.0 + 1.5 * lsb, -1.0, 0.5]
        blocks["rne carry to saturation"] = [big, -big, 1.0, -1.0]
    return {name: np.resize(encode(values, fmt), lanes) for name, values in blocks.items()}


# ------------------------------------------------------------------------------------------
# Parameters


@pytest.mark.parametrize("kwargs, exc, name", [
    ({"act_format": "fp32"}, ValueError, "act_format"),
    ({"act_format": None}, ValueError, "act_format"),
    ({"mant_width": 1}, ValueError, "mant_width"),
    ({"mant_width": 25}, ValueError, "mant_width"),
    ({"mant_width": 12.0}, TypeError, "mant_width"),
    ({"mant_width": True}, TypeError, "mant_width"),
    ({"act_format": "int8", "mant_width": 7}, ValueError, "mant_width"),
    ({"rounding": "nearest"}, ValueError, "rounding"),
])
def test_bad_parameters_are_named(kwargs, exc, name):
    params = {"act_format": "fp16", "mant_width": 12, "rounding": "rne", **kwargs}
    with pytest.raises(exc, match=name):
        check_block_params(**params)
    with pytest.raises(exc, match=name):
        block_convert(np.zeros((1, 4), np.uint16), **params)


@pytest.mark.parametrize("bits, exc", [
    (np.array([[1, 2, 65536]]), ValueError),
    (np.array([[-1, 0]]), ValueError),
    (np.array([[1.0, 2.0]]), TypeError),
    (np.zeros((3, 0), np.uint16), ValueError),
    (np.uint16(5), ValueError),
])
def test_bad_bits_rejected(bits, exc):
    with pytest.raises(exc, match="bits"):
        block_convert(bits, "fp16", 12, "rne")


def test_widths_and_offset():
    for fmt, (man_bits, bias, emax) in IEEE.items():
        exp_bits = 15 - man_bits
        assert block_exp_width(fmt) == exp_bits
        # Every block exponent of every single code fits the width (largest: emax).
        block_exp, _, _ = block_convert(np.arange(1 << 16)[:, None], fmt, 12, "rne")
        assert block_exp.max() == emax < 1 << block_exp_width(fmt)
        for width in (2, 12, 24):
            assert scale_offset(fmt, width) == bias + width - 2
    assert block_exp_width("int8") == 1 and scale_offset("int8", 8) == 0


# ------------------------------------------------------------------------------------------
# Against the exact reference


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_every_code_alone_matches_exact_reference(fmt):
    """All 65536 codes as one-element blocks, at widths around the format's mantissa width."""
    codes = np.arange(1 << 16)[:, None]
    man_bits = IEEE[fmt][0]
    checked = 0
    # W = M + 1: the largest element drops one bit (ties, saturation); W = 24: none dropped.
    for rounding, width in [("rne", 2), ("rne", man_bits + 1), ("trunc", 5), ("trunc", 24)]:
        checked += assert_matches_reference(codes, fmt, width, rounding)
    print(f"checked {checked} cases")


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("rounding", ["trunc", "rne"])
def test_random_blocks_match_exact_reference(fmt, rounding):
    rng = np.random.default_rng([7, len(fmt), len(rounding)])
    checked = 0
    for lanes, width in [(4, 8), (8, 12), (3, 24), (16, 5)]:
        checked += assert_matches_reference(random_blocks(rng, 800, lanes, fmt, width), fmt,
                                            width, rounding)
    print(f"checked {checked} cases")


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("width", [2, 6, 8, 9, 11, 12, 16, 24])
def test_corner_blocks_match_exact_reference(fmt, width):
    for name, codes in corner_blocks(fmt, width).items():
        for rounding in ("trunc", "rne"):
            try:
                assert_matches_reference(codes[None, :], fmt, width, rounding)
            except AssertionError as err:
                raise AssertionError(f"corner {name!r}, {rounding}: {err}") from err


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("rounding", ["trunc", "rne"])
def test_block_align_matches_exact_reference(fmt, rounding):
    """block_align to exponents at, above and below each block's largest effective exponent
    (the lanes above it refused), and block_convert as block_align to its own exponent."""
    rng = np.random.default_rng([11, len(fmt), len(rounding)])
    emax = (1 << IEEE[fmt][2].bit_length()) - 1
    checked = 0
    for lanes, width in [(4, 8), (5, 12), (3, 24), (16, 5)]:
        blocks = random_blocks(rng, 300, lanes, fmt, width)
        own = block_convert(blocks, fmt, width, rounding)
        mant, flags = block_align(blocks, own[0], fmt, width, rounding)
        assert (mant == own[1]).all() and (flags.invalid == own[2].invalid).all()
        assert (flags.saturated == own[2].saturated).all()
        exps = np.clip(own[0] + rng.integers(-3, 7, size=own[0].shape), 0, emax)
        mant, flags = block_align(blocks, exps, fmt, width, rounding)
        for b in range(blocks.shape[0]):
            values = list(decode(blocks[b], fmt))
            _, ref, invalid, sat = reference_block(values, fmt, width, rounding, int(exps[b]))
            assert list(mant[b]) == ref and list(flags.invalid[b]) == invalid
            assert list(flags.saturated[b]) == sat
        checked += blocks.size
    assert checked and flags.invalid.any()
    print(f"checked {checked} cases")


@pytest.mark.parametrize("args, exc, match", [
    (([[0x3C00]], [0], "int8"), ValueError, "floating-point"),
    (([[0x3C00]], [0, 1]), ValueError, "block_exp must have shape"),
    (([[0x3C00]], [32]), ValueError, "block_exp must be in 0..31"),
    (([[0x3C00]], [1.0]), TypeError, "block_exp must be an integer"),
])
def test_block_align_bad_input_is_named(args, exc, match):
    with pytest.raises(exc, match=match):
        block_align(*args)


def test_corner_semantics():
    """The documented rules, spelled out on their corner blocks."""
    fmt, width = "fp16", 8
    corners = corner_blocks(fmt, width)
    for name in ("all zero", "negative zeros"):
        block_exp, mant, flags = block_convert(corners[name], fmt, width, "rne")
        assert block_exp == 0 and (mant == 0).all() and not flags.invalid.any()
    block_exp, mant, flags = block_convert(corners["all specials"], fmt, width, "rne")
    assert block_exp == 0 and (mant == 0).all() and flags.invalid.all()
    # One Inf is flagged and does not flush the finite lanes.
    block_exp, mant, flags = block_convert(corners["+inf"], fmt, width, "trunc")
    assert list(flags.invalid) == [True, False, False, False] and (mant[1:] != 0).all()
    # Only RNE of the largest element, with dropped bits, can reach 2**(W-1): clamped, flagged.
    qmax = 2 ** (width - 1) - 1
    _, mant, flags = block_convert(corners["rne carry to saturation"], fmt, width, "rne")
    assert list(mant[:2]) == [qmax, -qmax] and list(flags.saturated) == [True, True, False, False]
    _, mant, flags = block_convert(corners["rne carry to saturation"], fmt, width, "trunc")
    assert list(mant[:2]) == [qmax, -qmax] and not flags.saturated.any()


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_no_saturation_when_the_max_is_exact(fmt):
    """With W >= M + 2 the largest element is never rounded, so nothing saturates."""
    man_bits = IEEE[fmt][0]
    rng = np.random.default_rng(3)
    blocks = np.concatenate([random_blocks(rng, 4000, 4, fmt), np.arange(1 << 16)[:, None]
                             .repeat(4, axis=1)])
    for width in (man_bits + 2, 24):
        _, mant, flags = block_convert(blocks, fmt, width, "rne")
        assert not flags.saturated.any()
        assert np.abs(mant).max() <= 2 ** (width - 1) - 1
    _, _, flags = block_convert(blocks, fmt, man_bits + 1, "rne")
    assert flags.saturated.any()


# ------------------------------------------------------------------------------------------
# Error bound and dequantization


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("rounding", ["trunc", "rne"])
def test_error_bound(fmt, rounding):
    """|x - deq| < lsb (trunc); <= lsb/2 (rne) except saturated lanes (< lsb); exact rationals."""
    rng = np.random.default_rng([11, len(fmt), len(rounding)])
    checked = 0
    for lanes, width in [(4, 6), (8, 12), (2, 20)]:
        codes = random_blocks(rng, 600, lanes, fmt, width)
        block_exp, mant, flags = block_convert(codes, fmt, width, rounding)
        deq = block_dequantize(block_exp, mant, fmt, width)
        values = decode(codes, fmt)
        K = scale_offset(fmt, width)
        for b in range(codes.shape[0]):
            lsb = Fraction(2) ** (int(block_exp[b]) - K)
            for i in range(lanes):
                if flags.invalid[b, i]:
                    continue
                exact_deq = Fraction(int(mant[b, i])) * lsb
                assert Fraction(deq[b, i]) == exact_deq  # block_dequantize is exact
                err = abs(Fraction(values[b, i]) - exact_deq)
                if rounding == "trunc" or flags.saturated[b, i]:
                    assert err < lsb
                else:
                    assert err <= lsb / 2
                checked += 1
    print(f"checked {checked} cases")


def test_dequantize_shapes_and_int8_scale():
    block_exp = np.array([[3, 0]])
    mant = np.array([[[1, -2, 3], [5, 0, -7]]])
    out = block_dequantize(block_exp, mant, "bf16", 10)
    K = 127 + 10 - 2
    assert out.shape == (1, 2, 3)
    assert out[0, 0, 1] == -2 * 2.0 ** (3 - K) and out[0, 1, 2] == -7 * 2.0 ** -K
    assert (block_dequantize(np.zeros(2, int), np.array([[1, -128], [127, 0]]), "int8", 8)
            == [[1, -128], [127, 0]]).all()


def test_vectorized_over_leading_dimensions():
    rng = np.random.default_rng(5)
    codes = random_blocks(rng, 240, 4, "bf16", 9).reshape(2, 3, 40, 4)
    block_exp, mant, flags = block_convert(codes, "bf16", 9, "rne")
    flat_exp, flat_mant, flat_flags = block_convert(codes.reshape(-1, 4), "bf16", 9, "rne")
    assert block_exp.shape == (2, 3, 40) and mant.shape == (2, 3, 40, 4)
    assert (block_exp.reshape(-1) == flat_exp).all()
    assert (mant.reshape(-1, 4) == flat_mant).all()
    assert (flags.saturated.reshape(-1, 4) == flat_flags.saturated).all()


# ------------------------------------------------------------------------------------------
# INT8 pass-through


def test_int8_pass_through_every_word():
    words = np.arange(1 << 16)
    as_int16 = words.astype(np.uint16).view(np.int16).astype(np.int64)
    in_range = (as_int16 >= -128) & (as_int16 <= 127)
    block_exp, mant, flags = block_convert(words.reshape(-1, 4), "int8", 8, "trunc")
    assert (block_exp == 0).all()
    assert (mant.reshape(-1) == np.where(in_range, as_int16, 0)).all()
    assert (flags.invalid.reshape(-1) == ~in_range).all() and not flags.saturated.any()
    assert in_range.sum() == 256
    print(f"checked {words.size} cases")

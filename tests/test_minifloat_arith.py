"""golden.minifloat_arith against independent references.

Exact products are checked against ``fractions.Fraction`` products of values decoded by
ml_dtypes (OCP formats) or golden.formats (others); float conversion against numpy / ml_dtypes
casts of exact float64 values and against a ``Fraction`` round-to-nearest-even reference.
"""

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from bitmod.golden import formats
from bitmod.golden.minifloat_arith import (
    FLAG_INF,
    FLAG_NAN,
    FLAG_NEG,
    exact_product,
    operand_format,
    product_frac_bits,
    product_width,
    to_float_code,
)

ML_DTYPES = {
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
}


def ml_decode(name):
    bits = formats.get(name).bits
    return np.arange(1 << bits, dtype=np.uint8).view(ML_DTYPES[name]).astype(np.float64)


def all_pairs(a_bits, b_bits):
    a, b = np.meshgrid(np.arange(1 << a_bits), np.arange(1 << b_bits), indexing="ij")
    return a.reshape(-1), b.reshape(-1)


def check_products_against_fractions(a_name, b_name, va, vb):
    """Compare exact_product on every code pair with Fraction products of decoded values."""
    fa, fb = formats.get(a_name), formats.get(b_name)
    a, b = all_pairs(fa.bits, fb.bits)
    p, flags = exact_product(a, b, a_name, b_name)
    scale = Fraction(2) ** product_frac_bits(a_name, b_name)
    fr_a = [None if not np.isfinite(v) else Fraction(v) for v in va]
    fr_b = [None if not np.isfinite(v) else Fraction(v) for v in vb]
    ref_p = []
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        if fr_a[x] is None or fr_b[y] is None:
            ref_p.append(0)
        else:
            exact = fr_a[x] * fr_b[y] * scale
            assert exact.denominator == 1, (a_name, b_name, x, y)
            ref_p.append(exact.numerator)
    with np.errstate(invalid="ignore"):
        prod = va[a] * vb[b]
    ref_flags = (np.isnan(prod) * FLAG_NAN + np.isinf(prod) * FLAG_INF
                 + (np.signbit(va[a]) ^ np.signbit(vb[b])) * FLAG_NEG)
    assert (p == np.array(ref_p, dtype=object)).all()
    assert (flags == ref_flags).all()
    return a.size


@pytest.mark.parametrize("a_name,b_name", [
    ("fp8_e4m3", "fp8_e4m3"), ("fp8_e5m2", "fp8_e5m2"), ("fp8_e4m3", "fp8_e5m2"),
    ("fp4_e2m1", "fp4_e2m1"), ("fp6_e3m2", "fp6_e2m3"),
])
def test_exact_product_matches_fractions_of_ml_dtypes(a_name, b_name):
    n = check_products_against_fractions(a_name, b_name, ml_decode(a_name), ml_decode(b_name))
    print(f"checked {n} cases")


@pytest.mark.parametrize("a_name,b_name", [
    ("int8", "fp8_e4m3"), ("uint4", "fp4"), ("fp3", "fp3"), ("fp_e3m2_nosub", "fp_e2m2_b-2_fn"),
    ("fp_e3m0_fn", "fp_e1m2"), ("int2", "fp8_e5m2"), ("fp_e4m3_b3_finite", "uint8"),
])
def test_exact_product_matches_fractions_of_format_decode(a_name, b_name):
    codes = [np.arange(1 << formats.get(n).bits) for n in (a_name, b_name)]
    va, vb = (formats.get(n).decode(c) for n, c in zip((a_name, b_name), codes, strict=True))
    n = check_products_against_fractions(a_name, b_name, va, vb)
    print(f"checked {n} cases")


# Kulisch accumulator widths for a 32-element block (docs/papers.md) = product width + 5.
@pytest.mark.parametrize("name,kulisch", [
    ("fp4_e2m1", 14), ("fp6_e2m3", 18), ("fp6_e3m2", 24), ("fp8_e4m3", 42), ("fp8_e5m2", 70),
])
def test_product_width_matches_published_kulisch_widths(name, kulisch):
    assert product_width(name, name) + 5 == kulisch


@pytest.mark.parametrize("a_name,b_name", [
    ("fp8_e4m3", "fp8_e4m3"), ("fp8_e5m2", "fp8_e5m2"), ("fp8_e4m3", "fp8_e5m2"),
    ("fp3", "fp4_e2m1"), ("int8", "fp6_e3m2"),
])
def test_product_width_is_tight_at_the_worst_case(a_name, b_name):
    fa, fb = formats.get(a_name), formats.get(b_name)
    qa, qb = fa.qmax, fb.qmax
    if isinstance(fa, formats.IntFormat):
        qa = float(1 << (fa.bits - 1))  # -128 is the largest magnitude of int8
    a_max = int(np.flatnonzero(np.abs(fa.decode(np.arange(1 << fa.bits))) == qa)[0])
    b_max = int(np.flatnonzero(np.abs(fb.decode(np.arange(1 << fb.bits))) == qb)[0])
    p, _ = exact_product([a_max], [b_max], a_name, b_name)
    width = product_width(a_name, b_name)
    magnitude = abs(int(p[0]))
    assert Fraction(magnitude, 2 ** product_frac_bits(a_name, b_name)) == (
        Fraction(qa) * Fraction(qb))
    # The magnitude needs every bit but the sign: one bit fewer would not hold it.
    assert magnitude.bit_length() == width - 1
    # Both signs of the worst case fit the signed width.
    assert -(1 << (width - 1)) <= -magnitude and magnitude < (1 << (width - 1))


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"])
def test_min_subnormal_squared_is_one_unit(name):
    """F_out is the sum of the min-subnormal exponents: min_sub * min_sub is P = 1."""
    f = formats.get(name)
    p, flags = exact_product([1, 1 | (1 << (f.bits - 1))], [1, 1], name, name)
    assert p.tolist() == [1, -1]
    assert flags.tolist() == [0, FLAG_NEG]
    assert Fraction(ml_decode(name)[1]) ** 2 == Fraction(1, 2 ** product_frac_bits(name, name))


def test_product_dtype():
    a, b = all_pairs(8, 8)
    assert exact_product(a, b, "fp8_e4m3", "fp8_e4m3")[0].dtype == np.int64
    # E5M2 x E5M2 needs 65 signed bits: Python ints.
    assert exact_product(a, b, "fp8_e5m2", "fp8_e5m2")[0].dtype == object


@pytest.mark.parametrize("bad,match", [
    ("fp16", "a_fmt='fp16' has 16 bits"), ("flint4", "a_fmt='flint4' is a TableFormat"),
    ("fp4_er_pos", "a_fmt='fp4_er_pos' is a ExtendedFormat"), ("nope", "a_fmt='nope'"),
    ("e8m0", "a_fmt='e8m0' is a ExponentFormat"),
])
def test_exact_product_rejects_bad_formats(bad, match):
    with pytest.raises(ValueError, match=match):
        exact_product([0], [0], bad, "fp8_e4m3")


def test_exact_product_rejects_bad_codes():
    with pytest.raises(ValueError, match="a_codes"):
        exact_product([256], [0], "fp8_e4m3", "fp8_e4m3")
    with pytest.raises(TypeError, match="integer codes"):
        exact_product([0.5], [0], "fp8_e4m3", "fp8_e4m3")
    with pytest.raises(TypeError, match="b_fmt"):
        operand_format(3.0, "b_fmt")


# --------------------------------------------------------------------------------------------
# to_float_code
# --------------------------------------------------------------------------------------------

def cast_reference(values, name):
    """Codes of exact float64 ``values`` cast by numpy / ml_dtypes (RNE), E4M3 saturating."""
    with np.errstate(over="ignore"):
        return _cast_reference(values, name)


def _cast_reference(values, name):
    if name == "fp32":
        return values.astype(np.float32).view(np.uint32).astype(np.int64)
    if name == "fp16":
        return values.astype(np.float16).view(np.uint16).astype(np.int64)
    if name == "bf16":
        return values.astype(ml_dtypes.bfloat16).view(np.uint16).astype(np.int64)
    if name == "fp8_e4m3":
        # ml_dtypes E4M3 overflows to NaN; the converter saturates. Clipping first is the same
        # because 448 is a level and rounding is monotonic.
        values = np.clip(values, -448.0, 448.0)
    return values.astype(ML_DTYPES[name]).view(np.uint8).astype(np.int64)


def fraction_reference(acc: int, x: int, name: str) -> int:
    """Exact RNE of ``acc * 2**x`` to ``name`` with Fractions (saturating without Inf)."""
    f = formats.get(name)
    E, M, bias = f.exp_bits, f.man_bits, f.bias
    sign = 1 << (E + M)
    if acc == 0:
        return 0
    v = abs(Fraction(acc) * Fraction(2) ** x)
    e = v.numerator.bit_length() - v.denominator.bit_length()
    if Fraction(2) ** e > v:
        e -= 1
    q = max(e, 1 - bias) - M
    k = round(v / Fraction(2) ** q)  # round() of a Fraction is half-to-even
    r = k * Fraction(2) ** q
    if r > Fraction(f.qmax):
        code = (((1 << E) - 1) << M) if f.specials == "ieee" else int(f.encode(f.qmax))
    else:
        code = int(f.encode(float(r))) if r else 0
    return code | (sign if acc < 0 else 0)


# (out_format, in_frac, exp_offsets): offsets reach overflow, the subnormal range and underflow.
SWEEPS = [
    ("fp16", 8, [9, -20, 0]),
    ("bf16", 0, [113, -140, 0]),
    ("fp8_e4m3", 4, [0, -14, 3]),
    ("fp8_e5m2", 0, [1, -30, -8]),
    ("fp6_e3m2", 2, [0, -14]),
    ("fp4_e2m1", 4, [-8, -14]),
]


@pytest.mark.parametrize("name,in_frac,offsets", SWEEPS)
def test_to_float_every_16bit_acc_matches_casts(name, in_frac, offsets):
    acc = np.arange(-(1 << 15), 1 << 15, dtype=np.int64)
    n = 0
    for xo in offsets:
        codes = to_float_code(acc, xo, in_frac, name)
        ref = cast_reference(np.ldexp(acc.astype(np.float64), xo - in_frac), name)
        assert (codes == ref).all()
        n += acc.size
    print(f"checked {n} cases")


def test_to_float_sweeps_reach_overflow_and_subnormals():
    """The sweeps above exercise saturation/Inf, subnormal results and underflow to zero."""
    acc = np.arange(-(1 << 15), 1 << 15, dtype=np.int64)
    for name, in_frac, offsets in SWEEPS:
        f = formats.get(name)
        mag_mask = (1 << (f.bits - 1)) - 1
        codes = np.concatenate([to_float_code(acc, xo, in_frac, name) for xo in offsets])
        exp_field = (codes & mag_mask) >> f.man_bits
        top = formats.get(name).decode(codes & mag_mask)
        assert (top == f.qmax).any() or np.isinf(top).any(), name
        assert ((exp_field == 0) & ((codes & mag_mask) != 0)).any(), name
        assert (codes == (1 << (f.bits - 1))).any(), name  # -0 from negative underflow


def test_to_float_random_48bit_to_fp32():
    rng = np.random.default_rng(2024)
    n = 200_000
    acc = rng.integers(-(1 << 47), 1 << 47, n)
    acc >>= rng.integers(0, 47, n)  # spread the magnitudes over every binade
    xo = rng.integers(-128, 128, n)
    codes = to_float_code(acc, xo, 24, "fp32")
    ref = cast_reference(np.ldexp(acc.astype(np.float64), xo - 24), "fp32")
    assert (codes == ref).all()
    print(f"checked {n} cases")


CORNER_ACC = [0, 1, -1, 2, 3, (1 << 24) - 1, 1 << 24, (1 << 24) + 1, (1 << 24) + 3,
              (1 << 25) - 1, -(1 << 47), (1 << 47) - 1, (1 << 63) - 1, -(1 << 63),
              -(1 << 63) + 1, 0x7FFFFF800000, 0x7FFFFFC00000, 0xFFFFFF, 0x1000001 << 20]


@pytest.mark.parametrize("name", ["fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1"])
def test_to_float_corner_cases_match_fraction_reference(name):
    n = 0
    for acc in CORNER_ACC:
        for xo in (-200, -160, -149, -140, -64, -30, -24, -10, 0, 5, 40, 64, 100, 127):
            for in_frac in (0, 24, 63):
                got = int(to_float_code(np.array([acc], dtype=object), xo, in_frac, name)[0])
                assert got == fraction_reference(acc, xo - in_frac, name), (acc, xo, in_frac)
                n += 1
    print(f"checked {n} cases")


def test_to_float_signed_zero():
    assert to_float_code([0], [5], 0, "fp32").tolist() == [0]
    # A negative value below half the smallest subnormal rounds to -0 (IEEE).
    assert to_float_code([-1], [-200], 0, "fp32").tolist() == [0x80000000]
    assert to_float_code([-1], [-200], 0, "fp8_e4m3").tolist() == [0x80]


def test_to_float_rejects_bad_parameters():
    with pytest.raises(ValueError, match="out_format='int8' is a IntFormat"):
        to_float_code([1], [0], 0, "int8")
    with pytest.raises(ValueError, match="flushes subnormals"):
        to_float_code([1], [0], 0, "fp_e4m3_nosub")
    with pytest.raises(ValueError, match="out_format='fp99'"):
        to_float_code([1], [0], 0, "fp99")
    with pytest.raises(TypeError, match="in_frac"):
        to_float_code([1], [0], 1.5, "fp16")
    with pytest.raises(ValueError, match="acc"):
        to_float_code(np.array([1 << 64], dtype=object), [0], 0, "fp16")


def test_bit_length_fast_path_matches_python_at_every_power_of_two():
    """The float64 shortcut below 2**53 and the shift loop above it, against int.bit_length
    at every power of two +-1 (where a rounding conversion would be off by one) and random
    values."""
    from bitmod.golden.minifloat_arith import _bit_length_u64

    values = {0, (1 << 64) - 1} | {(1 << k) + d for k in range(64) for d in (-1, 0, 1)}
    values = sorted(v for v in values if 0 <= v < 1 << 64)
    rng = np.random.default_rng(5)
    x = np.concatenate([np.array(values, dtype=np.uint64),
                        rng.integers(0, 1 << 63, 4096, dtype=np.uint64) >> np.uint64(
                            rng.integers(0, 63))])
    np.testing.assert_array_equal(_bit_length_u64(x), [int(v).bit_length() for v in x])

"""Tests for golden/formats.py.

Oracles are independent of the module: ml_dtypes / numpy casts for the OCP and IEEE formats,
a Fraction decoder written from the bit fields, a brute-force Fraction encoder over sorted
levels, the literal BitMoD level sets of docs/papers.md and hand-derived ap_fixed cases.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bitmod.golden import formats as fm
from bitmod.golden.fixedpoint import quantize_fixed
from bitmod.golden.formats import (
    ExponentFormat,
    ExtendedFormat,
    FixedPoint,
    IntFormat,
    KHotFormat,
    MiniFloat,
    TableFormat,
)

# --------------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------------

ML_TYPES = {
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "e8m0": ml_dtypes.float8_e8m0fnu,
    "fp16": np.float16,
    "bf16": ml_dtypes.bfloat16,
}

# Literal code -> value tables of the table formats (module docstring).
FLINT4_MAG = [0, 1, 2, 3, 4, 6, 8, 16]
TABLES = {
    "flint4": FLINT4_MAG + [-v for v in FLINT4_MAG],
    "ternary": [0, 1, 0, -1],
    "binary": [-1, 1],
}

NAN, INF, NINF = "nan", "inf", "-inf"


@functools.cache
def fewest_power_terms(limit=300, max_exp=10):
    """``{v: fewest signed powers of two summing to v}`` for ``|v| <= limit``, by breadth-first
    search over sums of ``+-2**e`` (``e <= max_exp``, beyond every NAF position involved)."""
    powers = [s * 2**e for e in range(max_exp + 1) for s in (1, -1)]
    bound = 2 ** (max_exp + 1)
    fewest, frontier = {0: 0}, [0]
    for n in range(1, 6):
        frontier = [v + p for v in frontier for p in powers if abs(v + p) <= bound]
        frontier = [v for v in set(frontier) if v not in fewest]
        fewest.update(dict.fromkeys(frontier, n))
    return {v: n for v, n in fewest.items() if abs(v) <= limit}


@functools.cache
def khot_magnitudes(k, max_exp=7):
    """K-hot magnitudes ``0..128`` by exhaustive search over sums of at most ``k`` terms
    ``+-2**e`` with ``e <= max_exp`` (the definition, without the NAF)."""
    powers = [s * 2**e for e in range(max_exp + 1) for s in (1, -1)]
    sums = {0}
    for n in range(1, k + 1):
        sums |= {sum(c) for c in itertools.combinations_with_replacement(powers, n)}
    return sorted(v for v in sums if 0 <= v <= 128)


def ref_minifloat(code, E, M, bias, subnormals, specials):
    """Value of a minifloat code from its fields, as a Fraction (or 'nan' / '+-inf')."""
    s, e, m = code >> (E + M), (code >> M) & (2**E - 1), code & (2**M - 1)
    top = 2**E - 1
    if specials == "ieee" and e == top:
        return (NINF if s else INF) if m == 0 else NAN
    if specials == "fn" and e == top and m == 2**M - 1:
        return NAN
    if e == 0:
        mag = Fraction(m, 2**M) * Fraction(2) ** (1 - bias) if subnormals else Fraction(0)
    else:
        mag = (1 + Fraction(m, 2**M)) * Fraction(2) ** (e - bias)
    return -mag if s else mag


def ref_decode(fmt, code):
    """Independent decode of one code to a Fraction or 'nan' / 'inf' / '-inf'."""
    if isinstance(fmt, IntFormat):
        b = fmt.bits
        return Fraction(code - 2**b if fmt.signed and code >= 2 ** (b - 1) else code)
    if isinstance(fmt, MiniFloat):
        return ref_minifloat(code, fmt.exp_bits, fmt.man_bits, fmt.bias, fmt.subnormals,
                             fmt.specials)
    if isinstance(fmt, ExponentFormat):
        return NAN if code == 2**fmt.exp_bits - 1 else Fraction(2) ** (code - fmt.bias)
    if isinstance(fmt, FixedPoint):
        w = fmt.width
        q = code - 2**w if fmt.signed and code >= 2 ** (w - 1) else code
        return q * Fraction(2) ** -fmt.frac
    if isinstance(fmt, ExtendedFormat):
        if code == fmt.special_code:
            return Fraction(fmt.special_value)
        return ref_decode(fmt.base_format, code)
    if isinstance(fmt, TableFormat):
        return Fraction(TABLES[fmt.name][code])
    if isinstance(fmt, KHotFormat):
        # Sign bit on top, below it the index into the ascending magnitudes (zero beyond them).
        mags = khot_magnitudes(fmt.terms)
        index_bits = (len(mags) - 1).bit_length()
        sign, index = code >> index_bits, code & (2**index_bits - 1)
        assert fmt.bits == 1 + index_bits
        return Fraction(mags[index] if index < len(mags) else 0) * (-1) ** sign
    raise AssertionError(f"no reference for {fmt!r}")


@functools.cache
def ref_grid(fmt):
    """Sorted (value, canonical code) pairs encode may produce: smallest code per value."""
    best = {}
    for c in range(2**fmt.bits):
        v = ref_decode(fmt, c)
        if isinstance(v, str):
            continue
        if isinstance(fmt, IntFormat) and fmt.symmetric and c == 2 ** (fmt.bits - 1):
            continue
        if isinstance(fmt, FixedPoint) and fmt.overflow == "SAT_SYM" and c == 2 ** (fmt.bits - 1):
            continue
        best.setdefault(v, c)
    items = sorted(best.items())
    return [v for v, _ in items], [c for _, c in items]


def ref_encode(fmt, x, ties):
    """Brute-force saturating round-to-nearest with the documented tie rules (Fractions)."""
    vals, codes = ref_grid(fmt)
    X = min(max(Fraction(x), vals[0]), vals[-1])
    i = bisect.bisect_left(vals, X)
    if i < len(vals) and vals[i] == X:
        return codes[i]
    lo, hi = i - 1, i
    dlo, dhi = X - vals[lo], vals[hi] - X
    if dlo != dhi:
        return codes[lo] if dlo < dhi else codes[hi]
    if fmt.name == "binary":
        return codes[hi]
    if ties == "down":
        return codes[lo]
    if ties == "away":
        return codes[hi] if X > 0 else codes[lo]
    if codes[lo] % 2 != codes[hi] % 2:
        return codes[lo] if codes[lo] % 2 == 0 else codes[hi]
    return codes[lo] if abs(vals[lo]) < abs(vals[hi]) else codes[hi]


def assert_decodes_like_reference(fmt, codes):
    got = fmt.decode(codes)
    for c, v in zip(codes.tolist(), got.tolist(), strict=True):
        r = ref_decode(fmt, c)
        if r == NAN:
            assert np.isnan(v), (fmt.name, c, v)
        elif r == INF:
            assert v == np.inf, (fmt.name, c, v)
        elif r == NINF:
            assert v == -np.inf, (fmt.name, c, v)
        else:
            assert Fraction(v) == r, (fmt.name, c, v, r)


def ml_codes(x, dtype):
    with np.errstate(over="ignore", invalid="ignore"):
        arr = np.asarray(x, dtype=np.float32).astype(dtype)
    return arr.view(np.uint16 if arr.dtype.itemsize == 2 else np.uint8).astype(np.int64)


def ml_values(x, dtype):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x, dtype=np.float32).astype(dtype).astype(np.float64)


def assert_same_rounding(fmt, ours, ml_val, ml_code):
    """Our codes denote ml_dtypes' values; codes agree wherever the value is nonzero.

    ml_dtypes keeps the sign of zero and of NaN (we always produce +0 and, for NaN input, the
    canonical NaN), so zeros and NaNs are compared by value only.
    """
    assert np.array_equal(fmt.decode(ours), ml_val, equal_nan=True)
    keep = (ml_val != 0) & ~np.isnan(ml_val)
    assert np.array_equal(ours[keep], ml_code[keep])


def both_signs(v):
    v = np.asarray(v, dtype=np.float32)
    return np.concatenate([v, -v])


def sweep_inputs(fmt, beyond):
    """Levels, every midpoint and its float32 neighbours, a dense grid and overflow values."""
    lv = fmt.levels[fmt.levels >= 0]
    mids = (lv[:-1] + lv[1:]) / 2
    assert np.array_equal(mids.astype(np.float32).astype(np.float64), mids)  # exact ties
    dense = np.linspace(0, fmt.qmax * 1.25, 20001)
    pts = np.concatenate([lv, mids, dense, beyond, [np.inf]]).astype(np.float32)
    pts = np.concatenate([pts, np.nextafter(pts, np.float32(np.inf)),
                          np.nextafter(pts, np.float32(-np.inf))])
    return both_signs(pts)


PARAM_NAMES = [
    "fp_e3m2", "fp_e4m3_fn", "fp_e2m2_b-1_finite_nosub", "fp_e3m0_fn", "fp_e1m2_finite",
    "fp_e2m1_b3", "fp_e4m2_fn_nosub", "e5m0", "e4m0_b3", "q8_4", "uq6_2_trn_wrap",
    "q5_-1", "q4_6_rnd_sat_sym", "q6_2_rnd_inf_sat_zero", "int12", "uint1", "int10_sym",
    "fp4_sv-7", "flint4_sv5", "fp3_sv3",
]
SMALL = [n for n in fm.names() if fm.get(n).bits <= 16] + PARAM_NAMES

# --------------------------------------------------------------------------------------------
# Registry and names
# --------------------------------------------------------------------------------------------

REGISTERED = (
    [f"int{b}" for b in range(2, 9)] + [f"uint{b}" for b in range(2, 9)]
    + [f"int{b}_sym" for b in range(2, 9)]
    + ["binary", "ternary", "fp3", "fp4", "flint4"]
    + [f"fp{b}_{k}_{s}" for b in (3, 4) for k in ("er", "ea") for s in ("pos", "neg")]
    + ["fp4_e2m1", "fp6_e3m2", "fp6_e2m3", "fp8_e4m3", "fp8_e5m2", "e8m0", "fp16", "bf16",
       "fp32", "khot1", "khot2", "khot3"]
)


def test_registered_names():
    assert sorted(fm.names()) == sorted(REGISTERED)


@pytest.mark.parametrize("name", REGISTERED)
def test_get_registered(name):
    fmt = fm.get(name)
    assert fmt.name == name
    assert fm.get(name.upper()) is fmt
    assert fm.get(f"  {name} ") is fmt
    assert name in repr(fmt)


@pytest.mark.parametrize("name", PARAM_NAMES)
def test_parametrised_names_roundtrip(name):
    fmt = fm.get(name)
    assert fmt.name == name
    assert fm.get(fmt.name) == fmt
    assert hash(fm.get(fmt.name)) == hash(fmt)


@pytest.mark.parametrize(("alias", "name"), [
    ("fp_e3m2_finite", "fp6_e3m2"),
    ("fp_e2m3_finite", "fp6_e2m3"),
    ("fp_e2m1_finite", "fp4_e2m1"),
    ("fp_e4m3_b7_fn", "fp8_e4m3"),
    ("fp_e4m3_fn", "fp8_e4m3"),
    ("fp_e5m2", "fp8_e5m2"),
    ("fp_e5m2_b15_ieee", "fp8_e5m2"),
    ("fp_e5m10", "fp16"),
    ("fp_e8m7", "bf16"),
    ("fp_e2m1_b0_finite", "fp4"),
    ("fp_e2m0_b1_finite", "fp3"),
    ("e8m0_b127", "e8m0"),
    ("fp4_sv10", "fp4_er_pos"),
    ("fp4_sv-16", "fp4_ea_neg"),
    ("fp3_sv-3", "fp3_er_neg"),
    ("q8_4_rnd_conv_sat", "q8_4"),
])
def test_equal_by_parameters(alias, name):
    assert fm.get(alias) == fm.get(name)
    assert hash(fm.get(alias)) == hash(fm.get(name))


def test_constructors_equal_registered():
    assert MiniFloat(4, 3, specials="fn") == fm.get("fp8_e4m3")
    assert IntFormat(4, symmetric=True) == fm.get("int4_sym")
    assert ExtendedFormat(fm.get("fp4"), 16) == fm.get("fp4_ea_pos")
    assert FixedPoint(8, 4, "rnd", "wrap") == fm.get("q8_4_rnd_wrap")
    assert fm.get("fp4") != fm.get("fp4_e2m1")
    assert fm.get("int4") != fm.get("int4_sym")
    assert fm.get("ternary") != fm.get("int2_sym")
    assert len({fm.get(n) for n in REGISTERED}) == len(REGISTERED)


@pytest.mark.parametrize(("bad", "expect"), [
    ("int4x", "int4x"),
    ("fp4_e2m2", "fp4_e2m1"),     # close match offered
    ("FP8_E4M4", "fp8_e4m3"),
    ("nonsense", "q<W>_<F>"),     # grammar shown
    ("fp_e9m9", "fp_e9m9"),       # parametrised but invalid
    ("fp_e1m0_fn", "no nonzero finite value"),
    ("int1", "bits"),
    ("int17", "bits"),
    ("uint2_sym", "uint2_sym"),
    ("q8_4_bogus", "bogus"),
    ("q0_0", "width"),
    ("fp4_sv6", "already a level"),
    ("int4_sv5", "not a redundant zero"),
    ("e12m0", "exp_bits"),
])
def test_get_rejects_bad_names(bad, expect):
    with pytest.raises(ValueError, match=r"unknown format|invalid format") as info:
        fm.get(bad)
    assert expect in str(info.value)


def test_get_rejects_non_string():
    with pytest.raises(TypeError, match="str"):
        fm.get(4)


# --------------------------------------------------------------------------------------------
# Decode: against Fraction fields and ml_dtypes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SMALL)
def test_decode_matches_fraction_reference(name):
    fmt = fm.get(name)
    assert_decodes_like_reference(fmt, fmt.codes())


def test_fp32_decode_matches_fraction_reference_sampled():
    fmt = fm.get("fp32")
    rng = np.random.default_rng(1)
    codes = np.concatenate([rng.integers(0, 2**32, 20000),
                            [0, 1, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x7F800000, 0x7F800001,
                             0x7FC00000, 0x80000000, 0xFF800000, 0xFFFFFFFF]])
    assert_decodes_like_reference(fmt, codes)
    bits = fmt.decode(codes).astype(np.float32).view(np.uint32)
    ref = codes.astype(np.uint32)
    nan = np.isnan(fmt.decode(codes))
    assert np.array_equal(bits[~nan], ref[~nan])


@pytest.mark.parametrize("name", list(ML_TYPES))
def test_decode_matches_ml_dtypes_bit_for_bit(name):
    fmt = fm.get(name)
    codes = fmt.codes()
    raw = codes.astype(np.uint16 if fmt.bits > 8 else np.uint8)
    with np.errstate(invalid="ignore"):
        ml = raw.view(ML_TYPES[name]).astype(np.float64)
    ours = fmt.decode(codes)
    nan = np.isnan(ml)
    assert np.array_equal(np.isnan(ours), nan)
    assert np.array_equal(ours[~nan].view(np.uint64), ml[~nan].view(np.uint64))  # -0.0 too


@pytest.mark.parametrize(("name", "qmax", "emax"), [
    ("fp8_e4m3", 448, 8), ("fp8_e5m2", 57344, 15), ("fp6_e3m2", 28, 4), ("fp6_e2m3", 7.5, 2),
    ("fp4_e2m1", 6, 2), ("fp16", 65504, 15), ("bf16", float(ml_dtypes.finfo("bfloat16").max),
                                              127),
    ("fp32", float(np.finfo(np.float32).max), 127), ("fp4", 12, 3), ("fp3", 4, 2),
])
def test_minifloat_range(name, qmax, emax):
    fmt = fm.get(name)
    assert fmt.qmax == qmax
    assert fmt.emax == emax
    if fmt.bits <= 16:
        assert fmt.qmax == np.max(np.abs(fmt.levels))


# --------------------------------------------------------------------------------------------
# Encode: against ml_dtypes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fp4_e2m1", "fp6_e3m2", "fp6_e2m3", "fp8_e4m3", "fp8_e5m2"])
def test_encode_saturating_matches_clipped_ml_dtypes(name):
    fmt = fm.get(name)
    q = fmt.qmax
    x = sweep_inputs(fmt, [q * 1.01, q * 1.5, q * 2, 1e30])
    ours = fmt.encode(x, saturate=True)
    xc = np.clip(x, -q, q)  # clip before casting to saturate (docs/papers.md)
    assert_same_rounding(fmt, ours, ml_values(xc, ML_TYPES[name]), ml_codes(xc, ML_TYPES[name]))
    if name != "fp8_e5m2":  # saturating is the default for formats without Inf
        assert np.array_equal(fmt.encode(x), ours)


@pytest.mark.parametrize(("name", "threshold"), [("fp8_e4m3", 464.0), ("fp8_e5m2", 61440.0)])
def test_encode_non_saturating_matches_ml_dtypes(name, threshold):
    fmt = fm.get(name)
    x = sweep_inputs(fmt, [threshold, fmt.qmax * 2, 1e30])
    ours = fmt.encode(x, saturate=False)
    assert_same_rounding(fmt, ours, ml_values(x, ML_TYPES[name]), ml_codes(x, ML_TYPES[name]))
    if name == "fp8_e5m2":  # IEEE formats default to overflow -> Inf
        assert np.array_equal(fmt.encode(x), ours)


def test_e8m0_encode_matches_ml_dtypes_with_ties_away():
    fmt = fm.get("e8m0")
    k = np.arange(-126, 128, dtype=np.float64)
    pts = np.concatenate([2.0**k, 1.5 * 2.0**k, 1.25 * 2.0**k, 1.75 * 2.0**k,
                          2.0 ** np.linspace(-126, 127.99, 20001), [2.0**128]])
    with np.errstate(over="ignore"):
        pts = pts.astype(np.float32)  # 2**128 -> Inf
    x = np.concatenate([pts, np.nextafter(pts, np.float32(np.inf)),
                        np.nextafter(pts, np.float32(0))])
    # ml_dtypes rounds float32 *subnormal* inputs (below 2**-126) up to code 1 even when
    # 2**-127 (code 0) is nearer; there we follow nearest-in-value (checked below).
    x = x[x >= 2.0**-126]
    ours = fmt.encode(x, ties="away", saturate=False)
    ml = ml_codes(x, ml_dtypes.float8_e8m0fnu)
    assert np.array_equal(ours, ml)
    assert fmt.encode([1.25 * 2.0**-127, 1.5 * 2.0**-127, 1.75 * 2.0**-127]).tolist() == [0, 0, 1]
    assert fmt.encode(1.5 * 2.0**-127, ties="away") == 1
    # Default (saturating, ties to even code): the tie 1.5 * 2**k goes to the even code.
    mids = 1.5 * 2.0 ** np.arange(-127, 127)
    codes = fmt.encode(mids)
    assert np.all(codes % 2 == 0)
    assert np.all(np.abs(codes - (np.arange(-127, 127) + 127)) <= 1)
    assert fmt.encode(np.inf) == 254 and fmt.encode(1e300) == 254
    assert fmt.encode(1e-300) == 0


def _float32_sweep(step):
    patterns = np.arange(0, 2**32, step, dtype=np.uint64).astype(np.uint32)
    return patterns.view(np.float32)


@pytest.mark.parametrize(("name", "dtype"), [("fp16", np.float16), ("bf16", ml_dtypes.bfloat16)])
def test_fp16_bf16_encode_matches_casts(name, dtype):
    fmt = fm.get(name)
    lv = fmt.levels
    mids = ((lv[:-1] + lv[1:]) / 2).astype(np.float32)
    assert np.array_equal(mids.astype(np.float64), (lv[:-1] + lv[1:]) / 2)
    edge = np.concatenate([mids, np.nextafter(mids, np.float32(np.inf)),
                           np.nextafter(mids, np.float32(-np.inf))])
    x = np.concatenate([_float32_sweep(1999), edge])  # every pattern class incl. NaN/Inf
    ours = fmt.encode(x)
    assert_same_rounding(fmt, ours, ml_values(x, dtype), ml_codes(x, dtype))
    q = np.float32(fmt.qmax)
    sat = fmt.encode(x, saturate=True)
    xc = np.clip(x, -q, q)
    assert_same_rounding(fmt, sat, ml_values(xc, dtype), ml_codes(xc, dtype))


def test_fp32_encode_matches_numpy_cast():
    fmt = fm.get("fp32")
    rng = np.random.default_rng(2)
    lo = _float32_sweep(4099)
    lo = lo[np.isfinite(lo)].astype(np.float64)
    hi = np.nextafter(lo.astype(np.float32), np.float32(np.inf)).astype(np.float64)
    mids = (lo + hi) / 2  # exact ties (Inf where lo is the largest float32)
    x = np.concatenate([mids, rng.normal(size=20000) * 10.0 ** rng.integers(-45, 39, 20000),
                        [1e300, -1e300, np.inf, -np.inf, np.nan, -0.0, 5e-324]])
    with np.errstate(over="ignore"):
        ref = x.astype(np.float32)
    ours = fmt.encode(x)
    assert np.array_equal(fmt.decode(ours), ref.astype(np.float64), equal_nan=True)
    keep = (ref != 0) & ~np.isnan(ref)
    assert np.array_equal(ours[keep], ref.view(np.uint32)[keep].astype(np.int64))
    # Directed tie rules on the exact midpoints.
    fin = np.isfinite(hi)
    down = fmt.decode(fmt.encode(mids[fin], ties="down"))
    assert np.array_equal(down, np.minimum(lo[fin], hi[fin]))
    away = fmt.decode(fmt.encode(mids[fin], ties="away"))
    assert np.array_equal(np.abs(away), np.maximum(np.abs(lo[fin]), np.abs(hi[fin])))
    top = (2.0**128 - 2.0**103)  # max + ulp/2
    assert fmt.decode(fmt.encode([top, -top], ties="down")).tolist() == [
        float(np.finfo(np.float32).max), -np.inf]
    assert fmt.decode(fmt.encode([top, -top], saturate=True)).tolist() == [
        float(np.finfo(np.float32).max), -float(np.finfo(np.float32).max)]


# --------------------------------------------------------------------------------------------
# Encode: against the brute-force Fraction reference, every tie
# --------------------------------------------------------------------------------------------

def ref_inputs(fmt):
    lv = fmt.levels
    mids = (lv[:-1] + lv[1:]) / 2
    span = fmt.qmax
    pts = np.concatenate([lv, mids, [0.0, span * 1.5, -span * 1.5, span * 1e6, -span * 1e6]])
    return np.concatenate([pts, np.nextafter(pts, np.inf), np.nextafter(pts, -np.inf)])


@pytest.mark.parametrize("ties", fm.TIES)
@pytest.mark.parametrize("name", [n for n in SMALL if fm.get(n).bits <= 8
                                  and not isinstance(fm.get(n), FixedPoint)])
def test_encode_matches_fraction_reference(name, ties):
    fmt = fm.get(name)
    x = ref_inputs(fmt)
    if isinstance(fmt, ExponentFormat):
        x = x[x > 0]  # no zero, no sign
    sat = True if fmt.default_saturate is False else None
    got = fmt.encode(x, ties=ties, saturate=sat)
    want = [ref_encode(fmt, v, ties) for v in x.tolist()]
    assert got.tolist() == want


@pytest.mark.parametrize(("name", "x", "even", "down", "away"), [
    # fp4_e2m1: 2.5 is between 2 (code 4) and 3 (code 5); 5 between 4 (6) and 6 (7).
    ("fp4_e2m1", 2.5, 4, 4, 5), ("fp4_e2m1", -2.5, 12, 13, 13), ("fp4_e2m1", 5.0, 6, 6, 7),
    ("fp4_e2m1", 0.25, 0, 0, 1), ("fp4_e2m1", -0.25, 0, 9, 9), ("fp4_e2m1", 0.75, 2, 1, 2),
    # int4: round half to even / floor of the half / away from zero.
    ("int4", 2.5, 2, 2, 3), ("int4", -2.5, 14, 13, 13), ("int4", 3.5, 4, 3, 4),
    ("int4", -0.5, 0, 15, 15), ("int4", 7.5, 7, 7, 7), ("int4", -8.5, 8, 8, 8),
    # fp4_er_pos (code units): 9 between 8 (code 6) and 10 (code 8, both even -> smaller
    # magnitude); 11 between 10 (8) and 12 (7).
    ("fp4_er_pos", 9.0, 6, 6, 8), ("fp4_er_pos", 11.0, 8, 8, 7),
    ("fp4_ea_neg", -14.0, 8, 8, 8), ("fp4_ea_neg", -10.0, 14, 15, 15),
    # fp8_e5m2 overflow tie (max 57344 + ulp/2 = 61440): IEEE RNE -> Inf (code 0x7C).
    ("fp8_e5m2", 61440.0, 0x7C, 0x7B, 0x7C), ("fp8_e5m2", -61440.0, 0xFC, 0xFC, 0xFC),
    # ternary: +-0.5 ties between 0 and +-1.
    ("ternary", 0.5, 0, 0, 1), ("ternary", -0.5, 0, 3, 3),
    # binary: x == 0 always goes to +1.
    ("binary", 0.0, 1, 1, 1), ("binary", -0.0, 1, 1, 1), ("binary", -1e-300, 0, 0, 0),
])
def test_named_ties(name, x, even, down, away):
    fmt = fm.get(name)
    assert fmt.encode(x) == even
    assert fmt.encode(x, ties="even") == even
    assert fmt.encode(x, ties="down") == down
    assert fmt.encode(x, ties="away") == away


@pytest.mark.parametrize(("x", "sat", "ties", "code"), [
    (464.0, False, "even", 0x7E),   # tie 448 (0x7E) / NaN pattern 480 (0x7F): even -> 448
    (464.0, False, "away", 0x7F),
    (464.0, False, "down", 0x7E),
    (-464.0, False, "down", 0xFF),  # the more negative "level" is the negative NaN code
    (464.5, False, "even", 0x7F),
    (-1e9, False, "even", 0xFF),
    (np.inf, False, "even", 0x7F),
    (np.inf, True, "even", 0x7E),
    (1e9, None, "even", 0x7E),      # default saturates (no Inf)
    (np.nan, None, "even", 0x7F),
    (-0.0, None, "even", 0x00),
])
def test_e4m3_overflow(x, sat, ties, code):
    assert fm.get("fp8_e4m3").encode(x, ties=ties, saturate=sat) == code


@pytest.mark.parametrize(("name", "nan_code"), [
    ("fp8_e4m3", 0x7F), ("fp8_e5m2", 0x7E), ("fp16", 0x7E00), ("bf16", 0x7FC0),
    ("e8m0", 0xFF), ("fp32", 0x7FC00000), ("fp_e3m2_fn", 0x1F),
])
def test_nan_encodes_to_canonical_nan(name, nan_code):
    fmt = fm.get(name)
    assert fmt.nan_code == nan_code
    assert np.array_equal(fmt.encode([np.nan, -np.nan]), [nan_code, nan_code])
    assert np.isnan(fmt.decode(nan_code))


@pytest.mark.parametrize("name", ["fp8_e5m2", "fp16", "bf16", "fp32", "fp_e3m2"])
def test_ieee_inf(name):
    fmt = fm.get(name)
    inf, ninf = fmt.encode([np.inf, -np.inf])
    assert fmt.decode(inf) == np.inf and fmt.decode(ninf) == -np.inf
    sat = fmt.decode(fmt.encode([np.inf, -np.inf, 1e300], saturate=True))
    assert sat.tolist() == [fmt.qmax, -fmt.qmax, fmt.qmax]


@pytest.mark.parametrize("name", [n for n in SMALL if fm.get(n).default_saturate])
def test_saturating_formats_clamp_inf(name):
    fmt = fm.get(name)
    if isinstance(fmt, ExponentFormat):
        assert fmt.decode(fmt.encode(np.inf)) == fmt.levels[-1]
        return
    got = fmt.decode(fmt.encode([np.inf, -np.inf]))
    assert got.tolist() == [fmt.levels[-1], fmt.levels[0]]


# Formats without a zero: e8m0 rejects 0 (tested below), binary maps it to +1 (named ties).
@pytest.mark.parametrize("name", [n for n in SMALL if 0.0 in fm.get(n).levels])
def test_minus_zero_encodes_to_plus_zero_code(name):
    fmt = fm.get(name)
    assert fmt.encode(-0.0) == 0
    assert fmt.encode(np.array([-0.0, 0.0])).tolist() == [0, 0]
    if not (isinstance(fmt, FixedPoint) and fmt.rounding.startswith("TRN")):
        assert fmt.encode(-1e-300) == 0  # a negative value rounding to zero gives +0 too


@pytest.mark.parametrize("name", SMALL)
def test_canonical_codes_and_levels(name):
    fmt = fm.get(name)
    canon = fmt.canonical_codes()
    assert np.array_equal(fmt.encode(fmt.decode(canon)), canon)
    vals = fmt.decode(canon)
    fin = np.isfinite(vals)
    assert np.array_equal(np.sort(vals[fin]) + 0.0, fmt.levels)
    assert np.unique(fmt.levels).size == fmt.levels.size
    assert np.count_nonzero(fmt.levels == 0) <= 1
    assert not np.signbit(fmt.levels[fmt.levels == 0]).any()
    assert np.all(np.diff(fmt.levels) > 0)


@pytest.mark.parametrize(("name", "excluded", "count"), [
    ("fp8_e4m3", [0x80, 0xFF], 254), ("fp8_e5m2", [0x80, 0x7D, 0x7F, 0xFD, 0xFE, 0xFF], 250),
    ("fp4_e2m1", [8], 15), ("fp4_er_pos", [], 16), ("int4_sym", [8], 15), ("int4", [], 16),
    ("flint4", [8], 15), ("ternary", [2], 3), ("binary", [], 2), ("e8m0", [], 256),
    ("q4_0_trn_sat_sym", [8], 15), ("fp_e2m1_finite_nosub", [1, 8, 9], 13),
])
def test_canonical_code_sets(name, excluded, count):
    canon = set(fm.get(name).canonical_codes().tolist())
    assert len(canon) == count
    assert not canon & set(excluded)


# --------------------------------------------------------------------------------------------
# Hypothesis properties
# --------------------------------------------------------------------------------------------

@st.composite
def minifloats(draw):
    E = draw(st.integers(1, 5))
    M = draw(st.integers(0, 4))
    specials = draw(st.sampled_from(fm.SPECIALS))
    subnormals = draw(st.booleans())
    bias = draw(st.integers(2 ** (E - 1) - 4, 2 ** (E - 1) + 2))
    try:
        return MiniFloat(E, M, bias, subnormals, specials)
    except ValueError:
        assume(False)


@st.composite
def any_small_format(draw):
    kind = draw(st.sampled_from(["minifloat", "int", "table"]))
    if kind == "minifloat":
        return draw(minifloats())
    if kind == "int":
        signed = draw(st.booleans())
        bits = draw(st.integers(2 if signed else 1, 10))
        sym = signed and draw(st.booleans())
        return IntFormat(bits, signed, sym)
    return fm.get(draw(st.sampled_from(
        ["flint4", "ternary", "binary", "fp3_ea_neg", "fp4_er_pos", "e5m0", "fp4_sv-7"])))


@settings(max_examples=150, deadline=None)
@given(minifloats())
def test_minifloat_roundtrip_and_reference(fmt):
    canon = fmt.canonical_codes()
    assert np.array_equal(fmt.encode(fmt.decode(canon)), canon)
    assert_decodes_like_reference(fmt, fmt.codes())
    vals = [ref_decode(fmt, c) for c in canon.tolist()]
    finite = sorted(v for v in vals if not isinstance(v, str))
    assert [Fraction(v) for v in fmt.levels.tolist()] == finite
    # Exactly one canonical code per finite value, the smallest one with that value.
    assert len(finite) == len(set(finite))


@settings(max_examples=150, deadline=None)
@given(any_small_format(), st.lists(st.floats(-1.3, 1.3), min_size=1, max_size=20),
       st.sampled_from(fm.TIES))
def test_encode_is_nearest_level(fmt, xs, ties):
    lv = fmt.levels
    x = np.array(xs) * fmt.qmax
    if isinstance(fmt, ExponentFormat):
        x = np.abs(x) + 2.0**-200
    got = fmt.decode(fmt.encode(x, ties=ties, saturate=True))
    for xi, gi in zip(x.tolist(), got.tolist(), strict=True):
        X = Fraction(xi)
        best = min(abs(X - Fraction(v)) for v in lv.tolist())
        assert abs(X - Fraction(gi)) == best
    assert fmt.encode(x, ties=ties, saturate=True).tolist() == [
        ref_encode(fmt, xi, ties) for xi in x.tolist()]


@settings(max_examples=100, deadline=None)
@given(minifloats(), st.sampled_from(fm.TIES))
def test_minifloat_ties_on_every_midpoint(fmt, ties):
    lv = fmt.levels
    mids = (lv[:-1] + lv[1:]) / 2
    got = fmt.encode(mids, ties=ties, saturate=True)
    lo_codes, hi_codes = fmt.encode(lv[:-1]), fmt.encode(lv[1:])
    if ties == "down":
        assert np.array_equal(got, lo_codes)
    elif ties == "away":
        assert np.array_equal(got, np.where(mids > 0, hi_codes, lo_codes))
    else:
        differ = lo_codes % 2 != hi_codes % 2
        assert np.all(got[differ] % 2 == 0)
        smaller = np.where(np.abs(lv[:-1]) < np.abs(lv[1:]), lo_codes, hi_codes)
        assert np.array_equal(got[~differ], smaller[~differ])


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 16), st.booleans(),
       st.lists(st.floats(-70000, 70000, allow_nan=False), min_size=1, max_size=30))
def test_int_encode_is_round_and_clip(bits, symmetric, xs):
    fmt = IntFormat(bits, symmetric=symmetric)
    x = np.array(xs)
    lo = -(2 ** (bits - 1)) + symmetric
    hi = 2 ** (bits - 1) - 1
    want = np.clip(np.round(x), lo, hi).astype(np.int64)  # np.round is half-to-even
    assert np.array_equal(fmt.decode(fmt.encode(x)), want)
    assert np.array_equal(fmt.encode(x), want & (2**bits - 1))  # two's-complement pattern


# --------------------------------------------------------------------------------------------
# BitMoD formats (docs/papers.md, BitMoD weight datatypes, written out literally)
# --------------------------------------------------------------------------------------------

def pm(*mags):
    return {0} | {m for m in mags} | {-m for m in mags}


FP3 = pm(1, 2, 4)
FP4 = pm(1, 2, 3, 4, 6, 8, 12)
BITMOD_LEVELS = {
    "int3_sym": pm(1, 2, 3),
    "fp3": FP3,
    "fp3_er_pos": FP3 | {3}, "fp3_er_neg": FP3 | {-3},
    "fp3_ea_pos": FP3 | {6}, "fp3_ea_neg": FP3 | {-6},
    "int4_sym": pm(1, 2, 3, 4, 5, 6, 7),
    "flint4": pm(1, 2, 3, 4, 6, 8, 16),
    "fp4": FP4,
    "fp4_er_pos": FP4 | {10}, "fp4_er_neg": FP4 | {-10},
    "fp4_ea_pos": FP4 | {16}, "fp4_ea_neg": FP4 | {-16},
}
BITMOD_QMAX = {"fp3_er_pos": 4, "fp3_er_neg": 4, "fp3_ea_pos": 6, "fp3_ea_neg": 6,
               "fp4_er_pos": 12, "fp4_er_neg": 12, "fp4_ea_pos": 16, "fp4_ea_neg": 16}


@pytest.mark.parametrize("name", list(BITMOD_LEVELS))
def test_bitmod_level_sets(name):
    fmt = fm.get(name)
    assert set(fmt.levels.tolist()) == BITMOD_LEVELS[name]
    assert fmt.bits == (3 if "3" in name else 4)
    if name in BITMOD_QMAX:
        assert fmt.qmax == BITMOD_QMAX[name]


@pytest.mark.parametrize("name", list(BITMOD_QMAX))
def test_extended_format_fields(name):
    fmt = fm.get(name)
    base = "fp3" if name.startswith("fp3") else "fp4"
    special = {"fp3_er": 3, "fp3_ea": 6, "fp4_er": 10, "fp4_ea": 16}[name[:6]]
    special *= -1 if name.endswith("neg") else 1
    assert isinstance(fmt, ExtendedFormat)
    assert fmt.base_format == fm.get(base)
    assert fmt.special_value == special
    assert fmt.special_code == 1 << (fmt.bits - 1)
    assert fmt.decode(fmt.special_code) == special
    assert fmt.encode(special) == fmt.special_code
    # Every other code decodes as the base format.
    others = fmt.codes()[fmt.codes() != fmt.special_code]
    assert np.array_equal(fmt.decode(others), fmt.base_format.decode(others))


def test_fp4_code_units_are_twice_e2m1():
    assert np.array_equal(fm.get("fp4").levels, 2 * fm.get("fp4_e2m1").levels)
    assert np.array_equal(fm.get("fp4").decode(np.arange(16)),
                          2 * fm.get("fp4_e2m1").decode(np.arange(16)))
    assert fm.get("fp3").decode(np.arange(8)).tolist() == [0, 1, 2, 4, -0.0, -1, -2, -4]


@pytest.mark.parametrize(("bits", "kind", "expected"), [
    (3, "mixture", ["fp3_er_pos", "fp3_er_neg", "fp3_ea_pos", "fp3_ea_neg"]),
    (4, "mixture", ["fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"]),
    (3, "er", ["fp3_er_pos", "fp3_er_neg"]), (4, "ea", ["fp4_ea_pos", "fp4_ea_neg"]),
    (3, "ant", ["int3_sym", "fp3"]), (4, "ant", ["int4_sym", "flint4"]),
])
def test_bitmod_candidates(bits, kind, expected):
    got = fm.bitmod_candidates(bits, kind)
    assert got == expected
    assert all(fm.get(n).bits == bits for n in got)


@pytest.mark.parametrize(("bits", "kind"), [(5, "mixture"), (4, "olive")])
def test_bitmod_candidates_rejects(bits, kind):
    with pytest.raises(ValueError, match=str(bits) if bits == 5 else kind):
        fm.bitmod_candidates(bits, kind)


# --------------------------------------------------------------------------------------------
# Fixed point (docs/papers.md, Fixed point)
# --------------------------------------------------------------------------------------------

# Q(8, 0): inputs are half-LSB ties and non-ties. Hand-derived from the ap_fixed table:
# TRN floors; TRN_ZERO truncates; RND ties +inf; RND_ZERO ties to 0; RND_MIN_INF ties -inf;
# RND_INF ties away; RND_CONV ties to even. Non-ties (0.75, -1.25) round to nearest except
# under the TRN modes.
FIX_X = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.75, -1.25]
FIX_CASES = {
    "TRN":         [0, 1, 2, -1, -2, -3, 0, -2],
    "TRN_ZERO":    [0, 1, 2, 0, -1, -2, 0, -1],
    "RND":         [1, 2, 3, 0, -1, -2, 1, -1],
    "RND_ZERO":    [0, 1, 2, 0, -1, -2, 1, -1],
    "RND_MIN_INF": [0, 1, 2, -1, -2, -3, 1, -1],
    "RND_INF":     [1, 2, 3, -1, -2, -3, 1, -1],
    "RND_CONV":    [0, 2, 2, 0, -2, -2, 1, -1],
}


@pytest.mark.parametrize("rounding", list(FIX_CASES))
def test_fixed_rounding_modes(rounding):
    fmt = FixedPoint(8, 0, rounding)
    assert fmt.decode(fmt.encode(FIX_X)).tolist() == FIX_CASES[rounding]
    # The same in Q(8, 3): everything scales by the LSB 1/8.
    fmt3 = FixedPoint(8, 3, rounding)
    got = fmt3.decode(fmt3.encode(np.array(FIX_X) / 8))
    assert (got * 8).tolist() == FIX_CASES[rounding]


@pytest.mark.parametrize(("overflow", "x", "value", "code"), [
    ("SAT", 9.0, 7, 7), ("SAT", -9.0, -8, 8), ("SAT", np.inf, 7, 7),
    ("SAT_SYM", -9.0, -7, 9), ("SAT_SYM", -8.0, -7, 9), ("SAT_SYM", 100.0, 7, 7),
    ("SAT_ZERO", 9.0, 0, 0), ("SAT_ZERO", -9.0, 0, 0), ("SAT_ZERO", 7.0, 7, 7),
    ("WRAP", 9.0, -7, 9),      # 9 = 0b1001 -> two's complement -7
    ("WRAP", -9.0, 7, 7),      # -9 mod 16 = 7
    ("WRAP", 16.0 + 3.0, 3, 3),
])
def test_fixed_overflow_modes(overflow, x, value, code):
    fmt = FixedPoint(4, 0, overflow=overflow)
    assert fmt.encode(x) == code
    assert fmt.decode(code) == value


def test_fixed_matches_quantize_fixed_and_layout():
    fmt = fm.get("q8_4")
    assert (fmt.width, fmt.frac, fmt.rounding, fmt.overflow, fmt.signed) == (
        8, 4, "RND_CONV", "SAT", True)
    assert fmt.lsb == 1 / 16 and fmt.qmax == 8.0
    assert fmt.decode(0x18) == 1.5 and fmt.decode(0x80) == -8.0 and fmt.decode(0xFF) == -1 / 16
    x = np.random.default_rng(3).normal(size=1000) * 6
    q = quantize_fixed(x, 8, 4)
    assert np.array_equal(fmt.encode(x), q & 0xFF)
    assert np.array_equal(fmt.decode(fmt.encode(x)), q / 16)
    u = fm.get("uq6_2_trn_wrap")
    assert not u.signed and u.decode(63) == 15.75 and u.encode(16.0) == 0
    assert fm.get("q5_-1").levels.tolist() == list(range(-32, 31, 2))


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["int4", "uint8", "fp4_e2m1", "fp6_e3m2", "fp4_er_pos", "flint4",
                                  "binary", "fp_e3m0", "q8_4"])
def test_nan_rejected_where_no_nan_code(name):
    with pytest.raises(ValueError, match=f"NaN.*{name}|{name}.*NaN"):
        fm.get(name).encode([1.0, np.nan])


@pytest.mark.parametrize(("name", "code"), [("int4", 16), ("int4", -1), ("fp8_e4m3", 256),
                                            ("fp16", 1 << 16), ("fp32", 1 << 32), ("q8_4", 300)])
def test_code_out_of_range(name, code):
    with pytest.raises(ValueError, match=f"code {code} out of range for {name}"):
        fm.get(name).decode(np.array([0, code]))


def test_code_out_of_range_uint64():
    with pytest.raises(ValueError, match="out of range"):
        fm.get("int8").decode(np.array([2**63 + 5], dtype=np.uint64))


@pytest.mark.parametrize("codes", [1.0, np.array([1.5]), "3", np.array([True])])
def test_codes_must_be_integers(codes):
    with pytest.raises(TypeError, match="integer"):
        fm.get("int4").decode(codes)


@pytest.mark.parametrize("x", ["1.0", np.array([1 + 2j]), np.array([True]), [object()]])
def test_encode_rejects_non_real(x):
    with pytest.raises(TypeError, match="cannot encode"):
        fm.get("int4").encode(x)


@pytest.mark.parametrize(("name", "kwargs", "exc", "match"), [
    ("int4", {"ties": "nearest"}, ValueError, "ties"),
    ("int4", {"saturate": False}, ValueError, "always saturates"),
    ("fp4_e2m1", {"saturate": False}, ValueError, "always saturates"),
    ("int4", {"saturate": "yes"}, TypeError, "saturate"),
    ("q8_4", {"ties": "down"}, ValueError, "RND_CONV"),
    ("q8_4", {"saturate": False}, ValueError, "SAT"),
    ("q8_4_wrap", {"saturate": True}, ValueError, "WRAP"),
])
def test_encode_rejects_bad_options(name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fm.get(name).encode([1.0], **kwargs)


@pytest.mark.parametrize("x", [0.0, -0.0, -1.0, -np.inf])
def test_e8m0_rejects_non_positive(x):
    with pytest.raises(ValueError, match="e8m0"):
        fm.get("e8m0").encode([1.0, x])


def test_wrap_rejects_inf():
    with pytest.raises(ValueError, match="Inf"):
        fm.get("q8_4_wrap").encode(np.inf)


def test_enumeration_limits():
    with pytest.raises(ValueError, match="enumeration"):
        fm.get("fp32").codes()
    with pytest.raises(ValueError, match="enumeration"):
        _ = FixedPoint(32, 8).levels
    assert FixedPoint(32, 8).qmax == 2**31 / 256  # largest |level| is the most negative
    assert FixedPoint(32, 8, overflow="SAT_SYM").qmax == (2**31 - 1) / 256


@pytest.mark.parametrize(("factory", "match"), [
    (lambda: MiniFloat(9, 2), "exp_bits"),
    (lambda: MiniFloat(5, 11), "bits"),
    (lambda: MiniFloat(4, 3, specials="ocp"), "specials"),
    (lambda: MiniFloat(1, 0, specials="ieee"), "no nonzero"),
    (lambda: MiniFloat(8, 23, bias=100), "binary32"),
    (lambda: IntFormat(4, signed=False, symmetric=True), "symmetric"),
    (lambda: IntFormat(17), "bits"),
    (lambda: ExtendedFormat(fm.get("fp4"), 0), "nonzero"),
    (lambda: ExtendedFormat(fm.get("fp4"), np.inf), "finite"),
    (lambda: ExtendedFormat(fm.get("int4"), 9), "redundant zero"),
    (lambda: TableFormat("t3", [0, 1, 2]), "2\\*\\*bits"),
    (lambda: FixedPoint(8, 4, "ROUND"), "rounding"),
    (lambda: FixedPoint(8, 4, overflow="SAT_SYM", signed=False), "SAT_SYM"),
    (lambda: ExponentFormat(8, bias=2000), "bias"),
])
def test_constructor_validation(factory, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


# --------------------------------------------------------------------------------------------
# Shapes, dtypes, helpers
# --------------------------------------------------------------------------------------------

def test_shapes_and_dtypes_preserved():
    fmt = fm.get("fp8_e4m3")
    x = np.linspace(-500, 500, 24).reshape(2, 3, 4)
    c = fmt.encode(x)
    assert c.shape == (2, 3, 4) and c.dtype == np.int64
    v = fmt.decode(c)
    assert v.shape == (2, 3, 4) and v.dtype == np.float64
    assert fmt.encode(3.0).shape == () and fmt.decode(5).shape == ()
    assert fmt.encode(np.array([1.5], dtype=ml_dtypes.bfloat16)).tolist() == [fmt.encode(1.5)]
    assert fmt.encode(np.array([3], dtype=np.int16)).tolist() == [fmt.encode(3.0)]
    assert fmt.decode(np.array([56], dtype=np.uint8)).tolist() == [1.0]


def test_symmetric_int_decodes_but_never_encodes_min():
    fmt = fm.get("int4_sym")
    assert fmt.decode(8) == -8
    assert fmt.encode(-8.0) == 9  # -7
    assert fmt.encode(-100.0) == 9
    assert fmt.qmax == 7


def test_uint_saturates_negative_to_zero():
    assert fm.get("uint4").encode([-3.0, -np.inf, 15.4, 99.0]).tolist() == [0, 0, 15, 15]


@pytest.mark.parametrize(("x", "e"), [
    (1.0, 0), (1.5, 0), (2.0, 1), (0.75, -1), (2.0**-1074, -1074), (3e38, 127),
    (448.0, 8), (np.nextafter(2.0, 0.0), 0),
])
def test_floor_log2(x, e):
    assert fm.floor_log2(x) == e
    assert fm.floor_log2(np.array([x, x])).tolist() == [e, e]


@pytest.mark.parametrize("x", [0.0, -1.0, np.inf, np.nan])
def test_floor_log2_rejects(x):
    with pytest.raises(ValueError, match="positive finite"):
        fm.floor_log2([1.0, x])


def test_repr_and_hash():
    fmt = fm.get("fp8_e4m3")
    assert repr(fmt) == ("MiniFloat(exp_bits=4, man_bits=3, bias=7, subnormals=True, "
                         "specials='fn', name='fp8_e4m3')")
    assert "special_value=10" in repr(fm.get("fp4_er_pos"))
    assert {fm.get("fp8_e4m3"): 1}[MiniFloat(4, 3, 7, True, "fn")] == 1


def test_large_encode_is_vectorised():
    # Functional check on a full 4096 x 4096 matrix (timings are measured by benchmarks,
    # not asserted here): agrees with the ml_dtypes cast of the clipped input.
    x = np.random.default_rng(4).standard_normal((4096, 4096), dtype=np.float32) * 3
    fmt = fm.get("fp4_e2m1")
    c = fmt.encode(x)
    assert c.shape == x.shape
    sub = np.s_[::97, ::89]
    ml = ml_values(np.clip(x[sub], -6, 6), ml_dtypes.float4_e2m1fn)
    assert np.array_equal(fmt.decode(c[sub]), ml)


# --------------------------------------------------------------------------------------------
# K-hot (QFX) formats
# --------------------------------------------------------------------------------------------

def test_naf_digits_against_exhaustive_search():
    # The NAF's nonzero count is the fewest signed powers of two (breadth-first search), its
    # digits sum to v and no two nonzero digits are adjacent.
    fewest = fewest_power_terms()
    for v, n in fewest.items():
        digits = fm.naf_digits(v)
        assert sum(d * 2**i for i, d in enumerate(digits)) == v
        assert set(digits) <= {-1, 0, 1} and (not digits or digits[-1] != 0)
        assert all(not (a and b) for a, b in itertools.pairwise(digits)), v
        assert sum(d != 0 for d in digits) == n, v
    print(f"checked {len(fewest)} integers")


@pytest.mark.parametrize("k", [1, 2, 3])
def test_khot_levels_against_exhaustive_enumeration(k):
    fmt = fm.get(f"khot{k}")
    mags = khot_magnitudes(k)
    # Allowing exponents up to 10 adds no level of [-128, 128]: 0..7 is the whole range.
    assert khot_magnitudes(k, max_exp=10) == mags
    fewest = fewest_power_terms()
    assert mags == [v for v in range(129) if fewest[v] <= k]
    ref = sorted({s * v for v in mags for s in (1, -1)})
    assert fmt.levels.tolist() == ref
    assert fmt.magnitudes == tuple(mags) and fmt.qmax == 128
    assert fmt.bits == 1 + (len(mags) - 1).bit_length() <= 8
    print(f"khot{k}: {len(ref)} levels, {fmt.bits}-bit codes")


def test_khot4_would_be_every_integer():
    # Why the family stops at K = 3: four terms reach every integer of [-128, 128].
    assert khot_magnitudes(4) == list(range(129))
    with pytest.raises(ValueError, match=r"terms must be in 1\.\.3, not 4"):
        KHotFormat(4)
    with pytest.raises(ValueError, match="not 0"):
        KHotFormat(0)
    with pytest.raises(TypeError, match="terms"):
        KHotFormat(2.0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_khot_code_layout(k):
    # Canonical codes: +0, then both signs of every nonzero magnitude index; the redundant
    # ones (-0 and the unused indices) decode to zero.
    fmt = fm.get(f"khot{k}")
    mags = khot_magnitudes(k)
    half = 1 << (fmt.bits - 1)
    canon = fmt.canonical_codes().tolist()
    assert canon == list(range(len(mags))) + list(range(half + 1, half + len(mags)))
    unused = [c for c in fmt.codes().tolist() if c & (half - 1) >= len(mags) or c == half]
    assert (fmt.decode(unused) == 0).all()
    assert np.signbit(fmt.decode(unused)).tolist() == [c >= half for c in unused]
    assert fmt.encode(-128.0) == half | mags.index(128)
    assert fmt.encode(1e9) == mags.index(128) and fmt.encode(-0.0) == 0


def test_khot_ties_go_to_the_even_index():
    fmt = fm.get("khot2")
    mags = khot_magnitudes(2)
    for lo, hi in itertools.pairwise(mags):
        even = lo if mags.index(lo) % 2 == 0 else hi
        for sign in (1, -1):
            got = fmt.decode(fmt.encode(sign * (lo + hi) / 2))
            assert got == sign * even, (lo, hi)
            assert fmt.decode(fmt.encode(sign * (lo + hi) / 2, ties="down")) == (
                sign * lo if sign > 0 else -hi)


def test_formats_command_prints_khot_codes(capsys):
    from bitmod.tools.cli import main

    assert main(["formats", "khot2", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    fmt = fm.get("khot2")
    assert [row["value"] for row in table["codes"]] == fmt.decode(fmt.codes()).tolist()
    assert table["levels"] == len(khot_magnitudes(2)) * 2 - 1 and table["bits"] == 7

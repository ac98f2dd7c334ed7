"""golden/gemm.py: the core's bit-exact GEMM model against independent references."""

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from bitmod.golden import bfp
from bitmod.golden import gemm as ggemm
from bitmod.golden.pe import pe_reference
from bitmod.golden.quantize import quantize

BITMOD = ["fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"]


def _case(act_format, scheme="bitmod4", m=5, n=13, k=3 * 16 + 4, seed=0, **params):
    formats = BITMOD if scheme == "bitmod4" else "int8_sym" if scheme == "int8" else "int4_sym"
    cfg = ggemm.ArrayConfig(group_size=16, formats=formats, act_format=act_format, **params)
    rng = np.random.default_rng(seed)
    qt = quantize(rng.standard_normal((n, k)), scheme, group_size=16, scale_format="int8")
    x = rng.standard_normal((m, k))
    x *= np.repeat(np.exp2(rng.integers(-14, 3, size=(m, -(-k // 16)))), 16, axis=1)[:, :k]
    return cfg, qt, x


def _padded(a, group_size):
    k = a.shape[1]
    return np.pad(a, ((0, 0), (0, -k % group_size)))


@pytest.mark.parametrize("act_format", ["int8", "fp16", "bf16"])
@pytest.mark.parametrize("scheme", ["bitmod4", "int8", "int4"])
def test_accumulators_equal_the_pe_reference(act_format, scheme):
    """acc = sum_g (group sum * q) << e, recomputed per output by golden.pe.pe_reference
    (decoded levels, no term decomposition, Python integers)."""
    cfg, qt, x = _case(act_format, scheme)
    if act_format == "int8":
        xq, scale = ggemm.quantize_activations_int8(x)
        res = ggemm.gemm(xq, qt, cfg, scale)
    else:
        res = ggemm.gemm(x, qt, cfg)
    a = _padded(res.acts["mant"], 16)
    codes = _padded(qt.codes.astype(np.int64), 16)  # code 0 is a zero level in every format
    m, n = res.acc.shape
    for i in range(m):
        ref = pe_reference(codes, qt.selectors, np.broadcast_to(a[i], codes.shape),
                           qt.scale_codes, np.broadcast_to(res.acts["shift"][i], qt.scales.shape),
                           list(qt.formats), 16)
        assert (res.acc[i].astype(object) == ref).all()
    print(f"checked {m * n} accumulators")


@pytest.mark.parametrize("act_format", ["int8", "fp16"])
def test_drain_is_fp32_rne_of_the_exact_value(act_format):
    """|acc| < 2**53 here, so float64(acc) * 2**x is exact and one float32 cast is RNE."""
    cfg, qt, x = _case(act_format, m=8, n=16, seed=4)
    xq = ggemm.quantize_activations_int8(x)[0] if act_format == "int8" else x
    res = ggemm.gemm(xq, qt, cfg)
    assert (np.abs(res.acc) < 2**53).all()
    exact = np.ldexp(res.acc.astype(np.float64), res.exp_offset - res.in_frac)
    assert (res.codes == exact.astype(np.float32).view(np.uint32).astype(np.int64)).all()


def _fp16_rne(value: Fraction) -> int:
    """IEEE binary16 code of one RNE rounding of the exact ``value`` (gradual underflow,
    overflow to Inf): an independent reference in exact rational arithmetic."""
    sign = 0x8000 if value < 0 else 0
    mag = abs(value)
    if mag == 0:
        return sign
    e = max(math.floor(math.log2(mag)), -14)
    while mag >= Fraction(2) ** (e + 1):  # log2 of a Fraction may be off by one
        e += 1
    while e > -14 and mag < Fraction(2) ** e:
        e -= 1
    q = mag / Fraction(2) ** (e - 10)  # 1024 <= q < 2048 (normal) or q < 1024 (subnormal)
    n = math.floor(q)
    rest = q - n
    n += rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2 == 1)
    if n == 2048:  # the rounding carried into the next binade
        n, e = 1024, e + 1
    if e > 15:
        return sign | 0x7C00
    if n < 1024:
        return sign | n  # subnormal (e == -14), or zero after rounding
    return sign | (e + 15) << 10 | (n - 1024)


@pytest.mark.parametrize("act_format", ["int8", "fp16"])
def test_drain_fp16_is_one_rne_rounding_of_the_exact_value(act_format):
    """out_format="fp16": every code is one RNE rounding of acc * 2**(base - in_frac), checked
    against numpy's direct float64 -> float16 cast (exact float64 here) and against an exact
    rational reference; then the host factors apply in float32 to the FP16 value."""
    cfg, qt, x = _case(act_format, m=8, n=16, seed=4, out_format="fp16")
    cfg32 = ggemm.ArrayConfig(group_size=16, formats=BITMOD, act_format=act_format)
    assert (cfg.out_bits, cfg32.out_bits) == (16, 32)
    if act_format == "int8":
        # Code units (activation code x level x scale code) overflow FP16: Inf outputs.
        xq, act_scale = ggemm.quantize_activations_int8(x)
    else:
        x[0] = 0.0
        x[0, 5] = 2.0**-24  # the smallest FP16 subnormal: subnormal outputs
        x[1] *= 6.0e4 / np.abs(x[1]).max()  # near FP16's largest: overflowing outputs
        xq, act_scale = x.astype(np.float16), None
    res = ggemm.gemm(xq, qt, cfg, act_scale)
    res32 = ggemm.gemm(xq, qt, cfg32, act_scale)
    assert (res.acc == res32.acc).all()  # only the drain differs
    assert (np.abs(res.acc) < 2**53).all()
    exact = np.ldexp(res.acc.astype(np.float64), res.exp_offset - res.in_frac)
    with np.errstate(over="ignore"):  # the overflow to Inf is the point
        half = exact.astype(np.float16)
    assert (res.codes == half.view(np.uint16).astype(np.int64)).all()
    rational = [_fp16_rne(Fraction(int(a)) * Fraction(2) ** int(e - res.in_frac))
                for a, e in zip(res.acc.ravel(), res.exp_offset.ravel(), strict=True)]
    assert (res.codes.ravel() == np.array(rational)).all()
    mag = res.codes & 0x7FFF
    assert (mag == 0x7C00).any(), "the case must overflow to Inf"
    assert ((mag > 0) & (mag < 0x7C00)).any()
    if act_format == "fp16":
        assert ((mag > 0) & (mag < 0x0400)).any(), "the case must give subnormals"
    # Host: float32(FP16 value) * channel (* act_scale), each a float32 RNE multiply.
    value = res.codes.astype(np.uint16).view(np.float16).astype(np.float32)
    assert (value.astype(np.float64) == res.codes.astype(np.uint16).view(np.float16)
            .astype(np.float64)).all()
    y = value * qt.channel_scales.astype(np.float32)[None, :]
    if act_scale is not None:
        y = y * act_scale[:, None]
    assert np.array_equal(res.y, y)
    assert res.y.dtype == np.float32
    print(f"checked {res.codes.size} FP16 codes ({int((mag == 0x7C00).sum())} Inf)")


def test_out_format_is_validated():
    for bad in ("bf16", "fp8_e4m3", 16, None):
        with pytest.raises(ValueError, match="out_format"):
            ggemm.ArrayConfig(out_format=bad)


def test_fp16_block_alignment():
    """Mantissas are the block conversion of each group aligned to max(gexp, base); shifts fit
    the window; the dequantized activations are within half an LSB of the FP16 inputs."""
    cfg, _, x = _case("fp16", m=6, k=80, seed=2, act_exp_bits=2)
    acts = ggemm.act_mantissas(x.astype(np.float16), cfg)
    window = (1 << cfg.act_exp_bits) - 1
    assert (acts["shift"] >= 0).all() and (acts["shift"] <= window).all()
    assert (acts["base"] >= 1).all()
    assert (acts["base"] > 1).any(), "the case must exercise the token floor"
    anchor = acts["shift"] + acts["base"][:, None]
    value = np.ldexp(acts["mant"].astype(np.float64),
                     np.repeat(anchor, 16, axis=1)[:, :80] - bfp.scale_offset("fp16", 12))
    lsb = np.ldexp(1.0, np.repeat(anchor, 16, axis=1)[:, :80] - bfp.scale_offset("fp16", 12))
    assert (np.abs(value - x.astype(np.float16).astype(np.float64)) <= lsb / 2).all()


def test_output_close_to_float_reference():
    cfg, qt, x = _case("fp16", m=4, n=8, k=64, seed=7)
    res = ggemm.gemm(x, qt, cfg)
    ref = x.astype(np.float16).astype(np.float64) @ qt.dequantize().T
    err = np.abs(res.y - ref).max() / np.abs(ref).max()
    assert err < 1e-2
    xq, scale = ggemm.quantize_activations_int8(x)
    cfg8 = ggemm.ArrayConfig(group_size=16, formats=BITMOD)
    y8 = ggemm.gemm(xq, qt, cfg8, scale).y
    ref8 = (xq * scale[:, None].astype(np.float64)) @ qt.dequantize().T
    assert np.abs(y8 - ref8).max() / np.abs(ref8).max() < 1e-5


def test_unsupported_schemes_and_parameters():
    w = np.random.default_rng(1).standard_normal((4, 32))
    cfg = ggemm.ArrayConfig(group_size=16, formats=BITMOD)
    x = np.zeros((2, 32), np.int8)
    with pytest.raises(ValueError, match="scale_format='int8'"):
        ggemm.gemm(x, quantize(w, "bitmod4", group_size=16), cfg)
    with pytest.raises(ValueError, match="scale_format='int8'"):
        ggemm.gemm(x, quantize(w, "int4_asym", group_size=16), cfg)
    with pytest.raises(ValueError, match="core_tensor"):
        ggemm.gemm(x, quantize(w, "mxfp4"), cfg)
    with pytest.raises(ValueError, match="group_size"):
        ggemm.gemm(x, quantize(w, "bitmod4", group_size=8, scale_format="int8"), cfg)
    with pytest.raises(ValueError, match="K = 31"):
        ggemm.gemm(np.zeros((2, 31), np.int8), quantize(w, "bitmod4", group_size=16,
                                                        scale_format="int8"), cfg)
    with pytest.raises(ValueError, match="at most 64 bits"):
        ggemm.ArrayConfig(act_format="fp16", mant_width=16, act_exp_bits=6)
    with pytest.raises(ValueError, match="act_format"):
        ggemm.ArrayConfig(act_format="fp8")
    with pytest.raises(ValueError, match="NaN"):
        ggemm.act_mantissas(np.array([[np.inf] * 32], np.float16),
                            ggemm.ArrayConfig(group_size=16, act_format="fp16"))


def test_asymmetric_weights_subtract_zero_points():
    """int4_asym/int3_asym with int8 group scales: levels are code - zero point, and the
    datapath's output matches the dequantized weights' product within the FP16 drain's
    rounding."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 80)) + 0.3  # skewed: zero points away from the middle
    for scheme, fmt in (("int4_asym", "uint4"), ("int3_asym", "uint3")):
        qt = quantize(w, scheme, group_size=32, scale_format="int8")
        zp = np.repeat(qt.zero_points, 32, axis=1)[:, :80]
        np.testing.assert_array_equal(ggemm.weight_levels(qt), qt.codes.astype(np.int64) - zp)
        cfg = ggemm.ArrayConfig(group_size=32, formats=(fmt,), act_format="fp16")
        x = rng.standard_normal((5, 80)).astype(np.float16)
        res = ggemm.gemm(x, qt, cfg)
        ref = x.astype(np.float64) @ qt.dequantize().T
        assert np.abs(res.y - ref).max() / np.abs(ref).max() < 1e-2


ASYM = [("int2_asym", "int3"), ("int3_asym", "int4"), ("int4_asym", "int5")]
MX = ["mxfp4", "mxfp6", "mxfp6_e3m2", "mxfp8", "mxfp8_e5m2", "mxint8"]


@pytest.mark.parametrize(("scheme", "folded"), ASYM)
def test_core_tensor_folds_zero_points(scheme, folded):
    """The folded tensor has the same levels and values, and the datapath gives the same
    output codes as with the zero points subtracted in the datapath (an independent path:
    weight_levels of the unsigned codes minus z), on skewed random weights with every zero
    point of the range and a ragged last group."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((24, 72)) + rng.uniform(-2, 2, size=(24, 1))
    qt = quantize(w, scheme, group_size=16, scale_format="int8")
    bits = qt.bits
    assert set(np.unique(qt.zero_points)) >= {0, (1 << bits) - 1}, "corner zero points"
    ct = ggemm.core_tensor(qt)
    assert ct.formats == (folded,) == ggemm.scheme_formats(scheme)
    assert ct.zero_points is None and ct.bits == bits + 1
    np.testing.assert_array_equal(ggemm.weight_levels(ct), ggemm.weight_levels(qt))
    np.testing.assert_array_equal(ct.dequantize(), qt.dequantize())
    x = rng.standard_normal((5, 72)).astype(np.float16)
    codes_native = ggemm.gemm(x, qt, ggemm.ArrayConfig(group_size=16, formats=qt.formats,
                                                       act_format="fp16")).codes
    codes_core = ggemm.gemm(x, ct, ggemm.ArrayConfig(group_size=16, formats=ct.formats,
                                                     act_format="fp16")).codes
    np.testing.assert_array_equal(codes_core, codes_native)


@pytest.mark.parametrize("scheme", ["int2_asym", "int3_asym", "int4_asym", "int8_asym"])
def test_core_tensor_offsets_codes_for_zero_point_correction(scheme):
    """``zero_points=True``: ``int<B>`` codes ``code - 2**(B-1)`` (the top bit inverted) and
    signed zero points ``z - 2**(B-1)``, the same levels and values as the scheme's; the
    datapath with the correction (ArrayConfig zero_points) gives the codes of the unsigned
    tensor's. int8_asym, whose folded levels would need int9, runs this way."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((24, 72)) + rng.uniform(-2, 2, size=(24, 1))
    qt = quantize(w, scheme, group_size=16, scale_format="int8")
    bits, half = qt.bits, 1 << (qt.bits - 1)
    assert set(np.unique(qt.zero_points)) >= {0, (1 << bits) - 1}, "corner zero points"
    ct = ggemm.core_tensor(qt, zero_points=True)
    assert ct.formats == (f"int{bits}",) == ggemm.scheme_formats(scheme, zero_points=True)
    assert ct.bits == bits
    np.testing.assert_array_equal(ct.codes, qt.codes ^ half)
    np.testing.assert_array_equal(ct.zero_points, qt.zero_points - half)
    assert ct.zero_points.min() == -half and ct.zero_points.max() == half - 1
    np.testing.assert_array_equal(ggemm.weight_levels(ct), ggemm.weight_levels(qt))
    np.testing.assert_array_equal(ct.dequantize(), qt.dequantize())
    x = rng.standard_normal((5, 72)).astype(np.float16)
    codes_native = ggemm.gemm(x, qt, ggemm.ArrayConfig(group_size=16, formats=qt.formats,
                                                       act_format="fp16")).codes
    cfg = ggemm.ArrayConfig(group_size=16, formats=ct.formats, act_format="fp16",
                            zero_points=True)
    np.testing.assert_array_equal(ggemm.gemm(x, ct, cfg).codes, codes_native)
    assert ggemm.runs_zero_points(scheme, "bitserial")
    assert not ggemm.runs_zero_points(scheme, "lut")
    # Signed zero points are levels of the signed format: one beyond is refused.
    with pytest.raises(ValueError, match="zero_points must be in"):
        dataclasses.replace(ct, zero_points=np.full_like(ct.zero_points, half))


@pytest.mark.parametrize(("scheme", "levels"), [("bitmod4", "int6"), ("bitmod3", "int4")])
@pytest.mark.parametrize("kind", ["int", "lut", "bitplane"])
def test_mixtures_run_as_their_integer_values_on_kinds_without_mixtures(scheme, levels, kind):
    """BitMoD's per-group mixture on a PE kind without selectors: the decoded values (all
    integers, bitmod4's in [-16, 16]) as ``int<B>`` codes, the same scaled weights; the int PE's
    datapath gives the bit-serial mixture datapath's output codes. The independent check:
    the format table's own decode of the new codes equals the mixture's decoded values."""
    from bitmod.golden import formats

    rng = np.random.default_rng(9)
    w = rng.standard_normal((24, 72)) * rng.uniform(0.1, 3, size=(24, 1))
    qt = quantize(w, scheme, group_size=16, scale_format="int8")
    assert len(set(np.unique(qt.selectors))) == len(qt.formats), "every format is used"
    values = np.concatenate([formats.get(n).decode(np.arange(1 << qt.bits)) for n in qt.formats])
    lo, hi = int(values.min()), int(values.max())
    assert ggemm.integer_levels_format(qt.formats) == levels
    assert -(1 << (int(levels[3:]) - 1)) <= lo and hi < 1 << (int(levels[3:]) - 1)
    assert not (-(1 << (int(levels[3:]) - 2)) <= lo and hi < 1 << (int(levels[3:]) - 2))
    assert ggemm.scheme_formats(scheme, pe_kind_name=kind) == (levels,)
    assert ggemm.scheme_formats(scheme) == tuple(qt.formats)  # the bit-serial PE: unchanged
    ct = ggemm.core_tensor(qt, pe_kind_name=kind)
    assert ct.formats == (levels,) and ct.selectors is None
    np.testing.assert_array_equal(formats.get(levels).decode(ct.codes), qt.decoded())
    np.testing.assert_array_equal(ct.dequantize(), qt.dequantize())
    assert ggemm.core_tensor(qt) is qt
    if kind == "int":
        x = rng.standard_normal((5, 72)).astype(np.float16)
        native = ggemm.gemm(x, qt, ggemm.ArrayConfig(group_size=16, formats=qt.formats,
                                                     act_format="fp16")).codes
        cfg = ggemm.ArrayConfig(group_size=16, formats=ct.formats, act_format="fp16",
                                pe_kind="int")
        np.testing.assert_array_equal(ggemm.gemm(x, ct, cfg).codes, native)


def test_runs_as_is_and_core_weights():
    """A kind takes a scheme as it is unless its check refuses the formats or it would run a
    mixture as wider integer values; core_weights pairs the formats with the zero-point flag."""
    assert ggemm.runs_as_is("bitmod4", "bitserial") and ggemm.runs_as_is("int4", "int")
    assert not ggemm.runs_as_is("bitmod4", "int") and not ggemm.runs_as_is("fp4", "int")
    assert ggemm.core_weights("bitmod4", "int") == (("int6",), False)
    assert ggemm.core_weights("int4_asym", "bitserial") == (("int4",), True)
    assert ggemm.core_weights("int4_asym", "int") == (("int5",), False)


def test_formats_with_fractions_are_not_folded():
    """FP4 E2M1 has 0.5 and 1.5: no integer levels, so the int PE still refuses the scheme."""
    assert ggemm.integer_levels_format(("fp4_e2m1",)) is None
    assert ggemm.scheme_formats("fp4", pe_kind_name="int") == ("fp4_e2m1",)
    assert not ggemm.folds_mixture(("fp4_e2m1",), "int")
    with pytest.raises(ValueError, match="the int PE multiplies one signed integer format"):
        ggemm.ArrayConfig(group_size=16, formats=("fp4_e2m1",), pe_kind="int")


def test_zero_point_widths():
    """The correction lane's activation holds ``-sum_k a_k`` at its extreme (``G * 128`` for
    G INT8 activations of -128), and the group bound doubles (golden.pe)."""
    plain = ggemm.ArrayConfig(group_size=16, formats="int4", act_format="int8").pe
    zp = ggemm.ArrayConfig(group_size=16, formats="int4", act_format="int8",
                           zero_points=True).pe
    width, top = zp.rowsum_width, 16 * 128  # -sum of 16 activations of -128
    assert width == 8 + 4 + 1
    assert top <= (1 << (width - 1)) - 1  # fits, and one bit fewer would not
    assert top > (1 << (width - 2)) - 1
    assert zp.group_bound == 2 * plain.group_bound
    assert zp.tree_lanes == plain.lanes + 1


def test_core_tensor_refuses_what_the_core_cannot_run():
    w = np.random.default_rng(1).standard_normal((4, 64))
    with pytest.raises(ValueError, match="need int9"):
        ggemm.core_tensor(quantize(w, "int8_asym", scale_format="int8"))
    with pytest.raises(ValueError, match="cannot run on the core"):
        ggemm.scheme_formats("int8_asym")
    qt = quantize(w, "bitmod4", scale_format="int8")
    assert ggemm.core_tensor(qt) is qt


@pytest.mark.parametrize("scheme", MX)
def test_core_tensor_mx_scales_as_int8_codes(scheme):
    """MX E8M0 block scales become codes 2**j and a power-of-two channel scale, the same
    values: random rows whose block scales span 0 .. 7 binades, a row whose low groups are all
    zero (far below its largest: code 0), and a row of zeros."""
    rng = np.random.default_rng(5)
    n, k = 10, 8 * 32
    w = rng.uniform(-1, 1, (n, k))
    w[:, ::32] = 1.0  # every block's absmax exactly 1 before the scaling below
    for i in range(8):  # row i: block j scaled by 2**(i * j / 7): span grows to 7 binades
        w[i] *= np.repeat(np.exp2(np.round(np.linspace(0, i, 8))), 32)
    w[8, :64] = 0.0
    w[8, 64:] *= 1e6
    w[9] = 0.0
    qt = quantize(w, scheme)
    ct = ggemm.core_tensor(qt)
    assert ct.scale_format == "int8" and ct.formats == qt.formats
    np.testing.assert_array_equal(ct.dequantize(), qt.dequantize())
    assert set(np.unique(ct.scale_codes)) <= {0, 1, 2, 4, 8, 16, 32, 64, 128}
    assert (ct.scale_codes.max(axis=1)[:9] == 128).all()
    assert (ct.scale_codes[8, :2] == 0).all()
    assert (ct.channel_scales.astype(np.float32) == ct.channel_scales).all()
    # FP8 E5M2 levels span 2**31 code units: a narrower activation mantissa keeps the
    # accumulator within the drain's 64 bits (ArrayConfig says so otherwise).
    narrow = {"mant_width": 8} if scheme == "mxfp8_e5m2" else {}
    cfg = ggemm.ArrayConfig(group_size=32, formats=ct.formats, act_format="fp16",
                            max_groups=k // 32, **narrow)
    x = rng.standard_normal((3, k)).astype(np.float16)
    res = ggemm.gemm(x, ct, cfg)
    ref = x.astype(np.float64) @ qt.dequantize().T
    # Within the activations' block rounding (a mantissa of mant_width bits, a few lost to
    # alignment in a block).
    assert np.abs(res.y - ref).max() <= 2.0 ** (3 - cfg.mant_width) * np.abs(ref).max()


def test_core_tensor_mx_span_beyond_the_codes_is_refused():
    w = np.ones((3, 64))
    w[1, 32:] = 2.0 ** -8  # channel 1: its second block is 8 binades below the first
    with pytest.raises(ValueError, match="channel 1's E8M0 block scales span 8 binades"):
        ggemm.core_tensor(quantize(w, "mxfp4"))


@pytest.mark.parametrize("a_bits, w_bits, bound", [(10, 7, 1 << 24), (20, 26, 1 << 52),
                                                  (20, 26, 1 << 60)])
def test_group_sums_blas_paths_are_exact(a_bits, w_bits, bound):
    """The float32 and float64 BLAS paths equal the int64 contraction at the largest bound
    each takes (every element at its extreme in one group: that group sum is the bound)."""
    rng = np.random.default_rng(3)
    a = rng.integers(-(1 << a_bits), 1 << a_bits, (3, 2, 64), dtype=np.int64)
    w = rng.integers(-(1 << w_bits), 1 << w_bits, (4, 2, 64), dtype=np.int64)
    a[0, 0, :] = -(1 << a_bits)
    w[0, 0, :] = -(1 << w_bits)
    exact = np.einsum("mgk,ngk->mng", a, w)
    np.testing.assert_array_equal(ggemm.group_sums(a, w, bound), exact)
    assert ggemm.group_sums(a, w, bound)[0, 0, 0] == 64 << (a_bits + w_bits)


def test_group_sums_odd_values_near_float32_limit():
    """Odd products whose sums need all 24 bits of a float32 significand."""
    a = np.full((1, 1, 128), 2047, np.int64)
    w = np.full((1, 1, 128), 63, np.int64)
    w[0, 0, ::2] = -63
    w[0, 0, 1] = 61
    exact = np.einsum("mgk,ngk->mng", a, w)
    np.testing.assert_array_equal(ggemm.group_sums(a, w, 128 * 2047 * 63), exact)


def test_cycle_model():
    cfg = ggemm.ArrayConfig(rows=8, cols=8, group_size=128, formats=BITMOD)
    # 256 x 256 x 256 on 8x8: 1024 tiles of 2 groups x 32 steps x 2 terms, compute bound.
    model = ggemm.gemm_cycles(256, 256, 256, cfg)
    assert model["tiles"] == 1024
    assert model["compute_cycles"] == 1024 * 128
    assert model["utilization"] > 0.9
    # Short groups wait for the dequantizer: G = 16, L = 4, T = 2 -> 8 cycles, D = 8, and the
    # first group of every tile but the first needs D + 2 = 10.
    small = ggemm.ArrayConfig(rows=2, cols=2, group_size=16, formats=BITMOD)
    assert ggemm.tile_cycles(52, small, first=True) == 8 + 8 + 8 + 8
    assert ggemm.tile_cycles(52, small) == 10 + 8 + 8 + 8
    print(f"256^3 on 8x8: {model['cycles']} cycles, utilization {model['utilization']:.3f}")


@pytest.mark.parametrize(("formats", "act_format", "scale_bits", "max_groups"), [
    ("int4_sym", "fp16", 8, 3), ("int8_sym", "int8", 8, 256), ("int5", "fp16", 0, 12),
    ("int2", "bf16", 4, 1)])
def test_int_pe_kind_parameters(formats, act_format, scale_bits, max_groups):
    """The int PE kind: one cycle per weight-step, group ends scale_bits + 1 apart, and the
    accumulator width the RTL's IntPE derives on its own (hdl/pe/baseline.py)."""
    from bitmod.hdl.pe.baseline import IntPE

    cfg = ggemm.ArrayConfig(formats=formats, act_format=act_format, scale_bits=scale_bits,
                            max_groups=max_groups, group_size=16, pe_kind="int")
    assert cfg.terms == 1 and cfg.dequant_cycles == scale_bits + 1
    pe = IntPE(lanes=cfg.lanes, weight_bits=cfg.geometry.code_bits, act_width=cfg.act_width,
               group_size=cfg.group_size, scale_bits=scale_bits, exp_bits=cfg.act_exp_bits,
               max_groups=max_groups)
    assert cfg.acc_width == pe.acc_width
    assert cfg.latency == pe.latency + ggemm.MERGE_LATENCY + ggemm.TO_FLOAT_LATENCY
    # Two groups of 4 one-cycle steps: the schedule waits for the dequantizer when it is
    # slower (the first group of a tile after another: D + 2).
    d = scale_bits + 1
    assert ggemm.tile_cycles(32, cfg) == max(4, d + 2) + max(4, d)


def test_int_pe_kind_refuses_other_formats():
    for formats in ("fp4", "uint4", ["fp4_er_pos", "fp4_er_neg"]):
        with pytest.raises(ValueError, match="the int PE multiplies one signed integer"):
            ggemm.ArrayConfig(formats=formats, pe_kind="int")
    with pytest.raises(ValueError, match="pe_kind must be one of bitserial, int"):
        ggemm.ArrayConfig(pe_kind="lutt")


def test_weight_levels_table_equals_the_decomposition_of_each_weight():
    """weight_levels reads a (selector, code) table: on every quantizable scheme it gives the
    levels that decomposing each weight into terms gives (with its group's selector and the
    default special values), and codes or selectors outside the table are refused, not
    used as an index."""
    from bitmod.golden import terms as gterms
    from bitmod.golden.quantize import group_index, scheme_names

    rng = np.random.default_rng(3)
    w = rng.standard_normal((24, 200)) * rng.exponential(1.0, (24, 1)) + 0.2
    checked = 0
    for scheme in scheme_names():
        qt = quantize(w, scheme, group_size=32)
        names = list(qt.formats)
        try:
            geo = gterms.geometry(names)
        except ValueError:  # a mixture the term encoder refuses (ANT): refused alike
            with pytest.raises(ValueError, match="cannot be mixed"):
                ggemm.weight_levels(qt)
            continue
        groups = group_index(200, 32)
        sel = None if qt.selectors is None else qt.selectors.astype(np.int64)[:, groups]
        special = gterms.default_special_values(names) if geo.has_register else None
        each = gterms.terms_value(gterms.decompose(qt.codes.astype(np.int64), names, sel,
                                                   special))
        if qt.zero_points is not None:
            each = each - qt.zero_points.astype(np.int64)[:, groups]
        np.testing.assert_array_equal(ggemm.weight_levels(qt), each, err_msg=scheme)
        checked += 1
    assert checked >= 20
    # A tensor's arrays are validated when it is made; one changed afterwards is refused here.
    for field, value, message in (("codes", 16, "codes .* must be in 0..15, not 16"),
                                  ("selectors", 4, "selectors .* must be in 0..3, not 4")):
        qt = quantize(w, "bitmod4", group_size=32)
        bad = getattr(qt, field).astype(np.int64)
        bad.flat[5] = value
        object.__setattr__(qt, field, bad)
        with pytest.raises(ValueError, match=message):
            ggemm.weight_levels(qt)

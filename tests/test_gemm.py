"""golden/gemm.py: the core's bit-exact GEMM model against independent references."""

import numpy as np
import pytest

from golden import bfp
from golden import gemm as ggemm
from golden.pe import pe_reference
from golden.quantize import quantize

BITMOD = ["fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"]


def _case(act_format, scheme="bitmod4", m=5, n=13, k=3 * 16 + 4, seed=0, **params):
    formats = BITMOD if scheme == "bitmod4" else "int8_sym" if scheme == "int8" else "int4_sym"
    cfg = ggemm.core_config(group_size=16, formats=formats, act_format=act_format, **params)
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
    cfg8 = ggemm.core_config(group_size=16, formats=BITMOD)
    y8 = ggemm.gemm(xq, qt, cfg8, scale).y
    ref8 = (xq * scale[:, None].astype(np.float64)) @ qt.dequantize().T
    assert np.abs(y8 - ref8).max() / np.abs(ref8).max() < 1e-5


def test_unsupported_schemes_and_parameters():
    w = np.random.default_rng(1).standard_normal((4, 32))
    cfg = ggemm.core_config(group_size=16, formats=BITMOD)
    x = np.zeros((2, 32), np.int8)
    with pytest.raises(ValueError, match="scale_format='int8'"):
        ggemm.gemm(x, quantize(w, "bitmod4", group_size=16), cfg)
    with pytest.raises(ValueError, match="zero points"):
        ggemm.gemm(x, quantize(w, "int4_asym", group_size=16), cfg)
    with pytest.raises(ValueError, match="MX"):
        ggemm.gemm(x, quantize(w, "mxfp4"), cfg)
    with pytest.raises(ValueError, match="group_size"):
        ggemm.gemm(x, quantize(w, "bitmod4", group_size=8, scale_format="int8"), cfg)
    with pytest.raises(ValueError, match="K = 31"):
        ggemm.gemm(np.zeros((2, 31), np.int8), quantize(w, "bitmod4", group_size=16,
                                                        scale_format="int8"), cfg)
    with pytest.raises(ValueError, match="at most 64 bits"):
        ggemm.core_config(act_format="fp16", mant_width=16, act_exp_bits=6)
    with pytest.raises(ValueError, match="act_format"):
        ggemm.core_config(act_format="fp8")
    with pytest.raises(ValueError, match="NaN"):
        ggemm.act_mantissas(np.array([[np.inf] * 32], np.float16),
                            ggemm.core_config(group_size=16, act_format="fp16"))


def test_cycle_model():
    cfg = ggemm.core_config(rows=8, cols=8, group_size=128, formats=BITMOD)
    # 256 x 256 x 256 on 8x8: 1024 tiles of 2 groups x 32 steps x 2 terms, compute bound.
    model = ggemm.gemm_cycles(256, 256, 256, cfg)
    assert model["tiles"] == 1024
    assert model["compute_cycles"] == 1024 * 128
    assert model["utilization"] > 0.9
    # Short groups wait for the dequantizer: G = 16, L = 4, T = 2 -> 8 cycles, D = 8, and the
    # first group of every tile but the first needs D + 2 = 10.
    small = ggemm.core_config(rows=2, cols=2, group_size=16, formats=BITMOD)
    assert ggemm.tile_cycles(52, small, first=True) == 8 + 8 + 8 + 8
    assert ggemm.tile_cycles(52, small) == 10 + 8 + 8 + 8
    print(f"256^3 on 8x8: {model['cycles']} cycles, utilization {model['utilization']:.3f}")

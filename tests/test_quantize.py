"""Tests for golden.quantize: group quantization, BitMoD selection, MX, INT baselines, storage."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitmod.golden import formats
from bitmod.golden import quantize as Q  # noqa: N812 - short alias for the module under test
from bitmod.golden.quantize import QuantizedTensor, Scheme, group_mse, quantize

REQUIRED = [
    "bitmod4", "bitmod3", "bitmod4_er", "bitmod4_ea", "bitmod3_er", "bitmod3_ea", "ant4", "ant3",
    "int4_asym", "int3_asym", "int4", "int3", "int6", "int8", "fp4", "fp3", "mxfp4", "mxfp6",
    "mxfp8", "mxint8", "bitmod4_int8scale", "bitmod3_int8scale",
]
MOD_SCHEMES = [n for n in Q.scheme_names() if Q.get_scheme(n).kind == "mod"]


def gaussian(n, k, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal((n, k)) * scale


def heavy_tailed(n, k, seed=1):
    """Groups with skewed outliers, so that every BitMoD candidate gets selected somewhere."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(3, size=(n, k)) * 0.02
    w[rng.random((n, k)) < 0.01] *= 8
    return w


def single(name: str, scale_format="fp16", ties="down") -> Scheme:
    return Scheme(f"only_{name}", "sym", (name,), 128, scale_format, ties, "one candidate")


# ---------------------------------------------------------------------------- registry --------


def test_registry_has_required_schemes():
    names = Q.scheme_names()
    assert set(REQUIRED) <= set(names)
    for name in names:
        spec = Q.get_scheme(name)
        assert spec.name == name and spec.bits >= 2


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("kind,suffix", [("mixture", ""), ("er", "_er"), ("ea", "_ea")])
def test_bitmod_candidates_match_formats(bits, kind, suffix):
    assert Q.get_scheme(f"bitmod{bits}{suffix}").formats == tuple(
        formats.bitmod_candidates(bits, kind))
    assert Q.get_scheme(f"ant{bits}").formats == tuple(formats.bitmod_candidates(bits, "ant"))


def test_unknown_scheme_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown scheme 'bitmod5'.*valid schemes:.*bitmod4"):
        quantize(np.ones((2, 4)), "bitmod5")


# ---------------------------------------------------------------------- level rounding --------


@pytest.mark.parametrize("name", sorted({f for n in Q.scheme_names()
                                         for f in Q.get_scheme(n).formats}))
@pytest.mark.parametrize("ties", ["down", "even"])
def test_nearest_level_matches_format_encode(name, ties):
    """The fast level search equals golden.formats' encode (saturating), ties included."""
    table = Q._table(name)
    fmt = formats.get(name)
    rng = np.random.default_rng(3)
    x = np.concatenate([
        table.midpoints, -table.midpoints, table.levels, np.nextafter(table.midpoints, np.inf),
        np.nextafter(table.midpoints, -np.inf), rng.uniform(-1.3, 1.3, 2000) * table.qmax,
        [table.qmax * 10, -table.qmax * 10, 0.0, -0.0],
    ])
    idx = Q._nearest_index(x, table, ties)
    expect = fmt.encode(x, ties=ties, saturate=True)
    np.testing.assert_array_equal(table.level_codes[idx], expect)
    np.testing.assert_array_equal(table.levels[idx], fmt.decode(expect) + 0.0)


# --------------------------------------------------------------------------- BitMoD ---------


@pytest.mark.parametrize("scheme", [s for s in MOD_SCHEMES if "int8scale" not in s])
@pytest.mark.parametrize("data", ["gaussian", "heavy"])
def test_mod_never_worse_than_any_candidate(scheme, data):
    w = gaussian(24, 300, seed=5) * 0.05 if data == "gaussian" else heavy_tailed(24, 300)
    qt = quantize(w, scheme)
    mod_mse = group_mse(w, qt.dequantize(), 128)
    per_cand = []
    for name in qt.formats:
        alone = quantize(w, single(name))
        assert alone.selectors is None
        per_cand.append(group_mse(w, alone.dequantize(), 128))
    per_cand = np.stack(per_cand)
    assert np.all(mod_mse[None] <= per_cand)
    np.testing.assert_array_equal(mod_mse, per_cand.min(axis=0))
    # the selector is the *first* candidate reaching the minimum (strict "<" scan)
    np.testing.assert_array_equal(qt.selectors, np.argmin(per_cand, axis=0))
    # and the codes of each group are the single-candidate codes of the selected type
    for c, name in enumerate(qt.formats):
        alone = quantize(w, single(name))
        mask = np.repeat(qt.selectors == c, 128, axis=1)[:, :300]
        np.testing.assert_array_equal(qt.codes[mask], alone.codes[mask])


def test_heavy_tailed_data_uses_every_bitmod_candidate():
    qt = quantize(heavy_tailed(64, 1024), "bitmod4")
    assert all(count > 0 for count in qt.selector_histogram().values())


def _tie_group():
    """A group on which FP4_ER_POS and FP4_ER_NEG tie exactly and EA types are worse.

    scale = 12/12 = 1 for ER (exact in FP16): +-12, +-1, +-3 are exact levels of both ER types;
    2.5 -> 2 and -2.5 -> -3 (ties to the lower level) cost 0.25 each in both. EA (scale 0.75)
    cannot represent +-1 (-> +-0.75).
    """
    w = np.zeros((1, 128))
    w[0, :8] = [12, -12, 2.5, -2.5, 3, -3, 1, -1]
    w[0, 8:48] = np.tile([1.0, -1.0], 20)
    return w


def test_selection_tie_goes_to_first_candidate():
    w = _tie_group()
    er_pos = quantize(w, single("fp4_er_pos"))
    er_neg = quantize(w, single("fp4_er_neg"))
    m_pos = group_mse(w, er_pos.dequantize(), 128)[0, 0]
    m_neg = group_mse(w, er_neg.dequantize(), 128)[0, 0]
    assert m_pos == m_neg == 0.5 / 128  # an exact tie, nonzero
    for name in ("fp4_ea_pos", "fp4_ea_neg"):
        assert group_mse(w, quantize(w, single(name)).dequantize(), 128)[0, 0] > m_pos
    qt = quantize(w, "bitmod4")
    assert qt.selectors[0, 0] == 0 and qt.formats[0] == "fp4_er_pos"
    # ties down inside the group: 2.5 -> 2, -2.5 -> -3
    np.testing.assert_array_equal(qt.dequantize()[0, 2:4], [2.0, -3.0])
    # reversed candidate order: the tie now goes to FP4_ER_NEG, again the first one
    rev = Scheme("rev", "mod", ("fp4_er_neg", "fp4_er_pos"), 128, "fp16", "down", "reversed")
    qr = quantize(w, rev)
    assert qr.selectors[0, 0] == 0 and qr.formats[0] == "fp4_er_neg"
    # a strictly better later candidate is taken: -10 needs FP4_ER_NEG
    w2 = w.copy()
    w2[0, 60] = -10.0
    assert quantize(w2, "bitmod4").selectors[0, 0] == 1


def test_bitmod3_hand_case():
    """FP3_EA_NEG (special -6) fits a group with one strong negative outlier exactly."""
    w = np.array([[-6.0, 4, 2, 1, 0, -1, -2, -4]])
    qt = quantize(w, "bitmod3", group_size=8)
    assert qt.formats[qt.selectors[0, 0]] == "fp3_ea_neg"
    assert qt.scales[0, 0] == 1.0
    np.testing.assert_array_equal(qt.dequantize(), w)
    # -0 code (100) carries the special value -6
    assert qt.codes[0, 0] == 0b100


# ------------------------------------------------------------------------ ragged groups -------


@pytest.mark.parametrize("scheme", ["bitmod4", "bitmod3", "ant4", "int4_asym", "int4", "fp3",
                                    "mxfp4", "mxint8"])
def test_ragged_last_group_uses_its_own_statistics(scheme):
    w = gaussian(6, 300, seed=9)
    w[:, 256:] *= 1e-3  # a last group (44 elements) with a tiny range
    qt = quantize(w, scheme, group_size=128)
    assert qt.scales.shape == (6, 3) and qt.codes.shape == (6, 300)
    head = quantize(w[:, :256], scheme, group_size=128)
    tail = quantize(w[:, 256:], scheme, group_size=128)
    np.testing.assert_array_equal(qt.codes, np.concatenate([head.codes, tail.codes], axis=1))
    np.testing.assert_array_equal(qt.scales, np.concatenate([head.scales, tail.scales], axis=1))
    if qt.selectors is not None:
        np.testing.assert_array_equal(qt.selectors[:, 2], tail.selectors[:, 0])
    # the ragged group keeps a relative error comparable to the full ones
    err = group_mse(w, qt.dequantize(), 128) / group_mse(w, np.zeros_like(w), 128)
    assert err[:, 2].max() < 0.2


def test_group_larger_than_k_is_one_ragged_group():
    w = gaussian(3, 50)
    qt = quantize(w, "bitmod4", group_size=128)
    assert qt.scales.shape == (3, 1)
    np.testing.assert_array_equal(qt.codes, quantize(w, "bitmod4", group_size=50).codes)


# ----------------------------------------------------------------------- INT baselines --------


def asym_reference(w, bits, group):
    """The INT-asym formula of docs/papers.md, FP16 scales, round half to even."""
    qmax = 2**bits - 1
    codes = np.empty(w.shape, dtype=np.int64)
    out = np.empty(w.shape)
    for r in range(w.shape[0]):
        for g0 in range(0, w.shape[1], group):
            x = w[r, g0:g0 + group]
            scale = float(np.float16(min(max((x.max() - x.min()) / qmax, 1e-5), 1e4)))
            zp = min(max(np.rint(-x.min() / scale), 0), qmax)
            q = np.clip(np.rint(x / scale) + zp, 0, qmax)
            codes[r, g0:g0 + group] = q
            out[r, g0:g0 + group] = (q - zp) * scale
    return codes, out


@pytest.mark.parametrize("bits", [3, 4])
def test_asym_matches_direct_formula_on_named_cases(bits):
    rows = [
        np.linspace(-1, 1, 64),                 # symmetric range
        np.linspace(0.5, 2.0, 64),              # all positive: zero point clamps to 0
        np.linspace(-3.0, -0.25, 64),           # all negative: zero point clamps to 2^b - 1
        np.full(64, 0.3),                       # constant: scale clamps to 1e-5
        np.zeros(64),                           # all zero
        np.r_[np.linspace(-0.1, 0.1, 63), 4.0],  # one outlier
        np.random.default_rng(2).standard_normal(64) * 0.02,
        np.arange(64) * 0.25 - 8,               # many exact halves after scaling
    ]
    w = np.stack(rows)
    qt = quantize(w, f"int{bits}_asym", group_size=32)
    codes, deq = asym_reference(w, bits, 32)
    np.testing.assert_array_equal(qt.codes, codes)
    np.testing.assert_array_equal(qt.dequantize(), deq)
    assert qt.formats == (f"uint{bits}",) and qt.zero_points.dtype == np.int64


def test_asym_hand_case_round_half_even():
    # range 3.75 / 15 = 0.25 exactly; zp = 4; 0.625/0.25 = 2.5 -> 2, 0.875/0.25 = 3.5 -> 4
    w = np.array([[-1.0, 0.0, 0.625, 0.875, 2.75, 0.75]])
    qt = quantize(w, "int4_asym", group_size=6)
    assert qt.scales[0, 0] == 0.25 and qt.zero_points[0, 0] == 4
    np.testing.assert_array_equal(qt.codes, [[0, 4, 6, 8, 15, 7]])
    np.testing.assert_array_equal(qt.dequantize(), [[-1.0, 0.0, 0.5, 1.0, 2.75, 0.75]])


def test_sym_int_hand_case():
    # scale 7/7 = 1: 2.5 -> 2 and -2.5 -> -2 (half to even), 3.5 -> 4; codes are bit patterns
    w = np.array([[7.0, 2.5, -2.5, 3.5, -7.0, 0.0]])
    qt = quantize(w, "int4", group_size=6)
    np.testing.assert_array_equal(qt.dequantize(), [[7.0, 2.0, -2.0, 4.0, -7.0, 0.0]])
    np.testing.assert_array_equal(qt.codes, [[7, 2, 14, 4, 9, 0]])


def test_zero_matrix_and_scale_clamp():
    qt = quantize(np.zeros((2, 256)), "bitmod4")
    assert np.all(qt.dequantize() == 0)
    assert np.all(qt.scales == float(np.float16(1e-5)))
    big = quantize(np.full((1, 128), 1e7), "int8")
    assert big.scales[0, 0] == 1e4  # upper clamp (exact in FP16 as 10000)


# ---------------------------------------------------------------------------------- MX --------


@pytest.mark.parametrize("amax,emax,expect", [
    (6.0, 2, 0), (7.0, 2, 0), (12.0, 2, 1), (5.99, 2, 0), (0.75, 2, -3),
    (448.0, 8, 0), (500.0, 8, 0), (1.0, 0, 0), (0.0, 2, -127), (2.0**-200, 2, -127),
    (2.0**200, 2, 127), (7.5, 2, 0), (57344.0, 15, 0),
])
def test_mx_shared_exponent_floor_rule(amax, emax, expect):
    assert int(Q.mx_shared_exponent(np.array([amax]), emax)[0]) == expect


@pytest.mark.parametrize("amax,shared", [(6.0, 0), (7.0, 0), (12.0, 1), (0.3, -4)])
def test_mxfp4_block_hand_cases(amax, shared):
    w = np.zeros((1, 32))
    w[0, 0] = amax
    w[0, 1] = -amax / 3
    qt = quantize(w, "mxfp4")
    assert qt.group_size == 32 and qt.scale_format == "e8m0"
    assert qt.scale_codes[0, 0] == shared + 127 and qt.scales[0, 0] == 2.0**shared
    x = w / 2.0**shared
    expect = np.clip(x, -6, 6).astype(ml_dtypes.float4_e2m1fn).astype(np.float64) * 2.0**shared
    np.testing.assert_array_equal(qt.dequantize(), expect)
    if amax == 7.0:
        assert qt.dequantize()[0, 0] == 6.0  # clamped to max normal


@pytest.mark.parametrize("scheme,dtype,maxnorm", [
    ("mxfp4", ml_dtypes.float4_e2m1fn, 6.0), ("mxfp6", ml_dtypes.float6_e2m3fn, 7.5),
    ("mxfp6_e3m2", ml_dtypes.float6_e3m2fn, 28.0), ("mxfp8", ml_dtypes.float8_e4m3fn, 448.0),
    ("mxfp8_e5m2", ml_dtypes.float8_e5m2, 57344.0),
])
def test_mx_elements_are_rne_like_ml_dtypes(scheme, dtype, maxnorm):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((16, 96)) * np.exp(rng.uniform(-6, 6, (16, 1)))
    w[0, :32] = 0.0  # an all-zero block
    qt = quantize(w, scheme)
    scale = np.repeat(qt.scales, 32, axis=1)
    expect = np.clip(w / scale, -maxnorm, maxnorm).astype(dtype).astype(np.float64) * scale
    np.testing.assert_array_equal(qt.dequantize(), expect)
    emax = int(np.floor(np.log2(maxnorm)))
    amax = np.abs(w).reshape(16, 3, 32).max(-1)
    with np.errstate(divide="ignore"):
        ref = np.where(amax > 0, np.floor(np.log2(np.where(amax > 0, amax, 1))) - emax, -127)
    np.testing.assert_array_equal(qt.scale_codes, ref + 127)


def test_mxint8():
    w = np.zeros((1, 64))
    w[0, :4] = [1.0, -1.0, 0.5, 1.99]
    w[0, 32:35] = [3.0, -3.0, 1.0 / 64]
    qt = quantize(w, "mxint8")
    assert qt.formats == ("int8_sym",)
    # block 0: amax 1.99 -> shared 0 -> element unit 2^-6; 1.99*64 = 127.36 -> 127
    assert qt.scale_codes[0, 0] == 127 and qt.scales[0, 0] == 2.0**-6
    np.testing.assert_array_equal(qt.dequantize()[0, :4], [1.0, -1.0, 0.5, 127 / 64])
    # block 1: amax 3 -> shared 1; 3/2 * 64 = 96; 1/64 / 2 * 64 = 0.5 -> 0 (half to even)
    assert qt.scale_codes[0, 1] == 128
    np.testing.assert_array_equal(qt.dequantize()[0, 32:35], [3.0, -3.0, 0.0])
    assert 0x80 not in qt.codes  # -128 is never produced


# --------------------------------------------------------------------- INT8 group scales ------


@pytest.mark.parametrize("scheme", ["bitmod4_int8scale", "bitmod3_int8scale"])
def test_int8_scales_structure_and_selection(scheme):
    w = heavy_tailed(16, 384, seed=7)
    qt = quantize(w, scheme)
    assert qt.scale_format == "int8"
    assert qt.scale_codes.dtype == np.int64 and qt.scale_codes.min() >= 0
    assert qt.scale_codes.max() <= 255
    ch = qt.channel_scales
    assert ch.shape == (16,) and np.array_equal(ch.astype(np.float32).astype(np.float64), ch)
    np.testing.assert_array_equal(qt.scales, qt.scale_codes * ch[:, None])
    # reference: the channel scale comes from the largest candidate scale of the row
    tables = [Q._table(n) for n in qt.formats]
    absmax = np.abs(w).reshape(16, 3, 128).max(-1)
    ideal = np.stack([np.clip(absmax / t.qmax, 1e-5, 1e4) for t in tables])
    np.testing.assert_array_equal(ch, np.float32(ideal.max(axis=(0, 2)) / 255))
    # selection MSE after scale quantization (brute force with golden.formats.encode)
    best = np.full((16, 3), np.inf)
    sel = np.zeros((16, 3), dtype=int)
    for c, name in enumerate(qt.formats):
        fmt = formats.get(name)
        q = np.clip(np.rint(ideal[c] / ch[:, None]), 0, 255)
        s = q * ch[:, None]
        for r in range(16):
            for g in range(3):
                x = w[r, g * 128:(g + 1) * 128]
                v = fmt.decode(fmt.encode(x / s[r, g], ties="down")) * s[r, g] \
                    if s[r, g] > 0 else np.zeros_like(x)
                m = np.mean(np.square(v - x))
                if m < best[r, g]:
                    best[r, g], sel[r, g] = m, c
    np.testing.assert_array_equal(qt.selectors, sel)
    np.testing.assert_array_equal(group_mse(w, qt.dequantize(), 128), best)


def test_int8_scales_close_to_fp16_scales():
    w = gaussian(64, 1024, seed=11) * 0.03
    fp16 = np.mean(np.square(quantize(w, "bitmod4").dequantize() - w))
    int8 = np.mean(np.square(quantize(w, "bitmod4_int8scale").dequantize() - w))
    assert int8 < fp16 * 1.05


def test_int8_scale_zero_code_group_is_zero():
    w = np.zeros((1, 256))
    w[0, 0] = 100.0
    w[0, 128] = 1e-3  # scale rounds to code 0 next to a group 1e5 times larger
    qt = quantize(w, "bitmod4_int8scale")
    assert qt.scale_codes[0, 1] == 0
    assert np.all(qt.dequantize()[0, 128:] == 0)


def test_int8_scale_for_sym_and_bad_scale_formats():
    qt = quantize(gaussian(4, 256), "int4", scale_format="int8")
    assert qt.scale_codes is not None and qt.channel_scales is not None
    with pytest.raises(ValueError, match="scale format 'int8' is not valid for scheme 'mxfp4'"):
        quantize(gaussian(4, 64), "mxfp4", scale_format="int8")
    with pytest.raises(ValueError, match="scale format 'e8m0'"):
        quantize(gaussian(4, 64), "bitmod4", scale_format="e8m0")
    asym = quantize(gaussian(4, 256), "int4_asym", scale_format="int8")
    assert asym.scale_codes.min() >= 1 and asym.zero_points is not None
    with pytest.raises(ValueError, match="scale format 'e8m0'"):
        quantize(gaussian(4, 64), "int4_asym", scale_format="e8m0")


def test_scale_formats_fp32_fp64():
    w = gaussian(4, 256, seed=3)
    for fmt in ("fp16", "fp32", "fp64"):
        qt = quantize(w, "bitmod4", scale_format=fmt)
        tables = [Q._table(n) for n in qt.formats]
        qmax = np.array([t.qmax for t in tables])[qt.selectors]
        raw = np.abs(w).reshape(4, 2, 128).max(-1) / qmax
        cast = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64}[fmt]
        np.testing.assert_array_equal(qt.scales, raw.astype(cast).astype(np.float64))


# ---------------------------------------------------------------- packing and storage --------


def test_pack_known_bytes():
    assert Q.pack_codes(np.array([1, 2, 3]), 4) == bytes([0x21, 0x03])
    assert Q.pack_codes(np.array([5, 3, 7]), 3) == bytes([0b11011101, 0b1])
    np.testing.assert_array_equal(Q.unpack_codes(bytes([0x21, 0x03]), 4, (3,)), [1, 2, 3])


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 16]), n=st.integers(1, 5),
       k=st.integers(1, 37), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_and_bitplanes_round_trip(bits, n, k, seed):
    codes = np.random.default_rng(seed).integers(0, 2**bits, size=(n, k))
    data = Q.pack_codes(codes, bits)
    assert len(data) == -(-n * k * bits // 8)
    back = Q.unpack_codes(data, bits, (n, k))
    np.testing.assert_array_equal(back, codes)
    planes = Q.codes_to_bitplanes(codes, bits)
    assert planes.shape == (bits, n, k) and planes.dtype == np.uint8
    np.testing.assert_array_equal(planes[0], codes & 1)
    np.testing.assert_array_equal(Q.bitplanes_to_codes(planes), codes)


@settings(max_examples=20, deadline=None)
@given(scheme=st.sampled_from(["bitmod4", "bitmod3", "int4_asym", "mxfp6", "int8"]),
       n=st.integers(1, 4), k=st.integers(1, 300), seed=st.integers(0, 1000))
def test_quantized_tensor_pack_and_planes_round_trip(scheme, n, k, seed):
    qt = quantize(gaussian(n, k, seed), scheme)
    again = qt.unpack(qt.pack())
    assert again.equals(qt)
    assert qt.from_bitplanes(qt.bitplanes()).equals(qt)


def test_pack_errors():
    with pytest.raises(ValueError, match="do not fit in 3 bits"):
        Q.pack_codes(np.array([8]), 3)
    with pytest.raises(ValueError, match="expected 2"):
        Q.unpack_codes(b"\x00", 4, (4,))
    with pytest.raises(ValueError, match="bits must be"):
        Q.pack_codes(np.array([1]), 0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        Q.bitplanes_to_codes(np.full((2, 3), 2))


@pytest.mark.parametrize("scheme", ["bitmod4", "bitmod3_int8scale", "int3_asym", "mxint8",
                                    "mxfp4", "fp3"])
def test_save_load_round_trip(tmp_path, scheme):
    qt = quantize(heavy_tailed(5, 200), scheme)
    path = tmp_path / f"{scheme}.npz"
    qt.save(path)
    back = QuantizedTensor.load(path)
    assert back.equals(qt)
    assert back.formats == qt.formats and back.shape == qt.shape
    np.testing.assert_array_equal(back.dequantize(), qt.dequantize())


def test_load_rejects_other_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a quantized tensor file"):
        QuantizedTensor.load(path)


def test_codes_decode_to_levels_and_dtype():
    qt = quantize(heavy_tailed(8, 256), "bitmod4")
    assert qt.codes.dtype == np.uint8 and qt.codes.max() < 16 and qt.bits == 4
    dec = qt.decoded()
    for c, name in enumerate(qt.formats):
        mask = np.repeat(qt.selectors == c, 128, axis=1)
        assert np.isin(dec[mask], formats.get(name).levels).all()


# ----------------------------------------------------------------------------- bad input ------


@pytest.mark.parametrize("w,pattern", [
    (np.array([[1.0, np.nan, np.nan], [np.nan, 0, 0]]), "weight contains 3 NaN values"),
    (np.array([[1.0, np.inf, -np.inf]]), "weight contains 2 Inf values"),
    (np.array([[np.nan, np.inf]]), "1 NaN values and 1 Inf values"),
    (np.ones(8), "2-D"),
    (np.ones((2, 2, 2)), "2-D"),
    (np.ones((0, 8)), "empty"),
    (np.ones((4, 0)), "empty"),
    (np.ones((2, 2), dtype=complex), "real numeric"),
    (np.array([["a", "b"]]), "real numeric"),
])
def test_bad_weights(w, pattern):
    with pytest.raises(ValueError, match=pattern):
        quantize(w, "bitmod4")


@pytest.mark.parametrize("group_size", [0, -1, 1.5, True, "128"])
def test_bad_group_size(group_size):
    with pytest.raises(ValueError, match="group size must be a positive integer"):
        quantize(np.ones((2, 8)), "int4", group_size=group_size)


def test_accepts_float16_bf16_int_and_torch():
    import torch

    w = gaussian(4, 128, seed=2).astype(np.float32)
    ref = quantize(w, "bitmod4")
    assert quantize(torch.from_numpy(w), "bitmod4").equals(ref)
    assert quantize(w.astype(np.float16), "int8").shape == (4, 128)
    assert quantize(w.astype(ml_dtypes.bfloat16), "int8").shape == (4, 128)
    assert quantize(np.arange(256).reshape(2, 128) - 128, "int8").shape == (2, 128)
    assert quantize(w, "int4", group_size=np.int64(64)).group_size == 64


# ------------------------------------------------------------- issue 15: bad input, files ------


def test_group_size_beyond_k_is_one_group_per_row_without_a_big_allocation():
    """Item 1: ``_expand`` (and golden.gemm) repeated every group to its full size: a group
    size of 1e9 on 8x32 weights allocated 60 GiB. Now G >= K is one group per row, sized by K."""
    import tracemalloc

    from bitmod.golden import gemm as ggemm

    w = gaussian(8, 32, seed=3)
    big = 1 << 22  # before the fix: 8 x 2**22 float64 = 256 MiB per expanded array
    tracemalloc.start()
    try:
        qt = quantize(w, "bitmod4_int8scale", group_size=big)
        deq = qt.dequantize()
        cfg = ggemm.ArrayConfig(rows=1, cols=1, lanes=4, group_size=big, formats=qt.formats,
                                act_format="fp16", max_groups=1)
        x = gaussian(2, 32, seed=4).astype(np.float16)
        result = ggemm.gemm(x, qt, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak >> 20} MiB"
    per_row = quantize(w, "bitmod4_int8scale", group_size=32)
    assert qt.group_size == big and qt.n_groups == 1
    np.testing.assert_array_equal(qt.codes, per_row.codes)
    np.testing.assert_array_equal(qt.scales, per_row.scales)
    np.testing.assert_array_equal(deq, per_row.dequantize())
    cfg32 = ggemm.ArrayConfig(rows=1, cols=1, lanes=4, group_size=32, formats=qt.formats,
                              act_format="fp16", max_groups=1)
    np.testing.assert_array_equal(result.codes, ggemm.gemm(x, per_row, cfg32).codes)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"group_size": 0}, "group_size must be >= 1, not 0"),
    ({"group_size": -3}, "group_size must be >= 1"),
    ({"kind": "magic"}, "kind must be one of"),
    ({"ties": "up"}, "ties must be one of"),
    ({"scale_format": "fp8"}, "scale_format must be one of"),
    ({"formats": ()}, "no element format"),
    ({"formats": ("nosuch",)}, "nosuch"),
    ({"kind": "asym", "formats": ("uint4", "uint3")}, "one element format"),
    ({"element_unit": 0.0}, "element_unit must be positive"),
])
def test_scheme_validates_its_fields(kwargs, message):
    """Item 17: ``Scheme(group_size=0)`` raised ZeroDivisionError when used."""
    fields = {"name": "custom", "kind": "sym", "formats": ("int4_sym",), "group_size": 16,
              "scale_format": "fp16", "ties": "even", "description": "test"}
    with pytest.raises(ValueError, match=message):
        Scheme(**{**fields, **kwargs})


def test_clamped_groups_counts_the_groups_outside_the_scale_range():
    """Item 11: weights around 1e-12 or 1e30 quantize to 100 % error; the count says why."""
    w = gaussian(4, 64, seed=5)
    w[0] *= 1e-12  # both groups of row 0 need a scale below 1e-5
    w[1, :32] *= 1e30  # one group needs a scale above 1e4
    w[2, 32:] = 0.0  # a group of zeros is exact: not counted
    for scheme in ("bitmod4", "int4", "int4_asym", "bitmod4_int8scale"):
        qt = quantize(w, scheme, group_size=32)
        assert Q.clamped_groups(w, qt) == {"below": 2, "above": 1, "groups": 8}, scheme
    assert Q.clamped_groups(gaussian(4, 64), quantize(gaussian(4, 64), "bitmod4")) == {
        "below": 0, "above": 0, "groups": 4}
    assert Q.clamped_groups(w, quantize(w, "mxfp4"))["below"] == 0  # E8M0 has the range


def small_tensor() -> QuantizedTensor:
    return quantize(heavy_tailed(3, 40), "bitmod4_int8scale", group_size=16)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("codes", lambda q: q.codes + 16, "codes must be in 0..15"),
    ("codes", lambda q: q.codes.astype(np.float64), "codes must be an integer array"),
    ("selectors", lambda q: np.full_like(q.selectors, 4), "selectors must be in 0..3"),
    ("scales", lambda q: np.where(q.scales == q.scales.max(), np.nan, q.scales),
     "scales contain NaN"),
    ("scales", lambda q: -q.scales, "scales must be non-negative"),
    ("scale_codes", lambda q: q.scale_codes + 256, "scale_codes must be in 0..255"),
    ("channel_scales", lambda q: q.channel_scales[:2], "channel_scales has shape"),
    ("channel_scales", lambda q: q.channel_scales * 0, "channel_scales must be positive"),
    ("scales", lambda q: q.scales[:, :2], "scales has shape"),
])
def test_quantized_tensor_refuses_inconsistent_fields(field, value, message):
    """Item 16: out-of-range codes and selectors, NaN scales and wrong-shape channel scales
    made a tensor (and loaded from a file) without error."""
    qt = small_tensor()
    fields = {k: getattr(qt, k) for k in ("codes", "scales", "scheme", "formats", "group_size",
                                           "bits", "scale_format", "selectors", "zero_points",
                                           "scale_codes", "channel_scales")}
    fields[field] = value(qt)
    with pytest.raises(ValueError, match=message):
        QuantizedTensor(**fields)


def _load_outcome(path, original) -> str:
    try:
        back = QuantizedTensor.load(path)
    except Q.QuantizedFileError as error:
        assert "\n" not in str(error) and str(path) in str(error)
        return "refused"
    assert back.equals(original), "a damaged file loaded as a different tensor"
    return "identical"


def test_damaged_file_loads_identical_or_is_refused(tmp_path):
    """Item 16: 46 of 4,528 single-byte flips loaded a different tensor (a renamed member
    loaded with scales=None). Every flip of a seeded sample of bytes (and every byte of the
    zip directory, where the member names are) must load the same tensor or fail in one line."""
    qt = small_tensor()
    path = tmp_path / "q.npz"
    qt.save(path)
    raw = path.read_bytes()
    rng = np.random.default_rng(15)
    directory = raw.rindex(b"PK\x01\x02")  # the last central directory entry and the end record
    positions = set(rng.choice(len(raw), 300, replace=False).tolist())
    positions |= set(range(directory, len(raw)))
    outcomes = {"refused": 0, "identical": 0}
    damaged = tmp_path / "damaged.npz"
    for index in sorted(positions):
        flipped = bytearray(raw)
        flipped[index] ^= int(rng.integers(1, 256))
        damaged.write_bytes(flipped)
        outcomes[_load_outcome(damaged, qt)] += 1
    assert outcomes["refused"] > len(positions) // 2


def test_renamed_member_is_refused(tmp_path):
    qt = small_tensor()
    path = tmp_path / "q.npz"
    qt.save(path)
    path.write_bytes(path.read_bytes().replace(b"scales.npy", b"scalex.npy"))
    with pytest.raises(Q.QuantizedFileError, match="do not match the metadata"):
        QuantizedTensor.load(path)


def test_truncated_empty_and_foreign_files_are_one_line_errors(tmp_path):
    qt = small_tensor()
    path = tmp_path / "q.npz"
    qt.save(path)
    raw = path.read_bytes()
    cut = tmp_path / "cut.npz"
    for length in [0, 1, 4, 30, 100, len(raw) // 2, len(raw) - 22, len(raw) - 1]:
        cut.write_bytes(raw[:length])
        with pytest.raises(Q.QuantizedFileError) as info:
            QuantizedTensor.load(cut)
        assert "\n" not in str(info.value)
    npy = tmp_path / "plain.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(Q.QuantizedFileError, match=r"not an \.npz archive"):
        QuantizedTensor.load(npy)
    with pytest.raises(FileNotFoundError):
        QuantizedTensor.load(tmp_path / "missing.npz")


def test_file_with_a_valid_checksum_but_bad_values_is_refused(tmp_path):
    """A file written by another tool with a correct digest is still validated."""
    qt = small_tensor()
    meta = qt._meta()
    arrays = {k: getattr(qt, k) for k in meta["arrays"]}
    arrays["selectors"] = np.full_like(qt.selectors, 7)
    meta["sha256"] = Q._digest(meta, arrays)
    path = tmp_path / "crafted.npz"
    import json

    with open(path, "wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(Q.QuantizedFileError, match=r"selectors must be in 0\.\.3"):
        QuantizedTensor.load(path)


def test_version_1_files_are_refused_with_the_reason(tmp_path):
    qt = small_tensor()
    meta = {"version": 1, "scheme": qt.scheme, "formats": list(qt.formats),
            "group_size": qt.group_size, "bits": qt.bits, "scale_format": qt.scale_format}
    path = tmp_path / "old.npz"
    import json

    with open(path, "wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), codes=qt.codes, scales=qt.scales)
    with pytest.raises(Q.QuantizedFileError, match="version 1; this version of bitmod reads"):
        QuantizedTensor.load(path)


# ------------------------------------------------------------------------------ K-hot --------

KHOT = ["khot1", "khot2", "khot3"]


def khot_levels_by_search(k):
    """K-hot levels of [-128, 128] from every sum of at most k terms +-2**e, e = 0..9."""
    powers = [s * 2**e for e in range(10) for s in (1, -1)]
    sums = {0}
    for n in range(1, k + 1):
        sums |= {sum(c) for c in itertools.combinations_with_replacement(powers, n)}
    return sorted(v for v in sums if abs(v) <= 128)


@pytest.mark.parametrize("scale_format", ["fp16", "fp32", "fp64", "int8"])
@pytest.mark.parametrize("scheme", KHOT)
def test_khot_is_the_nearest_level(scheme, scale_format):
    # Brute force over the levels, in exact arithmetic, on w / s (the documented rule), with a
    # ragged last group and groups scaled over several orders of magnitude.
    k = int(scheme[-1])
    levels = khot_levels_by_search(k)
    w = gaussian(6, 300, seed=k) * np.logspace(-3, 2, 6)[:, None]
    qt = quantize(w, scheme, scale_format=scale_format)
    assert qt.bits <= 8 and qt.formats == (scheme,)
    s = qt.scales[:, Q.group_index(300, 128)]
    x = np.where(s == 0, 0.0, w / np.where(s == 0, 1.0, s))
    got = qt.decoded()
    for xv, gv in zip(x.ravel().tolist(), got.ravel().tolist(), strict=True):
        # Exact integer distances: x = num / den with den a power of two (a float64).
        num, den = xv.as_integer_ratio()
        nearest = min(abs(num - level * den) for level in levels)
        assert abs(num - int(gv) * den) == nearest, (xv, gv)
    # Group scale from absmax, as the INT schemes: absmax / 128 in the scale format.
    if scale_format != "int8":
        absmax = np.abs(w).reshape(6, -1)
        ideal = np.stack([absmax[:, :128].max(1), absmax[:, 128:256].max(1),
                          absmax[:, 256:].max(1)], axis=1) / 128
        cast = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64}[scale_format]
        np.testing.assert_array_equal(qt.scales, np.clip(ideal, 1e-5, 1e4).astype(cast))


def test_khot_ties_go_to_the_even_code():
    # Scale 128/128 = 1: every midpoint of khot2 is a tie; the even code (even magnitude index)
    # wins, as for INT (where the index is the magnitude).
    mags = [v for v in khot_levels_by_search(2) if v >= 0]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(mags)]
    w = np.array([[128.0, *mids, *(-m for m in mids)]])
    qt = quantize(w, "khot2", group_size=w.shape[1])
    assert qt.scales[0, 0] == 1.0
    want = [128.0]
    for sign in (1, -1):
        for a, b in itertools.pairwise(mags):
            want.append(sign * (a if mags.index(a) % 2 == 0 else b))
    np.testing.assert_array_equal(qt.dequantize()[0], want)
    assert (qt.codes[0, 1:] % 2 == 0).all()


@pytest.mark.parametrize("scheme", KHOT)
def test_khot_save_load_and_pack_round_trip(tmp_path, scheme):
    qt = quantize(heavy_tailed(5, 200), scheme, scale_format="int8")
    path = tmp_path / f"{scheme}.npz"
    qt.save(path)
    back = QuantizedTensor.load(path)
    assert back.equals(qt) and back.formats == (scheme,)
    np.testing.assert_array_equal(back.dequantize(), qt.dequantize())
    assert qt.unpack(qt.pack()).equals(qt)
    assert qt.from_bitplanes(qt.bitplanes()).equals(qt)


def test_khot_error_between_int4_and_int8():
    # More terms, finer levels: int8 < khot3 < khot2 < int4 in relative RMS on Gaussian rows,
    # and khot1 (powers of two only) is the coarsest of the K-hot schemes.
    w = gaussian(32, 512, seed=5)

    def rel_rms(scheme):
        err = quantize(w, scheme).dequantize() - w
        return float(np.sqrt(np.mean(err**2) / np.mean(w**2)))

    e = {name: rel_rms(name) for name in ["int8", "khot3", "khot2", "int4", "khot1"]}
    print({k: round(v, 5) for k, v in e.items()})
    assert e["int8"] < e["khot3"] < e["khot2"] < e["int4"]
    assert e["khot1"] > e["khot2"]

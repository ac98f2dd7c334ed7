"""Baseline PEs (hdl.pe.baseline) against golden.pe_baseline and independent references."""

from fractions import Fraction

import numpy as np
import pytest

from bitmod.golden import formats
from bitmod.golden import pe_baseline as gb
from bitmod.golden.minifloat_arith import operand_format
from bitmod.hdl.pe.baseline import IntPE, MinifloatPE
from bitmod.sim.amaranth_sim import run_simulation, stream_get, stream_put
from bitmod.sim.vectors import pack_fields, run_stream, unpack_fields

# One Verilator build per parameter set below. INT_PARAMS' group_size=64 is the largest group
# (16 cycles at 4 lanes, longer than the 8 + 1 dequant cycles); shorter groups test the stall.
INT_PARAMS = {"lanes": 4, "weight_bits": 8, "act_width": 8, "group_size": 64, "scale_bits": 8,
              "exp_bits": 2, "max_groups": 8}
E4M3_PARAMS = {"lanes": 4, "a_format": "fp8_e4m3", "w_format": "fp8_e4m3", "block": 32,
               "exp_bits": 2, "max_blocks": 8}
E5M2_PARAMS = {"lanes": 4, "a_format": "fp8_e5m2", "w_format": "fp8_e5m2", "block": 32,
               "exp_bits": 0, "max_blocks": 4}


# --------------------------------------------------------------------------------------------
# Independent references: decoded values, Python integers and Fractions
# --------------------------------------------------------------------------------------------

def int_reference(weights, acts, scale, exp, out_last, weight_bits, scale_bits):
    values = formats.get(f"int{weight_bits}").decode(np.asarray(weights))
    outputs, acc = [], 0
    for g in range(len(out_last)):
        gsum = sum(int(w) * int(a) for w, a in zip(values[g], acts[g], strict=True))
        acc += gsum * (int(scale[g]) if scale_bits else 1) * 2 ** int(exp[g])
        if out_last[g]:
            outputs.append(acc)
            acc = 0
    return outputs


def minifloat_reference(a_codes, w_codes, exp, out_last, a_format, w_format):
    """(exact value, invalid) per output from the formats' decoded values."""
    av = formats.get(a_format).decode(np.asarray(a_codes))
    wv = formats.get(w_format).decode(np.asarray(w_codes))
    outputs, acc, bad = [], Fraction(0), False
    for b in range(len(out_last)):
        for x, y in zip(av[b], wv[b], strict=True):
            if np.isfinite(x) and np.isfinite(y):
                acc += Fraction(float(x)) * Fraction(float(y)) * 2 ** int(exp[b])
            else:
                bad = True
        if out_last[b]:
            outputs.append((acc, bad))
            acc, bad = Fraction(0), False
    return outputs


# --------------------------------------------------------------------------------------------
# Stimulus helpers
# --------------------------------------------------------------------------------------------

def random_out_last(rng, n, max_groups):
    out_last = np.zeros(n, dtype=bool)
    i = -1
    while i < n - 1:
        i = min(n - 1, i + int(rng.integers(1, max_groups + 1)))
        out_last[i] = True
    return out_last


def int_case(rng, n, k, params, out_last=None, weights=None, acts=None):
    wb, aw = params["weight_bits"], params["act_width"]
    return {
        "weights": rng.integers(0, 1 << wb, (n, k)) if weights is None else weights,
        "acts": rng.integers(-(1 << (aw - 1)), 1 << (aw - 1), (n, k)) if acts is None else acts,
        "scale": rng.integers(0, 1 << params["scale_bits"], n),
        "exp": rng.integers(0, 1 << params["exp_bits"], n),
        "out_last": random_out_last(rng, n, params["max_groups"]) if out_last is None
        else out_last,
    }


def int_stream(pe, cases):
    """Concatenate cases (each ending with out_last) into flat payloads + golden outputs."""
    columns, refs = [], []
    for case in cases:
        columns.append(gb.int_pe_payloads(**case, lanes=pe.lanes))
        refs.extend(gb.int_pe_reference(**case, weight_bits=pe.weight_bits,
                                        scale_bits=pe.scale_bits))
        indep = int_reference(**case, weight_bits=pe.weight_bits, scale_bits=pe.scale_bits)
        assert indep == list(gb.int_pe_reference(**case, weight_bits=pe.weight_bits,
                                                 scale_bits=pe.scale_bits))
    f = {name: np.concatenate([c[name] for c in columns]) for name in columns[0]}
    payloads = pack_fields(
        pe.in_layout, weights=gb.pack_lanes(f["weights"], pe.weight_bits),
        acts=gb.pack_lanes(f["acts"], pe.act_width), group_last=f["group_last"],
        out_last=f["out_last"], scale=f["scale"], exp=f["exp"])
    return payloads, refs, f


def mf_case(rng, n, params, special_rate=0.0):
    a_fmt, w_fmt = formats.get(params["a_format"]), formats.get(params["w_format"])
    shape = (n, params["block"])
    a = rng.integers(0, 1 << a_fmt.bits, shape)
    w = rng.integers(0, 1 << w_fmt.bits, shape)
    # Random codes hit NaN/Inf often in E5M2 (1 in 8 codes); replace them by finite codes
    # except at the requested rate, so most outputs stay valid and their sums are checked.
    for codes, fmt in ((a, a_fmt), (w, w_fmt)):
        special = ~np.isfinite(fmt.decode(codes))
        keep = rng.random(shape) < special_rate
        codes[special & ~keep] &= ~(1 << (fmt.bits - 2))  # clear the exponent MSB: finite
    return {"a_codes": a, "w_codes": w,
            "exp": rng.integers(0, 1 << params["exp_bits"], n),
            "out_last": random_out_last(rng, n, params["max_blocks"])}


def mf_stream(pe, cases):
    columns, refs, exact = [], [], []
    for case in cases:
        columns.append(gb.minifloat_pe_payloads(**case, lanes=pe.lanes))
        acc, invalid = gb.minifloat_pe_reference(**case, a_format=pe.a_format,
                                                 w_format=pe.w_format)
        refs.extend(zip(acc, invalid, strict=True))
        exact.extend(minifloat_reference(**case, a_format=pe.a_format, w_format=pe.w_format))
    # Golden against the independent Fraction reference: acc is the exact value at 2**-F.
    scale = Fraction(1, 2 ** pe.frac_bits)
    assert [(Fraction(int(a)) * scale, bool(i)) for a, i in refs] == exact
    f = {name: np.concatenate([c[name] for c in columns]) for name in columns[0]}
    a_bits = formats.get(pe.a_format).bits
    w_bits = formats.get(pe.w_format).bits
    payloads = pack_fields(
        pe.in_layout, acts=gb.pack_lanes(f["acts"], a_bits),
        weights=gb.pack_lanes(f["weights"], w_bits), group_last=f["group_last"],
        out_last=f["out_last"], exp=f["exp"])
    return payloads, refs, f


def run_int(params, payloads, n_out, **kwargs):
    out = run_stream(IntPE, params, payloads, n_outputs=n_out, **kwargs)
    return [int(v) for v in unpack_fields(IntPE(**params).out_layout, out)["acc"]]


def run_mf(params, payloads, n_out, **kwargs):
    out = run_stream(MinifloatPE, params, payloads, n_outputs=n_out, **kwargs)
    fields = unpack_fields(MinifloatPE(**params).out_layout, out)
    return [(int(a), bool(i)) for a, i in zip(fields["acc"], fields["invalid"], strict=True)]


# --------------------------------------------------------------------------------------------
# Parameters and widths
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"lanes": 0}, "lanes"), ({"weight_bits": 1}, "weight_bits"), ({"act_width": 19},
                                                                    "act_width"),
    ({"group_size": 130}, "group_size"), ({"scale_bits": 17}, "scale_bits"),
    ({"exp_bits": 7}, "exp_bits"), ({"max_groups": 0}, "max_groups"),
    ({"acc_width": 37}, "acc_width"),
])
def test_int_pe_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        IntPE(**kwargs)


def test_int_pe_parameter_types():
    with pytest.raises(TypeError, match="lanes"):
        IntPE(lanes="4")
    with pytest.raises(TypeError, match="acc_width"):
        IntPE(acc_width=40.0)


@pytest.mark.parametrize("params", [
    {}, INT_PARAMS, {"lanes": 8, "weight_bits": 4, "act_width": 8, "group_size": 128,
                     "scale_bits": 0, "exp_bits": 3, "max_groups": 100},
])
def test_int_pe_widths_hold_the_worst_case(params):
    pe = IntPE(**params)
    wb, aw, G = pe.weight_bits, pe.act_width, pe.group_size
    s_max = (1 << pe.scale_bits) - 1 if pe.scale_bits else 1
    top = 2 ** ((1 << pe.exp_bits) - 1) * s_max * pe.max_groups * G
    # Most positive: both operands most negative; most negative: -2**(wb-1) * (2**(aw-1) - 1)
    # or its mirror, whichever is larger in magnitude.
    hi = 2 ** (wb - 1) * 2 ** (aw - 1)
    lo = -max(2 ** (wb - 1) * (2 ** (aw - 1) - 1), (2 ** (wb - 1) - 1) * 2 ** (aw - 1))

    def fits(value, width):
        return -(2 ** (width - 1)) <= value < 2 ** (width - 1)

    for width, factor in ((pe.group_width, G), (pe.dequant_width, G * s_max),
                          (pe.acc_width, top)):
        assert fits(hi * factor, width) and fits(lo * factor, width)
        assert not fits(hi * factor, width - 1)
    assert IntPE(**params, acc_width=pe.acc_width + 5).acc_width == pe.acc_width + 5
    assert pe.latency == gb.int_pe_latency(pe.scale_bits)
    assert pe.group_cycles == G // pe.lanes


def test_int_pe_default_widths():
    pe = IntPE()
    # int8 x int8: 2**14 per product; 128 of them; x255; x256 groups.
    assert (pe.group_width, pe.dequant_width, pe.acc_width) == (
        (128 * 2 ** 14).bit_length() + 1, (128 * 2 ** 14 * 255).bit_length() + 1,
        (256 * 128 * 2 ** 14 * 255).bit_length() + 1)


@pytest.mark.parametrize("kwargs, name", [
    ({"lanes": 0}, "lanes"), ({"a_format": "fp16"}, "a_format"), ({"w_format": "e8m0"},
                                                                  "w_format"),
    ({"a_format": "fp_e9m2"}, "a_format"), ({"block": 30}, "block"),
    ({"exp_bits": 7}, "exp_bits"), ({"max_blocks": 0}, "max_blocks"),
    ({"acc_width": 41}, "acc_width"),
])
def test_minifloat_pe_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MinifloatPE(**kwargs)


def max_product_magnitude(a_format, w_format):
    """Largest |a * w| * 2**F over finite codes, from the decoded values (independent)."""
    best = Fraction(0)
    for name in (a_format, w_format):
        fmt = formats.get(name)
        values = fmt.decode(np.arange(1 << fmt.bits))
        top = Fraction(float(np.abs(values[np.isfinite(values)]).max()))
        best = top if best == 0 else best * top
    product = best * 2 ** operand_format(a_format).frac_bits * 2 ** \
        operand_format(w_format).frac_bits
    assert product.denominator == 1
    return int(product)


@pytest.mark.parametrize("fmt, spec_bits", [
    ("fp4_e2m1", 14), ("fp6_e2m3", 18), ("fp6_e3m2", 24), ("fp8_e4m3", 42), ("fp8_e5m2", 70),
    ("int8", 21),  # published: 20 for MXINT8's +-127; a raw int8 code may be -128: 32 * 2**14
])
def test_minifloat_block_width_matches_spec(fmt, spec_bits):
    pe = MinifloatPE(lanes=4, a_format=fmt, w_format=fmt, block=32, exp_bits=3, max_blocks=50)
    assert pe.block_width == spec_bits
    top = max_product_magnitude(fmt, fmt)
    for width, bound in ((pe.block_width, 32 * top),
                         (pe.acc_width, 50 * 32 * top * 2 ** 7)):
        assert bound < 2 ** (width - 1) and not bound < 2 ** (width - 2)
    assert pe.latency == gb.MINIFLOAT_PE_LATENCY


# --------------------------------------------------------------------------------------------
# Amaranth simulator: short cases, each checked against golden
# --------------------------------------------------------------------------------------------

def _drive(pe, fields, n_outputs, read):
    names = list(fields)
    received = []

    async def producer(ctx):
        for c in range(len(fields[names[0]])):
            await stream_put(ctx, pe.i_stream, {name: fields[name][c] for name in names})

    async def consumer(ctx):
        for _ in range(n_outputs):
            received.append(read(await stream_get(ctx, pe.o_stream)))

    run_simulation(pe, [producer, consumer], deadline=1e-3)
    return received


def test_int_pe_amaranth_sim():
    rng = np.random.default_rng(3)
    params = {"lanes": 4, "weight_bits": 8, "act_width": 8, "group_size": 16, "scale_bits": 3,
              "exp_bits": 2, "max_groups": 8}
    pe = IntPE(**params)
    cases = [int_case(rng, 6, 16, params), int_case(rng, 5, 4, params)]  # 4 and 1 cycle groups
    fields = {}
    refs = []
    for case in cases:
        f = gb.int_pe_payloads(**case, lanes=4)
        for name, column in f.items():
            fields.setdefault(name, []).extend(column.tolist())
        refs.extend(gb.int_pe_reference(**case, weight_bits=8, scale_bits=3))
    fields["weights"] = [[w - 256 if w > 127 else w for w in row] for row in fields["weights"]]
    got = _drive(pe, fields, len(refs), lambda v: v.acc)
    assert got == refs
    print(f"checked {len(refs)} outputs, {len(fields['acts'])} cycles")


def test_minifloat_pe_amaranth_sim():
    rng = np.random.default_rng(4)
    params = {"lanes": 8, "a_format": "fp4_e2m1", "w_format": "fp4_e2m1", "block": 32,
              "exp_bits": 1, "max_blocks": 3}
    pe = MinifloatPE(**params)
    case = mf_case(rng, 5, params)
    # Every pair of E2M1 codes once: 256 products in the first 8 blocks' worth of lanes.
    codes = np.arange(16)
    pairs_a, pairs_w = np.meshgrid(codes, codes, indexing="ij")
    exhaustive = {"a_codes": pairs_a.reshape(8, 32), "w_codes": pairs_w.reshape(8, 32),
                  "exp": rng.integers(0, 2, 8), "out_last": np.ones(8, dtype=bool)}
    fields, refs = {}, []
    for c in (case, exhaustive):
        for name, column in gb.minifloat_pe_payloads(**c, lanes=8).items():
            fields.setdefault(name, []).extend(column.tolist())
        acc, inv = gb.minifloat_pe_reference(**c, a_format="fp4_e2m1", w_format="fp4_e2m1")
        refs.extend(zip(acc, inv, strict=True))
    got = _drive(pe, fields, len(refs), lambda v: (v.acc, bool(v.invalid)))
    assert got == [(int(a), bool(i)) for a, i in refs]
    # Each exhaustive block sum is also a sum of independently decoded products.
    values = formats.get("fp4_e2m1").decode(codes)
    table = {(i, j): Fraction(float(values[i])) * Fraction(float(values[j]))
             for i in range(16) for j in range(16)}
    for b in range(8):
        block = sum(table[int(i), int(j)] for i, j in zip(exhaustive["a_codes"][b],
                                                          exhaustive["w_codes"][b],
                                                          strict=True))
        expected = block * 2 ** int(exhaustive["exp"][b]) * 2 ** pe.frac_bits
        assert got[-8 + b][0] == expected
    print(f"checked {len(refs)} outputs")


# --------------------------------------------------------------------------------------------
# Verilator: random streams with handshake noise, worst cases, cycle counts
# --------------------------------------------------------------------------------------------

def test_int_pe_random_groups_with_handshake_noise():
    rng = np.random.default_rng(11)
    pe = IntPE(**INT_PARAMS)
    cases = [int_case(rng, 60, 64, INT_PARAMS),   # full groups: 16 cycles
             int_case(rng, 40, 4, INT_PARAMS),    # one-cycle groups: dequant stalls
             int_case(rng, 40, 24, INT_PARAMS),   # ragged 6-cycle groups: stalls too
             int_case(rng, 6, 64, INT_PARAMS, weights=np.zeros((6, 64), dtype=np.int64)),
             int_case(rng, 6, 64, INT_PARAMS, acts=np.zeros((6, 64), dtype=np.int64))]
    payloads, refs, _ = int_stream(pe, cases)
    got = run_int(INT_PARAMS, payloads, len(refs), backpressure=0.5, idle=0.5, seed=3)
    assert got == refs
    assert any(r == 0 for r in refs)
    print(f"checked {len(refs)} outputs, {len(payloads)} payloads")


def test_int_pe_worst_case_and_cycle_counts():
    rng = np.random.default_rng(12)
    pe = IntPE(**INT_PARAMS)
    n, G = pe.max_groups, pe.group_size
    most_negative = np.full((n, G), 1 << (pe.weight_bits - 1))  # raw code of -128
    extreme = {"scale": np.full(n, (1 << pe.scale_bits) - 1),
               "exp": np.full(n, (1 << pe.exp_bits) - 1),
               "out_last": np.arange(n) == n - 1}
    cases = [
        {"weights": most_negative, "acts": np.full((n, G), -128), **extreme},   # most positive
        {"weights": most_negative, "acts": np.full((n, G), 127), **extreme},    # most negative
        int_case(rng, 24, 64, INT_PARAMS),
    ]
    payloads, refs, f = int_stream(pe, cases)
    assert refs[0].bit_length() + 1 == pe.acc_width  # needs every bit of the accumulator
    stats = {}
    got = run_int(INT_PARAMS, payloads, len(refs), backpressure=0.0, idle=0.0, stats=stats)
    assert got == refs
    # Full groups never stall: one cycle per weight-step, output `latency` after out_last.
    expected = np.flatnonzero(f["out_last"]) + pe.latency
    assert (gb.int_pe_output_cycles(f["group_last"], f["out_last"], pe.scale_bits)
            == expected).all()
    assert stats["output_cycles"] == expected.tolist()

    # Tiny groups: the register-level cycle model predicts every stall.
    tiny = [int_case(rng, 30, 4, INT_PARAMS), int_case(rng, 12, 32, INT_PARAMS)]
    payloads, refs, f = int_stream(pe, tiny)
    stats = {}
    got = run_int(INT_PARAMS, payloads, len(refs), backpressure=0.0, idle=0.0, stats=stats)
    assert got == refs
    model = gb.int_pe_output_cycles(f["group_last"], f["out_last"], pe.scale_bits)
    assert stats["output_cycles"] == model.tolist()
    assert model[-1] > len(payloads) + pe.latency  # the stalls did happen
    print(f"checked {len(stats['output_cycles'])} output cycles")


def test_minifloat_e4m3_random_worst_case_and_nan():
    rng = np.random.default_rng(21)
    params = E4M3_PARAMS
    pe = MinifloatPE(**params)
    n = params["max_blocks"]
    top = 0x7E  # E4M3 448: S.1111.110
    ones = np.ones((n, 32), dtype=np.int64)
    extreme = {"exp": np.full(n, 3), "out_last": np.arange(n) == n - 1}
    zero = {"a_codes": 0 * ones[:3], "w_codes": rng.integers(0, 0x7F, (3, 32)),
            "exp": np.zeros(3, dtype=np.int64), "out_last": np.array([1, 0, 1], bool)}
    nan_block = top * ones[:2]
    nan_block[1, 7] = 0xFF  # -NaN
    cases = [
        mf_case(rng, 120, params),
        {"a_codes": top * ones, "w_codes": top * ones, **extreme},
        {"a_codes": top * ones, "w_codes": (top | 0x80) * ones, **extreme},
        zero,
        mf_case(rng, 60, params, special_rate=0.3),    # E4M3 NaN (S.1111.111) now and then
        {"a_codes": nan_block, "w_codes": top * ones[:2], "exp": [0, 0],
         "out_last": [False, True]},
        mf_case(rng, 30, {**params, "block": 8}),      # short blocks
    ]
    payloads, refs, _ = mf_stream(pe, cases)
    assert any(i for _, i in refs) and not all(i for _, i in refs)
    assert max(abs(a) for a, _ in refs) == 8 * 32 * (448 * 2 ** 9) ** 2 * 8
    got = run_mf(params, payloads, len(refs), backpressure=0.5, idle=0.5, seed=5)
    assert got == [(int(a), bool(i)) for a, i in refs]
    print(f"checked {len(refs)} outputs, {len(payloads)} payloads")


def test_minifloat_e5m2_inf_nan_worst_case_cycles():
    rng = np.random.default_rng(31)
    params = E5M2_PARAMS
    pe = MinifloatPE(**params)
    n = params["max_blocks"]
    top = 0x7B  # E5M2 57344: S.11110.11
    inf, nan, zero = 0x7C, 0x7E, 0x00
    ones = np.ones((n, 32), dtype=np.int64)
    last = np.arange(n) == n - 1
    inf_times_zero = top * ones[:1]
    inf_times_zero[0, 5] = inf
    w_zero = top * ones[:1]
    w_zero[0, 5] = zero
    cases = [
        mf_case(rng, 80, params, special_rate=0.02),
        {"a_codes": top * ones, "w_codes": top * ones, "exp": np.zeros(n, dtype=np.int64),
         "out_last": last},
        {"a_codes": (top | 0x80) * ones, "w_codes": top * ones,
         "exp": np.zeros(n, dtype=np.int64),
         "out_last": last},
        {"a_codes": inf_times_zero, "w_codes": w_zero, "exp": [0], "out_last": [True]},
        {"a_codes": nan * ones[:1], "w_codes": zero * ones[:1], "exp": [0], "out_last": [True]},
    ]
    payloads, refs, f = mf_stream(pe, cases)
    worst = 4 * 32 * (57344 * 2 ** 16) ** 2
    assert refs[-4][0] == worst and refs[-3][0] == -worst
    assert worst.bit_length() + 1 == pe.acc_width
    assert refs[-2][1] and refs[-1][1]
    stats = {}
    got = run_mf(params, payloads, len(refs), backpressure=0.0, idle=0.0, stats=stats)
    assert got == [(int(a), bool(i)) for a, i in refs]
    # One cycle per L-element step; output `latency` cycles after its out_last payload.
    assert stats["output_cycles"] == gb.minifloat_pe_output_cycles(f["out_last"]).tolist()
    assert stats["output_cycles"][-1] == len(payloads) - 1 + pe.latency
    got = run_mf(params, payloads, len(refs), backpressure=0.6, idle=0.3, seed=9)
    assert got == [(int(a), bool(i)) for a, i in refs]
    print(f"checked {len(refs)} outputs twice, {len(payloads)} payloads")


# --------------------------------------------------------------------------------------------
# Lane products on SB_MAC16 pairs (hdl.arith.products), simulated with Yosys' cell model
# --------------------------------------------------------------------------------------------

SB_MAC16_PARAMS = {"lanes": 3, "weight_bits": 8, "act_width": 8, "group_size": 3,
                   "scale_bits": 0, "exp_bits": 0, "max_groups": 1, "multipliers": "sb_mac16"}


def test_int_pe_on_sb_mac16_pairs_every_byte_product():
    """Lanes 0 and 1 share one SB_MAC16 in its 8 x 8 mode (lane 2 is a plain multiply): each
    byte lane alone over all 2**16 operand pairs, then all lanes at random, one output per
    weight-step, against golden and Python integers."""
    params = SB_MAC16_PARAMS
    pe = IntPE(**params)
    codes = np.arange(1 << 16)
    w_all, a_all = codes >> 8, (codes & 0xFF) - 128          # raw weight code, signed act
    rng = np.random.default_rng(21)
    n = len(codes)
    cases = []
    for lane in (0, 1):
        weights, acts = np.zeros((n, 3), dtype=np.int64), np.zeros((n, 3), dtype=np.int64)
        weights[:, lane], acts[:, lane] = w_all, a_all
        cases.append(int_case(rng, n, 3, params, out_last=np.ones(n, dtype=bool),
                              weights=weights, acts=acts))
    cases.append(int_case(rng, 4000, 3, params, out_last=np.ones(4000, dtype=bool)))
    payloads, refs, _ = int_stream(pe, cases)
    got = run_int(params, payloads, len(refs), backpressure=0.3, idle=0.3, seed=5)
    assert got == refs
    assert min(refs[:2 * n]) == -128 * 127 and max(refs[:2 * n]) == 128 * 128


def test_int_pe_on_sb_mac16_pairs_w4a8_groups():
    """The iCEBreaker's case: int4 weights sign-extended into the byte lanes, 4 lanes (two
    blocks), scales, shifts and several groups per output, with handshake noise."""
    params = {"lanes": 4, "weight_bits": 4, "act_width": 8, "group_size": 16, "scale_bits": 4,
              "exp_bits": 2, "max_groups": 6, "multipliers": "sb_mac16"}
    rng = np.random.default_rng(22)
    pe = IntPE(**params)
    n = pe.max_groups
    extreme = {"scale": np.full(n, 15), "exp": np.full(n, 3), "out_last": np.arange(n) == n - 1}
    cases = [int_case(rng, 80, 16, params), int_case(rng, 30, 4, params),
             {"weights": np.full((n, 16), 8), "acts": np.full((n, 16), -128), **extreme}]
    payloads, refs, _ = int_stream(pe, cases)
    got = run_int(params, payloads, len(refs), backpressure=0.5, idle=0.5, seed=6)
    assert got == refs
    assert refs[-1] == n * 16 * 8 * 128 * 15 * 8  # the worst case of every width


def test_lane_products_choose_the_multipliers():
    from amaranth.back import rtlil
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    from bitmod.hdl.arith.products import LaneProducts, pairs_products

    def blocks(multipliers, platform, widths=(4, 8), lanes=5):
        unit = LaneProducts(lanes, *widths, multipliers)
        return rtlil.convert(unit, platform=platform).count("SB_MAC16")

    icebreaker, ulx3s = ICEBreakerPlatform(), ULX3S_85F_Platform()
    assert pairs_products("auto", icebreaker, 4, 8)
    assert not pairs_products("auto", icebreaker, 9, 8)     # too wide for a byte lane
    assert not pairs_products("auto", ulx3s, 4, 8)
    assert not pairs_products("auto", None, 4, 8)
    assert not pairs_products("generic", icebreaker, 4, 8)
    assert blocks("auto", icebreaker) > 0 and blocks("auto", ulx3s) == 0
    assert blocks("generic", icebreaker) == 0 and blocks("sb_mac16", None) > 0
    with pytest.raises(ValueError, match="at most 8 bits"):
        IntPE(weight_bits=9, multipliers="sb_mac16")
    with pytest.raises(ValueError, match="multipliers must be one of"):
        IntPE(multipliers="dsp48")

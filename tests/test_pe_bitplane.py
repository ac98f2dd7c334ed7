"""Bit-plane PE (hdl.pe.bitplane) against golden.pe_bitplane and an independent reference.

The reference decodes codes with golden.formats (or plain integers) and takes plain Python dot
products: no planes, no schedule. Golden's payloads run through golden's cycle model and the
RTL (Amaranth simulator for small PEs, Verilator for the 64-lane one); every output and, at full
rate, every output cycle stamp is compared.
"""

import numpy as np
import pytest

from bitmod.golden import formats
from bitmod.golden import pe_bitplane as gp
from bitmod.golden.pe_baseline import signed_width
from bitmod.hdl.pe.bitplane import BitPlanePE
from bitmod.hdl.registry import build_component
from bitmod.sim.vectors import pack_fields, run_stream, unpack_fields

# (encoding, bits) of every operand kind with at most 4 bits: exhaustive code-pair checks.
SMALL = [("signed", 2), ("signed", 3), ("signed", 4), ("unsigned", 1), ("unsigned", 2),
         ("unsigned", 4), ("binary", 1), ("ternary", 2)]
WXAY = [(2, 8), (4, 4), (4, 8), (6, 6), (8, 8), (3, 5)]


# --------------------------------------------------------------------------------------------
# Independent reference: decoded values, Python integers
# --------------------------------------------------------------------------------------------

def decode(encoding, bits, codes):
    codes = np.asarray(codes)
    if encoding == "signed":
        return [int(v) for v in formats.get(f"int{bits}").decode(codes).reshape(-1)]
    if encoding == "unsigned":
        return [int(c) for c in codes.reshape(-1)]
    return [int(v) for v in formats.get(encoding).decode(codes).reshape(-1)]


def reference(params, case):
    """Outputs from decoded codes: sum_g (sum_k w*a) * scale << exp, per out_last."""
    w_enc, w_bits = params.get("weight_encoding", "signed"), params["weight_bits"]
    a_enc, a_bits = params.get("act_encoding", "signed"), params["act_bits"]
    outputs, acc = [], 0
    for g in range(len(case["out_last"])):
        ws = decode(w_enc, w_bits, case["w_codes"][g])
        acts = decode(a_enc, a_bits, case["a_codes"][g])
        gsum = sum(x * y for x, y in zip(ws, acts, strict=True))
        acc += gsum * (int(case["scale"][g]) if params.get("scale_bits", 8) else 1) \
            * 2 ** int(case["exp"][g])
        if case["out_last"][g]:
            outputs.append(acc)
            acc = 0
    return outputs


# --------------------------------------------------------------------------------------------
# Stimulus
# --------------------------------------------------------------------------------------------

def random_out_last(rng, n, max_groups):
    out_last = np.zeros(n, dtype=bool)
    i = -1
    while i < n - 1:
        i = min(n - 1, i + int(rng.integers(1, max_groups + 1)))
        out_last[i] = True
    return out_last


def random_case(rng, cfg, n, k, w_codes=None, a_codes=None):
    return {
        "w_codes": rng.integers(0, 1 << cfg.weight_bits, (n, k)) if w_codes is None else w_codes,
        "a_codes": rng.integers(0, 1 << cfg.act_bits, (n, k)) if a_codes is None else a_codes,
        "scale": rng.integers(0, cfg.scale_max + 1, n),
        "exp": rng.integers(0, 1 << cfg.exp_bits, n),
        "out_last": random_out_last(rng, n, cfg.max_groups),
    }


def code_of(encoding, bits, value):
    """The code of ``value`` (smallest code decoding to it), from the independent decode."""
    codes = np.arange(1 << bits)
    return int(codes[np.array(decode(encoding, bits, codes)) == value][0])


def extreme_cases(params):
    """Two outputs of max_groups full groups with the largest scale and exp: the most positive
    and the most negative product everywhere (from decoded values, not from golden)."""
    cfg = gp.BitPlaneConfig(**params)
    w_enc, a_enc = params.get("weight_encoding", "signed"), params.get("act_encoding", "signed")
    w_values = decode(w_enc, cfg.weight_bits, np.arange(1 << cfg.weight_bits))
    a_values = decode(a_enc, cfg.act_bits, np.arange(1 << cfg.act_bits))
    products = {(x, y): x * y for x in set(w_values) for y in set(a_values)}
    n, G = cfg.max_groups, cfg.group_size
    cases = []
    for pick in (max, min):
        x, y = pick(products, key=products.get)
        cases.append({
            "w_codes": np.full((n, G), code_of(w_enc, cfg.weight_bits, x)),
            "a_codes": np.full((n, G), code_of(a_enc, cfg.act_bits, y)),
            "scale": np.full(n, cfg.scale_max), "exp": np.full(n, (1 << cfg.exp_bits) - 1),
            "out_last": np.arange(n) == n - 1})
    return cases


def horner_worst_cases(cfg):
    """Groups that drive the group accumulator to its extremes: for every pair p of the
    schedule, the first s steps hold the code pair with the extreme V_p, the rest the one with
    the extreme V_(p-1) (s = 1 and s = G/L), V_q computed here from the plane bits."""
    wv = cfg.w_enc.planes(np.arange(1 << cfg.weight_bits))
    av = cfg.a_enc.planes(np.arange(1 << cfg.act_bits))
    prefix = [np.zeros((len(wv), len(av)), dtype=np.int64)]
    for pair in cfg.schedule:
        term = (-1) ** pair.negate * np.outer(wv[:, pair.w], av[:, pair.a]) * 2 ** \
            pair.significance
        prefix.append(prefix[-1] + term)
    steps, L = cfg.group_size // cfg.lanes, cfg.lanes
    cases = []
    for p in range(1, len(prefix)):
        for pick in (np.argmax, np.argmin):
            first = np.unravel_index(pick(prefix[p]), prefix[p].shape)
            rest = np.unravel_index(pick(prefix[p - 1]), prefix[p - 1].shape)
            for s in sorted({1, steps}):
                w = np.full((1, cfg.group_size), rest[0])
                a = np.full((1, cfg.group_size), rest[1])
                w[0, :s * L], a[0, :s * L] = first
                cases.append({"w_codes": w, "a_codes": a, "scale": [1], "exp": [0],
                              "out_last": [True]})
    return cases


def stream(cfg, params, cases):
    """Concatenated payload columns, the reference outputs (golden == independent checked)."""
    columns, refs = [], []
    for case in cases:
        expected = reference(params, case)
        assert gp.bitplane_reference(cfg, **case) == expected
        refs.extend(expected)
        columns.append(gp.bitplane_payloads(cfg, **case))
    fields = {name: np.concatenate([c[name] for c in columns]) for name in columns[0]}
    return fields, refs


def run_rtl(params, fields, n_outputs, engine, **kwargs):
    pe = BitPlanePE(**params)
    payloads = pack_fields(pe.in_layout, **fields)
    stats = {}
    out = run_stream(BitPlanePE, params, payloads, n_outputs=n_outputs, engine=engine,
                     stats=stats, **kwargs)
    return [int(v) for v in unpack_fields(pe.out_layout, out)["acc"]], stats


# --------------------------------------------------------------------------------------------
# Golden against the independent reference
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding, bits", [*SMALL, ("signed", 8), ("unsigned", 8),
                                            ("signed", 6)])
def test_plane_values_equal_decoded_codes(encoding, bits):
    enc = gp.plane_encoding(encoding, bits)
    codes = np.arange(1 << bits)
    planes = enc.planes(codes)
    assert set(np.unique(planes)) <= {0, 1}
    assert all(abs(c) & (abs(c) - 1) == 0 for c in enc.weights)  # every weight is +-2**s
    assert enc.values(codes).tolist() == decode(encoding, bits, codes)


@pytest.mark.parametrize("w_spec", SMALL)
@pytest.mark.parametrize("a_spec", SMALL)
def test_golden_every_code_pair(w_spec, a_spec):
    """Every weight code against every activation code, through the payloads and golden's
    cycle model: one output per code pair, its group the pair in all 8 lanes."""
    (w_enc, w_bits), (a_enc, a_bits) = w_spec, a_spec
    params = {"lanes": 8, "weight_bits": w_bits, "act_bits": a_bits, "weight_encoding": w_enc,
              "act_encoding": a_enc, "group_size": 8, "scale_bits": 0, "exp_bits": 0,
              "max_groups": 1}
    cfg = gp.BitPlaneConfig(**params)
    wc, ac = np.meshgrid(np.arange(1 << w_bits), np.arange(1 << a_bits), indexing="ij")
    n = wc.size
    w = np.repeat(wc.reshape(-1, 1), 8, axis=1)
    a = np.repeat(ac.reshape(-1, 1), 8, axis=1)
    case = {"w_codes": w, "a_codes": a, "scale": np.zeros(n), "exp": np.zeros(n),
            "out_last": np.ones(n, dtype=bool)}
    fields, refs = stream(cfg, params, [case])
    assert [v for _, v in gp.BitPlanePEModel(cfg).run(fields)] == refs
    assert len(fields["shift"]) == n * gp.cycles_per_step(w_bits, a_bits, w_enc, a_enc)


@pytest.mark.parametrize("w_bits, a_bits", WXAY)
def test_golden_random_wxay(w_bits, a_bits):
    rng = np.random.default_rng(w_bits * 10 + a_bits)
    params = {"lanes": 16, "weight_bits": w_bits, "act_bits": a_bits, "group_size": 64,
              "scale_bits": 4, "exp_bits": 2, "max_groups": 3}
    cfg = gp.BitPlaneConfig(**params)
    cases = [random_case(rng, cfg, 12, 64), random_case(rng, cfg, 5, 16), *extreme_cases(params)]
    fields, refs = stream(cfg, params, cases)
    model = gp.BitPlanePEModel(cfg).run(fields)
    assert [v for _, v in model] == refs
    assert max(refs).bit_length() + 1 == cfg.acc_width  # the extreme case needs every bit
    assert cfg.cycles_per_step == w_bits * a_bits


@pytest.mark.parametrize("params", [
    {"weight_bits": 4, "act_bits": 8},
    {"weight_bits": 8, "act_bits": 8, "lanes": 32, "group_size": 64},
    {"weight_bits": 1, "act_bits": 8, "weight_encoding": "binary", "lanes": 8,
     "group_size": 32},
    {"weight_bits": 2, "act_bits": 3, "weight_encoding": "ternary", "act_encoding": "unsigned",
     "lanes": 4, "group_size": 12},
    {"weight_bits": 3, "act_bits": 1, "act_encoding": "binary", "lanes": 4, "group_size": 4},
])
def test_group_accumulator_bound_is_reached_and_holds(params):
    cfg = gp.BitPlaneConfig(**params)
    fields, refs = stream(cfg, params, horner_worst_cases(cfg))
    model = gp.BitPlanePEModel(cfg)
    assert [v for _, v in model.run(fields)] == refs   # and no overflow was asserted
    assert model.gacc_extremes == cfg.gacc_range
    assert cfg.gacc_width == signed_width(*model.gacc_extremes)
    # The final group sums fit too (IntPE's bound, decoded values).
    p_lo, p_hi = cfg.product_range
    assert cfg.gacc_range[0] <= cfg.group_size * p_lo and cfg.group_size * p_hi <= \
        cfg.gacc_range[1]


def test_documented_widths_and_cycles():
    cfg = gp.BitPlaneConfig()  # W4A8 signed, G = 128, 8-bit scales, 256 groups
    assert (cfg.gacc_width, cfg.acc_width) == (19, 34)
    assert gp.cycles_per_step(4, 8) == 32
    assert gp.cycles_per_step(1, 8, "binary") == 16
    assert gp.cycles_per_step(2, 2, "ternary", "ternary") == 4
    # The schedule is Horner's: one shift per significance step, significances e_max .. 0.
    sig = [p.significance for p in cfg.schedule]
    assert sig == sorted(sig, reverse=True) and sig[-1] == 0 and sig[0] == 3 + 7
    assert sum(p.shift for p in cfg.schedule) == sig[0]
    assert cfg.latency == gp.popcount_stages(63) + 1 + 8 + 2


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"lanes": 0}, "lanes"), ({"lanes": 257}, "lanes"),
    ({"weight_bits": 9}, "weight_encoding signed bits"),
    ({"weight_bits": 1}, "weight_encoding signed bits"),
    ({"act_bits": 0, "act_encoding": "unsigned"}, "act_encoding unsigned bits"),
    ({"weight_encoding": "int"}, "weight_encoding"),
    ({"act_encoding": "binary", "act_bits": 2}, "act_encoding binary bits"),
    ({"group_size": 100}, "group_size"), ({"scale_bits": 17}, "scale_bits"),
    ({"exp_bits": 7}, "exp_bits"), ({"max_groups": 0}, "max_groups"),
    ({"acc_width": 33}, "acc_width"),
])
def test_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        BitPlanePE(**kwargs)


def test_parameter_types_and_registry():
    with pytest.raises(TypeError, match="lanes"):
        BitPlanePE(lanes="4")
    pe = build_component("bitplane_pe", {"lanes": 32}, scheme="int4")
    assert (pe.lanes, pe.weight_bits, pe.act_bits, pe.acc_width) == (32, 4, 8, 34)
    assert BitPlanePE(acc_width=40).acc_width == 40
    assert pe.macs_per_cycle == 1.0 and pe.latency == pe.config.latency


# --------------------------------------------------------------------------------------------
# RTL: Amaranth simulator (small PEs, every encoding) and Verilator (64 lanes)
# --------------------------------------------------------------------------------------------

AMARANTH_PARAMS = [
    # 16 lanes: chain and small full-adder nodes; short dequantizer, exp shifts.
    {"lanes": 16, "weight_bits": 4, "act_bits": 8, "group_size": 64, "scale_bits": 3,
     "exp_bits": 2, "max_groups": 3},
    # binary weights x unsigned activations; 5 lanes (one- and two-lane leaves).
    {"lanes": 5, "weight_bits": 1, "act_bits": 3, "weight_encoding": "binary",
     "act_encoding": "unsigned", "group_size": 20, "scale_bits": 2, "exp_bits": 1,
     "max_groups": 2},
    # ternary x ternary (no shift at all), 1 lane (no tree: the lane is the carry-in).
    {"lanes": 1, "weight_bits": 2, "act_bits": 2, "weight_encoding": "ternary",
     "act_encoding": "ternary", "group_size": 6, "scale_bits": 0, "exp_bits": 0,
     "max_groups": 4},
    # ternary weights x signed 6-bit activations, 9 lanes.
    {"lanes": 9, "weight_bits": 2, "act_bits": 6, "weight_encoding": "ternary",
     "group_size": 27, "scale_bits": 4, "exp_bits": 0, "max_groups": 2},
]


@pytest.mark.parametrize("params", AMARANTH_PARAMS)
def test_rtl_amaranth_random_extremes_and_cycles(params):
    rng = np.random.default_rng(params["lanes"])
    cfg = gp.BitPlaneConfig(**params)
    G, L = cfg.group_size, cfg.lanes
    cases = [random_case(rng, cfg, 6, G), random_case(rng, cfg, 4, L),
             *extreme_cases(params), *horner_worst_cases(cfg)[:4]]
    fields, refs = stream(cfg, params, cases)
    model = gp.BitPlanePEModel(cfg).run(fields)
    assert [v for _, v in model] == refs
    got, stats = run_rtl(params, fields, len(refs), "amaranth", idle=0.0, backpressure=0.0)
    assert got == refs
    assert stats["output_cycles"] == [c for c, _ in model]
    got, _ = run_rtl(params, fields, len(refs), "amaranth", idle=0.4, backpressure=0.4, seed=7)
    assert got == refs


VERILATOR_PARAMS = {"lanes": 64, "weight_bits": 4, "act_bits": 8, "group_size": 128,
                    "scale_bits": 8, "exp_bits": 2, "max_groups": 4}


def test_rtl_verilator_w4a8_64_lanes():
    """The benchmarked size: random groups, ragged and one-step groups (the dequantizer
    stalls the input), the extremes of both signs, handshake noise, full-rate cycle stamps."""
    rng = np.random.default_rng(64)
    params = VERILATOR_PARAMS
    cfg = gp.BitPlaneConfig(**params)
    full = [random_case(rng, cfg, 10, 128), *extreme_cases(params),
            *horner_worst_cases(cfg)[::7]]
    fields, refs = stream(cfg, params, full)
    model = gp.BitPlanePEModel(cfg).run(fields)
    got, stats = run_rtl(params, fields, len(refs), "harness", idle=0.0, backpressure=0.0)
    assert got == refs
    # Full groups (64 cycles) never stall: an output `latency` cycles after its out_last.
    expected = (np.flatnonzero(fields["out_last"]) + cfg.latency).tolist()
    assert stats["output_cycles"] == [c for c, _ in model] == expected
    assert max(refs).bit_length() + 1 == cfg.acc_width

    # Ragged groups (one weight-step of 64) and handshake noise on both sides.
    short = [random_case(rng, cfg, 12, 64), random_case(rng, cfg, 20, 64)]
    fields, refs = stream(cfg, params, short)
    got, _ = run_rtl(params, fields, len(refs), "harness", idle=0.5, backpressure=0.7, seed=3)
    assert got == refs


def test_rtl_short_groups_stall_the_input():
    """Unsigned 1-bit x 1-bit planes: a one-step group is one cycle, far shorter than the
    dequantizer's 8 steps; the input stalls, nothing is lost, the cycle model predicts it."""
    rng = np.random.default_rng(5)
    params = {"lanes": 8, "weight_bits": 1, "act_bits": 2, "weight_encoding": "unsigned",
              "act_encoding": "unsigned", "group_size": 16, "scale_bits": 8, "exp_bits": 0,
              "max_groups": 3}
    cfg = gp.BitPlaneConfig(**params)
    fields, refs = stream(cfg, params, [random_case(rng, cfg, 30, 8),
                                        random_case(rng, cfg, 10, 16)])
    model = gp.BitPlanePEModel(cfg)
    cycles = [c for c, _ in model.run(fields)]
    assert cycles[-1] > len(fields["shift"]) + cfg.latency  # the stalls did happen
    got, stats = run_rtl(params, fields, len(refs), "amaranth", idle=0.0, backpressure=0.0)
    assert got == refs and stats["output_cycles"] == cycles
    got, _ = run_rtl(params, fields, len(refs), "amaranth", idle=0.3, backpressure=0.6, seed=2)
    assert got == refs


# --------------------------------------------------------------------------------------------
# The step-major order (order="step": the array's, which streams weight-steps)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [*AMARANTH_PARAMS[:2], AMARANTH_PARAMS[3]])
def test_step_order_golden_and_rtl(params):
    """Per weight-step all plane pairs (Horner into a per-step partial, added into the group
    sum on step_last): golden's payloads and model against the independent reference, the RTL
    against both (outputs and full-rate cycle stamps, then handshake noise)."""
    params = dict(params, order="step")
    rng = np.random.default_rng(params["lanes"] + 1)
    cfg = gp.BitPlaneConfig(**params)
    G, L, T = cfg.group_size, cfg.lanes, cfg.cycles_per_step
    cases = [random_case(rng, cfg, 6, G), random_case(rng, cfg, 4, L),
             *extreme_cases(params), *horner_worst_cases(cfg)[:4]]
    fields, refs = stream(cfg, params, cases)
    # Step-major: one step's pairs in schedule order, step_last on the last one.
    first = fields["step_last"][:G // L * T].reshape(G // L, T)
    assert (first[:, -1] == 1).all() and (first[:, :-1] == 0).all()
    assert fields["shift"][:T].tolist() == [p.shift for p in cfg.schedule]
    model = gp.BitPlanePEModel(cfg).run(fields)
    assert [v for _, v in model] == refs
    assert "step_last" in BitPlanePE(**params).in_layout.members
    assert "step_last" not in BitPlanePE(**dict(params, order="group")).in_layout.members
    got, stats = run_rtl(params, fields, len(refs), "amaranth", idle=0.0, backpressure=0.0)
    assert got == refs
    assert stats["output_cycles"] == [c for c, _ in model]
    got, _ = run_rtl(params, fields, len(refs), "amaranth", idle=0.4, backpressure=0.4, seed=7)
    assert got == refs


@pytest.mark.parametrize("params", [
    {"weight_bits": 4, "act_bits": 8, "lanes": 8, "group_size": 32},
    {"weight_bits": 4, "act_bits": 8, "weight_encoding": "unsigned", "lanes": 4,
     "group_size": 16},
    {"weight_bits": 1, "act_bits": 8, "weight_encoding": "binary", "lanes": 8,
     "group_size": 32},
])
def test_step_order_widths_hold_at_the_worst_cases(params):
    """The step order's partial is bounded by a one-step group's Horner extremes, reached by
    the one-step worst cases; its group accumulator holds whole-step sums only."""
    cfg = gp.BitPlaneConfig(**params, order="step")
    one_step = gp.BitPlaneConfig(**dict(params, group_size=params["lanes"]))
    assert cfg.sacc_range == one_step.gacc_range
    p_lo, p_hi = cfg.product_range
    assert cfg.gacc_range == (min(0, cfg.group_size * p_lo), max(0, cfg.group_size * p_hi))
    fields, refs = stream(cfg, params, [*horner_worst_cases(cfg), *extreme_cases(params)])
    model = gp.BitPlanePEModel(cfg)
    assert [v for _, v in model.run(fields)] == refs  # no overflow was asserted
    lo, hi = model.gacc_extremes  # the group sums reach the whole-step bound
    assert lo == cfg.gacc_range[0] or hi == cfg.gacc_range[1]

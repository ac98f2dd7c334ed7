"""The systolic array (hdl/array) against golden/gemm.py: bit-exact GEMMs, timing, handshake."""

import dataclasses

import numpy as np
import pytest
from amaranth import Cat

from bitmod.golden import gemm as ggemm
from bitmod.golden.gemm import ArrayConfig
from bitmod.golden.quantize import quantize
from bitmod.hdl.array import SystolicArray
from bitmod.sim.amaranth_sim import run_simulation, stream_put
from bitmod.sim.array_driver import (
    expected_codes,
    gemm_stream,
    pack_steps,
    run_array_gemm,
    special_register,
)


def make_case(params, m, n, k, seed, scheme):
    cfg = ggemm.ArrayConfig(**params)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k))
    qt = quantize(w, scheme, group_size=cfg.group_size, scale_format="int8")
    x = rng.standard_normal((m, k)) * rng.choice([0.01, 1.0, 30.0], size=(m, 1))
    if cfg.act_format == "int8":
        xq, act_scale = ggemm.quantize_activations_int8(x)
    else:
        # Wide per-group exponent spread: exercises the token floor and the group shifts.
        spread = np.exp2(rng.integers(-12, 4, size=(m, -(-k // cfg.group_size))))
        x = x * np.repeat(spread, cfg.group_size, axis=1)[:, :k]
        x[0, :3] = [0.0, -0.0, 6.0e-8]  # zeros and a subnormal
        xq, act_scale = x.astype(np.float16 if cfg.act_format == "fp16" else np.float32), None
        if cfg.act_format == "bf16":
            import ml_dtypes
            xq = xq.astype(ml_dtypes.bfloat16)
    result = ggemm.gemm(xq, qt, cfg, act_scale)
    acts = ggemm.act_mantissas(xq, cfg)
    return cfg, qt, acts, result



BITMOD = ["fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"]
INT8_BITMOD = dict(rows=2, cols=3, lanes=4, group_size=16, formats=BITMOD, act_format="int8")
FP16_INT8W = dict(rows=2, cols=2, lanes=4, group_size=16, formats="int8_sym",
                  act_format="fp16", mant_width=10, act_exp_bits=3)
# The bit-parallel int PE in the same array (golden.gemm.PE_KINDS).
FP16_INT4_INTPE = dict(rows=2, cols=3, lanes=4, group_size=16, formats="int4_sym",
                       act_format="fp16", mant_width=10, act_exp_bits=3, pe_kind="int")
INT8_INT8_INTPE = dict(FP16_INT8W, act_format="int8", pe_kind="int")
# The LUT-table PE (T-MAC style): B bit-planes per weight-step, the rows' tables built once per
# row after the front end (golden.pe_lut.LUT_PE_KIND).
INT8_INT4_LUTPE = dict(rows=2, cols=3, lanes=4, group_size=16, formats="int4_sym",
                       act_format="int8", pe_kind="lut")
FP16_INT8W_LUTPE = dict(FP16_INT8W, pe_kind="lut")
# The bit-plane PE (BISMO style, step-major): P_w x P_a plane pairs per weight-step, the row
# word one activation plane per cycle (golden.pe_bitplane.BITPLANE_PE_KIND; <= 8-bit mantissas).
INT8_INT4_BPPE = dict(INT8_INT4_LUTPE, pe_kind="bitplane")
FP16_INT8W_BPPE = dict(FP16_INT8W, mant_width=8, pe_kind="bitplane")


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="group_size"):
        SystolicArray(ArrayConfig(group_size=18))
    with pytest.raises(ValueError, match="act_format"):
        SystolicArray(ArrayConfig(act_format="fp8"))
    with pytest.raises(ValueError, match="64"):
        SystolicArray(ArrayConfig(act_format="fp16", mant_width=16, act_exp_bits=6,
                                   group_size=128))
    with pytest.raises(ValueError, match="rows"):
        SystolicArray(ArrayConfig(rows=0))
    with pytest.raises(ValueError, match="out_format"):
        SystolicArray(ArrayConfig(out_format="bf16"))
    with pytest.raises(TypeError, match="early_credits must be a bool or None, not 'yes'"):
        SystolicArray(ArrayConfig(), early_credits="yes")
    from bitmod.hdl.array.serializer import StepSerializer
    with pytest.raises(ValueError, match="entries must be an int of at least 2, not 1"):
        StepSerializer(ArrayConfig(), entries=1)


@pytest.mark.parametrize(("params", "scheme", "k"), [
    (dict(INT8_BITMOD, cols=2), "bitmod4", 16 + 4),
    (dict(rows=1, cols=1, lanes=2, group_size=8, formats="int4_sym", act_format="bf16",
          mant_width=8, rounding="trunc", act_exp_bits=0), "int4", 8 + 2),
])
def test_amaranth_sim_one_tile(params, scheme, k):
    """One tile with a ragged group in the Amaranth simulator (2x2 INT8; 1x1 BF16, X = 0)."""
    cfg, qt, acts, result = make_case(params, params["rows"], params["cols"], k, 3, scheme)
    # The Amaranth simulator behind the same stream runner as the Verilator tests.
    got, tiles, _ = run_array_gemm(cfg, acts, qt, engine="amaranth")
    expected = expected_codes(cfg, result, tiles)
    got = np.array([int(v) & 0xFFFFFFFF for v in got], dtype=object)
    assert (got == expected).all(), (got, expected)
    assert any(expected), "an all-zero tile would prove little"
    print(f"checked {len(expected)} outputs")


def _run_rtl(params, cfg, qt, acts, result, *, backpressure=0.0, idle=0.0, seed=1, stats=None):
    out, tiles, n_steps = run_array_gemm(cfg, acts, qt, backpressure=backpressure, idle=idle,
                                         seed=seed, stats=stats)
    return out, expected_codes(cfg, result, tiles), n_steps


@pytest.mark.parametrize(("params", "scheme"), [(INT8_BITMOD, "bitmod4"),
                                               (FP16_INT8W, "int8"),
                                               (dict(FP16_INT8W, out_format="fp16"), "int8"),
                                               (FP16_INT4_INTPE, "int4"),
                                               (INT8_INT8_INTPE, "int8"),
                                               (INT8_INT4_LUTPE, "int4"),
                                               (FP16_INT8W_LUTPE, "int8"),
                                               (INT8_INT4_BPPE, "int4"),
                                               (FP16_INT8W_BPPE, "int8"),
                                               # the column tops' extra register stages
                                               (dict(INT8_BITMOD, serializer_stages=1),
                                                "bitmod4"),
                                               (dict(FP16_INT8W, serializer_stages=2), "int8"),
                                               (dict(FP16_INT8W_LUTPE, serializer_stages=3),
                                                "int8")])
def test_random_gemm_bit_exact(params, scheme):
    """M=5, N=13, K = 3 groups + a ragged group of 4 (G = 16): tiles padded on all sides.
    The FP16-output build drains 16-bit codes (overflow to Inf and subnormals included)."""
    cfg, qt, acts, result = make_case(params, 5, 13, 3 * 16 + 4, 11, scheme)
    assert SystolicArray(ArrayConfig(**params)).out_layout.size == cfg.out_bits
    stats = {}
    out, expected, n_steps = _run_rtl(params, cfg, qt, acts, result, stats=stats)
    assert (out == expected).all()
    # Timing without idles or backpressure: the first output and the total match the model.
    array = SystolicArray(ArrayConfig(**params))
    k = acts["mant"].shape[1]
    first_tile = ggemm.tile_cycles(k, cfg, first=True)
    assert stats["output_cycles"][0] == array.front_latency + first_tile - 1 + array.latency
    # The cycle model's fill is golden's (ArrayConfig.fill); the RTL must match it.
    assert array.front_latency + array.latency - 1 == cfg.fill
    model = ggemm.gemm_cycles(5, 13, k, cfg)
    measured = stats["output_cycles"][-1] + 1
    utilization = model["busy_pe_cycles"] / (cfg.rows * cfg.cols * measured)
    print(f"checked {len(expected)} outputs ({n_steps} steps); cycles measured {measured}, "
          f"model {model['cycles']}, utilization {utilization:.3f}")
    assert measured == model["cycles"]


@pytest.mark.parametrize(("params", "scheme", "k", "backpressure"), [
    (INT8_BITMOD, "bitmod4", 2 * 16 + 8, 0.6),
    # One short group per tile: R * C outputs at 1/5 rate outlast the 10-cycle tiles, so the
    # column FIFOs fill and finished PEs stop the whole array.
    (INT8_BITMOD, "bitmod4", 8, 0.8),
    (FP16_INT8W, "int8", 2 * 16 + 8, 0.6),
    (FP16_INT4_INTPE, "int4", 8, 0.8),  # int PEs: short groups, the gap rule and stalls
    (INT8_INT4_LUTPE, "int4", 8, 0.8),  # LUT PEs: 8-cycle tiles against D + 2 = 10
    (FP16_INT8W_LUTPE, "int8", 2 * 16 + 8, 0.6),
    (INT8_INT4_BPPE, "int4", 8, 0.8),  # bit-plane PEs: 2-step groups, 64 cycles per tile
])
def test_backpressure_and_idle(params, scheme, k, backpressure):
    cfg, qt, acts, result = make_case(params, 4, 7, k, 23, scheme)
    stats = {}
    out, expected, n_steps = _run_rtl(params, cfg, qt, acts, result, backpressure=backpressure,
                                      idle=0.4, seed=5, stats=stats)
    assert (out == expected).all()
    compute = ggemm.gemm_cycles(4, 7, k, cfg)["compute_cycles"]
    print(f"checked {len(expected)} outputs ({n_steps} steps) under backpressure "
          f"{backpressure}: {stats['output_cycles'][-1] + 1} cycles, compute schedule {compute}")


@pytest.mark.parametrize(("params", "scheme", "m", "n", "k"), [
    # 4 x 4: 16 outputs per tile against 10-cycle tiles (D + 2), Q = 3 credits.
    (dict(INT8_BITMOD, rows=4, cols=4), "bitmod4", 8, 12, 8),
    # 3 x 4: 12 outputs per tile, Q = 3 credits (with 2: 143 cycles against 131).
    (dict(INT8_BITMOD, rows=3, cols=4), "bitmod4", 9, 12, 4),
    # int PEs, FP16: Q = 2 credits (with 1: 130 cycles against 88).
    (dict(FP16_INT4_INTPE, rows=4, cols=4), "int4", 8, 8, 4),
])
def test_output_port_bound_cycles_equal_the_model(params, scheme, m, n, k):
    """Tiles shorter than their R * C outputs: the output port is the bottleneck, tile ends
    can wait for drain credits, and the cycles still equal golden's model (Q is sized so that
    the credits never starve the port, golden.gemm's cycle model)."""
    cfg, qt, acts, result = make_case(params, m, n, k, 7, scheme)
    model = ggemm.gemm_cycles(m, n, k, cfg)
    rest = ggemm.tile_cycles(k, cfg)
    assert rest < cfg.rows * cfg.cols, "not port-bound"
    stats = {}
    # Amaranth's simulator (same stamps as the compiled harness): no model build for 3 sizes.
    out, tiles, _ = run_array_gemm(cfg, acts, qt, stats=stats, engine="amaranth")
    assert (out == expected_codes(cfg, result, tiles)).all()
    measured = stats["output_cycles"][-1] + 1
    print(f"{model['tiles']} tiles, {rest} compute cycles per tile against {cfg.rows * cfg.cols}"
          f" outputs, Q = {cfg.drain_tiles}: measured {measured}, model {model['cycles']}")
    assert measured == model["cycles"]


class _EarlyCreditArray(SystolicArray):
    """The iCE40 form of the feed credits, in the simulator (no platform there)."""

    def __init__(self, config):
        super().__init__(config, early_credits=True)


class _SiteCreditArray(SystolicArray):
    """The sites' own credit flip-flops (the core's form with extra feed stages)."""

    def __init__(self, config):
        super().__init__(config, site_credits=True)


class _SiteTakenArray(SystolicArray):
    """The sites' valids from per-column and per-row copies of the step taken (the core's form
    with extra feed stages, where its reader's banks give the copies): here each copy is the
    array's own ``valid & ready``."""

    def __init__(self, config):
        super().__init__(config, site_taken=True)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        taken = self.i_stream.valid & self.i_stream.ready
        m.d.comb += self.site_taken.eq(Cat(*[taken] * len(self.site_taken)))
        return m


ARRAY_FORMS = {"registered": SystolicArray, "early": _EarlyCreditArray,
               "site credits": _SiteCreditArray, "site taken": _SiteTakenArray}


# Groups of 64 (16 steps, more than the dequantizers' spacing D): feed-bound.
FEED_CASES = [
    (dict(INT8_INT8_INTPE, group_size=64), "int8"),  # T = 1, F = 1: N = 3 (early 2)
    (dict(FP16_INT4_INTPE, group_size=64), "int4"),  # T = 1, F = 4: N = 6 (early 5)
    (dict(FP16_INT8W, group_size=64), "int8"),  # bit-serial int8: T = 4, F = 4: N = 3 (2)
]


# The site-taken form needs a one-cycle front end (INT8 activations): the INT8 cases, and
# BitMoD's bit-serial datapath (the form's target, the ULX3S 7 x 6 x 16).
@pytest.mark.parametrize(("params", "scheme", "form"), [
    *((params, scheme, form) for params, scheme in FEED_CASES for form in ARRAY_FORMS
      if form != "site taken" or params["act_format"] == "int8"),
    (dict(INT8_BITMOD, group_size=64), "bitmod4", "site taken"),
    # With the echo stage: each column and row decides its own pops (column_control).
    (dict(INT8_BITMOD, group_size=64, serializer_stages=3), "bitmod4", "site taken"),
    (dict(INT8_BITMOD, group_size=64), "bitmod4", "registered"),
])
def test_feed_credits_keep_up(params, scheme, form, monkeypatch):
    """A compute-bound GEMM (K of 2 groups, one tile row): with its N feed credits
    (ArrayConfig.feed_entries, or feed_entries_early when credits come back a cycle early)
    the cycles equal golden's model; with one credit fewer the feed slows the column tops."""
    from bitmod.sim.vectors import run_stream

    m, n, k = params["rows"], 2 * params["cols"], 128
    cfg, qt, acts, result = make_case(params, m, n, k, 3, scheme)
    model = ggemm.gemm_cycles(m, n, k, cfg)["cycles"]
    early = form == "early"
    name = "feed_entries_early" if early else "feed_entries"
    entries = getattr(cfg, name)

    def measured():
        steps, tiles = gemm_stream(cfg, acts, qt)
        stats = {}
        out = run_stream(ARRAY_FORMS[form], cfg,
                         pack_steps(cfg, steps), ports={"special_values": special_register(cfg)},
                         n_outputs=len(tiles) * cfg.rows * cfg.cols, stats=stats,
                         engine="amaranth", cycles_per_input=cfg.terms, idle=0.0,
                         backpressure=0.0)
        assert (out == expected_codes(cfg, result, tiles)).all()
        return stats["output_cycles"][-1] + 1

    assert measured() == model
    if entries - 1 >= 2:  # the serializer needs two
        monkeypatch.setattr(ArrayConfig, name, property(lambda self: entries - 1))
        assert measured() > model


@pytest.mark.parametrize(("params", "scheme", "k"), [
    (INT8_BITMOD, "bitmod4", 8),
    (dict(INT8_BITMOD, serializer_stages=3), "bitmod4", 8),
    (dict(FP16_INT4_INTPE, rows=2, cols=2), "int4", 8),
])
def test_no_pe_ever_waits_under_backpressure(params, scheme, k):
    """The array has no stall: under heavy output backpressure and input idles, no PE is ever
    offered a payload it cannot take (``overrun`` stays low, checked every cycle) and every
    output equals golden's (nothing lost or reordered). Where the array announces its input
    ``ready`` a cycle ahead (INT8), ``ready_next`` is the next cycle's ``ready`` every cycle."""
    # 16 tiles: several times the Q tiles the drain holds.
    cfg, qt, acts, result = make_case(params, 4 * params["rows"], 4 * params["cols"], k, 29,
                                      scheme)
    steps, tiles = gemm_stream(cfg, acts, qt)
    words = pack_steps(cfg, steps)
    expected = list(expected_codes(cfg, result, tiles))
    dut = SystolicArray(cfg)
    chooser = np.random.default_rng(4)
    got, overruns, readies = [], [], []

    async def source(ctx):
        ctx.set(dut.special_values, special_register(cfg))
        for word in words:
            for _ in range(int(chooser.random() < 0.3)):  # an idle cycle
                await ctx.tick()
            await stream_put(ctx, dut.i_stream, dut.i_stream.payload.shape().from_bits(word))

    async def sink(ctx):
        while len(got) < len(expected) and not any(overruns[-1:]):  # a loss would hang
            ctx.set(dut.o_stream.ready, bool(chooser.random() < 0.1))
            await ctx.tick()

    async def monitor(ctx):
        async for _clk, _rst, valid, ready, code, overrun, *ahead in ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.ready, dut.o_stream.payload.code,
                dut.overrun, dut.i_stream.ready, dut.ready_next):
            overruns.append(overrun)
            readies.append(tuple(ahead))
            if valid and ready:
                got.append(int(code))

    run_simulation(dut, [source, sink], processes=[monitor], deadline=1e-2)
    assert not any(overruns)
    assert got == [int(e) for e in expected]
    if dut.ready_ahead(None):
        assert len({ready for ready, _ in readies}) == 2  # it fell and rose
        wrong = [t for t in range(len(readies) - 1) if readies[t][1] != readies[t + 1][0]]
        assert not wrong, f"cycle {wrong[0]}: ready_next is not the next cycle's ready"
    else:
        assert not any(nxt for _, nxt in readies)
    print(f"{len(got)} outputs of {len(tiles)} tiles in {len(overruns)} cycles, no PE waited")


def zero_point_case(act_format, seed=31):
    """An int4_asym GEMM for an array with zero points (golden.gemm.core_tensor's offset form):
    5 x 7 x (3 groups + a ragged 4), every zero point of 0 .. 15 among the groups (0 and 15
    forced: channel 0's first group all positive, channel 1's all negative), and for INT8 a
    token whose first group is all -128 (the largest ``-sum_k a_k``, ``128 G``: the row sum's
    width bound) against channel 2's first group of code 15 beside zero point 0 (the largest
    level, 15)."""
    params = dict(rows=2, cols=3, lanes=4, group_size=16, act_format=act_format,
                  formats=ggemm.scheme_formats("int4_asym", zero_points=True), zero_points=True)
    if act_format != "int8":
        params.update(mant_width=10, act_exp_bits=3)
    cfg = ggemm.ArrayConfig(**params)
    rng = np.random.default_rng(seed)
    m, n, k = 5, 7, 3 * 16 + 4
    w = rng.uniform(-1, 1, (n, k)) + rng.uniform(-1.5, 1.5, (n, 1))
    w[0, :16] = np.abs(w[0, :16])
    w[1, :16] = -np.abs(w[1, :16]) - 0.1
    w[2, :16] = np.linspace(0.0, 1.0, 16)
    qt = quantize(w, "int4_asym", group_size=16, scale_format="int8")
    assert {0, 15} <= set(qt.zero_points.ravel().tolist())
    assert qt.codes[2, 15] == 15 and qt.zero_points[2, 0] == 0
    x = rng.standard_normal((m, k)) * 3.0
    if act_format == "int8":
        xq, act_scale = ggemm.quantize_activations_int8(x)
        xq[1, :16] = -128
    else:
        xq, act_scale = x.astype(np.float16), None
    ct = ggemm.core_tensor(qt, zero_points=True)
    result = ggemm.gemm(xq, ct, cfg, act_scale)
    # An independent path: golden with the zero points subtracted from the unsigned codes.
    native = ggemm.gemm(xq, qt, dataclasses.replace(cfg, formats=qt.formats, zero_points=False),
                        act_scale)
    np.testing.assert_array_equal(result.codes, native.codes)
    return cfg, ct, ggemm.act_mantissas(xq, cfg), result


@pytest.mark.parametrize("act_format", ["int8", "fp16"])
def test_zero_point_correction_bit_exact(act_format):
    """MixPE's zero-point correction in the array (golden.pe: the PEs multiply by the offset
    codes and add ``z * (-sum_k a_k)`` once per group, the row sums from the front end):
    bit-exact against golden at the corner cases of zero_point_case, 2 terms per weight (int4's,
    not the 3 of folded int5 levels), and the cycles equal the model's."""
    cfg, ct, acts, result = zero_point_case(act_format)
    assert cfg.terms == 2
    stats = {}
    out, tiles, n_steps = run_array_gemm(cfg, acts, ct, stats=stats)
    expected = expected_codes(cfg, result, tiles)
    assert (out == expected).all()
    measured = stats["output_cycles"][-1] + 1
    model = ggemm.gemm_cycles(5, 7, acts["mant"].shape[1], cfg)
    print(f"checked {len(expected)} outputs ({n_steps} steps); cycles {measured}, model "
          f"{model['cycles']}")
    assert measured == model["cycles"]
    # Without the zero points the outputs differ: the correction is really applied.
    no_zp = dataclasses.replace(ct, zero_points=np.zeros_like(ct.zero_points))
    out, _, _ = run_array_gemm(cfg, acts, no_zp)
    assert (out != expected).any()


def test_zero_points_need_an_array_built_with_them():
    cfg, ct, acts, _ = zero_point_case("int8")
    plain = dataclasses.replace(cfg, zero_points=False)
    with pytest.raises(ValueError, match="zero_points"):
        run_array_gemm(plain, acts, ct, engine="amaranth")
    with pytest.raises(ValueError, match="lut PE takes no zero points"):
        dataclasses.replace(cfg, pe_kind="lut")


@pytest.mark.parametrize("early", [False, True])
def test_each_site_ands_its_own_valid_and_credit_flip_flops(early):
    """With ``site_credits``, registered credits and a one-cycle front end, every serializer
    site has its own flip-flops of the taken step's ``valid`` and of ``has_credit`` (ANDed at
    the site), not one copy of the AND, which would leave one LUT driving every site; with
    early credits (the iCE40 form) or without ``site_credits`` one flip-flop per site of the
    AND. The cycles are the same (test_feed_credits_keep_up, the core's tests)."""
    import re

    from amaranth.back import rtlil

    cfg = ArrayConfig(**dict(INT8_BITMOD, lanes=8))
    assert cfg.front_end_latency == 1
    array = SystolicArray(cfg, early_credits=early, site_credits=True)
    text = rtlil.convert(array, name="top")
    sites = len(re.findall(r"connect \\Q \\site\d+_valid\n", text))
    credits = len(re.findall(r"connect \\Q \\site\d+_credit\n", text))
    assert sites >= cfg.rows + cfg.cols
    assert credits == (0 if early else sites)
    plain = rtlil.convert(SystolicArray(cfg, early_credits=early), name="top")
    assert re.findall(r"connect \\Q \\site\d+_credit\n", plain) == []
    with pytest.raises(TypeError, match="site_credits must be a bool, not 1"):
        SystolicArray(cfg, site_credits=1)


def test_each_site_loads_its_column_or_rows_copy_of_the_step_taken():
    """With ``site_taken`` every serializer site's ``valid`` flip-flop loads its own column's
    or row's bit of :attr:`site_taken` (the sites in the serializer's order: each column's,
    then each row's) and nothing else, and no ``site<i>_credit`` flip-flop is made: no
    ``valid`` or ``has_credit`` of one flip-flop reaches every site. The cycles and results
    are the other forms' (test_feed_credits_keep_up, "site taken"). Validated: a bool, and
    registered credits with a one-cycle front end."""
    from amaranth.hdl import Fragment

    cfg = ArrayConfig(**dict(INT8_BITMOD, lanes=8))
    array = SystolicArray(cfg, early_credits=False, site_taken=True)
    per_col, per_row = array_sites = (2, 2)  # 8 lanes in sites of 4 (SITE_LANES)
    owners = ([c for c in range(cfg.cols) for _ in range(per_col)]
              + [cfg.cols + r for r in range(cfg.rows) for _ in range(per_row)])
    loads = {}
    for statement in Fragment.get(array, None).statements["sync"]:
        # (the sync domain's top-level assignments: an If or Switch has no ``lhs``)
        name = getattr(getattr(statement, "lhs", None), "name", "")
        if name.startswith("site"):
            loads[name] = repr(statement.rhs)
    want = {f"site{i}_valid": f"(slice (sig site_taken) {owner}:{owner + 1})"
            for i, owner in enumerate(owners)}
    assert loads == want, array_sites
    with pytest.raises(TypeError, match="site_taken must be a bool, not 1"):
        SystolicArray(cfg, site_taken=1)
    with pytest.raises(ValueError, match="site_taken needs registered credits"):
        SystolicArray(cfg, early_credits=True, site_taken=True)


@pytest.mark.parametrize("early", [False, True])
def test_ready_is_a_register_without_early_credits(early):
    """The array's input ``ready`` is a flip-flop of its own (``has_credit_q``, the credit of
    the next cycle registered) unless credits come back early; the cycles are the same
    (test_feed_credits_keep_up)."""
    import re

    from amaranth.back import rtlil

    cfg = ArrayConfig(rows=2, cols=2, lanes=2, group_size=4, formats=("int4",), scale_bits=2)
    text = rtlil.convert(SystolicArray(cfg, early_credits=early), name="top")
    # (Amaranth names the flip-flop after the credit signal it drives.)
    registered = re.findall(r"connect \\Q \\(has_credit\S*)\n", text)
    assert registered == ([] if early else ["has_credit"])
    # Its input, ``ready_next``, reads the count's ``>= 2`` and ``>= 1`` from flip-flops
    # loaded from the next count, not the count through an adder and a compare.
    flags = sorted(re.findall(r"connect \\Q \\(credits_(?:two|one)_or_more)\n", text))
    assert flags == ([] if early else ["credits_one_or_more", "credits_two_or_more"])

"""The accelerator core (hdl/array/core.py): command protocol, tiled GEMMs bit-exact against
golden/gemm.py, counters against the golden cycle model, bad commands, reset between jobs."""

import dataclasses

import numpy as np
import pytest

from bitmod.golden import core as gcore
from bitmod.golden import gemm as ggemm
from bitmod.golden.core import CoreConfig
from bitmod.golden.quantize import get_scheme, quantize
from bitmod.hdl.array.core import AcceleratorCore
from bitmod.sim.amaranth_sim import run_simulation, stream_get, stream_put
from bitmod.sim.core_driver import run_script

BITMOD = ["fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"]
INT8_BITMOD = dict(rows=2, cols=3, lanes=4, group_size=16, formats=BITMOD, act_format="int8",
                   max_m=8, max_n=16, max_k=64)
FP16_INT8W = dict(rows=2, cols=2, lanes=4, group_size=16, formats="int8_sym",
                  act_format="fp16", mant_width=10, act_exp_bits=3, max_m=8, max_n=14,
                  max_k=64)
# The same cores with the bit-parallel int PE (golden.gemm.PE_KINDS): one weight-step a cycle.
INT8_INT4_INTPE = dict(rows=2, cols=3, lanes=4, group_size=16, formats="int4_sym",
                       act_format="int8",
                       max_m=8, max_n=16, max_k=64, pe_kind="int")
FP16_INT8W_INTPE = dict(FP16_INT8W, pe_kind="int")
# The exact minifloat PE: MX weights (power-of-two group scales as shifts), 32-element blocks;
# one extra feed stage (golden.core.CoreConfig.feed_stages: a cycle more per job).
INT8_MXFP4_MFPE = dict(rows=2, cols=3, lanes=4, group_size=32, formats="fp4_e2m1",
                       act_format="int8", max_m=8, max_n=16, max_k=96, pe_kind="minifloat",
                       feed_stages=1)
FP16_MXFP8_MFPE = dict(rows=2, cols=2, lanes=4, group_size=32, formats="fp8_e4m3",
                       act_format="fp16", mant_width=8, act_exp_bits=3, max_m=8, max_n=14,
                       max_k=96, pe_kind="minifloat")
# The LUT-table PE: B = 4 bit-planes per weight-step, the rows' tables built after the front end.
FP16_INT4_LUTPE = dict(rows=2, cols=3, lanes=4, group_size=16, formats="int4_sym",
                       act_format="fp16", mant_width=10, act_exp_bits=3, max_m=8, max_n=16,
                       max_k=64, pe_kind="lut")
# The bit-plane PE (step-major): 4 x 8 plane pairs per weight-step, <= 8-bit mantissas; two
# extra feed stages.
FP16_INT4_BPPE = dict(FP16_INT4_LUTPE, mant_width=8, pe_kind="bitplane", feed_stages=2)
# The form of arrays spread across a large chip (the ULX3S 7 x 6 x 16 at 100 MHz): a feed
# stage, so the banks' own lane masks, ready copies and step-taken copies for the sites, and
# the column tops' echo stage, so each column and row decides its own pops.
INT8_BITMOD_SPREAD = dict(INT8_BITMOD, feed_stages=1, serializer_stages=3)
OPS, ST = gcore.OPS, gcore.STATUS


def make_job(cfg, m, n, k, seed, scheme):
    """Random weights (quantized with INT8 group scales) and activations, and golden's result."""
    rng = np.random.default_rng(seed)
    if get_scheme(scheme).kind == "mx":
        # Block scales spread over 6 binades per channel (the span the core takes is 8).
        spread = np.exp2(rng.integers(-5, 1, size=(n, -(-k // cfg.group_size))))
        w = rng.standard_normal((n, k)) * np.repeat(spread, cfg.group_size, axis=1)[:, :k]
        qt = ggemm.quantize_for_core(w, scheme, group_size=cfg.group_size)
    else:
        qt = quantize(rng.standard_normal((n, k)), scheme, group_size=cfg.group_size,
                      scale_format="int8")
    x = rng.standard_normal((m, k)) * rng.choice([0.01, 1.0, 30.0], size=(m, 1))
    if cfg.act_format == "int8":
        xq, _ = ggemm.quantize_activations_int8(x)
        xq[0, :2] = [-128, 127]  # sign extremes
    else:
        # Wide per-group exponent spread: the token floor and the group shifts both matter.
        spread = np.exp2(rng.integers(-12, 4, size=(m, -(-k // cfg.group_size))))
        x = x * np.repeat(spread, cfg.group_size, axis=1)[:, :k]
        x[0, :3] = [0.0, -0.0, 6.0e-8]  # zeros and a subnormal
        xq = x.astype(np.float16)
    return xq, qt, ggemm.gemm(xq, qt, cfg).codes & 0xFFFFFFFF


def job_items(mp, x, qt, *, during=()):
    """Load, run (with ``during`` commands sent while the job runs) and read a job."""
    m, k = x.shape
    n = qt.shape[0]
    run = gcore.run_commands(m, n, k)
    return (gcore.load_commands(mp, x, qt) + run[:-1] + list(during) + run[-1:]
            + gcore.read_commands(mp, m, n))


def bad_commands(mp):
    """Commands refused with an error status while the core is idle (and their statuses)."""
    cfg = mp.array
    wf = dict(mp.fields["write_weight"])
    lane_bits, word_bits = wf["lane"], wf["word"]
    assert mp.weight_depth < 1 << word_bits, "pick sizes that leave words beyond the buffer"
    # 384 is not a sign-extended int8; 0x7C00 is FP16 +Inf.
    bad_act = 0x0180 if cfg.act_format == "int8" else 0x7C00
    cases = [
        (("start", 0, 0), "bad_job"),  # M, N, K not set since reset
        ((15, 0, 0), "bad_op"),
        ((10, 0, 0), "bad_op"),
        (("write_weight", mp.weight_depth << lane_bits, 0), "bad_addr"),  # word = depth
        (("write_weight", 0, 1 << mp.code_bits), "bad_data"),
        (("write_meta", 0, 1 << mp.meta_bits), "bad_data"),
        (("write_act", 0, bad_act), "bad_data"),
        (("write_act", 0, 0x10000), "bad_data"),
        (("write_act", cfg.rows << (sum(w for _, w in mp.fields["write_act"][:2])), 0),
         "bad_addr"),
        (("set_job", 0, mp.max_m + 1), "bad_job"),
        (("set_job", 2, 0), "bad_job"),
        (("set_job", 3, 1), "bad_addr"),
        (("write_special", 1, 0), "bad_addr"),
        (("read_output", mp.out_depth, 0), "bad_addr"),
        (("read_counter", 6, 0), "bad_addr"),
        (("wait", 0, 0), "ok"),
        (("status", 0, 0), "ok"),
    ]
    # A bank beyond C (when C is not a power of two) and address bits above an op's fields.
    if cfg.cols & (cfg.cols - 1):
        cases.append((("write_weight", cfg.cols << (lane_bits + word_bits), 0), "bad_addr"))
    for op in ("write_weight", "write_meta", "write_act"):
        used = sum(w for _, w in mp.fields[op])
        if used < mp.addr_bits:
            cases.append(((op, 1 << used, 0), "bad_addr"))
    return cases


def model_responses(mp, items):
    model = gcore.CoreModel(mp)
    responses = []
    for item in items:
        if item == "reset":
            model.reset()
            continue
        op, addr, data = item
        responses.append(model.command(OPS[op] if isinstance(op, str) else op, addr, data))
    return responses


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="max_k"):
        AcceleratorCore(CoreConfig(max_k=0))
    with pytest.raises(TypeError, match="max_m"):
        AcceleratorCore(CoreConfig(max_m=2.5))
    with pytest.raises(ValueError, match="max_n"):
        AcceleratorCore(CoreConfig(max_n=1 << 20))
    with pytest.raises(ValueError, match="group_size"):
        AcceleratorCore(CoreConfig(group_size=18))
    # max_k sets the array's group count, and so its accumulator width: too wide is refused.
    with pytest.raises(ValueError, match="64"):
        AcceleratorCore(CoreConfig(act_format="fp16", mant_width=16, act_exp_bits=6,
                                   group_size=128, max_k=1 << 16))
    # Zero points: a PE kind that corrects by them, and one plain int<B> format for the codes.
    with pytest.raises(ValueError, match="int PE takes no zero points"):
        CoreConfig(formats="int4", pe_kind="int", zero_points=True)
    with pytest.raises(ValueError, match="int<B>"):
        CoreConfig(formats="int4_sym", zero_points=True)
    with pytest.raises(TypeError, match="zero_points"):
        CoreConfig(formats="int4", zero_points=1)


def test_buffer_depths_follow_the_formulas():
    mp = CoreConfig(**INT8_BITMOD)
    assert (mp.k_steps, mp.max_groups, mp.m_tiles, mp.n_tiles) == (16, 4, 4, 6)
    assert (mp.weight_depth, mp.meta_depth, mp.act_depth, mp.out_depth) == (96, 24, 64, 128)
    assert mp.array.max_groups == 4
    # Every element of the largest job has its own address; the host helper inverts the map.
    addrs = {mp.weight_address(n, k) for n in range(mp.max_n) for k in range(mp.max_k)}
    assert len(addrs) == mp.max_n * mp.max_k
    assert max(addrs) < 1 << mp.addr_bits


def test_amaranth_sim_protocol_errors():
    """Every bad command gets its error status (Amaranth simulator, no job run)."""
    params = dict(INT8_BITMOD, rows=1, cols=3, max_m=2, max_n=6, max_k=12)
    mp = CoreConfig(**params)
    dut = AcceleratorCore(mp)
    cases = [*bad_commands(mp), (("set_job", 0, 2), "ok"), (("read_counter", 0, 0), "ok")]
    expected = model_responses(mp, [c for c, _ in cases])
    got, valid_timelines = [], []

    async def host(ctx):
        for item, _ in cases:
            word = gcore.pack_command(mp, *item)
            await stream_put(ctx, dut.i_cmd, {"op": word & 15, "addr": word >> 4 & (
                (1 << mp.addr_bits) - 1), "data": word >> (4 + mp.addr_bits)})
            # The response turns valid exactly ``latency`` cycles after the command was taken.
            timeline = [ctx.get(dut.o_resp.valid)]
            for _ in range(dut.latency - 1):
                await ctx.tick()
                timeline.append(ctx.get(dut.o_resp.valid))
            valid_timelines.append(timeline)
            resp = await stream_get(ctx, dut.o_resp)
            got.append((resp.status, resp.data))

    run_simulation(dut, [host], deadline=2e-5)
    assert [s for s, _ in got] == [ST[name] for _, name in cases]
    assert got == expected
    assert all(t == [0] * (dut.latency - 1) + [1] for t in valid_timelines)
    print(f"checked {len(cases)} commands")


@pytest.mark.parametrize(("params", "scheme"), [(INT8_BITMOD, "bitmod4"),
                                               (INT8_BITMOD_SPREAD, "bitmod4"),
                                               (FP16_INT8W, "int8"),
                                               (INT8_INT4_INTPE, "int4"),
                                               (FP16_INT8W_INTPE, "int8"),
                                               (INT8_MXFP4_MFPE, "mxfp4"),
                                               (FP16_MXFP8_MFPE, "mxfp8"),
                                               (FP16_INT4_LUTPE, "int4"),
                                               (FP16_INT4_BPPE, "int4")])
def test_gemm_jobs_bit_exact(params, scheme):
    """One script per core, with random idles on the commands and backpressure on the responses:

    bad commands; job A (M=5, N=13, K = 3 groups + 4, G = 16) with commands sent while it runs;
    job B back to back (M=3, N=4, K = 16 + 6: job A's data sit in B's masked lanes); reset;
    job B again from the kept buffers; job C of the largest size (all buffers full, K a
    multiple of G); job C restarted and reset mid-job; job B loaded and run again. Every
    response equals golden.core's model; outputs equal golden.gemm; counters equal
    golden.core.job_counters.
    """
    mp = CoreConfig(**params)
    cfg = mp.array
    dims = {"A": (5, 13, 3 * 16 + 4), "B": (3, 4, 16 + 6), "C": (mp.max_m, mp.max_n, mp.max_k)}
    data = {name: make_job(cfg, *dim, seed, scheme)
            for seed, (name, dim) in enumerate(dims.items(), 11)}
    during = [("status", 0, 0), ("start", 0, 0), ("write_weight", 0, 0), ("set_job", 0, 1),
              ("read_output", 0, 0), ("read_counter", 0, 0)]

    def rerun(name):
        m, n, k = dims[name]
        return [("write_special", 0, gcore.special_register(cfg)),
                *gcore.run_commands(m, n, k), *gcore.read_commands(mp, m, n)]

    bad = bad_commands(mp)
    segments = [  # (name of the job whose outputs and counters the segment ends with, items)
        (None, [c for c, _ in bad]),
        ("A", job_items(mp, *data["A"][:2], during=during)),
        ("B", job_items(mp, *data["B"][:2])),
        (None, ["reset", ("read_counter", 0, 0), ("status", 0, 0)]),
        ("B", rerun("B")),
        ("C", job_items(mp, *data["C"][:2])),
        (None, [*gcore.run_commands(*dims["C"])[:-1], "reset"]),
        ("B", job_items(mp, *data["B"][:2])),
    ]
    items = [item for _, seg in segments for item in seg]
    expected = model_responses(mp, items)
    bound = sum(gcore.job_counters(mp, *dims[name])["cycles"] for name, _ in segments if name)
    run = run_script(mp, items, idle=0.3, backpressure=0.3, seed=7,
                     timeout_cycles=20 * len(items) + 4 * bound)
    got, model = run.responses, run.model
    sent = [x for x in items if x != "reset"]
    assert len(got) == len(sent) == len(expected)
    assert [s for s, _ in got[:len(bad)]] == [ST[name] for _, name in bad]
    mismatches = [(item, g, e) for item, g, e in zip(sent, got, expected, strict=True)
                  if g[0] != e[0] or (e[1] is not None and g[1] != e[1])]
    assert not mismatches, mismatches[:5]
    busy_refused = [item[0] for item, g in zip(sent, got, strict=True) if g[0] == ST["busy"]]
    assert busy_refused == ["start", "write_weight", "set_job", "read_output"]

    # Outputs and counters of each job against golden.gemm and the cycle model directly.
    pos = 0
    n_codes = 0
    for name, seg in segments:
        seg_resps = got[pos:pos + len([x for x in seg if x != "reset"])]
        pos += len(seg_resps)
        if name is None:
            continue
        m, n, k = dims[name]
        tail = seg_resps[-(m * n + 2 * len(gcore.COUNTERS)):]
        codes = np.array([d for _, d in tail[:m * n]], dtype=object)
        assert (codes == data[name][2].reshape(-1)).all(), name
        assert np.count_nonzero(codes) > codes.size // 2, "mostly zero outputs prove little"
        n_codes += codes.size
        halves = [d for _, d in tail[m * n:]]
        measured = {c: halves[2 * i] | halves[2 * i + 1] << 32
                    for i, c in enumerate(gcore.COUNTERS)}
        assert measured == gcore.job_counters(mp, m, n, k), (name, measured)
        model_cycles = ggemm.gemm_cycles(m, n, k, cfg)["cycles"]
        util = measured["busy_pe_cycles"] / (cfg.rows * cfg.cols * measured["cycles"])
        print(f"job {name} {m}x{n}x{k}: {measured}; gemm_cycles {model_cycles}, "
              f"PE utilization {util:.3f}")
    after_reset = got[sum(len(seg) for _, seg in segments[:3]):][:2]
    assert after_reset == [(ST["ok"], 0), (ST["ok"], 0)], "reset clears counters and done"
    print(f"checked {len(got)} responses ({n_codes} output codes, {len(bad)} bad commands); "
          f"build {model.build_seconds:.1f} s")


def test_engines_run_a_core_script_identically():
    """The same command script (a job with idles, backpressure and a reset mid-job) on the
    compiled harness and on cocotb: identical responses, cycle stamps and cycle counts."""
    mp = CoreConfig(rows=1, cols=2, lanes=4, group_size=16, formats="int4_sym", max_m=3,
                    max_n=4, max_k=32)
    x, qt, _ = make_job(mp.array, 3, 4, 20, 5, "int4")
    items = job_items(mp, x, qt)
    items = [*items[:len(items) // 2], "reset", *items]
    runs = [run_script(mp, items, idle=0.2, backpressure=0.3, seed=11, timeout_cycles=20_000,
                       engine=engine) for engine in ("harness", "cocotb")]
    harness, cocotb_run = runs
    assert harness.responses == cocotb_run.responses
    assert harness.stamps == cocotb_run.stamps and harness.cycles == cocotb_run.cycles
    assert len(harness.responses) == len([i for i in items if i != "reset"])
    print(f"{len(harness.responses)} responses, {harness.cycles} cycles identical; harness "
          f"{harness.seconds:.2f} s, cocotb {cocotb_run.seconds:.2f} s")


@pytest.mark.parametrize(("scheme", "zero_points"), [("int4_asym", False), ("int4_asym", True),
                                                     ("mxfp4", False)])
def test_zero_points_and_mx_scales_on_the_core(scheme, zero_points):
    """Asymmetric and MX weights through the core (golden.gemm.core_tensor: zero points folded
    into int5 levels, or with ``zero_points`` the offset int4 codes and the zero points in the
    group metadata for the PEs' per-group correction; E8M0 block scales as power-of-two INT8
    codes), bit-exact against golden: random skewed weights with every zero point of the range
    (or block scales spanning the full 7 binades), and a real MiniLM-L6 slice (layer 0's query
    projection, 8 channels)."""
    from bitmod.golden.quantize import get_scheme
    from bitmod.models import minilm
    from bitmod.sim.core_driver import run_core_gemm

    rng = np.random.default_rng(17)
    mx = get_scheme(scheme).kind == "mx"
    group = 32
    k = 4 * group
    random_w = rng.uniform(-1, 1, (8, k)) + rng.uniform(-1.5, 1.5, (8, 1))
    if mx:
        random_w[:, ::group] = 1.0
        random_w *= np.exp2(np.tile(np.array([0, 7, 3, 5]).repeat(group), (8, 1)))
    real_w = minilm.minilm_linear_layers()[minilm_layer := "encoder.layer.0.attention.self.query"]
    real_w = np.asarray(real_w[:8, :k], dtype=np.float64)
    mp = CoreConfig(rows=2, cols=2, lanes=4, group_size=group,
                    formats=ggemm.scheme_formats(scheme, zero_points), act_format="fp16",
                    max_m=4, max_n=8, max_k=k, zero_points=zero_points)
    for label, w in (("random", random_w), (minilm_layer, real_w)):
        qt = quantize(w, scheme, **({} if mx else {"group_size": group,
                                                   "scale_format": "int8"}))
        ct = ggemm.core_tensor(qt, zero_points)
        if not mx:
            assert len(np.unique(qt.zero_points)) > 4, "zero points across the range"
            assert ct.formats == (("int4",) if zero_points else ("int5",))
        x = (rng.standard_normal((4, k)) * 2.0).astype(np.float16)
        golden = ggemm.gemm(x, ct, mp.array).codes & 0xFFFFFFFF
        if not mx:  # the datapath with the zero points subtracted: an independent path
            native = ggemm.gemm(x, qt, dataclasses.replace(mp.array, formats=qt.formats,
                                                           zero_points=False))
            np.testing.assert_array_equal(golden, native.codes & 0xFFFFFFFF)
        run = run_core_gemm(mp, x, ct)
        np.testing.assert_array_equal(run["codes"], golden.astype(np.uint32), err_msg=label)
        assert run["counters"] == gcore.job_counters(mp, 4, 8, k), label


@pytest.mark.parametrize(("params", "scheme"), [(INT8_MXFP4_MFPE, "mxfp4"),
                                               (FP16_INT4_LUTPE, "int4"),
                                               (FP16_INT4_BPPE, "int4")])
def test_new_pe_kinds_on_a_real_minilm_slice(params, scheme):
    """The minifloat, LUT-table and bit-plane PE kinds on real weights: MiniLM-L6 layer 0's
    attention output projection (the first 16 channels, max_k of K), quantized as the core
    takes them, bit-exact against golden with the counters equal to the cycle model (the same
    core configurations as test_gemm_jobs_bit_exact, so no extra model build)."""
    from bitmod.models import minilm
    from bitmod.sim.core_driver import run_core_gemm

    mp = CoreConfig(**params)
    cfg = mp.array
    m, n, k = mp.max_m, mp.max_n, mp.max_k
    layer = "encoder.layer.0.attention.output.dense"
    w = np.asarray(minilm.minilm_linear_layers()[layer][:n, :k], dtype=np.float64)
    qt = ggemm.quantize_for_core(w, scheme, group_size=cfg.group_size)
    rng = np.random.default_rng(23)
    x = rng.standard_normal((m, k)) * 3.0
    if cfg.act_format == "int8":
        xq, _ = ggemm.quantize_activations_int8(x)
    else:
        xq = x.astype(np.float16)
    golden = ggemm.gemm(xq, qt, cfg).codes & 0xFFFFFFFF
    run = run_core_gemm(mp, xq, qt)
    np.testing.assert_array_equal(run["codes"], golden.astype(np.uint32), err_msg=layer)
    assert np.count_nonzero(golden) > golden.size // 2
    assert run["counters"] == gcore.job_counters(mp, m, n, k)


@pytest.mark.parametrize("last", ["write_meta", "write_act", "write_weight"])
def test_a_write_just_before_start_is_the_one_the_job_reads(last):
    """Host writes land ``HOST_WRITE_STAGES`` cycles late (hdl.array.buffers): a write of the
    first element the job reads (channel 0's group metadata, token 0's and channel 0's first
    elements, changed from what was loaded), sent with no idle cycle before ``start``, is what
    the job computes with: every response equals golden.core's model, which runs commands one
    after the other."""
    from bitmod.hdl.array.buffers import HOST_WRITE_STAGES

    mp = CoreConfig(**INT8_BITMOD)
    m, n, k = 4, 6, 32
    x, qt, _ = make_job(mp.array, m, n, k, 5, "bitmod4")
    loaded = {(op, addr): data for op, addr, data in gcore.load_commands(mp, x, qt)}
    first = {"write_meta": mp.meta_address(0, 0), "write_act": mp.act_address(0, 0),
             "write_weight": mp.weight_address(0, 0)}
    # A different element at each address: the code's or value's lowest bit flipped, and for
    # the metadata its scale (the lowest field, INT8 scales of at least 1) doubled.
    changed = {op: loaded[op, addr] ^ 1 if op != "write_meta" else loaded[op, addr] * 2
               for op, addr in first.items()}
    writes = [(op, first[op], changed[op]) for op in first if op != last]
    writes.append((last, first[last], changed[last]))
    run = gcore.run_commands(m, n, k)
    items = (gcore.load_commands(mp, x, qt) + run[:3] + writes + run[3:]
             + gcore.read_commands(mp, m, n))
    expected = model_responses(mp, items)
    got = run_script(mp, items, timeout_cycles=20 * len(items) + 4 * 10_000).responses
    assert got == expected
    assert expected[-m * n - 2 * len(gcore.COUNTERS):] != model_responses(
        mp, gcore.load_commands(mp, x, qt) + run + gcore.read_commands(mp, m, n))[
        -m * n - 2 * len(gcore.COUNTERS):], "the changed elements change the outputs"
    print(f"write before start landed ({HOST_WRITE_STAGES} stages); {len(items)} commands")

"""The core's controller (hdl/array/controller.py) on its buffers, beside golden: for ragged
M, N, K (K below, at and beyond a group, not a multiple of L) with INT8, FP16 and BF16
activations, the weight-steps it gives the array are those of golden.gemm's tile order (m0
outer, n0, groups, steps), padded with zeros for rows, columns and lanes beyond the job
although the buffers hold stale data there; the FP pre-pass's group exponents and token
floors equal golden.gemm.act_mantissas; the counters equal golden.core.job_counters (the array
stand-in takes a step every cycle and ends the job golden.gemm.gemm_cycles after it took the
first); under random backpressure the steps are the same, held while not taken, and the
counters follow their definitions."""

import random

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import wiring

from bitmod.golden import core as gcore
from bitmod.golden import gemm as ggemm
from bitmod.golden.core import CoreConfig
from bitmod.golden.quantize import quantize
from bitmod.hdl.array.buffers import CoreBuffers, buffer_shapes, word_writes
from bitmod.hdl.array.controller import CoreController
from bitmod.hdl.array.step_reader import FeedForm
from bitmod.sim.amaranth_sim import run_simulation

BITMOD = ("fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg")
# (core parameters, weight scheme, jobs (M, N, K)): the first job runs with the array always
# ready, the others under backpressure; the last repeats the first after a smaller job.
CASES = {
    "int8": (dict(rows=2, cols=3, lanes=4, group_size=8, act_format="int8", formats=BITMOD,
                  max_m=5, max_n=7, max_k=24), "bitmod4",
             [(5, 7, 21), (3, 4, 6), (5, 7, 21)]),
    "fp16": (dict(rows=2, cols=2, lanes=4, group_size=8, act_format="fp16", act_exp_bits=2,
                  mant_width=10, formats="int8_sym", max_m=5, max_n=5, max_k=24), "int8",
             [(5, 5, 21), (2, 3, 9), (5, 5, 21)]),
    "bf16_int_pe": (dict(rows=3, cols=2, lanes=2, group_size=4, act_format="bf16",
                         act_exp_bits=3, formats="int4_sym", pe_kind="int", max_m=7, max_n=5,
                         max_k=10), "int4", [(7, 3, 10), (4, 5, 3), (7, 3, 10)]),
    # Two extra feed stages: a cycle more per stage, in every form.
    "int8_feed_stages": (dict(rows=2, cols=3, lanes=4, group_size=8, act_format="int8",
                              formats=BITMOD, max_m=5, max_n=7, max_k=24, feed_stages=2),
                         "bitmod4", [(5, 7, 21), (3, 4, 6), (5, 7, 21)]),
}


class _ControllerOnBuffers(Elaboratable):
    """The controller with its buffers, connected as in the core; the buffers' command-side
    write ports are left to the testbench."""

    def __init__(self, mp, form=None):
        self.ctrl = CoreController(mp, form)
        self.buffers = CoreBuffers(mp)
        self._fp = mp.act_format != "int8"

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctrl, m.submodules.buffers = ctrl, buffers = self.ctrl, self.buffers
        fp_buffers = ["gexp", "base"] if self._fp else []
        for name in ["weight", "meta", "act", *fp_buffers]:
            for ours, theirs in zip(getattr(ctrl, f"{name}_read"),
                                    getattr(buffers, f"{name}_read"), strict=True):
                wiring.connect(m, ours, theirs)
        for name in fp_buffers:
            for ours, theirs in zip(getattr(ctrl, f"{name}_write"),
                                    getattr(buffers, f"{name}_write"), strict=True):
                wiring.connect(m, ours, theirs)
        return m


def make_job(mp, m, n, k, scheme, rng):
    """Random weights (INT8 group scales) and activations: INT8 codes with their extremes, or
    FP values with zeros, subnormals (a group of nothing else) and groups far below the
    token's largest."""
    cfg = mp.array
    qt = quantize(rng.standard_normal((n, k)), scheme, group_size=cfg.group_size,
                  scale_format="int8")
    if cfg.act_format == "int8":
        x = rng.integers(-128, 128, size=(m, k)).astype(np.int8)
        x[0, :2] = [-128, 127]
    else:
        groups = -(-k // cfg.group_size)
        spread = np.exp2(rng.integers(-14, 6, size=(m, groups)))
        x = rng.standard_normal((m, k)) * np.repeat(spread, cfg.group_size, axis=1)[:, :k]
        x[0, :3] = [0.0, -0.0, 6.0e-8]
        # A group of subnormals and zeros only: its exponent is 1, not 0.
        tiny = {"fp16": 2.0 ** -24, "bf16": 2.0 ** -133}[cfg.act_format]  # least subnormal
        width = min(cfg.group_size, k)
        x[1, :width] = tiny * rng.integers(0, 4, width)
        x = x.astype(np.float16) if cfg.act_format == "fp16" else x
    return x, qt


def buffer_words(mp, x, qt, words):
    """``words`` (bank lists of lane lists) with the job's elements put where golden.core's
    address map puts them (its command model decodes golden's load commands)."""
    model = gcore.CoreModel(mp)
    for op, addr, data in gcore.load_commands(mp, x, qt):
        assert model.command(gcore.OPS[op], addr, data)[0] == gcore.STATUS["ok"]
    act_mask = (1 << mp.act_bits) - 1
    for (bank, word, lane), value in model.weights.items():
        words["weight"][bank][word][lane] = value
    for (bank, word), value in model.meta.items():
        words["meta"][bank][word] = value
    for (bank, word, lane), value in model.acts.items():
        words["act"][bank][word][lane] = value & act_mask
    return words


def expected_steps(mp, x, qt):
    """The job's weight-steps in golden.gemm's order, padding zeroed, as plain values."""
    cfg = mp.array
    R, C, L, G = cfg.rows, cfg.cols, cfg.lanes, cfg.group_size
    m, k = x.shape
    n = qt.shape[0]
    n_steps = -(-k // L)
    fp = cfg.act_format != "int8"
    acts = ggemm.act_mantissas(x, cfg)
    words = gcore.act_words(x, cfg) if fp else acts["words"]
    sel = qt.selectors if qt.selectors is not None else np.zeros(qt.scale_codes.shape, int)
    steps = []
    for m0 in range(0, m, R):
        for n0 in range(0, n, C):
            for s in range(n_steps):
                g = s * L // G
                ks = [s * L + lane for lane in range(L)]
                rows = [m0 + r for r in range(R)]
                cols = [n0 + c for c in range(C)]
                step = {
                    "codes": [[int(qt.codes[j, kk]) if j < n and kk < k else 0 for kk in ks]
                              for j in cols],
                    "sel": [int(sel[j, g]) if j < n else 0 for j in cols],
                    "scale": [int(qt.scale_codes[j, g]) if j < n else 0 for j in cols],
                    "acts": [[int(words[i, kk]) if i < m and kk < k else 0 for kk in ks]
                             for i in rows],
                    "group_last": int(s == n_steps - 1 or (s + 1) * L % G == 0),
                    "out_last": int(s == n_steps - 1),
                }
                if fp:
                    step["gexp"] = [int(acts["gexp"][i, g]) if i < m else 0 for i in rows]
                    step["base"] = [int(acts["base"][i]) if i < m else 0 for i in rows]
                steps.append(step)
    return steps


def _plain(payload, fp):
    """A step payload (``data.Const``) as the plain values of :func:`expected_steps`."""
    step = {
        "codes": [list(col) for col in payload.codes], "sel": list(payload.sel),
        "scale": list(payload.scale), "acts": [list(row) for row in payload.acts],
        "group_last": payload.group_last, "out_last": payload.out_last,
    }
    if fp:
        step["gexp"], step["base"] = list(payload.gexp), list(payload.base)
    return {key: _ints(value) for key, value in step.items()}


def _ints(value):
    return [_ints(v) for v in value] if isinstance(value, list) else int(value)


# The forms: the step queue with the array's ready (the ECP5's, for FP activations), with it
# announced a cycle ahead (the ECP5's, INT8), and the direct form (the iCE40's).
FORMS = {"queued": FeedForm(queued=True), "ahead": FeedForm(queued=True, ready_ahead=True),
         "direct": FeedForm(queued=False),
         "bank ready": FeedForm(queued=True, ready_ahead=True, bank_ready=True)}


# (The ahead forms are the INT8 core's; the banks' own ready copies come with feed stages.)
@pytest.mark.parametrize(("name", "form"), [
    (name, form) for name in CASES for form in FORMS
    if (form != "ahead" or name.startswith("int8"))
    and (form != "bank ready" or name == "int8_feed_stages")])
def test_controller_steps_and_counters_match_golden(name, form):
    params, scheme, jobs = CASES[name]
    mp = CoreConfig(**params)
    cfg = mp.array
    fp = cfg.act_format != "int8"
    rng = np.random.default_rng(21)
    shapes = buffer_shapes(mp)
    # Stale data everywhere first: whatever is not the job's must never reach the array.
    words = {buf: [[[int(v) for v in rng.integers(0, 1 << (width // mp.lanes), mp.lanes)]
                    if buf in ("weight", "act") else int(rng.integers(0, 1 << width))
                    for _ in range(depth)] for _ in range(banks)]
             for buf, (banks, depth, width, _) in shapes.items() if buf in ("weight", "meta",
                                                                             "act")}
    data = [make_job(mp, *job, scheme, rng) for job in jobs]
    loads = [{buf: [[list(w) if isinstance(w, list) else w for w in bank] for bank in banks]
              for buf, banks in buffer_words(mp, *job_data, words).items()}
             for job_data in data]
    dut = _ControllerOnBuffers(mp, FORMS[form])
    ctrl, buffers = dut.ctrl, dut.buffers
    chooser = random.Random(5)
    results = []

    async def load(ctx, content):
        for buf, banks in content.items():
            ports = getattr(buffers, f"{buf}_write")
            lane_bits = shapes[buf][2] // mp.lanes
            for word in range(shapes[buf][1]):
                writes = []  # per bank: its (data, en) writes of this word
                for bank, port in enumerate(ports):
                    value = banks[bank][word]
                    if isinstance(value, list):
                        value = sum(v << (lane * lane_bits) for lane, v in enumerate(value))
                    # A host-written bank stores one element per write (in its enabled lanes).
                    writes.append(word_writes(buf, value, len(port.en), lane_bits))
                # The banks of one buffer take the same number of writes of a word.
                for step in zip(*writes, strict=True):
                    for port, (data, en) in zip(ports, step, strict=True):
                        ctx.set(port.addr, word)
                        ctx.set(port.data, data)
                        ctx.set(port.en, en)
                    await ctx.tick()
            for port in ports:
                ctx.set(port.en, 0)

    async def bench(ctx):
        # The array's ready, set a cycle ahead on step_ready_next as well (the ready_ahead
        # form's input, ignored by the others): it changes only in the job loop.
        ready = True
        ctx.set(ctrl.o_step.ready, ready)
        ctx.set(ctrl.step_ready_next, ready)
        for index, ((m, n, k), content) in enumerate(zip(jobs, loads, strict=True)):
            await load(ctx, content)
            always_ready = index == 0
            ctx.set(ctrl.job, {"m": m, "n": n, "k": k})
            ctx.set(ctrl.start, 1)
            await ctx.tick()
            ctx.set(ctrl.start, 0)
            n_steps = -(-m // cfg.rows) * -(-n // cfg.cols) * -(-k // cfg.lanes)
            gemm = ggemm.gemm_cycles(m, n, k, cfg)["cycles"]
            steps, readies, held = [], [], None
            cycle, first, end_at = 0, None, None
            while True:
                cycle += 1  # cycle 1 is the first after start was taken
                assert ctx.get(ctrl.busy) and not ctx.get(ctrl.done)
                upcoming = always_ready or chooser.random() < 0.5
                readies.append(ready)
                ctx.set(ctrl.o_step.ready, ready)
                ctx.set(ctrl.step_ready_next, upcoming)
                ctx.set(ctrl.job_end, cycle == end_at)
                valid = ctx.get(ctrl.o_step.valid)
                payload = _plain(ctx.get(ctrl.o_step.payload), fp) if valid else None
                if held is not None:
                    assert valid and payload == held, "a step changed before it was taken"
                held = payload if valid and not ready else None
                if valid and ready:
                    steps.append(payload)
                    if first is None:
                        first = cycle
                        if always_ready:  # the array's share: golden's cycle model
                            end_at = first + gemm - 1
                    if len(steps) == n_steps and not always_ready:
                        end_at = cycle + chooser.randrange(1, 6)
                await ctx.tick()
                ready = upcoming
                if cycle == end_at:
                    ctx.set(ctrl.o_step.ready, ready)
                    break
                assert cycle < 10 * (gemm + m * k), "the job does not end"
            ctx.set(ctrl.job_end, 0)
            for _ in range(3):  # idle: no further step
                assert not ctx.get(ctrl.o_step.valid) and not ctx.get(ctrl.busy)
                assert ctx.get(ctrl.done)
                await ctx.tick()
            value = ctx.get(ctrl.counters)
            counters = {name: int(value[name]) for name in gcore.COUNTERS}
            results.append((steps, counters, cycle, readies))

    run_simulation(dut, [bench], deadline=1e-2)
    assert len(results) == len(jobs)
    for index, ((m, n, k), (x, qt), (steps, counters, cycles, readies)) in enumerate(
            zip(jobs, data, results, strict=True)):
        want = expected_steps(mp, x, qt)
        assert len(steps) == len(want), (m, n, k)
        bad = [i for i, (g, w) in enumerate(zip(steps, want, strict=True)) if g != w]
        assert not bad, f"job {m}x{n}x{k}: step {bad[0]} is {steps[bad[0]]}, not {want[bad[0]]}"
        model = gcore.job_counters(mp, m, n, k)
        assert counters["busy_pe_cycles"] == model["busy_pe_cycles"]
        if index == 0:
            assert counters == model, (counters, model)
        else:  # the busy window and the bubbles: the first feed cycles, if the array was ready
            latency = mp.feed_latency
            prepass = model["cycles"] - latency - ggemm.gemm_cycles(m, n, k, cfg)["cycles"]
            assert counters["cycles"] == cycles
            assert counters["stall_cycles"] == sum(readies[prepass:prepass + latency])
        print(f"job {m}x{n}x{k}: {len(steps)} steps equal golden's; counters {counters}")


def test_feed_form_is_validated():
    with pytest.raises(TypeError, match="form must be a FeedForm or None, not 'queued'"):
        CoreController(CoreConfig(**CASES["int8"][0]), "queued")
    with pytest.raises(TypeError, match=r"FeedForm\.ready_ahead must be a bool, not 1"):
        FeedForm(ready_ahead=1)
    with pytest.raises(ValueError, match=r"FeedForm\.ready_ahead needs INT8 activations "
                                         r"\(no pre-pass\), not fp16"):
        CoreController(CoreConfig(**CASES["fp16"][0]), FeedForm(ready_ahead=True))

"""The controller's step loop (hdl/array/step_loop.py) beside a Python walk of golden.gemm's
tile order: for ragged M, N, K (below, at and beyond a group; not multiples of R, C, L) and
both walks (the feed's m-tiles, n-tiles, groups, steps; the pre-pass's m-tiles and steps),
advanced in random cycles, every step's addresses, masks and flags equal golden.core's buffer
map (with extra feed stages every bank's copy of the lane mask too); ``remain`` falls after
the last step, a restart goes back to the first and ``stop`` ends the job over everything
else."""

import random

import pytest

from bitmod.golden.core import CoreConfig
from bitmod.hdl.array.step_loop import StepLoop
from bitmod.hdl.array.step_reader import bank_lanes, read_entry_layout
from bitmod.sim.amaranth_sim import run_simulation

CONFIGS = {
    "int8": dict(rows=2, cols=3, lanes=4, group_size=8, act_format="int8",
                 formats=("fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"),
                 max_m=5, max_n=7, max_k=24),
    # Depths that are powers of two (16, 8, 16): the loop's counters, one bit wider than the
    # addresses, must not shift the banks' copies.
    "int8 pow2": dict(rows=2, cols=2, lanes=4, group_size=8, act_format="int8",
                      formats="int4", max_m=8, max_n=8, max_k=16),
    "fp16": dict(rows=3, cols=2, lanes=2, group_size=4, act_format="fp16", act_exp_bits=2,
                 mant_width=10, formats="int8_sym", max_m=7, max_n=5, max_k=10),
}


def _plain(value):
    """A step field as the model writes it: an int, or a list for a per-bank address."""
    try:
        return int(value)
    except TypeError:
        return [int(v) for v in value]


def walk(mp, m, n, k, n_tiles):
    """The steps of a job in golden.gemm's order, as golden.core's buffer map addresses."""
    R, C, L = mp.rows, mp.cols, mp.lanes
    steps_per_group = mp.group_size // L
    k_steps = -(-k // L)
    steps = []
    for mt, m0 in enumerate(range(0, m, R)):
        for nt, n0 in enumerate(range(0, n, C) if n_tiles else [0]):
            for ks in range(k_steps):
                g = ks // steps_per_group
                # (an address per buffer, repeated for every bank: read_entry_layout)
                step = {"weight": [nt * mp.k_steps + ks] * C,
                        "meta": [nt * mp.max_groups + g] * C, "act": [mt * mp.k_steps + ks] * R,
                        "lanes": sum(1 << i for i in range(L) if ks * L + i < k),
                        "rows": sum(1 << r for r in range(R) if m0 + r < m),
                        "cols": sum(1 << c for c in range(C) if n0 + c < n),
                        "group_last": int(ks == k_steps - 1
                                          or ks % steps_per_group == steps_per_group - 1),
                        "out_last": int(ks == k_steps - 1),
                        "rows_valid": min(R, m - m0), "cols_valid": min(C, n - n0)}
                if mp.act_format != "int8":
                    step.update(gexp=[mt * mp.max_groups + g] * R, base=[mt] * R)
                if bank_lanes(mp):  # the lane mask again, once per column and row bank
                    step["bank_lanes"] = [step["lanes"]] * (C + R)
                steps.append(step)
    return steps


@pytest.mark.parametrize(("name", "feed_stages"), [(name, 0) for name in CONFIGS]
                         + [("int8", 1), ("fp16", 2)])
def test_step_loop_walks_golden_order(name, feed_stages):
    mp = CoreConfig(**CONFIGS[name], feed_stages=feed_stages)
    fields = list(read_entry_layout(mp).members)
    jobs = [(mp.max_m, mp.max_n, mp.max_k), (1, 1, 1), (mp.rows + 1, mp.cols, mp.group_size),
            (mp.rows, mp.cols + 1, mp.group_size + mp.lanes - 1), (3, 4, mp.lanes + 1)]
    loop = StepLoop(mp)
    chooser = random.Random(11)
    checked = []

    async def bench(ctx):
        for m, n, k in jobs:
            for n_tiles in (1, 0):
                want = walk(mp, m, n, k, n_tiles)
                ctx.set(loop.job, {"m": m, "n": n, "k": k})
                ctx.set(loop.n_tiles, n_tiles)
                ctx.set(loop.restart, 1)
                await ctx.tick()
                ctx.set(loop.restart, 0)
                got = []
                while ctx.get(loop.remain):
                    advance = chooser.random() < 0.7
                    ctx.set(loop.advance, advance)
                    if advance:
                        value = ctx.get(loop.step)
                        got.append({f: _plain(getattr(value, f)) for f in fields})
                    await ctx.tick()
                    assert len(got) <= len(want), "the loop does not end"
                ctx.set(loop.advance, 0)
                assert got == want, (m, n, k, n_tiles)
                checked.append(len(got))
        # A restart mid-job goes back to the first step; stop wins over a restart.
        ctx.set(loop.restart, 1)
        await ctx.tick()
        ctx.set(loop.restart, 0)
        ctx.set(loop.advance, 1)
        await ctx.tick()
        await ctx.tick()
        ctx.set(loop.advance, 0)
        ctx.set(loop.restart, 1)
        await ctx.tick()
        assert ctx.get(loop.remain) and _plain(ctx.get(loop.step).act) == [0] * mp.rows
        ctx.set(loop.stop, 1)
        await ctx.tick()
        assert not ctx.get(loop.remain)

    run_simulation(loop, [bench], deadline=1e-3)
    assert len(checked) == 2 * len(jobs)
    print(f"{sum(checked)} steps in golden's order")

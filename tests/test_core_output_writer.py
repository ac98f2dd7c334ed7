"""The core's drain to the output buffer (hdl/array/output_writer.py) beside golden.core's
output map: for ragged M and N, the array's R x C results per tile (tiles m0 outer, n0 inner,
row-major, offered with random gaps) are written to golden.core.CoreConfig.output_address
(m0 + r, n0 + c) exactly when the position is inside the job, each in the cycle it is offered;
the job ends with the last result of the last tile and not before; start rewinds."""

import random

import pytest

from bitmod.golden.core import CoreConfig
from bitmod.hdl.array.output_writer import OutputWriter
from bitmod.sim.amaranth_sim import run_simulation

CONFIGS = {
    "3x2_fp32": dict(rows=3, cols=2, max_m=7, max_n=5, max_k=16),
    "2x3_fp16": dict(rows=2, cols=3, act_format="fp16", formats="int8_sym", out_format="fp16",
                     max_m=5, max_n=8, max_k=16),
    "1x1": dict(rows=1, cols=1, max_m=3, max_n=2, max_k=16),
}


def golden_writes(mp, m, n, codes):
    """``(address, code)`` of every result inside the job, in arrival order."""
    R, C = mp.rows, mp.cols
    writes, i = [], 0
    for m0 in range(0, m, R):
        for n0 in range(0, n, C):
            for r in range(R):
                for c in range(C):
                    if m0 + r < m and n0 + c < n:
                        writes.append((mp.output_address(m0 + r, n0 + c), codes[i]))
                    i += 1
    return writes


@pytest.mark.parametrize("register_position", [True, False])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_output_writer_follows_golden_output_map(name, register_position):
    mp = CoreConfig(**CONFIGS[name])
    R, C = mp.rows, mp.cols
    rng = random.Random(7)
    jobs = [(mp.max_m, mp.max_n), (1, 1), (max(1, mp.max_m - 1), max(1, mp.max_n - 2)),
            (mp.rows, mp.cols)]
    dut = OutputWriter(mp, register_position=register_position)
    seen = []

    async def bench(ctx):
        for m, n in jobs:
            tiles = -(-m // R) * -(-n // C)
            codes = [rng.getrandbits(mp.out_bits) for _ in range(tiles * R * C)]
            ctx.set(dut.job, {"m": m, "n": n, "k": 1})
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            writes, ends = [], []
            for i, code in enumerate(codes):
                for _ in range(rng.choice([0, 0, 1, 3])):  # gaps between results
                    assert not ctx.get(dut.output_write.en) and not ctx.get(dut.job_end)
                    await ctx.tick()
                ctx.set(dut.i_result.valid, 1)
                ctx.set(dut.i_result.payload.code, code)
                assert ctx.get(dut.i_result.ready), "the array is held"
                if ctx.get(dut.output_write.en):
                    writes.append((ctx.get(dut.output_write.addr),
                                   ctx.get(dut.output_write.data)))
                if ctx.get(dut.job_end):
                    ends.append(i)
                await ctx.tick()
                ctx.set(dut.i_result.valid, 0)
            seen.append((m, n, codes, writes, ends))

    run_simulation(dut, [bench], deadline=1e-2)
    assert len(seen) == len(jobs)
    for m, n, codes, writes, ends in seen:
        assert writes == golden_writes(mp, m, n, codes), (m, n)
        assert ends == [len(codes) - 1], (m, n, ends)
        assert len({a for a, _ in writes}) == m * n
    print(f"{len(jobs)} jobs: every write at golden's address, one job end each")

"""hdl/arith/act_block.py (ActBlockAligner) bit-exact against golden.bfp.block_align.

The aligner's lanes are independent given the block exponent, so one lane's input space is
(16-bit code, exponent):

* Amaranth simulator: random blocks aligned to exponents at, above and below their largest
  effective exponent, with random idle cycles and backpressure, for both formats, both
  roundings and the three alignments of the largest element (``W - 2 - M`` < 0, = 0, > 0);
* Verilator: FP16, every (code, exponent) pair through every lane (2**16 x 2**5, exhaustive);
  BF16, every code with every exponent from 2 below to ``W + 2`` above its own effective
  exponent (every shift the lane datapath distinguishes, and the refused lanes above), plus
  the exponents 0 and 255; and 100k seeded random blocks aligned to their largest exponent.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Value
from test_act_block import decode_payloads
from test_bfp import IEEE, random_blocks

from bitmod.golden.bfp import aligner_latency, block_align, block_convert
from bitmod.hdl.arith.act_block import ActBlockAligner
from bitmod.sim.amaranth_sim import run_simulation, stream_get, stream_put
from bitmod.sim.vectors import run_vectors


@pytest.mark.parametrize("kwargs, exc, name", [
    ({"lanes": 0}, ValueError, "lanes"),
    ({"lanes": 65}, ValueError, "lanes"),
    ({"act_format": "int8"}, ValueError, "act_format"),
    ({"mant_width": 1}, ValueError, "mant_width"),
    ({"rounding": "floor"}, ValueError, "rounding"),
])
def test_bad_parameters_are_named(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        ActBlockAligner(**kwargs)


def test_parameters_latency_and_widths():
    dut = ActBlockAligner(lanes=3, act_format="bf16", mant_width=10, rounding="trunc")
    assert (dut.lanes, dut.act_format, dut.mant_width, dut.rounding) == (3, "bf16", 10, "trunc")
    with pytest.raises(AttributeError):
        dut.lanes = 4
    for lanes in (1, 4, 5, 64):
        for fmt in ("fp16", "bf16"):
            assert ActBlockAligner(lanes, fmt).latency == aligner_latency(fmt) == 4
    # 16 bits a lane plus the exponent field; W bits a lane plus two flags out.
    assert Value.cast(dut.i_stream.payload).shape().width == 3 * 16 + 8
    assert Value.cast(dut.o_stream.payload).shape().width == 3 * (10 + 2)


def assert_matches_golden(dut, payloads, blocks, exps, label="") -> None:
    _, mant, invalid, saturated = decode_payloads(dut, payloads)
    ref, flags = block_align(blocks, exps, dut.act_format, dut.mant_width, dut.rounding)
    assert (mant == ref).all(), label
    assert (invalid == flags.invalid).all(), label
    assert (saturated == flags.saturated).all(), label


def aligned_blocks(rng, count, lanes, fmt, width):
    """Random blocks (test_bfp.random_blocks) and exponents: a third at the block's largest
    effective exponent, a third up to 6 above it, a third anywhere below it down to 0 (refused
    lanes; far below, ``exp - eff`` wraps to a small shift unless the borrow is caught)."""
    blocks = random_blocks(rng, count, lanes, fmt, width)
    top = block_convert(blocks, fmt, width, "trunc")[0]
    emax = (1 << (IEEE[fmt][2].bit_length())) - 1
    kind = rng.integers(0, 3, size=count)
    offset = np.where(kind == 1, rng.integers(0, 7, size=count),
                      np.where(kind == 2, -rng.integers(1, emax + 1, size=count), 0))
    # Named corners: every lane at the largest finite exponent field, aligned to the exponents
    # 0 .. 11 far below it (the wrap-around shifts of a missing borrow test).
    man_bits, _, efield = IEEE[fmt]
    corner = np.full((12, lanes), efield << man_bits | 0x5)
    return (np.concatenate([blocks, corner]),
            np.concatenate([np.clip(top + offset, 0, emax), np.arange(12)]))


SIM_CONFIGS = [(1, "fp16", 12, "rne"), (4, "fp16", 8, "trunc"), (4, "bf16", 16, "rne"),
               (5, "bf16", 8, "rne"), (16, "fp16", 2, "rne"), (3, "bf16", 24, "trunc")]


@pytest.mark.parametrize("lanes, fmt, width, rounding", SIM_CONFIGS)
def test_amaranth_sim_matches_golden(lanes, fmt, width, rounding):
    dut = ActBlockAligner(lanes, fmt, width, rounding)
    rng = np.random.default_rng([5, lanes, width])
    blocks, exps = aligned_blocks(rng, 48, lanes, fmt, width)
    received = []

    async def producer(ctx):
        for block, exp in zip(blocks, exps, strict=True):
            while rng.random() < 0.3:
                await ctx.tick()
            await stream_put(ctx, dut.i_stream, {"data": [int(x) for x in block],
                                                 "exp": int(exp)})

    async def consumer(ctx):
        for _ in blocks:
            while rng.random() < 0.3:
                await ctx.tick()
            received.append((await stream_get(ctx, dut.o_stream)).as_bits())

    run_simulation(dut, [producer, consumer], deadline=1e-3)
    assert_matches_golden(dut, received, blocks, exps)


def pack(blocks, exps) -> np.ndarray:
    """Flat i_stream payloads: lane i in bits 16*i .. 16*i + 15, the exponent above them."""
    packed = np.asarray(exps, dtype=object) << (16 * blocks.shape[1])
    for i in range(blocks.shape[1]):
        packed = packed + (blocks[:, i].astype(object) << (16 * i))
    return packed


def every_code_with_every_exp(lanes, exp_bits):
    """Every (code, exponent) pair once, ``lanes`` codes a block (code ``lanes * j + i`` in
    lane i): 2**16 * 2**E / lanes blocks."""
    codes = np.arange(1 << 16, dtype=np.int64).reshape(-1, lanes)
    exps = np.arange(1 << exp_bits, dtype=np.int64)
    blocks = np.repeat(codes, exps.size, axis=0)
    return blocks, np.tile(exps, codes.shape[0])


def every_code_near_its_exp(lanes, fmt, width):
    """Every code with every exponent from 2 below to W + 2 above its effective exponent
    (clipped to the field), and with the exponents 0 and the largest."""
    man_bits, _, emax = IEEE[fmt]
    top = (1 << (emax.bit_length())) - 1
    codes = np.arange(1 << 16, dtype=np.int64).reshape(-1, lanes)
    field = (codes >> man_bits) & top
    eff = np.maximum(field, 1)  # per lane; the block takes lane (offset % lanes)'s as its own
    blocks, exps = [], []
    for offset in range(-2, width + 3):
        lane = (offset + 2) % lanes
        blocks.append(codes)
        exps.append(np.clip(eff[:, lane] + offset, 0, top))
    for exp in (0, top):
        blocks.append(codes)
        exps.append(np.full(codes.shape[0], exp))
    return np.concatenate(blocks), np.concatenate(exps)


VERILATOR_CONFIGS = [
    {"lanes": 4, "act_format": "fp16", "mant_width": 8, "rounding": "rne"},
    {"lanes": 4, "act_format": "bf16", "mant_width": 12, "rounding": "rne"},
]


@pytest.mark.parametrize("params", VERILATOR_CONFIGS,
                         ids=[f"{p['act_format']}-w{p['mant_width']}" for p in VERILATOR_CONFIGS])
def test_rtl_matches_golden(params):
    lanes, fmt, width = params["lanes"], params["act_format"], params["mant_width"]
    dut = ActBlockAligner(**params)
    exp_bits = IEEE[fmt][2].bit_length()
    rng = np.random.default_rng([23, width])
    random = random_blocks(rng, 100_000, lanes, fmt, width)
    suites = {
        "every code and exponent" if fmt == "fp16" else "every code near its exponent":
            every_code_with_every_exp(lanes, exp_bits) if fmt == "fp16"
            else every_code_near_its_exp(lanes, fmt, width),
        "seeded random blocks at their exponent":
            (random, block_convert(random, fmt, width, params["rounding"])[0]),
    }
    blocks = np.concatenate([b for b, _ in suites.values()])
    exps = np.concatenate([e for _, e in suites.values()])
    stats = {}
    out = run_vectors(ActBlockAligner, params, pack(blocks, exps), stats=stats)
    assert stats["fill_cycles"] == dut.latency
    start = 0
    for name, (suite, suite_exps) in suites.items():
        rows = slice(start, start + suite.shape[0])
        start = rows.stop
        assert_matches_golden(dut, out[rows], suite, suite_exps, name)
        print(f"{name}: checked {suite.shape[0]} blocks")
    # The refused lanes are in the sweep: some lane above its exponent, flagged.
    assert block_align(blocks, exps, fmt, width, "rne")[1].invalid.any()

"""hdl/arith/act_block.py (ActBlockConverter) bit-exact against golden.bfp.block_convert.

Tiers:
* Amaranth simulator: a few dozen blocks per configuration (every rounding, format and pipeline
  depth, the worst-case widths), with random idle cycles and backpressure; latency measured.
  Every mant_width 2..24 of both formats and roundings (the shifter split and clamp derive from
  W) on 300 sampled lane-datapath inputs each.
* Verilator (``sim.vectors.run_vectors``), four lanes=4 models covering FP16/BF16, both
  roundings and the three alignments of the largest element (``W - 2 - M`` < 0, = 0, > 0):
  - every 16-bit code through every lane, the other lanes zero. A zero lane has effective
    exponent 0 and mantissa 0, so it never sets the block exponent: each lane then converts the
    code exactly as a one-lane converter does, so this is the lanes=1 sweep on all four lanes;
  - every lane datapath input: each (sign, significand, shift d) with the shift set by a
    power of two in another lane, rotating through the lanes;
  - 100k seeded random blocks plus the named corner blocks of ``test_bfp``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from amaranth import Shape, Value
from amaranth.lib import data
from test_bfp import IEEE, corner_blocks, random_blocks

from bitmod.golden.bfp import block_convert
from bitmod.hdl.arith.act_block import ActBlockConverter
from bitmod.sim.amaranth_sim import measure_latency, run_simulation, stream_get, stream_put
from bitmod.sim.vectors import run_vectors, unpack_fields

# ------------------------------------------------------------------------------------------
# Parameters, widths, latency


@pytest.mark.parametrize("kwargs, exc, name", [
    ({"lanes": 0}, ValueError, "lanes"),
    ({"lanes": 65}, ValueError, "lanes"),
    ({"lanes": 4.0}, TypeError, "lanes"),
    ({"act_format": "fp8"}, ValueError, "act_format"),
    ({"mant_width": 1}, ValueError, "mant_width"),
    ({"mant_width": 25}, ValueError, "mant_width"),
    ({"act_format": "int8", "mant_width": 6}, ValueError, "mant_width"),
    ({"rounding": "floor"}, ValueError, "rounding"),
])
def test_bad_parameters_are_named(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        ActBlockConverter(**kwargs)


def test_parameters_are_read_only():
    dut = ActBlockConverter(lanes=3, act_format="bf16", mant_width=10, rounding="trunc")
    assert (dut.lanes, dut.act_format, dut.mant_width, dut.rounding) == (3, "bf16", 10, "trunc")
    with pytest.raises(AttributeError):
        dut.lanes = 4


def expected_latency(lanes, act_format):
    """One max-tree level per stage (at least one stage), then align, coarse shift, fine shift
    and round stages; INT8: a range check and an output register."""
    if act_format == "int8":
        return 2
    depth = math.ceil(math.log2(lanes)) if lanes > 1 else 0
    return max(1, depth) + 4


def test_latency_formula():
    for lanes in range(1, 65):
        for fmt in ("fp16", "bf16", "int8"):
            dut = ActBlockConverter(lanes=lanes, act_format=fmt, mant_width=8)
            assert dut.latency == expected_latency(lanes, fmt)
    assert [ActBlockConverter(lanes=n).latency for n in (1, 2, 4, 5, 16, 17, 64)] == [
        5, 5, 6, 7, 8, 9, 10]


@pytest.mark.parametrize("fmt, exp_bits", [("fp16", 5), ("bf16", 8), ("int8", 1)])
def test_payload_widths_at_the_worst_case(fmt, exp_bits):
    lanes, width = 64, 24
    dut = ActBlockConverter(lanes=lanes, act_format=fmt, mant_width=width)
    assert Value.cast(dut.i_stream.payload).shape().width == 16 * lanes
    assert Value.cast(dut.o_stream.payload).shape().width == exp_bits + lanes * (width + 2)
    mant = data.Layout.cast(dut.output_layout["mant"].shape)
    assert Shape.cast(mant.elem_shape) == Shape(width, signed=True) and mant.length == lanes
    assert dut.exp_width == exp_bits
    # block_exp <= 2**E - 2 (all-ones exponent is Inf/NaN), so E bits always hold it.
    if fmt != "int8":
        assert IEEE[fmt][2] == (1 << exp_bits) - 2


# ------------------------------------------------------------------------------------------
# Amaranth simulator


def decode_payloads(dut, payloads):
    """Flat o_stream payloads -> (exp [B], mant [B, N], invalid [B, N], saturated [B, N]);
    ``exp`` is None for a unit without that field (the aligner)."""
    fields = unpack_fields(dut.output_layout, np.asarray(payloads, dtype=object))
    lanes, width = dut.lanes, dut.mant_width
    mant_bits = np.asarray(fields["mant"], dtype=object)
    mant = np.stack([((mant_bits >> (width * i)) & ((1 << width) - 1)).astype(np.int64)
                     for i in range(lanes)], axis=-1)
    mant = np.where(mant >> (width - 1) != 0, mant - (1 << width), mant)
    bit = np.arange(lanes, dtype=object)  # object: a 64-lane flag field does not fit int64

    def lane_bits(name):
        return ((np.asarray(fields[name], dtype=object)[:, None] >> bit) & 1).astype(bool)

    invalid, saturated = lane_bits("invalid"), lane_bits("saturated")
    exp = fields["exp"].astype(np.int64) if "exp" in fields else None
    return exp, mant, invalid, saturated


def assert_payloads_match_golden(dut, payloads, blocks) -> None:
    rtl_exp, rtl_mant, rtl_invalid, rtl_sat = decode_payloads(dut, payloads)
    ref_exp, ref_mant, flags = block_convert(blocks, dut.act_format, dut.mant_width,
                                             dut.rounding)
    assert (rtl_exp == ref_exp).all()
    assert (rtl_mant == ref_mant).all()
    assert (rtl_invalid == flags.invalid).all()
    assert (rtl_sat == flags.saturated).all()


def simulate(dut, blocks, *, seed=0, idle=0.3, backpressure=0.3) -> list[int]:
    """Stream ``blocks`` through ``dut`` with random idle cycles and backpressure; returns the
    flat output payloads."""
    rng = np.random.default_rng(seed)
    received = []

    async def producer(ctx):
        for block in blocks:
            while rng.random() < idle:
                await ctx.tick()
            await stream_put(ctx, dut.i_stream, {"data": [int(x) for x in block]})

    async def consumer(ctx):
        for _ in blocks:
            while rng.random() < backpressure:
                await ctx.tick()
            received.append((await stream_get(ctx, dut.o_stream)).as_bits())

    run_simulation(dut, [producer, consumer], deadline=1e-3)
    return received


SIM_CONFIGS = [
    # (lanes, format, mant_width, rounding): every rounding x alignment sign, pipeline depths
    # 2..4, the extreme widths.
    (1, "fp16", 12, "rne"),
    (1, "bf16", 12, "trunc"),
    (4, "fp16", 8, "trunc"),
    (4, "bf16", 16, "rne"),
    (5, "fp16", 16, "trunc"),
    (5, "bf16", 8, "rne"),
    (16, "fp16", 2, "rne"),
    (16, "bf16", 24, "trunc"),
    (17, "fp16", 11, "rne"),
    (64, "bf16", 24, "rne"),
]


@pytest.mark.parametrize("lanes, fmt, width, rounding", SIM_CONFIGS)
def test_amaranth_sim_matches_golden(lanes, fmt, width, rounding):
    dut = ActBlockConverter(lanes=lanes, act_format=fmt, mant_width=width, rounding=rounding)
    rng = np.random.default_rng([lanes, width])
    corners = np.stack(list(corner_blocks(fmt, width, lanes).values()))
    blocks = np.concatenate([corners, random_blocks(rng, 24, lanes, fmt, width)])
    assert_payloads_match_golden(dut, simulate(dut, blocks, seed=lanes), blocks)
    print(f"checked {blocks.shape[0]} blocks")


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("rounding", ["trunc", "rne"])
def test_amaranth_sim_every_width(fmt, rounding):
    """Every mant_width 2..24 (each shifter split, clamp and alignment the RTL derives from W):
    a two-lane converter on a seeded sample of every (sign, significand, shift d) of a lane,
    plus the named corner blocks."""
    checked = 0
    for width in range(2, 25):
        dut = ActBlockConverter(lanes=2, act_format=fmt, mant_width=width, rounding=rounding)
        shifts = every_lane_shift(2, fmt, width, rounding)
        rng = np.random.default_rng([width, fmt == "bf16", rounding == "rne"])
        blocks = np.concatenate([shifts[rng.choice(shifts.shape[0], 300, replace=False)],
                                 np.stack(list(corner_blocks(fmt, width, 2).values()))])
        assert_payloads_match_golden(dut, simulate(dut, blocks, seed=width, idle=0.1,
                                                   backpressure=0.1), blocks)
        checked += blocks.shape[0]
    print(f"checked {checked} blocks")


def test_amaranth_sim_int8_every_word():
    """All 65536 16-bit words as INT8 activations (64 lanes: 1024 blocks)."""
    dut = ActBlockConverter(lanes=64, act_format="int8", mant_width=10)
    blocks = np.random.default_rng(2).permutation(1 << 16).reshape(-1, 64)
    assert_payloads_match_golden(dut, simulate(dut, blocks, idle=0, backpressure=0), blocks)
    print(f"checked {blocks.size} cases")


@pytest.mark.parametrize("lanes, fmt", [(1, "fp16"), (4, "bf16"), (5, "fp16"), (17, "bf16"),
                                        (3, "int8")])
def test_measured_latency(lanes, fmt):
    """An input accepted in cycle c (valid & ready) gives its output valid in cycle c + latency."""
    dut = ActBlockConverter(lanes=lanes, act_format=fmt, mant_width=8)
    measured, _ = measure_latency(dut, 0, deadline=1e-4)
    assert measured == dut.latency


def test_output_holds_under_backpressure():
    """With ready low the output and the whole pipeline hold; input ready follows."""
    dut = ActBlockConverter(lanes=4, act_format="fp16", mant_width=12)
    blocks = random_blocks(np.random.default_rng(9), 8, 4, "fp16", 12)
    seen = []

    async def testbench(ctx):
        ctx.set(dut.o_stream.ready, 0)
        for block in blocks[:dut.latency]:
            await stream_put(ctx, dut.i_stream, {"data": [int(x) for x in block]})
        # The pipeline is full and the output stalled: no more input is accepted.
        assert ctx.get(dut.o_stream.valid) and not ctx.get(dut.i_stream.ready)
        for _ in range(5):
            await ctx.tick()
            seen.append(ctx.get(dut.o_stream.payload).as_bits())
            assert ctx.get(dut.o_stream.valid) and not ctx.get(dut.i_stream.ready)

    run_simulation(dut, [testbench], deadline=1e-4)
    assert_payloads_match_golden(dut, seen, blocks[[0] * 5])


# ------------------------------------------------------------------------------------------
# Verilator


def pack_blocks(blocks) -> np.ndarray:
    """Flat i_stream payloads: lane i in bits 16*i .. 16*i + 15."""
    packed = np.zeros(blocks.shape[0], dtype=object)
    for i in range(blocks.shape[1]):
        packed = packed + (blocks[:, i].astype(object) << (16 * i))
    return packed


def run_rtl(params, blocks):
    """Blocks through the Verilator model: decoded output fields (see decode_payloads)."""
    dut = ActBlockConverter(**params)
    stats = {}
    out = run_vectors(ActBlockConverter, params, pack_blocks(blocks), stats=stats)
    assert stats["fill_cycles"] == dut.latency
    return decode_payloads(dut, out)


def assert_rtl_matches_golden(params, suites: dict[str, np.ndarray]) -> None:
    """Run every suite's blocks through one Verilator run; compare suite by suite, in full."""
    blocks = np.concatenate(list(suites.values()))
    rtl_exp, rtl_mant, rtl_invalid, rtl_sat = run_rtl(params, blocks)
    ref_exp, ref_mant, flags = block_convert(blocks, params["act_format"], params["mant_width"],
                                             params["rounding"])
    start = 0
    for name, suite in suites.items():
        rows = slice(start, start + suite.shape[0])
        start = rows.stop
        assert (rtl_exp[rows] == ref_exp[rows]).all(), name
        assert (rtl_mant[rows] == ref_mant[rows]).all(), name
        assert (rtl_invalid[rows] == flags.invalid[rows]).all(), name
        assert (rtl_sat[rows] == flags.saturated[rows]).all(), name
        print(f"{name}: checked {suite.shape[0]} cases")


VERILATOR_CONFIGS = [
    # W - 2 - M: -4 (largest element rounds, can saturate), 0, +3, -3
    {"lanes": 4, "act_format": "fp16", "mant_width": 8, "rounding": "rne"},
    {"lanes": 4, "act_format": "fp16", "mant_width": 12, "rounding": "trunc"},
    {"lanes": 4, "act_format": "bf16", "mant_width": 12, "rounding": "rne"},
    {"lanes": 4, "act_format": "bf16", "mant_width": 6, "rounding": "trunc"},
]
CONFIG_IDS = [f"{p['act_format']}-w{p['mant_width']}-{p['rounding']}" for p in VERILATOR_CONFIGS]


def every_code_in_every_lane(lanes) -> np.ndarray:
    """Each 16-bit code in each lane, the other lanes zero: the lanes=1 sweep on every lane."""
    blocks = np.zeros((lanes << 16, lanes), dtype=np.int64)
    for i in range(lanes):
        blocks[i << 16:(i + 1) << 16, i] = np.arange(1 << 16)
    return blocks


def every_lane_shift(lanes, fmt, mant_width, rounding) -> np.ndarray:
    """Every (sign, significand, d) of the lane datapath, the d set by another lane."""
    man_bits, _, emax = IEEE[fmt]
    sign, sig, shift = (a.reshape(-1) for a in np.meshgrid(
        np.arange(2), np.arange(1 << (man_bits + 1)), np.arange(emax), indexing="ij"))
    # The code whose low 1 + M bits are the significand has effective exponent 1 either way:
    # exponent field 1 (hidden bit set) or 0 (subnormal).
    code = (sign << 15) | sig
    # Block maximum 2**(1 + d - bias): exponent field 1 + d <= emax.
    top = (1 + shift) << man_bits
    rows = np.arange(code.size)
    blocks = np.zeros((code.size, lanes), dtype=np.int64)
    blocks[rows, rows % lanes] = code
    blocks[rows, (rows + 1) % lanes] = top
    assert (block_convert(blocks, fmt, mant_width, rounding)[0] == 1 + shift).all()
    return blocks


@pytest.mark.parametrize("params", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_rtl_matches_golden(params):
    lanes, fmt, width = params["lanes"], params["act_format"], params["mant_width"]
    rng = np.random.default_rng([17, width, lanes])
    assert_rtl_matches_golden(params, {
        "every code in every lane": every_code_in_every_lane(lanes),
        "every lane shift": every_lane_shift(lanes, fmt, width, params["rounding"]),
        "named corner blocks": np.stack(list(corner_blocks(fmt, width, lanes).values())),
        "seeded random blocks": random_blocks(rng, 100_000, lanes, fmt, width),
    })

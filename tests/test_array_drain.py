"""The array's drain (hdl/array/drain.py) beside golden's drain rounding: tiles of PE outputs
offered out of order and late, under output backpressure, come out row-major, each code equal
to golden.minifloat_arith.to_float_code of its accumulator and row floor."""

import random

import numpy as np
import pytest

from bitmod.golden.gemm import ArrayConfig
from bitmod.golden.minifloat_arith import to_float_code
from bitmod.hdl.array.drain import ArrayDrain
from bitmod.sim.amaranth_sim import run_simulation, stream_put


@pytest.mark.parametrize("params", [
    dict(rows=3, cols=2, act_format="fp16", formats=("int4_sym",), out_format="fp32"),
    dict(rows=2, cols=3, act_format="int8", formats=("fp4",), out_format="fp16"),
    dict(rows=1, cols=1, act_format="bf16", formats=("int8_sym",), out_format="fp32"),
])
def test_drain_orders_and_rounds_like_golden(params):
    cfg = ArrayConfig(**params)
    R, C = cfg.rows, cfg.cols
    fp = cfg.act_format != "int8"
    rng = np.random.default_rng(3)
    tiles = 5
    top = 1 << (cfg.acc_width - 1)
    accs = rng.integers(-top, top, size=(tiles, R, C), dtype=np.int64)
    accs[0, 0, 0], accs[-1, -1, -1] = -top, top - 1  # the accumulator's extremes
    accs[1, 0, 0] = 0
    bases = rng.integers(0, 1 << cfg.exp_width, size=(tiles, R)) if fp else np.zeros(
        (tiles, R), np.int64)
    expected = [int(to_float_code(int(accs[t, r, c]), int(bases[t, r]), cfg.in_frac,
                                  cfg.out_format)) for t in range(tiles) for r in range(R)
                for c in range(C)]
    dut = ArrayDrain(cfg)
    got = []
    chooser = random.Random(11)

    def pe(r, c):
        async def bench(ctx):
            for t in range(tiles):
                for _ in range(chooser.randrange(4)):  # finished late, in any order
                    await ctx.tick()
                await stream_put(ctx, dut.i_acc[r][c], int(accs[t, r, c]))
        return bench

    async def floors(ctx):
        for t in range(tiles):
            word = sum(int(b) << (i * cfg.exp_width) for i, b in enumerate(bases[t]))
            ctx.set(dut.base_w_data, word)
            ctx.set(dut.base_w_en, 1)
            await ctx.tick().until(dut.base_w_rdy)
            ctx.set(dut.base_w_en, 0)

    async def sink(ctx):
        while len(got) < len(expected):
            ready = chooser.random() < 0.6  # backpressure
            ctx.set(dut.o_stream.ready, ready)
            await ctx.tick()
        ctx.set(dut.o_stream.ready, 0)

    async def monitor(ctx):
        async for _clk, _rst, valid, ready, code in ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.ready, dut.o_stream.payload.code):
            if valid and ready:
                got.append(int(code))

    benches = [pe(r, c) for r in range(R) for c in range(C)] + [sink]
    if fp:
        benches.append(floors)
    run_simulation(dut, benches, processes=[monitor], deadline=1e-3)
    mask = (1 << cfg.out_bits) - 1
    assert got == [e & mask for e in expected]
    print(f"{len(got)} codes of {tiles} {R}x{C} tiles in row-major order, equal golden")


@pytest.mark.parametrize("params", [
    dict(rows=2, cols=3, act_format="int8", formats=("fp4",)),
    dict(rows=4, cols=4, act_format="fp16", formats=("int4_sym",)),
])
def test_credits_keep_the_pes_from_waiting(params):
    """Tiles admitted on the drain's credits (as the column tops do), each column's outputs
    offered in row order one per cycle as the PEs finish them: under heavy output backpressure
    no offer is ever refused, the credits run out after Q tiles and come back as tiles leave,
    and the codes leave row-major and equal golden's."""
    cfg = ArrayConfig(**params)
    R, C, Q = cfg.rows, cfg.cols, cfg.drain_tiles
    fp = cfg.act_format != "int8"
    rng = np.random.default_rng(5)
    tiles = 3 * Q + 2
    top = 1 << (cfg.acc_width - 1)
    accs = rng.integers(-top, top, size=(tiles, R, C), dtype=np.int64)
    bases = rng.integers(0, 1 << cfg.exp_width, size=(tiles, R)) if fp else np.zeros(
        (tiles, R), np.int64)
    expected = [int(to_float_code(int(accs[t, r, c]), int(bases[t, r]), cfg.in_frac,
                                  cfg.out_format)) & ((1 << cfg.out_bits) - 1)
                for t in range(tiles) for r in range(R) for c in range(C)]
    dut = ArrayDrain(cfg)
    got, refused, admitted, in_flight = [], [], [], []
    chooser = random.Random(2)

    async def column_tops(ctx):
        for t in range(tiles):
            while not (ctx.get(dut.credit) and ctx.get(dut.base_w_rdy)):
                await ctx.tick()
            if fp:  # the tile's floors, as the front end writes them
                word = sum(int(b) << (i * cfg.exp_width) for i, b in enumerate(bases[t]))
                ctx.set(dut.base_w_data, word)
                ctx.set(dut.base_w_en, 1)
            ctx.set(dut.tile_in, 1)
            await ctx.tick()
            ctx.set(dut.base_w_en, 0)
            ctx.set(dut.tile_in, 0)
            admitted.append(t)
            for _ in range(R):  # tile ends R cycles apart
                await ctx.tick()

    async def pes(ctx):
        # PE (r, c) finishes tile t a fixed time after its admission: r + c cycles later.
        offers = {}
        cycle = 0
        while len(got) < len(expected):
            for t in admitted:
                if t not in offers:
                    offers[t] = cycle
            for r in range(R):
                for c in range(C):
                    port = dut.i_acc[r][c]
                    due = [t for t, start in offers.items() if start + r + c == cycle]
                    ctx.set(port.valid, bool(due))
                    if due:
                        ctx.set(port.payload, int(accs[due[0], r, c]))
                        if not ctx.get(port.ready):
                            refused.append((cycle, r, c))
            await ctx.tick()
            cycle += 1

    async def sink(ctx):
        while len(got) < len(expected):
            ctx.set(dut.o_stream.ready, chooser.random() < 0.15)  # heavy backpressure
            await ctx.tick()

    async def monitor(ctx):
        async for _clk, _rst, valid, ready, code, credit in ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.ready, dut.o_stream.payload.code,
                dut.credit):
            if valid and ready:
                got.append(int(code))
            in_flight.append((len(admitted), len(got) // (R * C), credit))

    run_simulation(dut, [column_tops, pes, sink], processes=[monitor], deadline=1e-2)
    assert refused == []
    assert got == expected
    assert max(a - done for a, done, _ in in_flight) <= Q + 1  # + the tile being converted
    assert any(not credit for _, _, credit in in_flight), "the credits never ran out"
    print(f"{tiles} tiles of {R}x{C}, Q = {Q}: no PE output refused")

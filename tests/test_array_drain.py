"""The array's drain (hdl/array/drain.py) beside golden's drain rounding: tiles of PE outputs
offered out of order and late, under output backpressure, come out row-major, each code equal
to golden.minifloat_arith.to_float_code of its accumulator and row floor."""

import random

import numpy as np
import pytest

from bitmod.golden.gemm import ArrayConfig
from bitmod.golden.minifloat_arith import TO_FLOAT_LATENCY, to_float_code
from bitmod.hdl.array.drain import ArrayDrain
from bitmod.sim.amaranth_sim import run_simulation


def _run_on_schedule(cfg, accs, bases, ready_odds, seed, split_gather=None, announced=None):
    """Drive ``ArrayDrain(cfg)`` as the array does: a tile is admitted (``tile_in``, its
    floors written) only with a credit, a random 0-3 cycles after ``R`` have passed since
    the previous one, and PE ``(r, c)`` offers its output ``r + c`` cycles after its tile's
    admission. The sink takes a code with probability ``ready_odds``. Returns the codes, the
    columns' ``lost`` per cycle and, per cycle, (tiles admitted, tiles out, credit). With a
    list ``announced``, the drain announces its credit and the list gets ``credit_next`` per
    cycle."""
    R, C = cfg.rows, cfg.cols
    tiles = len(accs)
    fp = cfg.act_format != "int8"
    dut = ArrayDrain(cfg, split_gather, announce_credit=announced is not None)
    got, lost, admitted, in_flight = [], [], [], []
    chooser = random.Random(seed)

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
            for _ in range(R - 1 + chooser.randrange(4)):  # tile ends R or more cycles apart
                await ctx.tick()

    async def pes(ctx):
        # PE (r, c) finishes tile t a fixed time after its admission: r + c cycles later.
        offers = {}
        cycle = 0
        while len(got) < tiles * R * C:
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
                        assert ctx.get(port.ready)  # the drain never pushes back
            await ctx.tick()
            cycle += 1

    async def sink(ctx):
        while len(got) < tiles * R * C:
            ctx.set(dut.o_stream.ready, chooser.random() < ready_odds)
            await ctx.tick()

    async def monitor(ctx):
        extra = [dut.credit_next] if announced is not None else []
        async for _clk, _rst, valid, ready, code, credit, lost_now, *rest in ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.ready, dut.o_stream.payload.code,
                dut.credit, dut.lost, *extra):
            if valid and ready:
                got.append(int(code))
            lost.append(lost_now)
            in_flight.append((len(admitted), len(got) // (R * C), credit))
            if announced is not None:
                announced.append(rest[0])

    run_simulation(dut, [column_tops, pes, sink], processes=[monitor], deadline=1e-2)
    return got, lost, in_flight


def _expected(cfg, accs, bases):
    R, C = cfg.rows, cfg.cols
    return [int(to_float_code(int(accs[t, r, c]), int(bases[t, r]), cfg.in_frac,
                              cfg.out_format)) & ((1 << cfg.out_bits) - 1)
            for t in range(len(accs)) for r in range(R) for c in range(C)]


def _case(cfg, tiles, seed):
    rng = np.random.default_rng(seed)
    top = 1 << (cfg.acc_width - 1)
    accs = rng.integers(-top, top, size=(tiles, cfg.rows, cfg.cols), dtype=np.int64)
    accs[0, 0, 0], accs[-1, -1, -1] = -top, top - 1  # the accumulator's extremes
    accs[1, 0, 0] = 0
    fp = cfg.act_format != "int8"
    bases = rng.integers(0, 1 << cfg.exp_width, size=(tiles, cfg.rows)) if fp else np.zeros(
        (tiles, cfg.rows), np.int64)
    return accs, bases


@pytest.mark.parametrize("split_gather", [True, False])
@pytest.mark.parametrize("params", [
    dict(rows=3, cols=2, act_format="fp16", formats=("int4_sym",), out_format="fp32"),
    dict(rows=2, cols=3, act_format="int8", formats=("fp4",), out_format="fp16"),
    dict(rows=1, cols=1, act_format="bf16", formats=("int8_sym",), out_format="fp32"),
])
def test_drain_orders_and_rounds_like_golden(params, split_gather):
    """Outputs on the array's schedule (tiles R or more cycles apart, on credits) leave
    row-major, rounded like golden (the floors of FP activations, the accumulator's
    extremes and zero), under backpressure, in both gather forms (two halves of the column,
    the ECP5's, or one register, the iCE40's); no column ever loses one."""
    cfg = ArrayConfig(**params)
    accs, bases = _case(cfg, 5, 3)
    got, lost, _ = _run_on_schedule(cfg, accs, bases, ready_odds=0.6, seed=11,
                                    split_gather=split_gather)
    assert got == _expected(cfg, accs, bases)
    assert not any(lost)
    print(f"{len(got)} codes of 5 {cfg.rows}x{cfg.cols} tiles in row-major order, equal golden")


@pytest.mark.parametrize("params", [
    dict(rows=2, cols=3, act_format="int8", formats=("fp4",)),
    dict(rows=4, cols=4, act_format="fp16", formats=("int4_sym",)),
])
def test_credits_keep_the_pes_from_waiting(params):
    """Tiles admitted on the drain's credits (as the column tops do), each column's outputs
    offered in row order one per cycle as the PEs finish them: under heavy output backpressure
    no output is lost (the FIFOs always have room), the credits run out after Q tiles and
    come back as tiles leave, and the codes leave row-major and equal golden's."""
    cfg = ArrayConfig(**params)
    R, C, Q = cfg.rows, cfg.cols, cfg.drain_tiles
    accs, bases = _case(cfg, 3 * Q + 2, 5)
    got, lost, in_flight = _run_on_schedule(cfg, accs, bases, ready_odds=0.15, seed=2)
    assert not any(lost)
    assert got == _expected(cfg, accs, bases)
    # Beyond the Q tiles the credits hold in the column FIFOs: the tiles in the merger's
    # register and the converter's stages (S slots), one partly and (S - 1) // (R * C) wholly.
    slots = 1 + TO_FLOAT_LATENCY
    assert max(a - done for a, done, _ in in_flight) <= Q + 1 + (slots - 1) // (R * C)
    assert any(not credit for _, _, credit in in_flight), "the credits never ran out"
    print(f"{len(accs)} tiles of {R}x{C}, Q = {Q}: no PE output lost")


def test_credit_next_announces_the_credit():
    """With ``announce_credit``, ``credit_next`` in every cycle is ``credit`` of the next
    (the serializer's columns load their own copies from it), on a run whose slow sink
    uses up the credits and frees them again; the outputs are the plain drain's."""
    cfg = ArrayConfig(rows=2, cols=3, act_format="int8", formats=("fp4",), out_format="fp16")
    accs, bases = _case(cfg, 8, 5)
    announced = []
    got, lost, in_flight = _run_on_schedule(cfg, accs, bases, ready_odds=0.2, seed=4,
                                            announced=announced)
    assert got == _expected(cfg, accs, bases) and not any(lost)
    credits = [credit for _, _, credit in in_flight]
    assert 0 in credits and 1 in credits, "the credits never ran out"
    assert credits[0] == 1, "the credit is set after reset"
    assert announced[:-1] == credits[1:]


def test_lost_flags_two_outputs_at_once():
    """The schedule is the drain's contract: two outputs of a column in one cycle raise
    ``lost`` (the array's overrun)."""
    cfg = ArrayConfig(rows=2, cols=1, act_format="int8", formats=("fp4",))
    dut = ArrayDrain(cfg)
    seen = []

    async def bench(ctx):
        for r in range(2):
            ctx.set(dut.i_acc[r][0].valid, 1)
        seen.append(ctx.get(dut.lost))
        await ctx.tick()
        ctx.set(dut.i_acc[1][0].valid, 0)
        seen.append(ctx.get(dut.lost))

    run_simulation(dut, [bench], deadline=1e-5)
    assert seen == [1, 0]


def test_drain_form_is_validated():
    cfg = ArrayConfig(rows=2, cols=1, act_format="int8", formats=("fp4",))
    with pytest.raises(TypeError, match="split_gather must be a bool or None, not 1"):
        ArrayDrain(cfg, 1)
    with pytest.raises(TypeError, match="config must be an ArrayConfig, not 3"):
        ArrayDrain(3)
    assert ArrayDrain(cfg).split_gather is None and ArrayDrain(cfg, False).split_gather is False
    assert ArrayDrain(cfg).announce_credit is False
    with pytest.raises(TypeError, match="announce_credit must be a bool, not 1"):
        ArrayDrain(cfg, announce_credit=1)

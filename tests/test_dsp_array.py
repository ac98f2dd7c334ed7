"""The DSP MAC array (hdl.array.dsp_array) against golden.dsp_array: values and output timing."""

import numpy as np
import pytest
from amaranth import ResetInserter, Signal

from bitmod.golden import dsp_array as gd
from bitmod.golden.pe_baseline import pack_lanes
from bitmod.hdl.array.dsp_array import DspMacArray
from bitmod.sim.amaranth_sim import run_simulation
from bitmod.sim.vectors import pack_fields, run_stream, unpack_fields

# One Verilator build per parameter set.
SQUARE = {"rows": 4, "cols": 5, "max_k": 64}
ODD = {"rows": 3, "cols": 7, "max_k": 40, "a_bits": 7, "w_bits": 12}


# --------------------------------------------------------------------------------------------
# Independent reference (Python integers) and stimulus
# --------------------------------------------------------------------------------------------

def python_reference(a, w):
    R, K = len(a), len(a[0])
    C = len(w[0])
    return [[sum(int(a[r][k]) * int(w[k][c]) for k in range(K)) for c in range(C)]
            for r in range(R)]


def bounds(bits):
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def random_tile(rng, arr, k):
    a_lo, a_hi = bounds(arr.a_bits)
    w_lo, w_hi = bounds(arr.w_bits)
    return (rng.integers(a_lo, a_hi + 1, (arr.rows, k)),
            rng.integers(w_lo, w_hi + 1, (k, arr.cols)))


def corner_tiles(rng, arr):
    """Named corners; the first two reach the accumulator's extremes at K = max_k."""
    R, C, K = arr.rows, arr.cols, arr.max_k
    a_lo, a_hi = bounds(arr.a_bits)
    w_lo, w_hi = bounds(arr.w_bits)
    full = np.full
    mixed_k = max(C, 9)
    return {
        "most negative x most negative, K = max_k": (full((R, K), a_lo), full((K, C), w_lo)),
        "most negative x most positive, K = max_k": (full((R, K), a_lo), full((K, C), w_hi)),
        "most positive x most negative, K = max_k": (full((R, K), a_hi), full((K, C), w_lo)),
        "most positive x most positive": (full((R, C), a_hi), full((C, C), w_hi)),
        "mixed extremes": (rng.choice([a_lo, a_hi], (R, mixed_k)),
                           rng.choice([w_lo, w_hi], (mixed_k, C))),
        "zero activations": (full((R, C + 1), 0), rng.integers(w_lo, w_hi + 1, (C + 1, C))),
        "zero weights": (rng.integers(a_lo, a_hi + 1, (R, C)), full((C, C), 0)),
        "K = min bound": random_tile(rng, arr, arr.min_tile_steps),
        "K = min bound again": random_tile(rng, arr, arr.min_tile_steps),
    }


def check_golden(arr, tiles):
    """golden.dsp_array results, checked against the independent reference."""
    refs = gd.tile_results(tiles, a_bits=arr.a_bits, w_bits=arr.w_bits, max_k=arr.max_k)
    for (a, w), ref in zip(tiles, refs, strict=True):
        assert ref.tolist() == python_reference(a.tolist(), w.tolist())
    return refs


def expected_transfers(arr, refs):
    """(acc column, col, last) per output transfer, in order."""
    return [(ref[:, c].tolist(), c, int(c == arr.cols - 1)) for ref in refs
            for c in range(arr.cols)]


# --------------------------------------------------------------------------------------------
# Parameters, widths, golden model
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"rows": 0}, "rows"), ({"rows": 33}, "rows"), ({"cols": 0}, "cols"), ({"cols": 40}, "cols"),
    ({"max_k": 0}, "max_k"), ({"a_bits": 1}, "a_bits"), ({"a_bits": 19}, "a_bits"),
    ({"w_bits": 1}, "w_bits"), ({"w_bits": 19}, "w_bits"),
    ({"max_k": 1 << 50}, "max_k"),                        # a 65-bit accumulator
    ({"max_k": 1 << 29, "a_bits": 18, "w_bits": 18}, "max_k"),
])
def test_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DspMacArray(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"rows": True}, "rows"), ({"cols": 4.0}, "cols"), ({"max_k": "64"}, "max_k"),
    ({"a_bits": None}, "a_bits"), ({"w_bits": False}, "w_bits"),
])
def test_parameter_types(kwargs, name):
    with pytest.raises(TypeError, match=name):
        DspMacArray(**kwargs)


def test_parameters_are_read_only():
    arr = DspMacArray(rows=3, cols=5)
    assert (arr.rows, arr.cols, arr.max_k, arr.a_bits, arr.w_bits) == (3, 5, 4096, 8, 8)
    with pytest.raises(AttributeError):
        arr.rows = 4
    assert arr.macs_per_cycle == 15
    assert arr.latency == gd.latency(3, 5) and arr.min_tile_steps == gd.min_tile_steps(5)


def fits(value, width):
    return -(1 << (width - 1)) <= value < (1 << (width - 1))


@pytest.mark.parametrize("params", [
    {}, SQUARE, ODD, {"max_k": 1}, {"max_k": 1000, "a_bits": 18, "w_bits": 18},
    {"max_k": (1 << 28) - 1, "a_bits": 18, "w_bits": 18}, {"max_k": 3, "a_bits": 2, "w_bits": 5},
])
def test_acc_width_holds_the_worst_case(params):
    arr = DspMacArray(**params)
    a_lo, a_hi = bounds(arr.a_bits)
    w_lo, w_hi = bounds(arr.w_bits)
    hi = arr.max_k * a_lo * w_lo
    lo = arr.max_k * min(a_lo * w_hi, a_hi * w_lo)
    assert fits(hi, arr.acc_width) and fits(lo, arr.acc_width)
    assert not fits(hi, arr.acc_width - 1)  # tight
    assert fits(a_lo * w_lo, arr.product_width) and not fits(a_lo * w_lo, arr.product_width - 1)
    assert arr.acc_width <= 64


def test_default_int8_widths():
    arr = DspMacArray()
    # -128 * -128 = 2**14; 4096 of them: 2**26 needs 27 bits + sign.
    assert (arr.product_width, arr.acc_width) == (16, 28)


def test_golden_refuses_bad_tiles():
    arr = DspMacArray(**SQUARE)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="K=4"):
        gd.schedule([9, 4, 9], rows=4, cols=5)  # K < C back to back
    with pytest.raises(ValueError, match="max_k"):
        gd.tile_results([random_tile(rng, arr, 65)], max_k=64)
    with pytest.raises(ValueError, match="a values"):
        gd.tile_results([(np.full((4, 5), 128), np.zeros((5, 5), dtype=np.int64))])
    with pytest.raises(ValueError, match="w values"):
        gd.tile_results([(np.zeros((4, 5), dtype=np.int64), np.full((5, 5), -129))])
    with pytest.raises(ValueError, match="tile 0"):
        gd.tile_results([(np.zeros((4, 5), dtype=np.int64), np.zeros((6, 5), dtype=np.int64))])
    with pytest.raises(ValueError, match="at least one step"):
        gd.schedule([0], rows=4, cols=5, allow_short=True)


def test_golden_schedule_back_to_back_and_short_tiles():
    accept, out = gd.schedule([5, 7, 5], rows=4, cols=5)
    assert accept.tolist() == list(range(17))  # no stall for K >= C
    lat = gd.latency(4, 5)
    assert out[:, 0].tolist() == [4 + lat, 11 + lat, 16 + lat]
    assert (np.diff(out, axis=1) == 1).all()
    # K = C back to back: the output columns follow each other without a gap.
    _, out = gd.schedule([5, 5, 5], rows=4, cols=5)
    assert np.diff(out.reshape(-1)).tolist() == [1] * 14
    # Short tiles: each `last` waits until C cycles after the previous one.
    accept, out = gd.schedule([5, 2, 1, 6], rows=4, cols=5, allow_short=True)
    lasts = accept[np.cumsum([5, 2, 1, 6]) - 1]
    assert lasts.tolist() == [4, 9, 14, 20]  # the last tile is long enough again
    assert accept[5] == 5 and accept[8] == 15  # the non-last steps are not held


# --------------------------------------------------------------------------------------------
# Amaranth simulator: 2 x 3, every output and its cycle
# --------------------------------------------------------------------------------------------

def simulate(arr, tiles, *, gaps=None):
    """Run ``tiles`` through ``arr``; return (accept cycles, output transfers with cycles).

    ``gaps[i]`` idle cycles are inserted before step ``i`` (default none: back to back). The
    sink is always ready. Cycle 0 is the cycle the first step is accepted.
    """
    steps = gd.tile_steps(tiles)
    n_steps = len(steps["last"])
    gaps = [0] * n_steps if gaps is None else gaps
    n_out = len(tiles) * arr.cols
    accepted, outputs = [], []

    async def producer(ctx):
        for i in range(n_steps):
            for _ in range(gaps[i]):
                await ctx.tick()
            ctx.set(arr.i_stream.valid, 1)
            ctx.set(arr.i_stream.payload, {"a": steps["a"][i].tolist(),
                                           "w": steps["w"][i].tolist(),
                                           "last": int(steps["last"][i])})
            await ctx.tick().until(arr.i_stream.ready)
            ctx.set(arr.i_stream.valid, 0)
            ctx.set(arr.i_stream.payload, {"a": [99] * arr.rows, "w": [-77] * arr.cols,
                                           "last": 1})  # garbage while idle: must be ignored

    async def monitor(ctx):
        cycle = None
        ctx.set(arr.o_stream.ready, 1)
        while len(outputs) < n_out:
            *_, i_valid, i_ready, o_valid, payload = await ctx.tick().sample(
                arr.i_stream.valid, arr.i_stream.ready, arr.o_stream.valid, arr.o_stream.payload)
            if i_valid and i_ready and cycle is None:
                cycle = 0
            if i_valid and i_ready:
                accepted.append(cycle)
            if o_valid:
                outputs.append(([int(v) for v in payload.acc], int(payload.col),
                                int(payload.last), cycle))
            if cycle is not None:
                cycle += 1

    run_simulation(arr, [producer, monitor], deadline=1e-3)
    return accepted, outputs


def test_amaranth_sim_2x3_back_to_back():
    rng = np.random.default_rng(7)
    arr = DspMacArray(rows=2, cols=3, max_k=24)
    corners = corner_tiles(rng, arr)
    ks = [3, 4, 3, 24, 5, 3, 17, 3, 3, 8]
    tiles = [random_tile(rng, arr, k) for k in ks] + list(corners.values())
    refs = check_golden(arr, tiles)
    accepted, outputs = simulate(arr, tiles)
    assert [o[:3] for o in outputs] == expected_transfers(arr, refs)
    accept_model, out_model = gd.schedule([a.shape[1] for a, _ in tiles], rows=2, cols=3)
    assert accepted == accept_model.tolist() == list(range(len(accepted)))  # full rate
    assert [o[3] for o in outputs] == out_model.reshape(-1).tolist()
    worst = refs[len(ks)]  # most negative squared, K = max_k: needs every accumulator bit
    assert int(worst.max()).bit_length() + 1 == arr.acc_width
    print(f"checked {len(outputs)} output columns of {len(tiles)} tiles")


def test_amaranth_sim_2x3_short_tiles_and_gaps():
    rng = np.random.default_rng(8)
    arr = DspMacArray(rows=2, cols=3, max_k=24)
    ks = [3, 1, 2, 1, 1, 5, 2, 4, 1]  # K < C: the array holds the early `last` steps
    tiles = [random_tile(rng, arr, k) for k in ks]
    refs = check_golden(arr, tiles)
    accepted, outputs = simulate(arr, tiles)
    assert [o[:3] for o in outputs] == expected_transfers(arr, refs)
    accept_model, out_model = gd.schedule(ks, rows=2, cols=3, allow_short=True)
    assert accepted == accept_model.tolist()
    assert accepted[-1] > len(accepted)  # the stalls did happen
    assert [o[3] for o in outputs] == out_model.reshape(-1).tolist()

    # Idle gaps between steps (garbage payload while idle): same results; each column leaves
    # `latency + c` cycles after its tile's last step was accepted.
    ks = [3, 7, 1, 4, 3]
    tiles = [random_tile(rng, arr, k) for k in ks]
    refs = check_golden(arr, tiles)
    gaps = rng.integers(0, 3, sum(ks)).tolist()
    accepted, outputs = simulate(arr, tiles, gaps=gaps)
    assert [o[:3] for o in outputs] == expected_transfers(arr, refs)
    lasts = np.asarray(accepted)[np.cumsum(ks) - 1]
    assert [o[3] for o in outputs] == [int(t) + arr.latency + c for t in lasts
                                       for c in range(3)]
    assert accepted[-1] > sum(ks)


def test_amaranth_sim_reset_mid_stream():
    """A reset with data in flight: the weight path and the drain keep stale values (they have
    no reset); nothing stale may reach an output or a later tile's accumulators."""
    rng = np.random.default_rng(9)
    arr = DspMacArray(rows=2, cols=3, max_k=24)
    rst = Signal()
    dut = ResetInserter({"sync": rst})(arr)
    before = gd.tile_steps([random_tile(rng, arr, k) for k in (5, 9)])
    ks = [3, 6, 4, 3]
    tiles = [random_tile(rng, arr, k) for k in ks]
    refs = check_golden(arr, tiles)
    steps = gd.tile_steps(tiles)
    outputs = []

    def put(ctx, fields, i):
        ctx.set(arr.i_stream.payload, {"a": fields["a"][i].tolist(),
                                       "w": fields["w"][i].tolist(),
                                       "last": int(fields["last"][i])})

    async def testbench(ctx):
        ctx.set(arr.o_stream.ready, 1)
        ctx.set(arr.i_stream.valid, 1)
        for i in range(12):  # the first tile and most of the second, then reset
            put(ctx, before, i)
            await ctx.tick()
        ctx.set(arr.i_stream.valid, 0)
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        ctx.set(arr.i_stream.valid, 1)
        cycle, i = 0, 0
        while len(outputs) < len(tiles) * arr.cols:
            if i < len(steps["last"]):
                put(ctx, steps, i)
            else:
                ctx.set(arr.i_stream.valid, 0)
            *_, ready, o_valid, payload = await ctx.tick().sample(
                arr.i_stream.ready, arr.o_stream.valid, arr.o_stream.payload)
            assert ready or i >= len(steps["last"])
            i += 1
            if o_valid:
                outputs.append(([int(v) for v in payload.acc], int(payload.col),
                                int(payload.last), cycle))
            cycle += 1

    run_simulation(dut, [testbench], deadline=1e-3)
    assert [o[:3] for o in outputs] == expected_transfers(arr, refs)
    _, out_model = gd.schedule(ks, rows=2, cols=3)
    assert [o[3] for o in outputs] == out_model.reshape(-1).tolist()


# --------------------------------------------------------------------------------------------
# Verilator: 4 x 5 and 3 x 7 (7 x 12-bit operands), random + corners, timing
# --------------------------------------------------------------------------------------------

def pack_steps(arr, tiles):
    steps = gd.tile_steps(tiles)
    return pack_fields(arr.in_layout, a=pack_lanes(steps["a"], arr.a_bits),
                       w=pack_lanes(steps["w"], arr.w_bits), last=steps["last"])


def unpack_transfers(arr, raw):
    fields = unpack_fields(arr.out_layout, raw)
    W, mask = arr.acc_width, (1 << arr.acc_width) - 1
    transfers = []
    for word, col, last in zip(fields["acc"], fields["col"], fields["last"], strict=True):
        lanes = [(int(word) >> (r * W)) & mask for r in range(arr.rows)]
        lanes = [v - (1 << W) if v >> (W - 1) else v for v in lanes]
        transfers.append((lanes, int(col), int(last)))
    return transfers


def run_verilator(params, tiles, **kwargs):
    arr = DspMacArray(**params)
    refs = check_golden(arr, tiles)
    stats = {}
    raw = run_stream(DspMacArray, params, pack_steps(arr, tiles),
                     n_outputs=len(tiles) * arr.cols, stats=stats, **kwargs)
    return arr, refs, unpack_transfers(arr, raw), stats


def test_verilator_4x5_random_corners_and_timing():
    rng = np.random.default_rng(21)
    arr = DspMacArray(**SQUARE)
    corners = corner_tiles(rng, arr)
    ks = rng.integers(arr.min_tile_steps, arr.max_k + 1, 40)
    tiles = ([random_tile(rng, arr, int(k)) for k in ks[:20]] + list(corners.values())
             + [random_tile(rng, arr, int(k)) for k in ks[20:]]
             + [random_tile(rng, arr, arr.min_tile_steps) for _ in range(6)])
    arr, refs, got, stats = run_verilator(SQUARE, tiles, backpressure=0.0, idle=0.0)
    assert got == expected_transfers(arr, refs)
    _, out_model = gd.schedule([a.shape[1] for a, _ in tiles], rows=4, cols=5)
    assert stats["output_cycles"] == out_model.reshape(-1).tolist()
    n_steps = sum(a.shape[1] for a, _ in tiles)
    assert stats["output_cycles"][-1] == n_steps - 1 + arr.latency + arr.cols - 1  # full rate
    extremes = refs[20:23]
    assert int(extremes[0].max()).bit_length() + 1 == arr.acc_width
    assert extremes[0].max() == arr.max_k * 2 ** 14 and extremes[1].min() == -arr.max_k * 128 * 127
    print(f"checked {len(got)} output columns of {len(tiles)} tiles, {n_steps} steps")


def test_verilator_4x5_idle_input():
    rng = np.random.default_rng(22)
    arr = DspMacArray(**SQUARE)
    tiles = [random_tile(rng, arr, int(k)) for k in rng.integers(1, arr.max_k + 1, 20)]
    _, refs, got, _ = run_verilator(SQUARE, tiles, backpressure=0.0, idle=0.6, seed=4)
    assert got == expected_transfers(arr, refs)


def test_verilator_3x7_odd_widths_short_tiles():
    rng = np.random.default_rng(31)
    arr = DspMacArray(**ODD)
    corners = corner_tiles(rng, arr)
    ks = [7, 40, 3, 1, 12, 6, 7, 2, 25, 1, 1, 9]  # some K < C = 7: held `last` steps
    tiles = ([random_tile(rng, arr, k) for k in ks] + list(corners.values())
             + [random_tile(rng, arr, int(k)) for k in rng.integers(1, 41, 15)])
    arr, refs, got, stats = run_verilator(ODD, tiles, backpressure=0.0, idle=0.0)
    assert got == expected_transfers(arr, refs)
    _, out_model = gd.schedule([a.shape[1] for a, _ in tiles], rows=3, cols=7,
                               allow_short=True)
    assert stats["output_cycles"] == out_model.reshape(-1).tolist()
    worst = refs[len(ks)]
    assert int(worst.max()).bit_length() + 1 == arr.acc_width
    assert worst.max() == arr.max_k * 2 ** 6 * 2 ** 11

"""hdl.arith.minifloat_mul.MinifloatMultiplier == golden.minifloat_arith.exact_product.

Amaranth-simulator tests cover latency, backpressure and named corner codes; the Verilator
suite runs every code pair of every listed format pair. Verilator builds dominate the runtime,
so all format pairs sit side by side in one test-only bank component: one model, one run.
"""

import random

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import formats
from golden.minifloat_arith import (
    FLAG_INF,
    FLAG_NAN,
    FLAG_NEG,
    exact_product,
    product_frac_bits,
    product_width,
)
from hdl.arith.minifloat_mul import MinifloatMultiplier
from sim.amaranth_sim import run_simulation, stream_get, stream_put
from sim.vectors import pack_fields, run_vectors, unpack_fields

# The five pairs of the brief, then integer, M = 0, E = 1 and flushed-subnormal operands.
PAIRS = [
    ["fp8_e4m3", "fp8_e4m3"], ["fp8_e5m2", "fp8_e5m2"], ["fp8_e4m3", "fp8_e5m2"],
    ["fp4_e2m1", "fp4_e2m1"], ["fp6_e3m2", "fp6_e2m3"], ["int8", "fp8_e4m3"],
    ["fp_e3m0_fn", "fp_e1m2"], ["fp_e3m2_nosub", "fp3"],
]


class MultiplierBank(wiring.Component):
    """Test harness: one MinifloatMultiplier per pair, all fed in lockstep.

    Field ``u<i>`` of the input/output payload is the payload of unit i. The units share one
    handshake; they stay in lockstep because their enables are the same function of ready.
    """

    def __init__(self, pairs):
        self._pairs = [list(p) for p in pairs]
        units = [MinifloatMultiplier(a, b) for a, b in self._pairs]
        self.in_layout = data.StructLayout({f"u{i}": u.in_layout for i, u in enumerate(units)})
        self.out_layout = data.StructLayout({f"u{i}": u.out_layout for i, u in enumerate(units)})
        self.units = units
        super().__init__({"i_stream": In(stream.Signature(self.in_layout)),
                          "o_stream": Out(stream.Signature(self.out_layout))})

    def elaborate(self, platform):
        m = Module()
        ready = Signal()
        valid = Signal()
        m.d.comb += [ready.eq(1), valid.eq(1)]
        for i, unit in enumerate(self.units):
            m.submodules[f"u{i}"] = unit
            m.d.comb += [
                unit.i_stream.valid.eq(self.i_stream.valid),
                unit.i_stream.payload.eq(self.i_stream.payload[f"u{i}"]),
                unit.o_stream.ready.eq(self.o_stream.ready),
                self.o_stream.payload[f"u{i}"].eq(unit.o_stream.payload),
            ]
            ready, valid = ready & unit.i_stream.ready, valid & unit.o_stream.valid
        m.d.comb += [self.i_stream.ready.eq(ready), self.o_stream.valid.eq(valid)]
        return m


def flags_of(fields):
    return fields["nan"] * FLAG_NAN + fields["inf"] * FLAG_INF + fields["neg"] * FLAG_NEG


def simulate(dut, payloads, seed=None):
    """Amaranth-simulate ``payloads`` through ``dut``; random idles and stalls when seeded."""
    received = []
    rng = random.Random(seed)

    async def producer(ctx):
        for payload in payloads:
            while seed is not None and rng.random() < 0.3:
                await ctx.tick()
            await stream_put(ctx, dut.i_stream, payload)

    async def consumer(ctx):
        for _ in payloads:
            while seed is not None and rng.random() < 0.4:
                await ctx.tick()
            received.append(await stream_get(ctx, dut.o_stream))

    run_simulation(dut, [producer, consumer], deadline=1e-3)
    return received


def corner_codes(name):
    """Codes of zero, the smallest and largest magnitudes, +-1 and every special."""
    f = formats.get(name)
    codes = np.arange(1 << f.bits)
    mag = np.abs(f.decode(codes))
    nonzero = mag[np.isfinite(mag) & (mag > 0)]
    keep = ((mag == 0) | (mag == nonzero.min()) | (mag == nonzero.max()) | (mag == 1)
            | ~np.isfinite(mag))
    return codes[keep]


@pytest.mark.parametrize("kwargs,error,match", [
    ({"a_format": "fp16"}, ValueError, "a_format='fp16' has 16 bits"),
    ({"b_format": "bf16"}, ValueError, "b_format='bf16' has 16 bits"),
    ({"a_format": "flint4"}, ValueError, "a_format='flint4' is a TableFormat"),
    ({"b_format": "fp4_er_pos"}, ValueError, "b_format='fp4_er_pos' is a ExtendedFormat"),
    ({"a_format": "fp9_e9"}, ValueError, "a_format='fp9_e9'"),
    ({"b_format": "q8_4"}, ValueError, "b_format='q8_4' is a FixedPoint"),
    ({"a_format": 8}, TypeError, "a_format must be a format name"),
])
def test_rejects_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        MinifloatMultiplier(**kwargs)


@pytest.mark.parametrize("pair", PAIRS)
def test_widths_and_properties(pair):
    dut = MinifloatMultiplier(*pair)
    assert (dut.a_format, dut.b_format) == tuple(pair)
    assert dut.latency == 3
    assert dut.p_width == product_width(*pair)
    assert dut.frac_bits == product_frac_bits(*pair)
    assert dut.out_layout["p"].width == dut.p_width
    assert dut.in_layout.size == sum(formats.get(n).bits for n in pair)


def test_worst_case_widths():
    # max x max: E5M2 (7 << 29)**2 needs 64 magnitude bits + sign; E4M3 (14 << 14)**2 36 + 1.
    assert MinifloatMultiplier("fp8_e5m2", "fp8_e5m2").p_width == 65
    assert MinifloatMultiplier("fp8_e4m3", "fp8_e4m3").p_width == 37
    assert MinifloatMultiplier("int8", "int8").p_width == 16  # (-128) * (-128) = 2**14


def test_latency_in_simulation():
    dut = MinifloatMultiplier("fp8_e4m3", "fp8_e5m2")
    cycles = []

    async def testbench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.i_stream.payload, {"a": 0x38, "b": 0x3C})
        ctx.set(dut.i_stream.valid, 1)
        assert ctx.get(dut.i_stream.ready)
        await ctx.tick()  # the payload is accepted at this edge
        ctx.set(dut.i_stream.valid, 0)
        n = 1
        while not ctx.get(dut.o_stream.valid):
            await ctx.tick()
            n += 1
        cycles.append(n)
        # 1.0 x 1.0 in units of 2**-(9 + 16)
        assert ctx.get(dut.o_stream.payload.p) == 1 << 25

    run_simulation(dut, [testbench], deadline=1e-5)
    assert cycles == [dut.latency]


@pytest.mark.parametrize("pair,seed", [(["fp8_e5m2", "fp8_e4m3"], 3), (["int8", "fp6_e3m2"], 4)])
def test_corner_cases_with_backpressure(pair, seed):
    a_name, b_name = pair
    a, b = (np.array(x).reshape(-1) for x in np.meshgrid(
        corner_codes(a_name), corner_codes(b_name), indexing="ij"))
    dut = MinifloatMultiplier(a_name, b_name)
    received = simulate(dut, [{"a": int(x), "b": int(y)} for x, y in zip(a, b, strict=True)],
                        seed=seed)
    p, flags = exact_product(a, b, a_name, b_name)
    rtl_p = np.array([r.p for r in received], dtype=object)
    rtl_flags = np.array([r.nan * FLAG_NAN + r.inf * FLAG_INF + r.neg * FLAG_NEG
                          for r in received])
    assert (rtl_p == p).all()
    assert (rtl_flags == flags).all()
    print(f"checked {a.size} cases")


def test_verilator_every_code_pair():
    bank = MultiplierBank(PAIRS)
    sweep = np.arange(1 << 16)
    hi, lo = sweep >> 8, sweep & 0xFF
    operands, packed = [], np.zeros(sweep.size, dtype=object)
    for i, (unit, (a_name, b_name)) in enumerate(zip(bank.units, PAIRS, strict=True)):
        a = hi & ((1 << formats.get(a_name).bits) - 1)
        b = lo & ((1 << formats.get(b_name).bits) - 1)
        operands.append((a, b))
        packed = packed + (pack_fields(unit.in_layout, a=a, b=b) << bank.in_layout[f"u{i}"].offset)
    out = run_vectors(MultiplierBank, {"pairs": PAIRS}, packed)
    total = 0
    for i, (unit, (a_name, b_name)) in enumerate(zip(bank.units, PAIRS, strict=True)):
        field = bank.out_layout[f"u{i}"]
        rtl = unpack_fields(unit.out_layout, (out >> field.offset) & ((1 << field.width) - 1))
        a, b = operands[i]
        p, flags = exact_product(a, b, a_name, b_name)
        assert (rtl["p"] == p).all(), (a_name, b_name)
        assert (flags_of(rtl) == flags).all(), (a_name, b_name)
        distinct = len(set(zip(a.tolist(), b.tolist(), strict=True)))
        assert distinct == 1 << (formats.get(a_name).bits + formats.get(b_name).bits)
        print(f"{a_name} x {b_name}: checked {sweep.size} cases ({distinct} distinct pairs, all)")
        total += sweep.size
    print(f"checked {total} cases")

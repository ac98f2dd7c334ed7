"""hdl/common.py: register_fields packs a stage's fields and gives each back unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module, Signal, signed, unsigned

from bitmod.hdl.common import PACKED_REGISTER_BITS, register_fields
from bitmod.sim.amaranth_sim import run_simulation

SHAPES = {"a": signed(14), "b": unsigned(1), "c": unsigned(40), "d": signed(30), "e": unsigned(0),
          "f": unsigned(70), "g": signed(3)}


def build(max_bits=PACKED_REGISTER_BITS):
    """A module registering SHAPES' inputs with register_fields; the registers it made."""
    m = Module()
    inputs = {k: Signal(shape, name=f"in_{k}") for k, shape in SHAPES.items()}
    made = []

    def register(value, name):
        reg = Signal(value.shape(), name=name, reset_less=True)
        m.d.sync += reg.eq(value)
        made.append(reg)
        return reg

    out = register_fields(register, inputs, "st", max_bits=max_bits)
    return m, inputs, out, made


def test_first_fit_in_order_within_the_width():
    _, _, out, made = build()
    # a + b + c = 55 bits; d would pass 64: new register; d + e = 30; f alone (wider than 64);
    # g after f's register is full.
    assert [len(r) for r in made] == [55, 30, 70, 3]
    assert [r.name for r in made] == ["st0", "st1", "st2", "st3"]
    assert {k: (len(v), v.shape().signed) for k, v in out.items()} == {
        k: (s.width, s.signed) for k, s in SHAPES.items()}
    _, _, _, one = build(max_bits=1000)
    assert [r.name for r in one] == ["st"]


def test_bad_max_bits_is_named():
    with pytest.raises(ValueError, match="max_bits"):
        build(max_bits=0)


def test_fields_come_back_one_cycle_later():
    m, inputs, out, _ = build()
    mirrors = {k: Signal(SHAPES[k], name=f"out_{k}") for k in SHAPES}
    m.d.comb += [mirrors[k].eq(out[k]) for k in SHAPES]
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(40):
        case = {}
        for k, shape in SHAPES.items():
            bits = int.from_bytes(rng.bytes(16), "little") % (1 << shape.width)
            top = 1 << max(shape.width - 1, 0)
            case[k] = bits - 2 * top if shape.signed and bits >= top else bits
        cases.append(case)
    seen = []

    async def testbench(ctx):
        for case in cases:
            for k, v in case.items():
                ctx.set(inputs[k], v)
            await ctx.tick()
            seen.append({k: ctx.get(mirrors[k]) for k in SHAPES})

    run_simulation(m, [testbench], deadline=1e-5)
    assert seen == cases

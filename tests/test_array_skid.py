"""The skid buffer (hdl/array/skid.py) beside its reference, a FIFO: every payload comes out
once and in order under random idles and backpressure, ``i_stream.ready`` is a register (it
never changes with the receiver's ``ready`` in the same cycle), and an always-ready receiver
sees each payload in the cycle it was offered."""

import random

import pytest
from amaranth import unsigned

from bitmod.hdl.array.skid import SkidBuffer
from bitmod.sim.amaranth_sim import run_simulation


@pytest.mark.parametrize(("idle", "backpressure"), [(0.0, 0.0), (0.3, 0.5), (0.0, 0.8)])
def test_skid_buffer_is_a_fifo_with_registered_ready(idle, backpressure):
    dut = SkidBuffer(unsigned(12))
    chooser = random.Random(7)
    sent = [chooser.randrange(1 << 12) for _ in range(300)]
    got, offered, taken, ready_moves = [], [], [], []

    async def source(ctx):
        cycle = 0
        for value in sent:
            while chooser.random() < idle:
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.i_stream.payload, value)
            while True:
                accepted = ctx.get(dut.i_stream.ready)
                offered.append(cycle)
                await ctx.tick()
                cycle += 1
                if accepted:
                    break
            ctx.set(dut.i_stream.valid, 0)

    async def sink(ctx):
        cycle = 0
        while len(got) < len(sent):
            ready = chooser.random() >= backpressure
            ctx.set(dut.o_stream.ready, ready)
            before = ctx.get(dut.i_stream.ready)
            ctx.set(dut.o_stream.ready, not ready)  # the other value in the same cycle...
            ready_moves.append(ctx.get(dut.i_stream.ready) != before)
            ctx.set(dut.o_stream.ready, ready)  # ...then the real one
            if ctx.get(dut.o_stream.valid) and ready:
                got.append(ctx.get(dut.o_stream.payload))
                taken.append(cycle)
            await ctx.tick()
            cycle += 1

    run_simulation(dut, [source, sink], deadline=1e-3)
    assert got == sent
    assert not any(ready_moves), "i_stream.ready followed o_stream.ready combinationally"
    if idle == 0.0 and backpressure == 0.0:  # no latency: each payload leaves as offered
        assert taken == list(range(len(sent)))

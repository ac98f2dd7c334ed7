"""sim/bank.py: LockstepBank forks one stream to several units and joins their outputs.

Amaranth simulator, on two hdl.selftest.PipelinedAdders: lockstep latency and one payload per
cycle, padding of the shorter unit, every result paired and in order under random idles and
backpressure, select mode, static-port pass-through and parameter checks.
"""

import random

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.hdl.selftest import PipelinedAdder
from bitmod.sim.amaranth_sim import measure_latency, run_simulation, stream_put
from bitmod.sim.bank import LockstepBank


def adders(*stages, width=8):
    return {f"s{n}": PipelinedAdder(width=width, stages=n) for n in stages}


def operand_pairs(n, seed, width=8):
    rng = np.random.default_rng(seed)
    return [[int(v) for v in rng.integers(-(1 << (width - 1)), 1 << (width - 1), 2)]
            for _ in range(n)]


def bank_payload(bank, pairs):
    """One input payload: unit ``name`` adds ``pairs[index]``."""
    return {name: {"a": a, "b": b} for name, (a, b) in zip(bank.names, pairs, strict=True)}


def simulate(bank, payloads, *, idle=0.0, backpressure=0.0, seed=0, ports=None):
    """Stream ``payloads``; returns (output payloads as {name: int}, accept and output cycles)."""
    rng = random.Random(seed)
    received, accepted, produced = [], [], []
    cycle = [0]

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def producer(ctx):
        for port, value in (ports or {}).items():
            ctx.set(getattr(bank, port), value)
        for payload in payloads:
            while rng.random() < idle:
                await ctx.tick()
            await stream_put(ctx, bank.i_stream, payload)
            accepted.append(cycle[0] - 1)

    async def consumer(ctx):
        while len(received) < len(payloads):
            ready = rng.random() >= backpressure
            ctx.set(bank.o_stream.ready, ready)
            *_, valid, payload = await ctx.tick().sample(bank.o_stream.valid,
                                                        bank.o_stream.payload)
            if ready and valid:
                received.append({name: int(payload[name]) for name in bank.names})
                produced.append(cycle[0] - 1)

    run_simulation(bank, [producer, consumer], processes=[clock], deadline=1e-3)
    return received, accepted, produced


def test_lockstep_equal_latencies_one_per_cycle():
    bank = LockstepBank([PipelinedAdder(stages=3), PipelinedAdder(stages=3, width=6)])
    assert bank.names == ("u0", "u1") and bank.latency == 3
    pairs = [operand_pairs(2, seed) for seed in range(40)]
    pairs = [[p[0], [max(-32, min(31, v)) for v in p[1]]] for p in pairs]  # fit 6 bits
    out, accepted, produced = simulate(bank, [bank_payload(bank, p) for p in pairs])
    assert out == [{"u0": sum(p[0]), "u1": sum(p[1])} for p in pairs]
    assert accepted == list(range(len(pairs)))
    assert produced == [c + bank.latency for c in accepted]


def test_unequal_latencies_need_padding():
    with pytest.raises(ValueError, match="pad_to_latency"):
        LockstepBank(adders(1, 3))


def test_padding_aligns_the_shorter_unit():
    bank = LockstepBank(adders(1, 4), pad_to_latency=True)
    assert bank.latency == 4
    pairs = [operand_pairs(2, seed) for seed in range(30)]
    out, accepted, produced = simulate(bank, [bank_payload(bank, p) for p in pairs])
    assert out == [{"s1": sum(p[0]), "s4": sum(p[1])} for p in pairs]
    assert accepted == list(range(len(pairs)))
    assert produced == [c + 4 for c in accepted]
    cycles, payload = measure_latency(bank, bank_payload(bank, [[3, 4], [-5, 9]]))
    assert (cycles, int(payload["s1"]), int(payload["s4"])) == (4, 7, 4)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_backpressure_and_idles_keep_results_paired(seed):
    # Under backpressure the padded unit's bubbles collapse differently from the other unit's;
    # the join must still pair the i-th results of both.
    bank = LockstepBank(adders(1, 2, 4), pad_to_latency=True)
    pairs = [operand_pairs(3, 100 * seed + k) for k in range(80)]
    out, _, _ = simulate(bank, [bank_payload(bank, p) for p in pairs], idle=0.3,
                         backpressure=0.6, seed=seed)
    assert out == [{"s1": sum(p[0]), "s2": sum(p[1]), "s4": sum(p[2])} for p in pairs]
    print(f"checked {len(pairs)} cases")


def test_shared_input_goes_to_every_unit():
    bank = LockstepBank([PipelinedAdder(width=5), PipelinedAdder(width=5)], shared_input=True)
    assert bank.in_layout == PipelinedAdder(width=5).operands
    pairs = operand_pairs(20, 7, width=5)
    out, _, _ = simulate(bank, [{"a": a, "b": b} for a, b in pairs])
    assert out == [{"u0": a + b, "u1": a + b} for a, b in pairs]


def test_select_drives_one_unit():
    bank = LockstepBank(adders(1, 3), select=True)
    assert bank.latency is None
    for index, name in enumerate(bank.names):
        pairs = [operand_pairs(2, 50 + k) for k in range(12)]
        out, accepted, produced = simulate(bank, [bank_payload(bank, p) for p in pairs],
                                           ports={"sel": index})
        assert [o[name] for o in out] == [sum(p[index]) for p in pairs]
        assert produced == [c + bank.units[index].latency for c in accepted]


class Scaled(wiring.Component):
    """``o = x * gain`` with a static ``gain`` port, one register stage."""

    latency = 1

    def __init__(self, width=4):
        super().__init__({"gain": In(4), "i_stream": In(stream.Signature(width)),
                          "o_stream": Out(stream.Signature(width + 4))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i_stream.ready.eq(self.o_stream.ready | ~self.o_stream.valid)
        with m.If(self.i_stream.ready):
            m.d.sync += [self.o_stream.valid.eq(self.i_stream.valid),
                         self.o_stream.payload.eq(self.i_stream.payload * self.gain)]
        return m


def test_static_ports_pass_through():
    bank = LockstepBank({"narrow": Scaled(3), "wide": Scaled(5)})
    assert isinstance(bank.gain, Signal) and len(bank.gain) == 4
    cycles, payload = measure_latency(bank, {"narrow": 5, "wide": 17}, deadline=1e-6)
    assert cycles == 1 and (int(payload["narrow"]), int(payload["wide"])) == (0, 0)

    async def testbench(ctx):
        ctx.set(bank.gain, 11)
        ctx.set(bank.o_stream.ready, 1)
        await stream_put(ctx, bank.i_stream, {"narrow": 5, "wide": 17})
        while not ctx.get(bank.o_stream.valid):
            await ctx.tick()
        out = ctx.get(bank.o_stream.payload)
        assert (int(out["narrow"]), int(out["wide"])) == (55, 187)

    run_simulation(bank, [testbench], deadline=1e-6)


def test_static_ports_in_payload():
    bank = LockstepBank([Scaled(), Scaled()], ports_in_payload=True)
    assert list(dict(bank.in_layout)) == ["u0", "u1", "gain"]
    assert "gain" not in bank.signature.members
    cases = [(3, 4, 5), (15, 15, 15), (0, 9, 2), (7, 1, 9)]
    out, _, _ = simulate(bank, [{"u0": x, "u1": y, "gain": g} for x, y, g in cases])
    assert out == [{"u0": x * g, "u1": y * g} for x, y, g in cases]


@pytest.mark.parametrize(("args", "kwargs", "error", "match"), [
    ([], {}, ValueError, "at least one"),
    ("u", {}, TypeError, "no i_stream"),
    ({"1x": PipelinedAdder()}, {}, ValueError, "identifiers"),
    ([PipelinedAdder()], {"select": 1}, TypeError, "select"),
    ([PipelinedAdder()], {"select": True, "pad_to_latency": True}, ValueError, "select"),
    ([PipelinedAdder(), PipelinedAdder(width=4)], {"shared_input": True}, ValueError,
     "shared_input"),
    ([Scaled(), Scaled()], {"shared_input": True, "ports_in_payload": True}, ValueError,
     "ports_in_payload"),
    ({"gain": Scaled()}, {"ports_in_payload": True}, ValueError, "gain"),
])
def test_bad_parameters(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        LockstepBank(args, **kwargs)

"""The core's command port (hdl/array/command_port.py) beside golden.core.CoreModel: every op
(0..15) at every address, with each op's data edges and seeded random commands, idle and
during a job: the status, the response data, the buffer writes (bank, word, lane, value), the
job and special registers and the start pulse equal the model's, command by command; each
command is checked for one cycle, answered one cycle after it is taken (a wait during a job
once busy falls) and its response held under backpressure."""

import random
import re
from dataclasses import dataclass

import pytest
from amaranth import Elaboratable, Module, unsigned
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from bitmod.golden import bfp
from bitmod.golden import core as gcore
from bitmod.golden.core import CoreConfig
from bitmod.hdl.array.command_port import CommandPort
from bitmod.sim.amaranth_sim import run_simulation

OPS, ST = gcore.OPS, gcore.STATUS
# Banks, lanes, depths and the selector count are not powers of two, so every field has values
# beyond its bound, and each of the weight, meta and activation addresses leaves unused address
# bits in one of them; INT8 with a 3-format BitMoD mixture, FP16 and BF16 with one format.
CONFIGS = {
    "int8": dict(rows=3, cols=3, lanes=3, group_size=6, act_format="int8",
                 formats=("fp4_er_pos", "fp4_er_neg", "fp4_ea_pos"), max_m=7, max_n=8,
                 max_k=20),
    "fp16": dict(rows=3, cols=3, lanes=3, group_size=6, act_format="fp16",
                 formats="int4_sym", max_m=5, max_n=7, max_k=20),
    # A long output buffer: address bits above the weight fields.
    "bf16": dict(rows=2, cols=3, lanes=4, group_size=8, act_format="bf16",
                 formats="int8_sym", max_m=40, max_n=5, max_k=12),
    # A PE kind that shifts by the group scale: meta scale codes must be powers of two.
    "minifloat": dict(rows=2, cols=3, lanes=4, group_size=8, act_format="int8",
                      formats="fp4_e2m1", max_m=5, max_n=7, max_k=20, pe_kind="minifloat"),
    # Zero points: the meta word's top field is the zero point's code (any value).
    "zero_points": dict(rows=3, cols=3, lanes=3, group_size=6, act_format="int8",
                        formats="int4", max_m=5, max_n=7, max_k=20, zero_points=True),
}


class Recorder(dict):
    """A buffer of the model that also lists what each command wrote."""

    def __init__(self):
        super().__init__()
        self.log = []

    def __setitem__(self, key, value):
        self.log.append((key, value))
        super().__setitem__(key, value)


@dataclass
class Case:
    op: int
    addr: int
    data: int
    busy: int = 0
    done: int = 0


def data_edges(mp: CoreConfig, op: int) -> list[int]:
    """Data values at the edges of what ``op`` accepts (and plain ones)."""
    cfg = mp.array
    top = (1 << 32) - 1
    if op == OPS["write_weight"]:
        cb = mp.code_bits
        return [0, 1, (1 << cb) - 1, 1 << cb, (1 << cb) + 1, 1 << 31, top]
    if op == OPS["write_meta"]:
        sb, nf = cfg.scale_bits, len(cfg.formats)
        # Powers of two (the only scales a shifting PE kind takes) and others beside them.
        return [0, 1, 2, 3, 1 << (sb - 1), (1 << (sb - 1)) + 1, (1 << sb) - 1,
                (nf - 1) << sb | 5, (nf - 1) << sb | 4, nf << sb, 3 << sb, 1 << mp.meta_bits,
                1 << (sb + 2), ((1 << mp.code_bits) - 1) << (sb + 2) | 1, 1 << 31, top]
    if op == OPS["write_act"]:
        if cfg.act_format == "int8":
            return [0, 0x7F, 0x80, 0xFF, 0x100, 0x17F, 0xFF7F, 0xFF80, 0xFFFF, 0x10000,
                    0x1FF80, top]
        e_bits, m_bits, _ = bfp.float_fields(cfg.act_format)
        inf = ((1 << e_bits) - 1) << m_bits
        return [0, 1, 0x8000, inf - 1, inf, inf | 1, inf | 0x8000, 0xFFFF, 0x10000,
                0x10000 | 0x3C00, top]
    if op == OPS["set_job"]:
        bound = max(mp.max_m, mp.max_n, mp.max_k)
        return [0, 1, mp.max_m, mp.max_m + 1, mp.max_n + 1, bound, bound + 1, 1 << 16,
                (1 << 16) + 1, top]
    return [0, 1, 0x12345678, top]


def good_data(mp: CoreConfig, op: int) -> int:
    """A value ``op`` accepts, so an address sweep is decided by the address."""
    cfg = mp.array
    if op == OPS["write_weight"]:
        return (1 << mp.code_bits) - 1
    if op == OPS["write_meta"]:
        scale = 0x40 if cfg.kind.scale == "shift" else 0xA5
        return (len(cfg.formats) - 1) << cfg.scale_bits | scale
    if op == OPS["write_act"]:
        return 0xFF80 if cfg.act_format == "int8" else 0x3C01
    if op == OPS["set_job"]:
        return 1
    return 0xC0FFEE


def make_cases(mp: CoreConfig, seed: int) -> list[Case]:
    rng = random.Random(seed)
    span = 1 << mp.addr_bits
    states = [(0, 0), (0, 1)]  # (busy, done) of an idle core; (1, 0) is a running job
    cases = [Case(OPS["start"], 0, 0)]  # M, N, K unset since reset
    for dim, value in zip(range(3), (mp.max_m, mp.max_n, 1), strict=True):
        cases += [Case(OPS["set_job"], dim, value), Case(OPS["start"], 0, 0, *rng.choice(states))]
    # Every op at every address (an accepted data value), idle.
    for op in range(1 << gcore.OP_BITS):
        for addr in range(span):
            cases.append(Case(op, addr, good_data(mp, op), *rng.choice(states)))
    # Data edges at an address in range and one beyond, idle and during a job.
    for op in range(1 << gcore.OP_BITS):
        for data in data_edges(mp, op):
            for addr in (0, 1, 2, span - 1):
                cases.append(Case(op, addr, data, *rng.choice(states)))
            cases.append(Case(op, rng.randrange(span), data, 1, 0))
    # Seeded random commands.
    for _ in range(600):
        op = rng.randrange(1 << gcore.OP_BITS)
        data = rng.choice([rng.getrandbits(32), rng.getrandbits(17), rng.randrange(64),
                           rng.choice(data_edges(mp, op))])
        busy, done = rng.choice([*states, (1, 0)])
        cases.append(Case(op, rng.randrange(span), data, busy, done))
    return cases


def expected_responses(mp, cases, outputs, counters):
    """Per case: (status, data, writes, start, special, job) from golden.core.CoreModel."""
    model = gcore.CoreModel(mp, weights=Recorder(), meta=Recorder(), acts=Recorder(),
                            outputs=dict(enumerate(outputs)))
    model.counters = dict(zip(gcore.COUNTERS, counters, strict=True))
    result = []
    for case in cases:
        wait_in_job = case.op == OPS["wait"] and case.busy
        # A wait during a job is answered once the job has ended: idle, done.
        model.busy, model.done = (False, True) if wait_in_job else (bool(case.busy),
                                                                    bool(case.done))
        logs = (model.weights.log, model.meta.log, model.acts.log)
        for log in logs:
            log.clear()
        status, data = model.command(case.op, case.addr, case.data)
        if data is None:  # read_counter during a job: the port answers the live value
            data = counters[case.addr // 2] >> (32 * (case.addr % 2)) & 0xFFFFFFFF
        # The activation buffer holds A bits per element: an INT8 word's low byte (its
        # sign extension is what the status checked), an FP word whole.
        act_mask = (1 << mp.act_bits) - 1
        writes = {"weight": sorted(model.weights.log), "meta": sorted(model.meta.log),
                  "act": sorted((key, value & act_mask) for key, value in model.acts.log)}
        started = case.op == OPS["start"] and status == ST["ok"]
        result.append((status, data, writes, started, model.special, dict(model.job)))
    return result


class _PortWithOutputs(Elaboratable):
    """The command port with an output buffer holding ``outputs`` behind its read port."""

    def __init__(self, mp, outputs, register_command=None):
        self.port = CommandPort(mp, register_command=register_command)
        self._mp, self._outputs = mp, outputs

    def elaborate(self, platform):
        m = Module()
        m.submodules.port = self.port
        m.submodules.outputs = mem = Memory(shape=unsigned(self._mp.out_bits),
                                            depth=self._mp.out_depth, init=self._outputs)
        wiring.connect(m, self.port.output_read, mem.read_port())
        return m


def _writes(ctx, ports, lane_bits, *, lanes=True):
    """The writes the port drives this cycle, sorted: ``((bank, word, lane), value)`` for a
    buffer written by lanes, ``((bank, word), value)`` for one written by words."""
    found = []
    for bank, port in enumerate(ports):
        en, addr, data = ctx.get(port.en), ctx.get(port.addr), ctx.get(port.data)
        for lane in range(len(port.en)):
            if en >> lane & 1:
                value = data >> (lane * lane_bits) & ((1 << lane_bits) - 1)
                found.append(((bank, addr, lane) if lanes else (bank, addr), value))
    return sorted(found)


@pytest.mark.parametrize("register_command", [True, False])  # the iCE40 form: no copy
@pytest.mark.parametrize("name", list(CONFIGS))
def test_command_port_matches_golden_model(name, register_command):
    mp = CoreConfig(**CONFIGS[name])
    rng = random.Random(1)
    outputs = [rng.getrandbits(mp.out_bits) for _ in range(mp.out_depth)]
    counters = [rng.getrandbits(gcore.COUNTER_BITS) for _ in gcore.COUNTERS]
    cases = make_cases(mp, seed=2)
    want = expected_responses(mp, cases, outputs, counters)
    dut = _PortWithOutputs(mp, outputs, register_command)
    port = dut.port
    got = []
    holds = random.Random(3)

    async def host(ctx):
        ctx.set(port.counters, dict(zip(gcore.COUNTERS, counters, strict=True)))
        for case, expected in zip(cases, want, strict=True):
            ctx.set(port.busy, case.busy)
            ctx.set(port.done, case.done)
            ctx.set(port.i_cmd.payload, {"op": case.op, "addr": case.addr, "data": case.data})
            ctx.set(port.i_cmd.valid, 1)
            assert not ctx.get(port.i_cmd.ready), "taken before it was checked"
            await ctx.tick()
            assert ctx.get(port.i_cmd.ready), "not taken one cycle after it was offered"
            writes = {"weight": _writes(ctx, port.weight_write, mp.code_bits),
                      "meta": _writes(ctx, port.meta_write, mp.meta_bits, lanes=False),
                      "act": _writes(ctx, port.act_write, mp.act_bits)}
            assert not ctx.get(port.start), "start before the cycle after its acceptance"
            await ctx.tick()
            started = bool(ctx.get(port.start))  # a flip-flop: the cycle after
            ctx.set(port.i_cmd.valid, 0)
            if case.op == OPS["wait"] and case.busy:
                for _ in range(3):  # held while the job runs
                    assert not ctx.get(port.o_resp.valid) and ctx.get(port.waiting)
                    await ctx.tick()
                ctx.set(port.busy, 0)  # the job ends
                ctx.set(port.done, 1)
                await ctx.tick()
            if (register_command and case.op == OPS["read_output"]
                    and expected[0] == gcore.STATUS["ok"]):  # its read data registered first
                assert not ctx.get(port.o_resp.valid), "a read answered before its data landed"
                await ctx.tick()
            assert ctx.get(port.o_resp.valid), "no response one cycle after the command"
            resp = ctx.get(port.o_resp.payload)
            for _ in range(holds.choice([0, 0, 0, 1, 2])):  # backpressure: held unchanged
                await ctx.tick()
                assert ctx.get(port.o_resp.valid) and ctx.get(port.o_resp.payload) == resp
            ctx.set(port.o_resp.ready, 1)
            await ctx.tick()
            ctx.set(port.o_resp.ready, 0)
            assert not ctx.get(port.o_resp.valid), "two responses for one command"
            job = ctx.get(port.job)
            got.append((resp.status, resp.data, writes, started, ctx.get(port.special),
                        {"m": job.m, "n": job.n, "k": job.k}))

    run_simulation(dut, [host], deadline=1.0)
    assert len(got) == len(cases)
    mismatches = [(case, g, w) for case, g, w in zip(cases, got, want, strict=True) if g != w]
    assert not mismatches, f"{len(mismatches)} mismatches, first {mismatches[:3]}"
    statuses = {s for s, *_ in want}
    assert statuses == set(ST.values()), "every status occurs"
    n_writes = sum(len(w) for _, _, ws, *_ in want for w in ws.values())
    print(f"{len(cases)} commands ({n_writes} buffer writes, statuses {sorted(statuses)}) "
          "equal golden.core.CoreModel")


def test_command_port_parameters_are_validated():
    with pytest.raises(TypeError, match="config must be a CoreConfig"):
        CommandPort({"rows": 2})
    with pytest.raises(TypeError, match="register_command must be a bool or None, not 1"):
        CommandPort(CoreConfig(), register_command=1)


@pytest.mark.parametrize("register_command", [True, False])
def test_no_wire_is_named_like_a_bit_of_another(register_command):
    """No wire ``x[i]`` beside a wire ``x``: ABC9's reintegration names bit ``i`` of ``x``
    ``x[i]`` and Yosys 0.69 asserts where the two meet (``count_id(wire->name) == 0``,
    docs/synthesis.md). The counters were an array layout, whose field wires are so named;
    with the registered form's copy of them the ULX3S 7 x 6 x 16 netlist did not synthesize."""
    text = rtlil.convert(CommandPort(CoreConfig(**CONFIGS["int8"]),
                                     register_command=register_command), name="top")
    wires = set(re.findall(r"^\s*wire .*?\\(\S+)$", text, re.M))
    assert {"counters", "i_cmd__payload"} <= wires, "the pattern no longer reads the RTLIL"
    bracketed = sorted(w for w in wires
                       if (base := re.fullmatch(r"(.+)\[\d+\]", w)) and base.group(1) in wires)
    assert not bracketed, f"wires named like a bit of another: {bracketed}"

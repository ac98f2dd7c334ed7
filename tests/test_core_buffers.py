"""The core's buffers (hdl/array/buffers.py) behind its command port, beside golden.core's
buffer map: a job loaded with golden.core.load_commands (interleaved with refused commands)
reads back, word by word through the controller's read ports, as golden.core.CoreModel holds
it; the pre-pass's and the drain's buffers keep what their write ports wrote (the outputs read
back through read_output); a read port without enable holds its data; the port widths and
depths are golden's."""

import numpy as np
import pytest
from amaranth import ClockDomain, DomainRenamer, Elaboratable, Module
from amaranth.lib import wiring

from bitmod.golden import core as gcore
from bitmod.golden.core import CoreConfig
from bitmod.golden.quantize import quantize
from bitmod.hdl.array.buffers import HOST_WRITE_STAGES, HOST_WRITTEN, CoreBuffers, buffer_shapes
from bitmod.hdl.array.command_port import CommandPort
from bitmod.hdl.array.host_writes import HostWrites
from bitmod.sim.amaranth_sim import run_simulation

BITMOD = ("fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg")
# K not a multiple of L (unused lanes), banks and depths not powers of two.
CONFIGS = {
    "int8": dict(rows=3, cols=3, lanes=4, group_size=8, act_format="int8", formats=BITMOD,
                 max_m=5, max_n=7, max_k=22),
    "fp16": dict(rows=2, cols=3, lanes=2, group_size=4, act_format="fp16",
                 formats="int8_sym", max_m=5, max_n=5, max_k=11),
}
SCHEMES = {"int8": "bitmod4", "fp16": "int8"}


class _PortAndBuffers(Elaboratable):
    """The command port writing the buffers and reading the output buffer, as in the core;
    with ``form`` ``"link"`` as in a split top: the port answers the writes and
    :class:`HostWrites`, in a ``link`` domain, writes the banks on their ports in that
    domain once a write is answered ``ok``."""

    def __init__(self, mp, form):
        self.form = form
        self.port = CommandPort(mp, writes=form != "link")
        if form == "link":
            self.host_writes = DomainRenamer("link")(HostWrites(mp))
            self.buffers = CoreBuffers(mp, host_domain="link")
        else:
            self.buffers = CoreBuffers(mp, register_writes=form == "registered")

    def elaborate(self, platform):
        m = Module()
        m.submodules.port, m.submodules.buffers = port, buffers = self.port, self.buffers
        writer = port
        if self.form == "link":  # (the testbench plays the bus adapter: cmd and commit)
            m.domains.link = ClockDomain("link")
            m.submodules.host_writes = writer = self.host_writes
        for name in HOST_WRITTEN:
            for ours, theirs in zip(getattr(writer, f"{name}_write"),
                                    getattr(buffers, f"{name}_write"), strict=True):
                wiring.connect(m, ours, theirs)
        wiring.connect(m, port.output_read, buffers.output_read)
        return m


def load_items(mp, seed):
    """The commands that load a largest job (golden.core.load_commands), with refused
    commands (bad address or data: golden's statuses) mixed in."""
    cfg = mp.array
    rng = np.random.default_rng(seed)
    m, n, k = mp.max_m, mp.max_n, mp.max_k
    qt = quantize(rng.standard_normal((n, k)), SCHEMES[cfg.act_format], group_size=cfg.group_size,
                  scale_format="int8")
    if cfg.act_format == "int8":
        x = rng.integers(-128, 128, size=(m, k)).astype(np.int8)
    else:
        x = (rng.standard_normal((m, k)) * np.exp2(rng.integers(-20, 12, (m, k)))).astype(
            np.float16)
    items = gcore.load_commands(mp, x, qt)
    refused = [("write_weight", mp.weight_address(0, 0), 1 << mp.code_bits),
               ("write_act", mp.act_address(0, 1), 0x10000),
               ("write_meta", mp.meta_address(1, 0), 1 << mp.meta_bits),
               ("write_weight", (1 << mp.addr_bits) - 1, 0)]
    for i, cmd in enumerate(refused):
        items.insert(1 + i * len(items) // len(refused), cmd)
    return items


@pytest.mark.parametrize("form", ["registered", "direct", "link"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_buffers_hold_the_golden_layout(name, form):
    mp = CoreConfig(**CONFIGS[name])
    shapes = buffer_shapes(mp)
    items = load_items(mp, seed=5)
    model = gcore.CoreModel(mp)
    statuses = [model.command(gcore.OPS[op], addr, data)[0] for op, addr, data in items]
    assert statuses.count(gcore.STATUS["ok"]) == len(items) - 4
    dut = _PortAndBuffers(mp, form)
    port, buffers = dut.port, dut.buffers
    rng = np.random.default_rng(9)
    direct = {name: rng.integers(0, 1 << width, size=(banks, depth)).tolist()
              for name, (banks, depth, width, _) in shapes.items()
              if name in ("gexp", "base", "output")}
    got = {}

    async def bench(ctx):
        ctx.set(port.o_resp.ready, 1)
        for op, addr, data in items:  # one command per 3 cycles, responses taken at once
            ctx.set(port.i_cmd.payload, {"op": gcore.OPS[op], "addr": addr, "data": data})
            ctx.set(port.i_cmd.valid, 1)
            await ctx.tick().until(port.i_cmd.ready)
            status = ctx.get(port.o_resp.payload.status)  # the answer, taken in this cycle
            ctx.set(port.i_cmd.valid, 0)
            await ctx.tick()
            if form == "link":  # as the adapter: the answer taken, in the link's clock
                writes = dut.host_writes
                ctx.set(writes.cmd, {"op": gcore.OPS[op], "addr": addr, "data": data})
                ctx.set(writes.commit, status == gcore.STATUS["ok"])
                await ctx.tick("link")
                ctx.set(writes.commit, 0)
                await ctx.tick("link")  # the write lands
        # The pre-pass's and the drain's buffers, written through their own ports.
        for name, words in direct.items():
            ports = getattr(buffers, f"{name}_write")
            ports = ports if name != "output" else [ports]
            for bank, port_ in enumerate(ports):
                for word, value in enumerate(words[bank]):
                    ctx.set(port_.addr, word)
                    ctx.set(port_.data, value)
                    ctx.set(port_.en, 1)
                    await ctx.tick()
                ctx.set(port_.en, 0)
        # Every word of every bank through the read ports (data one cycle after the address).
        for name, (banks, depth, _, _) in shapes.items():
            if name == "output":
                continue
            reads = getattr(buffers, f"{name}_read")
            got[name] = [[None] * depth for _ in range(banks)]
            for word in range(depth):
                for read in reads:
                    ctx.set(read.addr, word)
                    ctx.set(read.en, 1)
                await ctx.tick()
                for bank, read in enumerate(reads):
                    ctx.set(read.en, 0)
                    ctx.set(read.addr, (word + 1) % depth)
                    got[name][bank][word] = ctx.get(read.data)
                await ctx.tick()  # without enable the data hold
                assert [ctx.get(read.data) for read in reads] == [
                    got[name][bank][word] for bank in range(banks)]
        # The output buffer through read_output commands.
        got["output"] = []
        for word in range(mp.out_depth):
            ctx.set(port.i_cmd.payload, {"op": gcore.OPS["read_output"], "addr": word})
            ctx.set(port.i_cmd.valid, 1)
            await ctx.tick().until(port.i_cmd.ready)
            ctx.set(port.i_cmd.valid, 0)
            await ctx.tick()
            got["output"].append((ctx.get(port.o_resp.payload.status),
                                  ctx.get(port.o_resp.payload.data)))

    # The link's clock: 2.5 core cycles, as on the ECP5 boards (25 against 60-100 MHz).
    run_simulation(dut, [bench], deadline=1e-2,
                   other_clocks={"link": 2.5e-8} if form == "link" else None)

    # The model's elements, laid out as words: lane l of word w of bank b.
    L = mp.lanes
    lane_mask = {"weight": (1 << mp.code_bits) - 1, "act": (1 << mp.act_bits) - 1}
    for name, elements in (("weight", model.weights), ("meta", model.meta),
                           ("act", model.acts)):
        banks, depth, width, _ = shapes[name]
        for bank in range(banks):
            for word in range(depth):
                if name == "meta":
                    want = elements.get((bank, word), 0)
                else:
                    bits = width // L
                    want = sum((elements.get((bank, word, lane), 0) & lane_mask[name])
                               << (lane * bits) for lane in range(L))
                assert got[name][bank][word] == want, (name, bank, word)
    for name in ("gexp", "base"):
        if name in shapes:
            assert got[name] == direct[name], name
    assert got["output"] == [(gcore.STATUS["ok"], v) for v in direct["output"][0]]
    # The ports' widths and depths: golden's (an address of every word, no more bits).
    for name, (_, depth, width, _) in shapes.items():
        read = getattr(buffers, f"{name}_read")
        read = read[0] if name != "output" else read
        assert len(read.data) == width and 1 << len(read.addr) >= depth > 1 << (
            len(read.addr) - 1), name
    assert (shapes["weight"][1], shapes["meta"][1], shapes["act"][1], shapes["output"][1]) == (
        mp.weight_depth, mp.meta_depth, mp.act_depth, mp.out_depth)
    print(f"{len(items)} load commands; every word of {len(shapes)} buffers equals the model")


@pytest.mark.parametrize("register_writes", [True, False])
def test_host_writes_land_after_their_stages(register_writes):
    """A weight word read in each cycle after its write's enable: the new word from the next
    cycle unregistered, from HOST_WRITE_STAGES cycles later with registered writes (before,
    the old word: the simulator's read of a word in its write's cycle)."""
    mp = CoreConfig(**CONFIGS["int8"])
    buffers = CoreBuffers(mp, register_writes=register_writes)
    write, read = buffers.weight_write[1], buffers.weight_read[1]
    L, CB = mp.array.lanes, mp.code_bits
    elements = [0x9, 0x6]  # each into every lane
    values = [sum(e << (lane * CB) for lane in range(L)) for e in elements]
    seen = []

    async def bench(ctx):
        ctx.set(read.addr, 3)
        ctx.set(read.en, 1)
        for element in elements:
            ctx.set(write.addr, 3)
            ctx.set(write.data, element)
            ctx.set(write.en, -1)
            await ctx.tick()
            ctx.set(write.en, 0)
            for _ in range(HOST_WRITE_STAGES + 2):  # data one cycle after each read
                await ctx.tick()
                seen.append(ctx.get(read.data))

    run_simulation(buffers, [bench], deadline=1e-5)
    later = HOST_WRITE_STAGES if register_writes else 0
    steps = HOST_WRITE_STAGES + 2
    for i, (old, new) in enumerate(zip([0, *values[:-1]], values, strict=True)):
        got = seen[i * steps:(i + 1) * steps]
        assert got == [old] * later + [new] * (steps - later), (i, got)


@pytest.mark.parametrize("register_writes", [True, False])
def test_host_writes_store_the_element_in_the_enabled_lanes(register_writes):
    """A host-written bank stores its write data's element (lane 0's bits) in every enabled
    lane and keeps the others, whatever the other lanes' bits; meta words are stored whole."""
    mp = CoreConfig(**CONFIGS["int8"])
    buffers = CoreBuffers(mp, register_writes=register_writes)
    L, AB = mp.array.lanes, mp.act_bits
    rng = np.random.default_rng(3)
    writes = [(int(rng.integers(0, 1 << (L * AB))), int(rng.integers(1, 1 << L)))
              for _ in range(6)]
    meta = int(rng.integers(0, 1 << mp.meta_bits))
    got = {}

    async def bench(ctx):
        act, meta_port = buffers.act_write[2], buffers.meta_write[1]
        for data, en in writes:
            ctx.set(act.addr, 5)
            ctx.set(act.data, data)
            ctx.set(act.en, en)
            await ctx.tick()
        ctx.set(act.en, 0)
        ctx.set(meta_port.addr, 4)
        ctx.set(meta_port.data, meta)
        ctx.set(meta_port.en, 1)
        await ctx.tick()
        ctx.set(meta_port.en, 0)
        for _ in range(HOST_WRITE_STAGES + 1):
            await ctx.tick()
        for name, bank, word in (("act", 2, 5), ("meta", 1, 4)):
            read = getattr(buffers, f"{name}_read")[bank]
            ctx.set(read.addr, word)
            ctx.set(read.en, 1)
            await ctx.tick()
            got[name] = ctx.get(read.data)

    run_simulation(buffers, [bench], deadline=1e-5)
    lanes = [0] * L
    for data, en in writes:
        for lane in range(L):
            if en >> lane & 1:
                lanes[lane] = data & ((1 << AB) - 1)
    assert got == {"act": sum(v << (lane * AB) for lane, v in enumerate(lanes)), "meta": meta}


def test_register_writes_is_validated():
    with pytest.raises(TypeError, match="register_writes must be a bool or None, not 1"):
        CoreBuffers(CoreConfig(**CONFIGS["int8"]), register_writes=1)

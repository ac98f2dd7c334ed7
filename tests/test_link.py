"""The host link RTL (hdl/link/): UART, register-file backend and framed bridge in the Amaranth
simulator against golden/protocol.py's golden, and the UART bridge end to end under cocotb +
Verilator, driven through its pins by a UART model and the real host driver (host/link.py)."""

import itertools
import os
import random
import struct
import tempfile
import time
from pathlib import Path

import pytest
from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from bitmod.golden import protocol
from bitmod.golden.protocol import LinkConfig, baud_divisor
from bitmod.hdl.link import (
    RX_BYTE,
    TX_BYTE,
    Bridge,
    RegisterFile,
    UartBridge,
    UartBridgeTestTop,
    UartRx,
    UartTx,
)
from bitmod.hdl.link.bridge import crc16_update
from bitmod.sim.amaranth_sim import run_simulation, stream_get, stream_put
from bitmod.sim.verilator import SimulationFailed, get_model, run_cocotb

# --- parameters ---------------------------------------------------------------------------------


def test_baud_divisor_and_validation():
    assert baud_divisor(100_000_000, 115_200) == 868
    assert baud_divisor(8, 2) == 4
    with pytest.raises(ValueError, match="at least 4 clocks per bit"):
        baud_divisor(12_000_000, 4_000_000)
    with pytest.raises(ValueError, match=r"baud 2000000 is 12\.5% off"):
        baud_divisor(9_000_000, 2_000_000)  # 4.5 cycles per bit rounds to 4: 2.25 Mbaud
    with pytest.raises(TypeError, match="clk_freq"):
        UartTx("fast", 9600)
    with pytest.raises(ValueError, match="baud must be positive"):
        UartRx(1e6, 0)


def test_bridge_parameters_are_validated():
    with pytest.raises(ValueError, match="max_payload must be a multiple of 4, not 10"):
        Bridge(max_payload=10)
    with pytest.raises(ValueError, match=r"max_payload must be in 8\.\.65532, not 4"):
        Bridge(max_payload=4)
    with pytest.raises(ValueError, match=r"timeout_cycles must be in 2\.\.4294967296, not 1"):
        Bridge(timeout_cycles=1)
    with pytest.raises(TypeError, match="rx_fifo_depth must be an int"):
        Bridge(rx_fifo_depth=16.0)
    with pytest.raises(ValueError, match=r"depth must be in 1\.\.65536, not 0"):
        RegisterFile(0)
    with pytest.raises(ValueError, match="timeout_cycles must be at least two byte times"):
        LinkConfig(8, 2, timeout_cycles=79)
    with pytest.raises(TypeError, match="LinkConfig"):
        UartBridge({"clk_freq": 8, "baud": 2})
    bridge = Bridge(max_payload=65532, timeout_cycles=1 << 32, rx_fifo_depth=4096)
    assert (bridge.max_payload, bridge.buffer_words, bridge.timeout_cycles) == (65532, 16383,
                                                                              1 << 32)
    link = UartBridge(LinkConfig(8, 2, timeout_cycles=80)).config
    assert (link.divisor, link.timeout_cycles, link.max_payload) == (4, 80, 256)
    # The default timeout: about 50 ms of clock, at least four byte times.
    assert LinkConfig(12e6, 115_200).timeout_cycles == 600_000
    assert LinkConfig(8, 2).timeout_cycles == 160


def test_worst_case_bridge_elaborates():
    # The largest payload RAM and timeout counter the parameters allow.
    from bitmod.toolchain import export_verilog

    text = export_verilog(Bridge(max_payload=65532, timeout_cycles=1 << 32))
    assert "module top" in text


# --- CRC network --------------------------------------------------------------------------------


def test_crc_update_network_matches_golden():
    """The update is linear over GF(2) in (crc, byte): the 24 unit vectors determine it on all
    2**24 inputs; random cases and the CRC catalogue check string confirm."""
    crc, byte = Signal(16), Signal(8)
    out = Signal(16)
    m = Module()
    m.d.comb += out.eq(crc16_update(crc, byte))
    rng = random.Random(5)
    cases = [(1 << i, 0) for i in range(16)] + [(0, 1 << i) for i in range(8)] + [(0, 0)]
    cases += [(rng.getrandbits(16), rng.getrandbits(8)) for _ in range(400)]
    results = []

    async def bench(ctx):
        for c, b in cases:
            ctx.set(crc, c)
            ctx.set(byte, b)
            results.append(ctx.get(out))
        running = protocol.CRC_INIT
        for b in b"123456789":
            ctx.set(crc, running)
            ctx.set(byte, b)
            running = ctx.get(out)
        results.append(running)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    expected = [protocol.crc16([b], c) for c, b in cases] + [0x29B1]
    assert results == expected
    print(f"checked {len(cases) + 1} cases")


# --- UART ---------------------------------------------------------------------------------------


class UartLoop(wiring.Component):
    """UartTx's pin wired to UartRx's pin."""

    def __init__(self, clk_freq, baud):
        self.tx_unit = UartTx(clk_freq, baud)
        self.rx_unit = UartRx(clk_freq, baud)
        super().__init__({"i_stream": In(self.tx_unit.i_stream.signature.flip()),
                          "o_stream": Out(self.rx_unit.o_stream.signature),
                          "line": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = self.tx_unit
        m.submodules.rx = self.rx_unit
        m.d.comb += [self.rx_unit.rx.eq(self.tx_unit.tx), self.line.eq(self.tx_unit.tx)]
        wiring.connect(m, wiring.flipped(self.i_stream), self.tx_unit.i_stream)
        wiring.connect(m, self.rx_unit.o_stream, wiring.flipped(self.o_stream))
        return m


@pytest.mark.parametrize("divisor", [4, 5, 7])
def test_uart_loopback(divisor):
    dut = UartLoop(divisor * 1000, 1000)
    assert dut.tx_unit.divisor == dut.rx_unit.divisor == divisor
    values = [0x00, 0xFF, 0x55, 0xAA, 0xA5, 0x5A, 0x01, 0x80, *random.Random(divisor).choices(
        range(256), k=16)]
    got, starts, accepts, valids = [], [], [], []

    async def send(ctx):
        for v in values:
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.i_stream.payload, {"data": v})
            await ctx.tick().until(dut.i_stream.ready)
            accepts.append(cycle[0])
        ctx.set(dut.i_stream.valid, 0)

    async def recv(ctx):
        for _ in values:
            payload = await stream_get(ctx, dut.o_stream)
            valids.append(cycle[0])
            got.append((payload.data, payload.ferr))

    cycle = [0]

    async def count(ctx):
        line, idle_from = 1, 0
        async for _, _, level in ctx.tick().sample(dut.line):
            cycle[0] += 1
            # A falling edge is a start bit only outside a frame (data bits fall too).
            if line and not level and cycle[0] >= idle_from:
                starts.append(cycle[0])
                idle_from = cycle[0] + 10 * divisor
            line = level

    run_simulation(dut, [send, recv], processes=[count], deadline=1e-8 * 12 * divisor * 40)
    assert got == [(v, 0) for v in values]
    # TX latency: the start bit is on the pin the cycle after the byte was accepted; back to
    # back bytes are exactly 10 bit periods apart.
    assert [s - a for s, a in zip(starts, accepts, strict=True)] == [UartTx(8, 2).latency] * len(
        values)
    assert all(b - a == 10 * divisor for a, b in itertools.pairwise(starts))
    # RX latency from the start edge on the line to o_stream.valid.
    assert [v - s for v, s in zip(valids, starts, strict=True)] == [dut.rx_unit.latency] * len(
        values)
    print(f"checked {len(values)} bytes at divisor {divisor}")


def _drive_bits(ctx, pin, levels, divisor):
    async def run():
        for level in levels:
            ctx.set(pin, level)
            await ctx.tick().repeat(divisor)
    return run()


def test_uart_rx_framing_error_glitch_and_break():
    divisor = 4
    dut = UartRx(divisor, 1)
    got = []

    def frame(byte, stop=1):
        return [0, *((byte >> i) & 1 for i in range(8)), stop]

    async def drive(ctx):
        await ctx.tick().repeat(3)
        await _drive_bits(ctx, dut.rx, [*frame(60, stop=0), 1, 1], divisor)  # framing error
        ctx.set(dut.rx, 0)  # a 1-cycle glitch: shorter than half a bit, not a start bit
        await ctx.tick()
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * divisor)
        await _drive_bits(ctx, dut.rx, frame(0xC3), divisor)
        await _drive_bits(ctx, dut.rx, [0] * 40 + [1, 1], divisor)  # break: one byte, ferr
        await _drive_bits(ctx, dut.rx, [*frame(129), 1], divisor)

    async def collect(ctx):
        for _ in range(4):
            payload = await stream_get(ctx, dut.o_stream)
            got.append((payload.data, payload.ferr))

    run_simulation(dut, [drive, collect], deadline=1e-8 * 2000)
    assert got == [(0x3C, 1), (0xC3, 0), (0x00, 1), (0x81, 0)]


# --- register file ------------------------------------------------------------------------------


def test_register_file():
    dut = RegisterFile(depth=12)
    model = protocol.RegisterFileModel(12)
    rng = random.Random(3)
    ops = [(True, a, rng.getrandbits(32)) for a in range(12)]
    ops += [(rng.random() < 0.4, rng.choice([0, 11, 12, 13, 0xFFFFFFFF, rng.randrange(16)]),
             rng.getrandbits(32)) for _ in range(40)]
    got, latencies = [], []

    async def bench(ctx):
        for write, addr, data in ops:
            await stream_put(ctx, dut.bus.req, {"write": write, "addr": addr, "data": data})
            # stream_put returns just after the accepting edge: latency 1 = valid already.
            latencies.append(1 if ctx.get(dut.bus.resp.valid) else None)
            payload = await stream_get(ctx, dut.bus.resp)
            got.append((payload.data, bool(payload.error)))

    run_simulation(dut, [bench], deadline=1e-5)
    assert got == [model.access(*op) for op in ops]
    assert latencies == [dut.latency] * len(ops)
    print(f"checked {len(ops)} bus transactions")


# --- bridge in the Amaranth simulator -----------------------------------------------------------


class BridgeRegs(wiring.Component):
    """Bridge + RegisterFile, byte streams exposed: the bridge without the UART, for speed."""

    def __init__(self, depth=12, **params):
        self.bridge = Bridge(**params)
        self.regs = RegisterFile(depth)
        super().__init__({"i_stream": In(stream.Signature(RX_BYTE)),
                          "o_stream": Out(stream.Signature(TX_BYTE))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = self.bridge
        m.submodules.regs = self.regs
        wiring.connect(m, self.bridge.bus, self.regs.bus)
        wiring.connect(m, wiring.flipped(self.i_stream), self.bridge.i_stream)
        wiring.connect(m, self.bridge.o_stream, wiring.flipped(self.o_stream))
        return m


FRAMING = "framing"  # a script item: a byte whose stop bit was low
IDLE = "idle"        # a script item: silence longer than the timeout
BYTE_GAP = 4


def run_bridge_script(dut, script, timeout_cycles):
    """Feed ``script`` (bytes, FRAMING, IDLE) to ``dut``; return the reply bytes per item."""
    replies = []
    out = bytearray()

    async def feed(ctx):
        for item in script:
            start = len(out)
            if item == IDLE:
                await ctx.tick().repeat(timeout_cycles + 5)
            elif item == FRAMING:
                await stream_put(ctx, dut.i_stream, {"data": 0xA5, "ferr": 1})
            else:
                for byte in item:
                    await stream_put(ctx, dut.i_stream, {"data": byte, "ferr": 0})
                    # Paced like a UART (slower than the replies): the FIFO never overflows.
                    await ctx.tick().repeat(BYTE_GAP)
            # Let the bridge finish: replies go out at one byte per cycle here.
            await ctx.tick().repeat(2 * protocol.OVERHEAD_BYTES + 2 * dut.bridge.max_payload + 60)
            replies.append(bytes(out[start:]))

    async def drain(ctx):
        ctx.set(dut.o_stream.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(dut.o_stream.valid,
                                                            dut.o_stream.payload):
            if valid:
                out.append(payload.data)

    run_simulation(dut, [feed], processes=[drain], deadline=1e-8 * 400 * len(script) * 20)
    return replies


def model_script(model, script):
    replies = []
    for item in script:
        if item == IDLE:
            replies.append(model.timeout())
        elif item == FRAMING:
            replies.append(model.framing_error())
        else:
            replies.append(model.feed(item))
    return replies


def bridge_script(max_payload, depth, rng):
    """Writes, reads, EXEC, STATUS and every error path, named by what they test."""
    W, R, X = protocol.write_request, protocol.read_request, protocol.exec_request
    good = W(1, 2, [0x11111111, 0x22222222, 0xDEADBEEF])
    flipped = bytearray(W(2, 0, [0xFFFFFFFF]))
    flipped[-5] ^= 0x10  # payload bit: CRC must catch it, nothing written
    max_words = max_payload // 4
    script = [
        good,
        R(3, 0, 6),
        flipped,
        R(4, 0, 1),
        X(5, 3, 0x0BADF00D),                       # swap: returns the old word
        R(6, 3, 1),
        W(7, depth - 2, [1, 2, 3, 4]),             # out of range at word 2, first two written
        R(8, depth - 3, 4),                        # BACKEND at word 3
        R(9, depth - max_words, max_words),        # the largest read
        W(10, 0, list(range(100, 100 + max_words - 1))),  # the largest write
        R(11, 0, max_words),
        R(12, 0, 0),                               # count 0: BAD_LENGTH
        R(13, 0, max_words + 1),                   # count too large
        protocol.encode_frame(protocol.Cmd.READ, 14, b"\0" * 5),  # wrong length
        protocol.encode_frame(protocol.Cmd.WRITE, 15, b"\0" * 6),
        protocol.encode_frame(protocol.Cmd.EXEC, 16, b"\0" * 4),
        protocol.encode_frame(protocol.Cmd.STATUS, 17, b"\0"),
        protocol.encode_frame(0x7E, 18, b"abc"),          # unknown command
        protocol.encode_frame(0x80, 19),                  # a reply code is not a request
        protocol.SYNC + bytes([protocol.Cmd.WRITE, 20]) + struct.pack("<H", max_payload + 4)
        + b"\1" * 20,                              # length beyond max_payload
        X(21, 0xFFFFFFFF, 5),                      # EXEC out of range
        good[:9], IDLE,                            # truncated: TIMEOUT
        protocol.SYNC[:1], IDLE,                          # lone sync byte: silent
        good[:4], FRAMING,                         # framing error in a frame
        FRAMING,                                   # ... and outside one: ignored
        b"\xA5\xA5\x5A" + good[2:],                # a repeated first sync byte
        bytes(rng.getrandbits(8) for _ in range(24)),
        protocol.status_request(22),
        W(23, 0xFFFFFFFF, [7]),                    # address wraps? no: out of range
        protocol.status_request(24),
    ]
    # The length compare's halves (the registered decode splits it at the byte): one above the
    # limit in the low byte, and a high byte above the limit's with a low byte below it.
    for seq, length in ((25, max_payload + 1), (26, (max_payload & ~0xFF) + 0x100)):
        script.append(protocol.SYNC + bytes([protocol.Cmd.WRITE, seq])
                      + struct.pack("<H", length) + b"\2" * 12)
    # The CRC compare's halves: a good frame with only its low, then only its high CRC byte
    # wrong (BAD_CRC, nothing written), then a read of what it would have written.
    for seq, at in ((27, -2), (28, -1)):
        frame = bytearray(W(seq, 1, [0x5A5A5A5A]))
        frame[at] ^= 0x01
        script += [bytes(frame), R(seq + 2, 1, 1)]
    return script


@pytest.mark.parametrize("registered_decode", [False, True])
def test_bridge_matches_golden_in_amaranth_sim(registered_decode):
    """Both forms of the bridge (registered DECODE and a one-hot FSM: the iCE40's) answer every
    script item byte for byte as the golden bridge, every error code included."""
    # The settling wait after each item (~140 cycles) must stay below the timeout.
    params = dict(max_payload=32, timeout_cycles=400, rx_fifo_depth=8,
                  registered_decode=registered_decode)
    depth = 12
    dut = BridgeRegs(depth, **params)
    script = bridge_script(params["max_payload"], depth, random.Random(7))
    model = protocol.BridgeModel(protocol.RegisterFileModel(depth), params["max_payload"])
    expected = model_script(model, script)
    got = run_bridge_script(dut, script, params["timeout_cycles"])
    for item, g, e in zip(script, got, expected, strict=True):
        assert g == e, f"item {item!r}: got {g.hex()} expected {e.hex()}"
    errors = [protocol.decode_error(protocol.decode_frame(e).payload)[0] for e in expected
              if e and protocol.decode_frame(e).cmd == protocol.Reply.ERROR]
    # Every error code is exercised.
    assert set(errors) == set(protocol.ErrorCode)
    print(f"checked {len(script)} script items, {sum(map(len, expected))} reply bytes")


# --- end to end under cocotb + Verilator --------------------------------------------------------

E2E = LinkConfig(clk_freq=8_000_000, baud=2_000_000, max_payload=64, timeout_cycles=400,
                 rx_fifo_depth=32)


def run_e2e(testcase: str, time_limit: float = 600.0, **env):
    model = get_model(UartBridgeTestTop, {"config": E2E, "depth": 48}, engine="cocotb")
    with tempfile.TemporaryDirectory(dir=model.build_dir) as scratch:
        report = Path(scratch) / "report.txt"
        run_cocotb(model, "bitmod.sim.tb.link_tb", testcase=testcase,
                   run_name=f"link-{testcase}-{os.getpid()}-{Path(scratch).name}",
                   env={"LINK_REPORT": str(report), **{k: str(v) for k, v in env.items()}},
                   time_limit=time_limit)
        return report.read_text()


def test_e2e_host_driver_writes_and_reads():
    report = run_e2e("host_driver_roundtrip")
    print(report)
    assert "words checked" in report


def test_e2e_host_driver_recovers_from_line_faults():
    report = run_e2e("host_driver_line_faults")
    print(report)
    assert "resends" in report


def test_e2e_fuzz_then_valid_job():
    report = run_e2e("fuzz_then_valid_job", LINK_FUZZ_ITEMS=240, LINK_SEED=11)
    print(report)
    assert "fuzz items" in report


def test_e2e_never_silent_line_fails_within_the_bound():
    """A bridge kept talking forever: the testbench's settle() fails with a clear message
    within its cycle bound instead of hanging."""
    report = run_e2e("never_silent_line")
    print(report)
    assert "settle() failed after" in report and "the line never went silent" in report


def test_e2e_baud_mismatch_is_a_link_timeout():
    """A host at half or twice the bitstream's baud rate gets LinkTimeout (which bitmod run
    reports as "no answer ... at N baud"); at the right rate the same link works."""
    report = run_e2e("baud_mismatch")
    print(report)
    assert report.count(": LinkTimeout (") == 2 and "words checked bit-exact" in report


def test_e2e_reset_mid_frame_recovers():
    report = run_e2e("reset_mid_frame")
    print(report)
    assert "exact after, no resends" in report


def test_cocotb_run_is_killed_at_its_wall_clock_limit():
    """A testbench that never ends is killed at run_cocotb's wall-clock limit and reported as
    one SimulationFailed, well before a CI job's own timeout."""
    started = time.monotonic()
    with pytest.raises(SimulationFailed, match="did not finish within its wall-clock limit "
                                               "of 10 s"):
        run_e2e("wall_clock_guard", time_limit=10, LINK_HANG=1)
    seconds = time.monotonic() - started
    print(f"killed and reported after {seconds:.1f} s")
    assert seconds < 10 + 30

"""cocotb tests of ``hdl.link.UartBridgeTestTop`` through its ``rx``/``tx`` pins.

A UART model bit-bangs ``rx`` and decodes ``tx`` at the top's bit period. The host side is the
real driver, :class:`host.link.HostLink`, running in a cocotb bridge thread over
:class:`SimTransport`, whose bytes the UART model shifts in and out (its timeouts are in
simulated time). Every result is compared with a golden twin: the same HostLink calls on a
:class:`golden.protocol.BridgeModel` over a :class:`host.link.LoopbackTransport`, or, for the fuzz
items, the model's predicted reply bytes.

Every wait is bounded: :meth:`UartModel.settle` gives up (``SimulationFailed``) when the
line has not gone silent within a few longest replies, the host's reads have their timeouts,
and ``run_cocotb`` kills a run that outlasts its wall-clock limit.

Driven by ``tests/test_link.py``: ``BITMOD_MODEL_PARAMS`` (the top's parameters),
``LINK_REPORT`` (a summary is written there), ``LINK_FUZZ_ITEMS`` and ``LINK_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import struct

import cocotb
from cocotb.task import bridge, resume
from cocotb.triggers import Event, FallingEdge, First, Timer
from cocotb.utils import get_sim_time

from bitmod.golden import protocol
from bitmod.host.link import (
    DeviceError,
    HostLink,
    LinkError,
    LinkTimeout,
    LoopbackTransport,
    Transport,
)
from bitmod.sim.tb.common import CLOCK_NS, TB
from bitmod.sim.verilator import SimulationFailed


def _fields(record: dict) -> dict:
    """A config object's fields from its JSON record (the ``config`` key names the class)."""
    return {key: value for key, value in record.items() if key != "config"}


class _Config:
    """The top's parameters, read when first used (the runner also imports this module, in
    the pytest process, where ``BITMOD_MODEL_PARAMS`` is not set)."""

    def __getattr__(self, name):
        params = json.loads(os.environ["BITMOD_MODEL_PARAMS"])
        link = protocol.LinkConfig(**_fields(params["config"]))
        # The bridge's clock: the top's only one (a split top's: accel_tb sets these).
        self.link_clock = "clk"
        self.link_ns = CLOCK_NS
        self.divisor = link.divisor
        self.bit_ns = self.divisor * self.link_ns
        self.max_payload = link.max_payload
        self.timeout_cycles = link.timeout_cycles
        self.depth = params["depth"]
        # The host waits for each part of a reply at most this long (simulated seconds): a
        # longest reply plus the bridge's own receive timeout, with margin.
        self.host_timeout = ((self.max_payload + 8) * 10 * self.divisor
                             + 3 * self.timeout_cycles) * self.link_ns * 1e-9
        return object.__getattribute__(self, name)


CFG = _Config()


def settle_limit_cycles() -> int:
    """How long :meth:`UartModel.settle` waits for silence at most: four times a longest reply
    plus the receive timeout (a legitimate burst of replies is far shorter)."""
    return 4 * ((CFG.max_payload + 8) * 10 * CFG.divisor + CFG.timeout_cycles)


class UartModel:
    """Drives ``rx`` and decodes ``tx`` (8N1) at the top's bit period (``bit_ns``, which a
    test may change to play a host at another baud rate)."""

    def __init__(self, dut):
        self.dut = dut
        self.received = bytearray()
        self.arrived = Event()
        self.busy = False  # a byte is being decoded
        self.last_byte_ns = 0.0
        self.bit_ns = CFG.bit_ns
        self.resetting = False  # a test resets the top mid-byte: tx may glitch
        dut.rx.value = 1

    async def send(self, data: bytes, *, stop: int = 1) -> None:
        # Change the pin at falling clock edges, half a cycle away from the sampling edges.
        await FallingEdge(getattr(self.dut, CFG.link_clock))
        for byte in bytes(data):
            for level in [0, *((byte >> i) & 1 for i in range(8)), stop]:
                self.dut.rx.value = level
                await Timer(self.bit_ns, "ns")
            if not stop:
                self.dut.rx.value = 1
                await Timer(self.bit_ns, "ns")

    async def hold_low(self, bits: int) -> None:
        await FallingEdge(getattr(self.dut, CFG.link_clock))
        self.dut.rx.value = 0
        await Timer(bits * self.bit_ns, "ns")
        self.dut.rx.value = 1
        await Timer(self.bit_ns, "ns")

    async def glitch(self) -> None:
        await FallingEdge(getattr(self.dut, CFG.link_clock))
        self.dut.rx.value = 0
        await Timer(CFG.link_ns, "ns")
        self.dut.rx.value = 1
        await Timer(self.bit_ns, "ns")

    async def monitor(self) -> None:
        tx = self.dut.tx
        while True:
            await FallingEdge(tx)
            self.busy = True
            await Timer(self.bit_ns // 2, "ns")
            if tx.value:
                self.busy = False
                if self.resetting:  # a byte cut by a reset at its start bit
                    continue
                raise AssertionError("glitch on tx: the bridge's output must be clean")
            byte = 0
            for i in range(8):
                await Timer(self.bit_ns, "ns")
                byte |= int(tx.value) << i
            await Timer(self.bit_ns, "ns")
            if not tx.value:
                raise AssertionError("the bridge sent a byte with a low stop bit")
            self.received.append(byte)
            self.last_byte_ns = get_sim_time("ns")
            self.busy = False
            self.arrived.set()

    async def settle(self, limit_cycles: int | None = None) -> bytes:
        """Wait until the bridge has been silent for longer than its receive timeout plus a
        few bytes; return (and consume) everything it sent.

        Bounded: a line still talking after ``limit_cycles`` (default
        :func:`settle_limit_cycles`) raises ``SimulationFailed``, so a bridge that never stops
        sending fails the test instead of hanging it.
        """
        window = (CFG.timeout_cycles + 30 * CFG.divisor) * CFG.link_ns
        limit = settle_limit_cycles() if limit_cycles is None else int(limit_cycles)
        began = get_sim_time("ns")
        windows = -(-limit * CFG.link_ns // window)
        for _ in range(max(1, windows)):
            start = get_sim_time("ns")
            await Timer(window, "ns")
            if not self.busy and self.last_byte_ns < start:
                break
        else:
            cycles = round((get_sim_time("ns") - began) / CFG.link_ns)
            raise SimulationFailed(
                f"the line never went silent: the bridge still sent bytes after {cycles} "
                f"cycles (bound {limit}), {len(self.received)} bytes received meanwhile")
        out = bytes(self.received)
        self.received.clear()
        return out

    async def read(self, n: int, timeout: float) -> bytes:
        deadline = get_sim_time("ns") + timeout * 1e9
        while len(self.received) < n:
            remaining = int(deadline - get_sim_time("ns"))
            if remaining <= 0:
                break
            self.arrived.clear()
            await First(self.arrived.wait(), Timer(remaining, "ns"))
        out = bytes(self.received[:n])
        del self.received[:n]
        return out


class SimTransport(Transport):
    """:class:`host.link.Transport` over the UART model; for a cocotb bridge thread."""

    def __init__(self, uart: UartModel, tx_fault=None):
        self.uart = uart
        self.tx_fault = tx_fault
        self._send = resume(uart.send)
        self._read = resume(uart.read)

    def write(self, data: bytes) -> None:
        if self.tx_fault is not None:
            data = self.tx_fault(bytes(data))
        self._send(data)

    def read(self, n: int, timeout: float) -> bytes:
        return self._read(n, timeout)

    def discard_input(self) -> None:
        self.uart.received.clear()


async def start(dut) -> UartModel:
    """Clock, reset and the UART model (its ``tb``: the :class:`TB`, for later resets)."""
    tb = TB(dut)
    uart = UartModel(dut)
    uart.tb = tb
    await tb.reset()
    cocotb.start_soon(uart.monitor())
    return uart


def twin_links(uart: UartModel, tx_fault=None):
    """A HostLink on the RTL and one on the golden model, fed identical requests."""
    model = protocol.BridgeModel(protocol.RegisterFileModel(CFG.depth), CFG.max_payload)
    rtl = HostLink(SimTransport(uart, tx_fault), timeout=CFG.host_timeout, retries=3)
    gold = HostLink(LoopbackTransport(model, tx_fault=tx_fault), timeout=CFG.host_timeout,
                    retries=3)
    return rtl, gold, model


def outcome(call):
    """The result of ``call()``, or the device error it raised, as a comparable value."""
    try:
        return call()
    except DeviceError as error:
        return ("DeviceError", error.code, error.cmd, error.index)
    except LinkError as error:
        return (type(error).__name__, str(error))


def report(lines: list[str]) -> None:
    with open(os.environ["LINK_REPORT"], "w") as file:
        file.write("\n".join(lines) + "\n")


def host_job(rng: random.Random):
    """HostLink calls covering every command, multi-frame transfers and device errors."""
    block = [rng.getrandbits(32) for _ in range(CFG.depth)]
    words = CFG.max_payload // 4
    return [
        ("status", lambda h: h.status()),
        ("write all", lambda h: h.write(0, block)),              # several WRITE frames
        ("read all", lambda h: h.read(0, CFG.depth)),                # several READ frames
        ("read one", lambda h: h.read(CFG.depth - 1, 1)),
        ("exec swap", lambda h: h.exec(5, 0xC0FFEE00)),           # returns the old word
        ("read swapped", lambda h: h.read(4, 3)),
        ("write past end", lambda h: h.write(CFG.depth - 2, [1, 2, 3])),  # BACKEND at word 2
        ("read past end", lambda h: h.read(CFG.depth - words // 2, words)),
        ("exec out of range", lambda h: h.exec(0x80000000, 1)),
        ("read edges", lambda h: h.read(CFG.depth - 3, 3)),
        ("write extremes", lambda h: h.write(0, [0, 0xFFFFFFFF, 0x80000000, 1])),
        ("read extremes", lambda h: h.read(0, 4)),
        ("status again", lambda h: h.status()),
    ]


def run_twins(rtl: HostLink, gold: HostLink, job) -> tuple[int, list[str]]:
    checked, mismatches = 0, []
    for name, call in job:
        got, want = outcome(lambda call=call: call(rtl)), outcome(lambda call=call: call(gold))
        if got != want:
            mismatches.append(f"{name}: rtl {got!r} golden {want!r}")
        if isinstance(want, list):
            checked += len(want)
    return checked, mismatches


@cocotb.test()
async def host_driver_roundtrip(dut):
    uart = await start(dut)
    rtl, gold, _ = twin_links(uart)

    @bridge
    def host():
        return run_twins(rtl, gold, host_job(random.Random(1)))

    checked, mismatches = await host()
    assert not mismatches, "\n".join(mismatches)
    assert rtl.resends == 0
    report([f"{checked} words checked bit-exact against the golden twin, "
            f"{len(host_job(random.Random(1)))} host calls"])


@cocotb.test()
async def host_driver_line_faults(dut):
    """Requests corrupted or cut on the way to the device: the device answers BAD_CRC or
    TIMEOUT, executes nothing, and the driver resends; results stay exact."""
    uart = await start(dut)
    calls = {"rtl": 0, "gold": 0}

    def make_fault(key):
        def fault(data: bytes) -> bytes:
            calls[key] += 1
            k = calls[key]
            if k % 4 == 1:  # a payload or CRC bit flipped: BAD_CRC
                data = bytearray(data)
                data[6 + (k * 7) % (len(data) - 6)] ^= 1 << (k % 8)
                return bytes(data)
            if k % 5 == 2:  # the tail lost: the bridge times out
                return data[:len(data) // 2]
            return data
        return fault

    model = protocol.BridgeModel(protocol.RegisterFileModel(CFG.depth), CFG.max_payload)
    rtl = HostLink(SimTransport(uart, make_fault("rtl")), timeout=CFG.host_timeout, retries=3)
    gold = HostLink(LoopbackTransport(model, tx_fault=make_fault("gold")),
                    timeout=CFG.host_timeout, retries=3)

    @bridge
    def host():
        return run_twins(rtl, gold, host_job(random.Random(2)))

    checked, mismatches = await host()
    assert not mismatches, "\n".join(mismatches)
    assert rtl.resends == gold.resends > 0
    report([f"{checked} words checked bit-exact, {rtl.resends} resends after "
            f"{calls['rtl']} requests written"])


# --- fuzz --------------------------------------------------------------------------------------

def valid_request(rng: random.Random, seq: int) -> bytes:
    words = CFG.max_payload // 4
    addr = rng.choice([rng.randrange(CFG.depth), rng.randrange(CFG.depth), CFG.depth - 1, CFG.depth,
                       rng.getrandbits(32)])
    kind = rng.randrange(4)
    if kind == 0:
        n = rng.randint(1, words - 1)
        return protocol.write_request(seq, addr, [rng.getrandbits(32) for _ in range(n)])
    if kind == 1:
        return protocol.read_request(seq, addr, rng.choice([0, 1, rng.randint(1, words),
                                                            words + 1]))
    if kind == 2:
        return protocol.exec_request(seq, addr, rng.getrandbits(32))
    return protocol.status_request(seq)


def short_reply_request(rng: random.Random, seq: int) -> bytes:
    """A request whose reply is short, so that a frame sent right behind it cannot overflow
    the receive FIFO while that reply goes out."""
    n = rng.randint(1, 4)
    return protocol.write_request(seq, rng.randrange(CFG.depth), [rng.getrandbits(32)] * n)


def random_bytes(rng: random.Random) -> bytes:
    data = bytearray(rng.getrandbits(8) for _ in range(rng.randint(1, 24)))
    for _ in range(rng.randint(0, 2)):  # sprinkle sync bytes so frames start in the noise
        pos = rng.randrange(len(data))
        data[pos:pos + 2] = protocol.SYNC[:rng.randint(1, 2)]
    return bytes(data[:24])


def fuzz_item(rng: random.Random, seq: int):
    """One (kind, action, data) item; action is 'bytes', 'framing', 'break' or 'glitch'."""
    kind = rng.choice(["noise", "truncated", "corrupted", "oversize", "unknown", "valid",
                       "framing", "break", "glitch", "pair", "bad length"])
    if kind == "noise":
        return kind, "bytes", random_bytes(rng)
    if kind == "truncated":
        frame = valid_request(rng, seq)
        return kind, "bytes", frame[:rng.randint(1, len(frame) - 1)]
    if kind == "corrupted":
        frame = bytearray(valid_request(rng, seq))
        for _ in range(rng.randint(1, 3)):
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        return kind, "bytes", bytes(frame)
    if kind == "oversize":
        length = rng.randint(CFG.max_payload + 1, 0xFFFF)
        head = protocol.SYNC + bytes([rng.choice(list(protocol.Cmd)), seq])
        return kind, "bytes", head + struct.pack("<H", length) + random_bytes(rng)
    if kind == "unknown":
        cmd = rng.choice([0x00, 0x05, 0x7F, 0x80, 0x81, 0x82, 0xFF])
        return kind, "bytes", protocol.encode_frame(cmd, seq, random_bytes(rng))
    if kind == "bad length":
        cmd = rng.choice(list(protocol.Cmd))
        return kind, "bytes", protocol.encode_frame(cmd, seq, bytes(rng.choice([1, 2, 5, 7, 9,
                                                                                  10])))
    if kind == "valid":
        return kind, "bytes", valid_request(rng, seq)
    if kind == "pair":
        return kind, "bytes", short_reply_request(rng, seq) + valid_request(rng, seq + 1)
    if kind == "framing":
        frame = valid_request(rng, seq)
        return kind, "framing", frame[:rng.randint(0, len(frame) - 1)]
    return kind, kind, b""


@cocotb.test()
async def fuzz_then_valid_job(dut):
    """Noise, truncated, corrupted, oversize, unknown and badly sized frames, framing errors,
    breaks and glitches, each answered exactly as the golden model predicts; then the whole
    register file is intact and a valid job through the host driver is exact."""
    uart = await start(dut)
    rng = random.Random(int(os.environ.get("LINK_SEED", "1")))
    items = int(os.environ.get("LINK_FUZZ_ITEMS", "100"))
    rtl, gold, model = twin_links(uart)

    @bridge
    def fill():
        pattern = [rng.getrandbits(32) for _ in range(CFG.depth)]
        rtl.write(0, pattern)
        gold.write(0, pattern)

    await fill()
    await uart.settle()
    kinds: dict[str, int] = {}
    reply_bytes = 0
    for n in range(items):
        kind, action, data = fuzz_item(rng, n & 0xFF)
        kinds[kind] = kinds.get(kind, 0) + 1
        expected = b""
        if action in ("bytes", "framing"):
            await uart.send(data)
            expected += model.feed(data)
        if action == "framing":
            await uart.send(bytes([rng.getrandbits(8)]), stop=0)
            expected += model.framing_error()
        elif action == "break":
            await uart.hold_low(30)
            expected += model.framing_error()
        elif action == "glitch":
            await uart.glitch()
        got = await uart.settle()
        expected += model.timeout()  # the settling silence outlasts the receive timeout
        reply_bytes += len(got)
        assert got == expected, (f"item {n} ({kind}) {data.hex()}: bridge replied {got.hex()}, "
                                 f"golden {expected.hex()}")

    @bridge
    def valid_job():
        status = rtl.status()  # first: its counters cover exactly what the model has seen
        intact = rtl.read(0, CFG.depth)
        job = [rng.getrandbits(32) for _ in range(CFG.depth)]
        rtl.write(0, job)
        return status, intact, job, rtl.read(0, CFG.depth)

    status, intact, job, back = await valid_job()
    assert status == protocol.Status(protocol.VERSION, CFG.max_payload, model.ok_frames,
                                     model.error_frames, 0), status
    assert intact == model.backend.words, "fuzzing changed the register file"
    assert back == job
    assert rtl.resends == 0
    report([f"{items} fuzz items ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))}), "
            f"{reply_bytes} reply bytes exact; register file intact; "
            f"status {status}; valid job of {CFG.depth} words exact"])



# --- bounds, resets and baud rates -------------------------------------------------------------

@cocotb.test()
async def never_silent_line(dut):
    """A bridge that never stops talking (a host streaming STATUS requests back to back keeps
    it answering): ``settle`` fails with ``SimulationFailed`` within its bound, no hang."""
    uart = await start(dut)

    async def chatter():
        seq = 0
        while True:
            await uart.send(protocol.status_request(seq & 0xFF))
            seq += 1

    task = cocotb.start_soon(chatter())
    began = get_sim_time("ns")
    try:
        await uart.settle()
    except SimulationFailed as error:
        message = str(error)
    else:
        raise AssertionError("settle() returned although the line never went silent")
    finally:
        task.cancel()
    cycles = round((get_sim_time("ns") - began) / CFG.link_ns)
    window = CFG.timeout_cycles + 30 * CFG.divisor
    assert settle_limit_cycles() <= cycles <= settle_limit_cycles() + window, cycles
    report([f"never-silent line: settle() failed after {cycles} cycles (bound "
            f"{settle_limit_cycles()}): {message}"])


@cocotb.test()
async def baud_mismatch(dut):
    """A host at half and at twice the top's bit rate gets no reply the driver accepts: its
    requests raise ``LinkTimeout`` (what ``bitmod run`` turns into its "no answer at N baud"
    line); back at the right rate, the same driver works at once."""
    uart = await start(dut)
    outcomes = []
    for factor in (2, 0.5):
        uart.bit_ns = round(CFG.bit_ns * factor)
        link = HostLink(SimTransport(uart), timeout=CFG.host_timeout, retries=1,
                        max_payload=CFG.max_payload)

        @bridge
        def ask(link=link):
            return outcome(lambda: link.read(0, 4))

        got = await ask()
        outcomes.append((factor, got))
        assert isinstance(got, tuple) and got[0] == LinkTimeout.__name__, (factor, got)
        uart.bit_ns = CFG.bit_ns
        await uart.settle()  # whatever the bridge made of it, it goes silent
    rtl, gold, _ = twin_links(uart)

    @bridge
    def host():
        return run_twins(rtl, gold, host_job(random.Random(4)))

    checked, mismatches = await host()
    assert not mismatches, "\n".join(mismatches)
    report([f"host at {f} x the bit period: {o[0]} ({o[1]})" for f, o in outcomes]
           + [f"at the right rate: {checked} words checked bit-exact"])


@cocotb.test()
async def reset_mid_frame(dut):
    """A reset while a request is half received, and one while a reply is half sent: the
    bridge comes back hunting, the host driver's next calls are exact against the golden twin
    (the register file's memory keeps its words; the status counters restart)."""
    uart = await start(dut)
    rtl, gold, model = twin_links(uart)

    @bridge
    def fill():
        words = [0x1000 + i for i in range(CFG.depth)]
        rtl.write(0, words)
        gold.write(0, words)

    await fill()
    await uart.settle()
    tb = uart.tb
    # 1: half a request, then reset.
    frame = protocol.write_request(9, 0, [0xDEADBEEF] * 4)
    await uart.send(frame[:len(frame) // 2])
    await tb.reset()
    # 2: a reply cut by a reset after a few bytes.
    await uart.send(protocol.read_request(10, 0, CFG.max_payload // 4))
    head = await uart.read(5, settle_limit_cycles() * CFG.link_ns * 1e-9)
    if len(head) < 5:
        raise SimulationFailed("no reply to the READ before the reset")
    uart.resetting = True
    await tb.reset()
    cut = await uart.settle()
    uart.resetting = False
    # The golden twin after the reset: the same words, fresh counters.
    model.ok_frames = model.error_frames = 0

    @bridge
    def after():
        return run_twins(rtl, gold, host_job(random.Random(3)))

    checked, mismatches = await after()
    assert not mismatches, "\n".join(mismatches)
    assert rtl.resends == 0
    report([f"reset mid-request and mid-reply ({len(head) + len(cut)} reply bytes before the "
            f"cut): {checked} words exact after, no resends"])


@cocotb.test()
async def wall_clock_guard(dut):
    """Never ends (only when ``LINK_HANG=1``): ``run_cocotb``'s wall-clock limit must kill it."""
    if os.environ.get("LINK_HANG") != "1":
        return
    await start(dut)
    while True:
        await Timer(1000 * CFG.bit_ns, "ns")

"""cocotb test of ``fpga.top.AcceleratorTop`` (UART bridge + bus adapter + core) through its
``rx``/``tx`` pins, driven by the real host code: :class:`host.accel.Accelerator` over
:class:`host.link.HostLink` over link_tb's :class:`~sim.tb.link_tb.SimTransport`.

A GEMM's output codes are compared with :func:`golden.gemm.gemm` bit for bit; then fuzz items
(noise, truncated and CRC-corrupted frames) are each answered exactly as
:class:`golden.protocol.BridgeModel` predicts, with a backend that fails the test if any of them
would reach the bus; then a second GEMM must still be exact.

Driven by ``tests/test_accel_e2e.py``: ``BITMOD_MODEL_PARAMS`` (the top's parameters),
``ACCEL_REPORT`` (a summary is written there), ``ACCEL_FUZZ_ITEMS`` and ``ACCEL_SEED``.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, RisingEdge

from bitmod.golden import core as gcore
from bitmod.golden import gemm as ggemm
from bitmod.golden import protocol
from bitmod.golden.quantize import quantize
from bitmod.host.accel import Accelerator, compare_with_golden
from bitmod.host.link import HostLink
from bitmod.sim.tb import link_tb
from bitmod.sim.tb.common import CLOCK_NS
from bitmod.sim.tb.link_tb import SimTransport


def configure() -> gcore.CoreConfig:
    """Set link_tb's UART timing from the top's link (link_tb derives it from the
    UartBridgeTestTop parameters, which name no core); returns the core's configuration.

    A split link (``core_clk_freq`` set) runs the bridge on ``link_clk``: its period is
    ``CLOCK_NS * core_clk_freq / clk_freq`` (a whole number of ns), the core's ``CLOCK_NS``.
    """
    params = json.loads(os.environ["BITMOD_MODEL_PARAMS"])
    link = protocol.LinkConfig(**link_tb._fields(params["link"]))
    cfg = link_tb.CFG
    cfg.link_clock, cfg.link_ns = "clk", CLOCK_NS
    if link.split:
        link_ns = CLOCK_NS * link.core_clk_freq / link.clk_freq
        if link_ns != int(link_ns):
            raise ValueError(f"a split link's clock period must be a whole number of ns "
                             f"here, not {link_ns}")
        cfg.link_clock, cfg.link_ns = "link_clk", int(link_ns)
    cfg.divisor = link.divisor
    cfg.bit_ns = link.divisor * cfg.link_ns
    cfg.max_payload = link.max_payload
    cfg.timeout_cycles = link.timeout_cycles
    cfg.depth = 0
    # A reply part may wait for a whole job behind a READ of ``wait``: generous.
    cfg.host_timeout = (((link.max_payload + 8) * 10 * link.divisor + 3 * link.timeout_cycles)
                        * cfg.link_ns + 50_000 * CLOCK_NS) * 1e-9
    return gcore.CoreConfig(**link_tb._fields(params["core"]))


async def start(dut) -> link_tb.UartModel:
    """link_tb's start (the core's clock and reset, the UART model), with a split top's link
    clock running and its reset held over the core's."""
    cfg = link_tb.CFG
    if cfg.link_clock == "clk":
        return await link_tb.start(dut)
    Clock(dut.link_clk, cfg.link_ns, unit="ns").start()
    dut.link_rst.value = 1
    uart = await link_tb.start(dut)
    await ClockCycles(dut.link_clk, 2)
    dut.link_rst.value = 0
    await RisingEdge(dut.link_clk)
    return uart


class NoBus(protocol.Backend):
    """The fuzz items must never reach the bus."""

    def access(self, write, addr, data):
        raise AssertionError(f"a fuzz item executed a bus {'write' if write else 'read'} at "
                             f"{addr:#x}")


def make_job(core: gcore.CoreConfig, m: int, n: int, k: int, seed: int):
    """Random int8 activations (with the sign extremes) and weights quantized as the core's
    formats need (BitMoD: ``bitmod4``, else ``int8``)."""
    rng = np.random.default_rng(seed)
    scheme = "int8" if core.formats == ("int8_sym",) else "bitmod4"
    qt = quantize(rng.standard_normal((n, k)), scheme, group_size=core.group_size,
                  scale_format="int8")
    x = rng.standard_normal((m, k)) * rng.choice([0.01, 1.0, 30.0], size=(m, 1))
    xq, _ = ggemm.quantize_activations_int8(x)
    xq[0, :2] = [-128, 127][:k]
    return xq, qt


def fuzz_item(rng: random.Random, seq: int) -> tuple[str, bytes]:
    kind = rng.choice(["noise", "truncated", "corrupted"])
    if kind == "noise":
        return kind, link_tb.random_bytes(rng)
    words = [rng.getrandbits(32) for _ in range(rng.randint(1, 4))]
    frame = rng.choice([protocol.write_request(seq, rng.getrandbits(32), words),
                        protocol.read_request(seq, rng.getrandbits(32), len(words)),
                        protocol.exec_request(seq, rng.getrandbits(32), words[0]),
                        protocol.status_request(seq)])
    if kind == "truncated":
        return kind, frame[:rng.randint(1, len(frame) - 1)]
    frame = bytearray(frame)
    # 1 to 3 flipped bits: CRC-16/CCITT detects them all at these lengths.
    for pos in rng.sample(range(2, len(frame)), rng.randint(1, 3)):
        frame[pos] ^= 1 << rng.randrange(8)
    return kind, bytes(frame)


@cocotb.test()
async def gemm_fuzz_gemm(dut):
    core = configure()
    uart = await start(dut)
    link = HostLink(SimTransport(uart), timeout=link_tb.CFG.host_timeout, retries=3)
    accel = Accelerator(link, core)
    dims = [tuple(int(v) for v in d.split("x")) for d in os.environ["ACCEL_DIMS"].split(",")]
    lines = []

    async def run_gemm(index: int, m: int, n: int, k: int):
        x, qt = make_job(core, m, n, k, seed=100 + index)

        @bridge
        def host():
            frames = accel.frames
            result = accel.gemm(x, qt)
            return result, accel.frames - frames

        start_ns = cocotb.utils.get_sim_time("ns")
        result, frames = await host()
        cycles = int((cocotb.utils.get_sim_time("ns") - start_ns) / CLOCK_NS)
        check = compare_with_golden(core, x, qt, result)
        assert check["exact"], (f"GEMM {index} {m}x{n}x{k}: {check['mismatches']} of "
                                f"{check['cases']} codes differ\nrtl {result['codes']}\n"
                                f"golden {check['expected']}")
        assert check["counters_exact"], (result["counters"], check["counters_expected"])
        lines.append(f"GEMM {index} {m}x{n}x{k}: {check['cases']} codes bit-exact, "
                     f"{frames} WRITE frames, {cycles} cycles, counters {result['counters']}")

    await run_gemm(0, *dims[0])
    await uart.settle()

    rng = random.Random(int(os.environ.get("ACCEL_SEED", "1")))
    items = int(os.environ.get("ACCEL_FUZZ_ITEMS", "30"))
    model = protocol.BridgeModel(NoBus(), link_tb.CFG.max_payload)
    kinds: dict[str, int] = {}
    for n in range(items):
        kind, data = fuzz_item(rng, n & 0xFF)
        kinds[kind] = kinds.get(kind, 0) + 1
        await uart.send(data)
        expected = model.feed(data)
        got = await uart.settle()
        expected += model.timeout()  # the settling silence outlasts the receive timeout
        assert got == expected, (f"fuzz item {n} ({kind}) {data.hex()}: replied {got.hex()}, "
                                 f"golden {expected.hex()}")
    lines.append(f"{items} fuzz items ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))}"
                 f"), {model.error_frames} error replies exact, none reached the bus")

    for index, d in enumerate(dims[1:], 1):
        await run_gemm(index, *d)
    assert link.resends == 0
    with open(os.environ["ACCEL_REPORT"], "w") as file:
        file.write("\n".join(lines) + "\n")

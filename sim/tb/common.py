"""Shared cocotb testbench pieces: a TB class owning clock and reset, and stream drivers.

Signal names follow Amaranth's flattening of stream ports: ``<name>__valid``,
``<name>__ready``, ``<name>__payload``.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

CLOCK_NS = 10


class TB:
    """Owns the DUT's clock and reset; holds static input ports from ``VECTORS_PORTS``."""

    def __init__(self, dut):
        self.dut = dut
        self.clock = Clock(dut.clk, CLOCK_NS, unit="ns")
        self.clock.start()
        for name, value in json.loads(os.environ.get("VECTORS_PORTS", "{}")).items():
            getattr(dut, name).value = value

    async def reset(self, cycles: int = 2) -> None:
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)


class CycleCounter:
    """Counts rising edges; ``cycle`` is -1 until :meth:`start_at_zero` is called."""

    def __init__(self, clk):
        self.clk = clk
        self.cycle = -1
        self._running = False

    def start_at_zero(self) -> None:
        self.cycle = 0
        if not self._running:
            self._running = True
            cocotb.start_soon(self._count())

    async def _count(self) -> None:
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1


STREAM_TIMEOUT_CYCLES = 100_000  # a stream stalled this long fails the test


def _stalled(what: str, cycles: int):
    from bitmod.sim.verilator import SimulationFailed

    return SimulationFailed(f"{what}: no transfer for {cycles} cycles")


class StreamSource:
    """Drives ``<prefix>__valid/__payload``; ``idle`` is the chance of a gap before a payload.
    A payload not taken within ``timeout_cycles`` raises ``SimulationFailed``."""

    def __init__(self, dut, prefix: str, rng: random.Random, idle: float = 0.0,
                 on_first_accept=None, timeout_cycles: int = STREAM_TIMEOUT_CYCLES):
        self.prefix = prefix
        self.timeout_cycles = timeout_cycles
        self.clk = dut.clk
        self.on_first_accept = on_first_accept
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.rng = rng
        self.idle = idle
        self.valid.value = 0

    async def send(self, payload: int) -> None:
        while self.rng.random() < self.idle:
            await RisingEdge(self.clk)
        self.valid.value = 1
        self.payload.value = payload
        # Sample ready once the cycle has settled, before the edge: the transfer happens at the
        # edge when valid and ready are both high then.
        for _ in range(self.timeout_cycles):
            await ReadOnly()
            accepted = bool(self.ready.value)
            if accepted and self.on_first_accept is not None:
                self.on_first_accept()
                self.on_first_accept = None
            await RisingEdge(self.clk)
            if accepted:
                break
        else:
            raise _stalled(f"{self.prefix} never ready", self.timeout_cycles)
        self.valid.value = 0


class StreamSink:
    """Drives ``<prefix>__ready`` (low with chance ``backpressure``) and records payloads; a
    gap of ``timeout_cycles`` without a transfer raises ``SimulationFailed``."""

    def __init__(self, dut, prefix: str, rng: random.Random, backpressure: float = 0.0,
                 timeout_cycles: int = STREAM_TIMEOUT_CYCLES):
        self.prefix = prefix
        self.timeout_cycles = timeout_cycles
        self.clk = dut.clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.rng = rng
        self.backpressure = backpressure
        self.received: list[int] = []
        self.cycles: list[int] = []  # cycle of each transfer, from the TB's cycle counter
        self.ready.value = 0

    async def run(self, count: int, clock=None) -> None:
        idle = 0
        while len(self.received) < count:
            if idle >= self.timeout_cycles:
                raise _stalled(f"{self.prefix}: {len(self.received)} of {count} payloads",
                               idle)
            self.ready.value = int(self.rng.random() >= self.backpressure)
            await ReadOnly()
            idle += 1
            if self.valid.value and self.ready.value:
                self.received.append(self.payload.value.to_unsigned())
                self.cycles.append(clock.cycle if clock is not None else -1)
                idle = 0
            await RisingEdge(self.clk)
        self.ready.value = 0


def read_ints(path: str) -> list[int]:
    with open(path) as file:
        return [int(word, 16) for word in file.read().split()]


def write_ints(path: str, values) -> None:
    with open(path, "w") as file:
        file.write("".join(f"{v:x}\n" for v in values))

"""cocotb testbench for :class:`hdl.selftest.SelfTestAdder` (checks Verilator + cocotb work)."""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer


@cocotb.test()
async def adder_matches_python(dut):
    width = int(os.environ.get("SELFTEST_WIDTH", "8"))
    rng = random.Random(1)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)  # the simulation wrapper registers rst: one more reset cycle
    for _ in range(200):
        a, b = rng.randrange(2 ** width), rng.randrange(2 ** width)
        dut.a.value = a
        dut.b.value = b
        await RisingEdge(dut.clk)
        await Timer(1, unit="ns")
        assert dut.s.value.to_unsigned() == a + b

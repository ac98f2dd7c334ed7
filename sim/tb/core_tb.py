"""cocotb test: run a command script through the accelerator core (hdl/array/core.py).

Driven by ``tests/test_core.py`` through environment variables: ``CORE_SCRIPT`` (one item per
line: a command payload in hex, or ``reset``), ``CORE_OUT`` (written: one response payload in
hex per command, in order), ``CORE_IDLE`` / ``CORE_BACKPRESSURE`` / ``CORE_SEED`` (random
idle cycles on ``i_cmd``, random ``ready`` deassertion on ``o_resp``). Before a ``reset`` the
testbench waits for every outstanding response, then holds ``rst`` for two cycles.
``CORE_TIMEOUT_CYCLES`` bounds the whole run: a hang fails the test.
"""

import os
import random

import cocotb
from cocotb.triggers import Event, ReadOnly, RisingEdge, with_timeout

from bitmod.sim.tb.common import CLOCK_NS, TB, StreamSource, write_ints


@cocotb.test()
async def core_script(dut):
    tb = TB(dut)
    with open(os.environ["CORE_SCRIPT"]) as file:
        script = file.read().split()
    seed = int(os.environ.get("CORE_SEED", "1"))
    source = StreamSource(dut, "i_cmd", random.Random(seed),
                          float(os.environ.get("CORE_IDLE", "0")))
    rng = random.Random(seed + 1)
    backpressure = float(os.environ.get("CORE_BACKPRESSURE", "0"))
    received: list[int] = []
    changed = Event()
    dut.o_resp__ready.value = 0
    await tb.reset()

    async def collect():
        while True:
            dut.o_resp__ready.value = int(rng.random() >= backpressure)
            await ReadOnly()
            if dut.o_resp__valid.value and dut.o_resp__ready.value:
                received.append(dut.o_resp__payload.value.to_unsigned())
                changed.set()
            await RisingEdge(dut.clk)

    async def drive():
        sent = 0
        for item in script:
            if item == "reset":
                while len(received) < sent:
                    changed.clear()
                    await changed.wait()
                await RisingEdge(dut.clk)  # the event fires in the read-only phase
                await tb.reset()
                continue
            await source.send(int(item, 16))
            sent += 1
        while len(received) < sent:
            changed.clear()
            await changed.wait()

    cocotb.start_soon(collect())
    timeout = int(os.environ["CORE_TIMEOUT_CYCLES"]) * CLOCK_NS
    await with_timeout(drive(), timeout, "ns")
    write_ints(os.environ["CORE_OUT"], received)

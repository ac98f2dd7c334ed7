"""cocotb test: stream vectors through a unit with random idles and backpressure.

Driven by :func:`sim.vectors.run_stream` through environment variables (``VECTORS_IN``,
``VECTORS_OUT``, ``STREAM_IDLE``, ``STREAM_BACKPRESSURE``, ``STREAM_SEED``).
"""

import os
import random

import cocotb
from cocotb.triggers import with_timeout

from bitmod.sim.tb.common import TB, CycleCounter, StreamSink, StreamSource, read_ints, write_ints


@cocotb.test()
async def stream_with_handshake_noise(dut):
    tb = TB(dut)
    inputs = read_ints(os.environ["VECTORS_IN"])
    seed = int(os.environ.get("STREAM_SEED", "1"))
    n_outputs = int(os.environ.get("VECTORS_N_OUTPUTS", len(inputs)))
    clock = CycleCounter(dut.clk)
    # Cycle 0 is the cycle in which the first input is accepted.
    source = StreamSource(dut, "i_stream", random.Random(seed),
                          float(os.environ.get("STREAM_IDLE", "0")),
                          on_first_accept=clock.start_at_zero)
    sink = StreamSink(dut, "o_stream", random.Random(seed + 1),
                      float(os.environ.get("STREAM_BACKPRESSURE", "0")))
    await tb.reset()

    async def feed():
        for value in inputs:
            await source.send(value)

    cocotb.start_soon(feed())
    # Generous bound: every case may wait for idles and backpressure; a hang fails the test.
    await with_timeout(sink.run(n_outputs, clock), 200 * (len(inputs) + 100) * 10, "ns")
    write_ints(os.environ["VECTORS_OUT"], sink.received)
    with open(os.environ["VECTORS_OUT"] + ".cycles", "w") as file:
        file.write("".join(f"{cycle}\n" for cycle in sink.cycles))

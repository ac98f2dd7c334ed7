"""cocotb test: the fast batch path of :func:`sim.vectors.run_vectors`.

Python writes ``VECTORS_BATCH`` payloads into the harness' wide ``batch_in`` register per batch,
pulses ``start`` and waits for ``done``: once per batch, not once per cycle. Each batch's cycle
count is checked: ``cycles - count`` must be the same for every batch (the unit's latency),
including a first batch of a single payload, which holds only if the unit sustains one payload
per cycle.
"""

import os

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge, Timer

from bitmod.sim.tb.common import CLOCK_NS, TB, read_ints, write_ints


@cocotb.test()
async def batches_at_full_rate(dut):
    tb = TB(dut)
    inputs = read_ints(os.environ["VECTORS_IN"])
    in_width = int(os.environ["VECTORS_IN_WIDTH"])
    out_width = int(os.environ["VECTORS_OUT_WIDTH"])
    batch = int(os.environ["VECTORS_BATCH"])
    out_mask = (1 << out_width) - 1
    await tb.reset()
    outputs: list[int] = []
    overheads = set()
    # A first batch of one payload measures the bare latency; every later batch must show the
    # same overhead, which a unit slower than one payload per cycle cannot.
    starts = [0, *range(1, len(inputs), batch)] if inputs else []
    for first, end in zip(starts, [*starts[1:], len(inputs)], strict=True):
        chunk = inputs[first:end]
        packed = 0
        for index, value in enumerate(chunk):
            packed |= value << (index * in_width)
        dut.batch_in.value = packed
        dut.count.value = len(chunk)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        # Sleep through the expected run in one go, then poll the few remaining cycles.
        await Timer(len(chunk) * CLOCK_NS, unit="ns")
        for _ in range(10_000):
            await ReadOnly()
            if dut.done.value:
                break
            await RisingEdge(dut.clk)
        else:
            raise AssertionError(f"batch at case {first} never finished: the unit hangs")
        cycles = dut.cycles.value.to_unsigned()
        overheads.add(cycles - len(chunk))
        word = dut.batch_out.value.to_unsigned() >> ((batch - len(chunk)) * out_width)
        outputs.extend((word >> (i * out_width)) & out_mask for i in range(len(chunk)))
        await RisingEdge(dut.clk)
    assert len(overheads) <= 1, f"cycles per batch vary ({sorted(overheads)}): not 1 per cycle"
    write_ints(os.environ["VECTORS_OUT"], outputs)
    if overheads:
        with open(os.environ["VECTORS_OUT"] + ".overhead", "w") as file:
            file.write(f"{overheads.pop()}\n")

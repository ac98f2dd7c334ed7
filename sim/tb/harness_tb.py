"""cocotb engine of :mod:`sim.harness`: runs a transaction script with the compiled harness's
rules (the same directives, the same per-cycle order, the same SplitMix64 draws), so that both
engines give identical transactions and cycle stamps.

Driven by :func:`sim.harness.run_script_cocotb` through environment variables:
``HARNESS_SCRIPT``, ``HARNESS_OUT`` (written in the harness's output format),
``HARNESS_PORTS`` (the :class:`sim.harness.HarnessPorts` as JSON), ``HARNESS_SEED``,
``HARNESS_IDLE``, ``HARNESS_BACKPRESSURE``, ``HARNESS_TIMEOUT`` (cycles).
"""

import collections
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from bitmod.sim.harness import SplitMix64, parse_script

CLOCK_NS = 10


@cocotb.test()
async def run_script(dut):
    ports = json.loads(os.environ["HARNESS_PORTS"])
    ins = [p["name"] for p in ports["inputs"]]
    outs = [p["name"] for p in ports["outputs"]]
    if ports["uart_divisor"]:
        raise NotImplementedError("the cocotb engine does not drive UART pins")
    with open(os.environ["HARNESS_SCRIPT"]) as file:
        items = parse_script(file.read())
    rng = SplitMix64(int(os.environ["HARNESS_SEED"]))
    idle = float(os.environ["HARNESS_IDLE"])
    backpressure = float(os.environ["HARNESS_BACKPRESSURE"])
    timeout = int(os.environ["HARNESS_TIMEOUT"])
    signal = {name: getattr(dut, name) for name in
              [f"{s}__{f}" for s in ins + outs for f in ("valid", "ready", "payload")]}
    queues = [collections.deque() for _ in ins]
    offering = [False] * len(ins)
    first = [-1] * len(ins)
    taken = [0] * len(ins)
    counts = [0] * len(outs)
    lines = []
    dut.rst.value = 0
    for name in ins:
        signal[f"{name}__valid"].value = 0
    # Low first: the first rising edge is cycle 0's, as in the compiled harness.
    Clock(dut.clk, CLOCK_NS, unit="ns").start(start_high=False)
    pc = reset_left = cycle = 0
    while True:
        while pc < len(items) and not reset_left:
            op, arg, value = items[pc]
            if op == "put":
                queues[arg].append(value)
            elif op == "set":
                getattr(dut, arg).value = value
            elif op == "wait":
                if counts[arg] < value:
                    break
            elif op == "reset":
                if any(offering) or any(queues):
                    break
                reset_left = value + 1  # + 1: the wrapper's register
                pc += 1
                break
            pc += 1
        pending = reset_left > 0 or any(offering) or any(queues)
        if pc == len(items) and not pending:
            break
        if cycle >= timeout:
            raise AssertionError(f"timeout: no progress after {cycle} cycles (script item "
                                 f"{pc} of {len(items)})")
        dut.rst.value = int(reset_left > 1)
        ready = []
        for name in outs:
            ready.append(not rng.below(backpressure) if backpressure else True)
            signal[f"{name}__ready"].value = int(ready[-1])
        for i, name in enumerate(ins):
            if not offering[i] and queues[i] and not (idle and rng.below(idle)):
                offering[i] = True
                signal[f"{name}__payload"].value = queues[i][0]
            signal[f"{name}__valid"].value = int(offering[i])
        await ReadOnly()
        took = [offering[i] and bool(signal[f"{name}__ready"].value)
                for i, name in enumerate(ins)]
        for i, name in enumerate(outs):
            if ready[i] and signal[f"{name}__valid"].value:
                lines.append(f"{i} {cycle} {signal[f'{name}__payload'].value.to_unsigned():x}")
                counts[i] += 1
        await RisingEdge(dut.clk)
        for i, accepted in enumerate(took):
            if accepted:
                first[i] = cycle if first[i] < 0 else first[i]
                taken[i] += 1
                queues[i].popleft()
                offering[i] = False
        if reset_left:
            reset_left -= 1
        cycle += 1
    lines += [f"in {i} {first[i]} {taken[i]}" for i in range(len(ins))]
    lines.append(f"cycles {cycle}")
    with open(os.environ["HARNESS_OUT"], "w") as file:
        file.write("\n".join(lines) + "\n")

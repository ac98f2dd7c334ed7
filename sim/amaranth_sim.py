"""Helpers for fast unit tests in the Amaranth simulator (``sim.add_testbench`` with async ctx).

Typical use::

    dut = FixedCast(...)

    async def testbench(ctx):
        await stream_put(ctx, dut.i_stream, {"value": 5})
        assert await stream_get(ctx, dut.o_stream) == ...

    run_simulation(dut, [testbench])

Waveforms are written when ``BITMOD_WAVES=1`` (VCD into ``build/waves/<name>.vcd``).
"""

from __future__ import annotations

import numbers
import os
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from amaranth import Elaboratable, Module, ResetInserter, Signal, Value
from amaranth.sim import Simulator

__all__ = ["measure_latency", "run_script_amaranth", "run_simulation", "stream_get", "stream_put",
           "stream_through"]


async def stream_put(ctx, stream, payload) -> None:
    """Offer ``payload`` on ``stream`` (valid high) until the receiver takes it (ready high)."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Accept one transfer from ``stream`` (ready high until valid) and return its payload."""
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def run_simulation(dut, testbenches: Iterable[Callable[..., Awaitable[None]]], *,
                   processes: Iterable[Callable[..., Awaitable[None]]] = (),
                   clock_period: float = 1e-8, name: str | None = None,
                   deadline: float | None = None,
                   other_clocks: Mapping[str, float] | None = None) -> None:
    """Simulate ``dut`` with a sync clock and the given async testbenches until they return.

    ``deadline`` (seconds of simulated time) makes a hung testbench fail instead of looping;
    ``other_clocks`` (domain name -> period in seconds) clocks more domains of ``dut``.
    """
    simulator = Simulator(dut)
    simulator.add_clock(clock_period)
    for domain, period in (other_clocks or {}).items():
        simulator.add_clock(period, domain=domain)
    for testbench in testbenches:
        simulator.add_testbench(testbench)
    for process in processes:
        simulator.add_process(process)
    if os.environ.get("BITMOD_WAVES", "").lower() in ("1", "yes", "true"):
        from bitmod.toolchain import build_root

        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or type(dut).__name__)
        path = build_root() / "waves" / f"{label}.vcd"
        path.parent.mkdir(parents=True, exist_ok=True)
        with simulator.write_vcd(str(path)):
            _run(simulator, deadline)
    else:
        _run(simulator, deadline)


def _run(simulator: Simulator, deadline: float | None) -> None:
    if deadline is not None:
        # A process is not critical: it cannot keep the simulation alive, but it fires if a
        # testbench is still running (hung) when the deadline comes.
        async def watchdog(ctx):
            await ctx.delay(deadline)
            raise AssertionError(f"simulation still running after {deadline} s of simulated time")

        simulator.add_process(watchdog)
    simulator.run()


def measure_latency(dut, payload, *, lead_in: Sequence = (), deadline: float = 1e-4):
    """Measure ``dut``'s latency on one payload: returns ``(cycles, output_payload)``.

    With ``o_stream.ready`` held high, offers ``payload`` on ``i_stream`` (after the payloads
    of ``lead_in``, for units that need several inputs per output) and counts the cycles from
    the edge that accepts it to the first cycle with ``o_stream.valid`` high: 1 for a single
    register stage, i.e. the ``latency`` a unit declares. ``output_payload`` is
    ``o_stream.payload`` in that cycle (``ctx.get``'s value: a ``data.Const`` for a layout, an
    int for a plain shape). A payload may be given as an int (the raw bits) or as anything
    ``ctx.set`` takes for the payload's shape. A pipelined unit out of reset must accept the
    first payload offered at once; ``AssertionError`` if it does not, or if no output comes
    within ``deadline`` seconds of simulated time.
    """
    seen = []

    def put(ctx, value):
        if isinstance(value, numbers.Integral):
            ctx.set(Value.cast(dut.i_stream.payload), int(value))
        else:
            ctx.set(dut.i_stream.payload, value)
        ctx.set(dut.i_stream.valid, 1)

    async def testbench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for index, value in enumerate([*lead_in, payload]):
            put(ctx, value)
            if index == 0:
                assert ctx.get(dut.i_stream.ready), "the unit is not ready out of reset"
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)
        cycles = 1
        while not ctx.get(dut.o_stream.valid):
            await ctx.tick()
            cycles += 1
        seen.append((cycles, ctx.get(dut.o_stream.payload)))

    run_simulation(dut, [testbench], deadline=deadline)
    return seen[0]


def stream_through(dut, payloads, *, idle: float = 0.0, backpressure: float = 0.0,
                   seed: int = 0, deadline: float = 1e-2) -> list:
    """Send ``payloads`` through ``dut``'s ``i_stream`` and collect as many from ``o_stream``.

    ``idle`` is the chance of a gap cycle before each payload, ``backpressure`` the chance that
    ``o_stream.ready`` is low in a cycle (both seeded by ``seed``), so a unit is shown to keep
    every result, in order, under any handshake pattern. Returns the output payloads as sampled.
    """
    for name, value in (("idle", idle), ("backpressure", backpressure)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), not {value}")
    payloads = list(payloads)
    rng = random.Random(seed)
    received = []

    async def producer(ctx):
        for payload in payloads:
            while rng.random() < idle:
                await ctx.tick()
            await stream_put(ctx, dut.i_stream, payload)

    async def consumer(ctx):
        while len(received) < len(payloads):
            ready = rng.random() >= backpressure
            ctx.set(dut.o_stream.ready, ready)
            *_, valid, payload = await ctx.tick().sample(dut.o_stream.valid,
                                                        dut.o_stream.payload)
            if ready and valid:
                received.append(payload)

    run_simulation(dut, [producer, consumer], deadline=deadline)
    return received


class _RegisteredReset(Elaboratable):
    """The harnesses' wrapper in the Amaranth simulator: the DUT's reset through a register
    (initial value 1), driven by ``rst``."""

    def __init__(self, dut):
        self.dut = dut
        self.rst = Signal()

    def elaborate(self, platform):
        m = Module()
        rst_q = Signal(init=1)
        m.d.sync += rst_q.eq(self.rst)
        m.submodules.dut = ResetInserter(rst_q)(self.dut)
        return m


def run_script_amaranth(dut, script, *, seed: int = 1, idle: float = 0.0,
                        backpressure: float = 0.0, timeout_cycles: int,
                        stop_after: int | None = None):
    """Run a :class:`sim.harness.Script` on ``dut`` in Amaranth's simulator, by the rules of
    the compiled harness (the same per-cycle order and SplitMix64 draws, so the same
    transactions and stamps), the third engine of :mod:`sim.harness`.

    ``stop_after`` ends the run after that many cycles without failing (a partial run, for
    speed measurements of jobs too long for this simulator); ``timeout_cycles`` fails the run.
    Returns a :class:`sim.harness.HarnessRun` (its ``seconds``: the wall time).
    """
    import time

    from .harness import HarnessRun, SplitMix64, parse_script, ports_of

    ports = ports_of(dut)
    if ports.uart_divisor:
        raise NotImplementedError("the Amaranth engine does not drive UART pins")
    top = _RegisteredReset(dut)
    ins = [getattr(dut, p.name) for p in ports.inputs]
    outs = [getattr(dut, p.name) for p in ports.outputs]
    items = parse_script(script.text())
    rng = SplitMix64(seed)
    outputs = {p.name: [] for p in ports.outputs}
    state = {"cycles": 0, "first": [-1] * len(ins), "taken": [0] * len(ins)}

    async def testbench(ctx):
        queues = [[] for _ in ins]
        heads = [0] * len(ins)
        offering = [False] * len(ins)
        pc = reset_left = cycle = 0
        while stop_after is None or cycle < stop_after:
            while pc < len(items) and not reset_left:
                op, arg, value = items[pc]
                if op == "put":
                    queues[arg].append(value)
                elif op == "set":
                    ctx.set(getattr(dut, arg), value)
                elif op == "wait":
                    if len(outputs[ports.outputs[arg].name]) < value:
                        break
                elif op == "reset":
                    if any(offering) or any(h < len(q) for h, q in zip(heads, queues,
                                                                        strict=True)):
                        break
                    reset_left = value + 1
                    pc += 1
                    break
                pc += 1
            pending = reset_left > 0 or any(offering) or any(
                h < len(q) for h, q in zip(heads, queues, strict=True))
            if pc == len(items) and not pending:
                break
            if cycle >= timeout_cycles:
                raise AssertionError(f"timeout: no progress after {cycle} cycles")
            ctx.set(top.rst, reset_left > 1)
            ready = []
            for stream in outs:
                ready.append(not rng.below(backpressure) if backpressure else True)
                ctx.set(stream.ready, ready[-1])
            for i, stream in enumerate(ins):
                if not offering[i] and heads[i] < len(queues[i]) and not (
                        idle and rng.below(idle)):
                    offering[i] = True
                    ctx.set(Value.cast(stream.payload), queues[i][heads[i]])
                ctx.set(stream.valid, offering[i])
            took = [offering[i] and ctx.get(stream.ready) for i, stream in enumerate(ins)]
            for i, stream in enumerate(outs):
                if ready[i] and ctx.get(stream.valid):
                    mask = (1 << ports.outputs[i].width) - 1  # flat bits, as the harness writes
                    outputs[ports.outputs[i].name].append(
                        (cycle, int(ctx.get(Value.cast(stream.payload))) & mask))
            await ctx.tick()
            for i, accepted in enumerate(took):
                if accepted:
                    if state["first"][i] < 0:
                        state["first"][i] = cycle
                    state["taken"][i] += 1
                    heads[i] += 1
                    offering[i] = False
            if reset_left:
                reset_left -= 1
            cycle += 1
        state["cycles"] = cycle

    started = time.monotonic()
    simulator = Simulator(top)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    inputs = {p.name: (state["first"][i], state["taken"][i])
              for i, p in enumerate(ports.inputs)}
    return HarnessRun(outputs, inputs, state["cycles"], 0, time.monotonic() - started)

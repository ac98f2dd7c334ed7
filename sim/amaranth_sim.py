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

import os
import re
from collections.abc import Awaitable, Callable, Iterable

from amaranth.sim import Simulator

__all__ = ["run_simulation", "stream_get", "stream_put"]


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
                   deadline: float | None = None) -> None:
    """Simulate ``dut`` with a sync clock and the given async testbenches until they return.

    ``deadline`` (seconds of simulated time) makes a hung testbench fail instead of looping.
    """
    simulator = Simulator(dut)
    simulator.add_clock(clock_period)
    for testbench in testbenches:
        simulator.add_testbench(testbench)
    for process in processes:
        simulator.add_process(process)
    if os.environ.get("BITMOD_WAVES", "").lower() in ("1", "yes", "true"):
        from .verilator import build_root

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

"""Drive the accelerator core (hdl/array/core.py) under Verilator with a command script.

:func:`run_script` sends a list of commands (``(op, addr, data)`` tuples, or ``"reset"``)
through the core's ``i_cmd`` stream and returns one ``(status, data)`` response per command and
its cycle stamp; :func:`run_core_gemm` is a whole job: load the weights and activations, run,
read every output and the performance counters. Both run on the compiled harness by default
(:mod:`sim.harness`: one process for the whole script) or on the cocotb engine
(``engine="cocotb"``), with identical responses and stamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitmod.golden import core as gcore
from bitmod.hdl.array.core import AcceleratorCore

from .harness import Script, run_script_cocotb
from .harness import run_script as run_harness
from .verilator import get_model

__all__ = ["CoreRun", "core_script", "run_core_gemm", "run_script"]

RESET_CYCLES = 2


def core_script(mp: gcore.CoreConfig, items) -> Script:
    """The transaction script of ``items``: commands on stream 0, and for each ``"reset"`` a
    barrier on every response so far followed by a reset; ends waiting for every response.

    ``items`` is a list of ``(op, addr, data)`` tuples and ``"reset"`` markers, or three arrays
    ``(ops, addrs, data)`` (:func:`golden.core.load_arrays`) for a script without resets."""
    script = Script().reset(RESET_CYCLES)
    if isinstance(items, tuple) and len(items) == 3 and isinstance(items[0], np.ndarray):
        payloads = gcore.pack_commands(mp, *items)
        return script.put(0, payloads.tolist()).wait(0, len(payloads))
    sent = 0
    for item in items:
        if item == "reset":
            script.wait(0, sent).reset(RESET_CYCLES)
        else:
            script.put(0, [gcore.pack_command(mp, *item)])
            sent += 1
    return script.wait(0, sent)


@dataclass
class CoreRun:
    """Responses ``(status, data)`` in command order, their cycle stamps, the cycles and wall
    seconds of the simulation and the model (for its build time)."""

    responses: list[tuple[int, int]]
    stamps: list[int]
    cycles: int
    seconds: float
    model: object


def run_script(config: gcore.CoreConfig, items, *, idle: float = 0.0,
               backpressure: float = 0.0, seed: int = 1, timeout_cycles: int,
               engine: str = "harness", waves=None) -> CoreRun:
    """Run ``items`` through the Verilator model of ``AcceleratorCore(config)``.

    ``timeout_cycles`` bounds the run: a hang fails instead of waiting forever. ``idle`` and
    ``backpressure`` are the probabilities of an idle cycle before a command and of
    ``o_resp.ready`` low in a cycle (seeded: the same cycles in both engines).
    """
    model = get_model(AcceleratorCore, config, engine=engine,
                      waves=True if waves is not None else None)
    script = core_script(config, items)
    options = dict(seed=seed, idle=idle, backpressure=backpressure,
                   timeout_cycles=timeout_cycles)
    if engine == "harness":
        result = run_harness(model, script, waves=waves, **options)
    else:
        result = run_script_cocotb(model, script, **options)
    mask, bits = (1 << gcore.STATUS_BITS) - 1, gcore.STATUS_BITS  # gcore.unpack_response, inline
    responses = [(v & mask, v >> bits) for v in result.values("o_resp")]
    return CoreRun(responses, result.stamps("o_resp"), result.cycles, result.seconds, model)


def run_core_gemm(config: gcore.CoreConfig, x, qt, *, engine: str = "harness",
                  waves=None) -> dict:
    """One job on the core: returns ``codes`` (uint32 output codes [M, N]), ``counters``
    (cycles, busy_pe_cycles, stall_cycles as the RTL counted them), ``commands``, the whole
    run's DUT ``cycles``, the simulation's wall ``seconds`` and the Verilator ``model``. Raises
    ``AssertionError`` if any command got an error status."""
    mp = config
    m, k = np.shape(x)
    n = qt.shape[0]
    tail = gcore.run_commands(m, n, k) + gcore.read_commands(mp, m, n)
    load = gcore.load_arrays(mp, x, qt)
    arrays = tuple(np.concatenate([part, [c[i] if i else gcore.OPS[c[0]] for c in tail]])
                   for i, part in enumerate(load))
    items = len(arrays[0])
    # Generous: every command a few cycles, the job itself by the cycle model, times 4.
    job = gcore.job_counters(mp, m, n, k)["cycles"]
    run = run_script(config, arrays, timeout_cycles=4 * (items * 4 + job) + 10_000,
                     engine=engine, waves=waves)
    status_names = {code: name for name, code in gcore.STATUS.items()}
    op_names = {code: name for name, code in gcore.OPS.items()}
    failed = [(op_names[int(arrays[0][i])], int(arrays[1][i]), status_names.get(s, s))
              for i, (s, _) in enumerate(run.responses) if s != gcore.STATUS["ok"]]
    if failed or len(run.responses) != items:
        raise AssertionError(f"{len(failed)} commands failed, first: {failed[:1]}")
    data = [d for _, d in run.responses]
    n_counters = len(gcore.COUNTERS)
    outputs = np.array(data[items - 2 * n_counters - m * n:items - 2 * n_counters],
                       dtype=np.uint64).reshape(m, n)
    halves = data[items - 2 * n_counters:]
    counters = {name: halves[2 * i] | halves[2 * i + 1] << 32
                for name, i in gcore.COUNTERS.items()}
    return {"codes": outputs.astype(np.uint32), "counters": counters, "commands": items,
            "cycles": run.cycles, "seconds": run.seconds, "model": run.model}

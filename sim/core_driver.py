"""Drive the accelerator core (hdl/array/core.py) under Verilator with a command script.

:func:`run_script` sends a list of commands (``(op, addr, data)`` tuples, or ``"reset"``)
through the core's ``i_cmd`` stream with the cocotb testbench ``sim.tb.core_tb`` and returns
one ``(status, data)`` response per command. :func:`run_core_gemm` is a whole job: load the
weights and activations, run, read every output and the performance counters.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from bitmod.golden import core as gcore
from bitmod.hdl.array.core import AcceleratorCore
from bitmod.sim.verilator import get_model, run_cocotb

__all__ = ["encode", "run_core_gemm", "run_script"]


def encode(mp: gcore.CoreConfig, items) -> list[str]:
    """Hex command payloads (and ``reset`` markers) as the testbench reads them."""
    out = []
    for item in items:
        if item == "reset":
            out.append("reset")
        else:
            out.append(format(gcore.pack_command(mp, *item), "x"))
    return out


def run_script(config: gcore.CoreConfig, items, *, idle: float = 0.0,
               backpressure: float = 0.0, seed: int = 1,
               timeout_cycles: int) -> tuple[list[tuple[int, int]], object]:
    """Run ``items`` through the Verilator model of ``AcceleratorCore(config)``.

    Returns the responses ``(status, data)`` in order and the model (for its build time).
    ``timeout_cycles`` bounds the run: a hang fails instead of waiting forever.
    """
    model = get_model(AcceleratorCore, config)
    mp = config
    with tempfile.TemporaryDirectory(dir=model.build_dir) as scratch:
        script, out = Path(scratch) / "script.txt", Path(scratch) / "responses.hex"
        script.write_text("\n".join(encode(mp, items)) + "\n")
        run_cocotb(model, "bitmod.sim.tb.core_tb",
                   run_name=f"core-{os.getpid()}-{Path(scratch).name}",
                   env={"CORE_SCRIPT": str(script), "CORE_OUT": str(out),
                        "CORE_IDLE": str(idle), "CORE_BACKPRESSURE": str(backpressure),
                        "CORE_SEED": str(seed), "CORE_TIMEOUT_CYCLES": str(timeout_cycles)})
        words = [int(v, 16) for v in out.read_text().split()]
    return [gcore.unpack_response(w) for w in words], model


def run_core_gemm(config: gcore.CoreConfig, x, qt) -> dict:
    """One job on the core: returns ``codes`` (uint32 FP32 codes [M, N]), ``counters``
    (cycles, busy_pe_cycles, stall_cycles as the RTL counted them), ``commands`` and the
    Verilator ``model``. Raises ``AssertionError`` if any command got an error status."""
    mp = config
    m, k = np.shape(x)
    n = qt.shape[0]
    items = (gcore.load_commands(mp, x, qt) + gcore.run_commands(m, n, k)
             + gcore.read_commands(mp, m, n))
    # Generous: every command a few cycles, the job itself by the cycle model, times 4.
    job = gcore.job_counters(mp, m, n, k)["cycles"]
    responses, model = run_script(config, items, timeout_cycles=4 * (len(items) * 4 + job)
                                  + 10_000)
    names = {code: name for name, code in gcore.STATUS.items()}
    failed = [(item, names.get(status, status)) for item, (status, _)
              in zip(items, responses, strict=True) if status != gcore.STATUS["ok"]]
    if failed:
        raise AssertionError(f"{len(failed)} commands failed, first: {failed[0]}")
    data = [d for _, d in responses]
    n_counters = len(gcore.COUNTERS)
    outputs = np.array(data[len(items) - 2 * n_counters - m * n:len(items) - 2 * n_counters],
                       dtype=np.uint64).reshape(m, n)
    halves = data[len(items) - 2 * n_counters:]
    counters = {name: halves[2 * i] | halves[2 * i + 1] << 32
                for name, i in gcore.COUNTERS.items()}
    return {"codes": outputs.astype(np.uint32), "counters": counters, "commands": len(items),
            "model": model}

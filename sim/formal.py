"""Formal proofs of Amaranth designs with SymbiYosys (``yowasp-sby``) and z3.

A design states its properties with ``amaranth.hdl.Assert``/``Assume`` statements; it is exported
to RTLIL (which keeps them as ``$check`` cells) and handed to sby in ``prove`` mode (k-induction)
or ``bmc`` mode. :func:`prove` returns a :class:`ProofResult`; it never raises on a failed proof,
so a test can also show that a broken design *is* caught.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bitmod.toolchain import apply_tool_environment, find_tool

__all__ = ["ProofResult", "prove"]


@dataclass
class ProofResult:
    """Outcome of one sby run.

    ``status`` is ``"PASS"`` (proved), ``"FAIL"`` (a counterexample within the depth),
    ``"UNKNOWN"`` (induction did not close at this depth: no proof, no counterexample) or
    ``"ERROR"`` (the tools did not run).
    """

    status: str
    workdir: Path
    seconds: float
    log_tail: str

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


def prove(design, workdir: Path, *, mode: str = "prove", depth: int = 2,
          ports=None, timeout: float = 600.0) -> ProofResult:
    """Prove every ``Assert`` of ``design`` (an Amaranth elaboratable) holds.

    Parameters
    ----------
    design : Elaboratable
        Top of the proof; its ``Assert``/``Assume`` statements are the properties.
    workdir : Path
        Folder for the RTLIL, the ``.sby`` file and sby's output (recreated).
    mode : str
        ``"prove"`` (unbounded, k-induction) or ``"bmc"`` (bounded to ``depth`` cycles).
    depth : int
        Induction length or BMC depth in cycles.
    ports : list, optional
        Top ports for the RTLIL export (needed for a plain ``Elaboratable``).
    """
    if mode not in ("prove", "bmc"):
        raise ValueError(f"mode must be 'prove' or 'bmc', not {mode!r}")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    from amaranth.back import rtlil

    apply_tool_environment()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(design, name="top", ports=ports))
    (workdir / "proof.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\n\n"
        f"[engines]\nsmtbmc z3\n\n"
        f"[script]\nread_rtlil top.il\nprep -top top\n\n"
        f"[files]\ntop.il\n")
    command = [find_tool("sby"), "-f", "--yosys", find_tool("yosys"), "--smtbmc",
               find_tool("yosys-smtbmc"), "-d", "run", "proof.sby"]
    started = time.monotonic()
    try:
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                                timeout=timeout, check=False)
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired:
        return ProofResult("ERROR", workdir, time.monotonic() - started, "timed out")
    status_file = workdir / "run" / "status"
    status = status_file.read_text().split()[0] if status_file.exists() else "ERROR"
    if status not in ("PASS", "FAIL", "UNKNOWN"):
        status = "ERROR"
    tail = "\n".join(output.strip().splitlines()[-8:])
    return ProofResult(status, workdir, time.monotonic() - started, tail)

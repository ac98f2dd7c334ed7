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
          ports=None, timeout: float = 600.0, skip: int = 0, presat: bool = True,
          map_memories: bool = False) -> ProofResult:
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
    timeout : float
        Seconds before sby is stopped (the result is then ``"ERROR"``).
    skip : int
        ``bmc`` only: check no assertion in the first ``skip`` cycles (sby's ``skip``
        option). A counterexample that needs a long input sequence (a whole frame) is found
        much faster when the solver is not asked at every shorter depth; assumptions still
        hold in every cycle.
    presat : bool
        Check in every step that the assumptions can hold before checking the assertions
        (``yosys-smtbmc --presat``): guards a PASS against contradictory assumptions. A run
        that is to find a counterexample can turn it off (a FAIL shows them satisfiable);
        it is about a third of such a run.
    map_memories : bool
        Turn memories into flip-flops (yosys ``memory_map``) instead of SMT arrays: faster
        for a few small memories (measured on the bridge's FIFO and payload buffer), but a
        flip-flop per bit of a large buffer.
    """
    if mode not in ("prove", "bmc"):
        raise ValueError(f"mode must be 'prove' or 'bmc', not {mode!r}")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    if not 0 <= skip < depth or (skip and mode != "bmc"):
        raise ValueError(f"skip must be in 0..depth-1 and only with mode='bmc', not {skip}")
    from amaranth.back import rtlil

    apply_tool_environment()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(design, name="top", ports=ports))
    options = f"mode {mode}\ndepth {depth}\n" + (f"skip {skip}\n" if skip else "")
    engine = "smtbmc z3" if presat else "smtbmc --nopresat z3"
    script = "read_rtlil top.il\nprep -top top\n" + ("memory_map\n" if map_memories else "")
    (workdir / "proof.sby").write_text(
        f"[options]\n{options}\n[engines]\n{engine}\n\n[script]\n{script}\n"
        "[files]\ntop.il\n")
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

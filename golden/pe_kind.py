"""PE kinds: what the array and its models need to know about the PE every position holds.

A PE kind is one golden file (its value and cycle models, and a :class:`PEKind` describing it),
one RTL file (the PE, with a ``for_array(config)`` constructor) and one entry in the component
registry (``hdl/registry.py``, whose ``pe_kind`` field names the kind). Everything else, the
array's edge logic, the core, the cycle model, the host protocol and the command line, reads the
kind through :data:`golden.gemm.PE_KINDS` and :meth:`golden.gemm.ArrayConfig.kind`.

The description is a set of functions of the array configuration
(:class:`golden.gemm.ArrayConfig`, duck-typed here so that this module imports nothing):

* ``operand``: what the column tops feed every lane: ``"terms"`` (the term encoders' signed
  power-of-two terms, one term of every lane per cycle, with the term index ``t``: the PE's
  payload fields ``terms`` and ``t``) or ``"codes"`` (the raw two's-complement weight codes,
  one weight-step per cycle: the payload field ``weights``);
* ``cycles_per_step(cfg)``: ``T``, cycles one weight-step of ``L`` weights takes in every PE;
* ``dequant_cycles(cfg)``: ``D``, the fewest cycles between two group ends that keep the PE from
  stalling (the serializer spaces group ends by it);
* ``latency(cfg)``: cycles from the PE accepting a tile's last payload to its output valid;
* ``acc_width(cfg)``: the PE's output accumulator width (the drain takes it whole);
* ``scale``: how the group-scale code reaches the PE: ``"multiply"`` (the payload field
  ``scale``: the PE multiplies the group sum by the code) or ``"shift"`` (the code must be a
  power of two ``2**j``; the column top sends ``j`` and the PE shifts by ``j`` plus the row's
  group shift, in its payload field ``exp``);
* ``check(cfg)``: raises ``ValueError`` naming what of the configuration (weight formats,
  activation width) the kind cannot run.

The functions are module-level (pickle-free configs carry the kind's *name*, not this object).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["OPERANDS", "SCALES", "PEKind"]

OPERANDS = ("terms", "codes")
SCALES = ("multiply", "shift")


@dataclass(frozen=True)
class PEKind:
    """One PE kind the array can hold (module docstring).

    Attributes
    ----------
    name : str
        The kind's name (``--pe NAME``; its index in :data:`golden.gemm.PE_KINDS` is the host
        protocol's PE-kind code).
    summary : str
        One line for help texts and docs tables.
    operand : {"terms", "codes"}
        What the column tops feed every lane.
    cycles_per_step, dequant_cycles, latency, acc_width : callable
        Functions of the array configuration returning an int.
    check : callable
        ``check(cfg)``: ``ValueError`` naming what the kind cannot run.
    scale : {"multiply", "shift"}
        How the group-scale code reaches the PE.
    """

    name: str
    summary: str
    operand: str
    cycles_per_step: Callable[[Any], int]
    dequant_cycles: Callable[[Any], int]
    latency: Callable[[Any], int]
    acc_width: Callable[[Any], int]
    check: Callable[[Any], None]
    scale: str = "multiply"

    def __post_init__(self):
        if self.operand not in OPERANDS:
            raise ValueError(f"PE kind {self.name!r}: operand must be one of {OPERANDS}, not "
                             f"{self.operand!r}")
        if self.scale not in SCALES:
            raise ValueError(f"PE kind {self.name!r}: scale must be one of {SCALES}, not "
                             f"{self.scale!r}")

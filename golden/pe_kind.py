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
  one weight-step per cycle: the payload field ``weights``) or ``"planes"`` (the bit-planes
  of the codes, one plane of every lane per cycle, most significant first, ``B`` cycles per
  weight-step: the payload fields ``plane`` and ``step_last``, set with the step's last plane;
  the planes are those of the plain code for unsigned formats and of the offset-binary code
  ``w + 2**(B-1)``, the code with its top bit inverted, for signed ones,
  :func:`golden.pe_lut.plane_codes`) or ``"bitplanes"`` (the bit-plane PE's plane pairs: in
  cycle ``t`` of the step's ``T = P_w * P_a`` plane bit of weight plane ``i(t)`` of every lane,
  :func:`golden.pe_bitplane.pair_schedule` order, with the pair's ``negate`` and ``shift`` and
  ``step_last``: the payload fields ``w_plane``, ``negate``, ``shift``, ``step_last``);
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
  activation width) the kind cannot run;
* ``row_operand``: what the row edge feeds the PEs of a row: ``"acts"`` (the row front end's
  ``L`` activations: the payload field ``acts``) or ``"tables"`` (the ``L / g`` half tables
  and the correction a :class:`hdl.pe.lut_table.LutTableBuilder` per row makes of them,
  :func:`golden.pe_lut.table_builder`: the payload fields ``tables`` and ``corr``; the
  correction rides with the step's last plane, 0 with the others), built once per row and
  shared by its ``C`` PEs; or ``"planes"`` (the row front end's activations, of which the
  column tops send activation plane ``j(t)`` of the ``L`` lanes in cycle ``t``: the payload
  field ``a_plane``; the row word changes every cycle);
* ``row_latency(cfg)``: register stages the row edge adds after the row front end for this
  kind (the table builders: :func:`golden.pe_lut.builder_latency`); 0 for ``"acts"``. It is
  part of :attr:`golden.gemm.ArrayConfig.front_end_latency`, so the cycle model counts it.

* ``zero_points``: whether the PE takes an asymmetric scheme's zero points as MixPE's per-group
  correction (:class:`golden.gemm.ArrayConfig` ``zero_points``): one more lane in the PE, whose
  weight is the group's zero point ``z`` (its terms, in the step that ends the group) and whose
  activation is the negated group sum of the row's activations ``-sum_k a_k``, which the row
  front end computes once per row. Kinds without it run asymmetric schemes with the zero point
  folded into wider signed codes (:func:`golden.gemm.core_tensor`).

``row_operand``, ``row_latency`` and ``zero_points`` default to ``"acts"``, 0 and False (the
kinds whose PEs take the activations themselves and no zero points).

The functions are module-level (pickle-free configs carry the kind's *name*, not this object).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["OPERANDS", "ROW_OPERANDS", "SCALES", "PEKind"]

OPERANDS = ("terms", "codes", "planes", "bitplanes")
ROW_OPERANDS = ("acts", "tables", "planes")
SCALES = ("multiply", "shift")


def _no_row_latency(cfg) -> int:
    """The row edge adds nothing after the row front end."""
    return 0


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
    operand : {"terms", "codes", "planes", "bitplanes"}
        What the column tops feed every lane.
    cycles_per_step, dequant_cycles, latency, acc_width : callable
        Functions of the array configuration returning an int.
    check : callable
        ``check(cfg)``: ``ValueError`` naming what the kind cannot run.
    scale : {"multiply", "shift"}
        How the group-scale code reaches the PE.
    row_operand : {"acts", "tables", "planes"}
        What the row edge feeds the PEs of a row.
    row_latency : callable
        ``row_latency(cfg)``: register stages the row edge adds after the row front end.
    zero_points : bool
        The PE applies zero points as a per-group correction lane.
    mixtures : bool
        The PE takes a per-group mixture of formats (a selector per group, BitMoD). A kind
        without runs a mixture whose values are all integers as those integers, in one
        ``int<B>`` format (:func:`golden.gemm.scheme_formats`).
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
    row_operand: str = "acts"
    row_latency: Callable[[Any], int] = _no_row_latency
    zero_points: bool = False
    mixtures: bool = False

    def __post_init__(self):
        if self.operand not in OPERANDS:
            raise ValueError(f"PE kind {self.name!r}: operand must be one of {OPERANDS}, not "
                             f"{self.operand!r}")
        if self.scale not in SCALES:
            raise ValueError(f"PE kind {self.name!r}: scale must be one of {SCALES}, not "
                             f"{self.scale!r}")
        if self.row_operand not in ROW_OPERANDS:
            raise ValueError(f"PE kind {self.name!r}: row_operand must be one of "
                             f"{ROW_OPERANDS}, not {self.row_operand!r}")

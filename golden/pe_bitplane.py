"""Golden model of the bit-plane PE (:class:`hdl.pe.bitplane.BitPlanePE`): BISMO-style AND-popcount.

The PE computes the output every PE of the project computes (docs/pe.md)::

    acc = sum_g ((sum_{k in g} a_k * w_k) * scale_g) << exp_g          (exact integers)

from *bit-planes*: an operand ``x`` of an encoding with planes ``x^(0) .. x^(P-1)`` (bits) and
plane weights ``c_0 .. c_(P-1)`` (each ``+2**s`` or ``-2**s``) is ``x = sum_i c_i * x^(i)``, so::

    sum_k a_k w_k = sum_{i,j} c_i d_j * popcount(w^(i) AND a^(j))       (over the group's k)

Per cycle the PE receives plane ``i`` of ``L`` weights and plane ``j`` of the ``L`` matching
activations and adds ``+-popcount`` into a Horner accumulator (below).

Encodings (:func:`plane_encoding`)
----------------------------------
=============  ======  ==============================================  ===================
name           bits    planes (bit of the code) and their weights      values
=============  ======  ==============================================  ===================
``signed``     2..8    bit ``i``: ``+2**i``; bit ``B-1``: ``-2**(B-1)``  two's complement
``unsigned``   1..8    bit ``i``: ``+2**i``                            ``0 .. 2**B - 1``
``binary``     1       code bit: ``+2``; a plane of ones: ``-1``       code 0: -1, 1: +1
``ternary``    2       ``b0 & ~b1``: ``+1``; ``b0 & b1``: ``-1``        0, +1, (-0), -1
=============  ======  ==============================================  ===================

``binary`` is ``golden.formats``' binary (0 -> -1, 1 -> +1): ``2b - 1`` needs a second plane
that is 1 for every element (its popcount counts the other operand's set bits). ``ternary`` is
``golden.formats``' ternary (2-bit sign-magnitude: code 1 = +1, code 3 = -1, code 2 a redundant
zero), split DB-LLM/PTQTP style into a positive and a negative part of weight +1 and -1. Either
operand (weights or activations) may use any encoding.

Schedule (:func:`pair_schedule`, :func:`bitplane_payloads`): BISMO's order, Horner's shift
-----------------------------------------------------------------------------------------
The plane pairs ``(i, j)`` are sorted by descending significance ``e = s_i + s_j`` (ties: weight
plane, then activation plane, descending). Per group, pair by pair, the PE sees all ``G / L``
weight-steps of one pair before the next pair (BISMO's order), so ``cycles_per_step = P_w * P_a``
and a group takes ``P_w * P_a * G / L`` cycles. The accumulator runs Horner's rule over the
significances::

    gacc = (shift ? gacc << 1 : gacc) + (negate ? -pop : pop)

``shift`` is set on the first cycle of the first pair of each new significance, ``negate`` is
``sign(c_i) xor sign(d_j)``. Every encoding above has a plane of shift 0 and consecutive shifts,
so the significances of the pairs form one run ``e_max .. 0`` (checked) and a one-bit shift is
all the accumulator ever needs: no barrel shifter on the popcount, and after the last pair
(``e = 0``) ``gacc`` is the group sum itself.

``order="step"`` (:class:`BitPlaneConfig`; the array's, which streams weight-steps and cannot
hold a group back): per group, weight-step by weight-step, all pairs of the schedule; Horner
runs into a per-step partial ``sacc`` (``sacc = (shift ? sacc << 1 : sacc) +- pop``, from 0),
and on the step's last pair (payload field ``step_last``) ``gacc += sacc`` and ``sacc``
restarts. Exact: every step's partial is its ``sum_k w_k a_k`` after its ``e = 0`` pairs, and
the group sum is the sum of its steps'. ``sacc`` is bounded by :func:`horner_bounds` of a
one-step group (``G = L``), ``gacc`` by ``G p_lo .. G p_hi`` (whole steps only). One more
register and adder; the timing is the same.

Payload (``i_stream.payload``, LSB first)
------------------------------------------
``w_plane`` ``L`` bits (lane ``l`` at bit ``l``), ``a_plane`` ``L`` bits, ``negate`` 1,
``shift`` 1, ``group_last`` 1, ``out_last`` 1, ``scale`` ``scale_bits``, ``exp`` ``exp_bits``
(scale and exp are read with ``group_last``; the builder repeats them on every cycle of a
group). ``o_stream.payload`` is ``acc``: signed ``acc_width`` bits.

Widths (:class:`BitPlaneConfig`)
--------------------------------
``V_q(w, a) = sum_{r <= q} sign_r 2**e_r w^(i_r) a^(j_r)`` is an element's sum over the first
``q`` pairs of the schedule (``V_0 = 0``, ``V_P = w * a``). While pair ``p`` runs, the group
accumulator holds ``sum_k V_{p or p-1}(k) / 2**e_p`` (the elements of the steps done have had
pair ``p``, the others not yet). With ``M_p = max V_p / 2**e_p`` and ``M'_p = max V_{p-1} /
2**e_p`` over all codes (both >= 0), its largest value after step ``s`` (1..S, ``S = G / L``)
is ``s L M_p + (G - s L) M'_p``, largest at ``s = S`` or ``s = 1``::

    gacc_hi = max_p max(G M_p, L M_p + (G - L) M'_p)        (gacc_lo alike with minima)
    gacc_width = signed_width(gacc_lo, gacc_hi)

(reached: the tests drive the worst codes). The output side is IntPE's (``p_lo, p_hi`` the
extreme products of decoded values, ``s_max = 2**scale_bits - 1`` or 1, ``N = max_groups``,
``e_max = 2**exp_bits - 1``)::

    acc_width = signed_width(N G p_lo s_max 2**e_max, N G p_hi s_max 2**e_max)

W4A8 signed, G = 128, 8-bit scales, N = 256: ``gacc_width`` 19, ``acc_width`` 34.

Timing (:class:`BitPlanePEModel`)
---------------------------------
``stages = popcount_stages(L - 1) + 1`` registers precede the group accumulator (the popcount
tree over ``L - 1`` lanes, then a register holding ``+-pop``; the last lane enters as the
accumulator's carry-in). A ``group_last`` leaving them hands the group sum to the bit-serial
dequantizer (:class:`hdl.pe.bitserial.GroupDequantizer`: ``D = max(scale_bits, 1)`` steps, one
flush cycle), so ``latency = stages + D + 2`` from the ``out_last`` payload to the output. The
dequantizer takes a group sum when idle or in its last step of a group without ``out_last``;
a group ending earlier (fewer than ``D`` cycles, ``D + 2`` after an ``out_last`` group) stalls
the input, nothing is lost. Throughput: ``L`` weights x one plane pair per cycle, i.e. ``L``
MACs per ``P_w * P_a`` cycles.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .checks import check_choice, check_int
from .pe import run_group_pipeline
from .pe_baseline import signed_width
from .pe_kind import PEKind
from .pe_lut import _integer_format_of

__all__ = [
    "BITPLANE_PE_KIND",
    "ENCODINGS",
    "MAX_EXP_BITS",
    "MAX_LANES",
    "MAX_SCALE_BITS",
    "ORDERS",
    "BitPlaneConfig",
    "BitPlanePEModel",
    "PlaneEncoding",
    "PlanePair",
    "array_bitplane_params",
    "bitplane_payloads",
    "bitplane_reference",
    "cycles_per_step",
    "horner_bounds",
    "pair_schedule",
    "plane_encoding",
    "popcount_stages",
]

ENCODINGS = ("signed", "unsigned", "binary", "ternary")
ORDERS = ("group", "step")
_BITS = {"signed": (2, 8), "unsigned": (1, 8), "binary": (1, 1), "ternary": (2, 2)}
MAX_LANES = 256
MAX_SCALE_BITS = 16
MAX_EXP_BITS = 6


@dataclass(frozen=True)
class PlaneEncoding:
    """An operand encoding: how a ``bits``-bit code splits into weighted bit-planes.

    Attributes
    ----------
    name : str
        One of :data:`ENCODINGS` (module docstring).
    bits : int
        Code width.
    """

    name: str
    bits: int

    @property
    def weights(self) -> tuple[int, ...]:
        """Plane weights ``c_i`` (``+-2**s``), plane ``i`` first."""
        b = self.bits
        if self.name == "signed":
            return (*(1 << i for i in range(b - 1)), -(1 << (b - 1)))
        if self.name == "unsigned":
            return tuple(1 << i for i in range(b))
        if self.name == "binary":
            return (2, -1)
        return (1, -1)  # ternary: positive part, negative part

    @property
    def n_planes(self) -> int:
        return len(self.weights)

    def check_codes(self, codes) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64)
        if ((codes < 0) | (codes >> self.bits != 0)).any():
            raise ValueError(f"{self.name} codes must lie in 0..{(1 << self.bits) - 1}")
        return codes

    def planes(self, codes) -> np.ndarray:
        """Plane bits ``[..., n_planes]`` (0/1) of ``codes``."""
        c = self.check_codes(codes)
        if self.name in ("signed", "unsigned"):
            return np.stack([(c >> i) & 1 for i in range(self.bits)], axis=-1)
        if self.name == "binary":
            return np.stack([c & 1, np.ones_like(c)], axis=-1)
        magnitude, sign = c & 1, (c >> 1) & 1
        return np.stack([magnitude & (1 - sign), magnitude & sign], axis=-1)

    def values(self, codes) -> np.ndarray:
        """Decoded integers: ``sum_i c_i * plane_i``."""
        return self.planes(codes) @ np.asarray(self.weights, dtype=np.int64)

    @property
    def value_range(self) -> tuple[int, int]:
        v = self.values(np.arange(1 << self.bits))
        return int(v.min()), int(v.max())


def plane_encoding(name: str, bits: int, what: str = "encoding") -> PlaneEncoding:
    """A checked :class:`PlaneEncoding` (``ValueError`` naming ``what`` and the bad value)."""
    check_choice(what, name, ENCODINGS)
    lo, hi = _BITS[name]
    check_int(f"{what} {name} bits", bits, lo, hi)
    return PlaneEncoding(name, int(bits))


@dataclass(frozen=True)
class PlanePair:
    """One plane pair of the schedule: weight plane ``w``, activation plane ``a``, the sign of
    ``c_w * d_a`` (``negate``), its ``significance`` and whether the Horner accumulator
    shifts before it (``shift``: first pair of a new significance)."""

    w: int
    a: int
    negate: int
    significance: int
    shift: int


def _shift_of(weight: int) -> int:
    return abs(weight).bit_length() - 1


def pair_schedule(w_enc: PlaneEncoding, a_enc: PlaneEncoding) -> tuple[PlanePair, ...]:
    """The plane pairs in the PE's order: descending significance (module docstring)."""
    def key(ij):
        i, j = ij
        return (_shift_of(w_enc.weights[i]) + _shift_of(a_enc.weights[j]), i, j)

    pairs = sorted(((i, j) for i in range(w_enc.n_planes) for j in range(a_enc.n_planes)),
                   key=key, reverse=True)
    out, prev = [], None
    for i, j in pairs:
        cw, ca = w_enc.weights[i], a_enc.weights[j]
        e = _shift_of(cw) + _shift_of(ca)
        if prev is not None and prev - e not in (0, 1):
            raise AssertionError(f"significances jump from {prev} to {e}: the accumulator "
                                 f"shifts by one bit only")
        out.append(PlanePair(i, j, int((cw < 0) != (ca < 0)), e,
                             int(prev is not None and e != prev)))
        prev = e
    if prev != 0:
        raise AssertionError("the last pair must have significance 0")
    return tuple(out)


def cycles_per_step(w_bits: int, a_bits: int, w_encoding: str = "signed",
                    a_encoding: str = "signed") -> int:
    """Cycles one weight-step (``L`` weights) takes: weight planes x activation planes."""
    return (plane_encoding(w_encoding, w_bits, "weight_encoding").n_planes
            * plane_encoding(a_encoding, a_bits, "act_encoding").n_planes)


def horner_bounds(w_enc: PlaneEncoding, a_enc: PlaneEncoding, lanes: int,
                  group_size: int) -> tuple[int, int]:
    """``(gacc_lo, gacc_hi)``: the extremes the group accumulator reaches (module docstring),
    by enumeration of every code pair at every pair of the schedule."""
    wp = w_enc.planes(np.arange(1 << w_enc.bits))          # [codes_w, P_w]
    ap = a_enc.planes(np.arange(1 << a_enc.bits))          # [codes_a, P_a]
    prefix = np.zeros((len(wp), len(ap)), dtype=np.int64)  # V_q of every code pair
    lo = hi = 0
    G, L = group_size, lanes
    for pair in pair_schedule(w_enc, a_enc):
        before = prefix
        term = np.outer(wp[:, pair.w], ap[:, pair.a]) << pair.significance
        prefix = before - term if pair.negate else before + term
        unit = 1 << pair.significance  # every V here is a multiple of it
        m_hi, m_hi_prev = int(prefix.max()) // unit, int(before.max()) // unit
        m_lo, m_lo_prev = int(prefix.min()) // unit, int(before.min()) // unit
        hi = max(hi, G * m_hi, L * m_hi + (G - L) * m_hi_prev)
        lo = min(lo, G * m_lo, L * m_lo + (G - L) * m_lo_prev)
    return lo, hi


def popcount_stages(n: int) -> int:
    """Registers of the RTL popcount tree over ``n`` lanes (:mod:`hdl.pe.bitplane`): a leaf of
    one or two lanes 1, of three lanes 2; a node (two subtrees of ``n // 2`` and
    ``n - 1 - n // 2`` lanes plus one lane as carry-in) 2 if both subtrees count at most 3
    (explicit full adders), else 1 (one carry chain)."""
    if n <= 0:
        return 0
    if n <= 2:
        return 1
    if n == 3:
        return 2
    left, right = n // 2, n - 1 - n // 2
    small = left <= 3 and right <= 3
    return max(popcount_stages(left), popcount_stages(right)) + (2 if small else 1)


@dataclass(frozen=True)
class BitPlaneConfig:
    """Parameters of the bit-plane PE, validated once, and what is derived from them.

    Attributes
    ----------
    lanes : int
        ``L``, weights per cycle (1..256).
    weight_bits, act_bits : int
        Code widths of the operands (range per encoding: module docstring).
    weight_encoding, act_encoding : str
        One of :data:`ENCODINGS`.
    group_size : int
        ``G``, the largest group (a multiple of ``lanes``); shorter groups are accepted.
    scale_bits : int
        Unsigned group scale width, 0..16 (0: factor 1).
    exp_bits : int
        Group shift width, 0..6.
    max_groups : int
        Most groups of one output (sizes ``acc_width``).
    acc_width : int or None
        Output accumulator width; ``None`` takes the required width, a smaller one is refused.
    order : {"group", "step"}
        Pair order of the payloads (:data:`ORDERS`, module docstring): ``"group"`` (pair-major
        over the group, BISMO's) or ``"step"`` (pair-major within each weight-step, a per-step
        Horner partial added into the group accumulator at ``step_last``; the array's).
    """

    lanes: int = 64
    weight_bits: int = 4
    act_bits: int = 8
    weight_encoding: str = "signed"
    act_encoding: str = "signed"
    group_size: int = 128
    scale_bits: int = 8
    exp_bits: int = 0
    max_groups: int = 256
    acc_width: int | None = None
    order: str = "group"

    def __post_init__(self):
        put = functools.partial(object.__setattr__, self)
        check_choice("order", self.order, ORDERS)
        put("lanes", check_int("lanes", self.lanes, 1, MAX_LANES))
        w = plane_encoding(self.weight_encoding, self.weight_bits, "weight_encoding")
        a = plane_encoding(self.act_encoding, self.act_bits, "act_encoding")
        put("weight_bits", w.bits)
        put("act_bits", a.bits)
        put("group_size", check_int("group_size", self.group_size, 1))
        if self.group_size % self.lanes:
            raise ValueError(f"group_size={self.group_size} is not a multiple of "
                             f"lanes={self.lanes}")
        put("scale_bits", check_int("scale_bits", self.scale_bits, 0, MAX_SCALE_BITS))
        put("exp_bits", check_int("exp_bits", self.exp_bits, 0, MAX_EXP_BITS))
        put("max_groups", check_int("max_groups", self.max_groups, 1))
        required = self.required_acc_width
        if self.acc_width is None:
            put("acc_width", required)
        else:
            width = check_int("acc_width", self.acc_width, 1)
            if width < required:
                raise ValueError(f"acc_width={width} cannot hold the worst case; the "
                                 f"parameters require {required} bits")
            put("acc_width", width)

    @property
    def w_enc(self) -> PlaneEncoding:
        return PlaneEncoding(self.weight_encoding, self.weight_bits)

    @property
    def a_enc(self) -> PlaneEncoding:
        return PlaneEncoding(self.act_encoding, self.act_bits)

    @property
    def schedule(self) -> tuple[PlanePair, ...]:
        return pair_schedule(self.w_enc, self.a_enc)

    @property
    def cycles_per_step(self) -> int:
        return self.w_enc.n_planes * self.a_enc.n_planes

    @property
    def group_cycles(self) -> int:
        """Cycles of a full group: ``P_w * P_a * G / L``."""
        return self.cycles_per_step * (self.group_size // self.lanes)

    @property
    def scale_max(self) -> int:
        return (1 << self.scale_bits) - 1 if self.scale_bits else 1

    @property
    def product_range(self) -> tuple[int, int]:
        """``(p_lo, p_hi)``: extreme products of decoded weight and activation values."""
        (wl, wh), (al, ah) = self.w_enc.value_range, self.a_enc.value_range
        corners = [wl * al, wl * ah, wh * al, wh * ah]
        return min(corners), max(corners)

    @functools.cached_property
    def gacc_range(self) -> tuple[int, int]:
        """``(gacc_lo, gacc_hi)``: :func:`horner_bounds` over the group (``"group"`` order);
        for ``"step"`` the group accumulator holds sums of whole steps only, ``G p_lo .. G
        p_hi`` (and 0)."""
        if self.order == "step":
            p_lo, p_hi = self.product_range
            return min(0, self.group_size * p_lo), max(0, self.group_size * p_hi)
        return horner_bounds(self.w_enc, self.a_enc, self.lanes, self.group_size)

    @property
    def gacc_width(self) -> int:
        return signed_width(*self.gacc_range)

    @functools.cached_property
    def sacc_range(self) -> tuple[int, int]:
        """``(sacc_lo, sacc_hi)``: the extremes of the ``"step"`` order's per-step Horner
        partial, :func:`horner_bounds` of a one-step group (``G = L``)."""
        return horner_bounds(self.w_enc, self.a_enc, self.lanes, self.lanes)

    @property
    def sacc_width(self) -> int:
        """Bits of the ``"step"`` order's per-step partial (0 for ``"group"``: none)."""
        return signed_width(*self.sacc_range) if self.order == "step" else 0

    @property
    def pop_width(self) -> int:
        """Bits of the tree's popcount (``L - 1`` lanes; at least 1)."""
        return max(1, (self.lanes - 1).bit_length())

    @property
    def required_acc_width(self) -> int:
        p_lo, p_hi = self.product_range
        factor = self.max_groups * self.group_size * self.scale_max << ((1 << self.exp_bits) - 1)
        return signed_width(p_lo * factor, p_hi * factor)

    @property
    def dequant_cycles(self) -> int:
        """``D = max(scale_bits, 1)``."""
        return max(self.scale_bits, 1)

    @property
    def stages(self) -> int:
        """Registers in front of the group accumulator: the popcount tree and ``+-pop``."""
        return popcount_stages(self.lanes - 1) + 1

    @property
    def latency(self) -> int:
        """Cycles from the ``out_last`` payload accepted to its output valid."""
        return self.stages + self.dequant_cycles + 2


def _check_inputs(config: BitPlaneConfig, w_codes, a_codes, scale, exp, out_last):
    w = config.w_enc.check_codes(w_codes)
    a = config.a_enc.check_codes(a_codes)
    if w.ndim != 2 or a.shape != w.shape:
        raise ValueError(f"weight and activation codes must both be [groups, k]; got "
                         f"{w.shape} and {a.shape}")
    n, k = w.shape
    if k == 0 or k % config.lanes or k > config.group_size:
        raise ValueError(f"elements per group ({k}) must be a positive multiple of "
                         f"lanes={config.lanes}, at most group_size={config.group_size}")
    scale = np.array(np.broadcast_to(np.asarray(scale, dtype=np.int64), (n,)))
    exp = np.array(np.broadcast_to(np.asarray(exp, dtype=np.int64), (n,)))
    out_last = np.array(np.broadcast_to(np.asarray(out_last, dtype=bool), (n,)))
    if not out_last[-1]:
        raise ValueError("out_last must be set on the last group")
    if config.scale_bits and ((scale < 0) | (scale >> config.scale_bits != 0)).any():
        raise ValueError(f"scale codes must lie in 0..{config.scale_max}")
    if ((exp < 0) | (exp >> config.exp_bits != 0)).any():
        raise ValueError(f"exp must lie in 0..{(1 << config.exp_bits) - 1}")
    return w, a, scale, exp, out_last


def bitplane_reference(config: BitPlaneConfig, w_codes, a_codes, scale, exp,
                       out_last) -> list[int]:
    """Exact outputs (Python ints, one per output) from the encodings' decoded values.

    ``w_codes``/``a_codes`` are ``[n, k]`` (``n`` groups of ``k`` elements), ``scale``/``exp``
    per group (``scale`` ignored when ``scale_bits == 0``), ``out_last`` per group.
    """
    w, a, scale, exp, out_last = _check_inputs(config, w_codes, a_codes, scale, exp, out_last)
    gsum = (config.w_enc.values(w) * config.a_enc.values(a)).sum(axis=-1)
    outputs, acc = [], 0
    for g in range(len(gsum)):
        acc += (int(gsum[g]) * (int(scale[g]) if config.scale_bits else 1)) << int(exp[g])
        if out_last[g]:
            outputs.append(acc)
            acc = 0
    return outputs


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """Rows of 0/1 ``[..., L]`` as integers, lane 0 at bit 0 (object array)."""
    weights = np.array([1 << lane for lane in range(bits.shape[-1])], dtype=object)
    return (bits.astype(object) * weights).sum(axis=-1)


def bitplane_payloads(config: BitPlaneConfig, w_codes, a_codes, scale, exp,
                      out_last) -> dict[str, np.ndarray]:
    """Per-cycle payload fields that make the PE compute :func:`bitplane_reference`.

    Order (``config.order``): ``"group"``: group, plane pair (:func:`pair_schedule`),
    weight-step; ``"step"``: group, weight-step, plane pair, with the extra column
    ``step_last`` set on every step's last pair. Returns the columns ``w_plane``/``a_plane``
    (``L``-bit integers, object arrays) and ``negate``, ``shift``, ``group_last``,
    ``out_last``, ``scale``, ``exp`` (``int64``), ready for
    ``sim.vectors.pack_fields(pe.in_layout, **fields)``.
    """
    w, a, scale, exp, out_last = _check_inputs(config, w_codes, a_codes, scale, exp, out_last)
    n, k = w.shape
    L, steps = config.lanes, k // config.lanes
    schedule = config.schedule
    P = len(schedule)
    step_major = config.order == "step"
    # [group, plane, step]: the packed plane bits of one weight-step.
    wp = _pack_bits(config.w_enc.planes(w).reshape(n, steps, L, -1).transpose(0, 3, 1, 2))
    ap = _pack_bits(config.a_enc.planes(a).reshape(n, steps, L, -1).transpose(0, 3, 1, 2))
    wsel = wp[:, [p.w for p in schedule], :]  # [group, pair, step]
    asel = ap[:, [p.a for p in schedule], :]
    if step_major:  # [group, step, pair]
        wsel, asel = wsel.transpose(0, 2, 1), asel.transpose(0, 2, 1)
    cols = {"w_plane": wsel.reshape(-1), "a_plane": asel.reshape(-1)}
    pair_shift = np.array([p.shift for p in schedule], dtype=np.int64)
    pair_negate = np.array([p.negate for p in schedule], dtype=np.int64)
    if step_major:  # every step runs the whole schedule: [step, pair]
        shift = np.tile(pair_shift, (steps, 1))
        negate = np.tile(pair_negate, (steps, 1))
        step_last = np.zeros((steps, P), dtype=np.int64)
        step_last[:, -1] = 1
        last = np.zeros((steps, P), dtype=np.int64)
    else:  # [pair, step]: the shift on a pair's first step only
        first = np.zeros((P, steps), dtype=np.int64)
        first[:, 0] = 1
        shift = pair_shift[:, None] * first
        negate = np.repeat(pair_negate[:, None], steps, axis=1)
        last = np.zeros((P, steps), dtype=np.int64)
    last[-1, -1] = 1
    per_group = P * steps
    cols["negate"] = np.tile(negate.reshape(-1), n)
    cols["shift"] = np.tile(shift.reshape(-1), n)
    if step_major:
        cols["step_last"] = np.tile(step_last.reshape(-1), n)
    cols["group_last"] = np.tile(last.reshape(-1), n)
    cols["out_last"] = (np.tile(last.reshape(-1), (n, 1))
                        * out_last[:, None].astype(np.int64)).reshape(-1)
    cols["scale"] = np.repeat(scale if config.scale_bits else np.zeros(n, np.int64), per_group)
    cols["exp"] = np.repeat(exp, per_group)
    return cols


class BitPlanePEModel:
    """Cycle-level twin of :class:`hdl.pe.bitplane.BitPlanePE` (input offered every cycle,
    output always ready): the ``stages``-deep pipeline, the Horner group accumulator, the
    bit-serial dequantizer (:class:`hdl.pe.bitserial.GroupDequantizer`) and the output
    register, with the stall rule. Every accumulator value is checked against its width.

    Attributes (after :meth:`run`)
    ------------------------------
    accept_cycles : list of int
        The cycle each payload was accepted (stalls show as gaps).
    gacc_extremes : (int, int)
        The smallest and largest value the group accumulator took.
    """

    def __init__(self, config: BitPlaneConfig):
        self.config = config
        self.accept_cycles: list[int] = []
        self.gacc_extremes = (0, 0)

    def run(self, fields: Mapping[str, np.ndarray]) -> list[tuple[int, int]]:
        """Simulate the payloads ``fields`` (:func:`bitplane_payloads`' columns); return
        ``(cycle, acc)`` per output, cycle 0 being the cycle the first payload is accepted."""
        cfg = self.config
        n = len(fields["group_last"])
        step_major = cfg.order == "step"
        step_last = fields["step_last"] if step_major else fields["group_last"]
        # What the accumulators need per payload (the rest goes to run_group_pipeline).
        items = [(bin(int(fields["w_plane"][c]) & int(fields["a_plane"][c])).count("1"),
                  int(fields["negate"][c]), int(fields["shift"][c]),
                  int(fields["group_last"][c]), int(step_last[c]))
                 for c in range(n)]
        s_lo = -(1 << (cfg.sacc_width - 1)) if step_major else 0
        s_hi = (1 << (cfg.sacc_width - 1)) - 1 if step_major else 0
        g_lo, g_hi = -(1 << (cfg.gacc_width - 1)), (1 << (cfg.gacc_width - 1)) - 1
        gacc = sacc = lo = hi = 0

        def accumulate(index: int, cycle: int) -> int:
            nonlocal gacc, sacc, lo, hi
            pop, negate, shift, group_last, s_last = items[index]
            if step_major:  # Horner within the step, then into the group sum
                snext = (sacc << shift) + (-pop if negate else pop)
                if not s_lo <= snext <= s_hi:
                    raise AssertionError(f"step accumulator overflow: {snext}")
                sacc = 0 if s_last else snext
                gnext = gacc + snext if s_last else gacc
            else:
                gnext = (gacc << shift) + (-pop if negate else pop)
            if not g_lo <= gnext <= g_hi:
                raise AssertionError(f"group accumulator overflow: {gnext}")
            lo, hi = min(lo, gnext), max(hi, gnext)
            gacc = 0 if group_last else gnext
            return gnext

        outputs, self.accept_cycles = run_group_pipeline(
            *(fields[k] for k in ("group_last", "out_last", "scale", "exp")),
            stages=cfg.stages, scale_bits=cfg.scale_bits, acc_width=cfg.acc_width,
            accumulate=accumulate)
        self.gacc_extremes = (lo, hi)
        return outputs


# -- the bit-plane PE as an array PE kind (golden.pe_kind) ---------------------------------------
def array_bitplane_params(cfg) -> dict:
    """:class:`BitPlaneConfig` parameters of the PEs of an array built with ``cfg`` (a
    :class:`golden.gemm.ArrayConfig` of kind ``"bitplane"``): the one integer weight format's
    code width and plane encoding (``signed`` two's complement, or ``unsigned`` for
    ``uint<B>``; :func:`golden.pe_lut._integer_format_of` checks that its levels are the
    codes' integers), the array's activation width as ``signed`` planes (INT8 codes, or the
    FP16/BF16 block mantissas with the row's group shift as ``exp``), lanes, groups, scales
    and the ``"step"`` order (the array streams weight-steps)."""
    bits, signed = _integer_format_of(tuple(cfg.formats), "bitplane")
    return {"lanes": cfg.lanes, "weight_bits": bits,
            "weight_encoding": "signed" if signed else "unsigned",
            "act_bits": cfg.act_width, "act_encoding": "signed",
            "group_size": cfg.group_size, "scale_bits": cfg.scale_bits,
            "exp_bits": cfg.act_exp_bits, "max_groups": cfg.max_groups, "order": "step"}


def _check_bitplane(cfg) -> None:
    """One integer format of 2..8 bits whose levels are its codes' integers; activations of
    2..8 bits (the signed plane encoding's limit: ``--act int8`` or ``--mant-width`` <= 8)."""
    if not 2 <= cfg.act_width <= 8:
        raise ValueError(f"the bitplane PE takes activations of 2 to 8 bits; "
                         f"mant_width={cfg.act_width}")
    array_bitplane_params(cfg)


def _bitplane_config(cfg) -> BitPlaneConfig:
    return _bitplane_config_of(tuple(sorted(array_bitplane_params(cfg).items())))


@functools.lru_cache(maxsize=64)
def _bitplane_config_of(items) -> BitPlaneConfig:
    return BitPlaneConfig(**dict(items))


def _bitplane_cycles(cfg) -> int:
    """``T = P_w * P_a``: every plane pair of the step, one per cycle."""
    return _bitplane_config(cfg).cycles_per_step


def _bitplane_dequant_cycles(cfg) -> int:
    """The bit-serial PE's dequantizer: ``max(scale_bits, 1)`` steps."""
    return _bitplane_config(cfg).dequant_cycles


def _bitplane_latency(cfg) -> int:
    return _bitplane_config(cfg).latency


def _bitplane_acc_width(cfg) -> int:
    return _bitplane_config(cfg).required_acc_width


BITPLANE_PE_KIND = PEKind(
    name="bitplane",
    summary="bit-plane PE (hdl.pe.bitplane, BISMO style): AND-popcount of one weight and one "
            "activation plane per cycle, P_w * P_a cycles per weight-step; LUTs only",
    operand="bitplanes", cycles_per_step=_bitplane_cycles,
    dequant_cycles=_bitplane_dequant_cycles, latency=_bitplane_latency,
    acc_width=_bitplane_acc_width, check=_check_bitplane, row_operand="planes")

"""Golden model of the bit-serial mixed-datatype PE (``hdl/pe/bitserial.py``).

A PE computes one output of an output-stationary array, in integer code units::

    acc = sum_g ((sum_{k in group g} a_k * level_k) * scale_g) << exp_g

with ``level_k`` the decoded weight in code units (:mod:`golden.terms`), ``a_k`` the integer
activation mantissas, ``scale_g`` the unsigned group scale code (1 when ``scale_bits == 0``)
and ``exp_g`` the group exponent shift.

Three views of the same computation:

:func:`pe_reference`
    The independent reference: decoded levels (``Format.decode / unit``), no term
    decomposition, Python integers.
:func:`pe_cycles` / :func:`pack_pe_payload`
    The per-cycle input stream of the PE: term-major within each weight-step. For each
    weight-step (``L`` consecutive weights of a group) there are ``T`` cycles; cycle ``t``
    carries term ``t`` of the ``L`` weights (:func:`golden.terms.decompose`), the ``L``
    activations, ``t`` itself, and on the last cycle of a group ``group_last``, the group's
    ``scale`` and ``exp`` (and ``out_last`` on the last group of an output).
:class:`BitSerialPEModel`
    Cycle-level twin of the RTL: the lane adder-tree pipeline, the group accumulator, the
    bit-serial dequantizer and the output register, cycle by cycle, with the stall rule.

Payload layout (``i_stream.payload``, LSB first; :func:`payload_offsets`)
------------------------------------------------------------------------
``terms`` ``L x (X + 2)`` bits (lane ``l`` at ``l * (X + 2)``: sign, exp[X], nonzero),
``t`` ``ceil(log2 T)`` bits, ``acts`` ``L x A`` bits (two's complement, lane 0 lowest),
``group_last`` 1, ``out_last`` 1, ``scale`` ``scale_bits``, ``exp`` ``exp_bits``.
``o_stream.payload`` is ``acc``: signed ``acc_width`` bits.

Widths (:class:`PEConfig`; every bound is a bound on a sum of absolute values, so it also
bounds every partial sum and the accumulators can never overflow)
-------------------------------------------------------------------------------------------
* ``S_max`` = max over all codes, selectors and (for formats with a special-value register)
  every register entry the term window can hold of ``sum_t |term_t|`` (code units). FP4/FP3
  mixtures: 24 (register entry ``16 + 8``); plain FP4: 12; INT8: 129 (code 127 = ``128 - 1``).
* ``M = G * S_max * 2**(A - 1)`` bounds ``|group sum|``; ``gacc_width = bit_length(M) + 1``
  (at most the spec's ``A + ceil(log2(G * S_max)) + 1``).
* ``product_width = bit_length(M * smax) + 1`` with ``smax = 2**scale_bits - 1`` (1 if
  ``scale_bits == 0``).
* ``acc_width = bit_length(max_groups * M * smax * 2**(2**exp_bits - 1)) + 1`` (at most the
  spec's ``product_width + 2**exp_bits - 1 + ceil(log2(max_groups))``).

Zero points (``zero_points``, MixPE's per-group correction)
----------------------------------------------------------
An asymmetric scheme's level is ``code - z`` with ``z`` the group's zero point. Rather than
multiplying by those wider levels, the PE multiplies by the codes and corrects once per group::

    sum_k a_k * (c_k - z) = sum_k a_k * c_k + z * (-sum_k a_k)

The codes and ``z`` arrive in offset form, the signed ``int<B>`` codes ``c - 2**(B-1)`` and
``z - 2**(B-1)`` (the difference is the same), so a ``uint4`` scheme keeps int4's 2 terms per
weight instead of the 3 of the folded ``int5`` levels. The correction is one more lane of the
adder tree (``L + 1`` lanes): its weight is ``z`` (term ``t`` of ``z`` in cycle ``t`` of the
group's last step, zero terms in the other steps) and its activation ``-sum_k a_k``, which the
row front end sums once per row and group. The payload gains ``zterm`` (one term, after
``terms``) and ``rowsum`` (``rowsum_width = A + ceil(log2 G) + 1`` bits, after ``acts``), and the
group bound doubles: ``M = 2 G S_max 2**(A-1)`` (``|z| <= S_max``, ``|sum_k a_k| <= G
2**(A-1)``).

Timing of the RTL (mirrored by :class:`BitSerialPEModel`)
---------------------------------------------------------
``stages = 1 + max(1, ceil(ceil(log2 L') / levels_per_stage))`` (``L' = L``, or ``L + 1`` with
the zero-point lane) pipeline registers (the
first lane step, then the adder-tree levels) precede the group accumulator; the dequantizer takes
``D = max(scale_bits, 1)`` cycles plus one flush cycle into the output register, so
``latency = stages + D + 2`` cycles from the ``out_last`` input to the output being valid.
The dequantizer accepts a group sum when idle, or in its last step cycle when the running
group does not end an output; a ``group_last`` arriving earlier stalls the PE.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import formats as fmts
from . import terms as gterms
from .checks import check_int
from .pe_kind import PEKind

__all__ = [
    "PE_KIND", "BitSerialPEModel", "PEConfig", "format_names", "max_term_sum", "pack_pe_payload",
    "payload_fields", "payload_offsets", "pe_cycles", "pe_reference", "run_group_pipeline",
]

MAX_EXP_BITS = 8
MAX_SCALE_BITS = 16


def format_names(formats) -> tuple[str, ...]:
    """A format name or a list of names (a mixture, selector order) as a tuple of names."""
    if isinstance(formats, str):
        return (formats,)
    if isinstance(formats, (list, tuple)) and formats and all(isinstance(n, str) for n in formats):
        return tuple(formats)
    raise TypeError(f"formats must be a format name or a non-empty list of names, not "
                    f"{formats!r}")


def max_term_sum(formats) -> int:
    """``S_max``: the largest ``sum_t |term_t|`` (code units) any weight of ``formats`` can have.

    Taken over every code and selector with the default register contents and, when the
    formats have a special-value register, over every entry the register window can hold
    (the register is loaded at run time, so any expressible special value must fit).
    """
    names = format_names(formats)
    geo = gterms.geometry(names)
    codes = np.arange(1 << geo.code_bits)
    sels = np.arange(gterms.REGISTER_ENTRIES) if geo.has_register else np.zeros(1, np.int64)
    c, s = np.meshgrid(codes, sels, indexing="ij")
    fmt = fmts.get(names[0])
    finite = np.isfinite(np.broadcast_to(fmt.decode(codes)[:, None], c.shape))
    tr = gterms.decompose(c[finite], names, s[finite])
    best = int((tr.nonzero << (tr.exp + tr.bsig)).sum(axis=-1).max())
    if geo.has_register:
        top = (1 << gterms.WINDOW_EXP_BITS) - 1
        best = max(best, sum(1 << (top + b) for b in gterms.TWO_TERM_BSIG))
    return best


@dataclass(frozen=True)
class PEConfig:
    """Parameters of the bit-serial PE, validated once, and the widths derived from them.

    Constructing a ``PEConfig`` checks every parameter (``TypeError``/``ValueError`` naming
    it); components and models take the object and never check again.

    Attributes
    ----------
    lanes : int
        ``L``, weights (terms) per cycle, 1..256.
    act_width : int
        ``A``, signed activation mantissa width, 2..32.
    group_size : int
        ``G``, weights per group (a multiple of ``lanes``).
    formats : tuple of str
        Weight format or BitMoD mixture (:func:`golden.terms.geometry`); a name or a list is
        accepted and stored as a tuple.
    scale_bits : int
        Unsigned group-scale code width, 0..16 (0: no scale multiply).
    exp_bits : int
        Group exponent shift width, 0..8.
    max_groups : int
        Most groups accumulated into one output (sizes ``acc_width``).
    acc_width : int
        Output accumulator width; ``None`` (the default) takes :attr:`required_acc_width`,
        a smaller value is refused.
    levels_per_stage : int
        Adder-tree levels between pipeline registers.
    zero_points : bool
        A correction lane (MixPE's zero-point correction, module docstring): lane ``L`` of
        the adder tree takes the terms of the group's zero point ``z`` and the row's
        ``-sum_k a_k`` (:attr:`rowsum_width` bits) in the group's last step; the formats
        must then be one signed integer format ``int<B>``.
    """

    lanes: int = 4
    act_width: int = 8
    group_size: int = 128
    formats: tuple[str, ...] = ("fp4",)
    scale_bits: int = 8
    exp_bits: int = 0
    max_groups: int = 256
    acc_width: int | None = None
    levels_per_stage: int = 1
    zero_points: bool = False

    def __post_init__(self):
        put = functools.partial(object.__setattr__, self)
        put("lanes", check_int("lanes", self.lanes, 1, 256))
        put("act_width", check_int("act_width", self.act_width, 2, 32))
        put("group_size", check_int("group_size", self.group_size, 1))
        if self.group_size % self.lanes:
            raise ValueError(f"group_size ({self.group_size}) must be a multiple of lanes "
                             f"({self.lanes})")
        put("formats", format_names(self.formats))
        try:
            gterms.geometry(self.formats)
        except ValueError as exc:
            raise ValueError(f"formats: {exc}") from None
        put("scale_bits", check_int("scale_bits", self.scale_bits, 0, MAX_SCALE_BITS))
        put("exp_bits", check_int("exp_bits", self.exp_bits, 0, MAX_EXP_BITS))
        put("max_groups", check_int("max_groups", self.max_groups, 1))
        put("levels_per_stage", check_int("levels_per_stage", self.levels_per_stage, 1))
        if not isinstance(self.zero_points, bool):
            raise TypeError(f"zero_points must be a bool, not {self.zero_points!r}")
        if self.zero_points and (len(self.formats) != 1
                                 or not re.fullmatch(r"int\d+", self.formats[0])):
            raise ValueError(f"zero_points need one signed integer weight format int<B> (the "
                             f"offset codes of an asymmetric scheme), not {list(self.formats)}")
        required = self.required_acc_width
        if self.acc_width is None:
            put("acc_width", required)
        else:
            width = check_int("acc_width", self.acc_width, 1)
            if width < required:
                raise ValueError(f"acc_width {width} is too narrow: these parameters need "
                                 f"{required} bits (max_groups={self.max_groups}, "
                                 f"S_max={self.s_max})")
            put("acc_width", width)

    @functools.cached_property
    def geometry(self) -> gterms.TermGeometry:
        return gterms.geometry(self.formats)

    @functools.cached_property
    def s_max(self) -> int:
        """``S_max`` of :func:`max_term_sum`."""
        return max_term_sum(self.formats)

    @property
    def scale_max(self) -> int:
        """Largest group-scale factor: ``2**scale_bits - 1`` (1 without scales)."""
        return (1 << self.scale_bits) - 1 if self.scale_bits else 1

    @property
    def group_bound(self) -> int:
        """``M = G * S_max * 2**(A - 1)``, a bound on ``|group sum|``; twice that with the
        zero-point lane (its ``|z| * |sum_k a_k|`` is at most ``S_max * G * 2**(A - 1)``)."""
        bound = self.group_size * self.s_max << (self.act_width - 1)
        return 2 * bound if self.zero_points else bound

    @property
    def rowsum_width(self) -> int:
        """Bits of the zero-point lane's activation ``-sum_k a_k`` over a group:
        ``A + ceil(log2 G) + 1`` (``|sum| <= G * 2**(A - 1)``, and its negation needs the
        bit above)."""
        return self.act_width + (self.group_size - 1).bit_length() + 1

    @property
    def tree_lanes(self) -> int:
        """Lanes of the adder tree: ``L``, plus the zero-point lane."""
        return self.lanes + self.zero_points

    @property
    def gacc_width(self) -> int:
        return self.group_bound.bit_length() + 1

    @property
    def product_width(self) -> int:
        """Width of ``gsum * scale``."""
        return (self.group_bound * self.scale_max).bit_length() + 1

    @property
    def required_acc_width(self) -> int:
        bound = self.max_groups * self.group_bound * self.scale_max << ((1 << self.exp_bits) - 1)
        return bound.bit_length() + 1

    @property
    def terms_per_weight(self) -> int:
        return self.geometry.terms

    @property
    def group_cycles(self) -> int:
        """Cycles of one group at full rate: ``G / L * T``."""
        return self.group_size // self.lanes * self.terms_per_weight

    @property
    def dequant_cycles(self) -> int:
        """``D = max(scale_bits, 1)``: step cycles of the bit-serial dequantizer."""
        return max(self.scale_bits, 1)

    @property
    def stages(self) -> int:
        """Pipeline registers in front of the group accumulator."""
        lanes = self.tree_lanes
        levels = math.ceil(math.log2(lanes)) if lanes > 1 else 0
        return 1 + max(1, -(-levels // self.levels_per_stage))

    @property
    def latency(self) -> int:
        """Cycles from accepting an ``out_last`` input to its output being valid."""
        return self.stages + self.dequant_cycles + 2

    @property
    def t_bits(self) -> int:
        return (self.terms_per_weight - 1).bit_length()


def payload_offsets(cfg: PEConfig) -> dict[str, tuple[int, int]]:
    """``field -> (offset, width)`` of the PE input payload (module docstring)."""
    x = cfg.geometry.exp_bits
    widths = [("terms", cfg.lanes * (x + 2)), ("t", cfg.t_bits),
              ("acts", cfg.lanes * cfg.act_width), ("group_last", 1), ("out_last", 1),
              ("scale", cfg.scale_bits), ("exp", cfg.exp_bits)]
    if cfg.zero_points:  # the correction lane (module docstring)
        widths += [("zterm", x + 2), ("rowsum", cfg.rowsum_width)]
    out, offset = {}, 0
    for name, width in widths:
        out[name] = (offset, width)
        offset += width
    return out


def _levels(codes: np.ndarray, selectors: np.ndarray, names: tuple[str, ...],
            special_values) -> np.ndarray:
    """Decoded levels in code units, straight from the format definitions (no terms)."""
    geo = gterms.geometry(names)
    levels = np.zeros(codes.shape, dtype=np.int64)
    members = selectors % len(names)
    for i, name in enumerate(names):
        fmt = fmts.get(name)
        pick = members == i
        values = fmt.decode(codes[pick]) / geo.unit
        if not np.isfinite(values).all():
            raise ValueError(f"weight codes must be finite; {name} NaN/Inf codes were given")
        levels[pick] = values.astype(np.int64)
        if not np.array_equal(levels[pick], values):
            raise AssertionError(f"{name} levels are not integers in code units")
    if special_values is not None:
        if not geo.has_register:
            raise ValueError(f"{list(names)} has no special-value register")
        sv = np.asarray(list(special_values), dtype=np.int64)
        if sv.shape != (gterms.REGISTER_ENTRIES,):
            raise ValueError("special_values must have 4 entries")
        special = codes == geo.special_code
        levels[special] = sv[selectors[special]]
    return levels


def _inputs(codes, selectors, acts, scales, exps, group_size, scale_default):
    codes = np.asarray(codes, dtype=np.int64)
    acts = np.asarray(acts, dtype=np.int64)
    if codes.ndim != 2 or acts.shape != codes.shape:
        raise ValueError(f"codes and acts must both be [n_out, K]; got {codes.shape} and "
                         f"{acts.shape}")
    n_out, k = codes.shape
    if k == 0 or k % group_size:
        raise ValueError(f"K ({k}) must be a positive multiple of group_size ({group_size})")
    groups = k // group_size

    def per_group(name, value, default):
        arr = np.full((n_out, groups), default, np.int64) if value is None else (
            np.asarray(value, dtype=np.int64))
        if arr.shape != (n_out, groups):
            raise ValueError(f"{name} must have shape {(n_out, groups)}, not {arr.shape}")
        return arr
    return (codes, per_group("selectors", selectors, 0), acts,
            per_group("scales", scales, scale_default), per_group("exps", exps, 0), groups)


def pe_reference(codes, selectors, acts, scales, exps, formats, group_size,
                 special_values=None, zero_points=None) -> np.ndarray:
    """Exact outputs ``sum_g ((sum_k a_k * level_k) * scale_g) << exp_g`` (object array),
    with ``level_k - z_g`` for ``level_k`` when ``zero_points`` are given.

    Parameters
    ----------
    codes, acts : array_like [n_out, K]
        Weight codes and integer activation mantissas; ``K`` a multiple of ``group_size``.
    selectors, scales, exps : array_like [n_out, K / group_size] or None
        Per-group selector (0..3), scale code (``None``: 1, i.e. ``scale_bits == 0``) and
        exponent shift (``None``: 0).
    formats : str or list of str
        As for :func:`golden.terms.geometry`.
    special_values : sequence of 4 int, optional
        Special-value register contents (code units) of an extended-format mixture;
        default: each selector decodes with ``formats[selector % len(formats)]``.
    zero_points : array_like [n_out, K / group_size], optional
        Per-group zero points (signed levels of the format; the ``zero_points`` PE).
    """
    names = format_names(formats)
    codes, sel, acts, scales, exps, groups = _inputs(codes, selectors, acts, scales, exps,
                                                     group_size, 1)
    levels = _levels(codes, np.repeat(sel, group_size, axis=1), names, special_values)
    if zero_points is not None:
        levels = levels - np.repeat(np.asarray(zero_points, dtype=np.int64), group_size, axis=1)
    sums = (acts * levels).reshape(codes.shape[0], groups, group_size).sum(axis=-1)
    out = np.zeros(codes.shape[0], dtype=object)
    for n in range(codes.shape[0]):
        out[n] = sum((int(sums[n, g]) * int(scales[n, g])) << int(exps[n, g])
                     for g in range(groups))
    return out


def pe_cycles(codes, selectors, acts, scales, exps, formats, lanes, group_size,
              special_values=None, zero_points=None) -> list[dict]:
    """The per-cycle input payloads that make the PE compute :func:`pe_reference`.

    Order: output, group, weight-step (``lanes`` weights), term ``t = 0 .. T-1``. Each dict
    mirrors the RTL payload: ``terms`` (dict of ``sign``, ``exp``, ``nonzero`` int arrays of
    length ``lanes``), ``t``, ``acts`` (length ``lanes``), ``group_last``, ``out_last``,
    ``scale``, ``exp`` (0 except on the last cycle of a group; ``scales=None`` gives 0). With
    ``zero_points`` ``[n_out, groups]`` (module docstring) also ``zterm`` (term ``t`` of the
    group's zero point in its last step, a zero term before) and ``rowsum`` (``-sum_k a_k``
    of the group's steps so far, as the array's row edge sends it).
    """
    names = format_names(formats)
    codes, sel, acts, scales, exps, groups = _inputs(codes, selectors, acts, scales, exps,
                                                     group_size, 0)
    if group_size % lanes:
        raise ValueError(f"group_size ({group_size}) must be a multiple of lanes ({lanes})")
    tr = gterms.decompose(codes, names, np.repeat(sel, group_size, axis=1), special_values)
    if tr.nonfinite.any():
        raise ValueError("weight codes must be finite (a NaN/Inf code was given)")
    n_out = codes.shape[0]
    n_terms = tr.bsig.shape[0]
    steps = group_size // lanes
    zt = None
    if zero_points is not None:
        mask = (1 << gterms.geometry(names).code_bits) - 1  # the zero point's code
        zt = gterms.decompose(np.asarray(zero_points, dtype=np.int64) & mask, names, sel,
                              special_values)
    cycles = []
    for n in range(n_out):
        for g in range(groups):
            for s in range(steps):
                lo = g * group_size + s * lanes
                cols = slice(lo, lo + lanes)
                for t in range(n_terms):
                    last = s == steps - 1 and t == n_terms - 1
                    cycle = {
                        "terms": {"sign": tr.sign[n, cols, t], "exp": tr.exp[n, cols, t],
                                  "nonzero": tr.nonzero[n, cols, t]},
                        "t": t,
                        "acts": acts[n, cols],
                        "group_last": int(last),
                        "out_last": int(last and g == groups - 1),
                        "scale": int(scales[n, g]) if last else 0,
                        "exp": int(exps[n, g]) if last else 0,
                    }
                    if zt is not None:
                        on = int(s == steps - 1)  # the zero point's terms in the last step
                        cycle["zterm"] = {key: int(getattr(zt, key)[n, g, t]) * on
                                          for key in ("sign", "exp", "nonzero")}
                        cycle["rowsum"] = -int(acts[n, g * group_size:lo + lanes].sum())
                    cycles.append(cycle)
    return cycles


def payload_fields(cycles: Sequence[dict], cfg: PEConfig) -> dict[str, np.ndarray]:
    """Per-field arrays of the input payloads (``terms`` and ``acts`` as raw bit patterns).

    Suitable for ``sim.vectors.pack_fields(pe.in_layout, **fields)``.
    """
    x = cfg.geometry.exp_bits
    tw, aw = x + 2, cfg.act_width
    terms, acts = [], []
    for c in cycles:
        tt = c["terms"]
        fields = np.asarray(tt["sign"]) | (np.asarray(tt["exp"]) << 1) | (
            np.asarray(tt["nonzero"]) << (x + 1))
        if len(fields) != cfg.lanes:
            raise ValueError(f"a cycle carries {len(fields)} lanes, the PE has {cfg.lanes}")
        terms.append(sum(int(f) << (i * tw) for i, f in enumerate(fields)))
        acts.append(sum((int(a) & ((1 << aw) - 1)) << (i * aw) for i, a in enumerate(c["acts"])))
    out = {"terms": np.array(terms, dtype=object), "acts": np.array(acts, dtype=object)}
    for name in ("t", "group_last", "out_last", "scale", "exp"):
        out[name] = np.array([int(c[name]) for c in cycles], dtype=np.int64)
    if cfg.zero_points:  # the correction lane's term and activation (module docstring)
        out["zterm"] = np.array([c["zterm"]["sign"] | c["zterm"]["exp"] << 1
                                 | c["zterm"]["nonzero"] << (x + 1) for c in cycles],
                                dtype=np.int64)
        out["rowsum"] = np.array([c["rowsum"] for c in cycles], dtype=np.int64)  # signed
    if cfg.scale_bits == 0:
        out["scale"][:] = 0
    return out


def pack_pe_payload(cycles: Sequence[dict], cfg: PEConfig) -> np.ndarray:
    """Flat ``i_stream.payload`` integers (object array) of ``cycles`` (module docstring)."""
    fields = payload_fields(cycles, cfg)
    offsets = payload_offsets(cfg)
    packed = np.zeros(len(cycles), dtype=object)
    for name, (offset, width) in offsets.items():
        low = -(1 << (width - 1)) if name == "rowsum" else 0  # the one signed field
        for i, v in enumerate(fields[name]):
            v = int(v)
            if not low <= v < low + (1 << width):
                raise ValueError(f"field {name!r} ({width} bits) cannot hold {v}")
            packed[i] += (v & ((1 << width) - 1)) << offset
    return packed


@dataclass
class _Item:
    """A payload travelling through the model's pipeline (already summed over the lanes)."""

    lane_sum: int
    bsig: int
    group_last: int
    out_last: int
    scale: int
    exp: int


def _fits(value: int, width: int) -> bool:
    return -(1 << (width - 1)) <= value < 1 << (width - 1)


class BitSerialPEModel:
    """Cycle-level twin of :class:`hdl.pe.bitserial.BitSerialPE` (input always valid, output
    always ready).

    Per cycle the lanes contribute ``v_l = (-1)**s_l * nz_l * (a_l << e_l)``; after
    ``stages`` pipeline cycles ``gacc += (sum_l v_l) << bsig_t``. On ``group_last`` the sum
    (``gacc`` including that cycle) is handed to the dequantizer (``gacc`` restarts at 0),
    which adds ``gs << i`` into the output accumulator for every set bit ``i`` of the scale
    (LSB first, one bit per cycle, ``gs = gsum << exp``), then, for ``out_last``, copies the
    output accumulator to the output register in a flush cycle and clears it.

    Parameters
    ----------
    config : PEConfig
        The RTL component's configuration.

    Attributes (after :meth:`run`)
    ------------------------------
    group_sums : list of (int, int)
        ``(cycle, gsum)``: the cycle a group sum is handed to the dequantizer.
    accept_cycles : list of int
        The cycle each input payload was accepted (stalls show as gaps).
    """

    def __init__(self, config: PEConfig):
        self.config = config
        self.group_sums: list[tuple[int, int]] = []
        self.accept_cycles: list[int] = []

    @property
    def latency(self) -> int:
        return self.config.latency

    def _item(self, cycle: Mapping) -> _Item:
        tt = cycle["terms"]
        sign, exp, nz = (np.asarray(tt[k], dtype=np.int64) for k in ("sign", "exp", "nonzero"))
        acts = [int(a) for a in cycle["acts"]]
        total = 0
        for a, s, e, z in zip(acts, sign, exp, nz, strict=True):
            if z:
                total += -(a << int(e)) if s else a << int(e)
        return _Item(total, self.config.geometry.bsig[int(cycle["t"])], int(cycle["group_last"]),
                     int(cycle["out_last"]), int(cycle["scale"]), int(cycle["exp"]))

    def run(self, cycles: Sequence[Mapping]) -> list[tuple[int, int]]:
        """Simulate ``cycles`` (offered back to back); return ``(cycle, acc)`` per output.

        Cycle 0 is the cycle the first input is accepted; an output's cycle is the cycle its
        ``o_stream.valid`` is high (and, the sink being always ready, taken).
        """
        cfg = self.config
        items = [self._item(c) for c in cycles]
        self.group_sums = []
        gacc = 0

        def accumulate(index: int, cycle: int) -> int:
            nonlocal gacc
            item = items[index]
            gnext = gacc + (item.lane_sum << item.bsig)
            if not _fits(gnext, cfg.gacc_width):
                raise AssertionError(f"group accumulator overflow: {gnext}")
            if item.group_last:
                self.group_sums.append((cycle, gnext))
            gacc = 0 if item.group_last else gnext
            return gnext

        outputs, self.accept_cycles = run_group_pipeline(
            [it.group_last for it in items], [it.out_last for it in items],
            [it.scale for it in items], [it.exp for it in items], stages=cfg.stages,
            scale_bits=cfg.scale_bits, acc_width=cfg.acc_width, accumulate=accumulate)
        return outputs


def run_group_pipeline(group_last, out_last, scale, exp, *, stages: int, scale_bits: int,
                       acc_width: int | None, accumulate
                       ) -> tuple[list[tuple[int, int]], list[int]]:
    """Cycle-level model of what every PE with a :class:`hdl.pe.bitserial.GroupDequantizer`
    shares (``hdl.pe.bitserial.hand_off_group``): ``stages`` pipeline registers that advance
    together, the group hand-off, the bit-serial dequantizer, the output register and the
    stall rule. Payloads are offered every cycle and the output is always taken.

    When payload ``i`` leaves the last stage, ``accumulate(i, cycle)`` returns the group sum
    including it (the caller keeps its own group accumulator, clears it on ``group_last`` and
    checks its width). On ``group_last`` that sum goes to the dequantizer, which adds
    ``gs << j`` (``gs = sum << exp[i]``) into the output accumulator for every set bit ``j``
    of ``scale[i]``, LSB first, one step per cycle for ``D = max(scale_bits, 1)`` steps (every
    step adds when ``scale_bits`` is 0); for ``out_last`` a flush cycle then moves the output
    accumulator into the output register and clears it. The pipeline holds while a
    ``group_last`` payload waits in the last stage for the dequantizer, which takes a group
    when idle or in its last step of a group without ``out_last``.

    Parameters
    ----------
    group_last, out_last, scale, exp : sequences, one entry per payload
    stages : int
        Pipeline registers in front of the group accumulator.
    scale_bits : int
    acc_width : int or None
        Output accumulator width, checked every cycle (``None``: not checked, e.g. timing
        only).
    accumulate : callable ``(index, cycle) -> int``

    Returns
    -------
    outputs : list of (int, int)
        ``(cycle, acc)`` per output; cycle 0 is the cycle the first payload is accepted.
    accept_cycles : list of int
        The cycle each payload was accepted (stalls show as gaps).
    """
    n, d = len(group_last), max(int(scale_bits), 1)
    pipe: list[int | None] = [None] * stages
    r = flush = cur_last = gs = sc = acc = 0
    out_valid, out_value = False, 0
    outputs: list[tuple[int, int]] = []
    accepted: list[int] = []
    nxt = cycle = 0
    while nxt < n or any(p is not None for p in pipe) or r or flush or out_valid:
        if cycle > 64 * (n + 16) * (d + 2):
            raise AssertionError("the model did not drain")
        tail = pipe[-1]
        dq_ready = (r == 0 and not flush) or (r == 1 and not cur_last)
        adv = tail is None or not group_last[tail] or dq_ready
        if out_valid:  # the output register is valid this cycle and taken
            outputs.append((cycle, out_value))
        n_out_valid = False
        n_r, n_f, n_gs, n_sc, n_acc, n_last = r, flush, gs, sc, acc, cur_last
        if r:  # one dequantizer step, scale LSB first
            n_r = r - 1
            if scale_bits == 0 or sc & 1:
                n_acc = acc + gs
            n_gs, n_sc = gs << 1, sc >> 1
            if r == 1 and cur_last:
                n_f = 1
        elif flush:  # the output register is free (taken this cycle or empty)
            out_value, n_out_valid, n_acc, n_f = acc, True, 0, 0
        if adv and tail is not None:
            gnext = accumulate(tail, cycle)
            if group_last[tail]:
                n_gs, n_sc, n_r = gnext << int(exp[tail]), int(scale[tail]), d
                n_last = bool(out_last[tail])
        if acc_width is not None and not _fits(n_acc, acc_width):
            raise AssertionError(f"output accumulator overflow: {n_acc}")
        if adv:
            pipe = [None, *pipe[:-1]]
            if nxt < n:
                pipe[0] = nxt
                accepted.append(cycle)
                nxt += 1
        r, flush, gs, sc, acc, cur_last = n_r, n_f, n_gs, n_sc, n_acc, n_last
        out_valid = n_out_valid
        cycle += 1
    return outputs, accepted


# -- the PE kind (golden.pe_kind) ----------------------------------------------------------------
def _array_terms(cfg) -> int:
    return cfg.pe.terms_per_weight


def _array_dequant_cycles(cfg) -> int:
    return cfg.pe.dequant_cycles


def _array_latency(cfg) -> int:
    return cfg.pe.latency


def _array_acc_width(cfg) -> int:
    return cfg.pe.acc_width


def _any_term_formats(cfg) -> None:
    """Every format of :mod:`golden.terms` (``PEConfig`` has checked them already)."""


PE_KIND = PEKind(
    name="bitserial",
    summary="bit-serial term PE (hdl.pe.bitserial): T terms per weight-step, LUTs only",
    operand="terms", cycles_per_step=_array_terms, dequant_cycles=_array_dequant_cycles,
    latency=_array_latency, acc_width=_array_acc_width, check=_any_term_formats,
    zero_points=True, mixtures=True)

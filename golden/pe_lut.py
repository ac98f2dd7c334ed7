"""LUT-table PE (T-MAC style): the table identity, payloads, exact values and output timing.

Bit-exact twin of :class:`hdl.pe.lut_table.LutTablePE` and
:class:`hdl.pe.lut_table.LutTableBuilder`. The PE follows the stream contract of the other PEs
(docs/pe.md): per output ``acc = sum_g ((sum_{k in g} a_k * w_k) * scale_g) << exp_g``.

The table identity
------------------
For ``g`` activations ``a_0 .. a_{g-1}`` and an index ``c`` of ``g`` bits (``c_i`` = bit ``i``)::

    T[c] = sum_i (2 c_i - 1) a_i           S = sum_i a_i
    sum_i c_i a_i = (T[c] + S) / 2         (T[c] + S = 2 * the sum of the selected a_i)
    T[~c] = -T[c]                          (~c: all g bits complemented)

so the *half table* ``H[c] = T[c + 2**(g-1)]``, ``c < 2**(g-1)`` (the entries whose top
bit is set, where ``a_{g-1}`` counts ``+1``) holds everything: ``T[c] = H[c & m]`` when
``c_{g-1} = 1`` and ``T[c] = -H[~c & m]`` otherwise, ``m = 2**(g-1) - 1``; both cases read
``H[(c XOR (not c_{g-1}) * m) & m]`` and negate when ``c_{g-1}`` is clear. The upper half is
chosen because its entries lie in ``[-M, M - 1]``, ``M = g 2**(A-1)`` (the lower half reaches
``+M``), one bit fewer when ``M`` is a power of two; and its last entry ``H[m] = T[2**g - 1]``
is ``S``, the activation sum.

Unsigned ``B``-bit weight codes ``u_i = sum_j 2**j u_ij``, with ``c_j`` the index formed by
bit-plane ``j`` of the ``g`` codes (``u_ij`` is its bit ``i``)::

    sum_i u_i a_i = sum_j 2**j (T[c_j] + S) / 2 = (sum_j 2**j T[c_j] + (2**B - 1) S) / 2

Signed (two's-complement) ``B``-bit codes ``w_i``: with the offset-binary code
``u_i = w_i + 2**(B-1)`` (the two's-complement code with its top bit inverted; the inversion
of the sign plane is the negation ``-T[c] = T[~c]`` of the sign plane's term)::

    sum_i w_i a_i = sum_i u_i a_i - 2**(B-1) S = (sum_j 2**j T[c_j(u)] - S) / 2

So one datapath serves both: planes of ``u`` (MSB first, Horner ``P = 2 P + sum_k T_k[c_kj]``),
then ``2 * dot = P + corr`` with ``corr = -S`` (signed) or ``(2**B - 1) S`` (unsigned);
``P + corr`` is always even. Over a weight-step of ``L`` lanes (``L / g`` tables ``k``) the
step's correction is the sum of its tables' corrections.

Payloads (:func:`lut_pe_payloads`)
----------------------------------
A stream of ``n`` quantization groups is given as ``weights[n, k]`` (raw ``B``-bit codes),
``acts[n, k]`` (signed ``A``-bit), ``scale[n]``, ``exp[n]``, ``out_last[n]`` (as
:mod:`golden.pe_baseline`). Each weight-step of ``L`` weights takes ``B`` cycles, plane
``B-1`` first; a cycle carries ``plane`` (bit ``l`` = plane bit of lane ``l``'s code ``u``), the
``L / g`` half tables of the step's activations (the same for the step's ``B`` cycles),
``corr`` (the step's correction on its last plane, 0 on the others), ``step_last`` (plane 0),
``group_last`` (last plane of a group's last step), ``out_last``, ``scale``, ``exp``.

Output timing (:func:`lut_pe_output_cycles`)
--------------------------------------------
Register stages: the lookup (1), the adder tree (one per level, ``ceil(log2(L/g + 1))`` levels:
the ``L / g`` lookups and the correction), the Horner accumulator (1); then the group
accumulator hands a finished group sum to the LSB-first dequantizer of the bit-serial PE
(``D = max(scale_bits, 1)`` steps, then a flush cycle for an output). ``latency = stages +
D + 2`` cycles from the ``out_last`` payload to the output; the input stalls only when a group
ends while the dequantizer is busy (groups shorter than ``D`` cycles, ``D + 2`` after an
``out_last`` group).

In the array (``--pe lut``, :data:`LUT_PE_KIND`)
------------------------------------------------
Every position holds a :class:`hdl.pe.lut_table.LutTablePE` built from the array's parameters
(:func:`array_lut_params`): ``B`` = the code width of the one integer weight format (signed
``int<B>``, ``int<B>_sym``, ``q<W>_<F>``, or unsigned ``uint<B>``), ``A`` = the array's
activation width (INT8 codes, or the FP16/BF16 block mantissas with the row's group shift as
``exp``), ``g`` = :data:`ARRAY_TABLE_GROUP` (1 for an odd lane count). The column tops send
the step's ``B`` planes (``"planes"``, :mod:`golden.pe_kind`); per row a table builder after
the row front end makes the tables (``"tables"``; :func:`builder_latency` more front-end
stages), shared by the row's ``C`` PEs. The value is :func:`golden.gemm.gemm`'s: the identity
gives ``sum_k a_k w_k`` exactly, with ``w_k`` the code's integer, which the format check
proves equal to the weight level the term decomposition gives, code by code.
"""

from __future__ import annotations

import functools

import numpy as np

from . import terms as gterms
from .checks import check_int
from .pe import run_group_pipeline
from .pe_baseline import signed_width
from .pe_kind import PEKind

__all__ = [
    "ARRAY_TABLE_GROUP",
    "LUT_PE_KIND",
    "MAX_TABLE_GROUP",
    "array_lut_params",
    "builder_latency",
    "correction",
    "cycles_per_step",
    "full_table",
    "half_table",
    "lookup",
    "lut_dot",
    "lut_pe_latency",
    "lut_pe_output_cycles",
    "lut_pe_payloads",
    "lut_pe_reference",
    "lut_pe_stages",
    "lut_pe_widths",
    "plane_codes",
    "table_builder",
    "table_width",
    "tree_levels",
]

MAX_TABLE_GROUP = 6
# The table group of the array's LUT PEs: g = 2, the best ops/LUT4 measured (docs/pe.md: a
# lookup bit is one LUT4; g = 4 needs multiplexer trees and costs 2.6x the LUT4s).
ARRAY_TABLE_GROUP = 2


def cycles_per_step(w_bits: int, a_bits: int) -> int:
    """Cycles one weight-step of ``L`` weights takes: one per weight bit-plane, ``B``."""
    return check_int("w_bits", w_bits, 1)


def table_width(table_group: int, act_width: int) -> int:
    """Signed width of a half-table entry: ``H[c]`` lies in ``[-M, M - 1]``,
    ``M = g 2**(A-1)`` (``a_{g-1}`` counts ``+1`` and is at most ``2**(A-1) - 1``; ``-M`` is
    ``S`` with every ``a_i = -2**(A-1)``), so ``signed_width(-M, M - 1)``."""
    m = table_group << (act_width - 1)
    return signed_width(-m, m - 1)


def full_table(acts) -> np.ndarray:
    """``T[..., c] = sum_i (2 c_i - 1) a[..., i]`` for every ``c < 2**g`` (``g`` = last axis)."""
    a = np.asarray(acts, dtype=np.int64)
    g = a.shape[-1]
    c = np.arange(1 << g)
    signs = 2 * ((c[:, None] >> np.arange(g)[None, :]) & 1) - 1          # [2**g, g]
    return a @ signs.T


def half_table(acts) -> np.ndarray:
    """``H[c] = T[c + 2**(g-1)]``, ``c < 2**(g-1)``: what the table builder makes."""
    a = np.asarray(acts, dtype=np.int64)
    return full_table(a)[..., 1 << (a.shape[-1] - 1):]


def lookup(half, index, table_group: int):
    """``T[index]`` from the half table: ``H[idx]`` (``top`` set) or ``-H[idx]`` (clear),
    ``idx = (index XOR (1 - top) * m) & m``, ``top`` = bit ``g-1`` of ``index``."""
    half = np.asarray(half, dtype=np.int64)
    index = np.asarray(index, dtype=np.int64)
    mask = (1 << (table_group - 1)) - 1
    top = (index >> (table_group - 1)) & 1
    idx = (index ^ ((1 - top) * mask)) & mask
    value = np.take_along_axis(half, idx[..., None], axis=-1)[..., 0]
    return np.where(top == 1, value, -value)


def plane_codes(codes, weight_bits: int, signed_weights: bool = True) -> np.ndarray:
    """The unsigned codes ``u`` whose bit-planes index the tables: the code itself
    (unsigned), or the offset-binary ``w + 2**(B-1)`` = the code with its top bit inverted
    (signed)."""
    codes = np.asarray(codes, dtype=np.int64)
    if ((codes < 0) | (codes >> weight_bits != 0)).any():
        raise ValueError(f"weight codes must lie in 0..{(1 << weight_bits) - 1}")
    return codes ^ (1 << (weight_bits - 1)) if signed_weights else codes


def correction(act_sum, weight_bits: int, signed_weights: bool = True):
    """``corr`` of the identity: ``-S`` (signed weights) or ``(2**B - 1) * S`` (unsigned)."""
    s = np.asarray(act_sum, dtype=np.int64)
    return -s if signed_weights else ((1 << weight_bits) - 1) * s


def lut_dot(acts, codes, *, table_group: int, weight_bits: int,
            signed_weights: bool = True) -> np.ndarray:
    """``sum_k a_k * w_k`` over the last axis, the way the PE computes it: half tables of
    every ``g`` activations, plane indices of the codes ``u``, Horner over the planes MSB
    first, the correction, and the exact halving (module docstring)."""
    a = np.asarray(acts, dtype=np.int64)
    k = a.shape[-1]
    if k % table_group:
        raise ValueError(f"{k} elements are not a multiple of table_group={table_group}")
    groups = a.reshape(*a.shape[:-1], k // table_group, table_group)
    half = half_table(groups)                                    # [..., k/g, 2**(g-1)]
    u = plane_codes(codes, weight_bits, signed_weights).reshape(groups.shape)
    weights = 1 << np.arange(table_group)
    horner = np.zeros(a.shape[:-1], dtype=np.int64)
    for j in reversed(range(weight_bits)):
        index = (((u >> j) & 1) * weights).sum(axis=-1)          # [..., k/g]
        horner = 2 * horner + lookup(half, index, table_group).sum(axis=-1)
    total = horner + correction(a.sum(axis=-1), weight_bits, signed_weights)
    if (total & 1).any():
        raise AssertionError("P + corr is odd: the table identity does not hold")
    return total >> 1


def _product_range(weight_bits: int, act_width: int, signed_weights: bool) -> tuple[int, int]:
    w_lo, w_hi = ((-(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1) if signed_weights
                  else (0, (1 << weight_bits) - 1))
    a_lo, a_hi = -(1 << (act_width - 1)), (1 << (act_width - 1)) - 1
    corners = [w_lo * a_lo, w_lo * a_hi, w_hi * a_lo, w_hi * a_hi]
    return min(corners), max(corners)


def tree_levels(lanes: int, table_group: int) -> int:
    """Adder-tree levels of the PE: ``ceil(log2(L/g + 1))`` (``L/g`` lookups + correction)."""
    return (lanes // table_group).bit_length()


def lut_pe_stages(lanes: int, table_group: int) -> int:
    """Register stages before the group accumulator: lookup, tree levels, Horner."""
    return 1 + tree_levels(lanes, table_group) + 1


def lut_pe_latency(lanes: int, table_group: int, scale_bits: int) -> int:
    """Cycles from the ``out_last`` payload to its output: ``stages + D + 2``."""
    return lut_pe_stages(lanes, table_group) + max(int(scale_bits), 1) + 2


def builder_latency(table_group: int, lanes: int) -> int:
    """Table builder stages: one per doubling level (``g - 1``), one per level of the tree
    summing the ``L / g`` tables' sums (``ceil(log2(L/g))``), then the correction."""
    return table_group + (lanes // table_group - 1).bit_length()


def lut_pe_widths(*, lanes: int, table_group: int, weight_bits: int, act_width: int,
                  group_size: int, scale_bits: int, exp_bits: int, max_groups: int,
                  signed_weights: bool = True) -> dict[str, int]:
    """Two's-complement widths of the LUT-table PE, from the extreme products ``p_lo, p_hi``
    of a ``B``-bit weight (signed or unsigned) times a signed ``A``-bit activation,
    ``s_max = 2**scale_bits - 1`` (1 without scales), ``e_max = 2**exp_bits - 1``::

        table = signed_width(-M, M - 1), M = g 2**(A-1)  (a half-table entry; also the
                                                          one's complement of one)
        corr  = signed_width of corr over L activations  (-S, or (2**B - 1) S)
        step  = signed_width(2 L p_lo, 2 L p_hi)         (Horner accumulator: 2 * step dot;
                                                          exact modulo 2**step, so its
                                                          intermediate values may wrap)
        group = signed_width(G p_lo, G p_hi)
        acc   = signed_width(N G p_lo s_max 2**e_max, N G p_hi s_max 2**e_max)
    """
    p_lo, p_hi = _product_range(weight_bits, act_width, signed_weights)
    a_lo, a_hi = -(1 << (act_width - 1)), (1 << (act_width - 1)) - 1
    c_ends = [int(correction(lanes * a, weight_bits, signed_weights)) for a in (a_lo, a_hi)]
    s_max = (1 << scale_bits) - 1 if scale_bits else 1
    shift = 1 << ((1 << exp_bits) - 1)
    top = max_groups * group_size * s_max * shift
    return {"table": table_width(table_group, act_width),
            "corr": signed_width(min(c_ends), max(c_ends)),
            "step": signed_width(2 * lanes * p_lo, 2 * lanes * p_hi),
            "group": signed_width(group_size * p_lo, group_size * p_hi),
            "acc": signed_width(top * p_lo, top * p_hi)}


def table_builder(acts, *, table_group: int, weight_bits: int,
                  signed_weights: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The table builder (array edge): ``acts[..., L]`` -> ``(tables[..., L/g, 2**(g-1)],
    corr[...])``, ``corr`` the weight-step's correction (from ``S = sum_k H_k[m]``)."""
    a = np.asarray(acts, dtype=np.int64)
    lanes = a.shape[-1]
    if lanes % table_group:
        raise ValueError(f"lanes={lanes} is not a multiple of table_group={table_group}")
    tables = half_table(a.reshape(*a.shape[:-1], lanes // table_group, table_group))
    return tables, correction(tables[..., -1].sum(axis=-1), weight_bits, signed_weights)


def _segment_sums(values, out_last) -> np.ndarray:
    out_last = np.asarray(out_last, dtype=bool).reshape(-1)
    if out_last.size == 0 or not out_last[-1]:
        raise ValueError("out_last must be set on the last group")
    ends = np.flatnonzero(out_last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return np.add.reduceat(np.asarray(values, dtype=object), starts)


def lut_pe_reference(weights, acts, scale, exp, out_last, *, table_group: int,
                     weight_bits: int, scale_bits: int = 8,
                     signed_weights: bool = True) -> np.ndarray:
    """Exact outputs (object array of Python ints), group sums through :func:`lut_dot`::

        acc_j = sum_{g in output j} (gsum_g * scale_g) << exp_g
    """
    gsum = lut_dot(acts, weights, table_group=table_group, weight_bits=weight_bits,
                   signed_weights=signed_weights)
    factor = np.asarray(scale, dtype=object) if scale_bits else 1
    contrib = gsum.astype(object) * factor * (1 << np.asarray(exp, dtype=object))
    return _segment_sums(np.broadcast_to(contrib, gsum.shape), out_last)


def lut_pe_payloads(weights, acts, scale, exp, out_last, *, lanes: int, table_group: int,
                    weight_bits: int, signed_weights: bool = True) -> dict:
    """Per-cycle fields of the PE (module docstring): ``plane`` [cycles] (lane ``l`` at bit
    ``l``), ``tables`` [cycles, L/g, 2**(g-1)], ``corr``, ``step_last``, ``group_last``,
    ``out_last``, ``scale``, ``exp`` [cycles]; ``B`` cycles per weight-step, plane ``B-1``
    first."""
    w = np.asarray(weights, dtype=np.int64)
    a = np.asarray(acts, dtype=np.int64)
    n, k = w.shape
    if a.shape != w.shape:
        raise ValueError(f"acts {a.shape} and weights {w.shape} differ")
    if k % lanes:
        raise ValueError(f"elements per group ({k}) must be a multiple of lanes={lanes}")
    steps, b = k // lanes, weight_bits
    u = plane_codes(w, b, signed_weights).reshape(n, steps, lanes)
    tables, corr = table_builder(a.reshape(n, steps, lanes), table_group=table_group,
                                 weight_bits=b, signed_weights=signed_weights)
    planes = np.arange(b)[::-1]                                   # MSB first
    bits = (u[:, :, None, :] >> planes[None, None, :, None]) & 1    # [n, steps, B, L]
    plane = (bits << np.arange(lanes)).sum(axis=-1)
    step_last = np.zeros((n, steps, b), dtype=np.int64)
    step_last[:, :, -1] = 1
    group_last = np.zeros_like(step_last)
    group_last[:, -1, -1] = 1
    per_group = np.ones((1, steps, b), dtype=np.int64)
    return {
        "plane": plane.reshape(-1),
        "tables": np.repeat(tables[:, :, None], b, axis=2).reshape(
            -1, lanes // table_group, 1 << (table_group - 1)),
        "corr": (corr[:, :, None] * step_last).reshape(-1),
        "step_last": step_last.reshape(-1),
        "group_last": group_last.reshape(-1),
        "out_last": (group_last * np.asarray(out_last, dtype=np.int64)[:, None, None])
        .reshape(-1),
        "scale": (np.asarray(scale, dtype=np.int64)[:, None, None] * per_group).reshape(-1),
        "exp": (np.broadcast_to(np.asarray(exp, dtype=np.int64), (n,))[:, None, None]
                * per_group).reshape(-1),
    }


def lut_pe_output_cycles(group_last, out_last, *, stages: int, scale_bits: int) -> np.ndarray:
    """Cycle of each output (payloads offered every cycle, the sink always ready).

    Register-level model of the RTL's control: ``stages`` pipeline registers that all advance
    together; a ``group_last`` payload in the last one hands its group sum to the dequantizer
    (``D = max(scale_bits, 1)`` steps; for ``out_last`` then a flush cycle into the output
    register) and holds the pipeline while the dequantizer cannot take it: it takes a load
    when idle, or in its last step of a group without ``out_last``. Cycle 0 is the cycle the
    first payload is accepted. The timing of :func:`golden.pe.run_group_pipeline`, which the
    bit-serial and bit-plane PE models share (the values do not matter here).
    """
    group_last = np.asarray(group_last, dtype=bool)
    zeros = np.zeros(len(group_last), dtype=np.int64)
    outputs, _ = run_group_pipeline(group_last, np.asarray(out_last, dtype=bool), zeros, zeros,
                                    stages=stages, scale_bits=scale_bits, acc_width=None,
                                    accumulate=lambda index, cycle: 0)
    return np.array([cycle for cycle, _ in outputs], dtype=np.int64)


# -- the LUT-table PE as an array PE kind (golden.pe_kind) ---------------------------------------
def _integer_format(cfg) -> tuple[int, bool]:
    """``(B, signed)`` of the array's one integer weight format, after checking that every
    code's weight level (the term decomposition's, :func:`golden.gemm.weight_levels`) is the
    code's integer: two's complement, or the code itself for ``uint<B>``."""
    return _integer_format_of(tuple(cfg.formats))


@functools.lru_cache(maxsize=64)
def _integer_format_of(names: tuple[str, ...], who: str = "lut") -> tuple[int, bool]:
    """``(B, signed)`` of the one integer format ``names``; the errors name the ``who`` PE
    (golden.pe_bitplane's array kind checks its weights with this too)."""
    formats = list(names)
    geo = gterms.geometry(formats)
    if len(formats) != 1 or geo.path != "booth" or geo.has_register:
        raise ValueError(f"the {who} PE reads the bit-planes of one integer format (int<B>, "
                         f"int<B>_sym, uint<B>, q<W>_<F>), not {formats}")
    bits = geo.code_bits
    if not 2 <= bits <= 8:
        raise ValueError(f"the {who} PE takes 2- to 8-bit weight codes; {formats[0]!r} has "
                         f"{bits}")
    signed = not formats[0].startswith("uint")
    codes = np.arange(1 << bits, dtype=np.int64)
    values = codes - ((codes >> (bits - 1)) << bits) if signed else codes
    levels = gterms.terms_value(gterms.decompose(codes, formats, None, None))
    if not np.array_equal(np.asarray(levels, dtype=np.int64), values):
        raise ValueError(f"weight format {formats[0]!r}: its levels are not its codes' "
                         f"integers, which the {who} PE's bit-planes encode")
    return bits, signed


def array_lut_params(cfg) -> dict:
    """:class:`hdl.pe.lut_table.LutTablePE` and ``LutTableBuilder`` parameters of an array built
    with ``cfg`` (a :class:`golden.gemm.ArrayConfig`): ``lanes``, ``weight_bits``,
    ``act_width``, ``table_group`` (:data:`ARRAY_TABLE_GROUP`, 1 when it does not divide the
    lanes) and ``signed_weights``."""
    bits, signed = _integer_format(cfg)
    group = ARRAY_TABLE_GROUP if cfg.lanes % ARRAY_TABLE_GROUP == 0 else 1
    return {"lanes": cfg.lanes, "weight_bits": bits, "act_width": cfg.act_width,
            "table_group": group, "signed_weights": signed}


def _lut_cycles(cfg) -> int:
    p = array_lut_params(cfg)
    return cycles_per_step(p["weight_bits"], p["act_width"])


def _lut_dequant_cycles(cfg) -> int:
    """The bit-serial PE's dequantizer: ``max(scale_bits, 1)`` steps."""
    return max(cfg.scale_bits, 1)


def _lut_latency(cfg) -> int:
    p = array_lut_params(cfg)
    return lut_pe_latency(p["lanes"], p["table_group"], cfg.scale_bits)


def _lut_acc_width(cfg) -> int:
    return lut_pe_widths(**array_lut_params(cfg), group_size=cfg.group_size,
                         scale_bits=cfg.scale_bits, exp_bits=cfg.act_exp_bits,
                         max_groups=cfg.max_groups)["acc"]


def _lut_row_latency(cfg) -> int:
    """The row's table builder, after the row front end."""
    p = array_lut_params(cfg)
    return builder_latency(p["table_group"], p["lanes"])


def _check_lut(cfg) -> None:
    """One integer format of 2..8 bits whose levels are its codes' integers; activations of
    at most 16 bits (the builder's and the PE's limit)."""
    _integer_format(cfg)
    if not 2 <= cfg.act_width <= 16:
        raise ValueError(f"the lut PE takes 2- to 16-bit activations, not {cfg.act_width}")


LUT_PE_KIND = PEKind(
    name="lut",
    summary="LUT-table PE (hdl.pe.lut_table, T-MAC style): B weight bit-planes per "
            "weight-step index tables of activation sums built once per row; LUTs only",
    operand="planes", cycles_per_step=_lut_cycles, dequant_cycles=_lut_dequant_cycles,
    latency=_lut_latency, acc_width=_lut_acc_width, check=_check_lut,
    row_operand="tables", row_latency=_lut_row_latency)

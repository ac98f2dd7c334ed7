"""Baseline processing elements: the exact results, per-cycle payloads and output timing.

Bit-exact twins of :class:`hdl.pe.baseline.IntPE` and :class:`hdl.pe.baseline.MinifloatPE`, the
two baselines the bit-serial PE (:mod:`golden.pe`) is measured against. Both follow the stream
contract of the bit-serial PE: one payload per cycle carries ``L`` lanes, ``group_last``
closes a group (a minifloat block), ``out_last`` closes an output; one output per
``out_last``.

Data model
----------
A stream of ``n`` *groups* (blocks), each of at most ``G`` elements, is given as arrays
``[n, k]`` (``k`` elements per group, ``k`` a multiple of the lane count ``L``; the same ``k``
for every group of one call, ragged last groups are covered by zero padding or a separate
call) plus per-group arrays (``scale``, ``exp``, ``out_last``). ``out_last[-1]`` must be set:
output ``j`` is the sum over the groups from the one after the previous ``out_last`` up to
and including its own.

Integer PE (:func:`int_pe_reference`)
-------------------------------------
Weights are raw two's-complement codes of ``weight_bits`` bits, activations signed integers::

    gsum_g = sum_k w[g, k] * a[g, k]
    acc_j  = sum_{g in output j} (gsum_g * scale_g) << exp_g

``scale_g`` is the unsigned group scale code (``scale_bits = 0``: no scale, factor 1).

Minifloat PE (:func:`minifloat_pe_reference`)
---------------------------------------------
Activation and weight codes of two minifloat (or small integer) formats; products are the exact
fixed-point products of :func:`golden.minifloat_arith.exact_product`, ``P * 2**-F`` with
``F = F_a + F_w``::

    bsum_b = sum_k P(a[b, k], w[b, k])                 (exact block sum, Kulisch style)
    acc_j  = sum_{b in output j} bsum_b << exp_b       value = acc_j * 2**(e_min - F)
    invalid_j = any NaN or Inf operand (or Inf x 0) in output j

NaN/Inf products contribute 0 to ``acc`` and set ``invalid``. ``exp_b`` is the block's shift
relative to the tile's smallest exponent ``e_min`` (MX: ``exp_b = (scale_a - 127) +
(scale_w - 127) - e_min`` from the two E8M0 block scales, computed where the tile's ``e_min``
is known; the PE only shifts).

Output timing (:func:`int_pe_output_cycles`, :func:`minifloat_pe_output_cycles`)
--------------------------------------------------------------------------------
Cycle 0 is the cycle the first payload is accepted; payloads are offered every cycle and outputs
taken as soon as they are valid. The minifloat PE never stalls: the output of the payload with
``out_last`` accepted in cycle ``c`` is valid in cycle ``c + 6``. The integer PE multiplies the
group sum by the scale bit-serially (``scale_bits`` cycles, MSB first, as the bit-serial PE);
its pipeline (products, adder tree, group accumulator, dequantizer, output register) is modelled
register by register: a group_last payload that reaches the group accumulator while the
dequantizer is still busy stalls the input, so groups of at least ``scale_bits + 1`` cycles run
at one payload per cycle and an output appears ``4 + scale_bits`` cycles after its last payload.
"""

from __future__ import annotations

import numpy as np

from . import terms as gterms
from .minifloat_arith import exact_product, operand_format, product_frac_bits
from .pe_kind import PEKind

__all__ = [
    "INT_PE_KIND",
    "MINIFLOAT_PE_KIND",
    "MINIFLOAT_PE_LATENCY",
    "int_pe_latency",
    "int_pe_output_cycles",
    "int_pe_payloads",
    "int_pe_reference",
    "minifloat_acc_width",
    "minifloat_array_operands",
    "minifloat_block_width",
    "minifloat_frac_bits",
    "minifloat_pe_output_cycles",
    "minifloat_pe_payloads",
    "minifloat_pe_reference",
    "pack_lanes",
    "signed_width",
]

# Multiplier (3) + adder tree (1) + block accumulator (1) + output register (1).
MINIFLOAT_PE_LATENCY = 6


def signed_width(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    return max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length()) + 1


def int_pe_widths(*, lanes: int, weight_bits: int, act_width: int, group_size: int,
                  scale_bits: int, exp_bits: int, max_groups: int) -> dict[str, int]:
    """Tight two's-complement widths of the integer PE (:class:`hdl.pe.baseline.IntPE`), from
    the extreme products ``p_lo, p_hi`` of an ``int(weight_bits) x int(act_width)``
    multiply, ``s_max = 2**scale_bits - 1`` (1 without scales), ``e_max = 2**exp_bits - 1``::

        product = signed_width(p_lo, p_hi)
        tree    = signed_width(L p_lo, L p_hi)
        group   = signed_width(G p_lo, G p_hi)
        dequant = signed_width(G p_lo s_max, G p_hi s_max)
        acc     = signed_width(N G p_lo s_max 2**e_max, N G p_hi s_max 2**e_max)
    """
    w_lo, w_hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    a_lo, a_hi = -(1 << (act_width - 1)), (1 << (act_width - 1)) - 1
    corners = [w_lo * a_lo, w_lo * a_hi, w_hi * a_lo, w_hi * a_hi]
    p_lo, p_hi = min(corners), max(corners)
    s_max = (1 << scale_bits) - 1 if scale_bits else 1
    shift = 1 << ((1 << exp_bits) - 1)
    G = group_size
    return {"product": signed_width(p_lo, p_hi),
            "tree": signed_width(lanes * p_lo, lanes * p_hi),
            "group": signed_width(G * p_lo, G * p_hi),
            "dequant": signed_width(G * p_lo * s_max, G * p_hi * s_max),
            "acc": signed_width(max_groups * G * p_lo * s_max * shift,
                                max_groups * G * p_hi * s_max * shift)}


def int_pe_latency(scale_bits: int) -> int:
    """Cycles from the out_last payload to its output: products, tree, group accumulator,
    ``scale_bits`` dequant steps, output register."""
    return 4 + int(scale_bits)


def minifloat_block_width(a_format, w_format, block: int) -> int:
    """Kulisch block accumulator width: ``bit_length(block * max_mag_a * max_mag_w) + 1``."""
    a, w = operand_format(a_format, "a_format"), operand_format(w_format, "w_format")
    return (int(block) * a.max_mag * w.max_mag).bit_length() + 1


def minifloat_acc_width(a_format, w_format, block: int, max_blocks: int, exp_bits: int) -> int:
    """Output accumulator width of the minifloat PE: ``bit_length(max_blocks * block *
    max_mag_a * max_mag_w * 2**(2**exp_bits - 1)) + 1``."""
    a, w = operand_format(a_format, "a_format"), operand_format(w_format, "w_format")
    bound = int(max_blocks) * int(block) * a.max_mag * w.max_mag << ((1 << exp_bits) - 1)
    return bound.bit_length() + 1


def _segments(out_last) -> np.ndarray:
    out_last = np.asarray(out_last, dtype=bool).reshape(-1)
    if out_last.size == 0 or not out_last[-1]:
        raise ValueError("out_last must be set on the last group")
    return np.flatnonzero(out_last)


def _segment_sums(values: np.ndarray, out_last) -> np.ndarray:
    ends = _segments(out_last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return np.add.reduceat(np.asarray(values, dtype=object), starts)


def _signed_codes(codes, bits: int) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int64)
    if ((codes < 0) | (codes >> bits != 0)).any():
        raise ValueError(f"weight codes must lie in 0..{(1 << bits) - 1}")
    return codes - ((codes >> (bits - 1)) << bits)


def int_pe_reference(weights, acts, scale, exp, out_last, *, weight_bits: int = 8,
                     scale_bits: int = 8) -> np.ndarray:
    """Exact outputs of the integer PE (object array of Python ints, one per output).

    ``weights`` are raw codes ``[n, k]``, ``acts`` signed integers ``[n, k]``, ``scale``/``exp``
    per group ``[n]`` (``scale`` ignored when ``scale_bits == 0``), ``out_last`` per group.
    """
    w = _signed_codes(weights, weight_bits)
    a = np.asarray(acts, dtype=np.int64)
    gsum = (w * a).sum(axis=-1)
    factor = np.asarray(scale, dtype=object) if scale_bits else 1
    contrib = (gsum.astype(object) * factor) * (1 << np.asarray(exp, dtype=object))
    return _segment_sums(np.broadcast_to(contrib, gsum.shape), out_last)


def minifloat_pe_reference(a_codes, w_codes, exp, out_last, *, a_format: str,
                           w_format: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(acc, invalid)`` of the minifloat PE, one per output (see the module doc).

    ``acc`` is an object array of Python ints (value ``acc * 2**-F``, ``F`` =
    :func:`golden.minifloat_arith.product_frac_bits`), ``invalid`` a bool array.
    """
    p, flags = exact_product(np.asarray(a_codes), np.asarray(w_codes), a_format, w_format)
    bsum = np.asarray(p, dtype=object).sum(axis=-1)
    bad = ((flags & 3) != 0).any(axis=-1)
    contrib = bsum * (1 << np.asarray(exp, dtype=object))
    acc = _segment_sums(np.broadcast_to(contrib, bsum.shape), out_last)
    invalid = _segment_sums(bad.astype(np.int64), out_last).astype(np.int64) != 0
    return acc, invalid


def minifloat_frac_bits(a_format, w_format) -> int:
    """``F``: the accumulator's binary point (``value = acc * 2**-F`` at exp 0)."""
    return product_frac_bits(a_format, w_format)


def pack_lanes(values, width: int) -> np.ndarray:
    """Pack ``values[..., L]`` (lane 0 at the LSB, ``width`` bits each, two's complement)."""
    values = np.asarray(values, dtype=object)
    mask = (1 << width) - 1
    packed = np.zeros(values.shape[:-1], dtype=object)
    for lane in range(values.shape[-1]):
        packed = packed + np.array([(int(v) & mask) << (lane * width)
                                    for v in values[..., lane].reshape(-1)],
                                   dtype=object).reshape(values.shape[:-1])
    return packed


def _cycles(per_group: dict, k: int, lanes: int, last_name: str) -> dict:
    if k % lanes:
        raise ValueError(f"elements per group ({k}) must be a multiple of lanes={lanes}")
    steps = k // lanes
    n = len(per_group["out_last"])
    last = np.zeros((n, steps), dtype=np.int64)
    last[:, -1] = 1
    fields = {last_name: last.reshape(-1),
              "out_last": (last * np.asarray(per_group["out_last"], dtype=np.int64)[:, None])
              .reshape(-1)}
    for name in ("scale", "exp"):
        if name in per_group:
            fields[name] = np.repeat(np.asarray(per_group[name], dtype=np.int64), steps)
    return fields


def int_pe_payloads(weights, acts, scale, exp, out_last, *, lanes: int) -> dict:
    """Per-cycle fields of the integer PE: ``weights``/``acts`` ``[cycles, L]`` and the
    ``group_last``, ``out_last``, ``scale``, ``exp`` columns (scale/exp repeated every cycle;
    the PE reads them on group_last)."""
    w = np.asarray(weights, dtype=np.int64)
    n, k = w.shape
    fields = _cycles({"scale": scale, "exp": np.broadcast_to(exp, (n,)),
                      "out_last": out_last}, k, lanes, "group_last")
    fields["weights"] = w.reshape(-1, lanes)
    fields["acts"] = np.asarray(acts, dtype=np.int64).reshape(-1, lanes)
    return fields


def minifloat_pe_payloads(a_codes, w_codes, exp, out_last, *, lanes: int) -> dict:
    """Per-cycle fields of the minifloat PE: ``acts``/``weights`` codes ``[cycles, L]`` and the
    ``group_last``, ``out_last``, ``exp`` columns."""
    a = np.asarray(a_codes, dtype=np.int64)
    n, k = a.shape
    fields = _cycles({"exp": np.broadcast_to(exp, (n,)), "out_last": out_last}, k, lanes,
                     "group_last")
    fields["acts"] = a.reshape(-1, lanes)
    fields["weights"] = np.asarray(w_codes, dtype=np.int64).reshape(-1, lanes)
    return fields


def int_pe_output_cycles(group_last, out_last, scale_bits: int) -> np.ndarray:
    """Cycle of each output of the integer PE (payloads offered every cycle, sink always ready).

    A register-level model of the RTL: stage 1 (products) and stage 2 (adder tree) shift when the
    input is enabled; a group_last payload leaving stage 2 loads the dequantizer, which then
    needs ``scale_bits`` steps and one accumulate cycle; the input is disabled while a
    group_last payload waits in stage 2 for a busy dequantizer.
    """
    group_last = np.asarray(group_last, dtype=bool)
    out_last = np.asarray(out_last, dtype=bool)
    n = len(group_last)
    s1 = s2 = dq_item = None
    dq_count = 0
    nxt, cycle, outputs = 0, 0, []
    pending_output = None
    while nxt < n or s1 is not None or s2 is not None or dq_item is not None \
            or pending_output is not None:
        if pending_output is not None:
            outputs.append(cycle)
        fire = dq_item is not None and dq_count == 0
        can_load = dq_item is None or fire
        enable = not (s2 is not None and group_last[s2] and not can_load)
        pending_output = dq_item if fire and out_last[dq_item] else None
        if fire:
            dq_item = None
        elif dq_item is not None:
            dq_count -= 1
        if enable:
            if s2 is not None and group_last[s2]:
                dq_item, dq_count = s2, scale_bits
            s2, s1 = s1, (nxt if nxt < n else None)
            nxt += nxt < n
        cycle += 1
    # Cycle 0 is the first accepted payload, which was accepted in simulated cycle 0.
    return np.array(outputs, dtype=np.int64)


def minifloat_pe_output_cycles(out_last) -> np.ndarray:
    """Cycle of each output of the minifloat PE: ``index of its out_last payload + 6``."""
    return np.flatnonzero(np.asarray(out_last, dtype=bool)) + MINIFLOAT_PE_LATENCY


# -- the int PE as an array PE kind (golden.pe_kind) ---------------------------------------------
def _one_cycle(cfg) -> int:
    return 1


def _int_dequant_cycles(cfg) -> int:
    """``scale_bits`` dequantizer steps plus its accumulate cycle (hdl.pe.baseline.IntPE)."""
    return cfg.scale_bits + 1


def _int_latency(cfg) -> int:
    return int_pe_latency(cfg.scale_bits)


def _int_acc_width(cfg) -> int:
    """:func:`int_pe_widths` of a ``code_bits x act_width`` multiply with the array's scales,
    shifts and groups."""
    return int_pe_widths(lanes=cfg.lanes, weight_bits=cfg.geometry.code_bits,
                         act_width=cfg.act_width, group_size=cfg.group_size,
                         scale_bits=cfg.scale_bits, exp_bits=cfg.act_exp_bits,
                         max_groups=cfg.max_groups)["acc"]


def _check_int_formats(cfg) -> None:
    """The int PE multiplies two's-complement codes: one signed integer (or fixed-point)
    format, no mixture."""
    formats = cfg.formats
    geo = gterms.geometry(list(formats))
    if len(formats) != 1 or geo.path != "booth" or formats[0].startswith("uint"):
        raise ValueError(f"the int PE multiplies one signed integer format (int<B>, "
                         f"int<B>_sym, q<W>_<F>), not {list(formats)}")


INT_PE_KIND = PEKind(
    name="int",
    summary="bit-parallel integer PE (hdl.pe.baseline.IntPE): L multiplies per cycle, on DSPs",
    operand="codes", cycles_per_step=_one_cycle, dequant_cycles=_int_dequant_cycles,
    latency=_int_latency, acc_width=_int_acc_width, check=_check_int_formats)


# -- the minifloat PE as an array PE kind (golden.pe_kind) ---------------------------------------
def minifloat_array_operands(cfg) -> tuple[str, str, int]:
    """``(a_format, w_format, exp_bits)`` of the minifloat PE in an array built with ``cfg``.

    The activations are the array's signed mantissas (``int<act_width>``: INT8 codes, or the
    block converter's mantissas of FP16/BF16 tokens), the weights the one weight format's codes.
    A group-scale code ``2**j`` (``j <= scale_bits - 1``) is a shift added to the row's group
    shift (``< 2**X``): ``exp_bits = bit_length(2**X - 1 + scale_bits - 1)``.
    """
    a_format = f"int{cfg.act_width}"
    w_format = cfg.formats[0]
    exp_bits = ((1 << cfg.act_exp_bits) - 1 + max(cfg.scale_bits - 1, 0)).bit_length()
    return a_format, w_format, exp_bits


def _minifloat_acc_width(cfg) -> int:
    a_format, w_format, exp_bits = minifloat_array_operands(cfg)
    return minifloat_acc_width(a_format, w_format, cfg.group_size, cfg.max_groups, exp_bits)


def _minifloat_latency(cfg) -> int:
    return MINIFLOAT_PE_LATENCY


def _no_dequantizer(cfg) -> int:
    """Group ends may follow each other in consecutive cycles (no dequantizer)."""
    return 1


def _check_minifloat(cfg) -> None:
    """One weight format the exact multiplier takes, whose codes' units are the term
    decomposition's (so the PE's products are ``a * level``), and activations of at most 8
    bits."""
    formats = list(cfg.formats)
    if len(formats) != 1:
        raise ValueError(f"the minifloat PE multiplies one weight format, not the mixture "
                         f"{formats}")
    try:
        w = operand_format(formats[0], "w_format")
    except ValueError:
        raise ValueError(f"the minifloat PE multiplies minifloat or int<B> codes of at most 8 "
                         f"bits, not {formats[0]!r}") from None
    geo = gterms.geometry(formats)
    if geo.has_register:
        raise ValueError(f"weight format {formats[0]!r} reads the special-value register; "
                         f"the minifloat PE multiplies plain codes")
    if 2.0 ** -w.frac_bits != geo.unit:
        raise ValueError(f"weight format {formats[0]!r}: the minifloat PE's product unit "
                         f"2**-{w.frac_bits} differs from its code unit")
    if cfg.act_width > 8:
        raise ValueError(f"the minifloat PE multiplies activations of at most 8 bits; "
                         f"mant_width={cfg.act_width} (use mant_width <= 8 or INT8 "
                         f"activations)")
    if cfg.scale_bits < 1:
        raise ValueError("the minifloat PE takes power-of-two group scales: scale_bits >= 1")


MINIFLOAT_PE_KIND = PEKind(
    name="minifloat",
    summary="exact minifloat PE (hdl.pe.baseline.MinifloatPE): L products per cycle, "
            "power-of-two group scales as shifts (MX)",
    operand="codes", cycles_per_step=_one_cycle, dequant_cycles=_no_dequantizer,
    latency=_minifloat_latency, acc_width=_minifloat_acc_width, check=_check_minifloat,
    scale="shift")

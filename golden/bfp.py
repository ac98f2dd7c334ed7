"""Block floating point for activations: the golden model of the activation block converter.

A *block* is a vector of N activations (FP16 or BF16 bit patterns). The converter gives it one
shared exponent ``block_exp`` and N two's-complement integer mantissas of ``mant_width`` (W)
bits, so the PEs downstream do pure integer arithmetic (docs/array.md, "Datapath decisions").

Definition (exact; :mod:`hdl.arith.act_block` equals it bit for bit)
--------------------------------------------------------------------
Per element with sign ``s``, exponent field ``e`` and mantissa field ``m`` of a format with
``E`` exponent bits, ``M`` mantissa bits and bias ``B`` (FP16: 5, 10, 15; BF16: 8, 7, 127):

* *special*: ``e == 2**E - 1`` (Inf or NaN). Special elements are flagged in ``invalid``, take
  no part in the shared exponent and output mantissa 0 (so one Inf does not flush the rest of
  the block to zero; the flag tells the consumer not to trust the block).
* effective exponent ``eff = max(e, 1)`` for a nonzero finite element (a subnormal has the
  effective exponent 1), ``eff = 0`` for a zero (either sign) or a special element;
  significand ``sig = (e != 0) * 2**M + m`` (0 for specials), so the element's value is
  ``x = (-1)**s * sig * 2**(eff - B - M)``.
* ``block_exp = max(eff)`` over the block: the largest effective exponent of the nonzero finite
  elements; a block with no nonzero finite element has ``block_exp = 0`` and mantissas 0.
* ``K = B + W - 2`` and the element is represented by ``mant * 2**(block_exp - K)``: the
  aligned magnitude ``a = sig * 2**(W - 2 - M - (block_exp - eff))`` puts the hidden bit of the
  largest element at bit ``W - 2``, just below the sign.
* rounding of ``a`` to an integer magnitude ``q``:

  - ``"trunc"``: toward zero (``q = floor(a)``, sign applied after). Chosen over floor of the
    two's-complement value because the input is sign-magnitude: it needs no sticky bit and no
    incrementer, and its error is symmetric (no -1/2 LSB bias accumulating in dot products).
  - ``"rne"``: to nearest, ties to even, on the magnitude (RNE is symmetric, so this equals
    RNE of the signed value).

* saturation: ``q`` is clamped to ``2**(W-1) - 1``. Only RNE can reach ``2**(W-1)``, only for
  an element with ``eff == block_exp`` and only when ``W < M + 2`` (the largest element has
  bits below the mantissa LSB: FP16 ``W <= 11``, BF16 ``W <= 8``); those lanes are flagged in
  ``saturated``. The range is symmetric: ``-2**(W-1)`` is never produced.
* ``mant = (-1)**s * q``; negative zero gives 0.

Error bound (proved on random blocks in ``tests/test_bfp.py``): with ``lsb = 2**(block_exp -
K)``, ``|x - mant * lsb| < lsb`` for ``"trunc"``; ``|x - mant * lsb| <= lsb / 2`` for ``"rne"``
except on saturated lanes, where it is ``< lsb``.

Alignment to a given exponent (:func:`block_align`, :mod:`hdl.arith.act_block`'s
``ActBlockAligner`` in the array's row front end): the same mantissas with ``block_exp``
supplied instead of computed, for a block whose exponent is known to be at least every lane's
``eff`` (the array's anchor, ``max(gexp, base)``, where ``gexp`` is the largest ``eff`` of the
whole weight group the block belongs to). Then ``block_convert(bits)`` equals ``block_align(bits,
max(eff))``. A nonzero finite lane with ``eff > block_exp`` cannot be aligned: it is flagged in
``invalid`` and gives mantissa 0, as a special lane does.

INT8 activations (``act_format="int8"``) are already integers with a per-token scale applied
elsewhere: each 16-bit word must hold an int8 value sign-extended to 16 bits (an int16 in
[-128, 127]); the converter passes it through unchanged with ``block_exp = 0`` and ``K = 0``.
A word outside that range is flagged ``invalid`` and gives mantissa 0. INT8 needs ``W >= 8``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import formats
from .checks import check_choice, check_int

__all__ = [
    "ACT_FORMATS",
    "CONVERTER_FLOAT_POST_STAGES",
    "MAX_MANT_WIDTH",
    "MIN_MANT_WIDTH",
    "ROUNDINGS",
    "BlockFlags",
    "aligner_latency",
    "block_align",
    "block_convert",
    "block_dequantize",
    "block_exp_width",
    "check_block_params",
    "converter_latency",
    "float_fields",
    "scale_offset",
]

ACT_FORMATS = ("int8", "fp16", "bf16")  # every activation format of the project, one table
ROUNDINGS = ("trunc", "rne")
MIN_MANT_WIDTH = 2
MAX_MANT_WIDTH = 24
MAX_CONVERTER_LANES = 64
# Stages of the RTL aligner (FP formats), which the converter runs after its exponent max tree:
# the shift amount, the alignment shift in two steps, the rounding and output register
# (hdl/arith/act_block.py).
CONVERTER_FLOAT_POST_STAGES = 4


class BlockFlags(NamedTuple):
    """Per-lane flags of :func:`block_convert` (boolean arrays shaped like the mantissas)."""

    invalid: np.ndarray
    """The lane held Inf/NaN (FP formats) or a word that is not a sign-extended int8."""
    saturated: np.ndarray
    """RNE rounded the lane's magnitude up to ``2**(W-1)``; it was clamped to ``2**(W-1)-1``."""


def check_block_params(act_format: str, mant_width: int, rounding: str) -> None:
    """Raise ``TypeError``/``ValueError`` naming the parameter when it is not supported."""
    check_choice("act_format", act_format, ACT_FORMATS)
    check_int("mant_width", mant_width, 8 if act_format == "int8" else MIN_MANT_WIDTH,
              MAX_MANT_WIDTH)
    check_choice("rounding", rounding, ROUNDINGS)


def converter_latency(lanes: int, act_format: str) -> int:
    """Latency in cycles of the RTL block converter (:mod:`hdl.arith.act_block`) for ``lanes``
    activations per block: 2 for INT8 (a pass-through in two registers); for FP16/BF16 the
    exponent max tree, one stage per level (``max(1, ceil(log2 lanes))``), then the aligner's
    :func:`aligner_latency`. The RTL builds exactly this many stages and checks it when it
    elaborates."""
    lanes = check_int("lanes", lanes, 1, MAX_CONVERTER_LANES)
    check_choice("act_format", act_format, ACT_FORMATS)
    if act_format == "int8":
        return 2
    return max(1, (lanes - 1).bit_length()) + aligner_latency(act_format)


def aligner_latency(act_format: str) -> int:
    """Latency in cycles of the RTL block aligner (``ActBlockAligner``, FP16/BF16 only): the
    shift amount, the coarse and fine shifts, the rounding with the output register
    (:data:`CONVERTER_FLOAT_POST_STAGES`), whatever the lane count."""
    float_fields(act_format)  # names a non-FP format
    return CONVERTER_FLOAT_POST_STAGES


def float_fields(act_format: str) -> tuple[int, int, int]:
    """``(exp_bits, man_bits, bias)`` of an FP activation format (from :mod:`golden.formats`)."""
    if act_format not in ("fp16", "bf16"):
        raise ValueError(f"act_format {act_format!r} is not a floating-point format")
    fmt = formats.get(act_format)
    return fmt.exp_bits, fmt.man_bits, fmt.bias


def block_exp_width(act_format: str) -> int:
    """Bits of ``block_exp``: the exponent field width (FP16 5, BF16 8); 1 for INT8 (always 0).

    ``block_exp`` ranges over 0..2**E - 2 (the all-ones field is special and excluded), so the
    exponent field width always suffices.
    """
    if act_format == "int8":
        return 1
    return float_fields(act_format)[0]


def scale_offset(act_format: str, mant_width: int) -> int:
    """``K`` of ``value = mant * 2**(block_exp - K)``: ``bias + mant_width - 2``; 0 for INT8."""
    check_block_params(act_format, mant_width, "rne")
    if act_format == "int8":
        return 0
    return float_fields(act_format)[2] + mant_width - 2


def _check_bits(bits) -> np.ndarray:
    arr = np.asarray(bits)
    if arr.ndim < 1 or arr.shape[-1] < 1:
        raise ValueError(f"bits must have shape [..., N] with N >= 1, not {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"bits must be an integer array of 16-bit patterns, not {arr.dtype}")
    wide = arr.astype(np.int64)
    if wide.size and (wide.min() < 0 or wide.max() > 0xFFFF):
        raise ValueError("bits must hold 16-bit patterns in 0..65535")
    return wide


def block_convert(bits, act_format: str = "fp16", mant_width: int = 12,
                  rounding: str = "rne") -> tuple[np.ndarray, np.ndarray, BlockFlags]:
    """Convert blocks of 16-bit activations into block floating point (module docstring).

    Parameters
    ----------
    bits : array of int, shape [..., N]
        Raw 16-bit patterns (FP16/BF16 codes, or sign-extended int8 words), N per block.
    act_format : {"fp16", "bf16", "int8"}
    mant_width : int
        W, 2..24 (INT8: 8..24): width of the two's-complement mantissas.
    rounding : {"trunc", "rne"}

    Returns
    -------
    block_exp : int64 array, shape [...]
    mantissas : int64 array, shape [..., N], in ``[-(2**(W-1) - 1), 2**(W-1) - 1]``
    flags : BlockFlags
        ``invalid`` and ``saturated``, boolean arrays of shape [..., N].
    """
    check_block_params(act_format, mant_width, rounding)
    word = _check_bits(bits)
    W = int(mant_width)
    if act_format == "int8":
        value = np.where(word >= 0x8000, word - 0x10000, word)
        invalid = (value < -128) | (value > 127)
        mant = np.where(invalid, 0, value)
        return (np.zeros(word.shape[:-1], np.int64), mant.astype(np.int64),
                BlockFlags(invalid, np.zeros(word.shape, bool)))

    E, M, _ = float_fields(act_format)
    sig, eff = _significands(word, E, M)
    block_exp = eff.max(axis=-1)
    mant, saturated = _align(word, sig, eff, block_exp, E, M, W, rounding)
    special = ((word >> M) & ((1 << E) - 1)) == (1 << E) - 1
    return block_exp.astype(np.int64), mant, BlockFlags(special, saturated)


def block_align(bits, block_exp, act_format: str = "fp16", mant_width: int = 12,
                rounding: str = "rne") -> tuple[np.ndarray, BlockFlags]:
    """Align blocks of FP16/BF16 activations to a given exponent (module docstring).

    Parameters
    ----------
    bits : array of int, shape [..., N]
        Raw 16-bit FP16/BF16 patterns, N per block.
    block_exp : array of int, shape [...]
        Each block's exponent, ``0 <= block_exp < 2**E``.
    act_format : {"fp16", "bf16"}
    mant_width, rounding
        As for :func:`block_convert`.

    Returns
    -------
    mantissas : int64 array, shape [..., N]
    flags : BlockFlags
        ``invalid``: Inf/NaN lanes and nonzero finite lanes with ``eff > block_exp`` (mantissa
        0); ``saturated`` as for :func:`block_convert`.
    """
    check_block_params(act_format, mant_width, rounding)
    E, M, _ = float_fields(act_format)
    word = _check_bits(bits)
    exp = np.asarray(block_exp)
    if not np.issubdtype(exp.dtype, np.integer):
        raise TypeError(f"block_exp must be an integer array, not {exp.dtype}")
    if exp.shape != word.shape[:-1]:
        raise ValueError(f"block_exp must have shape {word.shape[:-1]}, not {exp.shape}")
    exp = exp.astype(np.int64)
    if exp.size and (exp.min() < 0 or exp.max() >= 1 << E):
        raise ValueError(f"block_exp must be in 0..{(1 << E) - 1}")
    sig, eff = _significands(word, E, M)
    above = eff > exp[..., None]
    sig = np.where(above, 0, sig)
    mant, saturated = _align(word, sig, np.where(above, 0, eff), exp, E, M, int(mant_width),
                             rounding)
    special = ((word >> M) & ((1 << E) - 1)) == (1 << E) - 1
    return mant, BlockFlags(special | above, saturated)


def _significands(word, E: int, M: int) -> tuple[np.ndarray, np.ndarray]:
    """``sig`` (0 for Inf/NaN) and ``eff`` (0 for zeros and Inf/NaN) of each FP word."""
    e = (word >> M) & ((1 << E) - 1)
    m = word & ((1 << M) - 1)
    special = e == (1 << E) - 1
    sig = np.where(special, 0, np.where(e != 0, (1 << M) | m, m))
    return sig, np.where(sig == 0, 0, np.maximum(e, 1))


def _align(word, sig, eff, block_exp, E: int, M: int, W: int, rounding: str):
    """Mantissas and ``saturated`` of the lanes aligned to ``block_exp >= eff`` (module
    docstring: the aligned magnitude, its rounding, saturation and sign)."""
    sign = (word >> (E + M)) & 1
    # a = sig * 2**(P - d): scale up by 2**max(P, 0) (exact), then drop d + max(-P, 0) bits.
    P = W - 2 - M
    wide = sig << max(P, 0)
    s_bits = M + 1 + max(P, 0)
    # Dropping more than s_bits + 1 bits leaves kept = 0, qb = 0, r = (wide != 0), as dropping
    # s_bits + 1 does; the clamp also keeps numpy shifts below 64.
    drop = np.minimum(block_exp[..., None] - eff + max(-P, 0), s_bits + 1)
    kept = wide >> drop
    if rounding == "rne":
        drop_m1 = np.maximum(drop - 1, 0)
        qb = np.where(drop >= 1, (wide >> drop_m1) & 1, 0)
        r = np.where(drop >= 2, (wide & ((1 << drop_m1) - 1)) != 0, False)
        kept = kept + (qb & ((kept & 1) | r))
    qmax = (1 << (W - 1)) - 1
    saturated = kept > qmax
    q = np.minimum(kept, qmax)
    mant = np.where(sign == 1, -q, q)
    return mant.astype(np.int64), saturated


def block_dequantize(block_exp, mantissas, act_format: str = "fp16",
                     mant_width: int = 12) -> np.ndarray:
    """Exact value of each element: ``mantissas * 2**(block_exp - K)`` as float64, [..., N].

    Exact because ``|mantissa| < 2**24`` and the exponent stays inside the float64 range.
    """
    K = scale_offset(act_format, mant_width)
    exp = np.asarray(block_exp, dtype=np.int64)
    mant = np.asarray(mantissas, dtype=np.int64)
    return np.ldexp(mant.astype(np.float64), (exp - K)[..., None])

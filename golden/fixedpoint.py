"""Fixed-point quantization with ``ap_fixed`` semantics (the de facto reference).

A fixed-point type ``Q(W, F)`` holds a W-bit two's-complement integer ``q`` (or an unsigned one)
and denotes the value ``q * 2**-F``. Converting a value into the type first *rounds* (drops the
bits below ``2**-F``), then handles *overflow* (fits the result into W bits), exactly as
``ap_fixed<W, W-F, Q, O>`` does on assignment.

Rounding modes (notation of ``ap_fixed``: ``V`` = floor result, ``qb`` = first dropped bit,
``r`` = OR of the other dropped bits, ``s`` = sign, ``lsb`` = kept LSB):

============  ===================================  ==============================
mode          increment added to ``V``              meaning
============  ===================================  ==============================
TRN           0                                     floor (towards -inf)
TRN_ZERO      ``s & (qb | r)``                      towards zero
RND           ``qb``                                nearest, ties towards +inf
RND_ZERO      ``qb & (s | r)``                      nearest, ties towards zero
RND_MIN_INF   ``qb & r``                            nearest, ties towards -inf
RND_INF       ``qb & (~s | r)``                     nearest, ties away from zero
RND_CONV      ``qb & (lsb | r)``                    nearest, ties to even
============  ===================================  ==============================

Overflow modes: SAT (clamp to the range), SAT_SYM (signed only: the minimum is
``-(2**(W-1) - 1)``), SAT_ZERO (an out-of-range result becomes 0), WRAP (keep the low W bits).

Everything here is exact: integer inputs use integer arithmetic; float64 inputs use operations
that are exact in binary floating point (scaling by a power of two, ``floor``, subtracting the
floor, ``mod`` by a power of two).
"""

from __future__ import annotations

import numpy as np

from .checks import check_choice, check_int

__all__ = [
    "OVERFLOW_MODES",
    "ROUNDING_MODES",
    "cast_fixed",
    "check_fixed_params",
    "fixed_range",
    "quantize_fixed",
]

ROUNDING_MODES = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV")
OVERFLOW_MODES = ("SAT", "SAT_SYM", "SAT_ZERO", "WRAP")

# Largest total width handled; keeps every intermediate exact in int64/float64.
MAX_WIDTH = 48


def check_fixed_params(width: int, frac: int, rounding: str = "RND_CONV",
                       overflow: str = "SAT", signed: bool = True) -> None:
    """Raise ``ValueError`` naming the parameter when a fixed-point type is not supported."""
    width = check_int("width", width, 1, MAX_WIDTH)
    check_int("frac", frac, -64, 64)
    if signed and width < 2 and overflow == "SAT_SYM":
        raise ValueError(f"SAT_SYM needs a signed width of at least 2, not {width}")
    check_choice("rounding mode", rounding, ROUNDING_MODES)
    check_choice("overflow mode", overflow, OVERFLOW_MODES)


def fixed_range(width: int, signed: bool = True, overflow: str = "SAT") -> tuple[int, int]:
    """Return ``(min_int, max_int)`` of the stored integer after overflow handling."""
    if signed:
        hi = (1 << (width - 1)) - 1
        lo = -hi if overflow == "SAT_SYM" else -(1 << (width - 1))
    else:
        lo, hi = 0, (1 << width) - 1
    return lo, hi


def _round_increment(floor_v, qb, r, s, rounding: str):
    """The 0/1 increment of ``ap_fixed``'s rounding table (inputs are boolean arrays)."""
    if rounding == "TRN":
        return np.zeros_like(qb)
    if rounding == "TRN_ZERO":
        return s & (qb | r)
    if rounding == "RND":
        return qb
    if rounding == "RND_ZERO":
        return qb & (s | r)
    if rounding == "RND_MIN_INF":
        return qb & r
    if rounding == "RND_INF":
        return qb & (~s | r)
    # RND_CONV: ties to even.
    lsb = (np.mod(floor_v, 2) == 1)
    return qb & (lsb | r)


def _apply_overflow(v, width: int, signed: bool, overflow: str):
    """Fit integer-valued ``v`` (int64 or integral float64 array) into ``width`` bits."""
    lo, hi = fixed_range(width, signed, overflow)
    if overflow in ("SAT", "SAT_SYM"):
        out = np.clip(v, lo, hi)
    elif overflow == "SAT_ZERO":
        out = np.where((v < lo) | (v > hi), 0, v)
    else:  # WRAP
        modulus = float(1 << width) if v.dtype.kind == "f" else (1 << width)
        out = np.mod(v, modulus)
        if signed:
            out = np.where(out > hi, out - modulus, out)
    return out.astype(np.int64)


def quantize_fixed(x, width: int, frac: int, rounding: str = "RND_CONV",
                   overflow: str = "SAT", signed: bool = True) -> np.ndarray:
    """Convert real values to the stored integers of ``Q(width, frac)``.

    Parameters
    ----------
    x : array_like of float
        Values to convert; every float64 is taken at its exact binary value. NaN raises
        ``ValueError``; +-Inf saturate under SAT/SAT_SYM, become 0 under SAT_ZERO and raise under
        WRAP (no low bits exist).
    width, frac : int
        Total bits and fraction bits (``ap_fixed<width, width - frac>``).
    rounding, overflow : str
        Modes from :data:`ROUNDING_MODES` and :data:`OVERFLOW_MODES`.
    signed : bool
        Two's complement (default) or unsigned.

    Returns
    -------
    numpy.ndarray of int64
        The stored integers ``q``; the represented value is ``q * 2**-frac``.
    """
    check_fixed_params(width, frac, rounding, overflow, signed)
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError("cannot convert NaN to fixed point")
    if overflow == "WRAP" and np.isinf(x).any():
        raise ValueError("cannot WRAP an infinite value to fixed point")
    # Values this large overflow every supported width; clip them so later arithmetic stays
    # exact while keeping their sign and "out of range" status.
    limit = float(2 ** (MAX_WIDTH + 2))
    y = np.ldexp(x, frac)
    big = np.abs(y) >= limit
    if overflow != "WRAP":
        y = np.where(big, np.sign(y) * limit, y)
    elif big.any():
        # An integer-valued float: its low bits are exact, and np.mod is exact in binary FP.
        y = np.where(big, np.mod(y, float(2 ** (MAX_WIDTH + 2))), y)
    floor_v = np.floor(y)
    rest = y - floor_v  # exact: both operands share an exponent range
    qb = rest >= 0.5
    r = (rest != 0.0) & (rest != 0.5)
    s = x < 0
    v = floor_v + _round_increment(floor_v, qb, r, s, rounding)
    return _apply_overflow(v, width, signed, overflow)


def cast_fixed(q, frac_in: int, width: int, frac: int, rounding: str = "RND_CONV",
               overflow: str = "SAT", signed: bool = True) -> np.ndarray:
    """Cast stored integers of ``Q(*, frac_in)`` to the stored integers of ``Q(width, frac)``.

    ``q`` are integers (any width that fits int64 after a left shift); the input value is
    ``q * 2**-frac_in``. This is the integer model of the RTL fixed-point cast unit.
    """
    check_fixed_params(width, frac, rounding, overflow, signed)
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise TypeError(f"cast_fixed takes integer arrays, not {q.dtype}")
    q = q.astype(np.int64)
    shift = frac_in - frac
    if shift <= 0:
        v = q << np.int64(-shift)
        return _apply_overflow(v, width, signed, overflow)
    if shift >= 63:
        # NumPy's int64 shifts by 64 or more are undefined (x86 masks the count); Python
        # integers shift exactly, and the results here are tiny (floor is 0 or -1).
        exact = [int(v) for v in q.reshape(-1)]
        floor_list = [v >> shift for v in exact]
        dropped_list = [v - (f << shift) for v, f in zip(exact, floor_list, strict=True)]
        half_int = 1 << (shift - 1)
        floor_v = np.array(floor_list, dtype=np.int64).reshape(q.shape)
        qb = np.array([d >= half_int for d in dropped_list], dtype=bool).reshape(q.shape)
        r = np.array([(d & (half_int - 1)) != 0 for d in dropped_list],
                     dtype=bool).reshape(q.shape)
    else:
        floor_v = q >> np.int64(shift)
        dropped = q - (floor_v << np.int64(shift))
        half = np.int64(1) << np.int64(shift - 1)
        qb = dropped >= half
        r = (dropped & (half - 1)) != 0
    s = q < 0
    v = floor_v + _round_increment(floor_v, qb, r, s, rounding).astype(np.int64)
    return _apply_overflow(v, width, signed, overflow)

"""Integer-only requantization: ``q_out = clamp(round(q_acc * b / 2**c) + zero_point)``.

A real rescale factor ``S = S_in * S_w / S_out`` is approximated by a *dyadic* number
``b / 2**c`` (an integer multiplier ``b`` and a right shift ``c``), so that requantizing an
integer accumulator needs one integer multiply, one rounding shift and a clamp. Three rounding
rules are defined, each bit-exact to a published integer implementation:

``"hawq"``
    HAWQ-V3: one round-half-to-even of the exact quotient ``q * b / 2**c``::

        t = q * b;  r = t >> c;  rem = t - (r << c)
        r += (rem > 2**(c-1)) or (rem == 2**(c-1) and r is odd)

``"gemmlowp"``
    gemmlowp/TFLite (default build): ``RoundingDivideByPOT(SRDHM(x, b), e)`` with
    ``x = q * 2**(31 - p)``, ``p = min(c, 31)``, ``e = c - p``, where::

        SRDHM(a, b) = INT32_MAX                      if a == b == INT32_MIN
                    = trunc((a*b + nudge) / 2**31)   nudge = 2**30 if a*b >= 0 else 1 - 2**30
        RoundingDivideByPOT(x, e) = (x >> e) + ((x & mask) > (mask >> 1) + (x < 0)),
                                    mask = 2**e - 1

    Note the truncating C division in SRDHM: it makes SRDHM round half towards +inf for both
    signs (``SRDHM(a, b) == floor((a*b + 2**30) / 2**31)`` except at the saturating corner); a
    flooring ``>> 31`` in its place would be wrong for every negative product, not only ties.
    RoundingDivideByPOT rounds half away from zero, so the rule rounds *twice* when ``c > 31``.
    For ``c < 31`` (``S >= 1``) TFLite computes ``x = q << (31 - c)`` in int32, which overflows
    (undefined behaviour in C) for large ``q``; here ``x`` is exact, so the result equals TFLite
    whenever TFLite's arithmetic does not overflow. The saturating corner is kept as defined:
    ``x == b == INT32_MIN`` gives ``INT32_MAX`` (then the second rounding).

``"single"``
    TFLITE_SINGLE_ROUNDING: ``(q * b + 2**(c-1)) >> c`` (one rounding, ties towards +inf);
    ``c == 0`` is an exact product.

All arithmetic is exact integer arithmetic: NumPy int64 when every intermediate provably fits,
NumPy object arrays of Python ints otherwise (wider accumulators or multipliers, ``c`` > 62).
"""

from __future__ import annotations

import math

import numpy as np

from .checks import check_int, is_int

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "ROUNDING_RULES",
    "dyadic_from_scale",
    "requantize",
    "rounded_shift",
    "rounding_divide_by_pot",
    "srdhm",
]

ROUNDING_RULES = ("hawq", "gemmlowp", "single")
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
# Magnitude bound below which every intermediate of the int64 paths is exact (see _int_arrays).
_INT64_SAFE_PRODUCT = 1 << 62


def _check_rule(rounding: str) -> None:
    if rounding not in ROUNDING_RULES:
        raise ValueError(f"unknown rounding {rounding!r}; expected one of {ROUNDING_RULES}")


def _as_int(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind == "O":
        if not all(is_int(v) for v in arr.reshape(-1)):
            raise TypeError(f"{name} must hold integers")
        return arr
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, not {arr.dtype}")
    return arr


def _int_arrays(q, b, c, *, product_bound=_INT64_SAFE_PRODUCT, max_c=62):
    """Broadcast ``q, b, c`` to int64 when every intermediate fits, else to Python-int objects.

    With ``|q * b| <= 2**62`` and ``0 <= c <= 62``: ``r << c`` lies in ``(t - 2**c, t]`` and
    ``2**c`` adds at most ``2**62``, so every value stays inside int64.
    """
    q, b, c = _as_int(q, "q_acc"), _as_int(b, "b"), _as_int(c, "c")
    q, b, c = np.broadcast_arrays(q, b, c)
    if c.size and int(np.min(c)) < 0:
        raise ValueError(f"shift c must be >= 0, not {int(np.min(c))}")
    qmax = max((abs(int(v)) for v in (np.min(q), np.max(q))), default=0) if q.size else 0
    bmax = max((abs(int(v)) for v in (np.min(b), np.max(b))), default=0) if b.size else 0
    cmax = int(np.max(c)) if c.size else 0
    if qmax * bmax <= product_bound and cmax <= max_c:
        return q.astype(np.int64), b.astype(np.int64), c.astype(np.int64)
    return q.astype(object), b.astype(object), c.astype(object)


def _pow2(c, like):
    """``2**c`` elementwise, in the dtype family of ``like`` (int64 or object)."""
    if like.dtype == object:
        return np.array([1 << int(v) for v in np.asarray(c).reshape(-1)],
                        dtype=object).reshape(np.shape(c))
    return np.left_shift(np.int64(1), c.astype(np.int64))


def _shift_right(x, c):
    """Floor division by ``2**c`` elementwise (arithmetic shift right)."""
    if x.dtype == object:
        return np.array([int(v) >> int(s) for v, s in zip(x.reshape(-1), np.reshape(c, -1),
                                                          strict=True)],
                        dtype=object).reshape(x.shape)
    return np.right_shift(x, c)


def _round_hawq(t, c):
    """Round-half-to-even of ``t / 2**c``, the HAWQ-V3 integer recipe."""
    r = _shift_right(t, c)
    rem = t - r * _pow2(c, t)
    # 2**(c-1) for c >= 1; for c == 0 the remainder is 0 and never reaches the unused half.
    half = _pow2(np.maximum(c - 1, 0), t)
    up = (c > 0) & ((rem > half) | ((rem == half) & (r % 2 == 1)))
    return r + up.astype(np.int64)


def _round_single(t, c):
    """``(t + 2**(c-1)) >> c`` for ``c >= 1``; ``t`` for ``c == 0`` (TFLITE_SINGLE_ROUNDING)."""
    half = np.where(c > 0, _pow2(np.maximum(c - 1, 0), t), 0)
    return _shift_right(t + half, c)


def srdhm(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on exact integers.

    ``trunc((a*b + nudge) / 2**31)`` with ``nudge = 2**30`` if ``a*b >= 0`` else ``1 - 2**30``,
    and ``INT32_MAX`` when ``a == b == INT32_MIN``. ``a`` may exceed int32 (the exact pre-shifted
    operand of the ``c < 31`` case); ``b`` is the int32 multiplier.
    """
    shape = np.broadcast_shapes(np.shape(a), np.shape(b))
    a, b = np.broadcast_arrays(np.atleast_1d(_as_int(a, "a")), np.atleast_1d(_as_int(b, "b")))
    amax = max((abs(int(v)) for v in (np.min(a), np.max(a))), default=0) if a.size else 0
    bmax = max((abs(int(v)) for v in (np.min(b), np.max(b))), default=0) if b.size else 0
    dtype = np.int64 if amax * bmax <= _INT64_SAFE_PRODUCT else object
    a, b = a.astype(dtype), b.astype(dtype)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30)).astype(dtype)
    num = ab + nudge
    # C's integer division truncates towards zero.
    high = np.where(num < 0, -((-num) // (1 << 31)), num // (1 << 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high).astype(dtype).reshape(shape)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero.

    ``(x >> e) + ((x & mask) > (mask >> 1) + (x < 0))`` with ``mask = 2**e - 1``; defined here for
    every ``e >= 0`` (gemmlowp asserts ``e <= 31``; the formula is the same).
    """
    shape = np.broadcast_shapes(np.shape(x), np.shape(exponent))
    x, e = np.broadcast_arrays(np.atleast_1d(_as_int(x, "x")),
                               np.atleast_1d(_as_int(exponent, "exponent")))
    if e.size and int(np.min(e)) < 0:
        raise ValueError(f"exponent must be >= 0, not {int(np.min(e))}")
    dtype = np.int64 if (e.size == 0 or int(np.max(e)) <= 62) and x.dtype != object else object
    x, e = x.astype(dtype), e.astype(dtype)
    mask = _pow2(e, x) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (_shift_right(x, e) + (remainder > threshold).astype(np.int64)).reshape(shape)


def _round_gemmlowp(q, b, c):
    p = np.minimum(c, 31)
    x = q * _pow2(31 - p, q)
    return rounding_divide_by_pot(srdhm(x, b), c - p)


def rounded_shift(q_acc, b, c, rounding: str = "hawq") -> np.ndarray:
    """``round(q_acc * b / 2**c)`` under ``rounding`` (no clamp, no zero point).

    Parameters
    ----------
    q_acc, b, c : array_like of int
        Accumulators, multipliers and right shifts (``c >= 0``), broadcast together. The
        ``"gemmlowp"`` rule is defined for int32 ``q_acc`` and ``b`` (its saturating corner
        is an int32 property); the others for any integers.
    rounding : {"hawq", "gemmlowp", "single"}

    Returns
    -------
    numpy.ndarray
        int64 when the result provably fits, else an object array of Python ints.
    """
    _check_rule(rounding)
    shape = np.broadcast_shapes(np.shape(q_acc), np.shape(b), np.shape(c))
    # 1-D working arrays: NumPy turns 0-d object results into bare Python ints.
    q_acc, b, c = (np.atleast_1d(_as_int(x, n)) for x, n in ((q_acc, "q_acc"), (b, "b"),
                                                              (c, "c")))
    if rounding == "gemmlowp":
        for name, arr in (("q_acc", q_acc), ("b", b)):
            if arr.size and (int(np.min(arr)) < INT32_MIN or int(np.max(arr)) > INT32_MAX):
                raise ValueError(f"the gemmlowp rule takes int32 {name}")
        # int64 is exact for c >= 31 (no pre-shift); object otherwise (x = q << (31-c)).
        q, b, c = _int_arrays(q_acc, b, c)
        if c.size and int(np.min(c)) < 31 and q.dtype != object:
            q, b, c = q.astype(object), b.astype(object), c.astype(object)
        return _round_gemmlowp(q, b, c).reshape(shape)
    q, b, c = _int_arrays(q_acc, b, c)
    t = q * b
    out = _round_hawq(t, c) if rounding == "hawq" else _round_single(t, c)
    return out.reshape(shape)


def requantize(q_acc, b, c, *, rounding: str = "hawq", out_width: int = 8, signed: bool = True,
               zero_point: int = 0) -> np.ndarray:
    """``clamp(round(q_acc * b / 2**c) + zero_point)`` into ``out_width`` bits.

    Parameters
    ----------
    q_acc, b, c : array_like of int
        Accumulators, dyadic multipliers and right shifts (broadcast together).
    rounding : {"hawq", "gemmlowp", "single"}
        Rounding rule (see the module docstring).
    out_width : int
        Output bits; the clamp range is ``[-2**(w-1), 2**(w-1) - 1]`` (signed) or
        ``[0, 2**w - 1]`` (unsigned).
    signed : bool
        Signed (default) or unsigned output.
    zero_point : int
        Added after rounding, before the clamp (TFLite's output offset); must lie in the output
        range.

    Returns
    -------
    numpy.ndarray of int64 (object when ``out_width`` > 63)
    """
    lo, hi = _check_output(out_width, signed, zero_point)
    y = rounded_shift(q_acc, b, c, rounding) + zero_point
    out = np.minimum(np.maximum(y, lo), hi)
    return out.astype(np.int64) if out_width <= 63 else out.astype(object)


def _check_output(out_width, signed, zero_point) -> tuple[int, int]:
    out_width = check_int("out_width", out_width, 1)
    zero_point = check_int("zero_point", zero_point)
    if signed:
        lo, hi = -(1 << (out_width - 1)), (1 << (out_width - 1)) - 1
    else:
        lo, hi = 0, (1 << out_width) - 1
    if not lo <= zero_point <= hi:
        raise ValueError(f"zero_point must lie in the output range [{lo}, {hi}], not {zero_point}")
    return lo, hi


def _round_half_up_scaled(m: float, bits: int) -> int:
    """``floor(m * 2**bits + 1/2)`` exactly (``m * 2**bits`` is a dyadic rational)."""
    num, den = m.as_integer_ratio()
    num <<= bits
    return (2 * num + den) // (2 * den)


def dyadic_from_scale(scale, *, b_bits: int = 31, max_shift: int = 63):
    """Dyadic approximation ``b / 2**c`` of a positive scale, as HAWQ-V3 computes it.

    ``(m, e) = frexp(S)`` (``0.5 <= m < 1``), ``b = round_half_up(m * 2**b_bits)``,
    ``c = b_bits - e``. When rounding carries ``b`` to ``2**b_bits`` it is renormalised to
    ``2**(b_bits-1)`` with ``c - 1``: the same value ``b / 2**c``, so every rounding rule gives
    the same result, and ``b`` fits a signed ``b_bits + 1``-bit field
    (``2**(b_bits-1) <= b < 2**b_bits``).

    Parameters
    ----------
    scale : float or array_like of float
        Positive finite scales (per tensor or per channel).
    b_bits : int
        Fraction bits of the multiplier (31 for an int32 multiplier).
    max_shift : int
        Largest shift the consumer supports (63 for a 6-bit ``c`` field).

    Returns
    -------
    (b, c)
        Python ints for a scalar ``scale``, else two int64 arrays of its shape.

    Raises
    ------
    ValueError
        A scale that is not positive and finite, or whose shift falls outside
        ``[0, max_shift]`` (scale >= 2**b_bits, or too small to represent).
    """
    b_bits = check_int("b_bits", b_bits, 1, 62)
    max_shift = check_int("max_shift", max_shift, 0)
    arr = np.asarray(scale, dtype=np.float64)
    flat = arr.reshape(-1)
    bs, cs = np.empty(flat.size, np.int64), np.empty(flat.size, np.int64)
    for i, s in enumerate(flat.tolist()):
        if not math.isfinite(s) or s <= 0.0:
            raise ValueError(f"scale must be positive and finite, not {s!r}")
        m, e = math.frexp(s)
        b = _round_half_up_scaled(m, b_bits)
        c = b_bits - e
        if b == 1 << b_bits:
            b, c = b >> 1, c - 1
        if not 0 <= c <= max_shift:
            raise ValueError(f"scale {s!r} needs shift c = {c}, outside [0, {max_shift}]")
        bs[i], cs[i] = b, c
    if arr.ndim == 0:
        return int(bs[0]), int(cs[0])
    return bs.reshape(arr.shape), cs.reshape(arr.shape)

"""Exact minifloat arithmetic: the product of two codes and the rounding of a sum to a float.

Two functions define the RTL units ``hdl.arith.minifloat_mul.MinifloatMultiplier`` and
``hdl.arith.to_float.ToFloat`` bit for bit. Both work on integers only (no float rounding
anywhere), vectorized over NumPy arrays.

Fixed-point view of a minifloat
-------------------------------
A finite minifloat code with sign ``s``, exponent field ``e`` and mantissa field ``m`` (E and M
bits, bias ``b``) has the value ``(-1)**s * sig * 2**(max(e, 1) - b - M)`` with
``sig = m`` for ``e == 0`` (``0`` when the format flushes subnormals) and ``2**M + m``
otherwise. Pulling out the exponent of the smallest subnormal, ``1 - b - M``, every finite value
is an integer multiple of ``2**-F`` with ``F = b + M - 1``::

    value = (-1)**s * mag * 2**-F,    mag = sig << (max(e, 1) - 1)

An integer format (``int<B>``, ``uint<B>``) is the same with ``F = 0`` and ``mag = |value|``.

Exact product (:func:`exact_product`)
-------------------------------------
For formats A and B the product of two finite values is ``P * 2**-(F_a + F_b)`` with the integer
``P = (-1)**(s_a ^ s_b) * mag_a * mag_b``. ``P`` needs :func:`product_width` signed bits,
``bit_length(max_mag_a * max_mag_b) + 1``, where ``max_mag`` is the fixed-point magnitude of
the format's largest finite value (E5M2 x E5M2: 65 bits, E4M3 x E4M3: 37 bits).

Specials: a NaN operand, or Inf times zero, gives the NaN flag; Inf times a nonzero value (or
Inf) gives the Inf flag. ``P`` is 0 whenever a flag is set. The sign flag is ``s_a ^ s_b`` for
every pair (it is the sign of an Inf result and of a signed zero).

Conversion to a float (:func:`to_float_code`)
---------------------------------------------
``value = acc * 2**(exp_offset - in_frac)`` (``acc`` a two's-complement integer) is rounded to
the nearest value of a minifloat with subnormals, ties to the even code (IEEE RNE). With
``X = exp_offset - in_frac``, ``n = bit_length(|acc|)`` and ``e = n - 1 + X`` (the exponent of the
leading one)::

    eb       = max(e + bias, 1)               biased exponent; 1 in the subnormal range
    q        = eb - bias - M                  exponent of the result's last mantissa bit
    k        = RNE(|acc| * 2**(X - q))        at most 2**(M+1): the carry of a round-up is
    code_mag = ((eb - 1) << M) + k            absorbed by the addition (next binade)

Overflow (``code_mag`` above the largest finite code): formats with Inf (``ieee``: fp32, fp16,
bf16, fp8_e5m2) give +-Inf, exactly IEEE RNE (``|value| >= max + ulp/2``). Formats without Inf
(``fn``: fp8_e4m3; ``finite``: FP6/FP4) saturate to +-max: a converter that feeds stored
activations or a next layer wants the nearest representable value, and E4M3's only alternative
(the NaN code, which ml_dtypes produces) would poison every later sum.
Zero: ``acc == 0`` gives +0; a negative value that rounds to zero gives -0 (IEEE).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import formats as _formats
from .checks import check_int

__all__ = [
    "EXACT_PRODUCT_LATENCY",
    "FLAG_INF",
    "FLAG_NAN",
    "FLAG_NEG",
    "TO_FLOAT_LATENCY",
    "OperandFormat",
    "exact_product",
    "fixed_decode",
    "max_finite_code",
    "operand_format",
    "product_frac_bits",
    "product_width",
    "to_float_code",
    "to_float_format",
]

# Pipeline stages of the RTL units this module defines (the RTL asserts them when it elaborates):
# the multiplier decodes, multiplies and registers the product; the converter normalises,
# rounds, packs and checks overflow in six.
EXACT_PRODUCT_LATENCY = 3
TO_FLOAT_LATENCY = 6

FLAG_NAN = 1
FLAG_INF = 2
FLAG_NEG = 4

# Operand formats wider than this are not minifloat multiplier operands.
MAX_OPERAND_BITS = 8


@dataclass(frozen=True)
class OperandFormat:
    """Fixed-point view of a multiplier operand format (see the module docstring).

    Attributes
    ----------
    fmt : golden.formats.Format
        The :class:`~golden.formats.MiniFloat` or :class:`~golden.formats.IntFormat`.
    is_float : bool
        Minifloat (True) or integer (False).
    frac_bits : int
        ``F``: every finite value is an integer multiple of ``2**-F`` (may be negative).
    max_mag : int
        Largest ``|value| * 2**F`` over the finite codes.
    """

    fmt: object
    is_float: bool
    frac_bits: int
    max_mag: int

    @property
    def name(self) -> str:
        return self.fmt.name

    @property
    def bits(self) -> int:
        return self.fmt.bits


def _resolve(fmt, param: str):
    if isinstance(fmt, str):
        try:
            return _formats.get(fmt)
        except ValueError as exc:
            raise ValueError(f"{param}={fmt!r}: {exc}") from None
    if isinstance(fmt, _formats.Format):
        return fmt
    raise TypeError(f"{param} must be a format name or a golden.formats.Format, not {fmt!r}")


def operand_format(fmt, param: str = "format") -> OperandFormat:
    """Check that ``fmt`` can be a multiplier operand and return its fixed-point view.

    Accepts a :class:`~golden.formats.MiniFloat` or :class:`~golden.formats.IntFormat` (or its
    name) of at most 8 bits; anything else raises ``ValueError`` naming ``param``.
    """
    f = _resolve(fmt, param)
    if not isinstance(f, (_formats.MiniFloat, _formats.IntFormat)):
        raise ValueError(f"{param}={f.name!r} is a {type(f).__name__}; the multiplier takes "
                         "minifloat or integer formats")
    if f.bits > MAX_OPERAND_BITS:
        raise ValueError(f"{param}={f.name!r} has {f.bits} bits; the multiplier takes formats "
                         f"of at most {MAX_OPERAND_BITS} bits")
    is_float = isinstance(f, _formats.MiniFloat)
    frac = f.bias + f.man_bits - 1 if is_float else 0
    codes = np.arange(1 << f.bits, dtype=np.int64)
    _, mag, nan, inf = _decode_raw(codes, f, is_float)
    return OperandFormat(f, is_float, int(frac), int(mag[~(nan | inf)].max()))


def _decode_raw(codes: np.ndarray, f, is_float: bool):
    """(neg, mag, nan, inf) of in-range int64 codes; mag is 0 for special codes."""
    if not is_float:
        if f.signed:
            neg = (codes >> (f.bits - 1)) & 1 == 1
            value = codes - (neg.astype(np.int64) << f.bits)
            return neg, np.abs(value), np.zeros_like(neg), np.zeros_like(neg)
        zeros = np.zeros(codes.shape, dtype=bool)
        return zeros, codes.copy(), zeros, zeros.copy()
    E, M = f.exp_bits, f.man_bits
    top, mmask = (1 << E) - 1, (1 << M) - 1
    neg = (codes >> (E + M)) & 1 == 1
    e = (codes >> M) & top
    m = codes & mmask
    # A flushed subnormal (e == 0 without subnormals) decodes to zero.
    sig = np.where(e == 0, m if f.subnormals else 0, m | (1 << M))
    mag = sig << np.maximum(e - 1, 0)
    if f.specials == "ieee":
        inf = (e == top) & (m == 0)
        nan = (e == top) & (m != 0)
    elif f.specials == "fn":
        inf = np.zeros(codes.shape, dtype=bool)
        nan = (e == top) & (m == mmask)
    else:
        inf = nan = np.zeros(codes.shape, dtype=bool)
    mag = np.where(nan | inf, 0, mag)
    return neg, mag, nan, inf


def _check_codes(codes, bits: int, param: str) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu" and not (arr.dtype == object and arr.size == 0):
        if arr.dtype == object:
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{param} must be integer codes, not dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if ((arr < 0) | (arr >= (1 << bits))).any():
        raise ValueError(f"{param} holds codes outside 0..{(1 << bits) - 1}")
    return arr


def fixed_decode(codes, fmt) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split codes into ``(neg, mag, nan, inf)``: ``value = (-1)**neg * mag * 2**-F``.

    ``mag`` is int64 (0 for NaN/Inf codes); ``F`` is :attr:`OperandFormat.frac_bits`.
    """
    op = operand_format(fmt)
    return _decode_raw(_check_codes(codes, op.bits, "codes"), op.fmt, op.is_float)


def product_frac_bits(a_fmt, b_fmt) -> int:
    """``F_a + F_b``: the product of finite values is ``P * 2**-(F_a + F_b)``."""
    return operand_format(a_fmt, "a_fmt").frac_bits + operand_format(b_fmt, "b_fmt").frac_bits


def product_width(a_fmt, b_fmt) -> int:
    """Signed width of ``P``: ``bit_length(max_mag_a * max_mag_b) + 1``."""
    a, b = operand_format(a_fmt, "a_fmt"), operand_format(b_fmt, "b_fmt")
    return (a.max_mag * b.max_mag).bit_length() + 1


def exact_product(a_codes, b_codes, a_fmt, b_fmt) -> tuple[np.ndarray, np.ndarray]:
    """Exact products of code pairs as fixed-point integers (see the module docstring).

    Parameters
    ----------
    a_codes, b_codes : array_like of int
        Codes of ``a_fmt`` / ``b_fmt`` (broadcast together).
    a_fmt, b_fmt : str or golden.formats.Format
        Minifloat or integer formats of at most 8 bits.

    Returns
    -------
    P : numpy.ndarray
        ``product * 2**(F_a + F_b)``; int64 when :func:`product_width` is at most 64, else an
        object array of Python ints (E5M2 x E5M2 needs 65 bits). 0 where a flag is set.
    flags : numpy.ndarray of int64
        Bit field: :data:`FLAG_NAN` (NaN operand, or Inf x 0), :data:`FLAG_INF` (Inf x nonzero),
        :data:`FLAG_NEG` (``s_a ^ s_b``, set for every pair with opposite signs).
    """
    a, b = operand_format(a_fmt, "a_fmt"), operand_format(b_fmt, "b_fmt")
    ca = _check_codes(a_codes, a.bits, "a_codes")
    cb = _check_codes(b_codes, b.bits, "b_codes")
    ca, cb = np.broadcast_arrays(ca, cb)
    neg_a, mag_a, nan_a, inf_a = _decode_raw(ca, a.fmt, a.is_float)
    neg_b, mag_b, nan_b, inf_b = _decode_raw(cb, b.fmt, b.is_float)
    zero_a = (mag_a == 0) & ~(nan_a | inf_a)
    zero_b = (mag_b == 0) & ~(nan_b | inf_b)
    nan = nan_a | nan_b | (inf_a & zero_b) | (inf_b & zero_a)
    inf = (inf_a | inf_b) & ~nan
    neg = neg_a ^ neg_b
    if product_width(a.fmt, b.fmt) <= 64:
        mag = mag_a * mag_b
        p = np.where(neg, -mag, mag)
        p = np.where(nan | inf, 0, p).astype(np.int64)
    else:
        mag = mag_a.astype(object) * mag_b.astype(object)
        p = np.where(neg, -mag, mag)
        p = np.where(nan | inf, 0, p).astype(object)
    flags = (nan * FLAG_NAN + inf * FLAG_INF + neg * FLAG_NEG).astype(np.int64)
    return p, flags


# --------------------------------------------------------------------------------------------
# Conversion of a fixed-point sum to a float code
# --------------------------------------------------------------------------------------------

def to_float_format(out_format, param: str = "out_format"):
    """Check that ``out_format`` is a minifloat with subnormals and return it."""
    f = _resolve(out_format, param)
    if not isinstance(f, _formats.MiniFloat):
        raise ValueError(f"{param}={f.name!r} is a {type(f).__name__}; the converter produces "
                         "minifloat codes (fp32, fp16, bf16, fp8_*, fp6_*, fp4_e2m1, ...)")
    if not f.subnormals:
        raise ValueError(f"{param}={f.name!r} flushes subnormals; the converter implements "
                         "IEEE gradual underflow only")
    return f


def max_finite_code(f) -> int:
    """Largest finite code magnitude (sign bit clear) of minifloat ``f``."""
    E, M = f.exp_bits, f.man_bits
    if f.specials == "ieee":
        return (((1 << E) - 1) << M) - 1
    if f.specials == "fn":
        return (1 << (E + M)) - 2
    return (1 << (E + M)) - 1


def _bit_length_u64(x: np.ndarray) -> np.ndarray:
    # Below 2**53 the float64 conversion is exact and frexp's exponent is the bit length (0
    # for 0); the few larger magnitudes take the exact shift loop.
    n = np.frexp(x.astype(np.float64))[1].astype(np.int64)
    big = x >= np.uint64(1 << 53)
    if big.any():
        n[big] = _bit_length_shifts(x[big])
    return n


def _bit_length_shifts(x: np.ndarray) -> np.ndarray:
    n = np.zeros(x.shape, dtype=np.int64)
    for s in (32, 16, 8, 4, 2, 1):
        hi = x >> np.uint64(s)
        big = hi != 0
        x = np.where(big, hi, x)
        n += np.where(big, s, 0)
    return n + (x != 0)


def _as_int64(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object:
        lo, hi = -(1 << 63), (1 << 63) - 1
        flat = [int(v) for v in arr.reshape(-1)]
        if any(not lo <= v <= hi for v in flat):
            raise ValueError(f"{name} must fit 64-bit two's complement")
        return np.array(flat, dtype=np.int64).reshape(arr.shape)
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit 64-bit two's complement")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, not dtype {arr.dtype}")
    return arr.astype(np.int64)


def to_float_code(acc, exp_offset, in_frac: int, out_format) -> np.ndarray:
    """Round ``acc * 2**(exp_offset - in_frac)`` to ``out_format`` codes (RNE; module doc).

    Parameters
    ----------
    acc : array_like of int
        Two's-complement values (at most 64 bits; object arrays of Python ints accepted).
    exp_offset : array_like of int
        Signed exponent offsets, broadcast against ``acc``.
    in_frac : int
        Fraction bits of ``acc``.
    out_format : str or golden.formats.MiniFloat
        Minifloat with subnormals (fp32, fp16, bf16, fp8_e4m3, fp8_e5m2, ...).

    Returns
    -------
    numpy.ndarray of int64
        Codes (sign bit at ``bits - 1``).
    """
    f = to_float_format(out_format)
    E, M, bias = f.exp_bits, f.man_bits, f.bias
    acc = _as_int64(acc, "acc")
    xo = _as_int64(exp_offset, "exp_offset")
    check_int("in_frac", in_frac)
    acc, xo = np.broadcast_arrays(acc, xo)
    neg = acc < 0
    # Two's-complement negation in uint64 is exact for every int64, including -2**63.
    mag = np.where(neg, np.uint64(0) - acc.astype(np.uint64), acc.astype(np.uint64))
    n = _bit_length_u64(mag)
    x = xo - int(in_frac)
    e = n - 1 + x
    eb = np.maximum(e + bias, 1)
    q = eb - bias - M
    sh = x - q
    # sh <= M whenever mag != 0, so a left shift never overflows; a right shift rounds.
    left = np.clip(sh, 0, 63).astype(np.uint64)
    k_left = mag << left
    s = np.clip(-sh, 1, 64)
    s1 = (s - 1).astype(np.uint64)
    t = mag >> s1
    qb = t & np.uint64(1)
    floor_v = t >> np.uint64(1)
    rest = mag & ((np.uint64(1) << s1) - np.uint64(1))
    inc = qb & ((rest != 0) | ((floor_v & np.uint64(1)) == 1)).astype(np.uint64)
    k_right = np.where(-sh > 64, np.uint64(0), floor_v + inc)
    k = np.where(sh >= 0, k_left, k_right).astype(np.int64)
    # Exponents past the top overflow whatever k is; clamping keeps the shift in int64.
    ebc = np.minimum(eb, (1 << E) + 1)
    code_mag = ((ebc - 1) << M) + k
    cmax = max_finite_code(f)
    over = code_mag > cmax
    sat_code = (((1 << E) - 1) << M) if f.specials == "ieee" else cmax
    code_mag = np.where(over, sat_code, code_mag)
    zero = mag == 0
    code = np.where(zero, 0, code_mag | (neg.astype(np.int64) << (E + M)))
    return code.astype(np.int64)

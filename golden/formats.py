"""Number formats: the bit-exact definition of every code <-> value mapping in the project.

One :class:`Format` object per number format drives the golden quantizers, the RTL decoder and
term-encoder generators, the tests and the docs. A format maps W-bit *codes* (unsigned bit
patterns held as ``int64``; a two's-complement INT code is its bit pattern, e.g. INT4 -1 is
code 15) to exact ``float64`` *values*, and rounds reals back to codes.

Families
--------
* :class:`IntFormat`: two's-complement or unsigned integers, optionally with a symmetric range.
* :class:`MiniFloat`: sign + exponent + mantissa (IEEE-style, OCP "fn" style or all-finite),
  including fp16, bf16 and fp32.
* :class:`ExponentFormat`: unsigned power-of-two scales (OCP E8M0).
* :class:`TableFormat`: an explicit code -> value table (flint4, ternary, binary).
* :class:`ExtendedFormat`: a base format whose redundant -0 code decodes to a special value
  (the BitMoD ER/EA types).
* :class:`FixedPoint`: ``ap_fixed`` fixed point, built on :mod:`golden.fixedpoint`.
* :class:`KHotFormat`: K-hot integers (QFX): the integers of ``[-128, 128]`` that are a sum
  of at most K signed powers of two, as a sign and an index of the magnitude.

Adding a format is one registry line (:func:`_register`) or, for a new family, one subclass
that defines ``_decode_valid`` and ``_key``; encoding, enumeration and naming are inherited.

Registered names (:func:`names`)
--------------------------------
``int2``..``int8``, ``uint2``..``uint8``, ``int2_sym``..``int8_sym``, ``binary``, ``ternary``,
``fp3``, ``fp4``, ``flint4``, ``fp3_{er,ea}_{pos,neg}``, ``fp4_{er,ea}_{pos,neg}``,
``fp4_e2m1``, ``fp6_e3m2``, ``fp6_e2m3``, ``fp8_e4m3``, ``fp8_e5m2``, ``e8m0``, ``fp16``,
``bf16``, ``fp32``, ``khot1``, ``khot2``, ``khot3``.

Grammar of parametrised names (:func:`get`, case-insensitive)
-------------------------------------------------------------
``<int>`` below is a decimal integer, optionally negative where noted.

* ``int<B>``, ``int<B>_sym``, ``uint<B>``: :class:`IntFormat` of B bits (2..16 signed,
  1..16 unsigned; ``_sym`` drops the most negative code from the quantization grid:
  int4_sym = {-7..7}).
* ``fp_e<E>m<M>[_b<bias>][_ieee|_fn|_finite][_nosub]``: :class:`MiniFloat` with E exponent
  and M mantissa bits; the bias defaults to ``2**(E-1) - 1`` (may be negative, ``_b-2``),
  specials default to ``ieee``, ``_nosub`` flushes subnormals. Examples: ``fp_e3m2_finite``
  (= ``fp6_e3m2``), ``fp_e4m3_b7_fn`` (= ``fp8_e4m3``), ``fp_e5m2`` (= ``fp8_e5m2``).
* ``e<E>m0[_b<bias>]``: :class:`ExponentFormat` (``e8m0`` is OCP E8M0).
* ``q<W>_<F>[_<rounding>][_<overflow>]`` and ``uq<W>_<F>...``: :class:`FixedPoint` with W total
  bits *including* the sign bit and F fraction bits (F may be negative: ``q8_-2``), i.e.
  ``ap_fixed<W, W-F>``; ``q8_4`` holds multiples of 1/16 in [-8, 7.9375]. This is not the
  ARM/TI ``Qm.n`` integer-bit count. Rounding and overflow are the lower-case ``ap_fixed``
  mode names and default to ``rnd_conv`` and ``sat``: ``q8_4_trn_wrap``, ``uq8_8_rnd``.
* ``<base>_sv<value>``: :class:`ExtendedFormat` of a registered or parametrised base whose
  sign-bit-only code is a redundant zero, with that code decoding to ``value`` (a number, may be
  negative): ``fp4_sv10`` equals ``fp4_er_pos``, ``fp4_sv-7`` is FP4 with special -7.

Code layouts
------------
Minifloat ``S | E exponent bits | M mantissa bits`` (sign is the MSB), with e = exponent field,
m = mantissa field, ``top = 2**E - 1``:

* e == 0: subnormal ``(-1)**S * m * 2**(1 - bias - M)`` (0 when subnormals are flushed).
* 0 < e: normal ``(-1)**S * (2**M + m) * 2**(e - bias - M)`` except, at e == top:
  ``specials="ieee"``: m == 0 is +-Inf, m != 0 is NaN (top exponent reserved);
  ``specials="fn"``: only m == 2**M - 1 is NaN (OCP E4M3: S.1111.111), the rest is finite;
  ``specials="finite"``: every code is finite (OCP FP6/FP4, BitMoD FP3/FP4).

=========  ===  ===  ====  =========  ===========  ==========================================
name       E    M    bias  specials   max          notes
=========  ===  ===  ====  =========  ===========  ==========================================
fp4_e2m1   2    1    1     finite     6            OCP E2M1 (float4_e2m1fn)
fp6_e3m2   3    2    3     finite     28           OCP E3M2
fp6_e2m3   2    3    1     finite     7.5          OCP E2M3
fp8_e4m3   4    3    7     fn         448          OCP E4M3 (float8_e4m3fn)
fp8_e5m2   5    2    15    ieee       57344        OCP E5M2
fp16       5    10   15    ieee       65504        IEEE binary16
bf16       8    7    127   ieee       3.39e38      bfloat16
fp32       8    23   127   ieee       3.40e38      IEEE binary32 (numpy casts; no code tables)
fp4        2    1    0     finite     12           BitMoD FP4 in code units (2x E2M1)
fp3        2    0    1     finite     4            BitMoD FP3 = E2M0: E=0,1,2,3 -> 0,1,2,4
=========  ===  ===  ====  =========  ===========  ==========================================

BitMoD FP4 code units (S E1 E0 M), magnitude of codes 0..7: 0, 1, 2, 3, 4, 6, 8, 12.
BitMoD FP3 (S E1 E0), magnitudes of codes 0..3: 0, 1, 2, 4. In the extended types the -0 code
(1000 / 100) decodes to the special value:

==========  =======  ==========  ==========  =======
name        special  name        special     code
==========  =======  ==========  ==========  =======
fp3_er_pos  +3       fp4_er_pos  +10         S only
fp3_er_neg  -3       fp4_er_neg  -10         S only
fp3_ea_pos  +6       fp4_ea_pos  +16         S only
fp3_ea_neg  -6       fp4_ea_neg  -16         S only
==========  =======  ==========  ==========  =======

Table formats (code -> value):

* ``flint4`` (ANT's flint, sign-magnitude S M2 M1 M0): codes 0..7 -> 0, 1, 2, 3, 4, 6, 8, 16;
  codes 8..15 -> -0, -1, -2, -3, -4, -6, -8, -16 (code 8 is a redundant zero).
* ``ternary`` (2-bit sign-magnitude, which agrees with two's complement on every used code):
  0 -> 0, 1 -> +1, 2 -> -0 (a redundant zero, never produced by encode), 3 -> -1.
* ``binary``: 0 -> -1, 1 -> +1.
* ``e8m0`` (:class:`ExponentFormat`): code c -> 2**(c - 127) for c in 0..254, 255 -> NaN;
  no zero, no sign.

Integers: ``int<B>`` is B-bit two's complement (code c >= 2**(B-1) means c - 2**B), ``uint<B>``
is the plain binary value. Fixed point: the two's-complement (or unsigned) integer times
``2**-F``.

K-hot (``khot<K>``, :class:`KHotFormat`; QFX restricts a weight to K signed power-of-two terms):
the levels are the integers ``v`` with ``|v| <= 128`` that are a sum of at most K terms
``+-2**e``. The fewest terms an integer needs is the number of nonzero digits of its
non-adjacent form (:func:`naf_digits`), and the NAF of a magnitude up to 128 has its digits at
positions 0..7, so every term exponent is 0..7. The *magnitudes* (:attr:`KHotFormat.magnitudes`)
are the K-hot values in ``0 .. 128``, ascending. A code is sign-magnitude, ``S | index``: the
sign bit on top, below it ``index_bits = bit_length(len(magnitudes) - 1)`` bits holding the
position of ``|v|`` in the magnitude list; ``(-1)**S * magnitudes[index]``. Indices beyond the
list and the sign-only code decode to zero (``-0.0`` when S is set) and are never produced by
encode. ``ties="even"`` goes to the even index, round half to even of the integers (where the
index is the magnitude).

=====  ==========  ======  ====  ==============  ==============================
name   magnitudes  levels  bits  unused indices  largest step between levels
=====  ==========  ======  ====  ==============  ==============================
khot1  9           17      5     9..15           64 (64 to 128)
khot2  45          89      7     45..63          16 (80 to 96 to 112)
khot3  105         209     8     105..127        4 (84 to 88 to 92, 100 to 108)
=====  ==========  ======  ====  ==============  ==============================

K = 4 would hold every integer of ``[-128, 128]`` (257 levels, 9-bit codes): that is INT9.

Decoding
--------
:meth:`Format.decode` returns the exact value of every code: NaN for NaN codes, +-Inf for Inf
codes, ``-0.0`` for the minifloat / sign-magnitude -0 codes (as ml_dtypes does), never rounding.
Codes outside ``0 .. 2**bits - 1`` raise ``ValueError``; non-integer arrays raise ``TypeError``.

Encoding (rounding and saturation decisions)
--------------------------------------------
:meth:`Format.encode` rounds every input (taken at its exact float64 value; integers are
converted to float64, exact below 2**53) to the nearest *level* (:attr:`Format.levels`, the
finite values encode can produce; each level has one canonical code, the smallest code with
that value, so zero is always the +0 code and ``-0.0`` encodes to it). Ties (an input exactly
halfway between two adjacent levels):

* ``ties="even"`` (default): to the level whose code has an even LSB. For minifloats this is
  IEEE round-to-nearest-even, for INT and fixed point round-half-to-even. If both neighbours'
  codes have the same LSB (only possible in the non-IEEE layouts: extended BitMoD types, flint4,
  flushed subnormals) the tie goes to the level of smaller magnitude.
* ``ties="down"``: to the lower (more negative) level: the BitMoD reference rule
  ``x <= midpoint -> lower level``.
* ``ties="away"``: to the level of larger magnitude (microxcaling's default "nearest"; also
  ml_dtypes' rule for ``float8_e8m0fnu``, which we match with ``ties="away"`` for every input
  >= 2**-126; for float32-subnormal inputs ml_dtypes rounds up to 2**-126 even when 2**-127 is
  nearer, and we keep nearest-in-value).
* ``binary``: the only tie, x == 0, goes to +1 whatever ``ties`` says (sign(0) = +1, the
  XNOR-popcount convention); so every x >= 0 (also -0.0) encodes to +1.
* :class:`FixedPoint`: the type's own ``ap_fixed`` rounding mode governs; ``ties`` must be left
  at ``"even"`` (where it is ignored) and any other value raises ``ValueError``.

Overflow (``saturate``):

* ``saturate=None`` picks the format's default (:attr:`Format.default_saturate`): saturating
  for every format without Inf (INT, FP4/FP6, E4M3, E8M0, table and extended types), the
  fixed-point type's overflow mode for :class:`FixedPoint`, and non-saturating for formats with
  Inf (fp8_e5m2, fp16, bf16, fp32 and generic ``ieee`` minifloats).
* Saturating: inputs beyond the extreme levels, including +-Inf, become the extreme levels
  (the same as clipping to +-max before an ml_dtypes cast, docs/papers.md).
* Non-saturating (``saturate=False``) is only offered by formats with an Inf or NaN code:
  overflow rounds as if the Inf code (IEEE) or the all-ones NaN code (``fn`` minifloats, E8M0)
  were one more level at the value its bit pattern would have as a finite number (2**(emax+1)
  for IEEE, 480 for E4M3, 2**128 for E8M0), with the same tie rule. This is exactly IEEE RNE
  overflow (``x >= max + ulp/2`` -> Inf) and ml_dtypes' E4M3 overflow -> NaN; Inf inputs give
  Inf (IEEE) or NaN (E4M3). The NaN produced for negative overflow in ``fn`` formats is the
  negative NaN code (as ml_dtypes). Asking a format without Inf/NaN for ``saturate=False``
  raises ``ValueError``.
* Underflow rounds to the nearest level like any other value (to zero, or to a subnormal).

Bad input:

* NaN input encodes to the canonical NaN code (IEEE: quiet NaN ``0.11..1.10..0``; ``fn``: the
  positive all-ones code; E8M0: 255) where the format has one, and raises ``ValueError`` naming
  the format otherwise (note: ml_dtypes maps NaN to 0 for FP4/FP6; we refuse).
* E8M0 has no zero and no sign: inputs <= 0 (including -0.0) raise ``ValueError``; positive
  inputs below 2**-127 encode to code 0 (nearest level).
* Unsigned formats saturate negative inputs to 0 (``uint``) as any saturating cast does.
* Fixed point with WRAP overflow cannot wrap +-Inf and raises ``ValueError``.
* Boolean, complex, string and object arrays raise ``TypeError``.

Enumeration (:meth:`Format.codes`, :attr:`Format.levels`, :meth:`Format.canonical_codes`) is
offered for formats of at most 20 bits; fp32 and wide fixed point raise ``ValueError``.
"""

from __future__ import annotations

import abc
import difflib
import functools
import re
from collections.abc import Callable, Sequence

import numpy as np

from .checks import check_int
from .fixedpoint import (
    OVERFLOW_MODES,
    ROUNDING_MODES,
    check_fixed_params,
    fixed_range,
    quantize_fixed,
)

__all__ = [
    "GRAMMAR",
    "MAX_ENUM_BITS",
    "MAX_TABLE_BITS",
    "SPECIALS",
    "TIES",
    "ExponentFormat",
    "ExtendedFormat",
    "FixedPoint",
    "Format",
    "IntFormat",
    "KHotFormat",
    "MiniFloat",
    "TableFormat",
    "bitmod_candidates",
    "floor_log2",
    "get",
    "naf_digits",
    "names",
]

TIES = ("even", "down", "away")
SPECIALS = ("ieee", "fn", "finite")

# Formats up to this width keep a full code -> value table and encode by table search.
MAX_TABLE_BITS = 16
# codes(), levels and canonical_codes() refuse wider formats (2**20 codes is 8 MiB of int64).
MAX_ENUM_BITS = 20


# --------------------------------------------------------------------------------------------
# Input checking helpers
# --------------------------------------------------------------------------------------------

def _as_values(x, fmt_name: str) -> np.ndarray:
    """Convert encode input to a float64 array, rejecting non-numeric dtypes with TypeError."""
    arr = np.asarray(x)
    kind = arr.dtype.kind
    if kind in "iuf":
        with np.errstate(invalid="ignore"):  # signalling NaNs set the flag when widened
            return arr.astype(np.float64, copy=False)
    if kind == "V":
        # ml_dtypes types (bfloat16, float8_*) are numpy "void"-kind dtypes that cast exactly.
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"cannot encode values of dtype {arr.dtype} to {fmt_name}; "
                    "expected a real (integer or floating) array")


def _check_ties(ties) -> None:
    if ties not in TIES:
        raise ValueError(f"unknown ties rule {ties!r}; expected one of {TIES}")


def _num_name(v: float) -> str:
    """Format a number for a format name: integers without a fraction, others via repr."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# --------------------------------------------------------------------------------------------
# The abstract format
# --------------------------------------------------------------------------------------------

class Format(abc.ABC):
    """A number format: W-bit codes and the exact values they denote.

    Subclasses define :meth:`_decode_valid` (value of in-range int64 codes), :meth:`_key`
    (parameters for equality) and, where the format has them, :attr:`nan_code` and
    :meth:`_overflow_levels`. Encoding of formats up to :data:`MAX_TABLE_BITS` bits is
    generic: a search over the midpoints of the sorted levels (see the module docstring for
    the rounding rules); wider formats override :meth:`_encode_valid`.

    Attributes
    ----------
    name : str
        The name :func:`get` knows the format by.
    bits : int
        Code width.
    signed : bool
        Whether negative values are representable.
    has_inf : bool
        Whether some code decodes to +-Inf.
    nan_code : int or None
        The canonical NaN code that NaN inputs encode to (None: the format has no NaN).
    """

    has_inf: bool = False
    nan_code: int | None = None

    def __init__(self, name: str, bits: int, signed: bool):
        self.name = name
        self.bits = int(bits)
        self.signed = bool(signed)

    # -- to be provided by subclasses ---------------------------------------------------------
    @abc.abstractmethod
    def _decode_valid(self, c: np.ndarray) -> np.ndarray:
        """Exact float64 values of in-range int64 codes ``c`` (any shape)."""

    @abc.abstractmethod
    def _key(self) -> tuple:
        """The parameters that define the format (equality and hashing ignore the name)."""

    def _overflow_levels(self) -> list[tuple[float, int]]:
        """Virtual ``(value, code)`` levels beyond the range used by non-saturating encode."""
        return []

    def _encodable(self, codes: np.ndarray) -> np.ndarray:
        """Mask of codes encode may produce (besides NaN/overflow codes); all finite ones."""
        return np.ones(codes.shape, dtype=bool)

    def _tie_up(self, mids: np.ndarray, pos: np.ndarray, codes: np.ndarray,
                ties: str) -> np.ndarray:
        """For each midpoint of the grid: does an exact tie go to the upper level?"""
        if ties == "down":
            return np.zeros(mids.shape, dtype=bool)
        if ties == "away":
            return mids > 0
        even = codes % 2 == 0
        smaller_upper = np.abs(pos[1:]) < np.abs(pos[:-1])
        return np.where(even[:-1] != even[1:], even[1:], smaller_upper)

    def _check_input(self, x: np.ndarray) -> None:
        """Raise ValueError for inputs the format cannot encode at all (before rounding)."""
        if self.nan_code is None and np.isnan(x).any():
            raise ValueError(f"cannot encode NaN to {self.name}: it has no NaN code")

    # -- derived properties ---------------------------------------------------------------------
    @property
    def default_saturate(self) -> bool:
        """Whether ``encode(..., saturate=None)`` saturates: True unless the format has Inf."""
        return not self.has_inf

    def _resolve_saturate(self, saturate) -> bool:
        if saturate is None:
            return self.default_saturate
        if not isinstance(saturate, (bool, np.bool_)):
            raise TypeError(f"saturate must be None, True or False, not {saturate!r}")
        if not saturate and not self._overflow_levels():
            raise ValueError(f"{self.name} has no Inf or NaN code to overflow to; it always "
                             "saturates (saturate=False is not supported)")
        return bool(saturate)

    def codes(self) -> np.ndarray:
        """All ``2**bits`` codes ``0 .. 2**bits - 1`` as int64."""
        if self.bits > MAX_ENUM_BITS:
            raise ValueError(f"{self.name} has 2**{self.bits} codes; enumeration is limited to "
                             f"{MAX_ENUM_BITS}-bit formats")
        return np.arange(1 << self.bits, dtype=np.int64)

    @functools.cached_property
    def _value_table(self) -> np.ndarray:
        table = self._decode_valid(self.codes())
        table.flags.writeable = False
        return table

    def canonical_codes(self) -> np.ndarray:
        """Codes ``c`` with ``encode(decode(c)) == c`` (default ``saturate``), ascending.

        Excludes the redundant -0 codes, non-canonical NaN codes and codes that encode never
        produces (the most negative code of symmetric formats).
        """
        c = self.codes()
        return c[self.encode(self.decode(c)) == c]

    @functools.cached_property
    def levels(self) -> np.ndarray:
        """Sorted unique finite values encode can produce (a single +0.0 where zero exists)."""
        v = self.decode(self.canonical_codes())
        v = np.sort(v[np.isfinite(v)]) + 0.0  # "+ 0.0" turns -0.0 into +0.0
        v.flags.writeable = False
        return v

    @property
    def qmax(self) -> float:
        """Largest finite ``|level|``: the divisor of absmax scaling."""
        return float(np.max(np.abs(self.levels)))

    # -- decode / encode ------------------------------------------------------------------------
    def _check_codes(self, codes) -> np.ndarray:
        arr = np.asarray(codes)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{self.name} codes must be an integer array, not {arr.dtype}")
        hi = (1 << self.bits) - 1
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > hi:
            bad = arr[arr > hi].flat[0]
            raise ValueError(f"code {bad} out of range for {self.name} (0..{hi})")
        arr = arr.astype(np.int64, copy=False)
        if arr.size and (arr.min() < 0 or arr.max() > hi):
            bad = arr[(arr < 0) | (arr > hi)].flat[0]
            raise ValueError(f"code {bad} out of range for {self.name} (0..{hi})")
        return arr

    def decode(self, codes) -> np.ndarray:
        """Exact values of ``codes``.

        Parameters
        ----------
        codes : array_like of int
            Codes in ``0 .. 2**bits - 1`` (bit patterns); any shape.

        Returns
        -------
        numpy.ndarray of float64
            Same shape; NaN for NaN codes, +-Inf for Inf codes, -0.0 for -0 codes.
        """
        c = self._check_codes(codes)
        if self.bits <= MAX_TABLE_BITS:
            return np.asarray(self._value_table[c])
        return np.asarray(self._decode_valid(c))

    def encode(self, x, *, ties: str = "even", saturate: bool | None = None) -> np.ndarray:
        """Round values to the codes of the nearest levels.

        Parameters
        ----------
        x : array_like of real
            Values, any shape, taken at their exact float64 value.
        ties : {"even", "down", "away"}
            Rule for inputs exactly halfway between two levels (module docstring).
        saturate : bool or None
            Clamp out-of-range values to the extreme levels (True), overflow to Inf/NaN (False)
            or use the format's default (None, see :attr:`default_saturate`).

        Returns
        -------
        numpy.ndarray of int64
            Canonical codes, same shape as ``x``.
        """
        _check_ties(ties)
        sat = self._resolve_saturate(saturate)
        v = _as_values(x, self.name)
        self._check_input(v)
        return self._encode_valid(v, ties, sat)

    @functools.cached_property
    def _grids(self) -> dict:
        return {}

    def _grid(self, sat: bool) -> tuple[np.ndarray, np.ndarray, dict]:
        """Sorted level positions, their codes and the rounding thresholds per tie rule."""
        if sat not in self._grids:
            self._grids[sat] = self._build_grid(sat)
        return self._grids[sat]

    def _build_grid(self, sat: bool) -> tuple[np.ndarray, np.ndarray, dict]:
        table = self._value_table
        all_codes = np.arange(table.size, dtype=np.int64)
        keep = np.isfinite(table) & self._encodable(all_codes)
        vals, first = np.unique(table[keep], return_index=True)  # first = smallest code
        pos = vals + 0.0
        codes = all_codes[keep][first]
        if not sat:
            extra = sorted(self._overflow_levels())
            pos = np.concatenate([[v for v, _ in extra if v < 0], pos,
                                  [v for v, _ in extra if v > 0]])
            codes = np.concatenate([[c for v, c in extra if v < 0], codes,
                                    [c for v, c in extra if v > 0]]).astype(np.int64)
        mids = (pos[:-1] + pos[1:]) / 2
        # Midpoints of these short-mantissa levels are exact in float64; ties rely on it.
        assert np.all(mids - pos[:-1] == pos[1:] - mids), f"inexact midpoints in {self.name}"
        # Level index = number of thresholds strictly below x. A tie that goes up gets the
        # threshold just below the midpoint: no float64 lies strictly between the two, so
        # x >= mid then counts it while every x < mid does not.
        thresholds = {}
        for t in TIES:
            up = self._tie_up(mids, pos, codes, t)
            thr = np.where(up, np.nextafter(mids, -np.inf), mids)
            thr.flags.writeable = False
            thresholds[t] = thr
        small = codes.astype(np.uint16 if self.bits <= 16 else np.int64)
        return pos, small, thresholds

    # Grids up to this many thresholds count comparisons (fast, vectorised); larger ones use a
    # binary search.
    _COMPARE_LIMIT = 40

    def _encode_valid(self, x: np.ndarray, ties: str, sat: bool) -> np.ndarray:
        _, codes, thresholds = self._grid(sat)
        thr = thresholds[ties]
        if thr.size <= self._COMPARE_LIMIT:
            idx = np.zeros(x.shape, dtype=np.int8)
            for t in thr:
                np.add(idx, np.greater(x, t), out=idx, casting="unsafe")
        else:
            idx = np.searchsorted(thr, x, side="left")
        out = np.array(np.take(codes, idx), dtype=np.int64)  # an array even for 0-d input
        nan = np.isnan(x)
        if nan.any():
            out[nan] = self.nan_code
        return out

    # -- identity ---------------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------

class IntFormat(Format):
    """Integers: B-bit two's complement (``signed``) or unsigned binary.

    Parameters
    ----------
    bits : int
        Width, 2..16 signed, 1..16 unsigned.
    signed : bool
        Two's complement (levels ``-2**(B-1) .. 2**(B-1) - 1``) or unsigned (``0 .. 2**B-1``).
    symmetric : bool
        Signed only: encode never produces the most negative code, so the levels are
        ``-(2**(B-1) - 1) .. 2**(B-1) - 1`` (decode still maps that code to ``-2**(B-1)``).
    name : str, optional
        Defaults to ``int<B>``, ``int<B>_sym`` or ``uint<B>``.
    """

    def __init__(self, bits: int, signed: bool = True, symmetric: bool = False, *,
                 name: str | None = None):
        bits = check_int("bits", bits, 2 if signed else 1, MAX_TABLE_BITS)
        if symmetric and not signed:
            raise ValueError("symmetric=True needs a signed integer format")
        self.symmetric = bool(symmetric)
        default = f"{'int' if signed else 'uint'}{bits}{'_sym' if symmetric else ''}"
        super().__init__(name or default, bits, signed)

    def _key(self):
        return (self.bits, self.signed, self.symmetric)

    def _decode_valid(self, c):
        v = c - (1 << self.bits) * (c >> (self.bits - 1)) if self.signed else c
        return v.astype(np.float64)

    def _encodable(self, codes):
        if self.symmetric:
            return codes != (1 << (self.bits - 1))
        return super()._encodable(codes)

    def __repr__(self):
        return (f"IntFormat(bits={self.bits}, signed={self.signed}, "
                f"symmetric={self.symmetric}, name={self.name!r})")


class MiniFloat(Format):
    """Sign / exponent / mantissa floating point (layout in the module docstring).

    Parameters
    ----------
    exp_bits, man_bits : int
        E >= 1 exponent bits and M >= 0 mantissa bits; ``1 + E + M <= 16``, or exactly IEEE
        binary32 (8, 23) which encodes and decodes through numpy ``float32`` instead of tables.
    bias : int, optional
        Exponent bias, default ``2**(E-1) - 1``.
    subnormals : bool
        Keep subnormals (True) or decode every e == 0 code as zero (False).
    specials : {"ieee", "fn", "finite"}
        Top exponent reserved for Inf/NaN; a single NaN pattern per sign (all ones); none.
    name : str, optional
        Defaults to the ``fp_e<E>m<M>...`` grammar name.
    """

    def __init__(self, exp_bits: int, man_bits: int, bias: int | None = None,
                 subnormals: bool = True, specials: str = "ieee", *, name: str | None = None):
        E = check_int("exp_bits", exp_bits, 1, 8)
        M = check_int("man_bits", man_bits, 0, 23)
        wide = (E, M) == (8, 23)
        if 1 + E + M > MAX_TABLE_BITS and not wide:
            raise ValueError(f"minifloat e{E}m{M} has {1 + E + M} bits; at most "
                             f"{MAX_TABLE_BITS} are supported (and IEEE binary32, e8m23)")
        default_bias = (1 << (E - 1)) - 1
        b = default_bias if bias is None else check_int("bias", bias, -900, 900)
        if specials not in SPECIALS:
            raise ValueError(f"unknown specials {specials!r}; expected one of {SPECIALS}")
        top = (1 << E) - 1
        if 1 - b - M < -1074 or top + 1 - b > 1023:
            raise ValueError(f"bias {b} puts e{E}m{M} values outside the float64 range")
        if wide and (b, subnormals, specials) != (127, True, "ieee"):
            raise ValueError("the 32-bit minifloat must be IEEE binary32 (bias 127, "
                             "subnormals, ieee specials)")
        self.exp_bits, self.man_bits, self.bias = E, M, b
        self.subnormals = bool(subnormals)
        self.specials = specials
        self.has_inf = specials == "ieee"
        if specials == "ieee":
            self.nan_code = (top << M) | (1 << (M - 1)) if M >= 1 else None
        elif specials == "fn":
            self.nan_code = (1 << (E + M)) - 1
        default = f"fp_e{E}m{M}"
        if b != default_bias:
            default += f"_b{b}"
        if specials != "ieee":
            default += f"_{specials}"
        if not subnormals:
            default += "_nosub"
        super().__init__(name or default, 1 + E + M, True)
        if not self.qmax > 0:
            raise ValueError(f"minifloat {default} has no nonzero finite value")

    def _key(self):
        return (self.exp_bits, self.man_bits, self.bias, self.subnormals, self.specials)

    def _finite_magnitude(self, e, m):
        """Magnitude of fields (e, m) read as a finite number (no special decoding)."""
        M, b = self.man_bits, self.bias
        norm = np.ldexp((m + (1 << M)).astype(np.float64), (e - b - M).astype(np.int32))
        if self.subnormals:
            sub = np.ldexp(m.astype(np.float64), np.int32(1 - b - M))
        else:
            sub = np.zeros(np.shape(m))
        return np.where(e == 0, sub, norm)

    def _decode_valid(self, c):
        E, M = self.exp_bits, self.man_bits
        top, mmask = (1 << E) - 1, (1 << M) - 1
        e = (c >> M) & top
        m = c & mmask
        val = self._finite_magnitude(e, m)
        if self.specials == "ieee":
            val = np.where(e == top, np.where(m == 0, np.inf, np.nan), val)
        elif self.specials == "fn":
            val = np.where((e == top) & (m == mmask), np.nan, val)
        return np.where((c >> (E + M)) & 1 == 1, -val, val)

    @property
    def qmax(self) -> float:
        """Largest finite magnitude (max normal)."""
        E, M = self.exp_bits, self.man_bits
        top, mmask = (1 << E) - 1, (1 << M) - 1
        if self.specials == "ieee":
            e, m = top - 1, mmask
        elif self.specials == "fn":
            e, m = (top, mmask - 1) if M >= 1 else (top - 1, 0)
        else:
            e, m = top, mmask
        if e < 0:
            return 0.0
        return float(self._finite_magnitude(np.array(e), np.array(m)))

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite value: ``floor(log2(qmax))`` (E4M3: 8)."""
        return int(floor_log2(self.qmax))

    def _overflow_levels(self):
        if self.specials == "finite":
            return []
        top = (1 << self.exp_bits) - 1
        # The overflow code's bit pattern read as a finite number: Inf -> 2**(emax+1),
        # E4M3's S.1111.111 -> 480. Rounding against it reproduces IEEE/ml_dtypes overflow.
        code = (top << self.man_bits) if self.specials == "ieee" else self.nan_code
        if code is None:
            return []
        mag = float(self._finite_magnitude(np.array(top), np.array(code & ((1 << self.man_bits)
                                                                            - 1))))
        sign = 1 << (self.exp_bits + self.man_bits)
        return [(mag, code), (-mag, code | sign)]

    def _encode_valid(self, x, ties, sat):
        if self.bits <= MAX_TABLE_BITS:
            return super()._encode_valid(x, ties, sat)
        return _encode_binary32(x, ties, sat)

    def __repr__(self):
        return (f"MiniFloat(exp_bits={self.exp_bits}, man_bits={self.man_bits}, "
                f"bias={self.bias}, subnormals={self.subnormals}, specials={self.specials!r}, "
                f"name={self.name!r})")


def _encode_binary32(x: np.ndarray, ties: str, sat: bool) -> np.ndarray:
    """Encode float64 values to IEEE binary32 codes (numpy casts are IEEE RNE)."""
    f32max = float(np.finfo(np.float32).max)
    if sat:
        x = np.clip(x, -f32max, f32max)
    with np.errstate(over="ignore", invalid="ignore"):
        y = x.astype(np.float32)
        if ties != "even":
            # Exact ties of the RNE result: find the other neighbour n and compare distances.
            # Both neighbours and x are within a factor 2, so the float64 differences are exact;
            # an infinite result counts as the virtual level 2**128 (IEEE overflow rule).
            y64 = y.astype(np.float64)
            yv = np.where(np.isinf(y64), np.copysign(2.0 ** 128, y64), y64)
            fin = np.isfinite(x) & (yv != x)
            toward = np.where(x > yv, np.float32(np.inf), np.float32(-np.inf))
            n = np.nextafter(np.where(np.isinf(y), np.copysign(np.float32(f32max), y), y),
                             toward)
            n = np.where(np.isinf(y), np.copysign(np.float32(f32max), y), n)
            nv = np.where(np.isinf(n), np.copysign(2.0 ** 128, n), n.astype(np.float64))
            between = (np.minimum(yv, nv) < x) & (x < np.maximum(yv, nv))
            tie = fin & between & (np.abs(x - yv) == np.abs(nv - x))
            # "down": the lower neighbour; "away": the one of larger magnitude.
            pick_n = tie & ((nv < yv) if ties == "down" else (np.abs(nv) > np.abs(yv)))
            y = np.where(pick_n, np.where(np.abs(nv) >= 2.0 ** 128,
                                          np.copysign(np.float32(np.inf), n), n), y)
            y = y.astype(np.float32)
    codes = y.view(np.uint32).astype(np.int64)
    codes = np.where(y == 0, 0, codes)
    return np.where(np.isnan(x), 0x7FC00000, codes)


class ExponentFormat(Format):
    """Unsigned power-of-two scale (OCP E8M0 for ``exp_bits=8``).

    Code ``c`` means ``2**(c - bias)``; the all-ones code is NaN; there is no zero and no
    sign. Encode rounds to the nearest level in *value* (ties per ``ties``; note ml_dtypes'
    ``float8_e8m0fnu`` rounds ties away, i.e. our ``ties="away"``), saturates by default and
    rejects inputs <= 0.

    Parameters
    ----------
    exp_bits : int
        Code width, 2..10.
    bias : int, optional
        Default ``2**(E-1) - 1`` (127 for E8M0).
    name : str, optional
        Defaults to ``e<E>m0`` (plus ``_b<bias>`` for a non-default bias).
    """

    def __init__(self, exp_bits: int = 8, bias: int | None = None, *, name: str | None = None):
        E = check_int("exp_bits", exp_bits, 2, 10)
        default_bias = (1 << (E - 1)) - 1
        b = default_bias if bias is None else check_int("bias", bias, -900, 900)
        if -b < -1074 or (1 << E) - b > 1023:
            raise ValueError(f"bias {b} puts e{E}m0 values outside the float64 range")
        self.exp_bits, self.bias = E, b
        self.nan_code = (1 << E) - 1
        default = f"e{E}m0" + ("" if b == default_bias else f"_b{b}")
        super().__init__(name or default, E, False)

    def _key(self):
        return (self.exp_bits, self.bias)

    def _decode_valid(self, c):
        v = np.ldexp(1.0, (c - self.bias).astype(np.int32))
        return np.where(c == self.nan_code, np.nan, v)

    def _overflow_levels(self):
        # 255 read as a power of two is 2**128: overflow beyond the tie with 2**127 -> NaN.
        return [(float(np.ldexp(1.0, self.nan_code - self.bias)), self.nan_code)]

    def _check_input(self, x):
        super()._check_input(x)
        bad = (x <= 0) | (np.signbit(x) & ~np.isnan(x))
        if bad.any():
            raise ValueError(f"cannot encode {x[bad].flat[0]!r} to {self.name}: it has no zero "
                             "or negative values (inputs must be > 0)")

    def __repr__(self):
        return f"ExponentFormat(exp_bits={self.exp_bits}, bias={self.bias}, name={self.name!r})"


class TableFormat(Format):
    """A format given by its code -> value table (``values[c]`` is the value of code ``c``).

    Parameters
    ----------
    name : str
        Format name.
    values : sequence of float
        ``2**bits`` finite values; repeated values make the larger codes non-canonical. Use
        ``-0.0`` for a sign-magnitude -0 code.
    """

    def __init__(self, name: str, values: Sequence[float]):
        vals = np.array(values, dtype=np.float64)
        n = vals.size
        if n < 2 or n & (n - 1):
            raise ValueError(f"a table format needs 2**bits >= 2 values, got {n}")
        if not np.isfinite(vals).all():
            raise ValueError("table format values must be finite")
        if np.unique(vals).size < 2:
            raise ValueError("a table format needs at least two distinct values")
        self.values = tuple(float(v) for v in vals)
        super().__init__(name, n.bit_length() - 1, bool((vals < 0).any()))

    def _key(self):
        # Compare -0.0 and 0.0 apart (they are different decodes); repr keeps the sign.
        return tuple(repr(v) for v in self.values)

    def _decode_valid(self, c):
        return np.array(self.values, dtype=np.float64)[c]

    def __repr__(self):
        return f"TableFormat({self.name!r}, {list(self.values)})"


def naf_digits(value: int) -> list[int]:
    """Non-adjacent form of an integer: digits in {-1, 0, +1}, LSB first, no two adjacent ones
    nonzero, ``value == sum(d * 2**i)``; it is unique and has the fewest nonzero digits of any
    signed-digit form (so its nonzero count is the fewest powers of two summing to ``value``).

    Digit ``i`` of an odd remainder ``r`` is ``2 - (r mod 4)`` (+1 for ``r = 1 mod 4``, -1 for
    ``3 mod 4``), which leaves ``r - d`` divisible by 4, so the next digit is zero.
    """
    r = check_int("value", value)
    digits = []
    while r:
        d = 2 - (r % 4) if r % 2 else 0
        digits.append(d)
        r = (r - d) // 2
    return digits


KHOT_MAX_TERMS = 3  # khot4 would be every integer of [-128, 128]: 9-bit codes (INT9)
KHOT_MAX_MAGNITUDE = 1 << 7  # levels in [-128, 128]: term exponents 0..7


class KHotFormat(Format):
    """K-hot integers (QFX): ``|v| <= 128`` and ``v`` a sum of at most ``terms`` powers of two.

    Code ``S | index`` (sign on top): ``(-1)**S * magnitudes[index]``, zero for an index beyond
    the list (module docstring, K-hot). ``bits = 1 + bit_length(len(magnitudes) - 1)``: 5, 7, 8
    for K = 1, 2, 3.

    Parameters
    ----------
    terms : int
        ``K``, 1..3.
    name : str, optional
        Defaults to ``khot<K>``.

    Attributes
    ----------
    terms : int
        ``K``.
    magnitudes : tuple of int
        The K-hot magnitudes ``0 .. 128`` in ascending order; the code's index field picks one.
    index_bits : int
        Width of the index field (the code without its sign bit).
    """

    def __init__(self, terms: int, *, name: str | None = None):
        self.terms = check_int("terms", terms, 1, KHOT_MAX_TERMS)
        self.magnitudes = tuple(m for m in range(KHOT_MAX_MAGNITUDE + 1)
                                if sum(d != 0 for d in naf_digits(m)) <= self.terms)
        self.index_bits = (len(self.magnitudes) - 1).bit_length()
        super().__init__(name or f"khot{self.terms}", 1 + self.index_bits, True)

    def _key(self):
        return (self.terms,)

    def _decode_valid(self, c):
        table = np.zeros(1 << self.index_bits)
        table[:len(self.magnitudes)] = self.magnitudes
        magnitude = table[c & ((1 << self.index_bits) - 1)]
        return np.where(c >> self.index_bits == 1, -magnitude, magnitude)

    def __repr__(self):
        return f"KHotFormat(terms={self.terms}, name={self.name!r})"


class _BinaryFormat(TableFormat):
    """{-1, +1} (code 0 -> -1, 1 -> +1); x >= 0 -> +1 whatever the tie rule."""

    def __init__(self, name: str = "binary"):
        super().__init__(name, [-1.0, 1.0])

    def _tie_up(self, mids, pos, codes, ties):
        return np.ones(mids.shape, dtype=bool)  # the only midpoint is 0: sign(0) = +1

    def __repr__(self):
        return f"_BinaryFormat(name={self.name!r})"


class ExtendedFormat(Format):
    """A base format whose redundant sign-bit-only code decodes to ``special_value`` (BitMoD).

    Parameters
    ----------
    base_format : Format
        Format with at most 16 bits whose code ``special_code`` decodes to a redundant zero.
    special_value : float
        Finite, nonzero value not already a level of the base.
    special_code : int, optional
        Default ``1 << (bits - 1)`` (sign set, magnitude 0: the -0 code).
    name : str, optional
        Defaults to ``<base>_sv<value>``.

    Attributes
    ----------
    base_format, special_value, special_code
        As given: the RTL term encoder decodes the base and muxes in the special value.
    """

    def __init__(self, base_format: Format, special_value: float,
                 special_code: int | None = None, *, name: str | None = None):
        if not isinstance(base_format, Format) or base_format.bits > MAX_TABLE_BITS:
            raise TypeError(f"base_format must be a Format of at most {MAX_TABLE_BITS} bits")
        bits = base_format.bits
        code = (1 << (bits - 1)) if special_code is None else check_int(
            "special_code", special_code, 0, (1 << bits) - 1)
        sv = float(special_value)
        if not np.isfinite(sv) or sv == 0:
            raise ValueError(f"special_value must be finite and nonzero, not {special_value!r}")
        if base_format.decode(code) != 0 or code in set(base_format.canonical_codes().tolist()):
            raise ValueError(f"code {code} of {base_format.name} is not a redundant zero; it "
                             "cannot carry a special value")
        if sv in set(base_format.levels.tolist()):
            raise ValueError(f"special value {_num_name(sv)} is already a level of "
                             f"{base_format.name}")
        self.base_format = base_format
        self.special_value = sv
        self.special_code = code
        self.has_inf = base_format.has_inf
        self.nan_code = base_format.nan_code
        super().__init__(name or f"{base_format.name}_sv{_num_name(sv)}", bits,
                         base_format.signed or sv < 0)

    def _key(self):
        return (type(self.base_format).__name__, self.base_format._key(), self.special_value,
                self.special_code)

    def _decode_valid(self, c):
        return np.where(c == self.special_code, self.special_value,
                        self.base_format._value_table[c])

    def _overflow_levels(self):
        return self.base_format._overflow_levels()

    def __repr__(self):
        return (f"ExtendedFormat({self.base_format.name!r}, special_value="
                f"{_num_name(self.special_value)}, special_code={self.special_code}, "
                f"name={self.name!r})")


class FixedPoint(Format):
    """``ap_fixed<width, width - frac, rounding, overflow>`` (or ``ap_ufixed``).

    Decode is the two's-complement (or unsigned) integer times ``2**-frac``; encode is
    :func:`golden.fixedpoint.quantize_fixed` followed by taking the low ``width`` bits. The
    type's ``rounding`` mode replaces the ``ties`` rule (``ties`` must stay ``"even"``) and its
    ``overflow`` mode replaces ``saturate`` (``saturate`` may be None, or True for SAT/SAT_SYM,
    False for WRAP/SAT_ZERO).

    Parameters
    ----------
    width : int
        Total bits including the sign, 1..48.
    frac : int
        Fraction bits (may be negative or exceed width), -64..64.
    rounding, overflow : str
        ``ap_fixed`` modes from :data:`golden.fixedpoint.ROUNDING_MODES` / ``OVERFLOW_MODES``.
    signed : bool
        Two's complement or unsigned.
    name : str, optional
        Defaults to the ``q<W>_<F>...`` / ``uq<W>_<F>...`` grammar name.
    """

    def __init__(self, width: int, frac: int, rounding: str = "RND_CONV",
                 overflow: str = "SAT", signed: bool = True, *, name: str | None = None):
        rounding, overflow = str(rounding).upper(), str(overflow).upper()
        check_fixed_params(width, frac, rounding, overflow, signed)
        if not signed and overflow == "SAT_SYM":
            raise ValueError("SAT_SYM needs a signed fixed-point type")
        if signed and width < 2:
            raise ValueError("a signed fixed-point type needs width >= 2")
        self.width, self.frac = int(width), int(frac)
        self.rounding, self.overflow = rounding, overflow
        default = f"{'' if signed else 'u'}q{width}_{frac}"
        if rounding != "RND_CONV":
            default += f"_{rounding.lower()}"
        if overflow != "SAT":
            default += f"_{overflow.lower()}"
        super().__init__(name or default, width, signed)

    def _key(self):
        return (self.width, self.frac, self.rounding, self.overflow, self.signed)

    @property
    def default_saturate(self) -> bool:
        return self.overflow in ("SAT", "SAT_SYM")

    @property
    def lsb(self) -> float:
        """Value of one code step, ``2**-frac``."""
        return float(np.ldexp(1.0, -self.frac))

    def _resolve_saturate(self, saturate):
        if saturate is not None and bool(saturate) != self.default_saturate:
            raise ValueError(f"{self.name} has overflow mode {self.overflow}; saturate="
                             f"{saturate!r} contradicts it (leave saturate=None)")
        return self.default_saturate

    def _decode_valid(self, c):
        v = c - (1 << self.width) * (c >> (self.width - 1)) if self.signed else c
        return np.ldexp(v.astype(np.float64), np.int32(-self.frac))

    def _encode_valid(self, x, ties, sat):
        if ties != "even":
            raise ValueError(f"{self.name} rounds with its own mode {self.rounding}; ties="
                             f"{ties!r} is not supported (build FixedPoint(..., rounding=...))")
        if np.isnan(x).any():
            raise ValueError(f"cannot encode NaN to {self.name}: fixed point has no NaN")
        if self.overflow == "WRAP" and np.isinf(x).any():
            raise ValueError(f"cannot encode +-Inf to {self.name}: WRAP has no low bits to keep")
        q = quantize_fixed(x, self.width, self.frac, self.rounding, self.overflow, self.signed)
        return np.asarray(q & ((1 << self.width) - 1), dtype=np.int64)

    @functools.cached_property
    def levels(self) -> np.ndarray:
        """Sorted values the type can hold after overflow handling."""
        if self.width > MAX_ENUM_BITS:
            raise ValueError(f"{self.name} has 2**{self.width} codes; enumeration is limited "
                             f"to {MAX_ENUM_BITS}-bit formats")
        lo, hi = fixed_range(self.width, self.signed, self.overflow)
        v = np.ldexp(np.arange(lo, hi + 1, dtype=np.float64), np.int32(-self.frac))
        v.flags.writeable = False
        return v

    @property
    def qmax(self) -> float:
        lo, hi = fixed_range(self.width, self.signed, self.overflow)
        return float(np.ldexp(float(max(hi, -lo)), -self.frac))

    def __repr__(self):
        return (f"FixedPoint(width={self.width}, frac={self.frac}, rounding={self.rounding!r}, "
                f"overflow={self.overflow!r}, signed={self.signed}, name={self.name!r})")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def floor_log2(x) -> np.ndarray:
    """Exact ``floor(log2(x))`` of positive finite values, as int64 (the MX scale rule).

    Parameters
    ----------
    x : array_like of float
        Positive finite values (float64 subnormals are handled exactly).

    Returns
    -------
    numpy.ndarray of int64
        ``e`` with ``2**e <= x < 2**(e+1)``.
    """
    v = _as_values(x, "floor_log2")
    bad = ~(np.isfinite(v) & (v > 0))
    if bad.any():
        raise ValueError(f"floor_log2 needs positive finite values, got {v[bad].flat[0]!r}")
    _, e = np.frexp(v)  # v = m * 2**e with m in [0.5, 1)
    return np.asarray(e, dtype=np.int64) - 1


_CANDIDATES = {
    "mixture": ("{fp}_er_pos", "{fp}_er_neg", "{fp}_ea_pos", "{fp}_ea_neg"),
    "er": ("{fp}_er_pos", "{fp}_er_neg"),
    "ea": ("{fp}_ea_pos", "{fp}_ea_neg"),
}


def bitmod_candidates(bits: int, kind: str = "mixture") -> list[str]:
    """Ordered BitMoD per-group candidate type names (docs/papers.md, group quantization).

    Parameters
    ----------
    bits : {3, 4}
        Weight width.
    kind : {"mixture", "er", "ea", "ant"}
        ER+EA mixture in selector order (ER_POS, ER_NEG, EA_POS, EA_NEG), ER only, EA only, or
        the ANT-style pair (3-bit ``["int3_sym", "fp3"]``, 4-bit ``["int4_sym", "flint4"]``).

    Returns
    -------
    list of str
        Names accepted by :func:`get`; the list index is the group selector value.
    """
    if bits not in (3, 4):
        raise ValueError(f"BitMoD candidates exist for 3 or 4 bits, not {bits!r}")
    if kind == "ant":
        return ["int3_sym", "fp3"] if bits == 3 else ["int4_sym", "flint4"]
    if kind not in _CANDIDATES:
        raise ValueError(f"unknown candidate kind {kind!r}; expected one of "
                         f"{(*_CANDIDATES, 'ant')}")
    return [n.format(fp=f"fp{bits}") for n in _CANDIDATES[kind]]


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_FLINT4 = [0, 1, 2, 3, 4, 6, 8, 16]

_REGISTRY: dict[str, Callable[[], Format]] = {}


def _register(name: str, factory: Callable[..., Format], *args, **kwargs) -> None:
    _REGISTRY[name] = functools.partial(factory, *args, name=name, **kwargs)


for _b in range(2, 9):
    _register(f"int{_b}", IntFormat, _b)
    _register(f"uint{_b}", IntFormat, _b, signed=False)
    _register(f"int{_b}_sym", IntFormat, _b, symmetric=True)
_register("binary", _BinaryFormat)
_register("ternary", TableFormat, values=[0.0, 1.0, -0.0, -1.0])
_register("flint4", TableFormat, values=[*map(float, _FLINT4), *(-float(v) for v in _FLINT4)])
_register("fp3", MiniFloat, 2, 0, bias=1, specials="finite")
_register("fp4", MiniFloat, 2, 1, bias=0, specials="finite")
for _fp, _er, _ea in (("fp3", 3, 6), ("fp4", 10, 16)):
    for _kind, _mag in (("er", _er), ("ea", _ea)):
        for _sign, _s in (("pos", 1), ("neg", -1)):
            _REGISTRY[f"{_fp}_{_kind}_{_sign}"] = functools.partial(
                lambda fp, v, n: ExtendedFormat(get(fp), v, name=n), _fp, _s * _mag,
                f"{_fp}_{_kind}_{_sign}")
_register("fp4_e2m1", MiniFloat, 2, 1, specials="finite")
_register("fp6_e3m2", MiniFloat, 3, 2, specials="finite")
_register("fp6_e2m3", MiniFloat, 2, 3, specials="finite")
_register("fp8_e4m3", MiniFloat, 4, 3, specials="fn")
_register("fp8_e5m2", MiniFloat, 5, 2)
_register("e8m0", ExponentFormat, 8)
_register("fp16", MiniFloat, 5, 10)
_register("bf16", MiniFloat, 8, 7)
_register("fp32", MiniFloat, 8, 23)
for _k in range(1, KHOT_MAX_TERMS + 1):
    _register(f"khot{_k}", KHotFormat, _k)


def _parse_fixed(m: re.Match) -> Format:
    signed = m["u"] == ""
    rest = (m["rest"] or "").upper()
    rounding, overflow = "RND_CONV", "SAT"
    if rest:
        ovf = next((o for o in OVERFLOW_MODES if rest == o or rest.endswith("_" + o)), None)
        rnd = rest[: -len(ovf) - 1] if ovf and rest != ovf else ("" if ovf else rest)
        if rnd and rnd not in ROUNDING_MODES:
            raise ValueError(f"unknown fixed-point modes {m['rest']!r}; rounding is one of "
                             f"{[r.lower() for r in ROUNDING_MODES]}, overflow one of "
                             f"{[o.lower() for o in OVERFLOW_MODES]}")
        rounding, overflow = rnd or rounding, ovf or overflow
    return FixedPoint(int(m["w"]), int(m["f"]), rounding, overflow, signed)


_PARSERS: list[tuple[str, re.Pattern, Callable[[re.Match], Format]]] = [
    ("int<B>, int<B>_sym, uint<B>", re.compile(r"(?P<u>u?)int(?P<b>\d+)(?P<sym>_sym)?"),
     lambda m: IntFormat(int(m["b"]), signed=not m["u"], symmetric=bool(m["sym"]))),
    ("fp_e<E>m<M>[_b<bias>][_ieee|_fn|_finite][_nosub]",
     re.compile(r"fp_e(?P<e>\d+)m(?P<m>\d+)(?:_b(?P<b>-?\d+))?(?:_(?P<s>ieee|fn|finite))?"
                r"(?P<nosub>_nosub)?"),
     lambda m: MiniFloat(int(m["e"]), int(m["m"]), None if m["b"] is None else int(m["b"]),
                         subnormals=not m["nosub"], specials=m["s"] or "ieee")),
    ("e<E>m0[_b<bias>]", re.compile(r"e(?P<e>\d+)m0(?:_b(?P<b>-?\d+))?"),
     lambda m: ExponentFormat(int(m["e"]), None if m["b"] is None else int(m["b"]))),
    ("q<W>_<F>[_<rounding>][_<overflow>], uq<W>_<F>...",
     re.compile(r"(?P<u>u?)q(?P<w>\d+)_(?P<f>-?\d+)(?:_(?P<rest>[a-z_]+))?"), _parse_fixed),
    ("<base>_sv<value>", re.compile(r"(?P<base>.+)_sv(?P<v>-?\d+(?:\.\d+)?)"),
     lambda m: ExtendedFormat(get(m["base"]), float(m["v"]))),
]

GRAMMAR = "; ".join(g for g, _, _ in _PARSERS)


@functools.cache
def _get_cached(key: str) -> Format:
    if key in _REGISTRY:
        return _REGISTRY[key]()
    for _, pattern, build in _PARSERS:
        m = pattern.fullmatch(key)
        if m:
            try:
                return build(m)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"invalid format name {key!r}: {exc}") from None
    close = difflib.get_close_matches(key, list(_REGISTRY), n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(f"unknown format {key!r}; {hint}registered names: "
                     f"{', '.join(_REGISTRY)}; parametrised names: {GRAMMAR}")


def get(name: str) -> Format:
    """The format called ``name`` (case-insensitive; registered or parametrised, see module doc).

    Raises
    ------
    ValueError
        Unknown name (the message lists close matches, the registered names and the grammar)
        or invalid parameters in a parametrised name.
    """
    if not isinstance(name, str):
        raise TypeError(f"format name must be a str, not {type(name).__name__}")
    return _get_cached(name.strip().lower())


def names() -> list[str]:
    """All registered format names (parametrised names are accepted by :func:`get` too)."""
    return list(_REGISTRY)

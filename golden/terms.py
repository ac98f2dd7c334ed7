"""Weight term decomposition: the bit-serial "unified representation" (docs/papers.md).

Every weight code becomes ``T`` signed power-of-two *terms*. Term ``t`` is ``(s_t, e_t, m_t)``
(sign, exponent, nonzero flag) and denotes ``(-1)**s_t * m_t * 2**(e_t + bsig_t)``, where the
significance shift ``bsig_t`` is shared by every weight (every lane) in term-cycle ``t``. The
sum of a weight's terms is exactly its decoded level in **code units**::

    sum_t (-1)**s_t * m_t * 2**(e_t + bsig_t) == decode(code) / unit

A zero term is canonical: ``m = 0`` implies ``s = 0`` and ``e = 0``.

Code units (``unit``, the value of one code unit)
-------------------------------------------------
* Integers: 1. Fixed point ``q<W>_<F>``: ``2**-F`` (the raw integer).
* Minifloats: the smallest subnormal, ``2**(1 - bias - M)``. BitMoD ``fp3``/``fp4`` have unit 1
  (their registered definitions are already in code units: FP4 code units are half the paper's
  units, i.e. the paper's 5-bit half-unit magnitude ``M`` *is* the FP4 code-unit magnitude), OCP
  ``fp4_e2m1`` has unit 0.5 (so its code-unit levels equal ``fp4``'s), ``fp8_e4m3`` 2**-9.
* ``flint4``, the extended types and the K-hot formats: 1.

Paths (chosen per format; a mixture must use one path and share its base levels)
------------------------------------------------------------------------------
``booth`` (``int<B>``, ``int<B>_sym``, ``uint<B>``, ``q<W>_<F>``; B <= 8)
    Radix-4 Booth recoding of the two's-complement code-unit value. Signed codes are sign
    extended, unsigned ones zero extended, to ``W = 2 * T`` bits with ``T = ceil(B / 2)``
    (signed) or ``ceil((B + 1) / 2)`` (unsigned): INT8 4 terms, INT6 3, INT4 2, INT2 1, INT3 2
    (one sign-extension bit: ``b3 = b2``), UINT4 3. Digit ``i`` reads ``(b[2i+1], b[2i],
    b[2i-1])`` with ``b[-1] = 0``: ``000, 111 -> 0``; ``001, 010 -> +1``; ``101, 110 -> -1``;
    ``011 -> +2``; ``100 -> -2``. A digit ``d`` is the term ``s = d < 0``, ``e = |d| - 1``
    (``|d| = 2`` gives ``e = 1``), ``m = d != 0``; ``bsig_i = 2 i``. Exponent width 1.

``two_term`` (BitMoD ``fp3``, ``fp4``, ANT ``flint4`` and their extended types, e.g.
``fp4_er_pos`` or ``fp3_sv7``)
    Sign-magnitude: every magnitude ``M`` (code units, 5 bits, at most two 1-bits) is split
    into term 1 = the leading one of the upper window ``M[4:1]`` (``e = position - 1``,
    ``bsig = 1``) and term 2 = the remaining one-bit (``e = position``, ``bsig = 0``), both with
    the code's sign. A single-one magnitude >= 2 has a zero term 2; ``M = 1`` has a zero term 1.
    Exponent width 2 for both terms, ``bsig = (1, 0)``. The sign-only ("-0") code reads the
    **special-value register** when any format of the encoder is an extended type (else it is
    zero): 4 entries, the per-group selector picks one. An entry holds the special value's two
    terms directly in the same window, term 1 ``+-2**(e+1)`` (2, 4, 8, 16) and term 2
    ``+-2**e`` (1, 2, 4, 8), so the hardware only muxes it in; expressible values are
    ``a + b`` with ``a in {0, +-2, +-4, +-8, +-16}`` and ``b in {0, +-1, +-2, +-4, +-8}``
    (``+-3 = 2+1``, ``+-6``, ``+-10 = 8+2``, ``+-16 = 16+0``, ``7 = 8-1``, ``5``, ``-12``).

``significand`` (every other minifloat of at most 8 bits: ``fp4_e2m1``, ``fp6_e3m2``,
``fp6_e2m3``, ``fp8_e4m3``, ``fp8_e5m2``, ``fp_e<E>m<M>...``)
    A finite value ``+-sig << shift`` in code units (``sig = 2**M + m``, ``shift = e - 1`` for
    a normal code, ``sig = m``, ``shift = 0`` for a subnormal) gives one term per significand
    bit: ``m_j = sig[j]``, ``e_j = shift``, ``s_j = sign``, ``bsig_j = j``; ``T = M + 1``.
    Exponent width ``max(1, bit_length(max shift))``. Codes that decode to NaN or +-Inf give
    all-zero terms and set the ``nonfinite`` flag (a weight never is one).

``khot`` (the K-hot formats ``khot1``, ``khot2``, ``khot3``; QFX)
    The nonzero digits of the level's non-adjacent form (:func:`golden.formats.naf_digits`),
    largest position first: digit ``d`` at position ``i`` is the term ``s = d < 0``, ``e = i``,
    ``m = 1``. A level with fewer than K nonzero digits (at most K by the format's definition)
    ends in zero terms; zero is K zero terms. ``T = K`` (a bit-serial PE spends K cycles per
    weight), ``bsig = 0`` for every term, exponent width 3 (positions 0..7: the NAF of a
    magnitude up to 128 never reaches position 8). The code's sign bit is the sign of the
    leading term; the NAF of ``-v`` is the NAF of ``v`` with every digit negated.

Payload layout (bit-exact with the RTL ``TermEncoder.o_stream``; :func:`pack_terms`)
------------------------------------------------------------------------------------
Term ``t`` occupies bits ``[t * (X + 2), (t + 1) * (X + 2))`` with X the exponent width:
sign at its bit 0, exponent in bits ``1 .. X``, nonzero at bit ``X + 1``; the ``nonfinite``
flag follows the last term. Register entry (8 bits): term 1 in bits 0..3, term 2 in bits 4..7,
each ``(sign, exp[2], nonzero)`` LSB first; entry ``i`` of the 32-bit register at bits
``8 i .. 8 i + 7`` (:func:`pack_special_register`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import formats as fmts

__all__ = [
    "ENTRY_BITS", "MAX_CODE_BITS", "MAX_FORMATS", "REGISTER_BITS", "REGISTER_ENTRIES",
    "SELECTOR_BITS", "WINDOW_EXP_BITS", "TermGeometry", "Terms", "decompose",
    "default_special_values", "entry_value", "geometry", "pack_special_register", "pack_terms",
    "special_register_entry", "terms_per_weight", "terms_value",
]

MAX_CODE_BITS = 8
MAX_FORMATS = 4
SELECTOR_BITS = 2
REGISTER_ENTRIES = 1 << SELECTOR_BITS
WINDOW_EXP_BITS = 2
TERM_WINDOW_BITS = WINDOW_EXP_BITS + 2
ENTRY_BITS = 2 * TERM_WINDOW_BITS
REGISTER_BITS = REGISTER_ENTRIES * ENTRY_BITS
# Term 1 of the two-term window covers magnitude bits 1..4, term 2 bits 0..3.
TWO_TERM_BSIG = (1, 0)
MAGNITUDE_BITS = 5

_TWO_TERM_BASES = ("fp3", "fp4", "flint4")


@dataclass(frozen=True)
class TermGeometry:
    """The term representation of a format (or a mixture of formats).

    Attributes
    ----------
    formats : tuple of str
        Canonical format names, in selector order.
    path : {"booth", "two_term", "significand", "khot"}
        Decomposition (module docstring).
    code_bits : int
        Width of a weight code.
    terms : int
        Terms per weight ``T`` (cycles per weight of a bit-serial PE).
    exp_bits : int
        Width of each term's exponent field.
    bsig : tuple of int
        Significance shift of each term-cycle.
    unit : float
        Value of one code unit.
    has_register : bool
        Whether the sign-only code reads the special-value register.
    special_code : int or None
        That code (``1 << (code_bits - 1)``) on the two-term path.
    """

    formats: tuple[str, ...]
    path: str
    code_bits: int
    terms: int
    exp_bits: int
    bsig: tuple[int, ...]
    unit: float
    has_register: bool
    special_code: int | None

    @property
    def term_bits(self) -> int:
        """Bits of one packed term: sign, exponent, nonzero."""
        return self.exp_bits + 2

    @property
    def payload_bits(self) -> int:
        """Bits of one packed weight: ``T`` terms and the nonfinite flag."""
        return self.terms * self.term_bits + 1


@dataclass(frozen=True)
class Terms:
    """Decomposed weights: ``sign``, ``exp``, ``nonzero`` of shape ``codes.shape + (T,)``.

    ``bsig`` has shape ``(T,)``; ``nonfinite`` has the shape of the codes. All int64 except
    ``nonfinite`` (bool).
    """

    sign: np.ndarray
    exp: np.ndarray
    nonzero: np.ndarray
    bsig: np.ndarray
    nonfinite: np.ndarray
    exp_bits: int


def _fmt(name) -> fmts.Format:
    if not isinstance(name, str):
        raise TypeError(f"format names must be str, not {name!r}")
    return fmts.get(name)


def _is(fmt: fmts.Format, base: str) -> bool:
    return fmt == fmts.get(base)


def _two_term_base(fmt: fmts.Format) -> str | None:
    """Name of the fp3/fp4/flint4 base of a two-term format (None for other formats)."""
    inner = fmt.base_format if isinstance(fmt, fmts.ExtendedFormat) else fmt
    return next((b for b in _TWO_TERM_BASES if _is(inner, b)), None)


def _unit(fmt: fmts.Format) -> float:
    if isinstance(fmt, fmts.MiniFloat):
        return float(np.ldexp(1.0, 1 - fmt.bias - fmt.man_bits))
    if isinstance(fmt, fmts.FixedPoint):
        return fmt.lsb
    return 1.0


def _window_pairs():
    term1 = [0] + [s * (1 << (e + 1)) for e in range(4) for s in (1, -1)]
    term2 = [0] + [s * (1 << e) for e in range(4) for s in (1, -1)]
    return itertools.product(term1, term2)


def special_register_entry(value) -> int:
    """Register-entry bits (8) holding ``value`` (code units) as two window terms.

    Binary magnitudes with at most two 1-bits use the same split as the base levels (both terms
    carry the value's sign); the others (``+-7 = +-(8 - 1)``, ``+-14``, ``+-15``) a leading
    term and an opposite-signed one. ``0`` gives the all-zero entry (the sign-only code then
    decodes to zero, as in the plain base format).

    Raises
    ------
    ValueError
        ``value`` is not an integer or not expressible as two window terms.
    """
    v = float(value)
    if not v.is_integer():
        raise ValueError(f"special value {value!r} is not an integer number of code units")
    v = int(v)
    pairs = [(a, b) for a, b in _window_pairs() if a + b == v]
    if not pairs:
        raise ValueError(f"special value {value!r} cannot be made of two signed power-of-two "
                         "terms in the register window (term 1 in +-{2, 4, 8, 16}, term 2 in "
                         "+-{1, 2, 4, 8})")
    # Fewest terms, then no opposite signs, then the larger leading term.
    a, b = min(pairs, key=lambda p: ((p[0] != 0) + (p[1] != 0), p[0] * p[1] < 0, -abs(p[0])))
    bits = 0
    for slot, (term, bsig) in enumerate(((a, 1), (b, 0))):
        if term:
            field = int(term < 0) | ((abs(term).bit_length() - 1 - bsig) << 1) | (1 << 3)
            bits |= field << (slot * TERM_WINDOW_BITS)
    return bits


def entry_value(bits) -> int:
    """Value (code units) of any 8-bit register entry, zero terms canonical or not."""
    bits = int(bits)
    if not 0 <= bits < 1 << ENTRY_BITS:
        raise ValueError(f"register entry {bits!r} does not fit {ENTRY_BITS} bits")
    total = 0
    for slot, bsig in enumerate(TWO_TERM_BSIG):
        field = bits >> (slot * TERM_WINDOW_BITS)
        if field >> 3 & 1:
            mag = 1 << (((field >> 1) & 3) + bsig)
            total += -mag if field & 1 else mag
    return total


def pack_special_register(values: Sequence) -> int:
    """The 32-bit special-value register holding ``values`` (4 code-unit values)."""
    values = list(values)
    if len(values) != REGISTER_ENTRIES:
        raise ValueError(f"the special-value register has {REGISTER_ENTRIES} entries, "
                         f"got {len(values)} values")
    return sum(special_register_entry(v) << (i * ENTRY_BITS) for i, v in enumerate(values))


def _names(format_name) -> tuple[str, ...]:
    if isinstance(format_name, str):
        return (format_name,)
    if isinstance(format_name, (list, tuple)) and format_name:
        return tuple(format_name)
    raise TypeError(f"format_name must be a format name or a non-empty list of names, not "
                    f"{format_name!r}")


@functools.cache
def _geometry(names: tuple[str, ...]) -> TermGeometry:
    if len(names) > MAX_FORMATS:
        raise ValueError(f"a mixture has at most {MAX_FORMATS} formats, not {len(names)}: "
                         f"{list(names)}")
    members = [_fmt(n) for n in names]
    if len({f.bits for f in members}) != 1:
        raise ValueError(f"formats of a mixture must have the same width; {list(names)} have "
                         f"{[f.bits for f in members]} bits")
    geos = [_single(n, f) for n, f in zip(names, members, strict=True)]
    first = geos[0]
    for name, f, g in zip(names, members, geos, strict=True):
        if g.path != "two_term" and len(names) > 1:
            raise ValueError(f"format {name!r} ({g.path} path) cannot be mixed: only BitMoD "
                             "two-term formats sharing their base levels form a mixture")
        if g.path == "two_term" and _two_term_base(f) != _two_term_base(members[0]):
            raise ValueError(f"format {name!r} does not share the base levels of "
                             f"{names[0]!r}; a mixture differs only in the special value")
    return TermGeometry(tuple(f.name for f in members), first.path, first.code_bits,
                        first.terms, first.exp_bits, first.bsig, first.unit,
                        any(g.has_register for g in geos), first.special_code)


def _single(name: str, fmt: fmts.Format) -> TermGeometry:
    if fmt.bits > MAX_CODE_BITS:
        raise ValueError(f"format {name!r} has {fmt.bits}-bit codes; the term encoder takes at "
                         f"most {MAX_CODE_BITS}")
    unit = _unit(fmt)
    if isinstance(fmt, (fmts.IntFormat, fmts.FixedPoint)):
        width = fmt.bits + (0 if fmt.signed else 1)
        t = -(-width // 2)
        return TermGeometry((fmt.name,), "booth", fmt.bits, t, 1, tuple(2 * i for i in range(t)),
                            unit, False, None)
    base = _two_term_base(fmt)
    if base is not None:
        special = 1 << (fmt.bits - 1)
        if isinstance(fmt, fmts.ExtendedFormat):
            if fmt.special_code != special:
                raise ValueError(f"format {name!r}: the special value must sit on the sign-only "
                                 f"code {special}, not {fmt.special_code}")
            try:
                special_register_entry(fmt.special_value)
            except ValueError as exc:
                raise ValueError(f"format {name!r}: {exc}") from None
        mags = np.abs(fmts.get(base).decode(fmts.get(base).codes())).astype(np.int64)
        assert all(int(v) < 1 << MAGNITUDE_BITS and bin(int(v)).count("1") <= 2 for v in mags)
        return TermGeometry((fmt.name,), "two_term", fmt.bits, 2, WINDOW_EXP_BITS,
                            TWO_TERM_BSIG, unit, isinstance(fmt, fmts.ExtendedFormat), special)
    if isinstance(fmt, fmts.KHotFormat):
        top_position = max(fmt.magnitudes).bit_length() - 1  # 128 = 2**7: positions 0..7
        return TermGeometry((fmt.name,), "khot", fmt.bits, fmt.terms, top_position.bit_length(),
                            (0,) * fmt.terms, unit, False, None)
    if isinstance(fmt, fmts.MiniFloat):
        u = _finite_units(fmt)
        nz = u[u > 0]
        shift = np.maximum(_floor_log2(nz) - fmt.man_bits, 0) if nz.size else np.zeros(1)
        exp_bits = max(1, int(shift.max()).bit_length())
        t = fmt.man_bits + 1
        return TermGeometry((fmt.name,), "significand", fmt.bits, t, exp_bits, tuple(range(t)),
                            unit, False, None)
    raise ValueError(f"format {name!r} ({type(fmt).__name__}) cannot be expressed by the term "
                     "encoder: it takes integers, fixed point, minifloats, flint4, the BitMoD "
                     "extended FP3/FP4 types and the K-hot formats")


def _floor_log2(u: np.ndarray) -> np.ndarray:
    """floor(log2(u)) of positive int64 values, exactly."""
    # A binary search over the bit position: six passes instead of one per bit (the term
    # decomposition of a whole model's weights spends most of its time here).
    u = np.asarray(u, dtype=np.int64)
    out = np.zeros(u.shape, dtype=np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        high = (u >> step) != 0
        out += np.where(high, step, 0)
        u = np.where(high, u >> step, u)
    return out


def _finite_units(fmt: fmts.Format) -> np.ndarray:
    """|decode| / unit of every finite code (int64)."""
    v = fmt.decode(fmt.codes())
    v = np.abs(v[np.isfinite(v)]) / _unit(fmt)
    return v.astype(np.int64)


def geometry(format_name) -> TermGeometry:
    """Term geometry of a format name or a mixture (list of names, selector order).

    Raises
    ------
    ValueError
        Unknown format, more than 4 formats, different widths, formats of different paths or
        bases in one mixture, or a format the encoder cannot express (named in the message).
    """
    return _geometry(_names(format_name))


def terms_per_weight(format_name) -> int:
    """Terms (bit-serial cycles) per weight of a format or a mixture."""
    return geometry(format_name).terms


def default_special_values(format_name) -> list[int]:
    """The 4 register values that make selector ``i`` decode as ``formats[i % n]``.

    Plain (non-extended) members get 0.
    """
    names = _names(format_name)
    geometry(names)
    out = []
    for i in range(REGISTER_ENTRIES):
        f = fmts.get(names[i % len(names)])
        out.append(int(f.special_value) if isinstance(f, fmts.ExtendedFormat) else 0)
    return out


def _check_small_ints(name: str, values, hi: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, not {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > hi):
        raise ValueError(f"{name} must be in 0..{hi}")
    return arr


def decompose(codes, format_name, selectors=None, special_values=None, *,
              special_register=None) -> Terms:
    """Decompose weight codes into terms (module docstring).

    Parameters
    ----------
    codes : array_like of int
        Weight codes, any shape.
    format_name : str or list of str
        A format, or a mixture of up to 4 two-term formats in selector order.
    selectors : array_like of int, optional
        Per-weight selector 0..3 (broadcast against ``codes``); default 0. Only the sign-only
        code of an encoder with a special-value register depends on it.
    special_values : sequence of 4 int, optional
        Register contents as code-unit values; default :func:`default_special_values`. Only for
        encoders with a register.
    special_register : int, optional
        Instead of ``special_values``: the raw 32-bit register, any bit pattern (an entry's zero
        terms come out canonical).

    Returns
    -------
    Terms
        ``terms_value(result) == decode(codes) / unit`` for every finite code.
    """
    geo = geometry(format_name)
    names = _names(format_name)
    fmt = fmts.get(names[0])
    c = np.asarray(codes)
    values = fmt.decode(c)  # also the range and type check of the codes
    c = c.astype(np.int64)
    sel = _check_small_ints("selectors", 0 if selectors is None else selectors,
                            REGISTER_ENTRIES - 1)
    c, sel = np.broadcast_arrays(c, sel)
    values = np.broadcast_to(values, c.shape)
    nonfinite = ~np.isfinite(values)
    units = np.where(nonfinite, 0.0, values) / geo.unit
    if special_values is not None and special_register is not None:
        raise ValueError("give special_values or special_register, not both")
    if geo.has_register:
        if special_register is not None:
            reg = int(special_register)
            if not 0 <= reg < 1 << REGISTER_BITS:
                raise ValueError(f"special_register {special_register!r} does not fit "
                                 f"{REGISTER_BITS} bits")
            entries = np.array([(reg >> (i * ENTRY_BITS)) & ((1 << ENTRY_BITS) - 1)
                                for i in range(REGISTER_ENTRIES)], dtype=np.int64)
        else:
            if special_values is None:
                special_values = default_special_values(names)
            entries = np.array([special_register_entry(v)
                                for v in _register_values(special_values)], dtype=np.int64)
        # The base levels (the sign-only code is a zero there); the register replaces it below.
        units = fmts.get(_two_term_base(fmt)).decode(c) / geo.unit
    elif special_values is not None or special_register is not None:
        raise ValueError(f"{list(names)} has no special-value register (no extended format); "
                         "special_values and special_register must be None")
    if not np.array_equal(units, np.round(units)):
        raise AssertionError(f"{names} levels are not integers in code units")
    v = units.astype(np.int64)
    if geo.path == "booth":
        sign, exp, nz = _booth(v, geo.terms)
    elif geo.path == "two_term":
        sign, exp, nz = _two_term(v)
        if geo.has_register:
            # The register's own terms, not a split of their sum (7 = 8 - 1 has no split).
            ent = entries[sel]
            fields = np.stack([(ent >> (k * TERM_WINDOW_BITS)) & 15 for k in range(2)], -1)
            special = (c == geo.special_code)[..., None]
            entry_nz = fields >> 3
            sign = np.where(special, fields & entry_nz, sign)
            exp = np.where(special, ((fields >> 1) & 3) * entry_nz, exp)
            nz = np.where(special, entry_nz, nz)
    elif geo.path == "khot":
        sign, exp, nz = _khot(v, geo.terms)
    else:
        sign, exp, nz = _significand(v, geo.terms)
    return Terms(sign, exp, nz, np.array(geo.bsig, dtype=np.int64), nonfinite, geo.exp_bits)


def _register_values(special_values) -> list:
    vals = list(special_values)
    if len(vals) != REGISTER_ENTRIES:
        raise ValueError(f"special_values must have {REGISTER_ENTRIES} entries, got {len(vals)}")
    return vals


def _booth(v: np.ndarray, t: int):
    word = v & ((1 << (2 * t)) - 1)
    below = (word << 1)  # appends the 0 below the LSB
    digits = []
    for i in range(t):
        triple = (below >> (2 * i)) & 7  # (b[2i+1], b[2i], b[2i-1])
        digits.append(np.array([0, 1, 1, 2, -2, -1, -1, 0], dtype=np.int64)[triple])
    d = np.stack(digits, -1)
    nz = (d != 0).astype(np.int64)
    return (d < 0).astype(np.int64), np.where(np.abs(d) == 2, 1, 0), nz


def _two_term(v: np.ndarray):
    mag = np.abs(v)
    lead = np.where(mag >= 2, _floor_log2(np.maximum(mag, 1)), 0)
    t1 = mag >= 2
    rest = np.where(t1, mag - (1 << lead), mag)
    t2 = rest != 0
    if ((rest & (rest - 1)) != 0).any():
        raise AssertionError("a two-term magnitude has more than two 1-bits")
    e1 = np.where(t1, lead - TWO_TERM_BSIG[0], 0)
    e2 = np.where(t2, _floor_log2(np.maximum(rest, 1)), 0)
    neg = (v < 0).astype(np.int64)
    nz = np.stack([t1, t2], -1).astype(np.int64)
    return neg[..., None] * nz, np.stack([e1, e2], -1), nz


@functools.cache
def _khot_table(t: int) -> np.ndarray:
    """``[129, 3, t]``: (sign, exp, nonzero) of the terms of every magnitude ``0 .. 128`` with
    at most ``t`` NAF digits (largest position first; the other magnitudes stay zero)."""
    table = np.zeros((fmts.KHOT_MAX_MAGNITUDE + 1, 3, t), dtype=np.int64)
    for magnitude in range(fmts.KHOT_MAX_MAGNITUDE + 1):
        digits = [(i, d) for i, d in enumerate(fmts.naf_digits(magnitude)) if d]
        if len(digits) > t:
            continue
        for k, (position, d) in enumerate(reversed(digits)):
            table[magnitude, :, k] = (int(d < 0), position, 1)
    table.flags.writeable = False
    return table


def _khot(v: np.ndarray, t: int):
    sign, exp, nz = np.moveaxis(_khot_table(t)[np.abs(v)], -2, 0)
    # NAF(-v) = -NAF(v): a negative level flips the sign of every nonzero term.
    return np.where(v[..., None] < 0, nz - sign, sign), exp, nz


def _significand(v: np.ndarray, t: int):
    mag = np.abs(v)
    man = t - 1
    shift = np.where(mag > 0, np.maximum(_floor_log2(np.maximum(mag, 1)) - man, 0), 0)
    sig = mag >> shift
    nz = np.stack([(sig >> j) & 1 for j in range(t)], -1)
    neg = (v < 0).astype(np.int64)
    return neg[..., None] * nz, shift[..., None] * nz, nz


def terms_value(terms: Terms) -> np.ndarray:
    """Code-unit value of each weight: ``sum_t (-1)**s * m * 2**(e + bsig)`` (int64)."""
    mag = terms.nonzero << (terms.exp + terms.bsig)
    return np.where(terms.sign == 1, -mag, mag).sum(axis=-1)


def pack_terms(terms: Terms) -> np.ndarray:
    """Flat payload integers (int64) in the ``TermEncoder.o_stream`` layout."""
    x = terms.exp_bits
    width = x + 2
    fields = terms.sign | (terms.exp << 1) | (terms.nonzero << (x + 1))
    t = fields.shape[-1]
    shifts = np.arange(t, dtype=np.int64) * width
    return (fields << shifts).sum(axis=-1) | (terms.nonfinite.astype(np.int64) << (t * width))

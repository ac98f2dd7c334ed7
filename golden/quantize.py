"""Group quantization of weight matrices: BitMoD mixture-of-datatype, INT, FP and MX baselines.

A weight matrix ``W[N, K]`` (N output channels, K input channels) is cut along its input (last)
dimension into groups of ``G`` consecutive elements (``G = 128`` by default, 32 for MX). The last
group of a row is *ragged* when ``G`` does not divide ``K``: it has ``K mod G`` elements and its
own absmax / min / max. A ``G`` of ``K`` or more is one group per row (per-channel scales); the
tensor keeps ``G`` as given and nothing is sized by it, only by the weights. Every group gets a
scale ``s`` (and, depending on the scheme, a zero point ``z`` or a datatype selector ``t``);
every element becomes a ``bits``-wide code ``c``::

    dequantized = decode_t(c) * s               (symmetric, MX, BitMoD)
    dequantized = (c - z) * s                   (asymmetric INT)

Schemes (see :func:`scheme_names`; docs/papers.md)
----------------------------------------------------------------
``sym``   absmax/qmax: ``s = clamp(absmax / qmax, 1e-5, 1e4)`` rounded to the scale format, then
          ``c = encode(w / s)``: nearest level, saturating. INT baselines break exact ties to the
          even code (``torch.round``); the FP3/FP4 baselines use the BitMoD reference rule.
          The K-hot schemes ``khot1``..``khot3`` (QFX: at most K signed power-of-two terms per
          weight, ``golden.formats.KHotFormat``) are absmax/128 onto the K-hot levels of
          ``[-128, 128]``, ties to the even code as INT (the even magnitude index).
``asym``  INT min/max (docs/papers.md, round half to even)::

              s = clamp((max - min) / (2^b - 1), 1e-5, 1e4)       (then rounded to FP16)
              z = clamp(rint(-min / s), 0, 2^b - 1)
              c = clamp(rint(w / s) + z, 0, 2^b - 1)

          With ``scale_format="int8"`` the scales are second-level codes as below, at least 1
          (``z`` divides by ``s``).

``mx``    OCP MX (docs/papers.md), FLOOR rule: ``e = clamp(floor(log2(amax)) - emax_elem, -127,
          127)``, E8M0 code ``e + 127``, ``c = RNE(w / 2^e)`` clamped to +-max normal (nearest
          level, ties to even code, saturating). For MXINT8 the element is a two's complement
          integer with an implicit ``2^-6``; that factor is folded into :attr:`scales` so that
          ``dequantized = code * scales`` holds for every scheme; ``scale_codes`` keeps E8M0.
``mod``   BitMoD mixture of datatypes: for each group and each candidate ``t`` in order,
          ``s_t = clamp(absmax / qmax_t, 1e-5, 1e4)`` (rounded to the scale format),
          ``c_t = nearest level of w / s_t`` with exact ties to the *lower* level
          (``x <= midpoint`` picks the lower level, as the reference code), saturating, and
          ``mse_t = mean((decode_t(c_t) * s_t - w)^2)``. The selected ``t`` is the first
          candidate with the smallest ``mse_t`` (strict ``<`` while scanning in order).

Arithmetic (deliberate deviation from the reference code)
---------------------------------------------------------
The BitMoD reference quantizer computes in FP16 (PyTorch). Golden computes in **float64** on
the exact input values (any float16/bfloat16/float32 input is exactly representable): the only
roundings are the ones that define stored data, namely the scale rounded to its storage format
(FP16 by default, as the released quantizer stores them) and the element rounding to a level.
Emulating PyTorch's FP16 division and reduction order would tie the spec to a library's kernel
choices; float64 is deterministic, platform independent and at least as accurate. Consequence:
on inputs close to a rounding boundary golden may pick a different code / selector than the
FP16 reference; the hardware consumes (codes, selectors, scales), so bit-exactness of the
datapath against golden is unaffected. Selection MSEs are compared exactly as computed by
``numpy.mean(numpy.square(wq - w), axis=-1)`` on float64 ``[groups, G]`` rows.

Second-level INT8 scales (``scale_format="int8"``; the papers leave it open)
-------------------------------------------------------------------------------
Decision: **unsigned 8-bit** group scales with a per-output-channel FP32 scale, as in the
authors' double-quantization code, not the paper text's symmetric ``/127``. Group scales are
positive, so a sign bit would waste half the code space (255 steps instead of 127), and the
PE's bit-serial dequantizer (docs/papers.md: ``m = (m << 1) + (psum AND scale_bit)`` over 8
cycles) multiplies by an unsigned 8-bit magnitude anyway. Rule, per row ``n``::

    s_ideal[t, n, g] = clamp(absmax[n, g] / qmax_t, 1e-5, 1e4)
    channel[n]       = fp32(max over t, g of s_ideal[t, n, g] / 255)
    q[t, n, g]       = clamp(rint(s_ideal[t, n, g] / channel[n]), 0, 255)
    s[t, n, g]       = q[t, n, g] * channel[n]                          (exact in float64)

The channel scale is shared by all candidates (the hardware has one per output channel), and
taken over the candidate with the largest scale, so no candidate's code clips at 255. The
BitMoD selection MSE uses the quantized ``s[t]``. A group whose ``q`` rounds to 0 dequantizes
to zeros (all codes are the code of 0), as in the authors' code.

Code storage, packing and bit planes
------------------------------------
:attr:`QuantizedTensor.codes` holds raw ``bits``-wide bit patterns (two's complement / sign
magnitude patterns as unsigned integers ``0 .. 2^bits - 1``). :meth:`QuantizedTensor.pack`
writes them row-major at ``bits`` bits per code, **little-endian bit order**: code ``i``
occupies stream bits ``[i*bits, (i+1)*bits)`` LSB first, and stream bit ``j`` is bit ``j % 8``
(LSB = 0) of byte ``j // 8``; the last byte is zero padded. For 4-bit codes this is the usual
"element 2i in the low nibble, 2i+1 in the high nibble". :meth:`QuantizedTensor.bitplanes`
returns ``planes[b] = (codes >> b) & 1`` (plane 0 = LSB), the order a bit-serial PE reads.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

from .checks import check_choice, check_int, check_number

__all__ = [
    "SCALE_FORMATS",
    "SCALE_MAX",
    "SCALE_MIN",
    "QuantizedFileError",
    "QuantizedTensor",
    "Scheme",
    "bitplanes_to_codes",
    "clamped_groups",
    "codes_to_bitplanes",
    "get_scheme",
    "group_index",
    "group_mse",
    "pack_codes",
    "quantize",
    "scheme_names",
    "unpack_codes",
]

SCALE_MIN = 1e-5
SCALE_MAX = 1e4
# fp64 keeps the unrounded scale (ablations and tests); the others are storage formats.
SCALE_FORMATS = ("fp16", "fp32", "fp64", "int8", "e8m0")
INT8_SCALE_LEVELS = 255  # unsigned 8-bit second-level scale codes 0..255
MX_BLOCK = 32
# Rows of a weight matrix processed at once: keeps the temporaries of one candidate pass
# (about 8 float64 arrays of this many elements) in the L2 cache.
_CHUNK_ELEMENTS = 1 << 16
# Above this many levels a binary search beats one vectorized comparison per midpoint.
_COMPARE_MAX_MIDPOINTS = 40
# Version 2: a SHA-256 over the metadata and the arrays, checked on load (version 1 had none).
_FILE_VERSION = 2
KINDS = ("sym", "asym", "mx", "mod")
TIES = ("down", "even")


# --------------------------------------------------------------------------------------------
# Formats: level tables derived from golden.formats (one definition per format)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LevelTable:
    """Nearest-level rounding and decoding tables of one ``golden.formats`` format."""

    name: str
    bits: int
    levels: np.ndarray  # sorted finite values, float64
    midpoints: np.ndarray  # (levels[i] + levels[i+1]) / 2
    level_codes: np.ndarray  # raw code pattern of levels[i]
    even_bump: np.ndarray  # uint8 [len(midpoints)]: 1 if an "even" tie at midpoint i goes up
    zero_index: int  # index of level 0.0
    decode_lut: np.ndarray  # float64 [2^bits]: value of each raw pattern (NaN if unused)
    qmax: float


@functools.cache
def _format(name: str):
    from . import formats  # imported lazily: formats and quantize are peers

    return formats.get(name)


@functools.cache
def _table(name: str) -> _LevelTable:
    fmt = _format(name)
    bits = int(fmt.bits)
    if bits > 16:
        raise ValueError(f"format {name!r} has {bits} bits; code tables support at most 16")
    mask = (1 << bits) - 1
    levels = np.unique(np.asarray(fmt.levels, dtype=np.float64))
    levels = levels[np.isfinite(levels)]
    codes = np.asarray(fmt.encode(levels, ties="down"), dtype=np.int64) & mask
    if not np.array_equal(np.asarray(fmt.decode(codes), dtype=np.float64), levels):
        raise ValueError(f"format {name!r}: encode/decode of its own levels is not the identity")
    lut = np.full(1 << bits, np.nan)
    all_codes = np.asarray(fmt.codes(), dtype=np.int64)
    with np.errstate(all="ignore"):
        lut[all_codes & mask] = np.asarray(fmt.decode(all_codes), dtype=np.float64)
    # The level codes win over any other pattern decoding to the same value (e.g. -0).
    lut[codes] = levels
    # Round half to even code, as golden.formats: for minifloats the even code is the even
    # mantissa (IEEE RNE), for two's complement / unsigned integers the even value (rint); if
    # both neighbours have the same code parity the level of smaller magnitude wins.
    even = codes % 2 == 0
    smaller_upper = np.abs(levels[1:]) < np.abs(levels[:-1])
    bump = np.where(even[:-1] != even[1:], even[1:], smaller_upper).astype(np.uint8)
    zero = np.flatnonzero(levels == 0.0)
    if zero.size != 1:
        raise ValueError(f"format {name!r} has no zero level; it cannot be group quantized")
    return _LevelTable(
        name=name,
        bits=bits,
        levels=levels,
        midpoints=(levels[:-1] + levels[1:]) / 2.0,
        level_codes=codes,
        even_bump=bump,
        zero_index=int(zero[0]),
        decode_lut=lut,
        qmax=float(np.max(np.abs(levels))),
    )


def _nearest_index(x: np.ndarray, table: _LevelTable, ties: str) -> np.ndarray:
    """Index into ``table.levels`` of the nearest level to each ``x`` (saturating).

    ``ties="down"``: ``x <= midpoint`` selects the lower level (BitMoD reference rule).
    ``ties="even"``: an exact midpoint selects the level with the even code.
    """
    mids = table.midpoints
    if mids.size <= _COMPARE_MAX_MIDPOINTS:
        # count of midpoints strictly below x == index of the level chosen by "x <= mid"
        idx = np.zeros(x.shape, dtype=np.uint8)
        for mid in mids:
            idx += x > mid
    else:
        idx = np.searchsorted(mids, x, side="left")
    if ties == "even":
        probe = np.minimum(idx, mids.size - 1)
        tie = (x == mids[probe]) & (idx < mids.size)
        if tie.any():
            idx[tie] += table.even_bump[idx[tie]].astype(idx.dtype)
    return idx


# --------------------------------------------------------------------------------------------
# Schemes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scheme:
    """A named quantization recipe.

    Parameters
    ----------
    name : str
        Registry name.
    kind : {"sym", "asym", "mx", "mod"}
        Algorithm (module docstring).
    formats : tuple of str
        Element format names (``golden.formats``); BitMoD candidates in selection order.
    group_size : int
        Default group (block) size along the input dimension.
    scale_format : {"fp16", "fp32", "fp64", "int8", "e8m0"}
        Storage format of the group scales.
    ties : {"down", "even"}
        Rounding of exact midpoints between two levels.
    description : str
        One line for listings.
    element_unit : float
        MX only: implicit factor of the element format (``2^-6`` for MXINT8, else 1).
    """

    name: str
    kind: str
    formats: tuple[str, ...]
    group_size: int
    scale_format: str
    ties: str
    description: str
    element_unit: float = 1.0

    def __post_init__(self) -> None:
        put = functools.partial(object.__setattr__, self)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a scheme's name must be a non-empty str, not {self.name!r}")
        check_choice("kind", self.kind, KINDS)
        formats = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        if not formats:
            raise ValueError(f"scheme {self.name!r} has no element format")
        if self.kind in ("asym", "mx") and len(formats) != 1:
            raise ValueError(f"an {self.kind} scheme takes one element format, not "
                             f"{len(formats)}")
        if len(formats) > 256:
            raise ValueError(f"at most 256 formats (8-bit selectors), not {len(formats)}")
        for name in formats:
            _table(name)  # an unknown or unusable format is refused here, once
        put("formats", formats)
        put("group_size", check_int("group_size", self.group_size, 1))
        check_choice("scale_format", self.scale_format, SCALE_FORMATS)
        check_choice("ties", self.ties, TIES)
        put("element_unit", check_number("element_unit", self.element_unit, positive=True))

    @property
    def bits(self) -> int:
        return _table(self.formats[0]).bits


def _build_schemes() -> dict[str, Scheme]:
    from .formats import bitmod_candidates  # the one list of BitMoD candidates

    s: dict[str, Scheme] = {}

    def add(name, kind, formats, group, scale, ties, text, unit=1.0):
        s[name] = Scheme(name, kind, tuple(formats), group, scale, ties, text, unit)

    for bits in (4, 3):
        add(f"bitmod{bits}", "mod", bitmod_candidates(bits), 128, "fp16", "down",
            f"BitMoD {bits}-bit mixture of FP{bits} ER+EA types, FP16 scales")
        add(f"bitmod{bits}_int8scale", "mod", bitmod_candidates(bits), 128, "int8", "down",
            f"BitMoD {bits}-bit mixture, INT8 group scales + FP32 channel scale")
        add(f"bitmod{bits}_er", "mod", bitmod_candidates(bits, "er"), 128, "fp16", "down",
            f"BitMoD {bits}-bit extra-resolution types only (FP{bits}_ER_POS/NEG)")
        add(f"bitmod{bits}_ea", "mod", bitmod_candidates(bits, "ea"), 128, "fp16", "down",
            f"BitMoD {bits}-bit extra-asymmetry types only (FP{bits}_EA_POS/NEG)")
        add(f"ant{bits}", "mod", bitmod_candidates(bits, "ant"), 128, "fp16", "down",
            "ANT-style per-group choice " + " / ".join(bitmod_candidates(bits, "ant")))
    for bits in (2, 3, 4, 8):
        add(f"int{bits}_asym", "asym", (f"uint{bits}",), 128, "fp16", "even",
            f"INT{bits} asymmetric min/max with zero point, FP16 scales")
    for bits in (2, 3, 4, 6, 8):
        add(f"int{bits}", "sym", (f"int{bits}_sym",), 128, "fp16", "even",
            f"INT{bits} symmetric absmax/{2 ** (bits - 1) - 1}, FP16 scales")
    for terms in (1, 2, 3):
        add(f"khot{terms}", "sym", (f"khot{terms}",), 128, "fp16", "even",
            f"K-hot (QFX) at most {terms} power-of-two term{'s' * (terms > 1)} per weight, "
            "absmax/128, FP16 scales")
    add("fp4", "sym", ("fp4_e2m1",), 128, "fp16", "down", "FP4 E2M1 absmax/6, FP16 scales")
    add("fp3", "sym", ("fp3",), 128, "fp16", "down", "FP3 E2M0 absmax/4, FP16 scales")
    add("mxfp4", "mx", ("fp4_e2m1",), MX_BLOCK, "e8m0", "even", "OCP MXFP4 (E2M1), block 32")
    add("mxfp6", "mx", ("fp6_e2m3",), MX_BLOCK, "e8m0", "even", "OCP MXFP6 (E2M3), block 32")
    add("mxfp6_e3m2", "mx", ("fp6_e3m2",), MX_BLOCK, "e8m0", "even",
        "OCP MXFP6 (E3M2), block 32")
    add("mxfp8", "mx", ("fp8_e4m3",), MX_BLOCK, "e8m0", "even", "OCP MXFP8 (E4M3), block 32")
    add("mxfp8_e5m2", "mx", ("fp8_e5m2",), MX_BLOCK, "e8m0", "even",
        "OCP MXFP8 (E5M2), block 32")
    add("mxint8", "mx", ("int8_sym",), MX_BLOCK, "e8m0", "even",
        "OCP MXINT8 (two's complement, implicit 2^-6), block 32", 2.0**-6)
    return s


_SCHEMES = _build_schemes()


def scheme_names() -> list[str]:
    """Names of all registered schemes, in registry order."""
    return list(_SCHEMES)


def get_scheme(name: str | Scheme) -> Scheme:
    """Look a scheme up by name; ``ValueError`` listing the valid names if unknown.

    A :class:`Scheme` instance is returned as is (custom recipes, e.g. one BitMoD candidate).
    """
    if isinstance(name, Scheme):  # validated by its constructor
        return name
    if not isinstance(name, str) or name not in _SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; valid schemes: {', '.join(_SCHEMES)}")
    return _SCHEMES[name]


# --------------------------------------------------------------------------------------------
# Result type
# --------------------------------------------------------------------------------------------


def _code_dtype(bits: int) -> np.dtype:
    return np.dtype(np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32)


def group_index(k: int, group_size: int) -> np.ndarray:
    """The group of every column: ``intp [K]``, ``k // group_size`` (one group when
    ``group_size >= K``); nothing is allocated beyond K entries, whatever ``group_size``."""
    return np.arange(k, dtype=np.intp) // group_size


def _expand(per_group: np.ndarray, group_size: int, k: int) -> np.ndarray:
    """A ``[N, n_groups]`` array repeated to ``[N, K]`` (the ragged last group is cut)."""
    return per_group[:, group_index(k, group_size)]


@dataclass(eq=False)
class QuantizedTensor:
    """A group-quantized weight matrix ``W[N, K]``.

    Attributes
    ----------
    codes : ndarray of uint, shape (N, K)
        Raw ``bits``-wide code patterns.
    scales : ndarray of float64, shape (N, n_groups)
        Effective per-group multiplier of the decoded codes (module docstring).
    scheme : str
        Scheme name.
    formats : tuple of str
        Element format names; for BitMoD schemes the candidates, indexed by ``selectors``.
    group_size : int
        Group size along K; ``n_groups = ceil(K / group_size)``.
    bits : int
        Bits per code.
    scale_format : str
        Storage format of the scales.
    selectors : ndarray of uint8, shape (N, n_groups), optional
        Index into ``formats`` per group (BitMoD schemes).
    zero_points : ndarray of int64, shape (N, n_groups), optional
        Asymmetric INT zero points: codes ``0 .. 2**bits - 1`` of unsigned formats, or levels
        ``-2**(bits-1) .. 2**(bits-1) - 1`` of signed integer formats (the offset form the
        core loads, :func:`golden.gemm.core_tensor`).
    scale_codes : ndarray of int64, shape (N, n_groups), optional
        INT8 group-scale codes (0..255) or E8M0 codes (MX).
    channel_scales : ndarray of float64, shape (N,), optional
        Second-level per-output-channel scale (FP32 values) for INT8 group scales.

    Every field is checked on construction (shapes, integer codes below ``2**bits``, selectors
    below ``len(formats)``, zero points and scale codes in range, finite non-negative scales,
    finite positive channel scales): a tensor that exists is well formed.

    Raises
    ------
    ValueError
        A field out of range or of the wrong shape or kind.
    TypeError
        ``group_size`` or ``bits`` not an integer.
    """

    codes: np.ndarray
    scales: np.ndarray
    scheme: str
    formats: tuple[str, ...]
    group_size: int
    bits: int
    scale_format: str
    selectors: np.ndarray | None = None
    zero_points: np.ndarray | None = None
    scale_codes: np.ndarray | None = None
    channel_scales: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, str):
            raise TypeError(f"scheme must be a str, not {self.scheme!r}")
        formats = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        if not formats or not all(isinstance(name, str) for name in formats):
            raise ValueError(f"formats must be one or more format names, not {self.formats!r}")
        self.formats = formats
        self.group_size = check_int("group_size", self.group_size, 1)
        self.bits = check_int("bits", self.bits, 1, 32)
        check_choice("scale_format", self.scale_format, SCALE_FORMATS)
        self.codes = _int_array("codes", self.codes, 0, (1 << self.bits) - 1)
        if self.codes.ndim != 2:
            raise ValueError(f"codes must be 2-D, got shape {self.codes.shape}")
        expected = (self.codes.shape[0], self.n_groups)
        for label in ("scales", "selectors", "zero_points", "scale_codes"):
            value = getattr(self, label)
            if value is not None and np.shape(value) != expected:
                raise ValueError(f"{label} has shape {np.shape(value)}, expected {expected}")
        self.scales = _float_array("scales", self.scales, positive=False)
        if len(self.formats) > 1 and self.selectors is None:
            raise ValueError("several formats need per-group selectors")
        if self.selectors is not None:
            self.selectors = _int_array("selectors", self.selectors, 0, len(self.formats) - 1)
        if self.zero_points is not None:
            # Unsigned codes: a code in 0 .. 2**bits - 1. Signed integer formats (the core's
            # offset codes, golden.gemm.core_tensor): a level of the format.
            signed = all(name.startswith("int") for name in self.formats)
            low = -(1 << (self.bits - 1)) if signed else 0
            self.zero_points = _int_array("zero_points", self.zero_points, low,
                                          low + (1 << self.bits) - 1)
        if self.scale_codes is not None:  # INT8 codes 0..255; E8M0 0..254 (255 is NaN)
            top = 254 if self.scale_format == "e8m0" else INT8_SCALE_LEVELS
            self.scale_codes = _int_array("scale_codes", self.scale_codes, 0, top)
        if self.channel_scales is not None:
            if np.shape(self.channel_scales) != (self.codes.shape[0],):
                raise ValueError(f"channel_scales has shape {np.shape(self.channel_scales)}, "
                                 f"expected ({self.codes.shape[0]},)")
            self.channel_scales = _float_array("channel_scales", self.channel_scales,
                                               positive=True)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(d) for d in self.codes.shape)

    @property
    def n_groups(self) -> int:
        return -(-self.codes.shape[1] // self.group_size)

    def _decode_luts(self) -> np.ndarray:
        return np.stack([_table(name).decode_lut for name in self.formats])

    def decoded(self) -> np.ndarray:
        """Decoded codes before scaling (level values, or ``code - zero_point`` for asym)."""
        luts = self._decode_luts()
        k = self.shape[1]
        codes = self.codes.astype(np.intp)
        if self.selectors is None:
            values = luts[0][codes]
        else:
            values = luts[_expand(self.selectors, self.group_size, k).astype(np.intp), codes]
        if self.zero_points is not None:
            values = values - _expand(self.zero_points, self.group_size, k)
        return values

    def dequantize(self) -> np.ndarray:
        """Dequantized weights, float64 ``[N, K]``: ``decoded() * scale`` of each group."""
        return self.decoded() * _expand(self.scales, self.group_size, self.shape[1])

    def selector_histogram(self) -> dict[str, int]:
        """Number of groups that selected each format (all groups for a single format)."""
        if self.selectors is None:
            return {self.formats[0]: int(self.scales.size)}
        counts = np.bincount(self.selectors.ravel(), minlength=len(self.formats))
        return {name: int(c) for name, c in zip(self.formats, counts, strict=True)}

    # packing ---------------------------------------------------------------------------------
    def pack(self) -> bytes:
        """Codes packed densely, row-major, ``bits`` per code, little-endian bit order."""
        return pack_codes(self.codes, self.bits)

    def unpack(self, data: bytes) -> QuantizedTensor:
        """A copy of this tensor whose codes are read from ``data`` (as written by pack)."""
        return self._with_codes(unpack_codes(data, self.bits, self.shape))

    def bitplanes(self) -> np.ndarray:
        """``uint8 [bits, N, K]``: plane ``b`` is bit ``b`` (0 = LSB) of every code."""
        return codes_to_bitplanes(self.codes, self.bits)

    def from_bitplanes(self, planes: np.ndarray) -> QuantizedTensor:
        """A copy of this tensor whose codes are rebuilt from ``planes`` (inverse of bitplanes)."""
        planes = np.asarray(planes)
        if planes.shape != (self.bits, *self.shape):
            raise ValueError(f"bit planes have shape {planes.shape}, "
                             f"expected {(self.bits, *self.shape)}")
        return self._with_codes(bitplanes_to_codes(planes))

    def _with_codes(self, codes: np.ndarray) -> QuantizedTensor:
        return QuantizedTensor(
            codes=codes.astype(self.codes.dtype), scales=self.scales.copy(), scheme=self.scheme,
            formats=self.formats, group_size=self.group_size, bits=self.bits,
            scale_format=self.scale_format,
            selectors=None if self.selectors is None else self.selectors.copy(),
            zero_points=None if self.zero_points is None else self.zero_points.copy(),
            scale_codes=None if self.scale_codes is None else self.scale_codes.copy(),
            channel_scales=None if self.channel_scales is None else self.channel_scales.copy(),
        )

    # files -----------------------------------------------------------------------------------
    _ARRAYS = ("codes", "scales", "selectors", "zero_points", "scale_codes", "channel_scales")

    def _meta(self) -> dict:
        return {
            "version": _FILE_VERSION, "scheme": self.scheme, "formats": list(self.formats),
            "group_size": int(self.group_size), "bits": int(self.bits),
            "scale_format": self.scale_format,
            "arrays": [k for k in self._ARRAYS if getattr(self, k) is not None],
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` file (no pickles): the arrays plus JSON metadata.

        The metadata holds the file format version and a SHA-256 over the metadata and every
        array (name, dtype, shape, bytes): :meth:`load` recomputes it, so a damaged file is
        refused instead of loading as a different tensor.
        """
        meta = self._meta()
        arrays = {k: getattr(self, k) for k in meta["arrays"]}
        meta["sha256"] = _digest(meta, arrays)
        with open(path, "wb") as handle:  # keeps the exact path (savez would append .npz)
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> QuantizedTensor:
        """Read a file written by :meth:`save`: the tensor it holds, exactly, or an error.

        Raises
        ------
        FileNotFoundError
            No such file.
        QuantizedFileError
            (a ``ValueError``) The file is empty, truncated, not a quantized tensor file, of
            another format version, or damaged (its checksum does not match); one line.
        """
        name = os.fspath(path)
        with open(path, "rb") as handle:
            raw = handle.read()
        if not raw:
            raise QuantizedFileError(f"{name}: the file is empty")
        if not raw.startswith(b"PK\x03\x04"):
            raise QuantizedFileError(f"{name}: not a quantized tensor file (not an .npz archive)")
        try:
            meta, arrays = _read_npz(raw)
        except QuantizedFileError as error:
            raise QuantizedFileError(f"{name}: {error}") from None
        except Exception as error:
            # Damaged zip structure or .npy headers: the readers of these bytes raise many kinds
            # (BadZipFile, zlib.error, EOFError, KeyError, struct.error, a RuntimeError for a
            # flipped "encrypted" flag, ...); each means the same to the user.
            detail = " ".join(str(error).split())  # one line whatever the reader said
            raise QuantizedFileError(f"{name}: damaged or truncated quantized tensor file "
                                     f"({type(error).__name__}: {detail})") from None
        try:
            return cls(formats=tuple(meta["formats"]), scheme=meta["scheme"],
                       group_size=meta["group_size"], bits=meta["bits"],
                       scale_format=meta["scale_format"],
                       **{k: arrays.get(k) for k in cls._ARRAYS})
        except (KeyError, TypeError, ValueError) as error:
            raise QuantizedFileError(f"{name}: invalid quantized tensor ({error})") from None

    def equals(self, other: QuantizedTensor) -> bool:
        """Exact equality of all arrays (values and dtypes) and metadata."""
        if not isinstance(other, QuantizedTensor):
            return False
        meta = ("scheme", "formats", "group_size", "bits", "scale_format")
        if any(getattr(self, k) != getattr(other, k) for k in meta):
            return False
        for k in self._ARRAYS:
            a, b = getattr(self, k), getattr(other, k)
            if (a is None) != (b is None):
                return False
            if a is not None and (a.dtype != b.dtype or not np.array_equal(a, b)):
                return False
        return True


class QuantizedFileError(ValueError):
    """A quantized tensor file that cannot be loaded (empty, truncated, damaged, of another
    version); the message is one line naming the file."""




def _digest(meta: dict, arrays: dict) -> str:
    """SHA-256 of the metadata (without the digest) and the arrays, in a canonical order."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "sha256"},
                                       sort_keys=True).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _read_npz(raw: bytes) -> tuple[dict, dict]:
    """The metadata and arrays of a quantized tensor file, checked against its digest."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        members = set(data.files)
        if "meta" not in members:
            raise QuantizedFileError("not a quantized tensor file (no metadata)")
        meta = json.loads(str(data["meta"][()]))
        if not isinstance(meta, dict):
            raise QuantizedFileError("not a quantized tensor file (bad metadata)")
        if meta.get("version") != _FILE_VERSION:
            raise QuantizedFileError(f"file format version {meta.get('version')!r}; this version "
                                     f"of bitmod reads version {_FILE_VERSION} (quantize and "
                                     "save the tensor again)")
        listed = meta.get("arrays")
        if (not isinstance(listed, list) or not set(listed) <= set(QuantizedTensor._ARRAYS)
                or members != {*listed, "meta"}):
            raise QuantizedFileError(f"the arrays {sorted(members - {'meta'})} do not match the "
                                     "metadata: the file is damaged")
        arrays = {k: data[k] for k in listed}
    if meta.get("sha256") != _digest(meta, arrays):
        raise QuantizedFileError("checksum mismatch: the file is damaged")
    return meta, arrays


def _int_array(name: str, value, lo: int, hi: int) -> np.ndarray:
    """``value`` as an integer array with every element in ``lo..hi``."""
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, not {array.dtype}")
    if array.size and (int(array.min()) < lo or int(array.max()) > hi):
        bad = array[(array < lo) | (array > hi)].flat[0]
        raise ValueError(f"{name} must be in {lo}..{hi}, found {bad}")
    return array


def _float_array(name: str, value, *, positive: bool) -> np.ndarray:
    """``value`` as a real float array, finite and >= 0 (> 0 if ``positive``)."""
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise ValueError(f"{name} must be a float array, not {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or Inf")
    if array.size and (array.min() <= 0 if positive else array.min() < 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}, "
                         f"found {array.min()}")
    return array


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack ``codes`` (row-major) at ``bits`` per code, little-endian bit order.

    Code ``i`` occupies stream bits ``[i*bits, (i+1)*bits)``, LSB first; stream bit ``j`` is
    bit ``j % 8`` of byte ``j // 8``. Length: ``ceil(codes.size * bits / 8)`` bytes.
    """
    codes = np.asarray(codes)
    _check_bits(bits)
    flat = codes.reshape(-1).astype(np.uint64)
    if flat.size and int(flat.max()) >> bits:
        raise ValueError(f"codes do not fit in {bits} bits")
    stream = ((flat[:, None] >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(stream.reshape(-1), bitorder="little").tobytes()


def unpack_codes(data: bytes, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_codes`: codes of ``shape`` (uint8/16/32 by width)."""
    _check_bits(bits)
    count = math.prod(shape)
    need = -(-count * bits // 8)
    if len(data) != need:
        raise ValueError(f"packed data has {len(data)} bytes, expected {need} "
                         f"for {count} codes of {bits} bits")
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    stream = stream[: count * bits].reshape(count, bits).astype(np.uint64)
    flat = (stream << np.arange(bits, dtype=np.uint64)).sum(axis=1)
    return flat.astype(_code_dtype(bits)).reshape(shape)


def codes_to_bitplanes(codes: np.ndarray, bits: int) -> np.ndarray:
    """``uint8 [bits, *codes.shape]`` with ``planes[b] = (codes >> b) & 1``."""
    _check_bits(bits)
    codes = np.asarray(codes).astype(np.uint64)
    shifts = np.arange(bits, dtype=np.uint64).reshape((bits,) + (1,) * codes.ndim)
    return ((codes[None] >> shifts) & 1).astype(np.uint8)


def bitplanes_to_codes(planes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`codes_to_bitplanes` (the number of planes is the code width)."""
    planes = np.asarray(planes)
    bits = planes.shape[0]
    _check_bits(bits)
    if planes.size and int(planes.max()) > 1:
        raise ValueError("bit planes must contain only 0 and 1")
    shifts = np.arange(bits, dtype=np.uint64).reshape((bits,) + (1,) * (planes.ndim - 1))
    return (planes.astype(np.uint64) << shifts).sum(axis=0).astype(_code_dtype(bits))


def _check_bits(bits) -> None:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer in 1..32, got {bits!r}")


# --------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------


def group_mse(w: np.ndarray, wq: np.ndarray, group_size: int) -> np.ndarray:
    """Per-group ``mean((wq - w)^2)``, float64 ``[N, n_groups]``.

    Full groups are reduced as ``numpy.mean(numpy.square(d), axis=-1)`` over contiguous
    ``[.., G]`` rows, exactly as the BitMoD selection computes them.
    """
    d = np.asarray(wq, dtype=np.float64) - np.asarray(w, dtype=np.float64)
    n, k = d.shape
    full = k // group_size
    parts = []
    if full:
        parts.append(np.mean(np.square(d[:, : full * group_size].reshape(n, full, group_size)),
                             axis=-1))
    if k % group_size:
        parts.append(np.mean(np.square(np.ascontiguousarray(d[:, full * group_size:])),
                             axis=-1)[:, None])
    return np.concatenate(parts, axis=1)


def _as_weight(w) -> np.ndarray:
    if hasattr(w, "detach") and hasattr(w, "cpu"):  # a torch tensor, without importing torch
        dtype = str(w.dtype).removeprefix("torch.")
        if w.is_complex() or dtype == "bool":
            raise ValueError(f"weight must be a real numeric tensor, got dtype {dtype}")
        # float64 holds every float16/bfloat16/float32 value exactly: the same numbers as the
        # NumPy path (a float32 cast would round a float64 tensor).
        w = w.detach().cpu().double().numpy()
    arr = np.asarray(w)
    if arr.dtype.kind in "cOUSMm" or arr.dtype == np.bool_:
        raise ValueError(f"weight must be a real numeric array, got dtype {arr.dtype}")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"weight of dtype {arr.dtype} cannot be converted to float: {error}") \
            from None
    if arr.ndim != 2:
        raise ValueError(f"weight must be a 2-D matrix [N out, K in], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"weight is empty (shape {arr.shape})")
    nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
    if nan or inf:
        parts = [f"{nan} NaN values"] * bool(nan) + [f"{inf} Inf values"] * bool(inf)
        raise ValueError(f"weight contains {' and '.join(parts)}")
    return arr


def _check_group_size(group_size) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral):
        raise ValueError(f"group size must be a positive integer, got {group_size!r}")
    if group_size <= 0:
        raise ValueError(f"group size must be a positive integer, got {group_size}")
    return int(group_size)


def _round_scale(scale: np.ndarray, scale_format: str) -> np.ndarray:
    if scale_format == "fp16":
        return scale.astype(np.float16).astype(np.float64)
    if scale_format == "fp32":
        return scale.astype(np.float32).astype(np.float64)
    return scale


def _group_reduce(w: np.ndarray, group_size: int, fn) -> np.ndarray:
    """``fn(block, axis=-1)`` over every group: ``[N, n_groups]``."""
    n, k = w.shape
    full = k // group_size
    parts = []
    if full:
        parts.append(fn(w[:, : full * group_size].reshape(n, full, group_size), axis=-1))
    if k % group_size:
        parts.append(fn(w[:, full * group_size:], axis=-1)[:, None])
    return np.concatenate(parts, axis=1)


def _blocks(n: int, k: int, group_size: int):
    """Yield ``(rows, cols, n_col_groups, first_group)`` tiles covering ``[N, K]``.

    Full groups are processed ``rows`` at a time as ``[rows * groups, G]`` blocks; the ragged
    last group of every row forms its own ``[rows, K mod G]`` blocks.
    """
    full = k // group_size
    if full:
        step = max(1, _CHUNK_ELEMENTS // (full * group_size))
        for r0 in range(0, n, step):
            yield slice(r0, min(n, r0 + step)), slice(0, full * group_size), full, 0
    tail = k - full * group_size
    if tail:
        step = max(1, _CHUNK_ELEMENTS // tail)
        for r0 in range(0, n, step):
            yield slice(r0, min(n, r0 + step)), slice(full * group_size, k), 1, full


def _select_codes(
    w: np.ndarray, scales: np.ndarray, tables: list[_LevelTable], ties: str,
    group_size: int, offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Round every group with every candidate and keep the first lowest-MSE one.

    Parameters
    ----------
    w : float64 [N, K]
    scales : float64 [C, N, n_groups]
        Effective scale of every candidate for every group (0 means "all zeros").
    tables : list of C level tables
    ties : rounding of exact midpoints
    group_size : G

    Returns
    -------
    codes : uint [N, K] raw patterns; selectors : uint8 [N, n_groups] or None if C == 1.
    """
    n, k = w.shape
    n_cand = len(tables)
    codes = np.empty((n, k), dtype=_code_dtype(tables[0].bits))
    selectors = np.zeros(scales.shape[1:], dtype=np.uint8) if n_cand > 1 else None
    code_table = np.zeros((n_cand, max(t.levels.size for t in tables)), dtype=codes.dtype)
    for c, t in enumerate(tables):
        code_table[c, : t.levels.size] = t.level_codes
    for rows, cols, n_col_groups, g0 in _blocks(n, k, group_size):
        width = cols.stop - cols.start
        g = min(group_size, width)
        block = w[rows, cols].reshape(-1, g)  # [groups, G] with groups = rows * n_col_groups
        best_mse = best_idx = None
        for c, table in enumerate(tables):
            s = scales[c, rows, g0: g0 + n_col_groups].reshape(-1, 1)
            zero = s == 0.0
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.where(zero, 0.0, block / np.where(zero, 1.0, s))
            idx = _nearest_index(x, table, ties)
            if n_cand == 1:
                best_idx = idx
                break
            mse = np.mean(np.square(table.levels[idx] * s - block), axis=-1)
            if best_mse is None:
                best_mse, best_idx = mse, idx
                sel = np.zeros(mse.shape, dtype=np.uint8)
            else:
                better = mse < best_mse  # strict: the earlier candidate wins a tie
                best_mse = np.where(better, mse, best_mse)
                best_idx = np.where(better[:, None], idx, best_idx)
                sel[better] = c
        if n_cand == 1:
            block_codes = tables[0].level_codes[best_idx]
        else:
            block_codes = code_table[sel[:, None].astype(np.intp), best_idx]
            selectors[rows, g0: g0 + n_col_groups] = sel.reshape(-1, n_col_groups)
        codes[rows, cols] = block_codes.reshape(-1, width)
    return codes, selectors


def _candidate_scales(
    absmax: np.ndarray, tables: list[_LevelTable], scale_format: str,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Scales ``[C, N, n_groups]`` (+ INT8 codes and channel scales) for absmax/qmax schemes."""
    ideal = np.stack([np.clip(absmax / t.qmax, SCALE_MIN, SCALE_MAX) for t in tables])
    if scale_format != "int8":
        return _round_scale(ideal, scale_format), None, None
    # One FP32 channel scale per row, from the largest scale of any candidate (docstring).
    channel = (ideal.max(axis=(0, 2)) / INT8_SCALE_LEVELS).astype(np.float32).astype(np.float64)
    q = np.clip(np.rint(ideal / channel[None, :, None]), 0, INT8_SCALE_LEVELS)
    return q * channel[None, :, None], q.astype(np.int64), channel


def _quantize_absmax(w, scheme: Scheme, group_size: int, scale_format: str) -> QuantizedTensor:
    tables = [_table(name) for name in scheme.formats]
    absmax = _group_reduce(np.abs(w), group_size, np.max)
    scales, q_scales, channel = _candidate_scales(absmax, tables, scale_format)
    codes, selectors = _select_codes(w, scales, tables, scheme.ties, group_size)
    if selectors is None:
        chosen = scales[0]
        chosen_q = None if q_scales is None else q_scales[0]
    else:
        pick = selectors[None].astype(np.intp)
        chosen = np.take_along_axis(scales, pick, axis=0)[0]
        chosen_q = None if q_scales is None else np.take_along_axis(q_scales, pick, axis=0)[0]
    return QuantizedTensor(
        codes=codes, scales=chosen, scheme=scheme.name, formats=scheme.formats,
        group_size=group_size, bits=tables[0].bits, scale_format=scale_format,
        selectors=selectors, scale_codes=chosen_q, channel_scales=channel,
    )


def _quantize_asym(w, scheme: Scheme, group_size: int, scale_format: str) -> QuantizedTensor:
    table = _table(scheme.formats[0])
    qmax = float((1 << table.bits) - 1)
    wmin = _group_reduce(w, group_size, np.min)
    wmax = _group_reduce(w, group_size, np.max)
    ideal = np.clip((wmax - wmin) / qmax, SCALE_MIN, SCALE_MAX)
    q_scales = channel = None
    if scale_format == "int8":
        # Second-level scales as for the symmetric schemes (module docstring), with codes of
        # at least 1: the zero point divides by the scale.
        channel = (ideal.max(axis=1) / INT8_SCALE_LEVELS).astype(np.float32).astype(np.float64)
        q_scales = np.clip(np.rint(ideal / channel[:, None]), 1, INT8_SCALE_LEVELS)
        scale = q_scales * channel[:, None]
        q_scales = q_scales.astype(np.int64)
    else:
        scale = _round_scale(ideal, scale_format)
    zp = np.clip(np.rint(-wmin / scale), 0, qmax)
    k = w.shape[1]
    q = np.clip(np.rint(w / _expand(scale, group_size, k)) + _expand(zp, group_size, k), 0, qmax)
    return QuantizedTensor(
        codes=q.astype(_code_dtype(table.bits)), scales=scale, scheme=scheme.name,
        formats=scheme.formats, group_size=group_size, bits=table.bits,
        scale_format=scale_format, zero_points=zp.astype(np.int64), scale_codes=q_scales,
        channel_scales=channel,
    )


def mx_shared_exponent(amax: np.ndarray, emax_elem: int) -> np.ndarray:
    """OCP MX FLOOR rule: ``clamp(floor(log2(amax)) - emax_elem, -127, 127)`` (int64).

    ``floor(log2)`` is exact (``golden.formats.floor_log2``); ``amax == 0`` gives -127 (E8M0
    code 0; every element is then 0).
    """
    from .formats import floor_log2

    amax = np.asarray(amax, dtype=np.float64)
    positive = amax > 0
    shared = np.full(amax.shape, -127, dtype=np.int64)
    shared[positive] = floor_log2(amax[positive]) - emax_elem
    return np.clip(shared, -127, 127)


def _quantize_mx(w, scheme: Scheme, group_size: int, scale_format: str) -> QuantizedTensor:
    table = _table(scheme.formats[0])
    # emax_elem = exponent of the largest normal element value (E2M1 2, E2M3 2, E3M2 4,
    # E4M3 8, E5M2 15, MXINT8 0 since 127 * 2^-6 < 2).
    emax = math.floor(math.log2(table.qmax * scheme.element_unit))
    shared = mx_shared_exponent(_group_reduce(np.abs(w), group_size, np.max), emax)
    scales = np.ldexp(scheme.element_unit, shared)
    codes, _ = _select_codes(w, scales[None], [table], scheme.ties, group_size)
    return QuantizedTensor(
        codes=codes, scales=scales, scheme=scheme.name, formats=scheme.formats,
        group_size=group_size, bits=table.bits, scale_format=scale_format,
        scale_codes=shared + 127,
    )


def clamped_groups(w, qt: QuantizedTensor) -> dict[str, int]:
    """How many groups of ``w`` had their scale clamped to ``[SCALE_MIN, SCALE_MAX]`` by the
    quantization ``qt`` of ``w``: ``{"below": ..., "above": ..., "groups": ...}``.

    The clamp is part of the rule (module docstring, as in the BitMoD reference code). A group
    whose ideal scale (``absmax / qmax`` of its chosen format; ``(max - min) / (2^b - 1)`` for
    asym) is below ``SCALE_MIN`` quantizes coarsely or to zero, one above ``SCALE_MAX``
    saturates: weights around 1e-12 or 1e30 lose everything. Groups of zeros are not counted
    (their error is 0). MX scales (E8M0, 2^-127..2^127) are never clamped here.
    """
    w = _as_weight(w)
    if w.shape != qt.shape:
        raise ValueError(f"weights have shape {w.shape}, the tensor {qt.shape}")
    counts = {"below": 0, "above": 0, "groups": int(qt.scales.size)}
    if qt.scale_format == "e8m0":
        return counts
    g = qt.group_size
    if qt.zero_points is not None:
        span = _group_reduce(w, g, np.max) - _group_reduce(w, g, np.min)
        ideal = span / float((1 << qt.bits) - 1)
    else:
        span = _group_reduce(np.abs(w), g, np.max)
        qmax = np.array([_table(name).qmax for name in qt.formats])
        chosen = 0 if qt.selectors is None else qt.selectors.astype(np.intp)
        ideal = span / qmax[chosen]
    counts["below"] = int(np.count_nonzero((span > 0) & (ideal < SCALE_MIN)))
    counts["above"] = int(np.count_nonzero(ideal > SCALE_MAX))
    return counts


def quantize(w, scheme: str | Scheme = "bitmod4", group_size: int | None = None,
             scale_format: str | None = None) -> QuantizedTensor:
    """Group-quantize a weight matrix.

    Parameters
    ----------
    w : array_like, shape (N, K)
        Weights (output channels x input channels), any real float or integer dtype, or a CPU
        torch tensor. Must be finite and non-empty.
    scheme : str or Scheme
        A name from :func:`scheme_names` (default ``"bitmod4"``) or a custom :class:`Scheme`.
    group_size : int, optional
        Elements per group along K (default: the scheme's, 128, or 32 for MX). A last group
        shorter than ``group_size`` uses its own statistics; a ``group_size`` of K or more
        therefore means one group per row (per-channel scales). The tensor keeps the value
        given (a core built for groups of G takes weights with fewer than G columns), and no
        array is sized by it: memory is proportional to the weights whatever ``group_size``.
    scale_format : str, optional
        Override the scheme's scale storage format: ``"fp16"``, ``"fp32"``, ``"fp64"`` or
        ``"int8"`` for absmax schemes, ``"fp16"``/``"fp32"``/``"fp64"`` for asym; MX schemes
        only accept ``"e8m0"``.

    Returns
    -------
    QuantizedTensor

    Raises
    ------
    ValueError
        Unknown scheme or scale format, non-2-D / empty / non-finite weights, bad group size.
    """
    spec = get_scheme(scheme)
    group_size = spec.group_size if group_size is None else _check_group_size(group_size)
    scale_format = spec.scale_format if scale_format is None else scale_format
    allowed = {
        "mod": ("fp16", "fp32", "fp64", "int8"), "sym": ("fp16", "fp32", "fp64", "int8"),
        "asym": ("fp16", "fp32", "fp64", "int8"), "mx": ("e8m0",),
    }[spec.kind]
    if scale_format not in allowed:
        raise ValueError(f"scale format {scale_format!r} is not valid for scheme {spec.name!r}; "
                         f"valid: {', '.join(allowed)}")
    w = _as_weight(w)
    if spec.kind == "asym":
        return _quantize_asym(w, spec, group_size, scale_format)
    if spec.kind == "mx":
        return _quantize_mx(w, spec, group_size, scale_format)
    return _quantize_absmax(w, spec, group_size, scale_format)

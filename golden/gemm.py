"""Bit-exact model of the accelerator core: ``Y[M, N] = X[M, K] W^T`` and its cycle count.

``W`` is a :class:`golden.quantize.QuantizedTensor` (codes, selectors, INT8 group-scale codes
and FP32 channel scales); ``X`` is either INT8 activations with a per-token float scale or
FP16/BF16 activations. The RTL (:mod:`hdl.array`) equals this model bit for bit.

Datapath (mirrors the RTL, one output ``(m, n)`` per PE of an output tile)
-------------------------------------------------------------------------
1. **Weights.** Codes with their group selector and the special-value register
   (:func:`golden.terms.pack_special_register` of :func:`golden.terms.default_special_values`)
   become terms (:func:`golden.terms.decompose`); their sum is the weight level ``w[n, k]`` in
   code units (``unit = 2**-u``, :attr:`golden.terms.TermGeometry.unit`).
2. **Activations, INT8** (``act_format="int8"``): ``a[m, k]`` are the int8 codes as given
   (:func:`quantize_activations_int8` makes them with a per-token FP32 scale, absmax / 127, RNE);
   no exponent: ``e[m, g] = 0``, ``base[m] = 0``, ``K_off = 0``.
   **Activations, FP16/BF16:** block floating point per (token, weight group) with
   :func:`golden.bfp.block_convert` (``mant_width`` W, ``rounding``). With ``gexp[m, g]`` the
   group's largest effective exponent (its plain block exponent) and ``X = act_exp_bits``::

       base[m]     = max(1, max_g gexp[m, g] - (2**X - 1))       per-token exponent floor
       anchor[m,g] = max(gexp[m, g], base[m])                      the group's block exponent
       e[m, g]     = anchor[m, g] - base[m]                        in 0 .. 2**X - 1

   The mantissas ``a[m, k]`` are the group's elements aligned to ``anchor``
   (:func:`golden.bfp.block_align`): those of ``block_convert`` applied to the group with one
   extra *anchor* element, the word ``anchor << M`` (value ``2**(anchor - bias)``), appended
   and dropped again, since ``anchor >= gexp`` is the block exponent that element gives. A
   group far below the token's largest one (more than ``2**X - 1`` binades) is thus aligned to
   ``base`` and loses low bits, so the PE's group shift stays ``X`` bits and the accumulator
   bounded. The RTL's row front end aligns each weight-step's ``L`` activations to the anchor
   with a :class:`hdl.arith.act_block.ActBlockAligner` (no exponent max tree: the on-chip
   pre-pass computed ``gexp``). ``K_off = bias + W - 2`` (:func:`golden.bfp.scale_offset`).
3. **Group sums and scales** (the PE, :func:`golden.pe.pe_reference`): K is cut into groups of
   ``G`` (a ragged last group has ``K mod G`` elements; the array pads it with zero
   activations to a multiple of ``L``). With ``q[n, g]`` the unsigned INT8 group-scale code::

       acc[m, n] = sum_g ((sum_{k in g} a[m, k] * w[n, k]) * q[n, g]) << e[m, g]

   exact, in the PE's wide accumulator (at most 64 bits, checked by :class:`ArrayConfig`).
4. **Drain** (on chip, RTL :class:`hdl.arith.to_float.ToFloat`): ``acc * 2**(base[m] -
   (K_off + u))`` rounded once, RNE, to ``out_format`` (:data:`OUT_FORMATS`: FP32, or FP16
   with IEEE gradual underflow and overflow to +-Inf; :func:`golden.minifloat_arith.
   to_float_code`). ``codes`` are its bit patterns (32 or 16 bits, sign bit on top).
5. **Host** (float32, in this order, each an IEEE RNE multiply): ``v = float32(code)`` (the
   code's value; an FP16 value, Inf included, converts to float32 exactly), ``y = v *
   channel[n]``, then for INT8 activations ``y = y * act_scale[m]``. These factors stay off
   chip: they are plain FP32 products after the exact integer part, and one per output
   row/column. With FP16 output the only extra rounding is the drain's (step 4): the host
   factors are never applied in FP16. Note that the drained value is in code units (INT8:
   activation codes times weight levels times group-scale codes), so an FP16 drain overflows
   to Inf where ``|acc * 2**(base - K_off - u)| >= 65520``.

Schemes the core runs: anything whose element format the term encoder takes (BitMoD
mixtures, INT, FP, flint) quantized with ``scale_format="int8"``. FP16/FP32 group scales and MX
E8M0 scales raise ``ValueError`` saying what to use instead. Asymmetric schemes (unsigned codes
with a zero point per group) run in this model with weight levels ``code - z_g``; the RTL core
runs them, and MX E8M0 block scales, through :func:`core_tensor` (the zero point folded into
signed ``int<B+1>`` levels; block scales as power-of-two INT8 codes and channel scales), which
changes no weight's value.

Exactness: the group sums go through float32 (float64) matrix products when the bound
``G * max|a| * max|w|`` of this product is at most 2**24 (2**53) (:func:`group_sums`), else
through int64.

Cycle model (:func:`gemm_cycles`)
---------------------------------
Tiles of ``R`` tokens x ``C`` channels run back to back; per tile each group ``g`` of
``len_g`` weights takes ``T * ceil(len_g / L)`` cycles, at least ``D = max(scale_bits, 1)``
(the bit-serial dequantizer of the previous group must be free) and at least ``D + 2`` for the
first group of a tile after the first (the previous output must have left the dequantizer).
The array inserts those idle cycles itself, so the PEs never stall on a short group; a tile
also ends at least ``R`` cycles after the previous one (a column's drain takes its ``R``
outputs one per cycle, in row order). A tile whose ``R * C`` outputs take longer to leave the
single output port than the next tile takes to compute makes the output port the bottleneck
(``max(compute, R * C)`` per tile).

The PEs never wait: the array has no stall. A tile may end (its last term leave the column
tops) only with a drain credit, one of :attr:`ArrayConfig.drain_tiles` ``Q``: room for the
tile's ``R`` outputs in every column FIFO, returned when the tile's last output has left the
FIFOs. ``Q`` is sized from the latency so that credits never delay the output port:
with ``lat`` = the PE latency plus 6 (gather registers: 1, column FIFO write to read: 2,
credit return: 3), a tile end waiting for the credit of the tile ``Q`` before it comes at
most ``lat`` cycles after that tile's last output was read, while the ``Q - 1`` tiles between
still hold ``(Q - 1) R C`` outputs for the port; ``(Q - 1) R C >= lat`` keeps the port busy, so
the model above is exact whether or not a tile end waits for a credit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from . import bfp
from . import pe as gpe
from . import terms as gterms
from .checks import check_choice, check_int
from .minifloat_arith import TO_FLOAT_LATENCY, to_float_code
from .pe_baseline import INT_PE_KIND, MINIFLOAT_PE_KIND
from .pe_bitplane import BITPLANE_PE_KIND
from .pe_kind import PEKind
from .pe_lut import LUT_PE_KIND

__all__ = [
    "MAX_SERIALIZER_STAGES",
    "MERGE_LATENCY",
    "OUT_FORMATS",
    "PE_KINDS",
    "SERIALIZER_LATENCY",
    "ArrayConfig",
    "DatapathParams",
    "GemmResult",
    "act_mantissas",
    "check_rtl_zero_points",
    "check_weights",
    "core_tensor",
    "gemm",
    "gemm_cycles",
    "group_lengths",
    "group_sums",
    "output_values",
    "pe_kind",
    "quantize_activations_int8",
    "quantize_for_core",
    "runs_zero_points",
    "scheme_formats",
    "weight_levels",
    "zero_point_kinds",
]

OUT_FORMATS = {"fp32": 32, "fp16": 16}  # drain output format -> code bits
# Cycles from a PE's output to the drain converter's input: the column's gather registers (1),
# its column FIFO (write to readable, 2) and the merger's register (1).
MERGE_LATENCY = 4
# Cycles from a step the column tops take to its first column word at PE (0, 0) without
# extra stages: the entry it waits in and the output register it leaves from
# (hdl/array/serializer.py); DatapathParams.serializer_stages adds its stages to it.
SERIALIZER_LATENCY = 2
#: Most extra register stages of the column tops (DatapathParams.serializer_stages).
MAX_SERIALIZER_STAGES = 3
MAX_ACC_WIDTH = 64  # the drain's float converter (and its golden twin) take at most 64 bits
MAX_DIM = 64  # rows and columns of an array
# The PE kinds an array holds, by name, in the host protocol's code order (golden.pe_kind): the
# bit-serial term PE (any format the term encoder takes), the bit-parallel integer PE (L
# multiplies per cycle, mapped to DSP blocks; one signed integer format) and the exact
# minifloat PE (L minifloat x integer products per cycle; power-of-two group scales) and the
# LUT-table PE (B weight bit-planes per weight-step, tables of activation sums built per row)
# and the bit-plane PE (AND-popcount of P_w x P_a plane pairs per weight-step).
# Append new kinds, never reorder: the index is the host protocol's code.
_PE_KINDS = {kind.name: kind for kind in (gpe.PE_KIND, INT_PE_KIND, MINIFLOAT_PE_KIND,
                                          LUT_PE_KIND, BITPLANE_PE_KIND)}
PE_KINDS = tuple(_PE_KINDS)


def pe_kind(name: str) -> PEKind:
    """The :class:`golden.pe_kind.PEKind` called ``name`` (``ValueError`` lists the kinds)."""
    check_choice("pe_kind", name, PE_KINDS)
    return _PE_KINDS[name]


@dataclass(frozen=True)
class DatapathParams:
    """The parameters an array (:class:`ArrayConfig`) and a core
    (:class:`golden.core.CoreConfig`) share.

    Attributes
    ----------
    rows, cols : int
        ``R`` tokens x ``C`` channels per tile, 1..64 each.
    lanes, group_size : int
        ``L`` lanes per PE, ``G`` weights per group (a multiple of ``L``).
    formats : tuple of str
        Weight format or BitMoD mixture (selector order); a name or a list is accepted.
    act_format : {"int8", "fp16", "bf16"}
        :data:`golden.bfp.ACT_FORMATS`.
    mant_width : int
        FP activations: block mantissa width ``W`` (the PE's activation width); 8 for INT8.
    rounding : {"trunc", "rne"}
        FP activations: block converter rounding.
    act_exp_bits : int
        FP activations: ``X``, bits of the per-group exponent shift (0 for INT8, whatever is
        given).
    scale_bits : int
        Group-scale code bits (8: INT8 second-level scales).
    out_format : {"fp32", "fp16"}
        Drain output format (RNE); ``out_bits`` bits per code.
    pe_kind : str
        One of :data:`PE_KINDS`: the PE every position of the array holds
        (:meth:`ArrayConfig.kind` describes it).
    zero_points : bool
        Asymmetric schemes' zero points as MixPE's per-group correction (module docstring):
        one more lane per PE, a group sum per row at the row edge, the zero point in each
        column's group metadata. Needs a PE kind that takes them
        (:attr:`golden.pe_kind.PEKind.zero_points`) and one signed format ``int<B>``.
    serializer_stages : int
        Extra register stages in every site of the column tops
        (:class:`hdl.array.serializer.StepSerializer`), 0 .. :data:`MAX_SERIALIZER_STAGES`:
        1 reads the head entry into a register, 2 also registers the encoded terms, 3 also
        lets every site's read pointer and term counter follow the central ones a cycle
        behind (copies of flip-flops, not of their next values: no logic before the nets
        that reach every site). Each adds
        a cycle to :attr:`ArrayConfig.serializer_latency` and flip-flops to every column and
        row (docs/boards.md: measured on 16-lane ULX3S arrays; the iCEBreaker has no room).
    """

    rows: int = 2
    cols: int = 2
    lanes: int = 4
    group_size: int = 16
    formats: tuple[str, ...] = ("fp4",)
    act_format: str = "int8"
    mant_width: int = 12
    rounding: str = "rne"
    act_exp_bits: int = 3
    scale_bits: int = 8
    out_format: str = "fp32"
    pe_kind: str = "bitserial"
    zero_points: bool = False
    serializer_stages: int = 0

    def datapath(self) -> dict:
        """The shared parameters as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(DatapathParams)}


@dataclass(frozen=True)
class ArrayConfig(DatapathParams):
    """Parameters of the systolic array (and its datapath), validated once, and what follows:
    those of :class:`DatapathParams` and

    Attributes
    ----------
    max_groups : int
        Most groups per output (sizes the accumulator).
    """

    max_groups: int = 256

    def __post_init__(self):
        put = functools.partial(object.__setattr__, self)
        put("rows", check_int("rows", self.rows, 1, MAX_DIM))
        put("cols", check_int("cols", self.cols, 1, MAX_DIM))
        check_choice("act_format", self.act_format, bfp.ACT_FORMATS)
        if self.act_format == "int8":
            put("mant_width", 8)
            put("act_exp_bits", 0)
        else:
            bfp.check_block_params(self.act_format, self.mant_width, self.rounding)
            put("mant_width", int(self.mant_width))
            put("act_exp_bits", check_int("act_exp_bits", self.act_exp_bits, 0, 6))
        check_choice("out_format", self.out_format, OUT_FORMATS)
        put("serializer_stages", check_int("serializer_stages", self.serializer_stages, 0,
                                           MAX_SERIALIZER_STAGES))
        kind = pe_kind(self.pe_kind)
        if not isinstance(self.zero_points, bool):
            raise TypeError(f"zero_points must be a bool, not {self.zero_points!r}")
        if self.zero_points and not kind.zero_points:
            raise ValueError(f"the {self.pe_kind} PE takes no zero points (PE kinds that do: "
                             f"{', '.join(zero_point_kinds())}); fold them into the codes with "
                             "golden.gemm.core_tensor")
        pe = self.pe  # validates the PE parameters
        for name in ("lanes", "group_size", "formats", "scale_bits", "max_groups"):
            put(name, getattr(pe, name))
        kind.check(self)
        if self.acc_width > MAX_ACC_WIDTH:
            raise ValueError(f"these parameters need a {self.acc_width}-bit accumulator; the "
                             f"drain takes at most {MAX_ACC_WIDTH} bits: lower act_exp_bits "
                             f"({self.act_exp_bits}), mant_width ({self.mant_width}) or "
                             f"max_groups ({self.max_groups})")

    @functools.cached_property
    def pe(self) -> gpe.PEConfig:
        """The configuration of every PE of the array."""
        return gpe.PEConfig(lanes=self.lanes, act_width=self.mant_width,
                            group_size=self.group_size, formats=self.formats,
                            scale_bits=self.scale_bits, exp_bits=self.act_exp_bits,
                            max_groups=self.max_groups, zero_points=self.zero_points)

    @property
    def kind(self) -> PEKind:
        """The description of the PE kind (:mod:`golden.pe_kind`)."""
        return _PE_KINDS[self.pe_kind]

    @property
    def geometry(self) -> gterms.TermGeometry:
        return self.pe.geometry

    @property
    def terms(self) -> int:
        """``T``: cycles per weight-step (the kind's; 1 for the bit-parallel ``int`` PE)."""
        return self.kind.cycles_per_step(self)

    @property
    def out_bits(self) -> int:
        """Bits of a drained output code: 32 (FP32) or 16 (FP16)."""
        return OUT_FORMATS[self.out_format]

    @property
    def act_width(self) -> int:
        return self.pe.act_width

    @property
    def unit_shift(self) -> int:
        """``u`` with ``unit = 2**-u``."""
        return -int(math.log2(self.geometry.unit))

    @property
    def k_offset(self) -> int:
        """``K_off`` of ``activation = mant * 2**(block_exp - K_off)`` (0 for INT8)."""
        if self.act_format == "int8":
            return 0
        return bfp.scale_offset(self.act_format, self.mant_width)

    @property
    def in_frac(self) -> int:
        """Fraction bits of the accumulator given to the drain converter: ``K_off + u``."""
        return self.k_offset + self.unit_shift

    @property
    def exp_width(self) -> int:
        """Bits of the act block exponent field (FP16 5, BF16 8; 0 for INT8)."""
        return 0 if self.act_format == "int8" else bfp.block_exp_width(self.act_format)

    @property
    def dequant_cycles(self) -> int:
        """``D``: the fewest cycles between two group ends that keep every PE from stalling
        (the kind's: the bit-serial dequantizer's ``max(scale_bits, 1)`` steps; the ``int``
        PE's ``scale_bits`` steps plus its accumulate cycle)."""
        return self.kind.dequant_cycles(self)

    @property
    def acc_width(self) -> int:
        """The PE's output accumulator width (the kind's; the drain takes it whole)."""
        return self.kind.acc_width(self)

    # -- pipeline latencies (the RTL asserts them when it elaborates) --------------------------
    @property
    def front_end_latency(self) -> int:
        """Row front end: one register for INT8, else the block aligner
        (:func:`golden.bfp.aligner_latency`), plus the kind's row stages after it
        (:attr:`golden.pe_kind.PEKind.row_latency`: the LUT PE's table builders) and, with
        zero points, the register of the rows' group sums."""
        row = self.kind.row_latency(self) + self.zero_points
        if self.act_format == "int8":
            return 1 + row
        return bfp.aligner_latency(self.act_format) + row

    @property
    def front_latency(self) -> int:
        """Cycles from an accepted step (empty pipeline) to its first term reaching PE (0, 0):
        the front end and the column tops (:attr:`serializer_latency`)."""
        return self.front_end_latency + self.serializer_latency

    @property
    def serializer_latency(self) -> int:
        """Cycles from a step the column tops take to its first column word:
        :data:`SERIALIZER_LATENCY` plus :attr:`serializer_stages`."""
        return SERIALIZER_LATENCY + self.serializer_stages

    @property
    def latency(self) -> int:
        """Cycles from PE (0, 0) receiving a tile's last term to the tile's first output valid:
        PE latency, :data:`MERGE_LATENCY` and the drain converter
        (:data:`golden.minifloat_arith.TO_FLOAT_LATENCY`)."""
        return self.kind.latency(self) + MERGE_LATENCY + TO_FLOAT_LATENCY

    @property
    def feed_entries(self) -> int:
        """``N``: steps the column tops hold, ``ceil((F + 1) / T) + 1`` with ``F`` =
        :attr:`front_end_latency`. The array takes a step only with a credit (one per free
        entry, the front end's steps counted against them) and can use it again the cycle
        after the step's last term leaves its entry: a credit goes round in ``F + T + 1``
        cycles, so ``N`` of them give at least one step per ``T`` cycles and the feed never
        slows the column tops (the cycle model holds)."""
        return -(-(self.front_end_latency + 1) // self.terms) + 1

    @property
    def feed_entries_early(self) -> int:
        """:attr:`feed_entries` of an array whose credits come back in the cycle the step's
        last term leaves (not registered; the iCE40 form, where the logic after it is not
        the bound): the round takes ``F + T`` cycles, so ``ceil(F / T) + 1`` entries."""
        return -(-self.front_end_latency // self.terms) + 1

    @property
    def drain_tiles(self) -> int:
        """``Q``: tiles whose outputs the drain has room for (column FIFOs of ``Q * R``
        entries), ``1 + ceil((pe_latency + 6) / (R * C))``, the fewest for which waiting for
        a drain credit never delays the output port (module docstring, cycle model)."""
        outputs = self.rows * self.cols
        return 1 + -(-(self.kind.latency(self) + 6) // outputs)

    @property
    def fill(self) -> int:
        """The array's first-step-to-first-output pipeline latency, as :func:`gemm_cycles`
        takes it: ``front_latency + latency - 1``."""
        return self.front_latency + self.latency - 1


def scheme_formats(scheme, zero_points: bool = False,
                   pe_kind_name: str = "bitserial") -> tuple[str, ...]:
    """The weight formats the core is built with for ``scheme`` (a name of
    :func:`golden.quantize.scheme_names` or a :class:`golden.quantize.Scheme`): the scheme's own
    formats, except for asymmetric schemes, whose ``B``-bit unsigned codes run as the signed
    levels ``code - z`` in ``int<B+1>``, or with ``zero_points`` (a core that corrects by the
    zero point) as the offset codes ``code - 2**(B-1)`` in ``int<B>`` (:func:`core_tensor`);
    and for a mixture of formats on PEs of a kind that takes none
    (:attr:`golden.pe_kind.PEKind.mixtures`), when all the mixture's values are integers: the
    values themselves in the narrowest ``int<B>`` (:func:`integer_levels_format`; BitMoD's
    4-bit mixture, values in ``[-16, 16]``, runs as ``int6``).

    Raises ``ValueError`` naming the scheme and what to use instead when the core cannot run it
    (the one place that decides which schemes the core runs).
    """
    from .quantize import get_scheme  # quantize is a peer; imported when asked

    spec = get_scheme(scheme)
    formats = tuple(spec.formats)
    if spec.kind == "asym":
        formats = tuple(_offset_format(name) if zero_points else _folded_format(name)
                        for name in formats)
    if folds_mixture(formats, pe_kind_name):
        formats = (integer_levels_format(formats),)
    try:
        gterms.geometry(list(formats))
    except ValueError as exc:
        raise ValueError(f"scheme {spec.name!r} cannot run on the core: {exc}") from None
    return formats


def integer_levels_format(names) -> str | None:
    """The narrowest ``int<B>`` (``B >= 2``) holding every value the formats ``names`` decode
    to, when those values are all finite integers; ``None`` otherwise."""
    from . import formats as gformats  # peer module; imported when asked

    values = np.concatenate([gformats.get(name).decode(np.arange(1 << gformats.get(name).bits))
                             for name in names])
    if not np.isfinite(values).all() or (values != np.round(values)).any():
        return None
    lo, hi = int(values.min()), int(values.max())
    bits = 2
    while not -(1 << (bits - 1)) <= lo <= hi <= (1 << (bits - 1)) - 1:
        bits += 1
    return f"int{bits}"


def folds_mixture(formats, pe_kind_name: str) -> bool:
    """Whether a core of ``pe_kind_name`` PEs runs the mixture ``formats`` as its integer values
    (:func:`integer_levels_format`): a mixture of more than one format, on a kind that takes
    no mixtures, whose values are all integers."""
    return (len(formats) > 1 and not pe_kind(pe_kind_name).mixtures
            and integer_levels_format(formats) is not None)


def _folded_format(name: str) -> str:
    """``uint<B>`` -> ``int<B+1>``: the format of the levels ``code - z`` (in ``[-(2**B - 1),
    2**B - 1]``) of an asymmetric scheme."""
    if not name.startswith("uint") or not name[4:].isdigit():
        raise ValueError(f"asymmetric codes must be uint<B>, not {name!r}")
    return f"int{int(name[4:]) + 1}"


def _offset_format(name: str) -> str:
    """``uint<B>`` -> ``int<B>``: the format of the offset codes ``code - 2**(B-1)`` (the code
    with its top bit inverted) a core with zero-point correction takes."""
    _folded_format(name)  # checks the name
    return f"int{name[4:]}"


def zero_point_kinds() -> tuple[str, ...]:
    """The PE kinds that correct by zero points (:attr:`golden.pe_kind.PEKind.zero_points`)."""
    return tuple(name for name, kind in _PE_KINDS.items() if kind.zero_points)


def runs_zero_points(scheme, pe_kind_name: str) -> bool:
    """Whether a core of ``pe_kind_name`` PEs runs ``scheme`` with the zero-point correction
    (an asymmetric scheme and a kind that takes zero points); otherwise the zero points, if
    any, are folded into the codes (:func:`core_tensor`)."""
    from .quantize import get_scheme  # quantize is a peer; imported when asked

    return get_scheme(scheme).kind == "asym" and pe_kind(pe_kind_name).zero_points


def core_weights(scheme, pe_kind_name: str) -> tuple[tuple[str, ...], bool]:
    """``(formats, zero_points)`` of a core of ``pe_kind_name`` PEs built for ``scheme``:
    whether it corrects by zero points (:func:`runs_zero_points`) and the weight formats it
    holds then (:func:`scheme_formats`). ``ValueError`` as :func:`scheme_formats`."""
    zero_points = runs_zero_points(scheme, pe_kind_name)
    return scheme_formats(scheme, zero_points, pe_kind_name), zero_points


def runs_as_is(scheme, pe_kind_name: str) -> bool:
    """Whether PE kind ``pe_kind_name`` takes ``scheme``'s weight formats as they are: its
    check accepts the core's formats, and a mixture is not run as its integer values
    (:func:`folds_mixture`; those are wider codes than the scheme's)."""
    from .quantize import get_scheme  # quantize is a peer; imported when asked

    try:
        if folds_mixture(get_scheme(scheme).formats, pe_kind_name):
            return False
        formats, zero_points = core_weights(scheme, pe_kind_name)
        ArrayConfig(formats=formats, pe_kind=pe_kind_name, zero_points=zero_points)
    except ValueError:
        return False
    return True


MX_SCALE_SPAN = 7  # binades an INT8 group-scale code 2**j (j = 0 .. 7) spans


def core_tensor(qt, zero_points: bool = False, pe_kind_name: str = "bitserial"):
    """The tensor the core of ``pe_kind_name`` PEs runs for ``qt``, equal to it weight for
    weight (same scaled values).

    * INT8 group scales, no zero point: ``qt`` itself.
    * **Zero points** (asymmetric schemes), ``zero_points`` False: the core multiplies by the
      levels ``code - z_g`` directly, as ``B + 1``-bit two's-complement codes of ``int<B+1>``
      (``uint4`` codes and a zero point in ``0 .. 15`` give levels in ``[-15, 15]``: ``int5``,
      Booth 3 terms per weight instead of 2; ``uint3`` -> ``int4``, 2 terms as before). The
      zero point is folded into the stored code once, offline, so the datapath is the
      symmetric one.
    * **Zero points**, ``zero_points`` True (a core built with zero points, whose PEs correct
      each group by ``z_g * (-sum_k a_k)``, MixPE's formulation): the codes and zero points in
      offset form, ``int<B>`` codes ``code - 2**(B-1)`` (the code with its top bit inverted)
      and signed zero points ``z_g - 2**(B-1)``; the levels, their difference, are unchanged,
      and ``uint4`` keeps int4's 2 terms per weight.
    * **MX E8M0 block scales** (``2**(e_g - 127)``): per output channel ``n`` with ``r_n =
      max_g e_g - 7``, the group-scale code is ``2**(e_g - r_n)`` (an INT8 code 1 .. 128) and
      the channel scale ``2**(r_n - 127)``, so ``code * channel`` is the block scale exactly
      (for MX INT8 the element's fixed ``2**-6`` rides in the channel scale too).
      A group more than 7 binades below its channel's largest has no such code; it is exact
      only when all its codes decode to zero (its code is then 0).
    * **A mixture of formats** (BitMoD) on a kind without mixtures (:func:`folds_mixture`):
      the decoded values (integers) as two's-complement codes of :func:`integer_levels_format`;
      the selectors go, the scales stay.

    Raises
    ------
    ValueError
        A scale format the core does not multiply by (FP16/FP32 group scales), a zero point
        that needs more than 8-bit levels, or an MX channel whose nonzero groups span more than
        7 binades (named, with the span).
    """
    from .quantize import QuantizedTensor  # quantize is a peer; imported when asked

    if qt.zero_points is not None and zero_points:
        names = [_offset_format(name) for name in qt.formats]
        half = 1 << (qt.bits - 1)
        qt = QuantizedTensor(codes=qt.codes ^ half, scales=qt.scales, scheme=qt.scheme,
                             formats=tuple(names), group_size=qt.group_size, bits=qt.bits,
                             scale_format=qt.scale_format, selectors=qt.selectors,
                             zero_points=qt.zero_points.astype(np.int64) - half,
                             scale_codes=qt.scale_codes, channel_scales=qt.channel_scales)
    elif qt.zero_points is not None:
        names = [_folded_format(name) for name in qt.formats]
        try:
            gterms.geometry(names)
        except ValueError as exc:
            raise ValueError(f"scheme {qt.scheme!r}: the levels code - zero point need "
                             f"{names[0]}, which the core cannot run ({exc})") from None
        levels = qt.decoded().astype(np.int64)  # code - zero point, in code units (unit 1)
        bits = qt.bits + 1
        qt = QuantizedTensor(codes=levels & ((1 << bits) - 1), scales=qt.scales,
                             scheme=qt.scheme, formats=tuple(names), group_size=qt.group_size,
                             bits=bits, scale_format=qt.scale_format, selectors=qt.selectors,
                             scale_codes=qt.scale_codes, channel_scales=qt.channel_scales)
    if folds_mixture(qt.formats, pe_kind_name):
        name = integer_levels_format(qt.formats)
        bits = int(name[3:])
        levels = qt.decoded().astype(np.int64)  # integers (folds_mixture checked)
        qt = QuantizedTensor(codes=levels & ((1 << bits) - 1), scales=qt.scales,
                             scheme=qt.scheme, formats=(name,), group_size=qt.group_size,
                             bits=bits, scale_format=qt.scale_format,
                             scale_codes=qt.scale_codes, channel_scales=qt.channel_scales)
    if qt.scale_format == "e8m0":
        qt = _mx_as_int8(qt)
    return qt


def quantize_for_core(w, scheme, group_size: int | None = None, zero_points: bool = False,
                      pe_kind_name: str = "bitserial"):
    """Quantize ``w`` ``[N, K]`` with ``scheme`` the way a core of ``pe_kind_name`` PEs takes
    it: INT8 group scales (MX schemes: their E8M0 block scales), then :func:`core_tensor`
    (``zero_points``: for a core built with them). ``group_size`` None: the scheme's own."""
    from .quantize import get_scheme, quantize  # quantize is a peer; imported when asked

    mx = get_scheme(scheme).kind == "mx"
    return core_tensor(quantize(w, scheme, group_size=group_size,
                                scale_format="e8m0" if mx else "int8"), zero_points,
                       pe_kind_name)


def _mx_as_int8(qt):
    """MX E8M0 block scales as INT8 power-of-two codes and channel scales (:func:`core_tensor`)."""
    from .quantize import QuantizedTensor  # quantize is a peer; imported when asked

    # The scales are powers of two (the E8M0 value, times the element format's fixed 2**-6
    # for MX INT8); their exponents are exact through frexp.
    mantissa, e = np.frexp(qt.scales)
    if not (mantissa == 0.5).all():
        raise ValueError(f"scheme {qt.scheme!r}: MX block scales must be powers of two")
    e = e.astype(np.int64) - 1
    values = qt.decoded()  # [N, K] element values before scaling
    k = qt.shape[1]
    pad = qt.n_groups * qt.group_size - k
    nonzero = np.pad(values != 0, ((0, 0), (0, pad))).reshape(
        qt.shape[0], qt.n_groups, qt.group_size).any(axis=2)
    top = np.where(nonzero, e, np.iinfo(np.int64).min).max(axis=1)
    top = np.where(nonzero.any(axis=1), top, e.max(axis=1))  # a row of zeros: any reference
    ref = top - MX_SCALE_SPAN
    shift = e - ref[:, None]
    low = nonzero & (shift < 0)
    if low.any():
        n, g = (int(i) for i in np.argwhere(low)[0])
        span = int(top[n] - e[n][nonzero[n]].min())
        raise ValueError(f"scheme {qt.scheme!r}: channel {n}'s E8M0 block scales span {span} "
                         f"binades (group {g} is {span} below the largest); the core's INT8 "
                         f"group-scale codes 2**j hold at most {MX_SCALE_SPAN}")
    codes = np.where(nonzero, 1 << np.clip(shift, 0, MX_SCALE_SPAN), 0)
    channel = np.ldexp(1.0, ref)  # exact in float32 down to 2**-149
    if (channel < 2.0 ** -149).any():
        raise ValueError(f"scheme {qt.scheme!r}: a channel's scales are too small for an FP32 "
                         "channel scale")
    return QuantizedTensor(codes=qt.codes, scales=codes * channel[:, None], scheme=qt.scheme,
                           formats=qt.formats, group_size=qt.group_size, bits=qt.bits,
                           scale_format="int8", selectors=qt.selectors, scale_codes=codes,
                           channel_scales=channel)


def check_weights(qt, cfg: ArrayConfig | None = None) -> None:
    """Raise ``ValueError`` if the datapath cannot run ``qt`` (and say what to use instead).

    Zero points (asymmetric schemes) are part of this model: the weight levels are
    ``code - zero_point`` (:func:`weight_levels`). The RTL takes them only when built with
    ``zero_points`` (:func:`check_rtl_zero_points`)."""
    if qt.scale_format == "e8m0":
        raise ValueError(f"scheme {qt.scheme!r}: MX E8M0 block scales run on the core as INT8 "
                         "power-of-two codes; convert the tensor with golden.gemm.core_tensor")
    if qt.scale_format != "int8":
        raise ValueError(f"scheme {qt.scheme!r} with {qt.scale_format} group scales cannot run "
                         "on the core (it multiplies by integer group-scale codes); quantize "
                         f"with scale_format='int8', e.g. quantize(w, {qt.scheme!r}, "
                         "scale_format='int8')")
    try:
        gterms.geometry(list(qt.formats))
    except ValueError as exc:
        raise ValueError(f"scheme {qt.scheme!r}: {exc}") from None
    if cfg is not None:
        if tuple(qt.formats) != cfg.formats:
            raise ValueError(f"weights use formats {list(qt.formats)}, the core was built for "
                             f"{list(cfg.formats)}")
        if qt.group_size != cfg.group_size:
            raise ValueError(f"weights use group_size {qt.group_size}, the core was built for "
                             f"{cfg.group_size}")
        if qt.n_groups > cfg.max_groups:
            raise ValueError(f"K = {qt.shape[1]} has {qt.n_groups} groups; the core "
                             f"accumulates at most max_groups = {cfg.max_groups}")
        if cfg.kind.scale == "shift":
            _check_power_of_two_scales(qt, cfg)


def check_rtl_zero_points(qt, cfg: ArrayConfig) -> None:
    """Raise ``ValueError`` if ``qt`` has zero points and the RTL built for ``cfg`` has no
    zero-point correction (it would ignore them): the host and the drivers call it before
    loading weights."""
    if qt.zero_points is not None and not cfg.zero_points:
        raise ValueError(f"scheme {qt.scheme!r} has zero points and the core was built without "
                         "them: fold them into the codes with golden.gemm.core_tensor, or "
                         "build the core with zero_points")


def _check_power_of_two_scales(qt, cfg: ArrayConfig) -> None:
    """A PE kind that shifts by the group scale (:attr:`golden.pe_kind.PEKind.scale`) needs
    every group-scale code to be ``2**j`` (MX block scales, :func:`core_tensor`)."""
    codes = np.asarray(qt.scale_codes if qt.scale_codes is not None else [], dtype=np.int64)
    bad = codes[(codes <= 0) | (codes & (codes - 1) != 0)]
    if codes.size == 0 or bad.size:
        example = f" such as {int(bad[0])}" if bad.size else ""
        raise ValueError(f"scheme {qt.scheme!r}: the {cfg.pe_kind} PE shifts by power-of-two "
                         f"group scales (MX schemes: mxfp4, mxfp6, mxfp8, mxint8); these scale "
                         f"codes are not powers of two{example}")


def group_lengths(k: int, group_size: int) -> list[int]:
    """Weights per group along K (the last one ragged when ``group_size`` does not divide K)."""
    full, rest = divmod(k, group_size)
    return [group_size] * full + ([rest] if rest else [])


@functools.cache
def level_table(names) -> np.ndarray:
    """``[4, 2**code_bits]``: the level in code units of every (selector, code) pair of a
    format or mixture (``names``, a tuple or list), through the term decomposition with the
    default special values. The decomposition is element-wise, so indexing this table gives
    exactly what decomposing each weight does, in a fraction of the time (a whole model's
    weights: SmolLM2's 210 matrices took 38 s through :func:`golden.terms.decompose`)."""
    names = list(names)
    geo = gterms.geometry(names)
    special = gterms.default_special_values(names) if geo.has_register else None
    codes = np.arange(1 << geo.code_bits, dtype=np.int64)
    selectors = np.arange(gterms.REGISTER_ENTRIES, dtype=np.int64)[:, None]
    table = gterms.terms_value(gterms.decompose(codes[None, :], names, selectors, special))
    table.flags.writeable = False
    return table


def weight_levels(qt) -> np.ndarray:
    """Weight levels in code units ``[N, K]`` (int64), through the term decomposition, minus
    the group's zero point for asymmetric schemes."""
    from .quantize import group_index  # quantize is a peer; imported when asked

    names = tuple(qt.formats)
    groups = group_index(qt.shape[1], qt.group_size)  # column -> group, K entries
    codes = qt.codes.astype(np.int64)
    sel = (np.zeros(codes.shape, dtype=np.int64) if qt.selectors is None
           else qt.selectors.astype(np.int64)[:, groups])
    table = level_table(names)
    for what, values, count in (("codes", codes, table.shape[1]),
                                ("selectors", sel, table.shape[0])):
        bad = values[(values < 0) | (values >= count)]
        if bad.size:  # (an index past the table raises IndexError, a negative one wraps)
            raise ValueError(f"weight {what} of {list(names)} must be in 0..{count - 1}, "
                             f"not {int(bad[0])}")
    levels = table[sel, codes]
    if qt.zero_points is not None:  # asymmetric: the level is code - zero point
        levels = levels - qt.zero_points.astype(np.int64)[:, groups]
    return levels


def quantize_activations_int8(x) -> tuple[np.ndarray, np.ndarray]:
    """Per-token symmetric INT8: ``scale = fp32(absmax / 127)`` (1 for an all-zero token),
    ``code = clip(rint(x / scale), -127, 127)`` (ties to even). Returns (int8 codes [M, K],
    float32 scales [M])."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"activations must be [M, K], not shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("activations contain NaN or Inf")
    amax = np.abs(x).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(x / scale.astype(np.float64)[:, None]), -127, 127)
    return codes.astype(np.int8), scale


def _float_bits(x, act_format: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind in "iu":
        bits = arr.astype(np.int64)
        if bits.size and (bits.min() < 0 or bits.max() > 0xFFFF):
            raise ValueError("integer activations must be 16-bit patterns")
        return bits
    if act_format == "fp16":
        return arr.astype(np.float16).view(np.uint16).astype(np.int64)
    import ml_dtypes

    return arr.astype(ml_dtypes.bfloat16).view(np.uint16).astype(np.int64)


def act_mantissas(x, cfg: ArrayConfig) -> dict[str, np.ndarray]:
    """The activation side of the datapath (module docstring, step 2).

    ``x``: INT8 codes ``[M, K]`` for ``act_format="int8"``; else FP16/BF16 values (or their
    16-bit patterns) ``[M, K]``. Returns ``mant [M, K]``, ``shift [M, n_groups]`` (``e``),
    ``gexp [M, n_groups]``, ``base [M]`` and ``words [M, K]`` (the raw 16-bit patterns; INT8:
    the codes), all int64.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"activations must be [M, K], not shape {arr.shape}")
    m, k = arr.shape
    lengths = group_lengths(k, cfg.group_size)
    ng = len(lengths)
    if cfg.act_format == "int8":
        if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < -128 or arr.max() > 127)):
            raise ValueError("INT8 activations must be integer codes in -128..127")
        a = arr.astype(np.int64)
        zeros = np.zeros((m, ng), np.int64)
        return {"mant": a, "shift": zeros, "gexp": zeros.copy(), "base": np.zeros(m, np.int64),
                "words": a}
    words = _float_bits(arr, cfg.act_format)
    E, M, _ = bfp.float_fields(cfg.act_format)
    special = ((words >> M) & ((1 << E) - 1)) == (1 << E) - 1
    if special.any():
        raise ValueError("activations contain NaN or Inf")
    # Groups padded with zeros to a common width: G, or K when one group longer than K covers
    # the row (nothing scales with a G beyond K).
    width = min(cfg.group_size, k)
    padded = np.zeros((m, ng * width), np.int64)
    padded[:, :k] = words
    blocks = padded.reshape(m, ng, width)
    gexp, _, _ = bfp.block_convert(blocks, cfg.act_format, cfg.mant_width, cfg.rounding)
    window = (1 << cfg.act_exp_bits) - 1
    base = np.maximum(1, gexp.max(axis=1) - window)
    anchor = np.maximum(gexp, base[:, None])
    # The anchor is at least every lane's effective exponent (gexp is the group's largest), so
    # aligning to it is block_convert of the group with one more lane holding the anchor.
    mant, flags = bfp.block_align(blocks, anchor, cfg.act_format, cfg.mant_width, cfg.rounding)
    assert not flags.invalid.any()
    mant = mant.reshape(m, -1)[:, :k]
    return {"mant": mant, "shift": anchor - base[:, None], "gexp": gexp, "base": base,
            "words": words}


@dataclass(frozen=True)
class GemmResult:
    """Everything :func:`gemm` computes, stage by stage (module docstring)."""

    acc: np.ndarray  # int64 [M, N]: exact accumulators
    exp_offset: np.ndarray  # int64 [M, N]: base[m]
    in_frac: int
    codes: np.ndarray  # int64 [M, N]: out_format (FP32/FP16) bit patterns from the drain
    y: np.ndarray  # float32 [M, N]: after the host factors
    acts: dict  # act_mantissas(...)
    levels: np.ndarray  # int64 [N, K]


EXACT_FLOAT32 = 1 << 24  # every integer of magnitude up to this is a float32
EXACT_FLOAT64 = 1 << 53  # ... and up to this a float64


def group_sums(a: np.ndarray, w: np.ndarray, bound: int) -> np.ndarray:
    """``gsum[m, n, g] = sum_k a[m, g, k] * w[n, g, k]``, exact, as int64.

    ``bound`` bounds ``sum_k |a * w|`` for every group (e.g. ``G * max|a| * max|w|``, or
    :attr:`golden.pe.PEConfig.group_bound` ``G * S_max * 2**(A - 1)``). When it is at most
    2**24 (2**53) every product and every partial sum, in any order and with or without fused
    multiply-adds, is an integer a float32 (float64) holds exactly, so the sums go through
    float32 (float64) BLAS matrix products, one per group, and convert back exactly; otherwise
    an int64 contraction (exact up to 2**63, which the accumulator widths guarantee).
    """
    if bound <= EXACT_FLOAT64:
        dtype = np.float32 if bound <= EXACT_FLOAT32 else np.float64
        af, wf = a.astype(dtype), w.astype(dtype)
        out = np.empty((a.shape[0], w.shape[0], a.shape[1]), dtype=np.int64)
        for g in range(a.shape[1]):
            out[:, :, g] = af[:, g, :] @ wf[:, g, :].T
        return out
    return np.einsum("mgk,ngk->mng", a, w)


def gemm(x, qt, cfg: ArrayConfig, act_scale=None, levels=None) -> GemmResult:
    """Bit-exact output of the core for activations ``x`` and quantized weights ``qt``.

    Parameters
    ----------
    x : array [M, K]
        INT8 codes (``act_format="int8"``) or FP16/BF16 values / 16-bit patterns.
    qt : golden.quantize.QuantizedTensor
        ``[N, K]`` weights quantized with ``scale_format="int8"``.
    cfg : ArrayConfig
    act_scale : array [M] of float32, optional
        INT8 activations: per-token scale (default 1).
    levels : array [N, K] of int64, optional
        ``weight_levels(qt)``, when the caller has it already (one term decomposition per
        layer instead of one per call).
    """
    check_weights(qt, cfg)
    acts = act_mantissas(x, cfg)
    a = acts["mant"]
    m, k = a.shape
    n, kw = qt.shape
    if kw != k:
        raise ValueError(f"activations have K = {k}, weights have K = {kw}")
    levels = weight_levels(qt) if levels is None else levels
    if levels.shape != qt.shape:
        raise ValueError(f"levels have shape {levels.shape}, the weights {qt.shape}")
    ng = qt.n_groups
    width = min(cfg.group_size, k)  # G, or K for one group longer than the row
    pad = ng * width - k
    ap = np.pad(a, ((0, 0), (0, pad))).reshape(m, ng, width)
    wp = np.pad(levels, ((0, 0), (0, pad))).reshape(n, ng, width)
    # The exact bound of this product's group sums (at most the PE's proven group_bound).
    bound = width * int(np.abs(ap).max(initial=0)) * int(np.abs(wp).max(initial=0))
    gsum = group_sums(ap, wp, bound)
    q = qt.scale_codes.astype(np.int64)
    terms = (gsum * q[None]) << acts["shift"][:, None, :]
    acc = terms.sum(axis=-1)  # every partial sum is bounded by 2**(acc_width - 1) <= 2**63
    offset = np.broadcast_to(acts["base"][:, None], acc.shape).astype(np.int64)
    codes = to_float_code(acc, offset, cfg.in_frac, cfg.out_format)
    y = output_values(codes, qt, cfg, act_scale)
    return GemmResult(acc, offset, cfg.in_frac, codes, y, acts, levels)


def output_values(codes, qt, cfg: ArrayConfig, act_scale=None) -> np.ndarray:
    """The host's step 5 (module docstring): drained output codes ``[M, N]`` -> float32 values.

    ``codes`` are the drain's bit patterns (FP32, or FP16 in the low 16 bits), as
    :func:`gemm` computes them or as the RTL returns them (masked to ``cfg.out_bits``).
    """
    codes = np.asarray(codes)
    if cfg.out_format == "fp16":
        y = (codes & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float32)  # exact
    else:
        y = (codes & 0xFFFFFFFF).astype(np.uint32).view(np.float32)
    y = y * qt.channel_scales.astype(np.float32)[None, :]
    if cfg.act_format == "int8" and act_scale is not None:
        y = y * np.asarray(act_scale, dtype=np.float32)[:, None]
    return y.astype(np.float32)


def tile_cycles(k: int, cfg: ArrayConfig, first: bool = False) -> int:
    """Compute cycles of one output tile (module docstring): the serializer's schedule."""
    d = cfg.dequant_cycles
    total = 0
    for g, length in enumerate(group_lengths(k, cfg.group_size)):
        busy = cfg.terms * -(-length // cfg.lanes)
        need = d + 2 if g == 0 and not first else (0 if g == 0 else d)
        total += max(busy, need)
    # A tile ends at least R cycles after the previous one: a column's drain takes one output
    # per cycle in row order (ArrayDrain), so a PE's output never waits for the previous tile's.
    return total if first else max(total, cfg.rows)


def gemm_cycles(m: int, n: int, k: int, cfg: ArrayConfig, fill: int | None = None) -> dict:
    """Cycle-count model of a whole GEMM on the array (module docstring).

    ``fill`` is the array's pipeline latency (first input to first output), added once; by
    default :attr:`ArrayConfig.fill`. Returns ``cycles`` (first input accepted to last output
    taken, output always ready), ``compute_cycles`` (the serializer's schedule), ``tiles``,
    ``busy_pe_cycles`` (term-cycles of real outputs: ``M * N * T * sum_g ceil(len_g / L)``)
    and ``utilization`` (busy over ``R * C * cycles``).
    """
    if fill is None:
        fill = cfg.fill
    tiles = -(-m // cfg.rows) * -(-n // cfg.cols)
    first = tile_cycles(k, cfg, first=True)
    rest = tile_cycles(k, cfg)
    outputs = cfg.rows * cfg.cols
    compute = first + (tiles - 1) * rest
    # The output port takes one result per cycle; a tile's results leave while the next tile
    # computes, so a tile costs max(compute, R * C) once the pipeline is full.
    steady = first + (tiles - 1) * max(rest, outputs)
    cycles = steady + fill + outputs
    busy = m * n * sum(-(-length // cfg.lanes) for length in group_lengths(k, cfg.group_size))
    busy *= cfg.terms
    return {"cycles": cycles, "compute_cycles": compute, "tiles": tiles,
            "busy_pe_cycles": busy, "utilization": busy / (outputs * cycles)}

"""Fixed-point cast unit: ``Q(Wi, Fi) -> Q(Wo, Fo)`` with ``ap_fixed`` rounding and overflow.

The golden twin is :func:`golden.fixedpoint.cast_fixed`; this unit equals it bit for bit.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.checks import check_bool, check_int
from bitmod.golden.fixedpoint import MAX_WIDTH, OVERFLOW_MODES, ROUNDING_MODES

from ..common import pipeline_enable, read_only

__all__ = ["FixedCast"]

# Fraction bits accepted, as in golden.fixedpoint.check_fixed_params.
MAX_FRAC = 64
# The golden model shifts in int64: the widened input must stay below 2**63.
MAX_WIDENED_BITS = 63


@read_only("in_width", "in_frac", "out_width", "out_frac", "rounding", "overflow", "signed",
           "in_signed")
class FixedCast(wiring.Component):
    """Cast ``Q(in_width, in_frac)`` to ``Q(out_width, out_frac)``: round first, then overflow.

    The input ``q`` denotes ``q * 2**-in_frac``; the output ``y`` denotes ``y * 2**-out_frac``.
    With ``k = in_frac - out_frac`` (bits dropped):

    * ``k <= 0`` (widening): ``v = q * 2**-k`` exactly, no rounding.
    * ``k > 0``: ``v = floor(q / 2**k) + inc`` where ``inc`` is the ``ap_fixed`` increment of
      ``rounding`` (TRN, TRN_ZERO, RND, RND_ZERO, RND_MIN_INF, RND_INF, RND_CONV) computed from
      the first dropped bit ``qb``, the OR ``r`` of the other dropped bits, the sign ``s`` and the
      kept LSB (see :mod:`golden.fixedpoint`). ``k`` may exceed ``in_width``: the dropped bits
      are then sign extension.
    * ``y = overflow(v)``: SAT clamps to ``[lo, hi]``, SAT_SYM to ``[-hi, hi]``, SAT_ZERO gives 0
      out of range, WRAP keeps the low ``out_width`` bits (two's complement if ``signed``).

    Equals ``golden.fixedpoint.cast_fixed(q, in_frac, out_width, out_frac, rounding, overflow,
    signed)`` for every input.

    Widths: the input is sign- (or zero-) extended to ``E = max(in_width, k) + 2`` bits so every
    dropped bit exists; the rounded value ``v`` has ``max(E - k, 2) + 1`` bits for ``k > 0``
    (floor plus a carry) and ``in_width - k`` bits for ``k <= 0``; neither can overflow.

    Latency and throughput: latency 2 cycles (stage 1 registers the rounded value ``v``, whose
    carry chain is the long path; stage 2 registers the overflow-handled output, a comparison
    and a multiplexer). One cast per cycle. The whole pipeline advances when
    ``o_stream.ready | ~o_stream.valid``, which is also ``i_stream.ready``.

    Parameters
    ----------
    in_width, out_width : int
        Total bits, 1..48 (the golden model's limit).
    in_frac, out_frac : int
        Fraction bits, -64..64 (may exceed the width or be negative, as in ``ap_fixed``).
        ``in_width + max(0, out_frac - in_frac)`` must be at most 63.
    rounding : str
        One of ``golden.fixedpoint.ROUNDING_MODES``; default ``"RND_CONV"`` (ties to even).
    overflow : str
        One of ``"SAT"``, ``"SAT_SYM"``, ``"SAT_ZERO"``, ``"WRAP"``. SAT_SYM needs a signed
        output of at least 2 bits.
    signed : bool
        Output signedness (and the input's, unless ``in_signed`` is given).
    in_signed : bool, optional
        Input signedness; defaults to ``signed``. A signed input cast to an unsigned output
        saturates negatives to 0 under SAT (a fused ReLU).

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"value": signed(in_width)})))
        Input ``q`` (``unsigned(in_width)`` if ``in_signed`` is false).
    o_stream : Out(stream.Signature(StructLayout({"value": signed(out_width)})))
        Output ``y`` (``unsigned(out_width)`` if ``signed`` is false).
    """

    def __init__(self, in_width: int = 16, in_frac: int = 8, out_width: int = 8, out_frac: int = 2,
                 rounding: str = "RND_CONV", overflow: str = "SAT", signed: bool = True,
                 in_signed: bool | None = None):
        self._in_width = check_int("in_width", in_width, 1, MAX_WIDTH)
        self._in_frac = check_int("in_frac", in_frac, -MAX_FRAC, MAX_FRAC)
        self._out_width = check_int("out_width", out_width, 1, MAX_WIDTH)
        self._out_frac = check_int("out_frac", out_frac, -MAX_FRAC, MAX_FRAC)
        if rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {ROUNDING_MODES}, not {rounding!r}")
        if overflow not in OVERFLOW_MODES:
            raise ValueError(f"overflow must be one of {OVERFLOW_MODES}, not {overflow!r}")
        self._signed = check_bool("signed", signed)
        self._in_signed = signed if in_signed is None else check_bool("in_signed", in_signed)
        if overflow == "SAT_SYM" and not signed:
            raise ValueError("overflow='SAT_SYM' needs a signed output (signed=False given)")
        if overflow == "SAT_SYM" and out_width < 2:
            raise ValueError(f"overflow='SAT_SYM' needs out_width >= 2, not {out_width}")
        widened = in_width + max(0, out_frac - in_frac)
        if widened > MAX_WIDENED_BITS:
            raise ValueError(f"out_frac={out_frac} widens the {in_width}-bit input to {widened} "
                             f"bits; at most {MAX_WIDENED_BITS} are supported")
        self._rounding = rounding
        self._overflow = overflow
        in_shape = _shape(self._in_signed, in_width)
        out_shape = _shape(signed, out_width)
        self._in_layout = data.StructLayout({"value": in_shape})
        self._out_layout = data.StructLayout({"value": out_shape})
        super().__init__({
            "i_stream": In(stream.Signature(self._in_layout)),
            "o_stream": Out(stream.Signature(self._out_layout)),
        })

    in_layout = property(lambda self: self._in_layout, doc="Layout of ``i_stream.payload``.")
    out_layout = property(lambda self: self._out_layout, doc="Layout of ``o_stream.payload``.")

    @property
    def latency(self) -> int:
        """Cycles from an accepted input to its output being valid (2)."""
        return 2

    @property
    def output_range(self) -> tuple[int, int]:
        """``(lo, hi)`` of the output integer after overflow handling."""
        if self._signed:
            hi = (1 << (self._out_width - 1)) - 1
            return (-hi if self._overflow == "SAT_SYM" else -hi - 1), hi
        return 0, (1 << self._out_width) - 1

    def _rounded(self, m: Module, q):
        """The rounded value ``v`` (before overflow) as a combinational expression."""
        k = self._in_frac - self._out_frac
        if k <= 0:
            return q << -k
        ext = Signal(signed(max(self._in_width, k) + 2))
        m.d.comb += ext.eq(q)
        floor_v = ext[k:].as_signed()
        qb = ext[k - 1]
        r = ext[:k - 1].any() if k > 1 else Const(0, 1)
        s = ext[-1]
        lsb = ext[k]
        inc = {
            "TRN": Const(0, 1),
            "TRN_ZERO": s & (qb | r),
            "RND": qb,
            "RND_ZERO": qb & (s | r),
            "RND_MIN_INF": qb & r,
            "RND_INF": qb & (~s | r),
            "RND_CONV": qb & (lsb | r),
        }[self._rounding]
        return floor_v + inc

    def _overflowed(self, v):
        lo, hi = self.output_range
        if self._overflow == "WRAP":
            return v[:self._out_width]
        out_of_range = (v > hi) | (v < lo)
        if self._overflow == "SAT_ZERO":
            return Mux(out_of_range, 0, v)
        return Mux(v > hi, hi, Mux(v < lo, lo, v))

    def elaborate(self, platform):
        m = Module()
        advance = pipeline_enable(m, self.i_stream, self.o_stream, self.latency)
        rounded = self._rounded(m, self.i_stream.payload.value)
        v = Signal(rounded.shape())
        with m.If(advance):
            m.d.sync += [v.eq(rounded), self.o_stream.payload.value.eq(self._overflowed(v))]
        return m


def _shape(is_signed: bool, width: int):
    return signed(width) if is_signed else unsigned(width)

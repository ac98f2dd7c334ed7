"""Dyadic requantizer: ``clamp(round(acc * b / 2**c) + zero_point)`` with per-item ``(b, c)``.

The golden twin is :func:`golden.requant.requantize`; this unit equals it bit for bit.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.checks import check_bool, check_choice, check_int
from bitmod.golden.requant import ROUNDING_RULES

from ..common import pipeline_enable, read_only

__all__ = ["Requantizer"]

MAX_OPERAND_WIDTH = 64
MAX_SHIFT_WIDTH = 8
# gemmlowp's fixed-point "one" of the multiplier is 2**31.
GEMMLOWP_POINT = 31


@read_only("acc_width", "b_width", "c_width", "out_width", "signed", "zero_point", "rounding")
class Requantizer(wiring.Component):
    """``q_out = clamp(round(acc * b / 2**c) + zero_point)``, ``(b, c)`` given with each item.

    Every input carries its accumulator ``acc`` and its dyadic multiplier ``b / 2**c``
    (per-channel scales ride along with the data; :func:`golden.requant.dyadic_from_scale`
    makes ``(b, c)`` from a float scale). The rounding rule is an elaboration parameter:

    * ``"hawq"``: round half to even of ``t / 2**c``, ``t = acc * b`` (HAWQ-V3).
    * ``"single"``: round half up, ``(t + 2**(c-1)) >> c`` (TFLITE_SINGLE_ROUNDING).
    * ``"gemmlowp"``: gemmlowp/TFLite double rounding. For ``c <= 31`` it is one round half up
      of ``t / 2**c`` (SRDHM of the pre-shifted accumulator); for ``c > 31`` first
      ``y = floor((t + 2**30) / 2**31)`` (SRDHM), then ``y / 2**(c-31)`` rounded half away from
      zero (RoundingDivideByPOT). SRDHM's saturation (``x == b == INT32_MIN``, ``x`` the
      pre-shifted accumulator) is reproduced: it is exactly the case ``b == INT32_MIN`` and a
      first-rounding result of ``2**31``, which becomes ``2**31 - 1``.

    Then ``zero_point`` is added and the sum clamped to ``[-2**(w-1), 2**(w-1) - 1]`` (signed)
    or ``[0, 2**w - 1]`` (unsigned), ``w = out_width``.

    Widths: the product ``t`` has ``P = acc_width + b_width`` bits (``|t| <= 2**(P-2)``). The
    rounding shifter works on ``P`` bits: ``r = t >> c`` plus a guard bit ``qb`` (bit ``c-1``)
    and a sticky bit (OR of bits ``0 .. c-2``, masked by ``(2**c - 1) >> 1``); the rounded
    value ``r + inc`` still fits ``P`` bits because for ``c >= 1`` ``|r| <= 2**(P-3)`` and for
    ``c = 0`` nothing is dropped. Then ``P + 1`` bits for the zero-point sum before the clamp.
    Any ``c`` up to ``2**c_width - 1`` is accepted; shifts of ``P`` or more leave the sign.

    Latency and throughput: 3 cycles for ``"hawq"`` and ``"single"`` (1: multiply, which Yosys
    maps to DSP blocks; 2: shift and round; 3: zero point and clamp); 4 for ``"gemmlowp"`` (an
    extra stage after the multiply computes SRDHM's rounding at bit 31 and selects the operand and
    amount of the shared shifter). One result per cycle. The pipeline advances when
    ``o_stream.ready | ~o_stream.valid``, which is also ``i_stream.ready``.

    Parameters
    ----------
    acc_width : int
        Accumulator bits (signed), 2..64; default 32.
    b_width : int
        Multiplier bits (signed), 2..64; default 32, i.e. 31 magnitude bits + sign: the
        ``b`` of :func:`golden.requant.dyadic_from_scale` lies in ``[2**30, 2**31)``.
    c_width : int
        Shift field bits (unsigned), 1..8; default 6 (``c`` in 0..63).
    out_width : int
        Output bits, 1..``acc_width + b_width``; default 8.
    signed : bool
        Signed (default) or unsigned output.
    zero_point : int
        Constant added before the clamp; must lie in the output range. Default 0.
    rounding : {"hawq", "gemmlowp", "single"}
        Rounding rule; default ``"hawq"``. ``"gemmlowp"`` needs ``acc_width <= 32`` and
        ``b_width <= 32`` (its saturation is defined on int32).

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"acc": signed(acc_width),
                                               "b": signed(b_width), "c": unsigned(c_width)})))
        Accumulator and its multiplier ``b / 2**c``.
    o_stream : Out(stream.Signature(StructLayout({"value": signed(out_width)})))
        Requantized value (``unsigned(out_width)`` if ``signed`` is false).
    """

    def __init__(self, acc_width: int = 32, b_width: int = 32, c_width: int = 6,
                 out_width: int = 8, signed: bool = True, zero_point: int = 0,
                 rounding: str = "hawq"):
        self._acc_width = check_int("acc_width", acc_width, 2, MAX_OPERAND_WIDTH)
        self._b_width = check_int("b_width", b_width, 2, MAX_OPERAND_WIDTH)
        self._c_width = check_int("c_width", c_width, 1, MAX_SHIFT_WIDTH)
        self._out_width = check_int("out_width", out_width, 1, acc_width + b_width)
        self._signed = check_bool("signed", signed)
        check_choice("rounding", rounding, ROUNDING_RULES)
        if rounding == "gemmlowp":
            for name, width in (("acc_width", acc_width), ("b_width", b_width)):
                if width > 32:
                    raise ValueError(f"rounding='gemmlowp' is defined on int32: {name} must be "
                                     f"at most 32, not {width}")
        self._rounding = rounding
        lo, hi = self.output_range
        zero_point = check_int("zero_point", zero_point)
        if not lo <= zero_point <= hi:
            raise ValueError(f"zero_point must lie in the output range [{lo}, {hi}], "
                             f"not {zero_point}")
        self._zero_point = zero_point
        self._in_layout = data.StructLayout({
            "acc": _shape(True, acc_width),
            "b": _shape(True, b_width),
            "c": unsigned(c_width),
        })
        self._out_layout = data.StructLayout({"value": _shape(signed, out_width)})
        super().__init__({
            "i_stream": In(stream.Signature(self._in_layout)),
            "o_stream": Out(stream.Signature(self._out_layout)),
        })

    in_layout = property(lambda self: self._in_layout, doc="Layout of ``i_stream.payload``.")
    out_layout = property(lambda self: self._out_layout, doc="Layout of ``o_stream.payload``.")

    @property
    def product_width(self) -> int:
        """Bits of ``acc * b``: ``acc_width + b_width``."""
        return self._acc_width + self._b_width

    @property
    def latency(self) -> int:
        """Cycles from an accepted input to its output being valid (3; 4 for gemmlowp)."""
        return 4 if self._rounding == "gemmlowp" else 3

    @property
    def output_range(self) -> tuple[int, int]:
        """``(lo, hi)`` of the clamp."""
        if self._signed:
            return -(1 << (self._out_width - 1)), (1 << (self._out_width - 1)) - 1
        return 0, (1 << self._out_width) - 1

    def _round_shift(self, m: Module, src, sh, rule):
        """``src / 2**sh`` rounded by ``rule`` (a dict of rule name -> select bit)."""
        width = self.product_width
        guarded = Signal(signed(width + 1))
        m.d.comb += guarded.eq((src << 1) >> sh)
        qb = guarded[0]
        r = guarded[1:].as_signed()
        # Bits 0 .. sh-2 of src lie below the guard bit: bits 1.. of a mask of sh ones. One bit
        # more than src, so that for sh > width the sign bit counts as dropped too.
        ones = Signal(width + 1)
        m.d.comb += ones.eq((Const(1, 1) << sh) - 1)
        sticky = (src & ones[1:]).any()
        sign = src[-1]
        incs = {
            "hawq": qb & (r[0] | sticky),
            "half_up": qb,
            "away": qb & (~sign | sticky),
        }
        inc = Const(0, 1)
        for name, select in rule.items():
            inc = inc | (select & incs[name])
        return r + inc

    def elaborate(self, platform):
        m = Module()
        width = self.product_width
        advance = pipeline_enable(m, self.i_stream, self.o_stream, self.latency)
        payload = self.i_stream.payload
        gemmlowp = self._rounding == "gemmlowp"

        # Stage 1: the multiply.
        t = Signal(signed(width))
        c1 = Signal(self._c_width)
        b_min1 = Signal()
        b_is_min = (payload.b == -(1 << GEMMLOWP_POINT)) if self._b_width == 32 else Const(0, 1)
        with m.If(advance):
            m.d.sync += [t.eq(payload.acc * payload.b), c1.eq(payload.c), b_min1.eq(b_is_min)]

        if gemmlowp:
            # Stage 2: SRDHM's first rounding at bit 31 and the shifter's operand and amount.
            src = Signal(signed(width))
            sh = Signal(self._c_width)
            second = Signal()
            b_min2 = Signal()
            ext = Signal(signed(max(width, GEMMLOWP_POINT + 2)))
            m.d.comb += ext.eq(t)
            y = Signal(signed(ext.shape().width - GEMMLOWP_POINT + 1))
            m.d.comb += y.eq(ext[GEMMLOWP_POINT:].as_signed() + ext[GEMMLOWP_POINT - 1])
            y_sat = Mux(b_min1 & (y == (1 << GEMMLOWP_POINT)), (1 << GEMMLOWP_POINT) - 1, y)
            is_second = c1 > GEMMLOWP_POINT
            with m.If(advance):
                m.d.sync += [
                    second.eq(is_second),
                    src.eq(Mux(is_second, y_sat, t)),
                    sh.eq(Mux(is_second, c1 - GEMMLOWP_POINT, c1)),
                    b_min2.eq(b_min1),
                ]
            rounded = self._round_shift(m, src, sh, {"half_up": ~second, "away": second})
            saturate = b_min2 & ~second & (rounded == (1 << GEMMLOWP_POINT))
            rounded = Mux(saturate, (1 << GEMMLOWP_POINT) - 1, rounded)
        else:
            rule = {"hawq": Const(1, 1)} if self._rounding == "hawq" else {"half_up": Const(1, 1)}
            rounded = self._round_shift(m, t, c1, rule)

        # Shift-and-round stage.
        z = Signal(signed(width))
        with m.If(advance):
            m.d.sync += z.eq(rounded)

        # Last stage: zero point and clamp.
        lo, hi = self.output_range
        total = Signal(signed(width + 1))
        m.d.comb += total.eq(z + self._zero_point)
        with m.If(advance):
            m.d.sync += self.o_stream.payload.value.eq(
                Mux(total > hi, hi, Mux(total < lo, lo, total)))
        return m


def _shape(is_signed: bool, width: int):
    return signed(width) if is_signed else unsigned(width)

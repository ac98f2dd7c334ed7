"""Wide fixed-point accumulator to float conversion (round to nearest even).

Bit-exact twin: :func:`golden.minifloat_arith.to_float_code`.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import formats
from bitmod.golden.checks import check_int
from bitmod.golden.minifloat_arith import TO_FLOAT_LATENCY

from ..common import pipeline_enable, read_only

__all__ = ["ToFloat"]

# The golden twin computes in 64-bit integers; wider accumulators would have no reference.
MAX_IN_WIDTH = 64
MAX_EXP_WIDTH = 16
MAX_ABS_IN_FRAC = 4096


@read_only("in_width", "in_frac", "out_format", "exp_width", "round_carry_in", "in_layout",
           "out_layout")
class ToFloat(wiring.Component):
    """Round ``acc * 2**(exp_offset - in_frac)`` to a float code, ties to even.

    With ``n = bit_length(|acc|)``, ``e = n - 1 + exp_offset - in_frac`` and the output format's
    E exponent bits, M mantissa bits and bias (see :mod:`golden.minifloat_arith`)::

        eb       = max(e + bias, 1)
        k        = RNE(|acc| * 2**(exp_offset - in_frac - (eb - bias - M)))   (<= 2**(M+1))
        code_mag = ((eb - 1) << M) + k          a round-up carry moves to the next binade
        code     = sign << (E + M) | code_mag

    Overflow (``code_mag`` above the largest finite code): ``ieee`` formats (fp32, fp16, bf16,
    fp8_e5m2) give +-Inf (IEEE RNE: ``|value| >= max + ulp/2``); formats without Inf (fp8_e4m3,
    FP6, FP4) saturate to +-max, so a converted activation is the nearest representable value
    rather than E4M3's NaN code. Values below the normal range round to subnormals or to zero;
    ``acc == 0`` gives +0, a negative value that rounds to zero gives -0.

    Pipeline (one register per stage): magnitude and sign -> leading-one detector (priority
    encoder) -> normalising left shift and exponent adjust -> subnormal right shift and round ->
    code assembly -> overflow and the code. With ``round_carry_in`` stage 4 registers only the
    round-to-nearest-even decision and stage 5 adds it as the carry-in of its addition: no
    carry chain after the shift (the array's drain takes this form: on the iCE40 and at
    100 MHz on the ECP5 the shift and the addition together were a critical path). The codes
    are the same. Latency 6
    cycles, throughput one conversion per cycle; the whole pipeline stalls while ``o_stream``
    is valid and not ready.

    Widths: the leading-one position needs ``ceil(log2(in_width + 1))`` bits; the normalised
    significand keeps ``M + 2`` bits (significand and guard) plus a sticky bit; the biased
    exponent spans ``[exp_offset_min - in_frac + bias - 1, in_width - 1 + exp_offset_max -
    in_frac + bias]``.

    Parameters
    ----------
    in_width : int
        Width of the two's-complement ``acc`` field, 2..64.
    in_frac : int
        Fraction bits of ``acc``, -4096..4096.
    out_format : str
        A :func:`golden.formats.get` minifloat with subnormals: ``fp32``, ``fp16``, ``bf16``,
        ``fp8_e4m3``, ``fp8_e5m2``, ``fp6_e3m2``, ``fp6_e2m3``, ``fp4_e2m1``, ``fp_e<E>m<M>...``.
    exp_width : int
        Width of the signed run-time ``exp_offset`` field, 1..16 (default 8).
    round_carry_in : bool
        Add the round-up in stage 5 as a carry-in (pipeline above; default False).

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"acc": signed(in_width),
    "exp_offset": signed(exp_width)})))
        Value to convert.
    o_stream : Out(stream.Signature(StructLayout({"code": unsigned(out_bits)})))
        Float code of ``out_format``.
    """

    def __init__(self, in_width: int = 32, in_frac: int = 0, out_format: str = "fp32",
                 exp_width: int = 8, round_carry_in: bool = False):
        if not isinstance(round_carry_in, bool):
            raise TypeError(f"round_carry_in must be a bool, not {round_carry_in!r}")
        self._round_carry_in = round_carry_in
        self._in_width = check_int("in_width", in_width, 2, MAX_IN_WIDTH)
        self._in_frac = check_int("in_frac", in_frac, -MAX_ABS_IN_FRAC, MAX_ABS_IN_FRAC)
        self._exp_width = check_int("exp_width", exp_width, 1, MAX_EXP_WIDTH)
        if not isinstance(out_format, str):
            raise TypeError(f"out_format must be a format name (str), not {out_format!r}")
        try:
            fmt = formats.get(out_format)
        except ValueError as exc:
            raise ValueError(f"out_format={out_format!r}: {exc}") from None
        if not isinstance(fmt, formats.MiniFloat):
            raise ValueError(f"out_format={out_format!r} is a {type(fmt).__name__}; the "
                             "converter produces minifloat codes")
        if not fmt.subnormals:
            raise ValueError(f"out_format={out_format!r} flushes subnormals; the converter "
                             "implements IEEE gradual underflow only")
        self._out_format = out_format
        self._fmt = fmt
        self._in_layout = data.StructLayout({"acc": signed(self._in_width),
                                             "exp_offset": signed(self._exp_width)})
        self._out_layout = data.StructLayout({"code": unsigned(fmt.bits)})
        super().__init__({
            "i_stream": In(stream.Signature(self._in_layout)),
            "o_stream": Out(stream.Signature(self._out_layout)),
        })

    @property
    def latency(self) -> int:
        """:data:`golden.minifloat_arith.TO_FLOAT_LATENCY` (the six stages above)."""
        return TO_FLOAT_LATENCY

    def elaborate(self, platform):
        m = Module()
        E, M, bias = self._fmt.exp_bits, self._fmt.man_bits, self._fmt.bias
        W = self._in_width
        en = pipeline_enable(m, self.i_stream, self.o_stream, self.latency)
        payload = self.i_stream.payload

        # Stage 1: sign and magnitude (|-2**(W-1)| = 2**(W-1) still fits W unsigned bits).
        s1_neg = Signal(reset_less=True)
        s1_mag = Signal(W, reset_less=True)
        s1_xo = Signal(signed(self._exp_width), reset_less=True)
        with m.If(en):
            m.d.sync += [
                s1_neg.eq(payload.acc < 0),
                s1_mag.eq(Mux(payload.acc < 0, -payload.acc, payload.acc)),
                s1_xo.eq(payload.exp_offset),
            ]

        # Stage 2: leading-one detector; the last matching If wins, so n is the highest one + 1.
        n = Signal(range(W + 1))
        for i in range(W):
            with m.If(s1_mag[i]):
                m.d.comb += n.eq(i + 1)
        s2_neg = Signal(reset_less=True)
        s2_n = Signal.like(n)
        s2_lz = Signal(range(W + 1), reset_less=True)
        s2_mag = Signal.like(s1_mag)
        s2_xo = Signal.like(s1_xo)
        with m.If(en):
            m.d.sync += [s2_neg.eq(s1_neg), s2_n.eq(n), s2_lz.eq(W - n),
                         s2_mag.eq(s1_mag), s2_xo.eq(s1_xo)]

        # Stage 3: normalise (leading one to the MSB), keep M + 2 bits and a sticky bit, and
        # compute the biased exponent and the extra right shift of the subnormal range.
        xo_min, xo_max = -(1 << (self._exp_width - 1)), (1 << (self._exp_width - 1)) - 1
        ebias_lo = -1 + xo_min - self._in_frac + bias
        ebias_hi = W - 1 + xo_max - self._in_frac + bias
        ebias = Signal(range(min(ebias_lo, 0), max(ebias_hi, 1) + 1))
        m.d.comb += ebias.eq(s2_n + s2_xo + (bias - self._in_frac - 1))
        norm = Signal(W)
        m.d.comb += norm.eq(s2_mag << s2_lz)
        keep = M + 2
        wide = Cat(Const(0, max(keep - W, 0)), norm)  # at least M + 2 bits, leading one on top
        top_bits = wide[len(wide) - keep:]
        sticky0 = wide[:len(wide) - keep].any() if len(wide) > keep else Const(0, 1)
        # Datapath registers need no reset: the valid chain says what they hold.
        s3_neg, s3_zero, s3_sticky = (Signal(reset_less=True) for _ in range(3))
        s3_top = Signal(keep, reset_less=True)
        s3_d = Signal(range(keep + 1), reset_less=True)
        ebc_max = (1 << E) + 1  # any larger exponent overflows whatever the significand is
        s3_ebc = Signal(range(1, ebc_max + 1), reset_less=True)
        with m.If(en):
            m.d.sync += [
                s3_neg.eq(s2_neg), s3_zero.eq(s2_n == 0), s3_top.eq(top_bits),
                s3_sticky.eq(sticky0),
                s3_d.eq(Mux(ebias >= 1, 0, Mux(1 - ebias > keep, keep, 1 - ebias))),
                s3_ebc.eq(Mux(ebias < 1, 1, Mux(ebias > ebc_max, ebc_max, ebias))),
            ]

        # Stage 4: shift right into the subnormal range and round to nearest even.
        shifted = Signal(2 * keep)
        m.d.comb += shifted.eq(Cat(Const(0, keep), s3_top) >> s3_d)
        k_floor = shifted[keep + 1:]
        guard = shifted[keep]
        sticky = shifted[:keep].any() | s3_sticky
        round_up = guard & (sticky | k_floor[0])
        if self._round_carry_in:
            # The round-up is added in stage 5 (the carry-in of its addition): no carry chain
            # here, after the shift (an iCE40 critical path).
            s4_neg, s4_zero, s4_round = (Signal(reset_less=True) for _ in range(3))
            s4_k = Signal(M + 1, reset_less=True)
            s4_ebc = Signal.like(s3_ebc)
            with m.If(en):
                m.d.sync += [s4_neg.eq(s3_neg), s4_zero.eq(s3_zero), s4_k.eq(k_floor),
                             s4_round.eq(round_up), s4_ebc.eq(s3_ebc)]
            addends = (s4_k, s4_round)
        else:
            s4_neg, s4_zero = Signal(reset_less=True), Signal(reset_less=True)
            s4_k = Signal(M + 2, reset_less=True)
            s4_ebc = Signal.like(s3_ebc)
            with m.If(en):
                m.d.sync += [s4_neg.eq(s3_neg), s4_zero.eq(s3_zero),
                             s4_k.eq(k_floor + round_up), s4_ebc.eq(s3_ebc)]
            addends = (s4_k,)

        # Stage 5: assemble the code; the addition carries a round-up into the exponent.
        if self._fmt.specials == "ieee":
            cmax = (((1 << E) - 1) << M) - 1
            over_code = ((1 << E) - 1) << M
        elif self._fmt.specials == "fn":
            cmax = over_code = (1 << (E + M)) - 2
        else:
            cmax = over_code = (1 << (E + M)) - 1
        code_mag = Signal(range(((ebc_max - 1) << M) + (1 << (M + 1)) + 1))
        total = (s4_ebc - 1) << M
        for addend in addends:  # left to right: the round-up is the last addition's carry-in
            total = total + addend
        s5_neg, s5_zero = Signal(reset_less=True), Signal(reset_less=True)
        s5_mag = Signal.like(code_mag, reset_less=True)
        with m.If(en):
            m.d.sync += [s5_neg.eq(s4_neg), s5_zero.eq(s4_zero), s5_mag.eq(code_mag)]
        m.d.comb += code_mag.eq(total)

        # Stage 6: the overflow compare and the code (a second carry chain, so a stage of its
        # own: after the addition's it was an ECP5 critical path at 100 MHz).
        out = Signal(self._out_layout, reset_less=True)  # data: the valid chain says when
        with m.If(en):
            with m.If(s5_zero):
                m.d.sync += out.code.eq(0)
            with m.Elif(s5_mag > cmax):
                m.d.sync += out.code.eq(Cat(Const(over_code, E + M), s5_neg))
            with m.Else():
                m.d.sync += out.code.eq(Cat(s5_mag[:E + M], s5_neg))
        m.d.comb += self.o_stream.payload.eq(out)
        return m

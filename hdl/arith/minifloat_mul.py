"""Exact minifloat x minifloat multiplier producing a two's-complement fixed-point product.

Bit-exact twin: :func:`golden.minifloat_arith.exact_product`.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import formats
from bitmod.golden.minifloat_arith import EXACT_PRODUCT_LATENCY

from ..common import pipeline_enable, read_only

__all__ = ["MinifloatMultiplier"]

MAX_OPERAND_BITS = 8


@dataclass(frozen=True)
class _Operand:
    """Field geometry of one operand format (read from its golden.formats definition)."""

    name: str
    bits: int
    is_float: bool
    exp_bits: int = 0
    man_bits: int = 0
    bias: int = 0
    specials: str = "finite"
    subnormals: bool = True
    signed: bool = True

    @property
    def frac_bits(self) -> int:
        """F: finite values are integer multiples of 2**-F (min-subnormal exponent)."""
        return self.bias + self.man_bits - 1 if self.is_float else 0

    @property
    def sig_bits(self) -> int:
        """Width of the unsigned significand (or integer magnitude)."""
        return self.man_bits + 1 if self.is_float else self.bits

    @property
    def top_exp(self) -> int:
        return (1 << self.exp_bits) - 1

    def max_finite_fields(self) -> tuple[int, int]:
        """(e, m) of the largest finite magnitude."""
        top, mmask = self.top_exp, (1 << self.man_bits) - 1
        if self.specials == "ieee":
            return top - 1, mmask
        if self.specials == "fn":
            return (top, mmask - 1) if self.man_bits >= 1 else (top - 1, 0)
        return top, mmask

    @property
    def max_shift(self) -> int:
        return max(self.max_finite_fields()[0] - 1, 0) if self.is_float else 0

    @property
    def max_mag(self) -> int:
        """Largest finite ``|value| * 2**F``."""
        if not self.is_float:
            return (1 << (self.bits - 1)) if self.signed else (1 << self.bits) - 1
        e, m = self.max_finite_fields()
        sig = m | (1 << self.man_bits) if e != 0 else (m if self.subnormals else 0)
        return sig << max(e - 1, 0)


def operand_geometry(param: str, name) -> _Operand:
    """Validate a multiplier operand format name and return its field geometry."""
    if not isinstance(name, str):
        raise TypeError(f"{param} must be a format name (str), not {name!r}")
    try:
        fmt = formats.get(name)
    except ValueError as exc:
        raise ValueError(f"{param}={name!r}: {exc}") from None
    if isinstance(fmt, formats.MiniFloat):
        op = _Operand(fmt.name, fmt.bits, True, fmt.exp_bits, fmt.man_bits, fmt.bias,
                      fmt.specials, fmt.subnormals)
    elif isinstance(fmt, formats.IntFormat):
        op = _Operand(fmt.name, fmt.bits, False, signed=fmt.signed)
    else:
        raise ValueError(f"{param}={name!r} is a {type(fmt).__name__}; the multiplier takes "
                         "minifloat or integer formats")
    if op.bits > MAX_OPERAND_BITS:
        raise ValueError(f"{param}={name!r} has {op.bits} bits; the multiplier takes formats of "
                         f"at most {MAX_OPERAND_BITS} bits")
    if op.max_mag == 0:
        raise ValueError(f"{param}={name!r} has no nonzero finite value")
    return op


def _decode(m: Module, op: _Operand, code, tag: str):
    """Combinational decode: (neg, sig, shift, nan, inf) with value = +-(sig << shift) * 2**-F."""
    neg = Signal(name=f"{tag}_neg")
    sig = Signal(op.sig_bits, name=f"{tag}_sig")
    shift = Signal(range(op.max_shift + 1), name=f"{tag}_shift")
    nan = Signal(name=f"{tag}_nan")
    inf = Signal(name=f"{tag}_inf")
    if not op.is_float:
        if op.signed:
            m.d.comb += [neg.eq(code[-1]), sig.eq(Mux(code[-1], -code, code))]
        else:
            m.d.comb += sig.eq(code)
        return neg, sig, shift, nan, inf
    E, M = op.exp_bits, op.man_bits
    e = code[M:M + E]
    man = code[:M] if M else Const(0, 1)
    normal = e != 0
    m.d.comb += neg.eq(code[-1])
    hidden = normal if op.subnormals else Const(1, 1)
    sig_value = man | (hidden << M) if M else hidden
    if not op.subnormals:
        sig_value = Mux(normal, sig_value, 0)
    is_top = e == op.top_exp
    if op.specials == "ieee":
        m.d.comb += [nan.eq(is_top & (man != 0)), inf.eq(is_top & (man == 0))]
    elif op.specials == "fn":
        m.d.comb += nan.eq(is_top & (man == (1 << M) - 1))
    special = nan | inf
    m.d.comb += [
        sig.eq(Mux(special, 0, sig_value)),
        shift.eq(Mux(normal & ~special, e - 1, 0)),
    ]
    return neg, sig, shift, nan, inf


@read_only("a_format", "b_format", "p_width", "in_layout", "out_layout")
class MinifloatMultiplier(wiring.Component):
    """Exact product of two minifloat (or small integer) codes as a fixed-point integer.

    Computes, for finite operands (module doc of :mod:`golden.minifloat_arith`)::

        P = (-1)**(s_a ^ s_b) * (sig_a << sh_a) * (sig_b << sh_b)
        a * b = P * 2**-F_out,      F_out = (bias_a + man_a - 1) + (bias_b + man_b - 1)

    with ``sig = 2**M + m`` (normal) or ``m`` (subnormal) and ``sh = max(e, 1) - 1``; an integer
    operand has ``sig = |value|``, ``sh = 0`` and contributes 0 to ``F_out``. ``P`` is exact for
    every pair of finite codes. Its width is::

        p_width = bit_length(max_mag_a * max_mag_b) + 1
        max_mag = (2**M + m_max) << (e_max - 1)     (largest finite value * 2**F)

    e.g. E4M3 x E4M3: 229376**2 -> 37 bits; E5M2 x E5M2: (7 << 29)**2 -> 65 bits.
    Specials: ``nan`` = a NaN operand or Inf x 0; ``inf`` = Inf x nonzero; ``P = 0`` whenever
    ``nan`` or ``inf`` is set; ``neg = s_a ^ s_b`` always (sign of an Inf or a zero product).

    Pipeline: decode -> significand multiply -> shift into place and negate, one register per
    stage. Latency 3 cycles, throughput one product per cycle; the whole pipeline stalls while
    ``o_stream`` is valid and not ready.

    Parameters
    ----------
    a_format, b_format : str
        Names of :func:`golden.formats.get` minifloats (any ``MiniFloat`` of at most 8 bits:
        ``fp8_e4m3``, ``fp8_e5m2``, ``fp6_e3m2``, ``fp6_e2m3``, ``fp4_e2m1``, ``fp3``, ``fp4``,
        ``fp_e<E>m<M>...``) or integer formats ``int<B>`` / ``uint<B>`` (B <= 8).

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"a": a_bits, "b": b_bits})))
        Operand codes.
    o_stream : Out(stream.Signature(StructLayout({"p": signed(p_width), "nan": 1, "inf": 1,
    "neg": 1})))
        Fixed-point product and flags.
    """

    def __init__(self, a_format: str = "fp8_e4m3", b_format: str = "fp8_e4m3"):
        self._a = operand_geometry("a_format", a_format)
        self._b = operand_geometry("b_format", b_format)
        self._a_format, self._b_format = a_format, b_format
        self._p_width = (self._a.max_mag * self._b.max_mag).bit_length() + 1
        self._in_layout = data.StructLayout({"a": unsigned(self._a.bits),
                                             "b": unsigned(self._b.bits)})
        self._out_layout = data.StructLayout({"p": signed(self._p_width), "nan": 1, "inf": 1,
                                              "neg": 1})
        super().__init__({
            "i_stream": In(stream.Signature(self._in_layout)),
            "o_stream": Out(stream.Signature(self._out_layout)),
        })

    @property
    def frac_bits(self) -> int:
        """``F_out``: the product is ``p * 2**-frac_bits``."""
        return self._a.frac_bits + self._b.frac_bits

    @property
    def latency(self) -> int:
        """:data:`golden.minifloat_arith.EXACT_PRODUCT_LATENCY` (the three stages below)."""
        return EXACT_PRODUCT_LATENCY

    def elaborate(self, platform):
        m = Module()
        a_op, b_op = self._a, self._b
        en = pipeline_enable(m, self.i_stream, self.o_stream, self.latency)

        # Stage 1: decode both operands and resolve the special cases.
        a_neg, a_sig, a_sh, a_nan, a_inf = _decode(m, a_op, self.i_stream.payload.a, "a")
        b_neg, b_sig, b_sh, b_nan, b_inf = _decode(m, b_op, self.i_stream.payload.b, "b")
        s1_sig_a = Signal.like(a_sig)
        s1_sig_b = Signal.like(b_sig)
        s1_shift = Signal(range(a_op.max_shift + b_op.max_shift + 1))
        s1_neg, s1_nan, s1_inf = Signal(), Signal(), Signal()
        a_zero = (a_sig == 0) & ~a_nan & ~a_inf
        b_zero = (b_sig == 0) & ~b_nan & ~b_inf
        nan = a_nan | b_nan | (a_inf & b_zero) | (b_inf & a_zero)
        with m.If(en):
            m.d.sync += [
                s1_sig_a.eq(a_sig), s1_sig_b.eq(b_sig), s1_shift.eq(a_sh + b_sh),
                s1_neg.eq(a_neg ^ b_neg), s1_nan.eq(nan), s1_inf.eq((a_inf | b_inf) & ~nan),
            ]

        # Stage 2: multiply the significands (at most 8 x 8 bits).
        s2_prod = Signal(a_op.sig_bits + b_op.sig_bits)
        s2_shift = Signal.like(s1_shift)
        s2_neg, s2_nan, s2_inf = Signal(), Signal(), Signal()
        with m.If(en):
            m.d.sync += [
                s2_prod.eq(s1_sig_a * s1_sig_b), s2_shift.eq(s1_shift),
                s2_neg.eq(s1_neg), s2_nan.eq(s1_nan), s2_inf.eq(s1_inf),
            ]

        # Stage 3: shift into the fixed-point position and apply the sign.
        out = Signal(self._out_layout)
        mag = Signal(self._p_width - 1)
        m.d.comb += mag.eq(s2_prod << s2_shift)
        with m.If(en):
            m.d.sync += [
                out.p.eq(Mux(s2_neg, -mag, mag)),
                out.nan.eq(s2_nan), out.inf.eq(s2_inf), out.neg.eq(s2_neg),
            ]
        m.d.comb += self.o_stream.payload.eq(out)
        return m

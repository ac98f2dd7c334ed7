"""Baseline PEs with the bit-serial PE's stream contract: bit-parallel integer and minifloat.

Bit-exact twins: :mod:`golden.pe_baseline` (formulas, payload builders, output timing).

* :class:`IntPE`: ``L`` full ``weight_bits x act_width`` multipliers per cycle (written as ``*``
  so Yosys maps them to DSPs), an adder tree, a group accumulator and the bit-serial PE's
  dequantization (``gsum * scale`` MSB first over ``scale_bits`` cycles, shifted by ``exp`` into
  a wide output accumulator).
* :class:`MinifloatPE`: ``L`` exact minifloat multipliers
  (:class:`hdl.arith.minifloat_mul.MinifloatMultiplier`), an adder tree, an exact (Kulisch)
  block accumulator and a wide output accumulator with a per-block shift.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.checks import check_int
from bitmod.golden.pe_baseline import (
    MINIFLOAT_PE_LATENCY,
    int_pe_latency,
    int_pe_widths,
    minifloat_acc_width,
    minifloat_array_operands,
    minifloat_block_width,
)
from bitmod.hdl.arith.minifloat_mul import MinifloatMultiplier, operand_geometry
from bitmod.hdl.arith.products import LaneProducts, check_multipliers

from ..common import read_only

__all__ = ["IntPE", "MinifloatPE"]

MAX_EXP_BITS = 6


def _check_acc_width(acc_width, required: int) -> int:
    if acc_width is None:
        return required
    check_int("acc_width", acc_width, 1)
    if acc_width < required:
        raise ValueError(f"acc_width={acc_width} cannot hold the worst case; the parameters "
                         f"require {required} bits")
    return acc_width


def _tree_sum(values):
    """Balanced adder tree (combinational)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


@read_only("lanes", "weight_bits", "act_width", "group_size", "scale_bits", "exp_bits",
           "max_groups", "product_width", "group_width", "dequant_width", "acc_width",
           "multipliers", "in_layout", "out_layout")
class IntPE(wiring.Component):
    """Bit-parallel integer PE: ``L`` multiplies per cycle, group dequantization, exact output.

    Computes, per output ``j`` (one output per ``out_last``)::

        gsum_g = sum over the group's cycles and lanes of w_l * a_l       (signed x signed)
        acc_j  = sum_{g in output j} (gsum_g * scale_g) << exp_g

    ``scale_g`` is unsigned (``scale_bits = 0``: no scale, factor 1); both it and ``exp_g`` are
    read from the payload with ``group_last``.

    Widths (two's complement, tight: ``signed_width(lo, hi)`` = fewest bits holding
    ``[lo, hi]``)::

        p_min, p_max  = extreme products of int(weight_bits) x int(act_width)
                        (p_max = 2**(weight_bits-1) * 2**(act_width-1): both most negative)
        group_width   = signed_width(G * p_min, G * p_max)
        dequant_width = signed_width(G * p_min * s_max, G * p_max * s_max),  s_max = 2**sb - 1
        acc_width     = signed_width(N * G * p_min * s_max * 2**e_max, ... p_max ...)
                        N = max_groups, e_max = 2**exp_bits - 1

    e.g. int8 x int8, G = 128, sb = 8, exp_bits = 0, N = 256: 23, 30, 38 bits.

    Pipeline: stage 1 the ``L`` products (:class:`hdl.arith.products.LaneProducts`: one DSP
    block per product, or two per iCE40 UltraPlus ``SB_MAC16`` when the operands are at most
    8 bits), stage 2 the adder tree, then the group accumulator.
    A ``group_last`` payload leaving stage 2 hands ``gacc + sum`` to the dequantizer
    (``m = (m << 1) + (scale_bit ? gsum : 0)`` MSB first, ``scale_bits`` cycles, then one cycle
    to add ``m << exp`` into the output accumulator) and the group accumulator restarts at 0 in
    the same cycle. Latency ``4 + scale_bits`` cycles from the ``out_last`` payload to the
    output. Throughput one payload (``L`` MACs) per cycle as long as groups last at least
    ``scale_bits + 1`` cycles; shorter groups stall the input while the dequantizer is busy. A
    finished output waits in the output register; the pipeline stalls only if the next output
    is complete before the sink took it.

    Parameters
    ----------
    lanes : int
        ``L``, multiplies per cycle (1..64).
    weight_bits, act_width : int
        Signed operand widths (2..18; 18 is the widest an ECP5 MULT18X18D takes whole).
    group_size : int
        ``G``, the largest group in elements (a multiple of ``lanes``); shorter (ragged) groups
        are accepted.
    scale_bits : int
        Unsigned group scale width (0..16; 0: no scale multiply).
    exp_bits : int
        Group shift width (0..6).
    max_groups : int
        Most groups one output accumulates (sizes the output accumulator).
    acc_width : int, optional
        Output accumulator width; smaller than required raises ``ValueError``.
    multipliers : str
        How the products are built (:class:`hdl.arith.products.LaneProducts`): ``"auto"``
        (``SB_MAC16`` pairs on an iCE40 UltraPlus platform, ``*`` elsewhere), ``"generic"`` or
        ``"sb_mac16"``.

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"weights": ArrayLayout(signed(weight_bits),
    L), "acts": ArrayLayout(signed(act_width), L), "group_last": 1, "out_last": 1,
    "scale": unsigned(scale_bits), "exp": unsigned(exp_bits)})))
        One weight-step per cycle: raw two's-complement weight codes and activations.
    o_stream : Out(stream.Signature(StructLayout({"acc": signed(acc_width)})))
        One exact output accumulator per ``out_last``.
    """

    def __init__(self, lanes: int = 4, weight_bits: int = 8, act_width: int = 8,
                 group_size: int = 128, scale_bits: int = 8, exp_bits: int = 0,
                 max_groups: int = 256, acc_width: int | None = None,
                 multipliers: str = "auto"):
        self._lanes = check_int("lanes", lanes, 1, 64)
        self._weight_bits = check_int("weight_bits", weight_bits, 2, 18)
        self._act_width = check_int("act_width", act_width, 2, 18)
        self._group_size = check_int("group_size", group_size, 1)
        if group_size % lanes:
            raise ValueError(f"group_size={group_size} is not a multiple of lanes={lanes}")
        self._scale_bits = check_int("scale_bits", scale_bits, 0, 16)
        self._exp_bits = check_int("exp_bits", exp_bits, 0, MAX_EXP_BITS)
        self._max_groups = check_int("max_groups", max_groups, 1)

        widths = int_pe_widths(lanes=lanes, weight_bits=weight_bits, act_width=act_width,
                               group_size=group_size, scale_bits=scale_bits, exp_bits=exp_bits,
                               max_groups=max_groups)
        self._product_width = widths["product"]
        self._tree_width = widths["tree"]
        self._group_width = widths["group"]
        self._dequant_width = widths["dequant"]
        required = widths["acc"]
        self._acc_width = _check_acc_width(acc_width, required)
        self._multipliers = check_multipliers(multipliers, weight_bits, act_width)

        self._in_layout = data.StructLayout({
            "weights": data.ArrayLayout(signed(weight_bits), lanes),
            "acts": data.ArrayLayout(signed(act_width), lanes),
            "group_last": 1,
            "out_last": 1,
            "scale": unsigned(scale_bits),
            "exp": unsigned(exp_bits),
        })
        self._out_layout = data.StructLayout({"acc": signed(self._acc_width)})
        super().__init__({
            "i_stream": In(stream.Signature(self._in_layout)),
            "o_stream": Out(stream.Signature(self._out_layout)),
        })

    @classmethod
    def for_array(cls, config) -> IntPE:
        """The PE every position of an array built with ``config`` (a
        :class:`golden.gemm.ArrayConfig` of kind ``"int"``) holds: ``code_bits`` x
        ``act_width`` multiplies with the array's lanes, groups, scales, shifts and accumulator
        width."""
        return cls(lanes=config.lanes, weight_bits=config.geometry.code_bits,
                   act_width=config.act_width, group_size=config.group_size,
                   scale_bits=config.scale_bits, exp_bits=config.act_exp_bits,
                   max_groups=config.max_groups, acc_width=config.acc_width)

    @property
    def group_cycles(self) -> int:
        """Cycles of a full group: one weight-step (``L`` weights) per cycle."""
        return self._group_size // self._lanes

    macs_per_cycle = property(lambda self: self._lanes)

    @property
    def latency(self) -> int:
        """Cycles from the ``out_last`` payload accepted to the output valid."""
        return int_pe_latency(self._scale_bits)

    def elaborate(self, platform):
        m = Module()
        L, sb = self._lanes, self._scale_bits
        pay = self.i_stream.payload
        o_valid, o_ready = self.o_stream.valid, self.o_stream.ready

        dq_busy = Signal()
        dq_count = Signal(range(sb + 1))
        dq_gsum = Signal(signed(self._group_width))
        dq_scale = Signal(sb)
        dq_m = Signal(signed(self._dequant_width))
        dq_exp = Signal(self._exp_bits)
        dq_last = Signal()
        # The dequantizer finishes (adds into the output accumulator) unless that would
        # complete an output while the previous one still waits in the output register.
        fire = Signal()
        m.d.comb += fire.eq(dq_busy & (dq_count == 0) & ~(dq_last & o_valid & ~o_ready))
        can_load = ~dq_busy | fire

        s1_valid, s1_gl, s1_ol = Signal(), Signal(), Signal()
        s1_scale, s1_exp = Signal(sb), Signal(self._exp_bits)
        m.submodules.products = products = LaneProducts(
            L, self._weight_bits, self._act_width, self._multipliers)
        s1_prod = [products.p[i] for i in range(L)]
        s2_valid, s2_gl, s2_ol = Signal(), Signal(), Signal()
        s2_scale, s2_exp = Signal(sb), Signal(self._exp_bits)
        s2_sum = Signal(signed(self._tree_width))
        gacc = Signal(signed(self._group_width))

        en = Signal()
        m.d.comb += [en.eq(~(s2_valid & s2_gl & ~can_load)), self.i_stream.ready.eq(en),
                     products.en.eq(en), products.a.eq(pay.weights), products.b.eq(pay.acts)]
        with m.If(en):
            m.d.sync += [
                s1_valid.eq(self.i_stream.valid), s1_gl.eq(pay.group_last),
                s1_ol.eq(pay.out_last), s1_scale.eq(pay.scale), s1_exp.eq(pay.exp),
                s2_valid.eq(s1_valid), s2_gl.eq(s1_gl), s2_ol.eq(s1_ol),
                s2_scale.eq(s1_scale), s2_exp.eq(s1_exp), s2_sum.eq(_tree_sum(s1_prod)),
            ]
            with m.If(s2_valid):
                m.d.sync += gacc.eq(Mux(s2_gl, 0, gacc + s2_sum))

        load = en & s2_valid & s2_gl
        with m.If(load):
            m.d.sync += [dq_busy.eq(1), dq_count.eq(sb), dq_gsum.eq(gacc + s2_sum),
                         dq_exp.eq(s2_exp), dq_last.eq(s2_ol), dq_scale.eq(s2_scale)]
            m.d.sync += dq_m.eq(0 if sb else gacc + s2_sum)
        with m.Elif(fire):
            m.d.sync += dq_busy.eq(0)
        with m.Elif(dq_busy & (dq_count != 0)):
            m.d.sync += dq_count.eq(dq_count - 1)
            if sb:
                m.d.sync += [dq_m.eq((dq_m << 1) + Mux(dq_scale[-1], dq_gsum, 0)),
                             dq_scale.eq(dq_scale << 1)]

        oacc = Signal(signed(self._acc_width))
        out = Signal(self._out_layout)
        contrib = dq_m << dq_exp
        with m.If(o_valid & o_ready):
            m.d.sync += o_valid.eq(0)
        with m.If(fire):
            with m.If(dq_last):
                m.d.sync += [out.acc.eq(oacc + contrib), oacc.eq(0), o_valid.eq(1)]
            with m.Else():
                m.d.sync += oacc.eq(oacc + contrib)
        m.d.comb += self.o_stream.payload.eq(out)
        return m


@read_only("lanes", "a_format", "w_format", "block", "exp_bits", "max_blocks", "product_width",
           "block_width", "acc_width", "in_layout", "out_layout")
class MinifloatPE(wiring.Component):
    """Minifloat x minifloat PE with exact products and exact (Kulisch) accumulation.

    Computes, per output ``j`` (module doc of :mod:`golden.pe_baseline`)::

        bsum_b    = sum over the block's cycles and lanes of P(a_l, w_l)     exact
        acc_j     = sum_{b in output j} bsum_b << exp_b
        value_j   = acc_j * 2**-frac_bits  (* 2**e_min when exp_b is relative to e_min)
        invalid_j = a NaN or Inf operand (or Inf x 0) anywhere in output j

    with ``P * 2**-(F_a + F_w)`` the exact product of
    :class:`~hdl.arith.minifloat_mul.MinifloatMultiplier` (``F = bias + man_bits - 1`` of each
    minifloat; NaN/Inf products contribute 0). MX block scales: the PE only shifts; the two
    E8M0 scales of a block enter as ``exp_b = (scale_a - 127) + (scale_w - 127) - e_min``,
    computed where the tile's smallest exponent ``e_min`` is known (the array edge); an E8M0
    NaN scale must be flagged there.

    Widths, with ``max_mag`` the largest finite ``|value| * 2**F`` of a format::

        product_width = bit_length(max_mag_a * max_mag_w) + 1
        block_width   = bit_length(block * max_mag_a * max_mag_w) + 1
        acc_width     = bit_length(max_blocks * block * max_mag_a * max_mag_w
                                   * 2**(2**exp_bits - 1)) + 1

    For a 32-element block: E2M1 14, E2M3 18, E3M2 24, E4M3 42, E5M2 70 bits (docs/papers.md);
    int8 x int8 21 bits, one more than the published 20, because a raw int8 code may be -128
    and 32 * (-128)**2 = 2**19 (the published figure counts MXINT8's produced range +-127).

    Pipeline: multipliers (3 stages), adder tree, block accumulator, output register. Latency 6
    cycles from the ``out_last`` payload to the output; one payload (``L`` MACs) per cycle with
    no stall for any block length; the pipeline stalls only if an output is complete while the
    previous one still waits for the sink.

    Parameters
    ----------
    lanes : int
        ``L``, products per cycle (1..64).
    a_format, w_format : str
        Activation and weight formats: minifloats or ``int<B>``/``uint<B>`` of at most 8 bits
        (anything :class:`~hdl.arith.minifloat_mul.MinifloatMultiplier` takes).
    block : int
        Largest block in elements (a multiple of ``lanes``); shorter blocks are accepted.
    exp_bits : int
        Block shift width (0..6).
    max_blocks : int
        Most blocks one output accumulates.
    acc_width : int, optional
        Output accumulator width; smaller than required raises ``ValueError``.

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"acts": ArrayLayout(a_bits, L),
    "weights": ArrayLayout(w_bits, L), "group_last": 1, "out_last": 1,
    "exp": unsigned(exp_bits)})))
        ``L`` activation and ``L`` weight codes per cycle.
    o_stream : Out(stream.Signature(StructLayout({"acc": signed(acc_width), "invalid": 1})))
        One exact output accumulator per ``out_last``.
    """

    def __init__(self, lanes: int = 4, a_format: str = "fp8_e4m3",
                 w_format: str = "fp8_e4m3", block: int = 32, exp_bits: int = 0,
                 max_blocks: int = 256, acc_width: int | None = None):
        self._lanes = check_int("lanes", lanes, 1, 64)
        self._a = operand_geometry("a_format", a_format)
        self._w = operand_geometry("w_format", w_format)
        self._a_format, self._w_format = a_format, w_format
        self._block = check_int("block", block, 1)
        if block % lanes:
            raise ValueError(f"block={block} is not a multiple of lanes={lanes}")
        self._exp_bits = check_int("exp_bits", exp_bits, 0, MAX_EXP_BITS)
        self._max_blocks = check_int("max_blocks", max_blocks, 1)
        pmax = self._a.max_mag * self._w.max_mag
        self._product_width = pmax.bit_length() + 1
        self._tree_width = (lanes * pmax).bit_length() + 1
        self._block_width = minifloat_block_width(a_format, w_format, block)
        assert self._block_width == (block * pmax).bit_length() + 1
        self._acc_width = _check_acc_width(
            acc_width, minifloat_acc_width(a_format, w_format, block, max_blocks, exp_bits))

        self._in_layout = data.StructLayout({
            "acts": data.ArrayLayout(unsigned(self._a.bits), lanes),
            "weights": data.ArrayLayout(unsigned(self._w.bits), lanes),
            "group_last": 1,
            "out_last": 1,
            "exp": unsigned(exp_bits),
        })
        self._out_layout = data.StructLayout({"acc": signed(self._acc_width), "invalid": 1})
        super().__init__({
            "i_stream": In(stream.Signature(self._in_layout)),
            "o_stream": Out(stream.Signature(self._out_layout)),
        })

    @classmethod
    def for_array(cls, config) -> MinifloatPE:
        """The PE every position of an array built with ``config`` (a
        :class:`golden.gemm.ArrayConfig` of kind ``"minifloat"``) holds: ``int<act_width>``
        activations times the weight format's codes, one block per group, the row's group shift
        plus the group scale's exponent as ``exp``
        (:func:`golden.pe_baseline.minifloat_array_operands`)."""
        a_format, w_format, exp_bits = minifloat_array_operands(config)
        return cls(lanes=config.lanes, a_format=a_format, w_format=w_format,
                   block=config.group_size, exp_bits=exp_bits, max_blocks=config.max_groups,
                   acc_width=config.acc_width)

    @property
    def frac_bits(self) -> int:
        """Binary point of ``acc``: ``value = acc * 2**-frac_bits`` (``F_a + F_w``)."""
        return self._a.frac_bits + self._w.frac_bits

    @property
    def block_cycles(self) -> int:
        return self._block // self._lanes

    macs_per_cycle = property(lambda self: self._lanes)

    @property
    def latency(self) -> int:
        """Cycles from the ``out_last`` payload accepted to the output valid."""
        return MINIFLOAT_PE_LATENCY

    def elaborate(self, platform):
        m = Module()
        L = self._lanes
        pay = self.i_stream.payload
        o_valid, o_ready = self.o_stream.valid, self.o_stream.ready

        s5_valid, s5_ol, s5_inv = Signal(), Signal(), Signal()
        s5_exp = Signal(self._exp_bits)
        s5_bsum = Signal(signed(self._block_width))
        en = Signal()
        m.d.comb += en.eq(~(s5_valid & s5_ol & o_valid & ~o_ready))

        muls = []
        for i in range(L):
            mul = MinifloatMultiplier(self._a_format, self._w_format)
            m.submodules[f"mul{i}"] = mul
            muls.append(mul)
            m.d.comb += [
                mul.i_stream.valid.eq(self.i_stream.valid),
                mul.i_stream.payload.a.eq(pay.acts[i]),
                mul.i_stream.payload.b.eq(pay.weights[i]),
                mul.o_stream.ready.eq(en),
            ]
        # Every lane sees the same handshake, so lane 0's enable and valid stand for all; the
        # control fields ride a shift register with the multipliers' own enable.
        men = muls[0].i_stream.ready
        m.d.comb += self.i_stream.ready.eq(men)
        ctrl = [(Signal(name=f"c{k}_bl"), Signal(name=f"c{k}_ol"),
                 Signal(self._exp_bits, name=f"c{k}_exp")) for k in range(muls[0].latency)]
        with m.If(men):
            prev = (pay.group_last, pay.out_last, pay.exp)
            for regs in ctrl:
                m.d.sync += [r.eq(p) for r, p in zip(regs, prev, strict=True)]
                prev = regs
        c_bl, c_ol, c_exp = ctrl[-1]

        s4_valid, s4_bl, s4_ol, s4_bad = Signal(), Signal(), Signal(), Signal()
        s4_exp = Signal(self._exp_bits)
        s4_sum = Signal(signed(self._tree_width))
        bacc = Signal(signed(self._block_width))
        binv = Signal()
        with m.If(en):
            bad = 0
            for mul in muls:
                bad = bad | mul.o_stream.payload.nan | mul.o_stream.payload.inf
            m.d.sync += [
                s4_valid.eq(muls[0].o_stream.valid), s4_bl.eq(c_bl), s4_ol.eq(c_ol),
                s4_exp.eq(c_exp), s4_bad.eq(bad),
                s4_sum.eq(_tree_sum(mul.o_stream.payload.p for mul in muls)),
                s5_valid.eq(s4_valid & s4_bl), s5_ol.eq(s4_ol), s5_exp.eq(s4_exp),
                s5_bsum.eq(bacc + s4_sum), s5_inv.eq(binv | s4_bad),
            ]
            with m.If(s4_valid):
                m.d.sync += [bacc.eq(Mux(s4_bl, 0, bacc + s4_sum)),
                             binv.eq(~s4_bl & (binv | s4_bad))]

        oacc = Signal(signed(self._acc_width))
        oinv = Signal()
        out = Signal(self._out_layout)
        contrib = s5_bsum << s5_exp
        with m.If(o_valid & o_ready):
            m.d.sync += o_valid.eq(0)
        with m.If(en & s5_valid):
            with m.If(s5_ol):
                m.d.sync += [out.acc.eq(oacc + contrib), out.invalid.eq(oinv | s5_inv),
                             oacc.eq(0), oinv.eq(0), o_valid.eq(1)]
            with m.Else():
                m.d.sync += [oacc.eq(oacc + contrib), oinv.eq(oinv | s5_inv)]
        m.d.comb += self.o_stream.payload.eq(out)
        return m

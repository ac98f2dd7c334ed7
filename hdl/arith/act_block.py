"""Activation block converter and aligner: FP16/BF16 blocks -> integer mantissas.

The converter finds a block's shared exponent and aligns its lanes to it; the aligner (the
array's row front end) aligns them to an exponent it is given. Both run the same alignment
stages (:func:`_align_stages`). The bit-exact definitions (effective exponents, ``K``,
rounding, saturation, Inf/NaN and INT8 rules) are :func:`golden.bfp.block_convert` and
:func:`golden.bfp.block_align`; this module only implements them in hardware.
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.bfp import (
    MAX_CONVERTER_LANES,
    aligner_latency,
    block_exp_width,
    check_block_params,
    converter_latency,
    float_fields,
    scale_offset,
)
from bitmod.golden.checks import check_int

from ..common import pipeline_enable, read_only

__all__ = ["ActBlockAligner", "ActBlockConverter"]


@read_only("lanes", "act_format", "mant_width", "rounding")
class ActBlockConverter(wiring.Component):
    """Block-floating-point converter for a block of ``lanes`` activations.

    Computes, for each input block (definition in :mod:`golden.bfp`)::

        block_exp = max over nonzero finite lanes of max(e_i, 1)     (0 for an all-zero block)
        mant_i    = (-1)**s_i * sat(round(sig_i * 2**(W - 2 - M - (block_exp - eff_i))))
        x_i      ~= mant_i * 2**(block_exp - K),   K = bias + W - 2   (INT8: 0)

    with ``W = mant_width``, ``round`` of the magnitude toward zero (``"trunc"``) or to nearest,
    ties to even (``"rne"``), and ``sat`` clamping the magnitude to ``2**(W-1) - 1`` (reached
    only by RNE when ``W < M + 2``; such lanes are flagged in ``saturated``). Inf/NaN lanes are
    flagged in ``invalid``, excluded from the maximum and give mantissa 0.
    ``act_format="int8"`` passes sign-extended int8 words through (``block_exp = 0``; other
    words are ``invalid`` with mantissa 0).

    Pipeline (FP formats), with ``tree_stages = max(1, ceil(log2(lanes)))`` and
    ``k = bit_length(W)``:

    1. ``tree_stages`` stages of a max tree, one level per stage, over the exponent fields of
       the finite lanes; an OR of "nonzero and finite" travels alongside, the raw words beside;
    2. to 4. the alignment stages of :class:`ActBlockAligner` (:func:`_align_stages`) with
       ``block_exp`` from the tree's maximum: unpack and ``d = block_exp - max(e, 1)`` clamped
       to ``k`` bits (any ``d >= W`` drops every bit of the lane), the coarse shift by the
       high ``ceil(k/2)`` bits of ``d`` with the sticky OR of the bits already below the
       rounding point, the fine shift by the low ``floor(k/2)`` bits;
    5. round, saturate and negate with one adder: ``(kept ^ -s) + (inc ^ s)``.

    Every stage holds at most one carry chain (a compare, the subtract or the final adder) or
    a 4:1-to-8:1 mux level, so that the converter keeps up with the bit-serial PEs.

    Latency: ``tree_stages + 4`` cycles (5 for lanes 1..2, 6 for 3..4, 7 for 5..8, 8 for 9..16,
    9 for 17..32, 10 for 33..64). INT8: 2 (a range check stage and an output register).
    Throughput: one block per cycle; the pipeline advances when ``o_stream.ready`` is high or
    ``o_stream.valid`` is low, and ``i_stream.ready`` is that same enable.

    Widths: ``exp`` is ``E`` bits (the format's exponent field: FP16 5, BF16 8; INT8 1, always
    0) because ``block_exp <= 2**E - 2``; each mantissa is ``signed(mant_width)``; ``invalid``
    and ``saturated`` are ``lanes`` bits. Internally a lane shifts ``sig << max(W - 2 - M, 0)``
    (``max(M + 1, W - 1)`` bits) with ``2**k - 1`` zero bits below it right by the ``k``-bit
    clamped ``d``.

    Parameters
    ----------
    lanes : int
        N, activations per block, 1..64.
    act_format : {"fp16", "bf16", "int8"}
    mant_width : int
        W, 2..24 (8..24 for INT8).
    rounding : {"trunc", "rne"}
        Ignored for INT8 (nothing is rounded).

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"data": ArrayLayout(unsigned(16), lanes)})))
        Raw 16-bit activation words, lane 0 at the LSB.
    o_stream : Out(stream.Signature(StructLayout({"exp": unsigned(E), "mant":
            ArrayLayout(signed(W), lanes), "invalid": unsigned(lanes), "saturated":
            unsigned(lanes)})))
        Shared exponent, mantissas and per-lane flags (bit i = lane i).
    """

    def __init__(self, lanes: int = 4, act_format: str = "fp16", mant_width: int = 12,
                 rounding: str = "rne"):
        self._lanes = check_int("lanes", lanes, 1, MAX_CONVERTER_LANES)
        check_block_params(act_format, mant_width, rounding)
        self._act_format = act_format
        self._mant_width = int(mant_width)
        self._rounding = rounding
        # One max-tree level per stage: ceil(log2(lanes)), at least one.
        self._tree_stages = max(1, (lanes - 1).bit_length())
        super().__init__({
            "i_stream": In(stream.Signature(self.input_layout)),
            "o_stream": Out(stream.Signature(self.output_layout)),
        })

    @property
    def exp_width(self) -> int:
        """Bits of the ``exp`` output field (:func:`golden.bfp.block_exp_width`)."""
        return block_exp_width(self._act_format)

    @property
    def scale_offset(self) -> int:
        """``K`` of ``value = mant * 2**(exp - K)``."""
        return scale_offset(self._act_format, self._mant_width)

    @property
    def latency(self) -> int:
        """Cycles from an accepted input to its output being valid
        (:func:`golden.bfp.converter_latency`)."""
        return converter_latency(self._lanes, self._act_format)

    @property
    def input_layout(self) -> data.StructLayout:
        return data.StructLayout({"data": data.ArrayLayout(unsigned(16), self._lanes)})

    @property
    def output_layout(self) -> data.StructLayout:
        return data.StructLayout({
            "exp": unsigned(self.exp_width),
            "mant": data.ArrayLayout(signed(self._mant_width), self._lanes),
            "invalid": unsigned(self._lanes),
            "saturated": unsigned(self._lanes),
        })

    def elaborate(self, platform):
        m = Module()
        pipe = _Pipeline(m, self, "converter")
        words = [self.i_stream.payload.data[i] for i in range(self._lanes)]
        if self._act_format == "int8":
            exp, mants, invalid, saturated = self._elaborate_int8(words, pipe.register)
        else:
            exp, mants, invalid, saturated = self._elaborate_float(words, pipe.register)
        pipe.output(mants, invalid, saturated, exp=exp)
        return m

    def _elaborate_int8(self, words, register):
        """Range check in stage 1; returns the last stage's (exp, mants, invalid, saturated)."""
        mants, invalids = [], []
        for i, word in enumerate(words):
            # An int16 in [-128, 127] has bits 15..7 all equal.
            ok = (word[7:] == 0) | (word[7:] == 0x1FF)
            mants.append(register(Mux(ok, word[:8].as_signed(), 0), f"in_mant{i}"))
            invalids.append(register(~ok, f"in_invalid{i}"))
        return C(0, 1), mants, Cat(*invalids), C(0, self._lanes)

    def _elaborate_float(self, words, register):
        """Max tree, then the alignment stages; returns the operands of the output stage."""
        E, M, _ = float_fields(self._act_format)
        top = (1 << E) - 1

        # Max tree, one level per stage, over the raw exponent fields of the finite lanes: the
        # compare starts straight from the input register, and the Inf/NaN test (an E-input AND)
        # runs beside it into the select. A pair of two Inf/NaN lanes gives 0, the bottom.
        # Since max(., 1) is monotonic, block_exp = max(block_key, 1) when some lane is
        # nonzero and finite (an OR tree travels alongside) and 0 otherwise. The words travel
        # raw beside the tree into the alignment stages.
        leaves = []
        for word in words:
            e, frac = word[M:M + E], word[:M]
            special = e == top
            leaves.append((e, special, ~special & ((e != 0) | (frac != 0))))
        level = []
        for (ea, sa, na), (eb, sb, nb) in zip(leaves[::2], leaves[1::2], strict=False):
            take_b = sa | (~sb & (eb > ea))
            level.append((Mux(take_b, eb, ea) & ~(sa & sb).replicate(E), na | nb))
        if len(leaves) % 2:
            e, special, nz = leaves[-1]
            level.append((e & ~special.replicate(E), nz))
        for stage in range(self._tree_stages):
            if stage > 0:
                nxt = [(Mux(ka > kb, ka, kb), na | nb)
                       for (ka, na), (kb, nb) in zip(level[::2], level[1::2], strict=False)]
                level = nxt + ([level[-1]] if len(level) % 2 else [])
            level = [(register(k, f"t{stage}_max{j}"), register(n, f"t{stage}_nz{j}"))
                     for j, (k, n) in enumerate(level)]
            words = [register(word, f"t{stage}_word{i}") for i, word in enumerate(words)]
        ((block_key, block_nz),) = level
        # block_key = 0 with some lane nonzero and finite: every finite lane has e = 0 (eff 1).
        block_exp = Mux(block_nz, Cat(block_key[0] | (block_key == 0), block_key[1:]), 0)
        mants, invalid, saturated = _align_stages(words, block_exp, register, self._act_format,
                                                  self._mant_width, self._rounding)
        for stage in ("a", "c", "f"):
            block_exp = register(block_exp, f"{stage}_blockexp")
        return block_exp, mants, invalid, saturated


@read_only("lanes", "act_format", "mant_width", "rounding")
class ActBlockAligner(wiring.Component):
    """Aligns a block of ``lanes`` FP16/BF16 activations to a given block exponent.

    Computes, for each input (definition in :func:`golden.bfp.block_align`)::

        mant_i = (-1)**s_i * sat(round(sig_i * 2**(W - 2 - M - (exp - eff_i))))

    as :class:`ActBlockConverter` does with ``block_exp = exp``: the same mantissas as the
    converter of the block with one more lane holding the word ``exp << M``, without the
    exponent max tree. For the array's row front end, whose block exponent (the anchor
    ``max(gexp, base)``) is known from the pre-pass. A nonzero finite lane with ``eff > exp``
    gives 0 and is flagged in ``invalid``, as Inf/NaN lanes are.

    Pipeline: the alignment stages of the converter (:func:`_align_stages`: shift amount,
    coarse shift, fine shift) and the output register (round, saturate, negate).
    Latency: 4 cycles (:func:`golden.bfp.aligner_latency`), whatever ``lanes``. Throughput: one
    block per cycle; the pipeline advances when ``o_stream.ready`` is high or
    ``o_stream.valid`` is low, and ``i_stream.ready`` is that same enable.

    Widths: ``exp`` is ``E`` bits (the format's exponent field); each mantissa is
    ``signed(mant_width)``; ``invalid`` and ``saturated`` are ``lanes`` bits.

    Parameters
    ----------
    lanes : int
        N, activations per block, 1..64.
    act_format : {"fp16", "bf16"}
    mant_width : int
        W, 2..24.
    rounding : {"trunc", "rne"}

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"data": ArrayLayout(unsigned(16), lanes),
            "exp": unsigned(E)})))
        Raw 16-bit activation words, lane 0 at the LSB, and the block exponent.
    o_stream : Out(stream.Signature(StructLayout({"mant": ArrayLayout(signed(W), lanes),
            "invalid": unsigned(lanes), "saturated": unsigned(lanes)})))
        Mantissas and per-lane flags (bit i = lane i).
    """

    def __init__(self, lanes: int = 4, act_format: str = "fp16", mant_width: int = 12,
                 rounding: str = "rne"):
        self._lanes = check_int("lanes", lanes, 1, MAX_CONVERTER_LANES)
        check_block_params(act_format, mant_width, rounding)
        if act_format == "int8":
            raise ValueError("act_format must be fp16 or bf16 for the aligner, not 'int8'")
        self._act_format = act_format
        self._mant_width = int(mant_width)
        self._rounding = rounding
        super().__init__({
            "i_stream": In(stream.Signature(self.input_layout)),
            "o_stream": Out(stream.Signature(self.output_layout)),
        })

    @property
    def latency(self) -> int:
        """Cycles from an accepted input to its output being valid
        (:func:`golden.bfp.aligner_latency`)."""
        return aligner_latency(self._act_format)

    @property
    def input_layout(self) -> data.StructLayout:
        return data.StructLayout({"data": data.ArrayLayout(unsigned(16), self._lanes),
                                  "exp": unsigned(block_exp_width(self._act_format))})

    @property
    def output_layout(self) -> data.StructLayout:
        return data.StructLayout({
            "mant": data.ArrayLayout(signed(self._mant_width), self._lanes),
            "invalid": unsigned(self._lanes),
            "saturated": unsigned(self._lanes),
        })

    def elaborate(self, platform):
        m = Module()
        pipe = _Pipeline(m, self, "aligner")
        payload = self.i_stream.payload
        words = [payload.data[i] for i in range(self._lanes)]
        pipe.output(*_align_stages(words, payload.exp, pipe.register, self._act_format,
                                   self._mant_width, self._rounding))
        return m


class _Pipeline:
    """The stage registers of a converter or aligner: all advance on the unit's
    :func:`~hdl.common.pipeline_enable`; a register named ``"<stage>_<what>"`` belongs to stage
    ``<stage>``, and :meth:`output` checks that the stages built, plus the output register,
    are golden's latency."""

    def __init__(self, m: Module, unit, kind: str):
        self._m, self._unit, self._kind = m, unit, kind
        self._enable = pipeline_enable(m, unit.i_stream, unit.o_stream, unit.latency)
        self._stages: set[str] = set()

    def register(self, value, name: str) -> Signal:
        self._stages.add(name.partition("_")[0])
        # Datapath registers need no reset: the valid chain says what they hold.
        reg = Signal(value.shape(), name=name, reset_less=True)
        with self._m.If(self._enable):
            self._m.d.sync += reg.eq(value)
        return reg

    def output(self, mants, invalid, saturated, exp=None) -> None:
        """The output register (``exp`` only for the converter) and the latency check."""
        out = self._unit.o_stream.payload
        with self._m.If(self._enable):
            self._m.d.sync += [out.invalid.eq(invalid), out.saturated.eq(saturated)]
            self._m.d.sync += [out.mant[i].eq(mant) for i, mant in enumerate(mants)]
            if exp is not None:
                self._m.d.sync += out.exp.eq(exp)
        built, latency = len(self._stages) + 1, self._unit.latency  # + 1: the output register
        if built != latency:
            raise AssertionError(f"the {self._kind} built {built} stages, golden's latency "
                                 f"is {latency}")


def _align_stages(words, exp, register, act_format: str, W: int, rounding: str):
    """The alignment of FP16/BF16 ``words`` to the block exponent ``exp`` (at least every
    nonzero finite lane's effective exponent, else that lane is flagged and gives 0), in three
    register stages made with ``register(value, name)`` (names starting ``a_``, ``c_``, ``f_``):

    1. align: unpack, ``d = exp - max(e, 1)`` clamped to ``k = bit_length(W)`` bits (any
       ``d >= W`` drops every bit of the lane; a negative ``d`` clamps to all ones);
    2. coarse shift of the significand by the high ``ceil(k/2)`` bits of ``d``, with the sticky
       OR of the bits already below the rounding point;
    3. fine shift by the low ``floor(k/2)`` bits: truncated magnitude, round bit, sticky bit.

    Returns the operands of the output stage (round, saturate and negate with one adder:
    ``(kept ^ -s) + (inc ^ s)``): the ``signed(W)`` mantissas, ``invalid`` and ``saturated``
    (``Cat`` of one bit per lane).
    """
    E, M, _ = float_fields(act_format)
    top = (1 << E) - 1

    def register_lanes(lanes, stage):
        return [{name: register(value, f"{stage}_lane{i}_{name}") for name, value in lane.items()}
                for i, lane in enumerate(lanes)]

    # a = sig * 2**(P - d) with d = exp - eff. Shift x = wide << Z right by d, with
    # wide = sig << max(P, 0) and Z zero bits below it: a's integer LSB is then at
    # q + 1 = Z + max(-P, 0), so kept = floor(a) = x'[q + 1 : q + W], qb = x'[q] and
    # r = any(x'[:q]). Any d >= W puts sig's top bit (at most W - 2 - d in a) below the
    # round bit: kept = 0, qb = 0, r = sig != 0, as d = 2**k - 1 >= W does. So d clamps
    # to k bits by OR-ing its high bits (no comparator), and Z = 2**k - 1 zeros keep every
    # nonzero bit of x inside x'.
    P = W - 2 - M
    drop_bits = W.bit_length()
    Z = (1 << drop_bits) - 1
    q = Z + max(-P, 0) - 1
    fine_bits = drop_bits // 2
    fine_max = (1 << fine_bits) - 1

    # Align stage. A zero or Inf/NaN lane has sig = 0, so its d does not matter: eff is
    # max(e, 1) without testing for them. exp - eff is E + 1 bits; its top bit is the borrow
    # of a lane above exp, whose d clamps to all ones (mantissa 0).
    lanes = []
    for word in words:
        sign, e, frac = word[E + M], word[M:M + E], word[:M]
        special = e == top
        nonzero = (e != 0) | (frac != 0)
        diff = (exp - Cat(e[0] | (e == 0), e[1:]))[:E + 1]
        d, below = diff[:E], diff[E]
        if drop_bits < E:
            d = d[:drop_bits] | d[drop_bits:].any().replicate(drop_bits)
        lanes.append({
            "sign": sign,
            "sig": Mux(special, 0, Cat(frac, (e != 0) & ~special)),
            "drop": d | below.replicate(len(d)),
            "invalid": special | (below & nonzero),
        })
    lanes = register_lanes(lanes, "a")

    # Coarse shift by the high bits of drop (a multiple of 2**fine_bits). Bits of y below q
    # stay below q after the fine shift: they only feed the sticky bit r. Nonzero bits of y
    # sit at or above Z - coarse >= fine, so the fine shift loses none.
    for lane in lanes:
        sig, drop = lane.pop("sig"), lane.pop("drop")
        wide = Cat(C(0, P), sig) if P > 0 else sig
        y = Cat(C(0, Z), wide) >> (drop[fine_bits:] << fine_bits)
        # Only y[q : q + W + fine_max] can reach kept or qb; y[q : q + fine] moves into r.
        lane["y"] = y[q:q + W + fine_max]
        if rounding == "rne":
            lane["sticky"] = y[:q].any()
        lane["fine"] = drop[:fine_bits]
    lanes = register_lanes(lanes, "c")

    # Fine shift: kept = floor(a) < 2**(W-1), qb the first dropped bit, r the rest.
    for lane in lanes:
        y, fine = lane.pop("y"), lane.pop("fine")
        z = y >> fine
        lane["kept"] = z[1:W]
        if rounding == "rne":
            # y[:fine] moves below q: into r.
            moved = Cat(*(y[j] & (fine > j) for j in range(fine_max)))
            lane["qb"] = z[0]
            lane["r"] = lane.pop("sticky") | moved.any()
    lanes = register_lanes(lanes, "f")

    # Output stage: round, saturate and negate with one adder. With inc the RNE increment,
    # (-1)**s * (kept + inc) = (kept ^ -s) + (inc ^ s) in two's complement.
    mants, saturated = [], []
    for lane in lanes:
        sign, kept = lane["sign"], lane["kept"]
        if rounding == "rne":
            inc = lane["qb"] & (kept[0] | lane["r"])
            if P < 0:
                # Only when the largest lane has dropped bits can RNE carry into bit W-1;
                # the clamp 2**(W-1) - 1 is then kept itself, so the increment is dropped.
                sat = inc & kept.all()
                inc = inc & ~sat
            else:
                sat = C(0, 1)
        else:
            inc, sat = C(0, 1), C(0, 1)
        flip = Cat(kept, C(0, 1)) ^ sign.replicate(W)
        mants.append((flip + (inc ^ sign))[:W])
        saturated.append(sat)
    return mants, Cat(*(lane["invalid"] for lane in lanes)), Cat(*saturated)

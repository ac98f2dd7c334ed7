"""Activation block converter: FP16/BF16 blocks -> shared exponent + integer mantissas.

The bit-exact definition (effective exponents, ``K``, rounding, saturation, Inf/NaN and INT8
rules) is :func:`golden.bfp.block_convert`; this module only implements it in hardware.
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.bfp import (
    MAX_CONVERTER_LANES,
    block_exp_width,
    check_block_params,
    converter_latency,
    float_fields,
    scale_offset,
)
from bitmod.golden.checks import check_int

from ..common import pipeline_enable, read_only

__all__ = ["ActBlockConverter"]


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
       the finite lanes; an OR of "nonzero and finite" travels alongside, and the last tree
       stage unpacks each lane into (sign, eff, significand, special);
    2. align: ``block_exp`` from the tree's maximum, ``d = block_exp - eff`` clamped to ``k``
       bits (any ``d >= W`` drops every bit of the lane);
    3. coarse shift of the significand by the high ``ceil(k/2)`` bits of ``d``, with the sticky
       OR of the bits already below the rounding point;
    4. fine shift by the low ``floor(k/2)`` bits: truncated magnitude, round bit, sticky bit;
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
        enable = pipeline_enable(m, self.i_stream, self.o_stream, self.latency)
        stages = set()  # the register stages the datapath is built with

        def register(value, name):
            stages.add(name.rpartition("_")[2] if "_" in name else "in")
            # Datapath registers need no reset: the valid chain says what they hold.
            reg = Signal(value.shape(), name=name, reset_less=True)
            with m.If(enable):
                m.d.sync += reg.eq(value)
            return reg

        words = [self.i_stream.payload.data[i] for i in range(self._lanes)]
        out = self.o_stream.payload
        if self._act_format == "int8":
            exp, mants, invalid, saturated = self._elaborate_int8(words, register)
        else:
            exp, mants, invalid, saturated = self._elaborate_float(words, register)
        with m.If(enable):
            m.d.sync += [out.exp.eq(exp), out.invalid.eq(invalid), out.saturated.eq(saturated)]
            m.d.sync += [out.mant[i].eq(mant) for i, mant in enumerate(mants)]
        if len(stages) + 1 != self.latency:  # + 1: the output register
            raise AssertionError(f"the converter built {len(stages) + 1} stages, golden's "
                                 f"latency is {self.latency}")
        return m

    def _elaborate_int8(self, words, register):
        """Range check in stage 1; returns the last stage's (exp, mants, invalid, saturated)."""
        mants, invalids = [], []
        for i, word in enumerate(words):
            # An int16 in [-128, 127] has bits 15..7 all equal.
            ok = (word[7:] == 0) | (word[7:] == 0x1FF)
            mants.append(register(Mux(ok, word[:8].as_signed(), 0), f"mant{i}_in"))
            invalids.append(register(~ok, f"invalid{i}_in"))
        return C(0, 1), mants, Cat(*invalids), C(0, self._lanes)

    def _elaborate_float(self, words, register):
        """Unpack, max tree, align, two-step shift; returns the operands of the output stage."""
        E, M, _ = float_fields(self._act_format)
        W = self._mant_width
        top = (1 << E) - 1

        def unpack(word):
            """eff = max(e, 1) for nonzero finite lanes, 0 otherwise; sig = 0 for Inf/NaN."""
            sign, e, frac = word[E + M], word[M:M + E], word[:M]
            special = e == top
            hidden = (e != 0) & ~special
            nonzero = (e != 0) | (frac != 0)
            return {
                "sign": sign,
                "eff": Mux(special | ~nonzero, 0, Cat(e[0] | (e == 0), e[1:])),
                "sig": Mux(special, 0, Cat(frac, hidden)),
                "special": special,
            }

        def register_lanes(lanes, stage):
            return [{name: register(value, f"lane{i}_{name}_{stage}")
                     for name, value in lane.items()} for i, lane in enumerate(lanes)]

        # Max tree, one level per stage, over the raw exponent fields of the finite lanes: the
        # compare starts straight from the input register, and the Inf/NaN test (an E-input AND)
        # runs beside it into the select. A pair of two Inf/NaN lanes gives 0, the bottom.
        # Since max(., 1) is monotonic, block_exp = max(block_key, 1) when some lane is
        # nonzero and finite (an OR tree travels alongside) and 0 otherwise. The words travel
        # raw (fewer bits than unpacked) and are unpacked in the last tree stage.
        lanes = [{"word": word} for word in words]
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
            level = [(register(k, f"max{j}_t{stage}"), register(n, f"nz{j}_t{stage}"))
                     for j, (k, n) in enumerate(level)]
            if stage == self._tree_stages - 1:
                lanes = [unpack(lane["word"]) for lane in lanes]
            lanes = register_lanes(lanes, f"t{stage}")
        ((block_key, block_nz),) = level

        # a = sig * 2**(P - d) with d = block_exp - eff. Shift x = wide << Z right by d, with
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

        # Align stage. With some lane nonzero and finite, block_exp = max(block_key, 1), and
        # block_key = 0 only when every finite lane has e = 0 (eff 0 or 1): then d = 0.
        # Without one, every sig is 0 and any d gives 0.
        key_zero = block_key == 0
        for lane in lanes:
            d = (block_key - lane.pop("eff"))[:E]
            if drop_bits < E:
                d = d[:drop_bits] | d[drop_bits:].any().replicate(drop_bits)
            lane["drop"] = d & ~key_zero.replicate(len(d))
        block_exp = register(Mux(block_nz, Cat(block_key[0] | key_zero, block_key[1:]), 0),
                             "blockexp_a")
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
            if self._rounding == "rne":
                lane["sticky"] = y[:q].any()
            lane["fine"] = drop[:fine_bits]
        block_exp = register(block_exp, "blockexp_c")
        lanes = register_lanes(lanes, "c")

        # Fine shift: kept = floor(a) < 2**(W-1), qb the first dropped bit, r the rest.
        for lane in lanes:
            y, fine = lane.pop("y"), lane.pop("fine")
            z = y >> fine
            lane["kept"] = z[1:W]
            if self._rounding == "rne":
                # y[:fine] moves below q: into r.
                moved = Cat(*(y[j] & (fine > j) for j in range(fine_max)))
                lane["qb"] = z[0]
                lane["r"] = lane.pop("sticky") | moved.any()
        block_exp = register(block_exp, "blockexp_f")
        lanes = register_lanes(lanes, "f")

        # Output stage: round, saturate and negate with one adder. With inc the RNE increment,
        # (-1)**s * (kept + inc) = (kept ^ -s) + (inc ^ s) in two's complement.
        mants, saturated = [], []
        for lane in lanes:
            sign, kept = lane["sign"], lane["kept"]
            if self._rounding == "rne":
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

        return block_exp, mants, Cat(*(lane["special"] for lane in lanes)), Cat(*saturated)

"""Activation block converter: FP16/BF16 blocks -> shared exponent + integer mantissas.

The bit-exact definition (effective exponents, ``K``, rounding, saturation, Inf/NaN and INT8
rules) is :func:`golden.bfp.block_convert`; this module only implements it in hardware.
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.bfp import block_exp_width, check_block_params, float_fields, scale_offset

__all__ = ["ActBlockConverter"]

# Max-tree levels evaluated combinationally per pipeline stage: two levels of an (at most) 8-bit
# compare and mux keep the first stages no deeper than the last stage's shift, round and negate.
TREE_LEVELS_PER_STAGE = 2
MAX_LANES = 64


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

    Pipeline: the first ``tree_stages = max(1, ceil(ceil(log2(lanes)) / 2))`` stages unpack the
    lanes and reduce the effective exponents with a max tree (two tree levels per stage); the
    last stage subtracts, shifts, rounds, saturates and negates each lane. INT8 uses one stage
    for the range check and one register stage.

    Latency: ``tree_stages + 1`` cycles (2 for lanes 1..4, 3 for 5..16, 4 for 17..64; INT8: 2).
    Throughput: one block per cycle; the pipeline advances when ``o_stream.ready`` is high or
    ``o_stream.valid`` is low, and ``i_stream.ready`` is that same enable.

    Widths: ``exp`` is ``E`` bits (the format's exponent field: FP16 5, BF16 8; INT8 1, always
    0) because ``block_exp <= 2**E - 2``; each mantissa is ``signed(mant_width)``; ``invalid``
    and ``saturated`` are ``lanes`` bits. Internally a lane shifts ``max(M + 1, W - 1)`` bits
    with the shift amount clamped to that width + 1.

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
        if not isinstance(lanes, int) or isinstance(lanes, bool):
            raise TypeError(f"lanes must be an int, not {lanes!r}")
        if not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"lanes must be in 1..{MAX_LANES}, not {lanes}")
        check_block_params(act_format, mant_width, rounding)
        self._lanes = lanes
        self._act_format = act_format
        self._mant_width = int(mant_width)
        self._rounding = rounding
        if act_format == "int8":
            self._tree_stages = 1
        else:
            depth = (lanes - 1).bit_length()  # ceil(log2(lanes))
            self._tree_stages = max(1, -(-depth // TREE_LEVELS_PER_STAGE))
        super().__init__({
            "i_stream": In(stream.Signature(self.input_layout)),
            "o_stream": Out(stream.Signature(self.output_layout)),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def act_format(self) -> str:
        return self._act_format

    @property
    def mant_width(self) -> int:
        return self._mant_width

    @property
    def rounding(self) -> str:
        return self._rounding

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
        """Cycles from an accepted input to its output being valid."""
        return self._tree_stages + 1

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
        enable = Signal()
        m.d.comb += [
            enable.eq(self.o_stream.ready | ~self.o_stream.valid),
            self.i_stream.ready.eq(enable),
        ]

        valid = [Signal(name=f"valid{k}") for k in range(self.latency)]
        with m.If(enable):
            m.d.sync += valid[0].eq(self.i_stream.valid)
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(1, self.latency)]
        m.d.comb += self.o_stream.valid.eq(valid[-1])

        def register(value, name):
            reg = Signal(value.shape(), name=name)
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
        return m

    def _elaborate_int8(self, words, register):
        """Range check in stage 1; returns the last stage's (exp, mants, invalid, saturated)."""
        mants, invalids = [], []
        for i, word in enumerate(words):
            # An int16 in [-128, 127] has bits 15..7 all equal.
            ok = (word[7:] == 0) | (word[7:] == 0x1FF)
            mants.append(register(Mux(ok, word[:8].as_signed(), 0), f"mant{i}"))
            invalids.append(register(~ok, f"invalid{i}"))
        return C(0, 1), mants, Cat(*invalids), C(0, self._lanes)

    def _elaborate_float(self, words, register):
        """Unpack and max tree in the first stages; returns the last stage's outputs."""
        E, M, _ = float_fields(self._act_format)
        W = self._mant_width
        top = (1 << E) - 1

        # Stage 1: unpack. eff = max(e, 1) for nonzero finite lanes, 0 otherwise.
        lanes = []
        for word in words:
            sign, e, frac = word[E + M], word[M:M + E], word[:M]
            special = e == top
            hidden = (e != 0) & ~special
            sig = Mux(special, 0, Cat(frac, hidden))
            nonzero = (e != 0) | (frac != 0)
            eff = Mux(special | ~nonzero, 0, Cat(e[0] | (e == 0), e[1:]))
            lanes.append((sign, eff, sig, special))

        # Max tree over eff, registered every TREE_LEVELS_PER_STAGE levels; lane fields travel
        # alongside so that stage 2 sees the block maximum and its own lane together.
        level = [eff for _, eff, _, _ in lanes]
        for stage in range(self._tree_stages):
            for _ in range(TREE_LEVELS_PER_STAGE):
                if len(level) == 1:
                    break
                nxt = [Mux(a > b, a, b) for a, b in zip(level[::2], level[1::2], strict=False)]
                level = nxt + ([level[-1]] if len(level) % 2 else [])
            level = [register(v, f"max{stage}_{j}") for j, v in enumerate(level)]
            lanes = [tuple(register(f, f"lane{i}_{n}_s{stage}")
                           for f, n in zip(fields, ("sign", "eff", "sig", "special"), strict=True))
                     for i, fields in enumerate(lanes)]
        (block_exp,) = level

        # Last stage: a = sig * 2**(P - d): wide = sig << max(P, 0), then drop d + max(-P, 0) bits.
        P = W - 2 - M
        s_bits = M + 1 + max(P, 0)
        mants, saturated = [], []
        for sign, eff, sig, _ in lanes:
            wide = Cat(C(0, P), sig) if P > 0 else sig
            drop = (block_exp - eff) + max(-P, 0)
            # Dropping more than s_bits + 1 bits acts like dropping s_bits + 1 (kept = 0, qb = 0,
            # r = wide != 0). block_exp >= eff, so drop >= 0 and the slice loses no information.
            drop_c = Mux(drop > s_bits + 1, s_bits + 1, drop)[:(s_bits + 1).bit_length()]
            shifted = Cat(C(0, s_bits + 1), wide) >> drop_c
            # kept = floor(a) < 2**(W-1): the bits of shifted above these are always zero.
            kept = shifted[s_bits + 1:s_bits + W]
            if self._rounding == "rne":
                qb, r = shifted[s_bits], shifted[:s_bits].any()
                mag = kept + (qb & (kept[0] | r))
            else:
                mag = kept
            if P < 0 and self._rounding == "rne":
                # Only when the largest lane has dropped bits can RNE carry into bit W-1.
                sat = mag[W - 1]
                mag = Mux(sat, (1 << (W - 1)) - 1, mag[:W - 1])
            else:
                sat = C(0, 1)
                mag = mag[:W - 1]
            mants.append(Mux(sign, -mag, mag))
            saturated.append(sat)

        return block_exp, mants, Cat(*(lane[3] for lane in lanes)), Cat(*saturated)

"""Bit-plane PE (BISMO / ABQ-LLM / FlexQ style): AND-popcount of one weight plane and one
activation plane of ``L`` lanes per cycle, Horner accumulation over the plane significances.

Bit-exact twin: :mod:`golden.pe_bitplane` (encodings, pair schedule, payload builder, widths,
:class:`~golden.pe_bitplane.BitPlanePEModel` for the cycle timing).

Where the LUTs go, and what keeps them few
-------------------------------------------
The popcount of ``L`` AND-ed lane pairs is all but a fixed part of the PE. Yosys maps an adder
whose result has 5 or more bits to an ECP5 carry chain (``CCU2C``, one LUT4 per result bit) and
a narrower one to plain LUTs, where ABC9 (``synth_ecp5 -abc9`` maps for depth) merges the
levels into wide 5- to 8-input functions (measured: a 3-lane count 8 LUT4 instead of 4). So
every level is registered and is either at most 4-input LUT logic or one carry chain:

* **leaf** of three lanes: ``s = p0 ^ p1``, ``c = p0 & p1`` (``p = w & a``, the AND folded into
  the LUT4 that sees both lanes' ``w`` and ``a``), register, then ``s ^ p2`` and
  ``c | (s & p2)``: 4 LUT4 for a count 0..3 (one- and two-lane leaves where ``L`` needs them);
* **node** ``left + right + lane``: every node takes one more lane as its carry-in, so a tree
  over ``2**k - 1`` lanes has no wasted top bits (a ``2**k``-lane tree's counts would need a
  bit more at every level). Nodes over two leaves are two levels of explicit full adders (the
  lane's ``w & a`` inside the first one's LUT4s); larger nodes are one carry chain: either
  ``{w, left} + {a, right}`` (the lowest position's carry-out *is* ``w & a``: the AND for free
  in the chain) or ``left + right + (w & a)`` (one LUT4 for the AND, the chain's carry-in),
  whichever fills the two-bit ``CCU2C`` cells better;
* the **last lane** enters as the carry-in of the group accumulator:
  ``gacc + (pop ^ -neg) + (neg ^ w_x & a_x)`` is ``gacc +- (pop + p_x)`` (``-x = ~x + 1``).

Measured cost of the tree, ~2.1-2.3 LUT4 per lane (docs/pe.md): each LUT4 or chain bit above
removes about one of the ``2 L`` input signals, so about ``2 L`` is what this fabric spends on
the popcount whatever the order of the levels. The rest (Horner accumulator ~2 LUT4 per bit,
dequantizer, output accumulator) is fixed and amortized by ``L``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.pe_bitplane import BitPlaneConfig, array_bitplane_params, popcount_stages

from ..common import read_only
from .bitserial import GroupDequantizer, hand_off_group

__all__ = ["BitPlanePE"]

# Yosys maps an adder with a result of at least this many bits to a carry chain.
_CHAIN_MIN_BITS = 5


class _Count:
    """A popcount of some lanes: ``value`` (unsigned, registered), its largest value ``top``,
    the pipeline ``stage`` whose register holds it."""

    def __init__(self, value, top: int, stage: int):
        self.value, self.top, self.stage = value, top, stage


def _round_up2(n: int) -> int:
    return n + (n & 1)


@read_only("lanes", "weight_bits", "act_bits", "weight_encoding", "act_encoding", "group_size",
           "scale_bits", "exp_bits", "max_groups", "gacc_width", "acc_width", "order",
           "in_layout", "out_layout")
class BitPlanePE(wiring.Component):
    """Bit-plane PE: ``popcount(w_plane AND a_plane)`` of ``L`` lanes per cycle, Horner group
    accumulation, bit-serial group dequantization, exact output.

    Computes, per output (:func:`golden.pe_bitplane.bitplane_reference`)::

        acc = sum_g ((sum_{k in g} a_k * w_k) * scale_g) << exp_g

    with ``w_k = sum_i c_i w_k^(i)`` and ``a_k = sum_j d_j a_k^(j)`` given as bit-planes of
    weights ``+-2**s`` (encodings ``signed``, ``unsigned``, ``binary``, ``ternary``: module
    docstring of :mod:`golden.pe_bitplane`). Per cycle, for the plane pair the payload carries::

        pop  = popcount(w_plane & a_plane)                          (L lanes)
        gacc = (shift ? gacc << 1 : gacc) + (negate ? -pop : pop)

    The payload builder (:func:`golden.pe_bitplane.bitplane_payloads`) orders the pairs by
    descending significance ``e = s_i + s_j`` and sends all weight-steps of a group for one
    pair before the next (BISMO's order), setting ``shift`` on the first cycle of each new
    significance: Horner's rule, so the accumulator shifts by one bit and needs no barrel
    shifter on the popcount, and after the ``e = 0`` pairs ``gacc`` is the group sum. On
    ``group_last`` that sum goes to the :class:`~hdl.pe.bitserial.GroupDequantizer`
    (``acc += (gsum * scale) << exp``, LSB first over ``D = max(scale_bits, 1)`` cycles) and
    ``gacc`` restarts in the same cycle.

    Widths (:class:`golden.pe_bitplane.BitPlaneConfig`; asserted here)::

        gacc_width = signed_width(gacc_lo, gacc_hi)
            gacc_hi = max_p max(G M_p, L M_p + (G - L) M'_p), M_p = max V_p / 2**e_p,
            M'_p = max V_(p-1) / 2**e_p, V_q the sum of an element's first q pair terms
        acc_width  = signed_width(N G p_lo s_max 2**e_max, N G p_hi s_max 2**e_max)

    (``p_lo, p_hi`` the extreme products of decoded values, ``s_max = 2**scale_bits - 1`` or
    1, ``N = max_groups``, ``e_max = 2**exp_bits - 1``); a popcount node over ``n`` lanes
    has ``bit_length(n)`` bits. W4A8 signed, G = 128: 19 and 34 bits.

    Latency ``stages + D + 2`` cycles from the ``out_last`` payload to the output, ``stages =
    popcount_stages(L - 1) + 1`` (:func:`golden.pe_bitplane.popcount_stages`; 8 at 64 lanes).
    Throughput one payload per cycle: ``L`` MACs per ``P_w * P_a`` cycles (32 for W4A8). The
    input stalls (``i_stream.ready`` low, nothing lost) only when a group ends before the
    dequantizer can take its sum (groups shorter than ``D`` cycles, ``D + 2`` after an
    ``out_last`` group) or an output is complete before the sink took the previous one.

    Parameters
    ----------
    lanes : int
        ``L``, weights per cycle (1..256).
    weight_bits, act_bits : int
        Code widths (signed 2..8, unsigned 1..8, binary 1, ternary 2).
    weight_encoding, act_encoding : str
        ``"signed"``, ``"unsigned"``, ``"binary"`` or ``"ternary"``.
    group_size : int
        ``G``, the largest group in elements (a multiple of ``lanes``); shorter ones are
        accepted.
    scale_bits : int
        Unsigned group scale width (0..16; 0: no scale).
    exp_bits : int
        Group shift width (0..6).
    max_groups : int
        Most groups one output accumulates (sizes ``acc_width``).
    acc_width : int, optional
        Output accumulator width; narrower than required raises ``ValueError``.
    order : {"group", "step"}
        ``"group"`` (default): the pair-major order above. ``"step"`` (the array's: it streams
        weight-steps): per weight-step all plane pairs in descending significance, Horner into
        a per-step partial ``sacc`` (``sacc_width`` bits, the one-step bound), added into
        ``gacc`` on the step's last pair (payload field ``step_last``), ``sacc`` restarting
        from 0; ``gacc`` then only holds sums of whole steps (``G p_lo .. G p_hi``). One more
        register and adder; same latency and stall rule.

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"w_plane": unsigned(L), "a_plane":
    unsigned(L), "negate": 1, "shift": 1, "group_last": 1, "out_last": 1,
    "scale": unsigned(scale_bits), "exp": unsigned(exp_bits)})))
        One plane pair of one weight-step per cycle, lane ``l`` at bit ``l``.
    o_stream : Out(stream.Signature(StructLayout({"acc": signed(acc_width)})))
        One exact output accumulator per ``out_last``.
    """

    def __init__(self, lanes: int = 64, weight_bits: int = 4, act_bits: int = 8,
                 weight_encoding: str = "signed", act_encoding: str = "signed",
                 group_size: int = 128, scale_bits: int = 8, exp_bits: int = 0,
                 max_groups: int = 256, acc_width: int | None = None, order: str = "group"):
        self._cfg = cfg = BitPlaneConfig(
            lanes=lanes, weight_bits=weight_bits, act_bits=act_bits,
            weight_encoding=weight_encoding, act_encoding=act_encoding, group_size=group_size,
            scale_bits=scale_bits, exp_bits=exp_bits, max_groups=max_groups, acc_width=acc_width,
            order=order)
        for name in ("lanes", "weight_bits", "act_bits", "weight_encoding", "act_encoding",
                     "group_size", "scale_bits", "exp_bits", "max_groups", "gacc_width",
                     "acc_width", "order"):
            setattr(self, f"_{name}", getattr(cfg, name))
        fields = {
            "w_plane": unsigned(cfg.lanes),
            "a_plane": unsigned(cfg.lanes),
            "negate": 1,
            "shift": 1,
            "group_last": 1,
            "out_last": 1,
            "scale": unsigned(cfg.scale_bits),
            "exp": unsigned(cfg.exp_bits),
        }
        if cfg.order == "step":
            fields["step_last"] = 1
        self._in_layout = data.StructLayout(fields)
        self._out_layout = data.StructLayout({"acc": signed(cfg.acc_width)})
        super().__init__({"i_stream": In(stream.Signature(self._in_layout)),
                          "o_stream": Out(stream.Signature(self._out_layout))})

    @classmethod
    def for_array(cls, config) -> BitPlanePE:
        """The PE every position of an array built with ``config`` (a
        :class:`golden.gemm.ArrayConfig` of kind ``"bitplane"``) holds
        (:func:`golden.pe_bitplane.array_bitplane_params`: the weight format's code width and
        encoding, the array's activation width, lanes, groups, scales, row shifts, the
        ``"step"`` order) with the array's accumulator width."""
        return cls(**array_bitplane_params(config), acc_width=config.acc_width)

    config = property(lambda self: self._cfg,
                      doc="The :class:`golden.pe_bitplane.BitPlaneConfig`.")
    macs_per_cycle = property(lambda self: self._cfg.lanes / self._cfg.cycles_per_step)

    @property
    def latency(self) -> int:
        """Cycles from the ``out_last`` payload accepted to its output valid."""
        return self._cfg.latency

    @property
    def group_cycles(self) -> int:
        return self._cfg.group_cycles

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        pay = self.i_stream.payload
        self._m = m
        self._adv = adv = Signal()  # the whole pipeline advances together

        lanes = [(pay.w_plane[i], pay.a_plane[i]) for i in range(cfg.lanes)]
        *tree_lanes, extra = lanes
        count = self._popcount(tree_lanes)
        depth = count.stage if count is not None else 0
        if depth != popcount_stages(cfg.lanes - 1):
            raise AssertionError(f"the popcount tree has {depth} stages, golden's "
                                 f"popcount_stages({cfg.lanes - 1}) is "
                                 f"{popcount_stages(cfg.lanes - 1)}")
        control = {"valid": self.i_stream.valid, "negate": pay.negate,
                   "shift": pay.shift, "group_last": pay.group_last,
                   "out_last": pay.out_last, "scale": pay.scale, "exp": pay.exp}
        if cfg.order == "step":
            control["step_last"] = pay.step_last
        control = {k: self._delay(v, depth, f"c_{k}") for k, v in control.items()}
        extra = [self._delay(bit, depth, f"extra_{k}") for k, bit in enumerate(extra)]

        # Stage `stages`: +-pop as pop ^ -neg plus the carry-in neg ^ (w_x & a_x).
        pop = count.value if count is not None else Const(0, 1)
        neg = control["negate"]
        signed_pop = Signal(signed(cfg.pop_width + 1))
        m.d.comb += signed_pop.eq(pop.as_unsigned())
        npop = self._register(signed_pop ^ neg.replicate(len(signed_pop)).as_signed(), "npop")
        carry = self._register(neg ^ (extra[0] & extra[1]), "carry")
        control = {k: self._register(v, f"x_{k}") for k, v in control.items()}
        if depth + 1 != cfg.stages:
            raise AssertionError(f"{depth + 1} stages built, golden says {cfg.stages}")

        dq = self._group_accumulator(npop, carry, control)
        if cfg.stages + dq.latency != cfg.latency:
            raise AssertionError(f"latency {cfg.stages + dq.latency} built, golden says "
                                 f"{cfg.latency}")
        m.d.comb += self.i_stream.ready.eq(adv)
        wiring.connect(m, wiring.flipped(self.o_stream), dq.o_stream)
        return m

    # ------------------------------------------------------------------------------------
    # Pipeline registers: every one advances with the PE (``adv``); only ``valid`` is reset.

    def _register(self, value, name):
        reg = Signal.like(value, name=name, reset_less=not name.endswith("valid"))
        with self._m.If(self._adv):
            self._m.d.sync += reg.eq(value)
        return reg

    def _delay(self, value, cycles, name):
        for k in range(cycles):
            value = self._register(value, f"{name}_d{k}" if not name.endswith("valid")
                                   else f"{name}_d{k}_valid")
        return value

    # ------------------------------------------------------------------------------------
    # Popcount tree

    def _popcount(self, lanes) -> _Count | None:
        """Count of ``w & a`` over ``lanes``: leaves of up to three lanes, then nodes taking
        two subtrees and one lane as carry-in (:func:`golden.pe_bitplane.popcount_stages`)."""
        n = len(lanes)
        if n == 0:
            return None
        if n <= 3:
            return self._leaf(lanes)
        carry, rest = lanes[0], lanes[1:]
        left = self._popcount(rest[:n // 2])
        right = self._popcount(rest[n // 2:])
        start = max(left.stage, right.stage)
        x = self._delay(left.value, start - left.stage, "tree_x")
        y = self._delay(right.value, start - right.stage, "tree_y")
        w, a = (self._delay(bit, start, "tree_c") for bit in carry)
        top = left.top + right.top + 1
        if left.top <= 3 and right.top <= 3:
            return self._small_node(x, y, w, a, top, start)
        return self._chain_node(x, y, w, a, top, start)

    def _leaf(self, lanes) -> _Count:
        m = self._m
        p = [w & a for w, a in lanes]
        if len(p) == 1:
            return _Count(self._register(p[0], "leaf_p"), 1, 1)
        s = self._register(p[0] ^ p[1], "leaf_s")
        c = self._register(p[0] & p[1], "leaf_c")
        if len(p) == 2:
            value = Signal(2, name="leaf_2")
            m.d.comb += value.eq(Cat(s, c))
            return _Count(value, 2, 1)
        w2, a2 = (self._register(bit, "leaf_l2") for bit in lanes[2])
        p2 = w2 & a2
        return _Count(self._register(Cat(s ^ p2, c | (s & p2)), "leaf_3"), 3, 2)

    def _small_node(self, x, y, w, a, top, start) -> _Count:
        """``x + y + (w & a)`` for ``x, y <= 3``: two levels of full adders (4 LUT4)."""
        x0, x1 = x[0], (x[1] if len(x) > 1 else Const(0, 1))
        y0, y1 = y[0], (y[1] if len(y) > 1 else Const(0, 1))
        p = w & a
        bit0 = self._register(x0 ^ y0 ^ p, "node_b0")
        carry0 = self._register((x0 & y0) | ((x0 ^ y0) & p), "node_k0")
        x1, y1 = self._register(x1, "node_x1"), self._register(y1, "node_y1")
        high = self._register(Cat(x1 ^ y1 ^ carry0, (x1 & y1) | ((x1 ^ y1) & carry0)), "node_hi")
        low = self._register(bit0, "node_lo")
        value = Signal(top.bit_length(), name="node_sum")
        self._m.d.comb += value.eq(Cat(low, high))
        return _Count(value, top, start + 2)

    def _chain_node(self, x, y, w, a, top, start) -> _Count:
        """``x + y + (w & a)`` as one carry chain (see the module docstring)."""
        width = top.bit_length()
        operand = max(len(x), len(y))
        separator_cost = _round_up2(operand + 2)
        carry_in_cost = _round_up2(operand + 1) + 1
        if operand + 1 >= _CHAIN_MIN_BITS and carry_in_cost < separator_cost:
            total = x + y + (w & a)
            value = self._register(total[:width], "chain_sum")
        else:
            # Position 0 adds w + a: its sum bit is dropped, its carry-out is w & a.
            total = Cat(w, x) + Cat(a, y)
            value = self._register(total[1:width + 1], "chain_sum")
        return _Count(value, top, start + 1)

    # ------------------------------------------------------------------------------------
    # Horner group accumulator and hand-off to the dequantizer

    def _group_accumulator(self, npop, carry, control) -> GroupDequantizer:
        m, cfg, adv = self._m, self._cfg, self._adv
        m.submodules.dequant = dq = GroupDequantizer(cfg.gacc_width, cfg.scale_bits,
                                                     cfg.exp_bits, cfg.acc_width)
        gacc = Signal(signed(cfg.gacc_width))
        gacc_next = Signal(signed(cfg.gacc_width))
        # Modulo 2**gacc_width: exact, because every value the sum can take fits (widths).
        if cfg.order == "step":  # Horner within the step, into the group sum at step_last
            sacc = Signal(signed(cfg.sacc_width))
            sacc_next = Signal(signed(cfg.sacc_width))
            step_last = control["step_last"]
            m.d.comb += [sacc_next.eq(Mux(control["shift"], sacc << 1, sacc) + npop + carry),
                         gacc_next.eq(Mux(step_last, gacc + sacc_next, gacc))]
            with m.If(adv & control["valid"]):
                m.d.sync += sacc.eq(Mux(step_last, 0, sacc_next))
        else:
            m.d.comb += gacc_next.eq(Mux(control["shift"], gacc << 1, gacc) + npop + carry)
        hand_off_group(m, dq, control, gacc_next, adv)
        with m.If(adv & control["valid"]):
            m.d.sync += gacc.eq(Mux(control["group_last"], 0, gacc_next))
        return dq

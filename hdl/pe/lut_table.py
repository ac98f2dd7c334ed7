"""LUT-table PE (T-MAC style): weight bit-planes index tables of activation sums.

Bit-exact twins: :mod:`golden.pe_lut` (the table identity, payload builder, widths, values and
output timing; the identity is derived in its module docstring and in docs/pe.md).

* :class:`LutTableBuilder` is the array-edge block: from the ``L`` activations of a weight-step
  it builds the ``L / g`` half tables ``H[c] = T[c + 2**(g-1)]``, ``T[c] = sum_i (2 c_i - 1)
  a_i``, and the step's correction; one builder serves a whole row of PEs, which see its
  output on a bus.
* :class:`LutTablePE` takes, per cycle, one bit-plane of ``L`` weights and those ``L / g``
  tables, looks up ``L / g`` entries (half table plus a conditional negate on the index's top
  bit), sums them in a pipelined adder tree, accumulates the planes by Horner's rule (MSB
  first: ``P = 2 P + sum``, no barrel shifter) and dequantizes every group bit-serially like
  the bit-serial PE (:class:`hdl.pe.bitserial.GroupDequantizer`).

Where the LUTs go
-----------------
The tables arrive on the payload bus every cycle and sit in the input flip-flops of the PE; a
lookup is a ``2**(g-1)``-to-1 multiplexer per entry bit whose select bits are
``c_i XNOR c_{g-1}``, followed by the XOR with ``not c_{g-1}`` (one's complement). For
``g = 2`` that is one LUT4 per bit (``H[0]``, ``H[1]``, ``c_0``, ``c_1``); wider ``g`` needs
multiplexer trees (ECP5: LUT4s with PFUMX/L6MUX21; iCE40: LUT4 cascades). The ``+1`` of each
negated lookup (index top bit clear) is the carry-in of one adder of the tree (``L / g``
lookups plus the correction leaf: ``L / g`` adders, one carry each).
"""

from __future__ import annotations

from amaranth import Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.checks import check_bool, check_int
from bitmod.golden.pe_baseline import signed_width
from bitmod.golden.pe_lut import (
    MAX_TABLE_GROUP,
    array_lut_params,
    builder_latency,
    lut_pe_latency,
    lut_pe_stages,
    lut_pe_widths,
    table_width,
    tree_levels,
)

from ..common import pipeline_enable, read_only
from .bitserial import GroupDequantizer, hand_off_group

__all__ = ["LutTableBuilder", "LutTablePE", "builder_out_layout", "table_layout"]

MAX_EXP_BITS = 6


def _check_common(lanes, weight_bits, act_width, table_group, signed_weights) -> None:
    check_int("lanes", lanes, 1, 256)
    check_int("weight_bits", weight_bits, 2, 8)
    check_int("act_width", act_width, 2, 16)
    check_int("table_group", table_group, 1, MAX_TABLE_GROUP)
    check_bool("signed_weights", signed_weights)
    if lanes % table_group:
        raise ValueError(f"lanes={lanes} is not a multiple of table_group={table_group}")


def table_layout(table_group: int, act_width: int) -> data.ArrayLayout:
    """One half table: ``2**(g-1)`` signed entries of :func:`golden.pe_lut.table_width`."""
    return data.ArrayLayout(signed(table_width(table_group, act_width)), 1 << (table_group - 1))


def builder_out_layout(lanes: int, weight_bits: int = 4, act_width: int = 8,
                       table_group: int = 4, signed_weights: bool = True) -> data.StructLayout:
    """:class:`LutTableBuilder`'s output (the LUT PE's ``tables`` and ``corr`` fields): ``L / g``
    half tables (:func:`table_layout`) and the signed correction of
    :func:`golden.pe_lut.lut_pe_widths` ``["corr"]`` bits."""
    _check_common(lanes, weight_bits, act_width, table_group, signed_weights)
    corr_width = lut_pe_widths(
        lanes=lanes, table_group=table_group, weight_bits=weight_bits, act_width=act_width,
        group_size=lanes, scale_bits=0, exp_bits=0, max_groups=1,
        signed_weights=signed_weights)["corr"]
    return data.StructLayout({
        "tables": data.ArrayLayout(table_layout(table_group, act_width), lanes // table_group),
        "corr": signed(corr_width),
    })


@read_only("lanes", "weight_bits", "act_width", "table_group", "signed_weights", "table_width",
           "corr_width", "in_layout", "out_layout")
class LutTableBuilder(wiring.Component):
    """Array-edge table builder: ``L`` activations -> ``L / g`` half tables + correction.

    Per table (activations ``a_0 .. a_{g-1}`` of lanes ``g k .. g k + g - 1``)::

        H[c] = sum_{i < g-1} (2 c_i - 1) a_i + a_{g-1}        c = 0 .. 2**(g-1) - 1
        S    = sum_k H_k[2**(g-1) - 1]      (the last entry of a table is its sum)
        corr = -S  (signed weights),   (2**B - 1) S = (S << B) - S  (unsigned weights)

    ``S`` the sum of the ``L`` activations. The entries are built by doubling: start from
    ``a_{g-1}``, level ``i`` makes ``e - a_i`` and ``e + a_i`` of every entry ``e`` so far
    (``2**g - 2`` adders per table); one register after every level.

    Widths: an entry after level ``i`` sums ``i + 2`` activations with ``a_{g-1}`` counted
    ``+1``, ``table_width(i + 2, A) = signed_width(-M_i, M_i - 1)``, ``M_i = (i + 2)
    2**(A-1)``; entries ``table_width(g, A)``; ``corr`` :func:`golden.pe_lut.lut_pe_widths`
    ``["corr"]``.

    Latency ``g + ceil(log2(L/g))`` cycles (``g - 1`` doubling levels, the levels of the tree
    summing the tables' last entries into ``S``, then the correction); throughput one
    weight-step per cycle; the stream flow control of :func:`hdl.common.pipeline_enable`.

    Parameters
    ----------
    lanes : int
        ``L``, activations per weight-step (a multiple of ``table_group``; default one table).
    weight_bits : int
        ``B``, weight code bits (2..8): only the unsigned correction depends on it.
    act_width : int
        ``A``, signed activation width (2..16).
    table_group : int
        ``g``, activations per table (1..6).
    signed_weights : bool
        Two's-complement weight codes (the PE then reads their offset-binary planes).

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"acts": ArrayLayout(signed(A), L)})))
    o_stream : Out(stream.Signature(StructLayout({"tables": ArrayLayout(table_layout(g, A),
        L/g), "corr": signed(corr_width)})))
    """

    def __init__(self, lanes: int | None = None, weight_bits: int = 4, act_width: int = 8,
                 table_group: int = 4, signed_weights: bool = True):
        lanes = table_group if lanes is None else lanes
        _check_common(lanes, weight_bits, act_width, table_group, signed_weights)
        self._lanes, self._weight_bits, self._act_width = lanes, weight_bits, act_width
        self._table_group, self._signed_weights = table_group, signed_weights
        self._table_width = table_width(table_group, act_width)
        self._in_layout = data.StructLayout({"acts": data.ArrayLayout(signed(act_width), lanes)})
        self._out_layout = builder_out_layout(lanes, weight_bits, act_width, table_group,
                                              signed_weights)
        self._corr_width = self._out_layout["corr"].width
        super().__init__({"i_stream": In(stream.Signature(self._in_layout)),
                          "o_stream": Out(stream.Signature(self._out_layout))})

    @property
    def latency(self) -> int:
        """Cycles from an accepted input to its output (:func:`golden.pe_lut.builder_latency`)."""
        return builder_latency(self._table_group, self._lanes)

    def elaborate(self, platform):
        m = Module()
        g, A, L = self._table_group, self._act_width, self._lanes
        enable = pipeline_enable(m, self.i_stream, self.o_stream, self.latency, name="tb")

        def register(value, name):
            reg = Signal.like(value, name=name, reset_less=True)
            with m.If(enable):
                m.d.sync += reg.eq(value)
            return reg

        acts = [self.i_stream.payload.acts[i] for i in range(L)]
        tables = []
        for k in range(L // g):
            first = Signal(signed(table_width(1, A)), name=f"t{k}_start")
            m.d.comb += first.eq(acts[g * k + g - 1])
            tables.append([first])
        for level in range(g - 1):
            width = table_width(level + 2, A)
            for k, entries in enumerate(tables):
                a = acts[g * k + level]
                grown = []
                for sign in (-1, 1):  # index bit `level` clear, then set
                    for c, e in enumerate(entries):
                        index = c + (sign > 0) * len(entries)
                        s = Signal(signed(width), name=f"t{k}_l{level}_e{index}")
                        m.d.comb += s.eq(e + a if sign > 0 else e - a)
                        grown.append(s)
                tables[k] = [register(e, e.name + "_q") for e in grown]
            acts = [register(a, f"a{i}_l{level}") for i, a in enumerate(acts)]

        # The last entry of each table is its activations' sum: S is a tree over those, with
        # a register per level (the tables wait alongside).
        sums, level = [entries[-1] for entries in tables], 0
        while len(sums) > 1:
            paired = []
            for i in range(0, len(sums) - 1, 2):
                s = Signal(signed(table_width(g << (level + 1), A)), name=f"sum_l{level}_{i}")
                m.d.comb += s.eq(sums[i] + sums[i + 1])
                paired.append(s)
            sums = [register(v, f"{v.name}_q") for v in paired + sums[len(paired) * 2:]]
            tables = [[register(e, f"{e.name}_d{level}") for e in entries] for entries in tables]
            level += 1
        act_sum = sums[0]
        corr = -act_sum if self._signed_weights else (act_sum << self._weight_bits) - act_sum
        out = self.o_stream.payload
        with m.If(enable):
            m.d.sync += out.corr.eq(corr)
            for k, entries in enumerate(tables):
                m.d.sync += [out.tables[k][c].eq(e) for c, e in enumerate(entries)]
        if len(tables[0]) != 1 << (g - 1):
            raise AssertionError(f"built {len(tables[0])} table entries, not {1 << (g - 1)}")
        return m


def _clear_or_load(m: Module, reg, value, *, load, clear) -> None:
    """``reg <= 0`` on ``clear`` or reset, else ``reg <= value`` on ``load``.

    ``reg`` is reset-less and the domain reset joins the clear by hand: the flip-flop's one
    set/reset input (ECP5 ``LSR``, iCE40 ``SB_DFFESR``'s ``R``) then does the clear, where a
    reset register would spend it on the reset and put a LUT4 per bit in front of ``D``
    (measured: 30 LUT4 at 2 lanes).
    """
    with m.If(clear | ResetSignal()):
        m.d.sync += reg.eq(0)
    with m.Elif(load):
        m.d.sync += reg.eq(value)


@read_only("lanes", "weight_bits", "act_width", "table_group", "group_size", "scale_bits",
           "exp_bits", "max_groups", "signed_weights", "table_width", "corr_width",
           "step_width", "group_width", "acc_width", "in_layout", "out_layout")
class LutTablePE(wiring.Component):
    """LUT-table PE: one weight bit-plane of ``L`` lanes per cycle, ``L / g`` table lookups.

    Computes, per output ``j`` (one output per ``out_last``; :mod:`golden.pe_lut`)::

        sum_c  = sum_{k < L/g} T_k[c_k] + corr     T_k[c] = H_k[c & m] or -H_k[~c & m]
        P      = 2 P + sum_c          (per cycle; P restarts after a step_last payload)
        gsum_g = sum over the group's steps of P / 2          (P is even at step_last)
        acc_j  = sum_{g in output j} (gsum_g * scale_g) << exp_g

    ``c_k`` is bits ``g k .. g k + g - 1`` of ``plane``: plane ``j`` of the codes ``u`` (the
    codes themselves for unsigned weights, offset binary ``w + 2**(B-1)`` for signed ones),
    ``B`` cycles per weight-step, plane ``B - 1`` first. ``corr`` is added on every payload:
    the edge sends the step's correction with plane 0 and 0 with the others, and then
    ``gsum_g = sum_k a_k w_k`` exactly. ``scale``/``exp`` are read with ``group_last``;
    ``group_last`` must come with ``step_last``.

    Lookup: ``n = not c_{g-1}``, ``idx_i = c_i XOR n``, ``x = H[idx] XOR -n`` and the ``+ n``
    is an adder's carry-in. Widths (:func:`golden.pe_lut.lut_pe_widths`)::

        table_width = signed_width(-M, M - 1),  M = g 2**(A-1)
        step_width  = signed_width(2 L p_lo, 2 L p_hi)  (P; Horner is exact modulo
                                                         2**step_width, the final P fits)
        group_width = signed_width(G p_lo, G p_hi)
        acc_width   = signed_width(N G p_lo s_max 2**e_max, N G p_hi s_max 2**e_max)

    ``p_lo, p_hi`` the extreme products of a ``B``-bit weight and an ``A``-bit activation;
    tree nodes take the width of their value range (lookup leaves ``x`` in ``[-M, M - 1]``,
    plus their carry-ins), at most ``step_width``.

    Pipeline: lookup register, ``ceil(log2(L/g + 1))`` tree levels (a register each), Horner
    register, then the group accumulator hands group sums to the dequantizer. Latency
    ``stages + max(scale_bits, 1) + 2`` (:func:`golden.pe_lut.lut_pe_latency`). Throughput one
    payload (``L`` weights x one bit) per cycle, ``L / B`` MACs per cycle; the input stalls only
    when a group ends while the dequantizer is busy (groups shorter than ``max(scale_bits,
    1)`` cycles, ``+ 2`` after an ``out_last`` group) or the output was not taken.

    Parameters
    ----------
    lanes : int
        ``L``, weights per plane (1..256, a multiple of ``table_group``).
    weight_bits : int
        ``B``, weight code bits (2..8); cycles per weight-step.
    act_width : int
        ``A``, signed activation width (2..16).
    table_group : int
        ``g``, activations per table (1..6); the tables have ``2**(g-1)`` entries.
    group_size : int
        ``G``, the largest quantization group (a multiple of ``lanes``).
    scale_bits, exp_bits : int
        Unsigned group scale width (0..16; 0: factor 1) and shift width (0..6).
    max_groups : int
        Most groups per output (sizes the output accumulator).
    signed_weights : bool
        Two's-complement weights (sets the widths; the datapath is the same).
    acc_width : int, optional
        Output accumulator width; smaller than required raises ``ValueError``.

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"plane": unsigned(L), "tables":
        ArrayLayout(table_layout(g, A), L/g), "corr": signed(corr_width), "step_last": 1,
        "group_last": 1, "out_last": 1, "scale": unsigned(scale_bits),
        "exp": unsigned(exp_bits)})))
        One weight bit-plane per cycle with the step's tables (the builder's output).
    o_stream : Out(stream.Signature(StructLayout({"acc": signed(acc_width)})))
        One exact output accumulator per ``out_last``.
    """

    def __init__(self, lanes: int = 16, weight_bits: int = 4, act_width: int = 8,
                 table_group: int = 4, group_size: int = 128, scale_bits: int = 8,
                 exp_bits: int = 0, max_groups: int = 256, signed_weights: bool = True,
                 acc_width: int | None = None):
        _check_common(lanes, weight_bits, act_width, table_group, signed_weights)
        self._lanes, self._weight_bits, self._act_width = lanes, weight_bits, act_width
        self._table_group, self._signed_weights = table_group, signed_weights
        self._group_size = check_int("group_size", group_size, 1)
        if group_size % lanes:
            raise ValueError(f"group_size={group_size} is not a multiple of lanes={lanes}")
        self._scale_bits = check_int("scale_bits", scale_bits, 0, 16)
        self._exp_bits = check_int("exp_bits", exp_bits, 0, MAX_EXP_BITS)
        self._max_groups = check_int("max_groups", max_groups, 1)
        widths = lut_pe_widths(lanes=lanes, table_group=table_group, weight_bits=weight_bits,
                               act_width=act_width, group_size=group_size,
                               scale_bits=scale_bits, exp_bits=exp_bits,
                               max_groups=max_groups, signed_weights=signed_weights)
        self._table_width, self._corr_width = widths["table"], widths["corr"]
        self._step_width, self._group_width = widths["step"], widths["group"]
        if acc_width is not None:
            check_int("acc_width", acc_width, 1)
            if acc_width < widths["acc"]:
                raise ValueError(f"acc_width={acc_width} cannot hold the worst case; the "
                                 f"parameters require {widths['acc']} bits")
        self._acc_width = widths["acc"] if acc_width is None else acc_width
        self._in_layout = data.StructLayout({
            "plane": unsigned(lanes),
            "tables": data.ArrayLayout(table_layout(table_group, act_width),
                                       lanes // table_group),
            "corr": signed(self._corr_width),
            "step_last": 1,
            "group_last": 1,
            "out_last": 1,
            "scale": unsigned(scale_bits),
            "exp": unsigned(exp_bits),
        })
        self._out_layout = data.StructLayout({"acc": signed(self._acc_width)})
        super().__init__({"i_stream": In(stream.Signature(self._in_layout)),
                          "o_stream": Out(stream.Signature(self._out_layout))})

    @classmethod
    def for_array(cls, config) -> LutTablePE:
        """The PE every position of an array built with ``config`` (a
        :class:`golden.gemm.ArrayConfig` of kind ``"lut"``) holds: the weight format's code
        width and signedness, the array's activation width, lanes, groups, scales, row shifts
        and accumulator width, ``table_group`` :data:`golden.pe_lut.ARRAY_TABLE_GROUP`
        (:func:`golden.pe_lut.array_lut_params`; the row's builder uses the same)."""
        return cls(**array_lut_params(config), group_size=config.group_size,
                   scale_bits=config.scale_bits, exp_bits=config.act_exp_bits,
                   max_groups=config.max_groups, acc_width=config.acc_width)

    macs_per_cycle = property(lambda self: self._lanes / self._weight_bits)

    @property
    def stages(self) -> int:
        """Register stages before the group accumulator (:func:`golden.pe_lut.lut_pe_stages`)."""
        return lut_pe_stages(self._lanes, self._table_group)

    @property
    def latency(self) -> int:
        """Cycles from the ``out_last`` payload accepted to the output valid."""
        return lut_pe_latency(self._lanes, self._table_group, self._scale_bits)

    @property
    def group_cycles(self) -> int:
        """Cycles of a full group: ``G / L`` weight-steps of ``B`` planes."""
        return self._group_size // self._lanes * self._weight_bits

    def _lookup(self, m: Module, k: int, index, half):
        """``(x, neg)``: ``neg = not top``, ``x = H[index XOR neg*m] XOR -neg``, ``x + neg =
        T[index]``."""
        g = self._table_group
        neg = ~index[g - 1]
        entries = [half[c] for c in range(1 << (g - 1))]
        for i in range(g - 1):  # a 2:1 multiplexer level per select bit, LSB first
            sel = index[i] ^ neg
            entries = [Mux(sel, entries[2 * e + 1], entries[2 * e])
                       for e in range(len(entries) // 2)]
        x = Signal(signed(self._table_width), name=f"lookup{k}")
        m.d.comb += x.eq(entries[0] ^ neg.replicate(self._table_width))
        return x, neg

    def _tree(self, m: Module, register, nodes, carries):
        """Adder tree over ``(value, lo, hi)`` nodes, a register after every level; each adder
        takes one pending carry-in. Returns the root and the levels built."""
        levels = 0
        while len(nodes) > 1:
            levels += 1
            paired = []
            for i in range(0, len(nodes) - 1, 2):
                (a, a_lo, a_hi), (b, b_lo, b_hi) = nodes[i], nodes[i + 1]
                lo, hi = a_lo + b_lo, a_hi + b_hi + 1
                width = min(signed_width(lo, hi), self._step_width)
                s = Signal(signed(width), name=f"l{levels}_sum{i // 2}")
                m.d.comb += s.eq(a + b + carries.pop())
                paired.append((s, lo, hi))
            if len(nodes) % 2:
                paired.append(nodes[-1])
            nodes = [(register(v, f"{v.name}_q"), lo, hi) for v, lo, hi in paired]
            carries[:] = [register(c, f"l{levels}_carry{i}") for i, c in enumerate(carries)]
        if carries:
            raise AssertionError(f"{len(carries)} carry-ins left over after the adder tree")
        return nodes[0][0], levels

    def elaborate(self, platform):
        m = Module()
        L, g = self._lanes, self._table_group
        pay = self.i_stream.payload
        adv = Signal()  # every stage advances together; low only while a group sum waits

        def register(value, name):
            # Only the valid bits need a reset: the others are read when valid.
            reg = Signal.like(value, name=name, reset_less=not name.endswith("valid"))
            with m.If(adv):
                m.d.sync += reg.eq(value)
            return reg

        control = {"valid": self.i_stream.valid, "step_last": pay.step_last,
                   "group_last": pay.group_last, "out_last": pay.out_last,
                   "scale": pay.scale, "exp": pay.exp}

        # Stage 0: the lookups.
        lookups = [self._lookup(m, k, pay.plane[g * k: g * k + g], pay.tables[k])
                   for k in range(L // g)]
        half_range = g << (self._act_width - 1)
        nodes = [(register(x, f"{x.name}_q"), -half_range, half_range - 1) for x, _ in lookups]
        carries = [register(neg, f"lookup{k}_neg") for k, (_, neg) in enumerate(lookups)]
        corr = register(pay.corr, "corr_q")
        corr_lo, corr_hi = -(1 << (self._corr_width - 1)), (1 << (self._corr_width - 1)) - 1
        nodes.append((corr, corr_lo, corr_hi))
        control = {name: register(v, f"s0_{name}") for name, v in control.items()}

        # Adder tree: a register per level, the control alongside.
        root, levels = self._tree(m, register, nodes, carries)
        for level in range(levels):
            control = {name: register(v, f"t{level}_{name}") for name, v in control.items()}

        # Horner over the planes (MSB first); P restarts after the step's last plane.
        pacc = Signal(signed(self._step_width), reset_less=True)
        horner = Signal(signed(self._step_width))
        m.d.comb += horner.eq((pacc << 1) + root)
        _clear_or_load(m, pacc, horner, load=adv & control["valid"],
                       clear=adv & control["valid"] & control["step_last"])
        step_value = register(horner, "step_value")
        control = {name: register(v, f"h_{name}") for name, v in control.items()}
        built = 1 + levels + 1  # lookup, tree levels, Horner
        self._group_stage(m, adv, step_value, control)
        if built != self.stages or levels != tree_levels(L, g):
            raise AssertionError(f"the PE pipeline built ({built} stages, {levels} tree "
                                 f"levels) is not golden's ({self.stages}, "
                                 f"{tree_levels(L, g)})")
        return m

    def _group_stage(self, m: Module, adv, step_value, control) -> None:
        """Group accumulator (``gacc += P / 2`` at every step end) and the hand-off of each
        group sum to the bit-serial dequantizer, which drives ``o_stream``."""
        m.submodules.dequant = dq = GroupDequantizer(self._group_width, self._scale_bits,
                                                     self._exp_bits, self._acc_width)
        if self.stages + dq.latency != self.latency:
            raise AssertionError(f"dequantizer latency {dq.latency} is not golden's")
        gacc = Signal(signed(self._group_width), reset_less=True)
        gacc_next = Signal(signed(self._group_width))
        # P is even at a step end (the table identity): dropping its LSB halves it exactly.
        m.d.comb += gacc_next.eq(gacc + step_value[1:].as_signed())
        step_end = control["valid"] & control["step_last"]
        hand_off_group(m, dq, control, gacc_next, adv)
        m.d.comb += self.i_stream.ready.eq(adv)
        _clear_or_load(m, gacc, gacc_next, load=adv & step_end,
                       clear=adv & step_end & control["group_last"])
        wiring.connect(m, wiring.flipped(self.o_stream), dq.o_stream)


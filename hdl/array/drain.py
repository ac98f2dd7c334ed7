"""The array's drain: finished PE outputs, column by column, into one float converter."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.gemm import ArrayConfig
from bitmod.hdl.arith.to_float import ToFloat

from ..common import check_form, platform_form, read_only

__all__ = ["ArrayDrain"]


def _or_all(values):
    """The OR of ``values`` as a balanced tree."""
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


@read_only("config", "split_gather", "announce_credit")
class ArrayDrain(wiring.Component):
    """Collects the ``R x C`` accumulators of each tile and emits their float codes row-major.

    Per column ``c`` the finished outputs of PE ``(0, c) .. (R-1, c)`` enter a FIFO of
    ``Q * R`` entries (``Q`` = :attr:`golden.gemm.ArrayConfig.drain_tiles`). The array's
    schedule offers them in that order, at most one per column per cycle (PE ``(r, c)``
    finishes a tile ``r`` cycles after PE ``(0, c)``, and tile ends are ``R`` cycles apart),
    so the FIFO takes whichever is valid (an OR of the ``R`` outputs, registered: in two
    halves of the column with :attr:`split_gather`) and every PE's
    ``o_stream.ready`` is 1: no row pointer, and nothing from the drain reaches back into
    the PEs (at 10 x 10 x 8 the pointer's net to a column's PEs was the critical path). A
    merger reads the column FIFOs in row-major
    order into one :class:`~hdl.arith.to_float.ToFloat`, which rounds
    ``acc * 2**(base[r] - in_frac)`` (FP activations: the tile's row floors ``base``, held in a
    FIFO of ``Q + front_latency + 1`` tiles written by the front end when a tile's last step
    enters the array; INT8 activations: offset 0) to ``out_format``, RNE. One converter, not
    one per column: the single output port takes one result per cycle, so per-column
    converters would sit idle ``(C - 1) / C`` of the time.

    Credits: the drain starts with ``Q`` and the array's column tops take one with each tile
    end (``tile_in``); one comes back a cycle after a tile's last output leaves the column
    FIFOs (the merger's pulse is registered beside it, so the counter, which the column tops
    read, need not sit at the merger: on the ULX3S the two are the array's height apart). With
    at most ``Q`` tiles between a tile end and the merger, a column FIFO is never full when a
    PE's output arrives, so the PEs never wait on the drain whatever the output port does.
    ``lost`` (per column; unused outside the tests, which check it never rises) flags two
    outputs in one cycle or a full FIFO.

    The merger selects its column with a one-hot register (each column FIFO's read enable is
    local to it) and registers the head before the converter.

    Latency: :data:`golden.gemm.MERGE_LATENCY` cycles from a PE output to the converter's
    input (1 in the column's gather register(s), 2 to its column FIFO's read side, 1 in the
    merger's register), then the
    converter's :data:`golden.minifloat_arith.TO_FLOAT_LATENCY`.
    Throughput: one code per cycle.

    Parameters
    ----------
    config : golden.gemm.ArrayConfig
        Rows, columns, accumulator width, output format and the activation format (whether
        rows carry a base exponent).
    split_gather : bool or None
        Register a column's gather in two halves (rows ``0 .. ceil(R/2) - 1`` and the rest),
        each a register among its rows, so the FIFO's write is an OR of two flip-flops;
        otherwise one register after the column's OR, which packs with the OR's last LUT (the
        iCE40 form: the halves cost the iCEBreaker default 100 LCs it does not have). The
        latency is one cycle either way. ``None`` (default): by platform, halves everywhere
        but on an iCE40.
    announce_credit : bool
        Give :attr:`credit_next` (default False).

    Members
    -------
    i_acc : In(stream.Signature(signed(acc_width))).array(R, C)
        The PEs' finished outputs; ``i_acc[r][c]`` is PE ``(r, c)``'s ``o_stream``.
    base_w_en, base_w_data : In(1), In(R * E)
        Push a tile's row floors (FP activations only; E = the block exponent width).
    base_w_rdy : Out(1)
        The row-floor FIFO has room (the front end takes no tile's last step without it).
    tile_in : In(1)
        A tile's last term left the column tops: it takes a credit.
    credit : Out(1)
        A credit is free: the column FIFOs have room for one more tile's outputs (a
        flip-flop, set after reset).
    credit_next : Out(1)
        With ``announce_credit``: ``credit`` of the next cycle (the next count is not zero),
        for the serializer's columns' and rows' own copies.
    lost : Out(C)
        Column ``c`` lost an output this cycle (two at once, or its FIFO full).
    o_stream : Out(stream.Signature(StructLayout({"code": unsigned(out_bits)})))
    """

    # Credits beyond drain_tiles: 0; only a test-only broken drain (hdl.proofs) sets it.
    _extra_credits = 0

    def __init__(self, config: ArrayConfig, split_gather: bool | None = None, *,
                 announce_credit: bool = False):
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig, not {config!r}")
        self._split_gather = check_form("split_gather", split_gather)
        if not isinstance(announce_credit, bool):
            raise TypeError(f"announce_credit must be a bool, not {announce_credit!r}")
        self._announce_credit = announce_credit
        self._config = cfg = config
        self._fp = cfg.act_format != "int8"
        base_bits = cfg.rows * cfg.exp_width if self._fp else 1
        super().__init__({
            "i_acc": In(stream.Signature(signed(cfg.acc_width))).array(cfg.rows, cfg.cols),
            "base_w_en": In(1),
            "base_w_data": In(base_bits),
            "base_w_rdy": Out(1),
            "tile_in": In(1),
            "credit": Out(1),
            **({"credit_next": Out(1)} if announce_credit else {}),
            "lost": Out(cfg.cols),
            "o_stream": Out(stream.Signature(
                data.StructLayout({"code": unsigned(cfg.out_bits)}))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C = cfg.rows, cfg.cols
        split = platform_form(self._split_gather, platform, on_ice40=False)
        col_fifos = [self._column(m, c, split) for c in range(C)]

        m.submodules.to_float = tf = ToFloat(in_width=cfg.acc_width, in_frac=cfg.in_frac,
                                             out_format=cfg.out_format,
                                             exp_width=(cfg.exp_width + 1) if self._fp else 1,
                                             round_carry_in=True)
        # The merger: a one-hot column select (a flip-flop beside each column FIFO, so a
        # column's read enable is local) and the head registered before the converter (the
        # FIFOs lie along the array's edge: the gathering multiplexer is the long path).
        mr = Signal(range(max(R, 2)))
        mc = Signal(range(max(C, 2)))
        sel = Signal(C, init=1)
        stage = tf.i_stream
        free = ~stage.valid | stage.ready  # the register can take the head
        tile_end = (mr == R - 1) & (mc == C - 1)
        head_data = Signal(cfg.acc_width)
        m.d.comb += head_data.eq(_or_all([Mux(sel[c], col_fifos[c].r_data, 0)
                                          for c in range(C)]))
        if self._fp:
            # A tile's floors enter with its last step at the front end and leave with its
            # last output: at most the Q credited tiles and the front end's and serializer's
            # stages (a tile has at least one step) are in between.
            m.submodules.offsets = offsets = fifo.SyncFIFOBuffered(
                width=R * cfg.exp_width, depth=cfg.drain_tiles + cfg.front_latency + 1)
            row_base = data.View(data.ArrayLayout(unsigned(cfg.exp_width), R), offsets.r_data)
            m.d.comb += [offsets.w_en.eq(self.base_w_en), offsets.w_data.eq(self.base_w_data),
                         self.base_w_rdy.eq(offsets.w_rdy)]
            go = free & offsets.r_rdy
        else:
            m.d.comb += self.base_w_rdy.eq(1)
            go = free
        reads = [sel[c] & col_fifos[c].r_rdy & go for c in range(C)]
        m.d.comb += [col_fifos[c].r_en.eq(reads[c]) for c in range(C)]
        take = Cat(*reads).any()
        tile_read = take & tile_end
        self._credits(m, tile_read)
        with m.If(take):
            m.d.sync += [stage.valid.eq(1), stage.payload.acc.eq(head_data),
                         sel.eq(sel.rotate_left(1)), mc.eq(Mux(mc == C - 1, 0, mc + 1))]
            if self._fp:
                m.d.sync += stage.payload.exp_offset.eq(row_base[mr])
            with m.If(mc == C - 1):
                m.d.sync += mr.eq(Mux(mr == R - 1, 0, mr + 1))
        with m.Elif(stage.ready):
            m.d.sync += stage.valid.eq(0)
        if self._fp:
            m.d.comb += offsets.r_en.eq(tile_read)
        m.d.comb += [self.o_stream.valid.eq(tf.o_stream.valid),
                     self.o_stream.payload.code.eq(tf.o_stream.payload.code),
                     tf.o_stream.ready.eq(self.o_stream.ready)]
        return m

    def _credits(self, m: Module, tile_read) -> None:
        """The credit counter: ``Q`` at reset, one taken per ``tile_in``, one returned a cycle
        after each tile read out of the column FIFOs (``tile_read``, registered as
        ``returning`` beside the merger)."""
        q = self._config.drain_tiles + self._extra_credits
        free = Signal(range(q + 1), init=q)
        free_next = Signal.like(free)
        returning = Signal()
        m.d.sync += returning.eq(tile_read)
        m.d.comb += free_next.eq(Mux(self.tile_in & ~returning, free - 1,
                                     Mux(returning & ~self.tile_in, free + 1, free)))
        # ``credit`` (free != 0) is a flip-flop: it joins the serializer's pop decision, one
        # LUT before the nets to every column and row site.
        credit = Signal(init=q != 0, name="credit_q")
        m.d.sync += [free.eq(free_next), credit.eq(free_next != 0)]
        m.d.comb += self.credit.eq(credit)
        if self._announce_credit:
            m.d.comb += self.credit_next.eq(free_next != 0)

    def _column(self, m: Module, c: int, split: bool) -> fifo.SyncFIFOBuffered:
        """Column ``c``'s FIFO (``Q * R`` entries), written with the one finished output of
        the column in a cycle (the array's schedule offers at most one, in row order: no
        row pointer, and no ready back into the PEs).

        The gather is registered: with ``split`` in two halves of the column (rows
        ``0 .. ceil(R/2) - 1`` and the rest), each an OR of its outputs into a register among
        its rows, so the FIFO's write is an OR of two flip-flops (at 10 x 10 x 8 the
        column-long OR into the write enable was a 13 ns net); otherwise in one register
        after the column's OR."""
        cfg = self._config
        R = cfg.rows
        q = fifo.SyncFIFOBuffered(width=cfg.acc_width, depth=max(2, cfg.drain_tiles * R))
        m.submodules[f"drain{c}"] = q
        ports = [self.i_acc[r][c] for r in range(R)]
        half = (R + 1) // 2 if split else R
        gathered = []
        for h, part in enumerate(p for p in (ports[:half], ports[half:]) if p):
            valid = Signal(name=f"gather{c}_{h}_valid")
            acc = Signal(cfg.acc_width, name=f"gather{c}_{h}_acc")
            m.d.sync += [valid.eq(Cat(*(port.valid for port in part)).any()),
                         acc.eq(_or_all([Mux(port.valid, port.payload, 0) for port in part]))]
            gathered.append((valid, acc))
        m.d.comb += [q.w_en.eq(_or_all([valid for valid, _ in gathered])),
                     q.w_data.eq(_or_all([acc for _, acc in gathered]))]
        m.d.comb += [port.ready.eq(1) for port in ports]
        # Lost: two outputs in one cycle, or no room (neither happens on the schedule).
        valids = Cat(*(port.valid for port in ports))
        m.d.comb += self.lost[c].eq((valids & (valids - 1)).any() | (q.w_en & ~q.w_rdy))
        return q

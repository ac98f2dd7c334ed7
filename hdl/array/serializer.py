"""The array's column tops: weight encoders and the step serializer."""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.gemm import ArrayConfig
from bitmod.golden.pe_bitplane import BitPlaneConfig, array_bitplane_params
from bitmod.golden.pe_lut import array_lut_params
from bitmod.hdl.arith.term_encoder import REGISTER_LAYOUT, TermEncoderCore

from ..common import read_only
from .front_end import row_operand_layout

__all__ = ["StepSerializer"]


@read_only("config", "col_widths", "row_width", "shift_width")
class StepSerializer(wiring.Component):
    """Turns one weight-step into ``T`` cycles of column and row words (the column tops).

    Per column ``L`` weight codes become the PE's column word
    (:attr:`golden.pe_kind.PEKind.operand`): for bit-serial PEs (``"terms"``) the terms of
    :class:`~hdl.arith.term_encoder.TermEncoderCore` (selector and the shared special-value
    register), term ``t`` of every lane in cycle ``t = 0 .. T-1``; for int (and minifloat) PEs
    (``"codes"``) the raw codes, once (``T = 1``); for LUT-table PEs (``"planes"``) bit-plane
    ``B - 1 - t`` of every lane's plane code in cycle ``t = 0 .. B-1`` (MSB first; the code, or
    its offset binary with the top bit inverted for signed formats,
    :func:`golden.pe_lut.plane_codes`); for bit-plane PEs (``"bitplanes"``) in cycle ``t`` of
    the ``T = P_w * P_a`` pairs of :func:`golden.pe_bitplane.pair_schedule` weight plane
    ``i(t)`` of every lane's code (the codes are held, the plane picked by a ROM on ``t``),
    and activation plane ``j(t)`` of every lane in the row word (``row_operand`` ``"planes"``:
    ``L`` bits, changing every cycle). A step is taken (``ready``) when the previous one's last
    cycle leaves; the group-end rule keeps the PEs' dequantizers from stalling: the
    last cycle of a group leaves only when the previous group end is at least ``D`` cycles
    back (``D + 2`` after a tile's end), ``D`` = :attr:`golden.gemm.ArrayConfig.dequant_cycles`,
    idle cycles (``emit`` low) filling the gap. The last cycle of a tile (``out_last``) also
    waits until the previous tile's end is at least ``R`` cycles back (a column's drain takes
    one output per cycle) and for a drain ``credit`` (room for the tile's outputs). Nothing
    else waits: the serializer, like the whole array, never stalls on the PEs.

    Column word ``c`` (LSB first, widths :attr:`col_widths`): term index ``t`` (``ceil(log2
    T)`` bits, none when ``T = 1``; for ``"planes"`` one bit, ``step_last``, set in the step's
    last cycle; for ``"bitplanes"`` three, ``step_last``, ``negate`` and ``shift`` of the
    pair), ``group_last`` and ``out_last`` of this cycle (set in the step's last cycle only),
    the ``L`` lanes' terms (or codes, or plane bits; with zero points a lane ``L`` beside them:
    the terms of the column's zero point ``zp`` in a step that ends a group, of 0 in the
    others, from one more encoder), the column's scale code (for a PE
    kind whose scale is a shift, :attr:`golden.pe_kind.PEKind.scale`, the exponent ``j`` of
    the code ``2**j``: ``ceil(log2 scale_bits)`` bits). Row word ``r`` (:attr:`row_width`
    bits): its operand
    (:func:`~hdl.array.front_end.row_operand_layout`: ``L`` activations, with zero points and
    the row's group sum ``rowsum`` after them, or the LUT PE's half
    tables and correction, the correction in the step's last cycle only and 0 in the others,
    as the PE adds it on every plane), then its group shift (:attr:`shift_width` bits; none
    for INT8 activations).

    Steps wait in two entries, taken while one is free (``ready`` is a flip-flop: not both
    held) and written in turn; the head entry is read through a multiplexer. So the wide
    registers' enables are the offer and a flip-flop, never the spacing rules or the
    credit, which reach only the small state (the term counter and the entry pointers).

    Latency: 1 cycle from a taken step to its first column word (a register). Throughput:
    one step per ``T`` cycles plus the group-end gaps (:func:`golden.gemm.tile_cycles`).

    Parameters
    ----------
    config : golden.gemm.ArrayConfig

    Members
    -------
    valid, ready : In(1), Out(1)
        A step is offered; it is taken this cycle (an entry is free: a flip-flop).
    codes : In(ArrayLayout(ArrayLayout(code_bits, L), C))
    sel : In(ArrayLayout(2, C))
    scale : In(C * scale_bits)
    zp : In(ArrayLayout(code_bits, C))
        The columns' group zero points (with ``zero_points``; offset codes like the weights).
    acts : In(R * row_operand_layout(config).size)
        The rows' operands (``L * A`` bits of activations per row, or tables).
    shift : In(R * X) (FP activations; 1 bit, unused, for INT8)
    group_last, out_last : In(1)
    credit : In(1)
        The drain has room for one more tile's outputs (a tile's last cycle leaves only then).
    special_values : In(32)
    emit : Out(1)
        This cycle's column and row words are a real step (not an idle gap).
    tile_end : Out(1)
        This cycle's words end a tile (``emit`` and ``out_last``): it takes the drain credit.
    cols : Out(C * sum(col_widths)); rows : Out(R * row_width)
    """

    def __init__(self, config: ArrayConfig):
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig, not {config!r}")
        self._config = cfg = config
        geo = cfg.geometry
        self._lane_bits = {"codes": geo.code_bits, "terms": geo.exp_bits + 2,
                           "planes": 1, "bitplanes": 1}[cfg.kind.operand]
        # Bits a lane's step word holds: its T words, or for "bitplanes" the code itself (the
        # plane is picked per cycle).
        self._stored_bits = (geo.code_bits if cfg.kind.operand == "bitplanes"
                             else cfg.terms * self._lane_bits)
        self._row_operand = row_operand_layout(cfg)
        # "planes" rows: one activation plane of the L lanes per cycle (row_operand_layout is
        # the activations the serializer takes and holds for the step).
        self._row_word_bits = (cfg.lanes if cfg.kind.row_operand == "planes"
                               else self._row_operand.size)
        fp = cfg.act_format != "int8"
        self._shift_width = cfg.act_exp_bits if fp else 0
        # A PE kind that shifts by the group scale gets the exponent j of the code 2**j.
        self._scale_shift = cfg.kind.scale == "shift"
        scale_field = ((cfg.scale_bits - 1).bit_length() if self._scale_shift
                       else cfg.scale_bits)
        if cfg.kind.operand == "planes":
            index_width = 1  # step_last
        elif cfg.kind.operand == "bitplanes":
            index_width = 3  # step_last, negate, shift
        else:
            index_width = (cfg.terms - 1).bit_length() if cfg.terms > 1 else 0
        self._lanes = cfg.lanes + cfg.zero_points  # the zero point rides as one more lane
        self._col_widths = (index_width, 1, 1, self._lanes * self._lane_bits, scale_field)
        self._row_width = self._row_word_bits + self._shift_width
        code = unsigned(geo.code_bits)
        super().__init__({
            "valid": In(1), "ready": Out(1),
            "codes": In(data.ArrayLayout(data.ArrayLayout(code, cfg.lanes), cfg.cols)),
            "sel": In(data.ArrayLayout(unsigned(2), cfg.cols)),
            "scale": In(max(cfg.cols * cfg.scale_bits, 1)),
            "zp": In(data.ArrayLayout(code, cfg.cols if cfg.zero_points else 0)),
            "acts": In(cfg.rows * self._row_operand.size),
            "shift": In(max(cfg.rows * cfg.act_exp_bits, 1)),
            "group_last": In(1), "out_last": In(1), "credit": In(1),
            "special_values": In(REGISTER_LAYOUT.size),
            "emit": Out(1), "tile_end": Out(1),
            "cols": Out(cfg.cols * sum(self._col_widths)),
            "rows": Out(cfg.rows * self._row_width),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, T = cfg.rows, cfg.cols, cfg.terms
        L = self._lanes  # the weight lanes and the zero point's
        lane_bits, row_bits = self._lane_bits, self._row_operand.size
        words = self._lane_words(m)

        t = Signal(range(max(T, 2)))
        stored = self._stored_bits
        # Two entries, written in turn (``wp``) and read in turn (``rp``): a step is written
        # into the free one (enable: the offer and a flip-flop), the serializer reads the
        # head through a multiplexer, so no wide register's enable waits for the spacing
        # rules below. The data registers need no reset (the counts say what they hold).
        entries = []
        for k in range(2):
            entries.append({
                "terms": [Signal(L * stored, name=f"e{k}_terms{c}", reset_less=True)
                          for c in range(C)],
                "acts": Signal(R * row_bits, name=f"e{k}_acts", reset_less=True),
                "shift": Signal(len(self.shift), name=f"e{k}_shift", reset_less=True),
                "scale": Signal(len(self.scale), name=f"e{k}_scale", reset_less=True),
                "gl": Signal(name=f"e{k}_gl", reset_less=True),
                "ol": Signal(name=f"e{k}_ol", reset_less=True),
            })
        wp, rp = Signal(), Signal()
        valid = Signal()  # the head entry holds a step (one or two are held)
        full = Signal()  # both are
        terms = [Mux(rp, entries[1]["terms"][c], entries[0]["terms"][c]) for c in range(C)]
        acts, shift, scale, gl, ol = (Mux(rp, entries[1][name], entries[0][name])
                                      for name in ("acts", "shift", "scale", "gl", "ol"))

        d = cfg.dequant_cycles
        gap = Signal(range(d + 3), init=d + 2)  # cycles since the last group end, saturating
        tile_gap = Signal(range(max(R, 2)), init=max(R - 1, 1))  # since the last tile end
        prev_ol = Signal()
        last_t = t == T - 1
        # The spacing rules as flags registered one cycle ahead (group_ok: gap + 1 >= D, or
        # D + 2 after a tile end; spaced: tile_gap + 1 >= R): no compare on the ready path.
        group_ok = Signal(init=1)
        spaced = Signal(init=1)
        tile_ok = self.credit & spaced
        emit_ok = ~(valid & gl & last_t) | (group_ok & (~ol | tile_ok))
        out_gl, out_ol = Signal(), Signal()
        m.d.comb += [self.emit.eq(valid & emit_ok), out_gl.eq(gl & last_t),
                     out_ol.eq(ol & last_t), self.tile_end.eq(self.emit & out_ol)]
        pop = valid & emit_ok & last_t  # the head step's last cycle leaves
        push = self.valid & ~full
        m.d.comb += self.ready.eq(~full)
        for k, entry in enumerate(entries):
            with m.If(push & (wp == k)):
                m.d.sync += [entry["acts"].eq(self.acts), entry["shift"].eq(self.shift),
                             entry["scale"].eq(self.scale), entry["gl"].eq(self.group_last),
                             entry["ol"].eq(self.out_last)]
                m.d.sync += [entry["terms"][c].eq(words[c]) for c in range(C)]
        m.d.sync += [wp.eq(wp ^ push), rp.eq(rp ^ pop)]
        # Held after this cycle: valid + full (0, 1 or 2), plus push, minus pop.
        with m.If(push & ~pop):
            m.d.sync += [valid.eq(1), full.eq(valid)]
        with m.Elif(pop & ~push):
            m.d.sync += [valid.eq(full), full.eq(0)]
        with m.If(pop):
            m.d.sync += t.eq(0)
        with m.Elif(self.emit):
            m.d.sync += t.eq(t + 1)
        with m.If(self.emit & out_gl):
            m.d.sync += [gap.eq(0), prev_ol.eq(out_ol), group_ok.eq(Mux(out_ol, d + 2, d) <= 1)]
        with m.Elif(gap != d + 2):
            m.d.sync += [gap.eq(gap + 1), group_ok.eq(gap + 2 >= Mux(prev_ol, d + 2, d))]
        with m.If(self.tile_end):
            m.d.sync += [tile_gap.eq(0), spaced.eq(R <= 1)]
        with m.Elif(tile_gap != max(R - 1, 1)):
            m.d.sync += [tile_gap.eq(tile_gap + 1), spaced.eq(tile_gap + 2 >= R)]

        pairs = self._pair_rom(m, t) if cfg.kind.operand == "bitplanes" else None
        cols = []
        for c in range(C):
            if pairs is not None:  # bit w_plane of every lane's code
                lanes = Cat(*(terms[c].word_select(lane, stored).bit_select(pairs["w"], 1)
                              for lane in range(L)))
            else:
                lanes = Cat(*(terms[c].word_select(lane * T + t, lane_bits) if T > 1
                              else terms[c][lane * lane_bits:(lane + 1) * lane_bits]
                              for lane in range(L)))
            if pairs is not None:
                index = Cat(last_t, pairs["negate"], pairs["shift"])
            elif cfg.kind.operand == "planes":
                index = last_t  # step_last
            else:
                index = t[:self._col_widths[0]] if T > 1 else Const(0, 0)
            sb = cfg.scale_bits
            code = scale[c * sb:(c + 1) * sb]
            if self._scale_shift:
                code = self._exponent(m, code, self._col_widths[4], f"scale_exp{c}")
            cols.append(Cat(index, out_gl, out_ol, lanes, code))
        X = self._shift_width
        rows = [Cat(self._row_operand_word(acts[r * row_bits:(r + 1) * row_bits], last_t, pairs),
                    shift[r * X:(r + 1) * X]) for r in range(R)]
        m.d.comb += [self.cols.eq(Cat(*cols)), self.rows.eq(Cat(*rows))]
        return m

    def _pair_rom(self, m: Module, t) -> dict:
        """The bit-plane PE's plane pair of cycle ``t``
        (:func:`golden.pe_bitplane.pair_schedule`): weight plane ``w``, activation plane
        ``a``, ``negate`` and ``shift``, a small ROM on ``t``."""
        cfg = BitPlaneConfig(**array_bitplane_params(self._config))
        schedule = cfg.schedule
        out = {"w": Signal(range(max(cfg.w_enc.n_planes, 2)), name="pair_w"),
               "a": Signal(range(max(cfg.a_enc.n_planes, 2)), name="pair_a"),
               "negate": Signal(name="pair_negate"), "shift": Signal(name="pair_shift")}
        with m.Switch(t):
            for k, pair in enumerate(schedule):
                with m.Case(k):
                    m.d.comb += [out["w"].eq(pair.w), out["a"].eq(pair.a),
                                 out["negate"].eq(pair.negate), out["shift"].eq(pair.shift)]
        return out

    def _row_operand_word(self, operand, last_t, pairs=None):
        """A row's operand this cycle: as taken, except a table row's correction, which goes
        with the step's last plane only (the LUT PE adds ``corr`` on every payload), and for
        ``"planes"`` rows activation plane ``a`` of cycle ``t``'s pair, one bit per lane."""
        kind = self._config.kind
        if kind.row_operand == "planes":
            A = self._config.act_width
            return Cat(*(operand.word_select(lane, A).bit_select(pairs["a"], 1)
                         for lane in range(self._config.lanes)))
        if kind.row_operand != "tables":
            return operand
        corr = self._row_operand["corr"]
        lo, hi = corr.offset, corr.offset + corr.width
        return Cat(operand[:lo], Mux(last_t, operand[lo:hi], 0), operand[hi:])

    @staticmethod
    def _exponent(m: Module, code, width: int, name: str) -> Signal:
        """``j`` of a power-of-two code ``2**j``: the index of its highest set bit (the host
        and golden refuse other codes for a shifting PE kind, golden.gemm.check_weights)."""
        j = Signal(width, name=name)
        for bit in range(len(code)):
            with m.If(code[bit]):
                m.d.comb += j.eq(bit)
        return j

    def _lane_words(self, m: Module) -> list:
        """Per column, the ``L`` lanes' words of this step: encoder terms, the codes (also for
        ``"bitplanes"``, whose planes are picked per cycle), or the plane codes' bits MSB first
        (bit ``t`` is plane ``B - 1 - t``)."""
        cfg = self._config
        if cfg.kind.operand == "planes":
            bits, signed = (array_lut_params(cfg)[k] for k in ("weight_bits", "signed_weights"))
            flip = 1 << (bits - 1) if signed else 0  # offset binary: the top bit inverted
            words = []
            for c in range(cfg.cols):
                lanes = []
                for lane in range(cfg.lanes):
                    u = self.codes[c][lane] ^ flip
                    lanes.append(Cat(*(u[bits - 1 - t] for t in range(bits))))
                words.append(Cat(*lanes))
            return words
        words = []
        for c in range(cfg.cols):
            codes = [self.codes[c][lane] for lane in range(cfg.lanes)]
            if cfg.zero_points:  # the zero point's terms in a group's last step only
                codes.append(Mux(self.group_last, self.zp[c], 0))
            column = []
            for lane, code in enumerate(codes):
                if cfg.kind.operand in ("codes", "bitplanes"):  # e.g. the int PE's codes
                    column.append(code)
                    continue
                enc = TermEncoderCore(list(cfg.formats))
                m.submodules[f"enc{c}_{lane}"] = enc
                m.d.comb += [enc.code.eq(code), enc.selector.eq(self.sel[c]),
                             enc.special_values.eq(self.special_values)]
                column.append(enc.terms)
            words.append(Cat(*column))
        return words

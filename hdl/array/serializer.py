"""The array's column tops: weight encoders and the step serializer."""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.gemm import ArrayConfig
from bitmod.golden.pe_bitplane import BitPlaneConfig, array_bitplane_params
from bitmod.golden.pe_lut import array_lut_params
from bitmod.hdl.arith.term_encoder import REGISTER_LAYOUT, TermEncoderCore

from ..common import keep_apart, read_only
from .front_end import row_operand_layout

__all__ = ["StepSerializer"]


@read_only("config", "col_widths", "row_width", "shift_width", "site_copies",
           "site_lanes", "column_control")
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
    idle cycles (``col_valid`` low) filling the gap. The last cycle of a tile (``out_last``) also
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

    For ``"terms"`` the entries hold the codes and the selector, and each lane's encoder sits
    between its site's head multiplexer and output register: half the flip-flops of holding
    the terms, and the encoders beside their column (before the entries, an encoder of the
    ULX3S 10 x 10 x 8 build at 82 MHz sat 20 columns from its column, pulled by the
    special-value register: 13.4 ns into column 0's entry).

    Steps wait in ``N`` entries (``entries``, by default
    :attr:`golden.gemm.ArrayConfig.feed_entries`), taken while
    one is free (``ready`` is a flip-flop: not all held) and written in turn; the head entry
    is read through a multiplexer, and the words leave from output registers. The array
    admits a step only with a credit for a free entry, so in the array ``ready`` is never low
    when a step arrives; ``freed`` returns the credit. The spacing rules and the drain credit
    reach only the central state (the term counter and the entry pointers, a few
    flip-flops). Every column and row (a *site*) holds its own slice of the entries and its
    own copies of the pointers and the term counter, loaded with the central next values
    (with ``site_copies`` a write pointer of its own; with stage 3 the read side's copies a
    cycle behind) and kept apart (:data:`hdl.common.KEEP_APART`): so the wide enables and
    multiplexer selects are local to the site, and a central net reaches a few flip-flops
    per site instead of every entry bit across the array's edge.

    Latency: :attr:`golden.gemm.ArrayConfig.serializer_latency` = 2 + ``S`` cycles from a
    taken step to its first column word (the entry, ``S`` extra stages, then the output
    register; ``S`` = :attr:`golden.gemm.DatapathParams.serializer_stages`); ``tile_end`` is
    decided ``1 + S`` cycles before its word leaves. Each column's encoders read a copy of the
    special values of their own (with extra stages or ``site_lanes``). Extra stage 1 reads
    every site's head entry into a register, stage 2 registers the encoders' terms (and
    delays the rows alike; with ``site_lanes`` the term counter once more per site's lanes,
    :meth:`_lane_term_copies`):
    they split each site's path from its pointer copies through the head multiplexer, the
    encoders and the term select (at 7 x 6 x 16 on the ULX3S, asked for 100 MHz: 80 and 208
    of the 110 and 333 endpoints over 10 ns were the column words, up to 12.5 ns through one
    encoder, 11 ns of it routing between the entries and the column's output register).
    Extra stage 3, the echo, loads every site's copies of the read pointer and the term
    counter from the central flip-flops instead of their next values: each site reads its
    head a cycle after the central state decided it (a write into a freed entry still comes
    after its last read), and the nets that reach every site leave flip-flops, not the
    two LUTs of the next values (the ULX3S 7 x 6 x 16 builds: 6-7 ns of such a net, 10.2 to
    11.2 ns into a site's pointer copy).
    Throughput: one step per ``T`` cycles plus the group-end gaps (:func:`golden.gemm.tile_cycles`).

    Parameters
    ----------
    config : golden.gemm.ArrayConfig
    entries : int, optional
        ``N``, at least 2 (default :attr:`golden.gemm.ArrayConfig.feed_entries`).
    site_copies : bool
        The sites take ``valid`` from :attr:`site_valid`, one copy each, which the sender
        keeps equal to ``valid`` in every cycle (the array: kept-apart registers of its own
        beside the front end's, so that no one flip-flop drives the entry enables of every
        site: the ULX3S 10 x 10 x 8 build at 82 MHz, seed 2, had the front end's ``valid``
        → one net of 10.8 ns → row 1's write enables). The sender then offers a step only
        while ``ready`` (the array's feed credits): a site pushes on its copy alone and
        steps a write pointer of its own, with no copy of ``full`` or of the central write
        pointer (their nets from the central next values reached every site: 5.5-11.2 ns in
        the 7 x 6 x 16 builds). Default False: ``valid`` alone, refused while full.
    site_lanes : int or None
        Lanes per site: a column's or row's entries are split into sites of at most this many
        lanes, each with its own copies of the pointers and of ``valid`` (:meth:`_sites`).
        Default None: one site per column and row.
    column_control : bool
        With the echo stage (``serializer_stages >= 3``): every column and row has its own
        flip-flops of the cycle's case (``run``, ``sure_pop``, ``tile_pop``, loaded alike
        with the central ones) and of the drain's ``credit`` (loaded from
        :attr:`credit_next`), and its echo sources and its ``emit`` copies step on its own
        ``pop`` and ``emit``, one LUT from them: the central decision's LUT does not drive
        every column's and row's registers across the chip (the ULX3S 7 x 6 x 16 builds at
        100 MHz asked: ``pop`` -> the columns' term-counter sources, 12.4 ns; ``emit`` -> their
        ``emitted`` copies, 11.2 ns). The same cycles. Default False.

    Members
    -------
    valid, ready : In(1), Out(1)
        A step is offered; it is taken this cycle (an entry is free: a flip-flop).
    site_valid : In(site_count)
        With ``site_copies``: ``valid``'s copy for each site, the columns' first (column
        ``c``'s sites from bit ``c * ceil(L' / site_lanes)``), then the rows'; ``C + R``
        bits, column ``c`` at bit ``c`` and row ``r`` at ``C + r``, without ``site_lanes``.
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
    credit_next : In(1)
        With ``column_control``: ``credit`` of the next cycle (the drain's next count is not
        zero); ``credit`` is set after reset.
    special_values : In(32)
        The special-value register, static while steps run (the encoders read it as the
        head step's terms leave, so a change reaches the steps held too). With extra stages
        each column's encoders read a copy of their own, a cycle behind (kept apart).
    col_valid : Out(C)
        Column ``c``'s word (and the rows' words) this cycle are a real step, not an idle
        gap: one registered copy per column, all equal.
    tile_end : Out(1)
        The words leaving next cycle end a tile (their ``out_last``): it takes the drain
        credit.
    freed : Out(1)
        A step's last term left its entry in the previous cycle (registered): the entry is
        free again.
    popping : Out(1)
        A step's last term leaves its entry this cycle (``freed`` a cycle early).
    cols : Out(C * sum(col_widths)); rows : Out(R * row_width)
    """

    def __init__(self, config: ArrayConfig, entries: int | None = None, *,
                 site_copies: bool = False, site_lanes: int | None = None,
                 column_control: bool = False):
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig, not {config!r}")
        if not isinstance(site_copies, bool):
            raise TypeError(f"site_copies must be a bool, not {site_copies!r}")
        if not isinstance(column_control, bool):
            raise TypeError(f"column_control must be a bool, not {column_control!r}")
        if column_control and config.serializer_stages < 3:
            raise ValueError(f"column_control needs serializer_stages >= 3 (the echo stage), "
                             f"not {config.serializer_stages}")
        self._column_control = column_control
        if site_lanes is not None and (not isinstance(site_lanes, int)
                                       or isinstance(site_lanes, bool) or site_lanes < 1):
            raise ValueError(f"site_lanes must be None or an int of at least 1, not "
                             f"{site_lanes!r}")
        self._site_copies = site_copies
        self._site_lanes = site_lanes
        self._config = cfg = config
        self._entries = config.feed_entries if entries is None else entries
        if not isinstance(self._entries, int) or self._entries < 2:
            raise ValueError(f"entries must be an int of at least 2, not {entries!r}")
        geo = cfg.geometry
        self._lane_bits = {"codes": geo.code_bits, "terms": geo.exp_bits + 2,
                           "planes": 1, "bitplanes": 1}[cfg.kind.operand]
        # Bits a lane's step word holds: its T words, or for "bitplanes" the code itself (the
        # plane is picked per cycle), and for "terms" the code too (encoded after the entries).
        self._stored_bits = (geo.code_bits if cfg.kind.operand in ("bitplanes", "terms")
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
        # Sites per column and per row: their lanes in slices of at most site_lanes.
        self._site_split = ((1, 1) if site_lanes is None
                            else (-(-self._lanes // site_lanes), -(-cfg.lanes // site_lanes)))
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
            **({"credit_next": In(1)} if column_control else {}),
            "special_values": In(REGISTER_LAYOUT.size),
            "col_valid": Out(cfg.cols), "tile_end": Out(1), "freed": Out(1), "popping": Out(1),
            "cols": Out(cfg.cols * sum(self._col_widths)),
            "rows": Out(cfg.rows * self._row_width),
            **({"site_valid": In(self.site_count)} if site_copies else {}),
        })

    @property
    def site_split(self) -> tuple[int, int]:
        """``(per_col, per_row)``: the sites of each column and of each row (``(1, 1)``
        without ``site_lanes``)."""
        return self._site_split

    @property
    def site_count(self) -> int:
        """The sites (:attr:`site_valid`'s bits): ``C * ceil(L' / site_lanes) + R * ceil(L /
        site_lanes)`` (``L'`` = L, plus one with zero points), ``C + R`` without
        ``site_lanes``."""
        per_col, per_row = self._site_split
        return self._config.cols * per_col + self._config.rows * per_row

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C = cfg.rows, cfg.cols
        row_bits = self._row_operand.size
        ctl = self._control(m)
        words = self._lane_words()
        # The sites: per column its lanes, scale and step-end bits, per row its operand and
        # shift; each holds its slice of the entries and its own copies of the pointers.
        sb, X = cfg.scale_bits, self._shift_width
        cols = []
        site_valid = (self.site_valid if self._site_copies
                      else Cat(*[self.valid] * self.site_count))
        per_col, per_row = self._site_split
        for c in range(C):
            fields = {"terms": (words[c], self._lanes * self._stored_bits),
                      "scale": (self.scale[c * sb:(c + 1) * sb], sb),
                      "gl": (self.group_last, 1), "ol": (self.out_last, 1)}
            if cfg.kind.operand == "terms":  # the encoders' selector, after the entries
                fields["sel"] = (self.sel[c], 2)
            valids = site_valid[c * per_col:(c + 1) * per_col]
            col_ctl = self._local_control(m, ctl, f"col{c}")
            site = self._sites(m, col_ctl, f"col{c}", valids, fields, "terms", with_t=True)
            cols.append(self._column_word(m, site, f"col{c}"))
            # ``emit`` through one register per extra stage, then the output register's.
            valid = col_ctl["emit"]
            for stage in range(cfg.serializer_stages):
                emitted = keep_apart(Signal(name=f"col{c}_emitted{stage}"))
                m.d.sync += emitted.eq(valid)
                valid = emitted
            out_valid = keep_apart(Signal(name=f"col{c}_valid"))
            m.d.sync += out_valid.eq(valid)
            valid = out_valid
            m.d.comb += self.col_valid[c].eq(valid)
        rows = []
        for r in range(R):
            first = C * per_col + r * per_row
            row_ctl = self._local_control(m, ctl, f"row{r}")
            site = self._sites(m, row_ctl, f"row{r}", site_valid[first:first + per_row], {
                "acts": (self.acts[r * row_bits:(r + 1) * row_bits], row_bits),
                "shift": (self.shift[r * X:(r + 1) * X], X)}, "acts",
                with_t=cfg.kind.row_operand in ("tables", "planes"))
            if cfg.serializer_stages >= 2:  # as the columns' term register
                site = self._delay(m, site, f"row{r}_terms")
            pairs = (self._pair_rom(m, site["t"], f"row{r}")
                     if cfg.kind.row_operand == "planes" else None)
            rows.append(Cat(self._row_operand_word(site["acts"], site["last_t"], pairs),
                            site["shift"]))
        # The output registers: every word leaves from a flip-flop beside its column or row.
        for name, words_out, port in (("cols", cols, self.cols), ("rows", rows, self.rows)):
            reg = Signal(len(port), name=f"{name}_out", reset_less=True)
            m.d.sync += reg.eq(Cat(*words_out))
            m.d.comb += port.eq(reg)
        return m

    def _control(self, m: Module) -> dict:
        """The central state: the entries' occupancy and pointers, the term counter and the
        spacing rules. Returns this cycle's ``emit`` and the next values of the pointers, the
        term counter and ``full``, which every site copies.

        The emit and pop decision of a cycle is made a cycle ahead: flip-flops hold which of
        its cases the next cycle is in (a term of a step that is not its last, ``run``; a
        step's last term that leaves unconditionally, ``free_pop``, at a group end with the
        group spacing met, ``group_pop``, or at a tile end with both spacings met,
        ``tile_pop``, which waits for the drain ``credit`` too; the first two also as one
        flip-flop, ``sure_pop``), computed from the next values of the occupancy, the term
        counter, the head entry's ends and the spacing flags. So ``pop`` is one LUT of three
        flip-flops and the sites' next values two LUTs
        from flip-flops (at 10 x 10 x 8 the decision was about six LUTs before its nets to
        every site: the ULX3S builds' paths at 75 MHz, 12.2-13.3 ns)."""
        cfg = self._config
        R, T, N = cfg.rows, cfg.terms, self._entries
        # The term counter (none for one term per step: its copies would be dead logic).
        t = Signal(range(T), name="t") if T > 1 else Const(0, 1)
        wp, rp = Signal(range(N), name="wp"), Signal(range(N), name="rp")
        held = Signal(range(N + 1), name="held")  # steps held
        full = Signal(name="full")  # held == N, and almost: held == N - 1 (flip-flops)
        almost = Signal(init=N == 1, name="almost")
        gls = Signal(N, name="entry_gl")  # the entries' group and tile ends
        ols = Signal(N, name="entry_ol")
        d = cfg.dequant_cycles
        gap = Signal(range(d + 3), init=d + 2)  # cycles since the last group end, saturating
        tile_gap = Signal(range(max(R, 2)), init=max(R - 1, 1))  # since the last tile end
        prev_ol = Signal()
        # The spacing rules as flags (group_ok: gap + 1 >= D, or D + 2 after a tile end;
        # spaced: tile_gap + 1 >= R), and this cycle's case, all flip-flops.
        group_ok = Signal(init=1)
        spaced = Signal(init=1)
        case = {name: Signal(name=name)
                for name in ("run", "sure_pop", "group_pop", "tile_pop", "free_tile")}
        # ``sure_pop`` is ``free_pop | group_pop`` in one flip-flop: ``popping`` is then one LUT
        # of three flip-flops, and the array's ``ready_next`` after it one more (the ULX3S
        # 7 x 6 x 16 build at 100 MHz, seed 1: the drain credit -> the pop -> ``popping`` ->
        # ``ready_next`` -> the reader's next enables -> an enable copy, six LUTs, 11.4 ns).
        tile_go = case["tile_pop"] & self.credit
        pop = case["sure_pop"] | tile_go  # the head step's last term leaves
        emit = Signal(name="emit")
        group_end = case["group_pop"] | tile_go  # a group's last term leaves
        m.d.comb += [emit.eq(case["run"] | pop),
                     self.tile_end.eq(case["free_tile"] | tile_go)]
        push = self.valid & ~full
        m.d.comb += self.ready.eq(~full)
        m.d.comb += self.popping.eq(pop)
        m.d.sync += self.freed.eq(pop)

        def step(pointer, on):
            return Mux(on, Mux(pointer == N - 1, 0, pointer + 1), pointer)
        nxt = {"t": Signal.like(t, name="t_next") if T > 1 else t,
               "rp": Signal.like(rp, name="rp_next"),
               "wp": Signal.like(wp, name="wp_next"), "full": Signal(name="full_next")}
        held_next = Signal.like(held, name="held_next")
        # How the term counter and read pointer step: the central ones and the columns' and
        # rows' own copies (_echo_sources) alike.
        def advance_on(pop, run):
            return {"t": lambda now: Mux(pop, 0, Mux(run, now + 1, now)),
                    "rp": lambda now: step(now, pop)}
        advance = advance_on(pop, case["run"])
        if T > 1:  # (emit without pop is run)
            m.d.comb += nxt["t"].eq(advance["t"](t))
            m.d.sync += t.eq(nxt["t"])
        m.d.comb += [nxt["rp"].eq(advance["rp"](rp)), nxt["wp"].eq(step(wp, push)),
                     held_next.eq(held + push - pop),
                     nxt["full"].eq(Mux(push & ~pop, almost, Mux(pop & ~push, 0, full)))]
        m.d.sync += [rp.eq(nxt["rp"]), wp.eq(nxt["wp"]), full.eq(nxt["full"]),
                     held.eq(held_next), almost.eq(held_next == N - 1)]
        for reg in (t, rp, wp, full):  # else merged with a site's copy (equal next values)
            if isinstance(reg, Signal):
                keep_apart(reg)
        for k in range(N):
            with m.If(push & (wp == k)):
                m.d.sync += [gls[k].eq(self.group_last), ols[k].eq(self.out_last)]
        # The spacing flags' next values.
        group_ok_next, spaced_next = Signal(name="group_ok_next"), Signal(name="spaced_next")
        m.d.comb += [
            group_ok_next.eq(Mux(group_end, Mux(tile_go, d + 2, d) <= 1,
                                 Mux(gap != d + 2, gap + 2 >= Mux(prev_ol, d + 2, d),
                                     group_ok))),
            spaced_next.eq(Mux(self.tile_end, R <= 1,
                               Mux(tile_gap != max(R - 1, 1), tile_gap + 2 >= R, spaced))),
        ]
        m.d.sync += [group_ok.eq(group_ok_next), spaced.eq(spaced_next)]
        with m.If(group_end):
            m.d.sync += [gap.eq(0), prev_ol.eq(tile_go)]
        with m.Elif(gap != d + 2):
            m.d.sync += gap.eq(gap + 1)
        with m.If(self.tile_end):
            m.d.sync += tile_gap.eq(0)
        with m.Elif(tile_gap != max(R - 1, 1)):
            m.d.sync += tile_gap.eq(tile_gap + 1)
        # The next cycle's case: its head entry's ends (the step pushed now, if it is the
        # head then) and term.
        pushed_head = push & (wp == nxt["rp"])
        gl = Mux(pushed_head, self.group_last, gls.bit_select(nxt["rp"], 1))
        ol = Mux(pushed_head, self.out_last, ols.bit_select(nxt["rp"], 1))
        ends = (held_next != 0) & (nxt["t"] == T - 1)  # a last term is offered
        case_next = {"run": (held_next != 0) & (nxt["t"] != T - 1),
                     "sure_pop": ends & (~gl | group_ok_next & ~ol),  # free_pop | group_pop
                     "free_tile": ends & ~gl & ol,
                     "group_pop": ends & gl & group_ok_next & ~ol,
                     "tile_pop": ends & gl & group_ok_next & ol & spaced_next}
        m.d.sync += [case[name].eq(case_next[name]) for name in
                     ("run", "sure_pop", "free_tile", "group_pop", "tile_pop")]
        return {"emit": emit, "next": nxt, "now": {"t": t, "rp": rp}, "advance": advance,
                "advance_on": advance_on, "case_next": case_next}

    def _local_control(self, m: Module, ctl: dict, name: str) -> dict:
        """With :attr:`column_control`, a column's or row's own control (``ctl`` with its own
        ``emit`` and ``advance``): its flip-flops of ``run``, ``sure_pop`` and ``tile_pop``,
        loaded with the central ones' next values, and of the drain's credit, loaded from
        :attr:`credit_next`, all kept apart, so ``pop = sure_pop | tile_pop & credit`` and
        ``emit = run | pop`` are one LUT from flip-flops beside the column or row, equal to
        the central ones in every cycle. Otherwise ``ctl``."""
        if not self._column_control:
            return ctl
        flags = {}
        for key in ("run", "sure_pop", "tile_pop"):
            flags[key] = keep_apart(Signal(name=f"{name}_{key}"))
            m.d.sync += flags[key].eq(ctl["case_next"][key])
        credit = keep_apart(Signal(init=1, name=f"{name}_credit"))
        m.d.sync += credit.eq(self.credit_next)
        pop = Signal(name=f"{name}_pop")
        emit = Signal(name=f"{name}_emit")
        m.d.comb += [pop.eq(flags["sure_pop"] | flags["tile_pop"] & credit),
                     emit.eq(flags["run"] | pop)]
        return {**ctl, "emit": emit, "advance": ctl["advance_on"](pop, flags["run"])}

    def _sites(self, m: Module, ctl: dict, name: str, valids, fields: dict, wide: str,
               with_t: bool) -> dict:
        """A column's or row's sites, one per bit of ``valids`` (their copies of the offer):
        the ``wide`` field in equal slices (by lanes for the columns' terms), one per site,
        and the other fields with the first site's (a column's selector with every site's,
        and every column site has its own term counter copy). All sites hold the same steps
        in the same cycles (their pointer copies are equal), so the head is the slices'
        heads side by side with the first site's other fields, term counter and ``last_t``,
        and for a column ``lane_heads``: per lane, its own site's head (its selector and
        term counter for the lane's encoder and term select). Each site's
        entry enables then reach a slice of the lanes (at 7 x 6 x 16, one column site's
        enable net spanned 40 columns of the chip: 7 ns)."""
        n = len(valids)
        if self._config.serializer_stages >= 3:
            ctl = self._echo_sources(m, ctl, name, with_t)
        if n == 1:
            return self._site(m, ctl, name, valids[0], fields, with_t)
        value, width = fields[wide]
        unit = self._stored_bits if wide == "terms" else 1  # slices at lane boundaries
        bounds = [width // unit * j // n * unit for j in range(n)] + [width]
        heads = []
        for j in range(n):
            part = {wide: (value[bounds[j]:bounds[j + 1]], bounds[j + 1] - bounds[j])}
            if j == 0:
                part.update({key: v for key, v in fields.items() if key != wide})
            elif "sel" in fields:  # each site's encoders read a selector of their own
                part["sel"] = fields["sel"]
            # A column's every site has its own term counter copy, for its lanes' term select.
            heads.append(self._site(m, ctl, f"{name}_{j}", valids[j], part,
                                    with_t and (j == 0 or wide == "terms")))
        joined = {**heads[0], wide: Cat(*(head[wide] for head in heads))}
        if wide == "terms":  # per lane, the head of the site holding it (_column_word)
            joined["lane_heads"] = [heads[j] for j in range(n)
                                    for _ in range(bounds[j] // unit, bounds[j + 1] // unit)]
        return joined

    def _echo_sources(self, m: Module, ctl: dict, name: str, with_t: bool) -> dict:
        """A column's or row's own copies of the central term counter and read pointer, for
        its sites' echo copies to follow (``ctl`` with them as its ``now``): each steps as
        the central register does (``ctl["advance"]``, from the same reset), so all are equal
        in every cycle, and each drives the few sites of one column or row instead of one
        central flip-flop driving every site on two edges of the array (the ULX3S 7 x 6 x 16
        build at 100 MHz, seed 2: the central ``rp`` -> a row site's copy, one net of
        11.2 ns)."""
        now = dict(ctl["now"])
        for key in ("t", "rp") if with_t and self._config.terms > 1 else ("rp",):
            reg = keep_apart(Signal.like(ctl["now"][key], name=f"{name}_{key}_source"))
            m.d.sync += reg.eq(ctl["advance"][key](reg))
            now[key] = reg
        return {**ctl, "now": now}

    def _site(self, m: Module, ctl: dict, name: str, valid, fields: dict,
              with_t: bool) -> dict:
        """One column's or row's slice of the entries (pushed on ``valid``, the site's copy
        of the offer), read and written through its own
        copies of the pointers (``wp``, ``full``, ``rp``) and the term counter ``t``, kept
        apart: each copy is loaded with the central next value, so the wide enables and
        multiplexer selects are local and the central nets reach a few flip-flops per site.
        ``fields``: name -> (value offered, width); ``with_t``: the site reads ``t`` (no copy
        otherwise). Returns the head entry's fields, ``t`` and ``last_t`` of this cycle, or
        with extra stages a cycle behind (the head register: every field and the term
        counter's copy registered again)."""
        T, N = self._config.terms, self._entries
        # With site copies the sender offers a step only into a free entry (the array's feed
        # credits; its ``overrun`` says if it ever did otherwise): the site pushes on its
        # ``valid`` alone and steps its own write pointer, no copy of ``full`` or ``wp``.
        trusted = self._site_copies
        # The echo stage: the read side's copies follow the central registers a cycle behind.
        echo = self._config.serializer_stages >= 3
        copy = {}
        for key, value in ctl["next"].items():
            if isinstance(value, Const) or (key == "t" and not with_t):
                copy[key] = Const(0, 1)  # kept apart, an unused copy would stay
                continue
            if trusted and key in ("wp", "full"):
                continue
            reg = keep_apart(Signal.like(value, name=f"{name}_{key}"))
            m.d.sync += reg.eq(ctl["now"][key] if echo and key in ("t", "rp") else value)
            copy[key] = reg
        if trusted:
            wp = keep_apart(Signal(range(N), name=f"{name}_wp"))
            m.d.sync += wp.eq(Mux(valid, Mux(wp == N - 1, 0, wp + 1), wp))
            copy["wp"], push = wp, valid
        else:
            push = valid & ~copy["full"]
        head = {}
        for field, (value, width) in fields.items():
            # The data registers need no reset (the counts say what they hold).
            regs = [Signal(width, name=f"{name}_e{k}_{field}", reset_less=True)
                    for k in range(self._entries)]
            for k, reg in enumerate(regs):
                with m.If(push & (copy["wp"] == k)):
                    m.d.sync += reg.eq(value)
            head[field] = Array(regs)[copy["rp"]]
        head["t"], head["last_t"] = copy["t"], copy["t"] == T - 1
        if self._config.serializer_stages >= 1:
            head = self._delay(m, head, f"{name}_head")
        return head

    def _delay(self, m: Module, fields: dict, name: str) -> dict:
        """A site's ``fields`` a cycle later (an extra stage, :attr:`golden.gemm.DatapathParams
        .serializer_stages`): each value in a register (no reset; the term counter's copy kept
        apart, as every site's is equal), ``last_t`` from the delayed ``t``."""
        out = {}
        for key, value in fields.items():
            if key == "last_t" or isinstance(value, Const):
                out[key] = value
                continue
            reg = Signal(len(value), name=f"{name}_{key}", reset_less=key != "t")
            if key == "t":
                keep_apart(reg)
            m.d.sync += reg.eq(value)
            out[key] = reg
        if "t" in out:
            out["last_t"] = out["t"] == self._config.terms - 1
        return out

    def _column_word(self, m: Module, site: dict, name: str):
        """Column word of this cycle (:attr:`col_widths`) from a column site."""
        cfg = self._config
        T, L, lane_bits, stored = cfg.terms, self._lanes, self._lane_bits, self._stored_bits
        # Per lane, its site's head: its encoder's selector and (before a term register) its
        # term select come from its own site, not across the column from the first site's (the
        # ULX3S 10 x 10 x 8 build at 78 MHz: the first site's selector -> one net of 5.8 ns
        # into the column's other encoders -> the column's word, 13.9 ns).
        lane_heads = site.get("lane_heads") or [site] * L
        site = {k: v for k, v in site.items() if k != "lane_heads"}
        if cfg.kind.operand == "terms":  # the head step's codes through the lanes' encoders
            special = self.special_values
            if cfg.serializer_stages or self._site_lanes is not None:
                # The column's own copy of the special values, a cycle behind the register
                # (static while steps run; a job starts commands after a write): the one
                # register fed every column's encoders (the ULX3S 10 x 9 x 8 build: the
                # special-value register -> a column's encoders -> its output register,
                # 12.3 ns; 10 x 10 x 8 without column-top stages, 12.2 ns).
                special = keep_apart(Signal(len(self.special_values), name=f"{name}_special",
                                            reset_less=True))
                m.d.sync += special.eq(self.special_values)
            encoded = []
            for lane in range(L):
                enc = TermEncoderCore(list(cfg.formats))
                m.submodules[f"{name}_enc{lane}"] = enc
                m.d.comb += [enc.code.eq(site["terms"].word_select(lane, stored)),
                             enc.selector.eq(lane_heads[lane]["sel"]),
                             enc.special_values.eq(special)]
                encoded.append(enc.terms)
            site = {**{k: v for k, v in site.items() if k != "sel"}, "terms": Cat(*encoded)}
        lane_t = [head["t"] for head in lane_heads]
        if cfg.serializer_stages >= 2:  # the term register: the encoders' terms, registered
            lane_t = self._lane_term_copies(m, lane_t, name)
            site = self._delay(m, site, f"{name}_terms")
        t, last_t, terms = site["t"], site["last_t"], site["terms"]
        lane_t = lane_t or [t] * L
        pairs = self._pair_rom(m, t, name) if cfg.kind.operand == "bitplanes" else None
        if pairs is not None:  # bit w_plane of every lane's code
            lanes = Cat(*(terms.word_select(lane, stored).bit_select(pairs["w"], 1)
                          for lane in range(L)))
            index = Cat(last_t, pairs["negate"], pairs["shift"])
        else:
            lanes = Cat(*(terms.word_select(lane * T + lane_t[lane], lane_bits) if T > 1
                          else terms[lane * lane_bits:(lane + 1) * lane_bits]
                          for lane in range(L)))
            if cfg.kind.operand == "planes":
                index = last_t  # step_last
            else:
                index = t[:self._col_widths[0]] if T > 1 else Const(0, 0)
        code = site["scale"]
        if self._scale_shift:
            code = self._exponent(m, code, self._col_widths[4], f"{name}_scale_exp")
        return Cat(index, site["gl"] & last_t, site["ol"] & last_t, lanes, code)

    def _lane_term_copies(self, m: Module, lane_t: list, name: str) -> list | None:
        """The term register's copies of the term counter, one per ``site_lanes`` lanes of a
        column (kept apart; each loaded from the head's ``t`` of its first lane's site,
        ``lane_t``, so equal to the term register's own copy): each drives its lanes' term
        select only, not every lane of the column (at 7 x 6 x 16 on the ULX3S, asked for
        100 MHz, the one copy sat 42 columns from half its loads: 14.5 ns into the column's
        output register). ``None`` (the term register's copy for every lane) with one term
        per step or no ``site_lanes``."""
        if self._config.terms == 1 or self._site_lanes is None:
            return None
        per = self._site_lanes
        copies = []
        for j in range(-(-self._lanes // per)):
            reg = keep_apart(Signal.like(lane_t[j * per], name=f"{name}_lanes{j}_t"))
            m.d.sync += reg.eq(lane_t[j * per])
            copies.append(reg)
        return [copies[lane // per] for lane in range(self._lanes)]

    def _pair_rom(self, m: Module, t, name: str) -> dict:
        """The bit-plane PE's plane pair of cycle ``t``
        (:func:`golden.pe_bitplane.pair_schedule`): weight plane ``w``, activation plane
        ``a``, ``negate`` and ``shift``, a small ROM on ``t`` (one per site)."""
        cfg = BitPlaneConfig(**array_bitplane_params(self._config))
        schedule = cfg.schedule
        out = {"w": Signal(range(max(cfg.w_enc.n_planes, 2)), name=f"{name}_pair_w"),
               "a": Signal(range(max(cfg.a_enc.n_planes, 2)), name=f"{name}_pair_a"),
               "negate": Signal(name=f"{name}_pair_negate"),
               "shift": Signal(name=f"{name}_pair_shift")}
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

    def _lane_words(self) -> list:
        """Per column, the ``L`` lanes' words of this step as the entries hold them: the codes
        (for ``"terms"`` encoded as they leave the entries, for ``"bitplanes"`` their planes
        picked per cycle), or the plane codes' bits MSB first (bit ``t`` is plane
        ``B - 1 - t``)."""
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
            words.append(Cat(*codes))
        return words

"""Output-stationary R x C array of PEs (bit-serial by default) with its edge logic and drain.

Bit-exact twin: :func:`golden.gemm.gemm` (datapath, step by step, in its module docstring);
cycle model :func:`golden.gemm.gemm_cycles`.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.gemm import ArrayConfig
from bitmod.hdl.arith.term_encoder import REGISTER_LAYOUT

from ..common import check_form, is_ice40, keep_apart, platform_form, read_only
from ..registry import array_pe_class
from .drain import ArrayDrain
from .front_end import RowFrontEnd, step_layout
from .serializer import StepSerializer

__all__ = ["SITE_LANES", "SystolicArray", "step_layout"]

#: Lanes per serializer site off the iCE40 (StepSerializer ``site_lanes``).
SITE_LANES = 4


@read_only("in_layout", "out_layout")
class SystolicArray(wiring.Component):
    """``R x C`` output-stationary array: rows = tokens, columns = output channels.

    Computes, per output tile of ``R`` tokens and ``C`` channels (:func:`golden.gemm.gemm`)::

        acc[r, c] = sum_g ((sum_{k in g} a[r, k] * w[c, k]) * scale[c, g]) << shift[r, g]
        out[r, c] = RNE_out_format(acc[r, c] * 2**(base[r] - (K_off + u)))   FP32 or FP16

    Input: one *weight-step* per payload: ``L`` weight codes per column (with the column's
    group selector and group-scale code) and ``L`` activations per row (INT8 codes, or FP16/BF16
    words with the row's group exponent ``gexp`` and token floor ``base``), plus
    ``group_last`` (last step of a group) and ``out_last`` (last step of the tile's last group).
    A tile is the steps of its groups in K order; a ragged group is padded by the feeder with
    zero activations (and any finite codes) to a multiple of ``L``.

    Edge logic, in order:

    * front end (:class:`~hdl.array.front_end.RowFrontEnd`): per row an
      :class:`~hdl.arith.act_block.ActBlockAligner` that aligns the row's ``L`` activations
      to the anchor ``max(gexp, base)`` (FP16/BF16; golden.gemm step 2) and the row shift
      ``max(gexp, base) - base``; INT8 activations pass through one register stage;
      for the ``"lut"`` kind a table builder per row follows;
    * column tops (:class:`~hdl.array.serializer.StepSerializer`): per column ``L`` term
      encoders (:class:`~hdl.arith.term_encoder.TermEncoderCore`, the special-value register
      shared) and a serializer that sends term ``t = 0 .. T-1`` of the step, one per cycle;
      it inserts idle cycles so that group ends are at least ``D`` cycles apart (``D + 2``
      after a tile's end; :attr:`golden.gemm.ArrayConfig.dequant_cycles`), so no PE ever
      waits for its dequantizer;
    * input skew: column ``c`` data reach PE ``(r, c)`` through ``c + r`` registers (skew, then
      one per PE down the column), row ``r`` data through ``r + c`` (skew, then one per PE
      along the row);
    * drain (:class:`~hdl.array.drain.ArrayDrain`): per column the finished outputs of PE
      ``(0, c) .. (R-1, c)``, which the schedule offers in that order and one per cycle at
      most, enter a FIFO (every PE's output ``ready`` is 1); a merger reads the
      column FIFOs in row-major order and one :class:`~hdl.arith.to_float.ToFloat` converts
      them (one output per cycle: a converter per column would sit idle ``(C-1)/C`` of the
      time behind the single output port).

    PE kinds (``config.pe_kind``, :data:`golden.gemm.PE_KINDS`): ``"bitserial"``, the
    :class:`~hdl.pe.bitserial.BitSerialPE` fed ``T`` terms per weight-step by the encoders and
    serializer above; ``"int"``, the bit-parallel :class:`~hdl.pe.baseline.IntPE` (``L``
    multiplies per cycle, DSP blocks on an FPGA) fed the raw two's-complement codes, one
    weight-step per cycle (``T = 1``, no encoders), group ends at least ``scale_bits + 1``
    cycles apart for its dequantizer; ``"minifloat"``, the exact
    :class:`~hdl.pe.baseline.MinifloatPE` fed the raw codes of one minifloat (or integer)
    weight format, one weight-step per cycle, whose power-of-two group-scale codes ``2**j``
    arrive as ``j`` and are added to the row's group shift (MX block scales); ``"lut"``, the
    T-MAC style :class:`~hdl.pe.lut_table.LutTablePE` fed one bit-plane of the codes per cycle
    (``T = B``, MSB first, ``step_last`` with the last plane) and, along the row instead of
    the activations, the half tables and correction of a
    :class:`~hdl.pe.lut_table.LutTableBuilder` per row after the front end (built once per
    row and shared by its ``C`` PEs); ``"bitplane"``, the BISMO style
    :class:`~hdl.pe.bitplane.BitPlanePE` in its step-major order, fed one plane pair per cycle
    (``T = P_w * P_a``): weight plane ``i(t)`` of the codes down the columns with the pair's
    ``negate``/``shift`` and ``step_last``, activation plane ``j(t)`` along the rows (the row
    word changes every cycle). Every other block is the same.

    No global stall: the skew registers and PEs move every cycle (idle cycles carry
    ``valid`` low), and no PE ever waits. Flow control lives at the edges: the column tops
    pace group ends for the dequantizers and end a tile only ``R`` cycles after the previous
    one and with a drain credit (room in the column FIFOs for its outputs,
    :attr:`golden.gemm.ArrayConfig.drain_tiles` tiles), so output backpressure stops the
    column tops, never the grid. The input takes a step only with a feed credit, one per
    entry of the column tops (:attr:`golden.gemm.ArrayConfig.feed_entries`, the front end's
    steps counted against them), so the front end runs free and its ``ready`` is a
    flip-flop (one LUT from flip-flops with ``early_credits``). ``overrun`` is set (and
    stays set) if a PE was ever offered a payload it could not take, or a step found no free
    entry; the tests check it never is.

    Output: ``R * C`` codes of ``out_format`` per tile (FP32 or FP16, RNE, IEEE overflow to
    +-Inf), row-major, padding rows/columns included; ``B = out_bits`` = 32 (FP32) or 16 (FP16)
    bits each.

    Latency: :attr:`front_latency` cycles from an accepted step to its first term leaving the
    serializer (PE (0, 0) receives it in that cycle); :attr:`latency` cycles from PE (0, 0)
    receiving a tile's last term to the tile's first output on ``o_stream``.
    Throughput: one term-cycle per clock; one output per clock.

    Parameters
    ----------
    config : golden.gemm.ArrayConfig
        Rows, columns, the PE parameters, activation and output formats (validated there).
    early_credits : bool or None
        Return a feed credit in the cycle a step leaves its entry rather than the next
        (:attr:`golden.gemm.ArrayConfig.feed_entries_early` entries instead of
        :attr:`~golden.gemm.ArrayConfig.feed_entries`). ``None`` (default): on an iCE40
        platform only.
    site_credits : bool
        With registered credits and a one-cycle front end, each serializer site ANDs its own
        flip-flops of the taken step's ``valid`` and of ``has_credit`` instead of loading one
        flip-flop from one LUT of the two (a flip-flop more per site; the same cycles). The
        core sets it with extra feed stages (:attr:`golden.core.CoreConfig.feed_stages`), its
        form for arrays spread across a large chip. Default ``False``.
    site_taken : bool
        With registered credits and a one-cycle front end, the sender gives, per column and
        row, its own copy of the step taken (``i_stream.valid & i_stream.ready`` in the same
        cycle, :attr:`site_taken`), and each serializer site of that column or row loads its
        ``valid`` flip-flop from it: no flip-flop of the array's (``has_credit``) or the
        sender's (``valid``) drives every site across the chip (the ULX3S 7 x 6 x 16 builds
        with two feed stages at 100 MHz asked: 10.1 and 12.5 ns nets). The core sets it with
        extra feed stages, from its reader's banks
        (:attr:`~hdl.array.step_reader.StepReader` ``bank_taken``). With the echo stage
        (``serializer_stages >= 3``) the serializer's columns and rows then also decide their
        own pops (:class:`~hdl.array.serializer.StepSerializer` ``column_control``, the
        drain's ``credit_next``). Default ``False``.

    Members
    -------
    i_stream : In(stream.Signature(in_layout))
        ``codes`` ``C x L x code_bits``, ``sel`` ``C x 2``, ``scale`` ``C x scale_bits``,
        ``acts`` ``R x L x 16`` (FP) or ``R x L x signed(8)`` (INT8), ``gexp`` and ``base``
        ``R x E`` (FP only), ``group_last``, ``out_last``.
    special_values : In(32)
        Special-value register (:func:`golden.terms.pack_special_register`), static.
    o_stream : Out(stream.Signature(StructLayout({"code": unsigned(B)})))
    site_taken : In(C + R)
        With ``site_taken``: column ``c``'s (bit ``c``) and row ``r``'s (bit ``C + r``) copy of
        ``i_stream.valid & i_stream.ready``, equal to it in every cycle.
    ready_next : Out(1)
        ``i_stream.ready`` of the next cycle, where :meth:`ready_ahead` says it is known (0
        elsewhere): the core's controller registers its read enables from it, so that
        ``ready`` need not reach its block RAMs in the cycle it rises or falls.
    overrun : Out(1)
        Sticky: a PE was offered a payload with its ``ready`` low (a design error, never
        expected; unused outside the tests, so synthesis removes it).
    """

    def __init__(self, config: ArrayConfig | None = None, early_credits: bool | None = None,
                 site_credits: bool = False, site_taken: bool = False):
        self._cfg = cfg = ArrayConfig() if config is None else config
        if not isinstance(cfg, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig, not {cfg!r}")
        self._early_credits = check_form("early_credits", early_credits)
        if not isinstance(site_credits, bool):
            raise TypeError(f"site_credits must be a bool, not {site_credits!r}")
        self._site_credits = site_credits
        if not isinstance(site_taken, bool):
            raise TypeError(f"site_taken must be a bool, not {site_taken!r}")
        if site_taken and (self._early_credits or cfg.front_end_latency != 1):
            raise ValueError(
                f"site_taken needs registered credits and a one-cycle front end (early_credits "
                f"{self._early_credits}, front end latency {cfg.front_end_latency})")
        self._site_taken = site_taken
        self._in_layout = step_layout(cfg)
        self._out_layout = data.StructLayout({"code": unsigned(cfg.out_bits)})
        super().__init__({
            "i_stream": In(stream.Signature(self._in_layout)),
            "special_values": In(REGISTER_LAYOUT.size),
            "o_stream": Out(stream.Signature(self._out_layout)),
            **({"site_taken": In(cfg.cols + cfg.rows)} if site_taken else {}),
            "ready_next": Out(1),
            "overrun": Out(1),
        })

    config = property(lambda self: self._cfg, doc="The :class:`golden.gemm.ArrayConfig`.")

    @property
    def front_latency(self) -> int:
        """Cycles from an accepted step (empty pipeline) to its first term reaching PE (0, 0)
        (:attr:`golden.gemm.ArrayConfig.front_latency`)."""
        return self._cfg.front_latency

    @property
    def latency(self) -> int:
        """Cycles from PE (0, 0) receiving a tile's last term to its first output valid
        (:attr:`golden.gemm.ArrayConfig.latency`)."""
        return self._cfg.latency

    def ready_ahead(self, platform) -> bool:
        """Whether :attr:`ready_next` announces ``i_stream.ready`` a cycle ahead on
        ``platform``: without early credits (``ready`` is then the credit flip-flop) and with a
        front end that takes every step (INT8 activations, no table builders), so that
        ``ready`` is that flip-flop alone."""
        return self.announces_ready(self._cfg, platform, self._early_credits)

    @staticmethod
    def announces_ready(config: ArrayConfig, platform, early_credits: bool | None = None) -> bool:
        """:meth:`ready_ahead` of an array of ``config`` with ``early_credits`` (before one is
        made: the core chooses its feed's form, and from that the array's, with it)."""
        early = platform_form(early_credits, platform, on_ice40=True)
        return (not early and config.act_format == "int8"
                and config.kind.row_operand != "tables")

    def _make_pe(self):
        """One PE of the array's kind: the class registered for it (``hdl/registry.py``,
        ``pe_kind``) built by its ``for_array``; its latency and output width must be the
        ones golden's kind description gives (:attr:`golden.gemm.ArrayConfig.kind`)."""
        cfg = self._cfg
        pe = array_pe_class(cfg.pe_kind).for_array(cfg)
        acc_width = len(pe.o_stream.payload.acc)
        if pe.latency != cfg.kind.latency(cfg) or acc_width != cfg.acc_width:
            raise AssertionError(
                f"{type(pe).__name__}: latency {pe.latency}, accumulator {acc_width} bits; "
                f"golden's PE kind {cfg.pe_kind!r} says {cfg.kind.latency(cfg)}, "
                f"{cfg.acc_width}")
        return pe

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C, L, T = cfg.rows, cfg.cols, cfg.lanes, cfg.terms
        operand = cfg.kind.operand  # terms (with the term index t), codes or planes
        tables = cfg.kind.row_operand == "tables"  # the rows bring tables, not activations
        A, X = cfg.act_width, cfg.act_exp_bits
        fp = cfg.act_format != "int8"

        # ---- row front end and drain (the drain holds the tiles' row floors) -------------------
        m.submodules.front_end = fe = RowFrontEnd(cfg)
        # The site-taken form (arrays spread across a large chip) with the echo stage: each
        # column and row of the serializer decides its own pop from copies of the case and
        # of the drain's credit (StepSerializer column_control).
        column_control = self._site_taken and cfg.serializer_stages >= 3
        m.submodules.drain = drain = ArrayDrain(cfg, announce_credit=column_control)
        # Credits: a step enters only with a credit for a free entry of the column tops
        # (golden.gemm.ArrayConfig.feed_entries), so the front end and the column tops'
        # entries never refuse one and the front end runs free (no enable on its registers);
        # the sender (the core's controller) sees ``ready`` straight from a flip-flop. A
        # credit comes back with the serializer's registered ``freed``, usable in the same
        # cycle; with early credits (the iCE40 form: one entry fewer for T = 1, the LCs the
        # iCEBreaker default needs) with its ``popping``, a cycle earlier, and ``ready`` is
        # then one LUT from the count and the serializer's pop.
        early = platform_form(self._early_credits, platform, on_ice40=True)
        n_entries = cfg.feed_entries_early if early else cfg.feed_entries
        # Off the iCE40, sites of at most 4 lanes (16-lane columns and rows spread across the
        # chip; the iCE40 arrays have 4 lanes or fewer).
        m.submodules.serializer = ser = StepSerializer(
            cfg, entries=n_entries, site_copies=True,
            site_lanes=None if is_ice40(platform) else SITE_LANES, column_control=column_control)
        if column_control:
            m.d.comb += ser.credit_next.eq(drain.credit_next)
        back = ser.popping if early else ser.freed
        credits = Signal(range(n_entries + 1), init=n_entries)
        has_credit = Signal()
        taken = self.i_stream.valid & self.i_stream.ready
        credits_next = Signal.like(credits)  # (truncated: the count never leaves its range)
        m.d.comb += credits_next.eq(credits - taken + back)
        m.d.sync += credits.eq(credits_next)
        if early:
            m.d.comb += has_credit.eq((credits != 0) | back)
        else:
            # Registered: next cycle's ``(credits != 0) | freed`` is this cycle's count after
            # its update, or this cycle's ``popping`` (next cycle's ``freed``), so ``ready``
            # leaves a flip-flop and the same cycles as the combinational form follow.
            # ``credits_next != 0`` is ``popping | credits >= 2 | (credits >= 1 & ~taken)``:
            # the two compares are flip-flops loaded from the next count, so ``ready_next``
            # (into the reader's enable copies across the chip) is the pop and a LUT, not the
            # count's adder and compare after it (the ULX3S 10 x 10 x 8 build at 82 MHz, seed
            # 1: the drain credit -> the pop -> the count -> ``ready_next`` -> an enable
            # copy, 12.9 ns).
            has_credit_q = Signal(init=1, name="has_credit_q")
            two_or_more = Signal(init=n_entries >= 2, name="credits_two_or_more")
            one_or_more = Signal(init=n_entries >= 1, name="credits_one_or_more")
            m.d.sync += [two_or_more.eq(credits_next >= 2), one_or_more.eq(credits_next >= 1)]
            credit_next = ser.popping | two_or_more | (one_or_more & ~taken)
            m.d.sync += has_credit_q.eq(credit_next)
            m.d.comb += has_credit.eq(has_credit_q)
            if self.ready_ahead(platform):  # ``ready`` is has_credit_q: its input is next's
                m.d.comb += self.ready_next.eq(credit_next)
        m.d.comb += [self.i_stream.ready.eq(has_credit & fe.i_stream.ready),
                     fe.i_stream.valid.eq(self.i_stream.valid & has_credit),
                     fe.i_stream.payload.eq(self.i_stream.payload)]
        m.d.comb += [drain.base_w_en.eq(fe.base_w_en), drain.base_w_data.eq(fe.base_w_data),
                     fe.base_w_rdy.eq(drain.base_w_rdy)]
        front = fe.o_stream.payload
        fe_valid, fe_ready = fe.o_stream.valid, fe.o_stream.ready
        fe_codes, fe_sel = front.codes, front.sel
        fe_gl, fe_ol = front.group_last, front.out_last
        fe_scale = front.scale if cfg.scale_bits else None
        fe_acts = front.tables if tables else front.acts
        if cfg.zero_points:  # each row's activations, then its group sum (row_operand_layout)
            fe_acts = Cat(*(Cat(front.acts[r], front.rowsum[r]) for r in range(R)))
        fe_shift = front.shift if fp and X else None

        # ---- column tops: encoders and the serializer -----------------------------------------
        # The front end runs free (its ``ready`` is 1), so its ``valid`` is the step taken
        # ``front_end_latency`` cycles before: each serializer site gets its own kept-apart
        # register of that, beside the front end's one (which drives the central state).
        if cfg.front_end_latency < 1:
            raise AssertionError("the site valid copies need a front end register")
        copies = [keep_apart(Signal(name=f"site{i}_valid")) for i in range(ser.site_count)]
        if self._site_taken:
            # Each site from its column's or row's copy of the step taken (site_taken).
            if early:
                raise ValueError("site_taken needs registered credits, not the early form of "
                                 "this platform")
            per_col, per_row = ser.site_split
            owners = ([c for c in range(C) for _ in range(per_col)]
                      + [C + r for r in range(R) for _ in range(per_row)])
            m.d.sync += [copy.eq(self.site_taken[owner])
                         for copy, owner in zip(copies, owners, strict=True)]
            site_valids = copies
        elif self._site_credits and cfg.front_end_latency == 1 and not early:
            # The step taken in the last cycle: each site's ``valid`` and ``has_credit``
            # flip-flops (both kept apart), ANDed at the site, so no LUT that ANDs them drives
            # every site's copy across the chip (the ULX3S 7 x 6 x 16 build at 100 MHz, seed
            # 2: ``valid & has_credit`` -> one net of 11.3 ns -> a site's copy, 12.98 ns).
            credit_copies = [keep_apart(Signal(name=f"site{i}_credit"))
                             for i in range(ser.site_count)]
            m.d.sync += [copy.eq(self.i_stream.valid & fe.i_stream.ready) for copy in copies]
            m.d.sync += [copy.eq(has_credit) for copy in credit_copies]
            site_valids = [v & c for v, c in zip(copies, credit_copies, strict=True)]
        else:
            site_valid = fe.i_stream.valid & fe.i_stream.ready
            for k in range(cfg.front_end_latency - 1):
                stage = Signal(name=f"site_valid_d{k}")
                m.d.sync += stage.eq(site_valid)
                site_valid = stage
            m.d.sync += [copy.eq(site_valid) for copy in copies]
            site_valids = copies
        m.d.comb += [
            ser.site_valid.eq(Cat(*site_valids)),
            ser.valid.eq(fe_valid), fe_ready.eq(1),
            ser.credit.eq(drain.credit), drain.tile_in.eq(ser.tile_end),
            ser.codes.eq(fe_codes), ser.sel.eq(fe_sel), ser.group_last.eq(fe_gl),
            ser.out_last.eq(fe_ol), ser.acts.eq(fe_acts),
            ser.special_values.eq(self.special_values),
        ]
        if fe_scale is not None:
            m.d.comb += ser.scale.eq(fe_scale)
        if cfg.zero_points:
            m.d.comb += ser.zp.eq(front.zp)
        if fe_shift is not None:
            m.d.comb += ser.shift.eq(fe_shift)
        col_bits = sum(ser.col_widths)
        col_data = [(ser.cols[c * col_bits:(c + 1) * col_bits], list(ser.col_widths))
                    for c in range(C)]
        row_data = [ser.rows[r * ser.row_width:(r + 1) * ser.row_width] for r in range(R)]

        # ---- skew ---------------------------------------------------------------------------
        # Only the valid bits are reset; the data beside them need not be. No
        # enable: every register moves every cycle.
        # Kept apart (hdl.common.KEEP_APART): the columns' control bits are equal at equal
        # depth, and merged registers would each drive an anti-diagonal of PEs.
        def delayed(value, count, name, reset_less=True):
            for k in range(count):
                reg = keep_apart(Signal(len(value), name=f"{name}_d{k}",
                                        reset_less=reset_less))
                m.d.sync += reg.eq(value)
                value = reg
            return value

        col_at = [[None] * C for _ in range(R)]
        valid_at = [[None] * C for _ in range(R)]
        for c in range(C):
            value = delayed(col_data[c][0], c, f"col{c}_skew")
            valid = delayed(ser.col_valid[c], c, f"col{c}_valid_skew", reset_less=False)
            for r in range(R):
                col_at[r][c], valid_at[r][c] = value, valid
                if r < R - 1:
                    value = delayed(value, 1, f"col{c}_pe{r}")
                    valid = delayed(valid, 1, f"col{c}_valid_pe{r}", reset_less=False)
        row_at = [[None] * C for _ in range(R)]
        for r in range(R):
            value = delayed(row_data[r], r, f"row{r}_skew")
            for c in range(C):
                row_at[r][c] = value
                if c < C - 1:
                    value = delayed(value, 1, f"row{r}_pe{c}")

        # ---- PEs ------------------------------------------------------------------------------
        pes = [[None] * C for _ in range(R)]
        refused = []
        widths = col_data[0][1]
        row_bits = ser.row_width - ser.shift_width  # the row operand, then the row shift
        for r in range(R):
            for c in range(C):
                pe = self._make_pe()
                m.submodules[f"pe{r}_{c}"] = pe
                pes[r][c] = pe
                cv = col_at[r][c]
                offs = [sum(widths[:i]) for i in range(len(widths))]
                valid = valid_at[r][c]
                t = cv[offs[0]:offs[0] + widths[0]]
                gl, ol = cv[offs[1]], cv[offs[2]]
                terms = cv[offs[3]:offs[3] + widths[3]]
                p = pe.i_stream.payload
                row = row_at[r][c]
                m.d.comb += [pe.i_stream.valid.eq(valid), p.group_last.eq(gl),
                             p.out_last.eq(ol)]
                if tables:  # the row's half tables and correction, in the PE's bit order
                    m.d.comb += Cat(p.tables, p.corr).eq(row[:row_bits])
                elif cfg.kind.row_operand == "planes":  # this cycle's activation plane
                    m.d.comb += p.a_plane.eq(row[:row_bits])
                else:
                    m.d.comb += p.acts.eq(row[:L * A])
                if cfg.zero_points:  # the row's group sum and the column's zero-point lane
                    m.d.comb += [p.rowsum.eq(row[L * A:row_bits]),
                                 p.zterm.eq(terms[L * len(terms) // (L + 1):])]
                if operand == "bitplanes":  # this cycle's weight plane and pair controls
                    m.d.comb += [p.w_plane.eq(terms),
                                 Cat(p.step_last, p.negate, p.shift).eq(t)]
                elif operand == "planes":  # one weight bit-plane per cycle, step_last beside
                    m.d.comb += [p.plane.eq(terms), p.step_last.eq(t)]
                else:
                    weights = terms[:L * len(terms) // (L + 1)] if cfg.zero_points else terms
                    m.d.comb += (p.weights if operand == "codes" else p.terms).eq(weights)
                    if T > 1:
                        m.d.comb += p.t.eq(t)
                col_scale = cv[offs[4]:offs[4] + widths[4]]
                row_shift = row[row_bits:] if fp and X else None
                if cfg.kind.scale == "shift":  # the scale code's exponent plus the row shift
                    m.d.comb += p.exp.eq(col_scale if row_shift is None
                                         else col_scale + row_shift)
                else:
                    if cfg.scale_bits:
                        m.d.comb += p.scale.eq(col_scale)
                    if row_shift is not None:
                        m.d.comb += p.exp.eq(row_shift)
                # A paced PE (no stall enable) loses a group whenever it is not ready, with a
                # payload offered or not; another loses only a payload it refuses.
                paced = getattr(pe, "paced", False)
                refused.append(~pe.i_stream.ready if paced else valid & ~pe.i_stream.ready)
        refused.append(fe_valid & ~ser.ready)  # a step without a free entry: lost
        refused.append(drain.lost.any())  # a PE output the drain could not take
        with m.If(Cat(*refused).any()):
            m.d.sync += self.overrun.eq(1)

        # ---- drain ---------------------------------------------------------------------------
        for r in range(R):
            for c in range(C):
                src, dst = pes[r][c].o_stream, drain.i_acc[r][c]
                m.d.comb += [dst.valid.eq(src.valid), dst.payload.eq(src.payload.acc),
                             src.ready.eq(dst.ready)]
        m.d.comb += [self.o_stream.valid.eq(drain.o_stream.valid),
                     self.o_stream.payload.code.eq(drain.o_stream.payload.code),
                     drain.o_stream.ready.eq(self.o_stream.ready)]
        return m

"""The array's column tops (hdl/array/serializer.py) beside golden: each step's column words are
the term decomposition of its codes (golden.terms), term t in cycle t, the raw codes for int
PEs, or for LUT PEs the plane codes' bit-planes MSB first (golden.pe_lut.plane_codes) with
step_last and the row's table correction on the last plane only; group ends leave on
golden.gemm.tile_cycles' schedule (tile ends at least R cycles apart); a tile's last word
waits for a drain credit and nothing else does."""

import re

import numpy as np
import pytest

from bitmod.golden import gemm as ggemm
from bitmod.golden import terms as gterms
from bitmod.golden.gemm import ArrayConfig, group_lengths
from bitmod.golden.pe_bitplane import BitPlaneConfig, array_bitplane_params
from bitmod.golden.pe_lut import plane_codes
from bitmod.hdl.array.front_end import row_operand_layout
from bitmod.hdl.array.serializer import StepSerializer
from bitmod.sim.amaranth_sim import run_simulation

BITMOD = ["fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"]


def _expected_group_ends(cfg, k, tiles, credit=lambda cycle: True, first=0):
    """Cycle of each group's last word, the first word in cycle ``first``: each group ends
    its words and its gap after the previous end, a tile also ``R`` cycles after the previous
    tile's end and in a cycle with ``credit`` high."""
    d, ends = cfg.dequant_cycles, []
    end, tile_end = first - 1, None
    for tile in range(tiles):
        lengths = group_lengths(k, cfg.group_size)
        for g, length in enumerate(lengths):
            busy = cfg.terms * -(-length // cfg.lanes)
            need = d + 2 if g == 0 and tile else (0 if g == 0 else d)
            end += max(busy, need)
            if g == len(lengths) - 1:
                if tile_end is not None:
                    end = max(end, tile_end + cfg.rows)
                while not credit(end):
                    end += 1
                tile_end = end
            ends.append(end)
    return ends


@pytest.mark.parametrize("params", [
    dict(rows=2, cols=2, lanes=4, group_size=8, formats=BITMOD, scale_bits=8),
    dict(rows=1, cols=3, lanes=2, group_size=8, formats=("int4_sym",), scale_bits=3,
         pe_kind="int"),
    dict(rows=2, cols=1, lanes=4, group_size=16, formats=("fp6_e2m3",), scale_bits=0),
    dict(rows=2, cols=2, lanes=4, group_size=8, formats=("int3",), scale_bits=2,
         pe_kind="lut"),
    dict(rows=2, cols=2, lanes=4, group_size=8, formats=("int3",), scale_bits=2,
         pe_kind="bitplane"),
    # Tiles shorter than R cycles: their ends R apart (a column drains one output per cycle).
    dict(rows=4, cols=1, lanes=4, group_size=4, formats=("int4_sym",), scale_bits=0, k=4),
])
@pytest.mark.parametrize(("credits", "site_copies", "site_lanes", "column_control"),
                         [("free", False, None, False), ("gated", False, None, False),
                          ("gated", True, None, False), ("gated", True, 1, False),
                          ("free", False, 3, False), ("gated", True, 2, True)])
@pytest.mark.parametrize("stages", [0, 1, 2, 3])
def test_words_and_schedule(params, credits, site_copies, site_lanes, column_control, stages):
    params = dict(params)
    k = params.pop("k", None)
    cfg = ArrayConfig(**params, act_format="int8", serializer_stages=stages)
    if column_control and stages < 3:  # the columns' own pops follow their echo sources
        with pytest.raises(ValueError, match="column_control needs serializer_stages >= 3"):
            StepSerializer(cfg, site_copies=True, column_control=True)
        return
    ahead = 1 + stages  # cycles from a tile's end decided to its word leaving
    R, C, L, T = cfg.rows, cfg.cols, cfg.lanes, cfg.terms
    geo = cfg.geometry
    rng = np.random.default_rng(9)
    tiles = 3
    if k is None:
        k = 2 * cfg.group_size + L  # two full groups and a short one per tile

    def credit(cycle):
        """The drain's credit: always, or in every seventh cycle after a long gap (and after
        reset, as the drain's, with the columns' own credit copies)."""
        return (credits == "free" or (cycle >= 40 and cycle % 7 == 2)
                or (column_control and cycle == 0))
    steps_per_tile = sum(-(-n // L) for n in group_lengths(k, cfg.group_size))
    n_steps = tiles * steps_per_tile
    codes = rng.integers(0, 1 << geo.code_bits, size=(n_steps, C, L))
    sel = rng.integers(0, len(cfg.formats), size=(n_steps, C))
    scale = rng.integers(0, 1 << max(cfg.scale_bits, 1), size=(n_steps, C))
    row_layout = row_operand_layout(cfg)
    row_bits = row_layout.size
    acts = [int.from_bytes(rng.bytes(-(-R * row_bits // 8)), "little") & ((1 << R * row_bits) - 1)
            for _ in range(n_steps)]
    ends = np.cumsum([-(-n // L) for n in group_lengths(k, cfg.group_size)]) - 1
    group_last = np.zeros(n_steps, bool)
    out_last = np.zeros(n_steps, bool)
    for tile in range(tiles):
        group_last[tile * steps_per_tile + ends] = True
        out_last[tile * steps_per_tile + ends[-1]] = True
    special = gterms.default_special_values(list(cfg.formats)) if geo.has_register else None
    planes = cfg.kind.operand == "planes"
    pairs = (BitPlaneConfig(**array_bitplane_params(cfg)).schedule
             if cfg.kind.operand == "bitplanes" else None)
    lane_bits = {"int": geo.code_bits, "lut": 1, "bitplane": 1}.get(cfg.pe_kind,
                                                                    geo.exp_bits + 2)

    def lane_word(step, c, lane, t):
        if cfg.pe_kind == "int":
            return int(codes[step, c, lane])
        if pairs is not None:  # weight plane i(t) of the two's complement code
            return int(codes[step, c, lane]) >> pairs[t].w & 1
        if planes:  # plane B-1-t of the offset-binary code
            u = int(plane_codes(codes[step, c, lane], geo.code_bits))
            return u >> (geo.code_bits - 1 - t) & 1
        tr = gterms.decompose(codes[step, c, lane], list(cfg.formats), sel[step, c], special)
        return int(gterms.pack_terms(tr)) >> (t * lane_bits) & ((1 << lane_bits) - 1)

    # (site_lanes 1: every lane a site of its own; 3: slices of unequal lanes)
    dut = StepSerializer(cfg, site_copies=site_copies, site_lanes=site_lanes,
                         column_control=column_control)
    assert (dut.site_copies, dut.site_lanes, dut.column_control) == (site_copies, site_lanes,
                                                                     column_control)
    seen = []  # (cycle, t, group_last, out_last, lanes, scale) of every emitted column word

    async def feed(ctx):
        ctx.set(dut.special_values, gterms.pack_special_register(special) if special else 0)
        for step in range(n_steps):
            if site_copies:  # offered only into a free entry, as the array's feed credits do
                ctx.set(dut.valid, 0)
                ctx.set(dut.site_valid, 0)
                while not ctx.get(dut.ready):
                    await ctx.tick()
            ctx.set(dut.valid, 1)
            if site_copies:  # the sites push on their copies (the array keeps them equal)
                ctx.set(dut.site_valid, (1 << dut.site_count) - 1)
            cb = geo.code_bits
            ctx.set(dut.codes.as_value(), sum(int(codes[step, c, lane]) << ((c * L + lane) * cb)
                                              for c in range(C) for lane in range(L)))
            ctx.set(dut.sel.as_value(), sum(int(sel[step, c]) << (2 * c) for c in range(C)))
            sb = cfg.scale_bits
            ctx.set(dut.scale, sum(int(scale[step, c]) << (c * sb) for c in range(C)))
            ctx.set(dut.acts, acts[step])
            ctx.set(dut.group_last, int(group_last[step]))
            ctx.set(dut.out_last, int(out_last[step]))
            await ctx.tick().until(dut.ready)
        ctx.set(dut.valid, 0)
        if site_copies:
            ctx.set(dut.site_valid, 0)
        # The last steps wait in the serializer's entries (a gated credit comes every seventh
        # cycle): until every word has left, bounded.
        for _ in range(4 * T + 2 * cfg.dequant_cycles + 8 * tiles):
            await ctx.tick()
            if len(seen) == n_steps * T:
                break

    tile_ends = []

    async def drain_credit(ctx):
        cycle = 0
        ctx.set(dut.credit, credit(0))
        if column_control:  # the columns' copies load next cycle's credit
            ctx.set(dut.credit_next, credit(1))
        async for _clk, _rst, col_valid, tile_end, cols, rows in ctx.tick().sample(
                dut.col_valid, dut.tile_end, dut.cols, dut.rows):
            # Every column's registered copy of the decision, in the same cycle.
            assert col_valid in (0, (1 << C) - 1), (cycle, col_valid)
            if col_valid:
                seen.append((cycle, int(cols), int(rows)))
            if tile_end:  # decided ``ahead`` cycles before its word leaves
                tile_ends.append(cycle + ahead)
            cycle += 1
            ctx.set(dut.credit, credit(cycle))
            if column_control:
                ctx.set(dut.credit_next, credit(cycle + 1))

    run_simulation(dut, [feed], processes=[drain_credit], deadline=1e-3)
    widths = dut.col_widths
    col_bits = sum(widths)
    decoded = []
    def row_words(step, t):
        """The step's rows; a table row's correction on the step's last plane only; for the
        bit-plane PE activation plane j(t) of every lane, one bit per lane."""
        if pairs is not None:
            A = cfg.act_width
            return sum((acts[step] >> (r * row_bits + lane * A + pairs[t].a) & 1)
                       << (r * L + lane) for r in range(R) for lane in range(L))
        if cfg.kind.row_operand != "tables" or t == T - 1:
            return acts[step]
        corr = row_layout["corr"]
        mask = sum(((1 << corr.width) - 1) << (r * row_bits + corr.offset) for r in range(R))
        return acts[step] & ~mask

    assert [rows for _, _, rows in seen] == [row_words(*divmod(i, T)) for i in range(len(seen))]
    for cycle, word, _rows in seen:
        col0 = word & ((1 << col_bits) - 1)
        pos = 0
        fields = []
        for w in widths:
            fields.append(col0 >> pos & ((1 << w) - 1))
            pos += w
        decoded.append((cycle, fields, word))
    # T words per step, in order, with the codes' terms of every column.
    assert len(decoded) == n_steps * T
    for i, (_cycle, fields, word) in enumerate(decoded):
        step, t = divmod(i, T)
        if pairs is not None:  # step_last, negate, shift of the pair
            assert fields[0] == int(t == T - 1) | pairs[t].negate << 1 | pairs[t].shift << 2
        else:
            assert fields[0] == (int(t == T - 1) if planes else t if T > 1 else 0)
        assert fields[1] == int(group_last[step] and t == T - 1)
        assert fields[2] == int(out_last[step] and t == T - 1)
        for c in range(C):
            col = word >> (c * col_bits) & ((1 << col_bits) - 1)
            lanes = col >> (widths[0] + 2) & ((1 << widths[3]) - 1)
            want = sum(lane_word(step, c, lane, t) << (lane * lane_bits) for lane in range(L))
            assert lanes == want, (step, t, c)
            if cfg.scale_bits:
                assert col >> (widths[0] + 2 + widths[3]) == scale[step, c]
    # Group ends on golden's schedule; tile ends only with a credit, R cycles apart.
    first = decoded[0][0]
    group_ends = [cycle for cycle, fields, _ in decoded if fields[1]]
    # A tile's end is decided (and the credit taken) ``ahead`` cycles before its word leaves.
    def credit_before(cycle):
        return credit(cycle - ahead)
    assert group_ends == _expected_group_ends(cfg, k, tiles, credit_before, first)
    assert tile_ends == [cycle for cycle, fields, _ in decoded if fields[2]]
    assert all(credit_before(cycle) for cycle in tile_ends)
    if credits == "free":  # the tile ends are golden.gemm.tile_cycles apart
        spacing = [ggemm.tile_cycles(k, cfg, first=tile == 0) for tile in range(tiles)]
        assert [e - first + 1 for e in tile_ends] == list(np.cumsum(spacing))
    else:
        assert group_ends != _expected_group_ends(cfg, k, tiles, first=first), "no tile waited"


def test_site_copies_are_what_the_sites_push_on():
    """With ``site_copies`` a site takes a step on its own copy of ``valid``: a step offered
    with one row site's copy low leaves that row's word out (zero) while the others carry it;
    a non-bool is refused."""
    cfg = ArrayConfig(rows=2, cols=1, lanes=2, group_size=2, formats=("int4_sym",),
                      scale_bits=0, act_format="int8")
    dut = StepSerializer(cfg, site_copies=True)
    row_bits = row_operand_layout(cfg).size
    rows_seen = []

    async def feed(ctx):
        ctx.set(dut.credit, 1)
        ctx.set(dut.acts, 0x5A | 0x3C << row_bits)
        ctx.set(dut.group_last, 1)
        ctx.set(dut.out_last, 1)
        ctx.set(dut.valid, 1)
        ctx.set(dut.site_valid, 0b011)  # column 0 and row 0 take it; row 1's copy is low
        await ctx.tick()
        ctx.set(dut.valid, 0)
        ctx.set(dut.site_valid, 0)
        for _ in range(8):
            *_, col_valid, rows = await ctx.tick().sample(dut.col_valid, dut.rows)
            if col_valid:
                rows_seen.append(int(rows))

    run_simulation(dut, [feed], deadline=1e-5)
    width = dut.row_width
    assert rows_seen and rows_seen[0] & ((1 << width) - 1) == 0x5A
    assert rows_seen[0] >> width == 0  # row 1's entry was never written
    with pytest.raises(TypeError, match="site_copies must be a bool"):
        StepSerializer(cfg, site_copies=1)
    with pytest.raises(ValueError, match="site_lanes must be None or an int of at least 1, "
                                         "not 0"):
        StepSerializer(cfg, site_lanes=0)


@pytest.mark.parametrize("stages", [2, 3])
def test_echo_sites_follow_their_own_column_or_row_pointer(stages):
    """With the echo stage every column and row steps its own kept-apart copy of the read
    pointer (and the columns of the term counter), which its sites follow: no one central
    flip-flop drives the sites on both edges of the array. Without the echo there is none."""
    from amaranth.back import rtlil

    cfg = ArrayConfig(rows=3, cols=2, lanes=4, group_size=8, formats=BITMOD, scale_bits=8,
                      act_format="int8", serializer_stages=stages)
    text = rtlil.convert(StepSerializer(cfg, site_copies=True, site_lanes=2))
    sources = {name for name in
               (f"{edge}{i}_{key}_source" for edge, n in (("col", 2), ("row", 3))
                for i in range(n) for key in ("rp", "t"))
               if f"\\{name} " in text or f"\\{name}\n" in text}
    expected = ({f"col{c}_{key}_source" for c in range(2) for key in ("rp", "t")}
                | {f"row{r}_rp_source" for r in range(3)}) if stages >= 3 else set()
    assert sources == expected


@pytest.mark.parametrize("stages", [0, 1, 3])
def test_every_column_site_holds_its_lanes_selector_and_term_counter(stages):
    """Each column site keeps the selector in its own entries and has its own copy of the term
    counter, so its lanes' encoders and term selects read flip-flops of their own site, not
    the first site's across the column; the rows' sites (no selector, no term counter for
    activations) do not."""
    from amaranth.back import rtlil

    cfg = ArrayConfig(rows=3, cols=2, lanes=4, group_size=8, formats=BITMOD, scale_bits=8,
                      act_format="int8", serializer_stages=stages)
    ser = StepSerializer(cfg, site_copies=True, site_lanes=2)
    text = rtlil.convert(ser)
    wires = set(re.findall(r"^\s*wire .*?\\(\S+)$", text, re.M))
    entries = cfg.feed_entries
    for c in range(2):
        for j in range(2):
            assert {f"col{c}_{j}_e{k}_sel" for k in range(entries)} <= wires, (c, j)
            assert f"col{c}_{j}_t" in wires, (c, j)
        # Each column's encoders read a special-value copy of their own, with sites (off the
        # iCE40) at every stage count.
        assert f"col{c}_special" in wires, c
    assert not {w for w in wires if re.fullmatch(r"row\d+_\d+_(t|e\d+_sel)", w)}
    # Without sites (the iCE40 form) and without column-top stages: the register itself.
    if stages == 0:
        text = rtlil.convert(StepSerializer(cfg, site_copies=True))
        assert not re.search(r"wire .*\\col\d+_special$", text, re.M)


def test_pop_reads_one_flip_flop_for_the_pops_that_need_no_credit():
    """``popping`` is ``sure_pop | tile_pop & credit``: the pops that need no drain credit (a
    step's last term off a group end, or at a group end with the spacing met) are one
    flip-flop, so the array's ``ready_next`` is two LUTs from flip-flops. The schedule tests
    above fail if ``sure_pop`` misses either case."""
    from amaranth.back import rtlil

    cfg = ArrayConfig(rows=3, cols=2, lanes=4, group_size=8, formats=BITMOD, scale_bits=8,
                      act_format="int8")
    text = rtlil.convert(StepSerializer(cfg, site_copies=True, site_lanes=2))
    flops = set(re.findall(r"^\s*connect \\Q \\(\S+)$", text, re.M))
    assert {"sure_pop", "tile_pop", "group_pop"} <= flops
    assert "free_pop" not in flops

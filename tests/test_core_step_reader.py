"""The controller's read stages (hdl/array/step_reader.py) on the core's buffers, beside a
model: random entries (addresses anywhere in the banks, random lane, row and column masks and
flags) offered in random cycles, the array's ``ready`` random (and announced a cycle ahead in
the ``ready_ahead`` form); in all three forms, and with extra feed stages, every step comes
out once, in order, held while not taken, from the cycle after its entry is taken (two with
stage 2, and one more per feed stage; exactly then when the stages were empty and the array
ready), and equals the banks' words at its addresses (each bank's own) with padding lanes,
rows and columns zeroed (with extra feed stages, each bank's lanes by its own copy of the
mask, and with ``bank_ready`` every bank's copy of the step taken equals ``valid & ready`` in
every cycle)."""

import random

import pytest
from amaranth import Elaboratable, Module, Shape
from amaranth.lib import wiring
from test_core_step_loop import CONFIGS

from bitmod.golden.core import CoreConfig
from bitmod.hdl.array.buffers import CoreBuffers, buffer_shapes, word_writes
from bitmod.hdl.array.step_reader import (
    FeedForm,
    StepReader,
    bank_index,
    bank_lanes,
    read_entry_layout,
)
from bitmod.sim.amaranth_sim import run_simulation

FORMS = {"one stage": FeedForm(queued=False), "registered": FeedForm(queued=True),
         "ready ahead": FeedForm(queued=True, ready_ahead=True),
         "bank ready": FeedForm(queued=True, ready_ahead=True, bank_ready=True)}


class _ReaderOnBuffers(Elaboratable):
    """The reader wired to the core's buffers (their write ports left to the testbench)."""

    def __init__(self, mp, form):
        self.reader = StepReader(mp, form)
        self.buffers = CoreBuffers(mp)
        self.names = [name for name in ("weight", "meta", "act", "gexp", "base")
                      if hasattr(self.reader, f"{name}_read")]

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader, m.submodules.buffers = self.reader, self.buffers
        for name in self.names:
            for ours, theirs in zip(getattr(self.reader, f"{name}_read"),
                                    getattr(self.buffers, f"{name}_read"), strict=True):
                wiring.connect(m, ours, theirs)
        return m


def expected_step(mp, entry, words):
    """The step the reader offers for ``entry`` over bank contents ``words``."""
    cfg = mp.array
    L, CB, AB, SB = mp.lanes, mp.code_bits, mp.act_bits, cfg.scale_bits

    def mask(side, bank):
        """The bank's lane mask: its own copy with ``bank_lanes``, else the step's."""
        if bank_lanes(mp):
            return entry["bank_lanes"][bank_index(mp, side, bank)]
        return entry["lanes"]

    def lanes(word, bits, signed, side, bank):
        values = [(word >> (i * bits)) & ((1 << bits) - 1) for i in range(L)]
        values = [v - (1 << bits) if signed and v >> (bits - 1) else v for v in values]
        return [v if mask(side, bank) >> i & 1 else 0 for i, v in enumerate(values)]

    col = [entry["cols"] >> c & 1 for c in range(mp.cols)]
    row = [entry["rows"] >> r & 1 for r in range(mp.rows)]
    meta = [words["meta"][c][entry["meta"][c]] if col[c] else 0 for c in range(mp.cols)]
    step = {"codes": [lanes(words["weight"][c][entry["weight"][c]], CB, False, "col", c)
                      if col[c]
                      else [0] * L for c in range(mp.cols)],
            "sel": [mt >> SB & 3 for mt in meta], "scale": [mt & ((1 << SB) - 1) for mt in meta],
            "acts": [lanes(words["act"][r][entry["act"][r]], AB, cfg.act_format == "int8",
                           "row", r) if row[r] else [0] * L for r in range(mp.rows)],
            "group_last": entry["group_last"], "out_last": entry["out_last"]}
    if cfg.act_format != "int8":
        step["gexp"] = [words["gexp"][r][entry["gexp"][r]] if row[r] else 0
                        for r in range(mp.rows)]
        step["base"] = [words["base"][r][entry["base"][r]] if row[r] else 0
                        for r in range(mp.rows)]
    return step


def plain(payload, fp):
    step = {"codes": [[int(v) for v in col] for col in payload.codes],
            "sel": [int(v) for v in payload.sel], "scale": [int(v) for v in payload.scale],
            "acts": [[int(v) for v in row] for row in payload.acts],
            "group_last": int(payload.group_last), "out_last": int(payload.out_last)}
    if fp:
        step["gexp"] = [int(v) for v in payload.gexp]
        step["base"] = [int(v) for v in payload.base]
    return step


# (The ready_ahead form is the INT8 core's: only there does the array announce its ready.)
# Extra feed stages: the queued forms only (the one-stage form waits in the controller).
CASES = [(name, form, 0) for name in CONFIGS for form in FORMS
         if name == "int8" or not FORMS[form].ready_ahead]
CASES += [("int8", "ready ahead", 1), ("int8", "registered", 2), ("fp16", "registered", 1),
          ("int8", "bank ready", 1), ("int8", "bank ready", 3)]


@pytest.mark.parametrize(("name", "form", "feed_stages"), CASES)
def test_step_reader_offers_the_banks_words_padded(name, form, feed_stages):
    mp = CoreConfig(**CONFIGS[name], feed_stages=feed_stages)
    fp = mp.act_format != "int8"
    dut = _ReaderOnBuffers(mp, FORMS[form])
    reader = dut.reader
    shapes = buffer_shapes(mp)
    rng = random.Random(17)
    words = {name: [[rng.randrange(1 << shapes[name][2]) for _ in range(shapes[name][1])]
                    for _ in range(shapes[name][0])] for name in dut.names}
    layout = read_entry_layout(mp)
    entries = []
    for _ in range(400):
        entry = {f: rng.randrange(1 << Shape.cast(layout[f].shape).width) for f in layout.members}
        # Each bank its own address (the loop gives them all one: each bank reads its own).
        entry.update({name: [rng.randrange(shapes[name][1]) for _ in range(shapes[name][0])]
                      for name in dut.names},
                     rows_valid=rng.randrange(mp.rows + 1),
                     cols_valid=rng.randrange(mp.cols + 1))
        if bank_lanes(mp):
            # Each bank's copy of the mask its own (the loop gives them all one): each bank
            # zeroes its words by its own copy.
            entry["bank_lanes"] = [rng.randrange(1 << mp.lanes)
                                   for _ in range(mp.cols + mp.rows)]
        entries.append(entry)
    latency = 2 + feed_stages if FORMS[form].queued else 1
    got, taken_at, offered_at = [], [], []

    async def bench(ctx):
        for name in dut.names:
            for bank, port in enumerate(getattr(dut.buffers, f"{name}_write")):
                lanes = len(port.en)
                for addr, value in enumerate(words[name][bank]):
                    # A host-written bank stores one element per write (in its enabled lanes).
                    for data, en in word_writes(name, value, lanes, len(port.data) // lanes):
                        ctx.set(port.addr, addr)
                        ctx.set(port.data, data)
                        ctx.set(port.en, en)
                        await ctx.tick()
                ctx.set(port.en, 0)
        for _ in range(3):  # the writes' register stages
            await ctx.tick()
        ready = True
        ctx.set(reader.o_step.ready, ready)
        ctx.set(reader.step_ready_next, ready)
        index, held, cycle = 0, None, 0
        while len(got) < len(entries):
            cycle += 1
            upcoming = rng.random() < 0.6
            ctx.set(reader.o_step.ready, ready)
            ctx.set(reader.step_ready_next, upcoming)
            offer = index < len(entries) and rng.random() < 0.8
            ctx.set(reader.i_stream.valid, offer)
            if offer:
                ctx.set(reader.i_stream.payload, entries[index])
            valid = ctx.get(reader.o_step.valid)
            payload = plain(ctx.get(reader.o_step.payload), fp) if valid else None
            if held is not None:
                assert payload == held, f"cycle {cycle}: a step changed before it was taken"
            held = payload if valid and not ready else None
            if valid:
                assert taken_at[len(got)] + latency <= cycle, "a step came out early"
                if len(offered_at) == len(got):
                    offered_at.append(cycle)
                want = entries[len(got)]
                assert (int(ctx.get(reader.rows_valid)), int(ctx.get(reader.cols_valid))) == (
                    want["rows_valid"], want["cols_valid"])
            if FORMS[form].bank_ready:  # every bank's copy of the step taken, in its cycle
                taken = (1 << (mp.cols + mp.rows)) - 1 if valid and ready else 0
                assert ctx.get(reader.bank_taken) == taken, f"cycle {cycle}: bank_taken"
            if valid and ready:
                got.append(payload)
            if offer and ctx.get(reader.i_stream.ready):
                taken_at.append(cycle)
                index += 1
            await ctx.tick()
            ready = upcoming
            assert cycle < 20 * len(entries), "the reader stalls"

    run_simulation(dut, [bench], deadline=1e-2)
    # No step comes out early, and some (taken when the stages could pass it straight on)
    # in exactly ``latency`` cycles: the latency is the stated one, not more.
    waits = [out - taken for out, taken in zip(offered_at, taken_at, strict=True)]
    assert min(waits) == latency, (min(waits), latency)
    bad = [i for i, (g, e) in enumerate(zip(got, entries, strict=True))
           if g != expected_step(mp, e, words)]
    assert not bad, f"step {bad[0]}: {got[bad[0]]} != {expected_step(mp, entries[bad[0]], words)}"


def test_step_reader_is_validated():
    mp = CoreConfig(**CONFIGS["int8"])
    with pytest.raises(TypeError, match=r"FeedForm\.queued must be a bool, not 'yes'"):
        FeedForm(queued="yes")
    with pytest.raises(ValueError, match=r"FeedForm\.ready_ahead needs queued=True"):
        FeedForm(queued=False, ready_ahead=True)
    with pytest.raises(ValueError, match=r"FeedForm\.bank_ready needs ready_ahead=True"):
        FeedForm(bank_ready=True)
    with pytest.raises(TypeError, match=r"FeedForm\.bank_ready must be a bool, not 1"):
        FeedForm(bank_ready=1)
    with pytest.raises(TypeError, match="form must be a FeedForm, not True"):
        StepReader(mp, True)
    with pytest.raises(TypeError, match="config must be a CoreConfig, not 3"):
        StepReader(3, FeedForm())


@pytest.mark.parametrize("form", ["registered", "ready ahead", "bank ready"])
def test_each_bank_ors_its_own_copy_of_the_arrays_ready(form):
    """With ``bank_ready`` every column and row bank has a flip-flop of its own of the array's
    next ``ready`` beside its copies of the stage enables' other part (the enable is their OR),
    so ``ready`` reaches each bank's copy without the stages' LUTs after it; without it, none
    (with ``ready_ahead`` alone, one copy per bank of each enable)."""
    import re

    from amaranth.back import rtlil

    mp = CoreConfig(**CONFIGS["int8"], feed_stages=1)
    text = rtlil.convert(StepReader(mp, FORMS[form]), name="top")
    ready = sorted(re.findall(r"connect \\Q \\(ready_(?:col|row)\d+)\n", text))
    want = sorted([f"ready_col{c}" for c in range(mp.cols)]
                  + [f"ready_row{r}" for r in range(mp.rows)])
    assert ready == (want if FORMS[form].bank_ready else [])
    holds = re.findall(r"wire width 1 \\(adv\d?_(?:col|row)\d+)\n", text)
    assert len(holds) == (3 * len(want) if FORMS[form].ready_ahead else 0)


def test_each_bank_computes_its_own_enables(tmp_path):
    """With ``bank_ready`` each column and row bank loads its enables' copies from logic on its
    own flip-flops (its copies of the stages' valids and enables; the queue head's valid), so
    no flip-flop of a bank is in the forward cone of the stages' shared control (the enables'
    next-value LUTs ``hold*_next``, the stages' valids and enables) before another flip-flop:
    checked with Yosys's ``select`` on the elaborated reader (the banks' copies loaded from
    the shared ``hold*_next``, the form before, fail it)."""
    import subprocess

    from amaranth.back import rtlil

    from bitmod.toolchain import find_tool

    mp = CoreConfig(**CONFIGS["int8"], feed_stages=2)
    (tmp_path / "t.il").write_text(rtlil.convert(StepReader(mp, FORMS["bank ready"]),
                                                 name="top"))
    stages = range(1, 3 + mp.feed_stages)
    shared = " ".join([*(f"w:hold{'' if k == 1 else k}_next" for k in stages),
                       *(f"w:adv{'' if k == 1 else k}" for k in stages),
                       *(f"w:s{k}_valid" for k in stages)])
    unions = " %u" * (3 * len(stages) - 1)
    # The flip-flops the shared control reaches without passing a flip-flop, their outputs,
    # those of a bank (named *_col<c>, *_row<r>).
    script = (f"read_rtlil t.il; proc; flatten; opt_clean; "
              f"select -list {shared}{unions} %co*:-$dff[Q] t:$dff %i %co1:+$dff[Q] "
              f"w:*_col* w:*_row* %u %i")
    run = subprocess.run([find_tool("yosys"), "-p", script], cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=120)
    reached = [line for line in run.stdout.splitlines() if line.startswith("top/")]
    assert reached == [], reached
    # The bank copies exist (the selection would be empty without them too).
    text = (tmp_path / "t.il").read_text()
    assert text.count("wire width 1 \\adv_col0\n") == 1
    assert text.count("wire width 1 \\s1_valid_row1\n") == 1

"""The core controller's read stages: from a step's buffer addresses, flags and masks to the
weight-step the array takes (:func:`~hdl.array.front_end.step_layout`), padded with zeros.

Twin: the padding of :func:`golden.gemm.gemm`'s steps (module docstring, steps 2-3).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import core as gcore

from ..common import is_ice40, keep_apart, read_only
from .buffers import buffer_shapes, read_signature
from .front_end import step_layout

__all__ = ["FeedForm", "StepReader", "bank_index", "bank_lanes", "read_entry_layout"]

# The buffers the feed reads, and the step flags that travel beside their read data.
_READ = ("weight", "meta", "act", "gexp", "base")
_FLAGS = ("lanes", "rows", "cols", "group_last", "out_last", "rows_valid", "cols_valid")


@dataclass(frozen=True)
class FeedForm:
    """How the controller's feed is built; every form takes the same cycles.

    Parameters
    ----------
    queued : bool
        A step queue between the step loop and the reader, and the reader's second stage
        (the read data in flip-flops, so no block-RAM output drives logic in the cycle it
        arrives), and the controller's counters cleared by a register of ``start`` beside
        them. Without it, the iCE40 form, the reader's first stage offers the step, the loop
        advances with it and ``start`` clears the counters (fewer LCs).
    ready_ahead : bool
        The reader's stage enables are flip-flops loaded from the array's ``ready`` a cycle
        ahead (:meth:`~hdl.array.SystolicArray.ready_ahead`), one kept-apart copy per bank.
        Needs :attr:`queued`.
    bank_ready : bool
        With :attr:`ready_ahead`, each bank's copy of an enable is the OR of two flip-flops
        of its own, the part from the stages' next valids and the array's next ``ready``
        (one copy per bank for every stage), not one flip-flop loaded from their OR: a
        flip-flop more per bank, the same cycles. Needs :attr:`ready_ahead`.
    """

    queued: bool = True
    ready_ahead: bool = False
    bank_ready: bool = False

    def __post_init__(self):
        for name in ("queued", "ready_ahead", "bank_ready"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"FeedForm.{name} must be a bool, not {getattr(self, name)!r}")
        if self.ready_ahead and not self.queued:
            raise ValueError("FeedForm.ready_ahead needs queued=True (the reader's second "
                             "stage holds the enables it registers)")
        if self.bank_ready and not self.ready_ahead:
            raise ValueError("FeedForm.bank_ready needs ready_ahead=True (it splits the "
                             "enables registered a cycle ahead)")

    @classmethod
    def for_platform(cls, platform, *, ready_ahead: bool = False,
                     bank_ready: bool = False) -> FeedForm:
        """The queued form everywhere but on an iCE40 part (whose LCs the iCEBreaker default
        needs), with ``ready_ahead`` where the queue is (the array's announcement of its
        ``ready`` is used only there) and ``bank_ready`` where ``ready_ahead`` is."""
        queued = not is_ice40(platform)
        ahead = ready_ahead and queued
        return cls(queued=queued, ready_ahead=ahead, bank_ready=bank_ready and ahead)


def read_entry_layout(config: gcore.CoreConfig) -> data.StructLayout:
    """One step to read: a word address per buffer and bank (the same in every bank of a
    buffer, held once per bank so that each bank's read address can leave a flip-flop of its
    own: the step queue keeps them apart; ``gexp`` and ``base`` for FP16/BF16 activations
    only), the masks of real lanes (``k < K``), rows (``m < M``) and columns (``n < N``),
    ``group_last``, ``out_last`` and the counts of real rows and columns.

    With :func:`bank_lanes` (extra feed stages) also ``bank_lanes``: the lane mask again, once
    per column bank (``0 .. C - 1``) and row bank (``C .. C + R - 1``), so that each bank's
    stage-1 copy of the mask loads from a flip-flop of the queue's head of its own, as its
    read address does, not from one head bit whose net reaches every bank."""
    mp = config
    fields = {name: data.ArrayLayout(Shape.cast(range(depth)).width, banks)
              for name, (banks, depth, _, _) in buffer_shapes(mp).items() if name in _READ}
    fields.update(lanes=mp.lanes, rows=mp.rows, cols=mp.cols, group_last=1, out_last=1,
                  rows_valid=range(mp.rows + 1), cols_valid=range(mp.cols + 1))
    if bank_lanes(mp):
        fields["bank_lanes"] = data.ArrayLayout(mp.lanes, mp.cols + mp.rows)
    return data.StructLayout(fields)


def bank_lanes(config: gcore.CoreConfig) -> bool:
    """Whether the read entry carries a lane mask per bank (``bank_lanes``): with extra feed
    stages (``config.feed_stages > 0``), the form for arrays spread across a large chip (the
    ULX3S 7 x 6 x 16 build at 100 MHz asked, seed 1: the queue head's one lane-mask bit -> one
    net of 10.6 ns -> row 3's stage-1 copy, 11.13 ns). Without them the entry, and so the
    boards' default netlists, are as before (the ULX3S 10 x 10 x 8 default is at nextpnr's
    legalisation cliff: 2 x 160 flip-flops more in the queue are not free there)."""
    return config.feed_stages > 0


def bank_index(config: gcore.CoreConfig, side: str, bank: int) -> int:
    """The element of ``bank_lanes`` that column (``side`` ``"col"``) or row bank ``bank``
    reads."""
    return bank if side == "col" else config.cols + bank


def _flags_layout(config: gcore.CoreConfig) -> data.StructLayout:
    entry = read_entry_layout(config)
    return data.StructLayout({name: entry[name].shape for name in _FLAGS})


def _side(buffer: str) -> str:
    """The banks of ``buffer`` are the columns' (``weight``, ``meta``) or the rows'."""
    return "col" if buffer in ("weight", "meta") else "row"


def _bank_copy(m: Module, copies: dict, enable: Signal, upcoming, buffer: str, bank: int,
               bank_ready: bool = False):
    """``enable`` for one buffer bank, or with its next value ``upcoming`` (the registered
    form) the bank's own flip-flop copy of it, loaded alike and kept apart, one per column
    (``weight`` and ``meta``) or row bank, so each drives its own bank's loads and can sit
    beside it (``copies``: those made so far, by name).

    With :attr:`FeedForm.bank_ready` the bank's copy is the OR of the two parts
    :meth:`StepReader._bank_control` made for it: ``{enable}_{side}{bank}``, from the bank's own
    copies of the stages' valids, and ``ready_{side}{bank}``, the array's ``ready`` of the
    next cycle. So the latest input, ``ready``, reaches each bank from its LUT in the array
    without the stages' LUTs after it (the ULX3S 7 x 6 x 16 builds with a feed stage at
    100 MHz: ``ready_next`` -> the three stages' next enables -> a bank's copy, 12.0 and
    14.5 ns)."""
    side = _side(buffer)
    label = f"{enable.name}_{side}{bank}"
    if bank_ready:
        return copies[label] | copies[f"ready_{side}{bank}"]
    if upcoming is None:
        return enable
    if label not in copies:
        copies[label] = keep_apart(Signal(init=1, name=label))
        m.d.sync += copies[label].eq(upcoming)
    return copies[label]


@read_only("config", "form")
class StepReader(wiring.Component):
    """Reads each step's words from the buffer banks and offers the array the weight-step.

    Stage 1 takes an entry (``i_stream``) when it advances: its addresses go to every bank's
    read port, whose block-RAM read register holds the data a cycle later, and its flags to
    flip-flops. With :attr:`form` ``queued`` a stage 2 holds the read data in flip-flops (an ECP5
    block RAM's data come 5.8 ns after the clock, so none drives logic or a long net in the
    cycle it arrives) and offers the step, with a copy of the step's lane mask per column and
    per row bank in both stages (kept apart: each zeroes its own bank's words, and the head's
    mask reaches a bank in two register hops; with :func:`bank_lanes` each bank's stage-1 copy
    loads from the head's copy of its own), and ``config.feed_stages`` more stages after it
    (stages 3 .. S, ``S = 2 + feed_stages``) pass the read data and the flags on, so that the
    block RAM's output register and the array can be a chip apart; otherwise stage 1 offers
    it. The stages advance when the next one does or they are empty: ``adv_S = ~valid_S |
    ready``, ``adv_k = ~valid_k | adv_(k+1)`` (``adv = ~valid1 | ready`` with one stage);
    ``i_stream.ready = adv``.

    With :attr:`form` ``ready_ahead``, :attr:`step_ready_next` gives ``o_step.ready`` a cycle
    ahead (the array's :attr:`~hdl.array.SystolicArray.ready_next`), and the enables are
    flip-flops loaded with their next values (from the stages' next valids and
    ``step_ready_next``), and per column and per row bank the OR of two flip-flops of its
    own (the part from the next valids and ``step_ready_next``), kept apart
    (:data:`hdl.common.KEEP_APART`): the same values in the same cycles, but ``ready`` no
    longer crosses the chip to every bank's read enable and every stage-2 register in the
    cycle it changes.

    The step (:func:`~hdl.array.front_end.step_layout`) carries per column ``c`` the weight
    word (its ``L`` codes, lanes at ``k >= K`` zeroed) and the meta word's selector, scale
    and zero point, all zero for a column at ``n >= N``; per row ``r`` the activation word
    (lanes at ``k >= K`` zeroed) and the group exponent and token floor, all zero for a row
    at ``m >= M``; ``group_last`` and ``out_last``. So stale buffer contents never reach the
    array.

    Latency: an entry taken in cycle ``t`` is offered from ``t + 1`` (one stage) or ``t + 2 +
    feed_stages`` (``queued``). Throughput: one step per cycle.

    Parameters
    ----------
    config : golden.core.CoreConfig
        Its ``feed_stages``: the queued form's stages after stage 2.
    form : FeedForm
        ``queued``: stage 2, the read data in flip-flops; ``ready_ahead``:
        ``step_ready_next`` announces ``o_step.ready``.

    Members
    -------
    i_stream : In(stream.Signature(read_entry_layout(config)))
    weight_read, meta_read : In(ReadPort.Signature).array(C)
    act_read : In(ReadPort.Signature).array(R)
    gexp_read, base_read : In(ReadPort.Signature).array(R)
        FP16/BF16 activations only.
    o_step : Out(stream.Signature(step_layout(config.array)))
    step_ready_next : In(1)
        With ``ready_ahead``: ``o_step.ready`` of the next cycle (unused otherwise).
    pending : Out(1)
        A stage holds a step that is not on offer (``queued`` only: the last stage offers).
    rows_valid, cols_valid : Out(range(R + 1)), Out(range(C + 1))
        The real rows and columns of the step on offer.
    bank_taken : Out(C + R)
        With ``bank_ready``: per column bank (bit ``c``) and row bank (bit ``C + r``) the step
        on offer is taken (``o_step.valid & o_step.ready``), the AND of the bank's own
        flip-flops of the last stage's valid and of ``ready`` (:func:`bank_index`), for the
        array's sites of that column or row (:class:`~hdl.array.SystolicArray`'s
        ``site_taken``).
    """

    def __init__(self, config: gcore.CoreConfig, form: FeedForm):
        if not isinstance(config, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        if not isinstance(form, FeedForm):
            raise TypeError(f"form must be a FeedForm, not {form!r}")
        self._config = mp = config
        self._form = form
        members = {"i_stream": In(stream.Signature(read_entry_layout(mp)))}
        for name, (banks, depth, width, _) in buffer_shapes(mp).items():
            if name in _READ:
                members[f"{name}_read"] = In(read_signature(depth, width)).array(banks)
        members.update(o_step=Out(stream.Signature(step_layout(mp.array))),
                       step_ready_next=In(1), pending=Out(1),
                       rows_valid=Out(range(mp.rows + 1)), cols_valid=Out(range(mp.cols + 1)))
        if form.bank_ready:
            members["bank_taken"] = Out(mp.cols + mp.rows)
        super().__init__(members)

    def _ports(self):
        """``(buffer, bank, read port)`` of every bank the reader reads."""
        return [(name, bank, port) for name in _READ if hasattr(self, f"{name}_read")
                for bank, port in enumerate(getattr(self, f"{name}_read"))]

    def elaborate(self, platform):
        m = Module()
        entry, step = self.i_stream.payload, self.o_step
        flags = _flags_layout(self._config)
        s1_valid, s1 = Signal(), Signal(flags)
        adv = Signal(init=1)  # stage 1 advances: it takes an entry, the banks read
        copies = {}  # the registered enables' per-bank copies (ready_ahead)
        upcoming = {}  # ready_ahead: the enables' next values, which the copies load
        with m.If(adv):
            m.d.sync += [s1_valid.eq(self.i_stream.valid),
                         s1.eq(Cat(*(entry[name] for name in _FLAGS)))]
        m.d.comb += self.i_stream.ready.eq(adv)
        if self._form.queued:
            valids, stages, advs = self._later_stages(m, s1_valid, s1, adv, upcoming)
            held, lanes, bank_valids = self._bank_registers(m, valids, advs, upcoming, copies)
            if self._form.bank_ready:
                # Each bank's step taken: its copies of the last stage's valid and of ready.
                for (side, bank), valid in bank_valids.items():
                    m.d.comb += self.bank_taken[bank_index(self._config, side, bank)].eq(
                        valid & copies[f"ready_{side}{bank}"])
            offer_valid, offer = valids[-1], stages[-1]
            # (Stage 1's valid itself with two stages: the defaults' netlists as they were.)
            m.d.comb += self.pending.eq(valids[0] if len(valids) == 2
                                        else Cat(*valids[:-1]).any())
        else:
            m.d.comb += adv.eq(~s1_valid | step.ready)
            held = {(name, bank): port.data for name, bank, port in self._ports()}
            lanes = {(_side(name), bank): s1.lanes for name, bank, _ in self._ports()}
            offer_valid, offer = s1_valid, s1
        for name, bank, port in self._ports():
            m.d.comb += [port.addr.eq(entry[name][bank]),
                         port.en.eq(_bank_copy(m, copies, adv, upcoming.get(adv.name), name,
                                               bank, self._form.bank_ready))]
        m.d.comb += [step.valid.eq(offer_valid), self.rows_valid.eq(offer.rows_valid),
                     self.cols_valid.eq(offer.cols_valid)]
        self._step(m, offer, held, lanes)
        return m

    def _later_stages(self, m: Module, s1_valid, s1, adv, upcoming: dict):
        """Stages 2 .. S (``S = 2 + feed_stages``) of the queued form: each stage's valid,
        flags and enable (``adv_k = ~valid_k | adv_(k+1)``, or with ``ready_ahead`` flip-flops
        loaded a cycle ahead, whose next values go into ``upcoming`` by enable name). Returns
        the valids, the flags and the enables of stages 1 .. S."""
        step, flags = self.o_step, _flags_layout(self._config)
        count = 2 + self._config.feed_stages
        valids, stages, advs = [s1_valid], [s1], [adv]
        for k in range(2, count + 1):
            # (Stage 2's valid keeps the automatic name it always had, and the statements
            # below their order: the netlists of the boards' defaults, which have no extra
            # stages, and so their measured placements, stay as they were.)
            valids.append(Signal(name=f"s{k}_valid") if k > 2 else Signal())
            stages.append(Signal(flags, name=f"s{k}"))
            advs.append(Signal(init=1, name=f"adv{k}"))  # stage k takes stage k - 1's
        if self._form.ready_ahead:
            # Each enable's next value from the stages' next valids and the array's ready of
            # the next cycle, a cycle ahead: ``adv_k = ~valid_k | ... | ~valid_S | ready``;
            # with ``bank_ready`` as ``hold_k | ready``, ``hold_k = ~valid_k | hold_(k+1)``.
            ready_next = self.step_ready_next
            valid_next = [Mux(advs[k], self.i_stream.valid if k == 0 else valids[k - 1],
                              valids[k]) for k in range(count)]
            nxt = [Signal(name=f"adv{'' if k == 0 else k + 1}_next") for k in range(count)]
            after = None
            for k in reversed(range(count)):
                if self._form.bank_ready:
                    hold = Signal(name=f"hold{'' if k == 0 else k + 1}_next")
                    # (The banks compute their own: StepReader._bank_control.)
                    m.d.comb += [hold.eq(~valid_next[k] if after is None
                                         else ~valid_next[k] | after),
                                 nxt[k].eq(hold | ready_next)]
                    after = hold
                else:
                    term = ~valid_next[k]
                    for later in valid_next[k + 1:]:
                        term = term | ~later
                    m.d.comb += nxt[k].eq(term | ready_next)
                    upcoming[advs[k].name] = nxt[k]
            m.d.sync += [advs[k].eq(nxt[k]) for k in range(count)]
            # Kept apart from the banks' copies, which are loaded alike: merged, a bank's copy
            # drove the stages' flags too and sat far from its bank (the ULX3S 7 x 6 x 16
            # build at 100 MHz: column 0's copy, one net of 11.7 ns to its stage-2 words).
            for enable in advs:
                keep_apart(enable)
        else:
            m.d.comb += [advs[k].eq(~valids[k] | (step.ready if k == count - 1 else advs[k + 1]))
                         for k in reversed(range(count))]
        for k in range(1, count):
            with m.If(advs[k]):
                m.d.sync += [valids[k].eq(valids[k - 1]), stages[k].eq(stages[k - 1])]
        return valids, stages, advs

    def _bank_registers(self, m: Module, valids: list, advs: list, upcoming: dict,
                        copies: dict):
        """Per bank, its read data through stages 2 .. S and its copies of the lane mask through
        stages 1 .. S (with :attr:`FeedForm.bank_ready` of the stages' valids through stages
        2 .. S too), each stage's registers loaded by the bank's own copy of the stage's
        enable (:func:`_bank_copy`). Returns the last stage's data by ``(buffer, bank)``, its
        lane masks by ``(side, bank)`` and its valid copies by ``(side, bank)`` (empty
        without ``bank_ready``)."""
        entry, L = self.i_stream.payload, self._config.lanes
        held, lanes, bank_valids = {}, {}, {}
        for name, bank, port in self._ports():
            side = _side(name)
            if self._form.bank_ready and (side, bank) not in bank_valids:
                bank_valids[side, bank] = self._bank_control(m, side, bank, advs, copies)
            enables = [_bank_copy(m, copies, enable, upcoming.get(enable.name), name, bank,
                                  self._form.bank_ready) for enable in advs[1:]]
            data_in = port.data
            for k, bank_adv in enumerate(enables, 2):
                # With bank_ready, stage 2 has no reset, so that the ECP5 flow can make it its
                # block RAM's output register (fpga.outreg takes no flip-flop with a reset):
                # its words reach the array only under its flags, which are reset.
                reg = Signal.like(port.data, name=f"s{k}_{name}{bank}",
                                  reset_less=k == 2 and self._form.bank_ready)
                with m.If(bank_adv):
                    m.d.sync += reg.eq(data_in)
                data_in = reg
            held[name, bank] = data_in
            if (side, bank) in lanes:
                continue
            # The lane mask zeroes every bank's words: a copy per bank (kept apart) beside its
            # words, not one register driving all of them (the ULX3S 10 x 10 x 8 build's path
            # at 100 MHz asked: one lane bit's net, 12.0 ns), loaded from a stage-1 copy per
            # bank too, not from stage 1's one mask (at 82 MHz: 12.2 ns to row 4's copy): the
            # head's mask reaches each bank in two hops.
            # With bank_lanes the head holds a mask per bank too: one hop from its own bit.
            source = (entry.bank_lanes[bank_index(self._config, side, bank)]
                      if bank_lanes(self._config) else entry.lanes)
            mask = keep_apart(Signal(L, name=f"s1_lanes_{side}{bank}"))
            with m.If(_bank_copy(m, copies, advs[0], upcoming.get(advs[0].name), name, bank,
                                 self._form.bank_ready)):
                m.d.sync += mask.eq(source)
            for k, bank_adv in enumerate(enables, 2):
                copy = keep_apart(Signal(L, name=f"s{k}_lanes_{side}{bank}"))
                with m.If(bank_adv):
                    m.d.sync += copy.eq(mask)
                mask = copy
            lanes[side, bank] = mask
        return held, lanes, bank_valids

    def _bank_control(self, m: Module, side: str, bank: int, advs: list, copies: dict):
        """With :attr:`FeedForm.bank_ready`, a column's or row bank's own copy of the stages'
        control: its copies of the stages' valids (``s{k}_valid_{side}{bank}``, stages 1 .. S),
        of the enables' two parts (``{adv}_{side}{bank}``, the part from the next valids, and
        ``ready_{side}{bank}``, the array's next ``ready``) and the logic of the enables' next
        values on them: ``hold_k = ~valid_next_k | hold_(k+1)``, ``valid_next_k = adv_k ?
        valid_(k-1) : valid_k`` with the bank's own copies (``valid_0`` the queue head's
        ``i_stream.valid``). Loaded alike from equal values, every copy equals the stages'
        own in every cycle. So a bank's enables come from flip-flops beside it through a LUT or
        two, not from the stages' next-valid LUTs in the middle of the chip through one net to
        every bank (the ULX3S 7 x 6 x 16 build at 100 MHz asked, seed 1: stage 3's enable ->
        the three holds' LUTs -> a bank's enable copy, 17.85 ns), and the last stage's copy
        gives the bank's step taken (:attr:`bank_taken`) beside the array's sites of its
        column or row, not the last stage's one valid across the chip (two feed stages: the
        last valid -> one net of 10.1 ns -> a row site's copy). Fills ``copies`` with the
        enables' parts, which :func:`_bank_copy` then uses. Returns the last stage's valid
        copy."""
        count = len(advs)
        holds = [keep_apart(Signal(init=1, name=f"{adv.name}_{side}{bank}")) for adv in advs]
        ready = keep_apart(Signal(name=f"ready_{side}{bank}"))
        valids = [keep_apart(Signal(name=f"s{k}_valid_{side}{bank}"))
                  for k in range(1, count + 1)]
        copies.update({hold.name: hold for hold in holds}, **{ready.name: ready})
        enables = [hold | ready for hold in holds]
        before = [self.i_stream.valid, *valids[:-1]]  # what each stage takes
        after = None
        for k in reversed(range(count)):
            valid_next = Mux(enables[k], before[k], valids[k])
            hold = ~valid_next if after is None else ~valid_next | after
            m.d.sync += holds[k].eq(hold)
            after = hold
        m.d.sync += ready.eq(self.step_ready_next)
        for k in range(count):
            with m.If(enables[k]):
                m.d.sync += valids[k].eq(before[k])
        return valids[-1]

    def _step(self, m: Module, offer, held: dict, lanes: dict) -> None:
        """The step on offer: the read data ``held[buffer, bank]`` with the offering stage's
        flags ``offer``, zeroed for padding rows, columns and lanes (the lane mask of each
        bank ``lanes[side, bank]``)."""
        mp = self._config
        cfg = mp.array
        R, C = cfg.rows, cfg.cols
        CB, AB, SB = mp.code_bits, mp.act_bits, cfg.scale_bits
        p = self.o_step.payload

        def spread(mask, width):
            return Cat(*[Mux(mask[i], Const((1 << width) - 1, width), 0)
                         for i in range(len(mask))])

        cols, rows = offer.cols, offer.rows
        meta = [held["meta", c] for c in range(C)]
        m.d.comb += [
            p.codes.eq(Cat(*[Mux(cols[c], held["weight", c] & spread(lanes["col", c], CB), 0)
                             for c in range(C)])),
            p.sel.eq(Cat(*[Mux(cols[c], meta[c][SB:SB + 2], 0) for c in range(C)])),
            p.acts.eq(Cat(*[Mux(rows[r], held["act", r] & spread(lanes["row", r], AB), 0)
                            for r in range(R)])),
            p.group_last.eq(offer.group_last),
            p.out_last.eq(offer.out_last),
        ]
        if SB:
            m.d.comb += p.scale.eq(Cat(*[Mux(cols[c], meta[c][:SB], 0) for c in range(C)]))
        if cfg.zero_points:  # the meta word's top field (golden.core.CoreConfig.meta_bits)
            m.d.comb += p.zp.eq(Cat(*[Mux(cols[c], meta[c][SB + 2:SB + 2 + CB], 0)
                                      for c in range(C)]))
        if cfg.act_format != "int8":
            m.d.comb += [
                p.gexp.eq(Cat(*[Mux(rows[r], held["gexp", r], 0) for r in range(R)])),
                p.base.eq(Cat(*[Mux(rows[r], held["base", r], 0) for r in range(R)])),
            ]

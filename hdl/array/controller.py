"""The accelerator core's tiled-GEMM controller: job state, the FP pre-pass, the feed (the step
loop, queue and reader that form the array's weight-steps) and the performance counters.

Twins: the step order and padding of :func:`golden.gemm.gemm` (module docstring, steps 2-3),
the exponents of :func:`golden.gemm.act_mantissas`, the counters of
:func:`golden.core.job_counters`.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import bfp
from bitmod.golden import core as gcore

from ..common import keep_apart, read_only
from .buffers import buffer_shapes, read_signature, write_signature
from .command_port import counters_layout, job_layout
from .front_end import step_layout
from .step_loop import StepLoop
from .step_queue import StepQueue
from .step_reader import FeedForm, StepReader, read_entry_layout

__all__ = ["CoreController"]


@read_only("config", "form")
class CoreController(wiring.Component):
    """Runs a job: reads the buffers in tile order and gives the array one weight-step per
    cycle it takes one.

    States ``IDLE`` -> (``PREPASS``, FP16/BF16 only) -> ``FEED`` -> ``IDLE``. :attr:`start`
    raises :attr:`busy`, clears :attr:`done`, the loop counters and :attr:`counters`;
    :attr:`job_end` (the drain wrote the job's last result) clears :attr:`busy`, sets
    :attr:`done` and returns to ``IDLE``.

    Pre-pass (FP16/BF16): per m-tile it reads every activation word once (one word per row
    bank per cycle, ``ceil(M / R) * ceil(K / L)`` reads) and folds, per row, the effective
    exponents of its real lanes (``e``, ``1`` for subnormals, ``0`` for zeros, Inf/NaN and
    lanes at ``k >= K`` or rows at ``m >= M``) into the group exponent ``gexp`` (written at a
    group's last step) and the token floor ``base = max(1, max_g gexp - (2**X - 1))``
    (written at the tile's last step), as :func:`golden.gemm.act_mantissas` computes them.

    Feed: the :class:`~hdl.array.step_loop.StepLoop` walks ``m0`` (outer), ``n0``, groups
    and weight-steps, each step as its buffer addresses (``tile base + k // L``, no
    multiplier), flags and masks; it writes them into a two-entry
    :class:`~hdl.array.step_queue.StepQueue` while the queue has room (its count register
    says so, not ``ready``), whose head the :class:`~hdl.array.step_reader.StepReader`
    takes: it reads the banks, holds the data in a second stage and offers the array the
    step, padded with zeros for rows, columns and lanes beyond the job (stale buffer
    contents never reach the array). Without the queue (:attr:`form` ``queued`` false) the
    reader takes the loop's step directly and offers it from its first stage.

    Counters (48 bits, :data:`golden.core.COUNTERS` order): ``cycles``, cycles with
    :attr:`busy` high (from the cycle after ``start`` to the one with ``job_end``);
    ``busy_pe_cycles``, ``T * rows * cols`` of real rows and columns per step the array takes;
    ``stall_cycles``, feed cycles in which the array is ready, no step is on offer and steps
    remain (the first step's cycles in the queue, its buffer read and the read stages: equal to
    ``feed_latency``).

    Latency: the first step is offered ``prepass + 1 + feed_latency`` cycles after ``start``,
    ``prepass = ceil(M / R) * ceil(K / L) + 1`` for FP activations, 0 for INT8, and
    ``feed_latency = 3 + feed_stages`` (:attr:`golden.core.CoreConfig.feed_latency`; so
    :func:`golden.core.job_counters` ``cycles = prepass + feed_latency + gemm_cycles``).
    Throughput: one step per cycle.

    Parameters
    ----------
    config : golden.core.CoreConfig
    form : hdl.array.step_reader.FeedForm or None
        How the feed is built (the cycles are the same in every form): ``queued``, the step
        queue between the loop and the reader, the counters cleared by a register of
        ``start``, and the reader's second stage after the reads and ``config.feed_stages``
        more (otherwise the loop advances with the reader's first stage, from the feed's
        ``feed_latency``-th cycle, and that stage offers the step); ``ready_ahead``,
        :attr:`step_ready_next` gives ``o_step.ready`` a cycle ahead (the array's
        :meth:`~hdl.array.SystolicArray.ready_ahead`) and the reader's stage enables are
        flip-flops loaded with their next values (INT8 activations only: no pre-pass).
        ``None`` (default): :meth:`FeedForm.for_platform`, queued on every platform but the
        iCE40 (whose LCs the iCEBreaker default needs), without ``ready_ahead``.

    Members
    -------
    start : In(1)
        Start the job in :attr:`job` (taken in ``IDLE`` only).
    job : In(job_layout(config))
    job_end : In(1)
        The drain writes the job's last result in this cycle.
    busy, done : Out(1)
    counters : Out(counters_layout())
    weight_read, meta_read : In(ReadPort.Signature).array(C)
    act_read : In(ReadPort.Signature).array(R)
    gexp_read, base_read, gexp_write, base_write : In(Read/WritePort.Signature).array(R)
        FP16/BF16 activations only: the pre-pass writes them, the feed reads them.
    o_step : Out(stream.Signature(step_layout(config.array)))
        To the array's ``i_stream``.
    step_ready_next : In(1)
        With ``ready_ahead``: ``o_step.ready`` of the next cycle (unused otherwise).
    step_taken : Out(C + R)
        With ``bank_ready``: per column and row bank, the step on offer is taken (the
        reader's :attr:`~hdl.array.step_reader.StepReader` ``bank_taken``), for the array's
        ``site_taken``.
    """

    def __init__(self, config: gcore.CoreConfig, form: FeedForm | None = None):
        if not isinstance(config, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        if form is not None and not isinstance(form, FeedForm):
            raise TypeError(f"form must be a FeedForm or None, not {form!r}")
        if form is not None and form.ready_ahead and config.act_format != "int8":
            raise ValueError(f"FeedForm.ready_ahead needs INT8 activations (no pre-pass), not "
                             f"{config.act_format}")
        self._form = form
        self._config = mp = config
        members = {
            "start": In(1),
            "job": In(job_layout(mp)),
            "job_end": In(1),
            "busy": Out(1),
            "done": Out(1),
            "counters": Out(counters_layout()),
        }
        for name, (banks, depth, width, _) in buffer_shapes(mp).items():
            if name == "output":
                continue
            members[f"{name}_read"] = In(read_signature(depth, width)).array(banks)
            if name in ("gexp", "base"):
                members[f"{name}_write"] = In(write_signature(depth, width)).array(banks)
        members["o_step"] = Out(stream.Signature(step_layout(mp.array)))
        members["step_ready_next"] = In(1)
        if form is not None and form.bank_ready:
            members["step_taken"] = Out(mp.cols + mp.rows)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        mp = self._config
        cfg = mp.array
        R, C, L, T = cfg.rows, cfg.cols, cfg.lanes, cfg.terms
        fp = cfg.act_format != "int8"
        # ``busy`` and ``done`` as the outputs (read by the command port's checks and answers)
        # and as the counters' own copies: loaded alike but kept apart, so that each can sit
        # beside its loads (one flip-flop, next to the counters, was 4.7 ns from the command
        # port's answer registers in the ULX3S 7 x 6 x 16 build at 100 MHz).
        # (The direct form, the iCE40's, keeps one of each: its LCs.)
        form = self._form or FeedForm.for_platform(platform)
        busy, job_state = self.busy, [(self.busy,), (self.done,)]
        if form.queued:
            busy = keep_apart(Signal(name="busy_count"))
            job_state = [(busy, self.busy), (self.done,)]
            for reg in (self.busy, self.done):
                keep_apart(reg)
        counters = [self.counters[name] for name in gcore.COUNTERS]
        cnt_cycles, cnt_busy, cnt_stall = counters
        step = self.o_step

        m.submodules.loop = loop = StepLoop(mp)
        m.d.comb += loop.job.eq(self.job)
        feeding = loop.remain  # steps remain to be queued (feed) or read (pre-pass)
        fields = loop.step

        # The read stages (StepReader): stage 2 with the queue, so no block RAM output (5.8 ns
        # clock to data on the ECP5-6) drives logic or a long net in the same cycle (without
        # it Yosys's ABC9 also fails on the ECP5 designs: docs/boards.md).
        m.submodules.reader = reader = StepReader(mp, form)
        # The step queue (feed only): the loop writes a step's read addresses, flags and masks
        # here while there is room, which its count register says, and the reader takes the
        # head, a register, when it advances. So the array's ``ready`` reaches the read
        # enables, the read stages and the queue's entries, never the loop's counters and
        # their carries (the ULX3S 10 x 10 build's critical path, five LUT levels behind
        # ``ready``), and the read addresses leave flip-flops. Without it (the iCE40 form) the
        # loop advances with the reader's stage 1 and the read addresses are its registers,
        # from the feed's ``feed_latency``-th cycle (``started``) and stage 1 offers the step:
        # the same cycles either way (golden.core.CoreConfig.feed_latency).
        if form.queued:
            m.submodules.queue = queue = StepQueue(read_entry_layout(mp),
                                                   ready_register=mp.feed_stages > 0)
            advance = queue.i_stream.valid & queue.i_stream.ready  # the loop's enable
            m.d.comb += queue.i_stream.payload.eq(fields)
            wiring.connect(m, queue.o_stream, reader.i_stream)
        else:
            lead = Signal(range(mp.feed_latency))  # feed cycles so far, up to feed_latency - 1
            started = lead == mp.feed_latency - 1
            m.d.sync += lead.eq(0)  # (the feed state counts)
            advance = reader.i_stream.valid & reader.i_stream.ready
            m.d.comb += reader.i_stream.payload.eq(fields)
        wiring.connect(m, reader.o_step, wiring.flipped(self.o_step))
        m.d.comb += reader.step_ready_next.eq(self.step_ready_next)
        if form.bank_ready:
            m.d.comb += self.step_taken.eq(reader.bank_taken)

        # The pre-pass's stage 1: the flags of the activation words being read.
        pre = {"valid": Signal(name="pre_valid"), "lanes": Signal(L, name="pre_lanes"),
               "rows": Signal(R, name="pre_rows"), "gend": Signal(name="pre_gend"),
               "tend": Signal(name="pre_tend")}
        if fp:
            # (the addresses are the same in every bank: bank 0's)
            pre.update(gxaddr=Signal.like(fields.gexp[0], name="pre_gxaddr"),
                       mt=Signal.like(fields.base[0], name="pre_mt"))

        stalled = Signal()  # a feed cycle without a step on offer although steps remain
        late_stalls = form.queued and mp.feed_stages > 0  # (below: the stall count's decode)
        feed_remain = Signal(name="feed_remain") if late_stalls else None
        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"):
                # The loop restarts in every idle cycle (nothing reads it until a job runs, and
                # the job's M, N, K stand still from before ``start``), not on ``start``: its
                # enables start at the state register, not at the command port's ``start``
                # across the chip (the ULX3S 7 x 6 x 16 build at 100 MHz, seed 2: ``start`` ->
                # 4.5 ns -> the restart -> the loop's enables, 11.0 ns).
                m.d.comb += loop.restart.eq(1)
                with m.If(self.start):
                    m.d.sync += [reg.eq(value)
                                 for pair, value in zip(job_state, (1, 0), strict=True)
                                 for reg in pair]
                    m.next = "PREPASS" if fp else "FEED"
            if fp:
                with m.State("PREPASS"):
                    # Reads every activation word once; _exponent_fold folds the exponents.
                    m.d.sync += [pre["valid"].eq(feeding), pre["lanes"].eq(fields.lanes),
                                 pre["rows"].eq(fields.rows), pre["gend"].eq(fields.group_last),
                                 pre["tend"].eq(fields.out_last), pre["gxaddr"].eq(fields.gexp[0]),
                                 pre["mt"].eq(fields.base[0])]
                    m.d.comb += loop.advance.eq(1)
                    with m.If(~feeding):
                        # The last read lands this cycle; the feed restarts from tile 0.
                        m.d.sync += pre["valid"].eq(0)
                        m.d.comb += loop.restart.eq(1)
                        m.next = "FEED"
            with m.State("FEED"):
                m.d.comb += [loop.n_tiles.eq(1), loop.advance.eq(advance)]
                if form.queued:
                    m.d.comb += queue.i_stream.valid.eq(feeding)
                else:
                    m.d.sync += lead.eq(Mux(started, lead, lead + 1))
                    m.d.comb += reader.i_stream.valid.eq(feeding & started)
                # Steps remain: to queue, in the queue (or the loop's, about to be read), or
                # read and not yet on offer.
                remain = feeding | reader.i_stream.valid | reader.pending
                m.d.comb += stalled.eq(step.ready & ~step.valid & remain)
                if late_stalls:
                    m.d.comb += feed_remain.eq(remain)
                with m.If(self.job_end):
                    m.next = "IDLE"
        in_prepass = fsm.ongoing("PREPASS") if fp else Const(0)
        # In the queued form (off the iCE40) the counters are cleared a cycle after ``start``,
        # by a register of it beside them (kept apart), and add that cycle's increment to 0:
        # the same counts as clearing them at ``start``, whose decode reached every counter bit
        # in one net (7 ns at 7 x 6 x 16). The direct form (the iCE40's) clears them at
        # ``start`` with the flip-flops' own reset (no multiplexer before the adders: the LCs
        # the iCEBreaker default needs).
        if not form.queued:
            def count(reg, increment):
                with m.If(self.start):
                    m.d.sync += reg.eq(0)
                with m.Elif(increment != 0):
                    m.d.sync += reg.eq(reg + increment)
        else:
            clear = keep_apart(Signal(name="counters_clear"))
            m.d.sync += clear.eq(self.start)

            def count(reg, increment):
                m.d.sync += reg.eq(Mux(clear, 0, reg) + increment)

        count(cnt_cycles, busy)
        # busy_pe_cycles: a taken step's T * rows_valid * cols_valid is registered and added a
        # cycle later (the multiplier and the 48-bit adder in separate cycles). The last step
        # is taken long before the job ends, so the count is whole when the host can read it.
        busy_inc = Signal(range(R * C * T + 1))
        taken, product = step.valid & step.ready, reader.rows_valid * reader.cols_valid * T
        if form.queued:
            # Queued form: the take and the product registered first (a cycle more), beside
            # busy_inc: its clear was a LUT of the array's ready, one net of 10.9 ns away
            # (the ULX3S 7 x 6 x 16 build at 100 MHz, seed 1).
            taken_q = keep_apart(Signal(name="busy_taken"))
            product_q = Signal.like(busy_inc, name="busy_product")
            m.d.sync += [taken_q.eq(taken), product_q.eq(product)]
            taken, product = taken_q, product_q
        m.d.sync += busy_inc.eq(Mux(taken, product, 0))
        count(cnt_busy, busy_inc)
        # stall_cycles likewise: the stall decode and the 48-bit adder in separate cycles (the
        # ULX3S 7 x 6 x 16 build at 100 MHz: the feed's flags → the decode → one net of
        # 5.7 ns → the counter's carry chain, 11.2 ns). Stalls come at a job's start only.
        stall_inc = Signal()
        if late_stalls:
            # With feed stages the decode's inputs are registered first (a cycle more), so the
            # array's ``ready`` reaches a flip-flop of its own beside the counter (the ULX3S
            # 7 x 6 x 16 build at 100 MHz, seed 1: ``ready`` and the feed's flags -> the
            # decode -> stall_inc, 10.36 ns).
            parts = {"ready": step.ready, "idle": ~step.valid, "remain": feed_remain}
            held = {name: keep_apart(Signal(name=f"stall_{name}")) for name in parts}
            m.d.sync += [held[name].eq(value) for name, value in parts.items()]
            stalled = held["ready"] & held["idle"] & held["remain"]
        m.d.sync += stall_inc.eq(stalled)
        count(cnt_stall, stall_inc)
        # The job's end takes priority over the loop's own updates.
        m.d.comb += loop.stop.eq(self.job_end)
        with m.If(self.job_end):
            m.d.sync += [reg.eq(value) for pair, value in zip(job_state, (0, 1), strict=True)
                         for reg in pair]

        # Buffer reads: the reader's, and in the pre-pass the loop's activation words.
        for name in buffer_shapes(mp):
            if name == "output":
                continue
            for bank, (ours, theirs) in enumerate(zip(getattr(self, f"{name}_read"),
                                                      getattr(reader, f"{name}_read"),
                                                      strict=True)):
                addr, en = theirs.addr, theirs.en
                if fp and name == "act":
                    addr, en = Mux(in_prepass, fields.act[bank], addr), in_prepass | en
                m.d.comb += [ours.addr.eq(addr), ours.en.eq(en), theirs.data.eq(ours.data)]
        if fp:
            self._exponent_fold(m, pre, in_prepass)
        return m

    def _exponent_fold(self, m: Module, pre: dict, in_prepass) -> None:
        """Pre-pass, its stage 1 ``pre``: per row, fold the read word's effective exponents
        into the group and tile maxima; write ``gexp`` at a group's end and ``base`` at the
        tile's end."""
        cfg = self._config.array
        R, L, AB = cfg.rows, cfg.lanes, self._config.act_bits
        E, MB, _ = bfp.float_fields(cfg.act_format)
        window = (1 << cfg.act_exp_bits) - 1
        for r in range(R):
            a_data = self.act_read[r].data
            gx_wr, base_wr = self.gexp_write[r], self.base_write[r]
            g_run = Signal(E, name=f"g_run{r}")  # group max so far
            t_run = Signal(E, name=f"t_run{r}")  # tile max so far
            effs = []
            for lane in range(L):
                word = a_data[lane * AB:(lane + 1) * AB]
                e, man = word[MB:MB + E], word[:MB]
                eff = Signal(E, name=f"eff{r}_{lane}")
                zero = ((e == 0) & (man == 0)) | (e == (1 << E) - 1)
                m.d.comb += eff.eq(Mux(zero | ~pre["lanes"][lane] | ~pre["rows"][r], 0,
                                       Mux(e == 0, 1, e)))
                effs.append(eff)
            gmax = g_run
            for eff in effs:
                nxt = Signal(E)
                m.d.comb += nxt.eq(Mux(eff > gmax, eff, gmax))
                gmax = nxt
            tmax = Signal(E, name=f"tmax{r}")
            m.d.comb += tmax.eq(Mux(gmax > t_run, gmax, t_run))
            m.d.comb += [gx_wr.addr.eq(pre["gxaddr"]), gx_wr.data.eq(gmax),
                         base_wr.addr.eq(pre["mt"]),
                         base_wr.data.eq(Mux(tmax > window, tmax - window, 1))]
            with m.If(in_prepass & pre["valid"]):
                m.d.sync += g_run.eq(gmax)
                with m.If(pre["gend"]):
                    m.d.comb += gx_wr.en.eq(1)
                    m.d.sync += [g_run.eq(0), t_run.eq(tmax)]
                with m.If(pre["tend"]):
                    m.d.comb += base_wr.en.eq(1)
                    m.d.sync += t_run.eq(0)

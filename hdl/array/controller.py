"""The accelerator core's tiled-GEMM controller: job state, the FP pre-pass, the loops that read
the buffers and form the array's weight-steps, and the performance counters.

Twins: the step order and padding of :func:`golden.gemm.gemm` (module docstring, steps 2-3),
the exponents of :func:`golden.gemm.act_mantissas`, the counters of
:func:`golden.core.job_counters`.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import bfp
from bitmod.golden import core as gcore

from ..common import check_form, platform_form, read_only
from .buffers import buffer_shapes, read_signature, write_signature
from .command_port import counters_layout, job_layout
from .front_end import step_layout
from .step_queue import StepQueue

__all__ = ["CoreController"]

# The step's flags that stage 2 carries, and the buffers whose read data it registers.
_OFFERED = ("valid", "gl", "ol", "lanes", "rows", "cols", "rv", "cv")
_READ_DATA = ("weight", "meta", "act", "gexp", "base")


@read_only("config", "queue_steps")
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

    Feed: loops ``m0`` (outer), ``n0``, groups and weight-steps. The loop writes each step's
    buffer addresses (``tile base + k // L``, no multiplier), flags and masks into a
    two-entry queue while it has room (its count register says so, not ``ready``); the
    head goes to the read ports, and the read data arrive in a two-stage pipeline (the
    block RAMs' read registers, then flip-flops) whose stages advance when the next one does
    or they are empty (``adv2 = ~valid2 | ready``, ``adv = ~valid1 | adv2``), the first one
    taking the head. The step (:func:`~hdl.array.front_end.step_layout`) carries
    the weight words of the ``C`` columns with their selectors and scales (and zero points),
    the activation
    words of the ``R`` rows with their ``gexp`` and ``base``, ``group_last`` (the group's last
    step or K's) and ``out_last`` (K's last step); it is padded with zero codes, selectors and
    scales for columns at ``n >= N``, zero activations, ``gexp`` and ``base`` for rows at
    ``m >= M``, and zero codes and activations for lanes at ``k >= K``, so stale buffer
    contents never reach the array.

    Counters (48 bits, :data:`golden.core.COUNTERS` order): ``cycles``, cycles with
    :attr:`busy` high (from the cycle after ``start`` to the one with ``job_end``);
    ``busy_pe_cycles``, ``T * rows * cols`` of real rows and columns per step the array takes;
    ``stall_cycles``, feed cycles in which the array is ready, no step is on offer and steps
    remain (the first step's cycle in the queue and its buffer read).

    Latency: the first step is offered ``prepass + 4`` cycles after ``start``, ``prepass =
    ceil(M / R) * ceil(K / L) + 1`` for FP activations, 0 for INT8 (so :func:`golden.core.
    job_counters` ``cycles = prepass + FEED_LATENCY + gemm_cycles``, ``FEED_LATENCY`` = 3).
    Throughput: one step per cycle.

    Parameters
    ----------
    config : golden.core.CoreConfig
    queue_steps : bool or None
        Put the step queue between the loop and the reads and a register stage after them;
        ``None`` (default): on every platform but the iCE40 (whose LCs the iCEBreaker
        default needs), where the loop advances with stage 1 instead, from the feed's third
        cycle, and stage 1 offers the step. The cycles are the same.

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
    """

    def __init__(self, config: gcore.CoreConfig, queue_steps: bool | None = None):
        if not isinstance(config, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        self._queue_steps = check_form("queue_steps", queue_steps)
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
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        mp = self._config
        cfg = mp.array
        R, C, L, G, T = cfg.rows, cfg.cols, cfg.lanes, cfg.group_size, cfg.terms
        fp = cfg.act_format != "int8"
        steps_per_group = G // L
        job_m, job_n, job_k = self.job.m, self.job.n, self.job.k
        busy, done = self.busy, self.done
        counters = [self.counters[i] for i in range(len(gcore.COUNTERS))]
        cnt_cycles, cnt_busy, cnt_stall = counters
        step = self.o_step

        def counter(name, bound):
            return Signal(range(bound + 1), name=name)

        # Feed-phase loop state: tile origin, weight-step within K, group, buffer bases.
        f_m0 = counter("f_m0", mp.max_m + R)
        f_n0 = counter("f_n0", mp.max_n + C)
        f_mt = counter("f_mt", mp.m_tiles)
        f_k0 = counter("f_k0", mp.max_k + L)
        f_kstep = counter("f_kstep", mp.k_steps)
        f_sg = counter("f_sg", steps_per_group)
        f_g = counter("f_g", mp.max_groups)
        f_abase = counter("f_abase", mp.act_depth)
        f_wbase = counter("f_wbase", mp.weight_depth)
        f_metabase = counter("f_metabase", mp.meta_depth)
        f_gxbase = counter("f_gxbase", mp.gexp_depth)
        feeding = Signal()  # steps remain to be queued (feed) or read (pre-pass)
        # The buffers' read addresses as registers kept equal to base + index (weights and
        # activations ``base + f_kstep``, meta and group exponents ``base + f_g``), written
        # with the counters they sum, so no adder sits between a counter and a block RAM.
        a_w = counter("a_w", mp.weight_depth)
        a_meta = counter("a_meta", mp.meta_depth)
        a_act = counter("a_act", mp.act_depth)
        a_gx = counter("a_gx", mp.gexp_depth)
        loop = [f_m0, f_n0, f_mt, f_k0, f_kstep, f_sg, f_g, f_abase, f_wbase, f_metabase,
                f_gxbase, a_w, a_meta, a_act, a_gx]

        # The loop's end flags are flip-flops kept equal to ``f_k0 + L >= K``, ``f_n0 + C >= N``
        # and ``f_m0 + R >= M``: each is written with its counter (``loop_reset``, ``set_k0``,
        # ``set_n0``, ``set_m0``), so the loop's enables start at registers, not at adders and
        # comparators (the job registers do not change during a job).
        last_step = Signal(name="last_step")
        last_n = Signal(name="last_n")
        last_m = Signal(name="last_m")

        def loop_reset():
            m.d.sync += [reg.eq(0) for reg in loop]
            m.d.sync += [last_step.eq(job_k <= L), last_n.eq(job_n <= C),
                         last_m.eq(job_m <= R)]

        def set_k0(first: bool):
            """``f_k0`` back to 0, or on by ``L``."""
            if first:
                m.d.sync += [f_k0.eq(0), last_step.eq(job_k <= L)]
            else:
                m.d.sync += [f_k0.eq(f_k0 + L), last_step.eq(f_k0 + 2 * L >= job_k)]

        def set_n0(first: bool):
            if first:
                m.d.sync += [f_n0.eq(0), last_n.eq(job_n <= C)]
            else:
                m.d.sync += [f_n0.eq(f_n0 + C), last_n.eq(f_n0 + 2 * C >= job_n)]

        lane_mask = Cat(*[f_k0 + lane < job_k for lane in range(L)])
        row_ok = Cat(*[f_m0 + r < job_m for r in range(R)])
        col_ok = Cat(*[f_n0 + c < job_n for c in range(C)])
        rows_valid = Signal(range(R + 1))
        cols_valid = Signal(range(C + 1))
        m.d.comb += [rows_valid.eq(Mux(last_m, job_m - f_m0, R)),
                     cols_valid.eq(Mux(last_n, job_n - f_n0, C))]

        def advance_k(on_tile_end):
            """Step the (group, step) loop; ``on_tile_end`` runs after a tile's last step."""
            with m.If(last_step):
                set_k0(first=True)
                m.d.sync += [f_kstep.eq(0), f_sg.eq(0), f_g.eq(0)]
                # Back to the bases (on_tile_end moves those that change, and their address).
                m.d.sync += [a_w.eq(f_wbase), a_act.eq(f_abase), a_meta.eq(f_metabase),
                             a_gx.eq(f_gxbase)]
                on_tile_end()
            with m.Else():
                set_k0(first=False)
                m.d.sync += [f_kstep.eq(f_kstep + 1), a_w.eq(a_w + 1), a_act.eq(a_act + 1)]
                with m.If(f_sg == steps_per_group - 1):
                    m.d.sync += [f_sg.eq(0), f_g.eq(f_g + 1), a_meta.eq(a_meta + 1),
                                 a_gx.eq(a_gx + 1)]
                with m.Else():
                    m.d.sync += f_sg.eq(f_sg + 1)

        def next_m_tile():
            """Move to the next m-tile; after the last one no steps remain."""
            with m.If(last_m):
                m.d.sync += feeding.eq(0)
            with m.Else():
                m.d.sync += [f_m0.eq(f_m0 + R), last_m.eq(f_m0 + 2 * R >= job_m),
                             f_mt.eq(f_mt + 1),
                             f_abase.eq(f_abase + mp.k_steps),
                             a_act.eq(f_abase + mp.k_steps),
                             f_gxbase.eq(f_gxbase + mp.max_groups),
                             a_gx.eq(f_gxbase + mp.max_groups)]

        # Pipeline stage 1: buffer read data plus the step's flags and masks.
        s1 = {
            "valid": Signal(name="s1_valid"), "gl": Signal(name="s1_gl"),
            "ol": Signal(name="s1_ol"), "lanes": Signal(L, name="s1_lanes"),
            "rows": Signal(R, name="s1_rows"), "cols": Signal(C, name="s1_cols"),
            "rv": Signal.like(rows_valid, name="s1_rv"),
            "cv": Signal.like(cols_valid, name="s1_cv"),
            "gend": Signal(name="s1_gend"), "tend": Signal(name="s1_tend"),
            "gxaddr": Signal.like(f_gxbase, name="s1_gxaddr"),
            "mt": Signal.like(f_mt, name="s1_mt"),
        }
        queued = platform_form(self._queue_steps, platform, on_ice40=False)
        offer = s1  # the stage whose step is on offer
        adv = Signal()  # stage 1 advances (a buffer read)
        if queued:
            # Stage 2: the read data in flip-flops, so no block RAM output (5.8 ns clock to
            # data on the ECP5-6) drives logic or a long net in the same cycle. (At 10 x 10 x 8
            # it puts a second LUT level before the read enables, which bounds the clock;
            # without it Yosys's ABC9 fails on the ECP5 designs: docs/boards.md.)
            offer = {name: Signal.like(sig, name=f"s2_{sig.name[3:]}")
                     for name, sig in s1.items() if name in _OFFERED}
            s2_data = {name: [Signal.like(port.data, name=f"s2_{name}{i}")
                              for i, port in enumerate(getattr(self, f"{name}_read"))]
                       for name in _READ_DATA if hasattr(self, f"{name}_read")}
            adv2 = ~offer["valid"] | step.ready
            m.d.comb += adv.eq(~s1["valid"] | adv2)
        else:
            s2_data = None
            m.d.comb += adv.eq(~s1["valid"] | step.ready)

        # The step queue (feed only): the loop writes a step's read addresses, flags and masks
        # here while there is room, which its count register says, and the read stage takes
        # the head, a register, when it advances. So the array's ``ready`` reaches the read
        # enables, stage 1 and the queue's entries, never the loop's counters and their
        # carries (the ULX3S 10 x 10 build's critical path, five LUT levels behind ``ready``),
        # and the read addresses leave flip-flops. Without it (the iCE40 form) the loop
        # advances with stage 1 and the read addresses are its registers, from the feed's
        # third cycle (``started``) and stage 1 offers the step: the same cycles either way
        # (golden.core.FEED_LATENCY).
        step_fields = {"a_w": a_w, "a_meta": a_meta, "a_act": a_act, "a_gx": a_gx, "mt": f_mt,
                       "lanes": lane_mask, "rows": row_ok, "cols": col_ok,
                       "gl": last_step | (f_sg == steps_per_group - 1), "ol": last_step,
                       "rv": rows_valid, "cv": cols_valid}
        if queued:
            entry = data.StructLayout({name: len(v) for name, v in step_fields.items()})
            m.submodules.queue = queue = StepQueue(entry)
            head = queue.o_stream.payload
            advance = queue.i_stream.valid & queue.i_stream.ready  # the loop's enable
            pending = queue.o_stream.valid  # a step is ready to be read
            m.d.comb += [queue.i_stream.payload.eq(Cat(*step_fields.values())),
                         queue.o_stream.ready.eq(adv)]
        else:
            head = step_fields
            lead = Signal(range(gcore.FEED_LATENCY))  # feed cycles so far, up to 2
            started = lead == gcore.FEED_LATENCY - 1
            m.d.sync += lead.eq(0)  # (the feed state counts)
            advance = Signal()
            pending = feeding & started
        read = {name: head[name] for name in ("a_w", "a_meta", "a_act", "a_gx", "mt")}

        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [busy.eq(1), done.eq(0), feeding.eq(1)]
                m.d.sync += [reg.eq(0) for reg in counters]
                loop_reset()
                m.next = "PREPASS" if fp else "FEED"
            if fp:
                with m.State("PREPASS"):
                    # Reads every activation word once; stage 1 (below) folds the exponents.
                    m.d.sync += [s1["valid"].eq(feeding), s1["lanes"].eq(lane_mask),
                                 s1["rows"].eq(row_ok),
                                 s1["gend"].eq(last_step | (f_sg == steps_per_group - 1)),
                                 s1["tend"].eq(last_step), s1["gxaddr"].eq(a_gx),
                                 s1["mt"].eq(f_mt)]
                    with m.If(feeding):
                        advance_k(next_m_tile)
                    with m.Else():
                        # The last read lands this cycle; the feed restarts from tile 0.
                        m.d.sync += [s1["valid"].eq(0), feeding.eq(1)]
                        loop_reset()
                        m.next = "FEED"
            with m.State("FEED"):
                with m.If(adv):
                    m.d.sync += [s1["valid"].eq(pending)]
                    m.d.sync += [s1[name].eq(head[name])
                                 for name in ("lanes", "rows", "cols", "gl", "ol", "rv", "cv")]
                if queued:
                    m.d.comb += queue.i_stream.valid.eq(feeding)
                else:
                    m.d.sync += lead.eq(Mux(started, lead, lead + 1))
                    m.d.comb += advance.eq(adv & feeding & started)
                with m.If(advance):
                    def feed_tile_end():
                        with m.If(last_n):
                            set_n0(first=True)
                            m.d.sync += [f_wbase.eq(0), f_metabase.eq(0), a_w.eq(0),
                                         a_meta.eq(0)]
                            next_m_tile()
                        with m.Else():
                            set_n0(first=False)
                            m.d.sync += [f_wbase.eq(f_wbase + mp.k_steps),
                                         a_w.eq(f_wbase + mp.k_steps),
                                         f_metabase.eq(f_metabase + mp.max_groups),
                                         a_meta.eq(f_metabase + mp.max_groups)]
                    advance_k(feed_tile_end)
                with m.If(step.ready & ~offer["valid"] & (feeding | pending | s1["valid"])):
                    m.d.sync += cnt_stall.eq(cnt_stall + 1)
                with m.If(self.job_end):
                    m.next = "IDLE"
        in_prepass = fsm.ongoing("PREPASS") if fp else Const(0)
        if queued:  # stage 2 takes the feed's steps only (the pre-pass's reads end at stage 1)
            with m.If(adv2 & ~in_prepass):
                m.d.sync += [offer[name].eq(s1[name]) for name in offer]
                m.d.sync += [reg.eq(getattr(self, f"{name}_read")[i].data)
                             for name, regs in s2_data.items() for i, reg in enumerate(regs)]
        with m.If(busy):
            m.d.sync += cnt_cycles.eq(cnt_cycles + 1)
        # busy_pe_cycles: a taken step's T * rows_valid * cols_valid is registered and added a
        # cycle later (the multiplier and the 48-bit adder in separate cycles). The last step
        # is taken long before the job ends, so the count is whole when the host can read it.
        busy_inc = Signal(range(R * C * T + 1))
        m.d.sync += busy_inc.eq(Mux(step.valid & step.ready, offer["rv"] * offer["cv"] * T, 0))
        with m.If((busy_inc != 0) & ~self.start):  # (start clears the counters)
            m.d.sync += cnt_busy.eq(cnt_busy + busy_inc)
        # After the FSM: the job's end takes priority over the loop's own updates.
        with m.If(self.job_end):
            m.d.sync += [busy.eq(0), done.eq(1), feeding.eq(0)]

        # Buffer reads: the address of the queue's head (the loop's, in the pre-pass); data
        # arrive in stage 1.
        for c in range(C):
            w_rd, meta_rd = self.weight_read[c], self.meta_read[c]
            m.d.comb += [w_rd.addr.eq(read["a_w"]), w_rd.en.eq(adv),
                         meta_rd.addr.eq(read["a_meta"]), meta_rd.en.eq(adv)]
        for r in range(R):
            a_rd = self.act_read[r]
            act_addr = Mux(in_prepass, a_act, read["a_act"]) if fp and queued else read["a_act"]
            m.d.comb += [a_rd.addr.eq(act_addr), a_rd.en.eq(in_prepass | adv)]
            if fp:
                gx_rd, base_rd = self.gexp_read[r], self.base_read[r]
                m.d.comb += [gx_rd.addr.eq(read["a_gx"]), gx_rd.en.eq(adv),
                             base_rd.addr.eq(read["mt"]), base_rd.en.eq(adv)]
        if fp:
            self._exponent_fold(m, s1, in_prepass)
        self._array_input(m, offer, s2_data, in_prepass)
        return m

    def _exponent_fold(self, m: Module, s1: dict, in_prepass) -> None:
        """Pre-pass, stage 1: per row, fold the read word's effective exponents into the group
        and tile maxima; write ``gexp`` at a group's end and ``base`` at the tile's end."""
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
                m.d.comb += eff.eq(Mux(zero | ~s1["lanes"][lane] | ~s1["rows"][r], 0,
                                       Mux(e == 0, 1, e)))
                effs.append(eff)
            gmax = g_run
            for eff in effs:
                nxt = Signal(E)
                m.d.comb += nxt.eq(Mux(eff > gmax, eff, gmax))
                gmax = nxt
            tmax = Signal(E, name=f"tmax{r}")
            m.d.comb += tmax.eq(Mux(gmax > t_run, gmax, t_run))
            m.d.comb += [gx_wr.addr.eq(s1["gxaddr"]), gx_wr.data.eq(gmax),
                         base_wr.addr.eq(s1["mt"]),
                         base_wr.data.eq(Mux(tmax > window, tmax - window, 1))]
            with m.If(in_prepass & s1["valid"]):
                m.d.sync += g_run.eq(gmax)
                with m.If(s1["gend"]):
                    m.d.comb += gx_wr.en.eq(1)
                    m.d.sync += [g_run.eq(0), t_run.eq(tmax)]
                with m.If(s1["tend"]):
                    m.d.comb += base_wr.en.eq(1)
                    m.d.sync += t_run.eq(0)

    def _array_input(self, m: Module, s1: dict, registered: dict | None, in_prepass) -> None:
        """The step on offer: the read data (stage 1's, or stage 2's ``registered`` copy) with
        the offering stage's flags ``s1``, zeroed for padding rows, columns, lanes."""
        mp = self._config
        cfg = mp.array
        R, C = cfg.rows, cfg.cols
        CB, AB, SB = mp.code_bits, mp.act_bits, cfg.scale_bits
        p = self.o_step.payload
        read = registered or {name: [port.data for port in getattr(self, f"{name}_read")]
                              for name in _READ_DATA if hasattr(self, f"{name}_read")}
        w_data, meta_data, act_data = read["weight"], read["meta"], read["act"]

        def spread(mask, width):
            return Cat(*[Mux(mask[i], Const((1 << width) - 1, width), 0)
                         for i in range(len(mask))])

        cols, rows = s1["cols"], s1["rows"]
        lane_code_mask = spread(s1["lanes"], CB)
        lane_act_mask = spread(s1["lanes"], AB)
        m.d.comb += [
            self.o_step.valid.eq(s1["valid"] & ~in_prepass),
            p.codes.eq(Cat(*[Mux(cols[c], w_data[c] & lane_code_mask, 0) for c in range(C)])),
            p.sel.eq(Cat(*[Mux(cols[c], meta_data[c][SB:SB + 2], 0) for c in range(C)])),
            p.acts.eq(Cat(*[Mux(rows[r], act_data[r] & lane_act_mask, 0) for r in range(R)])),
            p.group_last.eq(s1["gl"]),
            p.out_last.eq(s1["ol"]),
        ]
        if SB:
            m.d.comb += p.scale.eq(Cat(*[Mux(cols[c], meta_data[c][:SB], 0)
                                         for c in range(C)]))
        if cfg.zero_points:  # the meta word's top field (golden.core.CoreConfig.meta_bits)
            m.d.comb += p.zp.eq(Cat(*[Mux(cols[c], meta_data[c][SB + 2:SB + 2 + CB], 0)
                                      for c in range(C)]))
        if cfg.act_format != "int8":
            m.d.comb += [
                p.gexp.eq(Cat(*[Mux(rows[r], read["gexp"][r], 0) for r in range(R)])),
                p.base.eq(Cat(*[Mux(rows[r], read["base"][r], 0) for r in range(R)])),
            ]

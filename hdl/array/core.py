"""The accelerator core: buffers, tiled-GEMM controller, counters and a command port around
the systolic array.

Command-level twin and protocol definition: :mod:`golden.core` (:class:`golden.core.CoreModel`
gives the response of every command); outputs bit-exact with :func:`golden.gemm.gemm`.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bitmod.golden import bfp
from bitmod.golden import core as gcore

from ..common import read_only
from .array import SystolicArray

__all__ = ["AcceleratorCore"]


@read_only("cmd_layout", "resp_layout")
class AcceleratorCore(wiring.Component):
    """Runs ``Y[M, N] = X[M, K] W^T`` from on-chip buffers on an ``R x C`` array.

    The host loads weights, activations and the special-value register, sets the job
    dimensions, starts the job, waits for it and reads the output codes (FP32 or FP16) and the
    counters, all through one command stream; every command gets exactly one response, in
    order. Outputs equal :func:`golden.gemm.gemm` ``(...).codes`` bit for bit.

    Commands (``i_cmd`` payload ``{op: 4, addr: A, data: 32}``; response ``{status: 3,
    data: 32}``; ``A`` = :attr:`golden.core.CoreMap.addr_bits`)

    ==  =============  ======================  ==============================  ============
    op  name           addr                    data                            resp. data
    ==  =============  ======================  ==============================  ============
    0   status         --                      --                              busy|done<<1
    1   write_weight   {lane, word, col bank}  code (code_bits)                0
    2   write_meta     {word, col bank}        scale | selector << scale_bits  0
    3   write_act      {lane, word, row bank}  16-bit word (int8 sign-ext.)    0
    4   write_special  0                       special-value register          0
    5   set_job        0: M, 1: N, 2: K        1 .. max_m / max_n / max_k      0
    6   start          --                      --                              0
    7   wait           --                      --                              done << 1
    8   read_output    m * max_n + n           --                              output code
    9   read_counter   2 * counter + half      --                              32-bit half
    ==  =============  ======================  ==============================  ============

    Address fields, low bits first, and the buffer depths: :mod:`golden.core`. ``wait``
    answers once the core is idle (at once if it is). Status codes (first that applies):
    ``bad_op`` 1 (op 10..15), ``busy`` 5 (op 1-6 or 8 while a job runs: buffers and job
    registers cannot change under a job), ``bad_addr`` 2 (a field beyond its buffer: bank >=
    C/R, word >= depth, lane >= L, nonzero unused address bits; counter >= 6; set_job field >=
    3; write_special addr != 0), ``bad_data`` 3 (a code wider than ``code_bits``; a selector
    >= the number of formats or bits above the meta word; an INT8 word that is not a
    sign-extended int8; an FP16/BF16 Inf/NaN; bits above 16), ``bad_job`` 4 (``set_job``
    value 0 or above the buffer bound; ``start`` before M, N and K are all set), else ``ok`` 0.
    A refused command changes nothing. Reset clears the registers (job, special, counters,
    done) but not the buffers.

    Buffers (``lib.memory.Memory``, synchronous read ports: block RAM), with ``k_steps =
    ceil(max_k / L)``, ``max_groups = ceil(max_k / G)``, ``m_tiles = ceil(max_m / R)``,
    ``n_tiles = ceil(max_n / C)``: weights ``C x n_tiles * k_steps`` words of ``L *
    code_bits``; meta ``C x n_tiles * max_groups`` of ``2 + scale_bits``; activations ``R x
    m_tiles * k_steps`` of ``L * A`` (A = 8 INT8, 16 FP); group exponents ``R x m_tiles *
    max_groups`` and token floors ``R x m_tiles`` of ``E`` bits (FP only); outputs ``max_m *
    max_n`` of ``out_bits`` (32 for FP32, 16 for FP16: the buffer holds exactly the drained
    codes, and ``read_output`` returns them zero-extended to 32 bits). The array is built with
    ``max_groups`` groups per output and the core's ``out_format``.

    Controller. FP16/BF16 first run a *pre-pass*: per m-tile it reads every activation word
    once (one word per row bank per cycle), computes each row's group exponent ``gexp`` (the
    largest effective exponent of the group's elements, :func:`golden.bfp.block_convert`) and
    token floor ``base = max(1, max_g gexp - (2**X - 1))`` (:func:`golden.gemm.act_mantissas`)
    and stores them. The feed phase then loops ``m0`` (outer), ``n0``, groups and weight-steps,
    reading one word per bank per cycle through a one-stage pipeline that advances when the
    array takes a step (``adv = ~valid | ready``), and gives the array zero activations for
    padding rows and for lanes at ``k >= K``, zero codes, selectors and scales for padding
    columns. The drain writes the array's ``R * C`` results per tile to ``m * max_n + n``,
    skipping padding; the job ends with the last write.

    Counters (48 bits, cleared by ``start``):

    * ``cycles``: cycles the core is busy, from the cycle after ``start`` is accepted to the
      last output write (:func:`golden.core.job_counters`: ``prepass + 1 +
      gemm_cycles(...)`` with the array's fill :attr:`golden.gemm.ArrayConfig.fill`,
      ``prepass = ceil(M / R) * ceil(K / L) + 1`` for FP activations, 0 for INT8);
    * ``busy_pe_cycles``: ``T * rows_valid * cols_valid`` per step the array takes: the
      term-cycles of real outputs, :func:`golden.gemm.gemm_cycles` ``busy_pe_cycles``;
    * ``stall_cycles``: cycles of the feed phase in which the array would take a step but the
      controller has none ready although steps remain (1 per job: the first buffer read); the
      array is never held by backpressure (the output buffer takes a result every cycle).

    Latency: a command offered (``valid``) is checked for one cycle, then accepted
    (``ready``) and executed; :attr:`latency` (1) from accepted to its response valid;
    ``start`` accepted to done = ``cycles`` + 1. Throughput: one weight-step per clock from
    the buffers (the array takes one per ``T`` clocks); one command per 3 clocks.

    Parameters
    ----------
    config : golden.core.CoreConfig
        The array's parameters and the buffer bounds ``max_m``, ``max_n``, ``max_k``
        (validated there, with the buffer depths and the address map).

    Members
    -------
    i_cmd : In(stream.Signature(cmd_layout))
    o_resp : Out(stream.Signature(resp_layout))
    """

    def __init__(self, config: gcore.CoreConfig | None = None):
        self._cfg = mp = gcore.CoreConfig() if config is None else config
        if not isinstance(mp, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        self._cmd_layout = data.StructLayout({
            "op": unsigned(gcore.OP_BITS), "addr": unsigned(mp.addr_bits),
            "data": unsigned(gcore.DATA_BITS)})
        self._resp_layout = data.StructLayout({
            "status": unsigned(gcore.STATUS_BITS), "data": unsigned(gcore.DATA_BITS)})
        super().__init__({
            "i_cmd": In(stream.Signature(self._cmd_layout)),
            "o_resp": Out(stream.Signature(self._resp_layout)),
        })

    config = property(lambda self: self._cfg, doc="The :class:`golden.core.CoreConfig`.")

    @property
    def latency(self) -> int:
        """Cycles from a command accepted to its response valid (``wait``: after the job)."""
        return 1

    def elaborate(self, platform):
        m = Module()
        mp = self._cfg
        cfg = mp.array
        R, C, L, G, T = cfg.rows, cfg.cols, cfg.lanes, cfg.group_size, cfg.terms
        fp = cfg.act_format != "int8"
        CB, AB, SB = mp.code_bits, mp.act_bits, cfg.scale_bits
        steps_per_group = G // L
        OPS, ST = gcore.OPS, gcore.STATUS

        m.submodules.array = array = SystolicArray(cfg)

        # ---- registers -------------------------------------------------------------------
        special = Signal(32)
        job_m = Signal(range(mp.max_m + 1))
        job_n = Signal(range(mp.max_n + 1))
        job_k = Signal(range(mp.max_k + 1))
        busy = Signal()
        done = Signal()
        counters = [Signal(gcore.COUNTER_BITS, name=f"cnt_{n}") for n in gcore.COUNTERS]
        cnt_cycles, cnt_busy, cnt_stall = counters
        m.d.comb += array.special_values.eq(special)

        # ---- buffers -----------------------------------------------------------------------
        def memory(name, width, depth):
            mem = Memory(shape=unsigned(width), depth=depth, init=[])
            m.submodules[name] = mem
            return mem

        w_mem = [memory(f"weights{c}", L * CB, mp.weight_depth) for c in range(C)]
        meta_mem = [memory(f"meta{c}", mp.meta_bits, mp.meta_depth) for c in range(C)]
        a_mem = [memory(f"acts{r}", L * AB, mp.act_depth) for r in range(R)]
        out_mem = memory("outputs", cfg.out_bits, mp.out_depth)
        w_wr = [mem.write_port(granularity=CB) for mem in w_mem]
        w_rd = [mem.read_port() for mem in w_mem]
        meta_wr = [mem.write_port() for mem in meta_mem]
        meta_rd = [mem.read_port() for mem in meta_mem]
        a_wr = [mem.write_port(granularity=AB) for mem in a_mem]
        a_rd = [mem.read_port() for mem in a_mem]
        out_wr = out_mem.write_port()
        out_rd = out_mem.read_port()
        if fp:
            E, MB, _ = bfp.float_fields(cfg.act_format)
            gx_mem = [memory(f"gexp{r}", E, mp.gexp_depth) for r in range(R)]
            base_mem = [memory(f"base{r}", E, mp.base_depth) for r in range(R)]
            gx_wr = [mem.write_port() for mem in gx_mem]
            gx_rd = [mem.read_port() for mem in gx_mem]
            base_wr = [mem.write_port() for mem in base_mem]
            base_rd = [mem.read_port() for mem in base_mem]

        # ---- command port ---------------------------------------------------------------------
        # Two stages: an offered command is first checked (its status registered, ``ready``
        # still low), then accepted and executed in the next cycle, its payload held stable by
        # the stream contract. Checking (address and data compares) and acting (buffer write
        # enables; ``start`` clearing the loop registers and counters) in one cycle was ~13 LUT
        # levels, the iCE40 board's critical path; holding the payload upstream instead of
        # registering a copy costs no flip-flops.
        cmd = self.i_cmd.payload
        resp_valid = Signal()
        resp_status = Signal(gcore.STATUS_BITS)
        resp_data = Signal(gcore.DATA_BITS)
        resp_from_mem = Signal()  # the response data is the output buffer's read data
        waiting = Signal()  # a wait command is held until the job ends
        accept = Signal()
        checked = Signal()  # the offered command's status is in ``x_status``
        x_status = Signal(gcore.STATUS_BITS)
        m.d.comb += [
            self.i_cmd.ready.eq(checked),
            accept.eq(self.i_cmd.valid & self.i_cmd.ready),
            self.o_resp.valid.eq(resp_valid),
            self.o_resp.payload.status.eq(resp_status),
            self.o_resp.payload.data.eq(Mux(resp_from_mem, out_rd.data, resp_data)),
        ]
        with m.If(self.o_resp.valid & self.o_resp.ready):
            m.d.sync += resp_valid.eq(0)

        def split(value, fields):
            """Address fields (low bits first) and whether the bits above them are zero."""
            out, pos = {}, 0
            for name, width in fields:
                out[name] = value[pos:pos + width] if width else Const(0, 1)
                pos += width
            return out, value[pos:] == 0 if pos < len(value) else Const(1)

        # -- check stage: the offered command's status -----------------------------------------
        status = Signal(gcore.STATUS_BITS)
        c_op, c_addr, c_dat = cmd.op, cmd.addr, cmd.data
        c_w, top_w = split(c_addr, mp.fields["write_weight"])
        c_meta, top_meta = split(c_addr, mp.fields["write_meta"])
        c_a, top_a = split(c_addr, mp.fields["write_act"])
        bad_w_addr = ~top_w | (c_w["lane"] >= L) | (c_w["word"] >= mp.weight_depth) \
            | (c_w["bank"] >= C)
        bad_meta_addr = ~top_meta | (c_meta["word"] >= mp.meta_depth) | (c_meta["bank"] >= C)
        bad_a_addr = ~top_a | (c_a["lane"] >= L) | (c_a["word"] >= mp.act_depth) \
            | (c_a["bank"] >= R)
        if fp:
            special_word = c_dat[MB:MB + E] == (1 << E) - 1
            bad_act = (c_dat[16:] != 0) | special_word
        else:
            bad_act = (c_dat[16:] != 0) | ((c_dat[7:16] != 0) & (c_dat[7:16] != 0x1FF))
        bad_meta = (c_dat[mp.meta_bits:] != 0) | (c_dat[SB:SB + 2] >= len(cfg.formats))
        job_value_ok = Signal()
        with m.Switch(c_addr):
            for idx, bound in enumerate((mp.max_m, mp.max_n, mp.max_k)):
                with m.Case(idx):
                    m.d.comb += job_value_ok.eq((c_dat != 0) & (c_dat <= bound))

        def check(*conds):
            """Status of the first true (condition, code) pair, else ok."""
            result = Const(ST["ok"], gcore.STATUS_BITS)
            for cond, code in reversed(conds):
                result = Mux(cond, code, result)
            return result

        with m.Switch(c_op):
            with m.Case(OPS["status"], OPS["wait"]):
                m.d.comb += status.eq(ST["ok"])
            with m.Case(OPS["write_weight"]):
                m.d.comb += status.eq(check((busy, ST["busy"]), (bad_w_addr, ST["bad_addr"]),
                                            (c_dat[CB:] != 0, ST["bad_data"])))
            with m.Case(OPS["write_meta"]):
                m.d.comb += status.eq(check((busy, ST["busy"]),
                                            (bad_meta_addr, ST["bad_addr"]),
                                            (bad_meta, ST["bad_data"])))
            with m.Case(OPS["write_act"]):
                m.d.comb += status.eq(check((busy, ST["busy"]), (bad_a_addr, ST["bad_addr"]),
                                            (bad_act, ST["bad_data"])))
            with m.Case(OPS["write_special"]):
                m.d.comb += status.eq(check((busy, ST["busy"]), (c_addr != 0, ST["bad_addr"])))
            with m.Case(OPS["set_job"]):
                m.d.comb += status.eq(check((busy, ST["busy"]), (c_addr >= 3, ST["bad_addr"]),
                                            (~job_value_ok, ST["bad_job"])))
            with m.Case(OPS["start"]):
                m.d.comb += status.eq(check(
                    (busy, ST["busy"]),
                    ((job_m == 0) | (job_n == 0) | (job_k == 0), ST["bad_job"])))
            with m.Case(OPS["read_output"]):
                m.d.comb += status.eq(check((busy, ST["busy"]),
                                            (c_addr >= mp.out_depth, ST["bad_addr"])))
            with m.Case(OPS["read_counter"]):
                m.d.comb += status.eq(check((c_addr >= 2 * len(counters), ST["bad_addr"])))
            with m.Default():
                m.d.comb += status.eq(ST["bad_op"])
        # Between the stages ``busy`` can only fall (a job ending), which orders the command
        # before the job's end: its status stands. Only ``start`` raises ``busy``, and it is
        # the one command in flight.
        with m.If(self.i_cmd.valid & ~checked & ~resp_valid & ~waiting):
            m.d.sync += [checked.eq(1), x_status.eq(status)]
        with m.If(accept):
            m.d.sync += checked.eq(0)

        # -- execute stage: the accepted command ------------------------------------------------
        op, addr, dat = c_op, c_addr, c_dat
        f_w, f_meta, f_a = c_w, c_meta, c_a
        start = Signal()
        imm = Signal(gcore.DATA_BITS)
        with m.Switch(op):
            with m.Case(OPS["status"]):
                m.d.comb += imm.eq(Cat(busy, done))
            with m.Case(OPS["wait"]):
                m.d.comb += imm.eq(Cat(Const(0, 1), done))
            with m.Case(OPS["read_counter"]), m.Switch(addr):
                for i, cnt in enumerate(counters):
                    for half in range(2):
                        with m.Case(2 * i + half):
                            m.d.comb += imm.eq(cnt[32 * half:32 * half + 32])
        x_ok = x_status == ST["ok"]
        ok = accept & x_ok

        with m.If(accept):
            with m.If((op == OPS["wait"]) & busy):
                m.d.sync += waiting.eq(1)
            with m.Else():
                m.d.sync += [resp_valid.eq(1), resp_status.eq(x_status),
                             resp_data.eq(Mux(x_ok, imm, 0)),
                             resp_from_mem.eq((op == OPS["read_output"]) & x_ok)]
        with m.If(waiting & ~busy):
            m.d.sync += [waiting.eq(0), resp_valid.eq(1), resp_status.eq(ST["ok"]),
                         resp_data.eq(Cat(Const(0, 1), done)), resp_from_mem.eq(0)]

        # Host writes: one element per command, the lane picked by the write enable.
        lane_en = [Signal(L, name=f"lane_en_{n}") for n in ("w", "a")]
        m.d.comb += [lane_en[0].eq((Const(1, L) << f_w["lane"])[:L]),
                     lane_en[1].eq((Const(1, L) << f_a["lane"])[:L])]
        for c in range(C):
            m.d.comb += [
                w_wr[c].addr.eq(f_w["word"]), w_wr[c].data.eq(Cat(*[dat[:CB]] * L)),
                meta_wr[c].addr.eq(f_meta["word"]), meta_wr[c].data.eq(dat[:mp.meta_bits]),
            ]
            with m.If(ok & (op == OPS["write_weight"]) & (f_w["bank"] == c)):
                m.d.comb += w_wr[c].en.eq(lane_en[0])
            with m.If(ok & (op == OPS["write_meta"]) & (f_meta["bank"] == c)):
                m.d.comb += meta_wr[c].en.eq(1)
        for r in range(R):
            m.d.comb += [a_wr[r].addr.eq(f_a["word"]), a_wr[r].data.eq(Cat(*[dat[:AB]] * L))]
            with m.If(ok & (op == OPS["write_act"]) & (f_a["bank"] == r)):
                m.d.comb += a_wr[r].en.eq(lane_en[1])
        with m.If(ok), m.Switch(op):
            with m.Case(OPS["write_special"]):
                m.d.sync += special.eq(dat)
            with m.Case(OPS["set_job"]), m.Switch(addr):
                for idx, reg in enumerate((job_m, job_n, job_k)):
                    with m.Case(idx):
                        m.d.sync += reg.eq(dat)
            with m.Case(OPS["start"]):
                m.d.comb += start.eq(1)
        m.d.comb += [out_rd.addr.eq(addr), out_rd.en.eq(ok & (op == OPS["read_output"]))]

        # ---- controller ----------------------------------------------------------------------
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
        feeding = Signal()  # steps remain to be read
        loop = [f_m0, f_n0, f_mt, f_k0, f_kstep, f_sg, f_g, f_abase, f_wbase, f_metabase,
                f_gxbase]

        last_step = f_k0 + L >= job_k
        last_n = f_n0 + C >= job_n
        last_m = f_m0 + R >= job_m
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
                m.d.sync += [f_k0.eq(0), f_kstep.eq(0), f_sg.eq(0), f_g.eq(0)]
                on_tile_end()
            with m.Else():
                m.d.sync += [f_k0.eq(f_k0 + L), f_kstep.eq(f_kstep + 1)]
                with m.If(f_sg == steps_per_group - 1):
                    m.d.sync += [f_sg.eq(0), f_g.eq(f_g + 1)]
                with m.Else():
                    m.d.sync += f_sg.eq(f_sg + 1)

        def next_m_tile(on_last):
            with m.If(last_m):
                on_last()
            with m.Else():
                m.d.sync += [f_m0.eq(f_m0 + R), f_mt.eq(f_mt + 1),
                             f_abase.eq(f_abase + mp.k_steps),
                             f_gxbase.eq(f_gxbase + mp.max_groups)]

        # Pipeline stage 1: buffer read data plus the step's flags and masks.
        s1_valid = Signal()
        s1_gl, s1_ol = Signal(), Signal()
        s1_lanes = Signal(L)
        s1_rows = Signal(R)
        s1_cols = Signal(C)
        s1_rv = Signal.like(rows_valid)
        s1_cv = Signal.like(cols_valid)
        s1_gend = Signal()
        s1_tend = Signal()
        s1_gxaddr = Signal.like(f_gxbase)
        s1_mt = Signal.like(f_mt)

        adv = Signal()
        m.d.comb += adv.eq(~s1_valid | array.i_stream.ready)
        job_end = Signal()  # the drain writes the job's last result

        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"), m.If(start):
                m.d.sync += [busy.eq(1), done.eq(0), feeding.eq(1)]
                m.d.sync += [reg.eq(0) for reg in loop + counters]
                m.next = "PREPASS" if fp else "FEED"
            if fp:
                with m.State("PREPASS"):
                    # Reads every activation word once; stage 1 (below) folds the exponents.
                    m.d.sync += [s1_valid.eq(feeding), s1_lanes.eq(lane_mask),
                                 s1_rows.eq(row_ok),
                                 s1_gend.eq(last_step | (f_sg == steps_per_group - 1)),
                                 s1_tend.eq(last_step), s1_gxaddr.eq(f_gxbase + f_g),
                                 s1_mt.eq(f_mt)]
                    with m.If(feeding):
                        def prepass_tile_end():
                            def finish():
                                m.d.sync += feeding.eq(0)
                            next_m_tile(finish)
                        advance_k(prepass_tile_end)
                    with m.Else():
                        # The last read lands this cycle; the feed restarts from tile 0.
                        m.d.sync += [s1_valid.eq(0), feeding.eq(1)]
                        m.d.sync += [reg.eq(0) for reg in loop]
                        m.next = "FEED"
            with m.State("FEED"):
                with m.If(adv):
                    m.d.sync += [s1_valid.eq(feeding), s1_lanes.eq(lane_mask),
                                 s1_rows.eq(row_ok), s1_cols.eq(col_ok),
                                 s1_gl.eq(last_step | (f_sg == steps_per_group - 1)),
                                 s1_ol.eq(last_step), s1_rv.eq(rows_valid),
                                 s1_cv.eq(cols_valid)]
                    with m.If(feeding):
                        def feed_tile_end():
                            with m.If(last_n):
                                m.d.sync += [f_n0.eq(0), f_wbase.eq(0), f_metabase.eq(0)]

                                def finish():
                                    m.d.sync += feeding.eq(0)
                                next_m_tile(finish)
                            with m.Else():
                                m.d.sync += [f_n0.eq(f_n0 + C),
                                             f_wbase.eq(f_wbase + mp.k_steps),
                                             f_metabase.eq(f_metabase + mp.max_groups)]
                        advance_k(feed_tile_end)
                with m.If(array.i_stream.ready & ~s1_valid & feeding):
                    m.d.sync += cnt_stall.eq(cnt_stall + 1)
                with m.If(array.i_stream.valid & array.i_stream.ready):
                    m.d.sync += cnt_busy.eq(cnt_busy + s1_rv * s1_cv * T)
                with m.If(job_end):
                    m.next = "IDLE"
        in_prepass = fsm.ongoing("PREPASS") if fp else Const(0)
        with m.If(busy):
            m.d.sync += cnt_cycles.eq(cnt_cycles + 1)

        # Buffer reads: the address of the step being issued; data arrive in stage 1.
        for c in range(C):
            m.d.comb += [w_rd[c].addr.eq(f_wbase + f_kstep), w_rd[c].en.eq(adv),
                         meta_rd[c].addr.eq(f_metabase + f_g), meta_rd[c].en.eq(adv)]
        for r in range(R):
            m.d.comb += [a_rd[r].addr.eq(f_abase + f_kstep),
                         a_rd[r].en.eq(in_prepass | adv)]
            if fp:
                m.d.comb += [gx_rd[r].addr.eq(f_gxbase + f_g), gx_rd[r].en.eq(adv),
                             base_rd[r].addr.eq(f_mt), base_rd[r].en.eq(adv)]

        # ---- pre-pass exponent fold (FP) ----------------------------------------------------
        if fp:
            window = (1 << cfg.act_exp_bits) - 1
            for r in range(R):
                g_run = Signal(E, name=f"g_run{r}")  # group max so far
                t_run = Signal(E, name=f"t_run{r}")  # tile max so far
                effs = []
                for lane in range(L):
                    word = a_rd[r].data[lane * AB:(lane + 1) * AB]
                    e, man = word[MB:MB + E], word[:MB]
                    eff = Signal(E, name=f"eff{r}_{lane}")
                    zero = ((e == 0) & (man == 0)) | (e == (1 << E) - 1)
                    m.d.comb += eff.eq(Mux(zero | ~s1_lanes[lane] | ~s1_rows[r], 0,
                                           Mux(e == 0, 1, e)))
                    effs.append(eff)
                gmax = g_run
                for eff in effs:
                    nxt = Signal(E)
                    m.d.comb += nxt.eq(Mux(eff > gmax, eff, gmax))
                    gmax = nxt
                tmax = Signal(E, name=f"tmax{r}")
                m.d.comb += tmax.eq(Mux(gmax > t_run, gmax, t_run))
                m.d.comb += [gx_wr[r].addr.eq(s1_gxaddr), gx_wr[r].data.eq(gmax),
                             base_wr[r].addr.eq(s1_mt),
                             base_wr[r].data.eq(Mux(tmax > window, tmax - window, 1))]
                with m.If(in_prepass & s1_valid):
                    m.d.sync += g_run.eq(gmax)
                    with m.If(s1_gend):
                        m.d.comb += gx_wr[r].en.eq(1)
                        m.d.sync += [g_run.eq(0), t_run.eq(tmax)]
                    with m.If(s1_tend):
                        m.d.comb += base_wr[r].en.eq(1)
                        m.d.sync += t_run.eq(0)

        # ---- array input ----------------------------------------------------------------------
        p = array.i_stream.payload

        def spread(mask, width):
            return Cat(*[Mux(mask[i], Const((1 << width) - 1, width), 0)
                         for i in range(len(mask))])

        lane_code_mask = spread(s1_lanes, CB)
        lane_act_mask = spread(s1_lanes, AB)
        m.d.comb += [
            array.i_stream.valid.eq(s1_valid & ~in_prepass),
            p.codes.eq(Cat(*[Mux(s1_cols[c], w_rd[c].data & lane_code_mask, 0)
                             for c in range(C)])),
            p.sel.eq(Cat(*[Mux(s1_cols[c], meta_rd[c].data[SB:SB + 2], 0) for c in range(C)])),
            p.acts.eq(Cat(*[Mux(s1_rows[r], a_rd[r].data & lane_act_mask, 0)
                            for r in range(R)])),
            p.group_last.eq(s1_gl),
            p.out_last.eq(s1_ol),
        ]
        if SB:
            m.d.comb += p.scale.eq(Cat(*[Mux(s1_cols[c], meta_rd[c].data[:SB], 0)
                                         for c in range(C)]))
        if fp:
            m.d.comb += [
                p.gexp.eq(Cat(*[Mux(s1_rows[r], gx_rd[r].data, 0) for r in range(R)])),
                p.base.eq(Cat(*[Mux(s1_rows[r], base_rd[r].data, 0) for r in range(R)])),
            ]

        # ---- drain: results to the output buffer ----------------------------------------------
        d_r = Signal(range(max(R, 2)))
        d_c = Signal(range(max(C, 2)))
        d_m0 = counter("d_m0", mp.max_m + R)
        d_n0 = counter("d_n0", mp.max_n + C)
        d_row = counter("d_row", (mp.max_m + R) * mp.max_n)  # (d_m0 + d_r) * max_n
        d_tile_row = counter("d_tile_row", (mp.max_m + R) * mp.max_n)  # d_m0 * max_n
        with m.If(start):
            m.d.sync += [d_r.eq(0), d_c.eq(0), d_m0.eq(0), d_n0.eq(0), d_row.eq(0),
                         d_tile_row.eq(0)]
        out = array.o_stream
        m.d.comb += [
            out.ready.eq(1),
            out_wr.addr.eq(d_row + d_n0 + d_c),
            out_wr.data.eq(out.payload.code),
            out_wr.en.eq(out.valid & (d_m0 + d_r < job_m) & (d_n0 + d_c < job_n)),
        ]
        with m.If(out.valid):
            with m.If(d_c == C - 1):
                m.d.sync += d_c.eq(0)
                with m.If(d_r == R - 1):
                    m.d.sync += d_r.eq(0)
                    with m.If(d_n0 + C >= job_n):
                        with m.If(d_m0 + R >= job_m):
                            m.d.comb += job_end.eq(1)
                            m.d.sync += [busy.eq(0), done.eq(1), feeding.eq(0)]
                        with m.Else():
                            m.d.sync += [d_n0.eq(0), d_m0.eq(d_m0 + R),
                                         d_tile_row.eq(d_tile_row + R * mp.max_n),
                                         d_row.eq(d_tile_row + R * mp.max_n)]
                    with m.Else():
                        m.d.sync += [d_n0.eq(d_n0 + C), d_row.eq(d_tile_row)]
                with m.Else():
                    m.d.sync += [d_r.eq(d_r + 1), d_row.eq(d_row + mp.max_n)]
            with m.Else():
                m.d.sync += d_c.eq(d_c + 1)
        return m

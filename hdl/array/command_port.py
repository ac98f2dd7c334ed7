"""The accelerator core's command port: decodes and checks each command, drives the buffer
writes and the job registers, and gives one response per command.

Twin: :meth:`golden.core.CoreModel.command` (status and response data of every command).
"""

from __future__ import annotations

from typing import NamedTuple

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import bfp
from bitmod.golden import core as gcore

from ..common import check_form, platform_form, read_only
from .buffers import HOST_WRITTEN, read_signature, write_signature

__all__ = ["CommandPort", "WriteDecode", "address_fields", "cmd_layout", "counters_layout",
           "decode_writes", "job_layout", "resp_layout"]


def cmd_layout(config: gcore.CoreConfig) -> data.StructLayout:
    """A command: ``{op: 4, addr: addr_bits, data: 32}`` (:mod:`golden.core`)."""
    return data.StructLayout({"op": unsigned(gcore.OP_BITS),
                              "addr": unsigned(config.addr_bits),
                              "data": unsigned(gcore.DATA_BITS)})


def resp_layout() -> data.StructLayout:
    """A response: ``{status: 3, data: 32}`` (:data:`golden.core.STATUS`)."""
    return data.StructLayout({"status": unsigned(gcore.STATUS_BITS),
                              "data": unsigned(gcore.DATA_BITS)})


def job_layout(config: gcore.CoreConfig) -> data.StructLayout:
    """The job registers ``M``, ``N``, ``K`` (0 until set; ``1 .. max_m`` etc. once set)."""
    return data.StructLayout({"m": range(config.max_m + 1), "n": range(config.max_n + 1),
                              "k": range(config.max_k + 1)})


def counters_layout() -> data.StructLayout:
    """The performance counters, 48 bits each, one field per name of
    :data:`golden.core.COUNTERS` in its order.

    A struct, not an array: an array layout's fields are wires named ``counters[0]``, ... beside
    ``counters``, and where both reach ABC9 (the 16-lane ULX3S netlist, whose command port copies
    the counters) its reintegration names bit ``i`` of ``counters`` ``counters[i]`` too and
    Yosys 0.69 asserts (``count_id(wire->name) == 0``, docs/synthesis.md)."""
    return data.StructLayout({name: unsigned(gcore.COUNTER_BITS) for name in gcore.COUNTERS})


@read_only("config", "writes")
class CommandPort(wiring.Component):
    """Checks each command, acts on it and answers it: the core's host-facing half.

    Status of a command (the first that applies; the table of the core's docstring,
    :meth:`golden.core.CoreModel.command`)::

        bad_op    op 10 .. 15
        busy      op 1 .. 6 or 8 while ``busy``
        bad_addr  an address field beyond its buffer (bank >= C / R, word >= depth,
                  lane >= L), address bits above the fields, counter >= 6, set_job field
                  >= 3, write_special addr != 0, read_output addr >= max_m * max_n
        bad_data  a code wider than code_bits; a meta word with bits above meta_bits
                  (2 + scale_bits, plus code_bits with zero points: the zero point's
                  offset code, any value) or a selector >= the number of formats, or (a PE
                  kind that shifts by the group scale, golden.pe_kind.PEKind.scale) a
                  scale code that is not a power of two; an INT8 word that is not a
                  sign-extended int8; an FP16/BF16 word with an all-ones exponent; bits
                  above 16 in an activation word
        bad_job   set_job value 0 or above max_m / max_n / max_k; start before M, N and K
                  are all set
        ok        otherwise

    Actions of an ``ok`` command: ``write_weight`` / ``write_meta`` / ``write_act`` write the
    element to its buffer bank (one lane of the word, through the write port's lane enable);
    ``write_special`` and ``set_job`` load :attr:`special` / :attr:`job`; ``start`` pulses
    :attr:`start`; ``read_output`` reads the output buffer, whose read data is the response
    data in the next cycle. A refused command changes nothing. Response data: ``status``
    ``busy | done << 1``; ``wait`` ``done << 1``, held until ``busy`` is low; ``read_counter``
    the 32-bit half ``addr % 2`` of counter ``addr // 2``; else 0.

    Two stages: an offered command is first checked (its status and a copy of it registered,
    ``i_cmd.ready`` still low), then accepted and executed in the next cycle from the copy (the
    stream contract keeps the offered payload equal to it). Checking (address and data
    compares) and acting (buffer write enables; ``start``) in one cycle was ~13 LUT levels,
    the iCE40 board's critical path; acting on the sender's payload instead of the copy put the
    sender's registers, wherever they were placed, at the head of the execute stage's paths.

    Latency: 1 cycle from a command accepted to its response valid (an ``ok`` ``read_output``
    with the registered command: 2, its read data registered before it leaves; ``wait``: from
    ``busy`` falling). Throughput: one command per 3 cycles (check, accept, response taken;
    an ``ok`` ``read_output`` with the registered command: 4).

    Parameters
    ----------
    config : golden.core.CoreConfig
    register_command : bool or None
        Register the checked command for the execute stage (its decode then starts at
        flip-flops beside it). ``None`` (default): on every platform but the iCE40, where the
        execute stage decodes the offered command (held by the stream contract until taken).
    writes : bool
        Write the buffers (default). ``False``: an ``ok`` buffer write is answered as usual but
        written elsewhere (a split top's :class:`~hdl.array.host_writes.HostWrites`, in the
        link's clock domain), and the write ports stay idle.

    Members
    -------
    i_cmd : In(stream.Signature(cmd_layout(config)))
    o_resp : Out(stream.Signature(resp_layout()))
    busy, done : In(1)
        The controller's job state (``busy`` may only fall while a command is in flight).
    counters : In(counters_layout())
        The controller's counters; the registered form answers a read from its copy of them
        a cycle behind (the same value once a job has ended).
    start : Out(1)
        One cycle, a flip-flop: an ``ok`` ``start`` was accepted in the previous cycle (so
        the controller's job reset, which reaches its counters and loops across the chip,
        starts at a flip-flop; the checks count the job as running from this cycle on).
    special : Out(32)
        The special-value register (reset 0).
    job : Out(job_layout(config))
        The job registers (reset 0).
    waiting : Out(1)
        A ``wait`` was accepted during a job and is not answered yet.
    weight_write, meta_write : In(WritePort.Signature).array(C)
        Per column bank: weights (granularity ``code_bits``, one enable per lane), meta words.
    act_write : In(WritePort.Signature).array(R)
        Per row bank, granularity ``A`` (8 INT8, 16 FP).
    output_read : In(ReadPort.Signature)
        The output buffer's read port (``read_output``).
    """

    def __init__(self, config: gcore.CoreConfig, register_command: bool | None = None,
                 writes: bool = True):
        if not isinstance(config, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        if not isinstance(writes, bool):
            raise TypeError(f"writes must be a bool, not {writes!r}")
        self._register_command = check_form("register_command", register_command)
        self._writes = writes
        self._config = mp = config
        R, C, L = mp.rows, mp.cols, mp.lanes
        super().__init__({
            "i_cmd": In(stream.Signature(cmd_layout(mp))),
            "o_resp": Out(stream.Signature(resp_layout())),
            "busy": In(1),
            "done": In(1),
            "counters": In(counters_layout()),
            "start": Out(1),
            "special": Out(32),
            "job": Out(job_layout(mp)),
            "waiting": Out(1),
            "weight_write": In(write_signature(mp.weight_depth, L * mp.code_bits,
                                               mp.code_bits)).array(C),
            "meta_write": In(write_signature(mp.meta_depth, mp.meta_bits)).array(C),
            "act_write": In(write_signature(mp.act_depth, L * mp.act_bits,
                                            mp.act_bits)).array(R),
            "output_read": In(read_signature(mp.out_depth, mp.out_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        mp = self._config
        cfg = mp.array
        R, C, L = cfg.rows, cfg.cols, cfg.lanes
        CB, SB = mp.code_bits, cfg.scale_bits
        OPS, ST = gcore.OPS, gcore.STATUS
        # A job runs from the cycle ``start`` (a flip-flop) is high, before the controller's
        # ``busy`` rises: the checks see both.
        busy = Signal(name="job_running")
        m.d.comb += busy.eq(self.busy | self.start)
        done, job = self.done, self.job

        cmd = self.i_cmd.payload
        resp_valid = Signal()
        resp_status = Signal(gcore.STATUS_BITS)
        resp_data = Signal(gcore.DATA_BITS)
        resp_from_mem = Signal()  # the response data is the output buffer's read data
        # With the registered command (off the iCE40) a read's data goes to ``resp_data`` a
        # cycle after the read (``fetch``), so no block-RAM output drives the response's
        # multiplexer and net (the ULX3S 7 x 6 x 16 build at 100 MHz, seed 2: the output
        # buffer -> the response multiplexer -> the clock crossing's register, 10.8 ns).
        registered = platform_form(self._register_command, platform, on_ice40=False)
        fetch = Signal()
        waiting = self.waiting
        accept = Signal()
        checked = Signal()  # the offered command's status is in ``x_status``
        x_status = Signal(gcore.STATUS_BITS)
        m.d.comb += [
            self.i_cmd.ready.eq(checked),
            # ``checked`` is set only with ``valid`` high, and the stream contract keeps an
            # offered command until it is taken: so the transfer is ``checked`` alone, and
            # the execute stage's enables start at a flip-flop, not at the sender's valid
            # (a clock-domain crossing FIFO's empty compare on the ECP5 boards).
            accept.eq(checked),
            self.o_resp.valid.eq(resp_valid),
            self.o_resp.payload.status.eq(resp_status),
            self.o_resp.payload.data.eq(resp_data if registered
                                        else Mux(resp_from_mem, self.output_read.data,
                                                 resp_data)),
        ]
        with m.If(self.o_resp.valid & self.o_resp.ready):
            m.d.sync += resp_valid.eq(0)

        # ---- check stage: the offered command's status ------------------------------------
        op, addr, dat = cmd.op, cmd.addr, cmd.data
        # (``go`` per buffer: each write's own ``ok``, below; the fields need none.)
        write_ok = {name: Signal(name=f"{name}_write_ok") for name in HOST_WRITTEN}
        decoded = decode_writes(mp, cmd, write_ok)
        (f_w, top_w), (f_meta, top_meta), (f_a, top_a) = (
            (decoded[name].fields, decoded[name].fits) for name in HOST_WRITTEN)
        bad_w_addr = ~top_w | (f_w["lane"] >= L) | (f_w["word"] >= mp.weight_depth) \
            | (f_w["bank"] >= C)
        bad_meta_addr = ~top_meta | (f_meta["word"] >= mp.meta_depth) | (f_meta["bank"] >= C)
        bad_a_addr = ~top_a | (f_a["lane"] >= L) | (f_a["word"] >= mp.act_depth) \
            | (f_a["bank"] >= R)
        if cfg.act_format != "int8":
            E, MB, _ = bfp.float_fields(cfg.act_format)
            special_word = dat[MB:MB + E] == (1 << E) - 1  # Inf or NaN
            bad_act = (dat[16:] != 0) | special_word
        else:
            bad_act = (dat[16:] != 0) | ((dat[7:16] != 0) & (dat[7:16] != 0x1FF))
        bad_meta = (dat[mp.meta_bits:] != 0) | (dat[SB:SB + 2] >= len(cfg.formats))
        if cfg.kind.scale == "shift":  # the PE shifts by j of a scale code 2**j
            scale = dat[:SB]
            bad_meta = bad_meta | (scale == 0) | ((scale & (scale - 1)) != 0)
        # A write's (bad address, bad data): its status below, and its bank pick.
        write_checks = {"write_weight": (bad_w_addr, dat[CB:] != 0),
                        "write_meta": (bad_meta_addr, bad_meta),
                        "write_act": (bad_a_addr, bad_act)}
        # A set_job value fits its dimension (M, N, K at addresses 0, 1, 2).
        value_fits = [(dat != 0) & (dat <= bound) for bound in (mp.max_m, mp.max_n, mp.max_k)]
        job_value_ok = Signal()
        with m.Switch(addr):
            for idx, fits in enumerate(value_fits):
                with m.Case(idx):
                    m.d.comb += job_value_ok.eq(fits)

        # Which of M, N, K have been set, one flip-flop each beside the checks: a register is
        # 0 until its first set_job and never 0 after (the check refuses 0), so this is
        # ``job.m != 0`` etc. without a compare of the job registers, which the controller's
        # loop reads across the chip (the ULX3S 10 x 10 x 8 build at 82 MHz, seed 1: Yosys
        # shared the loop's K compare with the start check, job -> status, 12.6 ns).
        job_set = Signal(3)
        status = Signal(gcore.STATUS_BITS)
        with m.Switch(op):
            with m.Case(OPS["status"], OPS["wait"]):
                m.d.comb += status.eq(ST["ok"])
            for name, (bad_addr, bad_data) in write_checks.items():
                with m.Case(OPS[name]):
                    m.d.comb += status.eq(_first((busy, ST["busy"]), (bad_addr, ST["bad_addr"]),
                                                 (bad_data, ST["bad_data"])))
            with m.Case(OPS["write_special"]):
                m.d.comb += status.eq(_first((busy, ST["busy"]), (addr != 0, ST["bad_addr"])))
            with m.Case(OPS["set_job"]):
                m.d.comb += status.eq(_first((busy, ST["busy"]), (addr >= 3, ST["bad_addr"]),
                                             (~job_value_ok, ST["bad_job"])))
            with m.Case(OPS["start"]):
                m.d.comb += status.eq(_first((busy, ST["busy"]),
                                             (job_set != 0b111, ST["bad_job"])))
            with m.Case(OPS["read_output"]):
                m.d.comb += status.eq(_first((busy, ST["busy"]),
                                             (addr >= mp.out_depth, ST["bad_addr"])))
            with m.Case(OPS["read_counter"]):
                m.d.comb += status.eq(_first((addr >= 2 * len(gcore.COUNTERS),
                                              ST["bad_addr"])))
            with m.Default():
                m.d.comb += status.eq(ST["bad_op"])
        # Between the stages ``busy`` can only fall (a job ending), which orders the command
        # before the job's end: its status stands. Only ``start`` raises ``busy``, and it is
        # the one command in flight.
        # The checked command is registered beside its status: the execute stage's decoding
        # (write enables, response data) starts at these flip-flops, not at the sender's
        # registers across the chip (the ULX3S 10 x 10 build's critical path, 14.6 ns routing).
        x_cmd = Signal.like(cmd, name="x_cmd")
        x_start = Signal()  # an ``ok`` start: the controller's job reset starts at this FF
        # The response's source, picked at the check too: one flip-flop per source (status,
        # wait, each counter half), all low unless the command is ``ok``, so the execute
        # stage's response data is an AND-OR of flip-flops, not a decode of the command.
        # With the registered command the counters are read from a copy a cycle behind, taken
        # beside the port, so the response's AND-OR starts at local flip-flops, not at the
        # controller's counters across the chip (the ULX3S 7 x 6 x 16 builds at 100 MHz: a
        # counter bit -> the AND-OR -> ``resp_data``, 10.0-10.3 ns). A counter read during a
        # job answers a live value (:meth:`golden.core.CoreModel.command`); between jobs the
        # counters stand still.
        counters = self.counters
        if registered:
            counters = Signal.like(self.counters, name="counters_copy")
            m.d.sync += counters.eq(self.counters)
        sources = [Cat(busy, done), Cat(Const(0, 1), done)]
        picks = [op == OPS["status"], op == OPS["wait"]]
        for i, counter in enumerate(gcore.COUNTERS):
            for half in range(2):
                sources.append(counters[counter][32 * half:32 * half + 32])
                picks.append((op == OPS["read_counter"]) & (addr == 2 * i + half))
        x_pick = Signal(len(sources))
        # The buffer write's bank and lane, picked at the check too (with the copy): a
        # flip-flop per bank of each buffer, set for an ``ok`` write to it only and cleared
        # with ``accept`` (the next cycle), and the lane one-hot, so a bank's write enables
        # are one LUT of two flip-flops (its pick, the lane) before the write registers
        # beside the bank, not the decode of the op, status, bank and lane (the ULX3S
        # 10 x 10 x 8 build's path at 100 MHz asked: four LUTs and 11.4 ns of routing into an
        # activation bank's first write register), nor ``accept``'s one net to every bank
        # (the next build's path: 9.9 ns).
        # A write's ``ok`` comes from its own checks: the value of ``status == ok`` for it,
        # but the picks are not behind the whole status decode (the ULX3S 10 x 10 x 8 builds
        # at 65 and 82 MHz: the command → the status → a pick, eight LUTs, 12.5-13.9 ns).
        for name in HOST_WRITTEN:
            bad_addr, bad_data = write_checks[f"write_{name}"]
            m.d.comb += write_ok[name].eq(~busy & ~bad_addr & ~bad_data)
        if self._writes:
            bank_picks = Cat(*[hit for name in HOST_WRITTEN for hit in decoded[name].hits])
            x_banks = Signal(len(bank_picks))
            x_lanes = Signal(2 * L)  # the lane one-hot of a weight write, then an activation's
        # The registers an ``ok`` command loads (special, M, N, K), picked at the check too
        # and cleared with ``accept``: their enables are flip-flops, not the decode of the op
        # and address behind ``accept`` (the ULX3S 7 x 6 x 16 build at 100 MHz: 11.1 ns into
        # the job registers, read by the controller across the chip).
        # Each pick is its command's own ``ok`` (as the writes' are), not ``status == ok``
        # behind the whole status decode (the ULX3S 7 x 6 x 16 build at 100 MHz, seed 1:
        # the status decode → x_regs, 11.1 ns).
        x_regs = Signal(4)
        reg_picks = Cat((op == OPS["write_special"]) & (addr == 0),
                        *[(op == OPS["set_job"]) & (addr == idx) & fits
                          for idx, fits in enumerate(value_fits)])
        with m.If(self.i_cmd.valid & ~checked & ~resp_valid & ~waiting & ~fetch):
            m.d.sync += [checked.eq(1), x_status.eq(status), x_cmd.eq(cmd),
                         x_start.eq((op == OPS["start"]) & (status == ST["ok"])),
                         x_pick.eq(Mux(status == ST["ok"], Cat(*picks), 0)),
                         x_regs.eq(Mux(busy, 0, reg_picks))]
            if self._writes:
                m.d.sync += [x_banks.eq(bank_picks),
                             x_lanes.eq(Cat(decoded["weight"].lanes, decoded["act"].lanes))]
        with m.If(accept):  # (a pick stands in ``accept`` only)
            m.d.sync += [checked.eq(0), x_regs.eq(0)]
            if self._writes:
                m.d.sync += x_banks.eq(0)

        # ---- execute stage: the accepted command ------------------------------------------
        # Without the copy (the iCE40 form: the LCs the iCEBreaker default needs) the execute
        # stage decodes the offered command, which the stream contract keeps until taken.
        executed = x_cmd if registered else cmd
        op, addr, dat = executed.op, executed.addr, executed.data
        imm = Signal(gcore.DATA_BITS)  # the picked source (0 for a refused command)
        picked = Const(0, gcore.DATA_BITS)
        for i, source in enumerate(sources):
            picked = picked | Mux(x_pick[i], source, 0)
        m.d.comb += imm.eq(picked)
        x_ok = x_status == ST["ok"]
        ok = accept & x_ok

        with m.If(accept):
            with m.If((op == OPS["wait"]) & busy):
                m.d.sync += waiting.eq(1)
            with m.Elif(registered & (op == OPS["read_output"]) & x_ok):
                m.d.sync += fetch.eq(1)
            with m.Else():
                m.d.sync += [resp_valid.eq(1), resp_status.eq(x_status),
                             resp_data.eq(imm),
                             resp_from_mem.eq((op == OPS["read_output"]) & x_ok)]
        with m.If(fetch):  # the read's data arrived: the response, from a register
            m.d.sync += [fetch.eq(0), resp_valid.eq(1), resp_status.eq(ST["ok"]),
                         resp_data.eq(self.output_read.data)]
        with m.If(waiting & ~busy):
            m.d.sync += [waiting.eq(0), resp_valid.eq(1), resp_status.eq(ST["ok"]),
                         resp_data.eq(Cat(Const(0, 1), done)), resp_from_mem.eq(0)]

        if self._writes:
            if registered:
                picked_banks = [x_banks[i] for i in range(len(x_banks))]
                lane_ens = [x_lanes[:L], x_lanes[L:]]
            else:
                executed_writes = decode_writes(mp, executed, ok)
                picked_banks = [hit for name in HOST_WRITTEN
                                for hit in executed_writes[name].hits]
                lane_ens = [executed_writes["weight"].lanes, executed_writes["act"].lanes]
            self._write_buffers(m, executed, picked_banks, lane_ens)
        loads = (x_regs if registered
                 else Cat(ok & (op == OPS["write_special"]),
                          *[ok & (op == OPS["set_job"]) & (addr == idx) for idx in range(3)]))
        for i, reg in enumerate((self.special, job.m, job.n, job.k)):
            with m.If(loads[i]):
                m.d.sync += reg.eq(dat)
                if i:
                    m.d.sync += job_set[i - 1].eq(1)
        m.d.sync += self.start.eq(accept & x_start)
        m.d.comb += [self.output_read.addr.eq(addr),
                     self.output_read.en.eq(ok & (op == OPS["read_output"]))]
        return m


    def _write_buffers(self, m: Module, executed, picked_bank, lane_ens) -> None:
        """Host writes: one element per command, the lane picked by the write enable.
        ``picked_bank``: one enable per bank (the weight banks, the meta banks, then the
        activation banks); ``lane_ens``: the lane one-hots of a weight and an activation
        write. The registered form's are the check's flip-flops; the iCE40's the decode of
        the ``executed`` command (:func:`decode_writes`)."""
        mp = self._config
        R, C, L = mp.rows, mp.cols, mp.lanes
        CB, AB = mp.code_bits, mp.act_bits
        addr, dat = executed.addr, executed.data
        # Every bank of a buffer takes the word field of the executed command's address.
        word = {name: address_fields(addr, mp.fields[f"write_{name}"])[0]["word"]
                for name in HOST_WRITTEN}
        lane_en = [Signal(L, name=f"lane_en_{n}") for n in ("w", "a")]
        m.d.comb += [lane_en[0].eq(lane_ens[0]), lane_en[1].eq(lane_ens[1])]
        for c in range(C):
            w_wr, meta_wr = self.weight_write[c], self.meta_write[c]
            m.d.comb += [
                w_wr.addr.eq(word["weight"]), w_wr.data.eq(Cat(*[dat[:CB]] * L)),
                meta_wr.addr.eq(word["meta"]), meta_wr.data.eq(dat[:mp.meta_bits]),
                w_wr.en.eq(Mux(picked_bank[c], lane_en[0], 0)),
                meta_wr.en.eq(picked_bank[C + c]),
            ]
        for r in range(R):
            a_wr = self.act_write[r]
            m.d.comb += [a_wr.addr.eq(word["act"]), a_wr.data.eq(Cat(*[dat[:AB]] * L)),
                         a_wr.en.eq(Mux(picked_bank[2 * C + r], lane_en[1], 0))]


def address_fields(value, fields):
    """Address fields (low bits first: :attr:`golden.core.CoreConfig.fields`) of ``value`` and
    whether the bits above them are zero."""
    out, pos = {}, 0
    for name, width in fields:
        out[name] = value[pos:pos + width] if width else Const(0, 1)
        pos += width
    return out, value[pos:] == 0 if pos < len(value) else Const(1)


class WriteDecode(NamedTuple):
    """One host-written buffer's decode of a write command (:func:`decode_writes`).

    Members
    -------
    fields : dict[str, Value]
        The address fields (``lane``, ``word``, ``bank``; ``lane`` a 1-bit 0 without lanes).
    fits : Value
        The address bits above the fields are zero.
    hits : list[Value]
        Per bank: ``go``, the op is this buffer's write and the bank field names this bank.
    lanes : Value
        The lane one-hot (``L`` bits) of a per-lane buffer; 1 (one bit) for ``meta``, whose
        words are written whole.
    """

    fields: dict
    fits: object
    hits: list
    lanes: object


def decode_writes(config: gcore.CoreConfig, cmd, go) -> dict[str, WriteDecode]:
    """The decode of a write command for each :data:`~hdl.array.buffers.HOST_WRITTEN` buffer:
    its address fields, per-bank hits and lane one-hot (:class:`WriteDecode`).

    ``go`` gates the hits: one value for every buffer, or a dict ``buffer -> value`` (the
    command port's check: each buffer's own "this write is ``ok``"). The command port (its
    check stage, and the iCE40 form's execute stage) and a split top's
    :class:`~hdl.array.host_writes.HostWrites` decode a write with this one function.
    """
    mp = config
    out = {}
    for name in HOST_WRITTEN:
        fields, fits = address_fields(cmd.addr, mp.fields[f"write_{name}"])
        banks = mp.rows if name == "act" else mp.cols
        gate = go[name] if isinstance(go, dict) else go
        ours = gate & (cmd.op == gcore.OPS[f"write_{name}"])
        hits = [ours & (fields["bank"] == bank) for bank in range(banks)]
        per_lane = any(field == "lane" for field, _ in mp.fields[f"write_{name}"])
        lanes = (Const(1, mp.lanes) << fields["lane"])[:mp.lanes] if per_lane else Const(1, 1)
        out[name] = WriteDecode(fields, fits, hits, lanes)
    return out


def _first(*conds):
    """Status of the first true (condition, code) pair, else ok."""
    result = Const(gcore.STATUS["ok"], gcore.STATUS_BITS)
    for cond, code in reversed(conds):
        result = Mux(cond, code, result)
    return result

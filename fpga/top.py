"""The board top: PLL, reset synchroniser, UART bridge, bus adapter and the accelerator core.

Bus map (what the host's READ/WRITE/EXEC frames address, see ``docs/boards.md``): a 32-bit bus
address is ``op << 24 | core_addr``, one core command per bus word:

* bus **write** (WRITE frame words, EXEC) of ``data`` to ``op << 24 | a`` -> core command
  ``{op, addr: a, data}``;
* bus **read** (READ frame words) of ``op << 24 | a`` -> core command ``{op, addr: a, data: 0}``,
  whose response data is returned (``read_output``, ``read_counter``, ``status``, ``wait``);
* response: ``error = status != 0``; ``data`` = the core's response data when ``status == 0``,
  else the status code (the bridge reports the failing word; EXEC returns the word).

So consecutive bus words walk consecutive core addresses of one op: a READ of ``n`` words from
``8 << 24 | m * max_n + n0`` returns ``n`` output codes. An address the core cannot decode is
refused by the adapter itself, without reaching the core: bits 28..31 set -> status ``bad_op``
(1); bits ``addr_bits``..23 set -> ``bad_addr`` (2).

Op 15 (:data:`golden.core.CONFIG_OP`) is the adapter's own: a read (or write, which changes
nothing) of ``15 << 24 | i`` returns word ``i`` of the read-only configuration block
(:func:`golden.core.encode_config` of the core and the link: array, lanes, formats, buffers,
clock, baud, with a version word), ``bad_addr`` from :data:`golden.core.CONFIG_WORDS` on.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth import (
    Array,
    ClockDomain,
    Const,
    DomainRenamer,
    Elaboratable,
    Instance,
    Module,
    Mux,
    Signal,
    Value,
)
from amaranth.lib import data, io, stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from bitmod.golden import core as gcore
from bitmod.golden.checks import check_int
from bitmod.golden.protocol import OP_SHIFT, LinkConfig
from bitmod.hdl.array.buffers import HOST_WRITTEN
from bitmod.hdl.array.core import AcceleratorCore
from bitmod.hdl.array.host_writes import HostWrites
from bitmod.hdl.link.bridge import UartBridge, bus_signature

from .boards import Board, PLLConfig

__all__ = ["CDC_DEPTH", "AcceleratorTop", "BoardTop", "BusAdapter"]

# Entries of each clock-domain-crossing FIFO of a split top (AcceleratorTop). The adapter keeps
# one transaction outstanding, so neither FIFO ever holds more than one entry.
CDC_DEPTH = 2


class BusAdapter(wiring.Component):
    """Maps the bridge's bus onto the core's command stream (the map: module docstring).

    One transaction at a time: a request is registered (so no combinational path runs from the
    bridge through the core's decoder), then either answered at once (undecodable address) or
    passed to the core, whose response is passed back. The bridge never has more than one
    request outstanding, so this costs nothing in throughput.

    With ``config`` words, op :data:`golden.core.CONFIG_OP` is answered by the adapter from
    them (a constant table, index ``addr[:24]``; ``bad_addr`` at or beyond its length), so a
    host can read what the bitstream holds; without, op 15 reaches the core (``bad_op``).

    Latency: 2 cycles from a request accepted to an adapter-made response valid (errors and
    configuration words); 1 + the core's response time for a forwarded command. Throughput:
    one transaction per ~3 cycles.

    Parameters
    ----------
    addr_bits : int
        The core's command address width (:attr:`golden.core.CoreConfig.addr_bits`), 1..24.
    config : sequence of int
        The configuration block (:func:`golden.core.encode_config`), 32-bit words; at most
        256 (empty: no block).

    Members
    -------
    bus : In(bus_signature())
        Requests ``{write, addr, data}`` in, responses ``{data, error}`` out.
    cmd : Out(stream.Signature({op: 4, addr: addr_bits, data: 32}))
        To the core's ``i_cmd``.
    resp : In(stream.Signature({status: 3, data: 32}))
        From the core's ``o_resp``.
    """

    def __init__(self, addr_bits: int, config: Sequence[int] = ()):
        self._addr_bits = check_int("addr_bits", addr_bits, 1, OP_SHIFT)
        self._config = tuple(check_int("config word", w, 0, (1 << gcore.DATA_BITS) - 1)
                             for w in config)
        if len(self._config) > 256:
            raise ValueError(f"a configuration block has at most 256 words, not "
                             f"{len(self._config)}")
        super().__init__({
            "bus": In(bus_signature()),
            "cmd": Out(stream.Signature(data.StructLayout({
                "op": gcore.OP_BITS, "addr": addr_bits, "data": gcore.DATA_BITS}))),
            "resp": In(stream.Signature(data.StructLayout({
                "status": gcore.STATUS_BITS, "data": gcore.DATA_BITS}))),
        })

    @property
    def addr_bits(self) -> int:
        return self._addr_bits

    @property
    def config(self) -> tuple[int, ...]:
        """The configuration block served on op 15 (empty: none)."""
        return self._config

    def elaborate(self, platform):
        m = Module()
        A = self._addr_bits
        N = len(self._config)
        index_bits = max(1, (N - 1).bit_length())
        req, bresp = self.bus.req, self.bus.resp
        held = Signal()  # a request is registered and not yet passed on
        held_op = Signal(gcore.OP_BITS)
        held_addr = Signal(A)
        held_data = Signal(gcore.DATA_BITS)
        held_status = Signal(gcore.STATUS_BITS)  # nonzero: the adapter answers it itself
        held_config = Signal()  # a configuration read: the adapter answers it itself
        held_index = Signal(index_bits)
        forwarded = Signal()  # the core took the command; its response is awaited
        local = Signal()  # an adapter-made response is offered: an error or a config word

        addr = req.payload.addr
        op = addr[OP_SHIFT:OP_SHIFT + gcore.OP_BITS]
        is_config = (op == gcore.CONFIG_OP) if N else Const(0)
        m.d.comb += req.ready.eq(~held & ~forwarded & ~local)
        with m.If(req.valid & req.ready):
            core_addr_bad = addr[A:OP_SHIFT] != 0 if A < OP_SHIFT else Const(0)
            # index >= N as stray high bits or a low field >= N (no 24-bit comparator chain)
            index_bad = (addr[index_bits:OP_SHIFT] != 0) | (addr[:index_bits] >= N)
            addr_bad = Mux(is_config, index_bad, core_addr_bad)
            status = Mux(addr[OP_SHIFT + gcore.OP_BITS:] != 0, gcore.STATUS["bad_op"],
                         Mux(addr_bad, gcore.STATUS["bad_addr"], gcore.STATUS["ok"]))
            m.d.sync += [held.eq(1), held_op.eq(op), held_addr.eq(addr[:A]),
                         held_data.eq(Mux(req.payload.write, req.payload.data, 0)),
                         held_status.eq(status), held_config.eq(is_config),
                         held_index.eq(addr[:index_bits])]

        m.d.comb += [self.cmd.valid.eq(held & (held_status == 0) & ~held_config),
                     self.cmd.payload.op.eq(held_op), self.cmd.payload.addr.eq(held_addr),
                     self.cmd.payload.data.eq(held_data)]
        # An adapter-made response: held_status and held_index stay as registered until it is
        # taken (no request is accepted meanwhile).
        with m.If(held & ((held_status != 0) | held_config)):
            m.d.sync += [held.eq(0), local.eq(1)]
        word = (Array(Const(w, gcore.DATA_BITS) for w in self._config)[held_index] if N
                else Const(0, gcore.DATA_BITS))
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [held.eq(0), forwarded.eq(1)]

        core_error = self.resp.payload.status != 0
        with m.If(local):
            m.d.comb += [bresp.valid.eq(1), bresp.payload.error.eq(held_status != 0),
                         bresp.payload.data.eq(Mux(held_status != 0, held_status, word))]
            with m.If(bresp.ready):
                m.d.sync += local.eq(0)
        with m.Else():
            m.d.comb += [bresp.valid.eq(forwarded & self.resp.valid),
                         bresp.payload.error.eq(core_error),
                         bresp.payload.data.eq(Mux(core_error, self.resp.payload.status,
                                                   self.resp.payload.data)),
                         self.resp.ready.eq(forwarded & bresp.ready)]
            with m.If(forwarded & self.resp.valid & bresp.ready):
                m.d.sync += forwarded.eq(0)
        return m


class AcceleratorTop(wiring.Component):
    """:class:`~hdl.link.bridge.UartBridge` + :class:`BusAdapter` + :class:`AcceleratorCore`.

    Clock-agnostic: the board top supplies clocks and resets; the bare flow and the
    end-to-end simulation use it as the top module. With one clock (``link.core_clk_freq``
    None) everything runs in ``sync``. With ``link.core_clk_freq`` set, the bridge and the
    bus adapter run in the ``link`` domain (at ``link.clk_freq``, e.g. the board's
    oscillator) and the core in ``sync`` (at ``core_clk_freq``): commands cross in an
    :class:`~amaranth.lib.fifo.AsyncFIFO` of :data:`CDC_DEPTH` entries and responses in
    another, so none of the link's paths has to meet the core's clock. The adapter keeps one
    transaction outstanding, so the FIFOs never fill; each crossing adds about three cycles
    of the receiving clock per transaction, nothing next to a UART byte time. The buffer
    writes are stored in the ``link`` domain too, by :class:`~hdl.array.host_writes.
    HostWrites` once the core has answered them ``ok``, on the banks' link-clocked write ports,
    so no path from a command to a bank is timed at the core's clock.

    Parameters
    ----------
    core : golden.core.CoreConfig
        The accelerator core.
    link : golden.protocol.LinkConfig
        The UART link (its ``clk_freq`` is the clock this top runs at).

    Members
    -------
    rx : In(1)
        Serial input from the host (idle high).
    tx : Out(1)
        Serial output to the host (idle high).
    """

    def __init__(self, core: gcore.CoreConfig | None = None, link: LinkConfig | None = None):
        self._core = gcore.CoreConfig() if core is None else core
        self._link = LinkConfig() if link is None else link
        if not isinstance(self._core, gcore.CoreConfig):
            raise TypeError(f"core must be a CoreConfig, not {core!r}")
        if not isinstance(self._link, LinkConfig):
            raise TypeError(f"link must be a LinkConfig, not {link!r}")
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    core = property(lambda self: self._core, doc="The :class:`golden.core.CoreConfig`.")
    link = property(lambda self: self._link, doc="The :class:`golden.protocol.LinkConfig`.")

    def elaborate(self, platform):
        m = Module()
        split = self._link.split
        in_link = DomainRenamer("link") if split else (lambda block: block)
        m.submodules.link = link = in_link(UartBridge(self._link))
        m.submodules.adapter = adapter = in_link(BusAdapter(
            self._core.addr_bits, gcore.encode_config(self._core, self._link)))
        # Split: the buffers' host writes happen in the link domain (HostWrites, below).
        m.submodules.core = core = AcceleratorCore(self._core,
                                                   host_write_domain="link" if split else None)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
        wiring.connect(m, link.bus, adapter.bus)
        if not split:
            wiring.connect(m, adapter.cmd, core.i_cmd)
            wiring.connect(m, core.o_resp, adapter.resp)
            return m
        # Two clocks: a FIFO per direction; payloads cross as flat bit vectors. A response
        # enters its FIFO from a register (one transaction at a time: a register is enough),
        # not from the command port's output multiplexer behind the output buffer's block RAM
        # (the ULX3S 7 x 6 x 16 build at 100 MHz: 11.8 ns into the FIFO's LUT RAM).
        resp = stream.Signature(core.o_resp.payload.shape()).create()
        held = Signal()
        m.d.comb += [core.o_resp.ready.eq(~held), resp.valid.eq(held)]
        with m.If(core.o_resp.valid & ~held):
            m.d.sync += [held.eq(1), resp.payload.eq(core.o_resp.payload)]
        with m.If(resp.valid & resp.ready):
            m.d.sync += held.eq(0)
        for name, src, dst, w_domain, r_domain in (
                ("cmd_cdc", adapter.cmd, core.i_cmd, "link", "sync"),
                ("resp_cdc", resp, adapter.resp, "sync", "link")):
            width = len(Value.cast(src.payload))
            m.submodules[name] = fifo = AsyncFIFO(width=width, depth=CDC_DEPTH,
                                                  w_domain=w_domain, r_domain=r_domain)
            m.d.comb += [fifo.w_data.eq(src.payload), fifo.w_en.eq(src.valid),
                         src.ready.eq(fifo.w_rdy),
                         dst.payload.eq(fifo.r_data), dst.valid.eq(fifo.r_rdy),
                         fifo.r_en.eq(dst.ready)]
        # The weight, meta and activation writes: stored beside the adapter once the core has
        # answered them ``ok`` (the adapter still holds the command), before the adapter takes
        # its next request, so no path from the command to a bank is timed at the core's clock.
        m.submodules.host_writes = writes = in_link(HostWrites(self._core))
        answer = adapter.resp
        m.d.comb += [writes.cmd.eq(adapter.cmd.payload),
                     writes.commit.eq(answer.valid & answer.ready
                                      & (answer.payload.status == gcore.STATUS["ok"]))]
        for name in HOST_WRITTEN:
            for ours, theirs in zip(getattr(writes, f"{name}_write"),
                                    getattr(core, f"{name}_write"), strict=True):
                wiring.connect(m, ours, theirs)
        return m


def ecp5_pll_instance(pll: PLLConfig, clkin, clkout, locked) -> Instance:
    """``EHXPLLL`` as ecppll writes it; the FREQUENCY_PIN attributes let nextpnr derive the
    output clock's constraint."""
    p = pll.params
    return Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{pll.fin_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{pll.fout_mhz:.6g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
        a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
        p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=p["clki_div"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["clkop_div"],
        p_CLKOP_CPHASE=p["clkop_cphase"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
        p_CLKFB_DIV=p["clkfb_div"],
        i_RST=0, i_STDBY=0, i_CLKI=clkin, o_CLKOP=clkout, i_CLKFB=clkout,
        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
        i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)


def ice40_pll_instance(pll: PLLConfig, pad, clkout, locked) -> Instance:
    """``SB_PLL40_PAD`` in SIMPLE feedback, its reference straight from the clock pad."""
    p = pll.params
    return Instance(
        "SB_PLL40_PAD",
        p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["divr"], p_DIVF=p["divf"], p_DIVQ=p["divq"],
        p_FILTER_RANGE=p["filter_range"],
        io_PACKAGEPIN=pad, i_RESETB=1, i_BYPASS=0, o_PLLOUTGLOBAL=clkout, o_LOCK=locked)


class BoardTop(Elaboratable):
    """Everything on a board: clock input -> PLL -> ``sync``, reset held until the PLL locks
    and released synchronously, UART pins -> :class:`AcceleratorTop`.

    Parameters
    ----------
    board : Board
        The target (not a bare one: those use :class:`AcceleratorTop` directly).
    pll : PLLConfig or None
        The board clock's PLL (``None``: the core runs at the board's input clock).
    core : golden.core.CoreConfig
    link : golden.protocol.LinkConfig
        Its :attr:`~golden.protocol.LinkConfig.core_clock` is the achieved core clock (the
        PLL's output), which the timing constraint uses. A split link
        (``core_clk_freq`` set) runs in a ``link`` domain on the board's input clock, which
        must then be its ``clk_freq``.
    """

    def __init__(self, board: Board, pll: PLLConfig | None, core: gcore.CoreConfig,
                 link: LinkConfig):
        if board.bare:
            raise ValueError(f"board {board.name!r} is a bare device; build AcceleratorTop")
        if link.split and (pll is None or board.family != "ecp5"
                           or abs(link.clk_freq - board.input_mhz * 1e6) > 1.0):
            raise ValueError(f"a split link runs on the ECP5 board's input clock "
                             f"({board.input_mhz} MHz) beside a PLL, not at "
                             f"{link.clk_freq / 1e6:g} MHz on {board.name!r}")
        self.board = board
        self.pll = pll
        self.clock_mhz = link.core_clock / 1e6
        self.accel = AcceleratorTop(core, link)

    def elaborate(self, platform):
        m = Module()
        board = self.board
        m.domains.sync = cd_sync = ClockDomain("sync")
        clk = Signal()  # the core clock net, named for the timing constraint
        locked = Signal()
        if self.pll is not None and board.family == "ice40":
            # The iCE40 PLL takes its reference straight from the pad (no input buffer).
            pad = platform.request(board.clock_resource, 0, dir="-")
            m.submodules.pll = ice40_pll_instance(self.pll, pad.io, clk, locked)
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer(
                "i", platform.request(board.clock_resource, 0, dir="-"))
            if self.pll is None:
                m.d.comb += [clk.eq(clk_buf.i), locked.eq(1)]
            else:
                m.submodules.pll = ecp5_pll_instance(self.pll, clk_buf.i, clk, locked)
        m.d.comb += cd_sync.clk.eq(clk)
        if self.pll is not None:
            platform.add_clock_constraint(clk, self.clock_mhz * 1e6)
        if board.fpga.reset_buffer:
            # The synchronised reset reaches every register of the core: through a global
            # buffer on the parts that need one (fpga.devices.Device.reset_buffer). The
            # synchroniser runs in a local domain on the same clock.
            m.domains.reset_src = cd_reset_src = ClockDomain("reset_src", local=True)
            m.d.comb += cd_reset_src.clk.eq(clk)
            m.submodules.reset_sync = ResetSynchronizer(~locked, domain="reset_src")
            m.submodules.reset_buf = Instance("DCCA", i_CLKI=cd_reset_src.rst, i_CE=1,
                                              o_CLKO=cd_sync.rst)
        else:
            m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        if self.accel.link.split:  # the bridge on the oscillator (its pin is constrained)
            m.domains.link = cd_link = ClockDomain("link")
            m.d.comb += cd_link.clk.eq(clk_buf.i)
            m.submodules.link_reset_sync = ResetSynchronizer(~locked, domain="link")

        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.accel = accel = self.accel
        m.d.comb += [accel.rx.eq(rx_buf.i), tx_buf.o.eq(accel.tx)]
        return m

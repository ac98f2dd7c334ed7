"""Framed-protocol bridge: UART bytes in and out, 32-bit bus transactions to a backend.

The protocol is specified by :mod:`golden.protocol` (its :class:`~golden.protocol.BridgeModel` is
the byte-exact golden of :class:`Bridge`) and documented in ``docs/protocol.md``.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bitmod.golden.checks import check_int
from bitmod.golden.protocol import (
    CRC_INIT,
    CRC_POLY,
    STATUS_BYTES,
    SYNC,
    VERSION,
    Cmd,
    ErrorCode,
    LinkConfig,
    Reply,
    check_bridge_params,
)

from ..common import is_ice40, one_hot_fsm, read_only
from .uart import RX_BYTE, TX_BYTE, UartRx, UartTx

__all__ = ["BUS_REQUEST", "BUS_RESPONSE", "Bridge", "RegisterFile", "UartBridge",
           "UartBridgeTestTop", "bus_signature", "crc16_update"]

BUS_REQUEST = data.StructLayout({"write": 1, "addr": 32, "data": 32})
BUS_RESPONSE = data.StructLayout({"data": 32, "error": 1})


def bus_signature() -> wiring.Signature:
    """The backend bus, seen from the bridge (the initiator).

    ``req`` carries ``{write, addr, data}`` requests out; ``resp`` brings one ``{data, error}``
    response back per request (writes too), in order.
    """
    return wiring.Signature({
        "req": Out(stream.Signature(BUS_REQUEST)),
        "resp": In(stream.Signature(BUS_RESPONSE)),
    })


def crc16_update(crc, byte):
    """CRC-16/CCITT-FALSE after one more byte, as a combinational XOR network.

    The 8 shift-and-conditionally-xor steps are run symbolically: each output bit is the XOR of
    a fixed set of ``crc`` and ``byte`` bits, which is what the hardware computes.
    """
    # Each bit is a set of input bit indices: 0..15 the crc, 16..23 the byte.
    bits = [{i} for i in range(16)]
    for i in range(8):
        bits[8 + i] = bits[8 + i] ^ {16 + i}
    for _ in range(8):
        top = bits[15]
        shifted = [set(), *bits[:15]]
        bits = [b ^ top if (CRC_POLY >> k) & 1 else b for k, b in enumerate(shifted)]
    inputs = Cat(crc, byte)
    out = []
    for sources in bits:
        value = Const(0, 1)
        for index in sorted(sources):
            value = value ^ inputs[index]
        out.append(value)
    return Cat(*out)


@read_only("max_payload", "timeout_cycles", "rx_fifo_depth")
class Bridge(wiring.Component):
    """Framed-protocol engine: parses request frames from bytes, runs them on a bus, replies.

    Behaviour (byte-exact with :class:`golden.protocol.BridgeModel`): hunt the sync ``A5 5A``;
    take cmd, seq and the 16-bit length; a length above ``max_payload`` is answered with a
    BAD_LENGTH error at once; otherwise buffer the payload in a ``max_payload``-byte RAM and
    check the CRC-16/CCITT-FALSE, so a corrupted frame (BAD_CRC) executes nothing. A good frame
    is decoded (UNKNOWN_CMD, BAD_LENGTH) and executed as bus transactions, one outstanding at a
    time, stopping at the first response with ``error`` set (BACKEND, with the word index).
    WRITE gets an ACK, READ/EXEC/STATUS a DATA reply. Inside a frame, ``timeout_cycles`` cycles
    without a byte or a byte with a framing error abort it with a TIMEOUT or FRAMING reply and
    the hunt restarts; every error path returns to the hunt, so no input can hang the bridge.

    Received bytes go through a ``rx_fifo_depth`` FIFO that is never backpressured: while a
    frame executes or a reply is sent, arriving bytes queue there; if it is full they are
    dropped and counted (STATUS ``dropped_bytes``).

    Widths: the payload RAM is ``max_payload // 4`` words of 32 bits with byte-lane writes; the
    timeout counter has ``ceil(log2(timeout_cycles))`` bits; length, byte and word indices 16.

    Latency and throughput: no fixed latency (it depends on the frame). Parsing takes one byte
    per cycle; each bus transaction waits for its response before the next request (bus
    throughput is irrelevant next to the UART's ``10 * divisor`` cycles per byte); a reply
    byte is offered every cycle the transmitter takes one (plus two fetch cycles per payload
    byte).

    The backend must answer every request: a backend that never responds stalls the bridge
    in that transaction (the stream contract; no bus timeout is imposed).

    Parameters
    ----------
    max_payload : int
        Largest payload accepted or sent, in bytes: a multiple of 4 in 8..65532. WRITE carries
        up to ``max_payload // 4 - 1`` words, READ returns up to ``max_payload // 4``.
    timeout_cycles : int
        Receive timeout inside a frame, in cycles, 2..2**32. Must exceed a byte time.
    rx_fifo_depth : int
        Receive FIFO depth in bytes, 2..4096.
    registered_decode : bool
        DECODE acts on length checks registered the cycle before (``length`` and ``arg`` are
        stable from at least the two CRC bytes before DECODE), and the FSM is one-hot
        (:func:`hdl.common.one_hot_fsm`): the reply enables start at flip-flops. The same
        frames and replies; default False. :class:`UartBridge` sets it on the iCE40.

    Members
    -------
    i_stream : In(stream.Signature(RX_BYTE))
        Received bytes ``{data, ferr}``; always ready.
    o_stream : Out(stream.Signature(TX_BYTE))
        Reply bytes ``{data}``.
    bus : Out(bus_signature())
        ``bus.req`` ``{write, addr, data}`` out, ``bus.resp`` ``{data, error}`` in.
    """

    def __init__(self, max_payload: int = 256, timeout_cycles: int = 100_000,
                 rx_fifo_depth: int = 16, registered_decode: bool = False):
        self._max_payload, self._timeout_cycles, self._rx_fifo_depth = check_bridge_params(
            max_payload, timeout_cycles, rx_fifo_depth)
        if not isinstance(registered_decode, bool):
            raise TypeError(f"registered_decode must be a bool, not {registered_decode!r}")
        self._registered_decode = registered_decode
        super().__init__({
            "i_stream": In(stream.Signature(RX_BYTE)),
            "o_stream": Out(stream.Signature(TX_BYTE)),
            "bus": Out(bus_signature()),
        })

    @property
    def buffer_words(self) -> int:
        return self._max_payload // 4

    def elaborate(self, platform):
        m = Module()
        words = self.buffer_words

        # --- receive FIFO: always ready, drops and counts on overflow -------------------------
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=9, depth=self._rx_fifo_depth)
        dropped = Signal(16)
        m.d.comb += [
            self.i_stream.ready.eq(1),
            fifo.w_data.eq(Cat(self.i_stream.payload.data, self.i_stream.payload.ferr)),
            fifo.w_en.eq(self.i_stream.valid),
        ]
        with m.If(self.i_stream.valid & ~fifo.w_rdy):
            m.d.sync += dropped.eq(dropped + 1)
        # A register stage after the FIFO: the parser's decisions start at flip-flops, not at
        # the FIFO RAM's output.
        take = Signal()  # the parser consumes the byte in the register stage (if valid)
        rx_valid = Signal()
        rx_word = Signal(9)
        load = ~rx_valid | take
        m.d.comb += fifo.r_en.eq(load)
        with m.If(load):
            m.d.sync += [rx_valid.eq(fifo.r_rdy), rx_word.eq(fifo.r_data)]
        rx_byte = rx_word[:8]
        rx_ferr = rx_word[8]

        # --- payload RAM ---------------------------------------------------------------------
        m.submodules.mem = mem = Memory(shape=unsigned(32), depth=words, init=[])
        wr = mem.write_port(granularity=8)
        rd = mem.read_port()

        # --- frame registers -----------------------------------------------------------------
        cmd = Signal(8)
        seq = Signal(8)
        length = Signal(16)
        index = Signal(16)  # payload byte index while receiving
        addr = Signal(32)
        arg = Signal(32)
        crc = Signal(16, init=CRC_INIT)
        crc_low = Signal(8)
        timer = Signal(range(self._timeout_cycles))
        # Down counters end the loops: comparing with a constant keeps subtractors and
        # variable comparators off the critical path.
        left = Signal(16)  # payload bytes still to receive
        word = Signal(16)  # word index while executing (the RAM address, the BACKEND index)
        n_words = Signal(16)
        words_left = Signal(16)
        bus_addr = Signal(32)  # a register, so the backend's address decode starts at a FF
        ok_frames = Signal(16)
        error_frames = Signal(16)

        # --- reply registers -----------------------------------------------------------------
        r_cmd = Signal(8)
        r_len = Signal(16)
        r_mem = Signal()  # payload from the RAM (READ) rather than ``small``
        small = Signal(8 * STATUS_BYTES)
        t_index = Signal(16)
        t_left = Signal(16)
        t_crc = Signal(16, init=CRC_INIT)
        # Cycles before the next payload byte is in ``t_byte``: the RAM read, then the
        # register that keeps the RAM's output off the CRC and UART paths.
        t_fetch = Signal(range(3))
        t_byte = Signal(8)
        sending = Signal()

        def reply(kind, n_bytes, from_mem=0):
            m.d.sync += [r_cmd.eq(kind), r_len.eq(n_bytes), t_left.eq(n_bytes),
                         r_mem.eq(from_mem), t_index.eq(0), t_crc.eq(CRC_INIT)]
            m.next = "T_HDR"

        def reply_error(code, at=0):
            index16 = Const(at, 16) if isinstance(at, int) else at
            m.d.sync += [small[:32].eq(Cat(Const(code, 8), cmd, index16)),
                         error_frames.eq(error_frames + 1)]
            reply(Reply.ERROR, 4)

        def reply_ok(kind, n_bytes, from_mem=0):
            m.d.sync += ok_frames.eq(ok_frames + 1)
            reply(kind, n_bytes, from_mem)

        # Registered, so the wide comparison does not feed the error-reply enables directly;
        # it rises when ``timer`` reaches ``timeout_cycles - 1`` cycles without a byte.
        timed_out = Signal()
        frame_states = ("CMD", "SEQ", "LEN0", "LEN1", "PAYLOAD", "CRC0", "CRC1")

        def tick_timer():
            with m.If(rx_valid):
                m.d.sync += [timer.eq(0), timed_out.eq(0)]
            with m.Elif(~timed_out):
                m.d.sync += [timer.eq(timer + 1),
                             timed_out.eq(timer == self._timeout_cycles - 2)]

        def next_crc():
            m.d.sync += crc.eq(crc16_update(crc, rx_byte))

        # With the registered decode (the iCE40's) the 16-bit compares of the length and the
        # CRC take their low byte's half a byte earlier, from flip-flops loaded with it, and
        # the high byte's compares are flip-flops loaded beside ``rx_word`` with the byte
        # (``rx_is``), so no compare of the received byte feeds the reply registers' enables
        # (the iCEBreaker default's critical path: the received byte → the 16-bit compares →
        # the reply enables, 41.9 ns; with only the low halves split, the high byte's 8-bit
        # compare → the enables, 39.9 ns). ``crc`` is final from the cycle after the last
        # payload (or length) byte is taken, before the CRC's high byte is loaded.
        split = self._registered_decode
        top_byte, low_byte = self._max_payload >> 8, self._max_payload & 0xFF
        if split:
            low_above = Signal()  # LEN0's byte > the limit's low byte
            low_zero = Signal()  # LEN0's byte == 0
            crc_low_ok = Signal()  # CRC0's byte == the CRC's low byte
            rx_is = Signal(data.StructLayout({"above_top": 1, "at_top": 1, "above_low": 1,
                                              "zero": 1, "crc_high": 1}))  # of rx_word's byte
            incoming = fifo.r_data[:8]
            with m.If(load):
                m.d.sync += rx_is.eq(Cat(incoming > top_byte, incoming == top_byte,
                                         incoming > low_byte, incoming == 0,
                                         incoming == crc[8:]))

        def receive(state):
            if state == "CMD":
                m.d.sync += cmd.eq(rx_byte)
            elif state == "SEQ":
                m.d.sync += seq.eq(rx_byte)
            elif state == "LEN0":
                m.d.sync += length[:8].eq(rx_byte)
                if split:
                    m.d.sync += [low_above.eq(rx_is.above_low), low_zero.eq(rx_is.zero)]
            if state in ("CMD", "SEQ", "LEN0", "LEN1", "PAYLOAD"):
                next_crc()
            if state == "LEN1":
                full = Cat(length[:8], rx_byte)
                m.d.sync += [length[8:].eq(rx_byte), left.eq(full)]
                if split:
                    too_long = rx_is.above_top | (rx_is.at_top & low_above)
                    empty = rx_is.zero & low_zero
                else:
                    too_long, empty = full > self._max_payload, full == 0
                with m.If(too_long):
                    reply_error(ErrorCode.BAD_LENGTH)
                with m.Elif(empty):
                    m.next = "CRC0"
                with m.Else():
                    m.next = "PAYLOAD"
            elif state == "PAYLOAD":
                # Bytes 0-3 are the address, 4-7 the READ count / EXEC argument; bytes 4 and
                # up also go to the RAM (the WRITE data words), lane by lane.
                with m.If(index < 4):
                    m.d.sync += addr.word_select(index[:2], 8).eq(rx_byte)
                with m.Elif(index < 8):
                    m.d.sync += arg.word_select(index[:2], 8).eq(rx_byte)
                offset = (index - 4)[:16]
                with m.If(index >= 4):
                    m.d.comb += [wr.addr.eq(offset[2:]), wr.data.eq(rx_byte.replicate(4)),
                                 wr.en.eq(1 << offset[:2])]
                m.d.sync += [index.eq(index + 1), left.eq(left - 1)]
                with m.If(left == 1):
                    m.next = "CRC0"
            elif state == "CRC0":
                m.d.sync += crc_low.eq(rx_byte)
                if split:  # (the CRC is final here: the CRC bytes do not update it)
                    m.d.sync += crc_low_ok.eq(rx_byte == crc[:8])
            elif state == "CRC1":
                bad = (~crc_low_ok | ~rx_is.crc_high if split
                       else Cat(crc_low, rx_byte) != crc)
                with m.If(bad):
                    reply_error(ErrorCode.BAD_CRC)
                with m.Else():
                    m.next = "DECODE"
            following = {"CMD": "SEQ", "SEQ": "LEN0", "LEN0": "LEN1", "CRC0": "CRC1"}
            if state in following:
                m.next = following[state]

        checks = [length == 0, (length >= 8) & (length[:2] == 0),
                  (length == 6) & (arg[:16] != 0) & (arg[:16] <= words), length == 8]
        if self._registered_decode:
            # DECODE's length checks, registered every cycle: ``length`` and ``arg`` are
            # stable from their last byte on, at least the two CRC bytes before DECODE, so
            # DECODE's reply and next-state enables start at these flip-flops (the iCE40's
            # critical path was the compares feeding them).
            length_ok = Signal(data.StructLayout({"status": 1, "write": 1, "read": 1,
                                                  "exec": 1}))
            m.d.sync += length_ok.eq(Cat(*checks))
            ok_status, ok_write, ok_read, ok_exec = (length_ok.status, length_ok.write,
                                                     length_ok.read, length_ok.exec)
        else:
            ok_status, ok_write, ok_read, ok_exec = checks

        with m.FSM(name="bridge") as fsm:
            with m.State("HUNT"):
                m.d.comb += take.eq(1)
                with m.If(rx_valid & ~rx_ferr & (rx_byte == SYNC[0])):
                    m.d.sync += [timer.eq(0), timed_out.eq(0)]
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                m.d.comb += take.eq(1)
                tick_timer()
                with m.If(rx_valid):
                    with m.If(rx_ferr):
                        m.next = "HUNT"
                    with m.Elif(rx_byte == SYNC[1]):
                        m.d.sync += [cmd.eq(0), seq.eq(0), index.eq(0), crc.eq(CRC_INIT)]
                        m.next = "CMD"
                    with m.Elif(rx_byte != SYNC[0]):
                        m.next = "HUNT"
                with m.Elif(timed_out):
                    m.next = "HUNT"  # a lone first sync byte is not a frame: no reply
            for state in frame_states:
                with m.State(state):
                    m.d.comb += take.eq(1)
                    tick_timer()
                    with m.If(rx_valid & rx_ferr):
                        reply_error(ErrorCode.FRAMING)
                    with m.Elif(~rx_valid & timed_out):
                        reply_error(ErrorCode.TIMEOUT)
                    with m.Elif(rx_valid):
                        receive(state)

            with m.State("DECODE"), m.Switch(cmd):
                with m.Case(Cmd.STATUS):
                    with m.If(ok_status):
                        m.d.sync += small.eq(Cat(Const(VERSION, 8), Const(0, 8),
                                                 Const(self._max_payload, 16), ok_frames,
                                                 error_frames, dropped))
                        reply_ok(Reply.DATA, STATUS_BYTES)
                    with m.Else():
                        reply_error(ErrorCode.BAD_LENGTH)
                with m.Case(Cmd.WRITE):
                    with m.If(ok_write):
                        m.d.sync += [word.eq(0), words_left.eq((length - 4)[2:]),
                                     bus_addr.eq(addr)]
                        m.next = "W_FETCH"
                    with m.Else():
                        reply_error(ErrorCode.BAD_LENGTH)
                with m.Case(Cmd.READ):
                    count = arg[:16]
                    with m.If(ok_read):
                        m.d.sync += [word.eq(0), words_left.eq(count), n_words.eq(count),
                                     bus_addr.eq(addr)]
                        m.next = "R_REQ"
                    with m.Else():
                        reply_error(ErrorCode.BAD_LENGTH)
                with m.Case(Cmd.EXEC):
                    with m.If(ok_exec):
                        m.next = "X_REQ"
                    with m.Else():
                        reply_error(ErrorCode.BAD_LENGTH)
                with m.Default():
                    reply_error(ErrorCode.UNKNOWN_CMD)

            with m.State("W_FETCH"):
                m.next = "W_REQ"  # the RAM returns word ``word`` one cycle after its address
            with m.State("W_REQ"):
                m.d.comb += [self.bus.req.valid.eq(1),
                             self.bus.req.payload.write.eq(1),
                             self.bus.req.payload.addr.eq(bus_addr),
                             self.bus.req.payload.data.eq(rd.data)]
                with m.If(self.bus.req.ready):
                    m.next = "W_RESP"
            with m.State("W_RESP"):
                m.d.comb += self.bus.resp.ready.eq(1)
                with m.If(self.bus.resp.valid):
                    with m.If(self.bus.resp.payload.error):
                        reply_error(ErrorCode.BACKEND, word)
                    with m.Elif(words_left == 1):
                        reply_ok(Reply.ACK, 0)
                    with m.Else():
                        m.d.sync += [word.eq(word + 1), words_left.eq(words_left - 1),
                                     bus_addr.eq(bus_addr + 1)]
                        m.next = "W_FETCH"

            with m.State("R_REQ"):
                m.d.comb += [self.bus.req.valid.eq(1),
                             self.bus.req.payload.addr.eq(bus_addr)]
                with m.If(self.bus.req.ready):
                    m.next = "R_RESP"
            with m.State("R_RESP"):
                m.d.comb += self.bus.resp.ready.eq(1)
                with m.If(self.bus.resp.valid):
                    with m.If(self.bus.resp.payload.error):
                        reply_error(ErrorCode.BACKEND, word)
                    with m.Else():
                        m.d.comb += [wr.addr.eq(word), wr.data.eq(self.bus.resp.payload.data),
                                     wr.en.eq(0b1111)]
                        with m.If(words_left == 1):
                            reply_ok(Reply.DATA, Cat(Const(0, 2), n_words), from_mem=1)
                        with m.Else():
                            m.d.sync += [word.eq(word + 1), words_left.eq(words_left - 1),
                                         bus_addr.eq(bus_addr + 1)]
                            m.next = "R_REQ"

            with m.State("X_REQ"):
                m.d.comb += [self.bus.req.valid.eq(1),
                             self.bus.req.payload.write.eq(1),
                             self.bus.req.payload.addr.eq(addr),
                             self.bus.req.payload.data.eq(arg)]
                with m.If(self.bus.req.ready):
                    m.next = "X_RESP"
            with m.State("X_RESP"):
                m.d.comb += self.bus.resp.ready.eq(1)
                with m.If(self.bus.resp.valid):
                    with m.If(self.bus.resp.payload.error):
                        reply_error(ErrorCode.BACKEND, 0)
                    with m.Else():
                        m.d.sync += small[:32].eq(self.bus.resp.payload.data)
                        reply_ok(Reply.DATA, 4)

            # --- reply -----------------------------------------------------------------------
            header = Array([Const(SYNC[0], 8), Const(SYNC[1], 8), r_cmd, seq,
                            r_len[:8], r_len[8:]])
            tx = self.o_stream
            with m.State("T_HDR"):
                m.d.comb += [sending.eq(1), tx.valid.eq(1),
                             tx.payload.data.eq(header[t_index[:3]])]
                with m.If(tx.ready):
                    with m.If(t_index >= 2):
                        m.d.sync += t_crc.eq(crc16_update(t_crc, tx.payload.data))
                    m.d.sync += t_index.eq(t_index + 1)
                    with m.If(t_index == 5):
                        m.d.sync += [t_index.eq(0), t_fetch.eq(2)]
                        with m.If(r_len == 0):
                            m.next = "T_CRC0"
                        with m.Else():
                            m.next = "T_PAY"
            with m.State("T_PAY"):
                m.d.comb += sending.eq(1)
                with m.If(t_fetch != 0):
                    m.d.sync += t_fetch.eq(t_fetch - 1)
                    with m.If(t_fetch == 1):
                        with m.If(r_mem):
                            m.d.sync += t_byte.eq(rd.data.word_select(t_index[:2], 8))
                        with m.Else():
                            m.d.sync += t_byte.eq(Array(small.word_select(i, 8)
                                                        for i in range(STATUS_BYTES))[t_index])
                with m.Else():
                    m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(t_byte)]
                    with m.If(tx.ready):
                        m.d.sync += [t_crc.eq(crc16_update(t_crc, t_byte)),
                                     t_index.eq(t_index + 1), t_left.eq(t_left - 1),
                                     t_fetch.eq(2)]
                        with m.If(t_left == 1):
                            m.next = "T_CRC0"
            with m.State("T_CRC0"):
                m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(t_crc[:8])]
                with m.If(tx.ready):
                    m.next = "T_CRC1"
            with m.State("T_CRC1"):
                m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(t_crc[8:])]
                with m.If(tx.ready):
                    m.next = "HUNT"

        # The RAM is read at the executing word index, or at the word of the reply byte.
        m.d.comb += rd.addr.eq(Mux(sending, t_index[2:], word))
        if self._registered_decode:
            one_hot_fsm(fsm)
        return m


class UartBridge(wiring.Component):
    """:class:`~hdl.link.uart.UartRx` + :class:`Bridge` + :class:`~hdl.link.uart.UartTx`.

    What a board top instantiates: serial pins on one side, the backend bus on the other.

    Parameters
    ----------
    config : golden.protocol.LinkConfig
        Clock, bit rate and the bridge's parameters (validated there: the divisor, and a
        timeout of at least two byte times).

    Members
    -------
    rx : In(1)
        Serial input from the host (asynchronous, idle high).
    tx : Out(1)
        Serial output to the host (idle high).
    bus : Out(bus_signature())
        The backend bus.
    """

    def __init__(self, config: LinkConfig | None = None):
        self._cfg = LinkConfig() if config is None else config
        if not isinstance(self._cfg, LinkConfig):
            raise TypeError(f"config must be a LinkConfig, not {config!r}")
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "bus": Out(bus_signature())})

    config = property(lambda self: self._cfg, doc="The :class:`golden.protocol.LinkConfig`.")

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.uart_rx = uart_rx = UartRx(cfg.clk_freq, cfg.baud)
        m.submodules.uart_tx = uart_tx = UartTx(cfg.clk_freq, cfg.baud)
        # On the iCE40 the registered DECODE and the one-hot FSM (Bridge) meet the clock; the
        # ECP5 boards keep the form their measured builds were routed with.
        m.submodules.bridge = bridge = Bridge(cfg.max_payload, cfg.timeout_cycles,
                                              cfg.rx_fifo_depth,
                                              registered_decode=is_ice40(platform))
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]
        wiring.connect(m, uart_rx.o_stream, bridge.i_stream)
        wiring.connect(m, bridge.o_stream, uart_tx.i_stream)
        wiring.connect(m, wiring.flipped(self.bus), bridge.bus)
        return m


class RegisterFile(wiring.Component):
    """A ``depth``-word RAM behind the bridge's bus: the link's test and bring-up backend.

    Golden: :class:`golden.protocol.RegisterFileModel`. A read returns the word; a write stores
    it and returns the word it replaced (so EXEC, a write whose response data reaches the host,
    is a swap); an address at or beyond ``depth`` returns ``data = 0, error = 1`` and changes
    nothing. Contents are zero after configuration (not cleared by reset).

    Latency and throughput: latency 1 cycle (request accepted -> response valid), one request
    per cycle while responses are taken (``req.ready = ~resp.valid | resp.ready``).

    Parameters
    ----------
    depth : int
        Words, 1..65536.

    Members
    -------
    bus : In(bus_signature())
        Requests in, responses out.
    """

    def __init__(self, depth: int = 64):
        self._depth = check_int("depth", depth, 1, 1 << 16)
        super().__init__({"bus": In(bus_signature())})

    depth = property(lambda self: self._depth)

    @property
    def latency(self) -> int:
        return 1

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(32), depth=self._depth, init=[])
        rd = mem.read_port()
        wr = mem.write_port()
        req, resp = self.bus.req, self.bus.resp
        accept = req.valid & req.ready
        in_range = req.payload.addr < self._depth
        hit = Signal()  # the pending response's address was in range
        m.d.comb += [
            req.ready.eq(~resp.valid | resp.ready),
            rd.addr.eq(req.payload.addr),
            rd.en.eq(accept),
            wr.addr.eq(req.payload.addr),
            wr.data.eq(req.payload.data),
            wr.en.eq(accept & in_range & req.payload.write),
            # The read port is not transparent: a write's response is the word it replaced.
            resp.payload.data.eq(Mux(hit, rd.data, 0)),
            resp.payload.error.eq(~hit),
        ]
        with m.If(accept):
            m.d.sync += [resp.valid.eq(1), hit.eq(in_range)]
        with m.Elif(resp.ready):
            m.d.sync += resp.valid.eq(0)
        return m


class UartBridgeTestTop(wiring.Component):
    """:class:`UartBridge` driving a :class:`RegisterFile`: a self-contained link target.

    Used by the end-to-end simulation and usable as a link bring-up image on a board.

    Parameters
    ----------
    config : golden.protocol.LinkConfig
        As for :class:`UartBridge`.
    depth : int
        Words of the :class:`RegisterFile`.

    Members
    -------
    rx : In(1)
    tx : Out(1)
    """

    def __init__(self, config: LinkConfig | None = None, depth: int = 64):
        self._cfg = LinkConfig() if config is None else config
        if not isinstance(self._cfg, LinkConfig):
            raise TypeError(f"config must be a LinkConfig, not {config!r}")
        self._depth = check_int("depth", depth, 1, 1 << 16)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    config = property(lambda self: self._cfg, doc="The :class:`golden.protocol.LinkConfig`.")

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = UartBridge(self._cfg)
        m.submodules.regs = regs = RegisterFile(self._depth)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
        wiring.connect(m, link.bus, regs.bus)
        return m

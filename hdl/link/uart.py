"""UART transmitter and receiver, 8N1, with the bit period derived from clock and baud rate."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from bitmod.golden.protocol import baud_divisor

__all__ = ["RX_BYTE", "TX_BYTE", "UartRx", "UartTx"]

TX_BYTE = data.StructLayout({"data": 8})
RX_BYTE = data.StructLayout({"data": 8, "ferr": 1})

SYNC_STAGES = 2


class UartTx(wiring.Component):
    """UART transmitter, 8N1: start bit (0), 8 data bits LSB first, stop bit (1).

    Each bit lasts ``divisor = round(clk_freq / baud)`` cycles. ``tx`` is a register (glitch-free
    at the pin) and idles high.

    Latency and throughput: latency 1 cycle (a byte accepted at a clock edge puts its start bit
    on ``tx`` from the next cycle). ``i_stream.ready`` is high when idle and in the last cycle of
    the stop bit, so back-to-back bytes take exactly ``10 * divisor`` cycles each.

    Parameters
    ----------
    clk_freq : int or float
        Clock frequency in Hz.
    baud : int or float
        Bit rate; ``clk_freq / baud`` must round to at least 4 and land within 2 % of ``baud``.

    Members
    -------
    i_stream : In(stream.Signature(TX_BYTE))
        Bytes to send (``data``).
    tx : Out(1)
        Serial output, idle high.
    """

    def __init__(self, clk_freq, baud):
        self._divisor = baud_divisor(clk_freq, baud)
        super().__init__({
            "i_stream": In(stream.Signature(TX_BYTE)),
            "tx": Out(1, init=1),
        })

    divisor = property(lambda self: self._divisor)

    @property
    def latency(self) -> int:
        return 1

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        busy = Signal()
        shift = Signal(9)  # data bits then the stop bit; the start bit goes out on accept
        bits_left = Signal(range(10))
        timer = Signal(range(div))
        last_cycle_of_frame = busy & (bits_left == 0) & (timer == 0)

        m.d.comb += self.i_stream.ready.eq(~busy | last_cycle_of_frame)
        with m.If(busy):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Elif(bits_left != 0):
                m.d.sync += [self.tx.eq(shift[0]), shift.eq(shift >> 1),
                             bits_left.eq(bits_left - 1), timer.eq(div - 1)]
            with m.Else():
                m.d.sync += busy.eq(0)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [busy.eq(1), self.tx.eq(0), timer.eq(div - 1), bits_left.eq(9),
                         shift.eq(self.i_stream.payload.data | (1 << 8))]
        return m


class UartRx(wiring.Component):
    """UART receiver, 8N1, with a 2-FF synchroniser, mid-bit sampling and framing-error detect.

    ``rx`` passes through a 2-flip-flop synchroniser (it comes from a pin, asynchronous to the
    clock). A falling edge in idle starts a byte; the start bit is re-sampled at its middle,
    ``divisor // 2`` cycles later, and a high level there is a glitch (ignored). Data bits are
    sampled every ``divisor`` cycles from there, LSB first, then the stop bit: if it is low,
    the byte is delivered with ``ferr = 1`` and the receiver waits for ``rx`` to go high before
    hunting the next start bit, so a held-low line (break) yields one byte, not a stream of them.

    No backpressure: the receiver cannot stop the line. A byte not taken before the next one
    completes is replaced by it (the bridge always takes bytes, so this never happens there).

    Latency and throughput: ``latency = 3 + divisor // 2 + 9 * divisor`` cycles from the first
    cycle ``rx`` is low (the start edge) to ``o_stream.valid``: 2 synchroniser stages, 1 cycle
    to see the edge, half a bit to the middle of the start bit, 9 bits to the middle of the stop
    bit. One byte per ``10 * divisor`` cycles (the stop bit's second half is the hunt margin).

    Parameters
    ----------
    clk_freq : int or float
        Clock frequency in Hz.
    baud : int or float
        Bit rate; ``clk_freq / baud`` must round to at least 4 and land within 2 % of ``baud``.

    Members
    -------
    rx : In(1)
        Serial input, idle high (asynchronous).
    o_stream : Out(stream.Signature(RX_BYTE))
        Received bytes: ``data`` and ``ferr`` (stop bit was low).
    """

    def __init__(self, clk_freq, baud):
        self._divisor = baud_divisor(clk_freq, baud)
        super().__init__({
            "rx": In(1, init=1),
            "o_stream": Out(stream.Signature(RX_BYTE)),
        })

    divisor = property(lambda self: self._divisor)

    @property
    def latency(self) -> int:
        return SYNC_STAGES + 1 + self._divisor // 2 + 9 * self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1, stages=SYNC_STAGES)

        timer = Signal(range(div))
        bits_left = Signal(range(9))
        shift = Signal(8)

        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"), m.If(~rx):
                m.d.sync += timer.eq(div // 2 - 1)
                m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"  # glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bits_left.eq(8)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq((shift >> 1) | (rx << 7)), timer.eq(div - 1),
                                 bits_left.eq(bits_left - 1)]
                    with m.If(bits_left == 1):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [self.o_stream.valid.eq(1),
                                 self.o_stream.payload.data.eq(shift),
                                 self.o_stream.payload.ferr.eq(~rx)]
                    with m.If(rx):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "BREAK"
            with m.State("BREAK"), m.If(rx):
                m.next = "IDLE"
        return m

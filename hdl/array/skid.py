"""A skid buffer: a stream stage whose ``ready`` toward the sender is a register."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..common import read_only

__all__ = ["SkidBuffer"]


@read_only("layout")
class SkidBuffer(wiring.Component):
    """Passes a stream through with no added latency, its ``i_stream.ready`` a register.

    While the skid register is empty, ``o_stream`` is ``i_stream`` (combinationally: the same
    cycle, the same payload) and ``i_stream.ready`` is high. A payload accepted in a cycle the
    receiver does not take it goes into the skid register, which then feeds ``o_stream`` and
    drops ``i_stream.ready`` from the next cycle until the receiver takes it::

        i_stream.ready = ~full                                   (a flip-flop)
        o_stream.valid = full | i_stream.valid
        o_stream.payload = full ? skid : i_stream.payload
        full' = o_stream.valid & ~o_stream.ready                 (the skid holds what waits)

    So the receiver's ``ready`` (often a long combinational function of its state) reaches
    only the skid register's enable, never the sender: a sender whose own stages advance on
    ``i_stream.ready`` sees a register there. Nothing is lost or reordered; a receiver that is
    ready every cycle sees every payload in the cycle it was offered, and one that takes a
    payload after refusing some sees no bubble: the skid drains in the cycle the sender's next
    payload is offered again.

    Latency: 0 cycles. Throughput: one payload per cycle.

    Parameters
    ----------
    layout : data.Layout or Shape
        The payload.

    Members
    -------
    i_stream : In(stream.Signature(layout))
    o_stream : Out(stream.Signature(layout))
    """

    def __init__(self, layout):
        self._layout = layout
        super().__init__({"i_stream": In(stream.Signature(layout)),
                          "o_stream": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        payload = Value.cast(i.payload)
        full = Signal()
        skid = Signal(len(payload), reset_less=True)  # ``full`` says whether it holds one
        m.d.comb += [
            i.ready.eq(~full),
            o.valid.eq(full | i.valid),
            o.payload.eq(Mux(full, skid, payload)),
        ]
        with m.If(~full & i.valid & ~o.ready):
            m.d.sync += [full.eq(1), skid.eq(payload)]
        with m.Elif(full & o.ready):
            m.d.sync += full.eq(0)
        return m

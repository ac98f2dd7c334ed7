"""Tiny designs that exercise every tool end to end (used by ``bitmod doctor`` and tests)."""

from __future__ import annotations

from amaranth import Assert, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PipelinedAdder", "SaturatingCounter", "SelfTestAdder"]


class SelfTestAdder(wiring.Component):
    """Registered adder with a free-running counter: ``s <= a + b``, ``count <= count + 1``.

    Latency 1 cycle, one result per cycle. The counter gives a register-to-register path so
    place-and-route reports an Fmax.

    Members
    -------
    a, b : In(width)
        Operands.
    s : Out(width + 1)
        Registered sum.
    count : Out(width)
        Cycles since reset, modulo ``2**width``.
    """

    def __init__(self, width: int = 8):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, not {width!r}")
        self._width = width
        super().__init__({"a": In(width), "b": In(width), "s": Out(width + 1),
                          "count": Out(width)})

    width = property(lambda self: self._width)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [self.s.eq(self.a + self.b), self.count.eq(self.count + 1)]
        return m


class SaturatingCounter(wiring.Component):
    """Counter that stops at ``limit``; asserts (formally) that it never exceeds it.

    ``broken=True`` builds a variant that wraps past the limit, so a proof harness can show it
    catches a real bug.

    Members
    -------
    enable : In(1)
        Count this cycle.
    value : Out(width)
        Current count.
    """

    def __init__(self, width: int = 4, limit: int = 10, broken: bool = False):
        if not 0 < limit < 2 ** width:
            raise ValueError(f"limit must be in 1..{2 ** width - 1}, not {limit}")
        self._limit = limit
        self._broken = broken
        super().__init__({"enable": In(1), "value": Out(width)})

    def elaborate(self, platform):
        m = Module()
        at_limit = self.value == self._limit
        with m.If(self.enable & (self._broken | ~at_limit)):
            m.d.sync += self.value.eq(self.value + 1)
        m.d.comb += Assert(self.value <= self._limit)
        return m


class PipelinedAdder(wiring.Component):
    """``o = a + b`` for signed operands through ``stages`` register stages, with backpressure.

    Reference stream unit for the verification infrastructure's own tests. Latency ``stages``
    cycles; one result per cycle. ``every_other=True`` makes a deliberately slow variant that
    accepts a payload only every second cycle (the batch harness must catch it).

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"a": signed(width), "b": signed(width)})))
    o_stream : Out(stream.Signature(signed(width + 1)))
    """

    def __init__(self, width: int = 8, stages: int = 2, every_other: bool = False):
        if width < 1:
            raise ValueError(f"width must be at least 1, not {width}")
        if stages < 1:
            raise ValueError(f"stages must be at least 1, not {stages}")
        self._width = width
        self._stages = stages
        self._every_other = every_other
        self.operands = data.StructLayout({"a": signed(width), "b": signed(width)})
        super().__init__({
            "i_stream": In(stream.Signature(self.operands)),
            "o_stream": Out(stream.Signature(signed(width + 1))),
        })

    latency = property(lambda self: self._stages)

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        m.d.comb += advance.eq(self.o_stream.ready | ~self.o_stream.valid)
        accept = Signal()
        if self._every_other:
            toggle = Signal()
            m.d.sync += toggle.eq(~toggle)
            m.d.comb += accept.eq(advance & toggle)
        else:
            m.d.comb += accept.eq(advance)
        m.d.comb += self.i_stream.ready.eq(accept)
        valids = [Signal(name=f"valid{i}") for i in range(self._stages)]
        sums = [Signal(signed(self._width + 1), name=f"sum{i}") for i in range(self._stages)]
        with m.If(advance):
            m.d.sync += [valids[0].eq(self.i_stream.valid & accept),
                         sums[0].eq(self.i_stream.payload.a + self.i_stream.payload.b)]
            for i in range(1, self._stages):
                m.d.sync += [valids[i].eq(valids[i - 1]), sums[i].eq(sums[i - 1])]
        m.d.comb += [self.o_stream.valid.eq(valids[-1]), self.o_stream.payload.eq(sums[-1])]
        return m

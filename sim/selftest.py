"""Tiny designs that exercise every tool end to end (used by ``bitmod doctor`` and tests)."""

from __future__ import annotations

from amaranth import Assert, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SaturatingCounter", "SelfTestAdder"]


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

    @property
    def width(self) -> int:
        return self._width

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

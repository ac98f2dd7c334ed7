"""A two-entry stream queue whose ``ready`` and output are flip-flops: the core controller's
step queue, between its loop counters and its buffer reads."""

from __future__ import annotations

from amaranth import Module, Mux, Shape, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..common import keep_apart, read_only

__all__ = ["StepQueue"]

#: Bits of the head per copy of the count's flags (its load enable and multiplexer select).
_CHUNK_BITS = 32


@read_only("shape", "ready_register")
class StepQueue(wiring.Component):
    """Two entries in order; the head is a register and the input's ``ready`` is a compare of
    the entry count, so neither depends on ``o_stream.ready`` in the same cycle.

    The sender's enables then start at the count register rather than behind the receiver's
    ``ready``, and the head drives its loads (the core's block-RAM read addresses) straight
    from flip-flops, kept apart (:data:`hdl.common.KEEP_APART`): equal bits of the head (a
    value repeated per consumer) stay separate flip-flops. ``o_stream.ready`` only moves the
    entries: the head takes the second entry, or the input in a cycle that both pops and
    pushes one entry. The payload is defined only with ``o_stream.valid`` (a free entry takes
    the input whether or not it is pushed).

    Latency: an entry pushed in cycle ``t`` is offered from cycle ``t + 1``. Throughput: one
    entry per cycle in and out (two entries: a push and a pop in every cycle leave one).
    ``i_stream.ready = count != 2``, ``o_stream.valid = count != 0``.

    Parameters
    ----------
    shape : ShapeLike
        The entries' shape (a ``lib.data`` layout or a plain width).
    ready_register : bool
        ``i_stream.ready`` is a flip-flop of its own, loaded with ``count_next != 2`` (equal to
        ``count != 2`` in every cycle), not a LUT of the count: the sender's enables then
        start at a flip-flop (the core with feed stages: the ULX3S 7 x 6 x 16 build at
        100 MHz, seed 2: the count -> ``ready`` -> four LUTs of the step loop's enables ->
        ``m0``, 12.0 ns). Default False: the count's compare, as before.

    Members
    -------
    i_stream : In(stream.Signature(shape))
    o_stream : Out(stream.Signature(shape))
    """

    def __init__(self, shape, ready_register: bool = False):
        try:
            Shape.cast(shape)
        except TypeError as error:
            raise TypeError(f"shape must be a shape-castable, not {shape!r}") from error
        if not isinstance(ready_register, bool):
            raise TypeError(f"ready_register must be a bool, not {ready_register!r}")
        self._shape = shape
        self._ready_register = ready_register
        super().__init__({"i_stream": In(stream.Signature(shape)),
                          "o_stream": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        # Kept apart: a payload that repeats a value per consumer (read_entry_layout: each
        # bank's read address) keeps a flip-flop per copy, each beside its consumer, instead
        # of one merged flip-flop and one net to every bank (the ULX3S 7 x 6 x 16 build at
        # 100 MHz: the head → weight bank 0's address, one net of 11.5 ns).
        head = keep_apart(Signal(Shape.cast(self._shape).width, name="head"))
        second = Signal(self._shape, name="second")
        count = Signal(range(3))
        push = self.i_stream.valid & self.i_stream.ready
        pop = self.o_stream.valid & self.o_stream.ready
        count_next = Signal.like(count, name="count_next")
        m.d.comb += count_next.eq(count + push - pop)
        ready = count != 2
        if self._ready_register:
            ready = keep_apart(Signal(init=1, name="room"))  # count != 2, from the next count
            m.d.sync += ready.eq(count_next != 2)
        m.d.comb += [self.i_stream.ready.eq(ready), self.o_stream.valid.eq(count != 0),
                     self.o_stream.payload.eq(head)]
        m.d.sync += count.eq(count_next)
        incoming = self.i_stream.payload
        # The loads do not look at ``push``: an entry that is not held may take any value, so
        # the head loads whenever it is empty or leaves (``count == 0 | o_stream.ready``: the
        # second entry if there is one, else the input, which is the pushed entry if one is
        # pushed), and the second entry loads the input unless the queue is full (no push
        # then: ``i_stream.ready`` is low). Each chunk of the head reads ``count == 0`` and
        # ``count == 2`` from flip-flops of its own (kept apart, loaded from the next count),
        # so its enable is one LUT of its flag and the receiver's ``ready`` and its select a
        # flip-flop beside it: the count and the sender's ``valid`` reach the chunks' few
        # flags, not the head's 200 enables and multiplexers across the chip (the ULX3S
        # 10 x 10 x 8 builds at 82 MHz, seed 2: the step loop's ``remain`` -> the count's
        # decode -> the head's enables, 12.9 ns; then the count -> ``count != 2`` -> the
        # multiplexers -> the head, 12.3 ns).
        width = len(head)
        for start in range(0, width, _CHUNK_BITS):
            end = min(start + _CHUNK_BITS, width)
            empty = keep_apart(Signal(init=1, name=f"head{start}_empty"))
            full = keep_apart(Signal(name=f"head{start}_full"))
            m.d.sync += [empty.eq(count_next == 0), full.eq(count_next == 2)]
            with m.If(empty | self.o_stream.ready):
                m.d.sync += head[start:end].eq(Mux(full, Value.cast(second)[start:end],
                                                   Value.cast(incoming)[start:end]))
        with m.If(count != 2):
            m.d.sync += second.eq(incoming)
        return m

"""A two-entry stream queue whose ``ready`` and output are flip-flops: the core controller's
step queue, between its loop counters and its buffer reads."""

from __future__ import annotations

from amaranth import Module, Mux, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..common import keep_apart, read_only

__all__ = ["StepQueue"]


@read_only("shape")
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

    Members
    -------
    i_stream : In(stream.Signature(shape))
    o_stream : Out(stream.Signature(shape))
    """

    def __init__(self, shape):
        try:
            Shape.cast(shape)
        except TypeError as error:
            raise TypeError(f"shape must be a shape-castable, not {shape!r}") from error
        self._shape = shape
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
        m.d.comb += [self.i_stream.ready.eq(count != 2), self.o_stream.valid.eq(count != 0),
                     self.o_stream.payload.eq(head)]
        m.d.sync += count.eq(count + push - pop)
        incoming = self.i_stream.payload
        # The loads do not look at ``push``: an entry that is not held may take any value, so
        # the head loads whenever it is empty or leaves (``count == 0 | o_stream.ready``: the
        # second entry if there is one, else the input, which is the pushed entry if one is
        # pushed), and the second entry loads the input unless the queue is full (no push
        # then: ``i_stream.ready`` is low). The head's enable, one net to every kept-apart
        # copy, is then one LUT of the count and the receiver's ``ready``, not behind the
        # sender's ``valid`` (the ULX3S 10 x 10 x 8 build at 82 MHz, seed 2: the step loop's
        # ``remain`` -> the count's decode -> the head's enables, 12.9 ns).
        with m.If((count == 0) | self.o_stream.ready):
            m.d.sync += head.eq(Mux(count == 2, second, incoming))
        with m.If(count != 2):
            m.d.sync += second.eq(incoming)
        return m

"""A two-entry stream queue whose ``ready`` and output are flip-flops: the core controller's
step queue, between its loop counters and its buffer reads."""

from __future__ import annotations

from amaranth import Module, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..common import keep_apart, read_only

__all__ = ["StepQueue"]


@read_only("shape", "copies")
class StepQueue(wiring.Component):
    """Two entries in order; the head is a register and the input's ``ready`` is a compare of
    the entry count, so neither depends on ``o_stream.ready`` in the same cycle.

    The sender's enables then start at the count register rather than behind the receiver's
    ``ready``, and the head drives its loads (the core's block-RAM read addresses) straight
    from flip-flops. ``o_stream.ready`` only moves the entries: the head takes the second
    entry, or the input in a cycle that both pops and pushes one entry.

    Latency: an entry pushed in cycle ``t`` is offered from cycle ``t + 1``. Throughput: one
    entry per cycle in and out (two entries: a push and a pop in every cycle leave one).
    ``i_stream.ready = count != 2``, ``o_stream.valid = count != 0``.

    With :attr:`copies` (``(field, n)`` pairs of a ``lib.data.StructLayout`` shape), the head's
    ``field`` is also held in ``n`` more registers, loaded alike and kept apart
    (:data:`hdl.common.KEEP_APART`): copy ``i`` equals the head's ``field`` in every cycle
    (:attr:`head_copies` ``[field][i]``), so each of ``n`` far-apart loads (the core's buffer
    banks' read addresses) can have a flip-flop of its own beside it instead of one net across
    the chip.

    Parameters
    ----------
    shape : ShapeLike
        The entries' shape (a ``lib.data`` layout or a plain width).
    copies : tuple of (str, int)
        The head's fields to copy and how many copies of each (default none).

    Members
    -------
    i_stream : In(stream.Signature(shape))
    o_stream : Out(stream.Signature(shape))
    head_copies : Out(StructLayout({field: ArrayLayout(shape[field], n)}))
        Only with :attr:`copies`.
    """

    def __init__(self, shape, copies: tuple[tuple[str, int], ...] = ()):
        try:
            Shape.cast(shape)
        except TypeError as error:
            raise TypeError(f"shape must be a shape-castable, not {shape!r}") from error
        copies = tuple(copies)
        for pair in copies:
            if (not isinstance(pair, tuple) or len(pair) != 2 or not isinstance(pair[1], int)
                    or pair[1] < 1):
                raise ValueError(f"copies must be (field, count >= 1) pairs, not {pair!r}")
            if not isinstance(shape, data.StructLayout) or pair[0] not in shape.members:
                raise ValueError(f"copies names {pair[0]!r}, not a field of {shape!r}")
        self._shape = shape
        self._copies = copies
        members = {"i_stream": In(stream.Signature(shape)),
                   "o_stream": Out(stream.Signature(shape))}
        if copies:
            members["head_copies"] = Out(data.StructLayout({
                field: data.ArrayLayout(shape.members[field], count)
                for field, count in copies}))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        head = Signal(self._shape, name="head")
        second = Signal(self._shape, name="second")
        count = Signal(range(3))
        push = self.i_stream.valid & self.i_stream.ready
        pop = self.o_stream.valid & self.o_stream.ready
        m.d.comb += [self.i_stream.ready.eq(count != 2), self.o_stream.valid.eq(count != 0),
                     self.o_stream.payload.eq(head)]
        m.d.sync += count.eq(count + push - pop)
        incoming = self.i_stream.payload
        # The head and its copies: (register, the value it takes from ``second``, from the input)
        heads = [(head, second, incoming)]
        for field, copies in self._copies:
            for index in range(copies):
                copy = keep_apart(Signal(self._shape.members[field],
                                         name=f"head_{field}{index}"))
                m.d.comb += self.head_copies[field][index].eq(copy)
                heads.append((copy, second[field], incoming[field]))
        with m.If(pop & (count == 2)):
            m.d.sync += [reg.eq(from_second) for reg, from_second, _ in heads]
        with m.Elif(push & ((count == 0) | pop)):  # empty, or its one entry leaves
            m.d.sync += [reg.eq(from_input) for reg, _, from_input in heads]
        with m.Elif(push):  # one entry stays
            m.d.sync += second.eq(incoming)
        return m

"""The DSP ceiling: an output-stationary R x C INT8 systolic array, one multiplier (DSP) per PE.

Bit-exact twin: :mod:`golden.dsp_array` (tile results, step fields, output timing).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.dsp_array import (
    DEFAULT_MAX_K,
    PE_STAGES,
    check_params,
    latency,
    min_tile_steps,
    product_range,
)
from bitmod.golden.pe_baseline import signed_width

from ..common import read_only

__all__ = ["DspMacArray"]


@read_only("rows", "cols", "max_k", "a_bits", "w_bits", "product_width", "acc_width", "in_layout",
           "out_layout")
class DspMacArray(wiring.Component):
    """Output-stationary ``R x C`` array of integer MACs: ``R * C`` multiplies every cycle.

    The DSP-based ceiling of a device: each PE holds one ``a_bits x w_bits`` multiplier
    (written as ``*``; Yosys maps it to one MULT18X18D on ECP5 and one SB_MAC16 on iCE40 for
    operands of at most 16 bits) and one accumulator. Computes, per tile::

        acc[r, c] = sum_{k < K} a[r, k] * w[k, c]          exact, 1 <= K <= max_k

    Input: one k-step per transfer: the activation column ``a[:, k]`` (one per row), the weight
    row ``w[k, :]`` (one per column) and ``last`` on the tile's final step. Callers send
    unskewed data; the array skews it: column ``c``'s weights pass ``C - 1 - c`` registers and
    then flow down the column (row ``r`` sees them ``r`` cycles later); row ``r``'s activations
    enter at column ``C - 1`` and flow towards column 0 (one register per PE), with ``last``
    riding along (down column ``C - 1``, then along each row). A cycle without a transfer
    feeds zero operands, so idle gaps are harmless.

    PE ``(r, c)``: chain registers (passed on to the neighbours), the multiplier between its
    own input and output registers (a DSP's; on ECP5 Yosys leaves them in the fabric, where
    the placer can keep them at the DSP site), a second product register, then
    ``sum = acc + product``; on ``last`` the sum is loaded into the PE's drain register and
    ``acc`` restarts at 0 in the same cycle. Combinational depth: one multiplier, one route
    between PEs, or one ``acc_width``-bit adder (+ a 2:1 mux) between registers.

    Drain: each row is a shift chain of two registers per PE running from column ``C - 1`` to
    column 0; a PE loads its result into its first register, the chain moves one register per
    cycle, so a row's results leave at column 0 on ``C`` consecutive cycles in column order.
    Row ``r`` is delayed ``R - 1 - r`` more cycles (deskew) so that one output transfer carries
    column ``c`` of all ``R`` rows.

    Widths (two's complement, tight; ``signed_width(lo, hi)`` = fewest bits holding
    ``[lo, hi]``)::

        p_hi = (-2**(a_bits-1)) * (-2**(w_bits-1))                 (both most negative)
        p_lo = -max(2**(a_bits-1) * (2**(w_bits-1) - 1), (2**(a_bits-1) - 1) * 2**(w_bits-1))
        product_width = signed_width(p_lo, p_hi)
        acc_width     = signed_width(max_k * p_lo, max_k * p_hi)    (at most 64)

    e.g. INT8 x INT8: 16-bit products; ``max_k = 4096``: 28-bit accumulators. A tile longer than
    ``max_k`` steps may wrap (modulo ``2**acc_width``).

    Timing (:func:`golden.dsp_array.schedule`): with ``t`` the cycle a tile's ``last`` step is
    accepted, column ``c`` of its results is valid on ``o_stream`` in cycle
    ``t + latency + c``, ``latency = R + C + 4``. Throughput: one step (``R * C`` MACs) per
    cycle, back to back across tiles, as long as every tile has ``K >= C`` steps
    (:attr:`min_tile_steps`): consecutive ``last`` steps must be accepted at least ``C`` cycles
    apart so a row's drain holds one tile's results at a time. ``i_stream.ready`` is high except
    on a ``last`` step offered earlier than that: the array holds it (inserting idle steps)
    until the drain is free, so a short tile costs cycles but no result is lost.

    Backpressure: none on the output. ``o_stream.ready`` is not read (it is in the signature
    for stream tooling only): a result column is valid for exactly one cycle, and the sink must
    take ``R`` results every cycle ``o_stream.valid`` is high; a result offered while ``ready``
    is low is lost. A sink that may stall needs a FIFO in front of it and must throttle the
    producer itself (the array never waits). Stalling the array instead would put a clock
    enable on every register and DSP, at a cost in Fmax.

    Parameters
    ----------
    rows, cols : int
        ``R`` and ``C`` (1..32 each).
    max_k : int
        Longest dot product (steps per tile) the accumulators hold without overflow (>= 1; the
        accumulator must fit 64 bits).
    a_bits, w_bits : int
        Signed activation and weight widths (2..18; 18 is the widest MULT18X18D input).

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"a": ArrayLayout(signed(a_bits), rows),
    "w": ArrayLayout(signed(w_bits), cols), "last": 1})))
        One k-step per transfer: ``a[:, k]``, ``w[k, :]``, ``last`` on the tile's final step.
    o_stream : Out(stream.Signature(StructLayout({"acc": ArrayLayout(signed(acc_width), rows),
    "col": unsigned(max(1, ceil(log2(cols)))), "last": 1})))
        ``C`` transfers per tile: ``acc[r] = acc[r, col]`` for ``col = 0 .. C - 1``, ``last``
        with ``col = C - 1``. No backpressure (see above).
    """

    def __init__(self, rows: int = 4, cols: int = 4, max_k: int = DEFAULT_MAX_K,
                 a_bits: int = 8, w_bits: int = 8):
        self._acc_width = check_params(rows, cols, max_k, a_bits, w_bits)
        self._rows, self._cols, self._max_k = int(rows), int(cols), int(max_k)
        self._a_bits, self._w_bits = int(a_bits), int(w_bits)
        self._product_width = signed_width(*product_range(a_bits, w_bits))
        self._in_layout = data.StructLayout({
            "a": data.ArrayLayout(signed(a_bits), rows),
            "w": data.ArrayLayout(signed(w_bits), cols),
            "last": 1,
        })
        self._out_layout = data.StructLayout({
            "acc": data.ArrayLayout(signed(self._acc_width), rows),
            "col": unsigned(max(1, (cols - 1).bit_length())),
            "last": 1,
        })
        super().__init__({
            "i_stream": In(stream.Signature(self._in_layout)),
            "o_stream": Out(stream.Signature(self._out_layout)),
        })

    @property
    def macs_per_cycle(self) -> int:
        return self._rows * self._cols

    @property
    def latency(self) -> int:
        """Cycles from the accepted ``last`` step to column 0's results: ``R + C + 4``."""
        return latency(self._rows, self._cols)

    @property
    def min_tile_steps(self) -> int:
        """Fewest steps of a tile sent back to back without a stall: ``C``."""
        return min_tile_steps(self._cols)

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols
        pay = self.i_stream.payload

        # Short-tile guard: cycles since the last accepted `last` step, saturating at C.
        gap = Signal(range(C + 1), init=C)
        accept = Signal()
        m.d.comb += [
            self.i_stream.ready.eq(~pay.last | (gap == C)),
            accept.eq(self.i_stream.valid & self.i_stream.ready),
        ]
        with m.If(accept & pay.last):
            m.d.sync += gap.eq(1)
        with m.Elif(gap != C):
            m.d.sync += gap.eq(gap + 1)

        def delayed(value, cycles, name, reset_less=False):
            for i in range(cycles):
                reg = Signal.like(value, name=f"{name}_d{i}", reset_less=reset_less)
                m.d.sync += reg.eq(value)
                value = reg
            return value

        # Edge: zero operands when nothing is accepted (a zero product is a no-op). Zeroing
        # `a` alone would do; zeroing `w` too keeps the skew chains from being pure shift
        # registers of the input port, which Yosys would merge with an upstream shift register
        # (the out-of-context wrapper's serial input: PE operands then sit on its chain).
        # Reset: only the activation path, the products, the accumulators and the control;
        # stale weights meet zero activations, and stale drain values are never valid. Fewer
        # flip-flops on the reset net (an ECP5 slice's LSR) ease routing.
        a_in = [delayed(Mux(accept, pay.a[r], 0), r, f"a_skew{r}") for r in range(R)]
        w_in = [delayed(Mux(accept, pay.w[c], 0), C - 1 - c, f"w_skew{c}", reset_less=True)
                for c in range(C)]

        a_reg = [[Signal(signed(self._a_bits), name=f"a_{r}_{c}") for c in range(C)]
                 for r in range(R)]
        w_reg = [[Signal(signed(self._w_bits), name=f"w_{r}_{c}", reset_less=True)
                  for c in range(C)] for r in range(R)]
        l_reg = [[Signal(name=f"last_{r}_{c}") for c in range(C)] for r in range(R)]
        l_prod = [[None] * C for _ in range(R)]  # `last` in the accumulate stage
        prod = [[Signal(signed(self._product_width), name=f"prod_{r}_{c}") for c in range(C)]
                for r in range(R)]
        acc = [[Signal(signed(self._acc_width), name=f"acc_{r}_{c}") for c in range(C)]
               for r in range(R)]
        # Drain: two registers per PE; the first is loaded with the PE's result.
        drain = [[(Signal(signed(self._acc_width), name=f"res_{r}_{c}", reset_less=True),
                   Signal(signed(self._acc_width), name=f"pass_{r}_{c}", reset_less=True))
                  for c in range(C)] for r in range(R)]

        for r in range(R):
            for c in range(C):
                # The multiplier between its own input and output registers (a DSP's), which
                # the placer can keep at the DSP site; the chain registers and a second product
                # register absorb the routes to the neighbours and to the accumulator.
                a_op = Signal(signed(self._a_bits), name=f"a_op_{r}_{c}")
                w_op = Signal(signed(self._w_bits), name=f"w_op_{r}_{c}", reset_less=True)
                p_dsp = Signal(signed(self._product_width), name=f"p_dsp_{r}_{c}")
                m.d.sync += [
                    a_reg[r][c].eq(a_in[r] if c == C - 1 else a_reg[r][c + 1]),
                    w_reg[r][c].eq(w_in[c] if r == 0 else w_reg[r - 1][c]),
                    a_op.eq(a_reg[r][c]),
                    w_op.eq(w_reg[r][c]),
                    p_dsp.eq(a_op * w_op),
                    prod[r][c].eq(p_dsp),
                ]
                l_prod[r][c] = delayed(l_reg[r][c], PE_STAGES, f"last_p_{r}_{c}")
                if c == C - 1:
                    m.d.sync += l_reg[r][c].eq(accept & pay.last if r == 0
                                               else l_reg[r - 1][c])
                else:
                    m.d.sync += l_reg[r][c].eq(l_reg[r][c + 1])
                total = Signal(signed(self._acc_width), name=f"sum_{r}_{c}")
                m.d.comb += total.eq(acc[r][c] + prod[r][c])
                m.d.sync += acc[r][c].eq(Mux(l_prod[r][c], 0, total))
                res, passing = drain[r][c]
                if c == C - 1:
                    # Head of the chain: nothing behind it to pass on; only the loaded
                    # value matters, in the cycle after the load.
                    m.d.sync += res.eq(total)
                else:
                    m.d.sync += res.eq(Mux(l_prod[r][c], total, drain[r][c + 1][1]))
                m.d.sync += passing.eq(res)

        # Output: row r deskewed by R - 1 - r; column counter started by `last` at PE
        # (R - 1, 0), which is in its accumulate stage two cycles before column 0 leaves.
        out = Signal(self._out_layout)
        for r in range(R):
            m.d.comb += out.acc[r].eq(delayed(drain[r][0][1], R - 1 - r, f"deskew{r}",
                                              reset_less=True))
        start = delayed(l_prod[R - 1][0], 1, "start")
        valid = Signal()
        col = Signal(range(C))
        with m.If(start):
            m.d.sync += [valid.eq(1), col.eq(0)]
        with m.Elif(valid):
            with m.If(col == C - 1):
                m.d.sync += valid.eq(0)
            with m.Else():
                m.d.sync += col.eq(col + 1)
        m.d.comb += [
            out.col.eq(col),
            out.last.eq(col == C - 1),
            self.o_stream.valid.eq(valid),
            self.o_stream.payload.eq(out),
        ]
        return m

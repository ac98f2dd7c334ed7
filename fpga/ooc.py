"""Out-of-context wrapper: put any component on a few pins with registered inputs and outputs.

A component's ports can be far wider than a package has pins (an iCE40UP5K in the SG48 package
has 39 I/Os). The wrapper feeds every input bit of the component from a serial-in shift register
and captures every output bit into a register that shifts out serially, so

* every input and output of the component is registered: timing paths start and end at flip-flops,
  and nextpnr's Fmax is the component's register-to-register Fmax (or the wrapper's, whichever is
  slower: the wrapper's own paths are a single LUT deep);
* nothing can be optimised away: every input is controllable and every output observable;
* the design needs four pins whatever the component's width (``sin``, ``load``, ``sout`` and the
  clock).

Wrapper cost, subtracted by :func:`wrapper_cost`: one flip-flop per input bit; per output bit
one flip-flop and one LUT4 (the load/shift multiplexer).

Bound: each shift register is one Amaranth value, at most :data:`MAX_WRAPPER_BITS` (65536) bits
wide (Amaranth's netlist limit), so a component with more input or output bits is refused by
:class:`OOCWrapper` with one line (far beyond any device anyway: the UP5K has 5280 LUTs).
"""


from amaranth import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MAX_WRAPPER_BITS", "OOCWrapper", "port_widths", "wrapper_cost"]

MAX_WRAPPER_BITS = 1 << 16  # Amaranth's widest netlist value


def port_widths(component) -> tuple[int, int]:
    """Total input and output bits of ``component``'s signature (streams flattened)."""
    in_bits = out_bits = 0
    for _path, member, value in component.signature.flatten(component):
        width = Value.cast(value).shape().width
        if member.flow == In:
            in_bits += width
        else:
            out_bits += width
    return in_bits, out_bits


def wrapper_cost(in_bits: int, out_bits: int) -> dict[str, int]:
    """Resources the wrapper itself adds (see the module docstring)."""
    return {"ff": in_bits + out_bits, "lut4": out_bits}


class OOCWrapper(wiring.Component):
    """Serial-in/serial-out harness around ``unit`` for out-of-context synthesis.

    Members
    -------
    sin : In(1)
        Serial data into the input shift register (one bit per cycle).
    load : In(1)
        High: capture all of the unit's outputs; low: shift the capture register by one bit.
    sout : Out(1)
        Serial data out of the capture register.
    """

    sin: In(1)
    load: In(1)
    sout: Out(1)

    def __init__(self, unit):
        in_bits, out_bits = port_widths(unit)
        if max(in_bits, out_bits) > MAX_WRAPPER_BITS:
            raise ValueError(f"{in_bits} input and {out_bits} output bits: the out-of-context "
                             f"wrapper takes at most {MAX_WRAPPER_BITS} each")
        self._unit = unit
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        inputs, outputs = [], []
        for _path, member, value in unit.signature.flatten(unit):
            (inputs if member.flow == In else outputs).append(Value.cast(value))
        in_bits = sum(len(v) for v in inputs)
        out_bits = sum(len(v) for v in outputs)

        if in_bits:
            shift_in = Signal(in_bits)
            m.d.sync += shift_in.eq(Cat(self.sin, shift_in[:-1]))
            m.d.comb += Cat(*inputs).eq(shift_in)
        if out_bits:
            capture = Signal(out_bits)
            with m.If(self.load):
                m.d.sync += capture.eq(Cat(*outputs))
            with m.Else():
                m.d.sync += capture.eq(capture >> 1)
            m.d.comb += self.sout.eq(capture[0])
        return m

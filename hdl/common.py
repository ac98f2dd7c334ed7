"""What the project's components share: read-only parameters, stream pipeline control and
packed pipeline registers.

:func:`read_only` exposes constructor parameters (stored as ``self._<name>``) as read-only
properties, so a component's parameters are inspectable and cannot be changed after the
component is made.

The flow control every pipelined stream unit of the project shares:

A unit with ``i_stream`` in, ``o_stream`` out and a fixed number of register stages between them
advances all its stages together: a stage may load while the output is empty or being taken,
``enable = o_stream.ready | ~o_stream.valid``, and that is also ``i_stream.ready``. A payload
accepted with the enable high comes out ``latency`` enabled cycles later; the unit takes one
payload per cycle while its output is taken, and holds everything (nothing lost or reordered)
while it is not.

:func:`register_fields` registers a stage's fields side by side in as few registers of at most
64 bits as their widths allow: the same flip-flops and enables as a register per field (the
synthesized logic is identical), but a cycle-based simulator such as Verilator updates one
variable per register every simulated cycle, and one 64-bit word for several fields is cheaper
than a variable each (measured in docs/verification.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from amaranth import Cat, Signal, Value

from bitmod.golden.checks import check_int

__all__ = ["PACKED_REGISTER_BITS", "pipeline_enable", "read_only", "register_fields"]

# The widest register register_fields makes: one machine word of the simulator (a Verilator
# variable of up to 64 bits is one integer; a wider one is an array of 32-bit words).
PACKED_REGISTER_BITS = 64


def read_only(*names: str):
    """Class decorator: a read-only property ``name`` returning ``self._name`` for each name."""
    def decorate(cls):
        for name in names:
            setattr(cls, name, property(lambda self, attr=f"_{name}": getattr(self, attr),
                                        doc=f"The ``{name}`` parameter (read-only)."))
        return cls
    return decorate


def pipeline_enable(m, i_stream, o_stream, latency: int, *, name: str = "pipe") -> Signal:
    """Drive ``i_stream.ready`` and ``o_stream.valid`` of a ``latency``-stage pipeline.

    ``valid`` travels through ``latency`` registers (enabled like the datapath) to
    ``o_stream.valid``; the caller registers its datapath with the returned enable, one
    register per stage, and drives ``o_stream.payload`` from the last stage.

    Parameters
    ----------
    m : amaranth.Module
    i_stream, o_stream : stream interfaces of the unit
    latency : int
        Register stages from input to output, at least 1.

    Returns
    -------
    Signal
        The stage enable.
    """
    latency = check_int("latency", latency, 1)
    enable = Signal(name=f"{name}_en")
    m.d.comb += [enable.eq(o_stream.ready | ~o_stream.valid), i_stream.ready.eq(enable)]
    valid = i_stream.valid
    for stage in range(latency):
        reg = Signal(name=f"{name}_valid{stage}")
        with m.If(enable):
            m.d.sync += reg.eq(valid)
        valid = reg
    m.d.comb += o_stream.valid.eq(valid)
    return enable


def register_fields(register: Callable[[Value, str], Value], fields: Mapping[str, object],
                    name: str, *, max_bits: int = PACKED_REGISTER_BITS) -> dict[str, Value]:
    """Register ``fields`` through ``register(value, name)``, packed side by side, in order,
    into as few registers of at most ``max_bits`` bits as first fit allows (a wider field gets
    a register of its own); returns each field read back from its register, signed fields as
    signed.

    Parameters
    ----------
    register : callable
        ``register(value, name) -> Signal``: the caller's pipeline register (its enable, its
        reset rule). Fields that need different registers (one with a reset, say) go through
        separate calls.
    fields : mapping of str to Value-castable
    name : str
        The registers are named ``name`` (one register) or ``name0``, ``name1``, ...
    max_bits : int
        The width one register may reach, at least 1.
    """
    check_int("max_bits", max_bits, 1)
    values = {key: Value.cast(value) for key, value in fields.items()}
    groups: list[list[str]] = []
    width = 0
    for key, value in values.items():
        if not groups or width + len(value) > max_bits:
            groups.append([])
            width = 0
        groups[-1].append(key)
        width += len(value)
    out = {}
    for index, keys in enumerate(groups):
        reg = register(Cat(*(values[k] for k in keys)),
                       name if len(groups) == 1 else f"{name}{index}")
        at = 0
        for key in keys:
            value = values[key]
            field = reg[at:at + len(value)]
            out[key] = field.as_signed() if value.shape().signed else field
            at += len(value)
    return out

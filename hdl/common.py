"""What the project's components share: read-only parameters, stream pipeline control and the
mark of registers the FPGA flows keep apart (:data:`KEEP_APART`).

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
"""

from __future__ import annotations

from amaranth import Signal

from bitmod.golden.checks import check_int

__all__ = ["KEEP_APART", "NO_COLLISION", "check_form", "is_ice40", "keep_apart",
           "pipeline_enable", "platform_form", "read_only"]

# A register attribute: the FPGA flows keep such flip-flops (Yosys ``keep``) so that identical
# copies are not merged (fpga.devices.Device.pre_synth). The array's skew chains and its PEs'
# control registers hold the same values in every column at the same depth (a systolic array's
# control is uniform); merged, one flip-flop would drive a whole anti-diagonal of PEs across
# the chip (135 valid-skew registers of the ULX3S 10 x 10 array became 18 nets).
KEEP_APART = "bitmod_keep_apart"


# A memory attribute (memories of one read and one write port): the design never uses a read of
# a word in the cycle it is written, so the FPGA flows may let such a read return anything
# (Yosys ``RD_COLLISION_X_MASK``, fpga.devices.Device.pre_synth). Amaranth asks for the old
# word, which the ECP5's block RAM gives only within one port: Yosys emulates it with a
# delayed write and an address compare per bank, and with the banks' shared addresses the
# compare became one net across the chip (the ULX3S 10 x 10 build's critical path at 65 MHz,
# seed 2).
NO_COLLISION = "bitmod_no_collision"


def keep_apart(signal: Signal) -> Signal:
    """``signal`` with the :data:`KEEP_APART` attribute set (a register that must stay a flip-flop
    of its own beside identical ones)."""
    signal.attrs[KEEP_APART] = 1
    return signal


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


def one_hot_fsm(fsm) -> None:
    """Have Yosys re-encode ``fsm`` (the value of a finished ``with m.FSM() as fsm`` block)
    one-hot, with its ``fsm_encoding`` attribute.

    Amaranth encodes states in binary, and Yosys leaves a state register with an init value
    (every Amaranth register has one) binary too, so each state test is a compare of the whole
    register. One-hot makes it one flip-flop: on the iCE40 the bridge's reply enables lost
    LUT levels. The state still resets synchronously to the init state (Yosys takes it from
    the reset mux); only the power-up value of an unreset design would differ, and every top
    here holds reset until its clock is up.
    """
    data = getattr(fsm, "_data", None)
    if not isinstance(data, dict) or "signal" not in data:  # Amaranth's FSM internals moved
        raise RuntimeError("one_hot_fsm: this Amaranth version does not expose the FSM's "
                           "state signal; update hdl.common.one_hot_fsm")
    data["signal"].attrs["fsm_encoding"] = "one-hot"


def is_ice40(platform) -> bool:
    """Whether ``platform`` (an amaranth vendor platform, a :class:`fpga.devices.Device`, or
    ``None`` for generic RTL) is an iCE40 part: RTL that has a faster form for the iCE40's
    LUT4s and carry chains picks it here."""
    return str(getattr(platform, "family", "")).lower() == "ice40"


def check_form(name: str, choice) -> bool | None:
    """``choice`` if it is ``None`` (the platform picks, :func:`platform_form`) or a bool."""
    if choice is not None and not isinstance(choice, bool):
        raise TypeError(f"{name} must be a bool or None, not {choice!r}")
    return choice


def platform_form(choice: bool | None, platform, *, on_ice40: bool) -> bool:
    """A component's two-form option: ``choice``, or when it is ``None`` ``on_ice40`` on an
    iCE40 part (:func:`is_ice40`: its forms save the LCs the iCEBreaker default needs) and
    the other form elsewhere."""
    if choice is not None:
        return choice
    return on_ice40 if is_ice40(platform) else not on_ice40

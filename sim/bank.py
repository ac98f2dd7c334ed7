"""Several stream units behind one stream, so one Verilator build checks many configurations.

A Verilator build costs tens of seconds and a run of :func:`sim.vectors.run_vectors` a few, so
the exhaustive suites put every configuration they sweep side by side in one test-only
component. :class:`LockstepBank` is that component. Tests subclass it with a constructor that
takes JSON-serialisable parameters (the build cache keys on them) and builds the units::

    class CastBank(LockstepBank):
        def __init__(self, configs):
            super().__init__([FixedCast(**c) for c in configs], shared_input=True)

    outputs = run_vectors(CastBank, {"configs": CONFIGS}, inputs)
    columns = unpack_fields(CastBank(CONFIGS).out_layout, outputs)  # {"u0": ..., "u1": ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from amaranth import Cat, Module, Shape, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["LockstepBank"]

_STREAMS = ("i_stream", "o_stream")


def _payload_shape(port):
    """The shape of a stream port's payload: its layout for a View, else its Shape."""
    payload = port.payload
    return payload.shape() if isinstance(payload, data.View) else Value.cast(payload).shape()


def _width(shape) -> int:
    return Shape.cast(shape).width


class LockstepBank(wiring.Component):
    """Stream units side by side on one input stream, with one output stream.

    Lockstep mode (the default) forks every input payload to all units and joins their outputs:
    ``i_stream.ready`` is the AND of the units' readies and a unit sees ``valid`` only when all
    are ready, so all accept each payload in the same cycle; ``o_stream.valid`` is the AND of the
    units' (padded) valids and a unit sees ``ready`` only then, so all release a result in the
    same cycle. Units of equal latency built on the standard enable (``o_stream.ready |
    ~o_stream.valid``) therefore move in lockstep and the bank accepts one payload per cycle;
    the join keeps results paired and in order even when they do not, e.g. under backpressure
    with padding (it costs throughput, never data).

    ``select=True`` drives one unit instead: a static input port ``sel`` picks it, the others see
    ``valid`` and ``ready`` low, and the bank's handshake is the selected unit's. For units that
    cannot share a handshake (different rates or latencies) but should share one build.

    Payloads: ``i_stream.payload`` is a ``StructLayout`` with one field per unit, named after
    the unit and holding that unit's input payload (``shared_input=True``: the units' common
    input payload, given to every unit); ``o_stream.payload`` has one field per unit holding
    its output payload. Fields follow the unit order, the first at the LSB.

    Static input ports (every member other than the streams, e.g. ``special_values``) are
    collected by name; each becomes one port of the bank that drives every unit having it
    (the widths must agree). ``ports_in_payload=True`` carries them in ``i_stream.payload``
    instead, as extra fields after the units': each payload then drives the ports in the cycle
    it is offered, which suits units that read the port in the cycle they accept a payload
    and lets one run sweep the port's values.

    Latency: the units' common latency, or with ``pad_to_latency=True`` the longest: a unit with
    a shorter ``latency`` gets ``longest - latency`` register stages (valid and payload, the
    standard enable) after its output, so one payload per cycle flows with ``o_stream.ready``
    held high and the join keeps results paired otherwise. ``None`` in select mode. Throughput:
    one payload per cycle in lockstep mode with ``o_stream.ready`` high; the selected unit's in
    select mode.

    Requirement on the units: ``i_stream: In(stream.Signature(...))`` and ``o_stream:
    Out(stream.Signature(...))``, one output per input in order, and (lockstep mode)
    ``i_stream.ready`` not a combinational function of ``i_stream.valid`` (the fork gates
    ``valid`` with the readies).

    Parameters
    ----------
    units : dict[str, wiring.Component] or sequence of wiring.Component
        The units; a sequence names them ``u0``, ``u1``, ... in order.
    shared_input : bool
        Give every unit the same input payload (their input payloads must have one width; the
        bank's is the units' layout if they all share it, else plain bits of that width).
    pad_to_latency : bool
        Pad units of shorter ``latency`` to the longest; without it, lockstep mode requires
        equal latencies (where the units declare one).
    ports_in_payload : bool
        Carry the static ports in ``i_stream.payload`` instead of exposing them as ports.
    select : bool
        Drive only the unit picked by the ``sel`` port (not with ``pad_to_latency``).

    Members
    -------
    i_stream : In(stream.Signature(in_layout))
    o_stream : Out(stream.Signature(out_layout))
    sel : In(range(len(units)))
        Select mode only: index of the driven unit.
    <port> : In(width)
        One per static input port of the units (unless ``ports_in_payload``).
    """

    def __init__(self, units: Mapping[str, wiring.Component] | Sequence[wiring.Component], *,
                 shared_input: bool = False, pad_to_latency: bool = False,
                 ports_in_payload: bool = False, select: bool = False):
        for name, flag in (("shared_input", shared_input), ("pad_to_latency", pad_to_latency),
                           ("ports_in_payload", ports_in_payload), ("select", select)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, not {flag!r}")
        if isinstance(units, Mapping):
            named = dict(units)
        elif isinstance(units, Sequence):
            named = {f"u{i}": unit for i, unit in enumerate(units)}
        else:
            raise TypeError(f"units must be a dict or a sequence of components, not {units!r}")
        if not named:
            raise ValueError("units must hold at least one unit")
        for name, unit in named.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"unit names must be identifiers, not {name!r}")
            members = getattr(getattr(unit, "signature", None), "members", {})
            if not all(s in members for s in _STREAMS):
                raise TypeError(f"unit {name!r} ({unit!r}) has no i_stream/o_stream ports")
        if select and pad_to_latency:
            raise ValueError("pad_to_latency applies to lockstep mode, not to select=True")
        if shared_input and ports_in_payload:
            raise ValueError("ports_in_payload needs per-unit input fields, not shared_input")

        self._units = named
        self._shared_input = shared_input
        self._ports_in_payload = ports_in_payload
        self._select = select
        self._ports = self._static_ports(named)

        latencies = {name: getattr(unit, "latency", None) for name, unit in named.items()}
        if select:
            self._latency = None
        elif pad_to_latency:
            missing = [name for name, lat in latencies.items() if not isinstance(lat, int)]
            if missing:
                raise ValueError(f"pad_to_latency needs a latency on every unit; "
                                 f"{missing} have none")
            self._latency = max(latencies.values())
        else:
            known = {lat for lat in latencies.values() if lat is not None}
            if len(known) > 1:
                raise ValueError(f"units have different latencies {latencies}; lockstep needs "
                                 f"equal ones (pass pad_to_latency=True)")
            self._latency = known.pop() if known else None
        self._pads = {name: (self._latency - (latencies[name] or 0)) if pad_to_latency else 0
                      for name in named}

        in_shapes = {name: _payload_shape(unit.i_stream) for name, unit in named.items()}
        if shared_input:
            widths = {name: _width(shape) for name, shape in in_shapes.items()}
            if len(set(widths.values())) != 1:
                raise ValueError(f"shared_input needs input payloads of one width, not {widths}")
            first = next(iter(in_shapes.values()))
            self._in_layout = (first if all(s == first for s in in_shapes.values())
                               else Shape.cast(widths.popitem()[1]))
        else:
            fields = dict(in_shapes)
            if ports_in_payload:
                for port, shape in self._ports.items():
                    if port in fields:
                        raise ValueError(f"static port {port!r} clashes with a unit name")
                    fields[port] = shape
            self._in_layout = data.StructLayout(fields)
        self._out_layout = data.StructLayout(
            {name: _payload_shape(unit.o_stream) for name, unit in named.items()})

        members = {"i_stream": In(stream.Signature(self._in_layout)),
                   "o_stream": Out(stream.Signature(self._out_layout))}
        if select:
            members["sel"] = In(range(len(named)))
        if not ports_in_payload:
            for port, shape in self._ports.items():
                if port in members:
                    raise ValueError(f"static port {port!r} clashes with a bank port")
                members[port] = In(shape)
        super().__init__(members)

    @staticmethod
    def _static_ports(units) -> dict[str, object]:
        ports: dict[str, object] = {}
        for name, unit in units.items():
            for port, member in unit.signature.members.items():
                if port in _STREAMS:
                    continue
                if not member.is_port or member.flow != In:
                    raise TypeError(f"unit {name!r}: port {port!r} is not a plain input port "
                                    f"({member!r}); a bank can only share static inputs")
                if port not in ports:
                    ports[port] = member.shape
                elif _width(ports[port]) != _width(member.shape):
                    raise ValueError(f"static port {port!r} has widths {_width(ports[port])} "
                                     f"and {_width(member.shape)} on different units")
        return ports

    @property
    def units(self) -> tuple[wiring.Component, ...]:
        """The units, in payload order."""
        return tuple(self._units.values())

    @property
    def names(self) -> tuple[str, ...]:
        """The units' names: the fields of the payloads."""
        return tuple(self._units)

    @property
    def in_layout(self):
        return self._in_layout

    @property
    def out_layout(self) -> data.StructLayout:
        return self._out_layout

    @property
    def latency(self) -> int | None:
        return self._latency

    def elaborate(self, platform):
        m = Module()
        for name, unit in self._units.items():
            m.submodules[name] = unit
            source = (self.i_stream.payload if self._shared_input
                      else self.i_stream.payload[name])
            m.d.comb += Value.cast(unit.i_stream.payload).eq(Value.cast(source))
            for port in self._ports:
                if port in unit.signature.members:
                    driver = (self.i_stream.payload[port] if self._ports_in_payload
                              else getattr(self, port))
                    m.d.comb += Value.cast(getattr(unit, port)).eq(Value.cast(driver))
        if self._select:
            self._elaborate_select(m)
        else:
            self._elaborate_lockstep(m)
        return m

    def _elaborate_select(self, m):
        for index, (name, unit) in enumerate(self._units.items()):
            chosen = self.sel == index
            m.d.comb += [unit.i_stream.valid.eq(self.i_stream.valid & chosen),
                         unit.o_stream.ready.eq(self.o_stream.ready & chosen),
                         Value.cast(self.o_stream.payload[name]).eq(
                             Value.cast(unit.o_stream.payload))]
            with m.If(chosen):
                m.d.comb += [self.i_stream.ready.eq(unit.i_stream.ready),
                             self.o_stream.valid.eq(unit.o_stream.valid)]

    def _elaborate_lockstep(self, m):
        all_ready = Signal()
        all_valid = Signal()
        take = Signal()  # the sink takes a joined result this cycle
        m.d.comb += [all_ready.eq(Cat(*(u.i_stream.ready for u in self.units)).all()),
                     self.i_stream.ready.eq(all_ready),
                     take.eq(self.o_stream.ready & all_valid)]
        valids = []
        for name, unit in self._units.items():
            m.d.comb += unit.i_stream.valid.eq(self.i_stream.valid & all_ready)
            valid, bits = unit.o_stream.valid, Value.cast(unit.o_stream.payload)
            stages = []
            for stage in range(self._pads[name]):
                stage_valid = Signal(name=f"{name}_pad{stage}_valid")
                stage_bits = Signal(len(bits), name=f"{name}_pad{stage}")
                stages.append((valid, bits, stage_valid, stage_bits))
                valid, bits = stage_valid, stage_bits
            # Walk back from the join: each stage loads when its successor takes its contents
            # or it holds nothing (the standard enable), and that enable is its input's ready.
            ready = take
            for prev_valid, prev_bits, stage_valid, stage_bits in reversed(stages):
                enable = Signal(name=f"{stage_bits.name}_enable")
                m.d.comb += enable.eq(ready | ~stage_valid)
                with m.If(enable):
                    m.d.sync += [stage_valid.eq(prev_valid), stage_bits.eq(prev_bits)]
                ready = enable
            m.d.comb += [unit.o_stream.ready.eq(ready),
                         Value.cast(self.o_stream.payload[name]).eq(bits)]
            valids.append(valid)
        m.d.comb += [all_valid.eq(Cat(*valids).all()), self.o_stream.valid.eq(all_valid)]

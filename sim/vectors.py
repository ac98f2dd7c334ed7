"""Stream whole vector sets through a component under Verilator, and pack/unpack payloads.

Two ways to run a pipelined stream unit (``i_stream`` in, ``o_stream`` out, one output per
input, in order) against a list of input payloads:

:func:`run_vectors`, the fast path for exhaustive sweeps
    The component is wrapped in a :class:`BatchHarness`: cocotb writes a batch of ``B`` input
    payloads into one wide register, pulses ``start``, and the harness feeds one payload per cycle
    and shifts the outputs into another wide register. Python runs once per batch, not once per
    cycle, so millions of cases take seconds. The harness also counts the cycles from ``start``
    to the last output, which proves the unit's throughput.

:func:`run_stream`, the handshake path
    cocotb drivers put the payloads on ``i_stream`` with seeded random idle cycles and take them
    from ``o_stream`` with seeded random ``ready`` deassertion: slower, for thousands of cases.

Payloads are flat integers: the bit pattern of ``i_stream.payload`` as Amaranth lays it out
(the first field of a ``StructLayout`` at the LSB). :func:`pack_fields` and
:func:`unpack_fields` convert from and to per-field arrays.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from amaranth import Cat, Module, Shape, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .verilator import _params_of, get_model, run_cocotb

__all__ = ["BatchHarness", "pack_fields", "run_stream", "run_vectors", "unpack_fields"]

# Upper bound on the bits of one batch register: wide enough that Python runs rarely, narrow
# enough that Verilator's per-cycle shift of the register stays cheap.
BATCH_BITS = 1 << 14
MAX_BATCH = 512


def _static_inputs(component) -> dict[str, int]:
    """Input ports of ``component`` other than the two streams: name -> width."""
    ports = {}
    for name, member in component.signature.members.items():
        if name in ("i_stream", "o_stream"):
            continue
        if not member.is_port or member.flow != In:
            raise TypeError(f"run_vectors supports only plain input ports besides the streams; "
                            f"{name!r} is {member!r}")
        ports[name] = Value.cast(getattr(component, name)).shape().width
    return ports


class BatchHarness(wiring.Component):
    """Feeds ``batch`` payloads from a wide register into a unit and collects its outputs.

    After a one-cycle ``start`` pulse the harness offers ``batch_in`` word by word (word 0 at the
    LSB) on the unit's ``i_stream``, ``count`` words in all, with ``o_stream.ready`` held high.
    Each output is shifted into ``batch_out`` from the top, so after ``count`` outputs they sit in
    the top ``count`` words, oldest lowest. ``done`` rises with the last output; ``cycles`` is the
    number of cycles from ``start`` to that output (``count + latency`` for a unit that accepts
    one payload per cycle). Other input ports of the unit are exposed under their own names.

    Members
    -------
    batch_in : In(batch * in_width)
    count : In(range(batch + 1))
    start : In(1)
    batch_out : Out(batch * out_width)
    done : Out(1)
    cycles : Out(32)
    """

    def __init__(self, unit, batch: int):
        self._unit = unit
        self._batch = batch
        self._in_width = Value.cast(unit.i_stream.payload).shape().width
        self._out_width = Value.cast(unit.o_stream.payload).shape().width
        self._static = _static_inputs(unit)
        members = {
            "batch_in": In(batch * self._in_width),
            "count": In(range(batch + 1)),
            "start": In(1),
            "batch_out": Out(batch * self._out_width),
            "done": Out(1),
            "cycles": Out(32),
        }
        for name, width in self._static.items():
            if name in members:
                raise ValueError(f"unit port {name!r} clashes with a harness port")
            members[name] = In(width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        for name in self._static:
            m.d.comb += Value.cast(getattr(unit, name)).eq(getattr(self, name))

        pending_in = Signal(self.batch_in.shape())
        to_send = Signal(range(self._batch + 1))
        to_receive = Signal(range(self._batch + 1))
        running = Signal()

        m.d.comb += [
            unit.i_stream.valid.eq(running & (to_send != 0)),
            Value.cast(unit.i_stream.payload).eq(pending_in[:self._in_width]),
            unit.o_stream.ready.eq(1),
        ]
        with m.If(self.start):
            m.d.sync += [
                pending_in.eq(self.batch_in), to_send.eq(self.count),
                to_receive.eq(self.count), running.eq(self.count != 0),
                self.done.eq(self.count == 0), self.cycles.eq(0),
            ]
        with m.Elif(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(unit.i_stream.valid & unit.i_stream.ready):
                # Slices, not shift operators: a constant shift of a 16-kbit value becomes an
                # operator cell whose comb-cycle check costs Amaranth a minute per build.
                m.d.sync += [pending_in.eq(pending_in[self._in_width:]),
                             to_send.eq(to_send - 1)]
            with m.If(unit.o_stream.valid):
                out_bits = Value.cast(unit.o_stream.payload)
                m.d.sync += [
                    self.batch_out.eq(Cat(self.batch_out[self._out_width:], out_bits)),
                    to_receive.eq(to_receive - 1),
                ]
                with m.If(to_receive == 1):
                    m.d.sync += [running.eq(0), self.done.eq(1)]
        return m


def _batch_size(in_width: int, out_width: int) -> int:
    return max(1, min(MAX_BATCH, BATCH_BITS // max(in_width, out_width, 1)))


def _write_ints(path: Path, values) -> None:
    path.write_text("\n".join(format(int(v), "x") for v in values) + "\n")


def _read_ints(path: Path) -> np.ndarray:
    text = path.read_text().split()
    return np.array([int(v, 16) for v in text], dtype=object)


def _check_inputs(inputs) -> list[int]:
    values = [int(v) for v in np.asarray(inputs, dtype=object).reshape(-1)]
    if any(v < 0 for v in values):
        raise ValueError("payloads are flat bit patterns and must be non-negative")
    return values


def _run(mode: str, component_class, params, inputs, ports, extra_env,
         stats: dict | None = None, n_outputs: int | None = None) -> np.ndarray:
    original = params
    params, construct = _params_of(params)
    values = _check_inputs(inputs)
    # A generic harness must see the unit's ports; the instance is elaborated only when the
    # model is not cached yet, so it is exempt from Amaranth's unused-elaboratable warning.
    probe = construct(component_class)
    probe._MustUse__silence = True
    static = _static_inputs(probe)
    unknown = set(ports or {}) - set(static)
    if unknown:
        raise ValueError(f"unknown ports {sorted(unknown)}; the unit has {sorted(static)}")
    in_width = Value.cast(probe.i_stream.payload).shape().width
    out_width = Value.cast(probe.o_stream.payload).shape().width
    for value in values:
        if value >> in_width:
            raise ValueError(f"payload {value:#x} does not fit the {in_width}-bit i_stream")
    expected = len(values) if n_outputs is None else n_outputs
    if mode == "vectors":
        batch = _batch_size(in_width, out_width)
        model = get_model(
            component_class, {**params, "__harness__": f"batch{batch}"},
            factory=lambda **p: BatchHarness(construct(component_class), batch))
        test_module = "bitmod.sim.tb.vectors_tb"
    else:
        model = get_model(component_class, original)
        test_module = "bitmod.sim.tb.stream_tb"
    with tempfile.TemporaryDirectory(dir=model.build_dir) as scratch:
        scratch_dir = Path(scratch)
        _write_ints(scratch_dir / "inputs.hex", values)
        env = {
            "VECTORS_IN": str(scratch_dir / "inputs.hex"),
            "VECTORS_OUT": str(scratch_dir / "outputs.hex"),
            "VECTORS_IN_WIDTH": str(in_width),
            "VECTORS_OUT_WIDTH": str(out_width),
            "VECTORS_PORTS": json.dumps({k: int(v) for k, v in (ports or {}).items()}),
            "VECTORS_N_OUTPUTS": str(expected),
            **extra_env,
        }
        if mode == "vectors":
            env["VECTORS_BATCH"] = str(batch)
        run_cocotb(model, test_module, env=env, run_name=f"{mode}-{os.getpid()}-"
                   f"{Path(scratch).name}")
        outputs = _read_ints(scratch_dir / "outputs.hex") if expected else np.array([], object)
        overhead = scratch_dir / "outputs.hex.overhead"
        stamps = scratch_dir / "outputs.hex.cycles"
        if stats is not None:
            stats["cases"] = len(values)
            stats["model"] = model.name
            stats["build_seconds"] = model.build_seconds
            if overhead.exists():
                # cycles from start to the last output minus the payload count: equals the
                # unit's latency (the start cycle and the output cycle cancel).
                stats["fill_cycles"] = int(overhead.read_text())
            if stamps.exists():
                stats["output_cycles"] = [int(v) for v in stamps.read_text().split()]
    if len(outputs) != expected:
        raise AssertionError(f"expected {expected} outputs, got {len(outputs)}")
    return outputs


def run_vectors(component_class, params: Mapping | None, inputs: Sequence[int], *,
                ports: Mapping[str, int] | None = None, stats: dict | None = None) -> np.ndarray:
    """Stream ``inputs`` through ``component_class(**params)`` at one payload per cycle.

    Returns the ``o_stream`` payloads (object array of Python ints), one per input, in order.
    Raises ``AssertionError`` (:class:`~sim.verilator.SimulationFailed`) if the unit did not
    sustain one payload per cycle after its pipeline filled (the harness counts the cycles of
    every batch). ``stats``, if given, is filled with ``cases``, ``model``, ``build_seconds``
    and ``fill_cycles``.
    """
    return _run("vectors", component_class, params, inputs, ports, {}, stats)


def run_stream(component_class, params: Mapping | None, inputs: Sequence[int], *,
               ports: Mapping[str, int] | None = None, backpressure: float = 0.5,
               idle: float = 0.5, seed: int = 1, n_outputs: int | None = None,
               stats: dict | None = None) -> np.ndarray:
    """Like :func:`run_vectors`, through cocotb drivers with random idles and backpressure.

    ``idle`` is the probability that the driver leaves ``valid`` low in a cycle;
    ``backpressure`` the probability that the sink holds ``ready`` low; both seeded by ``seed``.
    ``n_outputs`` is the number of outputs to collect (default: one per input), for units that
    reduce many inputs to one output (a PE). ``stats["output_cycles"]`` receives, for each
    output, the cycle at which it was taken, counted from the cycle the first input was
    accepted (cycle 0); with ``idle=0`` and ``backpressure=0`` these are the unit's own timing.
    """
    for name, value in (("backpressure", backpressure), ("idle", idle)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), not {value}")
    return _run("stream", component_class, params, inputs, ports, {
        "STREAM_BACKPRESSURE": str(backpressure), "STREAM_IDLE": str(idle),
        "STREAM_SEED": str(seed)}, stats, n_outputs)


def _fields(layout) -> list[tuple[str, int, int, bool]]:
    layout = data.Layout.cast(layout)
    if not isinstance(layout, data.StructLayout):
        raise TypeError(f"expected a StructLayout, not {layout!r}")
    # Nested layouts cast to unsigned shapes: they are packed as raw bits.
    return [(name, field.offset, field.width, Shape.cast(field.shape).signed)
            for name, field in layout]


def pack_fields(layout, **arrays) -> np.ndarray:
    """Pack per-field integer arrays into flat payload integers for ``layout``.

    Signed fields take negative values (stored in two's complement); every field must be given.
    Values that do not fit their field raise ``ValueError``.
    """
    fields = _fields(layout)
    missing = {name for name, *_ in fields} - set(arrays)
    extra = set(arrays) - {name for name, *_ in fields}
    if missing or extra:
        raise ValueError(f"fields missing {sorted(missing)}, unknown {sorted(extra)}")
    size = max(np.size(a) for a in arrays.values())
    if sum(width for *_, width, _ in fields) <= 63:
        return _pack_narrow(fields, arrays, size)
    packed = np.zeros(size, dtype=object)
    for name, offset, width, signed in fields:
        values = np.broadcast_to(np.asarray(arrays[name], dtype=object).reshape(-1), (size,))
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        bad = [v for v in values if not lo <= int(v) <= hi]
        if bad:
            raise ValueError(f"field {name!r} ({width} bits) cannot hold {bad[0]}")
        mask = (1 << width) - 1
        packed = packed + np.array([(int(v) & mask) << offset for v in values], dtype=object)
    return packed


def _pack_narrow(fields, arrays, size) -> np.ndarray:
    packed = np.zeros(size, dtype=np.int64)
    for name, offset, width, signed in fields:
        values = np.broadcast_to(np.asarray(arrays[name]).astype(np.int64).reshape(-1), (size,))
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        bad = values[(values < lo) | (values > hi)]
        if bad.size:
            raise ValueError(f"field {name!r} ({width} bits) cannot hold {int(bad[0])}")
        packed |= (values & ((1 << width) - 1)) << offset
    return packed.astype(object)


def unpack_fields(layout, ints) -> dict[str, np.ndarray]:
    """Split flat payload integers into per-field int64 arrays (signed fields sign-extended)."""
    fields = _fields(layout)
    if sum(width for *_, width, _ in fields) <= 63:
        flat = np.asarray(ints, dtype=object).reshape(-1).astype(np.int64)
        result = {}
        for name, offset, width, signed in fields:
            column = (flat >> offset) & ((1 << width) - 1)
            if signed:
                column = np.where(column >> (width - 1) != 0, column - (1 << width), column)
            result[name] = column
        return result
    values = [int(v) for v in np.asarray(ints, dtype=object).reshape(-1)]
    result = {}
    for name, offset, width, signed in fields:
        mask = (1 << width) - 1
        column = [(v >> offset) & mask for v in values]
        if signed:
            column = [c - (1 << width) if c >> (width - 1) else c for c in column]
        dtype = np.int64 if width <= 63 else object
        result[name] = np.array(column, dtype=dtype)
    return result

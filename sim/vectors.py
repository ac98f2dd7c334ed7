"""Stream whole vector sets through a component under Verilator, and pack/unpack payloads.

A pipelined stream unit (``i_stream`` in, ``o_stream`` out) runs a list of input payloads on
the compiled transaction harness (:mod:`sim.harness`): one process for the whole list.

:func:`run_vectors`
    At full rate (no idle cycles, the output always ready): returns the outputs and checks that
    the unit sustained one payload per cycle (its outputs leave on consecutive cycles, a fixed
    latency after their inputs); ``stats["fill_cycles"]`` is that latency, measured, so tests
    assert ``latency`` properties against the real RTL. Exhaustive sweeps of 2^20 cases take
    seconds.
:func:`run_stream`
    With seeded random idle cycles on the input and ``ready`` deassertion on the output, to prove
    the handshake; ``engine="cocotb"`` runs the same on the cocotb engine (identical results
    and cycle stamps).

Payloads are flat integers: the bit pattern of ``i_stream.payload`` as Amaranth lays it out
(the first field of a ``StructLayout`` at the LSB). :func:`pack_fields` and
:func:`unpack_fields` convert from and to per-field arrays.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from amaranth import Shape
from amaranth.lib import data

from .harness import Script, ports_of, run_script, run_script_cocotb
from .verilator import SimulationFailed, get_model

__all__ = ["pack_fields", "run_stream", "run_vectors", "unpack_fields"]

RESET_CYCLES = 2


def _check_inputs(inputs) -> list[int]:
    values = [int(v) for v in np.asarray(inputs, dtype=object).reshape(-1)]
    if any(v < 0 for v in values):
        raise ValueError("payloads are flat bit patterns and must be non-negative")
    return values


@dataclass
class _ModelInfo:
    """What the checks need of a model, for the Amaranth engine (which builds none)."""

    name: str
    ports: object
    build_seconds: float = 0.0


def _check_unit(model, ports) -> None:
    names = ([p.name for p in model.ports.inputs], [p.name for p in model.ports.outputs])
    if names != (["i_stream"], ["o_stream"]):
        raise TypeError(f"{model.name}: a vector run needs one i_stream and one o_stream, not "
                        f"inputs {names[0]} and outputs {names[1]}")
    unknown = set(ports or {}) - {name for name, _ in model.ports.statics}
    if unknown:
        raise ValueError(f"unknown ports {sorted(unknown)}; the unit has "
                         f"{sorted(name for name, _ in model.ports.statics)}")


def _script(model, values, ports, n_outputs) -> Script:
    width = model.ports.inputs[0].width
    for value in values:
        if value >> width:
            raise ValueError(f"payload {value:#x} does not fit the {width}-bit i_stream")
    script = Script().reset(RESET_CYCLES)
    for name, value in (ports or {}).items():
        script.set(name, value)
    return script.put(0, values).wait(0, n_outputs)


def _timeout(n: int, idle: float = 0.0, backpressure: float = 0.0) -> int:
    """Generous cycle bound: every payload may wait for idles and backpressure."""
    slow = 1 / ((1 - idle) * (1 - backpressure))
    return int(20 * (n + 100) * slow) + 10_000


def run_vectors(component_class, params, inputs: Sequence[int], *,
                ports: Mapping[str, int] | None = None, stats: dict | None = None) -> np.ndarray:
    """Stream ``inputs`` through the component (``params``: its config object or keyword
    arguments) at one payload per cycle.

    Returns the ``o_stream`` payloads (object array of Python ints), one per input, in order.
    Raises ``AssertionError`` if the unit did not sustain one payload per cycle after its
    pipeline filled. ``stats``, if given, receives ``cases``, ``model``, ``build_seconds``,
    ``fill_cycles`` (the measured latency) and ``seconds`` (simulation wall time).
    """
    values = _check_inputs(inputs)
    model = get_model(component_class, params)
    _check_unit(model, ports)
    run = run_script(model, _script(model, values, ports, len(values)),
                     timeout_cycles=_timeout(len(values)))
    stamps = run.stamps("o_stream")
    first, taken = run.inputs["i_stream"]
    if taken != len(values) or len(stamps) != len(values):
        raise AssertionError(f"{model.name}: {taken} of {len(values)} inputs taken, "
                             f"{len(stamps)} outputs")
    if values and stamps != list(range(stamps[0], stamps[0] + len(values))):
        gaps = sum(b - a > 1 for a, b in itertools.pairwise(stamps))
        raise SimulationFailed(f"{model.name} did not sustain one payload per cycle: {gaps} gaps "
                             f"between its {len(values)} outputs")
    if stats is not None:
        stats.update(cases=len(values), model=model.name, build_seconds=model.build_seconds,
                     seconds=run.seconds)
        if values:
            stats["fill_cycles"] = stamps[0] - first
    return np.array(run.values("o_stream"), dtype=object)


def run_stream(component_class, params, inputs: Sequence[int], *,
               ports: Mapping[str, int] | None = None, backpressure: float = 0.5,
               idle: float = 0.5, seed: int = 1, n_outputs: int | None = None,
               stats: dict | None = None, engine: str = "harness",
               waves=None, cycles_per_input: int = 1) -> np.ndarray:
    """Like :func:`run_vectors`, with random idles and backpressure.

    ``idle`` is the probability that the source leaves ``valid`` low in a cycle;
    ``backpressure`` the probability that the sink holds ``ready`` low; both seeded by ``seed``.
    ``n_outputs`` is the number of outputs to collect (default: one per input), for units that
    reduce many inputs to one output (a PE). ``stats["output_cycles"]`` receives, for each
    output, the cycle at which it was taken, counted from the cycle the first input was
    accepted (cycle 0); with ``idle=0`` and ``backpressure=0`` these are the unit's own timing.
    ``engine`` is ``"harness"`` (default), ``"cocotb"`` or ``"amaranth"`` (Amaranth's own
    simulator): the same transactions and stamps; ``waves`` a VCD file the harness writes (the
    model is then built with tracing). ``cycles_per_input`` scales the run's cycle bound for
    units that take an input every so many cycles (the array: ``T`` cycles per weight-step).
    """
    values = _check_inputs(inputs)
    expected = len(values) if n_outputs is None else int(n_outputs)
    options = dict(seed=seed, idle=idle, backpressure=backpressure,
                   timeout_cycles=_timeout(len(values) * max(int(cycles_per_input), 1), idle,
                                           backpressure))
    if engine == "amaranth":  # Amaranth's simulator: slow, but no build at all
        from .amaranth_sim import run_script_amaranth
        from .verilator import _params_of

        unit = _params_of(params)[1](component_class)
        model = _ModelInfo(f"{component_class.__name__} (Amaranth simulator)", ports_of(unit))
        _check_unit(model, ports)
        run = run_script_amaranth(unit, _script(model, values, ports, expected), **options)
    else:
        model = get_model(component_class, params, engine=engine,
                          waves=True if waves is not None else None)
        _check_unit(model, ports)
        script = _script(model, values, ports, expected)
        run = (run_script(model, script, waves=waves, **options) if engine == "harness"
               else run_script_cocotb(model, script, **options))
    outputs = run.values("o_stream")
    if len(outputs) != expected:
        raise AssertionError(f"expected {expected} outputs, got {len(outputs)}")
    if stats is not None:
        first = run.inputs["i_stream"][0]
        stats.update(cases=len(values), model=model.name, build_seconds=model.build_seconds,
                     seconds=run.seconds, cycles=run.cycles,
                     output_cycles=[c - first for c in run.stamps("o_stream")])
    return np.array(outputs, dtype=object)


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

"""Transaction scripts, and the compiled C++ harness that runs them under Verilator.

Python describes *what* goes in (payloads on input streams, bytes on a UART pin, static port
values, resets, barriers) as a :class:`Script`; one process, a C++ ``main`` generated for the
component's ports (:func:`harness_cpp`) and linked with its Verilated model, drives it cycle by
cycle and writes every output transaction with its cycle stamp (:func:`run_script`). Python
runs once per job, never once per cycle. The cocotb engine (``sim/tb/harness_tb.py``) runs the
same scripts with the same rules, for the benches that must react per cycle and to show that
both engines give identical transactions and stamps.

Script directives, one per line, processed in order
---------------------------------------------------
``set NAME HEX``
    Drive the static input port ``NAME`` (held until set again).
``put S HEX``
    Queue a payload on input stream ``S`` (index into :attr:`HarnessPorts.inputs`); queued
    payloads are offered in order as the stream contract requires: ``valid`` with a payload
    held stable until ``ready``.
``uart HEX``
    Queue a byte for the UART receive pin (8N1 at the top's divisor, back to back).
``wait O N``
    Barrier: stop reading the script until output ``O`` (index into
    :attr:`HarnessPorts.outputs`; the UART transmit pin is the last output) has produced ``N``
    transactions in all. Queued inputs keep flowing meanwhile.
``reset N``
    Barrier until every queued input was taken; then hold ``rst`` for ``N`` cycles and wait one
    more (the wrapper's register) before reading on.

The run ends when the script is done and every queued input was taken (a script therefore
ends with a ``wait`` for the outputs it expects); a run longer than ``timeout_cycles`` fails.

Cycle rules (both engines)
--------------------------
Cycle ``c`` is the ``c``-th rising edge of the clock from the start of the simulation. In every
cycle, before the edge: ``rst`` is set; each output's ``ready`` is drawn (low with probability
``backpressure``); each input stream without a payload on offer and with one queued offers it
unless an idle is drawn (probability ``idle``); the UART pin is driven. Then the combinational
logic settles and a transfer happens on a stream whose ``valid`` and ``ready`` are both high;
its stamp is ``c``. Random draws come from :class:`SplitMix64` in that order (outputs in port
order, then inputs in port order, one draw per stream per cycle when its probability is
nonzero), so a seed gives the same cycles in both engines.

The DUT sits behind a wrapper (:func:`wrapper_verilog`) that registers ``rst``: no logic then
depends combinationally on a top-level input that changes only at reset, which halves
Verilator's work per cycle (the generated design is unchanged; the DUT leaves reset one cycle
after ``rst`` falls). The compiled harness's wrapper also passes every other input through a
falling-edge register: the harness changes inputs only before the falling edge, so the DUT
sees the same values at every rising edge, yet Verilator evaluates the input-dependent logic
once per cycle instead of at both edges (the cocotb engine writes its inputs just after the
rising edge and samples in the same time step, so its wrapper has no such register).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from amaranth import Value
from amaranth.lib import wiring

__all__ = [
    "HarnessPorts",
    "HarnessRun",
    "Script",
    "SplitMix64",
    "StreamPort",
    "harness_cpp",
    "parse_script",
    "ports_of",
    "run_script",
    "run_script_cocotb",
    "wrapper_verilog",
]

MASK64 = (1 << 64) - 1
TOP = "sim_top"  # the wrapper's module name: what both engines simulate


class SplitMix64:
    """The harness's random numbers: SplitMix64, one 64-bit step per draw, so that the C++
    harness and the cocotb testbench draw identical sequences."""

    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, probability: float) -> bool:
        """One draw: True with ``probability`` (the top 53 bits as a fraction)."""
        return (self.next() >> 11) < round(probability * (1 << 53))


@dataclass(frozen=True)
class StreamPort:
    """A stream port: ``<name>__valid``, ``<name>__ready``, ``<name>__payload`` (``width``)."""

    name: str
    width: int


@dataclass(frozen=True)
class HarnessPorts:
    """The ports of a component as the harness drives them.

    Attributes
    ----------
    inputs, outputs : tuple of StreamPort
        Stream ports, in signature order.
    statics : tuple of (str, int)
        Other input ports (name, width), driven by ``set`` directives.
    outs : tuple of (str, int)
        Other output ports (not sampled).
    uart_divisor : int or None
        Clock cycles per bit when the component has ``rx``/``tx`` UART pins.
    domains : tuple of str
        Clock domains besides ``sync`` (ports ``<name>_clk`` and ``<name>_rst``, e.g. a split
        accelerator top's ``link``): the wrapper passes them through, ``<name>_rst``
        registered on its own clock; a cocotb testbench drives them (the compiled harness
        drives one clock and refuses them).
    """

    inputs: tuple[StreamPort, ...]
    outputs: tuple[StreamPort, ...]
    statics: tuple[tuple[str, int], ...] = ()
    outs: tuple[tuple[str, int], ...] = ()
    uart_divisor: int | None = None
    domains: tuple[str, ...] = ()

    @property
    def output_names(self) -> list[str]:
        """Output indices of ``wait`` and of the results: the streams, then ``tx``."""
        return [p.name for p in self.outputs] + (["tx"] if self.uart_divisor else [])

    def port_list(self) -> list[tuple[str, int, str]]:
        """Every top-level port (name, width, "in"/"out") except ``clk`` and ``rst``."""
        ports = []
        for p in self.inputs:
            ports += [(f"{p.name}__valid", 1, "in"), (f"{p.name}__ready", 1, "out"),
                      (f"{p.name}__payload", p.width, "in")]
        for p in self.outputs:
            ports += [(f"{p.name}__valid", 1, "out"), (f"{p.name}__ready", 1, "in"),
                      (f"{p.name}__payload", p.width, "out")]
        ports += [(name, width, "in") for name, width in self.statics]
        ports += [(name, width, "out") for name, width in self.outs]
        return ports


def ports_of(component, uart_divisor: int | None = None) -> HarnessPorts:
    """The :class:`HarnessPorts` of an Amaranth component's signature (stream members become
    stream ports; ``rx``/``tx`` become the UART pins when ``uart_divisor`` is given)."""
    inputs, outputs, statics, outs = [], [], [], []
    for name, member in component.signature.members.items():
        value = getattr(component, name)
        if member.is_signature and {"valid", "ready", "payload"} <= set(member.signature.members):
            width = Value.cast(value.payload).shape().width
            (inputs if member.flow == wiring.In else outputs).append(StreamPort(name, width))
            continue
        if not member.is_port:
            raise TypeError(f"port {name!r} is neither a stream nor a plain port; the harness "
                            "cannot drive it")
        width = Value.cast(value).shape().width
        (statics if member.flow == wiring.In else outs).append((name, width))
    if uart_divisor is not None:
        if ("rx", 1) not in statics or ("tx", 1) not in outs:
            raise TypeError("a UART harness needs 1-bit rx (in) and tx (out) ports")
        statics.remove(("rx", 1))
    return HarnessPorts(tuple(inputs), tuple(outputs), tuple(statics), tuple(outs),
                        uart_divisor)


def wrapper_verilog(ports: HarnessPorts, dut: str = "top", latch_inputs: bool = False) -> str:
    """The simulation wrapper ``sim_top``: the DUT's ports, with ``rst`` (and each other
    domain's ``<name>_rst``, :attr:`HarnessPorts.domains`) through a posedge register (initial
    value 1).

    With ``latch_inputs`` (the compiled harness's build) every other input also passes through a
    falling-edge register. The harness changes inputs only just before the falling edge, so the
    DUT sees the same values at every rising edge and between the edges as without the latch;
    but no DUT logic then depends combinationally on a top-level input, so Verilator evaluates
    the input-dependent logic once per cycle (at the falling edge) instead of at both edges.
    """
    decls = ["input clk", "input rst"]
    conns = [".clk(clk)", ".rst(rst_q)"]
    resets = ["  reg rst_q = 1'b1;\n  always @(posedge clk) rst_q <= rst;\n"]
    for domain in ports.domains:
        decls += [f"input {domain}_clk", f"input {domain}_rst"]
        conns += [f".{domain}_clk({domain}_clk)", f".{domain}_rst({domain}_rst_q)"]
        resets.append(f"  reg {domain}_rst_q = 1'b1;\n"
                      f"  always @(posedge {domain}_clk) {domain}_rst_q <= {domain}_rst;\n")
    latches = []
    names = [(n, w, d) for n, w, d in ports.port_list()]
    if ports.uart_divisor:
        names.append(("rx", 1, "in"))
    for name, width, direction in names:
        size = f"[{width - 1}:0] " if width > 1 else ""
        decls.append(f"{'input' if direction == 'in' else 'output'} {size}{name}")
        if latch_inputs and direction == "in":
            latches.append(f"  reg {size}{name}_q;\n  always @(negedge clk) {name}_q <= {name};\n")
            conns.append(f".{name}({name}_q)")
        else:
            conns.append(f".{name}({name})")
    note = "rst is registered" + (", other inputs latched at the falling edge" if latches else "")
    return (f"// Simulation wrapper generated by bitmod.sim.harness: {note}.\n"
            f"module {TOP}(\n  " + ",\n  ".join(decls) + ");\n"
            + "".join(resets) + "".join(latches) +
            f"  {dut} dut(\n    " + ",\n    ".join(conns) + ");\nendmodule\n")


# --------------------------------------------------------------------------------------------
# the C++ harness
# --------------------------------------------------------------------------------------------

def _words(width: int) -> int:
    return max(1, -(-width // 32))


def cpp_name(name: str) -> str:
    """Verilator's C++ member name of port ``name``: an underscore following an underscore is
    escaped as ``__05F`` (``i_stream__valid`` -> ``i_stream___05Fvalid``)."""
    out = []
    for i, char in enumerate(name):
        out.append("__05F" if char == "_" and i and name[i - 1] == "_" else char)
    return "".join(out)


def _setter(name: str, width: int) -> str:
    name = cpp_name(name)
    if width > 64:
        return (f"[](Vtop* t, const uint32_t* w) {{ for (int i = 0; i < {_words(width)}; ++i) "
                f"t->{name}[i] = w[i]; }}")
    high = " | (uint64_t)w[1] << 32" if width > 32 else ""
    return f"[](Vtop* t, const uint32_t* w) {{ t->{name} = (uint64_t)w[0]{high}; }}"


def _getter(name: str, width: int) -> str:
    name = cpp_name(name)
    if width > 64:
        return (f"[](Vtop* t, uint32_t* w) {{ for (int i = 0; i < {_words(width)}; ++i) "
                f"w[i] = t->{name}[i]; }}")
    if width > 32:
        return (f"[](Vtop* t, uint32_t* w) {{ uint64_t v = t->{name}; w[0] = (uint32_t)v; "
                "w[1] = (uint32_t)(v >> 32); }")
    return f"[](Vtop* t, uint32_t* w) {{ w[0] = (uint32_t)t->{name}; }}"


def harness_cpp(ports: HarnessPorts) -> str:
    """The C++ ``main`` driving ``sim_top`` (Verilator prefix ``Vtop``) for ``ports``."""
    ins = ", ".join(
        f'{{"{p.name}", {p.width}, [](Vtop* t, bool v) {{ t->{cpp_name(p.name + "__valid")} '
        f"= v; }}, [](Vtop* t) {{ return (bool)t->{cpp_name(p.name + '__ready')}; }}, "
        f"{_setter(p.name + '__payload', p.width)}}}" for p in ports.inputs)
    outs = ", ".join(
        f'{{"{p.name}", {p.width}, [](Vtop* t) {{ return (bool)t->'
        f'{cpp_name(p.name + "__valid")}; }}, [](Vtop* t, bool v) {{ t->'
        f"{cpp_name(p.name + '__ready')} = v; }}, "
        f"{_getter(p.name + '__payload', p.width)}}}" for p in ports.outputs)
    statics = ", ".join(f'{{"{name}", {width}, {_setter(name, width)}}}'
                        for name, width in ports.statics)
    template = (resources.files(__package__) / "harness_template.cpp").read_text()
    return (template.replace("@INS@", ins).replace("@OUTS@", outs)
            .replace("@STATICS@", statics)
            .replace("@UART_DIVISOR@", str(ports.uart_divisor or 0)))


# --------------------------------------------------------------------------------------------
# scripts and runs
# --------------------------------------------------------------------------------------------

@dataclass
class Script:
    """A transaction script (module docstring): build it with the methods, run it with
    :func:`run_script` (or the cocotb engine)."""

    lines: list[str] = field(default_factory=list)

    def set(self, port: str, value: int) -> Script:
        self.lines.append(f"set {port} {int(value):x}")
        return self

    def put(self, stream: int, values: Iterable[int]) -> Script:
        values = list(map(int, values))
        if values and min(values) < 0:
            raise ValueError("payloads are flat bit patterns and must be non-negative")
        prefix = f"put {int(stream)} %x"
        self.lines.extend([prefix % v for v in values])
        return self

    def uart(self, data: bytes) -> Script:
        self.lines.extend(f"uart {byte:x}" for byte in data)
        return self

    def wait(self, output: int, count: int) -> Script:
        self.lines.append(f"wait {output} {int(count)}")
        return self

    def reset(self, cycles: int = 2) -> Script:
        self.lines.append(f"reset {int(cycles)}")
        return self

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass
class HarnessRun:
    """The outputs of a run: per output (stream names, then ``tx``) a list of
    ``(cycle, value)``; per input stream ``(first accepted cycle, payloads taken)``; the
    ``cycles`` simulated; wall ``seconds`` of the simulation process; UART bytes received with
    a framing error."""

    outputs: dict[str, list[tuple[int, int]]]
    inputs: dict[str, tuple[int, int]]
    cycles: int
    framing_errors: int = 0
    seconds: float = 0.0

    def values(self, name: str) -> list[int]:
        return [v for _, v in self.outputs[name]]

    def stamps(self, name: str) -> list[int]:
        return [c for c, _ in self.outputs[name]]


def parse_script(text: str) -> list[tuple[str, object, int]]:
    """The directives of a script as ``(op, argument, value)`` (the cocotb engine's reader;
    the compiled harness parses the same text in C++)."""
    items = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        op = parts[0]
        if op == "put":
            items.append((op, int(parts[1]), int(parts[2], 16)))
        elif op == "set":
            items.append((op, parts[1], int(parts[2], 16)))
        elif op == "wait":
            items.append((op, int(parts[1]), int(parts[2])))
        elif op == "reset":
            items.append((op, None, int(parts[1])))
        elif op == "uart":
            items.append((op, None, int(parts[1], 16)))
        else:
            raise ValueError(f"unknown script directive {op!r}")
    return items


def parse_results(text: str, ports: HarnessPorts) -> dict:
    """The output file of either engine, as :class:`HarnessRun` fields: ``output cycle hex``
    lines (a UART byte may carry a fourth token, ``ferr``), then ``in`` and ``cycles`` lines."""
    names = ports.output_names
    outputs: dict[str, list[tuple[int, int]]] = {name: [] for name in names}
    lists = [outputs[name] for name in names]
    cut = min(i for i in (text.find("in "), text.find("\nin "), text.find("cycles "),
                          text.find("\ncycles ")) if i >= 0)
    body, trailer = text[:cut], text[cut:]
    ferr = 0
    if ports.uart_divisor:
        for parts in map(str.split, body.splitlines()):
            lists[int(parts[0])].append((int(parts[1]), int(parts[2], 16)))
            ferr += len(parts) > 3
    else:  # the bulk of a job: three tokens a line, parsed as one token list
        tokens = body.split()
        if len(tokens) % 3:
            raise ValueError("a harness output line without three tokens")
        indices, cycles_, values = tokens[0::3], tokens[1::3], tokens[2::3]
        pairs = zip(map(int, cycles_), [int(v, 16) for v in values], strict=True)
        if len(lists) == 1 or len(set(indices)) == 1:  # one output stream: no dispatch per line
            only = int(indices[0]) if indices else 0
            lists[only].extend(pairs)
        else:
            for out, pair in zip(indices, pairs, strict=True):
                lists[int(out)].append(pair)
    inputs: dict[str, tuple[int, int]] = {}
    cycles = 0
    for parts in map(str.split, trailer.splitlines()):
        if parts and parts[0] == "in":
            inputs[ports.inputs[int(parts[1])].name] = (int(parts[2]), int(parts[3]))
        elif parts and parts[0] == "cycles":
            cycles = int(parts[1])
    return {"outputs": outputs, "inputs": inputs, "cycles": cycles, "framing_errors": ferr}


def run_script(model, script: Script, *, seed: int = 1, idle: float = 0.0,
               backpressure: float = 0.0, timeout_cycles: int,
               waves: Path | None = None) -> HarnessRun:
    """Run ``script`` with the compiled harness of ``model`` (a :class:`sim.verilator.
    VerilatorModel` built with ``engine="harness"``); one process, bounded by
    ``timeout_cycles`` simulated cycles and by a wall-clock limit derived from it.

    Raises
    ------
    sim.verilator.SimulationFailed
        The harness timed out or refused the script (one line: its own message).
    """
    from .verilator import SimulationFailed

    if model.engine != "harness":
        raise ValueError(f"{model.name} was built for the {model.engine} engine")
    if waves is not None and not model.waves:
        raise ValueError("waveforms need a model built with waves (BITMOD_WAVES=1 or --waves)")
    for name, value in (("idle", idle), ("backpressure", backpressure)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), not {value}")
    scratch = model.build_dir / "runs"
    scratch.mkdir(exist_ok=True)
    stem = scratch / f"{os.getpid()}-{time.monotonic_ns()}"
    script_path, out_path = stem.with_suffix(".script"), stem.with_suffix(".out")
    script_path.write_text(script.text())
    command = [str(model.executable), str(script_path), str(out_path), str(seed & MASK64),
               repr(float(idle)), repr(float(backpressure)), str(int(timeout_cycles))]
    if waves is not None:
        command.append(str(waves))
    started = time.monotonic()
    # Far beyond any speed this machine reaches (~10k cycles/s is the floor seen under load).
    wall_limit = 60 + int(timeout_cycles) / 5_000
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=wall_limit,
                                check=False)
    except subprocess.TimeoutExpired:
        raise SimulationFailed(f"{model.name}: the harness ran longer than {wall_limit:.0f} s"
                               ) from None
    seconds = time.monotonic() - started
    try:
        if result.returncode != 0:
            message = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise SimulationFailed(f"{model.name}: {message}"
                                   + (f" (waveform: {waves})" if waves else
                                      "; rerun with BITMOD_WAVES=1 for a waveform"))
        fields = parse_results(out_path.read_text(), model.ports)
    finally:
        script_path.unlink(missing_ok=True)
        out_path.unlink(missing_ok=True)
    return HarnessRun(**fields, seconds=seconds)


def run_script_cocotb(model, script: Script, *, seed: int = 1, idle: float = 0.0,
                      backpressure: float = 0.0, timeout_cycles: int) -> HarnessRun:
    """Run ``script`` with the cocotb engine (``sim/tb/harness_tb.py``) on ``model`` (built
    with ``engine="cocotb"``): the same rules, transactions and stamps as :func:`run_script`,
    at cocotb's speed; bounded by ``timeout_cycles`` and a wall-clock limit derived from it."""
    import dataclasses
    import json

    from .verilator import COCOTB_TIME_LIMIT, run_cocotb

    if model.engine != "cocotb":
        raise ValueError(f"{model.name} was built for the {model.engine} engine")
    scratch = model.build_dir / "runs"
    scratch.mkdir(exist_ok=True)
    stem = scratch / f"{os.getpid()}-{time.monotonic_ns()}"
    script_path, out_path = stem.with_suffix(".script"), stem.with_suffix(".out")
    script_path.write_text(script.text())
    started = time.monotonic()
    try:
        run_cocotb(model, "bitmod.sim.tb.harness_tb", run_name=f"run-{stem.name}", env={
            "HARNESS_SCRIPT": str(script_path), "HARNESS_OUT": str(out_path),
            "HARNESS_PORTS": json.dumps(dataclasses.asdict(model.ports)),
            "HARNESS_SEED": str(seed & MASK64), "HARNESS_IDLE": repr(float(idle)),
            "HARNESS_BACKPRESSURE": repr(float(backpressure)),
            "HARNESS_TIMEOUT": str(int(timeout_cycles))},
            # 1k cycles/s: far below the cocotb engine's speed, even under load
            time_limit=max(COCOTB_TIME_LIMIT, 120 + int(timeout_cycles) / 1_000))
        fields = parse_results(out_path.read_text(), model.ports)
    finally:
        script_path.unlink(missing_ok=True)
        out_path.unlink(missing_ok=True)
    return HarnessRun(**fields, seconds=time.monotonic() - started)

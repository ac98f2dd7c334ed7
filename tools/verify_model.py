"""A whole model through the RTL: MiniLM-L6's forward pass with every Linear GEMM on the core.

:func:`verify_model` (``bitmod verify --model minilm``):

1. tokenizes the sentences to ``tokens`` tokens each (``[CLS] ... [SEP]``, padded or
   truncated), so every encoder GEMM has ``M = sentences x tokens`` rows (the pooler's has
   ``M = sentences``: it takes the ``[CLS]`` token);
2. runs transformers' ``BertModel`` (the real model code) three ways:

   * **FP32**: the model as loaded;
   * **golden datapath**: every ``nn.Linear`` (36 encoder projections + the pooler) computed by
     :func:`bitmod.models.datapath.datapath_backend`, i.e. the core's arithmetic (weights
     quantized with the scheme and INT8 group scales, activations rounded to the core's format,
     block floating point, exact group sums, drain rounding), recording each GEMM's operands
     and golden output codes; everything else (embeddings, attention softmax, GELU,
     LayerNorm, biases, pooling) in PyTorch float32;
   * **RTL**: every recorded GEMM on the accelerator core under Verilator, as independent tasks
     (:func:`bitmod.tools.distributed.run_tasks`), one core configuration sized for the
     largest layer; then the forward pass again with each Linear returning the RTL's output
     codes (through the host's FP32 factors). Each layer's input is checked to be bit-identical
     to the recorded one, so this is the model computed by the RTL;

3. reports per layer: shape, cycles and PE utilization (the core's counters, checked against
   the golden cycle model), bit-exactness of every output code, and the error of the layer's
   output against FP32 ``x @ W.T`` on the same input; end to end: sentence-embedding cosine of
   the golden-datapath model against FP32, and whether the RTL model's embeddings equal the
   golden-datapath model's (they must, bit for bit).

``rtl_layers`` limits the RTL runs to the first N GEMMs (or named layers) for quick checks;
the others are golden only and the RTL end-to-end run is then not made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bitmod.tools.api import DEFAULT_SENTENCE, Result, _float_error, _quiet
from bitmod.tools.distributed import ClusterSpec, run_tasks, stage_progress

__all__ = ["MODELS", "ModelVerifyResult", "RtlLayerJob", "run_rtl_layer", "verify_model"]

MODELS = ("minilm",)


@dataclass(frozen=True)
class RtlLayerJob:
    """One recorded GEMM to run on the core (a picklable task)."""

    config: object  # golden.core.CoreConfig
    name: str
    x: np.ndarray
    qt: object  # golden.quantize.QuantizedTensor


def run_rtl_layer(job: RtlLayerJob) -> dict:
    """Run ``job`` on the core's Verilator model: output ``codes`` [M, N] (uint32), the core's
    ``counters``, simulated ``cycles`` and wall ``seconds``."""
    from bitmod.sim.core_driver import run_core_gemm

    run = run_core_gemm(job.config, job.x, job.qt)
    return {"codes": run["codes"], "counters": run["counters"], "cycles": int(run["cycles"]),
            "seconds": float(run["seconds"])}


@dataclass
class ModelVerifyResult(Result):
    """What :func:`verify_model` ran and measured (``bitmod verify --model ... --json``)."""

    model: str
    sentences: list[str]
    tokens: int
    scheme: str
    group_size: int
    array: str
    lanes: int
    act: str
    out: str
    core: dict
    cluster: str
    layers: list[dict]
    layers_total: int
    layers_on_rtl: int
    all_bit_exact: bool
    counters_match_model: bool
    embedding_cosine_vs_fp32: list[float]
    rtl_embeddings_equal_golden: bool | None
    rtl_end_to_end: str
    cycles_total: int
    verilator_build_s: float
    seconds: dict

    @property
    def ok(self) -> bool:
        """Every RTL layer bit-exact with its counters as modelled, and (when every layer ran
        on the RTL) the RTL model's embeddings equal to the golden datapath's."""
        return (self.all_bit_exact and self.counters_match_model
                and self.rtl_embeddings_equal_golden is not False)


def _select_rtl(names: list[str], rtl_layers) -> list[str]:
    """The layer names to run on the RTL: ``"all"``, a count of the first ones, or names."""
    if rtl_layers is None or rtl_layers == "all":
        return list(names)
    if isinstance(rtl_layers, int) and not isinstance(rtl_layers, bool):
        if not 0 <= rtl_layers <= len(names):
            raise ValueError(f"rtl_layers must be 0 .. {len(names)} (the model's Linear "
                             f"layers), got {rtl_layers}")
        return list(names[:rtl_layers])
    chosen = list(rtl_layers)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r}; the model's Linear layers are "
                         f"{names[0]!r} ... {names[-1]!r}")
    return chosen


def _tokenize(sentences: list[str], tokens: int) -> dict:
    from bitmod.models.minilm import load_minilm_tokenizer

    return dict(load_minilm_tokenizer()(
        [s.strip() for s in sentences], padding="max_length", truncation=True,
        max_length=tokens, return_tensors="pt"))


def verify_model(model: str = "minilm", *, sentences: list[str] | None = None, tokens: int = 16,
                 scheme: str = "bitmod4", group_size: int | None = None,
                 array: tuple[int, int] = (4, 4), lanes: int = 4, pe: str = "bitserial",
                 act: str = "fp16",
                 out: str = "fp32", mant_width: int = 12, act_exp_bits: int = 3,
                 rtl_layers=None, cluster: ClusterSpec | None = None,
                 progress=_quiet) -> ModelVerifyResult:
    """Run ``model``'s forward pass with every Linear GEMM on the RTL (module docstring).

    Parameters
    ----------
    model : {"minilm"}
    sentences : list of str, optional
        Default: one fixed sentence.
    tokens : int
        Tokens per sentence (2 .. 512), padded or truncated.
    scheme, group_size, array, lanes, pe, act, out, mant_width, act_exp_bits
        The core and the weights, as for :func:`bitmod.tools.api.verify`.
    rtl_layers : "all", int or list of str, optional
        GEMMs run on the RTL (default all).
    cluster : ClusterSpec, optional
        Where the RTL tasks run (default a LocalCluster of 2 workers).
    progress : callable
        ``progress(stage)`` per step and ``progress(stage, detail)`` while tasks run (a
        :class:`bitmod.tools.progress.Progress`).
    """
    import torch

    from bitmod.golden import bfp
    from bitmod.golden import gemm as ggemm
    from bitmod.golden.checks import check_choice, check_int
    from bitmod.golden.core import CoreConfig, job_counters
    from bitmod.models import datapath, minilm
    from bitmod.models.eval import linear_layers, swap_linears

    start = time.perf_counter()
    check_choice("model", model, MODELS)
    sentences = [DEFAULT_SENTENCE] if sentences is None else list(sentences)
    if not sentences or not all(isinstance(s, str) and s.strip() for s in sentences):
        raise ValueError("sentences must be a non-empty list of non-empty strings")
    tokens = check_int("tokens", tokens, 2, minilm.minilm_config()["max_position_embeddings"])
    rows, cols = (check_int("array rows", v, 1) for v in array)
    check_choice("act", act, bfp.ACT_FORMATS)
    check_choice("out", out, ggemm.OUT_FORMATS)
    formats, zero_points = ggemm.core_weights(scheme, pe)  # as bitmod verify
    cluster = ClusterSpec() if cluster is None else cluster

    progress("loading MiniLM-L6 and tokenizing")
    net = minilm.load_minilm_model()
    batch = _tokenize(sentences, tokens)
    layers = linear_layers(net)
    names = list(layers)
    on_rtl = _select_rtl(names, rtl_layers)

    progress(f"quantizing {len(layers)} Linear layers with {scheme}")
    weights = {name: layer.weight.detach().to(torch.float64).numpy()
               for name, layer in layers.items()}
    qts = datapath.quantize_layer_weights(weights, scheme, group_size,  # None: the scheme's
                                          zero_points, pe)
    shapes = [qt.shape for qt in qts.values()]
    m_max = len(sentences) * tokens
    try:
        config = CoreConfig(rows=rows, cols=cols, lanes=lanes,
                            group_size=next(iter(qts.values())).group_size, formats=formats,
                            act_format=act, mant_width=mant_width, act_exp_bits=act_exp_bits,
                            out_format=out, max_m=m_max, max_n=max(s[0] for s in shapes),
                            max_k=max(s[1] for s in shapes), pe_kind=pe,
                            zero_points=zero_points)
    except ValueError as error:
        raise ValueError(f"scheme {scheme!r} on a {rows}x{cols} core of {pe} PEs: {error}"
                         ) from None

    progress("FP32 forward")
    fp32_embedding = minilm.minilm_embed_batch(net, batch)

    progress("forward with every Linear on the golden datapath")
    calls: list = []
    inputs: dict[str, np.ndarray] = {}
    golden_backend = datapath.datapath_backend(qts, config.array, record=calls)

    def recording_backend(name, x):
        inputs[name] = x.numpy().copy()
        return golden_backend(name, x)

    with swap_linears(net, recording_backend):
        golden_embedding = minilm.minilm_embed_batch(net, batch)
    golden_seconds = time.perf_counter() - start
    by_name = {call.name: call for call in calls}
    if len(by_name) != len(calls):
        raise ValueError("a Linear layer ran more than once in the forward pass; the RTL "
                         "replay expects one call per layer")

    progress("Verilator model of the core (built once, then cached)")
    from bitmod.hdl.array import AcceleratorCore
    from bitmod.sim.verilator import get_model

    core_model = get_model(AcceleratorCore, config)
    jobs = [RtlLayerJob(config, name, by_name[name].x, qts[name]) for name in on_rtl]
    shown = stage_progress(progress, f"{len(jobs)} GEMMs on the RTL ({cluster.describe})")
    rtl_start = time.perf_counter()
    runs = run_tasks(run_rtl_layer, jobs, cluster, progress=shown)
    rtl_seconds = time.perf_counter() - rtl_start
    rtl = dict(zip(on_rtl, runs, strict=True))

    mask = (1 << config.array.out_bits) - 1
    rows_out, exact_all, counters_all, cycles_total = [], True, True, 0
    for call in calls:
        qt = qts[call.name]
        m, k = call.x.shape
        n = qt.shape[0]
        reference = inputs[call.name].astype(np.float64) @ weights[call.name].T
        row = {"layer": call.name, "m": m, "n": n, "k": k,
               "error_vs_fp32": _float_error(call.y, reference), "on_rtl": call.name in rtl}
        if call.name in rtl:
            run = rtl[call.name]
            golden_codes = call.codes.astype(np.int64) & mask
            mismatches = int(np.count_nonzero(run["codes"].astype(np.int64) != golden_codes))
            counters = run["counters"]
            match = counters == job_counters(config, m, n, k)
            cycles = int(counters["cycles"])
            row.update(bit_exact=mismatches == 0, mismatches=mismatches, cycles=cycles,
                       pe_utilization=int(counters["busy_pe_cycles"]) / (rows * cols * cycles),
                       counters_match_model=match, sim_cycles=run["cycles"],
                       sim_seconds=round(run["seconds"], 3))
            exact_all &= mismatches == 0
            counters_all &= match
            cycles_total += cycles
        rows_out.append(row)

    rtl_equal: bool | None = None
    if len(rtl) == len(calls) and exact_all:
        progress("forward again with every Linear returning the RTL's outputs")
        rtl_embedding = _rtl_forward(net, batch, calls, rtl, qts, config, inputs)
        rtl_equal = bool(torch.equal(rtl_embedding, golden_embedding))
        end_to_end = ("every GEMM on the RTL; embeddings " +
                      ("equal" if rtl_equal else "DIFFER from") + " the golden datapath's")
    elif len(rtl) < len(calls):
        end_to_end = (f"not run: {len(calls) - len(rtl)} of {len(calls)} GEMMs were golden "
                      "only (rtl_layers)")
    else:
        end_to_end = "not run: a GEMM was not bit-exact, so later layers' inputs would differ"
    cosine = torch.nn.functional.cosine_similarity(golden_embedding.double(),
                                                   fp32_embedding.double(), dim=1)
    return ModelVerifyResult(
        model=model, sentences=sentences, tokens=tokens, scheme=scheme,
        group_size=config.group_size, array=f"{rows}x{cols}", lanes=lanes, act=act, out=out,
        core={"max_m": config.max_m, "max_n": config.max_n, "max_k": config.max_k,
              "formats": list(config.formats), "pe": config.pe_kind},
        cluster=cluster.describe, layers=rows_out, layers_total=len(calls),
        layers_on_rtl=len(rtl), all_bit_exact=exact_all, counters_match_model=counters_all,
        embedding_cosine_vs_fp32=[float(c) for c in cosine],
        rtl_embeddings_equal_golden=rtl_equal, rtl_end_to_end=end_to_end,
        cycles_total=cycles_total, verilator_build_s=round(core_model.build_seconds, 1),
        seconds={"golden": round(golden_seconds, 1), "rtl": round(rtl_seconds, 1),
                 "total": round(time.perf_counter() - start, 1)})


def _rtl_forward(net, batch, calls, rtl, qts, config, inputs):
    """The forward pass with each Linear returning the RTL's output codes (host factors
    applied), refusing any input that is not bit-identical to the recorded one."""
    from bitmod.golden import gemm as ggemm
    from bitmod.models import minilm
    from bitmod.models.eval import swap_linears

    by_name = {call.name: call for call in calls}

    def backend(name, x):
        if not np.array_equal(x.numpy(), inputs[name]):
            raise AssertionError(f"layer {name}: input differs from the golden run's")
        return ggemm.output_values(rtl[name]["codes"], qts[name], config.array,
                                   by_name[name].act_scale)

    with swap_linears(net, backend):
        return minilm.minilm_embed_batch(net, batch)

"""The Python API under the ``bitmod`` command line: one function per flow, typed results.

Every ``bitmod`` command is a thin wrapper around a function here, so a notebook or another
tool runs exactly what the command line runs::

    import bitmod

    q = bitmod.quantize(layer="encoder.layer.0.attention.self.query", scheme="bitmod4")
    report = bitmod.verify(random=(16, 64, 128), array=(2, 2), scheme="int4")
    assert report.bit_exact
    print(report.to_json())

Each function validates its arguments before any slow work and raises ``ValueError`` (or
``FileNotFoundError``) with one line naming the problem; each returns a dataclass whose
:meth:`~Result.to_json` is strict JSON (NaN and infinities become ``null``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "QuantizeResult",
    "Result",
    "RunResult",
    "SynthResult",
    "VerifyResult",
    "build",
    "dumps_strict",
    "quantize",
    "run",
    "strict_json",
    "synth",
    "verify",
]

# "the quick brown fox jumps over the lazy dog ." in MiniLM's (BERT uncased) WordPiece vocabulary,
# between [CLS] (101) and [SEP] (102), padded with [PAD] (0) to 16 tokens.
DEFAULT_SENTENCE = "the quick brown fox jumps over the lazy dog ."
DEFAULT_LAYER = "encoder.layer.0.attention.self.query"
DEFAULT_TOKENS = 16
TARGETS = ("core", "array")
ENGINES = ("harness", "cocotb")
OUT_FORMATS = ("fp32", "fp16")

Progress = Callable[[str], None]


def _quiet(*_stage_and_detail: str) -> None:
    pass


def strict_json(value):
    """``value`` with NumPy scalars and arrays made plain and NaN/Inf replaced by ``None``, so
    that ``json.dumps`` writes strict JSON (RFC 8259 has no NaN or Infinity; Python's default
    ``json.dumps`` would write them as bare words other parsers refuse)."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def dumps_strict(value, indent: int | None = 1) -> str:
    """``value`` as strict JSON text (:func:`strict_json`: NaN/Inf become ``null``); every
    ``--json`` output of the command line goes through here."""
    return json.dumps(strict_json(value), indent=indent, allow_nan=False)


@dataclass
class Result:
    """Base of the results: :meth:`to_dict` (JSON-ready) and :meth:`to_json` (strict)."""

    def to_dict(self) -> dict:
        return strict_json({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                            if f.repr})

    def to_json(self, indent: int | None = 1) -> str:
        return dumps_strict(self.to_dict(), indent)


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------

_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def _load_npy(path, what: str) -> np.ndarray:
    """The array of a ``.npy`` file; one ``ValueError`` line saying what the file is instead
    (empty, an ``.npz`` archive, not NumPy at all, Python objects, truncated)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    with open(path, "rb") as file:
        head = file.read(6)
        if not head:
            raise ValueError(f"{path}: the file is empty")
        if head.startswith(b"PK\x03\x04"):
            raise ValueError(f"{path}: an .npz archive, not a single .npy array (save one "
                             "array with numpy.save)")
        if head != b"\x93NUMPY":
            raise ValueError(f"{path}: not a .npy file (no NumPy header; save the {what} "
                             "with numpy.save)")
        file.seek(0)
        try:
            reader = _NPY_HEADERS.get(np.lib.format.read_magic(file))
            dtype = None if reader is None else reader(file)[2]
        except ValueError as error:
            raise ValueError(f"{path}: damaged .npy header ({error})") from None
    if dtype is not None and dtype.hasobject:
        raise ValueError(f"{path}: holds Python objects (dtype {dtype}), not numbers")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: truncated or damaged .npy file ({error})") from None


def _real_matrix(array, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be a real (integer or float) array, not {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D, not shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{what} is empty (shape {array.shape})")
    return array


def minilm_layer(name: str) -> np.ndarray:
    """The weight ``[out, in]`` of MiniLM-L6's Linear layer ``name`` (float32)."""
    from bitmod.models import minilm

    layers = minilm.minilm_linear_layers()
    if name not in layers:
        raise ValueError(f"unknown layer {name!r}; `bitmod quantize --list-layers` lists the "
                         f"{len(layers)} MiniLM layers")
    return layers[name]


def sentence_token_ids(sentence: str, length: int) -> np.ndarray:
    """WordPiece ids of a lower-case sentence of whole-vocabulary words, [CLS] ... [SEP] + pad."""
    from bitmod.models.minilm import minilm_path

    vocab = {}
    with open(minilm_path() / "vocab.txt", encoding="utf-8") as file:
        for index, word in enumerate(file):
            vocab[word.rstrip("\n")] = index
    ids = [vocab["[CLS]"]]
    for word in sentence.lower().split():
        if word not in vocab:
            raise ValueError(f"word {word!r} is not in the MiniLM vocabulary")
        ids.append(vocab[word])
    ids.append(vocab["[SEP]"])
    if len(ids) > length:
        raise ValueError(f"the sentence needs {len(ids)} tokens, more than {length}")
    return np.array(ids + [vocab["[PAD]"]] * (length - len(ids)), dtype=np.int64)


# --------------------------------------------------------------------------------------------
# quantize
# --------------------------------------------------------------------------------------------

@dataclass
class QuantizeResult(Result):
    """What :func:`quantize` measured, and the quantized tensor (``tensor``, not in JSON)."""

    source: str
    shape: tuple[int, int]
    scheme: str
    description: str
    group_size: int
    n_groups: int
    scale_format: str
    mse: float
    relative_rms: float
    selectors: list[dict] | None  # per datatype: name, groups, share, mean group MSE
    saved: str | None
    clamped_groups: dict  # golden.quantize.clamped_groups: below, above, groups
    tensor: object = field(repr=False, default=None)

    @property
    def warning(self) -> str | None:
        """One line when group scales were clamped (:func:`clamp_warning`), else ``None``."""
        return clamp_warning(self.clamped_groups, self.relative_rms)


def clamp_warning(clamped: dict, relative_rms: float | None) -> str | None:
    """The warning for groups whose scale the quantizer clamped to [1e-5, 1e4]
    (:func:`golden.quantize.clamped_groups`), or ``None`` when there are none.

    The clamp is the quantizer's rule, so such weights are quantized, not refused (a model
    can have a few groups of tiny weights); but weights around 1e-12 or 1e30 lose everything,
    and the error figure alone does not say why.
    """
    from bitmod.golden.quantize import SCALE_MAX, SCALE_MIN

    total = clamped["groups"]
    parts = []
    if clamped["below"]:
        parts.append(f"{clamped['below']} of {total} groups need a scale below {SCALE_MIN:g} "
                     "(their weights quantize coarsely or to zero)")
    if clamped["above"]:
        parts.append(f"{clamped['above']} of {total} groups need a scale above {SCALE_MAX:g} "
                     "(their weights saturate)")
    if not parts:
        return None
    error = ("" if relative_rms is None or not math.isfinite(relative_rms)
             else f"; relative RMS error {relative_rms:.2%}")
    return (f"group scales are clamped to [{SCALE_MIN:g}, {SCALE_MAX:g}]: {' and '.join(parts)}"
            f"{error}; rescale the weights")


def quantize(weights=None, *, layer: str | None = None, scheme: str = "bitmod4",
             group_size: int | None = None, scale_format: str | None = None,
             output: str | None = None) -> QuantizeResult:
    """Group-quantize a weight matrix (an array, a ``.npy`` path, or a MiniLM ``layer``).

    Reports the weight MSE ``mean((W_deq - W)^2)``, the relative RMS error and, for BitMoD /
    ANT schemes, how many groups chose each datatype; ``output`` saves the
    :class:`golden.quantize.QuantizedTensor` (``.npz``).
    """
    from bitmod.golden.quantize import clamped_groups, get_scheme, group_mse
    from bitmod.golden.quantize import quantize as quantize_tensor

    spec = get_scheme(scheme)  # validate the cheap things before loading anything
    if (weights is None) == (layer is None):
        raise ValueError("give either weights (an array or a .npy file) or a layer, not "
                         + ("both" if layer is not None else "neither"))
    if output is not None and not str(output).strip():
        raise ValueError("the output file name is empty")
    if layer is not None:
        weight, source = minilm_layer(layer), f"minilm:{layer}"
    elif isinstance(weights, (str, Path)):
        weight, source = _load_npy(weights, "input"), str(weights)
    else:
        weight, source = np.asarray(weights), "array"
    qt = quantize_tensor(weight, spec.name, group_size, scale_format)
    w64 = np.asarray(weight, dtype=np.float64)
    deq = qt.dequantize()
    err2 = float(np.sum(np.square(deq - w64)))
    norm2 = float(np.sum(np.square(w64)))
    selectors = None
    if qt.selectors is not None:
        per_group = group_mse(w64, deq, qt.group_size)
        total = qt.selectors.size
        selectors = []
        for index, (name, count) in enumerate(qt.selector_histogram().items()):
            chosen = qt.selectors == index
            selectors.append({"selector": index, "format": name, "groups": int(count),
                              "share": count / total,
                              "mean_group_mse": float(per_group[chosen].mean()) if count
                              else 0.0})
    if output is not None:
        qt.save(output)
    return QuantizeResult(
        source=source, shape=qt.shape, scheme=qt.scheme, description=spec.description,
        group_size=qt.group_size, n_groups=qt.n_groups, scale_format=qt.scale_format,
        mse=err2 / w64.size, relative_rms=math.sqrt(err2 / norm2) if norm2 else float("nan"),
        selectors=selectors, saved=None if output is None else str(output),
        clamped_groups=clamped_groups(w64, qt), tensor=qt)


# --------------------------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------------------------

@dataclass
class VerifyResult(Result):
    """What :func:`verify` ran and measured (the fields of ``bitmod verify --json``)."""

    problem: str
    m: int
    n: int
    k: int
    scheme: str
    group_size: int
    array: str
    lanes: int
    pe: str
    act: str
    out: str
    out_bits: int
    engine: str
    target: str
    bit_exact: bool
    outputs_checked: int
    mismatches: int
    first_mismatches: list[dict]
    error_vs_fp32: dict
    infinite_outputs: int
    quantization_only_error: dict
    cycles: int
    pe_utilization: float
    clock_mhz: float
    gmacs_at_clock: float
    macs: int
    verilator_build_s: float
    counters: dict | None = None
    counters_match_model: bool | None = None
    commands: int | None = None
    tiles: int | None = None
    weight_steps: int | None = None
    clamped_groups: dict | None = None  # golden.quantize.clamped_groups of the weights
    # Asymmetric schemes: "corrected" (the PEs' per-group zero-point correction, MixPE) or
    # "folded" (the zero point folded into int<B+1> codes); None without zero points.
    zero_points: str | None = None
    # The formats the core was built with (golden.gemm.scheme_formats): the scheme's own, or
    # e.g. ["int6"] for BitMoD's mixture on int PEs (its integer values).
    weight_formats: list[str] | None = None

    @property
    def warning(self) -> str | None:
        """One line when group scales were clamped (:func:`clamp_warning`), else ``None``."""
        if self.clamped_groups is None:
            return None
        return clamp_warning(self.clamped_groups,
                             self.quantization_only_error.get("relative_rms"))

    @property
    def ok(self) -> bool:
        """Bit-exact, and (core target) the counters equal the golden cycle model."""
        return self.bit_exact and self.counters_match_model is not False


def _float_error(y, reference) -> dict:
    y = np.asarray(y, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    err = y - ref
    norm = np.linalg.norm(ref)
    denom = np.linalg.norm(y) * norm
    return {
        "relative_rms": float(np.linalg.norm(err) / norm) if norm else float("nan"),
        "max_abs": float(np.max(np.abs(err))) if err.size else 0.0,
        "cosine": float(np.sum(y * ref) / denom) if denom else float("nan"),
    }


FP32_MAX = float(np.finfo(np.float32).max)


def _as_fp32(array, what: str) -> np.ndarray:
    """``array`` as float32 if every value is finite and within the FP32 range, else one
    ``ValueError`` line saying which (a float64 1e300 is finite but not an FP32 value)."""
    a = np.asarray(array, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        raise ValueError(f"{what} contain {bad} NaN/Inf values")
    big = np.abs(a) > FP32_MAX
    if big.any():
        raise ValueError(f"{what} exceed the FP32 range (|x| <= {FP32_MAX:.7g}): "
                         f"{int(big.sum())} values, e.g. {a[big].flat[0]:g}")
    return a.astype(np.float32)


def _random_shape(random, limit: int | None = None) -> tuple[int, int, int]:
    """``(M, N, K)`` of a random problem, each in ``1..limit``, validated before anything is
    allocated."""
    from bitmod.golden.checks import check_int

    values = tuple(random)
    if len(values) != 3:
        raise ValueError(f"random takes three sizes M N K, not {values!r}")
    return tuple(check_int(f"random {label}", v, 1, limit)
                 for label, v in zip("MNK", values, strict=True))


def _verify_problem(layer, random, weights, activations, tokens, rng):
    """(name, weights W [N, K] float32, activations x [M, K] float32)."""
    from bitmod.golden.core import MAX_DIM

    given = [v is not None for v in (layer, random, weights)]
    if sum(given) > 1:
        raise ValueError("give at most one of layer, random and weights")
    if activations is not None and weights is None:
        raise ValueError("activations go with weights; layer and random make their own")
    if random is not None:
        m, n, k = _random_shape(random, MAX_DIM)  # the core's buffer bound, before allocating
        w = rng.standard_normal((n, k)).astype(np.float32) / np.sqrt(k)
        x = rng.standard_normal((m, k)).astype(np.float32)
        return f"random {m}x{n}x{k}", w, x
    if weights is not None:
        name = str(weights) if isinstance(weights, (str, Path)) else "array"
        w = _real_matrix(_load_npy(weights, "weights") if isinstance(weights, (str, Path))
                         else weights, "weights [out, in]")
        if activations is not None:
            x_name = str(activations) if isinstance(activations, (str, Path)) else "array"
            x = _real_matrix(_load_npy(activations, "activations")
                             if isinstance(activations, (str, Path)) else activations,
                             "activations [M, in]")
            if x.shape[1] != w.shape[1]:
                raise ValueError(f"activations must be [M, {w.shape[1]}], not {x.shape}")
            x = _as_fp32(x, f"{x_name}: activations")
        else:
            x = rng.standard_normal((tokens, w.shape[1])).astype(np.float32)
        return name, _as_fp32(w, f"{name}: weights"), x
    from bitmod.models import minilm

    name = layer or DEFAULT_LAYER
    w = minilm_layer(name).astype(np.float32)
    if w.shape[1] == 384:
        x = minilm.minilm_embeddings(sentence_token_ids(DEFAULT_SENTENCE, tokens))
    else:
        x = rng.standard_normal((tokens, w.shape[1])).astype(np.float32)
    return f"minilm:{name}", w, x


def verify(*, layer: str | None = None, random: tuple[int, int, int] | None = None,
           weights=None, activations=None, scheme: str = "bitmod4",
           group_size: int | None = None, array: tuple[int, int] = (4, 4), lanes: int = 4,
           pe: str = "bitserial", act: str = "fp16", out: str = "fp32", mant_width: int = 12,
           act_exp_bits: int = 3,
           tokens: int = DEFAULT_TOKENS, target: str = "core", engine: str = "harness",
           clock_mhz: float = 100.0, seed: int = 0, waves: str | None = None,
           progress: Progress = _quiet) -> VerifyResult:
    """Quantize a layer, run its GEMM on the RTL under Verilator and check it against golden.

    The problem is MiniLM-L6's ``layer`` (default: layer 0's query projection with the
    model's own input embeddings of a fixed sentence), a seeded Gaussian ``random=(M, N, K)``
    GEMM, or ``weights`` ``[N, K]`` (array or ``.npy``) with optional ``activations``
    ``[M, K]`` (default Gaussian, ``tokens`` rows). ``target="core"`` runs the whole
    accelerator core (buffers loaded by commands, controller, counters checked against the
    golden cycle model); ``"array"`` streams the tiles straight into the PE array.
    ``engine`` is the simulator's driver: the compiled transaction harness (default) or cocotb
    (:mod:`sim.harness`; identical results, cycles and stamps). ``waves`` names a VCD file the
    harness writes (the model is then built with tracing).
    """
    from bitmod.golden import bfp
    from bitmod.golden import gemm as ggemm
    from bitmod.golden.checks import check_choice, check_int, check_number
    from bitmod.golden.core import CoreConfig, job_counters
    from bitmod.golden.quantize import clamped_groups, get_scheme

    # Validate what needs no data before any work.
    rows, cols = (check_int(f"array {label}", v, 1, ggemm.MAX_DIM)
                  for label, v in zip(("rows", "columns"), array, strict=True))
    check_choice("act", act, bfp.ACT_FORMATS)
    check_choice("out", out, OUT_FORMATS)
    check_choice("target", target, TARGETS)
    check_choice("engine", engine, ENGINES)
    if waves is not None and engine != "harness":
        raise ValueError("waveforms come from the harness engine; with cocotb set "
                         "BITMOD_WAVES=1")
    if waves is not None and not str(waves).strip():
        raise ValueError("the waveform file name is empty")
    tokens = check_int("tokens", tokens, 1)
    clock_mhz = check_number("clock_mhz", clock_mhz, positive=True)
    # Asymmetric schemes on PEs that take zero points run MixPE's per-group correction (the
    # codes offset, the zero points in the group metadata); other PEs multiply by the
    # levels with the zero point folded in (golden.gemm.core_tensor).
    formats, zero_points = ggemm.core_weights(scheme, pe)
    rng = np.random.default_rng(seed)
    progress("loading the layer")
    name, w, x = _verify_problem(layer, random, weights, activations, tokens, rng)
    if not np.isfinite(w).all():
        raise ValueError(f"{name}: weights contain {int((~np.isfinite(w)).sum())} NaN/Inf "
                         "values")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: activations contain NaN/Inf values")
    m, k = x.shape
    n = w.shape[0]
    progress(f"quantizing {n}x{k} weights with {scheme}")
    qt = ggemm.quantize_for_core(w, scheme, group_size, zero_points, pe)
    try:
        cfg = CoreConfig(rows=rows, cols=cols, lanes=lanes, group_size=qt.group_size,
                         formats=formats, act_format=act, mant_width=mant_width,
                         act_exp_bits=act_exp_bits, out_format=out, max_m=m, max_n=n,
                         max_k=k, pe_kind=pe, zero_points=zero_points)
    except ValueError as error:  # the message names the parameter; say what was asked
        raise ValueError(f"no core for {act} activations with scheme {scheme} (group size "
                         f"{qt.group_size}), {lanes} lanes, {pe} PEs, {m}x{n}x{k}: {error}"
                         ) from None
    array_cfg = cfg.array
    ggemm.check_weights(qt, array_cfg)
    if act == "int8":
        xq, act_scale = ggemm.quantize_activations_int8(x)
    else:
        xq, act_scale = x.astype(np.float16 if act == "fp16" else np.float32), None
        if act == "fp16" and not np.isfinite(xq).all():
            raise ValueError(f"{name}: activations overflow FP16")
    mask = (1 << array_cfg.out_bits) - 1  # codes compare as unsigned out_bits-wide integers
    progress("golden model")
    result = ggemm.gemm(xq, qt, array_cfg, act_scale)
    extra: dict = {}
    trace = None if waves is None else Path(waves).resolve()
    if target == "core":
        from bitmod.hdl.array import AcceleratorCore
        from bitmod.sim.core_driver import run_core_gemm
        from bitmod.sim.verilator import get_model

        progress(f"Verilator model of the core with a {rows}x{cols} array (built once, then "
                 "cached)")
        model = get_model(AcceleratorCore, cfg, engine=engine,
                          waves=True if trace is not None else None)
        progress("loading the buffers, running the job, reading the outputs")
        run_result = run_core_gemm(cfg, xq, qt, engine=engine, waves=trace)
        rtl = run_result["codes"].astype(np.int64).reshape(-1)
        golden_codes = (result.codes & mask).astype(np.int64).reshape(-1)
        positions = [(i // n, i % n) for i in range(m * n)]
        counters = run_result["counters"]
        cycles = int(counters["cycles"])
        busy = int(counters["busy_pe_cycles"])
        extra = {"counters": counters,
                 "counters_match_model": counters == job_counters(cfg, m, n, k),
                 "commands": run_result["commands"],
                 "tiles": ggemm.gemm_cycles(m, n, k, array_cfg)["tiles"]}
    else:
        from bitmod.hdl.array import SystolicArray
        from bitmod.sim.array_driver import expected_codes, run_array_gemm
        from bitmod.sim.verilator import get_model

        progress(f"Verilator model of a {rows}x{cols} array (built once, then cached)")
        model = get_model(SystolicArray, array_cfg, engine=engine,
                          waves=True if trace is not None else None)
        stats: dict = {}
        acts = ggemm.act_mantissas(xq, array_cfg)
        outs, tiles, n_steps = run_array_gemm(array_cfg, acts, qt, stats=stats,
                                              progress=progress, engine=engine, waves=trace)
        rtl = np.array(outs, dtype=np.int64)
        golden_codes = np.array(expected_codes(array_cfg, result, tiles), dtype=np.int64) & mask
        positions = [(tm + r, tn + c) for tm, tn in tiles for r in range(rows)
                     for c in range(cols)]
        cycles = int(stats["output_cycles"][-1]) + 1
        busy = ggemm.gemm_cycles(m, n, k, array_cfg)["busy_pe_cycles"]
        extra = {"weight_steps": n_steps, "tiles": len(tiles)}
    mismatches = np.nonzero(rtl != golden_codes)[0]
    reference = x.astype(np.float32) @ w.astype(np.float32).T
    macs = m * n * k
    return VerifyResult(
        problem=name, m=m, n=n, k=k, scheme=scheme, group_size=qt.group_size,
        array=f"{rows}x{cols}", lanes=array_cfg.lanes, pe=array_cfg.pe_kind, act=act, out=out,
        out_bits=array_cfg.out_bits, engine=engine, target=target,
        bit_exact=not len(mismatches),
        outputs_checked=len(rtl), mismatches=len(mismatches),
        first_mismatches=[{"m": positions[i][0], "n": positions[i][1], "rtl": int(rtl[i]),
                           "golden": int(golden_codes[i])} for i in mismatches[:5]],
        error_vs_fp32=_float_error(result.y, reference),
        # An FP16 drain rounds values in code units (before the channel scale), which wide
        # weight codes (int8) can push past 65504: those outputs are Inf.
        infinite_outputs=int(np.isinf(result.y).sum()),
        quantization_only_error=_float_error(x.astype(np.float64) @ qt.dequantize().T,
                                             reference),
        zero_points=(("corrected" if zero_points else "folded")
                     if get_scheme(scheme).kind == "asym" else None),
        weight_formats=list(array_cfg.formats),
        cycles=cycles, pe_utilization=busy / (rows * cols * cycles), clock_mhz=clock_mhz,
        gmacs_at_clock=macs / cycles * clock_mhz / 1000, macs=macs,
        verilator_build_s=round(model.build_seconds, 1),
        clamped_groups=clamped_groups(w, qt), **extra)


# --------------------------------------------------------------------------------------------
# synth
# --------------------------------------------------------------------------------------------

@dataclass
class SynthResult(Result):
    """Out-of-context resources and Fmax of one component (wrapper cost subtracted)."""

    component: str
    params: dict
    scheme: str | None
    device: str
    lut4: int
    ff: int
    carry: int
    dsp: int
    bram: int
    fmax_mhz: float | None
    target_mhz: float
    in_bits: int
    out_bits: int
    total_with_wrapper: dict
    seconds: float
    workdir: str


def synth(component: str, params: dict | None = None, *, scheme: str | None = None,
          device: str = "ecp5-85f", clock_mhz: float = 100.0, seed: int = 1,
          router: str | None = None, timing_weight: int | None = None) -> SynthResult:
    """Synthesise, place and route one registered component out of context
    (:mod:`fpga.ooc`: registered inputs and outputs on four pins) and report its own LUT4s,
    flip-flops, DSPs, BRAMs and Fmax (the wrapper's exactly known cost subtracted)."""
    import hashlib

    from bitmod.fpga.devices import get_device
    from bitmod.fpga.ooc import OOCWrapper, port_widths, wrapper_cost
    from bitmod.fpga.synth import ROUTERS, check_timing_weight, run_flow
    from bitmod.golden.checks import check_choice, check_int, check_number
    from bitmod.hdl.registry import build_component, resolve_params
    from bitmod.toolchain import build_root, export_verilog

    target = get_device(device)
    clock_mhz = check_number("clock_mhz", clock_mhz, positive=True)
    seed = check_int("seed", seed, 0)
    if router is not None:
        check_choice("router", router, ROUTERS)
    if timing_weight is not None:
        timing_weight = check_timing_weight(timing_weight)
    params = resolve_params(component, params, scheme)
    unit = build_component(component, params)
    in_bits, out_bits = port_widths(unit)
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    # The wrapper spends a flip-flop per port bit (LUT4s and flip-flops are one per logic
    # cell on both families): a component wider than that cannot fit, whatever it holds.
    wrapper_ffs = wrapper_cost(in_bits, out_bits)["ff"]
    if wrapper_ffs > target.luts:
        raise ValueError(f"{component} ({shown}) has {in_bits} input and {out_bits} output "
                         f"bits: its out-of-context wrapper alone needs {wrapper_ffs} "
                         f"flip-flops, more than the {target.luts} of {target.name}")
    try:
        wrapper = OOCWrapper(unit)
    except ValueError as error:
        raise ValueError(f"{component} ({shown}) is too wide to synthesise: {error}") from None
    verilog = export_verilog(wrapper, platform=target)  # the part's primitives, as on a board
    key = hashlib.sha256(f"{component}|{json.dumps(params, sort_keys=True)}|{scheme}|"
                         f"{verilog}|{router}|{timing_weight}".encode()).hexdigest()[:12]
    workdir = build_root() / "synth" / f"{component}-{target.name}-{key}"
    report = run_flow(verilog, target, workdir, target_mhz=clock_mhz, seed=seed, router=router,
                      timing_weight=timing_weight)
    overhead = wrapper_cost(in_bits, out_bits)
    return SynthResult(
        component=component, params=params, scheme=scheme, device=target.name,
        lut4=report.lut4 - overhead["lut4"], ff=report.ff - overhead["ff"],
        carry=report.carry, dsp=report.dsp, bram=report.bram, fmax_mhz=report.fmax_mhz,
        target_mhz=clock_mhz, in_bits=in_bits, out_bits=out_bits,
        total_with_wrapper={"lut4": report.lut4, "ff": report.ff},
        seconds=round(report.seconds, 1), workdir=str(workdir))


# --------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------

def build(board: str, **options):
    """A bitstream for ``board`` (:class:`fpga.build.BuildConfig` fields as keyword arguments:
    ``scheme``, ``rows``, ``cols``, ``lanes``, ``clock_mhz``, ``act``, ...), with its
    resources, Fmax and whether timing is met: an :class:`fpga.build.BuildResult`
    (``.to_json()``). Raises ``ValueError`` for bad options and ``fpga.build.BuildError`` when
    a tool fails or the design does not fit."""
    from bitmod.fpga.build import BuildConfig
    from bitmod.fpga.build import build as build_bitstream

    return build_bitstream(BuildConfig(board, **options))


def __getattr__(name: str):
    if name == "BuildResult":  # the fpga layer's result type, imported when asked
        from bitmod.fpga.build import BuildResult

        return BuildResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------

@dataclass
class RunResult(Result):
    """A GEMM run on a board over its UART link, compared with golden."""

    board: str
    port: str
    m: int
    n: int
    k: int
    scheme: str
    bit_exact: bool
    mismatches: int
    counters: dict
    counters_match_model: bool


def run(port: str, board: str, *, weights=None, random: tuple[int, int, int] = (4, 8, 32),
        tokens: int = 4, baud: int = 115_200, timeout: float = 2.0, seed: int = 0,
        **build_options) -> RunResult:
    """Run a quantized GEMM on a board that carries a ``bitmod build`` bitstream.

    ``build_options`` are the :class:`fpga.build.BuildConfig` fields the bitstream was built
    with (``scheme``, ``rows``, ``cols``, ``lanes``, ``act``, ...): they give the core the host
    addresses. The weights (``random=(M, N, K)`` Gaussian, or ``weights`` ``[N, K]`` with
    ``tokens`` Gaussian activation rows) are quantized with the build's scheme, loaded, run,
    read back and compared with golden, code for code.
    """
    from bitmod.fpga.build import BuildConfig
    from bitmod.golden import gemm as ggemm
    from bitmod.golden.checks import check_int
    from bitmod.host.accel import Accelerator, compare_with_golden
    from bitmod.host.link import HostLink, SerialTransport

    config = BuildConfig(board, baud=baud, **build_options)
    core = config.core
    rng = np.random.default_rng(seed)

    def check_fits(m: int, n: int, k: int) -> None:
        if m > core.max_m or n > core.max_n or k > core.max_k:
            raise ValueError(f"GEMM {m}x{n}x{k} exceeds the board's buffers "
                             f"({core.max_m}x{core.max_n}x{core.max_k})")

    if weights is not None:
        m = check_int("tokens", tokens, 1)
        w = _real_matrix(_load_npy(weights, "weights") if isinstance(weights, (str, Path))
                         else weights, "weights [out, in]")
        check_fits(m, *w.shape)
        if not np.isfinite(w).all():
            raise ValueError("weights contain NaN/Inf values")
    else:
        m, n, k = _random_shape(random)
        check_fits(m, n, k)  # before anything is allocated
        w = rng.standard_normal((n, k)) / np.sqrt(k)
    n, k = w.shape
    x = rng.standard_normal((m, k))
    qt = ggemm.quantize_for_core(w, config.scheme, core.group_size, core.zero_points,
                                 core.pe_kind)
    if core.act_format == "int8":
        xq, _ = ggemm.quantize_activations_int8(x)
    else:
        xq = x.astype(np.float16)
    link = HostLink(SerialTransport(port, baud), timeout=timeout)
    result = Accelerator(link, core).gemm(xq, qt)
    check = compare_with_golden(core, xq, qt, result)
    return RunResult(board=config.board, port=port, m=int(xq.shape[0]), n=int(qt.shape[0]),
                     k=int(qt.shape[1]), scheme=config.scheme, bit_exact=bool(check["exact"]),
                     mismatches=int(check["mismatches"]),
                     counters={k: int(v) for k, v in result["counters"].items()},
                     counters_match_model=bool(check["counters_exact"]))

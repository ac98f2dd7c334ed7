"""``bitmod verify``: run a quantized PyTorch layer through the RTL and check it against golden.

The main job. By default it takes MiniLM-L6's layer-0 query projection (384 x 384) with the
model's own input embeddings for a fixed 16-token sentence as activations, quantizes the weights
with ``bitmod4`` (INT8 second-level group scales: the core multiplies by integer scale codes),
runs the GEMM ``Y = X Wᵀ`` through the Verilator model of the systolic array and reports:

* bit-exactness: the RTL's output codes (FP32, or FP16 with ``--out fp16``; compared as
  unsigned integers of the format's width) against ``golden/gemm.py`` (all of them, first
  mismatches);
* error against the FP32 PyTorch output ``x @ W.T`` (relative RMS, max |error|, cosine);
* cycles (measured), PE utilization and throughput at ``--clock``.

The bias of the layer is not part of the core's GEMM (the host adds it) and is left out of both
sides of the error figures.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np

from bitmod.tools.cli import CLIError, parse_array

# "the quick brown fox jumps over the lazy dog ." in MiniLM's (BERT uncased) WordPiece vocabulary,
# between [CLS] (101) and [SEP] (102), padded with [PAD] (0) to 16 tokens.
DEFAULT_SENTENCE = "the quick brown fox jumps over the lazy dog ."
DEFAULT_LAYER = "encoder.layer.0.attention.self.query"
DEFAULT_TOKENS = 16


class Progress:
    """Status lines on stderr with a live elapsed-time counter while a step runs."""

    def __init__(self, enabled: bool):
        self._enabled = enabled
        self._stop = threading.Event()
        self._thread = None
        self._label = ""
        self._started = 0.0

    def step(self, label: str) -> None:
        self.done()
        self._label = label
        self._started = time.monotonic()
        if not self._enabled:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        interactive = sys.stderr.isatty()
        spinner = "|/-\\"
        i = 0
        while not self._stop.wait(0.25 if interactive else 15.0):
            elapsed = time.monotonic() - self._started
            if interactive:
                sys.stderr.write(f"\r{spinner[i % 4]} {self._label} [{elapsed:5.0f} s]")
                sys.stderr.flush()
                i += 1
            else:
                print(f"  ... {self._label} [{elapsed:.0f} s]", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            elapsed = time.monotonic() - self._started
            end = "\r" if sys.stderr.isatty() else ""
            print(f"{end}* {self._label} [{elapsed:.1f} s]", file=sys.stderr, flush=True)


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


def _load_problem(args, rng):
    """(name, weights W [N, K] float32, activations x [M, K] float32)."""
    from bitmod.models import minilm as models

    if args.random is not None:
        m, n, k = args.random
        w = rng.standard_normal((n, k)).astype(np.float32) / np.sqrt(k)
        x = rng.standard_normal((m, k)).astype(np.float32)
        return f"random {m}x{n}x{k}", w, x
    if args.npy is not None:
        w = np.load(args.npy, allow_pickle=False)
        if w.ndim != 2:
            raise ValueError(f"{args.npy}: weights must be 2-D [out, in], got shape {w.shape}")
        if args.x_npy is not None:
            x = np.load(args.x_npy, allow_pickle=False)
            if x.ndim != 2 or x.shape[1] != w.shape[1]:
                raise ValueError(f"{args.x_npy}: activations must be [M, {w.shape[1]}], got "
                                 f"shape {x.shape}")
        else:
            x = rng.standard_normal((args.tokens, w.shape[1]))
        return args.npy, w.astype(np.float32), x.astype(np.float32)
    layers = models.minilm_linear_layers()
    name = args.layer or DEFAULT_LAYER
    if name not in layers:
        raise CLIError(f"unknown layer {name!r}; `bitmod quantize --list-layers` lists the "
                       f"{len(layers)} MiniLM layers")
    w = layers[name].astype(np.float32)
    if w.shape[1] == 384:
        x = models.minilm_embeddings(sentence_token_ids(DEFAULT_SENTENCE, args.tokens))
    else:
        x = rng.standard_normal((args.tokens, w.shape[1])).astype(np.float32)
    return f"minilm:{name}", w, x


def _float_error(y, reference) -> dict:
    y = y.astype(np.float64)
    ref = reference.astype(np.float64)
    err = y - ref
    norm = np.linalg.norm(ref)
    denom = np.linalg.norm(y) * norm
    return {
        "relative_rms": float(np.linalg.norm(err) / norm) if norm else float("nan"),
        "max_abs": float(np.max(np.abs(err))) if err.size else 0.0,
        "cosine": float(np.sum(y * ref) / denom) if denom else float("nan"),
    }


def verify(args) -> dict:
    """Run the whole flow; return the report dict (see the module docstring)."""
    from bitmod.golden import gemm as ggemm
    from bitmod.golden.core import job_counters
    from bitmod.golden.quantize import get_scheme, quantize
    from bitmod.hdl.array import AcceleratorCore, SystolicArray
    from bitmod.sim.array_driver import expected_codes, run_array_gemm
    from bitmod.sim.core_driver import core_map, run_core_gemm
    from bitmod.sim.verilator import get_model

    # Validate what needs no data before printing anything.
    rows, cols = parse_array(args.array)
    scheme = get_scheme(args.scheme)
    if scheme.kind in ("asym", "mx"):
        what = "asymmetric zero points" if scheme.kind == "asym" else "MX E8M0 block scales"
        raise CLIError(f"scheme {args.scheme!r} uses {what}, which the core does not run; use "
                       "a symmetric scheme such as bitmod4, bitmod3, int4 or int8")
    if args.random is not None and min(args.random) < 1:
        raise CLIError(f"--random takes positive M N K, not {' '.join(map(str, args.random))}")
    progress = Progress(not args.json and not args.quiet)
    rng = np.random.default_rng(args.seed)
    progress.step("loading the layer")
    name, w, x = _load_problem(args, rng)
    if not np.isfinite(w).all():
        raise ValueError(f"{name}: weights contain {int((~np.isfinite(w)).sum())} NaN/Inf "
                         "values")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: activations contain NaN/Inf values")
    progress.step(f"quantizing {w.shape[0]}x{w.shape[1]} weights with {args.scheme}")
    qt = quantize(w, args.scheme, group_size=args.group_size, scale_format="int8")
    params = {"rows": rows, "cols": cols, "lanes": args.lanes, "group_size": qt.group_size,
              "formats": list(qt.formats), "act_format": args.act,
              "max_groups": max(qt.n_groups, 1), "out_format": args.out}
    if args.act != "int8":
        params.update(mant_width=args.mant_width, act_exp_bits=args.act_exp_bits)
    try:
        cfg = ggemm.core_config(**params)
    except ValueError as error:
        raise ValueError(f"scheme {args.scheme!r} cannot run on the core: {error}") from None
    ggemm.check_weights(qt, cfg)
    if args.act == "int8":
        xq, act_scale = ggemm.quantize_activations_int8(x)
    else:
        xq, act_scale = x.astype(np.float16), None
        if not np.isfinite(xq).all():
            raise ValueError(f"{name}: activations overflow FP16")
    mask = (1 << cfg.out_bits) - 1  # codes compare as unsigned out_bits-wide integers
    progress.step("golden model")
    result = ggemm.gemm(xq, qt, cfg, act_scale)
    m, k = x.shape
    n = w.shape[0]
    if args.engine == "core":
        core_params = {key: value for key, value in params.items() if key != "max_groups"}
        core_params.update(max_m=m, max_n=n, max_k=k)
        progress.step(f"Verilator model of the core with a {rows}x{cols} array (built once, "
                      "then cached)")
        model = get_model(AcceleratorCore, core_params)
        progress.step("loading the buffers, running the job, reading the outputs")
        run = run_core_gemm(core_params, xq, qt)
        progress.done()
        rtl = run["codes"].astype(np.int64).reshape(-1)
        golden_codes = (result.codes & mask).astype(np.int64).reshape(-1)
        positions = [(i // n, i % n) for i in range(m * n)]
        counters = run["counters"]
        expected_counters = job_counters(core_map(core_params), m, n, k, fill=model_fill(
            core_params))
        cycles = int(counters["cycles"])
        busy = int(counters["busy_pe_cycles"])
        extra = {"counters": counters, "counters_match_model": counters == expected_counters,
                 "commands": run["commands"], "tiles": ggemm.gemm_cycles(m, n, k, cfg)["tiles"]}
    else:
        progress.step(f"Verilator model of a {rows}x{cols} array (built once, then cached)")
        model = get_model(SystolicArray, params)
        stats = {}
        acts = ggemm.act_mantissas(xq, cfg)
        out, tiles, n_steps = run_array_gemm(params, acts, qt, stats=stats,
                                             progress=progress.step)
        progress.done()
        expected = expected_codes(cfg, result, tiles)
        rtl = np.array(out, dtype=np.int64)
        golden_codes = np.array(expected, dtype=np.int64) & mask
        positions = []
        for tile_m, tile_n in tiles:
            positions += [(tile_m + r, tile_n + c) for r in range(rows) for c in range(cols)]
        cycles = int(stats["output_cycles"][-1]) + 1
        busy = ggemm.gemm_cycles(m, n, k, cfg)["busy_pe_cycles"]
        extra = {"weight_steps": n_steps, "tiles": len(tiles)}
    mismatches = np.nonzero(rtl != golden_codes)[0]
    macs = m * n * k
    reference = x.astype(np.float32) @ w.astype(np.float32).T
    first = [{"m": positions[i][0], "n": positions[i][1], "rtl": int(rtl[i]),
              "golden": int(golden_codes[i])} for i in mismatches[:5]]
    return {
        "problem": name, "m": m, "n": n, "k": k, "scheme": args.scheme,
        "group_size": qt.group_size, "array": f"{rows}x{cols}", "lanes": args.lanes,
        "act": args.act, "out": args.out, "out_bits": cfg.out_bits, "engine": args.engine,
        "bit_exact": not len(mismatches),
        "outputs_checked": len(rtl),
        "mismatches": len(mismatches), "first_mismatches": first,
        "error_vs_fp32": _float_error(result.y, reference),
        # An FP16 drain rounds values in code units (before the channel scale), which wide
        # weight codes (int8) can push past 65504: those outputs are Inf.
        "infinite_outputs": int(np.isinf(result.y).sum()),
        "quantization_only_error": _float_error(
            x.astype(np.float64) @ qt.dequantize().T, reference),
        "cycles": cycles, **extra,
        "pe_utilization": busy / (rows * cols * cycles),
        "clock_mhz": args.clock, "gmacs_at_clock": macs / cycles * args.clock / 1000,
        "macs": macs, "verilator_build_s": round(model.build_seconds, 1),
    }


def _print_report(report: dict) -> None:
    err = report["error_vs_fp32"]
    print(f"layer:        {report['problem']}  (M={report['m']} tokens, N={report['n']}, "
          f"K={report['k']})")
    print(f"weights:      {report['scheme']}, group {report['group_size']}, INT8 group scales")
    print(f"array:        {report['array']} bit-serial PEs x {report['lanes']} lanes, "
          f"{report['act']} activations, {report['out']} outputs")
    verdict = "yes" if report["bit_exact"] else "NO"
    print(f"bit-exact:    {verdict} ({report['outputs_checked'] - report['mismatches']} of "
          f"{report['outputs_checked']} {report['out'].upper()} outputs equal golden)")
    digits = 2 + report["out_bits"] // 4
    for item in report["first_mismatches"]:
        print(f"  mismatch at y[{item['m']}, {item['n']}]: rtl {item['rtl']:#0{digits}x} golden "
              f"{item['golden']:#0{digits}x}")
    print(f"vs FP32:      relative RMS {err['relative_rms']:.4%}, max |err| "
          f"{err['max_abs']:.4g}, cosine {err['cosine']:.6f}")
    if report["infinite_outputs"]:
        print(f"overflow:     {report['infinite_outputs']} outputs are Inf (the drain rounds in "
              f"code units, before the channel scales; try --out fp32)")
    if report["engine"] == "core":
        counters = report["counters"]
        agree = "equal" if report["counters_match_model"] else "DIFFER from"
        print(f"cycles:       {report['cycles']} (core counters: busy PE-cycles "
              f"{counters['busy_pe_cycles']}, stall cycles {counters['stall_cycles']}; "
              f"{agree} the golden cycle model; {report['tiles']} tiles)")
    else:
        print(f"cycles:       {report['cycles']} ({report['tiles']} tiles, "
              f"{report['weight_steps']} weight-steps streamed into the array)")
    print(f"utilization:  {report['pe_utilization']:.1%} of PE-cycles busy")
    print(f"throughput:   {report['gmacs_at_clock']:.3f} GMAC/s at {report['clock_mhz']:g} MHz")


def model_fill(core_params: dict) -> int:
    """The array's first-step-to-first-output latency inside ``AcceleratorCore(**params)``."""
    from bitmod.hdl.array import AcceleratorCore

    core = AcceleratorCore(**core_params)
    core._MustUse__silence = True  # built only to read a property
    return core.fill


def _verify(args) -> int:
    report = verify(args)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_report(report)
    ok = report["bit_exact"] and report.get("counters_match_model", True)
    return 0 if ok else 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="run a quantized layer on the RTL (Verilator) and check it against golden")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--layer", help=f"MiniLM linear layer (default {DEFAULT_LAYER})")
    source.add_argument("--random", nargs=3, type=int, metavar=("M", "N", "K"),
                        help="random Gaussian GEMM instead of a model layer")
    source.add_argument("--npy", help="weights [out, in] from a .npy file")
    parser.add_argument("--x-npy", help="activations [M, in] for --npy (default: Gaussian)")
    parser.add_argument("--scheme", default="bitmod4", help="weight scheme (default bitmod4)")
    parser.add_argument("--group-size", type=int, default=None,
                        help="group size (default: the scheme's, 128)")
    parser.add_argument("--array", default="4x4", help="ROWSxCOLS (default 4x4)")
    parser.add_argument("--lanes", type=int, default=4, help="lanes per PE (default 4)")
    parser.add_argument("--act", choices=("int8", "fp16"), default="fp16",
                        help="activation format (default fp16)")
    parser.add_argument("--out", choices=("fp32", "fp16"), default="fp32",
                        help="drain output format, RNE (default fp32); fp16 rounds values "
                             "in code units, before the channel scales, and can overflow to "
                             "Inf with wide weight codes such as int8")
    parser.add_argument("--mant-width", type=int, default=12,
                        help="FP16 block-floating-point mantissa width (default 12)")
    parser.add_argument("--act-exp-bits", type=int, default=3,
                        help="FP16 group exponent shift bits (default 3)")
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS,
                        help=f"tokens M for model layers and --npy (default {DEFAULT_TOKENS})")
    parser.add_argument("--engine", choices=("core", "array"), default="core",
                        help="core: the whole accelerator (buffers, controller, counters) "
                             "driven by commands; array: tiles streamed straight into the "
                             "PE array (default core)")
    parser.add_argument("--clock", type=float, default=100.0, metavar="MHZ",
                        help="clock for the throughput figure (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(func=_verify)

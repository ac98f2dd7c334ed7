"""``bitmod bench quant``: quantization time and error of every scheme.

Without ``--model``: each scheme quantizes one seeded Gaussian ``size x size`` matrix
(N(0, 1), seed ``--seed``); the table gives wall time, throughput and weight MSE / SQNR.

With ``--model minilm``: each scheme quantizes all 37 Linear layers of MiniLM-L6. For layer
``l`` with weight ``W_l [out, in]`` the input ``X_l`` is a fixed seeded Gaussian
``[tokens, in]`` (the same for every scheme). Aggregation over layers (sums of squares, so
large layers weigh in proportion to their size)::

    weight MSE      = sum_l ||Wq_l - W_l||^2 / sum_l numel(W_l)
    weight rel err  = sqrt(sum_l ||Wq_l - W_l||^2 / sum_l ||W_l||^2)
    output rel err  = sqrt(sum_l ||X_l Wq_l^T - X_l W_l^T||^2 / sum_l ||X_l W_l^T||^2)
    mean layer err  = mean_l ||X_l Wq_l^T - X_l W_l^T|| / ||X_l W_l^T||

``bits/w`` counts storage per weight: code bits + (scale bits + selector bits + zero point
bits) / G (FP16 scale 16, INT8 or E8M0 scale 8; per-channel scales ignored).
"""

from __future__ import annotations

import math
import time

import numpy as np

from bitmod.tools.api import dumps_strict

SCALE_BITS = {"fp16": 16, "fp32": 32, "fp64": 64, "int8": 8, "e8m0": 8}


def register(bench_subparsers) -> None:
    parser = bench_subparsers.add_parser(
        "quant", help="time and error of every quantization scheme",
        description="Quantize a Gaussian matrix (or every MiniLM Linear layer) with every "
                    "scheme; print time and error.")
    parser.add_argument("--model", choices=("minilm",), default=None,
                        help="quantize a real model's Linear layers instead of a Gaussian")
    parser.add_argument("--size", type=int, default=4096,
                        help="Gaussian matrix size (default 4096)")
    parser.add_argument("--tokens", type=int, default=64,
                        help="rows of the Gaussian input X for --model (default 64)")
    parser.add_argument("--schemes", default=None,
                        help="comma-separated scheme names (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def _bits_per_weight(qt) -> float:
    extra = SCALE_BITS[qt.scale_format]
    if qt.selectors is not None:
        extra += math.ceil(math.log2(len(qt.formats)))
    if qt.zero_points is not None:
        extra += qt.bits
    return qt.bits + extra / qt.group_size


def _schemes(arg: str | None) -> list[str]:
    from bitmod.golden.quantize import get_scheme, scheme_names

    if arg is None:
        return scheme_names()
    names = [name.strip() for name in arg.split(",") if name.strip()]
    if not names:
        raise ValueError("--schemes is empty")
    return [get_scheme(name).name for name in names]


def _gaussian(args, schemes):
    from bitmod.golden.quantize import quantize

    if args.size <= 0:
        raise ValueError(f"--size must be positive, got {args.size}")
    w = np.random.default_rng(args.seed).standard_normal((args.size, args.size))
    power = float(np.mean(np.square(w)))
    rows = []
    for name in schemes:
        start = time.perf_counter()
        qt = quantize(w, name)
        seconds = time.perf_counter() - start
        mse = float(np.mean(np.square(qt.dequantize() - w)))
        rows.append({
            "scheme": name, "bits": qt.bits, "group_size": qt.group_size,
            "bits_per_weight": _bits_per_weight(qt), "time_s": seconds,
            "melem_per_s": w.size / seconds / 1e6, "mse": mse,
            "sqnr_db": 10 * math.log10(power / mse) if mse > 0 else math.inf,
        })
    header = ("scheme", "bits", "G", "bits/w", "time s", "Melem/s", "weight MSE", "SQNR dB")
    table = [(r["scheme"], r["bits"], r["group_size"], f"{r['bits_per_weight']:.3f}",
              f"{r['time_s']:.2f}", f"{r['melem_per_s']:.1f}", f"{r['mse']:.4e}",
              f"{r['sqnr_db']:.2f}") for r in rows]
    title = f"Gaussian N(0,1) {args.size}x{args.size}, seed {args.seed}"
    return {"benchmark": "quant", "input": "gaussian", "size": args.size, "seed": args.seed,
            "results": rows}, title, header, table


def _minilm(args, schemes):
    from bitmod.golden.quantize import quantize
    from bitmod.models.minilm import minilm_linear_layers

    if args.tokens <= 0:
        raise ValueError(f"--tokens must be positive, got {args.tokens}")
    layers = {k: np.asarray(v, dtype=np.float64) for k, v in minilm_linear_layers().items()}
    rng = np.random.default_rng(args.seed)
    inputs = {k: rng.standard_normal((args.tokens, k)) for k in
              sorted({w.shape[1] for w in layers.values()})}
    reference = {name: inputs[w.shape[1]] @ w.T for name, w in layers.items()}
    numel = sum(w.size for w in layers.values())
    w_power = sum(float(np.sum(np.square(w))) for w in layers.values())
    y_power = sum(float(np.sum(np.square(y))) for y in reference.values())
    rows = []
    for name in schemes:
        seconds = w_err = y_err = 0.0
        per_layer = []
        histogram: dict[str, int] = {}
        for lname, w in layers.items():
            start = time.perf_counter()
            qt = quantize(w, name)
            seconds += time.perf_counter() - start
            wq = qt.dequantize()
            w_err += float(np.sum(np.square(wq - w)))
            e = float(np.sum(np.square(inputs[w.shape[1]] @ wq.T - reference[lname])))
            y_err += e
            per_layer.append(math.sqrt(e / float(np.sum(np.square(reference[lname])))))
            if qt.selectors is not None:
                for fmt, count in qt.selector_histogram().items():
                    histogram[fmt] = histogram.get(fmt, 0) + count
        rows.append({
            "scheme": name, "bits": qt.bits, "group_size": qt.group_size,
            "bits_per_weight": _bits_per_weight(qt), "time_s": seconds,
            "weight_mse": w_err / numel, "weight_rel_err": math.sqrt(w_err / w_power),
            "output_rel_err": math.sqrt(y_err / y_power),
            "mean_layer_output_rel_err": float(np.mean(per_layer)),
            "selectors": histogram or None,
        })
    header = ("scheme", "bits", "G", "bits/w", "time s", "weight MSE", "W rel err",
              "out rel err", "mean layer err")
    table = [(r["scheme"], r["bits"], r["group_size"], f"{r['bits_per_weight']:.3f}",
              f"{r['time_s']:.2f}", f"{r['weight_mse']:.4e}", f"{r['weight_rel_err']:.4%}",
              f"{r['output_rel_err']:.4%}", f"{r['mean_layer_output_rel_err']:.4%}")
             for r in rows]
    title = (f"MiniLM-L6: {len(layers)} Linear layers, {numel} weights; X ~ N(0,1) "
             f"[{args.tokens}, in], seed {args.seed}; errors aggregated as sums of squares")
    return {"benchmark": "quant", "input": "minilm", "layers": len(layers), "weights": numel,
            "tokens": args.tokens, "seed": args.seed, "results": rows}, title, header, table


def _print_table(title, header, table) -> None:
    widths = [max(len(str(h)), *(len(str(row[i])) for row in table))
              for i, h in enumerate(header)]
    print(title)
    print("  ".join(str(h).rjust(w) if i else str(h).ljust(w)
                    for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))


def run(args) -> int:
    schemes = _schemes(args.schemes)
    if args.model == "minilm":
        data, title, header, table = _minilm(args, schemes)
    else:
        data, title, header, table = _gaussian(args, schemes)
    if args.json:
        print(dumps_strict(data, indent=2))
    else:
        _print_table(title, header, table)
    return 0

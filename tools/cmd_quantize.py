"""``bitmod quantize``: group-quantize a weight matrix (a ``.npy`` file or a MiniLM layer).

Prints the shape, scheme, group size, weight MSE (``mean((W_deq - W)^2)``) and, for BitMoD /
ANT schemes, how many groups chose each datatype; ``-o out.npz`` saves the
:class:`golden.quantize.QuantizedTensor` (load it with ``QuantizedTensor.load``).
"""

from __future__ import annotations

import math
import sys

MODELS = ("minilm",)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantize", help="group-quantize a weight matrix (.npy or a model layer)",
        description="Group-quantize W[N out, K in] along K and report the weight error.")
    parser.add_argument("input", nargs="?", help="weight matrix as a 2-D .npy file")
    parser.add_argument("--layer", metavar="NAME",
                        help="a Linear layer of --model, e.g. encoder.layer.0.attention.self.query")
    parser.add_argument("--model", default="minilm", metavar="MODEL",
                        help="model for --layer (default: minilm)")
    parser.add_argument("--list-layers", action="store_true",
                        help="list the Linear layers of --model and exit")
    parser.add_argument("--scheme", default="bitmod4",
                        help="quantization scheme (default: bitmod4; see --list-schemes)")
    parser.add_argument("--list-schemes", action="store_true", help="list the schemes and exit")
    parser.add_argument("--group-size", type=int, default=None, metavar="G",
                        help="elements per group along K (default: the scheme's, 128 / MX 32)")
    parser.add_argument("--scale-format", default=None,
                        choices=("fp16", "fp32", "fp64", "int8", "e8m0"),
                        help="override the scheme's scale storage format")
    parser.add_argument("-o", "--output", metavar="OUT.npz", help="save the quantized tensor")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(func=run)


def run(args) -> int:
    from bitmod.golden.quantize import get_scheme, scheme_names
    from bitmod.models.minilm import minilm_linear_layers
    from bitmod.tools.api import quantize

    if args.model not in MODELS:
        raise ValueError(f"unknown model {args.model!r}; valid models: {', '.join(MODELS)}")
    if args.list_schemes:
        for name in scheme_names():
            spec = get_scheme(name)
            print(f"{name:18s} {spec.bits}-bit  G={spec.group_size:<4d} {spec.description}")
        return 0
    if args.list_layers:
        for name, weight in minilm_linear_layers().items():
            print(f"{name:45s} {weight.shape[0]}x{weight.shape[1]}")
        return 0
    if args.input is not None and args.layer is not None:
        raise ValueError("give either an input .npy file or --layer, not both")
    if args.input is None and args.layer is None:
        raise ValueError("no weights given: pass a .npy file or --layer NAME")
    result = quantize(args.input, layer=args.layer, scheme=args.scheme,
                      group_size=args.group_size, scale_format=args.scale_format,
                      output=args.output)
    if result.warning:
        print(f"bitmod quantize: warning: {result.warning}", file=sys.stderr)
    if args.json:
        print(result.to_json())
        return 0
    print(f"input:        {result.source}")
    print(f"shape:        {result.shape[0]} x {result.shape[1]} ({result.n_groups} groups per row)")
    print(f"scheme:       {result.scheme} ({result.description})")
    per_row = (f" (more than K = {result.shape[1]}: one group per row)"
               if result.group_size > result.shape[1] else "")
    print(f"group size:   {result.group_size}{per_row}")
    print(f"scale format: {result.scale_format}")
    rms = ("n/a: the weights are all zero" if math.isnan(result.relative_rms)
           else f"{result.relative_rms:.4%}")
    print(f"weight MSE:   {result.mse:.6e}  (relative RMS error {rms})")
    if result.selectors is not None:
        print("selectors:")
        for row in result.selectors:
            print(f"  {row['selector']} {row['format']:12s} {row['groups']:8d} groups "
                  f"({row['share']:6.1%})  mean group MSE {row['mean_group_mse']:.3e}")
    if result.saved:
        print(f"saved:        {result.saved}")
    return 0

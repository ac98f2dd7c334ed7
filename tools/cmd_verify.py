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

import sys

from bitmod.golden.bfp import ACT_FORMATS
from bitmod.golden.gemm import PE_KINDS
from bitmod.golden.quantize import get_scheme
from bitmod.tools.api import (
    DEFAULT_LAYER,
    DEFAULT_TOKENS,
    ENGINES,
    OUT_FORMATS,
    TARGETS,
    verify,
)
from bitmod.tools.cli import parse_array
from bitmod.tools.progress import Progress
from bitmod.tools.verify_model import MODELS

# How the text report names each PE kind (golden.gemm.PE_KINDS); a kind without an entry is
# printed under its own name.
PE_LABELS = {"bitserial": "bit-serial", "int": "int (bit-parallel)",
             "minifloat": "minifloat (exact products)", "lut": "LUT-table",
             "bitplane": "bit-plane"}


def _print_report(report) -> None:
    report = report.to_dict()
    err = report["error_vs_fp32"]
    print(f"layer:        {report['problem']}  (M={report['m']} tokens, N={report['n']}, "
          f"K={report['k']})")
    zero = {"corrected": ", zero points corrected per group (MixPE)",
            "folded": ", zero points folded into the codes"}.get(report["zero_points"], "")
    formats = report.get("weight_formats") or []
    own = tuple(get_scheme(report["scheme"]).formats)
    ran = (f", run as {', '.join(formats)}" if formats and tuple(formats) != own
           and not report["zero_points"] else "")
    print(f"weights:      {report['scheme']}, group {report['group_size']}, INT8 group scales"
          f"{zero}{ran}")
    kind = PE_LABELS.get(report["pe"], report["pe"])
    print(f"array:        {report['array']} {kind} PEs x {report['lanes']} lanes, "
          f"{report['act']} activations, {report['out']} outputs")
    verdict = "yes" if report["bit_exact"] else "NO"
    print(f"bit-exact:    {verdict} ({report['outputs_checked'] - report['mismatches']} of "
          f"{report['outputs_checked']} {report['out'].upper()} outputs equal golden)")
    digits = 2 + report["out_bits"] // 4
    if report["mismatches"]:
        print("  (rerun with --waves FILE.vcd for a waveform of the run)")
    for item in report["first_mismatches"]:
        print(f"  mismatch at y[{item['m']}, {item['n']}]: rtl {item['rtl']:#0{digits}x} golden "
              f"{item['golden']:#0{digits}x}")
    # null (JSON) when undefined: an all-zero FP32 reference has no relative error or cosine
    rms = "n/a" if err["relative_rms"] is None else f"{err['relative_rms']:.4%}"
    cosine = "n/a" if err["cosine"] is None else f"{err['cosine']:.6f}"
    print(f"vs FP32:      relative RMS {rms}, max |err| {err['max_abs']:.4g}, cosine {cosine}")
    if report["infinite_outputs"]:
        print(f"overflow:     {report['infinite_outputs']} outputs are Inf (the drain rounds in "
              f"code units, before the channel scales; try --out fp32)")
    if report["target"] == "core":
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


def _print_model_report(report) -> None:
    report = report.to_dict()
    print(f"model:        {report['model']}, {len(report['sentences'])} sentence(s) x "
          f"{report['tokens']} tokens; {report['scheme']} weights, group "
          f"{report['group_size']}, {report['act']} activations, {report['out']} outputs")
    print(f"core:         {report['array']} x {report['lanes']} lanes, buffers for M <= "
          f"{report['core']['max_m']}, N <= {report['core']['max_n']}, K <= "
          f"{report['core']['max_k']}; tasks: {report['cluster']}")
    print(f"{'layer':44} {'M':>4} {'N':>5} {'K':>5} {'cycles':>8} {'util':>6} {'exact':>6} "
          f"{'rel.RMS':>8} {'cosine':>9}")
    for row in report["layers"]:
        err = row["error_vs_fp32"]
        if row["on_rtl"]:
            rtl = (f"{row['cycles']:>8} {row['pe_utilization']:>6.1%} "
                   f"{'yes' if row['bit_exact'] else 'NO':>6}")
        else:
            rtl = f"{'golden only':>22}"
        print(f"{row['layer']:44} {row['m']:>4} {row['n']:>5} {row['k']:>5} {rtl} "
              f"{err['relative_rms']:>8.2%} {err['cosine']:>9.6f}")
    exact = "yes" if report["all_bit_exact"] else "NO"
    agree = "equal" if report["counters_match_model"] else "DIFFER from"
    print(f"bit-exact:    {exact} ({report['layers_on_rtl']} of {report['layers_total']} GEMMs "
          f"on the RTL; core counters {agree} the cycle model; {report['cycles_total']} "
          "cycles)")
    cosines = ", ".join(f"{c:.6f}" for c in report["embedding_cosine_vs_fp32"])
    print(f"embeddings:   cosine vs FP32 {cosines} (golden datapath); RTL run: "
          f"{report['rtl_end_to_end']}")
    seconds = report["seconds"]
    print(f"time:         {seconds['total']} s (golden forward {seconds['golden']} s, RTL "
          f"{seconds['rtl']} s, model build {report['verilator_build_s']} s)")


def _verify_model(args) -> int:
    from bitmod.tools.distributed import ClusterSpec
    from bitmod.tools.verify_model import verify_model

    if args.npy or args.x_npy or args.random or args.layer:
        raise ValueError("--model runs the whole model; it does not take --layer, --random, "
                         "--npy or --x-npy")
    if args.target != "core" or args.engine != "harness" or args.waves:
        raise ValueError("--model runs on the core with the compiled harness; --target, "
                         "--engine and --waves apply to single layers")
    rtl_layers = args.rtl_layers
    if rtl_layers not in (None, "all"):
        rtl_layers = int(rtl_layers) if rtl_layers.isdigit() else rtl_layers.split(",")
    progress = Progress(not args.json and not args.quiet)
    try:
        report = verify_model(
            args.model, sentences=args.sentences, tokens=args.tokens, scheme=args.scheme,
            group_size=args.group_size, array=parse_array(args.array), lanes=args.lanes,
            pe=args.pe, act=args.act, out=args.out, mant_width=args.mant_width,
            act_exp_bits=args.act_exp_bits, rtl_layers=rtl_layers,
            cluster=ClusterSpec(workers=args.workers, scheduler=args.scheduler),
            progress=progress)
    finally:
        progress.done()
    if args.json:
        print(report.to_json())
    else:
        _print_model_report(report)
    return 0 if report.ok else 1


def _verify(args) -> int:
    if args.model:
        return _verify_model(args)
    for option in ("sentences", "rtl_layers", "scheduler"):
        if getattr(args, option) is not None:
            raise ValueError(f"--{option.replace('_', '-')} applies to --model")
    progress = Progress(not args.json and not args.quiet)
    try:
        report = verify(
            layer=args.layer, random=args.random, weights=args.npy, activations=args.x_npy,
            scheme=args.scheme, group_size=args.group_size, array=parse_array(args.array),
            lanes=args.lanes, pe=args.pe, act=args.act, out=args.out,
            mant_width=args.mant_width, act_exp_bits=args.act_exp_bits, tokens=args.tokens,
            target=args.target,
            engine=args.engine, waves=args.waves,
            clock_mhz=args.clock, seed=args.seed, progress=progress.step)
    finally:
        progress.done()
    if report.warning:
        print(f"bitmod verify: warning: {report.warning}", file=sys.stderr)
    if args.json:
        print(report.to_json())
    else:
        _print_report(report)
    return 0 if report.ok else 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="run a quantized layer on the RTL (Verilator) and check it against golden")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--layer", help=f"MiniLM linear layer (default {DEFAULT_LAYER})")
    source.add_argument("--random", nargs=3, type=int, metavar=("M", "N", "K"),
                        help="random Gaussian GEMM instead of a model layer")
    source.add_argument("--npy", help="weights [out, in] from a .npy file")
    source.add_argument("--model", choices=MODELS,
                        help="a whole model: every Linear GEMM of its forward pass on the RTL "
                             "(docs/models.md)")
    parser.add_argument("--x-npy", help="activations [M, in] for --npy (default: Gaussian)")
    parser.add_argument("--scheme", default="bitmod4", help="weight scheme (default bitmod4)")
    parser.add_argument("--group-size", type=int, default=None,
                        help="group size (default: the scheme's, 128)")
    parser.add_argument("--array", default="4x4", help="ROWSxCOLS (default 4x4)")
    parser.add_argument("--lanes", type=int, default=4, help="lanes per PE (default 4)")
    parser.add_argument("--pe", choices=PE_KINDS, default="bitserial",
                        help="PE kind of the array: bitserial (default; any format the term "
                             "encoder takes), int (bit-parallel multipliers, DSP blocks; one "
                             "signed integer format such as int4 or int8), minifloat (exact "
                             "minifloat products; MX schemes such as mxfp4, activations of at "
                             "most 8 bits: --act int8 or --mant-width 8), lut (T-MAC style "
                             "tables of activation sums indexed by weight bit-planes, B cycles "
                             "per B-bit weight; one integer format such as int4 or int8) or "
                             "bitplane (BISMO style AND-popcount of weight and activation "
                             "bit-planes, B x A cycles per weight; one integer format, "
                             "activations of at most 8 bits)")
    parser.add_argument("--act", choices=ACT_FORMATS, default="fp16",
                        help="activation format (default fp16)")
    parser.add_argument("--out", choices=OUT_FORMATS, default="fp32",
                        help="drain output format, RNE (default fp32); fp16 rounds values "
                             "in code units, before the channel scales, and can overflow to "
                             "Inf with wide weight codes such as int8")
    parser.add_argument("--mant-width", type=int, default=12,
                        help="FP16 block-floating-point mantissa width (default 12)")
    parser.add_argument("--act-exp-bits", type=int, default=3,
                        help="FP16 group exponent shift bits (default 3)")
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS,
                        help=f"tokens M for model layers and --npy (default {DEFAULT_TOKENS})")
    parser.add_argument("--target", choices=TARGETS, default="core",
                        help="core: the whole accelerator (buffers, controller, counters) "
                             "driven by commands; array: tiles streamed straight into the "
                             "PE array (default core)")
    parser.add_argument("--engine", choices=ENGINES, default="harness",
                        help="harness: the compiled transaction harness (default); cocotb: "
                             "the same transactions driven from Python (slower)")
    parser.add_argument("--waves", metavar="FILE.vcd",
                        help="write a VCD waveform of the run (harness engine)")
    parser.add_argument("--clock", type=float, default=100.0, metavar="MHZ",
                        help="clock for the throughput figure (default 100)")
    parser.add_argument("--sentences", nargs="+", metavar="TEXT",
                        help="--model: input sentences (default one fixed sentence)")
    parser.add_argument("--rtl-layers", metavar="all|N|NAME,...",
                        help="--model: GEMMs run on the RTL (default all; N: the first N)")
    parser.add_argument("--workers", type=int, default=2,
                        help="--model: Dask LocalCluster workers for the RTL runs (default 2; "
                             "0: in process)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="--model: a running Dask scheduler (tcp://host:8786) instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(func=_verify)

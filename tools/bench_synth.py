"""``bitmod bench synth``: out-of-context resources and Fmax of the arithmetic units.

Runs ``bitmod synth`` for a fixed set of representative configurations on each device and
prints one table (Markdown with ``--markdown``, JSON with ``--json``). The figures in
``docs/synthesis.md`` come from this command.
"""

from __future__ import annotations

import json

from bitmod.fpga.synth import SynthError
from bitmod.tools.api import synth
from bitmod.tools.cmd_synth import HEADER, format_row

# (component, params, label): one line each in the table.
UNITS = (
    ("term_encoder", {}, "BitMoD FP4 mixture"),
    ("term_encoder", {"formats": "int8"}, "INT8 Booth"),
    ("act_block", {"lanes": 4, "act_format": "fp16", "mant_width": 12, "rounding": "rne"},
     "4 x FP16 -> 12-bit BFP"),
    ("requant", {}, "32-bit acc, default"),
    ("minifloat_mul", {"a_format": "fp8_e4m3", "b_format": "fp8_e4m3"}, "E4M3 x E4M3"),
    ("to_float", {"in_width": 32, "in_frac": 0, "out_format": "fp16"}, "32-bit -> FP16"),
    ("fixed_cast", {"in_width": 16, "in_frac": 8, "out_width": 8, "out_frac": 2},
     "Q16.8 -> Q8.2"),
)
DEVICES = ("ecp5-85f", "ice40-up5k")


def _bench(args) -> int:
    devices = args.device or list(DEVICES)
    results = []
    if not args.json:
        print(f"{'configuration':24s} " + HEADER)
    for component, params, label in UNITS:
        if args.only and component not in args.only:
            continue
        for device in devices:
            try:
                result = synth(component, params, device=device, clock_mhz=args.clock).to_dict()
            except SynthError as error:
                result = {"component": component, "device": device, "error": str(error)}
            result["label"] = label
            results.append(result)
            if args.json:
                continue
            if "error" in result:
                print(f"{label:24s} {component:14s} {device:11s} FAILED: "
                      f"{result['error'].splitlines()[0]}")
            else:
                print(f"{label:24s} " + format_row(result), flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    return 1 if any("error" in r for r in results) else 0


def register(bench_subparsers) -> None:
    parser = bench_subparsers.add_parser(
        "synth", help="out-of-context LUT/FF/DSP/Fmax of the arithmetic units")
    parser.add_argument("--device", action="append", help="device (repeatable; default: "
                        + ", ".join(DEVICES) + ")")
    parser.add_argument("--only", action="append", help="component name (repeatable)")
    parser.add_argument("--clock", type=float, default=100.0, metavar="MHZ")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_bench)

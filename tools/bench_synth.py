"""``bitmod bench synth``: out-of-context resources and Fmax of the arithmetic units.

Runs ``bitmod synth`` for a fixed set of representative configurations on each device and
prints one table (JSON with ``--json``). The figures in ``docs/synthesis.md`` come from this
command. ``--only`` names components of the set (an unknown one is refused, listing them); a
unit the device cannot hold is a row saying which resource it overuses.
"""

from __future__ import annotations

from bitmod.fpga.devices import get_device
from bitmod.fpga.synth import DoesNotFit, SynthError
from bitmod.golden.checks import check_choice, check_number
from bitmod.tools.api import dumps_strict, synth
from bitmod.tools.cmd_synth import HEADER, format_row

# (component, params, label): one line each in the table.
UNITS = (
    ("term_encoder", {}, "BitMoD FP4 mixture"),
    ("term_encoder", {"formats": "int8"}, "INT8 Booth"),
    ("act_block", {"lanes": 4, "act_format": "fp16", "mant_width": 12, "rounding": "rne"},
     "4 x FP16 -> 12-bit BFP"),
    ("act_align", {"lanes": 4, "act_format": "fp16", "mant_width": 12, "rounding": "rne"},
     "4 x FP16 aligned, 12-bit"),
    ("requant", {}, "32-bit acc, default"),
    ("minifloat_mul", {"a_format": "fp8_e4m3", "b_format": "fp8_e4m3"}, "E4M3 x E4M3"),
    ("to_float", {"in_width": 32, "in_frac": 0, "out_format": "fp16"}, "32-bit -> FP16"),
    ("fixed_cast", {"in_width": 16, "in_frac": 8, "out_width": 8, "out_frac": 2},
     "Q16.8 -> Q8.2"),
)
DEVICES = ("ecp5-85f", "ice40-up5k")


def _bench(args) -> int:
    devices = [get_device(name).name for name in args.device or DEVICES]
    components = sorted({component for component, _, _ in UNITS})
    only = [check_choice("--only", name, components) for name in args.only or ()]
    clock = check_number("--clock", args.clock, positive=True)
    results = []
    if not args.json:
        print(f"{'configuration':24s} " + HEADER)
    for component, params, label in UNITS:
        if only and component not in only:
            continue
        for device in devices:
            try:
                result = synth(component, params, device=device, clock_mhz=clock).to_dict()
            except DoesNotFit as error:
                result = {"component": component, "device": device, "fits": False,
                          "over": error.over}
            except SynthError as error:
                result = {"component": component, "device": device, "error": str(error)}
            result["label"] = label
            results.append(result)
            if args.json:
                continue
            if "error" in result:
                print(f"{label:24s} {component:14s} {device:11s} FAILED: "
                      f"{result['error'].splitlines()[0]}")
            elif "over" in result:
                print(f"{label:24s} {component:14s} {device:11s} does not fit: "
                      f"{', '.join(result['over'])}")
            else:
                print(f"{label:24s} " + format_row(result), flush=True)
    if args.json:
        print(dumps_strict(results))
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

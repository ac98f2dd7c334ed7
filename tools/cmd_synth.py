"""``bitmod synth COMPONENT``: out-of-context synthesis + place-and-route with resource figures.

The component is elaborated with ``--param k=v`` keyword arguments, wrapped by
:class:`fpga.ooc.OOCWrapper` (registered inputs/outputs on four pins), synthesised with Yosys
and placed and routed with nextpnr for ``--device``. The printed LUT4/FF figures are the
component's own: the wrapper's exactly known cost is subtracted (see ``fpga/ooc.py``); the total
including the wrapper is in the JSON output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bitmod.fpga.devices import DEVICES, get_device
from bitmod.fpga.ooc import OOCWrapper, port_widths, wrapper_cost
from bitmod.fpga.synth import ROUTERS, SynthError, run_flow
from bitmod.hdl.registry import component_class, component_names
from bitmod.toolchain import build_root, export_verilog
from bitmod.tools.cli import CLIError


def parse_params(items: list[str]) -> dict:
    """``["lanes=4", "act_format=fp16"]`` -> ``{"lanes": 4, "act_format": "fp16"}``.

    Values are read as JSON where they parse (ints, floats, booleans, lists), else as strings.
    """
    params = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise CLIError(f"--param takes NAME=VALUE, not {item!r}")
        try:
            params[key] = json.loads(text)
        except json.JSONDecodeError:
            params[key] = text
    return params


def synthesize(name: str, params: dict, device_name: str, clock_mhz: float = 100.0,
               seed: int = 1, router: str | None = None) -> dict:
    """Run the out-of-context flow; return the figures as a dict (see ``bitmod synth``)."""
    device = get_device(device_name)
    cls = component_class(name)
    try:
        unit = cls(**params)
    except TypeError as error:  # unknown/missing keyword: a user error, not a crash
        raise CLIError(f"cannot build {name} with {params}: {error}") from None
    in_bits, out_bits = port_widths(unit)
    verilog = export_verilog(OOCWrapper(unit))
    routed = "" if router is None else f"|{router}"
    key = hashlib.sha256(f"{name}|{json.dumps(params, sort_keys=True)}|{verilog}{routed}".encode())
    workdir = build_root() / "synth" / f"{name}-{device.name}-{key.hexdigest()[:12]}"
    report = run_flow(verilog, device, workdir, target_mhz=clock_mhz, seed=seed, router=router)
    overhead = wrapper_cost(in_bits, out_bits)
    return {
        "component": name, "params": params, "device": device.name,
        "lut4": report.lut4 - overhead["lut4"], "ff": report.ff - overhead["ff"],
        "carry": report.carry, "dsp": report.dsp, "bram": report.bram,
        "fmax_mhz": report.fmax_mhz, "target_mhz": clock_mhz,
        "in_bits": in_bits, "out_bits": out_bits,
        "total_with_wrapper": {"lut4": report.lut4, "ff": report.ff},
        "seconds": round(report.seconds, 1), "workdir": str(workdir),
    }


def format_row(result: dict) -> str:
    fmax = "-" if result["fmax_mhz"] is None else f"{result['fmax_mhz']:.1f}"
    return (f"{result['component']:14s} {result['device']:11s} {result['lut4']:6d} "
            f"{result['ff']:6d} {result['carry']:6d} {result['dsp']:4d} {result['bram']:5d} "
            f"{fmax:>9s}")


HEADER = (f"{'component':14s} {'device':11s} {'LUT4':>6s} {'FF':>6s} {'carry':>6s} "
          f"{'DSP':>4s} {'BRAM':>5s} {'Fmax MHz':>9s}")


def _synth(args) -> int:
    params = parse_params(args.param)
    try:
        result = synthesize(args.component, params, args.device, args.clock, args.seed,
                            args.router)
    except SynthError as error:
        raise CLIError(str(error)) from None
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(HEADER)
        print(format_row(result))
        print(f"(wrapper cost subtracted; {result['in_bits']} input and {result['out_bits']} "
              f"output bits; work files in {Path(result['workdir'])})")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="out-of-context synthesis of one component: LUTs, FFs, DSPs, Fmax")
    parser.add_argument("component", help=f"one of: {', '.join(component_names())}")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="constructor parameter (repeatable)")
    parser.add_argument("--device", default="ecp5-85f", choices=sorted(DEVICES))
    parser.add_argument("--clock", type=float, default=100.0, metavar="MHZ",
                        help="clock target for nextpnr (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--router", choices=ROUTERS, help="nextpnr router (its default: router1)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_synth)

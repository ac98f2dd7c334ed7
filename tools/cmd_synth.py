"""``bitmod synth COMPONENT``: out-of-context synthesis + place-and-route with resource figures.

The component (a :mod:`hdl.registry` name) is built from ``--param k=v`` values and, for a
component with weights, ``--scheme`` (every component builds with no ``--param`` at all),
wrapped by :class:`fpga.ooc.OOCWrapper` (registered inputs/outputs on four pins), synthesised
with Yosys and placed and routed with nextpnr for ``--device``. The printed LUT4/FF figures are
the component's own: the wrapper's exactly known cost is subtracted (see ``fpga/ooc.py``); the
total including the wrapper is in the JSON output. The flow is :func:`tools.api.synth`.
"""

from __future__ import annotations

import json
from pathlib import Path

from bitmod.fpga.devices import DEVICES
from bitmod.fpga.synth import ROUTERS
from bitmod.hdl.registry import component_names
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


def format_row(result: dict) -> str:
    fmax = "-" if result["fmax_mhz"] is None else f"{result['fmax_mhz']:.1f}"
    return (f"{result['component']:14s} {result['device']:11s} {result['lut4']:6d} "
            f"{result['ff']:6d} {result['carry']:6d} {result['dsp']:4d} {result['bram']:5d} "
            f"{fmax:>9s}")


HEADER = (f"{'component':14s} {'device':11s} {'LUT4':>6s} {'FF':>6s} {'carry':>6s} "
          f"{'DSP':>4s} {'BRAM':>5s} {'Fmax MHz':>9s}")


def _synth(args) -> int:
    from bitmod.tools.api import synth

    result = synth(args.component, parse_params(args.param), scheme=args.scheme,
                   device=args.device, clock_mhz=args.clock, seed=args.seed, router=args.router,
                   timing_weight=args.timing_weight)
    if args.json:
        print(result.to_json())
    else:
        print(HEADER)
        print(format_row(result.to_dict()))
        print(f"(wrapper cost subtracted; {result.in_bits} input and {result.out_bits} "
              f"output bits; work files in {Path(result.workdir)})")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="out-of-context synthesis of one component: LUTs, FFs, DSPs, Fmax")
    parser.add_argument("component", help=f"one of: {', '.join(component_names())}")
    parser.add_argument("--scheme", help="weight scheme of a component with weights (default "
                        "bitmod4; `bitmod quantize --list-schemes`)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="constructor parameter (repeatable)")
    parser.add_argument("--device", default="ecp5-85f", choices=sorted(DEVICES))
    parser.add_argument("--clock", type=float, default=100.0, metavar="MHZ",
                        help="clock target for nextpnr (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--router", choices=ROUTERS, help="nextpnr router (its default: router1)")
    parser.add_argument("--timing-weight", type=int, metavar="W",
                        help="nextpnr placer timing weight, 1-1000 (its default: 10)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_synth)

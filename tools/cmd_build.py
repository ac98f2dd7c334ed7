"""``bitmod build --board NAME``: a bitstream for a board (or a bare device), with its figures.

Builds :class:`fpga.top.BoardTop` (PLL + reset synchroniser + UART bridge + bus adapter +
accelerator core) with Yosys + nextpnr (YoWASP) through the board's amaranth-boards platform,
prints LUT4/FF/DSP/BRAM use and Fmax against the core clock, and exits non-zero with one line
if timing is not met (exit 1) or the design does not fit / a tool fails (exit 2). Outputs go to
``build/boards/<board>-<hash>/`` (git-ignored). On a terminal, each Yosys / nextpnr / packer
stage shows on stderr with its elapsed time (:mod:`tools.progress`); never with ``--json``.
"""

from __future__ import annotations

import argparse
import sys

from bitmod.fpga.boards import BOARDS
from bitmod.fpga.build import BuildError
from bitmod.fpga.synth import ROUTERS
from bitmod.golden.bfp import ACT_FORMATS
from bitmod.golden.gemm import PE_KINDS
from bitmod.tools.cli import CLIError, parse_array

HEADER = (f"{'board':15s} {'array':>7s} {'clock':>7s} {'LUT4':>13s} {'FF':>13s} {'DSP':>8s} "
          f"{'BRAM':>8s} {'Fmax':>7s} {'timing':>7s} {'GMAC/s':>7s}")


def _use(result: dict, key: str, names: tuple[str, ...]) -> str:
    available = next((result["utilization"][n]["available"] for n in names
                      if n in result["utilization"]), None)
    return f"{result[key]}/{available}" if available else str(result[key])


def format_row(result: dict) -> str:
    p = result["params"]
    fmax = "-" if result["fmax_mhz"] is None else f"{result['fmax_mhz']:.1f}"
    return (f"{result['board']:15s} {p['rows']}x{p['cols']}x{p['lanes']:<3d} "
            f"{result['clock_mhz']:7.2f} "
            f"{_use(result, 'lut4', ('TRELLIS_COMB', 'ICESTORM_LC')):>13s} "
            f"{_use(result, 'ff', ('TRELLIS_FF', 'ICESTORM_LC')):>13s} "
            f"{_use(result, 'dsp', ('MULT18X18D', 'ICESTORM_DSP')):>8s} "
            f"{_use(result, 'bram', ('DP16KD', 'ICESTORM_RAM')):>8s} {fmax:>7s} "
            f"{'met' if result['timing_met'] else 'MISSED':>7s} {result['peak_gmacs']:7.3f}")


def build_options(args) -> dict:
    """The :class:`fpga.build.BuildConfig` fields given on the command line (``build``/``run``)."""
    rows = cols = None
    if args.array:
        rows, cols = parse_array(args.array)
    options = {"scheme": args.scheme, "rows": rows, "cols": cols, "lanes": args.lanes,
               "act": args.act}
    if args.pe is not None:  # left out: the board's default (run: the board's bitstream's)
        options["pe"] = args.pe
    return options


def add_build_options(parser, *, from_device: bool = False) -> None:
    """The options that define a bitstream's core (``build``, and ``run`` to address it; for
    ``run`` (``from_device``) an omitted option is the board's bitstream's)."""
    default = "the board's bitstream's" if from_device else None
    scheme_default = default or "the board's: int4 on the iCEBreaker, bitmod4 elsewhere"
    pe_default = default or "the board's: int on the iCEBreaker, bitserial elsewhere"
    parser.add_argument("--scheme", default=None,
                        help=f"weight scheme the core is built for (default {scheme_default}; "
                             "e.g. bitmod4, bitmod3, int4, int8, int4_asym, mxfp4)")
    parser.add_argument("--array", metavar="RxC",
                        help=f"array rows x columns (default: {default or 'the board default'})")
    parser.add_argument("--lanes", type=int, metavar="L",
                        help=f"lanes per PE (default: {default or 'the board default'})")
    parser.add_argument("--act", choices=ACT_FORMATS, default=None if from_device else "int8",
                        help=f"activation format (default {default or 'int8'})")
    parser.add_argument("--pe", choices=PE_KINDS, default=None,
                        help="PE kind: bitserial, int (bit-parallel multipliers, DSP blocks, "
                             "two per iCE40 UltraPlus block; signed integer schemes, and "
                             "BitMoD's mixtures as their integer values), minifloat (exact "
                             "minifloat products; MX schemes), lut (tables of activation sums "
                             "indexed by weight bit-planes; integer schemes) or bitplane "
                             "(AND-popcount of weight and activation bit-planes; integer "
                             "schemes, activations of at most 8 bits) "
                             f"(default {pe_default})")


def _build(args) -> int:
    from bitmod.fpga.build import BuildConfig, build
    from bitmod.tools.progress import Progress

    config = BuildConfig(args.board, **build_options(args), clock_mhz=args.clock,
                         baud=args.baud, seed=args.seed, router=args.router,
                         timing_weight=args.timing_weight, fold_resets=args.fold_resets,
                         bram_outreg=args.bram_outreg)
    progress = Progress(not args.json)
    try:
        with progress:
            result = build(config, progress=progress).as_dict()
    except BuildError as error:
        raise CLIError(str(error)) from None
    if args.json:
        from bitmod.tools.api import dumps_strict

        print(dumps_strict(result))
    else:
        print(HEADER)
        print(format_row(result))
        if result["pll"]:
            print(f"PLL: {result['pll']}")
        print(f"bitstream: {result['bitstream']}  ({result['seconds']:.0f} s)")
    if not result["timing_met"]:
        fmax = result["fmax_mhz"]
        print(f"bitmod build: error: timing not met: Fmax "
              f"{'-' if fmax is None else f'{fmax:.2f}'} MHz < {result['clock_mhz']:.2f} MHz "
              f"core clock (lower --clock or the array size)", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build", help="bitstream for a board: LUT/FF/DSP/BRAM use, Fmax, timing met or not")
    parser.add_argument("--board", required=True, metavar="NAME",
                        help=f"one of: {', '.join(BOARDS)}")
    add_build_options(parser)
    parser.add_argument("--clock", type=float, metavar="MHZ",
                        help="core clock (board default; the PLL's achieved clock is used)")
    parser.add_argument("--baud", type=int, default=115_200,
                        help="UART bit rate of the link (default 115200; bitmod run --baud "
                             "must match it)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--router", choices=ROUTERS,
                        help="nextpnr router (board default; router2 copes better with "
                             "congested large arrays)")
    parser.add_argument("--timing-weight", type=int, metavar="W",
                        help="nextpnr placer timing weight, 1-1000 (board default; nextpnr's "
                             "own is 10)")
    parser.add_argument("--fold-resets", action="store_true", default=None,
                        help="fold the kept-apart registers' resets into their flip-flops "
                             "before synthesis (ECP5; docs/boards.md)")
    parser.add_argument("--bram-outreg", action=argparse.BooleanOptionalAction, default=None,
                        help="make the flip-flops right after each block RAM's read port its "
                             "output register, between Yosys and nextpnr (ECP5; board "
                             "default; docs/boards.md)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_build)

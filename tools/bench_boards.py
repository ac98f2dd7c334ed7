"""``bitmod bench boards``: whole board builds over a grid, and each device's DSP ceiling.

The grid is board x array x lanes x PE kind x scheme x clock x seed, every axis given on the
command line (repeatable options; an axis left out takes the board's default, or
``bitserial`` / ``bitmod4`` / seed 1). Every point is validated as a
:class:`fpga.build.BuildConfig` before any build (an impossible point is one line and exit 2),
then built from scratch with :func:`fpga.build.build` (Amaranth, Yosys, nextpnr, the packer:
the bitstream ``bitmod build`` makes), one after another. A row gives LUT4, FF, DSP and BRAM
used, Fmax, whether timing is met at the achieved clock, the peak ``R * C * L / T`` GMAC/s at
that clock and the build's seconds; a point that does not fit names the resources it
overuses. Unless ``--no-ceiling``, each distinct device then gets its DSP INT8 ceiling
(:mod:`tools.bench_ceiling`: one INT8 MAC per DSP, out of context, at its own Fmax) in the same
table, so a board design is compared with the device's DSPs measured by the same flow.

ECP5-85F builds take 10-40 minutes each on a 2-core machine: this is a benchmark to run by hand
(tests run only a bare iCE40 point), and never asserted on.
"""

from __future__ import annotations

import itertools

from bitmod.fpga.build import BuildConfig, BuildError, build
from bitmod.fpga.devices import get_device
from bitmod.golden.gemm import PE_KINDS
from bitmod.tools.bench import report
from bitmod.tools.cli import CLIError, parse_array

HEADER = (f"{'board / device':16s} {'pe':>9s} {'scheme':>8s} {'array':>9s} {'MHz':>6s} "
          f"{'seed':>4s} {'LUT4':>6s} {'FF':>6s} {'DSP':>7s} {'BRAM':>5s} {'Fmax':>6s} "
          f"{'timing':>7s} {'GMAC/s':>7s} {'s':>5s}")


def plan(args) -> list[BuildConfig]:
    """Every grid point as a validated :class:`BuildConfig` (``ValueError`` names the first
    impossible one before anything is built)."""
    if not args.board:
        raise CLIError("give at least one --board (the builds take minutes each)")
    arrays = [parse_array(text) for text in args.array] if args.array else [None]
    axes = (args.board, arrays, args.lanes or [None], args.pe or [None],
            args.scheme or [None], args.clock or [None], args.seed or [1])
    configs = []
    for board, shape, lanes, pe, scheme, clock, seed in itertools.product(*axes):
        rows, cols = shape if shape else (None, None)
        try:
            configs.append(BuildConfig(board, scheme=scheme, rows=rows, cols=cols, lanes=lanes,
                                       pe=pe, clock_mhz=clock, seed=seed, act=args.act))
        except ValueError as error:
            # The options given (a board's defaults are not known for an unknown board).
            where = " ".join(str(part) for part in (board, pe, scheme) if part) + (
                f" {rows}x{cols}" if shape else "")
            raise ValueError(f"{where}: {error}") from None
    return configs


def build_row(config: BuildConfig) -> dict:
    """Build one point; the row (``over`` or ``error`` set when it did not build)."""
    row = {"kind": "board", "board": config.board, "device": config.target.device,
           "pe": config.pe, "scheme": config.scheme, "rows": config.rows, "cols": config.cols,
           "lanes": config.lanes, "clock_mhz": config.achieved_mhz, "seed": config.seed,
           "macs_per_cycle": config.rows * config.cols * config.lanes / config.core.array.terms}
    try:
        result = build(config).as_dict()
    except BuildError as error:
        if error.over:
            return {**row, "over": error.over}
        return {**row, "error": str(error).splitlines()[0]}
    keys = ("lut4", "ff", "dsp", "bram", "fmax_mhz", "timing_met", "peak_gmacs", "seconds",
            "utilization", "bitstream")
    return {**row, **{key: result[key] for key in keys}}


def ceiling_rows(devices, clock_mhz: float, seed: int):
    """The DSP INT8 ceiling of each device (:func:`tools.bench_ceiling.run`)."""
    from bitmod.tools.bench_ceiling import plan as ceiling_plan
    from bitmod.tools.bench_ceiling import run as ceiling_run

    for row in ceiling_run(ceiling_plan(devices, None, 4096), clock_mhz, seed):
        yield {"kind": "dsp-ceiling", **row}


def format_row(row: dict) -> str:
    if row["kind"] == "dsp-ceiling":
        head = (f"{row['device']:16s} {'DSP INT8':>9s} {'int8':>8s} {row['array']:>9s} "
                f"{'-':>6s} {'-':>4s}")
        if "over" in row or "error" in row:
            return f"{head} {row.get('error') or 'does not fit: ' + ', '.join(row['over'])}"
        fmax = "-" if row["fmax_mhz"] is None else f"{row['fmax_mhz']:.1f}"
        peak = "-" if row["peak_gmacs"] is None else f"{row['peak_gmacs']:.2f}"
        dsp = f"{row['dsp']}/{row['dsp_available']}"
        return (f"{head} {row['lut4']:6d} {row['ff']:6d} {dsp:>7s} {'-':>5s} {fmax:>6s} "
                f"{'(Fmax)':>7s} {peak:>7s} {row['seconds']:5.0f}")
    array = f"{row['rows']}x{row['cols']}x{row['lanes']}"
    head = (f"{row['board']:16s} {row['pe']:>9s} {row['scheme']:>8s} {array:>9s} "
            f"{row['clock_mhz']:6.2f} {row['seed']:4d}")
    if "over" in row:
        return f"{head} does not fit: {', '.join(row['over'])}"
    if "error" in row:
        return f"{head} FAILED: {row['error']}"
    fmax = "-" if row["fmax_mhz"] is None else f"{row['fmax_mhz']:.1f}"
    return (f"{head} {row['lut4']:6d} {row['ff']:6d} {row['dsp']:7d} {row['bram']:5d} "
            f"{fmax:>6s} {'met' if row['timing_met'] else 'MISSED':>7s} "
            f"{row['peak_gmacs']:7.3f} {row['seconds']:5.0f}")


def _rows(args, configs):
    """Each point's row as it is built, then the DSP ceilings of the grid's devices."""
    devices = []
    for config in configs:
        yield build_row(config)
        if config.target.device not in devices:
            devices.append(config.target.device)
    if not args.no_ceiling:
        with_dsps = [name for name in devices if get_device(name).dsps]
        yield from ceiling_rows(with_dsps, args.ceiling_clock, 1)


def _bench(args) -> int:
    rows = report(_rows(args, plan(args)), HEADER, format_row, args.json)
    return 1 if any("error" in row for row in rows) else 0


def register(bench_subparsers) -> None:
    parser = bench_subparsers.add_parser(
        "boards", help="whole board builds over a grid (board x array x lanes x PE x scheme x "
                       "clock x seed) beside each device's DSP INT8 ceiling; long: not for CI")
    parser.add_argument("--board", action="append", help="board (repeatable; at least one)")
    parser.add_argument("--array", action="append", metavar="RxC",
                        help="array (repeatable; default the board's)")
    parser.add_argument("--lanes", action="append", type=int, metavar="L",
                        help="lanes per PE (repeatable; default the board's)")
    parser.add_argument("--pe", action="append", choices=PE_KINDS,
                        help="PE kind (repeatable; default the board's)")
    parser.add_argument("--scheme", action="append",
                        help="weight scheme (repeatable; default the board's)")
    parser.add_argument("--clock", action="append", type=float, metavar="MHZ",
                        help="core clock (repeatable; default the board's)")
    parser.add_argument("--seed", action="append", type=int,
                        help="nextpnr placement seed (repeatable; default 1)")
    parser.add_argument("--act", default="int8", help="activation format (default int8)")
    parser.add_argument("--no-ceiling", action="store_true",
                        help="leave out the devices' DSP ceilings")
    parser.add_argument("--ceiling-clock", type=float, default=150.0, metavar="MHZ",
                        help="nextpnr target of the ceiling builds (default 150)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_bench)

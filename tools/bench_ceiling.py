"""``bitmod bench ceiling``: the DSP-based INT8 ceiling of a device, built and measured.

For each device, a :class:`hdl.array.dsp_array.DspMacArray` with one INT8 x INT8 MAC per DSP
(ECP5-85F: 12 x 13 = 156 MULT18X18D; iCE40UP5K: 2 x 4 = 8 SB_MAC16; other devices: the most
square ``R x C`` with ``R * C`` = its DSP count) goes through the same out-of-context flow as
``bitmod synth`` (Yosys, nextpnr, wrapper cost subtracted), and the table gives its LUT4s,
flip-flops, DSPs used of those available, Fmax and the peak throughput
``R * C * Fmax / 1000`` GMAC/s (one MAC per PE per cycle; the array sustains it across
back-to-back tiles of at least ``C`` steps). ``--array RxC`` overrides the shape.
"""

from __future__ import annotations

from bitmod.fpga.devices import get_device
from bitmod.fpga.synth import DoesNotFit, SynthError, check_timing_weight
from bitmod.golden.checks import check_number
from bitmod.golden.dsp_array import DEFAULT_MAX_K, check_params
from bitmod.tools.api import synth
from bitmod.tools.bench import report
from bitmod.tools.cli import CLIError, parse_array

DEVICES = ("ecp5-85f", "ice40-up5k")


def ceiling_shape(device) -> tuple[int, int]:
    """The most square ``(R, C)``, ``R <= C``, with ``R * C`` = the device's DSPs (156: 12x13)."""
    dsps = device.dsps
    if dsps < 1:
        raise CLIError(f"{device.name} has no DSP blocks; give --array to build an array anyway")
    rows = max(r for r in range(1, int(dsps ** 0.5) + 1) if dsps % r == 0)
    return rows, dsps // rows


def plan(device_names, array_text: str | None, max_k: int) -> list[tuple]:
    """Validate every request before any synthesis: ``[(device, rows, cols, params)]``."""
    jobs = []
    for name in device_names:
        device = get_device(name)
        rows, cols = parse_array(array_text) if array_text else ceiling_shape(device)
        params = {"rows": rows, "cols": cols, "max_k": max_k}
        check_params(**params)
        jobs.append((device, rows, cols, params))
    return jobs


def run(jobs, clock_mhz: float, seed: int = 1, timing_weight: int | None = None):
    """Yield one row per job (a dict; ``error`` set if the flow failed)."""
    for device, rows, cols, params in jobs:
        row = {"device": device.name, "array": f"{rows}x{cols}", "rows": rows, "cols": cols,
               "max_k": params["max_k"], "macs_per_cycle": rows * cols,
               "dsp_available": device.dsps}
        try:
            # router1 had not converged after 30 minutes on the 156 DSPs of the ECP5-85F
            # (their fixed sites congest the columns around them); router2 takes ~4.
            router = "router2" if device.family == "ecp5" else None
            result = synth("dsp_array", params, device=device.name, clock_mhz=clock_mhz,
                           seed=seed, router=router, timing_weight=timing_weight).to_dict()
        except DoesNotFit as error:
            yield {**row, "over": error.over}
            continue
        except SynthError as error:
            yield {**row, "error": str(error).splitlines()[0]}
            continue
        fmax = result["fmax_mhz"]
        yield {**row, "lut4": result["lut4"], "ff": result["ff"], "dsp": result["dsp"],
               "fmax_mhz": fmax, "target_mhz": clock_mhz,
               "peak_gmacs": None if fmax is None else rows * cols * fmax / 1000,
               "seconds": result["seconds"], "workdir": result["workdir"]}


HEADER = (f"{'device':11s} {'array':>6s} {'MAC/cycle':>9s} {'LUT4':>6s} {'FF':>6s} "
          f"{'DSP used/avail':>14s} {'Fmax MHz':>8s} {'peak GMAC/s':>11s}")


def format_row(row: dict) -> str:
    head = f"{row['device']:11s} {row['array']:>6s} {row['macs_per_cycle']:9d}"
    if "error" in row:
        return f"{head} FAILED: {row['error']}"
    if "over" in row:
        return f"{head} does not fit: {', '.join(row['over'])}"
    fmax = "-" if row["fmax_mhz"] is None else f"{row['fmax_mhz']:.1f}"
    peak = "-" if row["peak_gmacs"] is None else f"{row['peak_gmacs']:.2f}"
    dsp = f"{row['dsp']}/{row['dsp_available']}"
    return (f"{head} {row['lut4']:6d} {row['ff']:6d} {dsp:>14s} {fmax:>8s} {peak:>11s}")


def _bench(args) -> int:
    jobs = plan(args.device or list(DEVICES), args.array, args.max_k)
    clock = check_number("--clock", args.clock, positive=True)
    weight = None if args.timing_weight is None else check_timing_weight(args.timing_weight)
    rows = report(run(jobs, clock, args.seed, weight), HEADER, format_row, args.json)
    if not args.json:
        shown = "" if weight is None else f", placer timing weight {weight}"
        print(f"(INT8 x INT8, accumulators for K <= {args.max_k}; out of context, wrapper "
              f"cost subtracted; nextpnr target {args.clock:g} MHz, seed {args.seed}{shown})")
    return 1 if any("error" in row for row in rows) else 0


def register(bench_subparsers) -> None:
    parser = bench_subparsers.add_parser(
        "ceiling", help="DSP-based INT8 array, one MAC per DSP: LUTs, DSPs, Fmax, peak GMAC/s")
    parser.add_argument("--device", action="append",
                        help="device (repeatable; default " + ", ".join(DEVICES) + ")")
    parser.add_argument("--array", metavar="RxC",
                        help="array shape for every device (default: one PE per DSP)")
    parser.add_argument("--max-k", type=int, default=DEFAULT_MAX_K, metavar="K",
                        help="longest dot product the accumulators hold (default %(default)s)")
    parser.add_argument("--clock", type=float, default=150.0, metavar="MHZ",
                        help="nextpnr clock target (default 150)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--timing-weight", type=int, metavar="W",
                        help="nextpnr placer timing weight, 1-1000 (its default: 10)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_bench)

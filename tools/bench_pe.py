"""``bitmod bench pe``: processing elements compared on LUTs, DSPs, Fmax and throughput.

For each PE kind x weight format x lane count x device, the PE is synthesised out of context
(``bitmod synth``'s flow, wrapper cost subtracted) and the table gives:

* MACs per cycle: ``lanes / T`` for the bit-serial PE (T = terms per weight), ``lanes`` for the
  bit-parallel baselines;
* GMAC/s at the achieved Fmax;
* binary operations per LUT4 per cycle: ``MACs/cycle * w_bits * a_bits / LUT4`` (a W4A8 MAC counts
  32, the BISMO convention of docs/papers.md, Other datapaths);
* the ratio of that figure against the bit-parallel integer PE with the same lanes on the same
  device (``vs int``), which spends DSPs instead of LUTs on its products.

A configuration the device cannot hold (16 lanes of the integer PE need 16 multipliers; the
UP5K has 8 DSPs) is a row saying so, with nextpnr's count of the overused resource
(``does not fit: ICESTORM_DSP 16/8``), not a failure: the exit status is non-zero only when a
tool fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bitmod.fpga.devices import get_device
from bitmod.fpga.synth import DoesNotFit, SynthError
from bitmod.golden import pe_bitplane, pe_lut
from bitmod.golden import terms as gterms
from bitmod.golden.checks import check_int, check_number
from bitmod.golden.quantize import get_scheme
from bitmod.tools.api import synth
from bitmod.tools.bench import report

ACT_BITS = 8
DEVICES = ("ecp5-85f", "ice40-up5k")
LANES = (4, 8, 16)

@dataclass(frozen=True)
class BenchConfig:
    """One PE configuration of the benchmark (the lane count is added per row).

    Attributes
    ----------
    label : str
        What the ``weights`` column shows.
    component : str
        The registry name (:mod:`bitmod.hdl.registry`) synthesised.
    scheme : str
        The weight scheme (sets the component's weight format and ``w_bits``).
    params : dict
        Component parameters besides ``lanes``.
    cycles_per_step : callable or None
        ``cycles_per_step(w_bits, a_bits)``: cycles one weight-step of ``lanes`` weights takes
        (``MACs/cycle = lanes / cycles``); ``None``: the bit-serial PE's terms per weight.
    """

    label: str
    component: str
    scheme: str
    params: dict = field(default_factory=dict)
    cycles_per_step: Callable[[int, int], int] | None = None


def _one_cycle(w_bits: int, a_bits: int) -> int:
    return 1


# kind -> its configurations
CONFIGS = {
    "bitserial": [
        BenchConfig("bitmod4 (FP4 mix)", "bitserial_pe", "bitmod4"),
        BenchConfig("bitmod3 (FP3 mix)", "bitserial_pe", "bitmod3"),
        BenchConfig("int4", "bitserial_pe", "int4"),
        BenchConfig("int8", "bitserial_pe", "int8"),
        BenchConfig("khot2", "bitserial_pe", "khot2"),
    ],
    "int": [
        BenchConfig("int8 x int8", "int_pe", "int8", cycles_per_step=_one_cycle),
        BenchConfig("int4 x int8", "int_pe", "int4", cycles_per_step=_one_cycle),
    ],
    "minifloat": [
        BenchConfig("e2m1 x e4m3", "minifloat_pe", "fp4", {"a_format": "fp8_e4m3"},
                    cycles_per_step=_one_cycle),
    ],
    "lut": [
        BenchConfig("int4 x int8 table", "lut_pe", "int4", {"table_group": 2},
                    cycles_per_step=pe_lut.cycles_per_step),
    ],
    "bitplane": [
        BenchConfig("int4 x int8 planes", "bitplane_pe", "int4", {"act_bits": 8},
                    cycles_per_step=pe_bitplane.cycles_per_step),
    ],
}


def _cycles_per_step(config: BenchConfig, w_bits: int) -> int:
    """Cycles per weight-step: the bit-serial PE's terms per weight unless the config says."""
    if config.cycles_per_step is not None:
        return config.cycles_per_step(w_bits, ACT_BITS)
    return gterms.terms_per_weight(list(get_scheme(config.scheme).formats))


def run(kinds, lanes_list, devices, clock_mhz: float):
    """Yield one result dict per configuration: figures, ``fits: False`` with the overused
    resources (``over``) for one the device cannot hold, or ``error`` when a tool failed."""
    baseline_ops_per_lut = {}
    for kind in kinds:
        for config in CONFIGS[kind]:
            component, scheme = config.component, config.scheme
            w_bits = get_scheme(scheme).bits
            for lanes in lanes_list:
                for device in devices:
                    full = {**config.params, "lanes": lanes}
                    row = {"kind": kind, "weights": config.label, "scheme": scheme, "lanes": lanes,
                           "device": device}
                    try:
                        result = synth(component, full, scheme=scheme, device=device,
                                       clock_mhz=clock_mhz)
                    except DoesNotFit as error:
                        yield {**row, "fits": False, "over": error.over,
                               "utilization": error.utilization}
                        continue
                    except (SynthError, ValueError) as error:
                        yield {**row, "error": str(error).splitlines()[0]}
                        continue
                    macs = lanes / _cycles_per_step(config, w_bits)
                    ops_per_lut = macs * w_bits * ACT_BITS / max(result.lut4, 1)
                    if component == "int_pe" and w_bits == 8:
                        baseline_ops_per_lut[(lanes, device)] = ops_per_lut
                    base = baseline_ops_per_lut.get((lanes, device))
                    yield {
                        **row, "fits": True, "lut4": result.lut4, "ff": result.ff,
                        "dsp": result.dsp,
                        "fmax_mhz": result.fmax_mhz, "macs_per_cycle": macs,
                        "gmacs": macs * (result.fmax_mhz or 0) / 1000,
                        "ops_per_lut4": ops_per_lut,
                        "vs_int": None if base is None else ops_per_lut / base,
                    }


HEADER = (f"{'kind':10s} {'weights':18s} {'L':>3s} {'device':11s} {'LUT4':>6s} {'FF':>6s} "
          f"{'DSP':>4s} {'Fmax':>6s} {'MAC/c':>6s} {'GMAC/s':>7s} {'op/LUT':>7s} {'vs int':>7s}")


def _format(row: dict) -> str:
    head = f"{row['kind']:10s} {row['weights']:18s} {row['lanes']:3d} {row['device']:11s}"
    if "error" in row:
        return f"{head} FAILED: {row['error']}"
    if not row["fits"]:
        return f"{head} does not fit: {', '.join(row['over'])}"
    ratio = "-" if row["vs_int"] is None else f"{row['vs_int']:.2f}"
    fmax = "-" if row["fmax_mhz"] is None else f"{row['fmax_mhz']:.0f}"
    return (f"{head} {row['lut4']:6d} {row['ff']:6d} {row['dsp']:4d} {fmax:>6s} "
            f"{row['macs_per_cycle']:6.2f} {row['gmacs']:7.2f} {row['ops_per_lut4']:7.3f} "
            f"{ratio:>7s}")


def _bench(args) -> int:
    # int first: it is the baseline of the "vs int" column
    kinds = args.kind or ["int", *(kind for kind in CONFIGS if kind != "int")]
    lanes = [check_int("--lanes", v, 1) for v in args.lanes or LANES]
    devices = [get_device(name).name for name in args.device or DEVICES]
    clock = check_number("--clock", args.clock, positive=True)
    rows = report(run(kinds, lanes, devices, clock), HEADER, _format, args.json)
    return 1 if any("error" in row for row in rows) else 0


def register(bench_subparsers) -> None:
    parser = bench_subparsers.add_parser(
        "pe", help="PE kinds x weight formats x lanes x devices: LUTs, Fmax, GMAC/s, ops/LUT")
    parser.add_argument("--kind", action="append", choices=sorted(CONFIGS),
                        help="PE kind (repeatable; default all)")
    parser.add_argument("--lanes", action="append", type=int,
                        help="lane count (repeatable; default 4, 8, 16)")
    parser.add_argument("--device", action="append",
                        help="device (repeatable; default " + ", ".join(DEVICES) + ")")
    parser.add_argument("--clock", type=float, default=150.0, metavar="MHZ",
                        help="nextpnr clock target (default 150)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_bench)

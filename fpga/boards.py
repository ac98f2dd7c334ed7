"""Board targets: the clock, UART pins, PLL and default accelerator size of each supported board.

A :class:`Board` names an amaranth-boards platform, the clock input and the UART resource it
uses, the core clock the board is built for by default and the largest array that meets timing
there (``docs/boards.md`` has the measurements). ``bare-<device>`` targets exist for every
device of :data:`fpga.devices.DEVICES`: no board, no PLL, the clock arrives on a pin at the
core frequency and nextpnr places the I/O itself.

PLL settings are computed here (:func:`ecp5_pll`, :func:`ice40_pll`) from the input and the
requested output frequency, by exhaustive search over the divider ranges of the datasheets
(the same search ``ecppll``/``icepll`` do; ``tests/test_boards.py`` checks the achieved
frequency against those tools). A clock outside the PLL's range, or one no divider setting
reaches within ``tolerance``, raises :class:`ClockError` naming the nearest achievable clocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .devices import DEVICES, Device, get_device

__all__ = ["BOARDS", "DEFAULT_PE", "DEFAULT_SCHEME", "Board", "ClockError", "PLLConfig",
           "board_names", "ecp5_pll", "get_board", "ice40_pll", "make_pll"]

DEFAULT_TOLERANCE = 0.01  # relative clock error accepted from a PLL
# The PE kind and weight scheme of a board that names none, and of a build that picks another
# PE kind than its board's default: the bit-serial BitMoD datapath.
DEFAULT_PE = "bitserial"
DEFAULT_SCHEME = "bitmod4"


class ClockError(ValueError):
    """The requested core clock cannot be made from the board's clock input."""


@dataclass(frozen=True)
class PLLConfig:
    """One PLL setting.

    Attributes
    ----------
    family : str
        ``"ecp5"`` (``EHXPLLL``) or ``"ice40"`` (``SB_PLL40_PAD``, SIMPLE feedback).
    fin_mhz, fout_mhz, fvco_mhz : float
        Input, achieved output and VCO frequency.
    params : dict
        ECP5: ``clki_div``, ``clkfb_div``, ``clkop_div``, ``clkop_cphase``; iCE40: ``divr``,
        ``divf``, ``divq``, ``filter_range`` (the primitive's parameters).
    """

    family: str
    fin_mhz: float
    fout_mhz: float
    fvco_mhz: float
    params: dict = field(default_factory=dict)

    def describe(self) -> str:
        body = " ".join(f"{k.upper()}={v}" for k, v in self.params.items())
        return f"{self.fin_mhz:g} -> {self.fout_mhz:.4g} MHz (VCO {self.fvco_mhz:.4g}; {body})"


def _check_clock(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of MHz, not {value!r}")
    if not value > 0:
        raise ClockError(f"{name} must be positive, not {value}")
    return float(value)


def _choose(candidates, fin: float, fout: float, tolerance: float, family: str,
            out_range: tuple[float, float]):
    """The candidate closest to ``fout`` (ties: VCO nearest the middle of its range)."""
    lo, hi = out_range
    if not lo <= fout <= hi:
        raise ClockError(f"{family} PLL output {fout:g} MHz is outside {lo:g}..{hi:g} MHz")
    best = min(candidates, key=lambda c: c[0], default=None)
    if best is None:
        raise ClockError(f"no {family} PLL setting makes any clock from {fin:g} MHz")
    error = abs(best[1] - fout) / fout
    if error > tolerance:
        below = max((c[1] for c in candidates if c[1] <= fout), default=None)
        above = min((c[1] for c in candidates if c[1] >= fout), default=None)
        near = ", ".join(f"{f:.4g}" for f in (below, above) if f is not None)
        raise ClockError(f"{family} PLL cannot make {fout:g} MHz from {fin:g} MHz within "
                         f"{tolerance:.1%} (nearest: {near} MHz)")
    return best


# ECP5 EHXPLLL limits (Lattice FPGA-TN-02200, sysCLOCK PLL; the ranges ecppll uses).
ECP5_IN = (8.0, 400.0)
ECP5_OUT = (3.125, 400.0)
ECP5_PFD = (3.125, 400.0)
ECP5_VCO = (400.0, 800.0)


def ecp5_pll(fin_mhz: float, fout_mhz: float, tolerance: float = DEFAULT_TOLERANCE
             ) -> PLLConfig:
    """ECP5 ``EHXPLLL`` setting with CLKOP fed back: ``fout = fin * CLKFB_DIV / CLKI_DIV``.

    ``fpfd = fin / CLKI_DIV`` (1..128) in 3.125..400 MHz, ``fvco = fout * CLKOP_DIV`` (1..128)
    in 400..800 MHz, ``CLKFB_DIV`` 1..80. ``CLKOP_CPHASE = CLKOP_DIV - 1`` (zero phase with
    CLKOP feedback, as LiteX sets it).

    Raises
    ------
    ClockError
        Input or output out of range, or no setting within ``tolerance``.
    """
    fin = _check_clock("fin_mhz", fin_mhz)
    fout = _check_clock("fout_mhz", fout_mhz)
    if not ECP5_IN[0] <= fin <= ECP5_IN[1]:
        raise ClockError(f"ecp5 PLL input {fin:g} MHz is outside {ECP5_IN[0]:g}..{ECP5_IN[1]:g}")
    candidates = []
    for clki in range(1, 129):
        fpfd = fin / clki
        if not ECP5_PFD[0] <= fpfd <= ECP5_PFD[1]:
            continue
        for clkfb in range(1, 81):
            f = fpfd * clkfb
            if not ECP5_OUT[0] <= f <= ECP5_OUT[1]:
                continue
            # The output divider only has to put the VCO in range; take the one nearest 600.
            divs = [d for d in range(1, 129) if ECP5_VCO[0] <= f * d <= ECP5_VCO[1]]
            if not divs:
                continue
            clkop = min(divs, key=lambda d: abs(f * d - 600.0))
            key = (abs(f - fout), abs(f * clkop - 600.0), clki)
            candidates.append((key, f, (clki, clkfb, clkop)))
    _, f, (clki, clkfb, clkop) = _choose(candidates, fin, fout, tolerance, "ecp5", ECP5_OUT)
    return PLLConfig("ecp5", fin, f, f * clkop,
                     {"clki_div": clki, "clkfb_div": clkfb, "clkop_div": clkop,
                      "clkop_cphase": clkop - 1})


# iCE40 SB_PLL40 limits (iCE40 sysCLOCK PLL design guide; the ranges icepll uses).
ICE40_IN = (10.0, 133.0)
ICE40_OUT = (16.0, 275.0)
ICE40_PFD = (10.0, 133.0)
ICE40_VCO = (533.0, 1066.0)


def _ice40_filter_range(fpfd: float) -> int:
    for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if fpfd < limit:
            return value
    return 6


def ice40_pll(fin_mhz: float, fout_mhz: float, tolerance: float = DEFAULT_TOLERANCE
              ) -> PLLConfig:
    """iCE40 ``SB_PLL40`` setting, SIMPLE feedback: ``fout = fin (DIVF+1) / ((DIVR+1) 2**DIVQ)``.

    ``fpfd = fin / (DIVR + 1)`` (DIVR 0..15) in 10..133 MHz, ``fvco = fpfd * (DIVF + 1)``
    (DIVF 0..127) in 533..1066 MHz, DIVQ 1..6; ``FILTER_RANGE`` from ``fpfd`` as icepll.

    Raises
    ------
    ClockError
        Input or output out of range, or no setting within ``tolerance``.
    """
    fin = _check_clock("fin_mhz", fin_mhz)
    fout = _check_clock("fout_mhz", fout_mhz)
    if not ICE40_IN[0] <= fin <= ICE40_IN[1]:
        raise ClockError(f"ice40 PLL input {fin:g} MHz is outside "
                         f"{ICE40_IN[0]:g}..{ICE40_IN[1]:g}")
    candidates = []
    for divr in range(16):
        fpfd = fin / (divr + 1)
        if not ICE40_PFD[0] <= fpfd <= ICE40_PFD[1]:
            continue
        for divf in range(128):
            fvco = fpfd * (divf + 1)
            if not ICE40_VCO[0] <= fvco <= ICE40_VCO[1]:
                continue
            for divq in range(1, 7):
                f = fvco / (1 << divq)
                if ICE40_OUT[0] <= f <= ICE40_OUT[1]:
                    candidates.append(((abs(f - fout), divr, divf), f, (divr, divf, divq, fvco)))
    _, f, (divr, divf, divq, fvco) = _choose(candidates, fin, fout, tolerance, "ice40",
                                             ICE40_OUT)
    return PLLConfig("ice40", fin, f, fvco,
                     {"divr": divr, "divf": divf, "divq": divq,
                      "filter_range": _ice40_filter_range(fin / (divr + 1))})


def make_pll(family: str, fin_mhz: float, fout_mhz: float,
             tolerance: float = DEFAULT_TOLERANCE) -> PLLConfig | None:
    """PLL setting for ``family``, or ``None`` when ``fout`` equals ``fin`` (no PLL needed)."""
    if abs(fout_mhz - fin_mhz) <= 1e-9 * fin_mhz:
        return None
    if family == "ecp5":
        return ecp5_pll(fin_mhz, fout_mhz, tolerance)
    if family == "ice40":
        return ice40_pll(fin_mhz, fout_mhz, tolerance)
    raise ValueError(f"family must be 'ecp5' or 'ice40', not {family!r}")


@dataclass(frozen=True)
class Board:
    """One build target.

    Attributes
    ----------
    name : str
        ``bitmod build --board`` name.
    description : str
    device : str
        The :data:`fpga.devices.DEVICES` name of the FPGA (resource totals, bare flow).
    platform : callable or None
        Returns a fresh amaranth-boards platform; ``None`` for a bare-device target.
    clock_resource : str
        The platform's clock input resource (``None`` for bare targets).
    input_mhz : float
        Its frequency (bare targets: none; the clock pin runs at the core clock).
    uart : tuple or None
        ``(rx_pin, tx_pin, attrs)`` of a UART to add to the platform when it defines none
        (OrangeCrab: Feather header pins 0/1); ``None`` when the platform has ``uart`` 0.
    clock_mhz : float
        Default core clock.
    rows, cols, lanes : int
        Default array (the largest measured to meet timing at ``clock_mhz``).
    max_m, max_n, max_k : int
        Default buffer sizes.
    serializer_stages : int
        The column tops' extra register stages
        (:attr:`golden.gemm.DatapathParams.serializer_stages`; 0 where the logic cells are
        scarce).
    feed_stages : int
        The feed's extra register stages between the block RAMs and the array
        (:attr:`golden.core.CoreConfig.feed_stages`; a cycle more per job each).
    group_size : int
        Default weight group size ``G`` the core is built for. The bit-serial PEs reach their
        peak ``R * C * L / T`` MACs per cycle only when a group's ``T * G / L`` cycles cover
        the dequantizer's ``D = 8`` (``G >= 8 * L / T``: 32 for 8 lanes, 64 for 16); a
        shorter group waits for it (:func:`golden.gemm.gemm_cycles`). 16 on every board: G =
        128 took the ULX3S 10 x 10 x 8 over nextpnr's placement cliff (docs/boards.md).
    router : str
        Default nextpnr router (``router2`` where ``router1`` does not converge on the
        default array).
    timing_weight : int or None
        Default timing weight of nextpnr's HeAP placer (``--placer-heap-timingweight``;
        ``None``: nextpnr's own, 10), where a heavier one places the default array faster
        (docs/boards.md).
    fold_resets : bool
        Fold the kept-apart registers' resets into their flip-flops before synthesis
        (:meth:`fpga.devices.Device.pre_synth`); no board does by default.
    bram_outreg : bool
        ECP5: the flip-flops right after a block RAM's read port become its output register
        (:mod:`fpga.outreg`), where they are the same logic (the reader's stage 2 with feed
        stages).
    pe, scheme : str
        Default PE kind (:data:`golden.gemm.PE_KINDS`) and weight scheme: the fastest measured
        design on the board (the iCEBreaker's int PEs, two products per DSP block, run
        ``int4``; the others the bit-serial BitMoD datapath).
    kind_arrays : tuple
        ``(pe, rows, cols, lanes, clock_mhz)`` for PE kinds other than :attr:`pe` whose
        largest array (and clock) differ from the defaults above (:meth:`defaults_for`).
    split_link : bool
        When a PLL makes the core clock, the UART bridge runs on the input clock in a domain
        of its own (``fpga.top.AcceleratorTop``), so its paths never bound the core clock.
        The ECP5 boards (their input clock can feed the fabric beside the PLL); the
        iCEBreaker's PLL takes its pad.
    """

    name: str
    description: str
    device: str
    platform: Callable | None
    clock_resource: str | None
    input_mhz: float | None
    clock_mhz: float
    rows: int
    cols: int
    lanes: int = 4
    max_m: int = 16
    max_n: int = 16
    max_k: int = 64
    group_size: int = 16
    serializer_stages: int = 0
    feed_stages: int = 0
    uart: tuple | None = None
    router: str = "router1"
    timing_weight: int | None = None
    fold_resets: bool = False
    bram_outreg: bool = False
    pe: str = DEFAULT_PE
    scheme: str = DEFAULT_SCHEME
    kind_arrays: tuple = ()
    split_link: bool = False

    def defaults_for(self, pe: str | None = None) -> dict:
        """``rows``, ``cols``, ``lanes`` and ``clock_mhz`` a build of PE kind ``pe`` (default
        :attr:`pe`) starts from."""
        for kind, rows, cols, lanes, clock_mhz in self.kind_arrays:
            if kind == pe:
                return {"rows": rows, "cols": cols, "lanes": lanes, "clock_mhz": clock_mhz}
        return {"rows": self.rows, "cols": self.cols, "lanes": self.lanes,
                "clock_mhz": self.clock_mhz}

    @property
    def family(self) -> str:
        return get_device(self.device).family

    @property
    def bare(self) -> bool:
        return self.platform is None

    @property
    def fpga(self) -> Device:
        return get_device(self.device)

    def pll(self, clock_mhz: float | None = None,
            tolerance: float = DEFAULT_TOLERANCE) -> PLLConfig | None:
        """PLL from the board clock to ``clock_mhz`` (default :attr:`clock_mhz`); ``None``
        when no PLL is needed (bare targets, or the input clock is the core clock)."""
        fout = self.clock_mhz if clock_mhz is None else _check_clock("clock_mhz", clock_mhz)
        if self.bare:
            return None
        return make_pll(self.family, self.input_mhz, fout, tolerance)


def _platform(module: str, cls: str) -> Callable:
    def make():
        import importlib

        return getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)()
    make.__name__ = f"{module}.{cls}"
    return make


_ORANGECRAB_UART = ("N17", "M18", {"IO_TYPE": "LVCMOS33", "PULLMODE": "UP"})

BOARDS: dict[str, Board] = {
    board.name: board
    for board in (
        Board("icebreaker", "1BitSquared iCEBreaker (iCE40UP5K-SG48), FTDI UART",
              "ice40-up5k", _platform("icebreaker", "ICEBreakerPlatform"), "clk12", 12.0,
              # int PEs 2x2 x 4 lanes on the 8 DSP blocks (two 8x8 products each): 16 MACs
              # per cycle at 25.125 MHz. Bit-serial PEs: 2x2 with 4 lanes no longer places
              # (5,026-5,094 of 5,280 LCs); 2 lanes close at 22.5 MHz (docs/boards.md).
              clock_mhz=25.125, rows=2, cols=2, lanes=4, max_m=8, max_n=8, max_k=32,
              pe="int", scheme="int4", kind_arrays=(("bitserial", 2, 2, 2, 22.5),
                                                    ("lut", 2, 2, 2, 22.5),
                                                    ("bitplane", 2, 2, 2, 22.5))),
        Board("ulx3s-85f", "Radiona ULX3S with LFE5U-85F, FTDI UART",
              "ecp5-85f", _platform("ulx3s", "ULX3S_85F_Platform"), "clk25", 25.0,
              # 10x10 PEs x 8 lanes met 82 MHz (PLL 82.14) on seeds 1 and 2 (84.19 and
              # 83.63 MHz on the 2026-12-07 RTL, 49,672 LUT4 of 83,640, 58,581 FF: at
              # nextpnr's legalisation cliff): 400 MACs per cycle, 32.9 GMAC/s, 3.0x the
              # DSP INT8 ceiling. On the RTL since e8d9dc6 seed 1 misses it (79.36 MHz; seed
              # 2 82.84); on bc9a77e seed 1 77.44, seed 2 82.27 (met); on 94f1b0b seed 1
              # 90.91 (met), seed 2 66.84 (the drain's merger): docs/boards.md, "The
              # default's clock again" and "The 16-lane netlist through Yosys again"; the
              # same RTLIL on e0b5200. 7x6x16 with one feed stage (feed_stages=1) reached
              # 96.56 MHz (seed 2) and 84.85 (seed 1) asked for 100: "a feed stage"; with
              # the banks' own lane masks and step taken and the columns' own pops (a24a36d)
              # 56.02, 90.91, 92.42, 86.61 on seeds 1-4: "the columns' own pops"; with the
              # block RAMs' output registers (--bram-outreg) and the feed's flags (b8bc288)
              # 98.47 and 96.03 on seeds 1 and 2: "the block RAMs' output registers".
              clock_mhz=82.0, rows=10, cols=10, lanes=8, max_m=64, max_n=64, max_k=256,
              router="router2", split_link=True),
        Board("orangecrab-85f", "OrangeCrab r0.2 with LFE5U-85F, UART on Feather pins 0 (RX) "
              "and 1 (TX)", "ecp5-85f", _platform("orangecrab_r0_2", "OrangeCrabR0_2_85FPlatform"),
              # 10x10 PEs x 8 lanes meet 96 MHz (PLL 48 -> 96) on seeds 1 and 2 (111.26
              # and 102.96 MHz on the 2026-12-07 RTL, 49,791 LUT4 of 83,640): 400 MACs per
              # cycle, 38.4 GMAC/s. Asked for 100 MHz, seed 1 stopped at 99.54. The same
              # array on the ULX3S's speed grade 6 stops at 85 MHz (docs/boards.md). On the
              # RTL of 5e84b40 seed 1 misses 96 MHz (82.74, the drain's merger; "a feed stage").
              "clk", 48.0, clock_mhz=96.0, rows=10, cols=10, lanes=8, max_m=64, max_n=64,
              max_k=256, uart=_ORANGECRAB_UART, router="router2", split_link=True),
        Board("orangecrab-25f", "OrangeCrab r0.2 with LFE5U-25F, UART on Feather pins 0 (RX) "
              "and 1 (TX)", "ecp5-25f", _platform("orangecrab_r0_2", "OrangeCrabR0_2_25FPlatform"),
              # 7x5 PEs x 4 lanes meet 100 MHz (PLL 48 -> 100) on seeds 1 and 2 (115.58 and
              # 116.86 MHz, 2026-12-07): 70 MACs per cycle, 7.0 GMAC/s. 8x5 (8.0 GMAC/s, met
              # on 2026-12-06) no longer synthesizes correctly: Yosys 0.69's ABC9 leaves three
              # flip-flop outputs multiply driven in its netlist (docs/synthesis.md).
              "clk", 48.0, clock_mhz=100.0, rows=7, cols=5, lanes=4, max_m=32, max_n=32,
              max_k=128, uart=_ORANGECRAB_UART, router="router2", split_link=True),
    )
}
BOARDS.update({
    f"bare-{device.name}": Board(
        f"bare-{device.name}", f"bare {device.name}: clock on a pin, I/O placed by nextpnr",
        device.name, None, None, None,
        clock_mhz=18.0 if device.family == "ice40" else 50.0, rows=1, cols=1, lanes=4,
        max_m=8, max_n=8, max_k=32)
    for device in DEVICES.values()
})


def board_names() -> list[str]:
    return list(BOARDS)


def get_board(name: str) -> Board:
    """Look up a board; ``ValueError`` lists the known names in one line."""
    try:
        return BOARDS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None

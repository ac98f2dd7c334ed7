"""Bitstream builds for board and bare-device targets, and their resource/timing report.

:func:`build` elaborates :class:`fpga.top.BoardTop` for a board (amaranth-boards platform,
Yosys + nextpnr + ecppack/icepack from YoWASP, run by Amaranth's generated build script) or
:class:`fpga.top.AcceleratorTop` for a ``bare-<device>`` target (:func:`fpga.synth.run_flow`,
I/O placed by nextpnr). Outputs land in ``build/boards/<board>-<hash>/`` (``build/`` is
git-ignored; the hash covers every build parameter). The result carries a
:class:`~fpga.synth.SynthReport` (LUT4/FF/carry/DSP/BRAM counts from Yosys' ``stat``, Fmax from
nextpnr's JSON report), whether timing is met at the PLL's achieved clock, and the bitstream.

A design that does not fit raises :class:`BuildError` naming the overused resource; a missed
clock is *not* an error here (``timing_met`` is false and Fmax is reported, nextpnr running with
``--timing-allow-fail``): ``bitmod build`` turns it into a non-zero exit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bitmod.golden.checks import BitmodError, check_bool, check_choice, check_int, check_number
from bitmod.golden.core import CoreConfig
from bitmod.golden.gemm import core_weights, runs_as_is
from bitmod.golden.protocol import LinkConfig
from bitmod.toolchain import apply_tool_environment, build_root, export_verilog

from .boards import DEFAULT_PE, DEFAULT_SCHEME, Board, PLLConfig, get_board
from .synth import (
    NEXTPNR_TIMING_WEIGHT,
    ROUTERS,
    SynthError,
    SynthReport,
    _count_cells,
    check_timing_weight,
    run_flow,
)

__all__ = ["BuildConfig", "BuildError", "BuildResult", "StageWatcher", "board_plan", "build",
           "outreg_wrapper"]

# ``progress(stage, detail=None)``: a new stage starts a new step; detail updates the running one.
ProgressFn = Callable[..., None]


class BuildError(RuntimeError, BitmodError):
    """The build failed (tool error or design too large); the message is one line + log path.
    ``over`` lists the overused resources (``"NAME used/available"``) when the design does not
    fit, else it is empty."""

    def __init__(self, message: str, over: list[str] | None = None):
        super().__init__(message)
        self.over = list(over or [])


@dataclass(frozen=True)
class BuildConfig:
    """Everything that defines a build, validated once (hashed into the output folder name).

    Fields left ``None`` take the board's defaults (:class:`fpga.boards.Board`) when the config
    is made, so a ``BuildConfig`` is always complete; :attr:`core` and :attr:`link` are the
    configurations of what the bitstream holds.

    Attributes
    ----------
    board : str
        A :data:`fpga.boards.BOARDS` name.
    scheme : str
        Weight scheme (:func:`golden.quantize.scheme_names`; board default:
        :attr:`fpga.boards.Board.scheme`) the core is built for
        (:func:`golden.gemm.scheme_formats`); an asymmetric one on a PE kind that corrects by
        zero points builds the core with ``zero_points`` (:func:`golden.gemm.runs_zero_points`),
        on the others with its zero points folded into wider codes.
    rows, cols, lanes : int
        The array (board default for the PE kind: the largest measured to meet timing,
        :meth:`fpga.boards.Board.defaults_for`).
    pe : str
        PE kind (:data:`golden.gemm.PE_KINDS`; board default: :attr:`fpga.boards.Board.pe`):
        ``"bitserial"``, ``"int"`` (bit-parallel multipliers, DSP blocks where the device has
        them; two products per iCE40 UltraPlus block), ``"minifloat"`` (exact minifloat
        products, MX schemes), ``"lut"`` or ``"bitplane"``.
    clock_mhz : float
        Requested core clock (board default for the PE kind); the PLL's achieved clock is
        :attr:`achieved_mhz`.
    act : str
        Activation format (:data:`golden.bfp.ACT_FORMATS`).
    group_size, max_m, max_n, max_k : int
        Weight group size and buffer bounds (default: the board's).
    baud, seed, router :
        UART bit rate, nextpnr placement seed and router.
    timing_weight : int, optional
        nextpnr's placer timing weight (default the board's,
        :attr:`fpga.boards.Board.timing_weight`; :data:`fpga.synth.NEXTPNR_TIMING_WEIGHT`
        when neither gives one), 1 .. 1000.
    fold_resets : bool, optional
        Fold the kept-apart registers' resets into their flip-flops before synthesis
        (:meth:`fpga.devices.Device.pre_synth`; default the board's,
        :attr:`fpga.boards.Board.fold_resets`).
    bram_outreg : bool, optional
        ECP5: move the flip-flops right after each block RAM's read port into its output
        register between Yosys and nextpnr (:mod:`fpga.outreg`; default the board's,
        :attr:`fpga.boards.Board.bram_outreg`).
    """

    board: str
    scheme: str | None = None
    rows: int | None = None
    cols: int | None = None
    lanes: int | None = None
    clock_mhz: float | None = None
    act: str = "int8"
    group_size: int | None = None
    max_m: int | None = None
    max_n: int | None = None
    max_k: int | None = None
    baud: int = 115200
    seed: int = 1
    router: str | None = None
    timing_weight: int | None = None
    fold_resets: bool | None = None
    pe: str | None = None
    bram_outreg: bool | None = None

    def __post_init__(self):
        put = functools.partial(object.__setattr__, self)
        board = get_board(self.board)
        put("board", board.name)
        if self.pe is None:
            # A scheme given without a PE kind runs on the board's default kind when that kind
            # takes its formats as they are, else on the bit-serial PE, which takes every
            # scheme the core runs (bitmod4 as int6 on the iCEBreaker's int PEs filled 98 %
            # of the LCs and did not place on seed 2).
            put("pe", board.pe if self.scheme is None or runs_as_is(self.scheme, board.pe)
                else DEFAULT_PE)
        if self.scheme is None:  # the board's scheme on its PE kind, BitMoD's on another
            put("scheme", board.scheme if self.pe == board.pe else DEFAULT_SCHEME)
        for name, value in board.defaults_for(self.pe).items():
            if getattr(self, name) is None:
                put(name, value)
        for name in ("group_size", "max_m", "max_n", "max_k"):
            if getattr(self, name) is None:
                put(name, getattr(board, name))
        put("clock_mhz", check_number("clock_mhz", self.clock_mhz, positive=True))
        if self.router is None:
            put("router", board.router)
        check_choice("router", self.router, ROUTERS)
        if self.timing_weight is None:
            put("timing_weight", board.timing_weight or NEXTPNR_TIMING_WEIGHT)
        put("timing_weight", check_timing_weight(self.timing_weight))
        if self.fold_resets is None:
            put("fold_resets", board.fold_resets)
        check_bool("fold_resets", self.fold_resets)
        if self.fold_resets and board.fpga.family != "ecp5":
            raise ValueError(f"fold_resets applies to ECP5 builds only, not {board.name} "
                             f"({board.fpga.name}: its flow keeps no copies apart)")
        if self.bram_outreg is None:
            put("bram_outreg", board.bram_outreg)
        check_bool("bram_outreg", self.bram_outreg)
        if self.bram_outreg and (board.fpga.family != "ecp5" or board.bare):
            raise ValueError(f"bram_outreg applies to ECP5 board builds only, not {board.name}")
        put("seed", check_int("seed", self.seed, 0))
        board.pll(self.clock_mhz)  # an impossible clock fails here, before any work
        self.core  # noqa: B018 (validates the scheme and the core parameters)
        self.link  # noqa: B018 (validates the baud rate at the achieved clock)

    @property
    def target(self) -> Board:
        """The :class:`fpga.boards.Board`."""
        return get_board(self.board)

    @functools.cached_property
    def pll(self) -> PLLConfig | None:
        return self.target.pll(self.clock_mhz)

    @property
    def achieved_mhz(self) -> float:
        """The core clock the board runs at: the PLL's output (bare targets and boards whose
        input is the core clock: the requested clock)."""
        return self.pll.fout_mhz if self.pll is not None else float(self.clock_mhz)

    @functools.cached_property
    def core(self) -> CoreConfig:
        """The accelerator core the bitstream holds."""
        formats, zero_points = core_weights(self.scheme, self.pe)
        return CoreConfig(rows=self.rows, cols=self.cols, lanes=self.lanes,
                          group_size=self.group_size, formats=formats,
                          act_format=self.act, max_m=self.max_m, max_n=self.max_n,
                          max_k=self.max_k, pe_kind=self.pe, zero_points=zero_points,
                          serializer_stages=self.target.serializer_stages,
                          feed_stages=self.target.feed_stages)

    @functools.cached_property
    def link(self) -> LinkConfig:
        """The UART link: at the achieved core clock, or on the board's input clock beside the
        core's PLL (:attr:`fpga.boards.Board.split_link`)."""
        core_hz = self.achieved_mhz * 1e6
        if self.target.split_link and self.pll is not None:
            return LinkConfig(clk_freq=self.target.input_mhz * 1e6, baud=self.baud,
                              core_clk_freq=core_hz)
        return LinkConfig(clk_freq=core_hz, baud=self.baud)

    def params(self) -> dict:
        """Every field, board defaults filled in (JSON-ready)."""
        return asdict(self)

    def key(self) -> str:
        text = json.dumps(self.params(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def workdir(self) -> Path:
        return build_root() / "boards" / f"{self.board}-{self.key()}"


@dataclass
class BuildResult:
    """A finished build: its configuration, PLL, resources, timing and the bitstream."""

    config: BuildConfig
    clock_mhz: float  # achieved core clock (the PLL's output)
    pll: str | None
    report: SynthReport
    bitstream: str
    seconds: float
    workdir: str

    @property
    def board(self) -> str:
        return self.config.board

    @property
    def device(self) -> str:
        return self.config.target.device

    @property
    def timing_met(self) -> bool:
        return self.report.timing_met

    @property
    def fmax_mhz(self) -> float | None:
        return self.report.fmax_mhz

    def macs_per_cycle(self) -> float:
        """Peak ``R * C * L / T`` (``T`` terms per weight: 2 for the 3- and 4-bit mixtures on
        bit-serial PEs, 1 on int PEs)."""
        core = self.config.core
        return core.rows * core.cols * core.lanes / core.array.terms

    def peak_gmacs(self) -> float:
        return self.macs_per_cycle() * self.clock_mhz / 1e3

    def as_dict(self) -> dict:
        r = self.report
        return {
            "board": self.board, "device": self.device, "params": self.config.params(),
            "clock_mhz": self.clock_mhz, "pll": self.pll,
            "lut4": r.lut4, "ff": r.ff, "carry": r.carry, "dsp": r.dsp, "bram": r.bram,
            "fmax_mhz": r.fmax_mhz, "timing_met": self.timing_met,
            "utilization": r.utilization, "macs_per_cycle": self.macs_per_cycle(),
            "peak_gmacs": round(self.peak_gmacs(), 4), "bitstream": self.bitstream,
            "seconds": round(self.seconds, 1), "workdir": self.workdir,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)


_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%")


def overused(log_text: str) -> list[str]:
    """``"NAME used/available"`` for every resource nextpnr's utilisation lines show above 100 %."""
    out = []
    for line in log_text.splitlines():
        match = _UTIL_LINE.match(line.strip() if line.startswith("Info") else line)
        if match and int(match[2]) > int(match[3]):
            out.append(f"{match[1]} {match[2]}/{match[3]}")
    return out


def _fail(step: str, workdir: Path, logs: list[str]) -> BuildError:
    texts = [(workdir / name).read_text(errors="replace") for name in logs
             if (workdir / name).exists()]
    for text in texts:
        over = overused(text)
        if over:
            return BuildError(f"design does not fit: {', '.join(over)} (log: {workdir})", over)
    errors = [line.strip() for text in texts for line in text.splitlines() if "ERROR" in line]
    detail = errors[-1] if errors else f"{step} failed"
    return BuildError(f"{detail} (log: {workdir})")


def _parse_report(workdir: Path, device, target_mhz: float, seconds: float) -> SynthReport:
    """The build's counts (Yosys's ``stat``, less the flip-flops :mod:`fpga.outreg` moved into
    block RAMs: its ``outreg.json``), nextpnr's Fmax and utilisation."""
    stat = json.loads((workdir / "stat.json").read_text())
    cells = {name: int(count)
             for name, count in stat["design"].get("num_cells_by_type", {}).items()}
    moved = workdir / "outreg.json"
    if moved.exists():
        cells["TRELLIS_FF"] -= int(json.loads(moved.read_text())["flip_flops"])
    report = json.loads((workdir / "report.json").read_text())
    fmax = report.get("fmax", {})
    # The worst achieved/constraint ratio decides timing; report it in the core clock's MHz.
    achieved = [v["achieved"] * target_mhz / v["constraint"] for v in fmax.values()
                if v.get("constraint")]
    utilization = {name: {"used": int(v["used"]), "available": int(v["available"])}
                   for name, v in report.get("utilization", {}).items()}
    return SynthReport(device=device.name, top="top", fmax_mhz=min(achieved, default=None),
                       target_mhz=target_mhz, cells=cells, utilization=utilization,
                       seconds=seconds, workdir=str(workdir),
                       **_count_cells(cells, device.family))



_YOSYS_PASS = re.compile(r"^\d+(?:\.\d+)*\. Executing (\w+)", re.MULTILINE)
# nextpnr's log, in the order of its stages (a stage never goes back to an earlier one).
_NEXTPNR_STAGES = (
    ("packing", re.compile(r"^Info: Packing", re.MULTILINE)),
    ("placement", re.compile(r"^Info: (?:Creating initial|Running main analytical placer|"
                             r"Running simulated annealing|Starting placement)", re.MULTILINE)),
    ("routing", re.compile(r"^Info: (?:Routing|Running router2|Setting up routing)",
                           re.MULTILINE)),
    ("done", re.compile(r"^Info: Program finished normally", re.MULTILINE)),
)


class StageWatcher:
    """Follows a Yosys + nextpnr + packer run through its log files and reports each stage.

    :meth:`poll` reads what the logs gained since the last call and calls
    ``progress(stage, detail)``: ``"Yosys synthesis"`` with the pass running (``abc9``,
    ``memory_libmap``, ...), then ``"nextpnr packing"``, ``"nextpnr placement"``,
    ``"nextpnr routing"``, then ``"<packer> bitstream"`` once nextpnr has finished. A stage is
    reported once, in that order; :meth:`run` polls from a thread until :meth:`stop`.

    Parameters
    ----------
    yosys_log, nextpnr_log : Path
        The tools' ``-l`` / ``--log`` files (they may not exist yet).
    packer : str
        ``icepack`` or ``ecppack``.
    progress : callable
        ``progress(stage, detail=None)``.
    """

    def __init__(self, yosys_log: Path, nextpnr_log: Path, packer: str, progress: ProgressFn,
                 *, interval: float = 0.5):
        self.logs = {"yosys": Path(yosys_log), "nextpnr": Path(nextpnr_log)}
        self.packer = packer
        self.progress = progress
        self.interval = interval
        self._offsets = {"yosys": 0, "nextpnr": 0}
        self._tails = {"yosys": "", "nextpnr": ""}
        self._nextpnr_stage = -1
        self._pass = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self, key: str) -> str:
        """The complete lines ``key``'s log gained since the last read."""
        path = self.logs[key]
        try:
            with open(path, "rb") as file:
                file.seek(self._offsets[key])
                data = file.read()
        except OSError:
            return ""
        self._offsets[key] += len(data)
        text = self._tails[key] + data.decode(errors="replace")
        complete, _, self._tails[key] = text.rpartition("\n")
        return complete + "\n" if complete else ""

    def poll(self) -> None:
        yosys = self._read("yosys")
        if self._nextpnr_stage < 0:
            passes = _YOSYS_PASS.findall(yosys)
            if passes and passes[-1].lower() != self._pass:
                self._pass = passes[-1].lower()
                self.progress("Yosys synthesis", self._pass)
            elif self._pass is None and self.logs["yosys"].exists():
                self._pass = ""
                self.progress("Yosys synthesis")
        nextpnr = self._read("nextpnr")
        reached = max((i for i, (_, pattern) in enumerate(_NEXTPNR_STAGES)
                       if pattern.search(nextpnr)), default=-1)
        if reached < 0 and self._nextpnr_stage < 0 and self.logs["nextpnr"].exists():
            reached = 0  # nextpnr started: it packs first
        if reached > self._nextpnr_stage:
            self._nextpnr_stage = reached
            name = _NEXTPNR_STAGES[reached][0]
            self.progress(f"{self.packer} bitstream" if name == "done"
                          else f"nextpnr {name}")

    def run(self) -> StageWatcher:
        """Poll every ``interval`` seconds from a daemon thread (until :meth:`stop`)."""
        def loop():
            while not self._stop.wait(self.interval):
                self.poll()

        self._thread = threading.Thread(target=loop, daemon=True, name="build-stages")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.poll()

    def __enter__(self) -> StageWatcher:
        return self.run()

    def __exit__(self, *exc) -> None:
        self.stop()


def board_plan(config: BuildConfig, workdir: Path):
    """The board top and its build scripts, extracted into ``workdir`` (nothing run yet)."""
    from amaranth.build import Attrs
    from amaranth_boards.resources import UARTResource

    from .top import BoardTop

    board = config.target
    top = BoardTop(board, config.pll, config.core, config.link)
    platform = board.platform()
    if board.uart is not None:
        rx, tx, attrs = board.uart
        platform.add_resources([UARTResource(0, rx=rx, tx=tx, attrs=Attrs(**attrs))])
    synth_opts = board.fpga.synth_command.split(" ", 1)[1]
    plan = platform.build(
        top, name="top", build_dir=str(workdir), do_build=False, do_program=False,
        synth_opts=synth_opts, script_after_read=board.fpga.pre_synth(config.fold_resets),
        script_after_synth="tee -q -o stat.json stat -json",
        nextpnr_opts=(f"--report report.json --timing-allow-fail --seed {config.seed} "
                      f"--router {config.router} "
                      f"--placer-heap-timingweight {config.timing_weight}"))
    plan.extract(str(workdir))
    return top


def outreg_wrapper(workdir: Path, nextpnr: str) -> Path:
    """``workdir/nextpnr-outreg``: a command that takes ``nextpnr``'s arguments and runs
    :mod:`fpga.outreg`'s pass on the netlist of their ``--json``, then ``nextpnr`` on the result
    (the board flow's ``$NEXTPNR_ECP5`` with :attr:`BuildConfig.bram_outreg`)."""
    wrapper = workdir / "nextpnr-outreg"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bitmod.fpga.outreg "{nextpnr}" '
                       f'"$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _quiet(stage: str, detail: str | None = None) -> None:
    pass


def _board_flow(config: BuildConfig, workdir: Path, timeout: float, progress: ProgressFn):
    progress("Amaranth elaboration")
    for name in ("top.rpt", "top.tim"):  # a rebuild in the same folder: fresh logs
        (workdir / name).unlink(missing_ok=True)
    board_plan(config, workdir)
    device = config.target.fpga
    env = {**os.environ, **apply_tool_environment()}
    # Boards loaded over DFU (OrangeCrab) get the suffix from host.dfu, not a dfu-util install.
    dfu_suffix = workdir / "dfu-suffix"
    dfu_suffix.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bitmod.host.dfu "$@"\n')
    dfu_suffix.chmod(0o755)
    env["DFU_SUFFIX"] = str(dfu_suffix)
    if config.bram_outreg:
        # Amaranth's script runs $NEXTPNR_ECP5 (fpga.outreg's pass first, then nextpnr).
        env["NEXTPNR_ECP5"] = str(outreg_wrapper(workdir, env["NEXTPNR_ECP5"]))
    log = workdir / "build.log"
    started = time.monotonic()
    packer = "icepack" if device.family == "ice40" else "ecppack"
    # The script's Yosys logs to top.rpt and nextpnr to top.tim (amaranth's build templates).
    watcher = StageWatcher(workdir / "top.rpt", workdir / "top.tim", packer, progress)
    with open(log, "w") as out, watcher:
        try:
            result = subprocess.run(["sh", "build_top.sh"], cwd=workdir, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, timeout=timeout,
                                    check=False)
        except subprocess.TimeoutExpired:
            raise BuildError(f"build timed out after {timeout:.0f} s (log: {log})") from None
    if result.returncode != 0:
        raise _fail("build", workdir, ["top.tim", "build.log", "top.rpt"])
    report = _parse_report(workdir, device, config.achieved_mhz, time.monotonic() - started)
    suffix = "bin" if device.family == "ice40" else "bit"
    return report, workdir / f"top.{suffix}"


def _bare_flow(config: BuildConfig, workdir: Path, timeout: float, progress: ProgressFn):
    from .top import AcceleratorTop

    progress("Amaranth elaboration")
    verilog = export_verilog(AcceleratorTop(config.core, config.link),
                             platform=config.target.fpga)
    packer = "icepack" if config.target.family == "ice40" else "ecppack"
    for name in ("yosys.log", "nextpnr.log"):  # a rebuild in the same folder: fresh logs
        (workdir / name).unlink(missing_ok=True)
    watcher = StageWatcher(workdir / "yosys.log", workdir / "nextpnr.log", packer, progress)
    try:
        with watcher:
            report = run_flow(verilog, config.target.fpga, workdir,
                              target_mhz=config.achieved_mhz, seed=config.seed,
                              timeout=timeout, pack=True, router=config.router,
                              timing_weight=config.timing_weight)
    except SynthError as error:
        raise _fail("bare flow", workdir, ["nextpnr.log", "nextpnr.out"]) from error
    suffix = "bin" if config.target.family == "ice40" else "bit"
    return report, workdir / f"top.{suffix}"


def build(config: BuildConfig, *, timeout: float = 3600.0,
          progress: ProgressFn | None = None) -> BuildResult:
    """Build ``config``'s bitstream in :meth:`BuildConfig.workdir` (always from scratch: the
    folder name covers the parameters, not the RTL sources; ``result.json`` records the result).

    ``progress(stage, detail=None)`` hears each stage as it starts (Amaranth elaboration, Yosys
    synthesis with the pass running, nextpnr packing / placement / routing, the packer), from
    the tools' log files (:class:`StageWatcher`); e.g. a :class:`tools.progress.Progress`.

    Raises
    ------
    BuildError
        A tool failed or the design does not fit.
    """
    workdir = config.workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    flow = _bare_flow if config.target.bare else _board_flow
    report, bitstream = flow(config, workdir, timeout, progress or _quiet)
    if not bitstream.exists():
        raise BuildError(f"no bitstream {bitstream.name} produced (log: {workdir})")
    result = BuildResult(config=config, clock_mhz=config.achieved_mhz,
                         pll=config.pll.describe() if config.pll else None, report=report,
                         bitstream=str(bitstream), seconds=time.monotonic() - started,
                         workdir=str(workdir))
    (workdir / "result.json").write_text(result.to_json())
    return result

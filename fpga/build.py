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

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bitmod.golden import formats as gformats
from bitmod.toolchain import apply_tool_environment, build_root, export_verilog

from .boards import Board, get_board
from .synth import ROUTERS, SynthError, SynthReport, _count_cells, run_flow

__all__ = ["ACT_FORMATS", "BuildConfig", "BuildError", "BuildResult", "build", "weight_formats"]

ACT_FORMATS = ("int8", "fp16", "bf16")


class BuildError(RuntimeError):
    """The build failed (tool error or design too large); the message is one line + log path."""


def weight_formats(bits: int) -> list[str]:
    """The BitMoD mixture of ``bits``-bit weights (``bitmod3``/``bitmod4``)."""
    return gformats.bitmod_candidates(bits)


@dataclass(frozen=True)
class BuildConfig:
    """Everything that defines a build (hashed into the output folder name).

    ``None`` fields take the board's defaults (:class:`fpga.boards.Board`).
    """

    board: str
    rows: int | None = None
    cols: int | None = None
    lanes: int | None = None
    clock_mhz: float | None = None
    act: str = "int8"
    weight_bits: int = 4
    group_size: int = 16
    max_m: int | None = None
    max_n: int | None = None
    max_k: int | None = None
    baud: int = 115200
    seed: int = 1
    router: str | None = None

    def resolved(self) -> tuple[Board, dict]:
        """The board and the complete parameter set (board defaults filled in)."""
        board = get_board(self.board)
        if self.act not in ACT_FORMATS:
            raise ValueError(f"act must be one of {', '.join(ACT_FORMATS)}, not {self.act!r}")
        router = board.router if self.router is None else self.router
        if router not in ROUTERS:
            raise ValueError(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")
        params = {
            "rows": board.rows if self.rows is None else self.rows,
            "cols": board.cols if self.cols is None else self.cols,
            "lanes": board.lanes if self.lanes is None else self.lanes,
            "clock_mhz": board.clock_mhz if self.clock_mhz is None else float(self.clock_mhz),
            "act": self.act, "weight_bits": self.weight_bits, "group_size": self.group_size,
            "max_m": board.max_m if self.max_m is None else self.max_m,
            "max_n": board.max_n if self.max_n is None else self.max_n,
            "max_k": board.max_k if self.max_k is None else self.max_k,
            "baud": self.baud, "seed": self.seed, "router": router,
        }
        return board, params

    def core_params(self) -> dict:
        """Keyword arguments of :class:`hdl.array.core.AcceleratorCore`."""
        _, p = self.resolved()
        return {"rows": p["rows"], "cols": p["cols"], "lanes": p["lanes"],
                "group_size": p["group_size"], "formats": weight_formats(p["weight_bits"]),
                "act_format": p["act"], "max_m": p["max_m"], "max_n": p["max_n"],
                "max_k": p["max_k"]}

    def key(self) -> str:
        board, params = self.resolved()
        text = json.dumps({"board": board.name, **params}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def workdir(self) -> Path:
        return build_root() / "boards" / f"{get_board(self.board).name}-{self.key()}"


@dataclass
class BuildResult:
    """A finished build: parameters, PLL, resources, timing and the bitstream."""

    board: str
    device: str
    params: dict
    clock_mhz: float  # achieved core clock (the PLL's output)
    pll: str | None
    report: SynthReport
    bitstream: str
    seconds: float
    workdir: str
    extra: dict = field(default_factory=dict)

    @property
    def timing_met(self) -> bool:
        return self.report.timing_met

    @property
    def fmax_mhz(self) -> float | None:
        return self.report.fmax_mhz

    def macs_per_cycle(self) -> float:
        """Peak ``R * C * L / T`` (T = 2 terms per weight for the 3- and 4-bit mixtures)."""
        from bitmod.golden import terms as gterms

        p = self.params
        terms = gterms.terms_per_weight(weight_formats(p["weight_bits"]))
        return p["rows"] * p["cols"] * p["lanes"] / terms

    def peak_gmacs(self) -> float:
        return self.macs_per_cycle() * self.clock_mhz / 1e3

    def as_dict(self) -> dict:
        r = self.report
        return {
            "board": self.board, "device": self.device, "params": self.params,
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
            return BuildError(f"design does not fit: {', '.join(over)} (log: {workdir})")
    errors = [line.strip() for text in texts for line in text.splitlines() if "ERROR" in line]
    detail = errors[-1] if errors else f"{step} failed"
    return BuildError(f"{detail} (log: {workdir})")


def _parse_report(workdir: Path, device, target_mhz: float, seconds: float) -> SynthReport:
    stat = json.loads((workdir / "stat.json").read_text())
    cells = {name: int(count)
             for name, count in stat["design"].get("num_cells_by_type", {}).items()}
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


def board_plan(board: Board, params: dict, core: dict, workdir: Path):
    """The board top and its build scripts, extracted into ``workdir`` (nothing run yet)."""
    from amaranth.build import Attrs
    from amaranth_boards.resources import UARTResource

    from .top import BoardTop

    top = BoardTop(board, params["clock_mhz"], params["baud"], core)
    platform = board.platform()
    if board.uart is not None:
        rx, tx, attrs = board.uart
        platform.add_resources([UARTResource(0, rx=rx, tx=tx, attrs=Attrs(**attrs))])
    synth_opts = board.fpga.synth_command.split(" ", 1)[1]
    plan = platform.build(
        top, name="top", build_dir=str(workdir), do_build=False, do_program=False,
        synth_opts=synth_opts, script_after_synth="tee -q -o stat.json stat -json",
        nextpnr_opts=(f"--report report.json --timing-allow-fail --seed {params['seed']} "
                      f"--router {params['router']}"))
    plan.extract(str(workdir))
    return top


def _board_flow(board: Board, params: dict, core: dict, workdir: Path, timeout: float):
    top = board_plan(board, params, core, workdir)
    device = board.fpga
    env = {**os.environ, **apply_tool_environment()}
    # Boards loaded over DFU (OrangeCrab) get the suffix from host.dfu, not a dfu-util install.
    dfu_suffix = workdir / "dfu-suffix"
    dfu_suffix.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bitmod.host.dfu "$@"\n')
    dfu_suffix.chmod(0o755)
    env["DFU_SUFFIX"] = str(dfu_suffix)
    log = workdir / "build.log"
    started = time.monotonic()
    with open(log, "w") as out:
        try:
            result = subprocess.run(["sh", "build_top.sh"], cwd=workdir, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, timeout=timeout,
                                    check=False)
        except subprocess.TimeoutExpired:
            raise BuildError(f"build timed out after {timeout:.0f} s (log: {log})") from None
    if result.returncode != 0:
        raise _fail("build", workdir, ["top.tim", "build.log", "top.rpt"])
    report = _parse_report(workdir, device, top.clock_mhz, time.monotonic() - started)
    suffix = "bin" if device.family == "ice40" else "bit"
    pll = top.pll.describe() if top.pll else None
    return report, top.clock_mhz, pll, workdir / f"top.{suffix}"


def _bare_flow(board: Board, params: dict, core: dict, workdir: Path, timeout: float):
    from .top import AcceleratorTop

    clock = params["clock_mhz"]
    verilog = export_verilog(AcceleratorTop(clock * 1e6, params["baud"], core))
    try:
        report = run_flow(verilog, board.fpga, workdir, target_mhz=clock, seed=params["seed"],
                          timeout=timeout, pack=True, router=params["router"])
    except SynthError as error:
        raise _fail("bare flow", workdir, ["nextpnr.log", "nextpnr.out"]) from error
    suffix = "bin" if board.family == "ice40" else "bit"
    return report, clock, None, workdir / f"top.{suffix}"


def build(config: BuildConfig, *, timeout: float = 3600.0) -> BuildResult:
    """Build ``config``'s bitstream in :meth:`BuildConfig.workdir` (always from scratch: the
    folder name covers the parameters, not the RTL sources; ``result.json`` records the result).

    Raises
    ------
    ValueError
        Unknown board, bad parameters, a clock the PLL cannot make.
    BuildError
        A tool failed or the design does not fit.
    """
    board, params = config.resolved()
    core = config.core_params()
    board.pll(params["clock_mhz"])  # an impossible clock fails here, before any work
    workdir = config.workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    flow = _bare_flow if board.bare else _board_flow
    report, clock, pll, bitstream = flow(board, params, core, workdir, timeout)
    if not bitstream.exists():
        raise BuildError(f"no bitstream {bitstream.name} produced (log: {workdir})")
    result = BuildResult(board=board.name, device=board.device, params=params,
                         clock_mhz=clock, pll=pll, report=report, bitstream=str(bitstream),
                         seconds=time.monotonic() - started, workdir=str(workdir))
    record = {**asdict(result), "report": asdict(report)}
    (workdir / "result.json").write_text(json.dumps(record, indent=1))
    return result

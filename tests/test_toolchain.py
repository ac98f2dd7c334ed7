"""Tool discovery, the doctor, formal proofs and the synthesis flow, run for real."""

import os
import sys

import pytest

from bitmod.fpga.devices import get_device
from bitmod.fpga.ooc import OOCWrapper, port_widths, wrapper_cost
from bitmod.fpga.synth import SynthError, run_flow
from bitmod.hdl.selftest import PipelinedAdder, SaturatingCounter
from bitmod.sim.formal import prove
from bitmod.toolchain import (
    TOOLS,
    ToolNotFound,
    build_root,
    export_verilog,
    find_tool,
    tool_environment,
)
from bitmod.tools import cmd_doctor


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_tool_is_found(name):
    assert os.access(find_tool(name), os.X_OK)


def test_tool_environment_sets_amaranth_variables():
    env = tool_environment()
    assert env["VERILATOR_ROOT"]
    for variable in ("YOSYS", "NEXTPNR_ECP5", "NEXTPNR_ICE40", "ECPPACK", "ICEPACK"):
        assert os.access(env[variable], os.X_OK), variable


def test_override_that_is_not_executable_is_reported(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ECP5", "/nonexistent/nextpnr")
    with pytest.raises(ToolNotFound, match="NEXTPNR_ECP5"):
        find_tool("nextpnr-ecp5")


def test_unknown_tool_name():
    with pytest.raises(ValueError, match="vivado"):
        find_tool("vivado")


def test_doctor_passes(tmp_path):
    lines = []
    ok = cmd_doctor.run_checks(tmp_path, lambda name, passed, detail: lines.append(
        (name, passed, detail)))
    assert ok, lines
    assert [name for name, *_ in lines] == [
        "python packages", "amaranth -> verilog", "verilator + cocotb",
        "yosys + nextpnr ice40", "yosys + nextpnr ecp5", "symbiyosys + z3"]


def test_formal_harness_proves_and_catches(tmp_path):
    assert prove(SaturatingCounter(limit=3), tmp_path / "good", depth=5).status == "PASS"
    assert prove(SaturatingCounter(limit=3, broken=True), tmp_path / "bad",
                 depth=6).status == "FAIL"


def test_wrapper_cost_matches_a_flow_run(tmp_path):
    # A 1-stage adder of width w has w+1 sum FFs and one valid FF of its own: the wrapper cost
    # formula must account for every other flip-flop of the placed design.
    unit = PipelinedAdder(width=6, stages=1)
    in_bits, out_bits = port_widths(unit)
    assert (in_bits, out_bits) == (2 * 6 + 1 + 1, 7 + 1 + 1)
    report = run_flow(export_verilog(OOCWrapper(unit)), get_device("ecp5-25f"), tmp_path)
    own_ff = report.ff - wrapper_cost(in_bits, out_bits)["ff"]
    assert own_ff == 7 + 1  # the registered sum and the valid bit
    assert report.fmax_mhz is not None and report.fmax_mhz > 50


def test_flow_failure_is_reported_with_log(tmp_path):
    with pytest.raises(SynthError, match="yosys failed") as info:
        run_flow("module top(input a, output b); assign b = ; endmodule",
                 get_device("ice40-up5k"), tmp_path)
    assert "log:" in str(info.value)
    assert "ERROR" in str(info.value), "the error line itself is in the message"


def test_tool_log_errors_are_reported(tmp_path):
    """An error only the tool's own log has (as a Yosys internal assertion with -q) is in the
    message, with that log's path."""
    from bitmod.fpga.synth import _run

    tool_log = tmp_path / "tool.log"
    script = f"open({str(tool_log)!r}, 'w').write('ERROR: Assert failed in x.cc:1\\n'); exit(1)"
    message = r"step failed \(exit 1\):\n  ERROR: Assert failed"
    with pytest.raises(SynthError, match=message) as info:
        _run("step", [sys.executable, "-c", script], tmp_path / "out.txt", tmp_path, 60,
             tool_log=tool_log)
    assert str(tool_log) in str(info.value)


def test_build_root_override(monkeypatch, tmp_path):
    monkeypatch.setenv("BITMOD_BUILD_DIR", str(tmp_path))
    assert build_root() == tmp_path

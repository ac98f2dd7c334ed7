"""fpga.outreg: the flip-flops after an ECP5 block RAM's read port become its output register
where they are the same logic, and stay in the fabric where they are not; the board flow runs
the pass through its nextpnr command when a build asks for it."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from amaranth import ClockDomain, Module, Signal
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from bitmod.fpga.boards import BOARDS
from bitmod.fpga.build import BuildConfig, outreg_wrapper
from bitmod.fpga.devices import get_device
from bitmod.fpga.outreg import absorb_output_registers, main
from bitmod.golden.core import CoreConfig
from bitmod.hdl.array.core import AcceleratorCore
from bitmod.hdl.common import NO_COLLISION
from bitmod.toolchain import apply_tool_environment, find_tool
from bitmod.tools import cli


class RamStage(wiring.Component):
    """A core buffer bank (one write port, one enabled read port) and a register stage with an
    enable of its own after its read data; ``tap`` also sends the read data out (inverted:
    through LUTs)."""

    def __init__(self, width, depth=512, reset_less=True, domain="sync", tap=False):
        self._width, self._depth, self._reset_less = width, depth, reset_less
        self._domain, self._tap = domain, tap
        abits = (depth - 1).bit_length()
        super().__init__({"wa": wiring.In(abits), "wd": wiring.In(width), "we": wiring.In(1),
                          "ra": wiring.In(abits), "re": wiring.In(1), "oe": wiring.In(1),
                          "q": wiring.Out(width), "tap": wiring.Out(width),
                          "other_clk": wiring.In(1)})

    def elaborate(self, platform):
        m = Module()
        m.domains.other = other = ClockDomain(reset_less=True)
        m.d.comb += other.clk.eq(self.other_clk)
        m.submodules.mem = mem = Memory(shape=self._width, depth=self._depth, init=[],
                                        attrs={NO_COLLISION: 1})
        wr, rd = mem.write_port(), mem.read_port()
        stage = Signal(self._width, reset_less=self._reset_less)
        with m.If(self.oe):
            m.d[self._domain] += stage.eq(rd.data)
        m.d.comb += [wr.addr.eq(self.wa), wr.data.eq(self.wd), wr.en.eq(self.we),
                     rd.addr.eq(self.ra), rd.en.eq(self.re), self.q.eq(stage)]
        if self._tap:
            m.d.comb += self.tap.eq(~rd.data)
        return m


def _netlist(folder, component) -> dict:
    """``component`` through the ECP5 board flow's synthesis (fpga.devices.Device)."""
    apply_tool_environment()
    device = get_device("ecp5-85f")
    (folder / "t.il").write_text(rtlil.convert(component, name="top"))
    script = (f"read_rtlil t.il; {device.pre_synth(True)}; {device.synth_command} -top top; "
              f"write_json t.json")
    subprocess.run([find_tool("yosys"), "-q", "-p", script], cwd=folder, check=True,
                   capture_output=True, text=True, timeout=300)
    return json.loads((folder / "t.json").read_text())


def _cells(netlist, kind):
    return {name: cell for name, cell in netlist["modules"]["top"]["cells"].items()
            if cell["type"] == kind}


def _bits(netlist, name):
    return netlist["modules"]["top"]["netnames"][name]["bits"]


@pytest.mark.parametrize("width", [64, 16])  # 36-bit pseudo-dual-port mode; 18-bit mode
def test_stage_becomes_the_output_register(tmp_path, width):
    before = _netlist(tmp_path, RamStage(width))
    rams, flops = _cells(before, "DP16KD"), _cells(before, "TRELLIS_FF")
    assert len(flops) == width  # the stage, one flip-flop per bit
    after = copy.deepcopy(before)
    report = absorb_output_registers(after)
    assert report.flip_flops == width and not report.skipped
    assert {name for name, _, _ in report.ports} == set(rams)
    assert _cells(after, "TRELLIS_FF") == {}
    enable = {ff["connections"]["CE"][0] for ff in flops.values()}
    assert len(enable) == 1
    q = set(_bits(before, "q"))
    driven = set()
    for name, ram in _cells(after, "DP16KD").items():
        wide = int(str(rams[name]["parameters"]["DATA_WIDTH_B"]), 2) == 36
        ports = "AB" if wide else "B"
        for p in ports:
            assert ram["parameters"][f"REGMODE_{p}"] == "OUTREG"
            assert ram["connections"][f"OCE{p}"] == list(enable)
        for pin, bits in ram["connections"].items():
            if pin.startswith("DO") and bits[0] in q:
                driven.add(bits[0])
        # Nothing else of the RAM changed.
        rest = {k: v for k, v in ram["connections"].items()
                if not k.startswith(("DO", "OCE"))}
        assert rest == {k: v for k, v in rams[name]["connections"].items()
                        if not k.startswith(("DO", "OCE"))}
    assert driven == q  # each output bit now leaves a RAM's output register


@pytest.mark.parametrize(("variant", "reason"), [
    ({"reset_less": False}, "a flip-flop has a set/reset"),
    ({"domain": "other"}, "a flip-flop has another clock"),
    ({"tap": True}, "read data drive more than one load"),
])
def test_stage_that_is_not_the_same_logic_stays(tmp_path, variant, reason):
    netlist = _netlist(tmp_path, RamStage(16, **variant))
    before = copy.deepcopy(netlist)
    report = absorb_output_registers(netlist)
    assert report.ports == [] and set(report.skipped.values()) == {reason}
    assert netlist == before


def _tiny(ff_params=None, ff_ports=None, ram_params=None, extra_sinks=()):
    """A hand-made netlist: one 18-bit-mode DP16KD (read port B, clock net 2) whose DOB0 (net
    10) feeds one TRELLIS_FF (enable net 3, Q net 11)."""
    ram = {"type": "DP16KD",
           "parameters": {"DATA_WIDTH_A": "10010", "DATA_WIDTH_B": "10010",
                          "REGMODE_A": "NOREG", "REGMODE_B": "NOREG", "CLKBMUX": "CLKB",
                          **(ram_params or {})},
           "port_directions": {"CLKB": "input", "RSTB": "input", "DOB0": "output",
                               "OCEB": "input"},
           "connections": {"CLKB": [2], "RSTB": ["0"], "DOB0": [10], "OCEB": ["1"]}}
    ff = {"type": "TRELLIS_FF",
          "parameters": {"CEMUX": "CE", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR",
                         "REGSET": "RESET", "SRMODE": "LSR_OVER_CE", **(ff_params or {})},
          "port_directions": {"CLK": "input", "CE": "input", "DI": "input", "Q": "output"},
          "connections": {"CLK": [2], "CE": [3], "DI": [10], "Q": [11], **(ff_ports or {})}}
    cells = {"ram": ram, "ff": ff}
    for i, port in enumerate(extra_sinks):
        cells[f"lut{i}"] = {"type": "LUT4", "port_directions": {port: "input"},
                            "connections": {port: [10]}}
    return {"modules": {"top": {"ports": {"o": {"direction": "output", "bits": [11]}},
                                "cells": cells, "netnames": {}}}}


@pytest.mark.parametrize(("change", "reason"), [
    ({"ff_params": {"CEMUX": "INV"}}, "a flip-flop's enable is inverted"),
    ({"ff_params": {"CLKMUX": "INV"}}, "a flip-flop's clock is inverted"),
    ({"ff_params": {"REGSET": "SET"}}, "a flip-flop powers up to 1"),
    ({"ff_ports": {"LSR": [7]}}, "a flip-flop has a set/reset"),
    ({"ff_ports": {"CLK": [4]}}, "a flip-flop has another clock"),
    ({"ram_params": {"REGMODE_B": "OUTREG"}}, "the output register is in use"),
    ({"ram_params": {"CLKBMUX": "INV"}}, "the read clock is inverted"),
    ({"extra_sinks": ("A",)}, "read data drive more than one load"),
])
def test_each_rule_keeps_the_flip_flop(change, reason):
    netlist = _tiny(**change)
    before = copy.deepcopy(netlist)
    report = absorb_output_registers(netlist)
    assert report.skipped == {"ram:B": reason} and netlist == before


def test_rules_on_hand_made_netlists():
    netlist = _tiny()
    report = absorb_output_registers(netlist)
    ram = netlist["modules"]["top"]["cells"]["ram"]
    assert report.ports == [("ram", "B", 1)] and "ff" not in netlist["modules"]["top"]["cells"]
    assert ram["connections"]["DOB0"] == [11] and ram["connections"]["OCEB"] == [3]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG" and ram["parameters"]["REGMODE_A"] == "NOREG"
    # Again: nothing left to take (the pass is idempotent).
    again = copy.deepcopy(netlist)
    assert absorb_output_registers(again).ports == [] and again == netlist
    # Always enabled ("1 ", as Yosys writes it): the output register always loads.
    netlist = _tiny(ff_params={"CEMUX": "1 "}, ff_ports={"CE": ["1"]})
    absorb_output_registers(netlist)
    assert netlist["modules"]["top"]["cells"]["ram"]["connections"]["OCEB"] == ["1"]
    # A kept flip-flop stays; read data on a top-level port stay.
    netlist = _tiny()
    netlist["modules"]["top"]["cells"]["ff"]["attributes"] = {"keep": "1"}
    assert absorb_output_registers(netlist).skipped == {"ram:B": "a flip-flop is kept"}
    netlist = _tiny()
    netlist["modules"]["top"]["ports"]["d"] = {"direction": "output", "bits": [10]}
    assert absorb_output_registers(netlist).skipped == {
        "ram:B": "read data drive a top-level port"}


def test_core_reader_stage_two_goes_into_the_block_rams(tmp_path):
    """With feed stages (the reader's bank_ready form) every weight and activation bank's
    stage 2 becomes its block RAMs' output registers; without them the stage keeps its reset
    and stays in the fabric (the defaults' netlists as they were)."""
    taken = {}
    for feed in (1, 0):
        folder = tmp_path / f"feed{feed}"
        folder.mkdir()
        config = CoreConfig(rows=1, cols=1, lanes=4, group_size=16, max_m=16, max_n=16,
                            max_k=64, feed_stages=feed)
        netlist = _netlist(folder, AcceleratorCore(config))
        report = absorb_output_registers(netlist)
        taken[feed] = [(name.split(".")[-3], count) for name, _, count in report.ports]
        if feed:
            assert [name for name in report.skipped if "outputs" not in name] == []
    for bank, bits in (("weights0", 4 * 4), ("acts0", 4 * 8)):  # 4-bit codes, INT8 acts
        assert sum(count for name, count in taken[1] if name == bank) == bits
    assert taken[0] == []


def test_bram_outreg_choice(capsys):
    """A build parameter: off on every board unless asked for, validated, ECP5 board builds
    only, hashed into the folder."""
    assert not any(board.bram_outreg for board in BOARDS.values())
    with pytest.raises(TypeError, match="bram_outreg must be True or False, not 'yes'"):
        BuildConfig("ulx3s-85f", bram_outreg="yes")
    for board in ("icebreaker", "bare-ecp5-85f"):
        with pytest.raises(ValueError, match=f"bram_outreg applies to ECP5 board builds only, "
                                             f"not {board}"):
            BuildConfig(board, bram_outreg=True)
    plain = BuildConfig("ulx3s-85f", rows=1, cols=1)
    taken = BuildConfig("ulx3s-85f", rows=1, cols=1, bram_outreg=True)
    assert plain.bram_outreg is False and plain.workdir() != taken.workdir()
    # bitmod build --bram-outreg: the same check, one line.
    assert cli.main(["build", "--board", "icebreaker", "--bram-outreg"]) == 2
    err = capsys.readouterr().err
    assert "bram_outreg applies to ECP5 board builds only" in err and err.count("\n") == 1


def test_wrapper_runs_the_pass_then_nextpnr(tmp_path):
    """The flow's nextpnr command: the pass writes ``<name>.outreg.json`` and ``outreg.json``
    and nextpnr gets the new netlist, every other argument as it was."""
    (tmp_path / "top.json").write_text(json.dumps(_tiny()))
    fake = tmp_path / "fake-nextpnr"
    fake.write_text('#!/bin/sh\necho "$@" > args.txt\n')
    fake.chmod(0o755)
    wrapper = outreg_wrapper(tmp_path, str(fake))
    subprocess.run([str(wrapper), "--seed", "2", "--json", "top.json", "--lpf", "top.lpf"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=60)
    assert (tmp_path / "args.txt").read_text().split() == [
        "--seed", "2", "--json", "top.outreg.json", "--lpf", "top.lpf"]
    netlist = json.loads((tmp_path / "top.outreg.json").read_text())
    assert "ff" not in netlist["modules"]["top"]["cells"]
    assert json.loads((tmp_path / "outreg.json").read_text())["flip_flops"] == 1


def test_command_errors(tmp_path, capsys):
    assert main([]) == 2 and main(["nextpnr", "--seed", "1"]) == 2
    assert "usage: python -m bitmod.fpga.outreg NEXTPNR" in capsys.readouterr().err
    assert main(["nextpnr", "--json", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("outreg: cannot read the netlist") and err.count("\n") == 1
    (tmp_path / "bad.json").write_text("{")
    proc = subprocess.run([sys.executable, "-m", "bitmod.fpga.outreg", "nextpnr", "--json",
                           str(tmp_path / "bad.json")], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr


def test_build_report_counts_the_flip_flops_left(tmp_path):
    """A build's FF count is the placed one: Yosys's, less those the pass moved into RAMs."""
    from bitmod.fpga.build import _parse_report

    stat = {"design": {"num_cells_by_type": {"TRELLIS_FF": 500, "LUT4": 300, "DP16KD": 2}}}
    (tmp_path / "stat.json").write_text(json.dumps(stat))
    (tmp_path / "report.json").write_text(json.dumps({"fmax": {}, "utilization": {}}))
    device = get_device("ecp5-85f")
    assert _parse_report(tmp_path, device, 100.0, 1.0).ff == 500
    (tmp_path / "outreg.json").write_text(json.dumps({"flip_flops": 128, "ports": []}))
    report = _parse_report(tmp_path, device, 100.0, 1.0)
    assert report.ff == 372 and report.cells["TRELLIS_FF"] == 372 and report.bram == 2

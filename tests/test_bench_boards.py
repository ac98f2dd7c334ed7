"""``bitmod bench boards`` (tools/bench_boards.py): the grid is validated before any build, one
real (bare iCE40) point is built and reported, the JSON is strict. The long board builds are
run by hand, not here."""

import json
from pathlib import Path

import pytest

from bitmod.tools import cli


@pytest.fixture
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BITMOD_BUILD_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("argv", "message"), [
    ([], "give at least one --board"),
    (["--board", "nope"], "nope: unknown board 'nope'"),
    (["--board", "ulx3s-85f", "--pe", "int", "--scheme", "fp4"],
     "ulx3s-85f int fp4: the int PE multiplies one signed integer format"),
    (["--board", "icebreaker", "--scheme", "int4", "--array", "2x2", "--array", "2by2"],
     "ROWSxCOLS"),
    (["--board", "icebreaker", "--clock", "300"], "ice40 PLL output 300 MHz is outside"),
])
def test_grid_errors_before_any_build(build_dir, capsys, argv, message):
    assert cli.main(["bench", "boards", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (build_dir / "boards").exists()  # nothing was built


@pytest.mark.heavy
def test_one_bare_point_with_int_pes(build_dir, capsys):
    """A bare iCE40UP5K core with int PEs (2 lanes: 2 multipliers on one SB_MAC16 in its 8x8
    mode, as on the iCEBreaker: the bare flow elaborates for the part): the row's figures are
    the build's, and the peak follows from the array and the clock. It is also the suite's
    build of a bare device (clock on a pin, no PLL, I/O placed by nextpnr): timing met at the
    target's 18 MHz and a bitstream whose preamble the iCE40 recognises."""
    assert cli.main(["bench", "boards", "--board", "bare-ice40-up5k", "--scheme", "int4",
                     "--pe", "int", "--lanes", "2", "--no-ceiling", "--json"]) == 0
    out = capsys.readouterr().out
    (row,) = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert row["kind"] == "board" and row["pe"] == "int" and row["lanes"] == 2
    assert row["dsp"] == 1 and row["lut4"] > 0 and isinstance(row["timing_met"], bool)
    assert row["macs_per_cycle"] == 1 * 1 * 2  # one weight-step per cycle on int PEs
    assert row["peak_gmacs"] == pytest.approx(row["macs_per_cycle"] * row["clock_mhz"] / 1e3,
                                              abs=1e-4)
    assert row["timing_met"] and row["clock_mhz"] == 18.0
    bitstream = Path(row["bitstream"])
    assert bitstream.is_relative_to(build_dir / "boards")
    assert b"\x7e\xaa\x99\x7e" in bitstream.read_bytes()[:512]  # iCE40 configuration preamble

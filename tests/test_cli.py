"""The ``bitmod`` command line: output of the format and synth commands, one-line errors."""

import json
import subprocess
import sys

import pytest

from bitmod.tools.cli import main


def run_cli(*args):
    """Run ``bitmod`` in a subprocess, as a user would; return (status, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-m", "bitmod.tools", *args], capture_output=True,
                            text=True, timeout=600, check=False)
    return result.returncode, result.stdout, result.stderr


def test_formats_lists_every_registered_format(capsys):
    from bitmod.golden import formats

    assert main(["formats"]) == 0
    out = capsys.readouterr().out
    for name in formats.names():
        assert f"\n{name} " in out


def test_formats_json_table_matches_decode(capsys):
    from bitmod.golden import formats

    assert main(["formats", "fp4_ea_neg", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    fmt = formats.get("fp4_ea_neg")
    assert [row["value"] for row in table["codes"]] == list(fmt.decode(fmt.codes()))
    assert table["bits"] == 4


@pytest.mark.parametrize("args, message", [
    (["formats", "fp9_e9"], "unknown format"),
    (["synth", "nonexistent"], "unknown component"),
    (["synth", "selftest_adder", "--param", "width"], "NAME=VALUE"),
    (["synth", "selftest_adder", "--param", "wdth=3"], "wdth"),
    (["synth", "selftest_adder", "--param", "width=0"], "width"),
    (["synth", "term_encoder", "--param", "formats=nonsense"], "unknown format 'nonsense'"),
    (["synth", "requant", "--scheme", "int4"], "requant has no weights"),
    (["synth", "int_pe", "--scheme", "int8", "--param", "weight_bits=4"], "not both"),
    (["synth", "bitserial_pe", "--scheme", "nosuch"], "unknown scheme 'nosuch'"),
])
def test_user_errors_are_one_line(args, message):
    status, _out, err = run_cli(*args)
    assert status == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_synth_json_reports_component_figures():
    status, out, err = run_cli("synth", "selftest_adder", "--param", "width=4",
                               "--device", "ice40-up5k", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["ff"] == 2 * (4 + 1 + 1)  # two stages of a 5-bit sum and a valid bit
    assert result["lut4"] > 0 and result["fmax_mhz"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--port", "/nonexistent/ttyUSB9", "--board", "icebreaker"], "ttyUSB9"),
    (["run", "--port", "/nonexistent/ttyUSB9", "--board", "nope"], "unknown board"),
    (["run", "--port", "/nonexistent/ttyUSB9", "--board", "icebreaker", "--random", "999",
      "2", "16"], "exceeds the board's buffers"),
])
def test_run_errors_are_one_line(args, message):
    status, _out, err = run_cli(*args)
    assert status == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.parametrize(("args", "message"), [
    (["bench", "ceiling", "--array", "0x3"], "rows must be in 1..32, not 0"),
    (["bench", "ceiling", "--array", "4x33"], "cols must be in 1..32, not 33"),
    (["bench", "ceiling", "--array", "12by13"], "ROWSxCOLS"),
    (["bench", "ceiling", "--device", "nope"], "unknown device"),
    (["bench", "ceiling", "--device", "ice40-up5k", "--device", "ecp5-95f"], "ecp5-95f"),
    (["bench", "ceiling", "--device", "ice40-hx8k"], "no DSP blocks"),
    (["bench", "ceiling", "--max-k", "0"], "max_k must be >= 1, not 0"),
    (["synth", "dsp_array", "--param", "rows=0"], "rows must be in 1..32, not 0"),
])
def test_bench_ceiling_errors_are_one_line(args, message):
    status, out, err = run_cli(*args)
    assert status == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert out == ""  # refused before any synthesis started


def test_bench_ceiling_default_shapes_use_every_dsp():
    from bitmod.fpga.devices import DEVICES
    from bitmod.tools.bench_ceiling import ceiling_shape

    shapes = {name: ceiling_shape(DEVICES[name]) for name in ("ecp5-85f", "ice40-up5k",
                                                               "ecp5-25f")}
    assert shapes == {"ecp5-85f": (12, 13), "ice40-up5k": (2, 4), "ecp5-25f": (4, 7)}
    for name, (rows, cols) in shapes.items():
        assert rows * cols == DEVICES[name].dsps


def test_every_registered_component_builds_with_defaults():
    """No --param needed: each registered component is a working design with its defaults;
    with weights, the scheme picks their format."""
    from bitmod.hdl.registry import build_component, component_names, parameter_names

    for name in component_names():
        unit = build_component(name)
        unit._MustUse__silence = True  # only its construction is under test here
        assert parameter_names(name), name
    pe = build_component("bitserial_pe", scheme="int4")
    pe._MustUse__silence = True
    assert pe.config.formats == ("int4_sym",)


def test_synth_term_encoder_without_params():
    status, out, err = run_cli("synth", "term_encoder", "--device", "ice40-up5k", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["params"]["formats"] == ["fp4_er_pos", "fp4_er_neg", "fp4_ea_pos",
                                           "fp4_ea_neg"]  # bitmod4, the default scheme
    assert result["lut4"] > 0


def test_a_command_loads_only_its_own_module():
    """``bitmod formats`` registers (and imports) its own sub-command only: no Amaranth, no
    FPGA flow; ``bitmod --help`` and an unknown command still see every command."""
    import subprocess
    import sys

    code = ("import sys; from bitmod.tools import cli; cli.main(['formats', 'fp4_e2m1']); "
            "print(sorted(m for m in ('amaranth', 'bitmod.fpga.build', 'bitmod.tools.cmd_synth')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().endswith("[]"), out
    helptext = subprocess.run([sys.executable, "-m", "bitmod.tools.cli", "--help"],
                              capture_output=True, text=True, check=True).stdout
    for name in ("doctor", "formats", "quantize", "synth", "verify", "eval", "build", "run",
                 "bench"):
        assert name in helptext
    bad = subprocess.run([sys.executable, "-m", "bitmod.tools.cli", "nosuch"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'nosuch'" in bad.stderr

"""Issue 15: every bad input to the ``bitmod`` command line is one line naming the problem and a
non-zero exit (never a traceback, never a silently wrong answer); every ``--json`` output is
strict JSON.

The commands run in process (``cli.main``): an exception the command line does not turn into
its one line fails the test with the exception itself. The Verilator runs use the tiny core of
``bitmod verify --random 2 4 32 --array 1x1 --group-size 16`` (M=2, N=4, K=32), built once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitmod.tools import cli

TINY_CORE = ("--array", "1x1", "--group-size", "16", "--tokens", "2", "--quiet")
RUN = ("run", "--port", "/nonexistent/ttyUSB9", "--board", "icebreaker")


def bitmod(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(capsys, *argv) -> str:
    """The single stderr line of a refused command (status 2), without the prefix."""
    status, out, err = bitmod(capsys, *argv)
    assert status == 2, (status, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    prefix = f"bitmod {argv[0]}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


def strict(text: str):
    """``json.loads`` refusing NaN, Infinity and -Infinity."""
    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def files(tmp_path):
    """Bad and good input files, by name."""
    rng = np.random.default_rng(0)
    paths = {}

    def save(name, array):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)

    save("w", rng.standard_normal((8, 32)).astype(np.float32))
    save("w4", rng.standard_normal((4, 32)).astype(np.float32))  # the tiny core's N, K
    save("zero4", np.zeros((4, 32), np.float32))
    save("huge4", rng.standard_normal((4, 32)) * 1e30)
    save("tiny", rng.standard_normal((8, 32)) * 1e-12)
    save("beyond_fp32", np.full((4, 32), 1e300))
    save("complex", rng.standard_normal((4, 32)) + 1j)
    save("bool", rng.standard_normal((4, 32)) > 0)
    save("strings", np.array([["a", "b"], ["c", "d"]]))
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([[1.0, None]], dtype=object), allow_pickle=True)
    paths["objects"] = objects
    paths["empty"] = tmp_path / "empty.npy"
    paths["empty"].write_bytes(b"")
    paths["npz"] = tmp_path / "archive.npy"
    with open(paths["npz"], "wb") as handle:
        np.savez(handle, a=np.ones(3))
    paths["text"] = tmp_path / "text.npy"
    paths["text"].write_text("1 2 3\n4 5 6\n")
    paths["truncated"] = tmp_path / "truncated.npy"
    paths["truncated"].write_bytes(paths["w"].read_bytes()[:200])
    return paths


# --- 1: a group size beyond K ---------------------------------------------------------------------

def test_quantize_group_size_beyond_k_is_one_group_per_row(capsys, files):
    status, out, err = bitmod(capsys, "quantize", files["w"], "--group-size", 1_000_000_000)
    assert status == 0 and err == ""
    assert "group size:   1000000000 (more than K = 32: one group per row)" in out
    assert "(1 groups per row)" in out


# (bitmod verify with a G beyond K builds a core for that G and runs bit-exact; golden.gemm's
# part, which allocated G-sized arrays, is tested without Verilator in tests/test_quantize.py.)


# --- 2, 4, 9, 15: files that are not what they claim ----------------------------------------------

@pytest.mark.parametrize(("name", "message"), [
    ("empty", "the file is empty"),
    ("npz", "an .npz archive, not a single .npy array"),
    ("text", "not a .npy file (no NumPy header"),
    ("objects", "holds Python objects (dtype object), not numbers"),
    ("truncated", "truncated or damaged .npy file"),
    ("strings", "must be a real (integer or float) array, not <U1"),
    ("complex", "must be a real (integer or float) array, not complex128"),
    ("bool", "must be a real (integer or float) array, not bool"),
])
@pytest.mark.parametrize("command", ["verify", "run"])
def test_unreadable_or_unusable_npy_is_one_line(capsys, files, command, name, message):
    argv = ("verify", "--npy", files[name], *TINY_CORE) if command == "verify" else (
        *RUN, "--npy", files[name], "--scheme", "bitmod4", "--array", "2x2", "--lanes", 4,
        "--act", "int8")
    error = one_line_error(capsys, *argv)
    assert message in error
    if name not in ("strings", "complex", "bool"):
        assert str(files[name]) in error


def test_verify_refuses_finite_values_beyond_fp32_and_names_them(capsys, files):
    error = one_line_error(capsys, "verify", "--npy", files["beyond_fp32"], *TINY_CORE)
    assert "weights exceed the FP32 range" in error and "e.g. 1e+300" in error
    assert "NaN" not in error
    error = one_line_error(capsys, "verify", "--npy", files["w4"], "--x-npy",
                           files["beyond_fp32"], *TINY_CORE)
    assert "activations exceed the FP32 range" in error


def test_verify_refuses_activations_with_random(capsys, files):
    error = one_line_error(capsys, "verify", "--random", 2, 4, 32, "--x-npy", files["w4"],
                           *TINY_CORE)
    assert error == "activations go with weights; layer and random make their own"


# --- 3: sizes checked before allocating -----------------------------------------------------------

def test_random_sizes_are_checked_before_allocating(capsys):
    assert one_line_error(capsys, "verify", "--random", 1_000_000_000, 8, 32, "--quiet") == (
        "random M must be in 1..65536, not 1000000000")
    assert one_line_error(capsys, *RUN, "--random", 1_000_000_000, 8, 32, "--scheme",
                          "bitmod4", "--array", "2x2", "--lanes", 4, "--act", "int8") == (
        "GEMM 1000000000x8x32 exceeds the board's buffers (8x8x32)")


# --- 5: a parameter too wide for synthesis --------------------------------------------------------

def test_synth_refuses_a_component_too_wide_for_the_device(capsys):
    error = one_line_error(capsys, "synth", "selftest_adder", "--param", "width=100000")
    assert error == ("selftest_adder (width=100000) has 200002 input and 100003 output bits: "
                     "its out-of-context wrapper alone needs 300005 flip-flops, more than the "
                     "83640 of ecp5-85f")


# --- 6: device errors -----------------------------------------------------------------------------

def test_run_reports_a_device_error_in_one_line(capsys, monkeypatch):
    """An AcceleratorError (the board refuses ``start``) is one line, exit 2."""
    from bitmod.fpga.build import BuildConfig
    from bitmod.golden import core as gcore
    from bitmod.golden import protocol
    from bitmod.host import link as hlink

    class BusyCore(gcore.CoreBusModel):
        def access(self, write, addr, data):
            if addr >> protocol.OP_SHIFT == gcore.OPS["start"]:
                return gcore.STATUS["busy"], True
            return super().access(write, addr, data)

    class BusyBoard(hlink.LoopbackTransport):
        def __init__(self, port, baudrate=115_200):
            config = BuildConfig("icebreaker", pe="bitserial")  # what the command asks for
            bus = BusyCore(config.core, config.link)
            super().__init__(protocol.BridgeModel(bus, config.link.max_payload))

    monkeypatch.setattr(hlink, "SerialTransport", BusyBoard)
    error = one_line_error(capsys, *RUN, "--random", 4, 8, 32, "--scheme", "bitmod4",
                           "--array", "2x2", "--lanes", 2, "--act", "int8", "--pe", "bitserial")
    assert "start" in error


# --- 7, 8: benches and clocks ---------------------------------------------------------------------

def test_bench_synth_refuses_an_unknown_component(capsys):
    assert one_line_error(capsys, "bench", "synth", "--only", "nosuch") == (
        "--only must be one of act_align, act_block, fixed_cast, minifloat_mul, requant, "
        "term_encoder, to_float, not 'nosuch'")


@pytest.mark.parametrize(("clock", "message"), [
    ("0", "must be positive, not 0"), ("-5", "must be positive, not -5"),
    ("nan", "must be finite, not nan"), ("inf", "must be finite, not inf"),
])
@pytest.mark.parametrize("command", [
    ("synth", "selftest_adder"), ("verify", "--random", "2", "4", "32", *TINY_CORE[:4]),
    ("bench", "synth"), ("bench", "pe"), ("bench", "ceiling"),
    ("build", "--board", "icebreaker"),
])
def test_clock_must_be_positive_and_finite(capsys, command, clock, message):
    error = one_line_error(capsys, *command, "--clock", clock)
    assert "clock" in error and message in error


def test_bench_refuses_unknown_devices_and_lanes(capsys):
    assert "unknown device 'nosuch'" in one_line_error(capsys, "bench", "synth", "--device",
                                                       "nosuch")
    assert one_line_error(capsys, "bench", "pe", "--lanes", "0") == "--lanes must be >= 1, not 0"


# --- 11: clamped scales ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "where"), [("tiny", "below 1e-05"), ("huge4", "above 10000")])
def test_quantize_warns_about_clamped_scales(capsys, files, name, where):
    status, out, err = bitmod(capsys, "quantize", files[name])
    assert status == 0 and "relative RMS error 100" in out
    warning, = err.splitlines()
    assert warning.startswith("bitmod quantize: warning: group scales are clamped to "
                              "[1e-05, 10000]: ")
    assert f"groups need a scale {where}" in warning and "rescale the weights" in warning
    status, out, _ = bitmod(capsys, "quantize", files[name], "--json")
    clamped = strict(out)["clamped_groups"]
    assert clamped["below" if name == "tiny" else "above"] == clamped["groups"] > 0


def test_verify_warns_about_clamped_scales(capsys, files):
    status, out, err = bitmod(capsys, "verify", "--npy", files["huge4"], *TINY_CORE, "--json")
    assert status == 0
    assert strict(out)["clamped_groups"] == {"below": 0, "above": 8, "groups": 8}
    assert err.startswith("bitmod verify: warning: group scales are clamped")


# --- 12: empty output name ------------------------------------------------------------------------

def test_empty_output_names_are_refused(capsys, files):
    assert one_line_error(capsys, "quantize", files["w"], "-o", "") == (
        "the output file name is empty")
    assert one_line_error(capsys, "verify", "--random", 2, 4, 32, "--waves", "") == (
        "the waveform file name is empty")
    assert one_line_error(capsys, "doctor", "--keep", " ") == (
        "--keep: the directory name is empty")


# --- 13: strict JSON ------------------------------------------------------------------------------

def test_every_cheap_json_output_is_strict(capsys, files):
    """NaN and infinities are null (or, for a format's special codes, a "special" string)."""
    status, out, _ = bitmod(capsys, "formats", "--json")
    assert status == 0 and strict(out)
    status, out, _ = bitmod(capsys, "formats", "fp8_e5m2", "--json")
    table = strict(out)["codes"]
    specials = {row["special"] for row in table if row["value"] is None}
    assert specials == {"+inf", "-inf", "nan"}
    assert all(row["special"] is None for row in table if row["value"] is not None)
    status, out, _ = bitmod(capsys, "quantize", files["zero4"], "--json")
    assert status == 0 and strict(out)["relative_rms"] is None
    status, out, _ = bitmod(capsys, "bench", "quant", "--size", "64", "--schemes", "int4",
                            "--json")
    assert status == 0 and strict(out)
    status, out, err = bitmod(capsys, "verify", "--npy", files["zero4"], *TINY_CORE, "--json")
    report = strict(out)
    assert status == 0 and report["bit_exact"], err
    assert report["error_vs_fp32"]["relative_rms"] is None
    status, out, _ = bitmod(capsys, "verify", "--npy", files["zero4"], *TINY_CORE)
    assert status == 0 and "relative RMS n/a" in out


def test_bench_json_is_strict_with_missing_figures(capsys, monkeypatch):
    """A bench row without an Fmax (NaN-prone figures) and a row that does not fit."""
    from bitmod.fpga.synth import DoesNotFit
    from bitmod.tools import bench_pe
    from bitmod.tools.api import SynthResult

    def fake_synth(component, params, *, scheme=None, device="", clock_mhz=100.0, **_):
        if params["lanes"] == 32:
            raise DoesNotFit(device, ["ICESTORM_DSP 16/8"],
                             {"ICESTORM_DSP": {"used": 16, "available": 8}}, {}, "/tmp/x")
        return SynthResult(component=component, params=params, scheme=scheme, device=device,
                           lut4=0, ff=0, carry=0, dsp=0, bram=0, fmax_mhz=None,
                           target_mhz=clock_mhz, in_bits=1, out_bits=1,
                           total_with_wrapper={}, seconds=float("nan"), workdir="")

    monkeypatch.setattr(bench_pe, "synth", fake_synth)
    status, out, _ = bitmod(capsys, "bench", "pe", "--kind", "int", "--lanes", "4", "--lanes",
                            "32", "--device", "ice40-up5k", "--json")
    rows = strict(out)
    assert status == 0
    assert [row["fits"] for row in rows] == [True, False, True, False]
    assert rows[1]["over"] == ["ICESTORM_DSP 16/8"] and rows[0]["fmax_mhz"] is None


# --- 14: a configuration that does not fit --------------------------------------------------------

NEXTPNR_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    1343/   5280    25%
Info: \t        ICESTORM_RAM:       0/     30     0%
Info: \t               SB_IO:       5/     39    12%
Info: \t        ICESTORM_DSP:      16/      8   200%
Info: \t      ICESTORM_SPRAM:       0/      4     0%

Info: Placed 0 cells based on constraints.
ERROR: Unable to place cell 'unit.$27_SB_MAC16_O_DSP', no BELs remaining to implement cell \
type 'ICESTORM_DSP'
"""


def test_nextpnr_overuse_is_parsed():
    from bitmod.fpga.synth import overused, utilisation

    assert overused(NEXTPNR_LOG) == ["ICESTORM_DSP 16/8"]
    assert utilisation(NEXTPNR_LOG)["ICESTORM_LC"] == {"used": 1343, "available": 5280}
    assert overused("Info: nothing here\n") == []


def test_bench_pe_reports_a_configuration_that_does_not_fit_as_a_row(capsys, monkeypatch):
    """32 lanes of the integer PE need 16 DSPs (two products each); the UP5K has 8: a row,
    exit 0."""
    from bitmod.fpga.synth import DoesNotFit
    from bitmod.tools import bench_pe

    def fake_synth(component, params, *, device="", **_):
        raise DoesNotFit(device, ["ICESTORM_DSP 16/8"], {}, {}, "/tmp/x")

    monkeypatch.setattr(bench_pe, "synth", fake_synth)
    status, out, err = bitmod(capsys, "bench", "pe", "--kind", "int", "--lanes", "32",
                              "--device", "ice40-up5k")
    assert status == 0 and err == ""
    rows = out.splitlines()[1:]
    assert len(rows) == 2 and all(r.endswith("does not fit: ICESTORM_DSP 16/8") for r in rows)


def test_synth_of_a_design_that_does_not_fit_is_one_line(capsys):
    """The real flow (about 10 s): nextpnr's utilisation names the DSPs, not "exit 125" (32
    int8 lanes: 16 SB_MAC16 blocks at two products each)."""
    error = one_line_error(capsys, "synth", "int_pe", "--scheme", "int8", "--param",
                           "lanes=32", "--device", "ice40-up5k")
    assert error.startswith("does not fit ice40-up5k: ICESTORM_DSP 16/8 (log: ")


# --- 15: messages that name the real problem ------------------------------------------------------

@pytest.mark.parametrize("tokens", ["0", "-3"])
def test_run_tokens_must_be_positive(capsys, files, tokens):
    assert one_line_error(capsys, *RUN, "--npy", files["w"], "--tokens", tokens, "--scheme",
                          "bitmod4", "--array", "2x2", "--lanes", 4, "--act", "int8") == (
        f"tokens must be >= 1, not {tokens}")


def test_verify_array_out_of_range_names_the_array(capsys):
    assert one_line_error(capsys, "verify", "--random", 2, 4, 32, "--array", "1000x1000") == (
        "array rows must be in 1..64, not 1000")
    assert one_line_error(capsys, "verify", "--random", 2, 4, 32, "--array", "2x99") == (
        "array columns must be in 1..64, not 99")

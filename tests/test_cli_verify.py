"""``bitmod verify``: the main job end to end, and its one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from bitmod.golden import gemm as ggemm
from bitmod.golden.quantize import get_scheme


def run_cli(*args, timeout=900):
    result = subprocess.run([sys.executable, "-m", "bitmod.tools", "verify", *args],
                            capture_output=True, text=True, timeout=timeout, check=False)
    return result.returncode, result.stdout, result.stderr


def test_minilm_query_layer_is_bit_exact():
    """The default job: MiniLM layer-0 query projection, 16 tokens of real embeddings."""
    status, out, err = run_cli("--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["problem"] == "minilm:encoder.layer.0.attention.self.query"
    assert (report["m"], report["n"], report["k"]) == (16, 384, 384)
    assert report["bit_exact"] and report["outputs_checked"] == 16 * 384
    # Quantization error only: the RTL result is golden's, golden is close to FP32.
    assert report["error_vs_fp32"]["cosine"] > 0.99
    assert report["target"] == "core" and report["engine"] == "harness"
    assert report["counters_match_model"]
    cfg = ggemm.ArrayConfig(rows=4, cols=4, lanes=4, group_size=128,
                            formats=get_scheme("bitmod4").formats, act_format="fp16",
                            mant_width=12, act_exp_bits=3, max_groups=3)
    busy = ggemm.gemm_cycles(16, 384, 384, cfg)["busy_pe_cycles"]
    assert report["counters"]["busy_pe_cycles"] == busy
    assert report["pe_utilization"] == pytest.approx(busy / (16 * report["cycles"]))
    assert report["pe_utilization"] > 0.9


@pytest.mark.parametrize("target", ["core", "array"])
def test_random_gemm_int8_activations_json(target):
    status, out, err = run_cli("--random", "5", "13", "40", "--array", "2x2", "--group-size",
                               "16", "--act", "int8", "--scheme", "int8", "--target", target,
                               "--json")
    assert status == 0, err
    report = json.loads(out)
    # The array path streams padded tiles (3 x 7 tiles of 2 x 2); the core reads M x N outputs.
    assert report["bit_exact"]
    assert report["outputs_checked"] == (5 * 13 if target == "core" else 3 * 7 * 4)
    assert report["error_vs_fp32"]["relative_rms"] < 0.05


def test_random_gemm_fp16_output_json():
    """--out fp16: the core drains FP16 codes; compared as 16-bit integers with golden's."""
    # int4 weights keep the drained values (code units) well inside FP16's range here; int8
    # weight codes would overflow some of them to Inf (still bit-exact, but no error figure).
    status, out, err = run_cli("--random", "5", "13", "40", "--array", "2x2", "--group-size",
                               "16", "--scheme", "int4", "--out", "fp16", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["out"] == "fp16" and report["out_bits"] == 16
    assert report["infinite_outputs"] == 0
    assert report["bit_exact"] and report["counters_match_model"]
    assert report["outputs_checked"] == 5 * 13
    # One FP16 rounding (relative <= 2**-11) on top of the (int4) quantization error.
    quant = report["quantization_only_error"]["relative_rms"]
    assert report["error_vs_fp32"]["relative_rms"] == pytest.approx(quant, abs=2e-3)


def test_lut_pe_runs_folded_asymmetric_weights():
    """--pe lut: int4_asym's zero points folded into int5 levels (golden.gemm.core_tensor) run
    as 5 bit-planes per weight-step; bit-exact, the counters equal to the model."""
    status, out, err = run_cli("--random", "3", "5", "36", "--array", "2x2", "--group-size",
                               "16", "--act", "int8", "--scheme", "int4_asym", "--pe", "lut",
                               "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["pe"] == "lut" and report["bit_exact"] and report["counters_match_model"]
    assert report["zero_points"] == "folded"
    cfg = ggemm.ArrayConfig(rows=2, cols=2, lanes=4, group_size=16, formats="int5",
                            act_format="int8", pe_kind="lut", max_groups=3)
    assert cfg.terms == 5
    assert report["counters"]["busy_pe_cycles"] == \
        ggemm.gemm_cycles(3, 5, 36, cfg)["busy_pe_cycles"]


def test_bitserial_pe_corrects_zero_points():
    """The bit-serial PE runs int4_asym with MixPE's per-group zero-point correction: int4's
    2 terms per weight (folded int5 levels would take 3), bit-exact, counters equal to the
    model, and the text report says how the zero points ran."""
    args = ["--random", "3", "5", "36", "--array", "2x2", "--group-size", "16", "--act", "int8",
            "--scheme", "int4_asym"]
    status, out, err = run_cli(*args, "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["zero_points"] == "corrected"
    assert report["bit_exact"] and report["counters_match_model"]
    cfg = ggemm.ArrayConfig(rows=2, cols=2, lanes=4, group_size=16, formats="int4",
                            act_format="int8", max_groups=3, zero_points=True)
    assert cfg.terms == 2
    assert report["counters"]["busy_pe_cycles"] == \
        ggemm.gemm_cycles(3, 5, 36, cfg)["busy_pe_cycles"]
    status, out, err = run_cli(*args)
    assert status == 0, err
    assert "zero points corrected per group" in out


@pytest.mark.parametrize("act", ["int8", "fp16"])
def test_int_pes_run_bitmod4_as_integer_values(act):
    """BitMoD's 4-bit mixture on int PEs (DSP multipliers, no selectors): the mixture's
    values, integers in [-16, 16], as int6 codes; bit-exact with golden at the RTL, counters
    equal to the model, the report names the core's format."""
    args = ["--random", "3", "6", "48", "--array", "2x2", "--group-size", "16", "--act", act,
            "--scheme", "bitmod4", "--pe", "int", "--json"]
    status, out, err = run_cli(*args)
    assert status == 0, err
    report = json.loads(out)
    assert report["bit_exact"] and report["counters_match_model"]
    assert report["pe"] == "int" and report["scheme"] == "bitmod4"
    assert report["weight_formats"] == ["int6"]


@pytest.fixture
def nan_weights(tmp_path):
    w = np.ones((8, 16), dtype=np.float32)
    w[2, 3] = np.nan
    path = tmp_path / "w.npy"
    np.save(path, w)
    return str(path)


@pytest.fixture
def weights_3d(tmp_path):
    path = tmp_path / "w3.npy"
    np.save(path, np.ones((2, 8, 16), dtype=np.float32))
    return str(path)


@pytest.mark.parametrize(("args", "message"), [
    (["--layer", "encoder.layer.9.nope"], "unknown layer"),
    (["--scheme", "bitmod5"], "unknown scheme"),
    (["--scheme", "int8_asym", "--pe", "lut", "--random", "2", "2", "16", "--group-size", "16"],
     "cannot run on the core: format 'int9'"),
    (["--scheme", "mxfp4", "--layer", "encoder.layer.0.output.dense"],
     "channel 99's E8M0 block scales span 8 binades"),
    (["--pe", "int", "--scheme", "fp4", "--random", "2", "2", "16", "--group-size", "16"],
     "the int PE multiplies one signed integer format"),
    (["--pe", "minifloat", "--scheme", "int4", "--act", "int8", "--random", "2", "2", "32",
      "--group-size", "32"], "the minifloat PE shifts by power-of-two group scales"),
    (["--pe", "minifloat", "--scheme", "mxfp4", "--random", "2", "2", "32"],
     "the minifloat PE multiplies activations of at most 8 bits; mant_width=12"),
    (["--pe", "lut", "--scheme", "fp4", "--random", "2", "2", "16", "--group-size", "16"],
     "the lut PE reads the bit-planes of one integer format"),
    (["--pe", "bitplane", "--scheme", "int4", "--random", "2", "2", "16", "--group-size", "16"],
     "the bitplane PE takes activations of 2 to 8 bits; mant_width=12"),
    (["--array", "4by4"], "ROWSxCOLS"),
    (["--array", "65x2", "--random", "2", "2", "16", "--group-size", "16"], "rows"),
    (["--random", "2", "2", "0"], "random K must be in 1..65536, not 0"),
    (["--random", "2", "2", "20", "--group-size", "10"], "group_size"),
])
def test_bad_input_is_one_line(args, message):
    status, _out, err = run_cli(*args)
    assert status == 2
    assert "Traceback" not in err
    # Progress lines may precede it; the error is the one last line.
    lines = err.strip().splitlines()
    assert [line for line in lines if "error:" in line] == lines[-1:], err
    assert message in lines[-1]


def test_nan_and_shape_errors(nan_weights, weights_3d, tmp_path):
    for args, message in ((["--npy", nan_weights], "NaN"), (["--npy", weights_3d], "2-D")):
        status, _out, err = run_cli(*args)
        assert status == 2 and message in err and "Traceback" not in err
    x = tmp_path / "x.npy"
    np.save(x, np.ones((4, 5), dtype=np.float32))
    status, _out, err = run_cli("--npy", nan_weights, "--x-npy", str(x))
    assert status == 2 and "activations must be" in err


@pytest.mark.parametrize("scheme", ["bitmod3", "int6", "int4", "int3", "int2", "fp4", "fp3"])
def test_every_core_scheme_is_bit_exact(scheme):
    """Each element-format family the core runs, on its own core build (bitmod4 and int8 run
    above; the ER-only/EA-only/INT8-scale variants share those builds' format sets)."""
    status, out, err = run_cli("--random", "3", "5", "36", "--array", "2x2", "--group-size",
                               "16", "--scheme", scheme, "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["bit_exact"] and report["counters_match_model"]


def test_mixed_path_scheme_is_refused():
    status, _out, err = run_cli("--random", "2", "2", "16", "--group-size", "16",
                                "--scheme", "ant4")
    assert status == 2 and "Traceback" not in err
    assert "ant4" in err.strip().splitlines()[-1]


def test_text_report_names_every_pe_kind():
    """The text report has a label for every PE kind (it raised KeyError for minifloat, lut
    and bitplane: only --json had been run with them)."""
    from bitmod.golden.gemm import PE_KINDS
    from bitmod.tools.cmd_verify import PE_LABELS

    assert set(PE_LABELS) == set(PE_KINDS)

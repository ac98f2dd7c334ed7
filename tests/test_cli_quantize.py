"""Tests for ``bitmod quantize`` and ``bitmod bench quant`` (through tools.cli.main)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitmod.golden.quantize import QuantizedTensor
from bitmod.tools.cli import main

LAYER = "encoder.layer.0.attention.self.query"


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, pattern):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bitmod quantize: error:") or lines[0].startswith("bitmod bench")
    assert pattern in lines[0]
    assert "Traceback" not in err


@pytest.fixture
def weight_file(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.random.default_rng(0).standard_normal((16, 300)).astype(np.float32))
    return path


def test_quantize_npy_bitmod_saves_and_prints(capsys, tmp_path, weight_file):
    out_path = tmp_path / "q.npz"
    status, out, err = run(capsys, "quantize", str(weight_file), "--scheme", "bitmod4",
                           "-o", str(out_path))
    assert status == 0, err
    assert "16 x 300" in out and "bitmod4" in out and "group size:   128" in out
    assert "weight MSE:" in out and "fp4_er_pos" in out and "fp4_ea_neg" in out
    qt = QuantizedTensor.load(out_path)
    assert qt.shape == (16, 300) and qt.scheme == "bitmod4"
    total = sum(qt.selector_histogram().values())
    assert total == 16 * 3


def test_quantize_layer_with_options(capsys):
    status, out, err = run(capsys, "quantize", "--layer", LAYER, "--scheme", "int4_asym",
                           "--group-size", "64")
    assert status == 0, err
    assert "minilm:" + LAYER in out and "384 x 384" in out and "group size:   64" in out
    assert "selectors" not in out


def test_list_layers_and_schemes(capsys):
    status, out, _ = run(capsys, "quantize", "--list-layers")
    assert status == 0 and LAYER in out and "pooler.dense" in out
    status, out, _ = run(capsys, "quantize", "--list-schemes")
    assert status == 0 and "bitmod4" in out and "mxint8" in out


def test_error_unknown_scheme(capsys, weight_file):
    status, _, err = run(capsys, "quantize", str(weight_file), "--scheme", "bogus")
    assert_one_line_error(status, err, "unknown scheme 'bogus'")


def test_error_nan_weights(capsys, tmp_path):
    path = tmp_path / "nan.npy"
    w = np.ones((4, 128))
    w[0, :3] = np.nan
    np.save(path, w)
    status, _, err = run(capsys, "quantize", str(path))
    assert_one_line_error(status, err, "weight contains 3 NaN values")


def test_error_missing_file(capsys, tmp_path):
    status, _, err = run(capsys, "quantize", str(tmp_path / "nope.npy"))
    assert_one_line_error(status, err, "input file not found")


def test_error_unknown_layer(capsys):
    status, _, err = run(capsys, "quantize", "--layer", "encoder.layer.9.query")
    assert_one_line_error(status, err, "unknown layer 'encoder.layer.9.query'")


@pytest.mark.parametrize("argv,pattern", [
    ((), "no weights given"),
    (("--group-size", "0"), "group size must be a positive integer"),
    (("--scale-format", "e8m0"), "scale format 'e8m0' is not valid"),
])
def test_error_other_bad_input(capsys, weight_file, argv, pattern):
    args = ("quantize", *argv) if not argv else ("quantize", str(weight_file), *argv)
    status, _, err = run(capsys, *args)
    assert_one_line_error(status, err, pattern)


def test_error_not_a_npy(capsys, tmp_path):
    path = tmp_path / "junk.npy"
    path.write_bytes(b"not numpy")
    status, _, err = run(capsys, "quantize", str(path))
    assert_one_line_error(status, err, "not a .npy file (no NumPy header")


def test_error_both_inputs(capsys, weight_file):
    status, _, err = run(capsys, "quantize", str(weight_file), "--layer", LAYER)
    assert_one_line_error(status, err, "not both")


def test_bench_gaussian_json(capsys):
    status, out, err = run(capsys, "bench", "quant", "--size", "64", "--json",
                           "--schemes", "bitmod4,int4_asym,mxfp4")
    assert status == 0, err
    data = json.loads(out)
    assert [r["scheme"] for r in data["results"]] == ["bitmod4", "int4_asym", "mxfp4"]
    assert all(r["mse"] > 0 and r["time_s"] >= 0 for r in data["results"])


def test_bench_minilm_table(capsys):
    status, out, err = run(capsys, "bench", "quant", "--model", "minilm", "--tokens", "4",
                           "--schemes", "bitmod4,int8")
    assert status == 0, err
    assert "MiniLM-L6: 37 Linear layers" in out and "out rel err" in out
    assert "bitmod4" in out and "int8" in out


def test_bench_bad_scheme(capsys):
    status, _, err = run(capsys, "bench", "quant", "--schemes", "nope", "--size", "8")
    assert status == 2 and "unknown scheme 'nope'" in err and "Traceback" not in err

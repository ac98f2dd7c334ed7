"""``bitmod bench``: benchmark commands that print tables (never asserted by tests).

Each benchmark lives in its own module exposing ``register(bench_subparsers)``.
"""

from __future__ import annotations

import importlib

BENCH_MODULES = (
    "bitmod.tools.bench_boards",
    "bitmod.tools.bench_ceiling",
    "bitmod.tools.bench_pe",
    "bitmod.tools.bench_quant",
    "bitmod.tools.bench_sim",
    "bitmod.tools.bench_synth",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print a table")
    bench_subparsers = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for module_name in BENCH_MODULES:
        importlib.import_module(module_name).register(bench_subparsers)

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


def report(rows, header: str, format_row, as_json: bool) -> list[dict]:
    """Print a benchmark's rows as they come (``header`` first), or all of them at the end as
    strict JSON; returns the rows."""
    from bitmod.tools.api import dumps_strict

    done = []
    if not as_json:
        print(header, flush=True)
    for row in rows:
        done.append(row)
        if not as_json:
            print(format_row(row), flush=True)
    if as_json:
        print(dumps_strict(done))
    return done


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print a table")
    bench_subparsers = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for module_name in BENCH_MODULES:
        importlib.import_module(module_name).register(bench_subparsers)

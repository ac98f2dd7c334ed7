"""``bitmod formats [NAME] [--json]``: the number formats, their levels and encodings.

Without a name: one line per registered format (bits, number of levels, largest magnitude).
With a name (any name ``golden.formats.get`` accepts, including parametrised ones such as
``fp_e3m2`` or fixed point): every code with its bit pattern and exact value, for formats of up
to 10 bits; wider formats print their summary only.

``--json`` is strict JSON: a code whose value is not a finite number has ``"value": null`` and
``"special"`` ``"nan"``, ``"+inf"`` or ``"-inf"`` (``null`` for every finite value).
"""

from __future__ import annotations

import numpy as np

from bitmod.golden import formats
from bitmod.tools.api import dumps_strict

# Code tables beyond this width would print thousands of lines.
MAX_TABLE_BITS = 10


def _value_text(value: float) -> str:
    if np.isnan(value):
        return "NaN"
    if np.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}" if value == int(value) or abs(value) >= 1e-3 else f"{value:.6g}"


# Counting the levels enumerates every code: fine up to 16 bits, not for fp32.
MAX_LEVEL_COUNT_BITS = 16


def _summary(fmt) -> dict:
    count = int(fmt.levels.size) if fmt.bits <= MAX_LEVEL_COUNT_BITS else None
    return {"name": fmt.name, "bits": int(fmt.bits), "signed": bool(fmt.signed),
            "levels": count, "qmax": float(fmt.qmax), "repr": repr(fmt)}


def _table(fmt) -> list[dict]:
    codes = fmt.codes()
    values = fmt.decode(codes)
    canonical = set(int(c) for c in fmt.canonical_codes())
    return [{"code": int(c), "bits": format(int(c), f"0{fmt.bits}b"),
             "value": float(v) if np.isfinite(v) else None, "special": _special(v),
             "canonical": int(c) in canonical}
            for c, v in zip(codes, values, strict=True)]


def _special(value: float) -> str | None:
    """``"nan"``, ``"+inf"``, ``"-inf"`` for a non-finite value (JSON has none), else None."""
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return None


def _formats(args) -> int:
    if args.name is None:
        rows = [_summary(formats.get(name)) for name in formats.names()]
        if args.json:
            print(dumps_strict(rows))
            return 0
        print(f"{'format':16s} {'bits':>4s} {'levels':>7s} {'max |value|':>12s}")
        for row in rows:
            count = "-" if row["levels"] is None else str(row["levels"])
            print(f"{row['name']:16s} {row['bits']:4d} {count:>7s} "
                  f"{_value_text(row['qmax']):>12s}")
        return 0
    fmt = formats.get(args.name)
    summary = _summary(fmt)
    table = _table(fmt) if fmt.bits <= MAX_TABLE_BITS else None
    if args.json:
        levels = [float(v) for v in fmt.levels] if table is not None else None
        print(dumps_strict({**summary, "levels_list": levels, "codes": table}))
        return 0
    count = "" if summary["levels"] is None else f", {summary['levels']} levels"
    print(f"{summary['repr']}: {summary['bits']} bits{count}, "
          f"max |value| {_value_text(summary['qmax'])}")
    if table is None:
        print(f"(code table omitted: more than {MAX_TABLE_BITS} bits)")
        return 0
    print("levels:", " ".join(_value_text(v) for v in fmt.levels))
    print(f"{'code':>6s}  {'bits':>{fmt.bits}s}  value")
    for row in table:
        special = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}.get(row["special"])
        value = _value_text(row["value"] if special is None else special)
        note = "" if row["canonical"] else "  (non-canonical)"
        print(f"{row['code']:6d}  {row['bits']}  {value}{note}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("formats", help="list number formats or show one's codes")
    parser.add_argument("name", nargs="?", help="a format name, e.g. fp4_er_pos or fp8_e4m3")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_formats)

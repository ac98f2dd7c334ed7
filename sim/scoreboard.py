"""Scoreboard: compare RTL results with golden ones, in full, and report the first mismatches.

``check(rtl, golden, name=..., inputs=...)`` compares two equally shaped arrays of integers
element by element (Python ints or NumPy integers; object arrays for values wider than 64 bits).
On a mismatch it raises ``AssertionError`` naming how many cases differ and showing the first
few with their inputs; otherwise it prints ``<name>: N cases bit-exact`` (visible with
``pytest -s``) and returns N, so every suite states how much it checked.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check"]


def _as_objects(values) -> np.ndarray:
    array = np.asarray(values)
    return array.astype(object) if array.dtype != object else array


def check(rtl, golden, *, name: str = "rtl == golden", inputs=None, show: int = 5) -> int:
    """Assert ``rtl == golden`` on every element; return the number of cases compared."""
    rtl_values = _as_objects(rtl)
    golden_values = _as_objects(golden)
    if rtl_values.shape != golden_values.shape:
        raise AssertionError(f"{name}: RTL gave shape {rtl_values.shape}, golden "
                             f"{golden_values.shape}")
    flat_rtl = rtl_values.reshape(-1)
    flat_golden = golden_values.reshape(-1)
    differ = [i for i, (a, b) in enumerate(zip(flat_rtl, flat_golden, strict=True))
              if int(a) != int(b)]
    total = flat_rtl.size
    if differ:
        flat_inputs = None if inputs is None else _as_objects(inputs).reshape(-1)
        lines = []
        for index in differ[:show]:
            shown_input = "" if flat_inputs is None else f" input {int(flat_inputs[index]):#x}"
            lines.append(f"  case {index}:{shown_input} rtl {int(flat_rtl[index])} "
                         f"golden {int(flat_golden[index])}")
        raise AssertionError(f"{name}: {len(differ)} of {total} cases differ\n"
                             + "\n".join(lines))
    print(f"{name}: {total} cases bit-exact")
    return total

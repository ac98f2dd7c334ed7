"""DSP MAC array: exact tile results, per-step payload fields and output timing.

Bit-exact twin of :class:`hdl.array.dsp_array.DspMacArray`, the DSP-based INT8 ceiling: an
output-stationary ``R x C`` systolic array with one ``a_bits x w_bits`` multiplier (one DSP)
per PE, ``R * C`` MACs per cycle.

Data model
----------
A *tile* is a pair ``(a, w)`` with ``a`` of shape ``[R, K]`` (activations, one row per array
row) and ``w`` of shape ``[K, C]`` (weights, one column per array column), signed integers of
``a_bits`` / ``w_bits`` bits, ``1 <= K <= max_k``. Its result is the exact integer product::

    acc[r, c] = sum_k a[r, k] * w[k, c]

The array takes one *step* per transfer: the activation column ``a[:, k]``, the weight row
``w[k, :]`` and ``last`` (set on the tile's final ``k``). :func:`tile_steps` builds them.

Accumulator width (tight two's complement, :func:`acc_width`)::

    p_hi = (-2**(a_bits-1)) * (-2**(w_bits-1))           both operands most negative
    p_lo = -max(2**(a_bits-1) * (2**(w_bits-1) - 1), (2**(a_bits-1) - 1) * 2**(w_bits-1))
    acc_width = signed_width(max_k * p_lo, max_k * p_hi)

e.g. INT8 x INT8: ``max_k = 4096`` gives ``4096 * 2**14 = 2**26``, 28 bits.

Output timing (:func:`schedule`)
--------------------------------
Cycle 0 is the cycle the first step is accepted. A tile's results leave as ``C`` transfers,
column ``c`` (all ``R`` rows) in cycle ``t_last + latency + c`` where ``t_last`` is the cycle
its ``last`` step was accepted and ``latency = R + C + 4`` (:func:`latency`). The drain
needs ``C`` cycles per tile, so consecutive ``last`` steps must be accepted at least
``C`` cycles apart (:func:`min_tile_steps`): back to back, every tile needs ``K >= C``. The RTL
enforces the spacing by holding ``i_stream.ready`` low on a ``last`` step offered too early;
``schedule(..., allow_short=True)`` models that stall exactly, while the default refuses
(``ValueError``) a tile shorter than ``C`` steps.
"""

from __future__ import annotations

import numpy as np

from .checks import check_int
from .pe_baseline import signed_width

DEFAULT_MAX_K = 4096
MAX_DIM = 32
MAX_ACC_WIDTH = 64

# Registers in a PE from its operand (chain) registers to the accumulate stage: the DSP input
# registers, the DSP output register and a second product register.
PE_STAGES = 3

__all__ = [
    "DEFAULT_MAX_K",
    "PE_STAGES",
    "acc_width",
    "check_params",
    "latency",
    "min_tile_steps",
    "product_range",
    "schedule",
    "tile_results",
    "tile_steps",
]


def product_range(a_bits: int = 8, w_bits: int = 8) -> tuple[int, int]:
    """``(p_lo, p_hi)``: the extreme products of ``int(a_bits) x int(w_bits)``."""
    a_lo, a_hi = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    w_lo, w_hi = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    corners = [a_lo * w_lo, a_lo * w_hi, a_hi * w_lo, a_hi * w_hi]
    return min(corners), max(corners)


def acc_width(max_k: int, a_bits: int = 8, w_bits: int = 8) -> int:
    """Tight signed width of ``max_k`` products of the extreme sign (module docstring)."""
    p_lo, p_hi = product_range(a_bits, w_bits)
    return signed_width(int(max_k) * p_lo, int(max_k) * p_hi)


def check_params(rows: int = 4, cols: int = 4, max_k: int = DEFAULT_MAX_K, a_bits: int = 8,
                 w_bits: int = 8) -> int:
    """Validate the array's parameters (``rows``, ``cols`` 1..32, operands 2..18 bits, an
    accumulator of at most 64 bits); returns the accumulator width."""
    check_int("rows", rows, 1, MAX_DIM)
    check_int("cols", cols, 1, MAX_DIM)
    max_k = check_int("max_k", max_k, 1)
    a_bits = check_int("a_bits", a_bits, 2, 18)
    w_bits = check_int("w_bits", w_bits, 2, 18)
    width = acc_width(max_k, a_bits, w_bits)
    if width > MAX_ACC_WIDTH:
        raise ValueError(f"max_k={max_k} needs a {width}-bit accumulator (at most "
                         f"{MAX_ACC_WIDTH})")
    return width


def min_tile_steps(cols: int) -> int:
    """Fewest cycles between consecutive ``last`` steps (the shortest back-to-back tile): ``C``.

    Each row's drain carries two registers per PE and moves one register per cycle, so a
    tile's ``C`` results of a row leave on ``C`` consecutive cycles; a tile ending sooner
    would load its results into the drain while the previous tile's are still passing.
    """
    return int(cols)


def latency(rows: int, cols: int) -> int:
    """Cycles from the accepted ``last`` step to column 0's results: ``R + C + 4``.

    Step ``k`` reaches PE ``(r, c)``'s operand registers ``1 + r + (C - 1 - c)`` cycles after
    it was accepted (``r`` down the weight path, ``C - 1 - c`` along the row: activations
    flow from column ``C - 1`` to 0); + ``PE_STAGES`` (3) to the accumulate stage, + 1 into
    the drain register, + ``2 * (C - 1 - c) + 1`` drain registers to column 0's end of the
    row, + ``R - 1 - r`` row deskew registers: column ``c`` leaves ``R + C + 4 + c`` cycles
    after ``last``.
    """
    return int(rows) + int(cols) + 1 + PE_STAGES


def _check_tile(index: int, a, w, a_bits: int, w_bits: int, max_k: int | None):
    a = np.asarray(a)
    w = np.asarray(w)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise ValueError(f"tile {index}: a must be [R, K] and w [K, C], not {a.shape} and "
                         f"{w.shape}")
    k = a.shape[1]
    if k < 1:
        raise ValueError(f"tile {index}: K must be >= 1")
    if max_k is not None and k > max_k:
        raise ValueError(f"tile {index}: K={k} exceeds max_k={max_k}")
    for name, values, bits in (("a", a, a_bits), ("w", w, w_bits)):
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"tile {index}: {name} must hold integers, not {values.dtype}")
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if values.size and (values.min() < lo or values.max() > hi):
            raise ValueError(f"tile {index}: {name} values must lie in {lo}..{hi}")
    return a.astype(np.int64), w.astype(np.int64)


def tile_results(tiles, *, a_bits: int = 8, w_bits: int = 8,
                 max_k: int | None = None) -> list[np.ndarray]:
    """Exact ``acc = a @ w`` (``int64 [R, C]``) of each tile ``(a, w)``.

    ``ValueError`` for operands outside ``a_bits`` / ``w_bits``, ``K > max_k`` (when given) or
    shapes that do not chain. Exact in ``int64``: the array's accumulator is at most 64 bits.
    """
    results = []
    for index, (a, w) in enumerate(tiles):
        a, w = _check_tile(index, a, w, a_bits, w_bits, max_k)
        if acc_width(a.shape[1], a_bits, w_bits) > 64:
            raise ValueError(f"tile {index}: K={a.shape[1]} overflows 64 bits")
        results.append(a @ w)
    return results


def tile_steps(tiles) -> dict[str, np.ndarray]:
    """Per-step fields of a sequence of tiles: ``a [S, R]``, ``w [S, C]``, ``last [S]``.

    Step ``k`` of a tile carries ``a[:, k]``, ``w[k, :]`` and ``last = (k == K - 1)``.
    """
    a_cols, w_rows, last = [], [], []
    for a, w in tiles:
        a = np.asarray(a, dtype=np.int64)
        w = np.asarray(w, dtype=np.int64)
        a_cols.append(a.T)
        w_rows.append(w)
        flags = np.zeros(a.shape[1], dtype=np.int64)
        flags[-1] = 1
        last.append(flags)
    return {"a": np.concatenate(a_cols), "w": np.concatenate(w_rows),
            "last": np.concatenate(last)}


def schedule(ks, *, rows: int, cols: int,
             allow_short: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Accept cycle of every step and output cycle of every result column, back to back.

    Steps are offered every cycle (each as soon as the previous one was accepted) and the sink
    takes every output. ``ks`` lists the tiles' lengths. Returns ``(accept, out)``: ``accept
    [sum(ks)]`` and ``out [len(ks), C]`` with ``out[n, c] = accept[last step of n] + latency +
    c``.

    A tile shorter than :func:`min_tile_steps` (``K < C``) raises ``ValueError`` unless
    ``allow_short``; then the model follows the RTL, which holds a ``last`` step until ``C``
    cycles after the previous accepted ``last``.
    """
    ks = [int(k) for k in ks]
    bound = min_tile_steps(cols)
    for index, k in enumerate(ks):
        if k < 1:
            raise ValueError(f"tile {index}: K={k}; a tile has at least one step")
        if k < bound and not allow_short:
            raise ValueError(f"tile {index}: K={k} is shorter than the drain allows back to "
                             f"back (K >= cols = {bound})")
    accept = np.zeros(sum(ks), dtype=np.int64)
    out = np.zeros((len(ks), cols), dtype=np.int64)
    cycle, step, prev_last = 0, 0, None
    for index, k in enumerate(ks):
        for j in range(k):
            if j == k - 1 and prev_last is not None:
                cycle = max(cycle, prev_last + bound)
            accept[step] = cycle
            step += 1
            cycle += 1
        prev_last = accept[step - 1]
        out[index] = prev_last + latency(rows, cols) + np.arange(cols)
    return accept, out

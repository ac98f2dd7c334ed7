"""Drive the systolic array (hdl/array) with a GEMM: weight-step streams and expected outputs.

The array takes one *weight-step* per payload: for each of its C columns the L weight codes,
the group selector and the scale code; for each of its R rows the L activation words (and, for
FP16/BF16 activations, the group exponent ``gexp`` and the token floor ``base``); and the
``group_last``/``out_last`` flags. :func:`gemm_stream` turns a quantized GEMM into that stream,
tile by tile (row-major over (m0, n0), padding rows/columns with zeros);
:func:`expected_codes` gives golden's FP32 codes in the array's output order (R*C codes per tile,
row-major, padding included); :func:`run_array_gemm` runs it all under Verilator.
"""

from __future__ import annotations

import numpy as np
from amaranth import Shape
from amaranth.lib import data

from bitmod.golden import gemm as ggemm
from bitmod.golden.core import special_register  # the register golden.gemm assumes
from bitmod.hdl.array import SystolicArray
from bitmod.hdl.array.array import step_layout
from bitmod.sim.vectors import run_stream

__all__ = ["expected_codes", "gemm_stream", "pack_steps", "run_array_gemm", "special_register",
           "tile_steps"]


def _field_bits(shape, values) -> int:
    """Raw bits of a (nested) array layout or plain shape from a nested list of ints."""
    if isinstance(shape, data.ArrayLayout):
        width = shape.size // shape.length
        total = 0
        for i, v in enumerate(values):
            total |= _field_bits(shape.elem_shape, v) << (i * width)
        return total
    return int(values) & ((1 << Shape.cast(shape).width) - 1)


def pack_steps(cfg: ggemm.ArrayConfig, steps: list[dict]) -> list[int]:
    """Flat ``i_stream`` payloads of the array for ``steps`` (:func:`tile_steps`)."""
    layout = step_layout(cfg)
    out = []
    for step in steps:
        word = 0
        for name, field in layout:
            word |= _field_bits(field.shape, step[name]) << field.offset
        out.append(word)
    return out


def tile_steps(cfg, acts, qt, m0: int, n0: int) -> list[dict]:
    """The weight-steps of the output tile at tokens m0.., channels n0.. (padded)."""
    ggemm.check_rtl_zero_points(qt, cfg)
    R, C, L, G = cfg.rows, cfg.cols, cfg.lanes, cfg.group_size
    M, K = acts["mant"].shape
    N = qt.shape[0]
    lengths = ggemm.group_lengths(K, G)
    steps = []
    for g, length in enumerate(lengths):
        n_steps = -(-length // L)
        for s in range(n_steps):
            ks = [g * G + s * L + lane for lane in range(L)]
            inside = [k < g * G + length for k in ks]
            codes, sel, scale, act_words, gexp, base, zp = [], [], [], [], [], [], []
            for c in range(C):
                n = n0 + c
                ok = n < N
                codes.append([int(qt.codes[n, k]) if ok and i else 0
                              for k, i in zip(ks, inside, strict=True)])
                sel.append(int(qt.selectors[n, g]) if ok and qt.selectors is not None else 0)
                scale.append(int(qt.scale_codes[n, g]) if ok else 0)
                has_zp = ok and qt.zero_points is not None
                zp.append(int(qt.zero_points[n, g]) if has_zp else 0)  # packed two's complement
            for r in range(R):
                m = m0 + r
                ok = m < M
                act_words.append([int(acts["words"][m, k]) if ok and i else 0
                                  for k, i in zip(ks, inside, strict=True)])
                gexp.append(int(acts["gexp"][m, g]) if ok else 0)
                base.append(int(acts["base"][m]) if ok else 0)
            last = s == n_steps - 1
            step = {"codes": codes, "sel": sel, "scale": scale, "acts": act_words,
                    "gexp": gexp, "base": base, "zp": zp, "group_last": int(last),
                    "out_last": int(last and g == len(lengths) - 1)}
            steps.append(step)
    return steps


def gemm_stream(cfg, acts, qt):
    """All tiles' steps and the expected R*C codes per tile (golden, padding = +0)."""
    M = acts["mant"].shape[0]
    N = qt.shape[0]
    steps, tiles = [], []
    for m0 in range(0, M, cfg.rows):
        for n0 in range(0, N, cfg.cols):
            steps += tile_steps(cfg, acts, qt, m0, n0)
            tiles.append((m0, n0))
    return steps, tiles


def expected_codes(cfg, result, tiles):
    M, N = result.codes.shape
    out = []
    for m0, n0 in tiles:
        for r in range(cfg.rows):
            for c in range(cfg.cols):
                m, n = m0 + r, n0 + c
                out.append(int(result.codes[m, n]) if m < M and n < N else 0)
    return np.array(out, dtype=object)


def run_array_gemm(cfg: ggemm.ArrayConfig, acts: dict, qt, *, backpressure: float = 0.0,
                   idle: float = 0.0, seed: int = 1, stats: dict | None = None,
                   progress=None, engine: str = "harness",
                   waves=None) -> tuple[np.ndarray, list[tuple[int, int]], int]:
    """Run the GEMM of ``acts`` (from ``golden.gemm.act_mantissas``) and ``qt`` through the
    Verilator model of ``SystolicArray(cfg)``.

    Returns the FP32 codes in array output order (compare with :func:`expected_codes`), the
    tile origins and the number of weight-steps streamed. ``stats`` receives the output cycles
    and the model's build time (see :func:`sim.vectors.run_stream`); ``engine`` and ``waves``
    as there.
    """
    steps, tiles = gemm_stream(cfg, acts, qt)
    words = pack_steps(cfg, steps)
    if progress is not None:
        progress(f"streaming {len(steps)} weight-steps ({len(tiles)} tiles) through the RTL")
    out = run_stream(SystolicArray, cfg, words, ports={"special_values": special_register(cfg)},
                     backpressure=backpressure, idle=idle, seed=seed,
                     n_outputs=len(tiles) * cfg.rows * cfg.cols, stats=stats, engine=engine,
                     waves=waves, cycles_per_input=cfg.terms)
    return out, tiles, len(steps)

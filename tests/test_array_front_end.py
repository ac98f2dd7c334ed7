"""The array's row front end (hdl/array/front_end.py) beside golden.gemm.act_mantissas: each
step's FP16/BF16 activations leave as the golden block mantissas with the row's group shift
(INT8 codes as they are), the weight fields unchanged, in order under backpressure; a tile's
row floors go to the drain once, with its last step. For the LUT PE kind the rows leave as
their half tables and correction (golden.pe_lut.table_builder of those mantissas)."""

import numpy as np
import pytest

from bitmod.golden.gemm import ArrayConfig, act_mantissas
from bitmod.golden.pe_lut import array_lut_params, table_builder
from bitmod.hdl.array.front_end import RowFrontEnd
from bitmod.sim.amaranth_sim import run_simulation, stream_put


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


@pytest.mark.parametrize(("act_format", "pe_kind", "zero_points"), [
    ("fp16", "bitserial", False), ("bf16", "bitserial", False), ("int8", "bitserial", False),
    ("fp16", "lut", False), ("int8", "lut", False),
    ("fp16", "bitserial", True), ("int8", "bitserial", True),
])
def test_front_end_matches_golden_mantissas(act_format, pe_kind, zero_points):
    """With zero points the rows also leave with ``-sum`` of the group's mantissas so far
    (RowGroupSums: the group's sum in its last step), the zero points beside the codes."""
    cfg = ArrayConfig(rows=2, cols=2, lanes=4, group_size=8,
                      formats=("int4",) if zero_points else ("int4_sym",),
                      act_format=act_format, mant_width=10, act_exp_bits=2, pe_kind=pe_kind,
                      zero_points=zero_points)
    R, C, L, A = cfg.rows, cfg.cols, cfg.lanes, cfg.act_width
    rng = np.random.default_rng(4)
    tiles, k = 3, 16  # two groups of two steps per tile
    steps = []  # (payload dict, expected output dict, out_last)
    floors = []
    for _tile in range(tiles):
        if act_format == "int8":
            x = rng.integers(-128, 128, size=(R, k)).astype(np.int8)
        else:
            x = (rng.standard_normal((R, k)) * np.exp2(rng.integers(-14, 10, size=(R, 1))))
            x[:, :2] = 0.0
            # A group far below the token's largest (more than 2**X - 1 binades): its anchor
            # is the token floor, not its own exponent, and its small values lose low bits.
            x[:, 8:] *= 2.0 ** -9
            x = x.astype(np.float16)
        acts = act_mantissas(x, cfg)
        floors.append([int(b) for b in acts["base"]])
        for s in range(k // L):
            g = s * L // cfg.group_size
            lanes = slice(s * L, (s + 1) * L)
            payload = {
                "codes": [[int(v) for v in rng.integers(0, 16, L)] for _ in range(C)],
                "sel": [0] * C, "scale": [int(v) for v in rng.integers(0, 256, C)],
                "acts": [[int(w) & 0xFFFF for w in acts["words"][r, lanes]] for r in range(R)],
                "group_last": int((s * L + L) % cfg.group_size == 0),
                "out_last": int(s == k // L - 1),
            }
            if zero_points:
                payload["zp"] = [int(v) for v in rng.integers(0, 16, C)]
                so_far = acts["mant"][:, g * cfg.group_size:(s + 1) * L].sum(axis=1)
            if act_format != "int8":
                payload["gexp"] = [int(v) for v in acts["gexp"][:, g]]
                payload["base"] = [int(v) for v in acts["base"]]
            want = {"acts": [[int(v) for v in acts["mant"][r, lanes]] for r in range(R)],
                    "shift": [int(v) for v in acts["shift"][:, g]]}
            if zero_points:
                want["rowsum"] = [-int(v) for v in so_far]
            steps.append((payload, want))
    dut = RowFrontEnd(cfg)
    got, pushed = [], []

    async def source(ctx):
        for payload, _ in steps:
            await stream_put(ctx, dut.i_stream, payload)

    async def sink(ctx):
        choice = np.random.default_rng(8)
        while len(got) < len(steps):
            ctx.set(dut.o_stream.ready, bool(choice.random() < 0.6))
            await ctx.tick()

    async def monitor(ctx):
        ctx.set(dut.base_w_rdy, 1)
        async for _c, _r, valid, ready, out, w_en, w_data in ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.ready, dut.o_stream.payload,
                dut.base_w_en, dut.base_w_data):
            if valid and ready:
                got.append(out)
            if w_en:
                pushed.append(int(w_data))

    run_simulation(dut, [source, sink], processes=[monitor], deadline=1e-3)
    assert len(got) == len(steps)
    lut = array_lut_params(cfg) if pe_kind == "lut" else None
    for (payload, want), out in zip(steps, got, strict=True):
        for r in range(R):
            if lut is None:
                assert [_signed(int(out.acts[r][lane]), A) for lane in range(L)] == \
                    want["acts"][r]
                continue
            tables, corr = table_builder(want["acts"][r], table_group=lut["table_group"],
                                         weight_bits=lut["weight_bits"])
            row = out.tables[r]
            assert [[int(e) for e in t] for t in row.tables] == tables.tolist()
            assert int(row.corr) == int(corr) and int(corr) == -sum(want["acts"][r])
        if zero_points:
            assert [int(out.rowsum[r]) for r in range(R)] == want["rowsum"]
            assert [int(out.zp[c]) for c in range(C)] == payload["zp"]
        if act_format != "int8":
            assert [int(out.shift[r]) for r in range(R)] == want["shift"]
        assert [[int(out.codes[c][lane]) for lane in range(L)] for c in range(C)] == \
            payload["codes"]
        assert [int(out.scale[c]) for c in range(C)] == payload["scale"]
        assert (int(out.group_last), int(out.out_last)) == (payload["group_last"],
                                                            payload["out_last"])
    if act_format != "int8":
        E = cfg.exp_width
        assert pushed == [sum(b << (r * E) for r, b in enumerate(tile)) for tile in floors]

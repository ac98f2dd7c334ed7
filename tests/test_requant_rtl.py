"""hdl/arith/requant.py: the RTL requantizer equals golden.requant.requantize bit for bit.

Verilator: six requantizers (each rule with a full-width output that shows the unclamped rounded
value, and each rule with an 8-bit output, zero point and clamp) sit side by side in one model
(one build) fed the same stream: every 16-bit accumulator for three fixed (b, c), 100k seeded
random int32 accumulators with random (b, c) including both ends of c, and the corner grid
(INT32_MIN/MAX, b = INT32_MIN/MAX, gemmlowp's saturating corners at every c <= 31).
Amaranth simulator: latency, backpressure, small and the widest widths, parameter checks.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_requant import corner_operands, random_operands

from bitmod.golden.requant import ROUNDING_RULES, dyadic_from_scale, requantize
from bitmod.hdl.arith.requant import Requantizer
from bitmod.sim.amaranth_sim import measure_latency, stream_through
from bitmod.sim.bank import LockstepBank
from bitmod.sim.vectors import pack_fields, run_vectors, unpack_fields


def golden(params, acc, b, c):
    return requantize(acc, b, c, rounding=params.get("rounding", "hawq"),
                      out_width=params.get("out_width", 8), signed=params.get("signed", True),
                      zero_point=params.get("zero_point", 0))


# ------------------------------------------------------------------ Amaranth simulator

def simulate(dut, acc, b, c, *, ready_prob=1.0, idle_prob=0.0, seed=0):
    payloads = [{"acc": int(x), "b": int(y), "c": int(z)} for x, y, z in zip(acc, b, c,
                                                                            strict=True)]
    out = stream_through(dut, payloads, idle=idle_prob, backpressure=1.0 - ready_prob,
                         seed=seed)
    return np.array([payload.value for payload in out], dtype=object)


def operands(acc_width, b_width, c_width, n, seed):
    rng = np.random.default_rng(seed)
    acc = [int(v) for v in rng.integers(-(1 << (acc_width - 1)), 1 << (acc_width - 1), n)]
    b = [int(v) for v in rng.integers(-(1 << (b_width - 1)), 1 << (b_width - 1), n)]
    c = [int(v) for v in rng.integers(0, 1 << c_width, n)]
    # Extremes of every field.
    acc += [-(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1, -1, 0]
    b += [-(1 << (b_width - 1)), (1 << (b_width - 1)) - 1, -(1 << (b_width - 1)), 1]
    c += [0, (1 << c_width) - 1, 1, (1 << c_width) - 1]
    return [np.array(v, dtype=object) for v in (acc, b, c)]


@pytest.mark.parametrize("rounding", ROUNDING_RULES)
@pytest.mark.parametrize(("acc_width", "b_width", "c_width", "out_width"),
                         [(32, 32, 6, 64), (8, 8, 3, 16), (6, 5, 4, 4)])
def test_amaranth_sim_random(rounding, acc_width, b_width, c_width, out_width):
    params = {"acc_width": acc_width, "b_width": b_width, "c_width": c_width,
              "out_width": out_width, "rounding": rounding}
    acc, b, c = operands(acc_width, b_width, c_width, 60, acc_width * 7 + len(rounding))
    rtl = simulate(Requantizer(**params), acc, b, c)
    assert (rtl == golden(params, acc, b, c)).all()


@pytest.mark.parametrize("rounding", ROUNDING_RULES)
def test_amaranth_sim_corners(rounding):
    # INT32_MIN/MAX operands, b = INT32_MIN (gemmlowp's saturating corners) and both ends of c.
    params = {"out_width": 64, "rounding": rounding}
    acc, b, c = corner_operands()
    rtl = simulate(Requantizer(**params), acc, b, c)
    assert (rtl == golden(params, acc, b, c)).all()


@pytest.mark.parametrize("rounding", ROUNDING_RULES)
def test_amaranth_sim_exhaustive_small(rounding):
    # Every (acc, b, c) of a 4 x 3-bit unit with shifts 0..15: shifts past the 7-bit product
    # included; the output is as wide as the product, so nothing is hidden by the clamp.
    params = {"acc_width": 4, "b_width": 3, "c_width": 4, "out_width": 7, "rounding": rounding}
    grid = np.meshgrid(np.arange(-8, 8), np.arange(-4, 4), np.arange(16), indexing="ij")
    acc, b, c = (g.ravel() for g in grid)
    rtl = simulate(Requantizer(**params), acc, b, c)
    assert (rtl == golden(params, acc, b, c)).all()
    print(f"checked {acc.size} cases")


@pytest.mark.parametrize("rounding", ["hawq", "single"])
def test_widest_configuration(rounding):
    # 64 x 64-bit operands: a 128-bit product, shifts up to 255, a 128-bit output.
    params = {"acc_width": 64, "b_width": 64, "c_width": 8, "out_width": 128,
              "rounding": rounding}
    acc, b, c = operands(64, 64, 8, 40, 99)
    dut = Requantizer(**params)
    assert dut.product_width == 128
    rtl = simulate(dut, acc, b, c)
    assert (rtl == golden(params, acc, b, c)).all()


@pytest.mark.parametrize("rounding", ROUNDING_RULES)
def test_latency(rounding):
    dut = Requantizer(rounding=rounding)
    assert dut.latency == (4 if rounding == "gemmlowp" else 3)
    cycles, payload = measure_latency(dut, {"acc": 5, "b": 1 << 30, "c": 31}, deadline=1e-6)
    assert (cycles, payload.value) == (dut.latency,
                                       int(golden({"rounding": rounding}, 5, 1 << 30, 31)))


@pytest.mark.parametrize("rounding", ROUNDING_RULES)
def test_backpressure_and_idle_cycles(rounding):
    params = {"rounding": rounding, "out_width": 12, "signed": False, "zero_point": 2000}
    acc, b, c = operands(32, 32, 6, 150, 21)
    c = np.array([int(v) % 20 + 40 for v in c], dtype=object)
    rtl = simulate(Requantizer(**params), acc, b, c, ready_prob=0.5, idle_prob=0.3, seed=5)
    assert len(rtl) == len(acc)
    assert (rtl == golden(params, acc, b, c)).all()


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"acc_width": 1}, ValueError, "acc_width"),
    ({"acc_width": 65}, ValueError, "acc_width"),
    ({"b_width": "32"}, TypeError, "b_width"),
    ({"c_width": 0}, ValueError, "c_width"),
    ({"c_width": 9}, ValueError, "c_width"),
    ({"out_width": 0}, ValueError, "out_width"),
    ({"out_width": 65}, ValueError, "out_width"),
    ({"signed": 0}, TypeError, "signed"),
    ({"rounding": "rne"}, ValueError, "rounding"),
    ({"rounding": "gemmlowp", "acc_width": 33}, ValueError, "acc_width"),
    ({"rounding": "gemmlowp", "b_width": 48}, ValueError, "b_width"),
    ({"zero_point": 128}, ValueError, "zero_point"),
    ({"zero_point": -1, "signed": False}, ValueError, "zero_point"),
    ({"zero_point": 1.0}, TypeError, "zero_point"),
])
def test_bad_parameters_name_the_parameter(kwargs, error, name):
    with pytest.raises(error, match=name):
        Requantizer(**kwargs)


def test_parameters_are_read_only_and_layouts_derived():
    dut = Requantizer(acc_width=24, b_width=16, c_width=5, out_width=6, signed=False,
                      zero_point=9, rounding="single")
    assert (dut.acc_width, dut.b_width, dut.c_width, dut.out_width) == (24, 16, 5, 6)
    assert (dut.signed, dut.zero_point, dut.rounding) == (False, 9, "single")
    assert dut.product_width == 40
    assert dut.in_layout.size == 24 + 16 + 5 and dut.out_layout.size == 6
    assert dut.output_range == (0, 63)
    with pytest.raises(AttributeError):
        dut.zero_point = 0


# ------------------------------------------------------------------ Verilator

BANK_CONFIGS = [
    {"rounding": "hawq", "out_width": 64},
    {"rounding": "single", "out_width": 64},
    {"rounding": "gemmlowp", "out_width": 64},
    {"rounding": "hawq"},
    {"rounding": "single", "signed": False, "zero_point": 128},
    {"rounding": "gemmlowp", "zero_point": -5},
]


class RequantBank(LockstepBank):
    """Requantizers side by side on one input stream (one Verilator build checks them all);
    shorter-latency units are padded to the longest."""

    def __init__(self, configs):
        super().__init__([Requantizer(**config) for config in configs], shared_input=True,
                         pad_to_latency=True)


def verilator_operands():
    """The named exhaustive sets, the random set and the corner grid, concatenated."""
    q16 = np.arange(-(1 << 15), 1 << 15, dtype=np.int64)
    fixed = [(1 << 30, 31),  # scale 1/2: every odd accumulator is a tie (docs/papers.md)
             (1 << 30, 34),  # scale 1/16: ties and gemmlowp's double rounding
             dyadic_from_scale(0.0031416)]  # a realistic scale: outputs fill the int8 range
    acc = [q16] * len(fixed)
    b = [np.full(q16.size, bb, dtype=np.int64) for bb, _ in fixed]
    c = [np.full(q16.size, cc, dtype=np.int64) for _, cc in fixed]
    rq, rb, rc = random_operands(100_000, 2024)
    cq, cb, cc = corner_operands()
    return (np.concatenate([*acc, rq, cq]), np.concatenate([*b, rb, cb]),
            np.concatenate([*c, rc, cc]), len(fixed) * q16.size)


def test_verilator_bank():
    acc, b, c, exhaustive = verilator_operands()
    bank = RequantBank(BANK_CONFIGS)
    stats = {}
    outputs = run_vectors(RequantBank, {"configs": BANK_CONFIGS},
                          pack_fields(bank.in_layout, acc=acc, b=b, c=c), stats=stats)
    assert stats["fill_cycles"] == bank.latency == 4
    columns = unpack_fields(bank.out_layout, outputs)
    for config, unit, name in zip(BANK_CONFIGS, bank.units, bank.names, strict=True):
        rtl = unpack_fields(unit.out_layout, columns[name])["value"]
        ref = golden(config, acc, b, c)
        bad = np.flatnonzero(rtl != ref)
        assert bad.size == 0, (config, acc[bad[:5]], b[bad[:5]], c[bad[:5]], rtl[bad[:5]],
                               ref[bad[:5]])
    print(f"checked {acc.size} inputs x {len(BANK_CONFIGS)} units = "
          f"{acc.size * len(BANK_CONFIGS)} cases ({exhaustive} from the exhaustive 16-bit sets)")

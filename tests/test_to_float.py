"""hdl.arith.to_float.ToFloat == golden.minifloat_arith.to_float_code.

Amaranth-simulator tests cover latency, backpressure and corner cases; the Verilator suite runs
every 16-bit accumulator value at several exponent offsets (fp16, bf16, fp8_e4m3, fp8_e5m2),
the whole input space of two tiny converters, and 200k seeded random 48-bit accumulators with
random offsets to fp32 plus named corners. Verilator builds dominate the runtime, so all
converters sit side by side in one test-only bank component: one model, one run.
"""


import numpy as np
import pytest

from bitmod.golden import formats
from bitmod.golden.minifloat_arith import to_float_code
from bitmod.hdl.arith.to_float import ToFloat
from bitmod.sim.amaranth_sim import measure_latency, stream_through
from bitmod.sim.bank import LockstepBank
from bitmod.sim.vectors import pack_fields, run_vectors, unpack_fields

# Exhaustive 16-bit sweeps: offsets chosen to reach overflow (Inf or saturation), the subnormal
# range and underflow to zero, and a plain normal range.
SWEEPS = {
    "fp16": ({"in_width": 16, "in_frac": 8, "out_format": "fp16"}, [9, -20, 0]),
    "bf16": ({"in_width": 16, "in_frac": 0, "out_format": "bf16", "exp_width": 9},
             [113, -140, 0]),
    "fp8_e4m3": ({"in_width": 16, "in_frac": 4, "out_format": "fp8_e4m3"}, [0, -14, 3]),
    "fp8_e5m2": ({"in_width": 16, "in_frac": 0, "out_format": "fp8_e5m2"}, [1, -30, -8]),
}
# Tiny converters whose whole input space (acc x exp_offset) is swept: M = 0, in_width = 2.
TINY = [
    {"in_width": 4, "in_frac": 1, "out_format": "fp3", "exp_width": 3},
    {"in_width": 2, "in_frac": 0, "out_format": "fp4_e2m1", "exp_width": 4},
]
WIDE = {"in_width": 48, "in_frac": 24, "out_format": "fp32"}
FORMS = [params for params, _ in SWEEPS.values()] + TINY + [WIDE]
# Both forms of stage 4/5: the round-up added in stage 4, or as stage 5's carry-in (the iCE40's).
UNITS = FORMS + [{**params, "round_carry_in": True} for params in FORMS]


class ConverterBank(LockstepBank):
    """Test harness: one ToFloat per parameter set, all fed in lockstep (field ``u<i>``)."""

    def __init__(self, units):
        super().__init__([ToFloat(**params) for params in units])


def simulate(dut, payloads, seed=None):
    """Amaranth-simulate ``payloads`` through ``dut``; random idles and stalls when seeded."""
    noisy = seed is not None
    return stream_through(dut, payloads, idle=0.3 if noisy else 0.0,
                          backpressure=0.4 if noisy else 0.0, seed=seed or 0, deadline=1e-2)


def fp32_corner_cases():
    """Named corners of the 48-bit fp32 converter (in_frac 24): (acc, exp_offset) lists.

    Value = acc * 2**(exp_offset - 24); fp32 keeps 24 significant bits.
    """
    top = (1 << 47) - 1
    acc = [
        0, 1, -1, top, -top, -(1 << 47),                         # zero, +-1, extremes
        (1 << 24) - 1, 1 << 24, (1 << 25) - 1,                  # exact at 24 bits
        (1 << 24) + 1, (1 << 24) + 3, -((1 << 24) + 1),         # ties at the LSB: even / odd
        ((1 << 24) + 1) << 20, ((1 << 24) + 3) << 20,           # ties deep in a wide word
        (((1 << 24) + 1) << 20) + 1,                            # just above a tie
        ((1 << 25) - 1) << 21,                                  # rounds up to the next binade
        -0x7FFFFF800000, 0x7FFFFF800000, 0x7FFFFFC00000,         # 24 ones; 25: tie, odd -> up
    ]
    offsets = [-128, -127, -100, -24, -1, 0, 1, 24, 100, 126, 127]
    a, x = np.meshgrid(acc, offsets, indexing="ij")
    pairs = [a.reshape(-1), x.reshape(-1)]
    # Overflow boundary: max = (2**24 - 1) * 2**104, max + ulp/2 rounds to Inf (tie, odd max).
    # (2**25 - 1) * 2**103 is max + ulp/2; (2**25 - 2) * 2**103 is max; -3 is below.
    for k in (-3, -2, -1):
        pairs[0] = np.append(pairs[0], [(1 << 25) + k, -((1 << 25) + k)])
        pairs[1] = np.append(pairs[1], [103 + 24, 103 + 24])
    # Subnormal boundary: min normal 2**-126, min subnormal 2**-149, half of it ties to 0.
    for acc_v, xo in [(1, -126 + 24), ((1 << 23) - 1, -149 + 24), (1 << 23, -149 + 24),
                      (1, -150 + 24), (3, -151 + 24), (1, -128 + 24 - 23), (3, -128)]:
        pairs[0] = np.append(pairs[0], [acc_v, -acc_v])
        pairs[1] = np.append(pairs[1], [xo, xo])
    return pairs[0].astype(np.int64), pairs[1].astype(np.int64)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"in_width": 1}, ValueError, "in_width must be in 2..64, not 1"),
    ({"in_width": 65}, ValueError, "in_width must be in 2..64, not 65"),
    ({"in_width": 16.0}, TypeError, "in_width must be an int"),
    ({"in_frac": 10_000}, ValueError, "in_frac must be in"),
    ({"exp_width": 0}, ValueError, "exp_width must be in 1..16, not 0"),
    ({"out_format": "int8"}, ValueError, "out_format='int8' is a IntFormat"),
    ({"out_format": "fp_e4m3_nosub"}, ValueError, "flushes subnormals"),
    ({"out_format": "fp99"}, ValueError, "out_format='fp99'"),
    ({"out_format": None}, TypeError, "out_format must be a format name"),
])
def test_rejects_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        ToFloat(**kwargs)


@pytest.mark.parametrize("params", UNITS)
def test_properties(params):
    dut = ToFloat(**params)
    assert dut.latency == 6
    assert (dut.in_width, dut.in_frac, dut.out_format) == (
        params["in_width"], params["in_frac"], params["out_format"])
    assert dut.exp_width == params.get("exp_width", 8)
    assert dut.in_layout["acc"].width == params["in_width"]
    assert dut.out_layout.size == formats.get(params["out_format"]).bits


def test_latency_in_simulation():
    dut = ToFloat(**WIDE)
    cycles, payload = measure_latency(dut, {"acc": 3 << 24, "exp_offset": 0}, deadline=1e-5)
    assert cycles == dut.latency
    assert payload.code == int(np.array(3.0, np.float32).view(np.uint32))


def test_fp32_corners_with_backpressure():
    acc, xo = fp32_corner_cases()
    # A few dozen of the corners keep the Amaranth simulation fast; Verilator runs them all.
    pick = np.random.default_rng(9).choice(acc.size, 48, replace=False)
    acc, xo = acc[pick], xo[pick]
    dut = ToFloat(**WIDE)
    received = simulate(dut, [{"acc": int(a), "exp_offset": int(x)}
                              for a, x in zip(acc, xo, strict=True)], seed=11)
    rtl = np.array([r.code for r in received])
    assert (rtl == to_float_code(acc, xo, WIDE["in_frac"], "fp32")).all()
    print(f"checked {acc.size} cases")


def test_widest_accumulator_extremes_in_simulation():
    """in_width = 64 (the maximum): +-extremes at both ends of the exponent range."""
    params = {"in_width": 64, "in_frac": 40, "out_format": "fp32", "exp_width": 8}
    acc_values = [-(1 << 63), (1 << 63) - 1, -(1 << 63) + 1, 1, -1, 0, (1 << 62) + (1 << 38)]
    acc, xo = (np.array(v, dtype=np.int64).reshape(-1) for v in np.meshgrid(
        acc_values, [-128, -90, 0, 100, 127], indexing="ij"))
    received = simulate(ToFloat(**params), [{"acc": int(a), "exp_offset": int(x)}
                                            for a, x in zip(acc, xo, strict=True)], seed=5)
    rtl = np.array([r.code for r in received])
    assert (rtl == to_float_code(acc, xo, params["in_frac"], "fp32")).all()
    print(f"checked {acc.size} cases")


def test_tiny_converter_exhaustive_in_simulation():
    params = TINY[0]
    acc, xo = (np.array(v).reshape(-1) for v in np.meshgrid(
        np.arange(-8, 8), np.arange(-4, 4), indexing="ij"))
    received = simulate(ToFloat(**params), [{"acc": int(a), "exp_offset": int(x)}
                                            for a, x in zip(acc, xo, strict=True)])
    rtl = np.array([r.code for r in received])
    assert (rtl == to_float_code(acc, xo, params["in_frac"], params["out_format"])).all()
    print(f"checked {acc.size} cases")


def unit_inputs():
    """Per unit (acc, exp_offset) arrays for the Verilator bank, in UNITS order."""
    inputs = []
    acc16 = np.arange(-(1 << 15), 1 << 15, dtype=np.int64)
    for _, offsets in SWEEPS.values():
        inputs.append((np.tile(acc16, len(offsets)),
                       np.repeat(np.array(offsets, dtype=np.int64), acc16.size)))
    for params in TINY:
        w, e = params["in_width"], params["exp_width"]
        acc, xo = np.meshgrid(np.arange(-(1 << (w - 1)), 1 << (w - 1)),
                              np.arange(-(1 << (e - 1)), 1 << (e - 1)), indexing="ij")
        inputs.append((acc.reshape(-1), xo.reshape(-1)))
    rng = np.random.default_rng(20240601)
    n = 200_000
    acc = rng.integers(-(1 << 47), 1 << 47, n)
    acc >>= rng.integers(0, 47, n)  # spread the magnitudes over every binade
    xo = rng.integers(-128, 128, n)
    corner_acc, corner_xo = fp32_corner_cases()
    inputs.append((np.concatenate([corner_acc, acc]), np.concatenate([corner_xo, xo])))
    return inputs + inputs  # UNITS: each form of each converter


def test_verilator_sweeps_and_random_fp32():
    bank = ConverterBank(UNITS)
    inputs = unit_inputs()
    cycles = max(acc.size for acc, _ in inputs)
    fields = {}
    for unit, name, (acc, xo) in zip(bank.units, bank.names, inputs, strict=True):
        # Shorter lists repeat their first case to fill the cycles; only their own are checked.
        pad = cycles - acc.size
        fields[name] = pack_fields(unit.in_layout, acc=np.concatenate([acc, np.full(pad, acc[0])]),
                                   exp_offset=np.concatenate([xo, np.full(pad, xo[0])]))
    out = unpack_fields(bank.out_layout, run_vectors(ConverterBank, {"units": UNITS},
                                                     pack_fields(bank.in_layout, **fields)))
    total = 0
    for unit, name, params, (acc, xo) in zip(bank.units, bank.names, UNITS, inputs,
                                             strict=True):
        rtl = unpack_fields(unit.out_layout, out[name][:acc.size])["code"]
        ref = to_float_code(acc, xo, params["in_frac"], params["out_format"])
        assert (rtl == ref).all(), params
        print(f"{params}: checked {acc.size} cases")
        total += acc.size
    print(f"checked {total} cases")

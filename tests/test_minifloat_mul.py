"""hdl.arith.minifloat_mul.MinifloatMultiplier == golden.minifloat_arith.exact_product.

Amaranth-simulator tests cover latency, backpressure and named corner codes; the Verilator
suite runs every code pair of every listed format pair. Verilator builds dominate the runtime,
so all format pairs sit side by side in one test-only bank component: one model, one run.
"""


import numpy as np
import pytest

from bitmod.golden import formats
from bitmod.golden.minifloat_arith import (
    FLAG_INF,
    FLAG_NAN,
    FLAG_NEG,
    exact_product,
    product_frac_bits,
    product_width,
)
from bitmod.hdl.arith.minifloat_mul import MinifloatMultiplier
from bitmod.sim.amaranth_sim import measure_latency, stream_through
from bitmod.sim.bank import LockstepBank
from bitmod.sim.vectors import pack_fields, run_vectors, unpack_fields

# The five pairs of the brief, then integer, M = 0, E = 1 and flushed-subnormal operands.
PAIRS = [
    ["fp8_e4m3", "fp8_e4m3"], ["fp8_e5m2", "fp8_e5m2"], ["fp8_e4m3", "fp8_e5m2"],
    ["fp4_e2m1", "fp4_e2m1"], ["fp6_e3m2", "fp6_e2m3"], ["int8", "fp8_e4m3"],
    ["fp_e3m0_fn", "fp_e1m2"], ["fp_e3m2_nosub", "fp3"],
]


class MultiplierBank(LockstepBank):
    """Test harness: one MinifloatMultiplier per pair, all fed in lockstep (field ``u<i>``)."""

    def __init__(self, pairs):
        super().__init__([MinifloatMultiplier(a, b) for a, b in pairs])


def flags_of(fields):
    return fields["nan"] * FLAG_NAN + fields["inf"] * FLAG_INF + fields["neg"] * FLAG_NEG


def simulate(dut, payloads, seed=None):
    """Amaranth-simulate ``payloads`` through ``dut``; random idles and stalls when seeded."""
    noisy = seed is not None
    return stream_through(dut, payloads, idle=0.3 if noisy else 0.0,
                          backpressure=0.4 if noisy else 0.0, seed=seed or 0, deadline=1e-3)


def corner_codes(name):
    """Codes of zero, the smallest and largest magnitudes, +-1 and every special."""
    f = formats.get(name)
    codes = np.arange(1 << f.bits)
    mag = np.abs(f.decode(codes))
    nonzero = mag[np.isfinite(mag) & (mag > 0)]
    keep = ((mag == 0) | (mag == nonzero.min()) | (mag == nonzero.max()) | (mag == 1)
            | ~np.isfinite(mag))
    return codes[keep]


@pytest.mark.parametrize("kwargs,error,match", [
    ({"a_format": "fp16"}, ValueError, "a_format='fp16' has 16 bits"),
    ({"b_format": "bf16"}, ValueError, "b_format='bf16' has 16 bits"),
    ({"a_format": "flint4"}, ValueError, "a_format='flint4' is a TableFormat"),
    ({"b_format": "fp4_er_pos"}, ValueError, "b_format='fp4_er_pos' is a ExtendedFormat"),
    ({"a_format": "fp9_e9"}, ValueError, "a_format='fp9_e9'"),
    ({"b_format": "q8_4"}, ValueError, "b_format='q8_4' is a FixedPoint"),
    ({"a_format": 8}, TypeError, "a_format must be a format name"),
])
def test_rejects_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        MinifloatMultiplier(**kwargs)


@pytest.mark.parametrize("pair", PAIRS)
def test_widths_and_properties(pair):
    dut = MinifloatMultiplier(*pair)
    assert (dut.a_format, dut.b_format) == tuple(pair)
    assert dut.latency == 3
    assert dut.p_width == product_width(*pair)
    assert dut.frac_bits == product_frac_bits(*pair)
    assert dut.out_layout["p"].width == dut.p_width
    assert dut.in_layout.size == sum(formats.get(n).bits for n in pair)


def test_worst_case_widths():
    # max x max: E5M2 (7 << 29)**2 needs 64 magnitude bits + sign; E4M3 (14 << 14)**2 36 + 1.
    assert MinifloatMultiplier("fp8_e5m2", "fp8_e5m2").p_width == 65
    assert MinifloatMultiplier("fp8_e4m3", "fp8_e4m3").p_width == 37
    assert MinifloatMultiplier("int8", "int8").p_width == 16  # (-128) * (-128) = 2**14


def test_latency_in_simulation():
    dut = MinifloatMultiplier("fp8_e4m3", "fp8_e5m2")
    cycles, payload = measure_latency(dut, {"a": 0x38, "b": 0x3C}, deadline=1e-5)
    assert cycles == dut.latency
    assert payload.p == 1 << 25  # 1.0 x 1.0 in units of 2**-(9 + 16)


@pytest.mark.parametrize("pair,seed", [(["fp8_e5m2", "fp8_e4m3"], 3), (["int8", "fp6_e3m2"], 4)])
def test_corner_cases_with_backpressure(pair, seed):
    a_name, b_name = pair
    a, b = (np.array(x).reshape(-1) for x in np.meshgrid(
        corner_codes(a_name), corner_codes(b_name), indexing="ij"))
    dut = MinifloatMultiplier(a_name, b_name)
    received = simulate(dut, [{"a": int(x), "b": int(y)} for x, y in zip(a, b, strict=True)],
                        seed=seed)
    p, flags = exact_product(a, b, a_name, b_name)
    rtl_p = np.array([r.p for r in received], dtype=object)
    rtl_flags = np.array([r.nan * FLAG_NAN + r.inf * FLAG_INF + r.neg * FLAG_NEG
                          for r in received])
    assert (rtl_p == p).all()
    assert (rtl_flags == flags).all()
    print(f"checked {a.size} cases")


def test_verilator_every_code_pair():
    bank = MultiplierBank(PAIRS)
    sweep = np.arange(1 << 16)
    hi, lo = sweep >> 8, sweep & 0xFF
    operands, fields = [], {}
    for unit, name, (a_name, b_name) in zip(bank.units, bank.names, PAIRS, strict=True):
        a = hi & ((1 << formats.get(a_name).bits) - 1)
        b = lo & ((1 << formats.get(b_name).bits) - 1)
        operands.append((a, b))
        fields[name] = pack_fields(unit.in_layout, a=a, b=b)
    out = unpack_fields(bank.out_layout, run_vectors(MultiplierBank, {"pairs": PAIRS},
                                                     pack_fields(bank.in_layout, **fields)))
    total = 0
    for unit, name, (a_name, b_name), (a, b) in zip(bank.units, bank.names, PAIRS, operands,
                                                     strict=True):
        rtl = unpack_fields(unit.out_layout, out[name])
        p, flags = exact_product(a, b, a_name, b_name)
        assert (rtl["p"] == p).all(), (a_name, b_name)
        assert (flags_of(rtl) == flags).all(), (a_name, b_name)
        distinct = len(set(zip(a.tolist(), b.tolist(), strict=True)))
        assert distinct == 1 << (formats.get(a_name).bits + formats.get(b_name).bits)
        print(f"{a_name} x {b_name}: checked {sweep.size} cases ({distinct} distinct pairs, all)")
        total += sweep.size
    print(f"checked {total} cases")

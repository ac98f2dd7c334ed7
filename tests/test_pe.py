"""golden.pe: the cycle-level PE model against the term-free reference, payloads, widths."""

import numpy as np
import pytest

from bitmod.golden import formats as fmts
from bitmod.golden import terms as gterms
from bitmod.golden.pe import (
    BitSerialPEModel,
    PEConfig,
    max_term_sum,
    pack_pe_payload,
    payload_fields,
    payload_offsets,
    pe_cycles,
    pe_reference,
)

MIX4 = ["fp4_er_pos", "fp4_er_neg", "fp4_ea_pos", "fp4_ea_neg"]
MIX3 = ["fp3_er_pos", "fp3_er_neg", "fp3_ea_pos", "fp3_ea_neg"]
# formats -> cycles per weight-step (terms per weight), docs/papers.md, Bit-serial terms.
FAMILIES = [(MIX4, 2), (MIX3, 2), ("fp4", 2), ("int8", 4), ("int6", 3), ("int4", 2),
            ("int2", 1), ("fp4_e2m1", 2), ("fp8_e4m3", 4), ("flint4", 2)]


def finite_codes(formats):
    name = formats if isinstance(formats, str) else formats[0]
    fmt = fmts.get(name)
    codes = fmt.codes()
    return codes[np.isfinite(fmt.decode(codes))]


def random_case(params, rng, n_out, groups):
    cfg = PEConfig(**params)
    g, a = cfg.group_size, cfg.act_width
    k = groups * g
    codes = rng.choice(finite_codes(cfg.formats), (n_out, k))
    sel = rng.integers(0, 4, (n_out, groups)) if cfg.geometry.has_register else None
    acts = rng.integers(-(1 << (a - 1)), 1 << (a - 1), (n_out, k))
    scales = rng.integers(0, 1 << cfg.scale_bits, (n_out, groups)) if cfg.scale_bits else None
    exps = rng.integers(0, 1 << cfg.exp_bits, (n_out, groups))
    return codes, sel, acts, scales, exps


def check_model(params, cases, special_values=None):
    """Run the cycle model on concatenated cases; compare with pe_reference. Returns model."""
    cfg = PEConfig(**params)
    cycles, ref = [], []
    for codes, sel, acts, scales, exps in cases:
        cycles += pe_cycles(codes, sel, acts, scales, exps, cfg.formats, cfg.lanes,
                            cfg.group_size, special_values)
        ref += list(pe_reference(codes, sel, acts, scales, exps, cfg.formats, cfg.group_size,
                                 special_values))
    model = BitSerialPEModel(PEConfig(**params))
    out = model.run(cycles)
    assert [v for _, v in out] == ref
    return model, cycles, out


@pytest.mark.parametrize("formats,terms", FAMILIES, ids=lambda v: str(v))
def test_cycle_model_equals_reference(formats, terms):
    rng = np.random.default_rng(11)
    params = {"lanes": 4, "group_size": 64, "formats": formats, "exp_bits": 2}
    cases = [random_case(params, rng, 3, groups) for groups in (1, 2, 4)]
    model, cycles, out = check_model(params, cases)
    cfg = model.config
    assert cfg.terms_per_weight == terms
    # T cycles per L weights, and no stall: groups (32 T cycles) outlast the dequantizer.
    assert len(cycles) == 3 * 7 * 64 // 4 * terms
    assert model.accept_cycles == list(range(len(cycles)))
    last_inputs = [i for i, c in enumerate(cycles) if c["out_last"]]
    assert [c for c, _ in out] == [i + cfg.latency for i in last_inputs]
    print(f"{formats}: checked {len(out)} outputs, {len(cycles)} cycles")


@pytest.mark.parametrize("lanes", [1, 2, 3, 8, 16])
def test_lane_counts_and_pipeline_depth(lanes):
    rng = np.random.default_rng(lanes)
    params = {"lanes": lanes, "group_size": 48 if lanes == 3 else 16 * lanes, "formats": MIX4}
    model, _, _ = check_model(params, [random_case(params, rng, 4, 2)])
    levels = int(np.ceil(np.log2(lanes))) if lanes > 1 else 0
    assert model.config.stages == 1 + max(1, levels)
    assert model.latency == model.config.stages + 8 + 2


def test_group_sums_at_boundaries():
    rng = np.random.default_rng(3)
    params = {"lanes": 4, "group_size": 32, "formats": "int8"}
    codes, sel, acts, scales, exps = random_case(params, rng, 2, 3)
    model, cycles, _ = check_model(params, [(codes, sel, acts, scales, exps)])
    levels = fmts.get("int8").decode(codes).astype(np.int64)
    expected = (levels * acts).reshape(2, 3, 32).sum(-1).reshape(-1)
    assert [g for _, g in model.group_sums] == list(expected)
    # Handed over in the cycle the group's last payload reaches the accumulator.
    ends = [i for i, c in enumerate(cycles) if c["group_last"]]
    assert [c for c, _ in model.group_sums] == [i + model.config.stages for i in ends]


def test_terms_in_the_cycles_sum_to_the_levels():
    rng = np.random.default_rng(5)
    for formats, _ in FAMILIES:
        params = {"lanes": 4, "group_size": 16, "formats": formats}
        cfg = PEConfig(**params)
        codes, sel, acts, scales, exps = random_case(params, rng, 1, 2)
        cycles = pe_cycles(codes, sel, acts, scales, exps, cfg.formats, 4, 16)
        t_count = cfg.terms_per_weight
        total = np.zeros(codes.shape[1], dtype=np.int64)
        for i, c in enumerate(cycles):
            step = i // t_count
            tt = c["terms"]
            mag = tt["nonzero"] << (tt["exp"] + cfg.geometry.bsig[c["t"]])
            total[step * 4:step * 4 + 4] += np.where(tt["sign"] == 1, -mag, mag)
        unit = cfg.geometry.unit
        names = cfg.formats
        want = np.array([fmts.get(names[s % len(names)]).decode(c) / unit
                         for c, s in zip(codes[0], np.repeat(sel[0] if sel is not None
                                                              else [0, 0], 16), strict=True)])
        assert (total == want).all(), formats


def test_stalls_for_tiny_groups():
    rng = np.random.default_rng(7)
    params = {"lanes": 8, "group_size": 8, "formats": "int2"}
    model, cycles, out = check_model(params, [random_case(params, rng, 3, 5)])
    # One cycle per group; the dequantizer needs 8 (10 after out_last): the PE must stall.
    assert model.accept_cycles[-1] > len(cycles) - 1
    gaps = np.diff(model.accept_cycles).tolist()
    # The pipeline fills at full rate, then each group waits for the previous dequantization.
    stages = model.config.stages
    assert gaps[:stages] == [1] * stages and set(gaps[stages:]) == {8, 10}
    print(f"tiny groups: {len(out)} outputs over {model.accept_cycles[-1] + 1} input cycles")


def test_expressible_special_values():
    values = sorted({a + b for a, b in gterms._window_pairs()})
    rng = np.random.default_rng(9)
    for formats in (MIX4, MIX3):
        params = {"lanes": 4, "group_size": 16, "formats": formats}
        geo = gterms.geometry(formats)
        checked = 0
        for start in range(0, len(values), 4):
            chunk = values[start:start + 4]
            sv = [*chunk, 0, 0, 0][:4]
            codes, sel, acts, scales, exps = random_case(params, rng, 2, 2)
            codes[:, ::2] = geo.special_code  # every other weight reads the register
            check_model(params, [(codes, sel, acts, scales, exps)], special_values=sv)
            checked += len(chunk)
        assert checked == len(values)
    print(f"checked {len(values)} special values")


def test_worst_case_widths_are_tight():
    for formats, level in ((MIX4, 24), ("fp4", 12), ("fp8_e4m3", 229376)):
        params = {"lanes": 4, "group_size": 32, "formats": formats, "exp_bits": 2,
                  "max_groups": 4}
        cfg = PEConfig(**params)
        assert cfg.s_max == level
        g, groups = 32, 4
        sv = [level, -level, 0, 0] if cfg.geometry.has_register else None
        if sv:
            code, sel = cfg.geometry.special_code, np.array([[0] * groups, [1] * groups])
            codes = np.full((2, g * groups), code)
        else:
            fmt = fmts.get(formats)
            codes_all = fmt.codes()
            vals = fmt.decode(codes_all) / cfg.geometry.unit
            pos, neg = codes_all[vals == level][0], codes_all[vals == -level][0]
            codes, sel = np.array([[pos] * g * groups, [neg] * g * groups]), None
        acts = np.full(codes.shape, -128)
        scales = np.full((2, groups), 255)
        exps = np.full((2, groups), 3)
        model, _, out = check_model(params, [(codes, sel, acts, scales, exps)], sv)
        bound = groups * g * level * 128 * 255 * 8
        assert [v for _, v in out] == [-bound, bound]
        # The required width is exactly what the extreme needs (tight, no spare bit).
        assert bound.bit_length() + 1 == cfg.acc_width
        assert (g * level * 128).bit_length() + 1 == cfg.gacc_width
        assert max(abs(s) for _, s in model.group_sums) == g * level * 128


def test_widths_never_exceed_the_spec_formula():
    for formats, _ in FAMILIES:
        for g, a, sb, eb, mg in ((128, 8, 8, 0, 256), (32, 12, 0, 3, 7), (8, 4, 4, 1, 1)):
            cfg = PEConfig(lanes=4 if g % 4 == 0 else 1, act_width=a, group_size=g,
                            formats=formats, scale_bits=sb, exp_bits=eb, max_groups=mg)
            s = max_term_sum(formats)
            spec_gacc = a + int(np.ceil(np.log2(g * s))) + 1
            assert cfg.gacc_width <= spec_gacc
            assert cfg.product_width <= cfg.gacc_width + sb
            assert cfg.acc_width <= (cfg.product_width + (1 << eb) - 1
                                     + int(np.ceil(np.log2(mg))))


def test_max_term_sum_from_the_definitions():
    assert max_term_sum(MIX4) == 24 and max_term_sum(MIX3) == 24  # register entry 16 + 8
    assert max_term_sum("fp4") == 12 and max_term_sum("fp4_e2m1") == 12
    # Booth digits of INT8: 0b10101010 = -2 -2*4 ... has terms of both signs
    codes = np.arange(256)
    tr = gterms.decompose(codes, "int8")
    assert max_term_sum("int8") == int((tr.nonzero << (tr.exp + tr.bsig)).sum(-1).max())
    assert max_term_sum("int8") >= 128


def test_payload_packing_offsets():
    params = {"lanes": 4, "group_size": 8, "formats": MIX4, "exp_bits": 2}
    cfg = PEConfig(**params)
    rng = np.random.default_rng(2)
    codes, sel, acts, scales, exps = random_case(params, rng, 1, 2)
    cycles = pe_cycles(codes, sel, acts, scales, exps, cfg.formats, 4, 8)
    flat = pack_pe_payload(cycles, cfg)
    fields = payload_fields(cycles, cfg)
    offsets = payload_offsets(cfg)
    assert offsets["terms"] == (0, 16) and offsets["t"] == (16, 1)
    assert offsets["acts"] == (17, 32) and offsets["exp"] == (59, 2)
    for name, (off, width) in offsets.items():
        got = [(int(v) >> off) & ((1 << width) - 1) for v in flat]
        assert got == [int(v) for v in fields[name]], name
    # Lane 2's activation of cycle 0 sits at bits 17 + 16 .. 17 + 24.
    assert ((int(flat[0]) >> 33) & 255) == (int(acts[0, 2]) & 255)


def test_parameter_errors():
    with pytest.raises(ValueError, match="group_size"):
        PEConfig(lanes=8, group_size=12)
    with pytest.raises(ValueError, match="formats"):
        PEConfig(formats="fp5_nonsense")
    with pytest.raises(ValueError, match="formats"):
        PEConfig(formats=["int4", "fp4"])
    with pytest.raises(ValueError, match=r"acc_width 30 .* need 35"):
        PEConfig(formats="fp4", acc_width=30)
    with pytest.raises(TypeError, match="lanes"):
        PEConfig(lanes=4.0)
    with pytest.raises(ValueError, match="scale_bits"):
        PEConfig(scale_bits=-1)
    assert PEConfig(formats="fp4", acc_width=40).acc_width == 40

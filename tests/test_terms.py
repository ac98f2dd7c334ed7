"""golden.terms: every code of every supported format decomposes into terms summing to its level."""

import itertools
from fractions import Fraction

import numpy as np
import pytest

from bitmod.golden import formats
from bitmod.golden import terms as gt

# Every registered name the encoder takes, plus parametrised ones that reach other corners:
# fixed point, flushed subnormals, a negative bias, fn/ieee specials with M = 0, odd specials.
SINGLE_FORMATS = [n for n in formats.names() if n not in
                  ("binary", "ternary", "e8m0", "fp16", "bf16", "fp32")] + [
    "q6_2", "uq5_1", "fp_e3m2_nosub", "fp_e2m2_b-1_finite", "fp_e4m0_fn", "fp_e3m0",
    "fp_e1m2", "fp3_sv7", "fp4_sv-7", "fp4_sv15", "fp4_sv-14", "fp4_sv24", "flint4_sv10",
    "flint4_sv-12", "fp3_sv5",
]
MIXTURES = [formats.bitmod_candidates(b, k) for b in (3, 4) for k in ("mixture", "er", "ea")]
# Register contents: the BitMoD defaults and programmable ones (docs/papers.md examples).
REGISTER_SETTINGS = [[3, -3, 6, -6], [10, -10, 16, -16], [7, 5, -12, 16], [-7, 14, -15, 1],
                     [0, 2, -24, 9]]


def exact_level(fmt_name, code):
    """decode(code) / unit as a Fraction (an independent reference for the code-unit level)."""
    fmt = formats.get(fmt_name)
    value = Fraction(float(fmt.decode(code)))
    if isinstance(fmt, formats.MiniFloat):
        unit = Fraction(2) ** (1 - fmt.bias - fmt.man_bits)
    elif isinstance(fmt, formats.FixedPoint):
        unit = Fraction(2) ** -fmt.frac
    else:
        unit = Fraction(1)
    return value / unit


def window_values():
    """Every value of two window terms, by brute force over the definition."""
    t1 = [0] + [s * 2 ** e for e in (1, 2, 3, 4) for s in (1, -1)]
    t2 = [0] + [s * 2 ** e for e in (0, 1, 2, 3) for s in (1, -1)]
    return {a + b for a, b in itertools.product(t1, t2)}


@pytest.mark.parametrize("name", SINGLE_FORMATS)
def test_terms_sum_to_level_for_every_code(name):
    fmt = formats.get(name)
    codes = fmt.codes()
    values = fmt.decode(codes)
    finite = np.isfinite(values)
    n = 0
    for sel in range(4):
        terms = gt.decompose(codes, name, np.full(codes.shape, sel))
        got = gt.terms_value(terms)
        ref = [exact_level(name, int(c)) if ok else 0
               for c, ok in zip(codes, finite, strict=True)]
        assert all(Fraction(int(g)) == r for g, r in zip(got, ref, strict=True))
        assert (terms.nonfinite == ~finite).all()
        n += codes.size
    print(f"{name}: checked {n} cases")


@pytest.mark.parametrize("names", MIXTURES, ids=lambda n: "+".join(n))
def test_mixture_terms_for_every_code_selector_and_register(names):
    base = formats.get(names[0])
    codes = base.codes()
    special_code = 1 << (base.bits - 1)
    n = 0
    settings = [None, *REGISTER_SETTINGS]
    for setting, sel in itertools.product(settings, range(4)):
        terms = gt.decompose(codes, names, sel, setting)
        got = gt.terms_value(terms)
        if setting is None:
            # The default register makes selector i decode as names[i % len(names)].
            member = names[sel % len(names)]
            ref = [exact_level(member, int(c)) for c in codes]
        else:
            ref = [Fraction(setting[sel]) if c == special_code else exact_level(names[0], int(c))
                   for c in codes]
        assert [Fraction(int(g)) for g in got] == ref
        n += codes.size
    print(f"{'+'.join(names)}: checked {n} cases")


@pytest.mark.parametrize("name", ["int2", "int3", "int4", "int5", "int6", "int7", "int8",
                                  "uint3", "uint8", "q6_2"])
def test_booth_digits_follow_the_recoding_identity(name):
    # Radix-4 Booth: digit i = -2 b[2i+1] + b[2i] + b[2i-1] of the (sign- or zero-) extended
    # two's-complement word.
    fmt = formats.get(name)
    geo = gt.geometry(name)
    codes = fmt.codes()
    terms = gt.decompose(codes, name)
    width = 2 * geo.terms
    for k, c in enumerate(codes):
        v = int(c) - (1 << fmt.bits) if fmt.signed and c >> (fmt.bits - 1) else int(c)
        word = v & ((1 << width) - 1)
        bit = [(word >> j) & 1 for j in range(width)]
        for i in range(geo.terms):
            digit = -2 * bit[2 * i + 1] + bit[2 * i] + (bit[2 * i - 1] if i else 0)
            got = (-1) ** terms.sign[k, i] * terms.nonzero[k, i] * 2 ** terms.exp[k, i]
            assert got == digit, (name, int(c), i)
    assert geo.bsig == tuple(range(0, 2 * geo.terms, 2))


@pytest.mark.parametrize(("name", "count"), [("int2", 1), ("int3", 2), ("int4", 2),
                                             ("int5", 3), ("int6", 3), ("int7", 4),
                                             ("int8", 4), ("uint4", 3), ("fp3", 2), ("fp4", 2),
                                             ("flint4", 2), ("fp4_e2m1", 2), ("fp6_e3m2", 3),
                                             ("fp8_e4m3", 4), ("fp8_e5m2", 3), ("khot1", 1),
                                             ("khot2", 2), ("khot3", 3)])
def test_terms_per_weight(name, count):
    # docs/papers.md, Bit-serial terms: INT8 4, INT6 3, INT4 2, INT2 1, FP3/FP4 2; minifloats M + 1.
    assert gt.terms_per_weight(name) == count
    assert gt.decompose(formats.get(name).codes(), name).sign.shape[-1] == count


def test_mixture_geometry():
    for bits in (3, 4):
        geo = gt.geometry(formats.bitmod_candidates(bits))
        assert (geo.path, geo.terms, geo.exp_bits, geo.bsig) == ("two_term", 2, 2, (1, 0))
        assert geo.has_register and geo.special_code == 1 << (bits - 1)
    assert gt.terms_per_weight(formats.bitmod_candidates(4)) == 2


@pytest.mark.parametrize("name", ["fp3", "fp4", "flint4", "fp4_ea_pos", "fp3_er_neg"])
def test_two_term_split_is_leading_one_then_rest(name):
    fmt = formats.get(name)
    codes = fmt.codes()
    geo = gt.geometry(name)
    terms = gt.decompose(codes, name)
    for k, c in enumerate(codes):
        if geo.has_register and c == geo.special_code:
            continue
        mag = abs(int(exact_level(name, int(c))))
        t1 = terms.nonzero[k, 0] << (terms.exp[k, 0] + 1)
        t2 = terms.nonzero[k, 1] << terms.exp[k, 1]
        if mag >= 2:
            assert t1 == 1 << (mag.bit_length() - 1)  # leading one of the upper window
        else:
            assert t1 == 0
        assert t2 == mag - t1
        neg = fmt.decode(c) < 0
        assert list(terms.sign[k]) == [int(neg and t1 > 0), int(neg and t2 > 0)]


@pytest.mark.parametrize("name", ["fp4_e2m1", "fp6_e3m2", "fp6_e2m3", "fp8_e4m3", "fp8_e5m2",
                                  "fp_e3m2_nosub"])
def test_significand_terms_are_the_significand_bits(name):
    fmt = formats.get(name)
    M, E = fmt.man_bits, fmt.exp_bits
    codes = fmt.codes()
    terms = gt.decompose(codes, name)
    values = fmt.decode(codes)
    for k, c in enumerate(codes):
        if not np.isfinite(values[k]) or values[k] == 0:
            assert not terms.nonzero[k].any() and not terms.sign[k].any()
            continue
        e, m = (int(c) >> M) & ((1 << E) - 1), int(c) & ((1 << M) - 1)
        sig = m | ((e != 0) << M)
        assert list(terms.nonzero[k]) == [(sig >> j) & 1 for j in range(M + 1)]
        assert set(terms.exp[k][terms.nonzero[k] == 1]) == {max(e, 1) - 1}


def test_zero_terms_are_canonical():
    for name in SINGLE_FORMATS:
        terms = gt.decompose(formats.get(name).codes(), name)
        zero = terms.nonzero == 0
        assert (terms.sign[zero] == 0).all() and (terms.exp[zero] == 0).all(), name


def test_nonfinite_codes_give_zero_terms_and_the_flag():
    fmt = formats.get("fp8_e4m3")
    terms = gt.decompose([0x7F, 0xFF, 0x7E], "fp8_e4m3")
    assert list(terms.nonfinite) == [True, True, False]
    assert gt.terms_value(terms)[:2].tolist() == [0, 0]
    assert gt.terms_value(terms)[2] == exact_level("fp8_e4m3", 0x7E)
    assert np.isinf(formats.get("fp8_e5m2").decode(0x7C))
    assert gt.decompose(0x7C, "fp8_e5m2").nonfinite
    assert fmt.nan_code == 0x7F


def test_special_register_entry_covers_exactly_the_window():
    reachable = window_values()
    n = 0
    for v in range(-40, 41):
        if v in reachable:
            entry = gt.special_register_entry(v)
            assert gt.entry_value(entry) == v
            assert 0 <= entry < 1 << gt.ENTRY_BITS
            # Canonical zero terms.
            for slot in range(2):
                field = (entry >> (4 * slot)) & 15
                assert field >> 3 or field == 0
        else:
            with pytest.raises(ValueError, match=str(v)):
                gt.special_register_entry(v)
        n += 1
    print(f"checked {n} special values")
    with pytest.raises(ValueError, match="integer"):
        gt.special_register_entry(2.5)


@pytest.mark.parametrize(("value", "pair"), [(3, (2, 1)), (-3, (-2, -1)), (6, (4, 2)),
                                             (10, (8, 2)), (16, (16, 0)), (7, (8, -1)),
                                             (5, (4, 1)), (-12, (-8, -4)), (1, (0, 1)),
                                             (-14, (-16, 2))])
def test_special_register_entry_terms(value, pair):
    # docs/papers.md's examples: binary magnitudes split like the base levels, 7 = 8 - 1.
    entry = gt.special_register_entry(value)
    terms = []
    for slot, bsig in enumerate((1, 0)):
        field = (entry >> (4 * slot)) & 15
        terms.append((-1) ** (field & 1) * (field >> 3) * 2 ** (((field >> 1) & 3) + bsig))
    assert tuple(terms) == pair


def test_entry_value_reads_any_bit_pattern():
    for bits in range(256):
        fields = [(bits >> (4 * s)) & 15 for s in (0, 1)]
        ref = sum((-1) ** (f & 1) * (f >> 3) * 2 ** (((f >> 1) & 3) + b)
                  for f, b in zip(fields, (1, 0), strict=True))
        assert gt.entry_value(bits) == ref
    with pytest.raises(ValueError, match="256"):
        gt.entry_value(256)


def test_raw_register_matches_values_and_canonicalises():
    names = formats.bitmod_candidates(4)
    codes = np.arange(16)
    for setting in REGISTER_SETTINGS:
        raw = gt.pack_special_register(setting)
        for sel in range(4):
            a = gt.pack_terms(gt.decompose(codes, names, sel, setting))
            b = gt.pack_terms(gt.decompose(codes, names, sel, special_register=raw))
            assert (a == b).all()
    # Entry 0 holds "-0 + -0" with junk exponents: the special code gives canonical zero terms.
    junk = 0b0011_0111
    terms = gt.decompose(8, names, 0, special_register=junk)
    assert terms.nonzero.tolist() == [0, 0] and terms.sign.tolist() == [0, 0]
    assert terms.exp.tolist() == [0, 0]


def test_pack_special_register_layout():
    reg = gt.pack_special_register([3, -3, 6, -6])
    for i, v in enumerate([3, -3, 6, -6]):
        assert (reg >> (8 * i)) & 0xFF == gt.special_register_entry(v)
    with pytest.raises(ValueError, match="4 entries"):
        gt.pack_special_register([3, 3])


def test_pack_terms_layout():
    # INT8 -128: digits (0, 0, 0, -2) -> only term 3 nonzero, sign 1, exp 1.
    terms = gt.decompose(0x80, "int8")
    width = gt.geometry("int8").term_bits
    assert width == 3
    assert int(gt.pack_terms(terms)) == (1 | (1 << 1) | (1 << 2)) << (3 * width)
    nan = gt.decompose(0x7F, "fp8_e4m3")
    geo = gt.geometry("fp8_e4m3")
    assert int(gt.pack_terms(nan)) == 1 << (geo.terms * geo.term_bits)
    assert geo.payload_bits == geo.terms * (geo.exp_bits + 2) + 1


def test_default_special_values():
    assert gt.default_special_values(formats.bitmod_candidates(4)) == [10, -10, 16, -16]
    assert gt.default_special_values(formats.bitmod_candidates(3, "ea")) == [6, -6, 6, -6]
    assert gt.default_special_values("fp3_er_pos") == [3, 3, 3, 3]
    assert gt.default_special_values(["fp4", "fp4_sv7"]) == [0, 7, 0, 7]


def test_plain_base_ignores_register_and_reads_zero():
    assert gt.terms_value(gt.decompose(8, "fp4")) == 0
    assert gt.terms_value(gt.decompose(8, ["fp4", "fp4_er_pos"], 0)) == 0
    assert gt.terms_value(gt.decompose(8, ["fp4", "fp4_er_pos"], 1)) == 10


@pytest.mark.parametrize(("bad", "match"), [
    ("nope", "nope"),
    (["fp4_er_pos", "fp3_er_pos"], "same width"),
    (["fp4_er_pos"] * 5, "at most 4"),
    (["int4", "fp4"], "int4"),
    (["fp4_er_pos", "flint4"], "flint4"),
    (["khot3", "int8"], "khot3"),
    (["khot2", "khot3"], "same width"),
    ("fp4_sv11", "fp4_sv11"),
    ("ternary", "ternary"),
    ("fp16", "fp16"),
    ("fp4_e2m1_sv5", "fp4_e2m1_sv5"),
])
def test_unsupported_formats_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        gt.geometry(bad)


def test_decompose_argument_errors():
    names = formats.bitmod_candidates(4)
    with pytest.raises(ValueError, match="selectors"):
        gt.decompose([0], names, [4])
    with pytest.raises(ValueError, match="4 entries"):
        gt.decompose([0], names, 0, [3, 3])
    with pytest.raises(ValueError, match="no special-value register"):
        gt.decompose([0], "int4", 0, [3, -3, 6, -6])
    with pytest.raises(ValueError, match="not both"):
        gt.decompose([0], names, 0, [3, -3, 6, -6], special_register=0)
    with pytest.raises(ValueError, match="out of range"):
        gt.decompose([16], names)
    with pytest.raises(TypeError):
        gt.decompose([0], 4)


def fewest_terms_by_search(limit=128, max_exp=9):
    """``{v: fewest signed powers of two summing to v}`` for ``|v| <= limit`` (breadth-first
    search over ``+-2**e``, ``e <= max_exp``): the reference for a K-hot term count."""
    powers = [s * 2**e for e in range(max_exp + 1) for s in (1, -1)]
    fewest, frontier = {0: 0}, {0}
    for n in range(1, 5):
        frontier = {v + p for v in frontier for p in powers if abs(v + p) <= 2 ** (max_exp + 1)}
        frontier -= fewest.keys()
        fewest.update(dict.fromkeys(frontier, n))
    return {v: n for v, n in fewest.items() if abs(v) <= limit}


@pytest.mark.parametrize("k", [1, 2, 3])
def test_khot_terms_are_the_fewest_non_adjacent_powers(k):
    # Every code, every selector: K terms, bsig 0, the nonzero ones first with strictly falling
    # exponents two or more apart (non-adjacent), as few as the brute-force search needs, the
    # leading one carrying the code's sign bit; zero terms last.
    name = f"khot{k}"
    fmt = formats.get(name)
    geo = gt.geometry(name)
    assert (geo.path, geo.terms, geo.exp_bits, geo.bsig) == ("khot", k, 3, (0,) * k)
    assert not geo.has_register and geo.payload_bits == k * (3 + 2) + 1
    fewest = fewest_terms_by_search()
    codes = fmt.codes()
    n = 0
    for sel in range(4):
        terms = gt.decompose(codes, name, sel)
        assert (terms.bsig == 0).all() and terms.sign.shape == (*codes.shape, k)
        for i, c in enumerate(codes.tolist()):
            level = exact_level(name, c)
            nz = terms.nonzero[i].tolist()
            count = sum(nz)
            assert nz == [1] * count + [0] * (k - count)
            assert count == fewest[int(level)] <= k, c
            exps = terms.exp[i, :count].tolist()
            assert all(a - b >= 2 for a, b in itertools.pairwise(exps))
            assert all(0 <= e <= 7 for e in exps)
            signs = terms.sign[i, :count].tolist()
            values = [(-1) ** sg * 2**e for sg, e in zip(signs, exps, strict=True)]
            assert sum(values) == level
            if count:
                assert terms.sign[i, 0] == c >> (fmt.bits - 1)
            n += 1
    print(f"{name}: checked {n} cases")


def test_khot_payload_layout():
    # -3 in khot2 (sign bit 6, index 3): -4 + 1, terms (s=1, e=2) and (s=0, e=0), 5 bits each.
    fmt = formats.get("khot2")
    code = (1 << 6) | fmt.magnitudes.index(3)
    assert fmt.decode(code) == -3
    fields = [1 | 2 << 1 | 1 << 4, 0 | 0 << 1 | 1 << 4]
    assert int(gt.pack_terms(gt.decompose(code, "khot2"))) == fields[0] | fields[1] << 5


def test_integer_floor_log2_matches_bit_length():
    """``terms._floor_log2`` against Python's ``int.bit_length``: every value below 2**20, every
    power of two and every all-ones value up to 2**63 - 1, and 10**5 seeded random int64s."""
    rng = np.random.default_rng(20261203)
    powers = np.int64(1) << np.arange(63, dtype=np.int64)
    values = np.concatenate([np.arange(1, 1 << 20, dtype=np.int64), powers, powers - 1 + powers,
                             rng.integers(1, 2**63 - 1, size=10**5, dtype=np.int64)])
    expect = np.array([int(v).bit_length() - 1 for v in values.tolist()])
    assert np.array_equal(gt._floor_log2(values), expect)

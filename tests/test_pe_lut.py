"""LUT-table PE (hdl.pe.lut_table) against golden.pe_lut and independent references."""

import itertools

import numpy as np
import pytest

from bitmod.golden import formats
from bitmod.golden import pe_lut as gl
from bitmod.hdl.pe.lut_table import LutTableBuilder, LutTablePE
from bitmod.sim.amaranth_sim import run_simulation, stream_get, stream_put
from bitmod.sim.vectors import pack_fields, run_stream, unpack_fields

# One Verilator build per parameter set. G = 32 at 8 lanes: 4 weight-steps of 4 planes, 16
# cycles per group, longer than the 8 dequantizer steps; shorter groups test the stall.
PE_PARAMS = {"lanes": 8, "weight_bits": 4, "act_width": 8, "table_group": 4, "group_size": 32,
             "scale_bits": 8, "exp_bits": 2, "max_groups": 6}


# --------------------------------------------------------------------------------------------
# Independent references: decoded codes, plain integer dot products
# --------------------------------------------------------------------------------------------

def weight_values(codes, weight_bits, signed_weights):
    """Decoded weights: the int<B> format's values (signed) or the codes themselves."""
    codes = np.asarray(codes, dtype=np.int64)
    if not signed_weights:
        return codes
    return formats.get(f"int{weight_bits}").decode(codes).astype(np.int64)


def plain_reference(weights, acts, scale, exp, out_last, weight_bits, scale_bits,
                    signed_weights=True):
    values = weight_values(weights, weight_bits, signed_weights)
    outputs, acc = [], 0
    for g in range(len(out_last)):
        gsum = sum(int(w) * int(a) for w, a in zip(values[g], acts[g], strict=True))
        acc += gsum * (int(scale[g]) if scale_bits else 1) * 2 ** int(exp[g])
        if out_last[g]:
            outputs.append(acc)
            acc = 0
    return outputs


def definition_table(acts):
    """T[c] straight from its definition, one Python sum per entry."""
    g = len(acts)
    return [sum((1 if (c >> i) & 1 else -1) * int(a) for i, a in enumerate(acts))
            for c in range(1 << g)]


def pe_case(rng, n, k, params, *, weights=None, acts=None):
    b, a_bits = params["weight_bits"], params["act_width"]
    return {
        "weights": rng.integers(0, 1 << b, (n, k)) if weights is None else weights,
        "acts": rng.integers(-(1 << (a_bits - 1)), 1 << (a_bits - 1), (n, k))
        if acts is None else acts,
        "scale": rng.integers(0, 1 << params["scale_bits"], n),
        "exp": rng.integers(0, 1 << params["exp_bits"], n),
        "out_last": np.r_[rng.random(n - 1) < 0.3, True],
    }


def golden_kwargs(params):
    return {"table_group": params["table_group"], "weight_bits": params["weight_bits"],
            "signed_weights": params.get("signed_weights", True)}


def pe_stream(pe, params, cases):
    """Flat payloads, golden outputs (checked against the plain reference) and fields."""
    columns, refs = [], []
    for case in cases:
        columns.append(gl.lut_pe_payloads(**case, lanes=params["lanes"],
                                          **golden_kwargs(params)))
        golden = gl.lut_pe_reference(**case, scale_bits=params["scale_bits"],
                                     **golden_kwargs(params))
        plain = plain_reference(**case, weight_bits=params["weight_bits"],
                                scale_bits=params["scale_bits"],
                                signed_weights=params.get("signed_weights", True))
        assert [int(v) for v in golden] == plain
        refs.extend(int(v) for v in golden)
    f = {name: np.concatenate([c[name] for c in columns]) for name in columns[0]}
    tables = f["tables"].reshape(len(f["plane"]), -1)
    payloads = pack_fields(pe.in_layout, plane=f["plane"],
                           tables=gl_pack(tables, pe.table_width), corr=f["corr"],
                           step_last=f["step_last"], group_last=f["group_last"],
                           out_last=f["out_last"], scale=f["scale"], exp=f["exp"])
    return payloads, refs, f


def gl_pack(values, width):
    """Pack ``values[cycles, n]`` (entry 0 at the LSB, ``width`` bits each)."""
    mask = (1 << width) - 1
    packed = []
    for row in values:
        word = 0
        for i, v in enumerate(row):
            word |= (int(v) & mask) << (i * width)
        packed.append(word)
    return np.array(packed, dtype=object)


def run_pe(params, payloads, n_out, **kwargs):
    out = run_stream(LutTablePE, params, payloads, n_outputs=n_out, **kwargs)
    return [int(v) for v in unpack_fields(LutTablePE(**params).out_layout, out)["acc"]]


# --------------------------------------------------------------------------------------------
# The identity, exhaustively
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("g, b, a_bits", [
    (1, 2, 3), (1, 3, 3), (2, 2, 3), (2, 3, 3), (3, 2, 3), (3, 3, 3), (3, 3, 2), (4, 2, 2),
])
@pytest.mark.parametrize("signed_weights", [True, False])
def test_identity_exhaustive(g, b, a_bits, signed_weights):
    """Every activation vector x every weight vector: the table path equals the plain dot."""
    a_range = np.arange(-(1 << (a_bits - 1)), 1 << (a_bits - 1))
    acts = np.array(list(itertools.product(a_range, repeat=g)), dtype=np.int64)
    codes = np.array(list(itertools.product(range(1 << b), repeat=g)), dtype=np.int64)
    a_all = np.repeat(acts, len(codes), axis=0)
    w_all = np.tile(codes, (len(acts), 1))
    plain = (weight_values(w_all, b, signed_weights) * a_all).sum(axis=-1)
    got = gl.lut_dot(a_all, w_all, table_group=g, weight_bits=b, signed_weights=signed_weights)
    assert len(got) == (1 << (a_bits * g)) * (1 << (b * g))
    assert (got == plain).all()


@pytest.mark.parametrize("g, a_bits", [(1, 4), (2, 4), (3, 3), (4, 2), (4, 3)])
def test_half_table_lookup_and_width_exhaustive(g, a_bits):
    """The half table answers every index like the definition; the width is tight."""
    a_range = range(-(1 << (a_bits - 1)), 1 << (a_bits - 1))
    width = gl.table_width(g, a_bits)
    lo = hi = 0
    for acts in itertools.product(a_range, repeat=g):
        table = definition_table(acts)
        half = gl.half_table(np.array(acts))
        assert half.tolist() == table[1 << (g - 1):]
        got = gl.lookup(np.broadcast_to(half, (1 << g, len(half))), np.arange(1 << g), g)
        assert got.tolist() == table
        assert all(table[(1 << g) - 1 - c] == -table[c] for c in range(1 << g))
        assert half[-1] == sum(acts)
        lo, hi = min(lo, *half.tolist()), max(hi, *half.tolist())
    # The half table's range is [-M, M - 1], M = g 2**(A-1); the width holds it, tightly.
    assert (lo, hi) == (-g * 2 ** (a_bits - 1), g * 2 ** (a_bits - 1) - 1)
    assert -(2 ** (width - 1)) <= lo and hi < 2 ** (width - 1)
    assert lo < -(2 ** (width - 2)) or hi >= 2 ** (width - 2)


def test_cycles_per_step():
    assert [gl.cycles_per_step(b, 8) for b in (2, 3, 4, 8)] == [2, 3, 4, 8]


# --------------------------------------------------------------------------------------------
# Golden PE model against the plain reference, and the payload contract
# --------------------------------------------------------------------------------------------

def contract_outputs(fields, params):
    """Evaluate the payload stream by the PE's stated contract (docstring of LutTablePE)
    with Python ints: sum = sum_k T_k[c_k] + corr, P = 2 P + sum, gsum += P / 2."""
    g, lanes = params["table_group"], params["lanes"]
    outputs, acc, gsum, p = [], 0, 0, 0
    for c in range(len(fields["plane"])):
        total = int(fields["corr"][c])
        for k in range(lanes // g):
            index = (int(fields["plane"][c]) >> (g * k)) & ((1 << g) - 1)
            half = [int(v) for v in fields["tables"][c][k]]      # T[2**(g-1) ..]
            mask = (1 << (g - 1)) - 1
            total += half[index & mask] if index >> (g - 1) else -half[~index & mask]
        p = 2 * p + total
        if fields["step_last"][c]:
            assert p % 2 == 0
            gsum, p = gsum + p // 2, 0
        if fields["group_last"][c]:
            factor = int(fields["scale"][c]) if params["scale_bits"] else 1
            acc, gsum = acc + gsum * factor * 2 ** int(fields["exp"][c]), 0
        if fields["out_last"][c]:
            outputs.append(acc)
            acc = 0
    return outputs


@pytest.mark.parametrize("g, lanes, b, signed_weights", [
    (4, 8, 4, True), (4, 16, 3, False), (2, 4, 4, True), (3, 6, 2, True), (1, 2, 8, False),
    (6, 12, 4, True),
])
def test_golden_against_plain_reference(g, lanes, b, signed_weights):
    rng = np.random.default_rng(100 + g * 10 + lanes + b)
    params = {"lanes": lanes, "weight_bits": b, "act_width": 8, "table_group": g,
              "scale_bits": 5, "exp_bits": 2, "signed_weights": signed_weights}
    for n, k in ((20, 4 * lanes), (9, lanes)):
        case = pe_case(rng, n, k, params)
        plain = plain_reference(**case, weight_bits=b, scale_bits=5,
                                signed_weights=signed_weights)
        golden = gl.lut_pe_reference(**case, scale_bits=5, **golden_kwargs(params))
        assert [int(v) for v in golden] == plain
        fields = gl.lut_pe_payloads(**case, lanes=lanes, **golden_kwargs(params))
        assert len(fields["plane"]) == n * k // lanes * gl.cycles_per_step(b, 8)
        assert contract_outputs(fields, params) == plain


def test_golden_rejects_bad_input():
    with pytest.raises(ValueError, match=r"0\.\.15"):
        gl.lut_dot(np.zeros((1, 4)), np.full((1, 4), 16), table_group=4, weight_bits=4)
    with pytest.raises(ValueError, match="table_group=3"):
        gl.lut_dot(np.zeros((1, 4)), np.zeros((1, 4)), table_group=3, weight_bits=4)
    with pytest.raises(ValueError, match="lanes=8"):
        gl.lut_pe_payloads(np.zeros((1, 8)), np.zeros((1, 8)), [1], [0], [True], lanes=8,
                           table_group=3, weight_bits=4)
    with pytest.raises(ValueError, match="out_last"):
        gl.lut_pe_reference(np.zeros((2, 4)), np.zeros((2, 4)), [1, 1], [0, 0], [1, 0],
                            table_group=4, weight_bits=4)


# --------------------------------------------------------------------------------------------
# Parameters and widths
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"lanes": 0}, "lanes"), ({"lanes": 6}, "lanes=6"), ({"weight_bits": 1}, "weight_bits"),
    ({"weight_bits": 9}, "weight_bits"), ({"act_width": 17}, "act_width"),
    ({"table_group": 0}, "table_group"), ({"table_group": 7}, "table_group"),
    ({"group_size": 40}, "group_size=40"), ({"scale_bits": 17}, "scale_bits"),
    ({"exp_bits": 7}, "exp_bits"), ({"max_groups": 0}, "max_groups"),
    ({"acc_width": 33}, "acc_width=33"),
])
def test_pe_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LutTablePE(**kwargs)


def test_bad_parameter_types():
    with pytest.raises(TypeError, match="signed_weights"):
        LutTablePE(signed_weights=1)
    with pytest.raises(TypeError, match="lanes"):
        LutTableBuilder(lanes=4.0)
    with pytest.raises(ValueError, match="lanes=6"):
        LutTableBuilder(lanes=6, table_group=4)


@pytest.mark.parametrize("params", [
    {}, PE_PARAMS,
    {"lanes": 12, "weight_bits": 3, "act_width": 6, "table_group": 3, "group_size": 48,
     "scale_bits": 0, "exp_bits": 3, "max_groups": 100, "signed_weights": False},
])
def test_pe_widths_hold_the_worst_case(params):
    pe = LutTablePE(**params)
    b, a_bits, lanes, G = pe.weight_bits, pe.act_width, pe.lanes, pe.group_size
    w_vals = weight_values(np.arange(1 << b), b, pe.signed_weights)
    a_vals = (-(2 ** (a_bits - 1)), 2 ** (a_bits - 1) - 1)
    products = [int(w) * a for w in w_vals for a in a_vals]
    hi, lo = max(products), min(products)
    s_max = (1 << pe.scale_bits) - 1 if pe.scale_bits else 1
    top = 2 ** ((1 << pe.exp_bits) - 1) * s_max * pe.max_groups * G

    def fits(value, width):
        return -(2 ** (width - 1)) <= value < 2 ** (width - 1)

    def tight(width, values):
        assert all(fits(v, width) for v in values)
        assert not all(fits(v, width - 1) for v in values)

    tight(pe.step_width, [2 * lanes * hi, 2 * lanes * lo])
    tight(pe.group_width, [G * hi, G * lo])
    tight(pe.acc_width, [top * hi, top * lo])
    m = pe.table_group * 2 ** (a_bits - 1)
    tight(pe.table_width, [-m, m - 1])
    sums = [lanes * a for a in a_vals]
    corr = [-s if pe.signed_weights else (2 ** b - 1) * s for s in sums]
    tight(pe.corr_width, corr)
    assert LutTablePE(**params, acc_width=pe.acc_width + 3).acc_width == pe.acc_width + 3
    assert pe.latency == gl.lut_pe_latency(lanes, pe.table_group, pe.scale_bits)
    assert pe.group_cycles == G // lanes * b
    assert pe.macs_per_cycle == lanes / gl.cycles_per_step(b, a_bits)


# --------------------------------------------------------------------------------------------
# Amaranth simulator: the table builder and a small PE
# --------------------------------------------------------------------------------------------

def _drive(dut, inputs, n_outputs, read):
    received = []

    async def producer(ctx):
        for payload in inputs:
            await stream_put(ctx, dut.i_stream, payload)

    async def consumer(ctx):
        for _ in range(n_outputs):
            received.append(read(await stream_get(ctx, dut.o_stream)))

    run_simulation(dut, [producer, consumer], deadline=1e-3)
    return received


@pytest.mark.parametrize("g, lanes, b, a_bits, signed_weights", [
    (4, 8, 4, 8, True), (3, 6, 3, 8, False), (2, 4, 4, 5, True), (1, 2, 2, 4, False),
])
def test_builder_amaranth_sim(g, lanes, b, a_bits, signed_weights):
    rng = np.random.default_rng(7 + g)
    builder = LutTableBuilder(lanes=lanes, weight_bits=b, act_width=a_bits, table_group=g,
                              signed_weights=signed_weights)
    lo, hi = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    acts = np.concatenate([rng.integers(lo, hi + 1, (24, lanes)), np.full((1, lanes), lo),
                           np.full((1, lanes), hi), np.zeros((1, lanes), dtype=np.int64)])
    got = _drive(builder, [{"acts": row.tolist()} for row in acts], len(acts),
                 lambda v: ([[int(e) for e in t] for t in v.tables], int(v.corr)))
    tables, corr = gl.table_builder(acts, table_group=g, weight_bits=b,
                                    signed_weights=signed_weights)
    assert got == [(t.tolist(), int(c)) for t, c in zip(tables, corr, strict=True)]
    # Independently: each table from the definition, the correction from the plain sum.
    for row, (t, c) in zip(acts, got, strict=True):
        for k in range(lanes // g):
            assert t[k] == definition_table(row[g * k: g * k + g])[1 << (g - 1):]
        s = int(row.sum())
        assert c == (-s if signed_weights else (2 ** b - 1) * s)
    assert builder.latency == gl.builder_latency(g, lanes) == g + (lanes // g - 1).bit_length()


def test_pe_amaranth_sim_unsigned():
    rng = np.random.default_rng(5)
    params = {"lanes": 6, "weight_bits": 3, "act_width": 6, "table_group": 3,
              "group_size": 12, "scale_bits": 3, "exp_bits": 1, "max_groups": 6,
              "signed_weights": False}
    pe = LutTablePE(**params)
    cases = [pe_case(rng, 6, 12, params), pe_case(rng, 5, 6, params)]  # 6- and 3-cycle groups
    refs, inputs = [], []
    for case in cases:
        f = gl.lut_pe_payloads(**case, lanes=6, **golden_kwargs(params))
        refs.extend(int(v) for v in gl.lut_pe_reference(**case, scale_bits=3,
                                                        **golden_kwargs(params)))
        assert refs[-len(np.flatnonzero(case["out_last"])):] == plain_reference(
            **case, weight_bits=3, scale_bits=3, signed_weights=False)
        for c in range(len(f["plane"])):
            inputs.append({"plane": int(f["plane"][c]), "tables": f["tables"][c].tolist(),
                           **{name: int(f[name][c]) for name in (
                               "corr", "step_last", "group_last", "out_last", "scale", "exp")}})
    got = _drive(pe, inputs, len(refs), lambda v: int(v.acc))
    assert got == refs


# --------------------------------------------------------------------------------------------
# Verilator: random streams with handshake noise, worst cases, output cycles
# --------------------------------------------------------------------------------------------

def test_pe_random_groups_with_handshake_noise():
    rng = np.random.default_rng(11)
    params = PE_PARAMS
    pe = LutTablePE(**params)
    cases = [pe_case(rng, 40, 32, params),    # full groups: 16 cycles
             pe_case(rng, 30, 8, params),     # one-step groups: 4 cycles, dequant stalls
             pe_case(rng, 20, 16, params),    # ragged 8-cycle groups
             pe_case(rng, 4, 32, params, weights=np.full((4, 32), 0)),   # w = 0 (code 0)
             pe_case(rng, 4, 32, params, acts=np.zeros((4, 32), dtype=np.int64))]
    payloads, refs, _ = pe_stream(pe, params, cases)
    got = run_pe(params, payloads, len(refs), backpressure=0.5, idle=0.5, seed=3)
    assert got == refs
    assert any(r == 0 for r in refs) and any(r > 0 for r in refs) and any(r < 0 for r in refs)


def test_pe_worst_case_and_output_cycles():
    rng = np.random.default_rng(12)
    params = PE_PARAMS
    pe = LutTablePE(**params)
    n, G, b = pe.max_groups, pe.group_size, pe.weight_bits
    most_negative_w = np.full((n, G), 1 << (b - 1))          # code of -2**(B-1)
    most_positive_w = np.full((n, G), (1 << (b - 1)) - 1)
    a_min, a_max = -(1 << (pe.act_width - 1)), (1 << (pe.act_width - 1)) - 1
    extreme = {"scale": np.full(n, (1 << pe.scale_bits) - 1),
               "exp": np.full(n, (1 << pe.exp_bits) - 1), "out_last": np.arange(n) == n - 1}
    cases = [
        {"weights": most_negative_w, "acts": np.full((n, G), a_min), **extreme},  # most +
        {"weights": most_negative_w, "acts": np.full((n, G), a_max), **extreme},  # most -
        {"weights": most_positive_w, "acts": np.full((n, G), a_min), **extreme},
        pe_case(rng, 12, 32, params),
    ]
    payloads, refs, f = pe_stream(pe, params, cases)
    assert refs[0].bit_length() + 1 == pe.acc_width     # every bit of the accumulator
    assert refs[0] == n * G * 2 ** (b - 1) * 2 ** (pe.act_width - 1) * 255 * 8
    assert refs[1] < 0 and refs[2] < 0
    stats = {}
    got = run_pe(params, payloads, len(refs), backpressure=0.0, idle=0.0, stats=stats)
    assert got == refs
    # Full groups never stall: an output `latency` cycles after its out_last payload.
    model = gl.lut_pe_output_cycles(f["group_last"], f["out_last"], stages=pe.stages,
                                    scale_bits=pe.scale_bits)
    assert model.tolist() == (np.flatnonzero(f["out_last"]) + pe.latency).tolist()
    assert stats["output_cycles"] == model.tolist()

    # Short groups (one weight-step: 4 cycles < 8 dequantizer steps) stall the input.
    short = [pe_case(rng, 25, 8, params), pe_case(rng, 8, 24, params)]
    payloads, refs, f = pe_stream(pe, params, short)
    stats = {}
    got = run_pe(params, payloads, len(refs), backpressure=0.0, idle=0.0, stats=stats)
    assert got == refs
    model = gl.lut_pe_output_cycles(f["group_last"], f["out_last"], stages=pe.stages,
                                    scale_bits=pe.scale_bits)
    assert stats["output_cycles"] == model.tolist()
    assert model[-1] > len(payloads) + pe.latency  # the stalls did happen


def test_pe_reset_mid_group_clears_the_accumulators():
    """A reset in the middle of a group: the next stream's outputs are exact (the Horner and
    group accumulators are reset-less registers whose clear includes the domain reset)."""
    from amaranth import ClockDomain, Module

    rng = np.random.default_rng(9)
    params = {"lanes": 4, "weight_bits": 2, "act_width": 5, "table_group": 2,
              "group_size": 8, "scale_bits": 2, "exp_bits": 0, "max_groups": 4}
    pe = LutTablePE(**params)
    top = Module()
    top.domains.sync = domain = ClockDomain("sync")
    top.submodules.pe = pe
    junk = gl.lut_pe_payloads(**pe_case(rng, 1, 8, params), lanes=4, **golden_kwargs(params))
    case = pe_case(rng, 6, 8, params)
    fields = gl.lut_pe_payloads(**case, lanes=4, **golden_kwargs(params))
    refs = [int(v) for v in gl.lut_pe_reference(**case, scale_bits=2, **golden_kwargs(params))]
    assert refs == plain_reference(**case, weight_bits=2, scale_bits=2)

    def payload(f, c):
        return {"plane": int(f["plane"][c]), "tables": f["tables"][c].tolist(),
                **{name: int(f[name][c]) for name in (
                    "corr", "step_last", "group_last", "out_last", "scale", "exp")}}

    received = []

    async def bench(ctx):
        for c in range(3):  # most of a group, never finished, nonzero accumulators
            await stream_put(ctx, pe.i_stream, payload(junk, c))
        await ctx.tick().repeat(6)
        ctx.set(domain.rst, 1)  # across one or two clock edges; a tick() would raise
        await ctx.delay(1.5e-8)
        ctx.set(domain.rst, 0)
        for c in range(len(fields["plane"])):
            await stream_put(ctx, pe.i_stream, payload(fields, c))

    async def consumer(ctx):
        await ctx.delay(16e-8)  # past the reset (no output is due before)
        for _ in range(len(refs)):
            received.append(int((await stream_get(ctx, pe.o_stream)).acc))

    run_simulation(top, [bench, consumer], deadline=1e-3)
    assert received == refs


def test_builder_exhaustive_small_and_random_wide_with_handshake_noise():
    small = {"lanes": 3, "weight_bits": 3, "act_width": 3, "table_group": 3,
             "signed_weights": False}
    builder = LutTableBuilder(**small)
    acts = np.array(list(itertools.product(range(-4, 4), repeat=3)), dtype=np.int64)
    payloads = pack_fields(builder.in_layout, acts=gl_pack(acts, 3))
    out = unpack_fields(builder.out_layout,
                        run_stream(LutTableBuilder, small, payloads, seed=4,
                                   engine="amaranth"))
    width = builder.table_width
    for row, packed, corr in zip(acts, out["tables"], out["corr"], strict=True):
        entries = [(int(packed) >> (width * c)) & ((1 << width) - 1) for c in range(4)]
        entries = [e - (1 << width) if e >> (width - 1) else e for e in entries]
        assert entries == definition_table(row)[4:]
        assert int(corr) == 7 * int(row.sum())

    wide = {"lanes": 16, "weight_bits": 4, "act_width": 8, "table_group": 4,
            "signed_weights": True}
    builder = LutTableBuilder(**wide)
    rng = np.random.default_rng(13)
    acts = np.concatenate([rng.integers(-128, 128, (300, 16)), np.full((1, 16), -128),
                           np.full((1, 16), 127)])
    payloads = pack_fields(builder.in_layout, acts=gl_pack(acts, 8))
    tables, corr = gl.table_builder(acts, table_group=4, weight_bits=4)
    for noise, stats in ((0.5, None), (0.0, {})):
        out = unpack_fields(builder.out_layout, run_stream(
            LutTableBuilder, wide, payloads, seed=5, idle=noise, backpressure=noise,
            stats=stats))
        assert [int(c) for c in out["corr"]] == (-acts.sum(axis=-1)).tolist() == corr.tolist()
        assert [int(t) for t in out["tables"]] == gl_pack(tables.reshape(len(acts), -1),
                                                           builder.table_width).tolist()
    # At full rate: one weight-step per cycle, each `latency` cycles after its input.
    assert stats["output_cycles"] == [builder.latency + i for i in range(len(acts))]


def test_registry_builds_the_lut_pe_from_a_scheme():
    from bitmod.hdl.registry import build_component

    pe = build_component("lut_pe", {"lanes": 16}, scheme="int4")
    assert isinstance(pe, LutTablePE) and (pe.lanes, pe.weight_bits) == (16, 4)

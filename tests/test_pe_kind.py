"""PE kinds as plug-ins (golden/pe_kind.py): golden's description, the registered RTL PE and the
array built from them agree; a kind registered at run time runs in the array bit-exactly."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Fragment

from bitmod.golden import gemm as ggemm
from bitmod.golden.pe_baseline import INT_PE_KIND
from bitmod.golden.pe_bitplane import BitPlaneConfig, array_bitplane_params
from bitmod.golden.pe_kind import PEKind
from bitmod.golden.pe_lut import ARRAY_TABLE_GROUP, LUT_PE_KIND, array_lut_params, lut_dot
from bitmod.golden.quantize import quantize
from bitmod.hdl import registry
from bitmod.hdl.array import SystolicArray
from bitmod.hdl.array.front_end import RowFrontEnd
from bitmod.hdl.array.serializer import StepSerializer
from bitmod.hdl.pe.lut_table import LutTableBuilder
from bitmod.sim.array_driver import expected_codes, run_array_gemm

# Per kind: array parameters it runs (one INT8 and one FP16 configuration each).
CONFIGS = [
    dict(lanes=4, group_size=16, formats="int4_sym"),
    dict(lanes=8, group_size=64, formats="int8_sym", act_format="fp16", mant_width=8,
         act_exp_bits=3, max_groups=32),
]


@pytest.mark.parametrize("kind", ggemm.PE_KINDS)
@pytest.mark.parametrize("params", CONFIGS)
def test_registered_pe_matches_golden_kind(kind, params):
    """The one registered PE of every kind, built by ``for_array``, has golden's latency and
    accumulator width, and the payload fields of its operand."""
    cfg = ggemm.ArrayConfig(pe_kind=kind, **params)
    assert cfg.kind is ggemm.pe_kind(kind) and cfg.kind.name == kind
    pe = registry.array_pe_class(kind).for_array(cfg)
    assert pe.latency == cfg.kind.latency(cfg)
    assert len(pe.o_stream.payload.acc) == cfg.kind.acc_width(cfg) == cfg.acc_width
    fields = set(pe.i_stream.payload.shape().members)
    operand_fields = {"terms": {"terms"}, "codes": {"weights"},
                      "planes": {"plane", "step_last"},
                      "bitplanes": {"w_plane", "negate", "shift", "step_last"}}[cfg.kind.operand]
    row_fields = {"acts": {"acts"}, "tables": {"tables", "corr"},
                  "planes": {"a_plane"}}[cfg.kind.row_operand]
    assert operand_fields | row_fields <= fields
    assert cfg.terms == cfg.kind.cycles_per_step(cfg)
    if kind == "int":
        assert cfg.terms == 1 and cfg.dequant_cycles == cfg.scale_bits + 1
    elif kind == "minifloat":  # no dequantizer; the scale's exponent rides in exp
        assert cfg.terms == 1 and cfg.dequant_cycles == 1 and cfg.kind.scale == "shift"
        shift_max = (1 << cfg.act_exp_bits) - 1 + cfg.scale_bits - 1
        assert len(pe.i_stream.payload.exp) == shift_max.bit_length()
    elif kind == "lut":  # one bit-plane per cycle; the row's table builder after the front end
        assert cfg.terms == cfg.geometry.code_bits and cfg.dequant_cycles == max(cfg.scale_bits, 1)
        assert cfg.kind.row_operand == "tables" and cfg.kind.scale == "multiply"
        builder = LutTableBuilder(**array_lut_params(cfg))
        rows = RowFrontEnd(cfg).o_stream.payload.shape()["tables"].shape
        assert rows.elem_shape == builder.out_layout and rows.length == cfg.rows
        plain = ggemm.ArrayConfig(**params)  # the bit-serial array: no table stage
        assert cfg.front_end_latency == plain.front_end_latency + builder.latency
        assert (pe.table_group, pe.signed_weights) == (ARRAY_TABLE_GROUP, True)
        assert cfg.acc_width == ggemm.ArrayConfig(pe_kind="int", **params).acc_width
    elif kind == "bitplane":  # P_w x P_a plane pairs per step, step-major, the row planes
        bp = BitPlaneConfig(**array_bitplane_params(cfg))
        assert pe.config.order == "step" and bp.order == "step"
        assert cfg.terms == cfg.geometry.code_bits * cfg.act_width == bp.cycles_per_step
        assert cfg.dequant_cycles == max(cfg.scale_bits, 1) == bp.dequant_cycles
        assert cfg.kind.row_operand == "planes" and cfg.kind.scale == "multiply"
        assert cfg.kind.latency(cfg) == bp.latency and cfg.acc_width == bp.required_acc_width
        assert cfg.front_end_latency == ggemm.ArrayConfig(**params).front_end_latency
        assert cfg.acc_width == ggemm.ArrayConfig(pe_kind="int", **params).acc_width
        ser = StepSerializer(cfg)  # one plane bit per lane each way, 3 control bits
        assert ser.col_widths[0] == 3 and ser.col_widths[3] == cfg.lanes
        assert ser.row_width - ser.shift_width == cfg.lanes
    else:
        assert cfg.terms == cfg.geometry.terms and cfg.dequant_cycles == cfg.pe.dequant_cycles
    if cfg.kind.row_operand in ("acts", "planes"):
        assert cfg.kind.row_latency(cfg) == 0


def test_bad_kinds_are_named():
    with pytest.raises(ValueError, match="pe_kind must be one of bitserial, int, minifloat, "
                                         "lut, bitplane, not 'nope'"):
        ggemm.ArrayConfig(pe_kind="nope")
    with pytest.raises(ValueError, match="'nope' has 0 registered PEs"):
        registry.array_pe_class("nope")
    with pytest.raises(ValueError, match="operand must be one of"):
        dataclasses.replace(INT_PE_KIND, operand="bits")
    with pytest.raises(ValueError, match="row_operand must be one of"):
        dataclasses.replace(LUT_PE_KIND, row_operand="sums")
    with pytest.raises(ValueError, match="the int PE multiplies one signed integer format"):
        ggemm.ArrayConfig(pe_kind="int", formats=("fp4",))
    with pytest.raises(ValueError, match="scale must be one of"):
        dataclasses.replace(INT_PE_KIND, scale="divide")
    with pytest.raises(ValueError, match="activations of at most 8 bits; mant_width=12"):
        ggemm.ArrayConfig(pe_kind="minifloat", formats="fp4_e2m1", act_format="fp16")
    with pytest.raises(ValueError, match="codes of at most 8 bits, not 'fp4_er_pos'"):
        ggemm.ArrayConfig(pe_kind="minifloat", formats="fp4_er_pos")  # BitMoD extended type
    with pytest.raises(ValueError, match="multiplies one weight format, not the mixture"):
        ggemm.ArrayConfig(pe_kind="minifloat", formats=("fp4_er_pos", "fp4_er_neg"))
    with pytest.raises(ValueError, match=r"lut PE reads the bit-planes of one integer format "
                                         r".* not \['fp4'\]"):
        ggemm.ArrayConfig(pe_kind="lut", formats="fp4")
    with pytest.raises(ValueError, match=r"bitplane PE reads the bit-planes of one integer "
                                         r"format .* not \['fp4'\]"):
        ggemm.ArrayConfig(pe_kind="bitplane", formats="fp4")
    with pytest.raises(ValueError, match="the bitplane PE takes activations of 2 to 8 bits; "
                                         "mant_width=10"):
        ggemm.ArrayConfig(pe_kind="bitplane", formats="int4_sym", act_format="fp16",
                          mant_width=10)


def test_lut_kind_formats():
    """The lut kind's plane encoding follows the format's signedness, its levels are the codes'
    integers (what golden.gemm multiplies), and g = 2 falls back to 1 for odd lane counts."""
    signed = ggemm.ArrayConfig(pe_kind="lut", formats="int4_sym")
    unsigned = ggemm.ArrayConfig(pe_kind="lut", formats="uint4")
    assert array_lut_params(signed)["signed_weights"] is True
    assert array_lut_params(unsigned)["signed_weights"] is False
    assert unsigned.acc_width == signed.acc_width + 1  # products up to 15 * -128
    odd = ggemm.ArrayConfig(pe_kind="lut", formats="int8_sym", lanes=3, group_size=12)
    assert array_lut_params(odd)["table_group"] == 1 and odd.terms == 8
    q = ggemm.ArrayConfig(pe_kind="lut", formats="q8_4")
    assert array_lut_params(q)["weight_bits"] == 8


@pytest.mark.parametrize("scheme", ["int4", "int8", "int4_asym"])
def test_lut_identity_gives_gemm_group_sums(scheme):
    """The LUT PE's arithmetic (golden.pe_lut.lut_dot: tables, planes, Horner, correction) on
    the core's codes equals plain integer dot products of the weight levels golden.gemm uses
    (int4_asym: its zero points folded into int5 levels)."""
    rng = np.random.default_rng(3)
    qt = ggemm.quantize_for_core(rng.standard_normal((6, 64)), scheme, group_size=32)
    cfg = ggemm.ArrayConfig(pe_kind="lut", formats=qt.formats, group_size=32, lanes=4)
    p = array_lut_params(cfg)
    acts = rng.integers(-128, 128, size=(6, 64))
    acts[0] = -128  # the extreme activation in every lane
    got = lut_dot(acts.reshape(6, 2, 32), qt.codes.astype(np.int64).reshape(6, 2, 32),
                  table_group=p["table_group"], weight_bits=p["weight_bits"],
                  signed_weights=p["signed_weights"])
    levels = ggemm.weight_levels(qt).reshape(6, 2, 32)
    assert (got == (acts.reshape(6, 2, 32) * levels).sum(axis=-1)).all()


def test_a_shifting_kind_refuses_scales_that_are_not_powers_of_two():
    """INT8 group scales (int4) cannot run on the minifloat PE; MX block scales can."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 64))
    cfg = ggemm.ArrayConfig(pe_kind="minifloat", formats="int4_sym", group_size=32)
    qt = quantize(w, "int4", group_size=32, scale_format="int8")
    with pytest.raises(ValueError, match="shifts by power-of-two group scales"):
        ggemm.check_weights(qt, cfg)
    mx = ggemm.quantize_for_core(w, "mxfp4", group_size=32)
    ggemm.check_weights(mx, dataclasses.replace(cfg, formats=mx.formats))
    assert all(int(c) & (int(c) - 1) == 0 for c in mx.scale_codes.reshape(-1))


@pytest.fixture
def twin_kind(monkeypatch):
    """Registers ``int_twin``: golden's int description under a new name and an IntPE entry
    naming it, the two places a new kind is added."""
    def register(kind: PEKind):
        monkeypatch.setitem(ggemm._PE_KINDS, kind.name, kind)
        monkeypatch.setattr(ggemm, "PE_KINDS", tuple(ggemm._PE_KINDS))
        monkeypatch.setitem(registry.COMPONENTS, f"{kind.name}_pe", registry.Entry(
            "bitmod.hdl.pe.baseline:IntPE", None, "weight_bits", "int8", pe_kind=kind.name))
        return kind.name
    return register


def test_a_kind_registered_at_run_time_runs_in_the_array(twin_kind):
    """One tile through the Amaranth simulator on a 2 x 2 array of the new kind equals golden
    ``gemm``; nothing in the array, the serializer or the configuration names the kind."""
    name = twin_kind(dataclasses.replace(INT_PE_KIND, name="int_twin"))
    params = dict(rows=2, cols=2, lanes=4, group_size=16, formats="int4_sym",
                  act_format="int8", pe_kind=name)
    cfg = ggemm.ArrayConfig(**params)
    rng = np.random.default_rng(5)
    qt = quantize(rng.standard_normal((2, 20)), "int4", group_size=16, scale_format="int8")
    xq, act_scale = ggemm.quantize_activations_int8(rng.standard_normal((2, 20)))
    result = ggemm.gemm(xq, qt, cfg, act_scale)
    acts = ggemm.act_mantissas(xq, cfg)
    assert cfg.terms == 1 and cfg.kind.name == name
    got, tiles, _ = run_array_gemm(cfg, acts, qt, engine="amaranth")
    expected = expected_codes(cfg, result, tiles)
    assert any(expected), "an all-zero tile would prove little"
    assert (np.array([int(v) for v in got], dtype=object) == expected).all(), (got, expected)


def test_a_kind_whose_description_disagrees_with_its_pe_is_refused(twin_kind):
    """The array checks the registered PE against golden's description when it elaborates."""
    name = twin_kind(dataclasses.replace(INT_PE_KIND, name="int_liar",
                                         latency=lambda cfg: 99))
    cfg = ggemm.ArrayConfig(rows=1, cols=1, formats="int4_sym", pe_kind=name)
    with pytest.raises(AssertionError, match="golden's PE kind 'int_liar' says 99"):
        Fragment.get(SystolicArray(cfg), None)

"""The array's input step layout and its row front end (activation block converters)."""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import bfp
from bitmod.golden.gemm import ArrayConfig
from bitmod.hdl.arith.act_block import ActBlockConverter

from ..common import read_only

__all__ = ["RowFrontEnd", "front_layout", "step_layout"]


def step_layout(cfg: ArrayConfig) -> data.StructLayout:
    """The array's input payload: one weight-step (:class:`hdl.array.SystolicArray`)."""
    geo = cfg.geometry
    fields = {
        "codes": data.ArrayLayout(data.ArrayLayout(unsigned(geo.code_bits), cfg.lanes),
                                  cfg.cols),
        "sel": data.ArrayLayout(unsigned(2), cfg.cols),
    }
    if cfg.scale_bits:
        fields["scale"] = data.ArrayLayout(unsigned(cfg.scale_bits), cfg.cols)
    if cfg.act_format == "int8":
        fields["acts"] = data.ArrayLayout(data.ArrayLayout(signed(8), cfg.lanes), cfg.rows)
    else:
        fields["acts"] = data.ArrayLayout(data.ArrayLayout(unsigned(16), cfg.lanes), cfg.rows)
        fields["gexp"] = data.ArrayLayout(unsigned(cfg.exp_width), cfg.rows)
        fields["base"] = data.ArrayLayout(unsigned(cfg.exp_width), cfg.rows)
    fields["group_last"] = 1
    fields["out_last"] = 1
    return data.StructLayout(fields)


def front_layout(cfg: ArrayConfig) -> data.StructLayout:
    """A step after the front end: the activations as ``R x L`` signed ``act_width``-bit
    mantissas and each row's group shift (``act_exp_bits`` bits; none for INT8)."""
    step = step_layout(cfg)
    fields = {"codes": step["codes"].shape, "sel": step["sel"].shape}
    if cfg.scale_bits:
        fields["scale"] = step["scale"].shape
    fields["acts"] = data.ArrayLayout(data.ArrayLayout(signed(cfg.act_width), cfg.lanes),
                                      cfg.rows)
    if cfg.act_format != "int8" and cfg.act_exp_bits:
        fields["shift"] = data.ArrayLayout(unsigned(cfg.act_exp_bits), cfg.rows)
    fields["group_last"] = 1
    fields["out_last"] = 1
    return data.StructLayout(fields)


@read_only("config")
class RowFrontEnd(wiring.Component):
    """Aligns each row's activations for the PEs; the weight side rides alongside.

    FP16/BF16 activations: per row an :class:`~hdl.arith.act_block.ActBlockConverter` of
    ``L + 1`` lanes whose extra lane gets the anchor word ``max(gexp, base) << M``
    (:func:`golden.gemm.act_mantissas`), giving the ``L`` block mantissas, and the row shift
    ``max(gexp, base) - base``. A step that ends a tile (``out_last``) pushes the rows' floors
    ``base`` to the drain (``base_w_en``), and is taken only while the drain has room for them
    (``base_w_rdy``). INT8 activations pass through one register stage. The weight fields
    (codes, selectors, scales, group and tile ends) are delayed to match.

    Latency: :attr:`golden.gemm.ArrayConfig.front_end_latency` cycles (the converter's, or 1).
    Throughput: one step per cycle.

    Parameters
    ----------
    config : golden.gemm.ArrayConfig

    Members
    -------
    i_stream : In(stream.Signature(step_layout(config)))
    o_stream : Out(stream.Signature(front_layout(config)))
    base_w_en, base_w_data : Out(1), Out(R * E)
        The tile's row floors, to the drain (FP activations; ``E`` the block exponent width).
    base_w_rdy : In(1)
    """

    def __init__(self, config: ArrayConfig):
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig, not {config!r}")
        self._config = cfg = config
        fp = cfg.act_format != "int8"
        super().__init__({
            "i_stream": In(stream.Signature(step_layout(cfg))),
            "o_stream": Out(stream.Signature(front_layout(cfg))),
            "base_w_en": Out(1),
            "base_w_data": Out(cfg.rows * cfg.exp_width if fp else 1),
            "base_w_rdy": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        L, A, X = cfg.lanes, cfg.act_width, cfg.act_exp_bits
        fp = cfg.act_format != "int8"
        payload = self.i_stream.payload
        out = self.o_stream
        en = Signal()  # the stages move when the consumer takes or the output is empty
        m.d.comb += en.eq(out.ready | ~out.valid)

        side_in = {"codes": payload.codes, "sel": payload.sel,
                   "group_last": payload.group_last, "out_last": payload.out_last}
        if cfg.scale_bits:
            side_in["scale"] = payload.scale
        if fp:
            convs, shifts = self._converters(m)
            if X:
                side_in["shift"] = Cat(*shifts)
            stages = cfg.front_end_latency
            if convs[0].latency != stages:
                raise AssertionError(f"row converter latency {convs[0].latency} is not "
                                     f"golden's front end latency {stages}")
        else:
            m.d.comb += self.i_stream.ready.eq(en)
            side_in["acts"] = payload.acts
            stages = 1
        names = list(side_in)
        side = [Signal.like(Cat(side_in[k]), name=f"side_in_{k}") for k in names]
        m.d.comb += [s.eq(Cat(side_in[k])) for s, k in zip(side, names, strict=True)]
        valid_chain = self.i_stream.valid & self.i_stream.ready
        for k in range(stages):
            nxt = [Signal.like(s, name=f"fe{k}_{n}", reset_less=True)
                   for s, n in zip(side, names, strict=True)]
            nvalid = Signal(name=f"fe{k}_valid")
            with m.If(en):
                m.d.sync += [n.eq(s) for n, s in zip(nxt, side, strict=True)]
                m.d.sync += nvalid.eq(valid_chain)
            side, valid_chain = nxt, nvalid
        delayed = dict(zip(names, side, strict=True))
        for name in names:
            m.d.comb += Cat(getattr(out.payload, name)).eq(delayed[name])
        if fp:
            m.d.comb += [out.valid.eq(convs[0].o_stream.valid),
                         Cat(out.payload.acts).eq(Cat(*(Cat(conv.o_stream.payload.mant)[:L * A]
                                                        for conv in convs)))]
        else:
            m.d.comb += out.valid.eq(valid_chain)
        return m

    def _converters(self, m: Module):
        """Per row the block converter (its anchor lane and shift); the stream's ready and the
        floors' push to the drain."""
        cfg = self._config
        R, L, X = cfg.rows, cfg.lanes, cfg.act_exp_bits
        E, M, _ = bfp.float_fields(cfg.act_format)
        payload = self.i_stream.payload
        in_ok = self.base_w_rdy
        convs, shifts = [], []
        for r in range(R):
            conv = ActBlockConverter(L + 1, cfg.act_format, cfg.mant_width, cfg.rounding)
            m.submodules[f"conv{r}"] = conv
            convs.append(conv)
            gexp, base = payload.gexp[r], payload.base[r]
            anchor = Signal(E, name=f"anchor{r}")
            m.d.comb += anchor.eq(Mux(gexp > base, gexp, base))
            shift = Signal(max(X, 1), name=f"shift{r}")
            m.d.comb += shift.eq(anchor - base)
            shifts.append(shift[:X])
            m.d.comb += [
                conv.i_stream.valid.eq(self.i_stream.valid & in_ok),
                conv.i_stream.payload.data.eq(
                    Cat(payload.acts[r], Const(0, M), anchor, Const(0, 16 - M - E))),
                conv.o_stream.ready.eq(self.o_stream.ready),
            ]
        m.d.comb += [self.i_stream.ready.eq(convs[0].i_stream.ready & in_ok),
                     self.base_w_en.eq(self.i_stream.valid & self.i_stream.ready
                                       & payload.out_last),
                     self.base_w_data.eq(payload.base)]
        return convs, shifts

"""The array's input step layout and its row front end (activation block aligners and, for
the LUT-table PE kind, the rows' table builders, or, with zero points, the rows' group sums)."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import bfp
from bitmod.golden.gemm import ArrayConfig
from bitmod.golden.pe_lut import array_lut_params
from bitmod.hdl.arith.act_block import ActBlockAligner
from bitmod.hdl.pe.lut_table import LutTableBuilder, builder_out_layout

from ..common import read_only

__all__ = ["RowFrontEnd", "RowGroupSums", "front_layout", "row_operand_layout", "step_layout"]


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
    if cfg.zero_points:  # each column's group zero point, an offset code like the weights
        fields["zp"] = data.ArrayLayout(unsigned(geo.code_bits), cfg.cols)
    if cfg.act_format == "int8":
        fields["acts"] = data.ArrayLayout(data.ArrayLayout(signed(8), cfg.lanes), cfg.rows)
    else:
        fields["acts"] = data.ArrayLayout(data.ArrayLayout(unsigned(16), cfg.lanes), cfg.rows)
        fields["gexp"] = data.ArrayLayout(unsigned(cfg.exp_width), cfg.rows)
        fields["base"] = data.ArrayLayout(unsigned(cfg.exp_width), cfg.rows)
    fields["group_last"] = 1
    fields["out_last"] = 1
    return data.StructLayout(fields)


def row_operand_layout(cfg: ArrayConfig) -> data.Layout:
    """What one row of a step brings its PEs (:attr:`golden.pe_kind.PEKind.row_operand`): the
    ``L`` signed ``act_width``-bit activations (with zero points, followed by the row's
    ``rowsum``, :class:`RowGroupSums`), or the LUT PE's ``L / g`` half tables and the step's
    correction (the :class:`~hdl.pe.lut_table.LutTableBuilder` output layout)."""
    if cfg.kind.row_operand == "tables":
        return builder_out_layout(**array_lut_params(cfg))
    acts = data.ArrayLayout(signed(cfg.act_width), cfg.lanes)
    if cfg.zero_points:
        return data.StructLayout({"acts": acts, "rowsum": signed(cfg.pe.rowsum_width)})
    return acts


def _mantissa_layout(cfg: ArrayConfig) -> data.StructLayout:
    """A step after the block aligners: the activations as ``R x L`` signed
    ``act_width``-bit mantissas and each row's group shift (``act_exp_bits`` bits; none for
    INT8)."""
    step = step_layout(cfg)
    fields = {"codes": step["codes"].shape, "sel": step["sel"].shape}
    if cfg.scale_bits:
        fields["scale"] = step["scale"].shape
    if cfg.zero_points:
        fields["zp"] = step["zp"].shape
    fields["acts"] = data.ArrayLayout(data.ArrayLayout(signed(cfg.act_width), cfg.lanes),
                                      cfg.rows)
    if cfg.act_format != "int8" and cfg.act_exp_bits:
        fields["shift"] = data.ArrayLayout(unsigned(cfg.act_exp_bits), cfg.rows)
    fields["group_last"] = 1
    fields["out_last"] = 1
    return data.StructLayout(fields)


def front_layout(cfg: ArrayConfig) -> data.StructLayout:
    """A step after the front end: the weight fields, per row its operand
    (:func:`row_operand_layout`: ``acts``, or ``tables`` for the LUT PE kind) and its group
    shift (``act_exp_bits`` bits; none for INT8), ``group_last``, ``out_last``; with zero
    points per row ``rowsum`` (:class:`RowGroupSums`)."""
    fields = dict(_mantissa_layout(cfg).members)
    if cfg.zero_points:
        fields["rowsum"] = data.ArrayLayout(signed(cfg.pe.rowsum_width), cfg.rows)
    if cfg.kind.row_operand == "tables":  # the tables take the activations' place
        rows = data.ArrayLayout(row_operand_layout(cfg), cfg.rows)
        fields = {("tables" if k == "acts" else k): (rows if k == "acts" else v)
                  for k, v in fields.items()}
    return data.StructLayout(fields)


@read_only("config")
class RowFrontEnd(wiring.Component):
    """Aligns each row's activations for the PEs; the weight side rides alongside.

    FP16/BF16 activations: per row an :class:`~hdl.arith.act_block.ActBlockAligner` that aligns
    the row's ``L`` activations to the anchor ``max(gexp, base)``
    (:func:`golden.gemm.act_mantissas`), giving the ``L`` block mantissas, and the row shift
    ``max(gexp, base) - base``. No exponent max tree: the pre-pass's ``gexp`` is the largest
    effective exponent of the weight group, so the anchor is the block exponent. A step that
    ends a tile (``out_last``) pushes the rows' floors ``base`` to the drain (``base_w_en``),
    and is taken only while the drain has room for them (``base_w_rdy``). INT8 activations pass
    through one register stage. The weight fields (codes, selectors, scales, group and tile
    ends) are delayed to match.

    For a PE kind whose row operand is ``"tables"`` (the LUT-table PE,
    :attr:`golden.pe_kind.PEKind.row_operand`) a :class:`~hdl.pe.lut_table.LutTableBuilder`
    per row follows: the row's ``L`` mantissas become its ``L / g`` half tables and the step's
    correction (:func:`golden.pe_lut.table_builder`), built once per row for its ``C`` PEs.
    The builders run in lock step (the same stream handshake), the other fields beside them.
    With zero points (``config.zero_points``) a :class:`RowGroupSums` follows instead: per row
    ``-sum_k a_k`` over the group, for the PEs' zero-point lane.

    Latency: :attr:`golden.gemm.ArrayConfig.front_end_latency` cycles (the aligner's, or 1,
    plus the table builders' :func:`golden.pe_lut.builder_latency`, or the group sums' 1).
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
        if cfg.kind.row_operand == "tables":
            mid = stream.Signature(_mantissa_layout(cfg)).create(path=("mant",))
            self._mantissas(m, mid)
            self._tables(m, mid)
        elif cfg.zero_points:
            m.submodules.group_sums = sums = RowGroupSums(cfg)
            self._mantissas(m, sums.i_stream)
            wiring.connect(m, sums.o_stream, wiring.flipped(self.o_stream))
        else:
            self._mantissas(m, self.o_stream)
        return m

    def _tables(self, m: Module, mid) -> None:
        """Per row a table builder on the mantissas ``mid``, the other fields delayed alike,
        to ``o_stream``."""
        cfg = self._config
        out = self.o_stream
        builders = []
        for r in range(cfg.rows):
            builder = LutTableBuilder(**array_lut_params(cfg))
            m.submodules[f"tables{r}"] = builder
            builders.append(builder)
            # Equal inputs and readies: every builder's valid chain is the first one's.
            m.d.comb += [builder.i_stream.valid.eq(mid.valid),
                         builder.i_stream.payload.acts.eq(mid.payload.acts[r]),
                         builder.o_stream.ready.eq(out.ready),
                         out.payload.tables[r].eq(builder.o_stream.payload)]
        m.d.comb += [mid.ready.eq(builders[0].i_stream.ready),
                     out.valid.eq(builders[0].o_stream.valid)]
        # The builders' stage enable (hdl.common.pipeline_enable) moves the side fields.
        en = Signal(name="tables_en")
        m.d.comb += en.eq(out.ready | ~out.valid)
        for name in [n for n, _ in _mantissa_layout(cfg) if n != "acts"]:
            value = Value.cast(getattr(mid.payload, name))
            for k in range(builders[0].latency):
                reg = Signal(len(value), name=f"tb{k}_{name}", reset_less=True)
                with m.If(en):
                    m.d.sync += reg.eq(value)
                value = reg
            m.d.comb += Value.cast(getattr(out.payload, name)).eq(value)

    def _mantissas(self, m: Module, out) -> None:
        """The block aligners (or the INT8 register) and the side fields, to ``out``."""
        cfg = self._config
        L, A, X = cfg.lanes, cfg.act_width, cfg.act_exp_bits
        fp = cfg.act_format != "int8"
        payload = self.i_stream.payload
        en = Signal()  # the stages move when the consumer takes or the output is empty
        m.d.comb += en.eq(out.ready | ~out.valid)

        side_in = {"codes": payload.codes, "sel": payload.sel,
                   "group_last": payload.group_last, "out_last": payload.out_last}
        if cfg.scale_bits:
            side_in["scale"] = payload.scale
        if cfg.zero_points:
            side_in["zp"] = payload.zp
        if fp:
            aligners, shifts = self._aligners(m, out)
            if X:
                side_in["shift"] = Cat(*shifts)
            stages = aligners[0].latency
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
            m.d.comb += [out.valid.eq(aligners[0].o_stream.valid),
                         Cat(out.payload.acts).eq(Cat(*(Cat(al.o_stream.payload.mant)[:L * A]
                                                        for al in aligners)))]
        else:
            m.d.comb += out.valid.eq(valid_chain)
        rows = cfg.kind.row_latency(cfg) + cfg.zero_points
        if stages + rows != cfg.front_end_latency:
            raise AssertionError(f"row front end latency {stages} + {rows} is not golden's "
                                 f"front end latency {cfg.front_end_latency}")

    def _aligners(self, m: Module, out):
        """Per row the block aligner (to the anchor) and the shift; the stream's ready and the
        floors' push to the drain."""
        cfg = self._config
        R, L, X = cfg.rows, cfg.lanes, cfg.act_exp_bits
        E = bfp.block_exp_width(cfg.act_format)
        payload = self.i_stream.payload
        in_ok = self.base_w_rdy
        aligners, shifts = [], []
        for r in range(R):
            aligner = ActBlockAligner(L, cfg.act_format, cfg.mant_width, cfg.rounding)
            m.submodules[f"align{r}"] = aligner
            aligners.append(aligner)
            gexp, base = payload.gexp[r], payload.base[r]
            anchor = Signal(E, name=f"anchor{r}")
            m.d.comb += anchor.eq(Mux(gexp > base, gexp, base))
            shift = Signal(max(X, 1), name=f"shift{r}")
            m.d.comb += shift.eq(anchor - base)
            shifts.append(shift[:X])
            m.d.comb += [
                aligner.i_stream.valid.eq(self.i_stream.valid & in_ok),
                aligner.i_stream.payload.data.eq(payload.acts[r]),
                aligner.i_stream.payload.exp.eq(anchor),
                aligner.o_stream.ready.eq(out.ready),
            ]
        m.d.comb += [self.i_stream.ready.eq(aligners[0].i_stream.ready & in_ok),
                     self.base_w_en.eq(self.i_stream.valid & self.i_stream.ready
                                       & payload.out_last),
                     self.base_w_data.eq(payload.base)]
        return aligners, shifts


@read_only("config")
class RowGroupSums(wiring.Component):
    """Per row the negated sum of its activations over each weight group: the activation of the
    PEs' zero-point lane (MixPE's correction, :mod:`golden.pe`), computed once per row and
    shared by its ``C`` PEs.

    For every step, per row ``r``::

        total_r  = run_r + sum_l a[r, l]          (run_r: the group's earlier steps)
        rowsum_r = -total_r                       (registered with the step)
        run_r    = group_last ? 0 : total_r

    so ``rowsum`` of a group's last step is ``-sum_{k in g} a[r, k]`` (the PEs read it only
    then: the zero point's terms are zero in the other steps). Width
    :attr:`golden.pe.PEConfig.rowsum_width` ``= A + ceil(log2 G) + 1``: ``|total| <= G
    2**(A - 1)``, and ``-total`` needs the bit above. The other fields pass through the same
    register.

    Latency 1 cycle; throughput one step per cycle (a register stage with the stream
    handshake: it moves when the consumer takes or the output is empty).

    Parameters
    ----------
    config : golden.gemm.ArrayConfig
        With ``zero_points``.

    Members
    -------
    i_stream : In(stream.Signature(mantissa layout))
        A step after the aligners: the ``R x L`` mantissas and the weight-side fields.
    o_stream : Out(stream.Signature(front_layout(config)))
        The step with ``rowsum`` per row.
    """

    def __init__(self, config: ArrayConfig):
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig, not {config!r}")
        if not config.zero_points:
            raise ValueError("RowGroupSums is the row edge of an array built with zero_points")
        self._config = config
        super().__init__({"i_stream": In(stream.Signature(_mantissa_layout(config))),
                          "o_stream": Out(stream.Signature(front_layout(config)))})

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        i, o = self.i_stream, self.o_stream
        width = cfg.pe.rowsum_width
        en = Signal()
        m.d.comb += [en.eq(o.ready | ~o.valid), i.ready.eq(en)]
        take = en & i.valid
        for r in range(cfg.rows):
            run = Signal(signed(width), name=f"run{r}")
            total = Signal(signed(width), name=f"total{r}")
            lanes = [i.payload.acts[r][lane] for lane in range(cfg.lanes)]
            m.d.comb += total.eq(run + sum(lanes[1:], lanes[0]))
            with m.If(take):
                m.d.sync += [o.payload.rowsum[r].eq(-total),
                             run.eq(Mux(i.payload.group_last, 0, total))]
        with m.If(en):
            m.d.sync += o.valid.eq(i.valid)
            for name, _ in _mantissa_layout(cfg):
                m.d.sync += Value.cast(getattr(o.payload, name)).eq(
                    Value.cast(getattr(i.payload, name)))
        return m

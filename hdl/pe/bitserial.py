"""Bit-serial mixed-datatype PE: one weight term per lane per cycle, group dequantization.

Bit-exact twin: :mod:`golden.pe` (:func:`golden.pe.pe_reference` for the values,
:class:`golden.pe.BitSerialPEModel` for the cycle timing; payload layout and width formulas in
its module docstring). Weight terms come from :class:`hdl.arith.term_encoder.TermEncoder`
through a serializer: per cycle, term ``t`` of ``L`` weights (:mod:`golden.terms`).

Where the LUTs go, and what keeps them few
-------------------------------------------
* Lane preparation, two LUT4 levels per bit with a pipeline register between them:
  ``u = nz ? a << (e & 2) : 0``, then ``x = (e & 1 ? u << 1 : u) ^ -(s & nz)`` (two-term
  path, ``X = 2``; the first step takes every exponent bit but bit 0). The register matters:
  without it ABC9 (``synth_ecp5 -abc9`` maps for depth) merges both levels into one 8-input
  function per bit through PFUMX/L6MUX21, 4-8 LUT4s instead of 2 (measured: 762 instead of
  422 LUT4 at 8 lanes). The negation is *not* done per lane: ``-y = ~y + 1``, and the ``+1`` of
  every negative lane is a carry-in of one of the ``L - 1`` adders of the tree; the last one
  is folded into the group accumulator's adder (carry-in plus low fill bits, see
  :meth:`BitSerialPE._bsig_shift`).
* A balanced adder tree with a pipeline register after every ``levels_per_stage`` levels
  (throughput stays one payload per cycle; only the latency grows).
* One group accumulator; the bit-serial dequantizer (:class:`GroupDequantizer`) works LSB
  first on a shift register, so it needs a single wide adder (into the output accumulator,
  whose clock enable is the scale bit) and no multiplexer in front of it.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.pe import PEConfig
from bitmod.hdl.arith.term_encoder import term_layout

from ..common import keep_apart, read_only

__all__ = ["BitSerialPE", "GroupDequantizer", "hand_off_group"]


class GroupDequantizer(wiring.Component):
    """Bit-serial group dequantization into a wide output accumulator.

    Computes ``acc += (gsum * scale) << exp`` per loaded group and emits ``acc`` (then
    clears it) after a group loaded with ``last``. The multiplication is serial, LSB first,
    one scale bit per cycle over ``D = max(scale_bits, 1)`` cycles::

        gs = gsum << exp                  (at load)
        step i = 0 .. D-1:   if scale[i]: acc += gs;   gs <<= 1

    (``scale_bits == 0``: one step, factor 1). The sum is the same as the MSB-first
    ``m = (m << 1) + scale_bit * gsum`` of BitMoD (docs/papers.md); LSB first needs no extra
    accumulator:
    ``gs`` is a shift register and ``scale[i]`` the clock enable of ``acc``. After the last
    step of a ``last`` group one flush cycle copies ``acc`` into the output register (when it
    is free); ``acc`` is cleared in the next cycle, in which no step runs, by a flip-flop
    (``clearing``, 1 in reset) rather than by logic.

    Latency ``D + 2`` cycles from the load to the output being valid. Throughput: a load is
    accepted when idle, or in the last step cycle of a group without ``last``; so groups
    ``D`` cycles apart (``D + 2`` after a ``last`` group) never wait.

    ``paced``: the sender keeps the loads that far apart (the array's column tops), so a
    valid input loads whatever ``i_stream.ready`` says: the load, and the step counter's
    enable behind it, are one LUT of ``valid`` and the counter, not the whole ready decode
    (the ULX3S 10 x 10 x 8 build at 82 MHz, seed 2: the counter → five LUTs → its own
    enable, 12.7 ns). ``i_stream.ready`` still tells whether the load was in time; a load
    while it is low overwrites the group in progress (the array's ``overrun`` reports it).

    Widths: ``gs`` has ``min(gsum_width + 2**exp_bits - 1 + D - 1, acc_width)`` bits (the
    accumulation is exact modulo ``2**acc_width`` and the caller sizes ``acc_width`` for the
    true sum).

    Parameters
    ----------
    gsum_width, scale_bits, exp_bits, acc_width : int
    paced : bool
        Load every valid input (above); default False: load only when ready.
    step_flags : bool
        ``remaining != 0`` and ``remaining == 1`` as flip-flops of their own (``stepping``,
        ``at_one``), written with ``remaining`` and equal to those compares in every cycle,
        so the enables of ``remaining``, ``gs`` and ``acc`` and the ready are a LUT of a flag
        and the load, not of the counter's decode (the ULX3S 7 x 6 x 16 build at 100 MHz,
        seed 1: ``remaining`` -> four LUTs across 50 columns -> its own enable, 10.5 ns).
        Default False: the compares, as before.

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"gsum": signed(gsum_width),
        "scale": unsigned(scale_bits), "exp": unsigned(exp_bits), "last": 1})))
    o_stream : Out(stream.Signature(StructLayout({"acc": signed(acc_width)})))
    """

    def __init__(self, gsum_width: int, scale_bits: int, exp_bits: int, acc_width: int, *,
                 paced: bool = False, step_flags: bool = False):
        for name, value in (("paced", paced), ("step_flags", step_flags)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        self._paced = paced
        self._step_flags = step_flags
        self._gsum_width = gsum_width
        self._scale_bits = scale_bits
        self._exp_bits = exp_bits
        self._acc_width = acc_width
        self._steps = max(scale_bits, 1)
        self._gs_width = min(gsum_width + (1 << exp_bits) - 1 + self._steps - 1, acc_width)
        super().__init__({
            "i_stream": In(stream.Signature(data.StructLayout({
                "gsum": signed(gsum_width), "scale": unsigned(scale_bits),
                "exp": unsigned(exp_bits), "last": 1}))),
            "o_stream": Out(stream.Signature(data.StructLayout({"acc": signed(acc_width)}))),
        })

    steps = property(lambda self: self._steps)
    paced = property(lambda self: self._paced,
                     doc="Every valid input loads (the sender spaces them; read-only).")

    @property
    def latency(self) -> int:
        return self._steps + 2

    def elaborate(self, platform):
        m = Module()
        d = self._steps
        load = self.i_stream.payload
        # Kept apart (hdl.common.KEEP_APART): in an array these follow the same group ends in
        # every PE of an anti-diagonal.
        remaining = keep_apart(Signal(range(d + 1), name="remaining"))
        flush_pending = keep_apart(Signal(name="flush_pending"))
        cur_last = keep_apart(Signal(name="cur_last"))
        # ``acc`` is cleared the cycle after its flush, in which no step runs (a load is taken
        # in that cycle at the earliest), by this register of its own: the clear is an ECP5
        # flip-flop's LSR, and from logic (the flush condition with the reset) its LUT was
        # placed 35-70 tiles from the PE in four ULX3S 10 x 10 x 8 builds (up to 12.9 ns).
        # ``acc`` has no reset of its own (it would put a LUT of the reset and ``clearing``
        # back in front of the LSR): ``clearing`` is 1 in reset, so ``acc`` is 0 before the
        # first step.
        clearing = keep_apart(Signal(init=1, name="clearing"))
        keep_apart(self.o_stream.valid)
        gs = Signal(signed(self._gs_width))
        # Scale bits stored reversed and read by the step counter: a small D:1 multiplexer
        # instead of a D-bit shift register with a load multiplexer.
        scale_rev = Signal(self._scale_bits + 1)  # bit r is read when ``remaining == r``
        acc = Signal(signed(self._acc_width), reset_less=True)
        bit = scale_rev.bit_select(remaining, 1) if self._scale_bits else Const(1)
        stepping, idle, at_one = remaining != 0, remaining == 0, remaining == 1
        if self._step_flags:
            stepping = keep_apart(Signal(name="stepping"))
            at_one = keep_apart(Signal(name="at_one"))
            idle = ~stepping

        with m.If(stepping):
            m.d.sync += [remaining.eq(remaining - 1), gs.eq(gs << 1)]
            if self._step_flags:
                m.d.sync += [stepping.eq(~at_one), at_one.eq(remaining == 2)]
            with m.If(bit):
                m.d.sync += acc.eq(acc + gs)

        out_free = ~self.o_stream.valid | self.o_stream.ready
        flush = idle & flush_pending & out_free
        # Set at a ``last`` group's last step, cleared by its flush, written as data: a
        # constant under a condition becomes the LSR again (its own clear was the path of a
        # ULX3S 82 MHz build, placed 64 tiles away).
        m.d.sync += [clearing.eq(flush),
                     flush_pending.eq((at_one & cur_last) | (flush_pending & ~flush))]
        with m.If(clearing):
            m.d.sync += acc.eq(0)
        with m.If(flush):
            m.d.sync += [self.o_stream.payload.acc.eq(acc), self.o_stream.valid.eq(1)]
        with m.Elif(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)

        # Not dependent on o_stream.ready: keeps the PE's stall path short.
        ready = (idle & ~flush_pending) | (at_one & ~cur_last)
        m.d.comb += self.i_stream.ready.eq(ready)
        with m.If(self.i_stream.valid if self._paced else self.i_stream.valid & ready):
            m.d.sync += [gs.eq(load.gsum << load.exp), remaining.eq(d), cur_last.eq(load.last)]
            if self._step_flags:
                m.d.sync += [stepping.eq(1), at_one.eq(d == 1)]
            if self._scale_bits:
                m.d.sync += scale_rev.eq(Cat(Const(0, 1), *reversed(list(load.scale))))
        return m


def hand_off_group(m: Module, dq: GroupDequantizer, control: dict, gsum, adv) -> None:
    """Offer a finished group sum to ``dq`` (the PEs that dequantize with a
    :class:`GroupDequantizer`): its input is valid on a ``group_last`` payload, with the
    payload's ``scale``, ``exp`` and ``out_last``; ``adv`` (the PE's input advance) falls only
    while such a group waits for the dequantizer."""
    group_end = control["valid"] & control["group_last"]
    m.d.comb += [
        dq.i_stream.valid.eq(group_end),
        dq.i_stream.payload.gsum.eq(gsum),
        dq.i_stream.payload.scale.eq(control["scale"]),
        dq.i_stream.payload.exp.eq(control["exp"]),
        dq.i_stream.payload.last.eq(control["out_last"]),
        adv.eq(~group_end | dq.i_stream.ready),
    ]


def _register_controls(register, control: dict, stage: str) -> dict:
    """A stage's group controls: ``valid`` in a register of its own (it has a reset), the
    others (``group_last``, ``out_last``, scale, exponent, bsig index) side by side in one. The
    same flip-flops as a register each; Verilator updates one variable instead of five every
    simulated cycle."""
    values = {k: Value.cast(v) for k, v in control.items() if k != "valid"}
    packed = register(Cat(*values.values()), f"{stage}_controls")
    out, at = {"valid": register(control["valid"], f"{stage}_valid")}, 0
    for k, value in values.items():
        field = packed[at:at + len(value)]
        out[k] = field.as_signed() if value.shape().signed else field  # read back as written
        at += len(value)
    return out


def _ceil_log2(n: int) -> int:
    return (n - 1).bit_length()


@read_only("in_layout", "out_layout")
class BitSerialPE(wiring.Component):
    """Bit-serial mixed-datatype PE: ``L`` weight terms x ``L`` activations per cycle.

    Computes one output (:func:`golden.pe.pe_reference`)::

        acc = sum_g ((sum_{k in g} a_k * level_k) * scale_g) << exp_g

    from a stream of per-cycle payloads (one term of each of ``L`` weights; term-major within
    a weight-step, :func:`golden.pe.pe_cycles`). Per cycle::

        v_l  = (-1)**s_l * nz_l * (a_l << e_l)
        gacc += (sum_l v_l) << bsig[t]

    On ``group_last`` the complete ``gacc`` goes to the :class:`GroupDequantizer` and
    ``gacc`` restarts at 0 in the same cycle; on ``out_last`` the output accumulator is
    emitted on ``o_stream`` once its dequantization ends.

    Datapath: lane ``l`` forms ``x_l = nz ? (a << e) ^ -s : 0`` (``X`` shift-multiplexer
    levels, the sign as an XOR) and the tree adds ``sum x_l`` plus the ``s_l`` as carry-ins;
    the bsig shift happens on the tree output. Widths (``w = A + 2**X - 1`` per lane): a
    subtree of ``n`` lanes with its ``n - 1`` carry-ins fits ``w + ceil(log2 n)`` bits (its
    values lie in ``[-n 2**(w-1), n 2**(w-1) - 1]``); every node is computed modulo
    ``2**gacc_width``, exact because the group sum fits (:mod:`golden.pe` widths:
    ``gacc_width = bit_length(G * S_max * 2**(A-1)) + 1``, ``acc_width =
    bit_length(max_groups * G * S_max * 2**(A-1) * (2**scale_bits - 1) *
    2**(2**exp_bits - 1)) + 1``).

    Zero points (``config.zero_points``, :mod:`golden.pe`): lane ``L`` of the tree is the
    group's correction, ``zterm`` (a term of the zero point ``z``, zero outside the group's
    last step) times ``rowsum`` (``-sum_k a_k``, ``rowsum_width`` bits): the group sum becomes
    ``sum_k a_k * c_k - z * sum_k a_k``, exact, with the same lane logic on a wider value. As
    a tree node it counts as ``2**(rowsum_width - A)`` lanes, so the width rule above holds.

    Latency ``stages + max(scale_bits, 1) + 2`` cycles from the ``out_last`` input to the
    output, ``stages = 1 + max(1, ceil(ceil(log2 L') / levels_per_stage))`` (``L' = L``, or
    ``L + 1`` with the zero-point lane; the first lane step, then the adder tree with the bsig
    shift in its last stage). Throughput one
    payload per cycle; the PE stalls (``i_stream.ready`` low) only when a group ends before
    the previous group's dequantization can take it: groups of fewer than ``D`` cycles
    (``D + 2`` after an ``out_last`` group), ``D = max(scale_bits, 1)``, or an ``o_stream``
    not taken before the next output completes.

    Parameters
    ----------
    config : golden.pe.PEConfig
        Lanes ``L``, activation width ``A``, group size ``G``, formats, scale and exponent
        bits, groups per output, accumulator width, adder-tree levels per stage (validated by
        the config; the widths are derived there).
    paced : bool
        The sender keeps group ends far enough apart (the array's column tops,
        :class:`~hdl.array.serializer.StepSerializer`): the pipeline registers load every
        cycle, with no enable, so no stall net reaches them. ``i_stream.ready`` still says
        whether a payload could be taken (the array checks it never refuses one); a group
        end offered while it is low is lost or overwrites the group being dequantized (the
        dequantizer is paced too). Default False: the PE stalls as described above.
    step_flags : bool
        ``step_flags`` of its :class:`GroupDequantizer` (the array's PEs with
        column-top stages: :meth:`for_array`); default False.

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"terms": ArrayLayout(term_layout(X), L),
        "t": range(T), "acts": ArrayLayout(signed(A), L), "group_last": 1, "out_last": 1,
        "scale": unsigned(scale_bits), "exp": unsigned(exp_bits)})))
        With zero points also ``"zterm": term_layout(X)`` and ``"rowsum":
        signed(rowsum_width)``.
    o_stream : Out(stream.Signature(StructLayout({"acc": signed(acc_width)})))
    """

    def __init__(self, config: PEConfig | None = None, *, paced: bool = False,
                 step_flags: bool = False):
        self._cfg = cfg = PEConfig() if config is None else config
        if not isinstance(cfg, PEConfig):
            raise TypeError(f"config must be a PEConfig, not {cfg!r}")
        for name, value in (("paced", paced), ("step_flags", step_flags)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        self._paced = paced
        self._step_flags = step_flags
        geo = cfg.geometry
        self._levels = _ceil_log2(cfg.tree_lanes)
        self._lane_width = cfg.act_width + (1 << geo.exp_bits) - 1
        fields = {
            "terms": data.ArrayLayout(term_layout(geo.exp_bits), cfg.lanes),
            "t": range(geo.terms),
            "acts": data.ArrayLayout(signed(cfg.act_width), cfg.lanes),
            "group_last": 1,
            "out_last": 1,
            "scale": unsigned(cfg.scale_bits),
            "exp": unsigned(cfg.exp_bits),
        }
        if cfg.zero_points:
            fields["zterm"] = term_layout(geo.exp_bits)
            fields["rowsum"] = signed(cfg.rowsum_width)
        self._in_layout = data.StructLayout(fields)
        self._out_layout = data.StructLayout({"acc": signed(cfg.acc_width)})
        super().__init__({"i_stream": In(stream.Signature(self._in_layout)),
                          "o_stream": Out(stream.Signature(self._out_layout))})

    @classmethod
    def for_array(cls, config) -> BitSerialPE:
        """The PE every position of an array built with ``config`` (a
        :class:`golden.gemm.ArrayConfig` of kind ``"bitserial"``) holds: ``config.pe``,
        ``paced`` (the column tops space the group ends), and with column-top stages (an
        array spread across a large chip) the dequantizer's ``step_flags``."""
        return cls(config.pe, paced=True, step_flags=config.serializer_stages > 0)

    paced = property(lambda self: self._paced,
                     doc="The pipeline loads every cycle (the sender paces group ends).")

    config = property(lambda self: self._cfg, doc="The :class:`golden.pe.PEConfig`.")
    lane_width = property(lambda self: self._lane_width,
                          doc="``A + 2**X - 1``: width of a prepared lane value.")

    @property
    def latency(self) -> int:
        """Cycles from accepting an ``out_last`` input to its output being valid
        (:attr:`golden.pe.PEConfig.latency`)."""
        return self._cfg.latency

    def _lane_pre(self, m: Module, index: int, term, act):
        """First lane step: ``u = nz ? a << (e & ~1) : 0``; also ``neg = s & nz``.

        One LUT4 per bit for ``X <= 2`` (``a[k]``, ``a[k-2]``, ``e[1]``, ``nz``). ``act`` is
        ``A`` bits wide (the zero-point lane's ``rowsum_width``); the lane is ``2**X - 1``
        bits wider.
        """
        width = len(act) + (1 << self._cfg.geometry.exp_bits) - 1
        neg = Signal(name=f"lane{index}_neg")
        m.d.comb += neg.eq(term.sign & term.nonzero)
        value = Mux(term.nonzero, act, 0)
        for j in reversed(range(1, self._cfg.geometry.exp_bits)):
            value = Mux(term.exp[j], value << (1 << j), value)
        u = Signal(signed(width - 1), name=f"lane{index}_u")
        m.d.comb += u.eq(value)
        return u, term.exp[0], neg

    def _lane_post(self, m: Module, index: int, u, e0, neg):
        """Second lane step: ``x = (e0 ? u << 1 : u) ^ -neg``, one LUT4 per bit.

        ``x + neg = (-1)**s * nz * (a << e)``; the ``+ neg`` is an adder's carry-in.
        """
        x = Signal(signed(len(u) + 1), name=f"lane{index}_x")
        value = Mux(e0, u << 1, u)
        m.d.comb += x.eq(Mux(neg, ~value, value))
        return x

    def _bsig_shift(self, m: Module, tree, carry, bsig_sel):
        """``(tree << b) | (carry ? 2**b - 1 : 0)``: plus ``carry`` as the accumulator's
        carry-in this is ``(tree + carry) << b``, the last lane's pending ``+1``."""
        bsig = self._cfg.geometry.bsig
        width = min(len(tree) + max(bsig), self._cfg.gacc_width)
        shifted = Signal(signed(width), name="shifted")
        values = sorted(set(bsig))
        if len(values) == 1:
            b = values[0]
            m.d.comb += shifted.eq(Cat(carry.replicate(b), tree).as_signed())
        else:
            with m.Switch(bsig_sel):
                for i, b in enumerate(values):
                    with m.Case(i):
                        m.d.comb += shifted.eq(Cat(carry.replicate(b), tree).as_signed())
        return shifted

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        geo = cfg.geometry
        payload = self.i_stream.payload
        adv = Signal()  # the whole pipeline advances together; low only on a dequant stall
        # The registers' enable: ``adv``, or none when the sender paces the group ends.
        load = Const(1) if self._paced else adv

        # Index of the bsig of term t among the distinct bsig values (looked up once).
        values = sorted(set(geo.bsig))
        bsig_sel = Signal(range(len(values)))
        if len(values) > 1:
            with m.Switch(payload.t):
                for t, b in enumerate(geo.bsig):
                    with m.Case(t):
                        m.d.comb += bsig_sel.eq(values.index(b))

        def register(sig, name):
            # Datapath registers need no reset (only ``valid`` says what they hold); that keeps
            # reset multiplexers out of the logic and out of every simulated cycle.
            reg = Signal.like(sig, name=name, reset_less=not name.endswith("_valid"))
            if self._paced and ("_valid" in name or "_controls" in name):
                keep_apart(reg)  # equal in every PE of an anti-diagonal (hdl.common)
            with m.If(load):
                m.d.sync += reg.eq(sig)
            return reg

        # Stage 0: first lane step. The register keeps the lane logic at two LUT4 levels
        # (module docstring: ABC9 would otherwise merge them into wide functions).
        control = {"valid": self.i_stream.valid, "group_last": payload.group_last,
                   "out_last": payload.out_last, "scale": payload.scale, "exp": payload.exp,
                   "bsig_sel": bsig_sel}
        lanes = [(payload.terms[i], payload.acts[i]) for i in range(cfg.lanes)]
        if cfg.zero_points:  # the group's correction: a lane of a wider activation
            lanes.append((payload.zterm, payload.rowsum))
        pre = [self._lane_pre(m, i, term, act) for i, (term, act) in enumerate(lanes)]
        pre = [tuple(register(v, f"s0_lane{i}_{k}") for k, v in enumerate(p))
               for i, p in enumerate(pre)]
        control = _register_controls(register, control, "s0")
        # A node counts the lanes its values are bounded by (_tree_level's width rule): the
        # zero-point lane is 2**(rowsum_width - A) lanes wide.
        counts = [1] * cfg.lanes + ([1 << (cfg.rowsum_width - cfg.act_width)]
                                    if cfg.zero_points else [])
        nodes = [(self._lane_post(m, i, *p), n) for i, (p, n) in enumerate(zip(pre, counts,
                                                                              strict=True))]
        carries = [neg for _, _, neg in pre]

        level = 0
        for stage in range(1, cfg.stages):
            last_stage = stage == cfg.stages - 1
            for _ in range(cfg.levels_per_stage if self._levels else 0):
                if len(nodes) == 1:
                    break
                level += 1
                nodes = self._tree_level(m, nodes, carries, level)
            if last_stage:
                # The bsig shift rides in the last stage, off the accumulator's carry chain.
                (tree, _), = nodes
                nodes = [(self._bsig_shift(m, tree, carries[0], control["bsig_sel"]), 0)]
            nodes = [(register(v, f"s{stage}_n{i}"), n) for i, (v, n) in enumerate(nodes)]
            carries = [register(c, f"s{stage}_c{i}") for i, c in enumerate(carries)]
            control = _register_controls(register, control, f"s{stage}")
        (shifted, _), = nodes
        (carry,) = carries

        # Group accumulator and hand-off to the dequantizer.
        m.submodules.dequant = dq = GroupDequantizer(cfg.gacc_width, cfg.scale_bits,
                                                     cfg.exp_bits, cfg.acc_width,
                                                     paced=self._paced,
                                                     step_flags=self._step_flags)
        # Golden's latency (PEConfig.latency = stages + D + 2) must describe what was built:
        # every adder-tree level placed within the stages, and the dequantizer's D + 2.
        if level != self._levels or cfg.stages + dq.latency != cfg.latency:
            raise AssertionError(f"the PE pipeline built ({level} of {self._levels} tree "
                                 f"levels, dequantizer {dq.latency}) is not golden's latency "
                                 f"{cfg.latency}")
        gacc = Signal(signed(cfg.gacc_width))
        gacc_next = Signal(signed(cfg.gacc_width))
        m.d.comb += gacc_next.eq(gacc + shifted + carry)
        hand_off_group(m, dq, control, gacc_next, adv)
        m.d.comb += self.i_stream.ready.eq(adv)
        with m.If(load & control["valid"]):
            m.d.sync += gacc.eq(Mux(control["group_last"], 0, gacc_next))
        wiring.connect(m, wiring.flipped(self.o_stream), dq.o_stream)
        return m

    def _tree_level(self, m: Module, nodes, carries, level):
        """One adder level: pairs of nodes, each adder taking one pending carry-in."""
        out = []
        for i in range(0, len(nodes) - 1, 2):
            (a, na), (b, nb) = nodes[i], nodes[i + 1]
            n = na + nb
            width = min(self._lane_width + _ceil_log2(n), self._cfg.gacc_width)
            s = Signal(signed(width), name=f"l{level}_sum{i // 2}")
            m.d.comb += s.eq(a + b + carries.pop())
            out.append((s, n))
        if len(nodes) % 2:
            out.append(nodes[-1])
        return out

"""Weight term encoder: code + group selector -> signed power-of-two terms (docs/papers.md).

Bit-exact twin: :func:`golden.terms.decompose` (its module docstring defines the representation,
the code units, the four decomposition paths and the payload and register layouts). The logic
here is written from the format *definitions* (field widths, bias, the flint4 level table, the
K-hot magnitude list): Booth digit logic, a leading-one split of the magnitude, a
per-significand-bit split and, for K-hot codes, a case table from the magnitude index to the
terms whose non-adjacent forms are worked out here (a formula of their own), never a table of
golden's decomposition.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from amaranth import Assert, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import formats
from bitmod.golden.checks import check_bool

from ..common import pipeline_enable, read_only

__all__ = ["TermEncoder", "TermEncoderCore", "TermEncoderProof"]

MAX_CODE_BITS = 8
MAX_FORMATS = 4
SELECTOR_BITS = 2
REGISTER_ENTRIES = 1 << SELECTOR_BITS
# The two-term window: term 1 covers magnitude bits 1..4 (bsig 1), term 2 bits 0..3 (bsig 0).
WINDOW_EXP_BITS = 2
MAGNITUDE_BITS = 5
TWO_TERM_BSIG = (1, 0)


def term_layout(exp_bits: int) -> data.StructLayout:
    """One term: ``(-1)**sign * nonzero * 2**(exp + bsig)``."""
    return data.StructLayout({"sign": 1, "exp": unsigned(exp_bits), "nonzero": 1})


ENTRY_LAYOUT = data.ArrayLayout(term_layout(WINDOW_EXP_BITS), 2)
REGISTER_LAYOUT = data.ArrayLayout(ENTRY_LAYOUT, REGISTER_ENTRIES)


@dataclass(frozen=True)
class _Plan:
    """What the encoder builds for a format list (all derived from format definitions)."""

    formats: tuple[str, ...]
    path: str
    code_bits: int
    terms: int
    exp_bits: int
    bsig: tuple[int, ...]
    has_register: bool = False
    signed: bool = True
    exp_field: int = 0
    man_field: int = 0
    subnormals: bool = True
    specials: str = "finite"
    magnitudes: tuple[int, ...] | None = None  # flint4, K-hot: magnitude of each index


def _window_expressible(value: float) -> bool:
    term1 = [0] + [s << (e + 1) for e in range(4) for s in (1, -1)]
    term2 = [0] + [s << e for e in range(4) for s in (1, -1)]
    return any(a + b == value for a, b in itertools.product(term1, term2))


def _two_term_base(fmt: formats.Format) -> str | None:
    inner = fmt.base_format if isinstance(fmt, formats.ExtendedFormat) else fmt
    return next((b for b in ("fp3", "fp4", "flint4") if inner == formats.get(b)), None)


def naf_terms(magnitude: int) -> list[tuple[int, int]]:
    """``(position, negative)`` of the nonzero digits of the non-adjacent form of a magnitude,
    largest position first.

    Bit-mask formula: with ``h = x >> 1`` and ``c = h ^ (x + h)``, the +1 digits are the bits of
    ``(x + h) & c`` and the -1 digits those of ``h & c`` (``x = plus - minus``). Checked here
    against ``x`` and the non-adjacency of the digits.
    """
    half = magnitude >> 1
    three_halves = magnitude + half
    changed = half ^ three_halves
    plus, minus = three_halves & changed, half & changed
    digits = plus | minus
    if plus - minus != magnitude or plus & minus or digits & (digits >> 1):
        raise AssertionError(f"non-adjacent form of {magnitude} is wrong")
    return [(i, (minus >> i) & 1) for i in reversed(range(digits.bit_length()))
            if (digits >> i) & 1]


def _max_finite_exp_field(fmt: formats.MiniFloat) -> int:
    top = (1 << fmt.exp_bits) - 1
    if fmt.specials == "ieee" or (fmt.specials == "fn" and fmt.man_bits == 0):
        return top - 1
    return top


def _single_plan(name: str, fmt: formats.Format) -> _Plan:
    if fmt.bits > MAX_CODE_BITS:
        raise ValueError(f"formats: {name!r} has {fmt.bits}-bit codes; the term encoder takes "
                         f"at most {MAX_CODE_BITS}")
    if isinstance(fmt, (formats.IntFormat, formats.FixedPoint)):
        terms = -(-(fmt.bits + (0 if fmt.signed else 1)) // 2)
        return _Plan((fmt.name,), "booth", fmt.bits, terms, 1,
                     tuple(2 * i for i in range(terms)), signed=fmt.signed)
    base_name = _two_term_base(fmt)
    if base_name is not None:
        if isinstance(fmt, formats.ExtendedFormat):
            if fmt.special_code != 1 << (fmt.bits - 1):
                raise ValueError(f"formats: {name!r} puts its special value on code "
                                 f"{fmt.special_code}; the encoder reads the register for the "
                                 "sign-only code only")
            if not _window_expressible(fmt.special_value):
                raise ValueError(f"formats: {name!r} has special value {fmt.special_value}, "
                                 "which is not two signed power-of-two terms in the register "
                                 "window")
        base = formats.get(base_name)
        half = 1 << (base.bits - 1)
        mags = np.abs(base.decode(np.arange(half)))
        if not all(v.is_integer() and v < 1 << MAGNITUDE_BITS and bin(int(v)).count("1") <= 2
                   for v in mags):
            raise ValueError(f"formats: {name!r} has levels outside the two-term window")
        common = {"has_register": isinstance(fmt, formats.ExtendedFormat)}
        if isinstance(base, formats.MiniFloat):
            common |= {"exp_field": base.exp_bits, "man_field": base.man_bits}
        else:
            common |= {"magnitudes": tuple(int(v) for v in mags)}
        return _Plan((fmt.name,), "two_term", fmt.bits, 2, WINDOW_EXP_BITS, TWO_TERM_BSIG,
                     **common)
    if isinstance(fmt, formats.KHotFormat):
        terms = [naf_terms(v) for v in fmt.magnitudes]
        if max(map(len, terms)) > fmt.terms:
            raise ValueError(f"formats: {name!r} has a magnitude of more than {fmt.terms} terms")
        top_position = max(position for t in terms for position, _ in t)
        return _Plan((fmt.name,), "khot", fmt.bits, fmt.terms, top_position.bit_length(),
                     (0,) * fmt.terms, magnitudes=tuple(fmt.magnitudes))
    if isinstance(fmt, formats.MiniFloat):
        max_shift = max(_max_finite_exp_field(fmt) - 1, 0)
        return _Plan((fmt.name,), "significand", fmt.bits, fmt.man_bits + 1,
                     max(1, max_shift.bit_length()), tuple(range(fmt.man_bits + 1)),
                     exp_field=fmt.exp_bits, man_field=fmt.man_bits,
                     subnormals=fmt.subnormals, specials=fmt.specials)
    raise ValueError(f"formats: {name!r} ({type(fmt).__name__}) cannot be expressed by the "
                     "term encoder: it takes integers, fixed point, minifloats, flint4, the "
                     "BitMoD extended FP3/FP4 types and the K-hot formats")


def _plan(formats_param) -> _Plan:
    if isinstance(formats_param, str):
        names = (formats_param,)
    elif isinstance(formats_param, (list, tuple)) and formats_param and all(
            isinstance(n, str) for n in formats_param):
        names = tuple(formats_param)
    else:
        raise TypeError(f"formats must be a format name or a non-empty list of names, not "
                        f"{formats_param!r}")
    if len(names) > MAX_FORMATS:
        raise ValueError(f"formats: a mixture has at most {MAX_FORMATS} formats, not "
                         f"{len(names)} ({list(names)})")
    fmts = []
    for n in names:
        try:
            fmts.append(formats.get(n))
        except ValueError as exc:
            raise ValueError(f"formats: {exc}") from None
    if len({f.bits for f in fmts}) != 1:
        raise ValueError(f"formats: a mixture needs one code width; {list(names)} have "
                         f"{[f.bits for f in fmts]} bits")
    plans = [_single_plan(n, f) for n, f in zip(names, fmts, strict=True)]
    if len(plans) > 1:
        for n, f, p in zip(names, fmts, plans, strict=True):
            if p.path != "two_term":
                raise ValueError(f"formats: {n!r} ({p.path} path) cannot be in a mixture; only "
                                 "BitMoD two-term formats sharing base levels can")
            if _two_term_base(f) != _two_term_base(fmts[0]):
                raise ValueError(f"formats: {n!r} does not share the base levels of "
                                 f"{names[0]!r}")
    first = plans[0]
    return _Plan(tuple(f.name for f in fmts), first.path, first.code_bits, first.terms,
                 first.exp_bits, first.bsig, any(p.has_register for p in plans), first.signed,
                 first.exp_field, first.man_field, first.subnormals, first.specials,
                 first.magnitudes)


def _priority(m: Module, bits, name: str):
    """(any, index of the highest set bit, one-hot of it) of a small vector."""
    index = Signal(range(max(2, len(bits))), name=f"{name}_index")
    onehot = Signal(len(bits), name=f"{name}_onehot")
    for k in range(len(bits)):  # later statements win: the highest set bit is kept
        with m.If(bits[k]):
            m.d.comb += [index.eq(k), onehot.eq(1 << k)]
    return bits.any(), index, onehot


@read_only("plan", "terms_layout")
class TermEncoderCore(wiring.Component):
    """Combinational core of :class:`TermEncoder` (same parameters, no handshake).

    Ports are plain bit vectors (read them through :attr:`terms_layout` and
    ``REGISTER_LAYOUT``): layout-typed ports would add a debug wire per field, which bloats
    simulation models of designs that hold many encoders.

    Members
    -------
    code : In(code_bits)
    selector : In(2)
    special_values : In(REGISTER_LAYOUT.size)
    terms : Out(terms_layout.size)
    nonfinite : Out(1)
    """

    def __init__(self, formats, *, _inject_fault: bool = False):
        self._plan = _plan(formats)
        self._fault = check_bool("_inject_fault", _inject_fault)
        p = self._plan
        self._terms_layout = data.ArrayLayout(term_layout(p.exp_bits), p.terms)
        super().__init__({
            "code": In(p.code_bits),
            "selector": In(SELECTOR_BITS),
            "special_values": In(REGISTER_LAYOUT.size),
            "terms": Out(self._terms_layout.size),
            "nonfinite": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        self._out = data.View(self._terms_layout, self.terms)
        path = self._plan.path
        if path == "booth":
            self._booth(m)
        elif path == "two_term":
            self._two_term(m)
        elif path == "khot":
            self._khot(m)
        else:
            self._significand(m)
        return m

    def _booth(self, m: Module):
        p = self._plan
        word = Signal(2 * p.terms)
        # Sign or zero extension to 2T bits, then the 0 appended below the LSB.
        m.d.comb += word.eq(self.code.as_signed() if p.signed else self.code)
        padded = Signal(2 * p.terms + 1)
        m.d.comb += padded.eq(word << 1)
        for i in range(p.terms):
            lo, mid, hi = padded[2 * i], padded[2 * i + 1], padded[2 * i + 2]
            term = self._out[i]
            double = (mid == lo) & (hi != mid)  # 011 -> +2x, 100 -> -2x
            if self._fault:
                double = double & ~hi  # 100 decoded as -x
            m.d.comb += [
                term.nonzero.eq(~((hi == mid) & (mid == lo))),
                term.sign.eq(hi & ~(mid & lo)),
                term.exp.eq(double),
            ]

    def _two_term(self, m: Module):
        p = self._plan
        code = self.code
        neg = code[-1]
        mag = code[:-1]
        magnitude = Signal(MAGNITUDE_BITS)
        if p.magnitudes is not None:
            with m.Switch(mag):
                for i, v in enumerate(p.magnitudes):
                    with m.Case(i):
                        m.d.comb += magnitude.eq(v)
        else:
            E, M = p.exp_field, p.man_field
            e = mag[M:M + E]
            sig = Signal(M + 1)
            shift = Signal(E)
            m.d.comb += [sig.eq(mag[:M] | ((e != 0) << M) if M else (e != 0)),
                         shift.eq(Mux(e == 0, 0, e - 1)),
                         magnitude.eq(sig << shift)]

        upper = magnitude[1:]
        t1_any, t1_index, t1_onehot = _priority(m, upper, "lead")
        rest = Signal(MAGNITUDE_BITS - 1)
        m.d.comb += rest.eq(magnitude[:-1] & ~(t1_onehot << 1)[:-1])
        t2_any, t2_index, _ = _priority(m, rest, "rest")
        if self._fault:
            t2_any = t2_any & (magnitude != 3)
        computed = [(t1_any, t1_index), (t2_any, t2_index)]

        special = Signal()
        if p.has_register:
            m.d.comb += special.eq(code == 1 << (p.code_bits - 1))
            entry = data.View(REGISTER_LAYOUT, self.special_values)[self.selector]
        for k, (nonzero, index) in enumerate(computed):
            term = self._out[k]
            m.d.comb += [term.nonzero.eq(nonzero), term.sign.eq(neg & nonzero),
                         term.exp.eq(Mux(nonzero, index, 0))]
            if p.has_register:
                field = entry[k]
                field_nz = field.nonzero
                if self._fault and k == 1:
                    field_nz = field_nz & (self.selector != REGISTER_ENTRIES - 1)
                # Canonical zero terms whatever the register holds.
                with m.If(special):
                    m.d.comb += [term.nonzero.eq(field_nz), term.sign.eq(field.sign & field_nz),
                                 term.exp.eq(Mux(field_nz, field.exp, 0))]

    def _khot(self, m: Module):
        """The index picks the terms of its magnitude (digit signs relative to the magnitude);
        the sign bit then flips every nonzero term (outside the table: fewer LUT4s)."""
        p = self._plan
        neg = self.code[-1]
        digits = [(Signal(name=f"digit{k}_negative"), Signal(p.exp_bits, name=f"digit{k}_position"),
                   Signal(name=f"digit{k}_nonzero")) for k in range(p.terms)]
        with m.Switch(self.code[:-1]):
            for index, magnitude in enumerate(p.magnitudes):
                if magnitude == 0:
                    continue  # zero terms, as for the unused indices (the default)
                with m.Case(index):
                    for (negative, position, nonzero), (bit, is_negative) in zip(
                            digits, naf_terms(magnitude), strict=False):
                        assert bit < 1 << p.exp_bits, (magnitude, bit)  # exp_bits from the top
                        m.d.comb += [negative.eq(is_negative), position.eq(bit), nonzero.eq(1)]
        for k, (negative, position, nonzero) in enumerate(digits):
            flip = neg & nonzero
            if self._fault and k == p.terms - 1:
                flip = 0  # the last term ignores the sign bit
            term = self._out[k]
            m.d.comb += [term.nonzero.eq(nonzero), term.exp.eq(position),
                         term.sign.eq(negative ^ flip)]

    def _significand(self, m: Module):
        p = self._plan
        E, M = p.exp_field, p.man_field
        code = self.code
        neg = code[-1]
        e = code[M:M + E]
        man = code[:M]
        top = (1 << E) - 1
        nonfinite = Signal()
        if p.specials == "ieee":
            m.d.comb += nonfinite.eq(e == top)
        elif p.specials == "fn":
            m.d.comb += nonfinite.eq((e == top) & (man == (1 << M) - 1) if M else (e == top))
        hidden = Signal()
        m.d.comb += hidden.eq(e != 0)
        if self._fault:
            m.d.comb += hidden.eq((e != 0) & (e != 1))
        sig = Signal(M + 1)
        m.d.comb += sig.eq(Mux(e == 0, man if p.subnormals else 0, man | (hidden << M))
                           if M else hidden)
        shift = Signal(E)
        m.d.comb += shift.eq(Mux(e == 0, 0, e - 1))
        for j in range(p.terms):
            term = self._out[j]
            nonzero = sig[j] & ~nonfinite
            m.d.comb += [term.nonzero.eq(nonzero), term.sign.eq(neg & nonzero),
                         term.exp.eq(Mux(nonzero, shift, 0))]
        m.d.comb += self.nonfinite.eq(nonfinite)


@read_only("in_layout", "out_layout", "term_layout")
class TermEncoder(wiring.Component):
    """Weight code + group selector -> the weight's signed power-of-two terms.

    Computes (:mod:`golden.terms`; values in code units)::

        sum_t (-1)**sign_t * nonzero_t * 2**(exp_t + bsig_t) == decode(code)

    Booth path (INT/UINT/fixed point): ``T = ceil(B/2)`` (unsigned ``ceil((B+1)/2)``) radix-4
    digits, ``exp`` 1 bit, ``bsig_t = 2t``. Two-term path (fp3, fp4, flint4 and their extended
    types): leading-one split of the 5-bit magnitude, ``T = 2``, ``exp`` 2 bits,
    ``bsig = (1, 0)``; the sign-only code takes the terms of ``special_values[selector]`` when
    any format is extended (zero terms of an entry are made canonical). Significand path (other
    minifloats): ``T = M + 1`` terms, one per significand bit, ``exp = max(e, 1) - 1`` of width
    ``max(1, bit_length(e_max_finite - 1))``, ``bsig_t = t``; NaN/Inf codes give zero terms and
    ``nonfinite = 1``. K-hot path (khot1..3): a case table from the magnitude index (the code
    below its sign bit) to the nonzero digits of the magnitude's non-adjacent form
    (:func:`naf_terms`), largest first, each term's sign the code's sign XOR the digit's;
    unused indices give zero terms; ``T = K``, ``exp`` = the digit position, of width
    ``bit_length(7) = 3``, ``bsig = 0``. Output width ``T * (exp_bits + 2) + 1``: INT8
    4 x 3 + 1 = 13, BitMoD FP3/FP4 2 x 4 + 1 = 9, khot2 2 x 5 + 1 = 11, khot3 3 x 5 + 1 = 16,
    E5M2 3 x 7 + 1 = 22, worst case E4M3 4 x 6 + 1 = 25.

    Latency 1 cycle (combinational core, one output register); one weight per cycle. The
    register advances when ``o_stream.ready | ~o_stream.valid``, which is also
    ``i_stream.ready``.

    Parameters
    ----------
    formats : str or list of str
        One format, or a BitMoD mixture of up to 4 formats of one width that share base levels
        (``golden.formats.bitmod_candidates(4, "mixture")``); list index = selector value of
        the default register contents (:func:`golden.terms.default_special_values`).
    _inject_fault : bool
        Test hook: builds a broken encoder (Booth ``100`` read as ``-x``; two-term: term 2 of
        magnitude 3 and of register entry 3 dropped; significand: hidden bit of ``e == 1``
        dropped; K-hot: the last term ignores the code's sign bit) so the proofs and sweeps can
        be shown to catch it.

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"code": code_bits, "selector": 2})))
    special_values : In(32)
        Special-value register, static per model, laid out as ``REGISTER_LAYOUT`` =
        ``ArrayLayout(ArrayLayout(term_layout(2), 2), 4)`` (4 entries of two window terms;
        :func:`golden.terms.pack_special_register`); ignored unless a format is extended. A plain
        bit vector rather than a layout-typed port: per-field debug wires of a typed port made
        simulation models of many-encoder designs several times larger.
    o_stream : Out(stream.Signature(StructLayout({"terms": ArrayLayout(term_layout(exp_bits),
    T), "nonfinite": 1})))
    """

    def __init__(self, formats, *, _inject_fault: bool = False):
        self._plan = _plan(formats)
        self._fault = check_bool("_inject_fault", _inject_fault)
        p = self._plan
        self._in_layout = data.StructLayout({"code": unsigned(p.code_bits),
                                             "selector": unsigned(SELECTOR_BITS)})
        self._term_layout = term_layout(p.exp_bits)
        self._out_layout = data.StructLayout({
            "terms": data.ArrayLayout(self._term_layout, p.terms), "nonfinite": 1})
        super().__init__({
            "i_stream": In(stream.Signature(self._in_layout)),
            "special_values": In(REGISTER_LAYOUT.size),
            "o_stream": Out(stream.Signature(self._out_layout)),
        })

    formats = property(lambda self: self._plan.formats)

    @property
    def path(self) -> str:
        """``"booth"``, ``"two_term"``, ``"significand"`` or ``"khot"``."""
        return self._plan.path

    code_bits = property(lambda self: self._plan.code_bits)
    terms_per_weight = property(lambda self: self._plan.terms)
    exp_bits = property(lambda self: self._plan.exp_bits)
    bsig = property(lambda self: self._plan.bsig)
    has_register = property(lambda self: self._plan.has_register)

    @property
    def latency(self) -> int:
        return 1

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = TermEncoderCore(list(self.formats), _inject_fault=self._fault)
        en = pipeline_enable(m, self.i_stream, self.o_stream, self.latency)
        m.d.comb += [
            core.code.eq(self.i_stream.payload.code),
            core.selector.eq(self.i_stream.payload.selector),
            core.special_values.eq(self.special_values),
        ]
        out = Signal(self._out_layout.size)
        with m.If(en):
            m.d.sync += out.eq(Cat(core.terms, core.nonfinite))
        m.d.comb += self.o_stream.payload.eq(out)
        return m


class TermEncoderProof(wiring.Component):
    """Formal harness: the terms of :class:`TermEncoderCore` sum to the decoded level.

    With ``code``, ``selector`` and ``special_values`` free top-level inputs, asserts for every
    input combination:

    * ``sum_t (-1)**s_t * m_t * 2**(e_t + bsig_t) == level(code, selector)``, where ``level``
      comes from a case table of the format's decoded values in code units (a definition), and
      for the sign-only code of an encoder with a register from the selected entry's value
      computed here (``+-2**(e1+1) + +-2**e2``);
    * ``nonfinite`` equals the table's NaN/Inf flag;
    * every zero term is canonical (``sign = 0``, ``exp = 0``).

    No assumption is needed: every register bit pattern is a valid entry (the encoder makes
    the zero terms of an entry canonical), so the register is fully unconstrained. Prove with
    :func:`sim.formal.prove` (``mode="bmc", depth=1`` suffices: the property is combinational).

    Members
    -------
    code : In(code_bits)
    selector : In(2)
    special_values : In(REGISTER_LAYOUT.size)
    """

    def __init__(self, formats, *, _inject_fault: bool = False):
        self._plan = _plan(formats)
        self._fault = check_bool("_inject_fault", _inject_fault)
        p = self._plan
        super().__init__({"code": In(p.code_bits), "selector": In(SELECTOR_BITS),
                          "special_values": In(REGISTER_LAYOUT.size)})

    def _level_table(self):
        """(code-unit level, nonfinite) of every code, from the format definition."""
        p = self._plan
        fmt = formats.get(p.formats[0])
        if p.path == "two_term":
            fmt = formats.get(_two_term_base(fmt))
        values = fmt.decode(fmt.codes())
        if isinstance(fmt, formats.MiniFloat):
            unit = np.ldexp(1.0, 1 - fmt.bias - fmt.man_bits)
        elif isinstance(fmt, formats.FixedPoint):
            unit = fmt.lsb
        else:
            unit = 1.0
        finite = np.isfinite(values)
        levels = [int(v / unit) if ok else 0 for v, ok in zip(values, finite, strict=True)]
        return levels, [not ok for ok in finite]

    def elaborate(self, platform):
        m = Module()
        p = self._plan
        m.submodules.core = core = TermEncoderCore(list(p.formats), _inject_fault=self._fault)
        m.d.comb += [core.code.eq(self.code), core.selector.eq(self.selector),
                     core.special_values.eq(self.special_values)]
        terms = data.View(core.terms_layout, core.terms)
        levels, nonfinite = self._level_table()
        top_term = (1 << p.exp_bits) - 1 + max(p.bsig)
        width = max(max(abs(v) for v in levels).bit_length(), top_term + 1,
                    MAGNITUDE_BITS + 1) + 4
        level = Signal(signed(width))
        level_nonfinite = Signal()
        with m.Switch(self.code):
            for c, (v, bad) in enumerate(zip(levels, nonfinite, strict=True)):
                with m.Case(c):
                    m.d.comb += [level.eq(v), level_nonfinite.eq(bad)]
        if p.has_register:
            entry = data.View(REGISTER_LAYOUT, self.special_values)[self.selector]
            value = 0
            for k, bsig in enumerate(TWO_TERM_BSIG):
                field = entry[k]
                mag = Mux(field.nonzero, Const(1, 1) << (field.exp + bsig), 0)
                value = value + Mux(field.sign, -mag, mag)
            with m.If(self.code == 1 << (p.code_bits - 1)):
                m.d.comb += level.eq(value)
        total = 0
        for t in range(p.terms):
            term = terms[t]
            mag = Mux(term.nonzero, Const(1, 1) << (term.exp + p.bsig[t]), 0)
            total = total + Mux(term.sign, -mag, mag)
            m.d.comb += Assert(term.nonzero | (~term.sign & (term.exp == 0)),
                               f"zero term {t} is not canonical")
        total_sig = Signal(signed(width))
        m.d.comb += total_sig.eq(total)
        m.d.comb += [Assert(total_sig == level, "terms do not sum to the level"),
                     Assert(core.nonfinite == level_nonfinite, "nonfinite flag")]
        return m

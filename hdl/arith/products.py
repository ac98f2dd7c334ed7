"""Registered signed lane products, two per iCE40 UltraPlus DSP block where they fit.

:class:`LaneProducts` is stage 1 of :class:`hdl.pe.baseline.IntPE`: ``L`` products
``p_l = a_l * b_l`` of signed operands, registered under one clock enable. Written as ``*``,
Yosys maps each product to one DSP block (``SB_MAC16`` on the iCE40UP5K, ``MULT18X18D`` on the
ECP5), so the UP5K's 8 blocks give 8 products per cycle. An ``SB_MAC16`` also has an 8 x 8 mode
(``MODE_8x8``) in which its top and bottom byte lanes are two independent signed 8 x 8
multipliers with their own product registers (``TOP_8x8_MULT_REG``/``BOT_8x8_MULT_REG``):
``O[31:16] = A[15:8] * B[15:8]`` and ``O[15:0] = A[7:0] * B[7:0]`` (each a 16-bit two's
complement product, exact because ``|a * b| <= 2**14``). Yosys does not pack two products
into one block by itself, so with operands of at most 8 bits this module instantiates the
block in that mode for each pair of lanes (lanes ``2i`` and ``2i+1``; an odd last lane stays a
``*``): 16 products per cycle on the UP5K.

The arithmetic is the same either way; ``tests/test_pe_baseline.py`` runs the int PE under
Verilator with the blocks instantiated (Yosys' own simulation model of ``SB_MAC16``, read from
the installed Yosys) and checks every output against :mod:`golden.pe_baseline`.
"""

from __future__ import annotations

from amaranth import Cat, ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden.checks import check_int

from ..common import is_ice40, read_only

__all__ = ["MULTIPLIERS", "LaneProducts", "check_multipliers", "pairs_products"]

MULTIPLIERS = ("auto", "generic", "sb_mac16")
# Widest signed operand an SB_MAC16 byte lane takes.
SB_MAC16_LANE_BITS = 8


def check_multipliers(multipliers: str, a_width: int, b_width: int) -> str:
    """``multipliers``, validated against the operand widths (``ValueError`` naming it)."""
    if multipliers not in MULTIPLIERS:
        raise ValueError(f"multipliers must be one of {', '.join(MULTIPLIERS)}, "
                         f"not {multipliers!r}")
    if multipliers == "sb_mac16" and max(a_width, b_width) > SB_MAC16_LANE_BITS:
        raise ValueError(f"multipliers='sb_mac16' takes operands of at most "
                         f"{SB_MAC16_LANE_BITS} bits, not a_width={a_width}, "
                         f"b_width={b_width}")
    return multipliers


def pairs_products(multipliers: str, platform, a_width: int, b_width: int) -> bool:
    """Whether lanes are paired into ``SB_MAC16`` blocks: ``"sb_mac16"`` forces it (operands
    of at most 8 bits), ``"generic"`` never, ``"auto"`` on an iCE40 UltraPlus platform (the
    only iCE40 devices with DSP blocks) when the operands fit a byte lane."""
    fits = max(a_width, b_width) <= SB_MAC16_LANE_BITS
    if multipliers == "sb_mac16":
        return True
    if multipliers == "generic" or not fits or platform is None:
        return False
    return is_ice40(platform) and str(getattr(platform, "device", "")).upper().startswith(
        "ICE40UP")


@read_only("lanes", "a_width", "b_width", "product_width", "multipliers")
class LaneProducts(wiring.Component):
    """``L`` registered signed products under one clock enable.

    Computes, when ``en`` is high at a clock edge::

        p[l] <= a[l] * b[l]          (signed x signed, exact)

    and holds ``p`` otherwise. Latency 1 cycle, throughput ``L`` products per cycle.

    ``product_width = a_width + b_width`` holds every product (``|a * b| <= 2**(a+b-2)``). With
    ``SB_MAC16`` pairs (``pairs_products``) each operand is sign-extended to its byte lane and
    the block's 16-bit product is sign-extended or truncated to ``product_width`` (exact: the
    product of two 8-bit operands fits in 16 bits).

    Parameters
    ----------
    lanes : int
        ``L`` (1..64).
    a_width, b_width : int
        Signed operand widths (2..18).
    multipliers : str
        ``"auto"`` (default: ``SB_MAC16`` pairs on an iCE40 UltraPlus platform, else ``*``),
        ``"generic"`` (always ``*``) or ``"sb_mac16"`` (always the pairs; operands <= 8 bits).

    Members
    -------
    a : In(ArrayLayout(signed(a_width), L))
    b : In(ArrayLayout(signed(b_width), L))
    en : In(1)
        Clock enable of the product registers.
    p : Out(ArrayLayout(signed(product_width), L))
        The registered products.
    """

    def __init__(self, lanes: int, a_width: int, b_width: int, multipliers: str = "auto"):
        self._lanes = check_int("lanes", lanes, 1, 64)
        self._a_width = check_int("a_width", a_width, 2, 18)
        self._b_width = check_int("b_width", b_width, 2, 18)
        self._multipliers = check_multipliers(multipliers, a_width, b_width)
        self._product_width = a_width + b_width
        super().__init__({
            "a": In(data.ArrayLayout(signed(a_width), lanes)),
            "b": In(data.ArrayLayout(signed(b_width), lanes)),
            "en": In(1),
            "p": Out(data.ArrayLayout(signed(self._product_width), lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        L = self._lanes
        paired = pairs_products(self._multipliers, platform, self._a_width, self._b_width)
        single = range(2 * (L // 2), L) if paired else range(L)
        for lane in single:
            with m.If(self.en):
                m.d.sync += self.p[lane].eq(self.a[lane] * self.b[lane])
        if paired:
            for pair in range(L // 2):
                self._sb_mac16_pair(m, 2 * pair)
        return m

    def _sb_mac16_pair(self, m: Module, lane: int) -> None:
        """Lanes ``lane`` (bottom byte) and ``lane + 1`` (top byte) on one ``SB_MAC16``."""
        name = f"mac{lane // 2}"
        a, b = Signal(16, name=f"{name}_a"), Signal(16, name=f"{name}_b")
        o = Signal(32, name=f"{name}_o")
        byte = signed(SB_MAC16_LANE_BITS)
        lanes = {}
        for key, value in (("a_lo", self.a[lane]), ("a_hi", self.a[lane + 1]),
                           ("b_lo", self.b[lane]), ("b_hi", self.b[lane + 1])):
            lanes[key] = Signal(byte, name=f"{name}_{key}")
            m.d.comb += lanes[key].eq(value)  # sign-extends the operand to its byte lane
        m.d.comb += [a.eq(Cat(lanes["a_lo"], lanes["a_hi"])),
                     b.eq(Cat(lanes["b_lo"], lanes["b_hi"]))]
        zero16 = Const(0, 16)
        m.submodules[name] = Instance(
            "SB_MAC16",
            # Two signed 8 x 8 multipliers, their product registers, products on O.
            p_MODE_8x8=Const(1, 1), p_A_SIGNED=Const(1, 1), p_B_SIGNED=Const(1, 1),
            p_TOP_8x8_MULT_REG=Const(1, 1), p_BOT_8x8_MULT_REG=Const(1, 1),
            p_TOPOUTPUT_SELECT=Const(2, 2), p_BOTOUTPUT_SELECT=Const(2, 2),
            i_CLK=ClockSignal("sync"), i_CE=self.en, i_A=a, i_B=b, i_C=zero16, i_D=zero16,
            i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0, i_IRSTTOP=0, i_IRSTBOT=0,
            i_ORSTTOP=0, i_ORSTBOT=0, i_OLOADTOP=0, i_OLOADBOT=0, i_ADDSUBTOP=0,
            i_ADDSUBBOT=0, i_OHOLDTOP=0, i_OHOLDBOT=0, i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0,
            o_O=o)
        m.d.comb += [self.p[lane].eq(o[:16].as_signed()),
                     self.p[lane + 1].eq(o[16:].as_signed())]

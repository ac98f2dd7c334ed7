"""FPGA devices the flows know: the Yosys synthesis command and nextpnr arguments for each."""

from __future__ import annotations

from dataclasses import dataclass

from bitmod.golden.checks import check_bool
from bitmod.hdl.common import KEEP_APART, NO_COLLISION

__all__ = ["DEVICES", "Device", "get_device"]


@dataclass(frozen=True)
class Device:
    """One FPGA part as the open toolchain addresses it.

    Attributes
    ----------
    name : str
        Project name, e.g. ``"ecp5-85f"``.
    family : str
        ``"ice40"`` or ``"ecp5"``; selects ``synth_<family>`` and ``nextpnr-<family>``.
    nextpnr_args : tuple of str
        Device and package selection for nextpnr.
    luts, dsps, brams : int
        Resource totals (LUT4s, hard multipliers, block RAMs) for utilisation figures.
    clock_pin : str or None
        A dedicated clock input of the package: where an out-of-context ECP5 build routed by
        nextpnr's ``router2`` puts ``clk`` (router2 cannot reach the global clock network from
        an arbitrary pin the placer chose: "Failed to route arc ... G_CLKI").
    reset_buffer : bool
        A board top drives the core's synchronised reset through a global buffer (``DCCA``):
        nextpnr-ecp5 puts only clocks on the global network by itself, and on the LFE5U-85F
        the plain reset net crossed the chip (18.3 ns at 10 x 10 x 8). Not on the LFE5U-25F
        (nextpnr failed to route the buffer's input at 8 x 5, 2026-12-05) nor the iCE40
        (nextpnr-ice40 promotes a high-fanout reset itself).
    """

    name: str
    family: str
    nextpnr_args: tuple[str, ...]
    luts: int
    dsps: int
    brams: int
    clock_pin: str | None = None
    reset_buffer: bool = False

    @property
    def device(self) -> str:
        """The vendor part family name (``iCE40UP5K``, ``LFE5U-85F``), as an amaranth vendor
        platform's ``device``: a ``Device`` is the ``platform`` an out-of-context or bare
        elaboration passes down, so RTL that picks vendor primitives (two products per
        ``SB_MAC16``, :mod:`hdl.arith.products`) sees the same part a board build does."""
        size = self.nextpnr_args[0].lstrip("-").upper()  # UP5K, HX8K, 25K, 85K
        if self.family == "ice40":
            return f"iCE40{size}"
        return f"LFE5U-{size[:-1]}F"

    def pre_synth(self, fold_resets: bool = False) -> str:
        """Yosys commands between reading the design and synthesis.

        Memories marked :data:`hdl.common.NO_COLLISION` (one read and one write port each) may
        return anything for a read in its word's write cycle (their ``$mem_v2`` cell gets
        ``RD_COLLISION_X_MASK``), so the block RAM needs no read-first emulation: on the
        iCEBreaker default that emulation took 188 logic cells. This holds for the board
        flows, which read Amaranth's RTLIL; the Verilog flows (bare devices, ``bitmod
        synth``) see the read ports as asynchronous until synthesis and keep it. On the
        ECP5 the flip-flops of registers marked :data:`hdl.common.KEEP_APART` also get
        ``keep``, so identical copies stay apart (after ``proc``: a Verilog source has no
        flip-flop cells before it); on the iCE40 parts, whose arrays are 2 x 2, merging
        costs no long nets and saves the logic cells the iCEBreaker's default needs (with
        ``keep`` it did not place).

        A kept flip-flop is kept as ``proc`` leaves it, so a free-running copy's synchronous
        reset stays a LUT before it, and Yosys merges the equal LUTs of equal copies: one LUT
        then drives every copy. With ``fold_resets`` (ECP5), ``opt_dff`` first folds each
        register's reset and enable into its flip-flop (``LSR``, ``CE``), so no LUT is
        shared: 9.8-12.1 MHz more for the ULX3S 7 x 6 x 16 array, but the 10 x 10 x 8
        default missed its 82 MHz on both seeds (69.3 and 67.7 MHz: the long net moved to
        before the copies; docs/boards.md), so no board folds them by default. (The iCE40
        flow keeps no copies apart, so there is nothing to fold.)"""
        check_bool("fold_resets", fold_resets)
        # (Only a synchronous read port may collide: the Verilog flows' ports are asynchronous
        # with a register until synthesis merges them, and keep their emulation.)
        memories = (f"memory_collect; setparam -set RD_COLLISION_X_MASK 1'1 t:$mem_v2 "
                    f"r:RD_PORTS=1 %i r:WR_PORTS=1 %i r:RD_CLK_ENABLE=1'1 %i a:{NO_COLLISION} %i")
        if self.family == "ice40":
            return f"proc; {memories}"
        if not fold_resets:
            return f"proc; setattr -set keep 1 a:{KEEP_APART} %ci1:+$dff[Q]; {memories}"
        # (opt_dff needs the clean-up before it to see the reset multiplexers.)
        kept = "$dff,$dffe,$sdff,$sdffe,$sdffce"
        return (f"proc; opt_expr; opt_clean; opt_dff; "
                f"setattr -set keep 1 a:{KEEP_APART} %ci1:+{kept}[Q]; {memories}")

    @property
    def synth_command(self) -> str:
        # -abc9 gives better LUT depth on both families; -dsp maps multipliers on iCE40 UP.
        if self.family == "ice40":
            dsp = " -dsp" if "--up5k" in self.nextpnr_args else ""
            return f"synth_ice40 -abc9{dsp}"
        return "synth_ecp5 -abc9"


DEVICES = {
    device.name: device
    for device in (
        Device("ice40-up5k", "ice40", ("--up5k", "--package", "sg48"), 5280, 8, 30),
        Device("ice40-hx8k", "ice40", ("--hx8k", "--package", "ct256"), 7680, 0, 32),
        Device("ecp5-25f", "ecp5", ("--25k", "--package", "CABGA381"), 24288, 28, 56, "G2"),
        Device("ecp5-85f", "ecp5", ("--85k", "--package", "CABGA381"), 83640, 156, 208, "G2",
               reset_buffer=True),
    )
}


def get_device(name: str) -> Device:
    """Look up a device by name; ``ValueError`` lists the known ones."""
    try:
        return DEVICES[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown device {name!r}; expected one of {', '.join(DEVICES)}") from None

"""ECP5 block RAMs' output registers from the flip-flops after their read ports.

An ECP5 block RAM (``DP16KD``) without its output register (``REGMODE NOREG``, what Yosys's
block-RAM mapping always gives) drives its read data from its read latch 5.8 ns after the clock
(speed grade 6, nextpnr's timing data); with the output register (``REGMODE OUTREG``) the data
leave that register a fraction of a nanosecond after the clock and arrive a cycle later. A
pipeline stage of fabric flip-flops right after a read port is the same logic as the output
register, but the placer puts those flip-flops where their loads pull them: in the ULX3S
7 x 6 x 16 builds at 100 MHz, 35 rows from their RAM (docs/boards.md). Yosys's ECP5 memory
map has no output-register option, so this pass moves such flip-flops into their RAM on the
netlist Yosys writes (JSON), before nextpnr reads it.

A read port takes its flip-flops when it is exactly the same logic. With ``P`` the read port
(``A`` or ``B``; in the 36-bit pseudo-dual-port mode, ``DATA_WIDTH_A = DATA_WIDTH_B = 36``,
the read port is ``B`` and both halves of the word, ``DOA`` and ``DOB``, are its data):

* the RAM's ``REGMODE_P`` is ``NOREG``, its ``CLKPMUX`` is ``CLKP`` (no inverted clock) and its
  ``RSTP`` is the constant 0 (both ``RSTA`` and ``RSTB`` in the 36-bit mode);
* every read-data bit that drives anything drives exactly one ``TRELLIS_FF``, on its ``DI``,
  and no top-level port;
* each of those flip-flops has the RAM's read clock (``CLK`` of the net of ``CLKP``, not
  inverted), no set/reset (``LSR`` absent or 0), a power-up value of 0 (``REGSET RESET``), no
  ``keep``, and all of them the same clock enable (one ``CE`` net, not inverted, or none).

Then the output register, loaded when the clock enable ``OCEP`` is 1 from the read latch,
holds what the flip-flops held, in every cycle: ``REGMODE_P = OUTREG``, ``OCEP`` = the
flip-flops' enable (in the 36-bit mode ``OCEA`` too, so both halves' registers see it whichever
pin the device takes for the upper half, as nextpnr's own mapping of Lattice's ``PDPW16KD``
with ``REGMODE OUTREG`` sets both ports' ``REGMODE``), and each flip-flop's ``Q`` net is driven
by the data pin its ``DI`` was. The flip-flops are removed. A port that does not qualify is left
as it is, with the reason in the :class:`OutregReport`.

The core's reader writes its stage-2 registers without a reset where this pass is meant to
take them (:class:`hdl.array.step_reader.StepReader`); a register with a reset stays in the
fabric. ``python -m bitmod.fpga.outreg NEXTPNR ARGS...`` runs the pass on the netlist named by
``--json`` in ``ARGS`` (written beside it as ``<name>.outreg.json``, with a summary in
``outreg.json``) and then runs ``NEXTPNR ARGS...`` on the result: the board flow's nextpnr
command when a build asks for it (:attr:`fpga.build.BuildConfig.bram_outreg`).
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["OutregReport", "absorb_output_registers", "main"]

_DATA_BITS = 18  # DOA0..17 and DOB0..17


@dataclass
class OutregReport:
    """What :func:`absorb_output_registers` did.

    Members
    -------
    ports : list of (str, str, int)
        ``(RAM cell, read port, flip-flops taken)`` for each read port given its output
        register.
    skipped : dict of str to str
        ``"RAM cell:port" -> reason`` for each read port that drives flip-flops but was left
        as it is.
    """

    ports: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)

    @property
    def flip_flops(self) -> int:
        return sum(count for _, _, count in self.ports)

    def as_dict(self) -> dict:
        return {"ports": [list(port) for port in self.ports], "flip_flops": self.flip_flops,
                "skipped": dict(self.skipped)}

    def summary(self) -> str:
        return (f"block RAM output registers: {len(self.ports)} read ports take "
                f"{self.flip_flops} flip-flops; {len(self.skipped)} left as they were")


def _int_param(value) -> int:
    """A Yosys JSON parameter: an integer, or a string of binary digits (Yosys writes
    integers that way), or a decimal string."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text and set(text) <= {"0", "1"} and len(text) > 1:
        return int(text, 2)
    return int(text)


def _text_param(cell: dict, name: str, default: str) -> str:
    # (Yosys pads some string parameters with a space: "1 ".)
    return str(cell.get("parameters", {}).get(name, default)).strip()


def _is_const(bits: list, value: str) -> bool:
    return all(bit == value for bit in bits)


def _sinks(module: dict) -> dict:
    """``bit -> [(cell name, port)]`` of every cell input in ``module``."""
    sinks = defaultdict(list)
    for name, cell in module["cells"].items():
        directions = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if directions.get(port) != "output":
                for bit in bits:
                    if isinstance(bit, int):
                        sinks[bit].append((name, port))
    return sinks


def _read_pins(ram: dict) -> list[tuple[str, list[str]]]:
    """``(read port, data pins)`` of a ``DP16KD``: ``B`` with both halves in the 36-bit
    pseudo-dual-port mode, else each port whose data pins exist."""
    params = ram.get("parameters", {})
    width_a = _int_param(params.get("DATA_WIDTH_A", 18))
    width_b = _int_param(params.get("DATA_WIDTH_B", 18))
    if width_a == 36 or width_b == 36:
        if width_a != width_b:
            return [("B", [])]  # a 36-bit write with a narrower read: not handled
        return [("B", [f"DO{half}{i}" for half in "AB" for i in range(_DATA_BITS)])]
    return [(port, [f"DO{port}{i}" for i in range(_DATA_BITS)]) for port in "AB"]


def _check_flip_flop(ff: dict, clock_bit) -> str | None:
    """Why ``ff`` (a ``TRELLIS_FF``) cannot be a read port's output register clocked by
    ``clock_bit``, or ``None``."""
    connections = ff["connections"]
    keep = ff.get("attributes", {}).get("keep")
    if keep is not None and _int_param(keep):
        return "a flip-flop is kept"
    if _text_param(ff, "CLKMUX", "CLK") != "CLK":
        return "a flip-flop's clock is inverted"
    if connections.get("CLK") != [clock_bit]:
        return "a flip-flop has another clock"
    if _text_param(ff, "REGSET", "RESET") != "RESET":
        return "a flip-flop powers up to 1"
    lsr = connections.get("LSR", ["0"])
    if _text_param(ff, "LSRMUX", "LSR") == "INV" or not _is_const(lsr, "0"):
        return "a flip-flop has a set/reset"
    if _text_param(ff, "CEMUX", "CE") == "INV":
        return "a flip-flop's enable is inverted"
    return None


def _enable(ff: dict):
    """The flip-flop's clock enable as a bit (``"1"``: always)."""
    mux = _text_param(ff, "CEMUX", "CE")
    if mux == "1":
        return "1"
    ce = ff["connections"].get("CE", ["1"])
    return ce[0]


def _port_plan(module: dict, sinks: dict, port_bits: set, ram: dict, port: str,
               pins: list[str]):
    """``(flip-flops by pin, enable)`` for read port ``port`` of ``ram``, or a reason string."""
    connections = ram["connections"]
    if _text_param(ram, f"CLK{port}MUX", f"CLK{port}") != f"CLK{port}":
        return "the read clock is inverted"
    for p in "AB" if len(pins) > _DATA_BITS else port:
        if _text_param(ram, f"REGMODE_{p}", "NOREG") != "NOREG":
            return "the output register is in use"
        if not _is_const(connections.get(f"RST{p}", ["0"]), "0"):
            return "the read port has a reset"
    clock = connections.get(f"CLK{port}", [None])[0]
    taken, enables = {}, set()
    for pin in pins:
        bits = connections.get(pin)
        if not bits or not isinstance(bits[0], int):
            continue
        bit = bits[0]
        if bit in port_bits:
            return "read data drive a top-level port"
        loads = sinks.get(bit, [])
        if not loads:
            continue
        if len(loads) != 1:
            return "read data drive more than one load"
        name, load_port = loads[0]
        ff = module["cells"][name]
        if ff["type"] != "TRELLIS_FF" or load_port != "DI":
            return "read data drive logic, not a flip-flop"
        reason = _check_flip_flop(ff, clock)
        if reason:
            return reason
        enables.add(_enable(ff))  # a net bit (int) or "1": hashable as it is
        taken[pin] = name
    if not taken:
        return None
    if len(enables) != 1:
        return "the flip-flops have different enables"
    return taken, enables.pop()


def absorb_output_registers(netlist: dict) -> OutregReport:
    """Give each ``DP16KD`` read port that qualifies (module docstring) its output register in
    place of the flip-flops after it, in every module of ``netlist`` (Yosys's JSON netlist,
    changed in place). Returns what was done."""
    report = OutregReport()
    for module in netlist.get("modules", {}).values():
        cells = module.get("cells", {})
        rams = [name for name, cell in cells.items() if cell["type"] == "DP16KD"]
        if not rams:
            continue
        sinks = _sinks(module)
        port_bits = {bit for port in module.get("ports", {}).values() for bit in port["bits"]}
        for name in rams:
            ram = cells[name]
            for port, pins in _read_pins(ram):
                if not pins:
                    report.skipped[f"{name}:{port}"] = "a 36-bit write with a narrower read"
                    continue
                plan = _port_plan(module, sinks, port_bits, ram, port, pins)
                if plan is None:
                    continue
                if isinstance(plan, str):
                    if any(sinks.get(bit) for pin in pins
                           for bit in ram["connections"].get(pin, []) if isinstance(bit, int)):
                        report.skipped[f"{name}:{port}"] = plan
                    continue
                taken, enable = plan
                for pin, ff_name in taken.items():
                    ram["connections"][pin] = list(cells[ff_name]["connections"]["Q"])
                    del cells[ff_name]
                halves = "AB" if len(pins) > _DATA_BITS else port
                for p in halves:
                    ram["parameters"][f"REGMODE_{p}"] = "OUTREG"
                    ram["connections"][f"OCE{p}"] = [enable]
                    ram.setdefault("port_directions", {})[f"OCE{p}"] = "input"
                report.ports.append((name, port, len(taken)))
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m bitmod.fpga.outreg NEXTPNR ARGS...``: the pass on ``--json``'s netlist, then
    ``NEXTPNR ARGS...`` with the new netlist (module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or "--json" not in args[1:] or args.index("--json", 1) + 1 >= len(args):
        print("usage: python -m bitmod.fpga.outreg NEXTPNR ARGS... (ARGS with --json FILE)",
              file=sys.stderr)
        return 2
    nextpnr, rest = args[0], args[1:]
    at = rest.index("--json") + 1
    source = Path(rest[at])
    try:
        netlist = json.loads(source.read_text())
    except (OSError, ValueError) as error:
        print(f"outreg: cannot read the netlist {source}: {error}", file=sys.stderr)
        return 1
    report = absorb_output_registers(netlist)
    target = source.with_suffix(".outreg.json")
    target.write_text(json.dumps(netlist))
    (source.parent / "outreg.json").write_text(json.dumps(report.as_dict(), indent=1))
    print(f"outreg: {report.summary()}", flush=True)
    rest[at] = str(target)
    os.execvp(nextpnr, [nextpnr, *rest])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

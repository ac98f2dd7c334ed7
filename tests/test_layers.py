"""The package layout: one ``bitmod`` namespace, and layers that import one way.

Every import statement of every module (also the ones inside functions) is parsed; a module
may import only the project layers its own layer builds on, and the layers with a third-party
budget (golden: NumPy only; host: no Amaranth) import nothing else.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Layer -> the project layers it may import (itself included). golden is the spec; hdl the RTL;
# fpga, host and models sit on them (models keeps its caches in the toolchain's build folder);
# sim verifies the RTL, also end to end through the real host driver (so it may import host,
# never the other way); tools (the API and the CLI) on top.
ALLOWED = {
    "golden": {"golden"},
    "toolchain": {"golden", "toolchain"},
    "hdl": {"golden", "hdl"},
    "sim": {"golden", "hdl", "toolchain", "host", "sim"},
    "fpga": {"golden", "hdl", "toolchain", "fpga"},
    "host": {"golden", "host"},
    "models": {"golden", "toolchain", "models"},  # toolchain: the build folder of the caches
    "tools": {"golden", "hdl", "toolchain", "sim", "fpga", "host", "models", "tools"},
    "root": set(),  # bitmod/__init__.py resolves its API lazily, importing nothing eagerly
}
# Third-party packages a layer may import (None: anything). golden is NumPy (+ ml_dtypes for
# its bfloat16 casts); the host side of a board never imports Amaranth.
THIRD_PARTY = {"golden": {"numpy", "ml_dtypes"}, "host": None}
FORBIDDEN = {"host": {"amaranth", "amaranth_boards", "cocotb", "cocotb_tools", "torch"}}
FOLDERS = {"golden": "golden", "hdl": "hdl", "sim": "sim", "fpga": "fpga", "host": "host",
           "models": "models", "tools": "tools"}


def _layer_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "bitmod":
        return "toolchain" if rel.name == "toolchain.py" else "root"
    return rel.parts[0]


def _layer_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "bitmod":
        return None
    if len(parts) == 1:
        return "root"
    return parts[1] if parts[1] != "toolchain" else "toolchain"


def _package_of(path: Path) -> list[str]:
    rel = path.relative_to(ROOT)
    layer = _layer_of_file(path)
    if layer in ("root", "toolchain"):
        return ["bitmod"]
    parts = ["bitmod", *rel.parts[:-1]]
    return parts


def _imports(path: Path):
    """(line, absolute module name) of every import in ``path``."""
    package = _package_of(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
                yield node.lineno, module
                if node.module is None:  # from . import x: x may be a module of the package
                    for alias in node.names:
                        yield node.lineno, f"{module}.{alias.name}"
            else:
                yield node.lineno, node.module


def _sources():
    for folder in [*FOLDERS.values(), "bitmod"]:
        yield from sorted((ROOT / folder).rglob("*.py"))


STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def test_layers_import_one_way():
    violations = []
    for path in _sources():
        layer = _layer_of_file(path)
        for line, module in _imports(path):
            top = module.split(".")[0]
            target = _layer_of_module(module)
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if target is not None:
                if target not in ALLOWED[layer] and not (layer == "root" and target == "root"):
                    violations.append(f"{where} ({layer} may import {sorted(ALLOWED[layer])})")
            elif top in FOLDERS:
                violations.append(f"{where}: a top-level name; import it as bitmod.{module}")
            elif top not in STDLIB:
                budget = THIRD_PARTY.get(layer)
                if layer in THIRD_PARTY and budget is not None and top not in budget:
                    violations.append(f"{where} ({layer} imports only {sorted(budget)})")
                if top in FORBIDDEN.get(layer, ()):
                    violations.append(f"{where} ({layer} never imports {top})")
    assert not violations, "\n".join(violations)


def test_the_rule_catches_a_violation(tmp_path, monkeypatch):
    """A golden module importing the RTL is reported (the check is not vacuous)."""
    bad = ROOT / "golden" / "_layer_probe.py"
    monkeypatch.setattr(sys.modules[__name__], "_sources", lambda: iter([bad]))
    bad.write_text("from bitmod.hdl.registry import COMPONENTS\nimport amaranth\n")
    try:
        with pytest.raises(AssertionError, match=r"golden/_layer_probe.py:1 imports "
                                                 r"bitmod.hdl.registry.*\n.*amaranth"):
            test_layers_import_one_way()
    finally:
        bad.unlink()


def test_packaging_lists_every_package_and_nothing_else_top_level():
    """pyproject maps exactly the folders holding an __init__.py into bitmod.*; nothing else
    is installed top-level."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setup = project["tool"]["setuptools"]
    dirs = setup["package-dir"]
    assert set(dirs) == {"bitmod", *(f"bitmod.{name}" for name in FOLDERS)}
    assert all(k.startswith("bitmod") for k in setup["packages"])
    expected = {"bitmod"}
    for name, folder in FOLDERS.items():
        assert dirs[f"bitmod.{name}"] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            expected.add(".".join(["bitmod", name, *rel]))
    assert set(setup["packages"]) == expected
    assert re.fullmatch(r"bitmod\.tools\.cli:main", project["project"]["scripts"]["bitmod"])

"""Components addressable by a short name (``bitmod synth``, benchmarks, docs tables).

Each entry maps a name to ``"module:Class"``; the module is imported only when the component is
asked for, so listing names costs nothing.
"""

from __future__ import annotations

import importlib

__all__ = ["COMPONENTS", "component_class", "component_names"]

COMPONENTS = {
    "act_block": "bitmod.hdl.arith.act_block:ActBlockConverter",
    "bitserial_pe": "bitmod.hdl.pe.bitserial:BitSerialPE",
    "dsp_array": "bitmod.hdl.array.dsp_array:DspMacArray",
    "int_pe": "bitmod.hdl.pe.baseline:IntPE",
    "minifloat_pe": "bitmod.hdl.pe.baseline:MinifloatPE",
    "fixed_cast": "bitmod.hdl.arith.fixed_cast:FixedCast",
    "minifloat_mul": "bitmod.hdl.arith.minifloat_mul:MinifloatMultiplier",
    "requant": "bitmod.hdl.arith.requant:Requantizer",
    "to_float": "bitmod.hdl.arith.to_float:ToFloat",
    "term_encoder": "bitmod.hdl.arith.term_encoder:TermEncoder",
    "selftest_adder": "bitmod.hdl.selftest:PipelinedAdder",
}


def component_names() -> list[str]:
    return sorted(COMPONENTS)


def component_class(name: str) -> type:
    """The component class registered as ``name``; ``ValueError`` lists the known names."""
    try:
        target = COMPONENTS[name]
    except KeyError:
        raise ValueError(f"unknown component {name!r}; known components: "
                         f"{', '.join(component_names())}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)

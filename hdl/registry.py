"""Components addressable by a short name (``bitmod synth``, benchmarks, docs tables).

Each :class:`Entry` names the component class and, for components built from a config object,
the config class (``golden`` dataclasses: :class:`~golden.pe.PEConfig`, ...). Modules are
imported only when a component is asked for, so listing names costs nothing.

:func:`build_component` is the one way a component is made from user parameters: every entry
builds with no parameters at all (the defaults are a working, representative design), an
unknown or bad parameter is one ``ValueError`` line naming it, and ``scheme`` (the project's
weight vocabulary, :func:`golden.quantize.scheme_names`) sets the weight format of the
components that have one.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass

__all__ = ["COMPONENTS", "DEFAULT_SCHEME", "Entry", "array_pe_class", "build_component",
           "component_class", "component_names", "parameter_names", "resolve_params"]

# The scheme a weight-path component gets when neither --scheme nor its format is given.
DEFAULT_SCHEME = "bitmod4"


@dataclass(frozen=True)
class Entry:
    """One registered component.

    Attributes
    ----------
    target : str
        ``"module:Class"`` of the component.
    config : str or None
        ``"module:Class"`` of its config dataclass: the component is built as
        ``Class(Config(**params))``; ``None``: ``Class(**params)``.
    weights : str or None
        How a scheme sets its weight format: ``"formats"`` (the scheme's format names),
        ``"weight_bits"`` (the width of its codes) or ``"w_format"`` (its element format);
        ``None`` for components without weights.
    scheme : str
        The scheme used when neither ``scheme`` nor the weight parameter is given.
    pe_kind : str or None
        For a PE the array can hold: the name of its :class:`golden.pe_kind.PEKind`
        (:data:`golden.gemm.PE_KINDS`); the class then has ``for_array(config)``, the PE built
        with an :class:`golden.gemm.ArrayConfig`'s parameters (:func:`array_pe_class`).
    """

    target: str
    config: str | None = None
    weights: str | None = None
    scheme: str = DEFAULT_SCHEME
    pe_kind: str | None = None


COMPONENTS = {
    "act_block": Entry("bitmod.hdl.arith.act_block:ActBlockConverter"),
    "act_align": Entry("bitmod.hdl.arith.act_block:ActBlockAligner"),
    "bitplane_pe": Entry("bitmod.hdl.pe.bitplane:BitPlanePE", None, "weight_bits", "int4",
                         pe_kind="bitplane"),
    "bitserial_pe": Entry("bitmod.hdl.pe.bitserial:BitSerialPE", "bitmod.golden.pe:PEConfig",
                          "formats", pe_kind="bitserial"),
    "core": Entry("bitmod.hdl.array.core:AcceleratorCore", "bitmod.golden.core:CoreConfig",
                  "formats"),
    "dsp_array": Entry("bitmod.hdl.array.dsp_array:DspMacArray"),
    "fixed_cast": Entry("bitmod.hdl.arith.fixed_cast:FixedCast"),
    "int_pe": Entry("bitmod.hdl.pe.baseline:IntPE", None, "weight_bits", "int8", pe_kind="int"),
    "lut_pe": Entry("bitmod.hdl.pe.lut_table:LutTablePE", None, "weight_bits", "int4",
                    pe_kind="lut"),
    "minifloat_mul": Entry("bitmod.hdl.arith.minifloat_mul:MinifloatMultiplier"),
    "minifloat_pe": Entry("bitmod.hdl.pe.baseline:MinifloatPE", None, "w_format", "fp4",
                          pe_kind="minifloat"),
    "requant": Entry("bitmod.hdl.arith.requant:Requantizer"),
    "selftest_adder": Entry("bitmod.hdl.selftest:PipelinedAdder"),
    "systolic_array": Entry("bitmod.hdl.array.array:SystolicArray",
                            "bitmod.golden.gemm:ArrayConfig", "formats"),
    "term_encoder": Entry("bitmod.hdl.arith.term_encoder:TermEncoder", None, "formats"),
    "to_float": Entry("bitmod.hdl.arith.to_float:ToFloat"),
}


def component_names() -> list[str]:
    return sorted(COMPONENTS)


def _entry(name: str) -> Entry:
    try:
        return COMPONENTS[name]
    except KeyError:
        raise ValueError(f"unknown component {name!r}; known components: "
                         f"{', '.join(component_names())}") from None


def array_pe_class(kind: str) -> type:
    """The PE class registered for the array PE kind ``kind`` (an :class:`Entry` whose
    ``pe_kind`` is ``kind``); ``ValueError`` when no component or more than one is."""
    names = [name for name, entry in COMPONENTS.items() if entry.pe_kind == kind]
    if len(names) != 1:
        raise ValueError(f"PE kind {kind!r} has {len(names)} registered PEs ({names}); it "
                         f"needs exactly one registry entry with pe_kind={kind!r}")
    return _load(COMPONENTS[names[0]].target)


def _load(target: str):
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def component_class(name: str) -> type:
    """The component class registered as ``name``; ``ValueError`` lists the known names."""
    return _load(_entry(name).target)


def parameter_names(name: str) -> list[str]:
    """The parameters ``build_component(name, params)`` accepts."""
    entry = _entry(name)
    if entry.config is not None:
        return [f.name for f in dataclasses.fields(_load(entry.config)) if f.init]
    signature = inspect.signature(_load(entry.target).__init__)
    return [p for p in signature.parameters if p != "self" and not p.startswith("_")]


def _scheme_value(name: str, kind: str, scheme: str):
    from bitmod.golden.quantize import get_scheme

    spec = get_scheme(scheme)
    if kind == "formats":
        return list(spec.formats)
    if kind == "weight_bits":
        return spec.bits
    if len(spec.formats) != 1:
        raise ValueError(f"{name} takes one weight format; scheme {scheme!r} is a mixture of "
                         f"{len(spec.formats)}")
    return spec.formats[0]


def resolve_params(name: str, params: dict | None = None, scheme: str | None = None) -> dict:
    """The parameters ``name`` is built with: ``params`` plus, for a component with weights,
    the weight parameter its scheme sets (``scheme``, else the entry's default scheme).

    Raises
    ------
    ValueError
        Unknown component or parameter, or a scheme given to a component without weights (or
        together with the parameter it sets).
    """
    entry = _entry(name)
    params = dict(params or {})
    allowed = parameter_names(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has no parameter {unknown[0]!r}; its parameters: "
                         f"{', '.join(allowed)}")
    if scheme is not None and entry.weights is None:
        raise ValueError(f"{name} has no weights: --scheme does not apply to it")
    if entry.weights is not None:
        if scheme is not None and entry.weights in params:
            raise ValueError(f"give --scheme or {entry.weights}, not both")
        if entry.weights not in params:
            params[entry.weights] = _scheme_value(name, entry.weights, scheme or entry.scheme)
    return params


def build_component(name: str, params: dict | None = None, scheme: str | None = None):
    """The component ``name`` built from ``params`` (its config's fields or its constructor's
    keyword arguments) and, for a component with weights, ``scheme``
    (:func:`resolve_params`); any bad value is one ``ValueError`` line naming it."""
    entry = _entry(name)
    params = resolve_params(name, params, scheme)
    cls = _load(entry.target)
    try:
        if entry.config is not None:
            return cls(_load(entry.config)(**params))
        return cls(**params)
    except TypeError as error:  # a value of the wrong type: the checks name it
        raise ValueError(f"{name}: {error}") from None

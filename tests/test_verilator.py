"""The Verilator model cache's key (sim/verilator.py): which sources can change a model."""

from bitmod.golden.gemm import PE_KINDS
from bitmod.hdl.array.array import SystolicArray
from bitmod.hdl.array.core import AcceleratorCore
from bitmod.hdl.pe.bitserial import BitSerialPE
from bitmod.hdl.registry import COMPONENTS, array_pe_class
from bitmod.sim.verilator import rtl_sources


def test_array_and_core_models_depend_on_every_array_pe():
    """The array loads its PE through the registry (no import statement names it): an edit to
    any kind's PE file must still change the array's and the core's model key."""
    pe_modules = {array_pe_class(kind).__module__ for kind in PE_KINDS}
    assert len(pe_modules) >= 3  # bitserial, baseline (int, minifloat), lut_table, bitplane
    for component in (SystolicArray, AcceleratorCore):
        sources = rtl_sources(component)
        assert pe_modules <= set(sources), pe_modules - set(sources)
        assert all(path.exists() for path in sources.values())


def test_a_pe_model_does_not_depend_on_the_other_pes():
    """The closure is targeted: the bit-serial PE's model ignores the other PE files."""
    sources = set(rtl_sources(BitSerialPE))
    others = {entry.target.split(":")[0] for entry in COMPONENTS.values()
              if entry.pe_kind and entry.pe_kind != "bitserial"}
    assert "bitmod.hdl.pe.bitserial" in sources
    assert not (others - {"bitmod.hdl.pe.bitserial"}) & sources

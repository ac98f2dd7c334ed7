"""bitmod-hdl: an open accelerator generator for low-bit LLM inference.

One import namespace over the project's folders (see ``docs/layout.md``)::

    bitmod.golden   golden/   the specification: number formats, quantizers, datapath models
    bitmod.hdl      hdl/      synthesizable Amaranth RTL
    bitmod.sim      sim/      Verilator / cocotb / Amaranth-simulator verification
    bitmod.fpga     fpga/     devices, boards, synthesis and bitstream builds
    bitmod.host     host/     the host side of a board: UART framing, driver, DFU (no Amaranth)
    bitmod.models   models/   real models (PyTorch) whose GEMMs run on the datapath
    bitmod.tools    tools/    the Python API (bitmod.tools.api) and the ``bitmod`` command line
    bitmod.toolchain          tool discovery (Yosys, nextpnr, Verilator, SymbiYosys), Verilog export

Layers import one way: golden <- hdl <- sim / fpga, golden <- host, golden <- models, and
tools on top (``tests/test_layers.py`` enforces it). The flows of the command line are plain
functions here too, imported on first use so that ``import bitmod`` costs nothing::

    import bitmod
    report = bitmod.verify(random=(16, 64, 128), array=(2, 2))
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Names resolved lazily from bitmod.tools.api (PEP 562): importing bitmod.golden must not pull
# in the RTL, the simulators or torch.
_API = ("quantize", "verify", "synth", "build", "run", "QuantizeResult", "VerifyResult",
        "SynthResult", "BuildResult", "RunResult")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module("bitmod.tools.api"), name)
    raise AttributeError(f"module 'bitmod' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])

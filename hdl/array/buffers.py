"""The accelerator core's on-chip buffers: one ``lib.memory.Memory`` per bank, with the write
ports the command port (and the pre-pass) drives and the read ports of the controller.

Depths and word widths: :class:`golden.core.CoreConfig` (module docstring of
:mod:`golden.core`: the buffer map).
"""

from __future__ import annotations

from amaranth import Module, Shape, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import Out

from bitmod.golden import bfp
from bitmod.golden import core as gcore

from ..common import read_only

__all__ = ["CoreBuffers", "read_signature", "write_signature"]


def write_signature(depth: int, width: int, granularity: int | None = None):
    """A buffer's write port (:class:`amaranth.lib.memory.WritePort.Signature`: ``addr``,
    ``data``, ``en`` flow into the buffer)."""
    return WritePort.Signature(addr_width=Shape.cast(range(depth)).width, shape=unsigned(width),
                               granularity=granularity)


def read_signature(depth: int, width: int):
    """A buffer's synchronous read port (:class:`amaranth.lib.memory.ReadPort.Signature`:
    ``addr`` and ``en`` in, ``data`` out one cycle after an enabled address)."""
    return ReadPort.Signature(addr_width=Shape.cast(range(depth)).width, shape=unsigned(width))


def buffer_shapes(config: gcore.CoreConfig) -> dict[str, tuple[int, int, int, int | None]]:
    """``name -> (banks, depth, word bits, write granularity)`` of every buffer of the core
    (``gexp`` and ``base`` for FP16/BF16 activations only)."""
    mp = config
    L, CB, AB = mp.lanes, mp.code_bits, mp.act_bits
    shapes = {
        "weight": (mp.cols, mp.weight_depth, L * CB, CB),
        "meta": (mp.cols, mp.meta_depth, mp.meta_bits, None),
        "act": (mp.rows, mp.act_depth, L * AB, AB),
    }
    if mp.act_format != "int8":
        E, _, _ = bfp.float_fields(mp.act_format)
        shapes["gexp"] = (mp.rows, mp.gexp_depth, E, None)
        shapes["base"] = (mp.rows, mp.base_depth, E, None)
    shapes["output"] = (1, mp.out_depth, mp.out_bits, None)
    return shapes


@read_only("config")
class CoreBuffers(wiring.Component):
    """The core's buffers, one memory per bank, each with one write and one read port.

    ============  =======  ==========================  ===========================  ========
    buffer        banks    words                       word                         written
    ============  =======  ==========================  ===========================  ========
    ``weight``    C        ``n_tiles * k_steps``       ``L`` codes of code_bits     commands
    ``meta``      C        ``n_tiles * max_groups``    ``scale | selector << SB``   commands
    ``act``       R        ``m_tiles * k_steps``       ``L`` words of A bits        commands
    ``gexp``      R        ``m_tiles * max_groups``    group exponent, E bits       pre-pass
    ``base``      R        ``m_tiles``                 token floor, E bits          pre-pass
    ``output``    1        ``max_m * max_n``           an out_format code           drain
    ============  =======  ==========================  ===========================  ========

    With zero points the ``meta`` word holds the group's zero point (its offset code) above
    the selector: ``| zp << (SB + 2)`` (:attr:`golden.core.CoreConfig.meta_bits`).

    (``A`` = 8 for INT8 activations, 16 for FP16/BF16; ``gexp`` and ``base`` exist for FP
    activations only; :func:`buffer_shapes`.) ``weight`` and ``act`` words are written one
    lane at a time (granularity ``code_bits`` / ``A``: one enable bit per lane). The memories
    have no initial contents and are not reset (a reset keeps the loaded data).

    Latency: read data 1 cycle after an enabled read address (synchronous read ports, inferred
    as block RAM; a write and a read of the same word in one cycle read the old word).
    Throughput: one write and one read per bank per cycle.

    Parameters
    ----------
    config : golden.core.CoreConfig

    Members
    -------
    weight_write, weight_read : Out(WritePort / ReadPort.Signature).array(C)
    meta_write, meta_read : Out(WritePort / ReadPort.Signature).array(C)
    act_write, act_read : Out(WritePort / ReadPort.Signature).array(R)
    gexp_write, gexp_read, base_write, base_read : Out(WritePort / ReadPort.Signature).array(R)
        FP16/BF16 activations only.
    output_write, output_read : Out(WritePort / ReadPort.Signature)
    """

    def __init__(self, config: gcore.CoreConfig):
        if not isinstance(config, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        self._config = config
        members = {}
        for name, (banks, depth, width, granularity) in buffer_shapes(config).items():
            write = Out(write_signature(depth, width, granularity))
            read = Out(read_signature(depth, width))
            if name != "output":
                write, read = write.array(banks), read.array(banks)
            members[f"{name}_write"], members[f"{name}_read"] = write, read
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for name, (banks, depth, width, granularity) in buffer_shapes(self._config).items():
            for bank in range(banks):
                label = {"weight": f"weights{bank}", "act": f"acts{bank}",
                         "output": "outputs"}.get(name, f"{name}{bank}")
                mem = Memory(shape=unsigned(width), depth=depth, init=[])
                m.submodules[label] = mem
                write, read = getattr(self, f"{name}_write"), getattr(self, f"{name}_read")
                if name != "output":
                    write, read = write[bank], read[bank]
                wiring.connect(m, wiring.flipped(write), mem.write_port(granularity=granularity))
                wiring.connect(m, wiring.flipped(read), mem.read_port())
        return m

"""The accelerator core's on-chip buffers: one ``lib.memory.Memory`` per bank, with the write
ports the command port (and the pre-pass) drives and the read ports of the controller.

Depths and word widths: :class:`golden.core.CoreConfig` (module docstring of
:mod:`golden.core`: the buffer map).
"""

from __future__ import annotations

from amaranth import Cat, Module, Shape, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import Out

from bitmod.golden import bfp
from bitmod.golden import core as gcore

from ..common import NO_COLLISION, check_form, keep_apart, platform_form, read_only

__all__ = ["HOST_WRITE_STAGES", "HOST_WRITTEN", "CoreBuffers", "read_signature", "word_writes",
           "write_signature"]

#: The buffers the command port writes (the others: the pre-pass and the drain).
HOST_WRITTEN = ("weight", "meta", "act")
#: Register stages on their write ports with ``register_writes``.
HOST_WRITE_STAGES = 2


def write_signature(depth: int, width: int, granularity: int | None = None):
    """A buffer's write port (:class:`amaranth.lib.memory.WritePort.Signature`: ``addr``,
    ``data``, ``en`` flow into the buffer)."""
    return WritePort.Signature(addr_width=Shape.cast(range(depth)).width, shape=unsigned(width),
                               granularity=granularity)


def read_signature(depth: int, width: int):
    """A buffer's synchronous read port (:class:`amaranth.lib.memory.ReadPort.Signature`:
    ``addr`` and ``en`` in, ``data`` out one cycle after an enabled address)."""
    return ReadPort.Signature(addr_width=Shape.cast(range(depth)).width, shape=unsigned(width))


def word_writes(buffer: str, word: int, lanes: int, lane_bits: int) -> list[tuple[int, int]]:
    """The ``(data, en)`` writes that store ``word`` (``lanes`` elements of ``lane_bits``
    bits, lane 0 lowest; ``lanes`` = the port's enable bits) through a bank of ``buffer``'s
    write port: a granular :data:`HOST_WRITTEN` bank stores its data's element in every
    enabled lane, so one write per lane, the element in ``data`` and the lane's bit in ``en``;
    any other bank, one write of the whole word."""
    if buffer not in HOST_WRITTEN or lanes == 1:
        return [(word, (1 << lanes) - 1)]
    mask = (1 << lane_bits) - 1
    return [(word >> (lane * lane_bits) & mask, 1 << lane) for lane in range(lanes)]


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


@read_only("config", "register_writes", "host_domain")
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
    have no initial contents and are not reset (a reset keeps the loaded data). A write to a
    :data:`HOST_WRITTEN` buffer stores one element, its ``data``'s lowest word (lane 0's bits;
    the whole word for ``meta``), in every enabled lane: the command port writes one element
    per command, and the banks' write registers hold that element, not ``L`` copies.

    Latency: read data 1 cycle after an enabled read address (synchronous read ports, inferred
    as block RAM; a write and a read of the same word in one cycle read the old word in
    simulation, and anything on the FPGAs: :data:`hdl.common.NO_COLLISION`, no such read is
    used). With :attr:`register_writes` a write to a :data:`HOST_WRITTEN` buffer lands
    :data:`HOST_WRITE_STAGES` (2) cycles after its port's enable: the address, element and
    enables pass two registers, the second the bank's own (kept apart), so the command port's
    decode and the banks across the chip are three nets apart, not one (the ULX3S 10 x 10
    builds' paths at 65 and 100 MHz: 12.6 ns of routing through the decode, and 10 ns into a
    bank's registered enable). The command port's writes come long before a job that reads
    them (``start`` is a later command). Throughput: one write and one read per bank per
    cycle.

    Parameters
    ----------
    config : golden.core.CoreConfig
    register_writes : bool or None
        Register the host-written buffers' write ports; ``None`` (default): on every platform
        but the iCE40 (whose LCs the iCEBreaker default needs). Only in ``sync``.
    host_domain : str
        The clock domain of the host-written buffers' write ports (default ``sync``). A split
        top's is ``link``: the block RAMs' write side runs on the link's clock, written by
        :class:`~hdl.array.host_writes.HostWrites` from its registers, and the read side on the
        core's (the controller reads only in a job, and no write is ``ok`` during one).

    Members
    -------
    weight_write, weight_read : Out(WritePort / ReadPort.Signature).array(C)
    meta_write, meta_read : Out(WritePort / ReadPort.Signature).array(C)
    act_write, act_read : Out(WritePort / ReadPort.Signature).array(R)
    gexp_write, gexp_read, base_write, base_read : Out(WritePort / ReadPort.Signature).array(R)
        FP16/BF16 activations only.
    output_write, output_read : Out(WritePort / ReadPort.Signature)
    """

    def __init__(self, config: gcore.CoreConfig, register_writes: bool | None = None,
                 host_domain: str = "sync"):
        if not isinstance(config, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        if not isinstance(host_domain, str) or not host_domain:
            raise TypeError(f"host_domain must be a clock domain's name, not {host_domain!r}")
        self._config = config
        self._register_writes = check_form("register_writes", register_writes)
        self._host_domain = host_domain
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
        registered = platform_form(self._register_writes, platform, on_ice40=False)
        for name, (banks, depth, width, granularity) in buffer_shapes(self._config).items():
            for bank in range(banks):
                label = {"weight": f"weights{bank}", "act": f"acts{bank}",
                         "output": "outputs"}.get(name, f"{name}{bank}")
                # No read of a word in its write's cycle is used: the host writes only between
                # jobs (golden.core.CoreModel refuses buffer commands while busy), the
                # controller reads only in a job, and the pre-pass's words are read cycles
                # after their writes.
                # (Ports on two clocks: no same-cycle read to rule out, and Yosys asserts on a
                # collision mask between them.)
                two_clocks = name in HOST_WRITTEN and self._host_domain != "sync"
                mem = Memory(shape=unsigned(width), depth=depth, init=[],
                             attrs={} if two_clocks else {NO_COLLISION: 1})
                m.submodules[label] = mem
                write, read = getattr(self, f"{name}_write"), getattr(self, f"{name}_read")
                if name != "output":
                    write, read = write[bank], read[bank]
                if name in HOST_WRITTEN:
                    port = mem.write_port(domain=self._host_domain, granularity=granularity)
                    # In a domain of its own the sender registers the write (HostWrites).
                    self._host_write(m, label, write, port,
                                     registered and self._host_domain == "sync", granularity)
                else:
                    port = mem.write_port(granularity=granularity)
                    wiring.connect(m, wiring.flipped(write), port)
                wiring.connect(m, wiring.flipped(read), mem.read_port())
        return m

    @staticmethod
    def _host_write(m: Module, label: str, write, port, registered: bool,
                    granularity: int | None) -> None:
        """A host-written bank's write: the element (``data``'s lowest ``granularity`` bits,
        the whole word without granularity) into every enabled lane, through
        :data:`HOST_WRITE_STAGES` registers of the address, the element and the enables with
        ``registered``. The last stage's registers are the bank's own (kept apart): every
        bank's hold the same address and element, and merged, one register drove the write
        ports of banks across the chip (the ULX3S 10 x 10 x 8 build at 82 MHz, seed 2: 11.3 ns
        from the merged data register to activation bank 6's block RAM). The earlier stages
        are shared by the banks (the same build with every stage kept apart, 860 flip-flops
        more, found no legal placement on either seed)."""
        lanes = len(port.data) // granularity if granularity else 1
        sources = (write.addr, write.data[:granularity or len(write.data)], write.en)
        if registered:
            for stage in range(HOST_WRITE_STAGES):
                last = stage == HOST_WRITE_STAGES - 1
                regs = [Signal(len(sig), name=f"{label}_w{stage}_{part}")
                        for sig, part in zip(sources, ("addr", "element", "en"), strict=True)]
                if last:
                    regs = [keep_apart(reg) for reg in regs]
                m.d.sync += [reg.eq(sig) for reg, sig in zip(regs, sources, strict=True)]
                sources = regs
        addr, element, en = sources
        m.d.comb += [port.addr.eq(addr), port.data.eq(Cat(*[element] * lanes)), port.en.eq(en)]

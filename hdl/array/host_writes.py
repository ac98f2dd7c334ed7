"""The host's buffer writes in the link's clock domain: a split top's weight, meta and activation
writes, done beside the bus adapter instead of in the core's command port.

Semantics: :meth:`golden.core.CoreModel.command` (an ``ok`` ``write_weight`` / ``write_meta`` /
``write_act`` stores its element in the bank, word and lane its address names).
"""

from __future__ import annotations

from amaranth import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from bitmod.golden import core as gcore

from ..common import read_only
from .buffers import HOST_WRITTEN, buffer_shapes, write_signature
from .command_port import cmd_layout, decode_writes

__all__ = ["HostWrites"]


@read_only("config")
class HostWrites(wiring.Component):
    """Stores an ``ok`` host write in its buffer bank, in the clock domain of the sender.

    A split top (:class:`fpga.top.AcceleratorTop` with the link on its own clock) runs this
    block in the ``link`` domain beside the bus adapter, and the core's host-written banks
    (:data:`~hdl.array.buffers.HOST_WRITTEN`) take their writes on a second block-RAM port in
    that domain (:class:`~hdl.array.buffers.CoreBuffers` ``host_domain``). The core's command
    port still checks every command and answers it (its status, ``busy`` included), but writes
    no buffer. This block watches the command the adapter sent and the core's answer: when
    :attr:`commit` is high (the answer is taken and its status is ``ok``) and the command is a
    write, it registers the bank's write (address, element, the lane's enable) and the write
    lands at the end of the next cycle. So none of the paths from the command to a bank's
    write port (a decode of the op, bank and lane, one net to every bank across the chip: the
    ULX3S 7 x 6 x 16 builds' worst paths at 100 MHz, 10.8-14 ns) is timed at the core's
    clock, and the command port's decode and the banks' write registers leave it.

    Order: the adapter keeps one transaction outstanding and takes its next request no earlier
    than the cycle after it takes the answer, and that request reaches the core through the
    command FIFO (at least two core cycles more). So a write lands before any later command,
    a ``start`` included, reaches the core, as it does when the command port writes. A write
    is only ever ``ok`` while no job runs, so no job reads a bank while this block writes it.

    Latency: the write lands one cycle after :attr:`commit` (the registers of this block
    drive the write ports). Throughput: one write per transaction (at most one per two
    cycles: the adapter's).

    Parameters
    ----------
    config : golden.core.CoreConfig

    Members
    -------
    cmd : In(cmd_layout(config))
        The command sent to the core, held while its answer is awaited and taken.
    commit : In(1)
        The core's ``ok`` answer to :attr:`cmd` is taken in this cycle.
    weight_write, meta_write : In(WritePort.Signature).array(C)
    act_write : In(WritePort.Signature).array(R)
        To the core's host-written banks: the element in the data's lowest bits, one enable
        per lane for ``weight`` and ``act`` (the banks store the element in every enabled
        lane, :class:`~hdl.array.buffers.CoreBuffers`), the whole word for ``meta``.
    """

    def __init__(self, config: gcore.CoreConfig):
        if not isinstance(config, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        self._config = mp = config
        members = {"cmd": In(cmd_layout(mp)), "commit": In(1)}
        for name, (banks, depth, width, granularity) in buffer_shapes(mp).items():
            if name in HOST_WRITTEN:
                members[f"{name}_write"] = In(write_signature(depth, width,
                                                              granularity)).array(banks)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        mp = self._config
        shapes = buffer_shapes(mp)
        decoded = decode_writes(mp, self.cmd, self.commit)
        for name in HOST_WRITTEN:
            _, _, width, granularity = shapes[name]
            fields, _, hits, lanes = decoded[name]
            element = self.cmd.data[:granularity or width]
            for port, hit in zip(getattr(self, f"{name}_write"), hits, strict=True):
                m.d.sync += [port.addr.eq(fields["word"]), port.data.eq(element),
                             port.en.eq(Cat(*[hit & lanes[i] for i in range(len(lanes))]))]
        return m

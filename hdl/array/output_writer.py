"""The accelerator core's drain: the array's results into the output buffer."""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import core as gcore

from ..common import check_form, platform_form, read_only
from .buffers import write_signature
from .command_port import job_layout

__all__ = ["OutputWriter"]


@read_only("config", "register_position")
class OutputWriter(wiring.Component):
    """Writes the array's results to the output buffer at ``m * max_n + n`` and ends the job.

    The array gives ``R * C`` codes per tile, row-major, tiles in the controller's order
    (``m0`` outer, ``n0`` inner; :class:`~hdl.array.controller.CoreController`). The result of
    tile row ``r``, column ``c`` is written to :meth:`golden.core.CoreConfig.output_address`
    ``(m0 + r, n0 + c)`` when ``m0 + r < M`` and ``n0 + c < N``; padding results are dropped.
    :attr:`job_end` is high in the cycle the job's last result (of the last tile) arrives.
    ``start`` returns the position to the first result. The write address is kept as running
    sums (``d_row = (m0 + r) * max_n``), so no multiplier, and whether the position is inside
    the job, and its tile the last of its tile row or of the job, as flip-flops updated with
    it (one adder before the write address, no compare before an enable).

    Latency: the write happens in the cycle a result is on offer (combinational write
    enable). Throughput: one result per cycle; ``i_result.ready`` is always 1, so the array
    is never held by the output buffer.

    Parameters
    ----------
    config : golden.core.CoreConfig
    register_position : bool or None
        The position's compares as flip-flops; ``None`` (default): on every platform but the
        iCE40, which compares the position where it is used (fewer LCs).

    Members
    -------
    i_result : In(stream.Signature(StructLayout({"code": unsigned(out_bits)})))
        The array's ``o_stream``.
    start : In(1)
    job : In(job_layout(config))
        ``M`` and ``N`` of the running job.
    output_write : In(WritePort.Signature)
        The output buffer's write port.
    job_end : Out(1)
    """

    def __init__(self, config: gcore.CoreConfig, register_position: bool | None = None):
        if not isinstance(config, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        self._register_position = check_form("register_position", register_position)
        self._config = mp = config
        super().__init__({
            "i_result": In(stream.Signature(data.StructLayout({"code": unsigned(mp.out_bits)}))),
            "start": In(1),
            "job": In(job_layout(mp)),
            "output_write": In(write_signature(mp.out_depth, mp.out_bits)),
            "job_end": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        mp = self._config
        R, C = mp.rows, mp.cols
        job_m, job_n = self.job.m, self.job.n
        d_r = Signal(range(max(R, 2)))
        d_c = Signal(range(max(C, 2)))
        d_m0 = Signal(range(mp.max_m + R + 1))
        d_n0 = Signal(range(mp.max_n + C + 1))
        d_row = Signal(range((mp.max_m + R) * mp.max_n + 1))  # (d_m0 + d_r) * max_n
        d_tile_row = Signal(range((mp.max_m + R) * mp.max_n + 1))  # d_m0 * max_n
        # The position's compares as flip-flops, each loaded with its next value where the
        # position moves, so the write enable and the counters' enables are a LUT or two of
        # flip-flops (the adders and compares of the running position into the counters'
        # enables were the path of a ULX3S 7 x 6 x 16 build at 100 MHz: 11.7 ns).
        row_pos = Signal(range(mp.max_m + R + 1))  # d_m0 + d_r
        col_pos = Signal(range(mp.max_n + C + 1))  # d_n0 + d_c
        row_in = Signal()  # row_pos < M
        col_in = Signal()  # col_pos < N
        n_last = Signal()  # d_n0 + C >= N: the tile is the last of its tile row
        m_last = Signal()  # d_m0 + R >= M: the tile row is the job's last
        with m.If(self.start):
            m.d.sync += [d_r.eq(0), d_c.eq(0), d_m0.eq(0), d_n0.eq(0), d_row.eq(0),
                         d_tile_row.eq(0), row_pos.eq(0), col_pos.eq(0),
                         row_in.eq(job_m > 0), col_in.eq(job_n > 0),
                         n_last.eq(job_n <= C), m_last.eq(job_m <= R)]
        # The iCE40 form compares the position where it is used (the flags' registers are
        # left without loads, and synthesis drops them): the LCs the iCEBreaker default needs.
        use = {"row_in": row_in, "col_in": col_in, "n_last": n_last, "m_last": m_last,
               "col_pos": col_pos}
        if not platform_form(self._register_position, platform, on_ice40=False):
            use = {"row_in": d_m0 + d_r < job_m, "col_in": d_n0 + d_c < job_n,
                   "n_last": d_n0 + C >= job_n, "m_last": d_m0 + R >= job_m,
                   "col_pos": d_n0 + d_c}
        out, wr = self.i_result, self.output_write
        m.d.comb += [
            out.ready.eq(1),
            wr.addr.eq(d_row + use["col_pos"]),
            wr.data.eq(out.payload.code),
            wr.en.eq(out.valid & use["row_in"] & use["col_in"]),
        ]
        with m.If(out.valid):
            with m.If(d_c == C - 1):
                # The next result is at column d_n0 of a tile inside the job (or none comes
                # before the next start).
                m.d.sync += [d_c.eq(0), col_pos.eq(d_n0), col_in.eq(1)]
                with m.If(d_r == R - 1):
                    m.d.sync += [d_r.eq(0), row_in.eq(1)]
                    with m.If(use["n_last"]):
                        with m.If(use["m_last"]):
                            m.d.comb += self.job_end.eq(1)
                        with m.Else():
                            m.d.sync += [d_n0.eq(0), d_m0.eq(d_m0 + R), row_pos.eq(d_m0 + R),
                                         col_pos.eq(0), n_last.eq(job_n <= C),
                                         m_last.eq(d_m0 + 2 * R >= job_m),
                                         d_tile_row.eq(d_tile_row + R * mp.max_n),
                                         d_row.eq(d_tile_row + R * mp.max_n)]
                    with m.Else():
                        m.d.sync += [d_n0.eq(d_n0 + C), col_pos.eq(d_n0 + C), row_pos.eq(d_m0),
                                     n_last.eq(d_n0 + 2 * C >= job_n), d_row.eq(d_tile_row)]
                with m.Else():
                    m.d.sync += [d_r.eq(d_r + 1), d_row.eq(d_row + mp.max_n),
                                 row_pos.eq(row_pos + 1), row_in.eq(row_pos + 1 < job_m)]
            with m.Else():
                m.d.sync += [d_c.eq(d_c + 1), col_pos.eq(col_pos + 1),
                             col_in.eq(col_pos + 1 < job_n)]
        return m

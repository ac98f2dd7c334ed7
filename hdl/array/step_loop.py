"""The core controller's loops: a job's tiles, groups and weight-steps in golden's order, each
step as its buffer addresses, flags and masks.

Twin: the step order of :func:`golden.gemm.gemm` (module docstring, steps 2-3: ``m0``
outer, ``n0``, groups, steps).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import core as gcore

from ..common import read_only
from .command_port import job_layout
from .step_reader import bank_lanes, read_entry_layout

__all__ = ["StepLoop"]


@read_only("config")
class StepLoop(wiring.Component):
    """Walks a job's weight-steps: ``m0`` (outer, by ``R``), ``n0`` (by ``C``, with
    :attr:`n_tiles`), groups and steps (``k0`` by ``L``), one step per :attr:`advance`.

    :attr:`step` is the current step (:func:`~hdl.array.step_reader.read_entry_layout`):
    the word addresses ``weight = n_tile * k_steps + k0 / L``, ``act = m_tile * k_steps +
    k0 / L``, ``meta = n_tile * max_groups + g``, ``gexp = m_tile * max_groups + g`` and
    ``base = m_tile`` (the buffer map of :mod:`golden.core`); the masks ``lanes`` (``k0 +
    lane < K``; with :func:`~hdl.array.step_reader.bank_lanes` again in ``bank_lanes``, once
    per bank), ``rows`` (``m0 + r < M``) and ``cols`` (``n0 + c < N``); ``group_last`` (the
    group's last step or K's), ``out_last`` (K's last step); ``rows_valid`` and
    ``cols_valid``, the real rows and columns of the tile.

    Every address is a register kept equal to its base plus index, and the loops' end flags
    (``k0 + L >= K``, ``n0 + C >= N``, ``m0 + R >= M``) registers written with their counters,
    so no adder or comparator sits between a counter and a block RAM or the loop's enables
    (the job registers do not change during a job). With feed stages (``config.feed_stages >
    0``) the m-tile's counters and bases also have an enable of their own, from two flags
    written with the end flags (``last_k & last_n & ~last_m`` and ``last_k & ~last_m``), so
    their enables are a LUT or two behind :attr:`advance`.

    Latency: :attr:`restart` or :attr:`advance` in cycle ``t``, the step in ``t + 1``.
    Throughput: one step per cycle.

    Parameters
    ----------
    config : golden.core.CoreConfig

    Members
    -------
    job : In(job_layout(config))
        ``m``, ``n``, ``k``; held during the job.
    restart : In(1)
        Back to the job's first step; :attr:`remain` rises.
    advance : In(1)
        On to the next step (while :attr:`remain`); after the last one :attr:`remain` falls.
    n_tiles : In(1)
        Walk the n-tiles within each m-tile (the feed); low, one pass over K per m-tile (the
        pre-pass over the activations).
    stop : In(1)
        No step remains (the job's end), over :attr:`restart`.
    remain : Out(1)
        :attr:`step` is a step of the job.
    step : Out(read_entry_layout(config))
    """

    def __init__(self, config: gcore.CoreConfig):
        if not isinstance(config, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        self._config = config
        super().__init__({"job": In(job_layout(config)), "restart": In(1), "advance": In(1),
                          "n_tiles": In(1), "stop": In(1), "remain": Out(1),
                          "step": Out(read_entry_layout(config))})

    def elaborate(self, platform):
        m = Module()
        mp = self._config
        R, C, L = mp.rows, mp.cols, mp.lanes
        steps_per_group = mp.group_size // L
        job_m, job_n, job_k = self.job.m, self.job.n, self.job.k

        def counter(name, bound):
            return Signal(range(bound + 1), name=name)

        m0, n0, k0 = (counter("m0", mp.max_m + R), counter("n0", mp.max_n + C),
                      counter("k0", mp.max_k + L))
        m_tile = counter("m_tile", mp.m_tiles)
        sg = counter("sg", steps_per_group)  # the step within its group
        # Bases of the current tiles, and the addresses (base + index).
        act_base, w_base = counter("act_base", mp.act_depth), counter("w_base", mp.weight_depth)
        meta_base, gx_base = (counter("meta_base", mp.meta_depth),
                              counter("gx_base", mp.gexp_depth))
        a_w, a_meta = counter("a_w", mp.weight_depth), counter("a_meta", mp.meta_depth)
        a_act, a_gx = counter("a_act", mp.act_depth), counter("a_gx", mp.gexp_depth)
        registers = [m0, n0, k0, m_tile, sg, act_base, w_base, meta_base, gx_base,
                     a_w, a_meta, a_act, a_gx]
        last_k, last_n, last_m = (Signal(name="last_k"), Signal(name="last_n"),
                                  Signal(name="last_m"))

        # With feed stages (an array spread across a large chip) the m-tile's registers have an
        # enable of their own: restart, or an advance at an m-tile's end, from two flip-flops
        # kept equal to ``last_k & last_n & ~last_m`` (the feed's walk over n-tiles) and
        # ``last_k & ~last_m`` (the pre-pass's), written with the end flags: so the enables of
        # ``m0`` and the m-tile's bases are a LUT or two behind ``advance``, not the end
        # flags' whole decode (the ULX3S 7 x 6 x 16 build at 100 MHz, seed 2: the queue's
        # count -> five LUTs -> ``m0``'s enable, 12.0 ns).
        spread = mp.feed_stages > 0
        m_next = {"feed": Signal(name="m_next_feed"), "pre": Signal(name="m_next_pre")}

        def end_flags(lk, ln, lm):
            """The end flags' next values: the m-tile flags from them (the spread form)."""
            if spread:
                m.d.sync += [m_next["feed"].eq(lk & ln & ~lm), m_next["pre"].eq(lk & ~lm)]

        # The spread form also holds the step's masks and real counts in registers, written
        # with the counters they follow from, so that no adder or compare of a counter sits
        # before the queue's entries (the same build on seed 1: ``k0`` -> a lane's compare ->
        # an entry of the queue, 10.1 ns; on seed 2, 12 entries at 10.0-10.4 ns).
        held = self._held_fields(mp) if spread else None

        def fields_at(k=None, n=None, m_=None):
            """The held fields for the counters' new values (``n`` and ``m_`` with their end
            flags' new values)."""
            if held is None:
                return
            if k is not None:
                m.d.sync += held["lanes"].eq(Cat(*[k + lane < job_k for lane in range(L)]))
            for value, side, bound, job, count in ((n, "cols", C, job_n, "cols_valid"),
                                                   (m_, "rows", R, job_m, "rows_valid")):
                if value is not None:
                    start, last = value
                    m.d.sync += [held[side].eq(Cat(*[start + i < job for i in range(bound)])),
                                 held[count].eq(Mux(last, job - start, bound))]

        def first_k():
            m.d.sync += [k0.eq(0), sg.eq(0), last_k.eq(job_k <= L)]
            fields_at(k=0)

        def first_n():
            m.d.sync += [n0.eq(0), last_n.eq(job_n <= C), w_base.eq(0), meta_base.eq(0),
                         a_w.eq(0), a_meta.eq(0)]
            fields_at(n=(0, job_n <= C))

        def m_tile_moves():
            """The next m-tile's counters and bases (spread form; its first addresses are
            written with the other addresses)."""
            m.d.sync += [m0.eq(m0 + R), last_m.eq(m0 + 2 * R >= job_m), m_tile.eq(m_tile + 1),
                         act_base.eq(act_base + mp.k_steps),
                         gx_base.eq(gx_base + mp.max_groups)]
            fields_at(m_=(m0 + R, m0 + 2 * R >= job_m))

        def next_m_tile():
            with m.If(last_m):
                m.d.sync += self.remain.eq(0)
                end_flags(job_k <= L, job_n <= C, last_m)
            with m.Else():
                if spread:  # (the m-tile's counters and bases: in their own block, below)
                    m.d.sync += [a_act.eq(act_base + mp.k_steps),
                                 a_gx.eq(gx_base + mp.max_groups)]
                    end_flags(job_k <= L, job_n <= C, m0 + 2 * R >= job_m)
                else:
                    m.d.sync += [m0.eq(m0 + R), last_m.eq(m0 + 2 * R >= job_m),
                                 m_tile.eq(m_tile + 1),
                                 act_base.eq(act_base + mp.k_steps),
                                 a_act.eq(act_base + mp.k_steps),
                                 gx_base.eq(gx_base + mp.max_groups),
                                 a_gx.eq(gx_base + mp.max_groups)]

        def tile_end():
            """After a tile's last step: the next n-tile, or the next m-tile's first."""
            with m.If(self.n_tiles & ~last_n):
                m.d.sync += [n0.eq(n0 + C), last_n.eq(n0 + 2 * C >= job_n),
                             w_base.eq(w_base + mp.k_steps), a_w.eq(w_base + mp.k_steps),
                             meta_base.eq(meta_base + mp.max_groups),
                             a_meta.eq(meta_base + mp.max_groups)]
                end_flags(job_k <= L, n0 + 2 * C >= job_n, last_m)
                fields_at(n=(n0 + C, n0 + 2 * C >= job_n))
            with m.Else():
                first_n()
                next_m_tile()

        with m.If(self.restart):
            m.d.sync += [reg.eq(0) for reg in registers]
            m.d.sync += [last_k.eq(job_k <= L), last_n.eq(job_n <= C), last_m.eq(job_m <= R),
                         self.remain.eq(1)]
            end_flags(job_k <= L, job_n <= C, job_m <= R)
            fields_at(k=0, n=(0, job_n <= C), m_=(0, job_m <= R))
        with m.Elif(self.advance & self.remain):
            with m.If(last_k):
                first_k()
                # Back to the bases (tile_end moves those that change, and their address).
                m.d.sync += [a_w.eq(w_base), a_act.eq(act_base), a_meta.eq(meta_base),
                             a_gx.eq(gx_base)]
                tile_end()
            with m.Else():
                m.d.sync += [k0.eq(k0 + L), last_k.eq(k0 + 2 * L >= job_k),
                             a_w.eq(a_w + 1), a_act.eq(a_act + 1)]
                end_flags(k0 + 2 * L >= job_k, last_n, last_m)
                fields_at(k=k0 + L)
                with m.If(sg == steps_per_group - 1):
                    m.d.sync += [sg.eq(0), a_meta.eq(a_meta + 1), a_gx.eq(a_gx + 1)]
                with m.Else():
                    m.d.sync += sg.eq(sg + 1)
        if spread:
            # (restart's zeros for these are in the block above)
            moves = Mux(self.n_tiles, m_next["feed"], m_next["pre"])
            with m.If(~self.restart & self.advance & self.remain & moves):
                m_tile_moves()
        with m.If(self.stop):
            m.d.sync += self.remain.eq(0)

        step = self.step
        if held is None:
            held = {"lanes": Cat(*[k0 + lane < job_k for lane in range(L)]),
                    "rows": Cat(*[m0 + r < job_m for r in range(R)]),
                    "cols": Cat(*[n0 + c < job_n for c in range(C)]),
                    "rows_valid": Mux(last_m, job_m - m0, R),
                    "cols_valid": Mux(last_n, job_n - n0, C)}
        if bank_lanes(mp):  # every bank's copy of the lane mask too
            m.d.comb += step.bank_lanes.eq(_repeat(step.bank_lanes, step.lanes))
        m.d.comb += [
            # (every bank's copy of a buffer's address: read_entry_layout)
            step.weight.eq(_repeat(step.weight, a_w)), step.meta.eq(_repeat(step.meta, a_meta)),
            step.act.eq(_repeat(step.act, a_act)),
            step.lanes.eq(held["lanes"]),
            step.rows.eq(held["rows"]),
            step.cols.eq(held["cols"]),
            step.group_last.eq(last_k | (sg == steps_per_group - 1)),
            step.out_last.eq(last_k),
            step.rows_valid.eq(held["rows_valid"]),
            step.cols_valid.eq(held["cols_valid"]),
        ]
        if mp.act_format != "int8":
            m.d.comb += [step.gexp.eq(_repeat(step.gexp, a_gx)),
                         step.base.eq(_repeat(step.base, m_tile))]
        return m


    @staticmethod
    def _held_fields(mp) -> dict:
        """The spread form's registers of the step's masks and real counts (what they hold
        before the first restart is never read: :attr:`remain` is low until then)."""
        return {"lanes": Signal(mp.lanes, name="held_lanes"),
                "rows": Signal(mp.rows, name="held_rows"),
                "cols": Signal(mp.cols, name="held_cols"),
                "rows_valid": Signal(range(mp.rows + 1), name="held_rows_valid"),
                "cols_valid": Signal(range(mp.cols + 1), name="held_cols_valid")}


def _repeat(field, value):
    """``value`` in every element of the per-bank array ``field`` (each element's width: the
    counters are one bit wider than the addresses they hold)."""
    width = len(field[0])
    return Cat(*[value[:width]] * len(field))

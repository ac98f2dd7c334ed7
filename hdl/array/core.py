"""The accelerator core: buffers, tiled-GEMM controller, counters and a command port around
the systolic array, wired from the blocks of command_port.py, buffers.py, controller.py and
output_writer.py.

Command-level twin and protocol definition: :mod:`golden.core` (:class:`golden.core.CoreModel`
gives the response of every command); outputs bit-exact with :func:`golden.gemm.gemm`.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bitmod.golden import core as gcore

from ..common import read_only
from .array import SystolicArray
from .buffers import HOST_WRITTEN, CoreBuffers, buffer_shapes, write_signature
from .command_port import CommandPort, cmd_layout, resp_layout
from .controller import CoreController
from .output_writer import OutputWriter
from .step_reader import FeedForm

__all__ = ["AcceleratorCore"]


@read_only("cmd_layout", "resp_layout")
class AcceleratorCore(wiring.Component):
    """Runs ``Y[M, N] = X[M, K] W^T`` from on-chip buffers on an ``R x C`` array.

    The host loads weights, activations and the special-value register, sets the job
    dimensions, starts the job, waits for it and reads the output codes (FP32 or FP16) and the
    counters, all through one command stream; every command gets exactly one response, in
    order. Outputs equal :func:`golden.gemm.gemm` ``(...).codes`` bit for bit.

    Commands (``i_cmd`` payload ``{op: 4, addr: A, data: 32}``; response ``{status: 3,
    data: 32}``; ``A`` = :attr:`golden.core.CoreMap.addr_bits`)

    ==  =============  ======================  ==============================  ============
    op  name           addr                    data                            resp. data
    ==  =============  ======================  ==============================  ============
    0   status         --                      --                              busy|done<<1
    1   write_weight   {lane, word, col bank}  code (code_bits)                0
    2   write_meta     {word, col bank}        scale | selector << scale_bits  0
    3   write_act      {lane, word, row bank}  16-bit word (int8 sign-ext.)    0
    4   write_special  0                       special-value register          0
    5   set_job        0: M, 1: N, 2: K        1 .. max_m / max_n / max_k      0
    6   start          --                      --                              0
    7   wait           --                      --                              done << 1
    8   read_output    m * max_n + n           --                              output code
    9   read_counter   2 * counter + half      --                              32-bit half
    ==  =============  ======================  ==============================  ============

    Address fields, low bits first, and the buffer depths: :mod:`golden.core`. ``wait``
    answers once the core is idle (at once if it is). Status codes (first that applies):
    ``bad_op`` 1 (op 10..15), ``busy`` 5 (op 1-6 or 8 while a job runs: buffers and job
    registers cannot change under a job), ``bad_addr`` 2 (a field beyond its buffer: bank >=
    C/R, word >= depth, lane >= L, nonzero unused address bits; counter >= 6; set_job field >=
    3; write_special addr != 0), ``bad_data`` 3 (a code wider than ``code_bits``; a selector
    >= the number of formats or bits above the meta word, or a scale code that is not a power
    of two for a PE kind that shifts by it (minifloat); an INT8 word that is not a
    sign-extended int8; an FP16/BF16 Inf/NaN; bits above 16), ``bad_job`` 4 (``set_job``
    value 0 or above the buffer bound; ``start`` before M, N and K are all set), else ``ok`` 0.
    A refused command changes nothing. Reset clears the registers (job, special, counters,
    done) but not the buffers.

    Blocks, each its own Component with its own test beside golden: the command port
    (:class:`~hdl.array.command_port.CommandPort`: checks, job and special registers, buffer
    writes, responses), the buffers (:class:`~hdl.array.buffers.CoreBuffers`), the controller
    (:class:`~hdl.array.controller.CoreController`: job state, pre-pass, the weight-steps and
    the counters), the :class:`~hdl.array.SystolicArray` and the drain to the output buffer
    (:class:`~hdl.array.output_writer.OutputWriter`); :meth:`elaborate` only wires them.

    Buffers (``lib.memory.Memory``, synchronous read ports: block RAM), with ``k_steps =
    ceil(max_k / L)``, ``max_groups = ceil(max_k / G)``, ``m_tiles = ceil(max_m / R)``,
    ``n_tiles = ceil(max_n / C)``: weights ``C x n_tiles * k_steps`` words of ``L *
    code_bits``; meta ``C x n_tiles * max_groups`` of ``2 + scale_bits``; activations ``R x
    m_tiles * k_steps`` of ``L * A`` (A = 8 INT8, 16 FP); group exponents ``R x m_tiles *
    max_groups`` and token floors ``R x m_tiles`` of ``E`` bits (FP only); outputs ``max_m *
    max_n`` of ``out_bits`` (32 for FP32, 16 for FP16: the buffer holds exactly the drained
    codes, and ``read_output`` returns them zero-extended to 32 bits). The array is built with
    ``max_groups`` groups per output and the core's ``out_format``.

    Controller. FP16/BF16 first run a *pre-pass*: per m-tile it reads every activation word
    once (one word per row bank per cycle), computes each row's group exponent ``gexp`` (the
    largest effective exponent of the group's elements, :func:`golden.bfp.block_convert`) and
    token floor ``base = max(1, max_g gexp - (2**X - 1))`` (:func:`golden.gemm.act_mantissas`)
    and stores them. The feed phase then loops ``m0`` (outer), ``n0``, groups and weight-steps,
    reading one word per bank per cycle through a one-stage pipeline that advances when the
    array takes a step (``adv = ~valid | ready``), and gives the array zero activations for
    padding rows and for lanes at ``k >= K``, zero codes, selectors and scales for padding
    columns. The drain writes the array's ``R * C`` results per tile to ``m * max_n + n``,
    skipping padding; the job ends with the last write.

    Counters (48 bits, cleared by ``start``):

    * ``cycles``: cycles the core is busy, from the second cycle after ``start`` is accepted
      (the command port registers the job's start) to the last output write
      (:func:`golden.core.job_counters`: ``prepass + FEED_LATENCY + gemm_cycles(...)``
      with the array's fill :attr:`golden.gemm.ArrayConfig.fill`,
      ``prepass = ceil(M / R) * ceil(K / L) + 1`` for FP activations, 0 for INT8);
    * ``busy_pe_cycles``: ``T * rows_valid * cols_valid`` per step the array takes: the
      term-cycles of real outputs, :func:`golden.gemm.gemm_cycles` ``busy_pe_cycles``;
    * ``stall_cycles``: cycles of the feed phase in which the array would take a step but the
      controller has none ready although steps remain (3 per job: the first step's cycle in
      the controller's queue, its buffer read and its data's register); the array is never
      held by backpressure (the output buffer takes a result every cycle).

    Latency: a command offered (``valid``) is checked for one cycle, then accepted
    (``ready``) and executed; :attr:`latency` (1) from accepted to its response valid;
    ``start`` accepted to done = ``cycles`` + 2. Throughput: one weight-step per clock from
    the buffers (the array takes one per ``T`` clocks); one command per 3 clocks.

    Parameters
    ----------
    config : golden.core.CoreConfig
        The array's parameters and the buffer bounds ``max_m``, ``max_n``, ``max_k``
        (validated there, with the buffer depths and the address map).
    host_write_domain : str or None
        ``None`` (default): the command port writes the weight, meta and activation banks.
        A domain's name (a split top's ``link``): the command port checks and answers those
        writes but the banks take them on the ``*_write`` ports, in that domain, from
        :class:`~hdl.array.host_writes.HostWrites` (its docstring: why the order holds).

    Members
    -------
    i_cmd : In(stream.Signature(cmd_layout))
    o_resp : Out(stream.Signature(resp_layout))
    weight_write, meta_write : Out(WritePort.Signature).array(C)
    act_write : Out(WritePort.Signature).array(R)
        With ``host_write_domain`` only: the host-written banks' write ports.
    """

    def __init__(self, config: gcore.CoreConfig | None = None,
                 host_write_domain: str | None = None):
        self._cfg = mp = gcore.CoreConfig() if config is None else config
        if not isinstance(mp, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        if host_write_domain is not None and (not isinstance(host_write_domain, str)
                                              or host_write_domain in ("", "sync")):
            raise ValueError(f"host_write_domain must be None or the name of a domain other "
                             f"than sync, not {host_write_domain!r}")
        self._host_write_domain = host_write_domain
        self._cmd_layout = cmd_layout(mp)
        self._resp_layout = resp_layout()
        members = {
            "i_cmd": In(stream.Signature(self._cmd_layout)),
            "o_resp": Out(stream.Signature(self._resp_layout)),
        }
        if host_write_domain is not None:
            for name, (banks, depth, width, granularity) in buffer_shapes(mp).items():
                if name in HOST_WRITTEN:
                    members[f"{name}_write"] = Out(write_signature(depth, width,
                                                                   granularity)).array(banks)
        super().__init__(members)

    config = property(lambda self: self._cfg, doc="The :class:`golden.core.CoreConfig`.")
    host_write_domain = property(lambda self: self._host_write_domain,
                                 doc="The host-written banks' write domain (None: the "
                                     "command port writes them, in ``sync``).")

    @property
    def latency(self) -> int:
        """Cycles from a command accepted to its response valid (``wait``: after the job)."""
        return 1

    def elaborate(self, platform):
        m = Module()
        mp = self._cfg
        fp = mp.act_format != "int8"
        # Extra feed stages are the form for arrays spread across a large chip: the reader's
        # banks then take their own ready copies and give each column's and row's sites their
        # own copy of the step taken (or, where the array announces no ready, the sites take
        # their own credit copies). Where the array announces its ``ready`` a cycle ahead the
        # controller registers its read enables from that (FeedForm.ready_ahead).
        spread = mp.feed_stages > 0
        form = FeedForm.for_platform(
            platform, ready_ahead=SystolicArray.announces_ready(mp.array, platform),
            bank_ready=spread)
        m.submodules.array = array = SystolicArray(
            mp.array, site_credits=spread and not form.bank_ready, site_taken=form.bank_ready)
        outside = self._host_write_domain is not None  # host writes come in on ports
        m.submodules.command_port = port = CommandPort(mp, writes=not outside)
        m.submodules.buffers = buffers = CoreBuffers(
            mp, host_domain=self._host_write_domain or "sync")
        m.submodules.controller = ctrl = CoreController(mp, form)
        m.submodules.output_writer = writer = OutputWriter(mp)

        # Host side: commands in, responses out; registers and job state across the blocks.
        wiring.connect(m, wiring.flipped(self.i_cmd), port.i_cmd)
        wiring.connect(m, port.o_resp, wiring.flipped(self.o_resp))
        m.d.comb += [
            port.busy.eq(ctrl.busy), port.done.eq(ctrl.done), port.counters.eq(ctrl.counters),
            ctrl.start.eq(port.start), ctrl.job.eq(port.job), ctrl.job_end.eq(writer.job_end),
            writer.start.eq(port.start), writer.job.eq(port.job),
            array.special_values.eq(port.special),
        ]
        # The command-port proof (hdl/proofs.py, CommandPortProof) reads the pending wait by
        # this name among the core's own signals.
        waiting = Signal()
        m.d.comb += waiting.eq(port.waiting)

        # Buffers: written by the command port (and the pre-pass), read by the controller; the
        # output buffer written by the drain and read by the command port.
        readers = ["weight", "meta", "act", *(["gexp", "base"] if fp else [])]
        for name in readers:
            for ours, theirs in zip(getattr(ctrl, f"{name}_read"),
                                    getattr(buffers, f"{name}_read"), strict=True):
                wiring.connect(m, ours, theirs)
        for name, writer_block in [*((name, self if outside else port) for name in HOST_WRITTEN),
                                   *([("gexp", ctrl), ("base", ctrl)] if fp else [])]:
            for ours, theirs in zip(getattr(writer_block, f"{name}_write"),
                                    getattr(buffers, f"{name}_write"), strict=True):
                # The core's own ports pass the writes on: the same direction as the buffers'.
                wiring.connect(m, wiring.flipped(ours) if writer_block is self else ours, theirs)
        wiring.connect(m, port.output_read, buffers.output_read)
        wiring.connect(m, writer.output_write, buffers.output_write)

        # The array: steps from the controller, results to the output buffer.
        wiring.connect(m, ctrl.o_step, array.i_stream)
        m.d.comb += ctrl.step_ready_next.eq(array.ready_next)
        if form.bank_ready:
            m.d.comb += array.site_taken.eq(ctrl.step_taken)
        wiring.connect(m, array.o_stream, writer.i_result)
        return m

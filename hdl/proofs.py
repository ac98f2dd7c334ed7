"""Formal proof harnesses: properties of the RTL as ``Assert``/``Assume``, for ``sim.formal.prove``.

Each harness is a ``wiring.Component`` whose ports are the ports of the design under test
(DUT), so every input of the DUT is a free input of the proof (``rst`` included: a reset may
come in any cycle and resets the harness's registers with the DUT's). ``Assume`` statements
restrict the environment to what the DUT's contract allows; ``Assert`` statements are the
properties. Every harness has a broken variant (a ``fault``, a broken DUT or an oversized
input) with which the proof must FAIL, so a passing proof is known to be able to fail.

Inductive proofs (``mode="prove"``) often need auxiliary invariants that tie the DUT's internal
registers to the harness's monitor: a k-induction step starts from *any* state in which the
asserts held for k cycles, and a state the DUT cannot reach (say, a CRC register that does not
match the bytes of the frame) is excluded only by asserting that it does not occur.
:func:`probe` finds such internal registers by name in the elaborated DUT (white-box access;
renaming one in the RTL makes the harness fail with a message naming it). Auxiliary
invariants are asserts like the others: a proof establishes them too.

Harnesses (the properties are stated as formulas in each docstring):

* :class:`BridgeProof`: the UART bridge issues a bus transaction only for a frame with a
  correct CRC-16 and a legal length;
* :class:`StreamRulesProof`: stream outputs of a DUT obey the valid/ready rules when its
  inputs do (:class:`~hdl.array.SystolicArray`; the test-only :class:`BrokenStage` must fail);
* :class:`CommandPortProof`: the accelerator core's command port gives exactly one response
  per accepted command, in order, with ``o_resp`` and the core's streams to and from its
  array obeying the stream rules;
* :class:`PEOverflowProof` (bounded): the bit-serial PE's group and output accumulators hold
  the exact (unbounded) sums for every legal input stream of ``max_groups`` groups;
* :class:`DrainProof`: the array's drain (:class:`~hdl.array.drain.ArrayDrain`) loses no PE
  output and passes them to its float converter in row-major order, none kept longer than
  :data:`golden.gemm.MERGE_LATENCY` cycles but by backpressure, under any output
  backpressure, when its inputs keep the array's schedule contract (the test-only
  :class:`_ExtraCreditDrain` and :class:`_MirroredDrain` must fail).

Measured modes, depths and run times: docs/verification.md; the tests: tests/test_proofs.py.
"""

from __future__ import annotations

from contextlib import contextmanager

from amaranth import (
    Assert,
    Assume,
    Cat,
    Const,
    Fragment,
    Module,
    Mux,
    ResetSignal,
    Signal,
    Value,
    signed,
)
from amaranth.lib import data, stream, wiring
from amaranth.lib import fifo as fifo_module
from amaranth.lib.wiring import In, Out

from bitmod.golden.checks import check_int
from bitmod.golden.core import DATA_BITS, OP_BITS, OPS, STATUS_BITS, CoreConfig
from bitmod.golden.gemm import MERGE_LATENCY, ArrayConfig
from bitmod.golden.pe import PEConfig
from bitmod.golden.protocol import CRC_INIT, CRC_POLY, SYNC, Cmd
from bitmod.hdl.arith.term_encoder import TermEncoderCore
from bitmod.hdl.array.core import AcceleratorCore
from bitmod.hdl.array.drain import ArrayDrain
from bitmod.hdl.link import bridge as bridge_module
from bitmod.hdl.link.bridge import Bridge
from bitmod.hdl.pe.bitserial import BitSerialPE

__all__ = [
    "BridgeProof",
    "BrokenResponder",
    "BrokenStage",
    "CommandPortProof",
    "DrainProof",
    "PEOverflowProof",
    "StreamRulesProof",
    "crc16_bitwise",
    "probe",
]


# ---- white-box access ---------------------------------------------------------------------------

def probe(fragment: Fragment, *names: str) -> dict:
    """The signals named ``names`` that the statements of ``fragment`` drive (its own, not those
    of its subfragments), by name.

    Parameters
    ----------
    fragment : Fragment
        An elaborated design (``Fragment.get(dut, platform)``).
    *names : str
        Signal names as written in the RTL (``crc = Signal(16)`` is named ``crc``).

    Returns
    -------
    dict
        ``{name: Signal}``.

    Raises
    ------
    LookupError
        A name is driven by no signal, or by several: the harness no longer matches the RTL.
    """
    found: dict[str, list] = {name: [] for name in names}
    for statements in fragment.statements.values():
        for statement in statements:
            # ``_lhs_signals`` is Amaranth's own walk over the signals a statement drives,
            # through Switch bodies (FSM states, m.If) included.
            for signal in statement._lhs_signals():
                if signal.name in found and not any(signal is s for s in found[signal.name]):
                    found[signal.name].append(signal)
    for name, signals in found.items():
        if len(signals) != 1:
            raise LookupError(f"the design drives {len(signals)} signals named {name!r}, not one: "
                              "the proof harness no longer matches the RTL")
    return {name: signals[0] for name, signals in found.items()}


def _fsm_states(fragment: Fragment, fsm_name: str, states) -> dict:
    """``{state: 1-bit 'the FSM is in this state'}`` for an FSM built with ``m.FSM(name=...)``."""
    fsm = fragment.generated.get(fsm_name)
    if fsm is None:
        raise LookupError(f"the design has no FSM named {fsm_name!r}")
    missing = [s for s in states if s not in fsm.encoding]
    if missing:
        raise LookupError(f"FSM {fsm_name!r} has no state(s) {missing}: the proof harness no "
                          "longer matches the RTL")
    return {s: fsm.ongoing(s) for s in states}


def _subfragment(fragment: Fragment, name: str) -> Fragment:
    """The elaborated subfragment ``name`` of ``fragment`` (for :func:`probe` inside it)."""
    for sub, sub_name, _ in fragment.subfragments:
        if sub_name == name:
            return sub
    raise LookupError(f"the design has no submodule {name!r}: the proof harness no longer "
                      "matches the RTL")


def _submodule(fragment: Fragment, name: str):
    """The elaboratable that built the subfragment ``name`` of ``fragment`` (its ports are
    then readable by the harness)."""
    sub = _subfragment(fragment, name)
    if not sub.origins:
        raise LookupError(f"submodule {name!r} has no elaboratable: the proof harness no "
                          "longer matches the RTL")
    return sub.origins[0]


class _Harness(wiring.Component):
    """A harness with the ports of its DUT: every DUT input is a free input of the proof.

    ``extra`` adds ports of the harness's own (free inputs that only the monitor reads, such
    as the choice of a watched item).
    """

    def __init__(self, dut: wiring.Component, extra: dict | None = None):
        self._dut = dut
        super().__init__({**dut.signature.members, **(extra or {})})

    dut = property(lambda self: self._dut, doc="The design under test.")

    def _instantiate(self, m: Module, platform) -> Fragment:
        """Elaborate the DUT into ``m`` (as submodule ``dut``), wired to the harness's ports."""
        fragment = Fragment.get(self._dut, platform)
        m.submodules.dut = fragment
        theirs = self._dut.signature.flatten(self._dut)
        ours = [port for port in self.signature.flatten(self)
                if port[0][0] in self._dut.signature.members]
        for (_, member, outer), (_, _, inner) in zip(ours, theirs, strict=True):
            if member.flow == In:
                m.d.comb += inner.eq(outer)
            else:
                m.d.comb += outer.eq(inner)
        return fragment


def _stream_rule(m: Module, port, name: str):
    """``stalled(t-1) -> valid(t) & payload(t) == payload(t-1)`` for one stream port, with
    ``stalled = valid & ~ready``; the condition (a 1-bit value) and the registers it reads."""
    stalled = Signal(name=f"{name}_stalled")
    payload = Value.cast(port.payload)  # a View or a plain Signal
    held = Signal(len(payload), name=f"{name}_held")
    m.d.sync += [stalled.eq(port.valid & ~port.ready), held.eq(payload)]
    return ~stalled | (port.valid & (payload == held))


# ---- stream valid/ready rules -------------------------------------------------------------------

class StreamRulesProof(_Harness):
    """Formal harness: the DUT's output streams obey the valid/ready rules if its inputs do.

    For each input stream ``i`` it assumes, and for each output stream ``o`` it asserts, the
    stream rules of ``amaranth.lib.stream``: a payload offered and not taken stays offered,
    unchanged::

        s.valid(t-1) & ~s.ready(t-1)  ->  s.valid(t) & s.payload(t) == s.payload(t-1)

    (after a reset cycle the rule restarts: the harness's registers reset with the DUT). The
    property holds for every value of every other input (``ready`` of the outputs, static
    ports) in every cycle. k-induction: depth 1-2 closes for registered outputs.

    Parameters
    ----------
    dut : wiring.Component
    inputs, outputs : list of str
        Names of the DUT's input and output stream members.
    """

    def __init__(self, dut: wiring.Component, *, inputs, outputs):
        self._inputs, self._outputs = list(inputs), list(outputs)
        super().__init__(dut)
        members = self.signature.members
        for name, flow in [(n, In) for n in self._inputs] + [(n, Out) for n in self._outputs]:
            member = members.get(name)
            signature = member.signature if member is not None and member.is_signature else None
            if isinstance(signature, wiring.FlippedSignature):
                signature = signature.flip()
            if not isinstance(signature, stream.Signature) or member.flow != flow:
                raise ValueError(f"{name!r} is not an {'input' if flow == In else 'output'} "
                                 f"stream port of {type(dut).__name__}")

    def elaborate(self, platform):
        m = Module()
        self._instantiate(m, platform)
        for name in self._inputs:
            m.d.comb += Assume(_stream_rule(m, getattr(self, name), name))
        for name in self._outputs:
            m.d.comb += Assert(_stream_rule(m, getattr(self, name), name),
                               f"{name}: valid dropped or payload changed while not ready")
        return m


class BrokenStage(wiring.Component):
    """Test-only one-stage stream register that breaks the stream rules (a proof must catch it).

    ``kind="overwrite"``: it never backpressures (``i_stream.ready = 1``) and loads every
    offered payload, overwriting one that ``o_stream`` has not delivered. ``kind="drop"``:
    it withdraws an output that has waited ``patience`` cycles. Correct otherwise.

    Members
    -------
    i_stream : In(stream.Signature(width))
    o_stream : Out(stream.Signature(width))
    """

    def __init__(self, width: int = 4, *, kind: str = "overwrite", patience: int = 2):
        if kind not in ("overwrite", "drop"):
            raise ValueError(f"kind must be 'overwrite' or 'drop', not {kind!r}")
        self._kind = kind
        self._patience = check_int("patience", patience, 1, 255)
        super().__init__({"i_stream": In(stream.Signature(width)),
                          "o_stream": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        if self._kind == "overwrite":
            m.d.comb += i.ready.eq(1)
            with m.If(i.valid):
                m.d.sync += [o.valid.eq(1), o.payload.eq(i.payload)]
            with m.Elif(o.ready):
                m.d.sync += o.valid.eq(0)
        else:
            waited = Signal(8)
            m.d.comb += i.ready.eq(~o.valid | o.ready)
            with m.If(i.ready):
                m.d.sync += [o.valid.eq(i.valid), o.payload.eq(i.payload), waited.eq(0)]
            with m.Elif(waited == self._patience - 1):
                m.d.sync += [o.valid.eq(0), waited.eq(0)]
            with m.Else():
                m.d.sync += waited.eq(waited + 1)
        return m


# ---- UART bridge --------------------------------------------------------------------------------

def crc16_bitwise(crc, byte):
    """CRC-16/CCITT-FALSE after one more byte, the textbook way: 8 MSB-first LFSR steps.

    ``crc' = (crc << 1) ^ (POLY if crc[15] ^ bit else 0)`` per bit of ``byte``, MSB first. An
    independent formulation of ``hdl.link.bridge.crc16_update`` (which precomputes the XOR
    network), used by :class:`BridgeProof`'s monitor.
    """
    for i in reversed(range(8)):
        feedback = crc[15] ^ byte[i]
        crc = Cat(Const(0, 1), crc[:15]) ^ Mux(feedback, Const(CRC_POLY, 16), Const(0, 16))
    return crc


class _ReflectedCrcBridge(Bridge):
    """Test-only broken bridge: its CRC takes each byte bit-reversed (a reflected-input CRC,
    the classic CCITT-FALSE / X-25 mix-up), on the receive and the transmit side."""

    def elaborate(self, platform):
        original = bridge_module.crc16_update
        bridge_module.crc16_update = lambda crc, byte: original(crc, Cat(*reversed(list(byte))))
        try:
            return super().elaborate(platform)
        finally:
            bridge_module.crc16_update = original


_FRAME_STATES = ("CMD", "SEQ", "LEN0", "LEN1", "PAYLOAD", "CRC0", "CRC1")
_EXEC_STATES = {"W_FETCH": Cmd.WRITE, "W_REQ": Cmd.WRITE, "W_RESP": Cmd.WRITE,
                "R_REQ": Cmd.READ, "R_RESP": Cmd.READ, "X_REQ": Cmd.EXEC, "X_RESP": Cmd.EXEC}


class BridgeProof(_Harness):
    """Formal harness: the bridge issues a bus transaction only for a frame that passed its
    CRC-16 and length checks.

    A monitor watches the bytes the bridge's parser consumes (``rx_valid & take`` after its
    receive FIFO) and restarts when the bridge enters ``CMD`` (a frame start). For the frame
    so far, with ``b_0, b_1, ...`` the bytes consumed since the start, it keeps ``n`` (their
    count), ``L = b_2 + 256 b_3``, ``c = CRC16(b_0 .. b_{3+L})`` (computed by
    :func:`crc16_bitwise`, independently of the bridge), ``r = b_{4+L} + 256 b_{5+L}``, whether
    a byte had a framing error, and whether the two bytes consumed before the start were
    ``A5 5A`` (without framing error). Asserted in every cycle::

        bus.req.valid  ->  sync & ~ferr & n == L + 6 & L <= max_payload & r == c
                           & legal(cmd, L) & bus.req.write == (cmd != READ)

    with ``legal``: WRITE ``L >= 8, L % 4 == 0``; READ ``L == 6``; EXEC ``L == 8``; no other
    command may reach the bus. ``n == L + 6`` says the frame is complete and no byte came after
    it: the transaction belongs to the last frame.

    The environment is free: received bytes (data, ``ferr``) in any cycle, any ``o_stream``
    backpressure, any bus responses, resets.

    Auxiliary invariants (``aux=True``; needed for k-induction, depth 2): per parser state, the
    bridge's registers agree with the monitor -- ``crc == c`` in the frame states, ``n`` equals
    the state's position (``CMD`` 0 .. ``LEN1`` 3, ``PAYLOAD`` ``4 + index`` with
    ``left == L - index``, ``CRC0`` ``4 + L``, ``CRC1`` ``5 + L`` with ``crc_low == r[:8]``),
    ``cmd``/``length`` equal the monitor's, and ``DECODE`` and the execution states hold only
    after a good frame. With ``aux=False`` only the property itself is asserted.

    A broken bridge is caught by BMC (k-induction only reports that an auxiliary invariant no
    longer holds, ``UNKNOWN``): with ``aux=False``, ``depth=`` :attr:`FIRST_REQUEST` ``+ 1``,
    ``skip=`` :attr:`FIRST_REQUEST`.

    Parameters
    ----------
    max_payload, timeout_cycles, rx_fifo_depth : int
        The bridge's parameters; ``max_payload`` is also the bound the monitor checks. The
        default FIFO of 3 bytes takes a byte in every cycle (a 2-byte ``SyncFIFOBuffered``
        drops some; the UART delivers one per ``10 * divisor`` cycles, so either is enough on
        a board), which keeps the shortest frame short in cycles.
    fault : {None, "reflected_crc", "long_payload"}
        Broken variants that must FAIL: a bridge whose CRC reads bytes bit-reversed, or a
        bridge that accepts 4 bytes more than the bound (built for ``max_payload`` while the
        monitor checks ``max_payload - 4``; a READ frame, 6 bytes, breaks a bound of 4).
    aux : bool
        Assert the auxiliary invariants too.
    steady : bool
        Narrow the environment: a byte without framing error in every cycle, the bus always
        ready, no reset. Only to find a broken variant's counterexample faster (BMC); a
        counterexample of the narrowed environment is one of the free one too.
    registered_decode : bool
        Prove the bridge's iCE40 form (:class:`hdl.link.bridge.Bridge`: DECODE on registered
        length checks, one-hot FSM).
    """

    # BMC step (cycles from reset) of the earliest possible bus request: the shortest legal
    # frame (READ, 14 bytes) one byte per cycle, 3 cycles through the receive FIFO and its
    # register, DECODE and R_REQ (measured: the broken variants fail at this step).
    FIRST_REQUEST = 18

    def __init__(self, max_payload: int = 8, timeout_cycles: int = 4, rx_fifo_depth: int = 3,
                 *, fault: str | None = None, aux: bool = True, steady: bool = False,
                 registered_decode: bool = False):
        if fault not in (None, "reflected_crc", "long_payload"):
            raise ValueError(f"fault must be None, 'reflected_crc' or 'long_payload', "
                             f"not {fault!r}")
        cls = _ReflectedCrcBridge if fault == "reflected_crc" else Bridge
        super().__init__(cls(max_payload, timeout_cycles, rx_fifo_depth,
                             registered_decode=registered_decode))
        self._max_payload = max_payload - 4 if fault == "long_payload" else max_payload
        self._built_max_payload = max_payload
        self._registered_decode = registered_decode
        self._aux = aux
        self._steady = steady
        self.property_src = None  # (file, line) of the main Assert, set by elaborate

    def elaborate(self, platform):
        m = Module()
        frag = self._instantiate(m, platform)
        p = probe(frag, "rx_valid", "take", "rx_word", "crc", "crc_low", "cmd", "length",
                  "index", "left")
        states = _fsm_states(frag, "bridge", ("SYNC1", "DECODE", *_FRAME_STATES,
                                              *_EXEC_STATES))
        consume = p["rx_valid"] & p["take"]
        byte, ferr = p["rx_word"][:8], p["rx_word"][8]

        # The last two consumed bytes, each with "no framing error": the sync before a frame.
        last = [Signal(9, name=f"last{i}") for i in range(2)]
        with m.If(consume):
            m.d.sync += [last[0].eq(last[1]), last[1].eq(Cat(byte, ~ferr))]
        synced = (last[0] == Cat(Const(SYNC[0], 8), 1)) & (last[1] == Cat(Const(SYNC[1], 8), 1))
        # A frame starts in the first cycle of CMD (entered from SYNC1 only).
        was_sync1 = Signal()
        m.d.sync += was_sync1.eq(states["SYNC1"])
        start = states["CMD"] & was_sync1

        # Monitor registers, and their values "as of this cycle" (restarted at a frame start).
        n_max = 4 + 0xFFFF + 2 + 1
        reg = {"n": Signal(range(n_max + 1), name="mon_n"),
               "len": Signal(16, name="mon_len"),
               "crc": Signal(16, name="mon_crc", init=CRC_INIT),
               "rcrc": Signal(16, name="mon_rcrc"),
               "cmd": Signal(8, name="mon_cmd"),
               "ferr": Signal(name="mon_ferr"),
               "sync": Signal(name="mon_sync")}
        restart = {"n": 0, "len": 0, "crc": CRC_INIT, "rcrc": 0, "cmd": 0, "ferr": 0,
                   "sync": synced}
        cur = {k: Mux(start, restart[k], r) for k, r in reg.items()}
        with m.If(start):
            m.d.sync += [r.eq(restart[k]) for k, r in reg.items()]
        n, length = cur["n"], cur["len"]
        end = 4 + length  # position of the first CRC byte
        with m.If(consume):
            m.d.sync += reg["n"].eq(Mux(n == n_max, n_max, n + 1))
            with m.If(ferr):
                m.d.sync += reg["ferr"].eq(1)
            with m.If(n < end):
                m.d.sync += reg["crc"].eq(crc16_bitwise(cur["crc"], byte))
            with m.If(n == 0):
                m.d.sync += reg["cmd"].eq(byte)
            with m.If(n == 2):
                m.d.sync += reg["len"][:8].eq(byte)
            with m.If(n == 3):
                m.d.sync += reg["len"][8:].eq(byte)
            with m.If(n == end):
                m.d.sync += reg["rcrc"][:8].eq(byte)
            with m.If(n == end + 1):
                m.d.sync += reg["rcrc"][8:].eq(byte)

        good = (cur["sync"] & ~cur["ferr"] & (n == length + 6)
                & (length <= self._max_payload) & (cur["rcrc"] == cur["crc"]))
        mcmd = cur["cmd"]
        legal = Mux(mcmd == Cmd.WRITE, (length >= 8) & (length[:2] == 0),
                    Mux(mcmd == Cmd.READ, length == 6, (mcmd == Cmd.EXEC) & (length == 8)))
        req = self.bus.req
        prop = Assert(~req.valid | (good & legal & (req.payload.write == (mcmd != Cmd.READ))),
                      "bus request for a frame that failed its CRC or length check")
        self.property_src = prop.src_loc
        m.d.comb += prop
        if self._steady:
            m.d.comb += [Assume(~ResetSignal()), Assume(self.i_stream.valid),
                         Assume(~self.i_stream.payload.ferr), Assume(self.bus.req.ready)]
        if not self._aux:
            return m

        def invariant(state, cond, what):
            m.d.comb += Assert(~states[state] | cond, f"aux {state}: {what}", src_loc_at=1)

        invariant("SYNC1", last[1] == Cat(Const(SYNC[0], 8), 1), "the last byte was sync 0")
        for state in _FRAME_STATES:
            invariant(state, cur["sync"] & ~cur["ferr"] & (p["crc"] == cur["crc"]),
                      "in a synced frame, crc == monitor CRC")
            if state != "CMD":
                invariant(state, p["cmd"] == mcmd, "cmd")
        for position, state in enumerate(("CMD", "SEQ", "LEN0", "LEN1")):
            invariant(state, (n == position) & (p["index"] == 0), "byte position")
        invariant("LEN1", p["length"][:8] == length[:8], "length low byte")
        fits = (p["length"] == length) & (length <= self._max_payload)
        invariant("PAYLOAD", fits & (n == 4 + p["index"]) & (p["index"] < length)
                  & (p["left"] == length - p["index"]), "payload position")
        invariant("CRC0", fits & (n == end), "position")
        invariant("CRC1", fits & (n == end + 1) & (p["crc_low"] == cur["rcrc"][:8]),
                  "position, CRC low byte")
        if self._registered_decode:  # the compares' low halves, registered a byte earlier
            half = probe(frag, "low_above", "low_zero", "crc_low_ok")
            limit_low = self._built_max_payload & 0xFF
            invariant("LEN1", (half["low_above"] == (length[:8] > limit_low))
                      & (half["low_zero"] == (length[:8] == 0)), "the length's low half")
            invariant("CRC1", half["crc_low_ok"] == (p["crc_low"] == p["crc"][:8]),
                      "the CRC's low half")
        invariant("DECODE", good & (p["cmd"] == mcmd) & (p["length"] == length),
                  "a good frame")
        for state, command in _EXEC_STATES.items():
            invariant(state, good & legal & (mcmd == command), "a good frame of this command")
        return m


# ---- accelerator core command port --------------------------------------------------------------

class BrokenResponder(wiring.Component):
    """Test-only command port with the core's ``i_cmd``/``o_resp`` layouts that breaks the
    one-response-per-command rule (a proof must catch it). Answers each command one cycle
    after accepting it, with ``status = 0``, ``data = cmd.data``.

    ``kind="overwrite"``: always ready, so a command accepted while a response waits replaces
    that response (one response for two commands). ``kind="double"``: answers every command
    twice.

    Members
    -------
    i_cmd : In(stream.Signature(cmd_layout))
    o_resp : Out(stream.Signature(resp_layout))
    """

    def __init__(self, config: CoreConfig, *, kind: str = "overwrite"):
        if kind not in ("overwrite", "double"):
            raise ValueError(f"kind must be 'overwrite' or 'double', not {kind!r}")
        self._kind = kind
        cmd = data.StructLayout({"op": OP_BITS, "addr": config.addr_bits, "data": DATA_BITS})
        resp = data.StructLayout({"status": STATUS_BITS, "data": DATA_BITS})
        super().__init__({"i_cmd": In(stream.Signature(cmd)),
                          "o_resp": Out(stream.Signature(resp))})

    def elaborate(self, platform):
        m = Module()
        cmd, resp = self.i_cmd, self.o_resp
        again = Signal()  # "double": the second response is still to come
        if self._kind == "overwrite":
            m.d.comb += cmd.ready.eq(1)
        else:
            m.d.comb += cmd.ready.eq(~resp.valid & ~again)
        with m.If(resp.valid & resp.ready):
            m.d.sync += resp.valid.eq(again)
            m.d.sync += again.eq(0)
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [resp.valid.eq(1), resp.payload.status.eq(0),
                         resp.payload.data.eq(cmd.payload.data),
                         again.eq(self._kind == "double")]
        return m


class CommandPortProof(_Harness):
    """Formal harness: the accelerator core answers every accepted command exactly once, in
    order, and its response stream obeys the stream rules.

    With ``a(t)`` the commands accepted (``i_cmd.valid & i_cmd.ready``) and ``r(t)`` the
    responses delivered (``o_resp.valid & o_resp.ready``) before cycle ``t``, and
    ``k(t) = a(t) - r(t)`` (commands in flight), asserted in every cycle::

        0 <= k <= 1                                    (never two commands in flight)
        o_resp.valid  ->  k == 1                       (a response only for a command)
        i_cmd.ready   ->  k == 0 & ~o_resp.valid       (a command only when none is in flight)
        accepted(t-1) & op(t-1) != wait  ->  o_resp.valid(t)   (latency 1 but for wait)
        o_resp.valid(t-1) & ~o_resp.ready(t-1)  ->  o_resp.valid(t) & payload(t) == payload(t-1)

    and the same stream rule on the two streams inside the core, between the controller and
    the :class:`~hdl.array.SystolicArray` (``array.i_stream``, whose producer is the core's
    buffer-read pipeline, and ``array.o_stream``). So responses are in order (one at a time),
    none is lost or doubled, and every command other than ``wait`` is answered in the next
    cycle (``wait`` answers when the job ends, a liveness matter outside a safety proof).
    The environment obeys the stream rules on ``i_cmd`` (the core reads the held payload
    when it accepts, docstring of :class:`~hdl.array.core.AcceleratorCore`) and is otherwise
    free: any command, any ``o_resp.ready``, resets; the array and the buffers run as they do.

    Auxiliary invariants for the core (white-box, for k-induction): its ``waiting`` register
    (a ``wait`` accepted during a job) satisfies ``k == o_resp.valid + waiting``; while the
    command port's ``checked`` is set, ``i_cmd`` still offers the command, equal to the
    port's registered copy ``x_cmd`` (which the execute stage acts on).

    Parameters
    ----------
    config : golden.core.CoreConfig
        The core to build (small configurations keep the proof fast).
    dut : wiring.Component, optional
        Another DUT with the same ports instead of the core (:class:`BrokenResponder`).
    internal : bool
        Also assert the stream rules inside the core. k-induction closes for INT8 cores; with
        FP16/BF16 activations it does not: the pre-pass gates the array's input ``valid``,
        and that a job never starts with a step still waiting in the read pipeline (the
        array has taken every step before the drain ends the job) is a fact about the whole
        array that no local invariant states.
    """

    def __init__(self, config: CoreConfig, *, dut: wiring.Component | None = None,
                 internal: bool = True):
        self._config = config
        self._internal = internal
        super().__init__(AcceleratorCore(config) if dut is None else dut)

    def elaborate(self, platform):
        m = Module()
        frag = self._instantiate(m, platform)
        cmd, resp = self.i_cmd, self.o_resp
        m.d.comb += Assume(_stream_rule(m, cmd, "i_cmd"))
        accepted = cmd.valid & cmd.ready
        delivered = resp.valid & resp.ready
        in_flight = Signal(range(4))
        with m.If(accepted & ~delivered & (in_flight != 3)):
            m.d.sync += in_flight.eq(in_flight + 1)
        with m.If(delivered & ~accepted & (in_flight != 0)):
            m.d.sync += in_flight.eq(in_flight - 1)
        with m.If(delivered & ~accepted & (in_flight == 0)):
            m.d.sync += in_flight.eq(3)  # a response for no command: flagged below
        prompt = Signal()  # a command that must be answered in the next cycle was accepted
        op = cmd.payload.op
        m.d.sync += prompt.eq(accepted & (op != OPS["wait"]) & (op != OPS["read_output"]))
        # A read_output is answered in the next cycle or the one after (its read data
        # registered first, in the command port's registered form).
        read, read_late = Signal(), Signal()
        m.d.sync += [read.eq(accepted & (op == OPS["read_output"])),
                     read_late.eq(read & ~resp.valid)]
        m.d.comb += [
            Assert(in_flight <= 1, "two commands in flight, or a response without a command"),
            Assert(~resp.valid | (in_flight == 1), "a response without a command in flight"),
            Assert(~cmd.ready | ((in_flight == 0) & ~resp.valid),
                   "a command accepted while another is in flight"),
            Assert(~prompt | resp.valid, "a command other than wait not answered at once"),
            Assert(~read_late | resp.valid, "a read_output not answered within two cycles"),
            Assert(_stream_rule(m, resp, "o_resp"),
                   "o_resp: valid dropped or payload changed while not ready"),
        ]
        if isinstance(self._dut, AcceleratorCore):
            waiting = probe(frag, "waiting")["waiting"]
            # The command port executes its registered copy of the checked command; the
            # stream rule keeps the offered one equal to it until it is accepted.
            port = probe(_subfragment(frag, "command_port"), "x_cmd", "checked", "fetch")
            m.d.comb += Assert(in_flight == resp.valid + waiting + port["fetch"],
                               "aux: in flight == response pending + wait pending + read "
                               "pending")
            m.d.comb += Assert(~port["checked"] | (cmd.valid & (cmd.payload.as_value()
                                                                == port["x_cmd"])),
                               "aux: a checked command is still offered, equal to its copy")
        if isinstance(self._dut, AcceleratorCore) and self._internal:
            # The core's streams to and from its array: the core is the producer of the
            # array's input (its buffer-read pipeline), the array of its output.
            array = _submodule(frag, "array")
            m.d.comb += [
                Assert(_stream_rule(m, array.i_stream, "array_in"),
                       "array input: valid dropped or payload changed while not ready"),
                Assert(_stream_rule(m, array.o_stream, "array_out"),
                       "array output: valid dropped or payload changed while not ready"),
            ]
        return m


# ---- bit-serial PE accumulators -----------------------------------------------------------------

class PEOverflowProof(wiring.Component):
    """Formal harness (bounded): the bit-serial PE's group and output accumulators never wrap
    for the documented bounds.

    The harness drives :class:`~hdl.pe.bitserial.BitSerialPE` with every legal input stream
    (``golden.pe`` payload order): per weight-step, ``T`` cycles ``t = 0 .. T-1`` carrying term
    ``t`` of ``L`` weights whose codes (and selector and special-value register, if the formats
    have them) are free at ``t = 0`` and held for the step, the terms made by
    :class:`~hdl.arith.term_encoder.TermEncoderCore` (proved separately to decompose every code);
    activations free in every cycle (any ``signed(A)``); ``group_last`` at the end of a step,
    at the latest after ``feed_steps`` steps (default ``G / L``); ``out_last`` with a
    ``group_last``, at the latest on the ``feed_groups``-th group (default ``max_groups``);
    scale and exponent free; input valid and output ready free (with the stream rules on the
    input). A shadow computes in wide arithmetic, at the input, each term-cycle's contribution
    ``c = sum_l a_l (-1)**s_l nz_l 2**(e_l + bsig_t)`` and the group sums ``S = sum c``, and
    the outputs ``Y = sum_g (S_g * scale_g) << exp_g`` from what the dequantizer is handed
    (``S_g`` is then the group accumulator's value, which the first property proves exact;
    the split keeps each comparison small for the solver). Asserted in every cycle::

        adds  ->  gacc_next == S_partial     (the group accumulator's new value is the exact
                                              sum of its group's term-cycles so far)
        o_stream.valid  ->  o_stream.acc == Y   (the oldest output not yet delivered)

    as integers (the narrow RTL value sign-extended), so neither accumulator wraps: the widths
    ``gacc_width = bit_length(G S_max 2**(A-1)) + 1`` and ``acc_width`` of
    :class:`golden.pe.PEConfig` hold every sum. ``S_partial`` is advanced through a copy of the
    PE's ``stages`` pipeline registers (enabled with them by ``i_stream.ready``), so it is
    compared in the cycle the PE adds (``adds``); the group accumulator's adder output is read
    white-box (``gacc_next``).

    Bounded model checking, not k-induction: an inductive proof would need invariants tying
    every pipeline register and the bit-serial dequantizer's state (shift register, step
    counter, partial product) to the shadow. Use :meth:`depth`: every input stream of that many
    cycles from reset is checked, which includes every complete output of ``feed_groups``
    groups of ``feed_steps`` weight-steps (the largest sums) and its whole latency when the
    input never pauses. Pauses and backpressure only delay the same values. That later
    outputs behave the same rests on the accumulators being cleared after each output (which
    the traces within the depth exercise), not on a proof.

    Broken variants must FAIL: ``feed_groups = 2 max_groups`` (twice the groups per output that
    ``acc_width`` was sized for) or ``feed_steps = 2 G / L`` (groups twice the size): the
    largest sums can then pass ``2**(width - 1)`` (they do for the tested INT2 PE, whose
    largest level magnitude is negative, so ``-2**(A-1)`` activations make it positive), and
    the output or the group accumulator wraps.

    Parameters
    ----------
    config : golden.pe.PEConfig
    feed_groups, feed_steps : int, optional
        Most groups per output and weight-steps per group the environment sends.
    queue : int
        Outputs the harness can hold between the input and ``o_stream`` (asserted enough).
    steady : bool
        Narrow the environment: input valid and output ready in every cycle, groups and
        outputs of the full size only, no reset. Only to find a broken variant's
        counterexample faster (one output instead of every shorter one to rule out first); a
        counterexample of the narrowed environment is one of the free one too.
    """

    def __init__(self, config: PEConfig, *, feed_groups: int | None = None,
                 feed_steps: int | None = None, queue: int = 4, steady: bool = False):
        if not isinstance(config, PEConfig):
            raise TypeError(f"config must be a PEConfig, not {config!r}")
        self._cfg = config
        steps = config.group_size // config.lanes
        self._groups = check_int("feed_groups", feed_groups or config.max_groups, 1)
        self._steps = check_int("feed_steps", feed_steps or steps, 1)
        self._queue = check_int("queue", queue, 1, 64)
        self._steady = steady
        geo = config.geometry
        members = {
            "valid": In(1),
            "codes": In(data.ArrayLayout(geo.code_bits, config.lanes)),
            "acts": In(data.ArrayLayout(signed(config.act_width), config.lanes)),
            "end_group": In(1),
            "end_out": In(1),
            "o_ready": In(1),
        }
        if len(config.formats) > 1:
            members["selector"] = In(2)
        if geo.has_register:
            members["special_values"] = In(32)
        if config.scale_bits:
            members["scale"] = In(config.scale_bits)
        if config.exp_bits:
            members["exp"] = In(config.exp_bits)
        super().__init__(members)
        self.dut = BitSerialPE(config)
        # {"group": (file, line), "output": (file, line)} of the two properties, set by
        # elaborate (a test checks which one a broken variant breaks).
        self.property_src = None

    def depth(self) -> int:
        """BMC depth that covers one complete output of ``feed_groups`` groups of
        ``feed_steps`` weight-steps from reset, through the PE's latency, without pauses."""
        terms = self._cfg.geometry.terms
        return self._groups * self._steps * terms + self._cfg.latency + 1

    def _wide(self) -> int:
        """Width of the shadow's signed arithmetic: the largest output of what the
        environment can send, plus a sign bit and a margin."""
        cfg = self._cfg
        group = self._steps * cfg.lanes * cfg.s_max << (cfg.act_width - 1)
        bound = self._groups * group * cfg.scale_max << ((1 << cfg.exp_bits) - 1)
        return bound.bit_length() + 2

    def elaborate(self, platform):
        m = Module()
        cfg, geo = self._cfg, self._cfg.geometry
        L, T = cfg.lanes, geo.terms
        pe = self.dut
        frag = Fragment.get(pe, platform)
        m.submodules.pe = frag
        gacc_next = probe(frag, "gacc_next")["gacc_next"]
        wide = signed(self._wide())
        has_sel = "selector" in self.signature.members
        has_reg = "special_values" in self.signature.members

        # ---- environment: the position in the stream, the codes held for a weight-step ------
        t = Signal(range(max(T, 2)))
        step = Signal(range(max(self._steps, 2)))
        group = Signal(range(max(self._groups, 2)))
        held = Signal.like(self.codes)
        first = t == 0
        codes = [Mux(first, self.codes[i], held[i]) for i in range(L)]
        selector = Const(0, 2)
        if has_sel:
            held_sel = Signal(2)
            selector = Mux(first, self.selector, held_sel)
        register = Const(0, 32)
        if has_reg:
            held_reg = Signal(32)
            register = Mux(first, self.special_values, held_reg)
        group_last = (t == T - 1) & ((step == self._steps - 1) | self.end_group)
        out_last = group_last & ((group == self._groups - 1) | self.end_out)
        payload = pe.i_stream.payload
        terms = []
        for i in range(L):
            enc = TermEncoderCore(list(cfg.formats))
            m.submodules[f"enc{i}"] = enc
            m.d.comb += [enc.code.eq(codes[i]), enc.selector.eq(selector),
                         enc.special_values.eq(register)]
            term = data.View(enc.terms_layout, enc.terms)[t]
            terms.append(term)
            m.d.comb += [payload.terms[i].eq(term), payload.acts[i].eq(self.acts[i])]
        if T > 1:
            m.d.comb += payload.t.eq(t)
        m.d.comb += [pe.i_stream.valid.eq(self.valid), payload.group_last.eq(group_last),
                     payload.out_last.eq(out_last), pe.o_stream.ready.eq(self.o_ready)]
        if cfg.scale_bits:
            m.d.comb += payload.scale.eq(self.scale)
        if cfg.exp_bits:
            m.d.comb += payload.exp.eq(self.exp)
        m.d.comb += Assume(_stream_rule(m, pe.i_stream, "pe_in"))
        if self._steady:
            m.d.comb += [Assume(~ResetSignal()), Assume(self.valid), Assume(self.o_ready),
                         Assume(~self.end_group), Assume(~self.end_out)]

        take = pe.i_stream.valid & pe.i_stream.ready
        with m.If(take):
            m.d.sync += t.eq(Mux(t == T - 1, 0, t + 1))
            with m.If(first):
                m.d.sync += held.eq(Cat(*codes))
                if has_sel:
                    m.d.sync += held_sel.eq(selector)
                if has_reg:
                    m.d.sync += held_reg.eq(register)
            with m.If(t == T - 1):
                m.d.sync += step.eq(Mux(group_last, 0, step + 1))
            with m.If(group_last):
                m.d.sync += group.eq(Mux(out_last, 0, group + 1))

        # ---- shadow: exact sums in wide arithmetic -------------------------------------------
        shift_of_t = Signal(range(max(geo.bsig) + 1))
        with m.Switch(t):
            for k, b in enumerate(geo.bsig):
                with m.Case(k):
                    m.d.comb += shift_of_t.eq(b)
        contribution = Signal(wide)
        total = 0
        for i, term in enumerate(terms):
            magnitude = Signal(wide, name=f"shadow_lane{i}")
            m.d.comb += magnitude.eq(self.acts[i].as_signed() << (term.exp + shift_of_t))
            total = total + Mux(term.nonzero, Mux(term.sign, -magnitude, magnitude), 0)
        m.d.comb += contribution.eq(total)

        # Expected outputs, from what the dequantizer is handed: each group sum (the group
        # accumulator's value, proved exact by the first assertion below), scale and exponent.
        # Starting from the hand-off rather than from the input keeps the solver's work
        # local: it relates the bit-serial multiply to ``(S * scale) << exp``, not the whole
        # PE to the sum of products.
        dq = _submodule(frag, "dequant").i_stream
        handoff = dq.valid & dq.ready
        gsum = Signal(wide)
        m.d.comb += gsum.eq(dq.payload.gsum.as_signed() << dq.payload.exp)
        # ``S * scale`` as shift-and-add over the scale bits: a general multiplier is much
        # harder for the solver than the same value as a sum.
        weighted = 0
        for i in range(cfg.scale_bits):
            weighted = weighted + Mux(dq.payload.scale[i], gsum << i, 0)
        if not cfg.scale_bits:
            weighted = gsum
        out_sum = Signal(wide)
        finished = Signal(wide)
        m.d.comb += finished.eq(out_sum + weighted)
        queue = [Signal(wide, name=f"expected{k}") for k in range(self._queue)]
        count = Signal(range(self._queue + 1))
        delivered = pe.o_stream.valid & pe.o_stream.ready
        push = handoff & dq.payload.last
        with m.If(handoff):
            m.d.sync += out_sum.eq(Mux(dq.payload.last, 0, finished))
        # The queue of expected outputs, oldest in queue[0].
        after_pop = [queue[k + 1] if k + 1 < self._queue else queue[k]
                     for k in range(self._queue)]
        slot = count - delivered
        for k in range(self._queue):
            kept = Mux(delivered, after_pop[k], queue[k])
            m.d.sync += queue[k].eq(Mux(push & (slot == k), finished, kept))
        m.d.sync += count.eq(count + push - delivered)

        # The group accumulator's side: each term-cycle's contribution through a copy of the
        # PE's pipeline registers, so the exact partial sum is there when the PE adds.
        adv = pe.i_stream.ready
        entry = (pe.i_stream.valid, contribution, group_last)
        for k in range(cfg.stages):
            regs = (Signal(name=f"mirror{k}_valid"), Signal(wide, name=f"mirror{k}_c"),
                    Signal(name=f"mirror{k}_last"))
            with m.If(adv):
                m.d.sync += [r.eq(v) for r, v in zip(regs, entry, strict=True)]
            entry = regs
        valid_d, c_d, last_d = entry
        shadow_gacc = Signal(wide)
        adds = adv & valid_d
        with m.If(adds):
            m.d.sync += shadow_gacc.eq(Mux(last_d, 0, shadow_gacc + c_d))

        group_ok = Assert(~adds | (gacc_next.as_signed() == shadow_gacc + c_d),
                          "group accumulator differs from the exact group sum (wrapped)")
        output_ok = Assert(~pe.o_stream.valid
                           | ((count != 0) & (pe.o_stream.payload.acc.as_signed() == queue[0])),
                           "output differs from the exact sum (accumulator wrapped)")
        self.property_src = {"group": group_ok.src_loc, "output": output_ok.src_loc}
        m.d.comb += [
            Assert(~push | delivered | (count < self._queue),
                   "harness: expected-output queue too short"),
            group_ok,
            output_ok,
        ]
        return m


# ---- array drain --------------------------------------------------------------------------------

class _ExtraCreditDrain(ArrayDrain):
    """Test-only broken drain: its credit counter starts at ``Q + 1``, one tile more than its
    column FIFOs (``Q * R`` entries each) hold."""

    _extra_credits = 1


class _MirroredDrain(ArrayDrain):
    """Test-only broken drain: the merger reads the column FIFOs right to left (column
    ``C - 1 - c`` in column ``c``'s turn), so each row leaves mirrored; nothing is lost."""

    def _column(self, m: Module, c: int, split: bool):
        return super()._column(m, self.config.cols - 1 - c, split)


_DRAIN_FAULTS = {None: ArrayDrain, "extra_credit": _ExtraCreditDrain,
                 "mirrored_columns": _MirroredDrain}


class DrainProof(_Harness):
    """Formal harness: the array's drain loses no PE output, keeps them in row-major order and
    passes each on within its latency, under any output backpressure, on the array's schedule.

    The environment (:class:`~hdl.array.drain.ArrayDrain`'s contract as the array keeps it;
    everything else is free: payloads, ``o_stream.ready`` in every cycle, resets)::

        tile_in  ->  credit                             (a tile only on a credit)
        at most one i_acc[r][c].valid per column c per cycle
        arrival_c  ->  owed_c > 0 | tile_in             (no output before its tile)

    with ``arrival_c`` an output in column ``c`` and ``owed_c`` = ``R`` x (tiles admitted)
    - (outputs arrived in column ``c``): each admitted tile brings ``R`` outputs per column,
    one of them possibly in the cycle it is admitted. No timing is assumed: admissions need not
    be ``R`` cycles apart, and outputs may come any time after their tile, the columns skewed
    any way (the array's fixed PE latency and ``R``-cycle tile spacing are how it keeps the
    one-per-column rule, which is what the drain relies on). Which row's port carries an
    output is free too: the drain ORs a column's ports, and the array's rows finish in order,
    so column ``c``'s ``k``-th output is PE ``(k mod R, c)``'s of tile ``k div R``. FP
    activations add the front end's side of the row floors: written only with
    ``base_w_rdy``, a tile's before or with its ``tile_in``.

    With ``pos_c`` = ``C`` x (outputs arrived in column ``c``) ``+ c -`` (outputs taken by the
    float converter), the place of column ``c``'s next output in row-major order (tile by
    tile, row by row, column by column) counted from the converter's next input, asserted in
    every cycle::

        lost == 0                                    (no output dropped at a column FIFO)
        taken  ->  pos_c > 0 for every c              (nothing taken ahead of its output)
        taken & watching & w == 0  ->  acc == v      (order)
        waited < MERGE_LATENCY                       (progress)

    ``taken`` is a transfer into the drain's :class:`~hdl.arith.to_float.ToFloat`
    (``to_float.i_stream``): the properties are on the accumulators, before the converter
    turns them into float codes (a code does not give its accumulator back; the converter, a
    pipeline that stalls as a whole, is checked bit-exact under backpressure in
    tests/test_array_drain.py and tests/test_to_float.py, and the stream rule on the array's
    ``o_stream`` is :class:`StreamRulesProof`'s). The order property is the one-watched-item
    trick: the harness's free input ``watch`` (a bit per column) picks any
    arriving output, whose value ``v`` and place ``w = pos_c`` it records; ``w`` counts down
    with each transfer, and the transfer at ``w == 0`` must carry ``v``; then another output
    can be watched. The payloads being free, an output lost, doubled or put in another place
    puts another value in some watched output's place. ``waited`` counts the cycles in which
    the next output due has arrived (the column with ``pos_c = 0 mod C``, ``pos_c > 0``) and
    the converter's input register is empty (reset by any other cycle): the drain hands an
    output on within :data:`golden.gemm.MERGE_LATENCY` cycles unless the output port holds it
    back, so it neither sits on one nor stops (waiting ``MERGE_LATENCY - 1`` cycles is
    reachable: the bound is tight).

    Auxiliary invariants (``aux=True``, white-box: the merger's ``mr``, ``mc``, ``sel``, the
    credit counter ``free`` and the credit on its way back ``returning``, per column FIFO its
    ``level`` ``L_c``, write ``g_c`` (the gather registers' output) and registers, the
    converter's input register)::

        sel == 1 << mc,   mc < C,   mr < R
        R * (free + returning) + owed_c + g_c + L_c + mr + (c < mc) == R * Q   (the credits)
        pos_c == to_float.i_stream.valid + (c - mc) mod C + C * (L_c + g_c)   (the merger)

    and ``SyncFIFOBuffered``'s own (its memory pointers agree with its level; an empty output
    register fills in the next cycle). The credit equation is the drain's argument: with
    ``owed_c >= 0`` it bounds ``L_c + g_c`` by ``R * Q``, so a gathered output always finds
    room. The merger equation: the column FIFOs are read round-robin from ``(mr, mc)``, none
    skipped, so the output at index ``i`` of column ``c`` leaves at place ``valid + (c - mc)
    mod C + C * i``. For the order property, where the watched output is (the gather
    registers, its index in the column FIFO, the converter's input register), with its value:
    a word in the FIFO's memory is read through one more asynchronous read port that the
    harness adds to each FIFO memory (Amaranth reads memory rows in simulation only). FP
    activations: floors held in the floor FIFO == tiles admitted and not read out + floors
    written ahead.

    k-induction closes at depth 4 (the progress counter needs it; the rest at 2). Broken
    variants must FAIL (BMC, ``aux=False``), each on its property's own assertion:
    ``fault="extra_credit"``, credits from ``Q + 1`` (``lost``: the other column's outputs
    late, so the merger waits on it, a column's ``R * Q + 1``-th output one per cycle from
    reset finds its FIFO full at step ``R * Q + 1``), and
    ``fault="mirrored_columns"``, a merger that reads each row's columns right to left
    (``order`` or ``ahead``, from step :data:`~golden.gemm.MERGE_LATENCY`; ``lost`` stays 0).

    Parameters
    ----------
    config : golden.gemm.ArrayConfig
        The drain's configuration (rows, columns, accumulator width, activation format,
        ``drain_tiles``).
    aux : bool
        Assert the auxiliary invariants too (needed for k-induction).
    fault : {None, "extra_credit", "mirrored_columns"}
        Prove a broken drain instead.
    split_gather : bool or None
        The drain's gather form (:class:`~hdl.array.drain.ArrayDrain`); ``None``: as on a
        platform that is not an iCE40, two halves.

    Members
    -------
    (the drain's ports)
    watch : In(C)
        Free: watch column ``c``'s output arriving in this cycle (the lowest ``c`` set, when no
        output is being watched).
    """

    def __init__(self, config: ArrayConfig, *, aux: bool = True, fault: str | None = None,
                 split_gather: bool | None = None):
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"config must be an ArrayConfig, not {config!r}")
        if fault not in _DRAIN_FAULTS:
            raise ValueError(f"fault must be one of {sorted(map(str, _DRAIN_FAULTS))}, "
                             f"not {fault!r}")
        self._config = config
        self._aux = aux
        super().__init__(_DRAIN_FAULTS[fault](config, split_gather),
                         extra={"watch": In(config.cols)})
        # {"lost", "ahead", "order", "progress"}: (file, line) of each property, set by
        # elaborate (a test checks which one a broken variant breaks).
        self.property_src = None

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, Q = cfg.rows, cfg.cols, cfg.drain_tiles
        if self._aux:
            with _fifo_memories_readable():
                frag = self._instantiate(m, platform)
        else:
            frag = self._instantiate(m, platform)
        stage = _submodule(frag, "to_float").i_stream
        taken = stage.valid & stage.ready

        # ---- environment: the array's contract ----------------------------------------------
        arrival, value = [], []
        owed = [Signal(range(R * (Q + 2) + 1), name=f"owed{c}") for c in range(C)]
        for c in range(C):
            ports = [self.i_acc[r][c] for r in range(R)]
            valids = Cat(*(port.valid for port in ports))
            arrival.append(valids.any())
            value.append(_select([port.payload for port in ports],
                                 [port.valid for port in ports]))
            m.d.comb += [Assume((valids & (valids - 1)) == 0),
                         Assume(~arrival[c] | (owed[c] != 0) | self.tile_in)]
            m.d.sync += owed[c].eq(owed[c] + Mux(self.tile_in, R, 0) - arrival[c])
        m.d.comb += Assume(~self.tile_in | self.credit)
        floors = None
        if cfg.act_format != "int8":
            # Row floors written and not yet matched by a tile_in.
            floors = Signal(range(Q + cfg.front_latency + 3), name="floors_ahead")
            m.d.comb += [Assume(~self.base_w_en | self.base_w_rdy),
                         Assume(~self.tile_in | (floors != 0) | self.base_w_en)]
            m.d.sync += floors.eq(floors + self.base_w_en - self.tile_in)

        # ---- properties: row-major places, the watched output, progress ---------------------
        pos = [Signal(range(C * (R * (Q + 2) + 2)), init=c, name=f"pos{c}") for c in range(C)]
        for c in range(C):
            m.d.sync += pos[c].eq(pos[c] + Mux(arrival[c], C, 0) - taken)
        watching = Signal()
        watched = Signal(signed(cfg.acc_width))
        offset = Signal.like(pos[0], name="watched_offset")
        due = watching & (offset == 0)
        # pick[c]: column c's arriving output becomes the watched one.
        pick = [~watching & self.watch[c] & arrival[c]
                & ~Cat(*(self.watch[k] & arrival[k] for k in range(c))).any()
                for c in range(C)]
        with m.If(watching & taken):
            m.d.sync += [offset.eq(offset - 1), watching.eq(~due)]
        for c in range(C):
            with m.If(pick[c]):
                m.d.sync += [watching.eq(1), watched.eq(value[c]), offset.eq(pos[c] - taken)]
        arrived = Cat(*(((p % C) == 0) & (p != 0) for p in pos)).any()
        waited = Signal(range(MERGE_LATENCY + 1))
        m.d.sync += waited.eq(Mux(arrived & ~stage.valid,
                                  Mux(waited == MERGE_LATENCY, waited, waited + 1), 0))
        props = {
            "lost": Assert(self.lost == 0, "a column lost an output"),
            "ahead": Assert(~taken | Cat(*(p != 0 for p in pos)).all(),
                            "an output taken before the one due there arrived"),
            "order": Assert(~(taken & due) | (stage.payload.acc == watched),
                            "another output in a watched output's row-major place"),
            "progress": Assert(waited < MERGE_LATENCY,
                               "the next output due arrived and the drain does not pass it on"),
        }
        m.d.comb += list(props.values())
        self.property_src = {name: prop.src_loc for name, prop in props.items()}
        if self._aux:
            columns = self._columns(frag)
            self._invariants(m, frag, columns, stage, owed, pos, floors)
            self._order_invariants(m, columns, stage, pick, watching, watched, offset)
        return m

    def _columns(self, frag: Fragment) -> list:
        """Per column: its FIFO, the FIFO's registers, and its merger turn and queue."""
        C = self._config.cols
        mc = probe(frag, "mc")["mc"]
        columns = []
        for c in range(C):
            name = f"drain{c}"
            fifo = _submodule(frag, name)
            regs = probe(_subfragment(frag, name), "inner_level", "produce", "consume")
            turn = Const(0, range(C))  # (c - mc) mod C: merger reads before column c's head
            for k in range(C):
                turn = Mux(mc == k, (c - k) % C, turn)
            memory = _submodule(_subfragment(frag, name), "storage")
            columns.append({
                "fifo": fifo, **regs, "turn": turn,
                "probe": memory.probe_port,  # made by _fifo_memories_readable
                # Outputs in the column: its FIFO and (the FIFO's write) the gather registers.
                "held": fifo.level + fifo.w_en,
                "read": fifo.r_en & fifo.r_rdy,
            })
        return columns

    def _invariants(self, m: Module, frag: Fragment, columns, stage, owed, pos,
                    floors) -> None:
        """The credit and merger invariants, and the column FIFOs' own (docstring)."""
        cfg = self._config
        R, C, Q = cfg.rows, cfg.cols, cfg.drain_tiles
        p = probe(frag, "mr", "mc", "sel", "free", "returning")
        credits = p["free"] + p["returning"]  # returning: a credit on its way back
        mr, mc, sel = p["mr"], p["mc"], p["sel"]
        m.d.comb += [Assert((mc < C) & (mr < R), "aux: merger position in range"),
                     Assert(Cat(*(sel[c] == (mc == c) for c in range(C))).all(),
                            "aux: the one-hot column select equals mc")]
        if floors is not None:
            offsets = _submodule(frag, "offsets")
            inner = probe(_subfragment(frag, "offsets"), "inner_level")["inner_level"]
            m.d.comb += [
                Assert(offsets.level + credits == floors + Q,
                       "aux: row floors held == tiles admitted or ahead, not read out"),
                Assert((offsets.r_rdy | (inner <= 1)) & (inner < offsets.depth),
                       "aux: floor FIFO output register fills at once, level in range"),
            ]
        for c, col in enumerate(columns):
            depth = col["fifo"].depth - 1  # the memory's; the output register is one more
            m.d.comb += [
                Assert(R * credits + owed[c] + col["held"] + mr + (mc > c) == R * Q,
                       f"aux: column {c}: credits == tiles in the drain"),
                Assert(pos[c] == stage.valid + col["turn"] + C * col["held"],
                       f"aux: column {c}: the merger reads it at its row-major offsets"),
                # SyncFIFOBuffered's: an empty output register is filled in the next cycle,
                # and its memory pointers agree with its level.
                Assert(col["fifo"].r_rdy | (col["inner_level"] <= 1),
                       f"aux: column {c}: FIFO output register fills at once"),
                Assert((col["produce"] < depth) & (col["consume"] < depth)
                       & (col["inner_level"] <= depth)
                       & (_wrap(col["consume"] + col["inner_level"], depth) == col["produce"]),
                       f"aux: column {c}: FIFO pointers agree with its level"),
            ]

    def _order_invariants(self, m: Module, columns, stage, pick, watching, watched,
                          offset) -> None:
        """Where the watched output is, and that it holds the watched value there: the column
        (``wcol``), its index in the column's FIFO and gather registers (``index``), or the
        converter's input register (``~queued``)."""
        C = self._config.cols
        wcol = Signal(range(max(C, 2)), name="watched_col")
        index = Signal(range(self._config.rows * self._config.drain_tiles + 2),
                       name="watched_index")
        queued = Signal(name="watched_queued")
        this = [wcol == c for c in range(C)]

        def of(key):
            return _select([col[key] for col in columns], this)

        for c, col in enumerate(columns):
            with m.If(pick[c]):
                # Behind the outputs the column holds after this cycle's read.
                m.d.sync += [wcol.eq(c), index.eq(col["held"] - col["read"]), queued.eq(1)]
        with m.If(watching & queued & of("read")):
            m.d.sync += [index.eq(index - 1), queued.eq(index != 0)]
        fifo_level = _select([col["fifo"].level for col in columns], this)
        r_rdy = _select([col["fifo"].r_rdy for col in columns], this)
        r_data = _select([col["fifo"].r_data for col in columns], this)
        w_data = _select([col["fifo"].w_data for col in columns], this)
        # The memory word of the watched output (index - r_rdy in the memory, from consume).
        for col in columns:
            m.d.comb += col["probe"].addr.eq(_wrap(col["consume"] + index - col["fifo"].r_rdy,
                                                   col["fifo"].depth - 1))
        word = _select([col["probe"].data for col in columns], this)
        bits = watched.as_unsigned()  # the FIFO's words are unsigned
        in_column = watching & queued
        m.d.comb += [
            Assert(~in_column | ((offset == stage.valid + of("turn") + C * index)
                                 & (index < of("held"))),
                   "aux: the watched output's offset is its merger turn"),
            Assert(~(in_column & (index == fifo_level)) | (w_data == bits),
                   "aux: the watched output in the gather registers"),
            Assert(~(in_column & (index < fifo_level))
                   | (Mux((index == 0) & r_rdy, r_data, word) == bits),
                   "aux: the watched output in the column FIFO"),
            Assert(~(watching & ~queued) | (stage.valid & (offset == 0)
                                            & (stage.payload.acc == watched)),
                   "aux: the watched output in the converter's input register"),
        ]


def _select(values, conditions):
    """``values[i]`` for the first true ``conditions[i]`` (the last value if none is)."""
    chosen = values[-1]
    for v, cond in zip(reversed(values[:-1]), reversed(conditions[:-1]), strict=True):
        chosen = Mux(cond, v, chosen)
    return chosen


def _wrap(value, modulus: int):
    """``value mod modulus`` for ``0 <= value < 2 * modulus``."""
    return Mux(value >= modulus, value - modulus, value)


@contextmanager
def _fifo_memories_readable():
    """Within the block, each memory an ``amaranth.lib.fifo`` FIFO makes has one more read port,
    asynchronous, as its ``probe_port`` (an address the harness drives, the word it reads):
    memory rows are readable in simulation only, and an invariant about a word in a FIFO needs
    a port. The FIFO's behaviour is unchanged (a read port writes nothing)."""
    original = fifo_module.Memory

    class ProbedMemory(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.probe_port = self.read_port(domain="comb")

    fifo_module.Memory = ProbedMemory
    try:
        yield
    finally:
        fifo_module.Memory = original

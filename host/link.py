"""Host driver for the UART link: transports and :class:`HostLink` (write, read, exec, status).

The protocol is :mod:`golden.protocol`. A :class:`Transport` moves bytes: :class:`SerialTransport`
(pyserial) talks to a board, :class:`LoopbackTransport` to an in-process device model such as
:class:`golden.protocol.BridgeModel`, and the cocotb testbench ``sim/tb/link_tb.py`` provides one
that shifts the bytes through the simulated UART pins, so the same :class:`HostLink` code is
tested end to end against the RTL.

:class:`HostLink` never reads a wall clock: every wait is a ``Transport.read`` with a timeout,
which a simulation transport measures in simulated time.
"""

from __future__ import annotations

import abc
import struct
from collections.abc import Callable, Sequence

from bitmod.golden.checks import BitmodError, check_int
from bitmod.golden.protocol import (
    MAX_PAYLOAD_LIMIT,
    NOT_EXECUTED,
    OVERHEAD_BYTES,
    Cmd,
    ErrorCode,
    Frame,
    FrameParser,
    Reply,
    Status,
    decode_error,
    decode_status,
    encode_frame,
)

__all__ = ["DeviceError", "HostLink", "LinkError", "LinkTimeout", "LoopbackTransport",
           "SerialTransport", "Transport"]


class LinkError(RuntimeError, BitmodError):
    """The link failed: no valid reply after the retries, or a reply that breaks the protocol."""


class LinkTimeout(LinkError):
    """No complete reply within the timeout."""


class DeviceError(LinkError):
    """The device answered with an ERROR reply that retrying cannot fix."""

    def __init__(self, code: int, cmd: int, index: int):
        self.code, self.cmd, self.index = code, cmd, index
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"code {code:#04x}"
        super().__init__(f"device error {name} for command {cmd:#04x} at word {index}")


class Transport(abc.ABC):
    """A byte pipe to the device."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send ``data``."""

    @abc.abstractmethod
    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes: returns as soon as ``n`` arrived, or what arrived within
        ``timeout`` seconds."""

    def discard_input(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Drop bytes received but not read yet (stale replies)."""

    def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release the underlying device."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SerialTransport(Transport):
    """A serial port through pyserial (8N1, no flow control)."""

    def __init__(self, port: str, baudrate: int = 115_200):
        import serial  # only needed for real hardware

        self._serial = serial.Serial(port, baudrate=baudrate, bytesize=8, parity="N",
                                     stopbits=1, timeout=0.1)

    def write(self, data: bytes) -> None:
        self._serial.write(data)
        self._serial.flush()

    def read(self, n: int, timeout: float) -> bytes:
        self._serial.timeout = timeout
        return self._serial.read(n)

    def discard_input(self) -> None:
        self._serial.reset_input_buffer()

    def close(self) -> None:
        self._serial.close()


class LoopbackTransport(Transport):
    """In-memory transport to a device model with ``feed(bytes) -> bytes`` (and optionally
    ``timeout() -> bytes``, called when a read waits in vain, since the device then sees the
    same silence), e.g. :class:`golden.protocol.BridgeModel`.

    ``tx_fault`` and ``rx_fault`` (``bytes -> bytes``) may alter what is written and what the
    device replies, to test recovery from line errors.
    """

    def __init__(self, device, *, tx_fault: Callable[[bytes], bytes] | None = None,
                 rx_fault: Callable[[bytes], bytes] | None = None):
        self.device = device
        self.tx_fault = tx_fault
        self.rx_fault = rx_fault
        self._pending = bytearray()

    def _deliver(self, reply: bytes) -> None:
        self._pending += self.rx_fault(reply) if self.rx_fault and reply else reply

    def write(self, data: bytes) -> None:
        if self.tx_fault is not None:
            data = self.tx_fault(bytes(data))
        self._deliver(self.device.feed(data))

    def read(self, n: int, timeout: float) -> bytes:
        if len(self._pending) < n and hasattr(self.device, "timeout"):
            self._deliver(self.device.timeout())
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    def discard_input(self) -> None:
        self._pending.clear()


class HostLink:
    """Request/reply driver of the bridge.

    Each request gets a new sequence number; replies with another one are stale and skipped.
    A request is resent (up to ``retries`` times) when the device reports that it did not
    execute it (every error code but BACKEND: the driver only sends well-formed requests, so
    these come from line errors) or, for the idempotent WRITE, READ and STATUS, when no valid
    reply arrives within ``timeout``. EXEC is not resent after a lost reply, since it may have
    run: :class:`LinkTimeout` is raised instead. BACKEND raises :class:`DeviceError` at once
    (with ``index`` counted from the first word of the call), and so does the last error when
    the retries run out.

    Parameters
    ----------
    transport : Transport
    timeout : float
        Seconds to wait for each part of a reply (header, then the rest).
    retries : int
        Resends after the first attempt.
    max_payload : int, optional
        The device's payload limit; read from STATUS on first need when not given. A multiple
        of 4 in ``MIN_PAYLOAD..65532`` (the bridge's own rule): a WRITE of one word and an EXEC
        carry 8 bytes, so a smaller limit could send nothing.

    Raises
    ------
    ValueError
        ``max_payload`` or ``retries`` out of range.
    """

    MIN_PAYLOAD = 8  # address + one word (WRITE), address + argument (EXEC)

    def __init__(self, transport: Transport, *, timeout: float = 0.5, retries: int = 3,
                 max_payload: int | None = None):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self._max_payload = None if max_payload is None else self._check_payload(max_payload)
        self._seq = 0
        self.resends = 0  # requests sent again, over the link's lifetime

    # --- public API ---------------------------------------------------------------------------

    def status(self) -> Status:
        frame = self._transact(Cmd.STATUS, b"", Reply.DATA)
        status = decode_status(frame.payload)
        if self._max_payload is None:
            try:
                self._max_payload = self._check_payload(status.max_payload)
            except ValueError as error:
                raise LinkError(f"the device reports an unusable payload limit: {error}") \
                    from None
        return status

    def ping(self) -> bool:
        """True if the device answers STATUS."""
        try:
            self.status()
        except LinkError:
            return False
        return True

    @property
    def max_payload(self) -> int:
        if self._max_payload is None:
            self.status()
        return self._max_payload

    def write(self, addr: int, words: Sequence[int]) -> None:
        """Write ``words`` at word addresses ``addr, addr + 1, ...`` (split into frames)."""
        words = [int(w) for w in words]
        chunk = self.max_payload // 4 - 1
        for start in range(0, len(words), chunk):
            part = words[start:start + chunk]
            payload = struct.pack(f"<I{len(part)}I", (addr + start) & 0xFFFFFFFF, *part)
            self._transact(Cmd.WRITE, payload, Reply.ACK, word_offset=start)

    def read(self, addr: int, n: int) -> list[int]:
        """Read ``n`` words from word addresses ``addr, addr + 1, ...``."""
        chunk = self.max_payload // 4
        words: list[int] = []
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            payload = struct.pack("<IH", (addr + start) & 0xFFFFFFFF, count)
            frame = self._transact(Cmd.READ, payload, Reply.DATA, word_offset=start)
            if len(frame.payload) != 4 * count:
                raise LinkError(f"READ of {count} words returned {len(frame.payload)} bytes")
            words += struct.unpack(f"<{count}I", frame.payload)
        return words

    def exec(self, addr: int, arg: int = 0) -> int:
        """One bus write of ``arg`` to ``addr``; returns the backend's response data word."""
        frame = self._transact(Cmd.EXEC, struct.pack("<II", addr, arg), Reply.DATA,
                               idempotent=False)
        if len(frame.payload) != 4:
            raise LinkError(f"EXEC returned {len(frame.payload)} bytes, not 4")
        return struct.unpack("<I", frame.payload)[0]

    # --- internals ----------------------------------------------------------------------------

    @classmethod
    def _check_payload(cls, value) -> int:
        value = check_int("max_payload", value, cls.MIN_PAYLOAD, MAX_PAYLOAD_LIMIT)
        if value % 4:
            raise ValueError(f"max_payload must be a multiple of 4, not {value}")
        return value

    def _transact(self, cmd: int, payload: bytes, expect: int, *, idempotent: bool = True,
                  word_offset: int = 0) -> Frame:
        last: LinkError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.resends += 1
            self._seq = (self._seq + 1) & 0xFF
            self.transport.discard_input()
            self.transport.write(encode_frame(cmd, self._seq, payload))
            try:
                frame = self._receive(self._seq)
            except LinkTimeout as error:
                if not idempotent:
                    raise
                last = error
                continue
            if frame.cmd == Reply.ERROR:
                code, err_cmd, index = decode_error(frame.payload)
                if code in NOT_EXECUTED:
                    last = DeviceError(code, err_cmd, index)
                    continue
                raise DeviceError(code, err_cmd, index + word_offset)
            if frame.cmd != expect:
                raise LinkError(f"expected reply {expect:#04x}, got {frame.cmd:#04x}")
            return frame
        raise last

    def _receive(self, seq: int) -> Frame:
        parser = FrameParser()
        # A device that keeps sending bytes that never form our reply must not keep us here.
        budget = 4 * (OVERHEAD_BYTES + (self._max_payload or 0xFFFF))
        received = 0
        while True:
            chunk = self.transport.read(parser.needed(), self.timeout)
            if not chunk:
                raise LinkTimeout(f"no reply to request {seq} within {self.timeout} s")
            received += len(chunk)
            for frame in parser.feed(chunk):
                if frame.seq == seq:
                    return frame
            if received > budget:
                raise LinkError(f"{received} bytes without a valid reply to request {seq}")

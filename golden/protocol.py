"""The host-link framed protocol: constants, CRC-16, frame encode/decode, and a golden bridge.

This module is the specification of the protocol spoken between the host driver
(:mod:`host.link`) and the UART bridge (:mod:`hdl.link.bridge`); ``docs/protocol.md`` documents
it as tables. Pure Python, no Amaranth imports.

Frame (both directions)::

    0xA5 0x5A | cmd (1) | seq (1) | length (2, LE) | payload (length bytes) | crc (2, LE)

``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, xorout 0) over
``cmd``, ``seq``, ``length`` and the payload (the sync bytes are excluded).
All multi-byte fields, the CRC included, are little endian.

:class:`BridgeModel` is the golden of the bridge's behaviour at byte level: fed the bytes (and
timeouts and UART framing errors) the bridge receives, it returns exactly the bytes the bridge
sends back, executing commands on a :class:`Backend` such as :class:`RegisterFileModel`.
"""

from __future__ import annotations

import enum
import functools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .checks import check_int, check_number

__all__ = [
    "CRC_INIT",
    "HEADER_BYTES",
    "MAX_PAYLOAD_LIMIT",
    "OP_SHIFT",
    "OVERHEAD_BYTES",
    "STATUS_BYTES",
    "SYNC",
    "VERSION",
    "Backend",
    "BridgeModel",
    "Cmd",
    "ErrorCode",
    "Frame",
    "FrameError",
    "FrameParser",
    "LinkConfig",
    "RegisterFileModel",
    "Reply",
    "Status",
    "baud_divisor",
    "check_bridge_params",
    "crc16",
    "decode_error",
    "decode_frame",
    "decode_status",
    "encode_frame",
    "exec_request",
    "read_request",
    "status_request",
    "write_request",
]

SYNC = bytes([0xA5, 0x5A])
VERSION = 1
HEADER_BYTES = 6  # sync (2), cmd, seq, length (2)
OVERHEAD_BYTES = HEADER_BYTES + 2  # + crc
STATUS_BYTES = 10
ERROR_BYTES = 4
CRC_INIT = 0xFFFF
CRC_POLY = 0x1021
MAX_LENGTH = 0xFFFF
MAX_PAYLOAD_LIMIT = 0xFFFC  # the largest multiple of 4 the 16-bit length field holds
# UART: below 4 clocks per bit the mid-bit sample has no margin for the synchroniser's delay; a
# receiver samples the stop bit 9.5 bit periods after the start edge, so 2 % per side keeps
# that sample inside the bit even against a peer that is itself 2 % off.
MIN_DIVISOR = 4
MAX_BAUD_ERROR = 0.02
# Bus map of the accelerator top: a 32-bit bus address is ``op << OP_SHIFT | core address``
# (one core command per bus word; docs/protocol.md, golden.core for the ops).
OP_SHIFT = 24


class Cmd(enum.IntEnum):
    """Request commands (host -> device)."""

    STATUS = 0x01  # also a ping: no payload; DATA reply with the status block
    WRITE = 0x02   # addr32 + N data words (N >= 1): N bus writes at addr, addr+1, ...
    READ = 0x03    # addr32 + count16: count bus reads; DATA reply with count words
    EXEC = 0x04    # addr32 + arg32: one bus write; DATA reply with the response's data word


class Reply(enum.IntEnum):
    """Reply commands (device -> host); ``seq`` echoes the request's."""

    ACK = 0x80    # WRITE done, no payload
    DATA = 0x81   # READ words, EXEC word or STATUS block
    ERROR = 0x82  # code (1), request cmd (1), word index (2)


class ErrorCode(enum.IntEnum):
    """The ``code`` byte of an ERROR reply."""

    BAD_CRC = 0x01      # CRC mismatch: nothing executed
    BAD_LENGTH = 0x02   # length beyond max_payload, wrong for the command, or bad READ count
    UNKNOWN_CMD = 0x03  # CRC good but the command is not a request command
    BACKEND = 0x04      # the bus answered error=1; ``index`` = the failing word
    TIMEOUT = 0x05      # the frame stopped for timeout_cycles: resynchronised
    FRAMING = 0x06      # UART stop bit low inside a frame: resynchronised


# Errors after which the request certainly did not execute (only BACKEND comes from running
# it): always safe to resend. A well-formed request can only get BAD_LENGTH or UNKNOWN_CMD if
# the line corrupted it in a way the CRC could not see (a length field grown past max_payload).
NOT_EXECUTED = frozenset(set(ErrorCode) - {ErrorCode.BACKEND})


def baud_divisor(clk_freq, baud) -> int:
    """Clock cycles per UART bit, ``round(clk_freq / baud)``, validated.

    Raises ``ValueError`` when the divisor is below :data:`MIN_DIVISOR` or the achieved rate
    ``clk_freq / divisor`` is more than :data:`MAX_BAUD_ERROR` away from ``baud``.
    """
    clk_freq = check_number("clk_freq", clk_freq, positive=True)
    baud = check_number("baud", baud, positive=True)
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud {baud:.10g} needs at least {MIN_DIVISOR} clocks per bit; "
                         f"clk_freq {clk_freq:.10g} gives {clk_freq / baud:.2f}")
    error = abs(clk_freq / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"baud {baud:.10g} is {error:.1%} off with clk_freq {clk_freq:.10g} "
                         f"(divisor {divisor}); at most {MAX_BAUD_ERROR:.0%} is allowed")
    return divisor


def check_bridge_params(max_payload, timeout_cycles, rx_fifo_depth) -> tuple[int, int, int]:
    """The bridge's parameters, validated (``max_payload`` a multiple of 4 in 8..65532,
    ``timeout_cycles`` 2..2**32, ``rx_fifo_depth`` 2..4096)."""
    max_payload = check_int("max_payload", max_payload, 8, MAX_PAYLOAD_LIMIT)
    if max_payload % 4:
        raise ValueError(f"max_payload must be a multiple of 4, not {max_payload}")
    return (max_payload, check_int("timeout_cycles", timeout_cycles, 2, 1 << 32),
            check_int("rx_fifo_depth", rx_fifo_depth, 2, 4096))


@dataclass(frozen=True)
class LinkConfig:
    """The UART link of a board, validated once: clock, bit rate and the bridge's parameters.

    Attributes
    ----------
    clk_freq : float
        Clock of the link in Hz: the core's clock, or the board's input clock when the link
        runs in a clock domain of its own (``core_clk_freq``).
    baud : int
        UART bit rate; :func:`baud_divisor` must accept it at ``clk_freq``.
    max_payload : int
        Largest frame payload in bytes (:func:`check_bridge_params`).
    timeout_cycles : int or None
        Receive timeout inside a frame; ``None`` takes about 50 ms of clock, and at least
        four byte times. At least two byte times (``20 * divisor``), so that a sender's
        normal gaps never time out.
    rx_fifo_depth : int
        Receive FIFO depth in bytes.
    core_clk_freq : float or None
        The core's clock in Hz when it differs from the link's: the bridge then runs at
        ``clk_freq`` and passes commands to the core through clock-domain-crossing FIFOs
        (``fpga.top.AcceleratorTop``). ``None``: one clock, ``clk_freq``.
    """

    clk_freq: float = 12e6
    baud: int = 115_200
    max_payload: int = 256
    timeout_cycles: int | None = None
    rx_fifo_depth: int = 16
    core_clk_freq: float | None = None

    def __post_init__(self):
        put = functools.partial(object.__setattr__, self)
        put("clk_freq", check_number("clk_freq", self.clk_freq, positive=True))
        if self.core_clk_freq is not None:
            put("core_clk_freq", check_number("core_clk_freq", self.core_clk_freq,
                                              positive=True))
        put("baud", check_int("baud", self.baud, 1))
        divisor = baud_divisor(self.clk_freq, self.baud)
        timeout = self.timeout_cycles
        if timeout is None:
            timeout = max(int(self.clk_freq * 0.05), 40 * divisor)
        payload, timeout, depth = check_bridge_params(self.max_payload, timeout,
                                                      self.rx_fifo_depth)
        if timeout < 20 * divisor:
            raise ValueError(f"timeout_cycles must be at least two byte times "
                             f"({20 * divisor} cycles at divisor {divisor}), not {timeout}")
        put("max_payload", payload)
        put("timeout_cycles", timeout)
        put("rx_fifo_depth", depth)

    @property
    def divisor(self) -> int:
        """Clock cycles per UART bit (:func:`baud_divisor`)."""
        return baud_divisor(self.clk_freq, self.baud)

    @property
    def core_clock(self) -> float:
        """The core's clock in Hz: ``core_clk_freq``, else the link's own ``clk_freq``."""
        return self.clk_freq if self.core_clk_freq is None else self.core_clk_freq

    @property
    def split(self) -> bool:
        """The link and the core run on clocks of their own (``core_clk_freq`` is set)."""
        return self.core_clk_freq is not None


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes | Iterable[int], crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``, continuing from ``crc`` (check: b"123456789" -> 0x29B1)."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


class FrameError(ValueError):
    """A byte string is not one well-formed frame (``reason`` says why)."""


@dataclass(frozen=True)
class Frame:
    cmd: int
    seq: int
    payload: bytes


def encode_frame(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    """The bytes of one frame."""
    if not 0 <= cmd <= 0xFF:
        raise ValueError(f"cmd must be a byte, not {cmd}")
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"seq must be a byte, not {seq}")
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_LENGTH}")
    body = bytes([cmd, seq]) + struct.pack("<H", len(payload)) + bytes(payload)
    return SYNC + body + struct.pack("<H", crc16(body))


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one frame; raises :class:`FrameError` if ``data`` is anything else."""
    data = bytes(data)
    if len(data) < OVERHEAD_BYTES:
        raise FrameError(f"truncated: {len(data)} bytes, a frame has at least {OVERHEAD_BYTES}")
    if data[:2] != SYNC:
        raise FrameError(f"bad sync {data[:2].hex()}")
    (length,) = struct.unpack_from("<H", data, 4)
    if len(data) != OVERHEAD_BYTES + length:
        raise FrameError(f"length field {length} but {len(data) - OVERHEAD_BYTES} payload bytes")
    (crc,) = struct.unpack_from("<H", data, len(data) - 2)
    if crc16(data[2:-2]) != crc:
        raise FrameError(f"bad CRC {crc:#06x}, expected {crc16(data[2:-2]):#06x}")
    return Frame(data[2], data[3], data[HEADER_BYTES:-2])


class FrameParser:
    """Incremental receiver for the host: hunts the sync, collects a frame, checks its CRC.

    :meth:`feed` returns the complete frames found; bytes of frames with a bad CRC, an
    oversize length or no sync are skipped (counted in ``discarded``). :meth:`needed` is the
    number of bytes still missing from the frame in progress (1 while hunting), so a caller can
    read exactly that many without blocking past a frame's end.
    """

    def __init__(self, max_length: int = MAX_LENGTH):
        self.max_length = max_length
        self.buffer = bytearray()
        self.discarded = 0

    def needed(self) -> int:
        if len(self.buffer) < HEADER_BYTES:
            return HEADER_BYTES - len(self.buffer) if self.buffer[:1] == SYNC[:1] else 1
        (length,) = struct.unpack_from("<H", self.buffer, 4)
        return max(1, OVERHEAD_BYTES + length - len(self.buffer))

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        self.buffer += data
        while True:
            start = self.buffer.find(SYNC[:1])
            if start < 0:
                self.discarded += len(self.buffer)
                self.buffer.clear()
                break
            self.discarded += start
            del self.buffer[:start]
            if len(self.buffer) < 2:
                break
            if self.buffer[1] != SYNC[1] or (len(self.buffer) >= HEADER_BYTES and (
                    struct.unpack_from("<H", self.buffer, 4)[0] > self.max_length)):
                self._skip()
                continue
            if len(self.buffer) < HEADER_BYTES:
                break
            (length,) = struct.unpack_from("<H", self.buffer, 4)
            if len(self.buffer) < OVERHEAD_BYTES + length:
                break
            candidate = bytes(self.buffer[:OVERHEAD_BYTES + length])
            try:
                frames.append(decode_frame(candidate))
            except FrameError:
                self._skip()
                continue
            del self.buffer[:len(candidate)]
        return frames

    def _skip(self) -> None:
        # Resume the hunt one byte after this false sync: a real frame may start inside it.
        self.discarded += 1
        del self.buffer[:1]


# --- request payloads -------------------------------------------------------------------------

def _check_word(name: str, value: int) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} must be a 32-bit unsigned word, not {value}")
    return value


def write_request(seq: int, addr: int, words: Sequence[int]) -> bytes:
    if not words:
        raise ValueError("a WRITE needs at least one word")
    payload = struct.pack("<I", _check_word("addr", addr))
    payload += b"".join(struct.pack("<I", _check_word("word", int(w))) for w in words)
    return encode_frame(Cmd.WRITE, seq, payload)


def read_request(seq: int, addr: int, count: int) -> bytes:
    if not 0 <= count <= 0xFFFF:
        raise ValueError(f"count must fit 16 bits, not {count}")
    return encode_frame(Cmd.READ, seq, struct.pack("<IH", _check_word("addr", addr), count))


def exec_request(seq: int, addr: int, arg: int = 0) -> bytes:
    return encode_frame(Cmd.EXEC, seq, struct.pack("<II", _check_word("addr", addr),
                                                   _check_word("arg", arg)))


def status_request(seq: int) -> bytes:
    return encode_frame(Cmd.STATUS, seq)


@dataclass(frozen=True)
class Status:
    """The STATUS block. Counters are 16 bits and wrap."""

    version: int
    max_payload: int
    ok_frames: int      # frames answered with ACK or DATA
    error_frames: int   # frames answered with ERROR (any code)
    dropped_bytes: int  # received bytes lost because the receive FIFO was full

    def encode(self) -> bytes:
        return struct.pack("<BBHHHH", self.version, 0, self.max_payload, self.ok_frames & 0xFFFF,
                           self.error_frames & 0xFFFF, self.dropped_bytes & 0xFFFF)


def decode_status(payload: bytes) -> Status:
    if len(payload) != STATUS_BYTES:
        raise FrameError(f"a status block has {STATUS_BYTES} bytes, not {len(payload)}")
    version, _, max_payload, ok, err, dropped = struct.unpack("<BBHHHH", payload)
    return Status(version, max_payload, ok, err, dropped)


def decode_error(payload: bytes) -> tuple[int, int, int]:
    """``(code, cmd, index)`` of an ERROR reply's payload."""
    if len(payload) != ERROR_BYTES:
        raise FrameError(f"an error payload has {ERROR_BYTES} bytes, not {len(payload)}")
    return struct.unpack("<BBH", payload)


# --- golden bridge ----------------------------------------------------------------------------

class Backend:
    """The bridge's bus: one response (data, error) per request."""

    def access(self, write: bool, addr: int, data: int) -> tuple[int, bool]:
        raise NotImplementedError


class RegisterFileModel(Backend):
    """Golden of ``hdl.link.bridge.RegisterFile``: ``depth`` words, zero after reset.

    A read returns the word; a write stores it and returns the word it replaced; an address
    at or beyond ``depth`` returns ``(0, error)`` and changes nothing.
    """

    def __init__(self, depth: int):
        self.words = [0] * depth

    def access(self, write: bool, addr: int, data: int) -> tuple[int, bool]:
        if addr >= len(self.words):
            return 0, True
        old = self.words[addr]
        if write:
            self.words[addr] = data
        return old, False


class _State(enum.Enum):
    HUNT = 0
    SYNC1 = 1
    CMD = 2
    SEQ = 3
    LEN0 = 4
    LEN1 = 5
    PAYLOAD = 6
    CRC0 = 7
    CRC1 = 8


class BridgeModel:
    """Byte-exact golden of ``hdl.link.bridge.Bridge`` (with an unbounded receive FIFO).

    Receiving: hunt for 0xA5 then 0x5A (0xA5 0xA5 0x5A also syncs); then cmd, seq, length.
    A length above ``max_payload`` is answered with BAD_LENGTH at once and the hunt resumes (the
    rest of that frame is hunted through). Otherwise the payload and CRC are buffered; a CRC
    mismatch is answered with BAD_CRC and nothing executes. Then the command is checked
    (UNKNOWN_CMD, BAD_LENGTH) and executed on the backend, stopping at the first bus error
    (BACKEND, with the index of the failing word; earlier writes of that frame stay done).

    :meth:`timeout` is a silence of at least ``timeout_cycles`` and :meth:`framing_error` a byte
    whose stop bit was low: inside a frame (after both sync bytes) each aborts it with a TIMEOUT
    or FRAMING reply; before that they just restart the hunt. ERROR replies carry the seq and
    cmd received so far (0 if not yet received).
    """

    def __init__(self, backend: Backend, max_payload: int):
        self.backend = backend
        self.max_payload = max_payload
        self.ok_frames = 0
        self.error_frames = 0
        self.dropped_bytes = 0
        self._hunt()

    def _hunt(self) -> None:
        self.state = _State.HUNT
        self.cmd = self.seq = self.length = 0
        self.body = bytearray()

    def _in_frame(self) -> bool:
        return self.state not in (_State.HUNT, _State.SYNC1)

    def _error(self, code: ErrorCode, index: int = 0) -> bytes:
        self.error_frames += 1
        reply = encode_frame(Reply.ERROR, self.seq,
                             struct.pack("<BBH", code, self.cmd, index & 0xFFFF))
        self._hunt()
        return reply

    def _ok(self, reply: int, payload: bytes = b"") -> bytes:
        self.ok_frames += 1
        out = encode_frame(reply, self.seq, payload)
        self._hunt()
        return out

    def timeout(self) -> bytes:
        if self._in_frame():
            return self._error(ErrorCode.TIMEOUT)
        self._hunt()
        return b""

    def framing_error(self) -> bytes:
        return self.timeout() if not self._in_frame() else self._error(ErrorCode.FRAMING)

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in bytes(data):
            out += self._byte(byte)
        return bytes(out)

    def _byte(self, byte: int) -> bytes:
        s = self.state
        if s is _State.HUNT:
            if byte == SYNC[0]:
                self.state = _State.SYNC1
        elif s is _State.SYNC1:
            if byte == SYNC[1]:
                self.state = _State.CMD
            elif byte != SYNC[0]:
                self.state = _State.HUNT
        elif s is _State.CMD:
            self.cmd, self.state = byte, _State.SEQ
            self.body.append(byte)
        elif s is _State.SEQ:
            self.seq, self.state = byte, _State.LEN0
            self.body.append(byte)
        elif s is _State.LEN0:
            self.length, self.state = byte, _State.LEN1
            self.body.append(byte)
        elif s is _State.LEN1:
            self.length |= byte << 8
            self.body.append(byte)
            if self.length > self.max_payload:
                return self._error(ErrorCode.BAD_LENGTH)
            self.state = _State.PAYLOAD if self.length else _State.CRC0
        elif s is _State.PAYLOAD:
            self.body.append(byte)
            if len(self.body) == 4 + self.length:
                self.state = _State.CRC0
        elif s is _State.CRC0:
            self.crc, self.state = byte, _State.CRC1
        else:
            self.crc |= byte << 8
            if self.crc != crc16(self.body):
                return self._error(ErrorCode.BAD_CRC)
            return self._execute(bytes(self.body[4:]))
        return b""

    def _execute(self, payload: bytes) -> bytes:
        n = self.length
        if self.cmd == Cmd.STATUS:
            if n:
                return self._error(ErrorCode.BAD_LENGTH)
            status = Status(VERSION, self.max_payload, self.ok_frames, self.error_frames,
                            self.dropped_bytes)
            return self._ok(Reply.DATA, status.encode())
        if self.cmd == Cmd.WRITE:
            if n < 8 or n % 4:
                return self._error(ErrorCode.BAD_LENGTH)
            (addr,) = struct.unpack_from("<I", payload)
            for i in range((n - 4) // 4):
                (word,) = struct.unpack_from("<I", payload, 4 + 4 * i)
                _, error = self.backend.access(True, (addr + i) & 0xFFFFFFFF, word)
                if error:
                    return self._error(ErrorCode.BACKEND, i)
            return self._ok(Reply.ACK)
        if self.cmd == Cmd.READ:
            if n != 6:
                return self._error(ErrorCode.BAD_LENGTH)
            addr, count = struct.unpack("<IH", payload)
            if not 1 <= count <= self.max_payload // 4:
                return self._error(ErrorCode.BAD_LENGTH)
            words = []
            for i in range(count):
                word, error = self.backend.access(False, (addr + i) & 0xFFFFFFFF, 0)
                if error:
                    return self._error(ErrorCode.BACKEND, i)
                words.append(word)
            return self._ok(Reply.DATA, struct.pack(f"<{count}I", *words))
        if self.cmd == Cmd.EXEC:
            if n != 8:
                return self._error(ErrorCode.BAD_LENGTH)
            addr, arg = struct.unpack("<II", payload)
            word, error = self.backend.access(True, addr, arg)
            if error:
                return self._error(ErrorCode.BACKEND, 0)
            return self._ok(Reply.DATA, struct.pack("<I", word))
        return self._error(ErrorCode.UNKNOWN_CMD)

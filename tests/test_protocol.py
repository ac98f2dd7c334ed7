"""The host-link protocol golden (golden/protocol.py) and the host driver (host/link.py) over the
in-memory transport: CRC vectors, frame round trips, rejection of damaged frames, the golden
bridge's behaviour, and the driver's retries and timeouts."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitmod.golden import protocol
from bitmod.golden.protocol import Cmd, ErrorCode, Reply
from bitmod.host.link import DeviceError, HostLink, LinkError, LinkTimeout, LoopbackTransport


def crc_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE bit by bit from its definition (independent of the table)."""
    crc = 0xFFFF
    for byte in data:
        for i in range(7, -1, -1):
            feedback = ((crc >> 15) ^ (byte >> i)) & 1
            crc = (crc << 1) & 0xFFFF
            if feedback:
                crc ^= 0x1021
    return crc


# --- CRC ----------------------------------------------------------------------------------------


def test_crc_catalogue_check_value():
    # The "check" of CRC-16/CCITT-FALSE in the CRC catalogue (reveng), and its init for b"".
    assert protocol.crc16(b"123456789") == 0x29B1
    assert protocol.crc16(b"") == 0xFFFF
    assert crc_bitwise(b"123456789") == 0x29B1


@given(st.binary(max_size=300))
def test_crc_matches_bitwise_definition(data):
    assert protocol.crc16(data) == crc_bitwise(data)


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_crc_continues_across_chunks(a, b):
    assert protocol.crc16(b, protocol.crc16(a)) == protocol.crc16(a + b)


def test_crc_all_single_bytes():
    table = [protocol.crc16([b]) for b in range(256)]
    assert table == [crc_bitwise(bytes([b])) for b in range(256)]
    print(f"checked {len(table)} cases")


# --- frames -------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=600))
def test_frame_round_trip(cmd, seq, payload):
    frame = protocol.encode_frame(cmd, seq, payload)
    assert frame[:2] == b"\xA5\x5A"
    assert struct.unpack_from("<H", frame, 4)[0] == len(payload)
    assert struct.unpack_from("<H", frame, len(frame) - 2)[0] == crc_bitwise(frame[2:-2])
    assert protocol.decode_frame(frame) == protocol.Frame(cmd, seq, payload)


@settings(max_examples=200)
@given(st.binary(max_size=64), st.data())
def test_any_single_bit_flip_is_rejected(payload, data):
    frame = bytearray(protocol.encode_frame(Cmd.WRITE, 9, payload))
    bit = data.draw(st.integers(0, 8 * len(frame) - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(protocol.FrameError):
        protocol.decode_frame(bytes(frame))


@given(st.binary(max_size=64), st.data())
def test_truncated_and_extended_frames_are_rejected(payload, data):
    frame = protocol.encode_frame(Cmd.READ, 1, payload)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(protocol.FrameError):
        protocol.decode_frame(frame[:cut])
    with pytest.raises(protocol.FrameError, match="length field"):
        protocol.decode_frame(frame + b"\0")


def test_encode_validates():
    with pytest.raises(ValueError, match="cmd must be a byte, not 256"):
        protocol.encode_frame(256, 0)
    with pytest.raises(ValueError, match="payload of 65536 bytes"):
        protocol.encode_frame(1, 0, bytes(65536))
    with pytest.raises(ValueError, match="at least one word"):
        protocol.write_request(0, 0, [])
    with pytest.raises(ValueError, match="word must be a 32-bit"):
        protocol.write_request(0, 0, [1 << 32])


@settings(max_examples=100)
@given(st.lists(st.tuples(st.binary(max_size=20), st.integers(0, 255),
                          st.binary(max_size=40)), max_size=6),
       st.integers(1, 17))
def test_parser_finds_frames_in_noise(parts, chunk):
    """Frames separated by noise, fed in arbitrary chunks, all come out, in order."""
    stream, frames = b"", []
    for noise, seq, payload in parts:
        frame = protocol.encode_frame(Reply.DATA, seq, payload)
        stream += noise + frame
        frames.append(protocol.Frame(Reply.DATA, seq, payload))
    parser = protocol.FrameParser()
    found = []
    for i in range(0, len(stream), chunk):
        found += parser.feed(stream[i:i + chunk])
    # Noise may by chance contain a valid frame; the real ones must all be there, in order.
    it = iter(found)
    assert all(any(f == g for g in it) for f in frames)


def test_request_payloads():
    frame = protocol.decode_frame(protocol.write_request(3, 0x10, [1, 0xFFFFFFFF]))
    assert (frame.cmd, frame.seq) == (Cmd.WRITE, 3)
    assert struct.unpack("<3I", frame.payload) == (0x10, 1, 0xFFFFFFFF)
    assert protocol.decode_frame(protocol.read_request(4, 7, 9)).payload == struct.pack(
        "<IH", 7, 9)
    assert protocol.decode_frame(protocol.exec_request(5, 1, 2)).payload == struct.pack(
        "<II", 1, 2)
    assert protocol.decode_frame(protocol.status_request(6)).payload == b""
    status = protocol.Status(1, 256, 3, 0x1FFFF, 2)
    assert protocol.decode_status(status.encode()) == protocol.Status(1, 256, 3, 0xFFFF, 2)


# --- golden bridge ------------------------------------------------------------------------------


def reply(data: bytes) -> tuple:
    frame = protocol.decode_frame(data)
    if frame.cmd == Reply.ERROR:
        return (frame.seq, "error", *protocol.decode_error(frame.payload))
    return (frame.seq, Reply(frame.cmd).name, frame.payload)


@pytest.fixture
def bridge():
    return protocol.BridgeModel(protocol.RegisterFileModel(8), max_payload=16)


def test_model_write_read_exec_status(bridge):
    assert reply(bridge.feed(protocol.write_request(1, 2, [5, 6, 7]))) == (1, "ACK", b"")
    assert reply(bridge.feed(protocol.read_request(2, 1, 4))) == (
        2, "DATA", struct.pack("<4I", 0, 5, 6, 7))
    assert reply(bridge.feed(protocol.exec_request(3, 3, 99))) == (3, "DATA", struct.pack(
        "<I", 6))
    assert bridge.backend.words[3] == 99
    assert reply(bridge.feed(protocol.status_request(4))) == (
        4, "DATA", protocol.Status(protocol.VERSION, 16, 3, 0, 0).encode())


def test_model_bad_crc_executes_nothing(bridge):
    frame = bytearray(protocol.write_request(7, 0, [0xAAAA]))
    frame[8] ^= 0x01
    assert reply(bridge.feed(bytes(frame))) == (7, "error", ErrorCode.BAD_CRC, Cmd.WRITE, 0)
    assert bridge.backend.words == [0] * 8


def test_model_errors(bridge):
    cases = [
        (protocol.read_request(1, 0, 0), (1, "error", ErrorCode.BAD_LENGTH, Cmd.READ, 0)),
        (protocol.read_request(2, 0, 5), (2, "error", ErrorCode.BAD_LENGTH, Cmd.READ, 0)),
        (protocol.read_request(3, 0, 4), (3, "DATA", bytes(16))),
        (protocol.write_request(4, 0, [1, 2, 3, 4]), None),  # oversize: 20 > 16
        (protocol.encode_frame(0x55, 5, b"x"), (5, "error", ErrorCode.UNKNOWN_CMD, 0x55, 0)),
        (protocol.encode_frame(Cmd.EXEC, 6, bytes(4)),
         (6, "error", ErrorCode.BAD_LENGTH, Cmd.EXEC, 0)),
        (protocol.write_request(7, 6, [1, 2, 3]), (7, "error", ErrorCode.BACKEND, Cmd.WRITE, 2)),
        (protocol.read_request(8, 0xFFFFFFFF, 1),
         (8, "error", ErrorCode.BACKEND, Cmd.READ, 0)),
    ]
    for frame, want in cases:
        out = bridge.feed(frame)
        if want is None:
            # Rejected after the header; the rest of the frame is hunted through silently.
            assert reply(out) == (4, "error", ErrorCode.BAD_LENGTH, Cmd.WRITE, 0)
        else:
            assert reply(out) == want
    assert bridge.backend.words[6:] == [1, 2]  # words before the failing one were written


def test_model_timeout_and_framing(bridge):
    frame = protocol.write_request(9, 0, [1])
    assert bridge.feed(frame[:7]) == b""
    assert reply(bridge.timeout()) == (9, "error", ErrorCode.TIMEOUT, Cmd.WRITE, 0)
    assert bridge.timeout() == b""  # hunting: silence is not an error
    assert bridge.feed(frame[:1]) == b"" and bridge.timeout() == b""  # lone sync byte
    assert bridge.feed(frame[:3]) == b""
    assert reply(bridge.framing_error()) == (0, "error", ErrorCode.FRAMING, Cmd.WRITE, 0)
    assert bridge.framing_error() == b""
    assert reply(bridge.feed(b"\xA5\xA5" + frame[1:])) == (9, "ACK", b"")


# --- host driver over the in-memory transport ----------------------------------------------------


def link_to_model(depth=40, max_payload=16, **faults):
    model = protocol.BridgeModel(protocol.RegisterFileModel(depth), max_payload)
    return HostLink(LoopbackTransport(model, **faults), timeout=0.01, retries=3), model


def test_host_round_trip_splits_frames():
    link, model = link_to_model()
    words = [(i * 0x9E3779B9) & 0xFFFFFFFF for i in range(40)]
    link.write(0, words)  # 3 words per frame at max_payload 16
    assert model.backend.words == words
    assert link.read(0, 40) == words  # 4 words per frame
    assert link.exec(7, 1) == words[7]
    # STATUS (to learn max_payload), 14 WRITE frames, 10 READ frames, EXEC.
    assert link.status().ok_frames == 1 + 14 + 10 + 1
    assert link.ping()
    assert link.resends == 0


def test_host_device_errors_carry_the_word_index():
    link, _ = link_to_model()
    with pytest.raises(DeviceError, match="BACKEND") as info:
        link.write(30, list(range(20)))  # words 0..9 are addresses 30..39; 10 fails
    assert (info.value.code, info.value.index) == (ErrorCode.BACKEND, 10)
    with pytest.raises(DeviceError) as info:
        link.read(38, 5)
    assert info.value.index == 2


def corrupt_every(n, position, cut=False):
    """Every ``n``-th chunk: flip a bit of byte ``position`` (or keep only ``position`` bytes
    with ``cut``)."""
    count = [0]

    def fault(data):
        count[0] += 1
        if count[0] % n:
            return data
        if cut:
            return data[:position]
        data = bytearray(data)
        data[position % len(data)] ^= 0x40
        return bytes(data)
    return fault


def test_host_resends_after_request_corruption():
    # Every 2nd request corrupted (a payload byte: BAD_CRC) or cut short (TIMEOUT).
    for fault in (corrupt_every(2, 7), corrupt_every(2, 5, cut=True)):
        link, model = link_to_model(tx_fault=fault)
        link.write(0, list(range(9)))
        assert model.backend.words[:9] == list(range(9))
        assert link.read(0, 9) == list(range(9))
        assert link.resends > 0


def test_host_resends_after_reply_corruption():
    link, _ = link_to_model(rx_fault=corrupt_every(2, 9))
    assert link.read(0, 12) == [0] * 12
    link.write(0, [1, 2, 3])
    assert link.resends > 0
    # EXEC may have run when its reply is lost: no resend, a timeout instead.
    model = protocol.BridgeModel(protocol.RegisterFileModel(8), 16)
    link = HostLink(LoopbackTransport(model, rx_fault=corrupt_every(1, 9)), timeout=0.01,
                    max_payload=16)
    with pytest.raises(LinkTimeout):
        link.exec(0, 5)
    assert link.resends == 0


def test_host_gives_up_after_retries():
    class Dead:
        def feed(self, data):
            return b""

    link = HostLink(LoopbackTransport(Dead()), timeout=0.01, retries=2, max_payload=16)
    with pytest.raises(LinkTimeout):
        link.read(0, 1)
    assert link.resends == 2
    assert not link.ping()

    class Babbler:
        def feed(self, data):
            return b"\xA5" * 1000

    link = HostLink(LoopbackTransport(Babbler()), timeout=0.01, retries=0, max_payload=16)
    with pytest.raises(LinkError, match="without a valid reply"):
        link.read(0, 1)


@pytest.mark.parametrize(("max_payload", "message"), [
    (0, "max_payload must be in 8..65532, not 0"),
    (4, "max_payload must be in 8..65532, not 4"),
    (7, "max_payload must be in 8..65532, not 7"),
    (10, "max_payload must be a multiple of 4, not 10"),
    (65536, "max_payload must be in 8..65532"),
])
def test_host_refuses_an_unusable_max_payload(max_payload, message):
    """Issue 15 item 17: max_payload=0 sent nothing and 4..7 raised "range() arg 3 must not be
    zero" (a WRITE of one word carries 8 bytes)."""
    with pytest.raises(ValueError, match=message):
        HostLink(LoopbackTransport(protocol.BridgeModel(protocol.RegisterFileModel(8), 16)),
                 max_payload=max_payload)


def test_host_works_at_the_smallest_max_payload():
    model = protocol.BridgeModel(protocol.RegisterFileModel(8), 8)
    link = HostLink(LoopbackTransport(model), timeout=0.01, max_payload=8)
    link.write(0, [5, 6, 7])  # one word per frame
    assert model.backend.words[:3] == [5, 6, 7]
    assert link.read(0, 3) == [5, 6, 7]
    assert model.ok_frames == 3 + 2  # a READ carries two words at 8 bytes


def test_host_refuses_a_device_reporting_an_unusable_max_payload():
    link, model = link_to_model()
    model.max_payload = 4  # what a broken device would report in STATUS
    with pytest.raises(LinkError, match="unusable payload limit: max_payload must be in"):
        link.write(0, [1])


def test_host_ignores_stale_replies():
    link, model = link_to_model()
    stale = protocol.encode_frame(Reply.ACK, 200)

    class Prefixed:
        def feed(self, data):
            return stale + model.feed(data)

    link.transport.device = Prefixed()
    assert link.read(0, 2) == [0, 0]

"""host/dfu.py: the DFU suffix against the DFU 1.1 layout and a bitwise CRC-32."""

from __future__ import annotations

import struct

import pytest

from bitmod.host import dfu


def bitwise_crc(data: bytes) -> int:
    """dfu-util's CRC, bit by bit: reflected 0xEDB88320, init 0xFFFFFFFF, no final xor."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc


@pytest.mark.parametrize("body", [b"", b"\x00", b"\xff\x00\x00\xffbitstream",
                                  bytes(range(256)) * 3])
def test_suffix_layout_and_crc(body):
    out = dfu.add_suffix(body, vendor=0x1209, product=0x5AF0)
    assert out[:len(body)] == body and len(out) == len(body) + 16
    device, product, vendor, bcd_dfu = struct.unpack("<HHHH", out[-16:-8])
    assert (device, product, vendor, bcd_dfu) == (0xFFFF, 0x5AF0, 0x1209, 0x0100)
    assert out[-8:-5] == b"UFD" and out[-5] == 16
    assert struct.unpack("<I", out[-4:])[0] == bitwise_crc(out[:-4])
    assert dfu.has_suffix(out) and not dfu.has_suffix(body)


def test_corrupted_suffix_is_not_valid():
    out = bytearray(dfu.add_suffix(b"abcdef", 0x1209, 0x5AF0))
    out[2] ^= 1
    assert not dfu.has_suffix(bytes(out))


def test_errors():
    with pytest.raises(ValueError, match="already has a DFU suffix"):
        dfu.add_suffix(dfu.add_suffix(b"x", 1, 2), 1, 2)
    with pytest.raises(ValueError, match="vendor must be a 16-bit number, not 65536"):
        dfu.add_suffix(b"x", 0x10000, 2)
    with pytest.raises(ValueError, match="product must be a 16-bit number, not True"):
        dfu.add_suffix(b"x", 1, True)


def test_command_line_in_place(tmp_path, capsys):
    path = tmp_path / "top.bit"
    path.write_bytes(b"\xff\x00bit")
    assert dfu.main(["-v", "1209", "-p", "5af0", "-a", str(path)]) == 0
    assert path.read_bytes() == dfu.add_suffix(b"\xff\x00bit", 0x1209, 0x5AF0)
    assert dfu.main(["-v", "1209", "-p", "5af0", "-a", str(path)]) == 1  # twice: refused
    assert capsys.readouterr().err == "dfu-suffix: error: the file already has a DFU suffix\n"
    assert dfu.main(["-v", "1209", "-p", "5af0", "-a", str(tmp_path / "none.bit")]) == 1
    assert "No such file" in capsys.readouterr().err

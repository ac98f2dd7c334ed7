"""DFU file suffix (USB DFU 1.1, appendix B), as ``dfu-suffix -a`` from dfu-util adds it.

Boards that load their bitstream through a DFU bootloader (the OrangeCrab's) take the ``.bit``
with this 16-byte suffix appended. amaranth-boards' OrangeCrab build script calls
``$DFU_SUFFIX -v VID -p PID -a FILE``; :func:`fpga.build.build` points ``DFU_SUFFIX`` at this
module, so no dfu-util install is needed.

Suffix layout, little-endian: ``bcdDevice`` (2), ``idProduct`` (2), ``idVendor`` (2),
``bcdDFU`` (2, ``0x0100``), ``ucDfuSignature`` (3, ``"UFD"``), ``bLength`` (1, 16), ``dwCRC``
(4). ``dwCRC`` is the CRC-32 (reflected polynomial ``0xEDB88320``, initial value
``0xFFFFFFFF``, *no* final inversion) of the whole file up to the CRC field.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

__all__ = ["SUFFIX_LENGTH", "add_suffix", "dfu_crc", "has_suffix", "main"]

SUFFIX_LENGTH = 16
SIGNATURE = b"UFD"
BCD_DFU = 0x0100


def dfu_crc(data: bytes) -> int:
    """DFU's CRC-32: zlib's CRC-32 without its final inversion."""
    return zlib.crc32(data) ^ 0xFFFFFFFF


def has_suffix(data: bytes) -> bool:
    """Whether ``data`` ends in a DFU suffix whose signature, length and CRC are valid."""
    if len(data) < SUFFIX_LENGTH:
        return False
    suffix = data[-SUFFIX_LENGTH:]
    (crc,) = struct.unpack("<I", suffix[12:])
    return (suffix[8:11] == SIGNATURE and suffix[11] == SUFFIX_LENGTH
            and crc == dfu_crc(data[:-4]))


def _check_id(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be a 16-bit number, not {value!r}")
    return value


def add_suffix(data: bytes, vendor: int, product: int, device: int = 0xFFFF) -> bytes:
    """``data`` with a DFU suffix for USB ``vendor:product`` (``device`` 0xFFFF: any).

    Raises ``ValueError`` if ``data`` already has a valid suffix (as ``dfu-suffix -a`` does)
    or an id is not a 16-bit number.
    """
    ids = [_check_id(n, v) for n, v in (("device", device), ("product", product),
                                         ("vendor", vendor))]
    if has_suffix(data):
        raise ValueError("the file already has a DFU suffix")
    body = data + struct.pack("<HHHH", *ids, BCD_DFU) + SIGNATURE + bytes([SUFFIX_LENGTH])
    return body + struct.pack("<I", dfu_crc(body))


def main(argv: list[str] | None = None) -> int:
    """``python -m bitmod.host.dfu -v VID -p PID [-d DID] -a FILE``: append a suffix in place."""
    parser = argparse.ArgumentParser(prog="dfu-suffix", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--vid", required=True, type=lambda s: int(s, 16))
    parser.add_argument("-p", "--pid", required=True, type=lambda s: int(s, 16))
    parser.add_argument("-d", "--did", default="ffff", type=lambda s: int(s, 16))
    parser.add_argument("-a", "--add", required=True, metavar="FILE", type=Path)
    args = parser.parse_args(argv)
    try:
        data = args.add.read_bytes()
        args.add.write_bytes(add_suffix(data, args.vid, args.pid, args.did))
    except (OSError, ValueError) as error:
        print(f"dfu-suffix: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The accelerator core's host protocol, buffer map and counters: a command-level model.

The core (:class:`hdl.array.core.AcceleratorCore`) is driven by commands ``{op, addr, data}``
and answers each with one response ``{status, data}``. This module defines the protocol (op and
status codes, field widths, the address map of every buffer), builds command lists for a job
(:func:`load_commands`, :func:`run_commands`, :func:`read_commands`) and models the core at
command level (:class:`CoreModel`): given the same command list it gives the same responses
as the RTL, bit for bit, with the output codes from :func:`golden.gemm.gemm` and the counters
from :func:`golden.gemm.gemm_cycles` plus the controller overhead (:func:`job_counters`).

Buffers and address map (``R`` rows, ``C`` columns, ``L`` lanes, ``G`` group size)
----------------------------------------------------------------------------------
``ceil`` is ceiling division; ``clog2(x)`` the bits of ``x - 1`` (0 for ``x = 1``)::

    k_steps    = ceil(max_k / L)        weight-steps of the longest K
    max_groups = ceil(max_k / G)
    m_tiles    = ceil(max_m / R);   n_tiles = ceil(max_n / C)

    weights  C banks x n_tiles * k_steps    words of L * code_bits   (L codes of one channel)
    meta     C banks x n_tiles * max_groups words of 2 + scale_bits  (selector, scale code)
    acts     R banks x m_tiles * k_steps    words of L * A  (A = 8 for INT8, 16 for FP16/BF16)
    gexp     R banks x m_tiles * max_groups words of E  (FP only; written by the pre-pass)
    base     R banks x m_tiles              words of E  (FP only; written by the pre-pass)
    outputs  1 bank  x max_m * max_n        words of out_bits (32: FP32, 16: FP16 codes)

Element addresses (the ``addr`` field, low bits first; fields are ``clog2`` wide)::

    weight (n, k):  lane = k % L, word = (n // C) * k_steps + k // L,    bank = n % C
    meta   (n, g):                 word = (n // C) * max_groups + g,     bank = n % C
    act    (m, k):  lane = k % L, word = (m // R) * k_steps + k // L,    bank = m % R
    output (m, n):  addr = m * max_n + n

so a channel's (token's) words for one tile are contiguous and the controller reads one word
per bank per weight-step at ``tile_base + k // L`` with no multiplier.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import bfp
from . import gemm as ggemm
from . import terms as gterms
from .checks import check_int
from .protocol import OP_SHIFT, LinkConfig
from .quantize import QuantizedTensor

__all__ = [
    "BUS_OPS",
    "CONFIG_MAGIC",
    "CONFIG_OP",
    "CONFIG_VERSION",
    "CONFIG_WORDS",
    "COUNTERS",
    "COUNTER_BITS",
    "DATA_BITS",
    "JOB_FIELDS",
    "OPS",
    "OP_BITS",
    "STATUS",
    "STATUS_BITS",
    "CoreBusModel",
    "CoreConfig",
    "CoreModel",
    "DeviceConfig",
    "bus_address",
    "decode_config",
    "encode_config",
    "job_counters",
    "load_arrays",
    "load_commands",
    "pack_command",
    "pack_commands",
    "read_commands",
    "run_commands",
    "unpack_response",
]

OPS = {
    "status": 0, "write_weight": 1, "write_meta": 2, "write_act": 3, "write_special": 4,
    "set_job": 5, "start": 6, "wait": 7, "read_output": 8, "read_counter": 9,
}
STATUS = {"ok": 0, "bad_op": 1, "bad_addr": 2, "bad_data": 3, "bad_job": 4, "busy": 5}
JOB_FIELDS = {"m": 0, "n": 1, "k": 2}
COUNTERS = {"cycles": 0, "busy_pe_cycles": 1, "stall_cycles": 2}
OP_BITS = 4
STATUS_BITS = 3
DATA_BITS = 32
COUNTER_BITS = 48  # read as two 32-bit halves: addr = 2 * counter + half
MAX_DIM = 1 << 16  # bound on max_m, max_n, max_k (keeps the job registers small)
# Bus ops of the accelerator top: the core's, plus the read-only configuration block, which the
# top's bus adapter serves itself (the core never sees op 15).
CONFIG_OP = 15
BUS_OPS = {**OPS, "read_config": CONFIG_OP}
CONFIG_MAGIC = 0x424D  # "BM", the high half of the block's first word
CONFIG_VERSION = 2
CONFIG_WORDS = 12  # words of a version-2 block


def clog2(x: int) -> int:
    return (int(x) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class CoreConfig(ggemm.DatapathParams):
    """Parameters of the accelerator core, validated once: the array's
    (:class:`golden.gemm.DatapathParams`; ``max_groups`` is derived, ``ceil(max_k / G)``) and
    the buffer bounds, and everything derived from them (buffer depths, word widths, address
    fields; module docstring).

    Attributes
    ----------
    max_m, max_n, max_k : int
        Largest job, 1 .. 65536 each; size the buffers.
    feed_stages : int
        Extra register stages of the read data between the buffers and the array, 0 ..
        :data:`MAX_FEED_STAGES` (each one a cycle more per job: :attr:`feed_latency`). On a
        large device they let the block RAMs' outputs land in flip-flops beside them before
        the data cross the chip.
    """

    max_m: int = 16
    max_n: int = 16
    max_k: int = 64
    feed_stages: int = 0

    def __post_init__(self):
        put = functools.partial(object.__setattr__, self)
        for name in ("max_m", "max_n", "max_k"):
            put(name, check_int(name, getattr(self, name), 1, MAX_DIM))
        put("feed_stages", check_int("feed_stages", self.feed_stages, 0, MAX_FEED_STAGES))
        check_int("group_size", self.group_size, 1)
        array = self.array  # validates the array parameters
        for name in ("lanes", "group_size", "formats", "mant_width", "act_exp_bits",
                     "scale_bits"):
            put(name, getattr(array, name))

    @functools.cached_property
    def array(self) -> ggemm.ArrayConfig:
        """The :class:`golden.gemm.ArrayConfig` of the array inside the core."""
        return ggemm.ArrayConfig(**self.datapath(),
                                 max_groups=_cdiv(self.max_k, self.group_size))

    @property
    def feed_latency(self) -> int:
        """Cycles from the feed's start to the array's first step on offer:
        :data:`FEED_LATENCY` plus :attr:`feed_stages`."""
        return FEED_LATENCY + self.feed_stages

    k_steps = property(lambda self: _cdiv(self.max_k, self.lanes))
    max_groups = property(lambda self: _cdiv(self.max_k, self.group_size))
    m_tiles = property(lambda self: _cdiv(self.max_m, self.rows))
    n_tiles = property(lambda self: _cdiv(self.max_n, self.cols))
    weight_depth = property(lambda self: self.n_tiles * self.k_steps)
    meta_depth = property(lambda self: self.n_tiles * self.max_groups)
    act_depth = property(lambda self: self.m_tiles * self.k_steps)
    gexp_depth = property(lambda self: self.m_tiles * self.max_groups)
    base_depth = property(lambda self: self.m_tiles)
    out_depth = property(lambda self: self.max_m * self.max_n)
    out_bits = property(lambda self: self.array.out_bits)
    code_bits = property(lambda self: self.array.geometry.code_bits)
    act_bits = property(lambda self: 8 if self.act_format == "int8" else 16)
    # scale | selector << SB | (zero points) offset zero-point code << SB + 2
    meta_bits = property(lambda self: 2 + self.scale_bits
                         + (self.code_bits if self.zero_points else 0))
    lane_bits = property(lambda self: clog2(self.lanes))
    row_bits = property(lambda self: clog2(self.rows))
    col_bits = property(lambda self: clog2(self.cols))

    @functools.cached_property
    def fields(self) -> dict[str, tuple[tuple[str, int], ...]]:
        """Address fields (name, width), low bits first, of the ops that take an address."""
        return {
            "write_weight": (("lane", self.lane_bits), ("word", clog2(self.weight_depth)),
                             ("bank", self.col_bits)),
            "write_meta": (("word", clog2(self.meta_depth)), ("bank", self.col_bits)),
            "write_act": (("lane", self.lane_bits), ("word", clog2(self.act_depth)),
                          ("bank", self.row_bits)),
            "read_output": (("word", clog2(self.out_depth)),),
        }

    @functools.cached_property
    def addr_bits(self) -> int:
        """Width of the command's ``addr`` field: the widest address of any op (at least 3)."""
        return max(3, *(sum(w for _, w in f) for f in self.fields.values()))

    @property
    def cmd_bits(self) -> int:
        return OP_BITS + self.addr_bits + DATA_BITS

    def _pack(self, op: str, **values) -> int:
        addr, shift = 0, 0
        for name, width in self.fields[op]:
            addr |= values[name] << shift
            shift += width
        return addr

    def weight_address(self, n: int, k: int) -> int:
        L, C = self.lanes, self.cols
        return self._pack("write_weight", lane=k % L, word=(n // C) * self.k_steps + k // L,
                          bank=n % C)

    def meta_address(self, n: int, g: int) -> int:
        C = self.cols
        return self._pack("write_meta", word=(n // C) * self.max_groups + g, bank=n % C)

    def act_address(self, m: int, k: int) -> int:
        L, R = self.lanes, self.rows
        return self._pack("write_act", lane=k % L, word=(m // R) * self.k_steps + k // L,
                          bank=m % R)

    def output_address(self, m: int, n: int) -> int:
        return m * self.max_n + n


def bus_address(op, addr: int = 0) -> int:
    """The accelerator top's bus address of core command ``op`` (code or name of
    :data:`BUS_OPS`) at core address ``addr``: ``op << OP_SHIFT | addr``
    (:data:`golden.protocol.OP_SHIFT`)."""
    code = BUS_OPS[op] if isinstance(op, str) else int(op)
    if not 0 <= code < 1 << OP_BITS or not 0 <= addr < 1 << OP_SHIFT:
        raise ValueError(f"op {op!r} / addr {addr} out of range")
    return code << OP_SHIFT | addr


def pack_command(mp: CoreConfig, op, addr: int = 0, data: int = 0) -> int:
    """Flat ``i_cmd`` payload: ``op`` (name or code) at the LSB, then ``addr``, then ``data``."""
    code = OPS[op] if isinstance(op, str) else int(op)
    if not 0 <= code < 1 << OP_BITS or not 0 <= addr < 1 << mp.addr_bits \
            or not 0 <= data < 1 << DATA_BITS:
        raise ValueError(f"command ({op}, {addr}, {data}) does not fit the command fields")
    return code | addr << OP_BITS | data << (OP_BITS + mp.addr_bits)


def unpack_response(value: int) -> tuple[int, int]:
    """``(status, data)`` of a flat ``o_resp`` payload (status at the LSB)."""
    value = int(value)
    return value & ((1 << STATUS_BITS) - 1), value >> STATUS_BITS


# --- the device configuration block ----------------------------------------------------------

_ACT_CODES = {"int8": 0, "fp16": 1, "bf16": 2}
_OUT_CODES = {"fp32": 0, "fp16": 1}
_ROUNDING_CODES = {None: 0, "trunc": 1, "rne": 2}  # None: INT8 activations (no converter)


def formats_crc(formats) -> int:
    """CRC-32 (zlib) of the weight formats' names joined by commas, in selector order: how the
    configuration block names them in one word."""
    return zlib.crc32(",".join(formats).encode("ascii"))


@functools.cache
def _known_formats(zero_points: bool = False, pe_kind: str = "bitserial"
                   ) -> dict[int, tuple[tuple[str, ...], tuple[str, ...]]]:
    """``crc -> (formats, schemes)`` for every registered scheme a core of ``pe_kind`` PEs
    runs, and every registered format alone (``schemes`` empty when no scheme has exactly
    those formats). ``zero_points``: a core that corrects by zero points, which runs the
    asymmetric schemes only (as their offset formats). A kind without mixtures runs BitMoD's
    as their integer values (:func:`golden.gemm.scheme_formats`): an ``int6`` int-PE core
    names ``bitmod4`` among its schemes."""
    from . import formats as gformats
    from .quantize import get_scheme, scheme_names

    table: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    # Schemes whose own formats the core holds come first, then the mixtures it runs as their
    # integer values (int5 names int4_asym before bitmod4_er, whose values also fit int5).
    names = sorted(scheme_names(), key=lambda name: ggemm.folds_mixture(
        get_scheme(name).formats, pe_kind))
    for name in names:
        if zero_points and get_scheme(name).kind != "asym":
            continue
        try:
            formats = ggemm.scheme_formats(name, zero_points, pe_kind)
        except ValueError:
            continue
        crc = formats_crc(formats)
        known, schemes = table.get(crc, (formats, ()))
        table[crc] = (known, (*schemes, name))
    for name in gformats.names():
        table.setdefault(formats_crc((name,)), ((name,), ()))
    return table


def _name(table: dict, code: int):
    return next((name for name, c in table.items() if c == code), f"unknown code {code}")


@dataclass(frozen=True)
class DeviceConfig:
    """What a bitstream holds, as its configuration block reports it: the core's parameters
    (:class:`CoreConfig`, the weight formats as :func:`formats_crc`) and the link's clock and
    bit rate. Built from the configs with :meth:`of`, from the block with
    :func:`decode_config`; :meth:`words` is the block (:func:`encode_config`).

    Block layout, version 2 (``CONFIG_WORDS`` = 12 words of 32 bits, read at bus addresses
    ``CONFIG_OP << 24 | i``)::

        0   magic 0x424D (31..16) | version (15..8) | word count (7..0)
        1   rows (15..0)       | cols (31..16)
        2   lanes (15..0)      | group_size (31..16)
        3   max_m      4  max_n      5  max_k
        6   act_format (7..0)  | out_format (15..8) | rounding (23..16) | formats (31..24)
        7   mant_width (7..0)  | act_exp_bits (15..8) | scale_bits (23..16) | code_bits (31..24)
        8   formats_crc: CRC-32 of the weight formats' names, comma-joined
        9   the core's clock in Hz (rounded; the link's may differ, LinkConfig.core_clock)
        10  baud
        11  PE kind (7..0): bitserial 0, int 1, minifloat 2, lut 3, bitplane 4
            (:data:`golden.gemm.PE_KINDS` order) | zero points (8): the core corrects by
            them (:class:`golden.gemm.DatapathParams` ``zero_points``) | the column tops'
            extra register stages (10..9, ``serializer_stages``: they change the cycles) |
            the feed's extra register stages (12..11, ``feed_stages``: they change the cycles)

    Codes: act_format int8 0, fp16 1, bf16 2; out_format fp32 0, fp16 1; rounding 0 for INT8
    activations (no block converter), trunc 1, rne 2.
    """

    rows: int
    cols: int
    lanes: int
    group_size: int
    act_format: str
    out_format: str
    rounding: str | None
    n_formats: int
    mant_width: int
    act_exp_bits: int
    scale_bits: int
    code_bits: int
    formats_crc: int
    max_m: int
    max_n: int
    max_k: int
    clock_hz: int
    baud: int
    pe_kind: str = "bitserial"
    zero_points: bool = False
    serializer_stages: int = 0
    feed_stages: int = 0
    version: int = CONFIG_VERSION

    @classmethod
    def of(cls, core: CoreConfig, link: LinkConfig | None) -> DeviceConfig:
        """The configuration a bitstream of ``core`` behind ``link`` reports (``link`` None:
        clock and baud 0, unknown)."""
        if not isinstance(core, CoreConfig):
            raise TypeError(f"core must be a CoreConfig, not {core!r}")
        if link is not None and not isinstance(link, LinkConfig):
            raise TypeError(f"link must be a LinkConfig, not {link!r}")
        return cls(rows=core.rows, cols=core.cols, lanes=core.lanes, group_size=core.group_size,
                   act_format=core.act_format, out_format=core.out_format,
                   rounding=None if core.act_format == "int8" else core.rounding,
                   n_formats=len(core.formats), mant_width=core.mant_width,
                   act_exp_bits=core.act_exp_bits, scale_bits=core.scale_bits,
                   code_bits=core.code_bits, formats_crc=formats_crc(core.formats),
                   max_m=core.max_m, max_n=core.max_n, max_k=core.max_k,
                   clock_hz=round(link.core_clock) if link else 0, baud=link.baud if link else 0,
                   pe_kind=core.pe_kind, zero_points=core.zero_points,
                   serializer_stages=core.serializer_stages, feed_stages=core.feed_stages)

    def words(self) -> tuple[int, ...]:
        """The block (class docstring); ``ValueError`` if a field does not fit its bits."""
        def fit(name: str, value: int, bits: int) -> int:
            if not 0 <= value < 1 << bits:
                raise ValueError(f"{name} = {value} does not fit the {bits} bits of the "
                                 f"configuration block")
            return value

        f = fit
        return (
            CONFIG_MAGIC << 16 | self.version << 8 | CONFIG_WORDS,
            f("rows", self.rows, 16) | f("cols", self.cols, 16) << 16,
            f("lanes", self.lanes, 16) | f("group_size", self.group_size, 16) << 16,
            f("max_m", self.max_m, 32), f("max_n", self.max_n, 32), f("max_k", self.max_k, 32),
            _ACT_CODES[self.act_format] | _OUT_CODES[self.out_format] << 8
            | _ROUNDING_CODES[self.rounding] << 16 | f("formats", self.n_formats, 8) << 24,
            f("mant_width", self.mant_width, 8) | f("act_exp_bits", self.act_exp_bits, 8) << 8
            | f("scale_bits", self.scale_bits, 8) << 16 | f("code_bits", self.code_bits, 8) << 24,
            self.formats_crc, f("clock", self.clock_hz, 32), f("baud", self.baud, 32),
            ggemm.PE_KINDS.index(self.pe_kind) | int(self.zero_points) << 8
            | f("serializer_stages", self.serializer_stages, 2) << 9
            | f("feed_stages", self.feed_stages, 2) << 11,
        )

    @property
    def formats(self) -> tuple[str, ...] | None:
        """The weight formats, when a registered scheme has them or they are one registered
        format (else ``None``)."""
        known = _known_formats(self.zero_points, self.pe_kind).get(self.formats_crc)
        return known[0] if known else None

    @property
    def schemes(self) -> tuple[str, ...]:
        """The registered schemes whose formats these are (registry order; may be empty; with
        zero points the asymmetric schemes whose offset formats these are)."""
        known = _known_formats(self.zero_points, self.pe_kind).get(self.formats_crc)
        return known[1] if known else ()

    def core(self) -> CoreConfig:
        """The :class:`CoreConfig` of the bitstream; ``ValueError`` when its weight formats are
        not known (:attr:`formats`: the block holds their CRC only)."""
        formats = self.formats
        if formats is None:
            raise ValueError(f"the device's weight formats (CRC {self.formats_crc:#010x}) are "
                             "not those of any registered scheme; give its configuration")
        return CoreConfig(rows=self.rows, cols=self.cols, lanes=self.lanes,
                          group_size=self.group_size, formats=formats,
                          act_format=self.act_format, out_format=self.out_format,
                          rounding=self.rounding or "rne", mant_width=self.mant_width,
                          act_exp_bits=self.act_exp_bits, scale_bits=self.scale_bits,
                          max_m=self.max_m, max_n=self.max_n, max_k=self.max_k,
                          pe_kind=self.pe_kind, zero_points=self.zero_points,
                          serializer_stages=self.serializer_stages,
                          feed_stages=self.feed_stages)

    def describe(self) -> dict[str, str]:
        """Field label -> value as a user would write it (what :meth:`differences` names)."""
        formats = self.formats
        if self.schemes:
            weights = f"{self.schemes[0]} ({','.join(formats)})"
        elif formats is not None:
            weights = ",".join(formats)
        else:
            weights = f"{self.n_formats} unknown format(s), CRC {self.formats_crc:#010x}"
        return {
            "array": f"{self.rows}x{self.cols}", "lanes": str(self.lanes),
            "PE kind": self.pe_kind, "zero points": "yes" if self.zero_points else "no",
            "column-top stages": str(self.serializer_stages),
            "feed stages": str(self.feed_stages),
            "group size": str(self.group_size), "weight formats": weights,
            "activation format": self.act_format, "output format": self.out_format,
            "rounding": self.rounding or "-", "mantissa width": str(self.mant_width),
            "exponent shift bits": str(self.act_exp_bits), "scale bits": str(self.scale_bits),
            "buffers (max M x N x K)": f"{self.max_m}x{self.max_n}x{self.max_k}",
            "clock": f"{self.clock_hz / 1e6:.6f}".rstrip("0").rstrip(".") + " MHz",
            "baud": str(self.baud),
        }

    def differences(self, asked: DeviceConfig, *, link: bool = True
                    ) -> list[tuple[str, str, str]]:
        """``(field, this value, asked value)`` for every field that differs from ``asked``
        (the weight formats by CRC; clock and baud only when ``link``)."""
        mine, theirs = self.describe(), asked.describe()
        if self.formats_crc == asked.formats_crc and self.n_formats == asked.n_formats:
            theirs["weight formats"] = mine["weight formats"]
        if not link:
            for key in ("clock", "baud"):
                theirs[key] = mine[key]
        return [(key, mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]]


def encode_config(core: CoreConfig, link: LinkConfig) -> tuple[int, ...]:
    """The configuration block of a bitstream of ``core`` behind ``link``
    (:class:`DeviceConfig`): the constants the RTL's bus adapter serves."""
    return DeviceConfig.of(core, link).words()


def decode_config(words) -> DeviceConfig:
    """The :class:`DeviceConfig` of a configuration block read from a device; ``ValueError``
    (one line) when the words are not a block of a version this code reads."""
    words = [int(w) for w in words]
    if not words or words[0] >> 16 != CONFIG_MAGIC:
        first = f"{words[0]:#010x}" if words else "missing"
        raise ValueError(f"not a configuration block (first word {first}); the bitstream may "
                         "predate configuration blocks")
    version, count = words[0] >> 8 & 0xFF, words[0] & 0xFF
    if version != CONFIG_VERSION:
        raise ValueError(f"configuration block version {version}; this host reads version "
                         f"{CONFIG_VERSION} (update bitmod, or rebuild the bitstream)")
    if count != CONFIG_WORDS or len(words) != CONFIG_WORDS:
        raise ValueError(f"a version-{version} configuration block has {CONFIG_WORDS} words, "
                         f"not {count} (read {len(words)})")
    w = words
    return DeviceConfig(
        rows=w[1] & 0xFFFF, cols=w[1] >> 16, lanes=w[2] & 0xFFFF, group_size=w[2] >> 16,
        max_m=w[3], max_n=w[4], max_k=w[5], act_format=_name(_ACT_CODES, w[6] & 0xFF),
        out_format=_name(_OUT_CODES, w[6] >> 8 & 0xFF),
        rounding=_name(_ROUNDING_CODES, w[6] >> 16 & 0xFF), n_formats=w[6] >> 24,
        mant_width=w[7] & 0xFF, act_exp_bits=w[7] >> 8 & 0xFF, scale_bits=w[7] >> 16 & 0xFF,
        code_bits=w[7] >> 24, formats_crc=w[8], clock_hz=w[9], baud=w[10],
        pe_kind=_pe_kind(w[11] & 0xFF), zero_points=bool(w[11] >> 8 & 1),
        serializer_stages=w[11] >> 9 & 3, feed_stages=w[11] >> 11 & 3, version=version)


def _pe_kind(code: int) -> str:
    if code >= len(ggemm.PE_KINDS):
        raise ValueError(f"PE kind code {code} is not one this host knows "
                         f"({', '.join(ggemm.PE_KINDS)}): update bitmod")
    return ggemm.PE_KINDS[code]


def act_words(x, cfg: ggemm.ArrayConfig) -> np.ndarray:
    """The 16-bit words the host writes for activations ``x`` (int8 codes sign-extended)."""
    words = ggemm.act_mantissas(x, cfg)["words"]
    return words & 0xFFFF


def special_register(cfg: ggemm.ArrayConfig) -> int:
    """The special-value register golden.gemm assumes (0 when the formats have none)."""
    if not cfg.geometry.has_register:
        return 0
    return gterms.pack_special_register(gterms.default_special_values(list(cfg.formats)))


def _addresses(mp: CoreConfig, op: str, **fields) -> np.ndarray:
    """Addresses of ``op`` from arrays of its fields (the layout of :attr:`CoreConfig.fields`)."""
    addr, shift = 0, 0
    for name, width in mp.fields[op]:
        addr = addr | np.asarray(fields[name], dtype=np.int64) << shift
        shift += width
    return addr


def load_arrays(mp: CoreConfig, x, qt) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The commands of :func:`load_commands` as three int64 arrays: op codes, addresses,
    data (what a harness or a driver sends without building a tuple per command)."""
    cfg = mp.array
    ggemm.check_weights(qt, cfg)
    ggemm.check_rtl_zero_points(qt, cfg)
    words = act_words(x, cfg)
    m, k = words.shape
    n = qt.shape[0]
    if qt.shape[1] != k:
        raise ValueError(f"activations have K = {k}, weights have K = {qt.shape[1]}")
    if m > mp.max_m or n > mp.max_n or k > mp.max_k:
        raise ValueError(f"GEMM {m}x{n}x{k} exceeds the buffers ({mp.max_m}x{mp.max_n}x"
                         f"{mp.max_k})")
    L, R, C, G = mp.lanes, mp.rows, mp.cols, qt.n_groups
    rows, cols = np.arange(n)[:, None], np.arange(k)[None, :]
    # Per weight channel: its K codes, then its groups' meta words (the order of the loops
    # of load_commands: a channel's codes and metadata are consecutive runs).
    w_addr = _addresses(mp, "write_weight", lane=cols % L, bank=rows % C,
                        word=(rows // C) * mp.k_steps + cols // L)
    groups = np.arange(G)[None, :]
    meta_addr = _addresses(mp, "write_meta", bank=rows % C,
                           word=(rows // C) * mp.max_groups + groups)
    sel = (qt.selectors.astype(np.int64) if qt.selectors is not None
           else np.zeros((n, G), np.int64))
    meta = qt.scale_codes.astype(np.int64) | sel << cfg.scale_bits
    if cfg.zero_points and qt.zero_points is not None:  # two's complement, code_bits wide
        zero = qt.zero_points.astype(np.int64) & ((1 << mp.code_bits) - 1)
        meta = meta | zero << (cfg.scale_bits + 2)
    per_channel_ops = np.concatenate([np.full((n, k), OPS["write_weight"]),
                                      np.full((n, G), OPS["write_meta"])], axis=1)
    per_channel_addr = np.concatenate([w_addr, meta_addr], axis=1)
    per_channel_data = np.concatenate([qt.codes.astype(np.int64), meta], axis=1)
    act_rows = np.arange(m)[:, None]
    a_addr = _addresses(mp, "write_act", lane=cols % L, bank=act_rows % R,
                        word=(act_rows // R) * mp.k_steps + cols // L)
    ops = np.concatenate([[OPS["write_special"]], per_channel_ops.ravel(),
                          np.full(m * k, OPS["write_act"])])
    addrs = np.concatenate([[0], per_channel_addr.ravel(), a_addr.ravel()])
    data = np.concatenate([[special_register(cfg)], per_channel_data.ravel(), words.ravel()])
    return ops.astype(np.int64), addrs.astype(np.int64), data.astype(np.int64)


def load_commands(mp: CoreConfig, x, qt) -> list[tuple[str, int, int]]:
    """Commands that load activations ``x [M, K]`` and weights ``qt [N, K]``: the special-value
    register; per weight channel its codes and its group metadata; the activations, token by
    token. Addresses as :class:`CoreConfig`'s helpers compute them."""
    names = {code: name for name, code in OPS.items()}
    ops, addrs, data = load_arrays(mp, x, qt)
    return [(names[o], a, d) for o, a, d in zip(ops.tolist(), addrs.tolist(), data.tolist(),
                                                strict=True)]


def pack_commands(mp: CoreConfig, ops, addrs, data) -> np.ndarray:
    """:func:`pack_command` of arrays (uint64; the fields are checked as there)."""
    ops, addrs, data = (np.asarray(v, dtype=np.int64) for v in (ops, addrs, data))
    if ((ops < 0) | (ops >> OP_BITS != 0) | (addrs < 0) | (addrs >> mp.addr_bits != 0)
            | (data < 0) | (data >> DATA_BITS != 0)).any():
        raise ValueError("a command does not fit the command fields")
    return (ops.astype(np.uint64) | addrs.astype(np.uint64) << np.uint64(OP_BITS)
            | data.astype(np.uint64) << np.uint64(OP_BITS + mp.addr_bits))


def run_commands(m: int, n: int, k: int) -> list[tuple[str, int, int]]:
    """Set the job dimensions, start it and wait for it."""
    return [("set_job", JOB_FIELDS["m"], m), ("set_job", JOB_FIELDS["n"], n),
            ("set_job", JOB_FIELDS["k"], k), ("start", 0, 0), ("wait", 0, 0)]


def read_commands(mp: CoreConfig, m: int, n: int) -> list[tuple[str, int, int]]:
    """Read the ``m x n`` outputs (row-major) and then the three counters (lo, hi halves)."""
    cmds = [("read_output", mp.output_address(i, j), 0) for i in range(m) for j in range(n)]
    cmds += [("read_counter", 2 * c + half, 0) for c in range(len(COUNTERS)) for half in (0, 1)]
    return cmds


#: Cycles from the feed's start to the array's first step on offer without extra feed stages
#: (:attr:`CoreConfig.feed_latency`): the step's cycle in the controller's queue (between the
#: loop counters and the buffer reads), its buffer read and the read data's register.
FEED_LATENCY = 3
#: Most extra register stages of the feed's read data (:attr:`CoreConfig.feed_stages`).
MAX_FEED_STAGES = 3


def job_counters(mp: CoreConfig, m: int, n: int, k: int) -> dict[str, int]:
    """The core's counters after a job.

    ``cycles`` counts the cycles the core is busy, from the cycle after ``start`` is accepted
    to the cycle the last output is written (inclusive)::

        cycles = prepass + feed_latency + gemm_cycles(m, n, k, array)["cycles"]
        prepass = ceil(m / R) * ceil(k / L) + 1     (FP16/BF16; 0 for INT8)

    ``prepass``: the controller reads every activation word once (one word per row bank per
    cycle) to find the group exponents, plus one cycle for its last read to land.
    ``feed_latency`` (:attr:`CoreConfig.feed_latency`, 3 + ``feed_stages``): the first
    weight-step's cycle in the controller's step queue, its buffer read, its read data's
    register and the extra feed stages. ``busy_pe_cycles`` equals golden's
    ``busy_pe_cycles`` (term-cycles of real outputs); ``stall_cycles`` is ``feed_latency``:
    the cycles the array waits for the first step (no other bubble: the controller streams
    one step per cycle when the array takes one and the output buffer takes every result at
    once).
    """
    cfg = mp.array
    model = ggemm.gemm_cycles(m, n, k, cfg)  # the array's fill: ArrayConfig.fill
    prepass = 0 if cfg.act_format == "int8" else _cdiv(m, cfg.rows) * _cdiv(k, cfg.lanes) + 1
    return {"cycles": prepass + mp.feed_latency + model["cycles"],
            "busy_pe_cycles": model["busy_pe_cycles"], "stall_cycles": mp.feed_latency}


@dataclass
class CoreModel:
    """Command-level model of the core: :meth:`command` gives the response the RTL gives.

    A job started by ``start`` is taken to run until the next ``wait`` (the host's commands in
    between arrive while the core is busy: the RTL job is far longer than a few commands).
    Responses that depend on the cycle a command arrives (``read_counter`` during a job) have
    ``data`` ``None`` (not compared). ``start`` needs the special-value register golden.gemm
    assumes (its weight levels use the default register); any other value raises
    ``NotImplementedError`` rather than predicting wrong outputs.
    """

    mp: CoreConfig
    weights: dict = field(default_factory=dict)  # (bank, word, lane) -> code
    meta: dict = field(default_factory=dict)  # (bank, word) -> meta word
    acts: dict = field(default_factory=dict)  # (bank, word, lane) -> act word (16-bit)
    outputs: dict = field(default_factory=dict)  # addr -> output code (FP32 or FP16)

    def __post_init__(self):
        self.reset()

    def reset(self) -> None:
        """Registers return to their reset values; the buffers keep their contents."""
        self.special = 0
        self.job = {"m": 0, "n": 0, "k": 0}
        self.busy = False
        self.done = False
        self.counters = {name: 0 for name in COUNTERS}

    def _fields(self, op: str, addr: int) -> dict | None:
        values, shift = {}, 0
        for name, width in self.mp.fields[op]:
            values[name] = addr >> shift & ((1 << width) - 1)
            shift += width
        return values if addr >> shift == 0 else None

    def command(self, op: int, addr: int, data: int) -> tuple[int, int | None]:
        mp, cfg = self.mp, self.mp.array
        names = {v: k for k, v in OPS.items()}
        if op not in names:
            return STATUS["bad_op"], 0
        name = names[op]
        if name == "status":
            return STATUS["ok"], int(self.busy) | int(self.done) << 1
        if name == "wait":
            self._finish()
            return STATUS["ok"], int(self.done) << 1
        if name == "read_counter":
            if addr >= 2 * len(COUNTERS):
                return STATUS["bad_addr"], 0
            if self.busy:
                return STATUS["ok"], None
            value = self.counters[list(COUNTERS)[addr // 2]]
            return STATUS["ok"], value >> (32 * (addr % 2)) & 0xFFFFFFFF
        if self.busy:
            return STATUS["busy"], 0
        if name == "start":
            if 0 in self.job.values():
                return STATUS["bad_job"], 0
            self.busy = True
            self.done = False
            return STATUS["ok"], 0
        if name == "set_job":
            if addr >= len(JOB_FIELDS):
                return STATUS["bad_addr"], 0
            key = list(JOB_FIELDS)[addr]
            if not 1 <= data <= getattr(mp, f"max_{key}"):
                return STATUS["bad_job"], 0
            self.job[key] = data
            return STATUS["ok"], 0
        if name == "write_special":
            if addr:
                return STATUS["bad_addr"], 0
            self.special = data
            return STATUS["ok"], 0
        if name == "read_output":
            f = self._fields(name, addr)
            if f is None or f["word"] >= mp.out_depth:
                return STATUS["bad_addr"], 0
            return STATUS["ok"], self.outputs.get(f["word"], 0)
        f = self._fields(name, addr)
        depth = {"write_weight": mp.weight_depth, "write_meta": mp.meta_depth,
                 "write_act": mp.act_depth}[name]
        banks = cfg.rows if name == "write_act" else cfg.cols
        if f is None or f["word"] >= depth or f["bank"] >= banks \
                or f.get("lane", 0) >= cfg.lanes:
            return STATUS["bad_addr"], 0
        if name == "write_weight":
            if data >> mp.code_bits:
                return STATUS["bad_data"], 0
            self.weights[f["bank"], f["word"], f["lane"]] = data
        elif name == "write_meta":
            scale = data & ((1 << cfg.scale_bits) - 1)
            if data >> mp.meta_bits or (data >> cfg.scale_bits & 3) >= len(cfg.formats) or (
                    cfg.kind.scale == "shift" and (scale == 0 or scale & (scale - 1))):
                return STATUS["bad_data"], 0
            self.meta[f["bank"], f["word"]] = data
        else:
            if cfg.act_format == "int8":
                bad = not (data < 0x80 or 0xFF80 <= data <= 0xFFFF)
            else:
                e_bits, m_bits, _ = bfp.float_fields(cfg.act_format)
                bad = data >> 16 or (data >> m_bits & ((1 << e_bits) - 1)) == (1 << e_bits) - 1
            if bad:
                return STATUS["bad_data"], 0
            self.acts[f["bank"], f["word"], f["lane"]] = data
        return STATUS["ok"], 0

    def _finish(self) -> None:
        """Run the started job (if any) on golden.gemm and update outputs and counters."""
        if not self.busy:
            return
        mp, cfg = self.mp, self.mp.array
        m, n, k = self.job["m"], self.job["n"], self.job["k"]
        if self.special != special_register(cfg):
            raise NotImplementedError("the model computes weight levels with the default "
                                      "special-value register only")
        R, C, L, G = cfg.rows, cfg.cols, cfg.lanes, cfg.group_size
        ng = _cdiv(k, G)
        codes = np.zeros((n, k), np.int64)
        sel = np.zeros((n, ng), np.int64)
        scale = np.zeros((n, ng), np.int64)
        zero = np.zeros((n, ng), np.int64)
        half = 1 << (mp.code_bits - 1)
        for i in range(n):
            for j in range(k):
                codes[i, j] = self.weights.get((i % C, (i // C) * mp.k_steps + j // L, j % L), 0)
            for g in range(ng):
                word = self.meta.get((i % C, (i // C) * mp.max_groups + g), 0)
                scale[i, g] = word & ((1 << cfg.scale_bits) - 1)
                sel[i, g] = word >> cfg.scale_bits & 3
                code = word >> (cfg.scale_bits + 2)  # the zero point, two's complement
                zero[i, g] = (code ^ half) - half
        words = np.zeros((m, k), np.int64)
        for i in range(m):
            for j in range(k):
                words[i, j] = self.acts.get((i % R, (i // R) * mp.k_steps + j // L, j % L), 0)
        if cfg.act_format == "int8":
            x = np.where(words >= 0x8000, words - 0x10000, words).astype(np.int8)
        else:
            x = words.astype(np.uint16)
        qt = QuantizedTensor(codes=codes.astype(np.uint16), scales=np.ones((n, ng)),
                             scheme="core", formats=cfg.formats, group_size=G,
                             bits=mp.code_bits, scale_format="int8",
                             selectors=sel.astype(np.uint8) if len(cfg.formats) > 1 else None,
                             scale_codes=scale, channel_scales=np.ones(n),
                             zero_points=zero if cfg.zero_points else None)
        result = ggemm.gemm(x, qt, cfg)
        for i in range(m):
            for j in range(n):
                # read_output returns the out_bits-wide code zero-extended to 32 bits.
                self.outputs[mp.output_address(i, j)] = (int(result.codes[i, j])
                                                         & ((1 << cfg.out_bits) - 1))
        self.counters = job_counters(mp, m, n, k)
        self.busy = False
        self.done = True


class CoreBusModel:
    """The bus of the accelerator top (``fpga/top.py``'s bus adapter in front of the core),
    over :class:`CoreModel`: a :class:`golden.protocol.Backend` for the bridge's golden model.

    A bus address is ``op << OP_SHIFT | core address``; bits above the op field answer
    ``bad_op``, bits between the core's address field and the op field ``bad_addr``, both
    without reaching the core; a command's error status comes back as ``(status, error)``.

    With ``link`` (the top's :class:`golden.protocol.LinkConfig`), op :data:`CONFIG_OP` reads
    the configuration block (:func:`encode_config`) at word ``addr`` (``bad_addr`` from
    :data:`CONFIG_WORDS` on; a write changes nothing and returns the word, like a read);
    without it, op 15 reaches the core, which answers ``bad_op`` (an adapter without a block).
    """

    def __init__(self, mp: CoreConfig, link: LinkConfig | None = None):
        self.mp = mp
        self.model = CoreModel(mp)
        self.config = None if link is None else encode_config(mp, link)

    def access(self, write: bool, addr: int, data: int) -> tuple[int, bool]:
        if addr >> (OP_SHIFT + OP_BITS):
            return STATUS["bad_op"], True
        low = addr & ((1 << OP_SHIFT) - 1)
        if self.config is not None and addr >> OP_SHIFT == CONFIG_OP:
            if low >= len(self.config):
                return STATUS["bad_addr"], True
            return self.config[low], False
        if low >> self.mp.addr_bits:
            return STATUS["bad_addr"], True
        status, value = self.model.command(addr >> OP_SHIFT, low, data if write else 0)
        return (status, True) if status else (value, False)

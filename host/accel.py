"""Host driver of the whole accelerator (:class:`fpga.top.AcceleratorTop`) over a
:class:`host.link.HostLink`: load a GEMM, run it, read the output codes and the counters.

The core commands are :mod:`golden.core`'s (:func:`~golden.core.load_commands`,
:func:`~golden.core.run_commands`, :func:`~golden.core.read_commands`); each becomes one bus
word at ``OPS[op] << 24 | addr`` (the map in :mod:`fpga.top`). Consecutive commands of one op
whose core addresses are consecutive are sent as one multi-word WRITE frame (the bridge writes
``addr, addr + 1, ...``). Under the core's address map a weight channel's ``K`` codes, an
activation row's ``K`` words and a channel's group metadata each form such a run (the lane is
the low address field, the word above it), so a ``M x N x K`` load costs about ``2 N + M + 1``
frames of at most ``max_payload / 4 - 1`` words instead of one 12-byte-overhead frame per word:
roughly ``4 + 12 / run`` line bytes per word rather than 16.

``start`` goes out as an EXEC (never resent after a lost reply: a second ``start`` while the
job runs would be refused with ``busy``); completion is a READ of the ``wait`` op, which the
core answers when the job ends.

Before the first command the driver reads the device's configuration block (one READ of
:data:`golden.core.CONFIG_WORDS` words at op 15, decoded by :func:`golden.core.decode_config`)
and refuses, with :class:`ConfigMismatch` naming every differing field, a configuration other
than the one asked for; given none, it takes the device's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bitmod.golden import core as gcore
from bitmod.golden import gemm as ggemm
from bitmod.golden.checks import BitmodError
from bitmod.golden.protocol import LinkConfig

from .link import DeviceError, HostLink

__all__ = ["Accelerator", "AcceleratorError", "ConfigMismatch", "compare_with_golden",
           "group_runs", "read_device_config"]

STATUS_NAMES = {code: name for name, code in gcore.STATUS.items()}


class AcceleratorError(RuntimeError, BitmodError):
    """A core command failed. ``status`` is the core's status code when known; a refused bus
    word comes back as the bridge's BACKEND error, which names the word but not the code
    (``status`` None)."""

    def __init__(self, op: str, addr: int, status: int | None, detail: str = ""):
        self.op, self.addr, self.status = op, addr, status
        name = "refused" if status is None else STATUS_NAMES.get(status, f"status {status}")
        super().__init__(f"core command {op} at address {addr:#x}: {name}{detail}")


class ConfigMismatch(RuntimeError, BitmodError):
    """The device's bitstream is not the configuration the host was asked to drive (one line
    naming every differing field: board value, asked value), or it reports none."""

    def __init__(self, message: str, differences: Sequence[tuple[str, str, str]] = ()):
        self.differences = list(differences)
        super().__init__(message)


def read_device_config(link: HostLink) -> gcore.DeviceConfig:
    """Read and decode the device's configuration block (:class:`golden.core.DeviceConfig`).

    Raises :class:`ConfigMismatch` when the device has no block (a bitstream older than the
    block answers op 15 with an error) or an unreadable one; link failures
    (:class:`host.link.LinkTimeout`, ...) pass through.
    """
    try:
        words = link.read(gcore.bus_address("read_config"), gcore.CONFIG_WORDS)
    except DeviceError:
        raise ConfigMismatch("the board reports no configuration block (a bitstream built "
                             "before configuration blocks?): rebuild it with bitmod build"
                             ) from None
    try:
        return gcore.decode_config(words)
    except ValueError as error:
        raise ConfigMismatch(f"the board's configuration block is unreadable: {error}"
                             ) from None


def group_runs(cmds: Sequence[tuple[str, int, int]], max_words: int
               ) -> list[tuple[str, int, list[int]]]:
    """Split ``(op, addr, data)`` commands, in order, into ``(op, first_addr, words)`` runs of
    one op at consecutive addresses, at most ``max_words`` long."""
    runs: list[tuple[str, int, list[int]]] = []
    for op, addr, data in cmds:
        if runs:
            last_op, first, words = runs[-1]
            if last_op == op and first + len(words) == addr and len(words) < max_words:
                words.append(int(data))
                continue
        runs.append((op, int(addr), [int(data)]))
    return runs


class Accelerator:
    """The accelerator behind ``link``.

    The device's configuration block is read before the first command (or by
    :meth:`connect`): with ``config`` (and ``expect_link``) given, any difference raises
    :class:`ConfigMismatch`; without ``config``, the device's own is used (:attr:`config`).

    Parameters
    ----------
    link : HostLink
    config : golden.core.CoreConfig, optional
        The core the bitstream was built with (its address map and buffer bounds); ``None``:
        the device's.
    expect_link : golden.protocol.LinkConfig, optional
        Also compare the device's clock (to 1 Hz) and baud with this link's.
    check : bool
        Read and compare the configuration block (``False``: trust ``config``, for bitstreams
        without a block; ``config`` is then required).
    """

    def __init__(self, link: HostLink, config: gcore.CoreConfig | None = None, *,
                 expect_link: LinkConfig | None = None, check: bool = True):
        if config is not None and not isinstance(config, gcore.CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        if expect_link is not None and not isinstance(expect_link, LinkConfig):
            raise TypeError(f"expect_link must be a LinkConfig, not {expect_link!r}")
        if config is None and not check:
            raise ValueError("without a config, the device's must be read (check=True)")
        self.link = link
        self._config = config
        self.expect_link = expect_link
        self.device: gcore.DeviceConfig | None = None  # the block, once read
        self._checked = not check
        self.frames = 0  # WRITE frames sent by load() and run(), for cost reports

    @property
    def config(self) -> gcore.CoreConfig:
        """The core's configuration: as given, or the device's (read on first use)."""
        if self._config is None:
            self.connect()
        return self._config

    def connect(self) -> gcore.DeviceConfig:
        """Read the device's configuration block and check it against the configuration asked
        for (once; later calls return the block read). Raises :class:`ConfigMismatch`."""
        if self.device is not None:
            return self.device
        device = read_device_config(self.link)
        if self._config is None:
            try:
                self._config = device.core()
            except ValueError as error:
                raise ConfigMismatch(str(error)) from None
        else:
            asked = gcore.DeviceConfig.of(self._config, self.expect_link)
            differences = device.differences(asked, link=self.expect_link is not None)
            if differences:
                raise ConfigMismatch(
                    "the board's bitstream differs from what was asked: "
                    + "; ".join(f"{name} {mine} on the board, {theirs} asked"
                                for name, mine, theirs in differences)
                    + " (give the bitstream's options, or omit them to use the board's)",
                    differences)
        self.device = device
        self._checked = True
        return device

    def _connected(self) -> None:
        if not self._checked:
            self.connect()

    # --- commands ------------------------------------------------------------------------------

    def _write(self, cmds: Sequence[tuple[str, int, int]]) -> None:
        self._connected()
        chunk = max(1, self.link.max_payload // 4 - 1)
        for op, addr, words in group_runs(cmds, chunk):
            try:
                self.link.write(gcore.bus_address(op, addr), words)
            except DeviceError as error:
                raise AcceleratorError(op, addr + error.index, None,
                                       f" (word {error.index} of a {len(words)}-word run)"
                                       ) from error
            self.frames += 1

    def _read(self, op: str, addr: int, n: int) -> list[int]:
        self._connected()
        try:
            return self.link.read(gcore.bus_address(op, addr), n)
        except DeviceError as error:
            raise AcceleratorError(op, addr + error.index, None) from error

    def status(self) -> int:
        """The core's ``status`` word: ``busy | done << 1``."""
        self._connected()
        return self.link.read(gcore.bus_address("status"), 1)[0]

    # --- job -----------------------------------------------------------------------------------

    def load(self, x, qt) -> None:
        """Load activations ``x [M, K]`` (int8 codes or FP16/BF16 values, as the core's
        activation format) and the quantized weights ``qt [N, K]``."""
        self._write(gcore.load_commands(self.config, x, qt))

    def run(self, m: int, n: int, k: int) -> int:
        """Set the job dimensions, start it and wait until it is done (a READ of the ``wait``
        op, answered when the job ends: the link's ``timeout`` must outlast the job); returns
        the ``wait`` word (``done << 1``)."""
        self._connected()
        set_job = [c for c in gcore.run_commands(m, n, k) if c[0] == "set_job"]
        self._write(set_job)
        try:
            self.link.exec(gcore.bus_address("start"))
        except DeviceError as error:
            raise AcceleratorError("start", 0, None) from error
        # ``wait`` answers once the job is over: one READ whose reply comes when it is done.
        word = self._read("wait", 0, 1)[0]
        if not word & 2:
            raise AcceleratorError("wait", 0, None, f": returned {word:#x}, not done")
        return word

    def read_outputs(self, m: int, n: int) -> np.ndarray:
        """The output codes, uint32 ``[M, N]`` (FP32 codes, or FP16 codes zero-extended)."""
        mp = self.config
        if n == mp.max_n:  # rows are contiguous: one run
            words = self._read("read_output", 0, m * n)
        else:
            words = [w for i in range(m) for w in self._read("read_output",
                                                             mp.output_address(i, 0), n)]
        return np.array(words, dtype=np.uint32).reshape(m, n)

    def counters(self) -> dict[str, int]:
        """The performance counters of the last job (``golden.core.COUNTERS``)."""
        halves = self._read("read_counter", 0, 2 * len(gcore.COUNTERS))
        return {name: halves[2 * i] | halves[2 * i + 1] << 32
                for name, i in gcore.COUNTERS.items()}

    def gemm(self, x, qt) -> dict:
        """Load, run and read one GEMM: ``{"codes": uint32 [M, N], "counters": dict}``."""
        m, k = np.shape(x)
        n = qt.shape[0]
        self.load(x, qt)
        self.run(m, n, k)
        return {"codes": self.read_outputs(m, n), "counters": self.counters()}


def compare_with_golden(config: gcore.CoreConfig, x, qt, result: dict) -> dict:
    """Compare an :meth:`Accelerator.gemm` result with :func:`golden.gemm.gemm`.

    Returns ``{"expected", "mismatches" (count), "exact" (bool), "cases",
    "counters_expected" (:func:`golden.core.job_counters`), "counters_exact"}``.
    """
    mp = config
    mask = (1 << mp.out_bits) - 1
    expected = (np.asarray(ggemm.gemm(x, qt, mp.array).codes).astype(np.int64) & mask
                ).astype(np.uint32)
    got = np.asarray(result["codes"], dtype=np.uint32)
    mismatches = int((got != expected).sum()) if got.shape == expected.shape else expected.size
    out = {"expected": expected, "mismatches": mismatches, "exact": mismatches == 0,
           "cases": int(expected.size)}
    m, k = np.shape(x)
    want = gcore.job_counters(mp, m, qt.shape[0], k)
    out["counters_expected"] = want
    out["counters_exact"] = result.get("counters") == want
    return out

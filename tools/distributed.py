"""Independent tasks on Dask distributed: a LocalCluster, a scheduler address, or in process.

The whole-model flows (``bitmod verify --model``, ``bitmod eval``) split their work into
independent tasks (one layer GEMM on the RTL, one evaluation window) and hand them to
:func:`run_tasks`:

* ``workers >= 1`` and no scheduler: a ``distributed.LocalCluster`` of ``workers`` worker
  processes with one thread each, started for the call and closed after it;
* ``scheduler="tcp://host:8786"``: an existing cluster (``dask scheduler`` + ``dask worker``);
  its workers need ``bitmod-hdl`` with the same extras and data packages installed, and share
  the Verilator model cache only if ``BITMOD_BUILD_DIR`` points to a shared file system;
* ``workers == 0``: in this process, one task after the other (what the tests compare the
  cluster against).

Why Dask rather than Ray: the tasks are plain functions of picklable NumPy/dataclass arguments,
Dask distributed is pure Python (installs from pip on any machine, no daemon outside the
process tree), its LocalCluster starts in seconds, and ``client.map`` + ``as_completed`` are all
the flows need.

Determinism: every task runs with ``threads`` intra-op threads for torch (and the nanny's
``OMP/MKL/OPENBLAS_NUM_THREADS=1`` on workers); the in-process path sets the same count for the
duration of each task, so a float32 reduction is ordered the same way on a worker and in
process and the results are identical (the golden datapath is exact integer arithmetic and
does not depend on it anyway).

Memory: Dask starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting it fixes
glibc's trim threshold and with it turns off glibc's adaptive mmap threshold, so every array
above 128 KiB is mapped fresh from the kernel (a page fault per page on first touch) and
unmapped when freed. The datapath tasks allocate and free arrays of tens of MB per layer:
measured with it, a window of ``bitmod eval``'s datapath column took 58 s on a worker, without
it 30 s. The LocalCluster's workers therefore start without it (glibc's defaults, as in
process).

Progress: ``progress(done, total)`` as tasks finish; the command-line flows show it on their
progress line (:class:`bitmod.tools.progress.Progress`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence

from bitmod.golden.checks import check_int, check_number

__all__ = ["ClusterSpec", "run_tasks", "stage_progress"]


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """Where tasks run.

    Parameters
    ----------
    workers : int
        Worker processes of a LocalCluster (0: in this process). Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running Dask scheduler.
    threads : int
        Torch intra-op threads per task.
    connect_timeout : float
        Seconds to wait for ``scheduler``.
    """

    workers: int = 2
    scheduler: str | None = None
    threads: int = 1
    connect_timeout: float = 20.0

    def __post_init__(self) -> None:
        check_int("workers", self.workers, 0, 256)
        check_int("threads", self.threads, 1, 256)
        check_number("connect_timeout", self.connect_timeout, positive=True)
        if self.scheduler is not None and (not isinstance(self.scheduler, str)
                                           or not self.scheduler.strip()):
            raise ValueError(f"scheduler must be an address such as tcp://host:8786, got "
                             f"{self.scheduler!r}")

    @property
    def describe(self) -> str:
        """``"in process"``, ``"LocalCluster of 2 workers"`` or ``"scheduler ADDRESS"``."""
        if self.scheduler:
            return f"scheduler {self.scheduler}"
        if self.workers == 0:
            return "in process"
        return f"LocalCluster of {self.workers} worker{'s' if self.workers > 1 else ''}"


def _threaded_call(fn: Callable, threads: int, item):
    """``fn(item)`` with ``threads`` torch threads (restored afterwards)."""
    try:
        import torch
    except ImportError:  # tasks without torch (RTL runs) need no thread setting
        return fn(item)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(item)
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _client(spec: ClusterSpec):
    from distributed import Client, LocalCluster

    if spec.scheduler:
        try:
            client = Client(spec.scheduler, timeout=f"{spec.connect_timeout}s")
        except OSError as error:
            raise OSError(f"cannot reach the Dask scheduler at {spec.scheduler}: {error}"
                          ) from None
        with client:
            yield client
        return
    import dask

    # The nanny's environment for the workers, without the malloc trim (module docstring).
    environ = {name: value for name, value in
               dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if name != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
    with cluster, Client(cluster) as client:
        yield client


def run_tasks(fn: Callable, items: Sequence, spec: ClusterSpec, *,
              progress: Callable[[int, int], None] | None = None) -> list:
    """``[fn(item) for item in items]``, on the cluster ``spec`` describes.

    ``fn`` must be a module-level function (or a ``functools.partial`` of one) so that workers
    can import it; ``items`` and results must pickle. The first task that raises stops the
    run and its exception is raised here (the cluster is closed). ``progress(done, total)`` is
    called as tasks finish (e.g. to update a :class:`bitmod.tools.progress.Progress` line).

    Returns
    -------
    list
        Results in the order of ``items``.
    """
    items = list(items)
    call = functools.partial(_threaded_call, fn, spec.threads)
    report = progress or (lambda done, total: None)
    report(0, len(items))
    if spec.workers == 0 and not spec.scheduler:
        results = []
        for item in items:
            results.append(call(item))
            report(len(results), len(items))
        return results
    from distributed import as_completed

    with _client(spec) as client:
        # Data goes to the workers directly (scatter), not inside the task graph.
        futures = client.map(call, client.scatter(items), pure=False)
        for done, future in enumerate(as_completed(futures), 1):
            if future.status == "error":
                future.result()  # raises the task's exception
            report(done, len(items))
        return client.gather(futures)


def stage_progress(progress: Callable, stage: str) -> Callable[[int, int], None]:
    """Start the step ``stage`` on a ``progress(stage[, detail])`` callback and return the
    ``(done, total)`` callback of :func:`run_tasks` that shows ``done/total`` on it."""
    progress(stage)
    return lambda done, total: progress(stage, f"{done}/{total}")

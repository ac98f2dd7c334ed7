"""tools.distributed: tasks in process and on a real Dask LocalCluster, same results."""

from __future__ import annotations

import math
import os

import pytest
import torch

from bitmod.tools.distributed import ClusterSpec, run_tasks


def test_cluster_spec_validation_and_description():
    assert ClusterSpec(workers=0).describe == "in process"
    assert ClusterSpec(workers=1).describe == "LocalCluster of 1 worker"
    assert ClusterSpec(scheduler="tcp://h:8786").describe == "scheduler tcp://h:8786"
    with pytest.raises(ValueError, match="workers"):
        ClusterSpec(workers=-1)
    with pytest.raises(ValueError, match="threads"):
        ClusterSpec(threads=0)
    with pytest.raises(ValueError, match="scheduler must be an address"):
        ClusterSpec(scheduler=" ")


def test_in_process_keeps_order_and_restores_torch_threads():
    before = torch.get_num_threads()
    assert run_tasks(math.factorial, [5, 3, 0], ClusterSpec(workers=0, threads=1)) == [120, 6, 1]
    assert torch.get_num_threads() == before


def test_local_cluster_results_in_order_and_errors_propagate(monkeypatch):
    """A real LocalCluster of 2 workers: the results equal the serial ones, in item order; a
    task's exception reaches the caller with its message; the workers run with one BLAS
    thread and without Dask's malloc trim (tools.distributed's docstring)."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    items = list(range(40, 0, -3))
    spec = ClusterSpec(workers=2)
    assert run_tasks(math.factorial, items, spec) == [math.factorial(i) for i in items]
    with pytest.raises(ValueError, match="not defined for negative values"):
        run_tasks(math.factorial, [3, -1], spec)
    names = ["MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"]
    assert run_tasks(os.getenv, names, spec) == [None, "1", "1"]


def test_unreachable_scheduler_is_one_line():
    with pytest.raises(OSError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"):
        run_tasks(math.factorial, [1], ClusterSpec(scheduler="tcp://127.0.0.1:9",
                                                         connect_timeout=1))

"""compare(), replay() and sweep() on a dask.distributed cluster (DESIGN §5, §9): a
LocalCluster of worker *processes* started here, driven through ``Client.get_executor()``
(a concurrent.futures executor), gives exactly the rows of a serial run.

dask is an optional extra (``pip install -e '.[cluster]'``); the dev install has it, so
this runs in ``make test``. Outside CI a missing dask skips it; with CI=true it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import iommu_lab as il
from iommu_lab.inputs import workloads

TRACE = Path(__file__).resolve().parent.parent / "data" / "traces" / "vfio-teardown-v4.14.txt"
S = ["smmuv3-v4.14", "smmuv3-v5.4", "vtd-psi"]
C = ["unmap-each", "unmap-fast-batch", "dma-lazy"]


def _distributed():
    try:
        import distributed
    except ImportError:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("dask.distributed is not installed (pip install -e '.[dev]')",
                        pytrace=False)
        pytest.skip("dask.distributed is not installed (pip install -e '.[cluster]')")
    return distributed


@pytest.fixture(scope="module")
def client():
    distributed = _distributed()
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture
def executor(client):
    return client.get_executor()


def _same(cluster_df: pd.DataFrame, serial_df: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(cluster_df, serial_df)
    assert cluster_df.attrs == serial_df.attrs


def test_workers_are_other_processes(client):
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids


def test_compare_on_the_cluster(client, executor):
    w = workloads.kvm_teardown("4M", contiguity=0.5, seed=4)
    _same(il.compare(w, S, C, executor=executor), il.compare(w, S, C))
    loaded = client.run(lambda: __import__("sys").modules.get("iommu_lab.analysis.compare")
                        is not None)
    assert any(loaded.values()), "no worker ran compare()"


def test_replay_on_the_cluster(executor):
    _same(il.replay(str(TRACE), S, C, executor=executor), il.replay(str(TRACE), S, C))
    trace = il.read_trace(TRACE)
    _same(il.replay(trace, S, C, executor=executor), il.replay(trace, S, C))


def test_cli_replay_on_the_cluster(client, capsys):
    """``replay --scheduler ADDRESS`` runs the pairs on that cluster: the serial table."""
    from iommu_lab.cli import main

    args = ["replay", str(TRACE), "--strategies", ",".join(S), "--callers", ",".join(C)]
    assert main(args) == 0
    serial = capsys.readouterr().out
    assert main(args + ["--scheduler", client.scheduler.address]) == 0
    assert capsys.readouterr().out == serial


def test_cli_scheduler_nobody_listens_one_line_exit_2(capsys):
    from iommu_lab.cli import main

    _distributed()
    assert main(["replay", str(TRACE), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot connect" in err[0], err


def test_sweep_on_the_cluster(executor):
    grid = {"guest_mem": ["4M", "8M"], "hw_tlbi_ns": [25, 200], "iotlb_entries": [8]}
    serial = il.sweep(workloads.kvm_teardown, S, C, grid, progress=False)
    on_cluster = il.sweep(workloads.kvm_teardown, S, C, grid, executor=executor,
                          progress=False)
    assert len(serial) == 4 * len(S) * len(C)
    _same(on_cluster, serial)

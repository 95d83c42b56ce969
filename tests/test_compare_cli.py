"""compare(), executors, and the command line."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

import iommu_lab as il
from iommu_lab.analysis.compare import compare
from iommu_lab.cli import main
from iommu_lab.inputs.workloads import kvm_teardown
from iommu_lab.stats import COUNTERS


def test_compare_is_tidy_one_row_per_pair():
    df = compare(kvm_teardown("8M", "4K"), ["smmuv3-v4.14", "smmuv3-v5.4"],
                 ["unmap-each", "unmap-fast-batch"])
    assert list(zip(df.strategy, df.caller)) == [
        ("smmuv3-v4.14", "unmap-each"), ("smmuv3-v4.14", "unmap-fast-batch"),
        ("smmuv3-v5.4", "unmap-each"), ("smmuv3-v5.4", "unmap-fast-batch")]
    assert set(COUNTERS) <= set(df.columns)
    row = df.set_index(["strategy", "caller"]).loc[("smmuv3-v5.4", "unmap-fast-batch")]
    # 2048 pages, VFIO syncs every 512 regions: 4 syncs of 512 TLBIs in 8 batches each.
    assert (row.inv_cmds, row.sync_cmds, row.doorbells) == (2048, 4, 32)
    assert (df.pages_unmapped == 2048).all()


def test_compare_params_reach_the_domain():
    slow = compare(kvm_teardown("1M", "4K"), ["smmuv3-v4.14"], ["unmap-each"],
                   params={"costs": {"hw_sync_ns": 5000}})
    fast = compare(kvm_teardown("1M", "4K"), ["smmuv3-v4.14"], ["unmap-each"])
    assert slow.cpu_ns[0] > fast.cpu_ns[0]


@pytest.mark.parametrize("pool", [ThreadPoolExecutor, ProcessPoolExecutor])
def test_executor_gives_identical_rows(pool):
    w = kvm_teardown("4M", "4K")
    serial = compare(w, ["smmuv3-v4.15", "amd-range"], ["unmap-each", "dma-lazy"])
    with pool(max_workers=2) as ex:
        parallel = compare(w, ["smmuv3-v4.15", "amd-range"], ["unmap-each", "dma-lazy"],
                           executor=ex)
    assert serial.drop(columns=["commands"]).equals(parallel.drop(columns=["commands"]))


def test_unknown_names_are_refused_before_running():
    with pytest.raises(il.IommuError, match="unknown strategy 'nope'"):
        compare(kvm_teardown("1M"), ["nope"])
    with pytest.raises(il.IommuError, match="unknown caller"):
        compare(kvm_teardown("1M"), None, ["sometimes"])


def test_strategies_table_lists_every_strategy():
    df = il.strategies()
    assert list(df.name) == list(il.STRATEGIES)
    assert {"hardware", "kernel", "summary", "source"} <= set(df.columns)
    assert df.source.str.contains("drivers/iommu").all()


def test_cli_compare_prints_a_table_and_csv(tmp_path, capsys):
    out = tmp_path / "t.csv"
    assert main(["compare", "--guest-mem", "2M", "--strategies", "smmuv3-v5.4",
                 "--callers", "unmap-each", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "smmuv3-v5.4" in text and "inv_cmds" in text and "512" in text
    assert out.read_text().startswith("strategy,caller")


@pytest.mark.parametrize("argv,needle", [
    (["compare", "--strategies", "nope"], "unknown strategy"),
    (["compare", "--guest-mem", "3K"], "multiple of 4K"),
    (["compare", "--param", "frobs"], "NAME=VALUE"),
    (["compare", "--param", "frobs=1", "--guest-mem", "1M"], "unknown parameter"),
    (["frob"], "invalid choice"),
    (["compare", "--jobs", "0"], "not a positive number of processes"),
    (["replay", "x.txt", "--jobs", "2", "--scheduler", "tcp://h:1"], "not allowed with"),
])
def test_cli_bad_arguments_one_line_exit_2(argv, needle):
    p = subprocess.run([sys.executable, "-m", "iommu_lab", *argv], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("iommu_lab: error:")


def test_cli_strategies():
    p = subprocess.run([sys.executable, "-m", "iommu_lab", "strategies"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and "smmuv3-v4.15" in p.stdout and "virtio-iommu" in p.stdout


def test_cli_shows_cpu_and_ats_columns_only_when_used(capsys):
    args = ["compare", "--guest-mem", "1M", "--strategies", "vtd-psi", "--callers",
            "unmap-each"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert "lock_wait_ms" not in plain and "atc_inv_cmds" not in plain
    assert main(args + ["--param", "cpus=2", "--param", "ats=true"]) == 0
    header = [line for line in capsys.readouterr().out.splitlines() if "strategy" in line][0]
    for col in ("cpus", "unmaps_per_s", "lock_wait_ms", "spin_ms", "atc_inv_cmds"):
        assert col in header.split()


def test_cli_jobs_runs_the_pairs_in_processes_with_the_same_table(capsys):
    """``--jobs 2``: the pairs go to a local process pool; the table is the serial one."""
    args = ["compare", "--guest-mem", "1M", "--strategies", "smmuv3-v5.4,vtd-psi",
            "--callers", "unmap-each,unmap-fast-batch"]
    assert main(args) == 0
    serial = capsys.readouterr().out
    assert main(args + ["--jobs", "2"]) == 0
    assert capsys.readouterr().out == serial

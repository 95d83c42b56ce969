"""Workload generators (seeded, described) and trace replay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import iommu_lab as il
from iommu_lab import workloads as W
from iommu_lab.inputs.ops import Op

DATA = Path(__file__).resolve().parent.parent / "data" / "traces"
SMALL = {
    "kvm-teardown": dict(guest_mem="2M", page_size="4K", contiguity=0.5),
    "nic-streaming": dict(ring_size=16, packets=64),
    "nvme-io": dict(queue_depth=4, ios=40),
    "sg-mapping": dict(lists=4, nents=8),
    "mixed-dma": dict(buffers=32),
}


@pytest.mark.parametrize("name", list(W.WORKLOADS))
def test_generators_are_deterministic_per_seed(name):
    make = W.WORKLOADS[name]
    a, b, c = (make(**SMALL[name], seed=s) for s in (3, 3, 4))
    assert a.ops == b.ops
    assert a.ops != c.ops
    assert all(isinstance(op, Op) for op in a)
    text = a.describe()
    assert name in text and "seed=3" in text and len(text) > 80


@pytest.mark.parametrize("name", list(W.WORKLOADS))
def test_every_workload_runs_under_every_caller(name):
    w = W.WORKLOADS[name](**SMALL[name])
    df = il.compare(w, ["smmuv3-v5.4", "amd-flush-all"])
    assert len(df) == 12 and (df["items"] == w.items).all()


def test_kvm_teardown_chunks_follow_contiguity():
    full = W.kvm_teardown("4M", "4K", contiguity=1.0)
    assert [(op.kind, op.size, op.count) for op in full] == [("map", 4 << 20, 1),
                                                            ("unmap", 4 << 20, 1)]
    none = W.kvm_teardown("4M", "4K", contiguity=0.0)
    assert none.ops[0].count == 1024 and none.ops[0].paddr_stride == 0x2000
    assert sum(op.size * op.count for op in W.kvm_teardown("4M", "4K", 0.6, 1)
               if op.kind == "map") == 4 << 20


@pytest.mark.parametrize("kwargs,needle", [
    (dict(guest_mem="3K"), "multiple of 4K"), (dict(page_size="8K"), "4K, 2M or 1G"),
    (dict(contiguity=1.5), "0.0 .. 1.0"), (dict(guest_mem="lots"), "not a number"),
])
def test_kvm_teardown_bad_input(kwargs, needle):
    with pytest.raises(il.IommuError, match=needle):
        W.kvm_teardown(**kwargs)


def test_mixed_workload_shows_stale_hits_only_when_lazy():
    df = il.compare(W.mixed_dma(buffers=128), ["smmuv3-v5.4"], ["dma-strict", "dma-lazy"])
    strict, lazy = df.iloc[0], df.iloc[1]
    assert strict.stale_hits == 0 and strict.faults > 0
    assert lazy.stale_hits > 0 and lazy.max_stale_ns <= 10_000_000


def test_sg_mapping_coalesces_contiguous_entries():
    w = W.sg_mapping(lists=8, nents=16, contiguity=1.0)
    row = il.compare(w, ["smmuv3-v5.4"], ["unmap-each"]).iloc[0]
    assert row.map_calls == 8  # one iommu_map per physically contiguous run (L5.3+)


def test_scenarios_are_bundled_and_named():
    names = W.scenarios()
    assert "guest-16g-4k" in names and "inflight-dma" in names
    assert W.scenario("guest-1g-4k").items == 2 * 262144
    with pytest.raises(il.IommuError, match="unknown scenario"):
        W.scenario("nope")


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")))
def test_bundled_traces_are_marked_synthetic(path):
    assert "synthetic" in path.read_text().splitlines()[0].lower()


def test_replay_fills_in_sync_from_the_caller():
    df = il.replay(il.read_trace(DATA / "vfio-teardown-v4.14.txt"),
                   ["smmuv3-v4.14", "smmuv3-v5.4"], ["unmap-each", "unmap-fast-batch"])
    assert "record no sync" in df.attrs["note"]
    by = df.set_index(["strategy", "caller"])
    assert by.loc[("smmuv3-v4.14", "unmap-each")].sync_cmds == \
        by.loc[("smmuv3-v4.14", "unmap-each")].inv_cmds  # flush inside every unmap
    assert by.loc[("smmuv3-v5.4", "unmap-fast-batch")].sync_cmds < \
        by.loc[("smmuv3-v5.4", "unmap-each")].sync_cmds
    assert (df.op_errors == 0).all()


def test_replay_counts_ops_the_domain_refuses():
    lines = ["unmap: IOMMU: iova=0x0000000000001000 size=4096 unmapped_size=4096",
             "map: IOMMU: iova=0x0000000000002000 paddr=0x0000000000003000 size=4096",
             "map: IOMMU: iova=0x0000000000002000 paddr=0x0000000000005000 size=4096"]
    df = il.replay(lines, ["smmuv3-v5.4"], ["unmap-each"])
    assert df.op_errors[0] == 1 and "EEXIST" in df.notes[0]


def test_cli_replay_example_trace():
    p = subprocess.run([sys.executable, "-m", "iommu_lab", "replay",
                        str(DATA / "nic-v5.17.txt"), "--strategies", "smmuv3-v5.4",
                        "--callers", "dma-strict,dma-lazy"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "dma-lazy" in p.stdout and "record no sync" in p.stdout


def test_cli_replay_missing_file_one_line():
    p = subprocess.run([sys.executable, "-m", "iommu_lab", "replay", "/nonexistent.txt"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


def test_cli_replay_strict_names_the_line_lenient_reports_it(tmp_path):
    trace = tmp_path / "t.txt"
    trace.write_text("map: IOMMU: iova=0x0000000000001000 paddr=0x0000000000002000 size=4096\n"
                     "unmap: IOMMU: iova=0x00000000000010zz size=4096 unmapped_size=4096\n"
                     "unmap: IOMMU: iova=0x0000000000001000 size=4096 unmapped_size=4096\n")
    cmd = [sys.executable, "-m", "iommu_lab", "replay", str(trace), "--strategies",
           "smmuv3-v5.4", "--callers", "unmap-each"]
    strict = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert strict.returncode == 2 and "line 2" in strict.stderr
    lenient = subprocess.run(cmd + ["--lenient"], capture_output=True, text=True, timeout=60)
    assert lenient.returncode == 0 and "skipped line 2" in lenient.stderr
    assert "smmuv3-v5.4" in lenient.stdout

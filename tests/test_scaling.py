"""Teardown scaling against CPUs and the cost of ATS (analysis/scaling.py, ``python -m
iommu_lab scaling``; issue 11's closing table)."""

from __future__ import annotations

import pytest

from iommu_lab.analysis import scaling
from iommu_lab.cli import main
from iommu_lab.errors import IommuError


@pytest.mark.parametrize("strategy, doorbells", [
    # arm-smmu-v3.c @v4.15 arm_smmu_tlb_inv_range_nosync + __arm_smmu_tlb_sync: the TLBI
    # and the CMD_SYNC each get their own PROD write
    ("smmuv3-v4.15", 2 * 1024),
    # arm-smmu-v3.c @v5.4 arm_smmu_cmdq_issue_cmdlist: TLBI + CMD_SYNC in one batch
    ("smmuv3-v5.4", 1024),
    # intel/dmar.c @v5.10 qi_submit_sync: PSI + wait descriptor, one IQT write
    ("vtd-psi", 1024),
    # amd/iommu.c @v5.10 iommu_queue_command + iommu_completion_wait: a tail write each
    ("amd-range", 2 * 1024),
])
def test_one_cpu_teardown_counts(strategy: str, doorbells: int) -> None:
    r = scaling.teardown_run(strategy, 1, "4M")
    assert (r["unmaps"], r["inv_cmds"], r["sync_cmds"], r["doorbells"]) == (
        1024, 1024, 1024, doorbells)
    assert r["lock_wait_ms"] == 0 and r["unmaps_per_s"] == round(1024 * 1e3 / r["unmap_phase_ms"])


def test_several_cpus_do_the_same_work_faster_or_wait() -> None:
    df = scaling.cpu_scaling("2M", ["smmuv3-v5.4", "amd-range"], [1, 4])
    assert list(df["cpus"]) == [1, 4, 1, 4] and set(df["inv_cmds"]) == {512}
    v54 = df[df["strategy"] == "smmuv3-v5.4"]
    assert v54["speedup"].tolist()[0] == 1.0 and v54["speedup"].tolist()[1] > 1.0
    amd = df[df["strategy"] == "amd-range"].iloc[1]
    assert amd["lock_wait_ms"] > 0            # iommu->lock held across the completion wait


def test_ats_adds_one_atc_invalidation_per_unmap() -> None:
    """CMD_ATC_INV (arm-smmu-v3.c @v5.4 arm_smmu_atc_inv_domain), a device-IOTLB descriptor
    (intel/dmar.c @v5.10 qi_flush_dev_iotlb), INVALIDATE_IOTLB_PAGES (amd/iommu.c @v5.10
    domain_flush_devices): one per unmapped page here, and each costs time."""
    df = scaling.ats_cost("1M")
    assert df["atc_inv_cmds"].tolist() == [256, 256, 256]
    assert (df["slowdown"] > 1).all()


def test_bad_cpus_are_refused() -> None:
    for bad in ([], [0], [257], [True], [2.0]):
        with pytest.raises(IommuError, match="cpus"):
            scaling.check_cpus(bad)


def test_scaling_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scaling", "--size", "1M", "--cpus", "1,2", "--strategies", "smmuv3-v5.4",
                 "--param", "hw_sync_ns=50"]) == 0
    out = capsys.readouterr().out
    assert "smmuv3-v5.4       1" in out and "smmuv3-v5.4       2" in out and "ATS" in out


@pytest.mark.parametrize("argv, needle", [
    (["scaling", "--cpus", "1,x"], "comma-separated list of integers"),
    (["scaling", "--cpus", "0"], "cpus"),
    (["scaling", "--strategies", "nope"], "nope"),
    (["scaling", "--param", "bogus=1"], "bogus"),
])
def test_scaling_cli_bad_input(capsys: pytest.CaptureFixture[str], argv: list[str],
                               needle: str) -> None:
    try:
        status = main(argv)
    except SystemExit as exc:       # argparse refuses a malformed list itself
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "iommu_lab: error" in err and needle in err

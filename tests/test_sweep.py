"""sweep(): compare() over a grid of parameters (DESIGN §9), checked against compare() itself
(the naive reference: one compare() per grid point), and its refusals of bad grids."""

from __future__ import annotations

import pandas as pd
import pytest

import iommu_lab as il
from iommu_lab.analysis.compare import compare
from iommu_lab.analysis.sweep import classify, grid_points, sweep
from iommu_lab.inputs import workloads

S = ["smmuv3-v4.15", "smmuv3-v5.4"]
C = ["unmap-each", "unmap-fast-batch"]


def test_grid_points_product_and_explicit_lists():
    assert grid_points(None) == [{}]
    assert grid_points({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert grid_points([{"a": 1}, {"a": 5}]) == [{"a": 1}, {"a": 5}]
    with pytest.raises(il.IommuError, match="must be a list of values"):
        grid_points({"a": "16M"})
    with pytest.raises(il.IommuError, match="same keys"):
        grid_points([{"a": 1}, {"b": 2}])


def test_rows_equal_compare_at_every_point():
    """Sizes (workload arguments), costs and domain parameters in one grid: each point's
    rows are exactly what compare() gives for that workload and those parameters."""
    grid = {"guest_mem": ["8M", "32M"], "hw_tlbi_ns": [25, 400], "iotlb_entries": [16]}
    df = sweep(workloads.kvm_teardown, S, C, grid, progress=False)
    assert len(df) == 2 * 2 * len(S) * len(C)
    assert list(df.columns[:5]) == ["guest_mem", "hw_tlbi_ns", "iotlb_entries", "strategy",
                                    "caller"]
    for (mem, tlbi), got in df.groupby(["guest_mem", "hw_tlbi_ns"], sort=False):
        want = compare(workloads.kvm_teardown(mem), S, C,
                       {"iotlb_entries": 16, "costs": {"hw_tlbi_ns": tlbi}})
        got = got.drop(columns=list(grid)).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)
    # the costs matter: a slower TLBI lengthens the gathered teardown (v5.4 issues 4,096)
    v54 = df[(df.strategy == "smmuv3-v5.4") & (df.caller == "unmap-each")
             & (df.guest_mem == "8M")].set_index("hw_tlbi_ns")
    assert v54.loc[400, "inv_cmds"] == v54.loc[25, "inv_cmds"] == 2048
    assert v54.loc[400, "end_ns"] > v54.loc[25, "end_ns"]


def test_fixed_workload_with_prefixed_keys_and_base_params():
    w = workloads.kvm_teardown("8M")
    df = sweep(w, ["smmuv3-v5.4"], ["unmap-each"],
               [{"costs.hw_sync_ns": 100, "domain.cmdq_entries": 256},
                {"costs.hw_sync_ns": 900, "domain.cmdq_entries": 1024}],
               params={"costs": {"hw_tlbi_ns": 75}}, progress=False)
    want = compare(w, ["smmuv3-v5.4"], ["unmap-each"],
                   {"cmdq_entries": 1024, "costs": {"hw_tlbi_ns": 75, "hw_sync_ns": 900}})
    assert df.loc[1, "end_ns"] == want.loc[0, "end_ns"] != df.loc[0, "end_ns"]
    assert df.attrs["grid"] == ["costs.hw_sync_ns", "domain.cmdq_entries"]


def test_domain_params_pass_through_to_the_domain():
    """Any parameter iommu_domain_alloc accepts is a grid key, new ones included."""
    roles = classify([{"cpus": 2, "walk_cache_entries": 4}], None, ["smmuv3-v5.4"])
    assert roles == {"cpus": ("domain", "cpus"),
                     "walk_cache_entries": ("domain", "walk_cache_entries")}
    df = sweep(workloads.kvm_teardown("4M"), ["smmuv3-v5.4"], ["unmap-each"],
               {"walk_cache_entries": [0, 4]}, progress=False)
    assert list(df["walk_cache_entries"]) == [0, 4]


@pytest.mark.parametrize("grid,message", [
    ({"nope": [1]}, "unknown grid parameter 'nope'.*nor a cost.*nor a domain parameter"),
    ({"costs.nope": [1]}, "unknown cost 'nope'"),
    ({"workload.seed": [1]}, "the workload takes no argument 'seed'"),
    ({"x.y": [1]}, "prefix must be one of workload, costs, domain"),
    ({"guest_mem": ["1G"]}, "pass a factory such as workloads.kvm_teardown"),
    ({"msi_sync": [True]}, "not a domain parameter of amd-range"),
    ({"cmdq_entries": [1024, 8]}, r"grid point 1 \(smmuv3-v5.4.*too small"),
    ({"hw_tlbi_ns": [-1]}, "must be a non-negative number"),
])
def test_bad_grids_are_refused_before_anything_runs(grid, message, monkeypatch):
    ran = []
    monkeypatch.setattr("iommu_lab.analysis.sweep.run_batch", lambda *a: ran.append(a))
    with pytest.raises(il.IommuError, match=message) as err:
        sweep(workloads.kvm_teardown("4M"), ["smmuv3-v5.4", "amd-range"], ["unmap-each"],
              grid, progress=False)
    assert err.value.errno == il.EINVAL and ran == []


def test_unknown_strategy_or_caller_is_refused():
    with pytest.raises(il.IommuError, match="unknown strategy"):
        sweep(workloads.kvm_teardown("4M"), ["nope"], ["unmap-each"], None, progress=False)
    with pytest.raises(il.IommuError, match="unknown caller"):
        sweep(workloads.kvm_teardown("4M"), S, ["nope"], None, progress=False)


def test_public_api_and_progress_bar(capsys):
    df = il.sweep(workloads.kvm_teardown, ["smmuv3-v5.4"], ["unmap-each"],
                  {"guest_mem": ["4M", "8M"]})
    assert list(df["pages_unmapped"]) == [1024, 2048]
    err = capsys.readouterr().err
    assert "sweep: 100%" in err and "2/2" in err

"""User-defined strategies (issue 14): registration, its errors, and that a registered
strategy works wherever a shipped one does — iommu_domain_alloc, compare(), replay(), the
stepper model, the stepper's and the dashboard's pickers, strategies().

Expected counts: SMMUv3 v5.4 ``arm_smmu_iotlb_sync`` → ``arm_smmu_tlb_inv_range``: one
``CMD_TLBI_NH_VA`` per 4K granule, the last batch with one CMD_SYNC; ``flush_iotlb_all`` →
``arm_smmu_tlb_inv_context``: ``CMD_TLBI_NH_ASID`` + CMD_SYNC (drivers/iommu/arm-smmu-v3.c
@v5.4.59; hardware-invalidation.md §1.4).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import iommu_lab as il
from iommu_lab.analysis.compare import compare
from iommu_lab.analysis.stepping import StepperModel
from iommu_lab.drivers import examples, user
from iommu_lab.drivers.base import Driver
from iommu_lab.drivers.registry import STRATEGIES
from iommu_lab.errors import EINVAL, IommuError
from iommu_lab.hw.commands import Command
from iommu_lab.inputs.ops import Op

RW = int(il.IOMMU_READ | il.IOMMU_WRITE)
SHIPPED = [s.name for s in STRATEGIES.values() if not s.user_defined]
TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"


pytestmark = pytest.mark.usefixtures("clean_registry")   # conftest.py


class RangeOrAll8(il.driver_class("smmuv3-v5.4")):
    """More than 8 pages: one TLBI_NH_ASID + CMD_SYNC."""

    def iotlb_sync(self, dom, gather):
        big = il.gather_span(dom, gather)[1] > 8 * 4096
        return self.tlb_flush_all() if big else super().iotlb_sync(dom, gather)


def unmap_counts(name: str, size: int) -> dict[str, int]:
    dom = il.iommu_domain_alloc(name)
    il.iommu_map(dom, 0, 0x4000_0000, size, RW)
    assert il.iommu_unmap(dom, 0, size) == size
    st = dom.stats()
    return {k: st[k] for k in ("inv_cmds", "inv_all_cmds", "sync_cmds")}


def refused(match: str, *args, **kwargs) -> IommuError:
    """register_strategy(*args, **kwargs) raises EINVAL matching ``match``; nothing changes."""
    before = dict(STRATEGIES)
    with pytest.raises(IommuError, match=match) as exc:
        il.register_strategy(*args, **kwargs)
    assert exc.value.errno == EINVAL
    assert STRATEGIES == before
    return exc.value


# ---- a subclass, registered, works everywhere ---------------------------------------------

def test_a_subclass_in_four_lines_is_a_registry_row():
    row = il.register_strategy("my-range-or-all", RangeOrAll8)
    assert (row.kernel, row.hardware, row.supports_fq, row.user_defined) == (
        "v5.4", "ARM SMMUv3", True, True)
    assert row.summary == "More than 8 pages: one TLBI_NH_ASID + CMD_SYNC."
    df = il.strategies()
    assert df.set_index("name").loc["my-range-or-all", "user_defined"]
    assert not df.set_index("name").loc[SHIPPED, "user_defined"].any()


def test_the_override_is_what_the_core_calls():
    il.register_strategy("my-range-or-all", RangeOrAll8)
    # 16 pages: v5.4 sends 16 NH_VA + 1 CMD_SYNC (one batch of <= 64); above 8 pages the
    # user strategy sends NH_ASID + CMD_SYNC; 8 pages: the same as v5.4
    assert unmap_counts("smmuv3-v5.4", 0x10000) == {"inv_cmds": 16, "inv_all_cmds": 0,
                                                     "sync_cmds": 1}
    assert unmap_counts("my-range-or-all", 0x10000) == {"inv_cmds": 1, "inv_all_cmds": 1,
                                                         "sync_cmds": 1}
    assert unmap_counts("my-range-or-all", 0x8000) == unmap_counts("smmuv3-v5.4", 0x8000)


def test_round_trip_through_compare():
    il.register_strategy("my-range-or-all", RangeOrAll8)
    w = [Op("map", 0, 0x10000, 1 << 32), Op("unmap", 0, 0x10000)]
    df = compare(w, ["smmuv3-v5.4", "my-range-or-all"], ["unmap-each", "dma-strict"])
    got = df.set_index(["strategy", "caller"])
    for caller in ("unmap-each", "dma-strict"):
        assert got.loc[("smmuv3-v5.4", caller), "inv_cmds"] == 16
        assert got.loc[("my-range-or-all", caller), ["inv_cmds", "inv_all_cmds",
                                                      "sync_cmds"]].tolist() == [1, 1, 1]
    assert il.compare(w, ["my-range-or-all"], ["unmap-fast-batch"])["inv_all_cmds"][0] == 1


def test_round_trip_through_replay():
    il.register_strategy("my-range-or-all", RangeOrAll8)
    trace = il.read_trace(TRACES / "vfio-teardown-v4.14.txt")
    df = il.replay(trace, ["smmuv3-v5.4", "my-range-or-all"], ["unmap-each"])
    assert df["strategy"].tolist() == ["smmuv3-v5.4", "my-range-or-all"]
    assert (df["op_errors"] == 0).all()
    mine, v54 = df.iloc[1], df.iloc[0]
    assert mine["pages_unmapped"] == v54["pages_unmapped"] > 0
    assert mine["inv_all_cmds"] > 0 == v54["inv_all_cmds"]
    assert mine["inv_cmds"] < v54["inv_cmds"]


def test_round_trip_through_sweep_with_its_own_parameter():
    """A user strategy's own parameter is a grid key. Buffers of 1, 4 and 16 pages unmapped
    one by one: above T pages one NH_ASID + CMD_SYNC, else v5.4's NH_VA per page + CMD_SYNC
    (arm-smmu-v3.c @v5.4.59 ``arm_smmu_tlb_inv_range`` / ``arm_smmu_tlb_inv_context``)."""
    examples.register_example("range-or-all")
    bufs = [(0x10_0000 * k, pages * 0x1000) for k, pages in enumerate((1, 4, 16))]
    w = [Op("map", iova, size, 0x4000_0000 + iova, RW) for iova, size in bufs]
    w += [Op("unmap", iova, size) for iova, size in bufs]
    df = il.sweep(w, ["range-or-all"], ["unmap-each"], {"flush_all_above": [1, 4, 32]},
                  progress=False)
    got = df.set_index("flush_all_above")[["inv_cmds", "inv_all_cmds", "sync_cmds"]]
    assert got.to_dict("index") == {
        1: {"inv_cmds": 1 + 1 + 1, "inv_all_cmds": 2, "sync_cmds": 3},
        4: {"inv_cmds": 1 + 4 + 1, "inv_all_cmds": 1, "sync_cmds": 3},
        32: {"inv_cmds": 1 + 4 + 16, "inv_all_cmds": 0, "sync_cmds": 3}}
    assert (df["strategy"] == "range-or-all").all()


def test_round_trip_through_the_dashboard_model():
    """The dashboard's CompareModel: a 16 MiB VFIO teardown, one ``iommu_iotlb_sync`` per
    ``VFIO_IOMMU_TLB_SYNC_MAX`` (512) regions (drivers/vfio/vfio_iommu_type1.c @v5.4.59)."""
    from iommu_lab.analysis.compare import CompareModel

    il.register_strategy("my-range-or-all", RangeOrAll8)
    m = CompareModel(["smmuv3-v5.4", "my-range-or-all"], ["unmap-fast-batch"],
                     guest_mem="16M")
    df = m.run()
    assert m.error is None
    got = df.set_index("strategy")
    # 4096 scattered 4K pages: 8 syncs of 512 regions; v5.4 one NH_VA per page
    assert got.loc["smmuv3-v5.4", ["inv_cmds", "inv_all_cmds", "sync_cmds"]].tolist() == [
        4096, 0, 8]
    assert got.loc["my-range-or-all", ["inv_cmds", "inv_all_cmds", "sync_cmds"]].tolist() == [
        8, 8, 8]
    m.set_metric("inv_all_cmds")
    assert m.error is None and m.metric == "inv_all_cmds"


def test_round_trip_through_the_stepper_model():
    il.register_strategy("my-range-or-all", RangeOrAll8)
    m = StepperModel("my-range-or-all")
    m.map("0x0", "64K")
    assert m.dma_read("0x3000") == "walk"
    m.unmap("0x0", "64K")
    assert m.error is None and m.dma_read("0x3000") == "fault"
    assert m.domain.stats()["inv_all_cmds"] == 1
    assert m.reset("smmuv3-v5.4") and m.reset("my-range-or-all") and m.error is None
    assert StepperModel("my-range-or-all", type="DMA_FQ").domain.fq is not None


def test_the_pickers_offer_it():
    from iommu_lab.ui import Stepper
    from iommu_lab.ui.dashboard import CompareDashboard

    il.register_strategy("my-range-or-all", RangeOrAll8)
    assert "my-range-or-all" in Stepper("smmuv3-v5.4").w_strategy.options
    assert "my-range-or-all" in CompareDashboard().w_strategies.options


def test_ops_as_functions_on_a_base_and_from_scratch():
    il.register_strategy("always-flush-all", base="smmuv3-v5.4",
                         iotlb_sync=lambda drv, dom, gather: drv.tlb_flush_all())
    assert unmap_counts("always-flush-all", 0x1000) == {"inv_cmds": 1, "inv_all_cmds": 1,
                                                         "sync_cmds": 1}

    def flush_asid(drv, dom, gather):
        drv.issue([(Command("CMD_TLBI_NH_ASID", drv.asid, fields=(("ASID", drv.asid),)), 1),
                   (Command("CMD_SYNC"), 1)], wait=True)

    row = il.register_strategy("scratch-asid", kernel="v5.4", map=user.pgtable_map,
                               unmap=user.pgtable_unmap, iotlb_sync=flush_asid)
    assert row.driver.__mro__[1] is Driver and row.source.endswith("from scratch)")
    assert unmap_counts("scratch-asid", 0x4000) == {"inv_cmds": 1, "inv_all_cmds": 1,
                                                     "sync_cmds": 1}


def test_an_op_can_be_removed():
    il.register_strategy("no-flush-all", base="smmuv3-v5.4", flush_iotlb_all=None)
    dom = il.iommu_domain_alloc("no-flush-all")
    assert dom.ops.flush_iotlb_all is None and dom.ops.iotlb_sync is not None


def test_replace_and_unregister():
    il.register_strategy("mine", RangeOrAll8)
    refused("already registered", "mine", RangeOrAll8)
    il.register_strategy("mine", examples.SyncEveryK, replace=True)
    assert STRATEGIES["mine"].driver is examples.SyncEveryK
    il.unregister_strategy("mine")
    assert "mine" not in STRATEGIES
    with pytest.raises(IommuError, match="unknown strategy"):
        il.unregister_strategy("mine")
    with pytest.raises(IommuError, match="shipped strategy"):
        il.unregister_strategy("smmuv3-v5.4")
    assert "smmuv3-v5.4" in STRATEGIES


def test_examples_register_and_scratch_strategies_leave_no_trace():
    for name, ex in examples.EXAMPLES.items():
        row = examples.register_example(name)
        assert row.driver is ex.driver and row.user_defined
        assert "class " + ex.driver.__name__ in examples.source(name)
    with pytest.raises(IommuError, match="unknown example"):
        examples.register_example("nope")
    before = dict(STRATEGIES)
    with user.scratch_strategy(RangeOrAll8) as name:
        assert STRATEGIES[name].driver is RangeOrAll8
    assert STRATEGIES == before


# ---- bad definitions: EINVAL naming the problem, registry unchanged ------------------------

def test_a_clashing_name():
    refused("clashes with a shipped strategy", "smmuv3-v5.4", RangeOrAll8)


@pytest.mark.parametrize("name", ["", "has space", "a,b", "x" * 41, None, 3, "-lead"])
def test_a_bad_name(name):
    refused("strategy name", name, RangeOrAll8)


def test_unknown_and_required_ops():
    refused(r"unknown op\(s\) iotlb_flush; known: map, unmap", "x", base="smmuv3-v5.4",
            iotlb_flush=lambda drv, dom: None)
    refused("map is required", "x", base="smmuv3-v5.4", map=None)
    refused("from scratch needs unmap, iotlb_sync", "x", kernel="v5.4", map=user.pgtable_map)
    refused("kernel= is required", "x", map=user.pgtable_map, unmap=user.pgtable_unmap,
            iotlb_sync=lambda drv, dom, gather: None)


def test_wrong_signatures():
    err = refused("wrong signature", "x", base="smmuv3-v5.4",
                  iotlb_sync=lambda drv, dom: None)
    assert "expected iotlb_sync(drv, dom, gather)" in err.strerror
    refused("must be a function", "x", base="smmuv3-v5.4", flush_iotlb_all=42)

    class Bad(il.driver_class("smmuv3-v5.4")):
        def iotlb_sync(self, dom):
            pass

    refused(r"Bad\.iotlb_sync has the wrong signature", "x", Bad)

    class BadHook(il.driver_class("smmuv3-v5.4")):
        def tlb_add_page(self, gather, iova):
            pass

    refused(r"BadHook\.tlb_add_page .*expected tlb_add_page\(drv, gather, iova, granule\)",
            "x", BadHook)


def test_an_op_the_ops_table_leaves_out():
    class StrictWithSync(il.driver_class("smmuv3-v4.14")):  # v4.14 has no iotlb_sync op
        def iotlb_sync(self, dom, gather):
            pass

    refused("defines iotlb_sync, but its domain_ops\\(\\) does not put it in the ops table",
            "x", StrictWithSync)

    class Fixed(StrictWithSync):
        def domain_ops(self):
            return dataclasses.replace(super().domain_ops(), iotlb_sync=self.iotlb_sync)

    assert il.register_strategy("x", Fixed).driver is Fixed


@pytest.mark.parametrize("kernel,match", [("v4.9", "outside the modelled range"),
                                          ("v5.x", "is not like 'v5.10'"),
                                          ("v7.0", "outside the modelled range")])
def test_an_unknown_kernel_era(kernel, match):
    err = refused(match, "x", RangeOrAll8, kernel=kernel)
    assert err.strerror.startswith("strategy 'x':")


def test_not_a_driver_class_and_other_bad_rows():
    refused("driver must be a driver class", "x", object)
    refused("driver must be a driver class", "x", "smmuv3-v5.4")
    refused("either a driver class or base", "x", RangeOrAll8, base="smmuv3-v5.4")
    refused("unknown strategy", "x", base="smmuv3-v9")
    refused("pgsize_bitmap", "x", RangeOrAll8, pgsize_bitmap=1 << 21)

    class BadParams(RangeOrAll8):
        params = ["cmdq_entries"]

    refused("BadParams.params must be a dict", "x", BadParams)


def test_code_that_fails_is_refused_at_registration():
    def boom(drv, dom, gather):
        raise ZeroDivisionError("oops")

    err = refused("smoke test .* raised ZeroDivisionError: oops", "x", base="smmuv3-v5.4",
                  iotlb_sync=boom)
    assert "iommu_map then iommu_unmap of 4K" in err.strerror
    refused("returned 0, not 4096: the unmap op must return the bytes it unmapped", "x",
            base="smmuv3-v5.4", unmap=lambda drv, dom, iova, pgsize, pgcount, gather: 0)

    class BadInit(RangeOrAll8):
        def __init__(self, dom, params):
            raise KeyError("cmdq")

    refused("building a domain raised KeyError", "x", BadInit)


def test_a_failed_replace_keeps_the_old_row():
    il.register_strategy("mine", RangeOrAll8)
    refused("smoke test", "mine", base="smmuv3-v5.4", replace=True,
            iotlb_sync=lambda drv, dom, gather: 1 / 0)
    assert STRATEGIES["mine"].driver is RangeOrAll8

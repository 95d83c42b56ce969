"""The rule that makes batching legal, in the stepper: nothing unmapped may be reused until
a covering flush completes (VFIO unpins only after ``iommu_tlb_sync``: ``vfio_sync_unpin``,
drivers/vfio/vfio_iommu_type1.c @v4.20; kernel-api-history.md §3.4).

Reuse is the stepper's ``map`` with a ``paddr``: the freed physical page mapped again for
a new owner. ``lessons_00_04.reuse_rows`` names a stale translation that still reaches it.
"""

from __future__ import annotations

import pytest

from iommu_lab.analysis.lessons_00_04 import reuse_rows, reuse_table
from iommu_lab.analysis.stepping import StepperModel

OLD, NEW, PAGE = "0x0", "0x100000", "0x40000000"   # the stepper maps 0x0 -> 0x40000000


def reused(strategy: str, complete: str | None) -> StepperModel:
    m = StepperModel(strategy)
    m.map(OLD, "4K")
    assert m.dma_read(OLD) == "walk"                 # the device caches the translation
    m.unmap_fast(OLD, "4K")
    if complete:
        getattr(m, complete)()
    assert m.map(NEW, "4K", PAGE) is not None, m.error   # the page's new owner
    return m


@pytest.mark.parametrize("strategy", ["smmuv3-v4.15", "smmuv3-v5.4"])
def test_reuse_before_the_sync_lets_the_stale_write_land_in_the_new_owner(strategy):
    m = reused(strategy, None)
    assert reuse_rows(m.domain) == [{
        "stale IOVA (old owner)": "0x0", "physical page": PAGE,
        "now mapped at (new owner)": NEW, "device write there": "lands in the new owner's data"}]
    assert m.dma_write(OLD) == "stale"
    assert m.domain.stats()["stale_hits"] == 1


@pytest.mark.parametrize("strategy", ["smmuv3-v4.15", "smmuv3-v5.4"])
@pytest.mark.parametrize("complete", ["sync", "flush_all"])
def test_the_same_sequence_is_safe_when_reuse_waits_for_the_flush(strategy, complete):
    m = reused(strategy, complete)
    assert reuse_rows(m.domain) == []
    assert list(reuse_table(m.domain)["result"]) == ["no stale translation reaches a reused page"]
    assert m.dma_write(OLD) == "fault"
    assert m.dma_read(NEW) == "walk"                 # the new owner's own mapping works
    assert m.domain.stats()["stale_hits"] == 0


def test_a_consumed_but_unsynced_tlbi_already_protects_the_page():
    """v4.15 queues the TLBI in ->unmap: once the SMMU executed it the entry is gone, even
    though the CPU only *knows* that after the next CMD_SYNC."""
    m = StepperModel("smmuv3-v4.15")
    m.map(OLD, "4K")
    m.dma_read(OLD)
    m.unmap_fast(OLD, "4K")
    m.consume(1)
    m.map(NEW, "4K", PAGE)
    assert reuse_rows(m.domain) == [] and m.dma_write(OLD) == "fault"


@pytest.mark.parametrize("dtype,after", [("DMA", "fault"), ("DMA_FQ", "stale")])
def test_lazy_mode_keeps_the_rule_for_iovas_not_for_pages(dtype, after):
    """dma-iommu strict (DMA) completes the flush inside dma_unmap; lazy (DMA_FQ) only holds
    the IOVA back until a flush-queue flush (dma-iommu.c @v5.15, kernel-api-history §5.2),
    so a page the driver frees and reuses at once is still reachable: notebook 07's window."""
    m = StepperModel("smmuv3-v5.4", type=dtype)
    m.map(OLD, "4K")
    m.dma_read(OLD)
    assert m.unmap(OLD, "4K") == 0x1000
    m.map(NEW, "4K", PAGE)
    assert m.dma_write(OLD) == after
    assert bool(reuse_rows(m.domain)) is (after == "stale")

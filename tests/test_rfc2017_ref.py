"""The reference driver of Joerg Roedel's 2017 flush interface (``rfc2017-ref``).

Contract ([PATCH 02/13], LKML 17 Aug 2017; add02cfdc9bc, L4.14 include/linux/iommu.h):
``iommu_tlb_range_add`` "add[s] a given range to the flush queue for this domain";
``iommu_tlb_sync`` "Flushes all queued ranges ... Returns when the flush is finished".
The merged v4.14 core calls ``iotlb_range_add(iova, pgsize)`` per unmapped chunk, then
``iotlb_sync`` (L4.14 drivers/iommu/iommu.c ``__iommu_unmap``). Commands go one per
doorbell (``arm_smmu_cmdq_issue_cmd``, L4.14/L4.15 arm-smmu-v3.c).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab.drivers.registry import REFERENCE_STRATEGIES, STRATEGIES, get_strategy
from iommu_lab.errors import EINVAL, IommuError

RW = il.IOMMU_READ | il.IOMMU_WRITE
PAGE = 0x1000
KEYS = ("inv_cmds", "inv_all_cmds", "sync_cmds", "doorbells", "stale_hits")


def counts(dom) -> dict[str, int]:
    s = dom.stats()
    return {k: s[k] for k in KEYS}


def touched(api: str = "rfc-2017", pages: int = 24):
    dom = il.iommu_domain_alloc("rfc2017-ref", api=api)
    il.iommu_map(dom, 0, 0x4000_0000, pages * PAGE, RW)
    assert [il.dma_access(dom, i * PAGE) for i in range(pages)] == ["walk"] * pages
    return dom


def test_range_add_then_sync_invalidates_exactly_the_queued_pages():
    dom = touched()
    for at in (0x0, 0x8000, 0x10000):
        il.iommu_unmap(dom, at, 0x8000)
    assert counts(dom)["inv_cmds"] == 0            # the 2017 iommu_unmap issues nothing
    for at in (0x0, 0x8000, 0x10000):
        il.iommu_tlb_range_add(dom, at, 0x8000)
    assert dom.driver.queued_ranges() == [(0x0, 0x8000), (0x8000, 0x8000), (0x10000, 0x8000)]
    il.iommu_tlb_sync(dom)
    # 24 NH_VA (one per 4K page) + 1 CMD_SYNC, each its own doorbell
    assert counts(dom) == {"inv_cmds": 24, "inv_all_cmds": 0, "sync_cmds": 1,
                           "doorbells": 25, "stale_hits": 0}
    assert dom.driver.queued_ranges() == []
    assert {il.dma_access(dom, i * PAGE) for i in range(24)} == {"fault"}


def test_a_forgotten_range_add_is_a_stale_hit():
    dom = touched()
    il.iommu_unmap(dom, 0x0, 0x18000)
    il.iommu_tlb_range_add(dom, 0x0, 0x8000)       # the caller forgets 0x8000..0x17fff
    il.iommu_tlb_sync(dom)
    assert counts(dom)["inv_cmds"] == 8 and counts(dom)["sync_cmds"] == 1
    assert il.dma_access(dom, 0x4000) == "fault"
    assert il.dma_access(dom, 0x8000) == "stale"
    assert il.dma_access(dom, 0x17000, write=True) == "stale"
    assert counts(dom)["stale_hits"] == 2


def test_merged_unmap_fast_without_range_add_is_stale_too():
    """v4.14 merged API: iommu_unmap_fast skips range_add and sync; a caller that syncs
    without adding the range (as every v4.14-v5.3 caller could, since no merged driver
    needed it) leaves the entries."""
    dom = touched("kernel", 4)
    il.iommu_unmap_fast(dom, 0x0, 0x4000)
    il.iommu_iotlb_sync(dom)
    assert il.dma_access(dom, 0x0) == "stale"
    assert counts(dom)["inv_cmds"] == 0 and counts(dom)["sync_cmds"] == 1


def test_merged_v4_14_unmap_adds_each_chunk_and_syncs_once():
    dom = touched("kernel", 8)
    assert il.iommu_unmap(dom, 0x0, 0x8000) == 0x8000
    assert counts(dom) == {"inv_cmds": 8, "inv_all_cmds": 0, "sync_cmds": 1,
                           "doorbells": 9, "stale_hits": 0}
    assert il.dma_access(dom, 0x7000) == "fault"


def test_a_2m_block_is_invalidated_page_by_page():
    """The callback does not know the page size ([PATCH 01/13], 2019): 512 TLBIs."""
    dom = il.iommu_domain_alloc("rfc2017-ref")
    il.iommu_map(dom, 0x20_0000, 0x4020_0000, 0x20_0000, RW)
    il.dma_access(dom, 0x20_0000)
    il.iommu_unmap(dom, 0x20_0000, 0x20_0000)
    assert counts(dom)["inv_cmds"] == 512 and counts(dom)["sync_cmds"] == 1
    assert il.dma_access(dom, 0x20_0000) == "fault"


def test_flush_all_drops_the_context_and_the_queue():
    dom = touched(pages=8)
    il.iommu_unmap(dom, 0x0, 0x8000)
    il.iommu_tlb_range_add(dom, 0x0, 0x8000)
    il.iommu_flush_tlb_all(dom)
    assert counts(dom) == {"inv_cmds": 1, "inv_all_cmds": 1, "sync_cmds": 1,
                           "doorbells": 2, "stale_hits": 0}
    assert dom.driver.queued_ranges() == []
    il.iommu_tlb_sync(dom)                          # nothing queued: a lone CMD_SYNC
    assert counts(dom)["inv_cmds"] == 1 and counts(dom)["sync_cmds"] == 2


def test_the_reference_row_is_allocatable_but_not_a_shipped_strategy():
    row = get_strategy("rfc2017-ref")
    assert row is REFERENCE_STRATEGIES["rfc2017-ref"] and row.kernel == "v4.14"
    assert "not kernel code" in row.hardware and "PATCH 02/13" in row.source
    assert "rfc2017-ref" not in STRATEGIES
    assert "rfc2017-ref" not in set(il.strategies()["name"])
    with pytest.raises(IommuError) as exc:
        get_strategy("rfc2017-nope")
    assert exc.value.errno == EINVAL


ranges = st.lists(st.tuples(st.integers(0, 15), st.integers(1, 4)), max_size=6)


@settings(max_examples=40, deadline=None)
@given(ranges)
def test_sync_matches_a_naive_set_of_pages(added):
    """Naive model: after unmapping 16 cached pages and a sync, a page faults iff some
    added range covered it, else it is stale; inv_cmds is the pages added (no merging)."""
    dom = touched(pages=16)
    il.iommu_unmap(dom, 0x0, 16 * PAGE)
    covered: set[int] = set()
    for first, n in added:
        il.iommu_tlb_range_add(dom, first * PAGE, n * PAGE)
        covered |= set(range(first, first + n))
    il.iommu_tlb_sync(dom)
    assert counts(dom)["inv_cmds"] == sum(n for _, n in added)
    assert counts(dom)["sync_cmds"] == 1
    for p in range(16):
        assert il.dma_access(dom, p * PAGE) == ("fault" if p in covered else "stale"), p


def test_only_the_reference_driver_needs_range_add():
    """Merged drivers never relied on ->iotlb_range_add (none in SMMUv3; AMD's was empty,
    v4.20-v5.3; removed in v5.4, Message-Id 20190814175634.21081-2-will@kernel.org): an
    unmap_fast + sync without range_add is safe on them, stale on the reference driver."""
    from iommu_lab.analysis.lessons_00_04 import forgot_range_add
    rows = {r["strategy"]: r for r in forgot_range_add(
        ["rfc2017-ref", "smmuv3-v4.15", "amd-flush-all", "smmuv3-v5.4"])}
    assert rows["rfc2017-ref"] == {"strategy": "rfc2017-ref", "kernel": "v4.14",
                                   "->iotlb_range_add": "yes", "TLBIs": 0, "syncs": 1,
                                   "device reads afterwards": "stale"}
    # v4.15: 4 NH_VA queued in ->unmap; v5.4: 4 from the gather; AMD: 1 whole-domain flush
    assert [(rows[s]["TLBIs"], rows[s]["device reads afterwards"], rows[s]["->iotlb_range_add"])
            for s in ("smmuv3-v4.15", "smmuv3-v5.4", "amd-flush-all")] == [
        (4, "fault", "none"), (4, "fault", "none"), (1, "fault", "none")]


def test_driver_lacks_replays_the_forgotten_range_on_the_reference_driver():
    from iommu_lab.exercises import driver_lacks
    p = next(p for p in map(driver_lacks.make_problem, range(200)) if "taken literally" in str(p))
    text = driver_lacks.explain(p)
    assert "`rfc2017-ref`" in text and "not kernel code" in text
    assert "returns `fault`; without it the sync writes `CMD_SYNC`," in text
    assert text.count("returns `stale`") == 1

"""DMA API strict vs lazy (dma-iommu.c / iova.c flush queue, kernel-api-history §5.2)."""

from __future__ import annotations

import pytest

import iommu_lab as il
from iommu_lab.core.dma_iommu import IOVA_FQ_SIZE, fq_advance

MS = 1_000_000
RW = il.IOMMU_READ | il.IOMMU_WRITE


def lazy(strategy: str = "smmuv3-v5.4", **params):
    return il.iommu_domain_alloc(strategy, type="DMA_FQ", **params)


def test_strict_dma_unmap_leaves_no_stale_entry():
    dom = il.iommu_domain_alloc("smmuv3-v5.4", type="DMA")
    iova = il.iommu_dma_map(dom, 0x8000_0000, 4096, RW)
    assert il.dma_access(dom, iova) == "walk"
    il.iommu_dma_unmap(dom, iova, 4096)
    assert il.dma_access(dom, iova) == "fault"
    assert dom.stats()["stale_hits"] == 0


def test_lazy_window_opens_and_the_timer_closes_it():
    dom = lazy()
    iova = il.iommu_dma_map(dom, 0x8000_0000, 4096, RW)
    il.dma_access(dom, iova, write=True)
    il.iommu_dma_unmap(dom, iova, 4096)
    assert dom.stats()["inv_cmds"] == 0  # queued: no invalidation yet
    assert il.dma_access(dom, iova, write=True) == "stale"  # DMA into freed memory
    fq_advance(dom, 5 * MS)
    assert il.dma_access(dom, iova) == "stale"
    fq_advance(dom, 5 * MS)  # IOVA_FQ_TIMEOUT = 10 ms after the first enqueue
    assert il.dma_access(dom, iova) == "fault"
    st = dom.stats()
    assert st["fq_timer_flushes"] == 1 and st["inv_all_cmds"] == 1
    assert st["stale_hits"] == 2 and st["max_stale_ns"] <= 10 * MS


def test_ring_full_flush_after_255_entries():
    # fq_full: (tail + 1) % IOVA_FQ_SIZE == head -> 255 entries fit, the 256th flushes.
    dom = lazy()
    iovas = [il.iommu_dma_map(dom, 0x1_0000_0000 + i * 0x2000, 4096, RW)
             for i in range(IOVA_FQ_SIZE)]
    il.dma_access(dom, iovas[0])
    for iova in iovas[:IOVA_FQ_SIZE - 1]:
        il.iommu_dma_unmap(dom, iova, 4096)
    assert dom.stats()["fq_flushes"] == 0 and il.dma_access(dom, iovas[0]) == "stale"
    il.iommu_dma_unmap(dom, iovas[-1], 4096)
    assert dom.stats()["fq_flushes"] == 1
    assert il.dma_access(dom, iovas[0]) == "fault"


def test_iova_reused_only_after_a_covering_flush():
    dom = lazy()
    a = il.iommu_dma_map(dom, 0x8000_0000, 4096, RW)
    il.iommu_dma_unmap(dom, a, 4096)
    b = il.iommu_dma_map(dom, 0x9000_0000, 4096, RW)
    assert b != a  # a is still on the flush queue
    fq_advance(dom, 10 * MS)
    il.iommu_dma_unmap(dom, b, 4096)
    c = il.iommu_dma_map(dom, 0xA000_0000, 4096, RW)
    assert c == a  # freed by the flush, handed out again (most recent first)


def test_strict_reuses_at_once():
    dom = il.iommu_domain_alloc("smmuv3-v5.4", type="DMA")
    a = il.iommu_dma_map(dom, 0x8000_0000, 4096, RW)
    il.iommu_dma_unmap(dom, a, 4096)
    assert il.iommu_dma_map(dom, 0x9000_0000, 4096, RW) == a


@pytest.mark.parametrize("strategy", ["smmuv3-v4.14", "smmuv2", "virtio-iommu"])
def test_eras_without_a_flush_queue_fall_back_to_strict(strategy):
    dom = lazy(strategy)
    assert dom.type == "DMA" and dom.fq is None and dom.notes


def test_np_cache_forces_strict():
    dom = lazy("amd-range", np_cache=True)
    assert dom.type == "DMA" and "downgraded" in dom.notes[0]


def test_stale_hits_never_after_the_covering_flush():
    """Random interleavings: every stale hit happens before the flush covering its entry."""
    import random

    rng = random.Random(7)
    dom = lazy()
    live: dict[int, int] = {}
    unmapped_at: dict[int, int] = {}
    for _ in range(3000):
        r = rng.random()
        if r < 0.35 or not live:
            iova = il.iommu_dma_map(dom, rng.randrange(1 << 20) << 12, 4096, RW)
            live[iova] = 1
        elif r < 0.6:
            iova = rng.choice(list(live))
            il.iommu_dma_unmap(dom, iova, 4096)
            del live[iova]
            unmapped_at[iova] = dom.clock.now
        elif r < 0.95:
            iova = rng.choice(list(live) + list(unmapped_at))
            flushes = dom.fq.fq_flush_finish_cnt
            res = il.dma_access(dom, iova)
            if res == "stale":
                assert iova in unmapped_at and iova not in live
                assert dom.clock.now - unmapped_at[iova] <= 10 * MS + 1
                assert dom.fq.fq_flush_finish_cnt == flushes
        else:
            fq_advance(dom, rng.randrange(3 * MS))
    assert dom.stats()["stale_hits"] > 0
    assert dom.stats()["max_stale_ns"] <= 10 * MS

"""DMA API strict vs lazy (dma-iommu.c / iova.c flush queue, kernel-api-history §5.2)."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab.compact import Shift
from iommu_lab.core.dma_iommu import IOVA_FQ_SIZE, FlushQueue, FqEntry, fq_advance

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


# ---- the flush queue's overlap index (FlushQueue.index) against a scan of every entry ----
SIZES = (0x1000, 0x2000, 0x10000, 0x200000, 0x400000)
IOVAS = st.integers(0, 0x3ff).map(lambda k: k << 14)     # 16 MiB of IOVA: chunks shared


def naive_overlaps(fq: FlushQueue, iova: int, size: int) -> bool:
    """What the index answers, by looking at every queued entry."""
    return any(e.iova < iova + size and iova < e.iova + e.size for e in fq.all_entries())


def chunks(fq: FlushQueue) -> dict[int, list[FqEntry]]:
    """The index, each chunk's entries sorted (their order across CPUs may differ)."""
    return {c: sorted(chunk) for c, chunk in fq.index.items()}


steps = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(0, 1), IOVAS, st.sampled_from(SIZES)),
    st.tuples(st.just("pop"), st.integers(0, 1)),
    st.tuples(st.just("shift"), st.integers(-4, 4).map(lambda k: k << 16)),
    st.tuples(st.just("ask"), IOVAS, st.sampled_from(SIZES))), max_size=120)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_overlap_index_answers_as_a_scan_of_every_entry(steps):
    fq = FlushQueue(ncpus=2)
    n = 0
    for step in steps:
        if step[0] == "push":
            _, cpu, iova, size = step
            fq.push(fq.rings[cpu], FqEntry(iova + (1 << 30), size, 0, n))
            n += 1
        elif step[0] == "pop" and fq.rings[step[1]]:
            fq.pop(fq.rings[step[1]])
        elif step[0] == "shift":      # a compact run moves every queued entry along
            fq.repeat((fq.fq_flush_start_cnt, None), 1, Shift(10, step[1], 0))
        elif step[0] == "ask":
            _, iova, size = step
            iova += 1 << 30
            assert fq.overlaps(iova, size) == naive_overlaps(fq, iova, size)
        assert chunks(fq) == chunks(FlushQueue(rings=fq.rings))   # as if built afresh
    assert sum(map(len, fq.rings)) == len({id(e) for q in fq.index.values() for e in q})


def test_a_lazy_map_waits_for_the_flush_only_where_a_queued_iova_overlaps():
    """``_wait_for_reuse`` (the model's guard for explicit IOVAs, dma_iommu.py): a map over
    a queued 2 MiB region flushes first; one just past it, in the next index chunk, does
    not."""
    dom = lazy()
    base = 0x4000_0000
    iova = il.iommu_dma_map(dom, base, 0x200000, RW, iova=base)
    il.iommu_dma_unmap(dom, iova, 0x200000)
    assert dom.fq.overlaps(base + 0x1ff000, 0x1000) and not dom.fq.overlaps(base + 0x200000, 0x1000)
    il.iommu_dma_map(dom, base + 0x800000, 0x1000, RW, iova=base + 0x200000)
    assert dom.stats()["fq_flushes"] == 0
    il.iommu_dma_map(dom, base + 0x900000, 0x1000, RW, iova=base + 0x1ff000)
    assert dom.stats()["fq_flushes"] == 1 and not dom.fq.index
    assert isinstance(dom.fq.rings[0], deque) and not dom.fq.rings[0]

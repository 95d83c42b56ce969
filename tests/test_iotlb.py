"""The IOTLB + walk cache (hw/iotlb.py) and the device's view of it (hw/iommu_hw.py).

DESIGN §3 (IOTLB, device), §8 ("after a strict unmap returns, no IOTLB entry translates the
unmapped range"); kernel-api-history.md §3.1–3.2 (the 2017 ``iommu_unmap`` that never
flushes), §5.1 (caching of non-present entries → ``iotlb_sync_map``).
"""

from __future__ import annotations

import pytest

import iommu_lab as il
from iommu_lab.errors import EINVAL, IommuError
from iommu_lab.hw.iotlb import Iotlb, TlbEntry
from iommu_lab.units import SZ_2M, SZ_4K

RW = il.IOMMU_READ | il.IOMMU_WRITE
PG = (SZ_4K, SZ_2M)


def entry(iova: int, asid: int = 1, pgsize: int = SZ_4K) -> TlbEntry:
    return TlbEntry(asid, iova, pgsize, 0x8000_0000 + iova, True)


def keys(tlb: Iotlb) -> list[int]:
    return [e.iova for e in tlb.snapshot()]


# ---- capacity and replacement -------------------------------------------------------

@pytest.mark.parametrize("replacement", ["lru", "fifo", "random"])
def test_capacity_is_never_exceeded(replacement: str) -> None:
    tlb = Iotlb(capacity=4, replacement=replacement, seed=1)
    for i in range(20):
        tlb.fill(entry(i * SZ_4K))
        assert len(tlb.snapshot()) == min(i + 1, 4)
        assert tlb.count(1) == min(i + 1, 4)
    assert tlb.lookup(1, 19 * SZ_4K, PG) is not None  # the newest always survives


def test_lru_evicts_least_recently_used() -> None:
    tlb = Iotlb(capacity=3, replacement="lru")
    for i in range(3):
        tlb.fill(entry(i * SZ_4K))
    assert tlb.lookup(1, 0x0, PG) is not None  # 0 becomes most recent
    tlb.fill(entry(3 * SZ_4K))
    assert keys(tlb) == [2 * SZ_4K, 0x0, 3 * SZ_4K]  # 1 was the LRU victim


def test_fifo_ignores_use() -> None:
    tlb = Iotlb(capacity=3, replacement="fifo")
    for i in range(3):
        tlb.fill(entry(i * SZ_4K))
    assert tlb.lookup(1, 0x0, PG) is not None  # a hit does not reorder FIFO
    tlb.fill(entry(3 * SZ_4K))
    assert keys(tlb) == [SZ_4K, 2 * SZ_4K, 3 * SZ_4K]  # the oldest (0) went


def test_random_replacement_is_seeded() -> None:
    """Every random choice takes a seed (DESIGN §3): same seed, same victims."""
    def run(seed: int) -> list[int]:
        tlb = Iotlb(capacity=8, replacement="random", seed=seed)
        for i in range(64):
            tlb.fill(entry(i * SZ_4K))
        return keys(tlb)

    a = run(7)
    assert a == run(7)
    assert any(run(s) != a for s in range(8, 16))
    assert a[-1] == 63 * SZ_4K and len(set(a)) == 8


def test_refill_of_present_key_keeps_count() -> None:
    """Re-filling a present translation replaces it: one entry, per-ASID count 1."""
    tlb = Iotlb(capacity=4)
    tlb.fill(entry(0x1000))
    tlb.fill(entry(0x1000))
    assert len(tlb.snapshot()) == 1 and tlb.count(1) == 1
    tlb.invalidate_asid(1)
    assert tlb.count(1) == 0


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"walk_cache": -1},
                                    {"replacement": "mru"}])
def test_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(IommuError) as exc:
        Iotlb(**kwargs)
    assert exc.value.errno == EINVAL


def test_lookup_by_page_size_and_asid() -> None:
    tlb = Iotlb()
    tlb.fill(entry(0x200000, pgsize=SZ_2M))
    assert tlb.lookup(1, 0x3ff123, PG).iova == 0x200000  # any address inside the block
    assert tlb.lookup(1, 0x400000, PG) is None
    assert tlb.lookup(2, 0x200000, PG) is None  # tagged by ASID
    assert tlb.lookup(1, 0x200000, (SZ_4K,)) is None  # only the sizes asked for


# ---- invalidation ----------------------------------------------------------------------

def test_invalidate_range_leaf_vs_walk_cache() -> None:
    """Leaf invalidation (SMMUv3 ``Leaf=1``, VT-d ``IH=1``) keeps walk-cache entries;
    non-leaf (table freed: ``tlb_flush_walk``) drops them too (§4.3)."""
    tlb = Iotlb(walk_cache=4)
    for i in range(4):
        tlb.fill(entry(i * SZ_4K))
    tlb.fill(entry(0x0, asid=2))
    tlb.walk_fill(1, 3, 0)
    tlb.walk_fill(2, 3, 0)
    assert tlb.invalidate_range(1, SZ_4K, 3 * SZ_4K, leaf=True) == 2
    assert keys(tlb) == [0x0, 3 * SZ_4K, 0x0]
    assert tlb.walk_hit(1, 3, 0)
    assert tlb.invalidate_range(1, 0x0, SZ_4K, leaf=False) == 1
    assert not tlb.walk_hit(1, 3, 0)
    assert tlb.walk_hit(2, 3, 0)  # another ASID's walk cache is untouched
    assert tlb.lookup(2, 0x0, PG) is not None


def test_invalidate_range_hits_overlapping_blocks() -> None:
    """A 4K invalidation inside a cached 2M block drops the block entry."""
    tlb = Iotlb()
    tlb.fill(entry(0x200000, pgsize=SZ_2M))
    tlb.fill(entry(0x400000))
    assert tlb.invalidate_range(1, 0x201000, 0x202000) == 1
    assert keys(tlb) == [0x400000]


def test_invalidate_asid() -> None:
    tlb = Iotlb()
    for i in range(3):
        tlb.fill(entry(i * SZ_4K, asid=1))
    tlb.fill(entry(0x0, asid=2))
    tlb.walk_fill(1, 2, 0)
    assert tlb.invalidate_asid(1) == 3
    assert [e.asid for e in tlb.snapshot()] == [2]
    assert tlb.count(1) == 0 and tlb.count(2) == 1
    assert not tlb.walk_hit(1, 2, 0)


def test_walk_cache_capacity() -> None:
    tlb = Iotlb(walk_cache=2)
    for prefix in range(3):
        tlb.walk_fill(1, 3, prefix)
    assert [tlb.walk_hit(1, 3, p) for p in range(3)] == [False, True, True]
    none = Iotlb(walk_cache=0)
    none.walk_fill(1, 3, 0)
    assert not none.walk_hit(1, 3, 0)


def test_over_invalidation_and_refill_counting() -> None:
    """Over-invalidation (DESIGN §4): only *valid* entries count as victims; re-filling a
    victim reports a refill miss. Stale (unmapped) and negative entries are not victims."""
    tlb = Iotlb(cache_non_present=True)
    tlb.fill(entry(0x1000))
    tlb.fill(entry(0x2000))
    tlb.fill(TlbEntry(1, 0x3000, SZ_4K, 0, False, negative=True))
    tlb.mark_stale(1, 0x2000, 0x3000, now=5)
    assert tlb.invalidate_range(1, 0x0, 0x10000) == 1  # only 0x1000 was valid
    assert not tlb.fill(entry(0x2000))  # was stale: not a refill
    assert tlb.fill(entry(0x1000))  # was valid: a refill miss
    assert not tlb.fill(entry(0x1000))  # only once


def test_stale_marking_is_per_range_and_asid() -> None:
    tlb = Iotlb()
    tlb.fill(entry(0x1000))
    tlb.fill(entry(0x2000))
    tlb.fill(entry(0x1000, asid=2))
    tlb.mark_stale(1, 0x1000, 0x2000, now=42)
    got = {(e.asid, e.iova): e.stale_since for e in tlb.snapshot()}
    assert got == {(1, 0x1000): 42, (1, 0x2000): None, (2, 0x1000): None}


# ---- through a domain (device DMA) ----------------------------------------------------

def test_refill_misses_through_flush_all() -> None:
    """AMD ≤ v5.14: every ``iotlb_sync`` is a whole-domain flush (L4.20 amd_iommu.c
    ``.iotlb_sync = amd_iommu_flush_iotlb_all``): unmapping one page drops the
    neighbours' valid entries, and touching them again costs refill misses."""
    dom = il.iommu_domain_alloc("amd-flush-all")
    il.iommu_map(dom, 0x10000, 0x10000, 4 * SZ_4K, RW)
    for k in range(4):
        assert il.dma_access(dom, 0x10000 + k * SZ_4K) == "walk"
    assert il.iommu_unmap(dom, 0x13000, SZ_4K) == SZ_4K
    st = dom.stats()
    assert st["over_invalidated"] == 3
    for k in range(3):
        assert il.dma_access(dom, 0x10000 + k * SZ_4K) == "walk"
    assert dom.stats()["refill_misses"] == 3
    assert il.dma_access(dom, 0x13000) == "fault"


def test_range_invalidation_has_no_victims() -> None:
    """SMMUv3 v5.4 invalidates exactly the unmapped pages: no over-invalidation."""
    dom = il.iommu_domain_alloc("smmuv3-v5.4")
    il.iommu_map(dom, 0x10000, 0x10000, 4 * SZ_4K, RW)
    for k in range(4):
        il.dma_access(dom, 0x10000 + k * SZ_4K)
    il.iommu_unmap(dom, 0x13000, SZ_4K)
    assert dom.stats()["over_invalidated"] == 0
    assert il.dma_access(dom, 0x10000) == "hit"


def test_hit_walk_stale_fault_sequence() -> None:
    """map → "walk", again → "hit"; the 2017 ``iommu_unmap`` (no flush, §3.1) leaves the
    IOTLB entry → "stale" (DMA into memory the OS thinks is free); then
    ``iommu_flush_tlb_all`` → "fault"."""
    dom = il.iommu_domain_alloc("smmuv3-v5.4", api="rfc-2017")
    il.iommu_map(dom, 0x1000, 0x5000, SZ_4K, RW)
    assert il.dma_access(dom, 0x1000) == "walk"
    assert il.dma_access(dom, 0x1ff8, write=True) == "hit"
    assert il.iommu_unmap(dom, 0x1000, SZ_4K) == SZ_4K
    assert il.iommu_iova_to_phys(dom, 0x1000) == 0
    assert il.dma_access(dom, 0x1000) == "stale"
    st = dom.stats()
    assert st["stale_hits"] == 1 and st["max_stale_ns"] > 0
    il.iommu_flush_tlb_all(dom)
    assert il.dma_access(dom, 0x1000) == "fault"
    st = dom.stats()
    assert st["stale_hits"] == 1 and st["faults"] == 1
    assert (st["iotlb_hits"], st["iotlb_misses"]) == (2, 2)


def test_remap_elsewhere_is_stale_until_flushed() -> None:
    """A stale entry also serves the *old* paddr after the IOVA is reused for new memory."""
    dom = il.iommu_domain_alloc("smmuv3-v5.4", api="rfc-2017")
    il.iommu_map(dom, 0x1000, 0x5000, SZ_4K, RW)
    il.dma_access(dom, 0x1000)
    il.iommu_unmap(dom, 0x1000, SZ_4K)
    il.iommu_map(dom, 0x1000, 0x9000, SZ_4K, RW)
    assert il.dma_access(dom, 0x1000) == "stale"
    il.iommu_tlb_sync(dom)  # the pending range is now invalidated
    assert il.dma_access(dom, 0x1000) == "walk"
    assert il.dma_access(dom, 0x1000) == "hit"


def test_write_to_read_only_faults() -> None:
    dom = il.iommu_domain_alloc("smmuv3-v5.4")
    il.iommu_map(dom, 0x1000, 0x5000, SZ_4K, il.IOMMU_READ)
    assert il.dma_access(dom, 0x1000, write=True) == "fault"  # walk: not writable
    assert il.dma_access(dom, 0x1000) == "hit"
    assert il.dma_access(dom, 0x1000, write=True) == "fault"  # hit: not writable


def test_negative_entries_need_sync_map() -> None:
    """Hardware that caches non-present entries (Intel caching mode, AMD NpCache, §5.1):
    without a map-side flush a new mapping stays invisible; with ``iotlb_sync_map``
    (``amd_iommu_iotlb_sync_map`` → ``domain_flush_np_cache``, L5.15) it is seen."""
    plain = il.iommu_domain_alloc("smmuv3-v5.4", cache_non_present=True)
    assert il.dma_access(plain, 0x1000) == "fault"
    assert [e.negative for e in plain.hw.iotlb.snapshot()] == [True]
    il.iommu_map(plain, 0x1000, 0x5000, SZ_4K, RW)
    assert il.dma_access(plain, 0x1000) == "fault"  # cached "not present" hides it
    assert plain.stats()["stale_faults"] == 1
    np_cache = il.iommu_domain_alloc("amd-range", np_cache=True)
    assert il.dma_access(np_cache, 0x1000) == "fault"
    il.iommu_map(np_cache, 0x1000, 0x5000, SZ_4K, RW)
    assert il.dma_access(np_cache, 0x1000) == "walk"
    assert np_cache.stats()["stale_faults"] == 0
    off = il.iommu_domain_alloc("smmuv3-v5.4")  # default: nothing negative cached
    il.dma_access(off, 0x1000)
    assert off.hw.iotlb.snapshot() == []


# ---- the strict invariant, every strategy -----------------------------------------------

def translates(dom: il.IommuDomain, start: int, end: int) -> list:
    return [e for e in dom.hw.iotlb.snapshot()
            if e.asid == dom.asid and not e.negative and e.iova < end and start < e.iova + e.pgsize]


LAYOUTS = {
    # name: (list of (iova, paddr, size) maps, unmap range)
    "64-pages": ([(0x10_0000 + k * SZ_4K, 0x8000_0000 + 2 * k * SZ_4K, SZ_4K)
                  for k in range(64)], (0x10_0000, 64 * SZ_4K)),
    "one-run": ([(0x1f_0000, 0x4000_0000, 64 * SZ_4K)], (0x1f_0000, 64 * SZ_4K)),
    "2M-block+pages": ([(0x20_0000, 0x4000_0000, SZ_2M),
                        (0x40_0000, 0x5000_0000, 62 * SZ_4K)], (0x20_0000, SZ_2M + 62 * SZ_4K)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(il.STRATEGIES))
def test_strict_unmap_leaves_no_translation(name: str, layout: str) -> None:
    """DESIGN §8: after a strict ``iommu_unmap`` returns, no IOTLB entry translates the
    unmapped range, and the device faults there."""
    maps, (start, size) = LAYOUTS[layout]
    dom = il.iommu_domain_alloc(name)
    for iova, paddr, sz in maps:
        il.iommu_map(dom, iova, paddr, sz, RW)
    touched = [start + off for off in range(0, size, SZ_4K)][:64]
    touched += [start + size - SZ_4K]
    for iova in touched:
        assert il.dma_access(dom, iova) in ("walk", "hit")
    assert translates(dom, start, start + size)
    assert il.iommu_unmap(dom, start, size) == size
    assert translates(dom, start, start + size) == []
    for iova in touched:
        assert il.dma_access(dom, iova) == "fault"
    assert dom.stats()["stale_hits"] == 0

"""``struct iommu_iotlb_gather`` merge rules per era (kernel-api-history.md §4.1, §4.2, §4.7).

- v5.4 (L5.4 include/linux/iommu.h): ``end`` exclusive; sync early if
  ``pgsize != size || end < g->start || start > g->end``.
- v5.10 (L5.10): ``end`` inclusive; ``end + 1 < g->start || start > g->end + 1``.
- v5.15 (L5.15 … L6.18): ``iommu_iotlb_gather_is_disjoint`` / ``add_range`` helpers.

The sync callback stands for ``iommu_tlb_sync`` / ``iommu_iotlb_sync``: the driver's
``->iotlb_sync`` (recorded here) followed by ``iommu_iotlb_gather_init`` (§4.1).
"""

from __future__ import annotations

import pytest

import iommu_lab as il
from iommu_lab.core.gather import (
    GATHER_V5_4,
    GATHER_V5_10,
    GATHER_V5_15,
    ULONG_MAX,
    IommuIotlbGather,
    iommu_iotlb_gather_init,
)
from iommu_lab.units import SZ_2M, SZ_4K

RULES = {r.era: r for r in (GATHER_V5_4, GATHER_V5_10, GATHER_V5_15)}
ERAS = tuple(RULES)


class FakeSync:
    """Records (start, end, pgsize) at every sync, then re-inits the gather."""

    def __init__(self) -> None:
        self.synced: list[tuple[int, int, int]] = []

    def __call__(self, g: IommuIotlbGather) -> None:
        self.synced.append((g.start, g.end, g.pgsize))
        g.init()


def add(g: IommuIotlbGather, sync: FakeSync, era: str, iova: int, size: int = SZ_4K) -> bool:
    return RULES[era].add_page(g, iova, size, sync)


def end(era: str, last_byte: int) -> int:
    """The ``end`` field for a range whose last byte is ``last_byte``."""
    return last_byte + 1 if era == "v5.4" else last_byte


def test_init_state() -> None:
    """``iommu_iotlb_gather_init``: ``{ .start = ULONG_MAX }`` — end 0, pgsize 0 (L5.4);
    ``queued`` false and an empty freelist (L5.15)."""
    g = IommuIotlbGather(start=0x1000, end=0x2000, pgsize=SZ_4K, freelist=[(1, 2)], queued=True)
    iommu_iotlb_gather_init(g)
    assert (g.start, g.end, g.pgsize, g.freelist, g.queued) == (ULONG_MAX, 0, 0, [], False)
    assert g.empty
    assert IommuIotlbGather() == g


@pytest.mark.parametrize("era", ERAS)
def test_worked_example(era: str) -> None:
    """§4.2 worked example: add 0x1000, 0x2000 → [0x1000, 0x2fff]; add 0x5000 → disjoint →
    sync; a 2 MiB page at 0x200000 → pgsize differs → sync again. Same syncs in all eras;
    only ``end``'s convention differs (exclusive in v5.4)."""
    g, sync = IommuIotlbGather(), FakeSync()
    assert not add(g, sync, era, 0x1000)
    assert not add(g, sync, era, 0x2000)
    assert (g.start, g.end, g.pgsize) == (0x1000, end(era, 0x2fff), SZ_4K)
    assert RULES[era].span(g) == (0x1000, 0x2000)
    assert add(g, sync, era, 0x5000)
    assert sync.synced == [(0x1000, end(era, 0x2fff), SZ_4K)]
    assert (g.start, g.end, g.pgsize) == (0x5000, end(era, 0x5fff), SZ_4K)
    assert add(g, sync, era, 0x200000, SZ_2M)
    assert sync.synced[1:] == [(0x5000, end(era, 0x5fff), SZ_4K)]
    assert (g.start, g.end, g.pgsize) == (0x200000, end(era, 0x3fffff), SZ_2M)
    assert len(sync.synced) == 2


@pytest.mark.parametrize("era", ERAS)
def test_adjacent_pages_merge_both_sides(era: str) -> None:
    """"Adjacent pages (``end == gather->start`` or ``start == gather->end``) merge" (v5.4)
    and the inclusive forms ``end + 1 == start`` / ``start == end + 1`` (v5.10, v5.15)."""
    g, sync = IommuIotlbGather(), FakeSync()
    for iova in (0x5000, 0x6000, 0x4000, 0x7000, 0x3000):
        assert not add(g, sync, era, iova)
    assert sync.synced == []
    assert (g.start, g.end) == (0x3000, end(era, 0x7fff))


@pytest.mark.parametrize("era", ERAS)
def test_one_page_gap_syncs(era: str) -> None:
    """A gap of one page on either side is disjoint: sync, restart at the new page."""
    for first, second in ((0x5000, 0x7000), (0x5000, 0x3000)):
        g, sync = IommuIotlbGather(), FakeSync()
        add(g, sync, era, first)
        assert add(g, sync, era, second)
        assert sync.synced == [(first, end(era, first + 0xfff), SZ_4K)]
        assert (g.start, g.end) == (second, end(era, second + 0xfff))


@pytest.mark.parametrize("era", ERAS)
def test_overlapping_page_merges(era: str) -> None:
    """Adding a page already inside the range is not disjoint (no sync, range unchanged)."""
    g, sync = IommuIotlbGather(), FakeSync()
    add(g, sync, era, 0x1000)
    add(g, sync, era, 0x2000)
    assert not add(g, sync, era, 0x1000)
    assert sync.synced == [] and (g.start, g.end) == (0x1000, end(era, 0x2fff))


@pytest.mark.parametrize("era", ERAS)
def test_first_page_never_syncs(era: str) -> None:
    """v5.4/v5.10: ``if (gather->pgsize) iommu_tlb_sync()`` — nothing to sync on an empty
    gather; v5.15: ``g->pgsize &&`` and ``is_disjoint`` is false while ``g->end == 0``."""
    for iova, size in ((0x0, SZ_4K), (0x7000, SZ_4K), (0x200000, SZ_2M)):
        g, sync = IommuIotlbGather(), FakeSync()
        assert not add(g, sync, era, iova, size)
        assert sync.synced == [] and g.pgsize == size


@pytest.mark.parametrize("era", ERAS)
def test_pgsize_change_syncs_even_when_adjacent(era: str) -> None:
    """"…or is mapped at a different granularity, then sync" — even for a touching range."""
    g, sync = IommuIotlbGather(), FakeSync()
    add(g, sync, era, 0x1ff000)
    assert add(g, sync, era, 0x200000, SZ_2M)
    assert sync.synced == [(0x1ff000, end(era, 0x1fffff), SZ_4K)]
    assert add(g, sync, era, 0x400000)  # and back to 4K
    assert len(sync.synced) == 2


def test_v5_4_end_is_exclusive_v5_10_inclusive() -> None:
    """§4.7: ``end`` exclusive in L5.4, inclusive from L5.10; same page, same start."""
    for era, want in (("v5.4", 0x2000), ("v5.10", 0x1fff), ("v5.15", 0x1fff)):
        g = IommuIotlbGather()
        add(g, FakeSync(), era, 0x1000)
        assert (g.start, g.end) == (0x1000, want)
        assert RULES[era].span(g) == (0x1000, SZ_4K)
    assert RULES["v5.15"].span(IommuIotlbGather()) == (0, 0)


def test_v5_15_is_disjoint() -> None:
    """L5.15 ``iommu_iotlb_gather_is_disjoint``: ``g->end != 0 && (end + 1 < g->start ||
    iova > g->end + 1)``."""
    empty = IommuIotlbGather()
    assert not RULES["v5.15"].is_disjoint(empty, 0x9000, SZ_4K)  # end == 0: never disjoint
    g = IommuIotlbGather(start=0x4000, end=0x5fff, pgsize=SZ_4K)
    assert not RULES["v5.15"].is_disjoint(g, 0x3000, SZ_4K)  # touches start
    assert not RULES["v5.15"].is_disjoint(g, 0x6000, SZ_4K)  # touches end
    assert not RULES["v5.15"].is_disjoint(g, 0x4000, SZ_2M)  # overlaps
    assert RULES["v5.15"].is_disjoint(g, 0x2000, SZ_4K)
    assert RULES["v5.15"].is_disjoint(g, 0x7000, SZ_4K)
    # a big range ending just below start still touches it
    assert not RULES["v5.15"].is_disjoint(g, 0x0, 0x4000)
    assert RULES["v5.15"].is_disjoint(g, 0x0, 0x3000)


def test_v5_15_add_range_never_syncs() -> None:
    """L5.15 ``iommu_iotlb_gather_add_range``: "no syncing, just widen" (AMD's helper)."""
    g = IommuIotlbGather()
    RULES["v5.15"].add_range(g, 0x5000, SZ_4K)
    RULES["v5.15"].add_range(g, 0x100000, SZ_2M)
    RULES["v5.15"].add_range(g, 0x1000, SZ_4K)
    assert (g.start, g.end) == (0x1000, 0x2fffff)
    assert g.pgsize == 0  # add_range leaves pgsize alone


def test_v5_4_rule_differs_on_empty_gather_is_disjoint() -> None:
    """Before v5.15 an empty gather (start = ULONG_MAX, end = 0) counts as disjoint from
    any page — harmless only because ``pgsize == 0`` suppresses the sync."""
    empty = IommuIotlbGather()
    assert RULES["v5.4"].is_disjoint(empty, 0x1000, SZ_4K)
    assert RULES["v5.10"].is_disjoint(empty, 0x1000, SZ_4K)
    assert not RULES["v5.15"].is_disjoint(empty, 0x1000, SZ_4K)


@pytest.mark.parametrize("era", ERAS)
def test_sync_count_over_a_scattered_unmap(era: str) -> None:
    """Pages 0..3 contiguous, then every other page: one early sync per new gap."""
    g, sync = IommuIotlbGather(), FakeSync()
    pages = [0, 1, 2, 3, 5, 7, 8, 10]
    for p in pages:
        add(g, sync, era, 0x10000 + p * SZ_4K)
    # ranges synced early: [0..3], [5], [7..8]; [10] is still gathered
    assert [(s, e) for s, e, _ in sync.synced] == [
        (0x10000, end(era, 0x13fff)), (0x15000, end(era, 0x15fff)),
        (0x17000, end(era, 0x18fff))]
    assert (g.start, g.end) == (0x1a000, end(era, 0x1afff))


# ---- through a domain: the core's add_page syncs with the driver ------------------------

def test_core_add_page_early_sync_issues_driver_flush() -> None:
    """SMMUv3 v5.4 ``arm_smmu_tlb_inv_page_nosync`` → ``iommu_iotlb_gather_add_page``: a
    disjoint page forces ``arm_smmu_iotlb_sync`` (TLBIs + CMD_SYNC) in the middle of the
    unmap (L5.4 arm-smmu-v3.c); contiguous pages gather into one sync at the end."""
    RW = il.IOMMU_READ | il.IOMMU_WRITE
    dom = il.iommu_domain_alloc("smmuv3-v5.4")
    il.iommu_map(dom, 0x10000, 0x10000, 0x3000, RW)
    il.iommu_map(dom, 0x20000, 0x20000, 0x1000, RW)
    g = il.IommuIotlbGather()
    s0 = dom.stats()
    il.iommu_unmap_fast(dom, 0x10000, 0x3000, g)
    s1 = dom.stats()
    assert s1["sync_cmds"] == s0["sync_cmds"]  # contiguous: just gathered
    il.iommu_unmap_fast(dom, 0x20000, 0x1000, g)  # disjoint: the first range is synced now
    s2 = dom.stats()
    assert s2["sync_cmds"] - s1["sync_cmds"] == 1
    assert s2["inv_cmds"] - s1["inv_cmds"] == 3
    assert (g.start, g.end, g.pgsize) == (0x20000, 0x21000, SZ_4K)
    il.iommu_iotlb_sync(dom, g)
    s3 = dom.stats()
    assert (s3["inv_cmds"] - s2["inv_cmds"], s3["sync_cmds"] - s2["sync_cmds"]) == (1, 1)
    assert g.empty


def test_a_gather_compares_and_prints_by_its_fields() -> None:
    """The gather is a plain class (compiled into an extension type): equal when every
    field is, printed field by field, as the dataclass it was."""
    g = IommuIotlbGather(start=0x1000, end=0x2fff, pgsize=SZ_4K)
    assert g == IommuIotlbGather(0x1000, 0x2fff, SZ_4K, [], False)
    assert g != IommuIotlbGather(0x1000, 0x2fff, SZ_4K, queued=True) and g != (0x1000,)
    assert repr(g) == ("IommuIotlbGather(start=4096, end=12287, pgsize=4096, freelist=[], "
                       "queued=False)")

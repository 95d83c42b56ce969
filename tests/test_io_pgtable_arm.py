"""io-pgtable-arm against the kernel's own selftest (kernel-api-history.md §7).

``arm_lpae_run_tests`` (L4.13 … L6.8 drivers/iommu/io-pgtable-arm.c, selftest part) is
re-expressed as one parametrised test per step, for the selftest's configurations:
pgsize ∈ {SZ_4K|SZ_2M|SZ_1G, SZ_16K|SZ_32M, SZ_64K|SZ_512M} × ias ∈ {32, 36, 40, 42, 44, 48}
(oas = 48, L4.13 ``arm_lpae_do_selftests``) × fmt ∈ {ARM_64_LPAE_S1, ARM_64_LPAE_S2}.

Every table is driven through a ``RecordingFlushOps`` playing the selftest's dummy
``iommu_flush_ops``: each flush size must be a supported page size (``size &
cfg->pgsize_bitmap``), and every freed table must be preceded by ``tlb_flush_walk``
covering it ("Also flush any partial walks", L5.4 ``__arm_lpae_unmap``).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommu_lab.errors import EEXIST, EINVAL, ERANGE, IommuError
from iommu_lab.io_pgtable.arm import (
    ARM_64_LPAE_S1,
    ARM_64_LPAE_S2,
    IoPgtableArm,
    IoPgtableCfg,
    restrict_pgsizes,
)
from iommu_lab.prot import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
)
from iommu_lab.units import SZ_1G, SZ_2M, SZ_4K, SZ_16K, SZ_32M, SZ_64K, SZ_512M

SZ_2G = 2 * SZ_1G
PGSIZES = (SZ_4K | SZ_2M | SZ_1G, SZ_16K | SZ_32M, SZ_64K | SZ_512M)
IAS = (32, 36, 40, 42, 44, 48)
FMTS = (ARM_64_LPAE_S1, ARM_64_LPAE_S2)
CONFIGS = [pytest.param(bm, ias, fmt, id=f"{bm:#x}-ias{ias}-{fmt[-2:]}")
           for bm, ias, fmt in itertools.product(PGSIZES, IAS, FMTS)]
assert len(CONFIGS) == 36  # 18 selftest configurations (L4.13) × both formats

PROT_FULL = IOMMU_READ | IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_CACHE  # selftest map prot


def sizes(bitmap: int) -> list[int]:
    """Set bits of ``pgsize_bitmap`` ascending (``for_each_set_bit`` in the selftest)."""
    return [1 << j for j in range(64) if bitmap >> j & 1]


class RecordingFlushOps:
    """The selftest's dummy flush ops, made strict: records every call and checks it."""

    def __init__(self, pgt: IoPgtableArm) -> None:
        self.pgt = pgt
        self.walks: list[tuple[int, int, int]] = []
        self.pages: list[tuple[int, int]] = []
        self.syncs = 0

    def _check_size(self, size: int) -> None:
        # dummy_tlb_flush: WARN_ON(!(size & cfg_cookie->pgsize_bitmap))
        assert size & self.pgt.pgsize_bitmap, f"flush size {size:#x} not a supported page size"
        assert size & (size - 1) == 0

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None:
        self._check_size(size)
        self._check_size(granule)
        assert granule == self.pgt.granule
        assert iova % size == 0
        # The walk invalidation precedes the free: the tables it covers are still there.
        assert self._tables_in(iova, size), f"tlb_flush_walk({iova:#x}) after the free"
        self.walks.append((iova, size, granule))

    def tlb_add_page(self, gather: object, iova: int, granule: int) -> None:
        self._check_size(granule)
        assert iova % granule == 0
        self.pages.append((iova, granule))

    def tlb_sync(self) -> None:
        self.syncs += 1

    def _tables_in(self, iova: int, size: int) -> set[tuple[int, int]]:
        return {k for k in self.pgt.tables if iova <= table_base(self.pgt, k) < iova + size}


def table_base(pgt: IoPgtableArm, key: tuple[int, int]) -> int:
    lvl, prefix = key
    return prefix << (pgt.lvl_shift(lvl) + pgt._bits(lvl))


def table_span(pgt: IoPgtableArm, key: tuple[int, int]) -> int:
    lvl, _ = key
    return 1 << (pgt.lvl_shift(lvl) + pgt._bits(lvl))


class Checked:
    """An IoPgtableArm whose every map/unmap is checked against the flush invariants."""

    def __init__(self, bitmap: int, ias: int, fmt: str, split_blocks: bool = True) -> None:
        self.pgt = IoPgtableArm(IoPgtableCfg(pgsize_bitmap=bitmap, ias=ias, oas=48, fmt=fmt,
                                             split_blocks=split_blocks))
        self.ops = RecordingFlushOps(self.pgt)

    def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        before = set(self.pgt.tables)
        nwalks = len(self.ops.walks)
        try:
            return fn(*args, ops=self.ops)
        finally:
            freed = before - set(self.pgt.tables)
            walks = self.ops.walks[nwalks:]
            for key in freed:  # every table free reported by a covering tlb_flush_walk
                base, span = table_base(self.pgt, key), table_span(self.pgt, key)
                assert any(w <= base and base + span <= w + s for w, s, _ in walks), (
                    f"table {key} freed without tlb_flush_walk")
            if walks:
                assert freed, "tlb_flush_walk reported but no table was freed"

    def map(self, iova: int, paddr: int, size: int, prot: int, count: int = 1) -> int:
        return self._run(self.pgt.map_pages, iova, paddr, size, count, prot)

    def unmap(self, iova: int, size: int, count: int = 1) -> int:
        return self._run(self.pgt.unmap_pages, iova, size, count, None)

    def iova_to_phys(self, iova: int) -> int:
        return self.pgt.iova_to_phys(iova)


def selftest_maps(t: Checked, bitmap: int) -> None:
    """Selftest step 2(a): each page size mapped identity at 0, 1G, 2G…"""
    iova = 0
    for size in sizes(bitmap):
        assert t.map(iova, iova, size, PROT_FULL) == size
        iova += SZ_1G


# ---- arm_lpae_run_tests, step by step ------------------------------------------------

@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_empty_lookup(bitmap: int, ias: int, fmt: str) -> None:
    """Step 1 (L4.13 selftest): an empty table translates nothing."""
    t = Checked(bitmap, ias, fmt)
    for iova in (42, SZ_1G + 42, SZ_2G + 42):
        assert t.iova_to_phys(iova) == 0
    assert list(t.pgt.leaves()) == []


@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_map_each_pgsize_identity(bitmap: int, ias: int, fmt: str) -> None:
    """Step 2(a)+(c): map every page size identity at n·1G; iova_to_phys(iova+42) == iova+42."""
    t = Checked(bitmap, ias, fmt)
    selftest_maps(t, bitmap)
    iova = 0
    for size in sizes(bitmap):
        assert t.iova_to_phys(iova + 42) == iova + 42
        assert t.iova_to_phys(iova + size - 1) == iova + size - 1
        assert t.iova_to_phys(iova + size) == 0  # nothing just past the leaf
        iova += SZ_1G
    assert [(i, s) for i, s, _, _ in t.pgt.leaves()] == [
        (n * SZ_1G, s) for n, s in enumerate(sizes(bitmap))]
    assert t.ops.pages == [] and t.ops.walks == []  # no TLB maintenance on map (§7.3)


@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_overlap_rejected(bitmap: int, ias: int, fmt: str) -> None:
    """Step 2(b): map(iova, iova+size, size, READ|NOEXEC) over a mapping fails (-EEXIST)."""
    t = Checked(bitmap, ias, fmt)
    iova = 0
    for size in sizes(bitmap):
        assert t.map(iova, iova, size, PROT_FULL) == size
        before = {k: v.copy() for k, v in t.pgt.tables.items()}
        with pytest.raises(IommuError) as exc:
            t.map(iova, iova + size, size, IOMMU_READ | IOMMU_NOEXEC)
        assert exc.value.errno == EEXIST
        assert f"{iova:#x}" in str(exc.value)
        assert set(before) == set(t.pgt.tables)
        assert all(np.array_equal(before[k], t.pgt.tables[k]) for k in before)
        assert t.iova_to_phys(iova + 42) == iova + 42
        iova += SZ_1G


@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_partial_unmap_splits_block(bitmap: int, ias: int, fmt: str) -> None:
    """Step 3 (L4.13 … L6.8): unmap(SZ_1G + size, size) == size punches a hole in the block."""
    t = Checked(bitmap, ias, fmt, split_blocks=True)
    selftest_maps(t, bitmap)
    size = min(sizes(bitmap))
    block = sizes(bitmap)[1]
    assert t.unmap(SZ_1G + size, size) == size
    assert t.iova_to_phys(SZ_1G + size + 42) == 0
    # the rest of the old block still translates as before (split into `size` pages)
    assert t.iova_to_phys(SZ_1G + 42) == SZ_1G + 42
    assert t.iova_to_phys(SZ_1G + 2 * size + 42) == SZ_1G + 2 * size + 42
    assert t.iova_to_phys(SZ_1G + block - 1) == SZ_1G + block - 1
    leaves = list(t.pgt.leaves(SZ_1G, SZ_1G + block))
    assert len(leaves) == block // size - 1
    assert {s for _, s, _, _ in leaves} == {size}
    assert t.ops.pages == [(SZ_1G + size, size)]  # the hole reported with tlb_add_page
    assert t.ops.walks == []


@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_partial_unmap_refused_v6_13(bitmap: int, ias: int, fmt: str) -> None:
    """L6.18 ``__arm_lpae_unmap``: "Unmap of a partial large IOPTE is not allowed" → 0."""
    t = Checked(bitmap, ias, fmt, split_blocks=False)
    selftest_maps(t, bitmap)
    before = list(t.pgt.leaves())
    size = min(sizes(bitmap))
    assert t.unmap(SZ_1G + size, size) == 0
    assert list(t.pgt.leaves()) == before  # the block stays mapped, whole
    assert t.iova_to_phys(SZ_1G + size + 42) == SZ_1G + size + 42
    assert t.ops.pages == [] and t.ops.walks == []


@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_remap_hole_non_identity(bitmap: int, ias: int, fmt: str) -> None:
    """Step 3, "remap of partial unmap": map(SZ_1G + size, paddr=size, size, READ)."""
    t = Checked(bitmap, ias, fmt)
    selftest_maps(t, bitmap)
    size = min(sizes(bitmap))
    assert t.unmap(SZ_1G + size, size) == size
    assert t.map(SZ_1G + size, size, size, IOMMU_READ) == size
    assert t.iova_to_phys(SZ_1G + size + 42) == size + 42
    assert t.iova_to_phys(SZ_1G + 42) == SZ_1G + 42  # its neighbours are untouched
    with pytest.raises(IommuError) as exc:  # and the hole is now occupied again
        t.map(SZ_1G + size, 0, size, IOMMU_READ)
    assert exc.value.errno == EEXIST


@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_full_unmap_and_remap(bitmap: int, ias: int, fmt: str) -> None:
    """Step 4: after steps 2–3, unmap(iova, size) == size for each size, then remap WRITE."""
    t = Checked(bitmap, ias, fmt)
    selftest_maps(t, bitmap)
    small = min(sizes(bitmap))
    assert t.unmap(SZ_1G + small, small) == small
    assert t.map(SZ_1G + small, small, small, IOMMU_READ) == small
    iova = 0
    for size in sizes(bitmap):
        # at 1G this unmap meets the *table* left by the split: still the full block size
        assert t.unmap(iova, size) == size
        assert t.iova_to_phys(iova + 42) == 0
        assert t.iova_to_phys(iova + small + 42) == 0
        assert t.map(iova, iova, size, IOMMU_WRITE) == size
        assert t.iova_to_phys(iova + 42) == iova + 42
        iova += SZ_1G
    assert len(list(t.pgt.leaves())) == len(sizes(bitmap))


@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_unmap_block_over_table(bitmap: int, ias: int, fmt: str) -> None:
    """§7.3: unmapping a block-sized range whose entry is a table frees the table.

    Reported with one ``tlb_flush_walk(iova, block, granule)`` (L5.4 ``__arm_lpae_unmap``),
    no per-leaf ``tlb_add_page``; returns the whole block size (selftest step 4, ≤ L6.8).
    """
    t = Checked(bitmap, ias, fmt)
    selftest_maps(t, bitmap)
    small, block = sizes(bitmap)[0], sizes(bitmap)[1]
    assert t.unmap(SZ_1G + small, small) == small  # the block at 1G is now a table
    ntables = len(t.pgt.tables)
    t.ops.pages.clear()
    assert t.unmap(SZ_1G, block) == block
    assert t.ops.walks == [(SZ_1G, block, small)]
    assert t.ops.pages == []
    assert len(t.pgt.tables) == ntables - 1
    assert list(t.pgt.leaves(SZ_1G, SZ_1G + block)) == []
    assert t.unmap(SZ_1G, block) == 0  # now a hole


@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_top_of_ias_largest_page(bitmap: int, ias: int, fmt: str) -> None:
    """Step 5 (L6.18): largest page at (1 << ias) - size maps and unmaps ("corner cases in
    the concatenated page tables")."""
    t = Checked(bitmap, ias, fmt)
    size = max(sizes(bitmap))
    iova = (1 << ias) - size
    assert t.map(iova, iova, size, PROT_FULL, count=1) == size
    assert t.iova_to_phys(iova + 42) == iova + 42
    assert t.iova_to_phys((1 << ias) - 1) == (1 << ias) - 1
    assert t.unmap(iova, size, count=1) == size
    assert t.iova_to_phys(iova + 42) == 0
    assert t.ops.pages == [(iova, size)]


@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_past_ias_rejected(bitmap: int, ias: int, fmt: str) -> None:
    """§7.3: iova ≥ 1 << ias: map is -ERANGE (arm_lpae_map_pages), unmap WARNs and returns 0."""
    t = Checked(bitmap, ias, fmt)
    size = min(sizes(bitmap))
    with pytest.raises(IommuError) as exc:
        t.map(1 << ias, 0, size, PROT_FULL)
    assert exc.value.errno == ERANGE
    with pytest.raises(IommuError) as exc:  # the last page straddles the end
        t.map((1 << ias) - size, 0, size, PROT_FULL, count=2)
    assert exc.value.errno == ERANGE
    assert list(t.pgt.leaves()) == []
    assert t.unmap(1 << ias, size) == 0
    assert t.iova_to_phys(1 << ias) == 0


# ---- geometry (§7.2) -------------------------------------------------------------------

S1_LEVELS = {  # §7.2 "Levels for the selftest IAS values"
    SZ_4K: {32: 3, 36: 3, 40: 4, 42: 4, 44: 4, 48: 4},
    SZ_16K: {32: 2, 36: 2, 40: 3, 42: 3, 44: 3, 48: 4},
    SZ_64K: {32: 2, 36: 2, 40: 2, 42: 2, 44: 3, 48: 3},
}
# L4.13 stage-2 concatenation: a 4-level table whose level-0 table has ≤ 16 entries
# becomes ≤ 16 concatenated level-1 pages (one level fewer) — 4K/40, 4K/42, 16K/48.
S2_LEVELS = {g: dict(v) for g, v in S1_LEVELS.items()}
S2_LEVELS[SZ_4K].update({40: 3, 42: 3})
S2_LEVELS[SZ_16K].update({48: 3})
BLOCKS = {  # §7.2 table: entry span per level 1..3 and the leaf sizes
    SZ_4K: ({1: SZ_1G, 2: SZ_2M, 3: SZ_4K}, SZ_4K | SZ_2M | SZ_1G),
    SZ_16K: ({1: 64 * SZ_1G, 2: SZ_32M, 3: SZ_16K}, SZ_16K | SZ_32M),
    SZ_64K: ({1: 4096 * SZ_1G, 2: SZ_512M, 3: SZ_64K}, SZ_64K | SZ_512M),
}


@pytest.mark.parametrize("bitmap,ias,fmt", CONFIGS)
def test_levels(bitmap: int, ias: int, fmt: str) -> None:
    """``arm_lpae_alloc_pgtable``: levels = DIV_ROUND_UP(ias - pg_shift, pg_shift - 3)."""
    pgt = IoPgtableArm(IoPgtableCfg(pgsize_bitmap=bitmap, ias=ias, oas=48, fmt=fmt))
    granule = bitmap & -bitmap
    want = (S1_LEVELS if fmt == ARM_64_LPAE_S1 else S2_LEVELS)[granule][ias]
    assert pgt.levels == want
    assert pgt.start_level == 4 - want
    assert pgt.granule == granule
    # the root table holds exactly the entries needed to cover the IAS
    root = pgt.tables[(pgt.start_level, 0)]
    assert len(root) * pgt.block_size(pgt.start_level) == 1 << ias


@pytest.mark.parametrize("granule", [SZ_4K, SZ_16K, SZ_64K])
def test_block_sizes_and_leaf_levels(granule: int) -> None:
    """§7.2: ``ARM_LPAE_BLOCK_SIZE(l)`` per granule; leaves only at the sizes in the table."""
    spans, leafmask = BLOCKS[granule]
    pgt = IoPgtableArm(IoPgtableCfg(pgsize_bitmap=leafmask, ias=48))
    for lvl, span in spans.items():
        assert pgt.block_size(lvl) == span
    assert pgt.pgsize_bitmap == leafmask
    assert set(pgt.leaf_sizes) == set(sizes(leafmask))
    for size in sizes(leafmask):
        assert pgt.block_size(pgt.leaf_level(size)) == size


def test_restrict_pgsizes() -> None:
    """``arm_lpae_restrict_pgsizes``: PAGE_SIZE (4K) granule if present, else the smallest
    size above it; then only that granule's leaf sizes survive."""
    assert restrict_pgsizes(SZ_4K | SZ_16K | SZ_2M | SZ_32M) == (SZ_4K, SZ_4K | SZ_2M)
    assert restrict_pgsizes(SZ_16K | SZ_2M | SZ_32M | SZ_64K) == (SZ_16K, SZ_16K | SZ_32M)
    assert restrict_pgsizes(SZ_64K | SZ_512M | SZ_1G) == (SZ_64K, SZ_64K | SZ_512M)
    with pytest.raises(IommuError) as exc:
        restrict_pgsizes(SZ_2M)  # no 4K/16K/64K granule at all
    assert exc.value.errno == EINVAL


def test_unsupported_pgsize_and_bad_ias_rejected() -> None:
    pgt = IoPgtableArm(IoPgtableCfg())
    with pytest.raises(IommuError) as exc:
        pgt.map_pages(0, 0, SZ_16K, 1, PROT_FULL)
    assert exc.value.errno == EINVAL and "16K" in str(exc.value)
    for ias in (31, 49):  # L4.13 ARM_LPAE_MAX_ADDR_BITS 48
        with pytest.raises(IommuError) as exc:
            IoPgtableArm(IoPgtableCfg(ias=ias))
        assert exc.value.errno == EINVAL and str(ias) in str(exc.value)


def test_sync_on_unmap_era() -> None:
    """≤ v4.14: ``arm_lpae_unmap`` ends with ``io_pgtable_tlb_sync`` when it unmapped
    something (L4.13 io-pgtable-arm.c); from v4.15 it no longer syncs (L4.15)."""
    for sync_on_unmap, want in ((True, 1), (False, 0)):
        pgt = IoPgtableArm(IoPgtableCfg(sync_on_unmap=sync_on_unmap))
        ops = RecordingFlushOps(pgt)
        pgt.map_pages(0, 0, SZ_4K, 4, PROT_FULL, ops=ops)
        assert pgt.unmap_pages(0, SZ_4K, 4, None, ops=ops) == 4 * SZ_4K
        assert ops.syncs == want
        assert ops.pages == [(i * SZ_4K, SZ_4K) for i in range(4)]
        assert pgt.unmap_pages(0, SZ_4K, 1, None, ops=ops) == 0  # hole: nothing, no sync
        assert ops.syncs == want


def test_unmap_pages_stops_at_first_hole() -> None:
    """``__arm_lpae_unmap`` returns 0 for an empty entry; unmap_pages stops there."""
    pgt = IoPgtableArm(IoPgtableCfg())
    pgt.map_pages(0, 0, SZ_4K, 2, PROT_FULL)
    pgt.map_pages(3 * SZ_4K, 3 * SZ_4K, SZ_4K, 1, PROT_FULL)
    assert pgt.unmap_pages(0, SZ_4K, 4) == 2 * SZ_4K
    assert pgt.iova_to_phys(3 * SZ_4K) == 3 * SZ_4K  # beyond the hole: still mapped


def test_gather_queued_suppresses_tlb_add_page() -> None:
    """L5.15: leaf entries → ``tlb_add_page`` unless ``iommu_iotlb_gather_queued(gather)``;
    freed tables still get ``tlb_flush_walk``."""
    from iommu_lab.core.gather import IommuIotlbGather

    pgt = IoPgtableArm(IoPgtableCfg())
    ops = RecordingFlushOps(pgt)
    g = IommuIotlbGather(queued=True)
    pgt.map_pages(0, 0, SZ_4K, 2, PROT_FULL, ops=ops)
    pgt.map_pages(SZ_2M, SZ_2M, SZ_4K, 1, PROT_FULL, ops=ops)
    assert pgt.unmap_pages(0, SZ_4K, 2, g, ops=ops) == 2 * SZ_4K
    assert ops.pages == []
    assert pgt.unmap_pages(SZ_2M, SZ_2M, 1, g, ops=ops) == SZ_2M
    assert ops.walks == [(SZ_2M, SZ_2M, SZ_4K)]


def test_map_block_over_empty_table_frees_it() -> None:
    """§7.3: a table where a block is to be installed is unmapped (walk flush) and freed.
    (iommu_lab refuses with EEXIST if that table still maps something.)"""
    t = Checked(SZ_4K | SZ_2M | SZ_1G, 48, ARM_64_LPAE_S1)
    t.map(SZ_4K, SZ_4K, SZ_4K, PROT_FULL)
    with pytest.raises(IommuError) as exc:
        t.map(0, 0, SZ_2M, PROT_FULL)
    assert exc.value.errno == EEXIST and "0x1000" in str(exc.value)
    assert t.unmap(SZ_4K, SZ_4K) == SZ_4K
    assert t.map(0, SZ_2G, SZ_2M, PROT_FULL) == SZ_2M
    assert t.ops.walks == [(0, SZ_2M, SZ_4K)]
    assert t.iova_to_phys(SZ_4K + 42) == SZ_2G + SZ_4K + 42


def test_map_pages_partial_failure_reports_mapped() -> None:
    """``arm_lpae_map_pages`` stops at the first error with ``*mapped`` = pages installed
    (L5.15+); the core needs it to unwind them (§5.4 ``__iommu_map``)."""
    pgt = IoPgtableArm(IoPgtableCfg())
    pgt.map_pages(3 * SZ_4K, 3 * SZ_4K, SZ_4K, 1, PROT_FULL)
    with pytest.raises(IommuError) as exc:
        pgt.map_pages(0, 0, SZ_4K, 8, PROT_FULL)
    assert exc.value.errno == EEXIST
    assert exc.value.mapped == 3 * SZ_4K  # type: ignore[attr-defined]
    assert [i for i, _, _, _ in pgt.leaves()] == [0, SZ_4K, 2 * SZ_4K, 3 * SZ_4K]


def test_pte_bits_stage1_and_stage2() -> None:
    """§7.3 PTE bits (L6.18 macros): AF, SH_IS, XN; S1 AP_RDONLY/nG, S2 HAP_READ/WRITE."""
    s1 = IoPgtableArm(IoPgtableCfg(fmt=ARM_64_LPAE_S1))
    s1.map_pages(0, 0x4000_0000, SZ_4K, 1, IOMMU_READ | IOMMU_NOEXEC)
    s1.map_pages(SZ_2M, 0, SZ_2M, 1, IOMMU_READ | IOMMU_WRITE)
    (_, _, pa, pte), (_, _, _, blk) = s1.leaves()
    assert pa == 0x4000_0000
    assert pte & 3 == 3 and blk & 3 == 1  # PAGE at level 3, BLOCK at level 2
    assert pte & (1 << 10) and pte & (3 << 8)  # AF, SH_IS
    assert pte & (1 << 7) and pte & (1 << 11)  # AP_RDONLY, nG
    assert pte & (3 << 53) == 3 << 53 and not blk & (3 << 53)  # XN only with NOEXEC
    assert not blk & (1 << 7) and s1.pte_writable(blk) and not s1.pte_writable(pte)
    s2 = IoPgtableArm(IoPgtableCfg(fmt=ARM_64_LPAE_S2))
    s2.map_pages(0, 0, SZ_4K, 1, IOMMU_READ)
    (_, _, _, pte2), = s2.leaves()
    assert pte2 & (1 << 6) and not pte2 & (1 << 7) and not s2.pte_writable(pte2)


# ---- bulk paths (the compact engine) --------------------------------------------------

def same_tables(a: IoPgtableArm, b: IoPgtableArm) -> bool:
    return set(a.tables) == set(b.tables) and all(
        np.array_equal(a.tables[k], b.tables[k]) for k in a.tables)


def bulk_iovas(pgsize: int, starts: list[int], n: int) -> np.ndarray:
    out = sorted({s + k * pgsize for s in starts for k in range(n)})
    return np.array(out, dtype=np.uint64)


@pytest.mark.parametrize("bitmap", PGSIZES)
@pytest.mark.parametrize("leaf_idx", [0, 1])
def test_bulk_agrees_with_per_page(bitmap: int, leaf_idx: int) -> None:
    """map_bulk/unmap_bulk leave the same PTE arrays as map_pages/unmap_pages per page."""
    pgsize = sizes(bitmap)[leaf_idx]
    blk = sizes(bitmap)[1]
    # runs crossing leaf-table boundaries and a 1G boundary
    starts = [0, blk - 3 * pgsize, SZ_1G - 2 * pgsize] if leaf_idx == 0 else [0, SZ_1G - blk]
    iovas = bulk_iovas(pgsize, starts, 5)
    paddrs = iovas + np.uint64(SZ_2G)
    prot = IOMMU_READ | IOMMU_CACHE
    fast = IoPgtableArm(IoPgtableCfg(pgsize_bitmap=bitmap, ias=40))
    slow = IoPgtableArm(IoPgtableCfg(pgsize_bitmap=bitmap, ias=40))
    assert fast.can_map_bulk(iovas, pgsize)
    assert fast.map_bulk(iovas, paddrs, pgsize, prot)
    for i, p in zip(iovas.tolist(), paddrs.tolist()):
        slow.map_pages(i, p, pgsize, 1, prot)
    assert same_tables(fast, slow)
    assert list(fast.leaves()) == list(slow.leaves())
    assert not fast.can_map_bulk(iovas, pgsize)  # now occupied
    assert fast.can_unmap_bulk(iovas, pgsize)
    assert fast.unmap_bulk(iovas, pgsize)
    for i in iovas.tolist():
        assert slow.unmap_pages(i, pgsize, 1) == pgsize
    assert same_tables(fast, slow)
    assert list(fast.leaves()) == []
    assert not fast.can_unmap_bulk(iovas, pgsize)  # all holes now


def test_bulk_refuses_and_changes_nothing() -> None:
    """A slot already used (a page, or a block covering it), a hole, a leaf of another size,
    or a page past the IAS: the bulk path says no and leaves the tables alone."""
    pgt = IoPgtableArm(IoPgtableCfg(ias=36))
    pgt.map_pages(5 * SZ_4K, 0x9000_0000, SZ_4K, 1, PROT_FULL)
    pgt.map_pages(SZ_1G, SZ_1G, SZ_2M, 1, PROT_FULL)
    snap = {k: v.copy() for k, v in pgt.tables.items()}

    def unchanged() -> bool:
        return set(snap) == set(pgt.tables) and all(
            np.array_equal(snap[k], pgt.tables[k]) for k in snap)

    occupied = bulk_iovas(SZ_4K, [0], 8)  # includes the page at 5 × 4K
    assert not pgt.can_map_bulk(occupied, SZ_4K)
    assert not pgt.map_bulk(occupied, occupied, SZ_4K, PROT_FULL)
    assert unchanged()
    under_block = bulk_iovas(SZ_4K, [SZ_1G + SZ_4K], 4)
    assert not pgt.map_bulk(under_block, under_block, SZ_4K, PROT_FULL)
    assert unchanged()
    past_ias = bulk_iovas(SZ_4K, [(1 << 36) - 2 * SZ_4K], 3)
    assert not pgt.can_map_bulk(past_ias, SZ_4K)
    assert not pgt.map_bulk(past_ias, past_ias, SZ_4K, PROT_FULL)
    assert unchanged()
    with_hole = bulk_iovas(SZ_4K, [4 * SZ_4K], 2)  # 4 × 4K is a hole
    assert not pgt.can_unmap_bulk(with_hole, SZ_4K)
    assert not pgt.unmap_bulk(with_hole, SZ_4K)
    assert unchanged()
    in_block = bulk_iovas(SZ_4K, [SZ_1G], 2)  # a 2M block, not 4K leaves
    assert not pgt.unmap_bulk(in_block, SZ_4K)
    assert not pgt.unmap_bulk(bulk_iovas(SZ_2M, [0], 1), SZ_2M)  # a table, not a block
    assert unchanged()
    assert pgt.unmap_bulk(bulk_iovas(SZ_2M, [SZ_1G], 1), SZ_2M)  # the block itself: yes
    assert pgt.iova_to_phys(SZ_1G) == 0


def test_misaligned_or_unsupported_requests_refused() -> None:
    """Each leaf must be aligned to its size in iova and paddr (the core only passes
    aligned chunks, L4.13 ``iommu_pgsize``): a direct misaligned map is EINVAL instead of
    silently mapping the enclosing block; unmap with a misaligned iova, a size outside the
    bitmap or no pages does nothing (``arm_lpae_unmap_pages`` WARN_ON → 0)."""
    pgt = IoPgtableArm(IoPgtableCfg())
    for iova, paddr in ((0x1000, SZ_1G), (SZ_2M, SZ_1G + 0x1000)):
        with pytest.raises(IommuError) as exc:
            pgt.map_pages(iova, paddr, SZ_2M, 1, PROT_FULL)
        assert exc.value.errno == EINVAL and f"{iova:#x}" in str(exc.value)
    assert list(pgt.leaves()) == []
    pgt.map_pages(SZ_2M, SZ_1G, SZ_2M, 1, PROT_FULL)
    pgt.map_pages(0, 0, SZ_4K, 1, PROT_FULL)
    before = list(pgt.leaves())
    assert pgt.unmap_pages(0x800, SZ_4K, 1) == 0
    assert pgt.unmap_pages(0, 2 * SZ_4K, 1) == 0
    assert pgt.unmap_pages(SZ_2M, SZ_4K, 0) == 0
    assert pgt.unmap_pages(SZ_2M + SZ_4K, SZ_2M, 1) == 0
    assert list(pgt.leaves()) == before


def test_split_of_a_1g_block_down_to_4k() -> None:
    """``arm_lpae_split_blk_unmap`` recurses: a 4K hole in a 1G block leaves 511 × 2M blocks
    and 511 × 4K pages, same output addresses, one ``tlb_add_page`` for the hole."""
    t = Checked(SZ_4K | SZ_2M | SZ_1G, 48, ARM_64_LPAE_S1)
    t.map(SZ_1G, 4 * SZ_1G, SZ_1G, IOMMU_READ | IOMMU_NOEXEC)
    hole = SZ_1G + 300 * SZ_2M + 7 * SZ_4K
    assert t.unmap(hole, SZ_4K) == SZ_4K
    got = list(t.pgt.leaves())
    assert sum(1 for _, s, _, _ in got if s == SZ_2M) == 511
    assert sum(1 for _, s, _, _ in got if s == SZ_4K) == 511
    assert all(pa == 3 * SZ_1G + iova for iova, _, pa, _ in got)
    addr_mask = ((1 << 48) - 1) & ~0xFFF
    attrs = {pte & ~addr_mask & ~3 for _, _, _, pte in got}  # all but address and type
    assert len(attrs) == 1 and attrs.pop() & (3 << 53)  # kept, XN (NOEXEC) included
    assert t.iova_to_phys(hole) == 0
    assert t.iova_to_phys(hole + SZ_4K + 42) == 3 * SZ_1G + hole + SZ_4K + 42
    assert t.ops.pages == [(hole, SZ_4K)]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PGSIZES), st.sampled_from(FMTS), st.integers(1, 8), st.data())
def test_memo_slot_write_is_the_per_slot_formula(bitmap: int, fmt: str, log_n: int,
                                                 data: st.DataObject) -> None:
    """``LeafSlots.write`` (the op memo's replay of a map) installs ``n`` leaves with one
    array addition, ``(paddr | bits) + i * leaf``: the PTEs are those of the per-slot
    formula ``(paddr + i * leaf) | bits`` (:meth:`LeafSlots._values`) for every leaf size,
    count, leaf-aligned output address below ``2**oas`` and prot, attribute bits included
    (stage 1 and 2)."""
    pgt = IoPgtableArm(IoPgtableCfg(pgsize_bitmap=bitmap, ias=48, oas=48, fmt=fmt))
    leaf = bitmap & -bitmap                   # the smallest page size: 2..256 of them
    size, n = leaf << log_n, 1 << log_n       # stay below the next (512 leaves or more)
    iova = data.draw(st.integers(0, (1 << 47) // size - 1)) * size
    paddr = data.draw(st.integers(0, (1 << 48) // size - 1)) * size
    prot = data.draw(st.sampled_from([IOMMU_READ, IOMMU_WRITE, IOMMU_READ | IOMMU_WRITE,
                                      PROT_FULL, IOMMU_READ | IOMMU_MMIO,
                                      IOMMU_WRITE | IOMMU_PRIV | IOMMU_NOEXEC]))
    slots = pgt.leaf_slots(iova, size, bitmap, True)
    assert slots is not None and slots.n == n and slots.leaf == leaf
    slots.write(paddr, prot)
    written = pgt.leaf_slots(iova, size, bitmap)
    assert written._ptes() == written._values(paddr, prot)
    assert written._ptes() == [(paddr + i * leaf) | pgt.prot_to_pte(prot) | written.ltype
                               for i in range(n)]


def test_memo_slots_of_a_region_wider_than_a_table_cost_no_memory() -> None:
    """A region of many tables' worth of leaves has no slots (one op memo key covers one
    table), and asking must not build its leaves' offsets (2**22 of them here: 32 MiB;
    a 1 TiB region's would be 2 GiB)."""
    import tracemalloc

    pgt = IoPgtableArm(IoPgtableCfg(pgsize_bitmap=SZ_4K, ias=48))
    tracemalloc.start()
    try:
        assert pgt.leaf_slots(0, 1 << 34, SZ_4K, True) is None
        assert pgt.leaf_slots(0, 1 << 34, SZ_4K) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert pgt.leaf_slots(0, 512 * SZ_4K, SZ_4K, True).n == 512      # one table's worth

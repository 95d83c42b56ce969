"""The IOMMU core (drivers/iommu/iommu.c) per era: kernel-api-history.md §2.1, §3.2, §4.1, §5.4.

Strategies are picked by their ``core_era`` (drivers/registry.py): smmuv3-v4.14 → v4.14,
smmuv3-v5.4 → v5.4, smmuv3-ril → v5.10, vtd-psi → v5.10, amd-range → v5.15.
"""

from __future__ import annotations

import dataclasses
import errno

import pytest

import iommu_lab as il
from iommu_lab.core.era import pgsize_counted, pgsize_single
from iommu_lab.core.iommu import iommu_map_sg
from iommu_lab.errors import EEXIST, EINVAL, ERANGE, IommuError
from iommu_lab.units import SZ_1G, SZ_2M, SZ_4K

RW = il.IOMMU_READ | il.IOMMU_WRITE
LPAE = SZ_4K | SZ_2M | SZ_1G
ERA_OF = {"smmuv3-v4.14": "v4.14", "smmuv3-v5.4": "v5.4", "smmuv3-ril": "v5.10",
          "vtd-psi": "v5.10", "amd-range": "v5.15"}
PRE_515 = ["smmuv3-v4.14", "smmuv3-v5.4", "smmuv3-ril"]  # LPAE bitmap, single-size rule


def ref_pgsize(bitmap: int, addr: int, size: int) -> int:
    """§2.1's Python equivalent of the L4.13 rule."""
    return max(p for p in (1 << j for j in range(64) if bitmap >> j & 1)
               if p <= size and (addr == 0 or addr % p == 0))


def leaves(dom: il.IommuDomain) -> list[tuple[int, int, int]]:
    return [(i, s, p) for i, s, p, _ in dom.pgtable.leaves()]


@pytest.mark.parametrize("name", list(ERA_OF))
def test_strategy_eras(name: str) -> None:
    assert str(il.iommu_domain_alloc(name).core.since) == ERA_OF[name]


# ---- iommu_pgsize ---------------------------------------------------------------------

@pytest.mark.parametrize("name", PRE_515)
@pytest.mark.parametrize("iova,paddr,size,want", [
    (0x1ff000, 0x1ff000, 0x201000, SZ_4K),   # §5.4 example, first call
    (0x200000, 0x200000, 0x200000, SZ_2M),   # … second call
    (0x1000, 0x1000, 0x200000, SZ_4K),       # aligned only to 4K
    (0x200000, 0x201000, 0x400000, SZ_4K),   # paddr misaligned for 2M
    (0, 0, 3 * SZ_1G, SZ_1G),                # addr_merge == 0: only the size limits
    (0x4000_0000, 0, 0x1ff000, SZ_4K),       # size below 2M
    (0x4000_0000, 0x8000_0000, SZ_1G + SZ_2M, SZ_1G),
])
def test_iommu_pgsize_single_pre_v5_15(name: str, iova: int, paddr: int, size: int,
                                        want: int) -> None:
    """L4.13 iommu.c ``iommu_pgsize``: the largest supported size fitting both the size and
    the alignment of iova|paddr; always one page per driver call before v5.15."""
    dom = il.iommu_domain_alloc(name)
    assert il.iommu_pgsize(dom, iova, paddr, size) == (want, 1)
    assert want == ref_pgsize(LPAE, iova | paddr, size)


def test_iommu_pgsize_counted_worked_example() -> None:
    """L5.15 iommu.c ``iommu_pgsize(..., &count)``, §5.4 example: bitmap 4K|2M|1G,
    iova = paddr = 0x1ff000, size = 0x201000 → 4K × 1 (offset 0x1000), then 2M × 1."""
    assert pgsize_counted(LPAE, 0x1ff000, 0x1ff000, 0x201000) == (SZ_4K, 1)
    assert pgsize_counted(LPAE, 0x200000, 0x200000, 0x200000) == (SZ_2M, 1)


@pytest.mark.parametrize("iova,paddr,size,want", [
    (0x1000, 0x1000, 0x200000, (SZ_4K, 512)),     # offset + 2M > size: count = size >> 12
    (0x1000, 0x1000, 0x400000, (SZ_4K, 511)),     # stop where 2M becomes usable
    (0x1000, 0x3000, 0x400000, (SZ_4K, 1024)),    # (iova ^ paddr) & (2M-1): never 2M
    (0x200000, 0x200000, 0x600000, (SZ_2M, 3)),   # next is 1G: offset + 1G > size
    (0, 0, 3 * SZ_1G, (SZ_1G, 3)),                # no larger size at all
    (0x3fe00000, 0x3fe00000, SZ_1G + SZ_2M, (SZ_2M, 1)),
])
def test_iommu_pgsize_counted(iova: int, paddr: int, size: int, want: tuple[int, int]) -> None:
    """L5.15 rule with the LPAE bitmap (same pgsize as L4.13, plus the count)."""
    assert pgsize_counted(LPAE, iova, paddr, size) == want
    assert pgsize_single(LPAE, iova | paddr, size) == want[0]


def test_iommu_pgsize_era_on_domains(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same request, two eras with the same every-power-of-two bitmap (VT-d/AMD,
    L4.13 ``INTEL_IOMMU_PGSIZES``): v5.10 one page per call, v5.15 a count. A v5.15 driver
    with only the legacy ``.map`` (AMD, virtio) is still called once per page (L5.15
    iommu.c:2465-2471); one with ``map_pages`` (here the SMMUv3 driver at v5.15, a
    hypothetical row) takes the whole count in one call."""
    from iommu_lab.drivers.registry import STRATEGIES

    row = dataclasses.replace(STRATEGIES["smmuv3-v5.4"], name="smmuv3-at-v5.15", kernel="v5.15",
                              pgsize_bitmap=STRATEGIES["amd-range"].pgsize_bitmap)
    monkeypatch.setitem(STRATEGIES, row.name, row)
    v510 = il.iommu_domain_alloc("vtd-psi")
    v515 = il.iommu_domain_alloc("amd-range")
    pages = il.iommu_domain_alloc(row.name)
    # addr_merge 0x3000 → 4K; the next size (8K) is unusable since iova ^ paddr = 0x3000
    assert il.iommu_pgsize(v510, 0x1000, 0x2000, 0x4000) == (SZ_4K, 1)
    assert il.iommu_pgsize(v515, 0x1000, 0x2000, 0x4000) == (SZ_4K, 4)
    assert il.iommu_pgsize(v515, 0x1ff000, 0x1ff000, 0x201000) == (SZ_4K, 1)
    assert il.iommu_pgsize(v515, 0x200000, 0x200000, 0x200000) == (SZ_2M, 1)
    # one driver callback per page (v5.10; v5.15 legacy .map) vs one per count (map_pages)
    for dom, calls in ((v510, 4), (v515, 4), (pages, 1)):
        il.iommu_map(dom, 0x1000, 0x2000, 0x4000, RW)
        assert dom.stats()["driver_callbacks"] == calls
        assert il.iommu_iova_to_phys(dom, 0x4000) == 0x5000


@pytest.mark.parametrize("name", ["smmuv3-v5.4", "amd-range"])
def test_map_chunks_worked_example(name: str) -> None:
    """Mapping the §5.4 example takes two driver calls (4K then 2M) and yields one 4K leaf
    and one 2M block leaf in the table."""
    dom = il.iommu_domain_alloc(name)
    il.iommu_map(dom, 0x1ff000, 0x1ff000, 0x201000, RW)
    assert dom.stats()["driver_callbacks"] == 2
    assert leaves(dom) == [(0x1ff000, SZ_4K, 0x1ff000), (0x200000, SZ_2M, 0x200000)]
    assert dom.stats()["map_calls"] == 1 and dom.stats()["pages_mapped"] == 0x201


# ---- bad input: errno, message, nothing changed ----------------------------------------

def populated(name: str = "smmuv3-v5.4", **kw: object) -> il.IommuDomain:
    dom = il.iommu_domain_alloc(name, ias=40, **kw)
    il.iommu_map(dom, 0x200000, 0x4000_0000, SZ_2M, RW)
    il.iommu_map(dom, 0x1000, 0x9000, 0x3000, il.IOMMU_READ)
    for iova in (0x1000, 0x2000, 0x200000):
        il.dma_access(dom, iova)
    return dom


MAP_ERRORS = [  # (iova, paddr, size, prot, errno, text naming the bad value)
    (0x10001, 0x10000, 0x1000, RW, EINVAL, "iova 0x10001"),
    (0x10000, 0x10800, 0x1000, RW, EINVAL, "paddr 0x10800"),
    (0x10000, 0x10000, 0x1800, RW, EINVAL, "size 0x1800"),
    (0x10000, 0x10000, 0, RW, EINVAL, "size 0"),
    ((1 << 40) - 0x1000, 0, 0x2000, RW, ERANGE, "40-bit IAS"),
    (1 << 40, 0, 0x1000, RW, ERANGE, "0x10000000000"),
    (0x10000, (1 << 48) - 0x1000, 0x2000, RW, ERANGE, "OAS"),
    (-0x1000, 0, 0x1000, RW, ERANGE, "iova -0x1000"),
    (0x10000, 0x10000, -0x1000, RW, ERANGE, "size -0x1000"),
    (0x2000, 0x50000, 0x1000, RW, EEXIST, "mapping at 0x2000 -> 0xa000"),   # exact page
    (0x0, 0x50000, 0x2000, RW, EEXIST, "mapping at 0x1000 -> 0x9000"),      # overlap tail
    (0x3ff000, 0x50000, 0x2000, RW, EEXIST, "2M mapping at 0x200000"),      # inside block
    (0x10000, 0x10000, 0x1000, 0, EINVAL, "prot 0x0"),
    (0x10000, 0x10000, 0x1000, il.IOMMU_CACHE, EINVAL, "prot 0x4"),
    (0x10000, 0x10000, 0x1000, 1 << 9, EINVAL, "prot 512"),
    (0x10000, 0x10000, 0x1000, True, EINVAL, "True"),
    (0x10000, 0x10000, 0x1000, 1.0, EINVAL, "1.0"),
    ("0x10000", 0x10000, 0x1000, RW, EINVAL, "iova"),
]


@pytest.mark.parametrize("name", ["smmuv3-v5.4", "vtd-psi", "amd-range", "virtio-iommu"])
@pytest.mark.parametrize("iova,paddr,size,prot,err,text", MAP_ERRORS)
def test_map_errors_change_nothing(domain_state, name: str, iova, paddr, size, prot,
                                   err: int, text: str) -> None:
    dom = populated(name)
    before = domain_state(dom)
    with pytest.raises(IommuError) as exc:
        il.iommu_map(dom, iova, paddr, size, prot)
    assert exc.value.errno == err
    assert isinstance(exc.value, OSError)
    assert text in str(exc.value)
    assert domain_state(dom) == before


UNMAP_ERRORS = [
    (0x1800, 0x1000, EINVAL, "iova 0x1800"),
    (0x1000, 0x1800, EINVAL, "size 0x1800"),
    (0x1000, 0, EINVAL, "size 0"),
    ((1 << 40) - 0x1000, 0x2000, ERANGE, "40-bit IAS"),
    (-0x1000, 0x1000, ERANGE, "iova -0x1000"),
]


@pytest.mark.parametrize("name", ["smmuv3-v5.4", "vtd-psi", "amd-range"])
@pytest.mark.parametrize("iova,size,err,text", UNMAP_ERRORS)
@pytest.mark.parametrize("fast", [False, True])
def test_unmap_errors_change_nothing(domain_state, name: str, iova: int, size: int,
                                     err: int, text: str, fast: bool) -> None:
    dom = populated(name)
    before = domain_state(dom)
    g = il.IommuIotlbGather()
    with pytest.raises(IommuError) as exc:
        if fast:
            il.iommu_unmap_fast(dom, iova, size, g)
        else:
            il.iommu_unmap(dom, iova, size)
    assert exc.value.errno == err and text in str(exc.value)
    assert domain_state(dom) == before
    assert g.pgsize == 0


@pytest.mark.parametrize("kwargs,text", [
    ({"strategy": "smmuv9"}, "'smmuv9'"),
    ({"strategy": "smmuv3-v5.4", "iotlb_size": 8}, "iotlb_size"),
    ({"strategy": "smmuv3-v5.4", "type": "IDENTITY"}, "'IDENTITY'"),
    ({"strategy": "smmuv3-v5.4", "api": "rfc-2018"}, "'rfc-2018'"),
    ({"strategy": "smmuv3-v5.4", "ias": 64}, "64"),
    ({"strategy": "smmuv3-v5.4", "ias": "48"}, "'48'"),
    ({"strategy": "vtd-psi", "np_cache": True}, "np_cache"),  # an AMD-only parameter
])
def test_domain_alloc_rejects_unknown(kwargs: dict, text: str) -> None:
    strategy = kwargs.pop("strategy")
    with pytest.raises(IommuError) as exc:
        il.iommu_domain_alloc(strategy, **kwargs)
    assert exc.value.errno == EINVAL and text in str(exc.value)


# ---- map unwinding ---------------------------------------------------------------------

@pytest.mark.parametrize("name,chunks", [
    # 4K|2M|1G: 4K, 2M, 2M; every power of two (VT-d, AMD, virtio): 4K, then one 4M
    ("smmuv3-v4.14", 3), ("smmuv3-v5.4", 3), ("smmuv3-ril", 3), ("vtd-psi", 2),
    ("amd-range", 2), ("virtio-iommu", 2),
])
def test_map_unwinds_on_driver_failure(name: str, chunks: int) -> None:
    """L4.13 ``iommu_map``: on a driver error, ``iommu_unmap(orig_iova, orig_size - size)``
    of exactly the bytes mapped, then the error; no ``map`` trace event on failure."""
    iova, size = 0x7fff_f000, 0x401000
    for k in range(chunks):
        dom = populated(name)
        before = leaves(dom)
        maps_before = dom.stats()["map_calls"]
        dom.fail_map_after = k
        with pytest.raises(IommuError) as exc:
            il.iommu_map(dom, iova, iova, size, RW)
        assert exc.value.errno == errno.ENOMEM
        dom.fail_map_after = None
        assert leaves(dom) == before, f"fail after {k}: something stayed mapped"
        assert il.iommu_iova_to_phys(dom, 0x8000_0000 + SZ_2M) == 0
        assert dom.stats()["map_calls"] == maps_before
        assert dom.stats()["unmap_calls"] == (1 if k else 0)  # the unwind's iommu_unmap
        ops = [e.op for e in dom.trace.events]
        assert ops.count("iommu_map") == 2 and ops.count("iommu_unmap") == (1 if k else 0)
        for a in (iova, iova + SZ_4K, iova + SZ_4K + SZ_2M):  # the device sees nothing
            assert il.dma_access(dom, a) == "fault"
    dom = populated(name)
    dom.fail_map_after = chunks  # one more than needed: the map succeeds
    il.iommu_map(dom, iova, iova, size, RW)
    assert il.iommu_iova_to_phys(dom, iova + size - 1) == iova + size - 1


def test_map_unwinds_pages_mapped_by_the_failing_call() -> None:
    """L5.15 ``__iommu_map``: "Some pages may have been mapped, even if an error occurred,
    so we should account for those so they can be unmapped" (``size -= mapped``)."""
    dom = il.iommu_domain_alloc("amd-range")  # v5.15: one callback maps many pages
    real_map = dom.ops.map

    def flaky(d, iova, paddr, pgsize, count, prot):
        half = count // 2
        real_map(d, iova, paddr, pgsize, half, prot)
        err = IommuError(errno.ENOMEM, "out of page-table memory half way")
        err.mapped = half * pgsize  # type: ignore[attr-defined]
        raise err

    dom.ops = dataclasses.replace(dom.ops, map=flaky)
    assert il.iommu_pgsize(dom, 0x1000, 0x2000, 8 * SZ_4K) == (SZ_4K, 8)
    with pytest.raises(IommuError):
        il.iommu_map(dom, 0x1000, 0x2000, 8 * SZ_4K, RW)  # 4K × 8 in one call
    assert leaves(dom) == []


# ---- unmap semantics ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["smmuv3-v4.14", "smmuv3-v5.4", "smmuv3-ril", "smmuv2",
                                  "virtio-iommu"])
def test_unmap_stops_at_first_hole(name: str) -> None:
    """L4.13 ``iommu_unmap``: ``if (!unmapped_page) break;`` — returns the bytes so far.

    The hole sits where a chunk starts for every bitmap here (4K|2M|1G: each 4K page;
    every power of two: 16K at 0x1c000, then 8K at 0x20000)."""
    dom = il.iommu_domain_alloc(name)
    il.iommu_map(dom, 0x1c000, 0x9c000, 0x4000, RW)
    il.iommu_map(dom, 0x21000, 0xa1000, 0x1000, RW)  # a hole at 0x20000
    assert il.iommu_unmap(dom, 0x1c000, 0x6000) == 0x4000
    assert il.iommu_iova_to_phys(dom, 0x21000) == 0xa1000  # beyond the hole: untouched
    assert il.iommu_unmap(dom, 0x20000, 0x1000) == 0  # a hole
    assert il.iommu_unmap(dom, 0x21000, 0x1000) == 0x1000
    assert leaves(dom) == []
    st = dom.stats()
    assert st["unmap_calls"] == 3 and st["bytes_unmapped"] == 0x5000


@pytest.mark.parametrize("name", ["vtd-psi", "amd-range", "amd-flush-all"])
def test_vtd_and_amd_never_stop_at_a_hole(name: str) -> None:
    """VT-d and AMD drivers never return 0, so the core never stops at a hole:
    L5.10 intel/iommu.c ``intel_iommu_unmap`` raises the size to the span of the level
    ``pfn_to_dma_pte`` stopped at and returns it (and flushes it); L5.10 amd/iommu.c
    ``iommu_unmap_page`` (L5.15 ``iommu_v1_unmap_page``) counts every ``fetch_pte`` step,
    holes included. Same mappings as the test above: the hole at 0x20000 does not protect
    the page after it."""
    dom = il.iommu_domain_alloc(name)
    il.iommu_map(dom, 0x1c000, 0x9c000, 0x4000, RW)
    il.iommu_map(dom, 0x21000, 0xa1000, 0x1000, RW)
    assert il.iommu_unmap(dom, 0x1c000, 0x6000) == 0x6000
    assert il.iommu_iova_to_phys(dom, 0x21000) == 0 and leaves(dom) == []
    assert il.iommu_unmap(dom, 0x20000, 0x1000) == 0x1000   # a hole, in an existing table
    assert il.iommu_unmap(dom, 0x200000, 0x1000) == SZ_2M    # no level-3 table: 2M span
    assert il.iommu_unmap(dom, 0x4000_0000, 0x1000) == SZ_1G  # no level-2 table: 1G span
    st = dom.stats()
    assert st["bytes_unmapped"] == 0x7000 + SZ_2M + SZ_1G and st["unmap_calls"] == 4
    if name == "vtd-psi":  # every chunk flushed: 16K, 8K, 4K, 2M and 1G (AM 18 = the max)
        assert st["cmd:QI_IOTLB_PSI"] == 5


@pytest.mark.parametrize("name", ["vtd-psi", "amd-range", "amd-flush-all"])
def test_unmap_more_than_asked_large_page(name: str) -> None:
    """L4.13 ``intel_iommu_unmap``: "Cope with horrid API which requires us to unmap more
    than the size argument if it happens to be a large-page mapping" — returns 2M."""
    dom = il.iommu_domain_alloc(name)
    il.iommu_map(dom, 0x200000, 0x4000_0000, SZ_2M, RW)
    assert [s for _, s, _ in leaves(dom)] == [SZ_2M]
    assert il.iommu_unmap(dom, 0x201000, SZ_4K) == SZ_2M
    assert leaves(dom) == []
    assert dom.stats()["bytes_unmapped"] == SZ_2M


def test_unmap_inside_block_splits_on_io_pgtable() -> None:
    """io-pgtable-arm ≤ v6.12 (L5.4 ``arm_lpae_split_blk_unmap``): SMMU unmaps just the
    4K asked for; with ``split_blocks=False`` (L6.18) it unmaps nothing."""
    dom = il.iommu_domain_alloc("smmuv3-v5.4")
    il.iommu_map(dom, 0x200000, 0x4000_0000, SZ_2M, RW)
    assert il.iommu_unmap(dom, 0x201000, SZ_4K) == SZ_4K
    assert len(leaves(dom)) == 511
    assert il.iommu_iova_to_phys(dom, 0x202000) == 0x4000_2000
    v618 = il.iommu_domain_alloc("smmuv3-v5.4", split_blocks=False)
    il.iommu_map(v618, 0x200000, 0x4000_0000, SZ_2M, RW)
    assert il.iommu_unmap(v618, 0x201000, SZ_4K) == 0
    assert leaves(v618) == [(0x200000, SZ_2M, 0x4000_0000)]


def test_unmap_fast_then_sync_v5_4() -> None:
    """L5.4: ``iommu_unmap_fast`` only gathers; ``iommu_tlb_sync`` issues the TLBIs + one
    CMD_SYNC and re-inits the gather."""
    dom = il.iommu_domain_alloc("smmuv3-v5.4")
    il.iommu_map(dom, 0x10000, 0x10000, 0x4000, RW)
    g = il.IommuIotlbGather()
    before = dom.stats()
    assert il.iommu_unmap_fast(dom, 0x10000, 0x4000, g) == 0x4000
    mid = dom.stats()
    assert (mid["inv_cmds"], mid["sync_cmds"]) == (before["inv_cmds"], before["sync_cmds"])
    assert (g.start, g.end, g.pgsize) == (0x10000, 0x14000, SZ_4K)  # v5.4: end exclusive
    il.iommu_iotlb_sync(dom, g)
    after = dom.stats()
    assert after["inv_cmds"] - mid["inv_cmds"] == 4
    assert after["sync_cmds"] - mid["sync_cmds"] == 1
    assert g.pgsize == 0 and g.end == 0


# ---- iommu_map_sg ------------------------------------------------------------------------

def test_map_sg_coalesces_contiguous_entries() -> None:
    """L5.3+ ``iommu_map_sg``: one ``iommu_map`` per physically contiguous run."""
    dom = il.iommu_domain_alloc("smmuv3-v5.4")
    sg = [(0x10_0000, 0x1000), (0x10_1000, 0x3000), (0x20_0000, 0x1000), (0x20_1000, 0x1000),
          (0x30_0000, 0x2000)]
    assert iommu_map_sg(dom, 0x4000_0000, sg, RW) == 0x8000
    assert dom.stats()["map_calls"] == 3
    assert [il.iommu_iova_to_phys(dom, 0x4000_0000 + off) for off in (0, 0x3000, 0x4000,
                                                                        0x5000, 0x7000)] == [
        0x10_0000, 0x10_3000, 0x20_0000, 0x20_1000, 0x30_1000]


def test_map_sg_one_sync_map_v5_15() -> None:
    """L5.15 ``__iommu_map_sg``: non-syncing ``__iommu_map`` per run, then one
    ``iotlb_sync_map(domain, iova, mapped)`` — AMD NpCache (``domain_flush_np_cache``) flushes
    once for the whole range, and negative entries cached before the map are gone."""
    dom = il.iommu_domain_alloc("amd-range", np_cache=True)
    base = 0x4000_0000
    for off in (0, 0x1000, 0x2000, 0x3000):
        assert il.dma_access(dom, base + off) == "fault"  # cached as not present
    before = dom.stats()
    sg = [(0x10_0000, 0x1000), (0x20_0000, 0x1000), (0x30_0000, 0x2000)]
    assert iommu_map_sg(dom, base, sg, RW) == 0x4000
    after = dom.stats()
    assert after["map_calls"] - before["map_calls"] == 3
    assert after["sync_cmds"] - before["sync_cmds"] == 1
    assert after["inv_cmds"] - before["inv_cmds"] == 1  # [base, base + 16K): one aligned piece
    for off in (0, 0x1000, 0x2000, 0x3000):
        assert il.dma_access(dom, base + off) == "walk"


def test_map_sg_rolls_back_on_error(domain_state) -> None:
    """L5.15 ``__iommu_map_sg``: on error ``iommu_unmap(domain, iova, mapped)`` and the error."""
    dom = il.iommu_domain_alloc("smmuv3-v5.4")
    il.iommu_map(dom, 0x4000_5000, 0x9000_0000, 0x1000, RW)
    sg = [(0x10_0000, 0x4000), (0x20_0000, 0x2000)]  # second run hits 0x4000_5000
    with pytest.raises(IommuError) as exc:
        iommu_map_sg(dom, 0x4000_0000, sg, RW)
    assert exc.value.errno == EEXIST
    assert leaves(dom) == [(0x4000_5000, SZ_4K, 0x9000_0000)]
    st = dom.stats()
    assert st["map_calls"] == 2 and st["unmap_calls"] == 1  # the run that went in is undone
    # a bad entry is refused before anything is mapped
    before = domain_state(dom)
    with pytest.raises(IommuError) as exc:
        iommu_map_sg(dom, 0x5000_0000, [(0x10_0000, 0x1000), (0x20_0800, 0x800)], RW)
    assert exc.value.errno == EINVAL and "sg[1]" in str(exc.value)
    assert domain_state(dom) == before


# ---- the 2017 proposal (api="rfc-2017") -------------------------------------------------

def test_rfc_2017_unmap_never_syncs_v4_15() -> None:
    """Joerg Roedel's 2017 ``iommu_unmap`` never flushes; SMMUv3 v4.15 still *issues* its
    TLBIs early inside ->unmap (L4.15 arm-smmu-v3.c), but the CMD_SYNC waits for
    ``iommu_tlb_sync`` (§3.1, §3.4)."""
    dom = il.iommu_domain_alloc("smmuv3-v4.15", api="rfc-2017")
    il.iommu_map(dom, 0x10000, 0x10000, 0x4000, RW)
    before = dom.stats()
    assert il.iommu_unmap(dom, 0x10000, 0x4000) == 0x4000
    mid = dom.stats()
    assert mid["sync_cmds"] == before["sync_cmds"]
    assert mid["inv_cmds"] - before["inv_cmds"] == 4  # one TLBI per granule, early
    il.iommu_tlb_sync(dom)
    after = dom.stats()
    assert after["sync_cmds"] - mid["sync_cmds"] == 1
    assert after["cmd:CMD_SYNC"] - mid.get("cmd:CMD_SYNC", 0) == 1
    assert after["inv_cmds"] == mid["inv_cmds"]


def test_kernel_api_unmap_syncs_v4_15() -> None:
    """The merged API (L4.14 ``__iommu_unmap(..., sync=true)``): iommu_unmap ends with
    ``iotlb_sync`` → N × TLBI + 1 × CMD_SYNC on SMMUv3 v4.15 (§3.4)."""
    dom = il.iommu_domain_alloc("smmuv3-v4.15")
    il.iommu_map(dom, 0x10000, 0x10000, 0x4000, RW)
    before = dom.stats()
    il.iommu_unmap(dom, 0x10000, 0x4000)
    after = dom.stats()
    assert after["inv_cmds"] - before["inv_cmds"] == 4
    assert after["sync_cmds"] - before["sync_cmds"] == 1


@pytest.mark.parametrize("name", ["smmuv3-v4.15", "smmuv3-v5.4"])
def test_rfc_2017_map_sync_is_needless(name: str) -> None:
    """The proposed ``iommu_map_sync`` syncs after *map*, which SMMUv3 never needs (Will
    Deacon's objection, seed mail): a CMD_SYNC with nothing to complete."""
    dom = il.iommu_domain_alloc(name, api="rfc-2017")
    before = dom.stats()
    assert il.iommu_map_sync(dom, 0x10000, 0x10000, 0x4000, RW) == 0
    after = dom.stats()
    assert after["sync_cmds"] - before["sync_cmds"] == 1
    assert after["needless_sync_cmds"] - before["needless_sync_cmds"] == 1
    assert after["inv_cmds"] == before["inv_cmds"]
    assert il.iommu_iova_to_phys(dom, 0x13000) == 0x13000
    # the unmap wrapper's sync is needed: it completes the unmap's invalidations
    assert il.iommu_unmap_sync(dom, 0x10000, 0x4000) == 0x4000
    final = dom.stats()
    assert final["sync_cmds"] - after["sync_cmds"] == 1
    assert final["needless_sync_cmds"] == after["needless_sync_cmds"]


@pytest.mark.parametrize("call", ["unmap_fast", "sync"])
def test_bad_gather_rejected(domain_state, call: str) -> None:
    """A gather that is not an ``IommuIotlbGather`` is EINVAL, not a crash half way."""
    dom = populated()
    before = domain_state(dom)
    with pytest.raises(IommuError) as exc:
        if call == "sync":
            il.iommu_iotlb_sync(dom, {"start": 0})
        else:
            il.iommu_unmap_fast(dom, 0x1000, 0x1000, {"start": 0})
    assert exc.value.errno == EINVAL and "dict" in str(exc.value)
    assert domain_state(dom) == before

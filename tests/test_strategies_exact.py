"""Exact command counts per strategy (hardware-invalidation.md §9, kernel-api-history §3–4).

Setup for "one iommu_unmap of N contiguous 4 KiB pages": N pages mapped one by one (each
at a discontiguous physical address, so they stay 4 KiB leaves) from IOVA 0x1000. The
core splits the unmap with ``iommu_pgsize`` by IOVA alignment (L4.13 iommu.c): from 0x1000
every piece is 4 KiB up to 511 pages; with N = 4096 the range also contains seven
2 MiB-aligned 2 MiB pieces, whose PTE is a *table* — io-pgtable frees it with a
walk (non-leaf) invalidation (``__arm_lpae_unmap``, L4.13/L5.4 io-pgtable-arm.c).
"""

from __future__ import annotations

import pytest

import iommu_lab as il
from iommu_lab.analysis.session import Session
from iommu_lab.inputs.ops import Op

BASE = 0x1000
PAGE = 0x1000
NS = (1, 35, 64, 65, 512, 4096)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def pieces(n: int) -> tuple[int, int]:
    """(4 KiB pieces, 2 MiB table pieces) of an unmap of n pages from 0x1000."""
    if n <= 511:
        return n, 0
    tables = (n - 511) // 512
    return n - tables * 512, tables


def unmap_delta(strategy: str, n: int, caller: str = "unmap-each", **params) -> dict:
    """Map n 4 KiB pages at BASE, then one unmap of the whole range; counter deltas."""
    s = Session(strategy, caller, params)
    s.run_op(Op("map", BASE, PAGE, 0x40_0000_0000, count=n, stride=PAGE, paddr_stride=2 * PAGE))
    before = s.dom.stats()
    s.run_op(Op("unmap", BASE, n * PAGE))
    s.finish()
    after = s.dom.stats()
    assert after["bytes_unmapped"] - before["bytes_unmapped"] == n * PAGE
    return {k: after[k] - before.get(k, 0) for k in after}


def expect(d: dict, inv: int, sync: int, doorbells: int, inv_all: int = 0) -> None:
    got = (d["inv_cmds"], d["sync_cmds"], d["doorbells"], d["inv_all_cmds"])
    assert got == (inv, sync, doorbells, inv_all)


@pytest.mark.parametrize("n", NS)
def test_smmuv3_v4_14_flush_inside_every_unmap(n):
    # arm-smmu-v3.c @v4.14.5: one TLBI_NH_VA per granule, each via arm_smmu_cmdq_issue_cmd
    # (own doorbell); arm_lpae_unmap ends with io_pgtable_tlb_sync (CMD_SYNC) per ->unmap.
    # A table piece: 512 non-leaf TLBIs + tlb_sync, then the per-unmap sync (2 syncs).
    small, tables = pieces(n)
    expect(unmap_delta("smmuv3-v4.14", n), inv=small + 512 * tables, sync=small + 2 * tables,
           doorbells=2 * small + 514 * tables)


@pytest.mark.parametrize("n", NS)
def test_smmuv2_registers(n):
    # arm-smmu.c @v4.14.5: TLBIVAL per granule (MMIO write), TLBSYNC + TLBSTATUS poll per
    # ->unmap; table pieces: TLBIVA per granule + sync, then the per-unmap sync.
    small, tables = pieces(n)
    d = unmap_delta("smmuv2", n)
    expect(d, inv=small + 512 * tables, sync=small + 2 * tables,
           doorbells=2 * small + 514 * tables)
    assert d["cmd:TLBIVAL"] == small and d.get("cmd:TLBIVA", 0) == 512 * tables
    assert d["mmio_reads"] >= d["sync_cmds"]  # every TLBSYNC polls TLBSTATUS


@pytest.mark.parametrize("n", NS)
def test_smmuv3_v4_15_early_issue_one_sync(n):
    # @v4.15 (kernel-api-history §3.4): leaf TLBIs still issued inside ->unmap, one CMD_SYNC
    # in ->iotlb_sync; tables still add_flush + sync inline.
    small, tables = pieces(n)
    expect(unmap_delta("smmuv3-v4.15", n), inv=small + 512 * tables, sync=1 + tables,
           doorbells=small + 513 * tables + 1)


@pytest.mark.parametrize("n", NS)
def test_smmuv3_v5_4_gather_batches_of_64(n):
    # @v5.4.6: ->unmap only gathers; iotlb_sync builds one TLBI per granule, issued in
    # batches of CMDQ_BATCH_ENTRIES (64), the last with CMD_SYNC (§1.4: "⌈N/64⌉").
    small, tables = pieces(n)
    d = unmap_delta("smmuv3-v5.4", n)
    if not tables:
        expect(d, inv=n, sync=1, doorbells=ceil_div(n, 64))
    else:
        # 511 gathered pages; 7 table pieces each flush_walk (512 TLBIs: 8 batches + sync);
        # the last page is disjoint from the gather -> early sync of 511, then its own sync.
        expect(d, inv=511 + 512 * tables + 1, sync=tables + 2,
               doorbells=8 * tables + ceil_div(511, 64) + 1)
        assert d["walk_flushes"] == tables


@pytest.mark.parametrize("n,cmds", [(1, 1), (35, 2), (64, 1), (65, 2), (512, 1)])
def test_smmuv3_ril_range_commands(n, cmds):
    # @v5.10.89 arm_smmu_tlb_inv_range with RIL: one command per 5-bit group of num_pages
    # (§1.6 worked example: 35 pages -> SCALE 0 NUM 2, then SCALE 5 NUM 0).
    expect(unmap_delta("smmuv3-ril", n), inv=cmds, sync=1, doorbells=1)


def test_smmuv3_ril_4096_with_table_pieces():
    # 511 gathered pages = 2 range commands; each 2 MiB walk flush = 1 command (SCALE 9);
    # the last page = 1 command; syncs: 7 walks + early sync + final sync.
    expect(unmap_delta("smmuv3-ril", 4096), inv=2 + 7 + 1, sync=9, doorbells=9)


def test_ril_fields_of_the_35_page_example():
    dom = il.iommu_domain_alloc("smmuv3-ril")
    cmds = dom.driver.ril_commands(0x100000, 35 * PAGE, PAGE, True)
    fields = [dict(c.fields) for c in cmds]
    assert [(f["SCALE"], f["NUM"]) for f in fields] == [(0, 2), (5, 0)]
    assert all(f["TG"] == 1 and f["TTL"] == 3 and f["Leaf"] == 1 for f in fields)
    assert [c.size for c in cmds] == [3 * PAGE, 32 * PAGE]


@pytest.mark.parametrize("n", NS)
def test_vtd_dma_strict_one_psi_per_buffer(n):
    # intel-iommu.c @v4.14.5 / @v5.10.89 intel_unmap (own DMA ops until v5.11): one PSI for
    # the buffer, mask = ilog2(roundup_pow_of_two(pages)), via qi_submit_sync:
    # descriptor + wait descriptor, one IQT doorbell (§3.6).
    d = unmap_delta("vtd-psi", n, caller="dma-strict")
    expect(d, inv=1, sync=1, doorbells=1)
    assert d["cmd:QI_IOTLB_PSI"] == 1 and d["cmd:QI_IWD"] == 1


def test_vtd_dsi_above_cap_max_amask_val():
    # iommu_flush_iotlb_psi: mask > cap_max_amask_val -> domain-selective flush.
    d = unmap_delta("vtd-psi", 35, caller="dma-strict", cap_max_amask_val=5)
    expect(d, inv=1, sync=1, doorbells=1, inv_all=1)
    assert d["cmd:QI_IOTLB_DSI"] == 1


def test_vtd_iommu_api_flushes_per_chunk():
    # INTEL_IOMMU_PGSIZES (~0xFFF): the core hands intel_iommu_unmap power-of-two chunks
    # by alignment; from 0x1000, 35 pages = 1+2+4+8+16+4 pages -> six PSI flushes.
    expect(unmap_delta("vtd-psi", 35), inv=6, sync=6, doorbells=6)


@pytest.mark.parametrize("n", NS)
def test_amd_flush_all_every_sync_flushes_the_domain(n):
    # amd/iommu.c @v5.10.89: iotlb_sync = amd_iommu_flush_iotlb_all: INV_IOMMU_PAGES(all)
    # + COMPLETION_WAIT, each command with its own CMD_TAIL write (§4.1, §9: 2 doorbells).
    expect(unmap_delta("amd-flush-all", n), inv=1, sync=1, doorbells=2, inv_all=1)


@pytest.mark.parametrize("n", NS)
def test_amd_range_one_s_bit_command(n):
    # @v5.15+: one INVALIDATE_IOMMU_PAGES with the S bit for the merged range + wait (§4.2).
    expect(unmap_delta("amd-range", n), inv=1, sync=1, doorbells=2)


def test_amd_range_np_cache_splits_into_aligned_pieces():
    # NpCache: naturally aligned pieces, each its own command; one COMPLETION_WAIT (§9).
    # Unmap: amd/iommu.c @v5.15:2223 passes gather->end - gather->start (one byte short of
    # the inclusive range) to the splitter (:1287-1309), so 35 pages from 0x1000 end in
    # sub-page pieces: 4K, 8K, 16K, 32K, 64K, 8K, 4K, then 12 single-page repeats of
    # 0x23000 (2K, 1K ... 1 byte) = 19 INVALIDATE_IOMMU_PAGES (source audit, defect 5).
    d = unmap_delta("amd-range", 35, np_cache=True)
    expect(d, inv=19, sync=1, doorbells=20)
    # map: iotlb_sync_map(iova, size) with the true size: 4K .. 64K, 16K = 6 pieces (d4)
    s = Session("amd-range", "unmap-each", {"np_cache": True})
    s.run_op(Op("map", BASE, 35 * PAGE, 0x40_0000_0000))
    assert (s.dom.stats()["inv_cmds"], s.dom.stats()["sync_cmds"]) == (6, 1)


def test_amd_s_bit_block_is_the_natural_superset():
    # build_inv_address: 35 pages from 0x100000 -> msb_diff 17 -> 256 KiB block (§4.2).
    dom = il.iommu_domain_alloc("amd-range")
    cmd = dom.driver.inv_pages(0x100000, 35 * PAGE)
    assert (cmd.iova, cmd.size, dict(cmd.fields)["S"]) == (0x100000, 0x40000, 1)
    cmd = dom.driver.inv_pages(0x3000, 2 * PAGE)  # pages 3..4 -> 32 KiB block at 0
    assert (cmd.iova, cmd.size) == (0, 0x8000)


@pytest.mark.parametrize("n", (1, 64, 512))
def test_virtio_one_unmap_request_per_aligned_chunk(n):
    # virtio-iommu.c @v5.15: viommu_unmap queues one UNMAP request per call; iotlb_sync
    # kicks once and waits for all (§5, §9: 1 request, 1 kick, 1 wait). The wait is a
    # request round trip, not a sync command: virtio-iommu has none.
    s = Session("virtio-iommu", "unmap-each")
    base = 0x40000000
    s.run_op(Op("map", base, PAGE, 0x40_0000_0000, count=n, stride=PAGE, paddr_stride=2 * PAGE))
    before = s.dom.stats()
    s.run_op(Op("unmap", base, n * PAGE))
    after = s.dom.stats()
    d = {k: after[k] - before.get(k, 0) for k in after}
    expect(d, inv=1, sync=0, doorbells=1)
    assert d["cmd:VIRTIO_IOMMU_T_UNMAP"] == 1 and d["request_waits"] == 1


@pytest.mark.parametrize("k", (1, 3, 64, 65))
def test_runs_of_2m_blocks(k):
    """K 2 MiB blocks from 0x200000, unmapped with one iommu_unmap."""
    base = 0x200000

    def delta(strategy, caller="unmap-each"):
        s = Session(strategy, caller)
        s.run_op(Op("map", base, 1 << 21, 0x40_0000_0000, count=k, stride=1 << 21,
                    paddr_stride=2 << 21))
        before = s.dom.stats()
        s.run_op(Op("unmap", base, k << 21))
        s.finish()
        after = s.dom.stats()
        return {x: after[x] - before.get(x, 0) for x in after}

    # v4.14: each 2 MiB leaf piece: tlb_add_flush(granule = 2M) = 1 TLBI, + CMD_SYNC.
    expect(delta("smmuv3-v4.14"), inv=k, sync=k, doorbells=2 * k)
    expect(delta("smmuv2"), inv=k, sync=k, doorbells=2 * k)
    # v4.15: k early TLBIs + one sync.
    expect(delta("smmuv3-v4.15"), inv=k, sync=1, doorbells=k + 1)
    # v5.4: gather pgsize 2M merges; one TLBI per 2M granule, batches of 64.
    expect(delta("smmuv3-v5.4"), inv=k, sync=1, doorbells=ceil_div(k, 64))
    # AMD: one command + wait whatever the size.
    expect(delta("amd-range"), inv=1, sync=1, doorbells=2)
    expect(delta("amd-flush-all"), inv=1, sync=1, doorbells=2, inv_all=1)


def test_will_deacon_case_wasted_early_tlbis():
    """Aug 2017: with early issue, a later flush-all makes the per-page TLBIs waste."""
    n = 64
    v415 = unmap_delta("smmuv3-v4.15", n, caller="unmap-then-flush-all")
    assert v415["cmd:CMD_TLBI_NH_VA"] == n and v415["cmd:CMD_TLBI_NH_ASID"] == 1
    assert v415["wasted_inv_cmds"] == n
    v54 = unmap_delta("smmuv3-v5.4", n, caller="unmap-then-flush-all")
    assert v54.get("cmd:CMD_TLBI_NH_VA", 0) == 0 and v54["cmd:CMD_TLBI_NH_ASID"] == 1
    assert v54["wasted_inv_cmds"] == 0


def test_rfc_wrappers_sync_after_map_is_needless():
    """Will's 'flags' objection: iommu_map_sync syncs although SMMUv3 needs nothing on map."""
    s = Session("smmuv3-v4.15", "rfc-2017-wrappers")
    s.run_op(Op("map", BASE, PAGE, 0x40_0000_0000, count=8, stride=PAGE, paddr_stride=2 * PAGE))
    st = s.dom.stats()
    assert st["sync_cmds"] == 8 and st["needless_sync_cmds"] == 8 and st["inv_cmds"] == 0


def test_stage2_smmuv3_uses_vmid_commands():
    # arm-smmu-v3.c: stage-2 domains invalidate by VMID: TLBI_S2_IPA per granule,
    # TLBI_S12_VMALL for the whole context (hardware-invalidation.md §1.2).
    s = Session("smmuv3-v5.4", "unmap-then-flush-all", {"stage": 2})
    s.run([Op("map", 0, PAGE, 1 << 36, count=4, stride=PAGE, paddr_stride=2 * PAGE),
           Op("unmap", 0, 4 * PAGE)])
    st = s.dom.stats()
    assert st["cmd:CMD_TLBI_S12_VMALL"] == 1 and "cmd:CMD_TLBI_NH_ASID" not in st
    d = unmap_delta("smmuv3-v5.4", 3, stage=2)
    assert d["cmd:CMD_TLBI_S2_IPA"] == 3
    assert s.dom.pgtable.cfg.fmt == "ARM_64_LPAE_S2"

"""AMD-Vi command buffer (drivers/iommu/amd/iommu.c), two eras.

- ``amd-flush-all`` (v5.10, ≤ v5.14): ``->unmap`` clears PTEs only; ``->iotlb_sync`` is
  ``amd_iommu_flush_iotlb_all``: ``INVALIDATE_IOMMU_PAGES`` for *all* pages of the domain
  (S=1, PDE=1) + ``COMPLETION_WAIT``. Every command is written with its own ``CMD_TAIL``
  doorbell (``iommu_queue_command``). With NpCache (a virtual IOMMU that caches non-present
  entries) ``amd_iommu_map`` flushes each ``->map`` chunk (``domain_flush_np_cache``), and
  v5.10 ``build_inv_iommu_pages`` turns any flush of more than one page into a whole-domain
  one (v5.10.89:940-945, 2601). v4.20–v5.3 also had an empty ``iotlb_range_add``.
- ``amd-range`` (v5.15, Nadav Amit): the gather always merges on bare metal (even across a
  hole: ``amd_iommu_unmap`` adds the range whatever was unmapped); ``->iotlb_sync`` issues
  one ``INVALIDATE_IOMMU_PAGES`` whose S-bit encodes the naturally aligned power-of-two block
  containing the range (``build_inv_address``). It passes ``gather->end - gather->start``,
  one byte short of the inclusive range (v5.15:2223): harmless on bare metal, but with
  NpCache the naturally aligned splitter (v5.15:1287-1309) ends in sub-page pieces of the
  last page, and a flush-all (``domain_flush_pages(0, CMD_INV_IOMMU_ALL_PAGES_ADDRESS)``)
  halves its way down in 63 commands. NpCache also syncs the gather on disjoint ranges,
  flushes on map (``iotlb_sync_map``) and forces strict mode.
Both eras have only ``.map``/``.unmap`` (``map_pages`` came later): one page per call.
See hardware-invalidation.md §4 and source-audit-2026-11-29 defects 5, 6, 8.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.domain import IommuDomain, IommuDomainOps
from ..core.gather import ULONG_MAX, IommuIotlbGather
from ..core.iommu import iotlb_sync_gather
from ..hw.commands import MAP_SIDE, Command
from ..units import SZ_4K
from .base import Driver

AMD_IOMMU_PGSIZES = (~0xFFF & ~(2 << 38)) & ((1 << 64) - 1)  # 512G pages: hardware bug
CMD_INV_IOMMU_ALL_PAGES_ADDRESS = 0x7FFFFFFFFFFFFFFF
PAGE_MASK = ~0xFFF


def iommu_num_pages(address: int, size: int) -> int:
    """``iommu_num_pages(addr, len, PAGE_SIZE)``: 4 KiB pages the byte range touches."""
    return ((address & 0xFFF) + size + 0xFFF) >> 12


def aligned_pieces(address: int, size: int) -> list[tuple[int, int]]:
    """``domain_flush_pages`` with NpCache: repeated flushes of naturally aligned ranges,
    each "the smaller between the natural alignment of the address that we flush and the
    greatest naturally aligned region that fits in the range" (v5.15 amd/iommu.c)."""
    out = []
    while size:
        size_alignment = size.bit_length() - 1                  # __fls(size)
        if address & ((1 << 64) - 1):
            flush = 1 << min((address & -address).bit_length() - 1, size_alignment)
        else:
            flush = 1 << size_alignment
        out.append((address, flush))
        address, size = (address + flush) & ((1 << 64) - 1), size - flush
    return out


class AmdIommuFlushAll(Driver):
    """≤ v5.14: every ``iotlb_sync`` flushes the whole domain."""

    name = "amd-flush-all"
    cmdq_entries = 512       # CMD_BUFFER_ENTRIES (8 KiB buffer)
    keep_free = 2            # "SW keeps > 0x20 bytes free"
    doorbell_reg = "CMD_TAIL"
    cons_reg = "CMD_HEAD"
    mem_poll = True          # COMPLETION_WAIT stores to a semaphore in memory
    params: ClassVar[dict[str, Any]] = {"np_cache": False}

    def domain_ops(self) -> IommuDomainOps:
        """v5.10 ``amd_iommu_ops``: ``.map``, ``.unmap``, ``.flush_iotlb_all``, ``.iotlb_sync``."""
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages,
                              iotlb_sync=self.iotlb_sync, flush_iotlb_all=self.flush_iotlb_all,
                              one_page_per_call=True)

    def map_pages(self, dom: IommuDomain, iova: int, paddr: int, pgsize: int, pgcount: int,
                  prot: int) -> int:
        """``amd_iommu_map``: PTEs for the chunk; with NpCache ``domain_flush_np_cache``."""
        size = pgsize * pgcount
        self.map_chunk(dom, iova, paddr, size, prot)
        if self.p["np_cache"]:
            self.queue_command(self.inv_pages_v510(iova, size))
            self.completion_wait()
        return size

    def unmap_pages(self, dom: IommuDomain, iova: int, pgsize: int, pgcount: int,
                    gather: IommuIotlbGather) -> int:
        """``amd_iommu_unmap``: ``iommu_unmap_page`` clears PTEs, no flush here; then the
        requested range goes into the gather whatever was unmapped."""
        t0 = dom.clock.now
        dom.clock.busy(dom.costs.call_ns)
        size = pgsize * pgcount
        unmapped = self.iommu_unmap_page(dom, iova, size, t0)
        self.gather_add(gather, iova, size)
        return unmapped

    def iommu_unmap_page(self, dom: IommuDomain, iova: int, size: int, t0: int) -> int:
        """``iommu_unmap_page`` (v5.10 iommu.c / v5.15 io_pgtable.c ``iommu_v1_unmap_page``):
        step by what ``fetch_pte`` finds — a page or large page is cleared, a hole is
        skipped by the span of the level it sits at — and count every step, so the
        result is never 0 and may exceed ``size`` (the core never stops at a hole)."""
        pt, unmapped = dom.pgtable, 0
        leaves = iter(pt.leaves(iova & ~(pt.granule - 1), iova + size))
        leaf = next(leaves, None)
        while unmapped < size:
            if leaf is not None and leaf[0] <= iova < leaf[0] + leaf[1]:
                step = leaf[1]
                dom.hw.iotlb.mark_stale(dom.asid, leaf[0], leaf[0] + step, t0)
                pt.unmap_pages(leaf[0], step, 1, None, ops=None)
                dom.clock.busy(dom.costs.pte_update_ns)
                leaf = next(leaves, None)
            else:
                step = pt.walk_levels(iova)[-1].span if iova < 1 << pt.cfg.ias else size
            iova = (iova & ~(step - 1)) + step
            unmapped += step
        return unmapped

    def gather_add(self, gather: IommuIotlbGather, iova: int, size: int) -> None:
        """Nothing to record: the sync flushes everything anyway."""

    def iotlb_range_add(self, dom: IommuDomain, iova: int, size: int) -> None:  # type: ignore[override]
        """``amd_iommu_iotlb_range_add`` (v4.20–v5.3): an empty function (2017 API only here)."""

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """``amd_iommu_iotlb_sync`` = ``amd_iommu_flush_iotlb_all`` (≤ v5.14)."""
        self.flush_iotlb_all(dom)

    def flush_iotlb_all(self, dom: IommuDomain) -> None:
        """``amd_iommu_flush_iotlb_all``: the whole domain, then wait."""
        self.tlb_flush_all()

    def tlb_flush_all(self) -> None:  # type: ignore[override]
        """``domain_flush_tlb_pde`` + ``domain_flush_complete``."""
        self.queue_command(self.inv_all(pde=1))
        self.completion_wait()

    def inv_all(self, pde: int, reason: str = "") -> Command:
        """``INVALIDATE_IOMMU_PAGES`` of every page of the domain (S=1, all-pages address)."""
        return Command("INVALIDATE_IOMMU_PAGES_ALL", self.asid,
                       fields=(("S", 1), ("PDE", pde),
                               ("ADDR", CMD_INV_IOMMU_ALL_PAGES_ADDRESS & PAGE_MASK)),
                       reason=reason)

    def inv_pages_v510(self, address: int, size: int) -> Command:
        """v5.10 ``build_inv_iommu_pages`` (pde 0 on this path): "If we have to flush more
        than one page, flush all TLB entries for this domain"."""
        if iommu_num_pages(address, size) > 1:
            return self.inv_all(pde=0, reason=MAP_SIDE)
        return Command("INVALIDATE_IOMMU_PAGES", self.asid, address & PAGE_MASK, SZ_4K, 0,
                       (("S", 0), ("PDE", 0)), MAP_SIDE)

    def queue_command(self, cmd: Command) -> None:
        """``iommu_queue_command``: copy to the buffer and write ``CMD_TAIL`` (a doorbell)."""
        self.issue([(cmd, 1)])

    def completion_wait(self) -> None:
        """``iommu_completion_wait``: ``COMPLETION_WAIT`` (store to sem) and poll memory."""
        self.issue([(Command("COMPLETION_WAIT", fields=(("S", 1),)), 1)], wait=True)


class AmdIommuRange(AmdIommuFlushAll):
    """v5.15+: page-selective flushes with the S bit; NpCache splitting in a VM."""

    name = "amd-range"

    def domain_ops(self) -> IommuDomainOps:
        """v5.15 ``amd_iommu_ops``: adds ``.iotlb_sync_map`` (NpCache)."""
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages,
                              iotlb_sync=self.iotlb_sync, flush_iotlb_all=self.flush_iotlb_all,
                              iotlb_sync_map=self.iotlb_sync_map, one_page_per_call=True)

    def forces_strict(self) -> str | None:
        """NpCache: "Using strict mode due to virtualization" (amd/init.c @v5.15)."""
        return "NpCache forces strict" if self.p["np_cache"] else None

    def map_pages(self, dom: IommuDomain, iova: int, paddr: int, pgsize: int, pgcount: int,
                  prot: int) -> int:
        """``amd_iommu_map``: PTEs only; the map-side flush is ``iotlb_sync_map``."""
        size = pgsize * pgcount
        self.map_chunk(dom, iova, paddr, size, prot)
        return size

    def gather_add(self, gather: IommuIotlbGather, iova: int, size: int) -> None:
        """``amd_iommu_iotlb_gather_add_page``: merge always (sync first only with NpCache)."""
        if gather.queued:
            return
        rules = self.dom.core.gather_rules()
        if self.p["np_cache"] and rules.is_disjoint(gather, iova, size):
            iotlb_sync_gather(self.dom, gather)
        rules.add_range(gather, iova, size)
        gather.pgsize = gather.pgsize or SZ_4K

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """``amd_iommu_iotlb_sync``: ``domain_flush_pages(start, end - start, 1)`` + wait.

        ``end`` is inclusive, so the size is one byte short; an empty gather
        (start = ULONG_MAX, end = 0) wraps to a one-byte flush at the top page.
        """
        size = (gather.end - gather.start) & ULONG_MAX if gather.pgsize else 1
        self.flush_pages(gather.start if gather.pgsize else ULONG_MAX, size)

    def iotlb_sync_map(self, dom: IommuDomain, iova: int, size: int) -> None:
        """``amd_iommu_iotlb_sync_map``: only with NpCache (``domain_flush_np_cache``)."""
        if self.p["np_cache"]:
            self.flush_pages(iova, size, MAP_SIDE)

    def tlb_flush_all(self) -> None:  # type: ignore[override]
        """``amd_iommu_domain_flush_tlb_pde``: ``domain_flush_pages(0, ALL, 1)`` + wait."""
        self.flush_pages(0, CMD_INV_IOMMU_ALL_PAGES_ADDRESS)

    def flush_pages(self, address: int, size: int, reason: str = "") -> None:
        """``domain_flush_pages``: one S-bit command (bare metal) or one per naturally
        aligned piece (NpCache), then ``domain_flush_complete``."""
        pieces = aligned_pieces(address, size) if self.p["np_cache"] else [(address, size)]
        for a, n in pieces:
            self.queue_command(self.inv_pages(a, n, reason))
        self.completion_wait()

    def inv_pages(self, address: int, size: int, reason: str = "") -> Command:
        """``build_inv_iommu_pages`` with ``build_inv_address``'s natural-alignment rule."""
        if iommu_num_pages(address, size) == 1:
            return Command("INVALIDATE_IOMMU_PAGES", self.asid, address & PAGE_MASK, SZ_4K, 0,
                           (("S", 0), ("PDE", 1)), reason)
        end = address + size - 1
        msb_diff = (end ^ address).bit_length() - 1
        if msb_diff > 51:
            return self.inv_all(pde=1, reason=reason)
        block = 1 << (msb_diff + 1)
        encoded = (address | ((1 << msb_diff) - 1)) & PAGE_MASK
        return Command("INVALIDATE_IOMMU_PAGES", self.asid, address & ~(block - 1), block, 0,
                       (("S", 1), ("PDE", 1), ("ADDR", encoded)), reason)

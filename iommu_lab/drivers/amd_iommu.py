"""AMD-Vi command buffer (drivers/iommu/amd/iommu.c), two eras.

- ``amd-flush-all`` (v5.10, ≤ v5.14): ``->unmap`` clears PTEs only; ``->iotlb_sync`` is
  ``amd_iommu_flush_iotlb_all``: ``INVALIDATE_IOMMU_PAGES`` for *all* pages of the domain
  (S=1, PDE=1) + ``COMPLETION_WAIT``. Every command is written with its own ``CMD_TAIL``
  doorbell (``iommu_queue_command``). v4.20–v5.3 also had an empty ``iotlb_range_add``.
- ``amd-range`` (v5.15+, Nadav Amit): the gather always merges on bare metal;
  ``->iotlb_sync`` issues one ``INVALIDATE_IOMMU_PAGES`` whose S-bit encodes the naturally
  aligned power-of-two block containing the range (``build_inv_address``). With NpCache
  (a virtual IOMMU) the gather syncs on disjoint ranges, flushes are split into naturally
  aligned pieces, map flushes too (``iotlb_sync_map``) and the DMA domain is forced strict.
See hardware-invalidation.md §4.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.domain import IommuDomain, IommuDomainOps
from ..core.gather import (
    IommuIotlbGather,
    gather_is_disjoint,
    gather_span,
    iommu_iotlb_gather_add_range,
)
from ..core.iommu import _iotlb_sync
from ..hw.commands import Command
from ..units import SZ_4K
from .base import Driver, lpae_leaf_chunks

AMD_IOMMU_PGSIZES = (~0xFFF & ~(2 << 38)) & ((1 << 64) - 1)  # 512G pages: hardware bug
CMD_INV_IOMMU_ALL_PAGES_ADDRESS = 0x7FFFFFFFFFFFFFFF


class AmdIommuFlushAll(Driver):
    """≤ v5.14: every ``iotlb_sync`` flushes the whole domain."""

    name = "amd-flush-all"
    cmdq_entries = 512       # CMD_BUFFER_ENTRIES (8 KiB buffer)
    keep_free = 2            # "SW keeps > 0x20 bytes free"
    doorbell_reg = "CMD_TAIL"
    cons_reg = "CMD_HEAD"
    mem_poll = True          # COMPLETION_WAIT stores to a semaphore in memory

    def domain_ops(self) -> IommuDomainOps:
        rfc = self.dom.api == "rfc-2017"
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages,
                              iotlb_range_add=self.iotlb_range_add if rfc else None,
                              iotlb_sync=self.iotlb_sync, flush_iotlb_all=self.flush_iotlb_all,
                              iotlb_sync_map=self.iotlb_sync_map)

    def map_pages(self, dom: IommuDomain, iova: int, paddr: int, pgsize: int, pgcount: int,
                  prot: int) -> int:
        """``amd_iommu_map``: PTEs for the chunk (stored as 4K/2M/1G leaves here)."""
        size = pgsize * pgcount
        self.map_chunk(dom, iova, paddr, size, prot)
        return size

    def unmap_pages(self, dom: IommuDomain, iova: int, pgsize: int, pgcount: int,
                    gather: IommuIotlbGather) -> int:
        """``amd_iommu_unmap``: clear PTEs (a large page is removed whole); no flush here."""
        t0 = dom.clock.now
        dom.clock.busy(dom.costs.call_ns)
        found = dom.pgtable.walk(iova)
        if not found.present:
            return 0
        size = pgsize * pgcount
        if size < found.pgsize:
            iova, size = found.iova, found.pgsize
        pt = dom.pgtable
        for c_iova, _, c_pg, n in lpae_leaf_chunks(pt.pgsize_bitmap, iova, iova, size):
            for k in range(n):
                if pt.unmap_pages(c_iova + k * c_pg, c_pg, 1, None, ops=None):
                    dom.clock.busy(dom.costs.pte_update_ns)
        dom.hw.iotlb.mark_stale(dom.asid, iova, iova + size, t0)
        self.gather_add(gather, iova, size)
        return size

    def gather_add(self, gather: IommuIotlbGather, iova: int, size: int) -> None:
        """Nothing to record: the sync flushes everything anyway."""

    def iotlb_range_add(self, dom: IommuDomain, iova: int, size: int) -> None:
        """``amd_iommu_iotlb_range_add`` (v4.20–v5.3): an empty function."""

    def iotlb_sync_map(self, dom: IommuDomain, iova: int, size: int) -> None:
        """No map-side flush on bare metal."""

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """``amd_iommu_iotlb_sync`` = ``amd_iommu_flush_iotlb_all`` (≤ v5.14)."""
        self.flush_iotlb_all(dom)

    def flush_iotlb_all(self, dom: IommuDomain) -> None:
        """``domain_flush_tlb_pde`` + ``domain_flush_complete``."""
        self.queue_command(Command("INVALIDATE_IOMMU_PAGES_ALL", self.asid,
                                   fields=(("S", 1), ("PDE", 1),
                                           ("ADDR", CMD_INV_IOMMU_ALL_PAGES_ADDRESS))))
        self.completion_wait()

    def queue_command(self, cmd: Command) -> None:
        """``iommu_queue_command``: copy to the buffer and write ``CMD_TAIL`` (a doorbell)."""
        self.issue([(cmd, 1)])

    def completion_wait(self) -> None:
        """``iommu_completion_wait``: ``COMPLETION_WAIT`` (store to sem) and poll memory."""
        self.issue([(Command("COMPLETION_WAIT", fields=(("S", 1),)), 1)], wait=True)


class AmdIommuRange(AmdIommuFlushAll):
    """v5.15+: page-selective flushes with the S bit; NpCache splitting in a VM."""

    name = "amd-range"
    params: ClassVar[dict[str, Any]] = {"np_cache": False}

    def domain_ops(self) -> IommuDomainOps:
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages,
                              iotlb_sync=self.iotlb_sync, flush_iotlb_all=self.flush_iotlb_all,
                              iotlb_sync_map=self.iotlb_sync_map)

    def gather_add(self, gather: IommuIotlbGather, iova: int, size: int) -> None:
        """``amd_iommu_iotlb_gather_add_page``: merge always (sync first only with NpCache)."""
        if gather.queued:
            return
        era = self.dom.era
        if self.p["np_cache"] and gather_is_disjoint(gather, iova, size, era):
            _iotlb_sync(self.dom, gather)
        iommu_iotlb_gather_add_range(gather, iova, size, era)
        gather.pgsize = gather.pgsize or SZ_4K

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """``amd_iommu_iotlb_sync`` → ``domain_flush_pages(start, end - start + 1)`` + wait."""
        start, size = gather_span(gather, dom.era)
        if size == 0:
            return  # [assumption] nothing gathered: nothing to flush
        self.flush_pages(start, size)

    def iotlb_sync_map(self, dom: IommuDomain, iova: int, size: int) -> None:
        """``amd_iommu_iotlb_sync_map``: only with NpCache (``domain_flush_np_cache``)."""
        if self.p["np_cache"]:
            self.flush_pages(iova, size)

    def flush_pages(self, start: int, size: int) -> None:
        """One S-bit command (bare metal) or one per naturally aligned piece (NpCache)."""
        if self.p["np_cache"]:
            for c_iova, _, c_pg, n in lpae_leaf_chunks(AMD_IOMMU_PGSIZES, start, start, size):
                for k in range(n):
                    self.queue_command(self.inv_pages(c_iova + k * c_pg, c_pg))
        else:
            self.queue_command(self.inv_pages(start, size))
        self.completion_wait()

    def inv_pages(self, address: int, size: int) -> Command:
        """``build_inv_iommu_pages`` with ``build_inv_address``'s natural-alignment rule."""
        pages = ((address + size - 1) >> 12) - (address >> 12) + 1
        if pages == 1:
            return Command("INVALIDATE_IOMMU_PAGES", self.asid, address & ~0xFFF, SZ_4K, 0,
                           (("S", 0), ("PDE", 1)))
        end = address + size - 1
        msb_diff = (end ^ address).bit_length() - 1
        if msb_diff > 51:
            return Command("INVALIDATE_IOMMU_PAGES_ALL", self.asid,
                           fields=(("S", 1), ("PDE", 1)))
        block = 1 << (msb_diff + 1)
        base = address & ~(block - 1)
        encoded = (address | ((1 << msb_diff) - 1)) & ~0xFFF
        return Command("INVALIDATE_IOMMU_PAGES", self.asid, base, block, 0,
                       (("S", 1), ("PDE", 1), ("ADDR", encoded)))


DRIVERS = {"amd-flush-all": AmdIommuFlushAll, "amd-range": AmdIommuRange}

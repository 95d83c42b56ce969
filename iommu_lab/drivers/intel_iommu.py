"""Intel VT-d with queued invalidation (drivers/iommu/intel/iommu.c, dmar.c @v5.10.89).

Up to v5.10 ``intel_iommu_unmap`` flushes inside ``->unmap``: it widens the range to a
large page if one is hit ("Cope with horrid API..."), clears the PTEs, then
``iommu_flush_iotlb_psi``: ``mask = ilog2(__roundup_pow_of_two(pages))``; a domain-selective
flush (DSI) when ``mask > cap_max_amask_val``; otherwise a page-selective IOTLB descriptor
whose address is *not* aligned (the hardware ignores the low ``AM`` bits: a misaligned
range can miss its tail, fixed in v5.18 by 59bf3557cf2f). Each flush is ``qi_submit_sync``:
descriptor + invalidation-wait descriptor, one ``IQT`` doorbell, poll the status word.
Caching mode (a virtual IOMMU that caches non-present entries) makes *map* flush too.
See hardware-invalidation.md §3.3–3.6.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.domain import IommuDomain, IommuDomainOps
from ..core.gather import IommuIotlbGather
from ..hw.commands import Command
from ..units import SZ_4K
from .base import Driver, lpae_leaf_chunks

INTEL_IOMMU_PGSIZES = ~0xFFF & ((1 << 64) - 1)
VTD_PAGE_SHIFT = 12


class IntelIommu(Driver):
    """VT-d PSI, flush inside ``->unmap`` (≤ v5.10)."""

    name = "vtd-psi"
    cmdq_entries = 256       # QI_LENGTH
    keep_free = 1
    doorbell_reg = "IQT"
    cons_reg = "IQH"
    mem_poll = True          # wait descriptor writes QI_DONE to a status word
    params: ClassVar[dict[str, Any]] = {"cap_max_amask_val": 18, "caching_mode": False,
                                        "cap_pgsel_inv": True}

    def domain_ops(self) -> IommuDomainOps:
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages,
                              flush_iotlb_all=self.flush_iotlb_all)

    def map_pages(self, dom: IommuDomain, iova: int, paddr: int, pgsize: int, pgcount: int,
                  prot: int) -> int:
        """``intel_iommu_map``: PTEs for the chunk; in caching mode also a PSI flush."""
        size = pgsize * pgcount
        self.map_chunk(dom, iova, paddr, size, prot)
        if self.p["caching_mode"]:  # "non-present to present mapping. Only flush if CM"
            self.flush_psi(iova >> VTD_PAGE_SHIFT, size >> VTD_PAGE_SHIFT, ih=True)
        return size

    def unmap_pages(self, dom: IommuDomain, iova: int, pgsize: int, pgcount: int,
                    gather: IommuIotlbGather) -> int:
        """``intel_iommu_unmap``: unmap (widened to a large page), then PSI unless queued."""
        t0 = dom.clock.now
        dom.clock.busy(dom.costs.call_ns)
        size = pgsize * pgcount
        found = dom.pgtable.walk(iova)
        if not found.present:
            return 0
        if size < found.pgsize:  # "unmap more than the size argument"
            iova, size = found.iova, found.pgsize
        freed = self._clear_range(iova, size)
        dom.hw.iotlb.mark_stale(dom.asid, iova, iova + size, t0)
        if not gather.queued:
            self.flush_psi(iova >> VTD_PAGE_SHIFT, size >> VTD_PAGE_SHIFT, ih=not freed)
        return size

    def _clear_range(self, iova: int, size: int) -> bool:
        """``domain_unmap``: clear every PTE in the range; True if table pages were freed."""
        pt = self.dom.pgtable
        recorder = _WalkRecorder()
        for c_iova, _, c_pg, n in lpae_leaf_chunks(pt.pgsize_bitmap, iova, iova, size):
            for k in range(n):
                if pt.unmap_pages(c_iova + k * c_pg, c_pg, 1, None, ops=recorder):
                    self.dom.clock.busy(self.dom.costs.pte_update_ns)
        return recorder.walks > 0

    def dma_unmap(self, dom: IommuDomain, iova: int, size: int, queued: bool) -> int:
        """``intel_unmap`` (its own DMA ops until v5.11): one PSI for the whole buffer."""
        t0 = dom.clock.now
        dom.clock.busy(dom.costs.call_ns)
        if dom.pgtable.first_leaf(iova, iova + size) is None:
            return 0
        freed = self._clear_range(iova, size)
        dom.hw.iotlb.mark_stale(dom.asid, iova, iova + size, t0)
        if not queued:
            self.flush_psi(iova >> VTD_PAGE_SHIFT, size >> VTD_PAGE_SHIFT, ih=not freed)
        return size

    def flush_psi(self, pfn: int, pages: int, ih: bool) -> None:
        """``iommu_flush_iotlb_psi``: PSI with address mask, or DSI above the limit."""
        mask = (pages - 1).bit_length()  # ilog2(__roundup_pow_of_two(pages))
        if not self.p["cap_pgsel_inv"] or mask > self.p["cap_max_amask_val"]:
            self.qi_submit_sync(Command("QI_IOTLB_DSI", self.asid, fields=(("GRAN", 2),)))
            return
        addr = pfn << VTD_PAGE_SHIFT
        block = SZ_4K << mask
        self.qi_submit_sync(Command("QI_IOTLB_PSI", self.asid, addr & ~(block - 1), block, 0,
                                    (("GRAN", 3), ("AM", mask), ("IH", int(ih)),
                                     ("ADDR", addr))))

    def qi_submit_sync(self, desc: Command) -> None:
        """One descriptor + an invalidation-wait descriptor, one doorbell, poll QI_DONE."""
        self.issue([(desc, 1), (Command("QI_IWD", fields=(("SW", 1),)), 1)], wait=True)

    def flush_iotlb_all(self, dom: IommuDomain) -> None:
        """``intel_flush_iotlb_all``: domain-selective IOTLB flush + wait."""
        self.qi_submit_sync(Command("QI_IOTLB_DSI", self.asid, fields=(("GRAN", 2),)))


class _WalkRecorder:
    """Flush ops that only count freed tables (VT-d frees them onto a freelist)."""

    def __init__(self) -> None:
        self.walks = 0

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None:
        self.walks += 1

    def tlb_add_page(self, gather: Any, iova: int, granule: int) -> None:
        pass

    def tlb_sync(self) -> None:
        pass


DRIVERS = {"vtd-psi": IntelIommu}

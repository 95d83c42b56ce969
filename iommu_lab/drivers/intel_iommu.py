"""Intel VT-d with queued invalidation (drivers/iommu/intel/iommu.c, dmar.c @v5.10.89).

Up to v5.10 ``intel_iommu_unmap`` flushes inside ``->unmap``: it widens the range to a
large page if one is hit ("Cope with horrid API..."), clears the PTEs, then
``iommu_flush_iotlb_psi``: ``mask = ilog2(__roundup_pow_of_two(pages))``; a domain-selective
flush (DSI) when ``mask > cap_max_amask_val``; otherwise a page-selective IOTLB descriptor
whose address is *not* aligned (the hardware ignores the low ``AM`` bits: a misaligned
range can miss its tail, fixed in v5.18 by 59bf3557cf2f). Each flush is ``qi_submit_sync``:
descriptor + invalidation-wait descriptor, one ``IQT`` doorbell, poll the status word.
Caching mode (a virtual IOMMU that caches non-present entries) makes *map* flush too.

v5.10 details the model follows (source-audit-2026-11-29 defects 1, 3, 8):

- ``intel_iommu_ops`` has neither ``.flush_iotlb_all`` nor ``.iotlb_sync`` (intel/iommu.c
  @v5.10.89:6130-6157), so ``iommu_flush_iotlb_all()`` does nothing; the lazy DMA path
  flushes with its own ``iommu_flush_iova`` (a DSI), ``intel_dma_ops``' flush-queue callback.
- Every queued IOTLB descriptor carries IH=0: ``qi_flush_iotlb()`` declares ``int ih = 0``
  and ``QI_IOTLB_ADDR(addr)`` masks the ``addr | 1 << 6`` hint away (dmar.c @v5.10.89:
  1400-1411, include/linux/intel-iommu.h:348-349), so every PSI also drops walk caches.
- ``intel_iommu_unmap`` never returns 0: on a hole ``pfn_to_dma_pte(..., &level)`` stops at
  the empty entry, the size is raised to that level's span, and the PSI is issued anyway.
See hardware-invalidation.md §3.3–3.6.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.dma_iommu import DmaOps
from ..core.domain import IommuDomain, IommuDomainOps
from ..core.gather import IommuIotlbGather
from ..core.iommu import account_unmap
from ..hw.commands import MAP_SIDE, Command
from ..hw.cpus import SpinLock
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

    def __init__(self, dom: IommuDomain, params: dict[str, Any]) -> None:
        super().__init__(dom, params)
        self.q_locks = [SpinLock(self.cpus, f"qi{i}->q_lock") for i in range(len(self.queues))]

    def domain_ops(self) -> IommuDomainOps:
        """v5.10 ``intel_iommu_ops``: ``.map``/``.unmap`` only — no flush or sync op."""
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages,
                              one_page_per_call=True)

    def forces_strict(self) -> str | None:
        """Caching mode: "Disable batched IOTLB flush due to virtualization" (v5.10.89:3387)."""
        return "caching mode forces strict" if self.p["caching_mode"] else None

    def map_pages(self, dom: IommuDomain, iova: int, paddr: int, pgsize: int, pgcount: int,
                  prot: int) -> int:
        """``intel_iommu_map``: PTEs for the chunk; in caching mode also a PSI flush
        (``__mapping_notify_one``: "non-present to present mapping. Only flush if CM")."""
        size = pgsize * pgcount
        self.map_chunk(dom, iova, paddr, size, prot)
        if self.p["caching_mode"]:
            self.flush_psi(iova >> VTD_PAGE_SHIFT, size >> VTD_PAGE_SHIFT, MAP_SIDE)
        return size

    def unmap_pages(self, dom: IommuDomain, iova: int, pgsize: int, pgcount: int,
                    gather: IommuIotlbGather) -> int:
        """``intel_iommu_unmap``: size widened to the level ``pfn_to_dma_pte`` stops at (a
        large page, or the empty entry of a hole), PTEs cleared, then the PSI unless queued."""
        t0 = dom.clock.now
        dom.clock.busy(dom.costs.call_ns)
        size = pgsize * pgcount
        found = dom.walk(iova)
        span = found.pgsize if found.present else dom.pgtable.walk_levels(iova)[-1].span
        if size < span:  # "unmap more than the size argument"
            iova, size = iova & ~(span - 1), span
        self._clear_range(iova, size)
        dom.mark_stale(iova, iova + size, t0)
        if not gather.queued:
            self.flush_psi(iova >> VTD_PAGE_SHIFT, size >> VTD_PAGE_SHIFT)
        return size

    def _clear_range(self, iova: int, size: int) -> None:
        """``domain_unmap``: clear every PTE in the range (freed tables go on a freelist,
        released after the flush: no walk invalidation of their own)."""
        pt = self.dom.pgtable
        if size == pt.granule and not iova & (size - 1):  # one page: no chunks to split
            if pt.unmap_pages(iova, size, 1, None, ops=None):
                self.dom.clock.busy(self.dom.costs.pte_update_ns)
            return
        for c in lpae_leaf_chunks(pt.pgsize_bitmap, iova, iova, size):
            for k in range(c.pgcount):
                if pt.unmap_pages(c.iova + k * c.pgsize, c.pgsize, 1, None, ops=None):
                    self.dom.clock.busy(self.dom.costs.pte_update_ns)

    def dma_ops(self) -> DmaOps:
        """``intel_dma_ops`` (until v5.11): ``intel_unmap``; the flush queue's callback is
        ``iommu_flush_iova`` (a domain-selective flush), not ``->flush_iotlb_all``."""
        return DmaOps("intel_dma_ops", self.intel_unmap, lambda dom: self.tlb_flush_all(),
                      "drivers/iommu/intel/iommu.c @v5.10.89 intel_unmap, iommu_flush_iova")

    def intel_unmap(self, dom: IommuDomain, iova: int, size: int,
                    gather: IommuIotlbGather) -> int:
        """``intel_unmap``: clear the buffer's PTEs; strict: one PSI for the whole buffer."""
        t0 = dom.clock.now
        dom.clock.busy(dom.costs.call_ns)
        self._clear_range(iova, size)
        dom.mark_stale(iova, iova + size, t0)
        if not gather.queued:
            self.flush_psi(iova >> VTD_PAGE_SHIFT, size >> VTD_PAGE_SHIFT)
        account_unmap(dom, t0, "intel_unmap", iova, size, size)
        return size

    def flush_psi(self, pfn: int, pages: int, reason: str = "") -> None:
        """``iommu_flush_iotlb_psi`` for every IOMMU of the domain (``for_each_domain_iommu``):
        PSI with address mask, or DSI above the limit; then, unless this is a caching-mode
        map, ``iommu_flush_dev_iotlb`` for every ATS endpoint of the domain.

        IH is 0 in the descriptor whatever the caller asked (``qi_flush_iotlb``, v5.10).
        """
        mask = (pages - 1).bit_length()  # ilog2(__roundup_pow_of_two(pages))
        addr = pfn << VTD_PAGE_SHIFT
        block = SZ_4K << mask
        if not self.p["cap_pgsel_inv"] or mask > self.p["cap_max_amask_val"]:
            desc = Command("QI_IOTLB_DSI", self.asid, fields=(("GRAN", 2),), reason=reason)
        else:
            desc = Command("QI_IOTLB_PSI", self.asid, addr & ~(block - 1), block, 0,
                           (("GRAN", 3), ("AM", mask), ("IH", 0), ("ADDR", addr)), reason)
        for i in range(len(self.queues)):
            self.qi_submit_sync(desc, i)
            if reason != MAP_SIDE:
                self.flush_dev_iotlb(addr & ~(block - 1), block, mask)

    def flush_dev_iotlb(self, addr: int, size: int, mask: int) -> None:
        """``iommu_flush_dev_iotlb``: ``qi_flush_dev_iotlb`` — a device-IOTLB descriptor and
        its own wait — for every ATS endpoint of the domain, on the IOMMU it sits behind
        (so with several IOMMUs, each IOMMU's flush flushes every endpoint)."""
        if not self.ats:
            return
        desc = Command("QI_DIOTLB", self.asid, addr, size, 0, (("S", int(mask > 0)),))
        for i in range(len(self.queues)):
            self.qi_submit_sync(desc, i)

    def qi_submit_sync(self, desc: Command, i: int = 0) -> None:
        """On IOMMU ``i``: one descriptor + an invalidation-wait descriptor, one doorbell,
        poll QI_DONE (dmar.c @v5.10.89): write and ring ``IQT`` under ``qi->q_lock``; the
        status-word poll drops and retakes the lock around each ``cpu_relax()``, so other
        CPUs insert while this one waits."""
        q = self.queues[i]
        self.q_locks[i].acquire()
        pos = self.submit([(desc, 1), (Command("QI_IWD", fields=(("SW", 1),)), 1)], q)
        self.q_locks[i].release()
        self.wait(pos, q)

    def tlb_flush_all(self) -> None:  # type: ignore[override]
        """``iommu_flush_iova``: a domain-selective IOTLB flush + wait on each IOMMU, then
        every endpoint's device IOTLB (the lazy path's flush; v5.10 has no
        ``flush_iotlb_all`` op, ``intel_flush_iotlb_all`` is v5.15)."""
        for i in range(len(self.queues)):
            self.qi_submit_sync(Command("QI_IOTLB_DSI", self.asid, fields=(("GRAN", 2),)), i)
            if self.ats:  # iommu_flush_dev_iotlb(domain, 0, MAX_AGAW_PFN_WIDTH)
                for j in range(len(self.queues)):
                    self.qi_submit_sync(Command("QI_DIOTLB", self.asid, fields=(("S", 1),)), j)


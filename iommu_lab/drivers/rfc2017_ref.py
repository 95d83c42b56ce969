"""A *reference* driver for Joerg Roedel's 2017 flush interface — not kernel code.

"[PATCH 02/13] iommu: Introduce Interface for IOMMU TLB Flushing" (LKML, 17 Aug 2017;
merged as commit add02cfdc9bc in v4.14) defines ``iommu_tlb_range_add()`` as "add a given
range to the flush queue for this domain" and ``iommu_tlb_sync()`` as "Flushes all queued
ranges from the hardware TLBs. Returns when the flush is finished" (kernel-api-history.md
§3.2). This driver implements exactly that contract on SMMUv3 hardware, so the interface
can be run as its author described it:

- ``->unmap`` clears PTEs and issues nothing for leaves (the flush is "removed from the
  iommu_map/unmap functions"); freeing a table page still invalidates the walk
  synchronously, as io-pgtable did in v4.14/v4.15;
- ``->iotlb_range_add(iova, size)`` only records the range in the domain's flush queue;
- ``->iotlb_sync`` issues one ``CMD_TLBI_NH_VA`` per 4 KiB granule of each recorded range
  and one ``CMD_SYNC``, waits, and empties the queue. Nothing else is invalidated: a range
  the caller forgot to add keeps its IOTLB entries (a stale hit). The granule is the
  smallest page because "the page size used to map the region in the page-table is not
  known" to this callback (Will Deacon, [PATCH 01/13], 14 Aug 2019, Message-Id
  <20190814175634.21081-2-will@kernel.org>);
- ``->flush_iotlb_all``: ``CMD_TLBI_NH_ASID`` + ``CMD_SYNC``; the queue is then empty.

Commands go through the 2017 SMMUv3 queue (``arm_smmu_cmdq_issue_cmd``: lock, write,
doorbell, per command; v4.14/v4.15). No merged driver ever did this: AMD's
``iotlb_range_add`` was an empty function and SMMUv3 had none (v4.20–v5.3), and v5.4
removed the callback for the gather ([PATCH 01/13] above). It is pinned to the v4.14 core,
whose ``iommu_unmap`` calls ``iotlb_range_add(iova, pgsize)`` per chunk and then
``iotlb_sync`` (L4.14 iommu.c), so the merged strict path is correct on it too.
"""

from __future__ import annotations

from typing import Any

from ..core.domain import IommuDomain, IommuDomainOps
from ..core.gather import IommuIotlbGather
from .arm_smmu_v3 import ArmSmmuV3Early


class Rfc2017Reference(ArmSmmuV3Early):
    """SMMUv3 behind the 2017 contract: range_add records, sync invalidates only those."""

    name = "rfc2017-ref"
    msi_sync_supported = False   # CMD_SYNC completion by polling CMDQ_CONS, as in v4.14
    rfc2017_flush_all = None     # its flush_iotlb_all already drops the whole context

    def __init__(self, dom: IommuDomain, params: dict[str, Any]) -> None:
        super().__init__(dom, params)
        self.flush_queue: list[tuple[int, int]] = []   # recorded (iova, size), in order
        dom.compact = False   # the recorded ranges are no compact-run part: step every call
        dom.memo = False      # nor an op-memo part

    def domain_ops(self) -> IommuDomainOps:
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages,
                              iotlb_range_add=self.iotlb_range_add,
                              iotlb_sync=self.iotlb_sync, flush_iotlb_all=self.flush_iotlb_all)

    def queued_ranges(self) -> list[tuple[int, int]]:
        """The ranges ``iotlb_range_add`` recorded since the last sync or flush-all (a copy)."""
        return list(self.flush_queue)

    def tlb_add_page(self, gather: Any, iova: int, granule: int) -> None:
        """A leaf was cleared: nothing is issued (the caller says what to flush)."""

    def iotlb_range_add(self, dom: IommuDomain, iova: int, size: int) -> None:
        """``->iotlb_range_add``: "add a given range to the flush queue for this domain"."""
        if size:
            self.flush_queue.append((iova, size))

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """``->iotlb_sync``: a TLBI per granule of every queued range, one CMD_SYNC, wait.
        The gather is ignored: the 2017 callback had none."""
        g = dom.min_pagesz
        for iova, size in self.flush_queue:
            first = iova & ~(g - 1)
            count = -(-(iova + size - first) // g)
            self.issue_cmd(self.tlbi(first, g, True, g), count)
        self.flush_queue.clear()
        self.tlb_sync()

    def flush_iotlb_all(self, dom: IommuDomain) -> None:
        """``->flush_iotlb_all``: TLBI_NH_ASID + CMD_SYNC; every queued range is covered."""
        self.flush_queue.clear()
        self.tlb_flush_all()

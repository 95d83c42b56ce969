"""virtio-iommu (drivers/iommu/virtio-iommu.c @v5.15): requests to the host, no TLBI.

``viommu_map`` sends a MAP request synchronously (kick + wait); ``viommu_unmap`` queues
an UNMAP request per call (``viommu_add_req``, not kicked); ``viommu_iotlb_sync`` kicks
and waits for every queued request (``viommu_sync_req``). Each request is a VM exit and
host work (VMM + VFIO unmap + the physical IOMMU's invalidation): ``virtio_request_ns``.
See hardware-invalidation.md §5 and kernel-api-history.md §4.6, §5.1.
"""

from __future__ import annotations

from ..core.domain import IommuDomain, IommuDomainOps
from ..core.gather import IommuIotlbGather
from ..hw.cmdq import VIRTQUEUE
from ..hw.commands import Command
from .amd_iommu import AmdIommuFlushAll

VIRTIO_IOMMU_PGSIZES = ~0xFFF & ((1 << 64) - 1)  # the host's page mask (QEMU: 4K and up)


class VirtioIommu(AmdIommuFlushAll):
    """The paravirtual IOMMU: every map and every unmap is a request to the host."""

    name = "virtio-iommu"
    queue_style = VIRTQUEUE
    cmdq_entries = 128       # request virtqueue size [assumption]
    keep_free = 0
    doorbell_reg = "VIRTQUEUE_KICK"
    cons_reg = "USED_RING"
    mem_poll = True

    def domain_ops(self) -> IommuDomainOps:
        rfc = self.dom.api == "rfc-2017"  # the 2017 API requires a flush-all callback;
        # virtio-iommu gained one (viommu_sync_req) only later ([M6], v6.7)
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages,
                              iotlb_sync=self.iotlb_sync,
                              flush_iotlb_all=self.flush_iotlb_all if rfc else None)

    def flush_iotlb_all(self, dom: IommuDomain) -> None:
        """``viommu_flush_iotlb_all`` (later kernels): kick and wait."""
        self.sync_req()

    def map_pages(self, dom: IommuDomain, iova: int, paddr: int, pgsize: int, pgcount: int,
                  prot: int) -> int:
        """``viommu_map``: record the mapping, then a synchronous MAP request."""
        size = super().map_pages(dom, iova, paddr, pgsize, pgcount, prot)
        self.issue([(Command("VIRTIO_IOMMU_T_MAP", self.asid, iova, size), 1)])
        self.sync_req()
        return size

    def gather_add(self, gather: IommuIotlbGather, iova: int, size: int) -> None:
        """``viommu_unmap``: queue an UNMAP request (written, not yet kicked)."""
        cmd = Command("VIRTIO_IOMMU_T_UNMAP", self.asid, iova, size)
        if self.q.prod - self.q.published >= self.q.capacity:
            self.sync_req()  # viommu_add_req: "If the queue is full, sync and retry"
        self.q._append(cmd, 1)
        self.dom.clock.busy(self.dom.costs.cmd_write_ns)

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """``viommu_iotlb_sync`` → ``viommu_sync_req``."""
        self.sync_req()

    def sync_req(self) -> None:
        """Kick the virtqueue (if anything is new) and wait for all requests to complete."""
        q = self.q
        if q.published < q.prod:
            q._doorbell()
        q.note_completion()
        q.stats.add("cmd:VIRTQUEUE_WAIT")
        if q.prod:
            self.wait(q.prod - 1)


DRIVERS = {"virtio-iommu": VirtioIommu}

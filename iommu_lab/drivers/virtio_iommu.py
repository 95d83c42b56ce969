"""virtio-iommu (drivers/iommu/virtio-iommu.c @v5.15): requests to the host, no TLBI.

``viommu_map`` sends a MAP request synchronously (``viommu_send_req_sync``: add, kick,
wait); ``viommu_unmap`` queues an UNMAP request per call (``viommu_add_req``, not kicked)
unless it unmapped less than asked; ``viommu_iotlb_sync`` kicks and waits for every queued
request (``viommu_sync_req``). v5.15 has only ``.map``/``.unmap`` (no ``map_pages``), so
the core calls ``->map`` once per page-size chunk (L5.15 iommu.c:2465-2471): 35 pages at
a 4K-offset paddr are 35 MAP requests. There is no ``flush_iotlb_all`` until v6.7 ([M6]).

Each request is a VM exit and host work (VMM + VFIO unmap + the physical IOMMU's
invalidation): ``virtio_request_ns``. The guest's waits are counted as ``request_waits``,
not as sync commands: virtio-iommu has none. See hardware-invalidation.md §5.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.domain import IommuDomain, IommuDomainOps
from ..core.gather import IommuIotlbGather
from ..hw.cmdq import VIRTQUEUE
from ..hw.commands import Command
from ..hw.cpus import SpinLock
from .base import Driver

VIRTIO_IOMMU_PGSIZES = ~0xFFF & ((1 << 64) - 1)  # the host's page mask (QEMU: 4K and up)


class VirtioIommu(Driver):
    """The paravirtual IOMMU: every map and every unmap is a request to the host."""

    name = "virtio-iommu"
    queue_style = VIRTQUEUE
    cmdq_entries = 128       # request virtqueue size [assumption]
    doorbell_reg = "VIRTQUEUE_KICK"
    cons_reg = "USED_RING"
    mem_poll = True
    params: ClassVar[dict[str, Any]] = {}
    no_ats = "virtio-iommu shows the guest no device TLB (the host's IOMMU handles ATS)"
    one_iommu = "a virtio-iommu domain lives on one virtio-iommu device"

    def __init__(self, dom: IommuDomain, params: dict[str, Any]) -> None:
        super().__init__(dom, params)
        self.unreaped = 0    # requests added since the guest last waited for them
        self.request_lock = SpinLock(self.cpus, "viommu->request_lock")

    def domain_ops(self) -> IommuDomainOps:
        """v5.15: ``.map``, ``.unmap``, ``.iotlb_sync`` only — no ``flush_iotlb_all`` (it came
        with [M6], v6.7), so a flush-all does nothing and there is no flush queue."""
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages,
                              iotlb_sync=self.iotlb_sync, one_page_per_call=True)

    def map_pages(self, dom: IommuDomain, iova: int, paddr: int, pgsize: int, pgcount: int,
                  prot: int) -> int:
        """``viommu_map``: record the mapping, then a synchronous MAP request."""
        size = pgsize * pgcount
        self.map_chunk(dom, iova, paddr, size, prot)
        self.request_lock.acquire()                 # viommu_send_req_sync: one lock held
        self._add_req(Command("VIRTIO_IOMMU_T_MAP", self.asid, iova, size))
        self._sync_req()
        self.request_lock.release()
        return size

    def unmap_pages(self, dom: IommuDomain, iova: int, pgsize: int, pgcount: int,
                    gather: IommuIotlbGather) -> int:
        """``viommu_unmap``: drop the mappings; "if (unmapped < size) return 0", else
        queue an UNMAP request for [iova, iova + unmapped - 1]."""
        size = pgsize * pgcount
        dom.clock.busy(dom.costs.call_ns)
        found = list(dom.pgtable.leaves(iova, iova + size))
        unmapped = sum(l_size for _, l_size, _, _ in found)
        if unmapped < size:
            # the guest's interval tree drops these mappings, but no UNMAP request tells
            # the host, which keeps them: iommu_lab's one table keeps them too
            return 0
        self.viommu_del_mappings(dom, found)
        self.add_req(Command("VIRTIO_IOMMU_T_UNMAP", self.asid, iova, unmapped))
        return unmapped

    def viommu_del_mappings(self, dom: IommuDomain, found: list) -> None:
        """Remove the mappings that overlap the range (a larger one whole)."""
        pt, t0 = dom.pgtable, dom.clock.now
        for l_iova, l_size, _, _ in found:
            dom.mark_stale(l_iova, l_iova + l_size, t0)
            pt.unmap_pages(l_iova, l_size, 1, None, ops=None)
            dom.clock.busy(dom.costs.pte_update_ns)

    def add_req(self, cmd: Command) -> None:
        """``viommu_add_req`` under ``request_lock``."""
        self.request_lock.acquire()
        self._add_req(cmd)
        self.request_lock.release()

    def _add_req(self, cmd: Command) -> None:
        """Write the request ("If the queue is full, sync and retry")."""
        if self.q.prod - self.q.published >= self.q.capacity:
            self._sync_req()
        self.q.write(cmd)
        self.unreaped += 1

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """``viommu_iotlb_sync`` → ``viommu_sync_req``."""
        self.sync_req()

    def tlb_flush_all(self) -> None:  # type: ignore[override]
        """``viommu_flush_iotlb_all`` (v6.7+): kick and wait for every request."""
        self.sync_req()

    def sync_req(self) -> None:
        """``viommu_sync_req``: holds ``request_lock`` while it kicks and waits ("virtio-iommu
        and vfio_iommu_type1 both have big locks", hardware-invalidation.md §5)."""
        self.request_lock.acquire()
        self._sync_req()
        self.request_lock.release()

    def _sync_req(self) -> None:
        """``__viommu_sync_req``: kick (a VM exit only if something is new), then reap every
        outstanding request, spinning until the host has completed them."""
        q = self.q
        if q.published < q.prod:
            q.kick()
        if self.unreaped:
            self.unreaped = 0
            q.note_completion(counter="request_waits")
            self.wait(q.prod - 1)

"""What every driver model shares: its queue, page-table glue, and issue/wait helpers.

A driver class is the kernel driver at one version. Its ``domain_ops()`` returns the
``IommuDomainOps`` table the core calls; the class itself serves as the io-pgtable
``iommu_flush_ops`` (``tlb_add_page``, ``tlb_flush_walk``, ``tlb_sync``). Era variants are
subclasses that override a method or a class attribute.

Optional members (None when the driver, at its version, has no such thing):

- ``tlb_flush_all()``: "synchronously invalidate the entire TLB context" (io-pgtable's
  ``tlb_flush_all``; SMMUv3 ``arm_smmu_tlb_inv_context``...), what a 2017-API
  ``iommu_flush_tlb_all`` means;
- ``iotlb_range_add(dom, iova, size)``: the v4.14–v5.3 ``->iotlb_range_add`` callback;
- ``rfc2017_flush_all(dom)``: a *reconstructed* 2017-API flush-all where it differs from
  the driver's merged ``flush_iotlb_all`` (SMMUv3 v4.15 only);
- ``dma_ops()``: the driver's own DMA layer (VT-d up to v5.10), else dma-iommu's is used;
- ``forces_strict()``: why this driver refuses a lazy flush queue (virtualization).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from ..compact import Run, run_periodic
from ..core.domain import IommuDomain, IommuDomainOps
from ..core.era import Chunk, pgsize_chunks
from ..core.gather import IommuIotlbGather
from ..errors import einval
from ..hw.cmdq import RING, CommandQueue
from ..hw.commands import Command

Batch = list[tuple[Command, int]]
COMPACT_BATCHES = 16   # fewer identical batches are cheaper to issue than to analyse


class Driver:
    """Base driver: maps through io-pgtable-arm, issues nothing (a do-nothing driver)."""

    name: ClassVar[str] = "none"
    cmdq_entries: ClassVar[int] = 256
    queue_style: ClassVar[str] = RING
    keep_free: ClassVar[int] = 0
    doorbell_reg: ClassVar[str] = "CMDQ_PROD"
    cons_reg: ClassVar[str] = "CMDQ_CONS"
    mem_poll: ClassVar[bool] = False      # completion seen in memory (MSI/status write)?
    params: ClassVar[dict[str, Any]] = {}
    min_entries: ClassVar[int] = 4
    pow2_entries: ClassVar[bool] = False
    tlb_flush_all: Callable[[], None] | None = None
    iotlb_range_add: Callable[..., None] | None = None
    rfc2017_flush_all: Callable[..., None] | None = None
    no_ats: ClassVar[str] = ""              # why this driver/version cannot do ATS, if so
    one_iommu: ClassVar[str] = ""           # why a domain of it spans one IOMMU only, if so

    def __init__(self, dom: IommuDomain, params: dict[str, Any]) -> None:
        self.dom = dom
        self.p = params
        self.check_topology(dom)
        entries = params.get("cmdq_entries", self.cmdq_entries)
        self.check_entries(entries)
        self.queues = [self._queue(dom, hw, i, entries) for i, hw in enumerate(dom.iommus)]
        self.q = self.queues[0]
        self.cpus = dom.cpus
        self.ats = dom.hw.atc is not None   # does the endpoint cache translations (PCIe ATS)?

    def _queue(self, dom: IommuDomain, hw: Any, i: int, entries: int) -> CommandQueue:
        q = CommandQueue(dom.clock, dom.stats, dom.costs, entries=entries,
                         style=self.queue_style, keep_free=self.keep_free,
                         doorbell=self.doorbell_reg, cons=self.cons_reg, effect=hw.execute)
        q.lane = "IOMMU" if len(dom.iommus) == 1 else f"IOMMU {i}"
        q.trace = dom.trace
        hw.queues.append(q)
        return q

    def check_topology(self, dom: IommuDomain) -> None:
        """EINVAL for ``ats`` or several IOMMUs where this driver (version) has neither."""
        if self.no_ats and dom.hw.atc is not None:
            raise einval(f"{self.name}: ats=True is not possible: {self.no_ats}")
        if self.one_iommu and len(dom.iommus) > 1:
            raise einval(f"{self.name}: iommus={len(dom.iommus)} is not possible: "
                         f"{self.one_iommu}")

    @classmethod
    def check_entries(cls, entries: int) -> None:
        """Refuse a queue size this hardware/driver cannot use (EINVAL naming the limit)."""
        if entries < cls.min_entries:
            raise einval(f"cmdq_entries {entries} is too small for {cls.name}: need at least "
                         f"{cls.min_entries} (one batch of commands plus a sync must fit)")
        if cls.pow2_entries and entries & (entries - 1):
            raise einval(f"cmdq_entries {entries} must be a power of two (Q_BASE LOG2SIZE)")

    # ---- the ops table ---------------------------------------------------------
    def domain_ops(self) -> IommuDomainOps:
        """The callbacks this driver gives the core at its kernel version."""
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages)

    def dma_ops(self) -> Any:
        """The driver's own DMA layer, or None for dma-iommu's (the usual case)."""
        return None

    def forces_strict(self) -> str | None:
        """Why the driver forces strict (no flush queue) at its version, or None."""
        return None

    # ---- page-table glue -------------------------------------------------------------
    def map_pages(self, dom: IommuDomain, iova: int, paddr: int, pgsize: int, pgcount: int,
                  prot: int) -> int:
        """``map_pages``: install leaves in io-pgtable (no TLB maintenance on map)."""
        dom.clock.busy(dom.costs.call_ns + dom.costs.pte_update_ns * pgcount)
        return dom.pgtable.map_pages(iova, paddr, pgsize, pgcount, prot, ops=self)

    def unmap_pages(self, dom: IommuDomain, iova: int, pgsize: int, pgcount: int,
                    gather: IommuIotlbGather) -> int:
        """``unmap_pages``: clear leaves; io-pgtable reports them through the flush ops.

        IOTLB entries for the range are marked stale *before* the PTEs go (invalidations
        issued from inside io-pgtable may complete during the call); any part left mapped
        because of a hole is unmarked afterwards.
        """
        end = iova + pgsize * pgcount
        clock, costs = dom.clock, dom.costs
        dom.mark_stale(iova, end, clock.now)
        clock.busy(costs.call_ns)
        got = dom.pgtable.unmap_pages(iova, pgsize, pgcount, gather, ops=self)
        if got:  # (busy(0) for a hole changes nothing)
            clock.busy(costs.pte_update_ns * (got // pgsize))
        if iova + got < end:
            dom.unmark_stale(iova + got, end)
        return got

    def map_chunk(self, dom: IommuDomain, iova: int, paddr: int, size: int, prot: int) -> None:
        """Drivers with an every-power-of-two ``pgsize_bitmap``: store a chunk as leaves."""
        dom.clock.busy(dom.costs.call_ns)
        for c in lpae_leaf_chunks(dom.pgtable.pgsize_bitmap, iova, paddr, size):
            dom.clock.busy(dom.costs.pte_update_ns * c.pgcount)
            dom.pgtable.map_pages(c.iova, c.paddr, c.pgsize, c.pgcount, prot, ops=None)

    # ---- io-pgtable flush ops (defaults: nothing to invalidate) ------------------------
    def tlb_add_page(self, gather: Any, iova: int, granule: int) -> None:
        """A leaf was cleared."""

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None:
        """A table page is about to be freed."""

    def tlb_sync(self) -> None:
        """io-pgtable asks for completion (≤ v4.14 after every unmap)."""

    # ---- helpers -----------------------------------------------------------------------
    def issue(self, batch: Batch, wait: bool = False) -> None:
        """Submit one batch (one doorbell); with ``wait``, spin until its last command
        completes. Drivers add the lock (or the lock-free protocol) their kernel uses."""
        pos = self.submit(batch)
        if wait:
            self.wait(pos)

    def submit(self, batch: Batch, q: CommandQueue | None = None) -> int:
        """Write ``batch`` to ``q`` (the first IOMMU's by default) and ring its doorbell
        once; returns the last slot written."""
        pos = (q or self.q).submit(batch)
        self.trace_doorbell(batch)
        return pos

    def trace_doorbell(self, batch: Batch) -> None:
        """One trace record per submission (the CPU lane shows which CPU)."""
        if not self.dom.trace.wants():
            return
        now = self.dom.clock.now
        self.dom.trace.add(now, now, self.dom.cpu_lane(), "doorbell", batch[0][0].iova, len(batch),
                           batch[-1][0].name)

    def issue_repeated(self, batch_at: Callable[[int], Batch], count: int, stride: int) -> None:
        """Issue ``count`` batches, batch ``k`` being ``batch_at(k)`` (its addresses ``k *
        stride`` further on): compactly once the queue's state repeats (a 1 GiB walk
        invalidation is 4,096 batches of 64 TLBIs)."""
        if count < COMPACT_BATCHES:
            for k in range(count):
                self.issue(batch_at(k))
            return
        dom = self.dom
        t0 = dom.clock.now
        first = batch_at(0)[0][0].iova
        run = Run(count, first, stride, lambda k: self.issue(batch_at(k)), _no_bulk, dom.quiet)
        skipped = run_periodic(run, dom.clock, [dom.stats, *dom.hw.queues])
        if skipped:
            dom.trace.add(t0, dom.clock.now, dom.cpu_lane(), f"doorbell x{count} (compact)", first,
                          count, f"{skipped} batches extrapolated")

    def wait(self, pos: int, q: CommandQueue | None = None) -> None:
        """Poll for completion: a memory word (MSI / status write) or an MMIO register."""
        (q or self.q).wait_for(pos, poll_ns=self.dom.costs.mem_poll_ns if self.mem_poll
                               else None)

    @property
    def asid(self) -> int:
        """The domain's ASID / domain-id tag."""
        return self.dom.asid


def _no_bulk(i: int, n: int) -> None:
    """Batches touch no page table: nothing to apply in bulk."""


def lpae_leaf_chunks(bitmap: int, iova: int, paddr: int, size: int) -> list[Chunk]:
    """Split a chunk into the table's own leaves (one call of ``pgcount`` each).

    Used by drivers whose ``pgsize_bitmap`` claims every power of two (VT-d, AMD, virtio):
    the core hands them e.g. a 16 KiB chunk, which their tables store as 4 KiB PTEs.
    Same rule as the v5.15 counted ``iommu_pgsize``.
    """
    return list(pgsize_chunks(True, bitmap, iova, paddr, size))

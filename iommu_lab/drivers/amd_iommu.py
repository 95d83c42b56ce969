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
from ..hw.cpus import SpinLock
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


def build_inv_address(address: int, size: int) -> tuple[int, int | None, int]:
    """``build_inv_address`` (v5.15): (block start, block size or None for all pages,
    S bit). More than one page: the naturally aligned power-of-two block holding both ends,
    ``msb_diff = fls64(end ^ address) - 1``, all pages above bit 51."""
    if iommu_num_pages(address, size) == 1:
        return address & PAGE_MASK, SZ_4K, 0
    msb_diff = ((address + size - 1) ^ address).bit_length() - 1
    if msb_diff > 51:
        return 0, None, 1
    block = 1 << (msb_diff + 1)
    return address & ~(block - 1), block, 1


class AmdIommuFlushAll(Driver):
    """≤ v5.14: every ``iotlb_sync`` flushes the whole domain."""

    name = "amd-flush-all"
    cmdq_entries = 512       # CMD_BUFFER_ENTRIES (8 KiB buffer)
    keep_free = 2            # "SW keeps > 0x20 bytes free"
    doorbell_reg = "CMD_TAIL"
    cons_reg = "CMD_HEAD"
    mem_poll = True          # COMPLETION_WAIT stores to a semaphore in memory
    params: ClassVar[dict[str, Any]] = {"np_cache": False}

    def __init__(self, dom: IommuDomain, params: dict[str, Any]) -> None:
        super().__init__(dom, params)
        self.locks = [SpinLock(self.cpus, f"iommu{i}->lock") for i in range(len(self.queues))]

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
        if self.p["np_cache"]:  # v5.10 domain_flush_pages passes pde = 0 here
            self.domain_flush_pages(iova, size, pde=0, reason=MAP_SIDE)
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
                dom.mark_stale(leaf[0], leaf[0] + step, t0)
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
        """``domain_flush_tlb_pde``: every page, PDEs too; then ``domain_flush_complete``."""
        self.domain_flush_pages(0, CMD_INV_IOMMU_ALL_PAGES_ADDRESS, pde=1)

    # ---- commands --------------------------------------------------------------------
    def domain_flush_pages(self, address: int, size: int, pde: int, reason: str = "") -> None:
        """``domain_flush_pages`` then ``domain_flush_complete`` (every IOMMU of the domain)."""
        for a, n in self.pieces(address, size):
            self.flush_pages_on_all(a, n, pde, reason)
        self.domain_flush_complete()

    def pieces(self, address: int, size: int) -> list[tuple[int, int]]:
        """How ``domain_flush_pages`` splits a flush (v5.10: it does not)."""
        return [(address, size)]

    def flush_pages_on_all(self, address: int, size: int, pde: int, reason: str) -> None:
        """``__domain_flush_pages``: the command to every IOMMU the domain spans, then (ATS)
        ``device_flush_iotlb`` for every endpoint, each on its own IOMMU."""
        cmd = self.inv_pages(address, size, pde, reason)
        for i in range(len(self.queues)):
            self.queue_command(cmd, i)
        if self.ats:
            dev = self.inv_iotlb_pages(address, size)
            for i in range(len(self.queues)):
                self.queue_command(dev, i)

    def inv_pages(self, address: int, size: int, pde: int, reason: str = "") -> Command:
        """v5.10 ``build_inv_iommu_pages``: "If we have to flush more than one page, flush
        all TLB entries for this domain" (v5.10.89:940-945)."""
        if iommu_num_pages(address, size) > 1:
            return self.inv_all(pde, reason)
        return Command("INVALIDATE_IOMMU_PAGES", self.asid, address & PAGE_MASK, SZ_4K, 0,
                       (("S", 0), ("PDE", pde)), reason)

    def inv_iotlb_pages(self, address: int, size: int) -> Command:
        """v5.10 ``build_inv_iotlb_pages``: the endpoint's ATC, same more-than-one-page rule."""
        if iommu_num_pages(address, size) > 1:
            return Command("INVALIDATE_IOTLB_PAGES", self.asid, fields=(("S", 1),))
        return Command("INVALIDATE_IOTLB_PAGES", self.asid, address & PAGE_MASK, SZ_4K, 0,
                       (("S", 0),))

    def inv_all(self, pde: int, reason: str = "") -> Command:
        """``INVALIDATE_IOMMU_PAGES`` of every page of the domain (S=1, all-pages address)."""
        return Command("INVALIDATE_IOMMU_PAGES_ALL", self.asid,
                       fields=(("S", 1), ("PDE", pde),
                               ("ADDR", CMD_INV_IOMMU_ALL_PAGES_ADDRESS & PAGE_MASK)),
                       reason=reason)

    @staticmethod
    def need_sync(q: Any) -> bool:
        """``iommu->need_sync``: a command other than COMPLETION_WAIT was queued since the
        last COMPLETION_WAIT (the queue's pending-work flags say exactly that)."""
        return bool(q.inv_since_sync or q.inv_all_since_sync or q.req_since_sync)

    def queue_command(self, cmd: Command, i: int = 0) -> None:
        """``iommu_queue_command`` on IOMMU ``i``: under its ``iommu->lock``, copy to the
        buffer and write ``CMD_TAIL`` (a doorbell)."""
        self.locks[i].acquire()
        self.submit([(cmd, 1)], self.queues[i])
        self.locks[i].release()

    def domain_flush_complete(self) -> None:
        """``domain_flush_complete``: ``iommu_completion_wait`` on each IOMMU in turn —
        ``COMPLETION_WAIT``, then ``wait_on_sem`` polls memory *holding* ``iommu->lock``
        (amd/iommu.c @v5.10.89).

        ``if (!iommu->need_sync) return 0;`` comes first, outside the lock: ``need_sync``
        is set by every command queued with ``sync=true`` and cleared by the
        COMPLETION_WAIT itself. With several CPUs, a CPU whose invalidation another CPU's
        COMPLETION_WAIT already followed returns at once — without waiting for it."""
        for lock, q in zip(self.locks, self.queues):
            if not self.need_sync(q):
                continue
            lock.acquire()
            pos = self.submit([(Command("COMPLETION_WAIT", fields=(("S", 1),)), 1)], q)
            self.wait(pos, q)
            lock.release()


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
        rules = self.dom.core.gather or self.dom.core.gather_rules()  # (EINVAL before v5.4)
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
        self.domain_flush_pages(gather.start if gather.pgsize else ULONG_MAX, size, pde=1)

    def iotlb_sync_map(self, dom: IommuDomain, iova: int, size: int) -> None:
        """``amd_iommu_iotlb_sync_map``: only with NpCache (``domain_flush_np_cache``)."""
        if self.p["np_cache"]:
            self.domain_flush_pages(iova, size, pde=1, reason=MAP_SIDE)

    def pieces(self, address: int, size: int) -> list[tuple[int, int]]:
        """One S-bit command (bare metal) or one per naturally aligned piece (NpCache)."""
        return aligned_pieces(address, size) if self.p["np_cache"] else [(address, size)]

    def inv_pages(self, address: int, size: int, pde: int = 1, reason: str = "") -> Command:
        """``build_inv_iommu_pages`` with ``build_inv_address``'s natural-alignment rule."""
        address, block, s_bit = build_inv_address(address, size)
        if block is None:
            return self.inv_all(pde, reason)
        fields: tuple[tuple[str, int], ...] = (("S", s_bit), ("PDE", pde))
        if s_bit:
            fields += (("ADDR", address | (block // 2 - 1) & PAGE_MASK),)
        return Command("INVALIDATE_IOMMU_PAGES", self.asid, address, block, 0, fields, reason)

    def inv_iotlb_pages(self, address: int, size: int) -> Command:
        """v5.15 ``build_inv_iotlb_pages``: the endpoint's ATC, by ``build_inv_address``."""
        address, block, s_bit = build_inv_address(address, size)
        if block is None:
            return Command("INVALIDATE_IOTLB_PAGES", self.asid, fields=(("S", 1),))
        return Command("INVALIDATE_IOTLB_PAGES", self.asid, address, block, 0, (("S", s_bit),))

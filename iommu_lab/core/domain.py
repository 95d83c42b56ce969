"""``struct iommu_domain``: page table, ops table, hardware, clock, counters and trace.

What varies between domains is chosen once, at ``iommu_domain_alloc``, from tables:

- the domain type (:data:`DOMAIN_TYPES`, include/linux/iommu.h ``IOMMU_DOMAIN_*``):
  ``UNMANAGED`` (VFIO/KVM drive the IOMMU API), ``DMA`` (DMA API, strict) and ``DMA_FQ``
  (DMA API, lazy flush queue; its own type from v5.15, "non-strict" mode before);
- the core's rules for the kernel era (:class:`~iommu_lab.core.era.CoreRules`);
- the API variant (:class:`ApiVariant`): the merged kernel API, or Joerg Roedel's 2017
  proposal (:mod:`iommu_lab.core.rfc2017`), each building the ops table the core calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import einval
from ..hw.clock import Clock
from ..hw.costs import Costs
from ..hw.cpus import Cpus
from ..hw.iommu_hw import IommuHw, WalkResult
from ..hw.iotlb import Iotlb, TlbEntry
from ..io_pgtable.arm import IoPgtableArm
from ..stats import Stats
from ..trace import Trace
from .era import CoreRules
from .gather import IommuIotlbGather


@dataclass(frozen=True)
class DomainType:
    """One ``IOMMU_DOMAIN_*`` type: who maps, and whether unmapped IOVAs wait for a flush."""

    name: str
    dma_api: bool
    flush_queue: bool
    summary: str


DOMAIN_TYPES: dict[str, DomainType] = {t.name: t for t in (
    DomainType("UNMANAGED", dma_api=False, flush_queue=False,
               summary="the caller (VFIO, KVM) drives the IOMMU API"),
    DomainType("DMA", dma_api=True, flush_queue=False,
               summary="DMA API, strict: every unmap is invalidated before it returns"),
    DomainType("DMA_FQ", dma_api=True, flush_queue=True,
               summary="DMA API, lazy: unmapped IOVAs wait in a flush queue"),
)}


def get_domain_type(name: str) -> DomainType:
    """The domain type called ``name``; EINVAL naming the known ones otherwise."""
    if name not in DOMAIN_TYPES:
        raise einval(f"unknown domain type {name!r}; expected one of {tuple(DOMAIN_TYPES)}")
    return DOMAIN_TYPES[name]


@dataclass(frozen=True)
class IommuDomainOps:
    """The driver callbacks the core calls (``struct iommu_ops`` / ``iommu_domain_ops``).

    ``map``/``unmap`` take (pgsize, pgcount) as ``map_pages``/``unmap_pages`` do (v5.15+);
    older eras are called with ``pgcount == 1``, and so are drivers that only have the
    legacy ``.map``/``.unmap`` (``one_page_per_call``: the v5.15 core then calls them once
    per page, L5.15 iommu.c:2465-2471). Optional members are None when the driver (in that
    kernel version) does not implement them, and the core guards each one.
    """

    map: Callable[..., int]
    unmap: Callable[..., int]
    one_page_per_call: bool = False
    iotlb_range_add: Callable[..., None] | None = None
    iotlb_sync: Callable[..., None] | None = None
    flush_iotlb_all: Callable[..., None] | None = None
    iotlb_sync_map: Callable[..., None] | None = None


@dataclass(frozen=True)
class ApiVariant:
    """How callers see the flush API: the merged kernel's, or the 2017 proposal's.

    ``ops(driver)`` builds the ops table the core calls; ``unmap(domain, iova, size)`` is
    ``iommu_unmap`` after its argument checks (the kernel's syncs, the 2017 one does not);
    ``caller_gather``: callers keep their own gather for ``iommu_unmap_fast`` and the sync
    (v5.4+), rather than one pending range per domain (the 2017 proposal); ``labels`` name
    the calls as that API spells them (``sync``, ``flush_all``, ``range_add``).
    """

    name: str
    merged: bool
    summary: str
    source: str
    ops: Callable[[Any], IommuDomainOps]
    unmap: Callable[[Any, int, int], int]
    caller_gather: bool
    labels: Mapping[str, str]


class IommuDomain:
    """One IOMMU domain and everything that simulates it."""

    def __init__(self, strategy: Any, dtype: DomainType, api: ApiVariant, core: CoreRules,
                 pgtable: IoPgtableArm, costs: Costs, iotlb: Iotlb | Sequence[Iotlb],
                 asid: int = 1, trace_limit: int = 200_000, cpus: int = 1,
                 atcs: Sequence[Iotlb | None] = ()) -> None:
        self.strategy, self.dtype, self.api, self.core, self.asid = strategy, dtype, api, core, asid
        self.pgtable = pgtable
        self.pgsize_bitmap = strategy.pgsize_bitmap & ~(pgtable.granule - 1)
        self.stats = Stats()
        self.clock = Clock(self.stats)
        self.cpus = Cpus(self.clock, self.stats, cpus, costs.cacheline_ns)
        self.costs = costs
        iotlbs = [iotlb] if isinstance(iotlb, Iotlb) else list(iotlb)
        atcs = list(atcs) or [None] * len(iotlbs)
        self.iommus = [IommuHw(self.clock, self.stats, costs, t, a) for t, a in zip(iotlbs, atcs)]
        self.hw = self.iommus[0]      # the IOMMU the stepped device sits behind
        self.trace = Trace(trace_limit)
        if trace_limit:
            self.clock.on_spin = self.trace_wait
        self.ops: IommuDomainOps
        self.driver: Any = None
        self.dma_ops: Any = None      # dma-iommu or a driver's own DMA ops (DMA/DMA_FQ)
        self.fq: Any = None           # dma-iommu flush queue on DMA_FQ domains
        self.iovad: Any = None        # dma-iommu IOVA allocator on DMA/DMA_FQ domains
        self.rfc_gather = IommuIotlbGather()  # the 2017 API's domain-wide pending range
        self.notes: list[str] = []
        self.fail_map_after: int | None = None  # fault injection: fail the Nth map callback
        self.compact = True           # runs of identical calls may be extrapolated
        self.memo = True              # ops may replay a recorded outcome (iommu_lab.memo)

    def cpu_lane(self) -> str:
        """The running CPU's timeline lane: ``CPU`` with one CPU, ``CPU 3`` with several."""
        return "CPU" if self.cpus.n == 1 else f"CPU {self.cpus.current}"

    def trace_wait(self, t0: int, t1: int, label: str) -> None:
        """The clock's spin hook: the running CPU waited from ``t0`` to ``t1``."""
        self.trace.add_wait(t0, t1, self.cpu_lane(), label)

    @property
    def type(self) -> str:
        """The domain type's name: ``UNMANAGED`` | ``DMA`` | ``DMA_FQ``."""
        return self.dtype.name

    @property
    def min_pagesz(self) -> int:
        """Smallest supported page size: ``1 << __ffs(pgsize_bitmap)``."""
        return self.pgsize_bitmap & -self.pgsize_bitmap

    def iotlb_pgsizes(self) -> tuple[int, ...]:
        """Leaf sizes an IOTLB lookup must try for this domain."""
        return self.pgtable.leaf_sizes

    def walk(self, iova: int) -> WalkResult:
        """What the IOMMU's table walker finds for ``iova`` (one walker for every reader)."""
        return self.pgtable.walk(iova)

    def dma_access(self, iova: int, write: bool = False) -> str:
        """The device reads/writes ``iova`` through the IOMMU: hit | walk | fault | stale."""
        t0 = self.clock.now
        pt = self.pgtable
        res = self.hw.translate(self.asid, iova, write, pt.walk, pt.leaf_sizes, pt.levels,
                                pt.generation)
        if self.trace.wants():
            self.trace.add(t0, t0, "device", "dma_write" if write else "dma_read", iova, 0, res)
        return res

    def iotlb_entries(self) -> list[IotlbEntryView]:
        """What the first IOMMU's IOTLB (then the device's ATC, with ATS) holds, oldest
        first, each entry with its stale flag."""
        out = []
        caches = [("IOTLB", self.hw.iotlb), ("ATC", self.hw.atc)]
        for name, cache in caches:
            for e in cache.snapshot() if cache is not None else ():
                now = self.pgtable.iova_to_phys(e.iova)
                stale = bool(now) if e.negative else now != e.paddr
                out.append(IotlbEntryView(e, stale, now, name))
        return out

    def mark_stale(self, start: int, end: int, since: int) -> None:
        """The page table stopped backing [start, end) at ``since``: every IOTLB and
        device TLB notes it (for the stale window)."""
        for hw in self.iommus:
            if hw.iotlb.entries:
                hw.iotlb.mark_stale(self.asid, start, end, since)
            if hw.atc is not None and hw.atc.entries:
                hw.atc.mark_stale(self.asid, start, end, since)

    def unmark_stale(self, start: int, end: int) -> None:
        """Undo :meth:`mark_stale` where the page table still backs the entry."""
        for hw in self.iommus:
            hw.iotlb.unmark_stale(self.asid, start, end, self.pgtable.iova_to_phys)
            if hw.atc is not None:
                hw.atc.unmark_stale(self.asid, start, end, self.pgtable.iova_to_phys)

    def per_iommu(self) -> list[dict[str, int]]:
        """Commands, invalidations, syncs, ATC invalidations, doorbells and completion
        waits on each IOMMU the domain spans (a copy; see ``CommandQueue.tally``)."""
        out = []
        for hw in self.iommus:
            total: dict[str, int] = {}
            for q in hw.queues:
                for name, n in q.tally.items():
                    total[name] = total.get(name, 0) + n
            out.append(total)
        return out

    # ---- compact runs: the domain's periodic parts ----------------------------------
    def periodic_parts(self) -> list[Any]:
        """Every object whose state a compact run signs and shifts (iommu_lab.compact)."""
        parts: list[Any] = [self.stats, *(q for hw in self.iommus for q in hw.queues),
                            self.rfc_gather]
        if self.fq is not None:
            parts.append(self.fq)
        return parts

    def quiet(self) -> bool:
        """May a compact run extrapolate now? Compaction is on, nothing in the IOTLB could
        observe the order of the skipped items, and no queue waits for a stepper."""
        return (self.compact and self.cpus.n == 1 and self.fail_map_after is None
                and not any(hw.iotlb.count(self.asid) or (hw.atc and hw.atc.count(self.asid))
                            or any(q.paused for q in hw.queues) for hw in self.iommus))

    def __repr__(self) -> str:
        return (f"<IommuDomain {self.strategy.name} type={self.type} api={self.api.name} "
                f"ias={self.pgtable.cfg.ias}>")


@dataclass(frozen=True)
class IotlbEntryView:
    """A read-only view of one IOTLB entry: is it stale, and what the table maps now."""

    entry: TlbEntry
    stale: bool
    page_table_now: int
    cache: str = "IOTLB"          # or "ATC": the endpoint's device TLB (PCIe ATS)


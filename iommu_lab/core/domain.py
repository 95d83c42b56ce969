"""``struct iommu_domain``: page table, ops table, hardware, clock, counters and trace.

Domain types (include/linux/iommu.h): ``UNMANAGED`` (VFIO/KVM: the caller drives the
IOMMU API), ``DMA`` (DMA API, strict) and ``DMA_FQ`` (DMA API, lazy flush queue, v5.15+).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import einval
from ..hw.clock import Clock
from ..hw.costs import Costs
from ..hw.iommu_hw import IommuHw
from ..hw.iotlb import Iotlb
from ..io_pgtable.arm import IoPgtableArm
from ..stats import Stats
from ..trace import Trace
from .gather import IommuIotlbGather

DOMAIN_TYPES = ("UNMANAGED", "DMA", "DMA_FQ")
APIS = ("kernel", "rfc-2017")


@dataclass(frozen=True)
class IommuDomainOps:
    """The driver callbacks the core calls (``struct iommu_ops`` / ``iommu_domain_ops``).

    ``map``/``unmap`` take (pgsize, pgcount) as ``map_pages``/``unmap_pages`` do (v5.15+);
    older eras are called with ``pgcount == 1``. Optional members are None when the driver
    (in that kernel version) does not implement them, and the core guards each one.
    """

    map: Callable[..., int]
    unmap: Callable[..., int]
    iotlb_range_add: Callable[..., None] | None = None
    iotlb_sync: Callable[..., None] | None = None
    flush_iotlb_all: Callable[..., None] | None = None
    iotlb_sync_map: Callable[..., None] | None = None


class IommuDomain:
    """One IOMMU domain and everything that simulates it."""

    def __init__(self, strategy: Any, dtype: str, api: str, pgtable: IoPgtableArm,
                 costs: Costs, iotlb: Iotlb, asid: int = 1, trace_limit: int = 200_000) -> None:
        if dtype not in DOMAIN_TYPES:
            raise einval(f"unknown domain type {dtype!r}; expected one of {DOMAIN_TYPES}")
        if api not in APIS:
            raise einval(f"unknown api {api!r}; expected one of {APIS}")
        self.strategy, self.type, self.api, self.asid = strategy, dtype, api, asid
        self.pgtable = pgtable
        self.pgsize_bitmap = strategy.pgsize_bitmap & ~(pgtable.granule - 1)
        self.era = strategy.core_era
        self.stats = Stats()
        self.clock = Clock(self.stats)
        self.costs = costs
        self.hw = IommuHw(self.clock, self.stats, costs, iotlb)
        self.trace = Trace(trace_limit)
        self.ops: IommuDomainOps
        self.driver: Any = None
        self.fq: Any = None           # dma-iommu flush queue on DMA_FQ domains
        self.iovad: Any = None        # dma-iommu IOVA allocator on DMA/DMA_FQ domains
        self.rfc_gather = IommuIotlbGather()  # the 2017 API's domain-wide pending range
        self.notes: list[str] = []
        self.fail_map_after: int | None = None  # fault injection: fail the Nth map callback

    @property
    def min_pagesz(self) -> int:
        """Smallest supported page size: ``1 << __ffs(pgsize_bitmap)``."""
        return self.pgsize_bitmap & -self.pgsize_bitmap

    def iotlb_pgsizes(self) -> tuple[int, ...]:
        """Leaf sizes an IOTLB lookup must try for this domain."""
        return self.pgtable.leaf_sizes

    def dma_access(self, iova: int, write: bool = False) -> str:
        """The device reads/writes ``iova`` through the IOMMU: hit | walk | fault | stale."""
        t0 = self.clock.now
        res = self.hw.translate(self.asid, iova, write, self.pgtable.walk, self.iotlb_pgsizes(),
                                self.pgtable.levels)
        self.trace.add(t0, t0, "device", "dma_write" if write else "dma_read", iova, 0, res)
        return res

    def __repr__(self) -> str:
        return (f"<IommuDomain {self.strategy.name} type={self.type} api={self.api} "
                f"ias={self.pgtable.cfg.ias}>")

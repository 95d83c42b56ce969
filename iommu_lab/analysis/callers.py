"""Caller patterns: how the IOMMU API is used (DESIGN.md §4, kernel-api-history §3–5).

A workload says *what* is mapped and unmapped; the caller pattern says *which API calls*
do it. A caller is a row of callables, like a kernel ops struct: what a ``map`` becomes,
what an ``unmap`` becomes, what ends a stretch of unmaps (a batched sync, a flush-all),
plus the domain type and API variant it needs and where the kernel does it. Explicit
``unmap_fast`` / ``sync`` / ``flush_all`` ops pass through unchanged. Adding a caller is
one new row (and its functions, here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.dma_iommu import iommu_dma_map, iommu_dma_unmap
from ..core.iommu import iommu_flush_iotlb_all, iommu_iotlb_sync, iommu_map, iommu_unmap
from ..core.iommu import iommu_unmap_fast as unmap_fast
from ..core.rfc2017 import iommu_map_sync, iommu_unmap_sync
from ..errors import einval
from ..inputs.ops import Op

if TYPE_CHECKING:
    from .session import Session

VFIO_IOMMU_TLB_SYNC_MAX = 512  # drivers/vfio/vfio_iommu_type1.c @v5.4.59

OpFn = Callable[["Session", Op], None]
EndFn = Callable[["Session"], None]


@dataclass(frozen=True)
class Caller:
    """One caller pattern: its calls, the domain it needs, and where the kernel does it.

    ``domain_type`` / ``api`` None: the session chooses (the stepper's ``api-calls``).
    ``merged``: False for patterns only the never-merged 2017 API allows.
    """

    name: str
    domain_type: str | None
    api: str | None
    summary: str
    source: str
    map: OpFn
    unmap: OpFn
    end_stretch: EndFn
    merged: bool = True


# ---- map -------------------------------------------------------------------------------

def map_iommu(s: Session, op: Op) -> None:
    """``iommu_map`` (DMA-API buffers as whole pages, at an IOVA the session allocates)."""
    op, iova = s.iommu_target(op)
    iommu_map(s.dom, iova, op.paddr, op.size, op.prot)


def map_sync_2017(s: Session, op: Op) -> None:
    """The 2017 wrapper ``iommu_map_sync``: map, range_add, sync."""
    op, iova = s.iommu_target(op)
    iommu_map_sync(s.dom, iova, op.paddr, op.size, op.prot)


def map_dma(s: Session, op: Op) -> None:
    """``iommu_dma_map_page``: the DMA layer allocates the IOVA unless the op names one."""
    chosen = op.kind == "dma_map" and not op.iova
    iova = iommu_dma_map(s.dom, op.paddr, op.size, op.prot, iova=None if chosen else op.iova)
    if chosen:
        s.handles[op.paddr] = iova


def map_by_domain(s: Session, op: Op) -> None:
    """The call the domain type implies: the DMA API on DMA domains, else ``iommu_map``."""
    (map_dma if s.dom.dtype.dma_api else map_iommu)(s, op)


# ---- unmap ---------------------------------------------------------------------------------

def unmap_each(s: Session, op: Op) -> None:
    """``iommu_unmap``: unmap and sync, one region at a time."""
    op = s.iommu_unmap_target(op)
    iommu_unmap(s.dom, op.iova, op.size)


def unmap_fast_batch(s: Session, op: Op) -> None:
    """``iommu_unmap_fast``, ``iommu_iotlb_sync`` every 512 regions (VFIO)."""
    op = s.iommu_unmap_target(op)
    unmap_fast(s.dom, op.iova, op.size, s.gather)
    s.pending_regions += 1
    if s.pending_regions >= VFIO_IOMMU_TLB_SYNC_MAX:
        sync_batch(s)


def unmap_no_sync_2017(s: Session, op: Op) -> None:
    """2017 ``iommu_unmap``: never syncs; the flush-all at the end of the stretch covers it."""
    op = s.iommu_unmap_target(op)
    iommu_unmap(s.dom, op.iova, op.size)
    s.unflushed = True


def unmap_sync_2017(s: Session, op: Op) -> None:
    """The 2017 wrapper ``iommu_unmap_sync``: unmap, range_add, sync."""
    op = s.iommu_unmap_target(op)
    iommu_unmap_sync(s.dom, op.iova, op.size)


def unmap_dma(s: Session, op: Op) -> None:
    """``iommu_dma_unmap_page``: strict or flush queue, by domain type."""
    iommu_dma_unmap(s.dom, s.iova_of(op), op.size)


def unmap_by_domain(s: Session, op: Op) -> None:
    """The call the domain type implies: the DMA API on DMA domains, else ``iommu_unmap``."""
    (unmap_dma if s.dom.dtype.dma_api else unmap_each)(s, op)


# ---- end of a stretch of unmaps --------------------------------------------------------------

def end_nothing(s: Session) -> None:
    """Every unmap completed its own invalidation: nothing pending."""


def sync_batch(s: Session) -> None:
    """``iommu_iotlb_sync`` of the regions unmapped since the last one."""
    iommu_iotlb_sync(s.dom, s.gather)
    s.pending_regions = 0


def end_batch(s: Session) -> None:
    """VFIO syncs what is pending when the unmap loop ends."""
    if s.pending_regions:
        sync_batch(s)


def end_flush_all(s: Session) -> None:
    """Joerg's KVM teardown: one ``iommu_flush_tlb_all`` after the unmaps."""
    if s.unflushed:
        iommu_flush_iotlb_all(s.dom)
        s.unflushed = False


CALLERS: dict[str, Caller] = {c.name: c for c in (
    Caller("unmap-each", "UNMANAGED", "kernel",
           "one iommu_unmap (unmap + sync) per region",
           "vfio_iommu_type1.c @v4.14.5: iommu_unmap per chunk",
           map_iommu, unmap_each, end_nothing),
    Caller("unmap-fast-batch", "UNMANAGED", "kernel",
           "iommu_unmap_fast per region, iommu_iotlb_sync every 512 regions",
           "vfio_iommu_type1.c @v5.4.59: unmap_unpin_fast, VFIO_IOMMU_TLB_SYNC_MAX",
           map_iommu, unmap_fast_batch, end_batch),
    Caller("unmap-then-flush-all", "UNMANAGED", "rfc-2017",
           "unmap every region (no sync), then one iommu_flush_tlb_all",
           "Joerg Roedel, [PATCH 02/13] (Aug 2017): KVM domain teardown",
           map_iommu, unmap_no_sync_2017, end_flush_all, merged=False),
    Caller("rfc-2017-wrappers", "UNMANAGED", "rfc-2017",
           "iommu_map_sync / iommu_unmap_sync per region (range_add + sync, also on map)",
           "Joerg Roedel, [PATCH 02/13] (Aug 2017); never merged",
           map_sync_2017, unmap_sync_2017, end_nothing, merged=False),
    Caller("dma-strict", "DMA", "kernel",
           "DMA API: unmap_fast + iotlb_sync per buffer, IOVA freed at once",
           "drivers/iommu/dma-iommu.c __iommu_dma_unmap (strict)",
           map_dma, unmap_dma, end_nothing),
    Caller("dma-lazy", "DMA_FQ", "kernel",
           "DMA API: IOVA queued, flush-all when the 256-entry queue fills or after 10 ms",
           "drivers/iommu/dma-iommu.c / iova.c flush queue (IOVA_FQ_SIZE, IOVA_FQ_TIMEOUT)",
           map_dma, unmap_dma, end_nothing),
    Caller("api-calls", None, None,
           "each op is the call it names: map -> iommu_map (the DMA API on DMA domains), "
           "unmap -> iommu_unmap; the stepper's caller",
           "include/linux/iommu.h, include/linux/dma-mapping.h",
           map_by_domain, unmap_by_domain, end_nothing),
)}

DEFAULT_CALLERS = ("unmap-each", "unmap-fast-batch", "unmap-then-flush-all",
                   "rfc-2017-wrappers", "dma-strict", "dma-lazy")


def get_caller(name: str) -> Caller:
    """The caller pattern ``name``; EINVAL naming the known ones otherwise."""
    if name not in CALLERS:
        raise einval(f"unknown caller {name!r}; known: {', '.join(CALLERS)}")
    return CALLERS[name]


def caller_rows() -> list[dict[str, Any]]:
    """One dict per caller pattern (name, domain type, API, summary, source, merged)."""
    return [{"name": c.name, "domain_type": c.domain_type or "any", "api": c.api or "any",
             "summary": c.summary, "source": c.source, "merged": c.merged}
            for c in CALLERS.values()]

"""Caller patterns: how the IOMMU API is used (DESIGN.md §4, kernel-api-history §3–5).

A workload says *what* is mapped and unmapped; the caller pattern says *which API calls*
do it. Explicit ``unmap_fast`` / ``sync`` / ``flush_all`` ops pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import einval

VFIO_IOMMU_TLB_SYNC_MAX = 512  # drivers/vfio/vfio_iommu_type1.c @v5.4.6


@dataclass(frozen=True)
class Caller:
    """One caller pattern, the domain it needs, and where the kernel does it."""

    name: str
    domain_type: str
    api: str
    summary: str
    source: str


CALLERS: dict[str, Caller] = {c.name: c for c in (
    Caller("unmap-each", "UNMANAGED", "kernel",
           "one iommu_unmap (unmap + sync) per region",
           "vfio_iommu_type1.c @v4.14.5: iommu_unmap per chunk"),
    Caller("unmap-fast-batch", "UNMANAGED", "kernel",
           "iommu_unmap_fast per region, iommu_iotlb_sync every 512 regions",
           "vfio_iommu_type1.c @v5.4.6: unmap_unpin_fast, VFIO_IOMMU_TLB_SYNC_MAX"),
    Caller("unmap-then-flush-all", "UNMANAGED", "rfc-2017",
           "unmap every region (no sync), then one iommu_flush_tlb_all",
           "Joerg Roedel, [PATCH 02/13] (Aug 2017): KVM domain teardown"),
    Caller("rfc-2017-wrappers", "UNMANAGED", "rfc-2017",
           "iommu_map_sync / iommu_unmap_sync per region (range_add + sync, also on map)",
           "Joerg Roedel, [PATCH 02/13] (Aug 2017); never merged"),
    Caller("dma-strict", "DMA", "kernel",
           "DMA API: unmap_fast + iotlb_sync per buffer, IOVA freed at once",
           "drivers/iommu/dma-iommu.c __iommu_dma_unmap (strict)"),
    Caller("dma-lazy", "DMA_FQ", "kernel",
           "DMA API: IOVA queued, flush-all when the 256-entry queue fills or after 10 ms",
           "drivers/iommu/dma-iommu.c / iova.c flush queue (IOVA_FQ_SIZE, IOVA_FQ_TIMEOUT)"),
)}


def get_caller(name: str) -> Caller:
    """The caller pattern ``name``; EINVAL naming the known ones otherwise."""
    if name not in CALLERS:
        raise einval(f"unknown caller {name!r}; known: {', '.join(CALLERS)}")
    return CALLERS[name]

"""Joerg Roedel's Aug-2017 proposal as an API variant (``api="rfc-2017"``).

"[PATCH 02/13] iommu: Introduce Interface for IOMMU TLB Flushing" (LKML, Aug 2017):
``iommu_map``/``iommu_unmap`` stop flushing; callers add ranges with
``iommu_tlb_range_add`` and complete them with ``iommu_tlb_sync``, or drop everything with
``iommu_flush_tlb_all``; ``iommu_map_sync``/``iommu_unmap_sync`` wrap the common case. Only
the first three names (and ``iommu_unmap_fast``) merged, in v4.14; the wrappers never did.

This is a *reconstruction*: the proposal was never merged with these semantics, so a domain
built on it (a v4.15 or v5.4 driver behind the 2017 API) is hypothetical, and
``strategies()`` / ``callers()`` say so. How a driver answers the 2017 calls comes from its
optional ops members: ``iotlb_range_add`` (AMD had an empty one, v4.20–v5.3) and, where
the merged op differs from what the proposal implied, ``rfc2017_flush_all``: for SMMUv3
v4.15 a flush-all that drops the whole context (Will Deacon's reading; v4.15's own
``flush_iotlb_all`` was a bare CMD_SYNC). Otherwise the merged ``flush_iotlb_all`` is used,
and a driver without one (VT-d v5.10, virtio v5.15) does nothing, as in the kernel.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .domain import ApiVariant, IommuDomain, IommuDomainOps
from .gather import IommuIotlbGather
from .iommu import (
    check_int,
    iommu_flush_iotlb_all,
    iommu_iotlb_sync,
    iommu_map,
    iommu_unmap,
    unmap_pending,
)


def rfc2017_ops(driver: Any) -> IommuDomainOps:
    """The driver's ops as the 2017 API uses them: its merged table, plus its
    ``iotlb_range_add`` callback and any reconstructed flush-all (``rfc2017_flush_all``);
    a call the driver has no op for reaches nothing, as in the kernel."""
    ops = driver.domain_ops()
    return replace(ops, iotlb_range_add=driver.iotlb_range_add,
                   flush_iotlb_all=driver.rfc2017_flush_all or ops.flush_iotlb_all)


RFC_2017_API = ApiVariant(
    "rfc-2017", merged=False,
    summary="Joerg Roedel's 2017 proposal: iommu_unmap never flushes; callers use "
            "iommu_tlb_range_add + iommu_tlb_sync or iommu_flush_tlb_all (reconstruction)",
    source="[PATCH 02/13] iommu: Introduce Interface for IOMMU TLB Flushing (LKML, Aug 2017)",
    ops=rfc2017_ops, unmap=unmap_pending,
    caller_gather=False,
    labels={"sync": "iommu_tlb_sync", "flush_all": "iommu_flush_tlb_all"})


def iommu_tlb_range_add(domain: IommuDomain, iova: int, size: int) -> None:
    """Tell the driver a range needs flushing (a no-op when the driver has no callback)."""
    iova, size = check_int(iova, "iova"), check_int(size, "size")
    domain.clock.busy(domain.costs.call_ns)
    if domain.ops.iotlb_range_add is not None:
        domain.ops.iotlb_range_add(domain, iova, size)


def iommu_tlb_sync(domain: IommuDomain, gather: IommuIotlbGather | None = None) -> None:
    """2017: flush all queued ranges and wait (v5.4: with the caller's gather)."""
    iommu_iotlb_sync(domain, gather)


def iommu_flush_tlb_all(domain: IommuDomain) -> None:
    """2017 name of ``iommu_flush_iotlb_all``."""
    iommu_flush_iotlb_all(domain)


def iommu_map_sync(domain: IommuDomain, iova: int, paddr: int, size: int, prot: int) -> int:
    """Proposed wrapper (never merged): map, then range_add + sync — even though most
    IOMMUs need nothing after *map* (Will Deacon asked for a flags argument)."""
    ret = iommu_map(domain, iova, paddr, size, prot)
    iommu_tlb_range_add(domain, iova, size)
    iommu_tlb_sync(domain)
    return ret


def iommu_unmap_sync(domain: IommuDomain, iova: int, size: int) -> int:
    """Proposed wrapper (never merged): unmap, then range_add + sync."""
    ret = iommu_unmap(domain, iova, size)
    iommu_tlb_range_add(domain, iova, size)
    iommu_tlb_sync(domain)
    return ret

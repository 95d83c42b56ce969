"""Measurements notebooks 00–04 make that no other module offers, as plain rows.

``reuse_rows``: the safety rule that makes batching legal — nothing unmapped may be reused
until a covering flush completes. VFIO keeps unmapped pages pinned until its
``iommu_tlb_sync`` (``vfio_sync_unpin``, drivers/vfio/vfio_iommu_type1.c @v4.20) and
dma-iommu frees an IOVA only after its flush (kernel-api-history.md §3.4, §5.2). When a
freed page is reused early — mapped again for a new owner — a stale IOTLB entry of its old
IOVA still reaches it, and the device's write lands in the new owner's data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..core.domain import IommuDomain
from ..core.iommu import iommu_iotlb_sync, iommu_map, iommu_unmap_fast
from ..drivers.registry import iommu_domain_alloc
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_4K

RW = int(IOMMU_READ | IOMMU_WRITE)
PADDR = 0x4000_0000


def reuse_rows(dom: IommuDomain) -> list[dict[str, Any]]:
    """Every stale IOTLB entry whose physical page is mapped again, at another IOVA.

    Each row: the stale IOVA the device can still use, the physical page, and the IOVA
    of its new owner in the page table. Empty: no freed page is reachable by a stale
    translation (reuse was safe, or nothing was reused yet). Read from public snapshots
    (``IommuDomain.iotlb_entries()``, the page table's leaves); changes nothing.
    """
    rows = []
    for view in dom.iotlb_entries():
        e = view.entry
        if not view.stale or e.negative:
            continue
        for iova, size, paddr, _pte in dom.pgtable.leaves():
            if paddr < e.paddr + e.pgsize and e.paddr < paddr + size and iova != e.iova:
                rows.append({"stale IOVA (old owner)": hex(e.iova), "physical page": hex(e.paddr),
                             "now mapped at (new owner)": hex(iova + max(0, e.paddr - paddr)),
                             "device write there": "lands in the new owner's data"})
    return rows


def reuse_table(dom: IommuDomain) -> pd.DataFrame:
    """:func:`reuse_rows` as a table (one line saying so when nothing is exposed)."""
    rows = reuse_rows(dom)
    if not rows:
        return pd.DataFrame([{"result": "no stale translation reaches a reused page"}])
    return pd.DataFrame(rows)


def forgot_range_add(strategies: Sequence[str], pages: int = 4) -> list[dict[str, Any]]:
    """What each driver does when the caller never calls ``iommu_tlb_range_add``.

    On each strategy (merged kernel API): map ``pages`` 4 KiB pages, let the device read
    each, ``iommu_unmap_fast`` them all, then ``iommu_iotlb_sync`` — no range_add. One
    row per strategy: whether its ops have an ``iotlb_range_add``, the TLBIs and syncs
    the unmap + sync issued, and what the device's next reads get. The reference driver
    of the 2017 contract (``rfc2017-ref``) leaves them stale; every merged driver is safe,
    because none relied on range_add (kernel-api-history.md §3.3–§3.4).
    """
    rows = []
    for name in strategies:
        dom = iommu_domain_alloc(name)
        size = pages * SZ_4K
        iommu_map(dom, 0, PADDR, size, RW)
        for i in range(pages):
            dom.dma_access(i * SZ_4K)
        before = dom.stats()
        iommu_unmap_fast(dom, 0, size)
        iommu_iotlb_sync(dom)
        after = dom.stats()
        seen = [dom.dma_access(i * SZ_4K) for i in range(pages)]
        rows.append({"strategy": name, "kernel": dom.strategy.kernel,
                     "->iotlb_range_add": "yes" if dom.ops.iotlb_range_add else "none",
                     "TLBIs": after["inv_cmds"] - before["inv_cmds"],
                     "syncs": after["sync_cmds"] - before["sync_cmds"],
                     "device reads afterwards": ", ".join(sorted(set(seen)))})
    return rows

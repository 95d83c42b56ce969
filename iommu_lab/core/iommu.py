"""The IOMMU core API (drivers/iommu/iommu.c), per kernel era.

- ``iommu_pgsize``: largest supported size fitting the remaining size and the alignment of
  ``iova | paddr`` (L4.13); from v5.15 also a *count* bounded by the next larger size's
  alignment boundary (L5.15 .. L6.18), so one ``map_pages``/``unmap_pages`` call per run.
- ``iommu_map``: alignment checks, one driver call per chunk, unwind with the *syncing*
  ``iommu_unmap`` on failure, then ``iotlb_sync_map`` (v5.15+).
- ``iommu_unmap`` = gather init + ``__iommu_unmap`` + ``iommu_iotlb_sync`` (v5.4+); in the
  v4.14 core ``iotlb_range_add(iova, pgsize)`` per chunk then ``iotlb_sync``. The loop
  advances by what the driver returned and stops at the first hole.
- ``iommu_unmap_fast``: ``__iommu_unmap`` only; the caller owns the gather and the sync.
See kernel-api-history.md §2.1, §3.2, §4.1, §5.4.
"""

from __future__ import annotations

import operator

from ..errors import EEXIST, ERANGE, IommuError, einval
from ..io_pgtable.arm import check_prot
from ..units import fmt_size
from .domain import IommuDomain
from .gather import IommuIotlbGather
from .gather import iommu_iotlb_gather_add_page as _gather_add_page


def _int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise einval(f"{what} must be an integer, not {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise einval(f"{what} must be an integer, not {type(value).__name__} {value!r}") from None


def pgsize_single(bitmap: int, addr_merge: int, size: int) -> int:
    """Largest size in ``bitmap`` that fits ``size`` and the alignment of ``addr_merge`` (L4.13)."""
    pgsizes = bitmap & ((1 << size.bit_length()) - 1)
    if addr_merge:
        pgsizes &= (addr_merge & -addr_merge) * 2 - 1
    if not pgsizes:
        raise AssertionError(f"iommu_pgsize: no page size for {addr_merge:#x}/{size:#x}")  # BUG_ON
    return 1 << (pgsizes.bit_length() - 1)


def pgsize_counted(bitmap: int, iova: int, paddr: int, size: int) -> tuple[int, int]:
    """v5.15 ``iommu_pgsize`` with ``*count``: stop where the next larger size becomes usable."""
    pgsize = pgsize_single(bitmap, iova | paddr, size)
    idx = pgsize.bit_length() - 1
    larger = bitmap & ~((1 << (idx + 1)) - 1)
    count_size = size
    if larger:
        nxt = larger & -larger
        if not (iova ^ paddr) & (nxt - 1):
            offset = nxt - ((iova | paddr) & (nxt - 1))
            if offset + nxt <= size:
                count_size = offset
    return pgsize, count_size >> idx


def iommu_pgsize(domain: IommuDomain, iova: int, paddr: int, size: int) -> tuple[int, int]:
    """(pgsize, count) for the next chunk, with the exact rule of the domain's era."""
    if domain.era in ("v4.14", "v5.4", "v5.10"):
        return pgsize_single(domain.pgsize_bitmap, iova | paddr, size), 1
    return pgsize_counted(domain.pgsize_bitmap, iova, paddr, size)


def _check_range(domain: IommuDomain, iova: int, size: int, paddr: int | None = None) -> None:
    """EINVAL for zero or misaligned values, ERANGE past the IAS/OAS; names the bad value."""
    for name, val in (("iova", iova), ("size", size), ("paddr", paddr)):
        if val is not None and val < 0:  # as an unsigned long it would lie past the IAS
            raise IommuError(ERANGE, f"{name} {val:#x} is negative")
    if size == 0:
        raise einval(f"size 0 at iova {iova:#x}: nothing to do is not allowed")
    m = domain.min_pagesz
    for name, val in (("iova", iova), ("size", size), ("paddr", paddr)):
        if val is not None and val % m:
            raise einval(f"{name} {val:#x} is not aligned to the minimum page size "
                         f"{fmt_size(m)} (pgsize_bitmap {domain.pgsize_bitmap:#x})")
    cfg = domain.pgtable.cfg
    if iova + size > 1 << cfg.ias:
        raise IommuError(ERANGE, f"iova range [{iova:#x}, {iova + size:#x}) extends past the "
                         f"{cfg.ias}-bit IAS (limit {1 << cfg.ias:#x})")
    if paddr is not None and paddr + size > 1 << cfg.oas:
        raise IommuError(ERANGE, f"paddr range [{paddr:#x}, {paddr + size:#x}) extends past "
                         f"the {cfg.oas}-bit OAS")


def _check_overlap(domain: IommuDomain, iova: int, size: int) -> None:
    found = domain.pgtable.first_leaf(iova, iova + size)
    if found is not None:
        f_iova, f_size, f_paddr, _ = found
        raise IommuError(EEXIST, f"iova range [{iova:#x}, {iova + size:#x}) overlaps the "
                         f"existing {fmt_size(f_size)} mapping at {f_iova:#x} -> {f_paddr:#x}")


def iommu_map(domain: IommuDomain, iova: int, paddr: int, size: int, prot: int) -> int:
    """Map [iova, iova+size) -> paddr; returns 0 or raises IommuError (state unchanged)."""
    return _map(domain, iova, paddr, size, prot, sync_map=True)


def _map(domain: IommuDomain, iova: int, paddr: int, size: int, prot: int,
         sync_map: bool) -> int:
    """``_iommu_map`` (``sync_map``: then ``iotlb_sync_map``) or just ``__iommu_map`` (L5.15)."""
    iova, paddr, size = _int(iova, "iova"), _int(paddr, "paddr"), _int(size, "size")
    prot = _int(prot, "prot")
    check_prot(prot)
    _check_range(domain, iova, size, paddr)
    _check_overlap(domain, iova, size)
    t0 = domain.clock.now
    domain.clock.busy(domain.costs.call_ns)
    _iommu_map(domain, iova, paddr, size, prot)
    ops = domain.ops
    if sync_map and ops.iotlb_sync_map is not None:
        ops.iotlb_sync_map(domain, iova, size)
    st = domain.stats
    st["map_calls"] += 1
    st["bytes_mapped"] += size
    st["pages_mapped"] += size // domain.pgtable.granule
    domain.trace.add(t0, domain.clock.now, "CPU", "iommu_map", iova, size, f"-> {paddr:#x}")
    return 0


def _iommu_map(domain: IommuDomain, iova: int, paddr: int, size: int, prot: int) -> None:
    """``__iommu_map``: one driver call per chunk; unwind what was mapped on failure."""
    orig_iova, orig_size = iova, size
    try:
        while size:
            pgsize, count = iommu_pgsize(domain, iova, paddr, size)
            if domain.fail_map_after is not None:
                if domain.fail_map_after == 0:
                    domain.fail_map_after = None  # one-shot
                    raise IommuError(12, f"injected -ENOMEM mapping {fmt_size(pgsize)} at "
                                     f"{iova:#x}")
                domain.fail_map_after -= 1
            domain.stats["driver_callbacks"] += 1
            mapped = domain.ops.map(domain, iova, paddr, pgsize, count, prot)
            size -= mapped
            iova += mapped
            paddr += mapped
    except IommuError as err:
        # "Some pages may have been mapped, even if an error occurred, so we should
        # account for those so they can be unmapped" (L5.15 __iommu_map: size -= mapped)
        size -= err.__dict__.pop("mapped", 0)
        if orig_size - size:  # "unroll mapping in case something went wrong"
            iommu_unmap(domain, orig_iova, orig_size - size)
        raise


def iommu_map_sg(domain: IommuDomain, iova: int, sg: list[tuple[int, int]], prot: int) -> int:
    """``iommu_map_sg``: map (paddr, length) entries back to back; returns bytes mapped.

    Physically contiguous entries are coalesced into one ``iommu_map`` (L5.3+). On error the
    whole sg range mapped so far is unmapped and the error re-raised (L5.15 ``ssize_t``).
    ``iotlb_sync_map`` follows each run up to v5.10 (``iommu_map`` per run, L5.3/L5.4);
    from v5.15 ``__iommu_map_sg`` maps every run without it, then syncs the whole range once.
    """
    iova = _int(iova, "iova")
    runs: list[list[int]] = []
    for i, (p, n) in enumerate(sg):
        p, n = _int(p, f"sg[{i}].paddr"), _int(n, f"sg[{i}].length")
        if n == 0 or n % domain.min_pagesz or p % domain.min_pagesz:
            raise einval(f"sg[{i}] ({p:#x}, {n:#x}) is not aligned to "
                         f"{fmt_size(domain.min_pagesz)} or is empty")
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1][1] += n
        else:
            runs.append([p, n])
    mapped = 0
    per_run_sync = domain.era != "v5.15"
    try:
        for p, n in runs:
            _map(domain, iova + mapped, p, n, prot, sync_map=per_run_sync)
            mapped += n
    except IommuError:
        if mapped:
            iommu_unmap(domain, iova, mapped)
        raise
    if not per_run_sync and mapped and domain.ops.iotlb_sync_map is not None:
        domain.ops.iotlb_sync_map(domain, iova, mapped)
    return mapped


def __iommu_unmap(domain: IommuDomain, iova: int, size: int,
                  gather: IommuIotlbGather, sync: bool) -> int:
    """The unmap loop; ``sync`` selects the v4.14 core's per-chunk ``iotlb_range_add``."""
    ops = domain.ops
    unmapped = 0
    while unmapped < size:
        pgsize, count = iommu_pgsize(domain, iova, iova, size - unmapped)
        domain.stats["driver_callbacks"] += 1
        got = ops.unmap(domain, iova, pgsize, count, gather)
        if not got:
            break
        if sync and domain.era == "v4.14" and ops.iotlb_range_add is not None:
            ops.iotlb_range_add(domain, iova, pgsize)
        iova += got
        unmapped += got
    return unmapped


def _unmap_common(domain: IommuDomain, iova: int, size: int, name: str) -> tuple[int, int]:
    iova, size = _int(iova, "iova"), _int(size, "size")
    _check_range(domain, iova, size)
    domain.clock.busy(domain.costs.call_ns)
    return iova, size


def _account_unmap(domain: IommuDomain, t0: int, name: str, iova: int, size: int,
                   unmapped: int) -> None:
    st = domain.stats
    st["unmap_calls"] += 1
    st["bytes_unmapped"] += unmapped
    st["pages_unmapped"] += unmapped // domain.pgtable.granule
    domain.trace.add(t0, domain.clock.now, "CPU", name, iova, size, f"{unmapped:#x} unmapped")


def iommu_unmap(domain: IommuDomain, iova: int, size: int) -> int:
    """Unmap and invalidate; returns bytes unmapped (0 for a hole; may exceed ``size``).

    On a domain made with ``api="rfc-2017"`` this is Joerg Roedel's 2017 ``iommu_unmap``:
    it never syncs (the caller uses ``iommu_tlb_range_add`` + ``iommu_tlb_sync``).
    """
    t0 = domain.clock.now
    iova, size = _unmap_common(domain, iova, size, "iommu_unmap")
    if domain.api == "rfc-2017":
        unmapped = __iommu_unmap(domain, iova, size, domain.rfc_gather, sync=False)
    else:
        gather = IommuIotlbGather()
        unmapped = __iommu_unmap(domain, iova, size, gather, sync=True)
        _iotlb_sync(domain, gather)
    _account_unmap(domain, t0, "iommu_unmap", iova, size, unmapped)
    return unmapped


def iommu_unmap_fast(domain: IommuDomain, iova: int, size: int,
                     gather: IommuIotlbGather | None = None) -> int:
    """Unmap without syncing: invalidation is gathered (or queued early by the driver)."""
    t0 = domain.clock.now
    if gather is None:
        gather = domain.rfc_gather
    elif not isinstance(gather, IommuIotlbGather):
        raise einval(f"gather must be an IommuIotlbGather, not {type(gather).__name__}")
    iova, size = _unmap_common(domain, iova, size, "iommu_unmap_fast")
    unmapped = __iommu_unmap(domain, iova, size, gather, sync=False)
    _account_unmap(domain, t0, "iommu_unmap_fast", iova, size, unmapped)
    return unmapped


def _iotlb_sync(domain: IommuDomain, gather: IommuIotlbGather) -> None:
    """``iommu_iotlb_sync`` without API accounting: driver sync, then re-init the gather."""
    if domain.ops.iotlb_sync is not None:
        domain.ops.iotlb_sync(domain, gather)
    queued = gather.queued
    gather.init()
    gather.queued = queued


def iommu_iotlb_sync(domain: IommuDomain, gather: IommuIotlbGather | None = None) -> None:
    """``iommu_iotlb_sync`` (``iommu_tlb_sync`` before v5.10): complete the gathered flush."""
    t0 = domain.clock.now
    gather = domain.rfc_gather if gather is None else gather
    if not isinstance(gather, IommuIotlbGather):
        raise einval(f"gather must be an IommuIotlbGather, not {type(gather).__name__}")
    domain.clock.busy(domain.costs.call_ns)
    domain.stats["sync_calls"] += 1
    _iotlb_sync(domain, gather)
    domain.trace.add(t0, domain.clock.now, "CPU", "iommu_iotlb_sync")


def iommu_flush_iotlb_all(domain: IommuDomain) -> None:
    """``iommu_flush_iotlb_all`` (``iommu_flush_tlb_all`` before v5.10): drop the domain's TLB."""
    t0 = domain.clock.now
    domain.clock.busy(domain.costs.call_ns)
    domain.stats["flush_all_calls"] += 1
    if domain.ops.flush_iotlb_all is not None:
        domain.ops.flush_iotlb_all(domain)
    domain.rfc_gather.init()  # anything pending is covered by the flush-all
    domain.trace.add(t0, domain.clock.now, "CPU", "iommu_flush_iotlb_all")


def iommu_iova_to_phys(domain: IommuDomain, iova: int) -> int:
    """Physical address ``iova`` maps to, 0 when nothing is mapped."""
    return domain.pgtable.iova_to_phys(_int(iova, "iova"))


def iommu_iotlb_gather_add_page(domain: IommuDomain, gather: IommuIotlbGather, iova: int,
                                size: int) -> None:
    """Add a page to ``gather`` with the domain era's merge rule (may sync early)."""
    _gather_add_page(gather, iova, size, domain.era, lambda g: _iotlb_sync(domain, g))


# ---- Joerg Roedel's Aug-2017 proposal ("[PATCH 02/13] iommu: Introduce Interface for
# IOMMU TLB Flushing"): names as proposed; only the first three ever merged (v4.14). ----

def iommu_tlb_range_add(domain: IommuDomain, iova: int, size: int) -> None:
    """Tell the driver a range needs flushing (a no-op when the driver has no callback)."""
    iova, size = _int(iova, "iova"), _int(size, "size")
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

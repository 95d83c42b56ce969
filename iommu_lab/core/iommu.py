"""The IOMMU core API (drivers/iommu/iommu.c), with the rules of the domain's era.

- ``iommu_pgsize``: largest supported size fitting the remaining size and the alignment of
  ``iova | paddr`` (L4.13); from v5.15 also a *count* bounded by the next larger size's
  alignment boundary (L5.15 .. L6.18), so one ``map_pages``/``unmap_pages`` call per run.
- ``iommu_map``: alignment checks, one driver call per chunk, unwind with the *syncing*
  ``iommu_unmap`` on failure, then ``iotlb_sync_map`` (v5.15+).
- ``iommu_unmap`` = gather init + ``__iommu_unmap`` + ``iommu_iotlb_sync`` (v5.4+); in the
  v4.14 core ``iotlb_range_add(iova, pgsize)`` per chunk then ``iotlb_sync``. The loop
  advances by what the driver returned and stops at the first hole.
- ``iommu_unmap_fast``: ``__iommu_unmap`` only; the caller owns the gather and the sync.

Runs of identical driver calls (a 16 GiB range of 4 KiB pages is 4 Mi ``->map`` calls before
v5.15) go through :mod:`iommu_lab.compact`: counters, clock and PTEs are exactly those of
calling the driver each time. The 2017 proposal lives in :mod:`iommu_lab.core.rfc2017`.
See kernel-api-history.md §2.1, §3.2, §4.1, §5.4.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np

from ..compact import Run, run_periodic
from ..errors import EEXIST, ERANGE, IommuError, einval
from ..io_pgtable.arm import check_prot
from ..units import fmt_size
from .domain import ApiVariant, IommuDomain
from .era import Chunk, pgsize_chunk
from .gather import IommuIotlbGather

COMPACT_MIN = 64   # shorter runs of calls are cheaper to step than to analyse


def check_int(value: object, what: str) -> int:
    """``value`` as an int (EINVAL naming ``what`` for bools, floats, strings...)."""
    if type(value) is int:
        return value
    if isinstance(value, bool):
        raise einval(f"{what} must be an integer, not {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise einval(f"{what} must be an integer, not {type(value).__name__} {value!r}") from None


def iommu_pgsize(domain: IommuDomain, iova: int, paddr: int, size: int) -> tuple[int, int]:
    """(pgsize, count) for the next chunk, with the exact rule of the domain's era."""
    return domain.core.pgsize(domain.pgsize_bitmap, iova, paddr, size)


def check_range(domain: IommuDomain, iova: int, size: int, paddr: int | None = None) -> None:
    """EINVAL for zero or misaligned values, ERANGE past the IAS/OAS; names the bad value."""
    cfg = domain.pgtable.cfg
    p = 0 if paddr is None else paddr
    bitmap = domain.pgsize_bitmap
    if (size > 0 and iova >= 0 and p >= 0 and not (iova | size | p) & ((bitmap & -bitmap) - 1)
            and iova + size <= 1 << cfg.ias and p + size <= 1 << cfg.oas):
        return  # the usual case: all good (the checks below name what is wrong)
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


# ---- map ---------------------------------------------------------------------------------

def iommu_map(domain: IommuDomain, iova: int, paddr: int, size: int, prot: int) -> int:
    """Map [iova, iova+size) -> paddr; returns 0 or raises IommuError (state unchanged)."""
    return map_range(domain, iova, paddr, size, prot, sync_map=True)


def map_range(domain: IommuDomain, iova: int, paddr: int, size: int, prot: int,
              sync_map: bool) -> int:
    """``_iommu_map`` (``sync_map``: then ``iotlb_sync_map``) or just ``__iommu_map`` (L5.15)."""
    if type(iova) is not int or type(paddr) is not int or type(size) is not int:
        iova, paddr = check_int(iova, "iova"), check_int(paddr, "paddr")
        size = check_int(size, "size")
    if type(prot) is not int:
        prot = check_int(prot, "prot")
    check_prot(prot)
    check_range(domain, iova, size, paddr)
    _check_overlap(domain, iova, size)
    t0 = domain.clock.now
    domain.clock.busy(domain.costs.call_ns)
    __iommu_map(domain, iova, paddr, size, prot)
    ops = domain.ops
    if sync_map and ops.iotlb_sync_map is not None:
        ops.iotlb_sync_map(domain, iova, size)
    st = domain.stats
    st["map_calls"] += 1
    st["bytes_mapped"] += size
    st["pages_mapped"] += size // domain.pgtable.granule
    if domain.trace.wants():
        domain.trace.add(t0, domain.clock.now, domain.cpu_lane(), "iommu_map", iova, size,
                         f"-> {paddr:#x}")
    return 0


def __iommu_map(domain: IommuDomain, iova: int, paddr: int, size: int, prot: int) -> None:
    """``__iommu_map``: one driver call per chunk; unwind what was mapped on failure."""
    mapped = 0
    try:
        for chunk in domain.core.chunks(domain.pgsize_bitmap, iova, paddr, size):
            mapped += _map_calls(domain, _per_call(domain, chunk), prot)
    except IommuError as err:
        # "Some pages may have been mapped, even if an error occurred, so we should
        # account for those so they can be unmapped" (L5.15 __iommu_map: size -= mapped)
        mapped += err.__dict__.pop("mapped", 0)
        if mapped:  # "unroll mapping in case something went wrong"
            iommu_unmap(domain, iova, mapped)
        raise


def _per_call(domain: IommuDomain, c: Chunk) -> Chunk:
    """A legacy ``->map``/``->unmap`` driver takes one page per call (L5.15 iommu.c)."""
    if domain.ops.one_page_per_call and c.pgcount > 1:
        return Chunk(c.iova, c.paddr, c.pgsize, 1, c.calls * c.pgcount)
    return c


def _map_call(domain: IommuDomain, iova: int, paddr: int, pgsize: int, count: int,
              prot: int) -> None:
    """One ``->map_pages`` (``->map`` before v5.15) call, with one-shot fault injection."""
    if domain.fail_map_after is not None:
        if domain.fail_map_after == 0:
            domain.fail_map_after = None
            raise IommuError(12, f"injected -ENOMEM mapping {fmt_size(pgsize)} at {iova:#x}")
        domain.fail_map_after -= 1
    domain.stats["driver_callbacks"] += 1
    domain.ops.map(domain, iova, paddr, pgsize, count, prot)


def _map_calls(domain: IommuDomain, c: Chunk, prot: int) -> int:
    """``c.calls`` identical driver calls, compactly when they repeat; bytes mapped."""
    if c.calls >= COMPACT_MIN:
        return _map_calls_compact(domain, c, prot)
    step = c.pgsize * c.pgcount
    for i in range(c.calls):  # a few calls: stepped (cheaper than looking for a period)
        try:
            _map_call(domain, c.iova + i * step, c.paddr + i * step, c.pgsize, c.pgcount, prot)
        except IommuError as err:
            err.mapped = i * step + err.__dict__.pop("mapped", 0)  # type: ignore[attr-defined]
            raise
    return c.size


def _map_calls_compact(domain: IommuDomain, c: Chunk, prot: int) -> int:
    """Many identical map calls: stepped until the state repeats, then extrapolated."""
    step = c.pgsize * c.pgcount
    done = 0

    def one(i: int) -> None:
        nonlocal done
        _map_call(domain, c.iova + i * step, c.paddr + i * step, c.pgsize, c.pgcount, prot)
        done = i + 1

    def bulk(i: int, n: int) -> None:
        nonlocal done
        iovas, paddrs, leaf = run_leaves(domain, c.iova + i * step, c.paddr + i * step, step, n)
        domain.pgtable.map_bulk(iovas, paddrs, leaf, prot)
        done = i + n

    try:
        _compact_calls(domain, c, one, bulk, [], "map")
    except IommuError as err:
        err.mapped = done * step + err.__dict__.pop("mapped", 0)  # type: ignore[attr-defined]
        raise
    return c.size


def _compact_calls(domain: IommuDomain, c: Chunk, one: Callable[[int], None],
                   bulk: Callable[[int, int], None], extra: list, what: str) -> None:
    """Run ``c.calls`` calls through the compact engine (:mod:`iommu_lab.compact`)."""
    t0 = domain.clock.now
    step = c.pgsize * c.pgcount
    run = Run(c.calls, c.iova, step, one, bulk, domain.quiet)
    skipped = run_periodic(run, domain.clock, domain.periodic_parts() + extra)
    if skipped:
        domain.trace.add(t0, domain.clock.now, domain.cpu_lane(),
                         f"->{what} x{c.calls} (compact)", c.iova, c.size,
                         f"{skipped} calls extrapolated")


def run_leaves(domain: IommuDomain, iova: int, paddr: int, size: int, n: int,
               stride: int | None = None,
               paddr_stride: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The page-table leaves of ``n`` items of ``size`` bytes: (iovas, paddrs, leaf size).

    Item ``i`` is at ``iova + i * stride`` -> ``paddr + i * paddr_stride`` (both default to
    ``size``: back to back). An item (a naturally aligned power of two) is stored as the
    table's largest leaf size that fits it (a 16 KiB VT-d chunk is four 4 KiB PTEs).
    """
    stride = size if stride is None else stride
    paddr_stride = size if paddr_stride is None else paddr_stride
    leaf = max(s for s in domain.pgtable.leaf_sizes if s <= size)
    idx = np.arange(n, dtype=np.uint64)
    off = np.arange(size // leaf, dtype=np.uint64) * np.uint64(leaf)
    iovas = ((np.uint64(iova) + idx * np.uint64(stride))[:, None] + off).ravel()
    paddrs = ((np.uint64(paddr) + idx * np.uint64(paddr_stride))[:, None] + off).ravel()
    return iovas, paddrs, leaf


def iommu_map_sg(domain: IommuDomain, iova: int, sg: list[tuple[int, int]], prot: int) -> int:
    """``iommu_map_sg``: map (paddr, length) entries back to back; returns bytes mapped.

    Physically contiguous entries are coalesced into one ``iommu_map`` (L5.3+). On error the
    whole sg range mapped so far is unmapped and the error re-raised (L5.15 ``ssize_t``).
    ``iotlb_sync_map`` follows each run up to v5.10 (``iommu_map`` per run, L5.3/L5.4);
    from v5.15 ``__iommu_map_sg`` maps every run without it, then syncs the whole range once.
    """
    iova = check_int(iova, "iova")
    runs: list[list[int]] = []
    for i, (p, n) in enumerate(sg):
        p, n = check_int(p, f"sg[{i}].paddr"), check_int(n, f"sg[{i}].length")
        if n == 0 or n % domain.min_pagesz or p % domain.min_pagesz:
            raise einval(f"sg[{i}] ({p:#x}, {n:#x}) is not aligned to "
                         f"{fmt_size(domain.min_pagesz)} or is empty")
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1][1] += n
        else:
            runs.append([p, n])
    mapped = 0
    once = domain.core.map_sg_sync_once
    try:
        for p, n in runs:
            map_range(domain, iova + mapped, p, n, prot, sync_map=not once)
            mapped += n
    except IommuError:
        if mapped:
            iommu_unmap(domain, iova, mapped)
        raise
    if once and mapped and domain.ops.iotlb_sync_map is not None:
        domain.ops.iotlb_sync_map(domain, iova, mapped)
    return mapped


# ---- unmap -------------------------------------------------------------------------------

def __iommu_unmap(domain: IommuDomain, iova: int, size: int, gather: IommuIotlbGather,
                  range_add: bool = False) -> int:
    """The unmap loop; ``range_add``: the v4.14 core's per-chunk ``iotlb_range_add``."""
    unmapped = 0
    counted, bitmap = domain.core.counted_pgsize, domain.pgsize_bitmap
    while unmapped < size:
        chunk = pgsize_chunk(counted, bitmap, iova, iova, size - unmapped)  # core.first_chunk
        if chunk.calls == 1 and chunk.pgcount == 1:  # one call of one page: no run to group
            got = _unmap_call(domain, iova, chunk.pgsize, 1, gather, range_add)
            hole = not got
        else:
            got, hole = _unmap_calls(domain, _per_call(domain, chunk), gather, range_add)
        iova += got
        unmapped += got
        if hole:  # a driver call unmapped nothing: stop at the first hole
            break
    return unmapped


def _unmap_call(domain: IommuDomain, iova: int, pgsize: int, pgcount: int,
                gather: IommuIotlbGather, range_add: bool) -> int:
    """One ``->unmap_pages`` (``->unmap`` before v5.15) call, then (v4.14) the core's
    ``iotlb_range_add`` of what it unmapped; returns the bytes the driver unmapped."""
    ops = domain.ops
    domain.stats["driver_callbacks"] += 1
    got = ops.unmap(domain, iova, pgsize, pgcount, gather)
    if got and range_add and ops.iotlb_range_add is not None:
        ops.iotlb_range_add(domain, iova, pgsize)
    return got


def _unmap_calls(domain: IommuDomain, c: Chunk, gather: IommuIotlbGather,
                 range_add: bool) -> tuple[int, bool]:
    """Unmap calls of one chunk while each returns exactly its size (compactly when the
    table holds exactly those leaves). Returns (bytes, the last call hit a hole)."""
    if c.calls >= COMPACT_MIN and _whole_leaves(domain, c):
        return _unmap_calls_compact(domain, c, gather, range_add)
    # a few calls, stepped; or a long run the table does not hold uniformly: one call, then
    # the core looks again from where it stopped
    step = c.pgsize * c.pgcount
    total = 0
    for i in range(c.calls if c.calls < COMPACT_MIN else 1):
        got = _unmap_call(domain, c.iova + i * step, c.pgsize, c.pgcount, gather, range_add)
        total += got
        if got != step:  # a hole (0), or more or less than asked: recompute from here
            return total, not got
    return total, False


def _unmap_calls_compact(domain: IommuDomain, c: Chunk, gather: IommuIotlbGather,
                         range_add: bool) -> tuple[int, bool]:
    """A long run of unmap calls over exactly mapped leaves: stepped until the state
    repeats, then extrapolated. Returns (bytes, the last call hit a hole)."""
    step = c.pgsize * c.pgcount
    got_total = 0

    def one(i: int) -> None:
        nonlocal got_total
        got = _unmap_call(domain, c.iova + i * step, c.pgsize, c.pgcount, gather, range_add)
        got_total += got
        if got != step:  # a hole (0), or more or less than asked: recompute from here
            raise _Stop(not got)

    def bulk(i: int, n: int) -> None:
        nonlocal got_total
        iovas, _, leaf = run_leaves(domain, c.iova + i * step, 0, step, n)
        domain.pgtable.unmap_bulk(iovas, leaf)
        got_total += n * step

    extra = [] if gather is domain.rfc_gather else [gather]
    try:
        _compact_calls(domain, c, one, bulk, extra, "unmap")
    except _Stop as stop:
        return got_total, stop.hole
    return got_total, False


class _Stop(Exception):
    """A driver call returned other than its size: the core recomputes from there."""

    def __init__(self, hole: bool) -> None:
        super().__init__()
        self.hole = hole


def _whole_leaves(domain: IommuDomain, c: Chunk) -> bool:
    """Is every call of the chunk exactly a run of mapped leaves of one size?"""
    step = c.pgsize * c.pgcount
    iovas, _, leaf = run_leaves(domain, c.iova, 0, step, c.calls)
    return domain.pgtable.can_unmap_bulk(iovas, leaf)


def _unmap_common(domain: IommuDomain, iova: int, size: int) -> tuple[int, int]:
    if type(iova) is not int or type(size) is not int:
        iova, size = check_int(iova, "iova"), check_int(size, "size")
    check_range(domain, iova, size)
    domain.clock.busy(domain.costs.call_ns)
    return iova, size


def account_unmap(domain: IommuDomain, t0: int, name: str, iova: int, size: int,
                  unmapped: int) -> None:
    """Requested-work counters and the trace record of one unmap call."""
    st = domain.stats
    st["unmap_calls"] += 1
    st["bytes_unmapped"] += unmapped
    st["pages_unmapped"] += unmapped // domain.pgtable.granule
    if domain.trace.wants():
        domain.trace.add(t0, domain.clock.now, domain.cpu_lane(), name, iova, size,
                         f"{unmapped:#x} unmapped")


def iommu_unmap(domain: IommuDomain, iova: int, size: int) -> int:
    """Unmap and invalidate; returns bytes unmapped (0 for a hole; may exceed ``size``).

    What "invalidate" means is the domain's API variant: the kernel's syncs here; on a
    domain made with ``api="rfc-2017"`` it is Joerg Roedel's 2017 ``iommu_unmap``, which
    never syncs (the caller uses ``iommu_tlb_range_add`` + ``iommu_tlb_sync``).
    """
    t0 = domain.clock.now
    iova, size = _unmap_common(domain, iova, size)
    unmapped = domain.api.unmap(domain, iova, size)
    account_unmap(domain, t0, "iommu_unmap", iova, size, unmapped)
    return unmapped


def kernel_unmap(domain: IommuDomain, iova: int, size: int) -> int:
    """The merged ``iommu_unmap``: ``iommu_iotlb_gather_init``; ``__iommu_unmap``; sync."""
    gather = IommuIotlbGather()
    unmapped = __iommu_unmap(domain, iova, size, gather, domain.core.range_add_per_chunk)
    iotlb_sync_gather(domain, gather)
    return unmapped


def iommu_unmap_fast(domain: IommuDomain, iova: int, size: int,
                     gather: IommuIotlbGather | None = None) -> int:
    """Unmap without syncing: invalidation is gathered (or queued early by the driver)."""
    t0 = domain.clock.now
    if gather is None:
        gather = domain.rfc_gather
    elif not isinstance(gather, IommuIotlbGather):
        raise einval(f"gather must be an IommuIotlbGather, not {type(gather).__name__}")
    iova, size = _unmap_common(domain, iova, size)
    unmapped = __iommu_unmap(domain, iova, size, gather)
    account_unmap(domain, t0, "iommu_unmap_fast", iova, size, unmapped)
    return unmapped


def unmap_pending(domain: IommuDomain, iova: int, size: int) -> int:
    """``__iommu_unmap`` into the domain's pending gather, without syncing (2017 API)."""
    return __iommu_unmap(domain, iova, size, domain.rfc_gather)


# ---- sync and flush ------------------------------------------------------------------------

def iotlb_sync_gather(domain: IommuDomain, gather: IommuIotlbGather) -> None:
    """The driver's ``->iotlb_sync`` then ``iommu_iotlb_gather_init`` (no API accounting:
    also what ``iommu_iotlb_gather_add_page`` calls for an early sync)."""
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
    iotlb_sync_gather(domain, gather)
    domain.trace.add(t0, domain.clock.now, domain.cpu_lane(), "iommu_iotlb_sync")


def iommu_flush_iotlb_all(domain: IommuDomain) -> None:
    """``iommu_flush_iotlb_all`` (``iommu_flush_tlb_all`` before v5.10): drop the domain's TLB."""
    t0 = domain.clock.now
    domain.clock.busy(domain.costs.call_ns)
    domain.stats["flush_all_calls"] += 1
    if domain.ops.flush_iotlb_all is not None:
        domain.ops.flush_iotlb_all(domain)
    domain.rfc_gather.init()  # anything pending is covered by the flush-all
    domain.trace.add(t0, domain.clock.now, domain.cpu_lane(), "iommu_flush_iotlb_all")


def iommu_iova_to_phys(domain: IommuDomain, iova: int) -> int:
    """Physical address ``iova`` maps to, 0 when nothing is mapped."""
    return domain.pgtable.iova_to_phys(check_int(iova, "iova"))


def iommu_iotlb_gather_add_page(domain: IommuDomain, gather: IommuIotlbGather, iova: int,
                                size: int) -> bool:
    """Add a page to ``gather`` with the domain era's merge rule (may sync early)."""
    rules = domain.core.gather or domain.core.gather_rules()  # (EINVAL before v5.4)
    return rules.add_page(gather, iova, size, lambda g: iotlb_sync_gather(domain, g))


KERNEL_API = ApiVariant(
    "kernel", merged=True,
    summary="the merged API of the strategy's kernel: iommu_unmap syncs, iommu_unmap_fast "
            "gathers for the caller's iommu_iotlb_sync",
    source="drivers/iommu/iommu.c, include/linux/iommu.h (v4.14 .. v6.18)",
    ops=lambda driver: driver.domain_ops(), unmap=kernel_unmap,
    caller_gather=True,
    labels={"sync": "iommu_iotlb_sync", "flush_all": "iommu_flush_iotlb_all"})

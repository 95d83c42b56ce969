"""Kernel versions, and the IOMMU core's rules at each era (one table row per era).

A strategy names the kernel version it is pinned to; ``iommu_domain_alloc`` picks the last
row of :data:`CORE_ERAS` at or before it, once, and the core calls that row's functions.
Nothing else compares version strings. Adding an era is one new row (and its functions).

=======  ======================  ==========  ======================================
since    ``iommu_pgsize``         gather      other rules
=======  ======================  ==========  ======================================
v4.14    one page per call        none        ``iotlb_range_add(iova, pgsize)`` after
                                              every unmapped chunk (L4.14 iommu.c)
v5.4     one page per call        v5.4        ``struct iommu_iotlb_gather`` (L5.4)
v5.10    one page per call        v5.10       inclusive ``end`` (L5.10)
v5.15    a count of pages         v5.15       ``map_pages``; one ``iotlb_sync_map`` per
                                              ``iommu_map_sg`` (L5.15 iommu.c)
=======  ======================  ==========  ======================================
See kernel-api-history.md §3.2, §4.1, §4.7, §5.4.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import total_ordering
from typing import NamedTuple

from ..errors import einval
from .gather import GATHER_V5_4, GATHER_V5_10, GATHER_V5_15, GatherRules

_VERSION_RE = re.compile(r"^v?(\d{1,2})\.(\d{1,2})$")


@total_ordering
@dataclass(frozen=True)
class KernelVersion:
    """An upstream release ``vMAJOR.MINOR``, ordered (``v4.15 < v5.4 < v5.10``)."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str | KernelVersion) -> KernelVersion:
        """``"v5.10"`` or ``"5.10"`` -> ``KernelVersion(5, 10)``; EINVAL otherwise."""
        if isinstance(text, KernelVersion):
            return text
        m = _VERSION_RE.match(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise einval(f"kernel version {text!r} is not like 'v5.10'")
        return cls(int(m.group(1)), int(m.group(2)))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, KernelVersion):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}"


# ---- iommu_pgsize: the one page-size rule, in its two forms ---------------------------

def pgsize_single(bitmap: int, addr_merge: int, size: int) -> int:
    """Largest size in ``bitmap`` that fits ``size`` and the alignment of ``addr_merge`` (L4.13)."""
    pgsizes = bitmap & ((1 << size.bit_length()) - 1)
    if addr_merge:
        pgsizes &= (addr_merge & -addr_merge) * 2 - 1
    if not pgsizes:
        raise AssertionError(f"iommu_pgsize: no page size for {addr_merge:#x}/{size:#x}")  # BUG_ON
    return 1 << (pgsizes.bit_length() - 1)


def pgsize_counted(bitmap: int, iova: int, paddr: int, size: int) -> tuple[int, int]:
    """v5.15 ``iommu_pgsize`` with ``*count``: stop where the next larger size becomes usable.

    The count is also how many consecutive calls the single-page rule would make with
    the same page size (its choice only changes where a larger page becomes usable).
    """
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


class Chunk(NamedTuple):
    """``calls`` consecutive driver calls of ``pgcount`` pages of ``pgsize`` each."""

    iova: int
    paddr: int
    pgsize: int
    pgcount: int
    calls: int

    @property
    def size(self) -> int:
        """Bytes covered by all the calls."""
        return self.pgsize * self.pgcount * self.calls


def pgsize_chunks(counted: bool, bitmap: int, iova: int, paddr: int,
                  size: int) -> Iterator[Chunk]:
    """How the core splits [iova, iova+size) into driver calls, runs of equal calls grouped.

    The one chunk generator (core, drivers, views, stepper, exercises). With the counted
    rule (v5.15) each chunk is one call of ``count`` pages; with the single rule each
    chunk is ``count`` calls of one page, ``count`` computed by the same arithmetic.
    """
    while size:
        chunk = pgsize_chunk(counted, bitmap, iova, paddr, size)
        yield chunk
        step = chunk.size
        iova, paddr, size = iova + step, paddr + step, size - step


def pgsize_chunk(counted: bool, bitmap: int, iova: int, paddr: int, size: int) -> Chunk:
    """The first chunk :func:`pgsize_chunks` yields (the unmap loop recomputes from
    wherever the driver stopped, so it asks for one chunk at a time)."""
    low = bitmap & -bitmap
    if size == low and not (iova | paddr) & (low - 1):
        return Chunk(iova, paddr, low, 1, 1)  # one aligned smallest page (either rule)
    pgsize, count = pgsize_counted(bitmap, iova, paddr, size)
    return Chunk(iova, paddr, pgsize, count if counted else 1, 1 if counted else count)


# ---- the core's rules per era ----------------------------------------------------------

@dataclass(frozen=True)
class CoreRules:
    """What ``drivers/iommu/iommu.c`` and ``include/linux/iommu.h`` do from ``since`` on."""

    since: KernelVersion
    counted_pgsize: bool
    gather: GatherRules | None
    range_add_per_chunk: bool
    map_sg_sync_once: bool
    source: str

    def pgsize(self, bitmap: int, iova: int, paddr: int, size: int) -> tuple[int, int]:
        """``iommu_pgsize``: (pgsize, count); count is always 1 before v5.15."""
        if self.counted_pgsize:
            return pgsize_counted(bitmap, iova, paddr, size)
        return pgsize_single(bitmap, iova | paddr, size), 1

    def chunks(self, bitmap: int, iova: int, paddr: int, size: int) -> Iterator[Chunk]:
        """The driver calls that map (or unmap) the range: :func:`pgsize_chunks`."""
        return pgsize_chunks(self.counted_pgsize, bitmap, iova, paddr, size)

    def first_chunk(self, bitmap: int, iova: int, paddr: int, size: int) -> Chunk:
        """The first of :meth:`chunks` (:func:`pgsize_chunk`)."""
        return pgsize_chunk(self.counted_pgsize, bitmap, iova, paddr, size)

    def gather_rules(self) -> GatherRules:
        """The gather merge rule; EINVAL before v5.4 (no ``struct iommu_iotlb_gather``)."""
        if self.gather is None:
            raise einval(f"the {self.since} core has no struct iommu_iotlb_gather (v5.4+)")
        return self.gather


V = KernelVersion.parse
CORE_ERAS: tuple[CoreRules, ...] = (
    CoreRules(V("v4.14"), False, None, range_add_per_chunk=True, map_sg_sync_once=False,
              source="drivers/iommu/iommu.c @v4.14.5 (iotlb_range_add per chunk)"),
    CoreRules(V("v5.4"), False, GATHER_V5_4, range_add_per_chunk=False,
              map_sg_sync_once=False, source="drivers/iommu/iommu.c @v5.4.59"),
    CoreRules(V("v5.10"), False, GATHER_V5_10, range_add_per_chunk=False,
              map_sg_sync_once=False, source="drivers/iommu/iommu.c @v5.10.89"),
    CoreRules(V("v5.15"), True, GATHER_V5_15, range_add_per_chunk=False,
              map_sg_sync_once=True, source="drivers/iommu/iommu.c @v5.15"),
)
OLDEST, NEWEST = KernelVersion(4, 14), KernelVersion(6, 18)


def core_rules(version: str | KernelVersion,
               eras: tuple[CoreRules, ...] = CORE_ERAS) -> CoreRules:
    """The core's rules at ``version``: the last era row at or before it (EINVAL outside)."""
    v = KernelVersion.parse(version)
    if not OLDEST <= v <= NEWEST:
        raise einval(f"kernel {v} is outside the modelled range {OLDEST} .. {NEWEST} "
                     "(no flush API before v4.14)")
    return [row for row in eras if row.since <= v][-1]

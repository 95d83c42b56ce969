"""``struct iommu_iotlb_gather`` and its helpers, with each era's exact merge rule.

- v5.4 (L5.4 include/linux/iommu.h): exclusive ``end``; sync early if the page size
  differs or the new page is disjoint (``end < g->start || start > g->end``).
- v5.10: ``end`` inclusive (``end = start + size - 1``), test ``end + 1 < g->start ||
  start > g->end + 1``.
- v5.15+ (L5.15 .. L6.18): ``iommu_iotlb_gather_is_disjoint`` / ``add_range`` helpers;
  ``freelist`` and ``queued`` fields.
See kernel-api-history.md §4.1, §4.2, §4.7.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

ULONG_MAX = (1 << 64) - 1


@dataclass
class IommuIotlbGather:
    """Pending invalidation, owned by the caller: ``iommu_iotlb_gather_init()`` state."""

    start: int = ULONG_MAX
    end: int = 0
    pgsize: int = 0
    freelist: list[tuple[int, int]] = field(default_factory=list)
    queued: bool = False

    def init(self) -> None:
        """``iommu_iotlb_gather_init``: back to the empty state (keeps ``queued``)."""
        self.start, self.end, self.pgsize = ULONG_MAX, 0, 0
        self.freelist = []

    @property
    def empty(self) -> bool:
        """Nothing gathered yet."""
        return self.pgsize == 0


def iommu_iotlb_gather_init(gather: IommuIotlbGather) -> None:
    """``*gather = (struct iommu_iotlb_gather){ .start = ULONG_MAX }``."""
    gather.init()
    gather.queued = False


def gather_is_disjoint(g: IommuIotlbGather, iova: int, size: int, era: str) -> bool:
    """Would adding [iova, iova+size) leave a gap? (adjacent ranges join in every era)."""
    if era == "v5.4":
        end = iova + size
        return end < g.start or iova > g.end
    end = iova + size - 1
    if era == "v5.10":
        return end + 1 < g.start or iova > g.end + 1
    return g.end != 0 and (end + 1 < g.start or iova > g.end + 1)


def iommu_iotlb_gather_add_range(g: IommuIotlbGather, iova: int, size: int, era: str) -> None:
    """Widen the range without syncing (v5.15 ``iommu_iotlb_gather_add_range``)."""
    end = iova + size if era == "v5.4" else iova + size - 1
    g.start = min(g.start, iova)
    g.end = max(g.end, end)


def iommu_iotlb_gather_add_page(g: IommuIotlbGather, iova: int, size: int, era: str,
                                sync: Callable[[IommuIotlbGather], None]) -> bool:
    """Add one page; sync first if it is disjoint or of another size. True if it synced."""
    synced = False
    if era in ("v5.4", "v5.10"):
        if g.pgsize != size or gather_is_disjoint(g, iova, size, era):
            if g.pgsize:
                sync(g)
                synced = True
            g.pgsize = size
    else:
        if (g.pgsize and g.pgsize != size) or gather_is_disjoint(g, iova, size, era):
            sync(g)
            synced = True
        g.pgsize = size
    iommu_iotlb_gather_add_range(g, iova, size, era)
    return synced


def gather_span(g: IommuIotlbGather, era: str) -> tuple[int, int]:
    """(start, size) of the gathered range, whatever the era's ``end`` convention."""
    if g.pgsize == 0:
        return 0, 0
    size = g.end - g.start if era == "v5.4" else g.end - g.start + 1
    return g.start, size

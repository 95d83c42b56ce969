"""``struct iommu_iotlb_gather`` and its helpers, one merge rule per era (a table row each).

- v5.4 (L5.4 include/linux/iommu.h:525-528): exclusive ``end``; sync early if the page size
  differs or the new page is disjoint (``end < g->start || start > g->end``).
- v5.10: ``end`` inclusive (``end = start + size - 1``), test ``end + 1 < g->start ||
  start > g->end + 1``.
- v5.15+ (L5.15 .. L6.18): ``iommu_iotlb_gather_is_disjoint`` / ``add_range`` helpers;
  ``freelist`` and ``queued`` fields.
See kernel-api-history.md §4.1, §4.2, §4.7. The rule a domain uses is chosen once, with its
core era (:mod:`iommu_lab.core.era`); nothing here looks at a version string.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..compact import Shift
from ..plain import field_repr, fields_equal

ULONG_MAX = (1 << 64) - 1
GATHER_FIELDS = ("start", "end", "pgsize", "freelist", "queued")


class IommuIotlbGather:
    """Pending invalidation, owned by the caller: ``iommu_iotlb_gather_init()`` state.

    A plain class (its fields in :meth:`__init__`), so that the compiled build can make it
    an extension type (``gather.pxd``): the op memo reads two gathers for every op's key.
    """

    def __init__(self, start: int = ULONG_MAX, end: int = 0, pgsize: int = 0,
                 freelist: list[tuple[int, int]] | None = None, queued: bool = False) -> None:
        self.start = start
        self.end = end
        self.pgsize = pgsize
        self.freelist = [] if freelist is None else freelist
        self.queued = queued

    def __eq__(self, other: object) -> bool:
        return fields_equal(self, other, GATHER_FIELDS)

    def __repr__(self) -> str:
        return field_repr(self, GATHER_FIELDS)

    def init(self) -> None:
        """``iommu_iotlb_gather_init``: back to the empty state (keeps ``queued``)."""
        self.start, self.end, self.pgsize = ULONG_MAX, 0, 0
        self.freelist = []

    @property
    def empty(self) -> bool:
        """Nothing gathered yet."""
        return self.pgsize == 0

    # ---- compact runs (iommu_lab.compact) --------------------------------------------
    def signature(self, next_iova: int) -> Hashable:
        """The gather relative to the next item of an ascending run.

        Once the next item lies at or above ``start`` only ``end`` decides merging, and
        ``start`` stays put (a growing gather), so it is left out of the signature.
        """
        if not self.pgsize:
            return (0, self.queued)
        if next_iova >= self.start:
            return (self.pgsize, "grow", self.end - next_iova, self.queued)
        return (self.pgsize, self.start - next_iova, self.end - next_iova, self.queued)

    def mark(self) -> None:
        """Nothing to remember: the shift needs only the IOVA advance."""

    def repeat(self, mark: None, reps: int, shift: Shift) -> None:
        """Move the gathered range along with ``reps`` more periods of the run."""
        if not self.pgsize:
            return
        if shift.next_iova < self.start:  # a growing gather keeps its start
            self.start += shift.diova
        self.end += shift.diova

    # ---- the op memo (iommu_lab.memo) -------------------------------------------------
    def memo_state(self, anchor: int) -> tuple[int | None, int | None, int, bool] | None:
        """Every field relative to ``anchor`` (start, end: None while unset), or None while
        the freelist holds pages (the memo does not move those)."""
        if self.freelist:
            return None
        return (None if self.start == ULONG_MAX else self.start - anchor,
                None if self.end == 0 else self.end - anchor, self.pgsize, self.queued)

    def memo_anchor(self) -> int:
        """Where a sync's commands are relative to: the start of the range, if any."""
        return 0 if self.start == ULONG_MAX else self.start

    def memo_restore(self, state: tuple[int | None, int | None, int, bool], anchor: int) -> None:
        """Take a :meth:`memo_state` recorded after an op, for one at ``anchor``."""
        start, end, self.pgsize, self.queued = state
        self.start = ULONG_MAX if start is None else start + anchor
        self.end = 0 if end is None else end + anchor


def iommu_iotlb_gather_init(gather: IommuIotlbGather) -> None:
    """``*gather = (struct iommu_iotlb_gather){ .start = ULONG_MAX }``."""
    gather.init()
    gather.queued = False


SyncFn = Callable[[IommuIotlbGather], None]


@dataclass(frozen=True)
class GatherRules:
    """How ``include/linux/iommu.h`` merged pages into a gather at one era.

    ``exclusive_end``: ``end`` is one past the range (v5.4) rather than its last byte.
    ``helpers``: the v5.15 ``iommu_iotlb_gather_is_disjoint`` (false while ``end == 0``) and
    the ``pgsize &&`` guard inside ``iommu_iotlb_gather_add_page``.
    """

    era: str
    exclusive_end: bool
    helpers: bool
    source: str

    def _end(self, iova: int, size: int) -> int:
        return iova + size if self.exclusive_end else iova + size - 1

    def is_disjoint(self, g: IommuIotlbGather, iova: int, size: int) -> bool:
        """Would adding [iova, iova+size) leave a gap? (adjacent ranges join in every era)."""
        if self.exclusive_end:
            return iova + size < g.start or iova > g.end
        end = iova + size - 1
        disjoint = end + 1 < g.start or iova > g.end + 1
        return disjoint and (g.end != 0 or not self.helpers)

    def add_range(self, g: IommuIotlbGather, iova: int, size: int) -> None:
        """Widen the range without syncing (v5.15 ``iommu_iotlb_gather_add_range``)."""
        end = iova + size if self.exclusive_end else iova + size - 1  # self._end, inline
        if iova < g.start:
            g.start = iova
        if end > g.end:
            g.end = end

    def add_page(self, g: IommuIotlbGather, iova: int, size: int, sync: SyncFn) -> bool:
        """``iommu_iotlb_gather_add_page``: sync first if disjoint or of another size.

        Returns True if it synced early. Before v5.15 the test sat inside
        ``if (gather->pgsize)``; v5.15 guards only the size comparison.
        """
        if self.helpers:
            early = bool(g.pgsize and g.pgsize != size) or self.is_disjoint(g, iova, size)
        else:
            early = bool(g.pgsize) and (g.pgsize != size or self.is_disjoint(g, iova, size))
        if early:
            sync(g)
        g.pgsize = size
        end = iova + size if self.exclusive_end else iova + size - 1  # self.add_range, inline
        if iova < g.start:
            g.start = iova
        if end > g.end:
            g.end = end
        return early

    def span(self, g: IommuIotlbGather) -> tuple[int, int]:
        """(start, size) of the gathered range, whatever the era's ``end`` convention."""
        if g.pgsize == 0:
            return 0, 0
        return g.start, g.end - g.start + (0 if self.exclusive_end else 1)


GATHER_V5_4 = GatherRules("v5.4", exclusive_end=True, helpers=False,
                          source="include/linux/iommu.h @v5.4.59:525-528")
GATHER_V5_10 = GatherRules("v5.10", exclusive_end=False, helpers=False,
                           source="include/linux/iommu.h @v5.10.89 (inclusive end)")
GATHER_V5_15 = GatherRules("v5.15", exclusive_end=False, helpers=True,
                           source="include/linux/iommu.h @v5.15 (is_disjoint, add_range)")

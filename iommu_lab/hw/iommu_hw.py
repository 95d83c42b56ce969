"""The IOMMU as hardware: translation through IOTLB -> walker -> page table, and the
effect of each invalidation command when the IOMMU executes it.

Translation results (DESIGN §9 ``dma_access``): ``"hit"``, ``"walk"``, ``"fault"``, or
``"stale"``: the IOTLB served a translation the page table no longer has, i.e. DMA into
memory the OS believes is free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..stats import Stats
from .clock import Clock
from .commands import INV_ALL, MAP_SIDE, Command
from .costs import Costs
from .iotlb import Iotlb, TlbEntry


@dataclass(frozen=True, slots=True)
class WalkResult:
    """What a table walk found: the leaf (or nothing) and the tables read on the way."""

    paddr: int          # output address of the leaf's first byte
    iova: int           # iova of the leaf's first byte
    pgsize: int
    writable: bool
    tables: tuple[tuple[int, int], ...]  # (level, prefix) of each table read, root first
    present: bool = True


Walker = Callable[[int], WalkResult]


def command_is_leaf(cmd: Command) -> bool:
    """Leaf-only invalidation? SMMUv3 ``Leaf``, VT-d ``IH`` (1 = leaf only), AMD ``PDE``."""
    f = dict(cmd.fields)
    if "Leaf" in f:
        return bool(f["Leaf"])
    if "IH" in f:
        return bool(f["IH"])
    if "PDE" in f:
        return not f["PDE"]
    return True


class IommuHw:
    """One IOMMU instance: its IOTLB, costs and counters; queues are attached by drivers."""

    def __init__(self, clock: Clock, stats: Stats, costs: Costs, iotlb: Iotlb) -> None:
        self.clock, self.stats, self.costs, self.iotlb = clock, stats, costs, iotlb
        self.queues: list = []

    def execute(self, cmd: Command, k0: int, k1: int) -> None:
        """Apply commands ``k0..k1-1`` of a run to the IOTLB (called as the IOMMU completes
        them). A map-side invalidation that finds nothing cached is counted as needless:
        only hardware that caches non-present entries needs it."""
        if cmd.reason == MAP_SIDE:
            for k in range(k0, k1):
                entries = len(self.iotlb.entries)
                self._execute(cmd, k, k + 1)
                if len(self.iotlb.entries) == entries:
                    self.stats["needless_inv_cmds"] += 1
            return
        self._execute(cmd, k0, k1)

    def _execute(self, cmd: Command, k0: int, k1: int) -> None:
        if cmd.kind == INV_ALL:
            over = self.iotlb.invalidate_asid(cmd.asid)
        else:
            start = cmd.iova + k0 * cmd.step
            end = cmd.iova + (k1 - 1) * cmd.step + cmd.size
            over = self.iotlb.invalidate_range(cmd.asid, start, end, command_is_leaf(cmd))
        self.stats["over_invalidated"] += over

    def settle(self) -> None:
        """Apply every invalidation the IOMMU has completed by now."""
        for q in self.queues:
            q.settle(self.clock.now)

    def translate(self, asid: int, iova: int, write: bool, walker: Walker,
                  pgsizes: tuple[int, ...], levels: int) -> str:
        """The device accesses ``iova``: ``hit`` | ``walk`` | ``fault`` | ``stale``."""
        self.settle()
        for q in self.queues:
            q.observed()
        st = self.stats
        st["dma_accesses"] += 1
        entry = self.iotlb.lookup(asid, iova, pgsizes)
        if entry is not None:
            return self._on_hit(entry, iova, write, walker)
        st["iotlb_misses"] += 1
        found = walker(iova)
        st["device_ns"] += self._walk_cost(asid, found, levels)
        if not found.present:
            st["faults"] += 1
            if self.iotlb.cache_non_present:
                self.iotlb.fill(TlbEntry(asid, found.iova, found.pgsize, 0, False, negative=True))
            return "fault"
        if self.iotlb.fill(TlbEntry(asid, found.iova, found.pgsize, found.paddr, found.writable)):
            st["refill_misses"] += 1
        if write and not found.writable:
            st["faults"] += 1
            return "fault"
        return "walk"

    def _on_hit(self, entry: TlbEntry, iova: int, write: bool, walker: Walker) -> str:
        st = self.stats
        st["iotlb_hits"] += 1
        now_pt = walker(iova)
        if entry.negative:
            st["faults"] += 1
            if now_pt.present:
                st["stale_faults"] += 1  # cached "not present" hides a new mapping
            return "fault"
        if write and not entry.writable:
            st["faults"] += 1
            return "fault"
        same = (now_pt.present and now_pt.paddr + (iova - now_pt.iova)
                == entry.paddr + (iova - entry.iova))
        if same:
            return "hit"
        st["stale_hits"] += 1
        since = entry.stale_since if entry.stale_since is not None else self.clock.now
        st.note_max("max_stale_ns", self.clock.now - since)
        return "stale"

    def _walk_cost(self, asid: int, found: WalkResult, levels: int) -> int:
        """Levels read: from the deepest walk-cache hit down to the leaf (or the hole)."""
        read = levels
        for depth, (level, prefix) in enumerate(found.tables):
            if depth and self.iotlb.walk_hit(asid, level, prefix):
                read = levels - depth
                self.stats["walk_cache_hits"] += 1
        for level, prefix in found.tables[1:]:
            self.iotlb.walk_fill(asid, level, prefix)
        return max(1, read) * self.costs.iotlb_walk_level_ns

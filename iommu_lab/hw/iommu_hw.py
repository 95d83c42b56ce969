"""The IOMMU as hardware: translation through IOTLB -> walker -> page table, and the
effect of each invalidation command when the IOMMU executes it.

Translation results (DESIGN §9 ``dma_access``): ``"hit"``, ``"walk"``, ``"fault"``, or
``"stale"``: the IOTLB served a translation the page table no longer has, i.e. DMA into
memory the OS believes is free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..stats import Stats
from .clock import Clock
from .commands import ATC_INV, INV, INV_ALL, MAP_SIDE, Command
from .costs import Costs
from .iotlb import Iotlb, TlbEntry


class Footprint(NamedTuple):
    """What some commands could drop from the caches (:meth:`IommuHw.footprint`)."""

    lo: int             # [lo, hi): the addresses invalidated
    hi: int
    whole: bool         # a whole ASID's entries, or a device's whole ATC
    walks: bool         # walk-cache tables too


class WalkResult(NamedTuple):
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
    ih = pde = None
    for name, value in cmd.fields:
        if name == "Leaf":
            return bool(value)
        if name == "IH":
            ih = value
        elif name == "PDE":
            pde = value
    if ih is not None:
        return bool(ih)
    if pde is not None:
        return not pde
    return True


def backs_whole_entry(entry: TlbEntry, found: WalkResult) -> bool:
    """Does the walk show the table translating the entry's whole span as cached (one leaf
    at the same address and size, or for a cached fault, no leaf at all)?"""
    if entry.negative:
        return not found.present and found.iova == entry.iova and found.pgsize == entry.pgsize
    return (found.present and found.iova == entry.iova and found.pgsize == entry.pgsize
            and found.paddr == entry.paddr)


class IommuHw:
    """One IOMMU instance: its IOTLB, costs and counters; queues are attached by drivers."""

    def __init__(self, clock: Clock, stats: Stats, costs: Costs, iotlb: Iotlb,
                 atc: Iotlb | None = None) -> None:
        self.clock, self.stats, self.costs, self.iotlb = clock, stats, costs, iotlb
        self.atc = atc              # the endpoint's device TLB (PCIe ATS), if it has one
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
        kind = cmd.kind
        if kind == ATC_INV:
            if self.atc is not None:
                start = cmd.iova + k0 * cmd.step
                if cmd.size:
                    self.atc.invalidate_range(cmd.asid, start, start + (k1 - k0) * cmd.size)
                else:  # the whole ATC of the device (ATC_INV_SIZE_ALL, a DSI's dev-IOTLB)
                    self.atc.invalidate_asid(cmd.asid)
            return
        if kind == INV_ALL:
            over = self.iotlb.invalidate_asid(cmd.asid)
        else:
            start = cmd.iova + k0 * cmd.step
            end = cmd.iova + (k1 - 1) * cmd.step + cmd.size
            over = self.iotlb.invalidate_range(cmd.asid, start, end, command_is_leaf(cmd))
        self.stats["over_invalidated"] += over

    def footprint(self, cmds: list[tuple[Command, int]], lo: int, hi: int) -> Footprint:
        """What executing the runs ``cmds`` (template, count) could drop, as :meth:`_execute`
        drops it: the addresses they invalidate joined with [lo, hi), whether one drops a
        whole ASID (or a device's whole ATC), whether one drops walk-cache tables."""
        whole = walks = False
        for cmd, count in cmds:
            kind = cmd.kind
            if kind == INV_ALL:
                whole = walks = True
            elif kind == ATC_INV and not cmd.size:
                whole = True
            elif kind == ATC_INV:
                lo, hi = min(lo, cmd.iova), max(hi, cmd.iova + count * cmd.size)
            elif kind == INV:
                lo = min(lo, cmd.iova)
                hi = max(hi, cmd.iova + (count - 1) * cmd.step + cmd.size)
                walks = walks or not command_is_leaf(cmd)
        return Footprint(lo, hi, whole, walks)

    def would_change(self, asid: int, fp: Footprint, shift: int = 0) -> bool:
        """Would commands with footprint ``fp`` (moved ``shift`` bytes) drop or mark anything
        this IOMMU's IOTLB, walk cache or ATC holds? The op memo replays an op only where
        they would not (its recorded outcome has no cache effects)."""
        if self.caches_empty():   # the usual case: no device access since the last flush
            return False
        if fp.walks and self.iotlb.walk:
            return True
        for cache in (self.iotlb, self.atc):
            if cache is not None and cache.count(asid) and (
                    fp.whole or cache.overlaps(asid, fp.lo + shift, fp.hi + shift)):
                return True
        return False

    def caches_empty(self) -> bool:
        """Nothing in the IOTLB, its walk cache or the device's ATC (for any ASID): an
        invalidation then changes nothing but counters (the op memo relies on it)."""
        atc = self.atc
        return not (self.iotlb.entries or self.iotlb.walk
                    or (atc is not None and (atc.entries or atc.walk)))

    def settle(self) -> None:
        """Apply every invalidation the IOMMU has completed by now."""
        for q in self.queues:
            q.settle(self.clock.now)

    def translate(self, asid: int, iova: int, write: bool, walker: Walker,
                  pgsizes: tuple[int, ...], levels: int, table_gen: int | None = None) -> str:
        """The device accesses ``iova``: ``hit`` | ``walk`` | ``fault`` | ``stale``.

        ``table_gen`` is the page table's generation (``IoPgtableArm.generation``, bumped by
        every write): a hit on an entry last found to match the table at that generation
        needs no walk to tell whether it is stale (None: always walk).
        """
        now = self.clock.now
        for q in self.queues:
            q.settle(now)   # every invalidation completed by now applies first (settle())
            q.unobserved = 0   # q.observed(), inline: this runs on every device access
        st = self.stats
        st["dma_accesses"] += 1
        if self.atc is not None:
            cached = self.atc.lookup(asid, iova, pgsizes)
            if cached is not None:
                st["atc_hits"] += 1
                res = self._on_hit(cached, iova, write, walker, table_gen, count="atc_hits")
                if res == "stale":
                    st["atc_stale_hits"] += 1
                return res
        entry = self.iotlb.lookup(asid, iova, pgsizes)
        if entry is not None:
            return self._on_hit(entry, iova, write, walker, table_gen)
        return self._miss(asid, iova, write, walker, levels, table_gen)

    def _miss(self, asid: int, iova: int, write: bool, walker: Walker, levels: int,
              table_gen: int | None) -> str:
        """IOTLB miss: walk the table, cache the leaf (or, with caching of non-present
        entries, the fault) and, with ATS, give the endpoint its translation."""
        st = self.stats
        st["iotlb_misses"] += 1
        found = walker(iova)
        st["device_ns"] += self._walk_cost(asid, found, levels)
        checked = -1 if table_gen is None else table_gen
        if not found.present:
            st["faults"] += 1
            if self.iotlb.cache_non_present:
                self.iotlb.fill(TlbEntry(asid, found.iova, found.pgsize, 0, False, negative=True,
                                         checked=checked))
            return "fault"
        if self.iotlb.fill(TlbEntry(asid, found.iova, found.pgsize, found.paddr, found.writable,
                                    checked=checked)):
            st["refill_misses"] += 1
        if write and not found.writable:
            st["faults"] += 1
            return "fault"
        self._fill_atc(asid, found.iova, found.pgsize, found.paddr, found.writable, checked)
        return "walk"

    def _fill_atc(self, asid: int, iova: int, pgsize: int, paddr: int, writable: bool,
                  checked: int = -1) -> None:
        """A translated request: the endpoint caches the answer (ATS Translation Completion)."""
        if self.atc is not None:
            self.atc.fill(TlbEntry(asid, iova, pgsize, paddr, writable, checked=checked))

    def _on_hit(self, entry: TlbEntry, iova: int, write: bool, walker: Walker,
                table_gen: int | None, count: str = "iotlb_hits") -> str:
        st = self.stats
        if count == "iotlb_hits":
            st["iotlb_hits"] += 1
        if table_gen is not None and entry.checked == table_gen:
            present = same = not entry.negative  # the table is as when last checked
        else:  # walk the table to see whether the entry is still backed
            now_pt = walker(iova)
            present = now_pt.present
            same = (present and now_pt.paddr + (iova - now_pt.iova)
                    == entry.paddr + (iova - entry.iova))
            if table_gen is not None and backs_whole_entry(entry, now_pt):
                entry.checked = table_gen
        if entry.negative:
            st["faults"] += 1
            if present:
                st["stale_faults"] += 1  # cached "not present" hides a new mapping
            return "fault"
        if write and not entry.writable:
            st["faults"] += 1
            return "fault"
        if same:
            if count == "iotlb_hits" and self.atc is not None:
                self._fill_atc(entry.asid, entry.iova, entry.pgsize, entry.paddr, entry.writable,
                               entry.checked)
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

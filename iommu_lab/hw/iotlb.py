"""The IOTLB (leaf translations) and walk cache (non-leaf tables), tagged by ASID.

Capacity and replacement are parameters (default 64 entries, LRU: an [assumption] from
hardware-invalidation.md §0.2; QEMU uses 256/1024, gem5 2048). Optional caching of
non-present entries models Intel caching mode / AMD NpCache (reference §3.5, §4.3).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field

from ..errors import einval

REPLACEMENTS = ("lru", "fifo", "random")


@dataclass(slots=True)
class TlbEntry:
    """One cached translation: ``pgsize`` bytes at ``iova`` -> ``paddr``.

    ``negative`` entries cache "not present" (a fault); ``stale_since`` is when the page
    table stopped backing the entry (None while the PTE is still there). ``checked`` is the
    page table's generation when the entry was last found to match the table over its
    whole span (-1: not known), so a hit at that generation needs no walk.
    """

    asid: int
    iova: int
    pgsize: int
    paddr: int
    writable: bool
    negative: bool = False
    stale_since: int | None = None
    checked: int = field(default=-1, compare=False, repr=False)


Key = tuple[int, int, int]


class Iotlb:
    """Leaf TLB plus a walk cache; invalidation by range (leaf or not), by ASID, or all."""

    def __init__(self, capacity: int = 64, replacement: str = "lru", walk_cache: int = 16,
                 cache_non_present: bool = False, seed: int = 0) -> None:
        if capacity < 1 or walk_cache < 0:
            raise einval(f"IOTLB capacity {capacity} / walk cache {walk_cache} must be >= 1 / >= 0")
        if replacement not in REPLACEMENTS:
            raise einval(f"unknown replacement {replacement!r}; expected one of {REPLACEMENTS}")
        self.capacity, self.replacement = capacity, replacement
        self.walk_capacity, self.cache_non_present = walk_cache, cache_non_present
        self.entries: OrderedDict[Key, TlbEntry] = OrderedDict()
        self.walk: OrderedDict[tuple[int, int, int], None] = OrderedDict()
        self.victims: set[Key] = set()  # valid entries dropped by over-invalidation
        self._rng = random.Random(seed)
        self._per_asid: dict[int, int] = {}
        self._sizes: dict[int, int] = {}   # page size -> entries of that size (for probing)
        self._unaligned = 0                # entries not aligned to their size (never probed)

    # ---- lookup / fill -------------------------------------------------------
    def lookup(self, asid: int, iova: int, pgsizes: tuple[int, ...]) -> TlbEntry | None:
        """The entry translating ``iova`` (any cached page size), refreshing LRU order."""
        for size in pgsizes:
            key = (asid, iova & ~(size - 1), size)
            entry = self.entries.get(key)
            if entry is not None:
                if self.replacement == "lru":
                    self.entries.move_to_end(key)
                return entry
        return None

    def fill(self, entry: TlbEntry) -> bool:
        """Insert ``entry``, evicting one if full; True if it refills an over-invalidated one."""
        key = (entry.asid, entry.iova, entry.pgsize)
        new = key not in self.entries
        if new and len(self.entries) >= self.capacity:
            self._evict()
        self.entries[key] = entry
        if new:  # a refill of a present key replaces it: the per-ASID count is unchanged
            self._per_asid[entry.asid] = self._per_asid.get(entry.asid, 0) + 1
            self._sizes[entry.pgsize] = self._sizes.get(entry.pgsize, 0) + 1
            if entry.iova % entry.pgsize:
                self._unaligned += 1
        if key in self.victims:
            self.victims.discard(key)
            return True
        return False

    def _evict(self) -> None:
        if self.replacement == "random":
            key = self._rng.choice(list(self.entries))
        else:
            key = next(iter(self.entries))  # LRU head, or FIFO oldest
        self._drop(key)

    def _drop(self, key: Key) -> TlbEntry:
        entry = self.entries.pop(key)
        self._per_asid[key[0]] -= 1
        left = self._sizes[entry.pgsize] - 1
        if left:
            self._sizes[entry.pgsize] = left
        else:
            del self._sizes[entry.pgsize]
        if entry.iova % entry.pgsize:
            self._unaligned -= 1
        return entry

    def _overlapping(self, asid: int, start: int, end: int) -> list[Key]:
        """Keys of ``asid``'s entries overlapping [start, end) (``iova < end`` and ``start <
        iova + pgsize``). A small range is probed page by page for each cached page size
        (a 4 KiB unmap: one lookup per size), a large one found by scanning every entry."""
        entries = self.entries
        spans, probes = [], 0
        for size in self._sizes:
            first, last = start // size, (end - 1) // size
            spans.append((size, first, last))
            probes += max(0, last - first + 1)
        if probes > len(entries) or start < 0 or self._unaligned:
            return [k for k, e in entries.items()
                    if e.asid == asid and e.iova < end and start < e.iova + e.pgsize]
        found = []      # a loop, not a comprehension with ``:=`` (Cython: native.py)
        for size, first, last in spans:
            for i in range(first, last + 1):
                key = (asid, i * size, size)
                if key in entries:
                    found.append(key)
        return found

    def overlaps(self, asid: int, start: int, end: int) -> bool:
        """Does ``asid`` have an entry overlapping [start, end)?"""
        return bool(self._per_asid.get(asid)) and bool(self._overlapping(asid, start, end))

    def count(self, asid: int) -> int:
        """How many leaf entries carry ``asid``."""
        return self._per_asid.get(asid, 0)

    # ---- walk cache ----------------------------------------------------------
    def walk_hit(self, asid: int, level: int, prefix: int) -> bool:
        """Is the table at ``level`` covering ``prefix`` cached?"""
        key = (asid, level, prefix)
        if key in self.walk:
            self.walk.move_to_end(key)
            return True
        return False

    def walk_fill(self, asid: int, level: int, prefix: int) -> None:
        """Cache a table pointer read during a walk."""
        if self.walk_capacity == 0:
            return
        key = (asid, level, prefix)
        if key not in self.walk and len(self.walk) >= self.walk_capacity:
            self.walk.popitem(last=False)
        self.walk[key] = None

    # ---- invalidation --------------------------------------------------------
    def mark_stale(self, asid: int, start: int, end: int, now: int) -> None:
        """The page table stopped backing [start, end): note when, for the stale window."""
        if not self._per_asid.get(asid):
            return
        for key in self._overlapping(asid, start, end):
            entry = self.entries[key]
            if not entry.negative and entry.stale_since is None:
                entry.stale_since = now

    def unmark_stale(self, asid: int, start: int, end: int, lookup: object) -> None:
        """Undo :meth:`mark_stale` in [start, end) where the page table still backs the
        entry (``lookup(iova) -> paddr``, 0 when unmapped): an unmap stopped at a hole."""
        if not self._per_asid.get(asid):
            return
        for key in self._overlapping(asid, start, end):
            entry = self.entries[key]
            if (entry.stale_since is not None
                    and lookup(entry.iova) == entry.paddr):  # type: ignore[operator]
                entry.stale_since = None

    def invalidate_range(self, asid: int, start: int, end: int, leaf: bool = True) -> int:
        """Drop entries overlapping [start, end); non-leaf also drops walk-cache tables there.

        Returns how many *valid* entries were dropped (over-invalidation).
        """
        over = 0
        if self._per_asid.get(asid):
            for key in self._overlapping(asid, start, end):
                over += self._note_victim(key, self._drop(key))
        if not leaf:
            self._drop_walks(asid)
        return over

    def _drop_walks(self, asid: int) -> None:
        """Forget every walk-cache table of ``asid`` (the others keep their order)."""
        for key in [k for k in self.walk if k[0] == asid]:
            del self.walk[key]

    def invalidate_asid(self, asid: int) -> int:
        """Drop every entry and walk-cache table of ``asid``; returns valid entries dropped."""
        over = 0
        if self._per_asid.get(asid):
            for key in [k for k in self.entries if k[0] == asid]:
                over += self._note_victim(key, self._drop(key))
        self._drop_walks(asid)
        return over

    def _note_victim(self, key: Key, entry: TlbEntry) -> int:
        if entry.negative or entry.stale_since is not None:
            return 0
        self.victims.add(key)
        return 1

    def snapshot(self) -> list[TlbEntry]:
        """Entries in replacement order (oldest first), as copies for views."""
        return [TlbEntry(e.asid, e.iova, e.pgsize, e.paddr, e.writable, e.negative,
                         e.stale_since) for e in self.entries.values()]

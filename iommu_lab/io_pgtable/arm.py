"""io-pgtable-arm: ARM LPAE long-descriptor IO page tables (drivers/iommu/io-pgtable-arm.c).

Geometry, map/unmap/iova_to_phys and the flush callbacks follow kernel-api-history.md §7
(L4.13 and L6.18 ``arm_lpae_alloc_pgtable``, ``__arm_lpae_map``, ``__arm_lpae_unmap``,
``arm_lpae_split_blk_unmap``). Each table is a numpy ``uint64`` array of real 8-byte PTEs,
so a 16 GiB domain of 4 KiB pages costs about 8 bytes per page, not a Python object per PTE.

Era switches: ``sync_on_unmap`` (≤ v4.14: ``arm_lpae_unmap`` ends with ``tlb_sync``) and
``split_blocks`` (partial unmap of a block splits it up to v6.12; from v6.13 it is refused
and returns 0 — "Unmap of a partial large IOPTE is not allowed", L6.18).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..errors import EEXIST, EINVAL, ERANGE, IommuError, einval
from ..hw.iommu_hw import WalkResult
from ..prot import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    PROT_ALL,
)
from ..units import SZ_1G, SZ_2M, SZ_4K, SZ_16K, SZ_32M, SZ_64K, SZ_512M, fmt_size

ARM_LPAE_MAX_LEVELS = 4
LAST_LEVEL = ARM_LPAE_MAX_LEVELS - 1
PTE_TYPE_MASK = 3
PTE_TYPE_BLOCK = 1
PTE_TYPE_TABLE = 3
PTE_TYPE_PAGE = 3
PTE_AP_UNPRIV = 1 << 6   # stage 1
PTE_AP_RDONLY = 1 << 7   # stage 1
PTE_HAP_READ = 1 << 6    # stage 2
PTE_HAP_WRITE = 1 << 7   # stage 2
PTE_SH_IS = 3 << 8
PTE_AF = 1 << 10
PTE_NG = 1 << 11
PTE_XN = 3 << 53
ATTRINDX_SHIFT = 2
MAIR_ATTR_IDX_CACHE = 1
MAIR_ATTR_IDX_DEV = 2
ADDR_MASK = ((1 << 48) - 1) & ~0xFFF
S2_MAX_CONCAT_PAGES = 16

ARM_64_LPAE_S1 = "ARM_64_LPAE_S1"
ARM_64_LPAE_S2 = "ARM_64_LPAE_S2"
GRANULE_PGSIZES = {SZ_4K: SZ_4K | SZ_2M | SZ_1G, SZ_16K: SZ_16K | SZ_32M, SZ_64K: SZ_64K | SZ_512M}
PAGE_SIZE = SZ_4K  # the CPU's page size: arm_lpae_restrict_pgsizes prefers it as granule


class FlushOps(Protocol):
    """``struct iommu_flush_ops`` (include/linux/io-pgtable.h, v5.4+) as io-pgtable calls it."""

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None: ...
    def tlb_add_page(self, gather: object, iova: int, granule: int) -> None: ...
    def tlb_sync(self) -> None: ...


class WalkLevel(NamedTuple):
    """One table read during a walk: level, entry index, the PTE, and what it is.

    ``kind``: ``table`` | ``block`` | ``page`` | ``invalid``; ``span`` is the size one entry
    of that level covers; ``out`` the address the PTE holds (next table or output page).
    """

    level: int
    index: int
    pte: int
    kind: str
    span: int
    out: int


@dataclass(frozen=True)
class IoPgtableCfg:
    """``struct io_pgtable_cfg``: page sizes, input/output address sizes and the format."""

    pgsize_bitmap: int = SZ_4K | SZ_2M | SZ_1G
    ias: int = 48
    oas: int = 48
    fmt: str = ARM_64_LPAE_S1
    sync_on_unmap: bool = False
    split_blocks: bool = True
    quirks: frozenset[str] = field(default_factory=frozenset)


def restrict_pgsizes(bitmap: int) -> tuple[int, int]:
    """``arm_lpae_restrict_pgsizes``: pick the granule, keep only the sizes it allows."""
    if bitmap & PAGE_SIZE:
        granule = PAGE_SIZE
    elif bitmap & (PAGE_SIZE - 1):
        granule = 1 << ((bitmap & (PAGE_SIZE - 1)).bit_length() - 1)
    elif bitmap & ~(PAGE_SIZE - 1):
        granule = bitmap & -bitmap
    else:
        granule = 0
    if granule not in GRANULE_PGSIZES:
        raise einval(f"pgsize_bitmap {bitmap:#x} has no 4K, 16K or 64K granule")
    return granule, bitmap & GRANULE_PGSIZES[granule]


class IoPgtableArm:
    """One LPAE page table with the kernel's geometry; tables keyed by (level, prefix)."""

    def __init__(self, cfg: IoPgtableCfg) -> None:
        granule, bitmap = restrict_pgsizes(cfg.pgsize_bitmap)
        if not 32 <= cfg.ias <= 48 or not 32 <= cfg.oas <= 48:
            raise einval(f"ias {cfg.ias} / oas {cfg.oas} must be within 32..48 bits")
        self.cfg, self.granule, self.pgsize_bitmap = cfg, granule, bitmap
        self.pg_shift = granule.bit_length() - 1
        self.bpl = self.pg_shift - 3
        va_bits = cfg.ias - self.pg_shift
        self.levels = -(-va_bits // self.bpl)
        self.start_level = ARM_LPAE_MAX_LEVELS - self.levels
        self.pgd_bits = va_bits - self.bpl * (self.levels - 1)
        if (cfg.fmt == ARM_64_LPAE_S2 and self.levels == ARM_LPAE_MAX_LEVELS
                and (1 << self.pgd_bits) <= S2_MAX_CONCAT_PAGES):  # L4.13 concatenation
            self.pgd_bits += self.bpl
            self.levels -= 1
            self.start_level += 1
        # per-level geometry, precomputed (index = level 0..3)
        self._shift = [(ARM_LPAE_MAX_LEVELS - lv) * self.bpl + 3 for lv in range(4)]
        self._nbits = [self.pgd_bits if lv == self.start_level else self.bpl for lv in range(4)]
        self._mask = [(1 << b) - 1 for b in self._nbits]
        self._pshift = [sh + b for sh, b in zip(self._shift, self._nbits)]
        self._leaf_types = [self._leaf_type(lv) for lv in range(4)]
        self._levels = range(self.start_level, ARM_LPAE_MAX_LEVELS)
        self._level_of = {1 << self._shift[lv]: lv for lv in self._levels}
        self._prot_cache: dict[int, int] = {}
        self._slot_geometry: dict[int, dict[int, tuple[Any, ...]]] = {}  # leaf_slots
        self.tables: dict[tuple[int, int], np.ndarray] = {}
        self._new_table(self.start_level, 0)
        self.leaf_sizes = tuple(s for s in (SZ_4K, SZ_16K, SZ_64K, SZ_2M, SZ_32M, SZ_512M, SZ_1G)
                                if s & bitmap)
        self.generation = 0
        """Bumped by every call that may write a PTE: a cached translation checked against
        the table at this generation still matches it (the IOMMU model's hit path uses it
        to skip re-walking, which it does only to notice stale entries)."""

    # ---- geometry -------------------------------------------------------------
    def lvl_shift(self, lvl: int) -> int:
        """``ARM_LPAE_LVL_SHIFT``: log2 of the span of one entry at ``lvl``."""
        return self._shift[lvl]

    def block_size(self, lvl: int) -> int:
        """``ARM_LPAE_BLOCK_SIZE``."""
        return 1 << self._shift[lvl]

    def _bits(self, lvl: int) -> int:
        return self._nbits[lvl]

    def _prefix(self, lvl: int, iova: int) -> int:
        return iova >> self._pshift[lvl]

    def _idx(self, lvl: int, iova: int) -> int:
        return (iova >> self._shift[lvl]) & self._mask[lvl]

    def leaf_level(self, pgsize: int) -> int:
        """The level whose blocks (or pages) are ``pgsize`` bytes."""
        lvl = self._level_of.get(pgsize)
        if lvl is None:
            raise einval(f"page size {fmt_size(pgsize)} is not a block size of this table")
        return lvl

    def _new_table(self, lvl: int, prefix: int) -> np.ndarray:
        tbl = np.zeros(1 << self._bits(lvl), dtype=np.uint64)
        self.tables[(lvl, prefix)] = tbl
        return tbl

    # ---- PTE encoding (arm_lpae_prot_to_pte) ---------------------------------------
    def prot_to_pte(self, prot: int) -> int:
        """PTE attribute bits for IOMMU_* ``prot`` (stage 1 or 2)."""
        prot = int(prot)
        pte = self._prot_cache.get(prot)
        if pte is None:
            pte = self._prot_cache[prot] = self._prot_to_pte(prot)
        return pte

    def _prot_to_pte(self, prot: int) -> int:
        if self.cfg.fmt == ARM_64_LPAE_S1:
            pte = PTE_NG
            if not prot & IOMMU_WRITE and prot & IOMMU_READ:
                pte |= PTE_AP_RDONLY
            if not prot & IOMMU_PRIV:
                pte |= PTE_AP_UNPRIV
        else:
            pte = (PTE_HAP_READ if prot & IOMMU_READ else 0) | (
                PTE_HAP_WRITE if prot & IOMMU_WRITE else 0)
        if prot & IOMMU_MMIO:
            pte |= MAIR_ATTR_IDX_DEV << ATTRINDX_SHIFT
        elif prot & IOMMU_CACHE:
            pte |= MAIR_ATTR_IDX_CACHE << ATTRINDX_SHIFT
        if prot & IOMMU_NOEXEC:
            pte |= PTE_XN
        return pte | PTE_AF | PTE_SH_IS

    def pte_writable(self, pte: int) -> bool:
        """Does this leaf allow DMA writes?"""
        if self.cfg.fmt == ARM_64_LPAE_S1:
            return not pte & PTE_AP_RDONLY
        return bool(pte & PTE_HAP_WRITE)

    def _leaf_type(self, lvl: int) -> int:
        return PTE_TYPE_PAGE if lvl == ARM_LPAE_MAX_LEVELS - 1 else PTE_TYPE_BLOCK

    def _is_leaf(self, pte: int, lvl: int) -> bool:
        return pte != 0 and (pte & PTE_TYPE_MASK) == self._leaf_type(lvl)

    # ---- lookup ---------------------------------------------------------------------
    def _reaches(self, lvl: int, iova: int) -> bool:
        """Does a walk for ``iova`` pass table pointers all the way down to ``lvl``?

        A table is in :attr:`tables` only while its parent entry points to it (every write
        keeps it so: a block replacing a table frees it, a split allocates its tables), so
        this is one dictionary lookup instead of a walk from the root.
        """
        return (lvl, iova >> self._pshift[lvl]) in self.tables

    def _walk_to(self, iova: int) -> tuple[int, int, list[tuple[int, int]]]:
        """Descend to the first leaf or hole: (level, pte, tables read)."""
        tables, shift, mask, pshift = self.tables, self._shift, self._mask, self._pshift
        last = tables.get((LAST_LEVEL, iova >> pshift[LAST_LEVEL]))
        if last is not None:  # the walk ends in this table (see _reaches): read it directly
            return (LAST_LEVEL, last.item((iova >> shift[LAST_LEVEL]) & mask[LAST_LEVEL]),
                    [(lvl, iova >> pshift[lvl]) for lvl in self._levels])
        path: list[tuple[int, int]] = []
        leaf_types = self._leaf_types
        for lvl in self._levels:
            key = (lvl, iova >> pshift[lvl])
            path.append(key)
            pte = tables[key].item((iova >> shift[lvl]) & mask[lvl])
            if pte == 0 or (pte & PTE_TYPE_MASK) == leaf_types[lvl]:
                return lvl, pte, path
        raise AssertionError("table entry at the last level")

    def walk_levels(self, iova: int) -> list[WalkLevel]:
        """The walk for ``iova`` level by level (a read-only snapshot for views): one
        :class:`WalkLevel` per table read, ending at the leaf or the hole."""
        if iova >> self.cfg.ias:
            return []
        _, _, path = self._walk_to(iova)
        out = []
        for lvl, prefix in path:
            idx = self._idx(lvl, iova)
            pte = int(self.tables[(lvl, prefix)][idx])
            kind = ("invalid" if pte == 0 else "table" if not self._is_leaf(pte, lvl)
                    else "page" if lvl == ARM_LPAE_MAX_LEVELS - 1 else "block")
            out.append(WalkLevel(lvl, idx, pte, kind, self.block_size(lvl), pte & ADDR_MASK))
        return out

    def iova_to_phys(self, iova: int) -> int:
        """Output address for ``iova``, 0 when nothing is mapped (``arm_lpae_iova_to_phys``)."""
        if iova >> self.cfg.ias:
            return 0
        lvl, pte, _ = self._walk_to(iova)
        if pte == 0:
            return 0
        return (pte & ADDR_MASK) | (iova & (self.block_size(lvl) - 1))

    def walk(self, iova: int) -> WalkResult:
        """What the IOMMU's table walker finds for ``iova`` (used by the hardware model)."""
        if iova >> self.cfg.ias:
            return WalkResult(0, iova & ~(self.granule - 1), self.granule, False, (), False)
        lvl, pte, path = self._walk_to(iova)
        if pte == 0:
            g = self.granule
            return WalkResult(0, iova & ~(g - 1), g, False, tuple(path), False)
        size = 1 << self._shift[lvl]
        return WalkResult(pte & ADDR_MASK, iova & ~(size - 1), size, self.pte_writable(pte),
                          tuple(path))

    def leaves(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int, int]]:
        """Every mapped leaf overlapping [start, end) as (iova, size, paddr, pte), ascending."""
        end = (1 << self.cfg.ias) if end is None else end
        pshift = self._pshift[LAST_LEVEL]
        if start < end and start >> pshift == (end - 1) >> pshift and self._reaches(
                LAST_LEVEL, start):  # one last-level table holds the whole range
            yield from self._leaves_in(LAST_LEVEL, start >> pshift, start, end)
            return
        yield from self._leaves_in(self.start_level, 0, start, end)

    def _leaves_in(self, lvl: int, prefix: int, start: int,
                   end: int) -> Iterator[tuple[int, int, int, int]]:
        tbl = self.tables.get((lvl, prefix))
        if tbl is None:
            return
        shift, bits = self._shift[lvl], self._nbits[lvl]
        base = prefix << (shift + bits)
        lo = max(0, (start - base) >> shift) if start > base else 0
        hi = min(1 << bits, -(-(end - base) >> shift))
        if hi <= lo:
            return
        if hi - lo == 1:  # one entry: read it (cheaper than a numpy scan)
            found = [lo] if tbl.item(lo) else []
        else:
            found = (np.flatnonzero(tbl[lo:hi]) + lo).tolist()
        leaf_type = self._leaf_types[lvl]
        for i in found:
            pte = tbl.item(i)
            iova = base + (i << shift)
            if (pte & PTE_TYPE_MASK) == leaf_type:
                yield iova, 1 << shift, pte & ADDR_MASK, pte
            else:
                yield from self._leaves_in(lvl + 1, iova >> self._pshift[lvl + 1], start, end)

    def first_leaf(self, start: int, end: int) -> tuple[int, int, int, int] | None:
        """The lowest mapped leaf overlapping [start, end), or None.

        Descends directly while the range lies within one entry (the common small case),
        then scans the table where it spreads over several entries.
        """
        if end <= start or start >> self.cfg.ias:
            return None
        last = end - 1
        first = self.start_level
        if start >> self._pshift[LAST_LEVEL] == last >> self._pshift[LAST_LEVEL] and (
                self._reaches(LAST_LEVEL, start)):
            first = LAST_LEVEL  # one last-level table holds the whole range
        for lvl in range(first, ARM_LPAE_MAX_LEVELS):
            shift = self._shift[lvl]
            if start >> shift != last >> shift:
                return next(self._leaves_in(lvl, start >> self._pshift[lvl], start, end), None)
            tbl = self.tables[(lvl, start >> self._pshift[lvl])]
            pte = int(tbl[(start >> shift) & self._mask[lvl]])
            if pte == 0:
                return None
            if self._is_leaf(pte, lvl):
                base = start & ~((1 << shift) - 1)
                return base, 1 << shift, pte & ADDR_MASK, pte
        return None

    # ---- map ------------------------------------------------------------------------
    def map_pages(self, iova: int, paddr: int, pgsize: int, pgcount: int, prot: int,
                  ops: FlushOps | None = None) -> int:
        """Install ``pgcount`` leaves of ``pgsize``; returns bytes mapped (``map_pages``).

        An existing leaf in the way is ``-EEXIST``. A table where a block goes is torn
        down first (walk flush + free) as ``arm_lpae_init_pte`` does, but only if it maps
        nothing: iommu_lab refuses with EEXIST rather than silently drop live mappings.
        """
        if not pgsize & self.pgsize_bitmap:
            raise einval(f"page size {fmt_size(pgsize)} not in pgsize_bitmap "
                         f"{self.pgsize_bitmap:#x}")
        if (iova | paddr) & (pgsize - 1):  # the core only ever passes aligned chunks
            raise einval(f"iova {iova:#x} / paddr {paddr:#x} not aligned to the "
                         f"{fmt_size(pgsize)} page size")
        if (iova + pgsize * pgcount - 1) >> self.cfg.ias or (paddr + pgsize * pgcount - 1) >> self.cfg.oas:
            raise IommuError(ERANGE, f"iova {iova:#x}+{fmt_size(pgsize * pgcount)} or paddr "
                             f"{paddr:#x} beyond ias {self.cfg.ias} / oas {self.cfg.oas} bits")
        lvl = self.leaf_level(pgsize)
        bits = self.prot_to_pte(prot) | self._leaf_types[lvl]
        self.generation += 1
        for i in range(pgcount):
            try:
                self._install(iova + i * pgsize, paddr + i * pgsize, lvl, bits, ops)
            except IommuError as err:
                err.mapped = i * pgsize  # type: ignore[attr-defined]  # *mapped (L5.15+)
                raise
        return pgsize * pgcount

    def _install(self, iova: int, paddr: int, lvl: int, bits: int, ops: FlushOps | None) -> None:
        tbl = self.tables.get((lvl, iova >> self._pshift[lvl]))  # reachable: see _reaches
        if tbl is None:
            tbl = self._table_for(iova, lvl)
        idx = (iova >> self._shift[lvl]) & self._mask[lvl]
        pte = tbl.item(idx)
        if pte:
            if self._is_leaf(pte, lvl):
                raise IommuError(EEXIST, f"iova {iova:#x} is already mapped "
                                 f"({fmt_size(self.block_size(lvl))} leaf -> "
                                 f"{pte & ADDR_MASK:#x})")
            self._free_table_for_block(iova, lvl, ops)
        tbl[idx] = paddr | bits

    def _table_for(self, iova: int, lvl: int) -> np.ndarray:
        """The table at ``lvl`` covering ``iova``, allocating missing tables on the way."""
        tables, shift, mask, pshift = self.tables, self._shift, self._mask, self._pshift
        tbl = tables.get((lvl, iova >> pshift[lvl]))
        if tbl is not None:  # reachable (see _reaches): no block above, nothing to allocate
            return tbl
        for lv in range(self.start_level, lvl):
            tbl = tables[(lv, iova >> pshift[lv])]
            i = (iova >> shift[lv]) & mask[lv]
            pte = tbl.item(i)
            if pte and (pte & PTE_TYPE_MASK) == self._leaf_types[lv]:
                raise IommuError(EEXIST, f"iova {iova:#x} lies inside a "
                                 f"{fmt_size(self.block_size(lv))} block already mapped at "
                                 f"{iova & ~(self.block_size(lv) - 1):#x}")
            if pte == 0:
                tbl[i] = PTE_TYPE_TABLE | (len(self.tables) << 12)
                self._new_table(lv + 1, self._prefix(lv + 1, iova))
        return self.tables[(lvl, self._prefix(lvl, iova))]

    def _free_table_for_block(self, iova: int, lvl: int, ops: FlushOps | None) -> None:
        size = self.block_size(lvl)
        base = iova & ~(size - 1)
        found = self.first_leaf(base, base + size)
        if found is not None:
            raise IommuError(EEXIST, f"iova {found[0]:#x} is already mapped "
                             f"({fmt_size(found[1])} leaf -> {found[2]:#x})")
        if ops is not None:  # walk invalidation *before* the table is freed (L5.4, L6.18)
            ops.tlb_flush_walk(base, size, self.granule)
        self._free_subtables(lvl + 1, base)

    def _free_subtables(self, lvl: int, iova: int) -> int:
        """Drop the table at ``lvl`` covering ``iova`` and everything below; returns count."""
        tbl = self.tables.pop((lvl, self._prefix(lvl, iova)), None)
        if tbl is None:
            return 0
        freed = 1
        if lvl + 1 < ARM_LPAE_MAX_LEVELS:
            shift = self.lvl_shift(lvl)
            base = iova & ~((1 << (shift + self._bits(lvl))) - 1)
            for i in np.flatnonzero(tbl):
                pte = int(tbl[i])
                if not self._is_leaf(pte, lvl):
                    freed += self._free_subtables(lvl + 1, base + (int(i) << shift))
        return freed

    # ---- unmap ----------------------------------------------------------------------
    def unmap_pages(self, iova: int, pgsize: int, pgcount: int, gather: object = None,
                    ops: FlushOps | None = None) -> int:
        """Remove up to ``pgcount`` entries of ``pgsize``; returns bytes unmapped.

        Stops at the first hole. Leaf clears report ``tlb_add_page``; freed tables report
        ``tlb_flush_walk``; a block larger than ``pgsize`` is split (≤ v6.12) or refused.
        """
        if (iova + pgsize * pgcount - 1) >> self.cfg.ias:
            return 0  # WARN_ON(iaext) in arm_lpae_unmap_pages
        if pgsize not in self.leaf_sizes or iova & (pgsize - 1) or pgcount < 1:
            return 0  # WARN_ON(!pgsize || (pgsize & pgsize_bitmap) != pgsize || !pgcount)
        self.generation += 1
        if pgcount == 1:  # the usual call (one page per call before v5.15): no loop
            done = pgsize if self._unmap_one(iova, pgsize, gather, ops) == pgsize else 0
        else:
            done = 0
            for i in range(pgcount):
                got = self._unmap_one(iova + i * pgsize, pgsize, gather, ops)
                if got != pgsize:
                    break
                done += got
        if done and self.cfg.sync_on_unmap and ops is not None:
            ops.tlb_sync()  # ≤ v4.14: arm_lpae_unmap ends with io_pgtable_tlb_sync
        return done

    def _unmap_one(self, iova: int, size: int, gather: object, ops: FlushOps | None) -> int:
        """``__arm_lpae_unmap`` for one entry of ``size`` at ``iova``: bytes unmapped."""
        tables, shift, mask, pshift = self.tables, self._shift, self._mask, self._pshift
        first = self._level_of.get(size, self.start_level)
        if (first, iova >> pshift[first]) not in tables:  # not self._reaches(first, iova)
            first = self.start_level  # (when it does, every level above is a table pointer)
        for lvl in range(first, ARM_LPAE_MAX_LEVELS):
            tbl = tables[(lvl, iova >> pshift[lvl])]
            idx = (iova >> shift[lvl]) & mask[lvl]
            pte = tbl.item(idx)
            if pte == 0:
                return 0
            leaf = (pte & PTE_TYPE_MASK) == self._leaf_types[lvl]
            if size == 1 << shift[lvl]:
                tbl[idx] = 0
                if leaf:
                    if ops is not None and not getattr(gather, "queued", False):
                        ops.tlb_add_page(gather, iova, size)
                else:  # "Also flush any partial walks", then free (L5.4 __arm_lpae_unmap)
                    if ops is not None:
                        ops.tlb_flush_walk(iova, size, self.granule)
                    self._free_subtables(lvl + 1, iova)
                return size
            if leaf:
                if not self.cfg.split_blocks:
                    return 0  # v6.13+: "Unmap of a partial large IOPTE is not allowed"
                return self._split_blk_unmap(iova, size, lvl, pte, gather, ops)
        return 0

    def _split_blk_unmap(self, iova: int, size: int, lvl: int, pte: int, gather: object,
                         ops: FlushOps | None) -> int:
        """``arm_lpae_split_blk_unmap``: replace the block by a table without the hole."""
        blk = self.block_size(lvl)
        base = iova & ~(blk - 1)
        out = pte & ADDR_MASK
        attrs = pte & ~ADDR_MASK & ~PTE_TYPE_MASK
        self._fill_split(lvl + 1, base, out, attrs, iova, size)
        self.tables[(lvl, self._prefix(lvl, iova))][self._idx(lvl, iova)] = (
            PTE_TYPE_TABLE | (len(self.tables) << 12))
        if ops is not None and not getattr(gather, "queued", False):
            ops.tlb_add_page(gather, iova, size)
        return size

    def _fill_split(self, lvl: int, base: int, out: int, attrs: int, hole: int,
                    size: int) -> None:
        tbl = self._new_table(lvl, self._prefix(lvl, base))
        sub = self.block_size(lvl)
        n = len(tbl)
        tbl[:] = (np.uint64(out) + np.arange(n, dtype=np.uint64) * np.uint64(sub)) | np.uint64(
            attrs | self._leaf_type(lvl))
        j = (hole - base) // sub
        hole_base = base + j * sub
        if sub == size:
            tbl[j] = 0
        else:
            tbl[j] = PTE_TYPE_TABLE | (len(self.tables) << 12)
            self._fill_split(lvl + 1, hole_base, out + j * sub, attrs, hole, size)

    # ---- bulk paths for runs (the compact path of the engine) ------------------------
    def _group(self, iovas: np.ndarray, lvl: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Split ``iovas`` into (table prefix, positions, entry indexes) per leaf table."""
        shift, bits = self.lvl_shift(lvl), self._bits(lvl)
        prefixes = iovas >> np.uint64(shift + bits)
        idx = ((iovas >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
        cuts = np.flatnonzero(np.diff(prefixes)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [len(iovas)]))
        return [(int(prefixes[s]), np.arange(s, e), idx[s:e]) for s, e in zip(starts, ends)]

    def can_map_bulk(self, iovas: np.ndarray, pgsize: int) -> bool:
        """Would every ``pgsize`` leaf at sorted ``iovas`` go into an empty slot?"""
        lvl = self.leaf_level(pgsize)
        if len(iovas) and (int(iovas[-1]) + pgsize - 1) >> self.cfg.ias:
            return False  # past the IAS: map_pages would refuse with ERANGE
        for prefix, _, idx in self._group(iovas, lvl):
            base = prefix << (self.lvl_shift(lvl) + self._bits(lvl))
            if self._path_blocked(base, lvl):
                return False
            tbl = self.tables.get((lvl, prefix))
            if tbl is not None and tbl[idx].any():
                return False
        return True

    def can_unmap_bulk(self, iovas: np.ndarray, pgsize: int) -> bool:
        """Is every one of sorted ``iovas`` exactly a mapped ``pgsize`` leaf?"""
        lvl = self.leaf_level(pgsize)
        ltype = np.uint64(self._leaf_type(lvl))
        for prefix, _, idx in self._group(iovas, lvl):
            tbl = self.tables.get((lvl, prefix))
            if tbl is None:
                return False
            ptes = tbl[idx]
            if not ((ptes != 0) & ((ptes & np.uint64(PTE_TYPE_MASK)) == ltype)).all():
                return False
        return True

    def map_bulk(self, iovas: np.ndarray, paddrs: np.ndarray, pgsize: int, prot: int) -> bool:
        """Map sorted, aligned ``iovas`` -> ``paddrs`` as ``pgsize`` leaves in one go.

        Returns False (changing nothing) unless every target slot is empty and no block
        covers any of them: the caller then takes the step-by-step path for errors.
        """
        if not self.can_map_bulk(iovas, pgsize):
            return False
        self.generation += 1
        lvl = self.leaf_level(pgsize)
        groups = self._group(iovas, lvl)
        bits = np.uint64(self.prot_to_pte(prot) | self._leaf_type(lvl))
        for prefix, pos, idx in groups:
            base = prefix << (self.lvl_shift(lvl) + self._bits(lvl))
            tbl = self._table_for(base, lvl)
            tbl[idx] = paddrs[pos] | bits
        return True

    def _path_blocked(self, iova: int, lvl: int) -> bool:
        for lv in range(self.start_level, lvl):
            tbl = self.tables.get((lv, self._prefix(lv, iova)))
            if tbl is None:
                return False
            pte = int(tbl[self._idx(lv, iova)])
            if pte and self._is_leaf(pte, lv):
                return True
        return False

    def unmap_bulk(self, iovas: np.ndarray, pgsize: int) -> bool:
        """Clear sorted ``iovas`` that are all exactly ``pgsize`` leaves; else change nothing."""
        if not self.can_unmap_bulk(iovas, pgsize):
            return False
        self.generation += 1
        lvl = self.leaf_level(pgsize)
        for prefix, _, idx in self._group(iovas, lvl):
            self.tables[(lvl, prefix)][idx] = 0
        return True

    # ---- the op memo (iommu_lab.memo) ---------------------------------------------------
    def leaf_slots(self, iova: int, size: int, bitmap: int,
                   for_map: bool = False) -> LeafSlots | None:
        """The PTE slots a naturally aligned power-of-two region of ``size`` bytes at
        ``iova`` takes as leaves of the largest size in ``bitmap`` that fits it (the page
        size ``iommu_pgsize`` picks), if they lie in one table that exists (``for_map``:
        or in one a map would allocate, with the tables above it: ``missing``); else None."""
        if size & (size - 1) or iova & (size - 1):
            return None
        by_size = self._slot_geometry.get(bitmap)   # by int keys: no key tuple to make
        if by_size is None:
            by_size = self._slot_geometry[bitmap] = {}
        geom = by_size.get(size)
        if geom is None:
            geom = by_size[size] = self._geometry(size, bitmap)
        if not geom:
            return None
        leaf, n, pshift, shift, mask, lvl, ltype, steps = geom
        tbl = self.tables.get((lvl, iova >> pshift))
        idx = (iova >> shift) & mask
        missing = 0
        if tbl is None:
            missing = self.tables_missing(iova, lvl) if for_map else None
            if not missing:
                return None
        if idx + n > mask + 1:
            return None
        return LeafSlots(self, tbl, idx, n, leaf, ltype, iova, lvl, missing, steps)

    def tables_missing(self, iova: int, lvl: int) -> int | None:
        """How many tables a map of a leaf at ``lvl`` covering ``iova`` allocates on its
        way down (:meth:`_table_for`: every level below the first empty table entry);
        None if a block above is in the way (EEXIST)."""
        tables, shift, mask, pshift = self.tables, self._shift, self._mask, self._pshift
        for lv in range(self.start_level, lvl):
            pte = tables[(lv, iova >> pshift[lv])].item((iova >> shift[lv]) & mask[lv])
            if not pte:
                return lvl - lv
            if (pte & PTE_TYPE_MASK) == self._leaf_types[lv]:
                return None
        return 0

    def _geometry(self, size: int, bitmap: int) -> tuple[Any, ...]:
        """(leaf, count, table shift, entry shift, index mask, level, leaf type, the leaves'
        offsets ``i * leaf`` as PTE words, None if they span tables) of a ``size``-byte
        region, or () if no leaf size in ``bitmap`` fits it."""
        fits = [s for s in self.leaf_sizes if s <= size and s & bitmap]
        if size < self.granule or not fits:
            return ()
        leaf = fits[-1]
        lvl = self._level_of[leaf]
        n, mask = size // leaf, self._mask[lvl]
        # the offsets only where the slots fit in one table (else leaf_slots has none):
        # a region of many tables' worth would make a huge array for nothing
        steps = np.arange(n, dtype=np.uint64) * np.uint64(leaf) if n <= mask + 1 else None
        return (leaf, n, self._pshift[lvl], self._shift[lvl], mask, lvl,
                self._leaf_types[lvl], steps)

    def nbytes(self) -> int:
        """Bytes held by PTE arrays (8 per entry, as in the kernel) plus per-table overhead."""
        return sum(t.nbytes + 112 for t in self.tables.values()) + 100 * len(self.tables)


class LeafSlots:
    """``n`` consecutive PTE slots of one table that hold (or will hold) leaves of ``leaf``
    bytes: what a memoised map or unmap reads and writes (:mod:`iommu_lab.memo`). One is
    made per op (compiled, an extension type with C fields: ``arm.pxd``)."""

    def __init__(self, pgtable: IoPgtableArm, table: np.ndarray | None, idx: int, n: int,
                 leaf: int, ltype: int, iova: int, lvl: int, missing: int,
                 steps: np.ndarray) -> None:
        self.pgtable = pgtable
        self.table = table
        self.idx = idx
        self.n = n
        self.leaf = leaf
        self.ltype = ltype          # the PTE type bits of a leaf at this level
        self.iova = iova
        self.lvl = lvl
        self.missing = missing      # tables a map allocates first (then ``table`` is None)
        self.steps = steps          # i * leaf for each slot i, as PTE words (write)

    def _ptes(self) -> list[int]:
        return self.table[self.idx:self.idx + self.n].tolist()

    def empty(self) -> bool:
        """Are all the slots empty (a map installs leaves, allocates nothing, frees nothing)?"""
        if self.n == 1:
            return not self.table.item(self.idx)
        return not any(self._ptes())

    def free_for_map(self) -> tuple[int, ...] | None:
        """Can ``map_pages`` install leaves here? None if a slot holds a leaf or a table
        that still maps something (EEXIST); else which slots hold an empty table, which
        ``arm_lpae_init_pte`` frees after a walk flush (:meth:`write` frees them too)."""
        if self.table is None:     # a new table: every slot is empty
            return ()
        ptes = [self.table.item(self.idx)] if self.n == 1 else self._ptes()
        tables = []
        for j, pte in enumerate(ptes):
            if pte:
                base = self.iova + j * self.leaf
                if ((pte & PTE_TYPE_MASK) == self.ltype
                        or self.pgtable.first_leaf(base, base + self.leaf) is not None):
                    return None
                tables.append(j)
        return tuple(tables)

    def mapped(self) -> bool:
        """Is every slot a leaf at this level (an unmap clears them and nothing else)?"""
        ltype = self.ltype
        if self.n == 1:
            pte = self.table.item(self.idx)
            return pte != 0 and (pte & PTE_TYPE_MASK) == ltype
        for pte in self._ptes():    # a loop, not all() over a generator (one per unmap)
            if not pte or (pte & PTE_TYPE_MASK) != ltype:
                return False
        return True

    def _values(self, paddr: int, prot: int) -> list[int]:
        bits = self.pgtable.prot_to_pte(prot) | self.ltype
        return [(paddr + i * self.leaf) | bits for i in range(self.n)]

    def holds(self, paddr: int, prot: int) -> bool:
        """Do the slots map ``paddr`` onwards with ``prot``, as ``map_pages`` writes them?"""
        return self._ptes() == self._values(paddr, prot)

    def write(self, paddr: int, prot: int, tables: tuple[int, ...] = ()) -> None:
        """Install the leaves mapping ``paddr`` onwards with ``prot``, freeing the empty
        tables in the slots ``tables`` (:meth:`free_for_map`) first. ``paddr`` is aligned
        to the leaf and the leaves end below ``2**oas`` (the memo's key checks both), and
        the attribute bits lie outside the output address: so ``(paddr + i * leaf) | bits``
        (:meth:`_values`) is ``(paddr | bits) + i * leaf``, one array addition."""
        for j in tables:
            self.pgtable._free_subtables(self.lvl + 1, self.iova + j * self.leaf)
        table = self.table
        if table is None:          # allocated as map_pages allocates it (_table_for)
            table = self.pgtable._table_for(self.iova, self.lvl)
        if self.n == 1:
            table[self.idx] = (paddr | self.pgtable.prot_to_pte(prot)) | self.ltype
        else:
            np.add(self.steps, (paddr | self.pgtable.prot_to_pte(prot)) | self.ltype,
                   out=table[self.idx:self.idx + self.n])

    def clear(self) -> None:
        """Clear the leaves."""
        if self.n == 1:
            self.table[self.idx] = 0
        else:
            self.table[self.idx:self.idx + self.n] = 0


_READ_OR_WRITE = int(IOMMU_READ | IOMMU_WRITE)  # a plain int: IntFlag operators are slow


def check_prot(prot: int) -> None:
    """Reject prot bits the kernel does not define, and prot with neither READ nor WRITE."""
    if isinstance(prot, bool) or not isinstance(prot, int) or prot & ~PROT_ALL:
        raise einval(f"prot {prot!r} has bits outside IOMMU_READ|WRITE|CACHE|NOEXEC|MMIO|PRIV")
    if not prot & _READ_OR_WRITE:
        raise IommuError(EINVAL, f"prot {prot:#x} grants neither IOMMU_READ nor IOMMU_WRITE "
                         "(arm_lpae_map would silently map nothing: 'If no access, then "
                         "nothing to do')")

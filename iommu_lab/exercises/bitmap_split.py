"""Notebook 01, conceptual: which ``pgsize_bitmap`` splits a "2 MiB + a few 4 KiB" map how?

The same ``iommu_map`` gives different pages on different IOMMUs: ``iommu_pgsize``
(drivers/iommu/iommu.c, v4.13) takes the largest size in the domain's ``pgsize_bitmap`` that
fits what is left and divides both iova and paddr. Options pair a real bitmap with a split;
exactly one pairing is what the core does (computed with ``pgsize_chunks``).
"""

from __future__ import annotations

from ..core.era import pgsize_chunks
from ..drivers.amd_iommu import AMD_IOMMU_PGSIZES
from ..drivers.registry import LPAE_4K
from ..units import SZ_2M, SZ_4K, SZ_64K, fmt_size
from ._base import (
    Choice,
    Problem,
    check_choice,
    choices_explained,
    explainer,
    md_table,
    multiple_choice,
    rng_for,
    seeded,
    solve_choice,
)
from .pgsize_split import why_size

NAME = "bitmap_split"
NOTEBOOK = "01"
KIND = "conceptual"
SZ_1M, SZ_16M = 1 << 20, 1 << 24
BITMAPS: tuple[tuple[str, int], ...] = (
    ("4K, 2M, 1G (ARM LPAE, 4K granule: io-pgtable-arm)", LPAE_4K),
    ("4K, 64K, 1M, 16M (ARM short descriptor: io-pgtable-arm-v7s)",
     SZ_4K | SZ_64K | SZ_1M | SZ_16M),
    ("every power of two from 4K (AMD-Vi: AMD_IOMMU_PGSIZES)", AMD_IOMMU_PGSIZES),
    ("4K only", SZ_4K),
)


def split(bitmap: int, iova: int, paddr: int, size: int) -> dict[int, int]:
    """Page size -> pages, as ``iommu_map`` creates them (the core's rule)."""
    out: dict[int, int] = {}
    for c in pgsize_chunks(False, bitmap, iova, paddr, size):
        out[c.pgsize] = out.get(c.pgsize, 0) + c.calls
    return out


def naive(bitmap: int, size: int) -> dict[int, int]:
    """The split if alignment did not matter: largest fitting size first (a common slip)."""
    out: dict[int, int] = {}
    for b in range(63, -1, -1):
        pg = 1 << b
        if bitmap >> b & 1 and size >= pg:
            out[pg], size = size // pg, size % pg
    return out


def split_text(counts: dict[int, int]) -> str:
    """``1 × 2M + 3 × 4K (4 ->map calls)``."""
    parts = " + ".join(f"{n} × {fmt_size(pg)}" for pg, n in sorted(counts.items(), reverse=True))
    return f"{parts} ({sum(counts.values())} ->map calls)"


def walk_text(bitmap: int, iova: int, paddr: int, size: int) -> str:
    """The pieces in order with why each is not larger: ``3 × 4K (2M needs …), 1 × 2M``."""
    parts, left = [], size
    for c in pgsize_chunks(False, bitmap, iova, paddr, size):
        parts.append(f"{c.calls} × {fmt_size(c.pgsize)} at {c.iova:#x} "
                     f"({why_size(bitmap, c.iova, c.paddr, left, c.pgsize)})")
        left -= c.pgsize * c.calls
    return "; then ".join(parts)


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """2M + t pages, starting a pages before a 2M boundary; four bitmaps, one true pairing."""
    rng = rng_for(NAME, seed)
    tail = rng.randrange(1, 9)
    head = rng.randrange(0, tail + 1)
    iova = rng.randrange(1, 512) * SZ_2M - head * SZ_4K
    paddr = rng.randrange(512, 1024) * SZ_2M - head * SZ_4K
    if rng.randrange(4) == 3:
        paddr += SZ_4K                      # iova and paddr no longer congruent modulo 2M
    size = SZ_2M + tail * SZ_4K
    true = {bm: split(bm, iova, paddr, size) for _, bm in BITMAPS}
    right = rng.randrange(len(BITMAPS) - 1)   # "4K only" is never the answer: too easy
    choices, used = [], [true[BITMAPS[right][1]]]
    for i, (desc, bm) in enumerate(BITMAPS):
        if i == right:
            choices.append(Choice(f"with {desc}: {split_text(true[bm])}", True,
                                  "the core's walk: " + walk_text(bm, iova, paddr, size) + "."))
            continue
        pool = [true[other] for other in true if other != bm] + [
            naive(other, size) for _, other in BITMAPS] + [{SZ_4K: size // SZ_4K}]
        wrong = [c for c in pool if c != true[bm]]
        claimed = rng.choice([c for c in wrong if c not in used] or wrong)
        used.append(claimed)
        choices.append(Choice(f"with {desc}: {split_text(claimed)}", False,
                              f"with this bitmap `iommu_map` creates {split_text(true[bm])}: "
                              + walk_text(bm, iova, paddr, size) + "."))
    question = (f"A caller runs iommu_map(dom, iova={iova:#x}, paddr={paddr:#x}, "
                f"size={size:#x})   # 2M + {tail} x 4K\n"
                "on domains whose pgsize_bitmap differs. Exactly one of these statements is "
                "what the core really does. Which?")
    return multiple_choice(NAME, seed, rng, question, choices,
                           hint="at every step a page must fit what is left AND both iova "
                                "and paddr must be aligned to it; look at iova % 2M and "
                                "paddr % 2M first.",
                           context={"iova": iova, "paddr": paddr, "size": size})


solve = solve_choice     # the letter of the right option
check = check_choice


@explainer
def explain(problem: Problem) -> str:
    """Each option judged, and the real split for every bitmap (computed)."""
    p = problem.params
    rows = [{"pgsize_bitmap": f"{bm:#x}", "IOMMU": desc,
             "iommu_map creates": split_text(split(bm, p["iova"], p["paddr"], p["size"]))}
            for desc, bm in BITMAPS]
    return (f"iova % 2M = {p['iova'] % SZ_2M:#x}, paddr % 2M = {p['paddr'] % SZ_2M:#x}.\n\n"
            + choices_explained(problem) + "\n\nWhat `iommu_pgsize` gives on each bitmap:\n\n"
            + md_table(rows))

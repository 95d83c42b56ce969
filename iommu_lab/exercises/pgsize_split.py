"""Notebook 01: how ``iommu_map`` splits a range into page sizes (``iommu_pgsize``).

Rule (drivers/iommu/iommu.c, v4.13 ``iommu_pgsize``): take the largest supported page size
that fits in what is left *and* to which both ``iova`` and ``paddr`` are aligned.
"""

from __future__ import annotations

from typing import Any

from ..core.era import pgsize_chunks
from ..units import SZ_1G, SZ_2M, SZ_4K, fmt_size
from ._base import Problem, as_int, explainer, md_table, rng_for, run_check, seeded, size_key

NAME = "pgsize_split"
NOTEBOOK = "01"
KIND = "numeric"
BITMAP = SZ_4K | SZ_2M | SZ_1G


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """A range that starts a few 4K pages before a 2M boundary and ends a few after."""
    rng = rng_for(NAME, seed)
    head = rng.randrange(1, 16)            # 4K pages before the first 2M boundary
    blocks = rng.randrange(1, 4)           # whole 2M blocks
    tail = rng.randrange(0, 12)            # 4K pages after
    boundary = rng.randrange(1, 256) * SZ_2M
    iova = boundary - head * SZ_4K
    pbase = rng.randrange(512, 1024) * SZ_2M - head * SZ_4K
    misaligned = rng.randrange(4) == 3     # paddr not congruent to iova modulo 2M (1 in 4)
    paddr = pbase + (SZ_4K if misaligned else 0)
    size = head * SZ_4K + blocks * SZ_2M + tail * SZ_4K
    text = (f"A domain supports the page sizes 4K, 2M and 1G (pgsize_bitmap {BITMAP:#x}).\n"
            f"A caller runs iommu_map(dom, iova={iova:#x}, paddr={paddr:#x}, "
            f"size={size:#x})   # {fmt_size(size)}\n"
            "How many pages of each size does iommu_map() create?")
    return Problem(NAME, seed, text, {"iova": iova, "paddr": paddr, "size": size},
                   answer_format='a dict of page size -> count, e.g. {"4K": 3, "2M": 1}',
                   hint="at each step the page size must fit the remaining size AND divide "
                        "both iova and paddr; check iova % 2M and paddr % 2M.")


def solve(problem: Problem) -> dict[str, int]:
    """Walk the range with the kernel rule (``iommu_pgsize``), counting each size."""
    p = problem.params
    iova, paddr, size = p["iova"], p["paddr"], p["size"]
    out: dict[str, int] = {}
    for c in pgsize_chunks(False, BITMAP, iova, paddr, size):
        out[fmt_size(c.pgsize)] = out.get(fmt_size(c.pgsize), 0) + c.calls
    return out


def why_size(bitmap: int, iova: int, paddr: int, left: int, pgsize: int) -> str:
    """Why ``iommu_pgsize`` chose ``pgsize`` and not the next larger supported size."""
    larger = [1 << b for b in range(pgsize.bit_length(), 64) if bitmap >> b & 1]
    if not larger:
        return f"{fmt_size(pgsize)} is the largest supported size"
    big = larger[0]
    if big > left:
        return f"{fmt_size(big)} does not fit the {fmt_size(left)} left"
    why = (f"{fmt_size(big)} needs iova and paddr {fmt_size(big)}-aligned: iova % "
           f"{fmt_size(big)} = {iova % big:#x}, paddr % {fmt_size(big)} = {paddr % big:#x}")
    if (iova - paddr) % big:
        why += f" (they differ, so no {fmt_size(big)} page can start anywhere in this range)"
    return why


@explainer
def explain(problem: Problem) -> str:
    """The pieces ``iommu_pgsize`` picks, one row per run of equal pages, and why."""
    p = problem.params
    rows, left = [], p["size"]
    for c in pgsize_chunks(False, BITMAP, p["iova"], p["paddr"], p["size"]):
        rows.append({"iova": f"{c.iova:#x}", "paddr": f"{c.paddr:#x}",
                     "page size": fmt_size(c.pgsize), "pages (->map calls)": c.calls,
                     "why not larger": why_size(BITMAP, c.iova, c.paddr, left, c.pgsize)})
        left -= c.pgsize * c.calls
    counts = solve(problem)
    return ("At each step `iommu_pgsize()` (drivers/iommu/iommu.c, v4.13) takes the largest "
            "size in `pgsize_bitmap` that fits what is left **and** divides both the iova and "
            "the paddr. Walking the range with that rule:\n\n" + md_table(rows) +
            "\n\nCounting the pages of each size: " +
            ", ".join(f"{n} × {k}" for k, n in counts.items()) + ".")


def _normalize(answer: Any) -> dict[str, int]:
    if not isinstance(answer, dict):
        raise ValueError(f"expected a dict, got {type(answer).__name__}")
    out: dict[str, int] = {}
    for k, v in answer.items():
        n = as_int(v, f"count for {k!r}")
        if n:
            out[size_key(k)] = out.get(size_key(k), 0) + n
    return out


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "Each page size is one ->map call in the v4.13 core.")

"""Notebook 06: AMD-Vi's S-bit invalidation covers a naturally aligned power-of-two block.

v5.15 (Nadav Amit's series) on bare metal: ``amd_iommu_iotlb_sync`` →
``domain_flush_pages`` → one ``INVALIDATE_IOMMU_PAGES`` built by ``build_inv_address``:
for more than one page, ``msb_diff = fls64(end ^ address) - 1`` and the command covers the
naturally aligned block of ``2^(msb_diff+1)`` bytes holding both ends of the range (the
size is encoded by trailing ones above bit 12 with S = 1). Every cached translation in
that block is dropped — including the ones still mapped (``over_invalidated``), which the
device must walk the page table for again. hardware-invalidation.md §4.2.
"""

from __future__ import annotations

from typing import Any

from ..analysis.lessons import UnmapProbe, unmap_probe
from ..hw.commands import INV
from ..units import SZ_4K
from ._base import Problem, dict_of_ints, explainer, md_table, rng_for, run_check, seeded

NAME = "amd_superset"
NOTEBOOK = "06"
KIND = "numeric"
FIELDS = ("block_start", "block_pages", "over_invalidated")
STRATEGY = "amd-range"
WINDOW = 64          # pages mapped and cached (the model's IOTLB holds 64 entries)


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """64 cached pages; unmap a run of 2..24 of them somewhere inside."""
    rng = rng_for(NAME, seed)
    base = rng.randrange(1, 512) * WINDOW * SZ_4K
    pages = rng.randrange(2, 25)
    first = rng.randrange(0, WINDOW - pages + 1)
    iova = base + first * SZ_4K
    text = (f"AMD-Vi, Linux v5.15 ({STRATEGY}, bare metal: no NpCache). The domain maps 64 "
            f"pages at {base:#x} and the device has read all of them (the IOTLB holds all 64)."
            f"\nThe kernel unmaps {pages} pages at {iova:#x} with iommu_unmap "
            f"(pages {first}..{first + pages - 1} of the 64).\n"
            "The sync sends one INVALIDATE_IOMMU_PAGES with the S bit. Which block does it "
            "cover (block_start, block_pages) and how many still-mapped, cached "
            "translations does it drop (over_invalidated)?")
    return Problem(NAME, seed, text, {"base": base, "iova": iova, "pages": pages},
                   answer_format='a dict, e.g. {"block_start": "0x200000", '
                                 '"block_pages": 16, "over_invalidated": 9}',
                   hint="find the highest bit in which the first and the last byte of the "
                        "range differ: the block is the naturally aligned power of two just "
                        "above it that holds both ends.")


def run(problem: Problem) -> UnmapProbe:
    """Map and read 64 pages, unmap the run, read it again."""
    p = problem.params
    return unmap_probe(STRATEGY, p["iova"], p["pages"] * SZ_4K,
                       window=(p["base"], WINDOW * SZ_4K))


def solve(problem: Problem) -> dict[str, int]:
    """The block of the command the model queued; the valid entries it dropped."""
    probe = run(problem)
    cmd = next(c for c in probe.commands if c["kind"] == INV)
    start, end = cmd["covers"]
    return {"block_start": start, "block_pages": (end - start) // SZ_4K,
            "over_invalidated": probe.counters.get("over_invalidated", 0)}


@explainer
def explain(problem: Problem) -> str:
    """The two ends in binary, the block, the command, what the IOTLB lost."""
    p = problem.params
    probe = run(problem)
    first, last = p["iova"], p["iova"] + p["pages"] * SZ_4K - 1
    msb = (first ^ last).bit_length() - 1
    block = 1 << (msb + 1)
    rows = [{"command": c["command"], "fields": c["fields"]} for c in probe.commands]
    return (f"First byte {first:#x}, last byte {last:#x}; the highest bit in which they differ "
            f"is bit {msb} (`fls64(end ^ address) - 1`), so the block is 2^{msb + 1} bytes = "
            f"{block // SZ_4K} pages from {first & ~(block - 1):#x} (block_start = "
            f"{first & ~(block - 1)}), naturally aligned. The "
            "address field carries the size as trailing ones above bit 12, with S = 1:\n\n"
            + md_table(rows) + f"\n\nThe block holds {block // SZ_4K} cached pages; "
            f"{p['pages']} of them were unmapped (stale, rightly dropped), the other "
            f"{block // SZ_4K - p['pages']} were still mapped: `over_invalidated` = "
            f"{probe.counters.get('over_invalidated', 0)}. Each costs the device a page walk "
            "the next time it touches that page.")


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "One command and one COMPLETION_WAIT — paid for with refill misses.")

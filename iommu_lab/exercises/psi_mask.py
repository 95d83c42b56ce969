"""Notebook 06: the VT-d page-selective invalidation (PSI) of one strict unmap, Linux v5.10.

``iommu_flush_iotlb_psi`` (intel/iommu.c @v5.10.89): ``mask = ilog2(__roundup_pow_of_two
(pages))``; if the IOMMU has no PSI or ``mask > cap_max_amask_val`` it sends a
domain-selective flush (DSI) instead; otherwise one IOTLB descriptor with address mask
``AM = mask`` at the *unaligned* address ``pfn << 12``. The hardware ignores the low ``AM``
bits of the address, so it invalidates the naturally aligned block of 2^AM pages that
contains the first page — a range not aligned to its size can leave its tail out (fixed in
v5.18 by 59bf3557cf2f, "iommu/vt-d: Calculate mask for non-aligned flushes").
hardware-invalidation.md §3.4.
"""

from __future__ import annotations

from typing import Any

from ..analysis.lessons import UnmapProbe, unmap_probe
from ..hw.commands import INV_ALL
from ..units import SZ_4K
from ._base import Problem, dict_of_ints, explainer, md_table, rng_for, run_check, seeded

NAME = "psi_mask"
NOTEBOOK = "06"
KIND = "numeric"
FIELDS = ("am", "dsi", "stale")
STRATEGY = "vtd-psi"


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """A buffer of 1..40 pages, size-aligned or not, and a cap_max_amask_val."""
    rng = rng_for(NAME, seed)
    pages = rng.randrange(1, 41)
    block = 1 << (pages - 1).bit_length()
    base = rng.randrange(4, 200) * 0x10_0000
    offset = 0 if rng.random() < 0.4 else rng.randrange(0, 64 - pages + 1)
    iova = base + offset * SZ_4K
    cap = rng.choice((2, 3, 4, 5, 6, 9))
    text = (f"VT-d with queued invalidation, Linux v5.10 ({STRATEGY}), a strict DMA domain, "
            f"cap_max_amask_val = {cap}. A DMA buffer of {pages} page(s) is mapped at IOVA "
            f"{iova:#x} (the allocator would have aligned it to {block} pages; this one "
            f"{'is' if iova % (block * SZ_4K) == 0 else 'is not'}), and the device has read "
            "every page of it, so the IOTLB holds them all.\n"
            "The driver unmaps the buffer: intel_unmap → iommu_flush_iotlb_psi(pfn, pages). "
            "Then the device reads every page of the buffer again.\n"
            "What address mask does the driver compute (am = ilog2(roundup_pow_of_two(pages)))"
            ", does it fall back to a domain-selective flush (dsi: 1 or 0), and how many of "
            "the device's reads are stale (stale)?")
    return Problem(NAME, seed, text, {"iova": iova, "pages": pages, "cap": cap},
                   answer_format='a dict, e.g. {"am": 3, "dsi": 0, "stale": 1}',
                   hint="DSI if am > cap_max_amask_val (then nothing is stale). Otherwise the "
                        "PSI covers the 2^am pages of the naturally aligned block holding "
                        "the first page: pages of the buffer outside that block stay cached.")


def run(problem: Problem) -> UnmapProbe:
    """Map the buffer, warm the IOTLB, one strict DMA-API unmap, read again."""
    p = problem.params
    return unmap_probe(STRATEGY, p["iova"], p["pages"] * SZ_4K, type="DMA",
                       cap_max_amask_val=p["cap"])


def solve(problem: Problem) -> dict[str, int]:
    """The mask the driver computes, the descriptor the model sent, the stale reads."""
    probe = run(problem)
    am = (problem.params["pages"] - 1).bit_length()
    dsi = any(c["kind"] == INV_ALL for c in probe.commands)
    return {"am": am, "dsi": int(dsi), "stale": probe.after.count("stale")}


@explainer
def explain(problem: Problem) -> str:
    """The mask, the descriptor in the queue, the block it covers, each page's read."""
    p = problem.params
    probe = run(problem)
    am = (p["pages"] - 1).bit_length()
    block = SZ_4K << am
    start = p["iova"] & ~(block - 1)
    desc = [{"descriptor": c["command"], "fields": c["fields"]} for c in probe.commands]
    reads = [{"page": f"{p['iova'] + i * SZ_4K:#x}", "device read": r}
             for i, r in enumerate(probe.after)]
    if am > p["cap"]:
        cover = (f"am = {am} > cap_max_amask_val = {p['cap']}: the driver sends a DSI — "
                 "the whole domain is invalidated, nothing of the buffer stays cached.")
    else:
        cover = (f"am = {am} ≤ {p['cap']}: one PSI at address {p['iova']:#x} with AM = {am}; "
                 f"the hardware ignores the low {am} bits of the page number and invalidates "
                 f"{2 ** am} page(s) from {start:#x} to {start + block - 1:#x}. The buffer "
                 f"ends at {p['iova'] + p['pages'] * SZ_4K - 1:#x}.")
    ans = solve(problem)
    return (f"{p['pages']} page(s): roundup_pow_of_two({p['pages']}) = {2 ** am}, so "
            f"am = {am}. {cover}\n\n" + md_table(desc) + "\n\n" + md_table(reads) +
            f"\n\nSo am = {ans['am']}, dsi = {ans['dsi']}, and {ans['stale']} of the "
            f"{p['pages']} reads are stale.")


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "A stale read after a *strict* unmap is the bug 59bf3557cf2f fixed "
                     "in v5.18.")

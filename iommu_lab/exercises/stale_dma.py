"""Notebook 02: which device accesses hit a **stale** IOTLB entry (DMA into freed memory)?

The domain uses Joerg Roedel's 2017 API (``api="rfc-2017"``), where ``iommu_unmap`` does
not flush: until ``iommu_tlb_range_add`` + ``iommu_tlb_sync`` (or a flush-all), entries the
device already cached keep translating.
"""

from __future__ import annotations

from typing import Any

from ..core.iommu import iommu_iova_to_phys, iommu_map, iommu_unmap
from ..core.rfc2017 import iommu_tlb_range_add, iommu_tlb_sync
from ..drivers.registry import iommu_domain_alloc
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_4K
from ._base import (
    Problem,
    commands_text,
    explainer,
    list_of_words,
    md_table,
    new_slots,
    rng_for,
    run_check,
    seeded,
)

NAME = "stale_dma"
NOTEBOOK = "02"
KIND = "numeric"
RESULTS = ("hit", "walk", "fault", "stale")
STRATEGY = "smmuv3-v5.4"   # ->unmap only gathers, so nothing is invalidated before the sync


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """Map 8 pages, the device reads some, unmap a run (maybe sync), then three reads."""
    rng = rng_for(NAME, seed)
    base = rng.randrange(1, 4096) * 8 * SZ_4K
    npages = 8
    warm = sorted(rng.sample(range(npages), rng.randrange(2, 6)))
    first = rng.randrange(0, npages - 2)
    last = rng.randrange(first + 1, npages)
    synced = rng.random() < 0.25
    unmapped = set(range(first, last + 1))
    # make sure at least one question is "interesting" (cached and unmapped) when not synced
    pool = list(range(npages))
    rng.shuffle(pool)
    asks = pool[:3]
    hot = [p for p in warm if p in unmapped]
    if hot and not any(p in hot for p in asks):
        asks[0] = hot[0]
    rng.shuffle(asks)
    pg = lambda i: f"{base + i * SZ_4K:#x}"  # noqa: E731
    text = (f"On a domain using the 2017 API (iommu_unmap never flushes):\n"
            f"  1. iommu_map(dom, {base:#x}, paddr, 32K)        # pages 0..7\n"
            f"  2. the device reads pages {', '.join(map(str, warm))} "
            f"(IOTLB starts empty, holds 64 entries)\n"
            f"  3. iommu_unmap(dom, {pg(first)}, {(last - first + 1) * 4}K)   "
            f"# pages {first}..{last}\n"
            + ("  4. iommu_tlb_range_add(dom, same range); iommu_tlb_sync(dom)\n" if synced
               else "  4. (no sync yet)\n")
            + "  5. the device reads pages " + ", ".join(map(str, asks)) + ", in that order.\n"
            "What does each read in step 5 return: hit, walk, fault or stale?")
    return Problem(NAME, seed, text,
                   {"base": base, "npages": npages, "warm": warm, "first": first,
                    "last": last, "synced": synced, "asks": asks},
                   answer_format='a list of three strings, e.g. ["hit", "stale", "fault"]',
                   hint="cached + still mapped = hit; cached + unmapped + no sync = stale; "
                        "not cached: walk if mapped, fault if not.")


def replay(problem: Problem) -> tuple[Any, list[str]]:
    """Steps 1-4 on a simulated domain (the driver defers every TLBI to the sync), and what
    the device cached in step 2 and what step 4 issued."""
    p = problem.params
    dom = iommu_domain_alloc(STRATEGY, api="rfc-2017")
    base = p["base"]
    iommu_map(dom, base, 0x4000_0000, p["npages"] * SZ_4K, IOMMU_READ | IOMMU_WRITE)
    for i in p["warm"]:
        dom.dma_access(base + i * SZ_4K)
    start, size = base + p["first"] * SZ_4K, (p["last"] - p["first"] + 1) * SZ_4K
    iommu_unmap(dom, start, size)
    q = dom.driver.q
    since = q.state().prod
    notes = [f"step 3 (iommu_unmap) issued {commands_text(new_slots(q, since))}"]
    if p["synced"]:
        since = q.state().prod
        iommu_tlb_range_add(dom, start, size)
        iommu_tlb_sync(dom)
        notes.append(f"step 4 (range_add + sync) issued {commands_text(new_slots(q, since))}")
    return dom, notes


def solve(problem: Problem) -> list[str]:
    """Replay the steps on a simulated domain."""
    dom, _ = replay(problem)
    base = problem.params["base"]
    return [dom.dma_access(base + i * SZ_4K) for i in problem.params["asks"]]


@explainer
def explain(problem: Problem) -> str:
    """Each step-5 read: cached or not, mapped or not, and what the device got."""
    dom, notes = replay(problem)
    base = problem.params["base"]
    rows = []
    for i in problem.params["asks"]:
        iova = base + i * SZ_4K
        cached = [e for e in dom.iotlb_entries() if e.entry.iova <= iova < e.entry.iova
                  + e.entry.pgsize and not e.entry.negative]
        mapped = iommu_iova_to_phys(dom, iova) != 0
        rows.append({"read": f"page {i} ({iova:#x})",
                     "in the IOTLB": ("yes, stale" if cached and cached[0].stale
                                      else "yes" if cached else "no"),
                     "in the page table": "yes" if mapped else "no (unmapped)",
                     "result": dom.dma_access(iova)})
    return ("The device's IOTLB keeps every translation it used until an invalidation "
            "*completes*; the page table forgets an unmapped page at once. So: cached and "
            "still mapped → `hit`; cached but unmapped, no completed invalidation → `stale`; "
            "not cached → the walk decides (`walk` if mapped, `fault` if not), and a walk "
            "fills the IOTLB for later reads. The driver here is `smmuv3-v5.4` behind the "
            "2017 API (a hypothetical pairing): `->unmap` only records the range and the "
            "TLBIs are built at the sync.\n\n" + "\n".join(f"- {n}." for n in notes) +
            "\n\nStep 5, read by read (state just before each read):\n\n" + md_table(rows))


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, list_of_words(RESULTS), solve,
                     "A stale read is DMA into memory the OS already believes is free.")

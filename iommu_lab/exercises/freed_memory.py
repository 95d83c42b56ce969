"""Notebook 02, conceptual: which call sequence lets the device reach memory already unmapped?

The domain uses Joerg Roedel's 2017 API (``iommu_unmap`` never flushes) on a driver that
invalidates only what it is told at the sync (``rfc2017-ref``, the reference driver of the
2017 contract — not kernel code, as in notebook 02). An IOTLB entry the device used keeps
translating after the unmap until an invalidation *completes* (``iommu_tlb_sync``, ``iommu_flush_tlb_all``): in between, a
device access is **stale** — DMA into a page the kernel may already have freed and reused.
Each option is replayed on the model; exactly one has a stale access.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.iommu import iommu_map, iommu_unmap
from ..core.rfc2017 import (
    iommu_flush_tlb_all,
    iommu_tlb_range_add,
    iommu_tlb_sync,
    iommu_unmap_sync,
)
from ..drivers.registry import iommu_domain_alloc
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_4K
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

NAME = "freed_memory"
NOTEBOOK = "02"
KIND = "conceptual"
STRATEGY = "rfc2017-ref"
STALE = "stale"
Step = tuple[str, str]   # (what, buffer)

# what -> (how the step reads, the call on the domain)
STEPS: dict[str, tuple[str, Callable[[Any, int], Any]]] = {
    "read": ("the device reads {b}", lambda dom, iova: dom.dma_access(iova)),
    "unmap": ("iommu_unmap({b})", lambda dom, iova: iommu_unmap(dom, iova, SZ_4K)),
    "sync": ("iommu_tlb_range_add({b}); iommu_tlb_sync()",
             lambda dom, iova: (iommu_tlb_range_add(dom, iova, SZ_4K), iommu_tlb_sync(dom))),
    "flush_all": ("iommu_flush_tlb_all()", lambda dom, iova: iommu_flush_tlb_all(dom)),
    "unmap_sync": ("iommu_unmap_sync({b})", lambda dom, iova: iommu_unmap_sync(dom, iova, SZ_4K)),
}
# (sequence, why) — the sequences that reach unmapped memory, then those that cannot
UNSAFE: tuple[tuple[tuple[Step, ...], str], ...] = (
    ((("read", "A"), ("unmap", "A"), ("read", "A")),
     "A's translation was cached by the first read; iommu_unmap cleared the PTE but nothing "
     "invalidated the IOTLB, so the last read still reaches A's old page"),
    ((("read", "A"), ("unmap", "A"), ("read", "B"), ("read", "A")),
     "reading B changes nothing for A: A's cached entry survives the unmap because no sync "
     "came between the unmap and the read"),
    ((("read", "A"), ("unmap", "A"), ("read", "A"), ("sync", "A")),
     "the sync is right but too late: the read came between iommu_unmap and the sync, while "
     "A's entry was still cached"),
)
SAFE: tuple[tuple[tuple[Step, ...], str], ...] = (
    ((("read", "A"), ("unmap", "A"), ("sync", "A"), ("read", "A")),
     "the sync completed A's invalidation before the read, so the read walks the table and "
     "faults"),
    ((("read", "A"), ("unmap", "A"), ("flush_all", ""), ("read", "A")),
     "the flush-all dropped every cached entry of the domain before the read"),
    ((("unmap", "A"), ("read", "A")),
     "A was never cached: the read walks the page table, finds no mapping and faults"),
    ((("read", "A"), ("unmap_sync", "A"), ("read", "A")),
     "the wrapper unmaps, adds the range and syncs before it returns"),
    ((("read", "A"), ("unmap", "B"), ("read", "A")),
     "B was unmapped, not A: the read of A hits a translation that is still valid"),
    ((("read", "B"), ("unmap", "A"), ("read", "A")),
     "the device had cached B, not A: A's read walks the table and faults"),
)


def describe(steps: tuple[Step, ...]) -> str:
    """``the device reads A; iommu_unmap(A); …``."""
    return "; ".join(STEPS[what][0].format(b=b) for what, b in steps)


def replay(steps: tuple[Step, ...], iovas: dict[str, int]) -> list[str]:
    """Run the steps on a fresh domain (A and B mapped, IOTLB empty); the reads' results."""
    dom = iommu_domain_alloc(STRATEGY, api="rfc-2017")
    for i, iova in enumerate(iovas.values()):
        iommu_map(dom, iova, 0x4000_0000 + i * SZ_4K, SZ_4K, IOMMU_READ | IOMMU_WRITE)
    results = []
    for what, b in steps:
        out = STEPS[what][1](dom, iovas.get(b, 0))
        if what == "read":
            results.append(out)
    return results


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """One unsafe sequence and three safe ones, on two buffers at seeded IOVAs."""
    rng = rng_for(NAME, seed)
    a = rng.randrange(512, 1 << 20) * SZ_4K
    b = a + rng.choice((1, -1)) * rng.randrange(1, 512) * SZ_4K
    iovas = {"A": a, "B": b}
    picked = [(rng.choice(UNSAFE), True)] + [(s, False) for s in rng.sample(SAFE, 3)]
    choices = []
    for (steps, why), unsafe in picked:
        results = replay(steps, iovas)
        if (STALE in results) != unsafe:
            raise AssertionError(f"{NAME}: {describe(steps)} gave {results}")
        choices.append(Choice(describe(steps), unsafe,
                              f"the reads return {', '.join(results)}: {why}."))
    question = (f"A domain uses the 2017 API: iommu_unmap never flushes; the driver invalidates "
                f"only at iommu_tlb_sync / iommu_flush_tlb_all. Buffer A (iova {a:#x}) and "
                f"buffer B (iova {b:#x}) are mapped, one 4K page each; the IOTLB starts empty.\n"
                "In which sequence can the device reach memory that has already been unmapped "
                "(a stale IOTLB hit: DMA into a page the kernel may have freed)?")
    return multiple_choice(NAME, seed, rng, question, choices,
                           hint="a read is stale only if its buffer was cached before, has been "
                                "unmapped, and no sync or flush-all completed in between.",
                           context={"iovas": iovas})


solve = solve_choice     # the letter of the right option
check = check_choice


@explainer
def explain(problem: Problem) -> str:
    """Each sequence replayed on the model: what every read returned."""
    iovas = problem.params["iovas"]
    by_text = {describe(s): s for s, _ in UNSAFE + SAFE}
    rows = []
    for x, c in zip("abcdefgh", problem.params["choices"], strict=False):
        results = replay(by_text[c.text], iovas)
        rows.append({"option": f"({x})", "reads return": ", ".join(results),
                     "stale?": "yes" if STALE in results else "no"})
    return ("A read is `stale` when the IOTLB still holds a translation the page table no "
            "longer has: cached before, unmapped since, and no invalidation completed in "
            "between. Replaying each option on the model (`rfc2017-ref`, the reference driver "
            "of the 2017 contract, not kernel code):\n\n" + md_table(rows) + "\n\n" + choices_explained(problem))

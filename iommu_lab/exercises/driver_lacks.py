"""Notebook 03, conceptual: which information does the driver lack?

Four situations from the 2017 thread and its 2019 resolution, one per seed:

- ``unmap``: Will Deacon (LKML, 17 Aug 2017): SMMUv3 queues TLBIs inside ``->unmap``, which
  cannot know whether a range sync or one ``iommu_flush_tlb_all`` will follow — "we really
  need the information about the invalidation as part of the unmap call";
- ``range``: the 2017 interface taken literally — ``iotlb_sync`` knows the range only from
  ``iotlb_range_add``; forget it and nothing is invalidated;
- ``pgsize``: Will Deacon, 2019 ("[PATCH 01/13] iommu: Remove empty iommu_tlb_range_add()
  callback", Message-Id 20190814175634.21081-2-will@kernel.org): a range alone does not say
  the page size it was mapped with;
- ``table``: a freed page-table page needs a walk invalidation that completes before the
  page is freed (io-pgtable ``tlb_flush_walk``, kernel-api-history.md §1 item 6).

The explanation replays each situation on the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.iommu import iommu_map, iommu_unmap, iommu_unmap_fast
from ..core.rfc2017 import iommu_flush_tlb_all, iommu_tlb_range_add, iommu_tlb_sync
from ..drivers.registry import iommu_domain_alloc
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_2M, SZ_4K
from ._base import (
    Choice,
    Problem,
    check_choice,
    choices_explained,
    commands_text,
    counters,
    explainer,
    multiple_choice,
    new_slots,
    rng_for,
    seeded,
    solve_choice,
)

NAME = "driver_lacks"
NOTEBOOK = "03"
KIND = "conceptual"
RW = IOMMU_READ | IOMMU_WRITE
PADDR = 0x8000_0000

ASID = Choice("the domain's ASID", False,
              "the driver finds the ASID in the domain it is called for (its context "
              "descriptor); every TLBI it writes carries it")
PHYS = Choice("the physical pages the IOVAs mapped to", False,
              "the IOTLB is looked up by ASID and IOVA: an invalidation never names a physical "
              "address")


def situation(kind: str, n: int, iova: int) -> tuple[str, list[Choice], str]:
    """The question, its choices and a hint for one situation."""
    if kind == "unmap":
        return ((f"Will Deacon's SMMUv3 design queues one CMD_TLBI_NH_VA per page inside "
                 f"->unmap, so the SMMU works while the CPU unmaps more. On Joerg Roedel's "
                 f"2017 API a caller unmaps {n} pages at iova {iova:#x} with iommu_unmap, then "
                 f"calls iommu_flush_tlb_all. What did ->unmap not know when it queued its "
                 f"{n} TLBIs?"),
                [Choice("whether the caller would finish with a range sync or a flush-all",
                        True, "->unmap runs before the caller decides: after a range sync the "
                        "per-page TLBIs are needed, after a flush-all every one of them was "
                        "wasted work in the shared queue"),
                 Choice("which IOVA range was being unmapped", False,
                        "->unmap is called with the iova and size: that is how it could queue "
                        "one TLBI per page at all"), ASID, PHYS],
                "what happens after ->unmap returns?")
    if kind == "range":
        return ((f"The 2017 interface taken literally (a reference driver, not a merged one): "
                 f"iotlb_sync invalidates only the ranges iotlb_range_add recorded. A caller "
                 f"runs iommu_unmap_fast(dom, {iova:#x}, {n} x 4K), then iommu_tlb_sync(dom), "
                 f"but forgets iommu_tlb_range_add. What does the driver's iotlb_sync lack?"),
                [Choice("the IOVA range that was unmapped", True,
                        "only iommu_tlb_range_add hands it over, so the sync invalidates "
                        "nothing and cached entries stay stale; v5.4 made the range travel "
                        "with the unmap itself (struct iommu_iotlb_gather) so a caller cannot "
                        "forget it"),
                 Choice("whether the SMMU has executed the earlier commands", False,
                        "that is what the CMD_SYNC it issues establishes: the CPU waits for "
                        "it"), ASID, PHYS],
                "what does iommu_tlb_sync(dom) pass to the driver?")
    if kind == "pgsize":
        return ((f"In 2019 (v5.4) Will Deacon removed iotlb_range_add(domain, iova, size): "
                 f"no driver had implemented it. Take the range {iova:#x} + 2M. What did "
                 f"iotlb_range_add not tell a driver that builds one TLBI per page?"),
                [Choice("the page size the range was mapped with", True,
                        "the same 2M needs one TLBI as one 2M block and 512 as 4K pages (Will's "
                        "first reason; his second: the only state passed was the "
                        "shared domain, so batching per caller needed locking — the per-call "
                        "gather fixed both)"),
                 Choice("the IOVA range to invalidate", False,
                        "that is exactly what iotlb_range_add(domain, iova, size) passes"),
                 ASID, PHYS],
                "two mappings of the same range can need different commands; why?")
    return ((f"iommu_unmap(dom, {iova:#x}, 2M) removes {n} 4K pages that filled one "
             f"last-level table, so io-pgtable frees that table page; the IOMMU may cache "
             f"walks through it (a walk cache). What must reach the IOMMU, and complete, "
             f"inside ->unmap before the page is freed — which a later iommu_tlb_range_add + "
             f"iommu_tlb_sync of leaf ranges cannot provide?"),
            [Choice(f"a walk (Leaf=0) invalidation of the IOVA range the table covered, "
                    f"{iova:#x} + 2M", True,
                    "io-pgtable's tlb_flush_walk, synchronous: the page may be reused the "
                    "moment it is freed, and a walk cache still pointing at it would read "
                    "whatever the page holds next"),
             Choice("the physical address of the freed table page, so the IOMMU drops it",
                    False,
                    f"walk caches are looked up by ASID and IOVA like the IOTLB: the "
                    f"invalidation names the IOVA range the table translated, {iova:#x} + 2M"),
             Choice("nothing: the caller's later leaf TLBIs clear the walk cache too", False,
                    "leaf-only TLBIs (Leaf=1) may leave walk-cache entries, and a later sync "
                    "comes after the page was freed and perhaps reused"), ASID],
            "when is the table page freed, and when does the caller's sync come?")


KINDS = ("unmap", "range", "pgsize", "table")


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """One situation, its numbers seeded."""
    rng = rng_for(NAME, seed)
    kind = rng.choice(KINDS)
    n = 512 if kind == "table" else rng.randrange(4, 33)
    iova = rng.randrange(1, 1 << 10) * SZ_2M
    question, choices, hint = situation(kind, n, iova)
    return multiple_choice(NAME, seed, rng, question, choices, hint=hint,
                           context={"kind": kind, "pages": n, "iova": iova})


solve = solve_choice     # the letter of the right option
check = check_choice


# ---- the model's evidence ------------------------------------------------------------------
def written(dom: Any, fn: Callable[[], Any]) -> str:
    """The commands ``fn`` writes to the domain's queue."""
    since = dom.driver.q.state().prod
    fn()
    return commands_text(new_slots(dom.driver.q, since))


def evidence_unmap(n: int, iova: int) -> str:
    dom = iommu_domain_alloc("smmuv3-v4.15", api="rfc-2017")
    iommu_map(dom, iova, PADDR, n * SZ_4K, RW)
    unmap = written(dom, lambda: iommu_unmap(dom, iova, n * SZ_4K))
    flush = written(dom, lambda: iommu_flush_tlb_all(dom))
    return (f"On `smmuv3-v4.15` behind the 2017 API (hypothetical pairing): `iommu_unmap` "
            f"wrote {unmap}; `iommu_flush_tlb_all` then wrote {flush}. The model's counters: "
            + counters(dom.stats(), ("inv_cmds", "wasted_inv_cmds")) + ".")


def evidence_range(n: int, iova: int) -> str:
    out = []
    for told in (True, False):
        dom = iommu_domain_alloc("rfc2017-ref")
        iommu_map(dom, iova, PADDR, n * SZ_4K, RW)
        dom.dma_access(iova)
        iommu_unmap_fast(dom, iova, n * SZ_4K)

        def finish(d=dom, add=told) -> None:
            if add:
                iommu_tlb_range_add(d, iova, n * SZ_4K)
            iommu_tlb_sync(d)
        cmds = written(dom, finish)
        out.append(f"with `iommu_tlb_range_add` the sync writes {cmds}" if told else
                   f"without it the sync writes {cmds}")
        out[-1] += (f", and the device's next read of {iova:#x} (cached before) returns "
                    f"`{dom.dma_access(iova)}`")
    return ("In the model's reference driver of the 2017 contract (`rfc2017-ref`, not kernel "
            "code): " + "; ".join(out) + ". No merged driver depended on the call (AMD's "
            "was empty, SMMUv3 had none); v5.4 replaced it with the gather.")


def evidence_pgsize(n: int, iova: int) -> str:
    out = []
    for label, paddr in (("one 2M block", PADDR), ("512 4K pages", PADDR + SZ_4K)):
        dom = iommu_domain_alloc("smmuv3-v5.4")
        iommu_map(dom, iova, paddr, SZ_2M, RW)
        iommu_unmap(dom, iova, SZ_2M)
        out.append(f"mapped as {label} (paddr {paddr:#x}): `inv_cmds` = "
                   f"{dom.stats()['inv_cmds']:,}")
    return (f"The same range {iova:#x} + 2M unmapped on `smmuv3-v5.4`: " + "; ".join(out)
            + ".")


def evidence_table(n: int, iova: int) -> str:
    dom = iommu_domain_alloc("smmuv3-v5.4", api="rfc-2017")
    iommu_map(dom, iova, PADDR + SZ_4K, n * SZ_4K, RW)   # paddr not 2M-aligned: 4K pages
    q = dom.driver.q
    since = q.state().prod
    cmds = written(dom, lambda: iommu_unmap(dom, iova, n * SZ_4K))
    first = new_slots(q, since)[0].cmd.describe()
    return (f"On `smmuv3-v5.4` behind the 2017 API (no caller sync yet): the unmap itself "
            f"wrote {cmds} (the first: `{first}`); "
            + counters(dom.stats(), ("walk_flushes",)) + ".")


EVIDENCE: dict[str, Callable[[int, int], str]] = {
    "unmap": evidence_unmap, "range": evidence_range, "pgsize": evidence_pgsize,
    "table": evidence_table}


@explainer
def explain(problem: Problem) -> str:
    """Each option judged, then the situation replayed on the model."""
    p = problem.params
    return (choices_explained(problem) + "\n\n**What the model shows.** "
            + EVIDENCE[p["kind"]](p["pages"], p["iova"]))

"""Notebook 04: Will Deacon's objection in numbers — wasted TLBIs and needless syncs.

Caller (Joerg Roedel's 2017 API): map R adjacent regions with ``iommu_map_sync`` (map, then
range_add + sync), unmap them with ``iommu_unmap`` (no flush), then one
``iommu_flush_tlb_all``. Drivers:

- ``smmuv3-v4.15`` (early issue, Will's design): a ``CMD_TLBI_NH_VA`` per 4K page is queued
  inside ``->unmap``; the 2017 flush-all must then be ``CMD_TLBI_NH_ASID`` + ``CMD_SYNC``, so
  every early TLBI was **wasted**.
- ``smmuv3-v5.4`` (gather): ``->unmap`` only records the range; the flush-all discards it.

Either way the sync after *map* has nothing to complete: a **needless** CMD_SYNC.
"""

from __future__ import annotations

from typing import Any

from ..core.iommu import iommu_unmap
from ..core.rfc2017 import iommu_flush_tlb_all, iommu_map_sync
from ..drivers.registry import iommu_domain_alloc
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_4K
from ._base import (
    Problem,
    commands_text,
    counters,
    dict_of_ints,
    explainer,
    md_table,
    new_slots,
    rng_for,
    run_check,
    seeded,
)

NAME = "waste"
NOTEBOOK = "04"
KIND = "numeric"
FIELDS = ("inv_cmds", "wasted_inv_cmds", "needless_sync_cmds")
STYLES = {
    "smmuv3-v4.15": "early issue: ->unmap queues one CMD_TLBI_NH_VA per 4K page at once",
    "smmuv3-v5.4": "gather: ->unmap only records the range; TLBIs are built at sync time",
}
STRATEGIES = tuple(STYLES)


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """R regions of n pages each, one of the two SMMUv3 strategies."""
    rng = rng_for(NAME, seed)
    regions = rng.randrange(2, 7)
    pages = rng.randrange(1, 17)
    strategy = rng.choice(STRATEGIES)
    base = rng.randrange(1, 512) * 256 * SZ_4K
    style = STYLES[strategy]
    text = (f"Driver {strategy} ({style}), domain on the 2017 API. Starting at iova "
            f"{base:#x}, the caller\n"
            f"  1. maps {regions} adjacent regions of {pages} x 4K, each with iommu_map_sync "
            "(map + range_add + sync);\n"
            "  2. unmaps each region with iommu_unmap (no flush);\n"
            "  3. calls iommu_flush_tlb_all once (CMD_TLBI_NH_ASID + CMD_SYNC).\n"
            "How many invalidation commands are issued in total (inv_cmds), how many of them "
            "were made useless by the flush-all (wasted_inv_cmds), and how many CMD_SYNCs had "
            "nothing to wait for (needless_sync_cmds)?")
    return Problem(NAME, seed, text, {"regions": regions, "pages": pages,
                                      "strategy": strategy, "base": base},
                   answer_format='a dict, e.g. {"inv_cmds": 9, "wasted_inv_cmds": 8, '
                                 '"needless_sync_cmds": 3}',
                   hint="the NH_ASID counts as an invalidation; a TLBI issued before it and "
                        "not yet covered by a sync is wasted; a sync right after a map has "
                        "nothing pending.")


def replay(problem: Problem) -> tuple[dict[str, int], list[dict[str, str]]]:
    """Replay it on the simulator: the final counters and one row per step with the commands
    it wrote."""
    p = problem.params
    dom = iommu_domain_alloc(p["strategy"], api="rfc-2017")
    q = dom.driver.q
    size = p["pages"] * SZ_4K
    starts = [p["base"] + r * size for r in range(p["regions"])]
    steps = (("1. iommu_map_sync × " + str(len(starts)),
              lambda: [iommu_map_sync(dom, at, at + 0x4000_0000, size,
                                      IOMMU_READ | IOMMU_WRITE) for at in starts]),
             ("2. iommu_unmap × " + str(len(starts)),
              lambda: [iommu_unmap(dom, at, size) for at in starts]),
             ("3. iommu_flush_tlb_all", lambda: iommu_flush_tlb_all(dom)))
    rows = []
    for label, fn in steps:
        since = q.state().prod
        fn()
        rows.append({"step": label, "commands written": commands_text(new_slots(q, since))})
    return dom.stats(), rows


def solve(problem: Problem) -> dict[str, int]:
    """Replay it on the simulator."""
    st, _ = replay(problem)
    return {k: st[k] for k in FIELDS}


@explainer
def explain(problem: Problem) -> str:
    """The commands of each step, and which of them the counters call wasted or needless."""
    st, rows = replay(problem)
    p = problem.params
    return (f"Driver `{p['strategy']}`: {STYLES[p['strategy']]}. Step by step, what the "
            "caller's calls wrote to the command queue:\n\n" + md_table(rows) +
            "\n\nA TLBI is **wasted** when an invalidate-all (`CMD_TLBI_NH_ASID`) follows it "
            "before any `CMD_SYNC` has covered it: the NH_ASID drops everything anyway. A "
            "`CMD_SYNC` is **needless** when no invalidation is pending before it (each sync "
            "after a *map*). The model's counters: "
            + counters(st, ("inv_cmds", "inv_all_cmds", "sync_cmds") + FIELDS[1:]) + ".")


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "This is why Will wanted the invalidation information as part of the "
                     "unmap call (and why v5.4 added struct iommu_iotlb_gather).")

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
from ._base import Problem, dict_of_ints, rng_for, run_check

NAME = "waste"
FIELDS = ("inv_cmds", "wasted_inv_cmds", "needless_sync_cmds")
STYLES = {
    "smmuv3-v4.15": "early issue: ->unmap queues one CMD_TLBI_NH_VA per 4K page at once",
    "smmuv3-v5.4": "gather: ->unmap only records the range; TLBIs are built at sync time",
}
STRATEGIES = tuple(STYLES)


def make_problem(seed: int) -> Problem:
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


def solve(problem: Problem) -> dict[str, int]:
    """Replay it on the simulator."""
    p = problem.params
    dom = iommu_domain_alloc(p["strategy"], api="rfc-2017")
    size = p["pages"] * SZ_4K
    starts = [p["base"] + r * size for r in range(p["regions"])]
    for at in starts:
        iommu_map_sync(dom, at, at + 0x4000_0000, size, IOMMU_READ | IOMMU_WRITE)
    for at in starts:
        iommu_unmap(dom, at, size)
    iommu_flush_tlb_all(dom)
    st = dom.stats()
    return {k: st[k] for k in FIELDS}


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "This is why Will wanted the invalidation information as part of the "
                     "unmap call (and why v5.4 added struct iommu_iotlb_gather).")

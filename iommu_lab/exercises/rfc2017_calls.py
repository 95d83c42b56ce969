"""Notebook 03: what Joerg Roedel's 2017 calls issue to the hardware.

Domain with ``api="rfc-2017"``: ``iommu_unmap`` never flushes; the caller then uses
``iommu_tlb_range_add`` + ``iommu_tlb_sync`` (flush the queued ranges), one
``iommu_flush_tlb_all`` (drop the whole domain), or the ``iommu_unmap_sync`` wrapper
(unmap + range_add + sync per call). The driver here defers everything to the sync, like
SMMUv3 from v5.4: one ``CMD_TLBI_NH_VA`` per 4K page of the gathered range, then one
``CMD_SYNC``; a flush-all is ``CMD_TLBI_NH_ASID`` + ``CMD_SYNC``.
"""

from __future__ import annotations

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

NAME = "rfc2017_calls"
NOTEBOOK = "03"
KIND = "numeric"
FIELDS = ("inv_cmds", "sync_cmds")
MODES = {
    "range_add+sync": "iommu_unmap each region, then iommu_tlb_range_add for each region and "
                      "ONE iommu_tlb_sync",
    "flush_all": "iommu_unmap each region, then ONE iommu_flush_tlb_all",
    "unmap_sync": "iommu_unmap_sync for each region (the proposed wrapper)",
}


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """2–4 adjacent regions of 1–16 pages and one of the three caller styles."""
    rng = rng_for(NAME, seed)
    sizes = [rng.randrange(1, 17) for _ in range(rng.randrange(2, 5))]
    mode = rng.choice(list(MODES))
    base = rng.randrange(1, 1024) * 64 * SZ_4K
    regions, at = [], base
    for n in sizes:
        regions.append((at, n))
        at += n * SZ_4K
    listing = "\n".join(f"  region {i + 1}: iova {a:#x}, {n} x 4K" for i, (a, n)
                        in enumerate(regions))
    text = ("Adjacent regions are mapped on a domain using the 2017 API:\n" + listing +
            f"\nThe caller tears them down like this: {MODES[mode]}.\n"
            "The driver builds its invalidations at sync time (one CMD_TLBI_NH_VA per 4K page "
            "of everything unmapped since the last sync, then CMD_SYNC); a flush-all is "
            "CMD_TLBI_NH_ASID + CMD_SYNC.\n"
            "How many invalidation commands (inv_cmds) and CMD_SYNCs (sync_cmds) are issued "
            "during the teardown?")
    return Problem(NAME, seed, text, {"regions": regions, "mode": mode},
                   answer_format='a dict, e.g. {"inv_cmds": 12, "sync_cmds": 1}',
                   hint="count syncs first: how many times does the caller sync? Each sync "
                        "invalidates what was unmapped since the previous one.")


def replay(problem: Problem) -> tuple[dict[str, int], list[dict[str, str]]]:
    """Replay it on smmuv3-v5.4 with ``api="rfc-2017"``: the counters the teardown moved and
    one row per call with the commands it wrote."""
    p = problem.params
    dom = iommu_domain_alloc("smmuv3-v5.4", api="rfc-2017")
    for at, n in p["regions"]:
        iommu_map(dom, at, at + 0x4000_0000, n * SZ_4K, IOMMU_READ | IOMMU_WRITE)
    before = dom.stats()
    rows: list[dict[str, str]] = []

    def call(text: str, fn: Any, *args: Any) -> None:
        since = dom.driver.q.state().prod
        fn(dom, *args)
        rows.append({"call": text, "commands": commands_text(new_slots(dom.driver.q, since))})

    mode = p["mode"]
    for at, n in p["regions"]:
        if mode == "unmap_sync":
            call(f"iommu_unmap_sync({at:#x}, {n} x 4K)", iommu_unmap_sync, at, n * SZ_4K)
        else:
            call(f"iommu_unmap({at:#x}, {n} x 4K)", iommu_unmap, at, n * SZ_4K)
    if mode == "range_add+sync":
        for at, n in p["regions"]:
            call(f"iommu_tlb_range_add({at:#x}, {n} x 4K)", iommu_tlb_range_add, at, n * SZ_4K)
        call("iommu_tlb_sync()", iommu_tlb_sync)
    elif mode == "flush_all":
        call("iommu_flush_tlb_all()", iommu_flush_tlb_all)
    after = dom.stats()
    return {k: after[k] - before.get(k, 0) for k in after}, rows


def solve(problem: Problem) -> dict[str, int]:
    """Replay it on smmuv3-v5.4 with ``api="rfc-2017"``."""
    delta, _ = replay(problem)
    return {k: delta[k] for k in FIELDS}


@explainer
def explain(problem: Problem) -> str:
    """Every call of the teardown and the commands it wrote to the queue."""
    delta, rows = replay(problem)
    return ("The driver (`smmuv3-v5.4` behind the 2017 API, a hypothetical pairing) only "
            "records ranges in `->unmap`; each sync turns everything recorded since the "
            "previous sync into one `CMD_TLBI_NH_VA` per 4K page and one `CMD_SYNC`. "
            "Call by call:\n\n" + md_table(rows) +
            "\n\nIn all: " + counters(delta, FIELDS) + ".")


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve)

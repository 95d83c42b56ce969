"""Notebook 02: the price of flushing inside every unmap (SMMUv3, Linux v4.14).

In v4.14 ``iommu_unmap`` calls the driver once per page-size piece (``iommu_pgsize``);
io-pgtable issues one ``CMD_TLBI_NH_VA`` for the piece (one per granule; a 2M block is one
granule of its own size) and then ``CMD_SYNC`` and waits — each command through its own
``arm_smmu_cmdq_issue_cmd`` (one doorbell each). hardware-invalidation.md §1.4.
"""

from __future__ import annotations

from typing import Any

from ..core.era import pgsize_chunks
from ..core.iommu import iommu_map, iommu_unmap
from ..drivers.registry import iommu_domain_alloc
from ..hw.commands import SYNC
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_2M, SZ_4K, fmt_size
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

NAME = "flush_count"
NOTEBOOK = "02"
KIND = "numeric"
FIELDS = ("inv_cmds", "sync_cmds", "doorbells")
STRATEGY = "smmuv3-v4.14"


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """A region of 4K pages, 2M blocks and 4K pages, unmapped with one iommu_unmap."""
    rng = rng_for(NAME, seed)
    head, blocks, tail = rng.randrange(0, 20), rng.randrange(0, 4), rng.randrange(0, 20)
    if head + blocks + tail == 0:
        blocks = 1
    iova = rng.randrange(1, 128) * SZ_2M - head * SZ_4K
    size = head * SZ_4K + blocks * SZ_2M + tail * SZ_4K
    text = (f"A domain on {STRATEGY} (Linux v4.14: flush inside every unmap) maps\n"
            f"  iommu_map(dom, iova={iova:#x}, paddr=iova + 1G, size={size:#x})   "
            f"# {fmt_size(size)}\n"
            f"and then unmaps it all with ONE call: iommu_unmap(dom, {iova:#x}, {size:#x}).\n"
            "How many invalidation commands (inv_cmds), CMD_SYNCs (sync_cmds) and doorbells "
            "does that iommu_unmap issue?")
    return Problem(NAME, seed, text, {"iova": iova, "size": size},
                   answer_format='a dict, e.g. {"inv_cmds": 5, "sync_cmds": 5, "doorbells": 10}',
                   hint="first split the range into pieces with iommu_pgsize; in v4.14 each "
                        "piece costs one TLBI and one CMD_SYNC, and every command rings the "
                        "doorbell.")


def run(problem: Problem) -> tuple[Any, dict[str, int], list[Any]]:
    """Map, then one iommu_unmap: the domain, the counters it moved, the commands it wrote."""
    p = problem.params
    dom = iommu_domain_alloc(STRATEGY)
    iommu_map(dom, p["iova"], p["iova"] + 0x4000_0000, p["size"], IOMMU_READ | IOMMU_WRITE)
    before, since = dom.stats(), dom.driver.q.state().prod
    iommu_unmap(dom, p["iova"], p["size"])
    after = dom.stats()
    return dom, {k: after[k] - before.get(k, 0) for k in after}, new_slots(dom.driver.q, since)


def solve(problem: Problem) -> dict[str, int]:
    """Run it on the simulator and read the counters."""
    _, delta, _ = run(problem)
    return {k: delta[k] for k in FIELDS}


@explainer
def explain(problem: Problem) -> str:
    """The pieces of the unmap, the commands of each ->unmap call, the counters."""
    p = problem.params
    dom, delta, slots = run(problem)
    calls: list[list[Any]] = [[]]
    for s in slots:                       # one ->unmap call ends with its CMD_SYNC
        calls[-1].append(s)
        if s.cmd.kind == SYNC:
            calls.append([])
    calls = [c for c in calls if c]
    rows, k = [], 0
    for c in pgsize_chunks(False, dom.pgsize_bitmap, p["iova"], p["iova"] + 0x4000_0000,
                           p["size"]):
        rows.append({"pieces": f"{c.calls} × {fmt_size(c.pgsize)} from {c.iova:#x}",
                     "commands of each piece's ->unmap": commands_text(calls[k])})
        k += c.calls
    return ("`iommu_unmap` splits the range with `iommu_pgsize` (as `iommu_map` did) and "
            "calls the driver once per piece; in v4.14 each `->unmap` invalidates its piece "
            "(one `CMD_TLBI_NH_VA` per granule: a 2M block is one) and then issues a "
            "`CMD_SYNC` and waits, each command through `arm_smmu_cmdq_issue_cmd` with its "
            "own doorbell.\n\n" + md_table(rows) +
            f"\n\n{len(calls)} `->unmap` calls in all. The counters moved by the unmap: "
            + counters(delta, FIELDS) + ".")


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "Multiply by a whole guest's worth of pages and you get Joerg's "
                     "'thousands of unnecessary TLB flushes'.")

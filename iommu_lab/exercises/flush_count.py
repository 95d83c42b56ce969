"""Notebook 02: the price of flushing inside every unmap (SMMUv3, Linux v4.14).

In v4.14 ``iommu_unmap`` calls the driver once per page-size piece (``iommu_pgsize``);
io-pgtable issues one ``CMD_TLBI_NH_VA`` for the piece (one per granule; a 2M block is one
granule of its own size) and then ``CMD_SYNC`` and waits — each command through its own
``arm_smmu_cmdq_issue_cmd`` (one doorbell each). hardware-invalidation.md §1.4.
"""

from __future__ import annotations

from typing import Any

from ..core.iommu import iommu_map, iommu_unmap
from ..drivers.registry import iommu_domain_alloc
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_2M, SZ_4K, fmt_size
from ._base import Problem, dict_of_ints, rng_for, run_check

NAME = "flush_count"
FIELDS = ("inv_cmds", "sync_cmds", "doorbells")
STRATEGY = "smmuv3-v4.14"


def make_problem(seed: int) -> Problem:
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


def solve(problem: Problem) -> dict[str, int]:
    """Run it on the simulator and read the counters."""
    p = problem.params
    dom = iommu_domain_alloc(STRATEGY)
    iommu_map(dom, p["iova"], p["iova"] + 0x4000_0000, p["size"], IOMMU_READ | IOMMU_WRITE)
    before = dom.stats()
    iommu_unmap(dom, p["iova"], p["size"])
    after = dom.stats()
    return {k: after[k] - before[k] for k in FIELDS}


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "Multiply by a whole guest's worth of pages and you get Joerg's "
                     "'thousands of unnecessary TLB flushes'.")

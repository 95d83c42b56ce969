"""Notebook 01: what ``iommu_iova_to_phys`` returns (0 when nothing is mapped).

The physical address is the leaf's output address plus the offset of the IOVA inside the
leaf (``arm_lpae_iova_to_phys``): for a 2M block, the low 21 bits carry through.
"""

from __future__ import annotations

from typing import Any

from ..core.iommu import iommu_iova_to_phys, iommu_map
from ..drivers.registry import iommu_domain_alloc
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_2M, SZ_4K, fmt_size
from ._base import Problem, as_int, explainer, md_table, rng_for, run_check, seeded

NAME = "iova_to_phys"
NOTEBOOK = "01"
KIND = "numeric"
HEX_ANSWER = True


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """Two mappings (a 2M block, a run of 4K pages) and three IOVAs to translate."""
    rng = rng_for(NAME, seed)
    blk_iova = rng.randrange(1, 64) * SZ_2M
    blk_pa = rng.randrange(256, 1024) * SZ_2M
    pages = rng.randrange(2, 9)
    run_iova = blk_iova + rng.randrange(2, 8) * SZ_2M + rng.randrange(0, 256) * SZ_4K
    run_pa = rng.randrange(1 << 18, 1 << 19) * SZ_4K
    q_blk = blk_iova + rng.randrange(0, SZ_2M // 8) * 8
    q_run = run_iova + rng.randrange(0, pages * SZ_4K // 8) * 8
    q_hole = run_iova + pages * SZ_4K + rng.randrange(0, SZ_4K // 8) * 8
    queries = [q_blk, q_run, q_hole]
    rng.shuffle(queries)
    maps = [(blk_iova, blk_pa, SZ_2M), (run_iova, run_pa, pages * SZ_4K)]
    text = ("Two mappings exist in a domain (4K/2M/1G pages):\n"
            f"  iommu_map(dom, iova={blk_iova:#x}, paddr={blk_pa:#x}, size=2M)   # one 2M block\n"
            f"  iommu_map(dom, iova={run_iova:#x}, paddr={run_pa:#x}, size={pages * SZ_4K:#x})"
            f"   # {pages} 4K pages\n"
            "What does iommu_iova_to_phys(dom, iova) return for each of these IOVAs?\n  "
            + ", ".join(f"{q:#x}" for q in queries))
    return Problem(NAME, seed, text, {"maps": maps, "queries": queries},
                   answer_format="a list of three addresses (ints or hex strings), 0 where "
                                 "nothing is mapped, e.g. [0x40001234, 0, 0x80000010]",
                   hint="paddr = leaf paddr + (iova - leaf iova); an IOVA past the last "
                        "mapped byte translates to 0.")


def domain(problem: Problem) -> Any:
    """A domain holding the problem's two mappings."""
    dom = iommu_domain_alloc("smmuv3-v5.4")
    for iova, pa, size in problem.params["maps"]:
        iommu_map(dom, iova, pa, size, IOMMU_READ | IOMMU_WRITE)
    return dom


def solve(problem: Problem) -> list[int]:
    """Build the domain and ask it."""
    dom = domain(problem)
    return [iommu_iova_to_phys(dom, q) for q in problem.params["queries"]]


@explainer
def explain(problem: Problem) -> str:
    """Each IOVA's table walk: the leaf it ends at, the offset inside it, the result."""
    dom = domain(problem)
    rows = []
    for q in problem.params["queries"]:
        w = dom.walk(q)
        if not w.present:
            rows.append({"iova": f"{q:#x}", "leaf": f"none (walk read {len(w.tables)} tables)",
                         "offset in leaf": "—", "iommu_iova_to_phys": "0 (not mapped)"})
            continue
        rows.append({"iova": f"{q:#x}",
                     "leaf": f"{fmt_size(w.pgsize)} at iova {w.iova:#x} → paddr {w.paddr:#x}",
                     "offset in leaf": f"{q - w.iova:#x}",
                     "iommu_iova_to_phys": f"{iommu_iova_to_phys(dom, q):#x}"})
    return ("The walk (io-pgtable-arm `arm_lpae_iova_to_phys`) ends at a leaf — a 4K page or "
            "a 2M block — and the low bits of the IOVA carry through as the offset inside it: "
            "paddr = leaf paddr + (iova − leaf iova). No leaf: 0.\n\n" + md_table(rows))


def _normalize(answer: Any) -> list[int]:
    if not isinstance(answer, list | tuple):
        raise ValueError(f"expected a list, got {type(answer).__name__}")
    return [as_int(v, f"item {i + 1}") for i, v in enumerate(answer)]


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve)

"""Notebook 08: find the crossover — from which SMMU TLBI cost does early issue (v4.15) beat
the gather (v5.4)?

One region of ``pages`` 4K pages is mapped, then ``iommu_unmap_fast`` + ``iommu_iotlb_sync``.
smmuv3-v4.15 queues each TLBI inside ``->unmap`` with its own doorbell, so the SMMU works
while the CPU still unmaps (Will Deacon's overlap, 2017); smmuv3-v5.4 only gathers and
issues the TLBIs at the sync, 64 per doorbell (arm-smmu-v3.c @v4.15, @v5.4; notebook 04).
Which finishes first depends on two assumed costs: the doorbell (``mmio_write_ns``) and the
SMMU's time per TLBI (``hw_tlbi_ns``). Counts do not change; the winner does.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..analysis.session import Session
from ..inputs.ops import Op
from ._base import Problem, as_int, explainer, md_table, rng_for, run_check, seeded

NAME = "crossover_tlbi"
NOTEBOOK = "08"
KIND = "numeric"
EARLY, GATHER = "smmuv3-v4.15", "smmuv3-v5.4"
STEP, TOP = 10, 3000          # the answer is a multiple of STEP ns, at most TOP
PAGES = (8, 12, 16, 24, 32, 48, 64)
DOORBELL_NS = (40, 60, 80, 100, 150, 200, 250, 300)
IOVA, PADDR = 0x4000_0000, 0x8000_1000     # not 2M-congruent: 4K pages only


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """Pages and doorbell cost; the rest of the costs are the model's defaults."""
    rng = rng_for(NAME, seed)
    pages, doorbell = rng.choice(PAGES), rng.choice(DOORBELL_NS)
    text = (f"Map {pages} contiguous 4K pages (one iommu_map), then iommu_unmap_fast of all "
            f"{pages} and one iommu_iotlb_sync, on {EARLY} (TLBIs issued inside ->unmap, a "
            f"doorbell each) and on {GATHER} (TLBIs built at the sync, 64 per doorbell).\n"
            f"Costs: a doorbell (mmio_write_ns) takes {doorbell} ns; every other cost is the "
            "model's default.\n"
            f"From which hw_tlbi_ns (the SMMU's time per TLBI; a multiple of {STEP} ns) does "
            f"{EARLY} finish (end_ns) before {GATHER}?")
    return Problem(NAME, seed, text, {"pages": pages, "doorbell_ns": doorbell},
                   answer_format=f'a dict, e.g. {{"hw_tlbi_ns": 230}} (a multiple of {STEP} '
                                 'ns; a plain number is accepted too)',
                   hint="sweep hw_tlbi_ns with il.sweep(crossover_tlbi.workload(p1), ...) and "
                        "find the first value where the early-issue driver wins.")


def workload(problem: Problem) -> list[Op]:
    """The ops: map, ``unmap_fast``, ``sync`` (run them under the caller ``unmap-each``:
    explicit ``unmap_fast`` / ``sync`` ops pass through unchanged)."""
    size = problem.params["pages"] * 0x1000
    return [Op("map", IOVA, size, PADDR), Op("unmap_fast", IOVA, size), Op("sync")]


def end_ns(problem: Problem, strategy: str, tlbi_ns: int) -> int:
    """When the CPU and the SMMU are both done, on ``strategy`` with that TLBI cost."""
    return _end_ns(problem.params["pages"], problem.params["doorbell_ns"], strategy, tlbi_ns)


@lru_cache(maxsize=4096)
def _end_ns(pages: int, doorbell_ns: int, strategy: str, tlbi_ns: int) -> int:
    costs = {"mmio_write_ns": doorbell_ns, "hw_tlbi_ns": tlbi_ns}
    size = pages * 0x1000
    s = Session(strategy, "unmap-each", {"costs": costs})
    s.run([Op("map", IOVA, size, PADDR), Op("unmap_fast", IOVA, size), Op("sync")])
    return max([s.dom.clock.now] + [q.hw_free for q in s.dom.hw.queues])


def early_wins(problem: Problem, tlbi_ns: int) -> bool:
    return end_ns(problem, EARLY, tlbi_ns) < end_ns(problem, GATHER, tlbi_ns)


def solve(problem: Problem) -> dict[str, int]:
    """``{"hw_tlbi_ns": crossover}``, from :func:`crossover_ns`."""
    return {"hw_tlbi_ns": crossover_ns(problem)}


def crossover_ns(problem: Problem) -> int:
    """Binary search over multiples of STEP (early issue's lead only grows with the TLBI
    cost: its SMMU work overlaps the CPU's unmapping, the gather's follows it)."""
    lo, hi = 0, TOP // STEP          # early_wins(hi * STEP) holds for every problem here
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if early_wins(problem, mid * STEP):
            hi = mid
        else:
            lo = mid
    return hi * STEP


def _first(early: int, gather: int) -> str:
    return EARLY if early < gather else GATHER if gather < early else "tie"


@explainer
def explain(problem: Problem) -> str:
    """The two drivers' end times around the crossover, and the shape of each equation."""
    p, x = problem.params, crossover_ns(problem)
    rows = [{"hw_tlbi_ns": t, f"{EARLY} end (µs)": f"{end_ns(problem, EARLY, t) / 1000:.2f}",
             f"{GATHER} end (µs)": f"{end_ns(problem, GATHER, t) / 1000:.2f}",
             "first": _first(end_ns(problem, EARLY, t), end_ns(problem, GATHER, t))}
            for t in sorted({max(STEP, x - 2 * STEP), max(STEP, x - STEP), x, x + STEP, 50})]
    return (f"Per page, {EARLY} pays a doorbell ({p['doorbell_ns']} ns) on the CPU, but its SMMU "
            f"starts at once and keeps up as long as a TLBI takes it less than the CPU's time "
            f"per page; {GATHER} pays one doorbell per 64 TLBIs, but its SMMU starts only after "
            f"the CPU has unmapped everything, so its end grows by the full {p['pages']} × "
            "hw_tlbi_ns. Per page the difference is about hw_tlbi_ns − mmio_write_ns (the "
            "PTE clears and command writes are the same on both), so early issue wins from "
            "roughly **hw_tlbi_ns ≈ mmio_write_ns**, whatever the size. The model, around the "
            "crossover:\n\n"
            + md_table(rows) + f"\n\nThe first multiple of {STEP} ns at which {EARLY} "
            f"finishes first is **{x}** ns. The counts (TLBIs, CMD_SYNCs) are the same at "
            "every cost.")


def _normalize(answer: Any) -> dict[str, int]:
    """``{"hw_tlbi_ns": 230}``, or just ``230`` / ``"230"``."""
    if isinstance(answer, dict):
        if set(answer) != {"hw_tlbi_ns"}:
            raise ValueError('expected one key, "hw_tlbi_ns"')
        answer = answer["hw_tlbi_ns"]
    return {"hw_tlbi_ns": as_int(answer, "hw_tlbi_ns")}


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "Same commands, different winner: the debate of 2017 in one number.")

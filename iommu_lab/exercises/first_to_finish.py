"""Notebook 04, conceptual: which SMMUv3 driver finishes first under these costs?

The caller maps N 4K pages, then ``iommu_unmap_fast`` of all of them into one gather and one
``iommu_iotlb_sync``, with the IOMMU running on its own clock (notebook 04, section 3).
``smmuv3-v4.14`` invalidates and waits inside every ``->unmap``; ``smmuv3-v4.15`` queues each
TLBI at once (one doorbell each) and syncs once; ``smmuv3-v5.4`` only gathers, then writes all
TLBIs and the CMD_SYNC in one batch with one doorbell. Which wins depends on the assumed
costs (hw/costs.py), so the seed draws them; the model replays each driver.
"""

from __future__ import annotations

from dataclasses import asdict

from ..analysis.stepping import StepperModel
from ..hw.costs import Costs
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

NAME = "first_to_finish"
NOTEBOOK = "04"
KIND = "conceptual"
DRIVERS = {
    "smmuv3-v4.14": "TLBI + CMD_SYNC and a wait inside every ->unmap",
    "smmuv3-v4.15": "early issue: each TLBI queued in ->unmap (one doorbell each), one "
                    "CMD_SYNC at the sync",
    "smmuv3-v5.4": "gather: nothing until the sync, then all TLBIs + CMD_SYNC in one batch, "
                   "one doorbell",
}
TLBI_NS = (20, 50, 100, 200, 400, 800)
DOORBELL_NS = (50, 100, 200, 400)
PAGES = (4, 8, 16, 32)
MARGIN = 1.05   # the winner must be at least 5 % ahead: no near-ties to argue about
SHOWN = ("cmd_write_ns", "mmio_write_ns", "mem_poll_ns", "hw_tlbi_ns", "hw_sync_ns",
         "pte_update_ns", "call_ns")


def run(strategy: str, pages: int, costs: dict[str, int]) -> dict[str, int]:
    """Map, unmap_fast, sync on one driver; when the sync returns and what was issued."""
    m = StepperModel(strategy, paused=False, costs=costs)
    size = pages * SZ_4K
    m.map("0x0", size)
    start = m.domain.clock.now
    m.unmap_fast("0x0", size)
    m.sync()
    if m.error:
        raise RuntimeError(m.error)
    st = m.domain.stats()
    return {"done_ns": m.domain.clock.now - start, "inv_cmds": st["inv_cmds"],
            "sync_cmds": st["sync_cmds"], "doorbells": st["doorbells"]}


def race(pages: int, costs: dict[str, int]) -> dict[str, dict[str, int]]:
    """Every driver's run."""
    return {s: run(s, pages, costs) for s in DRIVERS}


def us(ns: int) -> str:
    """``1.56 µs``."""
    return f"{ns / 1000:,.2f} µs"


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """Costs and a page count with a clear winner; options: the three drivers, or a tie."""
    rng = rng_for(NAME, seed)
    while True:
        costs = {"hw_tlbi_ns": rng.choice(TLBI_NS), "mmio_write_ns": rng.choice(DOORBELL_NS)}
        pages = rng.choice(PAGES)
        results = race(pages, costs)
        times = sorted(r["done_ns"] for r in results.values())
        if times[1] >= MARGIN * times[0]:
            break
    best = min(results, key=lambda s: results[s]["done_ns"])
    choices = [Choice(f"{s} ({how})", s == best,
                      f"its sync returns after {us(results[s]['done_ns'])}"
                      + ("" if s == best else f", {us(results[s]['done_ns'] - results[best]['done_ns'])} "
                         f"after {best}"))
               for s, how in DRIVERS.items()]
    early, gather = results["smmuv3-v4.15"]["done_ns"], results["smmuv3-v5.4"]["done_ns"]
    choices.append(Choice("smmuv3-v4.15 and smmuv3-v5.4 finish together: they issue the same "
                          "TLBIs", False, f"same TLBIs, different timing: {us(early)} vs "
                          f"{us(gather)} (doorbells and overlap differ)"))
    table = {**asdict(Costs()), **costs}
    cost_text = ", ".join(f"{k} = {table[k]}" for k in SHOWN)
    question = (f"Costs of the model (ns): {cost_text}.\n"
                f"The caller maps {pages} x 4K at iova 0, then iommu_unmap_fast of all of them "
                "into one gather and one iommu_iotlb_sync; the SMMU runs on its own (not "
                "paused). On which driver does the sync return first?")
    return multiple_choice(NAME, seed, rng, question, choices,
                           hint="count doorbells (CPU time) and ask what the SMMU can do while "
                                "the CPU is still unmapping (overlap).",
                           context={"pages": pages, "costs": costs})


solve = solve_choice     # the letter of the right option
check = check_choice


@explainer
def explain(problem: Problem) -> str:
    """The race replayed: commands, doorbells and finishing time per driver."""
    p = problem.params
    results = race(p["pages"], p["costs"])
    rows = [{"driver": s, "TLBIs": r["inv_cmds"], "CMD_SYNCs": r["sync_cmds"],
             "doorbells": r["doorbells"], "sync returns after": us(r["done_ns"])}
            for s, r in results.items()]
    return ("Each driver replayed on the model with these costs (from the end of the map to "
            "the return of `iommu_iotlb_sync`; mapping issues nothing on SMMUv3):\n\n"
            + md_table(rows) + "\n\nEach doorbell is a CPU MMIO write (`mmio_write_ns`); each "
            "TLBI takes the SMMU `hw_tlbi_ns`. Early issue lets the SMMU execute TLBIs while "
            "the CPU is still unmapping but pays a doorbell per command; the gather pays one "
            "doorbell and then waits for every TLBI after the unmap. Which wins depends on "
            "those two costs.\n\n" + choices_explained(problem))

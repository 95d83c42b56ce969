"""Notebook 08: a cost sweep over a VFIO guest teardown — which counts hold, and how often
does the winner flip?

A guest of ``guest`` MiB backed by scattered 4K pages is mapped and torn down by VFIO
(``iommu_unmap_fast`` per region, ``iommu_iotlb_sync`` every 512 regions,
``VFIO_IOMMU_TLB_SYNC_MAX``, vfio_iommu_type1.c @v5.4) on smmuv3-v4.15 (TLBIs queued inside
``->unmap``, one doorbell each; one CMD_SYNC per sync) and smmuv3-v5.4 (TLBIs built at the
sync, 64 per doorbell, the CMD_SYNC in the last batch). The SMMU's time per TLBI
(``hw_tlbi_ns``, an assumption) is swept. Doorbells are counts: they hold at every point.
The winner by ``end_ns`` flips where the SMMU's time per TLBI overtakes a doorbell's cost.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..analysis.session import Session
from ..inputs.workloads import kvm_teardown
from ._base import Problem, dict_of_ints, explainer, md_table, rng_for, run_check, seeded

NAME = "sweep_verdict"
NOTEBOOK = "08"
KIND = "numeric"
EARLY, GATHER = "smmuv3-v4.15", "smmuv3-v5.4"
CALLER = "unmap-fast-batch"
GUESTS = ("1M", "2M", "2560K")
DOORBELL_NS = (50, 80, 100, 150, 200, 300)
TLBI_POOL = (10, 20, 40, 60, 100, 150, 200, 250, 300, 400, 500, 600, 800)
FIELDS = ("early_wins", "early_doorbells", "gather_doorbells")


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """A guest size, a doorbell cost and five TLBI costs, none within 40 ns of the doorbell
    cost (where the two drivers nearly tie)."""
    rng = rng_for(NAME, seed)
    guest, doorbell = rng.choice(GUESTS), rng.choice(DOORBELL_NS)
    pool = [t for t in TLBI_POOL if abs(t - doorbell) > 40]
    grid = sorted(rng.sample(pool, 5))
    text = (f"A {guest} guest of scattered 4K pages is mapped, then torn down by VFIO "
            f"(iommu_unmap_fast per region, iommu_iotlb_sync every 512 regions) on {EARLY} and "
            f"on {GATHER}. A doorbell (mmio_write_ns) costs {doorbell} ns; the sweep tries "
            f"hw_tlbi_ns = {', '.join(map(str, grid))} ns (other costs: the defaults).\n"
            f"At how many of those {len(grid)} points does {EARLY} finish first (end_ns), and "
            "how many doorbells does each driver ring in the whole run?")
    return Problem(NAME, seed, text, {"guest": guest, "doorbell_ns": doorbell, "grid": grid},
                   answer_format='a dict, e.g. {"early_wins": 2, "early_doorbells": 1030, '
                                 '"gather_doorbells": 16}',
                   hint="doorbells do not depend on any cost: count them per TLBI and per sync "
                        "(v4.15) or per 64 commands (v5.4); for the winner compare hw_tlbi_ns "
                        "with the doorbell cost.")


def run(problem: Problem) -> list[dict[str, Any]]:
    """The sweep, one row per (hw_tlbi_ns, driver): end_ns and the counts. (The same rows as
    ``il.sweep(...)``'s; run directly, without a DataFrame per run, to answer quickly.)"""
    p = problem.params
    return [dict(r) for tlbi in p["grid"] for r in _runs(p["guest"], p["doorbell_ns"], tlbi)]


@lru_cache(maxsize=256)
def _runs(guest: str, doorbell_ns: int, tlbi: int) -> tuple[dict[str, Any], ...]:
    """Both drivers at one grid point."""
    work = list(kvm_teardown(guest, "4K"))
    rows = []
    for strategy in (EARLY, GATHER):
        s = Session(strategy, CALLER, {"costs": {"mmio_write_ns": doorbell_ns,
                                                 "hw_tlbi_ns": tlbi}})
        s.run(work)
        st = s.dom.stats()
        rows.append({"hw_tlbi_ns": tlbi, "strategy": strategy,
                     "end_ns": max([s.dom.clock.now] + [q.hw_free for q in s.dom.hw.queues]),
                     **{k: st[k] for k in ("doorbells", "sync_cmds", "pages_unmapped")}})
    return tuple(rows)


def solve(problem: Problem) -> dict[str, int]:
    """Count the points v4.15 wins; the doorbells (the same at every point)."""
    rows = run(problem)
    end = {(r["hw_tlbi_ns"], r["strategy"]): r["end_ns"] for r in rows}
    wins = sum(end[(t, EARLY)] < end[(t, GATHER)] for t in problem.params["grid"])
    bells = {s: {r["doorbells"] for r in rows if r["strategy"] == s} for s in (EARLY, GATHER)}
    assert all(len(b) == 1 for b in bells.values()), "doorbells changed with a cost"
    return {"early_wins": wins, "early_doorbells": bells[EARLY].pop(),
            "gather_doorbells": bells[GATHER].pop()}


def first(early_ns: int, gather_ns: int) -> str:
    """Which driver finished first (``tie`` when both end together)."""
    return EARLY if early_ns < gather_ns else GATHER if gather_ns < early_ns else "tie"


@explainer
def explain(problem: Problem) -> str:
    """The sweep's table, and the counting behind the doorbells."""
    p, runs = problem.params, run(problem)
    by = {(r["hw_tlbi_ns"], r["strategy"]): r for r in runs}
    rows = []
    for t in p["grid"]:
        e, g = by[(t, EARLY)], by[(t, GATHER)]
        rows.append({"hw_tlbi_ns": t, f"{EARLY} end (µs)": f"{e['end_ns'] / 1000:.1f}",
                     f"{GATHER} end (µs)": f"{g['end_ns'] / 1000:.1f}",
                     "first": first(e["end_ns"], g["end_ns"]),
                     f"{EARLY} doorbells": e["doorbells"], f"{GATHER} doorbells": g["doorbells"]})
    a = solve(problem)
    pages, syncs = runs[0]["pages_unmapped"], runs[0]["sync_cmds"]
    per_sync = [min(512, pages - 512 * k) for k in range(syncs)]
    return (f"The guest has {pages:,} pages, each its own region (scattered), so VFIO syncs "
            f"{syncs} times (every 512 regions). {EARLY} rings a doorbell per TLBI and per "
            f"CMD_SYNC: {pages:,} + {syncs} = **{a['early_doorbells']:,}**. {GATHER} writes each "
            f"sync's TLBIs ({', '.join(map(str, per_sync))}) in batches of 64, the CMD_SYNC "
            f"riding in the last: {' + '.join(str(-(-b // 64)) for b in per_sync)} = "
            f"**{a['gather_doorbells']:,}**. Neither depends on a cost. The "
            "winner does: early issue finishes first once the SMMU's time per TLBI is above "
            f"about a doorbell's cost ({p['doorbell_ns']} ns), so it wins at "
            f"**{a['early_wins']}** of the points:\n\n" + md_table(rows))


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, dict_of_ints(FIELDS), solve,
                     "Counts hold whatever the costs; the winner is a matter of costs.")

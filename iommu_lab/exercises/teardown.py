"""Notebook 03: counting the flushes of a KVM/VFIO guest teardown per caller pattern.

``kvm_teardown(guest_mem, page_size)`` with no physical contiguity unmaps one backing page
per call. Callers (analysis/callers.py): ``unmap-each`` = one ``iommu_unmap`` (unmap +
sync) per page; ``unmap-fast-batch`` = ``iommu_unmap_fast`` per page and one
``iommu_iotlb_sync`` every 512 (VFIO_IOMMU_TLB_SYNC_MAX); ``unmap-then-flush-all`` =
Joerg Roedel's 2017 plan: unmap everything, then one ``iommu_flush_tlb_all``.
"""

from __future__ import annotations

from typing import Any

from ..analysis.callers import get_caller
from ..analysis.compare import compare
from ..analysis.session import Session
from ..inputs.workloads import kvm_teardown
from ..units import fmt_size, parse_size
from ._base import (
    Problem,
    commands_text,
    counters,
    dict_of_ints,
    explainer,
    rng_for,
    run_check,
    seeded,
)

NAME = "teardown"
NOTEBOOK = "03"
KIND = "numeric"
SAMPLE_PAGES = 3   # the explanation replays the first few pages to show the commands
FIELDS = ("inv_cmds", "sync_cmds")
CASES = (("smmuv3-v4.14", "unmap-each"), ("smmuv3-v5.4", "unmap-each"),
         ("smmuv3-v5.4", "unmap-fast-batch"), ("smmuv3-v5.4", "unmap-then-flush-all"))
STRATEGY_NOTE = {
    "smmuv3-v4.14": "flush inside every ->unmap: a TLBI per page-size piece + CMD_SYNC",
    "smmuv3-v5.4": "TLBIs built at sync time, one per granule of the gathered range, then "
                   "one CMD_SYNC; a flush-all is one CMD_TLBI_NH_ASID + one CMD_SYNC",
}


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """A guest size, a backing page size and one (strategy, caller) pair."""
    rng = rng_for(NAME, seed)
    page = rng.choice(["4K", "4K", "2M"])
    guest = rng.choice(["64M", "128M", "256M", "512M"] if page == "4K" else
                       ["256M", "512M", "1G", "2G"])
    strategy, caller = rng.choice(CASES)
    pages = parse_size(guest) // parse_size(page)
    text = (f"A KVM guest with {guest} of memory backed by {page} pages (none physically "
            f"contiguous, so {pages:,} separate {page} mappings) is torn down.\n"
            f"Driver strategy: {strategy} ({STRATEGY_NOTE[strategy]}).\n"
            f"Caller pattern: {caller}.\n"
            "How many invalidation commands (inv_cmds) and completion commands "
            "(sync_cmds) does the teardown issue?")
    return Problem(NAME, seed, text, {"guest": guest, "page": page, "strategy": strategy,
                                      "caller": caller},
                   answer_format='a dict, e.g. {"inv_cmds": 65536, "sync_cmds": 128}',
                   hint="count the unmap calls first (one per backing page); then ask how "
                        "many of them end with a sync. VFIO syncs every 512 regions.")


def row(problem: Problem) -> Any:
    """The ``compare()`` row of that one pair."""
    p = problem.params
    df = compare(kvm_teardown(p["guest"], p["page"], 0.0, seed=0),
                 [p["strategy"]], [p["caller"]])  # map phase issues no commands here
    return df.iloc[0]


def solve(problem: Problem) -> dict[str, int]:
    """Run ``compare()`` on that one pair."""
    r = row(problem)
    return {k: int(r[k]) for k in FIELDS}


def sample_commands(problem: Problem) -> str:
    """The commands of the same teardown on a guest of only ``SAMPLE_PAGES`` pages."""
    p = problem.params
    session = Session(p["strategy"], p["caller"])
    size = fmt_size(SAMPLE_PAGES * parse_size(p["page"]))
    session.run(list(kvm_teardown(size, p["page"], 0.0, seed=0)))
    return commands_text(session.dom.driver.q.slots())


@explainer
def explain(problem: Problem) -> str:
    """Calls first (unmaps, syncs, flush-alls), then the commands each one issues."""
    p = problem.params
    r = row(problem)
    calls = ["unmap_calls", "sync_calls", "flush_all_calls"]
    return (f"The guest has {pages(problem):,} backing pages of {p['page']}, so the caller "
            f"makes one unmap call per page. Caller `{p['caller']}`: "
            f"{get_caller(p['caller']).summary}. Driver `{p['strategy']}`: "
            f"{STRATEGY_NOTE[p['strategy']]}.\n\n"
            f"- Calls counted by the model: {counters(r, calls)} (`sync_calls` counts "
            "explicit `iommu_iotlb_sync` calls: `iommu_unmap` syncs inside itself).\n"
            f"- The same teardown on only {SAMPLE_PAGES} pages issues: "
            f"{sample_commands(problem)}.\n"
            f"- The whole teardown: {counters(r, ['inv_cmds', 'inv_all_cmds', 'sync_cmds'])}.")


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve)


def pages(problem: Problem) -> int:
    """How many backing pages the guest has (a helper for the solution text)."""
    p = problem.params
    return parse_size(p["guest"]) // parse_size(p["page"])

"""Notebook 05: what one caller's gather costs on SMMUv3 (Linux v5.4).

``iommu_unmap_fast`` calls ``->unmap`` per page; io-pgtable hands each cleared leaf to
``arm_smmu_tlb_inv_page_nosync`` → ``iommu_iotlb_gather_add_page``: pages of the same size
that touch the gathered range merge; a page of another size, or one that leaves a gap,
first syncs the gather (``include/linux/iommu.h`` @v5.4.59:525-528). Every sync —
early or the caller's ``iommu_iotlb_sync`` — is ``arm_smmu_tlb_inv_range``: one
``CMD_TLBI_NH_VA`` per granule, issued in batches of ``CMDQ_BATCH_ENTRIES`` (64), the last
batch ending with the CMD_SYNC; one doorbell per batch (arm-smmu-v3.c @v5.4.59).
"""

from __future__ import annotations

from typing import Any

from ..core.gather import IommuIotlbGather
from ..core.iommu import iommu_iotlb_sync, iommu_map, iommu_unmap_fast
from ..drivers.registry import iommu_domain_alloc
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

NAME = "gather_sync"
NOTEBOOK = "05"
KIND = "numeric"
FIELDS = ("inv_cmds", "sync_cmds", "doorbells")
STRATEGY = "smmuv3-v5.4"
PADDR_OFFSET = 0x4000_0000


def _runs(rng: Any) -> list[tuple[int, int]]:
    """3..5 unmaps of 4K pages as (first page, pages) inside a 512-page window: each next
    one adjacent above, adjacent below, or after a gap; one may be large (> 64 pages)."""
    k = rng.randrange(3, 6)
    big = rng.randrange(k) if rng.random() < 0.6 else -1
    runs: list[tuple[int, int]] = []
    lo = hi = rng.randrange(140, 220)          # pages [lo, hi) are taken
    for i in range(k):
        n = rng.randrange(65, 140) if i == big else rng.randrange(1, 25)
        how = rng.choice(("above", "above", "below", "gap")) if runs else "above"
        if how == "below" and lo - n >= 0:
            start = lo - n
        elif how == "gap" and hi + 1 + n + 3 <= 512:
            start = hi + rng.randrange(1, 4)
        else:
            start = hi
        if start + n > 512:
            n = 512 - start
        if n <= 0:
            continue
        runs.append((start, n))
        lo, hi = min(lo, start), max(hi, start + n)
    return runs


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """A window of 4K pages (and maybe the 2M block above it); 3..6 unmap_fast, one sync."""
    rng = rng_for(NAME, seed)
    base = rng.randrange(1, 64) * 2 * SZ_2M     # 4K-page window [base, base + 2M)
    runs = _runs(rng)
    events: list[tuple[int, int]] = [(base + s * SZ_4K, n * SZ_4K) for s, n in runs]
    block = rng.random() < 0.5
    if block:                                  # the 2M block right above the window
        at = rng.randrange(1, len(events) + 1)
        events.insert(at, (base + SZ_2M, SZ_2M))
    lines = []
    for n, (iova, size) in enumerate(events, 1):
        what = "the 2M block" if size == SZ_2M else f"{size // SZ_4K} x 4K pages"
        lines.append(f"  {n}. iommu_unmap_fast(dom, {iova:#x}, {fmt_size(size)}, &gather)"
                     f"   # {what}")
    lines.append(f"  {len(events) + 1}. iommu_iotlb_sync(dom, &gather)")
    text = (f"A domain on {STRATEGY} (Linux v5.4) maps 4K pages over [{base:#x}, "
            f"{base + SZ_2M:#x})" + (f" and one 2M block at {base + SZ_2M:#x}" if block else "")
            + ". One caller, with one gather, then does:\n" + "\n".join(lines) +
            "\nHow many CMD_TLBI_NH_VA commands (inv_cmds), CMD_SYNCs (sync_cmds) and "
            "doorbells does the SMMU get from all of this?")
    return Problem(NAME, seed, text, {"base": base, "events": events, "block": block},
                   answer_format='a dict, e.g. {"inv_cmds": 40, "sync_cmds": 2, '
                                 '"doorbells": 3}',
                   hint="walk the gather page by page (->unmap gets one page at a time, in "
                        "ascending order): same page size and touching the range → merge; a "
                        "gap or another page size → sync first. Each sync: one TLBI per "
                        "granule of its range, in batches of 64, the last with the CMD_SYNC.")


def run(problem: Problem) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Replay it: per call, what the gather did and what reached the queue; the totals."""
    p = problem.params
    dom = iommu_domain_alloc(STRATEGY)
    rw = IOMMU_READ | IOMMU_WRITE
    iommu_map(dom, p["base"], p["base"] + PADDR_OFFSET, SZ_2M - SZ_4K, rw)  # 4K leaves
    iommu_map(dom, p["base"] + SZ_2M - SZ_4K, p["base"] + SZ_2M - SZ_4K + PADDR_OFFSET, SZ_4K, rw)
    if p["block"]:
        iommu_map(dom, p["base"] + SZ_2M, p["base"] + SZ_2M + PADDR_OFFSET, SZ_2M, rw)
    q, g = dom.driver.q, IommuIotlbGather()
    before, rows = dom.stats(), []
    for iova, size in p["events"]:
        since, d0 = q.state().prod, dom.stats()["doorbells"]
        iommu_unmap_fast(dom, iova, size, g)
        rows.append({"call": f"unmap_fast {iova:#x} +{fmt_size(size)}",
                     "commands issued now": commands_text(new_slots(q, since)),
                     "doorbells": dom.stats()["doorbells"] - d0,
                     "gather after": f"{g.start:#x}..{g.end:#x} ({fmt_size(g.pgsize)} pages)"})
    since, d0 = q.state().prod, dom.stats()["doorbells"]
    iommu_iotlb_sync(dom, g)
    rows.append({"call": "iommu_iotlb_sync", "commands issued now":
                 commands_text(new_slots(q, since)),
                 "doorbells": dom.stats()["doorbells"] - d0, "gather after": "(empty)"})
    after = dom.stats()
    return rows, {k: after[k] - before[k] for k in FIELDS}


def solve(problem: Problem) -> dict[str, int]:
    """Run it on the simulator and read the counters."""
    return run(problem)[1]


@explainer
def explain(problem: Problem) -> str:
    """Each call, the gather's decision, the commands it put in the queue."""
    rows, totals = run(problem)
    return ("`->unmap` only *gathers* on v5.4, so a call issues nothing unless its page "
            "cannot join the gathered range (a gap, or a different page size): then "
            "`iommu_iotlb_gather_add_page` syncs first. Every sync is one "
            "`CMD_TLBI_NH_VA` per granule of the range, in batches of 64 (a doorbell each), "
            "the last batch ending with the `CMD_SYNC` (`gather after` shows v5.4's "
            "exclusive `end`).\n\n" + md_table(rows) + "\n\nIn total: "
            + counters(totals, FIELDS) + ".")


_normalize = dict_of_ints(FIELDS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve,
                     "Every early sync is a CMD_SYNC the CPU waits for inside unmap_fast.")

"""Notebook 09: a trace has no syncs; the caller pattern decides how many there are.

A short ``iommu:unmap`` excerpt (the maps happened before the capture) is replayed on
``smmuv3-v5.4`` under three callers (analysis/callers.py): ``unmap-each`` (one
``iommu_unmap``, which syncs, per line), ``unmap-fast-batch`` (VFIO: ``iommu_unmap_fast``
into one gather, one ``iommu_iotlb_sync`` at the end, but the v5.4 gather syncs early when a
region is disjoint or uses another page size, kernel-api-history §4.2) and ``dma-lazy``
(flush queue: no sync per unmap; the 10 ms timer armed by the first queued IOVA does one
flush-all = ``CMD_TLBI_NH_ASID`` + ``CMD_SYNC``, §5.2).
"""

from __future__ import annotations

from typing import Any

from ..analysis.callers import get_caller
from ..analysis.lazy_faults import complete_trace
from ..analysis.replay import replay
from ..analysis.session import Session
from ..inputs.trace import read_trace, trace_to_ops
from ..inputs.trace.synth import format_line, format_payload
from ._base import Problem, counters, dict_of_ints, explainer, md_table, rng_for, run_check, seeded

NAME = "replay_syncs"
NOTEBOOK = "09"
KIND = "numeric"
STRATEGY = "smmuv3-v5.4"
CALLERS = ("unmap-each", "unmap-fast-batch", "dma-lazy")
SIZES = (0x1000, 0x2000, 0x3000, 0x4000, 0x8000, 0x10000)
GAPS_MS = (0.05, 0.2, 0.5, 1.0, 2.5, 4.0, 6.0)


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """4..7 unmaps of 4 KiB-page regions: an ascending or descending sweep, or scattered."""
    rng = rng_for(NAME, seed)
    n = rng.randrange(4, 8)
    layout = rng.choice(["ascending sweep", "descending sweep", "scattered"])
    sizes = [rng.choice(SIZES) for _ in range(n)]
    base = rng.randrange(0x1000, 0xF000) * 0x10000
    iovas = []
    at = base
    for i, size in enumerate(sizes):
        if layout == "ascending sweep":
            iovas.append(at)
            at += size
        elif layout == "descending sweep":
            at -= size
            iovas.append(at)
        else:
            iovas.append(base + i * 0x40000 + rng.randrange(0, 8) * 0x1000)
    if layout == "scattered" and rng.random() < 0.5:   # one adjacent pair among the scattered
        j = rng.randrange(1, n)
        iovas[j] = iovas[j - 1] + sizes[j - 1]
        for k in range(j + 1, n):
            iovas[k] = max(iovas[k], iovas[j] + sizes[j] + 0x40000)
    t = 500.0 + rng.randrange(0, 1000) / 1000
    lines = []
    for iova, size in zip(iovas, sizes, strict=True):
        payload = format_payload("unmap", iova, size=size, generation="v5.17")
        lines.append(format_line("unmap", payload, style="ftrace-noflags", task="qemu-kvm",
                                 pid=3141, cpu=2, timestamp=t))
        t += rng.choice(GAPS_MS) / 1000
    text = ("This trace excerpt shows unmaps only (the regions were mapped before the "
            "capture began):\n\n" + "\n".join(lines) + "\n\n"
            f"Replay it on {STRATEGY} (the v5.4 gather) under three callers. How many "
            "CMD_SYNC commands (sync_cmds) does each issue?\n"
            "  unmap-each       : one iommu_unmap (it syncs) per line\n"
            "  unmap-fast-batch : iommu_unmap_fast into one gather, iommu_iotlb_sync at the end\n"
            "  dma-lazy         : IOVAs go to the flush queue (256 entries, 10 ms timer)")
    return Problem(NAME, seed, text, {"lines": lines},
                   answer_format='a dict, e.g. {"unmap-each": 5, "unmap-fast-batch": 2, '
                                 '"dma-lazy": 1}',
                   hint="iommu_unmap_fast gathers one 4 KiB page at a time, in ascending "
                        "order; the v5.4 gather syncs early when a page neither touches nor "
                        "overlaps the gathered range. The lazy timer is armed by the first "
                        "IOVA queued after a flush and fires 10 ms later.")


def trace(problem: Problem) -> Any:
    """The excerpt as a DataFrame, completed with the maps from before the capture."""
    return complete_trace(read_trace(problem.params["lines"]))


def solve(problem: Problem) -> dict[str, int]:
    """``replay()`` of the completed excerpt under the three callers."""
    df = replay(trace(problem), [STRATEGY], list(CALLERS))
    return {c: int(v) for c, v in zip(df["caller"], df["sync_cmds"], strict=True)}


def per_line(problem: Problem) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """CMD_SYNCs each caller issued between the previous trace line and the end of this one
    (early gather syncs, timer flushes), and the totals, by stepping the replay."""
    df = trace(problem)
    ops = trace_to_ops(df, merge_runs=False)
    lines = [int(x) for x in df["line"]]
    rows = [{"line": n, "unmap": f"{int(a):#x}..{int(a) + int(z):#x}"}
            for n, a, z in zip(lines, df["iova"], df["size"], strict=True) if n]
    totals = {}
    for c in CALLERS:
        s = Session(STRATEGY, c, lenient=True)
        k = 0
        for n, op in zip(lines, ops, strict=True):
            before = s.dom.stats["sync_cmds"]
            s.do(op)
            if n:
                rows[k][c] = s.dom.stats["sync_cmds"] - before
                k += 1
        before = s.dom.stats["sync_cmds"]
        s.finish()
        totals[c] = s.dom.stats()
        totals[c]["at_end"] = s.dom.stats["sync_cmds"] - before
    rows.append({"line": "end", "unmap": "(caller ends the batch; timer fires)",
                 **{c: totals[c]["at_end"] for c in CALLERS}})
    return rows, totals


@explainer
def explain(problem: Problem) -> str:
    """The CMD_SYNCs of each caller, line by line, from the model."""
    rows, totals = per_line(problem)
    per = "\n".join(f"- `{c}` ({get_caller(c).summary}): "
                    f"{counters(totals[c], ['unmap_calls', 'sync_cmds', 'inv_cmds'])}"
                    + (f", flush-queue timer flushes = {totals[c]['fq_timer_flushes']}"
                       if totals[c]["fq_timer_flushes"] else "")
                    for c in CALLERS)
    return ("The trace shows calls, never syncs: the caller decides.\n\n"
            "- `unmap-each`: every `iommu_unmap` ends with its own `iommu_iotlb_sync`.\n"
            "- `unmap-fast-batch`: `iommu_unmap_fast` unmaps one 4 KiB leaf at a time, in "
            "ascending order, adding each to the caller's gather "
            "(`iommu_iotlb_gather_add_page`, v5.4): a page that neither touches nor overlaps "
            "the gathered range forces an early sync. In a descending sweep the *first* "
            "page of the next (lower) region is not adjacent to the range, so a region of "
            "more than one page syncs early; a one-page region touches it and merges. The "
            "last batch is synced when the caller ends it.\n"
            "- `dma-lazy`: `gather.queued` is set, so no unmap syncs; the IOVAs wait in the "
            "flush queue. The first IOVA queued after a flush arms the 10 ms timer; it fires "
            "one `CMD_TLBI_NH_ASID` + `CMD_SYNC` (shown on the first line after it expired, "
            "or at the end).\n\n"
            "CMD_SYNCs issued since the previous line, per caller:\n\n" + md_table(rows)
            + "\n\nTotals:\n\n" + per)


_normalize = dict_of_ints(CALLERS)


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, _normalize, solve)

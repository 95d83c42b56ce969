"""Notebook 07: how often does the DMA flush queue flush, and why?

One CPU DMA-maps and unmaps a 4K buffer every ``gap`` µs on a lazy (``DMA_FQ``) domain.
Each unmapped IOVA goes on the CPU's ring (``IOVA_FQ_SIZE`` 256 slots, 255 usable:
``fq_full`` is ``(tail + 1) % size == head``); ``queue_iova`` flushes when it finds the ring
full, and the 10 ms timer (``IOVA_FQ_TIMEOUT``), armed by an enqueue when it is not already
running, flushes and frees every ring when it fires (drivers/iommu/iova.c @v5.10,
kernel-api-history §5.2). After the last unmap the CPU idles until the queue has drained.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..analysis.lessons_07_08 import FLUSH_EVENT
from ..analysis.session import Session
from ..core.dma_iommu import IOVA_FQ_SIZE, IOVA_FQ_TIMEOUT_MS
from ..inputs.ops import Op
from ..inputs.workloads import GUEST_PADDR_BASE
from ..units import SZ_4K
from ._base import Problem, dict_of_ints, explainer, md_table, rng_for, run_check, seeded

NAME = "fq_flushes"
NOTEBOOK = "07"
KIND = "numeric"
STRATEGY = "smmuv3-v5.4"
# gaps (µs) for which 10 ms is not a whole number of gaps: no unmap coincides with the timer
GAPS_US = (7, 12, 30, 45, 70, 90)
MAX_UNMAPS = 1200
FIELDS = ("ring_full", "timer")


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """A gap, and enough unmaps for 1.2–4 timer periods (at most 1,200 of them)."""
    rng = rng_for(NAME, seed)
    gap = rng.choice(GAPS_US)
    n = rng.randrange(min(12_000 // gap, 600), min(MAX_UNMAPS, 40_000 // gap) + 1)
    text = (f"A lazy (DMA_FQ) domain on {STRATEGY}, one CPU. Every {gap} µs the CPU DMA-maps a "
            f"4K buffer and unmaps it again ({n:,} times: the last unmap is at about "
            f"{(n - 1) * gap / 1000:.2f} ms); then the CPU idles until the flush queue is "
            "empty.\nThe ring has 256 slots (255 usable); the 10 ms timer is armed by the "
            "first enqueue while it is not running.\n"
            "How many flush-alls does the flush queue make because the ring was full, and "
            "how many because the timer fired?")
    return Problem(NAME, seed, text, {"gap_us": gap, "unmaps": n},
                   answer_format='a dict, e.g. {"ring_full": 2, "timer": 3}',
                   hint="a timer flush empties the ring too; count, per 10 ms period, "
                        "whether 255 unmaps fit before the timer fires.")


def ops(problem: Problem) -> list[Op]:
    """The workload: map + unmap of one 4K buffer every ``gap`` µs."""
    return _ops(problem.params["gap_us"], problem.params["unmaps"])


def _ops(gap_us: int, unmaps: int) -> list[Op]:
    out = []
    for k in range(unmaps):
        paddr = GUEST_PADDR_BASE + (k % 1024) * SZ_4K
        out += [Op("dma_map", 0, SZ_4K, paddr, at_ns=k * gap_us * 1000),
                Op("dma_unmap", 0, SZ_4K, paddr)]
    return out


def flush_events(problem: Problem) -> list[dict[str, Any]]:
    """Run the workload op by op; one row per flush-all: when, why, what the ring held."""
    return [dict(r) for r in _flush_events(problem.params["gap_us"], problem.params["unmaps"])]


@lru_cache(maxsize=64)
def _flush_events(gap_us: int, unmaps: int) -> tuple[dict[str, Any], ...]:
    s = Session(STRATEGY, "dma-lazy")
    dom, st = s.dom, s.dom.stats
    rows: list[dict[str, Any]] = []
    done = 0

    def step(fn: Any) -> None:
        flushes, timers, held = st["fq_flushes"], st["fq_timer_flushes"], len(dom.fq.entries)
        fn()
        if st["fq_flushes"] > flushes:
            timer = st["fq_timer_flushes"] > timers
            rows.append({"flush": len(rows) + 1, "during unmap #": "—" if timer else done,
                         "why": "timer" if timer else "ring full", "ring held": held})

    for op in _ops(gap_us, unmaps):
        done += op.kind == "dma_unmap"
        step(lambda o=op: s.run_op(o))
    step(s.finish)
    ends = [e.t1 for e in dom.trace.events if e.op == FLUSH_EVENT]
    return tuple({**r, "done at (ms)": f"{t / 1e6:.3f}"} for r, t in zip(rows, ends, strict=True))


def solve(problem: Problem) -> dict[str, int]:
    """Count the flushes by cause."""
    rows = flush_events(problem)
    timer = sum(r["why"] == "timer" for r in rows)
    return {"ring_full": len(rows) - timer, "timer": timer}


@explainer
def explain(problem: Problem) -> str:
    """The flush-alls in order, why each came, and what the ring held."""
    p, rows = problem.params, flush_events(problem)
    n_timer = sum(r["why"] == "timer" for r in rows)
    n_full = len(rows) - n_timer
    fill = (IOVA_FQ_SIZE - 1) * p["gap_us"] / 1000
    return (f"One unmap every {p['gap_us']} µs fills the 255 usable slots in "
            f"255 × {p['gap_us']} µs = {fill:.2f} ms; the timer fires {IOVA_FQ_TIMEOUT_MS} ms "
            "after the enqueue that armed it. "
            + ("The ring fills first, so each timer period holds a ring-full flush (the ring "
               "starts over with one entry, the IOVA being queued) before the timer flush "
               "empties it. " if fill < IOVA_FQ_TIMEOUT_MS else
               "The timer always fires first, so the ring never fills. ")
            + "After a timer flush the timer is off until the next enqueue arms it again. "
            "Running the model (`queue_iova`, `fq_flush_timeout`):\n\n" + md_table(rows)
            + f"\n\nSo **{n_full}** flush(es) because the ring was full and **{n_timer}** "
            "because the timer fired.")


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, dict_of_ints(FIELDS), solve,
                     "Between two flushes every queued IOVA's IOTLB entry may still "
                     "translate: that is the stale window.")

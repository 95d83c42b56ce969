"""Notebook 07: a device keeps writing to a buffer after the driver unmapped it — how many of
its writes reach the freed page under lazy flushing?

:func:`iommu_lab.inputs.workloads.late_writes`: CPU 0 unmaps the victim at t = 0 (lazily:
its IOVA waits in CPU 0's flush queue and its IOTLB entry stays), then the driver keeps
unmapping other buffers, one every ``gap`` µs dealt round-robin over the CPUs; the device
writes the victim at (k + ½) · P. A write is **stale** until a flush-all covers the unmap:
CPU 0's ring fills (255 entries: the victim and 254 of the unmaps CPU 0 gets) or the 10 ms
timer armed by the victim's enqueue fires — whichever is first; the flush is domain-wide
(``flush_iotlb_all``), so it ends the window whichever CPU triggers it (kernel-api-history
§5.2). After that every write faults.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..analysis.lessons_07_08 import device_accesses
from ..analysis.session import Session
from ..core.dma_iommu import IOVA_FQ_SIZE, IOVA_FQ_TIMEOUT_MS
from ..inputs.workloads import VICTIM_IOVA, late_writes
from ._base import Problem, dict_of_ints, explainer, md_table, rng_for, run_check, seeded

NAME = "stale_window"
NOTEBOOK = "07"
KIND = "numeric"
STRATEGY = "smmuv3-v5.4"
GAPS_US = (2, 4, 5, 8, 10, 15, 20, 25, 30, 50)
PROBE_MS = (0.5, 1.0, 1.5, 2.0)
FIELDS = ("stale", "fault")


def window_estimate_ns(cpus: int, gap_us: int) -> float:
    """CPU 0 sees every ``cpus``-th unmap: its ring is full after 255 · cpus gaps, unless
    the 10 ms timer comes first (the flush's own microsecond is left out)."""
    return min((IOVA_FQ_SIZE - 1) * cpus * gap_us * 1000, IOVA_FQ_TIMEOUT_MS * 1_000_000)


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """CPUs, gap, probe period and count; no write within 10% of a period of the window's
    end (so the answer does not hinge on the flush's own duration)."""
    rng = rng_for(NAME, seed)
    while True:
        cpus, gap = rng.choice((1, 1, 2, 4)), rng.choice(GAPS_US)
        probe_ms = rng.choice(PROBE_MS)
        w = window_estimate_ns(cpus, gap)
        frac = (w / (probe_ms * 1e6) - 0.5) % 1.0
        if 0.1 < frac < 0.9:
            break
    probes = min(24, int(12 / probe_ms) + rng.randrange(1, 4))
    unmaps = min((IOVA_FQ_SIZE + 2) * cpus, int(12_000 / gap) + 1)
    text = (f"A lazy (DMA_FQ) domain on {STRATEGY} with {cpus} CPU(s), each with its own flush "
            f"queue ring (256 slots, 255 usable; one 10 ms timer per domain).\n"
            f"  t = 0: CPU 0 DMA-unmaps the victim buffer; the device had written it, so the "
            "IOTLB caches its translation.\n"
            f"  Then {unmaps:,} other 4K buffers are mapped and unmapped, one every {gap} µs, "
            f"dealt round-robin over the {cpus} CPU(s) (the 1st goes to CPU {1 % cpus}); the "
            "device never touches them.\n"
            f"  The device writes the victim {probes} times, at {probe_ms / 2:g} ms, "
            f"{probe_ms * 1.5:g} ms, ... ({probe_ms:g} ms apart).\n"
            "How many of those writes are stale (land in the freed page) and how many fault?")
    return Problem(NAME, seed, text, {"cpus": cpus, "gap_us": gap, "probe_ms": probe_ms,
                                      "probes": probes, "unmaps": unmaps},
                   answer_format='a dict, e.g. {"stale": 7, "fault": 9}',
                   hint="the window ends at the first flush-all: CPU 0's ring full "
                        "(255 × CPUs × gap) or the 10 ms timer, whichever is first.")


def run(problem: Problem) -> Session:
    """The workload under ``dma-lazy``."""
    p = problem.params
    return _run(p["cpus"], p["gap_us"], p["probe_ms"], p["probes"], p["unmaps"])


def _run(cpus: int, gap_us: int, probe_ms: float, probes: int, unmaps: int) -> Session:
    s = Session(STRATEGY, "dma-lazy", {"cpus": cpus})
    s.run(late_writes(unmaps, gap_us * 1000, probes, round(probe_ms * 1e6), cpus=cpus))
    return s


@lru_cache(maxsize=64)
def _counts(cpus: int, gap_us: int, probe_ms: float, probes: int, unmaps: int) -> tuple[int, int]:
    st = _run(cpus, gap_us, probe_ms, probes, unmaps).dom.stats()
    return st["stale_hits"], st["faults"]


def solve(problem: Problem) -> dict[str, int]:
    """Count the victim's stale and faulting writes."""
    p = problem.params
    stale, fault = _counts(p["cpus"], p["gap_us"], p["probe_ms"], p["probes"], p["unmaps"])
    return {"stale": stale, "fault": fault}


@explainer
def explain(problem: Problem) -> str:
    """The window's bound, then every write with its time and result."""
    p = problem.params
    s = run(problem)
    late = [a for a in device_accesses(s.dom, VICTIM_IOVA) if a["after_unmap_ns"] is not None]
    rows = [{"write #": i + 1, "at (ms)": f"{a['t_ns'] / 1e6:.3f}", "result": a["result"]}
            for i, a in enumerate(late)]
    stale = sum(r["result"] == "stale" for r in rows)
    fault = sum(r["result"] == "fault" for r in rows)
    fill = (IOVA_FQ_SIZE - 1) * p["cpus"] * p["gap_us"] / 1000
    ends = min(fill, IOVA_FQ_TIMEOUT_MS)
    return (f"CPU 0 gets every {p['cpus']}-th unmap, one every {p['cpus'] * p['gap_us']} µs, so "
            f"its ring (the victim + 254 more) is full after 255 × {p['cpus']} × "
            f"{p['gap_us']} µs = {fill:.2f} ms; the timer fires at 10 ms. The first flush-all "
            f"comes at about **{ends:.2f} ms** ("
            + ("ring full" if fill < IOVA_FQ_TIMEOUT_MS else "timer")
            + f"; flushes: {s.dom.stats()['fq_flushes']} in the whole run). Writes before it "
            "hit the stale IOTLB entry; after it the entry is gone and the walk finds no "
            "PTE:\n\n" + md_table(rows) + f"\n\nSo **{stale}** write(s) stale and **{fault}** "
            "fault(s).")


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, dict_of_ints(FIELDS), solve,
                     "Every stale write was DMA into a page the kernel had freed; nothing "
                     "logged it.")

"""Notebook 09: which of a trace's IO page faults would have been stale hits under lazy
flushing?

A short trace of DMA-API unmaps and ``io_page_fault`` lines (the device touched a buffer
after the driver unmapped it). Under ``dma-lazy`` an unmapped IOVA waits in the flush queue
and its IOTLB entry stays valid until the next flush-all; with fewer than 255 unmaps only
the 10 ms timer (``IOVA_FQ_TIMEOUT``, armed by the first IOVA queued after a flush,
kernel-api-history §5.2) flushes. Answer per fault: "stale" (the device would have reached
freed memory silently) or "fault" (a flush had already invalidated it). Solved by
:func:`iommu_lab.analysis.lazy_faults.stale_under_lazy`.
"""

from __future__ import annotations

from typing import Any

from ..analysis.lazy_faults import ASSUMPTION, stale_under_lazy
from ..inputs.trace import read_trace
from ..inputs.trace.synth import format_line, format_payload
from ._base import Problem, explainer, list_of_words, md_table, rng_for, run_check, seeded

NAME = "lazy_window"
NOTEBOOK = "09"
KIND = "numeric"
RESULTS = ("stale", "fault")
GAPS_MS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
FAULT_AFTER_MS = (0.3, 1.0, 2.0, 4.0, 7.0, 9.0, 11.0, 15.0)
SIZES = (0x1000, 0x2000, 0x4000, 0x10000)


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """3..6 unmaps spread over up to ~40 ms, and 2..3 faults on some of their IOVAs."""
    rng = rng_for(NAME, seed)
    n = rng.randrange(3, 7)
    t0 = 200.0 + rng.randrange(0, 500) / 1000
    top = 0x1_0000_0000 - rng.randrange(0, 64) * 0x10_0000
    events, t, at = [], t0, top
    for _ in range(n):
        size = rng.choice(SIZES)
        at = (at - size) & ~(size - 1)
        events.append((t, 0, "unmap", at, size))
        t += rng.choice(GAPS_MS) / 1000
    for u in sorted(rng.sample(range(n), rng.randrange(2, 4))):
        tu, _, _, iova, size = events[u]
        off = rng.randrange(0, size // 0x40) * 0x40
        events.append((tu + rng.choice(FAULT_AFTER_MS) / 1000, 1, "io_page_fault",
                       iova + off, 0))
    events.sort()
    lines = []
    for ts, _, kind, iova, size in events:
        if kind == "unmap":
            payload = format_payload("unmap", iova, size=size, generation="v5.17")
            lines.append(format_line("unmap", payload, style="ftrace-noflags",
                                     task="kworker/u16:2", pid=211, cpu=1, timestamp=ts))
        else:
            payload = format_payload("io_page_fault", iova, flags=1, driver="nvme",
                                     device="0000:01:00.0")
            lines.append(format_line("io_page_fault", payload, style="ftrace-noflags",
                                     task="irq/35-AMD-Vi", pid=35, cpu=0, timestamp=ts))
    text = ("A device kept writing after its driver unmapped the buffers (the maps happened "
            "before the capture; this kernel ran strict, so each access faulted):\n\n"
            + "\n".join(lines) + "\n\n"
            "Had the domain been lazy (dma-lazy: IOVAs wait in a 256-entry flush queue, one "
            "flush-all when the 10 ms timer fires), which faults would have been stale hits "
            "instead? Assume the device had used each buffer before its unmap (its "
            "translation was cached), and nothing else ran.")
    return Problem(NAME, seed, text, {"lines": lines},
                   answer_format='a list, one entry per io_page_fault line in order, each '
                                 '"stale" or "fault", e.g. ["stale", "fault"]',
                   hint="the timer is armed by the first IOVA queued after a flush, not by "
                        "each unmap: find when each flush happened, then ask whether it "
                        "came between a fault's unmap and the fault.")


def analysis(problem: Problem) -> Any:
    """:func:`stale_under_lazy` of the problem's trace."""
    return stale_under_lazy(read_trace(problem.params["lines"]))


def solve(problem: Problem) -> list[str]:
    """The modelled lazy outcome of each fault, in order."""
    return [str(x) for x in analysis(problem)["lazy"]]


@explainer
def explain(problem: Problem) -> str:
    """When the timer armed and fired, and each fault's unmap, from the model's replay."""
    res = analysis(problem)
    t0 = float(read_trace(problem.params["lines"])["timestamp"].min())
    flushes = [(t - t0) * 1e3 for t in res.attrs["lazy_flushes_s"]]
    rows = [{"fault (line)": int(r.line), "at": f"{(r.time_s - t0) * 1e3:.1f} ms",
             "its unmap (line)": int(r.unmap_line),
             "unmapped": f"{r.since_unmap_us / 1e3:.1f} ms before",
             "strict": r.strict, "lazy": r.lazy, "why": r.why} for r in res.itertuples()]
    return ("Times are from the first line. Under lazy flushing `queue_iova` arms the timer "
            "only if it is not armed already, so the flush comes 10 ms after the *first* "
            "IOVA queued since the previous flush (`fq_flush_timeout`, then the timer stays "
            "off until the next unmap). With fewer than 255 unmaps the queue never fills, so "
            "the timer is the only flush. Timer flushes at: "
            + ", ".join(f"{ms:.1f} ms" for ms in flushes) + ".\n\n"
            "A fault would have been a stale hit if no flush came between its unmap and the "
            "access (the model replays the trace lazy and strict, the device reading each "
            f"buffer just before its unmap: {ASSUMPTION}).\n\n" + md_table(rows))


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, list_of_words(RESULTS), solve,
                     "Lazy mode turns these faults into silent DMA into freed memory.")

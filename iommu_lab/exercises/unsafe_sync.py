"""Notebook 10: what the device gets from a strategy that waits for CMD_SYNC only every k-th
``iotlb_sync`` (``iommu_lab.drivers.examples.SyncEveryK``).

Each ``iommu_unmap`` syncs once. Every sync publishes its TLBIs; only every k-th one also adds
a CMD_SYNC and waits for it — and since the SMMU executes its queue in order, that wait
completes every TLBI published before it. The IOMMU is paused (the stepper's default: it
runs only while the CPU waits), so between two waits the TLBIs stay queued and a buffer
the device had cached still translates: **stale**. Seeds may be ints or student-ID strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..analysis.stepping import StepperModel
from ..drivers.examples import SyncEveryK
from ..drivers.user import scratch_strategy
from ..units import SZ_4K
from ._base import Problem, explainer, list_of_words, md_table, rng_for, run_check, seeded

NAME = "unsafe_sync"
NOTEBOOK = "10"
KIND = "numeric"
RESULTS = ("hit", "walk", "fault", "stale")
BUFFERS = "ABCDE"
BASE = 0x20_0000


def iova_of(buffer: str) -> int:
    """Buffer ``A`` at 0x200000, ``B`` 64K further on..."""
    return BASE + BUFFERS.index(buffer) * 0x1_0000


@contextmanager
def primed_model(k: int) -> Iterator[StepperModel]:
    """A stepper model of ``SyncEveryK(k)`` (registered only meanwhile) with every buffer
    mapped and read once, so each is in the IOTLB."""
    with scratch_strategy(SyncEveryK) as name:
        m = StepperModel(name, sync_every=k)
        for b in BUFFERS:
            m.map(hex(iova_of(b)), SZ_4K)
        for b in BUFFERS:
            m.dma_read(hex(iova_of(b)))
        yield m


@seeded(NAME)
def make_problem(seed: int | str) -> Problem:
    """k in 2..4; five one-page buffers, all read once; unmaps and reads interleaved."""
    rng = rng_for(NAME, seed)
    k = rng.randrange(2, 5)
    order = rng.sample(BUFFERS, rng.randrange(3, 6))
    events: list[tuple[str, str]] = [("unmap", order[0]), ("read", order[0])]
    for i, buf in enumerate(order[1:], 1):
        events.append(("unmap", buf))
        if rng.random() < 0.75 or i == len(order) - 1:
            events.append(("read", rng.choice(order[:i + 1] + [rng.choice(BUFFERS)])))
    reads = [b for what, b in events if what == "read"]
    lines = [f"  {n}. " + (f"iommu_unmap(buffer {b})" if what == "unmap" else
                           f"the device reads buffer {b}")
             for n, (what, b) in enumerate(events, 3)]
    nth = {2: "2nd", 3: "3rd"}.get(k, f"{k}th")
    text = (f"Strategy sync-every-k with k = {k}: every iotlb_sync publishes its TLBIs, but only "
            f"every {nth} one adds a CMD_SYNC and waits (the IOMMU is paused: it executes "
            "commands only while the CPU waits).\n"
            "  1. map five one-page buffers A..E (64K apart) on a fresh domain;\n"
            "  2. the device reads each of them once (the IOTLB caches all five);\n"
            + "\n".join(lines) +
            f"\nWhat does each of the {len(reads)} reads return: hit, walk, fault or stale?")
    return Problem(NAME, seed, text, {"k": k, "events": events},
                   answer_format=f'a list of {len(reads)} strings, e.g. '
                                 f'{list(RESULTS[:len(reads)])!r}'.replace("'", '"'),
                   hint="count the syncs: only the k-th, 2k-th... waits, and its wait completes "
                        "every TLBI published before it; a still-mapped buffer hits.")


def solve(problem: Problem) -> list[str]:
    """Replay the steps on a stepper model (the strategy registered only meanwhile); what
    each read returned, in order."""
    p = problem.params
    with primed_model(p["k"]) as m:
        out = []
        for what, b in p["events"]:
            if what == "unmap":
                m.unmap(hex(iova_of(b)), SZ_4K)
            else:
                out.append(m.dma_read(hex(iova_of(b))))
        return out


def check(problem: Problem, answer: Any) -> str:
    """✓ / ✗ / "not answered yet"; never raises."""
    return run_check(problem, answer, list_of_words(RESULTS), solve,
                     "Each stale read is DMA into a page iommu_unmap had already returned.")


@explainer
def explain(problem: Problem) -> str:
    """Each step replayed: which sync waits, how many TLBIs are still queued, each read."""
    p = problem.params
    rows, syncs = [], 0
    with primed_model(p["k"]) as m:
        for what, b in p["events"]:
            waits = m.domain.stats()["sync_cmds"]
            if what == "unmap":
                m.unmap(hex(iova_of(b)), SZ_4K)
                syncs += 1
                waited = m.domain.stats()["sync_cmds"] > waits
                step, sync = f"iommu_unmap(buffer {b})", (
                    f"#{syncs}: CMD_SYNC, waits" if waited else f"#{syncs}: TLBIs only")
                read = ""
            else:
                step, sync, read = f"device reads buffer {b}", "", m.dma_read(hex(iova_of(b)))
            rows.append({"step": step, "iotlb_sync": sync,
                         "TLBIs queued, not executed": m.queue.state().pending,
                         "device gets": read})
    return (f"Every `iommu_unmap` ends with one `iotlb_sync`; syncs {p['k']}, {2 * p['k']}, … "
            "add a CMD_SYNC and wait, and the in-order SMMU completes every TLBI published "
            "before it. The others leave their TLBIs queued while the IOMMU is paused, so a "
            "buffer the device had cached still translates after `iommu_unmap` returned.\n\n"
            + md_table(rows))

"""The stepper widget's kernel-side cost per click, headless: ``python -m iommu_lab.ui.bench``.

One click is an action of the model plus the refresh of every view (ring, IOTLB, counters,
page table, address-space strip, timeline, log). Issue 13: it must not grow with the
session's history, so the same cycle (map / unmap_fast / consume / sync) is timed over the
first 400 actions and after 2,400. The browser's share (rendering what is sent) is measured
by the browser tests (``tests/browser``); the model alone by ``python -m iommu_lab bench``.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Iterator

from ..analysis.bench import stepper_cost
from .stepper import Stepper


def bench_widget(cycles: int = 700) -> Iterator[str]:
    """One line: ms per click (model + every view) early and late in a session, and the
    median refresh alone."""
    s = Stepper("smmuv3-v4.15", cmdq_entries=32)
    refresh: list[float] = []
    s.model.on_change(lambda _m: refresh.append(s.update_ms))
    early, late = stepper_cost(s, cycles)
    yield (f"stepper widget, model + every view (map/unmap_fast/consume/sync x {cycles}): "
           f"{early:.2f} ms per action over the first 400, {late:.2f} ms after 2,400; "
           f"views refreshed in {statistics.median(refresh):.1f} ms (median)")


if __name__ == "__main__":
    for line in bench_widget(200 if "--quick" in sys.argv else 700):
        print(line, flush=True)  # noqa: T201 - the benchmark's output

"""Replay a captured ftrace / trace-cmd iommu trace under any strategies and callers.

Kernel tracepoints record each ``iommu_map`` / ``iommu_unmap`` call (and faults) but no
sync, flush or flush-queue activity (kernel-api-history.md §6.2): those are filled in by
the chosen caller pattern, and every result says so. Timestamps become ``at_ns`` so
simulated time (and the flush-queue timer) follows the capture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .analysis.compare import DEFAULT_CALLERS, row
from .analysis.session import Session
from .drivers.registry import STRATEGIES
from .trace_import import read_trace, trace_to_ops

NOTE = ("kernel tracepoints record no sync or flush: the caller pattern decides when those "
        "happen; map/unmap calls, sizes and timestamps come from the trace")


def replay(trace: Any, strategies: Sequence[str] | None = None,
           callers: Sequence[str] | None = None, params: dict[str, Any] | None = None,
           strict: bool = True) -> Any:
    """One row per (strategy, caller), the same columns as ``compare()`` plus ``op_errors``.

    ``trace`` is a DataFrame from :func:`read_trace`, a path, or lines. Operations the
    simulated domain refuses (e.g. an unmap of a region mapped before the capture began)
    are counted in ``op_errors`` and listed in ``notes`` instead of stopping the replay.
    """
    import pandas as pd

    from .analysis.callers import get_caller
    from .drivers.registry import get_strategy

    df = trace if isinstance(trace, pd.DataFrame) else read_trace(trace, strict=strict)
    ops = trace_to_ops(df, strict=strict)
    strategies = list(STRATEGIES) if strategies is None else list(strategies)
    callers = list(DEFAULT_CALLERS) if callers is None else list(callers)
    for s in strategies:
        get_strategy(s)
    for c in callers:
        get_caller(c)
    rows = []
    for s in strategies:
        for c in callers:
            session = Session(s, c, params, lenient=True)
            session.run(ops)
            r = row(session)
            r["op_errors"] = len(session.op_errors)
            if session.op_errors:
                r["notes"] = "; ".join(filter(None, [r["notes"], *session.op_errors[:3]]))
            rows.append(r)
    out = pd.DataFrame(rows)
    gens = df.attrs.get("generations", [])
    note = NOTE
    if "v3.16" in gens:
        note += "; v3.16 traces record post-loop iova/paddr values (unreliable)"
    out.attrs["note"] = note
    out.attrs["events"] = len(df)
    return out

"""``replay()`` with the CPU time of the map phase and the unmap phase reported apart.

The same run as :func:`~iommu_lab.analysis.replay.replay` (one :class:`Session` per
(strategy, caller), lenient, the trace's timestamps as ``at_ns``), stepped op by op so each
op's CPU time is charged to its phase: maps (and ``iotlb_sync_map``) to ``map``; unmaps,
their syncs, and the flushes a caller owes at the end of a stretch of unmaps (VFIO's batch
sync, a flush-all, a flush-queue timer flush) to ``unmap``. The counts and totals are
replay()'s; the test suite checks that they agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..core.dma_iommu import fq_advance, fq_check_timer
from ..errors import einval
from ..inputs.trace import trace_to_ops
from .compare import resolve_jobs, row
from .replay import NOTE
from .session import UNMAP_KINDS, Session

MAP_KINDS = frozenset({"map", "dma_map", "map_sg", "map_sync"})


def replay_phases(trace_df: pd.DataFrame, strategies: Sequence[str] | None = None,
                  callers: Sequence[str] | None = None,
                  params: dict[str, Any] | None = None) -> pd.DataFrame:
    """replay()'s rows plus ``map_cpu_ns`` and ``unmap_cpu_ns`` (one CPU only)."""
    if (params or {}).get("cpus", 1) != 1:
        raise einval("replay_phases() charges time per op on one CPU; use replay() for cpus>1")
    jobs = resolve_jobs(strategies, callers)
    ops = trace_to_ops(trace_df)
    rows = [_run(s, c, params, ops) for s, c in jobs]
    out = pd.DataFrame(rows)
    out.attrs.update(note=NOTE, skips=list(trace_df.attrs.get("skips", [])))
    return out


def _run(strategy: str, caller: str, params: dict[str, Any] | None,
         ops: list[Any]) -> dict[str, Any]:
    s = Session(strategy, caller, params, lenient=True)
    dom = s.dom
    spent = {"map": 0, "unmap": 0, "other": 0}

    def cpu() -> int:
        return dom.stats["cpu_ns"]

    for op in ops:
        t = cpu()
        if op.at_ns is not None and op.at_ns > dom.clock.now:
            fq_advance(dom, op.at_ns - dom.clock.now)   # a timer flush here: deferred unmap work
        fq_check_timer(dom)
        if op.kind not in UNMAP_KINDS:
            s.caller.end_stretch(s)                     # VFIO's last batch sync, a flush-all
        spent["unmap"] += cpu() - t
        t = cpu()
        s.run_op(op)
        phase = "map" if op.kind in MAP_KINDS else "unmap" if op.kind in UNMAP_KINDS else "other"
        spent[phase] += cpu() - t
    t = cpu()
    s.finish()
    spent["unmap"] += cpu() - t
    r = row(s)
    r["op_errors"] = len(s.op_errors)
    if s.op_errors:
        r["notes"] = "; ".join(filter(None, [r["notes"], *s.op_errors[:3]]))
    r["map_cpu_ns"], r["unmap_cpu_ns"] = spent["map"], spent["unmap"]
    return r

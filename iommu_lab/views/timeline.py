"""CPU-vs-IOMMU timeline (a Gantt chart) from the trace, and the overlap it shows.

The IOMMU's busy spans are recorded when the hardware starts a run of commands, so with
early issue (smmuv3-v4.15) the IOMMU works *while* the CPU is still inside
``iommu_unmap_fast``, which is Will Deacon's point in 2017; with a gather (smmuv3-v5.4) it
starts only at the sync.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..hw.commands import OPCODES
from ..trace import TraceEvent
from ._fmt import COLORS, LEAN_TEMPLATE

LANES = ("CPU", "IOMMU", "device")
UNMAP_OPS = ("iommu_unmap", "iommu_unmap_fast")
CPU_COLORS = {"iommu_map": "#64748b", "iommu_unmap": "#0f766e", "iommu_unmap_fast": "#14b8a6",
              "iommu_iotlb_sync": "#f43f5e", "iommu_flush_iotlb_all": "#a855f7"}
DEVICE_COLORS = {"hit": "#16a34a", "walk": "#2563eb", "fault": "#6b7280", "stale": "#dc2626"}


def trace_frame(source: Any, last: int | None = None) -> pd.DataFrame:
    """Accept a domain, a Trace, or a trace DataFrame; return the DataFrame (only its
    ``last`` records when given)."""
    if isinstance(source, pd.DataFrame):
        return source if last is None or len(source) <= last else source.iloc[len(source) - last:]
    trace = getattr(source, "trace", source)
    if last is None:
        return trace.to_dataframe()
    return pd.DataFrame.from_records(trace_records(trace, last), columns=list(TraceEvent._fields))


def trace_records(source: Any, last: int | None = None) -> list[TraceEvent]:
    """The (last ``last``) trace records of a domain, a Trace or a trace DataFrame, as
    :class:`TraceEvent` tuples: a long session's trace is not converted to draw its end,
    and a few hundred records are drawn without pandas overhead."""
    if isinstance(source, pd.DataFrame):
        df = trace_frame(source, last)
        cols = [df[f].tolist() for f in TraceEvent._fields]
        return [TraceEvent(*r) for r in zip(*cols, strict=True)]
    events = getattr(source, "trace", source).events
    if last is None:
        return list(events)
    return events[-last:] if last > 0 else []


def command_kind(op: str) -> str:
    """``inv`` | ``inv_all`` | ``sync`` | ``request`` for an IOMMU span's command name."""
    return OPCODES.get(op, (0, "inv"))[1]


def _union(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def overlap_ns(source: Any, cpu_ops: Iterable[str] = UNMAP_OPS) -> int:
    """IOMMU busy time (ns) that falls inside CPU spans of ``cpu_ops`` (default: the unmaps).

    > 0 means the hardware was already invalidating while the CPU was still unmapping.
    Note that a strict driver (smmuv3-v4.14) also scores here, but only because its CPU
    *waits* inside unmap for every CMD_SYNC: compare ``end_ns`` too.
    """
    return _overlap(trace_records(source), tuple(cpu_ops))


def _overlap(recs: list[TraceEvent], cpu_ops: tuple[str, ...] = UNMAP_OPS) -> int:
    cpu = _union((int(r.t0), int(r.t1)) for r in recs if r.actor == "CPU" and r.op in cpu_ops)
    total = 0
    for r in recs:
        if r.actor != "IOMMU":
            continue
        for a, b in cpu:
            lo, hi = max(a, int(r.t0)), min(b, int(r.t1))
            if hi > lo:
                total += hi - lo
    return total


def _groups(recs: list[TraceEvent], field: str) -> dict[Any, list[TraceEvent]]:
    """Records grouped by a field, groups in order of first appearance."""
    out: dict[Any, list[TraceEvent]] = {}
    for r in recs:
        out.setdefault(getattr(r, field), []).append(r)
    return out


def timeline_figure(source: Any, max_events: int = 3000, title: str | None = None,
                    t_range: tuple[int, int] | None = None) -> go.Figure:
    """Gantt chart: CPU API calls, IOMMU command runs (by kind), device accesses.

    Doorbells (MMIO writes that publish commands) are ticks on the CPU lane. Only the last
    ``max_events`` records are drawn; ``t_range`` zooms to (t0, t1) ns.
    """
    return go.Figure(timeline_spec(source, max_events, title, t_range))


def timeline_spec(source: Any, max_events: int = 3000, title: str | None = None,
                  t_range: tuple[int, int] | None = None) -> dict[str, Any]:
    """:func:`timeline_figure` as plain plotly JSON (``{"data", "layout"}``), for views
    that send it to the browser themselves (no ``go.Figure`` validation, ~10× faster)."""
    recs = trace_records(source, max_events)
    traces: list[dict[str, Any]] = []
    lanes = [lane for lane in LANES
             if lane in ("CPU", "IOMMU") or any(r.actor == lane for r in recs)]

    def bars(sub: list[TraceEvent], lane: str, name: str, color: str) -> None:
        if not sub:
            return
        traces.append({
            "type": "bar", "y": [lane] * len(sub), "x": [max(r.t1 - r.t0, 1) for r in sub],
            "base": [r.t0 for r in sub], "orientation": "h", "name": name,
            "marker": {"color": color, "line": {"color": "white", "width": 0.5}},
            "customdata": [[r.op, r.detail, r.t0, r.t1] for r in sub],
            "hovertemplate": ("%{customdata[0]}<br>%{customdata[1]}<br>"
                              "%{customdata[2]}–%{customdata[3]} ns<extra></extra>")})

    cpu = [r for r in recs if r.actor == "CPU" and r.op != "doorbell"]
    for op, sub in _groups(cpu, "op").items():
        bars(sub, "CPU", str(op), CPU_COLORS.get(str(op), "#94a3b8"))
    iommu = [r for r in recs if r.actor == "IOMMU"]
    if iommu:
        kinds = [command_kind(r.op) for r in iommu]
        for kind in ("inv", "inv_all", "sync", "request"):
            label = {"inv": "IOMMU: invalidation", "inv_all": "IOMMU: invalidate all",
                     "sync": "IOMMU: CMD_SYNC / wait", "request": "IOMMU: request"}[kind]
            bars([r for r, k in zip(iommu, kinds, strict=True) if k == kind], "IOMMU", label,
                 COLORS[kind])
    bells = [r for r in recs if r.actor == "CPU" and r.op == "doorbell"]
    if bells:
        traces.append({
            "type": "scatter", "x": [r.t0 for r in bells], "y": ["CPU"] * len(bells),
            "mode": "markers", "name": "doorbell",
            "marker": {"symbol": "line-ns", "size": 18, "line": {"width": 2, "color": "#111827"}},
            "customdata": [r.detail for r in bells],
            "hovertemplate": "doorbell at %{x} ns<br>%{customdata}<extra></extra>"})
    dev = [r for r in recs if r.actor == "device"]
    for res, sub in _groups(dev, "detail").items():
        traces.append({
            "type": "scatter", "x": [r.t0 for r in sub], "y": ["device"] * len(sub),
            "mode": "markers", "name": f"DMA {res}",
            "marker": {"size": 11, "symbol": "diamond",
                       "color": DEVICE_COLORS.get(str(res), "#6b7280")},
            "customdata": [f"{r.op} {int(r.iova):#x}" for r in sub],
            "hovertemplate": f"%{{customdata}} → {res}<br>at %{{x}} ns<extra></extra>"})
    ov = _overlap(recs)
    end = max(int(r.t1) for r in recs) if recs else 0
    head = title or "CPU vs IOMMU timeline"
    layout = {
        "title": {"text": f"{head}<br><sup>end {end:,} ns · IOMMU busy during CPU unmap: "
                          f"{ov:,} ns</sup>"},
        "barmode": "overlay", "height": 210 + 60 * len(lanes),
        "margin": {"l": 70, "r": 10, "t": 60, "b": 40},
        "xaxis": {"title": {"text": "simulated time (ns)"}},
        "yaxis": {"categoryorder": "array", "categoryarray": list(reversed(lanes))},
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.45}, "plot_bgcolor": "white",
        "template": LEAN_TEMPLATE}
    if t_range:
        layout["xaxis"]["range"] = list(t_range)
    return {"data": traces, "layout": layout}

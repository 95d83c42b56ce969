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
from ._fmt import COLORS, LEAN_TEMPLATE

LANES = ("CPU", "IOMMU", "device")
UNMAP_OPS = ("iommu_unmap", "iommu_unmap_fast")
CPU_COLORS = {"iommu_map": "#64748b", "iommu_unmap": "#0f766e", "iommu_unmap_fast": "#14b8a6",
              "iommu_iotlb_sync": "#f43f5e", "iommu_flush_iotlb_all": "#a855f7"}
DEVICE_COLORS = {"hit": "#16a34a", "walk": "#2563eb", "fault": "#6b7280", "stale": "#dc2626"}


def trace_frame(source: Any) -> pd.DataFrame:
    """Accept a domain, a Trace, or a trace DataFrame; return the DataFrame."""
    if isinstance(source, pd.DataFrame):
        return source
    trace = getattr(source, "trace", source)
    return trace.to_dataframe()


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
    df = trace_frame(source)
    cpu = _union((int(r.t0), int(r.t1)) for r in df.itertuples()
                 if r.actor == "CPU" and r.op in tuple(cpu_ops))
    total = 0
    for r in df[df["actor"] == "IOMMU"].itertuples():
        for a, b in cpu:
            lo, hi = max(a, int(r.t0)), min(b, int(r.t1))
            if hi > lo:
                total += hi - lo
    return total


def timeline_figure(source: Any, max_events: int = 3000, title: str | None = None,
                    t_range: tuple[int, int] | None = None) -> go.Figure:
    """Gantt chart: CPU API calls, IOMMU command runs (by kind), device accesses.

    Doorbells (MMIO writes that publish commands) are ticks on the CPU lane. Only the last
    ``max_events`` records are drawn; ``t_range`` zooms to (t0, t1) ns.
    """
    df = trace_frame(source)
    if len(df) > max_events:
        df = df.iloc[-max_events:]
    traces: list[dict[str, Any]] = []
    lanes = [lane for lane in LANES if lane in ("CPU", "IOMMU") or (df["actor"] == lane).any()]

    def bars(sub: pd.DataFrame, lane: str, name: str, color: str) -> None:
        if sub.empty:
            return
        dur = (sub["t1"] - sub["t0"]).clip(lower=1)
        traces.append({
            "type": "bar", "y": [lane] * len(sub), "x": dur.tolist(),
            "base": sub["t0"].tolist(), "orientation": "h", "name": name,
            "marker": {"color": color, "line": {"color": "white", "width": 0.5}},
            "customdata": [list(r) for r in zip(sub["op"], sub["detail"], sub["t0"].tolist(),
                                                sub["t1"].tolist(), strict=True)],
            "hovertemplate": ("%{customdata[0]}<br>%{customdata[1]}<br>"
                              "%{customdata[2]}–%{customdata[3]} ns<extra></extra>")})

    cpu = df[(df["actor"] == "CPU") & (df["op"] != "doorbell")]
    for op, sub in cpu.groupby("op", sort=False):
        bars(sub, "CPU", str(op), CPU_COLORS.get(str(op), "#94a3b8"))
    iommu = df[df["actor"] == "IOMMU"]
    if len(iommu):
        kinds = iommu["op"].map(command_kind)
        for kind in ("inv", "inv_all", "sync", "request"):
            label = {"inv": "IOMMU: invalidation", "inv_all": "IOMMU: invalidate all",
                     "sync": "IOMMU: CMD_SYNC / wait", "request": "IOMMU: request"}[kind]
            bars(iommu[kinds == kind], "IOMMU", label, COLORS[kind])
    bells = df[(df["actor"] == "CPU") & (df["op"] == "doorbell")]
    if len(bells):
        traces.append({
            "type": "scatter", "x": bells["t0"].tolist(), "y": ["CPU"] * len(bells),
            "mode": "markers", "name": "doorbell",
            "marker": {"symbol": "line-ns", "size": 18, "line": {"width": 2, "color": "#111827"}},
            "customdata": bells["detail"].tolist(),
            "hovertemplate": "doorbell at %{x} ns<br>%{customdata}<extra></extra>"})
    dev = df[df["actor"] == "device"]
    for res, sub in dev.groupby("detail", sort=False):
        traces.append({
            "type": "scatter", "x": sub["t0"].tolist(), "y": ["device"] * len(sub),
            "mode": "markers", "name": f"DMA {res}",
            "marker": {"size": 11, "symbol": "diamond",
                       "color": DEVICE_COLORS.get(str(res), "#6b7280")},
            "customdata": [f"{op} {int(iova):#x}" for op, iova in zip(sub["op"], sub["iova"],
                                                                       strict=True)],
            "hovertemplate": f"%{{customdata}} → {res}<br>at %{{x}} ns<extra></extra>"})
    ov = overlap_ns(df)
    end = int(df["t1"].max()) if len(df) else 0
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
    fig = go.Figure(data=traces, layout=layout)
    return fig

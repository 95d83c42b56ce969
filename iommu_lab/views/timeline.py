"""CPU-vs-IOMMU timeline (a Gantt chart) from the trace, and the overlap it shows.

The IOMMU's busy spans are recorded when the hardware starts a run of commands, so with
early issue (smmuv3-v4.15) the IOMMU works *while* the CPU is still inside
``iommu_unmap_fast``, which is Will Deacon's point in 2017; with a gather (smmuv3-v5.4) it
starts only at the sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..hw.commands import OPCODES
from ..trace import TraceEvent
from ..units import fmt_ns
from ._fmt import COLORS, LEAN_TEMPLATE

UNMAP_OPS = ("iommu_unmap", "iommu_unmap_fast")
CPU_COLORS = {"iommu_map": "#64748b", "iommu_unmap": "#0f766e", "iommu_unmap_fast": "#14b8a6",
              "iommu_iotlb_sync": "#f43f5e", "iommu_flush_iotlb_all": "#a855f7"}
WAIT_COLOR = "#f3f4f6"   # a CPU spinning: hatched, so waiting never reads as work
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
    """IOMMU busy time (ns) while a CPU is *working* inside ``cpu_ops`` (default: the
    unmaps): the CPU's spin-waits (for a CMD_SYNC, a lock, a free slot) do not count.

    > 0 means the hardware was already invalidating while the CPU was still unmapping —
    Will Deacon's point for early issue (smmuv3-v4.15). A strict driver (smmuv3-v4.14) that
    waits inside unmap for every CMD_SYNC does not score for its waiting.
    """
    return _overlap(trace_records(source), wait_records(source), tuple(cpu_ops))


def wait_records(source: Any, since: int = 0) -> list[TraceEvent]:
    """The CPUs' spin-waits of a domain, a Trace or a trace DataFrame (``attrs["waits"]``,
    as :meth:`Trace.to_dataframe` leaves them) that end after ``since`` ns."""
    if isinstance(source, pd.DataFrame):
        waits = source.attrs.get("waits", [])
    else:
        waits = getattr(getattr(source, "trace", source), "waits", [])
    if not since:
        return list(waits)
    i = len(waits)
    while i and waits[i - 1].t1 > since:
        i -= 1
    return waits[i:]


def _minus(spans: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` with the ``holes`` cut out (both sorted, disjoint)."""
    out = []
    for a, b in spans:
        for h0, h1 in holes:
            if h1 <= a or h0 >= b:
                continue
            if h0 > a:
                out.append((a, h0))
            a = max(a, h1)
        if b > a:
            out.append((a, b))
    return out


def _overlap(recs: Sequence[TraceEvent], waits: Sequence[TraceEvent] = (),
             cpu_ops: tuple[str, ...] = UNMAP_OPS) -> int:
    cpu = _union((int(r.t0), int(r.t1)) for r in recs
                 if r.actor.startswith("CPU") and r.op in cpu_ops)
    cpu = _minus(cpu, _union((w.t0, w.t1) for w in waits))
    total = 0
    for r in recs:
        if not r.actor.startswith("IOMMU"):
            continue
        for a, b in cpu:
            lo, hi = max(a, int(r.t0)), min(b, int(r.t1))
            if hi > lo:
                total += hi - lo
    return total


def lanes_of(recs: list[TraceEvent]) -> list[str]:
    """Timeline lanes top to bottom: each CPU (``CPU`` or ``CPU 0`` … in order), each IOMMU,
    then the device when it did something."""
    actors = {r.actor for r in recs}
    cpus = sorted((a for a in actors if a.startswith("CPU")), key=_lane_key) or ["CPU"]
    iommus = sorted((a for a in actors if a.startswith("IOMMU")), key=_lane_key) or ["IOMMU"]
    return cpus + iommus + (["device"] if "device" in actors else [])


def _lane_key(lane: str) -> int:
    tail = lane.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else -1


def _groups(recs: list[TraceEvent], field: str) -> dict[Any, list[TraceEvent]]:
    """Records grouped by a field, groups in order of first appearance."""
    out: dict[Any, list[TraceEvent]] = {}
    for r in recs:
        out.setdefault(getattr(r, field), []).append(r)
    return out


def timeline_figure(source: Any, max_events: int = 3000, title: str | None = None,
                    t_range: tuple[int, int] | None = None) -> go.Figure:
    """Gantt chart: CPU API calls, IOMMU command runs (by kind), device accesses.

    One lane per CPU (``CPU 0`` … with several) and per IOMMU. A CPU spinning — for a
    CMD_SYNC or completion wait, a lock, a free queue slot, another CPU's batch — is drawn
    hatched over the call it waits in, so waiting never reads as work. Doorbells (MMIO
    writes that publish commands) are ticks on their CPU's lane. Time is in µs. Only the
    last ``max_events`` records are drawn; ``t_range`` zooms to (t0, t1) ns.
    """
    return go.Figure(timeline_spec(source, max_events, title, t_range))


def timeline_spec(source: Any, max_events: int = 3000, title: str | None = None,
                  t_range: tuple[int, int] | None = None) -> dict[str, Any]:
    """:func:`timeline_figure` as plain plotly JSON (``{"data", "layout"}``), for views
    that send it to the browser themselves (no ``go.Figure`` validation, ~10× faster)."""
    recs = trace_records(source, max_events)
    waits = wait_records(source, min((r.t0 for r in recs), default=0))
    lanes = lanes_of(recs + waits)
    traces: list[dict[str, Any]] = []
    shown: set[str] = set()

    def bars(sub: list[TraceEvent], name: str, color: str, **extra: Any) -> None:
        for lane, part in _groups(sub, "actor").items():
            traces.append({
                "type": "bar", "y": [lane] * len(part),
                "x": [max(r.t1 - r.t0, 1) / 1e3 for r in part],
                "base": [r.t0 / 1e3 for r in part], "orientation": "h", "name": name,
                "legendgroup": name, "showlegend": name not in shown,
                "marker": {"color": color, "line": {"color": "white", "width": 0.5},
                           **extra},
                "customdata": [[r.op, r.detail, fmt_ns(r.t0), fmt_ns(r.t1 - r.t0)]
                               for r in part],
                "hovertemplate": ("%{customdata[0]}<br>%{customdata[1]}<br>at %{customdata[2]}"
                                  ", for %{customdata[3]}<extra></extra>")})
            shown.add(name)

    cpu = [r for r in recs if r.actor.startswith("CPU") and r.op != "doorbell"]
    for op, sub in _groups(cpu, "op").items():
        bars(sub, str(op), CPU_COLORS.get(str(op), "#94a3b8"))
    for label, sub in _groups(waits, "op").items():   # drawn over the calls they sit in
        bars(sub, f"CPU {label}", WAIT_COLOR, pattern={"shape": "/", "fgcolor": "#6b7280"})
    iommu = [r for r in recs if r.actor.startswith("IOMMU")]
    if iommu:
        kinds = [command_kind(r.op) for r in iommu]
        for kind in ("inv", "inv_all", "sync", "request"):
            label = {"inv": "IOMMU: invalidation", "inv_all": "IOMMU: invalidate all",
                     "sync": "IOMMU: CMD_SYNC / wait", "request": "IOMMU: request"}[kind]
            bars([r for r, k in zip(iommu, kinds, strict=True) if k == kind], label,
                 COLORS[kind])
    bells = [r for r in recs if r.actor.startswith("CPU") and r.op == "doorbell"]
    if bells:
        traces.append({
            "type": "scatter", "x": [r.t0 / 1e3 for r in bells], "y": [r.actor for r in bells],
            "mode": "markers", "name": "doorbell",
            "marker": {"symbol": "line-ns", "size": 18, "line": {"width": 2, "color": "#111827"}},
            "customdata": [[r.detail, fmt_ns(r.t0)] for r in bells],
            "hovertemplate": "doorbell at %{customdata[1]}<br>%{customdata[0]}<extra></extra>"})
    dev = [r for r in recs if r.actor == "device"]
    for res, sub in _groups(dev, "detail").items():
        traces.append({
            "type": "scatter", "x": [r.t0 / 1e3 for r in sub], "y": ["device"] * len(sub),
            "mode": "markers", "name": f"DMA {res}",
            "marker": {"size": 11, "symbol": "diamond",
                       "color": DEVICE_COLORS.get(str(res), "#6b7280")},
            "customdata": [[f"{r.op} {int(r.iova):#x}", fmt_ns(r.t0)] for r in sub],
            "hovertemplate": (f"%{{customdata[0]}} → {res}<br>at %{{customdata[1]}}"
                              "<extra></extra>")})
    ov = _overlap(recs, waits)
    end = max(int(r.t1) for r in recs) if recs else 0
    spun = sum(w.t1 - w.t0 for w in waits)
    head = title or "CPU vs IOMMU timeline"
    layout = {
        "title": {"text": f"{head}<br><sup>end {fmt_ns(end)} · IOMMU busy during CPU unmap "
                          f"(waiting excluded): {fmt_ns(ov)} · CPUs waiting: {fmt_ns(spun)}"
                          "</sup>"},
        "barmode": "overlay", "height": 210 + 60 * len(lanes),
        "margin": {"l": 70, "r": 10, "t": 60, "b": 40},
        "xaxis": {"title": {"text": "simulated time (µs)"}},
        "yaxis": {"categoryorder": "array", "categoryarray": list(reversed(lanes))},
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.45}, "plot_bgcolor": "white",
        "template": LEAN_TEMPLATE}
    if t_range:
        layout["xaxis"]["range"] = [t_range[0] / 1e3, t_range[1] / 1e3]
    return {"data": traces, "layout": layout}

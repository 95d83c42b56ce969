"""Views for lesson 07 (strict vs lazy): the flush queue, the stale window, where a reused
IOVA's DMA lands, and what each mode costs — modelled beside measured.

Pure functions from a domain or from the rows of :mod:`iommu_lab.analysis.lessons_07_08`
to DataFrames (addresses in hex, times in µs or ms) and plotly figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..analysis.lessons_07_08 import MEASURED_LAZY, measured_per_io
from ._fmt import COLORS, LEAN_TEMPLATE, hx, size_label

RESULT_COLORS = {"stale": "#dc2626", "fault": "#64748b", "walk": "#2563eb", "hit": "#16a34a"}


def fmt_time(ns: float | None) -> str:
    """``0.84 µs``, ``512.00 µs``, ``5.101 ms``: simulated nanoseconds for people."""
    if ns is None or pd.isna(ns):
        return "—"
    if abs(ns) < 1_000_000:
        return f"{ns / 1000:,.2f} µs"
    return f"{ns / 1e6:,.3f} ms"


def times_table(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``compare()`` rows: strategy, caller and ``columns``; every ``*_ns`` column shown as
    µs/ms text under its name without ``_ns`` (``max_stale_ns`` → ``max_stale``)."""
    missing = [c for c in ("strategy", "caller", *columns) if c not in df.columns]
    if missing:
        raise ValueError(f"no column(s) {', '.join(missing)} in this result")
    out = df[["strategy", "caller", *columns]].copy()
    for c in columns:
        if c.endswith("_ns"):
            out[c] = [fmt_time(v) for v in out[c]]
            out = out.rename(columns={c: c[:-3]})
    return out.reset_index(drop=True)


# ---- the flush queue now ------------------------------------------------------------------------

def fq_table(dom: Any) -> pd.DataFrame:
    """The domain's flush queue: one row per queued IOVA, on each CPU's ring, with the
    flush it waits for (its ``counter`` + 1: the first flush *started after* it was
    queued) and whether that flush has finished (then the next ``queue_iova`` frees it)."""
    fq = dom.fq
    if fq is None:
        return pd.DataFrame([{"flush queue": f"none: a {dom.type} domain frees IOVAs at "
                              "unmap, after its invalidation completed"}])
    now = dom.clock.now
    rows = []
    for cpu in range(dom.cpus.n):
        for e in fq.rings[cpu]:
            done = e.counter < fq.fq_flush_finish_cnt
            rows.append({"cpu": cpu, "iova": hx(e.iova), "size": size_label(e.size),
                         "queued at": fmt_time(e.queued_ns), "waiting": fmt_time(now - e.queued_ns),
                         "needs flush #": e.counter + 1,
                         "state": "flushed: freed at the next enqueue" if done
                         else "IOVA held; its IOTLB entry may still translate"})
    if not rows:
        return pd.DataFrame([{"flush queue": "empty"}])
    return pd.DataFrame(rows)


def fq_status(dom: Any) -> str:
    """One line: entries per CPU ring (capacity), flushes started/finished, the timer."""
    fq = dom.fq
    if fq is None:
        return f"{dom.type} domain: no flush queue (strict)"
    rings = ", ".join(f"CPU{c}: {len(fq.rings[c])}/{fq.size - 1}" for c in range(dom.cpus.n))
    timer = ("off" if fq.timer_deadline is None
             else f"fires at {fmt_time(fq.timer_deadline)} (in "
                  f"{fmt_time(fq.timer_deadline - dom.clock.now)})")
    return (f"t = {fmt_time(dom.clock.now)} · rings {rings} · flushes started "
            f"{fq.fq_flush_start_cnt}, finished {fq.fq_flush_finish_cnt} · timer {timer}")


# ---- the stale window ---------------------------------------------------------------------------

def stale_windows_table(rows: Sequence[Mapping[str, Any]], limit: int = 12) -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons_07_08.stale_windows`: per unmapped IOVA, when it
    was unmapped, when a flush-all covered it, and the window between (first ``limit``
    rows, then the longest)."""
    shown = list(rows[:limit])
    if len(rows) > limit:
        longest = max(rows, key=lambda r: r["window_ns"] or 0)
        if longest not in shown:
            shown.append(longest)
    return pd.DataFrame([{"iova": hx(r["iova"]), "unmapped at": fmt_time(r["unmapped_ns"]),
                          "covered by flush #": r["flush"] if r["flush"] else "— (strict)",
                          "covered at": fmt_time(r["covered_ns"]),
                          "stale window": fmt_time(r["window_ns"])} for r in shown])


def stale_window_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Longest, mean and shortest stale window of a run, as text."""
    w = [r["window_ns"] for r in rows if r["window_ns"] is not None]
    if not w:
        return {"unmaps": str(len(rows)), "longest": "—", "mean": "—", "shortest": "—"}
    return {"unmaps": f"{len(rows):,}", "longest": fmt_time(max(w)),
            "mean": fmt_time(sum(w) / len(w)), "shortest": fmt_time(min(w))}


def late_writes_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]],
                    title: str = "The device keeps writing after the unmap") -> go.Figure:
    """One row of markers per run (e.g. per caller): each device access to the victim
    after its unmap, at its time since the unmap (ms), coloured by what the IOMMU did."""
    traces, seen = [], set()
    for label, rows in runs.items():
        for result, color in RESULT_COLORS.items():
            pts = [r for r in rows if r["after_unmap_ns"] is not None and r["result"] == result]
            if not pts:
                continue
            traces.append({"type": "scatter", "mode": "markers", "name": result,
                           "legendgroup": result, "showlegend": result not in seen,
                           "x": [r["after_unmap_ns"] / 1e6 for r in pts],
                           "y": [label] * len(pts),
                           "marker": {"color": color, "size": 12, "symbol": "square"},
                           "hovertemplate": f"{label}: {result} at %{{x:.3f}} ms after the "
                                            "unmap<extra></extra>"})
            seen.add(result)
    fig = go.Figure(data=traces, layout={
        "title": {"text": title}, "height": 120 + 60 * len(runs),
        "xaxis": {"title": {"text": "time since the unmap (ms)"}, "rangemode": "tozero"},
        "yaxis": {"type": "category"}, "margin": {"l": 90, "r": 10, "t": 50, "b": 50},
        "template": LEAN_TEMPLATE})
    fig.add_vline(x=10, line={"dash": "dot", "color": "#7c3aed"},
                  annotation_text="IOVA_FQ_TIMEOUT 10 ms")
    return fig


def unflushed_figure(rows: Sequence[Mapping[str, Any]],
                     title: str = "Unmapped but not yet flushed",
                     capacity: int | None = 255) -> go.Figure:
    """Step line of :func:`~iommu_lab.analysis.lessons_07_08.unflushed_series` over time
    (ms), with a marker at every flush-all and a line at the ring's ``capacity`` (one CPU's
    ring holds 255; None draws none)."""
    flushes = [r for r in rows if r["event"] == "flush-all"]
    fig = go.Figure(data=[
        {"type": "scatter", "mode": "lines", "line": {"shape": "hv", "color": COLORS["inv"]},
         "name": "IOVAs waiting for a flush", "x": [r["t_ns"] / 1e6 for r in rows],
         "y": [r["unflushed"] for r in rows]},
        {"type": "scatter", "mode": "markers", "name": "flush-all",
         "marker": {"color": COLORS["inv_all"], "size": 10, "symbol": "x"},
         "x": [r["t_ns"] / 1e6 for r in flushes], "y": [0] * len(flushes)}],
        layout={"title": {"text": title}, "height": 320,
                "xaxis": {"title": {"text": "simulated time (ms)"}},
                "yaxis": {"title": {"text": "unmapped, not yet flushed"}, "rangemode": "tozero"},
                "margin": {"l": 60, "r": 10, "t": 50, "b": 50}, "template": LEAN_TEMPLATE})
    if capacity:
        fig.add_hline(y=capacity, line={"dash": "dot", "color": COLORS["sync"]},
                      annotation_text=f"ring full: {capacity} queued")
    return fig


def window_gap_figure(rows: Sequence[Mapping[str, Any]], fq_size: int = 256,
                  timeout_ms: float = 10.0) -> go.Figure:
    """:func:`~iommu_lab.analysis.lessons_07_08.window_vs_gap`: the victim's stale window
    (ms) against the gap between unmaps (µs, log axis), with the two bounds: the ring
    filling, (``fq_size`` − 1) × gap, and the timer."""
    gaps = [r["gap_ns"] / 1000 for r in rows]
    lo, hi = min(gaps), max(gaps)
    span = [lo * (hi / lo) ** (i / 40) for i in range(41)] if hi > lo else [lo]
    traces = [
        {"type": "scatter", "mode": "lines", "name": f"ring full: {fq_size - 1} × gap",
         "x": span, "y": [(fq_size - 1) * g / 1000 for g in span],
         "line": {"dash": "dash", "color": COLORS["inv"]}},
        {"type": "scatter", "mode": "lines", "name": f"timer: {timeout_ms:g} ms",
         "x": [lo, hi], "y": [timeout_ms, timeout_ms],
         "line": {"dash": "dot", "color": COLORS["inv_all"]}},
        {"type": "scatter", "mode": "markers", "name": "modelled window",
         "x": gaps, "y": [(r["window_ns"] or 0) / 1e6 for r in rows],
         "text": [r["ended_by"] for r in rows],
         "marker": {"size": 11, "color": COLORS["sync"]},
         "hovertemplate": "gap %{x:.1f} µs → window %{y:.3f} ms (%{text})<extra></extra>"}]
    return go.Figure(data=traces, layout={
        "title": {"text": "How long a lazily unmapped IOVA stays translatable"},
        "xaxis": {"title": {"text": "gap between unmaps on this CPU (µs, log scale)"},
                  "type": "log"},
        "yaxis": {"title": {"text": "stale window (ms)"}, "rangemode": "tozero",
                  "range": [0, timeout_ms * 1.25]},
        "height": 380, "margin": {"l": 60, "r": 10, "t": 50, "b": 50},
        "template": LEAN_TEMPLATE})


def window_gap_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons_07_08.window_vs_gap` as a table."""
    return pd.DataFrame([{"gap between unmaps": fmt_time(r["gap_ns"]),
                          "unmaps/s": f"{r['unmaps_per_s']:,}",
                          "stale window": fmt_time(r["window_ns"]), "ended by": r["ended_by"]}
                         for r in rows])


# ---- reuse, and the costs -------------------------------------------------------------------

def reuse_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons_07_08.reuse_hazard`: where B's DMA landed."""
    out = []
    for r in rows:
        landed = r["lands in"]
        whose = ("B's page ✓" if landed == r["B's page"] else
                 "A's page ✗ (freed: B's data lost, A's page's new owner overwritten)"
                 if landed == r["A's page"] else hx(landed))
        out.append({"case": r["case"], "A's IOVA": hx(r["A's IOVA"]),
                    "B's IOVA": hx(r["B's IOVA"]), "device writes B": r["device writes B"],
                    "B's data lands in": whose})
    return pd.DataFrame(out)


def lazy_costs_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons_07_08.strict_vs_lazy`: CPU time per map, per
    unmap (with its share of the flush-alls) and per I/O, in µs, with the commands."""
    return pd.DataFrame([{"strategy": r["strategy"], "caller": r["caller"],
                          "map (µs)": round(r["map_ns_per_call"] / 1000, 3),
                          "unmap (µs)": round(r["unmap_ns_per_call"] / 1000, 3),
                          "per I/O (µs)": round(r["per_io_ns"] / 1000, 3),
                          "inv_cmds": r["inv_cmds"], "sync_cmds": r["sync_cmds"],
                          "fq_flushes": r["fq_flushes"]} for r in rows])


def lazy_measured_table() -> pd.DataFrame:
    """Published lazy-vs-strict figures (hardware-invalidation.md §7), with sources."""
    return pd.DataFrame(list(MEASURED_LAZY))


def lazy_measured_per_io_table() -> pd.DataFrame:
    """Gupta 2025 as µs per I/O, and the IOMMU's share (minus passthrough) [derived]."""
    return pd.DataFrame([{"mode": r["mode"], "IOPS": f"{r['kiops'] / 1000:.2f} M",
                          "per I/O (µs)": round(r["ns_per_io"] / 1000, 3),
                          "IOMMU share per I/O (µs)": round(r["iommu_ns_per_io"] / 1000, 3)}
                         for r in measured_per_io()])


__all__ = ["fmt_time", "fq_status", "fq_table", "late_writes_figure", "lazy_costs_table",
           "lazy_measured_per_io_table", "lazy_measured_table", "reuse_table",
           "stale_window_summary", "stale_windows_table", "times_table", "unflushed_figure",
           "window_gap_figure", "window_gap_table"]

"""Views of a replayed trace (notebook 09, the trace-upload app): pure functions from the
analysis results to DataFrames and plotly figures, times in µs / ms, IOVAs in hex.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ._fmt import LEAN_TEMPLATE, hex_dtick

EVENT_STYLE = {  # event -> (colour, marker symbol, label)
    "map": ("#2563eb", "circle", "map"),
    "unmap": ("#f59e0b", "diamond", "unmap"),
    "io_page_fault": ("#dc2626", "x", "io_page_fault"),
}
STALE_COLOR = "#7c3aed"
MAX_POINTS = 4000                  # per event kind; a figure is sent to the browser as JSON
REPLAY_COUNTS = ("unmap_calls", "inv_cmds", "inv_all_cmds", "sync_cmds", "doorbells",
                 "fq_flushes", "op_errors")


def us(ns: Any) -> float:
    """Nanoseconds -> microseconds, one decimal."""
    return round(float(ns) / 1e3, 1)


def ms(ns: Any) -> float:
    """Nanoseconds -> milliseconds, three decimals."""
    return round(float(ns) / 1e6, 3)


def replay_table(df: pd.DataFrame, counts: Sequence[str] = REPLAY_COUNTS) -> pd.DataFrame:
    """A replay result as a table: strategy, caller, the counts, then the CPU time of the map
    and unmap phases (µs, when the result has them) and the end time (ms)."""
    missing = [c for c in ("strategy", "caller") if c not in df.columns]
    if missing:
        raise ValueError(f"not a replay result: no column(s) {', '.join(missing)}")
    out = df[["strategy", "caller"] + [c for c in counts if c in df.columns]].copy()
    if "map_cpu_ns" in df.columns:
        out["map CPU (µs)"] = [us(v) for v in df["map_cpu_ns"]]
        out["unmap CPU (µs)"] = [us(v) for v in df["unmap_cpu_ns"]]
    if "end_ns" in df.columns:
        out["end (ms)"] = [ms(v) for v in df["end_ns"]]
    return out.reset_index(drop=True)


def infer_table(ranked: pd.DataFrame) -> pd.DataFrame:
    """``infer_callers()`` for reading: rank, caller, verdict, score, evidence."""
    return ranked[["rank", "caller", "verdict", "score", "evidence"]].reset_index(drop=True)


def lazy_table(res: pd.DataFrame) -> pd.DataFrame:
    """``stale_under_lazy()`` for reading: one row per fault, times in ms, IOVAs in hex."""
    return pd.DataFrame({
        "line": res["line"],
        "device": res["device"],
        "iova": [f"{int(v):#x}" for v in res["iova"]],
        "unmap line": res["unmap_line"],
        "after unmap (ms)": [round(v / 1e3, 3) if v == v else np.nan
                             for v in res["since_unmap_us"]],
        "strict": res["strict"], "lazy": res["lazy"], "why": res["why"]})


def _sample(idx: np.ndarray, limit: int) -> np.ndarray:
    if len(idx) <= limit:
        return idx
    return idx[np.linspace(0, len(idx) - 1, limit).astype(int)]


def trace_figure(trace_df: pd.DataFrame, lazy: pd.DataFrame | None = None,
                 title: str = "the trace: IOVA over time") -> go.Figure:
    """Maps, unmaps and faults as points (x: ms since the first event, y: IOVA); faults that
    ``stale_under_lazy()`` found would be stale hits under lazy flushing are ringed.

    Without timestamps x is the event number. At most ``MAX_POINTS`` points per kind are
    drawn (evenly sampled; every fault is kept)."""
    ev = trace_df["event"].astype(str).to_numpy()
    iova = pd.Series(trace_df["iova"]).fillna(0).astype("uint64").to_numpy()
    ts = (pd.Series(trace_df["timestamp"], dtype="float64").to_numpy()
          if "timestamp" in trace_df.columns else np.full(len(ev), np.nan))
    timed = bool(np.isfinite(ts).any())
    x = (ts - np.nanmin(ts)) * 1e3 if timed else np.arange(1, len(ev) + 1, dtype=float)
    lines = (trace_df["line"].to_numpy() if "line" in trace_df.columns
             else np.arange(1, len(ev) + 1))
    traces: list[dict[str, Any]] = []
    for kind, (color, symbol, label) in EVENT_STYLE.items():
        idx = np.flatnonzero(ev == kind)
        if kind != "io_page_fault":
            idx = _sample(idx, MAX_POINTS)
        if not len(idx):
            continue
        traces.append({"type": "scatter", "mode": "markers", "name": label,
                       "x": x[idx].round(3).tolist(), "y": iova[idx].astype(float).tolist(),
                       "marker": {"color": color, "symbol": symbol, "size": 7 if kind ==
                                  "io_page_fault" else 5},
                       "customdata": [[int(lines[i]), f"{int(iova[i]):#x}"] for i in idx],
                       "hovertemplate": f"{label} line %{{customdata[0]}}<br>iova "
                                        "%{customdata[1]}<extra></extra>"})
    if lazy is not None and len(lazy):
        stale = lazy[lazy["lazy"] == "stale"]
        if len(stale):
            rows = trace_df.reset_index(drop=True)
            pos = [int(np.flatnonzero(lines == ln)[0]) for ln in stale["line"]
                   if (lines == ln).any()]
            traces.append({"type": "scatter", "mode": "markers", "name": "stale hit if lazy",
                           "x": [float(x[i]) for i in pos],
                           "y": [float(iova[i]) for i in pos],
                           "marker": {"color": "rgba(0,0,0,0)", "size": 18, "symbol": "circle",
                                      "line": {"color": STALE_COLOR, "width": 3}},
                           "customdata": [[int(rows["line"].iloc[i]) if "line" in rows
                                           else i + 1] for i in pos],
                           "hovertemplate": "fault line %{customdata[0]}: a stale hit under "
                                            "lazy flushing<extra></extra>"})
    lo = int(iova.min()) if len(iova) else 0
    hi = int(iova.max()) if len(iova) else 1
    step = hex_dtick(max(hi - lo, 1), 5)
    fig = go.Figure(data=traces, layout={
        "title": {"text": title},
        "xaxis": {"title": {"text": "ms since the first event" if timed else "event number"}},
        "yaxis": {"title": {"text": "IOVA"}, "tickformat": "#x", "tick0": lo - lo % step,
                  "dtick": step},
        "height": 380, "margin": {"l": 90, "r": 10, "t": 50, "b": 50},
        "legend": {"orientation": "h", "y": -0.2}, "template": LEAN_TEMPLATE})
    return fig

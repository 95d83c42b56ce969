"""Views of a ``compare()`` result: grouped bars per strategy and caller, tables."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from ._fmt import LEAN_TEMPLATE

DEFAULT_METRICS = ("inv_cmds", "inv_all_cmds", "sync_cmds", "doorbells", "wasted_inv_cmds",
                   "needless_sync_cmds", "cpu_ns", "iommu_ns", "end_ns")
CALLER_COLORS = ("#2563eb", "#f59e0b", "#16a34a", "#dc2626", "#7c3aed", "#0891b2", "#64748b")


def _check(df: pd.DataFrame, metrics: Sequence[str]) -> None:
    missing = [m for m in ("strategy", "caller", *metrics) if m not in df.columns]
    if missing:
        raise ValueError(f"compare() result has no column(s) {', '.join(missing)}; "
                         f"available: {', '.join(map(str, df.columns))}")


def compare_table(df: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS) -> pd.DataFrame:
    """The columns worth reading: strategy, caller, kernel, then ``metrics``."""
    metrics = [m for m in metrics if m in df.columns] if metrics is DEFAULT_METRICS else metrics
    _check(df, metrics)
    cols = ["strategy", "caller"] + (["kernel"] if "kernel" in df.columns else []) + list(metrics)
    return df[cols].reset_index(drop=True)


def compare_pivot(df: pd.DataFrame, metric: str = "inv_cmds") -> pd.DataFrame:
    """``metric`` as a strategy × caller table (strategies and callers in input order)."""
    _check(df, [metric])
    out = df.pivot(index="strategy", columns="caller", values=metric)
    out = out.reindex(index=list(dict.fromkeys(df["strategy"])),
                      columns=list(dict.fromkeys(df["caller"])))
    out.columns.name = f"{metric} by caller"
    return out


def compare_figure(df: pd.DataFrame, metric: str = "inv_cmds", log: bool = False,
                   title: str | None = None) -> go.Figure:
    """Grouped bars: x = strategy, one bar colour per caller, y = ``metric``.

    ``log=True`` uses a log y axis (counts span orders of magnitude: 1 flush-all vs
    65,536 TLBIs); zero values are then drawn at the axis floor and labelled "0".
    """
    _check(df, [metric])
    strategies = list(dict.fromkeys(df["strategy"]))
    traces = []
    for i, caller in enumerate(dict.fromkeys(df["caller"])):
        sub = df[df["caller"] == caller].set_index("strategy").reindex(strategies)
        vals = [None if pd.isna(v) else int(v) for v in sub[metric]]
        shown = [(v if v else (0.5 if log else 0)) if v is not None else None for v in vals]
        labels = [("" if v is None else f"{v:,}") for v in vals]
        traces.append({
            "type": "bar", "x": strategies, "y": shown, "name": str(caller),
            "marker": {"color": CALLER_COLORS[i % len(CALLER_COLORS)]},
            "text": labels, "textposition": "outside", "customdata": labels,
            "hovertemplate": f"%{{x}} · {caller}<br>{metric} = %{{customdata}}<extra></extra>"})
    workload = df.attrs.get("workload", "")
    fig = go.Figure(data=traces, layout={
        "barmode": "group",
        "title": {"text": title or f"{metric} per strategy and caller"
                  + (f" ({workload})" if workload else "")},
        "yaxis": {"title": {"text": metric + (" (log scale)" if log else "")},
                  "type": "log" if log else "linear", **({"dtick": 1} if log else {})},
        "xaxis": {"title": {"text": "driver strategy"}},
        "legend": {"title": {"text": "caller"}}, "height": 440,
        "margin": {"l": 60, "r": 10, "t": 60, "b": 60}, "uniformtext": {"minsize": 8},
        "template": LEAN_TEMPLATE})
    return fig

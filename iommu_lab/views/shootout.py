"""Views for lesson 08 (the strategy shoot-out): tables and figures of ``compare()`` /
``sweep()`` results and of the rows of :mod:`iommu_lab.analysis.lessons_07_08` — pivots per
workload and caller, cost against size on log axes, CPU scaling, and what a cost sweep
keeps (counts) or flips (times). Times are shown in µs; they come from the cost model,
whose numbers are mostly assumptions (``iommu_lab.hw.costs.cost_table()``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..units import parse_size
from ._fmt import LEAN_TEMPLATE

LINE_COLORS = ("#2563eb", "#dc2626", "#16a34a", "#f59e0b", "#7c3aed", "#0891b2", "#64748b",
               "#db2777", "#0f766e", "#854d0e")
DASHES = ("solid", "dash", "dot", "dashdot")
TIME_LABELS = {"end_ns": "end (µs)", "cpu_ns": "CPU time (µs)", "unmap_ns": "unmap (µs)",
               "cpu_per_unmap_ns": "CPU per unmap (µs)", "api_end_ns": "done (µs)",
               "lock_wait_ns": "lock wait (µs)", "spin_ns": "spinning (µs)",
               "cacheline_ns": "cacheline transfers (µs)", "iommu_ns": "IOMMU busy (µs)",
               "max_stale_ns": "max stale (µs)"}


def label(metric: str) -> str:
    """``end (µs)`` for ``end_ns``; other names unchanged."""
    return TIME_LABELS.get(metric, metric)


def _value(metric: str, v: Any) -> Any:
    """Nanosecond metrics as µs (2 decimals); counts unchanged."""
    if metric.endswith("_ns") and v is not None and not pd.isna(v):
        return round(float(v) / 1000, 2)
    return v


def shootout_pivot(df: pd.DataFrame, metric: str = "commands") -> pd.DataFrame:
    """``metric`` per (workload, caller) × strategy, in input order; ``*_ns`` metrics in µs."""
    missing = [c for c in ("workload", "caller", "strategy", metric) if c not in df.columns]
    if missing:
        raise ValueError(f"no column(s) {', '.join(missing)}; run lessons_07_08.shootout()")
    out = df.pivot_table(index=["workload", "caller"], columns="strategy", values=metric,
                         sort=False, aggfunc="first")
    out = out.reindex(columns=list(dict.fromkeys(df["strategy"])))
    out = out.apply(lambda col: [_value(metric, v) for v in col])
    out.columns.name = label(metric)
    return out


def winners_table(df: pd.DataFrame, metrics: Sequence[str] = ("commands", "cpu_per_unmap_ns"),
                  by: Sequence[str] = ("workload", "caller")) -> pd.DataFrame:
    """Per group of ``by``: the strategy with the smallest value of each metric."""
    from ..analysis.lessons_07_08 import winners

    cols = {m: winners(df, by, m) for m in metrics}
    keys = list(next(iter(cols.values())))
    rows = [{**dict(zip(by, k)), **{f"fewest/least {label(m)}": cols[m][k] for m in metrics}}
            for k in keys]
    return pd.DataFrame(rows)


def _xy_lines(rows: Sequence[Mapping[str, Any]], x: str, metric: str,
              series: Sequence[str]) -> list[dict[str, Any]]:
    names = list(dict.fromkeys(tuple(r[s] for s in series) for r in rows))
    first = list(dict.fromkeys(n[0] for n in names))
    traces = []
    for name in names:
        mine = [r for r in rows if tuple(r[s] for s in series) == name]
        color = LINE_COLORS[first.index(name[0]) % len(LINE_COLORS)]
        dash = DASHES[[n for n in names if n[0] == name[0]].index(name) % len(DASHES)]
        traces.append({"type": "scatter", "mode": "lines+markers", "name": " · ".join(name),
                       "x": [r[x] for r in mine],
                       "y": [_value(metric, r[metric]) for r in mine],
                       "line": {"color": color, "dash": dash}})
    return traces


def size_figure(rows: Sequence[Mapping[str, Any]], metric: str = "commands",
                x: str = "pages", title: str | None = None) -> go.Figure:
    """Log-log lines, one per strategy: ``metric`` against size (``pages`` of
    :func:`~iommu_lab.analysis.lessons_07_08.unmap_vs_size`). A slope of 1 grows with every
    page; a flat line does not."""
    traces = _xy_lines(rows, x, metric, ["strategy"])
    return go.Figure(data=traces, layout={
        "title": {"text": title or f"{label(metric)} against unmap size (log–log)"},
        "xaxis": {"title": {"text": "4K pages unmapped by one call (log)"}, "type": "log"},
        "yaxis": {"title": {"text": label(metric) + " (log)"}, "type": "log"},
        "height": 420, "margin": {"l": 60, "r": 10, "t": 50, "b": 50},
        "template": LEAN_TEMPLATE})


def sweep_figure(df: pd.DataFrame, key: str, metric: str, log_x: bool = True,
                 log_y: bool = False, title: str | None = None) -> go.Figure:
    """Lines, one per (strategy, caller): ``metric`` against the sweep's ``key``. Sizes
    such as ``"64M"`` are plotted as bytes (log axis, labelled with the sizes)."""
    rows = df.to_dict("records")
    sizes = all(isinstance(r[key], str) for r in rows)
    if sizes:
        for r in rows:
            r["_x"] = parse_size(r[key], key)
    multi = df["caller"].nunique() > 1
    traces = _xy_lines(rows, "_x" if sizes else key, metric,
                       ["strategy", "caller"] if multi else ["strategy"])
    xaxis: dict[str, Any] = {"title": {"text": key + (" (log)" if log_x else "")},
                             "type": "log" if log_x else "linear"}
    if sizes:
        ticks = list(dict.fromkeys(df[key]))
        xaxis.update(tickvals=[parse_size(t, key) for t in ticks], ticktext=ticks)
    return go.Figure(data=traces, layout={
        "title": {"text": title or f"{label(metric)} against {key}"}, "xaxis": xaxis,
        "yaxis": {"title": {"text": label(metric) + (" (log)" if log_y else "")},
                  "type": "log" if log_y else "linear",
                  **({} if log_y else {"rangemode": "tozero"})},
        "height": 400, "margin": {"l": 60, "r": 10, "t": 50, "b": 50},
        "template": LEAN_TEMPLATE})


def scaling_lines(rows: Sequence[Mapping[str, Any]], metric: str = "unmaps_per_s",
                  title: str | None = None) -> go.Figure:
    """:func:`~iommu_lab.analysis.lessons_07_08.dma_scaling`: ``metric`` against CPUs (log2
    axis), one line per (strategy, caller)."""
    traces = _xy_lines(rows, "cpus", metric, ["strategy", "caller"])
    cpus = sorted({r["cpus"] for r in rows})
    return go.Figure(data=traces, layout={
        "title": {"text": title or f"{label(metric)} against CPUs"},
        "xaxis": {"title": {"text": "CPUs doing DMA at once (log)"}, "type": "log",
                  "tickvals": cpus},
        "yaxis": {"title": {"text": label(metric)}, "rangemode": "tozero"},
        "height": 420, "margin": {"l": 70, "r": 10, "t": 50, "b": 50},
        "template": LEAN_TEMPLATE})


def scaling_rows_table(rows: Sequence[Mapping[str, Any]],
                       cpus: Sequence[int] | None = None) -> pd.DataFrame:
    """The scaling rows as a table (times in µs); ``cpus`` keeps only those CPU counts."""
    keep = [r for r in rows if cpus is None or r["cpus"] in cpus]
    cols = ["strategy", "caller", "cpus", "unmaps_per_s", "api_end_ns", "lock_wait_ns",
            "spin_ns", "cacheline_ns", "sync_cmds", "doorbells", "fq_flushes"]
    return pd.DataFrame([{label(c): _value(c, r[c]) for c in cols} for r in keep])


def verdicts_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons_07_08.verdicts`: per metric, the winner at each
    grid value and whether it holds or flips."""
    out = []
    for r in rows:
        row = {k: v for k, v in r.items() if k not in ("winners", "verdict", "metric")}
        row["metric"] = label(r["metric"])
        row.update({str(k): v for k, v in r["winners"].items()})
        row["verdict"] = r["verdict"]
        out.append(row)
    return pd.DataFrame(out)


def sizes_table(rows: Sequence[Mapping[str, Any]], metric: str = "unmap_ns") -> pd.DataFrame:
    """:func:`~iommu_lab.analysis.lessons_07_08.unmap_vs_size` as pages × strategy."""
    df = pd.DataFrame(list(rows))
    out = df.pivot(index="pages", columns="strategy", values=metric)
    out = out.reindex(columns=list(dict.fromkeys(df["strategy"])))
    out = out.apply(lambda col: [_value(metric, v) for v in col])
    out.columns.name = label(metric)
    return out


__all__ = ["label", "scaling_lines", "scaling_rows_table", "shootout_pivot", "size_figure",
           "sizes_table", "sweep_figure", "verdicts_table", "winners_table"]

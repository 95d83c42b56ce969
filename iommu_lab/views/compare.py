"""Views of a ``compare()`` result: grouped bars per strategy and caller, tables."""

from __future__ import annotations

import html as _h
import math
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


def compare_html(df: pd.DataFrame, metric: str = "inv_cmds", log: bool = False,
                 title: str | None = None, width: int = 900, height: int = 400) -> str:
    """:func:`compare_figure` as plain HTML + SVG (``div.iommu-compare-chart``): the same
    grouped bars, value labels, axis (log or linear) and legend, one ``rect.iommu-cbar`` per
    bar (``data-strategy``, ``data-caller``; ``<title>`` = the hover text). The dashboard
    shows this: a page that draws no plotly figure does not run plotly.js, whose start-up
    and first drawing took ~2.5 s of a Voilà page's start on a loaded 2-core machine
    (issue 13)."""
    _check(df, [metric])
    strategies = list(dict.fromkeys(df["strategy"]))
    callers = list(dict.fromkeys(df["caller"]))
    vals = {(s, c): int(v) for s, c, v in zip(df["strategy"], df["caller"], df[metric])
            if not pd.isna(v)}
    top = max(vals.values(), default=0)
    left, right, top_m, bottom = 70, 10, 16, 70
    pw, ph = width - left - right, height - top_m - bottom
    if log:
        hi = 10 ** max(1, math.ceil(math.log10(max(top, 1))))
        ticks = [10 ** k for k in range(0, int(math.log10(hi)) + 1)]
        lo_log = math.log10(0.5)

        def sy(v: float) -> float:
            return top_m + ph * (1 - (math.log10(max(v, 0.5)) - lo_log)
                                 / (math.log10(hi) - lo_log))
    else:
        step = _nice_step(top / 5) if top else 1
        hi = step * max(1, math.ceil(top / step))
        ticks = [k * step for k in range(int(hi / step) + 1)]

        def sy(v: float) -> float:
            return top_m + ph * (1 - v / hi)
    esc = _h.escape
    out = [f'<svg class="iommu-compare-svg" viewBox="0 0 {width} {height}" width="100%" '
           f'style="max-width:{width * 1.2:.0f}px" xmlns="http://www.w3.org/2000/svg">']
    for t in ticks:
        y = sy(t)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#e5e7eb"/><text x="{left - 6}" y="{y + 4:.1f}" '
                   f'text-anchor="end" font-size="10" fill="#6b7280">{t:,.6g}</text>')
    group = pw / max(len(strategies), 1)
    bar = group * 0.8 / max(len(callers), 1)
    for i, s in enumerate(strategies):
        gx = left + i * group
        out.append(f'<text x="{gx + group / 2:.1f}" y="{top_m + ph + 16}" '
                   f'text-anchor="middle" font-size="11">{esc(str(s))}</text>')
        for j, c in enumerate(callers):
            if (s, c) not in vals:
                continue
            v = vals[(s, c)]
            x, y = gx + group * 0.1 + j * bar, sy(v if v or not log else 0.5)
            color = CALLER_COLORS[j % len(CALLER_COLORS)]
            out.append(f'<rect class="iommu-cbar" data-strategy="{esc(str(s))}" '
                       f'data-caller="{esc(str(c))}" x="{x:.1f}" y="{y:.1f}" '
                       f'width="{bar:.1f}" height="{top_m + ph - y:.1f}" fill="{color}">'
                       f"<title>{esc(f'{s} · {c}')}\n{esc(metric)} = {v:,}</title></rect>"
                       f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                       f'font-size="9">{v:,}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 20}" text-anchor="middle" '
               f'font-size="11" fill="#374151">driver strategy</text>'
               f'<text transform="translate(14,{top_m + ph / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle" font-size="11" fill="#374151">'
               f'{esc(metric + (" (log scale)" if log else ""))}</text></svg>')
    legend = "".join(
        f'<span class="iommu-compare-key" style="margin-right:10px"><span style="display:'
        f'inline-block;width:12px;height:10px;background:{CALLER_COLORS[j % len(CALLER_COLORS)]}'
        f'"></span> {esc(str(c))}</span>' for j, c in enumerate(callers))
    workload = df.attrs.get("workload", "")
    head = title or f"{metric} per strategy and caller" + (f" ({workload})" if workload else "")
    return (f'<div class="iommu-compare-chart" style="font-family:sans-serif;font-size:12px">'
            f'<div class="iommu-compare-head" style="font-weight:bold;font-size:14px">'
            f'{esc(head)}</div>{"".join(out)}<div class="iommu-compare-legend">caller: '
            f"{legend}</div></div>")


def _nice_step(raw: float) -> float:
    """1, 2 or 5 × 10^k, the first at least ``raw``."""
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)

"""A Gantt chart given as plotly JSON, drawn as plain HTML + SVG: the stepper's timeline.

Issue 13 measured a stepper click in Chromium: the page showed the new status ~20-50 ms after
the click, then spent 70-330 ms in one long task, plotly relaying out the timeline
(``Plotly.react``), and a Voilà page first had to load plotly.js (4.8 MB) to draw it. The
same picture as SVG is a few ms of ``innerHTML``.

Draws the part of plotly that :func:`iommu_lab.views.timeline_spec` uses: horizontal
``bar`` traces (``base`` = start, ``x`` = length, ``y`` = lane; marker colour, outline, a
hatch ``pattern``), ``scatter`` markers (``diamond``, ``line-ns``, else a circle), lanes from
``yaxis.categoryarray`` (plotly lists them bottom first), a linear x axis (``xaxis.range``
or the data's extent), the title (``head<br><sup>sub</sup>``), each mark's hover text
(``hovertemplate`` with ``%{customdata[i]}``) as an SVG ``<title>``, and the legend. A trace
of any other kind is named under the chart as not drawn (the plotly figure shows it).
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

WIDTH, LANE_H, LEFT, RIGHT, TOP, AXIS_H = 760, 34, 78, 14, 8, 34
BAR_FILL = 0.8                  # a bar's share of its lane's height (plotly's default)
_TAG = re.compile(r"<[^>]+>")
_CUSTOM = re.compile(r"%\{customdata\[(\d+)\]\}")


def title_parts(layout: dict[str, Any]) -> tuple[str, str]:
    """A plotly title ``"head<br><sup>sub</sup>"`` as plain (head, sub)."""
    t = layout.get("title") or ""
    text = t.get("text") or "" if isinstance(t, dict) else str(t)
    head, _, sub = text.partition("<br>")
    return _plain(head), _plain(sub)


def _plain(markup: str) -> str:
    return html.unescape(_TAG.sub("", markup)).strip()


def drawable(trace: dict[str, Any]) -> bool:
    """Whether :func:`gantt_html` draws this trace."""
    kind = trace.get("type", "scatter")
    if kind == "bar":
        return trace.get("orientation") == "h"
    return kind == "scatter" and "markers" in str(trace.get("mode", "markers"))


def lanes_of(spec: dict[str, Any]) -> list[str]:
    """Lanes top to bottom: ``yaxis.categoryarray`` reversed (plotly puts its first entry
    at the bottom), then any other lane the traces use, in order of appearance."""
    order = list(reversed((spec.get("layout", {}).get("yaxis") or {}).get("categoryarray")
                          or []))
    for tr in spec.get("data", []):
        for y in tr.get("y") or []:
            if y not in order:
                order.append(y)
    return [str(y) for y in order]


def x_range(spec: dict[str, Any]) -> tuple[float, float]:
    """``xaxis.range``, else the extent of the bars and markers (2% margin each side)."""
    given = (spec.get("layout", {}).get("xaxis") or {}).get("range")
    if given:
        return float(given[0]), float(given[1])
    xs: list[float] = []
    for tr in spec.get("data", []):
        if not drawable(tr):
            continue
        x = [float(v) for v in tr.get("x") or [] if v is not None]
        if tr.get("type") == "bar":
            base = tr.get("base") or [0.0] * len(x)
            xs += [float(b) for b in base] + [float(b) + w for b, w in zip(base, x)]
        else:
            xs += x
    if not xs:
        return 0.0, 1.0
    lo, hi = min(xs), max(xs)
    pad = (hi - lo) * 0.02 or 0.5
    return lo - pad, hi + pad


def ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About ``n`` round tick values (1, 2 or 5 × 10^k apart) within [lo, hi]."""
    raw = (hi - lo) / n
    if not raw > 0:
        return [lo]
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def hover_text(trace: dict[str, Any], i: int) -> str:
    """Point ``i``'s hover text as plain lines (``hovertemplate`` with its customdata)."""
    tpl = trace.get("hovertemplate")
    cd = (trace.get("customdata") or [])
    row = cd[i] if i < len(cd) else []
    if not tpl:
        return f"{trace.get('name', '')}: {trace.get('x', [None])[i]}"
    tpl = re.sub(r"<extra>.*?</extra>", "", tpl)
    tpl = _CUSTOM.sub(lambda m: str(row[int(m.group(1))]) if int(m.group(1)) < len(row)
                      else "", tpl)
    return "\n".join(_plain(line) for line in tpl.split("<br>"))


def _at(value: Any, i: int) -> Any:
    return value[i] if isinstance(value, list | tuple) else value


def gantt_html(spec: dict[str, Any], width: int = WIDTH) -> str:
    """The chart as ``div.iommu-gantt``: ``.iommu-gantt-head`` / ``.iommu-gantt-sub`` (the
    title), an ``svg.iommu-gantt-svg`` with one ``rect.iommu-bar`` per bar and one
    ``.iommu-marker`` per marker (``data-lane``; ``<title>`` = hover text), a legend."""
    layout = spec.get("layout", {})
    head, sub = title_parts(layout)
    lanes = lanes_of(spec)
    row = {lane: k for k, lane in enumerate(lanes)}
    lo, hi = x_range(spec)
    plot_w = width - LEFT - RIGHT
    height = TOP + len(lanes) * LANE_H + AXIS_H

    def sx(v: float) -> float:
        return LEFT + (v - lo) / (hi - lo) * plot_w

    esc = html.escape
    defs: list[str] = []
    body: list[str] = []
    for k, lane in enumerate(lanes):
        y = TOP + k * LANE_H
        body.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y + LANE_H:.1f}" '
                    f'y2="{y + LANE_H:.1f}" stroke="#e5e7eb"/>'
                    f'<text x="{LEFT - 6}" y="{y + LANE_H / 2 + 4:.1f}" text-anchor="end" '
                    f'font-size="11">{esc(lane)}</text>')
    for v in ticks(lo, hi):
        x = sx(v)
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" '
                    f'y2="{TOP + len(lanes) * LANE_H}" stroke="#f3f4f6"/>'
                    f'<text x="{x:.1f}" y="{TOP + len(lanes) * LANE_H + 13}" '
                    f'text-anchor="middle" font-size="10" fill="#6b7280">{v:.6g}</text>')
    skipped = []
    for n, tr in enumerate(spec.get("data", [])):
        if not drawable(tr):
            skipped.append(str(tr.get("name") or tr.get("type")))
            continue
        fill, pattern = _fill(tr, n, defs)
        draw = _bars if tr.get("type") == "bar" else _markers
        body += draw(tr, row, sx, fill, pattern)
    xt = _plain(((layout.get("xaxis") or {}).get("title") or {}).get("text", ""))
    body.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" '
                f'font-size="11" fill="#374151">{esc(xt)}</text>')
    note = (f'<div class="iommu-gantt-note" style="color:#6b7280">not drawn here (see the '
            f'plotly figure): {esc(", ".join(skipped))}</div>' if skipped else "")
    return (f'<div class="iommu-gantt" style="font-family:sans-serif;font-size:12px">'
            f'<div class="iommu-gantt-head" style="font-weight:bold;font-size:14px">'
            f'{esc(head)}</div><div class="iommu-gantt-sub" style="color:#374151">'
            f'{esc(sub)}</div>'
            f'<svg class="iommu-gantt-svg" viewBox="0 0 {width} {height}" width="100%" '
            f'style="max-width:{width * 1.3:.0f}px" xmlns="http://www.w3.org/2000/svg">'
            f'<defs>{"".join(defs)}</defs>{"".join(body)}</svg>'
            f"{_legend(spec.get('data', []))}{note}</div>")


def _fill(tr: dict[str, Any], n: int, defs: list[str]) -> tuple[Any, bool]:
    """A trace's fill: its colour(s), or a hatch pattern (defined in ``defs``)."""
    marker = tr.get("marker") or {}
    color = marker.get("color") or (marker.get("line") or {}).get("color") or "#6b7280"
    pat = marker.get("pattern") or {}
    if not pat.get("shape") or isinstance(color, list | tuple):
        return color, False
    fg = pat.get("fgcolor", "#6b7280")
    defs.append(f'<pattern id="iommu-hatch-{n}" width="6" height="6" '
                f'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
                f'<rect width="6" height="6" fill="{html.escape(str(color))}" fill-opacity="0.5"/>'
                f'<line x1="0" y1="0" x2="0" y2="6" stroke="{html.escape(str(fg))}" '
                f'stroke-width="1.5"/></pattern>')
    return f"url(#iommu-hatch-{n})", True


def _bars(tr: dict[str, Any], row: dict[str, int], sx: Any, fill: Any,
          pattern: bool) -> list[str]:
    x, ys = tr.get("x") or [], tr.get("y") or []
    base = tr.get("base") or [0.0] * len(x)
    line = (tr.get("marker") or {}).get("line") or {}
    stroke = (f' stroke="{html.escape(str(line["color"]))}" '
              f'stroke-width="{line.get("width", 1)}"' if line.get("color") else "")
    h = LANE_H * BAR_FILL
    out = []
    for i, (b, w, lane) in enumerate(zip(base, x, ys)):
        x0 = sx(float(b))
        bw = max(sx(float(b) + float(w)) - x0, 1.0)
        y = TOP + row[str(lane)] * LANE_H + (LANE_H - h) / 2
        out.append(f'<rect class="iommu-bar" data-lane="{html.escape(str(lane))}" '
                   f'x="{x0:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                   f'fill="{html.escape(str(_at(fill, i)))}"{stroke}>'
                   f"<title>{html.escape(hover_text(tr, i))}</title></rect>")
    return out


def _markers(tr: dict[str, Any], row: dict[str, int], sx: Any, fill: Any,
             pattern: bool) -> list[str]:
    marker = tr.get("marker") or {}
    size = float(marker.get("size", 8))
    symbol = marker.get("symbol", "circle")
    width = (marker.get("line") or {}).get("width", 2)
    out = []
    for i, (xv, lane) in enumerate(zip(tr.get("x") or [], tr.get("y") or [])):
        if xv is None or lane is None:
            continue
        cx, cy = sx(float(xv)), TOP + row[str(lane)] * LANE_H + LANE_H / 2
        color = html.escape(str(_at(fill, i)))
        r = size / 2
        if symbol == "line-ns":
            shape = (f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{cy - r:.1f}" y2="{cy + r:.1f}" '
                     f'stroke="{color}" stroke-width="{width}"')
        elif symbol == "diamond":
            shape = (f'<polygon points="{cx:.1f},{cy - r:.1f} {cx + r:.1f},{cy:.1f} '
                     f'{cx:.1f},{cy + r:.1f} {cx - r:.1f},{cy:.1f}" fill="{color}"')
        else:
            shape = f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{color}"'
        out.append(f'<g class="iommu-marker" data-lane="{html.escape(str(lane))}">{shape}>'
                   f"<title>{html.escape(hover_text(tr, i))}</title>"
                   f"</{shape[1:shape.index(' ')]}></g>")
    return out


def _legend(traces: list[dict[str, Any]]) -> str:
    """One swatch per legend name (plotly's ``showlegend`` / ``legendgroup``)."""
    seen: set[str] = set()
    items = []
    for tr in traces:
        name = str(tr.get("name", ""))
        if not name or tr.get("showlegend") is False or name in seen or not drawable(tr):
            continue
        seen.add(name)
        marker = tr.get("marker") or {}
        color = marker.get("color") or (marker.get("line") or {}).get("color") or "#6b7280"
        color = html.escape(str(_at(color, 0)))
        if (marker.get("pattern") or {}).get("shape"):
            fg = html.escape(str(marker["pattern"].get("fgcolor", "#6b7280")))
            bg = f"repeating-linear-gradient(45deg,{fg} 0 1px,{color} 1px 4px)"
        else:
            bg = color
        items.append(f'<span class="iommu-gantt-key" style="margin-right:10px;'
                     f'white-space:nowrap"><span style="display:inline-block;width:12px;'
                     f'height:10px;background:{bg};border:1px solid #d1d5db;'
                     f'vertical-align:middle"></span> {html.escape(name)}</span>')
    return f'<div class="iommu-gantt-legend">{"".join(items)}</div>'

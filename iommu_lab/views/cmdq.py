"""Views of the invalidation command queue: the ring's slots, PROD/CONS with wrap bits.

They format the queue's own snapshots (``CommandQueue.slots()`` / ``state()``; the slot
states are defined in :data:`iommu_lab.hw.cmdq.STATES`): a slot holds the last command
written at that index — written, pending, consumed, completed, or empty.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..hw.cmdq import STATES as HW_STATES
from ._fmt import COLORS, LEAN_TEMPLATE, hx, legend_html, short_name

STATES = HW_STATES
COLUMNS = ["pos", "slot", "wrap", "command", "opcode", "detail", "state"]


def _now(q: Any, t: int | None) -> int:
    return q.clock.now if t is None else int(t)


def last_completed_sync(q: Any, t: int | None = None) -> int:
    """Position of the last completion command finished by ``t`` (-1 if none)."""
    return q.last_completed_sync(_now(q, t))


def ring_state(q: Any, t: int | None = None) -> dict[str, Any]:
    """Pointers and counts: prod, cons, published, pending, registers (with wrap bits)."""
    st = q.state(_now(q, t))
    out = {k: v for k, v in st._asdict().items() if k != "registers"}
    out.update({f"reg_{k}": v for k, v in st.registers.items()})
    return out


def ring_table(q: Any, t: int | None = None) -> pd.DataFrame:
    """One row per command still in the ring: positions ``max(0, prod - entries) .. prod-1``.

    Columns: pos (PROD count when written), slot (index in the ring), wrap (the wrap bit
    that position carries), command, opcode, detail, state. ``df.attrs`` holds
    :func:`ring_state`.
    """
    t = _now(q, t)
    rows = [{"pos": s.pos, "slot": s.slot, "wrap": s.wrap, "command": s.cmd.name,
             "opcode": hx(s.cmd.opcode), "detail": s.cmd.describe(), "state": s.state}
            for s in q.slots(t)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update(ring_state(q, t))
    return df


def register_text(q: Any, t: int | None = None) -> str:
    """``CMDQ_PROD=0x11 (idx 17, wrap 0) · CMDQ_CONS=0x1 (idx 1, wrap 0)``."""
    r = q.register_values(_now(q, t))
    return (f"{q.doorbell_reg}={hx(r['prod'])} (idx {r['prod_idx']}, wrap {r['prod_wrp']}) · "
            f"{q.cons_reg}={hx(r['cons'])} (idx {r['cons_idx']}, wrap {r['cons_wrp']})")


def _shown_rows(nrows: int, busy: set[int], prod_row: int, max_rows: int) -> list[int]:
    """All rows if they fit; else the busy rows, the last ``max_rows`` ending at PROD's row."""
    if nrows <= max_rows:
        return list(range(nrows))
    order = [(prod_row - k) % nrows for k in range(nrows)]  # PROD's row, then backwards
    chosen = [r for r in order if r in busy or r == prod_row][:max_rows]
    return sorted(chosen)


@dataclass(frozen=True)
class RingGrid:
    """What a picture of the ring shows: the rows drawn, every slot's state, short label and
    full description, PROD/CONS, and the title (:func:`ring_grid`)."""

    entries: int
    cols: int
    rows: list[int]                       # ring rows drawn (row r: slots r*cols ..)
    state: list[str]                      # per slot, one of STATES
    text: list[str]                       # per slot: short command name ("NH_VA")
    hover: list[tuple[str, ...]]          # per slot: (where, command, opcode, state)
    marks: list[tuple[str, int, str]]     # (PROD | CONS | PROD=CONS, slot, colour), drawn rows
    head: str
    sub: str                              # registers · state counts · rows not drawn

    def slot_ids(self) -> list[int]:
        """The slots drawn, row by row."""
        return [r * self.cols + c for r in self.rows for c in range(self.cols)
                if r * self.cols + c < self.entries]

    def hover_text(self, slot: int, sep: str = "\n") -> str:
        """One slot's description, lines joined by ``sep``."""
        return sep.join(self.hover[slot])


def ring_grid(q: Any, t: int | None = None, cols: int | None = None,
              title: str | None = None, max_rows: int = 8) -> RingGrid:
    """The ring laid out as a grid of ``cols`` slots per row, for :func:`ring_figure` and
    :func:`ring_html`. Rings of more than ``max_rows`` rows keep the rows in use (and
    PROD's)."""
    t = _now(q, t)
    n = q.entries
    cols = min(cols or (16 if n <= 256 else 32), n)
    nrows = math.ceil(n / cols)
    state, text = ["empty"] * n, [""] * n
    hover: list[tuple[str, ...]] = [(f"slot {i}: empty",) for i in range(n)]
    counts: dict[str, int] = {}
    for s in q.slots(t):
        state[s.slot], text[s.slot] = s.state, short_name(s.cmd.name)
        hover[s.slot] = (f"slot {s.slot} · pos {s.pos} (wrap {s.wrap})", s.cmd.describe(),
                         f"opcode {hx(s.cmd.opcode)}", s.state)
        counts[s.state] = counts.get(s.state, 0) + 1
    reg = q.register_values(t)
    busy = {i // cols for i in range(n) if state[i] != "empty"} | {reg["cons_idx"] // cols}
    rows = _shown_rows(nrows, busy, reg["prod_idx"] // cols, max_rows)
    marks = [("PROD", reg["prod_idx"], "#111827"), ("CONS", reg["cons_idx"], "#dc2626")]
    if reg["prod_idx"] == reg["cons_idx"]:
        marks = [("PROD=CONS", reg["prod_idx"], "#111827")]
    marks = [m for m in marks if (m[1] % n) // cols in rows]
    summary = ", ".join(f"{counts[s]} {s}" for s in STATES if counts.get(s))
    hidden = nrows - len(rows)
    more = f" · {hidden * cols} idle slots not drawn" if hidden else ""
    return RingGrid(n, cols, rows, state, text, hover, marks,
                    title or f"Command queue ({q.style}, {n} slots)",
                    f"{register_text(q, t)} · {summary or 'empty'}{more}")


def ring_figure(q: Any, t: int | None = None, cols: int | None = None,
                title: str | None = None, max_rows: int = 8) -> go.Figure:
    """The ring as a grid of slots coloured by state, with PROD and CONS marked.

    Slot text is a short command name (``NH_VA``, ``SYNC``...); hover shows the full
    command with its fields, its position and wrap bit. Rings of more than ``max_rows``
    rows show only the rows in use (the y labels give each row's first slot).
    """
    g = ring_grid(q, t, cols, title, max_rows)
    n, cols, rows = g.entries, g.cols, g.rows
    ypos = {r: i for i, r in enumerate(rows)}
    code = {s: i for i, s in enumerate(STATES)}

    def cell(r: int, c: int, value: Any, blank: Any) -> Any:
        return value(r * cols + c) if r * cols + c < n else blank

    z = [[cell(r, c, lambda i: code[g.state[i]], None) for c in range(cols)] for r in rows]
    tx = [[cell(r, c, lambda i: g.text[i], "") for c in range(cols)] for r in rows]
    hv = [[cell(r, c, _plotly_hover(g), "") for c in range(cols)] for r in rows]
    k = len(STATES)
    scale = []
    for i, s in enumerate(STATES):
        scale += [[i / k, COLORS[s]], [(i + 1) / k, COLORS[s]]]
    traces: list[dict[str, Any]] = [{
        "type": "heatmap", "z": z, "text": tx, "customdata": hv, "texttemplate": "%{text}",
        "textfont": {"size": 9 if cols <= 16 else 7}, "colorscale": scale, "zmin": -0.5,
        "hovertemplate": "%{customdata}<extra></extra>", "zmax": k - 0.5, "showscale": False,
        "xgap": 2, "ygap": 2, "name": "slots"}]
    traces += [{"type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": s,
                "marker": {"symbol": "square", "size": 12, "color": COLORS[s]}}
               for s in STATES]  # legend entries
    shapes, notes = [], []
    for label, idx, color in g.marks:
        r, c = divmod(idx % n, cols)
        y = ypos[r]   # labels under the slot; slot numbers run along the top
        shapes.append({"type": "rect", "x0": c - 0.5, "x1": c + 0.5, "y0": y - 0.5,
                       "y1": y + 0.5, "line": {"color": color, "width": 3}})
        notes.append({"x": c, "y": y + 0.5, "text": label, "showarrow": True, "arrowhead": 2,
                      "ax": 0, "ay": 16, "font": {"color": color, "size": 10}})
    layout = {
        "title": {"text": f"{g.head}<br><sup>{g.sub}</sup>"},
        "height": 200 + 34 * len(rows), "margin": {"l": 45, "r": 10, "t": 100, "b": 50},
        "xaxis": {"showgrid": False, "zeroline": False, "dtick": 1 if cols <= 16 else 4,
                  "side": "top"},
        "yaxis": {"autorange": "reversed", "showgrid": False, "zeroline": False,
                  "tickvals": list(range(len(rows))),
                  "ticktext": [str(r * cols) for r in rows], "ticks": ""},
        "shapes": shapes, "annotations": notes, "plot_bgcolor": "white",
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
        "template": LEAN_TEMPLATE}
    return go.Figure(data=traces, layout=layout)


def _plotly_hover(g: RingGrid) -> Any:
    def text(i: int) -> str:
        h = g.hover[i]
        if len(h) == 1:
            return h[0]
        return f"{h[0]}<br>{h[1]}<br>{h[2]} · <b>{h[3]}</b>"
    return text


CELL_W, CELL_H, GAP, TOP, LEFT = 46, 26, 16, 18, 40


def ring_html(q: Any, t: int | None = None, cols: int | None = None,
              title: str | None = None, max_rows: int = 8) -> str:
    """The same picture as :func:`ring_figure` as plain HTML + SVG: the stepper's ring,
    drawn by the browser in ~1 ms instead of a plotly heatmap's ~100 ms. Each slot is a
    ``g.iommu-slot`` (``data-slot``, ``data-state``) whose ``<title>`` is the full command;
    PROD / CONS are ``.iommu-mark`` outlines with a ``.iommu-mark-label`` under the slot."""
    g = ring_grid(q, t, cols, title, max_rows)
    cols, esc = g.cols, html.escape
    ypos = {r: i for i, r in enumerate(g.rows)}
    width = LEFT + cols * CELL_W + 4
    height = TOP + len(g.rows) * (CELL_H + GAP)
    size = 10 if cols <= 16 else 8
    step = 1 if cols <= 16 else 4
    out = [f'<div class="iommu-ring" style="font-family:sans-serif;font-size:12px">'
           f'<div class="iommu-ring-head" style="font-weight:bold;font-size:14px">'
           f'{esc(g.head)}</div><div class="iommu-ring-sub" style="color:#374151">'
           f'{esc(g.sub)}</div>'
           f'<svg class="iommu-ring-svg" viewBox="0 0 {width} {height}" width="100%" '
           f'style="max-width:{width * 1.3:.0f}px" xmlns="http://www.w3.org/2000/svg">']
    out += [f'<text x="{LEFT + c * CELL_W + CELL_W / 2}" y="12" text-anchor="middle" '
            f'font-size="9" fill="#6b7280">{c}</text>' for c in range(0, cols, step)]
    for r in g.rows:
        y = TOP + ypos[r] * (CELL_H + GAP)
        out.append(f'<text x="{LEFT - 6}" y="{y + CELL_H / 2 + 4}" text-anchor="end" '
                   f'font-size="9" fill="#6b7280">{r * cols}</text>')
    for i in g.slot_ids():
        r, c = divmod(i, cols)
        x, y = LEFT + c * CELL_W, TOP + ypos[r] * (CELL_H + GAP)
        out.append(f'<g class="iommu-slot" data-slot="{i}" data-state="{g.state[i]}">'
                   f'<title>{esc(g.hover_text(i))}</title>'
                   f'<rect x="{x + 1}" y="{y}" width="{CELL_W - 2}" height="{CELL_H}" '
                   f'fill="{COLORS[g.state[i]]}"/>'
                   f'<text x="{x + CELL_W / 2}" y="{y + CELL_H / 2 + 3}" text-anchor="middle" '
                   f'font-size="{size}">{esc(g.text[i])}</text></g>')
    for label, idx, color in g.marks:
        r, c = divmod(idx % g.entries, cols)
        x, y = LEFT + c * CELL_W, TOP + ypos[r] * (CELL_H + GAP)
        out.append(f'<rect class="iommu-mark" x="{x}" y="{y - 1}" width="{CELL_W}" '
                   f'height="{CELL_H + 2}" fill="none" stroke="{color}" stroke-width="3"/>'
                   f'<text class="iommu-mark-label" x="{x + CELL_W / 2}" y="{y + CELL_H + 12}" '
                   f'text-anchor="middle" font-size="10" font-weight="bold" fill="{color}">'
                   f'{esc(label)}</text>')
    out.append("</svg>" + legend_html({s: COLORS[s] for s in STATES}) + "</div>")
    return "".join(out)


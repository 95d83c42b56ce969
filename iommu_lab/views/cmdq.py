"""Views of the invalidation command queue: the ring's slots, PROD/CONS with wrap bits.

They format the queue's own snapshots (``CommandQueue.slots()`` / ``state()``; the slot
states are defined in :data:`iommu_lab.hw.cmdq.STATES`): a slot holds the last command
written at that index — written, pending, consumed, completed, or empty.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..hw.cmdq import STATES as HW_STATES
from ._fmt import COLORS, LEAN_TEMPLATE, hx, short_name

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


def ring_figure(q: Any, t: int | None = None, cols: int | None = None,
                title: str | None = None, max_rows: int = 8) -> go.Figure:
    """The ring as a grid of slots coloured by state, with PROD and CONS marked.

    Slot text is a short command name (``NH_VA``, ``SYNC``...); hover shows the full
    command with its fields, its position and wrap bit. Rings of more than ``max_rows``
    rows show only the rows in use (the y labels give each row's first slot).
    """
    t = _now(q, t)
    n = q.entries
    cols = min(cols or (16 if n <= 256 else 32), n)
    nrows = math.ceil(n / cols)
    df = ring_table(q, t)
    state = ["empty"] * n
    text = [""] * n
    hover = [f"slot {i}: empty" for i in range(n)]
    for row in df.itertuples():
        state[row.slot] = row.state
        text[row.slot] = short_name(row.command)
        hover[row.slot] = (f"slot {row.slot} · pos {row.pos} (wrap {row.wrap})<br>"
                           f"{row.detail}<br>opcode {row.opcode} · <b>{row.state}</b>")
    st = df.attrs
    busy = {slot // cols for slot in df["slot"]} | {st["reg_cons_idx"] // cols}
    rows = _shown_rows(nrows, busy, st["reg_prod_idx"] // cols, max_rows)
    ypos = {r: i for i, r in enumerate(rows)}
    code = {s: i for i, s in enumerate(STATES)}
    z = [[code[state[r * cols + c]] if r * cols + c < n else None for c in range(cols)]
         for r in rows]
    tx = [[text[r * cols + c] if r * cols + c < n else "" for c in range(cols)] for r in rows]
    hv = [[hover[r * cols + c] if r * cols + c < n else "" for c in range(cols)] for r in rows]
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
    marks = {"PROD": (st["reg_prod_idx"], "#111827"), "CONS": (st["reg_cons_idx"], "#dc2626")}
    if st["reg_prod_idx"] == st["reg_cons_idx"]:
        marks = {"PROD=CONS": (st["reg_prod_idx"], "#111827")}
    shapes, notes = [], []
    for label, (idx, color) in marks.items():
        r, c = divmod(idx % n, cols)
        if r not in ypos:
            continue
        y = ypos[r]
        below = True  # labels under the slot; slot numbers run along the top
        shapes.append({"type": "rect", "x0": c - 0.5, "x1": c + 0.5, "y0": y - 0.5,
                       "y1": y + 0.5, "line": {"color": color, "width": 3}})
        notes.append({"x": c, "y": y + 0.5 if below else y - 0.5, "text": label,
                      "showarrow": True, "arrowhead": 2, "ax": 0, "ay": 16 if below else -16,
                      "font": {"color": color, "size": 10}})
    counts = df["state"].value_counts().to_dict()
    summary = ", ".join(f"{counts[s]} {s}" for s in STATES if counts.get(s))
    head = title or f"Command queue ({q.style}, {n} slots)"
    hidden = nrows - len(rows)
    more = f" · {hidden * cols} idle slots not drawn" if hidden else ""
    layout = {
        "title": {"text": f"{head}<br><sup>{register_text(q, t)} · {summary or 'empty'}"
                          f"{more}</sup>"},
        "height": 200 + 34 * len(rows), "margin": {"l": 45, "r": 10, "t": 100, "b": 50},
        "xaxis": {"showgrid": False, "zeroline": False, "dtick": 1 if cols <= 16 else 4,
                  "side": "top"},
        "yaxis": {"autorange": "reversed", "showgrid": False, "zeroline": False,
                  "tickvals": list(range(len(rows))),
                  "ticktext": [str(r * cols) for r in rows], "ticks": ""},
        "shapes": shapes, "annotations": notes, "plot_bgcolor": "white",
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
        "template": LEAN_TEMPLATE}
    fig = go.Figure(data=traces, layout=layout)
    return fig

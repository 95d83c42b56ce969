"""Views of an IO page table: leaf table, table tree, walk of one IOVA, address-space strip,
and how ``iommu_map`` splits a range into page sizes (``iommu_pgsize``).

Pure functions: domain in, pandas DataFrame or plotly ``go.Figure`` out.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..io_pgtable.arm import (
    ARM_LPAE_MAX_LEVELS,
    PTE_TYPE_BLOCK,
    PTE_TYPE_MASK,
    PTE_TYPE_PAGE,
)
from ._fmt import LEAN_TEMPLATE, PAGE_SIZE_COLORS, hex_dtick, hx, legend_html, size_label

SPLIT_LIMIT = 100_000  # driver calls examined by split_table before giving up
COLUMNS = ["iova", "last", "size", "paddr", "level", "perm", "pte", "bytes"]


def _perm(pgtable: Any, pte: int) -> str:
    return "RW" if pgtable.pte_writable(pte) else "R"


def _level_of(pgtable: Any, size: int) -> int:
    for lvl in range(pgtable.start_level, ARM_LPAE_MAX_LEVELS):
        if pgtable.block_size(lvl) == size:
            return lvl
    return -1


def pgtable_table(dom: Any, start: int = 0, end: int | None = None,
                  limit: int = 256) -> pd.DataFrame:
    """Mapped leaves (ascending IOVA): iova, last, size, paddr, level, perm, pte.

    At most ``limit`` rows; ``df.attrs["total"]`` is how many leaves were seen (capped at
    ``limit + 1``, enough to say "more").
    """
    rows, total = pgtable_rows(dom, start, end, limit)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["total"] = total
    df.attrs["truncated"] = total > limit
    return df


def pgtable_rows(dom: Any, start: int = 0, end: int | None = None,
                 limit: int = 256) -> tuple[list[dict[str, Any]], int]:
    """The rows of :func:`pgtable_table` as dicts, and how many leaves were seen (at most
    ``limit + 1``)."""
    pt = dom.pgtable
    rows = []
    total = 0
    for iova, size, paddr, pte in pt.leaves(start, end):
        total += 1
        if total > limit:
            break
        rows.append({"iova": hx(iova), "last": hx(iova + size - 1), "size": size_label(size),
                     "paddr": hx(paddr), "level": _level_of(pt, size), "perm": _perm(pt, pte),
                     "pte": hx(pte), "bytes": size})
    return rows, total


def pgtable_tree(dom: Any) -> pd.DataFrame:
    """Every table page: level, the IOVA range it covers, entries in use, leaves, tables."""
    pt = dom.pgtable
    rows = []
    for (lvl, prefix), tbl in sorted(pt.tables.items()):
        n = len(tbl)
        bits = n.bit_length() - 1
        shift = pt.lvl_shift(lvl)
        base = prefix << (shift + bits)
        used = tbl[tbl != 0]
        kinds = [(int(p) & PTE_TYPE_MASK) for p in used]
        leaf_type = PTE_TYPE_PAGE if lvl == ARM_LPAE_MAX_LEVELS - 1 else PTE_TYPE_BLOCK
        leaves = sum(1 for k in kinds if k == leaf_type)
        rows.append({"level": lvl, "covers": f"{hx(base)}..{hx(base + (n << shift) - 1)}",
                     "entry_span": size_label(1 << shift), "entries": n, "used": len(used),
                     "leaves": leaves, "tables": len(used) - leaves})
    return pd.DataFrame(rows, columns=["level", "covers", "entry_span", "entries", "used",
                                       "leaves", "tables"])


def walk_table(dom: Any, iova: int) -> pd.DataFrame:
    """The table walk for ``iova`` as the IOMMU does it: one row per level read.

    Columns: level, index (which entry of that table), pte, kind (table | block | page |
    invalid), meaning. ``df.attrs["phys"]`` is ``iova_to_phys(iova)`` (0 when unmapped).
    """
    pt = dom.pgtable
    iova = int(iova)
    if iova >> pt.cfg.ias:
        df = pd.DataFrame([{"level": "-", "index": "-", "pte": "", "kind": "out of range",
                            "meaning": f"iova is beyond the {pt.cfg.ias}-bit IAS"}])
        df.attrs["phys"] = 0
        return df
    rows = [{"level": w.level, "index": w.index, "pte": hx(w.pte), "kind": w.kind,
             "meaning": _meaning(w, iova)} for w in pt.walk_levels(iova)]
    df = pd.DataFrame(rows, columns=["level", "index", "pte", "kind", "meaning"])
    df.attrs["phys"] = pt.iova_to_phys(iova)
    return df


def _meaning(w: Any, iova: int) -> str:
    if w.kind == "invalid":
        return "no mapping: the device would fault"
    if w.kind == "table":
        return f"next-level table at {hx(w.out)}"
    phys = w.out | (iova & (w.span - 1))
    return f"{size_label(w.span)} {w.kind} at {hx(w.out)}: {hx(iova)} -> {hx(phys)}"


def split_table(dom: Any, iova: int, paddr: int, size: int,
                max_calls: int = SPLIT_LIMIT) -> pd.DataFrame:
    """How ``iommu_map(dom, iova, paddr, size)`` splits the range (``iommu_pgsize``).

    One row per run of consecutive driver calls with the same page size: iova, paddr,
    pgsize, calls (``->map`` / ``map_pages`` calls), pages. Nothing is mapped.
    ``df.attrs["complete"]`` is False when ``max_calls`` driver calls did not cover it all.
    """
    iova, paddr, size = int(iova), int(paddr), int(size)
    rows: list[dict[str, Any]] = []
    calls = 0
    for c in dom.core.chunks(dom.pgsize_bitmap, iova, paddr, size):
        if calls >= max_calls:
            break
        n = min(c.calls, max_calls - calls)
        calls += n
        size -= n * c.pgsize * c.pgcount
        if rows and rows[-1]["bytes_per_page"] == c.pgsize:
            rows[-1]["calls"] += n
            rows[-1]["pages"] += n * c.pgcount
        else:
            rows.append({"iova": hx(c.iova), "paddr": hx(c.paddr), "pgsize": size_label(c.pgsize),
                         "calls": n, "pages": n * c.pgcount, "bytes_per_page": c.pgsize})
    df = pd.DataFrame(rows, columns=["iova", "paddr", "pgsize", "calls", "pages",
                                     "bytes_per_page"])
    df.attrs["complete"] = size == 0
    return df


def split_summary(dom: Any, iova: int, paddr: int, size: int) -> dict[str, int]:
    """``{"4K": 3, "2M": 1}``: pages of each size ``iommu_map`` would create."""
    out: dict[str, int] = {}
    for row in split_table(dom, iova, paddr, size).itertuples():
        out[row.pgsize] = out.get(row.pgsize, 0) + int(row.pages)
    return out


def _runs(dom: Any, start: int, end: int, max_bars: int) -> list[tuple[int, int, int, int]]:
    """Leaves merged into runs of equal size and contiguous paddr: (iova, len, paddr, pgsize)."""
    runs: list[list[int]] = []
    for iova, size, paddr, _ in dom.pgtable.leaves(start, end):
        if runs:
            r = runs[-1]
            if r[3] == size and r[0] + r[1] == iova and r[2] + r[1] == paddr:
                r[1] += size
                continue
        if len(runs) >= max_bars:
            break
        runs.append([iova, size, paddr, size])
    return [tuple(r) for r in runs]  # type: ignore[misc]


def _strip(dom: Any, start: int | None, end: int | None,
           max_bars: int) -> tuple[list[tuple[int, int, int, int]], int, int]:
    """The runs to draw and the IOVA range (the mapped leaves, or 2 MiB, by default)."""
    lo = 0 if start is None else int(start)
    hi = (1 << dom.pgtable.cfg.ias) if end is None else int(end)
    runs = _runs(dom, lo, hi, max_bars)
    if start is None:
        lo = runs[0][0] if runs else 0
    if end is None:
        hi = runs[-1][0] + runs[-1][1] if runs else lo + (2 << 20)
    return runs, lo, hi


def address_space_figure(dom: Any, start: int | None = None, end: int | None = None,
                         max_bars: int = 400, title: str | None = None) -> go.Figure:
    """A strip of the IOVA space: one bar per run of same-size leaves, coloured by size.

    Hover shows ``iova -> paddr``. With no range given, spans the mapped leaves (or 2 MiB).
    """
    runs, lo, hi = _strip(dom, start, end, max_bars)
    traces = []
    seen: set[int] = set()
    for iova, length, paddr, pgsize in runs:
        label = size_label(pgsize)
        pages = length // pgsize
        traces.append({
            "type": "bar", "x": [length], "base": [iova], "y": ["IOVA"], "orientation": "h",
            "name": f"{label} pages", "legendgroup": label, "showlegend": pgsize not in seen,
            "marker": {"color": PAGE_SIZE_COLORS.get(pgsize, "#9ca3af"),
                       "line": {"color": "#374151", "width": 1}},
            "text": [f"{pages}×{label}"], "textposition": "inside",
            "insidetextanchor": "middle",
            "hovertemplate": (f"{hx(iova)}..{hx(iova + length - 1)}<br>{pages} × {label}"
                              f"<br>-> {hx(paddr)}<extra></extra>")})
        seen.add(pgsize)
    fig = go.Figure(data=traces, layout={
        "title": {"text": title or f"IO address space: {len(runs)} run(s) of leaves"},
        "barmode": "overlay", "height": 200, "margin": {"l": 20, "r": 20, "t": 40, "b": 40},
        "xaxis": {"range": [lo, hi], "title": {"text": "IOVA"}, "tickformat": "#x",
                  "tick0": lo, "dtick": hex_dtick(hi - lo)},
        "yaxis": {"showticklabels": False}, "legend": {"orientation": "h", "y": -0.6},
        "template": LEAN_TEMPLATE})
    return fig


STRIP_W, STRIP_H, STRIP_PAD = 720, 34, 30


def address_space_html(dom: Any, start: int | None = None, end: int | None = None,
                       max_bars: int = 400, title: str | None = None) -> str:
    """The strip of :func:`address_space_figure` as plain HTML + SVG (the stepper's: the
    browser draws it in a millisecond). One ``rect.iommu-run`` per run of same-size leaves,
    its ``<title>`` the ``iova -> paddr`` hover text."""
    runs, lo, hi = _strip(dom, start, end, max_bars)
    esc, span = html.escape, max(hi - lo, 1)

    def x(v: int) -> float:
        return round(STRIP_PAD + (min(max(v, lo), hi) - lo) * STRIP_W / span, 2)

    out = [f'<div class="iommu-strip" style="font-family:sans-serif;font-size:12px">'
           f'<div class="iommu-strip-head" style="font-weight:bold">'
           f'{esc(title or f"IO address space: {len(runs)} run(s) of leaves")}</div>'
           f'<svg viewBox="0 0 {STRIP_W + 2 * STRIP_PAD} {STRIP_H + 22}" width="100%" '
           f'style="max-width:{STRIP_W + 2 * STRIP_PAD}px" xmlns="http://www.w3.org/2000/svg">'
           f'<rect x="{STRIP_PAD}" y="0" width="{STRIP_W}" height="{STRIP_H}" fill="#f9fafb" '
           f'stroke="#d1d5db"/>']
    sizes: dict[int, str] = {}
    for iova, length, paddr, pgsize in runs:
        label, pages = size_label(pgsize), length // pgsize
        x0, x1 = x(iova), x(iova + length)
        color = PAGE_SIZE_COLORS.get(pgsize, "#9ca3af")
        sizes.setdefault(pgsize, color)
        hover = (f"{hx(iova)}..{hx(iova + length - 1)}\n{pages} × {label}\n-> {hx(paddr)}")
        out.append(f'<g class="iommu-run"><title>{esc(hover)}</title>'
                   f'<rect x="{x0}" y="1" width="{max(x1 - x0, 1)}" height="{STRIP_H - 2}" '
                   f'fill="{color}" stroke="#374151" stroke-width="1"/>')
        text = f"{pages}×{label}"
        if x1 - x0 > 7 * len(text):
            out.append(f'<text x="{(x0 + x1) / 2}" y="{STRIP_H / 2 + 4}" '
                       f'text-anchor="middle" font-size="11">{esc(text)}</text>')
        out.append("</g>")
    step = hex_dtick(hi - lo)
    tick = lo - lo % step + (step if lo % step else 0)
    while tick <= hi:
        out.append(f'<text x="{x(tick)}" y="{STRIP_H + 15}" text-anchor="middle" '
                   f'font-size="10" fill="#6b7280">{hx(tick)}</text>')
        tick += step
    out.append("</svg>")
    out.append(legend_html({f"{size_label(k)} pages": v for k, v in sorted(sizes.items())}))
    out.append("</div>")
    return "".join(out)

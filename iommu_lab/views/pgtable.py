"""Views of an IO page table: leaf table, table tree, walk of one IOVA, address-space strip,
and how ``iommu_map`` splits a range into page sizes (``iommu_pgsize``).

Pure functions: domain in, pandas DataFrame or plotly ``go.Figure`` out.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..io_pgtable.arm import (
    ARM_LPAE_MAX_LEVELS,
    PTE_TYPE_BLOCK,
    PTE_TYPE_MASK,
    PTE_TYPE_PAGE,
)
from ._fmt import LEAN_TEMPLATE, PAGE_SIZE_COLORS, hex_dtick, hx, size_label

SPLIT_LIMIT = 100_000  # driver calls examined by split_table before giving up


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
    df = pd.DataFrame(rows, columns=["iova", "last", "size", "paddr", "level", "perm", "pte",
                                     "bytes"])
    df.attrs["total"] = total
    df.attrs["truncated"] = total > limit
    return df


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


def address_space_figure(dom: Any, start: int | None = None, end: int | None = None,
                         max_bars: int = 400, title: str | None = None) -> go.Figure:
    """A strip of the IOVA space: one bar per run of same-size leaves, coloured by size.

    Hover shows ``iova -> paddr``. With no range given, spans the mapped leaves (or 2 MiB).
    """
    pt = dom.pgtable
    lo = 0 if start is None else int(start)
    hi = (1 << pt.cfg.ias) if end is None else int(end)
    runs = _runs(dom, lo, hi, max_bars)
    if start is None:
        lo = runs[0][0] if runs else 0
    if end is None:
        hi = runs[-1][0] + runs[-1][1] if runs else lo + (2 << 20)
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

"""Views of the IOTLB: which translations the IOMMU has cached, and which are **stale**.

An entry is stale when the page table no longer backs it (``iova_to_phys(entry.iova) !=
entry.paddr``): a device using it reaches memory the OS believes is free. With ATS
(``iommu_domain_alloc(..., ats=True)``) the endpoint's own device TLB (the ATC) is listed
too, its rows marked ``cache = ATC``: it can be stale on its own, until its ATC
invalidation completes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ._fmt import COLORS, LEAN_TEMPLATE, hx, size_label

COLUMNS = ["cache", "asid", "iova", "pgsize", "paddr", "perm", "state", "page_table_now",
           "stale_since_ns"]


def entry_state(view: Any) -> str:
    """``"valid"`` | ``"STALE"`` | ``"negative"`` for one :class:`IotlbEntryView`."""
    if view.entry.negative:
        return "STALE" if view.stale else "negative"
    return "STALE" if view.stale else "valid"


def iotlb_rows(dom: Any) -> list[dict[str, Any]]:
    """The rows of :func:`iotlb_table` as dicts (the stepper renders them without pandas)."""
    rows = []
    for v in dom.iotlb_entries():
        e, now = v.entry, v.page_table_now
        rows.append({"cache": v.cache, "asid": e.asid, "iova": hx(e.iova), "pgsize": size_label(e.pgsize),
                     "paddr": "-" if e.negative else hx(e.paddr),
                     "perm": "-" if e.negative else ("RW" if e.writable else "R"),
                     "state": entry_state(v), "page_table_now": hx(now) if now else "unmapped",
                     "stale_since_ns": e.stale_since})
    return rows


def iotlb_table(dom: Any) -> pd.DataFrame:
    """Cached leaf translations, oldest first, with a ``state`` column (valid | STALE | negative)
    and the ``cache`` holding each (``IOTLB``, or ``ATC`` for the device TLB with ATS).

    ``df.attrs``: ``capacity`` (the IOTLB's), ``stale`` (how many stale entries, both caches).
    """
    df = pd.DataFrame(iotlb_rows(dom), columns=COLUMNS)
    df["stale_since_ns"] = df["stale_since_ns"].astype("Int64")
    df.attrs["capacity"] = dom.hw.iotlb.capacity
    df.attrs["stale"] = int((df["state"] == "STALE").sum()) if len(df) else 0
    return df


def _row_style(row: pd.Series) -> list[str]:
    color = {"STALE": COLORS["stale"], "negative": COLORS["negative"]}.get(row["state"], "")
    css = f"background-color: {color}; font-weight: bold" if row["state"] == "STALE" else (
        f"background-color: {color}" if color else "")
    return [css] * len(row)


def iotlb_styler(df: pd.DataFrame) -> Any:
    """A pandas Styler with stale rows in red (for notebooks and the stepper)."""
    return (df.style.apply(_row_style, axis=1)
            .set_table_attributes('class="iommu-iotlb-table"')
            .set_caption(f"IOTLB: {len(df)} of {df.attrs.get('capacity', '?')} entries, "
                         f"{df.attrs.get('stale', 0)} stale")
            .format({"stale_since_ns": lambda v: "" if pd.isna(v) else f"{int(v)}"})
            .hide(axis="index"))


def iotlb_figure(dom: Any) -> go.Figure:
    """The IOTLB as a plotly table, stale rows highlighted."""
    df = iotlb_table(dom)
    fill = [COLORS["stale"] if s == "STALE" else COLORS["negative"] if s == "negative"
            else COLORS["valid"] for s in df["state"]]
    shown = COLUMNS[:-1]
    fig = go.Figure(go.Table(
        header={"values": shown, "fill_color": "#e5e7eb", "align": "left"},
        cells={"values": [df[c].tolist() for c in shown], "fill_color": [fill] * len(shown),
               "align": "left"}))
    fig.update_layout(title=f"IOTLB: {len(df)}/{df.attrs['capacity']} entries, "
                            f"{df.attrs['stale']} stale",
                      height=120 + 24 * max(1, len(df)), template=LEAN_TEMPLATE,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig

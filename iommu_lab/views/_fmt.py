"""Small formatting helpers shared by the views (no plotting here)."""

from __future__ import annotations

import html

from ..units import fmt_size

# one colour per meaning, used by every figure so a slide deck stays consistent
COLORS = {
    "empty": "#e5e7eb",
    "written": "#fde68a",     # in the ring, doorbell not rung yet
    "pending": "#f59e0b",     # published, the IOMMU has not executed it yet
    "consumed": "#60a5fa",    # executed (CONS has passed it), no later sync completed yet
    "completed": "#16a34a",   # executed and covered by a completed CMD_SYNC
    "inv": "#2563eb",
    "inv_all": "#7c3aed",
    "sync": "#dc2626",
    "request": "#0891b2",
    "stale": "#fecaca",
    "valid": "#dcfce7",
    "negative": "#e5e7eb",
}

PAGE_SIZE_COLORS = {
    1 << 12: "#93c5fd", 1 << 14: "#a5b4fc", 1 << 16: "#c4b5fd",
    1 << 21: "#fcd34d", 1 << 25: "#fdba74", 1 << 29: "#fca5a5", 1 << 30: "#f87171",
}


def hx(value: int | None) -> str:
    """``0x1000`` style, or an empty string for None."""
    return "" if value is None else f"{int(value):#x}"


def size_label(n: int) -> str:
    """``4K``, ``2M``; plain bytes when not a whole unit."""
    return fmt_size(int(n))


def short_name(name: str) -> str:
    """A command name short enough for a ring slot: ``CMD_TLBI_NH_VA`` -> ``NH_VA``."""
    for prefix in ("CMD_TLBI_", "CMD_", "VIRTIO_IOMMU_T_", "QI_IOTLB_", "QI_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    table = {"INVALIDATE_IOMMU_PAGES": "INV_PG", "INVALIDATE_IOMMU_PAGES_ALL": "INV_ALL",
             "COMPLETION_WAIT": "C_WAIT", "VIRTQUEUE_WAIT": "WAIT"}
    return table.get(name, name[:8])


def hex_dtick(span: int, ticks: int = 6) -> int:
    """A power-of-two tick step giving about ``ticks`` ticks over ``span`` (hex axes)."""
    step = max(1, span // ticks)
    return 1 << (step.bit_length() - 1)


_AXIS = {"gridcolor": "#ebf0f8", "linecolor": "#ebf0f8", "zerolinecolor": "#ebf0f8",
         "automargin": True}
# A small template (plotly's default one adds ~7 KB of JSON to every figure, i.e. to every
# stepper refresh sent to the browser).
LEAN_TEMPLATE = {"layout": {
    "font": {"color": "#2a3f5f"}, "paper_bgcolor": "white", "plot_bgcolor": "white",
    "colorway": ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3"],
    "hoverlabel": {"align": "left"}, "xaxis": _AXIS, "yaxis": _AXIS,
    "title": {"x": 0.05}}}


def legend_html(entries: dict[str, str]) -> str:
    """A row of colour swatches with labels."""
    return ('<div class="iommu-legend" style="display:flex;gap:10px;flex-wrap:wrap">'
            + "".join(f'<span><span style="display:inline-block;width:10px;height:10px;'
                      f'background:{c};margin-right:3px"></span>{html.escape(k)}</span>'
                      for k, c in entries.items()) + "</div>")

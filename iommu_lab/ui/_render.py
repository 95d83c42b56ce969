"""Put figures and tables into ``ipywidgets.Output`` without a running frontend.

Outputs are set as plain display-data bundles (``out.outputs = (...)``) rather than with
``with out: display(...)``: this works the same in JupyterLab, Voilà (where the notebook
runs before a browser attaches; voila-dashboards/voila#1533) and headless tests, and a test
can read back what the widget would show.
"""

from __future__ import annotations

import html as _html
from typing import Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

_PLOTLY = pio.renderers["plotly_mimetype"]


def bundle(obj: Any) -> dict[str, Any]:
    """A Jupyter mime bundle for a plotly figure, a DataFrame, a Styler or a string."""
    if isinstance(obj, go.Figure):
        data = dict(_PLOTLY.to_mimebundle(obj.to_dict()))
        title = obj.layout.title.text or "figure"
        data["text/plain"] = f"<plotly figure: {title}>"
        return data
    if isinstance(obj, pd.DataFrame):
        return {"text/html": obj.to_html(), "text/plain": obj.to_string()}
    if hasattr(obj, "to_html") and hasattr(obj, "data"):  # pandas Styler
        return {"text/html": obj.to_html(), "text/plain": obj.data.to_string()}
    return {"text/plain": str(obj)}


def show(out: widgets.Output, *objs: Any) -> None:
    """Replace what ``out`` shows with ``objs`` (figures, tables, text), in one update.

    Nothing is sent when the content is unchanged, so the browser redraws only what moved.
    """
    outputs = tuple({"output_type": "display_data", "data": bundle(o), "metadata": {}}
                    for o in objs)
    if outputs != out.outputs:
        out.outputs = outputs


def plotly_json(out: widgets.Output, i: int = 0) -> dict[str, Any] | None:
    """The plotly JSON shown in output ``i`` of ``out`` (for tests), or None."""
    if len(out.outputs) <= i:
        return None
    return out.outputs[i]["data"].get("application/vnd.plotly.v1+json")


def html(out: widgets.Output, i: int = 0) -> str:
    """The HTML (or text) shown in output ``i`` of ``out`` (for tests)."""
    if len(out.outputs) <= i:
        return ""
    data = out.outputs[i]["data"]
    return data.get("text/html") or data.get("text/plain", "")


def html_table(df: pd.DataFrame, cls: str, caption: str = "", index: bool = False,
               row_style: Any = None) -> HTMLTable:
    """A plain HTML table (much faster than a Styler) with a stable class for tests.

    ``row_style(row) -> str`` gives inline CSS for a row (e.g. stale IOTLB entries in red).
    Each ``<tr>`` carries ``data-key`` = the index value (e.g. the counter name).
    """
    esc = _html.escape
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    out = [f'<table class="{esc(cls)}" style="border-collapse:collapse;font-size:12px">']
    if caption:
        out.append(f"<caption style='text-align:left'>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th style='text-align:left;padding:1px 6px'>{esc(c)}</th>"
                                       for c in cols) + "</tr></thead><tbody>")
    for key, row in zip(df.index, df.itertuples(index=False), strict=True):
        style = row_style(row) if row_style else ""
        cells = ([key] if index else []) + list(row)
        out.append(f'<tr data-key="{esc(str(key))}" style="{esc(style)}">' + "".join(
            f"<td style='padding:1px 6px'>{esc('' if _isna(v) else str(v))}</td>"
            for v in cells) + "</tr>")
    out.append("</tbody></table>")
    return HTMLTable("".join(out), df)


def _isna(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


class HTMLTable:
    """HTML for an Output, keeping the DataFrame it came from (``.data``)."""

    def __init__(self, markup: str, data: pd.DataFrame) -> None:
        self.markup, self.data = markup, data

    def to_html(self) -> str:
        return self.markup

    def _repr_html_(self) -> str:
        return self.markup

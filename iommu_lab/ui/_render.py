"""Put figures and tables into ``ipywidgets.Output`` without a running frontend.

Outputs are set as plain display-data bundles (``out.outputs = (...)``) rather than with
``with out: display(...)``: this works the same in JupyterLab, Voilà (where the notebook
runs before a browser attaches; voila-dashboards/voila#1533) and headless tests, and a test
can read back what the widget would show.
"""

from __future__ import annotations

import html as _html
import json
from typing import Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def bundle(obj: Any) -> dict[str, Any]:
    """A Jupyter mime bundle for a plotly figure, a DataFrame, a Styler or a string.

    Figures become the bundle plotly's ``plotly_mimetype`` renderer makes, without going
    through ``plotly.io.renderers``: importing that imports nbformat, hence jsonschema's
    format checkers, which take seconds (rfc3987-syntax builds its grammars at import).
    """
    if isinstance(obj, go.Figure):
        from plotly.io import to_json

        data = {PLOTLY_MIME: json.loads(to_json(obj.to_dict(), validate=False,
                                                 remove_uids=False))}
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


def plotly_json(out: Any, i: int = 0) -> dict[str, Any] | None:
    """The plotly JSON shown in output ``i`` of an Output (for tests); None if there is
    none."""
    if len(out.outputs) <= i:
        return None
    return out.outputs[i]["data"].get(PLOTLY_MIME)


def html(out: Any, i: int = 0) -> str:
    """The HTML (or text) shown in output ``i`` of an Output, or by an HTML widget (for
    tests)."""
    if isinstance(out, widgets.HTML):
        return out.value
    if len(out.outputs) <= i:
        return ""
    data = out.outputs[i]["data"]
    return data.get("text/html") or data.get("text/plain", "")


def html_table(df: pd.DataFrame, cls: str, caption: str = "", index: bool = False,
               row_style: Any = None) -> HTMLTable:
    """A plain HTML table (much faster than a Styler) with a stable class for tests.

    ``row_style(row) -> str`` gives inline CSS for a row (``row`` maps column -> value,
    e.g. stale IOTLB entries in red). Each ``<tr>`` carries ``data-key`` = the index value
    (e.g. the counter name).
    """
    cols = [str(c) for c in df.columns]
    key = df.index.name or ""
    rows = [dict(zip(cols, vals, strict=True)) for vals in df.astype(object).values.tolist()]
    for r, k in zip(rows, df.index.tolist(), strict=True):
        r[key] = k
    return HTMLTable(html_rows(rows, ([key] if index else []) + cols, cls, caption, key,
                               row_style), df)


def html_rows(rows: list[dict[str, Any]], columns: list[str], cls: str, caption: str = "",
              key: str | None = None, row_style: Any = None) -> str:
    """:func:`html_table` from row dicts (no pandas: the stepper's tables, every click).

    ``key`` names the column whose value becomes each ``<tr>``'s ``data-key`` (else the
    row number)."""
    esc = _html.escape
    out = [f'<table class="{esc(cls)}" style="border-collapse:collapse;font-size:12px">']
    if caption:
        out.append(f"<caption style='text-align:left'>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th style='text-align:left;padding:1px 6px'>{esc(c)}</th>"
                                       for c in columns) + "</tr></thead><tbody>")
    for i, row in enumerate(rows):
        style = row_style(row) if row_style else ""
        k = row[key] if key is not None else i
        out.append(f'<tr data-key="{esc(str(k))}" style="{esc(style)}">' + "".join(
            f"<td style='padding:1px 6px'>{esc(_text(row.get(c)))}</td>" for c in columns)
            + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    if isinstance(v, int):
        return str(v)
    return "" if _isna(v) else str(v)


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

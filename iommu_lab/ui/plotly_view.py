"""A plotly figure redrawn in place in the browser (``Plotly.react``), for live views.

An ``ipywidgets.Output`` holding a ``go.Figure`` is replaced as a whole at every change:
the browser builds a new plot (and jupyterlab-plotly then renders a PNG copy of it), which
is most of a stepper click's cost. :class:`PlotlyView` is a small anywidget whose only
state is the figure's JSON, a normal synced trait: the browser *updates* the existing plot
with ``Plotly.react``, and a view that attaches later (Voilà renders the notebook before
the browser connects; voila-dashboards/voila#1533) shows the current figure, unlike a
``FigureWidget``, whose changes are transient messages.

plotly.js comes from the page when it already has it (jupyterlab-plotly sets
``window.Plotly`` once it drew any figure); otherwise one view asks the kernel once per
page and gets the ``plotly.min.js`` that the plotly package ships (a binary message:
nothing is fetched from the network).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import anywidget
import traitlets

_ESM = r"""
const KEY = "__iommu_lab_plotly";

function plotly(model) {
  if (window.Plotly && window.Plotly.react) return Promise.resolve(window.Plotly);
  if (!window[KEY]) {
    window[KEY] = new Promise((resolve, reject) => {
      const onMsg = (msg, buffers) => {
        if (!msg || msg.type !== "plotly.js") return;
        model.off("msg:custom", onMsg);
        const url = URL.createObjectURL(new Blob([buffers[0]], {type: "text/javascript"}));
        const script = document.createElement("script");
        script.src = url;
        script.onload = () => { URL.revokeObjectURL(url); resolve(window.Plotly); };
        script.onerror = () => reject(new Error("could not load plotly.js"));
        document.head.appendChild(script);
      };
      model.on("msg:custom", onMsg);
      model.send({type: "need plotly.js"});
    });
  }
  return window[KEY];
}

async function render({model, el}) {
  const div = document.createElement("div");
  div.className = "iommu-plotly";
  el.appendChild(div);
  let P;
  try {
    P = await plotly(model);
  } catch (err) {
    div.textContent = "figure not shown: " + err;
    return;
  }
  // Redraw at most once per frame, after the other views of the same update are in the
  // page; the plot is laid out on its own (contain: strict, its height from the figure)
  // so plotly's text measurements do not lay out the whole page again and again.
  let queued = false;
  const draw = () => {
    queued = false;
    const fig = model.get("figure") || {};
    const layout = fig.layout || {};
    div.style.height = layout.height ? `${layout.height}px` : "";
    div.style.contain = layout.height ? "strict" : "";
    P.react(div, fig.data || [], layout, model.get("config") || {});
  };
  const schedule = () => {
    if (!queued) { queued = true; requestAnimationFrame(draw); }
  };
  draw();
  model.on("change:figure", schedule);
  let width = 0;
  const ro = new ResizeObserver(() => {
    if (div.clientWidth && div.clientWidth !== width) {
      width = div.clientWidth;
      P.Plots.resize(div);
    }
  });
  ro.observe(div);
  return () => {
    model.off("change:figure", schedule);
    ro.disconnect();
    P.purge(div);
  };
}

export default { render };
"""


@cache
def plotly_js() -> bytes:
    """The plotly.js bundle that the installed plotly package ships (read once)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


class PlotlyView(anywidget.AnyWidget):
    """One live figure: set :attr:`figure` to plotly JSON (``{"data": [...], "layout":
    {...}}``, e.g. :func:`iommu_lab.views.timeline_spec`) and the browser redraws it in
    place. Nothing is sent when the new figure equals the old one."""

    _esm = _ESM
    figure = traitlets.Dict().tag(sync=True)
    config = traitlets.Dict({"displaylogo": False}).tag(sync=True)

    def __init__(self, figure: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(figure=figure or {}, **kwargs)
        self.on_msg(self._on_msg)

    def _on_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "need plotly.js":
            self.send({"type": "plotly.js"}, [plotly_js()])

"""The trace-upload app: upload an ftrace / trace-cmd log, replay it under chosen strategies
and callers, read the tables and charts. Controls for
:class:`~iommu_lab.analysis.replay_model.ReplayModel`, which does the work.

Every control is a plain method too::

    app = ReplayApp()
    app.load_example("real-mtk-vcodec-2021.txt")   # or app.load(bytes, "iommu.txt")
    app.run(strategies=["smmuv3-v5.4"], callers=["unmap-each", "dma-lazy"])
    app.results                                     # replay_phases() DataFrame

A bad file shows a message in the app (``app.error``) and keeps the previous trace.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets

from .. import views
from ..analysis.callers import DEFAULT_CALLERS as CALLER_CHOICES
from ..analysis.lazy_faults import ASSUMPTION
from ..analysis.replay import NOTE
from ..analysis.replay_model import (
    DEFAULT_CALLERS,
    DEFAULT_STRATEGIES,
    MAX_UPLOAD,
    ReplayModel,
    examples,
)
from ..drivers.registry import STRATEGIES
from ..views.replay import infer_table, lazy_table, replay_table, trace_figure
from ._render import html_table, show

METRICS = ("inv_cmds", "sync_cmds", "inv_all_cmds", "doorbells", "unmap_cpu_ns", "map_cpu_ns",
           "cpu_ns", "end_ns", "fq_flushes", "op_errors")
SKIPS_SHOWN = 12


class ReplayApp:
    """Upload a trace; replay it under strategies × callers; tables and charts."""

    def __init__(self, strategies: Sequence[str] = DEFAULT_STRATEGIES,
                 callers: Sequence[str] = DEFAULT_CALLERS, example: str | None = None) -> None:
        self.model = ReplayModel(strategies, callers)
        self.figures: dict[str, Any] = {}
        self.update_ms = 0.0
        self._syncing = False
        self._build()
        self.model.on_change(lambda _m: self._render())
        if example:
            self.load_example(example)
        else:
            self._render()

    # ---- the model's results ---------------------------------------------------------------
    @property
    def results(self) -> Any:
        """The replay DataFrame (``replay()`` columns plus map/unmap CPU time), or None."""
        return self.model.results

    @property
    def error(self) -> str | None:
        """The last action's error message (None if it succeeded)."""
        return self.model.error

    # ---- actions (also the buttons) ---------------------------------------------------------
    def load(self, content: bytes | str, name: str = "upload") -> Any:
        """Load trace text or ``.gz`` bytes; a bad file sets :attr:`error`."""
        return self._timed(lambda: self.model.load(content, name))

    def load_example(self, name: str | None = None) -> Any:
        """Load a bundled example (the dropdown's choice by default)."""
        return self._timed(lambda: self.model.load_example(name or self.w_example.value))

    def run(self, strategies: Sequence[str] | None = None,
            callers: Sequence[str] | None = None, complete: bool | None = None) -> Any:
        """Replay again with these settings (the controls' values for the rest)."""
        return self._timed(lambda: self.model.run(
            self.w_strategies.value if strategies is None else strategies,
            self.w_callers.value if callers is None else callers,
            self.w_complete.value if complete is None else complete))

    def set_metric(self, metric: str, log: bool | None = None) -> None:
        """Chart another counter without replaying."""
        self.model.set_metric(metric, log)

    def _timed(self, fn: Any) -> Any:
        t0 = time.perf_counter()
        self.w_status.value = "<i>working…</i>"
        out = fn()
        self.update_ms = (time.perf_counter() - t0) * 1000
        self._render()
        return out

    def _on_upload(self, change: Any) -> None:
        """FileUpload value (ipywidgets 8): a tuple of dicts with name and content."""
        try:
            files = change["new"]
            if not files:
                return
            f = files[0]
            content, name = bytes(f["content"]), str(f.get("name", "upload"))
        except (KeyError, IndexError, TypeError) as exc:   # an unexpected widget value
            self.w_error.value = self._error_html(f"could not read the upload: {exc!r}")
            return
        self.w_upload.value = ()      # the same file uploaded again is a change again
        self.load(content, name)

    # ---- widgets ----------------------------------------------------------------------------
    def _build(self) -> None:
        W = widgets
        m = self.model
        self.w_upload = W.FileUpload(accept=".txt,.log,.gz,text/plain", multiple=False,
                                     description="upload trace", button_style="primary")
        self.w_example = W.Dropdown(options=examples(), description="or example")
        self.b_example = W.Button(description="load example")
        self.w_strategies = W.SelectMultiple(options=list(STRATEGIES), value=m.strategies,
                                             rows=6, description="strategies")
        self.w_callers = W.SelectMultiple(options=list(CALLER_CHOICES),
                                          value=m.callers, rows=6, description="callers")
        self.w_complete = W.Checkbox(value=m.complete, indent=False,
                                     description="map what the trace unmaps before mapping it")
        self.b_run = W.Button(description="replay", button_style="primary")
        self.w_metric = W.Dropdown(options=list(METRICS), value=m.metric, description="chart")
        self.w_log = W.Checkbox(value=m.log_scale, description="log scale", indent=False)
        self.w_error = W.HTML()
        self.w_status = W.HTML()
        self.w_skips = W.HTML()
        self.out_chart = W.Output()
        self.w_table = W.HTML()
        self.w_infer = W.HTML()
        self.out_trace = W.Output()
        self.w_lazy = W.HTML()
        for w, cls in ((self.w_upload, "iommu-replay-upload"),
                       (self.w_example, "iommu-replay-example"),
                       (self.b_example, "iommu-replay-example-btn"),
                       (self.w_strategies, "iommu-replay-strategies"),
                       (self.w_callers, "iommu-replay-callers"),
                       (self.w_complete, "iommu-replay-complete"),
                       (self.b_run, "iommu-replay-run-btn"),
                       (self.w_metric, "iommu-replay-metric"), (self.w_log, "iommu-replay-log"),
                       (self.w_error, "iommu-replay-error"),
                       (self.w_status, "iommu-replay-status"),
                       (self.w_skips, "iommu-replay-skips"),
                       (self.out_chart, "iommu-replay-chart-out"),
                       (self.w_table, "iommu-replay-table-out"),
                       (self.w_infer, "iommu-replay-infer-out"),
                       (self.out_trace, "iommu-replay-trace-out"),
                       (self.w_lazy, "iommu-replay-lazy-out")):
            w.add_class(cls)
        self.w_upload.observe(self._on_upload, names="value")
        self.b_example.on_click(lambda _b: self.load_example())
        self.b_run.on_click(lambda _b: self.run())
        self.w_metric.observe(lambda _c: self._on_metric(), names="value")
        self.w_log.observe(lambda _c: self._on_metric(), names="value")
        h = lambda text: W.HTML(f"<h4 style='margin:8px 0 2px'>{text}</h4>")  # noqa: E731
        self.widget = W.VBox([
            W.HTML("<h3 style='margin:0'>Replay your own trace</h3><small>An ftrace "
                   "<code>trace</code>/<code>trace_pipe</code> or <code>trace-cmd report</code> "
                   "text of the iommu events (docs/capturing-traces.md), plain or .gz, up to "
                   f"{MAX_UPLOAD >> 20} MiB. Nothing leaves this machine.</small>"),
            W.HBox([self.w_upload, self.w_example, self.b_example]),
            self.w_error, self.w_status, self.w_skips,
            W.HBox([self.w_strategies, self.w_callers,
                    W.VBox([self.w_complete, self.b_run, self.w_metric, self.w_log])]),
            h("Replay: every (strategy, caller) pair"),
            W.HTML(f"<small>{html.escape(NOTE)}.</small>"),
            self.out_chart, self.w_table,
            h("Which caller made this trace?"), self.w_infer,
            h("The trace, and its faults under lazy flushing"), self.out_trace, self.w_lazy])
        self.widget.add_class("iommu-replay")

    def _on_metric(self) -> None:
        if not self._syncing:
            self.model.set_metric(self.w_metric.value, self.w_log.value)

    def _error_html(self, text: str) -> str:
        return f'<span style="color:#b91c1c">⚠ {html.escape(text)}</span>'

    # ---- rendering --------------------------------------------------------------------------
    def _render(self) -> None:
        m = self.model
        self.w_error.value = self._error_html(m.error) if m.error else ""
        self._sync_controls()
        self.w_status.value = (f"<b>{html.escape(m.summary)}</b>"
                               + (f"<br><span style='color:#92400e'>{html.escape(m.notice)}"
                                  "</span>" if m.notice else "")
                               + (f"<br><small>last action {self.update_ms:,.0f} ms "
                                  "(wall)</small>" if self.update_ms else ""))
        skips = m.skips
        self.w_skips.value = ("" if not skips else
                              "<details><summary>skip report: "
                              f"{len(skips):,} malformed line(s) left out</summary><ul>"
                              + "".join(f"<li>line {n}: {html.escape(r)}</li>"
                                        for n, r in skips[:SKIPS_SHOWN])
                              + ("<li>…</li>" if len(skips) > SKIPS_SHOWN else "")
                              + "</ul></details>")
        if m.trace is None:
            for out in (self.out_chart, self.out_trace):
                show(out)
            for w in (self.w_table, self.w_infer, self.w_lazy):
                w.value = ""
            return
        self._render_trace()
        if m.results is None:
            show(self.out_chart)
            self.w_table.value = ""
            return
        fig = views.compare_figure(m.results, m.metric, log=m.log_scale,
                                   title=f"{m.metric} per strategy and caller ({m.name})")
        self.figures["replay"] = fig
        show(self.out_chart, fig)
        self.w_table.value = html_table(replay_table(m.results), "iommu-replay-table",
                                        caption="counts are exact for each kernel version; "
                                                "times come from the cost model").to_html()

    def _render_trace(self) -> None:
        """The caller ranking, the trace figure and the faults: they need no replay."""
        m = self.model
        self.w_infer.value = html_table(infer_table(m.ranked), "iommu-infer-table",
                                        caption=m.ranked.attrs.get("note", "")).to_html()
        tfig = trace_figure(m.trace, m.lazy, title=f"{m.name}: IOVA over time")
        self.figures["trace"] = tfig
        show(self.out_trace, tfig)
        if m.lazy is None:
            self.w_lazy.value = ("<small>faults not replayed (see the note above).</small>"
                                 if m.lazy_notice else
                                 "<small>no io_page_fault events in this trace.</small>")
        else:
            self.w_lazy.value = html_table(lazy_table(m.lazy), "iommu-lazy-table",
                                           caption=f"{ASSUMPTION}").to_html()

    def _sync_controls(self) -> None:
        self._syncing = True
        try:
            m = self.model
            self.w_strategies.value = m.strategies
            self.w_callers.value = m.callers
            self.w_complete.value = m.complete
            self.w_metric.value, self.w_log.value = m.metric, m.log_scale
        finally:
            self._syncing = False

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

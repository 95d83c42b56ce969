"""The comparison dashboard: pick strategies, callers and a guest; run ``compare()``; read
the bars and the table.

Every control is a plain attribute or method too::

    d = CompareDashboard(guest_mem="256M", run=False)
    d.run(strategies=["smmuv3-v4.14", "smmuv3-v5.4"], callers=["unmap-each"])
    d.df                      # the tidy compare() DataFrame
    d.set_metric("sync_cmds", log=True)
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets

import iommu_lab as il

from .. import views
from ..analysis.callers import CALLERS
from ..analysis.compare import CompareModel
from ._render import show

GUEST_SIZES = ("16M", "64M", "256M", "1G", "4G", "16G")
PAGE_SIZES = ("4K", "2M", "1G")
METRICS = ("inv_cmds", "sync_cmds", "doorbells", "inv_all_cmds", "wasted_inv_cmds",
           "needless_sync_cmds", "cmdq_full_stalls", "mmio_reads", "cpu_ns", "iommu_ns",
           "end_ns", "over_invalidated", "stale_hits", "max_stale_ns")
DEFAULT_STRATEGIES = ("smmuv3-v4.14", "smmuv3-v4.15", "smmuv3-v5.4", "smmuv3-ril")
DEFAULT_CALLERS = ("unmap-each", "unmap-fast-batch", "unmap-then-flush-all")


class CompareDashboard:
    """Strategy × caller comparison over a KVM/VFIO guest teardown: controls for
    :class:`~iommu_lab.analysis.compare.CompareModel`."""

    def __init__(self, strategies: Sequence[str] = DEFAULT_STRATEGIES,
                 callers: Sequence[str] = DEFAULT_CALLERS, guest_mem: str = "256M",
                 page_size: str = "4K", contiguity: float = 0.0, metric: str = "inv_cmds",
                 log: bool = True, run: bool = True) -> None:
        self.model = CompareModel(strategies, callers, guest_mem, page_size, contiguity,
                                  metric, log)
        self.update_ms = 0.0
        self._syncing = False
        W = widgets
        self.w_strategies = W.SelectMultiple(options=list(il.STRATEGIES), value=tuple(strategies),
                                             rows=9, description="strategies")
        self.w_callers = W.SelectMultiple(options=list(CALLERS), value=tuple(callers), rows=6,
                                          description="callers")
        self.w_guest = W.Dropdown(options=list(GUEST_SIZES), value=guest_mem,
                                  description="guest mem")
        self.w_page = W.Dropdown(options=list(PAGE_SIZES), value=page_size,
                                 description="page size")
        self.w_contig = W.FloatSlider(value=contiguity, min=0.0, max=1.0, step=0.05,
                                      description="contiguity")
        self.w_metric = W.Dropdown(options=list(METRICS), value=metric, description="metric")
        self.w_log = W.Checkbox(value=log, description="log scale", indent=False)
        self.b_run = W.Button(description="run compare()", button_style="primary")
        self.b_run.on_click(lambda _b: self.run())
        self.w_status = W.HTML()
        self.w_error = W.HTML()
        self.out_chart = W.HTML()          # SVG bars: the page needs no plotly.js
        self.out_table = W.Output()
        for w, cls in ((self.w_strategies, "iommu-compare-strategies"),
                       (self.w_callers, "iommu-compare-callers"),
                       (self.w_guest, "iommu-compare-guest"), (self.w_page, "iommu-compare-page"),
                       (self.w_contig, "iommu-compare-contiguity"),
                       (self.w_metric, "iommu-compare-metric"), (self.w_log, "iommu-compare-log"),
                       (self.b_run, "iommu-compare-run-btn"),
                       (self.w_status, "iommu-compare-status"),
                       (self.w_error, "iommu-compare-error"),
                       (self.out_chart, "iommu-compare-chart-out"),
                       (self.out_table, "iommu-compare-table-out")):
            w.add_class(cls)
        self.w_metric.observe(lambda _c: self._on_metric(), names="value")
        self.w_log.observe(lambda _c: self._on_metric(), names="value")
        box = W.HBox
        self.widget = W.VBox([
            W.HTML("<h3 style='margin:0'>Strategy comparison: KVM/VFIO guest teardown</h3>"),
            box([self.w_strategies, self.w_callers,
                 W.VBox([self.w_guest, self.w_page, self.w_contig, self.w_metric, self.w_log,
                         self.b_run])]),
            self.w_error, self.w_status, self.out_chart, self.out_table])
        self.widget.add_class("iommu-compare")
        self.model.on_change(lambda _m: self._render())
        if run:
            self.run()

    @property
    def df(self) -> Any:
        """The tidy ``compare()`` DataFrame of the last successful run (None before one)."""
        return self.model.df

    @property
    def figure(self) -> Any:
        """The bars as a plotly figure (the dashboard draws the same as SVG, ``out_chart``);
        None before a successful run."""
        if self.df is None:
            return None
        return views.compare_figure(self.df, self.model.metric, log=self.model.log_scale)

    @property
    def error(self) -> str | None:
        """The last action's error message (None if it succeeded)."""
        return self.model.error

    def run(self, strategies: Sequence[str] | None = None, callers: Sequence[str] | None = None,
            guest_mem: str | None = None, page_size: str | None = None,
            contiguity: float | None = None) -> Any:
        """Run ``compare()`` with the given settings, the controls' values for the rest."""
        given = {"strategies": strategies, "callers": callers, "guest_mem": guest_mem,
                 "page_size": page_size, "contiguity": contiguity}
        fields = {"strategies": self.w_strategies.value, "callers": self.w_callers.value,
                  "guest_mem": self.w_guest.value, "page_size": self.w_page.value,
                  "contiguity": self.w_contig.value}
        t0 = time.perf_counter()
        self.w_status.value = "<i>running…</i>"
        df = self.model.run(**{k: fields[k] if v is None else v for k, v in given.items()})
        self.update_ms = (time.perf_counter() - t0) * 1000
        if df is not None:
            self._sync_controls()
            self.w_status.value = (f"{html.escape(self.model.description)}<br><small>"
                                   f"{len(df)} runs in {self.update_ms:,.0f} ms (wall)</small>")
        return df

    def set_metric(self, metric: str, log: bool | None = None) -> None:
        """Show another counter (and optionally switch the log scale) without re-running."""
        self.model.set_metric(metric, log)
        self._sync_controls()

    def _on_metric(self) -> None:
        if not self._syncing:
            self.model.set_metric(self.w_metric.value, self.w_log.value)

    def _sync_controls(self) -> None:
        """Show the model's settings in the controls (without triggering anything)."""
        self._syncing = True
        try:
            st = self.model.settings
            self.w_strategies.value, self.w_callers.value = st["strategies"], st["callers"]
            self.w_guest.value, self.w_page.value = st["guest_mem"], st["page_size"]
            self.w_contig.value = st["contiguity"]
            self.w_metric.value, self.w_log.value = self.model.metric, self.model.log_scale
        finally:
            self._syncing = False

    def _render(self) -> None:
        err = self.model.error
        self.w_error.value = (f'<span style="color:#b91c1c">⚠ {html.escape(err)}</span>'
                              if err else "")
        if err:
            self.w_status.value = ""
        if self.df is None:
            return
        table = views.compare_table(self.df)
        self.out_chart.value = views.compare_html(self.df, self.model.metric,
                                                  log=self.model.log_scale)
        show(self.out_table, table.style.hide(axis="index").format(thousands=",")
             .set_table_attributes('class="iommu-compare-table"'))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

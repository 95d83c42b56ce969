"""The stepper widget: controls for :class:`~iommu_lab.analysis.stepping.StepperModel`.

This module only builds controls, binds them and re-renders; the model does the work.
Every button is also a plain method, so notebooks and tests drive it without a browser::

    from iommu_lab.ui import Stepper
    s = Stepper("smmuv3-v4.15")
    s.map("0x0", "64K"); s.dma_read("0x1000"); s.unmap_fast("0x0", "64K")
    s.consume(1)                  # the IOMMU executes one queued command
    s.tlb_sync()                  # CMD_SYNC: the CPU waits until everything before it is done
    s.domain.stats()["inv_cmds"]  # 16

A method's arguments go straight to the model; where one is omitted, the input field's
value is used (that is what a button click does). Bad input sets ``s.error`` (shown in red)
and leaves the domain exactly as it was.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

import iommu_lab as il

from .. import views
from ..analysis.stepping import ACTIONS, PROTS, Action, StepperModel
from ..core.domain import DOMAIN_TYPES
from ..drivers.registry import API_VARIANTS
from ._render import html_rows

TIMELINE_EVENTS = 150   # trace records the stepper's timeline draws (the newest)
PGTABLE_ROWS = 32       # leaves the stepper's page-table view lists


class Stepper:
    """A live IOMMU domain with buttons for map / unmap / sync / flush / DMA / consume."""

    def __init__(self, strategy: str = "smmuv3-v4.15", api: str = "kernel",
                 type: str = "UNMANAGED", *, paused: bool = True, iova: str = "0x0",
                 size: str = "64K", paddr: str = "", **params: Any) -> None:
        self.model = StepperModel(strategy, api, type, paused=paused, **params)
        self.update_ms: float = 0.0
        self.views: dict[str, Any] = {}
        self._syncing = False
        self._build_widgets(iova, size, paddr)
        self.model.on_change(lambda _m: self.refresh())
        self.refresh()

    # ---- what the model knows ---------------------------------------------------------
    @property
    def domain(self) -> il.IommuDomain:
        """The simulated ``struct iommu_domain`` being stepped."""
        return self.model.domain

    @property
    def queue(self) -> Any:
        """The domain's invalidation queue."""
        return self.model.queue

    @property
    def gather(self) -> Any:
        """The caller's gather (``unmap_fast`` fills it, ``iotlb_sync`` completes it)."""
        return self.model.gather

    @property
    def strategy(self) -> str:
        """The driver strategy's name."""
        return self.model.strategy

    @property
    def api(self) -> str:
        """``"kernel"`` or ``"rfc-2017"``."""
        return self.model.api

    @property
    def error(self) -> str | None:
        """The last action's error message (None if it succeeded)."""
        return self.model.error

    @property
    def log(self) -> list[str]:
        """The action log, oldest first."""
        return self.model.log

    @property
    def last(self) -> str:
        """The last successful action and its result."""
        return self.model.last

    # ---- actions: argument or input field, straight to the model ---------------------------
    def _field(self, value: Any, w: widgets.Text) -> Any:
        if value is None:
            return w.value
        w.value = value if isinstance(value, str) else hex(value) if isinstance(
            value, int) and not isinstance(value, bool) else str(value)
        return value

    def map(self, iova: Any = None, size: Any = None, paddr: Any = None,
            prot: Any = None) -> Any:
        """``iommu_map`` (``iommu_dma_map`` at that IOVA on DMA domains)."""
        return self.model.map(self._field(iova, self.w_iova), self._field(size, self.w_size),
                              self._field(paddr, self.w_paddr),
                              self.w_prot.value if prot is None else prot)

    def map_sync(self, iova: Any = None, size: Any = None, paddr: Any = None,
                 prot: Any = None) -> Any:
        """The 2017 proposal's ``iommu_map_sync`` (never merged)."""
        return self.model.map_sync(self._field(iova, self.w_iova),
                                   self._field(size, self.w_size),
                                   self._field(paddr, self.w_paddr),
                                   self.w_prot.value if prot is None else prot)

    def unmap(self, iova: Any = None, size: Any = None) -> Any:
        """``iommu_unmap`` (``iommu_dma_unmap`` on DMA domains); returns bytes unmapped."""
        return self.model.unmap(self._field(iova, self.w_iova), self._field(size, self.w_size))

    def unmap_sync(self, iova: Any = None, size: Any = None) -> Any:
        """The 2017 proposal's ``iommu_unmap_sync``."""
        return self.model.unmap_sync(self._field(iova, self.w_iova),
                                     self._field(size, self.w_size))

    def unmap_fast(self, iova: Any = None, size: Any = None) -> Any:
        """``iommu_unmap_fast`` into the caller's gather; returns bytes unmapped."""
        return self.model.unmap_fast(self._field(iova, self.w_iova),
                                     self._field(size, self.w_size))

    def unmap_cpus(self, iova: Any = None, size: Any = None, n: Any = None) -> Any:
        """``n`` CPUs each unmap a slice of the range at once (``Stepper(..., cpus=n)``)."""
        return self.model.unmap_cpus(self._field(iova, self.w_iova),
                                     self._field(size, self.w_size),
                                     self.w_n.value if n is None else n)

    def range_add(self, iova: Any = None, size: Any = None) -> Any:
        """``iommu_tlb_range_add`` (2017 / v4.14)."""
        return self.model.range_add(self._field(iova, self.w_iova),
                                    self._field(size, self.w_size))

    def sync(self) -> Any:
        """``iommu_iotlb_sync`` (``iommu_tlb_sync`` in 2017)."""
        return self.model.sync()

    tlb_sync = iotlb_sync = sync

    def flush_all(self) -> Any:
        """``iommu_flush_iotlb_all`` (2017 name ``iommu_flush_tlb_all``)."""
        return self.model.flush_all()

    def dma_read(self, iova: Any = None) -> Any:
        """The device reads ``iova`` (an explicit iova leaves the input field alone)."""
        return self.model.dma_read(self.w_iova.value if iova is None else iova)

    def dma_write(self, iova: Any = None) -> Any:
        """The device writes ``iova`` (a stale result means DMA into freed memory)."""
        return self.model.dma_write(self.w_iova.value if iova is None else iova)

    def consume(self, n: Any = None) -> Any:
        """Let the IOMMU execute ``n`` more queued commands; returns how many it did."""
        return self.model.consume(self.w_n.value if n is None else n)

    def run_until_idle(self) -> Any:
        """Let the IOMMU execute everything published."""
        return self.model.run_until_idle()

    def advance(self, ns: Any) -> Any:
        """Let ``ns`` nanoseconds pass (flush-queue timers fire)."""
        return self.model.advance(ns)

    def set_paused(self, paused: bool) -> Any:
        """Pause the IOMMU (stepper mode) or let it run."""
        self._syncing = True
        try:
            self.w_paused.value = bool(paused)
        finally:
            self._syncing = False
        return self.model.set_paused(paused)

    def reset(self, strategy: str | None = None, api: str | None = None,
              type: str | None = None, paused: bool | None = None) -> None:
        """A fresh domain (optionally another strategy / API / domain type)."""
        self.model.reset(strategy or self.w_strategy.value, api or self.w_api.value,
                         type or self.w_type.value,
                         self.w_paused.value if paused is None else paused)
        self._sync_pickers()

    def _sync_pickers(self) -> None:
        """Show the domain's actual settings in the pickers (without triggering a reset)."""
        self._syncing = True
        try:
            d = self.domain
            self.w_strategy.value, self.w_api.value = d.strategy.name, d.api.name
            self.w_type.value, self.w_paused.value = d.type, self.queue.paused
        finally:
            self._syncing = False

    # ---- views ---------------------------------------------------------------------------
    def ring_figure(self) -> Any:
        """The command ring now (plotly figure; the stepper draws the same as HTML)."""
        return views.ring_figure(self.queue, title=self._ring_title())

    def ring_grid(self) -> Any:
        """The command ring now, as the stepper draws it (:class:`views.cmdq.RingGrid`)."""
        return views.ring_grid(self.queue, title=self._ring_title())

    def iotlb(self) -> Any:
        """The IOTLB now (DataFrame with a ``state`` column; STALE = freed memory)."""
        return views.iotlb_table(self.domain)

    def pgtable(self) -> Any:
        """The mapped leaves now (DataFrame)."""
        return views.pgtable_table(self.domain, limit=64)

    def counters(self, names: Any = "key") -> Any:
        """Counters with the change made by the last action (``delta``)."""
        return views.counters_table(self.domain.stats(), names, before=self.model.before)

    def timeline(self) -> Any:
        """CPU-vs-IOMMU Gantt chart of the last actions (plotly figure)."""
        return views.timeline_figure(self.domain, max_events=TIMELINE_EVENTS,
                                     title=self._timeline_title())

    def status(self) -> str:
        """One line: time, queue registers, pending commands, the last action."""
        st = self.queue.state()
        return (f"t = {self.domain.clock.now:,} ns · {views.register_text(self.queue)} · "
                f"{st.pending} pending · last: {self.last or '-'}")

    def refresh(self) -> None:
        """Recompute every view and show it (``update_ms`` = wall time taken).

        Every view is HTML: the ring, the tables, the address-space strip and the timeline
        (:func:`views.gantt_html`: SVG, a few ms for the browser where a plotly relayout took
        70-330 ms of each click, issue 13). All markup is made first and then set in one go,
        so the browser gets the updates back to back and lays the page out once, not once
        per view; a view whose content did not change sends nothing.
        """
        t0 = time.perf_counter()
        ctr, tlb, tables = self._tables()
        spec = views.timeline_spec(self.domain, max_events=TIMELINE_EVENTS,
                                   title=self._timeline_title())
        pt, strip, pgtable = self._pgtable()
        markup = {
            self.w_status: f"<code>{html.escape(self.status())}</code>",
            self.w_error: (f'<span class="iommu-error-text" style="color:#b91c1c">'
                           f"⚠ {html.escape(self.error)}</span>" if self.error else ""),
            **tables,
            self.out_ring: views.ring_html(self.queue, title=self._ring_title()),
            self.out_timeline: views.gantt_html(spec),
            self.out_pgtable: pgtable,
            self.w_log: ("<pre style='max-height:14em;overflow:auto;margin:0'>"
                         + html.escape("\n".join(reversed(self.log))) + "</pre>")}
        labels = {a.name: self.model.label(a) for a in ACTIONS}
        self.update_ms = (time.perf_counter() - t0) * 1000
        for w, value in markup.items():
            w.value = value
        for name, label in labels.items():
            self.buttons[name].description = label
        self.w_timing.value = f"<small>views refreshed in {self.update_ms:.0f} ms</small>"
        self.views = {"ring": self.out_ring.value, "iotlb": tlb, "pgtable": pt,
                      "strip": strip, "counters": ctr, "timeline": spec}

    def _tables(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[Any, str]]:
        """The counters (changed ones highlighted) and the IOTLB (stale entries in red):
        their rows and the markup of each widget."""
        ctr = views.counters_rows(self.domain.stats(), "key", before=self.model.before)
        tlb = views.iotlb_rows(self.domain)
        stale = sum(r["state"] == "STALE" for r in tlb)
        return ctr, tlb, {
            self.out_counters: html_rows(ctr, ["counter", "value", "delta"],
                                         "iommu-counters-table", key="counter",
                                         row_style=_changed_style),
            self.out_iotlb: html_rows(
                tlb, list(views.iotlb.COLUMNS), "iommu-iotlb-table", row_style=_tlb_style,
                caption=f"{len(tlb)} of {self.domain.hw.iotlb.capacity} entries, "
                        f"{stale} stale")}

    def _pgtable(self) -> tuple[list[dict[str, Any]], str, str]:
        """The first leaves of the page table, the address-space strip, and both as the
        page-table widget's markup."""
        pt, total = views.pgtable_rows(self.domain, limit=PGTABLE_ROWS)
        strip = views.address_space_html(self.domain, max_bars=64)
        note = (f"first {PGTABLE_ROWS} leaves shown, more exist" if total > PGTABLE_ROWS
                else f"{len(pt)} leaves")
        return pt, strip, strip + html_rows(
            pt, [c for c in views.pgtable.COLUMNS if c != "bytes"], "iommu-pgtable-table",
            caption=note)

    def _ring_title(self) -> str:
        return f"{self.strategy}: command queue"

    def _timeline_title(self) -> str:
        return f"{self.strategy}: CPU vs IOMMU"

    # ---- widgets -------------------------------------------------------------------------
    def _build_widgets(self, iova: str, size: str, paddr: str) -> None:
        W, lay, d = widgets, widgets.Layout, self.domain
        self.w_strategy = W.Dropdown(options=list(il.STRATEGIES), value=d.strategy.name,
                                     description="strategy", layout=lay(width="250px"))
        self.w_api = W.Dropdown(options=list(API_VARIANTS), value=d.api.name,
                                description="API era", layout=lay(width="190px"),
                                tooltip="kernel: the API of the strategy's era; rfc-2017: "
                                        "Joerg Roedel's Aug-2017 proposal")
        self.w_type = W.Dropdown(options=list(DOMAIN_TYPES), value=d.type, description="type",
                                 layout=lay(width="190px"))
        self.w_paused = W.Checkbox(value=self.queue.paused, description="IOMMU paused (step it)",
                                   indent=False)
        self.w_iova = W.Text(value=iova, description="iova", layout=lay(width="190px"))
        self.w_size = W.Text(value=size, description="size", layout=lay(width="160px"))
        self.w_paddr = W.Text(value=paddr, description="paddr", placeholder="iova + 1G",
                              layout=lay(width="210px"))
        self.w_prot = W.Dropdown(options=list(PROTS), value="RW", description="prot",
                                 layout=lay(width="140px"))
        self.w_n = W.BoundedIntText(value=1, min=1, max=4096, description="n",
                                    layout=lay(width="130px"))
        self.buttons = {a.name: self._action_button(a) for a in ACTIONS}
        self.b_reset = self._button("reset", "iommu-reset-btn", lambda: self.reset(),
                                    "a fresh domain")
        for w, cls in ((self.w_strategy, "iommu-strategy-picker"), (self.w_api, "iommu-api-picker"),
                       (self.w_type, "iommu-type-picker"), (self.w_paused, "iommu-paused-toggle"),
                       (self.w_iova, "iommu-iova-input"), (self.w_size, "iommu-size-input"),
                       (self.w_paddr, "iommu-paddr-input"), (self.w_prot, "iommu-prot-picker"),
                       (self.w_n, "iommu-consume-n")):
            w.add_class(cls)
        for w in (self.w_strategy, self.w_api, self.w_type):
            w.observe(self._on_picker, names="value")
        self.w_paused.observe(self._on_paused, names="value")
        self.w_error = W.HTML().add_class("iommu-error")
        self.w_status = W.HTML().add_class("iommu-status")
        self.w_timing = W.HTML().add_class("iommu-timing")
        self.w_log = W.HTML().add_class("iommu-log")
        self.out_ring = W.HTML().add_class("iommu-ring-out")
        self.out_iotlb = W.HTML().add_class("iommu-iotlb-out")
        self.out_pgtable = W.HTML().add_class("iommu-pgtable-out")
        self.out_counters = W.HTML().add_class("iommu-counters-out")
        self.out_timeline = W.HTML().add_class("iommu-timeline-out")
        self.widget = self._layout()
        self.widget.add_class("iommu-stepper")

    def _layout(self) -> widgets.VBox:
        W, box = widgets, widgets.HBox
        group = {g: [self.buttons[a.name] for a in ACTIONS if a.group == g]
                 for g in ("api", "device", "iommu", "cpus")}
        if self.model.domain.cpus.n > 1:      # several CPUs: their action joins the API row
            group["api"] += group["cpus"]
        controls = W.VBox([
            box([self.w_strategy, self.w_api, self.w_type, self.w_paused, self.b_reset]),
            box([self.w_iova, self.w_size, self.w_paddr, self.w_prot]),
            box(group["api"]),
            box([*group["device"], self.w_n, *group["iommu"]]),
            self.w_error, self.w_status, self.w_timing])
        left = W.VBox([_titled("Command queue", self.out_ring),
                       _titled("CPU vs IOMMU", self.out_timeline)],
                      layout=W.Layout(width="58%"))
        right = W.VBox([_titled("Counters (yellow: changed by the last action)",
                                self.out_counters),
                        _titled("IOTLB (red: STALE, i.e. DMA into freed memory)",
                                self.out_iotlb),
                        _titled("Page table", self.out_pgtable)],
                       layout=W.Layout(width="42%"))
        return W.VBox([W.HTML("<h3 style='margin:0'>IOMMU stepper</h3>"), controls,
                       box([left, right]), _titled("Log (newest first)", self.w_log)])

    def _action_button(self, action: Action) -> widgets.Button:
        """One button per :data:`ACTIONS` row, bound to the method of the same name."""
        b = self._button(action.label, f"iommu-{action.stem}-btn", getattr(self, action.name),
                         action.tip, action.style)
        setattr(self, "b_" + action.stem.replace("-", "_"), b)
        return b

    def _button(self, label: str, cls: str, action: Callable[[], Any], tip: str,
                style: str = "") -> widgets.Button:
        b = widgets.Button(description=label, tooltip=tip, button_style=style,
                           layout=widgets.Layout(width="auto"))
        b.add_class(cls)
        b.on_click(lambda _b: action())
        return b

    def _on_picker(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.reset()

    def _on_paused(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.model.set_paused(bool(change["new"]))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return f"<Stepper {self.model.describe()}; {len(self.log)} log lines>"


def _titled(title: str, w: widgets.Widget) -> widgets.VBox:
    return widgets.VBox([widgets.HTML(f"<b>{html.escape(title)}</b>"), w])


def _tlb_style(row: dict[str, Any]) -> str:
    return {"STALE": "background:#fecaca;font-weight:bold",
            "negative": "background:#e5e7eb"}.get(row["state"], "")


def _changed_style(row: dict[str, Any]) -> str:
    return "background:#fef9c3;font-weight:bold" if row["delta"] else ""

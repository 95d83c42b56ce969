"""The stepper: one domain, a button per IOMMU API call, and live views of its state.

Every button is also a plain method, so notebooks and tests drive it without a browser::

    from iommu_lab.ui import Stepper
    s = Stepper("smmuv3-v4.15")
    s.map("0x0", "64K"); s.dma_read("0x1000"); s.unmap_fast("0x0", "64K")
    s.consume(1)                  # the IOMMU executes one queued command
    s.tlb_sync()                  # CMD_SYNC: the CPU waits until everything before it is done
    s.domain.stats()["inv_cmds"]  # 16

Bad input (misaligned, overlapping, past the IAS, not a number...) sets ``s.error`` to a
message shown in red in the widget and leaves the domain exactly as it was (the domain is
snapshotted before each action and restored on failure). By default the queue is
*paused*: the IOMMU consumes commands only when told to (``consume``), or when the CPU
waits for a CMD_SYNC; untick "IOMMU paused" to let it run on its own clock.
"""

from __future__ import annotations

import copy
import html
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

import iommu_lab as il

from .. import views
from ..core.domain import APIS, DOMAIN_TYPES
from ..units import fmt_size, parse_addr, parse_size
from ._render import html_table, show

DEFAULT_PADDR_OFFSET = 0x4000_0000   # paddr = iova + 1 GiB unless given (keeps alignment)
MAX_PAGES = 16_384                   # pages one stepper action may map or invalidate
LOG_LINES = 200
TRACE_KEEP = 50_000                  # trace records kept for the timeline (oldest dropped)
PROTS = {"RW": il.IOMMU_READ | il.IOMMU_WRITE, "R": il.IOMMU_READ, "W": il.IOMMU_WRITE}


class StepperInputError(ValueError):
    """Input the stepper refuses before calling the model (e.g. too many pages)."""


class Stepper:
    """A live IOMMU domain with buttons for map / unmap / sync / flush / DMA / consume."""

    def __init__(self, strategy: str = "smmuv3-v4.15", api: str = "kernel",
                 type: str = "UNMANAGED", *, paused: bool = True, iova: str = "0x0",
                 size: str = "64K", paddr: str = "", **params: Any) -> None:
        self.error: str | None = None
        self.log: list[str] = []
        self.last: str = ""
        self.update_ms: float = 0.0
        self.views: dict[str, Any] = {}
        self._syncing = False
        self._params = dict(params)
        self._build_widgets(strategy, api, type, paused, iova, size, paddr)
        self._alloc(strategy, api, type, paused)
        self._note(f"domain: {self._describe()}")
        for note in self._alloc_notes:
            self._note(f"note: {note}")
        self.refresh()

    # ---- model ---------------------------------------------------------------------
    @property
    def domain(self) -> il.IommuDomain:
        """The simulated ``struct iommu_domain`` being stepped."""
        return self._dom

    @property
    def queue(self) -> Any:
        """The domain's invalidation queue (``domain.driver.q``)."""
        return self._dom.driver.q

    @property
    def strategy(self) -> str:
        """The driver strategy's name (``smmuv3-v4.15``...)."""
        return self._dom.strategy.name

    @property
    def api(self) -> str:
        """``"kernel"`` or ``"rfc-2017"`` (Joerg Roedel's proposal)."""
        return self._dom.api

    def _alloc(self, strategy: str, api: str, dtype: str, paused: bool) -> None:
        params = dict(self._params)
        notes = []
        try:
            dom = il.iommu_domain_alloc(strategy, type=dtype, api=api, **params)
        except il.IommuError as exc:
            if "cmdq_entries" not in params or "cmdq_entries" not in str(exc):
                raise
            params.pop("cmdq_entries")   # a small teaching ring this driver cannot use
            dom = il.iommu_domain_alloc(strategy, type=dtype, api=api, **params)
            notes.append(f"{exc.strerror}; using the driver's default "
                         f"{dom.driver.q.entries}-slot queue")
        self._dom = dom
        self.gather = il.IommuIotlbGather()   # the caller's gather (kernel API)
        self._before = dom.stats()
        self._alloc_notes = notes + list(dom.notes)
        for q in dom.hw.queues:
            q.paused = paused

    def _describe(self) -> str:
        d = self._dom
        paused = "paused" if self.queue.paused else "running"
        return (f"{d.strategy.name} ({d.strategy.kernel}), api={d.api}, type={d.type}, "
                f"{self.queue.entries}-slot queue, IOMMU {paused}")

    # ---- the action wrapper ----------------------------------------------------------
    def _act(self, label: str, fn: Callable[[], Any]) -> Any:
        """Run one action atomically: snapshot, call, restore on any error; then refresh."""
        dom, gather = self._dom, self.gather
        events = dom.trace.events
        n_events, dropped = len(events), dom.trace.dropped
        dom.trace.events = []                 # the trace is append-only: truncate, don't copy
        try:
            snap = copy.deepcopy((dom, gather))
        finally:
            dom.trace.events = events
        before = dom.stats()
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - any failure must leave the model unchanged
            self._dom, self.gather = snap
            del events[n_events:]
            self._dom.trace.events, self._dom.trace.dropped = events, dropped
            prefix = "" if isinstance(exc, (il.IommuError, ValueError)) else (
                f"{type(exc).__name__}: ")
            self.error = f"{label}: {prefix}{exc}"
            self._note(f"✗ {label} — {prefix}{exc}")
            self.refresh()
            return None
        self.error = None
        self._before = before
        self._trim_trace()
        self.last = f"{label} → {result}" if result not in (None, "") else label
        self._note(f"✓ {self.last}")
        self.refresh()
        return result

    def _trim_trace(self) -> None:
        """Keep the newest records only, so a long session's timeline stays current."""
        trace = self._dom.trace
        extra = len(trace.events) - TRACE_KEEP
        if extra > 0:
            del trace.events[:extra + TRACE_KEEP // 2]
            trace.dropped += extra + TRACE_KEEP // 2

    def _note(self, line: str) -> None:
        self.log.append(f"{len(self.log) + 1:3d}  t={self._dom.clock.now:>9,} ns  {line}")
        del self.log[:-LOG_LINES]

    # ---- input parsing ----------------------------------------------------------------
    def _iova(self, value: Any) -> int:
        return parse_addr(self.w_iova.value if value is None else value, "iova")

    def _size(self, value: Any) -> int:
        return parse_size(self.w_size.value if value is None else value, "size")

    def _paddr(self, value: Any, iova: int) -> int:
        text = self.w_paddr.value if value is None else value
        if isinstance(text, str) and not text.strip():
            return iova + DEFAULT_PADDR_OFFSET
        return parse_addr(text, "paddr")

    def _inputs(self, iova: Any, size: Any) -> tuple[int, int]:
        if iova is not None:
            self._set_text(self.w_iova, iova)
        if size is not None:
            self._set_text(self.w_size, size)
        return self._iova(iova), self._size(size)

    @staticmethod
    def _set_text(w: widgets.Text, value: Any) -> None:
        w.value = value if isinstance(value, str) else hex(value) if isinstance(
            value, int) and not isinstance(value, bool) else str(value)

    def _guard_map(self, iova: int, paddr: int, size: int) -> None:
        dom = self._dom
        if size and not (iova | paddr | size) % dom.min_pagesz:
            df = views.split_table(dom, iova, paddr, size, max_calls=MAX_PAGES + 1)
            if not df.attrs["complete"] or df["pages"].sum() > MAX_PAGES:
                raise StepperInputError(
                    f"{fmt_size(size)} would need more than {MAX_PAGES:,} pages; the stepper "
                    "takes at most that many per action (use compare() for big workloads)")

    def _guard_unmap(self, iova: int, size: int) -> None:
        """Refuse unmaps that would touch more than MAX_PAGES granules.

        Follows the core's loop (``iommu_pgsize`` chunks, stopping at the first hole): a
        chunk that covers a whole table page frees it, which costs one invalidation per
        granule underneath on SMMU drivers (faithful, but 262,144 commands for 1G).
        """
        dom = self._dom
        pt, g = dom.pgtable, dom.pgtable.granule
        if not size or (iova | size) % dom.min_pagesz or iova + size > 1 << pt.cfg.ias:
            return  # the model refuses it with the kernel's errno
        work, at, end, steps = 0, iova, iova + size, 0
        while at < end and work <= MAX_PAGES and steps <= 4 * MAX_PAGES:
            steps += 1
            pgsize, count = il.iommu_pgsize(dom, at, at, end - at)
            walk = views.walk_table(dom, at)
            last = walk.iloc[-1]
            if last["kind"] == "invalid":
                break                                  # a hole: iommu_unmap stops here
            leaf_level = next(lvl for lvl in range(pt.start_level, 4)
                              if pt.block_size(lvl) == pgsize)
            if int(last["level"]) > leaf_level:        # a whole table page goes
                work += (pgsize // g) * count
            else:
                work += count
            at += pgsize * count
        if work > MAX_PAGES or steps > 4 * MAX_PAGES:
            raise StepperInputError(
                f"that unmap would invalidate more than {MAX_PAGES:,} pages (it frees whole "
                "page-table pages); the stepper takes at most that many per action (use "
                "compare() for big workloads)")

    # ---- actions: the IOMMU API ----------------------------------------------------------
    def map(self, iova: Any = None, size: Any = None, paddr: Any = None,
            prot: Any = None) -> int | None:
        """``iommu_map`` (``iommu_dma_map`` at a chosen IOVA on DMA domains); returns 0."""
        def run() -> Any:
            i, n = self._inputs(iova, size)
            p = self._paddr(paddr, i)
            pr = self._prot(prot)
            self._guard_map(i, p, n)
            if self._dom.type in ("DMA", "DMA_FQ"):
                il.iommu_dma_map(self._dom, p, n, pr, iova=i)
                return f"{self._count_leaves(i, n)} leaves"
            il.iommu_map(self._dom, i, p, n, pr)
            return f"{self._count_leaves(i, n)} leaves"
        return self._act(f"map {self._label(iova, size)}", run)

    def map_sync(self, iova: Any = None, size: Any = None, paddr: Any = None,
                 prot: Any = None) -> int | None:
        """The 2017 proposal's ``iommu_map_sync``: map, then range_add + sync (never merged)."""
        def run() -> Any:
            i, n = self._inputs(iova, size)
            p = self._paddr(paddr, i)
            self._guard_map(i, p, n)
            return il.iommu_map_sync(self._dom, i, p, n, self._prot(prot))
        return self._act(f"iommu_map_sync {self._label(iova, size)}", run)

    def unmap(self, iova: Any = None, size: Any = None) -> int | None:
        """``iommu_unmap`` (on DMA domains ``iommu_dma_unmap``); returns bytes unmapped."""
        def run() -> Any:
            i, n = self._inputs(iova, size)
            self._guard_unmap(i, n)
            if self._dom.type in ("DMA", "DMA_FQ"):
                il.iommu_dma_unmap(self._dom, i, n)
                return n
            return il.iommu_unmap(self._dom, i, n)
        return self._act(f"unmap {self._label(iova, size)}", run)

    def unmap_sync(self, iova: Any = None, size: Any = None) -> int | None:
        """The 2017 proposal's ``iommu_unmap_sync``: unmap, then range_add + sync."""
        def run() -> Any:
            i, n = self._inputs(iova, size)
            self._guard_unmap(i, n)
            return il.iommu_unmap_sync(self._dom, i, n)
        return self._act(f"iommu_unmap_sync {self._label(iova, size)}", run)

    def unmap_fast(self, iova: Any = None, size: Any = None) -> int | None:
        """``iommu_unmap_fast``: unmap without syncing; returns bytes unmapped.

        Kernel API: into the stepper's own gather (``s.gather``); 2017 API: the domain's.
        """
        def run() -> Any:
            i, n = self._inputs(iova, size)
            self._guard_unmap(i, n)
            g = self.gather if self._dom.api == "kernel" else None
            return il.iommu_unmap_fast(self._dom, i, n, g)
        return self._act(f"unmap_fast {self._label(iova, size)}", run)

    def range_add(self, iova: Any = None, size: Any = None) -> None:
        """``iommu_tlb_range_add`` (2017/v4.14): tell the driver a range needs flushing."""
        def run() -> Any:
            i, n = self._inputs(iova, size)
            il.iommu_tlb_range_add(self._dom, i, n)
        return self._act(f"iommu_tlb_range_add {self._label(iova, size)}", run)

    def tlb_sync(self) -> None:
        """``iommu_tlb_sync`` (2017) / ``iommu_iotlb_sync`` (kernel): complete the flush."""
        if self._dom.api == "rfc-2017":
            return self._act("iommu_tlb_sync", lambda: il.iommu_tlb_sync(self._dom))
        return self._act("iommu_iotlb_sync",
                         lambda: il.iommu_iotlb_sync(self._dom, self.gather))

    iotlb_sync = tlb_sync

    def flush_all(self) -> None:
        """``iommu_flush_iotlb_all`` (2017 name ``iommu_flush_tlb_all``)."""
        name = "iommu_flush_tlb_all" if self._dom.api == "rfc-2017" else "iommu_flush_iotlb_all"
        return self._act(name, lambda: il.iommu_flush_iotlb_all(self._dom))

    def dma_read(self, iova: Any = None) -> str | None:
        """The device reads ``iova``: ``"hit"`` | ``"walk"`` | ``"fault"`` | ``"stale"``."""
        return self._dma(iova, False)

    def dma_write(self, iova: Any = None) -> str | None:
        """The device writes ``iova`` (a stale result means DMA into freed memory)."""
        return self._dma(iova, True)

    def _dma(self, iova: Any, write: bool) -> str | None:
        def run() -> Any:  # an explicit iova does not overwrite the region in the iova field
            return il.dma_access(self._dom, self._iova(iova), write)
        return self._act(f"DMA {'write' if write else 'read'} {self._label(iova)}", run)

    # ---- actions: the hardware ------------------------------------------------------------
    def consume(self, n: Any = 1) -> int | None:
        """Let the IOMMU execute ``n`` more queued commands; returns how many it did."""
        def run() -> Any:
            k = self._count(n)
            if self.queue.paused:
                return sum(q.consume(k) for q in self._dom.hw.queues)
            return self._let_time_pass(k)
        return self._act(f"IOMMU consumes {n}", run)

    def run_until_idle(self) -> int | None:
        """Let the IOMMU execute everything published; returns how many commands."""
        def run() -> Any:
            if self.queue.paused:
                return sum(q.run_until_idle() for q in self._dom.hw.queues)
            return self._let_time_pass(None)
        return self._act("IOMMU runs until idle", run)

    def _let_time_pass(self, n: int | None) -> int:
        """Unpaused queue: move the clock until ``n`` more commands (or all) have completed."""
        dom, done = self._dom, 0
        for q in dom.hw.queues:
            cons = q.consumed_at(dom.clock.now)
            target = q.published if n is None else min(cons + n, q.published)
            if target <= cons:
                continue
            for run in q.runs:
                if run.pos <= target - 1 < run.end and run.start is not None:
                    dom.clock.idle_until(run.finish(target - 1 - run.pos))
            done += target - cons
        dom.hw.settle()
        return done

    def advance(self, ns: Any) -> None:
        """Let ``ns`` nanoseconds pass (flush-queue timers fire; the IOMMU keeps working)."""
        from ..core.dma_iommu import fq_advance

        return self._act(f"advance {ns} ns",
                         lambda: fq_advance(self._dom, self._count(ns, 10**10)))

    @staticmethod
    def _count(n: Any, most: int = 1_000_000) -> int:
        if isinstance(n, bool):
            raise StepperInputError(f"expected a whole number, not {n!r}")
        try:
            k = int(n, 0) if isinstance(n, str) else int(n)
        except (TypeError, ValueError):
            raise StepperInputError(f"expected a whole number, not {n!r}") from None
        if k < 1 or k > most:
            raise StepperInputError(f"{k} is outside 1 .. {most:,}")
        return k

    def _prot(self, prot: Any) -> int:
        value = self.w_prot.value if prot is None else prot
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.upper() in PROTS:
            return int(PROTS[value.upper()])
        raise StepperInputError(f"prot must be one of {', '.join(PROTS)} or an int, not {value!r}")

    def _count_leaves(self, iova: int, size: int) -> int:
        return sum(1 for _ in self._dom.pgtable.leaves(iova, iova + size))

    def _label(self, iova: Any, size: Any = False) -> str:
        """``0x0 +64K`` from the given values or, where None, the input fields."""
        i = self.w_iova.value if iova is None else iova
        i = i if isinstance(i, str) else hex(i) if isinstance(i, int) else repr(i)
        if size is False:
            return i
        n = self.w_size.value if size is None else size
        return f"{i} +{n}"

    # ---- setup -----------------------------------------------------------------------------
    def reset(self, strategy: str | None = None, api: str | None = None,
              type: str | None = None, paused: bool | None = None) -> None:
        """A fresh domain (optionally another strategy / API era / domain type)."""
        strategy = strategy or self.w_strategy.value
        api = api or self.w_api.value
        dtype = type or self.w_type.value
        paused = self.w_paused.value if paused is None else paused
        try:
            old = (self._dom, self.gather)
            self._alloc(strategy, api, dtype, paused)
        except Exception as exc:  # noqa: BLE001
            self._dom, self.gather = old
            self.error = f"reset: {exc}"
            self._note(f"✗ reset — {exc}")
            self._sync_pickers()
            self.refresh()
            return
        self.error = None
        self._sync_pickers()
        self.log.clear()
        self.last = "reset"
        self._note(f"reset: {self._describe()}")
        for note in self._alloc_notes:
            self._note(f"note: {note}")
        self.refresh()

    def _sync_pickers(self) -> None:
        """Show the domain's actual settings in the pickers (without triggering a reset)."""
        self._syncing = True
        try:
            d = self._dom
            self.w_strategy.value, self.w_api.value = d.strategy.name, d.api
            self.w_type.value, self.w_paused.value = d.type, self.queue.paused
        finally:
            self._syncing = False

    def set_paused(self, paused: bool) -> None:
        """Pause the IOMMU (stepper mode) or let it run; un-pausing lets it catch up."""
        def run() -> Any:
            for q in self._dom.hw.queues:
                was = q.paused
                q.paused = bool(paused)
                if was and not paused:
                    q.run_until_idle()
            return "paused" if paused else "running"
        self._syncing = True
        try:
            self.w_paused.value = bool(paused)
        finally:
            self._syncing = False
        return self._act("IOMMU " + ("paused" if paused else "runs on its own"), run)

    # ---- views ---------------------------------------------------------------------------
    def ring_figure(self) -> Any:
        """The command ring now (plotly figure)."""
        return views.ring_figure(self.queue, title=f"{self.strategy}: command queue")

    def iotlb(self) -> Any:
        """The IOTLB now (DataFrame with a ``state`` column; STALE = freed memory)."""
        return views.iotlb_table(self._dom)

    def pgtable(self) -> Any:
        """The mapped leaves now (DataFrame)."""
        return views.pgtable_table(self._dom, limit=64)

    def counters(self, names: Any = "key") -> Any:
        """Counters with the change made by the last action (``delta``)."""
        return views.counters_table(self._dom.stats(), names, before=self._before)

    def timeline(self) -> Any:
        """CPU-vs-IOMMU Gantt chart of everything so far (plotly figure)."""
        return views.timeline_figure(self._dom, max_events=150,
                                     title=f"{self.strategy}: CPU vs IOMMU")

    def status(self) -> str:
        """One line: time, queue registers, pending commands, the last action."""
        st = views.ring_state(self.queue)
        return (f"t = {self._dom.clock.now:,} ns · {views.register_text(self.queue)} · "
                f"{st['pending']} pending · last: {self.last or '-'}")

    def refresh(self) -> None:
        """Recompute every view and put it in its Output (``update_ms`` = wall time taken)."""
        t0 = time.perf_counter()
        # cheap HTML views first, so they reach the browser before the figures are built
        tlb = self.iotlb()
        ctr = self.counters()
        self.w_error.value = (f'<span class="iommu-error-text" style="color:#b91c1c">'
                              f"⚠ {html.escape(self.error)}</span>" if self.error else "")
        self.w_status.value = f"<code>{html.escape(self.status())}</code>"
        show(self.out_counters, html_table(ctr.drop(columns=["group", "meaning"]),
                                           "iommu-counters-table", index=True,
                                           row_style=_changed_style))
        show(self.out_iotlb, html_table(
            tlb, "iommu-iotlb-table", row_style=_tlb_style,
            caption=f"{len(tlb)} of {tlb.attrs['capacity']} entries, "
                    f"{tlb.attrs['stale']} stale"))
        self.w_log.value = ("<pre style='max-height:14em;overflow:auto;margin:0'>"
                            + html.escape("\n".join(reversed(self.log))) + "</pre>")
        ring = self.ring_figure()
        show(self.out_ring, ring)
        pt = views.pgtable_table(self._dom, limit=32)
        strip = views.address_space_figure(self._dom, max_bars=64)
        note = ("first 32 leaves shown, more exist" if pt.attrs["truncated"]
                else f"{len(pt)} leaves")
        show(self.out_pgtable, strip,
             html_table(pt.drop(columns="bytes"), "iommu-pgtable-table", caption=note))
        tl = self.timeline()
        show(self.out_timeline, tl)
        self.views = {"ring": ring, "iotlb": tlb, "pgtable": pt, "strip": strip,
                      "counters": ctr, "timeline": tl}
        self._relabel()
        self.update_ms = (time.perf_counter() - t0) * 1000
        self.w_timing.value = f"<small>views refreshed in {self.update_ms:.0f} ms</small>"

    # ---- widgets -------------------------------------------------------------------------
    def _build_widgets(self, strategy: str, api: str, dtype: str, paused: bool, iova: str,
                       size: str, paddr: str) -> None:
        W = widgets
        lay = W.Layout
        self.w_strategy = W.Dropdown(options=list(il.STRATEGIES), value=strategy,
                                     description="strategy", layout=lay(width="250px"))
        self.w_api = W.Dropdown(options=list(APIS), value=api, description="API era",
                                layout=lay(width="190px"),
                                tooltip="kernel: the API of the strategy's era; rfc-2017: "
                                        "Joerg Roedel's Aug-2017 proposal")
        self.w_type = W.Dropdown(options=list(DOMAIN_TYPES), value=dtype, description="type",
                                 layout=lay(width="190px"))
        self.w_paused = W.Checkbox(value=paused, description="IOMMU paused (step it)",
                                   indent=False)
        self.w_iova = W.Text(value=iova, description="iova", layout=lay(width="190px"))
        self.w_size = W.Text(value=size, description="size", layout=lay(width="160px"))
        self.w_paddr = W.Text(value=paddr, description="paddr", placeholder="iova + 1G",
                              layout=lay(width="210px"))
        self.w_prot = W.Dropdown(options=list(PROTS), value="RW", description="prot",
                                 layout=lay(width="140px"))
        self.w_n = W.BoundedIntText(value=1, min=1, max=4096, description="n",
                                    layout=lay(width="130px"))
        btn = self._button
        self.b_map = btn("map", "iommu-map-btn", lambda: self.map(), "iommu_map")
        self.b_unmap = btn("unmap", "iommu-unmap-btn", lambda: self.unmap(), "iommu_unmap")
        self.b_unmap_fast = btn("unmap_fast", "iommu-unmap-fast-btn", lambda: self.unmap_fast(),
                                "iommu_unmap_fast: no sync")
        self.b_range_add = btn("range_add", "iommu-range-add-btn", lambda: self.range_add(),
                               "iommu_tlb_range_add (2017 / v4.14)")
        self.b_sync = btn("iotlb_sync", "iommu-sync-btn", lambda: self.tlb_sync(),
                          "complete the flush (CMD_SYNC)", style="danger")
        self.b_flush_all = btn("flush_all", "iommu-flush-all-btn", lambda: self.flush_all(),
                               "invalidate the whole domain")
        self.b_map_sync = btn("map_sync", "iommu-map-sync-btn", lambda: self.map_sync(),
                              "2017 wrapper: map + range_add + sync")
        self.b_unmap_sync = btn("unmap_sync", "iommu-unmap-sync-btn", lambda: self.unmap_sync(),
                                "2017 wrapper: unmap + range_add + sync")
        self.b_dma_read = btn("DMA read", "iommu-dma-read-btn", lambda: self.dma_read(),
                              "the device reads iova", style="info")
        self.b_dma_write = btn("DMA write", "iommu-dma-write-btn", lambda: self.dma_write(),
                               "the device writes iova", style="info")
        self.b_consume = btn("IOMMU: consume n", "iommu-consume-btn",
                             lambda: self.consume(self.w_n.value),
                             "let the IOMMU execute n queued commands", style="warning")
        self.b_run_idle = btn("IOMMU: run until idle", "iommu-run-idle-btn",
                              lambda: self.run_until_idle(), "execute everything published",
                              style="warning")
        self.b_reset = btn("reset", "iommu-reset-btn", lambda: self.reset(), "a fresh domain")
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
        self.out_ring = W.Output().add_class("iommu-ring-out")
        self.out_iotlb = W.Output().add_class("iommu-iotlb-out")
        self.out_pgtable = W.Output().add_class("iommu-pgtable-out")
        self.out_counters = W.Output().add_class("iommu-counters-out")
        self.out_timeline = W.Output().add_class("iommu-timeline-out")
        box = W.HBox
        controls = W.VBox([
            box([self.w_strategy, self.w_api, self.w_type, self.w_paused, self.b_reset]),
            box([self.w_iova, self.w_size, self.w_paddr, self.w_prot]),
            box([self.b_map, self.b_unmap, self.b_unmap_fast, self.b_range_add, self.b_sync,
                 self.b_flush_all, self.b_map_sync, self.b_unmap_sync]),
            box([self.b_dma_read, self.b_dma_write, self.w_n, self.b_consume, self.b_run_idle]),
            self.w_error, self.w_status, self.w_timing])
        left = W.VBox([self._titled("Command queue", self.out_ring),
                       self._titled("CPU vs IOMMU", self.out_timeline)],
                      layout=lay(width="58%"))
        right = W.VBox([self._titled("Counters (yellow: changed by the last action)",
                                     self.out_counters),
                        self._titled("IOTLB (red: STALE, i.e. DMA into freed memory)",
                                     self.out_iotlb),
                        self._titled("Page table", self.out_pgtable)],
                       layout=lay(width="42%"))
        self.widget = W.VBox([W.HTML("<h3 style='margin:0'>IOMMU stepper</h3>"), controls,
                              box([left, right]),
                              self._titled("Log (newest first)", self.w_log)])
        self.widget.add_class("iommu-stepper")

    def _button(self, label: str, cls: str, action: Callable[[], Any], tip: str,
                style: str = "") -> widgets.Button:
        b = widgets.Button(description=label, tooltip=tip, button_style=style,
                           layout=widgets.Layout(width="auto"))
        b.add_class(cls)
        b.on_click(lambda _b: action())
        return b

    @staticmethod
    def _titled(title: str, w: widgets.Widget) -> widgets.VBox:
        return widgets.VBox([widgets.HTML(f"<b>{html.escape(title)}</b>"), w])

    def _relabel(self) -> None:
        """Button labels follow the API era's names (2017: tlb_sync / flush_tlb_all)."""
        rfc = self._dom.api == "rfc-2017"
        self.b_sync.description = "tlb_sync" if rfc else "iotlb_sync"
        self.b_flush_all.description = "flush_tlb_all" if rfc else "flush_iotlb_all"

    def _on_picker(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.reset()

    def _on_paused(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.set_paused(bool(change["new"]))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return f"<Stepper {self._describe()}; {len(self.log)} log lines>"


def _tlb_style(row: Any) -> str:
    return {"STALE": "background:#fecaca;font-weight:bold",
            "negative": "background:#e5e7eb"}.get(row.state, "")


def _changed_style(row: Any) -> str:
    return "background:#fef9c3;font-weight:bold" if row.delta else ""

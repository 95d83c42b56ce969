"""The stepper and the comparison dashboard, driven headless through their methods."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

import iommu_lab as il
from iommu_lab import views
from iommu_lab.ui import CompareDashboard, Stepper
from iommu_lab.ui._render import html

STEPPER_CLASSES = {
    "iommu-stepper", "iommu-map-btn", "iommu-unmap-btn", "iommu-unmap-fast-btn",
    "iommu-range-add-btn", "iommu-sync-btn", "iommu-flush-all-btn", "iommu-map-sync-btn",
    "iommu-unmap-sync-btn", "iommu-dma-read-btn", "iommu-dma-write-btn", "iommu-consume-btn",
    "iommu-run-idle-btn", "iommu-reset-btn", "iommu-strategy-picker", "iommu-api-picker",
    "iommu-type-picker", "iommu-paused-toggle", "iommu-iova-input", "iommu-size-input",
    "iommu-paddr-input", "iommu-prot-picker", "iommu-consume-n", "iommu-error", "iommu-status",
    "iommu-log", "iommu-ring-out", "iommu-iotlb-out", "iommu-pgtable-out", "iommu-counters-out",
    "iommu-timeline-out",
}


def classes(w: widgets.Widget) -> set[str]:
    """Every CSS class in a widget tree."""
    out = set(getattr(w, "_dom_classes", ()))
    for child in getattr(w, "children", ()):
        out |= classes(child)
    return out


def state(s: Stepper) -> tuple:
    """Everything an action could change."""
    d = s.domain
    return (d.stats(), list(d.pgtable.leaves()), [e for e in d.hw.iotlb.snapshot()],
            d.clock.now, len(d.trace), d.driver.q.prod, d.driver.q.published,
            [(r.pos, r.count, r.start) for r in d.driver.q.runs], s.gather.start, s.gather.end)


@pytest.fixture
def s():
    return Stepper("smmuv3-v4.15", cmdq_entries=32)


def test_widget_tree_has_every_css_class(s):
    assert isinstance(s.widget, widgets.VBox)
    assert STEPPER_CLASSES <= classes(s.widget)


def test_brief_example(s):
    assert s.map("0x0", "64K") == "16 leaves"
    assert s.unmap("0x0", "64K") == 0x10000
    assert s.consume(1) == 0          # iommu_unmap waited for its CMD_SYNC: nothing pending
    st = s.domain.stats()
    assert (st["inv_cmds"], st["sync_cmds"], st["pages_mapped"]) == (16, 1, 16)
    assert s.error is None


def test_early_issue_stepped_slot_by_slot(s):
    s.map("0x0", "64K")
    assert s.dma_read("0x1000") == "walk"
    assert s.dma_read("0x1000") == "hit"
    assert s.unmap_fast("0x0", "64K") == 0x10000
    q = s.queue
    assert (q.prod, views.ring_state(q)["cons"]) == (16, 0)
    assert s.dma_read("0x1000") == "stale"          # queued is not done
    assert s.consume(2) == 2
    assert s.dma_read("0x1000") == "fault"
    assert views.ring_table(q)["state"].value_counts().to_dict() == {"pending": 14,
                                                                     "consumed": 2}
    s.tlb_sync()
    df = views.ring_table(q)
    assert set(df["state"]) == {"completed"} and df.iloc[-1]["command"] == "CMD_SYNC"
    assert s.domain.stats()["sync_cmds"] == 1 and "CMDQ_PROD=0x11" in s.status()


def test_run_until_idle_and_consume_n(s):
    s.map("0x0", "32K")
    s.unmap_fast()
    assert s.consume("3") == 3
    assert s.run_until_idle() == 5
    assert s.run_until_idle() == 0
    assert views.ring_state(s.queue)["pending"] == 0


def test_unpaused_queue_runs_on_its_own_clock():
    t = Stepper("smmuv3-v4.15", paused=False, costs={"hw_tlbi_ns": 400})
    t.map("0x0", "64K")
    t.unmap_fast()
    assert views.ring_state(t.queue)["pending"] > 2       # the (slow) IOMMU is still working
    assert t.consume(2) == 2                               # time passes until 2 more finish
    assert t.run_until_idle() > 0 and views.ring_state(t.queue)["pending"] == 0
    t.tlb_sync()
    assert views.overlap_ns(t.domain) > 0


def test_set_paused_toggle_lets_the_iommu_catch_up(s):
    s.map("0x0", "16K")
    s.unmap_fast()
    assert views.ring_state(s.queue)["pending"] == 4
    s.set_paused(False)
    assert not s.queue.paused and not s.w_paused.value
    assert views.ring_state(s.queue)["pending"] == 0
    s.w_paused.value = True
    assert s.queue.paused


@pytest.mark.parametrize("action", [
    lambda s: s.map("0x1001", "4K"),              # misaligned iova -> EINVAL
    lambda s: s.map("0x0", "0"),                  # zero size
    lambda s: s.map("0x0", "4K"),                 # overlaps -> EEXIST
    lambda s: s.map(1 << 48, "4K"),               # past the IAS -> ERANGE
    lambda s: s.map("zz", "4K"),                  # not a number
    lambda s: s.map("0x100000", "-4K"),
    lambda s: s.map("0x40000000", "1G", "0x1000"),  # absurd: 262,144 pages
    lambda s: s.map("0x100000", "4K", prot="X"),
    lambda s: s.unmap("0x0", "3K"),
    lambda s: s.unmap_fast("0x0", "1G"),         # frees a table: 262,144 TLBIs
    lambda s: s.unmap_fast("0x0", "0"),
    lambda s: s.consume(0),
    lambda s: s.consume("many"),
    lambda s: s.dma_read("nope"),
    lambda s: s.range_add("0x0", "oops"),
    lambda s: s.map_sync("0x1001", "4K"),
    lambda s: s.unmap_sync("0x3", "4K"),
])
def test_bad_input_sets_error_and_changes_nothing(s, action):
    s.map("0x0", "64K")
    s.dma_read("0x0")
    s.unmap_fast("0x8000", "32K")       # leave commands pending and a gather in flight
    before = state(s)
    log_len = len(s.log)
    assert action(s) is None
    assert s.error
    assert "⚠" in s.w_error.value and "✗" in s.log[-1]
    assert len(s.log) == log_len + 1
    assert state(s) == before
    # the restored domain is consistent: shared objects still shared
    d = s.domain
    assert d.driver.dom is d and d.driver.q.trace is d.trace and d.hw.queues[0] is d.driver.q
    assert s.dma_read("0x0") == "hit" and s.error is None and s.w_error.value == ""


def test_failure_half_way_is_rolled_back():
    t = Stepper("smmuv3-v5.4", type="DMA")
    t.map("0x100000", "8K")
    before = state(t)
    assert t.unmap("0x100000", "16K") is None       # iommu_dma_unmap unmaps 8K, then EINVAL
    assert "was not mapped" in t.error and state(t) == before
    t.domain.fail_map_after = 1
    assert t.map("0x200000", "16K") is None and "ENOMEM" in t.error
    assert state(t)[1] == before[1]


def test_2017_api_buttons_and_semantics(s):
    s.reset(api="rfc-2017")
    assert (s.api, s.w_api.value) == ("rfc-2017", "rfc-2017")
    assert (s.b_sync.description, s.b_flush_all.description) == ("tlb_sync", "flush_tlb_all")
    s.map("0x0", "16K")
    s.dma_read("0x0")
    s.unmap()                                   # 2017: no flush... but v4.15 queued TLBIs
    assert s.domain.stats()["inv_cmds"] == 4 and s.dma_read("0x0") == "stale"
    s.range_add()
    s.tlb_sync()
    assert s.dma_read("0x0") == "fault"
    s.map("0x0", "16K")
    s.unmap()
    s.flush_all()
    st = s.domain.stats()
    assert (st["inv_all_cmds"], st["wasted_inv_cmds"]) == (1, 4)
    s.map_sync("0x0", "16K")
    assert s.domain.stats()["needless_sync_cmds"] == 1
    assert s.unmap_sync() == 0x4000
    s.reset(api="kernel")
    assert s.b_sync.description == "iotlb_sync" and s.domain.stats()["map_calls"] == 0


def test_pickers_and_reset(s):
    s.map("0x0", "64K")
    s.w_strategy.value = "smmuv3-v5.4"   # 32 slots are too few for v5.4: its default is used
    assert s.strategy == "smmuv3-v5.4" and s.domain.stats()["map_calls"] == 0
    assert s.queue.entries == 1024 and s.queue.paused and s.error is None
    assert any("default 1024-slot queue" in line for line in s.log)
    s.w_type.value = "DMA_FQ"
    assert s.domain.type == "DMA_FQ"
    s.reset(strategy="smmuv3-v4.15", type="DMA_FQ")   # no flush queue in v4.15: downgraded
    assert s.domain.type == "DMA" and s.w_type.value == "DMA"
    assert any("downgraded" in line for line in s.log)
    s.reset(strategy="no-such-driver")
    assert "unknown strategy" in s.error and s.strategy == "smmuv3-v4.15"
    s.w_api.value = "rfc-2017"
    s.domain.fail_map_after = 0
    s.reset(type="NOPE")
    assert "unknown domain type" in s.error
    assert (s.w_strategy.value, s.w_api.value, s.w_type.value) == ("smmuv3-v4.15", "rfc-2017",
                                                                  "DMA")


def test_buttons_read_the_input_fields(s):
    s.w_iova.value, s.w_size.value, s.w_paddr.value = "0x200000", "2M", "0x80200000"
    s.b_map.click()
    assert s.error is None and views.pgtable_table(s.domain).iloc[0]["size"] == "2M"
    s.w_iova.value = "0x200000"
    s.b_dma_write.click()
    assert s.last.endswith("walk")
    s.b_unmap_fast.click()
    s.w_n.value = 1
    s.b_consume.click()
    assert views.ring_state(s.queue)["cons"] == 1
    s.b_run_idle.click()
    s.b_sync.click()
    s.b_flush_all.click()
    s.b_range_add.click()
    s.b_map_sync.click()
    s.b_unmap_sync.click()
    s.b_dma_read.click()
    s.b_reset.click()
    assert s.domain.stats()["map_calls"] == 0 and s.error is None


def test_outputs_show_current_state(s):
    s.map("0x0", "16K")
    s.dma_read("0x0")
    s.unmap_fast()
    ring = html(s.out_ring)             # the ring is HTML + SVG: one <g> per slot
    assert "CMDQ_PROD=0x4" in ring and ring.count('class="iommu-slot"') == 32
    assert ring.count('data-state="pending"') == 4 and ">NH_VA</text>" in ring
    assert ring.count('class="iommu-mark-label"') == 2          # PROD and CONS
    assert "iommu-counters-table" in html(s.out_counters)
    assert 'data-key="inv_cmds"' in html(s.out_counters)
    assert "iommu-iotlb-table" in html(s.out_iotlb) and "#fecaca" in html(s.out_iotlb)
    strip = html(s.out_pgtable)
    assert "iommu-strip" in strip and "iommu-pgtable-table" in strip
    assert "0 run(s)" in strip                                  # all unmapped
    tl = s.views["timeline"]                  # the timeline: the figure's JSON, drawn as SVG
    assert tl == views.timeline_figure(s.domain, 150, "smmuv3-v4.15: CPU vs IOMMU").to_dict()
    assert html(s.out_timeline) == views.gantt_html(tl)
    assert ">smmuv3-v4.15: CPU vs IOMMU</div>" in html(s.out_timeline)
    assert html(s.out_timeline).count('class="iommu-bar"') == sum(
        len(t["x"]) for t in tl["data"] if t["type"] == "bar")
    assert "unmap_fast 0x0 +16K" in s.w_log.value and "CMDQ_PROD=0x4" in s.w_status.value
    assert s.update_ms > 0 and set(s.views) == {"ring", "iotlb", "pgtable", "strip",
                                                "counters", "timeline"}


def test_view_helpers(s):
    s.map("0x0", "8K")
    assert len(s.pgtable()) == 2 and s.iotlb().empty
    assert s.counters().loc["map_calls", "delta"] == 1
    assert s.ring_figure().layout.title.text.startswith("smmuv3-v4.15")
    assert s.timeline().data and "Stepper smmuv3-v4.15" in repr(s)


def test_advance_lets_time_pass():
    t = Stepper("smmuv3-v5.4", type="DMA_FQ")
    t.map("0x100000", "4K")
    t.unmap()
    assert t.domain.stats()["fq_queued"] == 1
    now = t.domain.clock.now
    t.advance(20_000_000)
    assert t.domain.clock.now >= now + 20_000_000 and t.domain.stats()["fq_flushes"] >= 1


def test_dashboard_runs_and_rerenders():
    d = CompareDashboard(strategies=["smmuv3-v4.14", "smmuv3-v5.4"], callers=["unmap-each"],
                         guest_mem="16M")
    assert d.df.shape[0] == 2 and d.error is None
    assert {"iommu-compare", "iommu-compare-run-btn", "iommu-compare-chart-out",
            "iommu-compare-table-out", "iommu-compare-metric", "iommu-compare-strategies",
            "iommu-compare-callers", "iommu-compare-guest", "iommu-compare-page",
            "iommu-compare-log", "iommu-compare-error", "iommu-compare-status"} <= classes(d.widget)
    fig = d.figure.to_dict()
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert [t["name"] for t in fig["data"]] == ["unmap-each"]
    chart = html(d.out_chart)                    # the same bars as SVG (no plotly.js needed)
    assert chart == views.compare_html(d.df, "inv_cmds", log=True)
    assert chart.count('class="iommu-cbar"') == 2 and "(log scale)" in chart
    d.set_metric("sync_cmds", log=False)
    fig = d.figure.to_dict()
    assert fig["layout"]["yaxis"]["type"] == "linear" and fig["data"][0]["y"] == [4096, 4096]
    chart = html(d.out_chart)
    assert chart.count(">4,096</text>") == 2 and "(log scale)" not in chart
    assert "iommu-compare-table" in html(d.out_table)
    df = d.run(callers=["unmap-each", "unmap-then-flush-all"], page_size="2M")
    assert len(df) == 4 and d.w_page.value == "2M"
    assert d.run(strategies=[]) is None and "at least one" in d.error
    assert d.df is df and "⚠" in d.w_error.value
    d.run(strategies=["smmuv3-v5.4"])
    assert d.error is None and d.w_error.value == ""


def test_dashboard_bad_settings_show_error():
    d = CompareDashboard(run=False)
    assert d.df is None
    d.w_guest.options = [*d.w_guest.options, "3K"]
    assert d.run(guest_mem="3K") is None and "guest_mem" in d.error


def test_stepper_is_displayable(s):
    assert hasattr(s, "_ipython_display_") and s.widget is s.widget


def test_ui_is_the_only_layer_importing_ipywidgets():
    import subprocess
    import sys

    code = ("import sys; sys.modules['ipywidgets'] = None\n"
            "import iommu_lab, iommu_lab.views, iommu_lab.exercises\n"
            "try:\n    import iommu_lab.ui\nexcept ImportError:\n    pass\n"
            "else:\n    raise SystemExit('ui imported without ipywidgets?')\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert il.__name__ == "iommu_lab"


def test_long_sessions_keep_the_newest_trace(monkeypatch):
    from iommu_lab.analysis import stepping

    monkeypatch.setattr(stepping, "TRACE_KEEP", 40)
    t = Stepper("smmuv3-v4.15")
    for _ in range(3):
        t.map("0x0", "64K")
        t.unmap("0x0", "64K")
    assert len(t.domain.trace) <= 40 and t.domain.trace.dropped > 0
    assert t.domain.trace.events[-1].op == "iommu_unmap"      # the newest are kept


def test_a_click_renders_what_the_views_show_not_the_session_history():
    """Issue 13: a class clicks for an hour, so what one action renders (timeline records,
    ring slots, table rows, log lines) is bounded, and the same after 400 and 1,600
    actions. (Its wall time, flat over 2,800 actions: python -m iommu_lab.ui.bench.)"""
    from iommu_lab.analysis.stepping import LOG_LINES
    from iommu_lab.ui.stepper import TIMELINE_EVENTS

    t = Stepper("smmuv3-v4.15", cmdq_entries=32)
    seen = []
    for rounds in (100, 300):
        for _ in range(rounds):
            t.map("0x0", "64K")
            t.unmap_fast("0x0", "64K")
            t.consume(1)
            t.sync()
        tl = html(t.out_timeline)
        seen.append({"marks": tl.count('class="iommu-bar"') + tl.count('class="iommu-marker"'),
                     "ring slots": html(t.out_ring).count('class="iommu-slot"'),
                     "log lines": len(t.log), "html": sum(len(html(w)) for w in (
                         t.out_timeline, t.out_ring, t.out_counters, t.out_iotlb,
                         t.out_pgtable, t.w_log))})
    assert len(t.domain.trace) > 10 * TIMELINE_EVENTS
    early, late = seen
    # every record drawn is one of the newest TIMELINE_EVENTS (plus the CPU waits among them)
    assert late["marks"] <= 2 * TIMELINE_EVENTS and late["marks"] == early["marks"]
    assert late["ring slots"] == early["ring slots"] == 32
    assert late["log lines"] == early["log lines"] == LOG_LINES
    assert t.log[-1].split()[0] == str(1 + 4 * 400)          # numbered past LOG_LINES
    assert late["html"] < 1.1 * early["html"], seen

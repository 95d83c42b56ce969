"""Views: the data, labels and structure they produce (not pixels)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pandas as pd
import plotly.graph_objects as go
import pytest

import iommu_lab as il
from iommu_lab import views
from iommu_lab.analysis.compare import compare
from iommu_lab.inputs.workloads import kvm_teardown
from iommu_lab.stats import COUNTERS

RW = il.IOMMU_READ | il.IOMMU_WRITE


@pytest.fixture
def dom():
    """64K of 4K pages at 0, one 2M block at 2M."""
    d = il.iommu_domain_alloc("smmuv3-v5.4")
    il.iommu_map(d, 0x0, 0x4000_0000, 0x10000, RW)
    il.iommu_map(d, 0x20_0000, 0x8020_0000, 0x20_0000, il.IOMMU_READ)
    return d


def early(entries: int = 16, api: str = "kernel"):
    """smmuv3-v4.15 with a small paused ring and 64K mapped."""
    d = il.iommu_domain_alloc("smmuv3-v4.15", api=api, cmdq_entries=entries)
    il.iommu_map(d, 0x0, 0x4000_0000, 0x10000, RW)
    d.driver.q.paused = True
    return d


# ---- page table ------------------------------------------------------------------------------
def test_pgtable_table_lists_leaves_with_level_and_perm(dom):
    df = views.pgtable_table(dom)
    assert list(df.columns) == ["iova", "last", "size", "paddr", "level", "perm", "pte", "bytes"]
    assert len(df) == 17 and df.attrs["total"] == 17 and not df.attrs["truncated"]
    assert df.iloc[0].to_dict() | {"pte": None} == {
        "iova": "0x0", "last": "0xfff", "size": "4K", "paddr": "0x40000000", "level": 3,
        "perm": "RW", "pte": None, "bytes": 4096}
    block = df.iloc[-1]
    assert (block["iova"], block["size"], block["level"], block["perm"]) == (
        "0x200000", "2M", 2, "R")
    assert block["paddr"] == "0x80200000"


def test_pgtable_table_limit_and_range(dom):
    df = views.pgtable_table(dom, limit=4)
    assert len(df) == 4 and df.attrs["truncated"]
    assert list(views.pgtable_table(dom, 0x20_0000, 0x40_0000)["iova"]) == ["0x200000"]


def test_pgtable_tree_counts_tables_and_leaves(dom):
    tree = views.pgtable_tree(dom)
    assert list(tree["level"]) == [0, 1, 2, 3]
    lvl2 = tree[tree.level == 2].iloc[0]
    assert (lvl2["used"], lvl2["leaves"], lvl2["tables"], lvl2["entry_span"]) == (2, 1, 1, "2M")
    lvl3 = tree[tree.level == 3].iloc[0]
    assert (lvl3["leaves"], lvl3["entries"], lvl3["covers"]) == (16, 512, "0x0..0x1fffff")


def test_walk_table_block_page_hole_and_out_of_range(dom):
    w = views.walk_table(dom, 0x30_1234)
    assert list(w["kind"]) == ["table", "table", "block"]
    assert w.attrs["phys"] == 0x8030_1234 == il.iommu_iova_to_phys(dom, 0x30_1234)
    assert "0x301234 -> 0x80301234" in w.iloc[-1]["meaning"]
    p = views.walk_table(dom, 0x3123)
    assert list(p["kind"]) == ["table", "table", "table", "page"]
    assert list(p["level"]) == [0, 1, 2, 3]
    assert p.attrs["phys"] == 0x4000_3123
    hole = views.walk_table(dom, 0x1_0000_0000)
    assert hole.iloc[-1]["kind"] == "invalid" and hole.attrs["phys"] == 0
    assert views.walk_table(dom, 1 << 48).attrs["phys"] == 0


def test_split_table_follows_iommu_pgsize_and_matches_the_real_map():
    d = il.iommu_domain_alloc("smmuv3-v5.4")
    df = views.split_table(d, 0x1fc000, 0x801fc000, 0x408000)
    assert list(df["pgsize"]) == ["4K", "2M", "4K"] and list(df["pages"]) == [4, 2, 4]
    assert df.attrs["complete"] and len(views.pgtable_table(d)) == 0  # nothing mapped
    assert views.split_summary(d, 0x1fc000, 0x801fc000, 0x408000) == {"4K": 8, "2M": 2}
    assert views.split_summary(d, 0x1fc000, 0x801fd000, 0x408000) == {"4K": 1032}
    il.iommu_map(d, 0x1fc000, 0x801fc000, 0x408000, RW)
    sizes = views.pgtable_table(d, limit=2000)["size"].value_counts().to_dict()
    assert sizes == {"4K": 8, "2M": 2}
    assert views.split_table(d, 0, 0x1000, 1 << 30, max_calls=3).attrs["complete"] is False


@pytest.mark.parametrize("strategy", ["smmuv3-v4.14", "smmuv3-v5.4", "amd-range", "vtd-psi"])
def test_split_table_covers_the_range_exactly(strategy):
    d = il.iommu_domain_alloc(strategy)
    df = views.split_table(d, 0x1fc000, 0x801fc000, 0x408000)
    assert (df["pages"] * df["bytes_per_page"]).sum() == 0x408000
    assert df["calls"].sum() <= df["pages"].sum()


def test_address_space_figure_merges_runs_and_labels_sizes(dom):
    fig = views.address_space_figure(dom)
    assert isinstance(fig, go.Figure)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [(t.base[0], t.x[0]) for t in bars] == [(0, 0x10000), (0x20_0000, 0x20_0000)]
    assert [t.name for t in bars] == ["4K pages", "2M pages"]
    assert "16×4K" in bars[0].text[0] and "0x40000000" in bars[0].hovertemplate
    assert tuple(fig.layout.xaxis.range) == (0, 0x40_0000)
    empty = views.address_space_figure(il.iommu_domain_alloc("smmuv3-v5.4"))
    assert len(empty.data) == 0 and "0 run(s)" in empty.layout.title.text


# ---- IOTLB -----------------------------------------------------------------------------------
def test_iotlb_table_marks_stale_entries():
    d = il.iommu_domain_alloc("smmuv3-v5.4", api="rfc-2017")
    il.iommu_map(d, 0x0, 0x4000_0000, 0x4000, RW)
    for a in (0x0, 0x1000, 0x2000):
        il.dma_access(d, a)
    il.iommu_unmap(d, 0x0, 0x2000)  # 2017 API: no flush
    df = views.iotlb_table(d)
    assert list(df["iova"]) == ["0x0", "0x1000", "0x2000"]
    assert list(df["state"]) == ["STALE", "STALE", "valid"]
    assert list(df["page_table_now"]) == ["unmapped", "unmapped", "0x40002000"]
    assert df.attrs == {"capacity": 64, "stale": 2}
    assert il.dma_access(d, 0x0) == "stale"
    html = views.iotlb_styler(df).to_html()
    assert 'class="iommu-iotlb-table"' in html and "#fecaca" in html and "2 stale" in html
    fig = views.iotlb_figure(d)
    cells = fig.data[0].cells  # LRU order now: 0x1000, 0x2000, 0x0 (the stale hit refreshed it)
    assert list(cells.values[0]) == ["IOTLB"] * 3                 # no ATS: no device TLB rows
    assert list(cells.values[2]) == ["0x1000", "0x2000", "0x0"]
    assert list(cells.fill.color[0]) == ["#fecaca", "#dcfce7", "#fecaca"]
    il.iommu_tlb_range_add(d, 0x0, 0x2000)
    il.iommu_tlb_sync(d)
    assert list(views.iotlb_table(d)["state"]) == ["valid"]


def test_iotlb_table_remapped_elsewhere_is_stale():
    d = il.iommu_domain_alloc("smmuv3-v5.4", api="rfc-2017")
    il.iommu_map(d, 0x0, 0x4000_0000, 0x1000, RW)
    il.dma_access(d, 0x0)
    il.iommu_unmap(d, 0x0, 0x1000)
    il.iommu_map(d, 0x0, 0x5000_0000, 0x1000, RW)
    row = views.iotlb_table(d).iloc[0]
    assert (row["state"], row["page_table_now"]) == ("STALE", "0x50000000")


# ---- command queue -----------------------------------------------------------------------------
def test_ring_table_states_pointers_and_wrap_bits():
    d = early(16)
    q = d.driver.q
    g = il.IommuIotlbGather()
    il.iommu_unmap_fast(d, 0x0, 0x10000, g)
    df = views.ring_table(q)
    assert len(df) == 16 and set(df["state"]) == {"pending"}
    assert set(df["command"]) == {"CMD_TLBI_NH_VA"} and set(df["opcode"]) == {"0x12"}
    st = df.attrs
    assert (st["prod"], st["cons"], st["pending"]) == (16, 0, 16)
    regs = (st["reg_prod_idx"], st["reg_prod_wrp"], st["reg_cons_idx"], st["reg_cons_wrp"])
    assert regs == (0, 1, 0, 0)
    assert views.register_text(q) == ("CMDQ_PROD=0x10 (idx 0, wrap 1) · "
                                      "CMDQ_CONS=0x0 (idx 0, wrap 0)")
    q.consume(3)
    assert views.ring_table(q)["state"].value_counts().to_dict() == {"pending": 13, "consumed": 3}
    il.iommu_iotlb_sync(d, g)
    df = views.ring_table(q)
    assert len(df) == 16 and list(df["pos"]) == list(range(1, 17))  # window prod-16 .. prod-1
    sync = df.iloc[-1]
    assert (sync["command"], sync["slot"], sync["wrap"], sync["state"]) == (
        "CMD_SYNC", 0, 1, "completed")
    assert set(df["state"]) == {"completed"} and df.attrs["last_completed_sync"] == 16


def test_ring_table_written_state_before_the_doorbell():
    d = early(16)
    il.iommu_unmap_fast(d, 0x0, 0x2000, il.IommuIotlbGather())
    q = copy.deepcopy(d.driver.q)
    q.published -= 1  # as if the last command were written but the doorbell not yet rung
    assert list(views.ring_table(q)["state"]) == ["pending", "written"]
    assert views.ring_state(q)["unpublished"] == 1


def test_ring_figure_grid_labels_and_markers():
    d = early(32)
    il.iommu_unmap_fast(d, 0x0, 0x4000, il.IommuIotlbGather())
    d.driver.q.consume(1)
    fig = views.ring_figure(d.driver.q)
    heat = fig.data[0]
    assert heat.type == "heatmap" and len(heat.z) == 2 and len(heat.z[0]) == 16
    assert list(heat.text[0][:5]) == ["NH_VA"] * 4 + [""]
    assert "pos 0 (wrap 0)" in heat.customdata[0][0] and "consumed" in heat.customdata[0][0]
    assert [a.text for a in fig.layout.annotations] == ["PROD", "CONS"]
    assert "CMDQ_PROD=0x4" in fig.layout.title.text
    assert "3 pending, 1 consumed" in fig.layout.title.text
    assert {t.name for t in fig.data[1:]} == set(views.cmdq.STATES)
    empty = views.ring_figure(il.iommu_domain_alloc("smmuv3-v4.15").driver.q)
    assert [a.text for a in empty.layout.annotations] == ["PROD=CONS"]
    assert "empty" in empty.layout.title.text


# ---- counters --------------------------------------------------------------------------------
def test_counters_table_key_all_nonzero_list_and_delta(dom):
    before = dom.stats()
    il.iommu_unmap(dom, 0x0, 0x10000)
    st = dom.stats()
    key = views.counters_table(st)
    assert list(key.index[:4]) == ["map_calls", "unmap_calls", "pages_mapped", "pages_unmapped"]
    assert key.loc["inv_cmds", "value"] == 16
    assert key.loc["cmd:CMD_SYNC", "group"] == "commands by name"
    assert "meaning" in key.columns and key.loc["stale_hits", "meaning"].startswith("DMA served")
    d = views.counters_table(st, ["inv_cmds", "sync_cmds"], before=before, commands=False)
    assert d.to_dict("index")["inv_cmds"]["delta"] == 16
    assert list(d.index) == ["inv_cmds", "sync_cmds"]
    assert len(views.counters_table(st, "all", commands=False)) == len(COUNTERS)
    nz = views.counters_table(st, "nonzero", commands=False)
    assert (nz["value"] != 0).all()
    with pytest.raises(ValueError, match="names must be"):
        views.counters_table(st, "bogus")
    diff = views.counters_diff(before, st)
    assert diff["inv_cmds"] == 16 and diff["unmap_calls"] == 1 and "map_calls" not in diff
    html = views.counters_styler(d).to_html()
    assert 'class="iommu-counters-table"' in html


# ---- timeline --------------------------------------------------------------------------------
def _run(name: str):
    d = il.iommu_domain_alloc(name)
    il.iommu_map(d, 0x0, 0x4000_0000, 0x10000, RW)
    il.dma_access(d, 0x1000)
    g = il.IommuIotlbGather()
    il.iommu_unmap_fast(d, 0x0, 0x10000, g)
    il.iommu_iotlb_sync(d, g)
    il.dma_access(d, 0x1000)
    return d


def test_timeline_figure_lanes_and_traces():
    d = _run("smmuv3-v4.15")
    fig = views.timeline_figure(d)
    names = [t.name for t in fig.data]
    for expected in ("iommu_map", "iommu_unmap_fast", "iommu_iotlb_sync", "IOMMU: invalidation",
                     "IOMMU: CMD_SYNC / wait", "doorbell", "DMA walk", "DMA fault"):
        assert expected in names
    assert list(fig.layout.yaxis.categoryarray) == ["device", "IOMMU", "CPU"]
    inv = next(t for t in fig.data if t.name == "IOMMU: invalidation")
    assert len(inv.x) == 16 and set(inv.y) == {"IOMMU"} and min(inv.base) > 0
    bells = next(t for t in fig.data if t.name == "doorbell")
    assert len(bells.x) == 17  # one per TLBI (v4.15 issue_cmd) + the CMD_SYNC
    assert "IOMMU busy during CPU unmap" in fig.layout.title.text
    df = d.trace.to_dataframe()
    assert views.timeline_figure(df).layout.title.text == fig.layout.title.text
    zoom = views.timeline_figure(d.trace, t_range=(0, 100), max_events=5)
    assert tuple(zoom.layout.xaxis.range) == (0, 0.1)      # t_range in ns, the axis in µs


def test_overlap_early_issue_versus_gather():
    assert views.overlap_ns(_run("smmuv3-v4.15")) > 0        # Will's overlap
    assert views.overlap_ns(_run("smmuv3-v5.4")) == 0        # gather: nothing before the sync
    assert views.overlap_ns(pd.DataFrame(columns=["t0", "t1", "actor", "op", "iova", "size",
                                                   "detail"])) == 0


# ---- comparison ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cmp_df():
    return compare(kvm_teardown("16M", "4K"), ["smmuv3-v4.14", "smmuv3-v5.4"],
                   ["unmap-each", "unmap-then-flush-all"])


def test_compare_figure_bars_per_caller_and_log_axis(cmp_df):
    fig = views.compare_figure(cmp_df, "inv_all_cmds", log=True)
    assert [t.name for t in fig.data] == ["unmap-each", "unmap-then-flush-all"]
    assert list(fig.data[0].x) == ["smmuv3-v4.14", "smmuv3-v5.4"]
    assert fig.layout.yaxis.type == "log" and "(log scale)" in fig.layout.yaxis.title.text
    assert list(fig.data[0].text) == ["0", "0"] and list(fig.data[0].y) == [0.5, 0.5]
    assert list(fig.data[1].text) == ["0", "1"]  # v4.14 has no flush_iotlb_all op
    lin = views.compare_figure(cmp_df, "sync_cmds")
    assert lin.layout.yaxis.type == "linear" and list(lin.data[0].y) == [4096, 4096]
    assert "kvm-teardown" in lin.layout.title.text
    with pytest.raises(ValueError, match="no column"):
        views.compare_figure(cmp_df, "nope")


def test_compare_table_and_pivot(cmp_df):
    t = views.compare_table(cmp_df)
    assert list(t.columns[:3]) == ["strategy", "caller", "kernel"] and "wasted_inv_cmds" in t
    assert list(views.compare_table(cmp_df, ["end_ns"]).columns) == ["strategy", "caller",
                                                                     "kernel", "end_ns"]
    p = views.compare_pivot(cmp_df, "inv_cmds")
    assert p.loc["smmuv3-v5.4", "unmap-then-flush-all"] == 1
    assert p.loc["smmuv3-v4.14", "unmap-each"] == 4096
    assert list(p.index) == ["smmuv3-v4.14", "smmuv3-v5.4"]


def test_attempt_reports_refusals_without_raising(dom):
    assert views.attempt(il.iommu_map, dom, 0x1001, 0x1000, 0x1000, RW).startswith(
        "refused: [EINVAL]")
    assert views.attempt(il.iommu_map, dom, 0x0, 0x1000, 0x1000, RW).startswith(
        "refused: [EEXIST]")
    assert views.attempt(il.iommu_unmap, dom, 0x0, 0x1000) == "ok: 4096"


# ---- layering --------------------------------------------------------------------------------
def test_views_exercises_versions_import_no_widgets():
    code = ("import sys; sys.modules['ipywidgets'] = None; sys.modules['IPython'] = None\n"
            "import iommu_lab.views, iommu_lab.exercises, iommu_lab.versions\n"
            "iommu_lab.versions.version_table()\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_exercises_do_not_need_plotly():
    code = ("import sys; sys.modules['plotly'] = None; sys.modules['ipywidgets'] = None\n"
            "from iommu_lab.exercises import EXERCISES\n"
            "for m in EXERCISES.values(): m.check(m.make_problem(1), m.solve(m.make_problem(1)))\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- the stepper's HTML views and fast paths (issue 13) ----------------------------------
def test_ring_html_draws_the_ring_grid():
    d = early(32)
    il.iommu_unmap_fast(d, 0x0, 0x4000, il.IommuIotlbGather())
    d.driver.q.consume(1)
    q = d.driver.q
    g = views.ring_grid(q)
    assert g.rows == [0, 1] and g.slot_ids() == list(range(32))
    assert g.text[:5] == ["NH_VA"] * 4 + [""] and g.state[:5] == ["consumed"] + ["pending"] * 3 + ["empty"]
    assert [m[0] for m in g.marks] == ["PROD", "CONS"]
    assert "CMDQ_PROD=0x4" in g.sub and "3 pending, 1 consumed" in g.sub
    cmd = q.slots()[0].cmd
    assert g.hover_text(0) == (f"slot 0 · pos 0 (wrap 0)\n{cmd.describe()}\n"
                               f"opcode {cmd.opcode:#x}\nconsumed")
    page = views.ring_html(q)
    assert page.count('class="iommu-slot"') == 32 and page.count(">NH_VA</text>") == 4
    assert page.count('data-state="pending"') == 3 and 'data-state="consumed"' in page
    assert '<title>slot 0 · pos 0 (wrap 0)' in page
    assert [m for m in ("PROD", "CONS") if f">{m}</text>" in page] == ["PROD", "CONS"]
    # the plotly picture shows the same grid
    fig = views.ring_figure(q)
    assert [list(r) for r in fig.data[0].text] == [g.text[:16], g.text[16:]]
    assert fig.layout.title.text == f"{g.head}<br><sup>{g.sub}</sup>"


def test_ring_grid_of_a_big_ring_draws_the_busy_rows_only():
    d = il.iommu_domain_alloc("smmuv3-v5.4")          # 1024 slots, 32 per row
    il.iommu_map(d, 0x0, 0x4000_0000, 0x10000, RW)
    il.iommu_unmap(d, 0x0, 0x10000)
    g = views.ring_grid(d.driver.q)
    assert g.cols == 32 and g.rows == [0] and "992 idle slots not drawn" in g.sub
    assert views.ring_html(d.driver.q).count('class="iommu-slot"') == 32


def test_address_space_html_matches_the_figure(dom):
    page = views.address_space_html(dom)
    fig = views.address_space_figure(dom)
    assert page.count('class="iommu-run"') == len(fig.data) == 2
    assert "<title>0x0..0xffff\n16 × 4K\n-&gt; 0x40000000</title>" in page
    assert ">16×4K</text>" not in page                # 64K of 4M: no room for a label
    assert ">16×4K</text>" in views.address_space_html(dom, 0, 0x10000)
    assert "4K pages" in page and "2M pages" in page and "2 run(s)" in page
    empty = views.address_space_html(il.iommu_domain_alloc("smmuv3-v5.4"))
    assert "0 run(s)" in empty and 'class="iommu-run"' not in empty


def test_rows_functions_match_the_tables(dom):
    il.dma_access(dom, 0x1000)
    il.iommu_unmap(dom, 0x0, 0x1000)
    assert views.iotlb_rows(dom) == [
        {k: (None if pd.isna(v) else v) for k, v in r.items()}
        for r in views.iotlb_table(dom).astype(object).to_dict("records")]
    rows, total = views.pgtable_rows(dom, limit=3)
    df = views.pgtable_table(dom, limit=3)
    assert rows == df.to_dict("records") and total == df.attrs["total"] == 4
    st = dom.stats()
    ctr = views.counters_table(st, before={})
    assert views.counters_rows(st, before={}) == ctr.reset_index().to_dict("records")


def test_timeline_spec_is_the_figure_and_reads_only_the_end_of_the_trace():
    d = _run("smmuv3-v4.15")
    for n in (5, 40, 3000):
        spec = views.timeline_spec(d, max_events=n, title="t")
        fig = views.timeline_figure(d, max_events=n, title="t").to_dict()
        assert spec["data"] == fig["data"] and spec["layout"] == fig["layout"]
    recs = views.timeline.trace_records(d, 7)
    assert recs == d.trace.events[-7:]
    df_recs = views.timeline.trace_records(d.trace.to_dataframe(), 7)
    assert [tuple(r) for r in df_recs] == [tuple(r) for r in recs]
    assert len(views.timeline.trace_frame(d, 7)) == 7 and views.timeline.trace_records(d, 0) == []


# ---- the timeline as SVG (the stepper's, issue 13) ---------------------------------------------
def test_gantt_html_draws_every_bar_and_marker_of_the_timeline_spec():
    d = _run("smmuv3-v4.15")
    spec = views.timeline_spec(d, max_events=200, title="t")
    out = views.gantt_html(spec)
    bars = [t for t in spec["data"] if t["type"] == "bar"]
    marks = [t for t in spec["data"] if t["type"] == "scatter"]
    assert bars and marks, "the run should draw CPU / IOMMU spans and doorbells"
    assert out.count('<rect class="iommu-bar"') == sum(len(t["x"]) for t in bars)
    assert out.count('<g class="iommu-marker"') == sum(len(t["x"]) for t in marks)
    assert "iommu-gantt-note" not in out                     # nothing left undrawn
    head, sub = views.gantt.title_parts(spec["layout"])
    assert head == "t" and sub.startswith("end ")
    assert f">{head}</div>" in out and sub in out
    lanes = views.gantt.lanes_of(spec)                        # top to bottom, like plotly
    assert lanes == list(reversed(spec["layout"]["yaxis"]["categoryarray"]))
    # every legend name once; hover text is the hovertemplate filled from customdata
    legend = {t["name"] for t in spec["data"]}
    assert out.count('class="iommu-gantt-key"') == len(legend)
    first = bars[0]
    hover = views.gantt.hover_text(first, 0)
    assert hover.splitlines()[0] == first["customdata"][0][0] and "<" not in hover
    assert f"<title>{hover}</title>" in out.replace("&gt;", ">").replace("&#x27;", "'")


def test_gantt_html_axis_hatches_and_traces_it_cannot_draw():
    spec = {"data": [
        {"type": "bar", "orientation": "h", "y": ["CPU", "IOMMU"], "x": [2.0, 1.0],
         "base": [0.0, 1.0], "name": "call", "marker": {"color": "#123456"}},
        {"type": "bar", "orientation": "h", "y": ["CPU"], "x": [1.0], "base": [0.5],
         "name": "wait", "marker": {"color": "#eeeeee",
                                    "pattern": {"shape": "/", "fgcolor": "#000000"}}},
        {"type": "heatmap", "z": [[1]], "name": "heat"}],
        "layout": {"title": {"text": "A &amp; B"}, "xaxis": {"range": [0, 10]},
                   "yaxis": {"categoryarray": ["IOMMU", "CPU"]}}}
    out = views.gantt_html(spec)
    assert views.gantt.title_parts(spec["layout"]) == ("A & B", "")
    assert views.gantt.x_range(spec) == (0.0, 10.0)
    assert views.gantt.ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert 'fill="url(#iommu-hatch-1)"' in out and 'id="iommu-hatch-1"' in out
    assert "not drawn here" in out and "heat" in out       # named, never silently dropped
    # x = 0 is the plot's left edge, x = 10 its right edge: a bar of 2 of 10 µs is 1/5 wide
    left, right = views.gantt.LEFT, views.gantt.WIDTH - views.gantt.RIGHT
    assert f'x="{left:.1f}"' in out and f'width="{(right - left) / 5:.1f}"' in out


def test_compare_html_draws_the_figures_bars(cmp_df):
    """The dashboard's SVG bars: one per (strategy, caller) with the figure's value, zeros
    at the floor of a log axis, a linear axis from 0 over the largest value."""
    import re

    fig = views.compare_figure(cmp_df, "inv_all_cmds", log=True)
    out = views.compare_html(cmp_df, "inv_all_cmds", log=True)
    bars = re.findall(r'data-strategy="([^"]+)" data-caller="([^"]+)" x="[\d.]+" '
                      r'y="([\d.]+)" width="[\d.]+" height="([\d.]+)"', out)
    assert [(s, c) for s, c, _, _ in bars] == [
        (s, c) for s in fig.data[0].x for c in ("unmap-each", "unmap-then-flush-all")]
    want = {(s, t.name): v for t in fig.data for s, v in zip(t.x, t.customdata)}
    for s, c, _, _ in bars:
        assert f"{s} · {c}\ninv_all_cmds = {want[(s, c)]}</title>" in out
    heights = {(s, c): float(h) for s, c, _, h in bars}
    zeros = [k for k, v in want.items() if v == "0"]
    assert zeros and all(heights[k] == min(heights.values()) for k in zeros)
    lin = views.compare_html(cmp_df, "inv_cmds")
    assert "(log scale)" not in lin and ">0</text>" in lin
    assert lin.count('class="iommu-compare-key"') == 2

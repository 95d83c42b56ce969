"""Lessons 07 and 08: the workloads they add (``late_writes``, ``multiqueue_dma``), the rows of
``iommu_lab.analysis.lessons_07_08`` and the views that draw them (``views.lazy``,
``views.shootout``).

Expected values come from the kernel's flush queue (include/linux/iova.h @v5.10:47,50:
``IOVA_FQ_SIZE`` 256, ``IOVA_FQ_TIMEOUT`` 10 ms; drivers/iommu/iova.c @v5.4:465 ``fq_full``
→ 255 entries; ``queue_iova`` flushes a full ring before enqueuing), from
``__iommu_dma_unmap`` (dma-iommu.c @v5.10:474-478: a sync per strict unmap, none when
queued), and from hardware-invalidation.md §9 (commands per strategy for N contiguous pages)
and §7 #1 (Gupta 2025: 570 K / 1.93 M / 5.01 M IOPS).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

import iommu_lab as il
from iommu_lab import views
from iommu_lab.analysis import lessons_07_08 as lz
from iommu_lab.inputs import workloads as W

FQ_CAPACITY = 255          # IOVA_FQ_SIZE - 1 (fq_full)
TIMEOUT_NS = 10_000_000    # IOVA_FQ_TIMEOUT


@pytest.fixture(scope="module")
def busy():
    """One CPU, an unmap every 20 µs for 12 ms, a rogue device writing the victim."""
    return lz.run(W.late_writes(600, 20_000, probes=16), "smmuv3-v5.4", "dma-lazy")


# ---- workloads ------------------------------------------------------------------------------

def test_late_writes_shape():
    w = W.late_writes(unmaps=10, gap_ns=1000, probes=3, probe_every_ns=4000, cpus=2)
    kinds = [op.kind for op in w.ops[:3]]
    assert kinds == ["dma_map", "access", "dma_unmap"] and w.ops[0].iova == W.VICTIM_IOVA
    assert sum(op.kind == "dma_unmap" for op in w) == 11 and len(w) == 3 + 20 + 3
    probes = [op for op in w if op.kind == "access" and op.at_ns]
    assert [op.at_ns for op in probes] == [2000, 6000, 10000]
    assert {op.cpu for op in w if op.kind == "dma_map" and not op.iova} == {0, 1}
    times = [op.at_ns for op in w if op.at_ns is not None]
    assert times == sorted(times)


def test_late_writes_jitter_is_seeded():
    a, b, c = (W.late_writes(20, 1000, jitter=0.5, seed=s) for s in (1, 1, 2))
    assert a.ops == b.ops and a.ops != c.ops
    assert W.late_writes(20, 1000, seed=1).ops == W.late_writes(20, 1000, seed=2).ops
    assert "seed=1" in a.describe()


@pytest.mark.parametrize("kwargs,needle", [
    (dict(gap_ns=0), "gap_ns"), (dict(jitter=1.0), "jitter"), (dict(unmaps=0), "unmaps"),
    (dict(cpus=0), "cpus"), (dict(probes=-1), "probes")])
def test_late_writes_bad_input(kwargs, needle):
    with pytest.raises(il.IommuError, match=needle) as exc:
        W.late_writes(**kwargs)
    assert exc.value.errno == il.EINVAL


def test_multiqueue_dma_deals_buffers_to_cpus():
    w = W.multiqueue_dma(cpus=4, buffers=8, seed=3)
    assert len(w) == 24 and w.params["cpus"] == 4
    for i in range(8):
        m, a, u = w.ops[3 * i: 3 * i + 3]
        assert (m.kind, a.kind, u.kind) == ("dma_map", "access", "dma_unmap")
        assert m.cpu == a.cpu == u.cpu == i % 4 and m.paddr == u.paddr == a.paddr
    assert W.multiqueue_dma(seed=1).ops != W.multiqueue_dma(seed=2).ops
    with pytest.raises(il.IommuError, match="1M per buffer"):
        W.multiqueue_dma(buffer_sizes=["2M"])


# ---- lesson 07: the stale window -------------------------------------------------------------

def test_victim_window_ends_with_the_ring_full_flush(busy):
    rows = lz.stale_windows(busy.dom)
    assert len(rows) == 601                                   # the victim + 600
    victim = rows[0]
    assert victim["iova"] == W.VICTIM_IOVA and victim["flush"] == 1
    # the 256th queue_iova finds 255 queued: 255 gaps of 20 µs after the victim's unmap
    assert FQ_CAPACITY * 20_000 <= victim["window_ns"] <= FQ_CAPACITY * 20_000 + 2_000
    # after the timer's flush (#2, 10 ms) the ring never fills again: the last 100 wait for
    # the timer their first enqueue re-armed (flush #3)
    stragglers = [r for r in rows if r["flush"] == 3]
    assert len(stragglers) == 100
    assert TIMEOUT_NS <= max(r["window_ns"] for r in stragglers) <= TIMEOUT_NS + 2_000


def test_strict_windows_are_zero():
    s = lz.run(W.late_writes(20, 20_000, probes=2), "smmuv3-v5.4", "dma-strict")
    rows = lz.stale_windows(s.dom)
    assert len(rows) == 21 and all(r["window_ns"] == 0 and r["flush"] == 0 for r in rows)


def test_stale_windows_need_one_cpu_and_a_full_trace():
    s = lz.run(W.late_writes(20, 20_000, probes=2, cpus=2), "smmuv3-v5.4", "dma-lazy")
    with pytest.raises(ValueError, match="one CPU"):
        lz.stale_windows(s.dom)
    t = lz.run(W.late_writes(200, 20_000, probes=2), "smmuv3-v5.4", "dma-lazy",
               {"trace_limit": 50})
    with pytest.raises(ValueError, match="dropped"):
        lz.unflushed_series(t.dom)


def test_unflushed_series_never_exceeds_the_ring(busy):
    rows = lz.unflushed_series(busy.dom)
    # 255 queued, plus the IOVA whose queue_iova finds the ring full and flushes first
    assert max(r["unflushed"] for r in rows) == FQ_CAPACITY + 1
    assert [r["t_ns"] // 1_000_000 for r in rows if r["event"] == "flush-all"] == [5, 10, 20]


def test_late_writes_fault_strict_and_hit_stale_lazy():
    df = il.compare(W.late_writes(600, 20_000, probes=16), ["smmuv3-v5.4", "vtd-psi"],
                    ["dma-strict", "dma-lazy"])
    for r in df.itertuples():
        if r.domain_type == "DMA":
            assert (r.stale_hits, r.faults, r.max_stale_ns) == (0, 16, 0)
        else:   # probes at 0.5, 1.5, … ms: five before the 5.1 ms flush
            assert (r.stale_hits, r.faults) == (5, 11) and 4_500_000 <= r.max_stale_ns < 4_600_000


def test_per_cpu_rings_lengthen_the_window():
    """CPU 0 sees every 4th unmap: its ring fills after 255 × 4 × 5 µs = 5.1 ms."""
    df = il.compare(W.late_writes(1100, 5_000, probes=48, probe_every_ns=250_000, cpus=4),
                    ["smmuv3-v5.4"], ["dma-lazy"])
    assert df["cpus"].iloc[0] == 4 and df["stale_hits"].iloc[0] == 20   # 0.125 + 0.25 k < 5.1


def test_window_vs_gap_crosses_over_at_39_2_us():
    rows = lz.window_vs_gap([10_000, 39_000, 40_000, 100_000], unmaps=300)
    assert [r["ended_by"] for r in rows] == ["ring full", "ring full", "10 ms timer",
                                            "10 ms timer"]
    assert rows[0]["window_ns"] - FQ_CAPACITY * 10_000 < 2_000
    assert all(TIMEOUT_NS <= r["window_ns"] < TIMEOUT_NS + 2_000 for r in rows[2:])


def test_reuse_hazard_rows():
    strict, lazy, hypo = lz.reuse_hazard()
    assert strict["B's IOVA"] == strict["A's IOVA"] and strict["lands in"] == strict["B's page"]
    assert lazy["B's IOVA"] != lazy["A's IOVA"] and lazy["lands in"] == lazy["B's page"]
    assert hypo["B's IOVA"] == hypo["A's IOVA"] and hypo["device writes B"] == "stale"
    assert hypo["lands in"] == hypo["A's page"]


def test_device_accesses_are_timed_from_the_unmap(busy):
    rows = lz.device_accesses(busy.dom)
    assert rows[0]["after_unmap_ns"] is None and rows[0]["result"] == "walk"
    late = rows[1:]
    assert len(late) == 16 and [r["result"] for r in late[:6]] == ["stale"] * 5 + ["fault"]


def test_device_accesses_on_several_cpus_agree_with_the_counters():
    """On several CPUs the trace's actors are "CPU 0", "CPU 1", …: the victim's unmap (CPU 0)
    is still found, and every late write is counted once, as the domain's counters say."""
    s = lz.run(W.late_writes(40, 20_000, probes=6, probe_every_ns=200_000, cpus=2),
               "smmuv3-v5.4", "dma-lazy")
    rows = lz.device_accesses(s.dom)
    late = [r for r in rows if r["after_unmap_ns"] is not None]
    assert rows[0]["after_unmap_ns"] is None and len(late) == 6
    st = s.dom.stats()
    assert sum(r["result"] == "stale" for r in late) == st["stale_hits"] > 0
    assert sum(r["result"] == "fault" for r in late) == st["faults"]


def test_phase_costs_and_strict_vs_lazy():
    rows = lz.strict_vs_lazy(W.nic_streaming(ring_size=16, packets=64), ["smmuv3-v5.4"])
    strict, lazy = rows
    assert strict["sync_cmds"] == strict["unmap_calls"] == 64 and strict["fq_flushes"] == 0
    assert lazy["fq_flushes"] == 1 and lazy["domain_type"] == "DMA_FQ"
    assert strict["map_ns_per_call"] == lazy["map_ns_per_call"]     # mapping is the same
    assert lazy["unmap_ns_per_call"] < strict["unmap_ns_per_call"] / 2
    for r in rows:
        assert r["per_io_ns"] == pytest.approx(r["map_ns_per_call"] + r["unmap_ns_per_call"])
    with pytest.raises(ValueError, match="one CPU"):
        lz.phase_costs(W.nic_streaming(packets=4), "smmuv3-v5.4", "dma-strict", {"cpus": 2})


def test_measured_per_io_is_the_reference_arithmetic():
    rows = {r["mode"]: r for r in lz.measured_per_io()}
    assert rows["strict"]["ns_per_io"] == pytest.approx(1754.4, abs=0.1)
    assert rows["strict"]["iommu_ns_per_io"] == pytest.approx(1554.8, abs=0.1)
    assert rows["lazy"]["iommu_ns_per_io"] == pytest.approx(318.5, abs=0.1)   # §0.2: ≈ 0.32 µs
    assert rows["strict"]["iommu_ns_per_io"] - rows["lazy"]["iommu_ns_per_io"] == \
        pytest.approx(1236.3, abs=0.1)                                          # §7 #2: ≈ 1.24 µs


# ---- lesson 08: the shoot-out ------------------------------------------------------------------

def test_unmap_vs_size_counts_follow_the_reference():
    """hardware-invalidation.md §9, N contiguous 4K pages, one strict unmap."""
    rows = {(r["strategy"], r["pages"]): r for r in lz.unmap_vs_size(
        ["smmuv3-v4.14", "smmuv3-v5.4", "vtd-psi", "amd-range", "virtio-iommu"], (1, 16, 128))}
    for n in (1, 16, 128):
        assert rows[("smmuv3-v4.14", n)]["commands"] == 2 * n            # N TLBI + N SYNC
        assert rows[("smmuv3-v4.14", n)]["doorbells"] == 2 * n
        assert rows[("smmuv3-v5.4", n)]["commands"] == n + 1             # N TLBI + 1 SYNC
        assert rows[("smmuv3-v5.4", n)]["doorbells"] == -(-n // 64)
        assert rows[("vtd-psi", n)]["commands"] == 2                     # PSI + wait
        assert rows[("amd-range", n)]["commands"] == 2                   # INV + CW
        assert rows[("virtio-iommu", n)]["commands"] == 1                # one UNMAP
        assert rows[("smmuv3-v5.4", n)]["unmap_ns"] > 0


def test_shootout_rows_and_the_caller_setting_the_count():
    df = lz.shootout({"t": W.kvm_teardown("1M")}, ["smmuv3-v4.14", "smmuv3-v5.4", "smmuv3-ril"],
                     {"t": ["unmap-each", "unmap-fast-batch"]})
    assert list(df.columns[:3]) == ["workload", "strategy", "caller"]
    each = df[df["caller"] == "unmap-each"]
    assert set(each["commands"]) == {512}              # 256 pages: a TLBI and a sync each
    batch = df[df["caller"] == "unmap-fast-batch"].set_index("strategy")["commands"]
    assert batch["smmuv3-v4.14"] == 512 and batch["smmuv3-v5.4"] == 257 and batch["smmuv3-ril"] == 2
    assert (df["cpu_per_unmap_ns"] > 0).all()


def test_run_timed_stops_before_the_last_timer():
    w = W.multiqueue_dma(cpus=2, buffers=16)
    s, api_end = lz.run_timed(w, "smmuv3-v5.4", "dma-lazy")
    assert api_end < 1_000_000 and s.dom.clock.now >= TIMEOUT_NS       # finish() waited
    s2, end2 = lz.run_timed(w, "smmuv3-v5.4", "dma-strict")
    assert end2 == max([s2.dom.clock.now] + [q.hw_free for q in s2.dom.hw.queues])
    assert s2.dom.cpus.n == 2                           # from the ops' cpu (compare's rule)


def test_dma_scaling_shapes():
    rows = lz.dma_scaling(["smmuv3-v5.4", "amd-range"], cpus=(1, 4), buffers=64)
    by = {(r["strategy"], r["caller"], r["cpus"]): r for r in rows}
    lazy1, lazy4 = by[("smmuv3-v5.4", "dma-lazy", 1)], by[("smmuv3-v5.4", "dma-lazy", 4)]
    assert lazy4["unmaps_per_s"] > 2.5 * lazy1["unmaps_per_s"]          # per-CPU rings
    assert lazy4["lock_wait_ns"] == 0 and lazy4["sync_cmds"] == 1
    amd1, amd4 = by[("amd-range", "dma-strict", 1)], by[("amd-range", "dma-strict", 4)]
    assert amd4["unmaps_per_s"] < 1.3 * amd1["unmaps_per_s"] and amd4["lock_wait_ns"] > 0
    assert all(r["sync_cmds"] == 64 for r in rows if r["caller"] == "dma-strict")


def _toy() -> pd.DataFrame:
    return pd.DataFrame([
        {"k": 1, "strategy": "a", "caller": "c", "n": 5, "t": 10},
        {"k": 1, "strategy": "b", "caller": "c", "n": 3, "t": 20},
        {"k": 2, "strategy": "a", "caller": "c", "n": 5, "t": 30},
        {"k": 2, "strategy": "b", "caller": "c", "n": 3, "t": 20},
        {"k": 3, "strategy": "a", "caller": "c", "n": 5, "t": 40},
        {"k": 3, "strategy": "b", "caller": "c", "n": 5, "t": 40}])


def test_winners_verdicts_crossover_on_a_toy_sweep():
    df = _toy()
    assert lz.winners(df, ["k"], "t") == {(1,): "a", (2,): "b", (3,): "tie: a, b"}
    v = {r["metric"]: r for r in lz.verdicts(df[df["k"] < 3], "k", ["n", "t"])}
    assert v["n"]["verdict"] == "holds" and v["t"]["verdict"] == "flips at k = 2"
    assert lz.crossover(df, "k", "b", "a", "t") == 2 and lz.crossover(df, "k", "a", "b", "n") is None


def test_a_real_sweep_holds_counts_and_flips_time():
    df = il.sweep(W.kvm_teardown("1M"), ["smmuv3-v4.15", "smmuv3-v5.4"], ["unmap-fast-batch"],
                  {"hw_tlbi_ns": [25, 400]}, progress=False)
    v = {r["metric"]: r["verdict"] for r in lz.verdicts(df, "hw_tlbi_ns",
                                                        ["doorbells", "end_ns"])}
    assert v == {"doorbells": "holds", "end_ns": "flips at hw_tlbi_ns = 400"}
    assert lz.crossover(df, "hw_tlbi_ns", "smmuv3-v4.15", "smmuv3-v5.4") == 400


# ---- views: lesson 07 ---------------------------------------------------------------------------

def test_fmt_time():
    assert views.fmt_time(840) == "0.84 µs" and views.fmt_time(5_101_040) == "5.101 ms"
    assert views.fmt_time(None) == "—"


def test_fq_table_and_status():
    dom = il.iommu_domain_alloc("smmuv3-v5.4", type="DMA_FQ")
    iova = il.iommu_dma_map(dom, 0x4000_0000, 4096, il.IOMMU_READ)
    il.iommu_dma_unmap(dom, iova, 4096)
    t = views.fq_table(dom)
    assert list(t["iova"]) == [hex(iova)] and list(t["needs flush #"]) == [1]
    assert "IOVA held" in t["state"].iloc[0]
    text = views.fq_status(dom)
    assert "CPU0: 1/255" in text and "timer fires at 10.000 ms" in text
    strict = il.iommu_domain_alloc("smmuv3-v5.4", type="DMA")
    assert "frees IOVAs at unmap" in views.fq_table(strict).iloc[0, 0]
    assert "no flush queue" in views.fq_status(strict)


def test_times_table_formats_ns_columns():
    df = il.compare(W.late_writes(20, 20_000, probes=2), ["smmuv3-v5.4"], ["dma-lazy"])
    t = views.times_table(df, ["stale_hits", "max_stale_ns"])
    assert list(t.columns) == ["strategy", "caller", "stale_hits", "max_stale"]
    assert t["max_stale"].iloc[0].endswith(("µs", "ms"))
    with pytest.raises(ValueError, match="no column"):
        views.times_table(df, ["nope_ns"])


def test_window_tables_and_figures(busy):
    rows = lz.stale_windows(busy.dom)
    t = views.stale_windows_table(rows, limit=3)
    assert len(t) == 4 and t["stale window"].iloc[-1] == views.fmt_time(
        max(r["window_ns"] for r in rows))
    assert views.stale_window_summary(rows)["unmaps"] == "601"
    fig = views.unflushed_figure(lz.unflushed_series(busy.dom))
    assert isinstance(fig, go.Figure) and max(fig.data[0].y) == FQ_CAPACITY + 1
    assert len(fig.data[1].x) == 3 and fig.layout.shapes[0].y0 == FQ_CAPACITY
    acc = views.late_writes_figure({"lazy": lz.device_accesses(busy.dom)})
    names = {tr.name: tr for tr in acc.data}
    assert set(names) == {"stale", "fault"} and len(names["stale"].x) == 5
    assert max(names["stale"].x) < 5.1 < min(names["fault"].x)           # in ms


def test_window_gap_views():
    rows = lz.window_vs_gap([10_000, 100_000], unmaps=300)
    fig = views.window_gap_figure(rows)
    assert fig.layout.xaxis.type == "log" and len(fig.data) == 3
    assert list(fig.data[2].text) == ["ring full", "10 ms timer"]
    t = views.window_gap_table(rows)
    assert list(t["ended by"]) == ["ring full", "10 ms timer"] and t["stale window"].iloc[1] \
        .endswith("ms")


def test_reuse_and_cost_tables():
    t = views.reuse_table(lz.reuse_hazard())
    assert t["B's data lands in"].tolist()[:2] == ["B's page ✓", "B's page ✓"]
    assert t["B's data lands in"].iloc[2].startswith("A's page ✗")
    c = views.lazy_costs_table(lz.strict_vs_lazy(W.nic_streaming(ring_size=8, packets=16),
                                                 ["vtd-psi"]))
    assert list(c["caller"]) == ["dma-strict", "dma-lazy"] and (c["per I/O (µs)"] > 0).all()
    m = views.lazy_measured_per_io_table()
    assert list(m["IOMMU share per I/O (µs)"]) == [1.555, 0.319, 0.0]
    assert "Gupta" in views.lazy_measured_table()["source"].iloc[0]


# ---- views: lesson 08 ---------------------------------------------------------------------------

def test_shootout_views():
    df = lz.shootout({"t": W.kvm_teardown("1M")}, ["smmuv3-v5.4", "smmuv3-ril"],
                     {"t": ["unmap-fast-batch"]})
    p = views.shootout_pivot(df, "commands")
    assert p.loc[("t", "unmap-fast-batch"), "smmuv3-ril"] == 2
    us = views.shootout_pivot(df, "cpu_per_unmap_ns")
    assert us.columns.name == "CPU per unmap (µs)"
    assert us.iloc[0, 0] == round(df["cpu_per_unmap_ns"].iloc[0] / 1000, 2)
    w = views.winners_table(df)
    assert w["fewest/least commands"].iloc[0] == "smmuv3-ril"
    with pytest.raises(ValueError, match="no column"):
        views.shootout_pivot(df.drop(columns=["workload"]))


def test_size_and_sweep_figures():
    rows = lz.unmap_vs_size(["smmuv3-v5.4", "amd-range"], (1, 8))
    fig = views.size_figure(rows, "commands")
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == "log"
    assert [list(t.y) for t in fig.data] == [[2, 9], [2, 2]]
    tab = views.sizes_table(rows, "unmap_ns")
    assert tab.columns.name == "unmap (µs)" and list(tab.index) == [1, 8]
    df = il.sweep(W.kvm_teardown, ["smmuv3-v5.4"], ["unmap-fast-batch"],
                  {"guest_mem": ["1M", "2M"]}, progress=False)
    sf = views.sweep_figure(df, "guest_mem", "doorbells", log_y=True)
    assert list(sf.layout.xaxis.ticktext) == ["1M", "2M"]
    assert list(sf.data[0].x) == [1 << 20, 2 << 20] and list(sf.data[0].y) == [4, 8]


def test_scaling_and_verdict_views():
    rows = lz.dma_scaling(["smmuv3-v5.4"], ["dma-lazy"], cpus=(1, 2), buffers=16)
    fig = views.scaling_lines(rows)
    assert fig.data[0].name == "smmuv3-v5.4 · dma-lazy" and list(fig.data[0].x) == [1, 2]
    t = views.scaling_rows_table(rows, cpus=(2,))
    assert len(t) == 1 and "done (µs)" in t.columns
    v = views.verdicts_table(lz.verdicts(_toy()[lambda d: d["k"] < 3], "k", ["t"]))
    assert list(v.columns) == ["caller", "metric", "1", "2", "verdict"]
    assert v["verdict"].iloc[0] == "flips at k = 2"

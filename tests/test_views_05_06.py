"""Lessons 05/06: the measurement helpers (``analysis/lessons.py``) and their views
(``views/gather.py``, ``views/hardware.py``).

Expected counts cite where they come from: include/linux/iommu.h @v5.4.59:525-528 (gather
merge rule), arm-smmu-v3.c @v5.4.59 (``arm_smmu_tlb_inv_range``: batches of
``CMDQ_BATCH_ENTRIES`` = 64), arm-smmu-v3.c @v5.10.89 (RIL: NUM/SCALE), intel/iommu.c
@v5.10.89 (``iommu_flush_iotlb_psi``), amd/iommu.c @v5.15 (``build_inv_address``) and the
worked examples of hardware-invalidation.md §1.6, §3.4, §4.2.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab import views
from iommu_lab.analysis import lessons
from iommu_lab.analysis.stepping import StepperModel
from iommu_lab.core.gather import GATHER_V5_10, GATHER_V5_15
from iommu_lab.errors import EINVAL, IommuError
from iommu_lab.inputs.workloads import kvm_teardown

SZ_4K, SZ_2M = 0x1000, 0x20_0000
PAGES = [(0x0, SZ_4K), (0x1000, SZ_4K), (0x5000, SZ_4K), (0x4000, SZ_4K), (0x20_0000, SZ_2M)]


# ---- the gather, era by era ------------------------------------------------------------------

def test_gather_walk_eras_agree_on_decisions_and_differ_in_end():
    rows = lessons.gather_walk(PAGES)
    for era in ("v5.4", "v5.10", "v5.15"):
        assert [r[f"{era} action"] for r in rows] == [
            "start", "merge", "sync, then restart", "merge", "sync, then restart"]
        assert rows[2][f"{era} flushed"] == (0x0, 0x2000)       # the gap at 0x2000-0x4fff
        assert rows[4][f"{era} flushed"] == (0x4000, 0x2000)    # another page size
    assert rows[1]["v5.4 end"] == 0x2000                        # v5.4: exclusive end
    assert rows[1]["v5.10 end"] == rows[1]["v5.15 end"] == 0x1fff  # v5.10+: inclusive
    assert (rows[-1]["AMD v5.15 start"], rows[-1]["AMD v5.15 end"]) == (0x0, 0x3F_FFFF)


def _naive_decisions(pages):
    """Reference: sync first iff something is gathered and the new page has another size or
    neither overlaps nor touches the gathered byte set."""
    out, covered, size = [], set(), 0
    for iova, sz in pages:
        new = set(range(iova, iova + sz, SZ_4K))
        touches = any(p in covered for p in (iova - SZ_4K, iova + sz)) or bool(new & covered)
        if covered and (sz != size or not touches):
            out.append(True)
            covered = set()
        else:
            out.append(False)
        covered |= new
        size = sz
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from([SZ_4K, SZ_2M])),
                min_size=1, max_size=8))
def test_gather_walk_matches_a_naive_model(items):
    pages = [(k * (SZ_2M if sz == SZ_2M else SZ_4K), sz) for k, sz in items]
    rows = lessons.gather_walk(pages)
    want = _naive_decisions(pages)
    for era in ("v5.4", "v5.10", "v5.15"):
        assert [r[f"{era} action"] == "sync, then restart" for r in rows] == want


def test_gather_table_formats_hex_and_era_columns():
    df = views.gather_table(lessons.gather_walk(PAGES))
    assert list(df["unmapped page"]) == ["0x0 (4K)", "0x1000 (4K)", "0x5000 (4K)",
                                         "0x4000 (4K)", "0x200000 (2M)"]
    assert df.loc[2, "v5.4: flushed early"] == "0x0 +8K"
    assert df.loc[1, "v5.4: start, end"] == "0x0, 0x2000"
    assert df.loc[1, "v5.10: start, end"] == "0x0, 0x1fff"
    assert "AMD v5.15: start, end" in df and "AMD v5.15: start, end" not in \
        views.gather_table(lessons.gather_walk(PAGES), amd=False)
    eras = views.gather_table(lessons.gather_walk(PAGES), eras=[GATHER_V5_10, GATHER_V5_15])
    assert not any(c.startswith("v5.4") for c in eras.columns)


def test_gather_text_uses_the_domains_era():
    s = StepperModel("smmuv3-v5.4", cmdq_entries=128)
    assert views.gather_text(s.gather, s.domain).startswith("empty gather (v5.4")
    s.map("0x0", "1M")
    s.unmap_fast("0x0", "8K")
    text = views.gather_text(s.gather, s.domain)
    assert "0x0..0x1fff (8K) at pgsize 4K" in text and "end=0x2000" in text
    r = StepperModel("smmuv3-ril", cmdq_entries=128)
    r.map("0x0", "1M")
    r.unmap_fast("0x0", "8K")
    assert "v5.10 fields: start=0x0, end=0x1fff" in views.gather_text(r.gather, r.domain)


# ---- SMMUv3 v5.4 batches, RIL -----------------------------------------------------------------

@pytest.mark.parametrize("pages,calls", [
    (1, [(2, True)]), (64, [(65, True)]), (65, [(64, False), (2, True)]),
    (100, [(64, False), (37, True)]), (129, [(64, False), (64, False), (2, True)])])
def test_sync_batches_are_64_tlbis_then_the_rest_with_cmd_sync(pages, calls):
    """arm_smmu_tlb_inv_range @v5.4.59: a full batch is issued only when a 65th TLBI is built,
    so 64 pages are one call of 64 TLBIs + CMD_SYNC."""
    rows = lessons.sync_batches("smmuv3-v5.4", pages * SZ_4K)
    assert [(r["commands"], r["ends with CMD_SYNC"]) for r in rows] == calls
    assert all(r["doorbell (owner)"] for r in rows)
    df = views.batches_table(rows)
    assert list(df.index) == list(range(1, len(calls) + 1)) and "slots" in df


def test_sync_batches_of_a_whole_page_table_page_are_a_walk_flush():
    """2M of 4K pages at a 2M-aligned IOVA: on unmap the core picks pgsize from the IOVA
    alone (iommu.c @v5.4.59), so ->unmap gets one 2M chunk; io-pgtable-arm frees the table
    and calls tlb_flush_walk → 512 non-leaf TLBIs, synchronously (8 batches, the last with
    CMD_SYNC); the caller's sync then finds an empty gather and issues a lone CMD_SYNC."""
    rows = lessons.sync_batches("smmuv3-v5.4", SZ_2M, iova=0x4000_0000)
    assert [(r["commands"], r["ends with CMD_SYNC"]) for r in rows] == \
        [(64, False)] * 7 + [(65, True), (1, True)]
    assert "Leaf=0" in rows[0]["first"] and rows[-1]["first"].startswith("CMD_SYNC")
    blocks = lessons.sync_batches("smmuv3-v5.4", 2 * SZ_2M, iova=0x4000_0000, granule=SZ_2M)
    assert [(r["commands"], r["ends with CMD_SYNC"]) for r in blocks] == [(3, True)]
    with pytest.raises(IommuError):
        lessons.sync_batches("smmuv3-v5.4", "12K", granule="8K")


def test_sync_batches_refuses_drivers_without_the_lockfree_queue():
    with pytest.raises(IommuError) as exc:
        lessons.sync_batches("smmuv3-v4.15", "16K")
    assert exc.value.errno == EINVAL and "lock-free" in str(exc.value)
    with pytest.raises(IommuError):
        lessons.sync_batches("vtd-psi", "16K")


def test_ril_35_pages_is_the_reference_worked_example():
    """hardware-invalidation.md §1.6: 35 = 0b100011 → SCALE 0 NUM 2, then SCALE 5 NUM 0."""
    rows = lessons.ril_commands(35 * SZ_4K)
    assert [(r["NUM"], r["SCALE"], r["pages"], r["addr"]) for r in rows] == [
        (2, 0, 3, 0x0), (0, 5, 32, 0x3000)]
    assert {(r["TG"], r["TTL"], r["Leaf"]) for r in rows} == {(1, 3, 1)}
    block = lessons.ril_commands(SZ_2M, granule=SZ_2M)
    assert [(r["NUM"], r["SCALE"], r["TTL"]) for r in block] == [(0, 9, 2)]   # level-2 leaf
    df = views.ril_table(rows)
    assert df.loc[1, "covers"] == "(0+1) × 2^5 = 32 pages (128K)" and df.loc[1, "addr"] == "0x3000"


def _naive_ril_count(n: int) -> int:
    count = 0
    while n:
        low = (n & -n).bit_length() - 1
        n &= ~(((1 << 5) - 1) << low)
        count += 1
    return count


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 1 << 20))
def test_ril_commands_cover_exactly_the_range(pages):
    rows = lessons.ril_commands(pages * SZ_4K)
    at = 0
    for r in rows:
        assert r["addr"] == at and 0 <= r["NUM"] <= 30 and r["bytes"] == r["pages"] * SZ_4K
        at += r["bytes"]
    assert at == pages * SZ_4K and len(rows) == _naive_ril_count(pages)


@pytest.mark.parametrize("size,granule", [(0, SZ_4K), (0x1800, SZ_4K), (SZ_2M, 0x3000),
                                          (0x800, 0x800)])
def test_ril_commands_refuse_bad_sizes(size, granule):
    with pytest.raises(IommuError) as exc:
        lessons.ril_commands(size, granule)
    assert exc.value.errno == EINVAL


# ---- phases and several CPUs ------------------------------------------------------------------

def test_phases_split_map_and_unmap():
    """16 MiB of 4K pages under unmap-fast-batch (VFIO_IOMMU_TLB_SYNC_MAX 512 → 8 syncs):
    v5.4 = 4096 TLBIs in 8 × 8 batches; RIL = one range TLBI per 512-page sync."""
    rows = lessons.phases(kvm_teardown("16M", "4K"), ["smmuv3-v5.4", "smmuv3-ril"],
                          ["unmap-fast-batch"])
    by = {(r["strategy"], r["phase"]): r for r in rows}
    for s in ("smmuv3-v5.4", "smmuv3-ril"):
        m = by[(s, "map")]
        assert m["map_calls"] == 4096 and m["inv_cmds"] == m["sync_cmds"] == m["doorbells"] == 0
        assert by[(s, "unmap")]["unmap_calls"] == 4096 and by[(s, "unmap")]["sync_cmds"] == 8
    assert (by[("smmuv3-v5.4", "unmap")]["inv_cmds"], by[("smmuv3-v5.4", "unmap")]["doorbells"]) \
        == (4096, 64)
    assert (by[("smmuv3-ril", "unmap")]["inv_cmds"], by[("smmuv3-ril", "unmap")]["doorbells"]) \
        == (8, 8)
    assert by[("smmuv3-ril", "unmap")]["duration_ns"] < by[("smmuv3-v5.4", "unmap")]["duration_ns"]
    df = views.phase_table(rows)
    assert list(df["phase"]) == ["map", "unmap", "map", "unmap"]
    assert "duration (µs)" in df and df["duration (µs)"].iloc[1] == pytest.approx(
        by[("smmuv3-v5.4", "unmap")]["duration_ns"] / 1000, abs=0.01)
    assert list(views.phase_table(rows, phase="unmap")["phase"]) == ["unmap", "unmap"]


def test_cpu_scaling_counts_hold_and_locks_differ():
    """A 1 MiB guest (256 pages), one iommu_unmap per page: both eras issue one TLBI and one
    CMD_SYNC per unmap; v4.15 rings a doorbell per command (arm_smmu_cmdq_issue_cmd), v5.4
    at most one per unmap and never waits for a lock (587e6c10a7ce)."""
    rows = lessons.cpu_scaling(["smmuv3-v4.15", "smmuv3-v5.4"], cpus=(1, 2), guest_mem="1M")
    assert len(rows) == 4 and {r["phase"] for r in rows} == {"unmap"}
    for r in rows:
        assert r["unmap_calls"] == 256 and r["inv_cmds"] == 256 and r["sync_cmds"] == 256
    v415 = [r for r in rows if r["strategy"] == "smmuv3-v4.15"]
    v54 = [r for r in rows if r["strategy"] == "smmuv3-v5.4"]
    assert all(r["doorbells"] == 512 and r["gathered"] is None for r in v415)
    assert all(r["doorbells"] <= 256 and r["lock_wait_ns"] == 0 for r in v54)
    assert all(r["doorbells"] + r["gathered"] == 256 for r in v54)
    assert v415[0]["lock_wait_ns"] == 0 and v415[0]["cacheline_ns"] == 0   # one CPU
    assert v415[1]["cacheline_ns"] > 0
    both = lessons.cpu_scaling(["smmuv3-v5.4"], cpus=(1,), guest_mem="1M", phase="both")
    assert [r["phase"] for r in both] == ["map", "unmap"]
    with pytest.raises(IommuError):
        lessons.cpu_scaling(["smmuv3-v5.4"], cpus=(1,), phase="teardown")
    df = views.scaling_table(rows)
    assert list(df.columns[:4]) == ["strategy", "phase", "cpus", "calls/s"]
    assert list(df["gathered by an owner"])[:2] == ["—", "—"]
    fig = views.scaling_figure(rows)
    assert isinstance(fig, go.Figure) and [t.name for t in fig.data] == ["smmuv3-v4.15",
                                                                          "smmuv3-v5.4"]
    assert list(fig.data[0].x) == [1, 2]


def test_costs_and_published_tables():
    df = views.costs_table(["hw_sync_ns", "cacheline_ns"], {"hw_sync_ns": 50})
    assert list(df["parameter"]) == ["hw_sync_ns", "cacheline_ns"]
    assert list(df["default (µs)"]) == [0.5, 0.15] and list(df["this run (µs)"]) == [0.05, 0.15]
    assert df.loc[1, "source"].startswith("assumption")
    pub = views.published_table()
    assert len(pub) == 5 and "839K IOPS" in set(pub["before"])
    assert views.us(1234) == 1.23 and views.us(0) == 0.0


# ---- other hardware ---------------------------------------------------------------------------

def test_unmap_probe_vtd_misaligned_psi_leaves_the_tail_stale():
    """hardware-invalidation.md §3.4: pages 3..4 → mask 1 at page 3 → the hardware
    invalidates pages 2..3 and misses page 4 (fixed in v5.18, 59bf3557cf2f)."""
    p = lessons.unmap_probe("vtd-psi", 0x3000, "8K", type="DMA")
    psi = [c for c in p.commands if c["command"] == "QI_IOTLB_PSI"]
    assert len(psi) == 1 and psi[0]["covers"] == (0x2000, 0x4000)
    assert p.after == ["fault", "stale"]
    df = views.commands_table(p)
    assert df.loc[0, "covers"] == "0x2000..0x3fff (8K)" and df.loc[1, "covers"] == "(completion)"
    assert list(views.after_table(p)["device read"]) == ["fault", "stale"]


def test_unmap_probe_dma_psi_mask_and_dsi():
    """35 pages: mask = ilog2(roundup_pow_of_two(35)) = 6; DSI when 6 > cap_max_amask_val."""
    p = lessons.unmap_probe("vtd-psi", 0x100000, 35 * SZ_4K, type="DMA")
    assert [c["covers"] for c in p.commands if c["kind"] == "inv"] == [(0x100000, 0x140000)]
    d = lessons.unmap_probe("vtd-psi", 0x100000, 35 * SZ_4K, type="DMA", cap_max_amask_val=4)
    assert [c["command"] for c in d.commands] == ["QI_IOTLB_DSI", "QI_IWD"]
    assert views.commands_table(d).loc[0, "covers"] == "whole domain"


def test_unmap_probe_amd_block_and_over_invalidation():
    """hardware-invalidation.md §4.2: 35 pages from 0x100000 → the 256 KiB block
    0x100000-0x13ffff; with all 64 pages cached, 29 valid entries are dropped."""
    p = lessons.unmap_probe("amd-range", 0x100000, "140K", window=(0x100000, "256K"))
    assert [c["covers"] for c in p.commands if c["kind"] == "inv"] == [(0x100000, 0x140000)]
    assert p.counters["over_invalidated"] == 29 and p.after == ["fault"] * 35
    v54 = lessons.unmap_probe("smmuv3-v5.4", 0x100000, "140K", window=(0x100000, "256K"))
    assert v54.counters.get("over_invalidated", 0) == 0 and v54.counters["inv_cmds"] == 35
    df = views.probe_summary([p, v54])
    assert list(df["over_invalidated"]) == [29, 0] and list(df["device reads after"]) == [
        "35× fault", "35× fault"]
    assert df.loc[0, "unmap"] == "0x100000 +140K"


def test_unmap_probe_counts_per_iommu_and_refuses_bad_windows():
    two = lessons.unmap_probe("amd-range", 0x100000, "16K", iommus=2, ats=True)
    assert [t["inv"] for t in two.per_iommu] == [1, 1]
    assert [t["atc_inv"] for t in two.per_iommu] == [1, 1]
    df = views.per_iommu_table([{"strategy": two.strategy, "per_iommu": two.per_iommu}])
    assert list(df["IOMMU"]) == [0, 1] and list(df["waits"]) == [1, 1]
    with pytest.raises(IommuError):
        lessons.unmap_probe("amd-range", 0x100000, "16K", window=(0x200000, "16K"))
    with pytest.raises(IommuError):
        lessons.unmap_probe("vtd-psi", 0x100000, "16K", type="DMA", window=(0x100000, "64K"))


def test_map_probe_needs_a_map_side_flush_only_with_negative_caching():
    plain = lessons.map_probe("smmuv3-v5.4")
    hyp = lessons.map_probe("vtd-psi", cache_non_present=True)      # caches faults, no CM
    cm = lessons.map_probe("vtd-psi", caching_mode=True)
    idle = lessons.map_probe("vtd-psi", caching_mode=True, touch=False)
    assert (plain.before, plain.after) == ("fault", "walk") and not plain.commands
    assert hyp.after == "fault" and hyp.counters["stale_faults"] == 1
    assert cm.after == "walk" and cm.counters["inv_cmds"] == 1
    assert all(c["map side"] for c in cm.commands if c["kind"] == "inv")
    assert idle.before == "(no access)" and idle.counters["needless_inv_cmds"] == 1
    df = views.map_table([plain, hyp, cm, idle])
    assert list(df["device after map"]) == ["walk", "fault", "walk", "walk"]
    assert list(df["needless (nothing cached)"]) == [0, 0, 0, 1]


def test_caches_table_shows_iotlb_and_atc():
    s = StepperModel("smmuv3-v5.4", ats=True, cmdq_entries=128)
    s.map("0x0", "16K")
    s.dma_read("0x0")
    s.unmap_fast("0x0", "16K")
    df = views.caches_table(s.domain)
    assert list(df["cache"]) == ["IOTLB", "ATC"] and set(df["state"]) == {"STALE"}
    assert list(df["page table now"]) == ["unmapped", "unmapped"]
    s.sync()
    assert views.caches_table(s.domain).empty


def test_views_are_exported():
    for name in ("gather_table", "gather_text", "batches_table", "ril_table", "phase_table",
                 "scaling_table", "scaling_figure", "costs_table", "published_table", "us",
                 "commands_table", "probe_summary", "after_table", "caches_table", "map_table",
                 "per_iommu_table"):
        assert name in views.__all__ and callable(getattr(views, name))
    assert isinstance(views.published_table(), pd.DataFrame)
    assert il.iommu_domain_alloc  # the lessons build on the public allocator

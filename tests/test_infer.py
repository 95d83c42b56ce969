"""Notebook 09's package parts: the real trace excerpts, traces of simulated runs, inferring
the caller pattern, the faults lazy flushing would have made stale hits, replay with map and
unmap phases apart, and the trace-upload app (its model, and its widgets headless).

Kernel facts: trace formats kernel-api-history §6.1 (include/trace/events/iommu.h); flush
queue ``IOVA_FQ_SIZE`` 256 / ``IOVA_FQ_TIMEOUT`` 10 ms §5.2 (include/linux/iova.h v4.14..
v5.15, drivers/iommu/dma-iommu.c v5.17+); the v5.4 gather merge rule §4.2
(include/linux/iommu.h v5.4); VFIO type1 batching by v4.20 §3.4 (vfio_iommu_type1.c).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab.analysis.infer import SIGNATURES, infer_callers, trace_features
from iommu_lab.analysis.kernel_trace import kernel_trace_lines
from iommu_lab.analysis.lazy_faults import Intervals, complete_trace, stale_under_lazy
from iommu_lab.analysis.replay import replay
from iommu_lab.analysis.replay_model import MAX_UPLOAD, ReplayModel, decode, examples
from iommu_lab.analysis.replay_phases import replay_phases
from iommu_lab.analysis.session import Session
from iommu_lab.errors import EINVAL, IommuError
from iommu_lab.inputs.trace import iter_trace_ops, read_trace, trace_to_ops
from iommu_lab.inputs.trace.synth import format_line, format_payload
from iommu_lab.inputs.workloads import kvm_teardown, nic_streaming
from iommu_lab.stats import COUNTERS

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data" / "traces"
MTK = TRACES / "real" / "mtk-vcodec-2021.txt"
ATH = TRACES / "real" / "ath12k-amd-vi-2025.txt"
FQ_TIMEOUT_US = 10_000        # IOVA_FQ_TIMEOUT, include/linux/iova.h (v4.14..v5.15)


# ---- the real excerpts ---------------------------------------------------------------------

def test_real_excerpts_parse_strictly_with_the_posted_values():
    """The importer was written from the TP_printk formats without a real log
    (kernel-api-history §6.3); these two posted excerpts parse exactly."""
    mtk = read_trace(MTK)
    assert mtk["event"].astype(str).tolist() == ["unmap"] * 9 + ["io_page_fault"]
    assert mtk.attrs["generations"] == ["v5.17"] and mtk.attrs["skips"] == []
    first, fault = mtk.iloc[0], mtk.iloc[-1]
    assert (int(first["iova"]), int(first["size"]), first["timestamp"]) == \
        (0xEBEDE000, 4096, 714.634398)
    assert (int(fault["iova"]), int(fault["flags"]), fault["device"], fault["driver"]) == \
        (0xEBEDE003, 1, "10205000.iommu", "mtk-iommu")
    assert set(mtk["task"].astype(str)) == {"gst-launch-1.0", "kworker/0:0"}
    ath = read_trace(ATH)
    assert ath["event"].astype(str).tolist() == ["map", "unmap", "io_page_fault"]
    assert ath.attrs["skipped_other"] == 8          # 6 comment lines, dma_alloc, dma_free
    assert ath["task"].astype(str).tolist()[0] == "(udev-worker)"
    assert int(ath.iloc[0]["paddr"]) == 0x10EC80000 and int(ath.iloc[2]["iova"]) == 0xFE980000


@pytest.mark.parametrize("path", [MTK, ATH])
def test_real_excerpts_same_ops_both_paths_and_say_where_from(path):
    assert list(iter_trace_ops(path)) == trace_to_ops(read_trace(path))
    head = path.read_text().splitlines()[0]
    assert head.startswith("# real trace excerpt") and "not made by iommu-lab" in head
    readme = (TRACES / "README.md").read_text()
    msgid = re.search(r"<([^>]+@[^>]+)>", path.read_text()).group(1)
    assert f"https://lore.kernel.org/r/{msgid}" in readme and f"real/{path.name}" in readme


def test_mail_wrapped_lines_are_malformed_not_guessed():
    """As the mail showed them (wrapped after 'IOMMU:'), every event line is refused."""
    wrapped = MTK.read_text().replace(" iova=", "\niova=")
    with pytest.raises(IommuError, match=r"line 7: unmap event has no iova= field"):
        read_trace(wrapped)
    df = read_trace(wrapped, strict=False)
    assert len(df) == 0 and len(df.attrs["skips"]) == 10


# ---- traces of simulated runs -----------------------------------------------------------------

def test_kernel_trace_lines_print_every_call_and_fault():
    work = nic_streaming(ring_size=16, packets=40)
    lines = kernel_trace_lines(work, "smmuv3-v5.4", "dma-strict", task="irq/42-eth0")
    s = Session("smmuv3-v5.4", "dma-strict", compact=False)
    s.run(list(work))
    df = read_trace(lines)
    ev = df["event"].astype(str).value_counts()
    st_ = s.dom.stats()
    assert (ev["map"], ev["unmap"]) == (st_["map_calls"], st_["unmap_calls"]) == (56, 40)
    assert "not captured from a real machine" in lines[0]
    assert trace_to_ops(df)            # replayable


def test_kernel_trace_lines_v3_16_prints_the_post_loop_values():
    lines = kernel_trace_lines(kvm_teardown("8K", "4K"), "smmuv3-v4.14", "unmap-each",
                               generation="v3.16")
    df = read_trace(lines)
    maps = df[df["event"].astype(str) == "map"]
    assert (maps["size"] == 0).all() and int(maps["iova"].iloc[0]) == 0x1000  # 0 + 4K, §6.2
    with pytest.raises(IommuError) as exc:
        kernel_trace_lines([], "smmuv3-v5.4", "dma-strict", generation="v5.16")
    assert exc.value.errno == EINVAL


def test_faults_of_a_simulated_run_are_traced():
    """The device reads an unmapped buffer: strict faults (traced); lazy hits stale (silent)."""
    work = [il.Op("map", 0x10000, 0x1000, 0x8000_0000), il.Op("access", 0x10000),
            il.Op("unmap", 0x10000, 0x1000), il.Op("access", 0x10000)]
    strict = read_trace(kernel_trace_lines(work, "smmuv3-v5.4", "dma-strict"))
    lazy = read_trace(kernel_trace_lines(work, "smmuv3-v5.4", "dma-lazy"))
    assert strict["event"].astype(str).tolist() == ["map", "unmap", "io_page_fault"]
    assert lazy["event"].astype(str).tolist() == ["map", "unmap"]


# ---- inferring the caller ---------------------------------------------------------------------

def simulated(work, caller, generation="v5.17", task="qemu-kvm"):
    return read_trace(kernel_trace_lines(work, "smmuv3-v5.4", caller, generation=generation,
                                         task=task), strict=False)


@pytest.mark.parametrize("work,caller,generation,task", [
    (kvm_teardown("4M", "4K", 0.5, seed=1), "unmap-fast-batch", "v5.17", "qemu-kvm"),
    (kvm_teardown("8M", "2M", 0.5, seed=2), "unmap-each", "v3.16", "qemu-system-x86"),
    (nic_streaming(ring_size=32, packets=200, seed=3), "dma-strict", "v5.17", "irq/42-eth0"),
    (nic_streaming(ring_size=32, packets=200, seed=4), "dma-lazy", "v5.17", "irq/42-eth0"),
    (nic_streaming(ring_size=64, packets=200, seed=5), "dma-strict", "v4.0", "ksoftirqd/3"),
    (nic_streaming(ring_size=64, packets=200, seed=6), "dma-lazy", "v4.0", "ksoftirqd/3"),
])
def test_infer_names_the_caller_of_a_simulated_trace(work, caller, generation, task):
    ranked = infer_callers(simulated(work, caller, generation, task))
    top = ranked.iloc[0]
    assert (top["caller"], top["verdict"]) == (caller, "most likely"), ranked[
        ["caller", "score", "evidence"]].to_string()
    assert list(ranked.columns) == ["rank", "caller", "score", "verdict", "evidence",
                                    "summary", "where"]
    assert ranked["rank"].tolist() == list(range(1, len(SIGNATURES) + 1))


def test_a_v4_0_vfio_trace_cannot_tell_the_two_vfio_callers_apart():
    """v4.0..v5.16 spans VFIO's switch to unmap_unpin_fast (by v4.20, L4.20): both fit."""
    ranked = infer_callers(simulated(kvm_teardown("4M", "4K", 0.5), "unmap-each", "v4.0"))
    top2 = ranked.head(2)
    assert set(top2["caller"]) == {"unmap-each", "unmap-fast-batch"}
    assert set(top2["verdict"]) == {"consistent"}
    assert (ranked.set_index("caller").loc[["dma-strict", "dma-lazy"], "verdict"]
            == "unlikely").all()


def test_never_merged_callers_are_what_ifs_and_never_first():
    for work, caller in ((kvm_teardown("2M", "4K", 0.5), "unmap-then-flush-all"),
                         (kvm_teardown("2M", "4K", 0.5), "rfc-2017-wrappers")):
        ranked = infer_callers(simulated(work, caller, "v4.0"))
        assert ranked.iloc[0]["caller"] in ("unmap-each", "unmap-fast-batch")
        row = ranked.set_index("caller").loc[caller]
        assert row["verdict"] == "what-if: never merged" and "never merged" in row["evidence"]


def test_the_real_mtk_excerpt_is_the_dma_api():
    ranked = infer_callers(read_trace(MTK))
    assert set(ranked.head(2)["caller"]) == {"dma-strict", "dma-lazy"}
    f = ranked.attrs["features"]
    assert (f.aligned.k, f.aligned.n, f.near_limit.k, f.faults_after_unmap.k) == (7, 7, 9, 1)


def test_features_of_a_hand_made_frame():
    """Reuse: freed 0x...f000 handed back 0.2 ms later (taken); a second chance not taken."""
    df = pd.DataFrame({
        "event": ["map", "unmap", "map", "unmap", "map"],
        "timestamp": [1.0, 1.0001, 1.0003, 1.0004, 1.0005],
        "iova": [0xFFFF_F000, 0xFFFF_F000, 0xFFFF_F000, 0xFFFF_F000, 0xFFFF_E000],
        "size": [0x1000] * 5, "cpu": [0] * 5})
    f = trace_features(df)
    assert (f.reuse.k, f.reuse.n) == (1, 2)
    assert (f.ascending.k, f.ascending.n) == (0, 3)
    assert f.longest_unmap_run == 1 and f.min_iova == 0xFFFF_E000
    with pytest.raises(IommuError, match="lacks column"):
        trace_features(pd.DataFrame({"event": ["map"]}))
    empty = infer_callers(read_trace(["# nothing\n"]))
    assert set(empty["evidence"]) <= {"no evidence either way",
                                      "-5 never merged: no real kernel made this trace"}


# ---- completing a trace, and the intervals behind it -------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 31), st.integers(1, 8)), max_size=40))
def test_intervals_match_a_set_of_pages(ops):
    """The bisect-based Intervals against a naive set of 4 KiB pages."""
    iv, pages = Intervals(), set()
    for add, first, n in ops:
        lo, hi = first * 4096, (first + n) * 4096
        want = set(range(first, first + n))
        if add:
            iv.add(lo, hi)
            pages |= want
        else:
            missing = iv.remove(lo, hi)
            got = {p for a, b in missing for p in range(a // 4096, b // 4096)}
            assert got == want - pages
            assert all(a < b for a, b in missing)
            pages -= want
        have = {p for a, b in zip(iv.lo, iv.hi, strict=True) for p in range(a // 4096, b // 4096)}
        assert have == pages
        assert all(b < a2 for b, a2 in zip(iv.hi, iv.lo[1:], strict=False))  # disjoint, apart


def test_complete_trace_maps_what_was_mapped_before_the_capture():
    df = read_trace(MTK)
    done = complete_trace(df)
    added = done[done["synthetic"]]
    unmaps = df[df["event"].astype(str) == "unmap"]
    assert done.attrs["completed"] == 9 and len(done) == len(df) + 9
    assert sorted(zip(added["iova"], added["size"], strict=True)) == \
        sorted(zip(unmaps["iova"], unmaps["size"], strict=True))
    assert (added["line"] == 0).all() and (added["timestamp"] == df["timestamp"].min()).all()
    total = int(unmaps["size"].sum())
    # iommu_unmap of a hole unmaps nothing and is no error (kernel semantics); the DMA API
    # refuses to unmap what it never mapped: either way the replay would undercount
    raw = replay(df, ["smmuv3-v5.4"], ["unmap-each", "dma-strict"])
    assert raw["bytes_unmapped"].tolist() == [0, 0] and raw["op_errors"].tolist() == [0, 9]
    full = replay(done, ["smmuv3-v5.4"], ["unmap-each", "dma-strict"])
    assert full["bytes_unmapped"].tolist() == [total] * 2 and full["op_errors"].tolist() == [0, 0]
    ath = complete_trace(read_trace(ATH))
    assert ath.attrs["completed"] == 0 and not ath["synthetic"].any()


# ---- faults under lazy flushing ------------------------------------------------------------

@pytest.mark.parametrize("path,since_us", [(MTK, 1793.0), (ATH, 6176.0)])
def test_the_real_faults_would_have_been_stale_hits_under_lazy(path, since_us):
    """Both faults came < 10 ms (IOVA_FQ_TIMEOUT) after their unmap: still queued, so a
    lazy domain's IOTLB still translated them."""
    res = stale_under_lazy(read_trace(path))
    assert len(res) == 1
    r = res.iloc[0]
    assert (r["strict"], r["lazy"], bool(r["in_flush_queue"])) == ("fault", "stale", True)
    assert r["since_unmap_us"] == since_us
    # the timer was armed when the IOVA was queued, after the unmap's modelled CPU work
    assert 0 < FQ_TIMEOUT_US - since_us <= r["flush_due_us"] < FQ_TIMEOUT_US - since_us + 500
    assert "cannot show successful DMA" in res.attrs["assumption"]


def unmap_then_faults(unmap_ms, fault_ms, iova=0xFFF0_0000, size=0x4000):
    """Lines: unmaps of ``size`` at ``iova - k*size`` at the given ms; faults on them."""
    out = []
    for k, t in enumerate(unmap_ms):
        payload = format_payload("unmap", iova - k * size, size=size, generation="v5.17")
        out.append((t, format_line("unmap", payload, timestamp=100 + t / 1e3)))
    for k, t in fault_ms:
        payload = format_payload("io_page_fault", iova - k * size + 0x80, flags=1,
                                 driver="nvme", device="0000:01:00.0")
        out.append((t, format_line("io_page_fault", payload, timestamp=100 + t / 1e3)))
    return [line for _, line in sorted(out, key=lambda x: x[0])]


@pytest.mark.parametrize("unmaps,faults,want", [
    ([0.0], [(0, 5.0)], ["stale"]),               # 5 ms < 10 ms: still queued
    ([0.0], [(0, 11.0)], ["fault"]),              # the 10 ms timer flushed first
    ([0.0, 8.0], [(1, 12.0)], ["fault"]),         # timer armed at 0 ms by the first unmap
    ([0.0, 8.0, 12.0], [(2, 13.0), (1, 13.5)], ["stale", "fault"]),
])
def test_the_timer_is_armed_by_the_first_queued_iova(unmaps, faults, want):
    """queue_iova arms the timer only when it is off (fq_timer_on), so the flush comes
    10 ms after the first IOVA queued since the last flush (kernel-api-history §5.2)."""
    res = stale_under_lazy(read_trace(unmap_then_faults(unmaps, faults)))
    assert res["lazy"].tolist() == want and set(res["strict"]) == {"fault"}


def test_a_fault_without_an_unmap_and_a_kernel_without_lazy_mode():
    lines = unmap_then_faults([0.0], [(5, 1.0)])          # nothing unmapped there
    res = stale_under_lazy(read_trace(lines))
    assert res["lazy"].tolist() == ["fault"] and res["unmap_line"].isna().all()
    assert "no unmap of this IOVA" in res["why"].iloc[0]
    old = stale_under_lazy(read_trace(unmap_then_faults([0.0], [(0, 1.0)])), "smmuv3-v4.15")
    assert old["lazy"].tolist() == ["fault"] and "no lazy flush queue" in old.attrs["notes"]


# ---- replay with the map and unmap phases apart ----------------------------------------------

@pytest.mark.parametrize("name", ["nic-v5.17.txt", "real/mtk-vcodec-2021.txt"])
def test_replay_phases_agrees_with_replay(name):
    df = complete_trace(read_trace(TRACES / name))
    strategies = ["smmuv3-v4.14", "smmuv3-v5.4", "amd-range"]
    a, b = replay(df, strategies), replay_phases(df, strategies)
    for col in [*COUNTERS, "end_ns", "op_errors", "strategy", "caller"]:
        assert a[col].tolist() == b[col].tolist(), col
    assert (b["map_cpu_ns"] + b["unmap_cpu_ns"] == b["cpu_ns"]).all()   # no device CPU time
    assert (b["map_cpu_ns"] > 0).all() and (b["unmap_cpu_ns"] > 0).all()
    with pytest.raises(IommuError, match="one CPU"):
        replay_phases(df, params={"cpus": 2})


def test_the_caller_moves_work_between_phases_not_the_map_phase():
    """Same maps under every caller but the 2017 wrappers (which sync on map too)."""
    b = replay_phases(complete_trace(read_trace(TRACES / "nic-v5.17.txt")), ["smmuv3-v5.4"])
    maps = b.set_index("caller")["map_cpu_ns"]
    assert maps["rfc-2017-wrappers"] > maps["unmap-each"] == maps["dma-strict"] \
        == maps["dma-lazy"]


# ---- the app: its model, and its widgets headless --------------------------------------------

def test_model_loads_text_and_gzip_and_reports_skips():
    m = ReplayModel(["smmuv3-v5.4"], ["unmap-each", "dma-lazy"])
    text = MTK.read_bytes() + b"unmap: IOMMU: iova=0xzz size=4096 unmapped_size=4096\n"
    m.load(gzip.compress(text), "mtk.txt.gz")
    assert m.error is None and len(m.results) == 2
    assert m.skips == [(17, "unmap event: iova value '0xzz' is not a hex number")]
    assert m.lazy["lazy"].tolist() == ["stale"] and m.ranked.iloc[0]["caller"] == "dma-strict"
    assert "9 regions unmapped but mapped before the capture" in m.summary


@pytest.mark.parametrize("content,name,why", [
    (b"\x00\x01binary", "trace.dat", "binary, not trace text"),
    (b"hello\n", "notes.txt", "no iommu map/unmap/io_page_fault events"),
    (b"\x1f\x8bnot really", "x.gz", "does not decompress"),
    (b"x" * (MAX_UPLOAD + 1), "big.txt", "the app takes up to"),
])
def test_model_bad_files_leave_the_previous_trace(content, name, why):
    m = ReplayModel(["smmuv3-v5.4"], ["unmap-each"])
    m.load_example("real/ath12k-amd-vi-2025.txt")
    before = (m.name, m.trace, m.results)
    assert m.load(content, name) is None
    assert why in m.error and m.error.startswith("load: [EINVAL]")
    assert (m.name, m.trace, m.results) == before


def test_model_settings_errors_and_limits():
    m = ReplayModel()
    assert m.run() is None and "load a trace first" in m.error
    m.load_example("nic-v5.17.txt")
    results = m.results
    for kwargs, why in (({"strategies": []}, "at least one strategy"),
                        ({"callers": ["nope"]}, "unknown caller"),
                        ({"strategies": list(il.STRATEGIES) * 60}, "too much for the app")):
        assert m.run(**kwargs) is None and why in m.error
        assert m.results is results
    m.set_metric("nope")
    assert "no column 'nope'" in m.error and m.metric == "inv_cmds"
    m.load_example("../../README.md")
    assert "no example" in m.error and m.name == "nic-v5.17.txt"
    assert examples()[:2] == ["real/ath12k-amd-vi-2025.txt", "real/mtk-vcodec-2021.txt"]
    assert decode("a\nb\n") == ["a\n", "b\n"]


def test_model_loads_a_big_trace_but_asks_for_fewer_pairs():
    """Too big to replay every chosen pair (or its faults) in the app: the trace still loads,
    is ranked and drawn, and the notice says what to do; fewer pairs then replay."""
    from iommu_lab.inputs.trace import make_synthetic_trace

    m = ReplayModel()                                     # 16 pairs by default
    m.load("".join(make_synthetic_trace(12_000, seed=2)), "big.txt")   # 10,839 events
    assert m.error is None and m.results is None and m.ranked is not None and m.lazy is None
    assert "pick at most 3 pair(s)" in m.notice                # 40,000 // 10,839
    assert "the last is event 9,464 (the app replays up to 5,000)" in m.notice
    assert m.run(strategies=["smmuv3-v5.4"], callers=["dma-lazy"]) is not None
    assert len(m.results) == 1 and "pick at most" not in m.notice


def test_app_widgets_headless():
    from iommu_lab.ui._render import plotly_json
    from iommu_lab.ui.replay_app import ReplayApp

    app = ReplayApp(["smmuv3-v5.4", "vtd-psi"], ["unmap-each", "dma-lazy"])
    assert app.results is None and app.w_table.value == ""
    upload = {"name": "ath12k.txt", "content": memoryview(ATH.read_bytes()),
              "type": "text/plain", "size": ATH.stat().st_size, "last_modified": 0}
    app._on_upload({"new": (upload,)})
    assert app.error is None and app.w_upload.value == ()
    assert app.w_table.value.count("<tr data-key") == 4       # 2 strategies x 2 callers
    assert "iommu-replay-table" in app.w_table.value and "stale" in app.w_lazy.value
    assert plotly_json(app.out_chart)["layout"]["title"]["text"].startswith("inv_cmds")
    names = [t["name"] for t in plotly_json(app.out_trace)["data"]]
    assert names == ["map", "unmap", "io_page_fault", "stale hit if lazy"]
    app.load(b"junk\n", "junk.txt")
    assert "no iommu map/unmap" in app.w_error.value and app.model.name == "ath12k.txt"
    app.set_metric("sync_cmds", log=False)
    assert app.w_metric.value == "sync_cmds" and app.w_log.value is False

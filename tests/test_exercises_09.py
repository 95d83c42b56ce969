"""Notebook 09's exercises: replay_syncs, lazy_window (numeric) and trace_caller (conceptual).

Exact counts cite kernel-api-history: the v5.4 gather merge rule §4.2 (include/linux/iommu.h
v5.4 ``iommu_iotlb_gather_add_page``), the flush queue §5.2 (``IOVA_FQ_TIMEOUT`` 10 ms,
include/linux/iova.h v4.14..v5.15), VFIO type1 §3.4 (vfio_iommu_type1.c v4.20).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommu_lab.analysis.infer import infer_callers
from iommu_lab.exercises import NOT_ANSWERED, lazy_window, replay_syncs, trace_caller
from iommu_lab.exercises._base import Problem
from iommu_lab.inputs.trace import read_trace
from iommu_lab.inputs.trace.synth import format_line, format_payload

MODULES = (replay_syncs, lazy_window, trace_caller)
seeds = st.one_of(st.integers(-(2**40), 2**40),
                  st.text(min_size=1, max_size=12).filter(lambda s: s.strip()))


def wrong(answer):
    if isinstance(answer, dict):
        k = next(iter(answer))
        return {**answer, k: answer[k] + 1}
    if isinstance(answer, list):
        return ["fault" if answer[0] == "stale" else "stale", *answer[1:]]
    return "a" if answer != "a" else "b"


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.NAME)
def test_contract(mod):
    assert mod.NOTEBOOK == "09" and mod.KIND in ("numeric", "conceptual")
    p = mod.make_problem("s1234567")
    assert p.seed == "s1234567" and p.exercise == mod.NAME
    assert mod.make_problem(" S1234567 ").text == p.text          # one student, one problem
    assert mod.check(p, None) == NOT_ANSWERED
    for junk in ("abc", 3.5, [], {}, object(), ["hit"], {"unmap-each": None}):
        assert mod.check(p, junk).startswith("✗")
    assert mod.check(mod.make_problem(None), mod.solve(p)).startswith("✗ SEED = None")
    text = mod.explain(p)
    assert text.startswith("#### Worked explanation") and "**Answer:**" in text


@settings(max_examples=6, deadline=None, database=None)
@given(seed=seeds)
def test_right_accepted_wrong_rejected_for_any_seed(seed):
    for mod in MODULES:
        p = mod.make_problem(seed)
        answer = mod.solve(p)
        assert mod.check(p, answer).startswith("✓"), (mod.NAME, seed)
        assert mod.check(p, wrong(answer)).startswith("✗"), (mod.NAME, seed)


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.NAME)
def test_problems_vary_with_the_seed(mod):
    texts = {mod.make_problem(s).text for s in range(20)}
    assert len(texts) >= 15


# ---- replay_syncs: exact counts on hand-made excerpts ----------------------------------------

def unmap_lines(regions, gap_ms=1.0):
    out = []
    for k, (iova, size) in enumerate(regions):
        payload = format_payload("unmap", iova, size=size, generation="v5.17")
        out.append(format_line("unmap", payload, timestamp=50 + k * gap_ms / 1e3))
    return out


@pytest.mark.parametrize("regions,gap_ms,want", [
    # ascending, touching, 4 KiB leaves: the v5.4 gather merges everything -> one sync
    ([(0x100000, 0x4000), (0x104000, 0x1000), (0x105000, 0x8000)], 1.0,
     {"unmap-each": 3, "unmap-fast-batch": 1, "dma-lazy": 1}),
    # scattered: every region is disjoint -> an early sync before each new one
    ([(0x100000, 0x2000), (0x140000, 0x2000), (0x180000, 0x2000)], 1.0,
     {"unmap-each": 3, "unmap-fast-batch": 3, "dma-lazy": 1}),
    # descending: a region's first page is not adjacent to the gathered range
    ([(0x108000, 0x2000), (0x106000, 0x2000), (0x105000, 0x1000)], 1.0,
     {"unmap-each": 3, "unmap-fast-batch": 2, "dma-lazy": 1}),
    # 6 ms apart: 0 ms arms the timer (flush at 10), 12 ms arms it again (flush at 22)
    ([(0x100000, 0x1000), (0x101000, 0x1000), (0x102000, 0x1000)], 6.0,
     {"unmap-each": 3, "unmap-fast-batch": 1, "dma-lazy": 2}),
])
def test_replay_syncs_exact_counts(regions, gap_ms, want):
    p = Problem(replay_syncs.NAME, 0, "hand-made", {"lines": unmap_lines(regions, gap_ms)})
    assert replay_syncs.solve(p) == want
    rows, totals = replay_syncs.per_line(p)
    for caller, n in want.items():                     # the explanation adds up
        assert sum(r[caller] for r in rows) == n == totals[caller]["sync_cmds"]


# ---- lazy_window --------------------------------------------------------------------------

def lazy_lines(unmaps_ms, faults):
    out = []
    for k, t in enumerate(unmaps_ms):
        payload = format_payload("unmap", 0xFF00_0000 + k * 0x10000, size=0x1000,
                                 generation="v5.17")
        out.append((t, format_line("unmap", payload, timestamp=10 + t / 1e3)))
    for k, t in faults:
        payload = format_payload("io_page_fault", 0xFF00_0000 + k * 0x10000, flags=1,
                                 driver="nvme", device="0000:01:00.0")
        out.append((t + 1e-6, format_line("io_page_fault", payload, timestamp=10 + t / 1e3)))
    return [line for _, line in sorted(out)]


@pytest.mark.parametrize("unmaps,faults,want", [
    ([0.0], [(0, 9.5)], ["stale"]),                       # before the 10 ms timer
    ([0.0], [(0, 10.5)], ["fault"]),                      # after it
    ([0.0, 9.0], [(1, 10.5)], ["fault"]),                 # timer armed at 0 ms, not 9 ms
    ([0.0, 12.0], [(0, 11.0), (1, 13.0)], ["fault", "stale"]),
])
def test_lazy_window_exact(unmaps, faults, want):
    p = Problem(lazy_window.NAME, 0, "hand-made", {"lines": lazy_lines(unmaps, faults)})
    assert lazy_window.solve(p) == want
    assert lazy_window.check(p, [w.upper() for w in want]).startswith("✓")


def test_lazy_window_explains_with_the_models_flush_times():
    p = Problem(lazy_window.NAME, 0, "hand-made",
                {"lines": lazy_lines([0.0, 12.0], [(0, 11.0), (1, 13.0)])})
    text = lazy_window.explain(p)
    assert "Timer flushes at: 10.0 ms, 22.0 ms." in text


# ---- trace_caller --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(16))
def test_trace_caller_answer_is_the_simulated_caller_and_infer_agrees(seed):
    p = trace_caller.make_problem(seed)
    caller = p.params["caller"]
    right = [c for c in p.params["choices"] if c.correct]
    assert len(right) == 1 and right[0].text == caller
    assert sorted(c.text for c in p.params["choices"]) == sorted(trace_caller.OPTIONS)
    letter = trace_caller.solve(p)
    for spelling in (letter, letter.upper(), f"({letter})", f" {letter}) "):
        assert trace_caller.check(p, spelling).startswith("✓")
    top = infer_callers(read_trace(p.params["lines"], strict=False)).iloc[0]
    assert (top["caller"], top["verdict"]) == (caller, "most likely")

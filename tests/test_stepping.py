"""The stepper model without widgets (analysis/stepping.py) and the comparison model."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommu_lab.analysis.compare import CompareModel
from iommu_lab.analysis.stepping import ACTIONS, MAX_PAGES, SessionSnapshot, StepperModel


def state(m: StepperModel) -> tuple:
    """Everything an action could change."""
    d, q = m.domain, m.queue
    return (d.stats(), list(d.pgtable.leaves()), d.hw.iotlb.snapshot(), d.clock.now,
            len(d.trace), q.state(), [(s.pos, s.cmd, s.state) for s in q.slots()],
            (m.gather.start, m.gather.end, m.gather.pgsize))


def test_docstring_example() -> None:
    m = StepperModel("smmuv3-v4.15")
    assert m.map("0x0", "64K") == "16 leaves"
    assert m.unmap_fast("0x0", "64K") == 0x10000
    assert m.consume(2) == 2 and m.queue.state().cons == 2
    m.sync()
    assert m.domain.stats()["inv_cmds"] == 16 and m.queue.state().pending == 0
    assert m.error is None and m.last == "iommu_iotlb_sync"


def test_actions_notify_observers_and_log() -> None:
    m = StepperModel("smmuv3-v5.4")
    seen: list[str | None] = []

    def cb(model: StepperModel) -> None:
        seen.append(model.error)

    m.on_change(cb)
    m.map("0x0", "8K")
    m.map("0x0", "8K")                 # EEXIST
    assert seen[0] is None and "EEXIST" in seen[1]
    assert "✗ map 0x0 +8K" in m.log[-1]
    m.on_change(cb, remove=True)
    m.dma_read("0x0")
    assert len(seen) == 2
    assert m.before["map_calls"] == 1 and m.domain.stats()["map_calls"] == 1


@pytest.mark.parametrize("call", [
    ("map", "0x1001", "4K"), ("map", "0x0", "4K"), ("map", 1 << 48, "4K"), ("map", "zz", "4K"),
    ("map", "0x40000000", "1G", "0x1000"), ("unmap", "0x0", "3K"), ("unmap_fast", "0x0", "1G"),
    ("consume", 0), ("consume", "many"), ("dma_read", "nope"), ("range_add", "0x0", "oops"),
    ("map_sync", "0x1001", "4K"), ("unmap_sync", "0x3", "4K"), ("advance", -5),
])
def test_bad_input_sets_error_and_changes_nothing(call: tuple) -> None:
    m = StepperModel("smmuv3-v4.15", cmdq_entries=32)
    m.map("0x0", "64K")
    m.dma_read("0x0")
    m.unmap_fast("0x8000", "32K")      # leave commands pending and a gather in flight
    before, n_log = state(m), len(m.log)
    assert getattr(m, call[0])(*call[1:]) is None
    assert m.error and len(m.log) == n_log + 1 and state(m) == before
    d = m.domain
    assert d.driver.dom is d and d.driver.q.trace is d.trace and d.hw.queues[0] is d.driver.q
    assert m.dma_read("0x0") == "hit" and m.error is None


def test_model_queries_change_nothing() -> None:
    m = StepperModel("smmuv3-v5.4")
    m.map("0x0", "4M", "0x1000")       # 4K leaves only (paddr is 4K-aligned)
    before = state(m)
    assert m.map_pages(0x4000_0000, 0x8000_0000, 1 << 30) == 1      # one 1G block
    assert m.map_pages(0x4000_0000, 0x8000_1000, 1 << 30) == 1 << 18
    assert m.unmap_work(0x0, 0x4000) == 4
    assert m.unmap_work(0x0, 0x400000) == 1024    # two 2M chunks free two tables of 512
    assert m.unmap_work(0x800000, 0x1000) == 0    # a hole: nothing happens
    assert state(m) == before
    m.map("0x4000_0000", "1G", "0x1_0000_1000")   # 262,144 4K leaves: more than one action
    assert m.error and f"{MAX_PAGES:,}" in m.error and state(m) == before


def test_queue_actions_and_time() -> None:
    m = StepperModel("smmuv3-v5.4", type="DMA_FQ")
    m.map("0x100000", "4K")
    m.unmap("0x100000", "4K")
    assert m.domain.stats()["fq_queued"] == 1
    t = m.domain.clock.now
    m.advance(20_000_000)
    assert m.domain.clock.now >= t + 20_000_000 and m.domain.stats()["fq_flushes"] == 1
    assert m.set_paused(False) == "running" and not m.queue.paused


def test_reset_keeps_the_old_domain_on_error() -> None:
    m = StepperModel("smmuv3-v4.15")
    m.map("0x0", "16K")
    assert m.reset(strategy="no-such-driver") is False and "unknown strategy" in m.error
    assert m.domain.stats()["map_calls"] == 1
    assert m.reset(strategy="smmuv3-v5.4", api="rfc-2017") is True
    assert (m.strategy, m.api, m.domain.stats()["map_calls"]) == ("smmuv3-v5.4", "rfc-2017", 0)
    assert [m.label(a) for a in ACTIONS
            if a.name in ("sync", "flush_all")] == ["tlb_sync", "flush_tlb_all"]


def test_small_teaching_ring_falls_back_with_a_note() -> None:
    m = StepperModel("smmuv3-v5.4", cmdq_entries=32)   # v5.4 needs >= 128 entries
    assert m.queue.entries == 1024 and any("default 1024-slot queue" in n for n in m.notes)


def test_stepping_imports_no_widgets() -> None:
    import subprocess

    code = ("import sys; sys.modules['ipywidgets'] = None; sys.modules['IPython'] = None\n"
            "from iommu_lab.analysis.stepping import StepperModel\n"
            "StepperModel('smmuv3-v5.4').map('0x0', '4K')\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compare_model_keeps_its_result_on_bad_settings() -> None:
    c = CompareModel(["smmuv3-v4.14", "smmuv3-v5.4"], ["unmap-each"], guest_mem="16M")
    df = c.run()
    assert len(df) == 2 and c.error is None
    assert c.run(strategies=[]) is None and "at least one" in c.error and c.df is df
    assert c.run(guest_mem="3K") is None and c.settings["guest_mem"] == "16M"
    c.set_metric("nope")
    assert "no column" in c.error and c.metric == "inv_cmds"
    c.set_metric("sync_cmds", log=False)
    assert (c.metric, c.log_scale, c.error) == ("sync_cmds", False, None)


# ---- atomicity by snapshot (issue 13): checked against a model that never fails ------------
ACTION_CALLS = st.one_of(
    st.tuples(st.just("map"), st.sampled_from(["0x0", "0x8000", "0x10000", "0x1001", "zz"]),
              st.sampled_from(["4K", "32K", "64K", "3K"])),
    st.tuples(st.sampled_from(["unmap", "unmap_fast"]),
              st.sampled_from(["0x0", "0x8000", "0x10000", "0x3"]),
              st.sampled_from(["4K", "32K", "64K", "1G"])),
    st.tuples(st.sampled_from(["dma_read", "dma_write"]),
              st.sampled_from(["0x0", "0x9000", "0x10000", "nope"])),
    st.tuples(st.just("consume"), st.sampled_from([1, 3, 0, "many"])),
    st.tuples(st.sampled_from(["sync", "flush_all", "run_until_idle"])),
)


@settings(max_examples=25, deadline=None)
@given(calls=st.lists(ACTION_CALLS, min_size=1, max_size=25))
def test_a_failed_action_leaves_exactly_what_a_model_that_never_tried_it_has(calls):
    """The stepper restores its snapshot on failure: it ends in the state of a twin that
    only ever got the actions that succeeded (the naive reference: nothing to undo)."""
    m, twin = StepperModel("smmuv3-v4.15", cmdq_entries=32), StepperModel(
        "smmuv3-v4.15", cmdq_entries=32)
    for name, *args in calls:
        before = state(m)
        result = getattr(m, name)(*args)
        if m.error:
            assert result is None and state(m) == before, (name, args, m.error)
        else:
            assert getattr(twin, name)(*args) == result and twin.error is None
        assert state(m) == state(twin)
        assert m.domain.trace.events == twin.domain.trace.events


def test_snapshot_cost_does_not_grow_with_the_session():
    """A snapshot holds the session without its trace: its size follows the page table,
    not the number of actions taken (issue 13)."""
    m = StepperModel("smmuv3-v4.15", cmdq_entries=32)
    sizes = []
    for _ in range(3):
        for _ in range(150):
            m.map("0x0", "64K")
            m.unmap_fast("0x0", "64K")
            m.consume(1)
            m.sync()
        trace = m.domain.trace
        events, waits, trace.events, trace.waits = trace.events, trace.waits, [], []
        try:
            sizes.append(len(SessionSnapshot(m.session)))
        finally:
            trace.events, trace.waits = events, waits
    assert len(m.domain.trace) > 15_000           # the trace grew threefold; snapshots did not
    assert max(sizes) < 1.25 * min(sizes) and max(sizes) < 64_000, sizes
    restored = SessionSnapshot(m.session).restore()
    assert restored.dom is not m.domain and restored.dom.stats() == m.domain.stats()
    assert restored.dom.driver.dom is restored.dom and restored.dom.driver.q is restored.dom.hw.queues[0]

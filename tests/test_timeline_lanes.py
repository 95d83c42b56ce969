"""The timeline's CPU lanes and wait segments (issues 11 and 12): one lane per CPU, each
CPU's spin-waits (for a CMD_SYNC, a lock, a free slot) drawn as their own segments, and an
"overlap" that never counts a CPU spinning as work."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab import views
from iommu_lab.analysis.session import Session
from iommu_lab.inputs.ops import Op
from iommu_lab.views.timeline import _overlap, lanes_of, trace_records, wait_records

RW = il.IOMMU_READ | il.IOMMU_WRITE
PAGE = 0x1000


def strict_unmap(strategy: str, pages: int = 16) -> il.IommuDomain:
    d = il.iommu_domain_alloc(strategy)
    il.iommu_map(d, 0x0, 0x4000_0000, pages * PAGE, RW)
    il.iommu_unmap(d, 0x0, pages * PAGE)
    return d


def test_every_spin_is_one_wait_segment_summing_to_spin_ns() -> None:
    """smmuv3-v4.14 (arm-smmu-v3.c @v4.14 __arm_smmu_tlb_sync polls CONS for each
    CMD_SYNC): the CPU's spinning is exactly the sum of its wait segments."""
    d = strict_unmap("smmuv3-v4.14")
    waits = d.trace.waits
    assert waits and all(w.actor == "CPU" and w.op == "wait: completion" for w in waits)
    assert sum(w.t1 - w.t0 for w in waits) == d.stats()["spin_ns"]
    assert all(w.t1 > w.t0 for w in waits)


def test_overlap_does_not_count_waiting() -> None:
    """The same trace scores less once the CPU's waits are cut out of its unmap span: the
    IOMMU running a CMD_SYNC while the CPU polls for it is not overlap (issue 12, 04)."""
    d = strict_unmap("smmuv3-v4.14")
    recs = trace_records(d)
    assert views.overlap_ns(d) == _overlap(recs, wait_records(d))
    assert views.overlap_ns(d) < _overlap(recs, [])
    spec = views.timeline_spec(d)
    assert "waiting excluded" in spec["layout"]["title"]["text"]
    waits = [t for t in spec["data"] if t["name"] == "CPU wait: completion"]
    assert waits and waits[0]["marker"]["pattern"]["shape"] == "/"


def test_a_trace_frame_keeps_its_waits() -> None:
    d = strict_unmap("smmuv3-v4.14")
    df = d.trace.to_dataframe()
    assert len(wait_records(df)) == len(d.trace.waits)
    assert views.timeline_spec(df)["layout"] == views.timeline_spec(d)["layout"]


def two_cpus(strategy: str) -> Session:
    s = Session(strategy, "unmap-each", params={"cpus": 2})
    s.run([Op("map", 0x100000 * (c + 1), PAGE, 1 << 32, cpu=c) for c in range(2)])
    s.run([Op("unmap", 0x100000 * (c + 1), PAGE, cpu=c, at_ns=10_000) for c in range(2)])
    return s


def test_one_lane_per_cpu_and_the_lock_wait_on_the_second() -> None:
    """intel/dmar.c @v5.10 qi_submit_sync: the CPU that comes second spins on q_lock while
    the first writes its PSI + wait descriptor (tests/test_multi_cpu.py has the 120 ns)."""
    s = two_cpus("vtd-psi")
    spec = views.timeline_spec(s.dom)
    assert spec["layout"]["yaxis"]["categoryarray"] == ["IOMMU", "CPU 1", "CPU 0"]
    locks = [w for w in s.dom.trace.waits if w.op == "wait: qi0->q_lock"]
    assert len(locks) == 1 and locks[0].t1 - locks[0].t0 == s.dom.stats()["lock_wait_ns"]
    def lanes(name: str) -> set[str]:
        return {y for t in spec["data"] if t["name"] == name for y in t["y"]}
    assert lanes("iommu_unmap") == {"CPU 0", "CPU 1"}
    assert len(lanes("CPU wait: qi0->q_lock")) == 1
    legend = [t["name"] for t in spec["data"] if t.get("showlegend")]
    assert len(legend) == len(set(legend))          # one legend entry per kind, not per lane


def test_lanes_order_cpus_and_iommus_numerically() -> None:
    rec = il.trace.TraceEvent
    recs = [rec(0, 1, a, "x", 0, 0, "") for a in ("IOMMU 1", "CPU 10", "device", "CPU 2",
                                                   "IOMMU 0")]
    assert lanes_of(recs) == ["CPU 2", "CPU 10", "IOMMU 0", "IOMMU 1", "device"]
    assert lanes_of([]) == ["CPU", "IOMMU"]


@settings(max_examples=15, deadline=None)
@given(strategy=st.sampled_from(["smmuv3-v4.15", "smmuv3-v5.4", "vtd-psi", "amd-range"]),
       cpus=st.integers(2, 4), pages=st.integers(1, 12), seed=st.integers(0, 3))
def test_waits_account_for_all_spinning_and_never_overlap_on_a_lane(
        strategy: str, cpus: int, pages: int, seed: int) -> None:
    """Conservation: with several CPUs the wait segments add up to ``spin_ns`` (lock waits
    included), and a CPU never waits twice at once."""
    ops = [Op("map", 0x100000 * (c + 1), pages * PAGE, 1 << 32, cpu=c) for c in range(cpus)]
    ops += [Op("unmap", 0x100000 * (c + 1) + k * PAGE, PAGE, cpu=c, at_ns=1_000 * (seed + c))
            for c in range(cpus) for k in range(pages)]
    s = Session(strategy, "unmap-each", params={"cpus": cpus})
    s.run(ops)
    waits = s.dom.trace.waits
    assert sum(w.t1 - w.t0 for w in waits) == s.dom.stats()["spin_ns"]
    for lane in {w.actor for w in waits}:
        mine = sorted((w.t0, w.t1) for w in waits if w.actor == lane)
        assert all(a1 <= b0 for (_, a1), (b0, _) in zip(mine, mine[1:], strict=False))


# ---- the stepper: several CPUs one click at a time -----------------------------------------

def test_stepper_unmaps_on_several_cpus_with_their_lanes_and_lock_waits() -> None:
    """Two CPUs unmap a page each at the same moment on VT-d (dmar.c @v5.10 qi_submit_sync
    under q_lock): the second spins for the first's critical section."""
    from iommu_lab.analysis.stepping import StepperModel

    m = StepperModel("vtd-psi", cpus=2)
    m.map("0x0", "8K")
    assert m.unmap_cpus("0x0", "8K", 2) == 0x2000 and m.error is None
    st = m.domain.stats()
    assert (st["unmap_calls"], st["inv_cmds"], st["sync_cmds"]) == (2, 2, 2)
    assert st["lock_wait_ns"] > 0
    lanes = views.timeline_spec(m.domain)["layout"]["yaxis"]["categoryarray"]
    assert {"CPU 0", "CPU 1"} <= set(lanes)


@pytest.mark.parametrize("cpus, n, size, needle", [
    (1, 2, "8K", "at least 2 CPUs"), (2, 4, "16K", "at least 4 CPUs"),
    (2, 2, "4K", "does not split into 2 slices"), (2, 1, "8K", "at least 2 CPUs")])
def test_stepper_unmap_cpus_refuses_and_changes_nothing(cpus: int, n: int, size: str,
                                                        needle: str) -> None:
    from iommu_lab.analysis.stepping import StepperModel

    m = StepperModel("vtd-psi", cpus=cpus)
    m.map("0x0", "16K")
    before, now = m.domain.stats(), m.domain.clock.now
    assert m.unmap_cpus("0x0", size, n) is None and needle in m.error
    assert m.domain.stats() == before and m.domain.clock.now == now


def test_stepper_shows_the_cpus_button_only_with_several_cpus() -> None:
    from iommu_lab.ui import Stepper

    def shown(s: Stepper) -> bool:
        return any(b is s.buttons["unmap_cpus"] for row in s.widget.children[1].children
                   if hasattr(row, "children") for b in row.children)

    assert shown(Stepper("smmuv3-v5.4", cpus=4)) and not shown(Stepper("smmuv3-v5.4"))

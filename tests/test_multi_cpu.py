"""Several CPUs, device TLBs (ATS) and several IOMMUs per domain (hw/cpus.py, issue 11).

Exact counts cite the kernel function @ version they follow (reference/
hardware-invalidation.md §1.5, §3.3; source-audit-2026-11-29.md). Times follow from the
named costs in hw/costs.py, which are assumptions.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab.analysis.compare import compare
from iommu_lab.analysis.session import Session
from iommu_lab.errors import IommuError
from iommu_lab.hw.costs import Costs
from iommu_lab.inputs.ops import Op, spread_over_cpus
from iommu_lab.inputs.workloads import kvm_teardown

RW = il.IOMMU_READ | il.IOMMU_WRITE
PAGE = 0x1000
C = Costs()


def both_cpus_unmap_one_page(strategy: str) -> dict[str, int]:
    """CPU 0 and CPU 1 each map a page, then both unmap theirs at the same moment."""
    s = Session(strategy, "unmap-each", params={"cpus": 2})
    s.run([Op("map", 0x100000 * (c + 1), PAGE, 1 << 32, cpu=c) for c in range(2)])
    before = s.dom.stats()
    s.run([Op("unmap", 0x100000 * (c + 1), PAGE, cpu=c, at_ns=10_000) for c in range(2)])
    return {k: v - before.get(k, 0) for k, v in s.dom.stats().items()}


# ---- how each era gets two CPUs' commands in ----------------------------------------------

@pytest.mark.parametrize("strategy, doorbells, locked", [
    # arm-smmu-v3.c @v4.14.5/v4.15: arm_smmu_tlb_inv_range_nosync → arm_smmu_cmdq_issue_cmd
    # per command, each under cmdq.lock with its own PROD write; __arm_smmu_tlb_sync too.
    ("smmuv3-v4.14", 4, True), ("smmuv3-v4.15", 4, True),
    # arm-smmu-v3.c @v5.4.6 arm_smmu_cmdq_issue_cmdlist: no lock. CPU 1's cmpxchg first
    # pulls the prod cacheline from CPU 0 (cacheline_ns, 150) — by then CPU 0 (2 commands,
    # 20 ns) has closed its batch, so CPU 1 owns the next one: 2 PROD writes. (Gathering
    # into one doorbell: tests/test_lockfree_cmdq.py.)
    ("smmuv3-v5.4", 2, False),
    # intel/dmar.c @v5.10 qi_submit_sync: desc + wait desc, one IQT write, under q_lock.
    ("vtd-psi", 2, True),
    # amd/iommu.c @v5.10 iommu_queue_command / iommu_completion_wait: each command is its
    # own tail write under iommu->lock.
    ("amd-range", 4, True),
])
def test_two_cpus_one_page_each(strategy: str, doorbells: int, locked: bool) -> None:
    d = both_cpus_unmap_one_page(strategy)
    assert (d["inv_cmds"], d["sync_cmds"], d["doorbells"]) == (2, 2, doorbells)
    assert (d["lock_wait_ns"] > 0) == locked


def test_vtd_second_cpu_spins_for_exactly_one_critical_section() -> None:
    """qi_submit_sync @v5.10 holds q_lock while it writes the PSI and the wait descriptor
    and writes IQT; it polls the status word with the lock dropped. CPU 1, asking at the
    same moment, spins for 2 × cmd_write_ns + mmio_write_ns."""
    d = both_cpus_unmap_one_page("vtd-psi")
    assert d["lock_wait_ns"] == 2 * C.cmd_write_ns + C.mmio_write_ns == 120


def test_cacheline_transfers_cost_only_with_several_cpus() -> None:
    """The lock word changes CPU once per hand-over; one CPU never pays."""
    assert both_cpus_unmap_one_page("vtd-psi")["cacheline_ns"] > 0
    assert compare(kvm_teardown("1M", "4K"), ["vtd-psi"], ["unmap-each"]).loc[
        0, "cacheline_ns"] == 0


def test_v4_14_waits_for_cons_under_the_lock() -> None:
    """v4.14 polls CMDQ_CONS for its CMD_SYNC holding cmdq.lock (queue_poll_cons under
    the lock); v4.15's MSI completion polls memory after unlocking (37de98f8f1cf). So the
    other CPU spins far longer on v4.14."""
    assert (both_cpus_unmap_one_page("smmuv3-v4.14")["lock_wait_ns"]
            > 2 * both_cpus_unmap_one_page("smmuv3-v4.15")["lock_wait_ns"])


def test_v5_4_never_takes_a_lock() -> None:
    df = compare(spread_over_cpus(kvm_teardown("1M", "4K"), 8), ["smmuv3-v5.4"],
                 ["unmap-each"])
    assert df.loc[0, "lock_wait_ns"] == 0 and df.loc[0, "cpus"] == 8
    assert df.loc[0, "doorbells"] < df.loc[0, "sync_cmds"]   # owners gathered batches


def test_lock_wait_grows_with_cpus_on_a_locked_queue() -> None:
    waits = [compare(kvm_teardown("1M", "4K"), ["amd-range"], ["unmap-each"],
                     params={"cpus": n}).loc[0, "lock_wait_ns"] for n in (1, 2, 4)]
    assert waits[0] == 0 < waits[1] < waits[2]


@pytest.mark.parametrize("cpus, flushes", [(1, 4), (4, 1)])
def test_lazy_flush_queues_are_per_cpu(cpus: int, flushes: int) -> None:
    """iova.c @v5.10 queue_iova: ``fq = raw_cpu_ptr(iovad->fq)`` — each CPU fills its own
    ring (IOVA_FQ_SIZE 256, a full ring flushes). One CPU unmapping 800 pages fills it 3
    times, then the 10 ms timer flushes the rest (4 flushes). Four CPUs × 200 never fill
    theirs: fq_flush_timeout's single flush frees every CPU's ring (1 flush)."""
    s = Session("smmuv3-v5.4", "dma-lazy", params={"cpus": cpus})
    ops = [Op("map", 0x100000, PAGE, 1 << 32, count=800, stride=PAGE, paddr_stride=PAGE),
           Op("unmap", 0x100000, PAGE, count=800, stride=PAGE)]
    s.run(spread_over_cpus(ops, cpus))
    st = s.dom.stats()
    assert (st["fq_queued"], st["fq_flushes"], st["fq_timer_flushes"]) == (800, flushes, 1)
    assert st["inv_all_cmds"] == flushes


# ---- conservation and equivalence with one CPU --------------------------------------------

work = st.lists(st.tuples(st.integers(0, 31), st.integers(1, 4)), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None)
@given(work, st.integers(2, 5),
       st.sampled_from(["smmuv3-v4.15", "smmuv3-v5.4", "vtd-psi", "amd-range"]))
def test_cpus_change_timing_not_work(items: list[tuple[int, int]], cpus: int,
                                     strategy: str) -> None:
    """The naive reference is one CPU doing the same map/unmap calls: with ``cpus`` CPUs
    the same commands are issued (each strict unmap invalidates and syncs its own range),
    every command completes, and the page table ends the same."""
    ops = []
    for slot, pages in dict(items).items():
        ops.append(Op("map", 0x200000 * (slot + 1), pages * PAGE, 1 << 32))
        ops.append(Op("unmap", 0x200000 * (slot + 1), pages * PAGE))
    one, many = Session(strategy, "unmap-each"), Session(strategy, "unmap-each",
                                                        params={"cpus": cpus})
    one.run(ops)
    many.run(spread_over_cpus(ops, cpus))
    a, b = one.dom.stats(), many.dom.stats()
    for key in ("inv_cmds", "sync_cmds", "unmap_calls", "pages_unmapped"):
        assert a[key] == b[key], key
    assert many.dom.pgtable.iova_to_phys(0x200000) == 0
    q = many.dom.hw.queues[0]
    many.dom.clock.idle_until(q.hw_free)
    assert q.consumed_at(many.dom.clock.now) == q.prod   # every command completed


# ---- device TLBs (PCIe ATS) --------------------------------------------------------------

def unmap_four_pages(strategy: str, **params: object) -> tuple[dict[str, int], il.IommuDomain]:
    d = il.iommu_domain_alloc(strategy, **params)
    il.iommu_map(d, 0x10000, 1 << 32, 4 * PAGE, RW)
    for i in range(4):
        il.dma_access(d, 0x10000 + i * PAGE)
    before = d.stats()
    il.iommu_unmap(d, 0x10000, 4 * PAGE)
    return {k[4:]: v - before.get(k, 0) for k, v in d.stats().items()
            if k.startswith("cmd:") and v - before.get(k, 0)}, d


@pytest.mark.parametrize("strategy, expected", [
    # arm-smmu-v3.c @v5.4.6 arm_smmu_tlb_inv_range: the TLBIs and CMD_SYNC in one cmdlist,
    # then arm_smmu_atc_inv_domain: CMD_ATC_INV per master (arm_smmu_cmdq_issue_cmd) and
    # arm_smmu_cmdq_issue_sync — its own sync.
    ("smmuv3-v5.4", {"CMD_TLBI_NH_VA": 4, "CMD_SYNC": 2, "CMD_ATC_INV": 1}),
    # @v5.10 (RIL): one range TLBI + SYNC; arm_smmu_atc_inv_domain batches ATC_INV + SYNC.
    ("smmuv3-ril", {"CMD_TLBI_NH_VA": 1, "CMD_SYNC": 2, "CMD_ATC_INV": 1}),
    # intel/iommu.c @v5.10 iommu_flush_iotlb_psi → iommu_flush_dev_iotlb: after the PSI,
    # qi_flush_dev_iotlb per ATS device, each through qi_submit_sync (own wait descriptor).
    ("vtd-psi", {"QI_IOTLB_PSI": 1, "QI_IWD": 2, "QI_DIOTLB": 1}),
    # amd/iommu.c @v5.10 __domain_flush_pages: INVALIDATE_IOMMU_PAGES per IOMMU, then
    # device_flush_iotlb (INVALIDATE_IOTLB_PAGES) per ATS device; one COMPLETION_WAIT.
    ("amd-range", {"INVALIDATE_IOMMU_PAGES": 1, "INVALIDATE_IOTLB_PAGES": 1,
                   "COMPLETION_WAIT": 1}),
])
def test_ats_invalidation_per_driver(strategy: str, expected: dict[str, int]) -> None:
    cmds, d = unmap_four_pages(strategy, ats=True)
    assert cmds == expected
    assert d.stats()["atc_inv_cmds"] == 1
    assert il.dma_access(d, 0x10000) == "fault"      # the device TLB was invalidated too


def test_atc_serves_device_accesses_first() -> None:
    """With ATS the endpoint caches the translation: the second access hits its ATC and
    never reaches the IOMMU's IOTLB."""
    d = il.iommu_domain_alloc("smmuv3-v5.4", ats=True)
    il.iommu_map(d, 0x10000, 1 << 32, PAGE, RW)
    il.dma_access(d, 0x10000)
    hits = d.stats()["iotlb_hits"]
    il.dma_access(d, 0x10000)
    assert d.stats()["atc_hits"] == 1 and d.stats()["iotlb_hits"] == hits
    assert any(v.cache == "ATC" for v in d.iotlb_entries())


def test_stale_atc_hit_is_counted() -> None:
    """An IOTLB-only invalidation leaves the device's copy: the next access is a stale ATC
    hit (what the dev-IOTLB descriptors exist to prevent)."""
    d = il.iommu_domain_alloc("smmuv3-v5.4", ats=True)
    il.iommu_map(d, 0x10000, 1 << 32, PAGE, RW)
    il.dma_access(d, 0x10000)
    il.iommu_unmap_fast(d, 0x10000, PAGE, il.IommuIotlbGather())   # no sync: nothing issued
    il.dma_access(d, 0x10000)
    assert d.stats()["atc_stale_hits"] == 1


def test_ats_costs_the_named_parameter() -> None:
    """Each ATC invalidation occupies the IOMMU for ats_inv_ns (a named assumption)."""
    slow = compare(kvm_teardown("1M", "4K"), ["vtd-psi"], ["unmap-each"],
                   params={"ats": True, "costs": {"ats_inv_ns": 20_000}}).loc[0, "end_ns"]
    fast = compare(kvm_teardown("1M", "4K"), ["vtd-psi"], ["unmap-each"],
                   params={"ats": True, "costs": {"ats_inv_ns": 2_000}}).loc[0, "end_ns"]
    assert slow - fast >= 256 * 18_000


@pytest.mark.parametrize("strategy, why", [
    ("smmuv3-v4.15", "v5.2"), ("virtio-iommu", "virtio"), ("smmuv2", "SMMUv2")])
def test_ats_where_the_driver_has_none_is_einval(strategy: str, why: str) -> None:
    with pytest.raises(IommuError, match=why):
        il.iommu_domain_alloc(strategy, ats=True)


# ---- several IOMMUs per domain -------------------------------------------------------------

@pytest.mark.parametrize("strategy, expected, per_iommu", [
    # intel/iommu.c @v5.10 intel_iommu_tlb_sync: for_each_domain_iommu → PSI per IOMMU.
    # iommu_flush_dev_iotlb walks domain->devices (every ATS device in the domain, on
    # whichever IOMMU), so each IOMMU's PSI is followed by both devices' dev-IOTLB flushes.
    ("vtd-psi", {"QI_IOTLB_PSI": 2, "QI_IWD": 6, "QI_DIOTLB": 4},
     {"inv": 1, "syncs": 3, "atc_inv": 2, "doorbells": 3, "waits": 3}),
    # amd/iommu.c @v5.10 __domain_flush_pages: per IOMMU with dev_iommu[i] > 0, then per
    # ATS device on its own IOMMU; domain_flush_complete: COMPLETION_WAIT per IOMMU.
    ("amd-range", {"INVALIDATE_IOMMU_PAGES": 2, "INVALIDATE_IOTLB_PAGES": 2,
                   "COMPLETION_WAIT": 2},
     {"inv": 1, "syncs": 1, "atc_inv": 1, "doorbells": 3, "waits": 1}),
])
def test_two_iommus_each_get_their_commands(strategy: str, expected: dict[str, int],
                                            per_iommu: dict[str, int]) -> None:
    cmds, d = unmap_four_pages(strategy, iommus=2, ats=True)
    assert cmds == expected
    got = d.per_iommu()
    assert len(got) == 2 and got[0] == got[1]
    assert {k: v for k, v in got[1].items() if k != "commands"} == per_iommu


@pytest.mark.parametrize("strategy", ["smmuv3-v5.4", "virtio-iommu"])
def test_one_iommu_drivers_refuse_several(strategy: str) -> None:
    with pytest.raises(IommuError, match="iommus=2"):
        il.iommu_domain_alloc(strategy, iommus=2)


@pytest.mark.parametrize("bad", [0, 257, "4", True, 1.5])
def test_bad_cpu_counts_are_einval(bad: object) -> None:
    with pytest.raises(IommuError, match="cpus"):
        il.iommu_domain_alloc("smmuv3-v5.4", cpus=bad)


def test_ops_for_a_cpu_the_domain_lacks_are_refused() -> None:
    s = Session("smmuv3-v5.4", "unmap-each", params={"cpus": 2})
    with pytest.raises(IommuError, match="CPU"):
        s.run([Op("map", 0x1000, PAGE, 1 << 32, cpu=5)])
    assert s.dom.stats()["map_calls"] == 0


def test_amd_completion_wait_only_when_needed() -> None:
    """amd/iommu.c @v5.10.89 iommu_completion_wait: ``if (!iommu->need_sync) return 0;`` —
    ``need_sync`` is set by each command queued with sync=true and cleared by the
    COMPLETION_WAIT, so a second wait with nothing queued in between issues nothing."""
    d = il.iommu_domain_alloc("amd-range", iommus=2)
    il.iommu_map(d, 0x10000, 1 << 32, PAGE, RW)
    il.iommu_unmap(d, 0x10000, PAGE)
    before = d.stats()
    d.driver.domain_flush_complete()
    assert d.stats() == before
    d.driver.queue_command(d.driver.inv_all(1), 1)      # only IOMMU 1 has new work
    d.driver.domain_flush_complete()
    assert [t["syncs"] for t in d.per_iommu()] == [1, 2]


def test_replay_per_cpu_runs_each_traced_cpu_on_its_own() -> None:
    """``replay(..., per_cpu=True)`` gives the domain one simulated CPU per traced CPU (the
    synthetic trace spreads its events over CPUs 0-3); each strict unmap still syncs once."""
    from iommu_lab.analysis.replay import replay
    from iommu_lab.inputs.trace.synth import make_synthetic_trace

    lines = list(make_synthetic_trace(600, seed=3))
    one = replay(lines, ["amd-range"], ["unmap-each"])
    many = replay(lines, ["amd-range"], ["unmap-each"], per_cpu=True)
    assert (one.loc[0, "cpus"], many.loc[0, "cpus"]) == (1, 4)
    assert many.loc[0, "sync_cmds"] == one.loc[0, "sync_cmds"] > 0
    assert many.loc[0, "op_errors"] == 0

"""The compact path (run extrapolation) gives exactly the step-by-step counts and times."""

from __future__ import annotations

import pytest

import iommu_lab as il
from iommu_lab.analysis.callers import CALLERS
from iommu_lab.analysis.session import Session
from iommu_lab.inputs.ops import Op
from iommu_lab.inputs.workloads import kvm_teardown


def run(strategy: str, caller: str, ops, compact: bool, **params) -> Session:
    s = Session(strategy, caller, params, compact=compact)
    s.run(ops)
    return s


def same(strategy: str, caller: str, ops, **params) -> Session:
    fast = run(strategy, caller, ops, True, **params)
    slow = run(strategy, caller, ops, False, **params)
    assert fast.dom.stats() == slow.dom.stats()
    assert fast.dom.clock.now == slow.dom.clock.now
    assert list(fast.dom.pgtable.leaves()) == list(slow.dom.pgtable.leaves())
    assert slow.compacted_items == 0
    return fast


@pytest.mark.parametrize("strategy", list(il.STRATEGIES))
@pytest.mark.parametrize("caller", list(CALLERS))
def test_teardown_compact_equals_step(strategy, caller):
    ops = list(kvm_teardown("12M", "4K"))  # 3072 pages: several VFIO batches and FQ cycles
    fast = same(strategy, caller, ops)
    assert fast.compacted_items > 0.8 * fast.items  # and it really was compact


@pytest.mark.parametrize("strategy", ["smmuv3-v5.4", "vtd-psi", "amd-range"])
def test_lazy_across_timer_expiries(strategy):
    # 40k pages under dma-lazy: the 10 ms flush-queue timer fires in the middle of runs.
    ops = [Op("map", 0, 4096, 1 << 36, count=40_000, stride=4096, paddr_stride=8192),
           Op("unmap", 0, 4096, count=40_000, stride=4096)]
    fast = same(strategy, "dma-lazy", ops, costs={"call_ns": 600})
    assert fast.dom.stats()["fq_timer_flushes"] >= 1


@pytest.mark.parametrize("strategy", ["smmuv3-v4.15", "smmuv3-v5.4", "virtio-iommu"])
def test_small_queue_with_stalls(strategy):
    # A 32-entry ring with slow hardware: the producer stalls, in both paths alike.
    ops = [Op("map", 0, 4096, 1 << 36, count=3000, stride=4096, paddr_stride=8192),
           Op("unmap", 0, 4096, count=3000, stride=4096)]
    entries = {"smmuv3-v4.15": 32, "smmuv3-v5.4": 128, "virtio-iommu": 16}[strategy]
    fast = same(strategy, "unmap-fast-batch", ops, cmdq_entries=entries,
                costs={"hw_tlbi_ns": 400})
    if strategy == "smmuv3-v4.15":
        assert fast.dom.stats()["cmdq_full_stalls"] > 0


def test_2m_blocks_and_rfc_gather_growth():
    ops = [Op("map", 0x200000, 1 << 21, 1 << 36, count=700, stride=1 << 21, paddr_stride=2 << 21),
           Op("unmap", 0x200000, 1 << 21, count=700, stride=1 << 21)]
    for strategy in ("smmuv3-v5.4", "smmuv3-ril", "amd-range"):
        same(strategy, "unmap-then-flush-all", ops)
        same(strategy, "unmap-fast-batch", ops)


def test_non_uniform_runs_take_the_step_path():
    # 12 KiB chunks are not one page: every item is executed step by step.
    ops = [Op("map", 0, 0x3000, 1 << 36, count=50, stride=0x3000, paddr_stride=0x4000)]
    s = run("smmuv3-v5.4", "unmap-each", ops, True)
    assert s.compacted_items == 0 and s.dom.stats()["map_calls"] == 50


def test_iotlb_entries_block_extrapolation():
    # A device touched the first page: the run may not be compacted while the IOTLB could
    # observe ordering, yet results stay equal.
    ops = [Op("map", 0, 4096, 1 << 36, count=2000, stride=4096, paddr_stride=8192),
           Op("access", 0x5000), Op("unmap", 0, 4096, count=2000, stride=4096)]
    same("smmuv3-v4.15", "unmap-fast-batch", ops)


def test_queue_sizes_the_driver_cannot_use_are_refused():
    with pytest.raises(il.IommuError, match="at least 128"):
        il.iommu_domain_alloc("smmuv3-v5.4", cmdq_entries=64)
    with pytest.raises(il.IommuError, match="power of two"):
        il.iommu_domain_alloc("smmuv3-v4.15", cmdq_entries=100)


# ---- one direct API call on a huge range (core and driver compact their own runs) ----------

RW = il.IOMMU_READ | il.IOMMU_WRITE


def direct_state(dom) -> tuple:
    """Everything the direct calls below could change, as plain values."""
    queues = [(q.state(), q.hw_free, [(s.pos, s.cmd, s.state) for s in q.slots()])
              for q in dom.hw.queues]
    return dom.stats(), dom.clock.now, list(dom.pgtable.leaves()), queues


def direct_calls(strategy: str, compact: bool, **params) -> tuple:
    """The issue's shape at small scale: map 8 MiB of 4 KiB pages (paddr 4K-offset, so 2,048
    driver calls before v5.15), unmap from 0x1000 (511 whole leaves, then a 2 MiB table
    freed: 512 walk TLBIs on SMMU), unmap_fast 4 MiB into a gather, sync, then the issue's
    own pair: iommu_map(d, 0, 0x1000, N) and iommu_unmap(d, 0, N)."""
    d = il.iommu_domain_alloc(strategy, compact=compact, **params)
    il.iommu_map(d, 0x0, 0x4000_1000, 8 << 20, RW)
    il.iommu_unmap(d, 0x1000, 0x3ff000)
    g = il.IommuIotlbGather()
    il.iommu_unmap_fast(d, 0x400000, 4 << 20, g)
    il.iommu_iotlb_sync(d, g)
    il.iommu_map(d, 1 << 30, 0x1000, 64 << 20, RW)
    il.iommu_unmap(d, 1 << 30, 64 << 20)
    return direct_state(d)


@pytest.mark.parametrize("strategy", list(il.STRATEGIES))
def test_direct_api_compact_equals_step(strategy, monkeypatch):
    """Counters, clock, PTEs and the ring after compacted direct calls equal the
    step-by-step path (thresholds lowered so every compact loop takes part)."""
    import iommu_lab.core.iommu as core_iommu
    import iommu_lab.drivers.base as driver_base

    monkeypatch.setattr(core_iommu, "COMPACT_MIN", 4)
    monkeypatch.setattr(driver_base, "COMPACT_BATCHES", 2)
    assert direct_calls(strategy, True) == direct_calls(strategy, False)


@pytest.mark.parametrize("strategy", ["smmuv3-v4.15", "smmuv3-v5.4", "vtd-psi"])
def test_direct_api_compact_with_a_small_slow_ring(strategy, monkeypatch):
    """Producer stalls on a small ring with slow hardware, in both paths alike."""
    import iommu_lab.drivers.base as driver_base

    monkeypatch.setattr(driver_base, "COMPACT_BATCHES", 2)
    entries = {"smmuv3-v4.15": 16, "smmuv3-v5.4": 128, "vtd-psi": 32}[strategy]
    kw = {"cmdq_entries": entries, "costs": {"hw_tlbi_ns": 400}}
    fast, slow = direct_calls(strategy, True, **kw), direct_calls(strategy, False, **kw)
    assert fast == slow


def test_direct_16g_map_is_compact():
    """One iommu_map of 16 GiB in 4 KiB pages: 4 Mi driver calls, applied mostly in bulk."""
    d = il.iommu_domain_alloc("smmuv3-v5.4")
    il.iommu_map(d, 0, 0x1000, 16 << 30, RW)
    st = d.stats()
    assert st["driver_callbacks"] == 4 << 20 and st["pages_mapped"] == 4 << 20
    # one iommu_map call, then per ->map: the callback and one PTE write (drivers/base.py)
    c = d.costs
    assert d.clock.now == c.call_ns + (4 << 20) * (c.call_ns + c.pte_update_ns)
    assert any("compact" in e.op for e in d.trace.events)
    assert il.iommu_iova_to_phys(d, (16 << 30) - 1) == 0x1000 + (16 << 30) - 1

"""The command queue against a naive one-command-at-a-time model (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iommu_lab.hw.clock import Clock
from iommu_lab.hw.cmdq import CommandQueue
from iommu_lab.hw.commands import Command
from iommu_lab.hw.costs import Costs
from iommu_lab.stats import Stats

TLBI = Command("CMD_TLBI_NH_VA", 1, 0, 4096, 4096, (("Leaf", 1),))
SYNC = Command("CMD_SYNC")

batches = st.lists(st.tuples(st.integers(1, 40), st.booleans(), st.integers(0, 3000)),
                   min_size=1, max_size=25)


def naive(plan, entries: int, costs: Costs):
    """Per-command model: FIFO hardware, producer stalls while the ring lacks room."""
    now, finishes, hw_free = 0, [], 0
    for n, sync, idle in plan:
        now += idle
        k = n + int(sync)
        need = len(finishes) + k - 1 - entries
        if need >= 0 and finishes[need] > now:
            now = finishes[need] + costs.mmio_read_ns
        now += k * costs.cmd_write_ns + costs.mmio_write_ns
        for i in range(k):
            cost = costs.hw_sync_ns if sync and i == k - 1 else costs.hw_tlbi_ns
            start = max(hw_free, now)
            hw_free = start + cost
            finishes.append(hw_free)
        if sync:
            now = max(now, finishes[-1]) + costs.mem_poll_ns
    return now, finishes


@settings(max_examples=200, deadline=None)
@given(plan=batches, shift=st.integers(2, 6), tlbi=st.integers(0, 400))
def test_queue_matches_naive_model(plan, shift, tlbi):
    entries = 1 << shift
    plan = [(min(n, entries - 1), s, idle) for n, s, idle in plan]
    costs = Costs(hw_tlbi_ns=tlbi)
    stats = Stats()
    clock = Clock(stats)
    q = CommandQueue(clock, stats, costs, entries=entries)
    for n, sync, idle in plan:
        clock.idle_until(clock.now + idle)
        cons_before = q.consumed_at(clock.now)
        assert q.prod - cons_before <= q.capacity  # never more in flight than slots
        pos = q.submit([(TLBI, n)] + ([(SYNC, 1)] if sync else []))
        assert q.prod - q.consumed_at(clock.now) <= q.capacity
        if sync:
            q.wait_for(pos, poll_ns=costs.mem_poll_ns)
            assert q.consumed_at(clock.now) == q.prod  # a sync completes after all before it
    now, finishes = naive(plan, entries, costs)
    assert clock.now == now
    assert q.hw_free == finishes[-1]
    assert stats["inv_cmds"] == sum(n for n, _, _ in plan)
    assert stats["sync_cmds"] == sum(s for _, s, _ in plan)
    assert stats["doorbells"] == len(plan)


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=12), steps=st.integers(1, 50))
def test_paused_hardware_consumes_only_when_told(sizes, steps):
    stats = Stats()
    clock = Clock(stats)
    q = CommandQueue(clock, stats, Costs(), entries=256)
    q.paused = True
    for n in sizes:
        q.submit([(TLBI, n)])
    total = sum(sizes)
    assert q.consumed_at(clock.now + 10**9) == 0  # nothing scheduled while paused
    done = q.consume(steps)
    assert done == min(steps, total)
    assert q.consumed_at(clock.now) == done
    q.run_until_idle()
    assert q.consumed_at(clock.now) == total


def test_wrap_bit_registers():
    # Q_IDX / Q_WRP (arm-smmu-v3.c @v4.14.5): full = same index, different wrap bit.
    stats = Stats()
    clock = Clock(stats)
    q = CommandQueue(clock, stats, Costs(), entries=8)
    q.paused = True
    q.submit([(TLBI, 8)])
    r = q.register_values(clock.now)
    assert (r["prod_idx"], r["prod_wrp"], r["cons_idx"], r["cons_wrp"]) == (0, 1, 0, 0)
    q.consume(3)
    r = q.register_values(clock.now)
    assert (r["cons_idx"], r["cons_wrp"]) == (3, 0)


def test_needless_sync_counted():
    stats = Stats()
    q = CommandQueue(Clock(stats), stats, Costs(), entries=16)
    q.submit([(SYNC, 1)])
    q.submit([(TLBI, 1), (SYNC, 1)])
    assert stats["sync_cmds"] == 2 and stats["needless_sync_cmds"] == 1

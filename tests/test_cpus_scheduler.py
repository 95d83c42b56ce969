"""The CPU scheduler of hw/cpus.py: failures, deadlocks and deep stacks (issue 11)."""

from __future__ import annotations

import pytest

from iommu_lab.hw.clock import Clock
from iommu_lab.hw.cpus import Cpus, SimEvent, SpinLock
from iommu_lab.stats import Stats


def make(n: int) -> Cpus:
    stats = Stats()
    return Cpus(Clock(stats), stats, n)


def test_streams_interleave_in_simulated_time_order() -> None:
    cpus, seen = make(3), []

    def stream(k: int):
        def run() -> None:
            for step in range(3):
                cpus.clock.busy(10 * (k + 1))
                cpus.sync()
                seen.append((cpus.clock.now, k, step))
        return run

    cpus.run([stream(k) for k in range(3)])
    assert seen == sorted(seen) and len(seen) == 9
    assert cpus.clock.now == 90 and not cpus.running


def test_a_failing_stream_unwinds_the_others_and_reraises() -> None:
    cpus, finished = make(4), []

    def ok(k: int):
        def run() -> None:
            for _ in range(5):
                cpus.clock.busy(10)
                cpus.sync()
            finished.append(k)
        return run

    def bad() -> None:
        cpus.clock.busy(15)
        cpus.sync()
        raise ValueError("boom on CPU 1")

    with pytest.raises(ValueError, match="boom on CPU 1"):
        cpus.run([ok(0), bad, ok(2), ok(3)])
    assert finished == [] and not cpus.running
    cpus.run([ok(k) for k in range(4)])          # usable again afterwards
    assert sorted(finished) == [0, 1, 2, 3]


def test_every_cpu_waiting_is_a_deadlock_not_a_hang() -> None:
    cpus = make(2)
    ev = SimEvent(cpus)
    with pytest.raises(RuntimeError, match="deadlock"):
        cpus.run([ev.wait, ev.wait])


def test_a_lock_held_across_a_sync_point_hands_over_fifo() -> None:
    cpus, order = make(3), []
    lock = SpinLock(cpus, "lock")

    def stream(k: int):
        def run() -> None:
            lock.acquire()
            order.append(k)
            cpus.clock.busy(100)
            cpus.sync()                       # held across a sync point
            lock.release()
        return run

    cpus.run([stream(k) for k in range(3)])
    assert order == [0, 1, 2] and cpus.stats["lock_wait_ns"] == 100 + 200


def test_many_cpus_deep_stacks() -> None:
    """256 CPUs, each first switched to from deep inside another's stack: every stream
    starts at the scheduler's depth, so none hits the recursion limit."""
    cpus, done = make(256), []

    def deep(k: int, depth: int = 60) -> None:
        if depth:
            deep(k, depth - 1)
            return
        cpus.clock.busy(k % 7 + 1)
        cpus.sync()
        done.append(k)

    cpus.run([lambda k=k: deep(k) for k in range(256)])
    assert sorted(done) == list(range(256))

"""SMMUv3 v5.4 lock-free command-queue insertion, checked against a naive reference.

The kernel: ``arm_smmu_cmdq_issue_cmdlist`` in drivers/iommu/arm-smmu-v3.c @v5.4.6 (the
"Command queue insertion" comment block; 587e6c10a7ce, hardware-invalidation.md §1.5):
claim slots with a ``cmpxchg`` on ``{prod | CMDQ_PROD_OWNED_FLAG}``; the CPU that found the
flag clear owns the batch; it waits for the previous owner's ``owner_prod``, clears the
flag (its batch ends at the current prod), waits for every slot in it to be valid, writes
PROD once and publishes ``owner_prod``; a CPU with a CMD_SYNC waits for that.

:class:`~iommu_lab.drivers.arm_smmu_cmdq.LockFreeCmdq` runs that as ordinary code with sync
points on threads. The reference below is written the other way round: each CPU is an
explicit state machine, every step one atomic action, the CPU with the earliest time
(lowest number on a tie) steps next — no threads, no events, no queue model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommu_lab.drivers.arm_smmu_cmdq import Insertion, LockFreeCmdq
from iommu_lab.hw.clock import Clock
from iommu_lab.hw.cmdq import CommandQueue
from iommu_lab.hw.commands import Command
from iommu_lab.hw.costs import Costs
from iommu_lab.hw.cpus import Cpus
from iommu_lab.stats import Stats

TLBI = Command("CMD_TLBI_NH_VA", 1, 0x1000, 0x1000)
SYNC = Command("CMD_SYNC", fields=(("CS", 1),))

Call = tuple[int, int, bool]   # (arrive at ns, commands, with a CMD_SYNC)


# ---- the naive reference --------------------------------------------------------------

@dataclass
class RefCpu:
    num: int
    calls: list[Call]
    time: int = 0
    k: int = 0                      # which call
    step: str = "claim"
    blocked: bool = False
    start: int = 0
    end: int = 0
    n: int = 0
    owner: bool = False
    published_at: int | None = None


@dataclass
class RefQueue:
    prod: int = 0
    owned: bool = False
    owner_prod: int = 0
    valid: set[int] = field(default_factory=set)
    log: list[Insertion] = field(default_factory=list)


def reference(calls: list[list[Call]], write_ns: int, doorbell_ns: int) -> list[Insertion]:
    """Step every CPU's state machine one atomic action at a time, earliest CPU first."""
    q = RefQueue()
    cpus = [RefCpu(i, c) for i, c in enumerate(calls)]
    for c in cpus:
        _arrive(c)
    while True:
        ready = [c for c in cpus if c.step != "done" and not c.blocked]
        if not ready:
            assert all(c.step == "done" for c in cpus), "reference deadlocked"
            return q.log
        c = min(ready, key=lambda c: (c.time, c.num))
        _STEPS[c.step](c, q, cpus, write_ns, doorbell_ns)


def _arrive(c: RefCpu) -> None:
    if c.k == len(c.calls):
        c.step = "done"
        return
    at, n, sync = c.calls[c.k]
    c.time, c.n, c.step = max(c.time, at), n + int(sync), "claim"


def _claim(c: RefCpu, q: RefQueue, cpus: list[RefCpu], w: int, d: int) -> None:
    """cmpxchg prod += n with OWNED set; owner iff OWNED was clear; then write n commands."""
    c.start, c.owner, c.published_at = q.prod, not q.owned, None
    q.prod, q.owned = q.prod + c.n, True
    c.time += w * c.n
    c.step = "mark_valid"


def _mark_valid(c: RefCpu, q: RefQueue, cpus: list[RefCpu], w: int, d: int) -> None:
    q.valid.update(range(c.start, c.start + c.n))
    _wake(cpus, "wait_valid", c.time)
    c.step = "wait_prev_owner" if c.owner else "wait_published"
    _STEPS[c.step](c, q, cpus, w, d)          # the same atomic stretch: no sync point


def _wait_prev_owner(c: RefCpu, q: RefQueue, cpus: list[RefCpu], w: int, d: int) -> None:
    if q.owner_prod < c.start:
        c.blocked = True
        return
    c.step = "clear_owned"


def _clear_owned(c: RefCpu, q: RefQueue, cpus: list[RefCpu], w: int, d: int) -> None:
    c.end, q.owned = q.prod, False
    c.step = "wait_valid"
    _wait_valid(c, q, cpus, w, d)


def _wait_valid(c: RefCpu, q: RefQueue, cpus: list[RefCpu], w: int, d: int) -> None:
    if not set(range(c.start, c.end)) <= q.valid:
        c.blocked = True
        return
    c.time += d                                 # writel(prod): one doorbell ...
    c.step = "publish"


def _publish(c: RefCpu, q: RefQueue, cpus: list[RefCpu], w: int, d: int) -> None:
    """... and once it is written, owner_prod = end."""
    q.owner_prod = c.end
    c.published_at = c.time
    _wake(cpus, "wait_prev_owner", c.time)
    _wake(cpus, "wait_published", c.time)
    c.step = "wait_published"
    _wait_published(c, q, cpus, w, d)


def _wait_published(c: RefCpu, q: RefQueue, cpus: list[RefCpu], w: int, d: int) -> None:
    sync = c.calls[c.k][2]
    if sync and q.owner_prod < c.start + c.n:
        c.blocked = True
        return
    q.log.append(Insertion(c.num, c.start, c.start + c.n, c.owner, c.published_at))
    c.k += 1
    _arrive(c)


def _wake(cpus: list[RefCpu], step: str, at: int) -> None:
    for o in cpus:
        if o.blocked and o.step == step:
            o.blocked, o.time = False, max(o.time, at)


_STEPS = {"claim": _claim, "mark_valid": _mark_valid, "wait_prev_owner": _wait_prev_owner,
          "clear_owned": _clear_owned, "wait_valid": _wait_valid, "publish": _publish,
          "wait_published": _wait_published}


# ---- the optimised model, driven the way the v5.4 driver drives it ----------------------

def optimised(calls: list[list[Call]], costs: Costs, wait: bool = False,
              entries: int = 1 << 20):
    """Run ``calls`` through :class:`LockFreeCmdq`; with ``wait`` each CPU then polls for
    its CMD_SYNC as the driver does (the reference has no hardware, so compare without)."""
    stats = Stats()
    clock = Clock(stats)
    cpus = Cpus(clock, stats, len(calls))
    q = CommandQueue(clock, stats, costs, entries=entries)
    lf = LockFreeCmdq(q, cpus)
    lf.log = []
    returned: list[tuple[int, int, int]] = []    # (cpu, sync slot, time the CPU went on)

    def stream(num: int):
        def run() -> None:
            for at, n, sync in calls[num]:
                clock.idle_until(at)
                batch = [(TLBI, n)] if n else []
                last = lf.issue_cmdlist(batch + ([(SYNC, 1)] if sync else []), sync)
                if sync and wait:
                    q.wait_for(last)                 # arm_smmu_cmdq_poll_until_sync
                    returned.append((num, last, clock.now))
        return run

    cpus.run([stream(i) for i in range(len(calls))])
    return lf.log, returned, q, stats


def by_call(log: list[Insertion]) -> list[Insertion]:
    return sorted(log, key=lambda e: (e.cpu, e.start))


calls_st = st.lists(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 6), st.booleans())
             .filter(lambda c: c[1] or c[2]), min_size=1, max_size=4)
    .map(lambda cs: sorted(cs, key=lambda c: c[0])),
    min_size=2, max_size=6)


@settings(max_examples=150, deadline=None)
@given(calls_st)
def test_slot_ownership_matches_the_reference(calls: list[list[Call]]) -> None:
    costs = Costs()
    log, _, _, _ = optimised(calls, costs)
    ref = reference(calls, costs.cmd_write_ns, costs.mmio_write_ns)
    assert by_call(log) == by_call(ref)


@settings(max_examples=100, deadline=None)
@given(calls_st, st.sampled_from([8, 16, 1 << 20]))
def test_every_command_completes_and_no_cpu_runs_ahead_of_its_sync(
        calls: list[list[Call]], entries: int) -> None:
    """Conservation, with the driver's CMD_SYNC polling and a small ring (queue-full
    stalls in ``arm_smmu_cmdq_poll_until_not_full``)."""
    log, returned, q, _ = optimised(calls, Costs(), wait=True, entries=entries)
    # conservation: every claimed slot is published, exactly once, in owner order
    owners = sorted((e for e in log if e.owner), key=lambda e: e.start)
    assert q.published == q.prod == sum(n + s for cs in calls for _, n, s in cs)
    assert [e.published_at for e in owners] == sorted(e.published_at for e in owners)
    claims = sorted(log, key=lambda e: e.start)
    assert all(a.end == b.start for a, b in zip(claims, claims[1:]))
    # no CPU goes on before its own CMD_SYNC has completed
    for _, last, t in returned:
        assert q.consumed_at(t) > last
    q.clock.idle_until(q.hw_free)
    assert q.consumed_at(q.clock.now) == q.prod
    assert len(returned) == sum(s for cs in calls for _, _, s in cs)


# ---- exact cases ------------------------------------------------------------------------

def test_two_cpus_at_once_share_one_doorbell() -> None:
    """Both claim at t=0; CPU 0 owns, gathers CPU 1's slots too (its flag was still set
    when CPU 1's cmpxchg ran) and writes PROD once: 1 doorbell for 2 + 2 commands."""
    log, _, _, stats = optimised([[(0, 1, True)], [(0, 1, True)]], Costs())
    assert [(e.cpu, e.start, e.end, e.owner) for e in by_call(log)] == [
        (0, 0, 2, True), (1, 2, 4, False)]
    assert stats["doorbells"] == 1
    # CPU 0 writes 2 (20 ns); its doorbell (100 ns) publishes both at 120 ns
    assert [e.published_at for e in log if e.owner] == [120]


def test_late_cpu_becomes_the_next_owner() -> None:
    """CPU 0 writes 3 TLBI + SYNC (40 ns) and clears OWNED at 40 ns. CPU 1 arriving at 35 ns
    still finds OWNED set and is gathered into CPU 0's batch; arriving at 45 ns it owns the
    next batch and waits for CPU 0's owner_prod (140 ns) before its own doorbell."""
    log, _, _, stats = optimised([[(0, 3, True)], [(35, 1, True)]], Costs())
    assert [(e.cpu, e.owner) for e in by_call(log)] == [(0, True), (1, False)]
    assert stats["doorbells"] == 1
    log, _, _, stats = optimised([[(0, 3, True)], [(45, 1, True)]], Costs())
    assert [(e.cpu, e.owner) for e in by_call(log)] == [(0, True), (1, True)]
    assert stats["doorbells"] == 2
    assert [e.published_at for e in by_call(log)] == [140, 240]


def test_one_cpu_is_always_the_owner() -> None:
    """With one CPU every call owns its own batch: the single-CPU v5.4 path."""
    log, _, _, stats = optimised([[(0, 2, False), (10, 0, True), (500, 64, True)]], Costs())
    assert all(e.owner for e in log) and stats["doorbells"] == 3


def test_reference_detects_a_wrong_owner() -> None:
    """The comparison can fail: a model that made every CPU an owner would differ."""
    calls = [[(0, 1, True)], [(0, 1, True)]]
    ref = reference(calls, 10, 100)
    wrong = [Insertion(e.cpu, e.start, e.end, True, e.published_at) for e in ref]
    assert by_call(wrong) != by_call(ref)


@pytest.mark.parametrize("n", [2, 8])
def test_many_cpus_gather_behind_one_owner(n: int) -> None:
    """n CPUs at t=0, one TLBI + CMD_SYNC each: one owner, one doorbell, n syncs."""
    log, returned, _, stats = optimised([[(0, 1, True)] for _ in range(n)], Costs(), wait=True)
    assert sum(e.owner for e in log) == 1 and stats["doorbells"] == 1
    assert len(returned) == n

"""The op memo (iommu_lab.memo) leaves every object exactly as stepping each op does.

Each workload runs twice, memo on and memo off, and the two sessions are compared object
by object: every attribute reachable from the session (page tables, queues and their
command runs, IOTLBs, locks, counters, the clock, gathers, the flush queue, the trace),
not only the counters a test happens to know about.
"""

from __future__ import annotations

import enum
import types
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iommu_lab as il
from iommu_lab import memo as memo_mod
from iommu_lab.analysis.callers import CALLERS
from iommu_lab.analysis.compare import row
from iommu_lab.analysis.session import Session
from iommu_lab.hw.cmdq import TRIM_STEP, CommandQueue
from iommu_lab.hw.commands import INV
from iommu_lab.inputs.ops import Op
from iommu_lab.memo import GIVE_UP, MEMO_KINDS, Plan
from iommu_lab.stats import Stats, add_replayed, note_replay

SIZES = (0x1000, 0x2000, 0x4000, 0x10000, 0x200000)
WINDOW = 0x800000        # 8 MiB of IOVA: maps and unmaps meet, tables get shared
SKIP = frozenset({"memo", "_slot_geometry"})   # the memo itself and its geometry cache


def deep(obj: Any, path: str = "s", out: dict[str, Any] | None = None,
         seen: dict[int, Any] | None = None) -> dict[str, Any]:
    """Every scalar reachable from ``obj``, by attribute path (numpy arrays by content).
    ``seen`` keeps each visited object alive, so a temporary view's id is never reused."""
    out = {} if out is None else out
    seen = {} if seen is None else seen
    if isinstance(obj, (int, float, str, bytes, type(None), enum.Enum)):
        out[path] = obj
    elif isinstance(obj, np.ndarray):
        out[path] = obj.tobytes()
    elif isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType,
                          type, types.ModuleType)) or id(obj) in seen:
        pass
    elif isinstance(obj, dict):
        seen[id(obj)] = obj
        out[path + "#"] = len(obj)
        for k, v in obj.items():
            deep(v, f"{path}[{k!r}]", out, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ == "deque":
        if not isinstance(obj, (tuple, frozenset)):   # values: shared or not, compare all
            seen[id(obj)] = obj
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else list(obj)
        out[path + "#"] = len(items)
        for i, v in enumerate(items):
            deep(v, f"{path}[{i}]", out, seen)
    elif isinstance(obj, CommandQueue):
        seen[id(obj)] = obj
        for name, value in queue_view(obj).items():
            deep(value, f"{path}.{name}", out, seen)
    else:
        seen[id(obj)] = obj
        for name in field_names(obj):
            if name not in SKIP and hasattr(obj, name):
                deep(getattr(obj, name), f"{path}.{name}", out, seen)
    return out


FIELDS = (types.MemberDescriptorType, types.GetSetDescriptorType)


def field_names(obj: Any) -> list[str]:
    """``obj``'s fields: its ``__dict__`` and ``__slots__``, and, for a class compiled as
    an extension type (a ``.pxd`` declares its fields: iommu_lab.native), those fields,
    which have neither (their descriptors are in the class)."""
    names = list(getattr(obj, "__dict__", {}))
    for c in type(obj).__mro__:
        names += getattr(c, "__slots__", ())
        if c.__module__.startswith("iommu_lab."):     # not a Cython function's own
            names += [n for n, v in vars(c).items() if isinstance(v, FIELDS)
                      and not n.startswith("__")]
    return list(dict.fromkeys(names))


def queue_view(q: CommandQueue) -> dict[str, Any]:
    """The queue's fields, with the runs limited to those whose slots are still in the
    ring: older runs are a log the queue prunes in batches, and where a batch is cut may
    differ between the two paths while nothing the queue shows does (slots, pointers,
    completion times). ``_head`` is given as the position it points at, the tally as it
    reads (the replays' counts added: ``CommandQueue.tally``)."""
    runs = q.runs           # the memo's replays made into runs first
    fields = {k: getattr(q, k) for k in field_names(q) if k not in (
        "_runs", "_head", "_tally", "_replayed", "_replays", "_lazy_n", "_trim_at")}
    live = [r for r in runs if r.pos + r.count > q.prod - q.entries]
    head = q.runs[q._head].pos if q._head < len(q.runs) else q.prod
    return {**fields, "tally": q.tally, "runs": live, "_head_pos": head, "slots": q.slots(),
            "state": q.state()}


def twice(strategy: str, caller: str, ops: list[Op], memo: type | None = None,
          **params: Any) -> tuple[Session, Session]:
    """The workload run memo on, then memo off (lenient, as a replay runs it); ``memo``:
    the memo-on session's memo class (a checking subclass of ``OpMemo``)."""
    params = {"trace_limit": 0, "compact": False, **params}
    on = Session(strategy, caller, {**params, "memo": True}, lenient=True)
    if memo is not None:
        on.memo = memo(on)
    off = Session(strategy, caller, {**params, "memo": False}, lenient=True)
    for s in (on, off):
        s.run(ops)
    return on, off


def assert_same(on: Session, off: Session) -> None:
    a, b = deep(on), deep(off)
    # the walk reached the fields of the extension types too (compiled: no __dict__); the
    # path it first meets the clock by depends on the order of the domain's fields
    reached = {k.rpartition(".")[0].rpartition(".")[2] + "." + k.rpartition(".")[2]
               for k in a}
    assert "s.items" in a and {"clock.now", "pgtable.generation", "cpus.current"} <= reached
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    assert not diff, f"{len(diff)} differences, first: {diff[:8]}"
    assert {**row(on), "memo_items": 0} == row(off)
    assert on.op_errors == off.op_errors


@st.composite
def workloads(draw: Any) -> list[Op]:
    """Maps, unmaps (some of unmapped or partly mapped regions), a few device accesses
    and idle gaps, over a small IOVA window so they meet."""
    ops = []
    for _ in range(draw(st.integers(20, 120))):
        size = draw(st.sampled_from(SIZES))
        iova = draw(st.integers(0, WINDOW // size - 1)) * size + 0x40000000
        kind = draw(st.sampled_from(("map", "map", "unmap", "unmap", "unmap", "access",
                                     "advance")))
        if kind == "map":
            paddr = draw(st.integers(1, 1 << 20)) * draw(st.sampled_from((0x1000, size)))
            ops.append(Op("map", iova, size, paddr))
        elif kind == "unmap":
            ops.append(Op("unmap", iova, size))
        elif kind == "access" and draw(st.integers(0, 3)) == 0:
            ops.append(Op("access", iova + draw(st.integers(0, size // 0x1000 - 1)) * 0x1000))
        elif kind == "advance":
            ops.append(Op("advance", ns=draw(st.integers(1, 20_000_000))))
    return ops


@pytest.mark.parametrize("strategy", list(il.STRATEGIES))
@settings(max_examples=40, deadline=None)
@given(caller=st.sampled_from(list(CALLERS)), ops=workloads())
def test_memo_equals_stepping(strategy, caller, ops):
    on, off = twice(strategy, caller, ops)
    assert_same(on, off)
    assert off.memo.hits == 0


HARDWARE = ({"iommus": 2}, {"ats": True}, {"iotlb_entries": 4, "walk_cache_entries": 0},
            {"cmdq_entries": 32, "costs": {"hw_tlbi_ns": 400}},
            {"cmdq_entries": 128, "costs": {"hw_tlbi_ns": 400}}, {"cache_non_present": True})


def hardware(strategy: str) -> list[dict[str, Any]]:
    """The settings of :data:`HARDWARE` the strategy's driver accepts (an SMMUv3 domain has
    one SMMU; ATS on SMMUv3 arrived in v5.2; a ring must hold a batch and its sync)."""
    ok = []
    for params in HARDWARE:
        try:
            il.iommu_domain_alloc(strategy, **params)
        except il.IommuError:
            continue
        ok.append(params)
    return ok


@pytest.mark.parametrize("strategy", ["smmuv3-v4.14", "smmuv3-v5.4", "smmuv3-ril", "vtd-psi",
                                      "amd-range", "virtio-iommu"])
@settings(max_examples=15, deadline=None)
@given(caller=st.sampled_from(list(CALLERS)), data=st.data(), ops=workloads())
def test_memo_equals_stepping_on_other_hardware(strategy, caller, data, ops):
    # two IOMMUs (two queues), a device TLB, a tiny IOTLB, a small slow ring, negative
    # entries: still the same objects either way
    params = data.draw(st.sampled_from(hardware(strategy)))
    on, off = twice(strategy, caller, ops, **params)
    assert_same(on, off)


def test_replayed_counts_are_added_once_per_plan_when_read():
    # Stats.memo_apply counts a plan's change; a copy (stats(), snapshot) adds it first.
    stats = Stats()
    delta = (("inv_cmds", 1), ("cpu_ns", 840))
    for _ in range(1000):
        stats.memo_apply(delta)
    assert stats["inv_cmds"] == 0                    # counted, not added yet
    assert stats()["inv_cmds"] == 1000 and stats["cpu_ns"] == 840_000
    assert stats.snapshot() == stats()               # added once: nothing left to add


def test_a_replay_under_a_reused_id_adds_the_old_entry_first():
    # Replays are counted by the delta's identity (note_replay): an entry left under the
    # same id by another delta (a copy made from a snapshot) is added before it is reused.
    counts = {"inv_cmds": 0, "cpu_ns": 0}
    old, new = (("inv_cmds", 1),), (("cpu_ns", 840),)
    replayed = {id(new): [old, 3]}
    note_replay(counts, replayed, new)
    note_replay(counts, replayed, new)
    assert counts == {"inv_cmds": 3, "cpu_ns": 0} and replayed == {id(new): [new, 2]}
    add_replayed(counts, replayed)
    assert counts == {"inv_cmds": 3, "cpu_ns": 1680} and not replayed


@pytest.mark.parametrize("strategy", ["vtd-psi", "smmuv3-v5.4"])
def test_replayed_commands_become_runs_only_when_read(strategy):
    # 3,000 single-page unmaps write 6,000 commands (QI_IOTLB_PSI + QI_IWD per page on
    # vtd-psi, intel-iommu.c @v5.4 iommu_flush_iotlb_psi; CMD_TLBI_NH_VA + CMD_SYNC on
    # smmuv3-v5.4, arm-smmu-v3.c @v5.4 arm_smmu_tlb_inv_range): several times the ring
    # (256 / 1024 entries). Replayed, they stay replays, at most a ring's worth and
    # TRIM_STEP more; read, they are the runs stepping leaves, slot for slot.
    n = 3000
    ops = [Op("map", 0x100000, 0x1000, 1 << 32, count=n, stride=0x1000, paddr_stride=0x1000)]
    ops += [Op("unmap", 0x100000 + i * 0x1000, 0x1000) for i in range(n)]
    on, off = twice(strategy, "unmap-each", ops)
    q_on, q_off = on.memo.queues[0], off.memo.queues[0]
    assert on.memo.hits >= n - 10 and q_on.prod == q_off.prod == 2 * n
    assert 0 < q_on.lazy_runs <= q_on.entries + TRIM_STEP
    assert q_on.slots() == q_off.slots() and q_on.state() == q_off.state()
    assert q_on.lazy_runs == 0                       # read: made into runs
    assert_same(on, off)


@pytest.mark.parametrize("strategy", ["smmuv3-v5.4", "vtd-psi", "amd-range"])
def test_counters_are_complete_whenever_the_session_returns(strategy):
    # Replayed ops add their counters later, but Session.do and Session.run return with
    # every counter (read as a plain dict, settling nothing) and each queue's tally
    # equal to stepping's.
    ops = [Op("map", 0x100000 + i * 0x1000, 0x1000, (1 << 32) + i * 0x1000)
           for i in range(300)]
    ops += [Op("unmap", 0x100000 + i * 0x1000, 0x1000) for i in range(300)]
    on, off = (Session(strategy, "unmap-each", {"trace_limit": 0, "memo": m}) for m in
               (True, False))
    for op in ops:
        on.do(op)
        off.do(op)
        assert dict.items(on.dom.stats) == dict.items(off.dom.stats)
    assert on.memo.hits >= 590
    on.run(ops[:300])
    off.run(ops[:300])
    assert dict.items(on.dom.stats) == dict.items(off.dom.stats)
    for q_on, q_off in zip(on.memo.queues, off.memo.queues):
        assert q_on.tally == q_off.tally and q_on.tally["commands"] == 600


@pytest.mark.parametrize("strategy", list(il.STRATEGIES))
@pytest.mark.parametrize("caller", list(CALLERS))
def test_memo_hits_on_a_teardown(strategy, caller):
    # 2,000 single pages mapped then unmapped one by one: strict callers replay nearly
    # every op after the first few; the rest (batching, lazy, the 2017 API) stay exact.
    ops = [Op("map", 0x100000 + i * 0x1000, 0x1000, (1 << 32) + i * 0x1000)
           for i in range(2000)]
    ops += [Op("unmap", 0x100000 + i * 0x1000, 0x1000) for i in range(2000)]
    on, off = twice(strategy, caller, ops)
    assert_same(on, off)
    assert on.memo.hits >= 1990                      # every map after the first few
    if caller in ("unmap-each", "rfc-2017-wrappers", "dma-strict", "api-calls"):
        assert on.memo.hits >= 3990                  # and every strict unmap
    elif caller == "dma-lazy":
        # every lazy unmap too, but the 7 that find the flush queue full and flush it
        # (2,000 // 255: IOVA_FQ_SIZE 256, fq_full at 255, iova.c @v5.10)
        assert on.memo.hits >= 3980


TOP_PAGE = 0xFFFF_FFFF_FFFF_F000


def fixed_commands(plan: Any) -> list[Any]:
    """The commands of ``plan`` that keep their address wherever it is replayed."""
    return [cmd for q in plan.queues for cmd, shifts, *_ in q.runs
            if not shifts and cmd.kind == INV]


def test_a_command_that_stays_put_is_replayed_where_it_was():
    """amd-range on the 2017 API: every ``iommu_map_sync`` ends in a sync of an empty
    pending range, which ``amd_iommu_iotlb_sync`` turns into an INVALIDATE_IOMMU_PAGES of
    the top page, wherever the map was (start = ULONG_MAX, end = 0: a one-byte flush at
    ULONG_MAX, amd/iommu.c @v5.15 amd_iommu_iotlb_sync + build_inv_address). The map
    plan is confirmed with that command fixed, and a whole-ASID footprint, so it replays
    only while nothing is cached; a device access, then maps (stepped until the unmap of
    the accessed page empties the IOTLB), then maps again (replayed)."""
    page = 0x1000
    ops = [Op("map", 0x100000 + i * page, page, (1 << 32) + i * page) for i in range(40)]
    ops += [Op("access", 0x100000)]
    ops += [Op("map", 0x200000 + i * page, page, (1 << 33) + i * page) for i in range(20)]
    ops += [Op("unmap", 0x100000, page)]
    ops += [Op("map", 0x300000 + i * page, page, (1 << 34) + i * page) for i in range(20)]
    on, off = twice("amd-range", "rfc-2017-wrappers", ops)
    assert_same(on, off)
    maps = [p for k, p in on.memo.plans.items() if k[0] == "map" and p and p.confirmed]
    assert len(maps) == 1 and all(fp.whole for fp in maps[0].footprints)
    assert [c.iova for c in fixed_commands(maps[0])] == [TOP_PAGE]
    assert off.dom.stats()["cmd:INVALIDATE_IOMMU_PAGES"] >= 80      # one per map_sync
    # replayed: 37 of the first 40 maps (the rest recorded it and confirmed it), none of
    # the 20 while the IOTLB holds the accessed page, nor the unmap that drops it, then
    # all of the last 20
    hits = []
    for n in (40, 62, len(ops)):
        s = Session("amd-range", "rfc-2017-wrappers", {"trace_limit": 0, "compact": False},
                    lenient=True)
        s.run(ops[:n])
        hits.append(s.memo.hits)
    assert hits == [37, 37, 57] and on.memo.hits == 57


@pytest.mark.parametrize("strategy", ["smmuv3-v5.4", "vtd-psi", "amd-range"])
def test_a_map_that_allocates_tables_is_replayed(strategy):
    """A map where no leaf table exists yet allocates it, and any missing table above it,
    on its way down (io-pgtable-arm.c @v5.4 __arm_lpae_map: an empty entry gets a table
    from __arm_lpae_alloc_pages, installed by arm_lpae_install_table). A 4 KiB map in
    each of 64 fresh 2 MiB regions of one 1 GiB region allocates one table (the first
    three: L1, L2, L3); one in each of 16 fresh 1 GiB regions, two. 1 + 3 + 63 + 32 = 99
    tables. The memo keys maps by how many tables they allocate and replays all but the
    first of each count and the one that confirms it (5 stepped, 75 replayed), exactly as
    stepping."""
    page = 0x1000
    ops = [Op("map", (1 << 32) + i * (2 << 20), page, (1 << 34) + i * page) for i in range(64)]
    ops += [Op("map", (1 << 36) + i * (1 << 30), page, (1 << 35) + i * page) for i in range(16)]
    on, off = twice(strategy, "unmap-each", ops)
    assert_same(on, off)
    assert len(on.dom.pgtable.tables) == 99
    assert (on.memo.hits, on.memo.misses) == (75, 5)
    assert sorted(k[2][3] for k in on.memo.plans if k[0] == "map") == [1, 2, 3]


def test_memo_gives_up_when_keys_do_not_repeat():
    # one VFIO batch of 520 single-page unmaps, each apart from the last: the batch position
    # (pending_regions) is in every key, so none repeats before the 512th; the memo stops
    # keying ops after GIVE_UP misses, results unchanged
    page = 0x1000
    ops = [Op("map", 0x100000, 0x400000, 1 << 32)]
    ops += [Op("unmap", 0x100000 + 2 * i * page, page) for i in range(520)]
    on, off = twice("smmuv3-v5.4", "unmap-fast-batch", ops)
    assert_same(on, off)
    assert not on.memo.active and on.memo.misses == GIVE_UP and on.memo.hits == 0
    assert row(on)["memo_items"] == on.memo.hits


@pytest.mark.parametrize("strategy", ["smmuv3-v4.20", "smmuv3-v5.4", "vtd-psi", "amd-range"])
def test_memo_replays_lazy_unmaps(strategy):
    # dma-lazy: where an unmap queues its IOVA does not change what it does, only whether
    # the ring is full (then it flushes: stepped) and whether the timer is armed; a map
    # waits only for a queued IOVA it overlaps. 1,500 unmaps, each followed by a map
    # elsewhere: all replayed but the first few and the flushes, which are exactly those
    # of stepping: 1,500 // 255 = 5 full rings (IOVA_FQ_SIZE 256, fq_full, iova.c @v5.10)
    # and the 10 ms timer once, when the session finishes (IOVA_FQ_TIMEOUT).
    page = 0x1000
    ops = [Op("map", 0x100000 + i * page, page, (1 << 32) + i * page) for i in range(8)]
    for i in range(1500):
        ops += [Op("unmap", 0x100000 + i * page, page),
                Op("map", 0x100000 + (i + 8) * page, page, (1 << 32) + i * page)]
    on, off = twice(strategy, "dma-lazy", ops)
    assert_same(on, off)
    assert on.memo.hits >= 2985 and on.memo.active
    stats = on.dom.stats()
    assert (stats["fq_queued"], stats["fq_flushes"], stats["fq_timer_flushes"]) == (1500, 6, 1)


@st.composite
def churn(draw: Any) -> list[Op]:
    """Buffers mapped and unmapped at random among 64 pages: lazy unmaps queue their IOVAs,
    a map of a queued one waits for a flush (_wait_for_reuse), idle gaps let the timer fire,
    device accesses fill the IOTLB."""
    page, base = 0x1000, 0x100000
    mapped = set(range(0, 64, 2))
    ops = [Op("map", base + i * page, page, (1 << 32) + i * page) for i in sorted(mapped)]
    for _ in range(draw(st.integers(50, 400))):
        r = draw(st.integers(0, 99))
        if r < 45 and mapped:
            i = draw(st.sampled_from(sorted(mapped)))
            mapped.discard(i)
            ops.append(Op("unmap", base + i * page, page))
        elif r < 90 and len(mapped) < 64:
            i = draw(st.sampled_from(sorted(set(range(64)) - mapped)))
            mapped.add(i)
            ops.append(Op("map", base + i * page, page, (1 << 33) + i * page))
        elif r < 95:
            ops.append(Op("advance", ns=draw(st.integers(1, 12_000_000))))
        elif mapped:
            ops.append(Op("access", base + draw(st.sampled_from(sorted(mapped))) * page))
    return ops


@pytest.mark.parametrize("strategy", ["smmuv3-v4.20", "smmuv3-v5.4", "vtd-psi", "amd-range"])
@settings(max_examples=20, deadline=None)
@given(ops=churn())
def test_memo_equals_stepping_under_lazy_churn(strategy, ops):
    # the flush queue's key holds no IOVA, so lazy ops replay among full rings, timer
    # flushes and maps that wait for one (60 such runs, run once: 8,598 replayed ops)
    on, off = twice(strategy, "dma-lazy", ops)
    assert_same(on, off)


def _interleaved(n: int) -> list[Op]:
    """A trace's shape: each unmap followed by a map elsewhere (which ends the stretch)."""
    page = 0x1000
    ops = [Op("map", 0x100000 + i * page, page, (1 << 32) + i * page) for i in range(16)]
    for i in range(n):
        ops += [Op("unmap", 0x100000 + i * page, page),
                Op("map", 0x100000 + (i + 16) * page, page, (1 << 32) + i * page)]
    return ops


# The ends of stretches the memo replays, with their strategies: the batched sync
# (callers.sync_batch: iommu_iotlb_sync of the one region the last unmap gathered), the
# 2017 flush-all (callers.end_flush_all), anchored where the 2017 API's pending range
# starts. Not here: SMMUv3 v4.15 / v4.20 and virtio, whose unmaps leave commands or
# requests in flight (a busy queue: stepped), so no end is keyed.
STRETCHES = ([("unmap-fast-batch", s) for s in ("smmuv3-v4.14", "smmuv3-v5.4", "smmuv3-ril",
                                                 "smmuv2", "vtd-psi", "amd-flush-all",
                                                 "amd-range")]
             + [("unmap-then-flush-all", s) for s in ("smmuv3-v4.14", "smmuv3-v5.4",
                                                      "smmuv3-ril", "smmuv2", "vtd-psi",
                                                      "amd-flush-all", "amd-range")])


@pytest.mark.parametrize(("caller", "strategy"), STRETCHES)
def test_memo_replays_the_ends_of_stretches(caller, strategy):
    on, off = twice(strategy, caller, _interleaved(1000))
    assert_same(on, off)
    assert on.memo.end_hits >= 990                 # all but the first few of 1,000 ends
    assert on.memo.hits >= 1990                    # and the maps, the unmaps before them
    assert off.memo.end_hits == off.memo.end_misses == 0


@pytest.mark.parametrize("strategy", ["smmuv3-v5.4", "smmuv3-ril", "amd-range"])
def test_flush_all_and_maps_replay_whatever_came_before(strategy):
    # 300 stretches of 2 or 3 unmaps of pages apart, each ended by a map (so a 2017
    # flush-all first). Each unmap apart from the gathered one syncs it early
    # (iommu_iotlb_gather_add_page, include/linux/iommu.h @v5.4:525-528): one TLBI that no
    # device sees before the flush-all, which counts it wasted, 1 or 2 per stretch
    # (SMMUv3: 150 * 1 + 150 * 2). The ends replay whatever that count, the maps whatever
    # the queue's settle head has yet to pass after them.
    page, base = 0x1000, 0x100000
    ops = [Op("map", base, 0x800000, 1 << 32)]
    at = base
    for i in range(300):
        k = 2 + i % 2
        ops += [Op("unmap", at + 2 * j * page, page) for j in range(k)]
        ops.append(Op("map", 0x40000000 + i * page, page, (1 << 33) + i * page))
        at += 2 * k * page
    on, off = twice(strategy, "unmap-then-flush-all", ops)
    assert_same(on, off)
    assert on.memo.end_hits >= 295 and on.memo.hits >= 1030       # of 300 ends, 1,051 ops
    if strategy.startswith("smmuv3"):
        assert on.dom.stats()["wasted_inv_cmds"] == 450


def test_ends_of_stretches_give_up_apart_from_ops(monkeypatch):
    # stretches of 1, 2, ... 40 adjacent single-page unmaps, each ended by a map: every end
    # syncs a gather of another length (a new key), while the j-th unmap of a stretch is
    # the j-th of every longer one (its key repeats). The ends give up, the ops go on.
    # GIVE_UP is lowered to 20: with 512, the stretches would need 131,000 unmaps.
    monkeypatch.setattr(memo_mod, "GIVE_UP", 20)
    page, base = 0x1000, 0x100000
    ops = [Op("map", base, 0x400000, 1 << 32)]              # 1,024 pages; 860 are used
    at = base
    for k in range(1, 41):
        ops += [Op("unmap", at + j * page, page) for j in range(k)]
        ops.append(Op("map", at, page, (1 << 32) + at))     # ends the stretch
        at += (k + 1) * page
    on, off = twice("smmuv3-v5.4", "unmap-fast-batch", ops)
    assert_same(on, off)
    assert not on.memo.ends_active and on.memo.end_misses == 20 and on.memo.end_hits == 0
    assert on.memo.active and on.memo.hits >= 700 > on.memo.misses


def checking_ready() -> tuple[list[int], type]:
    """A memo class whose ``_ready`` checks each value it takes from the last replay (the
    plan's ``ready``) against the queues and locks asked afresh; the list counts them. (A
    subclass: compiled, ``OpMemo`` is an extension type, which cannot be patched, and its
    own calls to ``_ready`` reach an override.)"""
    taken = [0]

    class CheckingMemo(memo_mod.OpMemo):
        def _ready(self) -> Any:
            expected = self._compute_ready()
            if self._known is not None and self._commands_written() == self._known[1]:
                taken[0] += 1
            got = super()._ready()
            assert got == expected
            return got

    return taken, CheckingMemo


@pytest.mark.parametrize("strategy", ["smmuv3-v5.4", "vtd-psi", "amd-range", "smmuv3-v4.20"])
@settings(max_examples=25, deadline=None)
@given(caller=st.sampled_from(list(CALLERS)), ops=workloads())
def test_what_a_replay_leaves_known_is_what_the_queues_say(strategy, caller, ops):
    # After a replay the next key takes the plan's `ready` instead of asking every queue
    # and lock: between ops come device accesses, idle gaps that fire the flush queue's
    # timer (dma-lazy), steps of ops the memo cannot replay. Each value taken is checked.
    on, off = twice(strategy, caller, ops, memo=checking_ready()[1])
    assert_same(on, off)


@pytest.mark.parametrize(("strategy", "caller"), [
    ("vtd-psi", "unmap-fast-batch"), ("smmuv3-v5.4", "unmap-each"), ("vtd-psi", "dma-lazy"),
    ("amd-range", "rfc-2017-wrappers")])
def test_a_replay_hands_the_next_op_its_ready_state(strategy, caller):
    # 1,000 interleaved stretches: nearly every op after the first few takes the state a
    # replay left (the end of a stretch, then its map; an unmap, then the next), and what
    # it takes is what asking finds
    taken, memo = checking_ready()
    ops = _interleaved(1000)
    on, off = twice(strategy, caller, ops, memo=memo)
    assert_same(on, off)
    assert taken[0] >= on.memo.hits - 20 >= len(ops) - 100


def test_the_caller_may_change_the_domain_between_calls():
    # What a replay leaves known lasts only to the next op of the same run: a caller that
    # turns on fault injection (domain.fail_map_after, which the key checks) right after a
    # replayed map gets the failing map (core/iommu.py: iommu_map's callback fails), from
    # Session.do and from Session.run alike, not a replay.
    page, at = 0x1000, 0x100000 + 216 * 0x1000      # where _interleaved(200) stops
    results = []
    for memo in (True, False):
        s = Session("smmuv3-v5.4", "unmap-each", {"trace_limit": 0, "memo": memo},
                    lenient=True)
        s.run(_interleaved(200))
        replayed = []
        for i, call in enumerate((s.do, s.do, s.do, None, s.do, s.do, None, s.run)):
            if call is None:
                s.dom.fail_map_after = 0
                continue
            hits = s.memo.hits
            op = Op("map", at + i * page, page, 1 << 32)
            call([op] if call == s.run else op)
            replayed.append(s.memo.hits - hits)
        results.append((s.op_errors, replayed))
    assert results[0][0] == results[1][0] and len(results[0][0]) == 2   # each injected fails
    assert results[0][1] == [0, 0, 1, 0, 1, 0]      # a replay right before each injection
    assert results[1][1] == [0] * 6


def test_a_stretch_ended_by_the_caller_is_stepped_when_it_must_be():
    # Session.end_stretch from outside a run (a notebook ends the batch itself) after a
    # replayed unmap_fast: the caller started recording a trace in between, so the sync
    # (arm_smmu_iotlb_sync, arm-smmu-v3.c @v5.4) is stepped and recorded, not replayed.
    events = []
    for memo in (True, False):
        s = Session("smmuv3-v5.4", "unmap-fast-batch", {"trace_limit": 0, "memo": memo},
                    lenient=True)
        ops = _interleaved(204)          # the last 4 stretches op by op (Session.do)
        s.run(ops[:-8])
        for op in ops[-8:-2]:
            s.do(op)
        hits, ends = s.memo.hits, s.memo.end_hits
        s.do(ops[-2])
        s.dom.trace.limit = 1000
        s.end_stretch()
        events.append((s.memo.hits - hits, len(s.dom.trace), s.memo.end_hits - ends))
    assert events[0][0] == 1                                 # the unmap: replayed
    assert events[0][1:] == events[1][1:] and events[0][1] > 0 and events[0][2] == 0


def test_a_flush_queue_timer_between_ops_is_noticed():
    # dma-lazy with the trace's timestamps 1 ms apart: the 10 ms flush-queue timer fires
    # between ops (fq_advance in Session._do, dma-iommu.c @v5.4 fq_flush_timeout), writing
    # a flush-all after the last replay: the next key asks the queues again.
    taken, memo = checking_ready()
    ops = [replace(op, at_ns=i * 1_000_000) for i, op in enumerate(_interleaved(300))]
    on, off = twice("vtd-psi", "dma-lazy", ops, memo=memo)
    assert_same(on, off)
    assert on.dom.stats()["fq_timer_flushes"] >= 50 and taken[0] >= 300


@pytest.mark.parametrize(("caller", "changed", "untouched"), [
    ("unmap-fast-batch", 0, 1), ("unmap-then-flush-all", 1, 0)])
def test_a_plan_restores_only_the_gather_its_op_changed(caller, changed, untouched):
    # Session.memo_caller_change. On smmuv3-v5.4 an unmap_fast gathers into the caller's
    # own gather (arm_smmu_unmap -> io-pgtable's tlb_add_page, arm-smmu-v3.c @v5.4) and
    # leaves the 2017 API's pending range alone; the 2017 iommu_unmap adds to the pending
    # range and leaves the caller's gather empty. The plan holds None for the one left
    # alone, and a replay does not touch it.
    on, off = twice("smmuv3-v5.4", caller, _interleaved(100))
    assert_same(on, off)
    unmaps = [p.caller for k, p in on.memo.plans.items() if k[0] == "unmap" and p]
    assert unmaps and all(c[changed] is not None and c[untouched] is None for c in unmaps)


@pytest.mark.parametrize(("strategy", "writes"), [
    ("vtd-psi", "unmap"), ("smmuv3-v5.4", "end"), ("amd-range", "end")])
def test_a_replay_skips_the_queue_an_op_left_alone(strategy, writes):
    # Under unmap-fast-batch a map writes no command on these drivers (a map only writes
    # PTEs), and of an unmap and the sync ending its stretch one writes the invalidation:
    # vtd-psi's unmap flushes its own range (intel-iommu.c @v5.4 intel_iommu_unmap ->
    # iommu_flush_iotlb_psi), SMMUv3 and AMD gather it and flush in iommu_iotlb_sync
    # (arm-smmu-v3.c @v5.4 arm_smmu_iotlb_sync; amd/iommu.c @v5.15 amd_iommu_iotlb_sync).
    # The queue deltas of the others say they change nothing, and a replay skips them.
    on, off = twice(strategy, "unmap-fast-batch", _interleaved(300))
    assert_same(on, off)
    changes = {k[0]: {d.changes for d in p.queues} for k, p in on.memo.plans.items() if p}
    assert changes == {"map": {False}, "unmap": {writes == "unmap"},
                       "end": {writes == "end"}}


def test_memo_off_while_a_trace_is_recorded():
    ops = [Op("map", 0x100000 + i * 0x1000, 0x1000, 1 << 32) for i in range(100)]
    s = Session("smmuv3-v5.4", "unmap-each")          # the trace records 200,000 events
    s.run(ops)
    assert s.memo.hits == 0 and len(s.dom.trace) > 0


def test_memo_kinds_are_op_kinds():
    from iommu_lab.analysis.session import OP_KINDS

    assert MEMO_KINDS <= set(OP_KINDS)


def test_layering_the_model_never_imports_the_memo():
    # The memo sits between the kernel mirror and the analysis layer: the objects it
    # replays own their memo_* methods and never import it; it imports no analysis, view
    # or ui code (it reaches the caller's state through the session it is given).
    import ast
    from pathlib import Path

    def imports(path: Path) -> set[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        return ({n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
                | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                   for a in n.names})

    pkg = Path(il.__file__).parent
    for sub in ("hw", "io_pgtable", "core", "drivers"):
        for path in (pkg / sub).rglob("*.py"):
            assert not {m for m in imports(path) if m.split(".")[-1] == "memo"}, path
    assert imports(pkg / "memo.py") <= {"__future__", "collections.abc", "dataclasses",
                                        "operator", "typing", "hw.iommu_hw",
                                        "io_pgtable.arm", "plain"}


@pytest.mark.usefixtures("clean_registry")
def test_user_strategies_are_stepped():
    # A user's driver may keep state no signature or key sees (here: every third sync is
    # a flush-all). Compact runs and the memo would repeat the first outcome; so neither
    # runs for user-defined strategies, and the counts are the stepped ones.
    class EveryThird(il.driver_class("smmuv3-v5.4")):
        syncs = 0

        def iotlb_sync(self, dom, gather):
            self.syncs += 1
            if self.syncs % 3 == 0:
                return self.tlb_flush_all()
            return super().iotlb_sync(dom, gather)

    il.register_strategy("every-third", EveryThird)
    ops = [Op("map", 0x100000, 0x1000, 1 << 32, count=600, stride=0x1000, paddr_stride=0x1000),
           Op("unmap", 0x100000, 0x1000, count=600, stride=0x1000)]
    s = Session("every-third", "unmap-each", {"trace_limit": 0})
    s.run(ops)
    assert not s.dom.compact and not s.dom.memo
    assert s.compacted_items == 0 and s.memo.hits == 0
    assert s.dom.stats()["inv_all_cmds"] == 200        # 600 syncs, every third a flush-all


def test_a_plan_compares_hashes_and_prints_by_its_fields():
    """A plan is a value (a plain class, compiled into an extension type): equal plans are
    those with equal fields, ``_replace`` makes another, and it prints every field."""
    plan = Plan(7, (("inv_cmds", 1),), (), (), 0, 0, 0x1000, ())
    moved = plan._replace(iova=0x2000)
    assert moved == Plan(7, (("inv_cmds", 1),), (), (), 0, 0, 0x2000, ()) != plan
    assert (moved.iova, plan.iova, moved.dt) == (0x2000, 0x1000, 7)
    assert hash(plan._replace(iova=0x2000)) == hash(moved)
    assert plan != (7, (("inv_cmds", 1),), (), (), 0, 0, 0x1000, ())
    assert repr(plan) == ("Plan(dt=7, stats=(('inv_cmds', 1),), queues=(), locks=(), "
                          "dropped=0, generation=0, iova=4096, footprints=(), caller=None, "
                          "fq=None, confirmed=False, ready=())")

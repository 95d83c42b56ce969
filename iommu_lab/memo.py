"""The op memo: a single map or unmap whose outcome the engine has computed before.

Replaying a trace or a random workload steps each op through every layer (the caller
pattern, the core, the driver, io-pgtable, the command queue, the IOMMU): some ninety
Python calls per unmap. Yet in the usual state — one CPU, idle queues, free locks, no
trace being recorded — what a map or unmap does depends only on its kind and size (and a
map's prot and paddr alignment), the PTE slots it covers (and, for a map, how many tables
it must allocate on the way: ``_table_for`` gives a new one the same entry whichever op
allocates it), and a few small pieces of state:
the queues' pending-invalidation counts, the caller's own state relative to the op's IOVA
(its gather, the 2017 API's pending range, its batch position, a flush-all owed) and what
of the DMA flush queue an op can see (is the ring full, the timer armed, a queued IOVA in a
map's way: not where the entries are). That is the op's *key*. An op may leave the caller's
state changed (an ``iommu_unmap_fast`` gathers its range, a 2017 ``iommu_unmap`` adds to
the pending range, a lazy unmap queues its IOVA): the plan then holds that change,
relative to the IOVA, and a replay makes it.

The end of a stretch of unmaps (the batched ``iommu_iotlb_sync`` before a map, the 2017
flush-all) is memoised the same way (:meth:`OpMemo.stretch`), anchored where the gathered
range (or the 2017 pending range) starts instead of at an IOVA: a trace under a batching
caller syncs before nearly every map. Ends of stretches keep their own hit and miss counts,
and give up apart.

The first op with a key is stepped through the layers while the memo records what it
changed: the clock, the counters, the commands written (positions and times relative to
the op's start, addresses relative to its IOVA), the locks, the trace's drop count, the
page-table generation. A later op with the same key at the same IOVA applies that *plan*
directly and writes its PTEs. At another IOVA it is stepped once more: only if that
outcome is the first with every command address moved by the IOVA difference is the plan
confirmed for every IOVA (a command at a fixed address gives the key up).

An op is stepped, never replayed, when its key cannot be formed (several CPUs, a paused
queue, a trace being recorded, leaves missing or in the way, a block above), when
its plan changed something the memo does not replay (a maximum counter, a note, a gather
left non-empty, a busy queue), or when a cached translation could notice: one in the
op's range, or one the plan's commands would drop. Plans are recorded only with empty
IOTLBs, walk caches and ATCs, so they hold no cache effects.

A hit's counter changes are counted per plan and added once per plan later
(:meth:`Stats.memo_settle <iommu_lab.stats.Stats.memo_settle>`, which ``Session`` calls
before it returns, and the queue's ``tally`` when read): a replay of many ops adds each
counter once per plan instead of once per op.

Counts, times, commands and PTEs are exactly those of stepping: tests run random
workloads under every strategy and caller both ways and compare every object reachable
from the session. Each object owns its part, next to its fields (``memo_key`` /
``memo_mark`` / ``memo_delta`` / ``memo_apply`` on :class:`~iommu_lab.hw.cmdq.CommandQueue`,
:class:`~iommu_lab.core.dma_iommu.FlushQueue`,
:class:`~iommu_lab.stats.Stats` (marked by its ``snapshot``),
:class:`~iommu_lab.hw.cpus.SpinLock`;
:meth:`~iommu_lab.io_pgtable.arm.IoPgtableArm.leaf_slots`,
:meth:`~iommu_lab.hw.iommu_hw.IommuHw.would_change`). ``memo=False`` (a domain parameter)
steps every op.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from .hw.iommu_hw import Footprint
from .io_pgtable.arm import LeafSlots
from .plain import field_repr, field_values, fields_equal

MEMO_KINDS = frozenset({"map", "unmap"})
MEMO_LIMIT = 4096        # distinct keys kept; past it, new keys are stepped (memory bound)
GIVE_UP = 512            # after this many misses with fewer hits, stop keying ops: their
#                          keys do not repeat (a VFIO batch: its position is in each key)
UNMEMOISABLE = None      # a key whose op changed something the memo cannot replay
PLAN_FIELDS = ("dt", "stats", "queues", "locks", "dropped", "generation", "iova", "footprints",
               "caller", "fq", "confirmed", "ready")


class Plan:
    """What one op (or a caller's end of a stretch) changed, relative to its start time and
    its *anchor*: an op's IOVA, or the start of the range a sync flushes. A value: nothing
    changes a plan once made (:meth:`_replace` makes another). A plain class (its fields in
    :meth:`__init__`), so that the compiled build makes it an extension type with read-only
    fields (``memo.pxd``): a replay reads a dozen of them."""

    def __init__(self, dt: int, stats: tuple[tuple[str, int], ...], queues: tuple[Any, ...],
                 locks: tuple[Any, ...], dropped: int, generation: int, iova: int,
                 footprints: tuple[Footprint, ...], caller: Hashable | None = None,
                 fq: Any = None, confirmed: bool = False, ready: tuple[Hashable, ...] = ()
                 ) -> None:
        self.dt = dt                    # clock advance
        self.stats = stats              # counter deltas
        self.queues = queues            # CommandQueue.memo_delta, per queue
        self.locks = locks              # SpinLock.memo_delta, per lock
        self.dropped = dropped          # trace records dropped
        self.generation = generation    # page-table generation bumps
        self.iova = iova                # the anchor of the op it was recorded from
        self.footprints = footprints    # per IOMMU, relative to the anchor
        self.caller = caller            # what changed of the caller's state
        #                                 (Session.memo_caller_change)
        self.fq = fq                    # FlushQueue.memo_delta: IOVAs it queued
        self.confirmed = confirmed      # seen again elsewhere, commands moved along
        self.ready = ready              # OpMemo._ready() as the op left the domain

    def _replace(self, **changes: Any) -> Plan:
        """This plan with ``changes`` (field name -> value)."""
        return Plan(**{**dict(zip(PLAN_FIELDS, field_values(self, PLAN_FIELDS))), **changes})

    def __eq__(self, other: object) -> bool:
        return fields_equal(self, other, PLAN_FIELDS)

    def __hash__(self) -> int:
        return hash(field_values(self, PLAN_FIELDS))

    def __repr__(self) -> str:
        return field_repr(self, PLAN_FIELDS)

    def confirmed_by(self, other: Plan) -> Plan | None:
        """This plan, confirmed, if ``other`` (recorded at another anchor) is it with its
        commands moved along, or left where they were (then they stay put at every
        anchor); else None. A whole-domain invalidation counts the invalidations before it
        that no device saw as wasted: that count is the queue's to add, so it is left out
        here. With a command that stays put, the footprints are the whole ASID: they are
        relative to the anchor, which that command's address is not (a replay then waits
        for empty caches: :meth:`OpMemo._touches`)."""
        if (self._replace(queues=(), iova=0, footprints=(), stats=self._own_stats())
                != other._replace(queues=(), iova=0, footprints=(), stats=other._own_stats())):
            return None
        queues = tuple(a.moves_with(b) for a, b in zip(self.queues, other.queues))
        if None in queues:
            return None
        footprints = self.footprints
        if any(q.fixed() for q in queues):
            footprints = tuple(fp._replace(whole=True) for fp in footprints)
        return self._replace(queues=queues, footprints=footprints, confirmed=True)

    def _own_stats(self) -> tuple[tuple[str, int], ...]:
        """The counter deltas without the wasted invalidations the queues found before."""
        found = sum(d.unobserved0 for d in self.queues if d.resets)
        if not found:
            return self.stats
        return tuple((name, n - found if name == "wasted_inv_cmds" else n)
                     for name, n in self.stats if name != "wasted_inv_cmds" or n != found)


class OpMemo:
    """One session's memo: keys -> plans, and the hit / miss counts."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.dom = dom = session.dom
        self.pairs = [(q, hw) for hw in dom.iommus for q in hw.queues]  # fixed at attach
        self.queues = [q for q, _ in self.pairs]
        self.plans: dict[Hashable, Plan | None] = {}
        self.hits = 0                 # ops replayed
        self.misses = 0               # ops stepped and recorded
        self.active = True            # False once keys have proved not to repeat
        self.end_hits = 0             # the same for the ends of stretches (stretch())
        self.end_misses = 0
        self.ends_active = True
        # (what _ready() would find right after the last replay: its plan's ``ready``,
        # the commands written then: the queues' PROD summed, each only grows): the next
        # op's key takes it instead of asking every queue and lock again, if no command
        # was written since (a flush-queue timer between ops) and nothing else ran
        # (Session.do and Session.run begin with forget())
        self._known: tuple[tuple[Hashable, ...], int] | None = None

    def do(self, op: Any, handler: Callable[[Any, Any], Any]) -> Any:
        """Run ``handler(session, op)``, or apply the plan recorded for the op's key."""
        kind = op.kind
        if not self.active or kind not in MEMO_KINDS:
            self._known = None        # stepped without a key: the domain may change
            return handler(self.session, op)
        found = self.key(op)
        if found is None:
            return handler(self.session, op)
        key, slots, tables = found
        plan = self.plans.get(key, False)
        iova = op.iova
        if plan is False or (plan is not UNMEMOISABLE and not plan.confirmed
                             and iova != plan.iova):
            return self._record_op(key, op, handler, plan or None)
        if plan is UNMEMOISABLE or self._touches(plan, iova):
            return handler(self.session, op)
        self._apply(plan, iova)
        if kind == "map":
            slots.write(op.paddr, op.prot, tables)
        else:
            slots.clear()
        self.hits += 1
        return None

    def _record_op(self, key: Hashable, op: Any, handler: Callable[[Any, Any], Any],
                   first: Plan | None) -> Any:
        """:meth:`_record` an op (a function of its own: a compiled ``do`` cannot hold
        closures (its ``.pxd`` makes it a C method), and with them it would make their
        cell on every call, hits too)."""
        return self._record(key, op.iova, op.size, lambda: handler(self.session, op),
                            lambda: self._written(op), first)

    def _record_end(self, key: Hashable, anchor: int, end: Callable[[Any], Any],
                    first: Plan | None) -> None:
        """:meth:`_record` the end of a stretch (its closures kept out of :meth:`stretch`,
        as :meth:`_record_op` keeps an op's out of :meth:`do`)."""
        s = self.session
        self._record(key, anchor, 0, lambda: end(s), lambda: True, first, ends=True)

    def stretch(self, end: Callable[[Any], Any]) -> None:
        """The caller's ``end(session)`` of a stretch of unmaps (a batched sync, a flush-all),
        or the plan recorded for it: keyed by the caller's state relative to where its
        gathered range starts, the queues and the context, like an op."""
        s = self.session
        anchor = s.memo_anchor()
        if self.ends_active:
            queues = self._ready()
        else:
            queues = self._known = None   # stepped below: the domain may change
        caller = None if queues is None else s.memo_caller(anchor)
        context = UNMEMOISABLE if caller is None else self._context(anchor, 0)
        if context is UNMEMOISABLE:     # a state the memo does not cover
            end(s)
            return
        key = ("end", caller, queues, context)
        plan = self.plans.get(key, False)
        if plan is False or (plan is not UNMEMOISABLE and not plan.confirmed
                             and anchor != plan.iova):
            self._record_end(key, anchor, end, plan or None)
        elif plan is UNMEMOISABLE or plan.generation or self._touches(plan, anchor):
            end(s)      # a sync that freed tables (their PTEs are not in the plan) is stepped
        else:
            self._apply(plan, anchor)
            self.end_hits += 1

    # ---- the key: everything the op's outcome depends on --------------------------------
    def key(self, op: Any) -> tuple[Hashable, LeafSlots, tuple[int, ...]] | None:
        """The op's key, the PTE slots it takes and (a map) which of them hold an empty
        table; or None when the op or the state is not one the memo covers."""
        queues = self._ready()
        if queues is None:
            return None
        dom = self.dom
        pt = dom.pgtable
        kind, iova, size = op.kind, op.iova, op.size     # each read once
        is_map = kind == "map"
        slots = pt.leaf_slots(iova, size, dom.pgsize_bitmap, is_map)
        if slots is None:
            return None
        if not is_map:
            if not slots.mapped():
                return None
            tables: tuple[int, ...] | None = ()
            shape: tuple[Any, ...] = ()
        else:
            paddr = op.paddr
            if paddr & (slots.leaf - 1) or (paddr + size - 1) >> pt.cfg.oas:
                return None
            tables = slots.free_for_map()
            if tables is None:
                return None
            # iommu_pgsize picks page sizes by the alignment of the paddr too; a map into
            # a table not there yet allocates it (and those above it) first
            shape = (op.prot, min(size, paddr & -paddr or size), tables, slots.missing)
        caller = self.session.memo_caller(iova)
        context = self._context(iova, size if is_map else 0)
        if caller is None or context is UNMEMOISABLE:
            return None
        return (kind, size, shape, slots.leaf, queues, caller, context), slots, tables

    def _context(self, iova: int, size: int) -> Hashable:
        """The flush queue's part of the key (:meth:`FlushQueue.memo_key`; () without one),
        or :data:`UNMEMOISABLE` when it has entries to free or a flush in flight. ``size``:
        what a map would take (0: an unmap or the end of a stretch, which takes nothing)."""
        fq = self.dom.fq
        if fq is None:
            return ()
        return fq.memo_key(iova, size)

    def forget(self) -> None:
        """Drop what the last replay left known (:meth:`_ready`): code outside the op loop
        (the stepper, a notebook) may change the domain before the next op."""
        self._known = None

    def _commands_written(self) -> int:
        """Commands ever written to the domain's queues (grows with every one)."""
        total = 0
        for q in self.queues:
            total += q.prod
        return total

    def _ready(self) -> tuple[Hashable, ...] | None:
        """The queues' keys if the domain is in a state the memo covers (one CPU, idle
        queues, free locks, no trace being recorded, no fault injection), else None.
        Right after a replay (nothing stepped since: every stepped path calls this before
        it steps, which uses the value up) that is the plan's ``ready``, exactly: a replay
        leaves each queue, lock and flag as the recorded op left them."""
        known = self._known
        if known is not None:
            self._known = None
            if self._commands_written() == known[1]:
                return known[0]
        return self._compute_ready()

    def _compute_ready(self) -> tuple[Hashable, ...] | None:
        """:meth:`_ready`, asked of every queue and lock."""
        dom = self.dom
        if (not dom.memo or dom.cpus.n != 1 or dom.fail_map_after is not None
                or dom.trace.recording()):
            return None
        queues = tuple([q.memo_key() for q in self.queues])
        if None in queues:
            return None
        for lock in dom.cpus.locks:
            if not lock.memo_ready():
                return None
        return queues

    def _caches_empty(self) -> bool:
        for hw in self.dom.iommus:
            if not hw.caches_empty():
                return False
        return True

    def _touches(self, plan: Plan, anchor: int) -> bool:
        """Would replaying ``plan`` at ``anchor`` meet a cached translation: one in the op's
        range (an unmap marks it stale) or one its commands would drop? Then the op is
        stepped: what it does to the caches and their counters is not in the plan."""
        dom, footprints = self.dom, plan.footprints
        asid, iommus = dom.asid, dom.iommus
        for i in range(len(footprints)):     # an index loop: compiled, zip() is a call
            hw = iommus[i]                   # (typed in memo.pxd: a C call)
            if hw.would_change(asid, footprints[i], anchor):
                return True
        return False

    def _footprints(self, size: int, qdeltas: list[Any]) -> tuple[Footprint, ...]:
        """Per IOMMU, what the commands could drop, relative to the anchor (with the op's
        own ``size`` bytes there, which an unmap marks stale)."""
        out = []
        for hw in self.dom.iommus:
            cmds = [c for (q, qhw), d in zip(self.pairs, qdeltas) if qhw is hw
                    for c in q.memo_commands(d, 0)]
            out.append(hw.footprint(cmds, 0, size))
        return tuple(out)

    def _written(self, op: Any) -> bool:
        """Did the stepped op leave its slots as a replay writes them?"""
        dom = self.dom
        slots = dom.pgtable.leaf_slots(op.iova, op.size, dom.pgsize_bitmap)
        return slots is not None and (slots.holds(op.paddr, op.prot) if op.kind == "map"
                                      else slots.empty())

    # ---- a miss: step it, record what changed -------------------------------------------
    def _record(self, key: Hashable, anchor: int, size: int, run: Callable[[], Any],
                written: Callable[[], bool], first: Plan | None = None,
                ends: bool = False) -> Any:
        """``run()`` and record its plan at ``anchor``; with ``first`` (recorded at another
        anchor), confirm that plan if this one is it moved along, else give the key up.
        ``ends``: an end of a stretch (counted apart: ops and stretch ends give up apart)."""
        dom, s = self.dom, self.session
        if not self._caches_empty():  # a plan holds no cache effects: record without any
            return run()
        queues = self.queues
        t0, gen0, dropped0 = dom.clock.now, dom.pgtable.generation, dom.trace.dropped
        notes0 = len(dom.notes)
        stats0 = dom.stats.snapshot()
        qmarks = [q.memo_mark() for q in queues]
        lmarks = [lock.memo_mark() for lock in dom.cpus.locks]
        caller0 = s.memo_caller(anchor)
        fq = dom.fq
        fq_mark = None if fq is None else fq.memo_mark()
        result = run()                # raises: nothing recorded (bad input, lenient replay)
        if ends:
            self.end_misses += 1
            self.ends_active = not (self.end_misses >= GIVE_UP
                                    and self.end_misses > self.end_hits)
        else:
            self.misses += 1
            self.active = not (self.misses >= GIVE_UP and self.misses > self.hits)
        if len(self.plans) >= MEMO_LIMIT:
            return result
        plan = None
        stats = dom.stats.memo_delta(stats0)
        qdeltas = [q.memo_delta(m, t0, anchor) for q, m in zip(queues, qmarks)]
        caller = s.memo_caller(anchor)
        fq_delta = None if fq is None else fq.memo_delta(fq_mark, t0, anchor)
        ready = self._compute_ready()
        if (stats is not None and caller is not None and written() and None not in qdeltas
                and len(dom.notes) == notes0 and (fq is None or fq_delta is not None)
                and ready is not None and self._caches_empty()):
            locks = tuple(lock.memo_delta(m, t0) for lock, m in zip(dom.cpus.locks, lmarks))
            plan = Plan(dom.clock.now - t0, stats, tuple(qdeltas),
                        locks if any(d is not None for d in locks) else (),
                        dom.trace.dropped - dropped0, dom.pgtable.generation - gen0, anchor,
                        self._footprints(size, qdeltas), s.memo_caller_change(caller0, caller),
                        fq_delta if fq_delta and (fq_delta.queued or fq_delta.deadline is not None)
                        else None, ready=ready)
        if first is not None:
            plan = (plan and first.confirmed_by(plan)) or UNMEMOISABLE
        self.plans[key] = plan
        return result

    # ---- a hit: apply the plan ------------------------------------------------------
    def _apply(self, plan: Plan, anchor: int) -> None:
        """Everything but the PTEs (the caller writes those)."""
        dom = self.dom
        t0 = dom.clock.now
        dom.clock.now = t0 + plan.dt
        dom.stats.memo_apply(plan.stats)
        queues, deltas = self.queues, plan.queues
        written = 0
        for i in range(len(deltas)):        # index loops: compiled, zip() is a call
            q, delta = queues[i], deltas[i]
            if delta.changes:
                q.memo_apply(delta, t0, anchor)
            written += q.prod
        locks = plan.locks
        if locks:
            held = dom.cpus.locks
            for i in range(len(locks)):
                held[i].memo_apply(locks[i], t0)
        if plan.dropped:
            dom.trace.dropped += plan.dropped
        if plan.generation:
            dom.pgtable.generation += plan.generation
        if plan.caller is not None:
            self.session.memo_set_caller(plan.caller, anchor)
        if plan.fq is not None:
            fq = dom.fq                     # typed in memo.pxd: a C call
            fq.memo_apply(plan.fq, t0, anchor)
        self._known = (plan.ready, written)

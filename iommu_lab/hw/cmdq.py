"""The invalidation queue: a ring of 16-byte slots consumed asynchronously by the IOMMU.

One model serves three interfaces (hardware-invalidation.md §0.1):

- ``ring``: SMMUv3 cmdq / VT-d QI / AMD command buffer. PROD is written by the CPU (one
  MMIO doorbell per submission), CONS advanced by the hardware. SMMUv3 uses the wrap-bit
  rule (``Q_IDX``/``Q_WRP``: all N slots usable); VT-d and AMD keep one slot free.
- ``registers``: SMMUv2. No ring: every TLBI is its own MMIO register write (counted as a
  doorbell), processed asynchronously; TLBSYNC is a write followed by TLBSTATUS polling.
- ``virtqueue``: virtio-iommu. Requests are added to the virtqueue; a kick (doorbell) hands
  them to the host; the guest then waits for all of them (``viommu_sync_req``).

Commands are kept as *runs* (a template plus a count), so a 512-page invalidation is one
record, with exact per-command completion times (start + (k+1) * cost).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple

from ..compact import Shift
from ..stats import Stats, add_replayed
from .clock import Clock
from .commands import ATC_INV, INV, INV_ALL, KINDS, OPCODES, STAY_PUT, SYNC, Command
from .costs import Costs

RING, REGISTERS, VIRTQUEUE = "ring", "registers", "virtqueue"
_RUN_POS = attrgetter("pos")   # a run's position, the bisect key (C-level: no Python call)

Effect = Callable[[Command, int, int], None]
EFFECT_KINDS = frozenset({INV, INV_ALL, ATC_INV})   # commands that change what is cached


@dataclass(slots=True)
class CmdRun:
    """``count`` commands from one template occupying positions ``pos .. pos+count-1``."""

    cmd: Command
    count: int
    pos: int
    cost: int
    start: int | None = None  # hardware start of the first command; None while pending
    applied: int = 0          # commands whose effect (IOTLB invalidation) has been applied
    kind: str = field(kw_only=True)  # ``cmd.kind``, looked up once (tested per settle)

    @property
    def end(self) -> int:
        """One past the last position."""
        return self.pos + self.count

    def finish(self, k: int) -> int:
        """Completion time of command ``k`` (0-based) of this run."""
        assert self.start is not None
        return self.start + (k + 1) * self.cost

    def done_by(self, t: int) -> int:
        """How many of this run's commands have completed at time ``t``."""
        if self.start is None or t < self.start:
            return 0
        if self.cost == 0:
            return self.count
        return min(self.count, (t - self.start) // self.cost)


STATES = ("empty", "written", "pending", "consumed", "completed")
"""A slot's life: never written; written but not published by a doorbell; published, not
yet executed; executed (CONS passed it) but no later completion has finished, so the CPU
cannot know; executed and followed by a finished CMD_SYNC / wait (or it *is* one)."""


class Slot(NamedTuple):
    """One ring slot's command: its position (PROD count when written), index, wrap bit."""

    pos: int
    slot: int
    wrap: int
    cmd: Command
    state: str


class QueueState(NamedTuple):
    """The queue's pointers at time ``t`` (CONS as a count; registers with wrap bits)."""

    t: int
    entries: int
    capacity: int
    prod: int
    published: int
    cons: int
    pending: int
    unpublished: int
    last_completed_sync: int
    paused: bool
    style: str
    doorbell_reg: str
    cons_reg: str
    registers: dict[str, int]


class QueueDelta(NamedTuple):
    """What one memoised op did to a queue (:meth:`CommandQueue.memo_delta`)."""

    per: int                 # commands written (PROD advance)
    hw_free: int | None      # the IOMMU's free time after the op, relative to its start
    tally: tuple[tuple[str, int], ...]
    runs: tuple[tuple[Command, bool, int, int, int, int, int, str], ...]  # relative CmdRuns
    #        (template, moves with the IOVA, count, position, cost, start, applied, kind)
    iova: int                # the op's IOVA the commands' addresses are relative to
    after: tuple[int, bool, bool]   # pending-invalidation counts after the op
    unobserved0: int         # unobserved invalidations before the recorded op
    resets: bool             # it invalidated the whole domain (resetting them)
    unobserved: int          # ... and after it
    lag: int                 # runs applied but not yet passed by the settle head

    def moves_with(self, other: QueueDelta) -> QueueDelta | None:
        """Is ``other`` (the same kind of op at another IOVA) this delta with every command
        address moved by the IOVA difference, or left where it was? Only then may it be
        replayed elsewhere: this delta, its commands that stayed put marked not to move
        (an address the op does not choose: amd-range's sync of an empty gather flushes
        the top page, ``amd_iommu_iotlb_sync`` @v5.15), else None."""
        shift = other.iova - self.iova
        if len(self.runs) != len(other.runs):
            return None
        if not shift:                       # the same IOVA: nothing tells fixed from moved
            return self if self.runs == other.runs and self._same_effects(other) else None
        runs = []
        for (cmd, shifts, *rest), (theirs, _, *their_rest) in zip(self.runs, other.runs):
            if rest != their_rest:
                return None
            if shifts and cmd == theirs:
                shifts = False              # the same address at both: a fixed one
            elif (cmd.shifted(shift) if shifts else cmd) != theirs:
                return None
            runs.append((cmd, shifts, *rest))
        return self._replace(runs=tuple(runs)) if self._same_effects(other) else None

    def fixed(self) -> bool:
        """Does a command of this delta keep its address wherever the op is replayed?"""
        return any(not shifts and kind not in STAY_PUT
                   for _, shifts, *_, kind in self.runs)

    def _same_effects(self, other: QueueDelta) -> bool:
        """Everything but the commands' addresses and the unobserved counts agrees, and
        the op added as many unobserved invalidations (or reset them to the same count)."""
        return (self._replace(runs=(), iova=0, unobserved0=0, unobserved=0)
                == other._replace(runs=(), iova=0, unobserved0=0, unobserved=0)
                and (self.resets or self.unobserved - self.unobserved0
                     == other.unobserved - other.unobserved0)
                and (not self.resets or self.unobserved == other.unobserved))


TALLY = ("commands", "inv", "syncs", "atc_inv", "doorbells", "waits")
TALLY_KIND = {INV: "inv", INV_ALL: "inv", SYNC: "syncs", ATC_INV: "atc_inv"}
CMD_KEYS = {name: "cmd:" + name for name in OPCODES}   # the Stats key counting each command


def batch_size(batch: list[tuple[Command, int]]) -> int:
    """How many commands a batch of (command, count) holds."""
    total = 0
    for _, n in batch:
        total += n
    return total


class CommandQueue:
    """A command ring with producer stalls, doorbells and asynchronous consumption."""

    def __init__(self, clock: Clock, stats: Stats, costs: Costs, *, entries: int = 256,
                 style: str = RING, keep_free: int = 0, doorbell: str = "CMDQ_PROD",
                 cons: str = "CMDQ_CONS", effect: Effect | None = None) -> None:
        self.clock, self.stats, self.costs = clock, stats, costs
        self.entries, self.style, self.doorbell_reg, self.cons_reg = entries, style, doorbell, cons
        self.capacity = entries - keep_free
        self.effect = effect
        self.prod = 0            # commands ever written (PROD without the wrap)
        self.published = 0       # commands made visible by a doorbell
        self.hw_free = 0         # when the IOMMU finishes everything scheduled so far
        self.runs: list[CmdRun] = []
        self.paused = False      # stepper mode: the IOMMU consumes only when told to
        self.inv_since_sync = 0  # invalidations not yet covered by a completion
        self.inv_all_since_sync = False
        self.req_since_sync = False
        self.unobserved = 0      # invalidations issued since the device last used the IOMMU
        self.trace: object | None = None  # a Trace to record IOMMU busy spans in
        self.lane = "IOMMU"      # the trace lane of the IOMMU that consumes this queue
        self._tally = dict.fromkeys(TALLY, 0)  # this queue's own counts (read: tally)
        self._replayed: dict[tuple[tuple[str, int], ...], int] = {}  # memo_apply's, pending
        self._head = 0           # index of the first run whose effects are not all applied
        self.kind_cost = {kind: self._cmd_cost(kind) for kind in KINDS}  # ns per command

    @property
    def tally(self) -> dict[str, int]:
        """This queue's own counts (per-IOMMU views: commands, invalidations, syncs,
        doorbells, waits), with the op memo's replays added (:meth:`memo_apply` counts them
        per plan; they are added here, once per plan, when someone looks)."""
        if self._replayed:
            add_replayed(self._tally, self._replayed)
        return self._tally

    # ---- producer side (CPU) -------------------------------------------------
    def submit(self, batch: list[tuple[Command, int]]) -> int:
        """Write ``batch`` (command templates with counts), ring the doorbell once.

        Returns the position of the last command written. Mirrors one
        ``arm_smmu_cmdq_issue_cmdlist`` / ``qi_submit_sync`` / ``iommu_queue_command``.
        """
        if self.style == REGISTERS:
            return self._submit_registers(batch)
        total = batch_size(batch)
        if total > self.capacity:
            raise ValueError(f"batch of {total} commands exceeds the ring ({self.capacity})")
        self.make_room(total)
        self.write_batch(batch)
        self.publish()
        return self.prod - 1

    def write(self, cmd: Command, n: int = 1) -> None:
        """Write ``n`` commands into the ring without publishing them (no doorbell yet)."""
        self._append(cmd, n)
        self.clock.busy(n * self.costs.cmd_write_ns)

    def write_batch(self, batch: list[tuple[Command, int]]) -> None:
        """:meth:`write` each (command, count) of ``batch`` in order (the CPU's time for
        the stores is charged once, after the last: nothing reads the clock in between)."""
        runs, kind_cost, count = self.runs, self.kind_cost, self._count
        total = 0
        for cmd, n in batch:  # self._append(cmd, n), inline: two runs per strict unmap
            kind = OPCODES[cmd.name][1]   # cmd.kind
            runs.append(CmdRun(cmd, n, self.prod, kind_cost[kind], kind=kind))
            self.prod += n
            count(cmd, kind, n)
            total += n
        ns = total * self.costs.cmd_write_ns
        self.clock.now += ns               # self.clock.busy(ns), inline
        self.stats["cpu_ns"] += ns

    def kick(self) -> None:
        """The doorbell: one MMIO write publishes everything written so far."""
        self.publish()

    def publish(self, upto: int | None = None,
                written: Callable[[], None] | None = None) -> None:
        """The doorbell (one MMIO write of PROD), publishing the slots before ``upto``
        (default: all written so far; the v5.4 owner writes PROD for its gathered batch,
        slots claimed after it wait for the next owner).

        ``written`` runs once the MMIO write has taken its time and before the new PROD is
        visible — a sync point, so no other CPU sees it earlier than it happens."""
        st, ns = self.stats, self.costs.mmio_write_ns
        self.clock.now += ns               # self.clock.busy(ns), inline
        st["cpu_ns"] += ns
        if written is not None:
            written()
        st["doorbells"] += 1
        self._tally["doorbells"] += 1
        self.published = self.prod if upto is None else upto
        if not self.paused:
            self._schedule_until(self.published - 1)

    def make_room(self, n: int) -> None:
        """Stall until ``n`` more slots are free (``queue_full`` / poll until not full)."""
        need = self.prod + n - 1 - self.capacity  # this position must have been consumed
        if need < 0:
            return
        runs = self.runs
        if runs and runs[-1].start is not None and self.hw_free <= self.clock.now:
            return  # every command written has been consumed already: room enough
        t = self._finish_of(need)
        if t > self.clock.now:
            self.stats["cmdq_full_stalls"] += 1
            self.clock.wait_until(t, "wait: queue full")
            self.clock.busy(self.costs.mmio_read_ns)  # re-read CONS from the hardware
            self.stats["mmio_reads"] += 1

    def _submit_registers(self, batch: list[tuple[Command, int]]) -> int:
        """SMMUv2: each command is an MMIO register write that the SMMU starts at once."""
        for cmd, n in batch:
            self._append(cmd, n)
            self.clock.busy(n * self.costs.mmio_write_ns)
            self.stats.add("doorbells", n)
            self._tally["doorbells"] += n
            self.published = self.prod
            self._schedule_published()
        return self.prod - 1

    def _append(self, cmd: Command, n: int) -> None:
        kind = cmd.kind
        self.runs.append(CmdRun(cmd, n, self.prod, self.kind_cost[kind], kind=kind))
        self.prod += n
        self._count(cmd, kind, n)

    def _cmd_cost(self, kind: str) -> int:
        """How long the IOMMU takes to execute one command of ``kind``."""
        if kind == SYNC:
            return self.costs.hw_sync_ns
        if self.style == VIRTQUEUE:
            return self.costs.virtio_request_ns
        if kind == ATC_INV:
            return self.costs.ats_inv_ns
        return self.costs.hw_tlbi_ns

    def _count(self, cmd: Command, kind: str, n: int) -> None:
        st, tally = self.stats, self._tally
        tally["commands"] += n
        tallied = TALLY_KIND.get(kind)
        if tallied:
            tally[tallied] += n
        key = CMD_KEYS.get(cmd.name) or "cmd:" + cmd.name
        st[key] = st.get(key, 0) + n
        if kind == INV:
            st["inv_cmds"] += n
            self.inv_since_sync += n
            self.unobserved += n
        elif kind == INV_ALL:
            st["inv_cmds"] += n
            st["inv_all_cmds"] += n
            st["wasted_inv_cmds"] += self.unobserved
            self.inv_since_sync = self.unobserved = 0
            self.inv_all_since_sync = True
        elif kind == SYNC:
            self.note_completion(n)
        elif kind == ATC_INV:
            st["atc_inv_cmds"] += n
            self.req_since_sync = True
        else:
            st["requests"] += n
            self.req_since_sync = True

    def observed(self) -> None:
        """The device translated through the IOMMU: earlier invalidations were not moot.

        An invalidation is *wasted* when a whole-domain one follows it before any device
        access could have told the two apart (Joerg Roedel's "thousands of unnecessary TLB
        flushes" before a teardown's flush-all; Will Deacon's early TLBIs before one)."""
        self.unobserved = 0

    def note_completion(self, n: int = 1, counter: str = "sync_cmds") -> None:
        """Count a completion (``counter``: a sync command, or ``request_waits`` for a
        virtio-iommu guest waiting on its requests) and whether anything was pending."""
        st = self.stats
        st[counter] += n
        if counter == "sync_cmds" and self.inv_since_sync == 0 and not (
                self.inv_all_since_sync or self.req_since_sync):
            st["needless_sync_cmds"] += n  # e.g. the sync after *map* Will objected to
        self.inv_since_sync = 0
        self.inv_all_since_sync = self.req_since_sync = False

    # ---- completion ----------------------------------------------------------
    def wait_for(self, pos: int, *, poll_ns: int | None = None) -> None:
        """Spin until the command at ``pos`` has completed, then pay one poll read."""
        runs, clock = self.runs, self.clock
        last = runs[-1] if runs else None
        if last is not None and last.start is not None and last.pos <= pos < last.pos + last.count:
            t = last.start + (pos - last.pos + 1) * last.cost   # _finish_of, the usual case
        else:
            t = self._finish_of(pos)
        self._tally["waits"] += 1
        if t > clock.now:
            clock.wait_until(t)
        if poll_ns is None:
            poll_ns = self.costs.mmio_read_ns
            self.stats["mmio_reads"] += 1
        clock.now += poll_ns               # clock.busy(poll_ns), inline
        self.stats["cpu_ns"] += poll_ns
        self.settle(clock.now)

    def completion_time(self, pos: int) -> int:
        """When the command at ``pos`` completes (scheduling it if it is still pending)."""
        return self._finish_of(pos)

    def _finish_of(self, pos: int) -> int:
        """Completion time of position ``pos`` (forcing consumption if it is still pending)."""
        run = self._run_at(pos)
        if run is None:
            return self.clock.now  # long since consumed
        if run.start is None:
            self._schedule_until(pos)
            run = self._run_at(pos)
            assert run is not None and run.start is not None
        return run.start + (pos - run.pos + 1) * run.cost  # run.finish(pos - run.pos)

    def _run_at(self, pos: int) -> CmdRun | None:
        runs = self.runs
        if runs and runs[-1].pos <= pos:  # the usual case: the last command written
            last = runs[-1]
            return last if pos < last.pos + last.count else None
        i = bisect_right(runs, pos, key=_RUN_POS) - 1
        if i >= 0 and pos < runs[i].pos + runs[i].count:
            return runs[i]
        return None

    # ---- consumer side (IOMMU) -----------------------------------------------
    def _schedule_published(self) -> None:
        if not self.paused:
            self._schedule_until(self.published - 1)

    def _schedule_until(self, pos: int) -> None:
        """Start every published, pending command up to ``pos`` (in order, FIFO)."""
        t0 = self.clock.now
        runs = self.runs
        i = len(runs)
        while i > 0 and runs[i - 1].start is None:  # pending runs are a suffix (FIFO)
            i -= 1
        trace = self.trace
        while i < len(runs):
            run = runs[i]
            if run.pos > pos:
                break
            if run.pos + run.count - 1 > pos:  # split: only the first part is consumed now
                head = pos + 1 - run.pos
                runs[i:i + 1] = [CmdRun(run.cmd, head, run.pos, run.cost, kind=run.kind),
                                 CmdRun(run.cmd.at(head), run.count - head, run.pos + head,
                                        run.cost, kind=run.kind)]
                run = runs[i]
            run.start = start = max(self.hw_free, t0)
            busy = run.count * run.cost
            self.hw_free = start + busy
            self.stats["iommu_ns"] += busy
            if trace is not None and trace.wants():
                trace.add(start, self.hw_free, self.lane, run.cmd.name, run.cmd.iova,
                          run.count, run.cmd.describe())
            i += 1
        self._prune()

    def consume(self, n: int = 1) -> int:
        """Let the IOMMU consume ``n`` more commands now (stepper); returns how many it did."""
        pending = [r for r in self.runs if r.start is None and r.pos < self.published]
        first = pending[0].pos if pending else self.published
        last = min(first + n, self.published) - 1
        if last < first:
            return 0
        self._schedule_until(last)
        self.clock.idle_until(self._finish_of(last))
        self.settle(self.clock.now)
        return last - first + 1

    def run_until_idle(self) -> int:
        """Consume everything published; returns how many commands that was."""
        return self.consume(self.published)

    def settle(self, t: int) -> None:
        """Apply the effect of every command completed by ``t`` (IOTLB invalidation)."""
        runs = self.runs
        n, i = len(runs), self._head
        if i == n:
            return  # everything applied already (a device access with an idle queue)
        while i < n and runs[i].applied == runs[i].count:
            i += 1
        self._head = i
        while i < n:
            run = runs[i]
            start = run.start
            if start is None or start > t:
                break
            done = run.count if run.cost == 0 else min(run.count, (t - start) // run.cost)
            if done > run.applied:  # run.done_by(t), inline: settle runs twice per op
                if self.effect is not None and run.kind in EFFECT_KINDS:
                    self.effect(run.cmd, run.applied, done)
                run.applied = done
            i += 1

    def _prune(self) -> None:
        """Forget runs that are consumed, applied, and overwritten in the ring."""
        self.settle(self.clock.now)
        self._drop_overwritten()

    def _drop_overwritten(self) -> None:
        """:meth:`_prune` without settling first (the op memo's replays leave every run
        applied already: it keys only ops that begin and end with the queue idle)."""
        keep_from = self.prod - self.entries
        runs = self.runs
        if not runs:
            return
        probe = runs[min(65, len(runs) - 1)]    # runs are in order: if this one cannot go,
        if (probe.pos + probe.count > keep_from or probe.start is None
                or probe.applied < probe.count):
            return                               # fewer than 66 can, and 65 are kept anyway
        i = 0
        for run in runs:
            if run.pos + run.count > keep_from or run.start is None or run.applied < run.count:
                break
            i += 1
        if i > 64 or (i and i == len(self.runs)):
            del self.runs[:i]
            self._head = max(0, self._head - i)

    # ---- observation ---------------------------------------------------------
    def consumed_at(self, t: int) -> int:
        """CONS as a count: commands completed by time ``t``."""
        cons = self.prod
        for run in self.runs:
            done = run.done_by(t)
            if done < run.count:
                return run.pos + done
        return cons

    # ---- compact runs (iommu_lab.compact) ---------------------------------------------
    def signature(self, next_iova: int = 0) -> tuple:
        """Timing state relative to the CPU clock: the hardware backlog, the live runs."""
        now = self.clock.now
        live = []
        for r in reversed(self.runs):  # finish times grow with position (FIFO)
            if r.start is None:
                continue
            if r.start + r.count * r.cost <= now:
                break
            live.append((r.kind, r.count, r.pos - self.prod, r.start - now, r.cost))
        return (max(0, self.hw_free - now), tuple(live), self.inv_since_sync > 0,
                self.inv_all_since_sync, self.req_since_sync, self.prod - self.published,
                self.unobserved > 0)

    def mark(self) -> tuple[int, int, int, dict[str, int]]:
        """PROD, the pending-invalidation counts and the tally, to extrapolate from."""
        return self.prod, self.inv_since_sync, self.unobserved, dict(self.tally)

    def repeat(self, mark: tuple[int, int, int, dict[str, int]], reps: int,
               shift: Shift) -> None:
        """``reps`` more periods: the new commands are copies of the last period's, ``k``
        periods on (positions, times, addresses); copies that left the ring long ago are
        not materialised. Earlier runs stay where they are: they were issued already."""
        prod0, inv0, unobserved0, tally0 = mark
        tally = self.tally
        for name, before in tally0.items():
            tally[name] += (tally[name] - before) * reps
        per = self.prod - prod0
        self.inv_since_sync += (self.inv_since_sync - inv0) * reps
        self.unobserved += (self.unobserved - unobserved0) * reps
        self.hw_free += shift.dt
        if not per:
            return
        template = [r for r in self.runs if r.pos >= prod0]
        if any(r.start is None for r in template):
            self._shift_all(per * reps, shift)  # unpublished work: the period moves as a whole
            return
        dt, diova = shift.dt // reps, shift.diova // reps
        first = max(1, reps - -(-self.entries // per))  # older copies: out of the ring, done
        for k in range(first, reps + 1):
            self.runs += [CmdRun(r.cmd.shifted(k * diova), r.count, r.pos + k * per, r.cost,
                                 r.start + k * dt, kind=r.kind)
                          for r in template if r.start is not None]
        self.prod += per * reps
        self.published += per * reps
        self._prune()

    def _shift_all(self, dp: int, shift: Shift) -> None:
        """Relabel every run ``dp`` positions (and ``shift.dt``) on: the ring then looks
        as it would, as long as its whole history belongs to the repeating period."""
        for run in self.runs:
            run.cmd = run.cmd.shifted(shift.diova)
            run.pos += dp
            if run.start is not None:
                run.start += shift.dt
        self.prod += dp
        self.published += dp

    # ---- the op memo (iommu_lab.memo) ---------------------------------------------------
    def memo_key(self) -> tuple[int, bool, bool, bool, int] | None:
        """The counts an op's commands depend on, if the queue is idle (everything written
        is published, executed and applied, so nothing older can delay or change what an
        op writes now); else None. How many invalidations went unobserved matters only
        to a whole-domain invalidation, which counts them as wasted: memo_apply adds the
        difference. The last item is how many applied runs the settle head has yet to
        pass: an op that settles nothing leaves it as it was."""
        if self.paused or self.published != self.prod:
            return None
        runs = self.runs
        for i in range(self._head, len(runs)):
            if runs[i].applied != runs[i].count:
                return None
        return (self.inv_since_sync, self.inv_all_since_sync, self.req_since_sync,
                self.unobserved > 0, len(runs) - self._head)

    def memo_mark(self) -> tuple[int, int, int, dict[str, int]]:
        """PROD, the IOMMU's free time, the unobserved invalidations and the tally."""
        return self.prod, self.hw_free, self.unobserved, dict(self.tally)

    def memo_delta(self, mark: tuple[int, int, int, dict[str, int]], t0: int,
                   iova: int) -> QueueDelta | None:
        """What the op that began at ``t0`` (at ``iova``) changed, if it left the queue
        idle: its commands relative to ``t0``, PROD and the IOVA; else None."""
        if self.memo_key() is None:
            return None
        prod0, hw0, unobserved0, tally0 = mark
        runs = self.runs
        new = runs[bisect_left(runs, prod0, key=_RUN_POS):]
        templates = tuple((r.cmd, r.kind not in STAY_PUT, r.count, r.pos - prod0,
                           r.cost, r.start - t0, r.applied, r.kind)
                          for r in new if r.start is not None)
        if len(templates) != len(new):
            return None
        tally = tuple((k, n - tally0.get(k, 0)) for k, n in self.tally.items()
                      if n != tally0.get(k, 0))
        return QueueDelta(self.prod - prod0, None if self.hw_free == hw0 else self.hw_free - t0,
                          tally, templates, iova, (self.inv_since_sync,
                          self.inv_all_since_sync, self.req_since_sync), unobserved0,
                          any(r.kind == INV_ALL for r in new), self.unobserved,
                          len(runs) - self._head)

    def memo_commands(self, delta: QueueDelta, iova: int) -> list[tuple[Command, int]]:
        """The (command, count) runs ``delta`` writes for an op at ``iova``."""
        shift = iova - delta.iova
        return [(cmd.shifted(shift) if shifts and shift else cmd, count)
                for cmd, shifts, count, *_ in delta.runs]

    def memo_apply(self, delta: QueueDelta, t0: int, iova: int) -> None:
        """Write, execute and apply the commands of ``delta`` for an op at ``iova`` that
        began at ``t0`` (the clock already stands at its end)."""
        runs, prod, shift = self.runs, self.prod, iova - delta.iova
        for cmd, shifts, count, dpos, cost, dstart, applied, kind in delta.runs:
            runs.append(CmdRun(cmd.moved(shift) if shifts and shift else cmd, count,
                               prod + dpos, cost, t0 + dstart, applied, kind=kind))
        self.prod = self.published = prod + delta.per
        if delta.hw_free is not None:
            self.hw_free = t0 + delta.hw_free
        if delta.tally:                   # added when the tally is read (tally)
            replayed = self._replayed
            replayed[delta.tally] = replayed.get(delta.tally, 0) + 1
        self.inv_since_sync, self.inv_all_since_sync, self.req_since_sync = delta.after
        if delta.resets:       # a whole-domain invalidation wasted what went unobserved
            self.stats["wasted_inv_cmds"] += self.unobserved - delta.unobserved0
            self.unobserved = delta.unobserved
        else:
            self.unobserved += delta.unobserved - delta.unobserved0
        if delta.runs and len(runs) > 65:   # _prune keeps 65 or fewer runs anyway
            self._drop_overwritten()
        self._head = len(runs) - delta.lag

    def last_completed_sync(self, t: int) -> int:
        """Position of the last completion command finished by ``t`` (-1 if none)."""
        last = -1
        for run in self.runs:
            if run.kind == SYNC:
                done = run.done_by(t)
                if done:
                    last = max(last, run.pos + done - 1)
        return last

    def state(self, t: int | None = None) -> QueueState:
        """A read-only snapshot of the pointers at ``t`` (default: now)."""
        t = self.clock.now if t is None else t
        cons = self.consumed_at(t)
        return QueueState(t, self.entries, self.capacity, self.prod, self.published, cons,
                          self.prod - cons, self.prod - self.published,
                          self.last_completed_sync(t), self.paused, self.style,
                          self.doorbell_reg, self.cons_reg, self.register_values(t))

    def slots(self, t: int | None = None) -> list[Slot]:
        """Every command still in the ring (positions ``prod - entries .. prod - 1``) with
        its state at ``t``: written / pending / consumed / completed (see :data:`STATES`)."""
        t = self.clock.now if t is None else t
        lo = max(0, self.prod - self.entries)
        sync_done = self.last_completed_sync(t)
        out = []
        for run in self.runs:
            if run.end <= lo:
                continue
            done = run.done_by(t)
            for k in range(max(0, lo - run.pos), run.count):
                pos = run.pos + k
                if pos >= self.published:
                    st = "written"
                elif k >= done:
                    st = "pending"
                elif run.kind == SYNC or pos <= sync_done:
                    st = "completed"
                else:
                    st = "consumed"
                out.append(Slot(pos, pos % self.entries, (pos // self.entries) & 1,
                                run.cmd.at(k), st))
        return out

    def register_values(self, t: int) -> dict[str, int]:
        """PROD/CONS as the hardware registers show them (index plus wrap bit, Q_IDX/Q_WRP)."""
        n = self.entries
        cons = self.consumed_at(t)
        return {"prod": self.prod % (2 * n), "cons": cons % (2 * n),
                "prod_idx": self.prod % n, "prod_wrp": (self.prod // n) & 1,
                "cons_idx": cons % n, "cons_wrp": (cons // n) & 1}

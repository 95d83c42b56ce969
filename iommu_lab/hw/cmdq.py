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

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..compact import Shift
from ..stats import Stats
from .clock import Clock
from .commands import INV, INV_ALL, SYNC, Command
from .costs import Costs

RING, REGISTERS, VIRTQUEUE = "ring", "registers", "virtqueue"


def _run_pos(run: CmdRun) -> int:
    return run.pos
Effect = Callable[[Command, int, int], None]


@dataclass(slots=True)
class CmdRun:
    """``count`` commands from one template occupying positions ``pos .. pos+count-1``."""

    cmd: Command
    count: int
    pos: int
    cost: int
    start: int | None = None  # hardware start of the first command; None while pending
    applied: int = 0          # commands whose effect (IOTLB invalidation) has been applied

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
        self._head = 0           # index of the first run whose effects are not all applied

    # ---- producer side (CPU) -------------------------------------------------
    def submit(self, batch: list[tuple[Command, int]]) -> int:
        """Write ``batch`` (command templates with counts), ring the doorbell once.

        Returns the position of the last command written. Mirrors one
        ``arm_smmu_cmdq_issue_cmdlist`` / ``qi_submit_sync`` / ``iommu_queue_command``.
        """
        total = sum(n for _, n in batch)
        if self.style == REGISTERS:
            return self._submit_registers(batch)
        if total > self.capacity:
            raise ValueError(f"batch of {total} commands exceeds the ring ({self.capacity})")
        self._make_room(total)
        for cmd, n in batch:
            self.write(cmd, n)
        self.kick()
        return self.prod - 1

    def write(self, cmd: Command, n: int = 1) -> None:
        """Write ``n`` commands into the ring without publishing them (no doorbell yet)."""
        self._append(cmd, n)
        self.clock.busy(n * self.costs.cmd_write_ns)

    def kick(self) -> None:
        """The doorbell: one MMIO write publishes everything written so far."""
        self._doorbell()

    def _submit_registers(self, batch: list[tuple[Command, int]]) -> int:
        """SMMUv2: each command is an MMIO register write that the SMMU starts at once."""
        for cmd, n in batch:
            self._append(cmd, n)
            self.clock.busy(n * self.costs.mmio_write_ns)
            self.stats.add("doorbells", n)
            self.published = self.prod
            self._schedule_published()
        return self.prod - 1

    def _append(self, cmd: Command, n: int) -> None:
        cost = self.costs.hw_sync_ns if cmd.kind == SYNC else self._cmd_cost(cmd)
        self.runs.append(CmdRun(cmd, n, self.prod, cost))
        self.prod += n
        self._count(cmd, n)

    def _cmd_cost(self, cmd: Command) -> int:
        if self.style == VIRTQUEUE:
            return self.costs.virtio_request_ns
        return self.costs.hw_tlbi_ns

    def _count(self, cmd: Command, n: int) -> None:
        st = self.stats
        st.add("cmd:" + cmd.name, n)
        if cmd.kind in (INV, INV_ALL):
            st["inv_cmds"] += n
            if cmd.kind == INV_ALL:
                st["inv_all_cmds"] += n
                st["wasted_inv_cmds"] += self.unobserved
                self.inv_since_sync = self.unobserved = 0
                self.inv_all_since_sync = True
            else:
                self.inv_since_sync += n
                self.unobserved += n
        elif cmd.kind == SYNC:
            self.note_completion(n)
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

    def _doorbell(self) -> None:
        self.clock.busy(self.costs.mmio_write_ns)
        self.stats["doorbells"] += 1
        self.published = self.prod
        self._schedule_published()

    def _make_room(self, n: int) -> None:
        """Stall while the ring lacks ``n`` free slots (queue_full / poll_until_not_full)."""
        need = self.prod + n - 1 - self.capacity  # this position must have been consumed
        if need < 0:
            return
        t = self._finish_of(need)
        if t > self.clock.now:
            self.stats["cmdq_full_stalls"] += 1
            self.clock.wait_until(t)
            self.clock.busy(self.costs.mmio_read_ns)  # re-read CONS from the hardware
            self.stats["mmio_reads"] += 1

    # ---- completion ----------------------------------------------------------
    def wait_for(self, pos: int, *, poll_ns: int | None = None) -> None:
        """Spin until the command at ``pos`` has completed, then pay one poll read."""
        t = self._finish_of(pos)
        self.clock.wait_until(t)
        if poll_ns is None:
            poll_ns = self.costs.mmio_read_ns
            self.stats["mmio_reads"] += 1
        self.clock.busy(poll_ns)
        self.settle(self.clock.now)

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
        return run.finish(pos - run.pos)

    def _run_at(self, pos: int) -> CmdRun | None:
        i = bisect_right(self.runs, pos, key=_run_pos) - 1
        if i >= 0 and pos < self.runs[i].end:
            return self.runs[i]
        return None

    # ---- consumer side (IOMMU) -----------------------------------------------
    def _schedule_published(self) -> None:
        if not self.paused:
            self._schedule_until(self.published - 1)

    def _schedule_until(self, pos: int) -> None:
        """Start every published, pending command up to ``pos`` (in order, FIFO)."""
        t0 = self.clock.now
        i = len(self.runs)
        while i > 0 and self.runs[i - 1].start is None:  # pending runs are a suffix (FIFO)
            i -= 1
        while i < len(self.runs):
            run = self.runs[i]
            if run.pos > pos:
                break
            if run.end - 1 > pos:  # split: only the first part is consumed now
                head = pos + 1 - run.pos
                self.runs[i:i + 1] = [CmdRun(run.cmd, head, run.pos, run.cost),
                                      CmdRun(run.cmd.at(head), run.count - head, run.pos + head,
                                             run.cost)]
                run = self.runs[i]
            run.start = max(self.hw_free, t0)
            self.hw_free = run.start + run.count * run.cost
            self.stats["iommu_ns"] += run.count * run.cost
            if self.trace is not None:
                self.trace.add(run.start, self.hw_free, "IOMMU", run.cmd.name, run.cmd.iova,
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
        while self._head < len(runs) and runs[self._head].applied == runs[self._head].count:
            self._head += 1
        for run in runs[self._head:]:
            if run.start is None or run.start > t:
                break
            done = run.done_by(t)
            if done > run.applied:
                if self.effect is not None and run.cmd.kind in (INV, INV_ALL):
                    self.effect(run.cmd, run.applied, done)
                run.applied = done

    def _prune(self) -> None:
        """Forget runs that are consumed, applied, and overwritten in the ring."""
        self.settle(self.clock.now)
        keep_from = self.prod - self.entries
        i = 0
        for run in self.runs:
            if run.end > keep_from or run.start is None or run.applied < run.count:
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
            live.append((r.cmd.kind, r.count, r.pos - self.prod, r.start - now, r.cost))
        return (max(0, self.hw_free - now), tuple(live), self.inv_since_sync > 0,
                self.inv_all_since_sync, self.req_since_sync, self.prod - self.published,
                self.unobserved > 0)

    def mark(self) -> tuple[int, int, int]:
        """PROD and the pending-invalidation counts, to extrapolate from."""
        return self.prod, self.inv_since_sync, self.unobserved

    def repeat(self, mark: tuple[int, int, int], reps: int, shift: Shift) -> None:
        """``reps`` more periods: the new commands are copies of the last period's, ``k``
        periods on (positions, times, addresses); copies that left the ring long ago are
        not materialised. Earlier runs stay where they are: they were issued already."""
        prod0, inv0, unobserved0 = mark
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
                                 r.start + k * dt) for r in template if r.start is not None]
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

    def last_completed_sync(self, t: int) -> int:
        """Position of the last completion command finished by ``t`` (-1 if none)."""
        last = -1
        for run in self.runs:
            if run.cmd.kind == SYNC:
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
                elif run.cmd.kind == SYNC or pos <= sync_done:
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

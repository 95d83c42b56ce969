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
            self._append(cmd, n)
            self.clock.busy(n * self.costs.cmd_write_ns)
        self._doorbell()
        return self.prod - 1

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
                st["wasted_inv_cmds"] += self.inv_since_sync
                self.inv_since_sync = 0
                self.inv_all_since_sync = True
            else:
                self.inv_since_sync += n
        elif cmd.kind == SYNC:
            self.note_completion(n)
        else:
            st["requests"] += n
            self.req_since_sync = True

    def note_completion(self, n: int = 1) -> None:
        """Count a completion (sync) and whether anything was pending for it to complete."""
        st = self.stats
        st["sync_cmds"] += n
        if self.inv_since_sync == 0 and not (self.inv_all_since_sync or self.req_since_sync):
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

    def signature(self) -> tuple:
        """Timing state relative to the CPU clock (for the compact path's cycle detection)."""
        now = self.clock.now
        live = []
        for r in reversed(self.runs):  # finish times grow with position (FIFO)
            if r.start is None:
                continue
            if r.start + r.count * r.cost <= now:
                break
            live.append((r.cmd.kind, r.count, r.pos - self.prod, r.start - now, r.cost))
        return (max(0, self.hw_free - now), tuple(live), self.inv_since_sync > 0,
                self.inv_all_since_sync, self.req_since_sync, self.prod - self.published)

    def register_values(self, t: int) -> dict[str, int]:
        """PROD/CONS as the hardware registers show them (index plus wrap bit, Q_IDX/Q_WRP)."""
        n = self.entries
        cons = self.consumed_at(t)
        return {"prod": self.prod % (2 * n), "cons": cons % (2 * n),
                "prod_idx": self.prod % n, "prod_wrp": (self.prod // n) & 1,
                "cons_idx": cons % n, "cons_wrp": (cons // n) & 1}

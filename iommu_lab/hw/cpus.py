"""Several CPUs on one simulated clock, and the locks they spin on.

Each CPU runs its own stream of operations (``Cpus.run``). Only one runs at a time: at
every *sync point* (taking a lock, claiming queue slots, waiting for a completion) the CPU
whose simulated time is earliest goes next (ties: the lower CPU number), so everything that
touches shared state happens in simulated-time order and the result is deterministic. The
shared ``Clock.now`` always holds the running CPU's time; the others' times are saved here.

The streams run as greenlets handing a baton to each other (one per CPU, exactly one
running; a switch is a C-level stack swap, not an OS thread hand-over); that keeps the
kernel mirror ordinary code with a sync point where the kernel has a lock or a wait,
instead of rewriting it as coroutines. With one CPU there is no greenlet and no sync point
does anything.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from greenlet import GreenletExit, greenlet

from ..errors import einval
from ..stats import Stats
from .clock import Clock

MAX_CPUS = 256


class _Abort(BaseException):
    """Thrown into a CPU's greenlet when another CPU failed: unwind quietly."""


@dataclass
class _Cpu:
    num: int
    time: int = 0
    state: str = "runnable"          # runnable | blocked | done
    task: greenlet | None = None     # its stream, only while Cpus.run() runs


class Cpus:
    """``n`` CPUs sharing ``clock``; the running one is :attr:`current`."""

    def __init__(self, clock: Clock, stats: Stats, n: int = 1, cacheline_ns: int = 0) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CPUS:
            raise einval(f"cpus must be an integer in 1 .. {MAX_CPUS}, not {n!r}")
        self.clock, self.stats, self.n = clock, stats, n
        self.cacheline_ns = cacheline_ns
        self.lines: dict[str, int] = {}     # shared cacheline -> the CPU that wrote it last
        self.locks: list[SpinLock] = []     # every SpinLock on these CPUs (the op memo)
        self.current = 0
        self._cpus = [_Cpu(i) for i in range(n)]
        self._error: BaseException | None = None
        self._main: greenlet | None = None   # the scheduler, only inside run()
        self.running = False

    # ---- running streams ---------------------------------------------------------
    def run(self, streams: Sequence[Callable[[], None]]) -> None:
        """Run one stream per CPU concurrently in simulated time; re-raise a failure.

        Each stream runs in its own greenlet; the caller's greenlet is the scheduler a
        stream returns to when it ends (or when every CPU is blocked)."""
        if len(streams) != self.n:
            raise einval(f"{len(streams)} streams for {self.n} CPUs")
        if self.n == 1:
            streams[0]()
            return
        self._main = greenlet.getcurrent()
        for c, stream in zip(self._cpus, streams, strict=True):
            c.time, c.state = self.clock.now, "runnable"
            c.task = greenlet(functools.partial(self._body, c, stream), parent=self._main)
            c.task.switch()     # start it here, at the scheduler's shallow stack depth
        self._error, self.running = None, True
        try:
            self._schedule()
        finally:
            self.running, self._main = False, None
            for c in self._cpus:
                c.task = None
        self.clock.now = max(c.time for c in self._cpus)
        self.current = 0
        if self._error is not None:
            raise self._error

    def _schedule(self) -> None:
        """Start (or resume) the earliest runnable CPU until none is left; then detect a
        deadlock and unwind every CPU still inside its stream."""
        while self._error is None:
            nxt = self._earliest()
            if nxt is None:
                break
            self._switch_to(nxt)
        if self._error is None and any(c.state == "blocked" for c in self._cpus):
            self._error = RuntimeError("every CPU is waiting on another: deadlock")
        for c in self._cpus:
            if c.task is not None and c.task and not c.task.dead:
                c.task.throw(_Abort)            # unwind it quietly (it ends in _body)

    def _body(self, cpu: _Cpu, stream: Callable[[], None]) -> None:
        try:
            # Started by run() only to pin its recursion depth to the scheduler's (a
            # greenlet first started deep inside another CPU's stack would inherit that
            # depth): wait there until the scheduler or another CPU switches here for real.
            self._main.switch()
            if self._error is None:
                stream()
        except _Abort:
            pass
        except GreenletExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - re-raised by run() in the caller
            self._error = self._error or exc
        cpu.time, cpu.state = self.clock.now, "done"
        # returning hands control back to the scheduler (the parent greenlet)

    # ---- scheduling --------------------------------------------------------------
    def _earliest(self) -> _Cpu | None:
        ready = [c for c in self._cpus if c.state == "runnable"]
        return min(ready, key=lambda c: (c.time, c.num)) if ready else None

    def _switch_to(self, cpu: _Cpu) -> None:
        """Run ``cpu`` from its saved time; returns when someone switches back here."""
        self.current = cpu.num
        self.clock.now = cpu.time
        cpu.task.switch()

    def _park(self, me: _Cpu) -> None:
        """Back on CPU ``me`` after a switch: restore its clock (or unwind after a failure)."""
        if self._error is not None:
            raise _Abort
        self.current = me.num
        self.clock.now = me.time

    def sync(self) -> None:
        """A sync point: let every CPU whose time is earlier than ours catch up first."""
        if not self.running:
            return
        me = self._cpus[self.current]
        me.time = self.clock.now
        nxt = self._earliest()
        if nxt is None or nxt is me:
            return
        self._switch_to(nxt)
        self._park(me)

    def block(self) -> None:
        """The running CPU waits for an event another CPU will :meth:`wake` it for."""
        me = self._cpus[self.current]
        me.time, me.state = self.clock.now, "blocked"
        nxt = self._earliest() if self._error is None else None
        if nxt is not None:
            self._switch_to(nxt)
        else:
            self._main.switch()           # nobody can run: the scheduler sees a deadlock
        self._park(me)

    def wake(self, num: int, at: int) -> None:
        """CPU ``num`` may continue, not before time ``at`` (it does not run yet)."""
        c = self._cpus[num]
        c.time, c.state = max(c.time, at), "runnable"

    def touch(self, line: str) -> None:
        """The running CPU writes the shared cacheline ``line`` (a lock word, a queue's
        ``prod``): if another CPU wrote it last, fetching it costs ``cacheline_ns``."""
        last = self.lines.get(line)
        if last is not None and last != self.current:
            self.clock.busy(self.cacheline_ns)
            self.stats["cacheline_ns"] += self.cacheline_ns
        self.lines[line] = self.current

    def time_of(self, num: int) -> int:
        """CPU ``num``'s simulated time (the clock's, if it is the one running)."""
        return self.clock.now if num == self.current else self._cpus[num].time


class SpinLock:
    """A fair (queued) spinlock in simulated time: ``spin_lock`` / ``spin_unlock``.

    Linux's qspinlock hands the lock over in arrival order. A CPU asks at a sync point, so
    every earlier request has been served; if the lock is still busy (``free_at`` lies
    ahead: its holder ran its critical section, which has no sync point, to the end), or
    is held across a sync point, the CPU spins until it is free — counted as
    ``lock_wait_ns`` and ``spin_ns``.
    """

    def __init__(self, cpus: Cpus, name: str) -> None:
        self.cpus, self.name = cpus, name
        self.holder: int | None = None
        self.free_at = 0
        self.waiters: deque[tuple[int, int]] = deque()   # (cpu, time it started spinning)
        cpus.locks.append(self)

    def acquire(self) -> None:
        """Take the lock, spinning (in simulated time) while it is busy."""
        cpus = self.cpus
        if cpus.n == 1 and self.holder is None and self.free_at <= cpus.clock.now:
            # one CPU: no one to wait for, nothing spun, the lock's cacheline already ours
            # (sync, spin(0) and touch below would change nothing)
            self.holder = cpus.current
            cpus.lines[self.name] = cpus.current
            return
        cpus.sync()
        asked = cpus.clock.now
        if self.holder is not None:                  # held across a sync point
            self.waiters.append((cpus.current, asked))
            cpus.block()
        else:
            cpus.clock.now = max(asked, self.free_at)
            self.holder = cpus.current
        cpus.clock.spin(cpus.clock.now - asked, "lock_wait_ns", f"wait: {self.name}")
        cpus.touch(self.name)

    # ---- the op memo (iommu_lab.memo) ---------------------------------------------------
    def memo_ready(self) -> bool:
        """Free, and free since before now (one CPU: taking it costs nothing)."""
        return self.holder is None and not self.waiters and self.free_at <= self.cpus.clock.now

    def memo_mark(self) -> int:
        """When it was last released, before an op."""
        return self.free_at

    def memo_delta(self, mark: int, t0: int) -> int | None:
        """When the op that began at ``t0`` released it, relative to ``t0`` (None: it did
        not take it)."""
        return None if self.free_at == mark else self.free_at - t0

    def memo_apply(self, delta: int | None, t0: int) -> None:
        """Release it where a recorded op did."""
        if delta is not None:
            self.free_at = t0 + delta

    def release(self) -> None:
        """Hand the lock to the longest waiter, or free it from now on."""
        cpus = self.cpus
        self.free_at = cpus.clock.now
        if self.waiters:
            num, _ = self.waiters.popleft()
            self.holder = num
            cpus.wake(num, cpus.clock.now)
        else:
            self.holder = None


class SimEvent:
    """Something CPUs wait for (a batch published, slots marked valid): ``wait()`` blocks
    the running CPU until another one calls ``notify()``; the waiter then re-checks."""

    def __init__(self, cpus: Cpus) -> None:
        self.cpus = cpus
        self.waiters: list[int] = []

    def wait(self) -> None:
        """Block the running CPU until the next :meth:`notify` (at the notifier's time).

        The time it waited is spinning (``spin_ns``), as the kernel's loops spin."""
        if not self.cpus.running:
            raise RuntimeError("waiting for another CPU with only one CPU running")
        asked = self.cpus.clock.now
        self.waiters.append(self.cpus.current)
        self.cpus.block()
        self.cpus.clock.spin(self.cpus.clock.now - asked, label="wait: another CPU")

    def notify(self) -> None:
        """Let every waiter continue from now."""
        now = self.cpus.clock.now
        for num in self.waiters:
            self.cpus.wake(num, now)
        self.waiters.clear()

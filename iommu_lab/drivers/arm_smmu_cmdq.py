"""SMMUv3 command-queue insertion from v5.4: lock-free (``arm_smmu_cmdq_issue_cmdlist``).

Will Deacon, 587e6c10a7ce "iommu/arm-smmu-v3: Reduce contention during command-queue
insertion" (v5.4; hardware-invalidation.md §1.5). Each CPU:

1. *allocates space*: reads ``{prod, cons}``, waits while fewer than ``n`` slots are free,
   and ``cmpxchg``es ``prod + n`` in with ``CMDQ_PROD_OWNED_FLAG`` set; if the flag was
   clear it is the **owner** of the batch that starts at its slots;
2. *writes* its commands (a CMD_SYNC last if it wants to wait) and marks them valid;
3. as owner: waits until the previous owner has published (``owner_prod`` reaches its
   start), clears the flag — every slot claimed up to that moment is its batch — waits
   until all those slots are valid, rings the doorbell **once for everyone's commands**,
   and publishes ``owner_prod``;
4. with a CMD_SYNC: waits for *its own* sync (MSI word or CONS).

One CPU is always the owner and does exactly what the v5.4 single-CPU path does. The
shared/exclusive lock around sync waiters only matters when the queue is full; here a CPU
that finds too few free slots spins until the hardware has consumed enough (counted as a
queue-full stall), which is what ``arm_smmu_cmdq_poll_until_not_full`` achieves.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hw.cmdq import CommandQueue, batch_size
from ..hw.commands import Command
from ..hw.cpus import Cpus, SimEvent

Batch = list[tuple[Command, int]]


@dataclass
class Claim:
    """Slots ``[start, end)`` claimed by ``cpu``; ``valid`` once its commands are written."""

    cpu: int
    start: int
    end: int
    valid: bool = False


@dataclass(frozen=True)
class Insertion:
    """What one ``issue_cmdlist`` call did (for tests and views)."""

    cpu: int
    start: int
    end: int
    owner: bool
    published_at: int | None   # owner only: when its doorbell published the batch


class LockFreeCmdq:
    """The v5.4+ insertion protocol over one :class:`CommandQueue`."""

    def __init__(self, q: CommandQueue, cpus: Cpus) -> None:
        self.q, self.cpus = q, cpus
        self.owned = False           # CMDQ_PROD_OWNED_FLAG in the shared prod
        self.claims: list[Claim] = []
        self.published = SimEvent(cpus)
        self.valid = SimEvent(cpus)
        self.log: list[Insertion] | None = None   # set to [] to record every insertion

    def issue_cmdlist(self, batch: Batch, sync: bool) -> int:
        """Insert ``batch`` (with ``sync``, its last command is the CMD_SYNC to wait for);
        returns its last slot, published by the time this returns if ``sync``."""
        if self.cpus.n == 1:
            return self._issue_alone(batch)
        n = batch_size(batch)
        cpus, q = self.cpus, self.q
        cpus.sync()                                   # 1. allocate space (cmpxchg)
        self._wait_for_space(n)
        cpus.touch("cmdq->q.llq")                      # the cmpxchg pulls the prod word in
        cpus.sync()
        start, owner = q.prod, not self.owned
        self.owned = True
        claim = Claim(cpus.current, start, start + n)
        self.claims.append(claim)
        for cmd, k in batch:                           # 2. write, then mark valid
            q.write(cmd, k)
        cpus.sync()
        claim.valid = True
        self.valid.notify()
        published = self._own(start) if owner else None
        while sync and self.q.published < start + n:   # 4. a sync waits for its batch's owner
            self.published.wait()
        if self.log is not None:
            self.log.append(Insertion(claim.cpu, start, start + n, owner, published))
        return start + n - 1

    def _issue_alone(self, batch: Batch) -> int:
        """One CPU: no one else claims slots, so it owns every batch it starts and steps
        1–4 come down to: wait for space, write, one doorbell (the protocol's own fast
        path; the same counts and times as the general one)."""
        q = self.q
        n = batch_size(batch)
        self._wait_for_space(n)
        start = q.prod
        q.write_batch(batch)
        q.publish(q.prod)
        if self.log is not None:
            self.log.append(Insertion(self.cpus.current, start, start + n, True,
                                      self.cpus.clock.now))
        return start + n - 1

    def _own(self, start: int) -> int:
        """3. The owner gathers everything claimed behind it and rings the doorbell once."""
        while self.q.published < start:               # owner_prod: the previous owner is
            self.published.wait()                     # still gathering or writing PROD
        self.cpus.sync()
        end, self.owned = self.q.prod, False          # clear OWNED: the batch ends here
        while not all(c.valid for c in self.claims if start <= c.start < end):
            self.valid.wait()
        self.q.publish(end, self.cpus.sync)           # owner_prod = end (= PROD written)
        self.claims = [c for c in self.claims if c.start >= end]
        self.published.notify()
        return self.cpus.clock.now

    def _wait_for_space(self, n: int) -> None:
        """``arm_smmu_cmdq_poll_until_not_full``: claimed slots must be consumed first."""
        q = self.q
        while q.prod + n - q.capacity > q.published:   # the slot we need is not published yet
            self.published.wait()
        q.make_room(n)

"""Counters kept per domain: requested work apart from work issued to hardware (DESIGN §5, §9)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

COUNTERS: tuple[str, ...] = (
    # requested work (API level)
    "map_calls", "unmap_calls", "pages_mapped", "pages_unmapped", "bytes_mapped",
    "bytes_unmapped", "sync_calls", "flush_all_calls", "driver_callbacks",
    # work issued to hardware
    "inv_cmds", "inv_all_cmds", "sync_cmds", "doorbells", "mmio_reads", "requests",
    "request_waits", "cmdq_full_stalls", "wasted_inv_cmds", "needless_sync_cmds",
    "needless_inv_cmds", "walk_flushes",
    # IOTLB and device
    "dma_accesses", "iotlb_hits", "iotlb_misses", "walk_cache_hits", "faults", "stale_hits",
    "stale_faults", "over_invalidated", "refill_misses", "max_stale_ns",
    # device TLB (PCIe ATS)
    "atc_inv_cmds", "atc_hits", "atc_stale_hits",
    # DMA layer flush queue (dma-iommu.c)
    "fq_queued", "fq_flushes", "fq_timer_flushes",
    # several CPUs (hw/cpus.py)
    "lock_wait_ns", "spin_ns", "cacheline_ns",
    # time (simulated ns)
    "cpu_ns", "iommu_ns", "device_ns",
)
MAX_COUNTERS = frozenset({"max_stale_ns"})


class Stats(dict[str, int]):
    """A dict of counters (all zero at start); ``cmd:<NAME>`` keys count commands by name."""

    def __init__(self) -> None:
        super().__init__((name, 0) for name in COUNTERS)
        # the op memo's replayed changes not yet added (memo_apply)
        self._replayed: Replayed = {}

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter (created on first use for ``cmd:*`` keys)."""
        self[name] = self.get(name, 0) + n

    def note_max(self, name: str, value: int) -> None:
        """Keep the largest value seen (``max_stale_ns``)."""
        if value > self.get(name, 0):
            self[name] = value

    def __call__(self) -> dict[str, int]:
        """``dom.stats()``: a plain copy of every counter."""
        return self.snapshot()

    def snapshot(self) -> dict[str, int]:
        """A plain copy."""
        self.memo_settle()
        return dict(self)

    # ---- compact runs (iommu_lab.compact) ---------------------------------------------
    def signature(self, next_iova: int) -> None:
        """Counters never decide what happens next."""

    def mark(self) -> dict[str, int]:
        """The counters now, to extrapolate their change from."""
        return self.snapshot()

    def repeat(self, mark: dict[str, int], reps: int, shift: object) -> None:
        """Add ``reps`` more times the change since ``mark``."""
        self.extrapolate(mark, self.snapshot(), reps)

    def extrapolate(self, before: dict[str, int], after: dict[str, int], times: int) -> None:
        """Add ``times`` more repetitions of the change from ``before`` to ``after`` (compact path)."""
        for name in _keys(before, after):
            if name in MAX_COUNTERS:
                continue
            delta = after.get(name, 0) - before.get(name, 0)
            if delta:
                self[name] = self.get(name, 0) + delta * times

    # ---- the op memo (iommu_lab.memo) ---------------------------------------------------
    def memo_delta(self, mark: dict[str, int]) -> tuple[tuple[str, int], ...] | None:
        """The op's change to every counter since ``mark`` (a :meth:`snapshot`; None if it
        moved a maximum, which does not add up)."""
        self.memo_settle()
        out = []
        for name, n in self.items():
            d = n - mark.get(name, 0)
            if d:
                if name in MAX_COUNTERS:
                    return None
                out.append((name, d))
        return tuple(out)

    def memo_apply(self, delta: tuple[tuple[str, int], ...]) -> None:
        """Add a recorded op's change: counted now, added by :meth:`memo_settle`. A run of
        replayed ops then adds each counter once, not once per op. Nothing in the model
        reads a counter that a plan changes (it only adds to them, and a plan changes no
        maximum), and whoever drives the memo settles before handing control back
        (:meth:`Session.do <iommu_lab.analysis.session.Session.do>`, ``Session.run``);
        copies (``stats()``, :meth:`snapshot`) settle first."""
        note_replay(self, self._replayed, delta)

    def memo_settle(self) -> None:
        """Add the replayed changes still pending (their counters exist: the recorded ops
        made them)."""
        if self._replayed:
            add_replayed(self, self._replayed)


Delta = tuple[tuple[str, int], ...]
Replayed = dict[int, list[Any]]
"""A plan's counter deltas replayed and not yet added: ``id(delta) -> [delta, times]``.
Keyed by identity (each plan holds one delta tuple, kept alive by its entry), so a replay
does not hash the delta's dozen pairs."""


def note_replay(counts: dict[str, int], replayed: Replayed, delta: Delta) -> None:
    """One more replay of ``delta`` (added to ``counts`` later: :func:`add_replayed`)."""
    entry = replayed.get(id(delta))
    if entry is not None and entry[0] is delta:
        entry[1] += 1
        return
    if entry is not None:          # the id of a delta copied away (a snapshot): add those
        add_replayed(counts, replayed)
    replayed[id(delta)] = [delta, 1]


def add_replayed(counts: dict[str, int], replayed: Replayed) -> None:
    """Add each change of ``replayed`` to ``counts`` as many times as it was replayed, and
    forget them: the op memo's replays, added once per plan (:meth:`Stats.memo_settle`,
    ``CommandQueue.tally``)."""
    for delta, times in replayed.values():
        for name, d in delta:
            counts[name] += d * times
    replayed.clear()


def _keys(a: dict[str, int], b: dict[str, int]) -> Iterable[str]:
    return set(a) | set(b)

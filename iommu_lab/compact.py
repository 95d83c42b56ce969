"""Compact runs: find a repeating state and apply the remaining whole periods at once.

A run of identical operations (a 16 GiB teardown is 4 Mi of them; a walk invalidation of
1 GiB is 4,096 batches of 64 TLBIs) soon drives the model into a state that repeats
relative to the CPU clock and to the next item's IOVA. Each stateful object owns how it
takes part, next to its fields (the :class:`Periodic` protocol):

- ``signature(next_iova)``: its timing-relevant state relative to now and the next item;
- ``mark()``: what it must remember at a point to extrapolate from there later;
- ``repeat(mark, reps, shift)``: apply ``reps`` more periods of the change since ``mark``;
- optionally ``limit(mark, dt, now)``: the most periods it allows (e.g. before a timer).

This module keeps only the cycle detection and the repetition arithmetic. Counts and times
are exactly those of the step-by-step path (tests compare the two for every strategy).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

SEEN_LIMIT = 5000   # items to watch for a repeating state before giving up on a run


@dataclass(frozen=True)
class Shift:
    """What ``reps`` more periods add: simulated time, IOVA advance, and where from."""

    dt: int
    diova: int
    next_iova: int


class Periodic(Protocol):
    """A stateful object that can take part in a compact run."""

    def signature(self, next_iova: int) -> Hashable: ...
    def mark(self) -> Any: ...
    def repeat(self, mark: Any, reps: int, shift: Shift) -> None: ...


class Timed(Protocol):
    """The clock a compact run reads and moves (``Clock``)."""

    now: int


@dataclass
class Run:
    """``count`` items starting at ``first_iova``, ``stride`` bytes apart.

    ``step(i)`` executes item ``i`` the slow way; ``bulk(i, n)`` applies the page-table
    effect of items ``i .. i+n-1`` at once (the rest of their effect is in the parts);
    ``ready()`` says whether extrapolating from here is exact (e.g. nothing in the IOTLB
    could observe the order, the IOMMU is not paused).
    """

    count: int
    first_iova: int
    stride: int
    step: Callable[[int], None]
    bulk: Callable[[int, int], None]
    ready: Callable[[], bool]


def run_periodic(run: Run, clock: Timed, parts: Sequence[Periodic],
                 progress: Callable[[int], None] | None = None,
                 seen_limit: int = SEEN_LIMIT) -> int:
    """Execute ``run``, skipping whole periods once the parts' state repeats.

    Returns how many items were applied by extrapolation rather than stepped.
    """
    seen: dict[Hashable, tuple[int, list[Any], int]] = {}
    i = skipped = 0
    while i < run.count:
        if len(seen) < seen_limit and run.ready():
            nxt = run.first_iova + i * run.stride
            sig = tuple(p.signature(nxt) for p in parts)
            hit = seen.get(sig)
            if hit is not None:
                n = _extrapolate(run, clock, parts, i, hit, nxt)
                if n:
                    i += n
                    skipped += n
                    seen.clear()
                    if progress is not None:
                        progress(n)
                    continue
            seen[sig] = (i, [p.mark() for p in parts], clock.now)
        run.step(i)
        i += 1
        if progress is not None:
            progress(1)
    return skipped


def _extrapolate(run: Run, clock: Timed, parts: Sequence[Periodic], i: int,
                 hit: tuple[int, list[Any], int], nxt: int) -> int:
    """Apply as many whole periods as fit; returns the items covered (0: none)."""
    j, marks, t = hit
    period, dt = i - j, clock.now - t
    reps = (run.count - i) // period
    for p, m in zip(parts, marks):
        limit = getattr(p, "limit", None)
        if limit is not None:
            reps = min(reps, limit(m, dt, clock.now))
    if reps <= 0:
        return 0
    n = reps * period
    run.bulk(i, n)
    shift = Shift(dt * reps, run.stride * n, nxt)
    for p, m in zip(parts, marks):
        p.repeat(m, reps, shift)
    clock.now += shift.dt
    return n

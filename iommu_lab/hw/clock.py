"""One deterministic simulated clock shared by the CPU, the IOMMU and the device.

The CPU's position is ``now``; the IOMMU's work is scheduled at absolute times on the same
clock, so CPU and hardware advance in parallel and overlap shows up (early issue, §3.4).
Nothing reads the wall clock.
"""

from __future__ import annotations

from collections.abc import Callable

from ..stats import Stats


class Clock:
    """CPU time in integer nanoseconds; busy time is charged to ``stats['cpu_ns']``."""

    def __init__(self, stats: Stats) -> None:
        self.now = 0
        self.stats = stats
        # called as on_spin(t0, t1, label) for every spin-wait, so a view can draw waiting
        # as its own segment (the domain sets it when it keeps a trace)
        self.on_spin: Callable[[int, int, str], None] | None = None

    def busy(self, ns: int) -> None:
        """The CPU works for ``ns``."""
        self.now += ns
        self.stats["cpu_ns"] += ns

    def wait_until(self, t: int, label: str = "wait: completion") -> int:
        """The CPU spins until ``t`` (charged as busy and as ``spin_ns``); returns how long.
        ``label`` names what it waits for (a CMD_SYNC, a free slot) in the timeline."""
        spun = max(0, t - self.now)
        if spun:
            self.now += spun
            self.spin(spun, label=label)
        return spun

    def spin(self, ns: int, why: str = "", label: str = "wait") -> None:
        """Charge ``ns`` the CPU already spent spinning (its time has moved on already);
        ``why`` names an extra counter to charge (``lock_wait_ns``)."""
        self.stats["cpu_ns"] += ns
        self.stats["spin_ns"] += ns
        if why:
            self.stats[why] += ns
        if ns and self.on_spin is not None:
            self.on_spin(self.now - ns, self.now, label)

    def idle_until(self, t: int) -> None:
        """The CPU does something else until ``t`` (not charged)."""
        if t > self.now:
            self.now = t

"""One deterministic simulated clock shared by the CPU, the IOMMU and the device.

The CPU's position is ``now``; the IOMMU's work is scheduled at absolute times on the same
clock, so CPU and hardware advance in parallel and overlap shows up (early issue, §3.4).
Nothing reads the wall clock.
"""

from __future__ import annotations

from ..stats import Stats


class Clock:
    """CPU time in integer nanoseconds; busy time is charged to ``stats['cpu_ns']``."""

    def __init__(self, stats: Stats) -> None:
        self.now = 0
        self.stats = stats

    def busy(self, ns: int) -> None:
        """The CPU works for ``ns``."""
        self.now += ns
        self.stats["cpu_ns"] += ns

    def wait_until(self, t: int) -> int:
        """The CPU spins until ``t`` (charged as busy and as ``spin_ns``); returns how long."""
        spun = max(0, t - self.now)
        if spun:
            self.now += spun
            self.spin(spun)
        return spun

    def spin(self, ns: int, why: str = "") -> None:
        """Charge ``ns`` the CPU already spent spinning (its time has moved on already)."""
        self.stats["cpu_ns"] += ns
        self.stats["spin_ns"] += ns
        if why:
            self.stats[why] += ns

    def idle_until(self, t: int) -> None:
        """The CPU does something else until ``t`` (not charged)."""
        if t > self.now:
            self.now = t

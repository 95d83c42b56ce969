"""The cost model as equations: what one strict ``iommu_unmap`` of a 4 KiB page costs.

Notebooks 00–04 show the simulator's times; this module says where they come from. Each
strategy's round trip is a sum of the cost parameters of :mod:`iommu_lab.hw.costs` (all
assumptions, hardware-invalidation.md §0.2), weighted by what the driver does at its
kernel version. Symbols:

======  =====================  ==================================================
symbol  parameter              meaning
======  =====================  ==================================================
c       ``call_ns``            one API call or driver callback (CPU)
p       ``pte_update_ns``      the CPU clears one PTE
w       ``cmd_write_ns``       the CPU writes one 16-byte command into the queue
d       ``mmio_write_ns``      a doorbell (``CMDQ_PROD`` write)
r       ``mmio_read_ns``       one poll of ``CMDQ_CONS`` over MMIO (CS=SEV, v4.14)
m       ``mem_poll_ns``        the CPU sees the CMD_SYNC's MSI write in memory (v4.15+)
X       ``hw_tlbi_ns``         the SMMU executes one TLBI
S       ``hw_sync_ns``         the SMMU executes one CMD_SYNC
======  =====================  ==================================================

The equations hold while the SMMU keeps up (``X ≤ w + d``: a TLBI issued with its own
doorbell finishes while the CPU writes the next command); :func:`simulated_ns` measures
the same thing on the model, and the tests check the two agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.iommu import iommu_map, iommu_unmap
from ..drivers.registry import iommu_domain_alloc
from ..errors import einval
from ..hw.costs import Costs, cost_table
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_4K

SYMBOLS: dict[str, str] = {"c": "call_ns", "p": "pte_update_ns", "w": "cmd_write_ns",
                           "d": "mmio_write_ns", "r": "mmio_read_ns", "m": "mem_poll_ns",
                           "X": "hw_tlbi_ns", "S": "hw_sync_ns"}


@dataclass(frozen=True)
class UnmapEquation:
    """Time of one ``iommu_unmap`` of one 4 KiB page (CPU returns), as a weighted sum."""

    strategy: str
    text: str
    weights: tuple[tuple[str, int], ...]   # (symbol, how many times)
    why: str

    def ns(self, costs: Costs | None = None) -> int:
        """The equation evaluated at ``costs`` (defaults: the model's)."""
        costs = costs or Costs()
        return sum(n * getattr(costs, SYMBOLS[sym]) for sym, n in self.weights)


EQUATIONS: dict[str, UnmapEquation] = {e.strategy: e for e in (
    UnmapEquation(
        "smmuv3-v4.14", "2c + p + 2(w + d) + S + r",
        (("c", 2), ("p", 1), ("w", 2), ("d", 2), ("S", 1), ("r", 1)),
        "iommu_unmap + ->unmap (2c); one PTE (p); TLBI and CMD_SYNC each written with its "
        "own doorbell by arm_smmu_cmdq_issue_cmd (2(w + d)); the CPU waits for the sync (S) "
        "and sees it by reading CMDQ_CONS (r): io-pgtable-arm.c / arm-smmu-v3.c @v4.14"),
    UnmapEquation(
        "smmuv3-v4.15", "2c + p + 2(w + d) + S + m",
        (("c", 2), ("p", 1), ("w", 2), ("d", 2), ("S", 1), ("m", 1)),
        "as v4.14, but the CMD_SYNC comes from ->iotlb_sync and completes by an MSI write "
        "the CPU polls in memory (m; 37de98f8f1cf): arm-smmu-v3.c @v4.15"),
    UnmapEquation(
        "smmuv3-v5.4", "2c + p + 2w + d + X + S + m",
        (("c", 2), ("p", 1), ("w", 2), ("d", 1), ("X", 1), ("S", 1), ("m", 1)),
        "->unmap only gathers; ->iotlb_sync writes TLBI + CMD_SYNC as one batch with one "
        "doorbell (2w + d), so the TLBI's execution (X) is on the CPU's path before the "
        "sync (S), seen by MSI (m): arm_smmu_tlb_inv_range @v5.4.59"),
)}


def equation(strategy: str) -> UnmapEquation:
    """The equation of ``strategy``; EINVAL naming the ones that have one."""
    if strategy not in EQUATIONS:
        raise einval(f"no cost equation for {strategy!r}; known: {', '.join(EQUATIONS)}")
    return EQUATIONS[strategy]


def equation_rows(overrides: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """One row per strategy: the equation, its value in µs at these costs, and why."""
    costs = Costs().with_overrides(overrides)
    return [{"strategy": e.strategy, "one strict unmap of 4K": f"T = {e.text}",
             "µs": round(e.ns(costs) / 1000, 2), "where each term comes from": e.why}
            for e in EQUATIONS.values()]


def symbol_rows(overrides: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The symbols the equations use: parameter, value in µs, and its meaning/source."""
    costs = Costs().with_overrides(overrides)
    meaning = {r["name"]: (r["meaning"], r["source"]) for r in cost_table()}
    return [{"symbol": sym, "parameter": name, "µs": round(getattr(costs, name) / 1000, 3),
             "meaning": meaning[name][0], "source": meaning[name][1]}
            for sym, name in SYMBOLS.items()]


def simulated_ns(strategy: str, pages: int = 1, overrides: dict[str, int] | None = None) -> int:
    """Map ``pages`` 4 KiB pages, then time ``pages`` strict ``iommu_unmap`` calls of one
    page each on the model (simulated ns from the first unmap to the last return)."""
    dom = iommu_domain_alloc(strategy, costs=overrides)
    iommu_map(dom, 0, 0x4000_0000, pages * SZ_4K, int(IOMMU_READ | IOMMU_WRITE))
    t0 = dom.clock.now
    for i in range(pages):
        iommu_unmap(dom, i * SZ_4K, SZ_4K)
    return dom.clock.now - t0
